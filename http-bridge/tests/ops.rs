//! The operations routes over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Call;

use serde_json::Value;
use sessiond_e2e::exposition::{parse, value};

#[tokio::test]
async fn health_metrics_and_openapi() {
    let b = common::start().await;
    let http = common::http();
    let r = http.get(b.url("/healthz")).call().await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["daemon"], "up");

    let doc = b.openapi().await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/healthz"]["get"].is_object());

    let text = http
        .get(b.url("/metrics"))
        .call()
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("sessiond_up 1"), "{text}");
    assert!(text.contains("route=\"/healthz\",status=\"200\""), "{text}");
}

#[tokio::test]
async fn metrics_parse_line_by_line_with_their_names_and_labels() {
    let b = common::start().await;
    let http = common::http();
    for _ in 0..2 {
        assert_eq!(http.get(b.url("/healthz")).status_code().await, 200);
    }
    assert_eq!(http.get(b.url("/nope")).status_code().await, 404);
    let r = http.get(b.url("/metrics")).call().await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(!text.contains("_total_total"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    let (types, samples) = parse(&text);
    for (name, kind) in [
        ("sessiond_http_requests_total", "counter"),
        ("sessiond_http_request_seconds_sum", "untyped"),
        ("sessiond_http_connections", "gauge"),
        ("sessiond_http_connections_refused_total", "counter"),
        ("sessiond_http_header_timeouts_total", "counter"),
        ("sessiond_http_idle_closed_total", "counter"),
        ("sessiond_http_rate_limited_total", "counter"),
        ("sessiond_records", "gauge"),
        ("sessiond_expired_total", "counter"),
        ("sessiond_ops_total", "counter"),
        ("sessiond_memory_bytes", "gauge"),
        ("sessiond_up", "gauge"),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "{name}:\n{text}"
        );
    }
    for s in &samples {
        assert!(
            types.contains_key(&s.name),
            "{} has no TYPE:\n{text}",
            s.name
        );
    }
    let healthz = [("method", "GET"), ("route", "/healthz"), ("status", "200")];
    assert_eq!(
        value(&samples, "sessiond_http_requests_total", &healthz),
        Some(2.0),
        "{text}"
    );
    assert!(value(&samples, "sessiond_http_request_seconds_sum", &healthz).unwrap() > 0.0);
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(
        value(&samples, "sessiond_http_requests_total", &unmatched),
        Some(1.0),
        "{text}"
    );
    assert!(value(&samples, "sessiond_http_connections", &[]).unwrap() >= 1.0);
    assert!(value(&samples, "sessiond_ops_total", &[]).unwrap() > 0.0);
    assert_eq!(value(&samples, "sessiond_up", &[]), Some(1.0));
}

#[tokio::test]
async fn unknown_routes_are_404_and_bodies_are_bounded() {
    let b = common::start_with(|c| c.max_body_bytes = 1024).await;
    let http = common::http();
    assert_eq!(http.get(b.url("/nope")).status_code().await, 404);
}

#[tokio::test]
async fn a_bridge_on_a_dead_daemon_answers_503_and_recovers() {
    // A daemon of our own, so it can be stopped and started again on its port.
    let mut d = common::ExternalDaemon::start().await;
    let b = common::start_on(&d).await;
    let http = common::http();
    assert_eq!(http.get(b.url("/healthz")).status_code().await, 200);
    d.stop().await;
    assert_eq!(http.get(b.url("/healthz")).status_code().await, 503);
    d.restart().await;
    let ok = common::poll_status(http.get(b.url("/healthz")), 200, 50).await;
    assert!(ok.is_some(), "the bridge never recovered");
    d.stop().await;
}

#[tokio::test]
async fn the_bridge_passes_its_daemon_token() {
    let dir = tempfile::tempdir().unwrap();
    let table = sessiond::auth::AuthTable::parse(&format!(
        "[[token]]\nname = \"bridge\"\nsha256 = \"{}\"\nnamespaces = [\"*\"]\nrights = \"admin\"\n",
        sessiond::auth::hash_token("bridge-secret")
    ))
    .unwrap();
    let d = sessiond::Daemon::start(sessiond::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        auth: Some(table),
        ..sessiond::Config::default()
    })
    .await
    .unwrap();
    let addr = d.local_addr().to_string();
    let http = common::http();
    let good = common::start_with(|c| {
        c.daemon = Some(addr.clone());
        c.daemon_token = Some("bridge-secret".into());
    })
    .await;
    assert_eq!(http.get(good.url("/healthz")).status_code().await, 200);
    let bad = common::start_with(|c| {
        c.daemon = Some(addr.clone());
        c.daemon_token = Some("wrong".into());
    })
    .await;
    assert_eq!(http.get(bad.url("/healthz")).status_code().await, 503);
    d.shutdown().await;
}

