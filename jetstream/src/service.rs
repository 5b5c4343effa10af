//! The JetStream task: its inputs (API requests, acknowledgements, flow control replies, new
//! messages), the per-account state it owns, its timers, and the routing of what consumers
//! send.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::sync::Lock;
use junction_core::{
    Account, Bus, ConnId, DeliveryFacts, FlushBatch, MatchCache, Message, Sink, Subscription,
};
use junction_store::Store;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

pub(crate) use crate::inbox::Input;

use crate::accounts::AccountLimits;
use crate::config::{Retention, Storage};
use crate::consumer::{AckKind, AckSubject, Consumer, Out};
use crate::persist::{self, Restored};
use crate::sinks::{AckBatch, CaptureSink, ConsumerSubs};
use crate::stream::{now_ns, Budget, Cold, Stream, StreamState};

/// How JetStream is configured (`jetstream {}` and `-js`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes of memory streams allowed in all (-1: no limit).
    pub max_memory: i64,
    /// Bytes of file streams allowed in all (-1: no limit).
    pub max_store: i64,
    pub store_dir: String,
    pub domain: Option<String>,
    /// Accounts with JetStream (`None`: every account but the system account).
    pub accounts: Option<Vec<String>>,
    pub system_account: String,
    /// Per-account limits (`jetstream { max_mem, max_file, max_streams, max_consumers }` in an
    /// account); an account not named here has none of its own.
    pub limits: HashMap<String, AccountLimits>,
    /// Bytes of its newest messages a file stream keeps in memory ([`crate::stream::HOT_BYTES`]).
    pub hot_bytes: u64,
    /// This server's name (the `server` of the API audit advisory).
    pub server_name: String,
    /// `sync_interval`: the store acknowledges a write before it is synced, and syncs at this
    /// interval (`None`: every write is synced before its acknowledgement).
    pub sync_interval: Option<Duration>,
}

/// Counters for monitoring; the usage figures are refreshed by the task's timer.
#[derive(Default)]
pub struct Counters {
    pub api_total: AtomicU64,
    pub api_errors: AtomicU64,
    pub memory: AtomicU64,
    pub storage: AtomicU64,
    pub streams: AtomicU64,
    pub consumers: AtomicU64,
    pub messages: AtomicU64,
    /// The `max_bytes` all streams reserve, by storage type.
    pub reserved_memory: AtomicU64,
    pub reserved_storage: AtomicU64,
}

/// What the sinks and the task share.
pub struct Shared {
    pub(crate) acks: Arc<AckBatch>,
    pub(crate) bus: Arc<Bus>,
    pub(crate) store: Option<Arc<Store>>,
    pub(crate) opts: Options,
    pub(crate) inbox: Mutex<crate::inbox::Inbox>,
    pub(crate) notify: Notify,
    pub(crate) counters: Counters,
    pub(crate) origin: ConnId,
    pub(crate) next_uid: AtomicU64,
    /// The server's bytes in memory and file streams, against `max_memory_store` and
    /// `max_file_store`.
    pub(crate) server_memory: Arc<Budget>,
    pub(crate) server_storage: Arc<Budget>,
    /// Inputs dropped past the inbox's bounds.
    pub(crate) dropped: AtomicU64,
}

impl Shared {
    pub(crate) fn new_uid(&self) -> u64 {
        self.next_uid.fetch_add(1, Ordering::Relaxed)
    }
}

/// The running JetStream service.
pub struct JetStream {
    shared: Arc<Shared>,
}

/// One stream and its consumers, as the task holds them.
pub(crate) struct StreamEntry {
    pub(crate) stream: Arc<Stream>,
    pub(crate) consumers: BTreeMap<String, Consumer>,
}

impl StreamEntry {
    /// Takes a consumer back from its record (at start, or from a restored snapshot), with its
    /// acknowledgement subscriptions.
    pub(crate) fn adopt_consumer(
        &mut self,
        shared: &Arc<Shared>,
        name: String,
        rec: persist::ConsumerRecord,
    ) {
        if let Some(mut c) = Consumer::restore(name.clone(), self.stream.clone(), rec) {
            let s = &self.stream;
            c.subs = Some(ConsumerSubs::new(shared, &s.account, &s.name, &name));
            s.state.locked().consumers += 1;
            self.consumers.insert(name, c);
        }
    }
}

