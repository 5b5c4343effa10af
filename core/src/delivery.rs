//! Delivery: how a publication reaches the matching subscriptions.
//!
//! The publisher's own task routes each message synchronously: every matching subscription's
//! [`Sink`] encodes the message for its protocol into its connection's outbound buffer, without
//! awaiting. A sink whose buffer went from empty to non-empty registers itself in the
//! publisher's [`FlushBatch`]; the publisher wakes each touched writer once, after its whole read
//! batch, so many messages share one wake-up and one flush.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::message::Message;
use crate::subject;
use crate::sublist::{MatchResult, Subscription};

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The message was queued for the subscriber.
    Queued,
    /// The subscriber's connection is gone or was cut off (slow consumer); nothing was queued.
    Dropped,
}

/// The receiving end of a subscription: encodes messages for one connection's protocol.
pub trait Sink: Send + Sync {
    /// Encodes `msg` for `sub` into the connection's outbound buffer, without awaiting. When the
    /// buffer was empty before, the sink adds itself (`sub.sink`) to `batch`, so that its writer
    /// is woken once, at the end of the batch.
    fn deliver(&self, sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery;

    /// Wakes the connection's writer. Called at most once per publisher read batch.
    fn flush(&self);

    /// Told when the core removed `sub` because it reached its message limit.
    fn auto_unsubscribed(&self, _sub: &Subscription) {}

    /// Ready once the connection's backlog has drained below its low watermark; registers the
    /// waker otherwise. Publishers that overran a subscriber that is still draining wait on this
    /// briefly (see [`FlushBatch::backlog`]).
    fn poll_drained(&self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    /// Told when a publisher gave up waiting for this backlog to drain: the connection is not
    /// draining, so publishers stop waiting for it until its writer makes progress again.
    fn stall_timed_out(&self) {}
}

/// What one publisher's read batch touched: writers to wake, subscriptions that hit their limit,
/// and counters to add to the server's statistics once.
#[derive(Default)]
pub struct FlushBatch {
    touched: Vec<Arc<dyn Sink>>,
    expired: Vec<Arc<Subscription>>,
    backlogged: Vec<Arc<dyn Sink>>,
    /// Messages delivered in this batch.
    pub out_msgs: u64,
    /// Bytes (headers and payload) delivered in this batch.
    pub out_bytes: u64,
    /// How many imports deep the publication being routed is (a cycle of imports stops at a
    /// fixed depth).
    pub import_depth: u8,
    /// A subscriber refused the publication for lack of room (MQTT `queue_full: refuse`): a
    /// publisher that can say so tells its client (MQTT 5: 0x97 Quota exceeded).
    pub refused: bool,
    /// What the publisher's acknowledgement of the publication being routed waits for, when it
    /// may go before the store's commit (see [`AckWait`]).
    pub ack_wait: Option<Arc<dyn AckWait>>,
    /// Copies counted into `ack_wait` while routing the current publication.
    pub early_copies: usize,
    /// The current publication's payload copied out of its publisher's read buffer, by the
    /// first sink that keeps the message past the batch (see [`FlushBatch::kept_payload`]).
    kept: Option<Kept>,
    /// Set while routing a message that came over a leaf node link: the queue groups the far
    /// side chose this server for (the other groups get nothing).
    pub routed_queues: Option<Vec<Bytes>>,
    /// While a leaf node link's sink is handed a publication: the queue groups of the far side
    /// it carries the message for (it is handed each publication once, whatever matched).
    pub link_queues: Vec<Bytes>,
    /// Remote subscriptions a publication reached, gathered to hand each link one copy.
    link_picks: Vec<(Arc<Subscription>, Option<Bytes>)>,
    /// What the publication being routed makes durable, collected to commit in one piece (the
    /// durable store's open group; core carries it without knowing its type). Dropping it
    /// hands it to the store: a publisher that opened none has it closed by
    /// [`FlushBatch::wake_all`] (a stream's capture sink opens one for a whole read batch).
    pub group: Option<Box<dyn std::any::Any + Send>>,
    /// While a message routed by one subject and shown with another (a JetStream delivery:
    /// see `Account::deliver_to`) is handed to sinks: the subject it was routed by. A sink
    /// that carries it on (an import) routes by this, as nats-server routes JetStream
    /// deliveries through imports.
    pub addressed: Option<Bytes>,
}

/// A payload copy and the slice it was copied from (address and length: while the message
/// being routed holds the slice, no other payload can have both).
struct Kept {
    from: *const u8,
    len: usize,
    copy: Bytes,
}

// SAFETY: `from` is only compared, never read through.
unsafe impl Send for Kept {}
unsafe impl Sync for Kept {}

/// What a publisher's acknowledgement waits for, lent to the sinks a publication reaches (an
/// argument, not a thread-local). A sink that stored a copy for an online subscriber and sent
/// it at once counts it in ([`AckWait::copy_sent`]) and reports its subscriber's
/// acknowledgement ([`AckWait::copy_acked`]): what a subscriber acknowledged needs no disk to
/// survive a crash, so the publisher may hear its acknowledgement before the commit.
pub trait AckWait: Send + Sync {
    /// One more copy sent to a subscriber and not acknowledged yet.
    fn copy_sent(&self);
    /// One of those copies was acknowledged by its subscriber.
    fn copy_acked(&self);
}

impl FlushBatch {
    /// The payload of the publication being routed, in memory of its own: a sink that keeps a
    /// message for a while (a queue) keeps this instead of a slice of the publisher's read
    /// buffer, which would keep the whole buffer alive. Copied once per publication, however
    /// many sinks keep it.
    pub fn kept_payload(&mut self, payload: &Bytes) -> Bytes {
        match &self.kept {
            Some(k) if k.from == payload.as_ptr() && k.len == payload.len() => k.copy.clone(),
            _ => {
                let copy = Bytes::copy_from_slice(payload);
                self.kept = Some(Kept {
                    from: payload.as_ptr(),
                    len: payload.len(),
                    copy: copy.clone(),
                });
                copy
            }
        }
    }

    /// Registers a sink whose writer is woken at the end of the batch.
    pub fn touch(&mut self, writer: Arc<dyn Sink>) {
        self.touched.push(writer);
    }

    /// Whether any writer waits to be woken.
    pub fn has_touched(&self) -> bool {
        !self.touched.is_empty()
    }

    /// Ends the batch: hands its open store group over (what waits for its commit, PubAcks,
    /// follows it), then wakes every touched writer once.
    pub fn wake_all(&mut self) {
        self.group = None;
        for w in self.touched.drain(..) {
            w.flush();
        }
    }

    /// Registers a sink whose backlog passed its high watermark while it is still draining: the
    /// publisher should pause briefly until it drains (bounded, never for a stuck subscriber).
    pub fn backlog(&mut self, sink: &Arc<dyn Sink>) {
        if !self.backlogged.iter().any(|s| Arc::ptr_eq(s, sink)) {
            self.backlogged.push(sink.clone());
        }
    }

    /// Takes the sinks that reported a backlog during the batch.
    pub fn take_backlogged(&mut self) -> Vec<Arc<dyn Sink>> {
        std::mem::take(&mut self.backlogged)
    }

    /// Whether any sink reported a backlog during the batch.
    pub fn has_backlogged(&self) -> bool {
        !self.backlogged.is_empty()
    }

    /// Subscriptions that reached their limit during the batch (to remove from the index).
    pub fn take_expired(&mut self) -> Vec<Arc<Subscription>> {
        std::mem::take(&mut self.expired)
    }

    /// Whether any subscription reached its limit during the batch.
    pub fn has_expired(&self) -> bool {
        !self.expired.is_empty()
    }
}

fn deliver_one(sub: &Arc<Subscription>, msg: &Message, batch: &mut FlushBatch) -> bool {
    if sub.no_local && sub.conn == msg.facts.origin {
        return false;
    }
    if subject::is_bridge(&msg.subject) && !subject::is_bridge(&sub.subject) {
        // A wildcard reaching into the bridge's reserved space gets nothing from it.
        return false;
    }
    let Some(last) = sub.claim() else {
        return false;
    };
    if last {
        batch.expired.push(sub.clone());
    }
    let queued = sub.sink.deliver(sub, msg, batch) == Delivery::Queued;
    if queued {
        batch.out_msgs += 1;
        batch.out_bytes += msg.size() as u64;
    }
    queued
}

/// Delivers `msg` to every plain subscription in `result` and to one member of each queue group.
/// Returns how many deliveries were queued.
pub fn deliver(result: &MatchResult, msg: &Message, batch: &mut FlushBatch) -> usize {
    // A copy kept for an earlier publication is not this one's (its slice may have been freed
    // and its address reused).
    batch.kept = None;
    let mut n = 0;
    let mut picks = std::mem::take(&mut batch.link_picks);
    for sub in &result.psubs {
        if sub.remote {
            picks.push((sub.clone(), None));
        } else {
            n += usize::from(deliver_one(sub, msg, batch));
        }
    }
    let routed = batch.routed_queues.take();
    for group in &result.qsubs {
        if let Some(names) = &routed {
            if !names.contains(&group.name) {
                continue;
            }
        }
        let len = group.members.len();
        let start = group.next_start();
        // Local members first; another server's only when no local one took it (and never
        // the server a message came from: it chose this one).
        let mut done = false;
        for i in 0..len {
            let m = &group.members[(start + i) % len];
            if !m.remote && deliver_one(m, msg, batch) {
                n += 1;
                done = true;
                break;
            }
        }
        if !done {
            // Not back to the link a message came from (its own proxies are `no_local`).
            if let Some(m) = (0..len)
                .map(|i| &group.members[(start + i) % len])
                .find(|m| m.remote && !(m.no_local && m.conn == msg.facts.origin))
            {
                picks.push((m.clone(), Some(group.name.clone())));
            }
        }
    }
    batch.routed_queues = routed;
    // Each link gets one copy, naming the queue groups it carries it for.
    while let Some((sub, queue)) = picks.pop() {
        batch.link_queues.clear();
        batch.link_queues.extend(queue);
        let mut i = 0;
        while i < picks.len() {
            if std::ptr::addr_eq(Arc::as_ptr(&picks[i].0.sink), Arc::as_ptr(&sub.sink)) {
                let (_, q) = picks.swap_remove(i);
                batch.link_queues.extend(q);
            } else {
                i += 1;
            }
        }
        n += usize::from(deliver_one(&sub, msg, batch));
    }
    batch.link_queues.clear();
    batch.link_picks = picks;
    n
}
