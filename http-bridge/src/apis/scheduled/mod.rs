//! scheduled-sessions-api.md: scheduled sessions on timelines ("routines"),
//! behind `Authorization: Bearer <JWT or access token>` (see [`bearer`]).
//!
//! - `GET /sessions?timelineId=&startDateTimeSortOrder=ASC|DESC&skip=&take=`
//! - `GET /sessions/{id}`, `POST /sessions`, `PATCH /sessions/{id}`,
//!   `DELETE /sessions/{id}` (soft delete: sets `removedAt`)
//! - `POST /timelines` `{name}`, `GET /timelines?skip=&take=`: the timelines a
//!   session must belong to (the document takes them as given).
//!
//! Success bodies are `{"data": ..., "meta": {"message": "success"}}`, plus
//! `meta.meta = {skip, take, count}` for lists (`count` is the total before
//! paging). Errors are NestJS-style `{"statusCode", "message", "error"}`, the
//! format of the framework the document describes; `message` is an array of
//! strings when input fields are invalid (one per problem, as class-validator
//! reports them) and a string otherwise.
//!
//! Where the document is silent:
//! - `startDateTime` and `endDateTime` are optional on create, as the document
//!   says (null is the same as absent); a PATCH sets or changes them, and
//!   clears one with null. A session without one answers it as `null` (the
//!   document lists them as strings, but null is the honest value when none was
//!   given; the OpenAPI marks them nullable). When both are present
//!   `endDateTime` must be after `startDateTime`. A session without both times
//!   has no occurrence, so it overlaps nothing (it never gets or causes a 409).
//!   Times are ISO 8601 (an offset-less time is UTC) and are returned as
//!   `...T09:00:00.000Z`.
//! - Overlaps (409) are checked against the other sessions of the same
//!   timeline, and against the other sessions of the same user: the
//!   authenticated subject that created the session (an administrator creating
//!   a session on someone's timeline is its user), on whichever of their
//!   timelines they are. Both are checked on create, and on a PATCH that
//!   changes when the session happens (`startDateTime`, `endDateTime`, `type`,
//!   `repeatCycleType`); the check against the user's sessions is made under
//!   the user's lock (see [`store`]), so concurrent writes on two timelines of
//!   one user cannot both overlap.
//! - `repeatCycleType` is `DAILY` or `WEEKLY`, required for RECURRING and
//!   refused for ONE_TIME. A recurring session repeats from its first
//!   occurrence forever; an occurrence may last at most one period. A WEEKLY
//!   session recurs on the UTC weekday of its `startDateTime`:
//!   `recurringDayOfWeek` (`MONDAY`..`SUNDAY`) is derived from it, and one
//!   given explicitly must agree (without a `startDateTime` it is kept as
//!   given). Overlaps are computed on these occurrences (see [`schedule`]);
//!   back-to-back sessions do not overlap.
//! - A timeline belongs to its creator. An unknown `timelineId` on create is
//!   400 (the document's "invalid routine reference"), another user's is 403;
//!   a session of another user's timeline is 404 (its existence is not
//!   revealed). Administrators see and change everything.
//! - `timelineId` cannot be changed by PATCH (400 unless unchanged). A PATCH
//!   that makes a session ONE_TIME clears its recurrence fields.
//! - A removed session is 404 for GET, PATCH and DELETE and is not listed.
//! - `skip` defaults to 0, `take` to 10 (at most 100); the sort breaks ties by
//!   creation time. Sessions without a `startDateTime` come after all those
//!   with one, in both orders. POST answers 200, as the document says.
//! - An unreachable daemon is 503; a timeline kept busy by concurrent writers
//!   for 5 s is 503 too.

pub mod bearer;
mod openapi;
pub mod schedule;
pub mod store;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::FromRequestParts;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sessiond_client::SessionId;

use crate::apis::common::{ApiError, Envelope, Failure};
use crate::state::AppState;
use bearer::{AuthError, Caller};
use schedule::{format_time, parse_time, weekday_name, weekday_of, Cycle};
use store::{Kind, Sched, StoreError, Timeline};

pub use openapi::openapi;

/// Default page size of the lists.
pub const DEFAULT_TAKE: u64 = 10;
/// Largest page size of the lists.
pub const MAX_TAKE: u64 = 100;
/// Longest name, in characters.
const MAX_NAME: usize = 255;
/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 4000;

/// This API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list_sessions).post(create_session))
        .route(
            "/sessions/{id}",
            get(get_session)
                .patch(update_session)
                .delete(delete_session),
        )
        .route("/timelines", get(list_timelines).post(create_timeline))
}

// ---------------------------------------------------------------------------
// Responses

