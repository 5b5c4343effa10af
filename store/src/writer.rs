//! The group-commit writer every user of the store submits to.
//!
//! Users never wait on the disk themselves. They [`Store::submit`] operations, and ask for
//! something to run once everything submitted so far is durable ([`Store::then`]: an MQTT
//! PUBACK, a queued message released to its client). One writer thread takes everything that
//! piled up since it last looked and starts making it durable in one transaction (one frame of
//! the log, one fsync), so many messages share one commit. Commits overlap: while one is being
//! synced, the writer starts the next (the engine bounds how many are in flight), and the
//! callbacks of each run once it and every commit before it are durable: on the engine's
//! thread that saw it become durable (without waking the writer, which may be busy with the
//! next commit), or on the writer.
//!
//! Operations that must land together (a message queued for several sessions and the packet id
//! that marks it received) are collected in a [`Group`] and handed over in one piece; the
//! writer never cuts a commit through a group. A publisher carries its group through routing
//! in a [`GroupSlot`] (core's `FlushBatch::group`, which does not know the store's types), and
//! the sinks that store submit into it with [`Store::submit_in`] and [`Store::then_in`].

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::batch::{Batch, Fnv};
use crate::engine::{Engine, Op, StoreError};
use crate::sync::Lock;

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

/// The pending batch and the writer's wake-up, shared by submitters and the writer.
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

struct Pending {
    batch: Batch,
    /// The writer sleeps on `wake` (a submitter must notify it).
    writer_waiting: bool,
    /// The store was dropped: the writer commits what is left and ends.
    closed: bool,
    /// Commits became durable since the writer last looked.
    synced: bool,
    /// While the writer waits, the weight (ops and callbacks) the pending batch must reach for
    /// a submission to wake it: 1 when it waits for anything, [`OVERLAP_WEIGHT`] when only a
    /// batch that heavy may start beside the commits in flight, never when no more may (above
    /// 1, the writer also waits for a commit in flight to become durable).
    wake_at: usize,
}

/// Ops and callbacks that commit together, collected while a publication is routed and handed
/// to the store in one piece when the group is dropped: by [`Store::close_group_in`], or with
/// the publisher's batch at its end (so a group left open is never lost).
struct Group {
    /// The store it belongs to.
    shared: Arc<Shared>,
    /// Unique among the groups of the process, so an [`OpRef`] never reaches into another.
    id: u64,
    ops: Vec<Op>,
    thens: Vec<Then>,
    /// Opened for throughput only ([`Store::open_cuttable_group_in`]): nothing in it must
    /// commit with anything else, so it may be handed over early.
    cuttable: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.ops.is_empty() || !self.thens.is_empty() {
            hand(
                &self.shared,
                std::mem::take(&mut self.ops),
                std::mem::take(&mut self.thens),
            );
        }
    }
}

/// Where an op submitted into an open group sits, to extend it while the group stays open
/// ([`Store::submit_open_in`], [`Store::op_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRef {
    group: u64,
    index: usize,
}

static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);

/// Where a publisher carries its open group through routing, type-erased so that the
/// routing core can hold it without knowing the store (`None`: no group is open).
pub type GroupSlot = Option<Box<dyn std::any::Any + Send>>;

/// Counters of the store, for monitoring and benchmarks.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Commits made.
    pub commits: AtomicU64,
    /// Operations committed.
    pub ops: AtomicU64,
    /// Total time commits took, from the writer starting each to its being durable, in
    /// microseconds (commits overlap, so this can exceed the time that passed).
    pub commit_micros: AtomicU64,
    /// Operations dropped before reaching the engine (inserted and deleted in one commit, or a
    /// put merged into the insert it updates).
    pub cancelled: AtomicU64,
    /// Commits by duration: `commit_buckets[i]` counts commits that took at most
    /// `COMMIT_BUCKETS_MICROS[i]` and more than the bound before it (slower than the last
    /// bound: only in `commits`).
    pub commit_buckets: [AtomicU64; COMMIT_BUCKETS_MICROS.len()],
}

/// Upper bounds of the commit-duration histogram, in microseconds.
pub const COMMIT_BUCKETS_MICROS: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

