//! What a user may publish and subscribe to, with nats-server's semantics:
//! - no allow list: everything is allowed; an allow list: the subject must match one entry;
//! - a deny entry always wins;
//! - a subscription entry may name a queue group (`"orders.* workers"`): it then allows (or
//!   denies) only subscriptions in a matching queue group, while an entry without one covers
//!   every queue;
//! - a wildcard subscription that overlaps a narrower deny is accepted, and the messages the deny
//!   covers are not delivered on it;
//! - `allow_responses` lets a user publish to the reply subject of a request delivered to it.
//!
//! [`Checker`] is what a connection holds: the permissions plus a cache of decisions, so each
//! subject is decided once and the hot path is one hash lookup.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::subject;

/// One list entry: a subject pattern and, for subscriptions, an optional queue pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub subject: String,
    pub queue: Option<String>,
}

impl Entry {
    /// Parses `"subject"` or `"subject queue"`.
    pub fn parse(text: &str) -> Result<Entry, String> {
        let mut parts = text.split_whitespace();
        let subject = parts.next().unwrap_or("").to_string();
        let queue = parts.next().map(str::to_string);
        if parts.next().is_some() || !subject::valid_pattern(&subject) {
            return Err(format!("invalid permission subject {text:?}"));
        }
        Ok(Entry { subject, queue })
    }
}

/// Allow and deny lists for one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `None`: everything not denied is allowed.
    pub allow: Option<Vec<Entry>>,
    pub deny: Vec<Entry>,
}

impl Rules {
    fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }
}

/// How replies to requests may be published (`allow_responses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responses {
    /// Replies allowed per request (0: unlimited).
    pub max: u32,
    /// How long after the request they are allowed.
    pub expires: Duration,
}

impl Default for Responses {
    fn default() -> Self {
        Responses {
            max: 1,
            expires: Duration::from_secs(120),
        }
    }
}

/// A user's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Rules,
    pub subscribe: Rules,
    pub responses: Option<Responses>,
}

impl Permissions {
    /// Whether a publication to `subject` is allowed (replies aside).
    pub fn may_publish(&self, subject: &str) -> bool {
        let r = &self.publish;
        let allowed = match &r.allow {
            Some(list) => list.iter().any(|e| subject::matches(&e.subject, subject)),
            // allow_responses without a publish allow list means: nothing but replies.
            None => self.responses.is_none(),
        };
        allowed && !r.deny.iter().any(|e| subject::matches(&e.subject, subject))
    }

    /// Whether a subscription to `subject` (in `queue`, if any) is allowed.
    pub fn may_subscribe(&self, subject: &str, queue: Option<&str>) -> bool {
        let queue_ok = |e: &Entry| match (&e.queue, queue) {
            (None, _) => true,
            (Some(p), Some(q)) => subject::matches(p, q),
            (Some(_), None) => false,
        };
        let r = &self.subscribe;
        let allowed = match &r.allow {
            Some(list) => list.iter().any(|e| {
                (subject::matches(&e.subject, subject) || subject::covers(&e.subject, subject))
                    && queue_ok(e)
            }),
            None => true,
        };
        allowed
            && !r
                .deny
                .iter()
                .any(|e| subject::matches(&e.subject, subject) && queue_ok(e))
    }

    /// Whether messages on `subject` must not be delivered to this user (a deny it subscribed
    /// around with a wildcard).
    pub fn delivery_denied(&self, subject: &str) -> bool {
        self.subscribe
            .deny
            .iter()
            .any(|e| e.queue.is_none() && subject::matches(&e.subject, subject))
    }

    /// Whether every publish and subscription is allowed.
    pub fn is_open(&self) -> bool {
        self.publish.is_open() && self.subscribe.is_open() && self.responses.is_none()
    }
}

/// Decided subjects kept per connection before the cache starts over.
const CACHE_MAX: usize = 4096;

/// A connection's permissions with its decision cache and its open reply permissions.
#[derive(Debug)]
pub struct Checker {
    perms: Arc<Permissions>,
    /// The last subject published to and its decision (a stream on one subject decides once
    /// and then compares bytes).
    last: Option<(Box<str>, bool)>,
    publish: HashMap<Box<str>, bool>,
    delivery: HashMap<Box<str>, bool>,
    /// Reply subjects this connection may publish to (allow_responses): uses left, deadline.
    replies: HashMap<Box<str>, (u32, Instant)>,
    /// When expired replies were last swept out.
    swept: Option<Instant>,
}

impl Checker {
    pub fn new(perms: Arc<Permissions>) -> Self {
        Checker {
            perms,
            last: None,
            publish: HashMap::new(),
            delivery: HashMap::new(),
            replies: HashMap::new(),
            swept: None,
        }
    }

    pub fn permissions(&self) -> &Permissions {
        &self.perms
    }

    /// The permissions, shared (for a bridge that acts on the connection's behalf).
    pub fn shared(&self) -> Arc<Permissions> {
        self.perms.clone()
    }

    /// [`Checker::may_publish`] for a subject as it came off the wire: the subject of the last
    /// publication is compared as bytes, before any text conversion.
    pub fn may_publish_bytes(&mut self, subject: &[u8]) -> bool {
        if let Some((s, a)) = &self.last {
            if s.as_bytes() == subject {
                return *a;
            }
        }
        self.may_publish(&String::from_utf8_lossy(subject))
    }

