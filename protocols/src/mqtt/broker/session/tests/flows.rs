//! Whole flows: a session's messages across windows, QoS levels, reconnections and outputs
//! that fail.

use super::*;

/// Acknowledges every PUBLISH in `sent` as its QoS asks (`qos_of` tells it from the payload):
/// QoS 1 with PUBACK, QoS 2 with PUBREC then PUBCOMP. Returns what the session sent meanwhile.
fn ack_each(
    s: &mut Session,
    io: &mut TestIo,
    sent: &[(u16, String, bool, bool)],
    qos_of: impl Fn(&str) -> u8,
) -> Vec<(u16, String, bool, bool)> {
    let mut more = Vec::new();
    for (id, payload, _, _) in sent {
        if qos_of(payload) == 1 {
            s.acked(Ack::Puback, &resp(*id), io).unwrap();
        } else {
            assert!(
                matches!(
                    s.acked(Ack::Pubrec, &resp(*id), io),
                    Ok(Acked::PubRel { .. })
                ),
                "PUBREC {id} is answered with PUBREL"
            );
            s.acked(Ack::Pubcomp, &resp(*id), io).unwrap();
        }
        more.extend(io.publishes());
    }
    more
}

each_level_and_store!(
    queued_messages_keep_their_order_across_qos_levels,
    |v, d| {
        let (mut s, mut io, clock) = online(d, v, 60, 2);
        for i in 0..8 {
            offer(&mut s, &mut io, &clock, 0.0, 1 + (i % 2), &i.to_string());
        }
        let qos_of = |p: &str| 1 + (p.parse::<u8>().unwrap() % 2);
        let mut order = Vec::new();
        let mut sent = io.publishes();
        for _ in 0..10 {
            if sent.is_empty() {
                break;
            }
            assert!(sent.len() <= 2, "the window is 2: {sent:?}");
            order.extend(sent.iter().map(|p| p.1.clone()));
            sent = ack_each(&mut s, &mut io, &sent, qos_of);
        }
        assert_eq!(order, (0..8).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!((s.in_flight(), s.queued()), (0, 0));
    }
);

each_level_and_store!(
    a_returning_client_gets_its_queue_as_its_window_allows,
    |v, d| {
        let (mut s, mut io, clock) = online(d, v, 60, 10);
        s.detach(at(&mut io, clock.at(1.0)));
        for i in 0..5 {
            assert!(matches!(
                offer(&mut s, &mut io, &clock, 2.0, 1, &i.to_string()),
                Offered::Queued { .. }
            ));
        }
        assert!(
            io.publishes().is_empty(),
            "nothing goes to a detached session"
        );
        assert!(
            !s.should_wait(),
            "publishers never wait for an absent client"
        );
        let mut a = attach(v, 60, 3);
        a.present = true;
        s.attach(a, at(&mut io, clock.at(3.0)));
        assert_eq!(io.payloads(), vec!["0", "1", "2"]);
        assert_eq!((s.in_flight(), s.queued()), (3, 2));
        s.acked(Ack::Puback, &resp(2), &mut io).unwrap();
        assert_eq!(
            io.payloads(),
            vec!["3"],
            "an acknowledgement out of order frees a slot too"
        );
        s.acked(Ack::Puback, &resp(1), &mut io).unwrap();
        assert_eq!(io.payloads(), vec!["4"]);
        assert_eq!((s.in_flight(), s.queued()), (3, 0));
    }
);

each_level_and_store!(packet_ids_continue_across_a_reconnect, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 10);
    offer(&mut s, &mut io, &clock, 0.0, 1, "a");
    offer(&mut s, &mut io, &clock, 0.0, 1, "b");
    s.acked(Ack::Puback, &resp(1), &mut io).unwrap();
    io.sent.clear();
    s.detach(at(&mut io, clock.at(1.0)));
    let mut a = attach(v, 60, 10);
    a.present = true;
    s.attach(a, at(&mut io, clock.at(2.0)));
    assert_eq!(io.publishes(), vec![(2, "b".into(), true, false)]);
    offer(&mut s, &mut io, &clock, 2.0, 1, "c");
    assert_eq!(io.publishes(), vec![(3, "c".into(), false, false)]);
    // The resent one is still in flight and acknowledged as usual.
    s.acked(Ack::Puback, &resp(2), &mut io).unwrap();
    s.acked(Ack::Puback, &resp(3), &mut io).unwrap();
    assert_eq!(s.in_flight(), 0);
});