/// One account's JetStream.
pub(crate) struct AccountJs {
    pub(crate) account: Arc<Account>,
    pub(crate) streams: BTreeMap<String, StreamEntry>,
    pub(crate) subs: Vec<Arc<Subscription>>,
    pub(crate) limits: AccountLimits,
    /// Bytes of memory and file streams, against the account's limits.
    pub(crate) memory: Arc<Budget>,
    pub(crate) storage: Arc<Budget>,
    /// API requests answered for this account, and how many of them with an error.
    pub(crate) api_total: u64,
    pub(crate) api_errors: u64,
}

/// The streams (account, name) touched since the last round: a short list, searched without
/// allocating (acknowledgements touch their stream one by one).
#[derive(Default)]
pub(crate) struct Touched(Vec<(String, String)>);

impl Touched {
    /// Adds a stream; returns whether it was new.
    pub(crate) fn insert(&mut self, (acc, stream): (String, String)) -> bool {
        if self.contains(&(acc.clone(), stream.clone())) {
            return false;
        }
        self.0.push((acc, stream));
        true
    }

    /// Adds a stream by reference, allocating only when it is new.
    pub(crate) fn touch(&mut self, acc: &str, stream: &str) {
        if !self.0.iter().any(|(a, s)| a == acc && s == stream) {
            self.0.push((acc.to_string(), stream.to_string()));
        }
    }

    pub(crate) fn contains(&self, t: &(String, String)) -> bool {
        self.0.iter().any(|(a, s)| *a == t.0 && *s == t.1)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, (String, String)> {
        self.0.drain(..)
    }

    pub(crate) fn extend(&mut self, more: Vec<(String, String)>) {
        for t in more {
            self.insert(t);
        }
    }
}

/// The task's state.
pub(crate) struct Task {
    pub(crate) shared: Arc<Shared>,
    pub(crate) accounts: HashMap<String, AccountJs>,
    /// Streams whose consumers should look for something to send.
    pub(crate) touched: Touched,
    pub(crate) out: Vec<(Arc<Account>, Out)>,
    /// Replies to send once the store committed what came before them.
    pub(crate) after_commit: Vec<(Arc<Account>, Out)>,
    /// Sends of `after_commit` handed to the store and not made yet.
    pub(crate) held: Arc<std::sync::atomic::AtomicUsize>,
    /// Streams with a consumer whose pacing (`replay_policy: original`, `rate_limit_bps`)
    /// holds a message back, and when it may go.
    pub(crate) paced: HashMap<(String, String), Instant>,
    /// The API subscriptions of the accounts without JetStream: those told so, and the system
    /// account's account purge.
    pub(crate) refusing: Vec<(Arc<Account>, Vec<Arc<Subscription>>)>,
    /// The accounts that lost JetStream while running, with their streams (stopped).
    pub(crate) disabled: HashMap<String, AccountJs>,
    /// Streams or consumers may have come or gone: [`Stream::watched`] is set again before the
    /// next round's consumers look.
    pub(crate) watch_dirty: bool,
    /// The external mirrors and sources ([`crate::external`]).
    pub(crate) externals: HashMap<crate::external::Key, crate::external::External>,
    /// Snapshots being sent, restores being received.
    pub(crate) backups: crate::api::backup::Backups,
}

impl JetStream {
    /// Starts JetStream: restores the streams and consumers `restored` holds, subscribes the
    /// service subjects of every account with JetStream, and runs the task until `shutdown`.
    pub fn start(
        bus: Arc<Bus>,
        store: Option<Arc<Store>>,
        restored: Restored,
        opts: Options,
        shutdown: CancellationToken,
    ) -> (Arc<JetStream>, tokio::task::JoinHandle<()>) {
        let origin = bus.next_conn_id();
        crate::api::backup::clear_staging(&opts.store_dir);
        let next_uid = restored.streams.keys().max().map_or(1, |u| u + 1);
        let shared = Arc::new(Shared {
            acks: Default::default(),
            bus: bus.clone(),
            store,
            inbox: Default::default(),
            notify: Notify::new(),
            counters: Counters::default(),
            origin,
            next_uid: AtomicU64::new(next_uid),
            server_memory: Budget::new(opts.max_memory),
            server_storage: Budget::new(opts.max_store),
            dropped: Default::default(),
            opts,
        });
        let mut task = Task {
            shared: shared.clone(),
            accounts: HashMap::new(),
            touched: Touched::default(),
            out: Vec::new(),
            after_commit: Vec::new(),
            held: Default::default(),
            paced: Default::default(),
            refusing: Vec::new(),
            disabled: HashMap::new(),
            watch_dirty: true,
            externals: HashMap::new(),
            backups: Default::default(),
        };
        let (enabled, limits) = (shared.opts.accounts.clone(), shared.opts.limits.clone());
        task.set_accounts(enabled, limits);
        task.restore(restored);
        // After the restore, which may stop refusing an account it finds streams of.
        task.serve_system();
        let handle = tokio::spawn(run(task, shutdown));
        (Arc::new(JetStream { shared }), handle)
    }

