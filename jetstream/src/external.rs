//! Mirrors and sources whose origin is another JetStream (`external: {api: "$JS.hub.API"}`):
//! the cluster's across a leaf node link, or another account's through its imported API.
//!
//! As nats-server copies from one, the stream keeps a push consumer on the origin: no
//! acknowledgements, flow control, heartbeats, starting after what it has copied. Each attempt
//! uses fresh subjects for its deliveries and its create response, so a consumer left over from
//! an earlier attempt delivers to nobody (and the origin removes it). A gap in the consumer's
//! sequence, a heartbeat naming another sequence, silence, or a failed create starts a new
//! consumer after the last message copied.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::sync::Lock;
use junction_core::{Account, Delivery, FlushBatch, Message, Sink, Subscription};
use serde_json::{json, Value};

use crate::config::StreamSource;
use crate::consumer::Out;
use crate::service::{Input, Shared, Task};
use crate::sources::{set_position, SourceTag};
use crate::stream::{StoredMsg, Stream};

/// The origin's heartbeat interval asked for (nats-server's sourcing asks for the same).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Without a message or heartbeat for this long, the consumer is made again; the origin
/// removes a consumer inactive this long.
const SILENCE: Duration = Duration::from_secs(10);
/// How long a create request may go unanswered, and the wait before the next attempt.
const RETRY: Duration = Duration::from_secs(5);

/// Which copy: (account, stream, the source's index name: [`iname`]).
pub(crate) type Key = (String, String, String);

/// A source's index name, as nats-server composes one: its name, its origin's API, and what
/// it takes (filter, or transforms' sources and destinations). Two sources of one stream may
/// share a name (the same stream in two domains), never an index name; an external copy's
/// position is kept under it.
pub(crate) fn iname(src: &StreamSource) -> String {
    let mut name = src.name.clone();
    if let Some(api) = api_of(src) {
        name.push(':');
        name.push_str(api.trim_end_matches('.'));
    }
    format!("{name} {}", index_rest(src))
}

/// The filter and destination parts of nats-server's index name of `src`: its transforms'
/// sources and destinations (each joined with form feeds), or its filter and `>` (`>` for
/// what is empty).
pub(crate) fn index_rest(src: &StreamSource) -> String {
    let or_all = |s: &str| {
        if s.is_empty() {
            ">".to_string()
        } else {
            s.to_string()
        }
    };
    let (from, to) = if src.subject_transforms.is_empty() {
        (or_all(&src.filter_subject), ">".to_string())
    } else {
        let f: Vec<String> = src
            .subject_transforms
            .iter()
            .map(|t| or_all(&t.src))
            .collect();
        let d: Vec<String> = src
            .subject_transforms
            .iter()
            .map(|t| or_all(&t.dest))
            .collect();
        (f.join("\u{c}"), d.join("\u{c}"))
    };
    format!("{from} {to}")
}

enum State {
    /// Waiting to (re)create the consumer at this time.
    Idle(Instant),
    /// A create request is out.
    Creating(Instant),
    /// The consumer delivers; the last consumer sequence seen, and when something came.
    Active { cseq: u64, seen: Instant },
}

/// One external mirror or source of a stream.
pub(crate) struct External {
    account: Arc<Account>,
    /// The copying stream (one deleted and made again is another, with another copy).
    stream: Arc<Stream>,
    source: StreamSource,
    is_mirror: bool,
    /// `<api>.` with the origin's API prefix.
    api: String,
    /// This attempt's subjects: where messages come, and the create's response.
    deliver: Bytes,
    inbox: Bytes,
    subs: Vec<Arc<Subscription>>,
    /// The origin's consumer of this attempt, once created.
    consumer: Option<String>,
    state: State,
    /// Messages the origin had not sent yet, as its last delivery said.
    lag: u64,
    /// Why the origin refused the last create, until one succeeds.
    error: Option<Value>,
    /// The origin's sequence after the last message copied, once one was; saved with the
    /// stream at the end of the round (`saved`: already).
    next: Option<u64>,
    saved: bool,
    /// A source's `Nats-Stream-Source` header (a mirror's copies carry none).
    tag: Option<SourceTag>,
}

