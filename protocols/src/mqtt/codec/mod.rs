//! The MQTT codec (protocol levels 4 = 3.1.1 and 5 = 5.0) and the mapping of MQTT topics onto
//! NATS subjects. Pure: bytes in, packets out; packets in, bytes out. No sockets, no sessions.
//!
//! Layout:
//! - [`packet`]: the control packets ([`Packet`] and one struct per packet family), [`Utf8Bytes`].
//! - [`properties`]: the MQTT 5.0 properties, one struct per packet family, so a packet can only
//!   carry the properties the specification allows in it.
//! - [`decode`]: [`Decoder`], resumable over a `BytesMut`: `Ok(None)` means "need more bytes";
//!   the maximum packet size is checked from the fixed header before the body is buffered;
//!   payloads, binary data and strings are `Bytes` slices of the read buffer, never copied.
//!   Every rule of the specifications a receiver can check on one packet is checked; each
//!   [`DecodeError`] names the MQTT 5.0 reason code to send back ([`DecodeError::reason_code`]).
//! - [`mod@encode`]: [`encode()`] and [`encoded_len`], for every packet type.
//! - [`error`]: [`DecodeError`] (with the reason code each one calls for) and [`EncodeError`].
//! - `wire`: the primitives the three above share (field readers and writers, variable byte
//!   integers, the checks of strings), so none of them imports another.
//! - [`reason`]: the MQTT 5.0 reason codes and which packet may carry which.
//! - [`topic`]: topic name and filter rules, and the topic <-> subject mapping nats-server uses.
//!
//! What stays with the session (not here): topic alias resolution, receive maximum and packet
//! identifier bookkeeping, keep alive, and checking payloads against the payload format indicator.

pub mod decode;
pub mod encode;
pub mod error;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;
mod wire;

#[cfg(test)]
mod tests;

pub use decode::Decoder;
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResp, Publish, QoS, RetainHandling, SubAck,
    Subscribe, SubscribeFilter, UnsubAck, Unsubscribe, Utf8Bytes, Version, Will,
};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperty, WillProperties,
};

/// The largest packet the wire format can describe: 1 byte of type and flags, 4 bytes of
/// remaining length, and the largest remaining length (268,435,455 bytes).
pub const MAX_PACKET_SIZE: usize = 1 + 4 + MAX_REMAINING_LENGTH;

/// The largest value a variable byte integer can hold (remaining length, property length,
/// subscription identifier).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;
