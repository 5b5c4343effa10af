//! Messages stored under a sequence chosen elsewhere: a mirror's (its origin's numbering) and
//! a restored snapshot's (the numbering it was taken with).

use std::sync::Arc;

use junction_core::sync::Lock;

use super::{Entry, StoredMsg, Stream, StreamState, MAX_FILTERED_MIRROR_GAP, MAX_MIRROR_GAP};

impl Stream {
    /// Stores a mirrored message under its source's sequence (a mirror keeps the source's
    /// numbering; what the source no longer had becomes gaps).
    pub fn mirror_append(&self, m: &StoredMsg) {
        let far = {
            let st = self.state.locked();
            if m.seq <= st.last_seq {
                return;
            }
            // A filtered mirror skips what it does not take: its gaps are expected, and cost
            // 8 bytes per 64 sequences; a whole mirror's mean the origin lost messages.
            let whole = st
                .config
                .mirror
                .as_ref()
                .is_none_or(|m| m.filter_subject.is_empty() && m.subject_transforms.is_empty());
            let widest = if whole {
                MAX_MIRROR_GAP
            } else {
                MAX_FILTERED_MIRROR_GAP
            };
            (!st.slots.is_empty() && m.seq - st.last_seq > widest).then_some(widest)
        };
        if let Some(widest) = far {
            // A gap this wide (the origin was purged or compacted far past what the mirror
            // holds) starts the mirror again at the new sequence instead.
            tracing::warn!(
                stream = %self.name,
                seq = m.seq,
                "JetStream: the mirror's origin skipped over {widest} sequences; the mirror starts again there"
            );
            self.purge(None, None, None);
        }
        let mut st = self.state.locked();
        if far.is_some() {
            st.told_purge(None);
        }
        self.append_at(&mut st, m);
    }

    /// Stores a snapshot's message under its sequence and time, gaps before it included
    /// (however wide: a snapshot's gaps are the messages its stream had removed).
    pub fn restore_append(&self, m: &StoredMsg) {
        let mut st = self.state.locked();
        if m.seq > st.last_seq {
            self.append_at(&mut st, m);
        }
    }

    fn append_at(&self, st: &mut StreamState, m: &StoredMsg) {
        let mut copy = StoredMsg {
            seq: m.seq,
            subject: st.intern(&m.subject),
            headers: m.headers.clone(),
            payload: m.payload.clone(),
            ts: m.ts,
            on_disk: None,
        };
        self.store_record(st, &mut copy);
        let copy = Arc::new(copy);
        if st.slots.is_empty() {
            st.base = copy.seq;
            st.last_seq = copy.seq - 1;
        }
        let entry = Entry {
            subject: copy.subject.clone(),
            ts: copy.ts,
            size: copy.size_in(st.config.storage) as u32,
            headers: copy.headers.is_some(),
            hot: Some(copy),
        };
        st.restore(m.seq, entry);
        let subj = m.subject.clone();
        self.enforce_limits(st, &subj, m.seq, None);
        st.evict();
    }
}
