//! The store's side of durability: the [`Journal`] it reports every change
//! to, the [`Change`]s of a multi-record operation's batch, and the helpers
//! that log each change under the changed record's lock with an LSN drawn
//! there (see `log::format`, "The ordering rule").

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sessiond_protocol::{DeleteReason, EventKind, SessionId, Ttl};

use super::record::{Blob, Key, Record};
use super::{invalid, Result, Store, StoreError};

/// Where the store sends the post-image of every change, in the order the
/// changes happen to each record: it is called under the changed record's
/// shard lock, so it must not block for long (the log appends to a buffer).
///
/// Every record carries an LSN the store drew under that same lock (see
/// `log::format`, "The ordering rule"), so the order the records reach the
/// journal in does not decide what a replay keeps.
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// The record at (`namespace`, `id`) now looks like `record`.
    fn put(&self, lsn: u64, namespace: &str, id: SessionId, record: &Record);
    /// The record at (`namespace`, `id`) is gone; its id is refused until
    /// `tombstone_until` (0: no tombstone).
    fn delete(&self, lsn: u64, namespace: &str, id: SessionId, tombstone_until: u64);
    /// The records of one operation that changes several (rotate,
    /// revoke-all, an owner limit's eviction), as one atomic entry.
    fn batch(&self, changes: Vec<Change>);
    /// Whether writes may proceed; the error says why not.
    ///
    /// # Errors
    /// A message for the client when the log cannot accept writes.
    fn check(&self) -> std::result::Result<(), String>;
}

