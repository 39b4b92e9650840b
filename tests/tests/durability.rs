//! Durability of the real process: restarts keep every acknowledged write,
//! SIGKILL at random moments under `--fsync always` loses nothing
//! acknowledged, a second daemon cannot take the same data dir, and
//! `sessiond check-log` reports on the files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sessiond_client::{Client, ClientConfig, CreateOptions, SessionId, UpdateOptions, Value};
use sessiond_e2e::{daemon_bin, DaemonProcess};

async fn client(daemon: &DaemonProcess) -> Client {
    Client::connect_with(
        ClientConfig::new(daemon.addr().to_string())
            .connections(4)
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_graceful_restart_keeps_everything() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let c = client(&daemon).await;
    let kept = c
        .create("app", CreateOptions::new().owner("alice").attr("k", "v"))
        .await
        .unwrap();
    c.update("app", kept.id, UpdateOptions::new().set("n", 7i64))
        .await
        .unwrap();
    let gone = c.create("app", CreateOptions::new()).await.unwrap();
    c.delete("app", gone.id).await.unwrap();
    let rotated = c.rotate("app", kept.id, None).await.unwrap();
    drop(c);
    let mut daemon = daemon;
    assert!(daemon
        .signal_and_wait("TERM", Duration::from_secs(10))
        .unwrap()
        .success());
    let daemon = daemon.restart(&[]).unwrap();
    let c = client(&daemon).await;
    let got = c
        .get("app", rotated.id)
        .await
        .unwrap()
        .expect("survived the restart");
    assert_eq!(got.attr("n"), Some(&Value::Int(7)));
    assert_eq!(got.version, 2);
    assert_eq!(c.get("app", kept.id).await.unwrap(), None);
    assert_eq!(c.get("app", gone.id).await.unwrap(), None);
    // Tombstones survive too: a late create of a deleted id is still refused.
    let err = c
        .create("app", CreateOptions::new().id(gone.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(sessiond_client::ErrorCode::Gone));
    assert_eq!(
        c.list_by_owner("app", "alice", None, 10)
            .await
            .unwrap()
            .sessions
            .len(),
        1
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_dir_refuses_to_start() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let out = Command::new(daemon_bin!())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another sessiond"), "{err}");
}

#[test]
fn check_log_reports_and_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("seg-0000000001.log");
    // A valid header, then a frame with a bad checksum followed by more bytes.
    let mut bytes = b"SESSIOND\x01\x00\x01\x00\x35\xc2\x86\xc4".to_vec();
    bytes.extend_from_slice(&[3, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
    bytes.extend_from_slice(&[3, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(dir.path().join("seg-0000000002.log"), &bytes[..16]).unwrap();
    let run = |repair: bool| {
        let mut cmd = Command::new(daemon_bin!());
        cmd.arg("check-log").arg(dir.path());
        if repair {
            cmd.arg("--repair");
        }
        cmd.output().unwrap()
    };
    let out = run(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("seg-0000000001.log: 0 records")
            && text.contains("DAMAGED at byte 16: checksum mismatch"),
        "{text}"
    );
    assert!(text.contains("2 files checked, 1 damaged"), "{text}");
    let out = run(true);
    assert!(out.status.success());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 16);
    assert!(dir.path().join("seg-0000000001.log.cut-at-16").exists());
    assert!(run(false).status.success());
}

/// The last acknowledged value of each session, shared by the writer tasks.
type Acked = Arc<Mutex<HashMap<SessionId, i64>>>;

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// SIGKILL the daemon at a random moment while many tasks write with
/// `--fsync always`; after each restart every acknowledged write is there with
/// (at least) its last acknowledged value. `SESSIOND_CRASH_ROUNDS` sets the
/// number of rounds (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_no_acknowledged_write() {
    let rounds: usize = std::env::var("SESSIOND_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut rng = seed();
    let mut next = move || {
        // xorshift: a different schedule every run, printed on failure.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let acked: Acked = Arc::new(Mutex::new(HashMap::new()));
    let mut daemon = DaemonProcess::start(daemon_bin!(), &["--fsync", "always"]).unwrap();
    for round in 0..rounds {
        let c = client(&daemon).await;
        // Everything acknowledged so far must have survived the last crash.
        let expected: Vec<(SessionId, i64)> = acked
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        for (id, value) in &expected {
            let got = c
                .get("crash", *id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: an acknowledged session is missing"));
            let Some(Value::Int(n)) = got.attr("n") else {
                panic!("round {round}: attribute missing")
            };
            // A write may land and crash before its ack: never less than acked.
            assert!(
                *n >= *value,
                "round {round}: value {n} older than acknowledged {value}"
            );
            acked.lock().unwrap().insert(*id, *n);
        }
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, acked) = (c.clone(), Arc::clone(&acked));
            tasks.push(tokio::spawn(async move {
                let Ok(s) = c
                    .create("crash", CreateOptions::new().attr("n", 0i64))
                    .await
                else {
                    return;
                };
                acked.lock().unwrap().insert(s.id, 0);
                for n in 1.. {
                    let up = UpdateOptions::new().set("n", n as i64);
                    if c.update("crash", s.id, up).await.is_err() {
                        return;
                    }
                    acked.lock().unwrap().insert(s.id, n as i64);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(50 + next() % 250)).await;
        daemon.kill();
        for t in tasks {
            t.await.unwrap();
        }
        daemon = daemon.restart(&["--fsync", "always"]).unwrap();
    }
    let c = client(&daemon).await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 16, "the load never got going");
    let updates: i64 = acked.values().sum();
    eprintln!(
        "{rounds} crash rounds, {} sessions, {updates} acknowledged updates checked",
        acked.len()
    );
    assert!(updates > 0, "no update was ever acknowledged");
    for (id, value) in acked {
        let got = c
            .get("crash", id)
            .await
            .unwrap()
            .expect("acknowledged session lost");
        assert!(matches!(got.attr("n"), Some(Value::Int(n)) if *n >= value));
    }
}

/// `--in-memory` keeps nothing on disk: the data dir stays empty under
/// writes and a graceful stop, and a restart starts empty.
#[tokio::test]
async fn in_memory_writes_nothing_and_a_restart_starts_empty() {
    let daemon =
        DaemonProcess::start(daemon_bin!(), &["--in-memory", "--fsync", "always"]).unwrap();
    let c = client(&daemon).await;
    let s = c
        .create("app", CreateOptions::new().owner("alice").attr("k", "v"))
        .await
        .unwrap();
    c.update("app", s.id, UpdateOptions::new().set("n", 1i64))
        .await
        .unwrap();
    assert_eq!(
        c.get("app", s.id).await.unwrap().unwrap().attr("n"),
        Some(&Value::Int(1))
    );
    drop(c);
    let mut daemon = daemon;
    assert!(daemon
        .signal_and_wait("TERM", Duration::from_secs(10))
        .unwrap()
        .success());
    let files: Vec<_> = std::fs::read_dir(daemon.data_dir()).unwrap().collect();
    assert!(files.is_empty(), "in-memory daemon wrote {files:?}");
    assert!(daemon.logs().contains("in memory only"));
    let daemon = daemon.restart(&["--in-memory"]).unwrap();
    let c = client(&daemon).await;
    assert_eq!(c.get("app", s.id).await.unwrap(), None);
}
