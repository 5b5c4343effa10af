use super::*;

// ----- acknowledgements --------------------------------------------------------------------

each_level_and_store!(puback_completes_a_qos1_message, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 10);
    offer(&mut s, &mut io, &clock, 0.0, 1, "m");
    assert_eq!(s.acked(Ack::Puback, &resp(1), &mut io), Ok(Acked::Done));
    assert_eq!(s.in_flight(), 0);
});

each_level_and_store!(the_wrong_acknowledgement_kind_is_refused, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 10);
    offer(&mut s, &mut io, &clock, 0.0, 1, "one");
    offer(&mut s, &mut io, &clock, 0.0, 2, "two");
    assert_eq!(s.acked(Ack::Pubrec, &resp(1), &mut io), Err(WrongAck));
    assert_eq!(s.acked(Ack::Pubcomp, &resp(1), &mut io), Err(WrongAck));
    assert_eq!(s.acked(Ack::Puback, &resp(2), &mut io), Err(WrongAck));
    assert_eq!(
        s.acked(Ack::Pubcomp, &resp(2), &mut io),
        Err(WrongAck),
        "PUBCOMP before PUBREC"
    );
    // Nothing changed.
    assert_eq!(s.in_flight(), 2);
});

each_level_and_store!(qos2_goes_pubrec_pubrel_pubcomp, |v, d| {
    let (mut s, mut io, clock) = online(d, v, 60, 10);
    offer(&mut s, &mut io, &clock, 0.0, 2, "m");
    io.take_stored();
    let answer = s.acked(Ack::Pubrec, &resp(1), &mut io).unwrap();
    let Acked::PubRel { packet, durable } = answer else {
        panic!("PUBREL expected");
    };
    assert_eq!(*packet, Packet::PubRel(resp(1)));
    assert_eq!(
        durable, d,
        "PUBREL waits for the store only when the session is stored"
    );
    assert_eq!(
        kinds(&io.take_stored()),
        if d { vec!["put"] } else { vec![] }
    );
    // A repeated PUBREC is answered again, and stores nothing more.
    let again = s.acked(Ack::Pubrec, &resp(1), &mut io).unwrap();
    assert!(matches!(again, Acked::PubRel { durable: false, .. }));
    assert!(io.take_stored().is_empty());
    assert_eq!(s.acked(Ack::Pubcomp, &resp(1), &mut io), Ok(Acked::Done));
    assert_eq!(s.in_flight(), 0);
    assert_eq!(
        kinds(&io.take_stored()),
        if d { vec!["delete"] } else { vec![] }
    );
});

each_level_and_store!(unknown_ids_are_ignored_and_a_pubrec_answered, |v, d| {
    let (mut s, mut io, _clock) = online(d, v, 60, 10);
    assert_eq!(s.acked(Ack::Puback, &resp(9), &mut io), Ok(Acked::Done));
    assert_eq!(s.acked(Ack::Pubcomp, &resp(9), &mut io), Ok(Acked::Done));
    let Ok(Acked::PubRel { packet, durable }) = s.acked(Ack::Pubrec, &resp(9), &mut io) else {
        panic!("PUBREL expected");
    };
    assert!(!durable);
    let code = if v == Version::V5 { 0x92 } else { 0 };
    assert_eq!(*packet, Packet::PubRel(failed(9, code)));
});

#[test]
fn a_failed_pubrec_ends_the_flow_and_frees_the_slot() {
    for code in [0x80u8, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] {
        let (mut s, mut io, clock) = online(true, Version::V5, 60, 1);
        offer(&mut s, &mut io, &clock, 0.0, 2, "first");
        offer(&mut s, &mut io, &clock, 0.0, 2, "second");
        assert_eq!(io.payloads(), vec!["first"]);
        io.take_stored();
        assert_eq!(
            s.acked(Ack::Pubrec, &failed(1, code), &mut io),
            Ok(Acked::Done),
            "{code:#x}: no PUBREL"
        );
        assert_eq!(io.payloads(), vec!["second"], "{code:#x}: the slot is free");
        assert_eq!(s.in_flight(), 1);
        assert!(kinds(&io.take_stored()).contains(&"delete"));
    }
}

#[test]
fn a_pubrec_with_a_success_code_below_0x80_continues() {
    let (mut s, mut io, clock) = online(false, Version::V5, 0, 10);
    offer(&mut s, &mut io, &clock, 0.0, 2, "m");
    // 0x10: no matching subscribers, a success.
    let answer = s.acked(Ack::Pubrec, &failed(1, 0x10), &mut io).unwrap();
    assert!(matches!(answer, Acked::PubRel { .. }));
}

#[test]
fn acknowledging_clears_stuck() {
    let (mut s, mut io, clock) = online(false, Version::V5, 0, 10);
    offer(&mut s, &mut io, &clock, 0.0, 1, "m");
    s.set_stuck();
    assert!(s.stuck);
    s.acked(Ack::Puback, &resp(1), &mut io).unwrap();
    assert!(!s.stuck);
}

// ----- inbound QoS 2 -----------------------------------------------------------------------

each_level_and_store!(inbound_qos2_ids_dedup_until_released, |v, d| {
    let (mut s, mut io, _clock) = online(d, v, 60, 10);
    assert!(s.receive_qos2(5, &mut io));
    assert!(
        !s.receive_qos2(5, &mut io),
        "a retry is not delivered again"
    );
    assert_eq!(
        kinds(&io.take_stored()),
        if d { vec!["inbound"] } else { vec![] }
    );
    assert_eq!(s.release_qos2(5, &mut io), d);
    assert_eq!(
        kinds(&io.take_stored()),
        if d { vec!["del-inbound"] } else { vec![] }
    );
    assert!(
        !s.release_qos2(5, &mut io),
        "released twice: nothing to forget"
    );
    assert!(s.receive_qos2(5, &mut io), "the id is free again");
});

#[test]
fn an_abandoned_inbound_id_is_free() {
    let (mut s, mut io, _clock) = online(false, Version::V5, 0, 10);
    assert!(s.receive_qos2(1, &mut io));
    s.abandon_qos2(1, &mut io);
    assert_eq!(s.inbound_pending(), 0);
    assert!(s.receive_qos2(1, &mut io));
}

#[test]
fn an_abandoned_inbound_id_of_a_durable_session_is_forgotten_in_the_store_too() {
    let (mut s, mut io, _clock) = online(true, Version::V5, 60, 10);
    assert!(s.receive_qos2(3, &mut io));
    s.abandon_qos2(3, &mut io);
    assert_eq!(kinds(&io.take_stored()), vec!["inbound", "del-inbound"]);
    s.abandon_qos2(3, &mut io);
    assert!(io.take_stored().is_empty(), "abandoned twice: nothing more");
}