each_level_and_store!(
    a_copy_sent_to_a_slow_or_closed_output_stays_in_flight,
    |v, d| {
        let (mut s, mut io, clock) = online(d, v, 60, 10);
        io.push = Push::SlowConsumer;
        assert_eq!(
            offer(&mut s, &mut io, &clock, 0.0, 1, "slow"),
            Offered::Sent { wake: false }
        );
        io.push = Push::Closed;
        assert_eq!(
            offer(&mut s, &mut io, &clock, 0.0, 2, "closed"),
            Offered::Sent { wake: false }
        );
        assert_eq!(s.in_flight(), 2);
        io.sent.clear();
        io.push = Push::Queued {
            was_empty: true,
            backlogged: false,
        };
        s.detach(at(&mut io, clock.at(1.0)));
        let mut a = attach(v, 60, 10);
        a.present = true;
        s.attach(a, at(&mut io, clock.at(2.0)));
        assert_eq!(
            io.publishes(),
            vec![
                (1, "slow".into(), true, false),
                (2, "closed".into(), true, false)
            ]
        );
    }
);

each_level_and_store!(a_full_queue_of_an_absent_client_keeps_the_newest, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 10);
    s.detach(at(&mut io, clock.at(1.0)));
    io.take_stored();
    let max = limits().max_queued;
    for i in 0..max + 3 {
        offer(&mut s, &mut io, &clock, 2.0, 1, &i.to_string());
    }
    assert_eq!(s.queued(), max);
    let stored = kinds(&io.take_stored());
    let inserts = stored.iter().filter(|k| **k == "insert").count();
    let deletes = stored.iter().filter(|k| **k == "delete").count();
    if d {
        assert_eq!(
            (inserts, deletes),
            (max + 3, 3),
            "the dropped copies leave the store"
        );
    } else {
        assert!(stored.is_empty(), "{stored:?}");
    }
    let mut a = attach(v, 60, 1);
    a.present = true;
    s.attach(a, at(&mut io, clock.at(3.0)));
    assert_eq!(io.payloads(), vec!["3"], "the three oldest were dropped");
});

each_level_and_store!(
    a_released_id_is_free_and_releasing_it_again_is_harmless,
    |v, d| {
        let (mut s, mut io, _clock) = online(d, v, 60, 10);
        for id in [7u16, 8, 9] {
            assert!(s.receive_qos2(id, &mut io));
        }
        assert_eq!(s.inbound_pending(), 3);
        assert_eq!(
            s.release_qos2(8, &mut io),
            d,
            "a durable release waits for the store"
        );
        assert!(!s.release_qos2(8, &mut io), "a second PUBREL finds nothing");
        assert_eq!(s.inbound_pending(), 2);
        assert!(s.receive_qos2(8, &mut io), "the id is new again");
        assert!(!s.receive_qos2(7, &mut io), "7 is still a retry");
        let stored = kinds(&io.take_stored());
        if d {
            assert_eq!(
                stored,
                vec!["inbound", "inbound", "inbound", "del-inbound", "inbound"]
            );
        } else {
            assert!(stored.is_empty());
        }
    }
);

