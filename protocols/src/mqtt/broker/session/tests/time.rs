use super::*;
use crate::mqtt::broker::durable::SessionRecord;

// ----- message expiry ----------------------------------------------------------------------

each_level_and_store!(queued_messages_expire_and_carry_what_is_left, |v, d| {
    let clock = Clock::new();
    let mut s = session(d);
    let mut io = TestIo::default();
    s.attach(attach(v, 300, 10), at(&mut io, clock.at(0.0)));
    s.detach(at(&mut io, clock.at(0.0)));
    for (payload, expiry) in [("short", Some(1)), ("long", Some(60)), ("forever", None)] {
        let mut p = publish(1, payload);
        p.properties.message_expiry_interval = expiry;
        s.offer(p, &subject(), at(&mut io, clock.at(0.0)));
    }
    io.take_stored();
    let mut a = attach(v, 300, 10);
    a.present = true;
    s.attach(a, at(&mut io, clock.at(2.5)));
    let sent: Vec<(String, Option<u32>)> = io
        .sent
        .drain(..)
        .filter_map(|(p, _)| match p {
            Packet::Publish(p) => Some((
                String::from_utf8(p.payload.to_vec()).unwrap(),
                p.properties.message_expiry_interval,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        vec![("long".into(), Some(58)), ("forever".into(), None)]
    );
    let stored = kinds(&io.take_stored());
    assert_eq!(
        stored.contains(&"delete"),
        d,
        "{stored:?}: the expired copy is forgotten"
    );
});

#[test]
fn a_message_expires_exactly_at_its_interval() {
    for (wait, delivered) in [(9.9, true), (10.0, false), (10.5, false)] {
        let clock = Clock::new();
        let mut s = session(false);
        let mut io = TestIo::default();
        s.attach(attach(Version::V5, 300, 10), at(&mut io, clock.at(0.0)));
        s.detach(at(&mut io, clock.at(0.0)));
        let mut p = publish(1, "m");
        p.properties.message_expiry_interval = Some(10);
        s.offer(p, &subject(), at(&mut io, clock.at(0.0)));
        s.attach(attach(Version::V5, 300, 10), at(&mut io, clock.at(wait)));
        assert_eq!(io.payloads().len(), usize::from(delivered), "after {wait}s");
    }
}

// ----- attach, detach, expiry, wills ------------------------------------------------------

each_level_and_store!(in_flight_messages_are_resent_with_dup_on_return, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 10);
    offer(&mut s, &mut io, &clock, 0.0, 1, "one");
    offer(&mut s, &mut io, &clock, 0.0, 2, "two");
    offer(&mut s, &mut io, &clock, 0.0, 2, "three");
    s.acked(Ack::Pubrec, &resp(3), &mut io).unwrap();
    io.sent.clear();
    s.detach(at(&mut io, clock.at(1.0)));
    let mut a = attach(v, 60, 10);
    a.present = true;
    s.attach(a, at(&mut io, clock.at(2.0)));
    let sent: Vec<String> = io
        .sent
        .iter()
        .map(|(p, _)| match p {
            Packet::Publish(p) => format!("PUBLISH {} dup={}", p.packet_id, p.dup),
            Packet::PubRel(r) => format!("PUBREL {}", r.packet_id),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sent,
        vec!["PUBLISH 1 dup=true", "PUBLISH 2 dup=true", "PUBREL 3"]
    );
});

each_level_and_store!(a_detached_session_expires_after_its_interval, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 30, 10);
    s.detach(at(&mut io, clock.at(10.0)));
    assert!(!s.expired(clock.at(39.9).at));
    assert!(s.expired(clock.at(40.0).at));
    // Back in time: not expired any more.
    s.attach(attach(v, 30, 10), at(&mut io, clock.at(20.0)));
    assert!(!s.expired(clock.at(100.0).at));
});

#[test]
fn a_session_that_never_expires_does_not() {
    let (mut s, mut io, clock) = online(true, Version::V311, u32::MAX, 10);
    s.detach(at(&mut io, clock.at(1.0)));
    assert!(!s.expired(clock.at(1e9).at));
}

fn will(topic: &'static str, delay: Option<u32>) -> Box<Will> {
    Box::new(Will {
        topic: Utf8Bytes::from_static(topic),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..WillProperties::default()
        },
    })
}

