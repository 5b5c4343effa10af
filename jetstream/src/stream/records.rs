//! A durable stream's records in the store: the blocks its publications fill (see
//! [`crate::persist`]), their removal in an order the writer cannot get wrong, and the cold
//! reads that bring messages back from them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use junction_store::{Op, Reader};

use super::{StoredMsg, Stream, StreamState, READ_AHEAD, READ_AHEAD_BYTES};
use crate::persist;

/// One of a file stream's records in the store: a block of messages (see [`persist`]).
#[derive(Debug, Default, Clone)]
pub struct Block {
    /// Messages written into it.
    pub written: u32,
    /// Of those, still stored.
    pub live: u32,
    /// Set once the commit that inserts it is done (`None`: known to be done). Until then its
    /// insert may still wait in a publisher's open group on another thread, and removing the
    /// block from the store could reach the writer before it: the block would come back.
    pub committed: Option<Arc<AtomicBool>>,
}

impl Block {
    fn settled(&self) -> bool {
        self.committed
            .as_ref()
            .is_none_or(|f| f.load(Ordering::Acquire))
    }
}

/// The block the publisher's open store group is still filling.
pub(super) struct OpenBlock {
    op: junction_store::OpRef,
    first: u64,
    last: u64,
    on_disk: Option<Arc<AtomicBool>>,
}

/// How a file stream reads its cold messages back: the store's reader, and the messages of
/// the last read (a consumer catching up asks for them next).
pub struct Cold {
    reader: Arc<dyn Reader>,
    uid: u64,
    /// Bytes of the newest messages kept hot.
    pub(super) hot_limit: u64,
    ahead: RefCell<VecDeque<Arc<StoredMsg>>>,
}

impl Cold {
    pub fn new(reader: Arc<dyn Reader>, uid: u64, hot_limit: u64) -> Cold {
        Cold {
            reader,
            uid,
            hot_limit,
            ahead: RefCell::new(VecDeque::new()),
        }
    }

    /// Reads message `seq` of the block that starts at `first` (and what follows it, up to
    /// `last`) from the store.
    pub(super) fn load(&self, first: u64, seq: u64, last: u64) -> Option<Arc<StoredMsg>> {
        let mut ahead = self.ahead.borrow_mut();
        if let Ok(i) = ahead.binary_search_by_key(&seq, |m| m.seq) {
            return Some(ahead[i].clone());
        }
        ahead.clear();
        let end = seq.saturating_add(READ_AHEAD).min(last.saturating_add(1));
        let (from, to) = (
            persist::msg_key(self.uid, first),
            persist::msg_key(self.uid, end.max(seq + 1)),
        );
        let mut bytes = 0;
        let read = self.reader.range(persist::BLOCKS, &from, &to, &mut |k, v| {
            let Some(first) = persist::block_first(k) else {
                return true;
            };
            // One copy of the block; its messages share it.
            let block = Bytes::copy_from_slice(v);
            let whole = persist::read_block(first, &block, &mut |at, range| {
                if at < seq {
                    return true;
                }
                if let Some(m) = persist::decode_shared(at, &block.slice(range)) {
                    bytes += m.stored_size() as usize;
                    ahead.push_back(Arc::new(m));
                }
                bytes < READ_AHEAD_BYTES && (ahead.len() as u64) < READ_AHEAD
            });
            if whole.is_err() {
                tracing::error!(first, "a JetStream block in the store is cut short");
            }
            bytes < READ_AHEAD_BYTES && (ahead.len() as u64) < READ_AHEAD
        });
        if let Err(e) = read {
            tracing::error!(error = %e, seq, "cannot read a JetStream message back from the store");
            ahead.clear();
            return None;
        }
        let found = ahead.front().filter(|m| m.seq == seq).cloned();
        if found.is_none() {
            tracing::error!(
                seq,
                "a JetStream message is missing from the store (its record could not be read)"
            );
        }
        found
    }
}

impl StreamState {
    /// The blocks of a stream read back at start (with [`StreamState::restore`]).
    pub fn restore_blocks(&mut self, blocks: impl IntoIterator<Item = (u64, Block)>) {
        self.blocks.extend(blocks);
    }

    /// The first sequence of the block that holds `seq`.
    pub(super) fn block_of(&self, seq: u64) -> Option<u64> {
        self.blocks
            .range(..=seq)
            .next_back()
            .map(|(first, _)| *first)
    }

    /// The blocks whose insert may still wait in a publisher's open group, each with the
    /// sequence after its last (the next block's first).
    pub(super) fn unsettled_blocks(&self) -> Vec<(u64, Block, u64)> {
        let firsts: Vec<u64> = self.blocks.keys().copied().collect();
        firsts
            .iter()
            .enumerate()
            .filter(|(_, f)| !self.blocks[*f].settled())
            .map(|(i, f)| {
                let end = firsts.get(i + 1).copied().unwrap_or(self.last_seq + 1);
                (*f, self.blocks[f].clone(), end)
            })
            .collect()
    }
}

