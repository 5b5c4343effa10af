use super::*;

// ----- QoS 0 -------------------------------------------------------------------------------

each_level_and_store!(qos0_goes_to_an_attached_client_only, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 10);
    assert_eq!(
        offer(&mut s, &mut io, &clock, 0.0, 0, "x"),
        Offered::Sent { wake: true }
    );
    assert_eq!(io.publishes(), vec![(0, "x".into(), false, false)]);
    s.detach(at(&mut io, clock.at(1.0)));
    assert_eq!(
        offer(&mut s, &mut io, &clock, 1.0, 0, "y"),
        Offered::Dropped
    );
    assert!(io.publishes().is_empty());
    assert_eq!(s.queued(), 0);
});

each_level_and_store!(qos0_never_touches_the_store, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 10);
    for i in 0..5 {
        offer(&mut s, &mut io, &clock, 0.0, 0, &i.to_string());
    }
    assert!(io.take_stored().is_empty());
});

each_level_and_store!(qos0_reports_a_slow_consumer_and_a_closed_output, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 0, 10);
    io.push = Push::SlowConsumer;
    assert_eq!(
        offer(&mut s, &mut io, &clock, 0.0, 0, "x"),
        Offered::SlowConsumer
    );
    io.push = Push::Closed;
    assert_eq!(
        offer(&mut s, &mut io, &clock, 0.0, 0, "x"),
        Offered::Dropped
    );
});

// ----- QoS 1/2 windows and packet identifiers ---------------------------------------------------

each_level_and_store!(qos1_and_2_take_packet_ids_in_order, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 0, 10);
    for (i, q) in [1u8, 2, 1, 2].into_iter().enumerate() {
        offer(&mut s, &mut io, &clock, 0.0, q, &i.to_string());
    }
    let ids: Vec<u16> = io.publishes().into_iter().map(|p| p.0).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    assert_eq!(s.in_flight(), 4);
});

each_level_and_store!(the_receive_maximum_bounds_the_window, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 2);
    for i in 0..5 {
        offer(&mut s, &mut io, &clock, 0.0, 1, &i.to_string());
    }
    assert_eq!(io.payloads(), vec!["0", "1"]);
    assert_eq!((s.in_flight(), s.queued()), (2, 3));
    // A connected client's short queue keeps the publisher's slices (see flows.rs).
    assert_eq!(io.kept, 0);
    s.acked(Ack::Puback, &resp(1), &mut io).unwrap();
    assert_eq!(io.payloads(), vec!["2"]);
    s.acked(Ack::Puback, &resp(2), &mut io).unwrap();
    s.acked(Ack::Puback, &resp(3), &mut io).unwrap();
    assert_eq!(io.payloads(), vec!["3", "4"]);
    assert_eq!((s.in_flight(), s.queued()), (2, 0));
});

each_level_and_store!(a_receive_maximum_of_one_sends_one_at_a_time, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 1);
    for i in 0..3 {
        offer(&mut s, &mut io, &clock, 0.0, 2, &i.to_string());
    }
    for (i, pid) in [1u16, 2, 3].into_iter().enumerate() {
        let sent = io.publishes();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            (sent[0].0, sent[0].1.as_str()),
            (pid, i.to_string().as_str())
        );
        s.acked(Ack::Pubrec, &resp(pid), &mut io).unwrap();
        assert!(io.publishes().is_empty(), "nothing before PUBCOMP");
        s.acked(Ack::Pubcomp, &resp(pid), &mut io).unwrap();
    }
});

#[test]
fn packet_ids_wrap_and_skip_those_in_flight() {
    let (mut s, mut io, clock) = online(false, Version::V5, 0, 1024);
    s.next_packet_id = u16::MAX - 1;
    offer(&mut s, &mut io, &clock, 0.0, 1, "a");
    offer(&mut s, &mut io, &clock, 0.0, 1, "b");
    offer(&mut s, &mut io, &clock, 0.0, 1, "c");
    let ids: Vec<u16> = io.publishes().into_iter().map(|p| p.0).collect();
    assert_eq!(ids, vec![u16::MAX - 1, u16::MAX, 1]);
    // 2 is in flight: the next id skips it.
    s.next_packet_id = 1;
    offer(&mut s, &mut io, &clock, 0.0, 1, "d");
    s.acked(Ack::Puback, &resp(1), &mut io).unwrap();
    offer(&mut s, &mut io, &clock, 0.0, 1, "e");
    let ids: Vec<u16> = io.publishes().into_iter().map(|p| p.0).collect();
    assert_eq!(
        ids,
        vec![2, 3],
        "ids go on from the last one, skipping what is in flight"
    );
}

