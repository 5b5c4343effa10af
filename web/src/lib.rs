//! junction-web: the HTTP monitoring listener (axum).
//!
//! Layout: [`serve`] runs the listener; the handlers answer `/healthz`, `/varz` and `/connz` with
//! JSON in nats-server's shape, built from the bus's counters, its connection registry and a
//! [`ServerInfo`] the binary fills in.

#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use junction_core::{Bus, Stats};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod dashboard;
mod endpoints;
mod system;

/// Static facts about the server, shown in `/varz`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The server's unique id.
    pub server_id: String,
    /// The server's name.
    pub server_name: String,
    /// The nats-server version whose protocol the server speaks (what clients and tools read).
    pub version: String,
    /// Junction's own version.
    pub junction_version: String,
    /// Host the client listener is bound to.
    pub host: String,
    /// NATS client port.
    pub port: u16,
    /// HTTP monitoring port.
    pub http_port: u16,
    /// Largest accepted payload.
    pub max_payload: usize,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Longest control line.
    pub max_control_line: usize,
    /// Bytes that may wait for a client before it is a slow consumer.
    pub max_pending: usize,
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Unanswered pings before a client is stale.
    pub ping_max: u32,
    /// Write deadline.
    pub write_deadline: Duration,
    /// Clients must authenticate.
    pub auth_required: bool,
    /// TLS on the client listener, and whether client certificates are verified.
    pub tls_required: bool,
    pub tls_verify: bool,
    /// How long a client has to authenticate, and the TLS handshake timeout.
    pub auth_timeout: Duration,
    pub tls_timeout: Duration,
    /// Host the monitor listens on, and the HTTPS monitoring port (0: none).
    pub http_host: String,
    pub https_port: u16,
    /// The system account's name ("" without one).
    pub system_account: String,
    /// When the configuration was loaded.
    pub config_load_time: SystemTime,
    /// The `mqtt` and `websocket` blocks of `/varz` (`{}` when off).
    pub mqtt: Value,
    pub websocket: Value,
    /// Limits a configuration reload changes (shown as they are now).
    pub live: Arc<std::sync::RwLock<Live>>,
    /// More Prometheus text for `/metrics`, from parts of the server this crate does not know
    /// (the durable store, MQTT sessions).
    pub extra_metrics: ExtraMetrics,
}

/// The limits `/varz` shows that a reload can change.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub max_payload: usize,
    pub max_pending: usize,
    pub write_deadline: Duration,
    pub ping_interval: Duration,
    pub max_control_line: usize,
    pub max_connections: usize,
    pub ping_max: u32,
}

/// What the server adds to `/metrics` and the dashboard (see [`ServerInfo::extra_metrics`]).
pub trait Extra: Send + Sync {
    /// Prometheus text.
    fn prometheus(&self) -> String;
    /// A JSON object merged into the dashboard's data (`mqtt_sessions`, `websocket`).
    fn dashboard(&self) -> Value;
    /// The `jetstream` part of `/varz` (`{}` without JetStream).
    fn varz_jetstream(&self) -> Value {
        json!({})
    }
    /// The leaf node links that are up, as `/leafz` lists them.
    fn leafz(&self) -> Vec<Value> {
        Vec::new()
    }
    /// The `/jsz` document (`detail`: per account and stream); `None` without JetStream.
    fn jsz(
        &self,
        _detail: bool,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = Value> + Send>>> {
        None
    }
}

/// A source of more metrics (see [`ServerInfo::extra_metrics`]).
#[derive(Clone, Default)]
pub struct ExtraMetrics(pub Option<Arc<dyn Extra>>);

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}

pub(crate) struct Monitor {
    bus: Arc<Bus>,
    info: ServerInfo,
    started: Instant,
    started_wall: SystemTime,
}

