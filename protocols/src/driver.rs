//! The connection driver every frontend shares: one hand-written future per connection that
//! reads and hands bytes to its protocol, writes the coalesced output of its [`Outbound`], and
//! pauses reading while subscribers it overran are still draining.
//!
//! The future holds only its fields (no timers or wait queues while idle), so an idle connection
//! costs little memory. Keepalive and shutdown reach it through its `Outbound`
//! ([`Outbound::finish`]), woken by the frontend's sweep.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use junction_core::Sink;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::listener::Guard;
use crate::outbound::Outbound;
use crate::transport::Transport;
use crate::CloseReason;

/// Read buffer of a busy connection.
const LARGE_READ_BYTES: usize = 64 * 1024;
/// Read buffer of a quiet connection (released when it goes idle).
const SMALL_READ_BYTES: usize = 1024;
/// Longest a publisher pauses for one backlogged subscriber that is draining.
const STALL_MAX: Duration = Duration::from_millis(5);
/// Longest a publisher pauses after one read batch, over all backlogged subscribers.
const STALL_TOTAL: Duration = Duration::from_millis(10);
/// Read batches handled in one poll before the task yields to others.
const READS_PER_POLL: usize = 16;

/// What a frontend plugs into the driver.
pub(crate) trait Protocol: Unpin {
    /// The connection's outbound buffer.
    fn outbound(&self) -> &Outbound;

    /// Parses and handles every complete frame in `rbuf`. `Err`: the connection must close
    /// (after what is queued was written).
    fn process(&mut self, rbuf: &mut BytesMut) -> Result<(), CloseReason>;

    /// Ends a read batch (wakes touched writers, adds counters); returns the subscribers that
    /// were overran while still draining, for the publisher to wait on.
    fn end_batch(&mut self) -> Vec<Arc<dyn Sink>>;

    /// How long one write may stall.
    fn write_deadline(&self) -> Duration;

    /// A write stalled past the deadline: count and log the slow consumer.
    fn write_deadline_exceeded(&self);

    /// The connection ended: remove its state and record why.
    fn end(&mut self, reason: CloseReason);

    /// Pending while the protocol waits for work done off its task (a costly authentication):
    /// the driver reads nothing more meanwhile. `Ready(Ok(true))`: the wait just ended, and
    /// what is left in the read buffer must be processed before the next read.
    fn poll_resume(&mut self, _cx: &mut Context<'_>) -> Poll<Result<bool, CloseReason>> {
        Poll::Ready(Ok(false))
    }
}

/// Where the writer stands after a write attempt.
enum WriteState {
    /// Nothing left to write.
    Idle,
    /// The socket is full; wait until it is writable.
    Blocked,
}

/// The bytes being written and how far the writer got.
#[derive(Default)]
struct Writer {
    chunk: BytesMut,
    pos: usize,
}

impl Writer {
    /// Writes until everything queued is written and flushed, or the transport is full (then
    /// the task is woken when it has room).
    fn write<T: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut T,
        out: &Outbound,
    ) -> Result<WriteState, CloseReason> {
        loop {
            if self.pos == self.chunk.len() {
                if self.chunk.capacity() > 0 {
                    out.written(std::mem::take(&mut self.chunk));
                }
                self.pos = 0;
                self.chunk = out.take();
                if self.chunk.is_empty() {
                    return match io.poll_flush(cx) {
                        Poll::Ready(Ok(())) => Ok(WriteState::Idle),
                        Poll::Ready(Err(reason)) => Err(reason),
                        Poll::Pending => Ok(WriteState::Blocked),
                    };
                }
            }
            match io.poll_write(cx, &self.chunk[self.pos..]) {
                Poll::Ready(Ok(n)) => self.pos += n,
                Poll::Ready(Err(reason)) => return Err(reason),
                Poll::Pending => return Ok(WriteState::Blocked),
            }
        }
    }
}

