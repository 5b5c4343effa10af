//! The MQTT frontend: sessions, QoS flows, retained and will messages, on the shared bus.
//!
//! - [`Frontend`] holds what every MQTT connection shares: the bus, the sessions by client id and
//!   the retained messages. [`serve`] accepts connections and sweeps keepalives and expired
//!   sessions once a second.
//! - A [`Link`] is one network connection (its outbound buffer, as others see it); a session
//!   outlives its links when the client asked for a persistent session.
//! - Each MQTT subscription is one or two core subscriptions (a filter `a/#` also matches `a`),
//!   whose sink ([`SubSink`]) encodes PUBLISH for the session's current link, assigns packet
//!   identifiers and keeps QoS 1/2 messages in flight, or queues them while the client is away.
//!
//! Topics map onto subjects as nats-server maps them, so NATS clients meet MQTT clients on the
//! same subjects. User properties travel as NATS headers; the response topic as the reply
//! subject; content type, correlation data and payload format as `Mqtt-*` headers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use junction_auth::{AuthStep, Authenticator, Credentials, Exchange, Identity};
use junction_core::{
    subject, Account, Bus, ConnId, ConnSnapshot, ConnView, Delivery, DeliveryFacts, FlushBatch,
    MatchCache, Message, Sink, Stats, Subscription,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, Protocol as Version, PubResp, Publish, QoS,
    RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe, Utf8Bytes, Will,
};
use super::properties::{AuthProperties, ConnAckProperties, PublishProperties, UserProperty};
use super::{encode, encoded_len, reason, topic, DecodeError, Decoder};
use crate::conn_stats::{BatchIn, ConnStats};
use crate::driver::{Conn, Protocol};
use crate::outbound::{Outbound, Push};
use crate::transport::{Plain, Transport};
use crate::CloseReason;

/// Header carrying MQTT 5 correlation data (hex) across NATS.
const CORRELATION_HEADER: &str = "Mqtt-Correlation-Data";
/// Header carrying the MQTT 5 content type across NATS.
const CONTENT_TYPE_HEADER: &str = "Mqtt-Content-Type";
/// Header carrying the MQTT 5 payload format indicator across NATS.
const PAYLOAD_FORMAT_HEADER: &str = "Mqtt-Payload-Format";
/// Header carrying an MQTT 5 response topic when the reply subject is the bridge's.
const RESPONSE_TOPIC_HEADER: &str = "Mqtt-Response-Topic";
/// Packet identifiers and QoS 1/2 messages a client may have in flight towards us (our
/// receive maximum), and that we keep in flight towards a client that names no limit.
const RECEIVE_MAXIMUM: u16 = 1024;
/// Topic aliases a client may set up towards us.
const TOPIC_ALIAS_MAXIMUM: u16 = 64;
/// Past this many queued QoS 1/2 messages for a connected, acknowledging client, publishers
/// pause briefly (as for a NATS backlog), so a fast publisher is paced by the subscriber's
/// acknowledgements instead of filling the queue.
const QUEUE_HIGH_WATERMARK: usize = 4096;
/// Below this, paused publishers go on.
const QUEUE_LOW_WATERMARK: usize = 1024;

/// Settings of the MQTT frontend.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest packet accepted from a client.
    pub max_packet_size: usize,
    /// Bytes that may wait for one client before its QoS 0 traffic is dropped.
    pub max_pending: usize,
    /// QoS 1/2 messages kept for a client that is away (or whose window is full); past it the
    /// oldest are dropped and counted.
    pub max_queued: usize,
    /// Highest QoS a NATS publication is delivered with (it has no QoS of its own).
    pub nats_qos: u8,
    /// How long one write may stall.
    pub write_deadline: Duration,
    /// Longest keep alive a client may ask for (0 or more is replaced by this, and 5.0 clients
    /// are told so with Server Keep Alive); `None`: the client's choice stands.
    pub max_keep_alive: Option<u16>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024 + 4096,
            max_pending: 64 * 1024 * 1024,
            max_queued: 10_000,
            nats_qos: 1,
            write_deadline: Duration::from_secs(10),
            max_keep_alive: None,
        }
    }
}

/// A retained message, as it was published.
#[derive(Clone)]
struct Retained {
    msg: Message,
    qos: u8,
}

/// Sessions are found by account and client id.
type SessionKey = (String, Arc<str>);

/// What a connection needs once it publishes: boxed, so a connection that only subscribes
/// (most devices' downlinks) does not carry it.
#[derive(Default)]
struct Publishing {
    cache: MatchCache,
    batch: FlushBatch,
}

/// What every MQTT connection shares.
pub struct Frontend {
    /// The bus.
    pub bus: Arc<Bus>,
    /// Who connections are.
    pub auth: Arc<dyn Authenticator>,
    /// Settings.
    pub opts: Options,
    sessions: Mutex<HashMap<SessionKey, Arc<Session>>>,
    retained: Mutex<HashMap<(String, Bytes), Retained>>,
    started: Instant,
}

