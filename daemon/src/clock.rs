//! Time source of the store and the expiry task. Everything that decides whether
//! a session is alive asks a [`Clock`], so tests can move time by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in Unix milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            // A clock set before 1970 is a broken host; treating it as the epoch
            // keeps the store consistent rather than panicking.
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `start_ms`.
    #[must_use]
    pub fn new(start_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

thread_local! {
    /// While a replicated command is applied on this thread: its `now`.
    static APPLY_NOW: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with [`ReplicaClock`] reading `now_ms` on this thread (and the
/// store's admission checks off): applying a replicated command decides
/// everything by the time its leader fixed, so every member decides alike.
pub fn with_apply_now<T>(now_ms: u64, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<u64>);
    impl Drop for Reset {
        fn drop(&mut self) {
            APPLY_NOW.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(APPLY_NOW.with(|c| c.replace(Some(now_ms))));
    f()
}

/// Whether a replicated command is being applied on this thread.
#[must_use]
pub fn applying() -> bool {
    APPLY_NOW.with(std::cell::Cell::get).is_some()
}

/// The clock of a replicated group's member. While a command is applied it
/// reads the command's time (see [`with_apply_now`]); otherwise the later of
/// the wall clock and the newest applied command's time, so a member whose
/// clock lags the leader's still judges expiry at least as late as the log
/// has come.
#[derive(Debug, Default)]
pub struct ReplicaClock {
    floor: AtomicU64,
}

impl ReplicaClock {
    /// A clock with no command applied yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that a command of time `now_ms` was applied.
    pub fn observe(&self, now_ms: u64) {
        self.floor.fetch_max(now_ms, Ordering::AcqRel);
    }
}

impl Clock for ReplicaClock {
    fn now_ms(&self) -> u64 {
        if let Some(now) = APPLY_NOW.with(std::cell::Cell::get) {
            return now;
        }
        SystemClock.now_ms().max(self.floor.load(Ordering::Acquire))
    }
}
