//! The data of a stream snapshot, as `$JS.API.STREAM.SNAPSHOT` sends it and
//! `$JS.API.STREAM.RESTORE` takes it back.
//!
//! nats-server sends an S2-compressed tar of its file store's directory; its clients (the `nats`
//! CLI's `stream backup` and `restore`) only pass the bytes through, and decompress them to
//! count progress. Junction's store is not a directory of files, so its snapshot is a stream
//! of records in the Snappy framing format (which S2 readers read) rather than a tar:
//!
//! ```text
//! MAGIC, then records:  u8 kind | u32 length of the body | body
//!   META      JSON: the stream's config, created, first_seq, last_seq
//!   MSG       u64 seq | i64 time (Unix ns) | u32 subject length | subject
//!             | u32 header block length + 1 (0: none) | header block | payload
//!   CONSUMER  JSON: {"name", "record"}, a durable consumer's config and positions
//!   END       u64 number of MSG records before it; nothing may follow
//! ```
//!
//! Integers are little-endian. A snapshot that ends before END, holds a record longer than
//! [`MAX_RECORD`], or whose framing checksums fail is refused as a whole.

use std::io::{Read, Write};

use bytes::Bytes;
use serde_json::{json, Value};
use snap::read::FrameDecoder;
use snap::write::FrameEncoder;

use crate::persist::ConsumerRecord;
use crate::stream::StoredMsg;

/// What the uncompressed data starts with.
pub const MAGIC: &[u8] = b"JUNCTION STREAM SNAPSHOT 1\n";
/// The longest record a snapshot may hold: more than a stream's largest message (64 MiB of
/// payload and headers at most) with its subject.
pub const MAX_RECORD: usize = 72 << 20;

const META: u8 = 1;
const MSG: u8 = 2;
const CONSUMER: u8 = 3;
const END: u8 = 4;

/// The start of an S2 stream (what nats-server's snapshots are).
const S2_STREAM: &[u8] = b"\xff\x06\x00\x00S2sTwO";

/// Writes a snapshot's records, compressed, into memory, from where they are taken a chunk at
/// a time.
pub struct Writer {
    enc: FrameEncoder<Vec<u8>>,
    /// How much of the compressed output was taken already (dropped from the front only
    /// once it is most of it: a large message is taken a chunk at a time without moving the
    /// rest each time).
    taken: usize,
    msgs: u64,
}

impl Default for Writer {
    fn default() -> Self {
        let mut w = Writer {
            enc: FrameEncoder::new(Vec::new()),
            taken: 0,
            msgs: 0,
        };
        w.put(MAGIC);
        w
    }
}

impl Writer {
    fn put(&mut self, b: &[u8]) {
        // Into memory: cannot fail.
        self.enc.write_all(b).expect("writing to memory");
    }

    fn record(&mut self, kind: u8, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.put(&[kind]);
        self.put(&(len as u32).to_le_bytes());
        for p in parts {
            self.put(p);
        }
    }

    pub fn meta(&mut self, meta: &Value) {
        self.record(META, &[meta.to_string().as_bytes()]);
    }

    pub fn msg(&mut self, m: &StoredMsg) {
        let hlen = m.headers.as_ref().map_or(0, |h| h.len() as u32 + 1);
        self.record(
            MSG,
            &[
                &m.seq.to_le_bytes(),
                &m.ts.to_le_bytes(),
                &(m.subject.len() as u32).to_le_bytes(),
                &m.subject,
                &hlen.to_le_bytes(),
                m.headers.as_deref().unwrap_or_default(),
                &m.payload,
            ],
        );
        self.msgs += 1;
    }

    pub fn consumer(&mut self, name: &str, rec: &ConsumerRecord) {
        let v = json!({"name": name, "record": rec});
        self.record(CONSUMER, &[v.to_string().as_bytes()]);
    }

    /// Ends the snapshot: what is left is taken by [`Writer::take`].
    pub fn end(&mut self) {
        let n = self.msgs.to_le_bytes();
        self.record(END, &[&n]);
        self.enc.flush().expect("writing to memory");
    }

    /// Compressed bytes ready to send.
    pub fn ready(&self) -> usize {
        self.enc.get_ref().len() - self.taken
    }

