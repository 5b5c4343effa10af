//! The write-ahead log in front of redb.
//!
//! A durable redb commit costs two fsyncs and rewrites the tree's pages (0.5 to 1 ms here), and
//! every acknowledgement waits for one. With the log, a commit is one append to a file whose
//! blocks already exist plus one `fdatasync` (about 120 µs on the same disk), done by helper
//! threads while the writer applies the same operations to redb without syncing
//! (`Durability::None`, visible to readers at once). Every [`CHECKPOINT_BYTES`] of log, one
//! durable redb commit takes everything in and the log starts over.
//!
//! Commits are pipelined: the writer appends the next frame while up to [`DEPTH`] frames
//! before it are still being synced, each sync on its own thread (the disk merges concurrent
//! flushes: measured here, one thread syncing 40 KB writes managed 3,400 syncs/s, four threads
//! 12,000). A frame counts as durable once a sync that started after it was written returns
//! (`fdatasync` waits for every page of the file written before it), so frames become durable
//! in order and [`Wal::durable`] is a number: the last durable frame.
//!
//! The file, `junction.wal`, is a sequence of frames, each the operations of one commit:
//!
//! ```text
//! u32 length of the body | u32 CRC-32 of what follows, body included | u64 epoch
//! | u64 epoch before it | u64 number of the frame in its epoch (from 1) | body
//! | zeros to a multiple of 8 bytes
//! body: ops, each  u8 kind (1 insert, 2 put, 3 delete, 4 delete prefix)
//!                  u8 table name length, name, u32 key length, key,
//!                  for inserts and puts: u32 value length, value
//! ```
//!
//! Integers are little-endian. The epoch names one run of the log between checkpoints: each
//! checkpoint draws a new random one and records it in redb in the same durable commit, and at
//! startup only frames of the recorded epoch are replayed, in order, up to the first frame
//! that is torn or of another epoch (the file is reused from its start after each checkpoint,
//! so older frames follow the newest). Frames after a torn one are never replayed: none of
//! them was acknowledged, since acknowledgements wait for every frame before their own. A frame
//! also names the epoch before its own: when the
//! log's first frame is whole and follows the epoch redb recorded, redb has lost its newest
//! durable commit (a damaged file falls back to the one before) and the store is refused
//! rather than served without what that commit held. Being random, an epoch cannot be guessed
//! by a client whose message bodies land in the log, so no body can pass for a frame.
//!
//! Frame `n` is written only once frame `n - DEPTH` is durable, so after a crash whole frames
//! can follow a torn one only within [`DEPTH`] numbers of it; one further on means the log
//! was damaged, and the store is refused. Logs written before frames were numbered (a 24-byte
//! header without the number, one frame in flight at a time) are still replayed.
//!
//! With [`SyncPolicy::Every`] (`jetstream { sync_interval }`, nats-server's trade-off) a frame
//! counts as done once it is written: the operating system holds it, so a crash of the process
//! loses nothing, but a crash of the machine may lose what was written since the last sync. One
//! thread syncs the log at that interval. Frames then reach the disk in any order, so the replay
//! of such an epoch stops at the first torn frame without calling whole frames after it damage.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{OnDurable, Op, StoreError, Table};
use crate::sync::Lock;

/// The log's file name inside the data directory.
pub const WAL_FILE: &str = "junction.wal";

/// Log written since the last checkpoint that triggers the next one.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// Frames that may be written and not yet durable at once (and threads that sync them).
pub const DEPTH: u64 = 4;

/// The file grows by this much at a time, written with zeros and synced once, so that the
/// appends of a commit never change the file's size (an `fdatasync` then writes only data).
const GROW_BYTES: u64 = 16 * 1024 * 1024;

/// When the log is synced, and so when a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// A commit is done once its frame is synced (`sync_interval: always`; Junction's default).
    #[default]
    Always,
    /// A commit is done once its frame is written; the log is synced at least this often
    /// (`sync_interval: 2m`, nats-server's default).
    Every(Duration),
}

impl SyncPolicy {
    /// Whether a commit is done before it is synced.
    pub fn relaxed(self) -> bool {
        matches!(self, SyncPolicy::Every(_))
    }
}

