//! user-session-cache-api.md: one active session per user, with a token.
//!
//! - `GET /session?user_id=` -> `{"success":true,"message":<session>}`
//! - `POST /verify` -> `{"success":true,"message":"true"|"false"}`
//! - `POST /create` -> `{"success":true,"message":<session>}`
//!
//! Where the document is silent: `<session>` is a JSON object
//! (`user_id`, `ttl`, `created_at`, `expired_at`; never the token); a user with
//! no session answers 404 with `{"success":false,"message":"session not found"}`;
//! bad input answers 400 and an unreachable daemon 503 in the same envelope.
//! `user_id` must be a JSON string, as the document types it: `{"user_id": 42}`
//! is 400 `{"success":false,"message":"user_id must be a string"}`, never
//! stored as `"42"`.
//! `ttl` is seconds (a number or a numeric string) or a duration such as
//! `"30m"`; timestamps are RFC 3339 strings or Unix times (seconds, or
//! milliseconds when larger than 10^12). A record disappears when the earlier
//! of `created_at + ttl` and `expired_at` passes: the daemon expires it.
//!
//! Tokens are stored as SHA-256 and compared in constant time. Each user's
//! record lives at an id derived from the user id (UUID v5), so `create`
//! replaces the previous session atomically (an upsert).

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use sessiond_client::{Session, SessionId, UpdateOptions, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apis::common::{int, success_false, text, ApiError, Envelope, Failure, SuccessFalse};
use crate::state::AppState;

/// Namespace of the cached sessions.
pub const NS: &str = "cache-sessions";
/// Longest ttl accepted (a year).
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// This API's error envelope: `{"success": false, "message": ...}`.
#[derive(Debug)]
pub struct CacheApi;

impl Envelope for CacheApi {
    const LOG: &'static str = "session cache store error";
    const STORE_FULL: &'static str = "session store full";
    const UNAVAILABLE: &'static str = "service unavailable";
    const STORE_ERROR: &'static str = "session store error";

    fn body(f: &Failure) -> Json_ {
        success_false(f)
    }
}

/// An error of this API.
pub type CacheError = ApiError<CacheApi>;

impl CacheError {
    fn bad(message: &str) -> Self {
        Self::fail(StatusCode::BAD_REQUEST, message)
    }
}

type CacheResult = Result<Response, CacheError>;

/// A success: `{"success": true, "message": <message>}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Success<M> {
    /// Always `true`.
    success: bool,
    /// The answer.
    message: M,
}

fn ok<M: Serialize>(message: M) -> Response {
    Json(Success {
        success: true,
        message,
    })
    .into_response()
}

/// The session as the API shows it (never the token).
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheSession {
    /// The user.
    user_id: Option<String>,
    /// The ttl as it was given on create.
    ttl: Option<String>,
    /// When the session was created (RFC 3339).
    created_at: Option<String>,
    /// When the session expires (RFC 3339).
    expired_at: Option<String>,
}

/// `/verify`'s answer: whether the token is the user's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The token is the user's session token.
    True,
    /// It is not, or the user has no session.
    False,
}

/// A timestamp (RFC 3339, or Unix seconds, or milliseconds above 10^12),
/// or a ttl (seconds, or a duration such as `30m`).
#[derive(Debug, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum TextOrNumber {
    /// As a string.
    Text(String),
    /// As a number.
    Number(i64),
}

/// The body of `/verify` and `/create`. Read leniently: a field of the
/// wrong type is a 400 with a message naming it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct CacheSessionInput {
    /// The user (a string, as the document types it).
    #[schema(min_length = 1, max_length = 256)]
    user_id: String,
    /// The session token (stored as its SHA-256).
    token: String,
    /// `/create`: the session's lifetime from `created_at`: seconds (a
    /// number or a numeric string) or a duration such as `30m`.
    #[schema(inline)]
    ttl: Option<TextOrNumber>,
    /// `/create`: when the session was created (default: now).
    #[schema(inline)]
    created_at: Option<TextOrNumber>,
    /// `/create`: when the session ends (the earlier of this and
    /// `created_at + ttl`).
    #[schema(inline)]
    expired_at: Option<TextOrNumber>,
}

fn record_id(user_id: &str) -> SessionId {
    SessionId(*uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, user_id.as_bytes()).as_bytes())
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(String::new, |t| {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    })
}

