//! The actix-session store against the real daemon: the trait's semantics
//! directly, then the middleware in an actix-web app over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time, Cookie, CookieJar, Key};
use actix_web::{web, HttpResponse, HttpServer};
use reqwest::cookie::CookieStore;
use reqwest::StatusCode;
use sessiond_client::actix_store::{session_id, session_key, DATA_ATTR, OWNER_KEY};
use sessiond_client::{Client, SessionId, SessiondActixStore, UpdateOptions, Value};
use sessiond_e2e::{daemon_bin, DaemonProcess};
use tokio::sync::Notify;

const NS: &str = "web";
/// The middleware's default cookie name.
const COOKIE: &str = "id";

async fn setup() -> (DaemonProcess, Client, SessiondActixStore) {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    let store = SessiondActixStore::new(client.clone(), NS);
    (daemon, client, store)
}

/// State as actix-session keeps it (values are JSON texts), with an owner.
fn state(owner: &str) -> HashMap<String, String> {
    HashMap::from([
        (OWNER_KEY.to_string(), format!("\"{owner}\"")),
        (
            "profile".to_string(),
            r#"{"name":"Zoë \"z\" \\ 東京 😀","n":[18446744073709551615,-0.0,0.30000000000000004]}"#
                .to_string(),
        ),
        ("a.key with spaces".to_string(), "\"x\"".to_string()),
    ])
}

fn key(s: &str) -> SessionKey {
    s.to_string().try_into().unwrap()
}

/// A second handle on the same key (`SessionKey` is not `Clone`).
fn same(k: &SessionKey) -> SessionKey {
    key(k.as_ref())
}

fn hour() -> time::Duration {
    time::Duration::hours(1)
}

/// The key is not in the message (nor the id's bytes in any form we print).
fn assert_no_key(msg: &str, k: &SessionKey) {
    assert!(!msg.contains(k.as_ref()), "{msg}");
    assert!(!msg.contains(&k.as_ref().replace('-', "")), "{msg}");
}

/// Waits (up to 30 s) until the daemon no longer has `id`.
async fn wait_gone(client: &Client, id: SessionId) {
    let started = Instant::now();
    while client.get(NS, id).await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the session outlived its ttl by far"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn save_load_update_delete() {
    let (_daemon, client, store) = setup().await;
    let st = state("alice");
    let k = store.save(st.clone(), &hour()).await.unwrap();
    let id = session_id(&k).expect("a key of the store's form");
    assert_eq!(store.load(&k).await.unwrap(), Some(st.clone()));

    // One sessiond session: the state in one attribute, the user as owner,
    // the ttl as idle ttl.
    let s = client.get(NS, id).await.unwrap().unwrap();
    assert_eq!(s.owner.as_deref(), Some("alice"));
    assert!(matches!(s.attr(DATA_ATTR), Some(Value::Str(_))));
    assert_eq!(s.attrs.len(), 1);
    assert_eq!(s.ttl.idle_ttl_ms, Some(3_600_000));
    assert_eq!(s.ttl.max_lifetime_ms, None);
    let page = client.list_by_owner(NS, "alice", None, 10).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(page.sessions[0].id, id);

    // An update replaces the whole map and keeps the key.
    let mut changed = st.clone();
    changed.remove("a.key with spaces");
    changed.insert("visits".into(), "2".into());
    let k2 = store
        .update(same(&k), changed.clone(), &time::Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(k2, k, "an update of a live session keeps its key");
    assert_eq!(store.load(&k).await.unwrap(), Some(changed));
    let s = client.get(NS, id).await.unwrap().unwrap();
    assert_eq!(s.ttl.idle_ttl_ms, Some(7_200_000));
    assert_eq!(s.owner.as_deref(), Some("alice"));

    store.delete(&k).await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert!(client.get(NS, id).await.unwrap().is_none());
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
    // Deleting what is not there is not an error.
    store.delete(&k).await.unwrap();
    store
        .delete(&session_key(SessionId::new_v4()))
        .await
        .unwrap();

    // Without the owner key, no owner; an empty state is a session too.
    let k = store.save(HashMap::new(), &hour()).await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), Some(HashMap::new()));
    let s = client
        .get(NS, session_id(&k).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.owner, None);
    // Every save draws a fresh key.
    let k3 = store.save(HashMap::new(), &hour()).await.unwrap();
    assert_ne!(k3, k);
}