const HEADER: usize = 32;
/// The header of logs written before frames were numbered.
const HEADER_V1: usize = 24;

const INSERT: u8 = 1;
const PUT: u8 = 2;
const DELETE: u8 = 3;
const DELETE_PREFIX: u8 = 4;

/// The log: where the next frame goes, the epoch it carries, and the threads that sync it.
pub struct Wal {
    file: File,
    path: PathBuf,
    /// Where the next frame is written.
    pos: u64,
    /// The file's length (zeros past `pos`).
    len: u64,
    epoch: u64,
    /// The epoch before `epoch`, which each frame names.
    prev: u64,
    /// The last frame written, counted over the process's life (never reset).
    last: u64,
    /// The frame before the epoch's first (frame numbers in the file count from it).
    epoch_base: u64,
    buf: Vec<u8>,
    syncs: Arc<Syncs>,
    policy: SyncPolicy,
}

/// What the sync threads share with the log.
struct Syncs {
    state: Mutex<SyncState>,
    /// A frame was written, or the log is closing.
    work: Condvar,
    /// Frames became durable, or a sync failed.
    done: Condvar,
    on_durable: Mutex<Option<OnDurable>>,
}

#[derive(Default)]
struct SyncState {
    /// The last frame written.
    written: u64,
    /// The last frame a sync has started for.
    claimed: u64,
    /// The last frame known durable.
    durable: u64,
    /// The first failed sync: every later commit fails with it.
    failed: Option<String>,
    closed: bool,
}

