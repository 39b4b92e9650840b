//! user-session-cache-api.md over real HTTP against the real daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Call;

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

    let v: Value = http.get(b.url("/session?user_id=u1")).value().await;
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
    let r = http.get(b.url("/session?user_id=u2")).call().await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"success": false, "message": "session not found"}));
    let v: Value = http
        .post(b.url("/verify"))
        .json(&json!({"user_id": "u2", "token": "t"}))
        .value()
        .await;
    assert_eq!(v["message"], "false");
}

#[tokio::test]
async fn bad_input_gets_400_in_the_envelope() {
    let b = common::start_with(|c| c.max_body_bytes = 2048).await;
    let http = common::http();
    let status_of = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status_of(http.get(b.url("/session")).call().await), 400);
    for body in [
        json!({"token": "t", "ttl": 60}),
        json!({"user_id": "u", "ttl": 60}),
        json!({"user_id": "u", "token": "t"}),
        json!({"user_id": "u", "token": "t", "ttl": -5}),
        json!({"user_id": "u", "token": "t", "ttl": "soon"}),
        json!({"user_id": "u", "token": "t", "expired_at": "yesterday"}),
        json!({"user_id": "u", "token": "t", "expired_at": 1000}),
        // The extremes of a 64-bit timestamp (i64::MIN once panicked).
        json!({"user_id": "u", "token": "t", "expired_at": i64::MIN}),
        json!({"user_id": "u", "token": "t", "created_at": i64::MIN, "ttl": 60}),
        json!({"user_id": "u", "token": "t", "created_at": "-9223372036854775808", "ttl": 60}),
        json!(["not", "an", "object"]),
    ] {
        let r = http.post(b.url("/create")).json(&body).call().await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["success"], false, "{body}");
        assert!(v["message"].is_string());
    }
    let r = http
        .post(b.url("/create"))
        .header("content-type", "application/json")
        .body("{not json")
        .call()
        .await;
    assert_eq!(r.status(), 400);
    let r = http
        .post(b.url("/verify"))
        .json(&json!({"user_id": "u"}))
        .call()
        .await;
    assert_eq!(r.status(), 400);
    let big = "x".repeat(4096);
    let r = http
        .post(b.url("/create"))
        .json(&json!({"user_id": "u", "token": big, "ttl": 5}))
        .call()
        .await;
    assert_eq!(r.status(), 413);
}

/// The document types `user_id` as a string: a number (or any other non-string)
/// is refused with 400 in the envelope on both routes that take a body, and
/// nothing is stored under its decimal text.
#[tokio::test]
async fn a_user_id_that_is_not_a_string_is_400() {
    let b = common::start().await;
    let http = common::http();
    for user_id in [
        json!(42),
        json!(4.2),
        json!(true),
        json!(["42"]),
        json!({"id": "42"}),
    ] {
        for route in ["/create", "/verify"] {
            let r = http
                .post(b.url(route))
                .json(&json!({"user_id": user_id, "token": "t", "ttl": 60}))
                .call()
                .await;
            assert_eq!(r.status(), 400, "{route} {user_id}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(
                v,
                json!({"success": false, "message": "user_id must be a string"}),
                "{route} {user_id}"
            );
        }
    }
    // Nothing was stored under "42".
    let r = http.get(b.url("/session?user_id=42")).call().await;
    assert_eq!(r.status(), 404);
    // The same id as a string is fine.
    let r = http
        .post(b.url("/create"))
        .json(&json!({"user_id": "42", "token": "t", "ttl": 60}))
        .call()
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"]["user_id"], "42");
    let r = http
        .post(b.url("/verify"))
        .json(&json!({"user_id": "42", "token": "t"}))
        .call()
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"success": true, "message": "true"}));
}