    /// The `/jsz` document (`accounts`: with per-account detail).
    pub async fn jsz(&self, detail: bool) -> Value {
        let (tx, rx) = oneshot::channel();
        self.shared.push(Input::Monitor(tx, detail));
        rx.await.unwrap_or(Value::Null)
    }

    pub fn options(&self) -> &Options {
        &self.shared.opts
    }

    /// Applies a new set of accounts with JetStream (`None`: every account but the system
    /// account) and their limits, as an updated account JWT gives them: an account that
    /// gains JetStream gets it at once, one that loses it keeps its streams (stopped, and back
    /// if it gains JetStream again), and new limits apply to what comes next. The receiver
    /// hears when the change is in place (the API answers accordingly).
    pub fn set_accounts(
        &self,
        enabled: Option<Vec<String>>,
        limits: HashMap<String, AccountLimits>,
    ) -> oneshot::Receiver<()> {
        let (done, applied) = oneshot::channel();
        self.shared.push(Input::Accounts(enabled, limits, done));
        applied
    }

    /// Usage and API counters (refreshed every 100 ms).
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The `jetstream` part of `/varz`.
    pub fn varz(&self) -> Value {
        let c = &self.shared.counters;
        let o = &self.shared.opts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut config = json!({
            "max_memory": o.max_memory,
            "max_storage": o.max_store,
            "store_dir": o.store_dir,
        });
        match o.sync_interval {
            Some(d) => config["sync_interval"] = json!(d.as_nanos() as u64),
            None => config["sync_always"] = json!(true),
        }
        if let Some(d) = &o.domain {
            config["domain"] = json!(d);
        }
        json!({
            "config": config,
            "stats": {
                "memory": get(&c.memory),
                "storage": get(&c.storage),
                "reserved_memory": get(&c.reserved_memory),
                "reserved_storage": get(&c.reserved_storage),
                "accounts": 0,
                "ha_assets": 0,
                "api": {"total": get(&c.api_total), "errors": get(&c.api_errors)},
            },
        })
    }
}

impl Task {
    pub(crate) fn restore(&mut self, restored: Restored) {
        if let Some(store) = &self.shared.store {
            // Records to rewrite commit first, in one piece.
            let mut group = None;
            store.open_group_in(&mut group);
            for op in restored.rewrite {
                store.submit_in(&mut group, op);
            }
            store.close_group_in(&mut group);
        }
        // The streams of an account without JetStream are loaded stopped, for when it gains
        // JetStream (an updated account JWT): enabled while they load, then disabled.
        let mut shelved: Vec<String> = restored
            .streams
            .values()
            .map(|r| r.meta.account.clone())
            .filter(|a| !self.accounts.contains_key(a))
            .collect();
        shelved.sort();
        shelved.dedup();
        for name in &shelved {
            tracing::warn!(
                account = %name,
                "stored streams belong to an account without JetStream: kept stopped until it has JetStream"
            );
            self.stop_refusing(name);
            self.enable(name, AccountLimits::default());
        }
        let mut by_uid: HashMap<u64, (String, String)> = HashMap::new();
        for (uid, persist::RestoredStream { meta, msgs, blocks }) in restored.streams {
            let Some(acc) = self.accounts.get(&meta.account) else {
                continue;
            };
            let mut config = meta.config.clone();
            config.upgrade_defaults();
            let mut st = StreamState::new(config, meta.created, meta.last_seq, meta.last_ts);
            // Where each source's copying had got to: a restart goes on from there.
            st.sourced = meta.sourced.clone();
            for (seq, m) in msgs {
                st.restore(seq, m);
            }
            st.pad_to_last();
            st.restore_blocks(blocks);
            let name = meta.config.name.clone();
            let stream = self.make_stream(&acc.account.clone(), uid, st);
            {
                let mut st = stream.state.locked();
                crate::sources::recover_positions(&mut st, meta.last_seq);
                st.rebuild_dedup(now_ns());
            }
            by_uid.insert(uid, (meta.account.clone(), name.clone()));
            // Mirrors and sourcing streams catch up with what their sources gained.
            self.touched.insert((meta.account.clone(), name.clone()));
            self.accounts
                .get_mut(&meta.account)
                .expect("account checked above")
                .streams
                .insert(
                    name,
                    StreamEntry {
                        stream,
                        consumers: BTreeMap::new(),
                    },
                );
        }
        for (uid, name, rec) in restored.consumers {
            let Some((acc, sname)) = by_uid.get(&uid) else {
                continue;
            };
            let Some(entry) = self
                .accounts
                .get_mut(acc)
                .and_then(|a| a.streams.get_mut(sname))
            else {
                continue;
            };
            entry.adopt_consumer(&self.shared, name, rec);
            let stream = entry.stream.clone();
            self.refresh_interest(acc, sname);
            self.touched.insert((acc.clone(), stream.name.clone()));
        }
        for name in shelved {
            self.disable(&name);
            if name != self.shared.opts.system_account {
                self.refuse(&name);
            }
        }
    }

