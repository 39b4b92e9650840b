//! How far behind the group's committed state a member's copy may be: the
//! bound a follower read (`GetStale`) answers with.
//!
//! The leader knows when a majority last acknowledged it (openraft's
//! `millis_since_quorum_ack`): every write acknowledged before that moment
//! is in its state, and no other leader can have acknowledged a write before
//! then, so the leader's state is at most that old ([`Lease`]). It sends
//! the figure with every `AppendEntries` it sends. A follower that accepted
//! one ([`Freshness`]) and has applied up to the commit index it carried is
//! at most the leader's figure plus the time since it arrived behind: a
//! leader cut off from its majority sends a growing figure, so a follower
//! on its side of a partition sees its bound grow too, and refuses reads
//! that ask for less. The one-way network delay of that message is not
//! counted (sub-millisecond between members of one network).

use std::time::Instant;

use parking_lot::Mutex;

/// The leader's side: when a majority last acknowledged this member as
/// leader, as of the last metrics openraft published.
#[derive(Debug, Default)]
pub struct Lease {
    /// (ms since the quorum acknowledgement when seen, when it was seen).
    seen: Mutex<Option<(u64, Instant)>>,
}

impl Lease {
    /// Records openraft's figure (`None`: not a leader, or no majority has
    /// acknowledged it yet).
    pub fn observe(&self, millis_since_quorum_ack: Option<u64>) {
        *self.seen.lock() = millis_since_quorum_ack.map(|ms| (ms, Instant::now()));
    }

    /// The ms since a majority last acknowledged this member, now; `None`
    /// when it is not a leader with such an acknowledgement.
    pub fn ms(&self) -> Option<u64> {
        let seen = *self.seen.lock();
        seen.map(|(ms, at)| ms.saturating_add(elapsed_ms(at)))
    }
}

/// The follower's side: the last `AppendEntries` it accepted.
#[derive(Debug, Default)]
pub struct Freshness {
    last: Mutex<Option<Heard>>,
}

/// One accepted `AppendEntries`.
#[derive(Debug, Clone, Copy)]
pub struct Heard {
    /// When it arrived.
    pub at: Instant,
    /// The leader's commit index it carried.
    pub leader_commit: Option<u64>,
    /// The leader's [`Lease::ms`] when it sent it.
    pub lease_ms: u64,
}

impl Heard {
    /// The bound this message gives once its commit index is applied.
    pub fn staleness_ms(&self) -> u64 {
        self.lease_ms.saturating_add(elapsed_ms(self.at))
    }
}

impl Freshness {
    /// Records an accepted `AppendEntries` (a leader that sent no lease is
    /// not counted: it had no majority's acknowledgement to vouch for).
    pub fn heard(&self, leader_commit: Option<u64>, lease_ms: Option<u64>) {
        if let Some(lease_ms) = lease_ms {
            *self.last.lock() = Some(Heard {
                at: Instant::now(),
                leader_commit,
                lease_ms,
            });
        }
    }

    /// The last accepted message, if any.
    pub fn last(&self) -> Option<Heard> {
        *self.last.lock()
    }

    /// Forgets what was heard (this member became leader).
    pub fn forget(&self) {
        *self.last.lock() = None;
    }
}

fn elapsed_ms(at: Instant) -> u64 {
    u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_lease_grows_with_time_and_ends_with_leadership() {
        let lease = Lease::default();
        assert_eq!(lease.ms(), None);
        lease.observe(Some(40));
        let first = lease.ms().unwrap();
        assert!(first >= 40);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(lease.ms().unwrap() >= first + 20);
        lease.observe(None);
        assert_eq!(lease.ms(), None);
    }

    #[test]
    fn a_follower_counts_the_leaders_lease_and_the_time_since() {
        let f = Freshness::default();
        f.heard(Some(3), None);
        assert!(
            f.last().is_none(),
            "a leader without a lease vouches for nothing"
        );
        f.heard(Some(7), Some(250));
        let h = f.last().unwrap();
        assert_eq!(h.leader_commit, Some(7));
        std::thread::sleep(std::time::Duration::from_millis(15));
        assert!(h.staleness_ms() >= 265);
        f.forget();
        assert!(f.last().is_none());
    }
}
