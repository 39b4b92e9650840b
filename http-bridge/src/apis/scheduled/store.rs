//! Where timelines and scheduled sessions live in sessiond, and the
//! per-timeline lock that keeps overlap checks honest.
//!
//! - [`TIMELINES_NS`]: one record per timeline (id = the timeline id), owned by
//!   its user, so ListByOwner lists a user's timelines. The record also
//!   carries the timeline's write lock (`lock_token`, `lock_until`).
//! - [`TIMELINE_INDEX_NS`]: one record per timeline (same id), owned by
//!   [`ALL`], so an administrator can list every timeline.
//! - [`SESSIONS_NS`]: one record per scheduled session (id = the session id),
//!   owned by its timeline id, so ListByOwner lists a timeline's sessions.
//!
//! None of these expire, except soft-deleted sessions, which are kept for
//! [`REMOVED_RETENTION`] after their removal and then reclaimed by the daemon.
//!
//! Every write to a timeline's sessions (create, update, soft delete) runs
//! under the timeline's lock: a lease taken by a versioned update of the
//! timeline record (`expected_version`, so two takers cannot both win) and
//! given back by another versioned update. Between the two, the holder reads
//! the timeline's sessions, checks for overlaps and writes; a competitor waits.
//! A holder that dies leaves a lease that lapses after [`LOCK_LEASE`]. A holder
//! that outlived its lease (someone else took the lock meanwhile) finds its
//! release refused and undoes its write.

use std::time::{Duration, Instant};

use chrono::Weekday;
use sessiond_client::{
    Client, CreateOptions, Error as ClientError, ErrorCode, Session, SessionId, UpdateOptions,
    Value,
};

use super::schedule::{Cycle, Slot, WEEKDAYS};

/// Namespace of timelines (owned by their user).
pub const TIMELINES_NS: &str = "sched-timelines";
/// Namespace of the every-timeline index (owned by [`ALL`]).
pub const TIMELINE_INDEX_NS: &str = "sched-timeline-index";
/// Namespace of scheduled sessions (owned by their timeline id).
pub const SESSIONS_NS: &str = "sched-sessions";
/// Owner of every record of [`TIMELINE_INDEX_NS`].
pub const ALL: &str = "all";
/// How long a timeline lock is held at most before others may take it.
pub const LOCK_LEASE: Duration = Duration::from_secs(10);
/// How long a request waits for a busy timeline before giving up (503).
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How long a soft-deleted session is kept before the daemon reclaims it.
pub const REMOVED_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The daemon failed or is unreachable.
    #[error("session store: {0}")]
    Client(#[from] ClientError),
    /// The timeline stayed locked by others for [`LOCK_WAIT`], or our lease
    /// lapsed before the write was confirmed.
    #[error("the timeline is busy")]
    Busy,
    /// The record vanished.
    #[error("not found")]
    NotFound,
}

/// Whether a session is one-time or recurring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Happens once.
    OneTime,
    /// Repeats (see [`Cycle`]).
    Recurring,
}

impl Kind {
    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneTime => "ONE_TIME",
            Self::Recurring => "RECURRING",
        }
    }

    /// Parses a wire name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ONE_TIME" => Some(Self::OneTime),
            "RECURRING" => Some(Self::Recurring),
            _ => None,
        }
    }
}

/// A timeline (a "routine" in the document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// UUID.
    pub id: SessionId,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub user_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A scheduled session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sched {
    /// UUID.
    pub id: SessionId,
    /// One-time or recurring.
    pub kind: Kind,
    /// Its timeline.
    pub timeline_id: SessionId,
    /// The timeline's owner (copied: timelines never change hands).
    pub user_id: String,
    /// Its name.
    pub name: String,
    /// Start of the (first) occurrence, Unix ms.
    pub start: i64,
    /// End of the (first) occurrence, Unix ms.
    pub end: i64,
    /// Recurrence (RECURRING only).
    pub cycle: Option<Cycle>,
    /// Weekday (WEEKLY only).
    pub weekday: Option<Weekday>,
    /// Free text.
    pub description: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms, once soft-deleted.
    pub removed_at: Option<i64>,
    /// The record's version (for conditional writes).
    pub version: u64,
}

impl Sched {
    /// When it happens.
    #[must_use]
    pub fn slot(&self) -> Slot {
        Slot {
            start: self.start,
            end: self.end,
            cycle: self.cycle,
        }
    }
}

fn text(s: &Session, name: &str) -> Option<String> {
    match s.attr(name) {
        Some(Value::Str(v)) => Some(v.clone()),
        _ => None,
    }
}

fn int(s: &Session, name: &str) -> Option<i64> {
    match s.attr(name) {
        Some(Value::Int(v)) => Some(*v),
        _ => None,
    }
}

fn weekday_from(name: &str) -> Option<Weekday> {
    let i = WEEKDAYS.iter().position(|d| *d == name)?;
    u8::try_from(i).ok().and_then(|i| Weekday::try_from(i).ok())
}

