//! The signals a running server acts on, and lame duck mode, as nats-server runs them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use junction_core::Bus;
use tokio_util::sync::CancellationToken;

/// The signals a running server acts on, listened for from the moment they are installed, so a
/// signal that comes right after "Server is ready" is not lost.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    usr1: tokio::signal::unix::Signal,
    #[cfg(unix)]
    usr2: tokio::signal::unix::Signal,
}

/// What a signal asks for.
pub(crate) enum Asked {
    Stop(&'static str),
    Reload,
    Reopen,
    LameDuck,
}

impl Signals {
    pub(crate) fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let on = |k: SignalKind, name: &str| {
                signal(k).with_context(|| format!("installing the {name} handler"))
            };
            Ok(Self {
                term: on(SignalKind::terminate(), "SIGTERM")?,
                int: on(SignalKind::interrupt(), "SIGINT")?,
                hup: on(SignalKind::hangup(), "SIGHUP")?,
                usr1: on(SignalKind::user_defined1(), "SIGUSR1")?,
                usr2: on(SignalKind::user_defined2(), "SIGUSR2")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    pub(crate) async fn next(&mut self) -> Asked {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => Asked::Stop("terminated"),
            _ = self.int.recv() => Asked::Stop("interrupt"),
            _ = self.hup.recv() => Asked::Reload,
            _ = self.usr1.recv() => Asked::Reopen,
            _ = self.usr2.recv() => Asked::LameDuck,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Asked::Stop("interrupt")
        }
    }
}

/// Lame duck mode, as nats-server runs it: stop accepting, tell NATS clients (INFO `ldm`), wait
/// the grace period, then close the connections spread over the lame duck duration (MQTT 5
/// clients get DISCONNECT 0x8B). SIGINT or SIGTERM cut it short.
pub(crate) async fn lame_duck(
    bus: &Arc<Bus>,
    listening: &CancellationToken,
    accepting: &mut Vec<tokio::task::JoinHandle<()>>,
    duration: Duration,
    grace: Duration,
    signals: &mut Signals,
) {
    tracing::info!("Entering lame duck mode, stop accepting new clients");
    listening.cancel();
    for t in accepting.drain(..) {
        let _ = t.await;
    }
    let conns = bus.conns().open_views();
    for c in &conns {
        c.lame_duck();
    }
    if conns.is_empty() {
        return;
    }
    let work = async {
        {
            tracing::info!(
                "Closing {} existing clients over {:?} after a grace period of {:?}",
                conns.len(),
                duration,
                grace
            );
        }
        tokio::time::sleep(grace).await;
        // Spread the closes over what is left of the duration.
        let spread = duration.saturating_sub(grace);
        let pause = spread / (conns.len().max(1) as u32);
        for c in &conns {
            c.shutdown();
            tokio::time::sleep(pause.min(Duration::from_secs(1))).await;
        }
    };
    tokio::select! {
        _ = work => {}
        asked = async {
            loop {
                if let Asked::Stop(why) = signals.next().await {
                    break why;
                }
            }
        } => tracing::info!("Trapped \"{asked}\" signal: leaving lame duck mode at once"),
    }
}
