//! Tests of the MQTT codec and topic mapping: round trips of every packet type at both levels,
//! every split point of every fixture, a table of malformed packets, and the mapping tables of
//! nats-server.

use bytes::{Bytes, BytesMut};

use super::properties::*;
use super::topic::*;
use super::*;

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

fn connect_packet(p: Protocol) -> Packet {
    let v5 = p == Protocol::V5;
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
fn minimal_connect(p: Protocol) -> Vec<u8> {
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
fn client_packets(p: Protocol) -> Vec<Packet> {
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
                Subscription {
                    filter: s("a/+/c"),
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
                Subscription {
                    filter: s("#"),
                    qos: QoS::ExactlyOnce,
                    ..Default::default()
                },
                Subscription {
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
    if p == Protocol::V5 {
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
                    Subscription {
                        filter: s("a/#"),
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::OnNewSubscribe,
                    },
                    Subscription {
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
fn server_packets(p: Protocol) -> Vec<Packet> {
    let v5 = p == Protocol::V5;
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

fn encode_all(packets: &[Packet], p: Protocol) -> Vec<u8> {
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

fn fixtures() -> Vec<(Decoder, Vec<Packet>, Protocol)> {
    let mut out = Vec::new();
    for p in [Protocol::V311, Protocol::V5] {
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
    for p in [Protocol::V311, Protocol::V5] {
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

/// Where a malformed input is decoded.
#[derive(Debug, Clone, Copy)]
enum Ctx {
    /// A fresh server-side decoder: the input starts with CONNECT.
    Fresh,
    /// A server-side decoder after a valid CONNECT at this level.
    Server(Protocol),
    /// A client-side decoder at this level.
    Client(Protocol),
}

use Protocol::{V311, V5};

/// A CONNECT body at `level` with `flags`, keep alive 60, and the rest of the body.
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    cat(&[&st(name), &[level, flags, 0, 60], rest])
}

#[test]
fn malformed_packets_are_refused_with_the_right_error() {
    use DecodeError as E;
    let none: &[u8] = &[0]; // an empty 5.0 property block
    let rows: Vec<(&str, Ctx, Vec<u8>, DecodeError)> = vec![
        // Fixed header.
        (
            "packet type 0",
            Ctx::Server(V311),
            vec![0x00, 0x00],
            E::BadPacketType(0),
        ),
        (
            "PUBREL flags 0000",
            Ctx::Server(V311),
            pkt(0x60, &[0, 1]),
            E::BadFlags {
                packet: "PUBREL",
                flags: 0,
            },
        ),
        (
            "SUBSCRIBE flags 0000",
            Ctx::Server(V311),
            pkt(0x80, &cat(&[&[0, 1], &st(b"a"), &[0]])),
            E::BadFlags {
                packet: "SUBSCRIBE",
                flags: 0,
            },
        ),
        (
            "UNSUBSCRIBE flags 0011",
            Ctx::Server(V5),
            pkt(0xA3, &cat(&[&[0, 1, 0], &st(b"a")])),
            E::BadFlags {
                packet: "UNSUBSCRIBE",
                flags: 3,
            },
        ),
        (
            "PINGREQ flags 0001",
            Ctx::Server(V311),
            vec![0xC1, 0x00],
            E::BadFlags {
                packet: "PINGREQ",
                flags: 1,
            },
        ),
        (
            "CONNECT flags 0001",
            Ctx::Fresh,
            pkt(0x11, &connect_body(b"MQTT", 4, 2, &st(b"c"))),
            E::BadFlags {
                packet: "CONNECT",
                flags: 1,
            },
        ),
        (
            "PUBLISH QoS 3",
            Ctx::Server(V311),
            pkt(0x36, &cat(&[&st(b"a"), &[0, 1]])),
            E::BadQoS,
        ),
        (
            "PUBLISH DUP with QoS 0",
            Ctx::Server(V311),
            pkt(0x38, &st(b"a")),
            E::DupWithQoS0,
        ),
        (
            "remaining length of 5 bytes",
            Ctx::Server(V311),
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            E::BadVarInt,
        ),
        (
            "remaining length not in shortest form",
            Ctx::Server(V311),
            vec![0xC0, 0x80, 0x00],
            E::BadVarInt,
        ),
        (
            "packet over the maximum size",
            Ctx::Server(V5),
            vec![0x30, 0xFF, 0x7F],
            E::PacketTooLarge {
                size: 3 + 16_383,
                max: 1024,
            },
        ),
        // Strings.
        (
            "topic not UTF-8",
            Ctx::Server(V311),
            pkt(0x30, &st(&[b'a', 0xC3, 0x28])),
            E::BadUtf8,
        ),
        (
            "surrogate in client identifier",
            Ctx::Fresh,
            pkt(0x10, &connect_body(b"MQTT", 4, 2, &st(&[0xED, 0xA0, 0x80]))),
            E::BadUtf8,
        ),
        (
            "U+0000 in topic",
            Ctx::Server(V311),
            pkt(0x30, &st(b"a\0b")),
            E::NullCharacter,
        ),
        (
            "U+0000 in user property",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[7, 0x26], &st(b"k"), &st(b"\0")])),
            E::NullCharacter,
        ),
        (
            "string longer than the packet",
            Ctx::Server(V311),
            pkt(0x30, &[0, 9, b'a']),
            E::UnexpectedEnd,
        ),
        // Topics and filters.
        (
            "+ in topic name",
            Ctx::Server(V311),
            pkt(0x30, &st(b"a/+")),
            E::WildcardInTopicName,
        ),
        (
            "# in topic name",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a/#"), none])),
            E::WildcardInTopicName,
        ),
        (
            "empty topic name at 3.1.1",
            Ctx::Server(V311),
            pkt(0x30, &st(b"")),
            E::EmptyTopicName,
        ),
        (
            "empty topic name without topic alias",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b""), none])),
            E::EmptyTopicName,
        ),
        (
            "# not last",
            Ctx::Server(V311),
            pkt(0x82, &cat(&[&[0, 1], &st(b"a/#/b"), &[0]])),
            E::BadTopicFilter,
        ),
        (
            "+ not alone in its level",
            Ctx::Server(V311),
            pkt(0x82, &cat(&[&[0, 1], &st(b"a/b+"), &[0]])),
            E::BadTopicFilter,
        ),
        (
            "empty filter in UNSUBSCRIBE",
            Ctx::Server(V311),
            pkt(0xA2, &cat(&[&[0, 1], &st(b"")])),
            E::BadTopicFilter,
        ),
        (
            "shared subscription without a filter",
            Ctx::Server(V5),
            pkt(0x82, &cat(&[&[0, 1, 0], &st(b"$share/g"), &[0]])),
            E::BadTopicFilter,
        ),
        (
            "shared subscription with an empty group",
            Ctx::Server(V5),
            pkt(0x82, &cat(&[&[0, 1, 0], &st(b"$share//a"), &[0]])),
            E::BadTopicFilter,
        ),
        (
            "will topic with a wildcard",
            Ctx::Fresh,
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x06, &cat(&[&st(b"c"), &st(b"w/#"), &st(b"")])),
            ),
            E::WildcardInTopicName,
        ),
        (
            "response topic with a wildcard",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[4, 0x08], &st(b"+")])),
            E::WildcardInTopicName,
        ),
        // Packet identifiers and payloads.
        (
            "PUBLISH QoS 1 packet identifier 0",
            Ctx::Server(V311),
            pkt(0x32, &cat(&[&st(b"a"), &[0, 0]])),
            E::ZeroPacketId,
        ),
        (
            "SUBSCRIBE packet identifier 0",
            Ctx::Server(V311),
            pkt(0x82, &cat(&[&[0, 0], &st(b"a"), &[0]])),
            E::ZeroPacketId,
        ),
        (
            "PUBACK packet identifier 0",
            Ctx::Server(V5),
            pkt(0x40, &[0, 0]),
            E::ZeroPacketId,
        ),
        (
            "SUBSCRIBE without filters",
            Ctx::Server(V311),
            pkt(0x82, &[0, 1]),
            E::NoTopicFilters,
        ),
        (
            "5.0 SUBSCRIBE without filters",
            Ctx::Server(V5),
            pkt(0x82, &[0, 1, 0]),
            E::NoTopicFilters,
        ),
        (
            "UNSUBSCRIBE without filters",
            Ctx::Server(V311),
            pkt(0xA2, &[0, 1]),
            E::NoTopicFilters,
        ),
        (
            "subscription QoS 3",
            Ctx::Server(V311),
            pkt(0x82, &cat(&[&[0, 1], &st(b"a"), &[3]])),
            E::BadSubscriptionQoS,
        ),
        (
            "3.1.1 subscription option bits",
            Ctx::Server(V311),
            pkt(0x82, &cat(&[&[0, 1], &st(b"a"), &[0b0100]])),
            E::ReservedBits("subscription options"),
        ),
        (
            "5.0 subscription reserved bits",
            Ctx::Server(V5),
            pkt(0x82, &cat(&[&[0, 1, 0], &st(b"a"), &[0b0100_0000]])),
            E::ReservedBits("subscription options"),
        ),
        (
            "retain handling 3",
            Ctx::Server(V5),
            pkt(0x82, &cat(&[&[0, 1, 0], &st(b"a"), &[0b0011_0000]])),
            E::BadRetainHandling,
        ),
        (
            "no local on a shared subscription",
            Ctx::Server(V5),
            pkt(0x82, &cat(&[&[0, 1, 0], &st(b"$share/g/a"), &[0b0100]])),
            E::NoLocalOnSharedSubscription,
        ),
        (
            "PINGREQ with a body",
            Ctx::Server(V311),
            pkt(0xC0, &[0]),
            E::TrailingBytes,
        ),
        (
            "3.1.1 PUBACK with a reason code",
            Ctx::Server(V311),
            pkt(0x40, &[0, 1, 0]),
            E::TrailingBytes,
        ),
        (
            "3.1.1 DISCONNECT with a body",
            Ctx::Server(V311),
            pkt(0xE0, &[0]),
            E::TrailingBytes,
        ),
        // CONNECT.
        (
            "protocol name MQTX",
            Ctx::Fresh,
            pkt(0x10, &connect_body(b"MQTX", 4, 2, &st(b"c"))),
            E::BadProtocolName,
        ),
        (
            "MQTT 3.1 (MQIsdp, level 3)",
            Ctx::Fresh,
            pkt(0x10, &connect_body(b"MQIsdp", 3, 2, &st(b"c"))),
            E::UnsupportedProtocolLevel(3),
        ),
        (
            "protocol level 6",
            Ctx::Fresh,
            pkt(0x10, &connect_body(b"MQTT", 6, 2, &st(b"c"))),
            E::UnsupportedProtocolLevel(6),
        ),
        (
            "reserved CONNECT flag",
            Ctx::Fresh,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x03, &st(b"c"))),
            E::ReservedBits("CONNECT flags"),
        ),
        (
            "will QoS without will",
            Ctx::Fresh,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x0A, &st(b"c"))),
            E::WillFlags,
        ),
        (
            "will retain without will",
            Ctx::Fresh,
            pkt(
                0x10,
                &connect_body(b"MQTT", 5, 0x22, &cat(&[none, &st(b"c")])),
            ),
            E::WillFlags,
        ),
        (
            "will QoS 3",
            Ctx::Fresh,
            pkt(0x10, &connect_body(b"MQTT", 4, 0x1E, &st(b"c"))),
            E::BadQoS,
        ),
        (
            "password without user name at 3.1.1",
            Ctx::Fresh,
            pkt(
                0x10,
                &connect_body(b"MQTT", 4, 0x42, &cat(&[&st(b"c"), &st(b"pw")])),
            ),
            E::PasswordWithoutUsername,
        ),
        (
            "empty client identifier without clean session at 3.1.1",
            Ctx::Fresh,
            pkt(0x10, &connect_body(b"MQTT", 4, 0, &st(b""))),
            E::ClientIdRejected,
        ),
        (
            "CONNECT with trailing bytes",
            Ctx::Fresh,
            pkt(0x10, &connect_body(b"MQTT", 4, 2, &cat(&[&st(b"c"), &[0]]))),
            E::TrailingBytes,
        ),
        (
            "CONNECT ends in the keep alive",
            Ctx::Fresh,
            pkt(0x10, &cat(&[&st(b"MQTT"), &[4, 2, 0]])),
            E::UnexpectedEnd,
        ),
        // Packet order and direction.
        (
            "PUBLISH before CONNECT",
            Ctx::Fresh,
            pkt(0x30, &st(b"a")),
            E::UnexpectedPacket("PUBLISH"),
        ),
        (
            "second CONNECT",
            Ctx::Server(V5),
            minimal_connect(V5),
            E::UnexpectedPacket("CONNECT"),
        ),
        (
            "CONNACK from a client",
            Ctx::Server(V311),
            pkt(0x20, &[0, 0]),
            E::UnexpectedPacket("CONNACK"),
        ),
        (
            "SUBSCRIBE from a server",
            Ctx::Client(V311),
            pkt(0x82, &cat(&[&[0, 1], &st(b"a"), &[0]])),
            E::UnexpectedPacket("SUBSCRIBE"),
        ),
        (
            "AUTH at 3.1.1",
            Ctx::Server(V311),
            vec![0xF0, 0x00],
            E::BadPacketType(15),
        ),
        // Properties.
        (
            "duplicate property",
            Ctx::Server(V5),
            pkt(
                0x30,
                &cat(&[&st(b"a"), &[10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]]),
            ),
            E::DuplicateProperty(MESSAGE_EXPIRY_INTERVAL),
        ),
        (
            "duplicate subscription identifier in SUBSCRIBE",
            Ctx::Server(V5),
            pkt(0x82, &cat(&[&[0, 1, 4, 0x0B, 1, 0x0B, 2], &st(b"a"), &[0]])),
            E::DuplicateProperty(SUBSCRIPTION_IDENTIFIER),
        ),
        (
            "session expiry in PUBLISH",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[5, 0x11, 0, 0, 0, 1]])),
            E::PropertyNotAllowed {
                id: SESSION_EXPIRY_INTERVAL,
                packet: "PUBLISH",
            },
        ),
        (
            "subscription identifier in PUBLISH from a client",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[2, 0x0B, 1]])),
            E::PropertyNotAllowed {
                id: SUBSCRIPTION_IDENTIFIER,
                packet: "PUBLISH",
            },
        ),
        (
            "topic alias in will properties",
            Ctx::Fresh,
            pkt(
                0x10,
                &connect_body(
                    b"MQTT",
                    5,
                    0x06,
                    &cat(&[none, &st(b"c"), &[3, 0x23, 0, 1], &st(b"w"), &st(b"")]),
                ),
            ),
            E::PropertyNotAllowed {
                id: TOPIC_ALIAS,
                packet: "will properties",
            },
        ),
        (
            "session expiry in DISCONNECT from a server",
            Ctx::Client(V5),
            pkt(0xE0, &[0, 5, 0x11, 0, 0, 0, 1]),
            E::PropertyNotAllowed {
                id: SESSION_EXPIRY_INTERVAL,
                packet: "DISCONNECT",
            },
        ),
        (
            "unknown property",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[2, 0x7F, 0]])),
            E::UnknownProperty(0x7F),
        ),
        (
            "property identifier not in shortest form",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[3, 0x82, 0x00, 0]])),
            E::BadVarInt,
        ),
        (
            "property length past the packet",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[5, 0x01, 1]])),
            E::UnexpectedEnd,
        ),
        (
            "property value past the property length",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[3, 0x02, 0, 0, 0, 1]])),
            E::UnexpectedEnd,
        ),
        (
            "topic alias 0",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[3, 0x23, 0, 0]])),
            E::BadPropertyValue(TOPIC_ALIAS),
        ),
        (
            "payload format indicator 2",
            Ctx::Server(V5),
            pkt(0x30, &cat(&[&st(b"a"), &[2, 0x01, 2]])),
            E::BadPropertyValue(PAYLOAD_FORMAT_INDICATOR),
        ),
        (
            "receive maximum 0",
            Ctx::Fresh,
            pkt(
                0x10,
                &connect_body(b"MQTT", 5, 2, &cat(&[&[3, 0x21, 0, 0], &st(b"c")])),
            ),
            E::BadPropertyValue(RECEIVE_MAXIMUM),
        ),
        (
            "subscription identifier 0",
            Ctx::Server(V5),
            pkt(0x82, &cat(&[&[0, 1, 2, 0x0B, 0], &st(b"a"), &[0]])),
            E::BadPropertyValue(SUBSCRIPTION_IDENTIFIER),
        ),
        (
            "maximum QoS 2 in CONNACK",
            Ctx::Client(V5),
            pkt(0x20, &[0, 0, 2, 0x24, 2]),
            E::BadPropertyValue(MAXIMUM_QOS),
        ),
        (
            "authentication data without method",
            Ctx::Fresh,
            pkt(
                0x10,
                &connect_body(b"MQTT", 5, 2, &cat(&[&[4, 0x16, 0, 1, 9], &st(b"c")])),
            ),
            E::AuthDataWithoutMethod,
        ),
        // Reason codes and acknowledgements.
        (
            "PUBACK reason code of PUBREL",
            Ctx::Server(V5),
            pkt(0x40, &[0, 1, 0x92]),
            E::BadReasonCode {
                packet: "PUBACK",
                code: 0x92,
            },
        ),
        (
            "DISCONNECT reason code 0x05",
            Ctx::Server(V5),
            pkt(0xE0, &[0x05]),
            E::BadReasonCode {
                packet: "DISCONNECT",
                code: 0x05,
            },
        ),
        (
            "AUTH with a reason code and no properties",
            Ctx::Server(V5),
            pkt(0xF0, &[0x18]),
            E::UnexpectedEnd,
        ),
        (
            "3.1.1 SUBACK code 3",
            Ctx::Client(V311),
            pkt(0x90, &[0, 1, 3]),
            E::BadReasonCode {
                packet: "SUBACK",
                code: 3,
            },
        ),
        (
            "SUBACK without codes",
            Ctx::Client(V5),
            pkt(0x90, &[0, 1, 0]),
            E::NoReasonCodes,
        ),
        (
            "CONNACK reserved flags",
            Ctx::Client(V311),
            pkt(0x20, &[0x02, 0]),
            E::ReservedBits("CONNACK flags"),
        ),
        (
            "session present on a refused connection",
            Ctx::Client(V311),
            pkt(0x20, &[0x01, 5]),
            E::SessionPresentOnRefusal,
        ),
    ];
    assert!(rows.len() >= 30);
    for (name, ctx, bytes, expected) in rows {
        let (decoder, prefix) = match ctx {
            Ctx::Fresh => (Decoder::new(1024), vec![]),
            Ctx::Server(p) => (Decoder::new(1024), minimal_connect(p)),
            Ctx::Client(p) => (Decoder::client(p, 1024), vec![]),
        };
        let input = cat(&[&prefix, &bytes]);
        let (packets, err) = decode_every_way(&decoder, &input);
        assert_eq!(err.as_ref(), Some(&expected), "{name}");
        assert_eq!(packets.len(), usize::from(!prefix.is_empty()), "{name}");
        // Every error has a reason code the broker can send.
        assert!(expected.reason_code() >= 0x80, "{name}");
    }
}