#[tokio::test]
async fn malformed_or_unknown_keys_are_no_session_and_no_error() {
    let (_daemon, client, store) = setup().await;
    let live = store.save(state("alice"), &hour()).await.unwrap();
    for bad in [
        String::new(),
        "not a key".to_string(),
        live.as_ref().to_uppercase(),
        live.as_ref().replace('-', ""),
        format!("{}x", live.as_ref()),
        format!(" {}", live.as_ref()),
        "é".repeat(2000),
        "\u{0}".repeat(36),
        SessionId::new_v4().to_string(),
    ] {
        let k = key(&bad);
        assert_eq!(store.load(&k).await.unwrap(), None, "{bad:?}");
        store.update_ttl(&k, &hour()).await.unwrap();
        store.delete(&k).await.unwrap();
        // An update of what is not there saves a new session under a new key.
        let fresh = store
            .update(key(&bad), state("bob"), &hour())
            .await
            .unwrap();
        assert_ne!(fresh.as_ref(), bad);
        assert_eq!(store.load(&fresh).await.unwrap(), Some(state("bob")));
    }
    // The live session was not touched by any of it.
    assert_eq!(store.load(&live).await.unwrap(), Some(state("alice")));
    assert_eq!(
        client
            .list_by_owner(NS, "alice", None, 10)
            .await
            .unwrap()
            .sessions
            .len(),
        1
    );
}

#[tokio::test]
async fn an_update_after_delete_fails_and_does_not_resurrect_the_session() {
    let (_daemon, client, store) = setup().await;
    let k = store.save(state("alice"), &hour()).await.unwrap();
    let id = session_id(&k).unwrap();
    // A request loaded the session; meanwhile the user logged out.
    let loaded = store.load(&k).await.unwrap().unwrap();
    store.delete(&k).await.unwrap();
    match store.update(same(&k), loaded, &hour()).await {
        Err(UpdateError::Other(e)) => assert_no_key(&format!("{e:#}"), &k),
        other => panic!("expected an update error, got {other:?}"),
    }
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert!(client.get(NS, id).await.unwrap().is_none());
    // Not under a new key either: the user has no session at all.
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
    assert_eq!(client.stats().await.unwrap().records, 0);

    // The same through "log out everywhere" (the owner index).
    let k = store.save(state("alice"), &hour()).await.unwrap();
    let loaded = store.load(&k).await.unwrap().unwrap();
    assert_eq!(client.delete_by_owner(NS, "alice", None).await.unwrap(), 1);
    assert!(store.update(same(&k), loaded, &hour()).await.is_err());
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert_eq!(client.stats().await.unwrap().records, 0);
    // A ttl refresh of the deleted session does nothing and brings nothing back.
    store.update_ttl(&k, &hour()).await.unwrap();
    assert_eq!(client.stats().await.unwrap().records, 0);
}

#[tokio::test]
async fn an_update_of_an_expired_session_saves_it_under_a_new_key() {
    let (_daemon, client, store) = setup().await;
    let k = store
        .save(state("alice"), &time::Duration::seconds(1))
        .await
        .unwrap();
    let id = session_id(&k).unwrap();
    wait_gone(&client, id).await;
    assert_eq!(store.load(&k).await.unwrap(), None);

    let k2 = store
        .update(same(&k), state("alice"), &hour())
        .await
        .unwrap();
    assert_ne!(k2, k, "a new key, as actix-session's Redis store does");
    assert_eq!(store.load(&k2).await.unwrap(), Some(state("alice")));
    assert_eq!(
        store.load(&k).await.unwrap(),
        None,
        "the old key stays dead"
    );
    let owned = client.list_by_owner(NS, "alice", None, 10).await.unwrap();
    assert_eq!(owned.sessions.len(), 1);
    assert_eq!(owned.sessions[0].id, session_id(&k2).unwrap());
    assert_eq!(owned.sessions[0].ttl.idle_ttl_ms, Some(3_600_000));
}