    /// A stream in `account` with its capture subscriptions.
    pub(crate) fn make_stream(
        &self,
        account: &Arc<Account>,
        uid: u64,
        st: StreamState,
    ) -> Arc<Stream> {
        let subjects = st.config.subjects.clone();
        let stream = self.build_stream(account, uid, st);
        self.subscribe_stream(&stream, &subjects);
        stream
    }

    /// A stream in `account`, without its subscriptions yet (a restore's, filled first).
    pub(crate) fn build_stream(
        &self,
        account: &Arc<Account>,
        uid: u64,
        mut st: StreamState,
    ) -> Arc<Stream> {
        let durable = st.config.storage == Storage::File;
        if let Some(reader) = self.shared.store.as_ref().and_then(|s| s.reader()) {
            if durable {
                st.read_cold_from(Cold::new(reader.clone(), uid, self.shared.opts.hot_bytes));
            }
        }
        if let Some(a) = self.accounts.get(account.name()) {
            st.attach_budget(if durable {
                a.storage.clone()
            } else {
                a.memory.clone()
            });
        }
        let stream = Arc::new(Stream {
            uid,
            name_json: Value::from(st.config.name.as_str()).to_string(),
            name: st.config.name.clone(),
            account: account.clone(),
            state: Mutex::new(st),
            store: self.shared.store.clone().filter(|_| durable),
            signaled: Default::default(),
            watched: AtomicBool::new(true),
            subs: Mutex::new(Vec::new()),
        });
        stream
    }

    /// (Re)subscribes a stream's subjects.
    pub(crate) fn subscribe_stream(&self, stream: &Arc<Stream>, subjects: &[String]) {
        let mut subs = stream.subs.locked();
        for sub in subs.drain(..) {
            sub.close();
            stream.account.unsubscribe(&sub);
        }
        let sink: Arc<dyn Sink> = Arc::new(CaptureSink {
            shared: self.shared.clone(),
            stream: stream.clone(),
        });
        let subjects = subjects.iter().map(|s| Bytes::from(s.clone()));
        subs.extend(
            stream
                .account
                .subscribe_service(self.shared.origin, subjects, &sink),
        );
        for prefix in crate::sinks::direct_prefixes(&self.shared) {
            let sink: Arc<dyn Sink> = Arc::new(crate::sinks::DirectSink {
                origin: self.shared.origin,
                stream: stream.clone(),
                prefix: prefix.len(),
            });
            let direct = [
                Bytes::from(format!("{prefix}{}", stream.name)),
                Bytes::from(format!("{prefix}{}.>", stream.name)),
            ];
            subs.extend(
                stream
                    .account
                    .subscribe_service(self.shared.origin, direct, &sink),
            );
        }
    }

