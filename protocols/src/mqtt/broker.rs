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

use junction_core::sync::Lock;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use junction_auth::{AuthError, AuthStep, Authenticator, Checker, Credentials, Exchange, Identity};
use junction_core::{
    subject, Account, Bus, ConnId, ConnSnapshot, ConnView, Delivery, DeliveryFacts, FlushBatch,
    MatchCache, Message, Sink, Stats, Subscription,
};
use junction_store::{Engine, Op, Store, StoreError, Table};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::durable::{self, MessageRecord, SessionRecord, SubRecord};
use super::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResp, Publish, QoS, RetainHandling, SubAck,
    Subscribe, UnsubAck, Unsubscribe, Utf8Bytes, Version, Will,
};
use super::properties::{AuthProperties, ConnAckProperties, PublishProperties, UserProperty};
use super::{encode, encoded_len, reason, topic, DecodeError, Decoder};
use crate::auth_pool;
use crate::conn_stats::{BatchIn, ConnStats};
use crate::driver::{Conn, Protocol};
use crate::listener::Served;
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
// Past half the queue limit publishers pause again after every read batch even for a client
// that was slow to acknowledge ("stuck"): a connected, acknowledging client's queue never
// reaches the limit (where the oldest would be dropped) because its scheduling lagged for a
// few milliseconds. Only a client that stops acknowledging altogether is cut back to the limit.

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
    /// How long a client may take to send CONNECT (nats-server's auth timeout).
    pub connect_timeout: Duration,
    /// What happens to a QoS 1/2 message for a session whose queue is full.
    pub queue_full: QueueFull,
}

/// What happens to a QoS 1/2 message for a session whose queue already holds `max_queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueFull {
    /// The oldest queued message is dropped to make room (mosquitto's behaviour). The dropped
    /// one was acknowledged to its publisher already.
    #[default]
    DropOldest,
    /// The new message is not queued for that session, and an MQTT 5 publisher hears 0x97
    /// (Quota exceeded) in its PUBACK/PUBREC instead of a success (a 3.1.1 publisher, which has
    /// no code for it, is acknowledged as usual).
    Refuse,
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
            connect_timeout: Duration::from_secs(2),
            queue_full: QueueFull::DropOldest,
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
    /// Where persistent sessions, their messages and retained messages are kept durably
    /// (`None`: in memory only).
    store: std::sync::OnceLock<Arc<Store>>,
    /// Records of no session found by `restore`, removed once the store runs.
    orphans: Mutex<Vec<(Table, Vec<u8>)>>,
    /// TLS on the MQTT listener (`mqtt { tls { ... } }`).
    pub tls: Option<crate::tls::Tls>,
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
            store: std::sync::OnceLock::new(),
            orphans: Mutex::new(Vec::new()),
            tls: None,
        }
    }

    /// The same frontend with TLS on its listener.
    pub fn with_tls(mut self, tls: crate::tls::Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The durable store, when there is one.
    fn store(&self) -> Option<&Arc<Store>> {
        self.store.get()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn retain(&self, account: &str, msg: &Message, qos: u8) {
        let key = (account.to_string(), msg.subject.clone());
        let mut retained = self.retained.locked();
        if let Some(store) = self.store() {
            let key = durable::retained_key(account, &msg.subject);
            store.submit(if msg.payload.is_empty() {
                Op::Delete {
                    table: durable::RETAINED,
                    key,
                }
            } else {
                Op::Put {
                    table: durable::RETAINED,
                    key,
                    value: durable::encode_retained(msg, qos),
                }
            });
        }
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
            .locked()
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
    /// When the connection was accepted (ms since the frontend started).
    opened_ms: u64,
    /// The client sent its CONNECT.
    connect_seen: std::sync::atomic::AtomicBool,
    /// When the client's credentials expire (unix seconds; 0: never), as a user JWT's `exp`.
    expires: AtomicU64,
    /// Acknowledgements waiting (for a store commit, or for the subscribers of what they
    /// acknowledge): later ones queue behind them, in order.
    held: Mutex<std::collections::VecDeque<Arc<HeldAcks>>>,
}

/// The acknowledgements of one read batch that wait before they go out. They go once the
/// commit holding everything the batch submitted is durable, or earlier when the batch only
/// waited for QoS 1 copies sent to online persistent subscribers and every one of those
/// copies was acknowledged (what a subscriber acknowledged needs no disk to survive a crash).
struct HeldAcks {
    bytes: Mutex<BytesMut>,
    /// Early-sent copies not acknowledged yet.
    unacked: std::sync::atomic::AtomicUsize,
    /// Something of the batch must be on disk first (queued copies, retained messages, QoS 2
    /// state, sessions...).
    needs_commit: std::sync::atomic::AtomicBool,
    /// The commit holding the batch is done.
    committed: std::sync::atomic::AtomicBool,
    /// The batch is complete and queued on its link.
    sealed: std::sync::atomic::AtomicBool,
    link: std::sync::Weak<Link>,
}

impl HeldAcks {
    fn ready(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
            && (self.committed.load(Ordering::Acquire)
                || (!self.needs_commit.load(Ordering::Acquire)
                    && self.unacked.load(Ordering::Acquire) == 0))
    }

    /// One early-sent copy was acknowledged by its subscriber.
    fn copy_acked(&self) {
        if self.unacked.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(link) = self.link.upgrade() {
                if link.release_held() {
                    link.out.wake();
                }
            }
        }
    }
}

thread_local! {
    /// The held batch of the publication being routed on this thread, and how many early-sent
    /// stored copies it made: [`SubSink::offer`] counts them in.
    static ROUTING: std::cell::RefCell<Option<(Arc<HeldAcks>, usize)>> = const { std::cell::RefCell::new(None) };
}

impl Link {
    /// Writes out the held batches that are ready, in order; whether any was.
    fn release_held(&self) -> bool {
        let mut held = self.held.locked();
        let mut any = false;
        while held.front().is_some_and(|h| h.ready()) {
            let h = held.pop_front().expect("front exists");
            let bytes = std::mem::take(&mut *h.bytes.locked());
            self.out.push_own(&bytes);
            any = true;
        }
        any
    }
}

#[derive(Default)]
struct About {
    client_id: Arc<str>,
    account: String,
    version: Option<Version>,
    /// The session's count of dropped messages.
    dropped: Option<Arc<AtomicU64>>,
}

impl junction_store::Wake for Link {
    fn wake(&self) {
        self.out.wake();
    }
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
        let about = self.about.locked();
        ConnSnapshot {
            name: about.client_id.to_string(),
            lang: match about.version {
                Some(Version::V5) => "mqtt 5.0".into(),
                Some(Version::V311) => "mqtt 3.1.1".into(),
                None => String::new(),
            },
            account: about.account.clone(),
            dropped_msgs: about
                .dropped
                .as_ref()
                .map_or(0, |d| d.load(Ordering::Relaxed)),
            ..self.stats.snapshot(self.id, "mqtt", &self.out)
        }
    }

    fn kind(&self) -> &'static str {
        "mqtt"
    }

    /// Closes the connection when the client was silent for 1.5 times its keep alive.
    fn tick(&self) {
        if !self.connect_seen.load(Ordering::Relaxed) {
            // No CONNECT within the timeout: a socket held open for nothing.
            let waited = self.fe.now_ms().saturating_sub(self.opened_ms);
            if waited > self.fe.opts.connect_timeout.as_millis() as u64 {
                tracing::debug!(cid = %self.id, "no CONNECT within the timeout");
                self.out.finish(CloseReason::AuthenticationTimeout);
            }
            return;
        }
        let expires = self.expires.load(Ordering::Relaxed);
        if expires > 0 && junction_auth::server::unix_now() >= expires as i64 {
            // As NATS clients are: closed when the user's JWT expires.
            tracing::info!(cid = %self.id, "MQTT client's credentials expired");
            let version = self.about.locked().version;
            if version == Some(Version::V5) {
                self.send(&disconnect(reason::MAXIMUM_CONNECT_TIME), Version::V5);
            }
            self.out.finish(CloseReason::AuthenticationExpired);
            return;
        }
        let keep_alive = self.keep_alive_ms.load(Ordering::Relaxed);
        if keep_alive == 0 {
            return;
        }
        let silent = self
            .fe
            .now_ms()
            .saturating_sub(self.last_read_ms.load(Ordering::Relaxed));
        if silent > keep_alive * 3 / 2 {
            let version = self.about.locked().version;
            if version == Some(Version::V5) {
                self.send(&disconnect(reason::KEEP_ALIVE_TIMEOUT), Version::V5);
            }
            self.out.finish(CloseReason::KeepAliveTimeout);
        }
    }

    fn shutdown(&self) {
        let version = self.about.locked().version;
        if version == Some(Version::V5) {
            self.send(&disconnect(reason::SERVER_SHUTTING_DOWN), Version::V5);
        }
        self.out.finish(CloseReason::ServerShutdown);
    }
}

