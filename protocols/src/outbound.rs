//! The bounded outbound buffer of one connection, shared by every frontend.
//!
//! Publishers append encoded deliveries under a short lock and never await. The connection's own
//! task takes the whole buffer at once and writes it with as few syscalls as the socket allows.
//! When the bytes waiting pass `max_pending`, the connection is marked as a slow consumer: nothing
//! more is queued for it and its task closes it. An idle connection holds no buffer memory.
//!
//! Output that must wait for the disk (an acknowledgement of what is not committed yet, a
//! message whose packet id is not stored yet) is pushed behind a [`Gate`]: the one mechanism for
//! "this goes out once that is durable". Gated bytes wait in order in their [`Lane`], and what
//! comes later in the same lane waits behind them; the gate's owner calls
//! [`Outbound::release`] when it opens.

use junction_core::sync::Lock;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use junction_core::AckWait;

use crate::CloseReason;

/// A written chunk at least this large is kept for reuse: the connection is busy.
const KEEP_CHUNK_BYTES: usize = 4 * 1024;
/// A spare buffer larger than this is never kept.
const MAX_SPARE_BYTES: usize = 1024 * 1024;
/// First allocation of an empty buffer.
const FIRST_ALLOC_BYTES: usize = 512;
/// Past this backlog a publisher pauses briefly for a subscriber that is still draining.
const HIGH_WATERMARK_BYTES: usize = 1024 * 1024;

/// What became of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued; `was_empty` says the writer must be woken (nobody else will).
    Queued {
        /// The buffer was empty before this append.
        was_empty: bool,
        /// The backlog is past the high watermark and the writer is draining it: the publisher
        /// should pause until it drains.
        backlogged: bool,
    },
    /// This append made the connection a slow consumer; it is being closed.
    SlowConsumer,
    /// The connection is closed or closing; nothing was queued.
    Closed,
}

impl Push {
    /// For a sink that queued a delivery: registers its writer to be woken once (when the
    /// buffer was empty) and, past the high watermark, to be waited for by the publisher.
    /// Returns whether the delivery was queued.
    pub fn note_queued(
        self,
        batch: &mut junction_core::FlushBatch,
        sink: &std::sync::Arc<dyn junction_core::Sink>,
    ) -> bool {
        let Push::Queued {
            was_empty,
            backlogged,
        } = self
        else {
            return false;
        };
        if was_empty {
            batch.touch(sink.clone());
        }
        if backlogged {
            batch.backlog(sink);
        }
        true
    }
}

#[derive(Default)]
struct State {
    buf: BytesMut,
    /// Bytes taken by the writer and not yet written.
    in_flight: usize,
    closed: Option<CloseReason>,
    /// Someone asked the connection to finish (shutdown, stale): flush what is queued, then
    /// close with this reason. Taken by the connection's task.
    finish: Option<CloseReason>,
    /// A publisher waited in vain: the writer is not draining, so nobody waits for it again
    /// until it makes progress.
    stuck: bool,
    /// The connection's task, to wake when there is something for it to do.
    task: Option<Waker>,
    /// Messages queued for the client since it connected.
    out_msgs: u64,
    /// Bytes (headers and payload) of those messages.
    out_bytes: u64,
    /// What only a busy connection needs, made on first use (an idle one stays small).
    more: Option<Box<More>>,
}

/// The part of an outbound buffer a busy connection needs.
#[derive(Default)]
struct More {
    /// A cleared buffer of a busy connection, reused instead of allocating.
    spare: BytesMut,
    /// Publishers waiting for the backlog to drain.
    drain_wakers: Vec<Waker>,
    /// Output waiting for gates to open, in order.
    held: VecDeque<Segment>,
    /// Bytes in `held`.
    held_bytes: usize,
}

impl State {
    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }

    fn held_bytes(&self) -> usize {
        self.more.as_ref().map_or(0, |m| m.held_bytes)
    }
}

/// One connection's outbound buffer and its writer's wake-up.
pub struct Outbound {
    state: Mutex<State>,
    max_pending: usize,
}