#[test]
fn a_full_id_space_is_never_reused_while_in_flight() {
    let (mut s, mut io, clock) = online(false, Version::V5, 0, u16::MAX);
    for i in 0..100 {
        offer(&mut s, &mut io, &clock, 0.0, 1, &i.to_string());
    }
    let mut ids: Vec<u16> = io.publishes().into_iter().map(|p| p.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100);
}

// ----- queue limits ------------------------------------------------------------------------

#[test]
fn a_full_queue_drops_its_oldest() {
    let clock = Clock::new();
    let mut s = Session::new(
        KEY.to_vec(),
        true,
        Limits {
            max_queued: 3,
            refuse_when_full: false,
        },
    );
    let mut io = TestIo::default();
    s.attach(attach(Version::V5, 60, 10), at(&mut io, clock.at(0.0)));
    s.detach(at(&mut io, clock.at(0.0)));
    io.take_stored();
    let mut overflows = 0;
    for i in 0..5 {
        if let Offered::Queued { overflow: true, .. } =
            offer(&mut s, &mut io, &clock, 0.0, 1, &i.to_string())
        {
            overflows += 1;
        }
    }
    assert_eq!(overflows, 2);
    assert_eq!(s.queued(), 3);
    // Two dropped copies forgotten in the store.
    assert_eq!(
        kinds(&io.take_stored())
            .iter()
            .filter(|k| **k == "delete")
            .count(),
        2
    );
    s.attach(attach(Version::V5, 60, 10), at(&mut io, clock.at(1.0)));
    assert_eq!(io.payloads(), vec!["2", "3", "4"]);
}

#[test]
fn a_full_queue_refuses_when_told_to() {
    let clock = Clock::new();
    let mut s = Session::new(
        KEY.to_vec(),
        false,
        Limits {
            max_queued: 2,
            refuse_when_full: true,
        },
    );
    let mut io = TestIo::default();
    let results: Vec<Offered> = (0..4)
        .map(|i| offer(&mut s, &mut io, &clock, 0.0, 1, &i.to_string()))
        .collect();
    assert!(matches!(
        results[0],
        Offered::Queued {
            overflow: false,
            ..
        }
    ));
    assert!(matches!(
        results[1],
        Offered::Queued {
            overflow: false,
            ..
        }
    ));
    assert_eq!(&results[2..], &[Offered::Refused, Offered::Refused]);
    s.attach(attach(Version::V5, 0, 10), at(&mut io, clock.at(1.0)));
    assert_eq!(io.payloads(), vec!["0", "1"]);
}

#[test]
fn a_backlog_asks_publishers_to_pause_until_the_client_is_stuck() {
    let clock = Clock::new();
    let mut s = Session::new(
        KEY.to_vec(),
        false,
        Limits {
            max_queued: 100_000,
            refuse_when_full: false,
        },
    );
    let mut io = TestIo::default();
    s.attach(attach(Version::V5, 0, 1), at(&mut io, clock.at(0.0)));
    let mut backlog_at = None;
    for i in 0..(QUEUE_HIGH_WATERMARK + 10) {
        if let Offered::Queued { backlog: true, .. } = offer(&mut s, &mut io, &clock, 0.0, 1, "m") {
            backlog_at.get_or_insert(i);
        }
    }
    // One in flight, then the queue passes the high watermark.
    assert_eq!(backlog_at, Some(QUEUE_HIGH_WATERMARK + 1));
    assert!(s.should_wait());
    s.set_stuck();
    assert!(!s.should_wait(), "a stuck client is not waited for");
    assert!(matches!(
        offer(&mut s, &mut io, &clock, 0.0, 1, "m"),
        Offered::Queued { backlog: false, .. }
    ));
    // Far enough behind (half the limit), publishers pause even for a stuck client.
    for _ in 0..50_000 {
        offer(&mut s, &mut io, &clock, 0.0, 1, "m");
    }
    assert!(s.should_wait());
    // Detached: nobody waits.
    s.detach(at(&mut io, clock.at(1.0)));
    assert!(!s.should_wait());
}