impl External {
    /// `lag`, `active` (nanoseconds since the origin was last heard from; -1: not yet) and
    /// `error` for the stream's info.
    pub(crate) fn report(&self, v: &mut Value) {
        v["lag"] = json!(self.lag);
        v["active"] = match self.state {
            State::Active { seen, .. } => json!(seen.elapsed().as_nanos() as i64),
            _ => json!(-1),
        };
        if let Some(e) = &self.error {
            v["error"] = e.clone();
        }
    }
}

impl Drop for External {
    fn drop(&mut self) {
        for sub in self.subs.drain(..) {
            self.account.unsubscribe(&sub);
        }
    }
}

/// What the origin sends to an external copy's subjects.
pub(crate) struct ExternalSink {
    shared: Arc<Shared>,
    key: Arc<Key>,
}

impl Sink for ExternalSink {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        let subject = batch
            .addressed
            .clone()
            .unwrap_or_else(|| msg.subject.clone());
        self.shared.push(Input::External {
            key: self.key.clone(),
            subject,
            shown: msg.subject.clone(),
            reply: msg.reply.clone(),
            headers: msg.header_block().cloned(),
            payload: batch.kept_payload(&msg.payload),
        });
        Delivery::Queued
    }

    fn flush(&self) {}
}

/// The API prefix of a source that names one (`external.api`), with its trailing dot.
pub(crate) fn api_of(src: &StreamSource) -> Option<String> {
    let api = src.other.get("external")?.get("api")?.as_str()?;
    let api = api.trim_end_matches('.');
    (!api.is_empty()).then(|| format!("{api}."))
}

