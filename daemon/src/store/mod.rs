//! The session store: records in a sharded `DashMap`, an owner index, tombstones
//! for deleted and rotated ids, and the timer wheels that drive expiry.
//!
//! # Locking
//! Every operation is synchronous and holds at most one shard lock of each map
//! at a time, never across an `.await`. Where two maps are locked together the
//! order is always: owner index, then records, then tombstones/aliases, then a
//! timer wheel. Two records are never locked at once (two keys can share a shard,
//! and shard locks are not reentrant). The owner index is a hint that readers
//! verify against the record (owner and creation time must match), so it may
//! briefly hold stale entries; they are pruned when seen.
//!
//! # Expiry
//! Reads compare `expires_at` with the clock, so an expired record is never
//! returned. Reclaiming memory is the expiry task's job: it polls the wheels and
//! calls [`Store::reclaim`]. Touches do not reschedule (see [`record::Record::wheel_deadline`]).

mod error;
mod journal;
pub mod namespaces;
pub mod owner_set;
mod reclaim;
pub mod record;
mod restore;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::Mutex;
use sessiond_protocol::limits::{self, MAX_LIST_PAGE};
use sessiond_protocol::value::{decode_attrs, encode_attrs};
use sessiond_protocol::view::{CreateView, SessionHead};
use sessiond_protocol::{
    Attrs, Create, DeleteByOwner, DeleteReason, EventKind, Incr, IncrReply, LimitPolicy,
    ListByOwner, ListCursor, OwnerLimit, Rotate, Session, SessionId, SessionPage, TouchReply, Ttl,
    Update, UpdateReply, Value,
};

use crate::clock::Clock;
use crate::expiry::wheel::Wheel;
use error::Result;
pub use error::StoreError;
#[cfg(test)]
pub(crate) use journal::StepHook;
pub use journal::{Change, Image, Journal};
use journal::{Sink, Why};
use namespaces::Namespaces;
use owner_set::OwnerSet;
pub use reclaim::{Timer, MAX_NAMESPACE_IDS};
pub use record::Blob;
use record::{finite, Key, Record, NEVER};
pub use restore::{Restored, Restoring};

/// The tables' hasher: aHash, keyed with random keys per table (session ids
/// may be chosen by callers, so the hash must not be predictable), several
/// times cheaper than the standard library's SipHash on these short keys
/// (SipHash was 5.5% of a get's instructions under callgrind).
type Hasher = ahash::RandomState;
/// Default time a deleted or rotated id stays reserved.
pub const DEFAULT_TOMBSTONE_TTL_MS: u64 = 120_000;
/// Default cap on distinct namespaces.
pub const DEFAULT_MAX_NAMESPACES: usize = 10_000;
/// Default share of the idle ttl a touch must move the deadline before it is logged.
pub const DEFAULT_TOUCH_LOG_FRACTION: f64 = 0.1;
/// Number of independent timer wheels (spreads insert contention).
pub const WHEEL_SHARDS: usize = 16;

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How long a deleted or rotated-away id is refused for re-creation (ms).
    pub tombstone_ttl_ms: u64,
    /// Largest encoded attribute map of one session.
    pub max_attrs_bytes: usize,
    /// Most distinct namespaces.
    pub max_namespaces: usize,
    /// A touch is logged only once it has moved the deadline by more than this
    /// share of the idle ttl since the record was last logged.
    pub touch_log_fraction: f64,
    /// Estimated bytes of records past which writes that add data are refused
    /// or make room (`None`: no limit).
    pub max_memory: Option<u64>,
    /// What happens at the limit.
    pub memory_policy: MemoryPolicy,
    /// Shards of the record table, a power of two of at least 2 (see
    /// [`DEFAULT_RECORD_SHARDS`]).
    pub record_shards: usize,
}

/// What a write does when the store is at its memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryPolicy {
    /// Fail with `OutOfMemory` (reads, deletes and touches still work).
    #[default]
    Reject,
    /// Evict the sessions closest to expiry (never ones without a ttl) to make room.
    VolatileTtl,
}

impl std::str::FromStr for MemoryPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "reject" | "noeviction" => Ok(Self::Reject),
            "volatile-ttl" => Ok(Self::VolatileTtl),
            other => Err(format!("{other:?} is not one of reject, volatile-ttl")),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            tombstone_ttl_ms: DEFAULT_TOMBSTONE_TTL_MS,
            max_attrs_bytes: limits::DEFAULT_MAX_ATTRS_BYTES,
            max_namespaces: DEFAULT_MAX_NAMESPACES,
            touch_log_fraction: DEFAULT_TOUCH_LOG_FRACTION,
            max_memory: None,
            memory_policy: MemoryPolicy::Reject,
            record_shards: DEFAULT_RECORD_SHARDS,
        }
    }
}

#[derive(Debug, Clone)]
struct OwnerKey {
    ns: u32,
    owner: Arc<str>,
}

/// What the owner index is looked up by: a namespace and an owner's name,
/// owned ([`OwnerKey`]) or borrowed (`(u32, &str)`), so that a lookup does
/// not copy the name into a new allocation.
trait OwnerLookup {
    fn parts(&self) -> (u32, &str);
}

impl OwnerLookup for OwnerKey {
    fn parts(&self) -> (u32, &str) {
        (self.ns, &self.owner)
    }
}

impl OwnerLookup for (u32, &str) {
    fn parts(&self) -> (u32, &str) {
        *self
    }
}

impl std::hash::Hash for dyn OwnerLookup + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (ns, name) = self.parts();
        ns.hash(state);
        name.hash(state);
    }
}

impl PartialEq for dyn OwnerLookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn OwnerLookup + '_ {}

// Hashed and compared exactly as its `dyn OwnerLookup` form, as `Borrow`
// requires.
impl std::hash::Hash for OwnerKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self as &dyn OwnerLookup).hash(state);
    }
}

impl PartialEq for OwnerKey {
    fn eq(&self, other: &Self) -> bool {
        // Keys of one owner usually share the index's copy of the name.
        self.ns == other.ns && (Arc::ptr_eq(&self.owner, &other.owner) || self.owner == other.owner)
    }
}

impl Eq for OwnerKey {}

impl<'a> std::borrow::Borrow<dyn OwnerLookup + 'a> for OwnerKey {
    fn borrow(&self) -> &(dyn OwnerLookup + 'a) {
        self
    }
}

