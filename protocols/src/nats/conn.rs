//! One NATS client connection: a single task that reads and routes, writes coalesced output and
//! pings. Publishers on other connections append to this connection's [`Outbound`] and wake it.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use junction_auth::Credentials;
use junction_core::{
    subject, Account, ConnId, ConnSnapshot, ConnView, Delivery, DeliveryFacts, FlushBatch,
    MatchCache, Message, Sink, Stats, Subscription,
};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, MissedTickBehavior, Sleep};
use tokio_util::sync::CancellationToken;

use super::encode::{self, Msg};
use super::parser::{Decoder, Frame, ParseError};
use super::Frontend;
use crate::outbound::{Outbound, Push};
use crate::CloseReason;

/// Read buffer of a busy connection.
const LARGE_READ_BYTES: usize = 64 * 1024;
/// Read buffer of a quiet connection (released when it goes idle).
const SMALL_READ_BYTES: usize = 1024;
/// Longest a publisher pauses for one backlogged subscriber that is draining.
const STALL_MAX: Duration = Duration::from_millis(5);
/// Longest a publisher pauses after one read batch, over all backlogged subscribers.
const STALL_TOTAL: Duration = Duration::from_millis(10);

/// The part of a connection that publishers on other connections see: its outbound buffer,
/// encoded for NATS.
pub(crate) struct Client {
    id: ConnId,
    out: Outbound,
    /// The client accepts HMSG (CONNECT `headers: true`).
    headers: AtomicBool,
    /// Subscriptions by sid.
    subs: Mutex<HashMap<Bytes, Arc<Subscription>>>,
    fe: Arc<Frontend>,
    /// Who the client is, for monitoring.
    peer: SocketAddr,
    start: SystemTime,
    about: Mutex<About>,
    in_msgs: AtomicU64,
    in_bytes: AtomicU64,
}

/// What the client said about itself in CONNECT, and the account it was bound to.
#[derive(Default)]
struct About {
    name: String,
    lang: String,
    version: String,
    account: String,
}

impl ConnView for Client {
    fn snapshot(&self) -> ConnSnapshot {
        let about = self.about.lock().expect("about lock");
        let (out_msgs, out_bytes) = self.out.delivered();
        ConnSnapshot {
            cid: self.id,
            kind: "nats",
            ip: self.peer.ip().to_string(),
            port: self.peer.port(),
            start: self.start,
            name: about.name.clone(),
            lang: about.lang.clone(),
            version: about.version.clone(),
            account: about.account.clone(),
            subscriptions: self.subs.lock().expect("subs lock").len(),
            pending_bytes: self.out.pending(),
            in_msgs: self.in_msgs.load(Ordering::Relaxed),
            in_bytes: self.in_bytes.load(Ordering::Relaxed),
            out_msgs,
            out_bytes,
            stop: None,
            reason: None,
        }
    }
}

impl Sink for Client {
    fn deliver(&self, sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        let headers = if self.headers.load(Ordering::Relaxed) {
            msg.headers.as_deref()
        } else {
            None
        };
        let m = Msg {
            subject: &msg.subject,
            sid: &sub.sid,
            reply: msg.reply.as_deref(),
            headers,
            payload: &msg.payload,
        };
        match self
            .out
            .push(m.encoded_len(), msg.size() as u64, |b| m.encode(b))
        {
            Push::Queued {
                was_empty,
                backlogged,
            } => {
                if was_empty {
                    batch.touch(sub.sink.clone());
                }
                if backlogged {
                    batch.backlog(&sub.sink);
                }
                Delivery::Queued
            }
            Push::SlowConsumer => {
                Stats::add(&self.fe.bus.stats().slow_consumers, 1);
                tracing::warn!(
                    cid = %self.id,
                    max_pending = self.fe.opts.max_pending,
                    "slow consumer: pending bytes over the limit, closing the connection"
                );
                Delivery::Dropped
            }
            Push::Closed => Delivery::Dropped,
        }
    }

    fn flush(&self) {
        self.out.wake();
    }

    fn poll_drained(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.out.poll_drained(cx)
    }

    fn stall_timed_out(&self) {
        self.out.stall_timed_out();
    }

    fn auto_unsubscribed(&self, sub: &Subscription) {
        let mut subs = self.subs.lock().expect("subs lock");
        if subs
            .get(&sub.sid)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), sub))
        {
            subs.remove(&sub.sid);
        }
    }
}

