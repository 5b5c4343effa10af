//! The MQTT encoder: every packet type, at either protocol level.
//!
//! A packet is written in two passes over the same code: one counts the bytes (for the
//! remaining length, and for [`encoded_len`]), the other writes them, so the two cannot
//! disagree. The encoder checks what the wire format needs (field lengths, packet identifiers,
//! what 3.1.1 can express), not the rules a receiver checks; fields 3.1.1 does not have
//! (properties, reason codes of acknowledgements and DISCONNECT, subscription options beyond
//! QoS) are left out when encoding for 3.1.1.

use bytes::BytesMut;

use super::packet::*;
use super::properties;
use super::properties::PropertySet;
use super::{reason, MAX_REMAINING_LENGTH};

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field is longer than 65,535 bytes.
    #[error("field longer than 65535 bytes")]
    FieldTooLong,
    /// The packet, a property block or a subscription identifier is larger than a variable
    /// byte integer can express (268,435,455).
    #[error("value too large for a variable byte integer")]
    TooLarge,
    /// A packet identifier or flag that contradicts the packet: identifier 0 where one is
    /// required, an identifier or DUP on a QoS 0 PUBLISH.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Something MQTT 3.1.1 cannot carry: AUTH, a password without a user name, a CONNACK
    /// reason code without a 3.1.1 return code.
    #[error("{0} cannot be encoded for mqtt 3.1.1")]
    NotInV311(&'static str),
}

/// Appends `packet`, encoded for `protocol`, to `buf`. On error nothing is appended.
pub fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let remaining = body_len(packet, protocol)?;
    let start = buf.len();
    buf.reserve(1 + var_int_len(remaining) + remaining);
    buf.put(&[first_byte(packet)]);
    let written = put_var_int(buf, remaining).and_then(|()| body(packet, protocol, buf));
    if written.is_err() {
        buf.truncate(start);
    }
    written
}

/// The size of `packet` encoded for `protocol`, fixed header included: what a server compares
/// with the client's Maximum Packet Size before sending.
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    let remaining = body_len(packet, protocol)?;
    Ok(1 + var_int_len(remaining) + remaining)
}

fn body_len(packet: &Packet, protocol: Protocol) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    body(packet, protocol, &mut counter)?;
    if counter.len() > MAX_REMAINING_LENGTH {
        return Err(EncodeError::TooLarge);
    }
    Ok(counter.len())
}

/// Type and flags: DUP, QoS and RETAIN for PUBLISH, 0b0010 for PUBREL, SUBSCRIBE and
/// UNSUBSCRIBE, 0 for the rest.
fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(m) => (u8::from(m.dup) << 3) | ((m.qos as u8) << 1) | u8::from(m.retain),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    (packet.type_code() << 4) | flags
}

/// Writes everything after the fixed header.
fn body<S: Sink>(packet: &Packet, p: Protocol, s: &mut S) -> Result<(), EncodeError> {
    let v5 = p == Protocol::V5;
    match packet {
        Packet::Connect(c) => connect(c, p, s)?,
        Packet::ConnAck(c) => {
            let code = match p {
                Protocol::V5 => c.code,
                // 3.1.1 return codes pass as they are; 5.0 reason codes are translated.
                Protocol::V311 if c.code <= 5 => c.code,
                Protocol::V311 => reason::v311_connack_code(c.code)
                    .ok_or(EncodeError::NotInV311("this CONNACK reason code"))?,
            };
            s.put(&[u8::from(c.session_present), code]);
            if v5 {
                properties::write(&c.properties, s)?;
            }
        }
        Packet::Publish(m) => {
            put_string(s, m.topic.as_bytes())?;
            if m.qos == QoS::AtMostOnce {
                if m.packet_id != 0 {
                    return Err(EncodeError::Invalid("packet identifier on a QoS 0 PUBLISH"));
                }
                if m.dup {
                    return Err(EncodeError::Invalid("DUP on a QoS 0 PUBLISH"));
                }
            } else {
                put_packet_id(s, m.packet_id)?;
            }
            if v5 {
                properties::write(&m.properties, s)?;
            }
            s.put(&m.payload);
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            put_packet_id(s, r.packet_id)?;
            if v5 {
                reason_and_properties(s, r.reason, &r.properties, false)?;
            }
        }
        Packet::Subscribe(sub) => {
            put_packet_id(s, sub.packet_id)?;
            if v5 {
                properties::write(&sub.properties, s)?;
            }
            for f in &sub.filters {
                put_string(s, f.filter.as_bytes())?;
                let mut options = f.qos as u8;
                if v5 {
                    options |= (u8::from(f.no_local) << 2)
                        | (u8::from(f.retain_as_published) << 3)
                        | ((f.retain_handling as u8) << 4);
                }
                s.put(&[options]);
            }
        }
        Packet::SubAck(a) => {
            put_packet_id(s, a.packet_id)?;
            if v5 {
                properties::write(&a.properties, s)?;
                s.put(&a.reason_codes);
            } else {
                for &code in &a.reason_codes {
                    s.put(&[if code >= 0x80 { 0x80 } else { code }]);
                }
            }
        }
        Packet::Unsubscribe(u) => {
            put_packet_id(s, u.packet_id)?;
            if v5 {
                properties::write(&u.properties, s)?;
            }
            for f in &u.filters {
                put_string(s, f.as_bytes())?;
            }
        }
        Packet::UnsubAck(a) => {
            put_packet_id(s, a.packet_id)?;
            if v5 {
                properties::write(&a.properties, s)?;
                s.put(&a.reason_codes);
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                reason_and_properties(s, d.reason, &d.properties, false)?;
            }
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::NotInV311("AUTH"));
            }
            reason_and_properties(s, a.reason, &a.properties, true)?;
        }
    }
    Ok(())
}