/// A session with its attributes still encoded, as stored, for answers that
/// pass them on without decoding them
/// ([`sessiond_protocol::view::encode_session_answer`]). It holds no
/// namespace: the request that asked for it has the name.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSession {
    /// The id.
    pub id: SessionId,
    /// The owner, shared with the record.
    pub owner: Option<Arc<str>>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last activity (ms).
    pub last_active: u64,
    /// The deadline, or `None`.
    pub expires_at: Option<u64>,
    /// Expiry settings.
    pub ttl: Ttl,
    /// Version.
    pub version: u64,
    /// Its attributes, encoded by `encode_attrs` (shared with the record).
    pub attrs: Blob,
}

impl RawSession {
    /// The session's fields, borrowed, in `namespace`.
    #[must_use]
    pub fn head<'a>(&'a self, namespace: &'a str) -> SessionHead<'a> {
        SessionHead {
            namespace,
            id: self.id,
            owner: self.owner.as_deref(),
            created_at_ms: self.created_at,
            last_active_ms: self.last_active,
            expires_at_ms: self.expires_at,
            ttl: self.ttl,
            version: self.version,
        }
    }

    /// The session in `namespace`, with an empty attribute map.
    #[must_use]
    pub fn session_head(&self, namespace: &str) -> Session {
        Session {
            namespace: namespace.to_owned(),
            id: self.id,
            // A plain copy: `to_string` on `Arc<str>` goes through `Display`
            // (3.8% of a get's instructions under callgrind).
            owner: self.owner.as_deref().map(String::from),
            created_at_ms: self.created_at,
            last_active_ms: self.last_active,
            expires_at_ms: self.expires_at,
            ttl: self.ttl,
            version: self.version,
            attrs: Attrs::new(),
        }
    }

    /// The session in `namespace` with its attributes decoded.
    ///
    /// # Errors
    /// `Codec` if the stored attributes do not decode.
    pub fn decode(&self, namespace: &str) -> Result<Session> {
        let mut head = self.session_head(namespace);
        head.attrs = decode_attrs(&self.attrs).map_err(|e| StoreError::Codec(e.to_string()))?;
        Ok(head)
    }
}

/// What [`Store::put_new`] did.
struct Placed {
    /// The new record's attribute blob.
    blob: Blob,
    /// Owner and creation time of the expired record it replaced, if any.
    replaced: Option<(Arc<str>, u64)>,
}

/// A consistent copy of a record, taken under its shard lock and turned into a
/// [`Session`] after the lock is released.
struct Snapshot {
    id: SessionId,
    owner: Option<Arc<str>>,
    created_at: u64,
    last_active: u64,
    expires_at: u64,
    ttl: Ttl,
    version: u64,
    attrs: Blob,
}

impl Snapshot {
    fn of(id: SessionId, r: &Record) -> Self {
        Self {
            id,
            owner: r.owner().cloned(),
            created_at: r.created_at(),
            last_active: r.last_active(),
            expires_at: r.expires_at(),
            ttl: r.ttl(),
            version: r.version(),
            attrs: r.blob(),
        }
    }

    fn into_session(self, namespace: &str) -> Result<Session> {
        self.into_raw().decode(namespace)
    }

    fn into_raw(self) -> RawSession {
        RawSession {
            id: self.id,
            owner: self.owner,
            created_at: self.created_at,
            last_active: self.last_active,
            expires_at: finite(self.expires_at),
            ttl: self.ttl,
            version: self.version,
            attrs: self.attrs,
        }
    }
}

/// Counters kept by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Records stored, all namespaces.
    pub records: u64,
    /// Records per namespace.
    pub namespaces: Vec<(String, u64)>,
    /// Records reclaimed by expiry.
    pub expired_total: u64,
    /// Records evicted by owner limits.
    pub evicted_total: u64,
    /// Estimated bytes held.
    pub memory_bytes: u64,
}

/// Default shards of the record table. A shard's table grows by rehashing
/// all of it under its lock, and with a uniform hash every shard grows at
/// about the same moment: the write that triggers it waits for the whole
/// shard to move. More shards make each stall shorter for the same total
/// work (`cargo bench -p sessiond-bench --bench stalls`).
pub const DEFAULT_RECORD_SHARDS: usize = 1024;

/// Shards of the owner index, the tombstones and the aliases (each grows
/// like the record table, see [`DEFAULT_RECORD_SHARDS`]).
const INDEX_SHARDS: usize = 256;

