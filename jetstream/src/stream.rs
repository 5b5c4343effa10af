//! A stream: its messages by sequence, the limits that trim them, and the rules of a
//! publication (duplicates, expected-sequence headers, rollups, discard policies).
//!
//! A publication is stored on the publisher's own task, under the stream's lock, and its record
//! is submitted to the store there: an MQTT QoS 1 publisher's PUBACK (which waits for what its
//! publication submitted) then also waits for the stream's commit, and a NATS PubAck is sent by
//! the store once the commit is on the disk.
//!
//! A file stream keeps only its newest messages (up to [`HOT_BYTES`]) in memory: an older one
//! goes cold once its commit is on the disk, keeping its subject, time and size for the limits
//! and the subject index, and its body is read back from the store (with read-ahead, for
//! consumers catching up) when something needs it. At restart every message starts cold.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use junction_core::subject;
use junction_core::sync::Lock;
use junction_core::{Account, Subscription};
use junction_store::{Op, Store};

use crate::config::{Discard, Retention, Storage, StreamConfig};
use crate::errors::ApiError;
use crate::headers;
use crate::persist;

mod append;
mod budget;
mod purge;
mod records;
mod slots;

pub use budget::Budget;
use records::OpenBlock;
pub use records::{Block, Cold};
pub use slots::SeqSet;
use slots::Slots;

/// How many bytes of its newest messages a file stream keeps in memory; older ones are read
/// back from the store when needed.
pub const HOT_BYTES: u64 = 32 * 1024 * 1024;
/// A cold read fetches up to this many following messages (and bytes) with the one asked for.
const READ_AHEAD: u64 = 256;
const READ_AHEAD_BYTES: usize = 1024 * 1024;

/// One stored message.
#[derive(Debug, Default)]
pub struct StoredMsg {
    pub seq: u64,
    pub subject: Bytes,
    pub headers: Option<Bytes>,
    pub payload: Bytes,
    /// Unix time in nanoseconds.
    pub ts: i64,
    /// Set once the commit of the message's block is on the disk (a file stream may then let
    /// it go cold), shared by the messages of the block. `None`: on the disk already, or never
    /// going there.
    pub on_disk: Option<Arc<AtomicBool>>,
}

impl StoredMsg {
    /// Whether the message's record is on the disk (or it never goes there).
    fn is_on_disk(&self) -> bool {
        self.on_disk
            .as_ref()
            .is_none_or(|f| f.load(Ordering::Acquire))
    }
}

impl StoredMsg {
    /// The size nats-server accounts a stored message at in a file stream (its file store's
    /// record size).
    pub fn stored_size(&self) -> u64 {
        self.size_in(Storage::File)
    }

    /// The size nats-server accounts the message at in a stream of `storage`.
    pub fn size_in(&self, storage: Storage) -> u64 {
        let headers = self.headers.as_ref().map_or(0, Bytes::len);
        record_size(storage, self.subject.len(), headers, self.payload.len())
    }
}

/// What nats-server counts a message as in its `bytes` and limits: its file store's record
/// (length, sequence, time, subject length, subject, headers with their length when there
/// are any, payload, checksum), or its memory store's (subject, headers, payload, sequence and
/// time).
pub fn record_size(storage: Storage, subject: usize, headers: usize, payload: usize) -> u64 {
    let size = subject + headers + payload;
    (match storage {
        Storage::File if headers > 0 => size + 34,
        Storage::File => size + 30,
        Storage::Memory => size + 16,
    }) as u64
}

/// A stored message's slot: what the limits, the subject index and the consumers' filters
/// need, and the message itself while it is hot.
#[derive(Debug)]
pub struct Entry {
    pub subject: Bytes,
    /// Unix nanoseconds.
    pub ts: i64,
    size: u32,
    /// The message has a header block (which only a read of it can say more of: a restart
    /// reads back only these for the duplicate window's ids).
    headers: bool,
    hot: Option<Arc<StoredMsg>>,
}

impl Entry {
    /// A message held in memory.
    pub fn hot(m: StoredMsg) -> Entry {
        Entry {
            subject: m.subject.clone(),
            ts: m.ts,
            size: m.stored_size() as u32,
            headers: m.headers.is_some(),
            hot: Some(Arc::new(m)),
        }
    }

