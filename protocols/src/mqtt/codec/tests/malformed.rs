use super::*;
use Version::*;

/// Where a malformed input is decoded.
#[derive(Debug, Clone, Copy)]
enum Ctx {
    /// A fresh server-side decoder: the input starts with CONNECT.
    Fresh,
    /// A server-side decoder after a valid CONNECT at this level.
    Server(Version),
    /// A client-side decoder at this level.
    Client(Version),
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
