//! The batch the store's writer takes next: what was submitted since it last looked, with each
//! insert paired with a later delete or put of the same key as they arrive, so that a message
//! acknowledged before its commit never reaches the engine.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::mpsc;

use crate::engine::{Op, Table};
use crate::writer::Then;

/// Everything submitted since the writer last took a batch. Submitters add to it under a
/// lock, and the pairing of inserts with their deletes happens here, as they arrive, so the
/// writer's time between commits goes to the engine alone.
#[derive(Default)]
pub(crate) struct Batch {
    /// The ops in order; `None` where an op was cancelled or merged into its insert.
    pub(crate) ops: Vec<Option<Op>>,
    /// Callbacks waiting for this batch's commit.
    pub(crate) thens: Vec<Then>,
    /// Live inserts of this batch by the hash of their table and key (a collision only costs a
    /// missed cancellation; the key itself is compared before anything is dropped).
    inserted: HashMap<u64, usize, std::hash::BuildHasherDefault<Passthrough>>,
    /// Ops dropped before reaching the engine.
    pub(crate) cancelled: u64,
    /// Stop after committing this batch.
    pub(crate) stop: Option<mpsc::Sender<()>>,
}

fn key_hash(table: Table, key: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(table.name().as_bytes());
    h.write(&[0xff]);
    h.write(key);
    h.finish()
}

impl Batch {
    /// Ops and callbacks: how much a commit of this batch would carry (see the writer's
    /// `OVERLAP_WEIGHT`).
    pub(crate) fn weight(&self) -> usize {
        self.ops.len() + self.thens.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.thens.is_empty() && self.stop.is_none()
    }

    /// The live insert of `key` in this batch, if any.
    fn live_insert(&self, h: u64, table: Table, key: &[u8]) -> Option<usize> {
        let &i = self.inserted.get(&h)?;
        match &self.ops[i] {
            Some(Op::Insert {
                table: t, key: k, ..
            }) if *t == table && k.as_slice() == key => Some(i),
            _ => None,
        }
    }

    /// Adds one op. An insert deleted within the same batch (a message acknowledged before the
    /// commit that would have stored it) is dropped with its delete and never reaches the
    /// engine; a put to a key inserted in this batch replaces the insert's value.
    pub(crate) fn add(&mut self, op: Op) {
        match op {
            Op::Insert { table, ref key, .. } => {
                let h = key_hash(table, key);
                self.inserted.insert(h, self.ops.len());
            }
            Op::Put { table, key, value } => {
                let h = key_hash(table, &key);
                if let Some(i) = self.live_insert(h, table, &key) {
                    if let Some(Op::Insert { value: v, .. }) = &mut self.ops[i] {
                        *v = value;
                    }
                    self.cancelled += 1;
                    return;
                }
                self.ops.push(Some(Op::Put { table, key, value }));
                return;
            }
            Op::Delete { table, ref key } => {
                let h = key_hash(table, key);
                if let Some(i) = self.live_insert(h, table, key) {
                    self.ops[i] = None;
                    self.inserted.remove(&h);
                    self.cancelled += 2;
                    return;
                }
            }
            // Nothing inserted before a prefix delete may be merged with or cancelled by what
            // comes after it.
            Op::DeletePrefix { .. } => self.inserted.clear(),
        }
        self.ops.push(Some(op));
    }

    /// Empties the batch, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.ops.clear();
        self.inserted.clear();
        self.cancelled = 0;
    }
}

/// FNV-1a: the writer hashes every key of a commit, and these keys come from the server itself,
/// so a fast hash beats a DoS-resistant one here.
#[derive(Default)]
pub(crate) struct Fnv(u64);

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

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct Passthrough(u64);

impl std::hash::Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
