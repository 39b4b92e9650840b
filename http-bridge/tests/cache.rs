//! user-session-cache-api.md over real HTTP against the real daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};

#[tokio::test]
async fn create_get_verify_replace_and_expire() {
    let b = common::start().await;
    let http = common::http();
    let create = |body: Value| http.post(b.url("/create")).json(&body).send();

    let r = create(json!({"user_id": "u1", "token": "tok-1", "ttl": "3600", "created_at": "2030-01-01T00:00:00Z", "expired_at": 4102444800i64})).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["message"]["user_id"], "u1");
    assert_eq!(v["message"]["ttl"], "3600");
    assert!(
        !v.to_string().contains("tok-1"),
        "the token never comes back"
    );

    let v: Value = http
        .get(b.url("/session?user_id=u1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["message"]["user_id"], "u1");
    assert!(v["message"]["expired_at"]
        .as_str()
        .unwrap()
        .starts_with("2030-01-01T01:00:00"));

    let verify = |token: &str| {
        http.post(b.url("/verify"))
            .json(&json!({"user_id": "u1", "token": token}))
            .send()
    };
    let v: Value = verify("tok-1").await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"success": true, "message": "true"}));
    let v: Value = verify("tok-2").await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"success": true, "message": "false"}));

    // One active session per user: create replaces it.
    assert_eq!(
        create(json!({"user_id": "u1", "token": "tok-2", "ttl": 60}))
            .await
            .unwrap()
            .status(),
        200
    );
    let v: Value = verify("tok-1").await.unwrap().json().await.unwrap();
    assert_eq!(v["message"], "false");
    let v: Value = verify("tok-2").await.unwrap().json().await.unwrap();
    assert_eq!(v["message"], "true");

    // Records disappear when expired_at passes.
    let soon = chrono::Utc::now().timestamp_millis() + 400;
    assert_eq!(
        create(json!({"user_id": "u2", "token": "t", "expired_at": soon}))
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = http.get(b.url("/session?user_id=u2")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"success": false, "message": "session not found"}));
    let v: Value = http
        .post(b.url("/verify"))
        .json(&json!({"user_id": "u2", "token": "t"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["message"], "false");
}

#[tokio::test]
async fn bad_input_gets_400_in_the_envelope() {
    let b = common::start_with(|c| c.max_body_bytes = 2048).await;
    let http = common::http();
    let status_of = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status_of(http.get(b.url("/session")).send().await.unwrap()),
        400
    );
    for body in [
        json!({"token": "t", "ttl": 60}),
        json!({"user_id": "u", "ttl": 60}),
        json!({"user_id": "u", "token": "t"}),
        json!({"user_id": "u", "token": "t", "ttl": -5}),
        json!({"user_id": "u", "token": "t", "ttl": "soon"}),
        json!({"user_id": "u", "token": "t", "expired_at": "yesterday"}),
        json!({"user_id": "u", "token": "t", "expired_at": 1000}),
        json!(["not", "an", "object"]),
    ] {
        let r = http
            .post(b.url("/create"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["success"], false, "{body}");
        assert!(v["message"].is_string());
    }
    let r = http
        .post(b.url("/create"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(b.url("/verify"))
        .json(&json!({"user_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = "x".repeat(4096);
    let r = http
        .post(b.url("/create"))
        .json(&json!({"user_id": "u", "token": big, "ttl": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn an_unreachable_daemon_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let d = sessiond::Daemon::start(sessiond::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..sessiond::Config::default()
    })
    .await
    .unwrap();
    let addr = d.local_addr().to_string();
    let b = common::start_with(|c| c.daemon = Some(addr)).await;
    d.shutdown().await;
    let http = common::http();
    let r = http.get(b.url("/session?user_id=u1")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"success": false, "message": "service unavailable"})
    );
}
