//! session-auth-api.md over real HTTP against the real daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{add_user, daemon, json_of, session_auth_login as login, Call};

use std::time::Duration;

use serde_json::{json, Value};
use sessiond_client::{SessionId, UpdateOptions};
use sessiond_http::apis::session_auth::{NS, SESSION_COOKIE};
use sessiond_http::{auth, users};

const ADMIN: (&str, &str) = ("admin@example.com", "admin-password");

/// A fresh client logged in as `email`, and its session id.
async fn session(b: &common::TestBridge, email: &str, password: &str) -> (reqwest::Client, String) {
    let http = common::http();
    let r = login(&http, b, email, password).await;
    assert_eq!(r.status(), 200);
    let id = cookie_value(&r).unwrap();
    (http, id)
}

fn cookie_value(r: &reqwest::Response) -> Option<String> {
    let c = r.headers().get("set-cookie")?.to_str().ok()?;
    let first = c.split(';').next()?;
    first
        .strip_prefix(&format!("{SESSION_COOKIE}="))
        .map(str::to_owned)
}

/// A plain client presenting `cookie` as the session cookie.
async fn with_cookie(
    b: &common::TestBridge,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, b.url(path))
        .header("Cookie", format!("{SESSION_COOKIE}={cookie}"))
        .call()
        .await;
    json_of(r).await
}

fn assert_user_json(v: &Value, email: &str) {
    let obj = v.as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "email",
            "first_name",
            "id",
            "last_name",
            "updated_at"
        ]
    );
    assert_eq!(v["email"], email);
    for t in ["created_at", "updated_at"] {
        let s = v[t].as_str().unwrap();
        assert!(
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_ok(),
            "{t}: {s}"
        );
    }
}

#[tokio::test]
async fn status_and_the_helper_routes_are_public() {
    let b = common::start().await;
    let http = common::http();
    for path in ["/api/v1/status", "/api/v1/status/"] {
        assert_eq!(
            http.get(b.url(path)).answer().await,
            (200, json!({"status": "OK"}))
        );
    }
    assert_eq!(
        http.get(b.url("/api/v1/unauthorized")).answer().await,
        (401, json!({"error": "Unauthorized"}))
    );
    assert_eq!(
        http.get(b.url("/api/v1/forbidden/")).answer().await,
        (403, json!({"error": "Forbidden"}))
    );
}

