//! The NATS client protocol, wire-compatible with nats-server 2.10.
//!
//! - [`parser`]: a pure, resumable parser of client operations.
//! - [`encode`]: MSG/HMSG and the server's fixed replies.
//! - `conn`: one connection, a hand-written future: reads and routes, writes coalesced output.
//! - [`serve`]: the listener's accept loop, the keepalive sweep and shutdown.

pub(crate) mod conn;
pub mod encode;
pub mod parser;

use std::sync::Arc;
use std::time::Duration;

use junction_auth::Authenticator;
use junction_core::{Bus, Stats};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener::{Guard, Served};
use crate::transport::Plain;

pub use parser::{Decoder, Frame, Limits, ParseError};

/// Settings of the NATS frontend, with nats-server's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's unique id, shown in INFO.
    pub server_id: String,
    /// The server's name, shown in INFO.
    pub server_name: String,
    /// The version shown in INFO.
    pub version: String,
    /// Host the listener is bound to, shown in INFO.
    pub host: String,
    /// Port the listener is bound to, shown in INFO.
    pub port: u16,
    /// Control line and payload limits.
    pub limits: Limits,
    /// Bytes that may wait for one client before it is cut off as a slow consumer.
    pub max_pending: usize,
    /// Most client connections at once (0: no limit).
    pub max_connections: usize,
    /// How often the server pings a client.
    pub ping_interval: Duration,
    /// Pings a client may leave unanswered before it is closed as stale.
    pub ping_max: u32,
    /// How long one write may stall before the client is cut off as a slow consumer.
    pub write_deadline: Duration,
    /// How long a client has to authenticate (when auth is required).
    pub auth_timeout: Duration,
}

/// Default bytes pending for one client before it is a slow consumer (64 MiB).
pub const DEFAULT_MAX_PENDING: usize = 64 * 1024 * 1024;
/// Default maximum connections, as nats-server has it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64 * 1024;

impl Default for Options {
    fn default() -> Self {
        Self {
            server_id: String::new(),
            server_name: String::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            host: "0.0.0.0".to_string(),
            port: 4222,
            limits: Limits::default(),
            max_pending: DEFAULT_MAX_PENDING,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(2),
        }
    }
}

/// Everything a NATS connection needs from the server.
pub struct NatsServer {
    /// The bus.
    pub bus: Arc<Bus>,
    /// Who connections are.
    pub auth: Arc<dyn Authenticator>,
    /// Settings.
    /// Settings; a reload replaces them for connections made afterwards.
    pub opts: crate::Current<Options>,
    /// TLS on the client listener (`tls { ... }`).
    pub tls: Option<crate::tls::Tls>,
}

/// The INFO a server sends on connect.
#[derive(Serialize)]
struct Info<'a> {
    server_id: &'a str,
    server_name: &'a str,
    version: &'a str,
    proto: u8,
    go: &'a str,
    host: &'a str,
    port: u16,
    headers: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    auth_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_verify: bool,
    max_payload: usize,
    client_id: u64,
    client_ip: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ldm: bool,
}

impl NatsServer {
    /// A frontend for `bus`.
    pub fn new(bus: Arc<Bus>, auth: Arc<dyn Authenticator>, opts: Options) -> Self {
        Self {
            bus,
            auth,
            opts: crate::Current::new(opts),
            tls: None,
        }
    }