impl Outbound {
    /// An empty buffer that cuts the connection off past `max_pending` bytes.
    pub fn new(max_pending: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_pending,
        }
    }

    /// Backlog past which publishers pause (while the writer drains).
    fn high_watermark(&self) -> usize {
        (self.max_pending / 2).min(HIGH_WATERMARK_BYTES)
    }

    /// Backlog below which paused publishers go on.
    fn low_watermark(&self) -> usize {
        (self.max_pending / 4).min(HIGH_WATERMARK_BYTES / 2)
    }

    /// Appends `len` bytes written by `encode`, unless that would pass the limit. A delivery
    /// counts as one message of `msg_bytes` (headers and payload) in the connection's counters.
    pub fn push(&self, len: usize, msg_bytes: u64, encode: impl FnOnce(&mut BytesMut)) -> Push {
        let mut s = self.state.locked();
        if s.closed.is_some() {
            return Push::Closed;
        }
        if s.buf.len() + s.in_flight + s.held_bytes() + len > self.max_pending {
            s.closed = Some(CloseReason::SlowConsumerPendingBytes);
            let task = s.task.take();
            drop(s);
            if let Some(t) = task {
                t.wake();
            }
            return Push::SlowConsumer;
        }
        s.out_msgs += 1;
        s.out_bytes += msg_bytes;
        if let Some(seg) = s.behind(Lane::Deliveries) {
            encode(seg);
            s.more().held_bytes += len;
            return Push::Queued {
                was_empty: false,
                backlogged: false,
            };
        }
        let was_empty = s.buf.is_empty();
        if s.buf.capacity() == 0 {
            if let Some(m) = s.more.as_mut() {
                s.buf = std::mem::take(&mut m.spare);
            }
            if s.buf.capacity() < len {
                s.buf.reserve(len.max(FIRST_ALLOC_BYTES));
            }
        }
        encode(&mut s.buf);
        let backlogged = !s.stuck && s.buf.len() + s.in_flight > self.high_watermark();
        Push::Queued {
            was_empty,
            backlogged,
        }
    }

    /// Appends bytes the connection itself sends (replies, errors), even past the limit, in
    /// the lane of its replies: behind held replies, and behind anything held for all lanes.
    pub fn push_own(&self, data: &[u8]) {
        self.push_own_in(Lane::Replies, data);
    }

    /// [`Outbound::push_own`] in a given lane ([`Lane::Urgent`]: only a barrier holds it).
    pub fn push_own_in(&self, lane: Lane, data: &[u8]) {
        let mut s = self.state.locked();
        if s.closed.is_some_and(|r| r.is_slow_consumer()) {
            return;
        }
        if let Some(seg) = s.behind(lane) {
            seg.extend_from_slice(data);
            s.more().held_bytes += data.len();
        } else {
            s.buf.extend_from_slice(data);
        }
    }

    /// Appends `data` in `lane` once `gate` opens (and once what was held before it in its lane
    /// went out). [`Lane::All`] holds everything after it, in every lane, behind it too.
    pub fn push_gated(&self, lane: Lane, gate: &Arc<Gate>, data: &[u8]) {
        let mut s = self.state.locked();
        if s.closed.is_some_and(|r| r.is_slow_consumer()) {
            return;
        }
        let more = s.more();
        more.held_bytes += data.len();
        match more.held.back_mut() {
            Some(last)
                if last.lane == lane
                    && last.gate.as_ref().is_some_and(|g| Arc::ptr_eq(g, gate)) =>
            {
                last.bytes.extend_from_slice(data)
            }
            _ => more.held.push_back(Segment {
                lane,
                gate: Some(gate.clone()),
                bytes: BytesMut::from(data),
            }),
        }
        drop(s);
        if gate.is_open() {
            self.release();
        }
    }

    /// Moves what open gates held into the output, in order; wakes the connection's task when
    /// anything moved. Called by a gate's owner when the gate opens.
    pub fn release(&self) -> bool {
        let moved = {
            let mut s = self.state.locked();
            s.release()
        };
        if moved {
            self.wake();
        }
        moved
    }

    /// Takes everything queued, for the writer. The returned buffer's length is "in flight"
    /// until [`Outbound::written`] is called.
    pub fn take(&self) -> BytesMut {
        let mut s = self.state.locked();
        let buf = std::mem::take(&mut s.buf);
        s.in_flight = buf.len();
        buf
    }

    /// The writer finished writing `chunk`; a busy connection keeps it for reuse.
    pub fn written(&self, mut chunk: BytesMut) {
        let keep = chunk.capacity() >= KEEP_CHUNK_BYTES && chunk.capacity() <= MAX_SPARE_BYTES;
        let mut s = self.state.locked();
        s.in_flight = 0;
        s.stuck = false;
        if keep && s.more.as_ref().is_none_or(|m| m.spare.capacity() == 0) {
            chunk.clear();
            s.more().spare = chunk;
        }
        let drained = s.buf.len() <= self.low_watermark();
        if let Some(m) = s.more.as_mut().filter(|_| drained) {
            for w in m.drain_wakers.drain(..) {
                w.wake();
            }
        }
    }

    /// Ready once the backlog is below the low watermark (or nobody should wait for it).
    pub fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.locked();
        if s.stuck || s.closed.is_some() || s.buf.len() + s.in_flight <= self.low_watermark() {
            return Poll::Ready(());
        }
        let wakers = &mut s.more().drain_wakers;
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// A publisher waited in vain for the backlog to drain.
    pub fn stall_timed_out(&self) {
        self.state.locked().stuck = true;
    }

    /// Releases the spare buffer (the connection went idle).
    pub fn release_spare(&self) {
        let mut s = self.state.locked();
        if let Some(m) = s.more.as_mut() {
            m.spare = BytesMut::new();
        }
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.state.locked().buf.is_empty()
    }

    /// Messages and their bytes queued for the client since it connected.
    pub fn delivered(&self) -> (u64, u64) {
        let s = self.state.locked();
        (s.out_msgs, s.out_bytes)
    }

    /// Bytes waiting to be written (queued, held and in flight).
    pub fn pending(&self) -> usize {
        let s = self.state.locked();
        s.buf.len() + s.in_flight + s.held_bytes()
    }

    /// Marks the connection closed (the first reason wins) and wakes its task.
    pub fn close(&self, reason: CloseReason) {
        let task = {
            let mut s = self.state.locked();
            if s.closed.is_none() {
                s.closed = Some(reason);
            }
            if let Some(m) = s.more.as_mut() {
                for w in m.drain_wakers.drain(..) {
                    w.wake();
                }
            }
            s.task.take()
        };
        if let Some(t) = task {
            t.wake();
        }
    }

    /// Asks the connection to finish: flush what is queued, then close with `reason` (the first
    /// reason wins). Wakes its task.
    pub fn finish(&self, reason: CloseReason) {
        let task = {
            let mut s = self.state.locked();
            if s.finish.is_none() {
                s.finish = Some(reason);
            }
            s.task.take()
        };
        if let Some(t) = task {
            t.wake();
        }
    }

    /// Takes a request to finish, if one was made.
    pub fn take_finish(&self) -> Option<CloseReason> {
        self.state.locked().finish.take()
    }

    /// Registers the connection's task to be woken by [`Outbound::wake`], unless there is
    /// already something for it to do: then returns true and the task should go on instead of
    /// sleeping. Queued output counts only when `writer_idle` (a blocked writer waits for the
    /// socket, not for more output).
    pub fn register(&self, waker: &Waker, writer_idle: bool) -> bool {
        let mut s = self.state.locked();
        if (writer_idle && !s.buf.is_empty()) || s.closed.is_some() || s.finish.is_some() {
            return true;
        }
        match &s.task {
            Some(t) if t.will_wake(waker) => {}
            _ => s.task = Some(waker.clone()),
        }
        false
    }

    /// Why the connection is closed, if it is.
    pub fn closed(&self) -> Option<CloseReason> {
        self.state.locked().closed
    }

    /// Wakes the connection's task (after appends, once per batch).
    pub fn wake(&self) {
        let task = self.state.locked().task.take();
        if let Some(t) = task {
            t.wake();
        }
    }
}

