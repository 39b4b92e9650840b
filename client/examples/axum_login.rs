//! A small axum app keeping its cookie sessions in sessiond.
//!
//! ```sh
//! cargo run -p sessiond                      # the daemon, in another terminal
//! cargo run -p sessiond-client --example axum_login --features tower-sessions
//! curl -c jar -H 'content-type: application/json' -d '{"username":"alice","password":"demo"}' localhost:3000/login
//! curl -b jar localhost:3000/me              # per-user data kept in the session
//! curl -b jar localhost:3000/sessions        # every session of alice (owner index)
//! curl -b jar -X POST localhost:3000/logout-everywhere
//! ```
//!
//! `SESSIOND_ADDR` (default 127.0.0.1:7379) names the daemon, `PORT` (default
//! 3000) the HTTP port.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond_client::tower_store::OWNER_KEY;
use sessiond_client::{Client, SessiondStore};
use tower_sessions::cookie::time::Duration;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// The sessiond namespace of this app's sessions.
const NAMESPACE: &str = "axum-example";

type Reply = Result<Json<Value>, (StatusCode, String)>;

fn internal(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// Logs in. A demo: every user's password is "demo"; a real app checks a
/// password hash. The session id is rotated at login (session-fixation
/// defence), and the user becomes the session's owner in sessiond.
async fn login(session: Session, Json(req): Json<Login>) -> Reply {
    if req.password != "demo" || req.username.is_empty() {
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

/// The user's sessions, from sessiond's owner index. Ids are bearer secrets,
/// so only their metadata is shown.
async fn sessions(State(client): State<Client>, session: Session) -> Reply {
    let user = user(&session).await?;
    let page = client
        .list_by_owner(NAMESPACE, &user, None, 100)
        .await
        .map_err(internal)?;
    let list: Vec<Value> = page
        .sessions
        .iter()
        .map(|s| json!({ "created_at_ms": s.created_at_ms, "expires_at_ms": s.expires_at_ms }))
        .collect();
    Ok(Json(json!({ "user": user, "sessions": list })))
}

/// Revokes every session of the user, this one included.
async fn logout_everywhere(State(client): State<Client>, session: Session) -> Reply {
    let user = user(&session).await?;
    let revoked = client
        .delete_by_owner(NAMESPACE, &user, None)
        .await
        .map_err(internal)?;
    session.flush().await.map_err(internal)?;
    Ok(Json(json!({ "revoked": revoked })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("SESSIOND_ADDR").unwrap_or_else(|_| "127.0.0.1:7379".into());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let client = Client::connect(addr).await?;
    let sessions_layer = SessionManagerLayer::new(SessiondStore::new(client.clone(), NAMESPACE))
        // Plain http on localhost for the demo; behind HTTPS keep Secure on.
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(Duration::hours(1)));
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/sessions", get(sessions))
        .route("/logout-everywhere", post(logout_everywhere))
        .layer(sessions_layer)
        .with_state(client);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("axum_login on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
