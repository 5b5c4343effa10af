//! An MQTT session as a state machine, in the spirit of quinn-proto: no locks, sockets, store
//! handles or clocks inside. Inputs are method calls (a message offered by the bus, an
//! acknowledgement from the client, the client attaching or leaving, a tick) with the time
//! passed in as [`Now`]; what the session wants done comes out through [`Io`] (packets to send,
//! records to store) or as return values (a reply to send, a will that is due). The connection
//! and the subscription sinks around it do the I/O; `session/tests.rs` drives it on a simulated
//! clock.
//!
//! What a session keeps: the QoS 1/2 messages in flight to the client (by packet id) and those
//! waiting for the window or for the client to come back, the QoS 2 packet ids the client sent
//! and has not released, its subscriptions (as records: the core's subscriptions are the
//! sink's), its expiry and its will.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::AckWait;
use junction_store::Op;

use super::durable::{self, SubRecord};
use crate::mqtt::codec::{encoded_len, reason, topic};
use crate::mqtt::{Packet, PubResp, Publish, QoS, Utf8Bytes, Version, Will};
use crate::outbound::Push;

/// Packet identifiers and QoS 1/2 messages a client may have in flight towards us (our receive
/// maximum), and that we keep in flight towards a client that names no limit.
pub(crate) const RECEIVE_MAXIMUM: u16 = 1024;
/// Past this many queued QoS 1/2 messages for a connected, acknowledging client, publishers
/// pause briefly (as for a NATS backlog), so a fast publisher is paced by the subscriber's
/// acknowledgements instead of filling the queue.
pub(crate) const QUEUE_HIGH_WATERMARK: usize = 4096;
/// Below this, paused publishers go on.
pub(crate) const QUEUE_LOW_WATERMARK: usize = 1024;

/// The time, as a session needs it: a monotonic instant for its deadlines, and the wall clock
/// (Unix milliseconds) for what it stores.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub at: Instant,
    pub unix_ms: u64,
}

impl Now {
    /// The current time.
    pub(crate) fn current() -> Now {
        Now {
            at: Instant::now(),
            unix_ms: durable::unix_ms(),
        }
    }

    /// The instant of a stored wall-clock time (Unix ms), as seen from now; a time too far
    /// ahead for the clock is capped (a record from the disk cannot overflow an `Instant`).
    pub(crate) fn instant_of(&self, ms: u64) -> Instant {
        const MAX_AHEAD_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
        self.at
            .checked_sub(Duration::from_millis(self.unix_ms.saturating_sub(ms)))
            .unwrap_or(self.at)
            + Duration::from_millis(ms.saturating_sub(self.unix_ms).min(MAX_AHEAD_MS))
    }
}

/// What a session asks of the world around it.
pub(crate) trait Io {
    /// Sends `packet` (encoded in `len` bytes; a PUBLISH counts `msg_bytes` of message) to the
    /// client, which is attached. `gated`: it must not reach the client before the store has
    /// committed everything submitted so far.
    fn send(
        &mut self,
        packet: &Packet,
        version: Version,
        len: usize,
        msg_bytes: u64,
        gated: bool,
    ) -> Push;
    /// Submits a change of the durable state.
    fn store(&mut self, op: Op);
    /// What the acknowledgement of the publication being offered waits for, when it may go
    /// before the commit: a stored copy sent at once counts in (see [`AckWait`]).
    fn ack_wait(&mut self) -> Option<Arc<dyn AckWait>>;
    /// The time, read when a rule needs it (most deliveries need none).
    fn now(&mut self) -> Now;
    /// `payload` in memory of its own, for a message the session keeps for long (not a
    /// slice of a publisher's read buffer, which it would keep alive whole; see
    /// [`Session::offer`]).
    fn keep(&mut self, payload: &Bytes) -> Bytes;
}

/// Limits a session keeps to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// QoS 1/2 messages kept for a client that is away or whose window is full.
    pub max_queued: usize,
    /// At `max_queued`: refuse new messages instead of dropping the oldest.
    pub refuse_when_full: bool,
}

