//! scheduled-sessions-api.md over real HTTP against the real daemon: bearer
//! JWTs and access tokens, the `/sessions` CRUD with its `{data, meta}`
//! wrapper, validation, overlap conflicts (also under concurrency), paging and
//! sorting, per-user visibility, and a daemon that goes away and comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Api, Call};

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The HS256 secret the test bridges are configured with.
fn secret() -> String {
    common::config(std::path::Path::new("."))
        .jwt_secret
        .expect("the test config has a JWT secret")
}

fn sign(claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(
        claims,
        &EncodingKey::from_secret(secret().as_bytes()),
        Algorithm::HS256,
    )
}

/// A valid token for user `sub`, with extra claims.
fn token_with(sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + 3600, "iat": now()});
    if let (Some(c), Value::Object(more)) = (claims.as_object_mut(), extra) {
        c.extend(more);
    }
    hs256(&claims)
}

fn token(sub: &str) -> String {
    token_with(sub, json!({}))
}

/// base64url without padding, for hand-built tokens.
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// What only this API's tests ask of a client.
impl Api {
    async fn timeline(&self, name: &str) -> String {
        let v = common::expect(200, self.post("/timelines", &json!({"name": name})).await);
        v["data"]["id"].as_str().unwrap().to_owned()
    }

    async fn one_time(&self, timeline: &str, start: &str, end: &str) -> (StatusCode, Value) {
        self.post(
            "/sessions",
            &json!({"type": "ONE_TIME", "timelineId": timeline, "name": "s",
                    "startDateTime": start, "endDateTime": end}),
        )
        .await
    }
}

/// An error answer in the API's format.
fn assert_error(status: StatusCode, v: &Value, want: u16) {
    assert_eq!(status.as_u16(), want, "{v}");
    assert_eq!(v["statusCode"], want, "{v}");
    assert!(v["error"].is_string(), "{v}");
    assert!(v["message"].is_string() || v["message"].is_array(), "{v}");
}

/// `answer`'s body, once it is an error answer with status `want`.
#[track_caller]
fn expect_error(want: u16, answer: (StatusCode, Value)) -> Value {
    let (status, v) = answer;
    assert_error(status, &v, want);
    v
}

fn messages(v: &Value) -> String {
    v["message"].to_string()
}

#[tokio::test]
async fn bearer_jwts_are_verified() {
    let b = common::start().await;
    let http = common::http();

    // No header, another scheme, garbage.
    let r = http.get(b.url("/sessions")).call().await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let v: Value = r.json().await.unwrap();
    assert_error(StatusCode::UNAUTHORIZED, &v, 401);
    let r = http
        .get(b.url("/sessions"))
        .header("Authorization", "Basic dTpw")
        .call()
        .await;
    assert_eq!(r.status(), 401);
    for bad in ["garbage", "a.b.c", "not-a-uuid-at-all"] {
        expect_error(401, Api::new(&b, Some(bad.into())).get("/sessions").await);
    }

    let cases = [
        ("expired", hs256(&json!({"sub": "u1", "exp": now() - 3600}))),
        (
            "not yet valid",
            hs256(&json!({"sub": "u1", "exp": now() + 7200, "nbf": now() + 3600})),
        ),
        (
            "wrong secret",
            sign(
                &json!({"sub": "u1", "exp": now() + 3600}),
                &EncodingKey::from_secret(b"another secret"),
                Algorithm::HS256,
            ),
        ),
        (
            "HS512 is not the configured algorithm",
            sign(
                &json!({"sub": "u1", "exp": now() + 3600}),
                &EncodingKey::from_secret(secret().as_bytes()),
                Algorithm::HS512,
            ),
        ),
        ("no sub", hs256(&json!({"exp": now() + 3600}))),
        ("empty sub", hs256(&json!({"sub": "", "exp": now() + 3600}))),
        ("no exp", hs256(&json!({"sub": "u1"}))),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64url(br#"{"alg":"none","typ":"JWT"}"#),
                b64url(
                    json!({"sub": "u1", "exp": now() + 3600})
                        .to_string()
                        .as_bytes()
                )
            ),
        ),
        (
            "alg none, with a signature",
            format!(
                "{}.{}.{}",
                b64url(br#"{"alg":"none","typ":"JWT"}"#),
                b64url(
                    json!({"sub": "u1", "exp": now() + 3600})
                        .to_string()
                        .as_bytes()
                ),
                b64url(b"sig")
            ),
        ),
        ("tampered payload", {
            let good = token("u1");
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            parts[1] = b64url(
                json!({"sub": "u1", "exp": now() + 3600, "admin": true})
                    .to_string()
                    .as_bytes(),
            );
            parts.join(".")
        }),
    ];
    for (what, t) in cases {
        let (s, v) = Api::new(&b, Some(t)).get("/sessions").await;
        assert_eq!(s, 401, "{what}: {v}");
        assert_error(s, &v, 401);
    }

    // Within the leeway, and a valid token.
    let t = hs256(&json!({"sub": "u1", "exp": now() + 3600, "nbf": now() + 5}));
    assert_eq!(Api::new(&b, Some(t)).get("/sessions").await.0, 200);
    let v = common::expect(200, Api::new(&b, Some(token("u1"))).get("/sessions").await);
    assert_eq!(
        v,
        json!({"data": [], "meta": {"message": "success", "meta": {"skip": 0, "take": 10, "count": 0}}})
    );
    // The scheme is case-insensitive.
    let r = http
        .get(b.url("/sessions"))
        .header("Authorization", format!("bearer {}", token("u1")))
        .call()
        .await;
    assert_eq!(r.status(), 200);
}

/// Every route refuses an anonymous caller before looking at its input.
#[tokio::test]
async fn every_route_needs_a_token() {
    let b = common::start().await;
    let anon = Api::new(&b, None);
    let id = "00000000-0000-4000-8000-000000000000";
    let body = json!({});
    for (s, v) in [
        anon.get("/sessions").await,
        anon.post("/sessions", &body).await,
        anon.get(&format!("/sessions/{id}")).await,
        anon.patch(&format!("/sessions/{id}"), &body).await,
        anon.delete(&format!("/sessions/{id}")).await,
        anon.get("/timelines").await,
        anon.post("/timelines", &json!({"name": "x"})).await,
    ] {
        assert_error(s, &v, 401);
    }
}

