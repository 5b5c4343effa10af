//! Exports and imports: the only bridges between accounts.
//!
//! - A **stream import** makes messages published in the exporting account on the export's
//!   subjects appear in the importing account, under the same subject, a prefix, or a `to`
//!   mapping. It is a subscription in the exporter whose sink publishes into the importer.
//! - A **service import** makes requests published in the importing account on its local
//!   subject reach the exporter's service subject. The request's reply subject is replaced by a
//!   `_R_.<import>.<request>` subject of the exporter, and a wildcard subscription there carries
//!   each response back to the original reply subject in the importer (once for a singleton
//!   service, until it expires for a stream of responses).

use crate::sync::Lock;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::account::Account;
use crate::delivery::{Delivery, FlushBatch, Sink};
use crate::message::{ConnId, Message};
use crate::sublist::{MatchCache, Subscription};

/// How an imported subject is renamed in the importing account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rename {
    /// Same subject.
    Same,
    /// `prefix.<subject>`.
    Prefix(String),
    /// The `to` subject: the wildcards of `from` (in order) fill the wildcards of `to`; a
    /// `to` without wildcards for a `from` with them is a prefix, as nats-server treats it.
    To { from: String, to: String },
}

impl Rename {
    /// The subject `subject` (matched by the import) becomes.
    pub fn apply(&self, subject: &Bytes) -> Bytes {
        match self {
            Rename::Same => subject.clone(),
            Rename::Prefix(p) => {
                let mut out = Vec::with_capacity(p.len() + 1 + subject.len());
                out.extend_from_slice(p.as_bytes());
                out.push(b'.');
                out.extend_from_slice(subject);
                Bytes::from(out)
            }
            Rename::To { from, to } => {
                let wild = |s: &str| s.split('.').any(|t| t == "*" || t == ">");
                if !wild(to) {
                    if wild(from) {
                        return Rename::Prefix(to.clone()).apply(subject);
                    }
                    return Bytes::from(to.clone().into_bytes());
                }
                // Collect what each wildcard of `from` matched.
                let subj = String::from_utf8_lossy(subject);
                let tokens: Vec<&str> = subj.split('.').collect();
                let mut captured: Vec<String> = Vec::new();
                for (i, f) in from.split('.').enumerate() {
                    match f {
                        "*" => captured.push(tokens.get(i).copied().unwrap_or("").to_string()),
                        ">" => {
                            captured.push(tokens.get(i..).map(|r| r.join(".")).unwrap_or_default())
                        }
                        _ => {}
                    }
                }
                let mut next = captured.into_iter();
                let out: Vec<String> = to
                    .split('.')
                    .map(|t| match t {
                        "*" | ">" => next.next().unwrap_or_default(),
                        other => other.to_string(),
                    })
                    .collect();
                Bytes::from(out.join(".").into_bytes())
            }
        }
    }
}

/// Imports one publication may pass through: a cycle of imports stops here.
const MAX_DEPTH: u8 = 8;

/// Publishes `msg` into `target`, guarding against cycles of imports. How deep the publication
/// already is travels in the publisher's batch, passed along explicitly.
/// `to`: route by this subject, showing the message with its own (a JetStream delivery; see
/// [`FlushBatch::addressed`]).
fn forward(
    target: &Account,
    cache: &Mutex<MatchCache>,
    msg: &Message,
    to: Option<&Bytes>,
    batch: &mut FlushBatch,
) -> Delivery {
    if batch.import_depth >= MAX_DEPTH {
        return Delivery::Dropped;
    }
    batch.import_depth += 1;
    let route = |cache: &mut MatchCache, batch: &mut FlushBatch| match to {
        Some(to) => target.deliver_to(cache, to, msg, batch),
        None => target.publish(cache, msg, batch),
    };
    // A cycle of imports comes back to a sink whose cache this thread holds: it routes with
    // a cache of its own rather than wait for itself.
    let n = match cache.try_lock() {
        Ok(mut cache) => route(&mut cache, batch),
        Err(_) => route(&mut MatchCache::default(), batch),
    };
    batch.import_depth -= 1;
    if n > 0 {
        Delivery::Queued
    } else {
        Delivery::Dropped
    }
}

