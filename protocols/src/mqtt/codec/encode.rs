//! The MQTT encoder: every packet type, at either protocol level.
//!
//! A packet is written in two passes over the same code: one counts the bytes (for the
//! remaining length, and for [`encoded_len`]), the other writes them, so the two cannot
//! disagree. The encoder checks what the wire format needs (field lengths, packet identifiers,
//! what 3.1.1 can express), not the rules a receiver checks; fields 3.1.1 does not have
//! (properties, reason codes of acknowledgements and DISCONNECT, subscription options beyond
//! QoS) are left out when encoding for 3.1.1.

use bytes::BytesMut;

use super::error::EncodeError;
use super::packet::*;
use super::properties;
use super::properties::PropertySet;
use super::wire::{put_binary, put_string, put_var_int, var_int_len, Counter, Out};
use super::{reason, MAX_REMAINING_LENGTH};

/// Appends `packet`, encoded for `protocol`, to `buf`. On error nothing is appended.
pub fn encode(packet: &Packet, protocol: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
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
pub fn encoded_len(packet: &Packet, protocol: Version) -> Result<usize, EncodeError> {
    let remaining = body_len(packet, protocol)?;
    Ok(1 + var_int_len(remaining) + remaining)
}

fn body_len(packet: &Packet, protocol: Version) -> Result<usize, EncodeError> {
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
fn body<S: Out>(packet: &Packet, p: Version, s: &mut S) -> Result<(), EncodeError> {
    let v5 = p == Version::V5;
    match packet {
        Packet::Connect(c) => connect(c, p, s)?,
        Packet::ConnAck(c) => {
            let code = match p {
                Version::V5 => c.code,
                // 3.1.1 return codes pass as they are; 5.0 reason codes are translated.
                Version::V311 if c.code <= 5 => c.code,
                Version::V311 => reason::v311_connack_code(c.code)
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

fn connect<S: Out>(c: &Connect, p: Version, s: &mut S) -> Result<(), EncodeError> {
    let v5 = p == Version::V5;
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
fn reason_and_properties<T: PropertySet, S: Out>(
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

fn put_packet_id<S: Out>(s: &mut S, id: u16) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::Invalid("packet identifier 0"));
    }
    s.put(&id.to_be_bytes());
    Ok(())
}