/// A public key configured: only its algorithm is accepted, so an HS256
/// token "signed" with the public key's bytes fails (algorithm confusion).
#[tokio::test]
async fn public_keys_accept_only_their_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, rcgen_alg) in [
        (Algorithm::RS256, &rcgen::PKCS_RSA_SHA256),
        (Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
    ] {
        let kp = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
        let public_pem = kp.public_key_pem();
        let private_pem = kp.serialize_pem();
        let path = dir.path().join(format!("{alg:?}.pem"));
        std::fs::write(&path, &public_pem).unwrap();
        let b = common::start_with(|c| {
            c.jwt_secret = None;
            c.jwt_public_key = Some(path.clone());
        })
        .await;
        let claims = json!({"sub": "pk-user", "exp": now() + 3600});
        let private = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
        };
        let good = sign(&claims, &private, alg);
        let (s, v) = Api::new(&b, Some(good)).get("/timelines").await;
        assert_eq!(s, 200, "{alg:?}: {v}");

        // The confusion attack: HMAC keyed with the public key's PEM bytes.
        let confused = sign(
            &claims,
            &EncodingKey::from_secret(public_pem.as_bytes()),
            Algorithm::HS256,
        );
        expect_error(401, Api::new(&b, Some(confused)).get("/timelines").await);
        // No secret configured: an HS256 token with the test secret fails too.
        common::expect(
            401,
            Api::new(&b, Some(token("pk-user"))).get("/timelines").await,
        );
        // Another key pair of the same kind.
        let other = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
        let other_key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(other.serialize_pem().as_bytes()),
            _ => EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()),
        }
        .unwrap();
        let (s, _) = Api::new(&b, Some(sign(&claims, &other_key, alg)))
            .get("/timelines")
            .await;
        assert_eq!(s, 401, "{alg:?} signed by another key");
        // An expired one.
        let old = sign(
            &json!({"sub": "pk-user", "exp": now() - 3600}),
            &private,
            alg,
        );
        assert_eq!(Api::new(&b, Some(old)).get("/timelines").await.0, 401);
    }
}

/// Access tokens issued for the login API are accepted besides JWTs, with
/// the user directory's administrator flag.
#[tokio::test]
async fn access_tokens_of_the_login_api_are_accepted() {
    let b = common::start().await;
    let client = common::daemon(&b).await;
    let user_id = common::add_user(&client, "sched@example.com", "pw-sched", false).await;
    let t = sessiond_http::auth::issue_access_token(&client, &user_id, "login-1")
        .await
        .unwrap();
    let api = Api::new(&b, Some(t));
    let v = common::expect(200, api.post("/timelines", &json!({"name": "mine"})).await);
    assert_eq!(v["data"]["userId"], user_id.as_str());
    // A JWT for the same user id sees the same timeline.
    let (_, v) = Api::new(&b, Some(token(&user_id))).get("/timelines").await;
    assert_eq!(v["meta"]["meta"]["count"], 1);

    // The configured administrator sees everyone's sessions.
    let admin = sessiond_http::users::get_by_email(&client, "admin@example.com")
        .await
        .unwrap()
        .unwrap();
    let admin_token = sessiond_http::auth::issue_access_token(&client, &admin.id, "login-2")
        .await
        .unwrap();
    let tl = api.timeline("t").await;
    common::expect(
        200,
        api.one_time(&tl, "2030-01-01T09:00:00Z", "2030-01-01T10:00:00Z")
            .await,
    );
    let (_, v) = Api::new(&b, Some(admin_token)).get("/sessions").await;
    assert_eq!(v["meta"]["meta"]["count"], 1, "{v}");

    // A revoked or unknown access token is 401.
    sessiond_http::auth::revoke_user_tokens(&client, &user_id)
        .await
        .unwrap();
    expect_error(401, api.get("/timelines").await);
    common::expect(
        401,
        Api::new(&b, Some(uuid::Uuid::new_v4().to_string()))
            .get("/timelines")
            .await,
    );
}

#[tokio::test]
async fn timelines_are_created_and_listed_per_user() {
    let b = common::start().await;
    let alice = Api::new(&b, Some(token("alice")));
    let bob = Api::new(&b, Some(token("bob")));
    let v = common::expect(
        200,
        alice.post("/timelines", &json!({"name": "Morning"})).await,
    );
    assert_eq!(v["meta"], json!({"message": "success"}));
    let t = &v["data"];
    assert_eq!(t["name"], "Morning");
    assert_eq!(t["userId"], "alice");
    assert_eq!(t["id"].as_str().unwrap().len(), 36);
    assert!(t["createdAt"].as_str().unwrap().ends_with('Z'));
    // Listed by creation time, which has millisecond resolution (ties go in
    // id order): keep the creations in distinct milliseconds.
    for i in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        alice.timeline(&format!("t{i}")).await;
    }
    bob.timeline("bob's").await;

    let v = common::expect(200, alice.get("/timelines").await);
    assert_eq!(
        v["meta"]["meta"],
        json!({"skip": 0, "take": 10, "count": 4})
    );
    assert_eq!(v["data"][0]["name"], "Morning", "oldest first");
    let (_, v) = alice.get("/timelines?skip=1&take=2").await;
    assert_eq!(v["meta"]["meta"], json!({"skip": 1, "take": 2, "count": 4}));
    let names: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("t0"), json!("t1")]);
    let (_, v) = bob.get("/timelines").await;
    assert_eq!(v["meta"]["meta"]["count"], 1);

    // Invalid input.
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": 5}),
        json!({"name": null}),
        json!({"name": "x".repeat(256)}),
    ] {
        let v = expect_error(400, alice.post("/timelines", &body).await);
        assert!(v["message"].is_array(), "{v}");
    }
    for q in ["take=101", "take=-1", "skip=x", "take=1.5"] {
        expect_error(400, alice.get(&format!("/timelines?{q}")).await);
    }
    expect_error(
        400,
        Api::send(
            alice
                .req(reqwest::Method::POST, "/timelines")
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await,
    );
    expect_error(
        400,
        Api::send(
            alice
                .req(reqwest::Method::POST, "/timelines")
                .body("{\"name\":\"x\"}"),
        )
        .await,
    );
}