/// A pause after a read batch that overran subscribers which are still draining: the
/// publisher reads nothing more until they drain, or until a short timer runs out (after which
/// nobody waits for that subscriber again until its writer makes progress).
struct Stall {
    sinks: Vec<Arc<dyn Sink>>,
    started: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Stall {
    fn new(sinks: Vec<Arc<dyn Sink>>) -> Self {
        let started = Instant::now();
        Self {
            sinks,
            started,
            timer: Box::pin(sleep_until(started + STALL_MAX)),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Some(sink) = self.sinks.last() {
            let drained = sink.poll_drained(cx).is_ready();
            if !drained {
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                sink.stall_timed_out();
            }
            self.sinks.pop();
            let next = (Instant::now() + STALL_MAX).min(self.started + STALL_TOTAL);
            self.timer.as_mut().reset(next);
        }
        Poll::Ready(())
    }
}

/// One connection of any protocol, run to its end by awaiting it.
pub(crate) struct Conn<P, T> {
    io: T,
    protocol: P,
    rbuf: BytesMut,
    read_size: usize,
    writer: Writer,
    /// Set once the connection is ending: stop reading, flush what is queued, then close.
    closing: Option<CloseReason>,
    /// Armed only while a write is blocked.
    deadline: Option<Pin<Box<Sleep>>>,
    stall: Option<Box<Stall>>,
    /// Counts the connection while it lives.
    _guard: Guard,
}

impl<P: Protocol, T: Transport> Conn<P, T> {
    /// A connection speaking `protocol` over `io`, counted by `guard`.
    pub(crate) fn new(io: T, protocol: P, guard: Guard) -> Self {
        Self {
            io,
            protocol,
            _guard: guard,
            rbuf: BytesMut::new(),
            read_size: SMALL_READ_BYTES,
            writer: Writer::default(),
            closing: None,
            deadline: None,
            stall: None,
        }
    }

    /// Reads once and hands what came to the protocol. `Err`: the connection must end now.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>> {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_size / 2 {
            self.rbuf.reserve(self.read_size);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        let n = match self.io.poll_read(cx, &mut self.rbuf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(CloseReason::ClientClosed)),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(reason)) => return Poll::Ready(Err(reason)),
            Poll::Pending => {
                if self.rbuf.is_empty() {
                    // Nothing came: an idle connection keeps no read buffer.
                    self.rbuf = BytesMut::new();
                }
                return Poll::Pending;
            }
        };
        // A read that filled the buffer marks a busy connection: read more at once. A small
        // one marks a quiet connection.
        if n == room {
            self.read_size = LARGE_READ_BYTES;
        } else if n < SMALL_READ_BYTES {
            self.read_size = SMALL_READ_BYTES;
        }
        if let Err(reason) = self.protocol.process(&mut self.rbuf) {
            self.closing = Some(reason);
        }
        let backlogged = self.protocol.end_batch();
        if !backlogged.is_empty() {
            self.stall = Some(Box::new(Stall::new(backlogged)));
        }
        if self.rbuf.is_empty() && n < SMALL_READ_BYTES {
            // A quiet connection gives its read buffer back.
            self.rbuf = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Drives the connection until it must end; returns why.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let mut reads = 0;
        loop {
            if let Some(reason) = self.protocol.outbound().closed() {
                // Cut off by a publisher (slow consumer): drop what is queued.
                return Poll::Ready(reason);
            }
            if self.closing.is_none() {
                self.closing = self.protocol.outbound().take_finish();
            }
            let writer_idle = match self
                .writer
                .write(cx, &mut self.io, self.protocol.outbound())
            {
                Err(reason) => return Poll::Ready(self.closing.unwrap_or(reason)),
                Ok(WriteState::Idle) => {
                    self.deadline = None;
                    if let Some(reason) = self.closing {
                        return Poll::Ready(reason);
                    }
                    true
                }
                Ok(WriteState::Blocked) => {
                    let limit = self.protocol.write_deadline();
                    let deadline = self
                        .deadline
                        .get_or_insert_with(|| Box::pin(sleep_until(Instant::now() + limit)));
                    if deadline.as_mut().poll(cx).is_ready() {
                        self.protocol.write_deadline_exceeded();
                        return Poll::Ready(CloseReason::SlowConsumerWriteDeadline);
                    }
                    // The transport wakes the task when it has room.
                    false
                }
            };
            if let Some(stall) = &mut self.stall {
                if stall.poll(cx).is_ready() {
                    self.stall = None;
                }
            }
            let mut resumed = false;
            let mut waiting = false;
            if self.closing.is_none() {
                match self.protocol.poll_resume(cx) {
                    Poll::Pending => waiting = true,
                    Poll::Ready(Err(reason)) => self.closing = Some(reason),
                    Poll::Ready(Ok(r)) => resumed = r,
                }
            }
            if resumed {
                // What arrived behind the frame that made the protocol wait.
                if let Err(reason) = self.protocol.process(&mut self.rbuf) {
                    self.closing = Some(reason);
                }
                let backlogged = self.protocol.end_batch();
                if !backlogged.is_empty() {
                    self.stall = Some(Box::new(Stall::new(backlogged)));
                }
                continue;
            }
            if self.closing.is_none() && self.stall.is_none() && !waiting {
                if reads == READS_PER_POLL {
                    // Let other tasks run; come back at once.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                match self.read(cx) {
                    Poll::Ready(Ok(())) => {
                        reads += 1;
                        continue;
                    }
                    Poll::Ready(Err(reason)) => return Poll::Ready(reason),
                    Poll::Pending => {}
                }
            }
            if self.protocol.outbound().register(cx.waker(), writer_idle) {
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl<P: Protocol, T: Transport> Future for Conn<P, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // A bug that panics must cost this connection alone: the panic is caught here and the
        // connection ends as any other would, so its subscriptions and counts are given back.
        let driven = std::panic::catch_unwind(AssertUnwindSafe(|| this.drive(cx)));
        match driven {
            Ok(Poll::Ready(reason)) => {
                // The connection's state goes first: a client that sees the close (and comes
                // back at once) must find its session already detached from this connection.
                this.protocol.end(reason);
                this.io.farewell(cx, reason);
                Poll::Ready(())
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => {
                tracing::error!(
                    panic = panic_text(&panic),
                    "a connection's task panicked; closing that connection"
                );
                let ended = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    this.protocol.end(CloseReason::ServerError)
                }));
                if ended.is_err() {
                    tracing::error!("cleaning up after the panic panicked too");
                }
                Poll::Ready(())
            }
        }
    }
}