#[tokio::test]
async fn update_ttl_sets_the_daemons_ttl() {
    let (_daemon, client, store) = setup().await;
    let k = store.save(state("alice"), &hour()).await.unwrap();
    let id = session_id(&k).unwrap();
    let before = client.get(NS, id).await.unwrap().unwrap();

    store
        .update_ttl(&k, &time::Duration::hours(5))
        .await
        .unwrap();
    let s = client.get(NS, id).await.unwrap().unwrap();
    assert_eq!(s.ttl.idle_ttl_ms, Some(5 * 3_600_000));
    let deadline = s.expires_at_ms.unwrap();
    assert!(deadline >= before.expires_at_ms.unwrap() + 4 * 3_600_000 - 1000);
    assert_eq!(s.attrs, before.attrs, "the state is untouched");

    // A short ttl: the daemon expires the session.
    store
        .update_ttl(&k, &time::Duration::milliseconds(300))
        .await
        .unwrap();
    assert_eq!(
        client.get(NS, id).await.unwrap().map(|s| s.ttl.idle_ttl_ms),
        Some(Some(300))
    );
    wait_gone(&client, id).await;
    assert_eq!(store.load(&k).await.unwrap(), None);
    // On an absent session it does nothing and creates nothing.
    store.update_ttl(&k, &hour()).await.unwrap();
    assert!(client.get(NS, id).await.unwrap().is_none());

    // No time left ends the session at once; so does saving with none.
    let k = store.save(state("alice"), &hour()).await.unwrap();
    store.update_ttl(&k, &time::Duration::ZERO).await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), None);
    let k = store
        .save(state("alice"), &time::Duration::seconds(-1))
        .await
        .unwrap();
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
}

#[tokio::test]
async fn errors_name_neither_the_key_nor_the_state() {
    let (mut daemon, client, store) = setup().await;
    let k = store.save(state("alice"), &hour()).await.unwrap();
    let id = session_id(&k).unwrap();
    // State that is not a map of strings: a deserialization error.
    for bad in [
        Value::Str(r#"{"secret": 3}"#.into()),
        Value::Str(r#""secret""#.into()),
        Value::Int(3),
    ] {
        client
            .update(NS, id, UpdateOptions::new().set(DATA_ATTR, bad))
            .await
            .unwrap();
        match store.load(&k).await {
            Err(LoadError::Deserialization(e)) => {
                let msg = format!("{e:#}");
                assert_no_key(&msg, &k);
                assert!(!msg.contains("secret"), "{msg}");
            }
            other => panic!("expected a deserialization error, got {other:?}"),
        }
    }
    // The daemon gone: `Other` errors everywhere.
    daemon.kill();
    let msgs = [
        match store.load(&k).await {
            Err(LoadError::Other(e)) => format!("{e:#}"),
            other => panic!("{other:?}"),
        },
        match store.save(state("alice"), &hour()).await {
            Err(SaveError::Other(e)) => format!("{e:#}"),
            other => panic!("{other:?}"),
        },
        match store.update(same(&k), state("secret"), &hour()).await {
            Err(UpdateError::Other(e)) => format!("{e:#}"),
            other => panic!("{other:?}"),
        },
        format!("{:#}", store.update_ttl(&k, &hour()).await.unwrap_err()),
        format!("{:#}", store.delete(&k).await.unwrap_err()),
    ];
    for msg in msgs {
        assert_no_key(&msg, &k);
        assert!(!msg.contains("secret"), "{msg}");
    }
}

// --- The middleware, in an actix-web app over real HTTP ---

/// Holds the `/slow` handler between loading the session and returning, so a
/// logout can happen while it is in flight.
#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

/// An anonymous counter.
async fn count(session: Session) -> actix_web::Result<String> {
    let n = session.get::<u64>("n")?.unwrap_or(0) + 1;
    session.insert("n", n)?;
    Ok(n.to_string())
}

/// Logs the user named in the body in: renew, then the owner.
async fn login(session: Session, user: String) -> actix_web::Result<&'static str> {
    session.renew();
    session.insert(OWNER_KEY, &user)?;
    session.insert("visits", 0u64)?;
    Ok("welcome")
}

/// `user:visits`, counting this visit, or a 401.
async fn me(session: Session) -> actix_web::Result<HttpResponse> {
    let Some(user) = session.get::<String>(OWNER_KEY)? else {
        return Ok(HttpResponse::Unauthorized().body("log in first"));
    };
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.insert("visits", visits)?;
    Ok(HttpResponse::Ok().body(format!("{user}:{visits}")))
}

async fn logout(session: Session) -> &'static str {
    session.purge();
    "bye"
}

