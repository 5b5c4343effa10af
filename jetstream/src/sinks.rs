//! The sinks JetStream subscribes with: the service subjects (`$JS.API`, `$JS.ACK`, `$JS.FC`)
//! hand their messages to the task; a stream's capture sink stores what is published on the
//! publisher's own task and answers with a PubAck (after the commit, for a file stream).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use junction_core::sync::Lock;
use junction_core::{
    Account, Delivery, DeliveryFacts, FlushBatch, MatchCache, Message, Sink, Subscription,
};
use serde_json::{json, Value};

use crate::service::{Input, Shared};
use crate::stream::{now_ns, Stored, Stream};

/// PubAcks of one commit, sent together once the commit's callbacks ran (one routing pass and
/// one wake-up per connection per commit, not per message).
#[derive(Default)]
pub(crate) struct AckBatch(Mutex<Vec<(Arc<Account>, Message)>>);

impl junction_store::Wake for AckBatch {
    fn wake(&self) {
        let acks = std::mem::take(&mut *self.0.locked());
        let mut batch = FlushBatch::default();
        let mut cache = MatchCache::new(true);
        for (account, msg) in &acks {
            account.publish(&mut cache, msg, &mut batch);
        }
        batch.wake_all();
    }
}

/// What a `$JS.API`, `$JS.ACK` or `$JS.FC` subscription hands to the task.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Api,
    Ack,
    FlowControl,
    /// A snapshot's chunk answers and a restore's chunks ([`crate::api::backup`]).
    Backup,
}

/// A consumer's acknowledgement and flow control subscriptions, as nats-server subscribes
/// them (`$JS.ACK.<stream>.<consumer>.*.*.*.*.*`, `$JS.FC.<stream>.<consumer>.*`): interest in
/// this consumer's acknowledgements alone, which a leaf node link passes on, so that a client
/// across the link acknowledges here. They unsubscribe when dropped (with the consumer, or
/// when its account loses JetStream).
pub(crate) struct ConsumerSubs {
    account: Arc<Account>,
    subs: Vec<Arc<Subscription>>,
}

impl ConsumerSubs {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        account: &Arc<Account>,
        stream: &str,
        consumer: &str,
    ) -> ConsumerSubs {
        let mut subs = Vec::new();
        for (subject, kind) in [
            (format!("$JS.ACK.{stream}.{consumer}.*.*.*.*.*"), Kind::Ack),
            (format!("$JS.FC.{stream}.{consumer}.*"), Kind::FlowControl),
        ] {
            let sink: Arc<dyn Sink> = Arc::new(ServiceSink {
                shared: shared.clone(),
                account: account.clone(),
                kind,
            });
            subs.extend(account.subscribe_service(shared.origin, [Bytes::from(subject)], &sink));
        }
        ConsumerSubs {
            account: account.clone(),
            subs,
        }
    }
}

impl Drop for ConsumerSubs {
    fn drop(&mut self) {
        for sub in self.subs.drain(..) {
            self.account.unsubscribe(&sub);
        }
    }
}

pub(crate) struct ServiceSink {
    pub(crate) shared: Arc<Shared>,
    pub(crate) account: Arc<Account>,
    pub(crate) kind: Kind,
}

impl Sink for ServiceSink {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        // Direct gets are the streams' own subscriptions' to answer (DirectSink). One for a
        // stream that does not allow them, or no stream, goes unanswered: the requester times
        // out, as from nats-server (whose API import takes it, and no stream answers).
        if matches!(self.kind, Kind::Api) && is_direct_get(&self.shared, &msg.subject) {
            return Delivery::Queued;
        }
        // What JetStream publishes itself (a push consumer's deliveries, a republished copy,
        // an answer) is never a request to it, whatever subject a client pointed it at, unless
        // it came through a service import (as an external source's requests to another
        // account do; an import forwards a request as its own): nats-server ignores API
        // requests without a requester alike.
        if matches!(self.kind, Kind::Api) && msg.facts.origin == self.shared.origin {
            return Delivery::Dropped;
        }
        let account = self.account.clone();
        let subject = msg.subject.clone();
        let payload = batch.kept_payload(&msg.payload);
        let input = match self.kind {
            Kind::Api => Input::Api {
                account,
                subject,
                reply: msg.reply.clone(),
                payload,
                origin: msg.facts.origin,
            },
            Kind::Ack => Input::Ack {
                account,
                subject,
                reply: msg.reply.clone(),
                payload,
            },
            Kind::FlowControl => Input::FlowControl { account, subject },
            Kind::Backup => Input::Backup {
                account,
                subject,
                reply: msg.reply.clone(),
                payload,
            },
        };
        // Queued even past the inbox's bounds (then dropped): the requester times out, as from
        // nats-server, rather than hearing that nobody serves the subject.
        self.shared.push(input);
        Delivery::Queued
    }

    fn flush(&self) {}
}

