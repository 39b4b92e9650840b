//! `GET /events`: the daemon's session events as Server-Sent Events, for
//! administrators.
//!
//! Who may call it: an administrator as the scheduled-sessions API decides
//! ([`crate::apis::scheduled::bearer::authenticate`]): `Authorization: Bearer`
//! with a JWT that says `admin` (`"admin": true`, `"role": "admin"` or
//! `"roles": [.., "admin", ..]`) or an access token of a user marked
//! administrator in the user directory. No credentials or a bad token: 401;
//! a caller who is not an administrator: 403.
//!
//! Query: `namespace` (repeatable, at least one), `updates` and `touches`
//! (`true`/`false`, `1`/`0`, or bare for true), `from` (a cursor: resume
//! after it; or `oldest`; default: from now). A `Last-Event-ID` header (sent
//! by `EventSource` when it reconnects) takes precedence over `from`.
//! Namespaces that hold the bridge's own credentials (access and refresh
//! tokens, user records, login throttles; [`CREDENTIAL_NAMESPACES`]) are
//! refused with 403: their session ids are bearer secrets that would let
//! the watcher act as any user.
//!
//! Each message is `id: <cursor>`, `event: <kind>` (`created`, `rotated`,
//! `deleted`, `expired`, `updated`, `touched`) and `data:` the event as JSON
//! (the object `sessionctl watch --json` prints). A comment line is sent
//! every [`KEEP_ALIVE`] when there is nothing else.
//!
//! The daemon is asked before the response starts: a resume point older
//! than the events it holds is answered `410 Gone` with
//! `{"error": "cursor_expired", "requested", "oldest", "message"}` (so an
//! `EventSource` stops instead of reconnecting into the same gap), a
//! namespace the bridge's daemon token may not read 403, a daemon that does
//! not accept the subscription within [`SUBSCRIBE_WAIT`] 503. Once the stream
//! runs, the bridge's client resumes by itself after a dropped daemon
//! connection; should the daemon still report an expired cursor later, an
//! `event: cursor_expired` message with `{"requested", "oldest"}` is sent
//! and the stream ends (any other error: `event: error`, then the end).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use sessiond_client::events::kind_name;
use sessiond_client::{Error as ClientError, ErrorCode, Event, EventsFrom, SubscribeOptions};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apis::scheduled::bearer::{authenticate, AuthError};
use crate::state::AppState;

/// Interval of the keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long the daemon has to accept the subscription before `503`.
pub const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);
/// Namespaces `/events` refuses: their ids are the bridge's credentials.
pub const CREDENTIAL_NAMESPACES: &[&str] = &[
    crate::auth::ACCESS_NS,
    crate::auth::THROTTLE_NS,
    crate::users::USERS_NS,
    crate::users::EMAILS_NS,
    crate::apis::login::REFRESH_NS,
    crate::apis::login::SPENT_NS,
];

/// The `/events` route.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// An error of `/events` (the envelope of the bridge's own routes).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsError {
    /// A machine-readable code (`bad_request`, `unauthorized`, `forbidden`,
    /// `cursor_expired`, `unavailable`, `subscription_refused`).
    error: String,
    /// What went wrong.
    message: String,
    /// 410: the cursor asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    requested: Option<u64>,
    /// 410: the oldest cursor held.
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest: Option<u64>,
}

/// The `data` of an event message: the object `sessionctl watch --json`
/// prints (written by `sessiond_client::cli::event_json`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct EventData {
    /// The event's position in the feed.
    cursor: u64,
    /// When it happened.
    #[schema(format = DateTime)]
    at: String,
    /// When it happened, in Unix milliseconds.
    at_ms: u64,
    /// The session's namespace.
    namespace: String,
    /// The session's id.
    #[schema(format = Uuid)]
    id: String,
    /// The session's owner.
    owner: Option<String>,
    /// What happened.
    #[schema(inline)]
    kind: EventKindName,
    /// `rotated`: the new id.
    #[schema(format = Uuid)]
    to: Option<String>,
    /// `deleted`: why.
    #[schema(inline)]
    reason: Option<DeleteReasonName>,
    /// `updated`: the new version.
    version: Option<u64>,
    /// `touched`: the new deadline.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// An event's kind.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum EventKindName {
    /// A session was created.
    Created,
    /// A session's id was rotated.
    Rotated,
    /// A session was deleted.
    Deleted,
    /// A session expired (at its deadline).
    Expired,
    /// A session's attributes or ttl changed (opt-in).
    Updated,
    /// A session's sliding deadline moved (opt-in).
    Touched,
}

