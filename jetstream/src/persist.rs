//! JetStream's records in the store: its tables, the bytes of a stored message, the stream and
//! consumer metadata, and reading them all back at start.
//!
//! A stream's messages are stored in blocks: one record holds the messages a publisher's
//! commit added to the stream in a row (up to [`BLOCK_BYTES`]), keyed by the stream's uid and
//! the first message's sequence. An engine insert costs about a microsecond whatever the size
//! of the value, so a block of hundreds of messages costs what one message did. A message
//! removed from a block that still holds others leaves a tombstone (its key in [`TOMBS`]); the
//! block and its tombstones go once its last message is removed.

use std::collections::BTreeMap;

use bytes::Bytes;
use junction_store::{Engine, Op, StoreError, Table};
use serde::{Deserialize, Serialize};

use crate::config::{ConsumerConfig, StreamConfig};
use crate::stream::{Block, Entry, StoredMsg, Stream, StreamState};

/// Blocks of messages, keyed by the stream's uid and the block's first sequence (both
/// big-endian).
pub const BLOCKS: Table = Table::new("js_blocks");
/// Removed messages of blocks that still hold others: the stream's uid, the block's first
/// sequence and the message's sequence; no value.
pub const TOMBS: Table = Table::new("js_tombs");
/// One record per message, as earlier versions stored them (read once, and rewritten as
/// blocks).
pub const LEGACY_MSGS: Table = Table::new("js_msgs");
/// A block takes no more messages past this many bytes. redb gives a value larger than a page
/// a run of pages rounded up to a power of two, so a full block fills its 32 KiB; the last
/// block of a commit is smaller. Measured with 1,000,000 messages of 128 B published 256 at a
/// time: with 4 KiB blocks redb allocated 180 MB (here 193 MB) and the writer took 1.4 s of
/// CPU (here 1.07 s); 64 KiB blocks grew the file to 411 MB (here 285 MB).
pub const BLOCK_BYTES: usize = 32 * 1024 - 256;
/// Bytes a block spends on each message besides its record: the sequence's distance from the
/// block's first and the record's length.
const BLOCK_ENTRY: usize = 8;
/// Stream metadata, keyed by uid.
pub const STREAMS: Table = Table::new("js_streams");
/// Consumer metadata and positions, keyed by the stream's uid and the consumer's name.
pub const CONSUMERS: Table = Table::new("js_consumers");

