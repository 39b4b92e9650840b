//! `sessionctl` against the real daemon: the README's commands, human and JSON output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use sessiond_e2e::{daemon_bin, DaemonProcess};

fn ctl(daemon: &DaemonProcess, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_e2e-sessionctl"))
        .arg("--addr")
        .arg(daemon.addr().to_string())
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(daemon: &DaemonProcess, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(daemon, &all);
    assert!(
        out.status.success(),
        "sessionctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sessionctl_drives_every_command() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();

    let ping = ctl(&daemon, &["ping"]);
    assert!(ping.status.success());
    assert!(String::from_utf8_lossy(&ping.stdout).starts_with("PONG"));

    // The README's example.
    let out = ctl(
        &daemon,
        &[
            "create",
            "--namespace",
            "app",
            "--owner",
            "alice",
            "--idle-ttl",
            "30m",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let id = text.lines().next().unwrap().trim().to_owned();
    assert_eq!(id.len(), 36, "first line is the id: {text}");

    let s = ok_json(&daemon, &["get", "--namespace", "app", &id]);
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["owner"], "alice");
    assert_eq!(s["idle_ttl_ms"], 1_800_000);
    assert_eq!(s["version"], 1);

    let s = ok_json(
        &daemon,
        &[
            "create",
            "-n",
            "app",
            "--owner",
            "alice",
            "--attr",
            "role=admin",
            "--attr",
            "visits:=3",
        ],
    );
    assert_eq!(s["attrs"]["role"], "admin");
    assert_eq!(s["attrs"]["visits"], 3);
    assert_eq!(s["expires_at"], serde_json::Value::Null);

    let human = ctl(&daemon, &["get", "-n", "app", &id, "--touch"]);
    assert!(human.status.success());
    assert!(String::from_utf8_lossy(&human.stdout).contains("owner:        alice"));

    let t = ok_json(&daemon, &["touch", "-n", "app", &id]);
    assert_eq!(t["found"], true);

    let list = ok_json(
        &daemon,
        &["list", "-n", "app", "--owner", "alice", "--page-size", "1"],
    );
    assert_eq!(list.as_array().unwrap().len(), 2);

    let stats = ok_json(&daemon, &["stats"]);
    assert_eq!(stats["records"], 2);
    assert_eq!(stats["namespaces"]["app"], 2);

    assert!(ctl(&daemon, &["delete", "-n", "app", &id]).status.success());
    // Gone now: exit status 1, for scripts.
    assert_eq!(
        ctl(&daemon, &["get", "-n", "app", &id]).status.code(),
        Some(1)
    );
    assert_eq!(
        ctl(&daemon, &["delete", "-n", "app", &id]).status.code(),
        Some(1)
    );

    // Bad input: a clear message, status 2, and the id is not echoed.
    let bad = ctl(&daemon, &["get", "-n", "app", "not-an-id-secret"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("malformed session id") && !err.contains("secret"),
        "{err}"
    );
}

#[test]
fn sessionctl_reports_an_unreachable_daemon() {
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-sessionctl"))
        .args(["--addr", "127.0.0.1:1", "--timeout", "2s", "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to 127.0.0.1:1"));
}