#[test]
fn oversized_packet_is_refused_from_its_fixed_header() {
    let mut d = Decoder::new(100);
    // CONNECT announcing 200 bytes: refused with only 3 bytes buffered.
    let mut buf = BytesMut::from(&[0x10, 0xC8, 0x01][..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::PacketTooLarge {
            size: 203,
            max: 100
        })
    );
    assert_eq!(
        DecodeError::PacketTooLarge {
            size: 203,
            max: 100
        }
        .reason_code(),
        reason::PACKET_TOO_LARGE
    );
    // A packet of exactly the maximum passes.
    let body = connect_body(b"MQTT", 4, 2, &st(&[b'c'; 86]));
    let bytes = pkt(0x10, &body);
    assert_eq!(bytes.len(), 100);
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        Decoder::new(100).decode(&mut buf),
        Ok(Some(Packet::Connect(_)))
    ));
}

#[test]
fn incomplete_input_consumes_nothing() {
    let bytes = encode_all(&client_packets(V5)[..1], V5);
    let mut d = Decoder::new(MAX);
    let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), bytes.len() - 1);
    assert_eq!(d.decode(&mut BytesMut::new()), Ok(None));
}

#[test]
fn zero_length_disconnect_is_a_normal_disconnection_at_5() {
    let input = cat(&[&minimal_connect(V5), &[0xE0, 0x00]]);
    let (packets, err) = decode_every_way(&Decoder::new(MAX), &input);
    assert_eq!(err, None);
    assert_eq!(
        packets[1],
        Packet::Disconnect(Disconnect {
            reason: reason::NORMAL_DISCONNECTION,
            properties: DisconnectProperties::default(),
        })
    );
    // And it is how a plain DISCONNECT is encoded.
    let mut buf = BytesMut::new();
    encode(&packets[1], V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0xE0, 0x00]);
    // A reason code alone (remaining length 1) is valid too.
    let input = cat(&[&minimal_connect(V5), &[0xE0, 0x01, 0x04]]);
    let (packets, err) = run(Decoder::new(MAX), &[&input]);
    assert_eq!(err, None);
    assert_eq!(
        packets[1],
        Packet::Disconnect(Disconnect {
            reason: reason::DISCONNECT_WITH_WILL_MESSAGE,
            ..Default::default()
        })
    );
}

