//! A hierarchical timer wheel with millisecond resolution.
//!
//! # Layout
//! Six levels of 64 slots. A slot of level `L` spans `64^L` ms, so level 0
//! holds the next 64 ms one millisecond per slot, level 1 the next ~4 s in
//! 64 ms slots, and level 5 reaches 2^36 ms (about 2.2 years). An entry goes to
//! the level of the highest bit in which its deadline differs from the wheel's
//! current time, so insertion is O(1): two shifts, a mask and a push. Each level
//! keeps a 64-bit occupancy map, so finding the next non-empty slot is one
//! rotate and one `trailing_zeros`, whatever the gap: advancing a wheel by a
//! day with few entries visits only the occupied slots, not 86.4 million.
//!
//! When time reaches a slot of level `L > 0`, its entries are re-inserted
//! ("cascaded") relative to the new time and land on lower levels; each entry
//! cascades at most five times in its life. Deadlines 2^36 ms or more ahead (by
//! the highest bit in which they differ from the current time) wait in an
//! overflow list and are re-inserted when the wheel's time enters their 2^36 ms
//! epoch.
//!
//! # Memory
//! An entry on the levels keeps only the low 32 bits of its deadline: every
//! entry of a slot shares the bits above those with the slot's start (the bits
//! from the slot's level up are the slot's index and the current time's), so
//! the deadline is rebuilt from the slot when the entry leaves it. With the
//! store's 20-byte timers an entry takes 24 bytes instead of 32: a wheel holds
//! one entry per session with a deadline.
//!
//! # Guarantees
//! - Nothing is returned before its deadline: [`Wheel::poll`] at `now` returns
//!   only entries with `deadline <= now`.
//! - Everything due is returned by the first poll at or after its deadline,
//!   budget permitting. Entries due beyond a poll's budget wait in a ready queue
//!   and come first at the next poll, so nothing is lost.
//!
//! The wheel itself never reschedules: the store re-inserts an entry whose
//! record was touched when it fires (lazy rescheduling), which keeps touches off
//! the wheel entirely. It is not synchronised; the store wraps it in a mutex.

use std::collections::VecDeque;

/// Bits of slot index per level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Number of levels (the low `SLOT_BITS * (LEVELS - 1)` bits of a deadline,
/// all an entry keeps, must fit in its 32).
const LEVELS: usize = 6;
// What an entry keeps of its deadline covers every level's slot start below
// it (see `Expiration::rebuild`).
const _: () = assert!(SLOT_BITS * (LEVELS as u32 - 1) <= 32);
/// Deadlines at least this far (XOR-distance) from the current time overflow.
const RANGE_BITS: u32 = SLOT_BITS * LEVELS as u32;

struct Level<T> {
    /// Bit `i` set when `slots[i]` is non-empty.
    occupied: u64,
    /// Entries with the low 32 bits of their deadlines (see the module docs).
    slots: Box<[Vec<(u32, T)>]>,
}

impl<T> Level<T> {
    fn new() -> Self {
        Self {
            occupied: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
        }
    }
}

/// The next non-empty slot and the time it starts.
#[derive(Debug, Clone, Copy)]
struct Expiration {
    level: usize,
    slot: usize,
    /// When the slot starts: its entries' deadlines share the bits above
    /// their low 32 with it.
    start: u64,
    /// `start`, or the current time if that is later.
    deadline: u64,
}

impl Expiration {
    /// The deadline of an entry of this slot, from its low 32 bits.
    fn rebuild(&self, low: u32) -> u64 {
        (self.start & !u64::from(u32::MAX)) | u64::from(low)
    }
}

/// The low 32 bits of a deadline, all an entry on the levels keeps.
fn low_bits(deadline: u64) -> u32 {
    (deadline & u64::from(u32::MAX)) as u32
}

