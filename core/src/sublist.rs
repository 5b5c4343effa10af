//! The subject index: a trie with a literal map, a `*` child and a `>` child per level.
//!
//! Matching a subject returns an immutable, shared [`MatchResult`]. Results are cached in the index
//! (bounded) and, in front of that, in each publisher's own [`MatchCache`], which needs no lock at
//! all: a generation counter, bumped on every insert and remove, tells the cache when to forget.

use crate::sync::{Lock, ReadWrite};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::delivery::Sink;
use crate::message::ConnId;
use crate::subject::{self, FWC, PWC};
use crate::Error;

/// Entries the shared match cache holds before it starts over.
const SHARED_CACHE_ENTRIES: usize = 4096;
/// Entries one publisher's match cache holds before it starts over.
const LOCAL_CACHE_ENTRIES: usize = 256;
/// Subjects longer than this are matched every time, never cached: a cache of clients' longest
/// subjects (an MQTT topic may be 64 KiB) would hold megabytes per publisher.
const CACHED_SUBJECT_MAX_BYTES: usize = 256;

/// A small, fast, non-cryptographic hasher for subjects (FxHash's mixing step).
#[derive(Default, Clone, Copy)]
pub struct SubjectHasher(u64);

impl Hasher for SubjectHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().expect("eight bytes"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<SubjectHasher>>;

/// One subscription, whatever protocol made it.
pub struct Subscription {
    /// The connection that owns it.
    pub conn: ConnId,
    /// The subject filter, possibly with wildcards.
    pub subject: Bytes,
    /// Queue group name: members of one group share the messages.
    pub queue: Option<Bytes>,
    /// The frontend's own handle for this subscription (the NATS sid); opaque to the core.
    pub sid: Bytes,
    /// Do not deliver messages published by the owning connection (NATS `echo: false`).
    pub no_local: bool,
    /// Where deliveries go: the owning connection's encoder.
    pub sink: Arc<dyn Sink>,
    /// Deliver at most this many messages, then unsubscribe (0: no limit).
    max_msgs: AtomicU64,
    /// Messages delivered so far (counted only while a limit is set).
    delivered: AtomicU64,
    /// Set once the subscription is gone, so a cached match result skips it.
    closed: AtomicBool,
    /// Interest of another server, learned over a leaf node link: a queue group prefers its
    /// local members, and each link gets one copy of a publication (see `delivery::deliver`).
    pub remote: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("conn", &self.conn)
            .field("subject", &self.subject)
            .field("queue", &self.queue)
            .field("sid", &self.sid)
            .finish()
    }
}

impl Subscription {
    /// A new subscription; `sid` is the frontend's handle for it.
    pub fn new(
        conn: ConnId,
        subject: Bytes,
        queue: Option<Bytes>,
        sid: Bytes,
        no_local: bool,
        sink: Arc<dyn Sink>,
    ) -> Self {
        Self {
            conn,
            subject,
            queue,
            sid,
            no_local,
            sink,
            max_msgs: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            remote: false,
        }
    }

    /// Marks the subscription as another server's interest (see [`Subscription::remote`]).
    pub fn into_remote(mut self) -> Self {
        self.remote = true;
        self
    }

    /// Limits the subscription to `max` messages in all (NATS `UNSUB sid max`). Returns true when
    /// that many were already delivered, so the caller removes it at once.
    pub fn set_max_msgs(&self, max: u64) -> bool {
        self.max_msgs.store(max, Ordering::Relaxed);
        max > 0 && self.delivered.load(Ordering::Relaxed) >= max
    }

    /// Messages delivered so far (counted only once a limit was set).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Marks the subscription as gone; cached results stop delivering to it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether the subscription is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Claims one delivery. `None`: skip it; `Some(last)`: deliver, and `last` says this delivery
    /// reached the limit, so the subscription must be removed afterwards.
    pub(crate) fn claim(&self) -> Option<bool> {
        if self.is_closed() {
            return None;
        }
        let max = self.max_msgs.load(Ordering::Relaxed);
        if max == 0 {
            return Some(false);
        }
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        match n.cmp(&max) {
            std::cmp::Ordering::Less => Some(false),
            std::cmp::Ordering::Equal => {
                self.close();
                Some(true)
            }
            std::cmp::Ordering::Greater => None,
        }
    }
}

