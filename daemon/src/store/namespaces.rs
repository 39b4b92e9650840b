//! Namespace interning. Records are keyed by a small integer instead of the
//! namespace string, so the name is stored once, not once per session.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_utils::CachePadded;
use parking_lot::RwLock;

/// How many stripes a namespace's record count is split into.
const COUNT_STRIPES: usize = 8;

/// One interned namespace and its live record count.
#[derive(Debug)]
pub struct Namespace {
    /// The name.
    pub name: Arc<str>,
    /// Records stored under it (kept by the store on insert and removal),
    /// striped per thread: every worker inserting into one namespace wrote
    /// the same counter on every create. A stripe may go negative (a record
    /// counted in by one thread and out by another); the sum does not.
    records: [CachePadded<AtomicI64>; COUNT_STRIPES],
}

impl Namespace {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            records: Default::default(),
        }
    }

    /// Records stored under it.
    #[must_use]
    pub fn records(&self) -> u64 {
        let sum: i64 = self.records.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        // Read while others count, the stripes may momentarily sum below zero.
        u64::try_from(sum).unwrap_or(0)
    }

    fn add_records(&self, delta: i64) {
        let stripe = crate::metrics::thread_stripe() % COUNT_STRIPES;
        self.records[stripe].fetch_add(delta, Ordering::Relaxed);
    }
}

/// The intern table. Lookups take a read lock; only a namespace's first use writes.
#[derive(Debug)]
pub struct Namespaces {
    by_name: RwLock<HashMap<Arc<str>, u32, ahash::RandomState>>,
    /// By id, in chunks of [`CHUNK`] filled in order and never emptied: a
    /// write reads its namespace's name and counts its records without a
    /// lock or a reference count (every worker wrote those on every write).
    by_id: Box<[OnceLock<Chunk>]>,
    /// Ids given so far (only `intern` writes it, under `by_name`'s lock).
    len: AtomicUsize,
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

/// Namespaces per chunk of the id table.
const CHUNK: usize = 4096;

/// [`CHUNK`] places for namespaces, each set once.
type Chunk = Box<[OnceLock<Box<Namespace>>]>;

impl Namespaces {
    /// An empty table admitting at most `max` namespaces.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            by_name: RwLock::new(HashMap::with_hasher(ahash::RandomState::new())),
            // Ids stay below 2^30 (a packed timer keeps its kind in the top
            // two bits): a larger cap admits no more.
            by_id: (0..max.min(super::reclaim::MAX_NAMESPACE_IDS).div_ceil(CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
            len: AtomicUsize::new(0),
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
        // Ids are given under by_name's lock, in order.
        let mut by_name = self.by_name.write();
        if let Some(id) = by_name.get(name) {
            return Some(*id);
        }
        let next = self.len.load(Ordering::Relaxed);
        if next >= self.max.min(super::reclaim::MAX_NAMESPACE_IDS) {
            return None;
        }
        let id = u32::try_from(next).ok()?;
        let chunk = self
            .by_id
            .get(next / CHUNK)?
            .get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect());
        let name: Arc<str> = Arc::from(name);
        // Set before the name maps to it: whoever learns the id finds it.
        chunk
            .get(next % CHUNK)?
            .set(Box::new(Namespace::new(name.clone())))
            .ok()?;
        self.len.store(next + 1, Ordering::Release);
        by_name.insert(name, id);
        Some(id)
    }

    /// The namespace with id `id`.
    #[must_use]
    pub fn get(&self, id: u32) -> Option<&Namespace> {
        let id = id as usize;
        self.by_id
            .get(id / CHUNK)?
            .get()?
            .get(id % CHUNK)?
            .get()
            .map(|ns| &**ns)
    }

    /// Adds `delta` to the record count of namespace `id`.
    pub fn add_records(&self, id: u32, delta: i64) {
        if let Some(ns) = self.get(id) {
            ns.add_records(delta);
        }
    }

    /// Every namespace with its record count.
    pub fn snapshot(&self) -> Vec<(Arc<str>, u64)> {
        let len = self.len.load(Ordering::Acquire);
        (0..len)
            .filter_map(|id| self.get(u32::try_from(id).ok()?))
            .map(|ns| (ns.name.clone(), ns.records()))
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

    /// Ids past a chunk's end find their namespaces; past the cap, none.
    #[test]
    fn ids_across_chunks() {
        let t = Namespaces::new(CHUNK + 2);
        for i in 0..CHUNK + 2 {
            assert_eq!(t.intern(&format!("n{i}")), u32::try_from(i).ok());
        }
        assert_eq!(t.intern("one more"), None);
        for i in [0, CHUNK - 1, CHUNK, CHUNK + 1] {
            let id = u32::try_from(i).unwrap();
            assert_eq!(
                t.get(id).map(|ns| ns.name.to_string()),
                Some(format!("n{i}"))
            );
        }
        assert!(t.get(u32::try_from(CHUNK + 2).unwrap()).is_none());
        assert!(t.get(u32::MAX).is_none());
        assert_eq!(t.snapshot().len(), CHUNK + 2);
    }

    /// Counts kept by several threads add up, whichever thread counted in
    /// and which out.
    #[test]
    fn record_counts_add_up_across_threads() {
        let t = Arc::new(Namespaces::new(4));
        let a = t.intern("a").unwrap();
        std::thread::scope(|s| {
            for i in 0..6 {
                let t = Arc::clone(&t);
                s.spawn(move || {
                    let delta = if i % 2 == 0 { 2 } else { -1 };
                    for _ in 0..1000 {
                        t.add_records(a, delta);
                    }
                });
            }
        });
        // Three threads added 2,000 each and three took 1,000 each.
        assert_eq!(t.snapshot()[0].1, 3000);
    }
}
