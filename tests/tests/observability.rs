//! Metrics over HTTP from the real daemon, and logs that never carry a
//! session id, token or attribute value, even at debug level.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use sessiond_client::{Client, CreateOptions, UpdateOptions};
use sessiond_e2e::{daemon_bin, DaemonProcess};

fn metrics_addr(daemon: &DaemonProcess) -> String {
    let start = Instant::now();
    loop {
        let logs = daemon.logs();
        if let Some(rest) = logs.split("metrics on http://").nth(1) {
            return rest.split('/').next().unwrap().to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no metrics line:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn metrics_and_clean_logs_under_a_full_workload() {
    let daemon = DaemonProcess::start(daemon_bin!(), &["--metrics-listen", "127.0.0.1:0"]).unwrap();
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    let mut secrets = Vec::new();
    for i in 0..20 {
        let s = client
            .create(
                "app",
                CreateOptions::new()
                    .owner(format!("owner-{i}"))
                    .attr("secret_attr", format!("attr-value-{i}-zzz")),
            )
            .await
            .unwrap();
        client
            .update("app", s.id, UpdateOptions::new().set("cart", i64::from(i)))
            .await
            .unwrap();
        let r = client.rotate("app", s.id, None).await.unwrap();
        secrets.push(s.id.to_string());
        secrets.push(r.id.to_string());
        let _ = client.get("app", s.id).await.unwrap();
        client.delete("app", r.id).await.unwrap();
    }
    let _ = client
        .get("nope", sessiond_client::SessionId::new_v4())
        .await;

    let addr = metrics_addr(&daemon);
    let text = get(&addr, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for needle in [
        "sessiond_ops_total{op=\"create\",outcome=\"ok\"} 20",
        "sessiond_ops_total{op=\"rotate\",outcome=\"ok\"} 20",
        "sessiond_op_seconds_bucket{op=\"get\",le=\"+Inf\"}",
        "sessiond_records{namespace=\"app\"} 0",
        "sessiond_connections 2", // the client's default pool
        "sessiond_log_bytes_total",
        "sessiond_log_fsync_seconds_count",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    assert!(get(&addr, "/other").starts_with("HTTP/1.1 404"));

    // Debug-level logs of all that: not one id, attribute value or token.
    let logs = daemon.logs();
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a session id reached the logs");
    }
    assert!(
        !logs.contains("attr-value-"),
        "an attribute value reached the logs"
    );
}