fn connect<S: Sink>(c: &Connect, p: Protocol, s: &mut S) -> Result<(), EncodeError> {
    let v5 = p == Protocol::V5;
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::NotInV311("a password without a user name"));
    }
    put_binary(s, b"MQTT")?;
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags |= u8::from(c.username.is_some()) << 7;
    s.put(&[p.level(), flags]);
    s.put(&c.keep_alive.to_be_bytes());
    if v5 {
        properties::write(&c.properties, s)?;
    }
    put_string(s, c.client_id.as_bytes())?;
    if let Some(w) = &c.will {
        if v5 {
            properties::write(&w.properties, s)?;
        }
        put_string(s, w.topic.as_bytes())?;
        put_binary(s, &w.payload)?;
    }
    if let Some(u) = &c.username {
        put_string(s, u.as_bytes())?;
    }
    if let Some(pw) = &c.password {
        put_binary(s, pw)?;
    }
    Ok(())
}

/// The 5.0 tail of acknowledgements, DISCONNECT and AUTH: nothing when the reason is success
/// and there are no properties, else the reason code, then the properties if there are any
/// (or always, when `props_required`: AUTH has no form with a reason code alone).
fn reason_and_properties<T: PropertySet, S: Sink>(
    s: &mut S,
    code: u8,
    props: &T,
    props_required: bool,
) -> Result<(), EncodeError> {
    let empty = props.is_empty();
    if code == reason::SUCCESS && empty {
        return Ok(());
    }
    s.put(&[code]);
    if !empty || props_required {
        properties::write(props, s)?;
    }
    Ok(())
}

fn put_packet_id<S: Sink>(s: &mut S, id: u16) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::Invalid("packet identifier 0"));
    }
    s.put(&id.to_be_bytes());
    Ok(())
}

/// Where encoded bytes go: the output buffer, or a [`Counter`].
pub(crate) trait Sink {
    /// Appends bytes.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink that only counts.
#[derive(Debug, Default)]
pub(crate) struct Counter(usize);

impl Counter {
    pub(crate) fn len(&self) -> usize {
        self.0
    }
}

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Bytes a variable byte integer takes.
fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer (at most 268,435,455).
pub(crate) fn put_var_int<S: Sink>(s: &mut S, mut v: usize) -> Result<(), EncodeError> {
    if v > MAX_REMAINING_LENGTH {
        return Err(EncodeError::TooLarge);
    }
    let mut out = [0u8; 4];
    let mut n = 0;
    loop {
        // `v % 128` fits in 7 bits.
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        out[n] = byte;
        n += 1;
        if v == 0 {
            break;
        }
    }
    s.put(&out[..n]);
    Ok(())
}

/// Writes binary data: a two-byte length, then the bytes.
pub(crate) fn put_binary<S: Sink>(s: &mut S, b: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(b.len()).map_err(|_| EncodeError::FieldTooLong)?;
    s.put(&len.to_be_bytes());
    s.put(b);
    Ok(())
}

/// Writes a UTF-8 string (already checked when the [`Utf8Bytes`] was built).
pub(crate) fn put_string<S: Sink>(s: &mut S, b: &[u8]) -> Result<(), EncodeError> {
    put_binary(s, b)
}
