//! A stream's messages by position (`seq - first`), and the sequences removed between them.
//!
//! Both are sized by what the stream holds, not by the sequences between its first and last
//! message: a key-value bucket with one key written once and another rewritten a million times
//! holds two messages a million sequences apart. One slot per sequence cost about 56 bytes for
//! each sequence between them, and one set entry per removed sequence more (measured: 48 MB
//! after 500,000 rewrites of one key, growing without bound).
//!
//! - [`Slots`] keeps the positions in chunks of [`CHUNK`] slots and drops a chunk once it holds
//!   no message: a run of removed sequences costs a pointer per chunk.
//! - [`SeqSet`] keeps sequences as ranges: a run of removed sequences is one entry.

use std::collections::{BTreeMap, VecDeque};

use super::Entry;

/// Slots in a chunk: small enough that a message alone in its chunk keeps little else alive
/// (64 slots of 56 bytes), large enough that a run of gaps costs next to nothing (8 bytes per
/// 64 sequences).
const CHUNK: usize = 64;

struct Chunk {
    /// Slots holding a message.
    live: usize,
    slots: Box<[Option<Entry>]>,
}

impl Chunk {
    fn new() -> Box<Chunk> {
        Box::new(Chunk {
            live: 0,
            slots: (0..CHUNK).map(|_| None).collect(),
        })
    }
}

/// Positions `0..len`, each a message or a gap, as a deque would hold them.
#[derive(Default)]
pub(crate) struct Slots {
    /// `None`: a chunk with no message.
    chunks: VecDeque<Option<Box<Chunk>>>,
    /// Where position 0 is in the first chunk.
    start: usize,
    len: usize,
    /// The last chunk freed, for the next one needed (a queue that drains to empty would
    /// otherwise allocate one for every message).
    spare: Option<Box<Chunk>>,
}

impl Slots {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk and the slot in it of position `i`.
    fn at(&self, i: usize) -> (usize, usize) {
        let p = self.start + i;
        (p / CHUNK, p % CHUNK)
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Entry> {
        if i >= self.len {
            return None;
        }
        let (c, s) = self.at(i);
        self.chunks[c].as_ref()?.slots[s].as_ref()
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Entry> {
        if i >= self.len {
            return None;
        }
        let (c, s) = self.at(i);
        self.chunks[c].as_mut()?.slots[s].as_mut()
    }

    /// Appends a message (or a gap) after the last position.
    pub(crate) fn push(&mut self, e: Option<Entry>) {
        let (c, s) = self.at(self.len);
        if c == self.chunks.len() {
            self.chunks.push_back(None);
        }
        self.len += 1;
        if let Some(e) = e {
            let spare = &mut self.spare;
            let chunk =
                self.chunks[c].get_or_insert_with(|| spare.take().unwrap_or_else(Chunk::new));
            chunk.slots[s] = Some(e);
            chunk.live += 1;
        }
    }

    /// Appends `n` gaps.
    pub(crate) fn push_gaps(&mut self, n: usize) {
        self.len += n;
        let chunks = (self.start + self.len).div_ceil(CHUNK);
        while self.chunks.len() < chunks {
            self.chunks.push_back(None);
        }
    }

    /// Takes the message at position `i`, leaving a gap.
    pub(crate) fn take(&mut self, i: usize) -> Option<Entry> {
        if i >= self.len {
            return None;
        }
        let (c, s) = self.at(i);
        let chunk = self.chunks[c].as_mut()?;
        let e = chunk.slots[s].take()?;
        chunk.live -= 1;
        if chunk.live == 0 {
            // Every slot of it is empty again: kept for the next chunk needed.
            self.spare = self.chunks[c].take();
        }
        Some(e)
    }

    /// Drops the gaps at the front, up to the first message (all of them when there is none);
    /// returns how many.
    pub(crate) fn drop_front_gaps(&mut self) -> usize {
        let mut dropped = 0;
        while self.len > 0 {
            let gaps = match &self.chunks[0] {
                // A chunk without a message: gaps all through (what is left of it).
                None => (CHUNK - self.start).min(self.len),
                Some(chunk) => chunk.slots[self.start..]
                    .iter()
                    .take(self.len)
                    .take_while(|e| e.is_none())
                    .count(),
            };
            dropped += gaps;
            self.len -= gaps;
            self.start += gaps;
            if self.start < CHUNK {
                break;
            }
            self.chunks.pop_front();
            self.start = 0;
        }
        if self.len == 0 {
            self.chunks.clear();
            self.start = 0;
        }
        dropped
    }

    /// The messages at positions `from..`, with their positions, in order (chunks without a
    /// message are skipped whole).
    pub(crate) fn live_from(&self, from: usize) -> impl Iterator<Item = (usize, &Entry)> + '_ {
        let start = self.start;
        let end = start + self.len;
        let p0 = start + from.min(self.len);
        let c0 = p0 / CHUNK;
        self.chunks
            .range(c0.min(self.chunks.len())..)
            .enumerate()
            .filter_map(move |(k, c)| Some((c0 + k, c.as_ref()?)))
            .flat_map(move |(c, chunk)| {
                let (lo, hi) = ((c * CHUNK).max(p0), ((c + 1) * CHUNK).min(end));
                (lo..hi)
                    .filter_map(move |p| Some((p - start, chunk.slots[p - c * CHUNK].as_ref()?)))
            })
    }
}

/// A set of sequences kept as ranges (`start -> end`, both included, apart and not touching).
#[derive(Default, Clone)]
pub struct SeqSet {
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl SeqSet {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
        self.len = 0;
    }