impl Frontend {
    /// A frontend for `bus`.
    pub fn new(bus: Arc<Bus>, auth: Arc<dyn Authenticator>, opts: Options) -> Self {
        Self {
            bus,
            auth,
            opts,
            sessions: Mutex::new(HashMap::new()),
            retained: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn retain(&self, account: &str, msg: &Message, qos: u8) {
        let key = (account.to_string(), msg.subject.clone());
        let mut retained = self.retained.lock().expect("retained lock");
        if msg.payload.is_empty() {
            retained.remove(&key);
        } else {
            retained.insert(
                key,
                Retained {
                    msg: msg.clone(),
                    qos,
                },
            );
        }
    }

    fn retained_matching(&self, account: &str, filter: &[u8]) -> Vec<Retained> {
        self.retained
            .lock()
            .expect("retained lock")
            .iter()
            .filter(|((a, subj), _)| a == account && matches_filter(filter, subj))
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// Whether a subject matches an MQTT-derived filter, with the MQTT rule that a leading
/// wildcard does not match topics starting with `$`.
fn matches_filter(filter: &[u8], subj: &[u8]) -> bool {
    if subj.first() == Some(&b'$') && matches!(filter.first(), Some(b'*' | b'>')) {
        return false;
    }
    subject::matches(filter, subj)
}

/// One network connection, as others see it.
pub(crate) struct Link {
    id: ConnId,
    out: Outbound,
    fe: Arc<Frontend>,
    /// Address, start and counters, for monitoring.
    stats: ConnStats,
    about: Mutex<About>,
    /// When the client last sent anything (ms since the frontend started).
    last_read_ms: AtomicU64,
    /// Keep alive in ms (0: none).
    keep_alive_ms: AtomicU64,
}

#[derive(Default)]
struct About {
    client_id: Arc<str>,
    account: String,
    version: Option<Version>,
}

impl Link {
    /// Encodes a packet the connection itself sends.
    fn send(&self, packet: &Packet, version: Version) {
        let mut buf = BytesMut::new();
        if encode(packet, version, &mut buf).is_ok() {
            self.out.push_own(&buf);
            self.out.wake();
        }
    }
}

impl ConnView for Link {
    fn snapshot(&self) -> ConnSnapshot {
        let about = self.about.lock().expect("about lock");
        ConnSnapshot {
            name: about.client_id.to_string(),
            lang: match about.version {
                Some(Version::V5) => "mqtt 5.0".into(),
                Some(Version::V311) => "mqtt 3.1.1".into(),
                None => String::new(),
            },
            account: about.account.clone(),
            ..self.stats.snapshot(self.id, "mqtt", &self.out)
        }
    }

    fn kind(&self) -> &'static str {
        "mqtt"
    }

    /// Closes the connection when the client was silent for 1.5 times its keep alive.
    fn tick(&self) {
        let keep_alive = self.keep_alive_ms.load(Ordering::Relaxed);
        if keep_alive == 0 {
            return;
        }
        let silent = self
            .fe
            .now_ms()
            .saturating_sub(self.last_read_ms.load(Ordering::Relaxed));
        if silent > keep_alive * 3 / 2 {
            let version = self.about.lock().expect("about lock").version;
            if version == Some(Version::V5) {
                self.send(&disconnect(reason::KEEP_ALIVE_TIMEOUT), Version::V5);
            }
            self.out.finish(CloseReason::KeepAliveTimeout);
        }
    }

    fn shutdown(&self) {
        let version = self.about.lock().expect("about lock").version;
        if version == Some(Version::V5) {
            self.send(&disconnect(reason::SERVER_SHUTTING_DOWN), Version::V5);
        }
        self.out.finish(CloseReason::ServerShutdown);
    }
}

/// A DISCONNECT from the server, with a reason string saying why in words.
fn disconnect(code: u8) -> Packet {
    let words = match code {
        reason::KEEP_ALIVE_TIMEOUT => Some("keep alive timeout"),
        reason::SESSION_TAKEN_OVER => Some("session taken over by another connection"),
        reason::SERVER_SHUTTING_DOWN => Some("server shutting down"),
        reason::PACKET_TOO_LARGE => Some("packet larger than the maximum packet size"),
        reason::TOPIC_ALIAS_INVALID => Some("topic alias out of range"),
        reason::RECEIVE_MAXIMUM_EXCEEDED => Some("too many QoS 2 messages in flight"),
        reason::TOPIC_NAME_INVALID => Some("topic name cannot be mapped to a subject"),
        reason::MALFORMED_PACKET => Some("malformed packet"),
        reason::PROTOCOL_ERROR => Some("protocol error"),
        _ => None,
    };
    Packet::Disconnect(Disconnect {
        reason: code,
        properties: super::properties::DisconnectProperties {
            reason_string: words.map(utf8),
            ..Default::default()
        },
    })
}

/// A QoS 1/2 message on its way to the client.
#[derive(Clone)]
struct Outgoing {
    publish: Publish,
    /// QoS 2: PUBREC came, PUBREL sent, waiting for PUBCOMP.
    released: bool,
}

/// An MQTT session: it outlives its connections when the client asked for that.
pub(crate) struct Session {
    client_id: Arc<str>,
    /// Stable across reconnects: the origin of the session's publications (no local).
    conn_id: ConnId,
    account: Arc<Account>,
    fe: Arc<Frontend>,
    state: Mutex<SessionState>,
}

struct SessionState {
    link: Option<Arc<Link>>,
    version: Version,
    next_packet_id: u16,
    /// QoS 1/2 messages sent and not yet acknowledged, by packet identifier.
    inflight: BTreeMap<u16, Outgoing>,
    /// QoS 1/2 messages waiting for the window (or for the client to come back), with the
    /// time they were queued (for message expiry).
    queue: VecDeque<(Publish, Instant)>,
    /// A will waiting for its delay to pass (5.0 will delay interval).
    pending_will: Option<u64>,
    /// How many messages the client takes in flight.
    receive_maximum: u16,
    /// Largest packet the client accepts.
    max_packet_size: Option<u32>,
    /// Topic aliases the client accepts from us on this connection (5.0).
    alias_max: u16,
    /// Topic aliases set up towards the client on this connection.
    out_aliases: HashMap<Utf8Bytes, u16>,
    /// The last subject delivered and its topic.
    last_topic: Option<(Bytes, Utf8Bytes)>,
    /// Subscriptions by filter (a filter is one or two core subscriptions).
    subs: HashMap<Bytes, Vec<Arc<Subscription>>>,
    /// QoS 2 packet identifiers received (PUBREC sent) and not yet released.
    inbound_qos2: std::collections::HashSet<u16>,
    /// Seconds the session lives after its link closes (`u32::MAX`: forever).
    expiry_secs: u32,
    /// When a detached session expires.
    expires_at: Option<Instant>,
    /// The session's request/response bridge, made on its first request with correlation data.
    bridge: Option<(Arc<Bridge>, Arc<Subscription>)>,
    /// Publishers waiting for the queue to drain.
    drain_wakers: Vec<std::task::Waker>,
    /// A publisher waited in vain: the client is not acknowledging, so nobody waits again
    /// until it does.
    stuck: bool,
}

impl Session {
    fn new(client_id: Arc<str>, account: Arc<Account>, fe: Arc<Frontend>) -> Self {
        Self {
            client_id,
            conn_id: fe.bus.next_conn_id(),
            account,
            fe,
            state: Mutex::new(SessionState {
                link: None,
                version: Version::V311,
                next_packet_id: 1,
                inflight: BTreeMap::new(),
                queue: VecDeque::new(),
                pending_will: None,
                receive_maximum: RECEIVE_MAXIMUM,
                max_packet_size: None,
                alias_max: 0,
                out_aliases: HashMap::new(),
                last_topic: None,
                subs: HashMap::new(),
                inbound_qos2: std::collections::HashSet::new(),
                expiry_secs: 0,
                expires_at: None,
                bridge: None,
                drain_wakers: Vec::new(),
                stuck: false,
            }),
        }
    }

    /// Removes every subscription of the session.
    fn unsubscribe_all(&self) {
        let subs: Vec<_> = {
            let mut state = self.state.lock().expect("session lock");
            let bridge = state.bridge.take().map(|(_, sub)| sub);
            state
                .subs
                .drain()
                .flat_map(|(_, s)| s)
                .chain(bridge)
                .collect()
        };
        for sub in subs {
            self.account.unsubscribe(&sub);
        }
    }

    /// Sends what the window allows from the queue.
    fn fill_window(&self, state: &mut SessionState) {
        let Some(link) = state.link.clone() else {
            return;
        };
        while state.inflight.len() < usize::from(state.receive_maximum) {
            let Some((mut publish, queued_at)) = state.queue.pop_front() else {
                break;
            };
            if let Some(expiry) = publish.properties.message_expiry_interval {
                // MQTT 5: an expired message is not delivered; a live one carries what is left.
                let waited = u32::try_from(queued_at.elapsed().as_secs()).unwrap_or(u32::MAX);
                if waited >= expiry {
                    continue;
                }
                publish.properties.message_expiry_interval = Some(expiry - waited);
            }
            publish.packet_id = next_packet_id(state);
            push_publish(&link, state, &publish);
            state.inflight.insert(
                publish.packet_id,
                Outgoing {
                    publish,
                    released: false,
                },
            );
        }
        if state.queue.len() <= QUEUE_LOW_WATERMARK {
            for w in state.drain_wakers.drain(..) {
                w.wake();
            }
        }
    }
}

fn next_packet_id(state: &mut SessionState) -> u16 {
    loop {
        let id = state.next_packet_id;
        state.next_packet_id = state.next_packet_id.checked_add(1).unwrap_or(1);
        if !state.inflight.contains_key(&id) {
            return id;
        }
    }
}

/// Encodes a PUBLISH into the link's buffer, unless it is over the client's maximum packet size.
/// With a topic alias where the client allows them (5.0): a topic already aliased on this
/// connection goes as its alias alone; a new one gets the next alias while any are left.
fn push_publish(link: &Link, state: &mut SessionState, publish: &Publish) -> Push {
    let mut out = publish.clone();
    let mut new_alias = None;
    if state.version == Version::V5 && state.alias_max > 0 {
        match state.out_aliases.get(&out.topic) {
            Some(&alias) => {
                out.properties.topic_alias = Some(alias);
                out.topic = Utf8Bytes::default();
            }
            None if state.out_aliases.len() < usize::from(state.alias_max) => {
                let alias = state.out_aliases.len() as u16 + 1;
                out.properties.topic_alias = Some(alias);
                new_alias = Some(alias);
            }
            None => {}
        }
    }
    let packet = Packet::Publish(out);
    let Ok(len) = encoded_len(&packet, state.version) else {
        return Push::Closed;
    };
    if state.max_packet_size.is_some_and(|max| len > max as usize) {
        // The client cannot take it: MQTT 5 says the server discards it.
        return Push::Closed;
    }
    let version = state.version;
    let pushed = link.out.push(len, publish.payload.len() as u64, |b| {
        let _ = encode(&packet, version, b);
    });
    if let (Some(alias), Push::Queued { .. }) = (new_alias, pushed) {
        // Only an alias the client was sent exists for it.
        state.out_aliases.insert(publish.topic.clone(), alias);
    }
    pushed
}

/// Requests the bridge remembers at most (the oldest are forgotten first).
const BRIDGE_ENTRIES: usize = 10_000;

/// Carries MQTT 5 request/response over NATS: a request with a response topic and correlation
/// data goes out with a reply subject of the bridge; the answer to that subject (from a NATS
/// `msg.respond` or an MQTT responder) is published on the response topic with the
/// correlation data, so the requester gets both.
struct Bridge {
    prefix: String,
    account: Arc<Account>,
    pending: Mutex<BridgePending>,
}

/// The bridge's last request number and its open requests: number -> (response subject,
/// correlation data).
type BridgePending = (u64, BTreeMap<u64, (Bytes, Bytes)>);

impl Bridge {
    /// A fresh reply subject for a request answered on `response` with `correlation`.
    fn reply_subject(&self, response: Bytes, correlation: Bytes) -> Bytes {
        let mut pending = self.pending.lock().expect("bridge lock");
        pending.0 += 1;
        let n = pending.0;
        if pending.1.len() >= BRIDGE_ENTRIES {
            pending.1.pop_first();
        }
        pending.1.insert(n, (response, correlation));
        Bytes::from(format!("{}.{n}", self.prefix))
    }
}

impl Sink for Bridge {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        let n = msg
            .subject
            .rsplit(|b| *b == b'.')
            .next()
            .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u64>().ok());
        let Some((response, correlation)) =
            n.and_then(|n| self.pending.lock().expect("bridge lock").1.remove(&n))
        else {
            return Delivery::Dropped;
        };
        let mut props = msg
            .headers
            .as_ref()
            .map(|_| properties_from_nats(msg))
            .unwrap_or_default();
        props.response_topic = None;
        props.correlation_data = Some(correlation);
        let answer = Message {
            subject: response,
            reply: None,
            headers: headers_from_mqtt(&props),
            payload: msg.payload.clone(),
            facts: msg.facts,
        };
        self.account
            .publish(&mut MatchCache::new(false), &answer, batch);
        Delivery::Queued
    }

    fn flush(&self) {}
}

/// The receiving end of one MQTT subscription.
struct SubSink {
    session: Arc<Session>,
    qos: QoS,
    retain_as_published: bool,
    subscription_id: Option<u32>,
}

impl SubSink {
    /// The PUBLISH for a message from the bus; its topic is filled in by [`SubSink::offer`].
    fn publish_for(&self, msg: &Message, retained: bool) -> Publish {
        let qos = match msg.facts.qos {
            Some(q) => q.min(self.qos as u8),
            None => self.session.fe.opts.nats_qos.min(self.qos as u8),
        };
        let mut properties = properties_from_nats(msg);
        if let Some(id) = self.subscription_id {
            properties.subscription_identifiers.push(id);
        }
        Publish {
            dup: false,
            qos: QoS::from_bits(qos).unwrap_or_default(),
            retain: retained || (self.retain_as_published && msg.facts.retain),
            topic: Utf8Bytes::default(),
            packet_id: 0,
            properties,
            payload: msg.payload.clone(),
        }
    }