    /// A message only on the disk.
    pub fn cold(subject: Bytes, ts: i64, size: u64, headers: bool) -> Entry {
        Entry {
            subject,
            ts,
            size: size as u32,
            headers,
            hot: None,
        }
    }

    /// [`StoredMsg::stored_size`].
    pub fn stored_size(&self) -> u64 {
        self.size as u64
    }
}

/// The widest gap a mirror keeps between two of its messages (see [`Stream::mirror_append`]).
pub const MAX_MIRROR_GAP: u64 = 1 << 20;

/// The widest gap a filtered mirror keeps between two of its messages (64M sequences: 8 MB of
/// chunk pointers).
pub const MAX_FILTERED_MIRROR_GAP: u64 = 1 << 26;

/// A stream and what it holds. Shared by the publishers' sinks (which append) and the JetStream
/// task (which reads for consumers, trims by age and answers the API).
pub struct Stream {
    pub uid: u64,
    pub name: String,
    /// The name as a JSON string (the PubAck is written without a serializer).
    pub name_json: String,
    pub account: Arc<Account>,
    pub state: Mutex<StreamState>,
    /// The store, for file-backed streams when the server has one.
    pub store: Option<Arc<Store>>,
    /// Set when messages arrived that the JetStream task has not looked at yet.
    pub signaled: AtomicBool,
    /// The JetStream task wants to hear of new messages: the stream has a consumer, or another
    /// stream mirrors or sources it. Without either, a publication wakes nobody.
    pub watched: AtomicBool,
    /// The subscriptions that capture the stream's subjects.
    pub subs: Mutex<Vec<Arc<Subscription>>>,
}

/// What a publication became.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored under this sequence.
    New(u64),
    /// A duplicate (same `Nats-Msg-Id` within the window) of this sequence.
    Duplicate(u64),
}

/// A stream's messages and counters.
pub struct StreamState {
    pub config: StreamConfig,
    /// Unix nanoseconds.
    pub created: i64,
    /// Messages by `seq - base`, with gaps where one was removed.
    slots: Slots,
    /// The sequence of `slots[0]`; `last_seq + 1` when empty.
    base: u64,
    pub last_seq: u64,
    pub last_ts: i64,
    pub msgs: u64,
    pub bytes: u64,
    /// Gaps between the first and the last message.
    holes: SeqSet,
    /// Sequences of the stored messages by subject, oldest first.
    pub subjects: HashMap<Bytes, VecDeque<u64>>,
    dedup: HashMap<String, u64>,
    dedup_order: VecDeque<(i64, String)>,
    last_msg_id: Option<String>,
    /// The filters of each consumer, for interest retention (an empty list: everything).
    pub interest: Vec<Vec<String>>,
    pub consumers: usize,
    /// For a mirror or a stream with sources: the next sequence to copy from each source.
    pub sourced: BTreeMap<String, u64>,
    /// The account's bytes of this storage type, and their limit.
    pub budget: Option<Arc<Budget>>,
    /// Every message below this sequence is cold.
    hot_from: u64,
    /// Bytes of the hot messages.
    hot_bytes: u64,
    /// Where cold messages are read from (file streams on a store that can read; `None`: every
    /// message stays hot).
    cold: Option<Cold>,
    /// While a publication is stored on its publisher's task: the publisher's open store
    /// group, so the record commits with what else the publication made durable (an MQTT
    /// QoS 2 id, copies queued for sessions).
    pub group: junction_store::GroupSlot,
    /// A durable stream's blocks in the store, by first sequence.
    blocks: BTreeMap<u64, Block>,
    /// The newest block, while the group that holds it is open and may take more messages.
    open: Option<OpenBlock>,
    /// Blocks left without messages whose insert was not known to be committed yet: their
    /// messages got tombstones, and the blocks go once their commit is done.
    dead: Vec<u64>,
    /// The config's `subject_transform` and `republish`, made into transforms.
    transforms: Transforms,
    /// Removals the consumers have not been told of yet, told as nats-server tells them of a
    /// purge: a rollup (`Some(subject)` for one subject's) or a mirror starting over (`None`).
    /// The task takes them before its consumers send again ([`StreamState::take_purges`]).
    purges: Vec<Option<Bytes>>,
    /// A restore is filling the stream on a thread of its own: no metadata is written until
    /// the task takes it (a stop meanwhile leaves no stream behind).
    pub building: bool,
}