/// A QoS 1/2 message on its way to the client.
#[derive(Clone)]
pub(crate) struct Outgoing {
    pub(crate) publish: Publish,
    /// QoS 2: PUBREC came, PUBREL sent, waiting for PUBCOMP.
    pub(crate) released: bool,
    /// Its sequence in the durable store (0: not stored).
    seq: u64,
    /// When it was queued (Unix ms, kept with it in the store, for message expiry).
    queued_ms: u64,
    /// The publisher's acknowledgement that waits for this copy's acknowledgement.
    held: Option<Arc<dyn AckWait>>,
    /// Its payload is in memory of its own (see [`Io::keep`]).
    own: bool,
}

/// A QoS 1/2 message waiting for the window or for the client.
struct Queued {
    publish: Publish,
    queued_at: Instant,
    /// Unix ms of `queued_at`, as stored.
    queued_ms: u64,
    /// Its sequence in the durable store (0: not stored).
    seq: u64,
    /// Its payload is in memory of its own (see [`Io::keep`]).
    own: bool,
}

/// What became of a message offered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Pushed to the client's output; `wake`: the output was empty, so its writer must be woken.
    Sent { wake: bool },
    /// Kept for later (the client is away, or its window is full). `backlog`: the publisher
    /// should pause until the client catches up; `overflow`: the queue was full and its oldest
    /// message was dropped to make room.
    Queued { backlog: bool, overflow: bool },
    /// Not delivered: the client is away (QoS 0), cannot take it (larger than its Maximum
    /// Packet Size) or its connection is closing.
    Dropped,
    /// This delivery cut the client off as a slow consumer (QoS 0).
    SlowConsumer,
    /// The queue is full and refuses new messages (`queue_full: refuse`).
    Refused,
}

/// The kinds of acknowledgement a client sends for our QoS 1/2 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ack {
    /// PUBACK (QoS 1).
    Puback,
    /// PUBREC (QoS 2, first half).
    Pubrec,
    /// PUBCOMP (QoS 2, second half).
    Pubcomp,
}

/// What to answer an acknowledgement with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acked {
    /// Nothing.
    Done,
    /// PUBREL, in order with the connection's other replies; `durable`: only once the store
    /// committed the released state (or a crash in between would deliver the message twice).
    PubRel { packet: Box<Packet>, durable: bool },
}

/// An acknowledgement of the wrong kind for its message's QoS: a protocol violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WrongAck;

/// What a client's CONNECT sets on its session for the connection.
#[derive(Debug, Clone)]
pub(crate) struct Attach {
    pub version: Version,
    /// Seconds the session lives after the connection (`u32::MAX`: forever).
    pub expiry_secs: u32,
    pub will: Option<Box<Will>>,
    /// The client's Receive Maximum.
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size.
    pub max_packet_size: Option<u32>,
    /// Topic aliases the client takes from us.
    pub alias_max: u16,
    /// The session existed before this CONNECT.
    pub present: bool,
}

/// One MQTT session's state. See the module documentation.
pub(crate) struct Session {
    /// The session's key in the durable store.
    key: Vec<u8>,
    /// The server keeps state durably (a persistent session is then stored).
    has_store: bool,
    limits: Limits,
    version: Version,
    /// A connection is attached.
    attached: bool,
    next_packet_id: u16,
    /// What a session that sends or receives messages keeps: made on first use, so an idle
    /// session stays small.
    flows: Option<Box<Flows>>,
    /// The connection's will, kept in the store so that a crash of the server triggers it.
    will: Option<Box<Will>>,
    /// The session is in the store (so ending it must remove it there).
    stored: bool,
    /// How many messages the client takes in flight.
    receive_maximum: u16,
    /// Largest packet the client accepts.
    max_packet_size: Option<u32>,
    /// Topic aliases the client accepts from us on this connection (5.0).
    alias_max: u16,
    /// Subscriptions by filter, as stored.
    subs: BTreeMap<Bytes, SubRecord>,
    /// Seconds the session lives after its connection closes (`u32::MAX`: forever).
    expiry_secs: u32,
    /// When a detached session expires.
    expires_at: Option<Instant>,
    /// A publisher waited in vain: the client is not acknowledging, so nobody waits again until
    /// it does.
    stuck: bool,
}

/// Takes a message out of flight, if it is there.
fn flows_remove(flows: &mut Option<Box<Flows>>, packet_id: u16) -> Option<Outgoing> {
    flows.as_mut()?.inflight.remove(&packet_id)
}