/// The message of a caught panic, for the log.
pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Plain;
    use std::sync::Mutex;
    use tokio::io::AsyncWriteExt;

    /// A protocol that panics on the byte `!` and records how its connection ended.
    struct Fragile {
        out: Outbound,
        ended: Arc<Mutex<Option<CloseReason>>>,
    }

    impl Protocol for Fragile {
        fn outbound(&self) -> &Outbound {
            &self.out
        }
        fn process(&mut self, rbuf: &mut BytesMut) -> Result<(), CloseReason> {
            let bad = rbuf.contains(&b'!');
            rbuf.clear();
            assert!(!bad, "a bug reached by input");
            Ok(())
        }
        fn end_batch(&mut self) -> Vec<Arc<dyn Sink>> {
            Vec::new()
        }
        fn write_deadline(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn write_deadline_exceeded(&self) {}
        fn end(&mut self, reason: CloseReason) {
            *self.ended.lock().unwrap() = Some(reason);
        }
    }

    #[tokio::test]
    async fn a_panic_ends_its_connection_only_and_runs_its_cleanup() {
        let ended = Arc::new(Mutex::new(None));
        let (mut client, server) = tokio::io::duplex(1024);
        let conn = Conn::new(
            Plain(server),
            Fragile {
                out: Outbound::new(1 << 20),
                ended: ended.clone(),
            },
            Guard::new(&Arc::new(junction_core::Bus::new())),
        );
        let task = tokio::spawn(conn);
        client.write_all(b"fine").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(ended.lock().unwrap().is_none());
        client.write_all(b"!").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the connection ended")
            .expect("the panic did not escape the connection's future");
        assert_eq!(*ended.lock().unwrap(), Some(CloseReason::ServerError));
    }
}
