//! session-auth-api.md: the `api/v1` users API of the well-known "Session
//! authentication" project, with cookie sessions kept in sessiond.
//!
//! - `GET /api/v1/status` -> `{"status":"OK"}` (public)
//! - `GET /api/v1/unauthorized` -> 401, `GET /api/v1/forbidden` -> 403 (public)
//! - `GET /api/v1/stats` -> `{"users":N}`
//! - `GET /api/v1/users` -> `[<user>]`; `POST /api/v1/users` (JSON `email`,
//!   `password`, `first_name`?, `last_name`?) -> 201 `<user>`
//! - `GET|PUT|DELETE /api/v1/users/:id` (`me`: the current user) ->
//!   `<user>` / `<user>` / `{}`
//! - `POST /api/v1/auth_session/login` (form fields `email`, `password`) ->
//!   `<user>` and the cookie `_my_session_id`
//! - `DELETE /api/v1/auth_session/logout` -> `{}` (404 `{}` without a session)
//!
//! `<user>` is the project's `to_json`: `id`, `email`, `first_name`,
//! `last_name`, `created_at`, `updated_at` (times as `%Y-%m-%dT%H:%M:%S`,
//! UTC); never the password. Errors are `{"error": "..."}` with the
//! project's messages. Every path also answers with a trailing slash (the
//! project's routes are `strict_slashes=False`).
//!
//! Access, as in the project: a route other than the public ones needs the
//! session cookie; without one it answers 401 `{"error":"Unauthorized"}`,
//! with one that names no live session 403 `{"error":"Forbidden"}`. Where
//! the project is silent (it lets every logged-in user do everything):
//! - administrators may do everything;
//! - other users may read, update and delete only themselves (`GET
//!   /api/v1/users` and `POST /api/v1/users` answer them 403); `stats` is
//!   open to every logged-in user;
//! - creating users is for administrators only, with no exception: the first
//!   administrator comes from `--admin-email`/`--admin-password` or
//!   `sessiond-http user add EMAIL --admin`. `POST /api/v1/users` also takes
//!   an optional boolean `is_admin`;
//! - `me` works in `PUT` and `DELETE` too;
//! - logout needs no valid session to be asked for: it answers 404 `{}`
//!   without one, and clears the cookie when it ends one;
//! - logins are throttled per email like the login API's (429
//!   `{"error":"Too many requests"}` with `Retry-After`);
//! - 413 `{"error":"Payload too large"}` for an oversized body, 503
//!   `{"error":"Service unavailable"}` when the daemon is unreachable.
//!
//! Sessions are sessiond records in [`NS`]: the cookie is the record's id,
//! the owner is the user id (so deleting a user ends every session of theirs
//! at once), sliding [`SESSION_IDLE`], capped at [`SESSION_MAX`]. A login
//! always gets a fresh server-made id (no session fixation) and ends the
//! session its request's cookie named, if any.

mod handlers;
mod input;
mod session;

use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value as JsonValue};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apis::common::{ApiError, Envelope, Failure};
use crate::apis::with_trailing_slash;
use crate::state::AppState;
use crate::users::UserError;

pub use session::{Admin, CurrentUser, SessionCookieName};

/// Namespace of the cookie sessions.
pub const NS: &str = "session_auth-sessions";
/// The session cookie's name (the project's `SESSION_NAME`).
pub const SESSION_COOKIE: &str = "_my_session_id";
/// A session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(24 * 3600);
/// A session never outlives this, however busy.
pub const SESSION_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most live sessions per user; a new one evicts the oldest.
pub const MAX_SESSIONS_PER_USER: u32 = 100;
/// Longest first or last name, in characters.
const MAX_NAME_CHARS: usize = 256;

/// This API's error envelope: `{"error": ...}`.
#[derive(Debug)]
pub struct SessionAuthApi;

impl Envelope for SessionAuthApi {
    const LOG: &'static str = "session auth store error";
    const STORE_FULL: &'static str = "Session store full";
    const UNAVAILABLE: &'static str = "Service unavailable";

    fn body(f: &Failure) -> JsonValue {
        json!(SessionAuthErrorBody {
            error: f.message.clone(),
        })
    }
}

/// `{"error": <message>}`: this API's error body, with the project's
/// messages (`Unauthorized`, `Forbidden`, `Not found`, `Wrong format`, ...).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SessionAuthError)]
pub struct SessionAuthErrorBody {
    /// What went wrong.
    pub error: String,
}

/// An error of this API.
pub type SessionAuthError = ApiError<SessionAuthApi>;

impl SessionAuthError {
    fn not_found() -> Self {
        Self::fail(StatusCode::NOT_FOUND, "Not found")
    }

    fn unauthorized() -> Self {
        Self::fail(StatusCode::UNAUTHORIZED, "Unauthorized")
    }

    fn forbidden() -> Self {
        Self::fail(StatusCode::FORBIDDEN, "Forbidden")
    }

    fn wrong_format() -> Self {
        Self::fail(StatusCode::BAD_REQUEST, "Wrong format")
    }

    fn too_large() -> Self {
        Self::fail(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large")
    }

    fn bad_request(message: &str) -> Self {
        Self::fail(StatusCode::BAD_REQUEST, message)
    }
}

impl From<UserError> for SessionAuthError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::NotFound => Self::not_found(),
            other => Self::directory(other, "session auth directory error"),
        }
    }
}

impl From<BytesRejection> for SessionAuthError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large()
        } else {
            Self::wrong_format()
        }
    }
}

type SessionAuthResult = Result<Response, SessionAuthError>;

/// This API's routes, each also with a trailing slash (the project's
/// routes are `strict_slashes=False`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(with_trailing_slash(routes!(handlers::status)))
        .routes(with_trailing_slash(routes!(handlers::unauthorized_route)))
        .routes(with_trailing_slash(routes!(handlers::forbidden_route)))
        .routes(with_trailing_slash(routes!(handlers::stats)))
        .routes(with_trailing_slash(routes!(
            handlers::list_users,
            handlers::create_user
        )))
        .routes(with_trailing_slash(routes!(
            handlers::get_user,
            handlers::update_user,
            handlers::delete_user
        )))
        .routes(with_trailing_slash(routes!(handlers::login)))
        .routes(with_trailing_slash(routes!(handlers::logout)))
}