    /// Queues or sends one message for the session.
    fn offer(
        &self,
        mut publish: Publish,
        subject: &Bytes,
        batch: Option<&mut FlushBatch>,
        me: &Arc<dyn Sink>,
    ) -> Delivery {
        let mut state = self.session.state.lock().expect("session lock");
        // The topic of the last subject is kept: a stream on one subject maps it once.
        publish.topic = match &state.last_topic {
            Some((s, t)) if s == subject => t.clone(),
            _ => {
                let Ok(t) = topic::subject_to_topic(subject) else {
                    return Delivery::Dropped;
                };
                // An own copy: the subject may be a slice of a publisher's read buffer.
                state.last_topic = Some((Bytes::copy_from_slice(subject), t.clone()));
                t
            }
        };
        let link = state.link.clone();
        if publish.qos == QoS::AtMostOnce {
            let Some(link) = link else {
                return Delivery::Dropped;
            };
            return match push_publish(&link, &mut state, &publish) {
                Push::Queued { was_empty, .. } => {
                    if let Some(batch) = batch {
                        if was_empty {
                            batch.touch(me.clone());
                        }
                    } else {
                        link.out.wake();
                    }
                    Delivery::Queued
                }
                Push::SlowConsumer => {
                    Stats::add(&self.session.fe.bus.stats().slow_consumers, 1);
                    Delivery::Dropped
                }
                Push::Closed => Delivery::Dropped,
            };
        }
        match link {
            Some(link) if state.inflight.len() < usize::from(state.receive_maximum) => {
                let mut publish = publish;
                publish.packet_id = next_packet_id(&mut state);
                if let Push::Queued { was_empty, .. } = push_publish(&link, &mut state, &publish) {
                    match batch {
                        Some(batch) if was_empty => batch.touch(me.clone()),
                        Some(_) => {}
                        None => link.out.wake(),
                    }
                }
                state.inflight.insert(
                    publish.packet_id,
                    Outgoing {
                        publish,
                        released: false,
                    },
                );
            }
            link => {
                if state.queue.len() >= self.session.fe.opts.max_queued {
                    state.queue.pop_front();
                    Stats::add(&self.session.fe.bus.stats().queue_dropped, 1);
                }
                state.queue.push_back((publish, Instant::now()));
                let backlogged =
                    link.is_some() && !state.stuck && state.queue.len() > QUEUE_HIGH_WATERMARK;
                if let (true, Some(batch)) = (backlogged, batch) {
                    batch.backlog(me);
                }
            }
        }
        Delivery::Queued
    }
}

impl Sink for SubSink {
    fn deliver(&self, sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        if !matches_filter(&sub.subject, &msg.subject) {
            // A leading wildcard does not match a `$` topic in MQTT.
            return Delivery::Dropped;
        }
        let publish = self.publish_for(msg, false);
        self.offer(publish, &msg.subject, Some(batch), &sub.sink)
    }

