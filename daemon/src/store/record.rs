//! The in-memory record and its deadline arithmetic.
//!
//! A record is kept compact: the namespace is an interned `u32` in the key, the
//! id 16 bytes, times are `u64` milliseconds, and the attributes one encoded blob
//! (the same bytes the attribute map takes on the wire).

use std::num::NonZeroU64;
use std::sync::Arc;

use sessiond_protocol::{SessionId, Ttl};

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

/// One session as the store keeps it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Owner, shared with the owner index.
    pub owner: Option<Arc<str>>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last create, touch or update (ms).
    pub last_active: u64,
    /// When it expires, or [`NEVER`]. Reads compare against it, so an expired
    /// record is invisible even before the wheel reclaims it.
    pub expires_at: u64,
    /// The deadline of this record's live entry in the timer wheel, or [`NEVER`].
    /// Entries that fire with another deadline are stale and ignored; touches that
    /// push `expires_at` later leave it alone (lazy rescheduling).
    pub wheel_deadline: u64,
    /// Sliding expiry (ms), if any (never 0: `Option<NonZeroU64>` is 8 bytes).
    pub idle_ttl: Option<NonZeroU64>,
    /// Absolute expiry after creation (ms), if any (never 0).
    pub max_lifetime: Option<NonZeroU64>,
    /// Bumped on every data change.
    pub version: u64,
    /// Encoded attribute map.
    pub attrs: Box<[u8]>,
    /// `expires_at` as of the last time the record was logged; touches are
    /// logged only once they move the deadline well past it.
    pub logged_expires: u64,
}

impl Record {
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

    /// The record's expiry settings.
    #[must_use]
    pub fn ttl(&self) -> Ttl {
        Ttl {
            idle_ttl_ms: self.idle_ttl.map(NonZeroU64::get),
            max_lifetime_ms: self.max_lifetime.map(NonZeroU64::get),
        }
    }

    /// Whether the record is alive at `now`.
    #[must_use]
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at > now
    }

    /// Slides the deadline: records activity at `now` and recomputes `expires_at`
    /// (never past the absolute cap). Returns the new deadline.
    pub fn touch(&mut self, now: u64) -> u64 {
        self.last_active = self.last_active.max(now);
        self.expires_at = Self::deadline(self.created_at, self.last_active, self.ttl());
        self.expires_at
    }

    /// Approximate heap and table bytes this record costs.
    #[must_use]
    pub fn mem_size(&self) -> usize {
        // Key + record inline in the map, the blob, and a share of map overhead.
        std::mem::size_of::<Key>()
            + std::mem::size_of::<Self>()
            + self.attrs.len()
            + self.owner.as_ref().map_or(0, |o| o.len() + 16)
            + 16
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
