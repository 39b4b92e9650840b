//! anonymous-session-api.md: anonymous sessions (the Concept Visualizer's),
//! identified by the `concept_session` cookie, with usage statistics and
//! rate limits kept in sessiond.
//!
//! - `POST /api/session/` (and `/api/session`) `{"client_session_id"?}` -> 200
//!   `{session_id, is_new_session, created_at, last_active, usage_stats}`,
//!   `Set-Cookie: concept_session=<id>; Path=/; Max-Age=2592000; HttpOnly;
//!   SameSite=Lax` (`; Secure` in production).
//! - `POST /api/session/sync` `{"client_session_id"}` -> 200
//!   `{session_id, is_synced, message}` and the cookie set to that session.
//! - `GET /api/session/info` -> 200 `{session_id, created_at, last_active,
//!   usage_stats, rate_limits{concept_generation, concept_refinement}}`.
//! - `POST /api/session/usage/{operation}` (not in the document: the way a
//!   client records one use of `concept_generation`, `concept_refinement` or
//!   `concept_storage`) -> 200 `{session_id, operation, usage_stats,
//!   rate_limit}`, or 429 when the window's limit is reached.
//!
//! Where the document is silent:
//! - Errors use the body of the Concept Visualizer API:
//!   `{"detail": <message>, "status_code": <status>, "error_code": <code>}`
//!   (plus `field_errors: {<field>: [<message>]}` for a bad field): 400
//!   `validation_error` (malformed JSON, a `client_session_id` that is not a
//!   UUID, a malformed cookie on the routes that need it, an unknown
//!   operation), 404 `resource_not_found`, 413 `payload_too_large`, 429
//!   `rate_limit_exceeded`, 503 `service_unavailable`.
//! - Create-or-get prefers the body's `client_session_id` when it names a
//!   live session, then the cookie's session; otherwise it creates a new
//!   session with a server-generated id (a `client_session_id` that names no
//!   session is not adopted as an id: ids are generated server-side; the
//!   answer's `is_new_session` and `session_id` say what happened). An empty
//!   or absent body, `null` or `""` mean no client id. A malformed cookie is
//!   ignored there (it is replaced), so a browser never gets stuck.
//! - Sync adopts the client's id if it names a live session (200, the cookie
//!   now holds it, `is_synced` is true); otherwise 404 `resource_not_found`.
//! - Every answer that names a session sets the cookie again (its Max-Age
//!   follows the session's sliding 30-day idle expiry) and is
//!   `Cache-Control: no-store`; a 404 for the cookie's session clears it.
//! - Bodies are read as JSON whatever their `Content-Type`.
//! - Limits: [`GENERATION_LIMIT`] generations per [`GENERATION_WINDOW`],
//!   [`REFINEMENT_LIMIT`] refinements per [`REFINEMENT_WINDOW`], in fixed
//!   windows opened by the first use (the document's example has a monthly
//!   and a daily reset); storage is counted but not limited (the document
//!   lists no limit for it). `reset_at` of a window not yet opened is when it
//!   would end if opened now.
//!
//! Storage: one record per session in [`NS`], sliding idle expiry
//! [`SESSION_IDLE`]; lifetime counts in integer attributes, windows in the
//! daemon's windowed counters: the limit check and the count are one atomic
//! `Incr` (concurrent uses can never exceed a limit). The lifetime total is
//! a second atomic `Incr` after an allowed use.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value as JsonValue};
use sessiond_client::{CreateOptions, Error as ClientError, ErrorCode, Session, SessionId, Value};
use tracing::info;

use crate::apis::common::{ApiError, Cookie, CookieName, Envelope, Failure};
use crate::state::AppState;

/// Namespace of the anonymous sessions.
pub const NS: &str = "anonymous-sessions";
/// The session cookie.
pub const COOKIE: &str = "concept_session";
/// A session unused this long ends (and the cookie's Max-Age).
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Concept generations allowed per [`GENERATION_WINDOW`].
pub const GENERATION_LIMIT: i64 = 10;
/// The generation window.
pub const GENERATION_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// Concept refinements allowed per [`REFINEMENT_WINDOW`].
pub const REFINEMENT_LIMIT: i64 = 10;
/// The refinement window.
pub const REFINEMENT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The message of a successful sync.
const SYNCED: &str = "Sessions synchronized successfully";