#[tokio::test]
async fn sessions_round_trip_with_soft_delete() {
    let b = common::start().await;
    let api = Api::new(&b, Some(token("carol")));
    let tl = api.timeline("Workshops").await;
    // The document's "Creating a Scheduled Session" example.
    let v = common::expect(
        200,
        api.post(
            "/sessions",
            &json!({
                "type": "ONE_TIME",
                "timelineId": tl,
                "name": "Special Workshop",
                "startDateTime": "2023-12-15T14:00:00Z",
                "endDateTime": "2023-12-15T16:00:00Z",
                "description": "Special workshop event"
            }),
        )
        .await,
    );
    assert_eq!(v["meta"], json!({"message": "success"}));
    let created = v["data"].clone();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["type"], "ONE_TIME");
    assert_eq!(created["timelineId"], tl.as_str());
    assert_eq!(created["name"], "Special Workshop");
    assert_eq!(created["startDateTime"], "2023-12-15T14:00:00.000Z");
    assert_eq!(created["endDateTime"], "2023-12-15T16:00:00.000Z");
    assert_eq!(created["repeatCycleType"], Value::Null);
    assert_eq!(created["recurringDayOfWeek"], Value::Null);
    assert_eq!(created["description"], "Special workshop event");
    assert_eq!(created["removedAt"], Value::Null);
    assert!(created["createdAt"].is_string() && created["updatedAt"].is_string());
    let keys: Vec<_> = created.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 12, "{keys:?}");

    let v = common::expect(200, api.get(&format!("/sessions/{id}")).await);
    assert_eq!(v["data"], created);
    // Upper-case UUIDs name the same session.
    common::expect(
        200,
        api.get(&format!("/sessions/{}", id.to_uppercase())).await,
    );

    // The document's "Updating Session Schedule" example: only those fields change.
    let v = common::expect(
        200,
        api.patch(
            &format!("/sessions/{id}"),
            &json!({
                "startDateTime": "2023-12-08T10:30:00Z",
                "endDateTime": "2023-12-08T11:30:00Z",
                "description": "Updated time for yoga session"
            }),
        )
        .await,
    );
    let updated = &v["data"];
    assert_eq!(updated["startDateTime"], "2023-12-08T10:30:00.000Z");
    assert_eq!(updated["endDateTime"], "2023-12-08T11:30:00.000Z");
    assert_eq!(updated["description"], "Updated time for yoga session");
    assert_eq!(updated["name"], "Special Workshop");
    assert_eq!(updated["createdAt"], created["createdAt"]);
    // Null clears an optional field; an empty patch changes nothing else.
    let (_, v) = api
        .patch(&format!("/sessions/{id}"), &json!({"description": null}))
        .await;
    assert_eq!(v["data"]["description"], Value::Null);
    let v = common::expect(
        200,
        api.patch(
            &format!("/sessions/{id}"),
            &json!({"name": "Renamed", "timelineId": tl}),
        )
        .await,
    );
    assert_eq!(v["data"]["name"], "Renamed");

    let (_, v) = api.get("/sessions").await;
    assert_eq!(v["meta"]["meta"]["count"], 1);

    // Soft delete: the removed session comes back once with removedAt set.
    let v = common::expect(200, api.delete(&format!("/sessions/{id}")).await);
    assert!(v["data"]["removedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["data"]["id"], id.as_str());
    expect_error(404, api.get(&format!("/sessions/{id}")).await);
    expect_error(
        404,
        api.patch(&format!("/sessions/{id}"), &json!({"name": "x"}))
            .await,
    );
    expect_error(404, api.delete(&format!("/sessions/{id}")).await);
    let (_, v) = api.get("/sessions").await;
    assert_eq!(v["meta"]["meta"]["count"], 0);
    assert_eq!(v["data"], json!([]));

    // Unknown and malformed ids.
    let unknown = uuid::Uuid::new_v4();
    expect_error(404, api.get(&format!("/sessions/{unknown}")).await);
    expect_error(
        404,
        api.patch(&format!("/sessions/{unknown}"), &json!({})).await,
    );
    expect_error(404, api.delete(&format!("/sessions/{unknown}")).await);
    for bad in ["nope", "123", "a1b2c3d4-e5f6-7890-g1h2-i3j4k5l6m7n8"] {
        expect_error(400, api.get(&format!("/sessions/{bad}")).await);
        expect_error(400, api.delete(&format!("/sessions/{bad}")).await);
        expect_error(
            400,
            api.patch(&format!("/sessions/{bad}"), &json!({})).await,
        );
    }
}

#[tokio::test]
async fn recurring_sessions() {
    let b = common::start().await;
    let api = Api::new(&b, Some(token("dave")));
    let tl = api.timeline("Yoga").await;
    // The document's "Creating a Recurring Session" example (on a real timeline).
    let yoga = json!({
        "type": "RECURRING",
        "timelineId": tl,
        "name": "Weekly Yoga Class",
        "startDateTime": "2023-12-01T09:00:00Z",
        "endDateTime": "2023-12-01T10:00:00Z",
        "repeatCycleType": "WEEKLY",
        "recurringDayOfWeek": "FRIDAY",
        "description": "Weekly yoga session for intermediate level"
    });
    let v = common::expect(200, api.post("/sessions", &yoga).await);
    assert_eq!(v["data"]["type"], "RECURRING");
    assert_eq!(v["data"]["repeatCycleType"], "WEEKLY");
    assert_eq!(v["data"]["recurringDayOfWeek"], "FRIDAY");
    let yoga_id = v["data"]["id"].as_str().unwrap().to_owned();

    // A Friday months later at 09:30 meets it; the same time on a Thursday does not.
    let v = expect_error(
        409,
        api.one_time(&tl, "2024-03-01T09:30:00Z", "2024-03-01T09:45:00Z")
            .await,
    );
    assert!(messages(&v).contains(&yoga_id), "{v}");
    common::expect(
        200,
        api.one_time(&tl, "2024-02-29T09:00:00Z", "2024-02-29T10:00:00Z")
            .await,
    );
    // Before the series starts: free.
    common::expect(
        200,
        api.one_time(&tl, "2023-11-24T09:00:00Z", "2023-11-24T10:00:00Z")
            .await,
    );
    // A daily series at 09:50 meets the weekly one on Fridays.
    let daily = json!({"type": "RECURRING", "timelineId": tl, "name": "daily",
                       "startDateTime": "2024-06-03T09:50:00Z", "endDateTime": "2024-06-03T10:10:00Z",
                       "repeatCycleType": "DAILY"});
    expect_error(409, api.post("/sessions", &daily).await);
    // At 10:00 it is back to back with yoga; from June the one-time sessions are past.
    let mut daily_ok = daily.clone();
    daily_ok["startDateTime"] = json!("2024-06-03T10:00:00Z");
    daily_ok["endDateTime"] = json!("2024-06-03T10:30:00Z");
    let v = common::expect(200, api.post("/sessions", &daily_ok).await);
    assert_eq!(v["data"]["recurringDayOfWeek"], Value::Null);

    // The weekday is derived when omitted, and must agree when given.
    let tl2 = api.timeline("other").await;
    let mut w = yoga.clone();
    w["timelineId"] = json!(tl2);
    w.as_object_mut().unwrap().remove("recurringDayOfWeek");
    w["startDateTime"] = json!("2023-12-05T09:00:00+02:00");
    w["endDateTime"] = json!("2023-12-05T10:00:00+02:00");
    let v = common::expect(200, api.post("/sessions", &w).await);
    assert_eq!(v["data"]["recurringDayOfWeek"], "TUESDAY");
    assert_eq!(v["data"]["startDateTime"], "2023-12-05T07:00:00.000Z");
    let weekly_id = v["data"]["id"].as_str().unwrap().to_owned();

    let tl3 = api.timeline("third").await;
    let mut bad = yoga.clone();
    bad["timelineId"] = json!(tl3);
    bad["recurringDayOfWeek"] = json!("MONDAY");
    let v = expect_error(400, api.post("/sessions", &bad).await);
    assert!(messages(&v).contains("FRIDAY"), "{v}");
    for (field, value) in [
        ("repeatCycleType", Value::Null),
        ("repeatCycleType", json!("HOURLY")),
        ("recurringDayOfWeek", json!("FUNDAY")),
        ("endDateTime", json!("2023-12-09T09:00:01Z")),
    ] {
        let mut b = yoga.clone();
        b["timelineId"] = json!(tl3);
        b[field] = value;
        let v = expect_error(400, api.post("/sessions", &b).await);
        assert!(v["message"].is_array());
    }
    let mut no_cycle = yoga.clone();
    no_cycle["timelineId"] = json!(tl3);
    no_cycle.as_object_mut().unwrap().remove("repeatCycleType");
    let v = expect_error(400, api.post("/sessions", &no_cycle).await);
    assert!(messages(&v).contains("repeatCycleType"), "{v}");
    // A daily occurrence longer than a day would overlap itself.
    let mut long = daily_ok.clone();
    long["timelineId"] = json!(tl3);
    long["endDateTime"] = json!("2024-06-04T10:00:01Z");
    expect_error(400, api.post("/sessions", &long).await);
    // ONE_TIME with recurrence fields.
    expect_error(400, api
        .post("/sessions", &json!({"type": "ONE_TIME", "timelineId": tl3, "name": "x",
                                   "startDateTime": "2030-01-01T00:00:00Z", "endDateTime": "2030-01-01T01:00:00Z",
                                   "repeatCycleType": "WEEKLY"}))
        .await);

    // PATCH: moving the start moves the derived weekday; becoming ONE_TIME
    // clears the recurrence.
    let v = common::expect(200, api
        .patch(
            &format!("/sessions/{weekly_id}"),
            &json!({"startDateTime": "2023-12-07T07:00:00Z", "endDateTime": "2023-12-07T08:00:00Z"}),
        )
        .await);
    assert_eq!(v["data"]["recurringDayOfWeek"], "THURSDAY");
    expect_error(
        400,
        api.patch(
            &format!("/sessions/{weekly_id}"),
            &json!({"recurringDayOfWeek": "MONDAY"}),
        )
        .await,
    );
    let v = common::expect(
        200,
        api.patch(
            &format!("/sessions/{weekly_id}"),
            &json!({"type": "ONE_TIME"}),
        )
        .await,
    );
    assert_eq!(v["data"]["repeatCycleType"], Value::Null);
    assert_eq!(v["data"]["recurringDayOfWeek"], Value::Null);
    expect_error(
        400,
        api.patch(
            &format!("/sessions/{weekly_id}"),
            &json!({"type": "RECURRING"}),
        )
        .await,
    );
    let v = common::expect(
        200,
        api.patch(
            &format!("/sessions/{weekly_id}"),
            &json!({"type": "RECURRING", "repeatCycleType": "DAILY"}),
        )
        .await,
    );
    assert_eq!(v["data"]["repeatCycleType"], "DAILY");
}

#[tokio::test]
async fn invalid_input_is_400_in_the_error_format() {
    let b = common::start_with(|c| c.max_body_bytes = 6000).await;
    let api = Api::new(&b, Some(token("erin")));
    let tl = api.timeline("t").await;
    let good = json!({"type": "ONE_TIME", "timelineId": tl, "name": "n",
                      "startDateTime": "2030-01-01T09:00:00Z", "endDateTime": "2030-01-01T10:00:00Z"});
    let with = |field: &str, value: Value| {
        let mut b = good.clone();
        b[field] = value;
        b
    };
    let without = |field: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(field);
        b
    };
    let cases = [
        (
            "end before start",
            with("endDateTime", json!("2030-01-01T08:00:00Z")),
            "endDateTime",
        ),
        (
            "empty interval",
            with("endDateTime", json!("2030-01-01T09:00:00Z")),
            "endDateTime",
        ),
        ("unknown type", with("type", json!("SOMETIMES")), "type"),
        ("type not a string", with("type", json!(1)), "type"),
        (
            "bad UUID",
            with("timelineId", json!("a1b2c3d4-e5f6-7890-g1h2-i3j4k5l6m7n8")),
            "timelineId",
        ),
        (
            "bad time",
            with("startDateTime", json!("tomorrow")),
            "startDateTime",
        ),
        (
            "time not a string",
            with("startDateTime", json!(1_700_000_000)),
            "startDateTime",
        ),
        ("name not a string", with("name", json!(["n"])), "name"),
        ("empty name", with("name", json!("")), "name"),
        ("null name", with("name", Value::Null), "name"),
        (
            "long description",
            with("description", json!("d".repeat(4001))),
            "description",
        ),
        ("missing type", without("type"), "type"),
        ("missing timelineId", without("timelineId"), "timelineId"),
        ("missing name", without("name"), "name"),
    ];
    for (what, body, field) in cases {
        let (s, v) = api.post("/sessions", &body).await;
        assert_eq!(s, 400, "{what}: {v}");
        assert_error(s, &v, 400);
        assert_eq!(v["error"], "Bad Request");
        assert!(messages(&v).contains(field), "{what}: {v}");
    }
    // Several problems are reported together.
    let v = expect_error(
        400,
        api.post(
            "/sessions",
            &json!({"type": "X", "timelineId": "y", "startDateTime": "z"}),
        )
        .await,
    );
    assert!(v["message"].as_array().unwrap().len() >= 4, "{v}");

    // A well-formed UUID naming no timeline: the document's "invalid routine reference".
    let v = expect_error(
        400,
        api.post(
            "/sessions",
            &with("timelineId", json!(uuid::Uuid::new_v4().to_string())),
        )
        .await,
    );
    assert!(messages(&v).contains("timelineId"), "{v}");

    // Bodies that are not JSON objects.
    for (ct, raw) in [
        (Some("application/json"), "{\"type\":"),
        (Some("application/json"), "[1,2]"),
        (Some("application/json"), "\"text\""),
        (None, "{}"),
        (Some("text/plain"), "{}"),
    ] {
        let mut r = api.req(reqwest::Method::POST, "/sessions").body(raw);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        expect_error(400, Api::send(r).await);
    }
    // An oversized body.
    expect_error(
        413,
        api.post("/sessions", &with("description", json!("d".repeat(8000))))
            .await,
    );

    // PATCH validates the same way.
    let v = common::expect(200, api.post("/sessions", &good).await);
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    for body in [
        json!({"endDateTime": "2030-01-01T08:00:00Z"}),
        json!({"type": "WHENEVER"}),
        json!({"name": null}),
        json!({"startDateTime": "2030-01-01T10:30:00Z"}),
        json!({"timelineId": uuid::Uuid::new_v4().to_string()}),
        json!({"timelineId": "nope"}),
        json!([]),
    ] {
        expect_error(400, api.patch(&format!("/sessions/{id}"), &body).await);
    }
    expect_error(
        413,
        api.patch(
            &format!("/sessions/{id}"),
            &with("description", json!("d".repeat(8000))),
        )
        .await,
    );
    // Nothing changed.
    let (_, v) = api.get(&format!("/sessions/{id}")).await;
    assert_eq!(v["data"]["endDateTime"], "2030-01-01T10:00:00.000Z");

    // Query parameters of the list.
    for q in [
        "startDateTimeSortOrder=UP",
        "skip=-1",
        "take=1000",
        "take=abc",
        "timelineId=123",
    ] {
        expect_error(400, api.get(&format!("/sessions?{q}")).await);
    }
}

