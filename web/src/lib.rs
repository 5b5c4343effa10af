//! junction-web: the HTTP monitoring listener (axum).
//!
//! Layout: [`serve`] runs the listener; the handlers answer `/healthz`, `/varz` and `/connz` with
//! JSON in nats-server's shape, built from the bus's counters, its connection registry and a
//! [`ServerInfo`] the binary fills in.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use junction_core::{Bus, ConnSnapshot, Stats};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
}

struct Monitor {
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
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/varz", get(varz))
        .route("/connz", get(connz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn root() -> Json<Value> {
    Json(json!({ "endpoints": ["/healthz", "/varz", "/connz", "/metrics"] }))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// A duration the way nats-server's monitoring prints it: `1d2h3m4s`, `5m0s`, `12s`.
fn format_uptime(d: Duration) -> String {
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
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
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
    let s = m.bus.stats();
    let i = &m.info;
    Json(json!({
        "server_id": i.server_id,
        "server_name": i.server_name,
        "version": i.version,
        "junction_version": i.junction_version,
        "proto": 1,
        "host": i.host,
        "port": i.port,
        "http_port": i.http_port,
        "max_connections": i.max_connections,
        "max_payload": i.max_payload,
        "max_control_line": i.max_control_line,
        "max_pending": i.max_pending,
        "ping_interval": i.ping_interval.as_nanos() as u64,
        "ping_max": i.ping_max,
        "write_deadline": i.write_deadline.as_nanos() as u64,
        "start": rfc3339(m.started_wall),
        "now": rfc3339(SystemTime::now()),
        "uptime": format_uptime(m.started.elapsed()),
        "mem": rss_bytes(),
        "connections": Stats::get(&s.connections),
        "total_connections": Stats::get(&s.total_connections),
        "subscriptions": m.bus.subscription_count(),
        "in_msgs": Stats::get(&s.in_msgs),
        "out_msgs": Stats::get(&s.out_msgs),
        "in_bytes": Stats::get(&s.in_bytes),
        "out_bytes": Stats::get(&s.out_bytes),
        "slow_consumers": Stats::get(&s.slow_consumers),
        "mqtt_queue_dropped": Stats::get(&s.queue_dropped),
        "auth_failures": Stats::get(&s.auth_failures),
        "store_records_skipped": Stats::get(&s.store_records_skipped),
    }))
}

/// The server's counters in the Prometheus text format.
async fn metrics(State(m): State<Arc<Monitor>>) -> impl axum::response::IntoResponse {
    let s = m.bus.stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "junction_connections",
        "gauge",
        "Client connections open now.",
        Stats::get(&s.connections),
    );
    metric(
        "junction_connections_total",
        "counter",
        "Client connections accepted since start.",
        Stats::get(&s.total_connections),
    );
    metric(
        "junction_subscriptions",
        "gauge",
        "Subscriptions in every account.",
        m.bus.subscription_count() as u64,
    );
    metric(
        "junction_messages_received_total",
        "counter",
        "Messages received from clients.",
        Stats::get(&s.in_msgs),
    );
    metric(
        "junction_messages_sent_total",
        "counter",
        "Messages delivered to clients.",
        Stats::get(&s.out_msgs),
    );
    metric(
        "junction_received_bytes_total",
        "counter",
        "Message bytes received from clients.",
        Stats::get(&s.in_bytes),
    );
    metric(
        "junction_sent_bytes_total",
        "counter",
        "Message bytes delivered to clients.",
        Stats::get(&s.out_bytes),
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
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

/// One query parameter's value.
fn param<'a>(query: &'a Option<String>, key: &str) -> Option<&'a str> {
    query
        .as_deref()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn conn_json(c: &ConnSnapshot, now: SystemTime) -> Value {
    let uptime = c
        .stop
        .unwrap_or(now)
        .duration_since(c.start)
        .unwrap_or_default();
    let mut v = json!({
        "cid": c.cid.0,
        "kind": "Client",
        "type": c.kind,
        "ip": c.ip,
        "port": c.port,
        "start": rfc3339(c.start),
        "uptime": format_uptime(uptime),
        "pending_bytes": c.pending_bytes,
        "in_msgs": c.in_msgs,
        "out_msgs": c.out_msgs,
        "in_bytes": c.in_bytes,
        "out_bytes": c.out_bytes,
        "subscriptions": c.subscriptions,
        "name": c.name,
        "lang": c.lang,
        "version": c.version,
        "account": c.account,
    });
    if c.kind == "mqtt" {
        v["mqtt_dropped_msgs"] = json!(c.dropped_msgs);
    }
    if let (Some(stop), Some(reason)) = (c.stop, c.reason) {
        v["stop"] = json!(rfc3339(stop));
        v["reason"] = json!(reason);
    }
    v
}

/// `/connz?state=open|closed|all&offset=N&limit=N`: connections, as nats-server lists them.
async fn connz(State(m): State<Arc<Monitor>>, RawQuery(query): RawQuery) -> Json<Value> {
    let registry = m.bus.conns();
    let conns = match param(&query, "state").unwrap_or("open") {
        "closed" => registry.closed_snapshots(),
        "all" | "any" => {
            let mut all = registry.open_snapshots();
            all.extend(registry.closed_snapshots());
            all
        }
        _ => registry.open_snapshots(),
    };
    let offset: usize = param(&query, "offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = param(&query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let now = SystemTime::now();
    let page: Vec<Value> = conns
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| conn_json(c, now))
        .collect();
    Json(json!({
        "server_id": m.info.server_id,
        "now": rfc3339(now),
        "num_connections": page.len(),
        "total": conns.len(),
        "offset": offset,
        "limit": limit,
        "connections": page,
    }))
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
