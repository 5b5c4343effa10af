//! Durable state: a small key-value interface over an embedded engine, and the group-commit
//! writer every frontend submits to.
//!
//! Frontends never wait on the disk themselves. They [`Store::submit`] operations, and ask for
//! something to run once everything submitted so far is durable ([`Store::then`]: an MQTT
//! PUBACK, a queued message released to its client). One writer thread takes everything that
//! piled up while the previous commit was on the disk and makes it durable in one transaction
//! (one fsync), so many messages share one commit.
//!
//! Operations that must land together (a message queued for several sessions and the packet id
//! that marks it received) are submitted inside a [`Store::group`]; the writer never cuts a
//! commit through an open group.
//!
//! The engine sits behind [`Engine`], so that another (a cluster-backed store) can sit beside
//! the embedded one.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tables of the durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Persistent MQTT sessions: subscriptions, expiry, pending will.
    Sessions,
    /// QoS 1/2 messages queued for or in flight to persistent sessions.
    Messages,
    /// Retained messages.
    Retained,
    /// QoS 2 packet identifiers received (PUBREC sent) and not yet released.
    Inbound,
    /// Facts about the server itself (when it was last alive).
    Meta,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 5] = [
        Table::Sessions,
        Table::Messages,
        Table::Retained,
        Table::Inbound,
        Table::Meta,
    ];

    /// The table's name in the engine.
    pub fn name(self) -> &'static str {
        match self {
            Table::Sessions => "sessions",
            Table::Messages => "messages",
            Table::Retained => "retained",
            Table::Inbound => "inbound",
            Table::Meta => "meta",
        }
    }
}

/// One change to the durable state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Inserts a key that never existed before (a new sequence number): when a `Delete` of it
    /// follows in the same commit, the writer drops both and the engine never sees them.
    Insert {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Inserts or replaces a value.
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes a key (absent keys are fine).
    Delete { table: Table, key: Vec<u8> },
    /// Removes every key that starts with `prefix`.
    DeletePrefix { table: Table, prefix: Vec<u8> },
}

/// Why the store failed; names the file where there is one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Engine(String),
}

/// What a scan calls with each key and value.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// An embedded (or remote) engine: atomic, durable commits and ordered scans.
pub trait Engine: Send + 'static {
    /// Applies `ops` in order, atomically, and returns once they are durable.
    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError>;
    /// Calls `each` with every key and value of `table`, in key order.
    fn scan(&self, table: Table, each: &mut Visit<'_>) -> Result<(), StoreError>;
}

/// Runs once what was submitted before it is durable; what it must wake goes into [`Wakes`],
/// so that a connection acknowledged many times in one commit is woken once.
pub type Then = Box<dyn FnOnce(&mut Wakes) + Send>;

/// Something to wake after a commit's callbacks ran (a connection with new output).
pub trait Wake: Send + Sync {
    fn wake(&self);
}

/// The distinct things to wake after one commit.
#[derive(Default)]
pub struct Wakes {
    all: Vec<Arc<dyn Wake>>,
    /// Their addresses, so a commit acknowledging many connections stays linear.
    seen: HashSet<usize, std::hash::BuildHasherDefault<Fnv>>,
}

impl Wakes {
    /// Wakes `w` once the commit's callbacks are done (once, however often it is added).
    pub fn add(&mut self, w: Arc<dyn Wake>) {
        if self.seen.insert(Arc::as_ptr(&w) as *const () as usize) {
            self.all.push(w);
        }
    }

    fn wake_all(&mut self) {
        self.seen.clear();
        for w in self.all.drain(..) {
            w.wake();
        }
    }
}

enum Item {
    Op(Op),
    Then(Then),
    Begin(u64),
    End(u64),
    /// Stop after committing what came before.
    Stop(mpsc::Sender<()>),
}

thread_local! {
    /// The group the current thread submits into (0: none), and whether its beginning was sent
    /// (only a group that submits something costs the writer anything).
    static GROUP: Cell<(u64, bool)> = const { Cell::new((0, false)) };
}

/// Counters of the store, for monitoring and benchmarks.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Commits made.
    pub commits: AtomicU64,
    /// Operations committed.
    pub ops: AtomicU64,
    /// Total time spent committing, in microseconds.
    pub commit_micros: AtomicU64,
    /// Operations dropped before reaching the engine (inserted and deleted in one commit).
    pub cancelled: AtomicU64,
}

/// The group-commit writer in front of an engine. See the module documentation.
pub struct Store {
    tx: Sender<Item>,
    next_group: AtomicU64,
    submitted: AtomicU64,
    stats: Arc<StoreStats>,
}

/// Keeps a group open on this thread; closes it when dropped.
pub struct Group<'a> {
    store: &'a Store,
    id: u64,
    outer: u64,
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        if self.outer == 0 {
            let (_, begun) = GROUP.with(|g| g.replace((0, false)));
            if begun {
                self.store.send(Item::End(self.id));
            }
        }
    }
}

/// Longest the writer waits for an open group to close before it commits what is complete.
const GROUP_WAIT: Duration = Duration::from_millis(50);