/// A timestamp: RFC 3339, or a Unix time in seconds (or ms above 10^12).
fn parse_time(v: &Json_) -> Option<i64> {
    match v {
        Json_::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
            .or_else(|| s.trim().parse::<i64>().ok().map(unix_to_ms)),
        Json_::Number(n) => n.as_i64().map(unix_to_ms),
        _ => None,
    }
}

fn unix_to_ms(n: i64) -> i64 {
    // `unsigned_abs`: `i64::MIN` has no `abs` (a panic in a debug build).
    if n.unsigned_abs() > 1_000_000_000_000 {
        n
    } else {
        n.saturating_mul(1000)
    }
}

/// A ttl: seconds (number or numeric string) or a duration like "30m".
fn parse_ttl(v: &Json_) -> Option<Duration> {
    let d = match v {
        Json_::Number(n) => n.as_u64().map(Duration::from_secs)?,
        Json_::String(s) => match s.trim().parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => sessiond_client::protocol::duration::parse_duration(s).ok()?,
        },
        _ => return None,
    };
    (!d.is_zero() && d <= MAX_TTL).then_some(d)
}

/// The session as the API shows it (never the token).
fn view(s: &Session) -> CacheSession {
    CacheSession {
        user_id: text(s, "user_id"),
        ttl: text(s, "ttl"),
        created_at: int(s, "created_at").map(rfc3339),
        expired_at: s
            .expires_at_ms
            .and_then(|ms| i64::try_from(ms).ok())
            .map(rfc3339),
    }
}

fn user_id_of(v: Option<&Json_>) -> Result<String, CacheError> {
    match v {
        Some(Json_::String(s)) if !s.trim().is_empty() && s.len() <= 256 => Ok(s.clone()),
        // The document types it as a string: a number (or anything else) is
        // refused rather than stored as its decimal text.
        Some(Json_::String(_)) => Err(CacheError::bad(
            "user_id must be a non-empty string of at most 256 characters",
        )),
        Some(_) => Err(CacheError::bad("user_id must be a string")),
        None => Err(CacheError::bad("user_id is required")),
    }
}

#[derive(Debug, Deserialize)]
struct UserQuery {
    user_id: Option<String>,
}

/// The active session of a user
///
/// `{"success": true, "message": <session>}`; 404 when the user has none.
#[utoipa::path(get, path = "/session", tag = "user-session-cache",
    params(("user_id" = String, Query, description = "The user.", min_length = 1, max_length = 256)),
    responses(
        (status = 200, description = "the session", body = Success<CacheSession>),
        (status = 400, description = "user_id missing or invalid", body = SuccessFalse),
        (status = 404, description = "no active session", body = SuccessFalse),
        (status = 503, description = "session store unavailable", body = SuccessFalse),
    ))]
async fn get_session(
    State(state): State<AppState>,
    query: Result<Query<UserQuery>, QueryRejection>,
) -> CacheResult {
    let Ok(Query(q)) = query else {
        return Err(CacheError::bad("invalid query string"));
    };
    let user_id = user_id_of(q.user_id.map(Json_::String).as_ref())?;
    match state.client.get(NS, record_id(&user_id)).await? {
        Some(s) => Ok(ok(view(&s))),
        None => Err(CacheError::fail(StatusCode::NOT_FOUND, "session not found")),
    }
}

/// A JSON object body.
type Object = serde_json::Map<String, Json_>;

fn body(payload: Result<Json<Json_>, JsonRejection>) -> Result<Object, CacheError> {
    match payload {
        Ok(Json(Json_::Object(map))) => Ok(map),
        Ok(_) => Err(CacheError::bad("the body must be a JSON object")),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(CacheError::fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is too large",
        )),
        Err(JsonRejection::MissingJsonContentType(_)) => {
            Err(CacheError::bad("expected Content-Type: application/json"))
        }
        Err(_) => Err(CacheError::bad("malformed JSON body")),
    }
}

/// The JSON object body and its `user_id`.
fn object_with_user(
    payload: Result<Json<Json_>, JsonRejection>,
) -> Result<(Object, String), CacheError> {
    let map = body(payload)?;
    let user_id = user_id_of(map.get("user_id"))?;
    Ok((map, user_id))
}

