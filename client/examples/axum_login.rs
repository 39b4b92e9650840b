//! A small axum app keeping its cookie sessions in sessiond: tower-sessions with
//! [`SessiondStore`] for the session itself, and the raw [`Client`] for what a
//! cookie store cannot do (list and revoke every session of a user).
//!
//! ```sh
//! cargo run -p sessiond -- --data-dir /tmp/sessiond-demo     # the daemon
//! cargo run -p sessiond-client --example axum_login --features tower-sessions
//! curl -c jar -b jar -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"demo"}' localhost:3000/login
//! curl -c jar -b jar localhost:3000/me          # a visit counter kept in the session
//! curl -c jar -b jar localhost:3000/sessions    # every session of alice (owner index)
//! curl -c jar -b jar -X POST localhost:3000/logout-everywhere
//! ```
//!
//! `SESSIOND_ADDR` (default 127.0.0.1:7379) names the daemon, `PORT` (default
//! 3000) the HTTP port on 127.0.0.1.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond_client::tower_store::{sessiond_id, OWNER_KEY};
use sessiond_client::{Client, SessiondStore};
use tower_sessions::cookie::time::Duration;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// The sessiond namespace of this app's sessions.
const NAMESPACE: &str = "axum-example";

/// The demo's users and passwords. A real app keeps argon2 hashes in a
/// database and compares them in constant time; this is only a demo.
const USERS: &[(&str, &str)] = &[("alice", "demo"), ("bob", "demo")];

type Reply = Result<Json<Value>, (StatusCode, String)>;

/// A 500 for a failure of the store or the daemon. Their messages never hold
/// a session id, so they are safe to show in a demo.
fn internal(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// Logs in: checks the demo password, then rotates the session id (the
/// session-fixation defence: an id planted before login is worthless after it)
/// and records the user under [`OWNER_KEY`]. Because `cycle_id` makes the next
/// save a create, sessiond creates the new session with the user as its owner.
async fn login(session: Session, Json(req): Json<Login>) -> Reply {
    if !USERS.contains(&(req.username.as_str(), req.password.as_str())) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "wrong username or password".into(),
        ));
    }
    session.cycle_id().await.map_err(internal)?;
    session
        .insert(OWNER_KEY, &req.username)
        .await
        .map_err(internal)?;
    session.insert("visits", 0u64).await.map_err(internal)?;
    Ok(Json(json!({ "user": req.username })))
}

/// The logged-in user, or a 401.
async fn user(session: &Session) -> Result<String, (StatusCode, String)> {
    session
        .get::<String>(OWNER_KEY)
        .await
        .map_err(internal)?
        .ok_or((StatusCode::UNAUTHORIZED, "log in first".into()))
}

/// Per-user data kept in the session: a visit counter.
async fn me(session: Session) -> Reply {
    let user = user(&session).await?;
    let visits = session
        .get::<u64>("visits")
        .await
        .map_err(internal)?
        .unwrap_or(0)
        + 1;
    session.insert("visits", visits).await.map_err(internal)?;
    Ok(Json(json!({ "user": user, "visits": visits })))
}

/// The user's live sessions, from sessiond's owner index. Ids are bearer
/// secrets, so only their metadata is shown, and which one is this one.
async fn sessions(State(client): State<Client>, session: Session) -> Reply {
    let user = user(&session).await?;
    let current = session.id().map(|id| sessiond_id(&id));
    let mut list = Vec::new();
    let mut after = None;
    loop {
        let page = client
            .list_by_owner(NAMESPACE, &user, after, 100)
            .await
            .map_err(internal)?;
        list.extend(page.sessions.iter().map(|s| {
            json!({
                "current": Some(s.id) == current,
                "created_at_ms": s.created_at_ms,
                "last_active_ms": s.last_active_ms,
                "expires_at_ms": s.expires_at_ms,
            })
        }));
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    Ok(Json(json!({ "user": user, "sessions": list })))
}

/// Revokes every session of the user, this one included. A request of another
/// device that is running right now cannot bring its session back: its save
/// hits the daemon's tombstone and fails.
async fn logout_everywhere(State(client): State<Client>, session: Session) -> Reply {
    let user = user(&session).await?;
    let revoked = client
        .delete_by_owner(NAMESPACE, &user, None)
        .await
        .map_err(internal)?;
    // Already deleted in sessiond; this empties the session so the middleware
    // removes the cookie instead of saving it again.
    session.flush().await.map_err(internal)?;
    Ok(Json(json!({ "user": user, "revoked": revoked })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("SESSIOND_ADDR").unwrap_or_else(|_| "127.0.0.1:7379".into());
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let client = Client::connect(addr).await?;
    let session_layer = SessionManagerLayer::new(SessiondStore::new(client.clone(), NAMESPACE))
        // Plain HTTP on localhost for the demo; behind HTTPS keep Secure on.
        .with_secure(false)
        // The daemon expires a session an hour after its last change.
        .with_expiry(Expiry::OnInactivity(Duration::hours(1)));
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/sessions", get(sessions))
        .route("/logout-everywhere", post(logout_everywhere))
        .layer(session_layer)
        .with_state(client);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("axum_login listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
