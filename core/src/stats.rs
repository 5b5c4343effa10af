//! Server-wide counters. Publishers add to them once per read batch, not once per message.

use std::sync::atomic::{AtomicU64, Ordering};

/// Server-wide message and connection counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages received from clients.
    pub in_msgs: AtomicU64,
    /// Bytes (headers and payload) received from clients.
    pub in_bytes: AtomicU64,
    /// Messages delivered to clients.
    pub out_msgs: AtomicU64,
    /// Bytes (headers and payload) delivered to clients.
    pub out_bytes: AtomicU64,
    /// Connections cut off because they could not keep up.
    pub slow_consumers: AtomicU64,
    /// Messages dropped from full queues of absent or slow MQTT sessions.
    pub queue_dropped: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Connection attempts whose credentials were refused.
    pub auth_failures: AtomicU64,
    /// Records of the durable store that could not be restored at startup (left out).
    pub store_records_skipped: AtomicU64,
}

impl Stats {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