/// An operation whose uses are counted (and, for some, limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Generation,
    Refinement,
    Storage,
}

impl Operation {
    const ALL: [Self; 3] = [Self::Generation, Self::Refinement, Self::Storage];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The name in paths and in `rate_limits`.
    fn name(self) -> &'static str {
        match self {
            Self::Generation => "concept_generation",
            Self::Refinement => "concept_refinement",
            Self::Storage => "concept_storage",
        }
    }

    /// The lifetime count's attribute, also its name in `usage_stats`.
    fn stat(self) -> &'static str {
        match self {
            Self::Generation => "concepts_generated",
            Self::Refinement => "concepts_refined",
            Self::Storage => "concepts_stored",
        }
    }

    /// The windowed counter's attribute.
    fn window_attr(self) -> &'static str {
        match self {
            Self::Generation => "window:concept_generation",
            Self::Refinement => "window:concept_refinement",
            Self::Storage => "window:concept_storage",
        }
    }

    /// The limit and its window, if limited.
    fn limit(self) -> Option<(i64, Duration)> {
        match self {
            Self::Generation => Some((GENERATION_LIMIT, GENERATION_WINDOW)),
            Self::Refinement => Some((REFINEMENT_LIMIT, REFINEMENT_WINDOW)),
            Self::Storage => None,
        }
    }
}

/// This API's error envelope: `{"detail", "status_code", "error_code"}`,
/// plus `field_errors: {<field>: [<detail>]}` for a bad field.
#[derive(Debug)]
pub struct AnonymousApi;

impl Envelope for AnonymousApi {
    const LOG: &'static str = "anonymous session store error";
    const STORE_FULL: &'static str = "Session store is full";
    const UNAVAILABLE: &'static str = "Session service unavailable";

    fn body(f: &Failure) -> JsonValue {
        let mut body = json!({
            "detail": f.message,
            "status_code": f.status.as_u16(),
            "error_code": f.code,
        });
        if let Some(field) = f.field {
            body["field_errors"] = json!({ field: [f.message] });
        }
        body
    }
}

/// An error of this API.
pub type AnonError = ApiError<AnonymousApi>;

type AnonResult = Result<Response, AnonError>;

impl AnonError {
    fn validation(detail: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_error", detail)
    }

    fn field_error(field: &'static str, message: &str) -> Self {
        Self::validation(message).on_field(field)
    }

    /// 404 for the cookie's session; the dead cookie is cleared.
    fn session_gone(state: &AppState) -> Self {
        let cookie = format!(
            "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
            secure(state)
        );
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "Session not found or expired: create one with POST /api/session/",
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            e = e.header(header::SET_COOKIE, v);
        }
        e
    }

    /// A store error, where `NotFound` means the cookie's session is gone.
    fn on_session(state: &AppState, e: &ClientError) -> Self {
        if e.code() == Some(ErrorCode::NotFound) {
            Self::session_gone(state)
        } else {
            e.into()
        }
    }
}

impl From<BytesRejection> for AnonError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request body too large",
            )
        } else {
            Self::validation("Cannot read the request body")
        }
    }
}

/// `; Secure` in production.
fn secure(state: &AppState) -> &'static str {
    if state.config.production {
        "; Secure"
    } else {
        ""
    }
}

/// The name of this API's session cookie.
#[derive(Debug)]
pub struct ConceptCookieName;

impl CookieName for ConceptCookieName {
    const NAME: &'static str = COOKIE;
}

/// The request's `concept_session` cookie, if any.
type ConceptCookie = Cookie<ConceptCookieName>;

/// The cookie's session id, or the answer for a request without one.
fn required_cookie(state: &AppState, cookie: ConceptCookie) -> Result<SessionId, AnonError> {
    let Some(value) = cookie.value else {
        return Err(AnonError::session_gone(state));
    };
    value.parse().map_err(|_| {
        AnonError::field_error(
            COOKIE,
            "Invalid session ID format: the concept_session cookie must be a UUID",
        )
    })
}