#[test]
fn acknowledgements_omit_reason_code_and_properties_when_they_can() {
    let cases: Vec<(PubResp, Vec<u8>)> = vec![
        (resp(5), vec![0x40, 2, 0, 5]),
        (
            PubResp {
                reason: reason::NO_MATCHING_SUBSCRIBERS,
                ..resp(5)
            },
            vec![0x40, 3, 0, 5, 0x10],
        ),
        (
            PubResp {
                properties: AckProperties {
                    reason_string: Some(s("r")),
                    user_properties: vec![],
                },
                ..resp(5)
            },
            vec![0x40, 8, 0, 5, 0, 4, 0x1F, 0, 1, b'r'],
        ),
    ];
    for (ack, bytes) in cases {
        let mut buf = BytesMut::new();
        encode(&Packet::PubAck(ack.clone()), V5, &mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
        let (packets, err) = run(Decoder::client(V5, MAX), &[&bytes]);
        assert_eq!(err, None);
        assert_eq!(packets, vec![Packet::PubAck(ack)]);
    }
    // A reason code with an empty property block decodes to the same packet.
    let (packets, _) = run(Decoder::client(V5, MAX), &[&[0x50, 4, 0, 5, 0x10, 0]]);
    assert_eq!(
        packets,
        vec![Packet::PubRec(PubResp {
            reason: 0x10,
            ..resp(5)
        })]
    );
    // 3.1.1 acknowledgements never carry them.
    let mut buf = BytesMut::new();
    let failed = PubResp {
        reason: reason::QUOTA_EXCEEDED,
        ..resp(5)
    };
    encode(&Packet::PubAck(failed), V311, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0x40, 2, 0, 5]);
}