/// The part of a session that only a session with traffic needs.
struct Flows {
    /// QoS 1/2 messages sent and not yet acknowledged, by packet identifier.
    inflight: BTreeMap<u16, Outgoing>,
    /// QoS 1/2 messages waiting for the window (or for the client to come back).
    queue: VecDeque<Queued>,
    /// QoS 2 packet identifiers received (PUBREC sent) and not yet released.
    inbound_qos2: BTreeSet<u16>,
    /// A will waiting for its delay to pass (5.0 will delay interval), and when it is due.
    pending_will: Option<(Box<Will>, Instant)>,
    /// The next sequence number of a stored message.
    next_seq: u64,
    /// Topic aliases set up towards the client on this connection.
    out_aliases: HashMap<Utf8Bytes, u16>,
    /// The last subject delivered and its topic (a stream on one subject maps it once).
    last_topic: Option<(Bytes, Utf8Bytes)>,
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            inbound_qos2: BTreeSet::new(),
            pending_will: None,
            next_seq: 1,
            out_aliases: HashMap::new(),
            last_topic: None,
        }
    }
}

impl Session {
    /// A new, empty session stored under `key` (when `has_store` and it is persistent).
    pub(crate) fn new(key: Vec<u8>, has_store: bool, limits: Limits) -> Self {
        Session {
            key,
            has_store,
            limits,
            version: Version::V311,
            attached: false,
            next_packet_id: 1,
            flows: None,
            will: None,
            stored: false,
            receive_maximum: RECEIVE_MAXIMUM,
            max_packet_size: None,
            alias_max: 0,
            subs: BTreeMap::new(),
            expiry_secs: 0,
            expires_at: None,
            stuck: false,
        }
    }

    /// Whether what the session holds is kept in the store (a persistent session on a server
    /// with a store).
    pub(crate) fn durable(&self) -> bool {
        self.has_store && self.expiry_secs > 0
    }

    /// Seconds the session outlives its connection.
    pub(crate) fn expiry_secs(&self) -> u32 {
        self.expiry_secs
    }

    /// Sets the expiry (a 5.0 DISCONNECT may change it).
    pub(crate) fn set_expiry(&mut self, secs: u32) {
        self.expiry_secs = secs;
    }

    /// Messages queued for the client.
    pub(crate) fn queued(&self) -> usize {
        self.flows.as_ref().map_or(0, |f| f.queue.len())
    }