/// Why a session was deleted.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum DeleteReasonName {
    /// A delete.
    Delete,
    /// Its owner's sessions were all deleted.
    LogoutEverywhere,
    /// Its owner went over the owner limit.
    OwnerLimit,
    /// The store was full.
    MemoryEviction,
}

/// An error in the envelope of the bridge's own routes.
fn fail(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(EventsError {
            error: code.to_owned(),
            message: message.to_owned(),
            requested: None,
            oldest: None,
        }),
    )
        .into_response()
}

/// What `/events` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// Namespaces to watch.
    pub namespaces: Vec<String>,
    /// Also `updated` events.
    pub updates: bool,
    /// Also `touched` events.
    pub touches: bool,
    /// Where to start.
    pub from: EventsFrom,
}

impl EventsQuery {
    /// Parses the query string and the `Last-Event-ID` header.
    ///
    /// # Errors
    /// A message for a `400`.
    pub fn parse(query: &str, last_event_id: Option<&str>) -> Result<Self, String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| format!("bad query string: {e}"))?;
        let flag = |name: &str, v: &str| match v {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("{name} must be true or false")),
        };
        let mut q = Self {
            namespaces: Vec::new(),
            updates: false,
            touches: false,
            from: EventsFrom::Now,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "namespace" => {
                    if v.is_empty() {
                        return Err("namespace must not be empty".into());
                    }
                    q.namespaces.push(v);
                }
                "updates" => q.updates = flag("updates", &v)?,
                "touches" => q.touches = flag("touches", &v)?,
                "from" => {
                    q.from = match v.as_str() {
                        "oldest" => EventsFrom::Oldest,
                        "now" => EventsFrom::Now,
                        c => EventsFrom::After(c.parse().map_err(|_| {
                            "from must be a cursor (a non-negative integer), oldest or now"
                                .to_owned()
                        })?),
                    }
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        if let Some(id) = last_event_id {
            let cursor = id
                .trim()
                .parse()
                .map_err(|_| "Last-Event-ID must be a cursor (a non-negative integer)")?;
            q.from = EventsFrom::After(cursor);
        }
        if q.namespaces.is_empty() {
            return Err("at least one namespace is required".into());
        }
        Ok(q)
    }

    /// The subscription.
    #[must_use]
    pub fn options(&self) -> SubscribeOptions {
        SubscribeOptions::new()
            .namespaces(self.namespaces.iter().cloned())
            .updates(self.updates)
            .touches(self.touches)
            .from(self.from)
    }
}

/// One SSE message for an event: `id` the cursor, `event` the kind, `data`
/// the JSON of `sessionctl watch --json`.
pub fn sse_event(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.cursor.to_string())
        .event(kind_name(&e.kind))
        .data(sessiond_client::cli::event_json(e).to_string())
}

/// The last SSE message of a stream that ended with `e`.
pub fn sse_error(e: &ClientError) -> SseEvent {
    match e {
        ClientError::CursorExpired { requested, oldest } => SseEvent::default()
            .event("cursor_expired")
            .data(json!({"requested": requested, "oldest": oldest}).to_string()),
        other => SseEvent::default()
            .event("error")
            .data(json!({"error": "subscription_ended", "message": other.to_string()}).to_string()),
    }
}

