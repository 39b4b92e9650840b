//! A stranger's ways of holding the bridge's resources, over real sockets:
//! trickled heads and bodies, idle and silent connections, a connection
//! flood, huge declared bodies, duplicate `Host` headers, anonymous create
//! floods, and a full store; huge request targets and heads, too many
//! headers, heads that do not parse, bodies that are not JSON, and a handler
//! that panics: every answer JSON in the envelope of the API of its path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Call;

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the bridge closes the connection (or `within` passes);
/// returns what it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// The status code and JSON body of a raw HTTP/1.1 answer.
fn parse(answer: &str) -> (u16, Value) {
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn addr(b: &common::TestBridge) -> String {
    b.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_trickled_head_is_answered_408_in_json_and_closed() {
    let b = common::start_with(|c| c.header_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(addr(&b)).await.unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut answer = None;
    for byte in head.iter().cycle().take(200) {
        if s.write_all(&[*byte]).await.is_err() {
            break;
        }
        // One byte every 100 ms: each arrives well within any idle timer.
        if let Ok(a) = tokio::time::timeout(Duration::from_millis(100), async {
            let mut buf = [0u8; 4096];
            s.read(&mut buf).await.map(|n| buf[..n].to_vec())
        })
        .await
        {
            answer = Some(String::from_utf8_lossy(&a.unwrap_or_default()).into_owned());
            break;
        }
    }
    let answer = answer.expect("the bridge answered before the head was done");
    let (status, body) = parse(&answer);
    assert_eq!(status, 408, "{answer}");
    assert_eq!(body["error"], "request_timeout", "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_trickled_body_is_answered_408() {
    let b = common::start_with(|c| c.body_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(addr(&b)).await.unwrap();
    s.write_all(
        b"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let started = Instant::now();
    trickle.await;
    let answer = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("closed");
    let (status, body) = parse(&answer);
    assert_eq!(status, 408, "{answer}");
    // The cache API's envelope.
    assert_eq!(body["success"], false, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn idle_and_silent_connections_are_closed() {
    let b = common::start_with(|c| {
        c.idle_timeout = Duration::from_secs(1);
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    // Kept alive after a request, then idle.
    let mut s = TcpStream::connect(addr(&b)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Never a byte.
    let mut silent = TcpStream::connect(addr(&b)).await.unwrap();
    assert!(
        read_to_close(&mut silent, Duration::from_secs(5))
            .await
            .is_some(),
        "a silent connection is closed"
    );
}

#[tokio::test]
async fn past_the_connection_cap_503_in_json_and_health_comes_back() {
    let b = common::start_with(|c| {
        c.max_connections = Some(20);
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr(&b)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(addr(&b)).await.unwrap();
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = read_to_close(&mut over, Duration::from_secs(5))
        .await
        .unwrap();
    let (status, body) = parse(&answer);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(body["error"], "too_many_connections");
    assert!(answer.to_ascii_lowercase().contains("retry-after"));
    // The silent ones are closed after the head's time: health is served again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = reqwest::get(b.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    drop(silent);
}

#[tokio::test]
async fn a_huge_declared_body_is_refused_from_the_header() {
    let b = common::start().await;
    // 1 TB declared, nothing sent.
    let mut s = TcpStream::connect(addr(&b)).await.unwrap();
    s.write_all(b"POST /api/session/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("answered and closed at once");
    let (status, body) = parse(&answer);
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        body["status_code"], 413,
        "the anonymous API's envelope: {answer}"
    );
    // Expect: 100-continue with 1 GB: 413, never "100 Continue".
    let mut s = TcpStream::connect(addr(&b)).await.unwrap();
    s.write_all(b"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert_eq!(parse(&answer).0, 413, "{answer}");
}

#[tokio::test]
async fn two_host_headers_are_400() {
    let b = common::start().await;
    let mut s = TcpStream::connect(addr(&b)).await.unwrap();
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    assert_eq!(parse(&answer).0, 400, "{answer}");
}

#[tokio::test]
async fn anonymous_creates_are_rate_limited_per_address() {
    let b = common::start_with(|c| {
        c.create_rate = 1.0;
        c.create_burst = 3;
    })
    .await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let one = from([127, 0, 0, 1]);
    for _ in 0..3 {
        let r = one.post(b.url("/api/session/")).call().await;
        assert_eq!(r.status(), 200);
    }
    let r = one.post(b.url("/api/session/")).call().await;
    assert_eq!(r.status(), 429);
    let wait = common::retry_after(&r);
    assert!((1..=2).contains(&wait), "{wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status_code"], 429, "{v}");
    // The cache API's create shares the address's budget.
    let r = one
        .post(b.url("/create"))
        .json(&serde_json::json!({"user_id": "u1"}))
        .call()
        .await;
    assert_eq!(r.status(), 429);
    // Another address has its own.
    let two = from([127, 0, 0, 2]);
    let r = two.post(b.url("/api/session/")).call().await;
    assert_eq!(r.status(), 200);
    // Reads are not limited.
    let r = one.get(b.url("/healthz")).call().await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_full_store_answers_507_and_health_says_so() {
    let b = common::start_with(|c| {
        c.max_memory = Some("300kb".into());
        c.create_rate = 0.0;
    })
    .await;
    let http = reqwest::Client::new();
    let mut full = None;
    for i in 0..5000 {
        let r = http.post(b.url("/api/session/")).call().await;
        if r.status() != 200 {
            full = Some((i, r.status().as_u16(), r.json::<Value>().await.unwrap()));
            break;
        }
    }
    let (after, status, body) = full.expect("the store filled up");
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["status_code"], 507, "{body}");
    assert!(after > 10, "only {after} sessions fit");
    let health: Value = reqwest::get(b.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["store"], "full", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_answered_in_json() {
    let b = common::start().await;
    let http = reqwest::Client::new();
    let r = http.get(b.url("/no/such/route")).call().await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "not_found", "{v}");
    // Under an API's prefix, in that API's envelope.
    let r = http.get(b.url("/api/session/nope")).call().await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status_code"], 404, "{v}");
    let r = http.put(b.url("/healthz")).call().await;
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"), "{:?}", r.headers());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "method_not_allowed", "{v}");
}

/// Sends `request` on a fresh connection; the answer, read until the bridge
/// closes or 5 s pass.
async fn exchange(b: &common::TestBridge, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr(b)).await.unwrap();
    // The bridge may answer and close before all of a huge request is sent.
    let _ = s.write_all(request).await;
    read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("answered and closed")
}

/// The value of header `name` in a raw answer's head.
fn header(answer: &str, name: &str) -> Option<String> {
    let head = answer.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// Asserts `answer` is `status` with a JSON body in the envelope of the API
/// `path` belongs to (`code` for the neutral one outside them).
fn assert_envelope(answer: &str, status: u16, path: &str, code: &str) {
    let (got, body) = parse(answer);
    assert_eq!(got, status, "{answer}");
    assert_eq!(
        header(answer, "content-type").as_deref(),
        Some("application/json"),
        "{answer}"
    );
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    if under("/api/session") {
        assert_eq!(body["status_code"], status, "anonymous envelope: {answer}");
    } else if under("/api/v1") {
        assert!(body["error"].is_string(), "session-auth envelope: {answer}");
        assert!(body.get("message").is_none(), "{answer}");
    } else if under("/sessions") || under("/timelines") {
        assert_eq!(body["statusCode"], status, "scheduled envelope: {answer}");
    } else if matches!(path, "/create" | "/verify" | "/session") {
        assert_eq!(body["success"], false, "cache/login envelope: {answer}");
        assert!(body["message"].is_string(), "{answer}");
    } else {
        assert_eq!(body["error"], code, "neutral envelope: {answer}");
        assert!(body["message"].is_string(), "{answer}");
    }
}

#[tokio::test]
async fn a_request_target_over_64_kib_is_414_in_json() {
    let b = common::start().await;
    let query = "a".repeat(70_000);
    for path in ["/api/session/abc", "/sessions", "/nowhere"] {
        let answer = exchange(
            &b,
            format!("GET {path}?q={query} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert_envelope(&answer, 414, path, "uri_too_long");
    }
}

#[tokio::test]
async fn a_huge_head_or_too_many_headers_is_431_in_json() {
    let b = common::start().await;
    let big = "b".repeat(120 * 1024);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    for path in ["/api/v1/sessions", "/verify", "/nowhere"] {
        let answer = exchange(
            &b,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        )
        .await;
        assert_envelope(&answer, 431, path, "request_header_fields_too_large");
        let answer = exchange(
            &b,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        )
        .await;
        assert_envelope(&answer, 431, path, "request_header_fields_too_large");
    }
    // Within the limits, a large head is served.
    let fine = "c".repeat(60 * 1024);
    let answer = exchange(
        &b,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fine: {fine}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(parse(&answer).0, 200, "{answer}");
}

#[tokio::test]
async fn an_unparsable_head_is_400_in_json() {
    let b = common::start().await;
    // Not a request line at all: no path to go by, the neutral envelope.
    let answer = exchange(&b, b"\x01\x02 garbage\r\n\r\n").await;
    assert_envelope(&answer, 400, "", "bad_request");
    // A request line, then a header that is not one: the path's envelope.
    for path in ["/api/session/", "/sessions", "/nowhere"] {
        let answer = exchange(
            &b,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n").as_bytes(),
        )
        .await;
        assert_envelope(&answer, 400, path, "bad_request");
    }
    // An answer on a kept-alive connection before the bad head still arrives whole.
    let answer = exchange(
        &b,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /verify HTTP/1.1\r\nbad\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let second = &answer[answer.find("\r\n\r\n").unwrap()..];
    let second = &second[second.find("HTTP/1.1").expect("a second answer")..];
    assert_envelope(second, 400, "/verify", "bad_request");
}

#[tokio::test]
async fn bodies_of_the_wrong_type_shape_or_size_are_answered_in_json() {
    let b = common::start().await;
    let post = |path: &str, ctype: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // Not JSON where JSON is taken: the APIs answer 400 (as their documents
    // and tests have it), never a bare 415.
    let answer = exchange(&b, post("/create", "text/plain", "{}").as_bytes()).await;
    assert_envelope(&answer, 400, "/create", "");
    let answer = exchange(&b, post("/sessions", "text/plain", "{}").as_bytes()).await;
    let status = parse(&answer).0;
    assert!(matches!(status, 400 | 401), "{answer}");
    assert_envelope(&answer, status, "/sessions", "");
    // Malformed JSON.
    for path in ["/create", "/api/v1/auth/login", "/session"] {
        let answer = exchange(
            &b,
            post(path, "application/json", "{\"user_id\": ").as_bytes(),
        )
        .await;
        let status = parse(&answer).0;
        assert!((400..500).contains(&status), "{answer}");
        assert_envelope(&answer, status, path, "");
    }
    // Over the limit, declared: 413 from the header.
    for path in ["/sessions", "/api/v1/auth/login", "/nowhere"] {
        let answer = exchange(
            &b,
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n").as_bytes(),
        )
        .await;
        assert_envelope(&answer, 413, path, "payload_too_large");
    }
    // Over the limit, chunked: 413 once it grows past it.
    let chunk = "x".repeat(16 * 1024);
    let mut request = String::from(
        "POST /api/session/sync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..6 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let answer = exchange(&b, request.as_bytes()).await;
    assert_envelope(&answer, 413, "/api/session/sync", "payload_too_large");
}

#[tokio::test]
async fn slow_heads_and_bodies_are_408_in_their_envelope() {
    let b = common::start_with(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(1);
    })
    .await;
    for path in ["/api/v1/sessions", "/sessions", "/nowhere"] {
        // The head never ends.
        let mut s = TcpStream::connect(addr(&b)).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes())
            .await
            .unwrap();
        let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
        assert_envelope(&answer, 408, path, "request_timeout");
        // The body never ends.
        let mut s = TcpStream::connect(addr(&b)).await.unwrap();
        s.write_all(
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{{")
                .as_bytes(),
        )
        .await
        .unwrap();
        let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
        assert_envelope(&answer, 408, path, "request_timeout");
    }
}

#[tokio::test]
async fn the_connection_cap_answer_is_json() {
    let b = common::start_with(|c| c.max_connections = Some(2)).await;
    let _held: Vec<TcpStream> = vec![
        TcpStream::connect(addr(&b)).await.unwrap(),
        TcpStream::connect(addr(&b)).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = exchange(&b, b"GET /api/session/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // Refused before a byte is read: no path to go by, the neutral envelope.
    assert_envelope(&answer, 503, "", "too_many_connections");
}

#[tokio::test]
async fn a_handler_that_panics_is_answered_500_in_json() {
    use axum::routing::get;
    async fn boom() -> &'static str {
        panic!("a handler that panics")
    }
    let app = axum::Router::new()
        .route("/api/session/boom", get(boom))
        .route("/boom", get(boom));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(sessiond_http::serve::serve(
        listener,
        app,
        sessiond_http::serve::Limits {
            max_connections: 8,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
        },
        std::sync::Arc::default(),
        shutdown.clone(),
    ));
    for path in ["/api/session/boom", "/boom"] {
        let mut s = TcpStream::connect(at).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
        assert_envelope(&answer, 500, path, "internal_error");
    }
    shutdown.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn openapi_lists_every_answer_given_before_a_handler() {
    let b = common::start().await;
    let doc = b.openapi().await;
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = &op["responses"];
            for code in ["400", "408", "413", "414", "431", "500", "503"] {
                assert!(
                    responses.get(code).is_some(),
                    "{method} {path} lacks {code}"
                );
            }
        }
    }
}