/// This API's error envelope: `{"statusCode", "message", "error"}`, with
/// `WWW-Authenticate: Bearer` on a 401.
#[derive(Debug)]
pub struct ScheduledApi;

impl Envelope for ScheduledApi {
    const LOG: &'static str = "scheduled sessions: store error";
    const STORE_FULL: &'static str = "The session store is full, retry later";
    const UNAVAILABLE: &'static str = "The session store is unavailable, retry later";

    fn body(f: &Failure) -> Value {
        json!({
            "statusCode": f.status.as_u16(),
            "message": f.list.as_ref().map_or_else(|| json!(f.message), |l| json!(l)),
            "error": f.status.canonical_reason().unwrap_or("Error"),
        })
    }

    fn finish(f: &Failure, r: &mut Response) {
        if f.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
    }
}

/// An error of this API.
pub type ScheduledError = ApiError<ScheduledApi>;

impl ScheduledError {
    fn fields(problems: Vec<String>) -> Self {
        Self::fail(StatusCode::BAD_REQUEST, "").listing(problems)
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::fail(StatusCode::BAD_REQUEST, message)
    }

    fn not_found() -> Self {
        Self::fail(StatusCode::NOT_FOUND, "Session not found")
    }

    fn unavailable() -> Self {
        Self::fail(StatusCode::SERVICE_UNAVAILABLE, ScheduledApi::UNAVAILABLE)
    }
}

impl From<StoreError> for ScheduledError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Client(e) => e.into(),
            StoreError::Busy => Self::fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "The timeline is busy, retry later",
            ),
            StoreError::NotFound => Self::not_found(),
        }
    }
}

impl From<AuthError> for ScheduledError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => Self::fail(StatusCode::UNAUTHORIZED, "Missing bearer token"),
            AuthError::Invalid => {
                Self::fail(StatusCode::UNAUTHORIZED, "Invalid or expired bearer token")
            }
            AuthError::Unavailable => Self::unavailable(),
        }
    }
}

/// The authenticated caller (see [`bearer::authenticate`]), or the 401/503.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ScheduledError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, ScheduledError> {
        Ok(bearer::authenticate(state, &parts.headers).await?)
    }
}

type ApiResult = Result<Response, ScheduledError>;

fn ok(data: Value) -> Response {
    Json(json!({"data": data, "meta": {"message": "success"}})).into_response()
}

fn ok_page(data: Vec<Value>, page: Page, count: usize) -> Response {
    Json(json!({
        "data": data,
        "meta": {"message": "success", "meta": {"skip": page.skip, "take": page.take, "count": count}},
    }))
    .into_response()
}

fn session_view(s: &Sched) -> Value {
    json!({
        "id": s.id.to_string(),
        "type": s.kind.as_str(),
        "timelineId": s.timeline_id.to_string(),
        "name": s.name,
        "startDateTime": s.start.map(format_time),
        "endDateTime": s.end.map(format_time),
        "repeatCycleType": s.cycle.map(Cycle::as_str),
        "recurringDayOfWeek": s.weekday.map(weekday_name),
        "description": s.description,
        "createdAt": format_time(s.created_at),
        "updatedAt": format_time(s.updated_at),
        "removedAt": s.removed_at.map(format_time),
    })
}

fn timeline_view(t: &Timeline) -> Value {
    json!({
        "id": t.id.to_string(),
        "name": t.name,
        "userId": t.user_id,
        "createdAt": format_time(t.created_at),
        "updatedAt": format_time(t.updated_at),
    })
}

// ---------------------------------------------------------------------------
// Input

/// A UUID in its canonical hyphenated form (any case).
fn parse_uuid(s: &str) -> Option<SessionId> {
    (s.len() == 36).then(|| s.parse().ok()).flatten()
}

fn path_id(id: Result<Path<String>, PathRejection>) -> Result<SessionId, ScheduledError> {
    let Ok(Path(id)) = id else {
        return Err(ScheduledError::bad("Validation failed (uuid is expected)"));
    };
    parse_uuid(&id).ok_or_else(|| ScheduledError::bad("Validation failed (uuid is expected)"))
}

fn json_object(
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Map<String, Value>, ScheduledError> {
    match payload {
        Ok(Json(Value::Object(map))) => Ok(map),
        Ok(_) => Err(ScheduledError::bad("The body must be a JSON object")),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ScheduledError::fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The body is too large",
        )),
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ScheduledError::bad(
            "Expected Content-Type: application/json",
        )),
        Err(_) => Err(ScheduledError::bad("Malformed JSON body")),
    }
}