/// The sink of a stream's subjects: stores what is published.
pub(crate) struct CaptureSink {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stream: Arc<Stream>,
}

impl Sink for CaptureSink {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        let payload = batch.kept_payload(&msg.payload);
        let headers = msg.header_block().cloned();
        let s = &self.stream;
        // One lock for the publication and the settings that say what follows it.
        // The publisher's open store group (an MQTT QoS 1/2 publication) goes with it, so the
        // record commits with the rest of what the publication made durable.
        // A NATS publisher opens no group: the stream opens one for the rest of the
        // publisher's read batch (the batch hands it over as it ends, or once it holds
        // `CUT_AT` PubAcks), so the messages the batch stores share one record and their
        // PubAcks one commit.
        if let Some(store) = s.durable() {
            store.open_cuttable_group_in(&mut batch.group);
        }
        let (result, no_ack, republish) = {
            let mut st = s.state.locked();
            st.group = batch.group.take();
            let result =
                s.publish_locked(&mut st, &msg.subject, headers.as_ref(), payload, now_ns());
            batch.group = st.group.take();
            // Republished under the subject it was stored with, mapped by the republish.
            let republish = match (&result, st.config.republish.clone()) {
                (Ok(Stored::New(_)), Some(rp)) => {
                    let stored = st
                        .transformed_subject(&msg.subject)
                        .unwrap_or_else(|| msg.subject.clone());
                    st.republish_to(&stored).map(|dest| (rp, dest, stored))
                }
                _ => None,
            };
            (result, st.config.no_ack, republish)
        };
        if matches!(result, Ok(Stored::New(_)))
            && s.watched.load(std::sync::atomic::Ordering::Acquire)
            && !s.signaled.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.shared.push(Input::Appended(s.clone()));
        }
        if let (Some((rp, dest, stored)), Ok(Stored::New(seq))) = (republish, &result) {
            self.republish(&rp, dest, &stored, msg, *seq, headers.as_ref());
        }
        let Some(reply) = msg.reply.clone().filter(|_| !no_ack) else {
            return Delivery::Queued;
        };
        let body = match &result {
            Ok(stored) => {
                let (seq, dup) = match stored {
                    Stored::New(seq) => (*seq, false),
                    Stored::Duplicate(seq) => (*seq, true),
                };
                // Written directly: this runs once per stored message.
                let mut v = String::with_capacity(s.name.len() + 48);
                v.push_str("{\"stream\":");
                v.push_str(&s.name_json);
                v.push_str(",\"seq\":");
                v.push_str(&seq.to_string());
                if dup {
                    v.push_str(",\"duplicate\":true");
                }
                if let Some(d) = &self.shared.opts.domain {
                    v.push_str(",\"domain\":");
                    v.push_str(&Value::from(d.as_str()).to_string());
                }
                v.push('}');
                v
            }
            Err(e) => json!({"error": e}).to_string(),
        };
        let ack = Message::new(reply, None, Bytes::from(body), self.shared.origin);
        match (&result, s.durable()) {
            (Ok(_), Some(store)) => {
                let account = s.account.clone();
                let acks = self.shared.acks.clone();
                store.then_in(
                    &mut batch.group,
                    Box::new(move |wakes| {
                        acks.0.locked().push((account, ack));
                        wakes.add(acks);
                    }),
                );
                store.cut_group_in(&mut batch.group, CUT_AT);
            }
            // Nothing to wait for (a memory stream, or a refusal): the PubAck goes at once, from
            // the publisher's own task (through the JetStream task it took a thread hop more),
            // in a batch of its own (the publisher's is in the middle of routing the
            // publication). Its writer is woken at once: deferring the wake to the end of the
            // publisher's batch measured slower (async publish 691k against 740k msgs/s), as
            // the client then hears every PubAck of a batch late.
            _ => s.account.publish_one(&ack),
        }
        Delivery::Queued
    }

    fn flush(&self) {}
}

