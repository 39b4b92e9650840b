//! `/metrics` of a real daemon, parsed line by line: the names, types and
//! labels dashboards depend on, after some operations.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;

use sessiond_client::{Client, CreateOptions, SessionId, UpdateOptions};
use sessiond_e2e::exposition::{parse, value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP/1.1 GET: (head, body).
async fn get(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect(&out);
    (head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn metrics_parse_line_by_line_with_their_names_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = sessiond::Daemon::start(sessiond::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: dir.path().to_owned(),
        ..sessiond::Config::default()
    })
    .await
    .unwrap();
    let addr = daemon.metrics_addr().unwrap();
    let client = Client::connect(daemon.local_addr().to_string())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let s = client
            .create("app", CreateOptions::new().owner(format!("o{i}")))
            .await
            .unwrap();
        ids.push(s.id);
    }
    let _ = client.get("app", ids[0]).await.unwrap();
    client.delete("app", ids[1]).await.unwrap();
    let missing = client
        .update(
            "app",
            SessionId::new_v4(),
            UpdateOptions::new().set("a", 1i64),
        )
        .await;
    assert!(missing.is_err());

    let (head, body) = get(addr, "GET", "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let (types, samples) = parse(&body);

    assert!(!body.contains("_total_total"), "{body}");
    assert!(!body.contains("# EOF"), "{body}");
    for (name, kind) in [
        ("sessiond_ops_total", "counter"),
        ("sessiond_op_seconds", "histogram"),
        ("sessiond_records", "gauge"),
        ("sessiond_expired_total", "counter"),
        ("sessiond_evicted_total", "counter"),
        ("sessiond_memory_bytes", "gauge"),
        ("sessiond_connections", "gauge"),
        ("sessiond_connections_total", "counter"),
        ("sessiond_connections_awaiting_hello", "gauge"),
        ("sessiond_connections_evicted_total", "counter"),
        ("sessiond_connection_buffer_bytes", "gauge"),
        ("sessiond_connection_buffer_extra_bytes", "gauge"),
        ("sessiond_frames_refused_for_buffers_total", "counter"),
        ("sessiond_log_bytes_total", "counter"),
        ("sessiond_log_fsync_seconds", "histogram"),
        ("sessiond_log_compactions_total", "counter"),
        ("sessiond_event_subscribers", "gauge"),
        ("sessiond_events_total", "counter"),
        ("sessiond_events_sent_total", "counter"),
        ("sessiond_event_subscribers_lagging_total", "counter"),
        ("sessiond_events_dropped_total", "counter"),
        ("sessiond_events_last_cursor", "gauge"),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "{name}:\n{body}"
        );
    }
    // Every sample belongs to a declared family.
    for s in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                s.name
                    .strip_suffix(suffix)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&s.name);
        assert!(types.contains_key(family), "{} has no TYPE", s.name);
    }

    let ops = |op, outcome| {
        value(
            &samples,
            "sessiond_ops_total",
            &[("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(ops("create", "ok"), Some(3.0), "{body}");
    // Three creates and a delete reached the events feed.
    assert_eq!(
        value(&samples, "sessiond_events_total", &[]),
        Some(4.0),
        "{body}"
    );
    assert_eq!(ops("get", "ok"), Some(1.0), "{body}");
    assert_eq!(ops("delete", "ok"), Some(1.0), "{body}");
    assert_eq!(ops("update", "NotFound"), Some(1.0), "{body}");
    assert_eq!(
        ops("rotate", "ok"),
        None,
        "counters that never moved are not listed"
    );
    assert_eq!(
        value(&samples, "sessiond_records", &[("namespace", "app")]),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value(&samples, "sessiond_op_seconds_count", &[("op", "create")]),
        Some(3.0)
    );
    assert_eq!(
        value(
            &samples,
            "sessiond_op_seconds_bucket",
            &[("op", "create"), ("le", "+Inf")]
        ),
        Some(3.0)
    );
    let les: Vec<&str> = samples
        .iter()
        .filter(|s| {
            s.name == "sessiond_op_seconds_bucket"
                && s.labels.get("op").map(String::as_str) == Some("create")
        })
        .map(|s| s.labels["le"].as_str())
        .collect();
    assert_eq!(
        les,
        [
            "5e-06", "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025",
            "0.01", "0.1", "1", "+Inf"
        ],
        "{body}"
    );
    assert!(value(&samples, "sessiond_op_seconds_sum", &[("op", "create")]).unwrap() > 0.0);
    assert!(value(&samples, "sessiond_connections", &[]).unwrap() >= 1.0);
    assert!(value(&samples, "sessiond_log_bytes_total", &[]).unwrap() > 0.0);
    assert!(value(&samples, "sessiond_log_fsync_seconds_count", &[]).is_some());
    assert!(value(&samples, "sessiond_log_fsync_seconds_sum", &[]).is_some());

    let (head, _) = get(addr, "GET", "/other").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = get(addr, "POST", "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    daemon.shutdown().await;
}

#[tokio::test]
async fn metrics_connections_are_capped_and_silent_ones_closed() {
    let daemon = sessiond::Daemon::start(sessiond::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        in_memory: true,
        ..sessiond::Config::default()
    })
    .await
    .unwrap();
    let addr = daemon.metrics_addr().unwrap();
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // The 65th is closed at once, unanswered.
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        extra.read_to_end(&mut buf),
    )
    .await
    .expect("the connection over the cap was not closed");
    assert!(
        read.is_err() || buf.is_empty(),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // The silent ones are closed after the head timeout (5 s).
    for mut s in silent {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("a silent metrics connection was kept open");
    }
    // And the endpoint answers again.
    let (head, body) = get(addr, "GET", "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("# TYPE sessiond_ops_total counter"), "{body}");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_members_metrics_carry_the_cluster_families() {
    let dir = tempfile::tempdir().unwrap();
    let peer_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = sessiond::Daemon::start(sessiond::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: dir.path().to_owned(),
        cluster: Some(sessiond::cluster::ClusterConfig {
            node_id: 1,
            members: [(1, format!("127.0.0.1:{peer_port}"))].into(),
            join: false,
            token: None,
            advertise: None,
            write_timeout: std::time::Duration::from_secs(5),
            tls: None,
        }),
        ..sessiond::Config::default()
    })
    .await
    .unwrap();
    let addr = daemon.metrics_addr().unwrap();
    let started = std::time::Instant::now();
    let (types, samples, body) = loop {
        let (_, body) = get(addr, "GET", "/metrics").await;
        let (types, samples) = parse(&body);
        if value(&samples, "sessiond_cluster_role", &[("role", "leader")]) == Some(1.0) {
            break (types, samples, body);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never leader:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(!body.contains("_total_total"), "{body}");
    for (name, kind) in [
        ("sessiond_cluster_role", "gauge"),
        ("sessiond_cluster_term", "gauge"),
        ("sessiond_cluster_commit_index", "gauge"),
        ("sessiond_cluster_applied_index", "gauge"),
        ("sessiond_cluster_last_log_index", "gauge"),
        ("sessiond_cluster_elections_total", "counter"),
        ("sessiond_cluster_leader_id", "gauge"),
        ("sessiond_cluster_replication_lag", "gauge"),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "{name}:\n{body}"
        );
    }
    for role in ["follower", "candidate", "learner", "shutdown"] {
        assert_eq!(
            value(&samples, "sessiond_cluster_role", &[("role", role)]),
            Some(0.0),
            "{body}"
        );
    }
    assert_eq!(
        value(&samples, "sessiond_cluster_leader_id", &[]),
        Some(1.0)
    );
    assert!(value(&samples, "sessiond_cluster_term", &[]).unwrap() >= 1.0);
    assert!(value(&samples, "sessiond_cluster_elections_total", &[]).is_some());
    daemon.shutdown().await;
}