/// The answer for a subscription the daemon refused before it started.
fn refused(e: &ClientError) -> Response {
    match e {
        ClientError::CursorExpired { requested, oldest } => (
            StatusCode::GONE,
            Json(EventsError {
                error: "cursor_expired".to_owned(),
                message: format!("events after {requested} are no longer held; resume from oldest - 1, or from now"),
                requested: Some(*requested),
                oldest: Some(*oldest),
            }),
        )
            .into_response(),
        e if e.code() == Some(ErrorCode::Unauthorized) => fail(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the bridge may not read these namespaces",
        ),
        e if e.code() == Some(ErrorCode::InvalidRequest) => {
            fail(StatusCode::BAD_REQUEST, "bad_request", &e.to_string())
        }
        e if crate::apis::daemon_unavailable(e) => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the session store is unavailable",
        ),
        e => {
            tracing::warn!(error = %e, "the daemon refused an events subscription");
            fail(
                StatusCode::BAD_GATEWAY,
                "subscription_refused",
                "the session store refused the subscription",
            )
        }
    }
}

/// Session events as Server-Sent Events (administrators)
///
/// One message per event: `id` is the event's cursor, `event` its kind
/// (created, rotated, deleted, expired, updated, touched), `data` the event
/// as JSON (an `EventData`). A comment is sent every 15 s when idle.
/// Reconnecting with `Last-Event-ID` resumes after that cursor without
/// duplicates. Should the cursor expire while the stream runs, an
/// `event: cursor_expired` message with `{requested, oldest}` is sent and
/// the stream ends; another failure sends `event: error` and ends it.
/// Namespaces holding the bridge's credentials are refused.
#[utoipa::path(get, path = "/events", tag = "events",
    security(("bearer" = [])),
    params(
        ("namespace" = Vec<String>, Query, description = "A namespace to watch (repeatable).",
            style = Form, explode, min_items = 1),
        ("updates" = Option<bool>, Query, description = "Also `updated` events (attribute and ttl changes)."),
        ("touches" = Option<bool>, Query, description = "Also `touched` events (sliding deadlines moved)."),
        ("from" = Option<String>, Query, pattern = "^([0-9]+|oldest|now)$",
            description = "Resume after this cursor, or `oldest` (every event held), or `now` (the default)."),
        ("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]+$",
            description = "The last cursor received; takes precedence over `from`."),
    ),
    responses(
        (status = 200, description = "the event stream (each message's data is an EventData)",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "a bad parameter (or no namespace)", body = EventsError),
        (status = 401, description = "no bearer token, or one that is invalid or expired", body = EventsError),
        (status = 403, description = "the caller is not an administrator, a namespace holds the bridge's credentials, or the bridge's daemon token may not read a namespace", body = EventsError),
        (status = 410, description = "the resume cursor is older than the events the store holds (`oldest` says the oldest held)", body = EventsError),
        (status = 502, description = "the store refused the subscription", body = EventsError),
        (status = 503, description = "the store is unavailable or did not accept the subscription in time", body = EventsError),
    ))]
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let caller = match authenticate(&state, &headers).await {
        Ok(c) => c,
        Err(AuthError::Unavailable) => {
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the session store is unavailable",
            )
        }
        Err(AuthError::Missing | AuthError::Invalid) => {
            let mut r = fail(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an administrator's bearer token is required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    };
    if !caller.is_admin {
        return fail(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only administrators may watch events",
        );
    }
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("x"));
    let q = match EventsQuery::parse(query.as_deref().unwrap_or(""), last_event_id) {
        Ok(q) => q,
        Err(m) => return fail(StatusCode::BAD_REQUEST, "bad_request", &m),
    };
    if let Some(ns) = q
        .namespaces
        .iter()
        .find(|n| CREDENTIAL_NAMESPACES.contains(&n.as_str()))
    {
        return fail(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("namespace {ns:?} holds the bridge's credentials and cannot be watched"),
        );
    }
    let mut stream = state.client.subscribe(q.options());
    match tokio::time::timeout(SUBSCRIBE_WAIT, stream.subscribed()).await {
        Err(_) => {
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the session store did not accept the subscription in time",
            )
        }
        Ok(None) => {
            return match stream.next_event().await {
                Some(Err(e)) => refused(&e),
                _ => fail(
                    StatusCode::BAD_GATEWAY,
                    "subscription_refused",
                    "the session store ended the subscription",
                ),
            }
        }
        Ok(Some(_)) => {}
    }
    let body = futures_util::stream::unfold(Some(stream), |stream| async move {
        let mut stream = stream?;
        match stream.next_event().await? {
            Ok(e) => Some((Ok::<_, Infallible>(sse_event(&e)), Some(stream))),
            Err(e) => Some((Ok(sse_error(&e)), None)),
        }
    })
    // A bridge shutting down ends its streams instead of waiting for them.
    .take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use sessiond_client::{DeleteReason, EventKind, SessionId};

    #[test]
    fn the_query_and_last_event_id_are_read() {
        let q = EventsQuery::parse("namespace=a&namespace=b&updates&touches=false&from=7", None)
            .unwrap();
        assert_eq!(q.namespaces, ["a", "b"]);
        assert!(q.updates && !q.touches);
        assert_eq!(q.from, EventsFrom::After(7));
        // Last-Event-ID wins over from.
        let q = EventsQuery::parse("namespace=a&from=oldest", Some("41")).unwrap();
        assert_eq!(q.from, EventsFrom::After(41));
        let q = EventsQuery::parse("namespace=a", None).unwrap();
        assert_eq!(q.from, EventsFrom::Now);
        assert!(EventsQuery::parse("", None).is_err());
        assert!(EventsQuery::parse("namespace=a&from=x", None).is_err());
        assert!(EventsQuery::parse("namespace=a", Some("nope")).is_err());
        assert!(EventsQuery::parse("namespace=a&updates=maybe", None).is_err());
        assert!(EventsQuery::parse("namespace=a&bogus=1", None).is_err());
    }

    async fn body_of(events: Vec<SseEvent>) -> String {
        let stream = futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
        let response = Sse::new(stream).into_response();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// An event of `kind` at cursor `cursor`, of alice's session `id`.
    fn event(cursor: u64, id: SessionId, kind: EventKind) -> Event {
        Event {
            cursor,
            at_ms: 1_700_000_000_000,
            namespace: "app".into(),
            id,
            owner: Some("alice".into()),
            kind,
        }
    }

    #[tokio::test]
    async fn an_event_is_one_sse_message_with_its_cursor_as_id() {
        let id: SessionId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        let e = event(
            42,
            id,
            EventKind::Deleted {
                reason: DeleteReason::Delete,
            },
        );
        let text = body_of(vec![
            sse_event(&e),
            sse_error(&ClientError::CursorExpired {
                requested: 1,
                oldest: 9,
            }),
        ])
        .await;
        let mut messages = text.split("\n\n");
        let first = messages.next().unwrap();
        let lines: Vec<&str> = first.lines().collect();
        assert!(lines.contains(&"id: 42"), "{first}");
        assert!(lines.contains(&"event: deleted"), "{first}");
        let data = lines.iter().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["cursor"], 42);
        assert_eq!(v["reason"], "delete");
        assert_eq!(v["id"], id.to_string());
        let second = messages.next().unwrap();
        assert!(second.contains("event: cursor_expired"), "{second}");
        assert!(second.contains("\"oldest\":9"), "{second}");
    }

    /// `EventData` describes the JSON the client's `event_json` writes (a
    /// copy of its shape): every field of every kind is a property of it.
    #[test]
    fn event_data_describes_every_field_sent() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(EventData::schema()).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        let id: SessionId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        for kind in [
            EventKind::Created,
            EventKind::Rotated { to: id },
            EventKind::Deleted {
                reason: DeleteReason::OwnerLimit,
            },
            EventKind::Expired,
            EventKind::Updated { version: 3 },
            EventKind::Touched {
                expires_at_ms: Some(1_700_000_000_000),
            },
        ] {
            let e = event(1, id, kind);
            let sent = sessiond_client::cli::event_json(&e);
            for key in sent.as_object().unwrap().keys() {
                assert!(
                    properties.contains_key(key),
                    "{key} of {sent} is not in EventData"
                );
            }
        }
    }

    #[test]
    fn credential_namespaces_are_listed() {
        assert!(CREDENTIAL_NAMESPACES.contains(&crate::auth::ACCESS_NS));
        let (_, doc) = crate::documented_routes().split_for_parts();
        let op = doc.paths.paths["/events"].get.as_ref().unwrap();
        let ok = serde_json::to_value(&op.responses.responses["200"]).unwrap();
        assert!(ok["content"]["text/event-stream"].is_object(), "{ok}");
    }
}
