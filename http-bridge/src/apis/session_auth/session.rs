//! The session cookie: its name and `Set-Cookie`, and the extractors of the
//! signed-in user ([`CurrentUser`], [`Admin`]) that turn it into a user or
//! the project's 401/403.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use sessiond_client::{SessionId, Value};

use super::{SessionAuthError, NS, SESSION_COOKIE};
use crate::apis::common::{self, Cookie, CookieName};
use crate::state::AppState;
use crate::users::{self, User};

/// The name of this API's session cookie.
#[derive(Debug)]
pub struct SessionCookieName;

impl CookieName for SessionCookieName {
    const NAME: &'static str = SESSION_COOKIE;
}

/// The request's session cookie, if any.
pub(super) type SessionCookie = Cookie<SessionCookieName>;

pub(super) fn set_cookie(state: &AppState, value: &str, clear: bool) -> HeaderValue {
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