/// The defect of mqttbytes: a Subscription Identifier followed by more properties.
#[test]
fn subscription_identifier_followed_by_other_properties() {
    let props: &[u8] = &[
        0x0B, 0xC8, 0x01, // subscription identifier 200 (two bytes)
        0x0B, 0x05, // subscription identifier 5
        0x23, 0x00, 0x07, // topic alias 7
        0x26, 0, 1, b'k', 0, 1, b'v', // user property
        0x02, 0, 0, 0, 9, // message expiry 9
        0x26, 0, 1, b'k', 0, 1, b'w', // user property again
    ];
    let body = cat(&[&st(b"t"), &[props.len() as u8], props, b"data"]);
    let (packets, err) = decode_every_way(&Decoder::client(V5, MAX), &pkt(0x30, &body));
    assert_eq!(err, None);
    let Packet::Publish(p) = &packets[0] else {
        panic!("not a publish: {packets:?}");
    };
    assert_eq!(p.properties.subscription_identifiers, vec![200, 5]);
    assert_eq!(p.properties.topic_alias, Some(7));
    assert_eq!(p.properties.message_expiry_interval, Some(9));
    assert_eq!(
        p.properties.user_properties,
        vec![user("k", "v"), user("k", "w")]
    );
    assert_eq!(&p.payload[..], b"data");
}

