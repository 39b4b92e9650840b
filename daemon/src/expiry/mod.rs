//! Expiry: the timer wheel and the background task that drives it.
//!
//! One task wakes every tick, asks the store to reclaim what is due, and does a
//! bounded amount of work per round: when a round uses its whole budget it yields
//! and goes again at once instead of sleeping, so a burst of expirations is
//! cleared quickly without starving connection tasks.

pub mod wheel;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Default interval between expiry rounds.
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);
/// Default most timer entries handled per round.
pub const DEFAULT_BATCH: usize = 10_000;

/// Runs expiry rounds until `shutdown` is cancelled.
pub async fn run(store: Arc<Store>, tick: Duration, batch: usize, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        loop {
            let handled = store.reclaim(batch);
            if handled < batch || shutdown.is_cancelled() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}
