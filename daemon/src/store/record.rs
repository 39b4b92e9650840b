//! The in-memory record and its deadline arithmetic.
//!
//! A record is one allocation behind an 8-byte pointer in the table: its
//! header (owner, times, ttls, version) followed by the attributes as one
//! encoded blob (the same bytes the attribute map takes on the wire). The
//! namespace is an interned `u32` in the key, the id 16 bytes, times are `u64`
//! milliseconds.
//!
//! The allocation is reference counted so that a reader copies a pointer, not
//! the blob, under the shard lock and encodes its answer after releasing it.
//! The blob never changes once written (an update that changes attributes
//! builds a new record); the header's mutable fields are atomics written only
//! through `&mut Record`, i.e. under the shard's write lock, and read under
//! its read or write lock, which orders them (hence `Relaxed`).

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use sessiond_protocol::{SessionId, Ttl};
use triomphe::ThinArc;

/// A deadline that never comes.
pub const NEVER: u64 = u64::MAX;

/// A record's key: interned namespace and session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Interned namespace.
    pub ns: u32,
    /// Session id.
    pub id: SessionId,
}

/// The fixed part of a record, in front of its attribute blob.
#[derive(Debug)]
struct Header {
    /// Owner, shared with the owner index.
    owner: Option<Arc<str>>,
    /// Creation time (ms).
    created_at: u64,
    /// Last create, touch or update (ms).
    last_active: AtomicU64,
    /// The deadline of this record's live entry in the timer wheel, or
    /// [`NEVER`]. Entries that fire with another deadline are stale and
    /// ignored; touches that push the deadline later leave it alone (lazy
    /// rescheduling).
    wheel_deadline: AtomicU64,
    /// Sliding expiry (ms), 0 for none.
    idle_ttl: AtomicU64,
    /// Absolute expiry after creation (ms), 0 for none.
    max_lifetime: AtomicU64,
    /// Bumped on every data change.
    version: AtomicU64,
    /// The deadline as of the last time the record was logged; touches are
    /// logged only once they move the deadline well past it.
    logged_expires: AtomicU64,
}

/// What a new record starts with.
#[derive(Debug, Clone)]
pub struct Fields {
    /// Owner (share the owner index's copy).
    pub owner: Option<Arc<str>>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last activity (ms).
    pub last_active: u64,
    /// Expiry settings (a ttl of 0 means none).
    pub ttl: Ttl,
    /// Version.
    pub version: u64,
}

/// One session as the store keeps it.
pub struct Record(ThinArc<Header, u8>);

/// A record's attribute blob, shared with the record (a pointer copy).
#[derive(Clone)]
pub struct Blob(ThinArc<Header, u8>);

impl std::ops::Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0.slice
    }
}

impl PartialEq for Blob {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Attribute values may be secrets: show the size only.
        write!(f, "Blob({} bytes)", self.len())
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("created_at", &self.created_at())
            .field("last_active", &self.last_active())
            .field("expires_at", &self.expires_at())
            .field("version", &self.version())
            .field("attrs_len", &self.attrs().len())
            .finish_non_exhaustive()
    }
}

fn ttl_ms(t: Option<u64>) -> u64 {
    t.unwrap_or(0)
}

fn ttl_opt(ms: u64) -> Option<u64> {
    (ms != 0).then_some(ms)
}

impl Record {
    /// A record with these fields and attribute blob; its wheel and logged
    /// deadlines start at its deadline.
    #[must_use]
    pub fn new(fields: Fields, attrs: &[u8]) -> Self {
        let deadline = Self::deadline(fields.created_at, fields.last_active, fields.ttl);
        let header = Header {
            owner: fields.owner,
            created_at: fields.created_at,
            last_active: AtomicU64::new(fields.last_active),
            wheel_deadline: AtomicU64::new(deadline),
            idle_ttl: AtomicU64::new(ttl_ms(fields.ttl.idle_ttl_ms)),
            max_lifetime: AtomicU64::new(ttl_ms(fields.ttl.max_lifetime_ms)),
            version: AtomicU64::new(fields.version),
            logged_expires: AtomicU64::new(deadline),
        };
        Self(ThinArc::from_header_and_slice(header, attrs))
    }

    fn header(&self) -> &Header {
        &self.0.header.header
    }

    /// A copy of this record in a new allocation, with `owner` and `attrs`.
    fn rebuilt(&self, owner: Option<Arc<str>>, attrs: &[u8]) -> Self {
        let h = self.header();
        let copy = |a: &AtomicU64| AtomicU64::new(a.load(Relaxed));
        let header = Header {
            owner,
            created_at: h.created_at,
            last_active: copy(&h.last_active),
            wheel_deadline: copy(&h.wheel_deadline),
            idle_ttl: copy(&h.idle_ttl),
            max_lifetime: copy(&h.max_lifetime),
            version: copy(&h.version),
            logged_expires: copy(&h.logged_expires),
        };
        Self(ThinArc::from_header_and_slice(header, attrs))
    }