/// The session store.
pub struct Store {
    records: DashMap<Key, Record, Hasher>,
    owners: DashMap<OwnerKey, OwnerSet, Hasher>,
    tombstones: DashMap<Key, u64, Hasher>,
    /// Entries in `tombstones`: while there are none (a store that has only
    /// been created into), writes skip looking there. Changed under the
    /// record's lock, like the tombstones themselves.
    tombstone_count: AtomicUsize,
    aliases: DashMap<Key, (SessionId, u64), Hasher>,
    alias_count: AtomicUsize,
    namespaces: Namespaces,
    wheels: Box<[Mutex<Wheel<reclaim::PackedTimer>>]>,
    clock: Arc<dyn Clock>,
    config: StoreConfig,
    expired_total: AtomicU64,
    evicted_total: AtomicU64,
    /// Written by every create, update and removal: on a cache line of
    /// its own, apart from the counts every read checks
    /// (`tombstone_count`, `alias_count`).
    memory: CachePadded<AtomicI64>,
    /// Bytes held by client connections' buffers, counted with `memory`
    /// against `max_memory` (see [`Store::add_connection_buffers`]).
    connection_buffers: AtomicI64,
    journal: std::sync::OnceLock<Arc<dyn Journal>>,
    /// Where lifecycle events go (`None`: no feed).
    events: std::sync::OnceLock<Arc<crate::events::Feed>>,
    /// The next LSN (see `log::format`, "The ordering rule"); taken by
    /// every logged change, on a cache line of its own.
    lsn: CachePadded<AtomicU64>,
    /// Multi-record operations between their first change and the append
    /// of their batch (see [`Store::settle_batches`]).
    batches_in_flight: AtomicUsize,
    #[cfg(test)]
    step_hook: Mutex<Option<StepHook>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("records", &self.records.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn check_ttl(ttl: &Ttl) -> Result<()> {
    if ttl.idle_ttl_ms == Some(0) || ttl.max_lifetime_ms == Some(0) {
        return Err(StoreError::Invalid(
            "a ttl of 0 is not allowed (omit it for no expiry)".into(),
        ));
    }
    Ok(())
}

fn check_attrs(set: &Attrs, remove: &[String]) -> Result<()> {
    for name in set.keys().chain(remove.iter()) {
        limits::check_attr_name(name).map_err(StoreError::Invalid)?;
    }
    Ok(())
}

fn invalid(msg: String) -> StoreError {
    StoreError::Invalid(msg)
}

impl Store {
    /// An empty store reading time from `clock`.
    #[must_use]
    pub fn new(config: StoreConfig, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now_ms();
        // The first half holds record deadlines, the second tombstone and
        // grace-period ends, so eviction looks at sessions only.
        let wheels = (0..2 * WHEEL_SHARDS)
            .map(|_| Mutex::new(Wheel::new(now)))
            .collect();
        Self {
            // A shard's table grows by rehashing all of it under its lock
            // (see DEFAULT_RECORD_SHARDS); the count is a power of two.
            records: DashMap::with_hasher_and_shard_amount(
                Hasher::new(),
                config.record_shards.clamp(2, 1 << 16).next_power_of_two(),
            ),
            owners: DashMap::with_hasher_and_shard_amount(Hasher::new(), INDEX_SHARDS),
            tombstones: DashMap::with_hasher_and_shard_amount(Hasher::new(), INDEX_SHARDS),
            tombstone_count: AtomicUsize::new(0),
            aliases: DashMap::with_hasher_and_shard_amount(Hasher::new(), INDEX_SHARDS),
            alias_count: AtomicUsize::new(0),
            namespaces: Namespaces::new(config.max_namespaces),
            wheels,
            clock,
            config,
            expired_total: AtomicU64::new(0),
            evicted_total: AtomicU64::new(0),
            memory: CachePadded::new(AtomicI64::new(0)),
            connection_buffers: AtomicI64::new(0),
            journal: std::sync::OnceLock::new(),
            events: std::sync::OnceLock::new(),
            lsn: CachePadded::new(AtomicU64::new(1)),
            batches_in_flight: AtomicUsize::new(0),
            #[cfg(test)]
            step_hook: Mutex::new(None),
        }
    }

    /// The store's clock reading.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn add_mem(&self, delta: i64) {
        self.memory.fetch_add(delta, Ordering::Relaxed);
    }

    fn encode_checked(&self, attrs: &Attrs) -> Result<Box<[u8]>> {
        let blob = encode_attrs(attrs).map_err(|e| StoreError::Codec(e.to_string()))?;
        if blob.len() > self.config.max_attrs_bytes {
            return Err(StoreError::TooLarge {
                len: blob.len(),
                max: self.config.max_attrs_bytes,
            });
        }
        Ok(blob.into_boxed_slice())
    }

    fn ns_for_write(&self, ns: &str) -> Result<u32> {
        limits::check_namespace(ns).map_err(invalid)?;
        self.namespaces
            .intern(ns)
            .ok_or(StoreError::TooManyNamespaces {
                max: self.config.max_namespaces,
            })
    }

    fn ns_for_read(&self, ns: &str) -> Result<Option<u32>> {
        limits::check_namespace(ns).map_err(invalid)?;
        Ok(self.namespaces.lookup(ns))
    }

    /// Follows a rotation alias: the key a request for `key` acts on.
    fn target(&self, key: Key, now: u64) -> Key {
        if self.alias_count.load(Ordering::Relaxed) == 0 {
            return key;
        }
        match self.aliases.get(&key) {
            Some(a) if a.1 > now => Key {
                ns: key.ns,
                id: a.0,
            },
            _ => key,
        }
    }

    /// After a miss on `tried` (resolved from `asked`): the key to try
    /// instead if a rotation laid an alias for `asked` in between (the
    /// request resolved the old id just before the rotation moved the record).
    /// It then acts on the rotated session, as it would a moment later,
    /// instead of missing it.
    fn retarget(&self, asked: Key, tried: Key, now: u64) -> Option<Key> {
        if self.alias_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let key = self.target(asked, now);
        (key != tried).then_some(key)
    }

    /// The live record a request for `asked` acts on, locked for writing
    /// (following an alias laid meanwhile, see [`Store::retarget`]).
    fn live_mut(
        &self,
        asked: Key,
        now: u64,
    ) -> Option<(Key, dashmap::mapref::one::RefMut<'_, Key, Record>)> {
        let key = self.target(asked, now);
        self.step("write: resolved");
        if let Some(r) = self.records.get_mut(&key).filter(|r| r.is_live(now)) {
            return Some((key, r));
        }
        let moved = self.retarget(asked, key, now)?;
        self.records
            .get_mut(&moved)
            .filter(|r| r.is_live(now))
            .map(|r| (moved, r))
    }

    fn is_tombstoned(&self, key: &Key, now: u64) -> bool {
        self.tombstone_at(key, now)
            || (self.alias_count.load(Ordering::Relaxed) > 0
                && self.aliases.get(key).is_some_and(|a| a.1 > now))
    }

    /// Whether `key` has a tombstone that has not ended at `now`.
    fn tombstone_at(&self, key: &Key, now: u64) -> bool {
        self.tombstone_count.load(Ordering::Relaxed) > 0
            && self.tombstones.get(key).is_some_and(|until| *until > now)
    }

    fn add_tombstone(&self, key: Key, until: u64) {
        match self.tombstones.entry(key) {
            Entry::Occupied(mut o) => {
                if *o.get() >= until {
                    return;
                }
                o.insert(until);
            }
            Entry::Vacant(v) => {
                v.insert(until);
                self.tombstone_count.fetch_add(1, Ordering::Relaxed);
                self.add_mem(TOMBSTONE_BYTES);
            }
        }
        self.schedule(until, Timer::Tombstone(key));
    }

    /// Accounts for a record leaving the map.
    fn forget(&self, key: &Key, rec: &Record) {
        self.namespaces.add_records(key.ns, -1);
        self.add_mem(-(rec.mem_size() as i64));
    }

    fn unindex_owner(&self, ns: u32, owner: &Arc<str>, created_at: u64, id: SessionId) {
        self.unindex_with(ns, owner, &(created_at, id), OwnerSet::remove);
    }

    /// Removes `entry` from `owner`'s set with `remove`, and the set once it
    /// is empty.
    fn unindex_with(
        &self,
        ns: u32,
        owner: &Arc<str>,
        entry: &owner_set::Entry,
        remove: fn(&mut OwnerSet, &owner_set::Entry) -> bool,
    ) {
        let okey = OwnerKey {
            ns,
            owner: owner.clone(),
        };
        let now_empty = match self.owners.get_mut(&okey) {
            Some(mut set) => {
                remove(&mut set, entry);
                set.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.owners.remove_if(&okey, |_, s| s.is_empty());
        }
    }

    /// Whether the index entry (`created_at`, `id`) of `owner` names a live record.
    fn index_entry_live(
        &self,
        ns: u32,
        owner: &str,
        created_at: u64,
        id: SessionId,
        now: u64,
    ) -> bool {
        self.records.get(&Key { ns, id }).is_some_and(|r| {
            r.is_live(now) && r.created_at() == created_at && r.owner_str() == Some(owner)
        })
    }

    /// Inserts a new record at `key` (must be absent or expired). Returns its
    /// attribute blob (shared, for the answer) and the owner and creation time
    /// of an expired record it replaced, whose index entry the caller removes
    /// once it holds no owner lock.
    fn put_new(&self, key: Key, rec: Record, now: u64, sink: Sink<'_>) -> Result<Placed> {
        // A rotation gathers its new record into its batch: it reports
        // `Rotated`, not `Created`.
        let announce = !matches!(sink, Sink::Gather(_));
        let size = rec.mem_size() as i64;
        let blob = rec.blob();
        let entry = self.records.entry(key);
        // Checked again under the record's lock: a delete of this id holds the
        // same lock while it lays its tombstone, so a racing create-if-absent
        // or upsert either sees the tombstone or ran entirely before the delete.
        if self.tombstone_at(&key, now) {
            return Err(StoreError::Gone);
        }
        match entry {
            Entry::Occupied(mut o) => {
                if o.get().is_live(now) {
                    return Err(StoreError::AlreadyExists);
                }
                let old = o.insert(rec);
                self.log_put(&key, o.get_mut(), sink);
                // The record it replaces expired unreaped: reported first.
                self.event(&key, old.owner_str(), EventKind::Expired, old.expires_at());
                if announce {
                    self.event(&key, o.get().owner_str(), EventKind::Created, now);
                }
                self.add_mem(size - old.mem_size() as i64);
                Ok(Placed {
                    blob,
                    replaced: old.owner().map(|owner| (owner.clone(), old.created_at())),
                })
            }
            Entry::Vacant(v) => {
                let mut r = v.insert(rec);
                self.log_put(&key, &mut r, sink);
                if announce {
                    self.event(&key, r.owner_str(), EventKind::Created, now);
                }
                drop(r);
                self.namespaces.add_records(key.ns, 1);
                self.add_mem(size);
                Ok(Placed {
                    blob,
                    replaced: None,
                })
            }
        }
    }

    /// Creates a record: the shared path of `Create` and an upserting `Update`.
    #[allow(clippy::too_many_arguments)]
    fn insert_new(
        &self,
        ns: u32,
        chosen: Option<SessionId>,
        owner: Option<&str>,
        ttl: Ttl,
        attrs: &[u8],
        limit: Option<OwnerLimit>,
        now: u64,
    ) -> Result<Snapshot> {
        if let Some(id) = chosen {
            if self.is_tombstoned(&Key { ns, id }, now) {
                return Err(StoreError::Gone);
            }
        }
        let expires_at = Record::deadline(now, now, ttl);
        // The index's copy of the name when the owner has one (most creates
        // are by an owner with sessions): no allocation for it.
        let owner: Option<Arc<str>> = owner.map(|o| {
            let probe: &dyn OwnerLookup = &(ns, o);
            self.owners
                .get(probe)
                .map_or_else(|| Arc::from(o), |set| Arc::clone(&set.key().owner))
        });
        let make = |owner: Option<Arc<str>>| {
            Record::new(
                record::Fields {
                    owner,
                    created_at: now,
                    last_active: now,
                    ttl,
                    version: 1,
                },
                attrs,
            )
        };
        // A server-drawn id colliding with a live one is astronomically unlikely,
        // but a retry costs nothing and makes it impossible to clobber a session.
        let mut attempts = 0;
        let (id, Placed { replaced, blob }) = loop {
            let id = chosen.unwrap_or_else(SessionId::new_v4);
            let key = Key { ns, id };
            let rec = make(owner.clone());
            let result = match &owner {
                None => self.put_new(key, rec, now, Sink::Direct),
                Some(o) => self.put_owned(key, rec, o, limit, now),
            };
            match result {
                Ok(placed) => break (id, placed),
                Err(StoreError::AlreadyExists) if chosen.is_none() && attempts < 4 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let key = Key { ns, id };
        if let Some((old_owner, old_created)) = replaced {
            self.unindex_owner(ns, &old_owner, old_created, id);
        }
        if expires_at != NEVER {
            self.schedule(expires_at, Timer::Record(key));
        }
        Ok(Snapshot {
            id,
            owner,
            created_at: now,
            last_active: now,
            expires_at,
            ttl,
            version: 1,
            attrs: blob,
        })
    }

    /// Inserts an owned record under its owner's index lock, applying the limit.
    fn put_owned(
        &self,
        key: Key,
        mut rec: Record,
        owner: &Arc<str>,
        limit: Option<OwnerLimit>,
        now: u64,
    ) -> Result<Placed> {
        let okey = OwnerKey {
            ns: key.ns,
            owner: owner.clone(),
        };
        let created_at = rec.created_at();
        // Only a limit can make this a multi-record operation (evictions).
        let _in_flight = limit.is_some().then(|| self.batch_in_flight());
        let mut batch: Vec<Change> = Vec::new();
        let mut set = self.owners.entry(okey).or_default();
        // Every session of an owner shares the index's copy of its name.
        rec.share_owner(Arc::clone(&set.key().owner));
        if let Some(limit) = limit {
            // Count only live sessions: drop entries whose record expired or moved.
            set.retain(|(c, id)| self.index_entry_live(key.ns, owner, *c, *id, now));
            let max = limit.max_sessions as usize;
            if set.len() >= max {
                match limit.policy {
                    LimitPolicy::Reject => {
                        return Err(StoreError::LimitExceeded {
                            current: set.len(),
                            max: limit.max_sessions,
                        })
                    }
                    LimitPolicy::EvictOldest => {
                        // A chosen id that is already live must fail before anything is evicted.
                        if self.records.get(&key).is_some_and(|r| r.is_live(now)) {
                            return Err(StoreError::AlreadyExists);
                        }
                        while set.len() >= max {
                            let Some((c, id)) = set.pop_first() else {
                                break;
                            };
                            let k = Key { ns: key.ns, id };
                            let until = now.saturating_add(self.config.tombstone_ttl_ms);
                            if let Some(old) = self.remove_logged(
                                &k,
                                until,
                                |r| r.created_at() == c && r.owner_str() == Some(&**owner),
                                Sink::Gather(&mut batch),
                                Some(Why::new(DeleteReason::OwnerLimit, now)),
                            ) {
                                self.forget(&k, &old);
                                self.evicted_total.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }
        // The evictions and the new record reach the log as one batch, appended
        // under the new record's lock: nothing done to it through another
        // connection can be logged before it.
        let sink = if batch.is_empty() {
            Sink::Direct
        } else {
            Sink::Close(&mut batch)
        };
        let placed = match self.put_new(key, rec, now, sink) {
            Ok(placed) => placed,
            Err(e) => {
                // The evictions happened: they reach the log without the
                // record that failed.
                self.append_batch(batch);
                return Err(e);
            }
        };
        set.insert((created_at, key.id));
        self.step("create: placed");
        Ok(placed)
    }

    /// Creates a session.
    ///
    /// # Errors
    /// `Invalid` for bad arguments, `AlreadyExists`/`Gone` for a taken or recently
    /// deleted chosen id, `LimitExceeded` under the reject policy, `TooLarge`.
    pub fn create(&self, c: Create) -> Result<Session> {
        self.create_raw(&c)?.decode(&c.namespace)
    }

    /// [`Store::create`], answering with the attributes still encoded.
    ///
    /// # Errors
    /// As [`Store::create`].
    pub fn create_raw(&self, c: &Create) -> Result<RawSession> {
        check_attrs(&c.attrs, &[])?;
        let blob = self.encode_checked(&c.attrs)?;
        self.create_encoded(&CreateView {
            namespace: &c.namespace,
            id: c.id,
            owner: c.owner.as_deref(),
            ttl: c.ttl,
            attrs: &blob,
            owner_limit: c.owner_limit,
        })
    }

    /// [`Store::create_raw`] from a request decoded in place, its attributes
    /// as they came: a canonical map with valid names (what
    /// [`sessiond_protocol::view::decode_hot_request`] guarantees).
    ///
    /// # Errors
    /// As [`Store::create`].
    pub fn create_encoded(&self, c: &CreateView<'_>) -> Result<RawSession> {
        self.writable()?;
        self.admit()?;
        check_ttl(&c.ttl)?;
        if let Some(owner) = c.owner {
            limits::check_owner(owner).map_err(invalid)?;
        }
        if let Some(limit) = &c.owner_limit {
            if c.owner.is_none() {
                return Err(invalid("an owner limit needs an owner".into()));
            }
            if limit.max_sessions == 0 {
                return Err(invalid(
                    "an owner limit must allow at least 1 session".into(),
                ));
            }
        }
        if c.attrs.len() > self.config.max_attrs_bytes {
            return Err(StoreError::TooLarge {
                len: c.attrs.len(),
                max: self.config.max_attrs_bytes,
            });
        }
        let ns = self.ns_for_write(c.namespace)?;
        let now = self.now_ms();
        let snap = self.insert_new(ns, c.id, c.owner, c.ttl, c.attrs, c.owner_limit, now)?;
        Ok(snap.into_raw())
    }

    fn read(&self, key: Key, touch: bool, now: u64) -> Option<Snapshot> {
        if touch {
            let mut r = self.records.get_mut(&key)?;
            if !r.is_live(now) {
                return None;
            }
            r.touch(now);
            self.log_touch(&key, &mut r);
            Some(Snapshot::of(key.id, &r))
        } else {
            let r = self.records.get(&key)?;
            r.is_live(now).then(|| Snapshot::of(key.id, &r))
        }
    }

    /// Reads a live session, optionally sliding its deadline. An id rotated away
    /// within its grace period resolves to the rotated session.
    ///
    /// # Errors
    /// `Invalid` for a malformed namespace.
    pub fn get(&self, namespace: &str, id: SessionId, touch: bool) -> Result<Option<Session>> {
        self.get_raw(namespace, id, touch)?
            .map(|raw| raw.decode(namespace))
            .transpose()
    }

    /// [`Store::get`], answering with the attributes still encoded.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub fn get_raw(
        &self,
        namespace: &str,
        id: SessionId,
        touch: bool,
    ) -> Result<Option<RawSession>> {
        let Some(ns) = self.ns_for_read(namespace)? else {
            return Ok(None);
        };
        let now = self.now_ms();
        let asked = Key { ns, id };
        let key = self.target(asked, now);
        self.step("get: resolved");
        let snap = match self.read(key, touch, now) {
            Some(snap) => Some(snap),
            None => self
                .retarget(asked, key, now)
                .and_then(|k| self.read(k, touch, now)),
        };
        Ok(snap.map(Snapshot::into_raw))
    }

    /// Slides a session's deadline (never past its maximum lifetime).
    ///
    /// # Errors
    /// `Invalid` for a malformed namespace.
    pub fn touch(&self, namespace: &str, id: SessionId) -> Result<TouchReply> {
        let not_found = TouchReply {
            found: false,
            expires_at_ms: None,
        };
        let Some(ns) = self.ns_for_read(namespace)? else {
            return Ok(not_found);
        };
        let now = self.now_ms();
        let Some((key, mut r)) = self.live_mut(Key { ns, id }, now) else {
            return Ok(not_found);
        };
        let expires_at = r.touch(now);
        self.log_touch(&key, &mut r);
        Ok(TouchReply {
            found: true,
            expires_at_ms: finite(expires_at),
        })
    }

    /// Whether touching the session now would move its deadline by more than
    /// `--touch-log-fraction` of its idle ttl: a replicated group proposes
    /// only such touches (smaller ones change nothing anywhere, so every
    /// member keeps the same deadline), with the session's deadline as it
    /// is. `None`: no live session.
    ///
    /// # Errors
    /// `Invalid` for a malformed namespace.
    pub fn touch_due(&self, namespace: &str, id: SessionId) -> Result<Option<(bool, Option<u64>)>> {
        let Some(ns) = self.ns_for_read(namespace)? else {
            return Ok(None);
        };
        let now = self.now_ms();
        let key = self.target(Key { ns, id }, now);
        let Some(r) = self.records.get(&key) else {
            return Ok(None);
        };
        if !r.is_live(now) {
            return Ok(None);
        }
        let expires_at = finite(r.expires_at());
        let Some(idle) = r.idle_ttl() else {
            return Ok(Some((false, expires_at)));
        };
        let next = Record::deadline(r.created_at(), now.max(r.last_active()), r.ttl());
        let moved = next.saturating_sub(r.expires_at());
        let due = moved as f64 > idle.get() as f64 * self.config.touch_log_fraction;
        Ok(Some((due, expires_at)))
    }

    /// Applies an update: removals, then sets, then the ttl; bumps the version.
    ///
    /// # Errors
    /// `NotFound` (no upsert), `Conflict`, `Gone` (upsert of a tombstoned id),
    /// `Invalid`, `TooLarge`.
    pub fn update(&self, u: Update) -> Result<UpdateReply> {
        self.writable()?;
        self.admit()?;
        check_attrs(&u.set, &u.remove)?;
        if let Some(ttl) = &u.ttl {
            check_ttl(ttl)?;
        }
        if let Some(owner) = u.upsert.as_ref().and_then(|up| up.owner.as_ref()) {
            limits::check_owner(owner).map_err(invalid)?;
        }
        let ns = if u.upsert.is_some() {
            self.ns_for_write(&u.namespace)?
        } else {
            self.ns_for_read(&u.namespace)?
                .ok_or(StoreError::NotFound)?
        };
        let now = self.now_ms();
        let asked = Key { ns, id: u.id };
        let mut key = self.target(asked, now);
        // Two rounds at most: an upsert that loses a race with a concurrent create
        // of the same id applies as an update to the record that won.
        for _ in 0..2 {
            if let Some(reply) = self.update_existing(key, &u, now)? {
                return Ok(reply);
            }
            if let Some(moved) = self.retarget(asked, key, now) {
                key = moved;
                if let Some(reply) = self.update_existing(key, &u, now)? {
                    return Ok(reply);
                }
            }
            let Some(upsert) = &u.upsert else {
                return Err(StoreError::NotFound);
            };
            if let Some(expected) = u.expected_version {
                return Err(StoreError::Conflict {
                    expected,
                    actual: None,
                });
            }
            let blob = self.encode_checked(&u.set)?;
            let ttl = u.ttl.unwrap_or_default();
            match self.insert_new(
                ns,
                Some(key.id),
                upsert.owner.as_deref(),
                ttl,
                &blob,
                None,
                now,
            ) {
                Ok(snap) => {
                    return Ok(UpdateReply {
                        version: snap.version,
                        created: true,
                        expires_at_ms: finite(snap.expires_at),
                    })
                }
                Err(StoreError::AlreadyExists) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict {
            expected: u.expected_version.unwrap_or(0),
            actual: None,
        })
    }

    /// Updates the live record at `key`; `Ok(None)` if there is none.
    fn update_existing(&self, key: Key, u: &Update, now: u64) -> Result<Option<UpdateReply>> {
        let Some(mut r) = self.records.get_mut(&key) else {
            return Ok(None);
        };
        if !r.is_live(now) {
            return Ok(None);
        }
        if let Some(expected) = u.expected_version {
            if expected != r.version() {
                return Err(StoreError::Conflict {
                    expected,
                    actual: Some(r.version()),
                });
            }
        }
        let mut attrs = decode_attrs(r.attrs()).map_err(|e| StoreError::Codec(e.to_string()))?;
        for name in &u.remove {
            attrs.remove(name);
        }
        for (name, value) in &u.set {
            attrs.insert(name.clone(), value.clone());
        }
        let blob = self.encode_checked(&attrs)?;
        let before = r.mem_size() as i64;
        r.set_attrs(&blob);
        if let Some(ttl) = u.ttl {
            r.set_ttl(ttl);
        }
        // An update is activity: it slides the idle deadline like a touch.
        r.touch(now);
        r.bump_version();
        let reschedule = (r.expires_at() < r.wheel_deadline()).then(|| {
            let at = r.expires_at();
            r.set_wheel_deadline(at);
            r.expires_at()
        });
        let reply = UpdateReply {
            version: r.version(),
            created: false,
            expires_at_ms: finite(r.expires_at()),
        };
        self.add_mem(r.mem_size() as i64 - before);
        self.log_put(&key, &mut r, Sink::Direct);
        let version = r.version();
        self.event(&key, r.owner_str(), EventKind::Updated { version }, now);
        drop(r);
        if let Some(at) = reschedule {
            self.schedule(at, Timer::Record(key));
        }
        Ok(Some(reply))
    }

    /// Adds `delta` to an integer attribute, or to a windowed counter that
    /// refuses (changing nothing) an increment past its limit.
    ///
    /// # Errors
    /// `NotFound`, `Invalid` (not an integer, overflow, bad window), `TooLarge`.
    pub fn incr(&self, i: Incr) -> Result<IncrReply> {
        self.writable()?;
        self.admit()?;
        limits::check_attr_name(&i.attr).map_err(invalid)?;
        if let Some(w) = &i.window {
            if w.window_ms == 0 {
                return Err(invalid("a rate window must be longer than 0".into()));
            }
        }
        let ns = self
            .ns_for_read(&i.namespace)?
            .ok_or(StoreError::NotFound)?;
        let now = self.now_ms();
        let (key, mut r) = self
            .live_mut(Key { ns, id: i.id }, now)
            .ok_or(StoreError::NotFound)?;
        let mut attrs = decode_attrs(r.attrs()).map_err(|e| StoreError::Codec(e.to_string()))?;
        let overflow = || invalid(format!("incrementing attribute {:?} overflows i64", i.attr));
        let (reply, new_value) = match i.window {
            None => {
                let current = match attrs.get(&i.attr) {
                    None => 0,
                    Some(Value::Int(v)) => *v,
                    Some(_) => {
                        return Err(invalid(format!("attribute {:?} is not an integer", i.attr)))
                    }
                };
                let value = current.checked_add(i.delta).ok_or_else(overflow)?;
                let reply = IncrReply {
                    value,
                    allowed: true,
                    remaining: None,
                    reset_at_ms: None,
                    version: r.version() + 1,
                };
                (reply, Some(Value::Int(value)))
            }
            Some(w) => {
                let (current, reset_at) = match attrs.get(&i.attr) {
                    None => (0, now.saturating_add(w.window_ms)),
                    Some(Value::Counter { value, reset_at_ms }) if *reset_at_ms > now => {
                        (*value, *reset_at_ms)
                    }
                    Some(Value::Counter { .. }) => (0, now.saturating_add(w.window_ms)),
                    Some(_) => {
                        return Err(invalid(format!(
                            "attribute {:?} is not a windowed counter",
                            i.attr
                        )))
                    }
                };
                let next = current.checked_add(i.delta).ok_or_else(overflow)?;
                if next > w.limit {
                    let reply = IncrReply {
                        value: current,
                        allowed: false,
                        remaining: Some(w.limit.saturating_sub(current).max(0)),
                        reset_at_ms: Some(reset_at),
                        version: r.version(),
                    };
                    (reply, None)
                } else {
                    let reply = IncrReply {
                        value: next,
                        allowed: true,
                        remaining: Some(w.limit.saturating_sub(next).max(0)),
                        reset_at_ms: Some(reset_at),
                        version: r.version() + 1,
                    };
                    let counter = Value::Counter {
                        value: next,
                        reset_at_ms: reset_at,
                    };
                    (reply, Some(counter))
                }
            }
        };
        if let Some(v) = new_value {
            attrs.insert(i.attr.clone(), v);
            let blob = self.encode_checked(&attrs)?;
            let before = r.mem_size() as i64;
            r.set_attrs(&blob);
            r.bump_version();
            self.add_mem(r.mem_size() as i64 - before);
            self.log_put(&key, &mut r, Sink::Direct);
            let version = r.version();
            self.event(&key, r.owner_str(), EventKind::Updated { version }, now);
        }
        Ok(reply)
    }

    /// Deletes a session and leaves a tombstone on its id. Returns whether a live
    /// session was deleted.
    ///
    /// # Errors
    /// `Invalid` for a malformed namespace.
    pub fn delete(&self, namespace: &str, id: SessionId) -> Result<bool> {
        self.writable()?;
        let Some(ns) = self.ns_for_read(namespace)? else {
            return Ok(false);
        };
        let now = self.now_ms();
        let asked = Key { ns, id };
        let mut key = self.target(asked, now);
        let until = now.saturating_add(self.config.tombstone_ttl_ms);
        let why = Some(Why::new(DeleteReason::Delete, now));
        let mut removed = self.remove_logged(&key, until, |_| true, Sink::Direct, why);
        if removed.is_none() {
            if let Some(moved) = self.retarget(asked, key, now) {
                key = moved;
                removed = self.remove_logged(&key, until, |_| true, Sink::Direct, why);
            }
        }
        let Some(rec) = removed else {
            return Ok(false);
        };
        self.forget(&key, &rec);
        if let Some(owner) = &rec.owner() {
            self.unindex_owner(ns, owner, rec.created_at(), key.id);
        }
        Ok(rec.is_live(now))
    }

    /// Lists an owner's live sessions, oldest first, a page at a time.
    ///
    /// # Errors
    /// `Invalid` for a malformed namespace or owner.
    pub fn list_by_owner(&self, l: &ListByOwner) -> Result<SessionPage> {
        limits::check_owner(&l.owner).map_err(invalid)?;
        let empty = SessionPage {
            sessions: Vec::new(),
            next: None,
        };
        let Some(ns) = self.ns_for_read(&l.namespace)? else {
            return Ok(empty);
        };
        let limit = l.limit.clamp(1, MAX_LIST_PAGE) as usize;
        let now = self.now_ms();
        let okey: &dyn OwnerLookup = &(ns, l.owner.as_str());
        let mut after = l.after.map(|c| (c.created_at_ms, c.id));
        let mut out: Vec<Snapshot> = Vec::with_capacity(limit.min(64));
        let chunk_len = limit * 2;
        'pages: loop {
            // Copy a chunk of candidates under the owner lock, then read records
            // without it.
            let chunk: Vec<(u64, SessionId)> = {
                let Some(set) = self.owners.get(okey) else {
                    break;
                };
                set.after(after).take(chunk_len).collect()
            };
            for &(created_at, id) in &chunk {
                after = Some((created_at, id));
                let Some(snap) = self.read(Key { ns, id }, false, now) else {
                    continue;
                };
                if snap.created_at == created_at && snap.owner.as_deref() == Some(&*l.owner) {
                    out.push(snap);
                    if out.len() == limit {
                        break 'pages;
                    }
                }
            }
            if chunk.len() < chunk_len {
                break;
            }
        }
        let next = match (out.len() == limit, out.last()) {
            (true, Some(last)) => {
                let more = self.owners.get(okey).is_some_and(|set| {
                    set.after(Some((last.created_at, last.id))).next().is_some()
                });
                more.then_some(ListCursor {
                    created_at_ms: last.created_at,
                    id: last.id,
                })
            }
            _ => None,
        };
        let sessions = out
            .into_iter()
            .map(|s| s.into_session(&l.namespace))
            .collect::<Result<Vec<_>>>()?;
        Ok(SessionPage { sessions, next })
    }

    /// Deletes every session of an owner except `except`; returns how many live
    /// sessions were deleted.
    ///
    /// # Errors
    /// `Invalid` for a malformed namespace or owner.
    pub fn delete_by_owner(&self, d: &DeleteByOwner) -> Result<u64> {
        self.writable()?;
        limits::check_owner(&d.owner).map_err(invalid)?;
        let Some(ns) = self.ns_for_read(&d.namespace)? else {
            return Ok(0);
        };
        let now = self.now_ms();
        let except = d.except.map(|id| self.target(Key { ns, id }, now).id);
        let okey: &dyn OwnerLookup = &(ns, d.owner.as_str());
        let Some(mut set) = self.owners.get_mut(okey) else {
            return Ok(0);
        };
        let victims: Vec<(u64, SessionId)> = set
            .after(None)
            .filter(|(_, id)| Some(*id) != except)
            .collect();
        let mut count = 0;
        let _in_flight = self.batch_in_flight();
        let mut batch: Vec<Change> = Vec::new();
        let tomb_until = now.saturating_add(self.config.tombstone_ttl_ms);
        for (created_at, id) in victims {
            set.remove(&(created_at, id));
            let k = Key { ns, id };
            if let Some(rec) = self.remove_logged(
                &k,
                tomb_until,
                |r| r.created_at() == created_at && r.owner_str() == Some(&*d.owner),
                Sink::Gather(&mut batch),
                Some(Why::new(DeleteReason::LogoutEverywhere, now)),
            ) {
                self.forget(&k, &rec);
                if rec.is_live(now) {
                    count += 1;
                }
            }
        }
        self.step("delete-by-owner: removed");
        // Appended while the owner's index is still locked. The victims are
        // tombstoned (unreachable) meanwhile; should one be re-created anyway
        // (a tombstone ttl of 0), its put carries a higher LSN and wins.
        self.append_batch(batch);
        let now_empty = set.is_empty();
        drop(set);
        if now_empty {
            self.owners.remove_if(okey, |_, s| s.is_empty());
        }
        Ok(count)
    }

    /// Gives a session a new id. Data, owner and deadlines stay; the old id is
    /// tombstoned, and with a grace period it resolves to the new id until then.
    ///
    /// # Errors
    /// `NotFound`, `Invalid`, or `Conflict` if the record kept changing under the
    /// rotation (it retries several times first).
    pub fn rotate(&self, r: &Rotate) -> Result<Session> {
        self.rotate_to(r, None)
    }

    /// [`Store::rotate`] to `new_id` when given (a replicated group's leader
    /// draws it before proposing, so every member gives the same id).
    ///
    /// # Errors
    /// As [`Store::rotate`]; `AlreadyExists` if `new_id` is taken.
    pub fn rotate_to(&self, r: &Rotate, new_id: Option<SessionId>) -> Result<Session> {
        self.writable()?;
        let ns = self
            .ns_for_read(&r.namespace)?
            .ok_or(StoreError::NotFound)?;
        let now = self.now_ms();
        let old = self.target(Key { ns, id: r.id }, now);
        let owner = self
            .records
            .get(&old)
            .filter(|rec| rec.is_live(now))
            .ok_or(StoreError::NotFound)?
            .owner()
            .cloned();
        // Owned sessions rotate under the owner's index lock, so a concurrent
        // limit check or revoke-all sees either the old id or the new one.
        let mut owner_set = owner.as_ref().map(|o| {
            self.owners
                .entry(OwnerKey {
                    ns,
                    owner: o.clone(),
                })
                .or_default()
        });
        let _in_flight = self.batch_in_flight();
        for _ in 0..16 {
            let Some(snap) = self.read(old, false, now) else {
                return Err(StoreError::NotFound);
            };
            if snap.owner != owner {
                return Err(StoreError::NotFound);
            }
            let new = Key {
                ns,
                id: new_id.unwrap_or_else(SessionId::new_v4),
            };
            let rec = Record::new(
                record::Fields {
                    owner: snap.owner.clone(),
                    created_at: snap.created_at,
                    last_active: snap.last_active,
                    ttl: snap.ttl,
                    version: snap.version,
                },
                &snap.attrs,
            );
            // The new record, the old id's removal and its alias reach the log
            // as one batch. Nobody can know the fresh id yet, so placing it
            // first is invisible; the batch is appended under the old record's
            // lock, once the old record is known not to have changed, and
            // before the alias makes the new record reachable through the old
            // id: whatever is done through the alias is logged after it.
            let mut batch: Vec<Change> = Vec::new();
            if self
                .put_new(new, rec, now, Sink::Gather(&mut batch))?
                .replaced
                .is_some()
            {
                return Err(StoreError::Codec("fresh id replaced a record".into()));
            }
            self.step("rotate: new record placed");
            let grace_until = r.grace_ms.map(|g| now.saturating_add(g));
            let tomb_until = grace_until
                .unwrap_or(now)
                .saturating_add(self.config.tombstone_ttl_ms);
            let mut batch = Some(batch);
            let moved = self
                .records
                .remove_if(&old, |k, cur| {
                    let unchanged = cur.version() == snap.version
                        && cur.last_active() == snap.last_active
                        && cur.created_at() == snap.created_at;
                    let Some(mut batch) = batch.take().filter(|_| unchanged) else {
                        return false;
                    };
                    self.add_tombstone(*k, tomb_until);
                    self.log_delete(k, tomb_until, Sink::Gather(&mut batch));
                    self.event(k, cur.owner_str(), EventKind::Rotated { to: new.id }, now);
                    if let Some(until) = grace_until {
                        self.log_alias(k, new.id, until, &mut batch);
                    }
                    self.append_batch(batch);
                    if let Some(until) = grace_until {
                        if self.aliases.insert(*k, (new.id, until)).is_none() {
                            self.alias_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    true
                })
                .map(|(_, r)| r);
            match moved {
                Some(old_rec) => {
                    self.forget(&old, &old_rec);
                    if let Some(set) = owner_set.as_mut() {
                        set.remove(&(snap.created_at, old.id));
                        set.insert((snap.created_at, new.id));
                    }
                    drop(owner_set);
                    self.step("rotate: moved");
                    if let Some(until) = grace_until {
                        self.schedule(until, Timer::Alias(old));
                    }
                    if snap.expires_at != NEVER {
                        self.schedule(snap.expires_at, Timer::Record(new));
                    }
                    let mut snap = snap;
                    snap.id = new.id;
                    return snap.into_session(&r.namespace);
                }
                None => {
                    // The record changed between the copy and the move. The new
                    // record was never reachable nor logged (its batch is
                    // dropped): take it away and retry. The removal is logged
                    // all the same: a snapshot taken meanwhile may hold it.
                    if let Some(undo) = self.remove_logged(&new, 0, |_| true, Sink::Direct, None) {
                        self.forget(&new, &undo);
                    }
                }
            }
        }
        Err(StoreError::Conflict {
            expected: 0,
            actual: None,
        })
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        let namespaces: Vec<(String, u64)> = self
            .namespaces
            .snapshot()
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        StoreStats {
            records: namespaces.iter().map(|(_, c)| c).sum(),
            namespaces,
            expired_total: self.expired_total.load(Ordering::Relaxed),
            evicted_total: self.evicted_total.load(Ordering::Relaxed),
            memory_bytes: u64::try_from(self.memory.load(Ordering::Relaxed)).unwrap_or(0),
        }
    }

    /// Counts `delta` bytes more (or fewer) held by client connections'
    /// buffers: the memory limit covers them too, so a write is refused when
    /// sessions and buffers together reach it.
    pub fn add_connection_buffers(&self, delta: i64) {
        self.connection_buffers.fetch_add(delta, Ordering::Relaxed);
    }

    /// Bytes held by client connections' buffers.
    #[must_use]
    pub fn connection_buffer_bytes(&self) -> u64 {
        u64::try_from(self.connection_buffers.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The memory estimate the limit is checked against: sessions and
    /// connection buffers.
    pub(super) fn memory_used(&self) -> u64 {
        u64::try_from(self.memory.load(Ordering::Relaxed)).unwrap_or(0)
            + self.connection_buffer_bytes()
    }

    /// About how many bytes a snapshot of the store would take: the log size
    /// compaction compares against. Derived from the memory estimate by
    /// swapping each record's in-memory overhead for its log-frame overhead.
    #[must_use]
    pub fn log_image_estimate(&self) -> u64 {
        const FRAME_OVERHEAD: u64 = 40;
        let records = self.records.len() as u64;
        let in_memory = (std::mem::size_of::<Key>() + std::mem::size_of::<Record>() + 16) as u64;
        let memory = u64::try_from(self.memory.load(Ordering::Relaxed)).unwrap_or(0);
        memory.saturating_sub(records * in_memory) + records * FRAME_OVERHEAD
    }

    /// Records held, expired ones awaiting reclaim included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Owner index entries held for `owner` (live or not yet pruned); for tests
    /// and diagnostics.
    #[must_use]
    pub fn owner_index_len(&self, namespace: &str, owner: &str) -> usize {
        let Some(ns) = self.namespaces.lookup(namespace) else {
            return 0;
        };
        let probe: &dyn OwnerLookup = &(ns, owner);
        self.owners.get(probe).map_or(0, |s| s.len())
    }
}

/// Estimated bytes of one tombstone (key, deadline, map overhead).
const TOMBSTONE_BYTES: i64 = 48;

#[cfg(test)]
mod tests;