    /// Adds `from..=to` (none of which may be in the set yet).
    pub fn insert_range(&mut self, mut from: u64, mut to: u64) {
        if from > to {
            return;
        }
        self.len += to - from + 1;
        if let Some((&s, &e)) = self.ranges.range(..from).next_back() {
            if e.checked_add(1) == Some(from) {
                self.ranges.remove(&s);
                from = s;
            }
        }
        if let Some(e) = to.checked_add(1).and_then(|n| self.ranges.remove(&n)) {
            to = e;
        }
        self.ranges.insert(from, to);
    }

    pub fn insert(&mut self, seq: u64) {
        self.insert_range(seq, seq);
    }

    /// Removes every sequence below `seq`.
    pub fn remove_below(&mut self, seq: u64) {
        while let Some((&s, &e)) = self.ranges.first_key_value() {
            if s >= seq {
                break;
            }
            self.ranges.remove(&s);
            if e >= seq {
                self.len -= seq - s;
                self.ranges.insert(seq, e);
                break;
            }
            self.len -= e - s + 1;
        }
    }

    /// How many sequences at or after `from` the set holds.
    pub fn count_from(&self, from: u64) -> u64 {
        let mut n: u64 = self.ranges.range(from..).map(|(&s, &e)| e - s + 1).sum();
        if let Some((_, &e)) = self.ranges.range(..from).next_back() {
            if e >= from {
                n += e - from + 1;
            }
        }
        n
    }

    /// The sequences, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|(&s, &e)| s..=e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(n: u8) -> Entry {
        Entry::cold(Bytes::from(vec![n]), i64::from(n), 1, false)
    }

    fn live(s: &Slots) -> Vec<(usize, u8)> {
        s.live_from(0).map(|(i, e)| (i, e.subject[0])).collect()
    }

    #[test]
    fn a_slot_stays_56_bytes() {
        // What each stored message costs in memory (the README's "about 70 bytes" with the
        // slot's pointer and the subject index); the header flag sits in the padding.
        assert_eq!(std::mem::size_of::<Entry>(), 56);
    }

    #[test]
    fn slots_behave_as_a_deque_of_options() {
        // Against a plain deque, through pushes, gaps, takes and front drops across chunks.
        let mut s = Slots::default();
        let mut d: VecDeque<Option<u8>> = VecDeque::new();
        let mut x = 7u32;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 7 {
                0..=2 => {
                    let v = (step % 250) as u8;
                    s.push(Some(e(v)));
                    d.push_back(Some(v));
                }
                3 => {
                    let n = (x / 7 % 200) as usize;
                    s.push_gaps(n);
                    d.extend(std::iter::repeat_n(None, n));
                }
                4 | 5 if !d.is_empty() => {
                    let i = (x / 7) as usize % d.len();
                    assert_eq!(s.take(i).map(|e| e.subject[0]), d[i].take());
                }
                _ => {
                    let mut n = 0;
                    while let Some(None) = d.front() {
                        d.pop_front();
                        n += 1;
                    }
                    assert_eq!(s.drop_front_gaps(), n);
                }
            }
            assert_eq!(s.len(), d.len());
            assert_eq!(
                (!s.is_empty()).then(|| s.get(0).is_some()),
                d.front().map(Option::is_some)
            );
            if step % 97 == 0 {
                let want: Vec<(usize, u8)> = d
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| Some((i, (*v)?)))
                    .collect();
                assert_eq!(live(&s), want);
                let from = (x as usize) % (d.len() + 2);
                let got: Vec<usize> = s.live_from(from).map(|(i, _)| i).collect();
                let want: Vec<usize> = want.iter().map(|w| w.0).filter(|&i| i >= from).collect();
                assert_eq!(got, want);
                for (i, v) in d.iter().enumerate() {
                    assert_eq!(s.get(i).map(|e| e.subject[0]), *v);
                }
            }
        }
    }

    #[test]
    fn a_long_run_of_gaps_costs_chunk_pointers_only() {
        let mut s = Slots::default();
        s.push(Some(e(1)));
        for _ in 0..1_000_000 {
            s.push(Some(e(2)));
            let last = s.len() - 1;
            if last > 1 {
                s.take(last - 1);
            }
        }
        assert_eq!(s.chunks.iter().filter(|c| c.is_some()).count(), 2);
        assert_eq!(live(&s), vec![(0, 1), (1_000_000, 2)]);
        s.take(0);
        assert_eq!(s.drop_front_gaps(), 1_000_000);
        assert_eq!(live(&s), vec![(0, 2)]);
        assert_eq!(s.chunks.len(), 1);
    }

    #[test]
    fn seq_sets_keep_runs_as_ranges() {
        let mut h = SeqSet::default();
        for seq in 2..1000 {
            h.insert(seq);
        }
        h.insert_range(1000, 1999);
        h.insert(5000);
        h.insert(4999);
        assert_eq!(h.ranges.len(), 2);
        assert_eq!(h.len(), 1998 + 2);
        assert_eq!(h.count_from(0), 2000);
        assert_eq!(h.count_from(1990), 10 + 2);
        assert_eq!(h.count_from(5000), 1);
        assert_eq!(h.count_from(5001), 0);
        h.remove_below(1500);
        assert_eq!(h.len(), 500 + 2);
        assert_eq!(h.iter().next(), Some(1500));
        h.remove_below(6000);
        assert!(h.is_empty());
        h.insert(u64::MAX);
        h.insert(u64::MAX - 1);
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![u64::MAX - 1, u64::MAX]);
    }
}