/// A timer wheel of `(deadline_ms, T)` entries. See the module docs.
pub struct Wheel<T> {
    /// Current time: every slot before it has been processed.
    now: u64,
    levels: Box<[Level<T>]>,
    /// Entries too far ahead for the levels.
    overflow: Vec<(u64, T)>,
    /// The earliest deadline in `overflow` (`u64::MAX` when empty).
    overflow_min: u64,
    /// The epoch (`now >> RANGE_BITS`) in which `overflow` was last sorted out.
    overflow_epoch: u64,
    /// Due entries not yet handed out (a poll's budget ran out).
    ready: VecDeque<(u64, T)>,
    len: usize,
}

impl<T> std::fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("now", &self.now)
            .field("len", &self.len)
            .field("ready", &self.ready.len())
            .field("overflow", &self.overflow.len())
            .finish_non_exhaustive()
    }
}

fn slot_span(level: usize) -> u64 {
    1u64 << (SLOT_BITS * level as u32)
}

fn slot_index(deadline: u64, level: usize) -> usize {
    ((deadline >> (SLOT_BITS * level as u32)) as usize) & (SLOTS - 1)
}

impl<T> Wheel<T> {
    /// Creates an empty wheel whose current time is `now_ms`.
    #[must_use]
    pub fn new(now_ms: u64) -> Self {
        Self {
            now: now_ms,
            levels: (0..LEVELS).map(|_| Level::new()).collect(),
            overflow: Vec::new(),
            overflow_min: u64::MAX,
            overflow_epoch: now_ms >> RANGE_BITS,
            ready: VecDeque::new(),
            len: 0,
        }
    }

    /// Entries held (scheduled, overflowing or due and not yet polled).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The wheel's current time.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// Schedules `item` at `deadline_ms`. O(1). A deadline at or before the
    /// wheel's current time is returned by the next poll.
    pub fn insert(&mut self, deadline_ms: u64, item: T) {
        self.len += 1;
        self.place(deadline_ms, item);
    }

    /// Puts an entry where it belongs relative to `self.now` (no count change).
    fn place(&mut self, deadline: u64, item: T) {
        if deadline <= self.now {
            self.ready.push_back((deadline, item));
            return;
        }
        // The highest differing bit picks the level; OR-ing the low bits in
        // makes everything within the current 64 ms land on level 0.
        let masked = (self.now ^ deadline) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros();
        if significant >= RANGE_BITS {
            self.overflow_min = self.overflow_min.min(deadline);
            self.overflow.push((deadline, item));
            return;
        }
        let level = (significant / SLOT_BITS) as usize;
        let slot = slot_index(deadline, level);
        let lvl = &mut self.levels[level];
        lvl.occupied |= 1 << slot;
        lvl.slots[slot].push((low_bits(deadline), item));
    }

    /// The earliest non-empty slot. Entries on a lower level always come before
    /// those on a higher one (they lie within the current slot of every higher
    /// level), so the first level with anything has the answer.
    fn next_expiration(&self) -> Option<Expiration> {
        self.levels.iter().enumerate().find_map(|(level, lvl)| {
            if lvl.occupied == 0 {
                return None;
            }
            let span = slot_span(level);
            let now_slot = slot_index(self.now, level);
            let rotated = lvl.occupied.rotate_right(now_slot as u32);
            let slot = (rotated.trailing_zeros() as usize + now_slot) % SLOTS;
            let level_span = span << SLOT_BITS;
            let level_start = self.now & !(level_span - 1);
            let mut deadline = level_start + slot as u64 * span;
            if deadline < self.now && level > 0 {
                // Only a slot before the current one: it belongs to the next
                // round of this level (cannot happen below the top level).
                deadline = deadline.saturating_add(level_span);
            }
            Some(Expiration {
                level,
                slot,
                start: deadline,
                deadline: deadline.max(self.now),
            })
        })
    }

    /// Empties one slot: level-0 entries are due, higher ones cascade down.
    fn process(&mut self, exp: Expiration) {
        self.now = self.now.max(exp.deadline);
        let lvl = &mut self.levels[exp.level];
        lvl.occupied &= !(1 << exp.slot);
        let mut entries = std::mem::take(&mut lvl.slots[exp.slot]);
        for (low, item) in entries.drain(..) {
            self.place(exp.rebuild(low), item);
        }
        // Reuse the slot's allocation (cascaded entries never return to it).
        let slot = &mut self.levels[exp.level].slots[exp.slot];
        if slot.is_empty() {
            *slot = entries;
        }
    }