/// Output that keeps its order only with output of the same lane: a held acknowledgement
/// holds later acknowledgements, never deliveries of other publishers' messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Messages from other publishers (MQTT PUBLISH to the client).
    Deliveries,
    /// The connection's own ordered replies (acknowledgements, SUBACK, UNSUBACK).
    Replies,
    /// Held by a barrier only (MQTT PINGRESP and the server's DISCONNECT).
    Urgent,
    /// A barrier: nothing of any lane goes before it, everything after it waits for it (an
    /// MQTT CONNACK that must not reach the client before its session is durable).
    All,
}

/// Bytes held behind a gate (or behind earlier held bytes of their lane).
struct Segment {
    lane: Lane,
    /// `None`: ungated bytes that only wait for what is before them.
    gate: Option<Arc<Gate>>,
    bytes: BytesMut,
}

impl State {
    /// The held segment new bytes of `lane` must go into, if anything holds that lane.
    fn behind(&mut self, lane: Lane) -> Option<&mut BytesMut> {
        let blocks = |s: &Segment| {
            s.lane == Lane::All || lane == Lane::All || (s.lane == lane && lane != Lane::Urgent)
        };
        let held = &mut self.more.as_mut()?.held;
        if !held.iter().any(blocks) {
            return None;
        }
        let reuse = held
            .back()
            .is_some_and(|last| last.gate.is_none() && last.lane == lane);
        if !reuse {
            held.push_back(Segment {
                lane,
                gate: None,
                bytes: BytesMut::new(),
            });
        }
        held.back_mut().map(|s| &mut s.bytes)
    }

