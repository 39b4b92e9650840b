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

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use chrono::DateTime;
use serde_json::{json, Map, Value as JsonValue};
use sessiond_client::{CreateOptions, LimitPolicy, SessionId, Value};
use tracing::info;

use crate::apis::common::{self, throttle, ApiError, Cookie, CookieName, Envelope, Failure};
use crate::auth;
use crate::state::AppState;
use crate::users::{self, Login, NewUser, User, UserError};

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
        json!({ "error": f.message })
    }
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

fn empty(status: StatusCode) -> Response {
    (status, Json(json!({}))).into_response()
}

/// The project's timestamp format (`%Y-%m-%dT%H:%M:%S`, UTC).
fn project_time(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| rfc3339.to_owned(),
        |t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string(),
    )
}

/// A user as the project's `to_json` shows it (never the password).
fn user_json(u: &User) -> JsonValue {
    json!({
        "id": u.id,
        "email": u.email,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "created_at": project_time(&u.created_at),
        "updated_at": project_time(&u.updated_at),
    })
}

/// The name of this API's session cookie.
#[derive(Debug)]
pub struct SessionCookieName;

impl CookieName for SessionCookieName {
    const NAME: &'static str = SESSION_COOKIE;
}

/// The request's session cookie, if any.
type SessionCookie = Cookie<SessionCookieName>;

fn set_cookie(state: &AppState, value: &str, clear: bool) -> HeaderValue {
    let mut c = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax");
    if clear {
        c.push_str("; Max-Age=0");
    }
    if state.config.production {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The signed-in user: 401 without a session cookie, 403 with one that
/// names no live session (or a deleted user), as in the project.
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = SessionAuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, SessionAuthError> {
        let Some(cookie) = common::cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(SessionAuthError::unauthorized());
        };
        let Ok(id) = cookie.parse::<SessionId>() else {
            return Err(SessionAuthError::forbidden());
        };
        let Some(session) = state.client.get_and_touch(NS, id).await? else {
            return Err(SessionAuthError::forbidden());
        };
        let Some(Value::Str(user_id)) = session.attr("user_id") else {
            return Err(SessionAuthError::forbidden());
        };
        match users::get(&state.client, user_id).await? {
            Some(u) => Ok(Self(u)),
            None => Err(SessionAuthError::forbidden()),
        }
    }
}

/// The signed-in user, who must be an administrator (403 otherwise).
pub struct Admin(pub User);

impl FromRequestParts<AppState> for Admin {
    type Rejection = SessionAuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, SessionAuthError> {
        let CurrentUser(me) = CurrentUser::from_request_parts(parts, state).await?;
        if me.is_admin {
            Ok(Self(me))
        } else {
            Err(SessionAuthError::forbidden())
        }
    }
}

/// The user id a `/users/{id}` route is about (`me`: the signed-in user), if
/// `me` may act on it.
fn target(
    me: &User,
    path: Result<Path<String>, PathRejection>,
) -> Result<String, SessionAuthError> {
    let Ok(Path(id)) = path else {
        return Err(SessionAuthError::not_found());
    };
    let id = if id == "me" { me.id.clone() } else { id };
    // Checked before the lookup, so that a non-admin learns nothing of
    // other ids' existence.
    if me.is_admin || id == me.id {
        Ok(id)
    } else {
        Err(SessionAuthError::forbidden())
    }
}

/// A JSON object body, or "Wrong format".
fn json_object(
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, JsonValue>, SessionAuthError> {
    match serde_json::from_slice::<JsonValue>(&body?) {
        Ok(JsonValue::Object(m)) => Ok(m),
        _ => Err(SessionAuthError::wrong_format()),
    }
}

/// An optional string field: absent or null is `None`; another type is
/// "Wrong format".
fn opt_str(obj: &Map<String, JsonValue>, name: &str) -> Result<Option<String>, SessionAuthError> {
    match obj.get(name) {
        None | Some(JsonValue::Null) => Ok(None),
        Some(JsonValue::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SessionAuthError::wrong_format()),
    }
}

/// Whether a first or last name is too long.
fn too_long(name: Option<&String>) -> bool {
    name.is_some_and(|v| v.chars().count() > MAX_NAME_CHARS)
}

async fn status() -> Response {
    Json(json!({"status": "OK"})).into_response()
}

async fn unauthorized_route() -> SessionAuthError {
    SessionAuthError::unauthorized()
}

async fn forbidden_route() -> SessionAuthError {
    SessionAuthError::forbidden()
}

async fn stats(State(state): State<AppState>, _: CurrentUser) -> SessionAuthResult {
    let n = users::count(&state.client).await?;
    Ok(Json(json!({ "users": n })).into_response())
}

async fn list_users(State(state): State<AppState>, _: Admin) -> SessionAuthResult {
    let all = users::list(&state.client).await?;
    Ok(Json(JsonValue::Array(all.iter().map(user_json).collect())).into_response())
}

async fn create_user(
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

async fn get_user(
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

async fn update_user(
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

async fn delete_user(
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

/// The `email` and `password` form fields (url-encoded or multipart, as
/// Flask's `request.form`); any other body has none.
async fn form_fields(
    state: &AppState,
    req: Request,
) -> Result<(Option<String>, Option<String>), SessionAuthError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (mut email, mut password) = (None, None);
    if content_type.starts_with("multipart/form-data") {
        let Ok(mut parts) = Multipart::from_request(req, state).await else {
            return Ok((None, None));
        };
        loop {
            match parts.next_field().await {
                Ok(Some(field)) => {
                    let name = field.name().unwrap_or_default().to_owned();
                    let slot = match name.as_str() {
                        "email" if email.is_none() => &mut email,
                        "password" if password.is_none() => &mut password,
                        _ => continue,
                    };
                    match field.text().await {
                        Ok(t) => *slot = Some(t),
                        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                            return Err(SessionAuthError::too_large())
                        }
                        Err(_) => break,
                    }
                }
                Ok(None) => break,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(SessionAuthError::too_large())
                }
                Err(_) => break,
            }
        }
    } else {
        let body = match Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(SessionAuthError::too_large())
            }
            Err(_) => return Ok((None, None)),
        };
        if content_type.starts_with("application/x-www-form-urlencoded") {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&body).unwrap_or_default();
            for (k, v) in pairs {
                match k.as_str() {
                    "email" if email.is_none() => email = Some(v),
                    "password" if password.is_none() => password = Some(v),
                    _ => {}
                }
            }
        }
    }
    Ok((email, password))
}

