//! The tower-sessions store against the real daemon: the trait's semantics
//! directly, then the middleware in an axum app over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use sessiond_client::tower_store::{sessiond_id, DATA_ATTR, OWNER_KEY};
use sessiond_client::{Client, CreateOptions, SessiondStore, Value};
use sessiond_e2e::{daemon_bin, DaemonProcess};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::Error as StoreError;
use tower_sessions::{Session, SessionManagerLayer, SessionStore};

const NS: &str = "web";

async fn setup() -> (DaemonProcess, Client, SessiondStore) {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    let store = SessiondStore::new(client.clone(), NS);
    (daemon, client, store)
}

/// Data that exercises JSON: nesting, every value kind, big integers, floats
/// that need all 17 digits, escapes and non-ASCII text.
fn rich_data() -> HashMap<String, serde_json::Value> {
    let mut data = HashMap::new();
    data.insert(
        "user".to_string(),
        json!({
            "name": "Zoë \"z\" \\ 東京 \u{1F600}",
            "roles": ["admin", "dev"],
            "prefs": {"theme": null, "tz": {"offset": -5.5, "dst": true}, "empty": {}},
            "limits": [u64::MAX, i64::MIN, 0, []],
        }),
    );
    data.insert(
        "floats".to_string(),
        json!([0.1 + 0.2, 1.0 / 3.0, 2.2250738585072014e-308, -0.0, 1e300]),
    );
    data.insert("a.key with spaces and dots".to_string(), json!("x"));
    data.insert(OWNER_KEY.to_string(), json!("alice"));
    data
}

fn record(data: HashMap<String, serde_json::Value>, expires_in: time::Duration) -> Record {
    Record {
        id: Id::default(),
        data,
        expiry_date: OffsetDateTime::now_utc() + expires_in,
    }
}

