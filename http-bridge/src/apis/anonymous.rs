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

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value as JsonValue};
use sessiond_client::{CreateOptions, Error as ClientError, ErrorCode, Session, SessionId, Value};
use tracing::info;

use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apis::common::{ApiError, Cookie, CookieName, Envelope, Failure};
use crate::apis::with_trailing_slash;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum Operation {
    /// A concept generation (limited).
    #[serde(rename = "concept_generation")]
    Generation,
    /// A concept refinement (limited).
    #[serde(rename = "concept_refinement")]
    Refinement,
    /// A concept stored (counted only).
    #[serde(rename = "concept_storage")]
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
        json!(AnonErrorBody {
            detail: f.message.clone(),
            status_code: f.status.as_u16(),
            error_code: f.code.to_string(),
            field_errors: f
                .field
                .map(|field| BTreeMap::from([(field.to_owned(), vec![f.message.clone()])])),
        })
    }
}

/// This API's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnonErrorBody {
    /// What went wrong.
    detail: String,
    /// The status code, again.
    status_code: u16,
    /// `validation_error`, `resource_not_found`, `payload_too_large`,
    /// `rate_limit_exceeded`, `service_unavailable` (or, for an answer given
    /// before the handler, the status's reason in snake case).
    error_code: String,
    /// For a bad field: its name and what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    field_errors: Option<BTreeMap<String, Vec<String>>>,
}

/// Lifetime counts of a session's operations.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageStats {
    /// Concepts generated.
    #[schema(minimum = 0)]
    concepts_generated: i64,
    /// Concepts refined.
    #[schema(minimum = 0)]
    concepts_refined: i64,
    /// Concepts stored.
    #[schema(minimum = 0)]
    concepts_stored: i64,
}

/// A limited operation's window.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimit {
    /// Uses allowed per window.
    limit: i64,
    /// Uses left in this window.
    #[schema(minimum = 0)]
    remaining: i64,
    /// When the window resets (or would, if opened now).
    #[schema(format = DateTime)]
    reset_at: String,
}

/// The windows of the limited operations.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimits {
    /// Concept generations.
    concept_generation: RateLimit,
    /// Concept refinements.
    concept_refinement: RateLimit,
}

/// The create-or-get answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnonSession {
    /// The session id (also in the cookie).
    #[schema(format = Uuid)]
    session_id: String,
    /// Whether the session was just created.
    is_new_session: bool,
    /// When the session was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When the session was last used.
    #[schema(format = DateTime)]
    last_active: String,
    /// Lifetime counts.
    usage_stats: UsageStats,
}

/// The sync answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnonSync {
    /// The session id now in the cookie.
    #[schema(format = Uuid)]
    session_id: String,
    /// Always `true` (a session that is not live is a 404).
    is_synced: bool,
    /// `Sessions synchronized successfully`.
    message: &'static str,
}

/// The cookie's session, with its windows.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnonSessionInfo {
    /// The session id.
    #[schema(format = Uuid)]
    session_id: String,
    /// When the session was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When the session was last used.
    #[schema(format = DateTime)]
    last_active: String,
    /// Lifetime counts.
    usage_stats: UsageStats,
    /// The limited operations' windows.
    rate_limits: RateLimits,
}

/// The answer to a recorded use.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnonUsage {
    /// The session id.
    #[schema(format = Uuid)]
    session_id: String,
    /// The operation counted.
    operation: Operation,
    /// Lifetime counts, this use included.
    usage_stats: UsageStats,
    /// The window after this use; null for an operation without a limit.
    rate_limit: Option<RateLimit>,
}

/// The body of a create-or-get (optional).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct AnonCreateRequest {
    /// A session id held by the client (UUID); adopted if it names a live
    /// session. Absent, `null` or `""`: none.
    #[schema(format = Uuid)]
    client_session_id: Option<String>,
}

/// The body of a sync.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct AnonSyncRequest {
    /// The session id held by the client.
    #[schema(format = Uuid)]
    client_session_id: String,
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

fn usage_stats(s: &Session) -> UsageStats {
    let count = |op: Operation| match s.attr(op.stat()) {
        Some(Value::Int(n)) => *n,
        _ => 0,
    };
    UsageStats {
        concepts_generated: count(Operation::Generation),
        concepts_refined: count(Operation::Refinement),
        concepts_stored: count(Operation::Storage),
    }
}

/// `{limit, remaining, reset_at}` of a limited operation, read without
/// counting. A window not opened yet (or over) is full, and would end a
/// window's length from now.
fn rate_limit(s: &Session, op: Operation, limit: i64, window: Duration, now: u64) -> RateLimit {
    let (used, reset_at) = match s.attr(op.window_attr()) {
        Some(Value::Counter { value, reset_at_ms }) if *reset_at_ms > now => (*value, *reset_at_ms),
        _ => (0, now.saturating_add(millis(window))),
    };
    RateLimit {
        limit,
        remaining: limit.saturating_sub(used).max(0),
        reset_at: timestamp(reset_at),
    }
}