    fn flush(&self) {
        let link = self
            .session
            .state
            .lock()
            .expect("session lock")
            .link
            .clone();
        if let Some(link) = link {
            link.out.wake();
        }
    }

    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let link = {
            let mut state = self.session.state.lock().expect("session lock");
            if state.link.is_some() && !state.stuck && state.queue.len() > QUEUE_LOW_WATERMARK {
                if !state.drain_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.drain_wakers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            state.link.clone()
        };
        match link {
            Some(link) => link.out.poll_drained(cx),
            None => Poll::Ready(()),
        }
    }

    fn stall_timed_out(&self) {
        let link = {
            let mut state = self.session.state.lock().expect("session lock");
            state.stuck = true;
            state.link.clone()
        };
        if let Some(link) = link {
            link.out.stall_timed_out();
        }
    }
}

/// Hex text of binary data, for a header value.
fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Bytes> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

/// The NATS header block for an MQTT publication's properties (None when there are none).
fn headers_from_mqtt(props: &PublishProperties) -> Option<Bytes> {
    let mut lines: Vec<(String, String)> = props
        .user_properties
        .iter()
        .filter(|p| {
            !p.name.as_str().contains([':', '\r', '\n']) && !p.value.as_str().contains(['\r', '\n'])
        })
        .map(|p| (p.name.as_str().to_string(), p.value.as_str().to_string()))
        .collect();
    if let Some(c) = &props.correlation_data {
        lines.push((CORRELATION_HEADER.into(), hex(c)));
    }
    if let Some(t) = &props.content_type {
        if !t.as_str().contains(['\r', '\n']) {
            lines.push((CONTENT_TYPE_HEADER.into(), t.as_str().to_string()));
        }
    }
    if let Some(f) = props.payload_format_indicator {
        lines.push((PAYLOAD_FORMAT_HEADER.into(), u8::from(f).to_string()));
    }
    if lines.is_empty() {
        return None;
    }
    let mut block = BytesMut::from(&b"NATS/1.0\r\n"[..]);
    for (k, v) in lines {
        block.put_slice(k.as_bytes());
        block.put_slice(b": ");
        block.put_slice(v.as_bytes());
        block.put_slice(b"\r\n");
    }
    block.put_slice(b"\r\n");
    Some(block.freeze())
}

/// Adds one header to a header block (made when there is none).
fn with_header(headers: Option<Bytes>, name: &str, value: &str) -> Bytes {
    let mut block = match headers {
        Some(h) => BytesMut::from(&h[..h.len() - 2]),
        None => BytesMut::from(&b"NATS/1.0\r\n"[..]),
    };
    block.put_slice(name.as_bytes());
    block.put_slice(b": ");
    block.put_slice(value.as_bytes());
    block.put_slice(b"\r\n\r\n");
    block.freeze()
}

/// MQTT 5 properties for a message from the bus: headers become user properties (the
/// `Mqtt-*` ones become their properties again), the reply subject the response topic.
fn properties_from_nats(msg: &Message) -> PublishProperties {
    let mut props = PublishProperties {
        message_expiry_interval: msg.facts.expiry_secs,
        ..PublishProperties::default()
    };
    if let Some(reply) = &msg.reply {
        props.response_topic = topic::subject_to_topic(reply).ok();
    }
    let Some(headers) = &msg.headers else {
        return props;
    };
    let Ok(text) = std::str::from_utf8(headers) else {
        return props;
    };
    for line in text.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case(RESPONSE_TOPIC_HEADER) {
            props.response_topic = Some(utf8(v));
        } else if k.eq_ignore_ascii_case(CORRELATION_HEADER) {
            props.correlation_data = unhex(v);
        } else if k.eq_ignore_ascii_case(CONTENT_TYPE_HEADER) {
            props.content_type = Some(utf8(v));
        } else if k.eq_ignore_ascii_case(PAYLOAD_FORMAT_HEADER) {
            props.payload_format_indicator = Some(v == "1");
        } else {
            props.user_properties.push(UserProperty {
                name: utf8(k),
                value: utf8(v),
            });
        }
    }
    props
}

fn utf8(s: &str) -> Utf8Bytes {
    Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(s.as_bytes())).unwrap_or_default()
}

/// What only the connection's own task touches.
pub(crate) struct MqttConn {
    link: Arc<Link>,
    decoder: Decoder,
    session: Option<Arc<Session>>,
    account: Arc<Account>,
    /// Made on the first publication.
    publishing: Option<Box<Publishing>>,
    version: Version,
    /// Boxed: large, and most connections have none.
    will: Option<Box<Will>>,
    /// Topic aliases the client set up (5.0), by alias.
    aliases: HashMap<u16, Utf8Bytes>,
    /// What the current read batch received.
    received: BatchIn,
    /// The enhanced authentication method the connection authenticated with (5.0).
    auth_method: Option<Utf8Bytes>,
    /// An enhanced authentication exchange waiting for the client's next AUTH.
    pending_auth: Option<Box<PendingAuth>>,
}

/// An enhanced authentication exchange in progress.
struct PendingAuth {
    exchange: Box<dyn Exchange>,
    /// The CONNECT that started it; `None` for a re-authentication of a connected client.
    connect: Option<Connect>,
}

impl MqttConn {
    fn fe(&self) -> &Arc<Frontend> {
        &self.link.fe
    }

    fn send(&self, packet: Packet) {
        let mut buf = BytesMut::new();
        if encode(&packet, self.version, &mut buf).is_ok() {
            self.link.out.push_own(&buf);
        }
    }

    /// Ends the connection with an MQTT 5 DISCONNECT carrying `code` (3.1.1 just closes).
    fn refuse(&self, code: u8, why: CloseReason) -> Result<(), CloseReason> {
        if self.version == Version::V5 && self.session.is_some() {
            self.send(disconnect(code));
        }
        Err(why)
    }