impl StoreStats {
    fn note_commit(&self, micros: u64) {
        if let Some(i) = COMMIT_BUCKETS_MICROS.iter().position(|b| micros <= *b) {
            self.commit_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The group-commit writer in front of an engine. See the module documentation.
pub struct Store {
    shared: Arc<Shared>,
    submitted: AtomicU64,
    stats: Arc<StoreStats>,
    reader: Option<Arc<dyn crate::engine::Reader>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        let mut p = self.shared.pending.locked();
        p.closed = true;
        self.shared.wake.notify_one();
    }
}

impl Store {
    /// Starts the writer thread for `engine`.
    pub fn start(engine: Box<dyn Engine>) -> Arc<Store> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                batch: Batch::default(),
                writer_waiting: false,
                closed: false,
                synced: false,
                wake_at: 1,
            }),
            wake: Condvar::new(),
        });
        let stats = Arc::new(StoreStats::default());
        let reader = engine.reader();
        let writer_stats = stats.clone();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("junction-store".into())
            .spawn(move || writer(engine, writer_shared, writer_stats))
            .expect("starting the store writer thread");
        Arc::new(Store {
            shared,
            submitted: AtomicU64::new(0),
            stats,
            reader,
        })
    }

    /// Hands ops and callbacks to the writer, in order, under one lock.
    fn add(&self, ops: impl IntoIterator<Item = Op>, thens: Vec<Then>) {
        hand(&self.shared, ops, thens);
    }

    /// The group in `slot`, if it is one of this store's.
    fn group_in<'s>(&self, slot: &'s mut GroupSlot) -> Option<&'s mut Group> {
        slot.as_mut()?
            .downcast_mut::<Group>()
            .filter(|g| Arc::ptr_eq(&g.shared, &self.shared))
    }

    /// Submits one change. It becomes durable with a later commit.
    pub fn submit(&self, op: Op) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        self.add(Some(op), Vec::new());
    }

    /// Submits one change into the group open in `slot` (it commits with the rest of the
    /// group), or on its own when none of this store's is open there.
    pub fn submit_in(&self, slot: &mut GroupSlot, op: Op) {
        match self.group_in(slot) {
            Some(g) => {
                self.submitted.fetch_add(1, Ordering::Relaxed);
                g.ops.push(op);
            }
            None => self.submit(op),
        }
    }

    /// Like [`Store::submit_in`], and says where the op sits when it joined a group: while that
    /// group stays open, [`Store::op_in`] reaches it to extend it (a record that collects a
    /// stream's messages of one commit). `None`: it was submitted on its own.
    pub fn submit_open_in(&self, slot: &mut GroupSlot, op: Op) -> Option<OpRef> {
        match self.group_in(slot) {
            Some(g) => {
                self.submitted.fetch_add(1, Ordering::Relaxed);
                g.ops.push(op);
                Some(OpRef {
                    group: g.id,
                    index: g.ops.len() - 1,
                })
            }
            None => {
                self.submit(op);
                None
            }
        }
    }

    /// The op `at` names, while its group is still the one open in `slot` (`None` once that
    /// group was handed to the writer: the op is no longer anyone's to change). Reaching it
    /// counts as a submission ([`Store::submitted`]): the caller changes what will commit.
    pub fn op_in<'s>(&self, slot: &'s mut GroupSlot, at: OpRef) -> Option<&'s mut Op> {
        let op = self
            .group_in(slot)
            .filter(|g| g.id == at.group)?
            .ops
            .get_mut(at.index)?;
        self.submitted.fetch_add(1, Ordering::Relaxed);
        Some(op)
    }

    /// Like [`Store::then`], for what follows the group open in `slot` (if any).
    pub fn then_in(&self, slot: &mut GroupSlot, f: Then) {
        match self.group_in(slot) {
            Some(g) => g.thens.push(f),
            None => self.then(f),
        }
    }

    /// How many changes were submitted so far (a publisher compares before and after routing
    /// to learn whether its message touched the store).
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Runs `f` once everything submitted before is durable, on the store's writer thread or
    /// on the engine's thread that made it durable (callbacks run one at a time, in the order
    /// they were given). `f` must be quick (push bytes to a connection, wake it).
    pub fn then(&self, f: Then) {
        self.add(None, vec![f]);
    }

    /// Opens a group of this store in `slot`, when none is open there (`false`: one already
    /// was, and what is submitted joins it). What is submitted into it with
    /// [`Store::submit_in`] commits together once [`Store::close_group_in`] hands it over.
    pub fn open_group_in(&self, slot: &mut GroupSlot) -> bool {
        self.open(slot, false)
    }

    /// Like [`Store::open_group_in`], for a group that only makes many small submissions share
    /// one commit (a NATS publisher's messages to a stream): [`Store::cut_group_in`] may hand
    /// it over before its owner closes it.
    pub fn open_cuttable_group_in(&self, slot: &mut GroupSlot) -> bool {
        self.open(slot, true)
    }

    fn open(&self, slot: &mut GroupSlot, cuttable: bool) -> bool {
        if slot.is_some() {
            return false;
        }
        *slot = Some(Box::new(Group {
            shared: self.shared.clone(),
            id: NEXT_GROUP.fetch_add(1, Ordering::Relaxed),
            ops: Vec::new(),
            thens: Vec::new(),
            cuttable,
        }));
        true
    }

    /// Hands the group open in `slot` to the writer when it is cuttable and holds `callbacks`
    /// callbacks or more: its commit starts while the owner goes on (the owner's next
    /// submission opens another group), so that the commits of a long batch overlap.
    pub fn cut_group_in(&self, slot: &mut GroupSlot, callbacks: usize) {
        if self
            .group_in(slot)
            .is_some_and(|g| g.cuttable && g.thens.len() >= callbacks)
        {
            *slot = None;
        }
    }

    /// Closes this store's group open in `slot` and hands it to the writer in one piece (a
    /// group of another store, or anything else, stays where it is). Dropping the slot's
    /// content does the same: a publisher's batch drops its group when it ends.
    pub fn close_group_in(&self, slot: &mut GroupSlot) {
        if self.group_in(slot).is_some() {
            *slot = None;
        }
    }

    /// Waits until everything submitted before is durable, then stops the writer.
    pub fn close(&self) {
        let (tx, rx) = mpsc::channel();
        {
            let mut p = self.shared.pending.locked();
            p.batch.stop = Some(tx);
            if p.writer_waiting {
                p.writer_waiting = false;
                self.shared.wake.notify_one();
            }
        }
        let _ = rx.recv_timeout(Duration::from_secs(30));
    }

    /// Reads what is committed, beside the writer (`None`: the engine cannot).
    pub fn reader(&self) -> Option<&Arc<dyn crate::engine::Reader>> {
        self.reader.as_ref()
    }

    /// The store's counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }
}

