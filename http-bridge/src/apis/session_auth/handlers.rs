//! The handlers of the routes, and the project's `to_json` of a user.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::DateTime;
use serde::Serialize;
use serde_json::Value as JsonValue;
use sessiond_client::{CreateOptions, LimitPolicy, SessionId};
use tracing::info;
use utoipa::ToSchema;

use super::input::{
    form_fields, json_object, opt_str, target, too_long, SessionAuthLogin, SessionAuthUserCreate,
    SessionAuthUserUpdate,
};
use super::session::{set_cookie, Admin, CurrentUser, SessionCookie};
use super::{
    SessionAuthApi, SessionAuthError, SessionAuthErrorBody, SessionAuthResult, MAX_NAME_CHARS,
    MAX_SESSIONS_PER_USER, NS, SESSION_IDLE, SESSION_MAX,
};
use crate::apis::common::throttle;
use crate::auth;
use crate::state::AppState;
use crate::users::{self, Login, NewUser, User, UserError};

/// `{}`: the body of a deletion, a logout, or a logout without a session.
#[derive(Debug, Serialize, ToSchema)]
#[schema(max_properties = 0)]
pub(super) struct SessionAuthEmpty {}

fn empty(status: StatusCode) -> Response {
    (status, Json(SessionAuthEmpty {})).into_response()
}

/// `{"status": "OK"}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionAuthStatus {
    // Always `OK` (a doc comment here would wrap the enum in a `oneOf`).
    #[schema(inline)]
    status: Up,
}

/// Always `OK`: the API is up.
#[derive(Debug, Serialize, ToSchema)]
pub(super) enum Up {
    /// Up.
    #[serde(rename = "OK")]
    Ok,
}

/// `{"users": N}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionAuthStats {
    /// The number of users.
    users: usize,
}

/// A user as the project's `to_json` shows it (never the password).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionAuthUser {
    /// The user's id.
    id: String,
    /// The login email.
    email: String,
    /// The first name.
    #[schema(required = true)]
    first_name: Option<String>,
    /// The last name.
    #[schema(required = true)]
    last_name: Option<String>,
    /// %Y-%m-%dT%H:%M:%S (UTC)
    created_at: String,
    /// %Y-%m-%dT%H:%M:%S (UTC)
    updated_at: String,
}

/// The project's timestamp format (`%Y-%m-%dT%H:%M:%S`, UTC).
fn project_time(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| rfc3339.to_owned(),
        |t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string(),
    )
}

/// A user as the project's `to_json` shows it (never the password).
fn user_json(u: &User) -> SessionAuthUser {
    SessionAuthUser {
        id: u.id.clone(),
        email: u.email.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        created_at: project_time(&u.created_at),
        updated_at: project_time(&u.updated_at),
    }
}

/// Status of the API
///
/// Public: `{"status": "OK"}`.
#[utoipa::path(get, path = "/api/v1/status", tag = "session-auth",
    operation_id = "session_auth_status",
    responses((status = 200, description = "up", body = SessionAuthStatus)))]
pub(super) async fn status() -> Response {
    Json(SessionAuthStatus { status: Up::Ok }).into_response()
}

/// Always 401
///
/// Public: `{"error": "Unauthorized"}`.
#[utoipa::path(get, path = "/api/v1/unauthorized", tag = "session-auth",
    operation_id = "session_auth_unauthorized",
    responses((status = 401, description = "Unauthorized", body = SessionAuthErrorBody)))]
pub(super) async fn unauthorized_route() -> SessionAuthError {
    SessionAuthError::unauthorized()
}

/// Always 403
///
/// Public: `{"error": "Forbidden"}`.
#[utoipa::path(get, path = "/api/v1/forbidden", tag = "session-auth",
    operation_id = "session_auth_forbidden",
    responses((status = 403, description = "Forbidden", body = SessionAuthErrorBody)))]
pub(super) async fn forbidden_route() -> SessionAuthError {
    SessionAuthError::forbidden()
}

