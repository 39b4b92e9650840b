//! The store's side of recovery and snapshots: putting back records,
//! tombstones and rotation aliases read from the log (nothing is logged), and
//! walking what a snapshot must hold. The log's replay (`log::recovery`)
//! decides what to apply; these only apply it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sessiond_protocol::{SessionId, Ttl};

use super::record::{self, Key, Record, NEVER};
use super::{OwnerKey, Sink, Store, Timer, TOMBSTONE_BYTES};

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

impl Store {
    /// The key of (`namespace`, `id`), interning the namespace; `None` (with
    /// a warning) past the namespace limit.
    fn restore_key(&self, namespace: &str, id: [u8; 16]) -> Option<Key> {
        let Some(ns) = self.namespaces.intern(namespace) else {
            tracing::warn!(
                max = self.config.max_namespaces,
                "log names more namespaces than allowed; record skipped"
            );
            return None;
        };
        Some(Key {
            ns,
            id: SessionId(id),
        })
    }

    /// Takes away whatever record is at `key` (replay replaces, never merges).
    fn restore_clear(&self, key: &Key) {
        if let Some((_, old)) = self.records.remove(key) {
            self.forget(key, &old);
            if let Some(owner) = &old.owner() {
                self.unindex_owner(key.ns, owner, old.created_at(), key.id);
            }
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

    /// Puts back a record read from the log, replacing whatever is at its key;
    /// dropped if it has expired by `now`. A put wins over an earlier
    /// tombstone of the same id.
    pub fn restore_put(&self, namespace: &str, id: [u8; 16], r: Restored<'_>, now: u64) {
        let Some(key) = self.restore_key(namespace, id) else {
            return;
        };
        self.restore_clear(&key);
        let expires_at = Record::deadline(r.created_at, r.last_active, r.ttl);
        if expires_at <= now {
            return;
        }
        if self.tombstones.remove(&key).is_some() {
            self.tombstone_count.fetch_sub(1, Ordering::Relaxed);
            self.add_mem(-TOMBSTONE_BYTES);
        }
        // Every session of an owner shares the index's copy of its name.
        let owner: Option<Arc<str>> = r.owner.map(|o| {
            let mut set = self
                .owners
                .entry(OwnerKey {
                    ns: key.ns,
                    owner: Arc::from(o),
                })
                .or_default();
            set.insert((r.created_at, key.id));
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
        // The key was emptied above, so this cannot collide; no journal is
        // attached during recovery, so nothing is logged.
        let _ = self.put_new(key, rec, now, Sink::Direct);
        if expires_at != NEVER {
            self.schedule(expires_at, Timer::Record(key));
        }
    }

    /// Applies a delete read from the log: the record goes, and its tombstone
    /// (if it has not ended by `now`) comes back.
    pub fn restore_delete(&self, namespace: &str, id: [u8; 16], tombstone_until: u64, now: u64) {
        let Some(key) = self.restore_key(namespace, id) else {
            return;
        };
        self.restore_clear(&key);
        if tombstone_until > now {
            self.add_tombstone(key, tombstone_until);
        }
    }

    /// Puts back a rotation's grace alias (`id` resolves to `to` until
    /// `until`), unless it has ended by `now`.
    pub fn restore_alias(&self, namespace: &str, id: [u8; 16], to: [u8; 16], until: u64, now: u64) {
        if until <= now {
            return;
        }
        let Some(key) = self.restore_key(namespace, id) else {
            return;
        };
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