/// The members of one queue group that match a subject.
#[derive(Debug)]
pub struct QueueGroup {
    /// The group's name.
    pub name: Bytes,
    /// The matching members; each message goes to one of them.
    pub members: Vec<Arc<Subscription>>,
    /// Round-robin position, so the group's messages spread evenly.
    next: AtomicUsize,
}

impl QueueGroup {
    /// Index of the member to try first for the next message.
    pub fn next_start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.members.len()
    }
}

/// Everything that matches one subject: plain subscribers, and one entry per queue group.
#[derive(Debug, Default)]
pub struct MatchResult {
    /// Plain subscriptions: each gets a copy.
    pub psubs: Vec<Arc<Subscription>>,
    /// Queue groups: each group gets one copy.
    pub qsubs: Vec<QueueGroup>,
}

impl MatchResult {
    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.psubs.is_empty() && self.qsubs.is_empty()
    }

    fn add_node(&mut self, node: &Node) {
        self.psubs.extend(node.psubs.iter().cloned());
        for (name, members) in &node.qsubs {
            match self.qsubs.iter_mut().find(|g| g.name == *name) {
                Some(g) => g.members.extend(members.iter().cloned()),
                None => self.qsubs.push(QueueGroup {
                    name: name.clone(),
                    members: members.clone(),
                    next: AtomicUsize::new(0),
                }),
            }
        }
    }
}

#[derive(Default)]
struct Node {
    next: Option<Box<Level>>,
    psubs: Vec<Arc<Subscription>>,
    qsubs: FastMap<Bytes, Vec<Arc<Subscription>>>,
}

#[derive(Default)]
struct Level {
    literal: FastMap<Box<[u8]>, Node>,
    pwc: Option<Box<Node>>,
    fwc: Option<Box<Node>>,
}

impl Level {
    fn child_mut(&mut self, token: &[u8]) -> &mut Node {
        if token == [PWC] {
            self.pwc.get_or_insert_with(Box::default)
        } else if token == [FWC] {
            self.fwc.get_or_insert_with(Box::default)
        } else {
            self.literal.entry(token.into()).or_default()
        }
    }

    /// The child a token selects, if it exists.
    fn child(&self, token: &[u8]) -> Option<&Node> {
        if token == [PWC] {
            self.pwc.as_deref()
        } else if token == [FWC] {
            self.fwc.as_deref()
        } else {
            self.literal.get(token)
        }
    }

    fn child_count(&self) -> usize {
        self.literal.len() + usize::from(self.pwc.is_some()) + usize::from(self.fwc.is_some())
    }

    /// Adds everything below this level that matches `tokens` to `out`. Iterative: a subject's
    /// depth is chosen by its publisher, so it must never become the depth of the stack.
    fn collect(&self, tokens: &[&[u8]], out: &mut MatchResult) {
        let mut stack: Vec<(&Level, usize)> = vec![(self, 0)];
        while let Some((level, i)) = stack.pop() {
            let Some(token) = tokens.get(i) else {
                continue;
            };
            if let Some(fwc) = &level.fwc {
                out.add_node(fwc);
            }
            let last = i + 1 == tokens.len();
            // Pushed literal first, so the `*` branch is walked first (as nats-server does).
            for node in [level.literal.get(*token), level.pwc.as_deref()]
                .into_iter()
                .flatten()
            {
                if last {
                    out.add_node(node);
                } else if let Some(next) = &node.next {
                    stack.push((next, i + 1));
                }
            }
        }
    }

