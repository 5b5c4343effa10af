//! JetStream driven synchronously, without a runtime, for the fuzz target and unit tests:
//! requests and publications go in, what reaches `_INBOX.>` comes out. Without a store by
//! default; [`Harness::with_store`] puts file streams on an in-memory engine behind the real
//! group-commit writer, so their messages go cold and are read back.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use junction_core::sync::Lock;
use junction_core::{Account, Bus, ConnId, Delivery, FlushBatch, Message, Sink, Subscription};
use tokio::sync::Notify;

use crate::persist::Restored;
use crate::service::{Counters, Options, Shared, Task};
use crate::stream::HOT_BYTES;

/// The server limits of a harness that names none: 1 GiB each.
const UNLIMITED: (i64, i64) = (1 << 30, 1 << 30);

/// A publication for [`Harness::publish_batch`]: subject, reply subject, payload.
pub type Publication<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// Collects what reaches a subscription (the harness's replies).
struct Collect(Mutex<Vec<Message>>);

impl Sink for Collect {
    fn deliver(&self, _sub: &Subscription, msg: &Message, _batch: &mut FlushBatch) -> Delivery {
        self.0.locked().push(msg.clone());
        Delivery::Queued
    }

    fn flush(&self) {}
}

/// JetStream driven synchronously, without a runtime or a store: requests and publications go
/// in, the replies and deliveries to `_INBOX.>` come out. For the fuzz target and unit tests.
#[doc(hidden)]
pub struct Harness {
    task: Task,
    account: Arc<Account>,
    inbox: Arc<Collect>,
    inbox_sub: Arc<Subscription>,
    store: Option<Arc<junction_store::Store>>,
    /// The tables under the store ("the disk"), for a restart.
    disk: Option<junction_store::MemoryEngine>,
    hot_bytes: u64,
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Subscriptions hold sinks that hold the account: unsubscribing breaks the cycles.
        self.task.shutdown();
        self.account.unsubscribe(&self.inbox_sub);
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        Self::build(None, HOT_BYTES, None, Restored::default(), UNLIMITED)
    }

    /// A harness (without a store) whose server allows `max_memory` bytes in memory streams
    /// and `max_store` in file streams (`max_memory_store`, `max_file_store`).
    pub fn with_server_limits(max_memory: i64, max_store: i64) -> Harness {
        Self::build(
            None,
            HOT_BYTES,
            None,
            Restored::default(),
            (max_memory, max_store),
        )
    }

    /// A harness whose file streams are stored (on an in-memory engine) and keep at most
    /// `hot_bytes` of their newest messages in memory.
    pub fn with_store(hot_bytes: u64) -> Harness {
        let disk = junction_store::MemoryEngine::default();
        let store = junction_store::Store::start(Box::new(disk.share()));
        Self::build(
            Some(store),
            hot_bytes,
            Some(disk),
            Restored::default(),
            UNLIMITED,
        )
    }

    /// Stops this harness's store cleanly and starts a new harness on what it left: streams,
    /// messages and consumers come back as after a restart.
    pub fn restarted(mut self) -> Harness {
        let disk = self.disk.take().expect("a harness with a store");
        if let Some(store) = &self.store {
            store.close();
        }
        let hot_bytes = self.hot_bytes;
        drop(self);
        let restored = crate::persist::restore(&disk).expect("the tables read back");
        let store = junction_store::Store::start(Box::new(disk.share()));
        Self::build(Some(store), hot_bytes, Some(disk), restored, UNLIMITED)
    }

    /// The keys of `table` on "the disk".
    pub fn stored_keys(&self, table: junction_store::Table) -> Vec<Vec<u8>> {
        self.wait_for_store();
        let mut keys = Vec::new();
        if let Some(disk) = &self.disk {
            let _ = junction_store::Engine::scan(disk, table, &mut |k, _| {
                keys.push(k.to_vec());
                Ok(())
            });
        }
        keys
    }

    fn build(
        store: Option<Arc<junction_store::Store>>,
        hot_bytes: u64,
        disk: Option<junction_store::MemoryEngine>,
        restored: Restored,
        limits: (i64, i64),
    ) -> Harness {
        let bus = Arc::new(Bus::new());
        let origin = bus.next_conn_id();
        let shared = Arc::new(Shared {
            acks: Default::default(),
            bus: bus.clone(),
            store: store.clone(),
            opts: Options {
                max_memory: limits.0,
                max_store: limits.1,
                store_dir: String::new(),
                domain: None,
                accounts: None,
                system_account: String::new(),
                limits: HashMap::new(),
                hot_bytes,
                server_name: "harness".into(),
                sync_interval: None,
            },
            inbox: Default::default(),
            notify: Notify::new(),
            counters: Counters::default(),
            origin,
            next_uid: AtomicU64::new(1),
            server_memory: crate::stream::Budget::new(limits.0),
            server_storage: crate::stream::Budget::new(limits.1),
            dropped: Default::default(),
        });
        let mut task = Task {
            shared,
            accounts: HashMap::new(),
            touched: Default::default(),
            out: Vec::new(),
            after_commit: Vec::new(),
            held: Default::default(),
            paced: Default::default(),
            refusing: Vec::new(),
            disabled: HashMap::new(),
            watch_dirty: true,
            externals: HashMap::new(),
            backups: Default::default(),
        };
        task.enable(junction_core::DEFAULT_ACCOUNT, Default::default());
        task.restore(restored);
        let account = bus.default_account();
        let inbox = Arc::new(Collect(Mutex::new(Vec::new())));
        let sink: Arc<dyn Sink> = inbox.clone();
        let sub = Arc::new(Subscription::new(
            bus.next_conn_id(),
            Bytes::from_static(b"_INBOX.>"),
            None,
            Bytes::new(),
            false,
            sink,
        ));
        account.subscribe(sub.clone()).expect("a valid subject");
        Harness {
            task,
            account,
            inbox,
            inbox_sub: sub,
            store,
            disk,
            hot_bytes,
        }
    }

    /// Bytes of stream `name`'s messages held in memory, and how many it holds.
    pub fn stream_memory(&self, name: &str) -> Option<(u64, u64)> {
        let acc = self.task.accounts.get(junction_core::DEFAULT_ACCOUNT)?;
        let st = acc.streams.get(name)?.stream.state.locked();
        Some((st.hot_bytes(), st.msgs))
    }

    /// Waits until the store committed everything submitted so far and ran what waited for it
    /// (the writer runs a commit's callbacks before it takes the next batch, so the second
    /// wait covers the first one's).
    fn wait_for_store(&self) {
        let Some(store) = &self.store else { return };
        for _ in 0..2 {
            let (tx, rx) = std::sync::mpsc::channel();
            store.then(Box::new(move |_| {
                let _ = tx.send(());
            }));
            let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
        }
    }

    /// Publishes `payload` on `subject` (with `reply`, if any) and lets JetStream act on
    /// everything it caused; returns what reached `_INBOX.>`.
    pub fn publish(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        payload: &[u8],
    ) -> Vec<Message> {
        if !junction_core::subject::is_valid_literal_subject(subject) {
            return Vec::new();
        }
        let msg = Message::new(
            Bytes::copy_from_slice(subject),
            reply.map(Bytes::copy_from_slice),
            Bytes::copy_from_slice(payload),
            ConnId(u64::MAX),
        );
        self.account.publish_one(&msg);
        self.settle()
    }

    /// Publishes every `(subject, reply, payload)` of `msgs` in one batch, as a NATS client's
    /// read batch is (what the batch stores commits together); returns what reached
    /// `_INBOX.>`.
    pub fn publish_batch(&mut self, msgs: &[Publication<'_>]) -> Vec<Message> {
        let batch = self.publish_unfinished(msgs);
        self.finish(batch)
    }

    /// Publishes `msgs` into one batch and returns it unfinished: what the batch stores waits
    /// in its open store group, as a publisher's does while its batch is being routed on
    /// another thread. [`Harness::finish`] ends it.
    pub fn publish_unfinished(&mut self, msgs: &[Publication<'_>]) -> FlushBatch {
        let mut batch = FlushBatch::default();
        let mut cache = junction_core::MatchCache::new(false);
        for (subject, reply, payload) in msgs {
            if !junction_core::subject::is_valid_literal_subject(subject) {
                continue;
            }
            let msg = Message::new(
                Bytes::copy_from_slice(subject),
                reply.map(Bytes::copy_from_slice),
                Bytes::copy_from_slice(payload),
                ConnId(u64::MAX),
            );
            self.account.publish(&mut cache, &msg, &mut batch);
        }
        batch
    }

    /// Ends a batch from [`Harness::publish_unfinished`]; returns what reached `_INBOX.>`.
    pub fn finish(&mut self, mut batch: FlushBatch) -> Vec<Message> {
        batch.wake_all();
        self.settle()
    }

    /// Runs the timers once (redeliveries due, requests expired, idle consumers).
    pub fn tick(&mut self) -> Vec<Message> {
        self.task.tick();
        self.settle()
    }

    fn settle(&mut self) -> Vec<Message> {
        // Bounded: each round handles what the previous one queued.
        for _ in 0..64 {
            self.wait_for_store();
            let inputs = self.task.shared.take_inbox();
            if inputs.is_empty() && self.task.touched.is_empty() {
                break;
            }
            for input in inputs {
                self.task.handle(input);
            }
            self.task.flush();
        }
        self.task.flush();
        std::mem::take(&mut *self.inbox.0.locked())
    }
}