/// scheduled-sessions-api.md lists `startDateTime` and `endDateTime` as
/// optional on create: a session without them is accepted, answers them as
/// null, overlaps nothing, sorts after the sessions with a start, and PATCH
/// can set, change and clear them.
#[tokio::test]
async fn sessions_without_times_are_accepted() {
    let b = common::start().await;
    let api = Api::new(&b, Some(token("olga")));
    let tl = api.timeline("t").await;
    let bare = |extra: Value| {
        let mut body = json!({"type": "ONE_TIME", "timelineId": tl, "name": "undated"});
        if let (Some(o), Value::Object(more)) = (body.as_object_mut(), extra) {
            o.extend(more);
        }
        body
    };

    // No times at all, explicit nulls, only one of them.
    let v = common::expect(200, api.post("/sessions", &bare(json!({}))).await);
    assert_eq!(v["data"]["startDateTime"], Value::Null, "{v}");
    assert_eq!(v["data"]["endDateTime"], Value::Null, "{v}");
    assert!(v["data"]["createdAt"].is_string(), "{v}");
    let undated = v["data"]["id"].as_str().unwrap().to_owned();
    let v = common::expect(200, api.get(&format!("/sessions/{undated}")).await);
    assert_eq!(v["data"]["startDateTime"], Value::Null, "{v}");
    assert_eq!(v["data"]["endDateTime"], Value::Null, "{v}");
    let v = common::expect(
        200,
        api.post(
            "/sessions",
            &bare(json!({"startDateTime": null, "endDateTime": null})),
        )
        .await,
    );
    assert_eq!(v["data"]["startDateTime"], Value::Null, "{v}");
    let v = common::expect(
        200,
        api.post(
            "/sessions",
            &bare(json!({"startDateTime": "2030-03-01T09:00:00Z"})),
        )
        .await,
    );
    assert_eq!(v["data"]["startDateTime"], "2030-03-01T09:00:00.000Z");
    assert_eq!(v["data"]["endDateTime"], Value::Null, "{v}");
    let start_only = v["data"]["id"].as_str().unwrap().to_owned();
    let v = common::expect(
        200,
        api.post(
            "/sessions",
            &bare(json!({"endDateTime": "2030-03-01T10:00:00Z"})),
        )
        .await,
    );
    assert_eq!(v["data"]["startDateTime"], Value::Null, "{v}");
    // A recurring session without times keeps the weekday it was given.
    let v = common::expect(
        200,
        api.post(
            "/sessions",
            &bare(json!({"type": "RECURRING", "repeatCycleType": "WEEKLY",
                         "recurringDayOfWeek": "FRIDAY"})),
        )
        .await,
    );
    assert_eq!(v["data"]["recurringDayOfWeek"], "FRIDAY", "{v}");
    assert_eq!(v["data"]["startDateTime"], Value::Null, "{v}");
    let weekly = v["data"]["id"].as_str().unwrap().to_owned();

    // They overlap nothing: a timed session over the same day is accepted,
    // and so are more sessions without times.
    let v = common::expect(
        200,
        api.one_time(&tl, "2030-03-01T08:00:00Z", "2030-03-01T11:00:00Z")
            .await,
    );
    let timed = v["data"]["id"].as_str().unwrap().to_owned();
    common::expect(200, api.post("/sessions", &bare(json!({}))).await);

    // When both are given, end must still be after start.
    let (s, v) = api
        .post(
            "/sessions",
            &bare(json!({"startDateTime": "2030-03-02T10:00:00Z",
                         "endDateTime": "2030-03-02T09:00:00Z"})),
        )
        .await;
    assert_error(s, &v, 400);
    assert!(messages(&v).contains("endDateTime"), "{v}");

    // Sorting: the sessions without a start come last, in both orders.
    let starts = |v: &Value| -> Vec<Value> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["startDateTime"].clone())
            .collect()
    };
    let v = common::expect(
        200,
        api.get(&format!(
            "/sessions?timelineId={tl}&startDateTimeSortOrder=ASC&take=100"
        ))
        .await,
    );
    assert_eq!(v["meta"]["meta"]["count"], 7, "{v}");
    let asc = starts(&v);
    assert_eq!(
        asc[..2],
        [
            json!("2030-03-01T08:00:00.000Z"),
            json!("2030-03-01T09:00:00.000Z")
        ]
    );
    assert!(asc[2..].iter().all(Value::is_null), "{v}");
    let (_, v) = api
        .get(&format!(
            "/sessions?timelineId={tl}&startDateTimeSortOrder=DESC&take=100"
        ))
        .await;
    let desc = starts(&v);
    assert_eq!(
        desc[..2],
        [
            json!("2030-03-01T09:00:00.000Z"),
            json!("2030-03-01T08:00:00.000Z")
        ]
    );
    assert!(desc[2..].iter().all(Value::is_null), "{v}");
    let (_, v) = api.get(&format!("/sessions?timelineId={tl}&take=2")).await;
    assert_eq!(starts(&v).len(), 2);
    assert!(starts(&v).iter().all(Value::is_string), "{v}");

    // PATCH sets the times; then the session takes part in overlap checks.
    let v = expect_error(409, api
        .patch(
            &format!("/sessions/{undated}"),
            &json!({"startDateTime": "2030-03-01T10:30:00Z", "endDateTime": "2030-03-01T12:00:00Z"}),
        )
        .await);
    assert!(messages(&v).contains(&timed), "{v}");
    let v = common::expect(200, api
        .patch(
            &format!("/sessions/{undated}"),
            &json!({"startDateTime": "2030-03-01T11:00:00Z", "endDateTime": "2030-03-01T12:00:00Z"}),
        )
        .await);
    assert_eq!(v["data"]["startDateTime"], "2030-03-01T11:00:00.000Z");
    assert_eq!(v["data"]["endDateTime"], "2030-03-01T12:00:00.000Z");
    expect_error(
        409,
        api.one_time(&tl, "2030-03-01T11:30:00Z", "2030-03-01T11:45:00Z")
            .await,
    );
    // ... and changes them; end after start still applies, against the
    // stored start too.
    let v = expect_error(
        400,
        api.patch(
            &format!("/sessions/{undated}"),
            &json!({"endDateTime": "2030-03-01T10:00:00Z"}),
        )
        .await,
    );
    assert!(messages(&v).contains("endDateTime"), "{v}");
    let v = common::expect(
        200,
        api.patch(
            &format!("/sessions/{undated}"),
            &json!({"endDateTime": "2030-03-01T13:00:00Z"}),
        )
        .await,
    );
    assert_eq!(v["data"]["endDateTime"], "2030-03-01T13:00:00.000Z");
    // Giving the start-only session an end that makes it overlap is 409.
    expect_error(
        409,
        api.patch(
            &format!("/sessions/{start_only}"),
            &json!({"endDateTime": "2030-03-01T09:30:00Z"}),
        )
        .await,
    );
    // null clears a time: the session overlaps nothing again.
    let v = common::expect(
        200,
        api.patch(
            &format!("/sessions/{undated}"),
            &json!({"startDateTime": null}),
        )
        .await,
    );
    assert_eq!(v["data"]["startDateTime"], Value::Null, "{v}");
    assert_eq!(v["data"]["endDateTime"], "2030-03-01T13:00:00.000Z");
    common::expect(
        200,
        api.one_time(&tl, "2030-03-01T11:30:00Z", "2030-03-01T11:45:00Z")
            .await,
    );
    // A weekly session given a start recurs on that start's weekday.
    let v = common::expect(200, api
        .patch(
            &format!("/sessions/{weekly}"),
            &json!({"startDateTime": "2030-03-04T07:00:00Z", "endDateTime": "2030-03-04T07:30:00Z"}),
        )
        .await);
    assert_eq!(v["data"]["recurringDayOfWeek"], "MONDAY", "{v}");

    // The OpenAPI agrees: optional on create, nullable in the answer.
    let doc = b.openapi().await;
    let schemas = &doc["components"]["schemas"];
    let required = schemas["ScheduledSessionCreate"]["required"]
        .as_array()
        .unwrap();
    assert!(!required.contains(&json!("startDateTime")), "{required:?}");
    assert!(!required.contains(&json!("endDateTime")), "{required:?}");
    for field in ["startDateTime", "endDateTime"] {
        // OpenAPI 3.1: nullable is a "null" among the types.
        let types = &schemas["ScheduledSession"]["properties"][field]["type"];
        assert!(
            types.as_array().is_some_and(|t| t.contains(&json!("null"))),
            "{field}: {types}"
        );
    }
}

