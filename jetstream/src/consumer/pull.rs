//! Pull requests: what waits for messages, how the waiting requests are served, and how
//! nats-server answers the ones it will not keep (`no_wait`, a requester that went away).

use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::sync::Lock;

use super::{pending_headers_of, status, Consumer, Next, Out, PUMP_LIMIT};

/// How long a pull request is served without interest in its reply (see
/// [`Consumer::drop_unheard`]; nats-server waits as long across gateways and leaf nodes, and
/// not at all on a server without either: Junction always waits).
const INTEREST_GRACE: Duration = Duration::from_millis(250);

/// How often all waiting requests are checked for interest (the front one is checked before
/// each delivery round).
const INTEREST_SWEEP: Duration = Duration::from_secs(1);

/// A pull request waiting for messages.
pub struct PullRequest {
    pub reply: Bytes,
    /// When it arrived.
    pub received: Instant,
    pub batch: i64,
    pub max_bytes: i64,
    pub expires: Option<Instant>,
    pub no_wait: bool,
    pub heartbeat: Option<Duration>,
    pub last_sent: Instant,
    /// Messages sent for this request so far.
    pub sent: i64,
}

impl Consumer {
    /// Serves the waiting pull requests, at most [`PUMP_LIMIT`] messages; returns whether it
    /// stopped at the limit.
    pub fn pump_pull(&mut self, out: &mut Vec<Out>) -> bool {
        let now = Instant::now();
        self.drop_unheard(now, false);
        if self.waiting.is_empty() {
            return false;
        }
        let stream = self.stream.clone();
        let st = stream.state.locked();
        let mut sent = 0usize;
        while let Some(req) = self.waiting.front() {
            if sent >= PUMP_LIMIT {
                return true;
            }
            let reply = req.reply.clone();
            let Next::Send(m, d) = self.next_paced(&st, now) else {
                break;
            };
            let size = m.stored_size() as i64;
            let req = self.waiting.front_mut().expect("front exists");
            if req.max_bytes > 0 && size > req.max_bytes {
                // Put it back: it goes to a request with room for it.
                if d > 1 {
                    self.redeliver.insert(m.seq);
                } else if self.lps.front().is_none_or(|s| *s != m.seq) && self.next == m.seq + 1 {
                    self.next = m.seq;
                }
                let r = self.waiting.pop_front().expect("front exists");
                if r.sent == 0 {
                    out.push(status(r.reply, 409, "Message Size Exceeds MaxBytes", &[]));
                }
                continue;
            }
            req.sent += 1;
            req.last_sent = now;
            if req.max_bytes > 0 {
                req.max_bytes -= size;
            }
            let done = req.sent >= req.batch || req.max_bytes < 0;
            let o = self.deliver(&st, &m, d, reply, now);
            out.push(o);
            sent += 1;
            if done {
                self.waiting.pop_front();
            }
        }
        // Requests that asked not to wait end here, at the end of what there is to send, as
        // nats-server ends them: 408 with what they still asked for once they got something;
        // the others wait for a message or their expiry. At max_ack_pending none ends: they
        // wait for room, as in nats-server. One that got nothing and set no expiry ends with
        // 404 here, where nats-server would keep it until its requester goes away (it can
        // only happen when what there was to send went elsewhere meanwhile).
        // (Only when one asked not to wait: looking for more costs a scan.)
        if self.waiting.iter().any(|r| r.no_wait)
            && self.may_send_more()
            && !self.has_deliverable(&st)
        {
            self.waiting.retain(|r| {
                if !r.no_wait {
                    true
                } else if r.sent > 0 {
                    let pending = pending_headers_of(r.batch - r.sent, r.max_bytes);
                    out.push(status(r.reply.clone(), 408, "Request Timeout", &pending));
                    false
                } else if r.expires.is_none() {
                    out.push(status(r.reply.clone(), 404, "No Messages", &[]));
                    false
                } else {
                    true
                }
            });
        }
        false
    }

    /// How nats-server answers a pull request that asks not to wait, before it waits: 404 when
    /// there is nothing to send and it set no expiry; 408 when what there is would not reach
    /// it past the requests already waiting (`None`: it waits like any other).
    pub fn refuses_no_wait(&self, req: &PullRequest) -> Option<(u16, &'static str)> {
        if !req.no_wait {
            return None;
        }
        let left = {
            let st = self.stream.state.locked();
            self.num_pending(&st) + self.redeliver.len() as u64
        };
        let asked = self
            .waiting
            .iter()
            .fold(0i64, |n, r| n.saturating_add(r.batch - r.sent));
        if left == 0 && req.expires.is_none() {
            Some((404, "No Messages"))
        } else if left > 0 && (left as i64) < asked {
            Some((408, "Requests Pending"))
        } else {
            None
        }
    }

    /// All waiting requests checked for interest, at most every [`INTEREST_SWEEP`].
    pub(super) fn sweep_unheard(&mut self, now: Instant) {
        if now.duration_since(self.swept_at) >= INTEREST_SWEEP {
            self.drop_unheard(now, true);
        }
    }

    /// Drops the waiting requests nobody would hear any more (their requester went away), as
    /// nats-server does before it sends to one: what it would have got goes to the next. A
    /// request younger than [`INTEREST_GRACE`] is kept all the same: interest across a leaf
    /// node link may still be on its way. Called without the stream's lock (the account's
    /// subscriptions are read here).
    fn drop_unheard(&mut self, now: Instant, all: bool) {
        let account = &self.stream.account;
        let heard = |r: &PullRequest| {
            now.duration_since(r.received) < INTEREST_GRACE || account.has_interest(&r.reply)
        };
        if all {
            self.waiting.retain(heard);
            self.swept_at = now;
        } else {
            while self.waiting.front().is_some_and(|r| !heard(r)) {
                self.waiting.pop_front();
            }
        }
    }
}
