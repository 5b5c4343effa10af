//! Storage-engine benchmark for an MQTT broker's durable state.
//!
//! Build with exactly one engine feature (`redb` or `fjall`) and run:
//!   store-bench bench [runs]            all workloads, medians over `runs` (default 3)
//!   store-bench corrupt                 corruption behaviour on open / scan
//!
//! Environment: STORE_BENCH_DIR (default /tmp/store-bench), S1_B1_OPS (default 20000).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[cfg(all(feature = "redb", feature = "fjall"))]
compile_error!("enable exactly one engine feature");
#[cfg(not(any(feature = "redb", feature = "fjall")))]
compile_error!("enable one engine feature: redb or fjall");

type Res<T> = Result<T, String>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Queue,
    Retained,
}

enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Del(Table, Vec<u8>),
}

trait Engine: Sized {
    const NAME: &'static str;
    fn open(dir: &Path) -> Res<Self>;
    /// Apply all ops atomically and durably (fsync) before returning.
    fn commit(&mut self, ops: &[Op]) -> Res<()>;
    /// Iterate every record of every table; returns (records, key+value bytes).
    fn scan_all(&self) -> Res<(u64, u64)>;
    fn close(self) -> Res<()>;
    /// Optional work a broker could do on graceful shutdown (fjall: flush memtables to tables).
    fn flush(&self) -> Res<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- redb
#[cfg(feature = "redb")]
mod engine {
    use super::*;
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

    const QUEUE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("queue");
    const RETAINED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("retained");

    pub struct Redb {
        db: Database,
    }

    fn e<E: std::fmt::Display + std::fmt::Debug>(err: E) -> String {
        format!("{err} [{err:?}]")
    }

    impl Engine for Redb {
        const NAME: &'static str = "redb";

        fn open(dir: &Path) -> Res<Self> {
            std::fs::create_dir_all(dir).map_err(e)?;
            let db = Database::create(dir.join("state.redb")).map_err(e)?;
            // make sure both tables exist so that readers never see TableDoesNotExist
            let tx = db.begin_write().map_err(e)?;
            tx.open_table(QUEUE).map_err(e)?;
            tx.open_table(RETAINED).map_err(e)?;
            tx.commit().map_err(e)?;
            Ok(Redb { db })
        }

        fn commit(&mut self, ops: &[Op]) -> Res<()> {
            // default durability is Durability::Immediate (fsync before commit returns)
            let tx = self.db.begin_write().map_err(e)?;
            {
                let mut q = tx.open_table(QUEUE).map_err(e)?;
                let mut r = tx.open_table(RETAINED).map_err(e)?;
                for op in ops {
                    match op {
                        Op::Put(t, k, v) => {
                            let tab = if *t == Table::Queue { &mut q } else { &mut r };
                            tab.insert(k.as_slice(), v.as_slice()).map_err(e)?;
                        }
                        Op::Del(t, k) => {
                            let tab = if *t == Table::Queue { &mut q } else { &mut r };
                            tab.remove(k.as_slice()).map_err(e)?;
                        }
                    }
                }
            }
            tx.commit().map_err(e)
        }

        fn scan_all(&self) -> Res<(u64, u64)> {
            let tx = self.db.begin_read().map_err(e)?;
            let (mut n, mut bytes) = (0u64, 0u64);
            for def in [QUEUE, RETAINED] {
                let t = tx.open_table(def).map_err(e)?;
                for item in t.iter().map_err(e)? {
                    let (k, v) = item.map_err(e)?;
                    n += 1;
                    bytes += (k.value().len() + v.value().len()) as u64;
                }
            }
            Ok((n, bytes))
        }

        fn close(self) -> Res<()> {
            drop(self.db);
            Ok(())
        }
    }

    pub type Selected = Redb;

    /// Extra: what an explicit compaction would give (redb never compacts on its own).
    pub fn explicit_compact(dir: &Path) -> Res<bool> {
        let mut db = Database::create(dir.join("state.redb")).map_err(e)?;
        db.compact().map_err(e)
    }

