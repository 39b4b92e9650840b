//! Session events end to end (issue 18): the client's `EventStream`,
//! `sessionctl watch --json` and the HTTP bridge's `GET /events`, against
//! the real daemon process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use sessiond_client::{
    Client, ClientConfig, CreateOptions, DeleteReason, Event, EventKind, EventStream,
    SubscribeOptions,
};
use sessiond_e2e::{daemon_bin, free_port, DaemonProcess};

/// The next event of `stream`, within 10 s.
async fn next(stream: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), stream.next_event())
        .await
        .expect("no event within 10 s")
        .expect("the stream ended")
        .expect("the stream failed")
}

/// Waits (up to 10 s) for the daemon to accept the subscription.
async fn subscribed(stream: &mut EventStream) {
    tokio::time::timeout(Duration::from_secs(10), stream.subscribed())
        .await
        .expect("not subscribed within 10 s")
        .expect("the subscription was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stream_yields_created_rotated_and_deleted() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let addr = daemon.addr().to_string();
    let watcher = Client::connect(addr.clone()).await.unwrap();
    let mut events = watcher.subscribe(SubscribeOptions::new().namespace("ev"));
    subscribed(&mut events).await;

    let actor = Client::connect(addr).await.unwrap();
    // Not watched: another namespace.
    actor
        .create("other", CreateOptions::new().owner("bob"))
        .await
        .unwrap();
    let s = actor
        .create("ev", CreateOptions::new().owner("alice"))
        .await
        .unwrap();
    let rotated = actor.rotate("ev", s.id, None).await.unwrap();
    assert!(actor.delete("ev", rotated.id).await.unwrap());

    let created = next(&mut events).await;
    assert_eq!(created.kind, EventKind::Created);
    assert_eq!(created.id, s.id);
    assert_eq!(created.namespace, "ev");
    assert_eq!(created.owner.as_deref(), Some("alice"));
    let rot = next(&mut events).await;
    assert_eq!(rot.kind, EventKind::Rotated { to: rotated.id });
    assert_eq!(rot.id, s.id, "a rotation's id is the old one");
    let deleted = next(&mut events).await;
    assert_eq!(
        deleted.kind,
        EventKind::Deleted {
            reason: DeleteReason::Delete
        }
    );
    assert_eq!(deleted.id, rotated.id);
    assert!(created.cursor < rot.cursor && rot.cursor < deleted.cursor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stream_resumes_after_a_daemon_restart_without_duplicates() {
    let addr = format!("127.0.0.1:{}", free_port());
    let daemon =
        DaemonProcess::start(daemon_bin!(), &["--fsync", "always", "--listen", &addr]).unwrap();
    let config = ClientConfig::new(addr.clone())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let watcher = Client::connect_with(config.clone()).await.unwrap();
    let mut events = watcher.subscribe(
        SubscribeOptions::new()
            .namespace("ev")
            // Notice a dead connection fast even without an EOF.
            .idle_timeout(Duration::from_secs(5)),
    );
    subscribed(&mut events).await;

    let actor = Client::connect_with(config.clone()).await.unwrap();
    let a = actor.create("ev", CreateOptions::new()).await.unwrap();
    let first = next(&mut events).await;
    assert_eq!((first.kind, first.id), (EventKind::Created, a.id));

    let daemon = daemon
        .restart(&["--fsync", "always", "--listen", &addr])
        .unwrap();
    // Written while the watcher may not be back yet: the resubscription
    // from the last cursor must still deliver it, and nothing before it.
    let actor = Client::connect_with(config).await.unwrap();
    let b = actor.create("ev", CreateOptions::new()).await.unwrap();
    assert!(actor.delete("ev", a.id).await.unwrap());

    let second = next(&mut events).await;
    assert_eq!(
        (second.kind, second.id),
        (EventKind::Created, b.id),
        "resumed after cursor {}: {:?}",
        first.cursor,
        second.kind
    );
    assert!(second.cursor > first.cursor, "cursors survive the restart");
    let third = next(&mut events).await;
    assert_eq!(third.id, a.id);
    assert!(matches!(third.kind, EventKind::Deleted { .. }));
    assert!(third.cursor > second.cursor);
    drop(daemon);
}

/// Reads lines of `child`'s stdout on a thread; `recv_timeout` on the result.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessionctl_watch_json_prints_one_event_per_line() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let addr = daemon.addr().to_string();
    let actor = Client::connect(addr.clone()).await.unwrap();
    // Before the watcher starts: --oldest must still show them.
    let s = actor
        .create("ev", CreateOptions::new().owner("carol"))
        .await
        .unwrap();
    assert!(actor.delete("ev", s.id).await.unwrap());

    let mut child = Command::new(env!("CARGO_BIN_EXE_e2e-sessionctl"))
        .args(["--addr", &addr, "--json", "watch", "-n", "ev", "--oldest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let mut got = Vec::new();
    for _ in 0..2 {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("sessionctl watch printed nothing within 10 s");
        got.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got[0]["kind"], "created");
    assert_eq!(got[0]["id"], s.id.to_string());
    assert_eq!(got[0]["owner"], "carol");
    assert_eq!(got[0]["namespace"], "ev");
    assert_eq!(got[1]["kind"], "deleted");
    assert_eq!(got[1]["reason"], "delete");
    assert!(got[0]["cursor"].as_u64().unwrap() < got[1]["cursor"].as_u64().unwrap());
    assert!(got[0]["at"].as_str().unwrap().ends_with('Z'));
}

/// One parsed SSE message.
#[derive(Debug)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads SSE messages from `response` until `n` are in (within 10 s);
/// comments (keep-alives) are skipped.
async fn read_messages(response: &mut reqwest::Response, n: usize) -> Vec<Message> {
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("not enough SSE messages within 10 s")
            .unwrap()
            .expect("the SSE stream ended");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut m = Message {
                id: None,
                event: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    m.id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("event:") {
                    m.event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    m.data.push_str(v.trim_start());
                }
            }
            if m.event.is_some() || !m.data.is_empty() {
                out.push(m);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_carry_the_cursor_as_id_and_last_event_id_resumes() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let addr = daemon.addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let bridge = sessiond_http::Bridge::start(sessiond_http::Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        daemon: Some(addr.clone()),
        data_dir: dir.path().to_owned(),
        admin_email: Some("admin@example.com".into()),
        admin_password: Some("admin-password".into()),
        ..sessiond_http::Config::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", bridge.http_addr);
    let client = Client::connect(addr).await.unwrap();
    let admin = sessiond_http::users::get_by_email(&client, "admin@example.com")
        .await
        .unwrap()
        .expect("the configured administrator exists");
    let token = sessiond_http::auth::issue_access_token(&client, &admin.id, "events-test")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{base}/events?namespace=ev&from=oldest");

    // Administrators only.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/events?namespace=bridge-access"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "the bridge's credentials are not watchable"
    );

    let s = client
        .create("ev", CreateOptions::new().owner("dave"))
        .await
        .unwrap();
    let rotated = client.rotate("ev", s.id, None).await.unwrap();
    assert!(client.delete("ev", rotated.id).await.unwrap());

    let mut r = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let messages = read_messages(&mut r, 3).await;
    drop(r);
    let kinds: Vec<_> = messages.iter().map(|m| m.event.clone().unwrap()).collect();
    assert_eq!(kinds, ["created", "rotated", "deleted"]);
    let mut cursors = Vec::new();
    for m in &messages {
        let data: serde_json::Value = serde_json::from_str(&m.data).unwrap();
        let cursor = data["cursor"].as_u64().unwrap();
        assert_eq!(m.id.as_deref(), Some(cursor.to_string().as_str()));
        cursors.push(cursor);
    }
    assert!(cursors.windows(2).all(|w| w[0] < w[1]));

    // EventSource's reconnect: Last-Event-ID (over `from`) resumes after it.
    let mut r = http
        .get(&url)
        .bearer_auth(&token)
        .header("Last-Event-ID", cursors[0].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again = read_messages(&mut r, 2).await;
    let ids: Vec<_> = again.iter().map(|m| m.id.clone().unwrap()).collect();
    assert_eq!(ids, [cursors[1].to_string(), cursors[2].to_string()]);
    drop(r);

    bridge.shutdown().await;
}