    /// Moves the held segments that may go (their gate is open and nothing before them holds
    /// their lane) to the output; whether any did.
    fn release(&mut self) -> bool {
        let State { buf, more, .. } = self;
        let Some(more) = more.as_mut() else {
            return false;
        };
        let mut moved = false;
        let mut all_blocked = false;
        let mut blocked = [false; 4];
        let mut i = 0;
        while i < more.held.len() {
            let seg = &more.held[i];
            let lane = seg.lane as usize;
            let waits = all_blocked
                || (seg.lane == Lane::All && blocked.iter().any(|b| *b))
                || (seg.lane != Lane::Urgent && blocked[lane]);
            let open = seg.gate.as_ref().is_none_or(|g| g.is_open());
            if open && !waits {
                let seg = more.held.remove(i).expect("in range");
                more.held_bytes -= seg.bytes.len();
                buf.extend_from_slice(&seg.bytes);
                moved = true;
                continue;
            }
            if seg.lane == Lane::All {
                all_blocked = true;
            } else {
                blocked[lane] = true;
            }
            i += 1;
        }
        moved
    }
}

/// What a gate's opening is told to: the owner of the output it holds (a connection), which
/// releases it ([`Outbound::release`]) and writes.
pub trait GateOwner: Send + Sync {
    /// The gate opened.
    fn gate_opened(&self);
}

/// Opens once what it waits for happened: the store's commit of what was submitted before it
/// ([`Gate::committed`]), or, when nothing it waits for needs the disk, every early-sent copy
/// acknowledged by its subscriber ([`AckWait`]). It opens only once sealed: while its
/// connection still adds to it (during one read batch) it stays shut.
pub struct Gate {
    /// Something behind the gate must be on the disk first.
    needs_commit: AtomicBool,
    /// The commit holding everything behind the gate is done.
    committed: AtomicBool,
    /// Early-sent copies not acknowledged yet.
    unacked: AtomicUsize,
    /// Nothing more is added.
    sealed: AtomicBool,
    /// Told when the gate opens.
    owner: Weak<dyn GateOwner>,
}

impl Gate {
    /// A gate that opens when nothing it holds waits any more (see [`Gate::require_commit`]).
    pub fn new(owner: Weak<dyn GateOwner>) -> Arc<Gate> {
        Arc::new(Gate {
            needs_commit: AtomicBool::new(false),
            committed: AtomicBool::new(false),
            unacked: AtomicUsize::new(0),
            sealed: AtomicBool::new(false),
            owner,
        })
    }

    /// A sealed gate that opens at the commit (call [`Gate::committed`] from the store).
    pub fn commit(owner: Weak<dyn GateOwner>) -> Arc<Gate> {
        let g = Gate::new(owner);
        g.require_commit();
        g.sealed.store(true, Ordering::Release);
        g
    }