/// CONNECT options; absent fields take nats-server's defaults.
#[derive(Deserialize)]
#[serde(default)]
struct ConnectOptions {
    verbose: bool,
    pedantic: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
    protocol: i64,
    name: Option<String>,
    lang: Option<String>,
    version: Option<String>,
    user: Option<String>,
    pass: Option<String>,
    auth_token: Option<String>,
    nkey: Option<String>,
    sig: Option<String>,
    jwt: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        // nats-server starts every client verbose and pedantic until CONNECT says otherwise.
        Self {
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            protocol: 0,
            name: None,
            lang: None,
            version: None,
            user: None,
            pass: None,
            auth_token: None,
            nkey: None,
            sig: None,
            jwt: None,
        }
    }
}

/// What only the connection's own task touches.
struct Session {
    client: Arc<Client>,
    account: Arc<Account>,
    cache: MatchCache,
    batch: FlushBatch,
    connected: bool,
    verbose: bool,
    pedantic: bool,
    echo: bool,
    no_responders: bool,
    pings_out: u32,
    in_msgs: u64,
    in_bytes: u64,
}

impl Session {
    fn reply(&self, data: &[u8]) {
        self.client.out.push_own(data);
    }

    fn ok(&self) {
        if self.verbose {
            self.reply(encode::OK);
        }
    }

    fn fail(&self, text: &str, reason: CloseReason) -> Result<(), CloseReason> {
        self.reply(&encode::err(text));
        Err(reason)
    }

    fn handle(&mut self, frame: Frame) -> Result<(), CloseReason> {
        let fe = &self.client.fe;
        if !self.connected && fe.auth.auth_required() && !matches!(frame, Frame::Connect(_)) {
            return self.fail(
                "Authorization Violation",
                CloseReason::AuthenticationViolation,
            );
        }
        match frame {
            Frame::Connect(json) => self.connect(&json),
            Frame::Pub {
                subject,
                reply,
                headers,
                payload,
            } => {
                self.publish(subject, reply, headers, payload);
                Ok(())
            }
            Frame::Sub {
                subject,
                queue,
                sid,
            } => {
                self.subscribe(subject, queue, sid);
                Ok(())
            }
            Frame::Unsub { sid, max } => {
                self.unsubscribe(&sid, max);
                self.ok();
                Ok(())
            }
            Frame::Ping => {
                self.reply(encode::PONG);
                Ok(())
            }
            Frame::Pong => {
                self.pings_out = 0;
                Ok(())
            }
            Frame::Info | Frame::Ok => Ok(()),
            Frame::Err(text) => {
                tracing::debug!(cid = %self.client.id, error = %String::from_utf8_lossy(&text), "client sent -ERR");
                Err(CloseReason::ClientError)
            }
        }
    }

    fn connect(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        let Ok(opts) = serde_json::from_slice::<ConnectOptions>(json) else {
            tracing::debug!(cid = %self.client.id, "malformed CONNECT");
            return self.fail("Unknown Protocol Operation", CloseReason::ProtocolViolation);
        };
        if opts.protocol < 0 || opts.protocol > 1 {
            return self.fail("invalid client protocol", CloseReason::ProtocolViolation);
        }
        if opts.no_responders && !opts.headers {
            return self.fail(
                "no responders requires headers support",
                CloseReason::ProtocolViolation,
            );
        }
        let fe = self.client.fe.clone();
        let creds = Credentials {
            user: opts.user,
            pass: opts.pass,
            token: opts.auth_token,
            nkey: opts.nkey,
            sig: opts.sig,
            jwt: opts.jwt,
        };
        let identity = match fe.auth.authenticate(&creds) {
            Ok(id) => id,
            Err(e) => {
                tracing::info!(cid = %self.client.id, error = %e, "authentication failed");
                return self.fail(
                    "Authorization Violation",
                    CloseReason::AuthenticationViolation,
                );
            }
        };
        if identity.account != self.account.name() {
            // Bind to the account before any subscription exists (nats-server refuses a
            // second CONNECT that changes the account; so do we, by ignoring the change).
            if self.client.subs.lock().expect("subs lock").is_empty() {
                self.account = fe.bus.account_or_create(&identity.account);
            }
        }
        self.verbose = opts.verbose;
        self.pedantic = opts.pedantic;
        self.echo = opts.echo;
        self.no_responders = opts.no_responders;
        self.client.headers.store(opts.headers, Ordering::Relaxed);
        {
            let mut about = self.client.about.lock().expect("about lock");
            about.name = opts.name.clone().unwrap_or_default();
            about.lang = opts.lang.clone().unwrap_or_default();
            about.version = opts.version.clone().unwrap_or_default();
            about.account = self.account.name().to_string();
        }
        self.connected = true;
        tracing::debug!(
            cid = %self.client.id,
            name = opts.name.as_deref().unwrap_or_default(),
            lang = opts.lang.as_deref().unwrap_or_default(),
            version = opts.version.as_deref().unwrap_or_default(),
            "client connected"
        );
        self.ok();
        Ok(())
    }