impl Stream {
    /// Submits a new message's record: into the newest block while the publisher's group
    /// that holds it is still open (the messages of one commit share one record), or as a
    /// new block. A stream whose messages go cold learns when it is on the disk, through the
    /// flag set in `m`.
    pub(super) fn store_record(&self, st: &mut StreamState, m: &mut StoredMsg) {
        let Some(store) = &self.store else { return };
        let st = &mut *st;
        if let Some(open) = st.open.as_mut().filter(|o| m.seq > o.last) {
            if let Some(Op::Insert { value, .. }) = store.op_in(&mut st.group, open.op) {
                if persist::block_has_room(value, m, open.first) {
                    persist::append_to_block(value, open.first, m);
                    open.last = m.seq;
                    m.on_disk = open.on_disk.clone();
                    if let Some(b) = st.blocks.get_mut(&open.first) {
                        b.written += 1;
                        b.live += 1;
                    }
                    return;
                }
            }
        }
        self.sweep_dead(st);
        let mut block = Vec::with_capacity(256);
        persist::append_to_block(&mut block, m.seq, m);
        let op = store.submit_open_in(&mut st.group, persist::block_op(self.uid, m.seq, block));
        let flag = Arc::new(AtomicBool::new(false));
        let set = flag.clone();
        store.then_in(
            &mut st.group,
            Box::new(move |_| set.store(true, Ordering::Release)),
        );
        st.blocks.insert(
            m.seq,
            Block {
                written: 1,
                live: 1,
                // Submitted on its own, it is in the writer's queue already: what follows it
                // there comes after it.
                committed: op.is_some().then(|| flag.clone()),
            },
        );
        m.on_disk = Some(flag);
        st.open = op.map(|op| OpenBlock {
            op,
            first: m.seq,
            last: m.seq,
            on_disk: m.on_disk.clone(),
        });
    }

    /// Submits what removing stored message `seq` changes in the store: a tombstone, or the
    /// removal of its block with its last message.
    ///
    /// A block is removed only after its insert: when the insert is in the group open here
    /// (the removal joins the group after it), or once its commit is done. Otherwise the last
    /// message gets a tombstone like the others, and the block goes later
    /// ([`Stream::sweep_dead`], or at the next start).
    pub(super) fn forget_record(&self, st: &mut StreamState, seq: u64) {
        let Some(store) = &self.store else { return };
        let Some(first) = st.block_of(seq) else {
            return;
        };
        let Some(b) = st.blocks.get_mut(&first) else {
            return;
        };
        b.live = b.live.saturating_sub(1);
        let (last, tombs, settled) = (b.live == 0, b.written > 1, b.settled());
        let ours = match &st.open {
            Some(o) if o.first == first => store.op_in(&mut st.group, o.op).is_some(),
            _ => false,
        };
        let remove = last && (ours || settled);
        if last && !remove {
            st.dead.push(first);
        }
        if remove {
            st.blocks.remove(&first);
            if st.open.as_ref().is_some_and(|o| o.first == first) {
                st.open = None;
            }
        }
        for op in persist::remove_ops(self.uid, first, seq, remove, tombs || !remove) {
            self.submit(st, op);
        }
    }

    /// Removes the blocks left without messages whose commit is done now (see
    /// [`Stream::forget_record`]).
    pub(super) fn sweep_dead(&self, st: &mut StreamState) {
        if st.dead.is_empty() {
            return;
        }
        let mut ops = Vec::new();
        let dead = std::mem::take(&mut st.dead);
        for first in dead {
            let Some(b) = st.blocks.get(&first) else {
                continue;
            };
            if b.live > 0 {
                // Its publisher added to it since: its tombstones keep the removed ones out.
                continue;
            }
            if !b.settled() {
                st.dead.push(first);
                continue;
            }
            st.blocks.remove(&first);
            if st.open.as_ref().is_some_and(|o| o.first == first) {
                st.open = None;
            }
            ops.extend(persist::remove_ops(self.uid, first, first, true, true));
        }
        for op in ops {
            self.submit(st, op);
        }
    }

    /// After a full purge (whose prefix removals may reach the writer before blocks still in
    /// a publisher's open group): tombstones for those blocks' sequences, and the blocks kept
    /// to go once committed.
    pub(super) fn keep_unsettled(&self, st: &mut StreamState, pending: Vec<(u64, Block, u64)>) {
        let Some(store) = &self.store else { return };
        for (first, mut b, end) in pending {
            for seq in first..end {
                for op in persist::remove_ops(self.uid, first, seq, false, true) {
                    store.submit(op);
                }
            }
            b.live = 0;
            st.blocks.insert(first, b);
            st.dead.push(first);
        }
    }
}
