use super::*;
use crate::mqtt::broker::durable::SessionRecord;

// ----- the store ---------------------------------------------------------------------------

#[test]
fn a_durable_qos1_copy_is_stored_sent_at_once_and_forgotten_when_acknowledged() {
    let (mut s, mut io, clock) = online(true, Version::V5, 60, 10);
    let wait = Arc::new(Counter::default());
    io.ack_wait = Some(wait.clone());
    offer(&mut s, &mut io, &clock, 0.0, 1, "m");
    assert_eq!(io.publishes(), vec![(1, "m".into(), false, false)]);
    assert_eq!(kinds(&io.take_stored()), vec!["insert"]);
    assert_eq!(wait.sent.load(Ordering::Relaxed), 1);
    s.acked(Ack::Puback, &resp(1), &mut io).unwrap();
    assert_eq!(wait.acked.load(Ordering::Relaxed), 1);
    let ops = io.take_stored();
    assert_eq!(kinds(&ops), vec!["delete"]);
    // The delete names the insert's key.
    let Op::Delete { key, .. } = &ops[0] else {
        unreachable!()
    };
    assert_eq!(key, &durable::message_key(KEY, 1));
}

#[test]
fn a_durable_qos2_copy_is_held_until_its_record_is_committed() {
    let (mut s, mut io, clock) = online(true, Version::V5, 60, 10);
    io.ack_wait = Some(Arc::new(Counter::default()));
    offer(&mut s, &mut io, &clock, 0.0, 2, "m");
    assert_eq!(io.publishes(), vec![(1, "m".into(), false, true)]);
    let ops = io.take_stored();
    assert_eq!(kinds(&ops), vec!["insert"]);
    // The record carries the packet id the client will know.
    let Op::Insert { value, .. } = &ops[0] else {
        unreachable!()
    };
    let r = durable::MessageRecord::decode(value).unwrap();
    assert_eq!((r.packet_id, r.qos), (1, QoS::ExactlyOnce));
}

#[test]
fn in_memory_and_clean_sessions_store_nothing() {
    for (has_store, expiry) in [(false, 60), (true, 0)] {
        let (mut s, mut io, clock) = online(has_store, Version::V5, expiry, 2);
        for i in 0..5 {
            offer(&mut s, &mut io, &clock, 0.0, 1 + (i % 2), &i.to_string());
        }
        s.acked(Ack::Puback, &resp(1), &mut io).unwrap();
        assert!(
            io.take_stored().is_empty(),
            "store {has_store} expiry {expiry}"
        );
        assert!(!s.durable());
    }
}

#[test]
fn queued_copies_of_a_detached_durable_session_are_stored_then_sent_on_return() {
    let (mut s, mut io, clock) = online(true, Version::V5, 60, 10);
    s.detach(at(&mut io, clock.at(1.0)));
    io.take_stored();
    for (i, q) in [1u8, 2, 1].into_iter().enumerate() {
        assert!(matches!(
            offer(&mut s, &mut io, &clock, 2.0, q, &i.to_string()),
            Offered::Queued { .. }
        ));
    }
    assert_eq!(kinds(&io.take_stored()), vec!["insert", "insert", "insert"]);
    let mut a = attach(Version::V5, 60, 10);
    a.present = true;
    s.attach(a, at(&mut io, clock.at(3.0)));
    // The QoS 2 copy goes out once its packet id is on the disk: its record is put again,
    // with the id, and the PUBLISH held for that commit.
    assert_eq!(
        io.publishes(),
        vec![
            (1, "0".into(), false, false),
            (2, "1".into(), false, true),
            (3, "2".into(), false, false)
        ]
    );
    assert_eq!(kinds(&io.take_stored()), vec!["session", "put"]);
}

