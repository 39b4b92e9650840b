//! The store's side of recovery and snapshots: putting back records,
//! tombstones and rotation aliases read from the log (nothing is logged), and
//! walking what a snapshot must hold. The log's replay (`log::recovery`)
//! decides what to apply; these only apply it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sessiond_protocol::{SessionId, Ttl};

use super::owner_set::OwnerSet;
use super::record::{self, Key, Record, NEVER};
use super::{OwnerKey, OwnerLookup, Store, Timer, TOMBSTONE_BYTES};

/// A record as read from the log, for [`Store::restore_put`].
#[derive(Debug, Clone, Copy)]
pub struct Restored<'a> {
    /// Owner.
    pub owner: Option<&'a str>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last activity (ms).
    pub last_active: u64,
    /// Its ttl.
    pub ttl: Ttl,
    /// Version.
    pub version: u64,
    /// Encoded attributes.
    pub attrs: &'a [u8],
}

/// What a replay thread's restores leave to do at once rather than per
/// record: the memory count and the timer wheels are shared by every replay
/// thread, so each restore writing them would take their cache lines from the
/// others (and a wheel's lock) once per record. [`Store::restore_flush`] does
/// them in bulk; a replay calls it after each file, before anything reads the
/// store (the expiry task and the server start after recovery).
#[derive(Debug, Default)]
pub struct Restoring {
    /// Bytes of records put back, not yet counted.
    mem: i64,
    /// Deadlines not yet scheduled, by the wheel that keeps them.
    timers: Vec<Vec<(u64, Timer)>>,
}

impl Restoring {
    fn schedule(&mut self, at: u64, timer: Timer) {
        let wheel = Store::wheel_of(timer);
        if self.timers.len() <= wheel {
            self.timers.resize_with(wheel + 1, Vec::new);
        }
        self.timers[wheel].push((at, timer));
    }
}

impl Store {
    /// Counts and schedules what `pending` holds, one wheel lock per wheel.
    pub fn restore_flush(&self, pending: &mut Restoring) {
        self.add_mem(std::mem::take(&mut pending.mem));
        for (wheel, timers) in pending.timers.iter_mut().enumerate() {
            if timers.is_empty() {
                continue;
            }
            let mut wheel = self.wheels[wheel].lock();
            for (at, timer) in timers.drain(..) {
                wheel.insert(at, timer.into());
            }
        }
    }

    /// The interned number of `namespace` for restored records; `None` (with
    /// a warning) past the namespace limit.
    pub fn restore_namespace(&self, namespace: &str) -> Option<u32> {
        let ns = self.namespaces.intern(namespace);
        if ns.is_none() {
            tracing::warn!(
                max = self.config.max_namespaces,
                "log names more namespaces than allowed; record skipped"
            );
        }
        ns
    }

    /// Makes room for about `records` more records up front (a replay that
    /// knows how many are coming then never rehashes a growing table).
    pub fn reserve_records(&self, records: usize) {
        let shards = self.records.shards();
        let each = records.div_ceil(shards.len());
        let hasher = self.records.hasher();
        for shard in shards {
            shard
                .write()
                .reserve(each, |(k, _)| std::hash::BuildHasher::hash_one(hasher, k));
        }
    }

    /// Takes away whatever record is at `key` (replay replaces, never merges).
    fn restore_clear(&self, key: &Key) {
        if let Some((_, old)) = self.records.remove(key) {
            self.forget(key, &old);
            if let Some(owner) = &old.owner() {
                self.unindex_restored(key.ns, owner, old.created_at(), key.id);
            }
        }
    }

    /// Removes an index entry of a set a replay may have left unsorted.
    fn unindex_restored(&self, ns: u32, owner: &Arc<str>, created_at: u64, id: SessionId) {
        self.unindex_with(ns, owner, &(created_at, id), OwnerSet::remove_unsorted);
    }

    /// Sorts the owner sets a replay filled (see
    /// [`OwnerSet::push_unsorted`](super::owner_set::OwnerSet::push_unsorted));
    /// a replay calls it when it is done.
    pub fn settle_owner_index(&self) {
        for mut set in self.owners.iter_mut() {
            set.settle();
        }
    }

    /// Takes away every record, tombstone and alias (a replicated group's
    /// member installing a snapshot starts from nothing).
    pub fn clear(&self) {
        let keys: Vec<Key> = self.records.iter().map(|e| *e.key()).collect();
        for key in &keys {
            self.restore_clear(key);
        }
        let tombstones = self.tombstones.len();
        self.tombstones.clear();
        self.tombstone_count.store(0, Ordering::Relaxed);
        self.add_mem(-(TOMBSTONE_BYTES * i64::try_from(tombstones).unwrap_or(0)));
        self.aliases.clear();
        self.alias_count.store(0, Ordering::Relaxed);
    }

