//! login-session-api.md: a login that answers with an access token in the
//! `Authorization` header and a refresh token in the `Refresh` header.
//!
//! - `POST /session` `{"username","password"}` -> 200
//!   `{"success":true,"tableId":<user id>}`, headers `Authorization: Bearer
//!   <access token>` and `Refresh: <refresh token>`.
//! - `POST /session/refresh` with the `Refresh` header -> 200, the same body
//!   and headers, with a new refresh token (the old one is spent).
//! - `DELETE /session` with `Authorization: Bearer <access token>` -> 200
//!   `{"success":true}`: ends the login session, its refresh token and its
//!   access tokens.
//!
//! Where the document is silent:
//! - The username is the email of a user of the bridge's directory
//!   ([`crate::users`], case-insensitive). The directory has no other names,
//!   so a username that is not an email matches nobody and is refused like a
//!   wrong password.
//! - `tableId` is the user's id (the row the session belongs to).
//! - Errors are `{"success":false,"message":"..."}`: 400 for a missing or
//!   malformed body, 401 for bad credentials or tokens (an unknown user and a
//!   wrong password get the same answer, in the same time), 413 for an
//!   oversized body, 429 (with `Retry-After`) after
//!   [`crate::auth::LOGIN_ATTEMPTS`] attempts on one username within
//!   [`crate::auth::LOGIN_WINDOW`], 503 when the daemon is unreachable.
//! - The `Refresh` header is the bare token (a `Bearer ` prefix is accepted
//!   on the way in). Responses carrying tokens are `Cache-Control: no-store`.
//! - A refresh token works once. Presenting a spent one again means it was
//!   stolen (or replayed): the whole login session is revoked, with its
//!   current refresh token and its access tokens. A logout with an expired
//!   access token may present the `Refresh` header instead.
//!
//! Storage: a login session per login in [`auth::LOGIN_SESSIONS_NS`] (owned by
//! the user, sliding [`LOGIN_IDLE`], capped at [`LOGIN_MAX`]); its current
//! refresh token in [`REFRESH_NS`] (owned by the login session, rotated by
//! the daemon's Rotate op); spent refresh tokens in [`SPENT_NS`]; access
//! tokens in [`auth::ACCESS_NS`].

// Helpers return the early answer as their error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value as JsonValue};
use sessiond_client::{
    Client, CreateOptions, Error as ClientError, ErrorCode, LimitPolicy, Session, SessionId, Value,
};
use tracing::{info, warn};

use crate::apis::daemon_unavailable;
use crate::auth::{self, Throttle};
use crate::state::AppState;
use crate::users::{self, UserError};

/// Namespace of live refresh tokens.
pub const REFRESH_NS: &str = "login-refresh";
/// Namespace of spent refresh tokens (kept to detect their reuse).
pub const SPENT_NS: &str = "login-spent";
/// A login session (and its refresh token) unused this long ends.
pub const LOGIN_IDLE: Duration = Duration::from_secs(14 * 24 * 3600);
/// A login session never outlives this, however often it is refreshed.
pub const LOGIN_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most live login sessions per user; a new one evicts the oldest.
pub const MAX_LOGINS_PER_USER: u32 = 100;
/// The response header carrying the refresh token.
pub const REFRESH_HEADER: &str = "refresh";

pub(crate) fn fail(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"success": false, "message": message}))).into_response()
}

fn unauthorized(message: &str) -> Response {
    fail(StatusCode::UNAUTHORIZED, message)
}

