//! anonymous-session-api.md over real HTTP against the real daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bare, Call};

use serde_json::{json, Value};

/// The `concept_session` Set-Cookie header of a response.
fn session_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("concept_session="))
        .expect("a concept_session cookie")
}

fn is_timestamp(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z'))
}

fn assert_error(v: &Value, status: u16, code: &str) {
    assert_eq!(v["status_code"], status, "{v}");
    assert_eq!(v["error_code"], code, "{v}");
    assert!(v["detail"].is_string(), "{v}");
}

#[tokio::test]
async fn create_sets_the_cookie_and_answers_the_documented_shape() {
    let b = common::start().await;
    let http = common::http();

    let r = http.post(b.url("/api/session/")).call().await;
    assert_eq!(r.status(), 200);
    let cookie = session_cookie(&r);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    let id = v["session_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(
        cookie,
        format!("concept_session={id}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax")
    );
    assert_eq!(v["is_new_session"], true);
    assert!(is_timestamp(&v["created_at"]), "{v}");
    assert!(is_timestamp(&v["last_active"]), "{v}");
    assert_eq!(
        v["usage_stats"],
        json!({"concepts_generated": 0, "concepts_refined": 0, "concepts_stored": 0})
    );
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 5, "exactly the documented fields: {keys:?}");

    // The cookie brings the same session back, with or without the slash
    // and with an empty JSON object as the body.
    let v: Value = http.post(b.url("/api/session")).value().await;
    assert_eq!(v["session_id"], id.as_str());
    assert_eq!(v["is_new_session"], false);
    let v: Value = http
        .post(b.url("/api/session/"))
        .json(&json!({}))
        .value()
        .await;
    assert_eq!(v["session_id"], id.as_str());
    assert_eq!(v["is_new_session"], false);

    // A client without the cookie gets a session of its own.
    let other: Value = bare()
        .post(b.url("/api/session/"))
        .json(&json!({"client_session_id": null}))
        .value()
        .await;
    assert_ne!(other["session_id"], id.as_str());
    assert_eq!(other["is_new_session"], true);
}

#[tokio::test]
async fn production_cookies_are_secure() {
    let b = common::start_with(|c| c.production = true).await;
    let r = bare().post(b.url("/api/session/")).call().await;
    assert_eq!(r.status(), 200);
    let cookie = session_cookie(&r);
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Lax; Secure"),
        "{cookie}"
    );
    assert!(cookie.contains("; Max-Age=2592000;"), "{cookie}");
}

#[tokio::test]
async fn client_session_id_brings_back_a_live_session() {
    let b = common::start().await;
    let first: Value = bare().post(b.url("/api/session/")).value().await;
    let id = first["session_id"].as_str().unwrap();

    // Another device, no cookie, the id from local storage.
    let r = bare()
        .post(b.url("/api/session/"))
        .json(&json!({"client_session_id": id}))
        .call()
        .await;
    assert_eq!(r.status(), 200);
    assert!(session_cookie(&r).starts_with(&format!("concept_session={id};")));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["session_id"], id);
    assert_eq!(v["is_new_session"], false);

    // The client's id wins over a cookie naming another live session.
    let mine: Value = bare().post(b.url("/api/session/")).value().await;
    let mine = mine["session_id"].as_str().unwrap();
    let v: Value = bare()
        .post(b.url("/api/session/"))
        .header("cookie", format!("concept_session={mine}"))
        .json(&json!({"client_session_id": id}))
        .value()
        .await;
    assert_eq!(v["session_id"], id);

    // An id naming no session is not adopted: the cookie's session, else a new one.
    let unknown = uuid::Uuid::new_v4().to_string();
    let v: Value = bare()
        .post(b.url("/api/session/"))
        .header("cookie", format!("concept_session={mine}"))
        .json(&json!({"client_session_id": unknown}))
        .value()
        .await;
    assert_eq!(v["session_id"], mine);
    assert_eq!(v["is_new_session"], false);
    let v: Value = bare()
        .post(b.url("/api/session/"))
        .json(&json!({"client_session_id": unknown}))
        .value()
        .await;
    assert_eq!(v["is_new_session"], true);
    assert_ne!(v["session_id"], unknown.as_str());

    // A malformed cookie is replaced, never an error.
    let r = bare()
        .post(b.url("/api/session/"))
        .header("cookie", "concept_session=garbage")
        .call()
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["is_new_session"], true);
}

