//! junction-store: durable state behind a small engine interface, and the group-commit writer
//! every user submits to. Nothing here knows a schema: each user (MQTT today, JetStream next)
//! declares its own [`Table`]s and the bytes of its records.
//!
//! Layout:
//! - [`engine`]: the [`Engine`] trait (atomic, durable commits and ordered scans), the [`Op`]s it
//!   applies, [`Table`], and [`MemoryEngine`] for tests and `--in-memory`.
//! - [`writer`]: [`Store`], the group-commit writer thread in front of an engine: submit
//!   operations, run something once they are durable, group what must commit together.
//! - `batch`: what the writer takes next, with inserts and their deletes paired as they arrive.
//! - [`embedded`]: the engine over redb, one file in the data directory.

mod batch;
pub mod embedded;
pub mod engine;
mod sync;
pub mod wal;
pub mod writer;

pub use embedded::{open, open_synced, Redb, FILE_NAME};
pub use engine::{
    Engine, MemoryEngine, OnDurable, Op, RangeVisit, Reader, StoreError, Table, Visit,
};
pub use wal::SyncPolicy;
pub use writer::{GroupSlot, OpRef, Store, StoreStats, Then, Wake, Wakes, COMMIT_BUCKETS_MICROS};
