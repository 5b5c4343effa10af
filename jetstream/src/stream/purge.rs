//! Purges: everything, what a filter matches, below a sequence, or all but the newest.

use junction_core::sync::Lock;

use super::{matches_any, Stream, StreamState};
use crate::config::Storage;
use crate::persist;

impl Stream {
    /// Purges the stream (optionally only `filter`, below `seq`, keeping the newest `keep`).
    pub fn purge(&self, filter: Option<&str>, seq: Option<u64>, keep: Option<u64>) -> u64 {
        let mut st = self.state.locked();
        let filters: Vec<String> = filter.map(|f| vec![f.to_string()]).unwrap_or_default();
        // Without a filter, nats-server 2.10 compacts: everything below a sequence goes, and
        // a sequence past the end starts the stream over there (the next message gets it).
        // Its memory store takes `keep` as the last sequences (gaps count), its file store as
        // the newest messages (below).
        let compact_keep = st.config.storage == Storage::Memory;
        if filter.is_none() && (seq.is_some() || keep.is_none() || compact_keep) {
            let below = match (seq, keep) {
                (None, None) => {
                    let last = st.last_seq;
                    return self.purge_all(&mut st, last);
                }
                (Some(s), _) => s,
                (None, Some(k)) if k >= st.msgs => return 0,
                (None, Some(k)) => st.last_seq + 1 - k,
            };
            if below > st.last_seq {
                return self.purge_all(&mut st, below - 1);
            }
            let chosen: Vec<u64> = st.seqs().take_while(|&s| s < below).collect();
            return self.remove_many(&mut st, chosen);
        }
        let mut chosen: Vec<u64> = Vec::new();
        if let Some(k) = keep {
            // The newest `k` matching messages stay.
            let matching: Vec<u64> = st
                .seqs()
                .filter(|&s| {
                    st.entry(s)
                        .is_some_and(|m| matches_any(&filters, &m.subject))
                })
                .collect();
            let cut = matching.len().saturating_sub(k as usize);
            chosen.extend(matching[..cut].iter().copied());
        } else {
            chosen.extend(st.seqs().filter(|&s| {
                seq.is_none_or(|limit| s < limit)
                    && st
                        .entry(s)
                        .is_some_and(|m| matches_any(&filters, &m.subject))
            }));
        }
        if let Some(limit) = seq {
            chosen.retain(|&s| s < limit);
        }
        self.remove_many(&mut st, chosen)
    }

    /// Removes every message; the stream goes on after `last` (its last sequence, or a later
    /// one a compaction past the end names). Returns how many went.
    fn purge_all(&self, st: &mut StreamState, last: u64) -> u64 {
        let n = st.msgs;
        let (config, created, last_ts) = (st.config.clone(), st.created, st.last_ts);
        let interest = std::mem::take(&mut st.interest);
        let consumers = st.consumers;
        let sourced = std::mem::take(&mut st.sourced);
        let budget = st.budget.take();
        if let Some(b) = &budget {
            b.sub(st.bytes);
        }
        let pending = st.unsettled_blocks();
        let cold = st.cold.take();
        let group = st.group.take();
        // The duplicate window outlives a purge, as in nats-server.
        let dedup = std::mem::take(&mut st.dedup);
        let dedup_order = std::mem::take(&mut st.dedup_order);
        let last_msg_id = st.last_msg_id.take();
        *st = StreamState::new(config, created, last, last_ts);
        st.cold = cold;
        st.group = group;
        st.dedup = dedup;
        st.dedup_order = dedup_order;
        st.last_msg_id = last_msg_id;
        st.interest = interest;
        st.consumers = consumers;
        st.sourced = sourced;
        st.budget = budget;
        if let Some(store) = &self.store {
            for op in persist::purge_ops(self.uid) {
                store.submit(op);
            }
            self.keep_unsettled(st, pending);
            self.save_meta(st);
        }
        n
    }
}
