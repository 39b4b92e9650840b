//! One module per reference document in `shared/reference/`, each serving its
//! paths with its own request/response shapes and error format:
//! - [`login`]: login-session-api.md (`POST /session`, refresh, logout).
//! - [`anonymous`]: anonymous-session-api.md (`/api/session/...`).
//! - [`cache`]: user-session-cache-api.md (`GET /session?user_id=`, `/verify`, `/create`).
//! - [`scheduled`]: scheduled-sessions-api.md (`/sessions`, `/timelines`).
//! - [`session_auth`]: session-auth-api.md (`/api/v1/...`).
//!
//! Two documents share the path `/session` (GET in the cache API, POST and
//! DELETE in the login API); no two share a method and path.

use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::state::AppState;

pub mod anonymous;
pub mod cache;
pub mod common;
pub mod login;
pub mod scheduled;
pub mod session_auth;

/// Every API's routes, each with its OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(login::routes())
        .merge(anonymous::routes())
        .merge(cache::routes())
        .merge(scheduled::routes())
        .merge(session_auth::routes())
}

/// `routes` served (and described) at their documented path and at the
/// same path with a trailing slash; the alias's operations get their own
/// `operationId` (`<id>_slash`).
pub fn with_trailing_slash(
    (schemas, mut paths, method_router): UtoipaMethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    let aliases: Vec<_> = paths
        .paths
        .iter()
        .filter(|(path, _)| !path.ends_with('/'))
        .map(|(path, item)| {
            let mut item = item.clone();
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                op.operation_id = op.operation_id.as_ref().map(|id| format!("{id}_slash"));
            }
            (format!("{path}/"), item)
        })
        .collect();
    paths.paths.extend(aliases);
    (schemas, paths, method_router)
}

/// An error answered before any handler ran (by the guard), in the
/// envelope of the API `method path` belongs to; outside them
/// `{"error": code, "message": message}`.
#[must_use]
pub fn error_for_path(
    method: &axum::http::Method,
    path: &str,
    status: axum::http::StatusCode,
    code: &str,
    message: &str,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if under("/api/session") {
        anonymous::AnonError::new(status, code.to_owned(), message).into_response()
    } else if under("/api/v1") {
        // This API's errors are short phrases.
        let phrase = match status.as_u16() {
            404 => "Not found",
            405 => "Method not allowed",
            413 => "Payload too large",
            429 => "Too many requests",
            _ => message,
        };
        session_auth::SessionAuthError::fail(status, phrase).into_response()
    } else if under("/sessions") || under("/timelines") {
        scheduled::ScheduledError::fail(status, message).into_response()
    } else if path == "/verify"
        || path == "/create"
        || (path == "/session" && method == Method::GET)
    {
        cache::CacheError::fail(status, message).into_response()
    } else if under("/session") {
        login::LoginError::fail(status, message).into_response()
    } else {
        (
            status,
            axum::Json(serde_json::json!({"error": code, "message": message})),
        )
            .into_response()
    }
}

/// Whether a client error means the daemon is unreachable or busy: such
/// failures answer 503, never 500 (a full store answers 507 instead, see
/// [`store_full`]).
#[must_use]
pub fn daemon_unavailable(e: &sessiond_client::Error) -> bool {
    e.is_retryable()
}

/// Whether the store refused a write because it is at its memory limit:
/// answered `507 Insufficient Storage`, not 503 (the daemon is up and reads
/// work; it is full).
#[must_use]
pub fn store_full(e: &sessiond_client::Error) -> bool {
    e.code() == Some(sessiond_client::ErrorCode::OutOfMemory)
}
