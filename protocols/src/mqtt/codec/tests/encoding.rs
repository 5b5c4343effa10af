use super::*;
use Version::*;

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

/// The defect of mqttbytes: a SubscribeFilter Identifier followed by more properties.
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
