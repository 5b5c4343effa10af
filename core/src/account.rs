//! Accounts: separate subject spaces. A connection is bound to one account when it connects;
//! nothing crosses accounts.

use crate::sync::{Lock, ReadWrite};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::conns::Registry;
use crate::delivery::{self, FlushBatch};
use crate::mapping::{Mapped, Mappings};
use crate::message::{ConnId, Message};
use crate::stats::Stats;
use crate::sublist::{MatchCache, MatchResult, Sublist, Subscription};
use crate::Error;

/// The name of the default account, as nats-server calls it.
pub const DEFAULT_ACCOUNT: &str = "$G";

/// Told of every subscription added to or removed from an account (a leaf node link turns
/// them into interest for the far side).
pub trait InterestWatch: Send + Sync {
    /// `sub` was added (`true`) or removed (`false`).
    fn changed(&self, sub: &Arc<Subscription>, added: bool);
}

/// One account: a subject space of its own.
pub struct Account {
    name: String,
    sublist: Sublist,
    /// Who is told of subscription changes (usually nobody).
    watchers: RwLock<Vec<Arc<dyn InterestWatch>>>,
    /// Client connections bound to the account now.
    connections: AtomicU64,
    /// A sample of the subjects published to (one publication in [`SAMPLE_EVERY`] per publisher),
    /// for the dashboard's busiest subjects.
    sampled: Mutex<HashMap<bytes::Bytes, u64>>,
    /// Subject mappings (nats-server's `mappings`), and whether there are any (read on every
    /// client publication; the lock is taken only when there are).
    mappings: RwLock<Mappings>,
    has_mappings: AtomicBool,
}

/// One publication in this many is sampled for [`Account::busiest`].
pub const SAMPLE_EVERY: u32 = 64;
/// Subjects the sample keeps; past that the counts halve and the rarest go.
const SAMPLE_KEPT: usize = 512;