/// An optional field read with `parse`; `message` when it does not parse.
fn optional<T>(
    map: &Object,
    name: &str,
    parse: fn(&Json_) -> Option<T>,
    message: &str,
) -> Result<Option<T>, CacheError> {
    map.get(name)
        .map(|v| parse(v).ok_or_else(|| CacheError::bad(message)))
        .transpose()
}

/// Check a user's session token
///
/// `{"success": true, "message": "true"}` when `token` is the user's
/// session token, `"false"` otherwise (also when the user has none).
#[utoipa::path(post, path = "/verify", tag = "user-session-cache",
    request_body = CacheSessionInput,
    responses(
        (status = 200, description = "\"true\" or \"false\"", body = Success<Verdict>),
        (status = 400, description = "malformed body", body = SuccessFalse),
        (status = 413, description = "body too large", body = SuccessFalse),
        (status = 503, description = "session store unavailable", body = SuccessFalse),
    ))]
async fn verify(
    State(state): State<AppState>,
    payload: Result<Json<Json_>, JsonRejection>,
) -> CacheResult {
    let (map, user_id) = object_with_user(payload)?;
    let Some(Json_::String(token)) = map.get("token") else {
        return Err(CacheError::bad("token is required"));
    };
    let session = state.client.get(NS, record_id(&user_id)).await?;
    let presented = token_hash(token);
    // Compared in constant time; an absent session compares against zeros so
    // both paths do the same work.
    let stored = session
        .as_ref()
        .and_then(|s| match s.attr("token_sha256") {
            Some(Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        })
        .unwrap_or_else(|| vec![0; 32]);
    let matches = bool::from(stored.ct_eq(&presented)) && session.is_some();
    Ok(ok(if matches {
        Verdict::True
    } else {
        Verdict::False
    }))
}

/// Create (or replace) a user's session
///
/// One session per user: a create replaces the user's previous session.
#[utoipa::path(post, path = "/create", tag = "user-session-cache",
    request_body = CacheSessionInput,
    responses(
        (status = 200, description = "the session", body = Success<CacheSession>),
        (status = 400, description = "malformed body, or already expired", body = SuccessFalse),
        (status = 413, description = "body too large", body = SuccessFalse),
        (status = 503, description = "session store unavailable", body = SuccessFalse),
    ))]
async fn create(
    State(state): State<AppState>,
    payload: Result<Json<Json_>, JsonRejection>,
) -> CacheResult {
    let (map, user_id) = object_with_user(payload)?;
    let token = match map.get("token") {
        Some(Json_::String(t)) if !t.is_empty() && t.len() <= 4096 => t.clone(),
        Some(_) => return Err(CacheError::bad("token must be a non-empty string")),
        None => return Err(CacheError::bad("token is required")),
    };
    let now = Utc::now().timestamp_millis();
    let created_at = optional(
        &map,
        "created_at",
        parse_time,
        "created_at is not a timestamp",
    )?
    .unwrap_or(now);
    let ttl = optional(
        &map,
        "ttl",
        parse_ttl,
        "ttl must be a positive number of seconds or a duration such as 30m",
    )?;
    let expired_at = optional(
        &map,
        "expired_at",
        parse_time,
        "expired_at is not a timestamp",
    )?;
    let ttl_end =
        ttl.map(|d| created_at.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    let deadline = match (ttl_end, expired_at) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Err(CacheError::bad("ttl or expired_at is required")),
    };
    if deadline <= now {
        return Err(CacheError::bad(
            "the session would already be expired (check ttl, created_at and expired_at)",
        ));
    }
    let left = Duration::from_millis(u64::try_from(deadline - now).unwrap_or(0));
    let ttl_text = map.get("ttl").map_or_else(String::new, |v| match v {
        Json_::String(s) => s.clone(),
        other => other.to_string(),
    });
    let update = UpdateOptions::new()
        .set("user_id", user_id.as_str())
        .set("token_sha256", Value::Bytes(token_hash(&token)))
        .set("ttl", ttl_text)
        .set("created_at", created_at)
        .ttl(Some(left), None)
        .upsert(None);
    let id = record_id(&user_id);
    state.client.update(NS, id, update).await?;
    match state.client.get(NS, id).await? {
        Some(s) => Ok(ok(view(&s))),
        None => Err(CacheError::bad("the session expired immediately")),
    }
}

/// This API's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_session))
        .routes(routes!(verify))
        .routes(routes!(create))
}
