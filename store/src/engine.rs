//! The engine interface: what the writer asks of a storage engine, the operations it applies,
//! and the tables they name. Each user of the store declares its own tables (MQTT its sessions,
//! messages and retained messages; JetStream its streams), so no schema lives here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// A table (a keyspace) of the durable state, declared by the store's user as a constant:
/// `const SESSIONS: Table = Table::new("sessions");`. Its name is its identity, on the disk too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table(&'static str);

impl Table {
    /// A table named `name` (ASCII, unique among the store's users).
    pub const fn new(name: &'static str) -> Self {
        Table(name)
    }

    /// The table's name in the engine.
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// One change to the durable state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Inserts a key that never existed before (a new sequence number): when a `Delete` of it
    /// follows in the same commit, the writer drops both and the engine never sees them.
    Insert {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Inserts or replaces a value.
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes a key (absent keys are fine).
    Delete { table: Table, key: Vec<u8> },
    /// Removes every key that starts with `prefix`.
    DeletePrefix { table: Table, prefix: Vec<u8> },
}

impl Op {
    /// The table the operation changes.
    pub fn table(&self) -> Table {
        match self {
            Op::Insert { table, .. }
            | Op::Put { table, .. }
            | Op::Delete { table, .. }
            | Op::DeletePrefix { table, .. } => *table,
        }
    }
}

/// Why the store failed; names the file where there is one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Engine(String),
}

/// What a scan calls with each key and value.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// What a range read calls with each key and value; `false` stops the read.
pub type RangeVisit<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

/// What an engine calls, from any thread, when commits became durable: with the number of the
/// last durable one, or `None` once commits failed.
pub type OnDurable = Arc<dyn Fn(Option<u64>) + Send + Sync>;

/// An embedded (or remote) engine: atomic, durable commits and ordered scans.
pub trait Engine: Send + 'static {
    /// Applies `ops` in order, atomically, and returns once they are durable.
    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError>;
    /// Calls `each` with every key and value of `table`, in key order.
    fn scan(&self, table: Table, each: &mut Visit<'_>) -> Result<(), StoreError>;
    /// A handle that reads committed state from any thread while the writer commits (`None`:
    /// the engine cannot, and its users keep what they need in memory).
    fn reader(&self) -> Option<Arc<dyn Reader>> {
        None
    }
    /// Starts committing `ops` after everything started before: they are applied at once
    /// (readers see them) and become durable later, in order. Returns the commit's number,
    /// which [`Engine::durable`] reaches once it is durable (`None`: durable already). An
    /// engine that cannot overlap commits commits here and returns `None`.
    fn start(&mut self, ops: &[Op]) -> Result<Option<u64>, StoreError> {
        self.commit(ops).map(|()| None)
    }
    /// The number of the last durable commit (every one before it is durable too), or the
    /// error that stopped commits becoming durable.
    fn durable(&self) -> Result<u64, StoreError> {
        Ok(u64::MAX)
    }
    /// How many commits [`Engine::start`] may have in flight (started, not yet durable).
    fn max_in_flight(&self) -> u64 {
        1
    }
    /// Has `f` called, from any thread, whenever started commits become durable, with the
    /// number of the last durable one (`None`: commits failed).
    fn on_durable(&mut self, f: OnDurable) {
        let _ = f;
    }
}

/// Reads what the engine has committed, from any thread, without waiting for the writer.
/// A read sees every commit that finished before it started.
pub trait Reader: Send + Sync {
    /// Calls `each` with the keys and values of `table` from `from` (inclusive) to `to`
    /// (exclusive), in key order, until it returns `false`.
    fn range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        each: &mut RangeVisit<'_>,
    ) -> Result<(), StoreError>;
}

type Tables = HashMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

/// An engine in memory, for tests and for `--in-memory`: commits are instant and nothing
/// survives the process.
#[derive(Default)]
pub struct MemoryEngine {
    tables: Arc<RwLock<Tables>>,
}

struct MemoryReader(Arc<RwLock<Tables>>);

impl Reader for MemoryReader {
    fn range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        each: &mut RangeVisit<'_>,
    ) -> Result<(), StoreError> {
        let tables = self.0.read().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tables.get(&table) {
            for (k, v) in t.range::<[u8], _>((
                std::ops::Bound::Included(from),
                std::ops::Bound::Excluded(to),
            )) {
                if !each(k, v) {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl MemoryEngine {
    /// Another engine over the same tables (a test's view of what "the disk" holds, or the
    /// engine a restarted store opens).
    pub fn share(&self) -> MemoryEngine {
        MemoryEngine {
            tables: self.tables.clone(),
        }
    }
}

impl Engine for MemoryEngine {
    fn reader(&self) -> Option<Arc<dyn Reader>> {
        Some(Arc::new(MemoryReader(self.tables.clone())))
    }

    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        for op in ops {
            match op {
                Op::Insert { table, key, value } | Op::Put { table, key, value } => {
                    tables
                        .entry(*table)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                Op::Delete { table, key } => {
                    if let Some(t) = tables.get_mut(table) {
                        t.remove(key);
                    }
                }
                Op::DeletePrefix { table, prefix } => {
                    if let Some(t) = tables.get_mut(table) {
                        t.retain(|k, _| !k.starts_with(prefix));
                    }
                }
            }
        }
        Ok(())
    }

    fn scan(&self, table: Table, each: &mut Visit<'_>) -> Result<(), StoreError> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tables.get(&table) {
            for (k, v) in t {
                each(k, v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Table = Table::new("t");

    fn put(n: u8) -> Op {
        Op::Put {
            table: T,
            key: vec![n],
            value: vec![],
        }
    }

    #[test]
    fn the_memory_engine_applies_in_order() {
        let mut m = MemoryEngine::default();
        m.commit(&[
            put(1),
            put(2),
            Op::Put {
                table: T,
                key: vec![3, 1],
                value: vec![9],
            },
            Op::Delete {
                table: T,
                key: vec![1],
            },
            Op::DeletePrefix {
                table: T,
                prefix: vec![3],
            },
        ])
        .unwrap();
        let mut keys = Vec::new();
        m.scan(T, &mut |k, _| {
            keys.push(k.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(keys, vec![vec![2]]);
        m.scan(Table::new("never written"), &mut |_, _| panic!("empty"))
            .unwrap();
        let reader = m.reader().expect("the memory engine reads");
        m.commit(&[put(4), put(5), put(6)]).unwrap();
        let mut seen = Vec::new();
        reader
            .range(T, &[3], &[6], &mut |k, _| {
                seen.push(k.to_vec());
                true
            })
            .unwrap();
        assert_eq!(seen, vec![vec![4], vec![5]]);
        seen.clear();
        reader
            .range(T, &[0], &[9], &mut |k, _| {
                seen.push(k.to_vec());
                seen.len() < 2
            })
            .unwrap();
        assert_eq!(seen, vec![vec![2], vec![4]]);
    }
}