    /// The same frontend with TLS on its listener.
    pub fn with_tls(mut self, tls: crate::tls::Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The `INFO {...}\r\n` line for one client.
    fn info(&self, client_id: u64, client_ip: &str, nonce: Option<&str>) -> Vec<u8> {
        self.info_with(
            client_id,
            client_ip,
            nonce,
            self.opts.get().limits.max_payload,
        )
    }

    /// The INFO line with a smaller `max_payload` (a user whose JWT limits payloads is told so
    /// after it connects, as nats-server does).
    fn info_with(
        &self,
        client_id: u64,
        client_ip: &str,
        nonce: Option<&str>,
        max_payload: usize,
    ) -> Vec<u8> {
        self.info_line(client_id, client_ip, nonce, max_payload, false)
    }

    /// The INFO line; `ldm`: the server is in lame duck mode.
    fn info_line(
        &self,
        client_id: u64,
        client_ip: &str,
        nonce: Option<&str>,
        max_payload: usize,
        ldm: bool,
    ) -> Vec<u8> {
        let opts = self.opts.get();
        let info = Info {
            server_id: &opts.server_id,
            server_name: &opts.server_name,
            version: &opts.version,
            proto: 1,
            go: "junction",
            host: &opts.host,
            port: opts.port,
            headers: true,
            // With no_auth_user, a client need not authenticate (nats-server leaves it out).
            auth_required: self.auth.auth_required() && self.auth.anonymous().is_none(),
            tls_required: self.tls.is_some(),
            tls_verify: self.tls.as_ref().is_some_and(|t| t.verify),
            max_payload,
            client_id,
            client_ip,
            nonce,
            ldm,
        };
        let mut line = b"INFO ".to_vec();
        line.extend_from_slice(&serde_json::to_vec(&info).expect("INFO serializes"));
        // nats-server puts a space between the JSON and the CRLF.
        line.extend_from_slice(b" \r\n");
        line
    }
}

/// Accepts NATS clients on `listener` until `shutdown` is cancelled. Each connection runs in its
/// own task on `tracker`, so shutdown can wait for them to drain.
pub async fn serve(
    listener: TcpListener,
    fe: Arc<NatsServer>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let admit = |stream: TcpStream, peer: std::net::SocketAddr, guard: Guard| {
        if fe.at_capacity() {
            tracker.spawn(refuse(stream, fe.clone(), peer.ip().to_string(), guard));
            return None;
        }
        Some(match &fe.tls {
            None => Served::Plain(conn::start(
                Plain(stream),
                peer,
                fe.clone(),
                conn::Hello::default(),
                guard,
            )),
            Some(tls) => Served::Secure(Box::pin(secure(
                stream,
                peer,
                fe.clone(),
                tls.clone(),
                guard,
            ))),
        })
    };
    crate::listener::accept_loop(listener, &fe.bus, "nats", admit, shutdown, tracker.clone()).await;
}

/// A client on the TLS listener: INFO in the clear (unless `handshake_first`), then the TLS
/// handshake, then the protocol over TLS.
async fn secure(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    fe: Arc<NatsServer>,
    tls: crate::tls::Tls,
    guard: Guard,
) {
    let nonce = fe.auth.nonce_required().then(conn::nonce);
    // handshake_first with a fallback delay: a client that says nothing by then expects INFO
    // first (an older client), one that starts its handshake gets TLS first.
    let tls_first = match (tls.handshake_first, tls.handshake_first_fallback) {
        (false, _) => false,
        (true, None) => true,
        (true, Some(delay)) => {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout(delay, stream.peek(&mut byte)).await,
                Ok(Ok(n)) if n > 0
            )
        }
    };
    if !tls_first {
        let id = fe.bus.next_conn_id();
        let info = fe.info(id.0, &peer.ip().to_string(), nonce.as_deref());
        if stream.write_all(&info).await.is_err() {
            return;
        }
    }
    match tls.accept(stream).await {
        Ok((stream, cert)) => {
            let hello = conn::Hello {
                sent: !tls_first,
                nonce,
                cert,
                map_cert: tls.map,
            };
            conn::start(Plain(stream), peer, fe, hello, guard).await
        }
        Err(e) => {
            tracing::error!("{peer} - TLS handshake error: {e}");
        }
    }
}

/// Pings every NATS connection (TCP or WebSocket) on the ping interval until `shutdown`: one
/// timer for all of them, instead of one in each.
pub async fn sweep(fe: Arc<NatsServer>, shutdown: CancellationToken) {
    let every = || fe.opts.get().ping_interval;
    crate::listener::sweep_loop(&fe.bus, "nats", every, || {}, shutdown).await;
}

impl NatsServer {
    /// Whether a connection just accepted (and counted) is one over the maximum.
    pub(crate) fn at_capacity(&self) -> bool {
        let open = Stats::get(&self.bus.stats().connections) as usize;
        let max = self.opts.get().max_connections;
        max > 0 && open > max
    }

    /// Serves one NATS connection that arrived over `io` (a WebSocket, for instance).
    pub(crate) fn start<T: crate::transport::Transport>(
        self: &Arc<Self>,
        io: T,
        peer: std::net::SocketAddr,
        cert: Option<junction_auth::CertIdentity>,
        map_cert: bool,
        guard: Guard,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let hello = conn::Hello {
            cert,
            map_cert,
            ..Default::default()
        };
        conn::start(io, peer, self.clone(), hello, guard)
    }
}

/// Tells a client over the connection limit, as nats-server does, and closes.
async fn refuse(mut stream: TcpStream, fe: Arc<NatsServer>, ip: String, _guard: Guard) {
    tracing::warn!(client_ip = %ip, "maximum connections exceeded");
    let mut out = fe.info(0, &ip, None);
    out.extend_from_slice(&encode::err("maximum connections exceeded"));
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&out)).await;
}
