use super::*;

// ----- a long run against a model ----------------------------------------------------------

/// Random inputs against a model of what the client must see: every QoS 1/2 message offered
/// reaches the client, in order, whatever the window and however often it leaves; QoS 2 ones
/// exactly once once completed.
#[test]
fn random_runs_deliver_everything_in_order() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for run in 0..50 {
        let clock = Clock::new();
        let d = run % 2 == 0;
        let rm = 1 + rnd(5) as u16;
        let mut s = Session::new(
            KEY.to_vec(),
            d,
            Limits {
                max_queued: 100_000,
                refuse_when_full: false,
            },
        );
        let mut io = TestIo::default();
        s.attach(attach(Version::V5, 600, rm), at(&mut io, clock.at(0.0)));
        let mut next = 0u32;
        let mut delivered: Vec<u32> = Vec::new();
        let mut attached = true;
        let mut t = 0.0;
        let held = Mutex::new(());
        let _guard = held.lock().unwrap();
        for _ in 0..400 {
            t += 0.01;
            match rnd(10) {
                0..=4 => {
                    let q = 1 + rnd(2) as u8;
                    offer(&mut s, &mut io, &clock, t, q, &next.to_string());
                    next += 1;
                }
                5..=7 if attached => {
                    // The client acknowledges everything it has.
                    let got: Vec<(Packet, bool)> = io.sent.drain(..).collect();
                    for (p, _) in got {
                        match p {
                            Packet::Publish(p) => {
                                let n: u32 = String::from_utf8_lossy(&p.payload).parse().unwrap();
                                if !p.dup || !delivered.contains(&n) {
                                    delivered.push(n);
                                }
                                let kind = if p.qos == QoS::AtLeastOnce {
                                    Ack::Puback
                                } else {
                                    Ack::Pubrec
                                };
                                let ans = s.acked(kind, &resp(p.packet_id), &mut io).unwrap();
                                if let Acked::PubRel { .. } = ans {
                                    s.acked(Ack::Pubcomp, &resp(p.packet_id), &mut io).unwrap();
                                }
                            }
                            Packet::PubRel(r) => {
                                s.acked(Ack::Pubcomp, &resp(r.packet_id), &mut io).unwrap();
                            }
                            _ => {}
                        }
                    }
                }
                8 if attached => {
                    io.sent.clear();
                    s.detach(at(&mut io, clock.at(t)));
                    attached = false;
                }
                _ if !attached => {
                    let mut a = attach(Version::V5, 600, rm);
                    a.present = true;
                    s.attach(a, at(&mut io, clock.at(t)));
                    attached = true;
                }
                _ => {}
            }
        }
        // Finish: attach and acknowledge until nothing is left.
        if !attached {
            s.attach(attach(Version::V5, 600, rm), at(&mut io, clock.at(t)));
        }
        for _ in 0..10_000 {
            let got: Vec<(Packet, bool)> = io.sent.drain(..).collect();
            if got.is_empty() {
                break;
            }
            for (p, _) in got {
                match p {
                    Packet::Publish(p) => {
                        let n: u32 = String::from_utf8_lossy(&p.payload).parse().unwrap();
                        if !p.dup || !delivered.contains(&n) {
                            delivered.push(n);
                        }
                        let kind = if p.qos == QoS::AtLeastOnce {
                            Ack::Puback
                        } else {
                            Ack::Pubrec
                        };
                        if let Acked::PubRel { .. } =
                            s.acked(kind, &resp(p.packet_id), &mut io).unwrap()
                        {
                            s.acked(Ack::Pubcomp, &resp(p.packet_id), &mut io).unwrap();
                        }
                    }
                    Packet::PubRel(r) => {
                        s.acked(Ack::Pubcomp, &resp(r.packet_id), &mut io).unwrap();
                    }
                    _ => {}
                }
            }
        }
        let expected: Vec<u32> = (0..next).collect();
        assert_eq!(
            delivered, expected,
            "run {run} (durable {d}, receive maximum {rm})"
        );
        assert_eq!((s.in_flight(), s.queued()), (0, 0), "run {run}");
    }
}