/// Hands ops and callbacks to the writer of `shared`, in order, under one lock.
fn hand(shared: &Shared, ops: impl IntoIterator<Item = Op>, thens: Vec<Then>) {
    let mut p = shared.pending.locked();
    for op in ops {
        p.batch.add(op);
    }
    p.batch.thens.extend(thens);
    // A writer waiting for room is not woken for a batch it would not take yet.
    if p.writer_waiting && p.batch.weight() >= p.wake_at {
        p.writer_waiting = false;
        shared.wake.notify_one();
    }
}

/// A commit started and not yet acknowledged: its callbacks run once the engine says it is
/// durable (and so is every commit before it).
struct Flight {
    /// The engine's number for the commit (for callbacks that came without ops: the last
    /// commit started before them).
    number: u64,
    thens: Vec<Then>,
    stop: Option<mpsc::Sender<()>>,
    /// When its ops went to the engine (`None`: it had none).
    started: Option<Instant>,
}

/// The commits in flight, in order, and what their callbacks wake. Whichever thread learns
/// that commits are durable runs their callbacks: the writer, or the engine's thread that made
/// them durable (so an acknowledgement does not wait for the writer to wake, nor for the
/// commit it is applying meanwhile).
#[derive(Default)]
struct Flights {
    queue: VecDeque<Flight>,
    wakes: Wakes,
}

impl Flights {
    /// Runs the callbacks of the commits up to `durable`, in order, stopping before one that
    /// stops the store: that one is the writer's (`true`: it is durable and waits there).
    fn complete(&mut self, durable: u64, stats: &StoreStats) -> bool {
        while let Some(f) = self.queue.front() {
            if f.number > durable {
                return false;
            }
            if f.stop.is_some() && f.thens.is_empty() {
                return true;
            }
            let f = self.queue.front_mut().expect("a flight");
            let thens = std::mem::take(&mut f.thens);
            if let Some(started) = f.started.take() {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                let micros = started.elapsed().as_micros() as u64;
                stats.commit_micros.fetch_add(micros, Ordering::Relaxed);
                stats.note_commit(micros);
            }
            if f.stop.is_none() {
                self.queue.pop_front();
            }
            for then in thens {
                // A callback is the frontends' code: a bug in one must not stop the writer,
                // which every acknowledgement after it waits for.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| then(&mut self.wakes)))
                    .is_err()
                {
                    tracing::error!("a store callback panicked");
                }
            }
            self.wakes.wake_all();
        }
        false
    }
}

