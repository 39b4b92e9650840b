//! anonymous-session-api.md: not served yet. This router is empty until the API is written.

use axum::Router;
use serde_json::{json, Value};

use crate::state::AppState;

/// This API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}

/// This API's OpenAPI `(paths, schemas)`.
#[must_use]
pub fn openapi() -> (Value, Value) {
    (json!({}), json!({}))
}
