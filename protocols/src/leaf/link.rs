//! A live leaf node link, whichever side dialled: the far side's interest as proxy
//! subscriptions, the local interest told to the far side, and the messages both ways.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use junction_core::mapping::Mapped;
use junction_core::subject;
use junction_core::sync::Lock;
use junction_core::{
    Account, Bus, ConnId, Delivery, FlushBatch, InterestWatch, MatchCache, Message, Sink,
    Subscription,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::proto::{self, Limits, Op, OutMsg};
use super::{learn_urls, redact, Ended, Link, Options};
use crate::outbound::{Outbound, Push};
use crate::CloseReason;

/// Whether a local subscription is interest the hub should learn.
fn exported_interest(sub: &Subscription, link_conn: ConnId) -> bool {
    // Not the link's own proxies; other links' interest is passed on (this server is the
    // hub between them).
    if sub.conn == link_conn {
        return false;
    }
    // JetStream's own API stays on this server (the hub has its own JetStream); a domain's
    // `$JS.<domain>.API` is exported, so the hub's clients reach it, and so is each consumer's
    // acknowledgement and flow control subject, so that they can acknowledge what they get.
    !sub.subject.starts_with(b"$JS.API.")
}

/// Keeps the hub told of the local interest of the link's account.
struct Interest {
    out: Arc<Outbound>,
    conn: ConnId,
    deny_imports: Vec<String>,
    state: Mutex<InterestState>,
}

#[derive(Default)]
struct InterestState {
    /// Subscriptions counted (by address), so a change reported twice counts once.
    counted: HashSet<usize>,
    /// Members per subject and queue.
    counts: HashMap<(Bytes, Option<Bytes>), u32>,
}

impl Interest {
    fn denied(&self, subject: &[u8]) -> bool {
        let s = String::from_utf8_lossy(subject);
        self.deny_imports.iter().any(|d| subject::covers(d, &s))
    }

    /// Counts `sub` in or out; returns the bytes to send (`LS+`/`LS-`).
    fn apply(&self, sub: &Arc<Subscription>, added: bool, out: &mut BytesMut) {
        if !exported_interest(sub, self.conn) || self.denied(&sub.subject) {
            return;
        }
        let mut st = self.state.locked();
        let id = Arc::as_ptr(sub) as usize;
        let key = (sub.subject.clone(), sub.queue.clone());
        if added {
            if !st.counted.insert(id) {
                return;
            }
            let n = st.counts.entry(key).or_default();
            *n += 1;
            // A plain subject is announced once; a queue group again with each new weight.
            if *n == 1 || sub.queue.is_some() {
                proto::encode_sub(out, &sub.subject, sub.queue.as_deref().map(|q| (q, *n)));
            }
        } else {
            if !st.counted.remove(&id) {
                return;
            }
            let Some(n) = st.counts.get_mut(&key) else {
                return;
            };
            *n -= 1;
            if *n == 0 {
                st.counts.remove(&key);
                proto::encode_unsub(out, &sub.subject, sub.queue.as_deref());
            } else if let Some(q) = sub.queue.as_deref() {
                proto::encode_sub(out, &sub.subject, Some((q, *n)));
            }
        }
    }
}

impl InterestWatch for Interest {
    fn changed(&self, sub: &Arc<Subscription>, added: bool) {
        let mut out = BytesMut::new();
        self.apply(sub, added, &mut out);
        if !out.is_empty() {
            self.out.push_own(&out);
            self.out.wake();
        }
    }
}

/// The sink of the hub's interest: a local publication that reaches it goes over the link.
struct LinkSink {
    out: Arc<Outbound>,
    link: Arc<Link>,
    deny_exports: Vec<String>,
    headers: bool,
}

impl Sink for LinkSink {
    fn deliver(&self, sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        // A JetStream delivery goes by the subject it was routed by, and carries its own
        // subject after its acknowledgement reply, as nats-server sends one over a link.
        let carried: Vec<u8>;
        let (subject, reply) = match (&batch.addressed, msg.reply.as_deref()) {
            (Some(to), Some(r)) => {
                carried = [r, b"@", &msg.subject[..]].concat();
                (to, Some(&carried[..]))
            }
            (Some(to), None) => (to, None),
            (None, r) => (&msg.subject, r),
        };
        if !self.deny_exports.is_empty() {
            let s = String::from_utf8_lossy(subject);
            if self.deny_exports.iter().any(|d| subject::covers(d, &s)) {
                return Delivery::Dropped;
            }
        }
        if let Some(p) = &self.link.perms {
            if p.delivery_denied(&String::from_utf8_lossy(subject)) {
                return Delivery::Dropped;
            }
        }
        let m = OutMsg {
            subject,
            reply,
            queues: &batch.link_queues,
            headers: if self.headers {
                msg.header_block().map(|h| &h[..])
            } else {
                None
            },
            payload: &msg.payload,
        };
        match self
            .out
            .push(m.encoded_len(), msg.size() as u64, |b| m.encode(b))
        {
            pushed @ Push::Queued { .. } => {
                self.link.out_msgs.fetch_add(1, Ordering::Relaxed);
                self.link
                    .out_bytes
                    .fetch_add(msg.size() as u64, Ordering::Relaxed);
                // Past the high watermark the publisher waits a little for the link to drain,
                // as it does for a slow client, rather than overrunning it.
                pushed.note_queued(batch, &sub.sink);
                Delivery::Queued
            }
            Push::SlowConsumer => {
                tracing::warn!(
                    account = %self.link.remote.account,
                    "leafnode link is a slow consumer: pending bytes over the limit, closing it"
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

    /// Not marked stuck: a link drains as fast as the far side reads, and a publisher that
    /// overruns it keeps pausing (up to the stall's bound on each read) instead of flooding it
    /// until it is cut off as a slow consumer, which would drop everything the link carries.
    fn stall_timed_out(&self) {}
}

/// What a handshake leaves for the link to run with.
pub(super) struct Handshaken {
    pub(super) rd: super::ReadHalf,
    pub(super) wr: super::WriteHalf,
    pub(super) buf: BytesMut,
    pub(super) limits: Limits,
    /// Operations that arrived with the handshake.
    pub(super) early: Vec<Op>,
    /// The far side's INFO (dialled) or CONNECT (accepted).
    pub(super) info: Value,
    pub(super) addr: Option<std::net::SocketAddr>,
    /// The URL dialled, or where the far side connected from.
    pub(super) url: String,
    /// The subject whose return means a loop (only on the side that dialled).
    pub(super) loop_subject: Option<String>,
    pub(super) rtt: Option<std::time::Duration>,
}

/// Runs a link after its handshake until it ends; removes what it added to the account.
pub(super) async fn serve(
    bus: &Arc<Bus>,
    opts: &Options,
    link: &Arc<Link>,
    hs: Handshaken,
    urls: &mut Vec<String>,
    shutdown: &CancellationToken,
) -> Ended {
    let Handshaken {
        mut rd,
        wr,
        mut buf,
        limits,
        early,
        info,
        addr,
        url,
        loop_subject,
        rtt,
    } = hs;
    let account = bus.account_or_create(&link.remote.account);
    let conn = bus.next_conn_id();
    let out = Arc::new(Outbound::new(opts.max_pending.max(64 * 1024 * 1024)));
    let interest = Arc::new(Interest {
        out: out.clone(),
        conn,
        deny_imports: link.remote.deny_imports.clone(),
        state: Mutex::new(InterestState::default()),
    });
    let sink: Arc<dyn Sink> = Arc::new(LinkSink {
        out: out.clone(),
        link: link.clone(),
        deny_exports: link.remote.deny_exports.clone(),
        headers: info["headers"].as_bool().unwrap_or(true),
    });
    let watch: Arc<dyn InterestWatch> = interest.clone();
    {
        let mut first = BytesMut::new();
        if let Some(l) = &loop_subject {
            proto::encode_sub(&mut first, l.as_bytes(), None);
        }
        for sub in account.watch(watch.clone()) {
            interest.apply(&sub, true, &mut first);
        }
        out.push_own(&first);
    }
    {
        let mut s = link.status.locked();
        s.url = Some(redact(&url));
        s.addr = addr;
        s.hub_id = info["server_id"].as_str().unwrap_or_default().to_string();
        s.hub_name = info["server_name"]
            .as_str()
            .or(info["name"].as_str())
            .unwrap_or_default()
            .to_string();
        s.since = Some(SystemTime::now());
        s.rtt = rtt;
        s.last_error = None;
    }
    link.connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        account = %link.remote.account,
        hub = %link.status.locked().hub_name,
        "Leafnode connection created for account: {} to {}",
        link.remote.account,
        redact(&url)
    );

    let mut conn_state = Conn {
        link,
        account: &account,
        conn,
        sink: &sink,
        out: &out,
        proxies: HashMap::new(),
        loop_subject: loop_subject.as_deref().map(str::as_bytes),
        cache: MatchCache::new(true),
        checker: link.perms.clone().map(junction_auth::Checker::new),
        pings_out: 0,
        ping_sent: None,
    };
    let mut ended = None;
    for op in early {
        if let Err(e) = conn_state.handle(op, urls) {
            ended = Some(e);
            break;
        }
    }
    // What arrived with the handshake and is still buffered (a PING after CONNECT, interest
    // after the PONG).
    if ended.is_none() {
        ended = conn_state.drain(&mut buf, limits, urls).0;
    }
    let ended = match ended {
        Some(e) => e,
        None => {
            let writer = write_loop(out.clone(), wr);
            tokio::pin!(writer);
            let mut ping = tokio::time::interval(opts.ping_interval);
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break Ended::Shutdown,
                    r = &mut writer => break Ended::Dropped(r),
                    _ = ping.tick() => {
                        if conn_state.pings_out >= opts.ping_max.max(1) {
                            break Ended::Dropped(CloseReason::StaleConnection.as_str().into());
                        }
                        conn_state.pings_out += 1;
                        conn_state.ping_sent = Some(Instant::now());
                        out.push_own(b"PING\r\n");
                        out.wake();
                    }
                    n = rd.read_buf(&mut buf) => {
                        match n {
                            Ok(0) => break Ended::Dropped("the hub closed the connection".into()),
                            Err(e) => break Ended::Dropped(e.to_string()),
                            Ok(_) => {}
                        }
                        let (ended, backlogged) = conn_state.drain(&mut buf, limits, urls);
                        if let Some(e) = ended {
                            break e;
                        }
                        // Subscribers overrun by what came over the link: read nothing more
                        // for a moment (the far side then holds on to it), as a publishing
                        // client would wait.
                        stall(backlogged).await;
                    }
                }
            }
        }
    };
    // Tear down: the hub's interest and the watch go with the link.
    account.unwatch(&watch);
    for (_, sub) in conn_state.proxies.drain() {
        sub.close();
        account.unsubscribe(&sub);
    }
    link.subs.store(0, Ordering::Relaxed);
    out.close(CloseReason::ClientClosed);
    ended
}

/// Writes what the link queues until it closes or the socket fails.
async fn write_loop(out: Arc<Outbound>, mut wr: super::WriteHalf) -> String {
    loop {
        std::future::poll_fn(|cx| {
            if out.register(cx.waker(), true) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        if let Some(reason) = out.closed() {
            return reason.as_str().to_string();
        }
        let chunk = out.take();
        if chunk.is_empty() {
            continue;
        }
        // TLS holds records until flushed; TCP's flush does nothing.
        if let Err(e) = async {
            wr.write_all(&chunk).await?;
            wr.flush().await
        }
        .await
        {
            return e.to_string();
        }
        out.written(chunk);
    }
}

/// Longest the link waits for one overrun local subscriber, and for all after one read.
const STALL_MAX: std::time::Duration = std::time::Duration::from_millis(5);
const STALL_TOTAL: std::time::Duration = std::time::Duration::from_millis(10);

async fn stall(sinks: Vec<Arc<dyn Sink>>) {
    let start = Instant::now();
    for sink in sinks {
        let left = (start + STALL_TOTAL).saturating_duration_since(Instant::now());
        let drained = !left.is_zero()
            && tokio::time::timeout(
                left.min(STALL_MAX),
                std::future::poll_fn(|cx| sink.poll_drained(cx)),
            )
            .await
            .is_ok();
        if !drained {
            sink.stall_timed_out();
        }
    }
}

/// A live link's state on its task.
struct Conn<'a> {
    link: &'a Arc<Link>,
    account: &'a Arc<Account>,
    conn: ConnId,
    sink: &'a Arc<dyn Sink>,
    out: &'a Arc<Outbound>,
    /// The hub's interest: one proxy subscription per subject and queue.
    proxies: HashMap<(Bytes, Option<Bytes>), Arc<Subscription>>,
    loop_subject: Option<&'a [u8]>,
    cache: MatchCache,
    /// An accepted leaf node's publish permissions, with their cache.
    checker: Option<junction_auth::Checker>,
    pings_out: u32,
    ping_sent: Option<Instant>,
}

impl Conn<'_> {
    /// Handles every complete operation in `buf`.
    fn drain(
        &mut self,
        buf: &mut BytesMut,
        limits: Limits,
        urls: &mut Vec<String>,
    ) -> (Option<Ended>, Vec<Arc<dyn Sink>>) {
        let mut batch = FlushBatch::default();
        let mut ended = None;
        loop {
            match proto::parse(buf, limits) {
                Ok(Some(Op::Msg {
                    subject,
                    reply,
                    queues,
                    headers,
                    payload,
                })) => self.inbound(subject, reply, queues, headers, payload, &mut batch),
                Ok(Some(op)) => {
                    if let Err(e) = self.handle(op, urls) {
                        ended = Some(e);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.out.push_own(format!("-ERR '{e}'\r\n").as_bytes());
                    ended = Some(Ended::Dropped(format!("protocol error from the hub: {e}")));
                    break;
                }
            }
        }
        batch.wake_all();
        self.out.wake();
        (ended, batch.take_backlogged())
    }

    fn inbound(
        &mut self,
        subject: Bytes,
        reply: Option<Bytes>,
        queues: Vec<Bytes>,
        headers: Option<Bytes>,
        payload: Bytes,
        batch: &mut FlushBatch,
    ) {
        let size = payload.len() + headers.as_ref().map_or(0, Bytes::len);
        self.link.in_msgs.fetch_add(1, Ordering::Relaxed);
        self.link.in_bytes.fetch_add(size as u64, Ordering::Relaxed);
        if !subject::is_valid_literal_subject(&subject) {
            return;
        }
        // What a leaf connection sends in is mapped like a client's publication.
        let subject = match self.account.map_subject(&subject) {
            Mapped::Same => subject,
            Mapped::To(s) => Bytes::from(s),
            Mapped::Dropped => return,
        };
        if let Some(c) = &mut self.checker {
            if !c.may_publish_bytes(&subject) {
                let s = String::from_utf8_lossy(&subject);
                tracing::warn!(
                    account = %self.link.remote.account,
                    "leafnode Publish Violation on {s:?}"
                );
                self.out.push_own(
                    format!("-ERR 'Permissions Violation for Publish to \"{s}\"'\r\n").as_bytes(),
                );
                return;
            }
        }
        if !self.link.remote.deny_imports.is_empty() {
            let s = String::from_utf8_lossy(&subject);
            if self
                .link
                .remote
                .deny_imports
                .iter()
                .any(|d| subject::covers(d, &s))
            {
                return;
            }
        }
        // A JetStream delivery from the far side: routed by `subject`, shown with the subject
        // its acknowledgement reply carries.
        let split = reply.as_ref().and_then(|r| {
            let (ack, shown) = split_js_ack(r)?;
            Some((r.slice_ref(shown), r.slice_ref(ack)))
        });
        batch.routed_queues = Some(queues);
        match split {
            Some((shown, ack)) => {
                let mut msg = Message::new(shown, Some(ack), payload, self.conn);
                msg.headers = headers;
                self.account
                    .deliver_to(&mut self.cache, &subject, &msg, batch);
            }
            None => {
                let mut msg = Message::new(subject, reply, payload, self.conn);
                msg.headers = headers;
                self.account.publish(&mut self.cache, &msg, batch);
            }
        }
        batch.routed_queues = None;
    }

    fn handle(&mut self, op: Op, urls: &mut Vec<String>) -> Result<(), Ended> {
        match op {
            Op::Ping => self.out.push_own(b"PONG\r\n"),
            Op::Pong => {
                self.pings_out = 0;
                if let Some(t) = self.ping_sent.take() {
                    self.link.status.locked().rtt = Some(t.elapsed());
                }
            }
            Op::Ok => {}
            Op::Info(j) => {
                let info: Value = serde_json::from_slice(&j).unwrap_or_default();
                learn_urls(&info, urls);
            }
            Op::Err(e) => {
                let lower = e.to_ascii_lowercase();
                if lower.contains("loop detected") {
                    return Err(Ended::Loop);
                }
                tracing::warn!(account = %self.link.remote.account, "Leafnode Error '{e}'");
                if lower.contains("authorization") || lower.contains("permissions violation") {
                    // Permission errors keep the link; an authorization failure ends it.
                    if lower.contains("authorization violation") {
                        return Err(Ended::Dropped(format!("Leafnode Error '{e}'")));
                    }
                }
            }
            Op::Connect(_) => {
                return Err(Ended::Dropped("the hub sent CONNECT".into()));
            }
            Op::Sub { subject, queue } => {
                if self.loop_subject == Some(&subject[..]) {
                    self.out.push_own(b"-ERR 'Loop detected'\r\n");
                    return Err(Ended::Loop);
                }
                if !self.imported(&subject) {
                    return Ok(());
                }
                if let Some(p) = &self.link.perms {
                    let s = String::from_utf8_lossy(&subject);
                    let q = queue.as_ref().map(|(q, _)| String::from_utf8_lossy(q));
                    if !p.may_subscribe(&s, q.as_deref()) {
                        self.out.push_own(
                            format!("-ERR 'Permissions Violation for Subscription to \"{s}\"'\r\n")
                                .as_bytes(),
                        );
                        return Ok(());
                    }
                }
                let key = (subject.clone(), queue.map(|(q, _)| q));
                if self.proxies.contains_key(&key) {
                    return Ok(()); // a queue group's new weight
                }
                let sub = Arc::new(
                    Subscription::new(
                        self.conn,
                        subject,
                        key.1.clone(),
                        Bytes::new(),
                        true,
                        self.sink.clone(),
                    )
                    .into_remote(),
                );
                if self.account.subscribe(sub.clone()).is_ok() {
                    self.proxies.insert(key, sub);
                    self.link
                        .subs
                        .store(self.proxies.len() as u64, Ordering::Relaxed);
                }
            }
            Op::Unsub { subject, queue } => {
                if let Some(sub) = self.proxies.remove(&(subject, queue)) {
                    sub.close();
                    self.account.unsubscribe(&sub);
                    self.link
                        .subs
                        .store(self.proxies.len() as u64, Ordering::Relaxed);
                }
            }
            Op::Msg { .. } => unreachable!("messages are handled by drain"),
        }
        Ok(())
    }

    /// Whether the hub's interest in `subject` becomes a proxy here: not the hub's own
    /// JetStream API (this server answers its clients' `$JS.API` itself), and not what the
    /// remote does not export.
    fn imported(&self, subject: &[u8]) -> bool {
        if !subject::is_valid_subject(subject)
            || subject.starts_with(b"$JS.API.")
            || subject == b"$JS.API.>"
        {
            return false;
        }
        let s = String::from_utf8_lossy(subject);
        !self
            .link
            .remote
            .deny_exports
            .iter()
            .any(|d| subject::covers(d, &s))
    }
}

/// Splits `$JS.ACK.<...>@<subject>` (a JetStream delivery's reply with the subject it shows,
/// as nats-server sends one over a link) into the reply and the subject. The `@` that counts
/// comes after the reply's eighth dot: stream and consumer names may hold `@` themselves.
fn split_js_ack(reply: &[u8]) -> Option<(&[u8], &[u8])> {
    if !reply.starts_with(b"$JS.ACK.") {
        return None;
    }
    let mut dots = 0;
    for (i, &c) in reply.iter().enumerate() {
        match c {
            b'.' => dots += 1,
            b'@' if dots >= 8 && i + 1 < reply.len() => {
                return Some((&reply[..i], &reply[i + 1..]))
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::split_js_ack;

    #[test]
    fn js_ack_replies_give_up_the_subject_they_carry() {
        let r = b"$JS.ACK.S.C.1.2.3.1700000000.0@orders.eu";
        assert_eq!(
            split_js_ack(r),
            Some((&b"$JS.ACK.S.C.1.2.3.1700000000.0"[..], &b"orders.eu"[..]))
        );
        // An `@` in a stream or consumer name is not the separator.
        let r = b"$JS.ACK.a@b.c@d.1.2.3.17.0@x";
        assert_eq!(
            split_js_ack(r),
            Some((&b"$JS.ACK.a@b.c@d.1.2.3.17.0"[..], &b"x"[..]))
        );
        // Nothing after the `@`, no `@`, or not an acknowledgement reply: left as it is.
        assert_eq!(split_js_ack(b"$JS.ACK.S.C.1.2.3.17.0@"), None);
        assert_eq!(split_js_ack(b"$JS.ACK.S.C.1.2.3.17.0"), None);
        assert_eq!(split_js_ack(b"_INBOX.a.b.c.d.e.f.g.h@x"), None);
        assert_eq!(split_js_ack(b"$JS.ACK.S@x"), None);
    }
}
