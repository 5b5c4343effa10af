//! One NATS client connection: a single task that reads and routes, writes coalesced output and
//! pings. Publishers on other connections append to this connection's [`Outbound`] and wake it.

use junction_core::mapping::Mapped;
use junction_core::sync::Lock;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use junction_auth::{AuthError, Checker, Credentials, Identity};
use junction_core::{
    subject, Account, ConnId, ConnSnapshot, ConnView, Delivery, FlushBatch, MatchCache, Message,
    Sink, Stats, Subscription,
};
use serde::Deserialize;

use super::encode::{self, Msg};
use super::parser::{Decoder, Frame, ParseError};
use super::NatsServer;
use crate::auth_pool;
use crate::conn_stats::{BatchIn, ConnStats};
use crate::driver::{Conn, Protocol};
use crate::listener::Guard;
use crate::outbound::{Outbound, Push};
use crate::transport::Transport;
use crate::CloseReason;

/// The part of a connection that publishers on other connections see: its outbound buffer,
/// encoded for NATS.
pub(crate) struct Client {
    id: ConnId,
    out: Outbound,
    /// The client accepts HMSG (CONNECT `headers: true`).
    headers: AtomicBool,
    /// Subscriptions by sid.
    subs: Mutex<HashMap<Bytes, Arc<Subscription>>>,
    fe: Arc<NatsServer>,
    /// Address, start and counters, for monitoring.
    stats: ConnStats,
    /// Who the client says it is, for monitoring.
    about: Mutex<About>,
    /// Server PINGs not answered yet.
    pings_out: AtomicU32,
    /// Round trips of the server's PINGs: the high half is the last round trip in µs (0: none
    /// yet), the low half when the unanswered PING went out, in µs of the Unix clock modulo
    /// 2^32 (0: none out; it wraps every 71 minutes, far longer than a round trip).
    rtt: AtomicU64,
    /// The nonce sent in INFO (NKey and JWT users sign it).
    nonce: Option<String>,
    /// The names in the TLS client certificate, if one was presented.
    cert: Option<Box<junction_auth::CertIdentity>>,
    /// The listener takes users from certificates (`verify_and_map`).
    map_cert: bool,
    /// The user's permissions as deliveries see them (a deny its wildcard subscriptions
    /// overlap, replies it may send): `None` when they need no check at delivery.
    receive: Mutex<Option<Box<Checker>>>,
    /// Whether `receive` is set (checked without the lock).
    receive_checked: AtomicBool,
    /// CONNECT was accepted.
    authenticated: AtomicBool,
    /// The server's settings when the connection started.
    opts: Arc<super::Options>,
}

/// What the client said about itself in CONNECT, and the account it was bound to.
#[derive(Default)]
struct About {
    name: String,
    lang: String,
    version: String,
    account: String,
    /// How CONNECT was admitted, for a configuration reload to check again (and the user).
    admitted: Option<crate::recheck::Admitted>,
}

impl ConnView for Client {
    fn snapshot(&self) -> ConnSnapshot {
        let about = self.about.locked();
        ConnSnapshot {
            name: about.name.clone(),
            lang: about.lang.clone(),
            version: about.version.clone(),
            account: about.account.clone(),
            user: about
                .admitted
                .as_ref()
                .map(|a| a.user().to_string())
                .unwrap_or_default(),
            rtt: match self.rtt.load(Ordering::Relaxed) >> 32 {
                0 => None,
                us => Some(std::time::Duration::from_micros(us)),
            },
            subscriptions: self.subs.locked().len(),
            ..self.stats.snapshot(self.id, "nats", &self.out)
        }
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    /// A keepalive sweep: PING the client, or close it as stale when too many PINGs went
    /// unanswered (nats-server's rule: more than `ping_max` outstanding).
    fn tick(&self) {
        let out = self.pings_out.fetch_add(1, Ordering::Relaxed) + 1;
        if out > self.opts.ping_max {
            self.out.push_own(&encode::err("Stale Connection"));
            self.out.finish(CloseReason::StaleConnection);
        } else {
            if out == 1 {
                let sent = u64::from(now_us32().max(1));
                let _ = self
                    .rtt
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                        Some((v & !0xffff_ffff) | sent)
                    });
            }
            self.out.push_own(encode::PING);
            self.out.wake();
        }
    }

    fn shutdown(&self) {
        self.out.finish(CloseReason::ServerShutdown);
    }

    /// INFO with `ldm: true`, as nats-server sends it: the server-wide INFO, so clients move
    /// to another server of the cluster before this one closes them.
    fn lame_duck(&self) {
        if !self.authenticated.load(Ordering::Relaxed) {
            return;
        }
        let ip = self.stats.peer.ip().to_string();
        let line = self.fe.info_line(
            self.id.0,
            &ip,
            self.nonce.as_deref(),
            self.opts.limits.max_payload,
            true,
        );
        self.out.push_own(&line);
        self.out.wake();
    }

    fn login(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let about = self.about.locked();
        about.admitted.as_ref()?.login(&about.account)
    }

    fn revoke(&self) {
        self.close_with(
            "Authorization Violation",
            CloseReason::AuthenticationViolation,
        );
    }
}