    /// Recomputes which subjects an interest-retention stream keeps.
    pub(crate) fn refresh_interest(&mut self, account: &str, stream: &str) {
        if let Some(e) = self
            .accounts
            .get(account)
            .and_then(|a| a.streams.get(stream))
        {
            let filters: Vec<Vec<String>> =
                e.consumers.values().map(|c| c.filters().to_vec()).collect();
            let mut st = e.stream.state.locked();
            st.consumers = e.consumers.len();
            st.interest = filters;
        }
    }

    pub(crate) fn reply_status(&mut self, account: &Arc<Account>, o: Out) {
        self.out.push((account.clone(), o));
    }

    pub(crate) fn send_msg(&mut self, account: &Arc<Account>, msg: Message) {
        self.out.push((
            account.clone(),
            Out {
                to: msg.subject.clone(),
                subject: msg.subject,
                reply: msg.reply,
                headers: msg.headers,
                payload: msg.payload,
            },
        ));
    }

    /// Queues a reply that must wait for the store's commit of what came before it.
    pub(crate) fn reply_after_commit(&mut self, account: &Arc<Account>, reply: Bytes, body: Bytes) {
        self.after_commit.push((
            account.clone(),
            Out {
                to: reply.clone(),
                subject: reply,
                reply: None,
                headers: None,
                payload: body,
            },
        ));
    }

    pub(crate) fn handle(&mut self, input: Input) {
        match input {
            Input::Api {
                account,
                subject,
                reply,
                payload,
                origin,
            } => {
                // Streams or consumers may come or go (not for reads and pull requests).
                self.watch_dirty |= crate::api::may_add_or_remove(&subject);
                crate::api::handle(self, &account, &subject, reply, &payload, origin)
            }
            Input::Ack {
                account,
                subject,
                reply,
                payload,
            } => self.ack(&account, &subject, reply, &payload),
            Input::FlowControl { account, subject } => {
                let text = String::from_utf8_lossy(&subject).to_string();
                let t: Vec<&str> = text.split('.').collect();
                if t.len() >= 5 {
                    if let Some(c) = self
                        .accounts
                        .get_mut(account.name())
                        .and_then(|a| a.streams.get_mut(t[2]))
                        .and_then(|e| e.consumers.get_mut(t[3]))
                    {
                        c.flow_control_reply(&text);
                        self.touched
                            .insert((account.name().to_string(), t[2].to_string()));
                    }
                }
            }
            Input::Appended(stream) => {
                stream
                    .signaled
                    .store(false, std::sync::atomic::Ordering::Release);
                self.touched
                    .insert((stream.account.name().to_string(), stream.name.clone()));
            }
            Input::Send { account, msg } => self.send_msg(&account, msg),
            Input::External {
                key,
                subject,
                shown,
                reply,
                headers,
                payload,
            } => self.external_input(&key, subject, shown, reply, headers, payload),
            Input::Backup {
                account,
                subject,
                reply,
                payload,
            } => crate::api::backup::input(self, &account, &subject, reply, payload),
            Input::Restored(done) => crate::api::backup::restored(self, *done),
            Input::Monitor(tx, detail) => {
                let _ = tx.send(crate::api::jsz(self, detail));
            }
            Input::Accounts(enabled, limits, done) => {
                self.watch_dirty = true;
                self.set_accounts(enabled, limits);
                let _ = done.send(());
            }
        }
    }

