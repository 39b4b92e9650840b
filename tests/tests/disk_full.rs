//! A real full disk: the daemon runs on a small tmpfs mounted for the test
//! (where mounting is not permitted, e.g. without root, the test says so and
//! stops; the simulated disk of `daemon/src/log/vfs.rs` covers the same paths
//! in `cargo test -p sessiond disk_full`). Writes fill it until they are
//! refused with `Unavailable`; reads go on; a SIGKILL and a restart on the
//! full disk start read-only with every acknowledged session; writes resume
//! by themselves once space is freed; nothing is damaged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sessiond_client::{Client, ClientConfig, CreateOptions, ErrorCode, SessionId};
use sessiond_e2e::{daemon_bin, DaemonProcess};

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(Self { dir: Some(dir) })
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = Command::new("umount").arg(dir.path()).status();
        }
    }
}

async fn client(daemon: &DaemonProcess) -> Client {
    Client::connect_with(
        ClientConfig::new(daemon.addr().to_string())
            .connections(2)
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap()
}

fn pad() -> CreateOptions {
    CreateOptions::new().attr("pad", "x".repeat(900))
}

/// Fills all but `left` bytes of the file system at `dir` with one file.
fn fill(dir: &Path, left: u64) -> PathBuf {
    let path = dir.join("filler");
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let avail: u64 = text.lines().nth(1).unwrap().trim().parse().unwrap();
    let size = avail.saturating_sub(left);
    std::fs::write(&path, vec![7u8; size as usize]).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_a_real_file_system_under_fsync_always() {
    scenario("always").await;
}

/// Under `everysec` too, a write is acknowledged only once it is in the
/// file: nothing acknowledged is lost to a SIGKILL on the full disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_a_real_file_system_under_fsync_everysec() {
    scenario("everysec").await;
}

async fn scenario(fsync: &str) {
    let Some(fs) = Tmpfs::mount(16 * 1024 * 1024) else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the simulated disk covers these paths"
        );
        return;
    };
    let data = tempfile::TempDir::new_in(fs.path()).unwrap();
    let flags = ["--fsync", fsync];
    let daemon = DaemonProcess::start_in(daemon_bin!(), data, &flags, &[]).unwrap();
    let c = client(&daemon).await;
    // Leave about 2 MiB: far less than the log's 8 MiB zero-fill chunk.
    let filler = fill(fs.path(), 2 * 1024 * 1024);

    let mut acked: Vec<SessionId> = Vec::new();
    let refused = loop {
        match c.create("full", pad()).await {
            Ok(s) => acked.push(s.id),
            Err(e) => break e,
        }
        assert!(acked.len() < 100_000, "the disk never filled");
    };
    assert_eq!(refused.code(), Some(ErrorCode::Unavailable), "{refused}");
    assert!(
        refused.to_string().contains("space"),
        "the reason is given: {refused}"
    );
    // About 1 KiB a session: most of the 2 MiB was used (under `always` no
    // headroom is kept; otherwise at most the reservation's margin and its
    // last chunk that did not fit, under 400 KiB together).
    assert!(acked.len() > 1500, "only {} sessions fit", acked.len());
    for id in &acked {
        assert!(c.get("full", *id).await.unwrap().is_some(), "reads go on");
    }

    // A crash on the full disk, and a restart on it.
    drop(c);
    let daemon = daemon.restart(&flags).unwrap();
    let c = client(&daemon).await;
    for id in &acked {
        assert!(
            c.get("full", *id).await.unwrap().is_some(),
            "an acknowledged session is missing after the restart on a full disk"
        );
    }
    let err = c.create("full", pad()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");

    // Space comes back: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        match c.create("full", pad()).await {
            Ok(s) => break s.id,
            Err(e) if e.code() == Some(ErrorCode::Unavailable) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("writes did not resume: {e}"),
        }
    };
    acked.push(after);

    // A graceful stop and a last start keep everything; no file is damaged.
    drop(c);
    let mut daemon = daemon;
    assert!(daemon
        .signal_and_wait("TERM", Duration::from_secs(10))
        .unwrap()
        .success());
    let out = Command::new(daemon_bin!())
        .arg("check-log")
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains(" 0 damaged"), "{report}");
    let daemon = daemon.restart(&flags).unwrap();
    let c = client(&daemon).await;
    for id in &acked {
        assert!(c.get("full", *id).await.unwrap().is_some());
    }
    eprintln!(
        "disk full (--fsync {fsync}): {} sessions acknowledged before the disk filled, all kept across a SIGKILL on the full disk and a restart",
        acked.len() - 1
    );
}
