//! MQTT 3.1.1 and 5.0: the codec (pure: bytes in, packets out) and the broker (sessions, QoS
//! flows, retained and will messages, on the shared bus).
//!
//! - [`codec`]: packets, properties, the decoder and encoder, reason codes, topic rules and the
//!   topic <-> subject mapping. No sockets, no sessions.
//! - [`broker`]: the MQTT frontend on the bus.

pub mod broker;
pub mod codec;

pub use broker::{durable, MqttServer};
pub use codec::*;
