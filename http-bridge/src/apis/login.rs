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

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value as JsonValue;
use sessiond_client::{
    Client, CreateOptions, Error as ClientError, ErrorCode, LimitPolicy, Session, SessionId,
};
use tracing::{info, warn};

use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apis::common::{
    success_false, text, throttle, ApiError, BearerToken, Envelope, Failure, SuccessFalse,
};
use crate::auth;
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

/// This API's error envelope: `{"success": false, "message": ...}`.
#[derive(Debug)]
pub struct LoginApi;

impl Envelope for LoginApi {
    const LOG: &'static str = "login store error";
    const STORE_FULL: &'static str = "the session store is full; try again later";
    const UNAVAILABLE: &'static str = "service unavailable";

    fn body(f: &Failure) -> JsonValue {
        success_false(f)
    }
}

/// An error of this API.
pub type LoginError = ApiError<LoginApi>;

impl LoginError {
    fn unauthorized(message: &str) -> Self {
        Self::fail(StatusCode::UNAUTHORIZED, message)
    }

    fn bad_request(message: &str) -> Self {
        Self::fail(StatusCode::BAD_REQUEST, message)
    }
}

impl From<UserError> for LoginError {
    fn from(e: UserError) -> Self {
        Self::directory(e, "login directory error")
    }
}

impl From<BytesRejection> for LoginError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::fail(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        } else {
            Self::bad_request("cannot read the request body")
        }
    }
}

type LoginResult = Result<Response, LoginError>;

/// `username` and `password` from a JSON body, or the 400 to answer.
fn credentials(body: &[u8]) -> Result<(String, String), LoginError> {
    let v = serde_json::from_slice::<JsonValue>(body).ok();
    let Some(obj) = v.as_ref().and_then(JsonValue::as_object) else {
        return Err(LoginError::bad_request(
            "the body must be a JSON object with username and password",
        ));
    };
    let field = |name: &str| match obj.get(name) {
        None | Some(JsonValue::Null) => {
            Err(LoginError::bad_request(&format!("{name} is required")))
        }
        Some(JsonValue::String(s)) if s.is_empty() => {
            Err(LoginError::bad_request(&format!("{name} is required")))
        }
        Some(JsonValue::String(s)) => Ok(s.clone()),
        Some(_) => Err(LoginError::bad_request(&format!("{name} must be a string"))),
    };
    Ok((field("username")?, field("password")?))
}

/// The refresh token of a `Refresh` header (bare, or after `Bearer `).
struct RefreshToken(Option<SessionId>);

impl<S: Send + Sync> FromRequestParts<S> for RefreshToken {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let token = parts
            .headers
            .get(REFRESH_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .and_then(|v| {
                let token = match v.split_once(' ') {
                    Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
                    _ => v,
                };
                token.parse().ok()
            });
        Ok(Self(token))
    }
}

/// The body of a login or a refresh (the tokens are in the headers).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginSuccess {
    /// Always `true`.
    success: bool,
    /// The user's id.
    #[serde(rename = "tableId")]
    table_id: String,
}

/// The body of a logout.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginLogout {
    /// Always `true`.
    success: bool,
}

/// The body of a login.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    /// The user's email.
    #[schema(min_length = 1)]
    username: String,
    /// The user's password.
    #[schema(min_length = 1)]
    password: String,
}

/// The success answer: tokens in the headers, the user id in the body.
fn issued(access: &str, refresh: SessionId, user_id: &str) -> Response {
    let mut r = Json(LoginSuccess {
        success: true,
        table_id: user_id.to_owned(),
    })
    .into_response();
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

/// Log in: access token in Authorization, refresh token in Refresh
#[utoipa::path(post, path = "/session", tag = "login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "logged in", body = LoginSuccess, headers(
            ("Authorization" = String, description = "`Bearer <access token>`"),
            ("Refresh" = String, description = "The refresh token"),
        )),
        (status = 400, description = "missing or malformed body", body = SuccessFalse),
        (status = 401, description = "unknown user or wrong password", body = SuccessFalse),
        (status = 413, description = "body too large", body = SuccessFalse),
        (status = 429, description = "too many login attempts on this username", body = SuccessFalse,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "the session store is unreachable", body = SuccessFalse),
    ))]