/// Where a change's log record goes: to the journal at once, or into the
/// batch of the operation it is part of. A batch is an explicit value that
/// the operation appends itself (see [`Store::append_batch`]) before any key
/// it touches becomes reachable to another connection.
pub(super) enum Sink<'a> {
    /// Appended now.
    Direct,
    /// Added to the operation's batch.
    Gather(&'a mut Vec<Change>),
    /// Added to the batch, which is then appended (still under the lock of
    /// the record just changed).
    Close(&'a mut Vec<Change>),
}

/// Why a record is removed, for its event.
#[derive(Debug, Clone, Copy)]
pub(super) struct Why {
    /// The delete's reason (if the record is still live).
    pub reason: DeleteReason,
    /// The operation's time.
    pub now: u64,
}

impl Why {
    pub(super) fn new(reason: DeleteReason, now: u64) -> Self {
        Self { reason, now }
    }
}

/// One change of a multi-record operation's batch, as the journal receives
/// it (the log writes it in its byte layout, `log::format`).
#[derive(Debug, Clone)]
pub enum Change {
    /// The record at (`namespace`, `id`) now looks like `image`.
    Put {
        /// Orders the change among those of its key.
        lsn: u64,
        /// Namespace name.
        namespace: Arc<str>,
        /// Session id.
        id: SessionId,
        /// The record's fields.
        image: Image,
    },
    /// The record is gone; its id is refused until `tombstone_until` (0: no
    /// tombstone).
    Delete {
        /// Orders the change among those of its key.
        lsn: u64,
        /// Namespace name.
        namespace: Arc<str>,
        /// Session id.
        id: SessionId,
        /// End of the tombstone (ms).
        tombstone_until: u64,
    },
    /// Until `until`, requests for the rotated-away `id` act on `to`.
    Alias {
        /// Orders the change among those of `id`.
        lsn: u64,
        /// Namespace name.
        namespace: Arc<str>,
        /// The old id.
        id: SessionId,
        /// The id it was rotated to.
        to: SessionId,
        /// End of the grace period (ms).
        until: u64,
    },
}

impl Change {
    fn put(lsn: u64, namespace: &Arc<str>, id: SessionId, record: &Record) -> Self {
        Self::Put {
            lsn,
            namespace: Arc::clone(namespace),
            id,
            image: Image::of(record),
        }
    }
}

/// A record's fields at one moment; the attributes are shared with the
/// record, not copied.
#[derive(Debug, Clone)]
pub struct Image {
    /// Owner.
    pub owner: Option<Arc<str>>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last activity (ms).
    pub last_active: u64,
    /// Its ttl.
    pub ttl: Ttl,
    /// Version.
    pub version: u64,
    /// Encoded attributes.
    pub attrs: Blob,
}

impl Image {
    /// The image of `record` now.
    #[must_use]
    pub fn of(record: &Record) -> Self {
        Self {
            owner: record.owner().cloned(),
            created_at: record.created_at(),
            last_active: record.last_active(),
            ttl: record.ttl(),
            version: record.version(),
            attrs: record.blob(),
        }
    }
}

/// Counts a multi-record operation in flight while it lives.
pub(super) struct InFlight<'a>(&'a Store);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.batches_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A test's hook into the steps of multi-record operations.
#[cfg(test)]
pub(crate) type StepHook = Arc<dyn Fn(&'static str) + Send + Sync>;

impl Store {
    /// Sends every change from now on to `journal` (set once, after recovery
    /// has replayed the log into the store).
    ///
    /// # Errors
    /// `Invalid` if a journal is already attached.
    pub fn attach_journal(&self, journal: Arc<dyn Journal>) -> Result<()> {
        self.journal
            .set(journal)
            .map_err(|_| invalid("a journal is already attached".into()))
    }

    /// Appends an operation's batch as one atomic log entry. Call it before
    /// any key the batch touches becomes reachable to another connection, so
    /// that what is done through that key is logged after it.
    pub(super) fn append_batch(&self, batch: Vec<Change>) {
        if let Some(j) = self.journal.get() {
            if !batch.is_empty() {
                j.batch(batch);
            }
        }
    }

    /// Draws the next LSN; call under the lock of the record it orders.
    pub(super) fn next_lsn(&self) -> u64 {
        self.lsn.fetch_add(1, Ordering::Relaxed)
    }

    /// The LSN the next change will carry.
    #[must_use]
    pub fn lsn(&self) -> u64 {
        self.lsn.load(Ordering::Relaxed)
    }

    /// Refuses writes while the journal cannot take them.
    pub(super) fn writable(&self) -> Result<()> {
        match self.journal.get() {
            Some(j) => j.check().map_err(StoreError::Unavailable),
            None => Ok(()),
        }
    }

    /// Logs a record's post-image; call with its shard lock held.
    pub(super) fn log_put(&self, key: &Key, rec: &mut Record, sink: Sink<'_>) {
        let Some(j) = self.journal.get() else { return };
        let Some(ns) = self.namespaces.get(key.ns) else {
            return;
        };
        let at = rec.expires_at();
        rec.set_logged_expires(at);
        let lsn = self.next_lsn();
        match sink {
            Sink::Direct => j.put(lsn, &ns.name, key.id, rec),
            Sink::Gather(batch) => batch.push(Change::put(lsn, &ns.name, key.id, rec)),
            Sink::Close(batch) => {
                batch.push(Change::put(lsn, &ns.name, key.id, rec));
                j.batch(std::mem::take(batch));
            }
        }
    }

    /// Logs a removal; call with the shard lock held (inside `remove_if`).
    pub(super) fn log_delete(&self, key: &Key, tombstone_until: u64, sink: Sink<'_>) {
        let Some(j) = self.journal.get() else { return };
        let Some(ns) = self.namespaces.get(key.ns) else {
            return;
        };
        let lsn = self.next_lsn();
        let record = || Change::Delete {
            lsn,
            namespace: Arc::clone(&ns.name),
            id: key.id,
            tombstone_until,
        };
        match sink {
            Sink::Direct => j.delete(lsn, &ns.name, key.id, tombstone_until),
            Sink::Gather(batch) => batch.push(record()),
            Sink::Close(batch) => {
                batch.push(record());
                j.batch(std::mem::take(batch));
            }
        }
    }

    /// Adds a rotation's alias (`key` resolves to `to` until `until`) to its
    /// batch; call with `key`'s record lock held.
    pub(super) fn log_alias(&self, key: &Key, to: SessionId, until: u64, batch: &mut Vec<Change>) {
        if self.journal.get().is_none() {
            return;
        }
        let Some(ns) = self.namespaces.get(key.ns) else {
            return;
        };
        batch.push(Change::Alias {
            lsn: self.next_lsn(),
            namespace: Arc::clone(&ns.name),
            id: key.id,
            to,
            until,
        });
    }

    /// A named point in a multi-step operation where a test may pause it
    /// (see `set_step_hook`); nothing outside tests.
    #[allow(clippy::unused_self)]
    pub(super) fn step(&self, _name: &'static str) {
        #[cfg(test)]
        {
            let hook = self.step_hook.lock().clone();
            if let Some(hook) = hook {
                hook(_name);
            }
        }
    }

    /// Calls `hook` with the name of each step of a multi-record operation
    /// as it passes it (tests pause operations there to race them).
    #[cfg(test)]
    pub(crate) fn set_step_hook(&self, hook: Option<StepHook>) {
        *self.step_hook.lock() = hook;
    }

    /// Removes the record at `key` if `pred` holds, logging the removal under
    /// the same lock so that the log orders it exactly as memory did.
    /// `why`: the event to report (a removal that undoes a half-done
    /// operation reports none): `Deleted` with its reason, or `Expired` for
    /// a record already past its deadline.
    pub(super) fn remove_logged(
        &self,
        key: &Key,
        tombstone_until: u64,
        pred: impl FnOnce(&Record) -> bool,
        sink: Sink<'_>,
        why: Option<Why>,
    ) -> Option<Record> {
        let mut pred = Some(pred);
        let mut sink = Some(sink);
        self.records
            .remove_if(key, |k, r| {
                let remove = pred.take().is_some_and(|p| p(r));
                if remove {
                    if tombstone_until > 0 {
                        self.add_tombstone(*k, tombstone_until);
                    }
                    if let Some(sink) = sink.take() {
                        self.log_delete(k, tombstone_until, sink);
                    }
                    if let Some(why) = why {
                        if r.is_live(why.now) {
                            let kind = EventKind::Deleted { reason: why.reason };
                            self.event(k, r.owner_str(), kind, why.now);
                        } else {
                            self.event(k, r.owner_str(), EventKind::Expired, r.expires_at());
                        }
                    }
                }
                remove
            })
            .map(|(_, r)| r)
    }

    /// Reports a lifecycle event of the record at `key` to the feed, if
    /// there is one; call under the record's lock.
    pub(super) fn event(&self, key: &Key, owner: Option<&str>, kind: EventKind, at_ms: u64) {
        let Some(feed) = self.events.get() else {
            return;
        };
        let Some(ns) = self.namespaces.get(key.ns) else {
            return;
        };
        feed.emit(&ns.name, key.id, owner, kind, at_ms);
    }

    /// The events feed, if one is attached.
    #[must_use]
    pub fn events(&self) -> Option<&Arc<crate::events::Feed>> {
        self.events.get()
    }

    /// Sends lifecycle events to `feed` from now on.
    ///
    /// # Errors
    /// `Invalid` if a feed is already attached.
    pub fn attach_events(&self, feed: Arc<crate::events::Feed>) -> Result<()> {
        self.events
            .set(feed)
            .map_err(|_| invalid("an events feed is already attached".into()))
    }

    /// Logs a touch once it has moved the deadline far enough (coalescing).
    pub(super) fn log_touch(&self, key: &Key, rec: &mut Record) {
        let Some(idle) = rec.idle_ttl() else { return };
        let moved = rec.expires_at().saturating_sub(rec.logged_expires());
        // A touch is not a write the client waits for: while the log refuses
        // writes (a full disk, its reserved space used up) it is not logged
        // either, so it can neither eat the room kept for acknowledged writes
        // nor pile up in memory. The next one logged carries it.
        if moved as f64 > idle.get() as f64 * self.config.touch_log_fraction
            && self.writable().is_ok()
        {
            self.log_put(key, rec, Sink::Direct);
            // Touch events are coalesced as the log's touch records are.
            let expires_at = rec.expires_at();
            rec.set_logged_expires(expires_at);
            let kind = EventKind::Touched {
                expires_at_ms: super::record::finite(expires_at),
            };
            self.event(key, rec.owner_str(), kind, rec.last_active());
        }
    }

    /// Marks a multi-record operation in flight until the guard drops: from
    /// before its first change in memory to after its batch (or the undo of
    /// its changes) is appended.
    pub(super) fn batch_in_flight(&self) -> InFlight<'_> {
        self.batches_in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    /// Waits (up to `timeout`) for a moment with no multi-record operation in
    /// flight; returns whether it came. A snapshot calls it after walking the
    /// store: the walk may have seen half of such an operation (a rotation's
    /// new record before the old one went), and once none is in flight every
    /// one it saw has appended its batch, so the log from the snapshot's
    /// first segment up to the log's end now completes (or undoes) it.
    pub fn settle_batches(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.batches_in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}