/// The document's 409: a session that "overlaps with existing sessions for the
/// same user". A user's sessions on two of their timelines may not overlap;
/// the user is the subject that created the session.
#[tokio::test]
async fn overlapping_sessions_of_one_user_conflict_across_timelines() {
    let b = common::start().await;
    let kim = Api::new(&b, Some(token("kim")));
    let a = kim.timeline("a").await;
    let bb = kim.timeline("b").await;
    let v = common::expect(
        200,
        kim.one_time(&a, "2030-06-01T09:00:00Z", "2030-06-01T10:00:00Z")
            .await,
    );
    let first = v["data"]["id"].as_str().unwrap().to_owned();

    // On the other timeline: 409, naming the session it overlaps.
    for (start, end) in [
        ("2030-06-01T09:30:00Z", "2030-06-01T10:30:00Z"),
        ("2030-06-01T08:00:00Z", "2030-06-01T11:00:00Z"),
        ("2030-06-01T11:15:00+02:00", "2030-06-01T11:45:00+02:00"),
    ] {
        let v = expect_error(409, kim.one_time(&bb, start, end).await);
        assert!(messages(&v).contains(&first), "{v}");
        assert!(messages(&v).contains("same user"), "{v}");
    }
    // A recurring session meeting it in a later week, and a daily one, too.
    expect_error(
        409,
        kim.post(
            "/sessions",
            &json!({"type": "RECURRING", "timelineId": bb, "name": "w",
                    "startDateTime": "2030-05-18T09:45:00Z", "endDateTime": "2030-05-18T10:15:00Z",
                    "repeatCycleType": "WEEKLY"}),
        )
        .await,
    );
    // Back to back is fine, and so is a session without times.
    let v = common::expect(
        200,
        kim.one_time(&bb, "2030-06-01T10:00:00Z", "2030-06-01T11:00:00Z")
            .await,
    );
    let second = v["data"]["id"].as_str().unwrap().to_owned();
    let v = common::expect(
        200,
        kim.post(
            "/sessions",
            &json!({"type": "ONE_TIME", "timelineId": bb, "name": "undated"}),
        )
        .await,
    );
    let undated = v["data"]["id"].as_str().unwrap().to_owned();

    // PATCH that moves a session into the other timeline's session: 409, and
    // nothing changes; a PATCH that does not move it is fine.
    let v = expect_error(
        409,
        kim.patch(
            &format!("/sessions/{second}"),
            &json!({"startDateTime": "2030-06-01T09:59:00Z"}),
        )
        .await,
    );
    assert!(messages(&v).contains(&first), "{v}");
    expect_error(409, kim
        .patch(
            &format!("/sessions/{undated}"),
            &json!({"startDateTime": "2030-06-01T09:00:00Z", "endDateTime": "2030-06-01T09:30:00Z"}),
        )
        .await);
    let v = common::expect(
        200,
        kim.patch(&format!("/sessions/{second}"), &json!({"name": "renamed"}))
            .await,
    );
    assert_eq!(v["data"]["startDateTime"], "2030-06-01T10:00:00.000Z");
    common::expect(
        200,
        kim.patch(
            &format!("/sessions/{second}"),
            &json!({"endDateTime": "2030-06-01T12:00:00Z"}),
        )
        .await,
    );

    // Another user's sessions do not count.
    let lee = Api::new(&b, Some(token("lee")));
    let lee_tl = lee.timeline("lee's").await;
    common::expect(
        200,
        lee.one_time(&lee_tl, "2030-06-01T09:00:00Z", "2030-06-01T10:00:00Z")
            .await,
    );

    // An administrator's sessions are theirs, on whoever's timeline: one on
    // kim's timeline then conflicts with their own on lee's.
    let admin = Api::new(&b, Some(token_with("root", json!({"role": "admin"}))));
    let v = common::expect(
        200,
        admin
            .one_time(&bb, "2030-06-02T09:00:00Z", "2030-06-02T10:00:00Z")
            .await,
    );
    let by_admin = v["data"]["id"].as_str().unwrap().to_owned();
    let v = expect_error(
        409,
        admin
            .one_time(&lee_tl, "2030-06-02T09:30:00Z", "2030-06-02T10:30:00Z")
            .await,
    );
    assert!(messages(&v).contains(&by_admin), "{v}");
    // ... while kim's own sessions are not the administrator's.
    common::expect(
        200,
        admin
            .one_time(&lee_tl, "2030-06-01T11:00:00Z", "2030-06-01T11:30:00Z")
            .await,
    );
    // kim's session on another timeline does not conflict with the
    // administrator's on kim's timeline b (different users, different
    // timelines).
    common::expect(
        200,
        kim.one_time(&a, "2030-06-02T09:00:00Z", "2030-06-02T10:00:00Z")
            .await,
    );

    // Removing a session frees its time for the user's other timelines.
    assert_eq!(kim.delete(&format!("/sessions/{first}")).await.0, 200);
    common::expect(
        200,
        kim.one_time(&bb, "2030-06-01T09:00:00Z", "2030-06-01T09:30:00Z")
            .await,
    );
}

