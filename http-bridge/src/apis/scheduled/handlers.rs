//! The handlers of the routes.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use sessiond_client::SessionId;

use super::bearer::Caller;
use super::input::{
    field, json_object, page_of, paged, parse_input, parse_uuid, path_id, query_of, settle,
    string_of, Field, Paging, QueryMap, ScheduledSessionCreate, ScheduledSessionUpdate,
    ScheduledTimelineCreate,
};
use super::store::{self, Sched};
use super::views::{
    ok_session, ok_sessions, ok_timeline, ok_timelines, ScheduledSessionEnvelope,
    ScheduledSessionList, ScheduledTimelineEnvelope, ScheduledTimelineList,
};
use super::write::{admit, under_lock, Undo};
use super::{ApiResult, ScheduledError, ScheduledErrorBody, MAX_NAME};
use crate::state::AppState;

/// A live session the caller may see, or 404.
async fn visible_session(
    state: &AppState,
    caller: &Caller,
    id: SessionId,
) -> Result<Sched, ScheduledError> {
    match store::get_session(&state.client, id).await {
        Ok(Some(s)) if s.removed_at.is_none() && caller.may_access(&s.user_id) => Ok(s),
        Ok(_) => Err(ScheduledError::not_found()),
        Err(e) => Err(e.into()),
    }
}

/// A sort order.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
enum SortOrder {
    /// Earliest first.
    #[allow(clippy::upper_case_acronyms)]
    ASC,
    /// Latest first.
    #[allow(clippy::upper_case_acronyms)]
    DESC,
}

/// List the caller's scheduled sessions (an administrator's: everyone's)
///
/// Sorted by `startDateTime` (sessions without one last, in both orders),
/// ties by creation time.
#[utoipa::path(get, path = "/sessions", tag = "scheduled-sessions",
    operation_id = "scheduled_list_sessions",
    security(("bearer" = [])),
    params(
        ("timelineId" = Option<String>, Query, format = Uuid,
            description = "only the sessions of this timeline"),
        ("startDateTimeSortOrder" = inline(Option<SortOrder>), Query,
            description = "sort by startDateTime (default DESC)"),
        Paging,
    ),
    responses(
        (status = 200, description = "a page of sessions; meta.meta.count is the total",
            body = ScheduledSessionList),
        (status = 400, description = "invalid query parameters", body = ScheduledErrorBody),
        (status = 401, description = "missing, malformed, forged or expired bearer token",
            body = ScheduledErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "the timeline belongs to another user", body = ScheduledErrorBody),
        (status = 503, description = "the session store is unavailable", body = ScheduledErrorBody),
    ))]
pub(super) async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<QueryMap>, QueryRejection>,
) -> ApiResult {
    let q = query_of(query)?;
    let mut p = Vec::new();
    let page = page_of(&q, &mut p);
    let descending = match q.get("startDateTimeSortOrder").map(String::as_str) {
        None | Some("DESC") => true,
        Some("ASC") => false,
        Some(_) => {
            p.push("startDateTimeSortOrder must be one of the following values: ASC, DESC".into());
            true
        }
    };
    let filter = match q.get("timelineId") {
        None => None,
        Some(s) => match parse_uuid(s) {
            Some(id) => Some(id),
            None => {
                p.push("timelineId must be a UUID".into());
                None
            }
        },
    };
    if !p.is_empty() {
        return Err(ScheduledError::fields(p));
    }
    let client = &state.client;
    let timelines = match filter {
        Some(id) => match store::get_timeline(client, id).await {
            Ok(Some(t)) if caller.may_access(&t.user_id) => vec![t.id],
            Ok(Some(_)) => {
                return Err(ScheduledError::fail(
                    StatusCode::FORBIDDEN,
                    "The timeline belongs to another user",
                ))
            }
            // A filter naming no timeline matches nothing.
            Ok(None) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
        None if caller.is_admin => store::all_timeline_ids(client).await?,
        None => store::user_timelines(client, &caller.user_id)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect(),
    };
    let mut all = Vec::new();
    for t in timelines {
        all.extend(store::timeline_sessions(client, t).await?);
    }
    all.sort_by(|a, b| {
        // Sessions without a start come last, in both orders.
        let by_start = match (a.start, b.start) {
            (Some(x), Some(y)) if descending => y.cmp(&x),
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_start
            .then(a.created_at.cmp(&b.created_at))
            .then(a.id.0.cmp(&b.id.0))
    });
    let count = all.len();
    Ok(ok_sessions(paged(all, page), page, count))
}

/// One scheduled session
#[utoipa::path(get, path = "/sessions/{id}", tag = "scheduled-sessions",
    operation_id = "scheduled_get_session",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "the session's UUID")),
    responses(
        (status = 200, description = "the session", body = ScheduledSessionEnvelope),
        (status = 400, description = "the id is not a UUID", body = ScheduledErrorBody),
        (status = 401, description = "missing, malformed, forged or expired bearer token",
            body = ScheduledErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "no such session (or removed, or another user's)",
            body = ScheduledErrorBody),
        (status = 503, description = "the session store is unavailable", body = ScheduledErrorBody),
    ))]