    /// Up to `max` of the compressed bytes ready.
    pub fn take(&mut self, max: usize) -> Vec<u8> {
        let out = self.enc.get_mut();
        let end = self.taken + max.min(out.len() - self.taken);
        let chunk = out[self.taken..end].to_vec();
        self.taken = end;
        if self.taken == out.len() {
            out.clear();
            self.taken = 0;
        } else if self.taken > out.len() / 2 {
            out.drain(..self.taken);
            self.taken = 0;
        }
        chunk
    }
}

/// One record of a snapshot.
pub enum Record {
    Meta(Value),
    Msg(StoredMsg),
    Consumer(String, Box<ConsumerRecord>),
}

/// Reads a whole snapshot from `r`, handing each record to `each` in order; returns how many
/// messages it held. Any fault (damaged or cut-short data, a record `each` refuses) is an
/// error that says what was wrong.
pub fn read(
    r: impl Read,
    each: &mut dyn FnMut(Record) -> Result<(), String>,
) -> Result<u64, String> {
    let mut r = Framed {
        inner: FrameDecoder::new(Peek {
            inner: r,
            head: Vec::new(),
        }),
    };
    let mut magic = [0u8; MAGIC.len()];
    r.exact(&mut magic)?;
    if magic != MAGIC {
        return Err("not a Junction stream snapshot".into());
    }
    let mut msgs = 0u64;
    loop {
        let mut head = [0u8; 5];
        r.exact(&mut head)?;
        let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD {
            return Err(format!(
                "a record of {len} bytes is longer than any stream holds"
            ));
        }
        // Read as it comes (a length alone allocates nothing).
        let mut body = Vec::new();
        let got = (&mut r.inner)
            .take(len as u64)
            .read_to_end(&mut body)
            .map_err(|e| r.damaged(e))?;
        if got < len {
            return Err(r.damaged(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match head[0] {
            META => each(Record::Meta(json_of(&body)?))?,
            MSG => {
                each(Record::Msg(msg_of(Bytes::from(body))?))?;
                msgs += 1;
            }
            CONSUMER => {
                let v = json_of(&body)?;
                let name = v["name"].as_str().unwrap_or_default().to_string();
                let rec: Box<ConsumerRecord> = serde_json::from_value(v["record"].clone())
                    .map_err(|e| format!("a consumer record is not valid: {e}"))?;
                each(Record::Consumer(name, rec))?;
            }
            END => {
                let n = body
                    .try_into()
                    .map(u64::from_le_bytes)
                    .map_err(|_| "the end record is not valid".to_string())?;
                if n != msgs {
                    return Err(format!("the snapshot says {n} messages and holds {msgs}"));
                }
                let mut more = [0u8; 1];
                return match r.inner.read(&mut more) {
                    Ok(0) => Ok(msgs),
                    Ok(_) => Err("data follows the end of the snapshot".into()),
                    Err(e) => Err(r.damaged(e)),
                };
            }
            k => return Err(format!("unknown record kind {k}")),
        }
    }
}

fn json_of(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("a record is not valid JSON: {e}"))
}

fn msg_of(body: Bytes) -> Result<StoredMsg, String> {
    let bad = || "a message record is not valid".to_string();
    let u32_at = |at: usize| -> Result<usize, String> {
        body.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(bad)
    };
    let u64_at = |at: usize| -> Result<u64, String> {
        body.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(bad)
    };
    let seq = u64_at(0)?;
    let ts = u64_at(8)? as i64;
    let slen = u32_at(16)?;
    let s_end = 20usize.checked_add(slen).ok_or_else(bad)?;
    let hlen = u32_at(s_end)?;
    let h_start = s_end + 4;
    let h_end = h_start
        .checked_add(hlen.saturating_sub(1))
        .ok_or_else(bad)?;
    if h_end > body.len() || seq == 0 || slen == 0 {
        return Err(bad());
    }
    Ok(StoredMsg {
        seq,
        subject: body.slice(20..s_end),
        headers: (hlen > 0).then(|| body.slice(h_start..h_end)),
        payload: body.slice(h_end..),
        ts,
        on_disk: None,
    })
}

/// The decoder, with errors said in the snapshot's terms.
struct Framed<R: Read> {
    inner: FrameDecoder<Peek<R>>,
}

impl<R: Read> Framed<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.inner.read_exact(buf).map_err(|e| self.damaged(e))
    }

    fn damaged(&self, e: std::io::Error) -> String {
        if self.inner.get_ref().head.starts_with(S2_STREAM) {
            return "the data is an S2 stream (a nats-server snapshot, which holds its file \
                    store's files): only a Junction snapshot can be restored"
                .into();
        }
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the snapshot is cut short".into(),
            _ => format!("the snapshot's data is damaged: {e}"),
        }
    }
}