    fn handle(&mut self, packet: Packet) -> Result<(), CloseReason> {
        tracing::trace!(cid = %self.link.id, packet = ?packet, "<<-");
        if self.session.is_none() {
            return match packet {
                Packet::Connect(c) if self.pending_auth.is_none() => self.connect(*c),
                Packet::Auth(a) if self.pending_auth.is_some() => self.auth(a),
                _ => Err(CloseReason::ProtocolViolation),
            };
        }
        match packet {
            Packet::Connect(_) => {
                self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation)
            }
            Packet::Publish(p) => self.publish(p),
            Packet::PubAck(r) => {
                self.acked(r.packet_id, false);
                Ok(())
            }
            Packet::PubRec(r) => {
                self.acked(r.packet_id, true);
                Ok(())
            }
            Packet::PubComp(r) => {
                self.acked(r.packet_id, false);
                Ok(())
            }
            Packet::PubRel(r) => {
                if let Some(s) = &self.session {
                    s.state
                        .lock()
                        .expect("session lock")
                        .inbound_qos2
                        .remove(&r.packet_id);
                }
                self.send(Packet::PubComp(PubResp {
                    packet_id: r.packet_id,
                    ..PubResp::default()
                }));
                Ok(())
            }
            Packet::Subscribe(s) => {
                self.subscribe(s);
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                self.unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.send(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => {
                if d.reason != reason::DISCONNECT_WITH_WILL_MESSAGE {
                    self.will = None;
                }
                if let (Some(s), Some(expiry)) =
                    (&self.session, d.properties.session_expiry_interval)
                {
                    let mut state = s.state.lock().expect("session lock");
                    if state.expiry_secs == 0 && expiry != 0 {
                        // [MQTT-3.14.2-2]: a session that ends with its connection stays so.
                        drop(state);
                        self.will = None;
                        return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation);
                    }
                    state.expiry_secs = expiry;
                }
                Err(CloseReason::ClientClosed)
            }
            // AUTH from a client that named no method is a protocol error [MQTT-4.12.0-6].
            Packet::Auth(a) if self.auth_method.is_some() => self.auth(a),
            Packet::Auth(_) => self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation)
            }
        }
    }

    fn connect(&mut self, c: Connect) -> Result<(), CloseReason> {
        let fe = self.fe().clone();
        self.version = self.decoder.protocol().unwrap_or(Version::V311);
        let connack = |code: u8| {
            Packet::ConnAck(Box::new(ConnAck {
                session_present: false,
                code,
                properties: ConnAckProperties::default(),
            }))
        };
        let creds = Credentials {
            user: c.username.as_ref().map(|u| u.as_str().to_string()),
            pass: c
                .password
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            ..Credentials::default()
        };
        if let Some(method) = c.properties.authentication_method.clone() {
            // Enhanced authentication (5.0 only: the decoder refuses the property in 3.1.1).
            let Some(mut exchange) = fe.auth.exchange(method.as_str(), &creds) else {
                self.send(connack(reason::BAD_AUTHENTICATION_METHOD));
                return Err(CloseReason::AuthenticationViolation);
            };
            let step = exchange.step(c.properties.authentication_data.as_deref());
            self.auth_method = Some(method);
            return self.auth_step(step, exchange, Some(c));
        }
        let identity = match fe.auth.authenticate(&creds) {
            Ok(id) => id,
            Err(_) => {
                // Not authorized (the encoder writes 3.1.1's return code 5 for 3.1.1 clients).
                self.send(connack(reason::NOT_AUTHORIZED));
                return Err(CloseReason::AuthenticationViolation);
            }
        };
        self.admit(c, identity, None)
    }

    /// An AUTH packet: the next step of an exchange, or the start of a re-authentication.
    fn auth(&mut self, a: Auth) -> Result<(), CloseReason> {
        let connected = self.session.is_some();
        if a.properties.authentication_method != self.auth_method {
            // [MQTT-4.12.0-5] and [MQTT-4.12.1-1]: the method cannot change.
            return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation);
        }
        let data = a.properties.authentication_data.as_deref();
        match a.reason {
            reason::CONTINUE_AUTHENTICATION => {
                let Some(pending) = self.pending_auth.take() else {
                    return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation);
                };
                let PendingAuth {
                    mut exchange,
                    connect,
                } = *pending;
                let step = exchange.step(data);
                self.auth_step(step, exchange, connect)
            }
            reason::RE_AUTHENTICATE if connected && self.pending_auth.is_none() => {
                let method = self.auth_method.clone().expect("checked above");
                let creds = Credentials::default();
                let Some(mut exchange) = self.fe().auth.exchange(method.as_str(), &creds) else {
                    return self.refuse(
                        reason::BAD_AUTHENTICATION_METHOD,
                        CloseReason::AuthenticationViolation,
                    );
                };
                let step = exchange.step(data);
                self.auth_step(step, exchange, None)
            }
            _ => self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation),
        }
    }

    /// Acts on one step of an exchange: challenge the client again, admit it, or refuse it.
    fn auth_step(
        &mut self,
        step: AuthStep,
        exchange: Box<dyn Exchange>,
        connect: Option<Connect>,
    ) -> Result<(), CloseReason> {
        let method = self.auth_method.clone();
        match (step, connect) {
            (AuthStep::Continue(data), connect) => {
                self.send(Packet::Auth(Auth {
                    reason: reason::CONTINUE_AUTHENTICATION,
                    properties: AuthProperties {
                        authentication_method: method,
                        authentication_data: Some(Bytes::from(data)),
                        ..AuthProperties::default()
                    },
                }));
                self.pending_auth = Some(Box::new(PendingAuth { exchange, connect }));
                Ok(())
            }
            (AuthStep::Done { identity, data }, Some(c)) => self.admit(c, identity, data),
            (AuthStep::Done { identity, data }, None) => {
                // A re-authentication cannot move the connection to another account.
                if identity.account != self.account.name() {
                    return self
                        .refuse(reason::NOT_AUTHORIZED, CloseReason::AuthenticationViolation);
                }
                self.send(Packet::Auth(Auth {
                    reason: reason::SUCCESS,
                    properties: AuthProperties {
                        authentication_method: method,
                        authentication_data: data.map(Bytes::from),
                        ..AuthProperties::default()
                    },
                }));
                Ok(())
            }
            (AuthStep::Refused, Some(_)) => {
                self.send(Packet::ConnAck(Box::new(ConnAck {
                    session_present: false,
                    code: reason::NOT_AUTHORIZED,
                    properties: ConnAckProperties::default(),
                })));
                Err(CloseReason::AuthenticationViolation)
            }
            (AuthStep::Refused, None) => {
                self.refuse(reason::NOT_AUTHORIZED, CloseReason::AuthenticationViolation)
            }
        }
    }

    /// Admits an authenticated client: takes over or starts its session and sends CONNACK
    /// (with the final enhanced authentication data, when there was an exchange).
    fn admit(
        &mut self,
        c: Connect,
        identity: Identity,
        auth_data: Option<Vec<u8>>,
    ) -> Result<(), CloseReason> {
        let fe = self.fe().clone();
        let v5 = self.version == Version::V5;
        let connack = |code: u8| {
            Packet::ConnAck(Box::new(ConnAck {
                session_present: false,
                code,
                properties: ConnAckProperties::default(),
            }))
        };
        let mut assigned = None;
        let client_id = if c.client_id.is_empty() {
            if !v5 && !c.clean_start {
                // 3.1.1: a persistent session needs a client identifier (return code 2).
                self.send(connack(reason::CLIENT_IDENTIFIER_NOT_VALID));
                return Err(CloseReason::ProtocolViolation);
            }
            let id = format!("junction-{}", self.link.id.0);
            assigned = Some(id.clone());
            id
        } else {
            c.client_id.as_str().to_string()
        };
        let client_id: Arc<str> = client_id.into();
        self.account = fe.bus.account_or_create(&identity.account);
        let key = (identity.account.clone(), client_id.clone());
        let expiry = if v5 {
            c.properties.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        // Take over an existing session: disconnect its link; keep it unless clean start.
        let (session, present) = {
            let mut sessions = fe.sessions.lock().expect("sessions lock");
            let existing = sessions.get(&key).cloned();
            if let Some(old) = &existing {
                let old_link = old.state.lock().expect("session lock").link.take();
                if let Some(l) = old_link {
                    let old_version = l.about.lock().expect("about lock").version;
                    if old_version == Some(Version::V5) {
                        l.send(&disconnect(reason::SESSION_TAKEN_OVER), Version::V5);
                    }
                    l.out.finish(CloseReason::SessionTakenOver);
                }
            }
            match existing {
                Some(old) if !c.clean_start => (old, true),
                other => {
                    if let Some(old) = other {
                        old.unsubscribe_all();
                    }
                    let s = Arc::new(Session::new(
                        client_id.clone(),
                        self.account.clone(),
                        fe.clone(),
                    ));
                    sessions.insert(key, s.clone());
                    (s, false)
                }
            }
        };
        {
            let mut about = self.link.about.lock().expect("about lock");
            about.client_id = client_id.clone();
            about.account = identity.account.clone();
            about.version = Some(self.version);
        }
        let keep_alive = match fe.opts.max_keep_alive {
            Some(max) if c.keep_alive == 0 || c.keep_alive > max => max,
            _ => c.keep_alive,
        };
        self.link
            .keep_alive_ms
            .store(u64::from(keep_alive) * 1000, Ordering::Relaxed);
        self.will = c.will.map(Box::new);
        let mut props = ConnAckProperties::default();
        if v5 {
            if keep_alive != c.keep_alive {
                props.server_keep_alive = Some(keep_alive);
            }
            props.assigned_client_identifier = assigned.as_deref().map(utf8);
            props.receive_maximum = Some(RECEIVE_MAXIMUM);
            props.topic_alias_maximum = Some(TOPIC_ALIAS_MAXIMUM);
            props.retain_available = Some(true);
            props.shared_subscription_available = Some(true);
            props.subscription_identifiers_available = Some(true);
            props.wildcard_subscription_available = Some(true);
            props.maximum_packet_size = u32::try_from(fe.opts.max_packet_size).ok();
            props.authentication_method = self.auth_method.clone();
            props.authentication_data = auth_data.map(Bytes::from);
        }
        self.send(Packet::ConnAck(Box::new(ConnAck {
            session_present: present,
            code: reason::SUCCESS,
            properties: props,
        })));
        {
            let mut state = session.state.lock().expect("session lock");
            state.link = Some(self.link.clone());
            state.pending_will = None;
            state.version = self.version;
            state.expiry_secs = expiry;
            state.expires_at = None;
            state.receive_maximum = c.properties.receive_maximum.unwrap_or(RECEIVE_MAXIMUM);
            state.max_packet_size = c.properties.maximum_packet_size;
            // Aliases live as long as one network connection.
            state.alias_max = c.properties.topic_alias_maximum.unwrap_or(0);
            state.out_aliases.clear();
            // Resend what was in flight, with DUP, then what waited.
            let resend: Vec<Outgoing> = state.inflight.values().cloned().collect();
            for o in resend {
                if o.released {
                    self.send(Packet::PubRel(PubResp {
                        packet_id: o.publish.packet_id,
                        ..PubResp::default()
                    }));
                } else {
                    let mut p = o.publish;
                    p.dup = true;
                    push_publish(&self.link, &mut state, &p);
                }
            }
            session.fill_window(&mut state);
        }
        tracing::debug!(cid = %self.link.id, client_id = %client_id, present, "MQTT client connected");
        self.session = Some(session);
        Ok(())
    }

    fn publish(&mut self, mut p: Publish) -> Result<(), CloseReason> {
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
                return self.refuse(reason::TOPIC_ALIAS_INVALID, CloseReason::ProtocolViolation);
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation)
                    }
                }
            } else {
                self.aliases.insert(alias, p.topic.clone());
            }
        } else if p.topic.is_empty() {
            return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation);
        }
        if p.qos == QoS::ExactlyOnce {
            let pending = self.session.as_ref().map_or(0, |s| {
                s.state.lock().expect("session lock").inbound_qos2.len()
            });
            if pending >= usize::from(RECEIVE_MAXIMUM) {
                return self.refuse(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    CloseReason::ProtocolViolation,
                );
            }
        }
        let Ok(subject) = topic::topic_to_subject(p.topic.as_bytes()) else {
            return self.refuse(reason::TOPIC_NAME_INVALID, CloseReason::ProtocolViolation);
        };
        // Borrowed, not cloned: no reference-count traffic per inbound message.
        let session = self.session.as_ref().expect("connected");
        if p.qos == QoS::ExactlyOnce {
            let mut state = session.state.lock().expect("session lock");
            if !state.inbound_qos2.insert(p.packet_id) {
                // A retry of a message we already have: acknowledge, do not deliver again.
                drop(state);
                self.send(Packet::PubRec(PubResp {
                    packet_id: p.packet_id,
                    ..PubResp::default()
                }));
                return Ok(());
            }
        }
        let mut reply = p
            .properties
            .response_topic
            .as_ref()
            .and_then(|t| topic::topic_to_subject(t.as_bytes()).ok());
        let mut headers = headers_from_mqtt(&p.properties);
        if let (Some(response), Some(correlation)) = (&reply, &p.properties.correlation_data) {
            // NATS answers the bridge's reply subject; MQTT receivers still see the response
            // topic itself (carried in a header) and answer it directly.
            reply = Some(
                self.bridge(session)
                    .reply_subject(response.clone(), correlation.clone()),
            );
            if let Some(t) = &p.properties.response_topic {
                headers = Some(with_header(headers, RESPONSE_TOPIC_HEADER, t.as_str()));
            }
        }

        let msg = Message {
            subject,
            reply,
            headers,
            payload: p.payload.clone(),
            facts: DeliveryFacts {
                origin: session.conn_id,
                qos: Some(p.qos as u8),
                retain: p.retain,
                expiry_secs: p.properties.message_expiry_interval,
            },
        };
        self.received.msgs += 1;
        self.received.bytes += msg.payload.len() as u64;
        if p.retain {
            self.fe().retain(self.account.name(), &msg, p.qos as u8);
        }
        let publishing = self.publishing.get_or_insert_with(Box::default);
        self.account
            .publish(&mut publishing.cache, &msg, &mut publishing.batch);
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(Packet::PubAck(PubResp {
                packet_id: p.packet_id,
                ..PubResp::default()
            })),
            QoS::ExactlyOnce => self.send(Packet::PubRec(PubResp {
                packet_id: p.packet_id,
                ..PubResp::default()
            })),
        }
        Ok(())
    }

    /// The session's request/response bridge, made on first use.
    fn bridge(&self, session: &Arc<Session>) -> Arc<Bridge> {
        let mut state = session.state.lock().expect("session lock");
        if let Some((bridge, _)) = &state.bridge {
            return bridge.clone();
        }
        let bridge = Arc::new(Bridge {
            prefix: format!("$MQTT.rr.{}", session.conn_id.0),
            account: self.account.clone(),
            pending: Mutex::new((0, BTreeMap::new())),
        });
        let sink: Arc<dyn Sink> = bridge.clone();
        let sub = Arc::new(Subscription::new(
            session.conn_id,
            Bytes::from(format!("{}.*", bridge.prefix)),
            None,
            Bytes::new(),
            false,
            sink,
        ));
        if self.account.subscribe(sub.clone()).is_ok() {
            state.bridge = Some((bridge.clone(), sub));
        }
        bridge
    }

    /// The client acknowledged one of our QoS 1/2 messages.
    fn acked(&mut self, packet_id: u16, rec: bool) {
        let Some(session) = self.session.clone() else {
            return;
        };
        let mut state = session.state.lock().expect("session lock");
        if rec {
            if let Some(o) = state.inflight.get_mut(&packet_id) {
                o.released = true;
            }
            drop(state);
            self.send(Packet::PubRel(PubResp {
                packet_id,
                ..PubResp::default()
            }));
            return;
        }
        state.inflight.remove(&packet_id);
        state.stuck = false;
        session.fill_window(&mut state);
    }

    fn subscribe(&mut self, s: Subscribe) {
        let session = self.session.clone().expect("connected");
        let fe = self.fe().clone();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained_out = Vec::new();
        for f in &s.filters {
            let text = f.filter.as_bytes().clone();
            let (queue, inner) = match topic::shared_subscription(&text) {
                Some((g, inner)) => (Some(Bytes::copy_from_slice(g)), text.slice_ref(inner)),
                None => (None, text.clone()),
            };
            let Ok(subjects) = topic::filter_to_subjects(&inner) else {
                codes.push(if self.version == Version::V5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    0x80
                });
                continue;
            };
            let concrete = Arc::new(SubSink {
                session: session.clone(),
                qos: f.qos,
                retain_as_published: f.retain_as_published,
                subscription_id: s.properties.subscription_identifier,
            });
            let sink: Arc<dyn Sink> = concrete.clone();
            let mut core_subs = Vec::new();
            for subj in std::iter::once(subjects.subject.clone()).chain(subjects.parent.clone()) {
                let sub = Arc::new(Subscription::new(
                    session.conn_id,
                    subj,
                    queue.clone(),
                    Bytes::new(),
                    f.no_local,
                    sink.clone(),
                ));
                if self.account.subscribe(sub.clone()).is_ok() {
                    core_subs.push(sub);
                }
            }
            let replaced = session
                .state
                .lock()
                .expect("session lock")
                .subs
                .insert(text.clone(), core_subs);
            let existed = replaced.is_some();
            for old in replaced.unwrap_or_default() {
                self.account.unsubscribe(&old);
            }
            codes.push(f.qos as u8);
            let send_retained = queue.is_none()
                && match f.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscribe => !existed,
                    RetainHandling::Never => false,
                };
            if send_retained {
                for filter_subject in
                    std::iter::once(&subjects.subject).chain(subjects.parent.as_ref())
                {
                    for r in fe.retained_matching(self.account.name(), filter_subject) {
                        retained_out.push((concrete.clone(), sink.clone(), r));
                    }
                }
            }
        }
        self.send(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reason_codes: codes,
            ..SubAck::default()
        }));
        // Retained messages go after the SUBACK, with the retain flag set.
        for (concrete, sink, r) in retained_out {
            let mut msg = r.msg;
            msg.facts.qos = Some(r.qos);
            let publish = concrete.publish_for(&msg, true);
            concrete.offer(publish, &msg.subject, None, &sink);
        }
    }

    fn unsubscribe(&mut self, u: Unsubscribe) {
        let session = self.session.clone().expect("connected");
        let mut codes = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let removed = session
                .state
                .lock()
                .expect("session lock")
                .subs
                .remove(f.as_bytes());
            match removed {
                Some(subs) => {
                    for sub in subs {
                        self.account.unsubscribe(&sub);
                    }
                    codes.push(reason::SUCCESS);
                }
                None => codes.push(reason::NO_SUBSCRIPTION_EXISTED),
            }
        }
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reason_codes: if self.version == Version::V5 {
                codes
            } else {
                Vec::new()
            },
            ..UnsubAck::default()
        }));
    }

    /// The connection ended without a normal DISCONNECT: publish the will now, or after its
    /// delay (5.0) unless the client comes back to its session first.
    fn will_on_close(&mut self) {
        let delay = self
            .will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval)
            .unwrap_or(0);
        let Some(session) = self.session.clone() else {
            return;
        };
        let (expiry, taken_over) = {
            let state = session.state.lock().expect("session lock");
            let taken_over = state
                .link
                .as_ref()
                .is_some_and(|l| !Arc::ptr_eq(l, &self.link));
            (state.expiry_secs, taken_over)
        };
        if taken_over && delay > 0 {
            // The client is already back within the will delay: no will.
            self.will = None;
            return;
        }
        // The will goes at the earlier of the delay and the session's end.
        let wait = delay.min(expiry);
        if wait == 0 {
            self.publish_will();
            return;
        }
        let token = self.link.id.0;
        session.state.lock().expect("session lock").pending_will = Some(token);
        let will = self.will.take();
        let account = self.account.clone();
        let fe = self.fe().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(wait))).await;
            let still_pending = {
                let mut state = session.state.lock().expect("session lock");
                let pending = state.pending_will == Some(token);
                if pending {
                    state.pending_will = None;
                }
                pending
            };
            if still_pending {
                if let Some(will) = will {
                    publish_will_message(&fe, &account, &session, will);
                }
            }
        });
    }

    /// Publishes the will message at once.
    fn publish_will(&mut self) {
        if let (Some(will), Some(session)) = (self.will.take(), self.session.clone()) {
            publish_will_message(self.fe(), &self.account, &session, will);
        }
    }
}