/// Concurrent creates of one slot by one user on as many of their timelines:
/// exactly one wins (the user's lock serializes the checks).
#[tokio::test]
async fn concurrent_overlapping_creates_on_a_users_timelines_do_not_both_succeed() {
    let b = common::start().await;
    let api = Api::new(&b, Some(token("mia")));
    let mut timelines = Vec::new();
    for i in 0..6 {
        timelines.push(api.timeline(&format!("t{i}")).await);
    }
    let mut tasks = Vec::new();
    for (i, tl) in timelines.iter().enumerate() {
        let api = api.clone();
        let tl = tl.clone();
        tasks.push(tokio::spawn(async move {
            let start = format!("2031-03-01T09:{:02}:00Z", i * 3);
            api.one_time(&tl, &start, "2031-03-01T10:00:00Z").await
        }));
    }
    let mut won = 0;
    for t in tasks {
        let (s, v) = t.await.unwrap();
        match s.as_u16() {
            200 => won += 1,
            409 => {}
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(won, 1);
    let (_, v) = api.get("/sessions").await;
    assert_eq!(v["meta"]["meta"]["count"], 1, "{v}");
}

#[tokio::test]
async fn overlapping_sessions_of_one_timeline_conflict() {
    let b = common::start().await;
    let api = Api::new(&b, Some(token("frank")));
    let tl = api.timeline("a").await;
    // Another user's timeline (the same user's other timelines conflict too:
    // see overlapping_sessions_of_one_user_conflict_across_timelines).
    let someone = Api::new(&b, Some(token("frank's colleague")));
    let other = someone.timeline("b").await;
    let v = common::expect(
        200,
        api.one_time(&tl, "2030-05-01T09:00:00Z", "2030-05-01T10:00:00Z")
            .await,
    );
    let first = v["data"]["id"].as_str().unwrap().to_owned();

    for (start, end) in [
        ("2030-05-01T09:30:00Z", "2030-05-01T10:30:00Z"),
        ("2030-05-01T08:30:00Z", "2030-05-01T09:01:00Z"),
        ("2030-05-01T09:10:00Z", "2030-05-01T09:20:00Z"),
        ("2030-05-01T08:00:00Z", "2030-05-01T11:00:00Z"),
        ("2030-05-01T11:00:00+02:00", "2030-05-01T11:30:00+02:00"),
    ] {
        let v = expect_error(409, api.one_time(&tl, start, end).await);
        assert!(messages(&v).contains(&first), "{v}");
    }
    // Back to back is fine, and so is another user's timeline.
    let v = common::expect(
        200,
        api.one_time(&tl, "2030-05-01T10:00:00Z", "2030-05-01T11:00:00Z")
            .await,
    );
    let second = v["data"]["id"].as_str().unwrap().to_owned();
    common::expect(
        200,
        someone
            .one_time(&other, "2030-05-01T09:00:00Z", "2030-05-01T10:00:00Z")
            .await,
    );

    // PATCH into an overlap is 409 and changes nothing; a session does not
    // conflict with itself.
    expect_error(
        409,
        api.patch(
            &format!("/sessions/{second}"),
            &json!({"startDateTime": "2030-05-01T09:59:00Z"}),
        )
        .await,
    );
    common::expect(
        200,
        api.patch(
            &format!("/sessions/{second}"),
            &json!({"endDateTime": "2030-05-01T12:00:00Z"}),
        )
        .await,
    );
    let (_, v) = api.get(&format!("/sessions/{second}")).await;
    assert_eq!(v["data"]["startDateTime"], "2030-05-01T10:00:00.000Z");

    // Removing a session frees its time.
    assert_eq!(api.delete(&format!("/sessions/{first}")).await.0, 200);
    common::expect(
        200,
        api.one_time(&tl, "2030-05-01T09:30:00Z", "2030-05-01T09:45:00Z")
            .await,
    );
}

/// Concurrent creates of the same slot: exactly one wins, the others get 409.
/// Concurrent creates of distinct slots all succeed (they wait for the lock).
#[tokio::test]
async fn concurrent_overlapping_creates_do_not_both_succeed() {
    let b = common::start().await;
    let api = Api::new(&b, Some(token("gina")));
    for round in 0..3 {
        let tl = api.timeline(&format!("race {round}")).await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let api = api.clone();
            let tl = tl.clone();
            tasks.push(tokio::spawn(async move {
                // All overlap at 09:30-10:00.
                // Each round on its own day: the rounds' timelines belong to
                // one user, whose sessions may not overlap either.
                let day = round + 1;
                let start = format!("2031-01-0{day}T09:{:02}:00Z", i * 3);
                let end = format!("2031-01-0{day}T10:00:00Z");
                api.one_time(&tl, &start, &end).await
            }));
        }
        let mut won = 0;
        let mut lost = 0;
        for t in tasks {
            let (s, v) = t.await.unwrap();
            match s.as_u16() {
                200 => won += 1,
                409 => lost += 1,
                other => panic!("unexpected {other}: {v}"),
            }
        }
        assert_eq!((won, lost), (1, 7), "round {round}");
        let (_, v) = api.get(&format!("/sessions?timelineId={tl}")).await;
        assert_eq!(v["meta"]["meta"]["count"], 1);
    }

    let tl = api.timeline("parallel").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let api = api.clone();
        let tl = tl.clone();
        tasks.push(tokio::spawn(async move {
            let start = format!("2031-02-01T{:02}:00:00Z", i);
            let end = format!("2031-02-01T{:02}:00:00Z", i + 1);
            api.one_time(&tl, &start, &end).await
        }));
    }
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
    }
    // Concurrent PATCHes of two sessions into the same free slot: one wins.
    let (_, v) = api
        .get(&format!(
            "/sessions?timelineId={tl}&take=100&startDateTimeSortOrder=ASC"
        ))
        .await;
    let ids: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 8);
    let mut tasks = Vec::new();
    for id in [ids[0].clone(), ids[1].clone()] {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.patch(
                &format!("/sessions/{id}"),
                &json!({"startDateTime": "2031-02-02T09:00:00Z", "endDateTime": "2031-02-02T10:00:00Z"}),
            )
            .await
            .0
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap().as_u16());
    }
    codes.sort_unstable();
    assert_eq!(codes, [200, 409]);
}