#[test]
fn restored_sessions_keep_in_flight_ids_and_requeue_the_rest() {
    let clock = Clock::new();
    let record = SessionRecord {
        level: 5,
        expiry_secs: 60,
        expires_at_ms: None,
        subscriptions: vec![],
        will: None,
        will_due_ms: None,
    };
    let now = clock.at(0.0);
    let (mut s, subs) =
        Session::restored(KEY.to_vec(), record, now.unix_ms, limits(), now).unwrap();
    assert!(subs.is_empty());
    let stored = |q: u8, pid: u16, released: bool, payload: &str| durable::MessageRecord {
        qos: qos(q),
        packet_id: pid,
        released,
        queued_at_ms: now.unix_ms,
        publish: Publish {
            topic: Utf8Bytes::from_static("a/b"),
            ..publish(q, payload)
        },
    };
    s.restore_message(1, stored(2, 7, false, "sent"), now)
        .unwrap();
    s.restore_message(2, stored(2, 8, true, "released"), now)
        .unwrap();
    s.restore_message(3, stored(1, 0, false, "waiting"), now)
        .unwrap();
    s.restore_inbound(42);
    assert_eq!((s.in_flight(), s.queued(), s.inbound_pending()), (2, 1, 1));
    let mut io = TestIo::default();
    let mut a = attach(Version::V5, 60, 10);
    a.present = true;
    s.attach(a, at(&mut io, clock.at(1.0)));
    let sent: Vec<String> = io
        .sent
        .iter()
        .map(|(p, _)| match p {
            Packet::Publish(p) => format!(
                "PUBLISH {} {} dup={}",
                p.packet_id,
                String::from_utf8_lossy(&p.payload),
                p.dup
            ),
            Packet::PubRel(r) => format!("PUBREL {}", r.packet_id),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            "PUBLISH 7 sent dup=true",
            "PUBREL 8",
            "PUBLISH 1 waiting dup=true"
        ]
    );
    assert!(s
        .restore_message(u64::MAX, stored(1, 0, false, "x"), now)
        .is_err());
}

#[test]
fn a_stored_session_that_ends_is_erased() {
    let (mut s, mut io, clock) = online(true, Version::V5, 60, 10);
    s.save(at(&mut io, clock.at(0.0)));
    assert_eq!(kinds(&io.take_stored()), vec!["session"]);
    assert!(s.end(&mut io).is_none());
    assert_eq!(
        kinds(&io.take_stored()),
        vec!["del-session", "del-prefix", "del-prefix"]
    );
}

#[test]
fn a_stored_session_whose_expiry_becomes_zero_is_removed_when_saved() {
    let (mut s, mut io, clock) = online(true, Version::V5, 60, 10);
    s.save(at(&mut io, clock.at(0.0)));
    io.take_stored();
    s.set_expiry(0);
    s.detach(at(&mut io, clock.at(1.0)));
    assert_eq!(
        kinds(&io.take_stored()),
        vec!["del-session", "del-prefix", "del-prefix"]
    );
    // Saved again: nothing (it is not stored any more).
    s.save(at(&mut io, clock.at(2.0)));
    assert!(io.take_stored().is_empty());
}

#[test]
fn the_record_holds_what_a_restart_needs() {
    let (mut s, mut io, clock) = online(true, Version::V5, 120, 10);
    s.subscribe(
        Bytes::from_static(b"x/+"),
        SubRecord {
            filter: "x/+".into(),
            qos: 1,
            no_local: true,
            retain_as_published: false,
            subscription_id: Some(7),
        },
    );
    s.detach(at(&mut io, clock.at(10.0)));
    let r = s.record(clock.at(10.0));
    assert_eq!((r.level, r.expiry_secs), (5, 120));
    assert_eq!(r.expires_at_ms, Some(clock.at(130.0).unix_ms));
    assert_eq!(r.subscriptions.len(), 1);
    assert_eq!(r.subscriptions[0].subscription_id, Some(7));
    let back = SessionRecord::decode(&r.encode()).unwrap();
    assert_eq!(back, r);
}

// ----- subscriptions -----------------------------------------------------------------------

#[test]
fn subscriptions_are_recorded_by_filter() {
    let mut s = session(false);
    let rec = |f: &str| SubRecord {
        filter: f.into(),
        qos: 1,
        no_local: false,
        retain_as_published: false,
        subscription_id: None,
    };
    assert!(!s.subscribe(Bytes::from_static(b"a/#"), rec("a/#")));
    assert!(
        s.subscribe(Bytes::from_static(b"a/#"), rec("a/#")),
        "replaced"
    );
    assert!(!s.subscribe(Bytes::from_static(b"b"), rec("b")));
    assert_eq!(s.subscriptions(), 2);
    assert!(s.has_subscription(b"b"));
    assert!(s.unsubscribe(b"b"));
    assert!(!s.unsubscribe(b"b"));
    assert_eq!(s.subscriptions(), 1);
}
