//! How MQTT state is laid out in the durable store: keys, and the records' bytes.
//!
//! Keys are prefix-free: a session's key is its account and client id, each with a length, so
//! a session's messages (`session key + sequence`) and QoS 2 packet ids (`session key + id`)
//! are one prefix each, and removing a session is one prefix deletion per table.
//!
//! Messages and wills are kept as MQTT 5 packets encoded by the crate's own codec (fuzzed and
//! round-trip tested), so every property survives a restart without a second format.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use junction_core::{ConnId, DeliveryFacts, Message};
use junction_store::Table;
use serde::{Deserialize, Serialize};

use crate::mqtt::packet::{Connect, Packet, Publish, QoS, Utf8Bytes, Version, Will};
use crate::mqtt::{encode, Decoder, MAX_PACKET_SIZE};

/// Persistent MQTT sessions: subscriptions, expiry, pending will.
pub const SESSIONS: Table = Table::new("sessions");
/// QoS 1/2 messages queued for or in flight to persistent sessions.
pub const MESSAGES: Table = Table::new("messages");
/// Retained messages.
pub const RETAINED: Table = Table::new("retained");
/// QoS 2 packet identifiers received (PUBREC sent) and not yet released.
pub const INBOUND: Table = Table::new("inbound");
/// Facts about the server itself (when it was last alive).
pub const META: Table = Table::new("meta");

/// A session's key: account and client id, each with its length.
pub fn session_key(account: &str, client_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + account.len() + client_id.len());
    for part in [account, client_id] {
        k.extend_from_slice(&(part.len() as u16).to_be_bytes());
        k.extend_from_slice(part.as_bytes());
    }
    k
}

/// Splits a session key (or the start of a longer key) into account, client id and the rest.
pub fn split_session_key(key: &[u8]) -> Option<(String, String, &[u8])> {
    let mut rest = key;
    let mut parts = Vec::with_capacity(2);
    for _ in 0..2 {
        if rest.len() < 2 {
            return None;
        }
        let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let part = rest.get(2..2 + n)?;
        parts.push(std::str::from_utf8(part).ok()?.to_string());
        rest = &rest[2 + n..];
    }
    let client = parts.pop()?;
    let account = parts.pop()?;
    Some((account, client, rest))
}

/// A queued or in-flight message's key.
pub fn message_key(session: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(session.len() + 8);
    k.extend_from_slice(session);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A received QoS 2 packet id's key.
pub fn inbound_key(session: &[u8], packet_id: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(session.len() + 2);
    k.extend_from_slice(session);
    k.extend_from_slice(&packet_id.to_be_bytes());
    k
}

/// A retained message's key: account (with its length) and subject.
pub fn retained_key(account: &str, subject: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + account.len() + subject.len());
    k.extend_from_slice(&(account.len() as u16).to_be_bytes());
    k.extend_from_slice(account.as_bytes());
    k.extend_from_slice(subject);
    k
}

/// Splits a retained key into account and subject.
pub fn split_retained_key(key: &[u8]) -> Option<(String, Bytes)> {
    let n = u16::from_be_bytes([*key.first()?, *key.get(1)?]) as usize;
    let account = std::str::from_utf8(key.get(2..2 + n)?).ok()?.to_string();
    Some((account, Bytes::copy_from_slice(&key[2 + n..])))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A message queued for (or in flight to) a persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The QoS it is delivered with.
    pub qos: QoS,
    /// The packet id it was sent with (QoS 2; 0: not sent yet, or QoS 1, whose ids are not
    /// stored).
    pub packet_id: u16,
    /// QoS 2: PUBREC came and PUBREL was sent.
    pub released: bool,
    /// When it was queued (for message expiry).
    pub queued_at_ms: u64,
    /// The message (its QoS, packet id and DUP are the fields above).
    pub publish: Publish,
}

const RECORD_VERSION: u8 = 1;