/// The writer thread: takes everything that piled up since it last looked, starts committing
/// it (the engine applies it and makes it durable in the background, several commits in
/// flight), and has the callbacks of each commit run once it is durable, in order.
fn writer(mut engine: Box<dyn Engine>, shared: Arc<Shared>, stats: Arc<StoreStats>) {
    let flights = Arc::new(Mutex::new(Flights::default()));
    {
        let (shared, flights, stats) = (shared.clone(), flights.clone(), stats.clone());
        engine.on_durable(Arc::new(move |durable| {
            // The callbacks run here; the writer is woken only when it has something to do
            // (stop the store, or stop the process after a failed sync).
            let stopping = match durable {
                Some(n) => flights.locked().complete(n, &stats),
                None => true,
            };
            let mut p = shared.pending.locked();
            if stopping || p.closed || p.wake_at > 1 {
                p.synced = true;
                if p.writer_waiting {
                    p.writer_waiting = false;
                    shared.wake.notify_one();
                }
            }
        }));
    }
    let mut batch = Batch::default();
    let mut ops = Vec::new();
    // The engine's number of the last commit started.
    let mut last = 0u64;
    let max_flight = engine.max_in_flight().max(1);
    loop {
        let took = {
            let mut p = shared.pending.locked();
            loop {
                p.wake_at = 1;
                if !p.batch.is_empty() {
                    let in_flight = last.saturating_sub(engine.durable().unwrap_or(u64::MAX));
                    let weight = p.batch.weight();
                    if in_flight == 0
                        || p.batch.stop.is_some()
                        || (in_flight < max_flight && weight >= OVERLAP_WEIGHT)
                    {
                        std::mem::swap(&mut p.batch, &mut batch);
                        break true;
                    }
                    p.wake_at = if in_flight < max_flight {
                        OVERLAP_WEIGHT
                    } else {
                        usize::MAX
                    };
                }
                if p.synced {
                    p.synced = false;
                    break false;
                }
                if p.closed && p.batch.is_empty() {
                    // Never the flights' lock inside this one: a callback, run under the
                    // flights' lock, may submit.
                    drop(p);
                    if flights.locked().queue.is_empty() {
                        return;
                    }
                    p = shared.pending.locked();
                    if !p.batch.is_empty() || p.synced {
                        continue;
                    }
                }
                p.writer_waiting = true;
                p = shared
                    .wake
                    .wait(p)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        if took {
            ops.extend(batch.ops.drain(..).flatten());
            stats
                .cancelled
                .fetch_add(batch.cancelled, Ordering::Relaxed);
            let thens = std::mem::take(&mut batch.thens);
            let stop = batch.stop.take();
            batch.clear();
            let started = (!ops.is_empty()).then(Instant::now);
            if !ops.is_empty() {
                let number =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.start(&ops)))
                        .unwrap_or_else(|_| Err(StoreError::Engine("the engine panicked".into())));
                match number {
                    Ok(n) => last = n.unwrap_or(last),
                    Err(e) => failed(&e),
                }
                stats.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
                ops.clear();
            }
            let mut f = flights.locked();
            match f.queue.back_mut() {
                // Callbacks alone wait for what was started before them: they join its flight
                // (unless it is done with and only waits to stop the store).
                Some(b) if started.is_none() && b.stop.is_none() => {
                    b.thens.extend(thens);
                    b.stop = stop;
                }
                _ => f.queue.push_back(Flight {
                    number: last,
                    thens,
                    stop,
                    started,
                }),
            }
        }
        let durable = engine.durable().unwrap_or_else(|e| failed(&e));
        let mut f = flights.locked();
        if f.complete(durable, &stats) {
            let done = f.queue.pop_front().and_then(|f| f.stop);
            drop(f);
            // The engine's own close (redb absorbing its log) is part of stopping: the process
            // may exit as soon as `close` returns.
            drop(engine);
            if let Some(done) = done {
                let _ = done.send(());
            }
            return;
        }
    }
}