/// Untold purges kept apart at most; past it they fold into one of the whole stream, which
/// tells every consumer no more than that nothing below the first message is left.
const MAX_PURGES: usize = 1024;

/// A stream's subject transforms, and the config entries they were made from.
#[derive(Default)]
struct Transforms {
    made_from: (
        Option<crate::config::SubjectTransform>,
        Option<crate::config::RePublish>,
    ),
    input: Option<junction_core::transform::Transform>,
    republish: Option<junction_core::transform::Transform>,
}

/// Unix time now, in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl StreamState {
    pub fn new(config: StreamConfig, created: i64, last_seq: u64, last_ts: i64) -> Self {
        StreamState {
            config,
            created,
            slots: Slots::default(),
            base: last_seq + 1,
            last_seq,
            last_ts,
            msgs: 0,
            bytes: 0,
            holes: SeqSet::default(),
            subjects: HashMap::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            last_msg_id: None,
            interest: Vec::new(),
            consumers: 0,
            sourced: BTreeMap::new(),
            budget: None,
            hot_from: last_seq + 1,
            hot_bytes: 0,
            cold: None,
            group: None,
            blocks: BTreeMap::new(),
            open: None,
            dead: Vec::new(),
            transforms: Transforms::default(),
            purges: Vec::new(),
            building: false,
        }
    }

    /// Records a removal for the consumers (see `purges`); a stream without consumers keeps
    /// nothing.
    fn told_purge(&mut self, subject: Option<Bytes>) {
        if self.consumers == 0 {
            return;
        }
        if self.purges.len() >= MAX_PURGES {
            self.purges.clear();
            self.purges.push(None);
        } else if self.purges.last() != Some(&subject) {
            self.purges.push(subject);
        }
    }

    /// The removals the consumers have not been told of yet, oldest first.
    pub fn take_purges(&mut self) -> Vec<Option<Bytes>> {
        std::mem::take(&mut self.purges)
    }

    /// The transforms of the current config (made again when it changed).
    fn transforms(&mut self) -> &Transforms {
        let (t, r) = (&self.config.subject_transform, &self.config.republish);
        if self.transforms.made_from.0.as_ref() != t.as_ref()
            || self.transforms.made_from.1.as_ref() != r.as_ref()
        {
            let make = |src: &str, dest: &str| {
                junction_core::transform::Transform::new(src, dest)
                    .ok()
                    .flatten()
            };
            self.transforms = Transforms {
                input: t.as_ref().and_then(|t| make(&t.src, &t.dest)),
                republish: r.as_ref().and_then(|r| make(&r.src, &r.dest)),
                made_from: (t.clone(), r.clone()),
            };
        }
        &self.transforms
    }

    /// The subject a publication on `subject` is stored under when its `subject_transform`
    /// renames it (`None`: stored as it came).
    pub fn transformed_subject(&mut self, subject: &[u8]) -> Option<Bytes> {
        self.config.subject_transform.as_ref()?;
        let s = std::str::from_utf8(subject).ok()?;
        self.transforms().input.as_ref()?.apply(s).map(Bytes::from)
    }

    /// Where a message stored under `subject` is republished, if it is.
    pub fn republish_to(&mut self, subject: &[u8]) -> Option<String> {
        self.config.republish.as_ref()?;
        let s = std::str::from_utf8(subject).ok()?;
        self.transforms().republish.as_ref()?.apply(s)
    }

    /// Lets the stream keep its older messages on the disk only (a file stream).
    pub fn read_cold_from(&mut self, cold: Cold) {
        self.cold = Some(cold);
    }

    /// Whether older messages go cold.
    pub fn has_cold(&self) -> bool {
        self.cold.is_some()
    }

    /// Bytes of the messages held in memory.
    pub fn hot_bytes(&self) -> u64 {
        self.hot_bytes
    }

    /// Lets the oldest hot messages go cold, once they are on the disk, until what stays hot
    /// fits in the stream's limit ([`HOT_BYTES`] unless configured).
    fn evict(&mut self) {
        let Some(limit) = self.cold.as_ref().map(|c| c.hot_limit) else {
            return;
        };
        self.hot_from = self.hot_from.max(self.base);
        while self.hot_bytes > limit && self.hot_from <= self.last_seq {
            let i = (self.hot_from - self.base) as usize;
            if let Some(e) = self.slots.get_mut(i) {
                if let Some(m) = &e.hot {
                    if !m.is_on_disk() {
                        return;
                    }
                    self.hot_bytes -= e.size as u64;
                    e.hot = None;
                }
            }
            self.hot_from += 1;
        }
    }

    /// The first stored sequence (`last_seq + 1` when the stream is empty).
    pub fn first_seq(&self) -> u64 {
        self.base
    }

    pub fn first_ts(&self) -> i64 {
        self.slots.get(0).map_or(0, |m| m.ts)
    }

    /// The slot of message `seq`, when it is stored.
    pub fn entry(&self, seq: u64) -> Option<&Entry> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get(i)
    }

    /// Message `seq`, read back from the store when it is cold.
    pub fn load(&self, seq: u64) -> Option<Arc<StoredMsg>> {
        let e = self.entry(seq)?;
        match &e.hot {
            Some(m) => Some(m.clone()),
            None => self
                .cold
                .as_ref()?
                .load(self.block_of(seq)?, seq, self.last_seq),
        }
    }

    /// `subject` in memory of its own, shared with the stored messages on it.
    fn intern(&self, subject: &[u8]) -> Bytes {
        match self.subjects.get_key_value(subject) {
            Some((k, _)) => k.clone(),
            None => Bytes::copy_from_slice(subject),
        }
    }

    /// The stored messages with their sequences, oldest first.
    fn entries(&self) -> impl Iterator<Item = (u64, &Entry)> + '_ {
        let base = self.base;
        self.slots
            .live_from(0)
            .map(move |(i, e)| (base + i as u64, e))
    }

    /// The deleted sequences between the first and the last.
    pub fn holes(&self) -> &SeqSet {
        &self.holes
    }

    /// Attaches the account's budget (counting what the stream already holds).
    pub fn attach_budget(&mut self, budget: Arc<Budget>) {
        budget.add(self.bytes);
        self.budget = Some(budget);
    }

    /// Detaches the budget, giving back what the stream holds (the stream is deleted).
    pub fn release_budget(&mut self) {
        if let Some(b) = self.budget.take() {
            b.sub(self.bytes);
        }
    }

    /// Puts a message back (at restart, in sequence order, or a mirrored one).
    pub fn restore(&mut self, seq: u64, mut e: Entry) {
        if seq < self.base && !self.slots.is_empty() {
            return;
        }
        if self.slots.is_empty() {
            self.base = seq;
        }
        let end = self.base + self.slots.len() as u64;
        if end < seq {
            self.holes.insert_range(end, seq - 1);
            self.slots.push_gaps((seq - end) as usize);
        }
        self.last_seq = self.last_seq.max(seq);
        self.last_ts = self.last_ts.max(e.ts);
        // Messages on one subject share its bytes.
        if let Some((k, _)) = self.subjects.get_key_value(&e.subject) {
            e.subject = k.clone();
        }
        if e.hot.is_none() && self.hot_from <= seq {
            self.hot_from = seq + 1;
        }
        self.add(seq, e);
    }

    fn add(&mut self, seq: u64, e: Entry) {
        let size = e.stored_size();
        self.msgs += 1;
        self.bytes += size;
        if e.hot.is_some() {
            self.hot_bytes += size;
        }
        if let Some(b) = &self.budget {
            b.add(size);
        }
        self.subjects
            .entry(e.subject.clone())
            .or_default()
            .push_back(seq);
        self.slots.push(Some(e));
    }

    /// After a restart's messages are back: the sequences after the last of them up to the
    /// last one the stream handed out (as its metadata says) are gaps, so that the next
    /// message's sequence and its place agree.
    pub fn pad_to_last(&mut self) {
        if self.slots.is_empty() {
            self.base = self.last_seq + 1;
            return;
        }
        let end = self.base + self.slots.len() as u64;
        if end <= self.last_seq {
            self.holes.insert_range(end, self.last_seq);
            self.slots.push_gaps((self.last_seq + 1 - end) as usize);
        }
    }

    /// Sequence `seq`, the next one, is used by no message: a gap after the stored messages,
    /// or where the stream starts when it holds none.
    fn skip(&mut self, seq: u64) {
        if self.slots.is_empty() {
            self.base = seq + 1;
        } else {
            self.slots.push(None);
            self.holes.insert(seq);
        }
    }

    /// Removes one message; returns its slot when it was there.
    pub fn remove(&mut self, seq: u64) -> Option<Entry> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let m = self.slots.take(i)?;
        self.msgs -= 1;
        self.bytes -= m.stored_size();
        if m.hot.is_some() {
            self.hot_bytes -= m.stored_size();
        }
        if let Some(b) = &self.budget {
            b.sub(m.stored_size());
        }
        if let Some(q) = self.subjects.get_mut(&m.subject) {
            if q.front() == Some(&seq) {
                q.pop_front();
            } else if let Ok(p) = q.binary_search(&seq) {
                q.remove(p);
            }
            if q.is_empty() {
                self.subjects.remove(&m.subject);
            }
        }
        if i == 0 {
            // The gaps now at the front go, the removed slot first.
            self.base += self.slots.drop_front_gaps() as u64;
            self.holes.remove_below(self.base);
        } else {
            self.holes.insert(seq);
        }
        if self.slots.is_empty() {
            self.base = self.last_seq + 1;
            self.holes.clear();
        }
        Some(m)
    }

    /// The next stored sequence at or after `from` that matches `filters` (none: all).
    pub fn next_matching(&self, from: u64, filters: &[String]) -> Option<u64> {
        let from = from.max(self.base);
        if let [one] = filters {
            if !subject::has_wildcard(one.as_bytes()) {
                let q = self.subjects.get(one.as_bytes())?;
                let i = q.partition_point(|&s| s < from);
                return q.get(i).copied();
            }
        }
        let start = usize::try_from(from - self.base).unwrap_or(usize::MAX);
        self.slots
            .live_from(start)
            .find(|(_, e)| matches_any(filters, &e.subject))
            .map(|(i, _)| self.base + i as u64)
    }

    /// How many stored messages at or after `from` match `filters`; `all` says the filters
    /// cover every subject of the stream.
    pub fn count_from(&self, from: u64, filters: &[String], all: bool) -> u64 {
        let from = from.max(self.base);
        if from > self.last_seq {
            return 0;
        }
        if all || filters.is_empty() {
            return (self.last_seq - from + 1) - self.holes.count_from(from);
        }
        let mut n = 0;
        for (subj, q) in &self.subjects {
            if matches_any(filters, subj) {
                n += (q.len() - q.partition_point(|&s| s < from)) as u64;
            }
        }
        n
    }

    /// The last sequence of every subject matching `filters`, in sequence order.
    pub fn last_per_subject(&self, filters: &[String]) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .subjects
            .iter()
            .filter(|(s, _)| matches_any(filters, s))
            .filter_map(|(_, q)| q.back().copied())
            .collect();
        v.sort_unstable();
        v
    }

    /// The last message on a subject matching `filter`.
    pub fn last_by_subject(&self, filter: &str) -> Option<Arc<StoredMsg>> {
        let seq = if subject::has_wildcard(filter.as_bytes()) {
            self.subjects
                .iter()
                .filter(|(s, _)| subject::matches(filter.as_bytes(), s))
                .filter_map(|(_, q)| q.back().copied())
                .max()?
        } else {
            *self.subjects.get(filter.as_bytes())?.back()?
        };
        self.load(seq)
    }

    /// The first sequence at or after `ts` (Unix nanoseconds).
    pub fn seq_at_time(&self, ts: i64) -> u64 {
        self.entries()
            .find(|(_, m)| m.ts >= ts)
            .map_or(self.last_seq + 1, |(seq, _)| seq)
    }

    /// Sequences of the stored messages, oldest first.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries().map(|(seq, _)| seq)
    }

    /// Reads the duplicate window's message ids, and the last message's, back from the stored
    /// messages (after a restart or a restore, as nats-server rebuilds them), so that a
    /// publication repeated within the window is still a duplicate.
    pub fn rebuild_dedup(&mut self, now: i64) {
        let window = self.config.duplicate_window;
        let from = self.seq_at_time(now.saturating_sub(window.max(0)));
        // Only a message with headers can have an id (the others are not read back).
        let seqs: Vec<u64> = self
            .entries()
            .skip_while(|&(s, _)| s < from)
            .filter(|(s, e)| e.headers || *s == self.last_seq)
            .map(|(s, _)| s)
            .collect();
        for seq in seqs {
            let Some(m) = self.load(seq) else { continue };
            let id = m
                .headers
                .as_ref()
                .and_then(|h| headers::get(h, headers::MSG_ID));
            let id = id.filter(|id| !id.is_empty()).map(str::to_string);
            if let (Some(id), true) = (&id, window > 0) {
                self.dedup.insert(id.clone(), seq);
                self.dedup_order.push_back((m.ts, id.clone()));
            }
            if seq == self.last_seq {
                self.last_msg_id = id;
            }
        }
    }

    fn prune_dedup(&mut self, now: i64) {
        let window = self.config.duplicate_window;
        while let Some((ts, _)) = self.dedup_order.front() {
            if now - ts <= window {
                break;
            }
            let (_, id) = self.dedup_order.pop_front().expect("front exists");
            self.dedup.remove(&id);
        }
    }

    /// Whether some consumer's filters take `subject` (interest retention keeps nothing else).
    fn has_interest(&self, subject: &[u8]) -> bool {
        self.interest.iter().any(|f| matches_any(f, subject))
    }
}