fn to_timeline(s: &Session) -> Timeline {
    Timeline {
        id: s.id,
        name: text(s, "name").unwrap_or_default(),
        user_id: text(s, "user_id")
            .or_else(|| s.owner.clone())
            .unwrap_or_default(),
        created_at: int(s, "created_at").unwrap_or_default(),
        updated_at: int(s, "updated_at").unwrap_or_default(),
    }
}

fn to_sched(s: &Session) -> Option<Sched> {
    Some(Sched {
        id: s.id,
        kind: Kind::parse(&text(s, "type")?)?,
        timeline_id: text(s, "timeline_id")?.parse().ok()?,
        user_id: text(s, "user_id").unwrap_or_default(),
        name: text(s, "name").unwrap_or_default(),
        start: int(s, "start")?,
        end: int(s, "end")?,
        cycle: text(s, "repeat").and_then(|c| Cycle::parse(&c)),
        weekday: text(s, "weekday").and_then(|d| weekday_from(&d)),
        description: text(s, "description"),
        created_at: int(s, "created_at").unwrap_or_default(),
        updated_at: int(s, "updated_at").unwrap_or_default(),
        removed_at: int(s, "removed_at"),
        version: s.version,
    })
}

/// Now, Unix ms.
#[must_use]
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Every record of `owner` in `ns`, oldest first.
async fn list_all(client: &Client, ns: &str, owner: &str) -> Result<Vec<Session>, ClientError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = client.list_by_owner(ns, owner, after, 1000).await?;
        out.extend(page.sessions);
        match page.next {
            Some(c) => after = Some(c),
            None => return Ok(out),
        }
    }
}

/// Creates a timeline for `user_id`.
///
/// # Errors
/// A store error.
pub async fn create_timeline(
    client: &Client,
    user_id: &str,
    name: &str,
) -> Result<Timeline, ClientError> {
    let id = SessionId::new_v4();
    // The index first: a dangling index entry (the timeline's create failed)
    // is skipped by readers, a timeline missing from the index would be
    // invisible to administrators.
    client
        .create(TIMELINE_INDEX_NS, CreateOptions::new().id(id).owner(ALL))
        .await?;
    let now = now_ms();
    let s = client
        .create(
            TIMELINES_NS,
            CreateOptions::new()
                .id(id)
                .owner(user_id)
                .attr("name", name)
                .attr("user_id", user_id)
                .attr("created_at", now)
                .attr("updated_at", now),
        )
        .await?;
    Ok(to_timeline(&s))
}

/// A timeline by id.
///
/// # Errors
/// A store error.
pub async fn get_timeline(client: &Client, id: SessionId) -> Result<Option<Timeline>, ClientError> {
    Ok(client.get(TIMELINES_NS, id).await?.map(|s| to_timeline(&s)))
}

/// A user's timelines, oldest first.
///
/// # Errors
/// A store error.
pub async fn user_timelines(client: &Client, user_id: &str) -> Result<Vec<Timeline>, ClientError> {
    Ok(list_all(client, TIMELINES_NS, user_id)
        .await?
        .iter()
        .map(to_timeline)
        .collect())
}

/// The ids of every timeline, oldest first.
///
/// # Errors
/// A store error.
pub async fn all_timeline_ids(client: &Client) -> Result<Vec<SessionId>, ClientError> {
    Ok(list_all(client, TIMELINE_INDEX_NS, ALL)
        .await?
        .iter()
        .map(|s| s.id)
        .collect())
}

/// A timeline's sessions that are not removed, oldest first.
///
/// # Errors
/// A store error.
pub async fn timeline_sessions(
    client: &Client,
    timeline: SessionId,
) -> Result<Vec<Sched>, ClientError> {
    Ok(list_all(client, SESSIONS_NS, &timeline.to_string())
        .await?
        .iter()
        .filter_map(to_sched)
        .filter(|s| s.removed_at.is_none())
        .collect())
}

/// A session by id, removed or not.
///
/// # Errors
/// A store error.
pub async fn get_session(client: &Client, id: SessionId) -> Result<Option<Sched>, ClientError> {
    Ok(client
        .get(SESSIONS_NS, id)
        .await?
        .as_ref()
        .and_then(to_sched))
}

fn set_fields(mut up: UpdateOptions, s: &Sched) -> UpdateOptions {
    up = up
        .set("type", s.kind.as_str())
        .set("timeline_id", s.timeline_id.to_string())
        .set("user_id", s.user_id.as_str())
        .set("name", s.name.as_str())
        .set("start", s.start)
        .set("end", s.end)
        .set("created_at", s.created_at)
        .set("updated_at", s.updated_at);
    up = match s.cycle {
        Some(c) => up.set("repeat", c.as_str()),
        None => up.remove("repeat"),
    };
    up = match s.weekday {
        Some(d) => up.set("weekday", super::schedule::weekday_name(d)),
        None => up.remove("weekday"),
    };
    up = match &s.description {
        Some(d) => up.set("description", d.as_str()),
        None => up.remove("description"),
    };
    match s.removed_at {
        Some(t) => up.set("removed_at", t),
        None => up.remove("removed_at"),
    }
}

