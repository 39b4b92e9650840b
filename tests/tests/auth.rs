//! Authentication and scopes on the real daemon: no token, a wrong token, a
//! namespace outside the token's scope, a read-only token writing; and
//! protected mode refusing an open public listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use sessiond_client::{Client, ClientConfig, CreateOptions, ErrorCode, SubscribeOptions};
use sessiond_e2e::{daemon_bin, DaemonProcess};

fn sha256_of(token: &str) -> String {
    let out = Command::new(daemon_bin!())
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{token}\n").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn client(
    daemon: &DaemonProcess,
    token: Option<&str>,
) -> Result<Client, sessiond_client::Error> {
    let mut c = ClientConfig::new(daemon.addr().to_string()).connections(1);
    if let Some(t) = token {
        c = c.auth_token(t);
    }
    Client::connect_with(c).await
}

#[tokio::test]
async fn tokens_are_checked_and_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[token]]\nname = \"web\"\nsha256 = \"{}\"\nnamespaces = [\"app\"]\nrights = \"write\"\n\n\
             [[token]]\nname = \"reports\"\nsha256 = \"{}\"\nnamespaces = [\"app\"]\nrights = \"read\"\n",
            sha256_of("web-token-0123456789"),
            sha256_of("read-token-0123456789")
        ),
    )
    .unwrap();
    let daemon =
        DaemonProcess::start(daemon_bin!(), &["--auth-file", auth.to_str().unwrap()]).unwrap();

    let err = client(&daemon, None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    let err = client(&daemon, Some("not-the-token")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");

    let web = client(&daemon, Some("web-token-0123456789")).await.unwrap();
    let s = web.create("app", CreateOptions::new()).await.unwrap();
    let err = web.create("other", CreateOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    let err = web.stats().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");

    let reader = client(&daemon, Some("read-token-0123456789"))
        .await
        .unwrap();
    assert!(reader.get("app", s.id).await.unwrap().is_some());
    let err = reader.delete("app", s.id).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    let err = reader.touch("app", s.id).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    // The refused write changed nothing.
    assert!(web.get("app", s.id).await.unwrap().is_some());

    // Events: a namespace outside the token's scope is refused; without
    // namespaces the subscription sees those the token may read.
    let mut outside = reader.subscribe(SubscribeOptions::new().namespace("other"));
    let err = outside.next_event().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    let mut scoped = reader.subscribe(SubscribeOptions::new());
    assert!(scoped.subscribed().await.is_some());
    let made = web.create("app", CreateOptions::new()).await.unwrap();
    let event = tokio::time::timeout(std::time::Duration::from_secs(10), scoped.next_event())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((event.namespace.as_str(), event.id), ("app", made.id));

    // The token never reaches the logs; its name does.
    let logs = daemon.logs();
    assert!(
        !logs.contains("web-token-0123456789") && !logs.contains("read-token"),
        "token in logs"
    );
    assert!(logs.contains("authentication failed"));
}

#[test]
fn protected_mode_refuses_a_public_listener_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(daemon_bin!())
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without authentication") && err.contains("--auth-file"),
        "{err}"
    );
}