    /// Removes `sub`, whose subject's tokens are `tokens`, and prunes the nodes that become
    /// empty; returns whether it was found. Iterative (see [`Level::collect`]): one pass down
    /// finds the highest node that only leads to this subscription, a second cuts it off.
    fn remove(&mut self, tokens: &[&[u8]], sub: &Arc<Subscription>) -> bool {
        let Some(last) = tokens.len().checked_sub(1) else {
            return false;
        };
        // The shallowest depth from which every node on the path would be empty once `sub` is
        // gone (the whole branch from there can go).
        let mut cut: Option<usize> = None;
        {
            let mut level: &Level = self;
            for (d, token) in tokens.iter().enumerate() {
                let Some(node) = level.child(token) else {
                    return false;
                };
                let sole = if d == last {
                    let list = match &sub.queue {
                        None => Some(&node.psubs),
                        Some(q) => node.qsubs.get(q),
                    };
                    if !list.is_some_and(|l| l.iter().any(|s| Arc::ptr_eq(s, sub))) {
                        return false;
                    }
                    let others =
                        node.psubs.len() + node.qsubs.values().map(Vec::len).sum::<usize>();
                    others == 1 && node.next.is_none()
                } else {
                    node.psubs.is_empty()
                        && node.qsubs.is_empty()
                        && node.next.as_ref().is_some_and(|n| n.child_count() == 1)
                };
                if !sole {
                    cut = None;
                } else if cut.is_none() {
                    cut = Some(d);
                }
                if d < last {
                    match node.next.as_deref() {
                        Some(next) => level = next,
                        None => return false,
                    }
                }
            }
        }
        let stop = cut.unwrap_or(last);
        if let Some(cut) = cut {
            // Dropping the branch is iterative too (see `Drop for Level`).
            let token = tokens[cut];
            if cut == 0 {
                self.drop_child(token);
                return true;
            }
            let mut level: &mut Level = self;
            for token in &tokens[..cut - 1] {
                level = match level
                    .child_mut_existing(token)
                    .and_then(|n| n.next.as_deref_mut())
                {
                    Some(next) => next,
                    None => return false,
                };
            }
            let Some(parent) = level.child_mut_existing(tokens[cut - 1]) else {
                return false;
            };
            if let Some(next) = parent.next.as_deref_mut() {
                next.drop_child(token);
                if next.child_count() == 0 {
                    parent.next = None;
                }
            }
            return true;
        }
        let mut level: &mut Level = self;
        for token in &tokens[..stop] {
            level = match level
                .child_mut_existing(token)
                .and_then(|n| n.next.as_deref_mut())
            {
                Some(next) => next,
                None => return false,
            };
        }
        let Some(node) = level.child_mut_existing(tokens[stop]) else {
            return false;
        };
        let list = match &sub.queue {
            None => &mut node.psubs,
            Some(q) => match node.qsubs.get_mut(q) {
                Some(list) => list,
                None => return false,
            },
        };
        let Some(pos) = list.iter().position(|s| Arc::ptr_eq(s, sub)) else {
            return false;
        };
        list.swap_remove(pos);
        if let Some(q) = &sub.queue {
            if list.is_empty() {
                node.qsubs.remove(q);
            }
        }
        true
    }

    /// Removes the child a token selects, with everything below it.
    fn drop_child(&mut self, token: &[u8]) {
        if token == [PWC] {
            self.pwc = None;
        } else if token == [FWC] {
            self.fwc = None;
        } else {
            self.literal.remove(token);
        }
    }

    fn child_mut_existing(&mut self, token: &[u8]) -> Option<&mut Node> {
        if token == [PWC] {
            self.pwc.as_deref_mut()
        } else if token == [FWC] {
            self.fwc.as_deref_mut()
        } else {
            self.literal.get_mut(token)
        }
    }
}