#[tokio::test]
async fn bad_bodies_are_validation_errors() {
    let b = common::start_with(|c| c.max_body_bytes = 1024).await;
    let http = bare();
    for path in ["/api/session/", "/api/session/sync"] {
        for (body, field) in [
            (json!({"client_session_id": "not-a-uuid"}), true),
            (json!({"client_session_id": 42}), true),
            (json!(["client_session_id"]), false),
            (json!("text"), false),
        ] {
            let r = http.post(b.url(path)).json(&body).call().await;
            assert_eq!(r.status(), 400, "{path} {body}");
            let v: Value = r.json().await.unwrap();
            assert_error(&v, 400, "validation_error");
            if field {
                assert!(v["field_errors"]["client_session_id"][0].is_string(), "{v}");
            }
        }
        let r = http
            .post(b.url(path))
            .header("content-type", "application/json")
            .body("{\"client_session_id\": ")
            .call()
            .await;
        assert_eq!(r.status(), 400, "{path}");
        assert_error(&r.json().await.unwrap(), 400, "validation_error");

        let big = "x".repeat(4096);
        let r = http
            .post(b.url(path))
            .json(&json!({"client_session_id": big}))
            .call()
            .await;
        assert_eq!(r.status(), 413, "{path}");
        assert_error(&r.json().await.unwrap(), 413, "payload_too_large");
    }
    // sync needs the id.
    for body in [
        json!({}),
        json!({"client_session_id": null}),
        json!({"client_session_id": ""}),
    ] {
        let r = http
            .post(b.url("/api/session/sync"))
            .json(&body)
            .call()
            .await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_error(&v, 400, "validation_error");
    }
    let r = http.post(b.url("/api/session/sync")).call().await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn sync_adopts_a_live_session_or_answers_404() {
    let b = common::start().await;
    let laptop = common::http();
    let v: Value = laptop.post(b.url("/api/session/")).value().await;
    let id = v["session_id"].as_str().unwrap().to_owned();
    laptop
        .post(b.url("/api/session/usage/concept_generation"))
        .call()
        .await;

    // The phone has a session of its own, then syncs to the laptop's.
    let phone = common::http();
    phone.post(b.url("/api/session/")).call().await;
    let r = phone
        .post(b.url("/api/session/sync"))
        .json(&json!({"client_session_id": id}))
        .call()
        .await;
    assert_eq!(r.status(), 200);
    assert!(session_cookie(&r).starts_with(&format!("concept_session={id};")));
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"session_id": id, "is_synced": true, "message": "Sessions synchronized successfully"})
    );
    let info: Value = phone.get(b.url("/api/session/info")).value().await;
    assert_eq!(info["session_id"], id.as_str());
    assert_eq!(info["usage_stats"]["concepts_generated"], 1);

    // An id naming no live session.
    let r = phone
        .post(b.url("/api/session/sync"))
        .json(&json!({"client_session_id": uuid::Uuid::new_v4().to_string()}))
        .call()
        .await;
    assert_eq!(r.status(), 404);
    assert_error(&r.json().await.unwrap(), 404, "resource_not_found");
    // ...changes nothing: the phone is still on the laptop's session.
    let info: Value = phone.get(b.url("/api/session/info")).value().await;
    assert_eq!(info["session_id"], id.as_str());
}

