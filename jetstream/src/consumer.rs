//! A consumer: its position in the stream, what it delivered and is waiting to hear about,
//! pull requests waiting for messages, and the rules of acknowledgement and redelivery.
//!
//! Consumers live in the JetStream task alone; they read their stream under its lock and hand
//! back the messages to send ([`Out`]), which the task routes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::sync::Lock;

use crate::config::{AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy};
use crate::headers;
use crate::persist::ConsumerRecord;
use crate::stream::{matches_any, StoredMsg, Stream, StreamState};

mod ack;
mod checks;
mod pull;

pub use ack::{AckKind, AckSubject};
pub use pull::PullRequest;

/// One message (or status) for the task to route: to `to`, shown with `subject`.
pub struct Out {
    pub to: Bytes,
    pub subject: Bytes,
    pub reply: Option<Bytes>,
    pub headers: Option<Bytes>,
    pub payload: Bytes,
}

/// A delivered message not yet acknowledged.
#[derive(Debug, Clone)]
struct Pending {
    cseq: u64,
    deliveries: u64,
    deadline: Instant,
    /// When it was last delivered (for the ack metric's `ack_time`).
    sent: Instant,
}

/// What a consumer reports as JetStream advisories and metrics (`$JS.EVENT.*`), as
/// nats-server reports them.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message reached `max_deliver` and will not be delivered again.
    MaxDeliveries { sseq: u64, deliveries: u64 },
    /// `+TERM`.
    Terminated {
        cseq: u64,
        sseq: u64,
        deliveries: u64,
    },
    /// `-NAK`.
    Naked {
        cseq: u64,
        sseq: u64,
        deliveries: u64,
    },
    /// A sampled acknowledgement (`sample_freq`), `ack_time` nanoseconds after delivery.
    Acked {
        cseq: u64,
        sseq: u64,
        deliveries: u64,
        ack_time: u64,
    },
}

pub struct Consumer {
    pub name: String,
    /// Its acknowledgement and flow control subscriptions (`None` while its account has no
    /// JetStream).
    pub(crate) subs: Option<crate::sinks::ConsumerSubs>,
    pub stream: Arc<Stream>,
    pub config: ConsumerConfig,
    pub created: i64,
    filters: Vec<String>,
    /// The filters cover every subject of the stream.
    filters_all: bool,
    /// Next stream sequence to deliver for the first time.
    next: u64,
    /// Stream sequences to deliver first (last per subject).
    lps: VecDeque<u64>,
    delivered: (u64, u64),
    ack_floor: (u64, u64),
    pending: BTreeMap<u64, Pending>,
    /// The earliest deadline in `pending` (or earlier): until then a tick skips the walk.
    next_deadline: Option<Instant>,
    redeliver: BTreeSet<u64>,
    pub num_redelivered: u64,
    pub waiting: VecDeque<PullRequest>,
    /// Unix ns of the last delivery or request.
    pub last_active: i64,
    /// When the push consumer lost its interest or the pull consumer its last request.
    pub idle_since: Option<Instant>,
    /// Something changed that the store must hear.
    pub dirty: bool,
    /// ... and must hear with the next commit (a double ack waits for it, or a delivery
    /// counted against `max_deliver`); other changes are saved at most every
    /// [`SAVE_EVERY`].
    pub urgent: bool,
    pub saved_at: Instant,
    last_push: Instant,
    /// Flow control: the reply subject of the request we are waiting on.
    fc_waiting: Option<String>,
    fc_bytes: u64,
    pub push_bound: bool,
    /// When all waiting requests were last checked for interest.
    swept_at: Instant,
    /// A message taken to send but held back by the pacing (`replay_policy: original`,
    /// `rate_limit_bps`), and when it may go.
    held: Option<(Arc<StoredMsg>, u64)>,
    pub wake_at: Option<Instant>,
    /// Original replay: the time of the last message sent, and when it was sent.
    replayed: Option<(i64, Instant)>,
    /// The rate limit's bucket: bytes that may go now, as of when.
    tokens: (f64, Instant),
    /// Advisories and metrics to publish (the task takes them).
    pub events: Vec<Event>,
    /// The percentage of acknowledgements sampled for the ack metric (`sample_freq`).
    sample_pct: u32,
    /// The sampling's random state (xorshift, seeded once: no system call per
    /// acknowledgement).
    sample_rng: u64,
}