#[tokio::test]
async fn login_errors_are_the_projects() {
    let b = common::start().await;
    let http = common::http();
    let url = b.url("/api/v1/auth_session/login");
    let form =
        |fields: &'static [(&'static str, &'static str)]| http.post(&url).form(fields).send();
    assert_eq!(
        json_of(form(&[]).await.unwrap()).await,
        (400, json!({"error": "email missing"}))
    );
    assert_eq!(
        json_of(form(&[("email", "")]).await.unwrap()).await,
        (400, json!({"error": "email missing"}))
    );
    assert_eq!(
        json_of(form(&[("email", "admin@example.com")]).await.unwrap()).await,
        (400, json!({"error": "password missing"}))
    );
    assert_eq!(
        json_of(
            form(&[("email", "nobody@example.com"), ("password", "x")])
                .await
                .unwrap()
        )
        .await,
        (404, json!({"error": "no user found for this email"}))
    );
    assert_eq!(
        json_of(
            form(&[("email", "admin@example.com"), ("password", "x")])
                .await
                .unwrap()
        )
        .await,
        (401, json!({"error": "wrong password"}))
    );
    // Form fields only, as Flask's request.form: a JSON body has none.
    let r = http
        .post(&url)
        .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
        .call()
        .await;
    assert_eq!(json_of(r).await, (400, json!({"error": "email missing"})));
    // No cookie was set by any of these.
    let r = http.get(b.url("/api/v1/users/me")).call().await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn login_sets_the_session_cookie_and_me_answers() {
    let b = common::start().await;
    let http = common::http();
    let r = login(&http, &b, ADMIN.0, ADMIN.1).await;
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let id = cookie_value(&r).unwrap();
    assert!(id.parse::<SessionId>().is_ok());
    assert_eq!(
        set_cookie,
        format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax")
    );
    let me: Value = r.json().await.unwrap();
    assert_user_json(&me, ADMIN.0);
    assert!(!me.to_string().contains(ADMIN.1));

    for path in ["/api/v1/users/me", "/api/v1/users/me/"] {
        let (status, v) = http.get(b.url(path)).answer().await;
        assert_eq!((status, &v), (200, &me), "{path}");
    }
    let by_id = format!("/api/v1/users/{}", me["id"].as_str().unwrap());
    assert_eq!(http.get(b.url(&by_id)).answer().await, (200, me.clone()));
    assert_eq!(
        http.get(b.url("/api/v1/stats")).answer().await,
        (200, json!({"users": 1}))
    );

    // multipart/form-data works too (curl -F), and gives a new session.
    let boundary = "XyZ-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{}\r\n--{boundary}--\r\n",
        ADMIN.0, ADMIN.1
    );
    let r = reqwest::Client::new()
        .post(b.url("/api/v1/auth_session/login/"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .call()
        .await;
    assert_eq!(r.status(), 200);
    let other = cookie_value(&r).unwrap();
    assert_ne!(other, id);
    assert_eq!(
        with_cookie(&b, reqwest::Method::GET, "/api/v1/users/me", &other).await,
        (200, me)
    );
}

#[tokio::test]
async fn production_cookies_are_secure() {
    let b = common::start_with(|c| c.production = true).await;
    let r = login(&reqwest::Client::new(), &b, ADMIN.0, ADMIN.1).await;
    let c = r.headers()["set-cookie"].to_str().unwrap();
    assert!(c.ends_with("; Secure"), "{c}");
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"));
}

#[tokio::test]
async fn no_cookie_is_401_and_a_dead_one_403() {
    let b = common::start().await;
    let http = reqwest::Client::new();
    let routes = [
        (reqwest::Method::GET, "/api/v1/stats"),
        (reqwest::Method::GET, "/api/v1/users"),
        (reqwest::Method::POST, "/api/v1/users"),
        (reqwest::Method::GET, "/api/v1/users/me"),
        (reqwest::Method::GET, "/api/v1/users/some-id"),
        (reqwest::Method::PUT, "/api/v1/users/some-id"),
        (reqwest::Method::DELETE, "/api/v1/users/some-id"),
    ];
    for (method, path) in &routes {
        let r = http.request(method.clone(), b.url(path)).call().await;
        assert_eq!(
            json_of(r).await,
            (401, json!({"error": "Unauthorized"})),
            "{method} {path}"
        );
        for bad in ["Holberton", &SessionId::new_v4().to_string()] {
            assert_eq!(
                with_cookie(&b, method.clone(), path, bad).await,
                (403, json!({"error": "Forbidden"})),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn admins_manage_users() {
    let b = common::start().await;
    let (admin, _) = session(&b, ADMIN.0, ADMIN.1).await;
    let post = |body: Value| admin.post(b.url("/api/v1/users")).json(&body).send();

    let (status, bob) = json_of(
        post(json!({"email": "bob@example.com", "password": "bob-pw", "first_name": "Bob"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    assert_user_json(&bob, "bob@example.com");
    assert_eq!(bob["first_name"], "Bob");
    assert_eq!(bob["last_name"], Value::Null);
    let bob_id = bob["id"].as_str().unwrap().to_owned();

    // The project's errors.
    let raw = |body: &'static str| {
        admin
            .post(b.url("/api/v1/users"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in ["", "not json", "[1]", r#"{"email": 5, "password": "x"}"#] {
        assert_eq!(
            json_of(raw(body).await.unwrap()).await,
            (400, json!({"error": "Wrong format"})),
            "{body}"
        );
    }
    for (body, message) in [
        (json!({}), "email missing"),
        (json!({"email": "", "password": "x"}), "email missing"),
        (json!({"email": "x@example.com"}), "password missing"),
        (
            json!({"email": "x@example.com", "password": ""}),
            "password missing",
        ),
        (
            json!({"email": "bob@example.com", "password": "x"}),
            "Can't create User: email already registered",
        ),
        (
            json!({"email": "not-an-email", "password": "x"}),
            "Can't create User: email is not a valid address",
        ),
    ] {
        assert_eq!(
            json_of(post(body.clone()).await.unwrap()).await,
            (400, json!({"error": message})),
            "{body}"
        );
    }

    let (status, list) = admin.get(b.url("/api/v1/users")).answer().await;
    assert_eq!(status, 200);
    let emails: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(emails, [ADMIN.0, "bob@example.com"], "oldest first");
    assert_eq!(
        admin.get(b.url("/api/v1/stats")).answer().await,
        (200, json!({"users": 2}))
    );

    let one = format!("/api/v1/users/{bob_id}");
    assert_eq!(admin.get(b.url(&one)).answer().await, (200, bob.clone()));
    let (status, updated) = json_of(
        admin
            .put(b.url(&one))
            .json(&json!({"last_name": "Builder", "first_name": null}))
            .call()
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(updated["first_name"], "Bob");
    assert_eq!(updated["last_name"], "Builder");
    assert_eq!(updated["created_at"], bob["created_at"]);
    for body in ["", "nope", r#"{"first_name": 3}"#] {
        let r = admin
            .put(b.url(&one))
            .header("content-type", "application/json")
            .body(body)
            .call()
            .await;
        assert_eq!(
            json_of(r).await,
            (400, json!({"error": "Wrong format"})),
            "{body}"
        );
    }

    // Unknown ids: 404 Not found (before the body is looked at).
    for path in [
        "/api/v1/users/unknown".to_owned(),
        format!("/api/v1/users/{}", SessionId::new_v4()),
    ] {
        let not_found = (404, json!({"error": "Not found"}));
        assert_eq!(admin.get(b.url(&path)).answer().await, not_found);
        let r = admin.put(b.url(&path)).body("garbage").call().await;
        assert_eq!(json_of(r).await, not_found);
        assert_eq!(admin.delete(b.url(&path)).answer().await, not_found);
    }

    assert_eq!(admin.delete(b.url(&one)).answer().await, (200, json!({})));
    assert_eq!(admin.get(b.url(&one)).status_code().await, 404);
    // The email is free again.
    let r = post(json!({"email": "bob@example.com", "password": "new", "is_admin": true}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (new_bob, _) = session(&b, "bob@example.com", "new").await;
    assert_eq!(new_bob.get(b.url("/api/v1/users")).status_code().await, 200);
}

#[tokio::test]
async fn non_admins_see_and_change_only_themselves() {
    let b = common::start().await;
    let client = daemon(&b).await;
    let admin_id = users::get_by_email(&client, ADMIN.0)
        .await
        .unwrap()
        .unwrap()
        .id;
    let cy_id = add_user(&client, "cy@example.com", "cy-pw", false).await;
    let (cy, _) = session(&b, "cy@example.com", "cy-pw").await;

    let forbidden = (403, json!({"error": "Forbidden"}));
    assert_eq!(cy.get(b.url("/api/v1/users")).answer().await, forbidden);
    let r = cy
        .post(b.url("/api/v1/users"))
        .json(&json!({"email": "evil@example.com", "password": "x", "is_admin": true}))
        .call()
        .await;
    assert_eq!(json_of(r).await, forbidden);
    let admin_path = format!("/api/v1/users/{admin_id}");
    assert_eq!(cy.get(b.url(&admin_path)).answer().await, forbidden);
    let r = cy
        .put(b.url(&admin_path))
        .json(&json!({"first_name": "Pwned"}))
        .call()
        .await;
    assert_eq!(json_of(r).await, forbidden);
    assert_eq!(cy.delete(b.url(&admin_path)).answer().await, forbidden);
    // Someone else's id that does not exist: still 403 (nothing to learn).
    let ghost = format!("/api/v1/users/{}", SessionId::new_v4());
    assert_eq!(cy.get(b.url(&ghost)).answer().await, forbidden);

    let mine = format!("/api/v1/users/{cy_id}");
    let (status, me) = cy.get(b.url(&mine)).answer().await;
    assert_eq!(status, 200);
    assert_user_json(&me, "cy@example.com");
    let (status, me) = json_of(
        cy.put(b.url("/api/v1/users/me"))
            .json(&json!({"first_name": "Cy", "last_name": "Young"}))
            .call()
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["first_name"].as_str(), me["last_name"].as_str()),
        (Some("Cy"), Some("Young"))
    );
    assert_eq!(
        cy.get(b.url("/api/v1/stats")).answer().await,
        (200, json!({"users": 2}))
    );
    // A user may close their own account; the session ends with it.
    let r = cy.delete(b.url(&mine)).call().await;
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(json_of(r).await, (200, json!({})));
    assert!(users::get(&client, &cy_id).await.unwrap().is_none());
}

#[tokio::test]
async fn logout_ends_the_session() {
    let b = common::start().await;
    let (http, id) = session(&b, ADMIN.0, ADMIN.1).await;
    let r = http
        .delete(b.url("/api/v1/auth_session/logout"))
        .call()
        .await;
    let c = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        c.starts_with(&format!("{SESSION_COOKIE}=;")) && c.contains("Max-Age=0"),
        "{c}"
    );
    assert_eq!(json_of(r).await, (200, json!({})));
    // The browser dropped the cookie; the old one is dead anyway.
    assert_eq!(http.get(b.url("/api/v1/users/me")).status_code().await, 401);
    assert_eq!(
        with_cookie(&b, reqwest::Method::GET, "/api/v1/users/me", &id).await,
        (403, json!({"error": "Forbidden"}))
    );
    for cookie in [id.as_str(), "garbage"] {
        assert_eq!(
            with_cookie(
                &b,
                reqwest::Method::DELETE,
                "/api/v1/auth_session/logout/",
                cookie
            )
            .await,
            (404, json!({}))
        );
    }
    let r = reqwest::Client::new()
        .delete(b.url("/api/v1/auth_session/logout"))
        .call()
        .await;
    assert_eq!(json_of(r).await, (404, json!({})));
}

#[tokio::test]
async fn a_new_login_ends_the_session_the_browser_held() {
    let b = common::start().await;
    let (http, first) = session(&b, ADMIN.0, ADMIN.1).await;
    let r = login(&http, &b, ADMIN.0, ADMIN.1).await;
    let second = cookie_value(&r).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        with_cookie(&b, reqwest::Method::GET, "/api/v1/users/me", &first)
            .await
            .0,
        403
    );
    assert_eq!(http.get(b.url("/api/v1/users/me")).status_code().await, 200);
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions_and_tokens() {
    let b = common::start().await;
    let client = daemon(&b).await;
    let dee = add_user(&client, "dee@example.com", "dee-pw", false).await;
    let (_, one) = session(&b, "dee@example.com", "dee-pw").await;
    let (_, two) = session(&b, "dee@example.com", "dee-pw").await;
    // A token of the login API too.
    let common::Tokens { access, refresh } =
        common::login_tokens(&b, "dee@example.com", "dee-pw").await;

    let (admin, _) = session(&b, ADMIN.0, ADMIN.1).await;
    let r = admin
        .delete(b.url(&format!("/api/v1/users/{dee}")))
        .call()
        .await;
    assert_eq!(json_of(r).await, (200, json!({})));
    for id in [&one, &two] {
        let sid: SessionId = id.parse().unwrap();
        assert!(client.get(NS, sid).await.unwrap().is_none());
        assert_eq!(
            with_cookie(&b, reqwest::Method::GET, "/api/v1/users/me", id)
                .await
                .0,
            403
        );
    }
    let a: SessionId = access.parse().unwrap();
    assert!(client.get(auth::ACCESS_NS, a).await.unwrap().is_none());
    let r = reqwest::Client::new()
        .post(b.url("/session/refresh"))
        .header("Refresh", refresh)
        .call()
        .await;
    assert_eq!(r.status(), 401);
    // And the login is refused.
    let r = login(&common::http(), &b, "dee@example.com", "dee-pw").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn sessions_expire() {
    let b = common::start().await;
    let client = daemon(&b).await;
    let (http, id) = session(&b, ADMIN.0, ADMIN.1).await;
    let sid: SessionId = id.parse().unwrap();
    let s = client.get(NS, sid).await.unwrap().unwrap();
    assert_eq!(
        s.ttl.idle_ttl_ms,
        Some(sessiond_http::apis::session_auth::SESSION_IDLE.as_millis() as u64)
    );
    client
        .update(
            NS,
            sid,
            // An absolute cap: the polling below touches the session.
            UpdateOptions::new().ttl(None, Some(Duration::from_millis(300))),
        )
        .await
        .unwrap();
    let expired = common::poll_until(100, Duration::from_millis(50), || async {
        let status = http.get(b.url("/api/v1/users/me")).status_code().await;
        if status == 403 {
            return Some(());
        }
        assert_eq!(status, 200);
        None
    })
    .await;
    assert!(expired.is_some(), "the session never expired");
}

#[tokio::test]
async fn logins_are_throttled_per_email() {
    let b = common::start().await;
    let http = common::http();
    for _ in 0..auth::LOGIN_ATTEMPTS {
        assert_eq!(login(&http, &b, ADMIN.0, "bad").await.status(), 401);
    }
    let r = login(&http, &b, ADMIN.0, ADMIN.1).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        json_of(r).await,
        (429, json!({"error": "Too many requests"}))
    );
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let b = common::start_with(|c| c.max_body_bytes = 1024).await;
    let (admin, _) = session(&b, ADMIN.0, ADMIN.1).await;
    let big = json!({"email": "big@example.com", "password": "x".repeat(4096)});
    let r = admin.post(b.url("/api/v1/users")).json(&big).call().await;
    assert_eq!(
        json_of(r).await,
        (413, json!({"error": "Payload too large"}))
    );
    let r = admin
        .put(b.url("/api/v1/users/me"))
        .json(&json!({"first_name": "x".repeat(4096)}))
        .call()
        .await;
    assert_eq!(r.status(), 413);
    let pw = "x".repeat(4096);
    let r = login(&common::http(), &b, ADMIN.0, &pw).await;
    assert_eq!(
        json_of(r).await,
        (413, json!({"error": "Payload too large"}))
    );
}

#[tokio::test]
async fn an_unreachable_daemon_answers_503() {
    let mut d = common::ExternalDaemon::start().await;
    let b = common::start_on(&d).await;
    // The bridge created its administrator in that daemon.
    let (http, _) = session(&b, ADMIN.0, ADMIN.1).await;
    d.stop().await;
    let unavailable = (503, json!({"error": "Service unavailable"}));
    assert_eq!(
        http.get(b.url("/api/v1/users/me")).answer().await,
        unavailable
    );
    assert_eq!(
        json_of(login(&common::http(), &b, ADMIN.0, ADMIN.1).await).await,
        unavailable
    );
    // Status does not need the daemon.
    assert_eq!(http.get(b.url("/api/v1/status")).status_code().await, 200);

    d.restart().await;
    let ok = common::poll_status(http.get(b.url("/api/v1/users/me")), 200, 50).await;
    assert!(ok.is_some(), "the session did not survive the restart");
    d.stop().await;
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let b = common::start().await;
    let doc = b.openapi().await;
    let paths = &doc["paths"];
    for (path, method) in [
        ("/api/v1/status", "get"),
        ("/api/v1/stats", "get"),
        ("/api/v1/users", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{user_id}", "get"),
        ("/api/v1/users/{user_id}", "put"),
        ("/api/v1/users/{user_id}", "delete"),
        ("/api/v1/auth_session/login", "post"),
        ("/api/v1/auth_session/logout", "delete"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path}");
        assert!(
            paths[format!("{path}/")][method].is_object(),
            "{method} {path}/"
        );
    }
}

/// `sessiond-http user add EMAIL --admin` against a running bridge's daemon
/// makes an administrator who can log in and manage users.
#[tokio::test]
async fn the_user_add_command_makes_administrators() {
    let b = common::start().await;
    let run = |email: &'static str, admin: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond-http"));
        cmd.args(["--daemon", &b.daemon_addr(), "user", "add", email]);
        if admin {
            cmd.arg("--admin");
        }
        cmd.env("SESSIOND_HTTP_NEW_PASSWORD", "cli-password")
            .env_remove("SESSIOND_HTTP_ADMIN_EMAIL")
            .env_remove("SESSIOND_HTTP_ADMIN_PASSWORD");
        async move {
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap()
        }
    };
    let out = run("root@example.com", true).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("created (admin)"), "{text}");
    assert!(!text.contains("cli-password"));
    let out = run("plain@example.com", false).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Twice: refused, nothing changes.
    let out = run("plain@example.com", true).await;
    assert!(!out.status.success());

    let (root, _) = session(&b, "root@example.com", "cli-password").await;
    let (status, list) = root.get(b.url("/api/v1/users")).answer().await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 3);
    let (plain, _) = session(&b, "plain@example.com", "cli-password").await;
    assert_eq!(plain.get(b.url("/api/v1/users")).status_code().await, 403);
}
