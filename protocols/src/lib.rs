//! junction-protocols: the frontends. Bytes in, core operations out; deliveries in, bytes out.
//!
//! Layout:
//! - [`outbound`]: the bounded outbound buffer every connection has, whatever its protocol,
//!   with the gates that hold output until what it promises is on the disk.
//! - `driver`: the connection future every frontend shares (read, write coalesced, pause for
//!   draining subscribers, wait for an authentication done off the reactor, contain a panic);
//!   a frontend plugs in its protocol.
//! - `listener`: the accept loop every frontend shares (a guard counts each connection while it
//!   lives, spawn, keepalive sweep, shutdown).
//! - [`nats`]: the NATS client protocol: [`nats::parser`] (pure, resumable), [`nats::encode`]
//!   (MSG/HMSG and server replies), the connection task and the listener ([`nats::serve`]).
//! - [`mqtt`]: MQTT 3.1.1/5.0: [`mqtt::codec`] (pure, resumable) and [`mqtt::broker`] (the
//!   session state machine and the frontend around it).
//! - `transport`: what a connection runs over (TCP, TLS, WebSocket), as the driver sees it.
//! - [`ws`]: WebSocket framing and handshake, a transport under the NATS and MQTT frontends.
//! - [`tls`]: rustls acceptors for the listeners.
//! - `auth_pool`: costly authentication (bcrypt, signatures) off the reactor threads.
//!
//! Frontends never reach into each other: they meet only in `junction-core`.

mod auth_pool;
mod conn_stats;
mod driver;
pub mod leaf;
mod listener;
pub mod mqtt;
pub mod nats;
pub mod outbound;
mod recheck;
pub mod tls;
mod transport;
pub mod ws;

pub use listener::close_all;

/// Settings a configuration reload may replace: readers take the current ones as a whole
/// (connections keep what they started with; new ones get the new).
pub struct Current<T>(std::sync::RwLock<std::sync::Arc<T>>);

impl<T> Current<T> {
    pub fn new(value: T) -> Self {
        Current(std::sync::RwLock::new(std::sync::Arc::new(value)))
    }

    /// The settings in force now.
    pub fn get(&self) -> std::sync::Arc<T> {
        junction_core::sync::ReadWrite::read_locked(&self.0).clone()
    }

    /// Replaces them.
    pub fn set(&self, value: T) {
        *junction_core::sync::ReadWrite::write_locked(&self.0) = std::sync::Arc::new(value);
    }
}
pub use recheck::{recheck, Login};

/// Why a connection was closed; logged, and shown in monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed the connection.
    ClientClosed,
    /// The server is shutting down.
    ServerShutdown,
    /// Reading from the socket failed.
    ReadError,
    /// Writing to the socket failed.
    WriteError,
    /// Too many bytes waited for a client that does not read fast enough.
    SlowConsumerPendingBytes,
    /// A write did not complete within the write deadline.
    SlowConsumerWriteDeadline,
    /// The client did not answer the server's pings.
    StaleConnection,
    /// The client sent something that is not the protocol.
    ProtocolViolation,
    /// The client announced a payload over the limit.
    MaxPayloadExceeded,
    /// The client sent a control line over the limit.
    MaxControlLineExceeded,
    /// The client's credentials were refused.
    AuthenticationViolation,
    /// The client did not authenticate in time.
    AuthenticationTimeout,
    /// The client's credentials expired while it was connected.
    AuthenticationExpired,
    /// The TLS handshake failed.
    TlsHandshakeError,
    /// The server already had its maximum of connections.
    MaxConnectionsExceeded,
    /// The client sent an error to the server.
    ClientError,
    /// The client was silent for longer than its keep alive allows (MQTT).
    KeepAliveTimeout,
    /// Another connection took the client's session over (MQTT).
    SessionTakenOver,
    /// The server hit a bug while serving the connection (a caught panic).
    ServerError,
}

impl CloseReason {
    /// Whether the client was cut off for not keeping up.
    pub fn is_slow_consumer(self) -> bool {
        matches!(
            self,
            CloseReason::SlowConsumerPendingBytes | CloseReason::SlowConsumerWriteDeadline
        )
    }

    /// A short human-readable reason, as nats-server's monitoring words it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "Client Closed",
            CloseReason::ServerShutdown => "Server Shutdown",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::SlowConsumerPendingBytes => "Slow Consumer (Pending Bytes)",
            CloseReason::SlowConsumerWriteDeadline => "Slow Consumer (Write Deadline)",
            CloseReason::StaleConnection => "Stale Connection",
            CloseReason::ProtocolViolation => "Protocol Violation",
            CloseReason::MaxPayloadExceeded => "Maximum Message Payload Exceeded",
            CloseReason::MaxControlLineExceeded => "Maximum Control Line Exceeded",
            CloseReason::AuthenticationViolation => "Authentication Failure",
            CloseReason::AuthenticationTimeout => "Authentication Timeout",
            CloseReason::AuthenticationExpired => "Authentication Expired",
            CloseReason::TlsHandshakeError => "TLS Handshake Error",
            CloseReason::MaxConnectionsExceeded => "Maximum Connections Exceeded",
            CloseReason::ClientError => "Client Error",
            CloseReason::KeepAliveTimeout => "Keep Alive Timeout",
            CloseReason::SessionTakenOver => "Session Taken Over",
            CloseReason::ServerError => "Server Error",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
