//! What every frontend shares around its connections: the accept loop (accept, count, spawn),
//! the keepalive sweep (one timer per frontend, not one per connection), and the shutdown that
//! asks every open connection to flush and close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use junction_core::Bus;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A connection's future: a plain one inline, a TLS one (whose handshake and session state are
/// large) boxed, so that plain connections do not pay for the size of TLS ones.
pub(crate) enum Served<A, B> {
    Plain(A),
    Secure(std::pin::Pin<Box<B>>),
}

impl<A, B> Future for Served<A, B>
where
    A: Future<Output = ()> + Unpin,
    B: Future<Output = ()>,
{
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match self.get_mut() {
            Served::Plain(a) => std::pin::Pin::new(a).poll(cx),
            Served::Secure(b) => b.as_mut().poll(cx),
        }
    }
}

/// Counts one connection in the server's open connections (and, when it [`Guard::also`]
/// joined one, in a frontend's own count) for as long as it lives: the count is given back
/// when the guard drops, whichever way the connection ends (refused, a failed handshake, a
/// close, a panic).
pub(crate) struct Guard {
    bus: Arc<Bus>,
    own: Option<Arc<AtomicUsize>>,
}

impl Guard {
    /// Counts a connection just accepted.
    pub(crate) fn new(bus: &Arc<Bus>) -> Self {
        let stats = bus.stats();
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.total_connections.fetch_add(1, Ordering::Relaxed);
        Guard {
            bus: bus.clone(),
            own: None,
        }
    }

    /// Counts the connection in `count` too.
    pub(crate) fn also(mut self, count: &Count) -> Self {
        count.0.fetch_add(1, Ordering::Relaxed);
        self.own = Some(count.0.clone());
        self
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.bus.stats().connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(own) = &self.own {
            own.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A frontend's own count of open connections (see [`Guard::also`]).
#[derive(Default)]
pub(crate) struct Count(Arc<AtomicUsize>);

impl Count {
    /// Connections counted now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Accepts on `listener` until `shutdown`; `admit` turns each accepted connection, with the
/// guard that counts it, into its future (or refuses it and returns `None`), which is spawned
/// on `tracker`.
pub(crate) async fn accept_loop<A, C>(
    listener: TcpListener,
    bus: &Arc<Bus>,
    kind: &'static str,
    mut admit: A,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    A: FnMut(TcpStream, SocketAddr, Guard) -> Option<C>,
    C: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, kind, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6 addresses: show them
        // as the IPv4 addresses they are.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if let Some(conn) = admit(stream, peer, Guard::new(bus)) {
            tracker.spawn(conn);
        }
    }
}

/// Every `every` until `shutdown`: ticks each open connection of `kind` (keepalive), then runs
/// the frontend's own `extra` sweep. One per frontend, whatever listeners it has (TCP, WebSocket).
pub(crate) async fn sweep_loop<S: FnMut(), E: Fn() -> Duration>(
    bus: &Bus,
    kind: &'static str,
    every: E,
    mut extra: S,
    shutdown: CancellationToken,
) {
    loop {
        // Asked each time: a configuration reload may change it.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every()) => {}
        }
        // A panic in one sweep must not end the sweeps for good (nothing would time out).
        let swept = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for conn in bus.conns().open_views() {
                if conn.kind() == kind {
                    conn.tick();
                }
            }
            extra();
        }));
        if let Err(panic) = swept {
            tracing::error!(
                kind,
                panic = crate::driver::panic_text(&panic),
                "a sweep panicked"
            );
        }
    }
}

/// Asks every open connection, of every protocol, to flush what is queued and close. Called once
/// the listeners stopped accepting.
pub fn close_all(bus: &Bus) {
    for conn in bus.conns().open_views() {
        conn.shutdown();
    }
}