/// Publishes a will message on behalf of `session`.
fn publish_will_message(fe: &Frontend, account: &Account, session: &Session, will: Box<Will>) {
    let Ok(subject) = topic::topic_to_subject(will.topic.as_bytes()) else {
        return;
    };
    let props = PublishProperties {
        payload_format_indicator: will.properties.payload_format_indicator,
        message_expiry_interval: will.properties.message_expiry_interval,
        response_topic: will.properties.response_topic.clone(),
        correlation_data: will.properties.correlation_data.clone(),
        user_properties: will.properties.user_properties.clone(),
        content_type: will.properties.content_type.clone(),
        ..PublishProperties::default()
    };
    let msg = Message {
        subject,
        reply: will
            .properties
            .response_topic
            .as_ref()
            .and_then(|t| topic::topic_to_subject(t.as_bytes()).ok()),
        headers: headers_from_mqtt(&props),
        payload: will.payload.clone(),
        facts: DeliveryFacts {
            origin: session.conn_id,
            qos: Some(will.qos as u8),
            retain: will.retain,
            expiry_secs: will.properties.message_expiry_interval,
        },
    };
    if will.retain {
        fe.retain(account.name(), &msg, will.qos as u8);
    }
    let mut batch = FlushBatch::default();
    account.publish(&mut MatchCache::new(false), &msg, &mut batch);
    batch.wake_all();
}