/// Ops and callbacks a batch needs before it is committed beside commits still in flight;
/// a smaller one waits for one of them to become durable, and for what arrives meanwhile. Every
/// commit costs the engine a fixed amount (a transaction, a frame, a sync), and small commits
/// that overlap buy little: measured (medians of 4 rounds), committing at once whatever came
/// gave 397k msgs/s of JetStream async publish and 480k of MQTT QoS 1 to a persistent
/// session, waiting for 32 gave 413k and 506k, and one commit at a time 372k and 391k.
const OVERLAP_WEIGHT: usize = 32;

/// What was acknowledged must be durable: never acknowledge past a failed commit. Stop the
/// process rather than run on with a store that lies.
fn failed(e: &StoreError) -> ! {
    tracing::error!(error = %e, "the durable store failed to commit; stopping");
    eprintln!("junction: the durable store failed to commit: {e}");
    std::process::exit(74);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Table;

    use crate::engine::Visit;

    const MESSAGES: Table = Table::new("messages");
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
            table: MESSAGES,
            key: vec![n],
            value: vec![],
        }
    }

    /// An engine whose commits become durable when the test says so.
    #[derive(Clone, Default)]
    struct Manual {
        started: Arc<Mutex<Vec<Vec<Op>>>>,
        durable: Arc<AtomicU64>,
        tell: Arc<Mutex<Option<crate::engine::OnDurable>>>,
    }

    impl Manual {
        fn make_durable(&self, n: u64) {
            self.durable.store(n, Ordering::SeqCst);
            let tell = self
                .tell
                .lock()
                .unwrap()
                .clone()
                .expect("the writer listens");
            tell(Some(n));
        }

        fn commits(&self) -> usize {
            self.started.lock().unwrap().len()
        }
    }

    impl Engine for Manual {
        fn commit(&mut self, _: &[Op]) -> Result<(), StoreError> {
            unreachable!("the writer starts commits")
        }

        fn scan(&self, _: Table, _: &mut Visit<'_>) -> Result<(), StoreError> {
            Ok(())
        }

        fn start(&mut self, ops: &[Op]) -> Result<Option<u64>, StoreError> {
            let mut started = self.started.lock().unwrap();
            started.push(ops.to_vec());
            Ok(Some(started.len() as u64))
        }

        fn durable(&self) -> Result<u64, StoreError> {
            Ok(self.durable.load(Ordering::SeqCst))
        }

        fn max_in_flight(&self) -> u64 {
            4
        }

        fn on_durable(&mut self, f: crate::engine::OnDurable) {
            *self.tell.lock().unwrap() = Some(f);
        }
    }

    fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("{what} did not happen within 2 s");
    }

    #[test]
    fn commits_overlap_when_worth_it_and_acknowledge_in_order() {
        let engine = Manual::default();
        let store = Store::start(Box::new(engine.clone()));
        let ran = Arc::new(Mutex::new(Vec::new()));
        let then = |name: &'static str| -> Then {
            let ran = ran.clone();
            Box::new(move |_| ran.lock().unwrap().push(name))
        };
        store.submit(put(1));
        store.then(then("first"));
        eventually("the first commit", || engine.commits() == 1);
        // Small: it waits for the first commit rather than start a second one beside it.
        store.submit(put(2));
        store.then(then("second"));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(engine.commits(), 1);
        // Enough that a commit beside the first is worth it: it takes what waited too.
        for i in 3..3 + OVERLAP_WEIGHT as u8 {
            store.submit(put(i));
        }
        store.then(then("third"));
        eventually("a second commit in flight", || engine.commits() == 2);
        assert_eq!(engine.started.lock().unwrap()[1].len(), 1 + OVERLAP_WEIGHT);
        assert!(ran.lock().unwrap().is_empty(), "nothing is durable yet");
        // The second becoming durable first would be a broken engine; durability is a
        // number: 1 acknowledges the first commit only.
        engine.make_durable(1);
        assert_eq!(*ran.lock().unwrap(), ["first"]);
        engine.make_durable(2);
        assert_eq!(*ran.lock().unwrap(), ["first", "second", "third"]);
        // Callbacks alone, after everything is durable, run at once; closing waits for them.
        store.then(then("fourth"));
        store.close();
        assert_eq!(*ran.lock().unwrap(), ["first", "second", "third", "fourth"]);
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
                        let mut slot: GroupSlot = None;
                        assert!(store.open_group_in(&mut slot));
                        store.submit_in(&mut slot, put(t * 50 + i));
                        std::thread::yield_now();
                        store.submit_in(&mut slot, put(t * 50 + i));
                        // A nested opener joins the open group.
                        assert!(!store.open_group_in(&mut slot));
                        store.submit_in(&mut slot, put(t * 50 + i));
                        store.close_group_in(&mut slot);
                        assert!(slot.is_none());
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
    fn a_group_of_another_store_is_not_joined() {
        let mine = Arc::new(Mutex::new(Vec::new()));
        let theirs = Arc::new(Mutex::new(Vec::new()));
        let a = Store::start(Box::new(Recorder(mine.clone())));
        let b = Store::start(Box::new(Recorder(theirs.clone())));
        let mut slot: GroupSlot = None;
        assert!(b.open_group_in(&mut slot));
        // `a` submits on its own: nothing of it waits in (or is lost with) `b`'s group.
        a.submit_in(&mut slot, put(1));
        b.submit_in(&mut slot, put(2));
        a.close_group_in(&mut slot);
        assert!(slot.is_some(), "a store never closes another's group");
        b.close_group_in(&mut slot);
        assert!(slot.is_none());
        a.close();
        b.close();
        assert_eq!(*mine.lock().unwrap(), vec![vec![put(1)]]);
        assert_eq!(*theirs.lock().unwrap(), vec![vec![put(2)]]);
    }

    #[test]
    fn an_op_in_an_open_group_can_be_extended_until_the_group_is_handed_over() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let store = Store::start(Box::new(Recorder(log.clone())));
        let mut slot: GroupSlot = None;
        // Without a group the op goes on its own, and there is nothing to extend.
        assert_eq!(store.submit_open_in(&mut slot, put(9)), None);
        assert!(store.open_group_in(&mut slot));
        let at = store.submit_open_in(&mut slot, put(1)).unwrap();
        store.submit_in(&mut slot, put(2));
        if let Some(Op::Put { value, .. }) = store.op_in(&mut slot, at) {
            value.push(7);
        }
        store.close_group_in(&mut slot);
        // The next group reuses no reference of the last one.
        assert!(store.open_group_in(&mut slot));
        let next = store.submit_open_in(&mut slot, put(3)).unwrap();
        assert!(store.op_in(&mut slot, at).is_none());
        assert!(store.op_in(&mut slot, next).is_some());
        // Dropping the slot hands the group over, as closing it does.
        slot = None;
        assert!(slot.is_none());
        store.close();
        let all: Vec<Op> = log.lock().unwrap().concat();
        let mut extended = put(1);
        if let Op::Put { value, .. } = &mut extended {
            value.push(7);
        }
        assert_eq!(all, vec![put(9), extended, put(2), put(3)]);
    }

    #[test]
    fn keys_inserted_and_deleted_in_one_commit_never_reach_the_engine() {
        let ins = |n: u8| Op::Insert {
            table: MESSAGES,
            key: vec![n],
            value: vec![n],
        };
        let del = |n: u8| Op::Delete {
            table: MESSAGES,
            key: vec![n],
        };
        let put_v = |n: u8, v: u8| Op::Put {
            table: MESSAGES,
            key: vec![n],
            value: vec![v],
        };
        let prefix = |n: u8| Op::DeletePrefix {
            table: MESSAGES,
            prefix: vec![n],
        };
        let mut b = Batch::default();
        for op in [
            ins(1),
            ins(2),
            put(1),
            del(1),
            del(3),
            put(4),
            del(4),
            put_v(2, 7),
            ins(5),
            prefix(5),
            put_v(5, 1),
            del(5),
        ] {
            b.add(op);
        }
        let kept: Vec<Op> = b.ops.drain(..).flatten().collect();
        // 1: inserted, updated, deleted: gone. 2: its put merged into the insert. 3 and 4 were
        // not inserted here: kept. 5: a prefix delete came between, so nothing after it merges.
        let mut ins2 = ins(2);
        if let Op::Insert { value, .. } = &mut ins2 {
            *value = vec![7];
        }
        assert_eq!(
            kept,
            vec![
                ins2,
                del(3),
                put(4),
                del(4),
                ins(5),
                prefix(5),
                put_v(5, 1),
                del(5)
            ]
        );
        assert_eq!(b.cancelled, 4);
    }
}
