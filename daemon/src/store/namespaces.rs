//! Namespace interning. Records are keyed by a small integer instead of the
//! namespace string, so the name is stored once, not once per session.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// One interned namespace and its live record count.
#[derive(Debug)]
pub struct Namespace {
    /// The name.
    pub name: Arc<str>,
    /// Records stored under it (kept by the store on insert and removal).
    pub records: AtomicU64,
}

/// The intern table. Lookups take a read lock; only a namespace's first use writes.
#[derive(Debug)]
pub struct Namespaces {
    by_name: RwLock<HashMap<Arc<str>, u32, ahash::RandomState>>,
    by_id: RwLock<Vec<Arc<Namespace>>>,
    max: usize,
    /// This table's number, for [`LAST`].
    table: u64,
}

/// Numbers the tables, so that [`LAST`] never answers for another one.
static TABLES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last name this thread looked up and its id, with the table's
    /// number: a worker serving one app sees the same namespace request
    /// after request, and a hit costs a string compare instead of a lock, a
    /// hash and a probe (164 instructions a create, callgrind). An id, once
    /// given, never changes or goes away, so the entry cannot go stale.
    static LAST: RefCell<Option<(u64, Box<str>, u32)>> = const { RefCell::new(None) };
}

impl Namespaces {
    /// An empty table admitting at most `max` namespaces.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            by_name: RwLock::new(HashMap::with_hasher(ahash::RandomState::new())),
            by_id: RwLock::new(Vec::new()),
            max,
            table: TABLES.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The id of `name`, if it has been used.
    pub fn lookup(&self, name: &str) -> Option<u32> {
        let cached = LAST.with_borrow(|last| match last {
            Some((table, n, id)) if *table == self.table && **n == *name => Some(*id),
            _ => None,
        });
        if cached.is_some() {
            return cached;
        }
        let id = self.by_name.read().get(name).copied()?;
        LAST.set(Some((self.table, name.into(), id)));
        Some(id)
    }

    /// The id of `name`, interning it on first use; `None` when the table is full.
    pub fn intern(&self, name: &str) -> Option<u32> {
        if let Some(id) = self.lookup(name) {
            return Some(id);
        }
        // Lock order: by_name, then by_id (the only place holding both).
        let mut by_name = self.by_name.write();
        if let Some(id) = by_name.get(name) {
            return Some(*id);
        }
        let mut by_id = self.by_id.write();
        if by_id.len() >= self.max {
            return None;
        }
        let id = u32::try_from(by_id.len()).ok()?;
        let name: Arc<str> = Arc::from(name);
        by_id.push(Arc::new(Namespace {
            name: name.clone(),
            records: AtomicU64::new(0),
        }));
        by_name.insert(name, id);
        Some(id)
    }

    /// The namespace with id `id`.
    pub fn get(&self, id: u32) -> Option<Arc<Namespace>> {
        self.by_id.read().get(id as usize).cloned()
    }

    /// Adds `delta` to the record count of namespace `id`.
    pub fn add_records(&self, id: u32, delta: i64) {
        if let Some(ns) = self.by_id.read().get(id as usize) {
            if delta >= 0 {
                ns.records
                    .fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
            } else {
                ns.records
                    .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
            }
        }
    }

    /// Every namespace with its record count.
    pub fn snapshot(&self) -> Vec<(Arc<str>, u64)> {
        self.by_id
            .read()
            .iter()
            .map(|ns| (ns.name.clone(), ns.records.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn interns_once_and_caps() {
        let t = Namespaces::new(2);
        let a = t.intern("a").unwrap();
        assert_eq!(t.intern("a"), Some(a));
        assert_eq!(t.lookup("a"), Some(a));
        let b = t.intern("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(t.intern("c"), None);
        assert_eq!(t.lookup("c"), None);
        t.add_records(a, 3);
        t.add_records(a, -1);
        assert_eq!(t.snapshot()[0].1, 2);
    }

    /// The per-thread cache answers for its own table only.
    #[test]
    fn the_cache_never_answers_for_another_table() {
        let t = Namespaces::new(4);
        let u = Namespaces::new(4);
        t.intern("x").unwrap();
        let y = t.intern("y").unwrap();
        assert_eq!(t.lookup("y"), Some(y));
        assert_eq!(u.lookup("y"), None);
        assert_eq!(u.intern("y"), Some(0));
        assert_eq!(t.lookup("y"), Some(y));
        assert_eq!(t.lookup("x"), Some(0));
        assert_eq!(u.lookup("x"), None);
    }
}
