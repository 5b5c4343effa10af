//! The MQTT decoder: a pure, resumable function over a byte buffer.
//!
//! [`Decoder::decode`] takes one complete packet off the front of a `BytesMut` and returns
//! `Ok(None)` when it needs more bytes. The fixed header is checked as soon as its bytes are
//! there: packet type and flags from the first byte, then the remaining length, then the
//! maximum packet size, all before the body is buffered. The body is then split off the buffer
//! once and frozen; payloads, binary data and strings are `Bytes` slices of it, never copied.
//!
//! A server-side decoder ([`Decoder::new`]) learns the protocol level from the CONNECT, which
//! must come first and only once; a client-side decoder ([`Decoder::client`]) is told the level.
//! The side decides which packet types may arrive and the few rules that depend on direction
//! (a client sends no SubscribeFilter Identifier in PUBLISH, a server no Session Expiry Interval in
//! DISCONNECT).

use bytes::{Buf, BytesMut};

use super::error::DecodeError;
use super::packet::*;
use super::properties::{self, rules};
use super::wire::{check_controls, check_topic_name, parse_var_int, Reader};
use super::{reason, topic};

/// Which end of the connection a decoder is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Decodes what clients send.
    Server,
    /// Decodes what servers send.
    Client,
}

/// The resumable decoder of one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Largest packet accepted, fixed header included (the Maximum Packet Size this side
    /// announced, or its configured limit).
    max_packet_size: usize,
    /// The protocol level; on the server side unknown until the CONNECT is decoded.
    protocol: Option<Version>,
    /// Which packets may arrive and which direction rules apply.
    side: Side,
}

impl Decoder {
    /// A server-side decoder: the first packet must be a CONNECT, whose protocol level then
    /// applies to the rest of the connection. Packets over `max_packet_size` bytes (fixed
    /// header included) are refused from their fixed header.
    pub fn new(max_packet_size: usize) -> Self {
        Decoder {
            max_packet_size,
            protocol: None,
            side: Side::Server,
        }
    }

    /// A client-side decoder, for the packets a server sends at `protocol` (used by tests and
    /// tools that act as a client).
    pub fn client(protocol: Version, max_packet_size: usize) -> Self {
        Decoder {
            max_packet_size,
            protocol: Some(protocol),
            side: Side::Client,
        }
    }

    /// The protocol level: the CONNECT's once decoded (server side), or the given one.
    pub fn protocol(&self) -> Option<Version> {
        self.protocol
    }