impl Store {
    /// Starts the writer thread for `engine`.
    pub fn start(engine: Box<dyn Engine>) -> Arc<Store> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(StoreStats::default());
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("junction-store".into())
            .spawn(move || writer(engine, rx, writer_stats))
            .expect("starting the store writer thread");
        Arc::new(Store {
            tx,
            next_group: AtomicU64::new(1),
            submitted: AtomicU64::new(0),
            stats,
        })
    }

    fn send(&self, item: Item) {
        // The writer only stops when asked to, after the last sender is done with it.
        let _ = self.tx.send(item);
    }

    /// Submits one change. It becomes durable with a later commit.
    pub fn submit(&self, op: Op) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        let (group, begun) = GROUP.with(|g| g.get());
        if group != 0 && !begun {
            self.send(Item::Begin(group));
            GROUP.with(|g| g.set((group, true)));
        }
        self.send(Item::Op(op));
    }

    /// How many changes were submitted so far (a publisher compares before and after routing
    /// to learn whether its message touched the store).
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Runs `f` on the writer thread once everything submitted before is durable. `f` must be
    /// quick (push bytes to a connection, wake it).
    pub fn then(&self, f: Then) {
        self.send(Item::Then(f));
    }

    /// Opens a group on this thread: what it submits until the guard drops commits together.
    /// Groups nest (an inner one joins the outer one).
    pub fn group(&self) -> Group<'_> {
        let (outer, _) = GROUP.with(|g| g.get());
        if outer != 0 {
            return Group {
                store: self,
                id: outer,
                outer,
            };
        }
        let id = self.next_group.fetch_add(1, Ordering::Relaxed);
        GROUP.with(|g| g.set((id, false)));
        Group {
            store: self,
            id,
            outer: 0,
        }
    }

    /// Waits until everything submitted before is durable, then stops the writer.
    pub fn close(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Item::Stop(tx));
        let _ = rx.recv_timeout(Duration::from_secs(30));
    }

    /// The store's counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }
}

/// The writer thread: commits what piled up, never through an open group, then runs the
/// callbacks that waited for it.
fn writer(mut engine: Box<dyn Engine>, rx: Receiver<Item>, stats: Arc<StoreStats>) {
    let mut pending: Vec<Item> = Vec::new();
    let mut stop = None;
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(item) => pending.push(item),
                Err(_) => return,
            }
        }
        while let Ok(item) = rx.try_recv() {
            pending.push(item);
        }
        // Cut after the last item where no group is open.
        let mut open = HashSet::new();
        let mut cut = 0;
        for (i, item) in pending.iter().enumerate() {
            match item {
                Item::Begin(g) => {
                    open.insert(*g);
                }
                Item::End(g) => {
                    open.remove(g);
                }
                _ => {}
            }
            if open.is_empty() {
                cut = i + 1;
            }
        }
        if cut == 0 {
            // Everything waits on a group that is still being filled: wait for its end.
            match rx.recv_timeout(GROUP_WAIT) {
                Ok(item) => pending.push(item),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    tracing::warn!("a store group stayed open for {GROUP_WAIT:?}");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            continue;
        }
        let rest = pending.split_off(cut);
        let batch = std::mem::replace(&mut pending, rest);
        let mut ops = Vec::new();
        let mut thens = Vec::new();
        for item in batch {
            match item {
                Item::Op(op) => ops.push(op),
                Item::Then(f) => thens.push(f),
                Item::Stop(done) => stop = Some(done),
                Item::Begin(_) | Item::End(_) => {}
            }
        }
        let before = ops.len();
        let ops = cancel_short_lived(ops);
        stats
            .cancelled
            .fetch_add((before - ops.len()) as u64, Ordering::Relaxed);
        if !ops.is_empty() {
            let started = Instant::now();
            if let Err(e) = engine.commit(&ops) {
                // What was acknowledged must be durable: never acknowledge past a failed
                // commit. Stop the process rather than run on with a store that lies.
                tracing::error!(error = %e, "the durable store failed to commit; stopping");
                eprintln!("junction: the durable store failed to commit: {e}");
                std::process::exit(74);
            }
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
            stats
                .commit_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        let mut wakes = Wakes::default();
        for f in thens {
            f(&mut wakes);
        }
        wakes.wake_all();
        if let Some(done) = stop.take() {
            let _ = done.send(());
            return;
        }
    }
}

/// FNV-1a: the writer hashes every key of a commit, and these keys come from the server itself,
/// so a fast hash beats a DoS-resistant one here.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastSet<T> = HashSet<T, std::hash::BuildHasherDefault<Fnv>>;

