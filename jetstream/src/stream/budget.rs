//! What an account, and the server, may hold in streams of one storage type.

use std::sync::Arc;

/// An account's (or the server's) bytes of one storage type (memory or file) and the limit on
/// them (-1: none). An account's budget counts into the server's.
#[derive(Debug)]
pub struct Budget {
    pub used: std::sync::atomic::AtomicU64,
    /// An account's limit may change while it runs (a new account JWT).
    limit: std::sync::atomic::AtomicI64,
    /// The server's budget of the same storage type.
    server: Option<Arc<Budget>>,
}

impl Budget {
    pub fn new(limit: i64) -> Arc<Budget> {
        Arc::new(Budget {
            used: Default::default(),
            limit: limit.into(),
            server: None,
        })
    }

    /// An account's budget that counts into `server`'s (when the server has a limit: its
    /// count is for nothing else, and a publication then pays no second atomic add).
    pub fn within(limit: i64, server: Arc<Budget>) -> Arc<Budget> {
        Arc::new(Budget {
            used: Default::default(),
            limit: limit.into(),
            server: (server.limit() >= 0).then_some(server),
        })
    }

    pub fn limit(&self) -> i64 {
        self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_limit(&self, limit: i64) {
        self.limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn add(&self, n: u64) {
        self.used.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = &self.server {
            s.add(n);
        }
    }

    pub(super) fn sub(&self, n: u64) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = &self.server {
            s.sub(n);
        }
    }

    /// Whether the server already holds more than its limit (nats-server then refuses every
    /// publication of this storage type, whichever account).
    pub(super) fn server_full(&self) -> bool {
        self.server.as_ref().is_some_and(|s| {
            let limit = s.limit();
            limit >= 0 && s.used.load(std::sync::atomic::Ordering::Relaxed) > limit as u64
        })
    }

    /// Whether `n` more bytes would pass the limit.
    pub(crate) fn would_exceed(&self, n: u64) -> bool {
        let limit = self.limit();
        limit >= 0
            && self
                .used
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_add(n)
                > limit as u64
    }
}