/// Where direct gets go (before the stream's name).
const DIRECT_GET: &str = "$JS.API.DIRECT.GET.";

/// The prefixes of direct gets: `$JS.API.DIRECT.GET.`, and the domain's when there is one.
pub(crate) fn direct_prefixes(shared: &Shared) -> Vec<String> {
    let mut p = vec![DIRECT_GET.to_string()];
    if let Some(d) = &shared.opts.domain {
        p.push(format!("$JS.{d}.API.DIRECT.GET."));
    }
    p
}

/// Whether `subject` is a direct get (of any stream).
fn is_direct_get(shared: &Shared, subject: &[u8]) -> bool {
    subject.starts_with(DIRECT_GET.as_bytes())
        || shared.opts.domain.as_ref().is_some_and(|d| {
            subject
                .strip_prefix(b"$JS.")
                .and_then(|r| r.strip_prefix(d.as_bytes()))
                .is_some_and(|r| r.starts_with(b".API.DIRECT.GET."))
        })
}

/// A stream's direct gets (`$JS.API.DIRECT.GET.<stream>` and `...<stream>.<subject>`), answered
/// on the requester's task as nats-server answers them from the stream's own subscription: a
/// get is a read of the stream, and going through the JetStream task cost a hop between
/// threads each way.
pub(crate) struct DirectSink {
    /// JetStream's connection id, which its answers carry.
    pub(crate) origin: junction_core::ConnId,
    pub(crate) stream: Arc<Stream>,
    /// The subject's length up to the stream's name (`$JS.API.DIRECT.GET.` or the domain's).
    pub(crate) prefix: usize,
}

impl Sink for DirectSink {
    fn deliver(&self, _sub: &Subscription, msg: &Message, _batch: &mut FlushBatch) -> Delivery {
        let Some(reply) = &msg.reply else {
            return Delivery::Queued;
        };
        // What follows `<prefix><stream>`: nothing, or `.` and the subject asked for.
        let tail = msg
            .subject
            .get(self.prefix + self.stream.name.len()..)
            .unwrap_or_default();
        let subject = std::str::from_utf8(tail.strip_prefix(b".").unwrap_or(tail)).unwrap_or("");
        if let Some(answer) =
            crate::api::direct_reply(&self.stream, subject, reply, &msg.payload, self.origin)
        {
            self.stream.account.publish_one(&answer);
        }
        Delivery::Queued
    }

    fn flush(&self) {}
}

/// PubAcks of a NATS publisher's batch that share one commit: past this many, the batch's
/// group is handed to the store while the rest of the batch is stored, so that the commits of
/// a long batch overlap (a client keeping 256 PubAcks outstanding sends them in one read:
/// measured, the median of 5 rounds of async publish went from 253k to 270k msgs/s at 64 and
/// 280k at 32; 64 keeps blocks of 8 KiB of 128-byte messages).
const CUT_AT: usize = 64;

impl CaptureSink {
    /// Republishes stored message `seq` (stored under `stored`) to `dest`.
    fn republish(
        &self,
        rp: &crate::config::RePublish,
        dest: String,
        stored: &Bytes,
        msg: &Message,
        seq: u64,
        headers: Option<&Bytes>,
    ) {
        let st = self.stream.state.locked();
        let last = st
            .subjects
            .get(&stored[..])
            .and_then(|q| q.iter().rev().nth(1).copied())
            .unwrap_or(0);
        drop(st);
        let seq_s = seq.to_string();
        let last_s = last.to_string();
        let subject = std::str::from_utf8(stored).unwrap_or_default();
        let size = msg.payload.len().to_string();
        let mut fields = vec![
            ("Nats-Stream", self.stream.name.as_str()),
            ("Nats-Subject", subject),
            ("Nats-Sequence", seq_s.as_str()),
            ("Nats-Last-Sequence", last_s.as_str()),
        ];
        if rp.headers_only {
            fields.push(("Nats-Msg-Size", size.as_str()));
        }
        let hdrs = crate::headers::with(&fields, headers.map(|h| &h[..]));
        let out = Message {
            subject: Bytes::from(dest),
            reply: None,
            headers: Some(hdrs),
            payload: if rp.headers_only {
                Bytes::new()
            } else {
                msg.payload.clone()
            },
            facts: DeliveryFacts::from_origin(self.shared.origin),
            extra: None,
        };
        self.shared.push(Input::Send {
            account: self.stream.account.clone(),
            msg: out,
        });
    }
}
