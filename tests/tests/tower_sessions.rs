//! The tower-sessions store against the real daemon: the trait's semantics
//! directly, and the middleware in an axum app over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use sessiond_client::tower_store::{DATA_ATTR, OWNER_KEY};
use sessiond_client::{Client, CreateOptions, SessionId, SessiondStore};
use sessiond_e2e::{daemon_bin, DaemonProcess};
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::{Session, SessionManagerLayer, SessionStore};

async fn setup() -> (DaemonProcess, Client, SessiondStore) {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    let store = SessiondStore::new(client.clone(), "web");
    (daemon, client, store)
}

fn record(expires_in: time::Duration) -> Record {
    let mut data = HashMap::new();
    data.insert(
        "user".to_string(),
        serde_json::json!({"name": "alice", "roles": ["a", "b"], "n": 1.5}),
    );
    data.insert(OWNER_KEY.to_string(), serde_json::json!("alice"));
    Record {
        id: Id::default(),
        data,
        expiry_date: OffsetDateTime::now_utc() + expires_in,
    }
}

#[tokio::test]
async fn the_store_follows_the_trait() {
    let (_daemon, client, store) = setup().await;
    let mut rec = record(time::Duration::hours(1));
    store.create(&mut rec).await.unwrap();
    let loaded = store.load(&rec.id).await.unwrap().unwrap();
    assert_eq!(loaded.data, rec.data, "lossless data round trip");
    assert!((loaded.expiry_date - rec.expiry_date).abs() < time::Duration::seconds(1));
    // Owned by the user named in the data: the owner index sees it.
    assert_eq!(
        client
            .list_by_owner("web", "alice", None, 10)
            .await
            .unwrap()
            .sessions
            .len(),
        1
    );

    rec.data.insert("visits".into(), serde_json::json!(2));
    store.save(&rec).await.unwrap();
    assert_eq!(
        store.load(&rec.id).await.unwrap().unwrap().data["visits"],
        2
    );

    assert!(store.load(&Id::default()).await.unwrap().is_none());

    store.delete(&rec.id).await.unwrap();
    assert!(store.load(&rec.id).await.unwrap().is_none());
    // A request that finishes after the logout cannot bring the session back.
    assert!(store.save(&rec).await.is_err());
    assert!(store.load(&rec.id).await.unwrap().is_none());
}

#[tokio::test]
async fn an_id_collision_on_create_gets_a_new_id() {
    let (_daemon, client, store) = setup().await;
    let mut rec = record(time::Duration::hours(1));
    let taken = rec.id;
    client
        .create(
            "web",
            CreateOptions::new()
                .id(SessionId(taken.0.to_le_bytes()))
                .attr(DATA_ATTR, "{}"),
        )
        .await
        .unwrap();
    store.create(&mut rec).await.unwrap();
    assert_ne!(rec.id, taken);
    assert!(store.load(&rec.id).await.unwrap().is_some());
}

#[tokio::test]
async fn records_expire_at_their_expiry_date() {
    let (_daemon, _client, store) = setup().await;
    let mut rec = record(time::Duration::milliseconds(300));
    store.create(&mut rec).await.unwrap();
    assert!(store.load(&rec.id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.load(&rec.id).await.unwrap().is_none());
    // Saving an already expired record ends it rather than reviving it.
    let mut old = record(time::Duration::milliseconds(-10));
    store.create(&mut old).await.unwrap();
    assert!(store.load(&old.id).await.unwrap().is_none());
}

async fn count(session: Session) -> String {
    let n = session.get::<u64>("n").await.unwrap().unwrap_or(0) + 1;
    session.insert("n", n).await.unwrap();
    n.to_string()
}

async fn logout(session: Session) -> &'static str {
    session.flush().await.unwrap();
    "bye"
}

#[tokio::test]
async fn the_middleware_keeps_sessions_in_sessiond() {
    let (_daemon, client, store) = setup().await;
    let app = Router::new()
        .route("/count", get(count))
        .route("/logout", post(logout))
        .layer(SessionManagerLayer::new(store).with_secure(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let get_count = || async {
        http.get(format!("{base}/count"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(get_count().await, "1");
    assert_eq!(get_count().await, "2");
    assert_eq!(
        client.stats().await.unwrap().records,
        1,
        "one session, in sessiond"
    );
    http.post(format!("{base}/logout")).send().await.unwrap();
    assert_eq!(client.stats().await.unwrap().records, 0);
    // The old cookie leads nowhere: a fresh session starts.
    assert_eq!(get_count().await, "1");
}