impl Syncs {
    fn start(file: &File, policy: SyncPolicy) -> io::Result<Arc<Syncs>> {
        let syncs = Arc::new(Syncs {
            state: Mutex::new(SyncState::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            on_durable: Mutex::new(None),
        });
        if let SyncPolicy::Every(every) = policy {
            let file = file.try_clone()?;
            let s = syncs.clone();
            std::thread::Builder::new()
                .name("junction-wal-sync".into())
                .spawn(move || s.run_every(&file, every))?;
            return Ok(syncs);
        }
        for i in 0..DEPTH {
            let file = file.try_clone()?;
            let s = syncs.clone();
            std::thread::Builder::new()
                .name(format!("junction-wal-sync-{i}"))
                .spawn(move || s.run(&file))?;
        }
        Ok(syncs)
    }

    /// One sync thread: syncs whatever was written since the last sync started, until closed.
    fn run(&self, file: &File) {
        loop {
            let target = {
                let mut st = self.state.locked();
                while st.claimed >= st.written && !st.closed {
                    st = self
                        .work
                        .wait(st)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if st.claimed >= st.written {
                    return;
                }
                st.claimed = st.written;
                st.written
            };
            let synced = file.sync_data();
            let durable = {
                let mut st = self.state.locked();
                match synced {
                    Ok(()) => st.durable = st.durable.max(target),
                    Err(e) => {
                        st.failed.get_or_insert_with(|| e.to_string());
                    }
                }
                st.failed.is_none().then_some(st.durable)
            };
            self.done.notify_all();
            let notify = self.on_durable.locked().clone();
            if let Some(f) = notify {
                f(durable);
            }
        }
    }

    /// The one sync thread of [`SyncPolicy::Every`]: syncs what was written since its last
    /// sync, every `every`, until closed. A failed sync fails every later commit, as with
    /// [`Syncs::run`].
    fn run_every(&self, file: &File, every: Duration) {
        // A year stands for longer intervals, which a clock could not add to now.
        let every = every.min(Duration::from_secs(365 * 24 * 3600));
        let mut synced = 0;
        loop {
            let target = {
                let mut st = self.state.locked();
                let deadline = Instant::now() + every;
                loop {
                    let now = Instant::now();
                    if st.closed || now >= deadline {
                        break;
                    }
                    st = self
                        .work
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                if st.closed {
                    return;
                }
                st.written
            };
            if target == synced {
                continue;
            }
            if let Err(e) = file.sync_data() {
                self.state
                    .locked()
                    .failed
                    .get_or_insert_with(|| e.to_string());
                self.done.notify_all();
                let notify = self.on_durable.locked().clone();
                if let Some(f) = notify {
                    f(None);
                }
                return;
            }
            synced = target;
        }
    }

    /// Waits until frame `n` is durable.
    fn wait_for(&self, n: u64) -> Result<(), String> {
        let mut st = self.state.locked();
        loop {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.durable >= n {
                return Ok(());
            }
            st = self
                .done
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.syncs.state.locked().closed = true;
        self.syncs.work.notify_all();
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir` and reads the frames of `epoch` it holds (`None`: a
    /// new store, nothing to read).
    pub fn open(dir: &Path, epoch: Option<u64>) -> Result<(Wal, Vec<Op>), StoreError> {
        Wal::open_with(dir, epoch, false, SyncPolicy::Always)
    }

    /// [`Wal::open`], with the frames of `epoch` replayed as a log written with a relaxed
    /// [`SyncPolicy`] when `relaxed` (see the module's documentation), and new frames written
    /// under `policy`.
    pub fn open_with(
        dir: &Path,
        epoch: Option<u64>,
        relaxed: bool,
        policy: SyncPolicy,
    ) -> Result<(Wal, Vec<Op>), StoreError> {
        let path = dir.join(WAL_FILE);
        let fail = |e: &dyn std::fmt::Display| {
            StoreError::Engine(format!("cannot open the log {}: {e}", path.display()))
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fail(&e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| fail(&e))?;
        if let Some(epoch) = epoch {
            let first =
                frame_at(&bytes, 0, None, HEADER).or_else(|| frame_at(&bytes, 0, None, HEADER_V1));
            if let Some(f) = first {
                if f.epoch != epoch && f.prev == epoch {
                    return Err(fail(
                        &"the log follows a newer durable commit than the store \
                         file holds (the file lost its newest commit): the store is damaged",
                    ));
                }
            }
        }
        let ops = match epoch {
            Some(epoch) => {
                let (ops, left_out) =
                    decode_frames_in(&bytes, epoch, relaxed).map_err(|e| fail(&e))?;
                if left_out > 0 {
                    tracing::warn!(
                        frames = left_out,
                        log = %path.display(),
                        "the log was written with sync_interval and a frame of it is torn: the \
                         whole frames after it (what a crash of the machine left of writes never \
                         synced) are left out"
                    );
                }
                ops
            }
            None => Vec::new(),
        };
        let len = bytes.len() as u64;
        let syncs = Syncs::start(&file, policy).map_err(|e| fail(&e))?;
        Ok((
            Wal {
                file,
                path,
                pos: 0,
                len,
                epoch: epoch.unwrap_or(0),
                prev: 0,
                last: 0,
                epoch_base: 0,
                buf: Vec::new(),
                syncs,
                policy,
            },
            ops,
        ))
    }

    /// Starts the log over for `epoch`. Everything before must be in redb durably, and every
    /// frame written durable ([`Wal::wait_all`]).
    pub fn reset(&mut self, epoch: u64) {
        self.prev = self.epoch;
        self.epoch = epoch;
        self.pos = 0;
        self.epoch_base = self.last;
    }

    /// The epoch the log's frames carry now.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When the log is synced.
    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// Bytes of log since the last checkpoint.
    pub fn written(&self) -> u64 {
        self.pos
    }

    /// Calls `f` from a sync thread whenever frames become durable (or a sync fails), with the
    /// last durable frame.
    pub fn on_durable(&self, f: OnDurable) {
        *self.syncs.on_durable.locked() = Some(f);
    }

    /// Writes `ops` as one frame and starts syncing it; returns the frame's number, which
    /// [`Wal::durable`] reaches once it is durable. Waits first while [`DEPTH`] frames are
    /// still being synced.
    pub fn append(&mut self, ops: &[Op]) -> Result<u64, StoreError> {
        let n = self.last + 1;
        self.syncs
            .wait_for(n.saturating_sub(DEPTH))
            .map_err(|e| self.err(e))?;
        encode_frame(
            self.epoch,
            self.prev,
            n - self.epoch_base,
            ops,
            &mut self.buf,
        );
        let end = self.pos + self.buf.len() as u64;
        if end > self.len {
            // Growing syncs the file: let the frames in flight finish first.
            self.wait_all()?;
            let grown = end.div_ceil(GROW_BYTES) * GROW_BYTES;
            self.grow(grown).map_err(|e| self.err(e))?;
        }
        self.file
            .write_all_at(&self.buf, self.pos)
            .map_err(|e| self.err(e))?;
        self.pos = end;
        self.last = n;
        let mut st = self.syncs.state.locked();
        st.written = n;
        if self.policy.relaxed() {
            // Done once written; the sync thread takes it at its interval.
            st.claimed = n;
            st.durable = n;
        } else {
            drop(st);
            self.syncs.work.notify_one();
        }
        Ok(n)
    }

    /// The last durable frame (every frame up to it is durable), or the error of a failed sync.
    pub fn durable(&self) -> Result<u64, StoreError> {
        let st = self.syncs.state.locked();
        match &st.failed {
            Some(e) => Err(self.err(e)),
            None => Ok(st.durable),
        }
    }

    /// Waits until every frame written is durable.
    pub fn wait_all(&self) -> Result<(), StoreError> {
        self.wait_for(self.last)
    }

    /// Waits until frame `n` (and every one before it) is durable.
    pub fn wait_for(&self, n: u64) -> Result<(), StoreError> {
        self.syncs.wait_for(n).map_err(|e| self.err(e))
    }

    /// Counts a commit made durable without the log (a checkpoint) as a frame, so that frame
    /// numbers keep naming commits in order; returns its number. Every frame before must be
    /// durable.
    pub fn skip(&mut self) -> u64 {
        self.last += 1;
        let mut st = self.syncs.state.locked();
        st.written = self.last;
        st.claimed = st.claimed.max(self.last);
        st.durable = st.durable.max(self.last);
        self.last
    }

    fn grow(&mut self, to: u64) -> io::Result<()> {
        let zeros = vec![0u8; 1024 * 1024];
        let mut at = self.len;
        while at < to {
            let n = (to - at).min(zeros.len() as u64);
            self.file.write_all_at(&zeros[..n as usize], at)?;
            at += n;
        }
        self.file.sync_all()?;
        self.len = to;
        Ok(())
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Engine(format!("writing to the log {}: {e}", self.path.display()))
    }
}

/// Appends frame `n` of `ops` for `epoch` (following `prev`) to an emptied `buf`.
fn encode_frame(epoch: u64, prev: u64, n: u64, ops: &[Op], buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(HEADER, 0);
    encode_body(ops, buf);
    let body = (buf.len() - HEADER) as u32;
    buf[8..16].copy_from_slice(&epoch.to_le_bytes());
    buf[16..24].copy_from_slice(&prev.to_le_bytes());
    buf[24..32].copy_from_slice(&n.to_le_bytes());
    seal(buf, body);
}

/// A frame as logs written before frames were numbered hold it (for tests of their replay).
#[cfg(test)]
fn encode_frame_v1(epoch: u64, prev: u64, ops: &[Op], buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(HEADER_V1, 0);
    encode_body(ops, buf);
    let body = (buf.len() - HEADER_V1) as u32;
    buf[8..16].copy_from_slice(&epoch.to_le_bytes());
    buf[16..24].copy_from_slice(&prev.to_le_bytes());
    seal(buf, body);
}

fn encode_body(ops: &[Op], buf: &mut Vec<u8>) {
    for op in ops {
        let (kind, table, key, value) = match op {
            Op::Insert { table, key, value } => (INSERT, table, key, Some(value)),
            Op::Put { table, key, value } => (PUT, table, key, Some(value)),
            Op::Delete { table, key } => (DELETE, table, key, None),
            Op::DeletePrefix { table, prefix } => (DELETE_PREFIX, table, prefix, None),
        };
        let name = table.name().as_bytes();
        buf.push(kind);
        buf.push(u8::try_from(name.len()).expect("table names are short constants"));
        buf.extend_from_slice(name);
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(key);
        if let Some(v) = value {
            buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
            buf.extend_from_slice(v);
        }
    }
}

/// Writes the body's length and the checksum of everything after it, and pads to 8 bytes.
fn seal(buf: &mut Vec<u8>, body: u32) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[8..]);
    buf[0..4].copy_from_slice(&body.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    buf.resize(buf.len().next_multiple_of(8), 0);
}

/// The ops of the frames of `epoch` at the start of `bytes`, in order, up to the first frame
/// that is torn, of another epoch, or past the end. Frames after a torn one may be whole only
/// within [`DEPTH`] numbers of it (they were being synced with it); a whole frame of `epoch`
/// further on is damage, an error, and so is a frame whose checksum holds but whose body does
/// not parse or whose number is not the next. A log of unnumbered frames had one frame in
/// flight at a time: only its last frame can be torn.
///
/// For an epoch written with a relaxed [`SyncPolicy`] (`relaxed`), whole frames after a torn
/// one are what a crash of the machine leaves, not damage: they are left out, and counted (the
/// second number).
fn decode_frames_in(bytes: &[u8], epoch: u64, relaxed: bool) -> Result<(Vec<Op>, usize), String> {
    let v1_at = |i: usize| frame_at(bytes, i, Some(epoch), HEADER_V1).is_some();
    let header = if frame_at(bytes, 0, Some(epoch), HEADER).is_some() {
        HEADER
    } else if (0..bytes.len()).step_by(8).any(v1_at) {
        HEADER_V1
    } else {
        HEADER
    };
    let mut ops = Vec::new();
    let mut at = 0usize;
    // The number of the frame expected next: an epoch's frames count from 1.
    let mut next = 1u64;
    while let Some(f) = frame_at(bytes, at, Some(epoch), header) {
        if header == HEADER && f.n != next {
            return Err(format!(
                "the log is damaged: the frame at byte {at} is number {} where {next} was \
                 expected",
                f.n
            ));
        }
        next += 1;
        decode_body(f.body, &mut ops)
            .map_err(|e| format!("the frame at byte {at} is damaged: {e}"))?;
        at += (header + f.body.len()).next_multiple_of(8);
    }
    // Frames start at multiples of 8; `next` is the torn frame's number.
    let mut whole_after = (at + 8..bytes.len())
        .step_by(8)
        .filter_map(|i| Some((i, frame_at(bytes, i, Some(epoch), header)?)));
    if relaxed {
        return Ok((ops, whole_after.count()));
    }
    let later = whole_after
        .find(|(_, f)| header == HEADER_V1 || f.n <= next || f.n >= next.saturating_add(DEPTH));
    if let Some((later, _)) = later {
        return Err(format!(
            "the log is damaged: the frame at byte {at} is unreadable but a later one, at byte \
             {later}, is whole"
        ));
    }
    Ok((ops, 0))
}

/// A whole frame read from the log.
struct Frame<'a> {
    epoch: u64,
    /// The epoch before its own.
    prev: u64,
    /// Its number in its epoch (0 in an unnumbered frame).
    n: u64,
    body: &'a [u8],
}

/// The whole frame at byte `at` (of `epoch` when given) with a header of `header` bytes.
fn frame_at(bytes: &[u8], at: usize, epoch: Option<u64>, header: usize) -> Option<Frame<'_>> {
    let head = bytes.get(at..at.checked_add(header)?)?;
    let long = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let (own, prev) = (long(8), long(16));
    if epoch.is_some_and(|e| e != own) {
        return None;
    }
    let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    let start = at + header;
    let body = bytes.get(start..start.checked_add(word(0) as usize)?)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[8..]);
    crc.update(body);
    (crc.finalize() == word(4)).then_some(Frame {
        epoch: own,
        prev,
        n: if header == HEADER { long(24) } else { 0 },
        body,
    })
}

/// The [`Table`] a name read from the log stands for, made once per process: a [`Table`]
/// names itself with a `&'static str`, and the names in a log are the handful the store's
/// users declare.
fn table_named(name: &[u8]) -> Result<Table, &'static str> {
    static TABLES: std::sync::OnceLock<std::sync::Mutex<HashMap<Vec<u8>, Table>>> =
        std::sync::OnceLock::new();
    let mut tables = TABLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(t) = tables.get(name) {
        return Ok(*t);
    }
    let s = std::str::from_utf8(name).map_err(|_| "a table name is not UTF-8")?;
    let t = Table::new(Box::leak(s.to_owned().into_boxed_str()));
    tables.insert(name.to_vec(), t);
    Ok(t)
}

/// Frame `n` of `ops` for `epoch`, as the log writes it (for tests and fuzzing).
pub fn encode(epoch: u64, n: u64, ops: &[Op]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(epoch, epoch.wrapping_sub(1), n, ops, &mut buf);
    buf
}

/// The ops a log's bytes replay for `epoch`, as at startup (for tests and fuzzing); `relaxed`:
/// as the log of an epoch written with a relaxed [`SyncPolicy`].
pub fn decode(bytes: &[u8], epoch: u64, relaxed: bool) -> Result<Vec<Op>, String> {
    decode_frames_in(bytes, epoch, relaxed).map(|(ops, _)| ops)
}

fn decode_body(mut body: &[u8], ops: &mut Vec<Op>) -> Result<(), &'static str> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if b.len() < n {
            return Err("an op is cut short");
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn bytes(b: &mut &[u8]) -> Result<Vec<u8>, &'static str> {
        let n = u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")) as usize;
        Ok(take(b, n)?.to_vec())
    }
    while !body.is_empty() {
        let kind = take(&mut body, 1)?[0];
        let name_len = take(&mut body, 1)?[0] as usize;
        let table = table_named(take(&mut body, name_len)?)?;
        let key = bytes(&mut body)?;
        ops.push(match kind {
            INSERT => Op::Insert {
                table,
                key,
                value: bytes(&mut body)?,
            },
            PUT => Op::Put {
                table,
                key,
                value: bytes(&mut body)?,
            },
            DELETE => Op::Delete { table, key },
            DELETE_PREFIX => Op::DeletePrefix { table, prefix: key },
            _ => return Err("an op of unknown kind"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`decode_frames_in`] for a strict epoch.
    fn decode_frames(bytes: &[u8], epoch: u64) -> Result<Vec<Op>, String> {
        decode_frames_in(bytes, epoch, false).map(|(ops, _)| ops)
    }

    const T: Table = Table::new("t");
    const U: Table = Table::new("u");

    fn sample() -> Vec<Op> {
        vec![
            Op::Insert {
                table: T,
                key: vec![1, 2],
                value: b"one".to_vec(),
            },
            Op::Put {
                table: U,
                key: b"k".to_vec(),
                value: Vec::new(),
            },
            Op::Delete {
                table: T,
                key: vec![9],
            },
            Op::DeletePrefix {
                table: U,
                prefix: Vec::new(),
            },
        ]
    }

    fn body_len(frame: &[u8]) -> usize {
        u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize
    }

    /// A log of epoch 7 with frames 1 to `frames` (frame `n` holds `n` ops), then a frame of
    /// epoch 6; and where each frame of epoch 7 starts and how much of it the checksum covers.
    fn log(frames: u64) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut file = Vec::new();
        let mut buf = Vec::new();
        let mut at = Vec::new();
        for n in 1..=frames {
            let ops: Vec<Op> = sample().into_iter().cycle().take(n as usize).collect();
            encode_frame(7, 6, n, &ops, &mut buf);
            at.push((file.len(), HEADER + body_len(&buf)));
            file.extend_from_slice(&buf);
            assert_eq!(file.len() % 8, 0, "frames start at multiples of 8");
        }
        encode_frame(6, 5, 1, &sample(), &mut buf);
        file.extend_from_slice(&buf);
        (file, at)
    }

    /// Ops in frames 1 to `n` of [`log`].
    fn ops_up_to(n: u64) -> usize {
        (n * (n + 1) / 2) as usize
    }

    #[test]
    fn frames_round_trip_and_stop_at_a_torn_or_older_frame() {
        let frames = DEPTH + 2;
        let (file, at) = log(frames);
        let ops = decode_frames(&file, 7).unwrap();
        assert_eq!(ops.len(), ops_up_to(frames));
        assert_eq!(ops[1..3], sample()[..2]);
        // An older epoch's frame after the newest: not replayed.
        assert!(decode_frames(&file, 8).unwrap().is_empty());
        // Every cut of the last frame replays the ones before.
        let (last, last_checked) = at[at.len() - 1];
        for cut in last + 1..last + last_checked {
            let mut torn = file[..cut].to_vec();
            torn.extend_from_slice(&[0xa5; 40]);
            let replayed = decode_frames(&torn, 7).unwrap().len();
            assert_eq!(replayed, ops_up_to(frames - 1), "cut at {cut}");
        }
        // A flipped bit in a frame: torn, so replay stops before it, as long as the whole frames
        // after it are ones that could have been in flight with it (fewer than DEPTH numbers
        // on); a whole frame further on means the log was damaged.
        for (i, &(start, checked)) in at.iter().enumerate() {
            let torn_n = i as u64 + 1;
            for bit in [
                start,
                start + 5,
                start + 9,
                start + 17,
                start + 25,
                start + checked - 1,
            ] {
                let mut bad = file.clone();
                bad[bit] ^= 0x10;
                let got = decode_frames(&bad, 7);
                if frames >= torn_n + DEPTH {
                    let err = got.expect_err("damage");
                    assert!(err.contains("damaged"), "flip at {bit}: {err}");
                } else {
                    assert_eq!(got.unwrap().len(), ops_up_to(torn_n - 1), "flip at {bit}");
                }
            }
        }
    }

    #[test]
    fn a_whole_frame_out_of_order_is_damage() {
        let mut file = Vec::new();
        let mut buf = Vec::new();
        for n in [1, 3] {
            encode_frame(7, 6, n, &sample(), &mut buf);
            file.extend_from_slice(&buf);
        }
        let err = decode_frames(&file, 7).unwrap_err();
        assert!(err.contains("number 3 where 2"), "{err}");
        // An epoch's first frame is number 1.
        encode_frame(7, 6, 2, &sample(), &mut buf);
        let err = decode_frames(&buf, 7).unwrap_err();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn logs_of_unnumbered_frames_replay_with_their_own_rule() {
        let mut file = Vec::new();
        let mut buf = Vec::new();
        encode_frame_v1(7, 6, &sample(), &mut buf);
        file.extend_from_slice(&buf);
        let (one, one_checked) = (file.len(), HEADER_V1 + body_len(&buf));
        encode_frame_v1(7, 6, &sample()[..1], &mut buf);
        file.extend_from_slice(&buf);
        let two_checked = one + HEADER_V1 + body_len(&buf);
        assert_eq!(decode_frames(&file, 7).unwrap().len(), 5);
        // One frame was in flight at a time: a flip in the first with the second whole is
        // damage, a flip in the last is a torn write.
        for i in 0..one_checked {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            let err = decode_frames(&bad, 7).expect_err("damage");
            assert!(err.contains("damaged"), "flip at {i}: {err}");
        }
        for i in one..two_checked {
            let mut torn = file.clone();
            torn[i] ^= 0x10;
            assert_eq!(decode_frames(&torn, 7).unwrap().len(), 4, "flip at {i}");
        }
        // And a store file that lost its newest commit is still caught by them.
        let dir = tempfile::tempdir().unwrap();
        encode_frame_v1(8, 7, &sample(), &mut buf);
        std::fs::write(dir.path().join(WAL_FILE), &buf).unwrap();
        let err = Wal::open(dir.path(), Some(7)).err().expect("refused");
        assert!(err.to_string().contains("lost its newest commit"), "{err}");
        assert_eq!(Wal::open(dir.path(), Some(8)).unwrap().1, sample());
    }

    #[test]
    fn a_checked_frame_that_does_not_parse_is_damage() {
        let mut buf = Vec::new();
        encode_frame(1, 0, 1, &sample(), &mut buf);
        // Rewrite the first op's kind and fix the checksum: the body is whole but wrong.
        buf[HEADER] = 99;
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&buf[8..HEADER + len]);
        let sum = crc.finalize().to_le_bytes();
        buf[4..8].copy_from_slice(&sum);
        let err = decode_frames(&buf, 1).unwrap_err();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn appends_survive_reopening_and_a_reset_hides_older_frames() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, ops) = Wal::open(dir.path(), Some(3)).unwrap();
            assert!(ops.is_empty());
            assert_eq!(wal.append(&sample()).unwrap(), 1);
            assert_eq!(wal.append(&sample()[1..2]).unwrap(), 2);
            wal.wait_all().unwrap();
            assert_eq!(wal.durable().unwrap(), 2);
            assert!(wal.written() > 0);
        }
        let len = std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
        assert_eq!(len, GROW_BYTES);
        let (mut wal, ops) = Wal::open(dir.path(), Some(3)).unwrap();
        assert_eq!(ops.len(), 5);
        // A checkpoint takes a number; the new epoch's frames count from 1 again.
        assert_eq!(wal.skip(), 1);
        wal.reset(4);
        assert_eq!(wal.append(&sample()[2..3]).unwrap(), 2);
        wal.wait_all().unwrap();
        drop(wal);
        let (_, ops) = Wal::open(dir.path(), Some(4)).unwrap();
        assert_eq!(ops, sample()[2..3]);
        // Epoch 4 follows 3: a store file that says 3 lost the commit that started 4.
        let err = Wal::open(dir.path(), Some(3)).err().expect("refused");
        assert!(err.to_string().contains("lost its newest commit"), "{err}");
        // A log reset to 5 with nothing written yet: its first frame is 4's, which follows 3,
        // not 5: nothing to replay, nothing lost.
        let (mut wal, _) = Wal::open(dir.path(), Some(4)).unwrap();
        wal.reset(5);
        drop(wal);
        assert!(Wal::open(dir.path(), Some(5)).unwrap().1.is_empty());
    }

    #[test]
    fn frames_in_flight_become_durable_in_order_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), Some(3)).unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = seen.clone();
        wal.on_durable(Arc::new(move |durable| {
            c.fetch_max(
                durable.expect("no sync fails"),
                std::sync::atomic::Ordering::SeqCst,
            );
        }));
        let mut last = 0;
        for i in 0..50u64 {
            // Never more than DEPTH frames between what is written and what is durable.
            last = wal.append(&sample()).unwrap();
            assert_eq!(last, i + 1);
            assert!(last - wal.durable().unwrap() <= DEPTH);
        }
        wal.wait_all().unwrap();
        assert_eq!(wal.durable().unwrap(), last);
        // The last sync to finish said so (it may still be telling).
        for _ in 0..1000 {
            if seen.load(std::sync::atomic::Ordering::SeqCst) == last {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), last);
        drop(wal);
        let (_, ops) = Wal::open(dir.path(), Some(3)).unwrap();
        assert_eq!(ops.len(), 50 * sample().len());
    }
    #[test]
    fn a_relaxed_log_counts_frames_done_once_written_and_replays_them() {
        let dir = tempfile::tempdir().unwrap();
        // An interval short enough for its thread to sync several times meanwhile.
        let policy = SyncPolicy::Every(Duration::from_millis(1));
        let (mut wal, _) = Wal::open_with(dir.path(), Some(3), true, policy).unwrap();
        assert_eq!(wal.policy(), policy);
        for i in 1..=20u64 {
            assert_eq!(wal.append(&sample()).unwrap(), i);
            // Done at once: nothing waits for a sync.
            assert_eq!(wal.durable().unwrap(), i);
            std::thread::sleep(Duration::from_micros(300));
        }
        wal.wait_all().unwrap();
        drop(wal);
        let (_, ops) = Wal::open_with(dir.path(), Some(3), true, SyncPolicy::Always).unwrap();
        assert_eq!(ops.len(), 20 * sample().len());
    }

    #[test]
    fn a_relaxed_epoch_replays_up_to_its_first_torn_frame() {
        // Under a relaxed policy a crash of the machine may leave any unsynced frame unwritten:
        // whole frames after a hole are not damage there (they are in a strict log), and they
        // are not replayed, since what they hold may depend on what the hole held.
        let (mut file, mut buf) = (Vec::new(), Vec::new());
        for n in 1..=DEPTH + 3 {
            encode_frame(7, 6, n, &sample()[..1], &mut buf);
            file.extend_from_slice(&buf);
        }
        let frame = buf.len();
        file[frame..2 * frame].fill(0);
        let err = decode_frames(&file, 7).unwrap_err();
        assert!(err.contains("damaged"), "{err}");
        let left_out = (DEPTH + 1) as usize;
        assert_eq!(
            decode_frames_in(&file, 7, true).unwrap(),
            (sample()[..1].to_vec(), left_out)
        );
        // A checksum that fails is a hole like any other.
        file[frame..2 * frame].copy_from_slice(&buf);
        file[frame + HEADER] ^= 1;
        assert_eq!(
            decode_frames_in(&file, 7, true).unwrap(),
            (sample()[..1].to_vec(), left_out)
        );
    }
}
