//! A small actix-web app keeping its cookie sessions in sessiond: actix-session
//! with [`SessiondActixStore`] for the session itself, and the raw [`Client`]
//! for what a cookie store cannot do (revoke every session of a user).
//!
//! ```sh
//! cargo run -p sessiond -- --data-dir /tmp/sessiond-demo     # the daemon
//! cargo run -p sessiond-client --example actix_login --features actix-session
//! curl -c jar -b jar -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"demo"}' localhost:3000/login
//! curl -c jar -b jar localhost:3000/me          # a visit counter kept in the session
//! curl -c jar -b jar -X POST localhost:3000/logout-everywhere
//! curl -c jar -b jar -X POST localhost:3000/logout
//! ```
//!
//! `SESSIOND_ADDR` (default 127.0.0.1:7379) names the daemon, `PORT` (default
//! 3000) the HTTP port on 127.0.0.1. The cookie key is drawn at start, so a
//! restart logs everyone out (their sessions stay in sessiond until they
//! expire); a real app loads a fixed 64-byte key from its secrets.

use actix_session::config::PersistentSession;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time::Duration, Key};
use actix_web::http::StatusCode;
use actix_web::{get, post, web, App, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::json;
use sessiond_client::actix_store::OWNER_KEY;
use sessiond_client::{Client, SessiondActixStore};

/// The sessiond namespace of this app's sessions.
const NAMESPACE: &str = "actix-example";

/// The demo's users and passwords. A real app keeps argon2 hashes in a
/// database and compares them in constant time; this is only a demo.
const USERS: &[(&str, &str)] = &[("alice", "demo"), ("bob", "demo")];

type Reply = actix_web::Result<HttpResponse>;

/// An error response with `status` and a short message.
fn status(status: StatusCode, msg: &str) -> actix_web::Error {
    actix_web::error::InternalError::new(msg.to_string(), status).into()
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// Logs in: checks the demo password, then renews the session (the
/// session-fixation defence: a key planted before login is worthless after it)
/// and records the user under [`OWNER_KEY`]. A renewed session is saved as a
/// new sessiond session, created with the user as its owner.
#[post("/login")]
async fn login(session: Session, req: web::Json<Login>) -> Reply {
    if !USERS.contains(&(req.username.as_str(), req.password.as_str())) {
        return Err(status(
            StatusCode::UNAUTHORIZED,
            "wrong username or password",
        ));
    }
    session.renew();
    session.insert(OWNER_KEY, &req.username)?;
    session.insert("visits", 0u64)?;
    Ok(HttpResponse::Ok().json(json!({ "user": req.username })))
}

/// The logged-in user, or a 401.
fn user(session: &Session) -> actix_web::Result<String> {
    session
        .get::<String>(OWNER_KEY)?
        .ok_or_else(|| status(StatusCode::UNAUTHORIZED, "log in first"))
}

/// Per-user data kept in the session: a visit counter.
#[get("/me")]
async fn me(session: Session) -> Reply {
    let user = user(&session)?;
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.insert("visits", visits)?;
    Ok(HttpResponse::Ok().json(json!({ "user": user, "visits": visits })))
}

/// Logs out here: the middleware deletes the session and removes the cookie.
#[post("/logout")]
async fn logout(session: Session) -> Reply {
    session.purge();
    Ok(HttpResponse::Ok().json(json!({ "logged_out": true })))
}

/// Revokes every session of the user, this one included, through sessiond's
/// owner index. A request of another device that is running right now cannot
/// bring its session back: its save hits the daemon's tombstone and fails.
#[post("/logout-everywhere")]
async fn logout_everywhere(client: web::Data<Client>, session: Session) -> Reply {
    let user = user(&session)?;
    let revoked = client
        .delete_by_owner(NAMESPACE, &user, None)
        .await
        // Client and daemon messages never hold a session id.
        .map_err(actix_web::error::ErrorInternalServerError)?;
    // Already deleted in sessiond; this removes the cookie.
    session.purge();
    Ok(HttpResponse::Ok().json(json!({ "user": user, "revoked": revoked })))
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("SESSIOND_ADDR").unwrap_or_else(|_| "127.0.0.1:7379".into());
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let client = Client::connect(addr).await?;
    let store = SessiondActixStore::new(client.clone(), NAMESPACE);
    // One key for every worker, so that each can read the others' cookies.
    let key = Key::generate();
    let server = HttpServer::new(move || {
        let sessions = SessionMiddleware::builder(store.clone(), key.clone())
            // Plain HTTP on localhost for the demo; behind HTTPS keep Secure on.
            .cookie_secure(false)
            // The daemon expires a session an hour after its last change.
            .session_lifecycle(PersistentSession::default().session_ttl(Duration::hours(1)))
            .build();
        App::new()
            .app_data(web::Data::new(client.clone()))
            .wrap(sessions)
            .service(login)
            .service(me)
            .service(logout)
            .service(logout_everywhere)
    })
    .bind(("127.0.0.1", port))?;
    for a in server.addrs() {
        println!("actix_login listening on http://{a}");
    }
    server.run().await?;
    Ok(())
}