pub fn msg_key(uid: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&uid.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The key of a tombstone: message `seq` of the block that starts at `first`.
pub fn tomb_key(uid: u64, first: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&uid.to_be_bytes());
    k.extend_from_slice(&first.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Appends message `m` to a block that starts at `first` (`m.seq >= first`).
pub fn append_to_block(block: &mut Vec<u8>, first: u64, m: &StoredMsg) {
    let h = m.headers.as_deref().unwrap_or_default();
    let len = 14 + m.subject.len() + h.len() + m.payload.len();
    block.reserve(BLOCK_ENTRY + len);
    block.extend_from_slice(&((m.seq - first) as u32).to_be_bytes());
    block.extend_from_slice(&(len as u32).to_be_bytes());
    write_msg(block, m);
}

/// Whether a block may take a message of `m`'s size (`false`: start a new one).
pub fn block_has_room(block: &[u8], m: &StoredMsg, first: u64) -> bool {
    m.seq - first <= u32::MAX as u64 && block.len() + BLOCK_ENTRY + msg_len(m) <= BLOCK_BYTES
}

fn msg_len(m: &StoredMsg) -> usize {
    14 + m.subject.len() + m.headers.as_ref().map_or(0, Bytes::len) + m.payload.len()
}

/// A block ends inside a message (the store is damaged).
#[derive(Debug, PartialEq, Eq)]
pub struct CutShort;

/// Calls `each` with the sequence and record of every message of a block that starts at
/// `first`, in order, until it returns `false`.
pub fn read_block(
    first: u64,
    block: &[u8],
    each: &mut dyn FnMut(u64, std::ops::Range<usize>) -> bool,
) -> Result<(), CutShort> {
    let mut at = 0;
    while at < block.len() {
        let head = block.get(at..at + BLOCK_ENTRY).ok_or(CutShort)?;
        let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (delta, len) = (word(0), word(4) as usize);
        let start = at + BLOCK_ENTRY;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= block.len())
            .ok_or(CutShort)?;
        if !each(first + u64::from(delta), start..end) {
            return Ok(());
        }
        at = end;
    }
    Ok(())
}

pub fn block_first(key: &[u8]) -> Option<u64> {
    key.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

pub fn consumer_key(uid: u64, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&uid.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// A message's record: time, subject, headers, payload, each length-prefixed.
pub fn encode_msg(m: &StoredMsg) -> Vec<u8> {
    let mut v = Vec::with_capacity(msg_len(m));
    write_msg(&mut v, m);
    v
}

fn write_msg(v: &mut Vec<u8>, m: &StoredMsg) {
    let h = m.headers.as_deref().unwrap_or_default();
    v.extend_from_slice(&m.ts.to_be_bytes());
    v.extend_from_slice(&(m.subject.len() as u16).to_be_bytes());
    v.extend_from_slice(&m.subject);
    v.extend_from_slice(&(h.len() as u32).to_be_bytes());
    v.extend_from_slice(h);
    v.extend_from_slice(&m.payload);
}

/// Reads a record back; `None` when it is damaged.
pub fn decode_msg(seq: u64, v: &[u8]) -> Option<StoredMsg> {
    decode_shared(seq, &Bytes::copy_from_slice(v))
}

/// Reads a record back from `v` (a block, or a record), sharing its bytes; `None` when it is
/// damaged.
pub fn decode_shared(seq: u64, v: &Bytes) -> Option<StoredMsg> {
    let ts = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let sl = u16::from_be_bytes(v.get(8..10)?.try_into().ok()?) as usize;
    v.get(10..10 + sl)?;
    let at = 10 + sl;
    let hl = u32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?) as usize;
    let body = at + 4 + hl;
    if body > v.len() {
        return None;
    }
    Some(StoredMsg {
        seq,
        subject: v.slice(10..10 + sl),
        headers: (hl > 0).then(|| v.slice(at + 4..body)),
        payload: v.slice(body..),
        ts,
        ..Default::default()
    })
}

/// Reads what a cold slot keeps of a record (subject, time, size); `None` when it is damaged.
pub fn decode_entry(v: &[u8]) -> Option<Entry> {
    let ts = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let sl = u16::from_be_bytes(v.get(8..10)?.try_into().ok()?) as usize;
    let subject = v.get(10..10 + sl)?;
    let hl = u32::from_be_bytes(v.get(10 + sl..14 + sl)?.try_into().ok()?) as usize;
    let payload = v.get(14 + sl + hl..)?.len();
    let size = crate::stream::record_size(crate::config::Storage::File, sl, hl, payload);
    Some(Entry::cold(
        Bytes::copy_from_slice(subject),
        ts,
        size,
        hl > 0,
    ))
}

/// A new block holding `block` (messages from `first` on).
pub fn block_op(uid: u64, first: u64, block: Vec<u8>) -> Op {
    Op::Insert {
        table: BLOCKS,
        key: msg_key(uid, first),
        value: block,
    }
}

/// What removing message `seq` of the block that starts at `first` writes: a tombstone while
/// the block holds others (`last: false`), the removal of the block and of its tombstones with
/// its last message.
pub fn remove_ops(uid: u64, first: u64, seq: u64, last: bool, tombs: bool) -> Vec<Op> {
    if !last {
        return vec![Op::Insert {
            table: TOMBS,
            key: tomb_key(uid, first, seq),
            value: Vec::new(),
        }];
    }
    let mut ops = vec![Op::Delete {
        table: BLOCKS,
        key: msg_key(uid, first),
    }];
    if tombs {
        ops.push(Op::DeletePrefix {
            table: TOMBS,
            prefix: msg_key(uid, first),
        });
    }
    ops
}

/// Removes every message of stream `uid` (a purge).
pub fn purge_ops(uid: u64) -> Vec<Op> {
    let prefix = uid.to_be_bytes().to_vec();
    [BLOCKS, TOMBS, LEGACY_MSGS]
        .into_iter()
        .map(|table| Op::DeletePrefix {
            table,
            prefix: prefix.clone(),
        })
        .collect()
}

/// A stream's metadata record.
#[derive(Serialize, Deserialize)]
pub struct StreamMeta {
    pub account: String,
    pub config: StreamConfig,
    pub created: i64,
    pub last_seq: u64,
    pub last_ts: i64,
    /// Mirror and source positions: the next sequence to copy from each source.
    #[serde(default)]
    pub sourced: BTreeMap<String, u64>,
}

pub fn stream_meta_op(s: &Stream, st: &StreamState) -> Op {
    let meta = StreamMeta {
        account: s.account.name().to_string(),
        config: st.config.clone(),
        created: st.created,
        last_seq: st.last_seq,
        last_ts: st.last_ts,
        sourced: st.sourced.clone(),
    };
    Op::Put {
        table: STREAMS,
        key: s.uid.to_be_bytes().to_vec(),
        value: serde_json::to_vec(&meta).unwrap_or_default(),
    }
}

/// Everything a stream leaves in the store, to delete with it.
pub fn delete_stream_ops(uid: u64) -> Vec<Op> {
    let mut ops = purge_ops(uid);
    ops.push(Op::Delete {
        table: STREAMS,
        key: uid.to_be_bytes().to_vec(),
    });
    ops.push(Op::DeletePrefix {
        table: CONSUMERS,
        prefix: uid.to_be_bytes().to_vec(),
    });
    ops
}

/// A consumer's record: its configuration and the positions that survive a restart.
#[derive(Serialize, Deserialize, Clone, Default)]
pub struct ConsumerRecord {
    pub config: Option<ConsumerConfig>,
    pub created: i64,
    /// Last consumer and stream sequence delivered.
    pub delivered: (u64, u64),
    /// Consumer and stream sequence below which everything is acknowledged.
    pub ack_floor: (u64, u64),
    /// The next stream sequence to deliver for the first time.
    pub next: u64,
    /// Stream sequences still to deliver first (deliver policy last per subject).
    #[serde(default)]
    pub lps: Vec<u64>,
    /// Delivered and not acknowledged: stream sequence, delivery count.
    pub pending: Vec<(u64, u64)>,
    #[serde(default)]
    pub redelivered: u64,
}

pub fn consumer_op(uid: u64, name: &str, rec: &ConsumerRecord) -> Op {
    Op::Put {
        table: CONSUMERS,
        key: consumer_key(uid, name),
        value: serde_json::to_vec(rec).unwrap_or_default(),
    }
}

/// A stream as the store held it at start.
pub struct RestoredStream {
    pub meta: StreamMeta,
    /// Its messages in sequence order: cold (read back on demand) when the engine can read
    /// beside the writer, whole otherwise.
    pub msgs: Vec<(u64, Entry)>,
    /// Its blocks: first sequence, messages written, messages still stored.
    pub blocks: Vec<(u64, Block)>,
}

/// What the store held at start.
#[derive(Default)]
pub struct Restored {
    pub streams: BTreeMap<u64, RestoredStream>,
    pub consumers: Vec<(u64, String, ConsumerRecord)>,
    /// Records that could not be read (logged, skipped).
    pub skipped: usize,
    /// What to commit before anything else: messages of earlier versions rewritten as blocks,
    /// blocks left without messages.
    pub rewrite: Vec<Op>,
}

fn be_u64(b: Option<&[u8]>) -> Option<u64> {
    b.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

/// Reads JetStream's tables.
pub fn restore(engine: &dyn Engine) -> Result<Restored, StoreError> {
    let mut r = Restored::default();
    let cold = engine.reader().is_some();
    engine.scan(STREAMS, &mut |k, v| {
        match (
            k.try_into().ok().map(u64::from_be_bytes),
            serde_json::from_slice::<StreamMeta>(v),
        ) {
            (Some(uid), Ok(meta)) => {
                r.streams.insert(
                    uid,
                    RestoredStream {
                        meta,
                        msgs: Vec::new(),
                        blocks: Vec::new(),
                    },
                );
            }
            _ => {
                tracing::warn!("skipping an unreadable JetStream stream record");
                r.skipped += 1;
            }
        }
        Ok(())
    })?;
    // Removed messages of the blocks that still hold others, by stream and block.
    let mut tombs: std::collections::HashSet<(u64, u64, u64)> = Default::default();
    let mut rewrite = Vec::new();
    engine.scan(TOMBS, &mut |k, _| {
        match (
            be_u64(k.get(..8)),
            be_u64(k.get(8..16)),
            be_u64(k.get(16..24)),
        ) {
            (Some(uid), Some(first), Some(seq)) if k.len() == 24 => {
                tombs.insert((uid, first, seq));
            }
            _ => r.skipped += 1,
        }
        Ok(())
    })?;
    let read = |seq: u64, rec: &[u8]| {
        if cold {
            decode_entry(rec)
        } else {
            decode_msg(seq, rec).map(Entry::hot)
        }
    };
    engine.scan(BLOCKS, &mut |k, v| {
        let (Some(uid), Some(first)) = (be_u64(k.get(..8)), block_first(k)) else {
            r.skipped += 1;
            return Ok(());
        };
        let Some(s) = r.streams.get_mut(&uid) else {
            // Of a deleted stream (its removal overtook a publisher's open group).
            rewrite.extend(remove_ops(uid, first, first, true, true));
            return Ok(());
        };
        let mut block = Block::default();
        let whole = read_block(first, v, &mut |seq, at| {
            block.written += 1;
            if tombs.remove(&(uid, first, seq)) {
                return true;
            }
            match read(seq, &v[at]) {
                Some(e) => {
                    block.live += 1;
                    s.msgs.push((seq, e));
                }
                None => {
                    tracing::warn!(uid, seq, "skipping an unreadable JetStream message");
                    r.skipped += 1;
                }
            }
            true
        });
        if whole.is_err() {
            tracing::warn!(
                uid,
                first,
                "a JetStream block is cut short; reading what it holds"
            );
            r.skipped += 1;
        }
        if block.live == 0 {
            rewrite.extend(remove_ops(uid, first, first, true, true));
        } else {
            s.blocks.push((first, block));
        }
        Ok(())
    })?;
    // Tombstones of blocks that are gone (a removal that overtook a publisher's open group).
    for (uid, first, seq) in tombs {
        rewrite.push(Op::Delete {
            table: TOMBS,
            key: tomb_key(uid, first, seq),
        });
    }
    // Messages as earlier versions stored them: rewritten as blocks of one.
    let mut legacy = false;
    engine.scan(LEGACY_MSGS, &mut |k, v| {
        let (Some(uid), Some(seq)) = (be_u64(k.get(..8)), be_u64(k.get(8..16))) else {
            r.skipped += 1;
            return Ok(());
        };
        rewrite.push(Op::Delete {
            table: LEGACY_MSGS,
            key: k.to_vec(),
        });
        let (Some(s), Some(m)) = (r.streams.get_mut(&uid), decode_msg(seq, v)) else {
            r.skipped += 1;
            return Ok(());
        };
        let mut block = Vec::new();
        append_to_block(&mut block, seq, &m);
        rewrite.push(block_op(uid, seq, block));
        s.blocks.push((
            seq,
            Block {
                written: 1,
                live: 1,
                committed: None,
            },
        ));
        let entry = if cold {
            Entry::cold(
                m.subject.clone(),
                m.ts,
                m.stored_size(),
                m.headers.is_some(),
            )
        } else {
            Entry::hot(m)
        };
        s.msgs.push((seq, entry));
        legacy = true;
        Ok(())
    })?;
    if legacy {
        for s in r.streams.values_mut() {
            s.msgs.sort_by_key(|(seq, _)| *seq);
            s.blocks.sort_by_key(|(first, _)| *first);
        }
    }
    r.rewrite = rewrite;
    engine.scan(CONSUMERS, &mut |k, v| {
        let uid = be_u64(k.get(..8));
        let name = k.get(8..).and_then(|b| std::str::from_utf8(b).ok());
        match (uid, name, serde_json::from_slice::<ConsumerRecord>(v)) {
            (Some(uid), Some(name), Ok(rec)) if r.streams.contains_key(&uid) => {
                r.consumers.push((uid, name.to_string(), rec))
            }
            _ => {
                tracing::warn!("skipping an unreadable JetStream consumer record");
                r.skipped += 1;
            }
        }
        Ok(())
    })?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_records_round_trip() {
        let m = StoredMsg {
            seq: 7,
            subject: Bytes::from_static(b"a.b"),
            headers: Some(Bytes::from_static(b"NATS/1.0\r\nX: 1\r\n\r\n")),
            payload: Bytes::from_static(b"hello"),
            ts: 1_700_000_000_123,
            ..Default::default()
        };
        let back = decode_msg(7, &encode_msg(&m)).unwrap();
        assert_eq!(back.subject, m.subject);
        assert_eq!(back.headers, m.headers);
        assert_eq!(back.payload, m.payload);
        assert_eq!(back.ts, m.ts);
        assert!(decode_msg(7, &encode_msg(&m)[..12]).is_none());
        assert!(decode_msg(7, b"").is_none());
        let e = decode_entry(&encode_msg(&m)).unwrap();
        assert_eq!((e.subject.clone(), e.ts), (m.subject.clone(), m.ts));
        assert_eq!(e.stored_size(), m.stored_size());
        assert!(decode_entry(&encode_msg(&m)[..12]).is_none());
    }

    fn msg(seq: u64, body: &'static [u8]) -> StoredMsg {
        StoredMsg {
            seq,
            subject: Bytes::from_static(b"a.b"),
            payload: Bytes::from_static(body),
            ts: 1_700_000_000_000 + seq as i64,
            ..Default::default()
        }
    }

    #[test]
    fn blocks_round_trip_and_a_cut_block_is_reported() {
        let mut block = Vec::new();
        for (seq, body) in [(10, &b"one"[..]), (11, b"two"), (15, b"three")] {
            let m = StoredMsg {
                payload: Bytes::copy_from_slice(body),
                ..msg(seq, b"")
            };
            assert!(block_has_room(&block, &m, 10));
            append_to_block(&mut block, 10, &m);
        }
        let shared = Bytes::from(block.clone());
        let mut back = Vec::new();
        read_block(10, &block, &mut |seq, at| {
            let m = decode_shared(seq, &shared.slice(at)).unwrap();
            back.push((seq, m.payload));
            true
        })
        .unwrap();
        assert_eq!(
            back,
            vec![
                (10, Bytes::from_static(b"one")),
                (11, Bytes::from_static(b"two")),
                (15, Bytes::from_static(b"three"))
            ]
        );
        // Every cut inside the last message is reported, after the whole ones before it.
        for cut in block.len() - 20..block.len() {
            let mut n = 0;
            assert!(read_block(10, &block[..cut], &mut |_, _| {
                n += 1;
                true
            })
            .is_err());
            assert_eq!(n, 2);
        }
        // A block is full at BLOCK_BYTES.
        let big = StoredMsg {
            payload: Bytes::from(vec![0u8; BLOCK_BYTES]),
            ..msg(16, b"")
        };
        assert!(!block_has_room(&block, &big, 10));
    }

    #[test]
    fn messages_of_earlier_versions_are_rewritten_as_blocks() {
        use junction_store::MemoryEngine;
        let mut engine = MemoryEngine::default();
        let meta = StreamMeta {
            account: "$G".into(),
            config: serde_json::from_str(r#"{"name":"S","subjects":["a.>"]}"#).unwrap(),
            created: 1,
            last_seq: 3,
            last_ts: 0,
            sourced: BTreeMap::new(),
        };
        let mut ops = vec![Op::Put {
            table: STREAMS,
            key: 7u64.to_be_bytes().to_vec(),
            value: serde_json::to_vec(&meta).unwrap(),
        }];
        for seq in [1, 3] {
            ops.push(Op::Insert {
                table: LEGACY_MSGS,
                key: msg_key(7, seq),
                value: encode_msg(&msg(seq, b"old")),
            });
        }
        engine.commit(&ops).unwrap();
        let r = restore(&engine).unwrap();
        let s = &r.streams[&7];
        assert_eq!(
            s.msgs.iter().map(|(q, _)| *q).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(s.blocks.len(), 2);
        engine.commit(&r.rewrite).unwrap();
        // Read again: the same messages, from blocks, and no record of the old kind left.
        let again = restore(&engine).unwrap();
        assert!(again.rewrite.is_empty());
        let s = &again.streams[&7];
        assert_eq!(
            s.msgs.iter().map(|(q, _)| *q).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let mut legacy = 0;
        engine
            .scan(LEGACY_MSGS, &mut |_, _| {
                legacy += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(legacy, 0);
    }
}