/// A TCP listener whose connections are TLS (the `https_port` monitor).
pub struct TlsListener {
    tcp: TcpListener,
    /// The acceptor for the next connection (certificates may be reloaded meanwhile).
    acceptor: Box<dyn Fn() -> tokio_rustls::TlsAcceptor + Send + Sync>,
    timeout: std::time::Duration,
}

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        acceptor: Box<dyn Fn() -> tokio_rustls::TlsAcceptor + Send + Sync>,
        timeout: std::time::Duration,
    ) -> Self {
        TlsListener {
            tcp,
            acceptor,
            timeout,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a monitoring connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(self.timeout, (self.acceptor)().accept(stream)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "https monitor: TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = %addr, "https monitor: TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Starts the system account's request answers and advisories (see the `system` module);
/// `None` when there is no system account.
pub fn start_system(
    bus: Arc<Bus>,
    info: ServerInfo,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    system::start(
        Arc::new(Monitor {
            bus,
            info,
            started: Instant::now(),
            started_wall: SystemTime::now(),
        }),
        shutdown,
    )
}

/// Serves the monitoring endpoints on `listener` (TCP, or [`TlsListener`]) until `shutdown` is
/// cancelled.
pub async fn serve<L>(
    listener: L,
    bus: Arc<Bus>,
    info: ServerInfo,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let state = Arc::new(Monitor {
        bus,
        info,
        started: Instant::now(),
        started_wall: SystemTime::now(),
    });
    let app = Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard", get(dashboard::page))
        .route("/api/dashboard", get(dashboard::data))
        .route("/demo", get(dashboard::demo_redirect))
        .route("/demo/", get(dashboard::demo_page))
        .route("/demo/index.html", get(dashboard::demo_page))
        .route("/demo/demo.js", get(dashboard::demo_script))
        .route("/api/endpoints", get(root))
        .route("/healthz", get(endpoints::healthz))
        .route("/varz", get(varz))
        .route("/connz", get(endpoints::connz))
        .route("/subsz", get(endpoints::subsz))
        .route("/subscriptionsz", get(endpoints::subsz))
        .route("/accountz", get(endpoints::accountz))
        .route("/accstatz", get(endpoints::accstatz))
        .route("/routez", get(endpoints::routez))
        .route("/gatewayz", get(endpoints::gatewayz))
        .route("/leafz", get(endpoints::leafz))
        .route("/jsz", get(endpoints::jsz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn root() -> Json<Value> {
    Json(json!({ "endpoints": [
        "/varz", "/connz", "/subsz", "/accountz", "/accstatz", "/routez", "/gatewayz", "/leafz", "/jsz",
        "/healthz", "/metrics"
    ] }))
}

/// A duration the way nats-server's monitoring prints it: `1d2h3m4s`, `5m0s`, `12s`.
pub(crate) fn format_uptime(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, mins, s) = (
        secs / 86_400,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
    );
    if days > 0 {
        format!("{days}d{hours}h{mins}m{s}s")
    } else if hours > 0 {
        format!("{hours}h{mins}m{s}s")
    } else if mins > 0 {
        format!("{mins}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// RFC 3339 UTC time with nanoseconds, as Go's JSON shows a `time.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let c = junction_core::time::Civil::from_unix(d.as_secs() as i64);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        d.subsec_nanos()
    )
}

/// Resident memory of this process, from /proc (0 where that is not available).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

async fn varz(State(m): State<Arc<Monitor>>) -> Json<Value> {
    Json(varz_value(&m))
}

pub(crate) fn varz_value(m: &Monitor) -> Value {
    let s = m.bus.stats();
    let i = &m.info;
    let live = *i
        .live
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let secs = |d: Duration| d.as_secs_f64();
    json!({
        "server_id": i.server_id,
        "server_name": i.server_name,
        "version": i.version,
        "junction_version": i.junction_version,
        "proto": 1,
        "go": format!("junction {}", i.junction_version),
        "host": i.host,
        "port": i.port,
        "auth_required": i.auth_required,
        "tls_required": i.tls_required,
        "tls_verify": i.tls_verify,
        "max_connections": live.max_connections,
        "ping_interval": live.ping_interval.as_nanos() as u64,
        "ping_max": live.ping_max,
        "http_host": i.http_host,
        "http_port": i.http_port,
        "http_base_path": "",
        "https_port": i.https_port,
        "auth_timeout": secs(i.auth_timeout),
        "max_control_line": live.max_control_line,
        "max_payload": live.max_payload,
        "max_pending": live.max_pending,
        "cluster": {},
        "gateway": {},
        "leaf": {},
        "mqtt": i.mqtt,
        "websocket": i.websocket,
        "jetstream": i.extra_metrics.0.as_ref().map_or_else(|| json!({}), |e| e.varz_jetstream()),
        "tls_timeout": secs(i.tls_timeout),
        "write_deadline": live.write_deadline.as_nanos() as u64,
        "start": rfc3339(m.started_wall),
        "now": rfc3339(SystemTime::now()),
        "uptime": format_uptime(m.started.elapsed()),
        "mem": rss_bytes(),
        "cores": cores,
        "gomaxprocs": cores,
        "cpu": cpu_percent(m.started.elapsed()),
        "connections": Stats::get(&s.connections),
        "total_connections": Stats::get(&s.total_connections),
        "routes": 0,
        "remotes": 0,
        "leafnodes": i.extra_metrics.0.as_ref().map_or(0, |e| e.leafz().len()),
        "in_msgs": Stats::get(&s.in_msgs),
        "out_msgs": Stats::get(&s.out_msgs),
        "in_bytes": Stats::get(&s.in_bytes),
        "out_bytes": Stats::get(&s.out_bytes),
        "slow_consumers": Stats::get(&s.slow_consumers),
        "subscriptions": m.bus.subscription_count(),
        "http_req_stats": {},
        "config_load_time": rfc3339(i.config_load_time),
        "system_account": i.system_account,
        "slow_consumer_stats": {
            "clients": Stats::get(&s.slow_consumers),
            "routes": 0,
            "gateways": 0,
            "leafs": 0,
        },
        "mqtt_queue_dropped": Stats::get(&s.queue_dropped),
        "auth_failures": Stats::get(&s.auth_failures),
        "store_records_skipped": Stats::get(&s.store_records_skipped),
    })
}

/// CPU use since start, in percent of one core (what nats-server's `cpu` shows), from /proc.
fn cpu_percent(elapsed: Duration) -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        });
    match ticks {
        Some(t) if elapsed.as_secs_f64() > 0.0 => {
            // Clock ticks are 100 per second on Linux.
            let cpu = t as f64 / 100.0 / elapsed.as_secs_f64() * 100.0;
            (cpu * 100.0).round() / 100.0
        }
        _ => 0.0,
    }
}

/// The server's counters in the Prometheus text format: server-wide counters, connections by
/// protocol and account, messages and bytes by protocol, subscriptions by account, and what
/// [`ServerInfo::extra_metrics`] adds (store and MQTT sessions).
async fn metrics(State(m): State<Arc<Monitor>>) -> impl axum::response::IntoResponse {
    use std::fmt::Write as _;
    let s = m.bus.stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "junction_connections_total",
        "counter",
        "Client connections accepted since start.",
        Stats::get(&s.total_connections),
    );
    metric(
        "junction_slow_consumers_total",
        "counter",
        "Connections cut off for not keeping up.",
        Stats::get(&s.slow_consumers),
    );
    metric(
        "junction_mqtt_queue_dropped_total",
        "counter",
        "QoS 1/2 messages dropped from full MQTT session queues.",
        Stats::get(&s.queue_dropped),
    );
    metric(
        "junction_auth_failures_total",
        "counter",
        "Connection attempts whose credentials were refused.",
        Stats::get(&s.auth_failures),
    );
    metric(
        "junction_store_records_skipped_total",
        "counter",
        "Durable store records left out at startup because they could not be restored.",
        Stats::get(&s.store_records_skipped),
    );
    metric(
        "junction_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        m.started.elapsed().as_secs(),
    );
    metric(
        "junction_memory_bytes",
        "gauge",
        "Resident memory of the process.",
        rss_bytes(),
    );
    // Connections by protocol and account; messages and bytes by protocol (closed connections'
    // totals plus the open ones').
    let open = m.bus.conns().open_snapshots();
    let mut by_acc: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    let mut by_proto: std::collections::BTreeMap<&str, [u64; 4]> = Default::default();
    for (kind, t) in m.bus.conns().closed_totals() {
        by_proto.insert(kind, t);
    }
    for c in &open {
        *by_acc.entry((c.kind, c.account.as_str())).or_default() += 1;
        let t = by_proto.entry(c.kind).or_default();
        t[0] += c.in_msgs;
        t[1] += c.in_bytes;
        t[2] += c.out_msgs;
        t[3] += c.out_bytes;
    }
    let _ = writeln!(
        out,
        "# HELP junction_connections Client connections open now, by protocol and account.\n# TYPE junction_connections gauge"
    );
    for ((kind, acc), n) in &by_acc {
        let _ = writeln!(
            out,
            "junction_connections{{protocol=\"{kind}\",account=\"{}\"}} {n}",
            label(acc)
        );
    }
    if by_acc.is_empty() {
        let _ = writeln!(out, "junction_connections {}", Stats::get(&s.connections));
    }
    for (i, (name, help)) in [
        (
            "junction_messages_received_total",
            "Messages received from clients, by the protocol of the publishing client.",
        ),
        (
            "junction_received_bytes_total",
            "Message bytes received from clients, by protocol.",
        ),
        (
            "junction_messages_sent_total",
            "Messages delivered to clients, by the protocol of the receiving client.",
        ),
        (
            "junction_sent_bytes_total",
            "Message bytes delivered to clients, by protocol.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for proto in ["nats", "mqtt"] {
            let v = by_proto.get(proto).map_or(0, |t| t[i]);
            let _ = writeln!(out, "{name}{{protocol=\"{proto}\"}} {v}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP junction_subscriptions Subscriptions, by account.\n# TYPE junction_subscriptions gauge"
    );
    for acc in m.bus.accounts() {
        let _ = writeln!(
            out,
            "junction_subscriptions{{account=\"{}\"}} {}",
            label(acc.name()),
            acc.sublist().count()
        );
    }
    if let Some(extra) = &m.info.extra_metrics.0 {
        out.push_str(&extra.prometheus());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One query parameter's value.
pub(crate) fn param<'a>(query: &'a Option<String>, key: &str) -> Option<&'a str> {
    query
        .as_deref()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_like_nats_server() {
        assert_eq!(format_uptime(Duration::from_secs(0)), "0s");
        assert_eq!(format_uptime(Duration::from_secs(61)), "1m1s");
        assert_eq!(format_uptime(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_uptime(Duration::from_secs(90_061)), "1d1h1m1s");
    }

    #[test]
    fn query_parameters() {
        let q = Some("state=closed&limit=5".to_string());
        assert_eq!(param(&q, "state"), Some("closed"));
        assert_eq!(param(&q, "limit"), Some("5"));
        assert_eq!(param(&q, "offset"), None);
        assert_eq!(param(&None, "state"), None);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 5);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
    }
}