#[tokio::test]
async fn info_shows_usage_and_rate_limits() {
    let b = common::start().await;
    let http = common::http();

    // No session yet.
    let r = http.get(b.url("/api/session/info")).call().await;
    assert_eq!(r.status(), 404);
    assert_error(&r.json().await.unwrap(), 404, "resource_not_found");
    // A malformed cookie.
    let r = bare()
        .get(b.url("/api/session/info"))
        .header("cookie", "theme=dark; concept_session=12345")
        .call()
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_error(&v, 400, "validation_error");
    assert!(v["field_errors"]["concept_session"].is_array(), "{v}");

    let created: Value = http.post(b.url("/api/session/")).value().await;
    let r = http.get(b.url("/api/session/info")).call().await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    session_cookie(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["session_id"], created["session_id"]);
    assert_eq!(v["created_at"], created["created_at"]);
    assert!(is_timestamp(&v["last_active"]));
    assert_eq!(
        v["usage_stats"],
        json!({"concepts_generated": 0, "concepts_refined": 0, "concepts_stored": 0})
    );
    let limits = v["rate_limits"].as_object().unwrap();
    assert_eq!(
        limits.keys().collect::<Vec<_>>(),
        ["concept_generation", "concept_refinement"]
    );
    for (name, l) in limits {
        assert_eq!(l["limit"], 10, "{name}");
        assert_eq!(l["remaining"], 10, "{name}");
        assert!(is_timestamp(&l["reset_at"]), "{name}");
    }

    for op in [
        "concept_generation",
        "concept_generation",
        "concept_refinement",
        "concept_storage",
        "concept_storage",
        "concept_storage",
    ] {
        let r = http
            .post(b.url(&format!("/api/session/usage/{op}")))
            .call()
            .await;
        assert_eq!(r.status(), 200, "{op}");
    }
    let v: Value = http.get(b.url("/api/session/info")).value().await;
    assert_eq!(
        v["usage_stats"],
        json!({"concepts_generated": 2, "concepts_refined": 1, "concepts_stored": 3})
    );
    assert_eq!(v["rate_limits"]["concept_generation"]["remaining"], 8);
    assert_eq!(v["rate_limits"]["concept_refinement"]["remaining"], 9);
    // The generation window is a month long, the refinement one a day.
    let reset = |name: &str| {
        chrono::DateTime::parse_from_rfc3339(v["rate_limits"][name]["reset_at"].as_str().unwrap())
            .unwrap()
    };
    let span = reset("concept_generation") - reset("concept_refinement");
    assert!(span > chrono::Duration::days(28), "{v}");
}

#[tokio::test]
async fn usage_is_limited_per_window_with_429() {
    let b = common::start().await;
    let http = common::http();
    http.post(b.url("/api/session/")).call().await;

    let use_op = |op: &str| http.post(b.url(&format!("/api/session/usage/{op}"))).send();
    for n in 1..=10 {
        let r = use_op("concept_refinement").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "10");
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            (10 - n).to_string().as_str()
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["operation"], "concept_refinement");
        assert_eq!(v["usage_stats"]["concepts_refined"], n);
        assert_eq!(v["rate_limit"]["limit"], 10);
        assert_eq!(v["rate_limit"]["remaining"], 10 - n);
        assert!(is_timestamp(&v["rate_limit"]["reset_at"]));
    }
    let r = use_op("concept_refinement").await.unwrap();
    assert_eq!(r.status(), 429);
    let retry = common::retry_after(&r);
    assert!(retry > 0 && retry <= 24 * 3600, "{retry}");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(r.headers().contains_key("x-ratelimit-reset"));
    assert_error(&r.json().await.unwrap(), 429, "rate_limit_exceeded");
    // A refused use is not counted.
    let v: Value = http.get(b.url("/api/session/info")).value().await;
    assert_eq!(v["usage_stats"]["concepts_refined"], 10);
    assert_eq!(v["rate_limits"]["concept_refinement"]["remaining"], 0);

    // The other limit is separate; storage is counted, never limited.
    assert_eq!(use_op("concept_generation").await.unwrap().status(), 200);
    for _ in 0..12 {
        let r = use_op("concept_storage").await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(!r.headers().contains_key("x-ratelimit-limit"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["rate_limit"], Value::Null);
    }

    // Unknown operation; no session.
    let r = use_op("concept_painting").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_error(&r.json().await.unwrap(), 400, "validation_error");
    let r = bare()
        .post(b.url("/api/session/usage/concept_generation"))
        .call()
        .await;
    assert_eq!(r.status(), 404);
    assert_error(&r.json().await.unwrap(), 404, "resource_not_found");
}