#[tokio::test]
async fn a_dead_daemon_answers_503_and_the_bridge_recovers() {
    let mut d = common::ExternalDaemon::start().await;
    let b = common::start_on(&d).await;
    let http = common::http();
    let r = http
        .post(b.url("/create"))
        .json(&json!({"user_id": "u1", "token": "t1", "ttl": "1h"}))
        .call()
        .await;
    assert_eq!(r.status(), 200);
    d.stop().await;

    let r = http.get(b.url("/session?user_id=u1")).call().await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"success": false, "message": "service unavailable"})
    );
    for path in ["/verify", "/create"] {
        let r = http
            .post(b.url(path))
            .json(&json!({"user_id": "u1", "token": "t1", "ttl": "1h"}))
            .call()
            .await;
        assert_eq!(r.status(), 503, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["success"], false);
    }

    // Back on its port with its data: the session is still there.
    d.restart().await;
    let v = common::poll_status(http.get(b.url("/session?user_id=u1")), 200, 100)
        .await
        .expect("the bridge never recovered")
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(v["message"]["user_id"], "u1");
    let v: Value = http
        .post(b.url("/verify"))
        .json(&json!({"user_id": "u1", "token": "t1"}))
        .value()
        .await;
    assert_eq!(v, json!({"success": true, "message": "true"}));
    d.stop().await;
}

#[tokio::test]
async fn ttl_formats_and_recreate_after_expiry() {
    let b = common::start().await;
    let http = common::http();
    let created_at = chrono::Utc::now();
    let expiry_of = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["message"]["expired_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    for (ttl, secs) in [
        (json!("3600"), 3600),
        (json!(3600), 3600),
        (json!("1h"), 3600),
        (json!("1h30m"), 5400),
        (json!("45s"), 45),
    ] {
        let r = http
            .post(b.url("/create"))
            .json(&json!({"user_id": "ttl-user", "token": "t", "ttl": ttl,
                "created_at": created_at.to_rfc3339()}))
            .call()
            .await;
        assert_eq!(r.status(), 200, "{ttl}");
        let v: Value = r.json().await.unwrap();
        let got = (expiry_of(&v) - created_at).num_milliseconds();
        assert!((got - secs * 1000).abs() < 2000, "{ttl}: {got} ms");
        // The ttl comes back as it was given.
        let shown = match &ttl {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(v["message"]["ttl"], shown.as_str());
    }
    for ttl in [json!("0"), json!(0), json!("1y"), json!(true), json!("-1")] {
        let r = http
            .post(b.url("/create"))
            .json(&json!({"user_id": "ttl-user", "token": "t", "ttl": ttl}))
            .call()
            .await;
        assert_eq!(r.status(), 400, "{ttl}");
    }
    // created_at + ttl already in the past.
    let r = http
        .post(b.url("/create"))
        .json(&json!({"user_id": "ttl-user", "token": "t", "ttl": "60", "created_at": "2020-01-01T00:00:00Z"}))
        .call().await;
    assert_eq!(r.status(), 400);

    // A session that expired can be created again.
    let soon = chrono::Utc::now().timestamp_millis() + 300;
    let r = http
        .post(b.url("/create"))
        .json(&json!({"user_id": "again", "token": "old", "expired_at": soon}))
        .call()
        .await;
    assert_eq!(r.status(), 200);
    let gone = common::poll_status(http.get(b.url("/session?user_id=again")), 404, 50).await;
    assert!(gone.is_some(), "the session never expired");
    let r = http
        .post(b.url("/create"))
        .json(&json!({"user_id": "again", "token": "new", "ttl": "1h"}))
        .call()
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = http
        .post(b.url("/verify"))
        .json(&json!({"user_id": "again", "token": "new", "ttl": "1h",
            "created_at": "2030-01-01T00:00:00Z", "expired_at": 4102444800i64}))
        .value()
        .await;
    assert_eq!(v, json!({"success": true, "message": "true"}));
    let v: Value = http
        .post(b.url("/verify"))
        .json(&json!({"user_id": "nobody", "token": "new"}))
        .value()
        .await;
    assert_eq!(v, json!({"success": true, "message": "false"}));
}

/// `/session` is shared: GET is this API's, POST and DELETE the login API's.
#[tokio::test]
async fn the_session_path_is_shared_with_the_login_api() {
    let b = common::start().await;
    let http = common::http();
    let r = http.get(b.url("/session?user_id=x")).call().await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"success": false, "message": "session not found"}));
    let r = http.post(b.url("/session")).json(&json!({})).call().await;
    assert_ne!(r.status(), 405, "POST /session reaches the login API");
    let r = http.delete(b.url("/session")).call().await;
    assert_ne!(r.status(), 405, "DELETE /session reaches the login API");
    let doc = b.openapi().await;
    for method in ["get", "post", "delete"] {
        assert!(doc["paths"]["/session"][method].is_object(), "{method}");
    }
    assert!(doc["paths"]["/verify"]["post"].is_object());
    assert!(doc["paths"]["/create"]["post"].is_object());
}
