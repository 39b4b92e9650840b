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
mod handlers;
mod input;
pub mod schedule;
pub mod store;
mod views;
mod write;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apis::common::{ApiError, Envelope, Failure};
use crate::state::AppState;
use bearer::{AuthError, Caller};
use store::StoreError;

/// Default page size of the lists.
pub const DEFAULT_TAKE: u64 = 10;
/// Largest page size of the lists.
pub const MAX_TAKE: u64 = 100;
/// Longest name, in characters.
const MAX_NAME: usize = 255;
/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 4000;

/// This API's routes, with their OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::list_sessions, handlers::create_session))
        .routes(routes!(
            handlers::get_session,
            handlers::update_session,
            handlers::delete_session
        ))
        .routes(routes!(handlers::list_timelines, handlers::create_timeline))
}

/// This API's error body: `{"statusCode", "message", "error"}` (NestJS).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScheduledError)]
pub struct ScheduledErrorBody {
    /// The status code.
    status_code: u16,
    #[schema(inline)]
    message: ErrorMessage,
    /// The status code's reason phrase.
    error: &'static str,
}

/// What went wrong: one message, or one per problem when input fields are
/// invalid.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorMessage {
    /// One message.
    One(String),
    /// One message per problem (invalid input fields).
    Many(Vec<String>),
}

/// This API's error envelope: `{"statusCode", "message", "error"}`, with
/// `WWW-Authenticate: Bearer` on a 401.
#[derive(Debug)]
pub struct ScheduledApi;

impl Envelope for ScheduledApi {
    const LOG: &'static str = "scheduled sessions: store error";
    const STORE_FULL: &'static str = "The session store is full, retry later";
    const UNAVAILABLE: &'static str = "The session store is unavailable, retry later";

    fn body(f: &Failure) -> Value {
        json!(ScheduledErrorBody {
            status_code: f.status.as_u16(),
            message: f.list.as_ref().map_or_else(
                || ErrorMessage::One(f.message.clone()),
                |l| ErrorMessage::Many(l.clone()),
            ),
            error: f.status.canonical_reason().unwrap_or("Error"),
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