/// Leaves out the reason string and user properties of a packet the server sends (what the
/// specification lets a server omit to respect the client's Maximum Packet Size).
fn strip_optional(packet: &mut Packet) {
    match packet {
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            r.properties = Default::default()
        }
        Packet::SubAck(a) => a.properties = Default::default(),
        Packet::UnsubAck(a) => a.properties = Default::default(),
        Packet::Disconnect(d) => {
            d.properties.reason_string = None;
            d.properties.user_properties.clear();
        }
        Packet::Auth(a) => {
            a.properties.reason_string = None;
            a.properties.user_properties.clear();
        }
        _ => {}
    }
}

/// Leaves out of a 5.0 CONNACK the properties a client can do without, in this order, until it
/// fits `max` bytes: the reason string and user properties, then those whose absence means
/// what they say anyway (retain, wildcard, subscription identifier and shared subscription
/// available), then Topic Alias Maximum (absent: no aliases), Maximum Packet Size and Receive
/// Maximum (the broker still enforces its limits). What the client must hear (an assigned
/// client identifier, Server Keep Alive, authentication) stays. Whether it fits.
fn fit_connack(ack: &mut ConnAck, max: usize) -> bool {
    type Drop = fn(&mut ConnAckProperties);
    const STEPS: [Drop; 9] = [
        |p| p.reason_string = None,
        |p| p.user_properties.clear(),
        |p| p.retain_available = None,
        |p| p.wildcard_subscription_available = None,
        |p| p.subscription_identifiers_available = None,
        |p| p.shared_subscription_available = None,
        |p| p.topic_alias_maximum = None,
        |p| p.maximum_packet_size = None,
        |p| p.receive_maximum = None,
    ];
    let size = |ack: &ConnAck| {
        encoded_len(&Packet::ConnAck(Box::new(ack.clone())), Version::V5).unwrap_or(usize::MAX)
    };
    for step in STEPS {
        if size(ack) <= max {
            return true;
        }
        step(&mut ack.properties);
    }
    size(ack) <= max
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
        reason::MAXIMUM_CONNECT_TIME => Some("user authentication expired"),
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
    /// Its sequence in the durable store (0: not stored).
    seq: u64,
    /// When it was queued (kept with it in the store, for message expiry).
    queued_ms: u64,
    /// The publisher's held acknowledgements that wait for this copy's acknowledgement.
    held: Option<Arc<HeldAcks>>,
}

/// A QoS 1/2 message waiting for the window or for the client.
struct Queued {
    publish: Publish,
    queued_at: Instant,
    /// Unix ms of `queued_at`, as stored.
    queued_ms: u64,
    /// Its sequence in the durable store (0: not stored).
    seq: u64,
    /// It may be sent once the store committed the session's operation number `gate` (0: at
    /// once).
    gate: u64,
}

/// What installing a subscription made.
struct InstallResult {
    sink: Arc<SubSink>,
    dyn_sink: Arc<dyn Sink>,
    /// The core subjects it listens on (retained messages are matched against them).
    subjects: Vec<Bytes>,
    /// One existed on the same filter before.
    existed: bool,
    /// A shared subscription (no retained messages).
    shared: bool,
}

/// The options of one subscription, kept to store and restore it.
#[derive(Clone)]
struct Installed {
    record: SubRecord,
    core: Vec<Arc<Subscription>>,
}

/// An MQTT session: it outlives its connections when the client asked for that.
pub(crate) struct Session {
    client_id: Arc<str>,
    /// The session's key in the durable store.
    key: Vec<u8>,
    /// Stable across reconnects: the origin of the session's publications (no local).
    conn_id: ConnId,
    account: Arc<Account>,
    fe: Arc<Frontend>,
    state: Mutex<SessionState>,
    /// Messages dropped from the session's full queue (shown with its connection in /connz).
    dropped: Arc<AtomicU64>,
}

struct SessionState {
    link: Option<Arc<Link>>,
    version: Version,
    next_packet_id: u16,
    /// QoS 1/2 messages sent and not yet acknowledged, by packet identifier.
    inflight: BTreeMap<u16, Outgoing>,
    /// QoS 1/2 messages waiting for the window (or for the client to come back), with the
    /// time they were queued (for message expiry).
    queue: VecDeque<Queued>,
    /// A will waiting for its delay to pass (5.0 will delay interval), and when it is due.
    pending_will: Option<(Box<Will>, Instant)>,
    /// The connection's will, kept in the store so a crash of the server triggers it.
    will: Option<Box<Will>>,
    /// The next sequence number of a stored message.
    next_seq: u64,
    /// Store operations the session's sending waits on: the last submitted, the last
    /// committed, and whether a commit callback is on its way.
    gate_submitted: u64,
    gate_committed: u64,
    gate_waiting: bool,
    /// The session is in the store (so ending it must remove it there).
    stored: bool,
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
    subs: HashMap<Bytes, Installed>,
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
    /// The connected user's delivery filter (a deny its wildcard subscriptions overlap).
    receive: Option<Box<Checker>>,
}

impl Session {
    fn new(client_id: Arc<str>, account: Arc<Account>, fe: Arc<Frontend>) -> Self {
        Self {
            key: durable::session_key(account.name(), &client_id),
            client_id,
            conn_id: fe.bus.next_conn_id(),
            account,
            fe,
            dropped: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(SessionState {
                link: None,
                version: Version::V311,
                next_packet_id: 1,
                inflight: BTreeMap::new(),
                queue: VecDeque::new(),
                pending_will: None,
                will: None,
                next_seq: 1,
                gate_submitted: 0,
                gate_committed: 0,
                gate_waiting: false,
                stored: false,
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
                receive: None,
            }),
        }
    }

    /// Removes every subscription of the session.
    fn unsubscribe_all(&self) {
        let subs: Vec<_> = {
            let mut state = self.state.locked();
            let bridge = state.bridge.take().map(|(_, sub)| sub);
            state
                .subs
                .drain()
                .flat_map(|(_, s)| s.core)
                .chain(bridge)
                .collect()
        };
        for sub in subs {
            self.account.unsubscribe(&sub);
        }
    }

    /// Sends what the window allows from the queue. A stored message waits for the commit
    /// that holds it; a stored QoS 2 message also for the commit of its packet id, so that a
    /// restart redelivers it with the id the client knows.
    fn fill_window(self: &Arc<Self>, state: &mut SessionState) {
        let Some(link) = state.link.clone() else {
            return;
        };
        let store = self.durable(state);
        while state.inflight.len() < usize::from(state.receive_maximum) {
            let Some(front) = state.queue.front_mut() else {
                break;
            };
            if front.gate > state.gate_committed {
                self.wait_for_commit(state);
                break;
            }
            if let Some(expiry) = front.publish.properties.message_expiry_interval {
                // MQTT 5: an expired message is not delivered; a live one carries what is left.
                let waited = u32::try_from(front.queued_at.elapsed().as_secs()).unwrap_or(u32::MAX);
                if waited >= expiry {
                    let q = state.queue.pop_front().expect("front exists");
                    self.forget(q.seq);
                    continue;
                }
            }
            if front.publish.packet_id == 0 {
                let pid = next_packet_id(state);
                let front = state.queue.front_mut().expect("front exists");
                front.publish.packet_id = pid;
                if let (Some(store), QoS::ExactlyOnce, true) =
                    (&store, front.publish.qos, front.seq != 0)
                {
                    store.submit(Op::Put {
                        table: durable::MESSAGES,
                        key: durable::message_key(&self.key, front.seq),
                        value: durable::encode_message(
                            &front.publish,
                            front.publish.packet_id,
                            false,
                            front.queued_ms,
                        ),
                    });
                    state.gate_submitted += 1;
                    front.gate = state.gate_submitted;
                    self.wait_for_commit(state);
                    break;
                }
            }
            let q = state.queue.pop_front().expect("front exists");
            let mut publish = q.publish;
            if let Some(expiry) = publish.properties.message_expiry_interval {
                let waited = u32::try_from(q.queued_at.elapsed().as_secs()).unwrap_or(u32::MAX);
                publish.properties.message_expiry_interval = Some(expiry - waited.min(expiry));
            }
            push_publish(&link, state, &publish);
            state.inflight.insert(
                publish.packet_id,
                Outgoing {
                    publish,
                    released: false,
                    seq: q.seq,
                    queued_ms: q.queued_ms,
                    held: None,
                },
            );
        }
        if state.queue.len() <= QUEUE_LOW_WATERMARK {
            for w in state.drain_wakers.drain(..) {
                w.wake();
            }
        }
    }

