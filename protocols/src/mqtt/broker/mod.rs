//! The MQTT frontend: sessions, QoS flows, retained and will messages, on the shared bus.
//!
//! Layout (one concern a file):
//! - [`server`]: [`MqttServer`], what every connection shares (the bus, the sessions by client
//!   id, the retained messages, the store), the listener and the once-a-second sweep.
//! - `link`: one network connection as others see it (its output, monitoring facts, the
//!   deadlines the sweep enforces).
//! - `connection`, `connect` and `subscribe`: one connection's own task: CONNECT/AUTH and
//!   admission; publishing and acknowledgements; SUBSCRIBE/UNSUBSCRIBE; the end of the
//!   connection.
//! - `session`: the MQTT session as a state machine with no locks, sockets, store or clock
//!   inside (inputs in, [`session::Io`] effects and replies out), unit-tested on a simulated
//!   clock in `session_tests.rs`.
//! - `delivery`: a session on the bus: its cell (the state machine behind its lock, its core
//!   subscriptions), the sink that offers it messages, the I/O it runs with.
//! - `retained`: retained messages in a topic index.
//! - `bridge`: MQTT on the NATS bus: properties travelling typed and rendered as headers for
//!   NATS, and MQTT 5 request/response over NATS request/reply.
//! - [`durable`]: how MQTT state is laid out in the store (its tables, keys and records);
//!   `restore`: reading it back at startup.
//!
//! Topics map onto subjects as nats-server maps them (see [`crate::mqtt::codec::topic`]), so
//! NATS clients meet MQTT clients on the same subjects.

mod bridge;
mod connect;
mod connection;
mod delivery;
pub mod durable;
mod link;
mod restore;
mod retained;
pub(crate) mod server;
pub(crate) mod session;
mod subscribe;

pub use restore::Restored;
pub use server::{serve, sweep, MqttServer, Options, QueueFull};