/// Number of users
///
/// Open to every logged-in user.
#[utoipa::path(get, path = "/api/v1/stats", tag = "session-auth",
    operation_id = "session_auth_stats",
    security(("sessionCookie" = [])),
    responses(
        (status = 200, description = "counts", body = SessionAuthStats),
        (status = 401, description = "no session cookie", body = SessionAuthErrorBody),
        (status = 403, description = "the cookie names no live session", body = SessionAuthErrorBody),
        (status = 503, description = "the session store is unreachable", body = SessionAuthErrorBody),
    ))]
pub(super) async fn stats(State(state): State<AppState>, _: CurrentUser) -> SessionAuthResult {
    let n = users::count(&state.client).await?;
    Ok(Json(SessionAuthStats { users: n }).into_response())
}

/// Every user (administrators)
///
/// Other users get 403.
#[utoipa::path(get, path = "/api/v1/users", tag = "session-auth",
    operation_id = "session_auth_list_users",
    security(("sessionCookie" = [])),
    responses(
        (status = 200, description = "the users", body = Vec<SessionAuthUser>),
        (status = 401, description = "no session cookie", body = SessionAuthErrorBody),
        (status = 403, description = "the cookie names no live session, or the user is no administrator", body = SessionAuthErrorBody),
        (status = 503, description = "the session store is unreachable", body = SessionAuthErrorBody),
    ))]
pub(super) async fn list_users(State(state): State<AppState>, _: Admin) -> SessionAuthResult {
    let all = users::list(&state.client).await?;
    Ok(Json(all.iter().map(user_json).collect::<Vec<_>>()).into_response())
}

/// Create a user (administrators)
///
/// Other users get 403. `is_admin` makes the new user an administrator.
#[utoipa::path(post, path = "/api/v1/users", tag = "session-auth",
    operation_id = "session_auth_create_user",
    security(("sessionCookie" = [])),
    request_body = SessionAuthUserCreate,
    responses(
        (status = 201, description = "created", body = SessionAuthUser),
        (status = 400, description = "Wrong format, email missing, password missing, or Can't create User: ...", body = SessionAuthErrorBody),
        (status = 401, description = "no session cookie", body = SessionAuthErrorBody),
        (status = 403, description = "the cookie names no live session, or the user is no administrator", body = SessionAuthErrorBody),
        (status = 413, description = "body too large", body = SessionAuthErrorBody),
        (status = 503, description = "the session store is unreachable", body = SessionAuthErrorBody),
    ))]
pub(super) async fn create_user(
    State(state): State<AppState>,
    _: Admin,
    body: Result<Bytes, BytesRejection>,
) -> SessionAuthResult {
    let obj = json_object(body)?;
    let email = opt_str(&obj, "email")?;
    let password = opt_str(&obj, "password")?;
    let first_name = opt_str(&obj, "first_name")?;
    let last_name = opt_str(&obj, "last_name")?;
    let is_admin = match obj.get("is_admin") {
        None | Some(JsonValue::Null) => false,
        Some(JsonValue::Bool(b)) => *b,
        Some(_) => return Err(SessionAuthError::wrong_format()),
    };
    let Some(email) = email.filter(|e| !e.is_empty()) else {
        return Err(SessionAuthError::bad_request("email missing"));
    };
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Err(SessionAuthError::bad_request("password missing"));
    };
    for (name, value) in [("first_name", &first_name), ("last_name", &last_name)] {
        if too_long(value.as_ref()) {
            return Err(SessionAuthError::bad_request(&format!(
                "Can't create User: {name} is longer than {MAX_NAME_CHARS} characters"
            )));
        }
    }
    let new = NewUser {
        email,
        password,
        first_name,
        last_name,
        is_admin,
    };
    match users::create(&state.client, new).await {
        Ok(u) => {
            info!(admin = is_admin, "user created");
            Ok((StatusCode::CREATED, Json(user_json(&u))).into_response())
        }
        Err(e @ (UserError::EmailTaken | UserError::Invalid(_))) => Err(
            SessionAuthError::bad_request(&format!("Can't create User: {e}")),
        ),
        Err(e) => Err(e.into()),
    }
}