pub(super) async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let s = visible_session(&state, &caller, id).await?;
    Ok(ok_session(&s))
}

/// Create a scheduled session
///
/// Answers 200, as the document says.
#[utoipa::path(post, path = "/sessions", tag = "scheduled-sessions",
    operation_id = "scheduled_create_session",
    security(("bearer" = [])),
    request_body = ScheduledSessionCreate,
    responses(
        (status = 200, description = "the created session", body = ScheduledSessionEnvelope),
        (status = 400, description = "invalid fields, or an unknown timelineId",
            body = ScheduledErrorBody),
        (status = 401, description = "missing, malformed, forged or expired bearer token",
            body = ScheduledErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "the timeline belongs to another user", body = ScheduledErrorBody),
        (status = 404, description = "the timeline vanished during the write (a race with a store failure)",
            body = ScheduledErrorBody),
        (status = 409, description = "the session overlaps another session of the timeline or of the same user",
            body = ScheduledErrorBody),
        (status = 413, description = "the body is too large", body = ScheduledErrorBody),
        (status = 503, description = "the session store is unavailable or the timeline busy",
            body = ScheduledErrorBody),
    ))]
pub(super) async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    payload: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    let map = json_object(payload)?;
    let (input, mut missing) = parse_input(&map);
    for (name, given) in [
        ("type", input.kind.given()),
        ("timelineId", input.timeline_id.given()),
        ("name", input.name.given()),
    ] {
        if !given && !missing.iter().any(|m| m.starts_with(&format!("{name} "))) {
            missing.push(format!("{name} is required"));
        }
    }
    if !missing.is_empty() {
        return Err(ScheduledError::fields(missing));
    }
    let (Field::Set(kind), Field::Set(timeline_id), Field::Set(name)) =
        (&input.kind, &input.timeline_id, &input.name)
    else {
        // Not reached: absent and null fields were reported above.
        return Err(ScheduledError::fields(vec![
            "type, timelineId and name are required".into(),
        ]));
    };
    let (kind, timeline_id, name) = (*kind, *timeline_id, name.clone());
    let (start, end) = (input.start.or_old(None), input.end.or_old(None));
    let (cycle, weekday) = settle(kind, start, end, (None, None), &input)?;
    let timeline = match store::get_timeline(&state.client, timeline_id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(ScheduledError::fields(vec![
                "timelineId does not reference a valid timeline".into(),
            ]))
        }
        Err(e) => return Err(e.into()),
    };
    if !caller.may_access(&timeline.user_id) {
        return Err(ScheduledError::fail(
            StatusCode::FORBIDDEN,
            "The timeline belongs to another user",
        ));
    }
    let now = store::now_ms();
    let new = Sched {
        id: SessionId::new_v4(),
        kind,
        timeline_id,
        user_id: timeline.user_id.clone(),
        created_by: caller.user_id.clone(),
        name,
        start,
        end,
        cycle,
        weekday,
        description: match &input.description {
            Field::Set(d) => Some(d.clone()),
            _ => None,
        },
        created_at: now,
        updated_at: now,
        removed_at: None,
        version: 0,
    };
    let client = state.client.clone();
    let creator = caller.user_id.clone();
    let foreign = creator != timeline.user_id;
    under_lock(
        &state,
        Some(&creator),
        timeline_id,
        |existing, mine, fresh| async move {
            admit(&existing, mine.as_deref(), &new, fresh)?;
            if foreign {
                // So that the creator's later writes see this session.
                store::note_user_timeline(&client, &new.created_by, timeline_id).await?;
            }
            let created = store::insert_session(&client, &new).await?;
            Ok((ok_session(&created), Some(Undo::Insert(created.id))))
        },
    )
    .await
}