/// The real binary at debug level, with an administrator password in its
/// environment and a user added through `sessiond-http user add`: neither
/// password reaches its output.
#[test]
fn passwords_never_reach_the_logs() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut bridge = Command::new(env!("CARGO_BIN_EXE_sessiond-http"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--daemon-listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "debug")
        .env("SESSIOND_HTTP_ADMIN_EMAIL", "root@example.com")
        .env("SESSIOND_HTTP_ADMIN_PASSWORD", "admin-pw-never-logged")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(bridge.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(
        ready.starts_with("sessiond-http ready on http://"),
        "{ready}"
    );

    let mut add = Command::new(env!("CARGO_BIN_EXE_sessiond-http"))
        .args([
            "--daemon",
            &format!("127.0.0.1:{port}"),
            "user",
            "add",
            "bob@example.com",
        ])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"user-pw-never-logged\n")
        .unwrap();
    let added = add.wait_with_output().unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let added_text = format!(
        "{}{}",
        String::from_utf8_lossy(&added.stdout),
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(added_text.contains("created"), "{added_text}");

    let _ = Command::new("kill")
        .args(["-TERM", &bridge.id().to_string()])
        .status();
    let out = bridge.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("administrator account created"), "{logs}");
    for secret in ["admin-pw-never-logged", "user-pw-never-logged"] {
        assert!(
            !logs.contains(secret) && !added_text.contains(secret),
            "a password reached the logs"
        );
    }
}

/// The routes the reference documents name: `METHOD /path` (in backticks,
/// headings or lists), and the cache document's
/// `<code>METHOD</code> <code><b>/</b></code> <code>name</code>`.
fn reference_routes() -> std::collections::BTreeSet<(String, String)> {
    const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference");
    let mut routes = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("../shared/reference beside the repository") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        for pair in words.windows(2) {
            let method = pair[0].trim_start_matches(['`', '[', '#', '-', '*']);
            let path: String = pair[1]
                .trim_start_matches('`')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/_:{}-.".contains(*c))
                .collect();
            let path = path.trim_end_matches('.');
            if METHODS.contains(&method) && path.starts_with('/') {
                routes.insert((method.to_lowercase(), path.to_owned()));
            }
        }
        for method in METHODS {
            let open = format!("<code>{method}</code> <code><b>/</b></code> <code>");
            for (at, _) in text.match_indices(&open) {
                let rest = &text[at + open.len()..];
                if let Some(end) = rest.find("</code>") {
                    routes.insert((method.to_lowercase(), format!("/{}", &rest[..end])));
                }
            }
        }
    }
    routes
}

/// `/a/:id/b` and `/a/{user_id}/b` alike: each parameter is `{}`.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with(':') || seg.starts_with('{') {
                "{}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every route a reference document names is in /openapi.json (and so is
/// served: the router and the document come from the same annotated
/// handlers), and answers its method (no 405).
#[tokio::test]
async fn every_route_of_the_reference_documents_is_described_and_served() {
    let routes = reference_routes();
    // All five documents contribute (a parse that found nothing would pass
    // vacuously).
    for probe in [
        "/api/session/info",
        "/verify",
        "/sessions/:id",
        "/api/v1/users/:id",
        "/session",
    ] {
        assert!(
            routes.iter().any(|(_, p)| p == probe),
            "{probe} not found in the documents"
        );
    }
    let b = common::start().await;
    let doc = b.openapi().await;
    let described: std::collections::BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), shape(path)))
        })
        .collect();
    let http = common::http();
    for (method, path) in &routes {
        assert!(
            described.contains(&(method.clone(), shape(path))),
            "{method} {path} is not in /openapi.json"
        );
        let concrete = shape(path).replace("{}", "9d6a7b4e-58cf-4b43-a9e8-1f0b7d2c3a51");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let status = http.request(m, b.url(&concrete)).status_code().await;
        assert_ne!(status, 405, "{method} {path}");
    }
}
