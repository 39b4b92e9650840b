//! A stranger's ways of holding the bridge's resources, over real sockets:
//! trickled heads and bodies, idle and silent connections, a connection
//! flood, huge declared bodies, duplicate `Host` headers, anonymous create
//! floods, and a full store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
        let r = one.post(b.url("/api/session/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = one.post(b.url("/api/session/")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status_code"], 429, "{v}");
    // The cache API's create shares the address's budget.
    let r = one
        .post(b.url("/create"))
        .json(&serde_json::json!({"user_id": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Another address has its own.
    let two = from([127, 0, 0, 2]);
    let r = two.post(b.url("/api/session/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Reads are not limited.
    let r = one.get(b.url("/healthz")).send().await.unwrap();
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
        let r = http.post(b.url("/api/session/")).send().await.unwrap();
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
    let r = http.get(b.url("/no/such/route")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "not_found", "{v}");
    // Under an API's prefix, in that API's envelope.
    let r = http.get(b.url("/api/session/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status_code"], 404, "{v}");
    let r = http.put(b.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"), "{:?}", r.headers());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "method_not_allowed", "{v}");
}