/// The float bits of `v["floats"]`, so that a lost last bit shows.
fn float_bits(data: &HashMap<String, serde_json::Value>) -> Vec<u64> {
    data["floats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_f64().unwrap().to_bits())
        .collect()
}

/// Neither form of the id (the cookie's base64, sessiond's hex) is in `msg`.
fn assert_no_id(msg: &str, id: Id) {
    assert!(!msg.contains(&id.to_string()), "{msg}");
    assert!(!msg.contains(&sessiond_id(&id).to_string()), "{msg}");
    assert!(!msg.contains(&id.0.to_string()), "{msg}");
}

#[tokio::test]
async fn create_load_save_delete() {
    let (_daemon, client, store) = setup().await;
    let mut rec = record(rich_data(), time::Duration::hours(1));
    store.create(&mut rec).await.unwrap();

    let loaded = store.load(&rec.id).await.unwrap().unwrap();
    assert_eq!(loaded.id, rec.id);
    assert_eq!(loaded.data, rec.data, "lossless data round trip");
    assert_eq!(float_bits(&loaded.data), float_bits(&rec.data));
    // The expiry date comes back to the nanosecond (kept beside the daemon's
    // millisecond deadline), and so does the whole record.
    assert_eq!(
        loaded.expiry_date, rec.expiry_date,
        "the expiry date exactly as saved"
    );
    assert_eq!(loaded, rec, "the record exactly as saved");
    // One sessiond session, owned by the user named in the data.
    let s = client.get(NS, sessiond_id(&rec.id)).await.unwrap().unwrap();
    assert_eq!(s.owner.as_deref(), Some("alice"));
    assert!(matches!(s.attr(DATA_ATTR), Some(Value::Str(_))));
    let page = client.list_by_owner(NS, "alice", None, 10).await.unwrap();
    assert_eq!(page.sessions.len(), 1);

    // A save replaces the data: a removed key is gone, a new one is there.
    rec.data.remove("a.key with spaces and dots");
    rec.data.insert("visits".into(), json!(2));
    rec.expiry_date = OffsetDateTime::now_utc() + time::Duration::hours(2);
    store.save(&rec).await.unwrap();
    let loaded = store.load(&rec.id).await.unwrap().unwrap();
    assert_eq!(loaded.data, rec.data);
    assert_eq!(
        loaded.expiry_date, rec.expiry_date,
        "the expiry date exactly as saved"
    );
    assert_eq!(loaded, rec, "the record exactly as saved");

    store.delete(&rec.id).await.unwrap();
    assert!(store.load(&rec.id).await.unwrap().is_none());
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
    // Deleting what is not there is not an error.
    store.delete(&Id::default()).await.unwrap();
}

#[tokio::test]
async fn load_of_an_unknown_id_is_none() {
    let (_daemon, _client, store) = setup().await;
    assert!(store.load(&Id::default()).await.unwrap().is_none());
    assert!(store.load(&Id(0)).await.unwrap().is_none());
}

#[tokio::test]
async fn save_of_a_new_id_creates_it() {
    let (_daemon, client, store) = setup().await;
    let rec = record(rich_data(), time::Duration::hours(1));
    store.save(&rec).await.unwrap();
    assert_eq!(store.load(&rec.id).await.unwrap().unwrap().data, rec.data);
    let s = client.get(NS, sessiond_id(&rec.id)).await.unwrap().unwrap();
    assert_eq!(
        s.owner.as_deref(),
        Some("alice"),
        "the upsert sets the owner"
    );
}

#[tokio::test]
async fn records_expire_at_their_expiry_date() {
    let (_daemon, client, store) = setup().await;
    let mut rec = record(rich_data(), time::Duration::seconds(2));
    store.create(&mut rec).await.unwrap();
    assert!(store.load(&rec.id).await.unwrap().is_some());
    let started = Instant::now();
    loop {
        if store.load(&rec.id).await.unwrap().is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the record outlived its expiry date by far"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Never before its date (a little slack for millisecond rounding).
    assert!(OffsetDateTime::now_utc() >= rec.expiry_date - time::Duration::milliseconds(50));
    // The daemon itself dropped it: the owner index no longer lists it.
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());

    // Created already expired: nothing to load.
    let mut old = record(rich_data(), time::Duration::seconds(-1));
    store.create(&mut old).await.unwrap();
    assert!(store.load(&old.id).await.unwrap().is_none());

    // Saved past its expiry date: the live session ends.
    let mut ending = record(rich_data(), time::Duration::hours(1));
    store.create(&mut ending).await.unwrap();
    ending.expiry_date = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    store.save(&ending).await.unwrap();
    assert!(store.load(&ending.id).await.unwrap().is_none());
    assert!(client
        .get(NS, sessiond_id(&ending.id))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn an_id_collision_on_create_draws_a_new_id() {
    let (_daemon, client, store) = setup().await;
    let mut rec = record(rich_data(), time::Duration::hours(1));
    let taken = rec.id;
    client
        .create(
            NS,
            CreateOptions::new()
                .id(sessiond_id(&taken))
                .owner("mallory")
                .attr(DATA_ATTR, r#"{"theirs":true}"#),
        )
        .await
        .unwrap();
    store.create(&mut rec).await.unwrap();
    assert_ne!(rec.id, taken, "a new id, not the taken one");
    assert_eq!(store.load(&rec.id).await.unwrap().unwrap().data, rec.data);
    // The other session is untouched.
    let theirs = store.load(&taken).await.unwrap().unwrap();
    assert_eq!(theirs.data, HashMap::from([("theirs".into(), json!(true))]));
    let s = client.get(NS, sessiond_id(&taken)).await.unwrap().unwrap();
    assert_eq!(s.owner.as_deref(), Some("mallory"));
}

#[tokio::test]
async fn a_recently_deleted_id_is_not_reused_by_create() {
    let (_daemon, _client, store) = setup().await;
    let mut first = record(rich_data(), time::Duration::hours(1));
    store.create(&mut first).await.unwrap();
    store.delete(&first.id).await.unwrap();
    // A record carrying the logged-out id (the daemon answers Gone).
    let mut again = record(rich_data(), time::Duration::hours(1));
    again.id = first.id;
    store.create(&mut again).await.unwrap();
    assert_ne!(again.id, first.id);
    assert!(store.load(&first.id).await.unwrap().is_none());
    assert!(store.load(&again.id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_save_after_delete_fails_and_does_not_resurrect_the_session() {
    let (_daemon, client, store) = setup().await;
    let mut rec = record(rich_data(), time::Duration::hours(1));
    store.create(&mut rec).await.unwrap();

    // A request loaded the session; meanwhile the user logged out.
    let in_flight = store.load(&rec.id).await.unwrap().unwrap();
    store.delete(&rec.id).await.unwrap();
    match store.save(&in_flight).await {
        Err(StoreError::Backend(msg)) => assert_no_id(&msg, rec.id),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(store.load(&rec.id).await.unwrap().is_none());
    assert!(client
        .get(NS, sessiond_id(&rec.id))
        .await
        .unwrap()
        .is_none());

    // The same through "log out everywhere" (the owner index).
    let mut other = record(rich_data(), time::Duration::hours(1));
    store.create(&mut other).await.unwrap();
    let in_flight = store.load(&other.id).await.unwrap().unwrap();
    assert_eq!(client.delete_by_owner(NS, "alice", None).await.unwrap(), 1);
    assert!(store.save(&in_flight).await.is_err());
    assert!(store.load(&other.id).await.unwrap().is_none());
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
}

#[tokio::test]
async fn errors_do_not_name_the_session() {
    let (mut daemon, client, store) = setup().await;
    let mut rec = record(rich_data(), time::Duration::hours(1));
    store.create(&mut rec).await.unwrap();
    // A session whose data attribute is not JSON: a decode error.
    client
        .update(
            NS,
            sessiond_id(&rec.id),
            sessiond_client::UpdateOptions::new().set(DATA_ATTR, 3i64),
        )
        .await
        .unwrap();
    match store.load(&rec.id).await {
        Err(StoreError::Decode(msg)) => assert_no_id(&msg, rec.id),
        other => panic!("expected a decode error, got {other:?}"),
    }
    // The daemon gone: backend errors.
    daemon.kill();
    let err = store.load(&rec.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert_no_id(&err.to_string(), rec.id);
}

// --- The middleware, in an axum app over real HTTP ---

/// Holds the `/slow` handler between loading the session and returning, so a
/// logout can happen while it is in flight.
#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

async fn count(session: Session) -> String {
    let n = session.get::<u64>("n").await.unwrap().unwrap_or(0) + 1;
    session.insert("n", n).await.unwrap();
    n.to_string()
}

async fn login(session: Session) -> &'static str {
    session.cycle_id().await.unwrap();
    session.insert(OWNER_KEY, "alice").await.unwrap();
    "welcome"
}

async fn logout(session: Session) -> &'static str {
    session.flush().await.unwrap();
    "bye"
}

async fn slow(State(gate): State<Arc<Gate>>, session: Session) -> &'static str {
    session.insert("n", 1000u64).await.unwrap();
    gate.entered.notify_one();
    gate.release.notified().await;
    "late"
}

/// The `id` cookie a response sets, if any (an empty value is a removal).
fn set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("id="))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

struct App {
    base: String,
    http: reqwest::Client,
}

impl App {
    async fn start(store: SessiondStore, gate: Arc<Gate>) -> Self {
        let app = Router::new()
            .route("/count", get(count))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/slow", post(slow))
            .with_state(gate)
            .layer(SessionManagerLayer::new(store).with_secure(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // No cookie store: each request carries exactly the cookie we give it.
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, post: bool, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let url = format!("{}{path}", self.base);
        let mut req = if post {
            self.http.post(url)
        } else {
            self.http.get(url)
        };
        if let Some(c) = cookie {
            req = req.header(reqwest::header::COOKIE, format!("id={c}"));
        }
        req.send().await.unwrap()
    }

    /// GET /count: the counter it answers and the cookie it sets.
    async fn count(&self, cookie: Option<&str>) -> (String, Option<String>) {
        let res = self.send(false, "/count", cookie).await;
        assert_eq!(res.status(), StatusCode::OK);
        let set = set_cookie(&res);
        (res.text().await.unwrap(), set)
    }
}

fn id_of(cookie: &str) -> Id {
    cookie.parse().unwrap()
}

#[tokio::test]
async fn the_middleware_keeps_sessions_in_sessiond() {
    let (_daemon, client, store) = setup().await;
    let app = App::start(store, Arc::default()).await;

    let (n, c1) = app.count(None).await;
    assert_eq!(n, "1");
    let c1 = c1.expect("a session cookie is set");
    assert_eq!(app.count(Some(&c1)).await.0, "2");
    assert_eq!(app.count(Some(&c1)).await.0, "3");
    // The session lives in sessiond, under the cookie's id.
    let s = client.get(NS, sessiond_id(&id_of(&c1))).await.unwrap();
    assert!(s.is_some(), "the cookie's session is in sessiond");
    assert_eq!(client.stats().await.unwrap().records, 1);

    // Login rotates the id: the data moves to a new cookie, the old one is dead.
    let res = app.send(true, "/login", Some(&c1)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let c2 = set_cookie(&res).expect("login sets a new cookie");
    assert_ne!(c2, c1);
    assert_eq!(app.count(Some(&c2)).await.0, "4");
    let owned = client.list_by_owner(NS, "alice", None, 10).await.unwrap();
    assert_eq!(owned.sessions.len(), 1);
    assert_eq!(owned.sessions[0].id, sessiond_id(&id_of(&c2)));
    let (n, fresh) = app.count(Some(&c1)).await;
    assert_eq!(n, "1", "the pre-login cookie leads to a fresh session");
    assert_ne!(fresh.expect("a new cookie"), c1);

    // Logout: the session is deleted and its cookie removed.
    let res = app.send(true, "/logout", Some(&c2)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(set_cookie(&res).as_deref(), Some(""), "a removal cookie");
    assert!(client
        .get(NS, sessiond_id(&id_of(&c2)))
        .await
        .unwrap()
        .is_none());
    // A request with the old cookie gets a fresh, empty session.
    let (n, c3) = app.count(Some(&c2)).await;
    assert_eq!(n, "1");
    let c3 = c3.expect("a new cookie");
    assert_ne!(c3, c2);
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
}

#[tokio::test]
async fn a_request_in_flight_at_logout_cannot_bring_the_session_back() {
    let (_daemon, client, store) = setup().await;
    let gate = Arc::new(Gate::default());
    let app = Arc::new(App::start(store, gate.clone()).await);
    let (_, cookie) = app.count(None).await;
    let cookie = cookie.unwrap();

    // A slow request has loaded and changed the session...
    let slow = tokio::spawn({
        let (app, cookie) = (app.clone(), cookie.clone());
        async move { app.send(true, "/slow", Some(&cookie)).await.status() }
    });
    gate.entered.notified().await;
    // ...when the user logs out in another tab.
    let res = app.send(true, "/logout", Some(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    gate.release.notify_one();
    // Its save is refused (the daemon's tombstone), so it fails...
    assert_eq!(slow.await.unwrap(), StatusCode::INTERNAL_SERVER_ERROR);
    // ...and the logged-out session stays gone.
    assert!(client
        .get(NS, sessiond_id(&id_of(&cookie)))
        .await
        .unwrap()
        .is_none());
    assert_eq!(app.count(Some(&cookie)).await.0, "1");
}