/// A user
///
/// An administrator may read anyone; another user only themselves.
#[utoipa::path(get, path = "/api/v1/users/{user_id}", tag = "session-auth",
    operation_id = "session_auth_get_user",
    security(("sessionCookie" = [])),
    params(("user_id" = String, Path, description = "A user id, or `me` for the current user")),
    responses(
        (status = 200, description = "the user", body = SessionAuthUser),
        (status = 401, description = "no session cookie", body = SessionAuthErrorBody),
        (status = 403, description = "the cookie names no live session, or the user may not do this", body = SessionAuthErrorBody),
        (status = 404, description = "no such user", body = SessionAuthErrorBody),
        (status = 503, description = "the session store is unreachable", body = SessionAuthErrorBody),
    ))]
pub(super) async fn get_user(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> SessionAuthResult {
    let id = target(&me, path)?;
    if id == me.id {
        return Ok(Json(user_json(&me)).into_response());
    }
    match users::get(&state.client, &id).await? {
        Some(u) => Ok(Json(user_json(&u)).into_response()),
        None => Err(SessionAuthError::not_found()),
    }
}

/// Change a user's names
///
/// An administrator may change anyone; another user only themselves.
#[utoipa::path(put, path = "/api/v1/users/{user_id}", tag = "session-auth",
    operation_id = "session_auth_update_user",
    security(("sessionCookie" = [])),
    params(("user_id" = String, Path, description = "A user id, or `me` for the current user")),
    request_body = SessionAuthUserUpdate,
    responses(
        (status = 200, description = "the updated user", body = SessionAuthUser),
        (status = 400, description = "Wrong format", body = SessionAuthErrorBody),
        (status = 401, description = "no session cookie", body = SessionAuthErrorBody),
        (status = 403, description = "the cookie names no live session, or the user may not do this", body = SessionAuthErrorBody),
        (status = 404, description = "no such user", body = SessionAuthErrorBody),
        (status = 413, description = "body too large", body = SessionAuthErrorBody),
        (status = 503, description = "the session store is unreachable", body = SessionAuthErrorBody),
    ))]
pub(super) async fn update_user(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> SessionAuthResult {
    let id = target(&me, path)?;
    // As in the project: an unknown id is 404 before the body is looked at.
    if users::get(&state.client, &id).await?.is_none() {
        return Err(SessionAuthError::not_found());
    }
    let obj = json_object(body)?;
    let first_name = opt_str(&obj, "first_name")?;
    let last_name = opt_str(&obj, "last_name")?;
    if too_long(first_name.as_ref()) || too_long(last_name.as_ref()) {
        return Err(SessionAuthError::wrong_format());
    }
    let u = users::update(&state.client, &id, first_name, last_name).await?;
    Ok(Json(user_json(&u)).into_response())
}

/// Delete a user (and end their sessions and tokens)
///
/// An administrator may delete anyone; another user only themselves (and
/// then the session cookie is cleared).
#[utoipa::path(delete, path = "/api/v1/users/{user_id}", tag = "session-auth",
    operation_id = "session_auth_delete_user",
    security(("sessionCookie" = [])),
    params(("user_id" = String, Path, description = "A user id, or `me` for the current user")),
    responses(
        (status = 200, description = "deleted", body = SessionAuthEmpty,
            headers(("Set-Cookie" = String, description = "When the user deleted themselves: `_my_session_id=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0` (+ `Secure` in production)"))),
        (status = 401, description = "no session cookie", body = SessionAuthErrorBody),
        (status = 403, description = "the cookie names no live session, or the user may not do this", body = SessionAuthErrorBody),
        (status = 404, description = "no such user", body = SessionAuthErrorBody),
        (status = 503, description = "the session store is unreachable", body = SessionAuthErrorBody),
    ))]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    path: Result<Path<String>, PathRejection>,
) -> SessionAuthResult {
    let id = target(&me, path)?;
    if !users::delete(&state.client, &id).await? {
        return Err(SessionAuthError::not_found());
    }
    // The user is gone: so are their sessions and tokens.
    state.client.delete_by_owner(NS, &id, None).await?;
    auth::revoke_user_tokens(&state.client, &id).await?;
    info!("user deleted");
    let mut r = empty(StatusCode::OK);
    if id == me.id {
        r.headers_mut()
            .insert(header::SET_COOKIE, set_cookie(&state, "", true));
    }
    Ok(r)
}