/// A [`MessageRecord`]'s bytes, straight from the message it stores (its QoS is the
/// publish's; `packet_id` and `released` are the delivery state).
pub fn encode_message(
    publish: &Publish,
    packet_id: u16,
    released: bool,
    queued_ms: u64,
) -> Vec<u8> {
    // The stored packet carries neither QoS, packet id nor DUP: those are the record's.
    let bare = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        packet_id: 0,
        ..publish.clone()
    };
    let mut out = BytesMut::with_capacity(32 + publish.payload.len() + publish.topic.len());
    out.put_u8(RECORD_VERSION);
    out.put_u8(publish.qos as u8);
    out.put_u16(packet_id);
    out.put_u8(u8::from(released));
    out.put_u64(queued_ms);
    let _ = encode(&Packet::Publish(bare), Version::V5, &mut out);
    out.into()
}

impl MessageRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode_message(
            &self.publish,
            self.packet_id,
            self.released,
            self.queued_at_ms,
        )
    }

    pub fn decode(bytes: &[u8]) -> Option<MessageRecord> {
        let mut b = bytes;
        if b.len() < 13 || b.get_u8() != RECORD_VERSION {
            return None;
        }
        let qos = QoS::from_bits(b.get_u8())?;
        let packet_id = b.get_u16();
        let released = b.get_u8() != 0;
        let queued_at_ms = b.get_u64();
        let mut buf = BytesMut::from(b);
        let Ok(Some(Packet::Publish(mut publish))) =
            Decoder::client(Version::V5, MAX_PACKET_SIZE).decode(&mut buf)
        else {
            return None;
        };
        publish.qos = qos;
        publish.packet_id = packet_id;
        // DUP is decided when it is sent again, not kept.
        publish.dup = false;
        Some(MessageRecord {
            qos,
            packet_id,
            released,
            queued_at_ms,
            publish,
        })
    }
}

/// A retained message: the bus message and the QoS it was published with.
pub fn encode_retained(msg: &Message, qos: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + msg.subject.len() + msg.payload.len());
    out.push(RECORD_VERSION);
    out.push(qos);
    out.push(u8::from(msg.facts.retain));
    out.extend_from_slice(
        &msg.facts
            .expiry_secs
            .map_or(u64::MAX, u64::from)
            .to_be_bytes(),
    );
    for part in [
        Some(&msg.subject),
        msg.reply.as_ref(),
        // MQTT properties travel typed; the store keeps them as the headers they render.
        msg.header_block(),
        Some(&msg.payload),
    ] {
        match part {
            Some(p) => {
                out.extend_from_slice(&(p.len() as u32).to_be_bytes());
                out.extend_from_slice(p);
            }
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    out
}

/// Reads a retained message back; its origin is `origin` (the restoring server's own id).
pub fn decode_retained(bytes: &[u8], origin: ConnId) -> Option<(Message, u8)> {
    let mut b = bytes;
    if b.len() < 11 || b.get_u8() != RECORD_VERSION {
        return None;
    }
    let qos = b.get_u8();
    let retain = b.get_u8() != 0;
    let expiry = b.get_u64();
    let mut parts: [Option<Bytes>; 4] = Default::default();
    for part in &mut parts {
        if b.len() < 4 {
            return None;
        }
        let n = b.get_u32();
        if n != u32::MAX {
            let n = n as usize;
            if b.len() < n {
                return None;
            }
            *part = Some(Bytes::copy_from_slice(&b[..n]));
            b.advance(n);
        }
    }
    let [subject, reply, headers, payload] = parts;
    Some((
        Message {
            subject: subject?,
            reply,
            headers,
            payload: payload?,
            facts: DeliveryFacts {
                origin,
                qos: Some(qos),
                retain,
                expiry_secs: u32::try_from(expiry).ok(),
            },
            extra: None,
        },
        qos,
    ))
}

/// One subscription of a persistent session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubRecord {
    /// The filter as the client sent it (with `$share/{group}/` when shared).
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub subscription_id: Option<u32>,
}

