//! The write-ahead log in front of redb.
//!
//! A durable redb commit costs two fsyncs and rewrites the tree's pages (0.5 to 1 ms here), and
//! every acknowledgement waits for one. With the log, a commit is one append to a file whose
//! blocks already exist plus one `fdatasync` (about 120 µs on the same disk), done by a helper
//! thread while the writer applies the same operations to redb without syncing
//! (`Durability::None`, visible to readers at once). Every [`CHECKPOINT_BYTES`] of log, one
//! durable redb commit takes everything in and the log starts over.
//!
//! The file, `junction.wal`, is a sequence of frames, each the operations of one commit:
//!
//! ```text
//! u32 length of the body | u32 CRC-32 of the epochs and the body | u64 epoch
//! | u64 epoch before it | body | zeros to a multiple of 8 bytes
//! body: ops, each  u8 kind (1 insert, 2 put, 3 delete, 4 delete prefix)
//!                  u8 table name length, name, u32 key length, key,
//!                  for inserts and puts: u32 value length, value
//! ```
//!
//! Integers are little-endian. The epoch names one run of the log between checkpoints: each
//! checkpoint draws a new random one and records it in redb in the same durable commit, and at
//! startup only frames of the recorded epoch are replayed, in order, up to the first frame
//! that is torn or of another epoch (the file is reused from its start after each checkpoint,
//! so older frames follow the newest). A frame also names the epoch before its own: when the
//! log's first frame is whole and follows the epoch redb recorded, redb has lost its newest
//! durable commit (a damaged file falls back to the one before) and the store is refused
//! rather than served without what that commit held. Being random, an epoch cannot be guessed
//! by a client
//! whose message bodies land in the log, so no body can pass for a frame.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::engine::{Op, StoreError, Table};

/// The log's file name inside the data directory.
pub const WAL_FILE: &str = "junction.wal";

/// Log written since the last checkpoint that triggers the next one.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// The file grows by this much at a time, written with zeros and synced once, so that the
/// appends of a commit never change the file's size (an `fdatasync` then writes only data).
const GROW_BYTES: u64 = 16 * 1024 * 1024;

const HEADER: usize = 24;

const INSERT: u8 = 1;
const PUT: u8 = 2;
const DELETE: u8 = 3;
const DELETE_PREFIX: u8 = 4;

/// The log: where the next frame goes, the epoch it carries, and the thread that syncs it.
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
    buf: Vec<u8>,
    syncer: Syncer,
}

/// A thread that syncs the log while the writer applies a commit to redb.
struct Syncer {
    go: mpsc::Sender<()>,
    done: mpsc::Receiver<io::Result<()>>,
}