/// Log in: the user, and the session cookie
///
/// The form fields `email` and `password` (url-encoded or multipart). A
/// login always gets a fresh session, and ends the one its cookie named.
/// Logins are throttled per email.
#[utoipa::path(post, path = "/api/v1/auth_session/login", tag = "session-auth",
    operation_id = "session_auth_login",
    params(("_my_session_id" = Option<String>, Cookie, nullable = false, description = "The session this login replaces, if any: it ends")),
    request_body(content(
        (SessionAuthLogin = "application/x-www-form-urlencoded"),
        (SessionAuthLogin = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "logged in", body = SessionAuthUser,
            headers(("Set-Cookie" = String, description = "`_my_session_id=<session id>; Path=/; HttpOnly; SameSite=Lax` (+ `Secure` in production)"))),
        (status = 400, description = "email missing / password missing", body = SessionAuthErrorBody),
        (status = 401, description = "wrong password", body = SessionAuthErrorBody),
        (status = 404, description = "no user found for this email", body = SessionAuthErrorBody),
        (status = 413, description = "body too large", body = SessionAuthErrorBody),
        (status = 429, description = "too many login attempts for this email", body = SessionAuthErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "the session store is unreachable", body = SessionAuthErrorBody),
    ))]
pub(super) async fn login(
    State(state): State<AppState>,
    old_cookie: SessionCookie,
    req: Request,
) -> SessionAuthResult {
    let (email, password) = form_fields(&state, req).await?;
    let Some(email) = email.filter(|e| !e.is_empty()) else {
        return Err(SessionAuthError::bad_request("email missing"));
    };
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Err(SessionAuthError::bad_request("password missing"));
    };
    let client = &state.client;
    throttle::<SessionAuthApi>(client, &email, "Too many requests").await?;
    let user = match users::check_password(client, &email, &password).await? {
        Login::Ok(u) => u,
        Login::NoSuchUser => {
            return Err(SessionAuthError::fail(
                StatusCode::NOT_FOUND,
                "no user found for this email",
            ))
        }
        _ => {
            return Err(SessionAuthError::fail(
                StatusCode::UNAUTHORIZED,
                "wrong password",
            ))
        }
    };
    auth::clear_login_throttle(client, &email).await?;
    // The session the browser held before this login ends with it.
    if let Some(old) = old_cookie.value.and_then(|c| c.parse::<SessionId>().ok()) {
        client.delete(NS, old).await?;
    }
    let session = client
        .create(
            NS,
            CreateOptions::new()
                .owner(user.id.as_str())
                .idle_ttl(SESSION_IDLE)
                .max_lifetime(SESSION_MAX)
                .attr("user_id", user.id.as_str())
                .owner_limit(MAX_SESSIONS_PER_USER, LimitPolicy::EvictOldest),
        )
        .await?;
    info!("session created");
    let mut r = Json(user_json(&user)).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&state, &session.id.to_string(), false),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Log out: end the cookie's session
///
/// `{}`, and the cookie cleared; 404 `{}` when the cookie names no live
/// session (or there is none).
#[utoipa::path(delete, path = "/api/v1/auth_session/logout", tag = "session-auth",
    operation_id = "session_auth_logout",
    security(("sessionCookie" = [])),
    responses(
        (status = 200, description = "logged out", body = SessionAuthEmpty,
            headers(("Set-Cookie" = String, description = "`_my_session_id=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0` (+ `Secure` in production)"))),
        (status = 404, description = "no live session", body = SessionAuthEmpty),
        (status = 503, description = "the session store is unreachable", body = SessionAuthErrorBody),
    ))]
pub(super) async fn logout(
    State(state): State<AppState>,
    cookie: SessionCookie,
) -> SessionAuthResult {
    let Some(id) = cookie.value.and_then(|c| c.parse::<SessionId>().ok()) else {
        return Ok(empty(StatusCode::NOT_FOUND));
    };
    if !state.client.delete(NS, id).await? {
        return Ok(empty(StatusCode::NOT_FOUND));
    }
    info!("session ended");
    let mut r = empty(StatusCode::OK);
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, "", true));
    Ok(r)
}
