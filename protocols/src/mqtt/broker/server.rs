//! What every MQTT connection shares ([`MqttServer`]: the bus, the sessions by client id, the
//! retained messages, the store), and the listener: accepting connections, and the sweep that
//! enforces keep alive and expires sessions once a second.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use junction_auth::Authenticator;
use junction_core::sync::Lock;
use junction_core::{Account, Bus, DeliveryFacts, FlushBatch, MatchCache, Message};
use junction_store::{Op, Store, Table};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bridge;
use super::connection;
use super::delivery::SessionCell;
use super::durable;
use super::retained::RetainedIndex;
use super::session::{Limits, Now};
use crate::listener::Served;
use crate::mqtt::codec::topic;
use crate::mqtt::{PublishProperties, Will};
use crate::transport::{Plain, Transport};

/// Settings of the MQTT frontend.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest packet accepted from a client.
    pub max_packet_size: usize,
    /// Bytes that may wait for one client before its QoS 0 traffic is dropped.
    pub max_pending: usize,
    /// QoS 1/2 messages kept for a client that is away (or whose window is full).
    pub max_queued: usize,
    /// What happens to a QoS 1/2 message for a session whose queue is full.
    pub queue_full: QueueFull,
    /// Highest QoS a NATS publication is delivered with (it has no QoS of its own).
    pub nats_qos: u8,
    /// How long one write may stall.
    pub write_deadline: Duration,
    /// Longest keep alive a client may ask for (0 or more is replaced by this, and 5.0 clients
    /// are told so with Server Keep Alive); `None`: the client's choice stands.
    pub max_keep_alive: Option<u16>,
    /// How long a client may take to send CONNECT (nats-server's auth timeout).
    pub connect_timeout: Duration,
    /// Connections the MQTT listener takes at once (0: no limit); past it a connection gets
    /// CONNACK "server unavailable" (3.1.1) or 0x97 "quota exceeded" (5.0).
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024 + 4096,
            max_pending: 64 * 1024 * 1024,
            max_queued: 10_000,
            queue_full: QueueFull::DropOldest,
            nats_qos: 1,
            write_deadline: Duration::from_secs(10),
            max_keep_alive: None,
            connect_timeout: Duration::from_secs(2),
            max_connections: 0,
        }
    }
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

/// Sessions are found by account and client id.
pub(crate) type SessionKey = (String, Arc<str>);

/// What every MQTT connection shares.
pub struct MqttServer {
    /// The bus.
    pub bus: Arc<Bus>,
    /// Who connections are.
    pub auth: Arc<dyn Authenticator>,
    /// Settings; a reload replaces them for connections and sessions made afterwards.
    pub opts: crate::Current<Options>,
    /// `nats_qos` of the settings in force, read on every NATS-to-MQTT delivery.
    pub(crate) nats_qos: std::sync::atomic::AtomicU8,
    pub(crate) sessions: Mutex<HashMap<SessionKey, Arc<SessionCell>>>,
    pub(crate) retained: RetainedIndex,
    started: Instant,
    /// Where persistent sessions, their messages and retained messages are kept durably
    /// (`None`: in memory only).
    store: OnceLock<Arc<Store>>,
    /// The server will have a store (known before it starts, so restored sessions are durable).
    pub(crate) has_store: std::sync::atomic::AtomicBool,
    /// Records of no session found by `restore`, removed once the store runs.
    pub(crate) orphans: Mutex<Vec<(Table, Vec<u8>)>>,
    /// TLS on the MQTT listener (`mqtt { tls { ... } }`).
    pub tls: Option<crate::tls::Tls>,
    /// Connections open on this frontend (for `max_connections`).
    pub(crate) open: crate::listener::Count,
}

impl MqttServer {
    /// A frontend for `bus`.
    pub fn new(bus: Arc<Bus>, auth: Arc<dyn Authenticator>, opts: Options) -> Self {
        Self {
            bus,
            auth,
            nats_qos: std::sync::atomic::AtomicU8::new(opts.nats_qos),
            opts: crate::Current::new(opts),
            sessions: Mutex::new(HashMap::new()),
            retained: RetainedIndex::default(),
            started: Instant::now(),
            store: OnceLock::new(),
            has_store: std::sync::atomic::AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            tls: None,
            open: crate::listener::Count::default(),
        }
    }

    /// The same frontend with TLS on its listener.
    /// A configuration reload: connections and sessions made from now on use `opts` (those
    /// open keep theirs); `nats_qos` applies to every delivery at once.
    pub fn reconfigure(&self, opts: Options) {
        self.nats_qos.store(opts.nats_qos, Ordering::Relaxed);
        self.opts.set(opts);
    }

    /// Sessions held (persistent ones included), how many have a client connected, and the
    /// QoS 1/2 messages queued in them, for monitoring.
    pub fn session_counts(&self) -> (usize, usize, usize) {
        let cells: Vec<Arc<SessionCell>> = self.sessions.locked().values().cloned().collect();
        let (mut connected, mut queued) = (0, 0);
        for cell in &cells {
            let st = cell.state.locked();
            connected += usize::from(st.link.is_some());
            queued += st.session.queued();
        }
        (cells.len(), connected, queued)
    }

