//! Who may hold one of the daemon's connections.
//!
//! `--max-connections` caps them all. Peers that have not completed their
//! `Hello` (strangers, as far as the daemon knows) hold at most
//! `max_connections - reserved_connections` of them, and each must finish
//! its `Hello` within `--hello-timeout`; when they hold all they may, a
//! newcomer closes the oldest of them (told why) rather than being refused,
//! and when the whole cap is taken a newcomer closes the oldest one still
//! waiting for its `Hello`, if any. A peer that trickles bytes therefore
//! holds a slot for seconds, not forever, and cannot keep new clients out:
//! a real client completes its `Hello` in a round trip. Connections past
//! `Hello` are never closed to make room.
//!
//! Connection buffers are bounded too: beyond each connection's first read
//! and write chunks, all connections together hold at most
//! `--max-buffer-memory` ([`Admission::reserve_extra`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a newcomer waits for the slot of the connection it closed.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The connection slots and the connection buffer budget.
#[derive(Debug)]
pub(crate) struct Admission {
    permits: Arc<Semaphore>,
    /// Connections still waiting for their `Hello`, by id (oldest first).
    pending: Mutex<BTreeMap<u64, CancellationToken>>,
    pending_limit: usize,
    /// Bytes connection buffers hold beyond their first chunks, all together.
    extra: AtomicI64,
    max_extra: u64,
    /// Connections closed to make room for newer ones.
    pub(crate) evicted_total: AtomicU64,
    /// Frames refused because the buffer budget was spent.
    pub(crate) buffer_refusals_total: AtomicU64,
}

/// A connection's slot; released when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    _permit: OwnedSemaphorePermit,
    id: u64,
    admission: Arc<Admission>,
    /// Cancelled when the connection is closed to make room.
    pub(crate) evict: CancellationToken,
    greeted: bool,
}

impl Admission {
    pub(crate) fn new(max_connections: usize, reserved: usize, max_extra: u64) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(max_connections)),
            pending: Mutex::new(BTreeMap::new()),
            pending_limit: max_connections.saturating_sub(reserved).max(1),
            extra: AtomicI64::new(0),
            max_extra,
            evicted_total: AtomicU64::new(0),
            buffer_refusals_total: AtomicU64::new(0),
        })
    }

    /// A slot for connection `id`, or `None`: the cap is taken by
    /// connections past their `Hello`.
    pub(crate) async fn admit(self: &Arc<Self>, id: u64) -> Option<Ticket> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !self.evict_oldest() {
                    return None;
                }
                match tokio::time::timeout(EVICTION_WAIT, Arc::clone(&self.permits).acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => return None,
                }
            }
        };
        let evict = CancellationToken::new();
        {
            let mut pending = self.pending.lock();
            if pending.len() >= self.pending_limit {
                if let Some((_, oldest)) = pending.pop_first() {
                    oldest.cancel();
                    self.evicted_total.fetch_add(1, Ordering::Relaxed);
                }
            }
            pending.insert(id, evict.clone());
        }
        Some(Ticket {
            _permit: permit,
            id,
            admission: Arc::clone(self),
            evict,
            greeted: false,
        })
    }

    /// Closes the oldest connection still waiting for its `Hello`; false if
    /// there is none.
    fn evict_oldest(&self) -> bool {
        let oldest = self.pending.lock().pop_first();
        match oldest {
            Some((_, token)) => {
                token.cancel();
                self.evicted_total.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Connections waiting for their `Hello`.
    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    /// Bytes connection buffers hold beyond their first chunks.
    pub(crate) fn extra_bytes(&self) -> u64 {
        u64::try_from(self.extra.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Whether a connection holding `held` extra bytes may hold `wanted`
    /// instead (the budget counts every connection's extra bytes).
    pub(crate) fn reserve_extra(&self, held: u64, wanted: u64) -> bool {
        if wanted <= held {
            return true;
        }
        let others = self.extra_bytes().saturating_sub(held);
        let ok = others + wanted <= self.max_extra;
        if !ok {
            self.buffer_refusals_total.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Counts `delta` extra bytes more (or fewer).
    pub(crate) fn add_extra(&self, delta: i64) {
        self.extra.fetch_add(delta, Ordering::Relaxed);
    }
}

impl Ticket {
    /// The connection completed its `Hello`: it is no longer a stranger's
    /// and is never closed to make room.
    pub(crate) fn greeted(&mut self) {
        if !self.greeted {
            self.greeted = true;
            self.admission.pending.lock().remove(&self.id);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.greeted {
            self.admission.pending.lock().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn past_their_share_strangers_make_room_oldest_first() {
        // 10 slots, 7 kept for connections past Hello: 3 for strangers.
        let a = Admission::new(10, 7, 1000);
        let t1 = a.admit(1).await.unwrap();
        let t2 = a.admit(2).await.unwrap();
        let t3 = a.admit(3).await.unwrap();
        let _t4 = a.admit(4).await.unwrap();
        assert!(t1.evict.is_cancelled(), "the oldest stranger makes room");
        assert!(!t2.evict.is_cancelled() && !t3.evict.is_cancelled());
        assert_eq!(a.pending(), 3);
        assert_eq!(a.evicted_total.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn at_the_cap_a_newcomer_takes_the_oldest_strangers_slot() {
        let a = Admission::new(3, 1, 1000);
        let mut greeted = a.admit(1).await.unwrap();
        greeted.greeted();
        let t2 = a.admit(2).await.unwrap();
        let _t3 = a.admit(3).await.unwrap();
        let evict2 = t2.evict.clone();
        let newcomer = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.admit(4).await.is_some() }
        });
        // The newcomer closed the oldest stranger (2); its connection ends
        // and frees the slot.
        evict2.cancelled().await;
        drop(t2);
        assert!(newcomer.await.unwrap());
        assert!(
            !greeted.evict.is_cancelled(),
            "a greeted connection is never closed"
        );
    }

    #[tokio::test]
    async fn a_full_cap_of_greeted_connections_refuses_newcomers() {
        let a = Admission::new(2, 0, 1000);
        let mut t1 = a.admit(1).await.unwrap();
        let mut t2 = a.admit(2).await.unwrap();
        t1.greeted();
        t2.greeted();
        assert!(a.admit(3).await.is_none());
        drop(t1);
        assert!(a.admit(4).await.is_some());
    }

    #[test]
    fn the_buffer_budget_counts_every_connection() {
        let a = Admission::new(10, 1, 1000);
        assert!(a.reserve_extra(0, 600));
        a.add_extra(600);
        assert!(!a.reserve_extra(0, 600), "600 + 600 is over 1000");
        assert!(
            a.reserve_extra(600, 1000),
            "the same connection growing to 1000"
        );
        assert!(a.reserve_extra(0, 400));
        assert_eq!(a.buffer_refusals_total.load(Ordering::Relaxed), 1);
    }
}