impl Account {
    /// A new, empty account.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            sublist: Sublist::new(),
            watchers: RwLock::new(Vec::new()),
            connections: AtomicU64::new(0),
            sampled: Mutex::new(HashMap::new()),
            mappings: RwLock::new(Mappings::default()),
            has_mappings: AtomicBool::new(false),
        }
    }

    /// Replaces the account's subject mappings.
    pub fn set_mappings(&self, m: Mappings) {
        let any = !m.is_empty();
        *self.mappings.write_locked() = m;
        self.has_mappings.store(any, Ordering::Release);
    }

    /// Where a client's publication on `subject` goes after the account's mappings (the
    /// frontends call this before checking the publish permission, which then applies to the
    /// mapped subject, as in nats-server).
    #[inline]
    pub fn map_subject(&self, subject: &[u8]) -> Mapped {
        if !self.has_mappings.load(Ordering::Relaxed) {
            return Mapped::Same;
        }
        self.map_subject_slow(subject)
    }

    #[cold]
    fn map_subject_slow(&self, subject: &[u8]) -> Mapped {
        let Ok(text) = std::str::from_utf8(subject) else {
            return Mapped::Same;
        };
        self.mappings
            .read_locked()
            .map(text, crate::mapping::pick_percent)
    }

    /// Counts a connection in, unless the account already has `limit`; returns whether it was.
    pub fn join(&self, limit: Option<u64>) -> bool {
        let n = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        if limit.is_some_and(|l| n > l) {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Counts a connection out.
    pub fn leave(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    fn sample(&self, subject: &bytes::Bytes) {
        let mut sampled = self.sampled.locked();
        if let Some(n) = sampled.get_mut(subject) {
            *n += 1;
            return;
        }
        if sampled.len() >= SAMPLE_KEPT {
            sampled.retain(|_, n| {
                *n /= 2;
                *n > 0
            });
        }
        sampled.insert(subject.clone(), 1);
    }

    /// The most published subjects of the sample, most first, with their estimated message
    /// counts (samples times [`SAMPLE_EVERY`]).
    pub fn busiest(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .sampled
            .locked()
            .iter()
            .map(|(s, c)| {
                (
                    String::from_utf8_lossy(s).into_owned(),
                    c * u64::from(SAMPLE_EVERY),
                )
            })
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account's subject index.
    pub fn sublist(&self) -> &Sublist {
        &self.sublist
    }

    /// Adds a subscription to the account.
    pub fn subscribe(&self, sub: Arc<Subscription>) -> Result<(), Error> {
        self.sublist.insert(sub.clone())?;
        self.tell(&sub, true);
        Ok(())
    }

    /// Subscribes `sink` to each of `subjects` for the server's own service `origin` (no queue
    /// group, no limit); returns the subscriptions made.
    pub fn subscribe_service(
        &self,
        origin: ConnId,
        subjects: impl IntoIterator<Item = Bytes>,
        sink: &Arc<dyn crate::Sink>,
    ) -> Vec<Arc<Subscription>> {
        let mut subs = Vec::new();
        for subject in subjects {
            let sub = Arc::new(Subscription::new(
                origin,
                subject,
                None,
                Bytes::new(),
                false,
                sink.clone(),
            ));
            if self.subscribe(sub.clone()).is_ok() {
                subs.push(sub);
            }
        }
        subs
    }

    /// Removes a subscription from the account; returns whether it was there.
    pub fn unsubscribe(&self, sub: &Arc<Subscription>) -> bool {
        let removed = self.sublist.remove(sub);
        if removed {
            self.tell(sub, false);
        }
        removed
    }

    fn tell(&self, sub: &Arc<Subscription>, added: bool) {
        let watchers = self.watchers.read_locked();
        for w in watchers.iter() {
            w.changed(sub, added);
        }
    }

    /// Tells `w` of every later subscription change; returns the subscriptions there are now
    /// (a change racing with this call may be reported and listed both).
    pub fn watch(&self, w: Arc<dyn InterestWatch>) -> Vec<Arc<Subscription>> {
        self.watchers.write_locked().push(w);
        self.sublist.all()
    }

    /// Stops telling `w`.
    pub fn unwatch(&self, w: &Arc<dyn InterestWatch>) {
        self.watchers.write_locked().retain(|x| !Arc::ptr_eq(x, w));
    }

    /// Routes one message on its own, outside any publisher's read batch (a message the server
    /// sends itself): the subscribers' writers are woken before this returns.
    pub fn publish_one(&self, msg: &Message) {
        let mut batch = FlushBatch::default();
        self.publish(&mut MatchCache::new(false), msg, &mut batch);
        batch.wake_all();
    }

    /// Routes one message to every matching subscription; returns how many deliveries were queued.
    /// Subscriptions that reach their limit are removed before this returns.
    pub fn publish(&self, cache: &mut MatchCache, msg: &Message, batch: &mut FlushBatch) -> usize {
        // Each publisher counts its own publications in its match cache.
        if cache.count_publication().is_multiple_of(SAMPLE_EVERY) {
            self.sample(&msg.subject);
        }
        let result = cache.lookup(&self.sublist, &msg.subject);
        self.deliver_matched(result, msg, None, batch)
    }

    /// Delivers to a match result; subscriptions that reach their limit are removed.
    /// `addressed`: the subject the message was routed by, when it is not its own (the sinks
    /// see it in [`FlushBatch::addressed`] meanwhile; a publication nested in the delivery sees
    /// its own again).
    fn deliver_matched(
        &self,
        result: &MatchResult,
        msg: &Message,
        addressed: Option<&Bytes>,
        batch: &mut FlushBatch,
    ) -> usize {
        if result.is_empty() {
            return 0;
        }
        let outer = std::mem::replace(&mut batch.addressed, addressed.cloned());
        let n = delivery::deliver(result, msg, batch);
        batch.addressed = outer;
        if batch.has_expired() {
            for sub in batch.take_expired() {
                if self.sublist.remove(&sub) {
                    self.tell(&sub, false);
                }
                sub.sink.auto_unsubscribed(&sub);
            }
        }
        n
    }
}

impl Account {
    /// Routes `msg` to the subscriptions of `to`, showing them `msg.subject` (a JetStream
    /// delivery: routed by the consumer's deliver subject, shown with the stored subject).
    /// `cache` is the caller's (many deliveries go to one inbox in a row).
    pub fn deliver_to(
        &self,
        cache: &mut MatchCache,
        to: &Bytes,
        msg: &Message,
        batch: &mut FlushBatch,
    ) -> usize {
        let result = cache.lookup(&self.sublist, to);
        // Routed by its own subject, it is an ordinary publication to the sinks.
        let addressed = (*to != msg.subject).then_some(to);
        self.deliver_matched(result, msg, addressed, batch)
    }

    /// Whether anyone subscribes to `subject`.
    pub fn has_interest(&self, subject: &[u8]) -> bool {
        !self.sublist.match_subject(subject).is_empty()
    }
}

/// The whole bus: the accounts, the server-wide statistics and connection ids.
pub struct Bus {
    accounts: RwLock<HashMap<String, Arc<Account>>>,
    stats: Stats,
    conns: Registry,
    next_conn: AtomicU64,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// A bus with the default account.
    pub fn new() -> Self {
        let mut accounts = HashMap::new();
        accounts.insert(
            DEFAULT_ACCOUNT.to_string(),
            Arc::new(Account::new(DEFAULT_ACCOUNT)),
        );
        Self {
            accounts: RwLock::new(accounts),
            stats: Stats::default(),
            conns: Registry::default(),
            next_conn: AtomicU64::new(1),
        }
    }

    /// The default account (`$G`).
    pub fn default_account(&self) -> Arc<Account> {
        self.account(DEFAULT_ACCOUNT)
            .expect("the default account always exists")
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Option<Arc<Account>> {
        self.accounts.read_locked().get(name).cloned()
    }

    /// The account with this name, created when it does not exist yet.
    pub fn account_or_create(&self, name: &str) -> Arc<Account> {
        if let Some(a) = self.account(name) {
            return a;
        }
        self.accounts
            .write_locked()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Account::new(name)))
            .clone()
    }

    /// Every account, by name.
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        let mut all: Vec<Arc<Account>> = self.accounts.read_locked().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Total subscriptions over all accounts.
    pub fn subscription_count(&self) -> usize {
        self.accounts
            .read_locked()
            .values()
            .map(|a| a.sublist.count())
            .sum()
    }

    /// Server-wide statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Open and recently closed connections.
    pub fn conns(&self) -> &Registry {
        &self.conns
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}
