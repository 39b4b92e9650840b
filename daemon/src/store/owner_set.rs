//! The sessions of one owner, ordered by (creation time, id).
//!
//! Most owners have a handful of sessions: those are kept in a sorted `Vec`
//! (one allocation, one or two cache lines to search, new sessions appended
//! at the end since they are the newest). An owner past [`SMALL_MAX`]
//! sessions moves to a `BTreeSet`, so that removing from a very large owner
//! stays logarithmic instead of shifting a long vector.

use std::collections::BTreeSet;
use std::ops::Bound;

use sessiond_protocol::SessionId;

/// One index entry: (created_at ms, id).
pub type Entry = (u64, SessionId);

/// Largest owner kept as a vector.
pub const SMALL_MAX: usize = 512;

/// The sessions of one owner.
#[derive(Debug, Clone)]
pub enum OwnerSet {
    /// Up to [`SMALL_MAX`] entries, sorted.
    Small(Vec<Entry>),
    /// More.
    Large(BTreeSet<Entry>),
}

impl Default for OwnerSet {
    fn default() -> Self {
        Self::Small(Vec::new())
    }
}

impl OwnerSet {
    /// Adds `e`; false if it was there.
    pub fn insert(&mut self, e: Entry) -> bool {
        match self {
            // The usual case: the newest session goes at the end (one cache
            // line to look at instead of a binary search over cold ones).
            Self::Small(v) if v.len() < SMALL_MAX && v.last().is_none_or(|last| *last < e) => {
                if v.len() == v.capacity() && v.len() < 4 {
                    v.reserve_exact(1);
                }
                v.push(e);
                true
            }
            Self::Small(v) => match v.binary_search(&e) {
                Ok(_) => false,
                Err(i) if v.len() < SMALL_MAX => {
                    // Grow one at a time while tiny: most owners stay tiny.
                    if v.len() == v.capacity() && v.len() < 4 {
                        v.reserve_exact(1);
                    }
                    v.insert(i, e);
                    true
                }
                Err(_) => {
                    let mut set: BTreeSet<Entry> = v.drain(..).collect();
                    set.insert(e);
                    *self = Self::Large(set);
                    true
                }
            },
            Self::Large(s) => s.insert(e),
        }
    }

    /// Adds `e` while a replay rebuilds the index: a small set takes it at
    /// its end, sorted or not, until [`OwnerSet::settle`] (a replay that
    /// reads the newest file first meets an owner's sessions newest first,
    /// and would otherwise shift the set for each).
    pub fn push_unsorted(&mut self, e: Entry) {
        match self {
            Self::Small(v) if v.len() < SMALL_MAX => v.push(e),
            Self::Small(v) => {
                let mut set: BTreeSet<Entry> = v.drain(..).collect();
                set.insert(e);
                *self = Self::Large(set);
            }
            Self::Large(s) => {
                s.insert(e);
            }
        }
    }

    /// Removes one copy of `e` from a set, sorted or not (see
    /// [`OwnerSet::push_unsorted`]); false if it was not there.
    pub fn remove_unsorted(&mut self, e: &Entry) -> bool {
        match self {
            Self::Small(v) => match v.iter().position(|x| x == e) {
                Some(i) => {
                    v.remove(i);
                    true
                }
                None => false,
            },
            Self::Large(s) => s.remove(e),
        }
    }

    /// Sorts what [`OwnerSet::push_unsorted`] added (and drops copies).
    pub fn settle(&mut self) {
        if let Self::Small(v) = self {
            v.sort_unstable();
            v.dedup();
        }
    }

    /// Removes `e`; false if it was not there.
    pub fn remove(&mut self, e: &Entry) -> bool {
        match self {
            Self::Small(v) => match v.binary_search(e) {
                Ok(i) => {
                    v.remove(i);
                    true
                }
                Err(_) => false,
            },
            Self::Large(s) => s.remove(e),
        }
    }