    fn ack(
        &mut self,
        account: &Arc<Account>,
        subject: &Bytes,
        reply: Option<Bytes>,
        payload: &[u8],
    ) {
        let Ok(text) = std::str::from_utf8(subject) else {
            return;
        };
        let Some(a) = AckSubject::parse(text) else {
            return;
        };
        let Some(kind) = AckKind::parse(payload) else {
            return;
        };
        let Some(entry) = self
            .accounts
            .get_mut(account.name())
            .and_then(|x| x.streams.get_mut(a.stream))
        else {
            return;
        };
        let Some(c) = entry.consumers.get_mut(a.consumer) else {
            return;
        };
        let done = c.ack(a.sseq, &kind);
        let domain = self.shared.opts.domain.as_deref();
        crate::advisories::consumer_events(domain, account, a.stream, c, &mut self.out);
        if reply.is_some() {
            c.urgent = true;
        }
        if let AckKind::Next(req) = &kind {
            if let Some(r) = &reply {
                let now = Instant::now();
                if let Ok(pr) = crate::api::pull_request(r.clone(), req, now) {
                    c.waiting.push_back(pr);
                }
            }
        }
        let stream = entry.stream.clone();
        let retention = stream.state.locked().config.retention;
        if retention != Retention::Limits && !done.is_empty() {
            let mut remove = Vec::new();
            {
                let st = stream.state.locked();
                for seq in &done {
                    let Some(m) = st.entry(*seq) else { continue };
                    if retention == Retention::WorkQueue
                        || entry
                            .consumers
                            .values()
                            .all(|c| c.has_acked(*seq, &m.subject))
                    {
                        remove.push(*seq);
                    }
                }
            }
            let mut st = stream.state.locked();
            stream.remove_many(&mut st, remove);
        }
        self.touched.touch(account.name(), a.stream);
        // A double acknowledgement (AckSync) hears back once the position is durable.
        if let (Some(r), false) = (reply, matches!(kind, AckKind::Next(_))) {
            self.reply_after_commit(account, r, Bytes::new());
        }
    }

    /// Timers: age limits, redeliveries, expired pull requests, heartbeats, idle consumers.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        let now_ns = now_ns();
        let mut gone: Vec<(String, String, String)> = Vec::new();
        let mut out = Vec::new();
        for (acc, a) in &mut self.accounts {
            for (sname, e) in &mut a.streams {
                e.stream.expire(now_ns);
                for (cname, c) in &mut e.consumers {
                    let before = out.len();
                    c.tick(now, &mut out);
                    for o in out.drain(before..).collect::<Vec<_>>() {
                        self.out.push((a.account.clone(), o));
                    }
                    // Idle ephemerals (and durables with an inactive threshold) go away.
                    let active = match &c.config.deliver_subject {
                        Some(ds) => a.account.has_interest(ds.as_bytes()),
                        None => !c.waiting.is_empty(),
                    };
                    c.push_bound = active && c.config.deliver_subject.is_some();
                    if active {
                        c.idle_since = None;
                    } else if c.idle_since.is_none() {
                        c.idle_since = Some(now);
                    }
                    let threshold = if c.config.inactive_threshold > 0 {
                        Some(Duration::from_nanos(c.config.inactive_threshold as u64))
                    } else if !c.is_durable() {
                        Some(Duration::from_nanos(
                            crate::config::DEFAULT_INACTIVE_THRESHOLD as u64,
                        ))
                    } else {
                        None
                    };
                    if let (Some(t), Some(since)) = (threshold, c.idle_since) {
                        if now.duration_since(since) >= t {
                            gone.push((acc.clone(), sname.clone(), cname.clone()));
                        }
                    }
                }
                self.touched.insert((acc.clone(), sname.clone()));
            }
        }
        for (acc, s, c) in gone {
            self.watch_dirty = true;
            crate::api::remove_consumer(self, &acc, &s, &c);
        }
        self.tick_externals(now);
        crate::api::backup::pump(self);
        let (mut mem, mut file, mut streams, mut consumers, mut messages) = (0, 0, 0, 0, 0);
        let (mut reserved_mem, mut reserved_file) = (0u64, 0u64);
        for a in self.accounts.values() {
            for e in a.streams.values() {
                let st = e.stream.state.locked();
                let reserved = st.config.max_bytes.max(0) as u64;
                match st.config.storage {
                    Storage::Memory => {
                        mem += st.bytes;
                        reserved_mem += reserved;
                    }
                    Storage::File => {
                        file += st.bytes;
                        reserved_file += reserved;
                    }
                }
                messages += st.msgs;
                streams += 1;
                consumers += e.consumers.len() as u64;
            }
        }
        let c = &self.shared.counters;
        c.memory.store(mem, Ordering::Relaxed);
        c.storage.store(file, Ordering::Relaxed);
        c.streams.store(streams, Ordering::Relaxed);
        c.consumers.store(consumers, Ordering::Relaxed);
        c.messages.store(messages, Ordering::Relaxed);
        c.reserved_memory.store(reserved_mem, Ordering::Relaxed);
        c.reserved_storage.store(reserved_file, Ordering::Relaxed);
    }

