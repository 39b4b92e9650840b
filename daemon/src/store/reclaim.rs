//! Expiry and eviction inside the store: the timer wheels' entries, reclaiming
//! what is due (expired records with their index entries, ended tombstones and
//! grace periods), and making room under the memory limit.

use std::sync::atomic::Ordering;

use super::record::{finite, Key, NEVER};
use super::{MemoryPolicy, Result, Sink, Store, StoreError, Why, TOMBSTONE_BYTES, WHEEL_SHARDS};
use sessiond_protocol::{DeleteReason, EventKind, SessionId};

/// What a timer wheel entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A record's deadline (checked against the record: it may have moved).
    Record(Key),
    /// A tombstone's end.
    Tombstone(Key),
    /// A rotation grace period's end.
    Alias(Key),
}

/// A [`Timer`] as the wheels keep it: 20 bytes, its kind in the top two bits
/// of the namespace's id (ids stay below [`MAX_NAMESPACE_IDS`]), so that a
/// wheel entry, with its deadline's low 32 bits, takes 24 bytes instead of 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedTimer {
    ns_kind: u32,
    id: SessionId,
}

/// Where a packed timer's kind starts.
const KIND_SHIFT: u32 = 30;

/// Namespace ids are below this (their top two bits are a packed timer's kind).
pub const MAX_NAMESPACE_IDS: usize = 1 << KIND_SHIFT;

impl From<Timer> for PackedTimer {
    fn from(timer: Timer) -> Self {
        let (key, kind) = match timer {
            Timer::Record(k) => (k, 0),
            Timer::Tombstone(k) => (k, 1),
            Timer::Alias(k) => (k, 2),
        };
        debug_assert!((key.ns as usize) < MAX_NAMESPACE_IDS);
        Self {
            ns_kind: (kind << KIND_SHIFT) | (key.ns & ((1 << KIND_SHIFT) - 1)),
            id: key.id,
        }
    }
}

impl From<PackedTimer> for Timer {
    fn from(p: PackedTimer) -> Self {
        let key = Key {
            ns: p.ns_kind & ((1 << KIND_SHIFT) - 1),
            id: p.id,
        };
        match p.ns_kind >> KIND_SHIFT {
            0 => Self::Record(key),
            1 => Self::Tombstone(key),
            // 3 is never packed.
            _ => Self::Alias(key),
        }
    }
}

impl Store {
    /// Lets a write that may add data through, making room first under the
    /// volatile-ttl policy.
    pub(super) fn admit(&self) -> Result<()> {
        let Some(max) = self.config.max_memory else {
            return Ok(());
        };
        if crate::clock::applying() {
            // A replicated command was admitted by its leader before it was
            // proposed; every member applies it alike.
            return Ok(());
        }
        let used = || self.memory_used();
        if used() < max {
            return Ok(());
        }
        if self.config.memory_policy == MemoryPolicy::VolatileTtl {
            // Bounded work per write: a store full of sessions without a ttl
            // cannot be freed this way, and must not stall the writer.
            for _ in 0..16 {
                if self.evict_soonest() == 0 || used() < max {
                    break;
                }
            }
            if used() < max {
                return Ok(());
            }
        }
        Err(StoreError::OutOfMemory { used: used(), max })
    }

