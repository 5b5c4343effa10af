//! The accept loop every frontend shares: accept, count, spawn; sweep the frontend's
//! connections on a timer (keepalive); and at shutdown stop accepting and ask each of them to
//! flush and close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use junction_core::Bus;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a frontend plugs into [`accept_loop`].
pub(crate) struct Frontend<'a, S, A> {
    /// The bus (connection counters and registry).
    pub bus: &'a Bus,
    /// The frontend's connection kind in the registry (`nats`, `mqtt`).
    pub kind: &'static str,
    /// How often the sweep runs.
    pub sweep_every: Duration,
    /// The sweep: besides ticking each connection of this kind (keepalive).
    pub sweep: S,
    /// Turns an accepted, counted connection into its future.
    pub admit: A,
}

/// Accepts on `listener` until `shutdown`; spawns each connection on `tracker`.
pub(crate) async fn accept_loop<S, A, C>(
    listener: TcpListener,
    mut fe: Frontend<'_, S, A>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    S: FnMut(),
    A: FnMut(TcpStream, SocketAddr) -> Option<C>,
    C: Future<Output = ()> + Send + 'static,
{
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + fe.sweep_every, fe.sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                for conn in fe.bus.conns().open_views() {
                    if conn.kind() == fe.kind {
                        conn.tick();
                    }
                }
                (fe.sweep)();
                continue;
            }
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, kind = fe.kind, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Some(conn) = (fe.admit)(stream, peer) {
            let stats = fe.bus.stats();
            stats.connections.fetch_add(1, Ordering::Relaxed);
            stats.total_connections.fetch_add(1, Ordering::Relaxed);
            tracker.spawn(conn);
        }
    }
    // Stop accepting, then ask every connection to flush and close.
    drop(listener);
    for conn in fe.bus.conns().open_views() {
        if conn.kind() == fe.kind {
            conn.shutdown();
        }
    }
}
