//! Writes under the locks (see [`super::store`]): overlap admission against
//! the timeline's and the user's sessions, taking and giving back the locks,
//! and undoing a write made under a lease that lapsed.

use axum::http::StatusCode;
use axum::response::Response;
use sessiond_client::SessionId;

use super::store::{self, Sched, StoreError};
use super::{schedule, ApiResult, ScheduledError};
use crate::state::AppState;

/// The first of `others` (`new` itself excluded) that `new` overlaps.
fn overlapped<'a>(others: &'a [Sched], new: &Sched) -> Option<&'a Sched> {
    let slot = new.slot()?;
    others
        .iter()
        .filter(|o| o.id != new.id)
        .find(|o| o.slot().is_some_and(|s| schedule::overlaps(&s, &slot)))
}

/// Whether `new` may be written under locks that are `fresh`, among the
/// timeline's `existing` sessions and, when given, its user's sessions `mine`.
pub(super) fn admit(
    existing: &[Sched],
    mine: Option<&[Sched]>,
    new: &Sched,
    fresh: bool,
) -> Result<(), ScheduledError> {
    if let Some(other) = overlapped(existing, new) {
        return Err(conflict_with(other, "timeline"));
    }
    if let Some(other) = mine.and_then(|m| overlapped(m, new)) {
        return Err(conflict_with(other, "user"));
    }
    if !fresh {
        return Err(StoreError::Busy.into());
    }
    Ok(())
}

fn conflict_with(other: &Sched, of: &str) -> ScheduledError {
    ScheduledError::fail(
        StatusCode::CONFLICT,
        format!("The session overlaps session {} of the same {of}", other.id),
    )
}

/// What a write under the locks answers, and how to undo it should a lease
/// turn out to have lapsed.
type Written = Result<(Response, Option<Undo>), ScheduledError>;

/// Runs `write` under the timeline's lock, and first under `user`'s lock when
/// given (in that order, always). `write` gets the timeline's live sessions,
/// the user's live sessions (when `user` is given) and whether both leases
/// are still fresh.
pub(super) async fn under_lock<F, Fut>(
    state: &AppState,
    user: Option<&str>,
    timeline: SessionId,
    write: F,
) -> ApiResult
where
    F: FnOnce(Vec<Sched>, Option<Vec<Sched>>, bool) -> Fut,
    Fut: std::future::Future<Output = Written>,
{
    let client = &state.client;
    let user_lock = match user {
        None => None,
        Some(u) => Some(store::lock_user(client, u).await?),
    };
    let result = match store::lock_timeline(client, timeline).await {
        Ok(lock) => {
            let read = async {
                let sessions = store::timeline_sessions(client, timeline).await?;
                let mine = match user {
                    Some(u) => Some(store::user_sessions(client, u).await?),
                    None => None,
                };
                Ok::<_, sessiond_client::Error>((sessions, mine))
            };
            let result = match read.await {
                Ok((sessions, mine)) => {
                    let fresh = lock.fresh() && user_lock.as_ref().is_none_or(store::Lock::fresh);
                    write(sessions, mine, fresh).await
                }
                Err(e) => Err(e.into()),
            };
            release(state, lock, result).await
        }
        // The timeline vanished (timelines are never deleted: only a race
        // with a store failure gets here).
        Err(StoreError::NotFound) => Err(ScheduledError::not_found()),
        Err(e) => Err(e.into()),
    };
    let result = match user_lock {
        Some(lock) => release(state, lock, result).await,
        None => result,
    };
    result.map(|(r, _)| r)
}

/// Gives `lock` back once `result` is known.
pub(super) async fn release(state: &AppState, lock: store::Lock, result: Written) -> Written {
    match store::unlock(&state.client, lock).await {
        Ok(()) => result,
        Err(StoreError::Busy) => {
            // Our lease lapsed and another writer took the lock: what we
            // wrote was not checked against theirs. Take it back.
            if let Ok((_, Some(undo))) = &result {
                undo.run(state).await;
            }
            Err(StoreError::Busy.into())
        }
        Err(e) => {
            // The daemon failed after the write: the lease lapses by itself,
            // and the write was made while we held it.
            tracing::warn!(error = %e, "cannot release a scheduled-sessions lock");
            result
        }
    }
}

/// How to take back a write made under a lapsed lease.
pub(super) enum Undo {
    /// Delete a session just created.
    Insert(SessionId),
    /// Put a session back as it was.
    Replace(Box<Sched>, u64),
}

impl Undo {
    async fn run(&self, state: &AppState) {
        let result = match self {
            Self::Insert(id) => store::undo_insert(&state.client, *id)
                .await
                .map_err(StoreError::from),
            Self::Replace(old, now_at) => {
                let back = Sched {
                    version: *now_at,
                    ..(**old).clone()
                };
                store::replace_session(&state.client, &back)
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot undo a write made under a lapsed timeline lock");
        }
    }
}
