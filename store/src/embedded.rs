//! The embedded engine: an [`Engine`] over redb, with a write-ahead log in front.
//!
//! One file, `junction.redb`, in the data directory, with one redb table per [`Table`] (made the
//! first time something is written to it; a table never written reads as empty), and beside it
//! the log `junction.wal` (see [`crate::wal`]). A commit is durable once its frame of the log is
//! synced; it is applied to redb at the same time without a sync, and a durable redb commit
//! absorbs the log every [`crate::wal::CHECKPOINT_BYTES`]. The group-commit writer makes many
//! messages share one commit. redb locks its file, so a second broker on the same directory
//! fails to start before it touches the log, and it checks its pages, so a damaged file is an
//! error naming it rather than half-read state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::engine::{Engine, Op, RangeVisit, Reader, StoreError, Table, Visit};
use crate::wal::{SyncPolicy, Wal, CHECKPOINT_BYTES};

/// The file name inside the data directory.
pub const FILE_NAME: &str = "junction.redb";

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// The redb engine.
pub struct Redb {
    db: Arc<Database>,
    path: PathBuf,
    /// The log; its epoch is the one redb's last durable commit recorded.
    wal: Wal,
    /// The last frame applied to redb. A commit counts as durable once its frame is both
    /// synced and applied, so that a reader woken by its acknowledgement always finds it (a
    /// frame's sync can end before the writer has applied it).
    applied: Arc<AtomicU64>,
}

/// The engine's own table: the epoch of the log's frames written after redb's last durable
/// commit (a random number, so that nothing a client sends can pass for a frame of the log).
const WAL_META: Table = Table::new("junction_wal");
const EPOCH_KEY: &[u8] = b"epoch";
/// Present when the epoch's frames are written with a relaxed [`SyncPolicy`]: a crash of the
/// machine may leave any of them unwritten, so the replay stops at the first torn one.
const RELAXED_KEY: &[u8] = b"relaxed";

/// Reads committed state beside the writer (redb's read transactions are snapshots).
struct RedbReader {
    db: Arc<Database>,
    path: PathBuf,
}

impl Reader for RedbReader {
    fn range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        each: &mut RangeVisit<'_>,
    ) -> Result<(), StoreError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Engine(format!("{what} {}: {e}", self.path.display()))
        };
        // A damaged page can panic inside redb: an error naming the file, as in `scan`.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let tx = self.db.begin_read().map_err(|e| err("reading", &e))?;
            let t = match tx.open_table(definition(table)) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(err("reading", &e)),
            };
            for item in t.range(from..to).map_err(|e| err("reading", &e))? {
                let (k, v) = item.map_err(|e| err("reading", &e))?;
                if !each(k.value(), v.value()) {
                    break;
                }
            }
            Ok(())
        }))
        .unwrap_or_else(|_| Err(err("damaged store", &"a page could not be read")))
    }
}

/// Opens (or creates) the store in `dir`; every commit is synced before it is done.
pub fn open(dir: &Path) -> Result<Redb, StoreError> {
    open_synced(dir, SyncPolicy::Always)
}

/// Opens (or creates) the store in `dir`, syncing its log as `policy` says.
pub fn open_synced(dir: &Path, policy: SyncPolicy) -> Result<Redb, StoreError> {
    open_with(dir, COMPACT_MIN_BYTES, policy)
}

fn open_with(dir: &Path, compact_min: u64, policy: SyncPolicy) -> Result<Redb, StoreError> {
    // A damaged page can panic inside redb: that is a damaged store, reported with its file.
    std::panic::catch_unwind(|| open_checked(dir, compact_min, policy)).unwrap_or_else(|_| {
        Err(StoreError::Engine(format!(
            "cannot open the store {}: the file is damaged (a page could not be read)",
            dir.join(FILE_NAME).display()
        )))
    })
}