#[test]
fn password_without_user_name_is_allowed_at_5() {
    let body = connect_body(b"MQTT", 5, 0x42, &cat(&[&[0], &st(b"c"), &st(b"pw")]));
    let (packets, err) = run(Decoder::new(MAX), &[&pkt(0x10, &body)]);
    assert_eq!(err, None);
    let Packet::Connect(c) = &packets[0] else {
        panic!("not a connect");
    };
    assert_eq!(c.username, None);
    assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
    // 3.1.1 cannot encode it.
    assert_eq!(
        encode(&packets[0], V311, &mut BytesMut::new()),
        Err(EncodeError::NotInV311("a password without a user name"))
    );
}

#[test]
fn payloads_and_binary_fields_are_not_copied() {
    let packets = client_packets(V5);
    let bytes = encode_all(&packets, V5);
    let mut buf = BytesMut::from(&bytes[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let inside = |p: &[u8]| range.contains(&(p.as_ptr() as usize));
    let mut d = Decoder::new(MAX);
    let mut checked = 0;
    while let Some(packet) = d.decode(&mut buf).unwrap() {
        match packet {
            Packet::Connect(c) => {
                assert!(inside(c.password.as_ref().unwrap()));
                assert!(inside(c.client_id.as_bytes()));
                assert!(inside(c.properties.authentication_data.as_ref().unwrap()));
                let will = c.will.as_ref().unwrap();
                assert!(inside(&will.payload));
                assert!(inside(will.properties.correlation_data.as_ref().unwrap()));
                checked += 1;
            }
            Packet::Publish(p) if !p.payload.is_empty() => {
                assert!(inside(&p.payload));
                assert!(p.topic.is_empty() || inside(p.topic.as_bytes()));
                if let Some(c) = &p.properties.correlation_data {
                    assert!(inside(c));
                }
                checked += 1;
            }
            Packet::Auth(a) => {
                if let Some(data) = &a.properties.authentication_data {
                    assert!(inside(data));
                    checked += 1;
                }
            }
            _ => {}
        }
    }
    assert!(checked >= 5);
}

#[test]
fn encode_refuses_what_the_wire_cannot_carry() {
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(&Packet::Auth(Auth::default()), V311, &mut buf),
        Err(EncodeError::NotInV311("AUTH"))
    );
    assert_eq!(
        encode(
            &Packet::Publish(publish(QoS::AtLeastOnce, 0, "a", b"")),
            V5,
            &mut buf
        ),
        Err(EncodeError::Invalid("packet identifier 0"))
    );
    assert_eq!(
        encode(
            &Packet::Publish(publish(QoS::AtMostOnce, 3, "a", b"")),
            V5,
            &mut buf
        ),
        Err(EncodeError::Invalid("packet identifier on a QoS 0 PUBLISH"))
    );
    let long = Utf8Bytes::try_from("x".repeat(65_536)).unwrap();
    let p = Publish {
        topic: long,
        ..Default::default()
    };
    assert_eq!(
        encode(&Packet::Publish(p), V5, &mut buf),
        Err(EncodeError::FieldTooLong)
    );
    assert!(buf.is_empty(), "nothing written on error");
}

#[test]
fn encode_translates_for_3_1_1() {
    // CONNACK reason codes become return codes.
    let cases = [
        (reason::SUCCESS, Some(0)),
        (reason::UNSUPPORTED_PROTOCOL_VERSION, Some(1)),
        (reason::CLIENT_IDENTIFIER_NOT_VALID, Some(2)),
        (reason::SERVER_UNAVAILABLE, Some(3)),
        (reason::BAD_USER_NAME_OR_PASSWORD, Some(4)),
        (reason::NOT_AUTHORIZED, Some(5)),
        (reason::MALFORMED_PACKET, None),
    ];
    for (code, v311) in cases {
        let ack = Packet::ConnAck(Box::new(ConnAck {
            code,
            ..Default::default()
        }));
        let mut buf = BytesMut::new();
        match v311 {
            Some(rc) => {
                encode(&ack, V311, &mut buf).unwrap();
                assert_eq!(&buf[..], &[0x20, 2, 0, rc]);
            }
            None => assert!(encode(&ack, V311, &mut buf).is_err()),
        }
    }
    // SUBACK failures all become 0x80.
    let ack = Packet::SubAck(SubAck {
        packet_id: 1,
        reason_codes: vec![1, reason::NOT_AUTHORIZED, reason::QUOTA_EXCEEDED],
        properties: AckProperties::default(),
    });
    let mut buf = BytesMut::new();
    encode(&ack, V311, &mut buf).unwrap();
    assert_eq!(&buf[..], &[0x90, 5, 0, 1, 1, 0x80, 0x80]);
}

#[test]
fn errors_map_to_reason_codes() {
    use DecodeError as E;
    assert_eq!(E::BadVarInt.reason_code(), reason::MALFORMED_PACKET);
    assert_eq!(
        E::DuplicateProperty(1).reason_code(),
        reason::PROTOCOL_ERROR
    );
    assert_eq!(
        E::UnsupportedProtocolLevel(3).reason_code(),
        reason::UNSUPPORTED_PROTOCOL_VERSION
    );
    assert_eq!(
        E::ClientIdRejected.reason_code(),
        reason::CLIENT_IDENTIFIER_NOT_VALID
    );
    assert_eq!(
        E::WildcardInTopicName.reason_code(),
        reason::TOPIC_NAME_INVALID
    );
    assert_eq!(
        E::BadTopicFilter.reason_code(),
        reason::TOPIC_FILTER_INVALID
    );
    // 3.1.1: the CONNACK return codes of the errors that have one.
    assert_eq!(
        reason::v311_connack_code(E::BadProtocolName.reason_code()),
        Some(1)
    );
    assert_eq!(
        reason::v311_connack_code(E::ClientIdRejected.reason_code()),
        Some(2)
    );
    assert_eq!(reason::v311_connack_code(E::BadUtf8.reason_code()), None);
    assert_eq!(E::BadQoS.to_string(), "invalid qos 3");
}

// Topic mapping. The expected subjects below are nats-server's own test tables
// (server/mqtt_test.go: TestMQTTTopicAndSubjectConversion, TestMQTTFilterConversion,
// TestMQTTTopicWithDot), checked against the rules of its server/mqtt.go
// (mqttToNATSSubjectConversion, natsSubjectToMQTTTopic, mqttNeedSubForLevelUp).

#[test]
fn topic_names_map_to_subjects_and_back_as_nats_server_does() {
    let table = [
        ("/", "/./"),
        ("//", "/././"),
        ("///", "/./././"),
        ("////", "/././././"),
        ("foo", "foo"),
        ("/foo", "/.foo"),
        ("//foo", "/./.foo"),
        ("///foo", "/././.foo"),
        ("///foo/", "/././.foo./"),
        ("///foo//", "/././.foo././"),
        ("///foo///", "/././.foo./././"),
        ("//.foo.//", "/././/foo//././"),
        ("foo/bar", "foo.bar"),
        ("/foo/bar", "/.foo.bar"),
        ("/foo/bar/", "/.foo.bar./"),
        ("foo/bar/baz", "foo.bar.baz"),
        ("/foo/bar/baz", "/.foo.bar.baz"),
        ("/foo/bar/baz/", "/.foo.bar.baz./"),
        ("bar/", "bar./"),
        ("bar//", "bar././"),
        ("bar///", "bar./././"),
        ("foo//bar", "foo./.bar"),
        ("foo///bar", "foo././.bar"),
        ("foo////bar", "foo./././.bar"),
        (".", "//"),
        ("..", "////"),
        ("...", "//////"),
        ("./", "//./"),
        (".//.", "//././/"),
        ("././.", "//.//.//"),
        ("././/.", "//.//././/"),
        (".foo", "//foo"),
        ("foo.", "foo//"),
        (".foo.", "//foo//"),
        ("foo../bar/", "foo////.bar./"),
        ("foo../bar/.", "foo////.bar.//"),
        ("/foo/", "/.foo./"),
        ("./foo/.", "//.foo.//"),
        ("foo.bar/baz", "foo//bar.baz"),
        ("spBv1.0/plant1", "spBv1//0.plant1"),
        ("a.b/c", "a//b.c"),
    ];
    for (topic, subject) in table {
        let t = Bytes::from_static(topic.as_bytes());
        let got = topic_to_subject(&t).unwrap();
        assert_eq!(&got[..], subject.as_bytes(), "{topic:?}");
        let back = subject_to_topic(&got).unwrap();
        assert_eq!(back, topic, "{subject:?} back");
    }
    // Unchanged topics are not copied.
    let t = Bytes::from_static(b"plain");
    assert_eq!(topic_to_subject(&t).unwrap().as_ptr(), t.as_ptr());
    let errors = [
        ("foo/+", TopicError::Wildcard),
        ("foo/#", TopicError::Wildcard),
        ("foo bar", TopicError::UnsupportedCharacter),
        ("foo\tbar", TopicError::UnsupportedCharacter),
        ("foo\x7fbar", TopicError::UnsupportedCharacter),
    ];
    for (topic, err) in errors {
        let t = Bytes::from_static(topic.as_bytes());
        assert_eq!(topic_to_subject(&t), Err(err), "{topic:?}");
    }
}

#[test]
fn filters_map_to_subjects_as_nats_server_does() {
    let table: [(&str, &str, Option<&str>); 30] = [
        ("+", "*", None),
        ("/+", "/.*", None),
        ("+/", "*./", None),
        ("/+/", "/.*./", None),
        ("foo/+", "foo.*", None),
        ("foo/+/", "foo.*./", None),
        ("foo/+/bar", "foo.*.bar", None),
        ("foo/+/+", "foo.*.*", None),
        ("foo/+/+/", "foo.*.*./", None),
        ("foo/+/+/bar", "foo.*.*.bar", None),
        ("foo//+", "foo./.*", None),
        ("foo//+/", "foo./.*./", None),
        ("foo//+//", "foo./.*././", None),
        ("foo//+//bar", "foo./.*./.bar", None),
        ("foo///+///bar", "foo././.*././.bar", None),
        ("foo.bar///+///baz", "foo//bar././.*././.baz", None),
        // `a/#` also matches `a`: the parent subject.
        ("#", ">", None),
        ("/#", "/.>", Some("/")),
        ("/foo/#", "/.foo.>", Some("/.foo")),
        ("foo/#", "foo.>", Some("foo")),
        ("foo//#", "foo./.>", Some("foo./")),
        ("foo///#", "foo././.>", Some("foo././")),
        ("foo/bar/#", "foo.bar.>", Some("foo.bar")),
        ("foo/bar.baz/#", "foo.bar//baz.>", Some("foo.bar//baz")),
        // NATS wildcards are not escaped.
        ("foo*/bar", "foo*.bar", None),
        ("foo>/bar", "foo>.bar", None),
        ("foo/*/bar", "foo.*.bar", None),
        ("foo/*/bar/*", "foo.*.bar.*", None),
        ("foo/>", "foo.>", Some("foo")),
        ("foo/*/bar/>", "foo.*.bar.>", Some("foo.*.bar")),
    ];
    for (filter, subject, parent) in table {
        let f = Bytes::from_static(filter.as_bytes());
        let got = filter_to_subjects(&f).unwrap();
        assert_eq!(&got.subject[..], subject.as_bytes(), "{filter:?}");
        assert_eq!(
            got.parent.as_deref(),
            parent.map(str::as_bytes),
            "{filter:?} parent"
        );
    }
    // The parent of `foo//#` is the subject of the topic `foo/`.
    let parent = filter_to_subjects(&Bytes::from_static(b"foo//#"))
        .unwrap()
        .parent
        .unwrap();
    assert_eq!(
        parent,
        topic_to_subject(&Bytes::from_static(b"foo/")).unwrap()
    );
}

#[test]
fn nats_subjects_map_to_topics() {
    let table = [
        ("foo.bar", "foo/bar"),
        ("spBv1//0.plant1", "spBv1.0/plant1"),
        ("plain", "plain"),
        ("a/b", "ab"), // a lone `/` escapes nothing and is dropped, as by nats-server
        ("a.", "a/"),
    ];
    for (subject, topic) in table {
        let got = subject_to_topic(&Bytes::from_static(subject.as_bytes())).unwrap();
        assert_eq!(got, topic, "{subject:?}");
    }
    assert_eq!(
        subject_to_topic(&Bytes::from_static(b"a.\xff")),
        Err(TopicError::NotAString)
    );
}

#[test]
fn topic_filter_rules() {
    let valid = [
        "#",
        "+",
        "a",
        "a/b",
        "a/#",
        "+/+",
        "/",
        "//",
        "a/+/c",
        "+/#",
        "$share/g/a",
        "a b",
    ];
    let invalid = [
        "", "a#", "a/#/b", "#/a", "a+", "+a/b", "a/b+/c", "##", "a/++",
    ];
    for f in valid {
        assert!(is_valid_topic_filter(f.as_bytes()), "{f:?}");
    }
    for f in invalid {
        assert!(!is_valid_topic_filter(f.as_bytes()), "{f:?}");
    }
    assert_eq!(
        shared_subscription(b"$share/g/a/+"),
        Some((&b"g"[..], &b"a/+"[..]))
    );
    for f in [
        "$share/g",
        "$share//a",
        "$share/g+/a",
        "$share/g/",
        "$share/g/a#",
        "a/b",
    ] {
        assert_eq!(shared_subscription(f.as_bytes()), None, "{f:?}");
    }
    assert!(is_valid_topic_name(b"a/b c"));
    assert!(!is_valid_topic_name(b"a/+"));
}
