//! What every connection reports to monitoring, whatever its protocol, and the per-batch
//! counting shared by the frontends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use junction_core::{ConnId, ConnSnapshot, FlushBatch, Stats};

use crate::outbound::Outbound;

/// A connection's address, start time and inbound counters.
pub(crate) struct ConnStats {
    pub(crate) peer: SocketAddr,
    start: SystemTime,
    in_msgs: AtomicU64,
    in_bytes: AtomicU64,
    /// When the client last sent a message (ns since the Unix epoch; 0: never).
    last_activity_ns: AtomicU64,
}

/// Messages and bytes a connection's task received in the current read batch, added to the
/// connection's and the server's counters once per batch.
#[derive(Default)]
pub(crate) struct BatchIn {
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
}

impl ConnStats {
    pub(crate) fn new(peer: SocketAddr) -> Self {
        Self {
            peer,
            start: SystemTime::now(),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            last_activity_ns: AtomicU64::new(0),
        }
    }

    /// Adds a read batch's counters (in, and the deliveries it made) to this connection's and
    /// the server's.
    pub(crate) fn end_batch(&self, server: &Stats, received: &mut BatchIn, batch: &mut FlushBatch) {
        let BatchIn { msgs, bytes } = std::mem::take(received);
        if msgs > 0 {
            self.in_msgs.fetch_add(msgs, Ordering::Relaxed);
            self.in_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.last_activity_ns
                .store(unix_ns(SystemTime::now()), Ordering::Relaxed);
        }
        Stats::add(&server.in_msgs, msgs);
        Stats::add(&server.in_bytes, bytes);
        Stats::add(&server.out_msgs, std::mem::take(&mut batch.out_msgs));
        Stats::add(&server.out_bytes, std::mem::take(&mut batch.out_bytes));
    }

    /// The protocol-independent part of a monitoring snapshot; the frontend fills in the rest.
    pub(crate) fn snapshot(&self, cid: ConnId, kind: &'static str, out: &Outbound) -> ConnSnapshot {
        let (out_msgs, out_bytes) = out.delivered();
        ConnSnapshot {
            cid,
            kind,
            ip: self.peer.ip().to_string(),
            port: self.peer.port(),
            start: self.start,
            name: String::new(),
            lang: String::new(),
            version: String::new(),
            account: String::new(),
            subscriptions: 0,
            pending_bytes: out.pending(),
            in_msgs: self.in_msgs.load(Ordering::Relaxed),
            in_bytes: self.in_bytes.load(Ordering::Relaxed),
            out_msgs,
            out_bytes,
            dropped_msgs: 0,
            last_activity: match self.last_activity_ns.load(Ordering::Relaxed) {
                0 => self.start,
                ns => SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(ns),
            },
            rtt: None,
            user: String::new(),
            mqtt_client: String::new(),
            stop: None,
            reason: None,
        }
    }
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