    /// Keeps the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        match self {
            Self::Small(v) => v.retain(|e| keep(e)),
            Self::Large(s) => s.retain(|e| keep(e)),
        }
    }

    /// Removes and returns the oldest entry.
    pub fn pop_first(&mut self) -> Option<Entry> {
        match self {
            Self::Small(v) if v.is_empty() => None,
            Self::Small(v) => Some(v.remove(0)),
            Self::Large(s) => s.pop_first(),
        }
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Small(v) => v.len(),
            Self::Large(s) => s.len(),
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries after `after` (all of them for `None`), in order.
    pub fn after(&self, after: Option<Entry>) -> impl Iterator<Item = Entry> + '_ {
        match self {
            Self::Small(v) => {
                let start = after.map_or(0, |a| v.partition_point(|e| *e <= a));
                Iter::Small(v[start..].iter())
            }
            Self::Large(s) => Iter::Large(match after {
                Some(a) => s.range((Bound::Excluded(a), Bound::Unbounded)),
                None => s.range(..),
            }),
        }
    }
}

enum Iter<'a> {
    Small(std::slice::Iter<'a, Entry>),
    Large(std::collections::btree_set::Range<'a, Entry>),
}

impl Iterator for Iter<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        match self {
            Self::Small(i) => i.next().copied(),
            Self::Large(i) => i.next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Insert(u64, u8),
        Remove(u64, u8),
        RetainOdd,
        PopFirst,
        After(Option<(u64, u8)>),
    }

    fn entry(t: u64, id: u8) -> Entry {
        (t, SessionId([id; 16]))
    }

    fn step() -> impl Strategy<Value = Step> {
        // Few distinct times and ids, so inserts collide and removes hit.
        prop_oneof![
            8 => (0..200u64, 0..8u8).prop_map(|(t, i)| Step::Insert(t, i)),
            3 => (0..60u64, 0..8u8).prop_map(|(t, i)| Step::Remove(t, i)),
            1 => Just(Step::RetainOdd),
            1 => Just(Step::PopFirst),
            2 => proptest::option::of((0..60u64, 0..8u8)).prop_map(Step::After),
        ]
    }

    proptest! {
        /// Behaves as a `BTreeSet`, across the move from small to large.
        #[test]
        fn matches_a_btreeset(steps in proptest::collection::vec(step(), 1..1500)) {
            let mut set = OwnerSet::default();
            let mut model = BTreeSet::new();
            for s in steps {
                match s {
                    Step::Insert(t, i) => prop_assert_eq!(set.insert(entry(t, i)), model.insert(entry(t, i))),
                    Step::Remove(t, i) => prop_assert_eq!(set.remove(&entry(t, i)), model.remove(&entry(t, i))),
                    Step::RetainOdd => {
                        set.retain(|e| e.0 % 2 == 1);
                        model.retain(|e| e.0 % 2 == 1);
                    }
                    Step::PopFirst => prop_assert_eq!(set.pop_first(), model.pop_first()),
                    Step::After(a) => {
                        let a = a.map(|(t, i)| entry(t, i));
                        let got: Vec<Entry> = set.after(a).collect();
                        let want: Vec<Entry> = match a {
                            Some(a) => model.range((Bound::Excluded(a), Bound::Unbounded)).copied().collect(),
                            None => model.iter().copied().collect(),
                        };
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.is_empty(), model.is_empty());
            }
        }
    }

    proptest! {
        /// Pushed in any order, with removals, then settled: the same set
        /// as one built in order.
        #[test]
        fn unsorted_then_settled_matches_a_btreeset(
            steps in proptest::collection::vec((any::<bool>(), 0..700u64, 0..4u8), 1..1500),
        ) {
            let mut set = OwnerSet::default();
            let mut model = BTreeSet::new();
            for (add, t, i) in steps {
                if add {
                    if model.insert(entry(t, i)) {
                        set.push_unsorted(entry(t, i));
                    }
                } else {
                    prop_assert_eq!(set.remove_unsorted(&entry(t, i)), model.remove(&entry(t, i)));
                }
            }
            set.settle();
            prop_assert_eq!(set.after(None).collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn grows_past_small_max_into_a_tree() {
        let mut set = OwnerSet::default();
        for t in 0..=SMALL_MAX as u64 {
            assert!(set.insert(entry(t, 1)));
        }
        assert!(matches!(set, OwnerSet::Large(_)));
        assert_eq!(set.len(), SMALL_MAX + 1);
        assert_eq!(set.after(Some(entry(5, 1))).next(), Some(entry(6, 1)));
    }
}