/// A reader that keeps the first bytes it read, to say what the data was when it is not a
/// snapshot.
struct Peek<R: Read> {
    inner: R,
    head: Vec<u8>,
}

impl<R: Read> Read for Peek<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.head.len() < S2_STREAM.len() {
            let want = (S2_STREAM.len() - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..want]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::default();
        w.meta(&json!({"config": {"name": "S"}, "first_seq": 3, "last_seq": 9}));
        for seq in [3u64, 5, 9] {
            w.msg(&StoredMsg {
                seq,
                subject: Bytes::from(format!("s.{seq}")),
                headers: (seq == 5).then(|| Bytes::from_static(b"NATS/1.0\r\nA: b\r\n\r\n")),
                // Bytes that do not repeat, so that no change to the compressed data can
                // leave the output the same.
                payload: (0..70_000 * (seq as usize % 2))
                    .scan(seq as u32, |x, _| {
                        *x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        Some((*x >> 16) as u8)
                    })
                    .collect(),
                ts: seq as i64 * 1000,
                on_disk: None,
            });
        }
        w.consumer("C", &ConsumerRecord::default());
        w.end();
        let mut out = Vec::new();
        while w.ready() > 0 {
            out.extend(w.take(1000));
        }
        out
    }

    /// What reading `data` gives, as text to compare.
    fn decoded(r: impl Read) -> Result<Vec<String>, String> {
        let mut seen = Vec::new();
        let n = read(r, &mut |rec| {
            seen.push(match rec {
                Record::Meta(v) => v.to_string(),
                Record::Msg(m) => format!(
                    "{} {} {:?} {:?} {}",
                    m.seq,
                    m.ts,
                    m.subject,
                    m.headers,
                    m.payload.len()
                ),
                Record::Consumer(name, rec) => format!("{name} {}", rec.next),
            });
            Ok(())
        })?;
        seen.push(format!("{n} messages"));
        Ok(seen)
    }

    /// Hands out its data in pieces of the sizes given, in turn.
    struct Split<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        i: usize,
    }

    impl Read for Split<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.sizes[self.i % self.sizes.len()]
                .min(buf.len())
                .min(self.data.len());
            self.i += 1;
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_written_whatever_the_reads_return() {
        let data = sample();
        let whole = decoded(&data[..]).expect("reads");
        assert_eq!(whole.len(), 6, "{whole:?}");
        assert_eq!(whole.last().map(String::as_str), Some("3 messages"));
        assert!(whole[2].contains("A: b"), "{whole:?}");
        for sizes in [vec![1], vec![2, 7], vec![13, 1, 4096], vec![65_536, 3]] {
            let split = Split {
                data: &data,
                sizes,
                i: 0,
            };
            assert_eq!(decoded(split).expect("reads"), whole);
        }
    }

    #[test]
    fn a_snapshot_cut_anywhere_or_damaged_is_refused() {
        let data = sample();
        let ends = data.len().saturating_sub(64)..data.len();
        for cut in (0..data.len()).step_by(61).chain(ends) {
            assert!(decoded(&data[..cut]).is_err(), "cut at {cut} was read");
        }
        // A flipped byte fails a checksum (or the framing) somewhere.
        for at in (0..data.len()).step_by(97) {
            let mut bad = data.clone();
            bad[at] ^= 0x40;
            assert!(decoded(&bad[..]).is_err(), "flipped at {at} was read");
        }
        let mut more = data.clone();
        more.extend_from_slice(&sample());
        assert!(decoded(&more[..]).is_err(), "data after the end was read");
    }

    #[test]
    fn other_data_is_refused_saying_what_it_is() {
        let mut s2 = S2_STREAM.to_vec();
        s2.extend_from_slice(&[0u8; 40]);
        let e = decoded(&s2[..]).expect_err("not ours");
        assert!(e.contains("nats-server snapshot"), "{e}");
        let mut w = FrameEncoder::new(Vec::new());
        w.write_all(b"something else entirely, long enough")
            .unwrap();
        let other = w.into_inner().unwrap();
        assert_eq!(
            decoded(&other[..]).expect_err("not ours"),
            "not a Junction stream snapshot"
        );
    }
}