    fn publish(
        &mut self,
        subject: Bytes,
        reply: Option<Bytes>,
        headers: Option<Bytes>,
        payload: Bytes,
    ) {
        if self.pedantic && !subject::is_valid_literal_subject(&subject) {
            self.reply(&encode::err("Invalid Publish Subject"));
        }
        let msg = Message {
            subject,
            reply,
            headers,
            payload,
            facts: DeliveryFacts::from_origin(self.client.id),
        };
        self.in_msgs += 1;
        self.in_bytes += msg.size() as u64;
        self.ok();
        let delivered = self.account.publish(&mut self.cache, &msg, &mut self.batch);
        if delivered == 0 && self.no_responders {
            if let Some(reply) = &msg.reply {
                self.no_responders_reply(reply, &msg.subject);
            }
        }
    }

    /// A request nobody can answer gets a 503 status message at once, on the subscription
    /// that would have received the reply.
    fn no_responders_reply(&self, reply: &[u8], subject: &[u8]) {
        let sid = {
            let subs = self.client.subs.lock().expect("subs lock");
            subs.values()
                .find(|s| s.queue.is_none() && subject::matches(&s.subject, reply))
                .map(|s| s.sid.clone())
        };
        if let Some(sid) = sid {
            let headers = encode::no_responders_headers(subject);
            let m = Msg {
                subject: reply,
                sid: &sid,
                reply: None,
                headers: Some(&headers),
                payload: b"",
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf);
            self.reply(&buf);
        }
    }

    fn subscribe(&mut self, subject: Bytes, queue: Option<Bytes>, sid: Bytes) {
        if self
            .client
            .subs
            .lock()
            .expect("subs lock")
            .contains_key(&sid)
        {
            self.ok();
            return;
        }
        let sink: Arc<dyn Sink> = self.client.clone();
        let sub = Arc::new(Subscription::new(
            self.client.id,
            subject,
            queue,
            sid.clone(),
            !self.echo,
            sink,
        ));
        if self.account.subscribe(sub.clone()).is_err() {
            self.reply(&encode::err("Invalid Subject"));
            return;
        }
        self.client.subs.lock().expect("subs lock").insert(sid, sub);
        self.ok();
    }

    fn unsubscribe(&mut self, sid: &Bytes, max: Option<u64>) {
        let mut subs = self.client.subs.lock().expect("subs lock");
        let Some(sub) = subs.get(sid).cloned() else {
            return;
        };
        if let Some(max) = max.filter(|m| *m > 0) {
            if !sub.set_max_msgs(max) {
                return;
            }
        }
        subs.remove(sid);
        drop(subs);
        self.account.unsubscribe(&sub);
    }

    /// Ends a read batch: wakes every touched writer once and adds the batch's counters.
    fn end_batch(&mut self) {
        self.batch.wake_all();
        let stats = self.client.fe.bus.stats();
        if self.in_msgs > 0 {
            self.client
                .in_msgs
                .fetch_add(self.in_msgs, Ordering::Relaxed);
            self.client
                .in_bytes
                .fetch_add(self.in_bytes, Ordering::Relaxed);
        }
        Stats::add(&stats.in_msgs, std::mem::take(&mut self.in_msgs));
        Stats::add(&stats.in_bytes, std::mem::take(&mut self.in_bytes));
        Stats::add(&stats.out_msgs, std::mem::take(&mut self.batch.out_msgs));
        Stats::add(&stats.out_bytes, std::mem::take(&mut self.batch.out_bytes));
    }