/// What may be sent next under the consumer's pacing.
enum Next {
    Send(Arc<StoredMsg>, u64),
    /// Held back until `wake_at`.
    Wait,
    Empty,
}

/// A rate limit's burst: the largest message a stream may hold (nats-server's: the stream's
/// `max_msg_size`, else the largest payload a client may publish).
const RATE_BURST_DEFAULT: f64 = 1024.0 * 1024.0;

fn nanos(d: i64) -> Duration {
    Duration::from_nanos(d.max(0) as u64)
}

/// Whether `filters` cover every subject of the stream (none: everything).
fn filters_all(filters: &[String], st: &StreamState) -> bool {
    filters.is_empty()
        || st
            .config
            .subjects
            .iter()
            .all(|s| filters.iter().any(|f| junction_core::subject::covers(f, s)))
}

/// Tells a stream's consumers of a purge (`filter`: of that subject alone), as nats-server
/// 2.10's take one: the consumers that take what was purged move past it: all of them after a
/// purge without a filter; after a filtered one, those that take nothing but what the filter
/// covers move to its first message left (or past the end), and those that take more only drop
/// what went.
pub(crate) fn take_purge<'a>(
    consumers: impl Iterator<Item = &'a mut Consumer>,
    st: &StreamState,
    filter: Option<&str>,
) {
    let first = st.first_seq();
    for c in consumers {
        let Some(p) = filter else {
            c.purged(first, None);
            continue;
        };
        let covered = !c.filters().is_empty()
            && c.filters()
                .iter()
                .all(|f| junction_core::subject::covers(p, f));
        if covered {
            let left = st.next_matching(first, &[p.to_string()]);
            c.purged(left.unwrap_or(st.last_seq + 1), None);
        } else if c.filters().is_empty()
            || c.filters().iter().any(|f| {
                junction_core::subject::covers(f, p) || junction_core::subject::covers(p, f)
            })
        {
            c.purged(first, Some(st));
        }
    }
}

impl Consumer {
    /// A new consumer at the start its deliver policy names.
    pub fn new(
        name: String,
        stream: Arc<Stream>,
        config: ConsumerConfig,
        created: i64,
        st: &StreamState,
    ) -> Self {
        let filters = config.filters();
        let filters_all = filters_all(&filters, st);
        let mut lps = VecDeque::new();
        let next = match config.deliver_policy {
            DeliverPolicy::All => st.first_seq(),
            DeliverPolicy::Last => {
                if filters.is_empty() {
                    st.last_seq.max(st.first_seq().min(st.last_seq))
                } else {
                    st.last_per_subject(&filters)
                        .last()
                        .copied()
                        .unwrap_or(st.last_seq + 1)
                }
            }
            DeliverPolicy::New => st.last_seq + 1,
            DeliverPolicy::ByStartSequence => config.opt_start_seq.unwrap_or(1),
            DeliverPolicy::ByStartTime => {
                let ts = config
                    .opt_start_time
                    .as_deref()
                    .and_then(crate::time::parse_rfc3339)
                    .unwrap_or(0);
                st.seq_at_time(ts)
            }
            DeliverPolicy::LastPerSubject => {
                lps.extend(st.last_per_subject(&filters));
                st.last_seq + 1
            }
        };
        // As nats-server does, the start lies within the stream: from its first sequence to
        // the one after its last (a start sequence past the end waits there, not further).
        let start = if st.last_seq == 0 && st.msgs == 0 {
            1
        } else {
            next.clamp(st.first_seq(), st.last_seq + 1)
        };
        Consumer {
            name,
            subs: None,
            stream,
            filters,
            filters_all,
            created,
            next: start,
            lps,
            delivered: (0, start - 1),
            // Nothing acknowledged yet: nats-server says 0 (its stored state's floor) until
            // the first acknowledgement, wherever the consumer starts.
            ack_floor: (0, 0),
            pending: BTreeMap::new(),
            next_deadline: None,
            redeliver: BTreeSet::new(),
            num_redelivered: 0,
            waiting: VecDeque::new(),
            last_active: 0,
            idle_since: Some(Instant::now()),
            dirty: true,
            urgent: true,
            saved_at: Instant::now(),
            last_push: Instant::now(),
            fc_waiting: None,
            fc_bytes: 0,
            push_bound: false,
            swept_at: Instant::now(),
            held: None,
            wake_at: None,
            replayed: None,
            tokens: (f64::MAX, Instant::now()),
            events: Vec::new(),
            sample_pct: config.sample_percent().unwrap_or(0),
            sample_rng: {
                let mut b = [0u8; 8];
                let _ = getrandom::getrandom(&mut b);
                u64::from_le_bytes(b) | 1
            },
            config,
        }
    }