fn store_error(e: &ClientError) -> Response {
    if crate::apis::store_full(e) {
        return fail(
            StatusCode::INSUFFICIENT_STORAGE,
            "the session store is full; try again later",
        );
    }
    if !daemon_unavailable(e) {
        warn!(error = %e, "login store error");
    }
    fail(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
}

fn user_error(e: &UserError) -> Response {
    match e {
        UserError::Store(c) => store_error(c),
        other => {
            warn!(error = %other, "login directory error");
            fail(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
        }
    }
}

fn body_rejection(r: &BytesRejection) -> Response {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        fail(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    } else {
        fail(StatusCode::BAD_REQUEST, "cannot read the request body")
    }
}

fn text(s: &Session, name: &str) -> Option<String> {
    match s.attr(name) {
        Some(Value::Str(v)) => Some(v.clone()),
        _ => None,
    }
}

/// `username` and `password` from a JSON body, or the 400 to answer.
fn credentials(body: &[u8]) -> Result<(String, String), Response> {
    let Ok(v) = serde_json::from_slice::<JsonValue>(body) else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object with username and password",
        ));
    };
    let Some(obj) = v.as_object() else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object with username and password",
        ));
    };
    let field = |name: &str| match obj.get(name) {
        None | Some(JsonValue::Null) => Err(fail(
            StatusCode::BAD_REQUEST,
            &format!("{name} is required"),
        )),
        Some(JsonValue::String(s)) if s.is_empty() => Err(fail(
            StatusCode::BAD_REQUEST,
            &format!("{name} is required"),
        )),
        Some(JsonValue::String(s)) => Ok(s.clone()),
        Some(_) => Err(fail(
            StatusCode::BAD_REQUEST,
            &format!("{name} must be a string"),
        )),
    };
    Ok((field("username")?, field("password")?))
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The refresh token of a `Refresh` header (bare, or after `Bearer `).
fn refresh_token(headers: &HeaderMap) -> Option<SessionId> {
    let v = headers.get(REFRESH_HEADER)?.to_str().ok()?.trim();
    let token = match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => v,
    };
    token.parse().ok()
}

