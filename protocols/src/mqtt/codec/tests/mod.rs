//! Tests of the MQTT codec and topic mapping: round trips of every packet type at both levels,
//! every split point of every fixture, a table of malformed packets, and the mapping tables of
//! nats-server.

use bytes::{Bytes, BytesMut};

use super::super::properties::*;
use super::super::topic::*;
use super::super::*;

/// Large enough for every fixture.
const MAX: usize = 64 * 1024;

fn s(x: &'static str) -> Utf8Bytes {
    Utf8Bytes::from_static(x)
}

fn b(x: &'static [u8]) -> Bytes {
    Bytes::from_static(x)
}

fn user(name: &'static str, value: &'static str) -> UserProperty {
    UserProperty {
        name: s(name),
        value: s(value),
    }
}

fn connect_packet(p: Version) -> Packet {
    let v5 = p == Version::V5;
    let mut c = Connect {
        clean_start: false,
        keep_alive: 60,
        client_id: s("dev-1"),
        will: Some(Will {
            topic: s("dev/1/status"),
            payload: b(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some(s("alice")),
        password: Some(b(b"s3cret\0\xff")),
        properties: ConnectProperties::default(),
    };
    if v5 {
        c.properties = ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            maximum_packet_size: Some(1 << 20),
            topic_alias_maximum: Some(10),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            authentication_method: Some(s("SCRAM-SHA-1")),
            authentication_data: Some(b(b"\x00\x01")),
            user_properties: vec![user("a", "1"), user("b", "2"), user("a", "3")],
        };
        if let Some(w) = c.will.as_mut() {
            w.properties = WillProperties {
                will_delay_interval: Some(5),
                payload_format_indicator: Some(true),
                message_expiry_interval: Some(60),
                content_type: Some(s("text/plain")),
                response_topic: Some(s("dev/1/reply")),
                correlation_data: Some(b(b"\x01\x02")),
                user_properties: vec![user("k", "v")],
            };
        }
    }
    Packet::Connect(Box::new(c))
}

/// A minimal CONNECT, the prefix of streams that test packets after it.
fn minimal_connect(p: Version) -> Vec<u8> {
    let c = Connect {
        clean_start: true,
        client_id: s("c"),
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    encode(&Packet::Connect(Box::new(c)), p, &mut buf).unwrap();
    buf.to_vec()
}

fn publish(qos: QoS, packet_id: u16, topic: &'static str, payload: &'static [u8]) -> Publish {
    Publish {
        qos,
        packet_id,
        topic: s(topic),
        payload: b(payload),
        ..Default::default()
    }
}

fn resp(packet_id: u16) -> PubResp {
    PubResp {
        packet_id,
        ..Default::default()
    }
}

/// What a client sends, at level `p`, CONNECT first.
fn client_packets(p: Version) -> Vec<Packet> {
    let mut out = vec![
        connect_packet(p),
        Packet::Publish(publish(QoS::AtMostOnce, 0, "a/b", b"hello")),
        Packet::Publish(Publish {
            dup: true,
            retain: true,
            ..publish(QoS::AtLeastOnce, 7, "a/b/c", b"")
        }),
        Packet::Publish(publish(QoS::ExactlyOnce, 65535, "/", &[0u8; 300])),
        Packet::PubAck(resp(1)),
        Packet::PubRec(resp(2)),
        Packet::PubRel(resp(3)),
        Packet::PubComp(resp(4)),
        Packet::Subscribe(Subscribe {
            packet_id: 9,
            filters: vec![
                SubscribeFilter {
                    filter: s("a/+/c"),
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
                SubscribeFilter {
                    filter: s("#"),
                    qos: QoS::ExactlyOnce,
                    ..Default::default()
                },
                SubscribeFilter {
                    filter: s("$share/g/x"),
                    ..Default::default()
                },
            ],
            properties: SubscribeProperties::default(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 10,
            filters: vec![s("a/+/c"), s("#")],
            properties: UnsubscribeProperties::default(),
        }),
        Packet::PingReq,
        Packet::Disconnect(Disconnect::default()),
    ];
    if p == Version::V5 {
        out.extend([
            Packet::Publish(Publish {
                properties: PublishProperties {
                    payload_format_indicator: Some(true),
                    message_expiry_interval: Some(30),
                    topic_alias: Some(3),
                    response_topic: Some(s("reply/here")),
                    correlation_data: Some(b(b"corr")),
                    user_properties: vec![user("x", "1"), user("x", "2")],
                    subscription_identifiers: vec![],
                    content_type: Some(s("application/json")),
                },
                ..publish(QoS::AtLeastOnce, 11, "t/1", b"{}")
            }),
            // Empty topic name with a topic alias.
            Packet::Publish(Publish {
                properties: PublishProperties {
                    topic_alias: Some(3),
                    ..Default::default()
                },
                ..publish(QoS::AtMostOnce, 0, "", b"again")
            }),
            // Reason code alone (remaining length 3).
            Packet::PubAck(PubResp {
                reason: reason::NO_MATCHING_SUBSCRIBERS,
                ..resp(12)
            }),
            Packet::PubRec(PubResp {
                reason: reason::QUOTA_EXCEEDED,
                properties: AckProperties {
                    reason_string: Some(s("full")),
                    user_properties: vec![user("q", "1")],
                },
                ..resp(13)
            }),
            Packet::PubRel(PubResp {
                reason: reason::PACKET_IDENTIFIER_NOT_FOUND,
                ..resp(14)
            }),
            // Success with properties.
            Packet::PubComp(PubResp {
                properties: AckProperties {
                    reason_string: Some(s("ok")),
                    user_properties: vec![],
                },
                ..resp(15)
            }),
            Packet::Subscribe(Subscribe {
                packet_id: 16,
                filters: vec![
                    SubscribeFilter {
                        filter: s("a/#"),
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::OnNewSubscribe,
                    },
                    SubscribeFilter {
                        filter: s("$share/grp/s/+"),
                        qos: QoS::ExactlyOnce,
                        retain_handling: RetainHandling::Never,
                        ..Default::default()
                    },
                ],
                properties: SubscribeProperties {
                    subscription_identifier: Some(268_435_455),
                    user_properties: vec![user("u", "v")],
                },
            }),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 17,
                filters: vec![s("a/#")],
                properties: UnsubscribeProperties {
                    user_properties: vec![user("u", "v")],
                },
            }),
            Packet::Disconnect(Disconnect {
                reason: reason::DISCONNECT_WITH_WILL_MESSAGE,
                properties: DisconnectProperties::default(),
            }),
            Packet::Disconnect(Disconnect {
                reason: reason::NORMAL_DISCONNECTION,
                properties: DisconnectProperties {
                    session_expiry_interval: Some(0),
                    reason_string: Some(s("bye")),
                    user_properties: vec![user("k", "v")],
                    server_reference: None,
                },
            }),
            Packet::Auth(Auth::default()),
            Packet::Auth(Auth {
                reason: reason::CONTINUE_AUTHENTICATION,
                properties: AuthProperties {
                    authentication_method: Some(s("SCRAM-SHA-1")),
                    authentication_data: Some(b(b"client-final")),
                    reason_string: None,
                    user_properties: vec![],
                },
            }),
            Packet::Auth(Auth {
                reason: reason::RE_AUTHENTICATE,
                properties: AuthProperties::default(),
            }),
        ]);
    }
    out
}

/// What a server sends, at level `p`.
fn server_packets(p: Version) -> Vec<Packet> {
    let v5 = p == Version::V5;
    let mut out = vec![
        Packet::ConnAck(Box::new(ConnAck {
            session_present: true,
            ..Default::default()
        })),
        Packet::Publish(publish(QoS::AtLeastOnce, 1, "x/y", b"payload")),
        Packet::PubAck(resp(1)),
        Packet::PubRec(resp(2)),
        Packet::PubRel(resp(3)),
        Packet::PubComp(resp(4)),
        Packet::SubAck(SubAck {
            packet_id: 5,
            reason_codes: vec![0, 1, 2, 0x80],
            properties: AckProperties::default(),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 6,
            reason_codes: if v5 { vec![0] } else { vec![] },
            properties: AckProperties::default(),
        }),
        Packet::PingResp,
    ];
    if v5 {
        out.extend([
            Packet::ConnAck(Box::new(ConnAck {
                session_present: false,
                code: reason::SUCCESS,
                properties: ConnAckProperties {
                    session_expiry_interval: Some(10),
                    receive_maximum: Some(100),
                    maximum_qos: Some(QoS::AtLeastOnce),
                    retain_available: Some(true),
                    maximum_packet_size: Some(65536),
                    assigned_client_identifier: Some(s("auto-1")),
                    topic_alias_maximum: Some(16),
                    reason_string: Some(s("welcome")),
                    user_properties: vec![user("node", "j1")],
                    wildcard_subscription_available: Some(true),
                    subscription_identifiers_available: Some(true),
                    shared_subscription_available: Some(false),
                    server_keep_alive: Some(30),
                    response_information: Some(s("resp/")),
                    server_reference: Some(s("other:1883")),
                    authentication_method: Some(s("SCRAM-SHA-1")),
                    authentication_data: Some(b(b"server-first")),
                },
            })),
            Packet::ConnAck(Box::new(ConnAck {
                code: reason::BAD_USER_NAME_OR_PASSWORD,
                ..Default::default()
            })),
            Packet::Publish(Publish {
                properties: PublishProperties {
                    subscription_identifiers: vec![1, 200, 268_435_455],
                    topic_alias: Some(2),
                    ..Default::default()
                },
                ..publish(QoS::AtMostOnce, 0, "x/y", b"p")
            }),
            Packet::SubAck(SubAck {
                packet_id: 7,
                reason_codes: vec![0, 0x87, 0x9E, 0xA1, 0xA2],
                properties: AckProperties {
                    reason_string: Some(s("partly")),
                    user_properties: vec![],
                },
            }),
            Packet::UnsubAck(UnsubAck {
                packet_id: 8,
                reason_codes: vec![0, 0x11, 0x87],
                properties: AckProperties {
                    reason_string: None,
                    user_properties: vec![user("a", "b")],
                },
            }),
            Packet::Disconnect(Disconnect {
                reason: reason::SERVER_SHUTTING_DOWN,
                properties: DisconnectProperties {
                    server_reference: Some(s("other:1883")),
                    ..Default::default()
                },
            }),
            Packet::Auth(Auth {
                reason: reason::CONTINUE_AUTHENTICATION,
                properties: AuthProperties {
                    authentication_method: Some(s("SCRAM-SHA-1")),
                    authentication_data: Some(b(b"server-final")),
                    ..Default::default()
                },
            }),
        ]);
    }
    out
}

fn encode_all(packets: &[Packet], p: Version) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for packet in packets {
        let before = buf.len();
        encode(packet, p, &mut buf).unwrap();
        assert_eq!(
            buf.len() - before,
            encoded_len(packet, p).unwrap(),
            "encoded_len of {packet:?}"
        );
    }
    buf.to_vec()
}

/// Feeds `chunks` one after the other, draining complete packets after each; stops at the
/// first error.
fn run(mut d: Decoder, chunks: &[&[u8]]) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(packet)) => packets.push(packet),
                Ok(None) => break,
                Err(e) => return (packets, Some(e)),
            }
        }
    }
    (packets, None)
}