    /// Re-places the overflow list when time has entered a new epoch.
    fn settle_overflow(&mut self) -> bool {
        let epoch = self.now >> RANGE_BITS;
        if epoch == self.overflow_epoch || self.overflow.is_empty() {
            self.overflow_epoch = epoch;
            return false;
        }
        self.overflow_epoch = epoch;
        self.overflow_min = u64::MAX;
        for (deadline, item) in std::mem::take(&mut self.overflow) {
            self.place(deadline, item);
        }
        true
    }

    /// Advances the wheel to `now_ms` and moves at most `max` due entries
    /// (deadline <= `now_ms`) into `out` as `(deadline_ms, item)`; returns how
    /// many. Due entries past the budget are kept and come first next time. A
    /// `now_ms` before the wheel's current time is treated as the current time.
    pub fn poll(&mut self, now_ms: u64, max: usize, out: &mut Vec<(u64, T)>) -> usize {
        let mut n = 0;
        loop {
            while n < max {
                let Some(entry) = self.ready.pop_front() else {
                    break;
                };
                out.push(entry);
                n += 1;
            }
            if n >= max {
                break;
            }
            match self.next_expiration() {
                Some(exp) if exp.deadline <= now_ms => self.process(exp),
                _ => {
                    // Nothing left at or before `now_ms` on the levels: jump.
                    self.now = self.now.max(now_ms);
                    if !self.settle_overflow() {
                        break;
                    }
                }
            }
        }
        self.len -= n;
        n
    }

    /// Removes the entries of the earliest non-empty slot (or the ready queue,
    /// if anything is waiting there) into `out`, without moving time: the
    /// entries closest to their deadlines, for eviction under memory pressure.
    /// Entries of one slot come out together, in no particular order. Returns
    /// how many were taken.
    pub fn take_earliest(&mut self, out: &mut Vec<(u64, T)>) -> usize {
        let taken = if self.ready.is_empty() {
            let Some(exp) = self.next_expiration() else {
                if self.overflow.is_empty() {
                    return 0;
                }
                let n = self.overflow.len();
                out.append(&mut self.overflow);
                self.overflow_min = u64::MAX;
                self.len -= n;
                return n;
            };
            let lvl = &mut self.levels[exp.level];
            lvl.occupied &= !(1 << exp.slot);
            let slot = &mut lvl.slots[exp.slot];
            let n = slot.len();
            out.extend(slot.drain(..).map(|(low, item)| (exp.rebuild(low), item)));
            n
        } else {
            let n = self.ready.len();
            out.extend(self.ready.drain(..));
            n
        };
        self.len -= taken;
        taken
    }