fn open_checked(dir: &Path, compact_min: u64, policy: SyncPolicy) -> Result<Redb, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::Engine(format!(
            "cannot create the data directory {}: {e}",
            dir.display()
        ))
    })?;
    let path = dir.join(FILE_NAME);
    let fail = |e: &dyn std::fmt::Display| {
        StoreError::Engine(format!("cannot open the store {}: {e}", path.display()))
    };
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(&path)
        .map_err(|e| fail(&e))?;
    let (epoch, relaxed) = read_epoch(&db).map_err(|e| fail(&e))?;
    let (wal, replay) = Wal::open_with(dir, epoch, relaxed, policy)?;
    let mut engine = Redb {
        db: Arc::new(db),
        path: path.clone(),
        wal,
        applied: Arc::new(AtomicU64::new(0)),
    };
    // What the log holds past the last durable commit goes in now, and the log starts over
    // with a new epoch, so no frame of this run can ever be replayed again.
    let replayed = replay.len();
    engine.checkpoint(&replay)?;
    if replayed > 0 {
        eprintln!(
            "junction: replayed {replayed} operations from the log {}",
            dir.join(crate::wal::WAL_FILE).display()
        );
    }
    let db = Arc::get_mut(&mut engine.db).expect("no reader yet");
    compact_if_wasteful(db, &path, compact_min).map_err(|e| fail(&e))?;
    Ok(engine)
}

/// The epoch of the log's frames after redb's last durable commit (`None`: a new store), and
/// whether they were written with a relaxed [`SyncPolicy`].
fn read_epoch(db: &Database) -> Result<(Option<u64>, bool), String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let t = match tx.open_table(definition(WAL_META)) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok((None, false)),
        Err(e) => return Err(e.to_string()),
    };
    let relaxed = t.get(RELAXED_KEY).map_err(|e| e.to_string())?.is_some();
    let Some(v) = t.get(EPOCH_KEY).map_err(|e| e.to_string())? else {
        return Ok((None, relaxed));
    };
    let bytes: [u8; 8] = v
        .value()
        .try_into()
        .map_err(|_| "the log epoch is not 8 bytes".to_string())?;
    Ok((Some(u64::from_be_bytes(bytes)), relaxed))
}

/// A fresh epoch for the log: unpredictable (std's hasher keys come from the OS's random
/// source) and never 0, which a zeroed header would carry.
fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish().max(1)
}

/// Splits sorted keys into runs where each key is the one before with its last eight bytes (a
/// big-endian sequence number) plus one: a range from a run's first to its last key holds no
/// other key of that shape, so deleting the range costs one pass of the cursor.
fn clusters<'a, 'k>(keys: &'a [&'k [u8]]) -> impl Iterator<Item = &'a [&'k [u8]]> {
    keys.chunk_by(|a, b| successor(a, b))
}

fn successor(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n < 8 || b.len() != n || a[..n - 8] != b[..n - 8] {
        return false;
    }
    let seq = |k: &[u8]| u64::from_be_bytes(k[n - 8..].try_into().expect("eight bytes"));
    seq(a).checked_add(1) == Some(seq(b))
}

/// Memory redb may use to cache pages of the file (its default is 1 GiB, which a large stream's
/// scan at start fills). The kernel's page cache still holds the file; this bounds what the
/// broker's own memory holds twice.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A file at least this large is compacted at startup when most of it is free space.
const COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// Gives free pages back to the file system when they are most of the file: after a backlog of
/// messages was delivered, the file would otherwise stay as large as the backlog was.
fn compact_if_wasteful(db: &mut Database, path: &Path, min: u64) -> Result<(), String> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len < min {
        return Ok(());
    }
    let stats = {
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        let stats = tx.stats().map_err(|e| e.to_string())?;
        tx.abort().map_err(|e| e.to_string())?;
        stats
    };
    let used = stats.allocated_pages() * stats.page_size() as u64;
    if used * 2 > len {
        return Ok(());
    }
    let started = std::time::Instant::now();
    while db.compact().map_err(|e| e.to_string())? {}
    let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "junction: compacted {} from {len} to {after} bytes in {:?}",
        path.display(),
        started.elapsed()
    );
    Ok(())
}

impl Redb {
    /// Commits `ops` to redb durably with everything applied before, marks the log's current
    /// epoch absorbed, and starts the log over; returns the commit's number. The log's frames
    /// in flight are made durable first, so that commits stay durable in order.
    fn checkpoint(&mut self, ops: &[Op]) -> Result<u64, StoreError> {
        self.wal.wait_all()?;
        let next = new_epoch();
        self.apply(ops, Durability::Immediate, Some(next))?;
        let n = self.wal.skip();
        self.applied.store(n, Ordering::Release);
        self.wal.reset(next);
        Ok(n)
    }