each_level_and_store!(acknowledgements_report_to_the_publishers_wait, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 10);
    let counter = Arc::new(Counter::default());
    io.ack_wait = Some(counter.clone());
    offer(&mut s, &mut io, &clock, 0.0, 1, "a");
    offer(&mut s, &mut io, &clock, 0.0, 1, "b");
    io.ack_wait = None;
    // Only a stored copy sent at once counts in (an in-memory one needs no disk).
    let counted = if d { 2 } else { 0 };
    assert_eq!(counter.sent.load(Ordering::Relaxed), counted);
    s.acked(Ack::Puback, &resp(2), &mut io).unwrap();
    s.acked(Ack::Puback, &resp(1), &mut io).unwrap();
    assert_eq!(counter.acked.load(Ordering::Relaxed), counted);
});

each_level_and_store!(only_an_attached_client_slows_its_publishers, |v, d| {
    let clock = Clock::new();
    let mut s = Session::new(
        KEY.to_vec(),
        d,
        Limits {
            max_queued: 4 * QUEUE_LOW_WATERMARK,
            refuse_when_full: false,
        },
    );
    let mut io = TestIo::default();
    s.attach(attach(v, 60, 1), at(&mut io, clock.at(0.0)));
    for i in 0..QUEUE_LOW_WATERMARK {
        offer(&mut s, &mut io, &clock, 0.0, 1, &i.to_string());
    }
    assert!(!s.should_wait(), "at the watermark: not yet");
    for _ in 0..3 {
        offer(&mut s, &mut io, &clock, 0.0, 1, "more");
    }
    assert!(
        s.should_wait(),
        "an attached, backlogged client slows its publishers"
    );
    s.set_stuck();
    assert!(!s.should_wait(), "unless it stopped acknowledging");
    s.acked(Ack::Puback, &resp(1), &mut io).unwrap();
    assert!(
        s.should_wait(),
        "an acknowledgement shows it is alive again (one more went out, two behind the mark)"
    );
    s.detach(at(&mut io, clock.at(1.0)));
    assert!(!s.should_wait(), "an absent client never slows anyone");
    assert!(s.end(&mut io).is_none(), "no will was deferred");
});

each_level_and_store!(
    what_a_session_keeps_for_long_gets_memory_of_its_own,
    |v, d| {
        let clock = Clock::new();
        let mut s = Session::new(
            KEY.to_vec(),
            d,
            Limits {
                max_queued: 4 * QUEUE_HIGH_WATERMARK,
                refuse_when_full: false,
            },
        );
        let mut io = TestIo::default();
        s.attach(attach(v, 60, 2), at(&mut io, clock.at(0.0)));
        // Two sent at once and a short queue behind them: slices of the publisher's buffer.
        for i in 0..QUEUE_HIGH_WATERMARK + 2 {
            offer(&mut s, &mut io, &clock, 0.0, 1, &i.to_string());
        }
        assert_eq!(s.queued(), QUEUE_HIGH_WATERMARK);
        assert_eq!(io.kept, 0);
        // Behind a backlog: copied.
        for _ in 0..3 {
            offer(&mut s, &mut io, &clock, 0.0, 1, "deep");
        }
        assert_eq!(io.kept, 3);
        // The client leaves: the rest is copied now, once.
        s.detach(at(&mut io, clock.at(1.0)));
        assert_eq!(io.kept, 3 + 2 + QUEUE_HIGH_WATERMARK);
        // For a client that is away, every message.
        offer(&mut s, &mut io, &clock, 1.0, 1, "away");
        assert_eq!(io.kept, 3 + 2 + QUEUE_HIGH_WATERMARK + 1);
        let mut a = attach(v, 60, 2);
        a.present = true;
        s.attach(a, at(&mut io, clock.at(2.0)));
        s.detach(at(&mut io, clock.at(3.0)));
        assert_eq!(io.kept, 3 + 2 + QUEUE_HIGH_WATERMARK + 1, "nothing twice");
        // The payloads are the same bytes.
        let mut a = attach(v, 60, 2);
        a.present = true;
        io.sent.clear();
        s.attach(a, at(&mut io, clock.at(4.0)));
        assert_eq!(io.payloads(), vec!["0", "1"]);
    }
);