    /// A lower bound on the next deadline: the start of the earliest non-empty
    /// slot (exact on level 0, coarser above), the current time if entries are
    /// waiting to be polled, or `None` when the wheel is empty.
    #[must_use]
    pub fn next_expiration_hint(&self) -> Option<u64> {
        if !self.ready.is_empty() {
            return Some(self.now);
        }
        let wheel = self.next_expiration().map(|e| e.deadline);
        let overflow = (!self.overflow.is_empty()).then_some(self.overflow_min);
        match (wheel, overflow) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn poll_all(w: &mut Wheel<u32>, now: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        w.poll(now, usize::MAX, &mut out);
        out
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let mut w = Wheel::new(1000);
        w.insert(1005, 1);
        w.insert(1200, 2);
        assert!(poll_all(&mut w, 1004).is_empty());
        assert_eq!(poll_all(&mut w, 1005), vec![(1005, 1)]);
        assert!(poll_all(&mut w, 1199).is_empty());
        assert_eq!(poll_all(&mut w, 1200), vec![(1200, 2)]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_and_present_deadlines_fire_on_the_next_poll() {
        let mut w = Wheel::new(1000);
        w.insert(10, 1);
        w.insert(1000, 2);
        assert_eq!(w.len(), 2);
        assert_eq!(poll_all(&mut w, 1000), vec![(10, 1), (1000, 2)]);
    }

    #[test]
    fn far_deadlines_cascade_down_exactly() {
        let day = 86_400_000;
        let mut w = Wheel::new(7);
        w.insert(7 + day, 1);
        w.insert(7 + 365 * day, 2);
        w.insert(7 + (1u64 << 45), 3); // past the levels: overflow
        assert!(poll_all(&mut w, 6 + day).is_empty());
        assert_eq!(poll_all(&mut w, 7 + day), vec![(7 + day, 1)]);
        assert!(poll_all(&mut w, 6 + 365 * day).is_empty());
        assert_eq!(poll_all(&mut w, 7 + 365 * day), vec![(7 + 365 * day, 2)]);
        assert!(poll_all(&mut w, 6 + (1u64 << 45)).is_empty());
        assert_eq!(poll_all(&mut w, u64::MAX - 1), vec![(7 + (1u64 << 45), 3)]);
        assert!(w.is_empty());
    }

    #[test]
    fn huge_deadlines_do_not_overflow() {
        let mut w = Wheel::new(u64::MAX - 100);
        w.insert(u64::MAX - 1, 1);
        w.insert(u64::MAX, 2);
        assert_eq!(poll_all(&mut w, u64::MAX - 1), vec![(u64::MAX - 1, 1)]);
        assert_eq!(poll_all(&mut w, u64::MAX), vec![(u64::MAX, 2)]);
    }

    #[test]
    fn budget_leftovers_come_first_next_time() {
        let mut w = Wheel::new(0);
        for i in 0..10 {
            w.insert(50, i);
        }
        w.insert(60, 99);
        let mut out = Vec::new();
        assert_eq!(w.poll(100, 4, &mut out), 4);
        assert_eq!(w.len(), 7);
        out.clear();
        assert_eq!(w.poll(100, 6, &mut out), 6);
        assert!(out.iter().all(|(d, _)| *d == 50));
        out.clear();
        assert_eq!(w.poll(100, 6, &mut out), 1);
        assert_eq!(out, vec![(60, 99)]);
        assert!(w.is_empty());
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut w = Wheel::new(1000);
        w.insert(1500, 1);
        assert!(poll_all(&mut w, 900).is_empty());
        assert_eq!(w.now_ms(), 1000);
        assert_eq!(poll_all(&mut w, 1500), vec![(1500, 1)]);
    }

    #[test]
    fn sparse_entries_over_a_long_advance() {
        let mut w = Wheel::new(0);
        let deadlines: Vec<u64> = (1..=200).map(|i| i * 7_777_777).collect();
        for (i, d) in deadlines.iter().enumerate() {
            w.insert(*d, i as u32);
        }
        let out = poll_all(&mut w, 200 * 7_777_777);
        assert_eq!(out.len(), 200);
        assert!(
            out.windows(2).all(|p| p[0].0 <= p[1].0),
            "in deadline order"
        );
    }

    #[test]
    fn take_earliest_takes_the_soonest_slot_without_moving_time() {
        let mut w = Wheel::new(0);
        w.insert(5000, 1);
        w.insert(70, 2);
        w.insert(900_000, 3);
        let mut out = Vec::new();
        assert_eq!(w.take_earliest(&mut out), 1);
        assert_eq!(out, vec![(70, 2)]);
        assert_eq!(w.now_ms(), 0);
        out.clear();
        w.take_earliest(&mut out);
        assert_eq!(out, vec![(5000, 1)]);
        assert_eq!(w.len(), 1);
        // What is left still fires on time.
        assert_eq!(poll_all(&mut w, 900_000), vec![(900_000, 3)]);
    }

    #[test]
    fn hint_is_a_lower_bound() {
        let mut w = Wheel::new(0);
        assert_eq!(w.next_expiration_hint(), None);
        w.insert(5000, 1);
        let hint = w.next_expiration_hint().unwrap();
        assert!(hint <= 5000 && hint > 0);
        w.insert(3, 2);
        assert_eq!(w.next_expiration_hint(), Some(3));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Insert(u64),
        Poll { advance: u64, budget: Option<usize> },
    }

    fn step() -> impl Strategy<Value = Step> {
        let offset = prop_oneof![
            4 => 0u64..200,
            3 => 0u64..100_000,
            1 => 0u64..(1u64 << 40),
            1 => Just(0u64),
        ];
        let advance = prop_oneof![
            4 => 0u64..100,
            3 => 0u64..100_000,
            1 => 0u64..(1u64 << 41),
        ];
        prop_oneof![
            3 => offset.prop_map(Step::Insert),
            2 => (advance, proptest::option::weighted(0.3, 1usize..50))
                .prop_map(|(advance, budget)| Step::Poll { advance, budget }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Against a sorted model: nothing early, nothing lost or doubled, and
        /// with an unlimited budget everything due comes out at the first poll
        /// at or after its deadline (at most one polling interval late).
        #[test]
        fn matches_a_sorted_model(start in 0u64..(1u64 << 50), steps in proptest::collection::vec(step(), 1..200)) {
            let mut w = Wheel::new(start);
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let mut now = start;
            let mut next_id = 0u32;
            for s in steps {
                match s {
                    Step::Insert(offset) => {
                        w.insert(now + offset, next_id);
                        model.insert(next_id, now + offset);
                        next_id += 1;
                    }
                    Step::Poll { advance, budget } => {
                        now += advance;
                        let mut out = Vec::new();
                        let max = budget.unwrap_or(usize::MAX);
                        let n = w.poll(now, max, &mut out);
                        prop_assert_eq!(n, out.len());
                        prop_assert!(n <= max);
                        for (deadline, id) in &out {
                            prop_assert!(*deadline <= now, "fired early");
                            prop_assert_eq!(model.remove(id), Some(*deadline), "unknown or doubled entry");
                        }
                        if budget.is_none() {
                            prop_assert!(model.values().all(|d| *d > now), "a due entry was not returned");
                        }
                        prop_assert_eq!(w.len(), model.len());
                    }
                }
            }
            // Drain: everything left comes out exactly once.
            let mut out = Vec::new();
            w.poll(u64::MAX, usize::MAX, &mut out);
            for (deadline, id) in out {
                prop_assert_eq!(model.remove(&id), Some(deadline));
            }
            prop_assert!(model.is_empty());
            prop_assert!(w.is_empty());
        }

        /// Entries keep only the low bits of their deadlines: whatever the
        /// start and the offsets (on every level and in the overflow), what
        /// `take_earliest` and `poll` hand out carries the exact deadline,
        /// and the hint never passes the earliest deadline held.
        #[test]
        fn deadlines_come_back_exact(
            start in 0u64..(1u64 << 60),
            offsets in proptest::collection::vec(prop_oneof![
                0u64..64,
                0u64..(1u64 << 20),
                0u64..(1u64 << 34),
                (1u64 << 34)..(1u64 << 44),
            ], 1..100),
            advance in 0u64..(1u64 << 37),
            takes in 0usize..4,
        ) {
            let mut w = Wheel::new(start);
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            for (id, offset) in offsets.iter().enumerate() {
                let id = u32::try_from(id).unwrap();
                w.insert(start + offset, id);
                model.insert(id, start + offset);
            }
            let mut out = Vec::new();
            w.poll(start + advance, usize::MAX, &mut out);
            for round in 0..=takes {
                for (deadline, id) in out.drain(..) {
                    prop_assert_eq!(model.remove(&id), Some(deadline));
                }
                if let (Some(hint), Some(min)) = (w.next_expiration_hint(), model.values().min()) {
                    prop_assert!(hint <= *min, "hint {} past the earliest deadline {}", hint, min);
                }
                if round < takes {
                    w.take_earliest(&mut out);
                }
            }
            w.poll(u64::MAX, usize::MAX, &mut out);
            for (deadline, id) in out {
                prop_assert_eq!(model.remove(&id), Some(deadline));
            }
            prop_assert!(model.is_empty());
        }
    }
}