    /// Evicts the records of the earliest wheel slot (the sessions closest to
    /// expiry); returns how many wheel entries it looked at (0: nothing left
    /// to evict). Stale entries (touched records) and tombstone/alias entries
    /// are put back where they belong.
    pub(super) fn evict_soonest(&self) -> usize {
        let now = self.now_ms();
        // The wheel whose earliest slot comes first.
        let Some(wheel) = self.wheels[..WHEEL_SHARDS]
            .iter()
            .filter_map(|w| w.lock().next_expiration_hint().map(|h| (h, w)))
            .min_by_key(|(h, _)| *h)
            .map(|(_, w)| w)
        else {
            return 0;
        };
        let mut taken = Vec::new();
        let looked_at = wheel.lock().take_earliest(&mut taken);
        for (deadline, timer) in taken {
            let timer = Timer::from(timer);
            match timer {
                Timer::Record(key) => {
                    let moved = match self.records.get_mut(&key) {
                        // Stale entry: the record has a newer one, or is gone.
                        Some(r) if r.wheel_deadline() != deadline => continue,
                        None => continue,
                        // Touched since scheduled: it is not among the soonest;
                        // put it back at its real deadline (lazy rescheduling).
                        Some(mut r) if r.expires_at() > deadline && r.expires_at() != NEVER => {
                            let at = r.expires_at();
                            r.set_wheel_deadline(at);
                            Some(r.expires_at())
                        }
                        Some(_) => None,
                    };
                    if let Some(at) = moved {
                        self.schedule(at, Timer::Record(key));
                        continue;
                    }
                    if let Some(rec) = self.remove_logged(
                        &key,
                        0,
                        |r| r.wheel_deadline() == deadline,
                        Sink::Direct,
                        Some(Why::new(DeleteReason::MemoryEviction, now)),
                    ) {
                        self.forget(&key, &rec);
                        if let Some(owner) = &rec.owner() {
                            self.unindex_owner(key.ns, owner, rec.created_at(), key.id);
                        }
                        self.evicted_total.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Timer::Tombstone(_) | Timer::Alias(_) => {
                    self.schedule(deadline.max(now), timer);
                }
            }
        }
        looked_at
    }

    /// Polls the timer wheels at the current time and reclaims what is due: expired
    /// records (with their index entries), ended tombstones and grace periods.
    /// Does at most about `budget` entries; returns how many it handled (fewer
    /// than `budget` means nothing due is left).
    pub fn reclaim(&self, budget: usize) -> usize {
        let now = self.now_ms();
        let per_wheel = budget.div_ceil(self.wheels.len()).max(1);
        let mut due = Vec::new();
        let mut handled = 0;
        for wheel in self.wheels.iter() {
            due.clear();
            // The wheel lock is released before any record is locked (lock order).
            let n = wheel.lock().poll(now, per_wheel, &mut due);
            handled += n;
            for &(deadline, timer) in &due {
                self.fire(deadline, timer.into(), now);
            }
        }
        handled
    }

    /// Whether the memory limit is reached (a replicated group's leader
    /// refuses writes that add data then, before proposing them).
    #[must_use]
    pub fn memory_full(&self) -> bool {
        self.config
            .max_memory
            .is_some_and(|max| self.memory_used() >= max)
    }

    /// Whether any timer (a deadline, a tombstone's or a grace period's end)
    /// may be due at `now`.
    #[must_use]
    pub fn has_due(&self, now: u64) -> bool {
        self.wheels
            .iter()
            .any(|w| w.lock().next_expiration_hint().is_some_and(|at| at <= now))
    }

    pub(super) fn fire(&self, deadline: u64, timer: Timer, now: u64) {
        match timer {
            Timer::Record(key) => {
                let reschedule = {
                    let Some(mut r) = self.records.get_mut(&key) else {
                        return;
                    };
                    if r.wheel_deadline() != deadline {
                        return; // stale entry: a newer one exists
                    }
                    if r.is_live(now) {
                        // Touched since it was scheduled: re-insert at the new deadline.
                        let at = r.expires_at();
                        r.set_wheel_deadline(at);
                        finite(r.expires_at())
                    } else {
                        None
                    }
                };
                if let Some(at) = reschedule {
                    self.schedule(at, Timer::Record(key));
                    return;
                }
                if let Some((_, rec)) = self.records.remove_if(&key, |k, r| {
                    let expired = r.wheel_deadline() == deadline && !r.is_live(now);
                    if expired {
                        self.event(k, r.owner_str(), EventKind::Expired, r.expires_at());
                    }
                    expired
                }) {
                    self.forget(&key, &rec);
                    self.expired_total.fetch_add(1, Ordering::Relaxed);
                    if let Some(owner) = &rec.owner() {
                        self.unindex_owner(key.ns, owner, rec.created_at(), key.id);
                    }
                }
            }
            Timer::Tombstone(key) => {
                if self
                    .tombstones
                    .remove_if(&key, |_, until| *until <= now)
                    .is_some()
                {
                    self.tombstone_count.fetch_sub(1, Ordering::Relaxed);
                    self.add_mem(-TOMBSTONE_BYTES);
                }
            }
            Timer::Alias(key) => {
                if self.aliases.remove_if(&key, |_, a| a.1 <= now).is_some() {
                    self.alias_count.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The wheel that keeps `timer`.
    pub(super) fn wheel_of(timer: Timer) -> usize {
        let (key, base) = match timer {
            Timer::Record(k) => (k, 0),
            Timer::Tombstone(k) | Timer::Alias(k) => (k, WHEEL_SHARDS),
        };
        base + (usize::from(key.id.0[0]) ^ key.ns as usize) % WHEEL_SHARDS
    }

    pub(super) fn schedule(&self, at: u64, timer: Timer) {
        self.wheels[Self::wheel_of(timer)]
            .lock()
            .insert(at, timer.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_timer_is_small_and_unpacks_to_itself() {
        assert_eq!(std::mem::size_of::<PackedTimer>(), 20);
        assert_eq!(std::mem::size_of::<(u32, PackedTimer)>(), 24);
        for ns in [0, 1, 77, u32::try_from(MAX_NAMESPACE_IDS - 1).unwrap_or(0)] {
            let key = Key {
                ns,
                id: SessionId([ns as u8; 16]),
            };
            for timer in [Timer::Record(key), Timer::Tombstone(key), Timer::Alias(key)] {
                assert_eq!(Timer::from(PackedTimer::from(timer)), timer);
            }
        }
    }
}
