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

use axum::Router;
use serde_json::Value;

use crate::state::AppState;

pub mod anonymous;
pub mod cache;
pub mod login;
pub mod scheduled;
pub mod session_auth;

/// Every API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(login::routes())
        .merge(anonymous::routes())
        .merge(cache::routes())
        .merge(scheduled::routes())
        .merge(session_auth::routes())
}

/// Every API's OpenAPI `(paths, schemas)`.
#[must_use]
pub fn openapi_parts() -> Vec<(Value, Value)> {
    vec![
        login::openapi(),
        anonymous::openapi(),
        cache::openapi(),
        scheduled::openapi(),
        session_auth::openapi(),
    ]
}

/// Whether a client error means the daemon is unreachable or busy: such
/// failures answer 503, never 500.
#[must_use]
pub fn daemon_unavailable(e: &sessiond_client::Error) -> bool {
    e.is_retryable()
}