impl Protocol for MqttConn {
    fn outbound(&self) -> &Outbound {
        &self.link.out
    }

    fn process(&mut self, rbuf: &mut BytesMut) -> Result<(), CloseReason> {
        self.link
            .last_read_ms
            .store(self.fe().now_ms(), Ordering::Relaxed);
        loop {
            match self.decoder.decode(rbuf) {
                Ok(Some(packet)) => self.handle(packet)?,
                Ok(None) => return Ok(()),
                Err(e) => return self.decode_failed(&e),
            }
        }
    }

    fn end_batch(&mut self) -> Vec<Arc<dyn Sink>> {
        let Some(p) = self.publishing.as_deref_mut() else {
            return Vec::new();
        };
        p.batch.wake_all();
        self.link
            .stats
            .end_batch(self.link.fe.bus.stats(), &mut self.received, &mut p.batch);
        p.batch.take_backlogged()
    }

    fn write_deadline(&self) -> Duration {
        self.fe().opts.write_deadline
    }

    fn write_deadline_exceeded(&self) {
        Stats::add(&self.fe().bus.stats().slow_consumers, 1);
        tracing::warn!(cid = %self.link.id, "slow consumer: write deadline exceeded, closing the MQTT connection");
    }

    fn end(&mut self, reason: CloseReason) {
        let fe = self.fe().clone();
        if self.will.is_some() {
            self.will_on_close();
        }
        if let Some(session) = self.session.take() {
            let keep = {
                let mut state = session.state.lock().expect("session lock");
                let ours = state
                    .link
                    .as_ref()
                    .is_some_and(|l| Arc::ptr_eq(l, &self.link));
                if ours {
                    state.link = None;
                    state.expires_at = (state.expiry_secs != u32::MAX).then(|| {
                        Instant::now() + Duration::from_secs(u64::from(state.expiry_secs))
                    });
                }
                !ours || state.expiry_secs > 0
            };
            if !keep {
                session.unsubscribe_all();
                let key = (
                    session.account.name().to_string(),
                    session.client_id.clone(),
                );
                let mut sessions = fe.sessions.lock().expect("sessions lock");
                if sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                    sessions.remove(&key);
                }
            }
        }
        self.link.out.close(reason);
        fe.bus.conns().close(self.link.id, reason.as_str());
        fe.bus.stats().connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(cid = %self.link.id, reason = %reason, "MQTT connection closed");
    }
}