    pub fn integrity_check(dir: &Path) -> Res<bool> {
        let mut db = Database::open(dir.join("state.redb")).map_err(e)?;
        db.check_integrity().map_err(e)
    }
}

// ---------------------------------------------------------------- fjall
#[cfg(feature = "fjall")]
mod engine {
    use super::*;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    pub struct Fjall {
        queue: Keyspace,
        retained: Keyspace,
        db: Database,
    }

    fn e<E: std::fmt::Display + std::fmt::Debug>(err: E) -> String {
        format!("{err} [{err:?}]")
    }

    impl Engine for Fjall {
        const NAME: &'static str = "fjall";

        fn open(dir: &Path) -> Res<Self> {
            let db = Database::builder(dir).open().map_err(e)?;
            let queue = db.keyspace("queue", KeyspaceCreateOptions::default).map_err(e)?;
            let retained = db.keyspace("retained", KeyspaceCreateOptions::default).map_err(e)?;
            Ok(Fjall { queue, retained, db })
        }

        fn commit(&mut self, ops: &[Op]) -> Res<()> {
            let mut b = self.db.batch();
            for op in ops {
                match op {
                    Op::Put(t, k, v) => {
                        let ks = if *t == Table::Queue { &self.queue } else { &self.retained };
                        b.insert(ks, k.as_slice(), v.as_slice());
                    }
                    Op::Del(t, k) => {
                        let ks = if *t == Table::Queue { &self.queue } else { &self.retained };
                        b.remove(ks, k.as_slice());
                    }
                }
            }
            b.commit().map_err(e)?;
            // fsync the journal (data + metadata) before acknowledging the batch
            self.db.persist(PersistMode::SyncAll).map_err(e)
        }

        fn scan_all(&self) -> Res<(u64, u64)> {
            let (mut n, mut bytes) = (0u64, 0u64);
            for ks in [&self.queue, &self.retained] {
                for g in ks.iter() {
                    let (k, v) = g.into_inner().map_err(e)?;
                    n += 1;
                    bytes += (k.len() + v.len()) as u64;
                }
            }
            Ok((n, bytes))
        }

        fn close(self) -> Res<()> {
            let Fjall { queue, retained, db } = self;
            drop(queue);
            drop(retained);
            drop(db);
            Ok(())
        }

        fn flush(&self) -> Res<()> {
            // doc(hidden) in fjall 3.1: seal + flush the active memtable and wait for it
            self.queue.rotate_memtable_and_wait().map_err(e)?;
            self.retained.rotate_memtable_and_wait().map_err(e)
        }
    }

    pub type Selected = Fjall;

    pub fn explicit_compact(_dir: &Path) -> Res<bool> {
        Ok(false)
    }