async fn logout_everywhere(
    client: web::Data<Client>,
    session: Session,
) -> actix_web::Result<String> {
    let user = session
        .get::<String>(OWNER_KEY)?
        .ok_or_else(|| actix_web::error::ErrorUnauthorized("log in first"))?;
    let n = client
        .delete_by_owner(NS, &user, None)
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    session.purge();
    Ok(n.to_string())
}

async fn slow(gate: web::Data<Gate>, session: Session) -> actix_web::Result<&'static str> {
    session.insert("visits", 1000u64)?;
    gate.entered.notify_one();
    gate.release.notified().await;
    Ok("late")
}

struct App {
    base: String,
    /// The middleware's cookie key, to read (and forge) cookies.
    key: Key,
    gate: web::Data<Gate>,
}

impl App {
    /// The app on 127.0.0.1:0, its sessions in `store` with `ttl`. Cookies are
    /// signed, not encrypted, so that the tests can read the session key.
    async fn start(store: SessiondActixStore, ttl: time::Duration) -> Self {
        let key = Key::generate();
        let gate = web::Data::new(Gate::default());
        let client = web::Data::new(store.client().clone());
        let server = HttpServer::new({
            let (key, gate) = (key.clone(), gate.clone());
            move || {
                actix_web::App::new()
                    .app_data(client.clone())
                    .app_data(gate.clone())
                    .wrap(
                        SessionMiddleware::builder(store.clone(), key.clone())
                            .cookie_secure(false)
                            .cookie_content_security(CookieContentSecurity::Signed)
                            .session_lifecycle(BrowserSession::default().state_ttl(ttl))
                            .build(),
                    )
                    .route("/count", web::get().to(count))
                    .route("/login", web::post().to(login))
                    .route("/me", web::get().to(me))
                    .route("/logout", web::post().to(logout))
                    .route("/logout-everywhere", web::post().to(logout_everywhere))
                    .route("/slow", web::post().to(slow))
            }
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
        let base = format!("http://{}", server.addrs()[0]);
        tokio::spawn(server.run());
        Self { base, key, gate }
    }

    /// A browser with its own cookie jar.
    fn browser(&self) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        Browser {
            http: reqwest::Client::builder()
                .cookie_provider(jar.clone())
                .build()
                .unwrap(),
            jar,
            base: self.base.clone(),
        }
    }

    /// The session key inside a cookie value, if its signature holds.
    fn session_key(&self, cookie_value: &str) -> Option<SessionKey> {
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::parse_encoded(format!("{COOKIE}={cookie_value}")).ok()?);
        let c = jar.signed(&self.key).get(COOKIE)?;
        Some(key(c.value()))
    }