    /// The same record with another attribute blob (a new allocation; readers
    /// holding the old blob keep it).
    pub fn set_attrs(&mut self, attrs: &[u8]) {
        *self = self.rebuilt(self.header().owner.clone(), attrs);
    }

    /// Makes the record share `owner` (the owner index's copy of the same
    /// name). Free for a record nobody else holds yet; otherwise it copies.
    pub fn share_owner(&mut self, owner: Arc<str>) {
        if self
            .header()
            .owner
            .as_ref()
            .is_some_and(|o| Arc::ptr_eq(o, &owner))
        {
            return;
        }
        let done = self.0.with_arc_mut(|a| match triomphe::Arc::get_mut(a) {
            Some(inner) => {
                inner.header_mut().owner = Some(owner.clone());
                true
            }
            None => false,
        });
        if !done {
            *self = self.rebuilt(Some(owner), self.attrs());
        }
    }

    /// The encoded attribute map.
    #[must_use]
    pub fn attrs(&self) -> &[u8] {
        &self.0.slice
    }

    /// The attribute blob, shared (a pointer copy, to use after the lock is
    /// released).
    #[must_use]
    pub fn blob(&self) -> Blob {
        Blob(self.0.clone())
    }

    /// Owner, shared with the owner index.
    #[must_use]
    pub fn owner(&self) -> Option<&Arc<str>> {
        self.header().owner.as_ref()
    }

    /// Owner's name.
    #[must_use]
    pub fn owner_str(&self) -> Option<&str> {
        self.header().owner.as_deref()
    }

    /// Creation time (ms).
    #[must_use]
    pub fn created_at(&self) -> u64 {
        self.header().created_at
    }

    /// Last create, touch or update (ms).
    #[must_use]
    pub fn last_active(&self) -> u64 {
        self.header().last_active.load(Relaxed)
    }

    /// When it expires, or [`NEVER`]. Reads compare against it, so an expired
    /// record is invisible even before the wheel reclaims it.
    #[must_use]
    pub fn expires_at(&self) -> u64 {
        Self::deadline(self.created_at(), self.last_active(), self.ttl())
    }

    /// The deadline of the record's live timer-wheel entry, or [`NEVER`].
    #[must_use]
    pub fn wheel_deadline(&self) -> u64 {
        self.header().wheel_deadline.load(Relaxed)
    }

    /// Records that the wheel entry at `at` is the live one.
    pub fn set_wheel_deadline(&mut self, at: u64) {
        self.header().wheel_deadline.store(at, Relaxed);
    }

    /// The deadline as of the last time the record was logged.
    #[must_use]
    pub fn logged_expires(&self) -> u64 {
        self.header().logged_expires.load(Relaxed)
    }

    /// Notes the deadline that was just logged.
    pub fn set_logged_expires(&mut self, at: u64) {
        self.header().logged_expires.store(at, Relaxed);
    }

    /// Version, bumped on every data change.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.header().version.load(Relaxed)
    }

    /// Bumps the version; returns the new one.
    pub fn bump_version(&mut self) -> u64 {
        self.header().version.fetch_add(1, Relaxed) + 1
    }

    /// Sliding expiry (ms), if any.
    #[must_use]
    pub fn idle_ttl(&self) -> Option<NonZeroU64> {
        NonZeroU64::new(self.header().idle_ttl.load(Relaxed))
    }

    /// The record's expiry settings.
    #[must_use]
    pub fn ttl(&self) -> Ttl {
        let h = self.header();
        Ttl {
            idle_ttl_ms: ttl_opt(h.idle_ttl.load(Relaxed)),
            max_lifetime_ms: ttl_opt(h.max_lifetime.load(Relaxed)),
        }
    }

    /// Replaces the expiry settings (the deadline follows at once).
    pub fn set_ttl(&mut self, ttl: Ttl) {
        let h = self.header();
        h.idle_ttl.store(ttl_ms(ttl.idle_ttl_ms), Relaxed);
        h.max_lifetime.store(ttl_ms(ttl.max_lifetime_ms), Relaxed);
    }

    /// The deadline these settings give at `last_active`.
    #[must_use]
    pub fn deadline(created_at: u64, last_active: u64, ttl: Ttl) -> u64 {
        let idle = ttl
            .idle_ttl_ms
            .map_or(NEVER, |t| last_active.saturating_add(t));
        let abs = ttl
            .max_lifetime_ms
            .map_or(NEVER, |t| created_at.saturating_add(t));
        idle.min(abs)
    }

    /// Whether the record is alive at `now`.
    #[must_use]
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at() > now
    }

    /// Slides the deadline: records activity at `now` (never past the
    /// absolute cap). Returns the new deadline.
    pub fn touch(&mut self, now: u64) -> u64 {
        let h = self.header();
        if now > h.last_active.load(Relaxed) {
            h.last_active.store(now, Relaxed);
        }
        self.expires_at()
    }

    /// Approximate heap and table bytes this record costs.
    #[must_use]
    pub fn mem_size(&self) -> usize {
        // Table slot (key + pointer, at about half load), the allocation
        // (count, header, length, blob, allocator overhead) and the owner's
        // share.
        2 * (std::mem::size_of::<Key>() + 8 + 1)
            + 8
            + std::mem::size_of::<Header>()
            + 8
            + self.attrs().len()
            + 16
            + self.owner().map_or(0, |o| o.len() + 16)
    }
}