    /// What it holds needs the commit (not only the subscribers' acknowledgements).
    pub fn require_commit(&self) {
        self.needs_commit.store(true, Ordering::Release);
    }

    /// Whether it holds anything that needs the commit.
    pub fn needs_commit(&self) -> bool {
        self.needs_commit.load(Ordering::Acquire)
    }

    /// Whether it is open.
    pub fn is_open(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
            && (self.committed.load(Ordering::Acquire)
                || (!self.needs_commit.load(Ordering::Acquire)
                    && self.unacked.load(Ordering::Acquire) == 0))
    }

    /// Nothing more is added; tells the owner when that opened it.
    pub fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
        self.opened();
    }

    /// The store committed everything submitted before the gate asked for it.
    pub fn committed(&self) {
        self.committed.store(true, Ordering::Release);
        self.opened();
    }

    fn opened(&self) {
        if self.is_open() {
            if let Some(owner) = self.owner.upgrade() {
                owner.gate_opened();
            }
        }
    }
}

impl AckWait for Gate {
    fn copy_sent(&self) {
        self.unacked.fetch_add(1, Ordering::AcqRel);
    }

    fn copy_acked(&self) {
        if self.unacked.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.opened();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_consumer_past_the_limit() {
        let out = Outbound::new(10);
        assert_eq!(
            out.push(6, 1, |b| b.extend_from_slice(b"123456")),
            Push::Queued {
                was_empty: true,
                backlogged: true
            }
        );
        assert_eq!(
            out.push(4, 1, |b| b.extend_from_slice(b"7890")),
            Push::Queued {
                was_empty: false,
                backlogged: true
            }
        );
        assert_eq!(
            out.push(1, 1, |b| b.extend_from_slice(b"x")),
            Push::SlowConsumer
        );
        assert_eq!(out.closed(), Some(CloseReason::SlowConsumerPendingBytes));
        assert_eq!(out.push(1, 1, |b| b.extend_from_slice(b"x")), Push::Closed);
    }

    #[test]
    fn in_flight_bytes_count_towards_the_limit() {
        let out = Outbound::new(10);
        out.push(8, 1, |b| b.extend_from_slice(b"12345678"));
        let chunk = out.take();
        assert_eq!(chunk.len(), 8);
        assert!(out.is_empty());
        assert_eq!(
            out.push(4, 1, |b| b.extend_from_slice(b"abcd")),
            Push::SlowConsumer
        );
        let out = Outbound::new(10);
        out.push(8, 1, |b| b.extend_from_slice(b"12345678"));
        let chunk = out.take();
        out.written(chunk);
        assert_eq!(
            out.push(4, 1, |b| b.extend_from_slice(b"abcd")),
            Push::Queued {
                was_empty: true,
                backlogged: false
            }
        );
    }

    #[test]
    fn backlog_reported_until_a_stall_times_out() {
        let out = Outbound::new(100);
        // High watermark 50, low 25.
        assert!(matches!(
            out.push(60, 1, |b| b.extend_from_slice(&[0; 60])),
            Push::Queued {
                backlogged: true,
                ..
            }
        ));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(out.poll_drained(&mut cx).is_pending());
        out.stall_timed_out();
        assert!(out.poll_drained(&mut cx).is_ready());
        assert!(matches!(
            out.push(1, 1, |b| b.extend_from_slice(&[0])),
            Push::Queued {
                backlogged: false,
                ..
            }
        ));
        // Progress by the writer makes the backlog count again.
        let chunk = out.take();
        out.written(chunk);
        assert!(matches!(
            out.push(60, 1, |b| b.extend_from_slice(&[0; 60])),
            Push::Queued {
                backlogged: true,
                ..
            }
        ));
    }

    #[test]
    fn idle_connection_holds_no_buffer() {
        let out = Outbound::new(1 << 20);
        out.push(100, 1, |b| b.extend_from_slice(&[0; 100]));
        let chunk = out.take();
        out.written(chunk);
        let s = out.state.lock().unwrap();
        assert_eq!(s.buf.capacity(), 0);
        assert!(s.more.as_ref().is_none_or(|m| m.spare.capacity() == 0));
    }
}