async fn login(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> LoginResult {
    let (username, password) = credentials(&body?)?;
    let client = &state.client;
    throttle::<LoginApi>(
        client,
        &username,
        "too many login attempts; try again later",
    )
    .await?;
    // The username is an email of the directory; any other name matches
    // nobody (and costs the same hash as a wrong password).
    let Some(user) = users::authenticate(client, &username, &password).await? else {
        return Err(LoginError::unauthorized("invalid username or password"));
    };
    auth::clear_login_throttle(client, &username).await?;
    let login = client
        .create(
            auth::LOGIN_SESSIONS_NS,
            CreateOptions::new()
                .owner(user.id.as_str())
                .idle_ttl(LOGIN_IDLE)
                .max_lifetime(LOGIN_MAX)
                .attr("user_id", user.id.as_str())
                .owner_limit(MAX_LOGINS_PER_USER, LimitPolicy::EvictOldest),
        )
        .await?
        .id
        .to_string();
    let refresh = client
        .create(
            REFRESH_NS,
            CreateOptions::new()
                .owner(login.as_str())
                .idle_ttl(LOGIN_IDLE)
                .max_lifetime(LOGIN_MAX)
                .attr("login", login.as_str())
                .attr("user_id", user.id.as_str()),
        )
        .await?
        .id;
    let access = auth::issue_access_token(client, &user.id, &login).await?;
    info!("login session created");
    Ok(issued(&access, refresh, &user.id))
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

/// Ends the login session of the refresh token (or spent refresh token)
/// `rec`.
async fn revoke_record(client: &Client, rec: &Session) -> Result<(), ClientError> {
    let login = text(rec, "login").unwrap_or_default();
    let user_id = text(rec, "user_id").unwrap_or_default();
    revoke_login(client, &login, &user_id).await
}

/// A spent refresh token came back: revoke its whole login session.
async fn reuse_detected(client: &Client, rec: &Session) -> LoginError {
    warn!("a spent refresh token was presented again; revoking its login session");
    match revoke_record(client, rec).await {
        Ok(()) => LoginError::unauthorized("refresh token already used; the session is revoked"),
        Err(e) => e.into(),
    }
}

/// Trade a refresh token for a new access token and refresh token
///
/// A refresh token works once: presenting a spent one again revokes the
/// whole login session.
#[utoipa::path(post, path = "/session/refresh", tag = "login",
    params(("Refresh" = String, Header, description = "The refresh token")),
    responses(
        (status = 200, description = "new tokens (the old refresh token is spent)", body = LoginSuccess, headers(
            ("Authorization" = String, description = "`Bearer <access token>`"),
            ("Refresh" = String, description = "The refresh token"),
        )),
        (status = 401, description = "missing, invalid, expired or reused refresh token", body = SuccessFalse),
        (status = 503, description = "the session store is unreachable", body = SuccessFalse),
    ))]
async fn refresh(State(state): State<AppState>, RefreshToken(token): RefreshToken) -> LoginResult {
    let client = &state.client;
    let invalid = || LoginError::unauthorized("invalid or expired refresh token");
    let ended = || LoginError::unauthorized("the session has ended");
    let Some(token) = token else {
        return Err(LoginError::unauthorized(
            "missing or malformed Refresh header",
        ));
    };
    let Some(rec) = client.get(REFRESH_NS, token).await? else {
        return Err(match client.get(SPENT_NS, token).await? {
            Some(spent) => reuse_detected(client, &spent).await,
            None => invalid(),
        });
    };
    // Spending is the atomic step (create-if-absent): of two requests with
    // one token, exactly one gets here; the other is a reuse.
    if !spend(client, token, &rec).await? {
        return Err(reuse_detected(client, &rec).await);
    }
    let (Some(login), Some(user_id)) = (text(&rec, "login"), text(&rec, "user_id")) else {
        return Err(invalid());
    };
    let new = match client.rotate(REFRESH_NS, token, None).await {
        Ok(s) => s.id,
        Err(e) if matches!(e.code(), Some(ErrorCode::NotFound | ErrorCode::Gone)) => {
            return Err(invalid())
        }
        Err(e) => return Err(e.into()),
    };
    // The rotated token keeps the old deadlines; a use slides them.
    client.touch(REFRESH_NS, new).await?;
    let Ok(login_id) = login.parse::<SessionId>() else {
        return Err(invalid());
    };
    if client
        .get_and_touch(auth::LOGIN_SESSIONS_NS, login_id)
        .await?
        .is_none()
    {
        // The login ended (logout, revocation, eviction): so does this token.
        let _ = client.delete(REFRESH_NS, new).await;
        return Err(ended());
    }
    if users::get(client, &user_id).await?.is_none() {
        revoke_login(client, &login, &user_id).await?;
        return Err(ended());
    }
    let access = auth::issue_access_token(client, &user_id, &login).await?;
    // A revocation that ran while the token was being issued may have
    // missed it: check the login once more and withdraw the token if so.
    if client
        .get(auth::LOGIN_SESSIONS_NS, login_id)
        .await?
        .is_some()
    {
        return Ok(issued(&access, new, &user_id));
    }
    if let Ok(a) = access.parse::<SessionId>() {
        let _ = client.delete(auth::ACCESS_NS, a).await;
    }
    let _ = client.delete(REFRESH_NS, new).await;
    Err(ended())
}

/// Log out: end the login session, its refresh and access tokens
#[utoipa::path(delete, path = "/session", tag = "login",
    security(("bearer" = [])),
    params(("Refresh" = Option<String>, Header, description = "The refresh token, when the access token has expired")),
    responses(
        (status = 200, description = "logged out", body = LoginLogout),
        (status = 401, description = "missing, invalid or expired token", body = SuccessFalse),
        (status = 503, description = "the session store is unreachable", body = SuccessFalse),
    ))]
async fn logout(
    State(state): State<AppState>,
    BearerToken(access): BearerToken,
    RefreshToken(refresh): RefreshToken,
) -> LoginResult {
    let client = &state.client;
    if let Some(token) = access {
        if let Some(grant) = auth::grant_from_access_token(client, &token).await? {
            revoke_login(client, &grant.login_session, &grant.principal.user.id).await?;
            info!("login session ended");
            return Ok(Json(LoginLogout { success: true }).into_response());
        }
    }
    // An expired access token: the refresh token may still speak for the session.
    if let Some(token) = refresh {
        if let Some(rec) = client.get(REFRESH_NS, token).await? {
            revoke_record(client, &rec).await?;
            return Ok(Json(LoginLogout { success: true }).into_response());
        }
    }
    Err(LoginError::unauthorized("invalid or expired access token"))
}

/// This API's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login, logout))
        .routes(routes!(refresh))
}