    /// Installs one subscription (replacing one on the same filter). `None`: the filter cannot
    /// be mapped to subjects.
    fn install(self: &Arc<Self>, record: SubRecord) -> Option<InstallResult> {
        let text = Bytes::from(record.filter.clone().into_bytes());
        let (queue, inner) = match topic::shared_subscription(&text) {
            Some((g, inner)) => (Some(Bytes::copy_from_slice(g)), text.slice_ref(inner)),
            None => (None, text.clone()),
        };
        let subjects = topic::filter_to_subjects(&inner).ok()?;
        let concrete = Arc::new(SubSink {
            session: self.clone(),
            qos: QoS::from_bits(record.qos).unwrap_or_default(),
            retain_as_published: record.retain_as_published,
            subscription_id: record.subscription_id,
        });
        let sink: Arc<dyn Sink> = concrete.clone();
        let mut core = Vec::new();
        let all: Vec<Bytes> = std::iter::once(subjects.subject.clone())
            .chain(subjects.parent.clone())
            .collect();
        for subj in &all {
            let sub = Arc::new(Subscription::new(
                self.conn_id,
                subj.clone(),
                queue.clone(),
                Bytes::new(),
                record.no_local,
                sink.clone(),
            ));
            if self.account.subscribe(sub.clone()).is_ok() {
                core.push(sub);
            }
        }
        let replaced = self
            .state
            .locked()
            .subs
            .insert(text, Installed { record, core });
        let existed = replaced.is_some();
        for old in replaced.map(|i| i.core).unwrap_or_default() {
            self.account.unsubscribe(&old);
        }
        Some(InstallResult {
            sink: concrete,
            dyn_sink: sink,
            subjects: all,
            existed,
            shared: queue.is_some(),
        })
    }

    /// Stores a copy of `publish` queued for or in flight to this session; returns its
    /// sequence number.
    fn store_copy(
        &self,
        state: &mut SessionState,
        store: &Store,
        publish: &Publish,
        queued_ms: u64,
    ) -> u64 {
        let seq = state.next_seq;
        state.next_seq += 1;
        store.submit(Op::Insert {
            table: durable::MESSAGES,
            key: durable::message_key(&self.key, seq),
            value: durable::encode_message(publish, publish.packet_id, false, queued_ms),
        });
        seq
    }