#[tokio::test]
async fn lists_filter_sort_and_page() {
    let b = common::start().await;
    let api = Api::new(&b, Some(token("hank")));
    let a = api.timeline("a").await;
    let bb = api.timeline("b").await;
    // Created out of order.
    for day in [3, 1, 5, 2, 4] {
        let (s, v) = api
            .one_time(
                &a,
                &format!("2030-07-0{day}T09:00:00Z"),
                &format!("2030-07-0{day}T10:00:00Z"),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    for day in [1, 2] {
        api.one_time(
            &bb,
            &format!("2030-08-0{day}T09:00:00Z"),
            &format!("2030-08-0{day}T10:00:00Z"),
        )
        .await;
    }
    let days = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["startDateTime"].as_str().unwrap()[5..10].to_owned())
            .collect()
    };

    // Default: DESC, take 10.
    let v = common::expect(200, api.get(&format!("/sessions?timelineId={a}")).await);
    assert_eq!(days(&v), ["07-05", "07-04", "07-03", "07-02", "07-01"]);
    assert_eq!(
        v["meta"],
        json!({"message": "success", "meta": {"skip": 0, "take": 10, "count": 5}})
    );
    // The document's curl example.
    let (_, v) = api
        .get(&format!(
            "/sessions?timelineId={a}&startDateTimeSortOrder=ASC&skip=0&take=10"
        ))
        .await;
    assert_eq!(days(&v), ["07-01", "07-02", "07-03", "07-04", "07-05"]);
    let (_, v) = api
        .get(&format!(
            "/sessions?timelineId={a}&startDateTimeSortOrder=ASC&skip=1&take=2"
        ))
        .await;
    assert_eq!(days(&v), ["07-02", "07-03"]);
    assert_eq!(v["meta"]["meta"], json!({"skip": 1, "take": 2, "count": 5}));
    let (_, v) = api.get(&format!("/sessions?timelineId={a}&skip=10")).await;
    assert_eq!(v["data"], json!([]));
    assert_eq!(v["meta"]["meta"]["count"], 5);
    let (_, v) = api.get(&format!("/sessions?timelineId={a}&take=0")).await;
    assert_eq!(v["data"], json!([]));
    assert_eq!(v["meta"]["meta"]["count"], 5);

    // No filter: every timeline of the caller.
    let (_, v) = api.get("/sessions?startDateTimeSortOrder=DESC").await;
    assert_eq!(v["meta"]["meta"]["count"], 7);
    assert_eq!(days(&v)[0], "08-02");
    // A filter naming no timeline matches nothing.
    let v = common::expect(
        200,
        api.get(&format!("/sessions?timelineId={}", uuid::Uuid::new_v4()))
            .await,
    );
    assert_eq!(v["meta"]["meta"]["count"], 0);
}