    /// Puts back a record read from the log at `key` (of
    /// [`Store::restore_namespace`]), replacing whatever is there; dropped if
    /// it has expired by `now`. A put wins over an earlier tombstone of the
    /// same id. Records of one key must be restored from one thread in log
    /// order; keys may be restored from several threads at once. Its memory
    /// count and timer wait in `pending` (see [`Restoring`]).
    pub fn restore_put(&self, key: Key, r: Restored<'_>, now: u64, pending: &mut Restoring) {
        let expires_at = Record::deadline(r.created_at, r.last_active, r.ttl);
        if expires_at <= now {
            self.restore_clear(&key);
            // It expired while the daemon was down: the feed reports it.
            if self.events().is_some_and(|f| expires_at > f.horizon()) {
                self.event(
                    &key,
                    r.owner,
                    sessiond_protocol::EventKind::Expired,
                    expires_at,
                );
            }
            return;
        }
        if self.tombstone_count.load(Ordering::Relaxed) > 0
            && self.tombstones.remove(&key).is_some()
        {
            self.tombstone_count.fetch_sub(1, Ordering::Relaxed);
            self.add_mem(-TOMBSTONE_BYTES);
        }
        // Every session of an owner shares the index's copy of its name,
        // found by the borrowed name (a copy is made only for a new owner).
        let owner: Option<Arc<str>> = r.owner.map(|o| {
            let probe: &dyn OwnerLookup = &(key.ns, o);
            let mut set = match self.owners.get_mut(probe) {
                Some(set) => set,
                None => self
                    .owners
                    .entry(OwnerKey {
                        ns: key.ns,
                        owner: Arc::from(o),
                    })
                    .or_default(),
            };
            set.push_unsorted((r.created_at, key.id));
            Arc::clone(&set.key().owner)
        });
        let rec = Record::new(
            record::Fields {
                owner,
                created_at: r.created_at,
                last_active: r.last_active,
                ttl: r.ttl,
                version: r.version,
            },
            r.attrs,
        );
        // One lookup whether or not a record was there (most keys appear
        // once); no journal is attached during recovery, so nothing is
        // logged.
        pending.mem += rec.mem_size() as i64;
        match self.records.insert(key, rec) {
            None => self.namespaces.add_records(key.ns, 1),
            Some(old) => {
                pending.mem -= old.mem_size() as i64;
                if let Some(owner) = old.owner() {
                    // One copy goes (if the new record has the same entry,
                    // the copy pushed above stays).
                    self.unindex_restored(key.ns, owner, old.created_at(), key.id);
                }
            }
        }
        if expires_at != NEVER {
            pending.schedule(expires_at, Timer::Record(key));
        }
    }

    /// Applies a delete read from the log: the record goes, and its tombstone
    /// (if it has not ended by `now`) comes back.
    pub fn restore_delete(&self, key: Key, tombstone_until: u64, now: u64) {
        self.restore_clear(&key);
        if tombstone_until > now {
            self.add_tombstone(key, tombstone_until);
        }
    }

    /// Puts back a rotation's grace alias (`id` resolves to `to` until
    /// `until`), unless it has ended by `now`.
    pub fn restore_alias(&self, key: Key, to: [u8; 16], until: u64, now: u64) {
        if until <= now {
            return;
        }
        if self.aliases.insert(key, (SessionId(to), until)).is_none() {
            self.alias_count.fetch_add(1, Ordering::Relaxed);
        }
        self.schedule(until, Timer::Alias(key));
    }

    /// Makes the next LSN at least `lsn` (recovery: above every LSN on disk).
    pub fn restore_lsn(&self, lsn: u64) {
        self.lsn.fetch_max(lsn, Ordering::Relaxed);
    }

    /// Calls `f` with every live record (under its shard's read lock: be
    /// quick).
    pub fn for_each_record(&self, mut f: impl FnMut(&str, SessionId, &Record)) {
        let now = self.now_ms();
        for entry in &self.records {
            if !entry.value().is_live(now) {
                continue;
            }
            if let Some(ns) = self.namespaces.get(entry.key().ns) {
                f(&ns.name, entry.key().id, entry.value());
            }
        }
    }

    /// Calls `f` with every tombstone that has not ended.
    pub fn for_each_tombstone(&self, mut f: impl FnMut(&str, SessionId, u64)) {
        let now = self.now_ms();
        for entry in &self.tombstones {
            if *entry.value() <= now {
                continue;
            }
            if let Some(ns) = self.namespaces.get(entry.key().ns) {
                f(&ns.name, entry.key().id, *entry.value());
            }
        }
    }

    /// Calls `f` with every rotation alias whose grace has not ended: (old
    /// id, new id, end).
    pub fn for_each_alias(&self, mut f: impl FnMut(&str, SessionId, SessionId, u64)) {
        let now = self.now_ms();
        for entry in &self.aliases {
            let (to, until) = *entry.value();
            if until <= now {
                continue;
            }
            if let Some(ns) = self.namespaces.get(entry.key().ns) {
                f(&ns.name, entry.key().id, to, until);
            }
        }
    }
}
