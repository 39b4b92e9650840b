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
//!   It records its creator (`created_by`, the authenticated subject that
//!   created it; records from before it was kept fall back to the timeline's
//!   owner, who was then the only possible creator but for administrators).
//! - [`USER_TIMELINES_NS`]: one record per (user, timeline) where the user
//!   created a session on a timeline they do not own (an administrator), owned
//!   by the user, so a user's sessions are found on their own timelines plus
//!   these (see [`user_sessions`]).
//! - [`USER_LOCKS_NS`]: one record per user who created sessions (id derived
//!   from the user id), owned by the user, carrying the user's write lock.
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
//!
//! Writes that can make a session overlap its creator's other sessions (a
//! create, a PATCH of its schedule) also hold the creator's lock, the same kind
//! of lease on the user's [`USER_LOCKS_NS`] record, taken before the
//! timeline's (always in that order, so two writers cannot wait on each other).

use std::time::{Duration, Instant};

use chrono::Weekday;
use sessiond_client::{
    Client, CreateOptions, Error as ClientError, ErrorCode, Session, SessionId, UpdateOptions,
};

use super::schedule::{Cycle, Slot, WEEKDAYS};
use crate::apis::common::{int, text};

/// Namespace of timelines (owned by their user).
pub const TIMELINES_NS: &str = "sched-timelines";
/// Namespace of the every-timeline index (owned by [`ALL`]).
pub const TIMELINE_INDEX_NS: &str = "sched-timeline-index";
/// Namespace of scheduled sessions (owned by their timeline id).
pub const SESSIONS_NS: &str = "sched-sessions";
/// Namespace of the timelines a user created sessions on without owning them
/// (owned by the user).
pub const USER_TIMELINES_NS: &str = "sched-user-timelines";
/// Namespace of the per-user write locks (owned by the user).
pub const USER_LOCKS_NS: &str = "sched-user-locks";
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