    pub fn with_tls(mut self, tls: crate::tls::Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The durable store, when there is one.
    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.get()
    }

    /// Milliseconds since the server started (the sweep's clock).
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The limits every session keeps to.
    pub(crate) fn limits(&self) -> Limits {
        let opts = self.opts.get();
        Limits {
            max_queued: opts.max_queued,
            refuse_when_full: opts.queue_full == QueueFull::Refuse,
        }
    }

    /// Whether sessions are kept durably.
    pub(crate) fn durable(&self) -> bool {
        self.has_store.load(Ordering::Relaxed) || self.store.get().is_some()
    }

    /// Keeps (or clears, for an empty payload) the retained message of `msg`'s subject, in
    /// memory and in the store (in the group open in `batch`, if any).
    pub(crate) fn retain(&self, account: &str, msg: &Message, qos: u8, batch: &mut FlushBatch) {
        if let Some(store) = self.store() {
            let key = durable::retained_key(account, &msg.subject);
            store.submit_in(
                &mut batch.group,
                if msg.payload.is_empty() {
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
                },
            );
        }
        self.retained.set(account, msg, qos);
    }

    /// From now on, keeps persistent sessions, their messages and retained messages in `store`.
    pub fn use_store(&self, store: Arc<Store>) {
        for (table, key) in std::mem::take(&mut *self.orphans.locked()) {
            store.submit(Op::Delete { table, key });
        }
        note_alive(&store);
        let _ = self.store.set(store);
    }

    /// Serves one MQTT connection that arrived over `io` (a WebSocket, for instance).
    pub(crate) fn start<T: Transport>(
        self: &Arc<Self>,
        io: T,
        peer: SocketAddr,
        cert: Option<junction_auth::CertIdentity>,
        map_cert: bool,
        guard: crate::listener::Guard,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        connection::start(io, peer, self.clone(), cert, map_cert, guard)
    }
}

/// Publishes a will message on behalf of a session of `account`.
pub(crate) fn publish_will(
    server: &MqttServer,
    account: &Account,
    origin: junction_core::ConnId,
    will: Box<Will>,
) {
    let Ok(subject) = topic::topic_to_subject(will.topic.as_bytes()) else {
        return;
    };
    let props = PublishProperties {
        payload_format_indicator: will.properties.payload_format_indicator,
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
        headers: None,
        payload: will.payload.clone(),
        facts: DeliveryFacts {
            origin,
            qos: Some(will.qos as u8),
            retain: will.retain,
            expiry_secs: will.properties.message_expiry_interval,
        },
        extra: bridge::extra_of(&props, false),
    };
    let mut batch = FlushBatch::default();
    if will.retain {
        server.retain(account.name(), &msg, will.qos as u8, &mut batch);
    }
    account.publish(&mut MatchCache::new(false), &msg, &mut batch);
    batch.wake_all();
}

/// The key of the time the server was last alive, in [`durable::META`].
pub(crate) const ALIVE_KEY: &[u8] = b"alive";

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
fn expire_sessions(server: &MqttServer) {
    if let Some(store) = server.store() {
        note_alive(store);
    }
    let now = Now::current();
    let cells: Vec<Arc<SessionCell>> = server.sessions.locked().values().cloned().collect();
    for cell in &cells {
        let due = {
            let mut st = cell.state.locked();
            st.with_io(server, None, |s, io| s.due_will(io))
        };
        if let Some(will) = due {
            publish_will(server, &cell.account, cell.conn_id, will);
        }
    }
    let expired: Vec<Arc<SessionCell>> = {
        let mut sessions = server.sessions.locked();
        let keys: Vec<_> = sessions
            .iter()
            .filter(|(_, s)| s.expired(now.at))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| sessions.remove(k)).collect()
    };
    for cell in expired {
        if let Some(will) = cell.end() {
            publish_will(server, &cell.account, cell.conn_id, will);
        }
    }
}

/// Accepts MQTT clients on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    server: Arc<MqttServer>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let admit = |stream: TcpStream, peer: SocketAddr, guard: crate::listener::Guard| {
        let server = server.clone();
        let guard = guard.also(&server.open);
        Some(match server.tls.clone() {
            None => Served::Plain(connection::start(
                Plain(stream),
                peer,
                server,
                None,
                false,
                guard,
            )),
            Some(tls) => Served::Secure(Box::pin(async move {
                match tls.accept(stream).await {
                    Ok((stream, cert)) => {
                        connection::start(Plain(stream), peer, server, cert, tls.map, guard).await
                    }
                    Err(e) => {
                        tracing::error!("{peer} - MQTT TLS handshake error: {e}");
                        drop(guard);
                    }
                }
            })),
        })
    };
    crate::listener::accept_loop(listener, &server.bus, "mqtt", admit, shutdown, tracker).await;
}

/// Once a second until `shutdown`: enforces keep alive on every MQTT connection (TCP or
/// WebSocket) and removes sessions whose expiry passed.
pub async fn sweep(server: Arc<MqttServer>, shutdown: CancellationToken) {
    crate::listener::sweep_loop(
        &server.bus,
        "mqtt",
        || Duration::from_secs(1),
        || expire_sessions(&server),
        shutdown,
    )
    .await;
}
