//! The real `sessiond-bench` binary against a real daemon (in memory, on
//! port 0, in this process): every workload runs, stops by itself, reports
//! what it did, and `--preload` really fills the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;
use sessiond::config::Config;
use sessiond::server::Daemon;

async fn daemon() -> Daemon {
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        in_memory: true,
        ..Config::default()
    };
    Daemon::start(config).await.expect("daemon starts")
}

/// Runs the bench binary with `args` (blocking, off the runtime's workers)
/// and returns its parsed `--json` line.
async fn bench(args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sessiond-bench"))
            .args(&args)
            .arg("--json")
            .output()
            .expect("sessiond-bench runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "sessiond-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

fn args(addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--threads".to_owned(),
        "1".to_owned(),
        "--target".to_owned(),
        format!("sessiond://{addr}"),
    ];
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

fn check_report(report: &Value, workload: &str, ops: u64) {
    assert_eq!(report["target"], "sessiond", "{report}");
    assert_eq!(report["workload"], workload, "{report}");
    assert_eq!(report["ops"].as_u64(), Some(ops), "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert!(report["ops_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    let lat = &report["latency_us"];
    let p = |k: &str| lat[k].as_u64().unwrap();
    assert!(p("p50") <= p("p90") && p("p90") <= p("p99"), "{report}");
    assert!(p("p99") <= p("p999") && p("p999") <= p("max"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_its_requests_without_errors() {
    let d = daemon().await;
    for (workload, name) in [
        ("create", "create"),
        ("get", "get"),
        ("get-touch", "gettouch"),
        ("update", "update"),
        ("mixed", "mixed"),
    ] {
        let report = bench(args(
            d.local_addr(),
            &[
                "--workload",
                workload,
                "--keyspace",
                "500",
                "--concurrency",
                "8",
                "--requests",
                "2000",
            ],
        ))
        .await;
        check_report(&report, name, 2000);
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_reads_count_every_request() {
    let d = daemon().await;
    let report = bench(args(
        d.local_addr(),
        &[
            "--workload",
            "get",
            "--keyspace",
            "300",
            "--concurrency",
            "4",
            "--pipeline",
            "16",
            "--requests",
            "6400",
        ],
    ))
    .await;
    check_report(&report, "get", 6400);
    assert_eq!(report["pipeline"].as_u64(), Some(16));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_fills_the_store_before_a_create_storm() {
    let d = daemon().await;
    let report = bench(args(
        d.local_addr(),
        &[
            "--workload",
            "create",
            "--preload",
            "3000",
            "--requests",
            "1000",
        ],
    ))
    .await;
    check_report(&report, "create", 1000);
    assert_eq!(d.store().len(), 4000);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_bound_stops_the_run() {
    let d = daemon().await;
    let report = bench(args(
        d.local_addr(),
        &[
            "--workload",
            "get-touch",
            "--keyspace",
            "100",
            "--duration",
            "0.5",
        ],
    ))
    .await;
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
    let secs = report["seconds"].as_f64().unwrap();
    assert!((0.5..30.0).contains(&secs), "{report}");
    d.shutdown().await;
}
