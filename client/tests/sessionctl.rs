//! `sessionctl` (the real binary) against the fake daemon: output formats,
//! exit statuses and the auth token.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};
use std::sync::Arc;

use common::{session, Action, Fake, Script};
use sessiond_client::protocol::Op;
use sessiond_client::{ErrorCode, Reply, SessionId, WireError};

const KNOWN: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

fn script() -> Script {
    let known: SessionId = KNOWN.parse().unwrap();
    Arc::new(move |req, _| {
        Action::Answer(match &req.op {
            Op::Ping => Reply::Pong,
            Op::Get(g) if g.id == known => Reply::MaybeSession(Some(session(g.id))),
            Op::Get(_) => Reply::MaybeSession(None),
            Op::Delete(_) => Reply::Error(WireError::new(ErrorCode::Unavailable, "disk full")),
            _ => Reply::Error(WireError::new(ErrorCode::InvalidRequest, "not scripted")),
        })
    })
}

/// Runs sessionctl against `fake` with `args` (and extra environment), off
/// the runtime thread so the fake keeps serving.
async fn ctl(fake: &Fake, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessionctl"));
    cmd.env_remove("SESSIOND_ADDR")
        .env_remove("SESSIOND_TOKEN")
        .arg("--addr")
        .arg(fake.addr.to_string())
        .args(args)
        .envs(env.iter().copied());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[tokio::test]
async fn ping_prints_the_round_trip_as_text_or_json() {
    let fake = Fake::start(script()).await;
    let out = ctl(&fake, &["ping"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("PONG in ") && text.trim_end().ends_with("µs"),
        "{text}"
    );

    let out = ctl(&fake, &["--json", "ping"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["rtt_us"].is_u64(), "{v}");
}

#[tokio::test]
async fn get_json_has_the_uuid_rfc3339_times_and_natural_attrs() {
    let fake = Fake::start(script()).await;
    let out = ctl(&fake, &["--json", "get", "-n", "app", KNOWN], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], KNOWN);
    assert_eq!(v["namespace"], "app");
    assert_eq!(v["owner"], "alice");
    assert_eq!(v["created_at"], "2023-11-14T22:13:20.000Z");
    assert_eq!(v["idle_ttl_ms"], 1_800_000);
    assert_eq!(v["max_lifetime_ms"], serde_json::Value::Null);
    assert_eq!(v["version"], 3);
    assert_eq!(v["attrs"]["role"], "admin");
    assert_eq!(v["attrs"]["visits"], 3);
    assert_eq!(v["attrs"]["ratio"], 0.5);
    assert_eq!(v["attrs"]["raw"], serde_json::json!([1, 2]));
    assert_eq!(v["attrs"]["logins"]["counter"], 2);

    let human = ctl(&fake, &["get", "--namespace", "app", KNOWN, "--touch"], &[]).await;
    assert!(human.status.success(), "{}", stderr(&human));
    let text = stdout(&human);
    assert!(
        text.contains(KNOWN) && text.contains("owner:        alice"),
        "{text}"
    );
    assert!(text.contains("attr role = \"admin\""), "{text}");
}

#[tokio::test]
async fn a_missing_session_exits_1_with_a_message() {
    let fake = Fake::start(script()).await;
    let other = SessionId::new_v4().to_string();
    let out = ctl(&fake, &["get", "-n", "app", &other], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no such session"));
    assert!(stdout(&out).is_empty());

    let out = ctl(&fake, &["--json", "get", "-n", "app", &other], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["found"], false);
}

#[tokio::test]
async fn daemon_errors_and_bad_input_exit_2() {
    let fake = Fake::start(script()).await;
    let out = ctl(&fake, &["delete", "-n", "app", KNOWN], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains("disk full"),
        "{err}"
    );

    let out = ctl(&fake, &["get", "-n", "app", "not-a-uuid-secret"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("malformed session id") && !err.contains("secret"),
        "{err}"
    );

    let out = ctl(&fake, &["create", "-n", "app", "--idle-ttl", "5"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[tokio::test]
async fn the_token_is_sent_and_never_printed() {
    let fake = Fake::start(script()).await;
    let out = ctl(&fake, &["ping"], &[("SESSIOND_TOKEN", "hunter2")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let hellos = fake.hellos();
    assert_eq!(hellos.len(), 1);
    assert_eq!(
        hellos[0].auth_token.as_ref().map(|t| t.0.as_str()),
        Some("hunter2")
    );
    assert_eq!(hellos[0].client_name.as_deref(), Some("sessionctl"));
    assert!(!stdout(&out).contains("hunter2") && !stderr(&out).contains("hunter2"));

    // Nor by --help, which lists the environment variable.
    let help = ctl(&fake, &["--help"], &[("SESSIOND_TOKEN", "hunter2")]).await;
    assert!(help.status.success());
    let text = stdout(&help);
    assert!(
        text.contains("SESSIOND_TOKEN") && !text.contains("hunter2"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_daemon_exits_2() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sessionctl"))
            .env_remove("SESSIOND_TOKEN")
            .args(["--addr", &addr, "--timeout", "2s", "ping"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: cannot connect to 127.0.0.1:"));
}