impl Client {
    /// How nats-server names a client in its log lines: `127.0.0.1:54321 - cid:5`.
    fn tag(&self) -> String {
        format!("{} - cid:{}", self.stats.peer, self.id.0)
    }

    /// Whether the user may receive `msg`; notes the reply subject it may answer.
    fn receive_allowed(&self, msg: &Message) -> bool {
        let mut guard = self.receive.locked();
        let Some(checker) = guard.as_mut() else {
            return true;
        };
        let Ok(subject) = std::str::from_utf8(&msg.subject) else {
            return false;
        };
        if !checker.may_receive(subject) {
            return false;
        }
        if let Some(reply) = msg
            .reply
            .as_deref()
            .and_then(|r| std::str::from_utf8(r).ok())
        {
            checker.delivered_request(reply);
        }
        true
    }

    /// Closes the connection with `-ERR 'text'`.
    fn close_with(&self, text: &str, reason: CloseReason) {
        self.out.push_own(&encode::err(text));
        self.out.finish(reason);
    }
}

impl Sink for Client {
    fn deliver(&self, sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        if self.receive_checked.load(Ordering::Relaxed) && !self.receive_allowed(msg) {
            return Delivery::Dropped;
        }
        let headers = if self.headers.load(Ordering::Relaxed) {
            msg.header_block().map(|h| &h[..])
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
            pushed @ Push::Queued { .. } => {
                pushed.note_queued(batch, &sub.sink);
                Delivery::Queued
            }
            Push::SlowConsumer => {
                Stats::add(&self.fe.bus.stats().slow_consumers, 1);
                tracing::warn!(
                    cid = %self.id,
                    max_pending = self.opts.max_pending,
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

    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.out.poll_drained(cx)
    }

    fn stall_timed_out(&self) {
        self.out.stall_timed_out();
    }

    fn auto_unsubscribed(&self, sub: &Subscription) {
        let mut subs = self.subs.locked();
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
pub(crate) struct Connection {
    client: Arc<Client>,
    decoder: Decoder,
    account: Arc<Account>,
    cache: MatchCache,
    batch: FlushBatch,
    connected: bool,
    verbose: bool,
    pedantic: bool,
    echo: bool,
    no_responders: bool,
    /// What the current read batch received.
    received: BatchIn,
    /// The user's publish and subscribe permissions (`None`: everything allowed; boxed, as most
    /// connections have none).
    perms: Option<Box<Checker>>,
    /// Limits from the user's JWT.
    limits: junction_auth::Limits,
    /// The connection is counted in its account (to leave it at the end).
    joined: bool,
    /// A CONNECT whose credentials are being checked off the reactor.
    waiting: Option<Box<Waiting>>,
    /// The credentials of the CONNECT being checked.
    presented: Option<Box<Credentials>>,
}

/// A CONNECT waiting for its authentication.
struct Waiting {
    opts: ConnectOptions,
    answer: auth_pool::Pending,
}

impl Connection {
    fn reply(&self, data: &[u8]) {
        self.client.out.push_own(data);
    }

    fn ok(&self) {
        if self.verbose {
            self.reply(encode::OK);
        }
    }

    fn fail(&self, text: &str, reason: CloseReason) -> Result<(), CloseReason> {
        tracing::trace!(cid = %self.client.id, error = text, "->> -ERR");
        self.reply(&encode::err(text));
        Err(reason)
    }

    fn handle(&mut self, frame: Frame) -> Result<(), CloseReason> {
        tracing::trace!(cid = %self.client.id, frame = ?frame, "<<-");
        let fe = &self.client.fe;
        if !self.connected && fe.auth.auth_required() && !matches!(frame, Frame::Connect(_)) {
            // With no_auth_user, a client that skips CONNECT is that user.
            match fe.auth.anonymous() {
                Some(id) => {
                    let fe = fe.clone();
                    if !self.bind(&fe, id) {
                        return self.fail(
                            "maximum account active connections exceeded",
                            CloseReason::MaxConnectionsExceeded,
                        );
                    }
                }
                None => {
                    return self.fail(
                        "Authorization Violation",
                        CloseReason::AuthenticationViolation,
                    )
                }
            }
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
                self.client.pings_out.store(0, Ordering::Relaxed);
                let v = self.client.rtt.load(Ordering::Relaxed);
                let sent = (v & 0xffff_ffff) as u32;
                if sent > 0 {
                    let us = u64::from(now_us32().wrapping_sub(sent)).max(1);
                    self.client.rtt.store(us << 32, Ordering::Relaxed);
                }
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
        let Ok(mut opts) = serde_json::from_slice::<ConnectOptions>(json) else {
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
        if !self.connected || !fe.auth.auth_required() {
            let creds = Credentials {
                user: opts.user.take(),
                pass: opts.pass.take(),
                token: opts.auth_token.take(),
                nkey: opts.nkey.take(),
                sig: opts.sig.take(),
                jwt: opts.jwt.take(),
                nonce: self.client.nonce.clone(),
                cert: self.client.cert.as_deref().cloned(),
                map_cert: self.client.map_cert,
                mqtt: false,
            };
            self.presented = Some(Box::new(creds.clone()));
            match auth_pool::authenticate(&fe.auth, creds) {
                Ok(answer) => self.authenticated(answer)?,
                Err(answer) => {
                    // Nothing more is read until the answer comes (see `poll_resume`).
                    self.waiting = Some(Box::new(Waiting { opts, answer }));
                    return Ok(());
                }
            }
        }
        self.apply_connect(opts)
    }

    /// Binds the connection to the identity its credentials proved, or refuses it.
    fn authenticated(&mut self, answer: Result<Identity, AuthError>) -> Result<(), CloseReason> {
        let fe = self.client.fe.clone();
        let identity = match answer {
            Ok(id) => id,
            Err(e) => {
                Stats::add(&fe.bus.stats().auth_failures, 1);
                tracing::error!("{} - authentication error: {e}", self.client.tag());
                return self.fail(
                    "Authorization Violation",
                    CloseReason::AuthenticationViolation,
                );
            }
        };
        self.client.about.locked().admitted = Some(crate::recheck::Admitted::of(
            self.presented.take().map(|c| *c).unwrap_or_default(),
            &identity,
        ));
        if !self.bind(&fe, identity) {
            return self.fail(
                "maximum account active connections exceeded",
                CloseReason::MaxConnectionsExceeded,
            );
        }
        Ok(())
    }

    /// Takes the options of an accepted CONNECT.
    fn apply_connect(&mut self, opts: ConnectOptions) -> Result<(), CloseReason> {
        self.verbose = opts.verbose;
        self.pedantic = opts.pedantic;
        self.echo = opts.echo;
        self.no_responders = opts.no_responders;
        self.client.headers.store(opts.headers, Ordering::Relaxed);
        {
            let mut about = self.client.about.locked();
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

    /// Binds the connection to its identity: account, permissions, limits, expiry. `false`:
    /// the account has its maximum of connections.
    fn bind(&mut self, fe: &Arc<NatsServer>, identity: Identity) -> bool {
        if identity.account != self.account.name() {
            // Bind to the account before any subscription exists (nats-server refuses a
            // second CONNECT that changes the account; so do we, by ignoring the change).
            if self.client.subs.locked().is_empty() {
                self.account = fe.bus.account_or_create(&identity.account);
            }
        }
        if !self.joined {
            if !self.account.join(identity.limits.account_connections) {
                return false;
            }
            self.joined = true;
        }
        self.limits = identity.limits;
        if let Some(max) = identity.limits.payload {
            if (max as usize) < self.client.opts.limits.max_payload {
                let ip = self.client.stats.peer.ip().to_string();
                self.reply(&fe.info_with(
                    self.client.id.0,
                    &ip,
                    self.client.nonce.as_deref(),
                    max as usize,
                ));
            }
        }
        if let Some(p) = identity.permissions.filter(|p| !p.is_open()) {
            if !p.subscribe.deny.is_empty() || p.responses.is_some() {
                *self.client.receive.locked() = Some(Box::new(Checker::new(p.clone())));
                self.client.receive_checked.store(true, Ordering::Relaxed);
            }
            self.perms = Some(Box::new(Checker::new(p)));
        }
        if let Some(exp) = identity.expires {
            expire_at(&self.client, exp);
        }
        self.client.authenticated.store(true, Ordering::Relaxed);
        self.connected = true;
        true
    }

    /// Whether the user may publish to `subject`; tells the client when not.
    fn may_publish(&mut self, subject: &[u8]) -> bool {
        let Some(perms) = self.perms.as_mut() else {
            return true;
        };
        if perms.may_publish_bytes(subject) {
            return true;
        }
        let text = String::from_utf8_lossy(subject);
        if perms.permissions().responses.is_some()
            && self
                .client
                .receive
                .locked()
                .as_mut()
                .is_some_and(|c| c.use_reply(&text))
        {
            return true;
        }
        tracing::error!(
            "{} - Publish Violation - Subject {}",
            self.client.tag(),
            quoted(&text)
        );
        self.reply(&encode::err(&format!(
            "Permissions Violation for Publish to {}",
            quoted(&text)
        )));
        false
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
        if self
            .limits
            .payload
            .is_some_and(|max| payload.len() as u64 > max)
        {
            // The user's JWT allows smaller messages than the server does.
            self.reply(&encode::err("Maximum Payload Violation"));
            self.client.out.finish(CloseReason::MaxPayloadExceeded);
            return;
        }
        if let Some(r) = reply.as_deref().filter(|r| subject::is_reserved_reply(r)) {
            // Reply subjects the server itself routes by: a client may not forge them.
            self.reply(&encode::err(&format!(
                "Permissions Violation for Publish with Reply of {}",
                quoted(&String::from_utf8_lossy(r))
            )));
            return;
        }
        // The account's subject mappings first: the permission applies to where it goes.
        let subject = match self.account.map_subject(&subject) {
            Mapped::Same => subject,
            Mapped::To(s) => Bytes::from(s),
            Mapped::Dropped => {
                self.received.msgs += 1;
                self.ok();
                return;
            }
        };
        if !self.may_publish(&subject) {
            return;
        }
        let msg = Message {
            headers,
            ..Message::new(subject, reply, payload, self.client.id)
        };
        self.received.msgs += 1;
        self.received.bytes += msg.size() as u64;
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
            let subs = self.client.subs.locked();
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
        if self.client.subs.locked().contains_key(&sid) {
            self.ok();
            return;
        }
        let full = self
            .limits
            .subs
            .is_some_and(|max| self.client.subs.locked().len() as u64 >= max);
        if full {
            self.reply(&encode::err("maximum subscriptions exceeded"));
            return;
        }
        let reserved = subject::is_bridge(&subject);
        if reserved || self.perms.is_some() {
            let text = String::from_utf8_lossy(&subject);
            let q = queue.as_deref().map(String::from_utf8_lossy);
            let allowed = !reserved
                && self
                    .perms
                    .as_ref()
                    .is_none_or(|p| p.permissions().may_subscribe(&text, q.as_deref()));
            if !allowed {
                let err = match &q {
                    Some(q) => format!(
                        "Permissions Violation for Subscription to {} using queue {}",
                        quoted(&text),
                        quoted(q)
                    ),
                    None => format!(
                        "Permissions Violation for Subscription to {}",
                        quoted(&text)
                    ),
                };
                tracing::error!(
                    "{} - Subscription Violation - Subject {}{}, SID {}",
                    self.client.tag(),
                    quoted(&text),
                    q.as_deref()
                        .map(|q| format!(", Queue: {}", quoted(q)))
                        .unwrap_or_default(),
                    String::from_utf8_lossy(&sid)
                );
                self.reply(&encode::err(&err));
                return;
            }
        }
        let sink: Arc<dyn Sink> = self.client.clone();
        // Own copies: slices of the read buffer would keep all of it alive as long as the
        // subscription lives.
        let sid = Bytes::copy_from_slice(&sid);
        let sub = Arc::new(Subscription::new(
            self.client.id,
            Bytes::copy_from_slice(&subject),
            queue.map(|q| Bytes::copy_from_slice(&q)),
            sid.clone(),
            !self.echo,
            sink,
        ));
        if self.account.subscribe(sub.clone()).is_err() {
            self.reply(&encode::err("Invalid Subject"));
            return;
        }
        self.client.subs.locked().insert(sid, sub);
        self.ok();
    }

    fn unsubscribe(&mut self, sid: &Bytes, max: Option<u64>) {
        let mut subs = self.client.subs.locked();
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
        self.client.stats.end_batch(
            self.client.fe.bus.stats(),
            &mut self.received,
            &mut self.batch,
        );
    }

    /// Removes every subscription of the connection.
    fn teardown(&mut self) {
        let subs: Vec<_> = self.client.subs.locked().drain().map(|(_, s)| s).collect();
        for sub in subs {
            self.account.unsubscribe(&sub);
        }
    }
}

/// A subject in double quotes, as nats-server's errors show it.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Closes the connection with 'User Authentication Expired' when its credentials expire.
fn expire_at(client: &Arc<Client>, exp: i64) {
    let now = junction_auth::server::unix_now();
    let wait = Duration::from_secs(u64::try_from(exp - now).unwrap_or(0));
    let weak = Arc::downgrade(client);
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if let Some(c) = weak.upgrade() {
            c.close_with(
                "User Authentication Expired",
                CloseReason::AuthenticationExpired,
            );
        }
    });
}

/// Closes a connection that has not authenticated within `timeout`.
fn auth_deadline(client: &Arc<Client>, timeout: Duration) {
    let weak = Arc::downgrade(client);
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        if let Some(c) = weak.upgrade() {
            if !c.authenticated.load(Ordering::Relaxed) {
                c.close_with("Authentication Timeout", CloseReason::AuthenticationTimeout);
            }
        }
    });
}

/// A fresh nonce: 11 random bytes, base64 URL-safe without padding (15 characters).
pub(crate) fn nonce() -> String {
    use base64::Engine as _;
    let mut raw = [0u8; 11];
    getrandom::getrandom(&mut raw).expect("the system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
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

/// Starts serving one accepted connection; the returned future runs it to its end.
/// What happened before the protocol started: INFO already sent (TLS listeners send it before
/// the handshake), with which nonce, and the client's certificate.
#[derive(Default)]
pub(crate) struct Hello {
    pub sent: bool,
    pub nonce: Option<String>,
    pub cert: Option<junction_auth::CertIdentity>,
    /// The listener's TLS maps certificates to users.
    pub map_cert: bool,
}

pub(crate) fn start<T: Transport>(
    io: T,
    peer: SocketAddr,
    fe: Arc<NatsServer>,
    hello: Hello,
    guard: Guard,
) -> Conn<Connection, T> {
    let id = fe.bus.next_conn_id();
    let nonce = match hello.sent {
        true => hello.nonce,
        false => fe.auth.nonce_required().then(nonce),
    };
    let cert = hello.cert.map(Box::new);
    // The settings in force now stay this connection's, whatever a reload does later.
    let opts = fe.opts.get();
    let client = Arc::new(Client {
        id,
        out: Outbound::new(opts.max_pending),
        headers: AtomicBool::new(false),
        subs: Mutex::new(HashMap::new()),
        fe: fe.clone(),
        stats: ConnStats::new(peer),
        about: Mutex::new(About {
            account: fe.bus.default_account().name().to_string(),
            ..About::default()
        }),
        pings_out: AtomicU32::new(0),
        rtt: AtomicU64::new(0),
        nonce,
        cert,
        map_cert: hello.map_cert,
        receive: Mutex::new(None),
        receive_checked: AtomicBool::new(false),
        authenticated: AtomicBool::new(false),
        opts: opts.clone(),
    });
    fe.bus.conns().open(id, client.clone());
    if !hello.sent {
        client
            .out
            .push_own(&fe.info(id.0, &peer.ip().to_string(), client.nonce.as_deref()));
    }
    if fe.auth.auth_required() {
        auth_deadline(&client, opts.auth_timeout);
    }
    tracing::debug!(cid = %id, peer = %peer, "accepted NATS connection");
    let defaults = ConnectOptions::default();
    let session = Connection {
        client,
        decoder: Decoder::new(opts.limits),
        account: fe.bus.default_account(),
        cache: MatchCache::default(),
        batch: FlushBatch::default(),
        connected: false,
        verbose: defaults.verbose,
        pedantic: defaults.pedantic,
        echo: defaults.echo,
        no_responders: false,
        received: BatchIn::default(),
        perms: None,
        limits: junction_auth::Limits::default(),
        joined: false,
        waiting: None,
        presented: None,
    };
    Conn::new(io, session, guard)
}

impl Protocol for Connection {
    fn outbound(&self) -> &Outbound {
        &self.client.out
    }

    fn process(&mut self, rbuf: &mut BytesMut) -> Result<(), CloseReason> {
        loop {
            match self.decoder.decode(rbuf) {
                Ok(Some(frame)) => {
                    self.handle(frame)?;
                    if self.waiting.is_some() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::debug!(cid = %self.client.id, error = %e, "protocol error");
                    let (text, reason) = parse_error_reply(&e);
                    return self.fail(text, reason);
                }
            }
        }
    }

    fn poll_resume(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, CloseReason>> {
        let Some(waiting) = self.waiting.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        let answer = std::task::ready!(waiting.answer.as_mut().poll(cx));
        let Waiting { opts, .. } = *self.waiting.take().expect("checked above");
        Poll::Ready(
            self.authenticated(answer)
                .and_then(|()| self.apply_connect(opts))
                .map(|()| true),
        )
    }

    fn end_batch(&mut self) -> Vec<Arc<dyn Sink>> {
        Connection::end_batch(self);
        self.batch.take_backlogged()
    }

    fn write_deadline(&self) -> Duration {
        self.client.opts.write_deadline
    }

    fn write_deadline_exceeded(&self) {
        Stats::add(&self.client.fe.bus.stats().slow_consumers, 1);
        tracing::info!(
            "{} - Slow Consumer Detected: WriteDeadline of {:?} exceeded",
            self.client.tag(),
            self.client.opts.write_deadline
        );
    }

    fn end(&mut self, reason: CloseReason) {
        let client = self.client.clone();
        let fe = &client.fe;
        self.teardown();
        if self.joined {
            self.account.leave();
        }
        client.out.close(reason);
        fe.bus.conns().close(client.id, reason.as_str());
        if reason == CloseReason::SlowConsumerPendingBytes {
            tracing::info!(
                "{} - Slow Consumer Detected: MaxPending of {} Exceeded",
                client.tag(),
                client.opts.max_pending
            );
        }
        match reason {
            CloseReason::ClientClosed | CloseReason::ServerShutdown => {
                tracing::debug!(cid = %client.id, reason = %reason, "connection closed")
            }
            _ => {
                tracing::info!(cid = %client.id, peer = %client.stats.peer, reason = %reason, "connection closed")
            }
        }
    }
}

/// The Unix clock in µs, modulo 2^32 (enough to time a PING's round trip).
fn now_us32() -> u32 {
    (crate::conn_stats::unix_ns(std::time::SystemTime::now()) / 1_000) as u32
}