/// A field of a request: absent, explicitly null, or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Field<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Field<T> {
    fn given(&self) -> bool {
        !matches!(self, Self::Absent)
    }

    /// The value set, or `old` when the field is absent or null.
    fn or(&self, old: T) -> T
    where
        T: Clone,
    {
        match self {
            Self::Set(v) => v.clone(),
            Self::Absent | Self::Null => old,
        }
    }

    /// An optional value after the request: set, cleared by null, or `old`
    /// when absent.
    fn or_old(&self, old: Option<T>) -> Option<T>
    where
        T: Clone,
    {
        match self {
            Self::Set(v) => Some(v.clone()),
            Self::Null => None,
            Self::Absent => old,
        }
    }
}

/// A create or update request, each field checked on its own.
#[derive(Debug, Default)]
struct Input {
    kind: Field<Kind>,
    timeline_id: Field<SessionId>,
    name: Field<String>,
    start: Field<i64>,
    end: Field<i64>,
    cycle: Field<Cycle>,
    weekday: Field<chrono::Weekday>,
    description: Field<String>,
}

/// Reads one field with `parse`, recording a problem under `name` if it fails.
fn field<T>(
    map: &Map<String, Value>,
    name: &str,
    problems: &mut Vec<String>,
    parse: impl FnOnce(&Value) -> Result<T, String>,
) -> Field<T> {
    match map.get(name) {
        None => Field::Absent,
        Some(Value::Null) => Field::Null,
        Some(v) => match parse(v) {
            Ok(t) => Field::Set(t),
            Err(m) => {
                problems.push(format!("{name} {m}"));
                Field::Absent
            }
        },
    }
}

fn string_of(v: &Value, max: usize, non_empty: bool) -> Result<String, String> {
    let Value::String(s) = v else {
        return Err("must be a string".into());
    };
    if non_empty && s.trim().is_empty() {
        return Err("should not be empty".into());
    }
    if s.chars().count() > max {
        return Err(format!("must be shorter than or equal to {max} characters"));
    }
    Ok(s.clone())
}

fn time_of(v: &Value) -> Result<i64, String> {
    v.as_str()
        .and_then(parse_time)
        .ok_or_else(|| "must be a valid ISO 8601 date string".to_owned())
}

/// The request's fields and the problems found in them.
fn parse_input(map: &Map<String, Value>) -> (Input, Vec<String>) {
    let mut p = Vec::new();
    let input = Input {
        kind: field(map, "type", &mut p, |v| {
            v.as_str().and_then(Kind::parse).ok_or_else(|| {
                "must be one of the following values: ONE_TIME, RECURRING".to_owned()
            })
        }),
        timeline_id: field(map, "timelineId", &mut p, |v| {
            v.as_str()
                .and_then(parse_uuid)
                .ok_or_else(|| "must be a UUID".to_owned())
        }),
        name: field(map, "name", &mut p, |v| string_of(v, MAX_NAME, true)),
        start: field(map, "startDateTime", &mut p, time_of),
        end: field(map, "endDateTime", &mut p, time_of),
        cycle: field(map, "repeatCycleType", &mut p, |v| {
            v.as_str()
                .and_then(Cycle::parse)
                .ok_or_else(|| "must be one of the following values: DAILY, WEEKLY".to_owned())
        }),
        weekday: field(map, "recurringDayOfWeek", &mut p, |v| {
            v.as_str()
                .and_then(|s| schedule::WEEKDAYS.iter().position(|d| *d == s))
                .and_then(|i| u8::try_from(i).ok())
                .and_then(|i| chrono::Weekday::try_from(i).ok())
                .ok_or_else(|| {
                    format!(
                        "must be one of the following values: {}",
                        schedule::WEEKDAYS.join(", ")
                    )
                })
        }),
        description: field(map, "description", &mut p, |v| {
            string_of(v, MAX_DESCRIPTION, false)
        }),
    };
    // Fields that may not be null (absent is fine for PATCH; create checks
    // presence itself). The times are optional: null means none.
    for (name, null) in [
        ("type", input.kind == Field::Null),
        ("timelineId", input.timeline_id == Field::Null),
        ("name", input.name == Field::Null),
    ] {
        if null {
            p.push(format!("{name} should not be null"));
        }
    }
    (input, p)
}