/// The success answer: tokens in the headers, the user id in the body.
fn issued(access: &str, refresh: SessionId, user_id: &str) -> Response {
    let mut r = Json(json!({"success": true, "tableId": user_id})).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {access}")) {
        h.insert(header::AUTHORIZATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&refresh.to_string()) {
        h.insert(REFRESH_HEADER, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Ends a login session: the session itself first (so a racing refresh
/// finds it gone), then its refresh token and its access tokens.
async fn revoke_login(client: &Client, login: &str, user_id: &str) -> Result<(), ClientError> {
    if let Ok(id) = login.parse::<SessionId>() {
        client.delete(auth::LOGIN_SESSIONS_NS, id).await?;
    }
    if !login.is_empty() {
        client.delete_by_owner(REFRESH_NS, login, None).await?;
    }
    auth::revoke_login_tokens(client, user_id, login).await?;
    Ok(())
}

/// `POST /session`.
async fn login(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_rejection(&r),
    };
    let (username, password) = match credentials(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let client = &state.client;
    match auth::throttle_login(client, &username).await {
        Ok(Throttle::Allowed) => {}
        Ok(Throttle::Limited(wait)) => {
            info!("login throttled");
            let mut r = fail(
                StatusCode::TOO_MANY_REQUESTS,
                "too many login attempts; try again later",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            return r;
        }
        Err(e) => return store_error(&e),
    }
    // The username is an email of the directory; any other name matches
    // nobody (and costs the same hash as a wrong password).
    let user = match users::authenticate(client, &username, &password).await {
        Ok(Some(u)) => u,
        Ok(None) => return unauthorized("invalid username or password"),
        Err(e) => return user_error(&e),
    };
    if let Err(e) = auth::clear_login_throttle(client, &username).await {
        return store_error(&e);
    }
    let login = match client
        .create(
            auth::LOGIN_SESSIONS_NS,
            CreateOptions::new()
                .owner(user.id.as_str())
                .idle_ttl(LOGIN_IDLE)
                .max_lifetime(LOGIN_MAX)
                .attr("user_id", user.id.as_str())
                .owner_limit(MAX_LOGINS_PER_USER, LimitPolicy::EvictOldest),
        )
        .await
    {
        Ok(s) => s.id.to_string(),
        Err(e) => return store_error(&e),
    };
    let refresh = match client
        .create(
            REFRESH_NS,
            CreateOptions::new()
                .owner(login.as_str())
                .idle_ttl(LOGIN_IDLE)
                .max_lifetime(LOGIN_MAX)
                .attr("login", login.as_str())
                .attr("user_id", user.id.as_str()),
        )
        .await
    {
        Ok(s) => s.id,
        Err(e) => return store_error(&e),
    };
    let access = match auth::issue_access_token(client, &user.id, &login).await {
        Ok(a) => a,
        Err(e) => return store_error(&e),
    };
    info!("login session created");
    issued(&access, refresh, &user.id)
}

/// Records `token` as spent. `false` if it already was: a second use.
async fn spend(client: &Client, token: SessionId, rec: &Session) -> Result<bool, ClientError> {
    let mut opts = CreateOptions::new()
        .id(token)
        .max_lifetime(LOGIN_MAX)
        .attr("login", text(rec, "login").unwrap_or_default());
    if let Some(u) = text(rec, "user_id") {
        opts = opts.attr("user_id", u);
    }
    match client.create(SPENT_NS, opts).await {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.code(), Some(ErrorCode::AlreadyExists | ErrorCode::Gone)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A spent refresh token came back: revoke its whole login session.
async fn reuse_detected(client: &Client, rec: &Session) -> Response {
    warn!("a spent refresh token was presented again; revoking its login session");
    let login = text(rec, "login").unwrap_or_default();
    let user_id = text(rec, "user_id").unwrap_or_default();
    if let Err(e) = revoke_login(client, &login, &user_id).await {
        return store_error(&e);
    }
    unauthorized("refresh token already used; the session is revoked")
}

/// `POST /session/refresh`.
async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let client = &state.client;
    let Some(token) = refresh_token(&headers) else {
        return unauthorized("missing or malformed Refresh header");
    };
    let rec = match client.get(REFRESH_NS, token).await {
        Ok(Some(rec)) => rec,
        Ok(None) => {
            return match client.get(SPENT_NS, token).await {
                Ok(Some(spent)) => reuse_detected(client, &spent).await,
                Ok(None) => unauthorized("invalid or expired refresh token"),
                Err(e) => store_error(&e),
            };
        }
        Err(e) => return store_error(&e),
    };
    // Spending is the atomic step (create-if-absent): of two requests with
    // one token, exactly one gets here; the other is a reuse.
    match spend(client, token, &rec).await {
        Ok(true) => {}
        Ok(false) => return reuse_detected(client, &rec).await,
        Err(e) => return store_error(&e),
    }
    let (Some(login), Some(user_id)) = (text(&rec, "login"), text(&rec, "user_id")) else {
        return unauthorized("invalid or expired refresh token");
    };
    let new = match client.rotate(REFRESH_NS, token, None).await {
        Ok(s) => s.id,
        Err(e) if matches!(e.code(), Some(ErrorCode::NotFound | ErrorCode::Gone)) => {
            return unauthorized("invalid or expired refresh token")
        }
        Err(e) => return store_error(&e),
    };
    // The rotated token keeps the old deadlines; a use slides them.
    if let Err(e) = client.touch(REFRESH_NS, new).await {
        return store_error(&e);
    }
    let Ok(login_id) = login.parse::<SessionId>() else {
        return unauthorized("invalid or expired refresh token");
    };
    match client
        .get_and_touch(auth::LOGIN_SESSIONS_NS, login_id)
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => {
            // The login ended (logout, revocation, eviction): so does this token.
            let _ = client.delete(REFRESH_NS, new).await;
            return unauthorized("the session has ended");
        }
        Err(e) => return store_error(&e),
    }
    match users::get(client, &user_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return match revoke_login(client, &login, &user_id).await {
                Ok(()) => unauthorized("the session has ended"),
                Err(e) => store_error(&e),
            }
        }
        Err(e) => return user_error(&e),
    }
    let access = match auth::issue_access_token(client, &user_id, &login).await {
        Ok(a) => a,
        Err(e) => return store_error(&e),
    };
    // A revocation that ran while the token was being issued may have
    // missed it: check the login once more and withdraw the token if so.
    match client.get(auth::LOGIN_SESSIONS_NS, login_id).await {
        Ok(Some(_)) => issued(&access, new, &user_id),
        Ok(None) => {
            if let Ok(a) = access.parse::<SessionId>() {
                let _ = client.delete(auth::ACCESS_NS, a).await;
            }
            let _ = client.delete(REFRESH_NS, new).await;
            unauthorized("the session has ended")
        }
        Err(e) => store_error(&e),
    }
}

/// `DELETE /session`.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let client = &state.client;
    if let Some(token) = bearer(&headers) {
        match auth::grant_from_access_token(client, token).await {
            Ok(Some(grant)) => {
                return match revoke_login(client, &grant.login_session, &grant.principal.user.id)
                    .await
                {
                    Ok(()) => {
                        info!("login session ended");
                        Json(json!({"success": true})).into_response()
                    }
                    Err(e) => store_error(&e),
                };
            }
            Ok(None) => {}
            Err(e) => return user_error(&e),
        }
    }
    // An expired access token: the refresh token may still speak for the session.
    if let Some(token) = refresh_token(&headers) {
        match client.get(REFRESH_NS, token).await {
            Ok(Some(rec)) => {
                let login = text(&rec, "login").unwrap_or_default();
                let user_id = text(&rec, "user_id").unwrap_or_default();
                return match revoke_login(client, &login, &user_id).await {
                    Ok(()) => Json(json!({"success": true})).into_response(),
                    Err(e) => store_error(&e),
                };
            }
            Ok(None) => {}
            Err(e) => return store_error(&e),
        }
    }
    unauthorized("invalid or expired access token")
}

/// This API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/session", post(login).delete(logout))
        .route("/session/refresh", post(refresh))
}

fn error_response(description: &str) -> JsonValue {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LoginError"}}}
    })
}

