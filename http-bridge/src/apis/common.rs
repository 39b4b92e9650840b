//! The shape the five APIs share.
//!
//! - Errors: every API answers its own documented error envelope, but each
//!   is an [`ApiError`] over a marker type implementing [`Envelope`]: one core
//!   ([`Failure`]: status, code, message, and what some envelopes add), one
//!   mapping of store errors (`From<sessiond_client::Error>`), one
//!   [`IntoResponse`]. Handlers return `Result<_, ApiError<TheirApi>>` and
//!   use `?`.
//! - Extractors for what repeats across APIs: the bearer token
//!   ([`BearerToken`]) and a named cookie ([`Cookie`]).
//! - The session attribute readers ([`text`], [`int`]) and the login
//!   throttle ([`throttle`]).

use std::borrow::Cow;
use std::convert::Infallible;
use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value as JsonValue;
use sessiond_client::{Client, Error as ClientError, Session, Value};
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::apis::{daemon_unavailable, store_full};
use crate::auth::{self, Throttle};
use crate::users::UserError;

/// The core of an error answer, whatever the API's envelope.
#[derive(Debug)]
pub struct Failure {
    /// The status code.
    pub status: StatusCode,
    /// A machine-readable code (for the envelopes that carry one).
    pub code: Cow<'static, str>,
    /// The human-readable message.
    pub message: String,
    /// The field the message is about (for the envelopes that name it).
    pub field: Option<&'static str>,
    /// Several messages in place of one (for the envelopes that list them).
    pub list: Option<Vec<String>>,
    /// Headers added to the answer (`Retry-After`, `Set-Cookie`, ...).
    pub headers: HeaderMap,
}

/// How one API writes its errors: its body, and its words for store errors.
pub trait Envelope {
    /// Logged (with the error) when the store fails other than by being
    /// unreachable, busy or full.
    const LOG: &'static str;
    /// The message of a full store (507).
    const STORE_FULL: &'static str;
    /// The message of an unreachable or busy daemon (503).
    const UNAVAILABLE: &'static str;
    /// The message of any other store failure (503).
    const STORE_ERROR: &'static str = Self::UNAVAILABLE;

    /// The JSON body of `f`.
    fn body(f: &Failure) -> JsonValue;

    /// Anything else the envelope adds to the answer.
    fn finish(_f: &Failure, _response: &mut Response) {}
}

/// An error answer in the envelope of the API `E`. The core is boxed so
/// that `Result<_, ApiError<E>>` stays small.
pub struct ApiError<E> {
    failure: Box<Failure>,
    envelope: PhantomData<fn() -> E>,
}

impl<E> std::fmt::Debug for ApiError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.failure.fmt(f)
    }
}

impl<E> ApiError<E> {
    /// An error with `status`, machine `code` and `message`.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            failure: Box::new(Failure {
                status,
                code: code.into(),
                message: message.into(),
                field: None,
                list: None,
                headers: HeaderMap::new(),
            }),
            envelope: PhantomData,
        }
    }

    /// An error with `status` and `message`, for the envelopes without a
    /// machine code.
    pub fn fail(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "error", message)
    }

    /// Names the field the message is about.
    #[must_use]
    pub fn on_field(mut self, field: &'static str) -> Self {
        self.failure.field = Some(field);
        self
    }

    /// Several messages in place of one.
    #[must_use]
    pub fn listing(mut self, messages: Vec<String>) -> Self {
        self.failure.list = Some(messages);
        self
    }

    /// Adds a header to the answer (after those already added).
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.failure.headers.append(name, value);
        self
    }

    /// The headers added to the answer.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.failure.headers
    }

    /// The core of the error.
    #[must_use]
    pub fn failure(&self) -> &Failure {
        &self.failure
    }
}

impl<E: Envelope> From<&ClientError> for ApiError<E> {
    fn from(e: &ClientError) -> Self {
        if store_full(e) {
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "store_full",
                E::STORE_FULL,
            );
        }
        let message = if daemon_unavailable(e) {
            E::UNAVAILABLE
        } else {
            warn!(error = %e, "{}", E::LOG);
            E::STORE_ERROR
        };
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            message,
        )
    }
}

impl<E: Envelope> ApiError<E> {
    /// An error of the user directory: a store error as such, anything else
    /// a 503 (logged as `log`).
    pub fn directory(e: UserError, log: &str) -> Self {
        match e {
            UserError::Store(c) => c.into(),
            other => {
                warn!(error = %other, "{log}");
                Self::fail(StatusCode::SERVICE_UNAVAILABLE, E::UNAVAILABLE)
            }
        }
    }
}

impl<E: Envelope> From<ClientError> for ApiError<E> {
    fn from(e: ClientError) -> Self {
        Self::from(&e)
    }
}

impl<E: Envelope> IntoResponse for ApiError<E> {
    fn into_response(self) -> Response {
        let f = *self.failure;
        let mut r = (f.status, Json(E::body(&f))).into_response();
        E::finish(&f, &mut r);
        r.headers_mut().extend(f.headers);
        r
    }
}

/// `{"success": false, "message": <message>}`: the error envelope of the
/// login and cache APIs.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessFalse {
    /// Always `false`.
    pub success: bool,
    /// What went wrong.
    pub message: String,
}

/// The body of `f` as a [`SuccessFalse`].
#[must_use]
pub fn success_false(f: &Failure) -> JsonValue {
    serde_json::json!(SuccessFalse {
        success: false,
        message: f.message.clone(),
    })
}

/// Counts a login attempt on `username`: `Ok` when it may go on, 429 with
/// `Retry-After` (and `message`) when the username has had too many.
///
/// # Errors
/// The 429, or a store error.
pub async fn throttle<E: Envelope>(
    client: &Client,
    username: &str,
    message: &str,
) -> Result<(), ApiError<E>> {
    match auth::throttle_login(client, username).await? {
        Throttle::Allowed => Ok(()),
        Throttle::Limited(wait) => {
            info!("login throttled");
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                message,
            )
            .header(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            ))
        }
    }
}

/// A string attribute of a session.
#[must_use]
pub fn text(s: &Session, name: &str) -> Option<String> {
    match s.attr(name) {
        Some(Value::Str(v)) => Some(v.clone()),
        _ => None,
    }
}

/// An integer attribute of a session.
#[must_use]
pub fn int(s: &Session, name: &str) -> Option<i64> {
    match s.attr(name) {
        Some(Value::Int(v)) => Some(*v),
        _ => None,
    }
}

/// The token of an `Authorization: Bearer <token>` header.
#[must_use]
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of the first cookie called `name` (quotes stripped).
#[must_use]
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, value) = pair.split_once('=')?;
            (n.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
        })
}

/// The request's bearer token, if any (see [`bearer`]).
#[derive(Debug, Clone)]
pub struct BearerToken(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(bearer(&parts.headers).map(str::to_owned)))
    }
}

/// The name of a cookie an API reads (see [`Cookie`]).
pub trait CookieName {
    /// The cookie's name.
    const NAME: &'static str;
}

/// The value of the request's cookie `N::NAME`, if any (see [`cookie`]).
pub struct Cookie<N> {
    /// The value, quotes stripped.
    pub value: Option<String>,
    name: PhantomData<fn() -> N>,
}

impl<N: CookieName, S: Send + Sync> FromRequestParts<S> for Cookie<N> {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self {
            value: cookie(&parts.headers, N::NAME),
            name: PhantomData,
        })
    }
}