/// The schedule of a session once the request is applied to `base` (the
/// stored session, or nothing on create): recurrence fields made consistent,
/// cross-field rules checked.
fn settle(
    kind: Kind,
    start: Option<i64>,
    end: Option<i64>,
    base: (Option<Cycle>, Option<chrono::Weekday>),
    input: &Input,
) -> Result<(Option<Cycle>, Option<chrono::Weekday>), ScheduledError> {
    let (base_cycle, base_weekday) = base;
    let mut p = Vec::new();
    if let (Some(start), Some(end)) = (start, end) {
        if end <= start {
            p.push("endDateTime must be after startDateTime".to_owned());
        }
    }
    let explicit_cycle = match &input.cycle {
        Field::Set(c) => Some(*c),
        _ => None,
    };
    let explicit_day = match &input.weekday {
        Field::Set(d) => Some(*d),
        _ => None,
    };
    let (cycle, weekday) = match kind {
        Kind::OneTime => {
            if explicit_cycle.is_some() {
                p.push("repeatCycleType must be empty for ONE_TIME sessions".into());
            }
            if explicit_day.is_some() {
                p.push("recurringDayOfWeek must be empty for ONE_TIME sessions".into());
            }
            (None, None)
        }
        Kind::Recurring => {
            let cycle = match &input.cycle {
                Field::Set(c) => Some(*c),
                Field::Null => None,
                Field::Absent => base_cycle,
            };
            match cycle {
                None => {
                    p.push("repeatCycleType is required for RECURRING sessions".into());
                    (None, None)
                }
                Some(Cycle::Daily) => {
                    if explicit_day.is_some() {
                        p.push("recurringDayOfWeek must be empty for DAILY sessions".into());
                    }
                    (Some(Cycle::Daily), None)
                }
                Some(Cycle::Weekly) => match start {
                    Some(start) => {
                        let day = weekday_of(start);
                        if explicit_day.is_some_and(|d| d != day) {
                            p.push(format!(
                                "recurringDayOfWeek must be the UTC weekday of startDateTime ({})",
                                weekday_name(day)
                            ));
                        }
                        (Some(Cycle::Weekly), Some(day))
                    }
                    // No start to derive it from: as given.
                    None => (Some(Cycle::Weekly), input.weekday.or_old(base_weekday)),
                },
            }
        }
    };
    if let (Some(c), Some(start), Some(end)) = (cycle, start, end) {
        if end - start > c.period_ms() {
            p.push(format!(
                "a {} session may not last longer than its period",
                c.as_str()
            ));
        }
    }
    if p.is_empty() {
        Ok((cycle, weekday))
    } else {
        Err(ScheduledError::fields(p))
    }
}

/// Paging of a list.
#[derive(Debug, Clone, Copy)]
struct Page {
    skip: u64,
    take: u64,
}

type QueryMap = std::collections::HashMap<String, String>;

fn page_of(q: &QueryMap, problems: &mut Vec<String>) -> Page {
    let mut number = |name: &str, default: u64, max: u64| match q.get(name) {
        None => default,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n <= max && s.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                problems.push(format!("{name} must be an integer between 0 and {max}"));
                default
            }
        },
    };
    Page {
        skip: number("skip", 0, u64::from(u32::MAX)),
        take: number("take", DEFAULT_TAKE, MAX_TAKE),
    }
}

fn paged<T>(items: Vec<T>, page: Page) -> impl Iterator<Item = T> {
    let skip = usize::try_from(page.skip).unwrap_or(usize::MAX);
    let take = usize::try_from(page.take).unwrap_or(usize::MAX);
    items.into_iter().skip(skip).take(take)
}

fn query_of(query: Result<Query<QueryMap>, QueryRejection>) -> Result<QueryMap, ScheduledError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| ScheduledError::bad("Malformed query string"))
}

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
fn admit(
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

// ---------------------------------------------------------------------------
// Handlers

async fn list_sessions(
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
    let data = paged(all, page).map(|s| session_view(&s)).collect();
    Ok(ok_page(data, page, count))
}

async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let s = visible_session(&state, &caller, id).await?;
    Ok(ok(session_view(&s)))
}

/// What a write under the locks answers, and how to undo it should a lease
/// turn out to have lapsed.
type Written = Result<(Response, Option<Undo>), ScheduledError>;

/// Runs `write` under the timeline's lock, and first under `user`'s lock when
/// given (in that order, always). `write` gets the timeline's live sessions,
/// the user's live sessions (when `user` is given) and whether both leases
/// are still fresh.
async fn under_lock<F, Fut>(
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
async fn release(state: &AppState, lock: store::Lock, result: Written) -> Written {
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
enum Undo {
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

async fn create_session(
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
            Ok((ok(session_view(&created)), Some(Undo::Insert(created.id))))
        },
    )
    .await
}

async fn update_session(
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
            Ok((ok(session_view(&saved)), Some(undo)))
        },
    )
    .await
}

async fn delete_session(
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
        Ok((ok(session_view(&saved)), None))
    })
    .await
}

async fn create_timeline(
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
    Ok(ok(timeline_view(&t)))
}

async fn list_timelines(
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
    let data = paged(all, page).map(|t| timeline_view(&t)).collect();
    Ok(ok_page(data, page, count))
}