    /// Sets [`Stream::watched`] for every stream: whether it has a consumer or is copied by
    /// another stream of its account. Set before the consumers look at the stream (in the same
    /// round), so a message stored before a stream becomes watched is seen by that look.
    fn set_watched(&mut self) {
        for a in self.accounts.values() {
            let mut copied = std::collections::HashSet::new();
            for e in a.streams.values() {
                let st = e.stream.state.locked();
                copied.extend(st.config.mirror.iter().map(|m| m.name.clone()));
                copied.extend(st.config.sources.iter().map(|s| s.name.clone()));
            }
            for (name, e) in &a.streams {
                let watched = !e.consumers.is_empty() || copied.contains(name);
                e.stream.watched.store(watched, Ordering::Release);
            }
        }
    }

    /// Lets the touched streams' consumers send, routes everything queued, and saves what
    /// changed.
    pub(crate) fn flush(&mut self) {
        if std::mem::take(&mut self.watch_dirty) {
            self.set_watched();
            self.set_externals();
        }
        self.copy_sources();
        let touched: Vec<(String, String)> = self.touched.drain().collect();
        let mut again = Vec::new();
        for (acc, sname) in touched {
            let Some(a) = self.accounts.get_mut(&acc) else {
                continue;
            };
            let account = a.account.clone();
            let Some(e) = a.streams.get_mut(&sname) else {
                continue;
            };
            // Rollups and a mirror starting over removed messages since the consumers last
            // sent: they take those removals as purges before they send again.
            {
                let mut st = e.stream.state.locked();
                for p in st.take_purges() {
                    let filter = p.as_deref().map(String::from_utf8_lossy);
                    crate::consumer::take_purge(e.consumers.values_mut(), &st, filter.as_deref());
                }
            }
            for c in e.consumers.values_mut() {
                let mut out = Vec::new();
                let listened = c.config.deliver_subject.as_deref();
                let more = match listened.map(|ds| account.has_interest(ds.as_bytes())) {
                    Some(active) => c.pump_push(active, &mut out),
                    None => c.pump_pull(&mut out),
                };
                if more {
                    again.push((acc.clone(), sname.clone()));
                }
                if let Some(at) = c.wake_at.take() {
                    let due = self.paced.entry((acc.clone(), sname.clone())).or_insert(at);
                    *due = (*due).min(at);
                }
                let domain = self.shared.opts.domain.as_deref();
                crate::advisories::consumer_events(domain, &account, &sname, c, &mut self.out);
                if c.gates_deliveries() && !out.is_empty() {
                    c.urgent = true;
                    self.after_commit
                        .extend(out.into_iter().map(|o| (account.clone(), o)));
                } else {
                    self.out
                        .extend(out.into_iter().map(|o| (account.clone(), o)));
                }
            }
        }
        // Consumers that stopped at their round's limit go on in the next round.
        self.touched.extend(again);
        self.save_positions(false);
        self.save_sourced();
        // While deliveries held for a commit are on their way, nothing may overtake them: an
        // answer saying they were delivered (a consumer info with nothing pending) must not
        // reach the client before they do (nats-py's KV watcher then saw no keys).
        if self.held.load(Ordering::Acquire) > 0 && self.shared.store.is_some() {
            let mut later = std::mem::take(&mut self.out);
            later.append(&mut self.after_commit);
            self.after_commit = later;
        }
        let mut batch = FlushBatch::default();
        // Outputs run in a row to one inbox (a pull request's batch): the cache keeps its match.
        let mut cache = MatchCache::new(true);
        for (account, o) in self.out.drain(..) {
            let msg = Message {
                subject: o.subject,
                reply: o.reply,
                headers: o.headers,
                payload: o.payload,
                facts: DeliveryFacts::from_origin(self.shared.origin),
                extra: None,
            };
            account.deliver_to(&mut cache, &o.to, &msg, &mut batch);
        }
        batch.wake_all();
        if !self.after_commit.is_empty() {
            let held = std::mem::take(&mut self.after_commit);
            let origin = self.shared.origin;
            let in_flight = self.held.clone();
            in_flight.fetch_add(1, Ordering::AcqRel);
            let send = move || {
                let mut batch = FlushBatch::default();
                let mut cache = MatchCache::new(true);
                for (account, o) in held {
                    let msg = Message {
                        subject: o.subject,
                        reply: o.reply,
                        headers: o.headers,
                        payload: o.payload,
                        facts: DeliveryFacts::from_origin(origin),
                        extra: None,
                    };
                    account.deliver_to(&mut cache, &o.to, &msg, &mut batch);
                }
                batch.wake_all();
                in_flight.fetch_sub(1, Ordering::AcqRel);
            };
            match &self.shared.store {
                Some(s) => s.then(Box::new(move |_| send())),
                None => send(),
            }
        }
    }