async fn login(
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

async fn logout(State(state): State<AppState>, cookie: SessionCookie) -> SessionAuthResult {
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

/// The routes, each also with a trailing slash.
fn paths() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/v1/status", get(status)),
        ("/api/v1/unauthorized", get(unauthorized_route)),
        ("/api/v1/forbidden", get(forbidden_route)),
        ("/api/v1/stats", get(stats)),
        ("/api/v1/users", get(list_users).post(create_user)),
        (
            "/api/v1/users/{user_id}",
            get(get_user).put(update_user).delete(delete_user),
        ),
        ("/api/v1/auth_session/login", post(login)),
        ("/api/v1/auth_session/logout", axum::routing::delete(logout)),
    ]
}

/// This API's routes.
pub fn routes() -> Router<AppState> {
    paths()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router
                .route(path, methods.clone())
                .route(&format!("{path}/"), methods)
        })
}

fn schema_ref(name: &str) -> JsonValue {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn respond(description: &str, schema: &str) -> JsonValue {
    json!({
        "description": description,
        "content": {"application/json": {"schema": schema_ref(schema)}}
    })
}

fn err(description: &str) -> JsonValue {
    respond(description, "SessionAuthError")
}

/// The responses every authenticated route may give besides its own.
fn guarded(mut responses: Map<String, JsonValue>) -> JsonValue {
    responses.insert("401".into(), err("no session cookie"));
    responses.insert(
        "403".into(),
        err("the cookie names no live session, or the user may not do this"),
    );
    responses.insert("503".into(), err("the session store is unreachable"));
    JsonValue::Object(responses)
}

fn map(v: JsonValue) -> Map<String, JsonValue> {
    match v {
        JsonValue::Object(m) => m,
        _ => Map::new(),
    }
}

/// This API's OpenAPI `(paths, schemas)`.
#[must_use]
pub fn openapi() -> (JsonValue, JsonValue) {
    let cookie = json!([{"sessionCookie": []}]);
    let user_id = json!([{"name": "user_id", "in": "path", "required": true,
        "description": "A user id, or `me` for the current user", "schema": {"type": "string"}}]);
    let one_user = json!({
        "get": {
            "summary": "A user",
            "tags": ["session-auth"], "security": cookie, "parameters": user_id,
            "responses": guarded(map(json!({
                "200": respond("the user", "SessionAuthUser"),
                "404": err("no such user")
            })))
        },
        "put": {
            "summary": "Change a user's names",
            "tags": ["session-auth"], "security": cookie, "parameters": user_id,
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": schema_ref("SessionAuthUserUpdate")}}},
            "responses": guarded(map(json!({
                "200": respond("the updated user", "SessionAuthUser"),
                "400": err("Wrong format"),
                "404": err("no such user"),
                "413": err("body too large")
            })))
        },
        "delete": {
            "summary": "Delete a user (and end their sessions and tokens)",
            "tags": ["session-auth"], "security": cookie, "parameters": user_id,
            "responses": guarded(map(json!({
                "200": respond("deleted", "SessionAuthEmpty"),
                "404": err("no such user")
            })))
        }
    });
    let items = [
        (
            "/api/v1/status",
            json!({"get": {"summary": "Status of the API", "tags": ["session-auth"],
                "responses": {"200": respond("up", "SessionAuthStatus")}}}),
        ),
        (
            "/api/v1/unauthorized",
            json!({"get": {"summary": "Always 401", "tags": ["session-auth"],
                "responses": {"401": err("Unauthorized")}}}),
        ),
        (
            "/api/v1/forbidden",
            json!({"get": {"summary": "Always 403", "tags": ["session-auth"],
                "responses": {"403": err("Forbidden")}}}),
        ),
        (
            "/api/v1/stats",
            json!({"get": {"summary": "Number of users", "tags": ["session-auth"],
                "security": cookie,
                "responses": guarded(map(json!({"200": respond("counts", "SessionAuthStats")})))}}),
        ),
        (
            "/api/v1/users",
            json!({
                "get": {"summary": "Every user (administrators)", "tags": ["session-auth"],
                    "security": cookie,
                    "responses": guarded(map(json!({"200": {"description": "the users",
                        "content": {"application/json": {"schema": {"type": "array",
                            "items": schema_ref("SessionAuthUser")}}}}})))},
                "post": {"summary": "Create a user (administrators)", "tags": ["session-auth"],
                    "security": cookie,
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": schema_ref("SessionAuthUserCreate")}}},
                    "responses": guarded(map(json!({
                        "201": respond("created", "SessionAuthUser"),
                        "400": err("Wrong format, email missing, password missing, or Can't create User: ..."),
                        "413": err("body too large")
                    })))}
            }),
        ),
        ("/api/v1/users/{user_id}", one_user),
        (
            "/api/v1/auth_session/login",
            json!({"post": {
            "summary": "Log in: the user, and the session cookie",
            "tags": ["session-auth"],
            "requestBody": {"required": true, "content": {
                "application/x-www-form-urlencoded": {"schema": schema_ref("SessionAuthLogin")},
                "multipart/form-data": {"schema": schema_ref("SessionAuthLogin")}}},
            "responses": {
                "200": {"description": "logged in",
                    "headers": {"Set-Cookie": {"description": "`_my_session_id=<session id>; Path=/; HttpOnly; SameSite=Lax` (+ `Secure` in production)",
                        "schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": schema_ref("SessionAuthUser")}}},
                "400": err("email missing / password missing"),
                "401": err("wrong password"),
                "404": err("no user found for this email"),
                "413": err("body too large"),
                "429": {"description": "too many login attempts for this email",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": schema_ref("SessionAuthError")}}},
                "503": err("the session store is unreachable")
            }}}),
        ),
        (
            "/api/v1/auth_session/logout",
            json!({"delete": {
            "summary": "Log out: end the cookie's session",
            "tags": ["session-auth"], "security": cookie,
            "responses": {
                "200": respond("logged out", "SessionAuthEmpty"),
                "404": respond("no live session", "SessionAuthEmpty"),
                "503": err("the session store is unreachable")
            }}}),
        ),
    ];
    let mut paths = Map::new();
    for (path, item) in items {
        paths.insert(format!("{path}/"), item.clone());
        paths.insert(path.to_owned(), item);
    }
    let user_props = json!({
        "id": {"type": "string"},
        "email": {"type": "string"},
        "first_name": {"type": "string", "nullable": true},
        "last_name": {"type": "string", "nullable": true},
        "created_at": {"type": "string", "description": "%Y-%m-%dT%H:%M:%S (UTC)"},
        "updated_at": {"type": "string", "description": "%Y-%m-%dT%H:%M:%S (UTC)"}
    });
    (
        JsonValue::Object(paths),
        json!({
            "SessionAuthUser": {
                "type": "object",
                "required": ["id", "email", "first_name", "last_name", "created_at", "updated_at"],
                "properties": user_props
            },
            "SessionAuthUserCreate": {
                "type": "object",
                "required": ["email", "password"],
                "properties": {
                    "email": {"type": "string", "maxLength": 254,
                        "pattern": "^[^@\\s]+@[^@\\s.]+(\\.[^@\\s.]+)+$"},
                    "password": {"type": "string", "minLength": 1, "maxLength": 256},
                    "first_name": {"type": "string", "nullable": true, "maxLength": MAX_NAME_CHARS},
                    "last_name": {"type": "string", "nullable": true, "maxLength": MAX_NAME_CHARS},
                    "is_admin": {"type": "boolean", "nullable": true}
                }
            },
            "SessionAuthUserUpdate": {
                "type": "object",
                "properties": {
                    "first_name": {"type": "string", "nullable": true, "maxLength": MAX_NAME_CHARS},
                    "last_name": {"type": "string", "nullable": true, "maxLength": MAX_NAME_CHARS}
                }
            },
            "SessionAuthLogin": {
                "type": "object",
                "required": ["email", "password"],
                "properties": {
                    "email": {"type": "string", "minLength": 1},
                    "password": {"type": "string", "minLength": 1}
                }
            },
            "SessionAuthStatus": {
                "type": "object", "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["OK"]}}
            },
            "SessionAuthStats": {
                "type": "object", "required": ["users"],
                "properties": {"users": {"type": "integer", "minimum": 0}}
            },
            "SessionAuthEmpty": {"type": "object", "maxProperties": 0},
            "SessionAuthError": {
                "type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}}
            }
        }),
    )
}
