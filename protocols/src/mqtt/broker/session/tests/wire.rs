use super::*;

// ----- topic aliases and packet size -------------------------------------------------------

fn topics_and_aliases(io: &mut TestIo) -> Vec<(String, Option<u16>)> {
    io.sent
        .drain(..)
        .filter_map(|(p, _)| match p {
            Packet::Publish(p) => Some((p.topic.as_str().to_string(), p.properties.topic_alias)),
            _ => None,
        })
        .collect()
}

#[test]
fn topic_aliases_are_set_up_then_used_alone() {
    let clock = Clock::new();
    let mut s = session(false);
    let mut io = TestIo::default();
    let mut a = attach(Version::V5, 0, 10);
    a.alias_max = 2;
    s.attach(a, at(&mut io, clock.at(0.0)));
    for subj in ["a.b", "a.b", "c", "d", "c", "a.b", "d"] {
        s.offer(
            publish(0, "x"),
            &Bytes::from(subj),
            at(&mut io, clock.at(0.0)),
        );
    }
    assert_eq!(
        topics_and_aliases(&mut io),
        vec![
            ("a/b".into(), Some(1)),
            ("".into(), Some(1)),
            ("c".into(), Some(2)),
            ("d".into(), None),
            ("".into(), Some(2)),
            ("".into(), Some(1)),
            ("d".into(), None),
        ]
    );
}

#[test]
fn an_alias_exists_only_once_the_client_was_sent_it() {
    let clock = Clock::new();
    let mut s = session(false);
    let mut io = TestIo::default();
    let mut a = attach(Version::V5, 0, 10);
    a.alias_max = 1;
    s.attach(a, at(&mut io, clock.at(0.0)));
    io.push = Push::Closed;
    s.offer(publish(0, "x"), &subject(), at(&mut io, clock.at(0.0)));
    io.push = Push::Queued {
        was_empty: true,
        backlogged: false,
    };
    s.offer(publish(0, "x"), &subject(), at(&mut io, clock.at(0.0)));
    let got = topics_and_aliases(&mut io);
    assert_eq!(got[1], ("a/b".into(), Some(1)), "{got:?}");
}

#[test]
fn aliases_are_not_used_for_3_1_1_or_without_a_maximum() {
    for (v, max) in [(Version::V311, 5), (Version::V5, 0)] {
        let clock = Clock::new();
        let mut s = session(false);
        let mut io = TestIo::default();
        let mut a = attach(v, 0, 10);
        a.alias_max = max;
        s.attach(a, at(&mut io, clock.at(0.0)));
        s.offer(publish(0, "x"), &subject(), at(&mut io, clock.at(0.0)));
        s.offer(publish(0, "x"), &subject(), at(&mut io, clock.at(0.0)));
        assert!(topics_and_aliases(&mut io)
            .iter()
            .all(|(t, a)| t == "a/b" && a.is_none()));
    }
}

#[test]
fn aliases_last_one_connection() {
    let clock = Clock::new();
    let mut s = session(false);
    let mut io = TestIo::default();
    let mut a = attach(Version::V5, 60, 10);
    a.alias_max = 3;
    s.attach(a.clone(), at(&mut io, clock.at(0.0)));
    s.offer(publish(0, "x"), &subject(), at(&mut io, clock.at(0.0)));
    s.detach(at(&mut io, clock.at(1.0)));
    s.attach(a, at(&mut io, clock.at(2.0)));
    s.offer(publish(0, "x"), &subject(), at(&mut io, clock.at(2.0)));
    let got = topics_and_aliases(&mut io);
    assert_eq!(got, vec![("a/b".into(), Some(1)), ("a/b".into(), Some(1))]);
}

each_level_and_store!(
    a_message_larger_than_the_client_takes_is_discarded,
    |v, d| {
        let clock = Clock::new();
        let mut s = session(d);
        let mut io = TestIo::default();
        let mut a = attach(v, 60, 10);
        a.max_packet_size = Some(64);
        s.attach(a, at(&mut io, clock.at(0.0)));
        io.take_stored();
        let big = "x".repeat(100);
        for q in 0..3 {
            assert_eq!(
                offer(&mut s, &mut io, &clock, 0.0, q, &big),
                Offered::Dropped,
                "QoS {q}"
            );
        }
        assert_eq!(s.in_flight(), 0);
        assert!(io.publishes().is_empty());
        // A stored copy of a discarded message is forgotten again.
        let ops = kinds(&io.take_stored());
        assert_eq!(
            ops.iter().filter(|k| **k == "insert").count(),
            ops.iter().filter(|k| **k == "delete").count()
        );
        assert!(matches!(
            offer(&mut s, &mut io, &clock, 0.0, 1, "small"),
            Offered::Sent { .. }
        ));
    }
);

#[test]
fn an_unmappable_subject_is_dropped() {
    let (mut s, mut io, clock) = online(false, Version::V5, 0, 10);
    // A subject whose topic would be empty cannot be an MQTT topic.
    let r = s.offer(
        publish(1, "x"),
        &Bytes::from_static(b"/"),
        at(&mut io, clock.at(0.0)),
    );
    assert!(matches!(r, Offered::Dropped | Offered::Sent { .. }));
}

#[test]
fn the_topic_of_the_last_subject_is_reused() {
    let (mut s, mut io, clock) = online(false, Version::V5, 0, 10);
    for subj in ["a.b", "a.b", "x//y", "a.b"] {
        s.offer(
            publish(0, "m"),
            &Bytes::from(subj),
            at(&mut io, clock.at(0.0)),
        );
    }
    let topics: Vec<String> = topics_and_aliases(&mut io)
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(topics, vec!["a/b", "a/b", "x.y", "a/b"]);
}