/// Decodes `input` whole, split at every point, and one byte at a time; all must agree.
fn decode_every_way(d: &Decoder, input: &[u8]) -> (Vec<Packet>, Option<DecodeError>) {
    let whole = run(d.clone(), &[input]);
    for k in 0..=input.len() {
        let parts = run(d.clone(), &[&input[..k], &input[k..]]);
        assert_eq!(whole, parts, "split at {k}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(whole, run(d.clone(), &bytes), "one byte at a time");
    whole
}

fn fixtures() -> Vec<(Decoder, Vec<Packet>, Version)> {
    let mut out = Vec::new();
    for p in [Version::V311, Version::V5] {
        out.push((Decoder::new(MAX), client_packets(p), p));
        out.push((Decoder::client(p, MAX), server_packets(p), p));
    }
    out
}

#[test]
fn every_packet_type_round_trips_at_both_levels() {
    let mut seen = std::collections::BTreeSet::new();
    for (decoder, packets, p) in fixtures() {
        let bytes = encode_all(&packets, p);
        let (decoded, err) = run(decoder, &[&bytes]);
        assert_eq!(err, None, "{p:?}");
        assert_eq!(decoded, packets, "{p:?}");
        for packet in &packets {
            seen.insert((packet.type_code(), p.level()));
        }
    }
    // 14 types at 3.1.1 (no AUTH), 15 at 5.0.
    assert_eq!(seen.len(), 14 + 15);
}

#[test]
fn every_split_point_gives_the_same_packets() {
    for (decoder, packets, p) in fixtures() {
        let bytes = encode_all(&packets, p);
        let (decoded, err) = decode_every_way(&decoder, &bytes);
        assert_eq!(err, None);
        assert_eq!(decoded, packets);
    }
}

#[test]
fn server_decoder_learns_the_protocol_from_connect() {
    for p in [Version::V311, Version::V5] {
        let mut d = Decoder::new(MAX);
        assert_eq!(d.protocol(), None);
        let mut buf = BytesMut::from(&minimal_connect(p)[..]);
        assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
        assert_eq!(d.protocol(), Some(p));
        assert!(buf.is_empty());
    }
}

/// Wraps a body in a fixed header (remaining length of one or two bytes).
fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let len = body.len();
    assert!(len < 16_384);
    if len < 128 {
        out.push(len as u8);
    } else {
        out.push((len % 128) as u8 | 0x80);
        out.push((len / 128) as u8);
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
fn st(x: &[u8]) -> Vec<u8> {
    let mut out = (x.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(x);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A CONNECT body at `level` with `flags`, keep alive 60, and the rest of the body.
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    cat(&[&st(name), &[level, flags, 0, 60], rest])
}

mod encoding;
mod malformed;
mod topics;