    pub fn integrity_check(_dir: &Path) -> Res<bool> {
        Ok(true)
    }
}

use engine::Selected as E;

// ---------------------------------------------------------------- helpers

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SESSIONS: u64 = 100;
const PAYLOAD: usize = 128;

/// 16-byte session id + big-endian u64 sequence = 24 B key.
fn queue_key(session: u64, seq: u64) -> Vec<u8> {
    let mut k = format!("client-{session:06}___").into_bytes(); // 16 bytes
    k.truncate(16);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// 16 B metadata (qos, flags, expiry, timestamp) + 128 B payload = 144 B value.
fn message_value(rng: &mut XorShift, seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + PAYLOAD);
    v.push(1); // qos
    v.push(0); // flags
    v.extend_from_slice(&[0u8; 6]);
    v.extend_from_slice(&seq.to_le_bytes()); // pseudo timestamp
    while v.len() < 16 + PAYLOAD {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(16 + PAYLOAD);
    v
}

fn retained_key(topic: u64) -> Vec<u8> {
    format!("sensors/building-{:03}/floor-{}/temperature", topic % 250, topic / 250).into_bytes()
}

fn du_sb(dir: &Path) -> u64 {
    du(dir, "-sb")
}

/// Allocated (on-disk blocks) size, `du -s -B1`; differs from -sb for preallocated/sparse files.
fn du_alloc(dir: &Path) -> u64 {
    du(dir, "-sB1")
}

fn du(dir: &Path, flag: &str) -> u64 {
    let out = std::process::Command::new("du").arg(flag).arg(dir).output().expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn fresh(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    dir.to_path_buf()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e3
}

fn base_dir() -> PathBuf {
    PathBuf::from(std::env::var("STORE_BENCH_DIR").unwrap_or_else(|_| "/tmp/store-bench".into()))
        .join(E::NAME)
}

type Metrics = Vec<(String, f64)>;

// ---------------------------------------------------------------- workload 1

fn w1_group_commit(dir: &Path, batch: usize, total: usize, m: &mut Metrics) -> Res<()> {
    let dir = fresh(dir);
    let mut db = E::open(&dir)?;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ batch as u64);
    let mut seq = [0u64; SESSIONS as usize];
    let mut lat = Vec::with_capacity(total / batch + 1);
    let mut done = 0;
    let mut busy = Duration::ZERO;
    while done < total {
        let n = batch.min(total - done);
        let ops: Vec<Op> = (0..n)
            .map(|_| {
                let s = rng.below(SESSIONS);
                seq[s as usize] += 1;
                let q = seq[s as usize];
                Op::Put(Table::Queue, queue_key(s, q), message_value(&mut rng, q))
            })
            .collect();
        let t = Instant::now();
        db.commit(&ops)?;
        let d = t.elapsed();
        busy += d;
        lat.push(d);
        done += n;
    }
    lat.sort();
    let p = format!("w1_b{batch}");
    m.push((format!("{p}_ops"), total as f64));
    m.push((format!("{p}_ops_per_s"), total as f64 / busy.as_secs_f64()));
    m.push((format!("{p}_commit_p50_ms"), pct(&lat, 0.50)));
    m.push((format!("{p}_commit_p99_ms"), pct(&lat, 0.99)));
    m.push((format!("{p}_size_bytes"), du_sb(&dir) as f64));
    m.push((format!("{p}_size_alloc_bytes"), du_alloc(&dir) as f64));
    db.close()
}

// ---------------------------------------------------------------- workload 2 + 3a

fn w2_mixed(dir: &Path, m: &mut Metrics) -> Res<()> {
    const TOTAL: usize = 200_000;
    const BATCH: usize = 256;
    const TOPICS: u64 = 1_000;
    let dir = fresh(dir);
    let mut db = E::open(&dir)?;
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let mut next_seq = [0u64; SESSIONS as usize];
    // keys committed in earlier batches and not yet acked, per session (FIFO)
    let mut pending: Vec<VecDeque<u64>> = vec![VecDeque::new(); SESSIONS as usize];
    let mut pending_total = 0usize;
    let (mut appends, mut acks, mut upserts) = (0u64, 0u64, 0u64);
    let mut lat = Vec::new();
    let mut busy = Duration::ZERO;
    let mut done = 0;
    while done < TOTAL {
        let n = BATCH.min(TOTAL - done);
        let mut ops = Vec::with_capacity(n);
        let mut appended_now: Vec<(u64, u64)> = Vec::new();
        for i in 0..n {
            let gi = done + i;
            if gi % 64 == 63 {
                let topic = rng.below(TOPICS);
                let v = message_value(&mut rng, gi as u64);
                ops.push(Op::Put(Table::Retained, retained_key(topic), v));
                upserts += 1;
            } else if i % 2 == 1 && pending_total > 0 {
                // ack: oldest un-acked message of a random session that has one
                let mut s = rng.below(SESSIONS) as usize;
                while pending[s].is_empty() {
                    s = (s + 1) % SESSIONS as usize;
                }
                let q = pending[s].pop_front().unwrap();
                pending_total -= 1;
                ops.push(Op::Del(Table::Queue, queue_key(s as u64, q)));
                acks += 1;
            } else {
                let s = rng.below(SESSIONS);
                next_seq[s as usize] += 1;
                let q = next_seq[s as usize];
                ops.push(Op::Put(Table::Queue, queue_key(s, q), message_value(&mut rng, q)));
                appended_now.push((s, q));
                appends += 1;
            }
        }
        let t = Instant::now();
        db.commit(&ops)?;
        let d = t.elapsed();
        busy += d;
        lat.push(d);
        for (s, q) in appended_now {
            pending[s as usize].push_back(q);
            pending_total += 1;
        }
        done += n;
    }
    lat.sort();
    m.push(("w2_ops_per_s".into(), TOTAL as f64 / busy.as_secs_f64()));
    m.push(("w2_commit_p50_ms".into(), pct(&lat, 0.50)));
    m.push(("w2_commit_p99_ms".into(), pct(&lat, 0.99)));
    m.push(("w2_appends".into(), appends as f64));
    m.push(("w2_acks".into(), acks as f64));
    m.push(("w2_retained_upserts".into(), upserts as f64));
    m.push(("w2_size_open_bytes".into(), du_sb(&dir) as f64));
    m.push(("w2_size_open_alloc_bytes".into(), du_alloc(&dir) as f64));
    db.close()?;
    m.push(("w2_size_closed_bytes".into(), du_sb(&dir) as f64));
    m.push(("w2_size_closed_alloc_bytes".into(), du_alloc(&dir) as f64));

    // 3a: reopen + full scan
    let t = Instant::now();
    let db = E::open(&dir)?;
    let open = t.elapsed();
    let t = Instant::now();
    let (n, _bytes) = db.scan_all()?;
    let scan = t.elapsed();
    m.push(("w3_after_w2_open_ms".into(), open.as_secs_f64() * 1e3));
    m.push(("w3_after_w2_scan_ms".into(), scan.as_secs_f64() * 1e3));
    m.push(("w3_after_w2_open_scan_ms".into(), (open + scan).as_secs_f64() * 1e3));
    m.push(("w3_after_w2_records".into(), n as f64));
    let expect = (pending_total as u64) + TOPICS.min(upserts); // upper bound on retained
    if n > expect {
        return Err(format!("scan found {n} records, expected <= {expect}"));
    }
    m.push(("w2_size_reopened_bytes".into(), du_sb(&dir) as f64));
    m.push(("w2_size_reopened_alloc_bytes".into(), du_alloc(&dir) as f64));
    // give background compaction (if any) a moment, then measure again
    std::thread::sleep(Duration::from_secs(3));
    m.push(("w2_size_reopened_3s_bytes".into(), du_sb(&dir) as f64));
    m.push(("w2_size_reopened_3s_alloc_bytes".into(), du_alloc(&dir) as f64));
    db.close()?;
    m.push(("w2_size_after_2nd_close_bytes".into(), du_sb(&dir) as f64));
    m.push(("w2_size_after_2nd_close_alloc_bytes".into(), du_alloc(&dir) as f64));
    if E::NAME == "redb" {
        let t = Instant::now();
        engine::explicit_compact(&dir)?;
        m.push(("w2_explicit_compact_ms".into(), t.elapsed().as_secs_f64() * 1e3));
        m.push(("w2_size_after_explicit_compact_bytes".into(), du_sb(&dir) as f64));
    m.push(("w2_size_after_explicit_compact_alloc_bytes".into(), du_alloc(&dir) as f64));
    }
    Ok(())
}

// ---------------------------------------------------------------- workload 3b

fn w3_million(dir: &Path, m: &mut Metrics) -> Res<()> {
    const N: u64 = 1_000_000;
    const BATCH: u64 = 10_000;
    let dir = fresh(dir);
    let mut db = E::open(&dir)?;
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let t = Instant::now();
    let mut i = 0;
    while i < N {
        let ops: Vec<Op> = (i..(i + BATCH).min(N))
            .map(|j| {
                let mut v = vec![0u8; 32];
                v[..8].copy_from_slice(&rng.next().to_le_bytes());
                Op::Put(Table::Queue, queue_key(j % SESSIONS, j / SESSIONS), v)
            })
            .collect();
        db.commit(&ops)?;
        i += BATCH;
    }
    m.push(("w3_1m_write_s".into(), t.elapsed().as_secs_f64()));
    db.close()?;
    m.push(("w3_1m_size_bytes".into(), du_sb(&dir) as f64));
    m.push(("w3_1m_size_alloc_bytes".into(), du_alloc(&dir) as f64));
    let t = Instant::now();
    let db = E::open(&dir)?;
    let open = t.elapsed();
    let t = Instant::now();
    let (n, _) = db.scan_all()?;
    let scan = t.elapsed();
    if n != N {
        return Err(format!("1M scan found {n}"));
    }
    m.push(("w3_1m_open_ms".into(), open.as_secs_f64() * 1e3));
    m.push(("w3_1m_scan_ms".into(), scan.as_secs_f64() * 1e3));
    m.push(("w3_1m_open_scan_ms".into(), (open + scan).as_secs_f64() * 1e3));
    // variant: graceful shutdown that flushes memtables first (no-op for redb)
    db.flush()?;
    db.close()?;
    let t = Instant::now();
    let db = E::open(&dir)?;
    let open = t.elapsed();
    let t = Instant::now();
    let (n, _) = db.scan_all()?;
    let scan = t.elapsed();
    if n != N {
        return Err(format!("1M scan after flush found {n}"));
    }
    m.push(("w3_1m_flushed_open_ms".into(), open.as_secs_f64() * 1e3));
    m.push(("w3_1m_flushed_scan_ms".into(), scan.as_secs_f64() * 1e3));
    m.push(("w3_1m_flushed_size_bytes".into(), du_sb(&dir) as f64));
    m.push(("w3_1m_flushed_size_alloc_bytes".into(), du_alloc(&dir) as f64));
    db.close()
}

fn bench(runs: usize) -> Res<()> {
    let b1_ops: usize = std::env::var("S1_B1_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let base = base_dir();
    let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for run in 0..runs {
        let mut m = Metrics::new();
        let rd = base.join(format!("run{run}"));
        for (b, total) in [(1usize, b1_ops), (16, 100_000), (256, 100_000)] {
            w1_group_commit(&rd.join(format!("w1_b{b}")), b, total, &mut m)?;
            eprintln!("[{}] run {run}: w1 B={b} done", E::NAME);
        }
        w2_mixed(&rd.join("w2"), &mut m)?;
        eprintln!("[{}] run {run}: w2/w3a done", E::NAME);
        w3_million(&rd.join("w3_1m"), &mut m)?;
        eprintln!("[{}] run {run}: w3 1M done", E::NAME);
        for (k, v) in m {
            eprintln!("  run{run} {k} = {v:.3}");
            if !all.contains_key(&k) {
                order.push(k.clone());
            }
            all.entry(k).or_default().push(v);
        }
        let _ = std::fs::remove_dir_all(&rd);
    }
    println!("# engine={} runs={runs} (median [min..max])", E::NAME);
    for k in order {
        let mut v = all[&k].clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{} {k} {:.3} [{:.3}..{:.3}]", E::NAME, v[v.len() / 2], v[0], v[v.len() - 1]);
    }
    Ok(())
}

// ---------------------------------------------------------------- corruption

fn files_by_size(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for ent in std::fs::read_dir(&d).unwrap().flatten() {
            let p = ent.path();
            let md = ent.metadata().unwrap();
            if md.is_dir() {
                stack.push(p);
            } else {
                out.push((md.len(), p));
            }
        }
    }
    out.sort();
    out.reverse();
    out
}

fn copy_dir(src: &Path, dst: &Path) {
    let _ = std::fs::remove_dir_all(dst);
    let st = std::process::Command::new("cp").arg("-a").arg(src).arg(dst).status().unwrap();
    assert!(st.success());
}

fn try_open_scan(dir: &Path) -> String {
    let t = Instant::now();
    let r = std::panic::catch_unwind(|| -> Res<String> {
        let db = E::open(dir).map_err(|e| format!("OPEN FAILED: {e}"))?;
        let (n, _) = db.scan_all().map_err(|e| format!("opened OK, SCAN FAILED: {e}"))?;
        db.close()?;
        Ok(format!("opened and scanned OK: {n} records"))
    });
    let msg = match r {
        Ok(Ok(s)) => s,
        Ok(Err(s)) => s,
        Err(p) => format!(
            "PANIC: {}",
            p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
        ),
    };
    format!("{msg} ({:.0} ms)", t.elapsed().as_secs_f64() * 1e3)
}

fn corrupt() -> Res<()> {
    corrupt_variant(false)?;
    if E::NAME == "fjall" {
        // second variant: memtables flushed to on-disk tables before close
        corrupt_variant(true)?;
    }
    Ok(())
}

fn corrupt_variant(flush: bool) -> Res<()> {
    let base = base_dir().join(if flush { "corrupt-flushed" } else { "corrupt" });
    let pristine = fresh(&base.join("pristine"));
    println!("[{}] ---- variant: {}", E::NAME, if flush { "flushed before close" } else { "plain close" });
    // 200k records, committed in durable batches of 1000
    let mut db = E::open(&pristine)?;
    let mut rng = XorShift(77);
    for b in 0..200u64 {
        let ops: Vec<Op> = (0..1000u64)
            .map(|i| {
                let j = b * 1000 + i;
                Op::Put(Table::Queue, queue_key(j % SESSIONS, j), message_value(&mut rng, j))
            })
            .collect();
        db.commit(&ops)?;
    }
    if flush {
        db.flush()?;
    }
    db.close()?;
    println!("[{}] pristine: {}", E::NAME, try_open_scan(&pristine));
    let files = files_by_size(&pristine);
    println!("[{}] files (largest first):", E::NAME);
    for (sz, p) in files.iter().take(8) {
        println!("    {sz:>10} {}", p.strip_prefix(&pristine).unwrap().display());
    }
    // targets: largest file, plus (fjall) the journal file
    let mut targets: Vec<PathBuf> = vec![files[0].1.clone()];
    for pat in [".jnl", "/tables/"] {
        if let Some((_, j)) = files.iter().find(|(_, p)| p.to_string_lossy().contains(pat)) {
            if !targets.contains(j) {
                targets.push(j.clone());
            }
        }
    }
    for target in targets {
        let rel = target.strip_prefix(&pristine).unwrap().to_path_buf();
        for mode in ["flip", "truncate"] {
            let dir = base.join(format!("{mode}-{}", rel.to_string_lossy().replace('/', "_")));
            copy_dir(&pristine, &dir);
            let f = dir.join(&rel);
            let mut data = std::fs::read(&f).unwrap();
            let len = data.len();
            let what = if mode == "flip" {
                let mid = len / 2;
                let end = (mid + 4096).min(len);
                for b in &mut data[mid..end] {
                    *b ^= 0xFF;
                }
                format!("flipped bytes {mid}..{end} of {len}")
            } else {
                data.truncate(len / 2);
                format!("truncated {len} -> {}", len / 2)
            };
            std::fs::write(&f, &data).unwrap();
            println!("[{}] {mode} {} ({what}): {}", E::NAME, rel.display(), try_open_scan(&dir));
            if E::NAME == "redb" && mode == "flip" {
                let mut d2 = dir.clone();
                d2.set_extension("ic");
                copy_dir(&dir, &d2);
                println!("    redb check_integrity() on the same file: {:?}", engine::integrity_check(&d2));
            }
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("bench") => bench(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3)),
        Some("corrupt") => corrupt(),
        _ => Err("usage: store-bench bench [runs] | corrupt".into()),
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