impl Syncer {
    fn start(file: File) -> io::Result<Syncer> {
        let (go, requests) = mpsc::channel::<()>();
        let (reply, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("junction-wal-sync".into())
            .spawn(move || {
                while requests.recv().is_ok() {
                    if reply.send(file.sync_data()).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Syncer { go, done })
    }

    fn start_sync(&self) {
        let _ = self.go.send(());
    }

    fn wait(&self) -> io::Result<()> {
        self.done
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the log's sync thread stopped")))
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir` and reads the frames of `epoch` it holds (`None`: a
    /// new store, nothing to read).
    pub fn open(dir: &Path, epoch: Option<u64>) -> Result<(Wal, Vec<Op>), StoreError> {
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
            if let Some((newer, prev, _)) = frame_at(&bytes, 0, None) {
                if newer != epoch && prev == epoch {
                    return Err(fail(
                        &"the log follows a newer durable commit than the store \
                         file holds (the file lost its newest commit): the store is damaged",
                    ));
                }
            }
        }
        let ops = match epoch {
            Some(epoch) => decode_frames(&bytes, epoch).map_err(|e| fail(&e))?,
            None => Vec::new(),
        };
        let len = bytes.len() as u64;
        let syncer =
            Syncer::start(file.try_clone().map_err(|e| fail(&e))?).map_err(|e| fail(&e))?;
        Ok((
            Wal {
                file,
                path,
                pos: 0,
                len,
                epoch: epoch.unwrap_or(0),
                prev: 0,
                buf: Vec::new(),
                syncer,
            },
            ops,
        ))
    }

    /// Starts the log over for `epoch` (everything before is in redb durably).
    pub fn reset(&mut self, epoch: u64) {
        self.prev = self.epoch;
        self.epoch = epoch;
        self.pos = 0;
    }

    /// The epoch the log's frames carry now.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Bytes of log since the last checkpoint.
    pub fn written(&self) -> u64 {
        self.pos
    }

    /// Writes `ops` as one frame and starts syncing it; [`Wal::wait`] returns once it is durable.
    pub fn append(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        encode_frame(self.epoch, self.prev, ops, &mut self.buf);
        let end = self.pos + self.buf.len() as u64;
        if end > self.len {
            let grown = end.div_ceil(GROW_BYTES) * GROW_BYTES;
            self.grow(grown).map_err(|e| self.err(e))?;
        }
        self.file
            .write_all_at(&self.buf, self.pos)
            .map_err(|e| self.err(e))?;
        self.pos = end;
        self.syncer.start_sync();
        Ok(())
    }

    /// Waits until the last appended frame is durable.
    pub fn wait(&mut self) -> Result<(), StoreError> {
        self.syncer.wait().map_err(|e| self.err(e))
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

/// Appends one frame of `ops` for `epoch` (following `prev`) to an emptied `buf`.
fn encode_frame(epoch: u64, prev: u64, ops: &[Op], buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(HEADER, 0);
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
    let body = (buf.len() - HEADER) as u32;
    buf[8..16].copy_from_slice(&epoch.to_le_bytes());
    buf[16..24].copy_from_slice(&prev.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[8..]);
    buf[0..4].copy_from_slice(&body.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    buf.resize(buf.len().next_multiple_of(8), 0);
}

/// The ops of the frames of `epoch` at the start of `bytes`, in order, up to the first frame
/// that is torn, of another epoch, or past the end. Only the last frame can be torn (a frame
/// is written after the one before it was synced), so a whole frame of `epoch` after the stop
/// is damage, an error; so is a frame whose checksum holds but whose body does not parse.
fn decode_frames(bytes: &[u8], epoch: u64) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    let mut at = 0usize;
    while let Some((_, _, body)) = frame_at(bytes, at, Some(epoch)) {
        decode_body(body, &mut ops)
            .map_err(|e| format!("the frame at byte {at} is damaged: {e}"))?;
        at += (HEADER + body.len()).next_multiple_of(8);
    }
    // Frames start at multiples of 8.
    let later = (at + 8..bytes.len())
        .step_by(8)
        .find(|&i| frame_at(bytes, i, Some(epoch)).is_some());
    if let Some(later) = later {
        return Err(format!(
            "the log is damaged: the frame at byte {at} is unreadable but a later one, at byte \
             {later}, is whole"
        ));
    }
    Ok(ops)
}

/// The whole frame at byte `at` (of `epoch` when given): its epoch, the epoch before it, and
/// its body.
fn frame_at(bytes: &[u8], at: usize, epoch: Option<u64>) -> Option<(u64, u64, &[u8])> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let long = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
    let (own, prev) = (long(8), long(16));
    if epoch.is_some_and(|e| e != own) {
        return None;
    }
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let start = at + HEADER;
    let body = bytes.get(start..start.checked_add(word(0) as usize)?)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[8..]);
    crc.update(body);
    (crc.finalize() == word(4)).then_some((own, prev, body))
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

/// One frame of `ops` for `epoch`, as the log writes it (for tests and fuzzing).
pub fn encode(epoch: u64, ops: &[Op]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(epoch, epoch.wrapping_sub(1), ops, &mut buf);
    buf
}

/// The ops a log's bytes replay for `epoch`, as at startup (for tests and fuzzing).
pub fn decode(bytes: &[u8], epoch: u64) -> Result<Vec<Op>, String> {
    decode_frames(bytes, epoch)
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

    #[test]
    fn frames_round_trip_and_stop_at_a_torn_or_older_frame() {
        let mut file = Vec::new();
        let mut buf = Vec::new();
        let body_len = |frame: &[u8]| u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        encode_frame(7, 6, &sample(), &mut buf);
        file.extend_from_slice(&buf);
        let one = file.len();
        let one_checked = HEADER + body_len(&buf);
        encode_frame(7, 6, &sample()[..1], &mut buf);
        file.extend_from_slice(&buf);
        let two = file.len();
        assert_eq!((one % 8, two % 8), (0, 0), "frames start at multiples of 8");
        let two_checked = one + HEADER + body_len(&buf);
        // An older epoch's frame after the newest: not replayed.
        encode_frame(6, 5, &sample(), &mut buf);
        file.extend_from_slice(&buf);
        let ops = decode_frames(&file, 7).unwrap();
        assert_eq!(ops.len(), 5);
        assert_eq!(ops[..4], sample()[..]);
        assert!(decode_frames(&file, 8).unwrap().is_empty());
        // Every cut of the second frame replays only the first.
        for cut in one + 1..two_checked {
            let mut torn = file[..cut].to_vec();
            torn.extend_from_slice(&[0; 40]);
            assert_eq!(decode_frames(&torn, 7).unwrap().len(), 4, "cut at {cut}");
        }
        // A flipped bit anywhere in the first frame, with the second whole after it, is damage
        // (a torn write only ever cuts the last frame).
        for i in 0..one_checked {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            let err = decode_frames(&bad, 7).expect_err("damage");
            assert!(err.contains("damaged"), "flip at {i}: {err}");
        }
        // A flipped bit in the last frame: a torn write, replayed up to it.
        for i in one..two_checked {
            let mut torn = file.clone();
            torn[i] ^= 0x10;
            assert_eq!(decode_frames(&torn, 7).unwrap().len(), 4, "flip at {i}");
        }
    }

    #[test]
    fn a_checked_frame_that_does_not_parse_is_damage() {
        let mut buf = Vec::new();
        encode_frame(1, 0, &sample(), &mut buf);
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
            wal.append(&sample()).unwrap();
            wal.wait().unwrap();
            wal.append(&sample()[1..2]).unwrap();
            wal.wait().unwrap();
            assert!(wal.written() > 0);
        }
        let len = std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
        assert_eq!(len, GROW_BYTES);
        let (mut wal, ops) = Wal::open(dir.path(), Some(3)).unwrap();
        assert_eq!(ops.len(), 5);
        wal.reset(4);
        wal.append(&sample()[2..3]).unwrap();
        wal.wait().unwrap();
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
}