/// Whether a session is one-time or recurring (`ONE_TIME` or `RECURRING` on
/// the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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
    /// The authenticated subject that created it (the timeline's owner, or an
    /// administrator); its overlaps with that user's other sessions are
    /// refused.
    pub created_by: String,
    /// Its name.
    pub name: String,
    /// Start of the (first) occurrence, Unix ms, if given.
    pub start: Option<i64>,
    /// End of the (first) occurrence, Unix ms, if given.
    pub end: Option<i64>,
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
    /// When it happens; `None` unless it has both a start and an end (such a
    /// session overlaps nothing).
    #[must_use]
    pub fn slot(&self) -> Option<Slot> {
        Some(Slot {
            start: self.start?,
            end: self.end?,
            cycle: self.cycle,
        })
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
    let user_id = text(s, "user_id").unwrap_or_default();
    Some(Sched {
        id: s.id,
        kind: Kind::parse(&text(s, "type")?)?,
        timeline_id: text(s, "timeline_id")?.parse().ok()?,
        created_by: text(s, "created_by").unwrap_or_else(|| user_id.clone()),
        user_id,
        name: text(s, "name").unwrap_or_default(),
        start: int(s, "start"),
        end: int(s, "end"),
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
        .set("created_by", s.created_by.as_str())
        .set("name", s.name.as_str())
        .set("created_at", s.created_at)
        .set("updated_at", s.updated_at);
    up = match s.start {
        Some(t) => up.set("start", t),
        None => up.remove("start"),
    };
    up = match s.end {
        Some(t) => up.set("end", t),
        None => up.remove("end"),
    };
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
        .attr("created_by", s.created_by.as_str())
        .attr("name", s.name.as_str())
        .attr("created_at", s.created_at)
        .attr("updated_at", s.updated_at);
    if let Some(t) = s.start {
        opts = opts.attr("start", t);
    }
    if let Some(t) = s.end {
        opts = opts.attr("end", t);
    }
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

/// A held lock (a timeline's or a user's).
#[derive(Debug)]
pub struct Lock {
    ns: &'static str,
    id: SessionId,
    version: u64,
    taken: Instant,
}

impl Lock {
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
pub async fn lock_timeline(client: &Client, timeline: SessionId) -> Result<Lock, StoreError> {
    lock_record(client, TIMELINES_NS, timeline, None).await
}

/// A record id derived from `parts` (UUID v5; each part length-prefixed, so
/// that no two lists of parts give the same id).
fn derived_id(parts: &[&str]) -> SessionId {
    let mut name = String::new();
    for p in parts {
        name.push_str(&p.len().to_string());
        name.push(':');
        name.push_str(p);
    }
    SessionId(*uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).as_bytes())
}

/// Takes a user's lock (see the module docs), waiting up to [`LOCK_WAIT`].
///
/// # Errors
/// [`StoreError::Busy`], a store error.
pub async fn lock_user(client: &Client, user_id: &str) -> Result<Lock, StoreError> {
    let id = derived_id(&["sched-user-lock", user_id]);
    lock_record(client, USER_LOCKS_NS, id, Some(user_id)).await
}

/// Takes the lock carried by record `id` of `ns`, creating the record (owned
/// by `create_for`) if it is missing and `create_for` is given.
async fn lock_record(
    client: &Client,
    ns: &'static str,
    id: SessionId,
    create_for: Option<&str>,
) -> Result<Lock, StoreError> {
    let started = Instant::now();
    let token = SessionId::new_v4().to_string();
    loop {
        let Some(t) = client.get(ns, id).await? else {
            let Some(owner) = create_for else {
                return Err(StoreError::NotFound);
            };
            match client
                .create(ns, CreateOptions::new().id(id).owner(owner))
                .await
            {
                // Made by us or by a competitor: look again.
                Ok(_) => {}
                Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {}
                Err(e) => return Err(e.into()),
            }
            continue;
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
            match client.update(ns, id, up).await {
                Ok(r) => {
                    return Ok(Lock {
                        ns,
                        id,
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

/// Gives a lock back.
///
/// # Errors
/// [`StoreError::Busy`] if the lease lapsed and someone else took the lock
/// (the holder must undo its write); a store error.
pub async fn unlock(client: &Client, lock: Lock) -> Result<(), StoreError> {
    let up = UpdateOptions::new()
        .remove("lock_token")
        .remove("lock_until")
        .expected_version(lock.version);
    match client.update(lock.ns, lock.id, up).await {
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

/// Records that `user_id` created a session on `timeline`, a timeline they do
/// not own (so [`user_sessions`] finds it).
///
/// # Errors
/// A store error.
pub async fn note_user_timeline(
    client: &Client,
    user_id: &str,
    timeline: SessionId,
) -> Result<(), ClientError> {
    let id = derived_id(&["sched-user-timeline", user_id, &timeline.to_string()]);
    let opts = CreateOptions::new()
        .id(id)
        .owner(user_id)
        .attr("timeline_id", timeline.to_string());
    match client.create(USER_TIMELINES_NS, opts).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The sessions `user_id` created that are not removed, on every timeline:
/// their own timelines and those noted by [`note_user_timeline`].
///
/// # Errors
/// A store error.
pub async fn user_sessions(client: &Client, user_id: &str) -> Result<Vec<Sched>, ClientError> {
    let mut timelines: Vec<SessionId> = user_timelines(client, user_id)
        .await?
        .into_iter()
        .map(|t| t.id)
        .collect();
    for r in list_all(client, USER_TIMELINES_NS, user_id).await? {
        if let Some(t) = text(&r, "timeline_id").and_then(|t| t.parse().ok()) {
            if !timelines.contains(&t) {
                timelines.push(t);
            }
        }
    }
    let mut out = Vec::new();
    for t in timelines {
        out.extend(
            timeline_sessions(client, t)
                .await?
                .into_iter()
                .filter(|s| s.created_by == user_id),
        );
    }
    Ok(out)
}
