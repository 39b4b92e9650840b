//! Namespace interning. Records are keyed by a small integer instead of the
//! namespace string, so the name is stored once, not once per session.

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
}

impl Namespaces {
    /// An empty table admitting at most `max` namespaces.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            by_name: RwLock::new(HashMap::with_hasher(ahash::RandomState::new())),
            by_id: RwLock::new(Vec::new()),
            max,
        }
    }

    /// The id of `name`, if it has been used.
    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.by_name.read().get(name).copied()
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
}
