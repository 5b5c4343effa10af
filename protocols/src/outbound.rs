//! The bounded outbound buffer of one connection, shared by every frontend.
//!
//! Publishers append encoded deliveries under a short lock and never await. The connection's own
//! task takes the whole buffer at once and writes it with as few syscalls as the socket allows.
//! When the bytes waiting pass `max_pending`, the connection is marked as a slow consumer: nothing
//! more is queued for it and its task closes it. An idle connection holds no buffer memory.

use junction_core::sync::Lock;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

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

#[derive(Default)]
struct State {
    buf: BytesMut,
    /// A cleared buffer of a busy connection, reused instead of allocating.
    spare: BytesMut,
    /// Bytes taken by the writer and not yet written.
    in_flight: usize,
    closed: Option<CloseReason>,
    /// Publishers waiting for the backlog to drain.
    drain_wakers: Vec<Waker>,
    /// A publisher waited in vain: the writer is not draining, so nobody waits for it again
    /// until it makes progress.
    stuck: bool,
    /// Nothing may be written yet (what it answers is not durable yet).
    held: bool,
    /// The connection's task, to wake when there is something for it to do.
    task: Option<Waker>,
    /// Someone asked the connection to finish (shutdown, stale): flush what is queued, then
    /// close with this reason. Taken by the connection's task.
    finish: Option<CloseReason>,
    /// Messages queued for the client since it connected.
    out_msgs: u64,
    /// Bytes (headers and payload) of those messages.
    out_bytes: u64,
}

/// One connection's outbound buffer and its writer's wake-up.
pub struct Outbound {
    state: Mutex<State>,
    max_pending: usize,
    /// Backlog past which publishers pause (while the writer drains).
    high_watermark: usize,
    /// Backlog below which paused publishers go on.
    low_watermark: usize,
}

impl Outbound {
    /// An empty buffer that cuts the connection off past `max_pending` bytes.
    pub fn new(max_pending: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_pending,
            high_watermark: (max_pending / 2).min(HIGH_WATERMARK_BYTES),
            low_watermark: (max_pending / 4).min(HIGH_WATERMARK_BYTES / 2),
        }
    }

    /// Appends `len` bytes written by `encode`, unless that would pass the limit. A delivery
    /// counts as one message of `msg_bytes` (headers and payload) in the connection's counters.
    pub fn push(&self, len: usize, msg_bytes: u64, encode: impl FnOnce(&mut BytesMut)) -> Push {
        let mut s = self.state.locked();
        if s.closed.is_some() {
            return Push::Closed;
        }
        if s.buf.len() + s.in_flight + len > self.max_pending {
            s.closed = Some(CloseReason::SlowConsumerPendingBytes);
            let task = s.task.take();
            drop(s);
            if let Some(t) = task {
                t.wake();
            }
            return Push::SlowConsumer;
        }
        let was_empty = s.buf.is_empty();
        if s.buf.capacity() == 0 {
            let spare = std::mem::take(&mut s.spare);
            s.buf = spare;
            if s.buf.capacity() < len {
                s.buf.reserve(len.max(FIRST_ALLOC_BYTES));
            }
        }
        encode(&mut s.buf);
        s.out_msgs += 1;
        s.out_bytes += msg_bytes;
        let backlogged = !s.stuck && s.buf.len() + s.in_flight > self.high_watermark;
        Push::Queued {
            was_empty,
            backlogged,
        }
    }

    /// Appends bytes the connection itself sends (replies, errors), even past the limit.
    pub fn push_own(&self, data: &[u8]) {
        let mut s = self.state.locked();
        if !s.closed.is_some_and(|r| r.is_slow_consumer()) {
            s.buf.extend_from_slice(data);
        }
    }

    /// Takes everything queued, for the writer. The returned buffer's length is "in flight"
    /// until [`Outbound::written`] is called.
    pub fn take(&self) -> BytesMut {
        let mut s = self.state.locked();
        if s.held {
            return BytesMut::new();
        }
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
        if keep && s.spare.capacity() == 0 {
            chunk.clear();
            s.spare = chunk;
        }
        if !s.drain_wakers.is_empty() && s.buf.len() <= self.low_watermark {
            for w in s.drain_wakers.drain(..) {
                w.wake();
            }
        }
    }

    /// Ready once the backlog is below the low watermark (or nobody should wait for it).
    pub fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.locked();
        if s.stuck || s.closed.is_some() || s.buf.len() + s.in_flight <= self.low_watermark {
            return Poll::Ready(());
        }
        if !s.drain_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.drain_wakers.push(cx.waker().clone());
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
        s.spare = BytesMut::new();
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

    /// Bytes waiting to be written (queued and in flight).
    pub fn pending(&self) -> usize {
        let s = self.state.locked();
        s.buf.len() + s.in_flight
    }

    /// Marks the connection closed (the first reason wins) and wakes its task.
    pub fn close(&self, reason: CloseReason) {
        let task = {
            let mut s = self.state.locked();
            if s.closed.is_none() {
                s.closed = Some(reason);
            }
            for w in s.drain_wakers.drain(..) {
                w.wake();
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
    /// Holds everything queued, and whatever is queued after it, until [`Outbound::release`]:
    /// an MQTT CONNACK that must not reach the client before its session is durable, with
    /// everything that follows it in order behind it.
    pub fn hold(&self) {
        self.state.locked().held = true;
    }

    /// Lets the writer go on after [`Outbound::hold`].
    pub fn release(&self) {
        self.state.locked().held = false;
        self.wake();
    }

    pub fn wake(&self) {
        let task = self.state.locked().task.take();
        if let Some(t) = task {
            t.wake();
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
        assert_eq!(s.spare.capacity(), 0);
    }
}