/// The connection id internal subscriptions carry (no client owns them).
const INTERNAL: ConnId = ConnId(0);

/// A stream import's sink in the exporting account.
struct StreamSink {
    target: Arc<Account>,
    rename: Rename,
    cache: Mutex<MatchCache>,
}

impl Sink for StreamSink {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        // A JetStream delivery (to a consumer's deliver subject) goes on to the importer's
        // deliver subject, shown with the stored subject.
        if let Some(to) = batch.addressed.clone() {
            let to = self.rename.apply(&to);
            return forward(&self.target, &self.cache, msg, Some(&to), batch);
        }
        let mut m = msg.clone();
        m.subject = self.rename.apply(&msg.subject);
        forward(&self.target, &self.cache, &m, None, batch)
    }

    fn flush(&self) {}
}

/// Makes messages on `subject` in `exporter` appear in `importer`, renamed by `rename`.
pub fn stream_import(
    exporter: &Arc<Account>,
    subject: &str,
    importer: &Arc<Account>,
    rename: Rename,
) -> Result<(), crate::Error> {
    let sink: Arc<dyn Sink> = Arc::new(StreamSink {
        target: importer.clone(),
        rename,
        cache: Mutex::new(MatchCache::default()),
    });
    internal(exporter, Bytes::copy_from_slice(subject.as_bytes()), sink)
}

/// Removes every import from every account (a configuration reload then wires the new ones);
/// returns how many subscriptions went. Requests in flight through a service import get no
/// response.
pub fn remove_all(bus: &crate::Bus) -> usize {
    let mut removed = 0;
    for account in bus.accounts() {
        for sub in account.sublist().all() {
            if sub.conn == INTERNAL && account.unsubscribe(&sub) {
                removed += 1;
            }
        }
    }
    removed
}

/// Subscribes a server-internal sink (no client owns it) in `account`.
fn internal(account: &Account, subject: Bytes, sink: Arc<dyn Sink>) -> Result<(), crate::Error> {
    account.subscribe(Arc::new(Subscription::new(
        INTERNAL,
        subject,
        None,
        Bytes::new(),
        false,
        sink,
    )))
}

/// How many responses a service sends to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responses {
    /// One (the default).
    Singleton,
    /// Any number, until the request's entry expires.
    Stream,
}

/// One open request of a service import: where the response goes in the importer.
struct Pending {
    reply: Bytes,
    at: Instant,
    /// The request's number, its place in [`Requests::order`].
    n: u64,
}

/// The open requests of one service import, by the exporter-side reply subject, with the
/// oldest forgotten first once there are [`MAX_REQUESTS`] (never a scan per request).
#[derive(Default)]
struct Requests {
    open: HashMap<Bytes, Pending>,
    order: std::collections::BTreeMap<u64, Bytes>,
}

/// Open requests an import remembers.
const MAX_REQUESTS: usize = 10_000;

impl Requests {
    fn insert(&mut self, mapped: Bytes, reply: Bytes, n: u64) {
        let now = Instant::now();
        while self.open.len() >= MAX_REQUESTS {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            self.open.remove(&old);
        }
        // Expired ones at the old end go too, a few at a time.
        for _ in 0..2 {
            match self.order.first_key_value() {
                Some((_, k))
                    if self
                        .open
                        .get(k)
                        .is_none_or(|p| now.duration_since(p.at) >= RESPONSE_TTL) =>
                {
                    let (_, k) = self.order.pop_first().expect("first exists");
                    self.open.remove(&k);
                }
                _ => break,
            }
        }
        self.order.insert(n, mapped.clone());
        self.open.insert(mapped, Pending { reply, at: now, n });
    }

