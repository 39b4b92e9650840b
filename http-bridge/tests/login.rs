//! login-session-api.md over real HTTP against the real daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{daemon, login, Call, Tokens};

use std::time::Duration;

use serde_json::{json, Value};
use sessiond_client::{Client, SessionId, UpdateOptions};
use sessiond_http::{auth, users};

async fn refresh(http: &reqwest::Client, b: &common::TestBridge, token: &str) -> reqwest::Response {
    http.post(b.url("/session/refresh"))
        .header("Refresh", token)
        .call()
        .await
}

async fn live(client: &Client, access: &str) -> bool {
    auth::principal_from_access_token(client, access)
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn login_answers_tokens_in_headers_and_the_user_id() {
    let b = common::start().await;
    let http = common::http();
    let client = daemon(&b).await;
    let id = common::add_user(&client, "alice@example.com", "alice-pw", false).await;

    // The username is the email, in any case.
    let r = login(&http, &b, "ALICE@example.com", "alice-pw").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t = Tokens::of(&r);
    assert!(t.refresh.parse::<SessionId>().is_ok());
    assert_ne!(t.access, t.refresh);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"success": true, "tableId": id}));

    let p = auth::principal_from_access_token(&client, &t.access)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.user.email, "alice@example.com");
    // The refresh token is no access token.
    assert!(!live(&client, &t.refresh).await);
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_answer_alike() {
    let b = common::start().await;
    let http = common::http();
    let client = daemon(&b).await;
    common::add_user(&client, "bob@example.com", "bob-pw", false).await;

    let mut answers = Vec::new();
    for (u, p) in [
        ("bob@example.com", "wrong"),
        ("nobody@example.com", "bob-pw"),
        ("john_doe", "password123"),
    ] {
        let r = login(&http, &b, u, p).await;
        assert!(r.headers().get("authorization").is_none());
        assert!(r.headers().get("refresh").is_none());
        answers.push((r.status().as_u16(), r.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, 401);
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
    let v: Value = serde_json::from_str(&answers[0].1).unwrap();
    assert_eq!(v["success"], false);
    assert!(v["message"].is_string());
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_ones_413() {
    let b = common::start_with(|c| c.max_body_bytes = 1024).await;
    let http = common::http();
    let raw = |body: &'static str| {
        http.post(b.url("/session"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "",
        "{",
        "[]",
        "\"x\"",
        "{}",
        r#"{"username": "a@example.com"}"#,
        r#"{"password": "x"}"#,
        r#"{"username": 1, "password": "x"}"#,
        r#"{"username": "a@example.com", "password": null}"#,
        r#"{"username": "", "password": "x"}"#,
    ] {
        let r = raw(body).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["success"], false, "{body}");
        assert!(v["message"].is_string(), "{body}");
    }
    // Not JSON at all.
    let r = http
        .post(b.url("/session"))
        .form(&[("username", "a@example.com"), ("password", "x")])
        .call()
        .await;
    assert_eq!(r.status(), 400);

    let big = json!({"username": "a@example.com", "password": "x".repeat(4096)});
    let r = http.post(b.url("/session")).json(&big).call().await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], false);
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_session() {
    let b = common::start().await;
    let http = common::http();
    let client = daemon(&b).await;
    let id = common::add_user(&client, "carol@example.com", "carol-pw", false).await;
    let first = Tokens::of(&login(&http, &b, "carol@example.com", "carol-pw").await);

    let r = refresh(&http, &b, &first.refresh).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let second = Tokens::of(&r);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"success": true, "tableId": id})
    );
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert!(live(&client, &first.access).await);
    assert!(live(&client, &second.access).await);

    // A `Bearer ` prefix is tolerated.
    let r = refresh(&http, &b, &format!("Bearer {}", second.refresh)).await;
    assert_eq!(r.status(), 200);
    let third = Tokens::of(&r);

    // The spent first token comes back: the whole login session ends.
    let r = refresh(&http, &b, &first.refresh).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], false);
    for access in [&first.access, &second.access, &third.access] {
        assert!(!live(&client, access).await);
    }
    assert_eq!(refresh(&http, &b, &third.refresh).await.status(), 401);

    // Missing, malformed and unknown tokens.
    let r = http.post(b.url("/session/refresh")).call().await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["success"], false);
    assert_eq!(refresh(&http, &b, "not-a-token").await.status(), 401);
    let unknown = SessionId::new_v4().to_string();
    assert_eq!(refresh(&http, &b, &unknown).await.status(), 401);
    // An access token is no refresh token.
    let fresh = Tokens::of(&login(&http, &b, "carol@example.com", "carol-pw").await);
    assert_eq!(refresh(&http, &b, &fresh.access).await.status(), 401);
    assert_eq!(refresh(&http, &b, &fresh.refresh).await.status(), 200);
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_let_one_through_at_most() {
    let b = common::start().await;
    let http = common::http();
    let client = daemon(&b).await;
    common::add_user(&client, "dan@example.com", "dan-pw", false).await;
    let t = Tokens::of(&login(&http, &b, "dan@example.com", "dan-pw").await);
    let (a, c) = tokio::join!(
        refresh(&http, &b, &t.refresh),
        refresh(&http, &b, &t.refresh)
    );
    let ok = [a.status(), c.status()]
        .iter()
        .filter(|s| s.as_u16() == 200)
        .count();
    assert!(ok <= 1, "one refresh token served twice");
    assert!([a.status(), c.status()].iter().any(|s| s.as_u16() == 401));
}