    /// Whether this connection's permissions allow publishing to `subject` (replies aside:
    /// see [`Checker::use_reply`]).
    pub fn may_publish(&mut self, subject: &str) -> bool {
        if let Some((s, a)) = &self.last {
            if **s == *subject {
                return *a;
            }
        }
        let a = match self.publish.get(subject) {
            Some(a) => *a,
            None => {
                let a = self.perms.may_publish(subject);
                if self.publish.len() >= CACHE_MAX {
                    self.publish.clear();
                }
                self.publish.insert(subject.into(), a);
                a
            }
        };
        self.last = Some((subject.into(), a));
        a
    }

    /// Whether `subject` is the reply subject of a request this connection received and may
    /// still answer (allow_responses); counts one use.
    pub fn use_reply(&mut self, subject: &str) -> bool {
        let Some((left, deadline)) = self.replies.get_mut(subject) else {
            return false;
        };
        if *deadline < Instant::now() {
            self.replies.remove(subject);
            return false;
        }
        match *left {
            0 => true,
            1 => {
                self.replies.remove(subject);
                true
            }
            _ => {
                *left -= 1;
                true
            }
        }
    }

    /// Whether a message on `subject` may be delivered to this connection.
    pub fn may_receive(&mut self, subject: &str) -> bool {
        if self.perms.subscribe.deny.is_empty() {
            return true;
        }
        if let Some(d) = self.delivery.get(subject) {
            return !*d;
        }
        let d = self.perms.delivery_denied(subject);
        if self.delivery.len() >= CACHE_MAX {
            self.delivery.clear();
        }
        self.delivery.insert(subject.into(), d);
        !d
    }

    /// A request with `reply` was delivered to this connection: with allow_responses it may
    /// now publish there.
    pub fn delivered_request(&mut self, reply: &str) {
        let Some(r) = self.perms.responses else {
            return;
        };
        let now = Instant::now();
        if self.replies.len() >= CACHE_MAX {
            // Sweep the expired at most once a second; between sweeps, a full table forgets
            // one entry per new one (requests are driven by others: never a scan per message).
            if self
                .swept
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.swept = Some(now);
                self.replies.retain(|_, (_, d)| *d >= now);
            }
            if self.replies.len() >= CACHE_MAX {
                if let Some(k) = self.replies.keys().next().cloned() {
                    self.replies.remove(&k);
                }
            }
        }
        let deadline = now
            .checked_add(r.expires)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        self.replies.insert(reply.into(), (r.max, deadline));
    }

    /// Whether replies must be tracked for this connection.
    pub fn tracks_replies(&self) -> bool {
        self.perms.responses.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<Entry> {
        list.iter().map(|s| Entry::parse(s).unwrap()).collect()
    }

    #[test]
    fn allow_deny_and_wildcards() {
        let p = Permissions {
            publish: Rules {
                allow: Some(entries(&["a.>", "_INBOX.>"])),
                deny: entries(&["a.secret.>"]),
            },
            subscribe: Rules {
                allow: Some(entries(&["a.>"])),
                deny: entries(&["a.secret"]),
            },
            responses: None,
        };
        assert!(p.may_publish("a.b"));
        assert!(!p.may_publish("b"));
        assert!(!p.may_publish("a.secret.x"));
        assert!(p.may_subscribe("a.*", None));
        assert!(p.may_subscribe("a.>", None));
        assert!(!p.may_subscribe(">", None));
        assert!(!p.may_subscribe("*.b", None));
        assert!(!p.may_subscribe("a.secret", None));
        assert!(p.delivery_denied("a.secret"));
        assert!(!p.delivery_denied("a.open"));
    }

    #[test]
    fn queue_entries() {
        let p = Permissions {
            subscribe: Rules {
                allow: Some(entries(&["q.* grp", "plain"])),
                deny: entries(&["plain bad"]),
            },
            ..Default::default()
        };
        assert!(!p.may_subscribe("q.x", None));
        assert!(p.may_subscribe("q.x", Some("grp")));
        assert!(!p.may_subscribe("q.x", Some("other")));
        assert!(p.may_subscribe("plain", None));
        assert!(p.may_subscribe("plain", Some("any")));
        assert!(!p.may_subscribe("plain", Some("bad")));
    }

    #[test]
    fn responses_allow_limited_replies() {
        let p = Arc::new(Permissions {
            publish: Rules {
                allow: Some(entries(&["nothing"])),
                deny: vec![],
            },
            responses: Some(Responses {
                max: 2,
                expires: Duration::from_secs(60),
            }),
            ..Default::default()
        });
        let mut c = Checker::new(p);
        assert!(!c.may_publish("_INBOX.z") && !c.use_reply("_INBOX.z"));
        c.delivered_request("_INBOX.z");
        assert!(c.use_reply("_INBOX.z"));
        assert!(c.use_reply("_INBOX.z"));
        assert!(!c.use_reply("_INBOX.z"));
        assert!(c.may_publish("nothing"));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(Entry::parse("a b c").is_err());
        assert!(Entry::parse("a.>.b").is_err());
        assert_eq!(
            Entry::parse("q.* grp").unwrap(),
            Entry {
                subject: "q.*".into(),
                queue: Some("grp".into())
            }
        );
    }
}