fn tokens_response(description: &str) -> JsonValue {
    json!({
        "description": description,
        "headers": {
            "Authorization": {"description": "`Bearer <access token>`", "schema": {"type": "string"}},
            "Refresh": {"description": "The refresh token", "schema": {"type": "string"}}
        },
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LoginSuccess"}}}
    })
}

/// This API's OpenAPI `(paths, schemas)`.
#[must_use]
pub fn openapi() -> (JsonValue, JsonValue) {
    let unavailable = error_response("the session store is unreachable");
    (
        json!({
            "/session": {
                "post": {
                    "summary": "Log in: access token in Authorization, refresh token in Refresh",
                    "tags": ["login"],
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/LoginRequest"}}}},
                    "responses": {
                        "200": tokens_response("logged in"),
                        "400": error_response("missing or malformed body"),
                        "401": error_response("unknown user or wrong password"),
                        "413": error_response("body too large"),
                        "429": {
                            "description": "too many login attempts on this username",
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LoginError"}}}
                        },
                        "503": unavailable
                    }
                },
                "delete": {
                    "summary": "Log out: end the login session, its refresh and access tokens",
                    "tags": ["login"],
                    "security": [{"bearer": []}],
                    "parameters": [{"name": "Refresh", "in": "header", "required": false,
                        "description": "The refresh token, when the access token has expired",
                        "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "logged out", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/LoginLogout"}}}},
                        "401": error_response("missing, invalid or expired token"),
                        "503": unavailable
                    }
                }
            },
            "/session/refresh": {
                "post": {
                    "summary": "Trade a refresh token for a new access token and refresh token",
                    "tags": ["login"],
                    "parameters": [{"name": "Refresh", "in": "header", "required": true,
                        "schema": {"type": "string"}}],
                    "responses": {
                        "200": tokens_response("new tokens (the old refresh token is spent)"),
                        "401": error_response("missing, invalid, expired or reused refresh token"),
                        "503": unavailable
                    }
                }
            }
        }),
        json!({
            "LoginRequest": {
                "type": "object",
                "required": ["username", "password"],
                "properties": {
                    "username": {"type": "string", "minLength": 1, "description": "The user's email"},
                    "password": {"type": "string", "minLength": 1}
                }
            },
            "LoginSuccess": {
                "type": "object",
                "required": ["success", "tableId"],
                "properties": {
                    "success": {"type": "boolean", "enum": [true]},
                    "tableId": {"type": "string", "description": "The user's id"}
                }
            },
            "LoginLogout": {
                "type": "object",
                "required": ["success"],
                "properties": {"success": {"type": "boolean", "enum": [true]}}
            },
            "LoginError": {
                "type": "object",
                "required": ["success", "message"],
                "properties": {
                    "success": {"type": "boolean", "enum": [false]},
                    "message": {"type": "string"}
                }
            }
        }),
    )
}