    /// Messages in flight to the client.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.flows.as_ref().map_or(0, |f| f.inflight.len())
    }

    /// Whether publishers should wait for this session's queue to drain (see
    /// [`QUEUE_LOW_WATERMARK`]): it is attached, acknowledging (or far behind), and backlogged.
    pub(crate) fn should_wait(&self) -> bool {
        let queued = self.queued();
        let hard = queued > self.limits.max_queued / 2;
        self.attached && (!self.stuck || hard) && queued > QUEUE_LOW_WATERMARK
    }

    /// A publisher waited for the queue to drain in vain.
    pub(crate) fn set_stuck(&mut self) {
        self.stuck = true;
    }

    /// The flows part, made on first use.
    fn f(&mut self) -> &mut Flows {
        self.flows.get_or_insert_with(Box::default)
    }

    // ----- delivery ------------------------------------------------------------------------

    /// Offers a message from the bus: `publish` has its QoS (the subscription's, capped),
    /// flags and properties, and no topic yet (it is mapped from `subject` here).
    pub(crate) fn offer(
        &mut self,
        mut publish: Publish,
        subject: &Bytes,
        io: &mut dyn Io,
    ) -> Offered {
        publish.topic = match &self.f().last_topic {
            Some((s, t)) if s == subject => t.clone(),
            _ => {
                let Ok(t) = topic::subject_to_topic(subject) else {
                    return Offered::Dropped;
                };
                // An own copy: the subject may be a slice of a publisher's read buffer.
                self.f().last_topic = Some((Bytes::copy_from_slice(subject), t.clone()));
                t
            }
        };
        if publish.qos == QoS::AtMostOnce {
            if !self.attached {
                return Offered::Dropped;
            }
            return match self.push_publish(&publish, false, io) {
                Some(Push::Queued { was_empty, .. }) => Offered::Sent { wake: was_empty },
                Some(Push::SlowConsumer) => Offered::SlowConsumer,
                Some(Push::Closed) | None => Offered::Dropped,
            };
        }
        let durable = self.durable();
        if self.attached
            && self.f().queue.is_empty()
            && self.f().inflight.len() < usize::from(self.receive_maximum)
        {
            // Sent at once. A stored QoS 1 copy goes out before its commit: the publisher's
            // acknowledgement still waits for the commit (or for this copy's acknowledgement),
            // so a crash can only cause a redelivery, which QoS 1 allows, and a copy the client
            // acknowledges before the commit is never written at all. A stored QoS 2 copy is
            // held until its record (with its packet id) is on the disk: exactly once.
            let queued_ms = if durable { io.now().unix_ms } else { 0 };
            let mut held = None;
            let mut seq = 0;
            let gated = durable && publish.qos == QoS::ExactlyOnce;
            if durable && publish.qos == QoS::AtLeastOnce {
                seq = self.store_copy(&publish, queued_ms, io);
                held = io.ack_wait();
                if let Some(h) = &held {
                    h.copy_sent();
                }
            }
            publish.packet_id = self.next_packet_id();
            if gated {
                seq = self.store_copy(&publish, queued_ms, io);
            }
            let Some(pushed) = self.push_publish(&publish, gated, io) else {
                // Larger than the client takes: discarded.
                self.forget(seq, io);
                if let Some(h) = held {
                    h.copy_acked();
                }
                return Offered::Dropped;
            };
            self.f().inflight.insert(
                publish.packet_id,
                Outgoing {
                    publish,
                    released: false,
                    seq,
                    queued_ms,
                    held,
                    own: false,
                },
            );
            return match pushed {
                Push::Queued { was_empty, .. } => Offered::Sent { wake: was_empty },
                // In flight all the same: resent when the client comes back.
                Push::SlowConsumer | Push::Closed => Offered::Sent { wake: false },
            };
        }
        let mut overflow = false;
        if self.f().queue.len() >= self.limits.max_queued {
            if self.limits.refuse_when_full {
                return Offered::Refused;
            }
            if let Some(dropped) = self.f().queue.pop_front() {
                self.forget(dropped.seq, io);
            }
            overflow = true;
        }
        // A message kept for long gets memory of its own, so that it does not keep a whole read
        // buffer of its publisher alive: one for a client that is away, or behind a backlog
        // past the depth at which publishers are asked to pause. A connected client's queue
        // between the watermarks is the normal pacing range and drains soon: it keeps slices
        // of its publishers' buffers (at most QUEUE_HIGH_WATERMARK of them); when the client
        // leaves, what the session holds is copied then (see `detach`). Copying every queued
        // message cost a QoS 1 stream about a third more CPU per delivery.
        let own = !self.attached || self.f().queue.len() >= QUEUE_HIGH_WATERMARK;
        if own {
            publish.payload = io.keep(&publish.payload);
        }
        let now = io.now();
        let queued_ms = now.unix_ms;
        let seq = if durable {
            self.store_copy(&publish, queued_ms, io)
        } else {
            0
        };
        self.f().queue.push_back(Queued {
            publish,
            queued_at: now.at,
            queued_ms,
            seq,
            own,
        });
        let backlog = self.attached
            && self.f().queue.len() > QUEUE_HIGH_WATERMARK
            && (!self.stuck || self.f().queue.len() > self.limits.max_queued / 2);
        Offered::Queued { backlog, overflow }
    }

    /// Sends what the window allows from the queue (expired messages are dropped). Whether the
    /// queue is below its low watermark afterwards (publishers waiting for it may go on).
    pub(crate) fn fill_window(&mut self, io: &mut dyn Io) -> bool {
        if !self.attached {
            return false;
        }
        let durable = self.durable();
        if self.flows.is_none() {
            return true;
        }
        while self.f().inflight.len() < usize::from(self.receive_maximum) {
            let Some(q) = self.f().queue.pop_front() else {
                break;
            };
            let mut publish = q.publish;
            if let Some(expiry) = publish.properties.message_expiry_interval {
                // MQTT 5: an expired message is not delivered; a live one carries what is left.
                let waited = io.now().at.saturating_duration_since(q.queued_at).as_secs();
                let waited = u32::try_from(waited).unwrap_or(u32::MAX);
                if waited >= expiry {
                    self.forget(q.seq, io);
                    continue;
                }
                publish.properties.message_expiry_interval = Some(expiry - waited);
            }
            if publish.packet_id == 0 {
                publish.packet_id = self.next_packet_id();
            }
            // A stored QoS 2 message goes out once its packet id is on the disk too, so a
            // restart redelivers it with the id the client knows.
            let gated = durable && publish.qos == QoS::ExactlyOnce && q.seq != 0;
            if gated {
                io.store(Op::Put {
                    table: durable::MESSAGES,
                    key: durable::message_key(&self.key, q.seq),
                    value: durable::encode_message(&publish, publish.packet_id, false, q.queued_ms),
                });
            }
            if self.push_publish(&publish, gated, io).is_none() {
                // Larger than the client takes: discarded.
                self.forget(q.seq, io);
                continue;
            }
            self.f().inflight.insert(
                publish.packet_id,
                Outgoing {
                    publish,
                    released: false,
                    seq: q.seq,
                    queued_ms: q.queued_ms,
                    held: None,
                    own: q.own,
                },
            );
        }
        self.f().queue.len() <= QUEUE_LOW_WATERMARK
    }

    /// The client acknowledged one of our QoS 1/2 messages with PUBACK, PUBREC or PUBCOMP. An
    /// acknowledgement of the wrong kind for the message's QoS (PUBACK for QoS 2, PUBREC for
    /// QoS 1, PUBCOMP before PUBREC) is a protocol violation; one for an unknown packet id is
    /// ignored (a PUBREC gets PUBREL, 5.0: with 0x92, so the client can finish its side). A
    /// PUBREC with a failure code (5.0) ends that QoS 2 flow: no PUBREL, and its packet id and
    /// window slot are free again.
    pub(crate) fn acked(
        &mut self,
        kind: Ack,
        ack: &PubResp,
        io: &mut dyn Io,
    ) -> Result<Acked, WrongAck> {
        let packet_id = ack.packet_id;
        let durable = self.durable();
        let version = self.version;
        let Session { key, flows, .. } = self;
        let flows = flows.get_or_insert_with(Box::default);
        let Some(o) = flows.inflight.get_mut(&packet_id) else {
            if kind != Ack::Pubrec {
                return Ok(Acked::Done);
            }
            let code = match version {
                Version::V5 => reason::PACKET_IDENTIFIER_NOT_FOUND,
                Version::V311 => reason::SUCCESS,
            };
            return Ok(Acked::PubRel {
                packet: Box::new(Packet::PubRel(PubResp {
                    packet_id,
                    reason: code,
                    ..PubResp::default()
                })),
                durable: false,
            });
        };
        let qos2 = o.publish.qos == QoS::ExactlyOnce;
        let wrong = match kind {
            Ack::Puback => qos2,
            Ack::Pubrec => !qos2,
            Ack::Pubcomp => !qos2 || !o.released,
        };
        if wrong {
            return Err(WrongAck);
        }
        if kind == Ack::Pubrec && ack.reason < 0x80 {
            let mut stored = false;
            if !o.released {
                o.released = true;
                if durable && o.seq != 0 {
                    io.store(Op::Put {
                        table: durable::MESSAGES,
                        key: durable::message_key(key, o.seq),
                        value: durable::encode_message(
                            &o.publish,
                            o.publish.packet_id,
                            true,
                            o.queued_ms,
                        ),
                    });
                    stored = true;
                }
            }
            return Ok(Acked::PubRel {
                packet: Box::new(Packet::PubRel(PubResp {
                    packet_id,
                    ..PubResp::default()
                })),
                durable: stored,
            });
        }
        if let Some(o) = flows_remove(&mut self.flows, packet_id) {
            self.forget(o.seq, io);
            if let Some(h) = o.held {
                h.copy_acked();
            }
        }
        self.stuck = false;
        self.fill_window(io);
        Ok(Acked::Done)
    }

    // ----- QoS 2 from the client -----------------------------------------------------------

    /// A QoS 2 PUBLISH with `packet_id` came: `true` when it is new (to be delivered; its id is
    /// stored when the session is durable), `false` for a retry of one already received.
    pub(crate) fn receive_qos2(&mut self, packet_id: u16, io: &mut dyn Io) -> bool {
        if !self.f().inbound_qos2.insert(packet_id) {
            return false;
        }
        if self.durable() {
            io.store(Op::Put {
                table: durable::INBOUND,
                key: durable::inbound_key(&self.key, packet_id),
                value: Vec::new(),
            });
        }
        true
    }

    /// A QoS 2 flow from the client ended without delivery (refused): its id is free, in the
    /// store too.
    pub(crate) fn abandon_qos2(&mut self, packet_id: u16, io: &mut dyn Io) {
        let removed = self
            .flows
            .as_mut()
            .is_some_and(|f| f.inbound_qos2.remove(&packet_id));
        if removed && self.durable() {
            io.store(Op::Delete {
                table: durable::INBOUND,
                key: durable::inbound_key(&self.key, packet_id),
            });
        }
    }

    /// QoS 2 messages received from the client and not released yet.
    pub(crate) fn inbound_pending(&self) -> usize {
        self.flows.as_ref().map_or(0, |f| f.inbound_qos2.len())
    }

    /// PUBREL for `packet_id`: the id is free again. Whether the answering PUBCOMP must wait
    /// for the store (it forgets the id there first).
    pub(crate) fn release_qos2(&mut self, packet_id: u16, io: &mut dyn Io) -> bool {
        let removed = self
            .flows
            .as_mut()
            .is_some_and(|f| f.inbound_qos2.remove(&packet_id));
        if !removed || !self.durable() {
            return false;
        }
        io.store(Op::Delete {
            table: durable::INBOUND,
            key: durable::inbound_key(&self.key, packet_id),
        });
        true
    }

    // ----- connections ---------------------------------------------------------------------

    /// A connection takes the session: its settings apply, what was in flight is sent again
    /// (with DUP; a released QoS 2 message as PUBREL), then what waited in the queue.
    pub(crate) fn attach(&mut self, a: Attach, io: &mut dyn Io) {
        self.attached = true;
        self.version = a.version;
        self.expiry_secs = a.expiry_secs;
        self.expires_at = None;
        if let Some(f) = self.flows.as_mut() {
            f.pending_will = None;
            // Aliases live as long as one network connection.
            f.out_aliases.clear();
        }
        self.will = a.will;
        if a.present || self.expiry_secs > 0 {
            self.save(io);
        }
        self.receive_maximum = a.receive_maximum;
        self.max_packet_size = a.max_packet_size;
        self.alias_max = a.alias_max;
        self.stuck = false;
        let resend: Vec<Outgoing> = self
            .flows
            .as_ref()
            .map(|f| f.inflight.values().cloned().collect())
            .unwrap_or_default();
        for o in resend {
            if o.released {
                let packet = Packet::PubRel(PubResp {
                    packet_id: o.publish.packet_id,
                    ..PubResp::default()
                });
                if let Ok(len) = encoded_len(&packet, self.version) {
                    io.send(&packet, self.version, len, 0, false);
                }
            } else {
                let mut p = o.publish;
                p.dup = true;
                let _ = self.push_publish(&p, false, io);
            }
        }
        self.fill_window(io);
    }

    /// The connection ended. The session stays for its expiry (stored when persistent); what
    /// it had in flight waits for the client to come back.
    pub(crate) fn detach(&mut self, io: &mut dyn Io) {
        let now = io.now();
        self.attached = false;
        if let Some(f) = self.flows.as_mut() {
            // Kept until the client returns: in memory of their own from now on.
            for q in f.queue.iter_mut().filter(|q| !q.own) {
                q.publish.payload = io.keep(&q.publish.payload);
                q.own = true;
            }
            for o in f.inflight.values_mut().filter(|o| !o.own) {
                o.publish.payload = io.keep(&o.publish.payload);
                o.own = true;
            }
        }
        self.will = None;
        self.expires_at = (self.expiry_secs != u32::MAX)
            .then(|| now.at + Duration::from_secs(u64::from(self.expiry_secs)));
        self.save(io);
    }

    /// The connection left without a normal DISCONNECT and its will waits for its delay: it is
    /// due at `due` unless the client comes back first (stored with a persistent session, so
    /// it is due across a restart too).
    pub(crate) fn defer_will(&mut self, will: Box<Will>, due: Instant, io: &mut dyn Io) {
        self.f().pending_will = Some((will, due));
        self.save(io);
    }

    /// The will that is due by `now`, taken (the caller publishes it).
    pub(crate) fn due_will(&mut self, io: &mut dyn Io) -> Option<Box<Will>> {
        let now = io.now();
        let f = self.flows.as_mut()?;
        if f.pending_will.as_ref().is_none_or(|(_, at)| *at > now.at) {
            return None;
        }
        let will = f.pending_will.take().map(|(w, _)| w);
        self.save(io);
        will
    }

    /// Whether the session is detached and its expiry passed.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        !self.attached && self.expires_at.is_some_and(|t| t <= now)
    }

    /// The session ends (expired, or replaced by a clean start): everything it stored goes.
    /// Returns its pending will, which is due now (a will waits at most until its session
    /// ends).
    pub(crate) fn end(&mut self, io: &mut dyn Io) -> Option<Box<Will>> {
        let will = self
            .flows
            .as_mut()
            .and_then(|f| f.pending_will.take())
            .map(|(w, _)| w);
        if self.has_store {
            self.erase(io);
        }
        will
    }

    // ----- subscriptions -------------------------------------------------------------------

    /// Records a subscription (replacing one on the same filter); whether one existed.
    pub(crate) fn subscribe(&mut self, filter: Bytes, record: SubRecord) -> bool {
        self.subs.insert(filter, record).is_some()
    }

    /// Forgets a subscription; whether it existed.
    pub(crate) fn unsubscribe(&mut self, filter: &[u8]) -> bool {
        self.subs.remove(filter).is_some()
    }

    /// Whether a subscription on `filter` exists.
    pub(crate) fn has_subscription(&self, filter: &[u8]) -> bool {
        self.subs.contains_key(filter)
    }

    /// How many subscriptions the session has.
    pub(crate) fn subscriptions(&self) -> usize {
        self.subs.len()
    }

    // ----- the store (saving and restoring: record.rs) --------------------------------------

    /// Stores a copy of `publish` queued for or in flight to the session; its sequence number.
    fn store_copy(&mut self, publish: &Publish, queued_ms: u64, io: &mut dyn Io) -> u64 {
        let seq = self.f().next_seq;
        self.f().next_seq += 1;
        io.store(Op::Insert {
            table: durable::MESSAGES,
            key: durable::message_key(&self.key, seq),
            value: durable::encode_message(publish, publish.packet_id, false, queued_ms),
        });
        seq
    }

    /// Removes a stored message (acknowledged, expired or dropped).
    fn forget(&self, seq: u64, io: &mut dyn Io) {
        if self.has_store && seq != 0 {
            io.store(Op::Delete {
                table: durable::MESSAGES,
                key: durable::message_key(&self.key, seq),
            });
        }
    }

    /// Removes the session and everything it had from the store.
    fn erase(&self, io: &mut dyn Io) {
        io.store(Op::Delete {
            table: durable::SESSIONS,
            key: self.key.clone(),
        });
        for table in [durable::MESSAGES, durable::INBOUND] {
            io.store(Op::DeletePrefix {
                table,
                prefix: self.key.clone(),
            });
        }
    }

    // ----- the wire ------------------------------------------------------------------------

    fn next_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self
                .flows
                .as_ref()
                .is_some_and(|f| f.inflight.contains_key(&id))
            {
                return id;
            }
        }
    }

    /// Sends a PUBLISH, unless it is over the client's Maximum Packet Size (MQTT 5 says the
    /// server discards it then: `None`). With a topic alias where the client allows them (5.0): a topic
    /// already aliased on this connection goes as its alias alone; a new one gets the next
    /// alias while any are left.
    fn push_publish(&mut self, publish: &Publish, gated: bool, io: &mut dyn Io) -> Option<Push> {
        let mut out = publish.clone();
        let mut new_alias = None;
        let alias_max = self.alias_max;
        if self.version == Version::V5 && alias_max > 0 {
            let aliases = &self.f().out_aliases;
            match aliases.get(&out.topic) {
                Some(&alias) => {
                    out.properties.topic_alias = Some(alias);
                    out.topic = Utf8Bytes::default();
                }
                None if aliases.len() < usize::from(alias_max) => {
                    let alias = aliases.len() as u16 + 1;
                    out.properties.topic_alias = Some(alias);
                    new_alias = Some(alias);
                }
                None => {}
            }
        }
        let packet = Packet::Publish(out);
        let len = encoded_len(&packet, self.version).ok()?;
        if self.max_packet_size.is_some_and(|max| len > max as usize) {
            return None;
        }
        let pushed = io.send(
            &packet,
            self.version,
            len,
            publish.payload.len() as u64,
            gated,
        );
        if let (Some(alias), Push::Queued { .. }) = (new_alias, pushed) {
            // Only an alias the client was sent exists for it.
            self.f().out_aliases.insert(publish.topic.clone(), alias);
        }
        Some(pushed)
    }
}

mod record;
#[cfg(test)]
mod tests;