/// Whether `subject` matches one of `filters` (no filters: every subject).
pub fn matches_any(filters: &[String], subject: &[u8]) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|f| subject::matches(f.as_bytes(), subject))
}

/// Why a publication was refused, or what it became.
pub type PublishResult = Result<Stored, ApiError>;

impl Stream {
    /// Whether the stream's records go to the store.
    pub fn durable(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Submits `op`, into the publisher's group when one is open in `st`.
    fn submit(&self, st: &mut StreamState, op: Op) {
        if let Some(s) = &self.store {
            s.submit_in(&mut st.group, op);
        }
    }

    /// Submits the stream's metadata record (after a change of config or when it empties, so a
    /// restart keeps its last sequence).
    /// It goes to the writer at once, never into a publisher's group: a group stays open
    /// while its publisher's batch is routed, and a record written meanwhile (a new config,
    /// the stream's removal) must not be overtaken by an older one.
    pub fn save_meta(&self, st: &mut StreamState) {
        if st.building {
            return;
        }
        if let Some(store) = &self.store {
            store.submit(persist::stream_meta_op(self, st));
        }
    }

    /// Removes `seqs` from the state and from the store.
    pub fn remove_many(&self, st: &mut StreamState, seqs: impl IntoIterator<Item = u64>) -> u64 {
        self.sweep_dead(st);
        let mut n = 0;
        let mut last = false;
        for seq in seqs {
            if st.remove(seq).is_some() {
                n += 1;
                last |= seq == st.last_seq;
                self.forget_record(st, seq);
            }
        }
        // The metadata keeps the last sequence when no stored message says it any more: a
        // restart must not hand it out again.
        if n > 0 && (st.msgs == 0 || last) {
            self.save_meta(st);
        }
        n
    }

    /// Stores one publication (on the publisher's task).
    pub fn publish(
        &self,
        subj: &Bytes,
        hdrs: Option<&Bytes>,
        payload: Bytes,
        now: i64,
    ) -> PublishResult {
        self.publish_locked(&mut self.state.locked(), subj, hdrs, payload, now)
    }

    /// [`Stream::publish`] under a lock the caller holds (it reads more of the state with it).
    pub fn publish_locked(
        &self,
        st: &mut StreamState,
        subj: &Bytes,
        hdrs: Option<&Bytes>,
        payload: Bytes,
        now: i64,
    ) -> PublishResult {
        let transformed = st.transformed_subject(subj);
        let subj = transformed.as_ref().unwrap_or(subj);
        let cfg = &st.config;
        if cfg.sealed {
            return Err(ApiError::sealed());
        }
        if cfg.max_msg_size >= 0
            && (hdrs.map_or(0, Bytes::len) + payload.len()) as i64 > cfg.max_msg_size
        {
            return Err(ApiError::message_too_big());
        }
        let h = hdrs.map(|b| &b[..]);
        let header = |name: &str| h.and_then(|b| headers::get(b, name));
        let msg_id = header(headers::MSG_ID).filter(|s| !s.is_empty());
        if let Some(expected) = header(headers::EXPECTED_STREAM) {
            if expected != self.name {
                return Err(ApiError::expected_stream_mismatch());
            }
        }
        if let Some(id) = msg_id {
            st.prune_dedup(now);
            if let Some(&seq) = st.dedup.get(id) {
                return Ok(Stored::Duplicate(seq));
            }
        }
        if let Some(v) = header(headers::EXPECTED_LAST_SEQ) {
            match v.parse::<u64>() {
                Ok(n) if n == st.last_seq => {}
                _ => return Err(ApiError::wrong_last_sequence(st.last_seq)),
            }
        }
        if let Some(v) = header(headers::EXPECTED_LAST_SUBJ_SEQ) {
            let last = st
                .subjects
                .get(&subj[..])
                .and_then(|q| q.back().copied())
                .unwrap_or(0);
            match v.parse::<u64>() {
                Ok(n) if n == last => {}
                _ => return Err(ApiError::wrong_last_sequence(last)),
            }
        }
        if let Some(v) = header(headers::EXPECTED_LAST_MSG_ID) {
            let last = st.last_msg_id.as_deref().unwrap_or("");
            if v != last {
                return Err(ApiError::wrong_last_msg_id(last));
            }
        }
        let rollup = match header(headers::ROLLUP) {
            None => None,
            Some(_) if !st.config.allow_rollup_hdrs => {
                return Err(ApiError::rollup_failed("rollup not permitted"))
            }
            Some("sub") => Some(false),
            Some("all") => {
                if st.config.deny_purge {
                    return Err(ApiError::rollup_failed("roll-ups not permitted"));
                }
                Some(true)
            }
            Some(other) => {
                return Err(ApiError::rollup_failed(&format!(
                    "rollup value invalid: {other:?}"
                )))
            }
        };
        let cfg = &st.config;
        let stored_size = record_size(
            cfg.storage,
            subj.len(),
            hdrs.map_or(0, Bytes::len),
            payload.len(),
        );
        if cfg.discard == Discard::New && rollup.is_none() {
            if cfg.max_msgs > 0 && st.msgs >= cfg.max_msgs as u64 {
                return Err(ApiError::store_failed("maximum messages exceeded"));
            }
            if cfg.max_bytes > 0 && st.bytes + stored_size > cfg.max_bytes as u64 {
                return Err(ApiError::store_failed("maximum bytes exceeded"));
            }
            if cfg.discard_new_per_subject
                && cfg.max_msgs_per_subject > 0
                && st.subjects.get(&subj[..]).map_or(0, VecDeque::len) as i64
                    >= cfg.max_msgs_per_subject
            {
                return Err(ApiError::store_failed(
                    "maximum messages per subject exceeded",
                ));
            }
        }
        if st.budget.as_ref().is_some_and(|b| b.server_full()) {
            return Err(ApiError::insufficient_resources());
        }
        if st
            .budget
            .as_ref()
            .is_some_and(|b| b.would_exceed(stored_size))
        {
            return Err(ApiError::new(
                400,
                10002,
                "resource limits exceeded for account",
            ));
        }
        let seq = st.last_seq + 1;
        // The subject and headers arrive as slices of the publisher's read buffer: kept as
        // they are, every stored message would keep a whole buffer alive.
        let subject = st.intern(subj);
        let mut m = StoredMsg {
            seq,
            subject: subject.clone(),
            headers: hdrs.map(|h| Bytes::copy_from_slice(h)),
            payload,
            ts: now,
            on_disk: None,
        };
        if st.slots.is_empty() {
            st.base = seq;
        }
        st.last_seq = seq;
        st.last_ts = now;
        if let Some(id) = msg_id {
            st.dedup.insert(id.to_string(), seq);
            st.dedup_order.push_back((now, id.to_string()));
            st.last_msg_id = Some(id.to_string());
        } else {
            st.last_msg_id = None;
        }
        let interest_kept = st.config.retention != Retention::Interest || st.has_interest(subj);
        if !interest_kept {
            // Nobody is interested: the sequence is used and nothing is kept (a gap, when
            // messages before it are).
            st.skip(seq);
            // No stored message says this sequence was used (see `remove_many`).
            self.save_meta(st);
            return Ok(Stored::New(seq));
        }
        self.store_record(st, &mut m);
        let m = Arc::new(m);
        st.add(
            seq,
            Entry {
                subject,
                ts: now,
                size: stored_size as u32,
                headers: m.headers.is_some(),
                hot: Some(m),
            },
        );
        self.enforce_limits(st, subj, seq, rollup);
        st.evict();
        Ok(Stored::New(seq))
    }

    /// Applies the per-subject, count and size limits (discard old) and a rollup.
    fn enforce_limits(&self, st: &mut StreamState, subj: &Bytes, seq: u64, rollup: Option<bool>) {
        let mut drop: Vec<u64> = Vec::new();
        // A rollup is a purge that keeps the new message, and its consumers take it as one
        // (nats-server purges with `keep: 1`, of the subject for `sub`).
        match rollup {
            Some(true) => {
                drop.extend(st.seqs().filter(|&s| s != seq));
                st.told_purge(None);
            }
            Some(false) => {
                if let Some(q) = st.subjects.get(&subj[..]) {
                    drop.extend(q.iter().copied().filter(|&s| s != seq));
                }
                st.told_purge(Some(subj.clone()));
            }
            None => {}
        }
        let per = st.config.max_msgs_per_subject;
        if per > 0 {
            if let Some(q) = st.subjects.get(&subj[..]) {
                let over = q.len().saturating_sub(per as usize);
                drop.extend(q.iter().take(over).copied());
            }
        }
        self.remove_many(st, drop);
        let (max_msgs, max_bytes) = (st.config.max_msgs, st.config.max_bytes);
        let mut old = Vec::new();
        if max_msgs > 0 || max_bytes > 0 {
            let (mut msgs, mut bytes) = (st.msgs, st.bytes);
            for (seq, m) in st.entries() {
                let over_msgs = max_msgs > 0 && msgs > max_msgs as u64;
                let over_bytes = max_bytes > 0 && bytes > max_bytes as u64;
                if !over_msgs && !over_bytes {
                    break;
                }
                msgs -= 1;
                bytes -= m.stored_size();
                old.push(seq);
            }
        }
        self.remove_many(st, old);
    }

    /// Removes what is older than `max_age`; returns how many.
    pub fn expire(&self, now: i64) -> u64 {
        let mut st = self.state.locked();
        let age = st.config.max_age;
        if age <= 0 {
            return 0;
        }
        let old: Vec<u64> = st
            .entries()
            .take_while(|(_, m)| now - m.ts > age)
            .map(|(seq, _)| seq)
            .collect();
        self.remove_many(&mut st, old)
    }

    pub fn storage(&self) -> Storage {
        self.state.locked().config.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untold_purges_stay_bounded_and_fold_into_one_of_everything() {
        let cfg: StreamConfig = serde_json::from_str(r#"{"name":"S"}"#).expect("config");
        let mut st = StreamState::new(cfg, 0, 0, 0);
        st.told_purge(None);
        assert!(st.take_purges().is_empty(), "no consumers, nothing to tell");
        st.consumers = 1;
        st.told_purge(Some(Bytes::from_static(b"a")));
        st.told_purge(Some(Bytes::from_static(b"a")));
        st.told_purge(None);
        assert_eq!(st.take_purges(), vec![Some(Bytes::from_static(b"a")), None]);
        for i in 0..MAX_PURGES + 5 {
            st.told_purge(Some(Bytes::from(format!("k.{i}"))));
        }
        let told = st.take_purges();
        assert!(
            told.len() <= MAX_PURGES && told.contains(&None),
            "{}",
            told.len()
        );
        assert!(st.take_purges().is_empty());
    }
}