    /// A validly signed cookie value holding `value` as the session key.
    fn sign(&self, value: &str) -> String {
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.key)
            .add(Cookie::new(COOKIE, value.to_string()));
        let c = jar.delta().next().unwrap().encoded().to_string();
        c.strip_prefix(&format!("{COOKIE}="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    /// A request carrying exactly `cookie` (no jar).
    async fn raw(&self, post: bool, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let http = reqwest::Client::new();
        let url = format!("{}{path}", self.base);
        let mut req = if post { http.post(url) } else { http.get(url) };
        if let Some(c) = cookie {
            req = req.header(reqwest::header::COOKIE, format!("{COOKIE}={c}"));
        }
        req.send().await.unwrap()
    }
}

/// The session cookie a response sets, if any (an empty value is a removal).
fn set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{COOKIE}=")).map(str::to_string))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

struct Browser {
    http: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
    base: String,
}

impl Browser {
    async fn send(&self, post: bool, path: &str, body: &str) -> (StatusCode, String) {
        let url = format!("{}{path}", self.base);
        let req = if post {
            self.http.post(url).body(body.to_string())
        } else {
            self.http.get(url)
        };
        let res = req.send().await.unwrap();
        (res.status(), res.text().await.unwrap())
    }

    /// The session cookie's value in the jar.
    fn cookie(&self) -> Option<String> {
        let url = self.base.parse().unwrap();
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .unwrap()
            .split("; ")
            .find_map(|c| c.strip_prefix(&format!("{COOKIE}=")))
            .map(str::to_string)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_cookie_and_me_returns_the_users_data() {
    let (_daemon, client, store) = setup().await;
    let app = App::start(store.clone(), hour()).await;
    let alice = app.browser();
    assert_eq!(
        alice.send(false, "/me", "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(alice.cookie().is_none(), "no session for an empty state");

    assert_eq!(
        alice.send(true, "/login", "alice").await,
        (StatusCode::OK, "welcome".into())
    );
    let cookie = alice.cookie().expect("login sets a cookie");
    let k = app.session_key(&cookie).expect("a signed session key");
    let id = session_id(&k).expect("the store's key form");
    for visits in 1..=3 {
        assert_eq!(
            alice.send(false, "/me", "").await,
            (StatusCode::OK, format!("alice:{visits}"))
        );
    }
    assert_eq!(alice.cookie().unwrap(), cookie, "updates keep the key");
    // The session is in sessiond under the cookie's key, owned by alice,
    // with the middleware's ttl.
    let s = client.get(NS, id).await.unwrap().unwrap();
    assert_eq!(s.owner.as_deref(), Some("alice"));
    assert_eq!(s.ttl.idle_ttl_ms, Some(3_600_000));
    let st = store.load(&k).await.unwrap().unwrap();
    assert_eq!(st.get("visits").map(String::as_str), Some("3"));
    assert_eq!(client.stats().await.unwrap().records, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_renews_the_key_and_the_old_key_no_longer_loads() {
    let (_daemon, client, store) = setup().await;
    let app = App::start(store.clone(), hour()).await;
    let b = app.browser();
    assert_eq!(b.send(false, "/count", "").await.1, "1");
    assert_eq!(b.send(false, "/count", "").await.1, "2");
    let before = b.cookie().expect("an anonymous session");
    let old = app.session_key(&before).unwrap();
    assert!(store.load(&old).await.unwrap().is_some());

    assert_eq!(b.send(true, "/login", "alice").await.0, StatusCode::OK);
    let after = b.cookie().unwrap();
    let new = app.session_key(&after).unwrap();
    assert_ne!(new, old, "login renews the key");
    // The state came along; the old key is dead, in the store and the daemon.
    assert_eq!(b.send(false, "/count", "").await.1, "3");
    assert_eq!(store.load(&old).await.unwrap(), None);
    assert!(client
        .get(NS, session_id(&old).unwrap())
        .await
        .unwrap()
        .is_none());
    let owned = client.list_by_owner(NS, "alice", None, 10).await.unwrap();
    assert_eq!(owned.sessions.len(), 1);
    assert_eq!(owned.sessions[0].id, session_id(&new).unwrap());
    // Replaying the pre-login cookie gives a fresh, anonymous session.
    let res = app.raw(false, "/count", Some(&before)).await;
    let fresh = set_cookie(&res).expect("a new cookie");
    assert_eq!(res.text().await.unwrap(), "1");
    assert_ne!(app.session_key(&fresh).unwrap(), old);
    let res = app.raw(false, "/me", Some(&before)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_deletes_the_session_in_the_daemon() {
    let (_daemon, client, store) = setup().await;
    let app = App::start(store, hour()).await;
    let b = app.browser();
    b.send(true, "/login", "alice").await;
    let cookie = b.cookie().unwrap();
    let id = session_id(&app.session_key(&cookie).unwrap()).unwrap();
    assert!(client.get(NS, id).await.unwrap().is_some());

    let res = app.raw(true, "/logout", Some(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(set_cookie(&res).as_deref(), Some(""), "a removal cookie");
    assert!(client.get(NS, id).await.unwrap().is_none());
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
    // The old cookie now leads nowhere.
    let res = app.raw(false, "/me", Some(&cookie)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(client.stats().await.unwrap().records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_ends_every_session_of_the_user_only() {
    let (_daemon, client, store) = setup().await;
    let app = App::start(store, hour()).await;
    let (laptop, phone, bob) = (app.browser(), app.browser(), app.browser());
    laptop.send(true, "/login", "alice").await;
    phone.send(true, "/login", "alice").await;
    bob.send(true, "/login", "bob").await;
    for b in [&laptop, &phone] {
        assert_eq!(
            b.send(false, "/me", "").await,
            (StatusCode::OK, "alice:1".into())
        );
    }
    let phone_id = session_id(&app.session_key(&phone.cookie().unwrap()).unwrap()).unwrap();
    let owned = client.list_by_owner(NS, "alice", None, 10).await.unwrap();
    assert_eq!(owned.sessions.len(), 2);

    assert_eq!(
        laptop.send(true, "/logout-everywhere", "").await,
        (StatusCode::OK, "2".into())
    );
    assert!(laptop.cookie().is_none(), "the cookie is removed");
    // The phone's session is gone too, in the daemon and over HTTP.
    assert!(client.get(NS, phone_id).await.unwrap().is_none());
    assert_eq!(
        phone.send(false, "/me", "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
    // Bob is still logged in.
    assert_eq!(
        bob.send(false, "/me", "").await,
        (StatusCode::OK, "bob:1".into())
    );
    assert_eq!(
        client
            .list_by_owner(NS, "bob", None, 10)
            .await
            .unwrap()
            .sessions
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_after_the_ttl() {
    let (_daemon, client, store) = setup().await;
    let app = App::start(store, time::Duration::seconds(1)).await;
    let b = app.browser();
    b.send(true, "/login", "alice").await;
    let id = session_id(&app.session_key(&b.cookie().unwrap()).unwrap()).unwrap();
    let s = client.get(NS, id).await.unwrap().unwrap();
    assert_eq!(s.ttl.idle_ttl_ms, Some(1000));
    wait_gone(&client, id).await;
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
    assert_eq!(b.send(false, "/me", "").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_malformed_cookies_get_a_fresh_anonymous_session() {
    let (_daemon, client, store) = setup().await;
    let app = App::start(store, hour()).await;
    let b = app.browser();
    b.send(true, "/login", "alice").await;
    let real = b.cookie().unwrap();
    let real_key = app.session_key(&real).unwrap();

    let forged = [
        // Not signed by the app.
        "garbage".to_string(),
        String::new(),
        "%%%".to_string(),
        real_key.as_ref().to_string(),
        format!("{}x", real),
        "A".repeat(3000),
        // Signed by the app, but not a key of the store's form.
        app.sign("not-a-session-key"),
        app.sign(&real_key.as_ref().to_uppercase()),
        app.sign(&"é".repeat(100)),
        // Signed and well formed, but no session.
        app.sign(&SessionId::new_v4().to_string()),
    ];
    for cookie in &forged {
        let res = app.raw(false, "/count", Some(cookie)).await;
        assert_eq!(res.status(), StatusCode::OK, "{cookie:?}");
        let set = set_cookie(&res).expect("a new cookie");
        let fresh = app.session_key(&set).expect("a cookie of the app");
        assert_ne!(fresh, real_key);
        assert_eq!(res.text().await.unwrap(), "1", "{cookie:?}");
        let res = app.raw(false, "/me", Some(cookie)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{cookie:?}");
    }
    // Alice's session is untouched.
    assert_eq!(
        b.send(false, "/me", "").await,
        (StatusCode::OK, "alice:1".into())
    );
    assert_eq!(
        client
            .list_by_owner(NS, "alice", None, 10)
            .await
            .unwrap()
            .sessions
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_logout_cannot_bring_the_session_back() {
    let (_daemon, client, store) = setup().await;
    let app = Arc::new(App::start(store, hour()).await);
    let b = app.browser();
    b.send(true, "/login", "alice").await;
    let cookie = b.cookie().unwrap();

    // A slow request has loaded and changed the session...
    let slow = tokio::spawn({
        let (app, cookie) = (app.clone(), cookie.clone());
        async move { app.raw(true, "/slow", Some(&cookie)).await.status() }
    });
    app.gate.entered.notified().await;
    // ...when the user logs out everywhere from another tab.
    assert_eq!(
        b.send(true, "/logout-everywhere", "").await,
        (StatusCode::OK, "1".into())
    );
    app.gate.release.notify_one();
    // Its update is refused (the daemon's tombstone), so it fails...
    assert_eq!(slow.await.unwrap(), StatusCode::INTERNAL_SERVER_ERROR);
    // ...and alice has no session, under the old key or a new one.
    assert!(client
        .list_by_owner(NS, "alice", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
    assert_eq!(client.stats().await.unwrap().records, 0);
    let res = app.raw(false, "/me", Some(&cookie)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