    /// Submits the records of consumers whose position changed: at once when something waits
    /// for it (`urgent`), otherwise at most every [`crate::consumer::SAVE_EVERY`] (`all`:
    /// every changed one, at shutdown).
    pub(crate) fn save_positions(&mut self, all: bool) {
        let now = Instant::now();
        for a in self.accounts.values_mut() {
            for e in a.streams.values_mut() {
                for (name, c) in e.consumers.iter_mut() {
                    let due = c.urgent
                        || all
                        || now.duration_since(c.saved_at) >= crate::consumer::SAVE_EVERY;
                    if !c.dirty || !due {
                        continue;
                    }
                    c.dirty = false;
                    c.urgent = false;
                    c.saved_at = now;
                    if c.persisted() {
                        if let Some(s) = e.stream.durable() {
                            s.submit(persist::consumer_op(e.stream.uid, name, &c.record()));
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn shutdown(&mut self) {
        for (account, subs) in self.refusing.drain(..) {
            for sub in subs {
                account.unsubscribe(&sub);
            }
        }
        for a in self.accounts.values_mut() {
            a.stop();
        }
    }
}

/// The most time the task spends on inputs before it lets other tasks run.
const ROUND: Duration = Duration::from_millis(2);

async fn run(mut task: Task, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shared = task.shared.clone();
    loop {
        let paced = task.paced.values().min().copied();
        let pacing = async move {
            match paced {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = shared.notify.notified() => {}
            _ = tick.tick() => task.tick(),
            _ = pacing => {}
        }
        // Consumers whose held message may go now try again.
        let now = Instant::now();
        let due: Vec<(String, String)> = task
            .paced
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            task.paced.remove(&k);
            task.touched.insert(k);
        }
        // Inputs for up to ROUND at a time: a flood of requests (costly ones, such as listing
        // many streams) must not hold this worker thread from the other tasks.
        let started = Instant::now();
        let mut more = false;
        loop {
            let mut inputs = shared.take_inbox();
            if inputs.is_empty() {
                break;
            }
            let mut n = 0u32;
            while let Some(input) = inputs.pop_front() {
                task.handle(input);
                n += 1;
                if n.is_multiple_of(64) && started.elapsed() >= ROUND {
                    break;
                }
            }
            task.flush();
            if !inputs.is_empty() {
                shared.put_back(inputs);
                more = true;
                break;
            }
        }
        crate::api::backup::pump(&mut task);
        task.flush();
        if more || !task.touched.is_empty() {
            // More to do (inputs left, or a consumer with more to send): another round, after
            // whatever else is waiting.
            shared.notify.notify_one();
            tokio::task::yield_now().await;
        }
    }
    task.flush();
    task.save_positions(true);
    task.shutdown();
}