    /// The next message to send, when the pacing lets it go now (else it is held, and
    /// `wake_at` says when to try again).
    fn next_paced(&mut self, st: &StreamState, now: Instant) -> Next {
        let (m, d) = match self.held.take() {
            Some(h) => h,
            None => match self.take_next(st) {
                Some(n) => n,
                None => return Next::Empty,
            },
        };
        if let Some(at) = self.paced_until(st, &m, now) {
            self.held = Some((m, d));
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
            return Next::Wait;
        }
        if self.config.replay_policy == ReplayPolicy::Original {
            self.replayed = Some((m.ts, now));
        }
        if self.config.rate_limit_bps > 0 {
            self.tokens.0 -= m.stored_size() as f64;
        }
        Next::Send(m, d)
    }

    /// When `m` may go, if not now: after the gap before it in the stream (original replay),
    /// and once the rate limit's bucket holds its size.
    fn paced_until(&mut self, st: &StreamState, m: &StoredMsg, now: Instant) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        if self.config.replay_policy == ReplayPolicy::Original {
            if let Some((ts, sent)) = self.replayed {
                let gap = m.ts - ts;
                // As nats-server: gaps of a millisecond or less are not waited for.
                if gap > 1_000_000 {
                    let due = sent + nanos(gap);
                    if due > now {
                        at = Some(due);
                    }
                }
            }
        }
        if self.config.rate_limit_bps > 0 {
            let rate = self.config.rate_limit_bps as f64 / 8.0;
            let burst = if st.config.max_msg_size > 0 {
                st.config.max_msg_size as f64
            } else {
                RATE_BURST_DEFAULT
            };
            let (tokens, since) = self.tokens;
            let filled =
                (tokens.min(burst) + now.duration_since(since).as_secs_f64() * rate).min(burst);
            self.tokens = (filled, now);
            let need = (m.stored_size() as f64).min(burst) - filled;
            if need > 0.0 {
                let due = now + Duration::from_secs_f64(need / rate);
                at = Some(at.map_or(due, |a| a.max(due)));
            }
        }
        at
    }

    /// A consumer read back from its record.
    pub fn restore(name: String, stream: Arc<Stream>, rec: ConsumerRecord) -> Option<Self> {
        let mut config = rec.config?;
        config.upgrade_defaults();
        let st = stream.state.locked();
        let mut c = Consumer::new(name, stream.clone(), config, rec.created, &st);
        c.next = rec.next.max(1);
        c.lps = rec.lps.into();
        c.delivered = rec.delivered;
        c.ack_floor = rec.ack_floor;
        c.num_redelivered = rec.redelivered;
        let now = Instant::now();
        // Everything delivered and not acknowledged is delivered again.
        for (sseq, deliveries) in rec.pending {
            if st.entry(sseq).is_some() {
                c.pending.insert(
                    sseq,
                    Pending {
                        cseq: 0,
                        deliveries,
                        deadline: now,
                        sent: now,
                    },
                );
                c.redeliver.insert(sseq);
            }
        }
        drop(st);
        c.dirty = false;
        Some(c)
    }

    pub fn record(&self) -> ConsumerRecord {
        ConsumerRecord {
            config: Some(self.config.clone()),
            created: self.created,
            delivered: self.delivered,
            ack_floor: self.ack_floor,
            next: self.next,
            lps: self.lps.iter().copied().collect(),
            pending: self
                .pending
                .iter()
                .map(|(s, p)| (*s, p.deliveries))
                .collect(),
            redelivered: self.num_redelivered,
        }
    }

    pub fn filters(&self) -> &[String] {
        &self.filters
    }

    pub fn is_durable(&self) -> bool {
        self.config.durable_name.is_some()
    }

    /// Whether the consumer's record goes to the store (durables, and ephemerals that asked to
    /// outlive a gap with `inactive_threshold`).
    pub fn persisted(&self) -> bool {
        self.stream.durable().is_some() && (self.is_durable() || self.config.inactive_threshold > 0)
    }

    /// Whether deliveries must wait for the commit that counts them: with `max_deliver`, a
    /// crash must not forget a delivery the client saw.
    pub fn gates_deliveries(&self) -> bool {
        self.config.max_deliver > 0 && self.persisted()
    }

    pub fn delivered(&self) -> (u64, u64) {
        self.delivered
    }

    pub fn ack_floor(&self) -> (u64, u64) {
        self.ack_floor
    }

    pub fn num_ack_pending(&self) -> usize {
        self.pending.len()
    }

    /// Messages not delivered yet that the consumer will deliver.
    pub fn num_pending(&self, st: &StreamState) -> u64 {
        let lps = self.lps.iter().filter(|s| st.entry(**s).is_some()).count() as u64;
        // A first delivery held back by the pacing was taken, not sent.
        let held = self
            .held
            .as_ref()
            .is_some_and(|(m, d)| *d == 1 && st.entry(m.seq).is_some()) as u64;
        lps + held + st.count_from(self.next, &self.filters, self.filters_all)
    }

    fn ack_subject(&self, deliveries: u64, m: &StoredMsg, cseq: u64, pending: u64) -> Bytes {
        Bytes::from(format!(
            "$JS.ACK.{}.{}.{}.{}.{}.{}.{}",
            self.stream.name, self.name, deliveries, m.seq, cseq, m.ts, pending
        ))
    }

    fn may_send_more(&self) -> bool {
        self.config.max_ack_pending <= 0
            || (self.pending.len() as i64) < self.config.max_ack_pending
    }

    /// The next message to deliver (a redelivery first), and its delivery count.
    fn take_next(&mut self, st: &StreamState) -> Option<(Arc<StoredMsg>, u64)> {
        while let Some(&sseq) = self.redeliver.iter().next() {
            self.redeliver.remove(&sseq);
            match (st.load(sseq), self.pending.get(&sseq)) {
                (Some(m), Some(p)) => {
                    let d = p.deliveries.saturating_add(1);
                    if self.config.max_deliver > 0 && d > self.config.max_deliver as u64 {
                        self.events.push(Event::MaxDeliveries {
                            sseq,
                            deliveries: p.deliveries,
                        });
                        self.pending.remove(&sseq);
                        self.update_floor();
                        continue;
                    }
                    return Some((m, d));
                }
                _ => {
                    self.pending.remove(&sseq);
                    self.update_floor();
                }
            }
        }
        if !self.may_send_more() {
            return None;
        }
        while let Some(sseq) = self.lps.pop_front() {
            if let Some(m) = st.load(sseq) {
                return Some((m, 1));
            }
        }
        let seq = st.next_matching(self.next, &self.filters)?;
        self.next = seq + 1;
        Some((st.load(seq)?, 1))
    }

    /// Records a delivery of `m` (the `deliveries`th) and builds it for `to`.
    fn deliver(
        &mut self,
        st: &StreamState,
        m: &StoredMsg,
        deliveries: u64,
        to: Bytes,
        now: Instant,
    ) -> Out {
        let cseq = self.delivered.0 + 1;
        self.delivered.0 = cseq;
        self.delivered.1 = self.delivered.1.max(m.seq);
        if deliveries > 1 {
            self.num_redelivered = self.num_redelivered.saturating_add(1);
        }
        match self.config.ack_policy {
            AckPolicy::None => {
                self.ack_floor = self.delivered;
            }
            _ => {
                let deadline = now + self.ack_wait_for(deliveries);
                self.note_deadline(deadline);
                self.pending.insert(
                    m.seq,
                    Pending {
                        cseq,
                        deliveries,
                        deadline,
                        sent: now,
                    },
                );
            }
        }
        self.dirty = true;
        self.last_active = crate::stream::now_ns();
        let pending = self.num_pending(st);
        let (headers, payload) = if self.config.headers_only {
            let size = m.payload.len().to_string();
            (
                Some(headers::with(
                    &[("Nats-Msg-Size", &size)],
                    m.headers.as_deref(),
                )),
                Bytes::new(),
            )
        } else {
            (m.headers.clone(), m.payload.clone())
        };
        Out {
            to,
            subject: m.subject.clone(),
            reply: Some(self.ack_subject(deliveries, m, cseq, pending)),
            headers,
            payload,
        }
    }

    fn note_deadline(&mut self, at: Instant) {
        self.next_deadline = Some(self.next_deadline.map_or(at, |n| n.min(at)));
    }

    fn ack_wait_for(&self, deliveries: u64) -> Duration {
        if self.config.backoff.is_empty() {
            return nanos(self.config.ack_wait);
        }
        let i = (deliveries as usize).saturating_sub(1);
        nanos(
            *self
                .config
                .backoff
                .get(i)
                .or(self.config.backoff.last())
                .expect("backoff is not empty"),
        )
    }

    /// Sends what a push consumer may send now, at most [`PUMP_LIMIT`] messages; returns
    /// whether it stopped at the limit (more to send on the next round).
    pub fn pump_push(&mut self, active: bool, out: &mut Vec<Out>) -> bool {
        let Some(ds) = self.config.deliver_subject.clone() else {
            return false;
        };
        if !active {
            return false;
        }
        if self.config.flow_control && self.fc_waiting.is_some() {
            // Stalled until the client answers the flow control request (heartbeats name it in
            // `Nats-Consumer-Stalled`, so a client that missed it can answer).
            return false;
        }
        let to = Bytes::from(ds);
        let stream = self.stream.clone();
        let st = stream.state.locked();
        let now = Instant::now();
        let mut sent = 0usize;
        while let Next::Send(m, d) = self.next_paced(&st, now) {
            let o = self.deliver(&st, &m, d, to.clone(), now);
            self.fc_bytes += (m.payload.len() + m.subject.len()) as u64;
            out.push(o);
            sent += 1;
            if self.config.flow_control && self.fc_bytes >= FLOW_CONTROL_BYTES {
                out.push(self.flow_control_request(to.clone()));
                break;
            }
            if sent >= PUMP_LIMIT {
                break;
            }
        }
        if sent > 0 {
            self.last_push = now;
        }
        sent >= PUMP_LIMIT
    }

    fn flow_control_request(&mut self, to: Bytes) -> Out {
        let reply = format!(
            "$JS.FC.{}.{}.{}",
            self.stream.name,
            self.name,
            crate::random_token()
        );
        self.fc_waiting = Some(reply.clone());
        self.fc_bytes = 0;
        Out {
            to: to.clone(),
            subject: to,
            reply: Some(Bytes::from(reply)),
            headers: Some(headers::status(100, "FlowControl Request", &[])),
            payload: Bytes::new(),
        }
    }

    /// The client answered a flow control request.
    pub fn flow_control_reply(&mut self, subject: &str) {
        if self.fc_waiting.as_deref() == Some(subject) {
            self.fc_waiting = None;
        }
    }

    fn has_deliverable(&self, st: &StreamState) -> bool {
        self.held.is_some()
            || !self.redeliver.is_empty()
            || (self.may_send_more()
                && (!self.lps.is_empty() || st.next_matching(self.next, &self.filters).is_some()))
    }

    /// Processes an acknowledgement of stream sequence `sseq`. Returns the sequences now
    /// acknowledged (for interest and work-queue retention).
    pub fn ack(&mut self, sseq: u64, kind: &AckKind) -> Vec<u64> {
        let mut done = Vec::new();
        match kind {
            AckKind::Ack | AckKind::Next(_) => match self.config.ack_policy {
                AckPolicy::All => {
                    let below: Vec<u64> = self.pending.range(..=sseq).map(|(s, _)| *s).collect();
                    for s in below {
                        self.pending.remove(&s);
                        self.redeliver.remove(&s);
                        done.push(s);
                    }
                }
                AckPolicy::Explicit => {
                    if let Some(p) = self.pending.remove(&sseq) {
                        self.redeliver.remove(&sseq);
                        done.push(sseq);
                        if self.sampled() {
                            self.events.push(Event::Acked {
                                cseq: p.cseq,
                                sseq,
                                deliveries: p.deliveries,
                                ack_time: p.sent.elapsed().as_nanos() as u64,
                            });
                        }
                    }
                }
                AckPolicy::None => {}
            },
            AckKind::Term => {
                if let Some(p) = self.pending.remove(&sseq) {
                    self.redeliver.remove(&sseq);
                    done.push(sseq);
                    self.events.push(Event::Terminated {
                        cseq: p.cseq,
                        sseq,
                        deliveries: p.deliveries,
                    });
                }
            }
            AckKind::Nak(delay) => {
                if let Some(p) = self.pending.get_mut(&sseq) {
                    self.events.push(Event::Naked {
                        cseq: p.cseq,
                        sseq,
                        deliveries: p.deliveries,
                    });
                    match delay {
                        Some(d) => {
                            p.deadline = Instant::now() + *d;
                            let at = p.deadline;
                            self.note_deadline(at);
                        }
                        None => {
                            self.redeliver.insert(sseq);
                        }
                    }
                }
            }
            AckKind::Progress => {
                let wait = nanos(self.config.ack_wait);
                if let Some(p) = self.pending.get_mut(&sseq) {
                    p.deadline = Instant::now() + wait;
                }
            }
        }
        if !done.is_empty() {
            self.update_floor();
        }
        self.dirty = true;
        done
    }

    /// Whether this acknowledgement is sampled for the ack metric.
    fn sampled(&mut self) -> bool {
        match self.sample_pct {
            0 => false,
            100.. => true,
            p => {
                let x = &mut self.sample_rng;
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                (*x % 100) < u64::from(p)
            }
        }
    }

    /// The stream was purged (of what this consumer takes) and now starts at `first`, as
    /// nats-server's consumer takes a purge: nothing below it is delivered or waits for an
    /// acknowledgement any more, and the floor moves up to it.
    pub fn purged(&mut self, first: u64, st: Option<&StreamState>) {
        // A consumer that takes more than was purged (`st`) keeps its place, and only stops
        // waiting for the acknowledgements of messages that went.
        if let Some(st) = st {
            let gone: Vec<u64> = self
                .pending
                .keys()
                .copied()
                .filter(|&s| st.entry(s).is_none())
                .collect();
            for s in gone {
                self.pending.remove(&s);
                self.redeliver.remove(&s);
            }
        }
        self.next = self.next.max(first);
        if self.ack_floor.1 < first {
            self.ack_floor.1 = first - 1;
            let gone: Vec<u64> = self.pending.range(..first).map(|(s, _)| *s).collect();
            for s in gone {
                if let Some(p) = self.pending.remove(&s) {
                    self.ack_floor.0 = self.ack_floor.0.max(p.cseq);
                }
                self.redeliver.remove(&s);
            }
            self.lps.retain(|&s| s >= first);
        }
        if self.pending.is_empty() {
            self.delivered.1 = self.delivered.1.max(self.next - 1);
            self.ack_floor = self.delivered;
        }
        self.dirty = true;
    }

    fn update_floor(&mut self) {
        self.ack_floor = match self.pending.iter().next() {
            Some((sseq, p)) if p.cseq > 0 => (p.cseq - 1, sseq - 1),
            Some((sseq, _)) => (self.ack_floor.0, sseq - 1),
            None => self.delivered,
        };
        self.dirty = true;
    }

    /// Whether `sseq` was delivered and acknowledged (interest retention asks).
    pub fn has_acked(&self, sseq: u64, subject: &[u8]) -> bool {
        if !matches_any(&self.filters, subject) {
            return true;
        }
        sseq <= self.ack_floor.1
            || (sseq < self.next && !self.pending.contains_key(&sseq) && !self.lps.contains(&sseq))
    }

    /// Timers: redeliveries due, pull requests expired, heartbeats. Returns status messages.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Out>) {
        // The pending list is only walked once its earliest deadline has passed.
        if self.next_deadline.is_some_and(|d| d <= now) {
            let mut next: Option<Instant> = None;
            for (sseq, p) in &self.pending {
                if p.deadline <= now {
                    if !self.redeliver.contains(sseq) {
                        self.redeliver.insert(*sseq);
                    }
                } else {
                    next = Some(next.map_or(p.deadline, |n| n.min(p.deadline)));
                }
            }
            self.next_deadline = next;
        }
        self.sweep_unheard(now);
        let mut keep = VecDeque::new();
        for mut r in self.waiting.drain(..) {
            if r.expires.is_some_and(|e| e <= now) {
                out.push(status(
                    r.reply,
                    408,
                    "Request Timeout",
                    &pending_headers_of(r.batch - r.sent, r.max_bytes),
                ));
                continue;
            }
            if let Some(hb) = r.heartbeat {
                if now.duration_since(r.last_sent) >= hb {
                    r.last_sent = now;
                    out.push(status(r.reply.clone(), 100, "Idle Heartbeat", &[]));
                }
            }
            keep.push_back(r);
        }
        self.waiting = keep;
        if let (Some(ds), hb) = (&self.config.deliver_subject, self.config.idle_heartbeat) {
            if hb > 0 && now.duration_since(self.last_push) >= nanos(hb) {
                self.last_push = now;
                let mut extra = vec![
                    ("Nats-Last-Consumer", self.delivered.0.to_string()),
                    ("Nats-Last-Stream", self.delivered.1.to_string()),
                ];
                if let Some(fc) = &self.fc_waiting {
                    extra.push(("Nats-Consumer-Stalled", fc.clone()));
                }
                let to = Bytes::from(ds.clone());
                out.push(Out {
                    to: to.clone(),
                    subject: to,
                    reply: None,
                    headers: Some(headers::status(100, "Idle Heartbeat", &extra)),
                    payload: Bytes::new(),
                });
            }
        }
    }

    /// Ends every waiting request (the consumer is going away).
    pub fn close(&mut self, out: &mut Vec<Out>) {
        for r in self.waiting.drain(..) {
            out.push(status(r.reply, 409, "Consumer Deleted", &[]));
        }
    }

    /// The configuration as nats-server reports it: an ephemeral without an inactive threshold
    /// shows the one it gets (Junction keeps it unset, so that such ephemerals are not
    /// stored).
    pub fn shown_config(&self) -> std::borrow::Cow<'_, ConsumerConfig> {
        if self.is_durable() || self.config.inactive_threshold > 0 {
            return std::borrow::Cow::Borrowed(&self.config);
        }
        let mut c = self.config.clone();
        c.inactive_threshold = crate::config::DEFAULT_INACTIVE_THRESHOLD;
        std::borrow::Cow::Owned(c)
    }

    /// Applies an update of the configuration (the fields nats-server lets change, the
    /// filters among them).
    pub fn update(&mut self, config: ConsumerConfig, st: &StreamState) {
        self.sample_pct = config.sample_percent().unwrap_or(0);
        self.filters = config.filters();
        self.filters_all = filters_all(&self.filters, st);
        self.config = config;
        self.dirty = true;
    }
}

/// Messages one consumer sends in one round of the task (the rest follow in the next round,
/// so one large backlog does not hold up the other consumers and requests).
pub const PUMP_LIMIT: usize = 4096;

/// How often a consumer's position is saved when nothing waits for it.
pub const SAVE_EVERY: Duration = Duration::from_millis(100);

/// Bytes of push deliveries between two flow control requests.
const FLOW_CONTROL_BYTES: u64 = 1024 * 1024;

fn pending_headers_of(msgs: i64, bytes: i64) -> Vec<(&'static str, String)> {
    vec![
        ("Nats-Pending-Messages", msgs.max(0).to_string()),
        ("Nats-Pending-Bytes", bytes.max(0).to_string()),
    ]
}

/// A status message to a pull request's reply subject.
pub fn status(to: Bytes, code: u16, text: &str, extra: &[(&str, String)]) -> Out {
    Out {
        subject: to.clone(),
        to,
        reply: None,
        headers: Some(headers::status(code, text, extra)),
        payload: Bytes::new(),
    }
}
