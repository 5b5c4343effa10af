//! The session state machine on a simulated clock: every rule without a socket, a store or a
//! sleep. [`TestIo`] records what the session asks for; [`Clock`] hands out [`Now`]s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use super::*;
use crate::mqtt::{PublishProperties, WillProperties};

/// Records the session's effects; `push` is what sending returns.
struct TestIo {
    sent: Vec<(Packet, bool)>,
    stored: Vec<Op>,
    push: Push,
    ack_wait: Option<Arc<dyn AckWait>>,
    /// What the session is told the time is.
    now: Now,
    /// Payloads the session asked to keep in memory of their own.
    kept: usize,
}

/// Sets the time the session will read, and hands over the I/O.
fn at(io: &mut TestIo, now: Now) -> &mut TestIo {
    io.now = now;
    io
}

impl Default for TestIo {
    fn default() -> Self {
        TestIo {
            sent: Vec::new(),
            stored: Vec::new(),
            push: Push::Queued {
                was_empty: true,
                backlogged: false,
            },
            ack_wait: None,
            now: Clock::new().at(0.0),
            kept: 0,
        }
    }
}

impl Io for TestIo {
    fn send(
        &mut self,
        packet: &Packet,
        _version: Version,
        len: usize,
        _msg_bytes: u64,
        gated: bool,
    ) -> Push {
        assert_eq!(encoded_len(packet, Version::V5).ok().map(|_| ()), Some(()));
        assert!(len > 0);
        self.sent.push((packet.clone(), gated));
        self.push
    }

    fn store(&mut self, op: Op) {
        self.stored.push(op);
    }

    fn ack_wait(&mut self) -> Option<Arc<dyn AckWait>> {
        self.ack_wait.clone()
    }

    fn now(&mut self) -> Now {
        self.now
    }

    fn keep(&mut self, payload: &Bytes) -> Bytes {
        self.kept += 1;
        Bytes::copy_from_slice(payload)
    }
}

impl TestIo {
    /// The PUBLISHes sent since the last call: (packet id, payload, dup, gated).
    fn publishes(&mut self) -> Vec<(u16, String, bool, bool)> {
        self.sent
            .drain(..)
            .filter_map(|(p, gated)| match p {
                Packet::Publish(p) => Some((
                    p.packet_id,
                    String::from_utf8(p.payload.to_vec()).unwrap(),
                    p.dup,
                    gated,
                )),
                _ => None,
            })
            .collect()
    }

    /// Payloads sent since the last call.
    fn payloads(&mut self) -> Vec<String> {
        self.publishes().into_iter().map(|p| p.1).collect()
    }

    fn take_stored(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.stored)
    }
}

/// Counts copies sent and acknowledged (the publisher's acknowledgement wait).
#[derive(Default)]
struct Counter {
    sent: AtomicUsize,
    acked: AtomicUsize,
}

impl AckWait for Counter {
    fn copy_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
    fn copy_acked(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }
}

/// A simulated clock: `at(s)` is `s` seconds after its start.
struct Clock {
    base: Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            base: Instant::now(),
        }
    }

    fn at(&self, secs: f64) -> Now {
        Now {
            at: self.base + Duration::from_secs_f64(secs),
            unix_ms: 1_700_000_000_000 + (secs * 1000.0) as u64,
        }
    }
}

const KEY: &[u8] = b"\x00\x02$G\x00\x01c";

fn limits() -> Limits {
    Limits {
        max_queued: 100,
        refuse_when_full: false,
    }
}

fn session(has_store: bool) -> Session {
    Session::new(KEY.to_vec(), has_store, limits())
}

fn attach(version: Version, expiry: u32, receive_maximum: u16) -> Attach {
    Attach {
        version,
        expiry_secs: expiry,
        will: None,
        receive_maximum,
        max_packet_size: None,
        alias_max: 0,
        present: false,
    }
}

fn qos(q: u8) -> QoS {
    QoS::from_bits(q).unwrap()
}

fn publish(q: u8, payload: &str) -> Publish {
    Publish {
        dup: false,
        qos: qos(q),
        retain: false,
        topic: Utf8Bytes::default(),
        packet_id: 0,
        properties: PublishProperties::default(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

fn subject() -> Bytes {
    Bytes::from_static(b"a.b")
}

fn resp(packet_id: u16) -> PubResp {
    PubResp {
        packet_id,
        ..PubResp::default()
    }
}

fn failed(packet_id: u16, reason: u8) -> PubResp {
    PubResp {
        packet_id,
        reason,
        ..PubResp::default()
    }
}

/// An attached session (persistent when `expiry > 0`).
fn online(has_store: bool, version: Version, expiry: u32, rm: u16) -> (Session, TestIo, Clock) {
    let clock = Clock::new();
    let mut s = session(has_store);
    let mut io = TestIo::default();
    s.attach(attach(version, expiry, rm), at(&mut io, clock.at(0.0)));
    io.sent.clear();
    io.stored.clear();
    (s, io, clock)
}

fn offer(s: &mut Session, io: &mut TestIo, clock: &Clock, t: f64, q: u8, payload: &str) -> Offered {
    s.offer(publish(q, payload), &subject(), at(io, clock.at(t)))
}

fn kinds(ops: &[Op]) -> Vec<&'static str> {
    ops.iter()
        .map(|op| match op {
            Op::Insert { .. } => "insert",
            Op::Put { table, .. } if *table == durable::SESSIONS => "session",
            Op::Put { table, .. } if *table == durable::INBOUND => "inbound",
            Op::Put { .. } => "put",
            Op::Delete { table, .. } if *table == durable::SESSIONS => "del-session",
            Op::Delete { table, .. } if *table == durable::INBOUND => "del-inbound",
            Op::Delete { .. } => "delete",
            Op::DeletePrefix { .. } => "del-prefix",
        })
        .collect()
}

/// Generates one test per protocol level and store (in memory or durable) from a body taking
/// `(version, has_store)`.
macro_rules! each_level_and_store {
    ($name:ident, |$v:ident, $d:ident| $body:block) => {
        mod $name {
            use super::*;

            fn run($v: Version, $d: bool) $body

            #[test]
            fn v311_in_memory() {
                run(Version::V311, false)
            }
            #[test]
            fn v311_durable() {
                run(Version::V311, true)
            }
            #[test]
            fn v5_in_memory() {
                run(Version::V5, false)
            }
            #[test]
            fn v5_durable() {
                run(Version::V5, true)
            }
        }
    };
}

mod acks;
mod delivery;
mod flows;
mod model;
mod store;
mod time;
mod wire;