/// Drops every key inserted and deleted within the same commit (with whatever was put to it in
/// between): a message acknowledged before the commit that would have stored it.
fn cancel_short_lived(ops: Vec<Op>) -> Vec<Op> {
    let keep: Vec<bool> = {
        let inserted: FastSet<(Table, &[u8])> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Insert { table, key, .. } => Some((*table, key.as_slice())),
                _ => None,
            })
            .collect();
        if inserted.is_empty() {
            return ops;
        }
        let gone: FastSet<(Table, &[u8])> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Delete { table, key } if inserted.contains(&(*table, key.as_slice())) => {
                    Some((*table, key.as_slice()))
                }
                _ => None,
            })
            .collect();
        if gone.is_empty() {
            return ops;
        }
        ops.iter()
            .map(|op| match op {
                Op::Insert { table, key, .. }
                | Op::Put { table, key, .. }
                | Op::Delete { table, key } => !gone.contains(&(*table, key.as_slice())),
                Op::DeletePrefix { .. } => true,
            })
            .collect()
    };
    ops.into_iter()
        .zip(keep)
        .filter_map(|(op, keep)| keep.then_some(op))
        .collect()
}

/// An engine in memory, for tests and for `--in-memory`: commits are instant and nothing
/// survives the process.
#[derive(Default)]
pub struct MemoryEngine {
    tables: std::collections::HashMap<Table, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Engine for MemoryEngine {
    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        for op in ops {
            match op {
                Op::Insert { table, key, value } | Op::Put { table, key, value } => {
                    self.tables
                        .entry(*table)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                Op::Delete { table, key } => {
                    if let Some(t) = self.tables.get_mut(table) {
                        t.remove(key);
                    }
                }
                Op::DeletePrefix { table, prefix } => {
                    if let Some(t) = self.tables.get_mut(table) {
                        t.retain(|k, _| !k.starts_with(prefix));
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(&self, table: Table, each: &mut Visit<'_>) -> Result<(), StoreError> {
        if let Some(t) = self.tables.get(&table) {
            for (k, v) in t {
                each(k, v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An engine that records each commit's ops.
    struct Recorder(Arc<Mutex<Vec<Vec<Op>>>>);

    impl Engine for Recorder {
        fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
            self.0.lock().unwrap().push(ops.to_vec());
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        }

        fn scan(&self, _: Table, _: &mut Visit<'_>) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn put(n: u8) -> Op {
        Op::Put {
            table: Table::Messages,
            key: vec![n],
            value: vec![],
        }
    }

    #[test]
    fn callbacks_run_after_the_commit_that_holds_what_came_before() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let store = Store::start(Box::new(Recorder(log.clone())));
        let (tx, rx) = mpsc::channel();
        for i in 0..100u8 {
            store.submit(put(i));
            let log = log.clone();
            let tx = tx.clone();
            store.then(Box::new(move |_| {
                let committed: usize = log.lock().unwrap().iter().map(Vec::len).sum();
                tx.send((i, committed)).unwrap();
            }));
        }
        for i in 0..100u8 {
            let (n, committed) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(n, i, "callbacks run in order");
            assert!(
                committed > usize::from(i),
                "op {i} was committed before its callback"
            );
        }
        store.close();
        // Group commit: 100 ops in fewer commits than ops (the writer sleeps 2 ms per commit).
        assert!(log.lock().unwrap().len() < 100);
    }

    #[test]
    fn a_commit_never_splits_a_group() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let store = Store::start(Box::new(Recorder(log.clone())));
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..50u8 {
                        let _g = store.group();
                        store.submit(put(t * 50 + i));
                        std::thread::yield_now();
                        store.submit(put(t * 50 + i));
                        let _inner = store.group();
                        store.submit(put(t * 50 + i));
                    }
                });
            }
        });
        store.close();
        for commit in log.lock().unwrap().iter() {
            let mut counts = std::collections::HashMap::new();
            for op in commit {
                *counts.entry(op.clone()).or_insert(0) += 1;
            }
            assert!(
                counts.values().all(|c| *c == 3),
                "a group was split: {counts:?}"
            );
        }
    }

    #[test]
    fn keys_inserted_and_deleted_in_one_commit_never_reach_the_engine() {
        let ins = |n: u8| Op::Insert {
            table: Table::Messages,
            key: vec![n],
            value: vec![n],
        };
        let del = |n: u8| Op::Delete {
            table: Table::Messages,
            key: vec![n],
        };
        let ops = vec![ins(1), ins(2), put(1), del(1), del(3), put(4), del(4)];
        // 1: inserted, updated, deleted: gone. 3 and 4 were not inserted here: kept.
        assert_eq!(
            cancel_short_lived(ops),
            vec![ins(2), del(3), put(4), del(4)]
        );
    }

    #[test]
    fn the_memory_engine_applies_in_order() {
        let mut m = MemoryEngine::default();
        m.commit(&[
            put(1),
            put(2),
            Op::Put {
                table: Table::Messages,
                key: vec![3, 1],
                value: vec![9],
            },
            Op::Delete {
                table: Table::Messages,
                key: vec![1],
            },
            Op::DeletePrefix {
                table: Table::Messages,
                prefix: vec![3],
            },
        ])
        .unwrap();
        let mut keys = Vec::new();
        m.scan(Table::Messages, &mut |k, _| {
            keys.push(k.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(keys, vec![vec![2]]);
    }
}