#[tokio::test]
async fn logout_ends_one_login_session_and_its_tokens() {
    let b = common::start().await;
    let http = common::http();
    let client = daemon(&b).await;
    common::add_user(&client, "erin@example.com", "erin-pw", false).await;
    let one = Tokens::of(&login(&http, &b, "erin@example.com", "erin-pw").await);
    let two = Tokens::of(&login(&http, &b, "erin@example.com", "erin-pw").await);
    // A refreshed access token of the first login goes with it too.
    let one_b = Tokens::of(&refresh(&http, &b, &one.refresh).await);

    let logout = |token: String| {
        http.delete(b.url("/session"))
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };
    let r = logout(one.access.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"success": true}));
    assert!(!live(&client, &one.access).await);
    assert!(!live(&client, &one_b.access).await);
    assert_eq!(refresh(&http, &b, &one_b.refresh).await.status(), 401);
    // The other login is untouched.
    assert!(live(&client, &two.access).await);

    // Twice, or without a token: 401.
    let r = logout(one_b.access.clone()).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["success"], false);
    let r = http.delete(b.url("/session")).call().await;
    assert_eq!(r.status(), 401);
    let r = http
        .delete(b.url("/session"))
        .header("Authorization", "Basic Zm9vOmJhcg==")
        .call()
        .await;
    assert_eq!(r.status(), 401);

    // With only the refresh token (the access token has expired).
    let r = http
        .delete(b.url("/session"))
        .header("Refresh", &two.refresh)
        .call()
        .await;
    assert_eq!(r.status(), 200);
    assert!(!live(&client, &two.access).await);
    assert_eq!(refresh(&http, &b, &two.refresh).await.status(), 401);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_username() {
    let b = common::start().await;
    let http = common::http();
    let client = daemon(&b).await;
    common::add_user(&client, "frank@example.com", "frank-pw", false).await;
    common::add_user(&client, "gina@example.com", "gina-pw", false).await;

    // A success clears the count.
    for _ in 0..5 {
        assert_eq!(
            login(&http, &b, "frank@example.com", "bad").await.status(),
            401
        );
    }
    assert_eq!(
        login(&http, &b, "frank@example.com", "frank-pw")
            .await
            .status(),
        200
    );
    for _ in 0..auth::LOGIN_ATTEMPTS {
        assert_eq!(
            login(&http, &b, "Frank@example.com", "bad").await.status(),
            401
        );
    }
    // Past the limit, even the right password waits.
    let r = login(&http, &b, "frank@example.com", "frank-pw").await;
    assert_eq!(r.status(), 429);
    let wait = common::retry_after(&r);
    assert!(wait >= 1 && wait <= auth::LOGIN_WINDOW.as_secs());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], false);
    // Unknown names are counted alike, and other users are not affected.
    for _ in 0..auth::LOGIN_ATTEMPTS {
        login(&http, &b, "ghost@example.com", "x").await;
    }
    assert_eq!(
        login(&http, &b, "ghost@example.com", "x").await.status(),
        429
    );
    assert_eq!(
        login(&http, &b, "gina@example.com", "gina-pw")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn expired_tokens_and_sessions_are_refused() {
    let b = common::start().await;
    let http = common::http();
    let client = daemon(&b).await;
    common::add_user(&client, "hank@example.com", "hank-pw", false).await;
    let t = Tokens::of(&login(&http, &b, "hank@example.com", "hank-pw").await);
    let grant = auth::grant_from_access_token(&client, &t.access)
        .await
        .unwrap()
        .unwrap();

    // Cut the access token's lifetime short: it stops working.
    let access: SessionId = t.access.parse().unwrap();
    client
        .update(
            auth::ACCESS_NS,
            access,
            UpdateOptions::new().ttl(None, Some(Duration::from_millis(50))),
        )
        .await
        .unwrap();
    let expired = common::poll_until(100, Duration::from_millis(50), || async {
        (!live(&client, &t.access).await).then_some(())
    })
    .await;
    assert!(expired.is_some(), "the access token never expired");
    let r = http
        .delete(b.url("/session"))
        .bearer_auth(&t.access)
        .call()
        .await;
    assert_eq!(r.status(), 401);
    // The login session lives on: the refresh token gets a new access token.
    let r = refresh(&http, &b, &t.refresh).await;
    assert_eq!(r.status(), 200);
    let t = Tokens::of(&r);

    // The login session expires: its refresh token stops working.
    let login_id: SessionId = grant.login_session.parse().unwrap();
    client
        .update(
            auth::LOGIN_SESSIONS_NS,
            login_id,
            UpdateOptions::new().ttl(None, Some(Duration::from_millis(50))),
        )
        .await
        .unwrap();
    let ended = common::poll_until(100, Duration::from_millis(50), || async {
        let record = client.get(auth::LOGIN_SESSIONS_NS, login_id).await.unwrap();
        record.is_none().then_some(())
    })
    .await;
    assert!(ended.is_some());
    assert_eq!(refresh(&http, &b, &t.refresh).await.status(), 401);
}

#[tokio::test]
async fn a_deleted_user_cannot_refresh() {
    let b = common::start().await;
    let http = common::http();
    let client = daemon(&b).await;
    let id = common::add_user(&client, "ivy@example.com", "ivy-pw", false).await;
    let t = Tokens::of(&login(&http, &b, "ivy@example.com", "ivy-pw").await);
    assert!(users::delete(&client, &id).await.unwrap());
    // Even before the tokens are revoked, they speak for nobody.
    assert!(!live(&client, &t.access).await);
    assert_eq!(refresh(&http, &b, &t.refresh).await.status(), 401);

    let id = common::add_user(&client, "jo@example.com", "jo-pw", false).await;
    let t = Tokens::of(&login(&http, &b, "jo@example.com", "jo-pw").await);
    assert!(auth::revoke_user_tokens(&client, &id).await.unwrap() >= 2);
    assert!(!live(&client, &t.access).await);
    assert_eq!(refresh(&http, &b, &t.refresh).await.status(), 401);
}

#[tokio::test]
async fn the_session_path_is_shared_with_the_cache_api() {
    let b = common::start().await;
    let http = common::http();
    // GET /session belongs to the cache API: not a 405 from this router.
    let r = http.get(b.url("/session?user_id=nobody")).call().await;
    assert_ne!(r.status(), 405);
    let doc = b.openapi().await;
    let session = &doc["paths"]["/session"];
    assert!(session["post"].is_object());
    assert!(session["delete"].is_object());
    assert!(doc["paths"]["/session/refresh"]["post"].is_object());
    for name in [
        "LoginRequest",
        "LoginSuccess",
        "SuccessFalse",
        "LoginLogout",
    ] {
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
    }
}

#[tokio::test]
async fn an_unreachable_daemon_answers_503_and_logins_resume() {
    let mut d = common::ExternalDaemon::start().await;
    let b = common::start_on(&d).await;
    let http = common::http();
    let client = Client::connect(d.addr().to_string()).await.unwrap();
    common::add_user(&client, "kim@example.com", "kim-pw", false).await;
    let t = Tokens::of(&login(&http, &b, "kim@example.com", "kim-pw").await);
    d.stop().await;

    let r = login(&http, &b, "kim@example.com", "kim-pw").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["success"], false);
    assert_eq!(refresh(&http, &b, &t.refresh).await.status(), 503);
    let r = http
        .delete(b.url("/session"))
        .bearer_auth(&t.access)
        .call()
        .await;
    assert_eq!(r.status(), 503);

    d.restart().await;
    let ok = common::poll_until(50, Duration::from_millis(100), || async {
        let r = login(&http, &b, "kim@example.com", "kim-pw").await;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "logins never resumed");
    // What was issued before the outage still works.
    assert_eq!(refresh(&http, &b, &t.refresh).await.status(), 200);
    d.stop().await;
}
