//! The handlers of the routes, and the project's `to_json` of a user.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::DateTime;
use serde_json::{json, Value as JsonValue};
use sessiond_client::{CreateOptions, LimitPolicy, SessionId};
use tracing::info;

use super::input::{form_fields, json_object, opt_str, target, too_long};
use super::session::{set_cookie, Admin, CurrentUser, SessionCookie};
use super::{
    SessionAuthApi, SessionAuthError, SessionAuthResult, MAX_NAME_CHARS, MAX_SESSIONS_PER_USER, NS,
    SESSION_IDLE, SESSION_MAX,
};
use crate::apis::common::throttle;
use crate::auth;
use crate::state::AppState;
use crate::users::{self, Login, NewUser, User, UserError};

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

pub(super) async fn status() -> Response {
    Json(json!({"status": "OK"})).into_response()
}

pub(super) async fn unauthorized_route() -> SessionAuthError {
    SessionAuthError::unauthorized()
}

pub(super) async fn forbidden_route() -> SessionAuthError {
    SessionAuthError::forbidden()
}

pub(super) async fn stats(State(state): State<AppState>, _: CurrentUser) -> SessionAuthResult {
    let n = users::count(&state.client).await?;
    Ok(Json(json!({ "users": n })).into_response())
}

pub(super) async fn list_users(State(state): State<AppState>, _: Admin) -> SessionAuthResult {
    let all = users::list(&state.client).await?;
    Ok(Json(JsonValue::Array(all.iter().map(user_json).collect())).into_response())
}

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
