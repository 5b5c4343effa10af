//! The registry of connections, for monitoring: every open connection, whatever its protocol,
//! and the most recent closed ones with the reason they closed.

use crate::sync::Lock;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::message::ConnId;

/// Closed connections kept for monitoring.
pub const CLOSED_KEPT: usize = 1000;

/// What monitoring shows of one connection.
#[derive(Debug, Clone)]
pub struct ConnSnapshot {
    /// Connection id.
    pub cid: ConnId,
    /// Protocol (`nats`, later `mqtt`, `ws`).
    pub kind: &'static str,
    /// Peer address.
    pub ip: String,
    /// Peer port.
    pub port: u16,
    /// When the connection was accepted.
    pub start: SystemTime,
    /// Client name, language and version, as the client gave them.
    pub name: String,
    /// Client library language.
    pub lang: String,
    /// Client library version.
    pub version: String,
    /// The account the connection is bound to.
    pub account: String,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Bytes waiting to be written to the client.
    pub pending_bytes: usize,
    /// Messages received from the client.
    pub in_msgs: u64,
    /// Bytes received from the client.
    pub in_bytes: u64,
    /// Messages delivered to the client.
    pub out_msgs: u64,
    /// Bytes delivered to the client.
    pub out_bytes: u64,
    /// Messages for this client that were dropped (MQTT: queued QoS 1/2 messages, already
    /// acknowledged to their publishers, dropped from a full session queue).
    pub dropped_msgs: u64,
    /// When the client last sent a message.
    pub last_activity: SystemTime,
    /// Round trip of the last server PING (NATS), when one was answered.
    pub rtt: Option<std::time::Duration>,
    /// The user the connection authenticated as, when it named one.
    pub user: String,
    /// The MQTT client identifier (MQTT connections).
    pub mqtt_client: String,
    /// When it closed (closed connections only).
    pub stop: Option<SystemTime>,
    /// Why it closed (closed connections only).
    pub reason: Option<&'static str>,
}

/// A live connection: it describes itself, and the frontend that owns it can reach it
/// through the registry (keepalive sweeps, shutdown).
pub trait ConnView: Send + Sync {
    /// The connection as monitoring shows it now.
    fn snapshot(&self) -> ConnSnapshot;

    /// The protocol (`nats`, ...), so a frontend's sweep visits only its own connections.
    fn kind(&self) -> &'static str;

    /// A periodic keepalive sweep reached the connection (NATS: send PING or close as stale).
    fn tick(&self) {}

    /// The server is shutting down: flush what is queued and close.
    fn shutdown(&self) {}

    /// The server entered lame duck mode: it will close this connection soon (NATS: an INFO
    /// with `ldm`, so the client can move to another server first).
    fn lame_duck(&self) {}

    /// What the connection presented and was granted, for a configuration reload to check
    /// again (the frontends' own type; `None`: not authenticated yet, or nothing to check).
    fn login(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        None
    }

    /// A reload no longer admits the connection as it is: close it with an authorization
    /// error.
    fn revoke(&self) {}

    /// The connection's subscriptions as monitoring lists them, when they are not simply the
    /// core subscriptions carrying its id (MQTT: one per topic filter, owned by the session).
    fn subscriptions(&self) -> Option<Vec<Arc<crate::Subscription>>> {
        None
    }
}

/// Open connections and the most recently closed ones.
#[derive(Default)]
pub struct Registry {
    open: Mutex<HashMap<ConnId, Arc<dyn ConnView>>>,
    closed: Mutex<VecDeque<ConnSnapshot>>,
    /// Messages and bytes of every closed connection, by protocol: in msgs, in bytes, out
    /// msgs, out bytes (with the open connections' own, the totals by protocol).
    closed_totals: Mutex<HashMap<&'static str, [u64; 4]>>,
}

impl Registry {
    /// Registers an open connection.
    pub fn open(&self, cid: ConnId, view: Arc<dyn ConnView>) {
        self.open.locked().insert(cid, view);
    }

    /// Moves a connection to the closed list with its reason.
    pub fn close(&self, cid: ConnId, reason: &'static str) {
        let Some(view) = self.open.locked().remove(&cid) else {
            return;
        };
        let mut snap = view.snapshot();
        snap.stop = Some(SystemTime::now());
        snap.reason = Some(reason);
        {
            let mut totals = self.closed_totals.locked();
            let t = totals.entry(snap.kind).or_default();
            t[0] += snap.in_msgs;
            t[1] += snap.in_bytes;
            t[2] += snap.out_msgs;
            t[3] += snap.out_bytes;
        }
        let mut closed = self.closed.locked();
        if closed.len() == CLOSED_KEPT {
            closed.pop_front();
        }
        closed.push_back(snap);
    }

    /// A snapshot of open connection `cid`.
    pub fn snapshot(&self, cid: ConnId) -> Option<ConnSnapshot> {
        let view = self.open.locked().get(&cid).cloned()?;
        Some(view.snapshot())
    }

    /// The open connections (for sweeps and shutdown; the lock is not held while you use them).
    pub fn open_views(&self) -> Vec<Arc<dyn ConnView>> {
        self.open.locked().values().cloned().collect()
    }

    /// Messages and bytes of the connections closed so far, by protocol: in msgs, in bytes,
    /// out msgs, out bytes.
    pub fn closed_totals(&self) -> Vec<(&'static str, [u64; 4])> {
        let mut v: Vec<_> = self
            .closed_totals
            .locked()
            .iter()
            .map(|(k, t)| (*k, *t))
            .collect();
        v.sort();
        v
    }

    /// Snapshots of the open connections, by id.
    pub fn open_snapshots(&self) -> Vec<ConnSnapshot> {
        let mut snaps: Vec<_> = self.open_views().iter().map(|v| v.snapshot()).collect();
        snaps.sort_by_key(|s| s.cid);
        snaps
    }

    /// The most recently closed connections, oldest first.
    pub fn closed_snapshots(&self) -> Vec<ConnSnapshot> {
        self.closed.locked().iter().cloned().collect()
    }
}
