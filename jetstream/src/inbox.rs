//! What waits for the JetStream task: the inputs the sinks push, with bounds on what clients
//! can make pile up (API requests, acknowledgements, external copies' deliveries).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use junction_core::sync::Lock;
use junction_core::{Account, Message};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::accounts::AccountLimits;
use crate::service::Shared;
use crate::stream::Stream;

/// API requests waiting for the task; more are dropped (the requester times out), as
/// nats-server 2.10 drops requests past its API queue limit.
const API_QUEUE_LIMIT: usize = 10_000;
/// Acknowledgements and flow control answers waiting for the task; more are dropped (an
/// unacknowledged message is delivered again after `ack_wait`).
const ACK_QUEUE_LIMIT: usize = 1_000_000;
/// Bytes of external mirrors' and sources' deliveries waiting for the task; more are dropped
/// (the gap in the origin's consumer sequence then starts a new consumer after what was
/// stored). The origin's flow control keeps far less than this in flight.
const EXTERNAL_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of restore chunks and snapshot answers waiting for the task; more are dropped (the
/// client's request times out).
const BACKUP_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// What waits for the task, and how many of those are API requests and acknowledgements (what
/// clients send, bounded).
#[derive(Default)]
pub(crate) struct Inbox {
    queue: VecDeque<Input>,
    api: usize,
    acks: usize,
    external_bytes: usize,
    backup_bytes: usize,
}

impl Inbox {
    /// The counter, the bound and the amount of `input`'s kind, for those that have one
    /// (a count, or bytes for an external copy's deliveries).
    fn bound(&mut self, input: &Input) -> Option<(&mut usize, usize, usize)> {
        match input {
            Input::Api { .. } => Some((&mut self.api, API_QUEUE_LIMIT, 1)),
            Input::Ack { .. } | Input::FlowControl { .. } => {
                Some((&mut self.acks, ACK_QUEUE_LIMIT, 1))
            }
            // A client sends a restore's chunks one request at a time; one that does not wait
            // for the answers (or floods a snapshot's answer subject) meets this bound.
            Input::Backup { payload, .. } => Some((
                &mut self.backup_bytes,
                BACKUP_QUEUE_BYTES,
                payload.len() + 64,
            )),
            Input::External {
                payload, headers, ..
            } => {
                let size = payload.len() + headers.as_ref().map_or(0, Bytes::len) + 64;
                Some((&mut self.external_bytes, EXTERNAL_QUEUE_BYTES, size))
            }
            _ => None,
        }
    }
}

impl Shared {
    pub(crate) fn push(&self, input: Input) {
        {
            let mut inbox = self.inbox.locked();
            if let Some((count, limit, amount)) = inbox.bound(&input) {
                if *count + amount > limit {
                    drop(inbox);
                    let dropped = self.dropped.fetch_add(1, Ordering::Relaxed);
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            dropped = dropped + 1,
                            "JetStream API queue limit reached: requests dropped"
                        );
                    }
                    return;
                }
                *count += amount;
            }
            inbox.queue.push_back(input);
        }
        self.notify.notify_one();
    }

    /// Everything waiting, for the task to handle.
    pub(crate) fn take_inbox(&self) -> VecDeque<Input> {
        let mut inbox = self.inbox.locked();
        (
            inbox.api,
            inbox.acks,
            inbox.external_bytes,
            inbox.backup_bytes,
        ) = (0, 0, 0, 0);
        std::mem::take(&mut inbox.queue)
    }

    /// Puts inputs the task did not get to back in front of what came meanwhile.
    pub(crate) fn put_back(&self, mut rest: VecDeque<Input>) {
        let mut inbox = self.inbox.locked();
        for input in &rest {
            if let Some((count, _, amount)) = inbox.bound(input) {
                *count += amount;
            }
        }
        rest.append(&mut inbox.queue);
        inbox.queue = rest;
    }
}

/// What the task is fed.
pub(crate) enum Input {
    Api {
        account: Arc<Account>,
        subject: Bytes,
        reply: Option<Bytes>,
        payload: Bytes,
        /// The connection that sent it.
        origin: junction_core::ConnId,
    },
    Ack {
        account: Arc<Account>,
        subject: Bytes,
        reply: Option<Bytes>,
        payload: Bytes,
    },
    FlowControl {
        account: Arc<Account>,
        subject: Bytes,
    },
    Appended(Arc<Stream>),
    /// A message the task publishes (a PubAck of a memory stream, a republished copy).
    Send {
        account: Arc<Account>,
        msg: Message,
    },
    /// What an external mirror's or source's origin sent: routed by `subject`, shown with
    /// `shown`.
    External {
        key: Arc<crate::external::Key>,
        subject: Bytes,
        shown: Bytes,
        reply: Option<Bytes>,
        headers: Option<Bytes>,
        payload: Bytes,
    },
    Monitor(oneshot::Sender<Value>, bool),
    /// A restore's stream, built beside the task.
    Restored(Box<crate::api::backup::Rebuilt>),
    /// A snapshot's chunk answer or a restore's chunk.
    Backup {
        account: Arc<Account>,
        subject: Bytes,
        reply: Option<Bytes>,
        payload: Bytes,
    },
    /// A new set of accounts with JetStream and their limits, and who to tell once applied.
    Accounts(
        Option<Vec<String>>,
        HashMap<String, AccountLimits>,
        oneshot::Sender<()>,
    ),
}
