//! JetStream's records in the store: its tables, the bytes of a stored message, the stream and
//! consumer metadata, and reading them all back at start.

use std::collections::BTreeMap;

use bytes::Bytes;
use junction_store::{Engine, Op, StoreError, Table};
use serde::{Deserialize, Serialize};

use crate::config::{ConsumerConfig, StreamConfig};
use crate::stream::{Entry, StoredMsg, Stream, StreamState};

/// Messages, keyed by the stream's uid and the sequence (both big-endian).
pub const MSGS: Table = Table::new("js_msgs");
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

pub fn consumer_key(uid: u64, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&uid.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// A message's record: time, subject, headers, payload, each length-prefixed.
pub fn encode_msg(m: &StoredMsg) -> Vec<u8> {
    let h = m.headers.as_deref().unwrap_or_default();
    let mut v = Vec::with_capacity(14 + m.subject.len() + h.len() + m.payload.len());
    v.extend_from_slice(&m.ts.to_be_bytes());
    v.extend_from_slice(&(m.subject.len() as u16).to_be_bytes());
    v.extend_from_slice(&m.subject);
    v.extend_from_slice(&(h.len() as u32).to_be_bytes());
    v.extend_from_slice(h);
    v.extend_from_slice(&m.payload);
    v
}

/// Reads a record back; `None` when it is damaged.
pub fn decode_msg(seq: u64, v: &[u8]) -> Option<StoredMsg> {
    let ts = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let sl = u16::from_be_bytes(v.get(8..10)?.try_into().ok()?) as usize;
    let subject = v.get(10..10 + sl)?;
    let at = 10 + sl;
    let hl = u32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?) as usize;
    let hdr = v.get(at + 4..at + 4 + hl)?;
    let payload = v.get(at + 4 + hl..)?;
    Some(StoredMsg {
        seq,
        subject: Bytes::copy_from_slice(subject),
        headers: (hl > 0).then(|| Bytes::copy_from_slice(hdr)),
        payload: Bytes::copy_from_slice(payload),
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
    v.get(14 + sl + hl..)?;
    // The record is 14 bytes of lengths and time around subject, headers and payload.
    let size = (v.len() - 14 + 30) as u64;
    Some(Entry::cold(Bytes::copy_from_slice(subject), ts, size))
}

pub fn insert_msg_op(uid: u64, m: &StoredMsg) -> Op {
    Op::Insert {
        table: MSGS,
        key: msg_key(uid, m.seq),
        value: encode_msg(m),
    }
}

pub fn delete_msg_op(uid: u64, seq: u64) -> Op {
    Op::Delete {
        table: MSGS,
        key: msg_key(uid, seq),
    }
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
    let prefix = uid.to_be_bytes().to_vec();
    vec![
        Op::Delete {
            table: STREAMS,
            key: prefix.clone(),
        },
        Op::DeletePrefix {
            table: MSGS,
            prefix: prefix.clone(),
        },
        Op::DeletePrefix {
            table: CONSUMERS,
            prefix,
        },
    ]
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

/// What the store held at start.
#[derive(Default)]
pub struct Restored {
    /// Each stream's metadata and messages: cold (read back on demand) when the engine can
    /// read beside the writer, whole otherwise.
    pub streams: BTreeMap<u64, (StreamMeta, Vec<(u64, Entry)>)>,
    pub consumers: Vec<(u64, String, ConsumerRecord)>,
    /// Records that could not be read (logged, skipped).
    pub skipped: usize,
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
                r.streams.insert(uid, (meta, Vec::new()));
            }
            _ => {
                tracing::warn!("skipping an unreadable JetStream stream record");
                r.skipped += 1;
            }
        }
        Ok(())
    })?;
    engine.scan(MSGS, &mut |k, v| {
        let uid = k
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        let seq = k
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        match (uid, seq) {
            (Some(uid), Some(seq)) => match (
                r.streams.get_mut(&uid),
                if cold {
                    decode_entry(v)
                } else {
                    decode_msg(seq, v).map(Entry::hot)
                },
            ) {
                (Some((_, msgs)), Some(m)) => msgs.push((seq, m)),
                (None, _) => r.skipped += 1,
                (_, None) => {
                    tracing::warn!(uid, seq, "skipping an unreadable JetStream message");
                    r.skipped += 1;
                }
            },
            _ => r.skipped += 1,
        }
        Ok(())
    })?;
    engine.scan(CONSUMERS, &mut |k, v| {
        let uid = k
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
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
}