/// Change some fields of a scheduled session
///
/// Absent fields are kept; null clears `startDateTime`, `endDateTime`,
/// `repeatCycleType`, `recurringDayOfWeek` and `description`.
#[utoipa::path(patch, path = "/sessions/{id}", tag = "scheduled-sessions",
    operation_id = "scheduled_update_session",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "the session's UUID")),
    request_body = ScheduledSessionUpdate,
    responses(
        (status = 200, description = "the updated session", body = ScheduledSessionEnvelope),
        (status = 400, description = "invalid fields", body = ScheduledErrorBody),
        (status = 401, description = "missing, malformed, forged or expired bearer token",
            body = ScheduledErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "no such session (or removed, or another user's)",
            body = ScheduledErrorBody),
        (status = 409, description = "the session would overlap another session of the timeline or of the same user",
            body = ScheduledErrorBody),
        (status = 413, description = "the body is too large", body = ScheduledErrorBody),
        (status = 503, description = "the session store is unavailable or the timeline busy",
            body = ScheduledErrorBody),
    ))]
pub(super) async fn update_session(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    payload: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let map = json_object(payload)?;
    let (input, problems) = parse_input(&map);
    if !problems.is_empty() {
        return Err(ScheduledError::fields(problems));
    }
    let first = visible_session(&state, &caller, id).await?;
    if let Field::Set(t) = input.timeline_id {
        if t != first.timeline_id {
            return Err(ScheduledError::fields(vec![
                "timelineId cannot be changed: create the session on the other timeline".into(),
            ]));
        }
    }
    let timeline = first.timeline_id;
    // A change of when it happens is checked against its creator's sessions
    // too (the creator never changes, so the first read names the lock).
    let reschedules =
        input.kind.given() || input.start.given() || input.end.given() || input.cycle.given();
    let creator = reschedules.then(|| first.created_by.clone());
    let client = state.client.clone();
    let st = state.clone();
    under_lock(
        &state,
        creator.as_deref(),
        timeline,
        |existing, mine, fresh| async move {
            // Read again under the lock: it may have changed since.
            let old = visible_session(&st, &caller, id).await?;
            let kind = input.kind.or(old.kind);
            let start = input.start.or_old(old.start);
            let end = input.end.or_old(old.end);
            let (cycle, weekday) = settle(kind, start, end, (old.cycle, old.weekday), &input)?;
            let new = Sched {
                kind,
                name: input.name.or(old.name.clone()),
                start,
                end,
                cycle,
                weekday,
                description: match &input.description {
                    Field::Set(d) => Some(d.clone()),
                    Field::Null => None,
                    Field::Absent => old.description.clone(),
                },
                updated_at: store::now_ms().max(old.updated_at),
                ..old.clone()
            };
            // The user's sessions matter only if it now happens at another time.
            let mine = mine.filter(|_| new.slot() != old.slot());
            admit(&existing, mine.as_deref(), &new, fresh)?;
            let saved = store::replace_session(&client, &new).await?;
            let undo = Undo::Replace(Box::new(old), saved.version);
            Ok((ok_session(&saved), Some(undo)))
        },
    )
    .await
}

