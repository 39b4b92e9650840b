//! The client against a real daemon that dies, comes back, or never answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_client::{Client, ClientConfig, CreateOptions, Error, UpdateOptions};
use sessiond_e2e::{daemon_bin, DaemonProcess};

/// Kill the daemon under load and start it again on the same address and
/// data dir: requests in flight fail with retryable errors, nothing hangs,
/// and every task is served again once the daemon is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_mid_load() {
    let daemon = DaemonProcess::start(daemon_bin!(), &["--fsync", "always"]).unwrap();
    let addr = daemon.addr().to_string();
    let client = Client::connect_with(
        ClientConfig::new(addr.clone())
            .connections(4)
            .request_timeout(Duration::from_secs(2))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok_after_restart = Arc::new(AtomicU64::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..50 {
        let (client, stop, ok_after, restarted) = (
            client.clone(),
            Arc::clone(&stop),
            Arc::clone(&ok_after_restart),
            Arc::clone(&restarted),
        );
        tasks.push(tokio::spawn(async move {
            let mut id = None;
            let mut served_after_restart = false;
            while !stop.load(Ordering::Relaxed) {
                let result = match id {
                    None => client
                        .create("load", CreateOptions::new().owner(format!("u{t}")))
                        .await
                        .map(|s| id = Some(s.id)),
                    Some(sid) => client
                        .update("load", sid, UpdateOptions::new().set("n", 1i64))
                        .await
                        .map(drop),
                };
                match result {
                    Ok(()) => {
                        if restarted.load(Ordering::Relaxed) && !served_after_restart {
                            served_after_restart = true;
                            ok_after.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        assert!(e.is_retryable(), "task {t}: non-retryable error {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let daemon = daemon
        .restart(&["--fsync", "always", "--listen", &addr])
        .unwrap();
    restarted.store(true, Ordering::Relaxed);
    let start = Instant::now();
    while ok_after_restart.load(Ordering::Relaxed) < 50 && start.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        ok_after_restart.load(Ordering::Relaxed),
        50,
        "some tasks were never served again"
    );
    // Reads go straight through the healed pool.
    assert!(client.stats().await.unwrap().records >= 50);
    drop(daemon);
}

/// A peer that accepts connections and never says a word.
#[tokio::test]
async fn a_daemon_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let started = Instant::now();
    let err = Client::connect_with(
        ClientConfig::new(addr.to_string()).connect_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Connect { source, .. } if source.kind() == std::io::ErrorKind::TimedOut),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "connect waited far past its timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_tasks_through_one_client() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    let s = client.create("app", CreateOptions::new()).await.unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client.incr("app", s.id, "hits", 1).await.unwrap();
                client.get("app", s.id).await.unwrap().unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let got = client.get("app", s.id).await.unwrap().unwrap();
    assert_eq!(got.attr("hits"), Some(&sessiond_client::Value::Int(1000)));
}