    fn remove(&mut self, mapped: &[u8]) -> Option<Pending> {
        let p = self.open.remove(mapped)?;
        self.order.remove(&p.n);
        Some(p)
    }
}

/// How long a request waits for responses before its entry is dropped.
const RESPONSE_TTL: Duration = Duration::from_secs(120);

struct ServiceSink {
    exporter: Arc<Account>,
    /// The importing account's name, for the `Nats-Request-Info` header.
    importer: String,
    /// Mixed into each request's token.
    seed: u64,
    /// Keys the hash that makes request tokens (random, per import).
    keys: std::collections::hash_map::RandomState,
    /// Local (importer) subject to the exporter's service subject.
    rename: Rename,
    /// `_R_.<token>.` for this import.
    prefix: String,
    next: AtomicU64,
    pending: Arc<Mutex<Requests>>,
    cache: Mutex<MatchCache>,
}

/// Six base62 characters from `n`.
fn token6(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..6)
        .map(|_| {
            let c = DIGITS[(n % 62) as usize] as char;
            n /= 62;
            c
        })
        .collect()
}

/// A header block with `Nats-Request-Info` added (as nats-server tells a service which account
/// a request came from).
fn with_request_info(headers: Option<&Bytes>, account: &str) -> Bytes {
    let line = format!(
        "Nats-Request-Info: {{\"acc\":{},\"rtt\":0}}\r\n",
        json_str(account)
    );
    let mut out = Vec::new();
    match headers {
        Some(h) if h.ends_with(b"\r\n\r\n") => {
            out.extend_from_slice(&h[..h.len() - 2]);
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        _ => {
            out.extend_from_slice(b"NATS/1.0\r\n");
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    Bytes::from(out)
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
fn base62(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

impl Sink for ServiceSink {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        // A JetStream delivery is routed on by the subject it was addressed to, keeping its
        // own subject, and its acknowledgement reply as it is (as nats-server passes one).
        let addressed = batch.addressed.clone();
        let to = self
            .rename
            .apply(addressed.as_ref().unwrap_or(&msg.subject));
        let mut m = msg.clone();
        if addressed.is_none() {
            m.subject = to.clone();
        }
        m.headers = Some(with_request_info(msg.header_block(), &self.importer));
        m.extra = None;
        // In the exporter the request comes from the import, not from a connection there.
        m.facts.origin = INTERNAL;
        let js_ack = |r: &Bytes| addressed.is_some() && r.starts_with(b"$JS.ACK.");
        if let Some(reply) = msg.reply.as_ref().filter(|r| !js_ack(r)) {
            // An unguessable per-request token: a keyed hash of a counter, so the tokens seen
            // so far tell nothing of the next.
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let z = self.keys.hash_one((self.seed, n));
            let mapped = Bytes::from(format!("{}{}", self.prefix, token6(z)).into_bytes());
            self.pending
                .locked()
                .insert(mapped.clone(), reply.clone(), n);
            m.reply = Some(mapped);
        }
        forward(
            &self.exporter,
            &self.cache,
            &m,
            addressed.map(|_| &to),
            batch,
        )
    }

    fn flush(&self) {}
}

/// Carries responses published in the exporter on `_R_.<token>.>` back to the importer.
struct ResponseSink {
    importer: Arc<Account>,
    pending: Arc<Mutex<Requests>>,
    responses: Responses,
    cache: Mutex<MatchCache>,
}

impl Sink for ResponseSink {
    fn deliver(&self, _sub: &Subscription, msg: &Message, batch: &mut FlushBatch) -> Delivery {
        // A JetStream delivery to a pull request's reply subject is routed by that subject
        // and keeps its own subject and acknowledgement reply, as nats-server passes them.
        let addressed = batch.addressed.clone();
        let key = addressed.as_ref().unwrap_or(&msg.subject);
        let reply = {
            let mut pending = self.pending.locked();
            match self.responses {
                Responses::Singleton => pending.remove(key).map(|p| p.reply),
                Responses::Stream => match pending.open.get(key) {
                    Some(p) if p.at.elapsed() < RESPONSE_TTL => Some(p.reply.clone()),
                    Some(_) => {
                        pending.remove(key);
                        None
                    }
                    None => None,
                },
            }
        };
        let Some(reply) = reply else {
            return Delivery::Dropped;
        };
        if addressed.is_some() {
            return forward(&self.importer, &self.cache, msg, Some(&reply), batch);
        }
        let mut m = msg.clone();
        m.subject = reply;
        m.reply = None;
        forward(&self.importer, &self.cache, &m, None, batch)
    }

    fn flush(&self) {}
}

/// Makes requests on `local` in `importer` reach `service` in `exporter`, and routes the
/// responses back.
pub fn service_import(
    exporter: &Arc<Account>,
    service: &str,
    importer: &Arc<Account>,
    local: &str,
    responses: Responses,
    token: &str,
    seed: u64,
) -> Result<(), crate::Error> {
    let pending = Arc::new(Mutex::new(Requests::default()));
    let prefix = format!("_R_.{token}.");
    let sink: Arc<dyn Sink> = Arc::new(ServiceSink {
        exporter: exporter.clone(),
        importer: importer.name().to_string(),
        seed,
        keys: std::collections::hash_map::RandomState::new(),
        rename: Rename::To {
            from: local.to_string(),
            to: service.to_string(),
        },
        prefix: prefix.clone(),
        next: AtomicU64::new(1),
        pending: pending.clone(),
        cache: Mutex::new(MatchCache::default()),
    });
    internal(importer, Bytes::copy_from_slice(local.as_bytes()), sink)?;
    let back: Arc<dyn Sink> = Arc::new(ResponseSink {
        importer: importer.clone(),
        pending,
        responses,
        cache: Mutex::new(MatchCache::default()),
    });
    internal(
        exporter,
        Bytes::from(format!("{prefix}>").into_bytes()),
        back,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames() {
        assert_eq!(&Rename::Same.apply(&Bytes::from_static(b"a.b"))[..], b"a.b");
        assert_eq!(
            &Rename::Prefix("p".into()).apply(&Bytes::from_static(b"a.b"))[..],
            b"p.a.b"
        );
        let to = |from: &str, to: &str| Rename::To {
            from: from.into(),
            to: to.into(),
        };
        assert_eq!(
            &to("a.x", "b.y").apply(&Bytes::from_static(b"a.x"))[..],
            b"b.y"
        );
        assert_eq!(
            &to("a.>", "from_a").apply(&Bytes::from_static(b"a.e.x"))[..],
            b"from_a.a.e.x"
        );
        assert_eq!(
            &to("svc.a.>", "a.svc.>").apply(&Bytes::from_static(b"svc.a.ping"))[..],
            b"a.svc.ping"
        );
        assert_eq!(
            &to("x.*.y", "z.*").apply(&Bytes::from_static(b"x.1.y"))[..],
            b"z.1"
        );
    }

    #[test]
    fn request_info_joins_existing_headers() {
        let h = with_request_info(None, "B");
        assert_eq!(
            &h[..],
            b"NATS/1.0\r\nNats-Request-Info: {\"acc\":\"B\",\"rtt\":0}\r\n\r\n"
        );
        let h = with_request_info(Some(&Bytes::from_static(b"NATS/1.0\r\nA: 1\r\n\r\n")), "B");
        assert_eq!(
            &h[..],
            b"NATS/1.0\r\nA: 1\r\nNats-Request-Info: {\"acc\":\"B\",\"rtt\":0}\r\n\r\n"
        );
        assert_eq!(token6(0).len(), 6);
    }

    #[test]
    fn tokens_are_base62() {
        assert_eq!(base62(0), "0");
        assert_eq!(base62(61), "z");
        assert_eq!(base62(62), "10");
    }
}