impl MqttConn {
    fn decode_failed(&mut self, e: &DecodeError) -> Result<(), CloseReason> {
        tracing::debug!(cid = %self.link.id, error = %e, "MQTT protocol error");
        let code = e.reason_code();
        if self.session.is_none() {
            // Before CONNECT was accepted: refuse with a CONNACK where the client's level has
            // a code for it (5.0: every reason; 3.1.1: bad version, bad client id), else close.
            let level5 = self.decoder.protocol() == Some(Version::V5);
            if level5
                || code == reason::UNSUPPORTED_PROTOCOL_VERSION
                || code == reason::CLIENT_IDENTIFIER_NOT_VALID
            {
                let packet = Packet::ConnAck(Box::new(ConnAck {
                    code,
                    ..ConnAck::default()
                }));
                let mut buf = BytesMut::new();
                let version = if level5 { Version::V5 } else { Version::V311 };
                if encode(&packet, version, &mut buf).is_ok() {
                    self.link.out.push_own(&buf);
                }
            }
            return Err(CloseReason::ProtocolViolation);
        }
        let why = if code == reason::PACKET_TOO_LARGE {
            CloseReason::MaxPayloadExceeded
        } else {
            CloseReason::ProtocolViolation
        };
        self.refuse(code, why)
    }
}

/// Starts serving one accepted MQTT connection.
pub(crate) fn start<T: Transport>(io: T, peer: SocketAddr, fe: Arc<Frontend>) -> Conn<MqttConn, T> {
    let id = fe.bus.next_conn_id();
    let link = Arc::new(Link {
        id,
        out: Outbound::new(fe.opts.max_pending),
        fe: fe.clone(),
        stats: ConnStats::new(peer),
        about: Mutex::new(About::default()),
        last_read_ms: AtomicU64::new(fe.now_ms()),
        keep_alive_ms: AtomicU64::new(0),
    });
    fe.bus.conns().open(id, link.clone());
    tracing::debug!(cid = %id, peer = %peer, "accepted MQTT connection");
    let conn = MqttConn {
        link,
        decoder: Decoder::new(fe.opts.max_packet_size),
        session: None,
        account: fe.bus.default_account(),
        publishing: None,
        version: Version::V311,
        will: None,
        aliases: HashMap::new(),
        received: BatchIn::default(),
        auth_method: None,
        pending_auth: None,
    };
    Conn::new(io, conn)
}

/// Removes detached sessions whose expiry passed.
fn expire_sessions(fe: &Frontend) {
    let now = Instant::now();
    let expired: Vec<Arc<Session>> = {
        let mut sessions = fe.sessions.lock().expect("sessions lock");
        let keys: Vec<_> = sessions
            .iter()
            .filter(|(_, s)| {
                let st = s.state.lock().expect("session lock");
                st.link.is_none() && st.expires_at.is_some_and(|t| t <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| sessions.remove(k)).collect()
    };
    for s in expired {
        s.unsubscribe_all();
    }
}

/// Accepts MQTT clients on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    fe: Arc<Frontend>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let admit = |stream, peer| Some(start(Plain(stream), peer, fe.clone()));
    crate::listener::accept_loop(listener, &fe.bus, "mqtt", admit, shutdown, tracker).await;
}

/// Once a second until `shutdown`: enforces keep alive on every MQTT connection (TCP or
/// WebSocket) and removes sessions whose expiry passed.
pub async fn sweep(fe: Arc<Frontend>, shutdown: CancellationToken) {
    let every = Duration::from_secs(1);
    crate::listener::sweep_loop(&fe.bus, "mqtt", every, || expire_sessions(&fe), shutdown).await;
}

impl Frontend {
    /// Serves one MQTT connection that arrived over `io` (a WebSocket, for instance).
    pub(crate) fn start<T: Transport>(
        self: &Arc<Self>,
        io: T,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        start(io, peer, self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_nats_headers() {
        let props = PublishProperties {
            user_properties: vec![UserProperty {
                name: utf8("unit"),
                value: utf8("celsius"),
            }],
            correlation_data: Some(Bytes::from_static(&[0, 1, 0xfe])),
            content_type: Some(utf8("application/json")),
            payload_format_indicator: Some(true),
            ..PublishProperties::default()
        };
        let headers = headers_from_mqtt(&props).unwrap();
        assert!(headers.starts_with(b"NATS/1.0\r\nunit: celsius\r\n"));
        let msg = Message {
            subject: Bytes::from_static(b"a"),
            reply: Some(Bytes::from_static(b"reply.to")),
            headers: Some(headers),
            payload: Bytes::new(),
            facts: DeliveryFacts::from_origin(ConnId(1)),
        };
        let back = properties_from_nats(&msg);
        assert_eq!(back.user_properties, props.user_properties);
        assert_eq!(back.correlation_data, props.correlation_data);
        assert_eq!(back.content_type, props.content_type);
        assert_eq!(back.payload_format_indicator, Some(true));
        assert_eq!(back.response_topic.unwrap().as_str(), "reply/to");
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!matches_filter(b">", b"$SYS.x"));
        assert!(!matches_filter(b"*.x", b"$SYS.x"));
        assert!(matches_filter(b"$SYS.>", b"$SYS.x"));
        assert!(matches_filter(b">", b"a.b"));
    }
}