/// The create-or-get answer.
fn session_reply(state: &AppState, s: &Session, is_new: bool) -> Response {
    let body = AnonSession {
        session_id: s.id.to_string(),
        is_new_session: is_new,
        created_at: timestamp(s.created_at_ms),
        last_active: timestamp(s.last_active_ms),
        usage_stats: usage_stats(s),
    };
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

/// Create a session, or return the client's or the cookie's
///
/// The body's `client_session_id` first when it names a live session, then
/// the cookie's session; otherwise a new session (its id generated here).
#[utoipa::path(post, path = "/api/session", tag = "anonymous",
    params(("concept_session" = Option<String>, Cookie, description = "The session id (a UUID) set by POST /api/session/")),
    request_body(content = Option<AnonCreateRequest>, description = "Optional; read as JSON whatever its Content-Type"),
    responses(
        (status = 200, description = "the session (is_new_session says whether it was just created)", body = AnonSession,
            headers(("Set-Cookie" = String, description = "`concept_session=<session id>; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax` (`; Secure` in production)"), ("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "malformed JSON, or client_session_id is not a UUID (validation_error)", body = AnonErrorBody),
        (status = 413, description = "body too large (payload_too_large)", body = AnonErrorBody),
        (status = 503, description = "the session store is unreachable (service_unavailable)", body = AnonErrorBody),
    ))]
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

/// Adopt a client-held session id: the cookie is set to it
#[utoipa::path(post, path = "/api/session/sync", tag = "anonymous",
    request_body = AnonSyncRequest,
    responses(
        (status = 200, description = "synchronized", body = AnonSync, headers(("Set-Cookie" = String, description = "`concept_session=<session id>; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax` (`; Secure` in production)"), ("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "malformed JSON, client_session_id missing or not a UUID (validation_error)", body = AnonErrorBody),
        (status = 404, description = "no live session has that id (resource_not_found)", body = AnonErrorBody),
        (status = 413, description = "body too large (payload_too_large)", body = AnonErrorBody),
        (status = 503, description = "the session store is unreachable (service_unavailable)", body = AnonErrorBody),
    ))]
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
    let body = AnonSync {
        session_id: s.id.to_string(),
        is_synced: true,
        message: SYNCED,
    };
    Ok(with_cookie(&state, s.id, Json(body).into_response()))
}

/// The cookie's session: usage statistics and rate limits
#[utoipa::path(get, path = "/api/session/info", tag = "anonymous",
    params(("concept_session" = Option<String>, Cookie, description = "The session id (a UUID) set by POST /api/session/")),
    responses(
        (status = 200, description = "the session", body = AnonSessionInfo, headers(("Set-Cookie" = String, description = "`concept_session=<session id>; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax` (`; Secure` in production)"), ("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "the cookie is not a UUID (validation_error)", body = AnonErrorBody),
        (status = 404, description = "no cookie, or its session has expired (resource_not_found; the cookie is cleared)", body = AnonErrorBody),
        (status = 503, description = "the session store is unreachable (service_unavailable)", body = AnonErrorBody),
    ))]
async fn session_info(State(state): State<AppState>, cookie: ConceptCookie) -> AnonResult {
    let id = required_cookie(&state, cookie)?;
    let Some(s) = state.client.get_and_touch(NS, id).await? else {
        return Err(AnonError::session_gone(&state));
    };
    let now = now_ms();
    let body = AnonSessionInfo {
        session_id: s.id.to_string(),
        created_at: timestamp(s.created_at_ms),
        last_active: timestamp(s.last_active_ms),
        usage_stats: usage_stats(&s),
        rate_limits: RateLimits {
            concept_generation: rate_limit(
                &s,
                Operation::Generation,
                GENERATION_LIMIT,
                GENERATION_WINDOW,
                now,
            ),
            concept_refinement: rate_limit(
                &s,
                Operation::Refinement,
                REFINEMENT_LIMIT,
                REFINEMENT_WINDOW,
                now,
            ),
        },
    };
    Ok(with_cookie(&state, s.id, Json(body).into_response()))
}

/// Record one use of an operation by the cookie's session, within its rate limit
///
/// concept_generation and concept_refinement are limited per fixed window
/// (the limit check and the count are atomic); concept_storage is counted
/// only.
#[utoipa::path(post, path = "/api/session/usage/{operation}", tag = "anonymous",
    params(
        ("operation" = inline(Operation), Path, description = "The operation"),
        ("concept_session" = Option<String>, Cookie, description = "The session id (a UUID) set by POST /api/session/"),
    ),
    responses(
        (status = 200, description = "counted", body = AnonUsage, headers(
            ("X-RateLimit-Limit" = i64, description = "limited operations only"),
            ("X-RateLimit-Remaining" = i64),
            ("X-RateLimit-Reset" = u64, description = "Unix seconds"),
            ("Set-Cookie" = String),
        )),
        (status = 400, description = "unknown operation, or the cookie is not a UUID (validation_error)", body = AnonErrorBody),
        (status = 404, description = "no cookie, or its session has expired (resource_not_found)", body = AnonErrorBody),
        (status = 429, description = "the operation's limit is reached in this window (rate_limit_exceeded)", body = AnonErrorBody, headers(
            ("Retry-After" = u64, description = "seconds until the window resets"),
            ("X-RateLimit-Limit" = i64),
            ("X-RateLimit-Remaining" = i64),
            ("X-RateLimit-Reset" = u64, description = "Unix seconds"),
        )),
        (status = 503, description = "the session store is unreachable (service_unavailable)", body = AnonErrorBody),
    ))]
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
    let body = AnonUsage {
        session_id: s.id.to_string(),
        operation: op,
        usage_stats: usage_stats(&s),
        rate_limit: window.map(|(limit, remaining, reset_at)| RateLimit {
            limit,
            remaining,
            reset_at: timestamp(reset_at),
        }),
    };
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

/// This API's routes (`POST /api/session` also with a trailing slash, the
/// document's spelling).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(with_trailing_slash(routes!(create_or_get)))
        .routes(routes!(sync))
        .routes(routes!(session_info))
        .routes(routes!(record_use))
}