#[tokio::test]
async fn concurrent_uses_never_exceed_the_limit() {
    let b = common::start().await;
    let http = common::http();
    http.post(b.url("/api/session/")).call().await;
    let url = b.url("/api/session/usage/concept_generation");
    let tasks: Vec<_> = (0..25)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move { http.post(url).status_code().await.as_u16() })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (10, 15));
    let v: Value = http.get(b.url("/api/session/info")).value().await;
    assert_eq!(v["usage_stats"]["concepts_generated"], 10);
    assert_eq!(v["rate_limits"]["concept_generation"]["remaining"], 0);
}

#[tokio::test]
async fn an_ended_session_answers_404_and_clears_the_cookie() {
    let b = common::start().await;
    let http = common::http();
    let v: Value = http.post(b.url("/api/session/")).value().await;
    let id: sessiond_client::SessionId = v["session_id"].as_str().unwrap().parse().unwrap();
    // The session ends in the store (as at the end of its 30 idle days).
    let client = sessiond_client::Client::connect(b.daemon_addr())
        .await
        .unwrap();
    assert!(client
        .delete(sessiond_http::apis::anonymous::NS, id)
        .await
        .unwrap());

    let r = http.get(b.url("/api/session/info")).call().await;
    assert_eq!(r.status(), 404);
    let cookie = session_cookie(&r);
    assert!(cookie.starts_with("concept_session=;"), "{cookie}");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    assert_error(&r.json().await.unwrap(), 404, "resource_not_found");
    // The cookie is gone: the next create makes a new session.
    let v: Value = http.post(b.url("/api/session/")).value().await;
    assert_eq!(v["is_new_session"], true);
    assert_ne!(v["session_id"], id.to_string().as_str());
}

#[tokio::test]
async fn a_dead_daemon_answers_503_and_the_bridge_recovers() {
    let mut d = common::ExternalDaemon::start().await;
    let b = common::start_on(&d).await;
    let http = common::http();
    let v: Value = http.post(b.url("/api/session/")).value().await;
    let id = v["session_id"].clone();
    d.stop().await;

    for (method, path) in [
        ("POST", "/api/session/"),
        ("POST", "/api/session/sync"),
        ("GET", "/api/session/info"),
        ("POST", "/api/session/usage/concept_generation"),
    ] {
        let r = http
            .request(method.parse().unwrap(), b.url(path))
            .json(&json!({"client_session_id": id}))
            .call()
            .await;
        assert_eq!(r.status(), 503, "{method} {path}");
        assert_error(&r.json().await.unwrap(), 503, "service_unavailable");
    }

    // The daemon comes back on its port with its data: so does the session.
    d.restart().await;
    let v = common::poll_status(http.get(b.url("/api/session/info")), 200, 100)
        .await
        .expect("the bridge never recovered")
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(v["session_id"], id);
    d.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let b = common::start().await;
    let doc = b.openapi().await;
    let paths = &doc["paths"];
    for (path, method) in [
        ("/api/session/", "post"),
        ("/api/session", "post"),
        ("/api/session/sync", "post"),
        ("/api/session/info", "get"),
        ("/api/session/usage/{operation}", "post"),
    ] {
        assert!(
            paths[path][method]["responses"]["503"].is_object(),
            "{path}"
        );
    }
    assert!(doc["components"]["schemas"]["AnonSessionInfo"].is_object());
    assert!(paths["/api/session/usage/{operation}"]["post"]["responses"]["429"].is_object());
}