    /// Applies `ops` in one redb transaction of `durability`; `next_epoch` records the epoch
    /// of the log's frames from now on in the same transaction.
    fn apply(
        &self,
        ops: &[Op],
        durability: Durability,
        next_epoch: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| self.err("writing to", e))?;
        tx.set_durability(durability)
            .map_err(|e| self.err("writing to", e))?;
        {
            // The tables this commit touches, each opened once (a commit names a handful).
            let mut names: Vec<Table> = Vec::new();
            for op in ops {
                let t = op.table();
                if !names.contains(&t) {
                    names.push(t);
                }
            }
            let mut tables = Vec::with_capacity(names.len());
            for table in &names {
                tables.push(
                    tx.open_table(definition(*table))
                        .map_err(|e| self.err("writing to", e))?,
                );
            }
            let index = |t: Table| names.iter().position(|x| *x == t).expect("a table");
            // Deletes wait, per table, until something else touches that table's existing
            // keys, and then go in one sorted pass: acknowledged messages are mostly runs of
            // consecutive sequence numbers of a session, and redb's range cursor removes a run
            // for much less than one descent of the tree per key. An insert never waits for
            // them (its key is new by contract, so no pending delete can concern it).
            let mut deferred: Vec<Vec<&[u8]>> = vec![Vec::new(); names.len()];
            for op in ops {
                match op {
                    Op::Insert { table, key, value } => {
                        tables[index(*table)]
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(|e| self.err("writing to", e))?;
                    }
                    Op::Put { table, key, value } => {
                        let t = index(*table);
                        self.delete_keys(&mut tables[t], &mut deferred[t])?;
                        tables[t]
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(|e| self.err("writing to", e))?;
                    }
                    Op::Delete { table, key } => deferred[index(*table)].push(key.as_slice()),
                    Op::DeletePrefix { table, prefix } => {
                        let t = index(*table);
                        self.delete_keys(&mut tables[t], &mut deferred[t])?;
                        match prefix_end(prefix) {
                            Some(end) => {
                                tables[t].retain_in(prefix.as_slice()..end.as_slice(), |_, _| false)
                            }
                            None => tables[t].retain_in(prefix.as_slice().., |_, _| false),
                        }
                        .map_err(|e| self.err("writing to", e))?;
                    }
                }
            }
            for (t, keys) in deferred.iter_mut().enumerate() {
                self.delete_keys(&mut tables[t], keys)?;
            }
        }
        if let Some(epoch) = next_epoch {
            let mut t = tx
                .open_table(definition(WAL_META))
                .map_err(|e| self.err("writing to", e))?;
            t.insert(EPOCH_KEY, epoch.to_be_bytes().as_slice())
                .map_err(|e| self.err("writing to", e))?;
            if self.wal.policy().relaxed() {
                t.insert(RELAXED_KEY, [1u8].as_slice())
                    .map_err(|e| self.err("writing to", e))?;
            } else {
                t.remove(RELAXED_KEY)
                    .map_err(|e| self.err("writing to", e))?;
            }
        }
        tx.commit().map_err(|e| self.err("committing to", e))
    }

    /// Removes `keys` (in any order, duplicates allowed) and empties the list.
    fn delete_keys(
        &self,
        t: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        keys: &mut Vec<&[u8]>,
    ) -> Result<(), StoreError> {
        keys.sort_unstable();
        keys.dedup();
        for cluster in clusters(keys) {
            if let [key] = cluster {
                t.remove(*key).map_err(|e| self.err("writing to", e))?;
            } else {
                t.retain_in(cluster[0]..=cluster[cluster.len() - 1], |k, _| {
                    cluster.binary_search(&k).is_err()
                })
                .map_err(|e| self.err("writing to", e))?;
            }
        }
        keys.clear();
        Ok(())
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Engine(format!("{what} {}: {e}", self.path.display()))
    }

    /// When the store's log is synced.
    pub fn policy(&self) -> SyncPolicy {
        self.wal.policy()
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Redb {
    /// A clean stop absorbs the log, so the next start has nothing to replay.
    fn drop(&mut self) {
        if self.wal.written() > 0 {
            if let Err(e) = self.checkpoint(&[]) {
                tracing::warn!(error = %e, "the log was not absorbed at close; it is replayed at the next start");
            }
        }
    }
}

/// The first key after every key that starts with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Engine for Redb {
    fn reader(&self) -> Option<Arc<dyn Reader>> {
        Some(Arc::new(RedbReader {
            db: self.db.clone(),
            path: self.path.clone(),
        }))
    }

    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let n = self.start(ops)?.unwrap_or(0);
        self.wal.wait_for(n)
    }

    fn start(&mut self, ops: &[Op]) -> Result<Option<u64>, StoreError> {
        if self.wal.written() >= CHECKPOINT_BYTES {
            return self.checkpoint(ops).map(Some);
        }
        let n = self.wal.append(ops)?;
        // redb takes the ops while the log's frame is being synced; readers see them at once,
        // and the commit's acknowledgements go out once the frame (and every one before it)
        // is durable and applied.
        self.apply(ops, Durability::None, None)?;
        // Stored before the log's state is read (under its lock) again: a sync thread that
        // read the old value has published its frame there, and the writer completes it.
        self.applied.store(n, Ordering::Release);
        Ok(Some(n))
    }

    fn durable(&self) -> Result<u64, StoreError> {
        Ok(self
            .wal
            .durable()?
            .min(self.applied.load(Ordering::Acquire)))
    }

    fn max_in_flight(&self) -> u64 {
        crate::wal::DEPTH
    }

    fn on_durable(&mut self, f: crate::engine::OnDurable) {
        let applied = self.applied.clone();
        self.wal.on_durable(Arc::new(move |synced| {
            f(synced.map(|s| s.min(applied.load(Ordering::Acquire))))
        }));
    }

    fn scan(&self, table: Table, each: &mut Visit<'_>) -> Result<(), StoreError> {
        // redb checks a cleanly closed file only as it reads it, and a damaged page can panic
        // inside it: that is a damaged store, reported with its file like any other error.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let tx = self.db.begin_read().map_err(|e| self.err("reading", e))?;
            let t = match tx.open_table(definition(table)) {
                Ok(t) => t,
                // Never written: empty.
                Err(TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(self.err("reading", e)),
            };
            for item in t.iter().map_err(|e| self.err("reading", e))? {
                let (k, v) = item.map_err(|e| self.err("reading", e))?;
                each(k.value(), v.value())?;
            }
            Ok(())
        }))
        .unwrap_or_else(|_| Err(self.err("damaged store", "a page could not be read")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: Table = Table::new("messages");
    const RETAINED: Table = Table::new("retained");
    const SESSIONS: Table = Table::new("sessions");

    fn put(table: Table, key: &[u8], value: &[u8]) -> Op {
        Op::Put {
            table,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn keys(e: &Redb, table: Table) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        e.scan(table, &mut |k, _| {
            out.push(k.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn commits_survive_reopening_and_prefixes_delete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut e = open(dir.path()).unwrap();
            e.commit(&[
                put(MESSAGES, b"a\x01", b"1"),
                put(MESSAGES, b"a\x02", b"2"),
                put(MESSAGES, b"b\x01", b"3"),
                put(MESSAGES, b"a\xff\xff", b"4"),
                put(RETAINED, b"t", b"r"),
            ])
            .unwrap();
            e.commit(&[
                Op::DeletePrefix {
                    table: MESSAGES,
                    prefix: b"a".to_vec(),
                },
                Op::Delete {
                    table: RETAINED,
                    key: b"t".to_vec(),
                },
            ])
            .unwrap();
        }
        let e = open(dir.path()).unwrap();
        assert_eq!(keys(&e, MESSAGES), vec![b"b\x01".to_vec()]);
        // The reader sees commits made after it was taken, by range.
        let mut e = e;
        let reader = e.reader().expect("redb reads");
        e.commit(&[put(MESSAGES, b"b\x02", b"5"), put(MESSAGES, b"c", b"6")])
            .unwrap();
        let mut seen = Vec::new();
        reader
            .range(MESSAGES, b"b", b"c", &mut |k, v| {
                seen.push((k.to_vec(), v.to_vec()));
                true
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"b\x01".to_vec(), b"3".to_vec()),
                (b"b\x02".to_vec(), b"5".to_vec())
            ]
        );
        reader
            .range(Table::new("never"), b"", b"z", &mut |_, _| panic!("empty"))
            .unwrap();
        assert!(keys(&e, RETAINED).is_empty());
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn a_crash_keeps_what_the_log_synced() {
        // The redb file as of its last durable commit, and the log as synced after it: what a
        // machine that lost power leaves behind.
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        {
            let mut e = open(dir.path()).unwrap();
            e.commit(&[put(MESSAGES, b"durable", b"0")]).unwrap();
            e.checkpoint(&[]).unwrap();
            std::fs::copy(dir.path().join(FILE_NAME), crashed.path().join(FILE_NAME)).unwrap();
            e.commit(&[
                put(MESSAGES, b"a", b"1"),
                put(MESSAGES, b"b", b"2"),
                put(SESSIONS, b"s", b"x"),
            ])
            .unwrap();
            e.commit(&[
                Op::Delete {
                    table: MESSAGES,
                    key: b"a".to_vec(),
                },
                Op::DeletePrefix {
                    table: MESSAGES,
                    prefix: b"dur".to_vec(),
                },
                put(MESSAGES, b"c", b"3"),
            ])
            .unwrap();
            // Not yet absorbed by redb: only the log has these.
            assert!(e.wal.written() > 0);
            std::fs::copy(
                dir.path().join(crate::wal::WAL_FILE),
                crashed.path().join(crate::wal::WAL_FILE),
            )
            .unwrap();
        }
        let e = open(crashed.path()).unwrap();
        assert_eq!(keys(&e, MESSAGES), vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(keys(&e, SESSIONS), vec![b"s".to_vec()]);
        assert_eq!(e.wal.written(), 0);
        drop(e);
        // Replayed once: the next start finds the same state, and new commits on top.
        let mut e = open(crashed.path()).unwrap();
        assert_eq!(keys(&e, MESSAGES), vec![b"b".to_vec(), b"c".to_vec()]);
        e.commit(&[put(MESSAGES, b"d", b"4")]).unwrap();
        drop(e);
        let e = open(crashed.path()).unwrap();
        assert_eq!(keys(&e, MESSAGES).len(), 3);
    }

    #[test]
    fn the_log_is_absorbed_when_it_fills() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = open(dir.path()).unwrap();
        let value = vec![1u8; 1 << 20];
        let before = read_epoch(&e.db).unwrap();
        let mut n = 0u32;
        while e.wal.written() < CHECKPOINT_BYTES {
            e.commit(&[put(MESSAGES, &n.to_be_bytes(), &value)])
                .unwrap();
            n += 1;
        }
        e.commit(&[put(MESSAGES, b"last", b"")]).unwrap();
        assert_eq!(e.wal.written(), 0);
        assert_ne!(read_epoch(&e.db).unwrap(), before);
        assert_eq!(read_epoch(&e.db).unwrap(), (Some(e.wal.epoch()), false));
        assert_eq!(keys(&e, MESSAGES).len(), n as usize + 1);
    }

    #[test]
    fn runs_of_deletes_remove_exactly_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = open(dir.path()).unwrap();
        let key = |s: u8, n: u64| {
            let mut k = vec![s];
            k.extend_from_slice(&n.to_be_bytes());
            k
        };
        let mut ops = Vec::new();
        for n in 0..200 {
            for s in [1u8, 2] {
                ops.push(put(MESSAGES, &key(s, n), b"m"));
            }
        }
        // A key of another shape inside session 1's range must survive.
        ops.push(put(
            MESSAGES,
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x05x",
            b"odd",
        ));
        e.commit(&ops).unwrap();
        let del = |s: u8, n: u64| Op::Delete {
            table: MESSAGES,
            key: key(s, n),
        };
        // Out of order, duplicated, with gaps, two sessions interleaved, one absent key.
        let mut dels: Vec<Op> = (0..50).rev().map(|n| del(1, n)).collect();
        dels.extend((0..200).step_by(3).map(|n| del(2, n)));
        dels.extend([del(1, 7), del(1, 120), del(1, 122), del(3, 1)]);
        // Order still holds for keys that are written again: deleted then put stays, put then
        // deleted goes, and an insert between deletes does not split them.
        let session = |k: &[u8]| Op::Delete {
            table: SESSIONS,
            key: k.to_vec(),
        };
        dels.splice(
            10..10,
            [
                session(b"kept"),
                put(SESSIONS, b"kept", b"new"),
                put(SESSIONS, b"gone", b"x"),
                session(b"gone"),
                put(MESSAGES, &key(1, 500), b"late"),
            ],
        );
        e.commit(&[put(SESSIONS, b"kept", b"old")]).unwrap();
        e.commit(&dels).unwrap();
        let mut kept = Vec::new();
        e.scan(SESSIONS, &mut |k, v| {
            kept.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(kept, vec![(b"kept".to_vec(), b"new".to_vec())]);
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for n in 50..200 {
            if n != 120 && n != 122 {
                expected.push(key(1, n));
            }
        }
        expected.push(b"\x01\x00\x00\x00\x00\x00\x00\x00\x05x".to_vec());
        expected.push(key(1, 500));
        for n in 0..200 {
            if n % 3 != 0 {
                expected.push(key(2, n));
            }
        }
        expected.sort();
        assert_eq!(keys(&e, MESSAGES), expected);
    }

    #[test]
    fn a_mostly_free_file_is_compacted_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let mut e = open(dir.path()).unwrap();
            let value = vec![7u8; 10_000];
            for chunk in 0..20u32 {
                let ops: Vec<Op> = (0..100u32)
                    .map(|i| put(MESSAGES, &(chunk * 100 + i).to_be_bytes(), &value))
                    .collect();
                e.commit(&ops).unwrap();
            }
            e.commit(&[Op::DeletePrefix {
                table: MESSAGES,
                prefix: Vec::new(),
            }])
            .unwrap();
        }
        let big = std::fs::metadata(&path).unwrap().len();
        assert!(big > 10_000_000, "{big}");
        let e = open_with(dir.path(), 1024 * 1024, SyncPolicy::Always).unwrap();
        let small = std::fs::metadata(&path).unwrap().len();
        assert!(small * 4 < big, "{big} -> {small}");
        assert!(keys(&e, MESSAGES).is_empty());
    }

    #[test]
    fn a_second_opener_and_a_damaged_file_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path()).unwrap();
        let err = open(dir.path())
            .err()
            .expect("the file is locked")
            .to_string();
        assert!(err.contains(FILE_NAME), "{err}");
        drop(first);

        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        for b in bytes.iter_mut().take(4096) {
            *b = 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
        let err = open(dir.path()).err().expect("a damaged file").to_string();
        assert!(err.contains(FILE_NAME), "{err}");
    }

    #[test]
    fn damage_in_the_middle_of_a_file_is_an_error_when_scanned() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut e = open(dir.path()).unwrap();
            let value = vec![3u8; 100];
            for chunk in 0..20u32 {
                let ops: Vec<Op> = (0..1000u32)
                    .map(|i| put(MESSAGES, &(chunk * 1000 + i).to_be_bytes(), &value))
                    .collect();
                e.commit(&ops).unwrap();
            }
        }
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 4096] {
            *b ^= 0xa5;
        }
        std::fs::write(&path, bytes).unwrap();
        // Either opening or reading everything (as the broker does at startup) fails, naming
        // the file.
        let err = match open(dir.path()) {
            Err(e) => e.to_string(),
            Ok(e) => {
                let mut n = 0;
                let scanned = e.scan(MESSAGES, &mut |_, _| {
                    n += 1;
                    Ok(())
                });
                scanned.expect_err("damage is found").to_string()
            }
        };
        assert!(err.contains(FILE_NAME), "{err}");
    }
    #[test]
    fn each_epoch_records_the_sync_policy_its_replay_needs() {
        let dir = tempfile::tempdir().unwrap();
        let every = SyncPolicy::Every(std::time::Duration::from_secs(60));
        let relaxed = |dir: &Path| {
            let db = Database::open(dir.join(FILE_NAME)).unwrap();
            read_epoch(&db).unwrap().1
        };
        {
            let mut e = open_synced(dir.path(), every).unwrap();
            // Done without waiting for a sync, and visible at once.
            e.commit(&[put(MESSAGES, b"a", b"1")]).unwrap();
            assert_eq!(keys(&e, MESSAGES), vec![b"a".to_vec()]);
        }
        assert!(relaxed(dir.path()));
        {
            let e = open(dir.path()).unwrap();
            assert_eq!(keys(&e, MESSAGES), vec![b"a".to_vec()]);
        }
        assert!(!relaxed(dir.path()));
    }
}