/// Stores a new session (its id must be fresh).
///
/// # Errors
/// A store error.
pub async fn insert_session(client: &Client, s: &Sched) -> Result<Sched, StoreError> {
    let mut opts = CreateOptions::new()
        .id(s.id)
        .owner(s.timeline_id.to_string())
        .attr("type", s.kind.as_str())
        .attr("timeline_id", s.timeline_id.to_string())
        .attr("user_id", s.user_id.as_str())
        .attr("name", s.name.as_str())
        .attr("start", s.start)
        .attr("end", s.end)
        .attr("created_at", s.created_at)
        .attr("updated_at", s.updated_at);
    if let Some(c) = s.cycle {
        opts = opts.attr("repeat", c.as_str());
    }
    if let Some(d) = s.weekday {
        opts = opts.attr("weekday", super::schedule::weekday_name(d));
    }
    if let Some(d) = &s.description {
        opts = opts.attr("description", d.as_str());
    }
    let created = client.create(SESSIONS_NS, opts).await?;
    to_sched(&created).ok_or(StoreError::NotFound)
}

/// Rewrites a session if it is still at `s.version`.
///
/// # Errors
/// [`StoreError::Busy`] if it changed meanwhile, [`StoreError::NotFound`], a
/// store error.
pub async fn replace_session(client: &Client, s: &Sched) -> Result<Sched, StoreError> {
    let mut up = set_fields(UpdateOptions::new(), s).expected_version(s.version);
    if s.removed_at.is_some() {
        // Sliding expiry from the removal on: nothing touches it any more.
        up = up.ttl(Some(REMOVED_RETENTION), None);
    }
    match client.update(SESSIONS_NS, s.id, up).await {
        Ok(r) => Ok(Sched {
            version: r.version,
            ..s.clone()
        }),
        Err(e) if e.code() == Some(ErrorCode::Conflict) => Err(StoreError::Busy),
        Err(e) if e.code() == Some(ErrorCode::NotFound) => Err(StoreError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// A held timeline lock.
#[derive(Debug)]
pub struct TimelineLock {
    timeline: SessionId,
    version: u64,
    taken: Instant,
}

impl TimelineLock {
    /// Whether the lease is still comfortably ours: a write is only started
    /// in the first half of the lease.
    #[must_use]
    pub fn fresh(&self) -> bool {
        self.taken.elapsed() < LOCK_LEASE / 2
    }
}

/// A few milliseconds, random, so that waiters do not move in step.
fn jitter() -> Duration {
    let b = SessionId::new_v4().0;
    Duration::from_millis(2 + u64::from(b[0] % 16))
}

/// Takes a timeline's lock, waiting up to [`LOCK_WAIT`] for its holder.
///
/// # Errors
/// [`StoreError::NotFound`] (no such timeline), [`StoreError::Busy`], a store error.
pub async fn lock_timeline(
    client: &Client,
    timeline: SessionId,
) -> Result<TimelineLock, StoreError> {
    let started = Instant::now();
    let token = SessionId::new_v4().to_string();
    loop {
        let Some(t) = client.get(TIMELINES_NS, timeline).await? else {
            return Err(StoreError::NotFound);
        };
        let now = now_ms();
        let held = text(&t, "lock_token").is_some()
            && int(&t, "lock_until").is_some_and(|until| until > now);
        if !held {
            let lease = i64::try_from(LOCK_LEASE.as_millis()).unwrap_or(i64::MAX);
            let up = UpdateOptions::new()
                .set("lock_token", token.as_str())
                .set("lock_until", now.saturating_add(lease))
                .expected_version(t.version);
            match client.update(TIMELINES_NS, timeline, up).await {
                Ok(r) => {
                    return Ok(TimelineLock {
                        timeline,
                        version: r.version,
                        taken: Instant::now(),
                    })
                }
                // Someone else moved first: look again.
                Err(e) if e.code() == Some(ErrorCode::Conflict) => {}
                Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                    return Err(StoreError::NotFound)
                }
                Err(e) => return Err(e.into()),
            }
        }
        if started.elapsed() > LOCK_WAIT {
            return Err(StoreError::Busy);
        }
        tokio::time::sleep(jitter()).await;
    }
}

/// Gives a timeline's lock back.
///
/// # Errors
/// [`StoreError::Busy`] if the lease lapsed and someone else took the lock
/// (the holder must undo its write); a store error.
pub async fn unlock_timeline(client: &Client, lock: TimelineLock) -> Result<(), StoreError> {
    let up = UpdateOptions::new()
        .remove("lock_token")
        .remove("lock_until")
        .expected_version(lock.version);
    match client.update(TIMELINES_NS, lock.timeline, up).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::Conflict) => Err(StoreError::Busy),
        Err(e) => Err(e.into()),
    }
}

/// Hard-deletes a session written under a lease that lapsed.
///
/// # Errors
/// A store error.
pub async fn undo_insert(client: &Client, id: SessionId) -> Result<(), ClientError> {
    client.delete(SESSIONS_NS, id).await.map(|_| ())
}