/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (or the long form
/// with domain and account hash first): (sseq, cseq, ts, pending).
fn ack_parts(reply: &[u8]) -> Option<(u64, u64, i64, u64)> {
    let rest = std::str::from_utf8(reply).ok()?.strip_prefix("$JS.ACK.")?;
    let t: Vec<&str> = rest.split('.').collect();
    let off = match t.len() {
        7 => 0,
        9.. => 2,
        _ => return None,
    };
    Some((
        t[off + 3].parse().ok()?,
        t[off + 4].parse().ok()?,
        t[off + 5].parse().ok()?,
        t[off + 6].parse().ok()?,
    ))
}

impl Task {
    /// Makes the external copies match the streams' configurations: a new one for each
    /// external mirror or source of an enabled account's stream, none for what is gone.
    pub(crate) fn set_externals(&mut self) {
        let mut wanted: Vec<(Key, External)> = Vec::new();
        for (acc, a) in &self.accounts {
            for (sname, e) in &a.streams {
                let st = e.stream.state.locked();
                let list = st
                    .config
                    .mirror
                    .iter()
                    .map(|m| (m, true))
                    .chain(st.config.sources.iter().map(|s| (s, false)));
                for (src, is_mirror) in list {
                    if let Some(api) = api_of(src) {
                        let key = (acc.clone(), sname.clone(), iname(src));
                        let x = External {
                            account: a.account.clone(),
                            stream: e.stream.clone(),
                            source: src.clone(),
                            is_mirror,
                            api,
                            deliver: Bytes::new(),
                            inbox: Bytes::new(),
                            subs: Vec::new(),
                            consumer: None,
                            state: State::Idle(Instant::now()),
                            lag: 0,
                            error: None,
                            next: None,
                            saved: true,
                            tag: (!is_mirror).then(|| SourceTag::of(src)),
                        };
                        wanted.push((key, x));
                    }
                }
            }
        }
        let keep: HashSet<&Key> = wanted.iter().map(|w| &w.0).collect();
        let gone: Vec<Key> = self
            .externals
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(x) = self.externals.remove(&key) {
                self.retire(&x);
            }
        }
        for (key, x) in wanted {
            if let Some(old) = self.externals.get(&key) {
                if old.source == x.source && old.api == x.api && Arc::ptr_eq(&old.stream, &x.stream)
                {
                    continue;
                }
                let old = self.externals.remove(&key).expect("present");
                self.retire(&old);
            }
            self.externals.insert(key.clone(), x);
            self.attempt(&key);
        }
    }

    /// Asks the origin to remove this copy's consumer (no answer awaited).
    fn retire(&mut self, x: &External) {
        if let Some(c) = &x.consumer {
            self.delete_consumer(&x.account, &x.api, &x.source.name, c);
        }
    }

    /// Asks the origin behind `api` to remove consumer `consumer` of stream `stream`.
    fn delete_consumer(&mut self, account: &Arc<Account>, api: &str, stream: &str, consumer: &str) {
        let subject = Bytes::from(format!("{api}CONSUMER.DELETE.{stream}.{consumer}"));
        self.out.push((
            account.clone(),
            Out {
                to: subject.clone(),
                subject,
                reply: None,
                headers: None,
                payload: Bytes::new(),
            },
        ));
    }

    /// Starts a new attempt: fresh subjects, and a create request for a consumer that starts
    /// after what the stream has copied from this source.
    fn attempt(&mut self, key: &Key) {
        let Some(x) = self.externals.get_mut(key) else {
            return;
        };
        let old = x.consumer.take();
        for sub in x.subs.drain(..) {
            x.account.unsubscribe(&sub);
        }
        let next = x.next.unwrap_or_else(|| {
            let st = x.stream.state.locked();
            match st.sourced.get(&key.2) {
                Some(n) => *n,
                None if x.is_mirror => st.last_seq + 1,
                None => x.source.opt_start_seq.max(1) as u64,
            }
        });
        let token = crate::random_token();
        // Another account's origin delivers under the prefix that account exports
        // (`external.deliver`); across a leaf node link, any subject crosses.
        let prefix = x
            .source
            .other
            .get("external")
            .and_then(|e| e.get("deliver"))
            .and_then(Value::as_str)
            .map(|d| d.trim_end_matches('.'))
            .filter(|d| !d.is_empty())
            .unwrap_or(if x.is_mirror { "$JS.M" } else { "$JS.S" });
        x.deliver = Bytes::from(format!("{prefix}.{token}"));
        x.inbox = Bytes::from(format!("_INBOX.{token}"));
        let sink: Arc<dyn Sink> = Arc::new(ExternalSink {
            shared: self.shared.clone(),
            key: Arc::new(key.clone()),
        });
        let origin = self.shared.origin;
        x.subs = x
            .account
            .subscribe_service(origin, [x.deliver.clone(), x.inbox.clone()], &sink);
        // As nats-server asks for its own: `direct` (allowed without acknowledgements on a
        // work queue stream, and not counted against `max_consumers`).
        let mut config = json!({
            "deliver_subject": String::from_utf8_lossy(&x.deliver),
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": next,
            "ack_policy": "none",
            "ack_wait": 22 * 3600 * 1_000_000_000i64,
            "max_deliver": 1,
            "flow_control": true,
            "idle_heartbeat": HEARTBEAT.as_nanos() as i64,
            "inactive_threshold": SILENCE.as_nanos() as i64,
            "direct": true,
            "num_replicas": 1,
            "mem_storage": true,
        });
        // Everything (`>`) needs no filter.
        let filters: Vec<String> = x
            .source
            .filters()
            .into_iter()
            .filter(|f| f != ">")
            .collect();
        match filters.len() {
            0 => {}
            1 => config["filter_subject"] = json!(filters[0]),
            _ => config["filter_subjects"] = json!(filters),
        }
        let body = json!({"stream_name": x.source.name, "config": config}).to_string();
        let subject = Bytes::from(format!("{}CONSUMER.CREATE.{}", x.api, x.source.name));
        x.state = State::Creating(Instant::now());
        let account = x.account.clone();
        let inbox = x.inbox.clone();
        let retired = old.map(|c| (x.api.clone(), x.source.name.clone(), c));
        self.out.push((
            account.clone(),
            Out {
                to: subject.clone(),
                subject,
                reply: Some(inbox),
                headers: None,
                payload: Bytes::from(body),
            },
        ));
        if let Some((api, name, c)) = retired {
            self.delete_consumer(&account, &api, &name, &c);
        }
    }

    /// Retries what failed or went silent.
    pub(crate) fn tick_externals(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .externals
            .iter()
            .filter(|(_, x)| match x.state {
                State::Idle(at) => now >= at,
                State::Creating(since) => now.duration_since(since) >= RETRY,
                State::Active { seen, .. } => now.duration_since(seen) >= SILENCE,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.attempt(&key);
        }
    }

    /// What came to an external copy's subjects.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn external_input(
        &mut self,
        key: &Key,
        subject: Bytes,
        shown: Bytes,
        reply: Option<Bytes>,
        headers: Option<Bytes>,
        payload: Bytes,
    ) {
        let Some(x) = self.externals.get_mut(key) else {
            return;
        };
        let now = Instant::now();
        if subject == x.inbox {
            let v: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            if let State::Active { .. } = x.state {
                // Deliveries came first (and named the consumer).
                return;
            }
            if !matches!(x.state, State::Creating(_)) {
                return;
            }
            match v.get("name").and_then(Value::as_str) {
                // The name goes into subjects (its removal): only a valid one is kept.
                Some(name) if v.get("error").is_none() && crate::config::valid_name(name) => {
                    x.consumer = Some(name.to_string());
                    x.state = State::Active { cseq: 0, seen: now };
                    x.error = None;
                }
                _ => {
                    x.error = v.get("error").cloned();
                    let why = v
                        .get("error")
                        .map_or_else(|| v.to_string(), Value::to_string);
                    tracing::warn!(
                        account = %key.0, stream = %key.1, source = %key.2, error = %why,
                        "JetStream: the origin of an external source refused its consumer; retrying"
                    );
                    x.state = State::Idle(now + RETRY);
                }
            }
            return;
        }
        if subject != x.deliver {
            return;
        }
        // Deliveries may come before the create's answer: they start the copy as well.
        let cseq = match x.state {
            State::Active { cseq, .. } => cseq,
            State::Creating(_) => {
                let name = reply
                    .as_deref()
                    .and_then(|r| std::str::from_utf8(r).ok())
                    .and_then(crate::consumer::AckSubject::parse)
                    .map(|a| a.consumer.to_string())
                    .filter(|n| crate::config::valid_name(n));
                let Some(name) = name else {
                    return;
                };
                x.consumer = Some(name);
                x.error = None;
                x.state = State::Active { cseq: 0, seen: now };
                0
            }
            State::Idle(_) => return,
        };
        let status = headers
            .as_deref()
            .filter(|h| h.starts_with(b"NATS/1.0 100"))
            .map(|h| h.to_vec());
        if let Some(h) = status {
            x.state = State::Active { cseq, seen: now };
            let mut answers: Vec<Bytes> = Vec::new();
            // A flow control request is answered at once: what came before it is stored.
            // Only flow control subjects are answered: a delivery subject can be published
            // to by others, and an answer must not become a request of theirs.
            answers.extend(reply);
            if let Some(stalled) = crate::headers::get(&h, "Nats-Consumer-Stalled") {
                answers.push(Bytes::from(stalled.trim().to_string()));
            }
            answers.retain(|a| {
                a.starts_with(b"$JS.FC.") && junction_core::subject::is_valid_literal_subject(a)
            });
            let last = crate::headers::get(&h, "Nats-Last-Consumer")
                .and_then(|v| v.trim().parse::<u64>().ok());
            let account = x.account.clone();
            for to in answers {
                self.out.push((
                    account.clone(),
                    Out {
                        to: to.clone(),
                        subject: to,
                        reply: None,
                        headers: None,
                        payload: Bytes::new(),
                    },
                ));
            }
            if last.is_some_and(|l| l > 0 && l != cseq) {
                self.attempt(key);
            }
            return;
        }
        let Some((sseq, c, ts, pending)) = reply.as_deref().and_then(ack_parts) else {
            return;
        };
        // Sequences past i64's range are not a stream's (every count here stays below them).
        if sseq == 0 || sseq > i64::MAX as u64 {
            return;
        }
        if cseq.checked_add(1) != Some(c) {
            // Something was lost on the way: start again after what was stored.
            self.attempt(key);
            return;
        }
        x.state = State::Active { cseq: c, seen: now };
        x.lag = pending;
        x.next = Some(sseq + 1);
        x.saved = false;
        let renamed = x.source.rename(&shown).unwrap_or(shown);
        if x.is_mirror {
            x.stream.mirror_append(&StoredMsg {
                seq: sseq,
                subject: renamed,
                headers,
                payload,
                ts,
                on_disk: None,
            });
        } else if let Some(tag) = &x.tag {
            // The copy and its position change together (see `sources::copy_from`).
            let headers = tag.header(sseq, headers.as_deref());
            let mut st = x.stream.state.locked();
            set_position(&mut st, &key.2, sseq + 1);
            let _ = x
                .stream
                .publish_locked(&mut st, &renamed, Some(&headers), payload, ts);
        }
        self.touched.touch(&key.0, &key.1);
    }

    /// Saves the positions external copies reached this round, with their streams.
    pub(crate) fn save_sourced(&mut self) {
        for (key, x) in &mut self.externals {
            let (Some(next), false) = (x.next, x.saved) else {
                continue;
            };
            x.saved = true;
            let mut st = x.stream.state.locked();
            st.sourced.insert(key.2.clone(), next);
            x.stream.save_meta(&mut st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_tell_sources_of_one_name_apart() {
        let src = |v: serde_json::Value| -> StreamSource { serde_json::from_value(v).unwrap() };
        let a = iname(&src(
            json!({"name": "S", "external": {"api": "$JS.e1.API"}}),
        ));
        let b = iname(&src(
            json!({"name": "S", "external": {"api": "$JS.e2.API."}}),
        ));
        let c = iname(&src(
            json!({"name": "S", "external": {"api": "$JS.e1.API"}, "filter_subject": "x.>"}),
        ));
        let local = iname(&src(json!({"name": "S"})));
        assert_eq!(a, "S:$JS.e1.API > >");
        assert_eq!(b, "S:$JS.e2.API > >");
        assert_eq!(c, "S:$JS.e1.API x.> >");
        assert_eq!(local, "S > >");
        let t = iname(&src(json!({"name": "S", "subject_transforms": [
            {"src": "a.*", "dest": "b.$1"}, {"src": "", "dest": ""}]})));
        assert_eq!(t, "S a.*\u{c}> b.$1\u{c}>");
    }

    #[test]
    fn acknowledgement_replies_give_their_sequences() {
        assert_eq!(
            ack_parts(b"$JS.ACK.S.C.1.42.7.1700000000000000000.3"),
            Some((42, 7, 1_700_000_000_000_000_000, 3))
        );
        assert_eq!(
            ack_parts(b"$JS.ACK.hub.HASH.S.C.1.42.7.17.3.tok"),
            Some((42, 7, 17, 3))
        );
        assert_eq!(ack_parts(b"$JS.ACK.S.C.1.x.7.17.3"), None);
        assert_eq!(ack_parts(b"$JS.ACK.S.C.1.2"), None);
        assert_eq!(ack_parts(b"_INBOX.a"), None);
    }
}