/// `Some(deadline)` unless it is [`NEVER`].
#[must_use]
pub fn finite(deadline: u64) -> Option<u64> {
    (deadline != NEVER).then_some(deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(attrs: &[u8]) -> Record {
        Record::new(
            Fields {
                owner: Some(Arc::from("alice")),
                created_at: 1000,
                last_active: 1000,
                ttl: Ttl {
                    idle_ttl_ms: Some(100),
                    max_lifetime_ms: Some(250),
                },
                version: 1,
            },
            attrs,
        )
    }

    /// The table holds a pointer; everything else is in one allocation.
    #[test]
    fn a_record_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Record>(), 8);
        assert_eq!(std::mem::size_of::<(Key, Record)>(), 32);
    }

    #[test]
    fn fields_round_trip_and_deadlines_follow_activity() {
        let mut r = rec(b"blob");
        assert_eq!(r.owner_str(), Some("alice"));
        assert_eq!(
            (r.created_at(), r.last_active(), r.version()),
            (1000, 1000, 1)
        );
        assert_eq!(r.expires_at(), 1100);
        assert_eq!((r.wheel_deadline(), r.logged_expires()), (1100, 1100));
        assert_eq!(r.touch(1050), 1150);
        assert_eq!(r.touch(1020), 1150, "a touch never moves activity back");
        assert_eq!(r.touch(1200), 1250, "capped by the absolute lifetime");
        assert!(r.is_live(1249) && !r.is_live(1250));
        r.set_ttl(Ttl::default());
        assert_eq!(r.expires_at(), NEVER);
        assert_eq!(r.bump_version(), 2);
        assert_eq!(r.attrs(), b"blob");
    }

    /// A reader's blob outlives an update; the header moves to the new
    /// allocation unchanged.
    #[test]
    fn new_attributes_leave_readers_their_blob() {
        let mut r = rec(b"old");
        r.touch(1040);
        r.set_wheel_deadline(1100);
        r.set_logged_expires(1090);
        r.bump_version();
        let held = r.blob();
        r.set_attrs(b"newer bytes");
        assert_eq!(&*held, b"old");
        assert_eq!(r.attrs(), b"newer bytes");
        assert_eq!(r.owner_str(), Some("alice"));
        assert_eq!((r.last_active(), r.version()), (1040, 2));
        assert_eq!((r.wheel_deadline(), r.logged_expires()), (1100, 1090));
        assert_eq!(r.ttl().max_lifetime_ms, Some(250));
    }

    #[test]
    fn sharing_the_owner_name_keeps_the_record() {
        let shared: Arc<str> = Arc::from("alice");
        let mut r = rec(b"x");
        r.share_owner(shared.clone());
        assert!(Arc::ptr_eq(r.owner().unwrap(), &shared));
        // Held by a reader: the record is copied, the reader's blob kept.
        let held = r.blob();
        r.touch(1010);
        let other: Arc<str> = Arc::from("alice");
        r.share_owner(other.clone());
        assert!(Arc::ptr_eq(r.owner().unwrap(), &other));
        assert_eq!((r.last_active(), r.attrs()), (1010, &b"x"[..]));
        assert_eq!(&*held, b"x");
    }

    #[test]
    fn deadline_is_the_earlier_cap() {
        let ttl = Ttl {
            idle_ttl_ms: Some(100),
            max_lifetime_ms: Some(250),
        };
        assert_eq!(Record::deadline(1000, 1000, ttl), 1100);
        assert_eq!(Record::deadline(1000, 1200, ttl), 1250);
        assert_eq!(Record::deadline(1000, 1000, Ttl::default()), NEVER);
        let huge = Ttl {
            idle_ttl_ms: Some(u64::MAX),
            max_lifetime_ms: None,
        };
        assert_eq!(Record::deadline(5, 5, huge), NEVER);
    }
}