#[test]
fn a_deferred_will_is_due_at_its_time_once() {
    let (mut s, mut io, clock) = online(true, Version::V5, 60, 10);
    s.detach(at(&mut io, clock.at(0.0)));
    s.defer_will(
        will("w", Some(5)),
        clock.at(5.0).at,
        at(&mut io, clock.at(0.0)),
    );
    assert!(s.due_will(at(&mut io, clock.at(4.9))).is_none());
    let w = s.due_will(at(&mut io, clock.at(5.0))).expect("due");
    assert_eq!(w.topic.as_str(), "w");
    assert!(s.due_will(at(&mut io, clock.at(6.0))).is_none(), "once");
    // Stored when deferred and when taken.
    assert_eq!(
        kinds(&io.take_stored())
            .iter()
            .filter(|k| **k == "session")
            .count(),
        3
    );
}

#[test]
fn a_returning_client_cancels_its_pending_will() {
    let (mut s, mut io, clock) = online(false, Version::V5, 60, 10);
    s.detach(at(&mut io, clock.at(0.0)));
    s.defer_will(
        will("w", Some(30)),
        clock.at(30.0).at,
        at(&mut io, clock.at(0.0)),
    );
    s.attach(attach(Version::V5, 60, 10), at(&mut io, clock.at(10.0)));
    assert!(s.due_will(at(&mut io, clock.at(100.0))).is_none());
}

#[test]
fn an_ending_session_hands_over_its_pending_will() {
    let (mut s, mut io, clock) = online(false, Version::V5, 60, 10);
    s.detach(at(&mut io, clock.at(0.0)));
    s.defer_will(
        will("w", Some(300)),
        clock.at(300.0).at,
        at(&mut io, clock.at(0.0)),
    );
    let w = s
        .end(&mut io)
        .expect("the will is due when the session ends");
    assert_eq!(w.topic.as_str(), "w");
    assert!(io.take_stored().is_empty(), "no store: nothing to erase");
}

#[test]
fn the_record_keeps_the_pending_will_and_when_it_is_due() {
    let (mut s, mut io, clock) = online(true, Version::V5, 60, 10);
    s.detach(at(&mut io, clock.at(0.0)));
    s.defer_will(
        will("w", Some(5)),
        clock.at(5.0).at,
        at(&mut io, clock.at(0.0)),
    );
    let r = s.record(clock.at(1.0));
    assert!(r.will.is_some());
    assert_eq!(r.will_due_ms, Some(clock.at(5.0).unix_ms));
    let (back, _) = Session::restored(
        KEY.to_vec(),
        r,
        clock.at(1.0).unix_ms,
        limits(),
        clock.at(1.0),
    )
    .unwrap();
    assert!(back
        .flows
        .as_ref()
        .is_some_and(|f| f.pending_will.is_some()));
}

#[test]
fn a_restored_will_of_a_lost_connection_counts_from_when_the_server_was_alive() {
    let clock = Clock::new();
    let w = will("w", Some(20));
    let record = SessionRecord {
        level: 5,
        expiry_secs: 60,
        expires_at_ms: None,
        subscriptions: vec![],
        will: Some(durable::encode_will(&w)),
        will_due_ms: None,
    };
    // The server was last alive at t=10; it restarts at t=100.
    let now = clock.at(100.0);
    let (mut s, _) =
        Session::restored(KEY.to_vec(), record, clock.at(10.0).unix_ms, limits(), now).unwrap();
    let mut io = TestIo::default();
    assert!(
        s.due_will(at(&mut io, clock.at(100.0))).is_some(),
        "due at 30, now 100"
    );
    assert!(s.expired(clock.at(100.0).at), "expired at 70");
}

#[test]
fn a_restored_session_with_a_bad_will_is_refused() {
    let clock = Clock::new();
    let record = SessionRecord {
        level: 4,
        expiry_secs: 60,
        expires_at_ms: None,
        subscriptions: vec![],
        will: Some(vec![1, 2, 3]),
        will_due_ms: None,
    };
    assert!(Session::restored(KEY.to_vec(), record, 0, limits(), clock.at(0.0)).is_err());
}

#[test]
fn times_far_ahead_in_a_record_are_capped() {
    let clock = Clock::new();
    let now = clock.at(0.0);
    let far = now.instant_of(u64::MAX);
    assert!(far > now.at);
    assert_eq!(now.instant_of(now.unix_ms), now.at);
    assert!(now.instant_of(0) <= now.at);
}
