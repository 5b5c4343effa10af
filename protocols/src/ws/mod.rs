//! WebSocket: NATS and MQTT for browsers, on one listener.
//!
//! WebSocket is a transport under the existing frontends, not a third protocol: the handshake
//! ([`handshake`]) picks the frontend per connection (MQTT for the `mqtt` subprotocol or the
//! `/mqtt` path, NATS otherwise), and from then on the connection runs the same driver and the
//! same parser as over TCP, with [`frame`] turning frames into bytes and back.
//!
//! The framing is in-tree rather than tokio-tungstenite: tungstenite has no permessage-deflate,
//! and owning the frames lets a frame's payload go straight into the protocol's read buffer and
//! each coalesced write go out as one frame.

pub mod frame;
pub mod handshake;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use junction_core::Stats;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use handshake::{Kind, Origin};

use crate::listener::Guard;
use crate::{mqtt, nats};
use stream::Ws;

/// Settings of the WebSocket listener, with nats-server's defaults where it has them.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest message (after inflating) a client may send.
    pub max_message: usize,
    /// Accept permessage-deflate when offered.
    pub compression: bool,
    /// Refuse browser pages from another origin than the listener's.
    pub same_origin: bool,
    /// Refuse browser pages from origins not listed (when not empty).
    pub allowed_origins: Vec<Origin>,
    /// How long the TLS and WebSocket handshakes may take together.
    pub handshake_timeout: Duration,
}

/// Default largest message: a maximum NATS payload with room for its op line, several times over.
pub const DEFAULT_MAX_MESSAGE: usize = 8 * 1024 * 1024;

impl Default for Options {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            compression: false,
            same_origin: false,
            allowed_origins: Vec::new(),
            handshake_timeout: Duration::from_secs(2),
        }
    }
}

/// Everything the WebSocket listener needs: the frontends it hands connections to.
pub struct WsGateway {
    pub nats: Arc<nats::NatsServer>,
    /// `None`: MQTT is off, and MQTT handshakes get 404.
    pub mqtt: Option<Arc<mqtt::MqttServer>>,
    /// Present for wss.
    pub tls: Option<crate::tls::Tls>,
    /// Settings; a reload replaces them for handshakes from then on.
    pub opts: crate::Current<Options>,
}

impl WsGateway {
    fn policy(&self) -> handshake::Policy {
        let opts = self.opts.get();
        handshake::Policy {
            tls: self.tls.is_some(),
            same_origin: opts.same_origin,
            allowed_origins: opts.allowed_origins.clone(),
            compression: opts.compression,
            mqtt: self.mqtt.is_some(),
        }
    }
}

/// Accepts WebSocket clients on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    fe: Arc<WsGateway>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let bus = fe.nats.bus.clone();
    let admit = |stream: TcpStream, peer: SocketAddr, guard: Guard| {
        Some(accept(stream, peer, fe.clone(), shutdown.clone(), guard))
    };
    crate::listener::accept_loop(
        listener,
        &bus,
        "websocket",
        admit,
        shutdown.clone(),
        tracker,
    )
    .await;
}

/// One accepted socket: TLS when configured, then the WebSocket handshake, then the frontend.
async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    fe: Arc<WsGateway>,
    shutdown: CancellationToken,
    guard: Guard,
) {
    let deadline = tokio::time::Instant::now() + fe.opts.get().handshake_timeout;
    match fe.tls.as_ref().map(crate::tls::Tls::acceptor) {
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let cert = crate::tls::client_cert(&tls);
                upgrade(tls, peer, fe, shutdown, deadline, cert, guard).await
            }
            Ok(Err(e)) => {
                tracing::error!("{peer} - websocket TLS handshake error: {e}");
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "websocket TLS handshake timed out");
            }
        },
        None => upgrade(stream, peer, fe, shutdown, deadline, None, guard).await,
    }
}

/// Reads the upgrade request, answers it, and runs the connection in the frontend it chose.
async fn upgrade<S>(
    mut io: S,
    peer: SocketAddr,
    fe: Arc<WsGateway>,
    shutdown: CancellationToken,
    deadline: tokio::time::Instant,
    cert: Option<junction_auth::CertIdentity>,
    guard: Guard,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let policy = fe.policy();
    let mut buf = BytesMut::with_capacity(1024);
    let accepted = loop {
        match handshake::negotiate(&buf, &policy) {
            Ok(Some(done)) => break Some(done),
            Ok(None) => {}
            Err(rejected) => {
                tracing::debug!(peer = %peer, status = rejected.status, reason = %rejected.reason, "websocket handshake refused");
                let _ = tokio::time::timeout_at(deadline, io.write_all(&rejected.response())).await;
                let _ = tokio::time::timeout_at(deadline, io.shutdown()).await;
                break None;
            }
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break None,
        }
    };
    let Some((accepted, used)) = accepted else {
        return;
    };
    let open = Stats::get(&fe.nats.bus.stats().connections) as usize;
    let max = fe.nats.opts.get().max_connections;
    let refuse = if shutdown.is_cancelled() {
        Some(handshake_refusal(503, "server shutting down"))
    } else if max > 0 && open > max {
        tracing::warn!(peer = %peer, "maximum connections exceeded");
        Some(handshake_refusal(503, "maximum connections exceeded"))
    } else {
        None
    };
    if let Some(response) = refuse {
        let _ = tokio::time::timeout_at(deadline, io.write_all(&response)).await;
        return;
    }
    match tokio::time::timeout_at(deadline, io.write_all(&accepted.response)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let early = buf.split_off(used);
    let peer = accepted
        .forwarded_for
        .map_or(peer, |ip| SocketAddr::new(ip, peer.port()));
    let ws = Ws::new(io, early, fe.opts.get().max_message, accepted.compress);
    let map_cert = fe.tls.as_ref().is_some_and(|t| t.map);
    match (accepted.kind, &fe.mqtt) {
        (Kind::Mqtt, Some(mqtt)) => {
            let guard = guard.also(&mqtt.open);
            mqtt.start(ws, peer, cert, map_cert, guard).await
        }
        _ => fe.nats.start(ws, peer, cert, map_cert, guard).await,
    }
}

fn handshake_refusal(status: u16, reason: &str) -> Vec<u8> {
    handshake::Rejected {
        status,
        reason: reason.to_string(),
    }
    .response()
}
