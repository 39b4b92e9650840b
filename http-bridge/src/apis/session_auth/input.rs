//! Reading requests: the user a `/users/{id}` route is about, JSON object
//! bodies and their fields, and the `email`/`password` form fields of a login
//! (url-encoded or multipart).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, Multipart, Path, Request};
use axum::http::{header, StatusCode};
use serde_json::{Map, Value as JsonValue};
use utoipa::ToSchema;

use super::{SessionAuthError, MAX_NAME_CHARS};
use crate::state::AppState;
use crate::users::User;

// The request bodies, as the description shows them. They are read
// leniently (see `json_object`, `opt_str` and `form_fields`): a field of the
// wrong type is "Wrong format", a missing one the project's message. The
// `max_length` of the names is `MAX_NAME_CHARS`.

/// The body of `POST /api/v1/users`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub(super) struct SessionAuthUserCreate {
    /// The login email.
    #[schema(max_length = 254, pattern = r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")]
    email: String,
    /// The password.
    #[schema(min_length = 1, max_length = 256)]
    password: String,
    /// The first name.
    #[schema(max_length = 256)]
    first_name: Option<String>,
    /// The last name.
    #[schema(max_length = 256)]
    last_name: Option<String>,
    /// Whether the new user is an administrator (default `false`).
    is_admin: Option<bool>,
}

/// The body of `PUT /api/v1/users/{user_id}`: the names to change (an
/// absent or null one stays as it is).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub(super) struct SessionAuthUserUpdate {
    /// The first name.
    #[schema(max_length = 256)]
    first_name: Option<String>,
    /// The last name.
    #[schema(max_length = 256)]
    last_name: Option<String>,
}

/// The form of `POST /api/v1/auth_session/login` (url-encoded or
/// multipart).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub(super) struct SessionAuthLogin {
    /// The login email.
    #[schema(min_length = 1)]
    email: String,
    /// The password.
    #[schema(min_length = 1)]
    password: String,
}

/// The user id a `/users/{id}` route is about (`me`: the signed-in user), if
/// `me` may act on it.
pub(super) fn target(
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
pub(super) fn json_object(
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, JsonValue>, SessionAuthError> {
    match serde_json::from_slice::<JsonValue>(&body?) {
        Ok(JsonValue::Object(m)) => Ok(m),
        _ => Err(SessionAuthError::wrong_format()),
    }
}

/// An optional string field: absent or null is `None`; another type is
/// "Wrong format".
pub(super) fn opt_str(
    obj: &Map<String, JsonValue>,
    name: &str,
) -> Result<Option<String>, SessionAuthError> {
    match obj.get(name) {
        None | Some(JsonValue::Null) => Ok(None),
        Some(JsonValue::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SessionAuthError::wrong_format()),
    }
}

/// Whether a first or last name is too long.
pub(super) fn too_long(name: Option<&String>) -> bool {
    name.is_some_and(|v| v.chars().count() > MAX_NAME_CHARS)
}

/// The `email` and `password` form fields (url-encoded or multipart, as
/// Flask's `request.form`); any other body has none.
pub(super) async fn form_fields(
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