/// Remove a scheduled session (soft delete: removedAt is set)
#[utoipa::path(delete, path = "/sessions/{id}", tag = "scheduled-sessions",
    operation_id = "scheduled_delete_session",
    security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid, description = "the session's UUID")),
    responses(
        (status = 200, description = "the removed session", body = ScheduledSessionEnvelope),
        (status = 400, description = "the id is not a UUID", body = ScheduledErrorBody),
        (status = 401, description = "missing, malformed, forged or expired bearer token",
            body = ScheduledErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "no such session (or already removed, or another user's)",
            body = ScheduledErrorBody),
        (status = 503, description = "the session store is unavailable or the timeline busy",
            body = ScheduledErrorBody),
    ))]
pub(super) async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let first = visible_session(&state, &caller, id).await?;
    let client = state.client.clone();
    let st = state.clone();
    // Under the lock too, so that it cannot interleave with an update of the
    // same session.
    under_lock(&state, None, first.timeline_id, |_, _, _| async move {
        let old = visible_session(&st, &caller, id).await?;
        let now = store::now_ms();
        let removed = Sched {
            removed_at: Some(now),
            updated_at: now.max(old.updated_at),
            ..old
        };
        let saved = store::replace_session(&client, &removed).await?;
        // Removing frees time; nothing to undo if the lease lapsed.
        Ok((ok_session(&saved), None))
    })
    .await
}

/// Create a timeline owned by the caller
#[utoipa::path(post, path = "/timelines", tag = "scheduled-sessions",
    operation_id = "scheduled_create_timeline",
    security(("bearer" = [])),
    request_body = ScheduledTimelineCreate,
    responses(
        (status = 200, description = "the created timeline", body = ScheduledTimelineEnvelope),
        (status = 400, description = "invalid fields", body = ScheduledErrorBody),
        (status = 401, description = "missing, malformed, forged or expired bearer token",
            body = ScheduledErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 413, description = "the body is too large", body = ScheduledErrorBody),
        (status = 503, description = "the session store is unavailable", body = ScheduledErrorBody),
    ))]
pub(super) async fn create_timeline(
    State(state): State<AppState>,
    caller: Caller,
    payload: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    let map = json_object(payload)?;
    let mut p = Vec::new();
    let name = field(&map, "name", &mut p, |v| string_of(v, MAX_NAME, true));
    let Field::Set(name) = name else {
        if p.is_empty() {
            p.push("name is required".into());
        }
        return Err(ScheduledError::fields(p));
    };
    let t = store::create_timeline(&state.client, &caller.user_id, &name).await?;
    Ok(ok_timeline(&t))
}

/// List the caller's timelines, oldest first (by creation time in milliseconds; ties in id order)
#[utoipa::path(get, path = "/timelines", tag = "scheduled-sessions",
    operation_id = "scheduled_list_timelines",
    security(("bearer" = [])),
    params(Paging),
    responses(
        (status = 200, description = "a page of timelines; meta.meta.count is the total",
            body = ScheduledTimelineList),
        (status = 400, description = "invalid query parameters", body = ScheduledErrorBody),
        (status = 401, description = "missing, malformed, forged or expired bearer token",
            body = ScheduledErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 503, description = "the session store is unavailable", body = ScheduledErrorBody),
    ))]
pub(super) async fn list_timelines(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<QueryMap>, QueryRejection>,
) -> ApiResult {
    let q = query_of(query)?;
    let mut p = Vec::new();
    let page = page_of(&q, &mut p);
    if !p.is_empty() {
        return Err(ScheduledError::fields(p));
    }
    let all = store::user_timelines(&state.client, &caller.user_id).await?;
    let count = all.len();
    Ok(ok_timelines(paged(all, page), page, count))
}