    /// The largest packet accepted, fixed header included.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Takes the next complete packet off the front of `buf`; `Ok(None)` when more bytes are
    /// needed (nothing is consumed then). After an error the connection must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let (kind, flags) = (first >> 4, first & 0x0F);
        self.check_fixed_header(kind, flags)?;
        let Some((remaining, len_bytes)) = parse_var_int(&buf[1..])? else {
            return Ok(None);
        };
        let size = 1 + len_bytes + remaining as usize;
        if size > self.max_packet_size {
            return Err(DecodeError::PacketTooLarge {
                size,
                max: self.max_packet_size,
            });
        }
        if buf.len() < size {
            return Ok(None);
        }
        let mut frame = buf.split_to(size);
        frame.advance(1 + len_bytes);
        let mut r = Reader::new(frame.freeze());
        self.parse(kind, flags, &mut r).map(Some)
    }

    /// Checks what the first byte alone tells: the packet type is allowed here and now, and
    /// its flags are those the type requires ([MQTT-2.2.2-1], [MQTT-2.2.2-2]).
    fn check_fixed_header(&self, kind: u8, flags: u8) -> Result<(), DecodeError> {
        let name = type_name(kind);
        if kind == 0 {
            return Err(DecodeError::BadPacketType(kind));
        }
        let unexpected = match self.side {
            Side::Server => match self.protocol {
                None => kind != CONNECT,
                Some(_) => matches!(kind, CONNECT | CONNACK | SUBACK | UNSUBACK | PINGRESP),
            },
            Side::Client => matches!(kind, CONNECT | SUBSCRIBE | UNSUBSCRIBE | PINGREQ),
        };
        if unexpected {
            return Err(DecodeError::UnexpectedPacket(name));
        }
        if kind == AUTH && self.protocol == Some(Version::V311) {
            return Err(DecodeError::BadPacketType(kind));
        }
        match kind {
            PUBLISH => {
                let qos = (flags >> 1) & 0b11;
                if qos == 3 {
                    return Err(DecodeError::BadQoS);
                }
                if qos == 0 && flags & 0b1000 != 0 {
                    return Err(DecodeError::DupWithQoS0);
                }
            }
            PUBREL | SUBSCRIBE | UNSUBSCRIBE if flags != 0b0010 => {
                return Err(DecodeError::BadFlags {
                    packet: name,
                    flags,
                });
            }
            PUBREL | SUBSCRIBE | UNSUBSCRIBE => {}
            _ if flags != 0 => {
                return Err(DecodeError::BadFlags {
                    packet: name,
                    flags,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn parse(&mut self, kind: u8, flags: u8, r: &mut Reader) -> Result<Packet, DecodeError> {
        if kind == CONNECT {
            // The level is known as soon as it is read: a CONNECT that is malformed after it
            // can still be refused with a CONNACK of that level.
            let (connect, protocol) = parse_connect(r, &mut self.protocol)?;
            self.protocol = Some(protocol);
            return Ok(Packet::Connect(Box::new(connect)));
        }
        // `check_fixed_header` let nothing but CONNECT through before the level was known.
        let p = self
            .protocol
            .ok_or(DecodeError::UnexpectedPacket(type_name(kind)))?;
        let from_server = self.side == Side::Client;
        let packet = match kind {
            CONNACK => Packet::ConnAck(Box::new(parse_connack(r, p)?)),
            PUBLISH => Packet::Publish(parse_publish(r, p, flags, from_server)?),
            PUBACK => Packet::PubAck(parse_pub_resp(r, p, kind)?),
            PUBREC => Packet::PubRec(parse_pub_resp(r, p, kind)?),
            PUBREL => Packet::PubRel(parse_pub_resp(r, p, kind)?),
            PUBCOMP => Packet::PubComp(parse_pub_resp(r, p, kind)?),
            SUBSCRIBE => Packet::Subscribe(parse_subscribe(r, p)?),
            SUBACK => Packet::SubAck(parse_suback(r, p)?),
            UNSUBSCRIBE => Packet::Unsubscribe(parse_unsubscribe(r, p)?),
            UNSUBACK => Packet::UnsubAck(parse_unsuback(r, p)?),
            PINGREQ => {
                r.finish()?;
                Packet::PingReq
            }
            PINGRESP => {
                r.finish()?;
                Packet::PingResp
            }
            DISCONNECT => Packet::Disconnect(parse_disconnect(r, p, from_server)?),
            AUTH => Packet::Auth(parse_auth(r)?),
            _ => return Err(DecodeError::BadPacketType(kind)),
        };
        Ok(packet)
    }
}

fn parse_connect(
    r: &mut Reader,
    seen: &mut Option<Version>,
) -> Result<(Connect, Version), DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => Version::V311,
        (b"MQTT", 5) => Version::V5,
        (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => return Err(DecodeError::BadProtocolName),
    };
    *seen = Some(protocol);
    let v5 = protocol == Version::V5;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ReservedBits("CONNECT flags"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    let will_qos = QoS::from_bits(will_qos_bits).ok_or(DecodeError::BadQoS)?;
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::WillFlags);
    }
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        properties::read(r, 0, 0)?
    } else {
        Default::default()
    };
    let client_id = r.string()?;
    check_controls(client_id.as_bytes(), "client identifier")?;
    if !v5 && client_id.is_empty() && !clean_start {
        return Err(DecodeError::ClientIdRejected);
    }
    let will = if will_flag {
        let properties = if v5 {
            properties::read(r, 0, 0)?
        } else {
            Default::default()
        };
        let topic = r.string()?;
        check_topic_name(&topic, false)?;
        Some(Will {
            topic,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        let name = r.string()?;
        check_controls(name.as_bytes(), "user name")?;
        Some(name)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    let connect = Connect {
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    };
    Ok((connect, protocol))
}

fn parse_connack(r: &mut Reader, p: Version) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ReservedBits("CONNACK flags"));
    }
    let session_present = flags & 0x01 != 0;
    let code = r.u8()?;
    let known = match p {
        Version::V311 => code <= 5,
        Version::V5 => reason::is_connack(code),
    };
    if !known {
        return Err(DecodeError::BadReasonCode {
            packet: "CONNACK",
            code,
        });
    }
    if session_present && code != 0 {
        return Err(DecodeError::SessionPresentOnRefusal);
    }
    let properties = match p {
        Version::V5 => properties::read(r, 0, 0)?,
        Version::V311 => Default::default(),
    };
    r.finish()?;
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

fn parse_publish(
    r: &mut Reader,
    p: Version,
    flags: u8,
    from_server: bool,
) -> Result<Publish, DecodeError> {
    // The fixed header check refused QoS 3.
    let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(DecodeError::BadQoS)?;
    let topic = r.string()?;
    if !topic::is_valid_topic_name(topic.as_bytes()) {
        return Err(DecodeError::WildcardInTopicName);
    }
    check_controls(topic.as_bytes(), "topic name")?;
    let packet_id = match qos {
        QoS::AtMostOnce => 0,
        _ => packet_id(r)?,
    };
    let properties: properties::PublishProperties = match (p, from_server) {
        (Version::V311, _) => Default::default(),
        (Version::V5, false) => properties::read(r, rules::PUBLISH_FROM_CLIENT_FORBID, 0)?,
        (Version::V5, true) => properties::read(r, 0, rules::PUBLISH_FROM_SERVER_REPEAT)?,
    };
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::EmptyTopicName);
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

fn parse_pub_resp(r: &mut Reader, p: Version, kind: u8) -> Result<PubResp, DecodeError> {
    let mut resp = PubResp {
        packet_id: packet_id(r)?,
        ..Default::default()
    };
    if p == Version::V5 && !r.is_empty() {
        resp.reason = r.u8()?;
        let known = match kind {
            PUBACK | PUBREC => reason::is_puback(resp.reason),
            _ => reason::is_pubrel(resp.reason),
        };
        if !known {
            return Err(DecodeError::BadReasonCode {
                packet: type_name(kind),
                code: resp.reason,
            });
        }
        if !r.is_empty() {
            resp.properties = properties::read(r, 0, 0)?;
        }
    }
    r.finish()?;
    Ok(resp)
}

fn parse_subscribe(r: &mut Reader, p: Version) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match p {
        Version::V5 => properties::read(r, 0, 0)?,
        Version::V311 => Default::default(),
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let shared = check_filter(&filter, p)?;
        let options = r.u8()?;
        let reserved = match p {
            Version::V311 => 0b1111_1100,
            Version::V5 => 0b1100_0000,
        };
        if options & reserved != 0 {
            return Err(DecodeError::ReservedBits("subscription options"));
        }
        let qos = QoS::from_bits(options & 0b11).ok_or(DecodeError::BadSubscriptionQoS)?;
        let no_local = options & 0b0100 != 0;
        let retain_handling = match (options >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::BadRetainHandling),
        };
        if shared && no_local {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        filters.push(SubscribeFilter {
            filter,
            qos,
            no_local,
            retain_as_published: options & 0b1000 != 0,
            retain_handling,
        });
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters);
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn parse_suback(r: &mut Reader, p: Version) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match p {
        Version::V5 => properties::read(r, 0, 0)?,
        Version::V311 => Default::default(),
    };
    let reason_codes = r.rest().to_vec();
    if reason_codes.is_empty() {
        return Err(DecodeError::NoReasonCodes);
    }
    for &code in &reason_codes {
        let known = match p {
            Version::V311 => matches!(code, 0..=2 | 0x80),
            Version::V5 => reason::is_suback(code),
        };
        if !known {
            return Err(DecodeError::BadReasonCode {
                packet: "SUBACK",
                code,
            });
        }
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

fn parse_unsubscribe(r: &mut Reader, p: Version) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match p {
        Version::V5 => properties::read(r, 0, 0)?,
        Version::V311 => Default::default(),
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        check_filter(&filter, p)?;
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn parse_unsuback(r: &mut Reader, p: Version) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if p == Version::V311 {
        r.finish()?;
        return Ok(UnsubAck {
            packet_id,
            ..Default::default()
        });
    }
    let properties = properties::read(r, 0, 0)?;
    let reason_codes = r.rest().to_vec();
    if reason_codes.is_empty() {
        return Err(DecodeError::NoReasonCodes);
    }
    if let Some(&code) = reason_codes.iter().find(|&&c| !reason::is_unsuback(c)) {
        return Err(DecodeError::BadReasonCode {
            packet: "UNSUBACK",
            code,
        });
    }
    Ok(UnsubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

fn parse_disconnect(
    r: &mut Reader,
    p: Version,
    from_server: bool,
) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    // 5.0: no reason code means 0x00 (normal disconnection), no property length means none.
    if p == Version::V5 && !r.is_empty() {
        disconnect.reason = r.u8()?;
        if !reason::is_disconnect(disconnect.reason) {
            return Err(DecodeError::BadReasonCode {
                packet: "DISCONNECT",
                code: disconnect.reason,
            });
        }
        if !r.is_empty() {
            let forbid = if from_server {
                rules::DISCONNECT_FROM_SERVER_FORBID
            } else {
                0
            };
            disconnect.properties = properties::read(r, forbid, 0)?;
        }
    }
    r.finish()?;
    Ok(disconnect)
}

fn parse_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut auth = Auth::default();
    // An empty AUTH is success without properties; otherwise both the reason code and the
    // property length are there.
    if !r.is_empty() {
        auth.reason = r.u8()?;
        if !reason::is_auth(auth.reason) {
            return Err(DecodeError::BadReasonCode {
                packet: "AUTH",
                code: auth.reason,
            });
        }
        auth.properties = properties::read(r, 0, 0)?;
    }
    r.finish()?;
    Ok(auth)
}

/// A packet identifier that must be non-zero ([MQTT-2.2.1-3]).
fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::ZeroPacketId),
        id => Ok(id),
    }
}

/// Checks a topic filter; `Ok(true)` for a 5.0 shared subscription.
fn check_filter(f: &Utf8Bytes, p: Version) -> Result<bool, DecodeError> {
    let bytes = f.as_bytes();
    check_controls(bytes, "topic filter")?;
    if p == Version::V5 && bytes.starts_with(topic::SHARED_PREFIX) {
        return match topic::shared_subscription(bytes) {
            Some(_) => Ok(true),
            None => Err(DecodeError::BadTopicFilter),
        };
    }
    if !topic::is_valid_topic_filter(bytes) {
        return Err(DecodeError::BadTopicFilter);
    }
    Ok(false)
}