    /// After a read batch that overran subscribers which are still draining, waits (briefly, and
    /// never for a stuck one) until they drain: a fast publisher is paced by the subscribers
    /// that keep up, while one that does not keep up is cut off at `max_pending`.
    async fn stall(&mut self) {
        let started = Instant::now();
        for sink in self.batch.take_backlogged() {
            let left = STALL_TOTAL.saturating_sub(started.elapsed()).min(STALL_MAX);
            let drained = std::future::poll_fn(|cx| sink.poll_drained(cx));
            if left.is_zero() || tokio::time::timeout(left, drained).await.is_err() {
                sink.stall_timed_out();
            }
        }
    }

    /// Removes every subscription of the connection.
    fn teardown(&mut self) {
        let subs: Vec<_> = self
            .client
            .subs
            .lock()
            .expect("subs lock")
            .drain()
            .map(|(_, s)| s)
            .collect();
        for sub in subs {
            self.account.unsubscribe(&sub);
        }
    }
}

fn parse_error_reply(e: &ParseError) -> (&'static str, CloseReason) {
    match e {
        ParseError::UnknownOperation | ParseError::BadArguments { .. } => {
            ("Unknown Protocol Operation", CloseReason::ProtocolViolation)
        }
        ParseError::MaxControlLine => (
            "maximum control line exceeded",
            CloseReason::MaxControlLineExceeded,
        ),
        ParseError::MaxPayload { .. } => {
            ("Maximum Payload Violation", CloseReason::MaxPayloadExceeded)
        }
    }
}

/// Where the writer stands after a write attempt.
enum WriteState {
    /// Nothing left to write.
    Idle,
    /// The socket is full; wait until it is writable.
    Blocked,
}

/// The bytes being written and how far the writer got.
struct Writer {
    chunk: BytesMut,
    pos: usize,
}

impl Writer {
    /// Writes until everything queued is written or the socket is full.
    fn write(&mut self, stream: &TcpStream, out: &Outbound) -> Result<WriteState, CloseReason> {
        loop {
            if self.pos == self.chunk.len() {
                if self.chunk.capacity() > 0 {
                    out.written(std::mem::take(&mut self.chunk));
                }
                self.pos = 0;
                self.chunk = out.take();
                if self.chunk.is_empty() {
                    return Ok(WriteState::Idle);
                }
            }
            match stream.try_write(&self.chunk[self.pos..]) {
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(WriteState::Blocked),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(CloseReason::WriteError),
            }
        }
    }
}

/// Runs one connection to its end.
pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    fe: Arc<Frontend>,
    shutdown: CancellationToken,
) {
    let id = fe.bus.next_conn_id();
    let client = Arc::new(Client {
        id,
        out: Outbound::new(fe.opts.max_pending),
        headers: AtomicBool::new(false),
        subs: Mutex::new(HashMap::new()),
        fe: fe.clone(),
        peer,
        start: SystemTime::now(),
        about: Mutex::new(About {
            account: fe.bus.default_account().name().to_string(),
            ..About::default()
        }),
        in_msgs: AtomicU64::new(0),
        in_bytes: AtomicU64::new(0),
    });
    fe.bus.conns().open(id, client.clone());
    client.out.push_own(&fe.info(id.0, &peer.ip().to_string()));
    tracing::debug!(cid = %id, peer = %peer, "accepted NATS connection");
    let defaults = ConnectOptions::default();
    let mut session = Session {
        client: client.clone(),
        account: fe.bus.default_account(),
        cache: MatchCache::default(),
        batch: FlushBatch::default(),
        connected: false,
        verbose: defaults.verbose,
        pedantic: defaults.pedantic,
        echo: defaults.echo,
        no_responders: false,
        pings_out: 0,
        in_msgs: 0,
        in_bytes: 0,
    };
    let reason = drive(&stream, &mut session, &shutdown).await;
    session.teardown();
    client.out.close(reason);
    fe.bus.conns().close(id, reason.as_str());
    match reason {
        CloseReason::ClientClosed | CloseReason::ServerShutdown => {
            tracing::debug!(cid = %id, reason = %reason, "connection closed")
        }
        _ => tracing::info!(cid = %id, peer = %peer, reason = %reason, "connection closed"),
    }
}