/// Adds the session cookie and `Cache-Control: no-store` (the body names the
/// session, a bearer secret).
fn cookie_headers(state: &AppState, id: SessionId, h: &mut HeaderMap) {
    let cookie = format!(
        "{COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        SESSION_IDLE.as_secs(),
        secure(state)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.append(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `r` with the session cookie (see [`cookie_headers`]).
fn with_cookie(state: &AppState, id: SessionId, mut r: Response) -> Response {
    cookie_headers(state, id, r.headers_mut());
    r
}

/// `2023-04-01T12:34:56Z`, the document's format.
fn timestamp(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or_else(String::new, |t| {
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        })
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn usage_stats(s: &Session) -> JsonValue {
    let mut stats = serde_json::Map::new();
    for op in Operation::ALL {
        let n = match s.attr(op.stat()) {
            Some(Value::Int(n)) => *n,
            _ => 0,
        };
        stats.insert(op.stat().to_owned(), json!(n));
    }
    JsonValue::Object(stats)
}

/// `{limit, remaining, reset_at}` of a limited operation, read without
/// counting. A window not opened yet (or over) is full, and would end a
/// window's length from now.
fn rate_limit(s: &Session, op: Operation, limit: i64, window: Duration, now: u64) -> JsonValue {
    let (used, reset_at) = match s.attr(op.window_attr()) {
        Some(Value::Counter { value, reset_at_ms }) if *reset_at_ms > now => (*value, *reset_at_ms),
        _ => (0, now.saturating_add(millis(window))),
    };
    json!({
        "limit": limit,
        "remaining": limit.saturating_sub(used).max(0),
        "reset_at": timestamp(reset_at),
    })
}

/// The create-or-get answer.
fn session_reply(state: &AppState, s: &Session, is_new: bool) -> Response {
    let body = json!({
        "session_id": s.id.to_string(),
        "is_new_session": is_new,
        "created_at": timestamp(s.created_at_ms),
        "last_active": timestamp(s.last_active_ms),
        "usage_stats": usage_stats(s),
    });
    with_cookie(state, s.id, Json(body).into_response())
}

/// The `client_session_id` of a JSON body. Absent, `null` and `""` are
/// `None` unless `required`.
fn client_session_id(body: &[u8], required: bool) -> Result<Option<SessionId>, AnonError> {
    const FIELD: &str = "client_session_id";
    let missing = || {
        if required {
            Err(AnonError::field_error(
                FIELD,
                "client_session_id is required",
            ))
        } else {
            Ok(None)
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return missing();
    }
    let Ok(v) = serde_json::from_slice::<JsonValue>(body) else {
        return Err(AnonError::validation("The request body is not valid JSON"));
    };
    let obj = match v {
        JsonValue::Object(obj) => obj,
        JsonValue::Null => return missing(),
        _ => {
            return Err(AnonError::validation(
                "The request body must be a JSON object",
            ))
        }
    };
    match obj.get(FIELD) {
        None | Some(JsonValue::Null) => missing(),
        Some(JsonValue::String(s)) if s.is_empty() => missing(),
        Some(JsonValue::String(s)) => s.parse().map(Some).map_err(|_| {
            AnonError::field_error(
                FIELD,
                "Invalid session ID format: client_session_id must be a UUID",
            )
        }),
        Some(_) => Err(AnonError::field_error(
            FIELD,
            "client_session_id must be a string",
        )),
    }
}

/// `POST /api/session/`.
async fn create_or_get(
    State(state): State<AppState>,
    cookie: ConceptCookie,
    body: Result<Bytes, BytesRejection>,
) -> AnonResult {
    let requested = client_session_id(&body?, false)?;
    let client = &state.client;
    // The client's id first (it asked for it), then the cookie's session.
    let cookie = cookie
        .value
        .and_then(|v| v.parse::<SessionId>().ok())
        .filter(|c| Some(*c) != requested);
    for id in requested.into_iter().chain(cookie) {
        if let Some(s) = client.get_and_touch(NS, id).await? {
            return Ok(session_reply(&state, &s, false));
        }
    }
    let s = client
        .create(NS, CreateOptions::new().idle_ttl(SESSION_IDLE))
        .await?;
    info!("anonymous session created");
    Ok(session_reply(&state, &s, true))
}

/// `POST /api/session/sync`.
async fn sync(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> AnonResult {
    let Some(id) = client_session_id(&body?, true)? else {
        return Err(AnonError::field_error(
            "client_session_id",
            "client_session_id is required",
        ));
    };
    let Some(s) = state.client.get_and_touch(NS, id).await? else {
        return Err(AnonError::new(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "Session not found or expired",
        ));
    };
    let body = json!({"session_id": s.id.to_string(), "is_synced": true, "message": SYNCED});
    Ok(with_cookie(&state, s.id, Json(body).into_response()))
}

/// `GET /api/session/info`.
async fn session_info(State(state): State<AppState>, cookie: ConceptCookie) -> AnonResult {
    let id = required_cookie(&state, cookie)?;
    let Some(s) = state.client.get_and_touch(NS, id).await? else {
        return Err(AnonError::session_gone(&state));
    };
    let now = now_ms();
    let mut limits = serde_json::Map::new();
    for op in Operation::ALL {
        if let Some((limit, window)) = op.limit() {
            limits.insert(op.name().to_owned(), rate_limit(&s, op, limit, window, now));
        }
    }
    let body = json!({
        "session_id": s.id.to_string(),
        "created_at": timestamp(s.created_at_ms),
        "last_active": timestamp(s.last_active_ms),
        "usage_stats": usage_stats(&s),
        "rate_limits": limits,
    });
    Ok(with_cookie(&state, s.id, Json(body).into_response()))
}

/// `POST /api/session/usage/{operation}`.
async fn record_use(
    State(state): State<AppState>,
    cookie: ConceptCookie,
    operation: Result<Path<String>, PathRejection>,
) -> AnonResult {
    let op = match operation {
        Ok(Path(name)) => Operation::parse(&name),
        Err(_) => None,
    };
    let Some(op) = op else {
        return Err(AnonError::field_error(
            "operation",
            "Unknown operation: expected concept_generation, concept_refinement or concept_storage",
        ));
    };
    let id = required_cookie(&state, cookie)?;
    let client = &state.client;
    let mut window = None;
    if let Some((limit, length)) = op.limit() {
        // The check and the count are one atomic step in the daemon.
        let r = client
            .incr_window(NS, id, op.window_attr(), 1, length, limit)
            .await
            .map_err(|e| AnonError::on_session(&state, &e))?;
        let reset_at = r
            .reset_at_ms
            .unwrap_or_else(|| now_ms().saturating_add(millis(length)));
        if !r.allowed {
            info!(operation = op.name(), "anonymous session rate limited");
            return Err(limited(&state, id, op, limit, reset_at));
        }
        window = Some((limit, r.remaining.unwrap_or(0), reset_at));
    }
    client
        .incr(NS, id, op.stat(), 1)
        .await
        .map_err(|e| AnonError::on_session(&state, &e))?;
    let Some(s) = client.get_and_touch(NS, id).await? else {
        return Err(AnonError::session_gone(&state));
    };
    let rate_limit = window.map_or(JsonValue::Null, |(limit, remaining, reset_at)| {
        json!({"limit": limit, "remaining": remaining, "reset_at": timestamp(reset_at)})
    });
    let body = json!({
        "session_id": s.id.to_string(),
        "operation": op.name(),
        "usage_stats": usage_stats(&s),
        "rate_limit": rate_limit,
    });
    let mut r = with_cookie(&state, s.id, Json(body).into_response());
    if let Some((limit, remaining, reset_at)) = window {
        rate_headers(r.headers_mut(), limit, remaining, reset_at);
    }
    Ok(r)
}

fn rate_headers(h: &mut HeaderMap, limit: i64, remaining: i64, reset_at_ms: u64) {
    h.insert("x-ratelimit-limit", HeaderValue::from(limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset_at_ms / 1000));
}

/// The 429 answer: `Retry-After` in whole seconds (at least 1).
fn limited(state: &AppState, id: SessionId, op: Operation, limit: i64, reset_at: u64) -> AnonError {
    let wait = reset_at.saturating_sub(now_ms()).div_ceil(1000).max(1);
    let detail = format!(
        "Rate limit exceeded for {}: {limit} per window; the window resets at {}",
        op.name(),
        timestamp(reset_at)
    );
    let mut e = AnonError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", detail);
    let h = e.headers_mut();
    cookie_headers(state, id, h);
    h.insert(header::RETRY_AFTER, HeaderValue::from(wait));
    rate_headers(h, limit, 0, reset_at);
    e
}

/// This API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/session/", post(create_or_get))
        .route("/api/session", post(create_or_get))
        .route("/api/session/sync", post(sync))
        .route("/api/session/info", get(session_info))
        .route("/api/session/usage/{operation}", post(record_use))
}

fn error_response(description: &str) -> JsonValue {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AnonError"}}}
    })
}

/// A 200 that sets the session cookie.
fn cookie_response(description: &str, schema: &str) -> JsonValue {
    json!({
        "description": description,
        "headers": {
            "Set-Cookie": {
                "description": "`concept_session=<session id>; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax` (`; Secure` in production)",
                "schema": {"type": "string"}
            },
            "Cache-Control": {"schema": {"type": "string", "enum": ["no-store"]}}
        },
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

/// This API's OpenAPI `(paths, schemas)`.
#[must_use]
pub fn openapi() -> (JsonValue, JsonValue) {
    let cookie_param = json!({
        "name": COOKIE, "in": "cookie", "required": false,
        "description": "The session id (a UUID) set by POST /api/session/",
        "schema": {"type": "string"}
    });
    let create = json!({
        "summary": "Create a session, or return the client's or the cookie's (anonymous-session-api)",
        "tags": ["anonymous"],
        "parameters": [cookie_param],
        "requestBody": {"required": false, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/AnonCreateRequest"}}}},
        "responses": {
            "200": cookie_response("the session (is_new_session says whether it was just created)", "AnonSession"),
            "400": error_response("malformed JSON, or client_session_id is not a UUID (validation_error)"),
            "413": error_response("body too large (payload_too_large)"),
            "503": error_response("the session store is unreachable (service_unavailable)")
        }
    });
    let rate_limited = json!({
        "description": "the operation's limit is reached in this window (rate_limit_exceeded)",
        "headers": {
            "Retry-After": {"description": "seconds until the window resets", "schema": {"type": "integer"}},
            "X-RateLimit-Limit": {"schema": {"type": "integer"}},
            "X-RateLimit-Remaining": {"schema": {"type": "integer"}},
            "X-RateLimit-Reset": {"description": "Unix seconds", "schema": {"type": "integer"}}
        },
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AnonError"}}}
    });
    let paths = json!({
        "/api/session/": {"post": create.clone()},
        "/api/session": {"post": create},
        "/api/session/sync": {"post": {
            "summary": "Adopt a client-held session id: the cookie is set to it",
            "tags": ["anonymous"],
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/AnonSyncRequest"}}}},
            "responses": {
                "200": cookie_response("synchronized", "AnonSync"),
                "400": error_response("malformed JSON, client_session_id missing or not a UUID (validation_error)"),
                "404": error_response("no live session has that id (resource_not_found)"),
                "413": error_response("body too large (payload_too_large)"),
                "503": error_response("the session store is unreachable (service_unavailable)")
            }
        }},
        "/api/session/info": {"get": {
            "summary": "The cookie's session: usage statistics and rate limits",
            "tags": ["anonymous"],
            "parameters": [cookie_param],
            "responses": {
                "200": cookie_response("the session", "AnonSessionInfo"),
                "400": error_response("the cookie is not a UUID (validation_error)"),
                "404": error_response("no cookie, or its session has expired (resource_not_found; the cookie is cleared)"),
                "503": error_response("the session store is unreachable (service_unavailable)")
            }
        }},
        "/api/session/usage/{operation}": {"post": {
            "summary": "Record one use of an operation by the cookie's session, within its rate limit",
            "description": "concept_generation and concept_refinement are limited per fixed window (the limit check and the count are atomic); concept_storage is counted only.",
            "tags": ["anonymous"],
            "parameters": [
                {"name": "operation", "in": "path", "required": true,
                 "schema": {"type": "string", "enum": ["concept_generation", "concept_refinement", "concept_storage"]}},
                cookie_param
            ],
            "responses": {
                "200": {
                    "description": "counted",
                    "headers": {
                        "X-RateLimit-Limit": {"description": "limited operations only", "schema": {"type": "integer"}},
                        "X-RateLimit-Remaining": {"schema": {"type": "integer"}},
                        "X-RateLimit-Reset": {"description": "Unix seconds", "schema": {"type": "integer"}},
                        "Set-Cookie": {"schema": {"type": "string"}}
                    },
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AnonUsage"}}}
                },
                "400": error_response("unknown operation, or the cookie is not a UUID (validation_error)"),
                "404": error_response("no cookie, or its session has expired (resource_not_found)"),
                "429": rate_limited,
                "503": error_response("the session store is unreachable (service_unavailable)")
            }
        }}
    });
    let stats = json!({
        "type": "object",
        "required": ["concepts_generated", "concepts_refined", "concepts_stored"],
        "properties": {
            "concepts_generated": {"type": "integer", "minimum": 0},
            "concepts_refined": {"type": "integer", "minimum": 0},
            "concepts_stored": {"type": "integer", "minimum": 0}
        }
    });
    let timestamp = json!({"type": "string", "format": "date-time"});
    let schemas = json!({
        "AnonCreateRequest": {"type": "object", "properties": {
            "client_session_id": {"type": "string", "format": "uuid", "nullable": true,
                "description": "A session id held by the client (UUID); adopted if it names a live session"}}},
        "AnonSyncRequest": {"type": "object", "required": ["client_session_id"], "properties": {
            "client_session_id": {"type": "string", "format": "uuid"}}},
        "AnonUsageStats": stats,
        "AnonRateLimit": {"type": "object", "required": ["limit", "remaining", "reset_at"], "properties": {
            "limit": {"type": "integer"},
            "remaining": {"type": "integer", "minimum": 0},
            "reset_at": timestamp}},
        "AnonSession": {"type": "object",
            "required": ["session_id", "is_new_session", "created_at", "last_active", "usage_stats"],
            "properties": {
                "session_id": {"type": "string", "format": "uuid"},
                "is_new_session": {"type": "boolean"},
                "created_at": timestamp,
                "last_active": timestamp,
                "usage_stats": {"$ref": "#/components/schemas/AnonUsageStats"}}},
        "AnonSync": {"type": "object", "required": ["session_id", "is_synced", "message"], "properties": {
            "session_id": {"type": "string", "format": "uuid"},
            "is_synced": {"type": "boolean"},
            "message": {"type": "string"}}},
        "AnonSessionInfo": {"type": "object",
            "required": ["session_id", "created_at", "last_active", "usage_stats", "rate_limits"],
            "properties": {
                "session_id": {"type": "string", "format": "uuid"},
                "created_at": timestamp,
                "last_active": timestamp,
                "usage_stats": {"$ref": "#/components/schemas/AnonUsageStats"},
                "rate_limits": {"type": "object",
                    "required": ["concept_generation", "concept_refinement"],
                    "properties": {
                        "concept_generation": {"$ref": "#/components/schemas/AnonRateLimit"},
                        "concept_refinement": {"$ref": "#/components/schemas/AnonRateLimit"}}}}},
        "AnonUsage": {"type": "object",
            "required": ["session_id", "operation", "usage_stats", "rate_limit"],
            "properties": {
                "session_id": {"type": "string", "format": "uuid"},
                "operation": {"type": "string", "enum": ["concept_generation", "concept_refinement", "concept_storage"]},
                "usage_stats": {"$ref": "#/components/schemas/AnonUsageStats"},
                "rate_limit": {"type": "object", "nullable": true,
                    "description": "the window after this use; null for an operation without a limit",
                    "required": ["limit", "remaining", "reset_at"], "properties": {
                        "limit": {"type": "integer"},
                        "remaining": {"type": "integer", "minimum": 0},
                        "reset_at": timestamp}}}},
        "AnonError": {"type": "object", "required": ["detail", "status_code", "error_code"], "properties": {
            "detail": {"type": "string"},
            "status_code": {"type": "integer"},
            "error_code": {"type": "string", "enum": [
                "validation_error", "resource_not_found", "payload_too_large",
                "rate_limit_exceeded", "service_unavailable"]},
            "field_errors": {"type": "object", "additionalProperties": {
                "type": "array", "items": {"type": "string"}}}}}
    });
    (paths, schemas)
}
