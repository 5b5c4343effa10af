//! The one message model every frontend translates into and out of.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;

/// Identifies one client connection, whatever its protocol. Unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One message on the bus.
///
/// `subject` is the canonical NATS-style subject (`a.b.c`); MQTT topics are mapped onto it at the
/// edge. Every field is a `Bytes`, so fan-out shares the data and never copies it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Canonical subject, NATS style.
    pub subject: Bytes,
    /// Reply subject (NATS reply-to; MQTT 5 response topic).
    pub reply: Option<Bytes>,
    /// The NATS header block (`NATS/1.0\r\n...\r\n\r\n`), when the message has headers.
    pub headers: Option<Bytes>,
    /// The payload, shared by every delivery.
    pub payload: Bytes,
    /// Facts about the publication that some protocols act on.
    pub facts: DeliveryFacts,
    /// What the publishing protocol says about the message beyond NATS headers, kept typed
    /// (MQTT 5 properties): a receiver of the same protocol reads it as it is, and a NATS
    /// receiver gets it rendered as headers ([`Message::header_block`]), once, only when one
    /// receives it.
    pub extra: Option<Arc<dyn Extra>>,
}

/// Protocol facts that travel with a message typed (see [`Message::extra`]).
pub trait Extra: Send + Sync + std::fmt::Debug + 'static {
    /// The NATS header block that says the same (`None`: nothing to say), rendered on first use
    /// and kept.
    fn headers(&self) -> Option<&Bytes>;
    /// For the protocol that made it, to read it back.
    fn as_any(&self) -> &dyn Any;
}

/// Delivery facts: what a protocol needs to know about a publication beyond its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryFacts {
    /// The connection that published the message (for NATS `echo: false` and MQTT no-local).
    pub origin: ConnId,
    /// Quality of service the publisher asked for; `None` where the publishing protocol has no
    /// QoS (NATS), so each receiving protocol applies its own rule (MQTT: the subscription's QoS,
    /// capped by configuration).
    pub qos: Option<u8>,
    /// Whether the publisher asked the broker to retain the message (MQTT).
    pub retain: bool,
    /// Seconds the message stays valid (MQTT 5 message expiry), when set.
    pub expiry_secs: Option<u32>,
}

impl DeliveryFacts {
    /// Facts of a plain publication from `origin`: no QoS, not retained, no expiry.
    pub fn from_origin(origin: ConnId) -> Self {
        Self {
            origin,
            qos: None,
            retain: false,
            expiry_secs: None,
        }
    }
}

impl Message {
    /// A message with no headers, no protocol extras and the facts of a plain publication.
    pub fn new(subject: Bytes, reply: Option<Bytes>, payload: Bytes, origin: ConnId) -> Self {
        Message {
            subject,
            reply,
            headers: None,
            payload,
            facts: DeliveryFacts::from_origin(origin),
            extra: None,
        }
    }

    /// The NATS header block to deliver: the message's own headers, or its protocol extras
    /// rendered as headers.
    pub fn header_block(&self) -> Option<&Bytes> {
        self.headers
            .as_ref()
            .or_else(|| self.extra.as_ref().and_then(|e| e.headers()))
    }

    /// Total size of headers and payload, as NATS counts a message's bytes.
    pub fn size(&self) -> usize {
        self.payload.len() + self.header_block().map_or(0, Bytes::len)
    }
}