#[tokio::test]
async fn users_see_their_own_and_admins_see_all() {
    let b = common::start().await;
    let ivy = Api::new(&b, Some(token("ivy")));
    let jack = Api::new(&b, Some(token("jack")));
    let tl = ivy.timeline("ivy's").await;
    let (_, v) = ivy
        .one_time(&tl, "2030-09-01T09:00:00Z", "2030-09-01T10:00:00Z")
        .await;
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let jack_tl = jack.timeline("jack's").await;
    jack.one_time(&jack_tl, "2030-09-01T09:00:00Z", "2030-09-01T10:00:00Z")
        .await;

    // Another user: the session is not there, the timeline is forbidden.
    expect_error(404, jack.get(&format!("/sessions/{id}")).await);
    expect_error(
        404,
        jack.patch(&format!("/sessions/{id}"), &json!({"name": "mine"}))
            .await,
    );
    expect_error(404, jack.delete(&format!("/sessions/{id}")).await);
    expect_error(
        403,
        jack.one_time(&tl, "2030-10-01T09:00:00Z", "2030-10-01T10:00:00Z")
            .await,
    );
    expect_error(403, jack.get(&format!("/sessions?timelineId={tl}")).await);
    let (_, v) = jack.get("/sessions").await;
    assert_eq!(v["meta"]["meta"]["count"], 1);
    let (_, v) = jack.get("/timelines").await;
    assert_eq!(v["meta"]["meta"]["count"], 1);

    // Administrators, by any of the documented claims.
    for claims in [
        json!({"role": "admin"}),
        json!({"admin": true}),
        json!({"roles": ["user", "ADMIN"]}),
    ] {
        let admin = Api::new(&b, Some(token_with("root", claims.clone())));
        let (_, v) = admin.get("/sessions").await;
        assert_eq!(v["meta"]["meta"]["count"], 2, "{claims}");
        common::expect(200, admin.get(&format!("/sessions/{id}")).await);
        common::expect(200, admin.get(&format!("/sessions?timelineId={tl}")).await);
    }
    // Not administrators.
    for claims in [
        json!({"admin": "true"}),
        json!({"role": "user"}),
        json!({"admin": false}),
    ] {
        let (_, v) = Api::new(&b, Some(token_with("root", claims)))
            .get("/sessions")
            .await;
        assert_eq!(v["meta"]["meta"]["count"], 0);
    }
    let admin = Api::new(&b, Some(token_with("root", json!({"role": "admin"}))));
    common::expect(
        200,
        admin
            .patch(&format!("/sessions/{id}"), &json!({"name": "by admin"}))
            .await,
    );
    let v = common::expect(
        200,
        admin
            .one_time(&tl, "2030-10-01T09:00:00Z", "2030-10-01T10:00:00Z")
            .await,
    );
    assert_eq!(v["data"]["timelineId"], tl.as_str());
    let (_, v) = ivy.get("/sessions").await;
    assert_eq!(
        v["meta"]["meta"]["count"], 2,
        "the admin's session is on ivy's timeline"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let b = common::start().await;
    let doc = b.openapi().await;
    for (path, methods) in [
        ("/sessions", &["get", "post"][..]),
        ("/sessions/{id}", &["get", "patch", "delete"][..]),
        ("/timelines", &["get", "post"][..]),
    ] {
        for m in methods {
            let op = &doc["paths"][path][m];
            assert!(op["responses"]["200"].is_object(), "{path} {m}");
            assert!(op["responses"]["401"].is_object(), "{path} {m}");
            assert!(op["responses"]["503"].is_object(), "{path} {m}");
        }
    }
    assert!(doc["components"]["schemas"]["ScheduledSession"].is_object());
}

#[tokio::test]
async fn a_dead_daemon_is_503_and_the_data_survives_its_restart() {
    let mut d = common::ExternalDaemon::start().await;
    let b = common::start_on(&d).await;
    let api = Api::new(&b, Some(token("kim")));
    let tl = api.timeline("t").await;
    let v = common::expect(
        200,
        api.one_time(&tl, "2030-11-01T09:00:00Z", "2030-11-01T10:00:00Z")
            .await,
    );
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    d.stop().await;

    // JWTs are checked without the daemon; everything else needs it.
    for (s, v) in [
        api.get("/sessions").await,
        api.get(&format!("/sessions/{id}")).await,
        api.one_time(&tl, "2030-11-02T09:00:00Z", "2030-11-02T10:00:00Z")
            .await,
        api.patch(&format!("/sessions/{id}"), &json!({"name": "x"}))
            .await,
        api.delete(&format!("/sessions/{id}")).await,
        api.get("/timelines").await,
        api.post("/timelines", &json!({"name": "x"})).await,
        // An access token cannot be checked either: 503, not 401.
        Api::new(&b, Some(uuid::Uuid::new_v4().to_string()))
            .get("/sessions")
            .await,
    ] {
        assert_error(s, &v, 503);
    }
    // Still 401 without a token.
    assert_eq!(Api::new(&b, None).get("/sessions").await.0, 401);

    d.restart().await;
    let v = common::poll_until(100, Duration::from_millis(100), || async {
        let (s, v) = api.get(&format!("/sessions/{id}")).await;
        (s == 200).then_some(v)
    })
    .await
    .expect("the bridge never recovered");
    assert_eq!(v["data"]["startDateTime"], "2030-11-01T09:00:00.000Z");
    // The slot is still taken.
    common::expect(
        409,
        api.one_time(&tl, "2030-11-01T09:30:00Z", "2030-11-01T10:30:00Z")
            .await,
    );
    d.stop().await;
}