/// The connection's event loop; returns why it ended.
async fn drive(
    stream: &TcpStream,
    session: &mut Session,
    shutdown: &CancellationToken,
) -> CloseReason {
    let client = session.client.clone();
    let fe = client.fe.clone();
    let mut decoder = Decoder::new(fe.opts.limits);
    let mut rbuf = BytesMut::new();
    let mut read_size = SMALL_READ_BYTES;
    let mut writer = Writer {
        chunk: BytesMut::new(),
        pos: 0,
    };
    let start = Instant::now();
    let mut ping = tokio::time::interval_at(start + fe.opts.ping_interval, fe.opts.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Armed only while a write is blocked, so an idle connection holds no timer for it.
    let mut deadline: Option<Pin<Box<Sleep>>> = None;
    let mut blocked = false;
    // Set once the connection is ending: stop reading, flush what is queued, then close.
    let mut closing: Option<CloseReason> = None;

    loop {
        if let Some(reason) = client.out.closed() {
            // Cut off by a publisher (slow consumer): drop what is queued.
            return reason;
        }
        match writer.write(stream, &client.out) {
            Ok(WriteState::Idle) => {
                blocked = false;
                deadline = None;
                if let Some(reason) = closing {
                    return reason;
                }
            }
            Ok(WriteState::Blocked) => {
                if !blocked {
                    blocked = true;
                    deadline = Some(Box::pin(sleep_until(
                        Instant::now() + fe.opts.write_deadline,
                    )));
                }
            }
            Err(reason) => return closing.unwrap_or(reason),
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if closing.is_none() => {
                closing = Some(CloseReason::ServerShutdown);
            }
            ready = stream.readable(), if closing.is_none() => {
                if ready.is_err() {
                    return CloseReason::ReadError;
                }
                if rbuf.capacity() - rbuf.len() < read_size / 2 {
                    rbuf.reserve(read_size);
                }
                let room = rbuf.capacity() - rbuf.len();
                match stream.try_read_buf(&mut rbuf) {
                    Ok(0) => return CloseReason::ClientClosed,
                    Ok(n) => {
                        // A read that filled the buffer marks a busy connection: read more at
                        // once. A small one marks a quiet connection.
                        if n == room {
                            read_size = LARGE_READ_BYTES;
                        } else if n < SMALL_READ_BYTES {
                            read_size = SMALL_READ_BYTES;
                        }
                        if let Err(reason) = process(session, &mut decoder, &mut rbuf) {
                            closing = Some(reason);
                        }
                        session.end_batch();
                        if session.batch.has_backlogged() {
                            // Boxed: a rare path that should not grow every connection's task.
                            Box::pin(session.stall()).await;
                        }
                        if rbuf.is_empty() && n < SMALL_READ_BYTES {
                            // A quiet connection gives its read buffer back.
                            rbuf = BytesMut::new();
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(_) => return CloseReason::ReadError,
                }
            }
            // Woken by new output, or by a publisher that cut this connection off.
            _ = client.out.woken() => {}
            ready = stream.writable(), if blocked => {
                if ready.is_err() {
                    return CloseReason::WriteError;
                }
            }
            _ = expired(&mut deadline), if blocked => {
                Stats::add(&fe.bus.stats().slow_consumers, 1);
                tracing::warn!(cid = %client.id, "slow consumer: write deadline exceeded, closing the connection");
                return CloseReason::SlowConsumerWriteDeadline;
            }
            _ = ping.tick(), if closing.is_none() => {
                if session.pings_out + 1 > fe.opts.ping_max {
                    session.reply(&encode::err("Stale Connection"));
                    closing = Some(CloseReason::StaleConnection);
                } else {
                    session.pings_out += 1;
                    session.reply(encode::PING);
                }
                if rbuf.is_empty() {
                    rbuf = BytesMut::new();
                }
                client.out.release_spare();
            }
        }
    }
}

/// Resolves when the armed deadline passes; never when none is armed.
async fn expired(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(d) => d.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Parses and handles every complete frame in `rbuf`.
fn process(
    session: &mut Session,
    decoder: &mut Decoder,
    rbuf: &mut BytesMut,
) -> Result<(), CloseReason> {
    loop {
        match decoder.decode(rbuf) {
            Ok(Some(frame)) => session.handle(frame)?,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(cid = %session.client.id, error = %e, "protocol error");
                let (text, reason) = parse_error_reply(&e);
                return session.fail(text, reason);
            }
        }
    }
}