    /// The store, when this session is kept in it (a persistent session).
    fn durable<'a>(&'a self, state: &SessionState) -> Option<&'a Arc<Store>> {
        self.fe.store().filter(|_| state.expiry_secs > 0)
    }

    /// Asks the store to call back once what the session submitted so far is durable.
    fn wait_for_commit(self: &Arc<Self>, state: &mut SessionState) {
        if state.gate_waiting || state.gate_committed >= state.gate_submitted {
            return;
        }
        let Some(store) = self.fe.store() else {
            state.gate_committed = state.gate_submitted;
            return;
        };
        state.gate_waiting = true;
        let upto = state.gate_submitted;
        let me = self.clone();
        store.then(Box::new(move |wakes| {
            let mut state = me.state.locked();
            state.gate_waiting = false;
            state.gate_committed = state.gate_committed.max(upto);
            me.fill_window(&mut state);
            me.wait_for_commit(&mut state);
            // Called on the store's thread: the connection must be told to write.
            if let Some(link) = &state.link {
                wakes.add(link.clone());
            }
        }));
    }

    /// Removes a stored message (acknowledged, expired or dropped).
    fn forget(&self, seq: u64) {
        if let (Some(store), true) = (self.fe.store(), seq != 0) {
            store.submit(Op::Delete {
                table: durable::MESSAGES,
                key: durable::message_key(&self.key, seq),
            });
        }
    }

    /// The session as stored.
    fn record(&self, state: &SessionState) -> SessionRecord {
        let now_ms = durable::unix_ms();
        let ms_until =
            |t: Instant| now_ms + t.saturating_duration_since(Instant::now()).as_millis() as u64;
        SessionRecord {
            level: if state.version == Version::V5 { 5 } else { 4 },
            expiry_secs: state.expiry_secs,
            expires_at_ms: state.expires_at.map(ms_until),
            subscriptions: state.subs.values().map(|i| i.record.clone()).collect(),
            will: state
                .pending_will
                .as_ref()
                .map(|(w, _)| w)
                .or(state.will.as_ref())
                .map(|w| durable::encode_will(w)),
            will_due_ms: state.pending_will.as_ref().map(|(_, due)| ms_until(*due)),
        }
    }

    /// Stores the session as it is now (a persistent one), or removes it with everything it
    /// had (one that ended).
    fn save(&self, state: &mut SessionState) {
        let Some(store) = self.fe.store() else {
            return;
        };
        if state.expiry_secs > 0 {
            store.submit(Op::Put {
                table: durable::SESSIONS,
                key: self.key.clone(),
                value: self.record(state).encode(),
            });
            state.stored = true;
        } else if state.stored {
            self.erase(store);
            state.stored = false;
        }
    }

    /// Whether the session is detached and its expiry passed.
    fn expired(&self, now: Instant) -> bool {
        let st = self.state.locked();
        st.link.is_none() && st.expires_at.is_some_and(|t| t <= now)
    }

    /// Ends a session taken out of the frontend's map: its subscriptions and stored state go;
    /// returns its pending will, which is due now (a will waits at most until its session
    /// ends), for the caller to publish outside its locks.
    fn end(&self) -> Option<Box<Will>> {
        let will = self.state.locked().pending_will.take().map(|(w, _)| w);
        self.unsubscribe_all();
        if let Some(store) = self.fe.store() {
            self.erase(store);
        }
        will
    }

    /// Removes the session and everything it had from the store.
    fn erase(&self, store: &Store) {
        store.submit(Op::Delete {
            table: durable::SESSIONS,
            key: self.key.clone(),
        });
        for table in [durable::MESSAGES, durable::INBOUND] {
            store.submit(Op::DeletePrefix {
                table,
                prefix: self.key.clone(),
            });
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
///
/// The reply subjects live under [`subject::BRIDGE_PREFIX`], a space no client can subscribe
/// to or receive from except through its bridge, and each carries two random tokens (one per
/// session, one per request): only who received the request can answer it. The answer is
/// published with the requester's rights: the response topic was checked against its publish
/// permission when the request was made, and is checked again when the answer comes.
struct Bridge {
    /// `$MQTT.rr.<session token>`.
    prefix: String,
    account: Arc<Account>,
    /// The requester's permissions (`None`: everything allowed).
    perms: Option<Arc<junction_auth::Permissions>>,
    /// Keys the per-request tokens (a keyed hash of a counter cannot be predicted from the
    /// tokens seen before it).
    keys: std::collections::hash_map::RandomState,
    pending: Mutex<BridgePending>,
}

/// The bridge's open requests.
#[derive(Default)]
struct BridgePending {
    /// Requests made so far.
    count: u64,
    /// Request token -> (request number, response subject, correlation data).
    open: HashMap<Bytes, (u64, Bytes, Bytes)>,
    /// Request number -> token, to forget the oldest first.
    order: BTreeMap<u64, Bytes>,
}

/// A random token of base62 characters, from the system's random source.
fn random_token(chars: usize) -> String {
    let mut raw = vec![0u8; chars];
    getrandom::getrandom(&mut raw).expect("the system's random source");
    raw.iter().map(|b| base62_digit(u64::from(*b))).collect()
}

fn base62_digit(n: u64) -> char {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    DIGITS[(n % 62) as usize] as char
}

impl Bridge {
    fn new(account: Arc<Account>, perms: Option<Arc<junction_auth::Permissions>>) -> Self {
        Self {
            prefix: format!(
                "{}{}",
                String::from_utf8_lossy(subject::BRIDGE_PREFIX),
                random_token(22)
            ),
            account,
            perms,
            keys: std::collections::hash_map::RandomState::new(),
            pending: Mutex::new(BridgePending::default()),
        }
    }

    /// A fresh reply subject for a request answered on `response` with `correlation`.
    fn reply_subject(&self, response: Bytes, correlation: Bytes) -> Bytes {
        use std::hash::BuildHasher;
        let mut pending = self.pending.locked();
        pending.count += 1;
        let n = pending.count;
        let (mut a, mut b) = (self.keys.hash_one((n, 0u8)), self.keys.hash_one((n, 1u8)));
        let mut token = String::with_capacity(22);
        for _ in 0..11 {
            token.push(base62_digit(a));
            token.push(base62_digit(b));
            a /= 62;
            b /= 62;
        }
        let token = Bytes::from(token);
        if pending.open.len() >= BRIDGE_ENTRIES {
            if let Some((_, old)) = pending.order.pop_first() {
                pending.open.remove(&old);
            }
        }
        pending.order.insert(n, token.clone());
        pending
            .open
            .insert(token.clone(), (n, response, correlation));
        let mut subject = BytesMut::with_capacity(self.prefix.len() + 1 + token.len());
        subject.put_slice(self.prefix.as_bytes());
        subject.put_u8(b'.');
        subject.put_slice(&token);
        subject.freeze()
    }
}

impl Sink for Bridge {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        let Some(token) = msg.subject.rsplit(|b| *b == b'.').next() else {
            return Delivery::Dropped;
        };
        let found = {
            let mut pending = self.pending.locked();
            let found = pending.open.remove(token);
            if let Some((n, _, _)) = &found {
                pending.order.remove(n);
            }
            found
        };
        let Some((_, response, correlation)) = found else {
            return Delivery::Dropped;
        };
        if let Some(perms) = &self.perms {
            if !perms.may_publish(&String::from_utf8_lossy(&response)) {
                tracing::info!(
                    subject = %String::from_utf8_lossy(&response),
                    "response to an MQTT request dropped: the requester may not publish there"
                );
                return Delivery::Dropped;
            }
        }
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
        let mut state = self.session.state.locked();
        if let Some(r) = state.receive.as_mut() {
            if !r.may_receive(&String::from_utf8_lossy(subject)) {
                return Delivery::Dropped;
            }
        }
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
        let durable = self.session.durable(&state);
        // A stored QoS 1 message may go out before its commit: the publisher's PUBACK still
        // waits for it, so a crash can only cause a redelivery, which QoS 1 allows. And when
        // the client acknowledges it before the commit, the store never writes it at all.
        // QoS 2 waits (exactly once across a crash).
        let send_early = durable.is_none() || publish.qos == QoS::AtLeastOnce;
        match link {
            Some(link)
                if send_early
                    && state.queue.is_empty()
                    && state.inflight.len() < usize::from(state.receive_maximum) =>
            {
                let mut publish = publish;
                let queued_ms = durable.as_ref().map_or(0, |_| durable::unix_ms());
                let mut seq = 0;
                let mut held = None;
                if let Some(store) = &durable {
                    seq = self
                        .session
                        .store_copy(&mut state, store, &publish, queued_ms);
                    // The publisher's PUBACK may go once this copy is acknowledged.
                    held = ROUTING.with(|r| {
                        let mut r = r.borrow_mut();
                        let (h, early) = r.as_mut()?;
                        h.unacked.fetch_add(1, Ordering::AcqRel);
                        *early += 1;
                        Some(h.clone())
                    });
                }
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
                        seq,
                        queued_ms,
                        held,
                    },
                );
            }
            link => {
                if state.queue.len() >= self.session.fe.opts.max_queued {
                    let refuse = self.session.fe.opts.queue_full == QueueFull::Refuse;
                    if !refuse {
                        if let Some(dropped) = state.queue.pop_front() {
                            self.session.forget(dropped.seq);
                        }
                    }
                    Stats::add(&self.session.fe.bus.stats().queue_dropped, 1);
                    if self.session.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            client_id = %self.session.client_id,
                            max_queued = self.session.fe.opts.max_queued,
                            "an MQTT session's queue is full: {}",
                            if refuse {
                                "new messages for it are refused (MQTT 5 publishers hear 0x97)"
                            } else {
                                "its oldest messages, already acknowledged to their publishers, are dropped"
                            }
                        );
                    }
                    if refuse {
                        if let Some(batch) = batch {
                            batch.refused = true;
                        }
                        return Delivery::Dropped;
                    }
                }
                let queued_ms = durable::unix_ms();
                let (mut seq, mut gate) = (0, 0);
                if let Some(store) = &durable {
                    seq = self
                        .session
                        .store_copy(&mut state, store, &publish, queued_ms);
                    if !send_early {
                        // QoS 2: stored before it is sent; it goes out once the commit holds it.
                        state.gate_submitted += 1;
                        gate = state.gate_submitted;
                    }
                }
                state.queue.push_back(Queued {
                    publish,
                    queued_at: Instant::now(),
                    queued_ms,
                    seq,
                    gate,
                });
                if durable.is_some() && link.is_some() {
                    self.session.wait_for_commit(&mut state);
                }
                let backlogged = link.is_some()
                    && state.queue.len() > QUEUE_HIGH_WATERMARK
                    && (!state.stuck || state.queue.len() > self.session.fe.opts.max_queued / 2);
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
        let link = self.session.state.locked().link.clone();
        if let Some(link) = link {
            link.out.wake();
        }
    }

    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let link = {
            let mut state = self.session.state.locked();
            let hard = state.queue.len() > self.session.fe.opts.max_queued / 2;
            if state.link.is_some()
                && (!state.stuck || hard)
                && state.queue.len() > QUEUE_LOW_WATERMARK
            {
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
            let mut state = self.session.state.locked();
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
    /// Reason strings may go in acknowledgements (5.0 Request Problem Information).
    problem_info: bool,
    /// The largest packet the client takes (5.0 Maximum Packet Size).
    client_max_packet: Option<u32>,
    /// An enhanced authentication exchange waiting for the client's next AUTH.
    pending_auth: Option<Box<PendingAuth>>,
    /// Acknowledgements of this read batch that wait, in order (see [`HeldAcks`]).
    held_acks: Option<Arc<HeldAcks>>,
    /// A batch made for a publication that needed none, untouched, for the next one.
    spare_held: Option<Arc<HeldAcks>>,
    /// The user's permissions (`None`: everything allowed). Boxed, like the certificate: most
    /// connections have neither, and idle connections should stay small.
    perms: Option<Box<Checker>>,
    /// The names in the TLS client certificate, if one was presented.
    cert: Option<Box<junction_auth::CertIdentity>>,
    /// The connection is counted in its account's connections.
    joined: bool,
    /// The listener takes users from certificates (`verify_and_map`).
    map_cert: bool,
    /// Subscriptions the user's JWT allows (its own or its account's `subs`).
    sub_limit: Option<u64>,
    /// A CONNECT whose credentials are being checked off the reactor.
    waiting: Option<Box<Waiting>>,
}

/// A CONNECT waiting for its authentication.
struct Waiting {
    connect: Connect,
    answer: auth_pool::Pending,
}

/// The acknowledgements a client sends for our QoS 1/2 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// PUBACK (QoS 1).
    Puback,
    /// PUBREC (QoS 2, first half).
    Pubrec,
    /// PUBCOMP (QoS 2, second half).
    Pubcomp,
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
        self.encode_for_client(packet, &mut buf);
        self.link.out.push_own(&buf);
    }

    /// Encodes a packet the connection itself sends into `buf`, within the client's Maximum
    /// Packet Size (5.0): a reason string and user properties are left out of one that would be
    /// larger [MQTT-3.4.2-2 and alike]; one that is still larger is not sent.
    fn encode_for_client(&self, mut packet: Packet, buf: &mut BytesMut) {
        if let Some(max) = self.client_max_packet {
            let fits = |p: &Packet| encoded_len(p, self.version).is_ok_and(|n| n <= max as usize);
            if !fits(&packet) {
                strip_optional(&mut packet);
                if !fits(&packet) {
                    tracing::debug!(cid = %self.link.id, packet = packet.name(), max, "packet over the client's maximum size not sent");
                    return;
                }
            }
        }
        let _ = encode(&packet, self.version, buf);
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
            Packet::PubAck(r) => self.acked(Ack::Puback, &r),
            Packet::PubRec(r) => self.acked(Ack::Pubrec, &r),
            Packet::PubComp(r) => self.acked(Ack::Pubcomp, &r),
            Packet::PubRel(r) => {
                let mut durable = false;
                if let Some(s) = &self.session {
                    let mut state = s.state.locked();
                    if state.inbound_qos2.remove(&r.packet_id) {
                        if let Some(store) = s.durable(&state) {
                            // PUBCOMP frees the id for reuse: only once the store forgot it.
                            store.submit(Op::Delete {
                                table: durable::INBOUND,
                                key: durable::inbound_key(&s.key, r.packet_id),
                            });
                            durable = true;
                        }
                    }
                }
                self.send_ordered(
                    Packet::PubComp(PubResp {
                        packet_id: r.packet_id,
                        ..PubResp::default()
                    }),
                    durable,
                );
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
                    let mut state = s.state.locked();
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
        self.link.connect_seen.store(true, Ordering::Relaxed);
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
            cert: self.cert.as_deref().cloned(),
            map_cert: self.map_cert,
            mqtt: true,
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
        match auth_pool::authenticate(&fe.auth, creds) {
            Ok(answer) => self.authenticated(c, answer),
            Err(answer) => {
                // Nothing more is read until the answer comes (see `poll_resume`).
                self.waiting = Some(Box::new(Waiting { connect: c, answer }));
                Ok(())
            }
        }
    }

    /// Admits a client whose credentials were checked, or refuses it.
    fn authenticated(
        &mut self,
        c: Connect,
        answer: Result<Identity, AuthError>,
    ) -> Result<(), CloseReason> {
        let fe = self.fe().clone();
        let connack = |code: u8| {
            Packet::ConnAck(Box::new(ConnAck {
                session_present: false,
                code,
                properties: ConnAckProperties::default(),
            }))
        };
        let identity = match answer {
            Ok(id) => id,
            Err(e) => {
                Stats::add(&fe.bus.stats().auth_failures, 1);
                tracing::info!(cid = %self.link.id, error = %e, "MQTT authentication failed");
                // 5.0: 0x86 for wrong credentials, 0x87 otherwise; 3.1.1 gets return code 5
                // for both, as nats-server sends.
                let code = match (&e, self.version) {
                    (AuthError::BadCredentials(_), Version::V5) => {
                        reason::BAD_USER_NAME_OR_PASSWORD
                    }
                    _ => reason::NOT_AUTHORIZED,
                };
                self.send(connack(code));
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
        let checker = identity
            .permissions
            .clone()
            .filter(|p| !p.is_open())
            .map(|p| Box::new(Checker::new(p)));
        if let (Some(perms), Some(will)) = (&checker, &c.will) {
            let subject = topic::topic_to_subject(will.topic.as_bytes()).unwrap_or_default();
            if !perms
                .permissions()
                .may_publish(&String::from_utf8_lossy(&subject))
            {
                tracing::info!(cid = %self.link.id, topic = %will.topic.as_str(), "will topic not permitted");
                self.send(connack(reason::NOT_AUTHORIZED));
                return Err(CloseReason::AuthenticationViolation);
            }
        }
        self.perms = checker;
        self.sub_limit = identity.limits.subs;
        if let Some(exp) = identity.expires {
            self.link
                .expires
                .store(u64::try_from(exp).unwrap_or(1).max(1), Ordering::Relaxed);
        }
        self.account = fe.bus.account_or_create(&identity.account);
        if !self.joined {
            if !self.account.join(identity.limits.account_connections) {
                tracing::info!(cid = %self.link.id, account = %identity.account, "maximum account connections exceeded");
                self.send(connack(if v5 {
                    reason::QUOTA_EXCEEDED
                } else {
                    reason::SERVER_UNAVAILABLE
                }));
                return Err(CloseReason::MaxConnectionsExceeded);
            }
            self.joined = true;
        }
        let keep_alive = match fe.opts.max_keep_alive {
            Some(max) if c.keep_alive == 0 || c.keep_alive > max => max,
            _ => c.keep_alive,
        };
        self.link
            .keep_alive_ms
            .store(u64::from(keep_alive) * 1000, Ordering::Relaxed);
        self.will = c.will.map(Box::new);
        self.problem_info = c.properties.request_problem_information != Some(false);
        self.client_max_packet = c.properties.maximum_packet_size;
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
        let mut connack = ConnAck {
            session_present: false,
            code: reason::SUCCESS,
            properties: props,
        };
        if let Some(max) = c.properties.maximum_packet_size {
            // The client takes nothing larger [MQTT-3.1.2-24]: optional properties go, then
            // the connection if even the rest is too large.
            if !fit_connack(&mut connack, max as usize) {
                tracing::info!(cid = %self.link.id, max, "CONNACK cannot fit the client's maximum packet size");
                return Err(CloseReason::ProtocolViolation);
            }
        }
        let key = (identity.account.clone(), client_id.clone());
        let expiry = if v5 {
            c.properties.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        // Take over an existing session: disconnect its link; keep it unless clean start.
        let mut due_will = None;
        let (session, present) = {
            let mut sessions = fe.sessions.locked();
            let mut existing = sessions.get(&key).cloned();
            if existing
                .as_ref()
                .is_some_and(|old| old.expired(Instant::now()))
            {
                // Its expiry passed (the sweep had not come to it yet): it is gone.
                if let Some(old) = existing.take() {
                    sessions.remove(&key);
                    due_will = old.end().map(|w| (old.clone(), w));
                }
            }
            if let Some(old) = &existing {
                let old_link = old.state.locked().link.take();
                if let Some(l) = old_link {
                    let old_version = l.about.locked().version;
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
                        // The client is back: its will is not sent [MQTT-3.1.3-9].
                        let _ = old.end();
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
        if let Some((old, will)) = due_will {
            publish_will_message(&fe, &old.account, &old, will);
        }
        {
            let mut about = self.link.about.locked();
            about.client_id = client_id.clone();
            about.account = identity.account.clone();
            about.version = Some(self.version);
            about.dropped = Some(session.dropped.clone());
        }
        // A persistent session is durable before its CONNACK (and whatever follows it) is
        // written: the connection's output is held until the commit.
        let hold = fe.store().filter(|_| expiry > 0 || present).cloned();
        if hold.is_some() {
            self.link.out.hold();
        }
        connack.session_present = present;
        self.send(Packet::ConnAck(Box::new(connack)));
        {
            let mut state = session.state.locked();
            state.link = Some(self.link.clone());
            state.receive = identity
                .permissions
                .clone()
                .filter(|p| !p.subscribe.deny.is_empty())
                .map(|p| Box::new(Checker::new(p)));
            state.pending_will = None;
            state.version = self.version;
            state.expiry_secs = expiry;
            state.expires_at = None;
            state.will = self.will.clone();
            if present || expiry > 0 {
                session.save(&mut state);
            }
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
        if let Some(store) = hold {
            // After the session's record was submitted: the commit that runs this holds it.
            let link = self.link.clone();
            store.then(Box::new(move |_| link.out.release()));
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
            let pending = self
                .session
                .as_ref()
                .map_or(0, |s| s.state.locked().inbound_qos2.len());
            // 5.0 clients were told the Receive Maximum; 3.1.1 has none, and a reconnecting
            // client may resend every message it had pending.
            if self.version == Version::V5 && pending >= usize::from(RECEIVE_MAXIMUM) {
                return self.refuse(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    CloseReason::ProtocolViolation,
                );
            }
        }
        let Ok(subject) = topic::topic_to_subject(p.topic.as_bytes()) else {
            return self.refuse(reason::TOPIC_NAME_INVALID, CloseReason::ProtocolViolation);
        };
        if subject.starts_with(subject::BRIDGE_PREFIX) {
            // The bridge's own reply subjects: MQTT responders answer the response topic.
            self.refused_publish(&p, reason::NOT_AUTHORIZED, "topic reserved for the server");
            return Ok(());
        }
        if let Some(perms) = self.perms.as_mut() {
            if !perms.may_publish_bytes(&subject) {
                self.refused_publish(&p, reason::NOT_AUTHORIZED, "publish not permitted");
                return Ok(());
            }
        }
        let mut reply = None;
        if let Some(t) = &p.properties.response_topic {
            // The response topic is where answers will be published on the requester's behalf:
            // it must be a subject the requester may publish to itself.
            let refusal = match topic::topic_to_subject(t.as_bytes()) {
                Err(_) => Some((
                    reason::TOPIC_NAME_INVALID,
                    "response topic cannot be mapped to a subject",
                )),
                Ok(r) if subject::is_reserved_reply(&r) => Some((
                    reason::NOT_AUTHORIZED,
                    "response topic maps to a subject reserved for the server's replies",
                )),
                Ok(r)
                    if self
                        .perms
                        .as_mut()
                        .is_some_and(|c| !c.may_publish_bytes(&r)) =>
                {
                    Some((reason::NOT_AUTHORIZED, "response topic not permitted"))
                }
                Ok(r) => {
                    reply = Some(r);
                    None
                }
            };
            if let Some((code, why)) = refusal {
                self.refused_publish(&p, code, why);
                return Ok(());
            }
        }
        // Borrowed, not cloned: no reference-count traffic per inbound message.
        let session = self.session.as_ref().expect("connected");
        let mut inbound_key = None;
        if p.qos == QoS::ExactlyOnce {
            let mut state = session.state.locked();
            if !state.inbound_qos2.insert(p.packet_id) {
                // A retry of a message we already have: acknowledge, do not deliver again.
                drop(state);
                self.send_ordered(
                    Packet::PubRec(PubResp {
                        packet_id: p.packet_id,
                        ..PubResp::default()
                    }),
                    false,
                );
                return Ok(());
            }
            if session.durable(&state).is_some() {
                inbound_key = Some(durable::inbound_key(&session.key, p.packet_id));
            }
        }
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
        // What this message makes durable (its copies queued for persistent sessions, the
        // packet id that marks it received, the retained copy) commits together, and the
        // acknowledgement waits for that commit.
        // Borrowed through the link field, not cloned: no reference-count traffic per message.
        // QoS 1 copies sent at once to online persistent subscribers are counted into this
        // batch's held acknowledgements (their acknowledgements can release the PUBACK).
        let fresh = self.held_acks.is_none();
        let routing = (self.link.fe.store().is_some() && p.qos == QoS::AtLeastOnce)
            .then(|| self.held_batch());
        let store = self.link.fe.store();
        let submitted = store.map(|s| s.submitted());
        let group = store
            .filter(|_| p.qos != QoS::AtMostOnce)
            .map(|s| s.group());
        if p.retain {
            self.fe().retain(self.account.name(), &msg, p.qos as u8);
        }
        if let Some(h) = routing {
            ROUTING.with(|r| *r.borrow_mut() = Some((h, 0)));
        }
        let publishing = self.publishing.get_or_insert_with(Box::default);
        publishing.batch.refused = false;
        self.account
            .publish(&mut publishing.cache, &msg, &mut publishing.batch);
        // A subscriber's full queue refused it (`queue_full: refuse`): a 5.0 publisher hears
        // 0x97 instead of a success; a QoS 2 flow ends there.
        let quota = publishing.batch.refused && self.version == Version::V5;
        if quota && p.qos == QoS::ExactlyOnce {
            if let Some(session) = &self.session {
                session.state.locked().inbound_qos2.remove(&p.packet_id);
            }
            inbound_key = None;
        }
        let ack_code = if quota {
            reason::QUOTA_EXCEEDED
        } else {
            reason::SUCCESS
        };
        let early = ROUTING
            .with(|r| r.borrow_mut().take())
            .map_or(0, |(_, n)| n);
        if fresh && early == 0 && p.qos == QoS::AtLeastOnce {
            // Not used (no copy counted in, nothing held yet): kept untouched for the next
            // publication, so a QoS 1 stream to clean sessions allocates none per message.
            self.spare_held = self.held_acks.take();
        }
        if let (Some(store), Some(key)) = (&store, inbound_key) {
            store.submit(Op::Put {
                table: durable::INBOUND,
                key,
                value: Vec::new(),
            });
        }
        drop(group);
        let submitted_now = match (&store, submitted) {
            (Some(s), Some(before)) => s.submitted() - before,
            _ => 0,
        };
        let durable = submitted_now > 0;
        // Only early-sent copies went to the store (no retained message, no queued copy).
        let early_only = durable && submitted_now == early as u64 && !p.retain;
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_held(
                Packet::PubAck(PubResp {
                    packet_id: p.packet_id,
                    reason: ack_code,
                    ..PubResp::default()
                }),
                durable,
                early_only,
            ),
            QoS::ExactlyOnce => self.send_ordered(
                Packet::PubRec(PubResp {
                    packet_id: p.packet_id,
                    reason: ack_code,
                    ..PubResp::default()
                }),
                durable,
            ),
        }
        Ok(())
    }

    /// A publication the server does not make: dropped; 5.0 hears `code` (and `why`, unless
    /// the client asked for no problem information) in its PUBACK or PUBREC, 3.1.1 (which has
    /// no way to say it) gets the usual acknowledgement.
    fn refused_publish(&mut self, p: &Publish, code: u8, why: &str) {
        tracing::debug!(cid = %self.link.id, topic = %p.topic.as_str(), why, "publish refused");
        let v5 = self.version == Version::V5;
        let ack = PubResp {
            packet_id: p.packet_id,
            reason: if v5 { code } else { 0 },
            properties: super::properties::AckProperties {
                reason_string: (v5 && self.problem_info).then(|| utf8(why)),
                ..Default::default()
            },
        };
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_ordered(Packet::PubAck(ack), false),
            // A refused QoS 2 message ends at PUBREC (5.0: a reason code >= 0x80 ends the
            // flow); 3.1.1's PUBREL is answered with PUBCOMP as for any unknown id.
            QoS::ExactlyOnce => self.send_ordered(Packet::PubRec(ack), false),
        }
    }

    /// The session's request/response bridge, made on first use.
    fn bridge(&self, session: &Arc<Session>) -> Arc<Bridge> {
        let mut state = session.state.locked();
        if let Some((bridge, _)) = &state.bridge {
            return bridge.clone();
        }
        let perms = self.perms.as_ref().map(|c| c.shared());
        let bridge = Arc::new(Bridge::new(self.account.clone(), perms));
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

    /// The client acknowledged one of our QoS 1/2 messages with PUBACK, PUBREC or PUBCOMP.
    /// An acknowledgement of the wrong kind for the message's QoS (PUBACK for QoS 2, PUBREC for
    /// QoS 1, PUBCOMP before PUBREC) is a protocol violation; one for an unknown packet id is
    /// ignored (a PUBREC gets PUBREL, 5.0: with 0x92, so the client can finish its side).
    fn acked(&mut self, kind: Ack, r: &PubResp) -> Result<(), CloseReason> {
        let Some(session) = self.session.clone() else {
            return Ok(());
        };
        let packet_id = r.packet_id;
        let mut state = session.state.locked();
        let store = session.durable(&state).cloned();
        let Some(o) = state.inflight.get_mut(&packet_id) else {
            drop(state);
            if kind == Ack::Pubrec {
                let v5 = self.version == Version::V5;
                self.send_ordered(
                    Packet::PubRel(PubResp {
                        packet_id,
                        reason: if v5 {
                            reason::PACKET_IDENTIFIER_NOT_FOUND
                        } else {
                            reason::SUCCESS
                        },
                        ..PubResp::default()
                    }),
                    false,
                );
            }
            return Ok(());
        };
        let qos2 = o.publish.qos == QoS::ExactlyOnce;
        let wrong = match kind {
            Ack::Puback => qos2,
            Ack::Pubrec => !qos2,
            Ack::Pubcomp => !qos2 || !o.released,
        };
        if wrong {
            drop(state);
            tracing::debug!(cid = %self.link.id, packet_id, ?kind, "acknowledgement of the wrong kind");
            return self.refuse(reason::PROTOCOL_ERROR, CloseReason::ProtocolViolation);
        }
        if kind == Ack::Pubrec && r.reason < 0x80 {
            let mut durable = false;
            if !o.released {
                o.released = true;
                if let (Some(store), true) = (store, o.seq != 0) {
                    store.submit(Op::Put {
                        table: durable::MESSAGES,
                        key: durable::message_key(&session.key, o.seq),
                        value: durable::encode_message(
                            &o.publish,
                            o.publish.packet_id,
                            true,
                            o.queued_ms,
                        ),
                    });
                    durable = true;
                }
            }
            drop(state);
            // PUBREL promises the message will not be sent again: only once the store knows
            // it was received, or a crash in between would deliver it twice.
            self.send_ordered(
                Packet::PubRel(PubResp {
                    packet_id,
                    ..PubResp::default()
                }),
                durable,
            );
            return Ok(());
        }
        // Done: PUBACK, PUBCOMP, or a PUBREC with a failure code (5.0), which ends the QoS 2
        // flow there: no PUBREL, and the packet id and the window's slot are free again.
        if let Some(o) = state.inflight.remove(&packet_id) {
            session.forget(o.seq);
            if let Some(h) = o.held {
                h.copy_acked();
            }
        }
        state.stuck = false;
        session.fill_window(&mut state);
        Ok(())
    }

    fn subscribe(&mut self, s: Subscribe) {
        let session = self.session.clone().expect("connected");
        let fe = self.fe().clone();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained_out = Vec::new();
        for f in &s.filters {
            let record = SubRecord {
                filter: f.filter.as_str().to_string(),
                qos: f.qos as u8,
                no_local: f.no_local,
                retain_as_published: f.retain_as_published,
                subscription_id: s.properties.subscription_identifier,
            };
            if !self.may_subscribe(f.filter.as_bytes()) {
                codes.push(if self.version == Version::V5 {
                    reason::NOT_AUTHORIZED
                } else {
                    0x80
                });
                continue;
            }
            if self.subscriptions_full(&session, f.filter.as_bytes()) {
                codes.push(if self.version == Version::V5 {
                    reason::QUOTA_EXCEEDED
                } else {
                    0x80
                });
                continue;
            }
            let Some(installed) = session.install(record) else {
                codes.push(if self.version == Version::V5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    0x80
                });
                continue;
            };
            codes.push(f.qos as u8);
            let send_retained = !installed.shared
                && match f.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscribe => !installed.existed,
                    RetainHandling::Never => false,
                };
            if send_retained {
                for filter_subject in installed.subjects {
                    for r in fe.retained_matching(self.account.name(), &filter_subject) {
                        retained_out.push((installed.sink.clone(), installed.dyn_sink.clone(), r));
                    }
                }
            }
        }
        let durable = {
            let mut state = session.state.locked();
            session.save(&mut state);
            session.durable(&state).is_some()
        };
        self.send_ordered(
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                reason_codes: codes,
                ..SubAck::default()
            }),
            durable,
        );
        // Retained messages go after the SUBACK, with the retain flag set.
        for (concrete, sink, r) in retained_out {
            let mut msg = r.msg;
            msg.facts.qos = Some(r.qos);
            let publish = concrete.publish_for(&msg, true);
            concrete.offer(publish, &msg.subject, None, &sink);
        }
    }

    /// Whether a new filter would pass the subscription limit of the user's JWT (counted in
    /// the session's filters).
    fn subscriptions_full(&self, session: &Session, filter: &[u8]) -> bool {
        let Some(max) = self.sub_limit else {
            return false;
        };
        let state = session.state.locked();
        // A filter subscribed again replaces the old one: not a new subscription.
        !state.subs.contains_key(filter) && state.subs.len() as u64 >= max
    }

    /// Whether the user may subscribe to every subject `filter` maps to (in its share group).
    fn may_subscribe(&self, filter: &[u8]) -> bool {
        let (queue, inner) = match topic::shared_subscription(filter) {
            Some((g, inner)) => (Some(String::from_utf8_lossy(g).into_owned()), inner),
            None => (None, filter),
        };
        let Ok(subjects) = topic::filter_to_subjects(&Bytes::copy_from_slice(inner)) else {
            return true; // refused as an invalid filter anyway
        };
        if subject::is_bridge(&subjects.subject) {
            return false;
        }
        let Some(perms) = &self.perms else {
            return true;
        };
        std::iter::once(&subjects.subject)
            .chain(subjects.parent.as_ref())
            .all(|s| {
                perms
                    .permissions()
                    .may_subscribe(&String::from_utf8_lossy(s), queue.as_deref())
            })
    }

    fn unsubscribe(&mut self, u: Unsubscribe) {
        let session = self.session.clone().expect("connected");
        let mut codes = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let removed = session.state.locked().subs.remove(f.as_bytes());
            match removed {
                Some(installed) => {
                    for sub in installed.core {
                        self.account.unsubscribe(&sub);
                    }
                    codes.push(reason::SUCCESS);
                }
                None => codes.push(reason::NO_SUBSCRIPTION_EXISTED),
            }
        }
        let durable = {
            let mut state = session.state.locked();
            session.save(&mut state);
            session.durable(&state).is_some()
        };
        self.send_ordered(
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reason_codes: if self.version == Version::V5 {
                    codes
                } else {
                    Vec::new()
                },
                ..UnsubAck::default()
            }),
            durable,
        );
    }

    /// This read batch's held acknowledgements, made on first use.
    fn held_batch(&mut self) -> Arc<HeldAcks> {
        if self.held_acks.is_none() {
            let h = self.spare_held.take().unwrap_or_else(|| {
                Arc::new(HeldAcks {
                    bytes: Mutex::new(BytesMut::new()),
                    unacked: std::sync::atomic::AtomicUsize::new(0),
                    needs_commit: std::sync::atomic::AtomicBool::new(false),
                    committed: std::sync::atomic::AtomicBool::new(false),
                    sealed: std::sync::atomic::AtomicBool::new(false),
                    link: Arc::downgrade(&self.link),
                })
            });
            self.held_acks = Some(h);
        }
        self.held_acks.clone().expect("just set")
    }

    /// Sends an acknowledgement in order with those that wait: after them when any wait, or
    /// held when `durable` (what it acknowledges was just submitted to the store; `early_only`:
    /// only as QoS 1 copies already sent to online subscribers, whose acknowledgements can
    /// release it before the commit). Held ones go out together at the end of the read batch
    /// ([`MqttConn::release_acks`]).
    fn send_ordered(&mut self, packet: Packet, durable: bool) {
        self.send_held(packet, durable, false)
    }

    fn send_held(&mut self, packet: Packet, durable: bool, early_only: bool) {
        let wait = self.fe().store().is_some()
            && (durable || self.held_acks.is_some() || !self.link.held.locked().is_empty());
        if !wait {
            return self.send(packet);
        }
        let h = self.held_batch();
        if durable && !early_only {
            h.needs_commit.store(true, Ordering::Release);
        }
        self.encode_for_client(packet, &mut h.bytes.locked());
    }

    /// Queues this read batch's held acknowledgements on the link, behind earlier ones, and asks
    /// the store to release them after the commit that holds everything submitted so far (they
    /// may go earlier, see [`HeldAcks`]).
    fn release_acks(&mut self) {
        let Some(h) = self.held_acks.take() else {
            return;
        };
        let Some(store) = self.link.fe.store() else {
            return;
        };
        self.link.held.locked().push_back(h.clone());
        h.sealed.store(true, Ordering::Release);
        if self.link.release_held() {
            self.link.out.wake();
        }
        if h.ready() {
            // Gone out already, or goes with the batch before it: no commit to wait for.
            return;
        }
        let link = self.link.clone();
        store.then(Box::new(move |wakes| {
            h.committed.store(true, Ordering::Release);
            if link.release_held() {
                wakes.add(link);
            }
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
            let state = session.state.locked();
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
        // The sweep publishes it when due, unless the client comes back first; a persistent
        // session keeps it in the store, so it is due across a restart too.
        if let Some(will) = self.will.take() {
            let mut state = session.state.locked();
            state.pending_will =
                Some((will, Instant::now() + Duration::from_secs(u64::from(wait))));
            session.save(&mut state);
        }
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
                Ok(Some(packet)) => {
                    self.handle(packet)?;
                    if self.waiting.is_some() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return self.decode_failed(&e),
            }
        }
    }

    fn poll_resume(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, CloseReason>> {
        let Some(waiting) = self.waiting.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        let answer = std::task::ready!(waiting.answer.as_mut().poll(cx));
        let Waiting { connect, .. } = *self.waiting.take().expect("checked above");
        Poll::Ready(self.authenticated(connect, answer).map(|()| true))
    }

    fn end_batch(&mut self) -> Vec<Arc<dyn Sink>> {
        self.release_acks();
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
        if self.joined {
            self.account.leave();
        }
        if self.will.is_some() {
            self.will_on_close();
        }
        if let Some(session) = self.session.take() {
            let keep = {
                let mut state = session.state.locked();
                let ours = state
                    .link
                    .as_ref()
                    .is_some_and(|l| Arc::ptr_eq(l, &self.link));
                if ours {
                    state.link = None;
                    state.will = None;
                    state.expires_at = (state.expiry_secs != u32::MAX).then(|| {
                        Instant::now() + Duration::from_secs(u64::from(state.expiry_secs))
                    });
                    session.save(&mut state);
                }
                !ours || state.expiry_secs > 0
            };
            if !keep {
                session.unsubscribe_all();
                let key = (
                    session.account.name().to_string(),
                    session.client_id.clone(),
                );
                let mut sessions = fe.sessions.locked();
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
pub(crate) fn start<T: Transport>(
    io: T,
    peer: SocketAddr,
    fe: Arc<Frontend>,
    cert: Option<junction_auth::CertIdentity>,
    map_cert: bool,
) -> Conn<MqttConn, T> {
    let id = fe.bus.next_conn_id();
    let link = Arc::new(Link {
        id,
        out: Outbound::new(fe.opts.max_pending),
        fe: fe.clone(),
        stats: ConnStats::new(peer),
        about: Mutex::new(About::default()),
        last_read_ms: AtomicU64::new(fe.now_ms()),
        opened_ms: fe.now_ms(),
        connect_seen: std::sync::atomic::AtomicBool::new(false),
        expires: AtomicU64::new(0),
        keep_alive_ms: AtomicU64::new(0),
        held: Mutex::new(std::collections::VecDeque::new()),
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
        problem_info: true,
        client_max_packet: None,
        pending_auth: None,
        held_acks: None,
        spare_held: None,
        perms: None,
        cert: cert.map(Box::new),
        joined: false,
        map_cert,
        sub_limit: None,
        waiting: None,
    };
    Conn::new(io, conn)
}

/// Longest a restored deadline (session expiry, will delay) lies ahead: a record from the disk
/// cannot push an `Instant` past what the clock can hold.
const MAX_RESTORED_WAIT_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// The key of the time the server was last alive, in [`durable::META`].
const ALIVE_KEY: &[u8] = b"alive";

/// Notes in the store that the server is alive now (once a second, and at startup).
fn note_alive(store: &Store) {
    store.submit(Op::Put {
        table: durable::META,
        key: ALIVE_KEY.to_vec(),
        value: durable::unix_ms().to_be_bytes().to_vec(),
    });
}

/// Publishes the wills that are due, and removes detached sessions whose expiry passed; notes
/// in the store that the server is alive (a restart after a crash counts from it).
fn expire_sessions(fe: &Frontend) {
    if let Some(store) = fe.store() {
        note_alive(store);
    }
    let now = Instant::now();
    let sessions: Vec<Arc<Session>> = fe.sessions.locked().values().cloned().collect();
    for s in &sessions {
        let due = {
            let mut state = s.state.locked();
            if state
                .pending_will
                .as_ref()
                .is_some_and(|(_, at)| *at <= now)
            {
                let will = state.pending_will.take().map(|(w, _)| w);
                s.save(&mut state);
                will
            } else {
                None
            }
        };
        if let Some(will) = due {
            publish_will_message(fe, &s.account, s, will);
        }
    }
    let expired: Vec<Arc<Session>> = {
        let mut sessions = fe.sessions.locked();
        let keys: Vec<_> = sessions
            .iter()
            .filter(|(_, s)| s.expired(now))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| sessions.remove(k)).collect()
    };
    for s in expired {
        if let Some(will) = s.end() {
            publish_will_message(fe, &s.account, &s, will);
        }
    }
}

/// What [`Frontend::restore`] found in the store.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub sessions: usize,
    pub messages: usize,
    pub retained: usize,
    /// Records that could not be restored: logged and left out, so that one bad record never
    /// keeps the broker from starting (a crash loop over the whole store).
    pub skipped: usize,
}

/// Logs a record `restore` leaves out, and counts it.
fn skip_record(skipped: &mut usize, what: &str, key: &[u8], why: &str) {
    *skipped += 1;
    tracing::warn!(
        record = what,
        key = %hex(key),
        why,
        "skipped a record of the durable store that cannot be restored"
    );
}

impl Frontend {
    /// Loads what the store kept: retained messages, persistent sessions (their subscriptions,
    /// expiry and will), the messages queued for them or in flight, and the QoS 2 packet ids
    /// they had received. Called once at startup, before any client connects. A record that
    /// cannot be read (or restored) is logged, left out and counted in [`Restored::skipped`];
    /// only the engine failing to read is an error.
    pub fn restore(self: &Arc<Self>, engine: &dyn Engine) -> Result<Restored, StoreError> {
        let mut restored = Restored::default();
        let mut skipped = 0;
        engine.scan(durable::RETAINED, &mut |k, v| {
            let Some((account, subject)) = durable::split_retained_key(k) else {
                skip_record(&mut skipped, "retained", k, "malformed key");
                return Ok(());
            };
            let Some((msg, qos)) = durable::decode_retained(v, ConnId(0)) else {
                skip_record(&mut skipped, "retained", k, "malformed value");
                return Ok(());
            };
            self.retained
                .locked()
                .insert((account, subject), Retained { msg, qos });
            restored.retained += 1;
            Ok(())
        })?;

        let now = Instant::now();
        let now_ms = durable::unix_ms();
        let at = |ms: u64| {
            now.checked_sub(Duration::from_millis(now_ms.saturating_sub(ms)))
                .unwrap_or(now)
                + Duration::from_millis(ms.saturating_sub(now_ms).min(MAX_RESTORED_WAIT_MS))
        };
        // When the server was last known alive: a client connected then lost its connection
        // about then, and its session's expiry and will delay count from it.
        let mut alive_ms = now_ms;
        engine.scan(durable::META, &mut |k, v| {
            if k == ALIVE_KEY {
                match <[u8; 8]>::try_from(v) {
                    Ok(b) => alive_ms = u64::from_be_bytes(b).min(now_ms),
                    Err(_) => skip_record(&mut skipped, "meta", k, "malformed value"),
                }
            }
            Ok(())
        })?;
        let mut by_key: HashMap<Vec<u8>, Arc<Session>> = HashMap::new();
        let mut records = Vec::new();
        engine.scan(durable::SESSIONS, &mut |k, v| {
            let parts = durable::split_session_key(k).filter(|(_, _, rest)| rest.is_empty());
            let Some((account, client_id, _)) = parts else {
                skip_record(&mut skipped, "session", k, "malformed key");
                return Ok(());
            };
            let Some(record) = SessionRecord::decode(v) else {
                skip_record(&mut skipped, "session", k, "malformed value");
                return Ok(());
            };
            records.push((k.to_vec(), account, client_id, record));
            Ok(())
        })?;
        for (key, account, client_id, record) in records {
            // Restoring one session is the broker's own code over data from the disk: should
            // it fail, that session is left out, not the broker.
            let one = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.restore_session(account, client_id, record, alive_ms, &at)
            }));
            match one {
                Ok(Ok(session)) => {
                    by_key.insert(session.key.clone(), session);
                    restored.sessions += 1;
                }
                Ok(Err(why)) => skip_record(&mut skipped, "session", &key, why),
                Err(_) => skip_record(&mut skipped, "session", &key, "restoring it panicked"),
            }
        }

        let mut orphans = Vec::new();
        engine.scan(durable::MESSAGES, &mut |k, v| {
            if k.len() < 8 {
                skip_record(&mut skipped, "message", k, "malformed key");
                return Ok(());
            }
            let (skey, seq) = k.split_at(k.len() - 8);
            let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
            let Some(session) = by_key.get(skey) else {
                orphans.push((durable::MESSAGES, k.to_vec()));
                return Ok(());
            };
            let Some(r) = MessageRecord::decode(v) else {
                skip_record(&mut skipped, "message", k, "malformed value");
                return Ok(());
            };
            let Some(next_seq) = seq.checked_add(1) else {
                skip_record(&mut skipped, "message", k, "sequence number out of range");
                return Ok(());
            };
            let mut state = session.state.locked();
            state.next_seq = state.next_seq.max(next_seq);
            let queued_at = now
                .checked_sub(Duration::from_millis(now_ms.saturating_sub(r.queued_at_ms)))
                .unwrap_or(now);
            let mut publish = r.publish;
            if r.packet_id != 0 && !state.inflight.contains_key(&r.packet_id) {
                // In flight when the server stopped: redelivered with DUP on reconnect.
                publish.dup = true;
                state.inflight.insert(
                    r.packet_id,
                    Outgoing {
                        publish,
                        released: r.released,
                        seq,
                        queued_ms: r.queued_at_ms,
                        held: None,
                    },
                );
            } else {
                // It may have been sent before the server stopped (a QoS 1 message's packet id
                // is not stored: a redelivery at QoS 1 may take a new one).
                publish.dup = r.qos != QoS::AtMostOnce;
                publish.packet_id = 0;
                state.queue.push_back(Queued {
                    publish,
                    queued_at,
                    queued_ms: r.queued_at_ms,
                    seq,
                    gate: 0,
                });
            }
            restored.messages += 1;
            Ok(())
        })?;
        engine.scan(durable::INBOUND, &mut |k, _| {
            if k.len() < 2 {
                skip_record(&mut skipped, "inbound", k, "malformed key");
                return Ok(());
            }
            let (skey, id) = k.split_at(k.len() - 2);
            match by_key.get(skey) {
                Some(session) => {
                    session
                        .state
                        .locked()
                        .inbound_qos2
                        .insert(u16::from_be_bytes([id[0], id[1]]));
                }
                None => orphans.push((durable::INBOUND, k.to_vec())),
            }
            Ok(())
        })?;
        if !orphans.is_empty() {
            tracing::warn!(
                count = orphans.len(),
                "the store held records of no session; they will be removed"
            );
        }
        *self.orphans.locked() = orphans;
        restored.skipped = skipped;
        Ok(restored)
    }

    /// Makes one persistent session from its record: subscriptions, expiry, pending will.
    fn restore_session(
        self: &Arc<Self>,
        account: String,
        client_id: String,
        record: SessionRecord,
        alive_ms: u64,
        at: &dyn Fn(u64) -> Instant,
    ) -> Result<Arc<Session>, &'static str> {
        let will = match &record.will {
            Some(bytes) => Some(Box::new(
                durable::decode_will(bytes).ok_or("malformed will")?,
            )),
            None => None,
        };
        let account = self.bus.account_or_create(&account);
        let client_id: Arc<str> = client_id.into();
        let session = Arc::new(Session::new(
            client_id.clone(),
            account.clone(),
            self.clone(),
        ));
        {
            let mut state = session.state.locked();
            state.version = if record.level == 5 {
                Version::V5
            } else {
                Version::V311
            };
            state.expiry_secs = record.expiry_secs;
            state.stored = true;
            // A session whose client was connected when the server stopped was cut off then.
            state.expires_at = match record.expires_at_ms {
                Some(ms) => Some(at(ms)),
                None => (record.expiry_secs != u32::MAX)
                    .then(|| at(alive_ms.saturating_add(u64::from(record.expiry_secs) * 1000))),
            };
            state.pending_will = match (will, record.will_due_ms) {
                (Some(w), Some(due)) => Some((w, at(due))),
                (Some(w), None) => {
                    // Its connection was lost with the server: the will is due after its
                    // delay (or the session's end), counted from now.
                    let delay = w.properties.will_delay_interval.unwrap_or(0);
                    let wait = delay.min(record.expiry_secs);
                    Some((w, at(alive_ms.saturating_add(u64::from(wait) * 1000))))
                }
                (None, _) => None,
            };
        }
        for sub in record.subscriptions {
            session.install(sub);
        }
        self.sessions
            .locked()
            .insert((account.name().to_string(), client_id), session.clone());
        Ok(session)
    }

    /// From now on, keeps persistent sessions, their messages and retained messages in `store`.
    pub fn use_store(&self, store: Arc<Store>) {
        for (table, key) in std::mem::take(&mut *self.orphans.locked()) {
            store.submit(Op::Delete { table, key });
        }
        note_alive(&store);
        let _ = self.store.set(store);
    }
}

/// Accepts MQTT clients on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    fe: Arc<Frontend>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let admit = |stream: TcpStream, peer: SocketAddr| {
        let fe = fe.clone();
        Some(match fe.tls.clone() {
            None => Served::Plain(start(Plain(stream), peer, fe, None, false)),
            Some(tls) => Served::Secure(Box::pin(async move {
                match tls.accept(stream).await {
                    Ok((stream, cert)) => start(Plain(stream), peer, fe, cert, tls.map).await,
                    Err(e) => {
                        tracing::info!(peer = %peer, error = %e, "MQTT TLS handshake failed");
                        fe.bus.stats().connections.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            })),
        })
    };
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
        cert: Option<junction_auth::CertIdentity>,
        map_cert: bool,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        start(io, peer, self.clone(), cert, map_cert)
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