impl Drop for Level {
    /// Takes the levels below apart one at a time: the default drop would recurse once per
    /// level, and a subject as deep as a client likes would overflow the stack.
    fn drop(&mut self) {
        let mut below: Vec<Box<Level>> = Vec::new();
        let detach = |level: &mut Level, below: &mut Vec<Box<Level>>| {
            let nodes = level
                .literal
                .values_mut()
                .chain(level.pwc.as_deref_mut())
                .chain(level.fwc.as_deref_mut());
            below.extend(nodes.filter_map(|n| n.next.take()));
        };
        detach(self, &mut below);
        while let Some(mut level) = below.pop() {
            detach(&mut level, &mut below);
        }
    }
}

static NEXT_SUBLIST_ID: AtomicU64 = AtomicU64::new(1);

/// The subject index of one account.
pub struct Sublist {
    /// Tells match caches apart, so a cache never serves one index's results for another.
    id: u64,
    trie: RwLock<Level>,
    /// Shared match cache; cleared on every change.
    cache: Mutex<FastMap<Bytes, Arc<MatchResult>>>,
    /// Bumped on every insert and remove; local caches compare it to know they are stale.
    generation: AtomicU64,
    count: AtomicUsize,
    /// Whether the shared cache is used (off only in tests that compare both paths).
    cache_enabled: bool,
}

impl Default for Sublist {
    fn default() -> Self {
        Self::new()
    }
}

impl Sublist {
    /// An empty index with its match cache on.
    pub fn new() -> Self {
        Self::with_cache(true)
    }

    /// An empty index, with or without its shared match cache.
    pub fn with_cache(cache_enabled: bool) -> Self {
        Self {
            id: NEXT_SUBLIST_ID.fetch_add(1, Ordering::Relaxed),
            trie: RwLock::new(Level::default()),
            cache: Mutex::new(FastMap::default()),
            generation: AtomicU64::new(1),
            count: AtomicUsize::new(0),
            cache_enabled,
        }
    }

    /// The current generation: it changes whenever a subscription is added or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Calls `f` on every node of the trie, walked iteratively (a subject may be deeper than
    /// the stack allows to recurse).
    fn walk(&self, mut f: impl FnMut(&Node)) {
        let trie = self.trie.read_locked();
        let mut stack: Vec<&Level> = vec![&trie];
        while let Some(level) = stack.pop() {
            for node in level
                .literal
                .values()
                .chain(level.pwc.as_deref())
                .chain(level.fwc.as_deref())
            {
                f(node);
                stack.extend(node.next.as_deref());
            }
        }
    }

    /// Trie nodes the index holds (removal prunes every node that leads to no subscription).
    pub fn nodes(&self) -> usize {
        let mut n = 0;
        self.walk(|_| n += 1);
        n
    }

    /// Every subscription in the index (for monitoring).
    pub fn all(&self) -> Vec<Arc<Subscription>> {
        let mut out = Vec::new();
        self.walk(|node| {
            out.extend(node.psubs.iter().cloned());
            out.extend(node.qsubs.values().flatten().cloned());
        });
        out
    }