/// A persistent session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// 5 for MQTT 5.0, 4 for 3.1.1.
    pub level: u8,
    /// Seconds the session lives after its connection closes (`u32::MAX`: forever).
    pub expiry_secs: u32,
    /// When the detached session expires (Unix ms); `None` while connected or when it never
    /// expires.
    pub expires_at_ms: Option<u64>,
    pub subscriptions: Vec<SubRecord>,
    /// The will, as a CONNECT carrying it (MQTT 5 encoding).
    pub will: Option<Vec<u8>>,
    /// When a triggered will is due (Unix ms); `None`: the will waits for the connection to
    /// end.
    pub will_due_ms: Option<u64>,
}

impl SessionRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a session record serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<SessionRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A will as bytes: a CONNECT that carries it.
pub fn encode_will(will: &Will) -> Vec<u8> {
    let connect = Connect {
        clean_start: false,
        keep_alive: 0,
        client_id: Utf8Bytes::from_static("will"),
        will: Some(will.clone()),
        username: None,
        password: None,
        properties: Default::default(),
    };
    let mut out = BytesMut::new();
    let _ = encode(&Packet::Connect(Box::new(connect)), Version::V5, &mut out);
    out.to_vec()
}

pub fn decode_will(bytes: &[u8]) -> Option<Will> {
    let mut buf = BytesMut::from(bytes);
    match Decoder::new(MAX_PACKET_SIZE).decode(&mut buf) {
        Ok(Some(Packet::Connect(c))) => c.will,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::properties::{PublishProperties, UserProperty, WillProperties};

    #[test]
    fn keys_are_prefix_free_and_split_back() {
        let a = session_key("$G", "dev-1");
        let b = session_key("$G", "dev-10");
        assert!(!message_key(&b, 1).starts_with(&a));
        let mk = message_key(&a, 7);
        let (acc, client, rest) = split_session_key(&mk).unwrap();
        assert_eq!((acc.as_str(), client.as_str()), ("$G", "dev-1"));
        assert_eq!(rest, &7u64.to_be_bytes());
        let (acc, subj) = split_retained_key(&retained_key("A", b"x.y")).unwrap();
        assert_eq!((acc.as_str(), &subj[..]), ("A", &b"x.y"[..]));
    }

    #[test]
    fn records_round_trip() {
        let publish = Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: Utf8Bytes::from_static("a/b"),
            packet_id: 9,
            properties: PublishProperties {
                user_properties: vec![UserProperty {
                    name: Utf8Bytes::from_static("k"),
                    value: Utf8Bytes::from_static("v"),
                }],
                correlation_data: Some(Bytes::from_static(b"\x00\x01")),
                message_expiry_interval: Some(60),
                ..PublishProperties::default()
            },
            payload: Bytes::from_static(b"payload"),
        };
        let r = MessageRecord {
            qos: QoS::ExactlyOnce,
            packet_id: 9,
            released: true,
            queued_at_ms: 123,
            publish,
        };
        assert_eq!(MessageRecord::decode(&r.encode()), Some(r));

        let msg = Message {
            subject: Bytes::from_static(b"a.b"),
            reply: None,
            headers: Some(Bytes::from_static(b"NATS/1.0\r\nk: v\r\n\r\n")),
            payload: Bytes::from_static(b"hello"),
            facts: DeliveryFacts {
                origin: ConnId(3),
                qos: Some(1),
                retain: true,
                expiry_secs: None,
            },
            extra: None,
        };
        let (back, qos) = decode_retained(&encode_retained(&msg, 1), ConnId(3)).unwrap();
        assert_eq!(qos, 1);
        assert_eq!(
            (back.subject, back.reply, back.headers, back.payload),
            (msg.subject, msg.reply, msg.headers, msg.payload)
        );
        assert_eq!(
            (back.facts.qos, back.facts.retain, back.facts.expiry_secs),
            (msg.facts.qos, msg.facts.retain, msg.facts.expiry_secs)
        );

        let will = Will {
            topic: Utf8Bytes::from_static("last/words"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(30),
                ..WillProperties::default()
            },
        };
        assert_eq!(decode_will(&encode_will(&will)), Some(will));
        assert_eq!(MessageRecord::decode(b"\x09garbage"), None);
    }
}