    /// Number of subscriptions in the index.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if self.cache_enabled {
            self.cache.locked().clear();
        }
    }

    /// Adds a subscription. Its subject must be a valid subject.
    pub fn insert(&self, sub: Arc<Subscription>) -> Result<(), Error> {
        if !subject::is_valid_subject(&sub.subject) {
            return Err(Error::InvalidSubject);
        }
        {
            let mut trie = self.trie.write_locked();
            let mut level: &mut Level = &mut trie;
            let tokens: Vec<&[u8]> = subject::tokens(&sub.subject).collect();
            let (last, init) = tokens.split_last().expect("a valid subject has a token");
            for token in init {
                level = level.child_mut(token).next.get_or_insert_with(Box::default);
            }
            let node = level.child_mut(last);
            match &sub.queue {
                None => node.psubs.push(sub.clone()),
                Some(q) => node.qsubs.entry(q.clone()).or_default().push(sub.clone()),
            }
            self.count.fetch_add(1, Ordering::Relaxed);
            self.changed();
        }
        Ok(())
    }

    /// Removes a subscription; returns whether it was there. The subscription is closed either way.
    pub fn remove(&self, sub: &Arc<Subscription>) -> bool {
        sub.close();
        let tokens: Vec<&[u8]> = subject::tokens(&sub.subject).collect();
        let found = self.trie.write_locked().remove(&tokens, sub);
        if found {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.changed();
        }
        found
    }

    /// Everything that matches a literal subject.
    pub fn match_subject(&self, subject: &[u8]) -> Arc<MatchResult> {
        if self.cache_enabled {
            if let Some(r) = self.cache.locked().get(subject) {
                return r.clone();
            }
        }
        // Read the generation before the trie: a change after this point makes the result look
        // stale to local caches, never the other way round.
        let generation = self.generation();
        let tokens: Vec<&[u8]> = subject::tokens(subject).collect();
        let mut result = MatchResult::default();
        // A subject with an empty token (`.a`, `a..b`, `a.`) is not a subject: it matches
        // nothing, as in nats-server (a `>` or `*.a` subscriber must not receive it).
        if !tokens.iter().any(|t| t.is_empty()) {
            self.trie.read_locked().collect(&tokens, &mut result);
        }
        let result = Arc::new(result);
        if self.cache_enabled && subject.len() <= CACHED_SUBJECT_MAX_BYTES {
            let mut cache = self.cache.locked();
            if self.generation() == generation {
                if cache.len() >= SHARED_CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert(Bytes::copy_from_slice(subject), result.clone());
            }
        }
        result
    }
}

/// A publisher's own cache of match results, consulted without any lock.
pub struct MatchCache {
    sublist_id: u64,
    generation: u64,
    last: Option<(Bytes, Arc<MatchResult>)>,
    entries: FastMap<Bytes, Arc<MatchResult>>,
    /// The result of the last lookup that was not cached.
    uncached: Option<Arc<MatchResult>>,
    enabled: bool,
    /// Publications routed through this cache, for sampling the busiest subjects.
    publications: u32,
}

impl Default for MatchCache {
    fn default() -> Self {
        Self::new(true)
    }
}

impl MatchCache {
    /// Counts one more publication through this cache; returns the count (wrapping).
    pub(crate) fn count_publication(&mut self) -> u32 {
        self.publications = self.publications.wrapping_add(1);
        self.publications
    }

    /// A new cache; a disabled cache asks the index every time.
    pub fn new(enabled: bool) -> Self {
        Self {
            sublist_id: 0,
            generation: 0,
            last: None,
            entries: FastMap::default(),
            uncached: None,
            enabled,
            publications: 0,
        }
    }

    /// The match result for `subject` in `sublist`, from this cache when it is still current.
    pub fn lookup(&mut self, sublist: &Sublist, subject: &Bytes) -> &MatchResult {
        let generation = sublist.generation();
        if !self.enabled || subject.len() > CACHED_SUBJECT_MAX_BYTES {
            self.last = None;
            return self.uncached.insert(sublist.match_subject(subject));
        }
        if self.generation != generation || self.sublist_id != sublist.id {
            self.generation = generation;
            self.sublist_id = sublist.id;
            self.entries.clear();
            self.last = None;
        }
        let last_hit = matches!(&self.last, Some((s, _)) if s == subject);
        if !last_hit {
            let result = match self.entries.get(subject.as_ref()) {
                Some(r) => r.clone(),
                None => {
                    let r = sublist.match_subject(subject);
                    if self.entries.len() >= LOCAL_CACHE_ENTRIES {
                        self.entries.clear();
                    }
                    // An own copy: the caller's subject may be a slice of a large read buffer
                    // that the cache must not keep alive.
                    self.entries
                        .insert(Bytes::copy_from_slice(subject), r.clone());
                    r
                }
            };
            let key = self
                .entries
                .get_key_value(subject.as_ref())
                .map_or_else(|| Bytes::copy_from_slice(subject), |(k, _)| k.clone());
            self.last = Some((key, result));
        }
        &self.last.as_ref().expect("just set").1
    }
}
