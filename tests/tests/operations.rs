//! Every operation through the real client against the real daemon process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sessiond_client::{
    Client, ClientConfig, CreateOptions, Error, ErrorCode, LimitPolicy, Reply, SessionId,
    UpdateOptions, Value,
};
use sessiond_e2e::{daemon_bin, DaemonProcess};

async fn start(extra: &[&str]) -> (DaemonProcess, Client) {
    let daemon = DaemonProcess::start(daemon_bin!(), extra).unwrap();
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    (daemon, client)
}

fn code(e: &Error) -> Option<ErrorCode> {
    e.code()
}

/// Polls `cond` every 50 ms for up to `limit`; whether it became true.
async fn eventually(limit: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn crud_round_trip() {
    let (_daemon, client) = start(&[]).await;
    client.ping().await.unwrap();
    let made = client
        .create(
            "app",
            CreateOptions::new()
                .owner("alice")
                .idle_ttl(Duration::from_secs(600))
                .attr("role", "admin")
                .attr("n", 1i64),
        )
        .await
        .unwrap();
    assert_eq!(made.version, 1);
    assert_eq!(made.owner.as_deref(), Some("alice"));
    // A UUID v4 (version nibble 4, RFC 4122 variant).
    assert_eq!(made.id.0[6] >> 4, 4);
    assert_eq!(made.id.0[8] >> 6, 0b10);
    let got = client.get("app", made.id).await.unwrap().unwrap();
    assert_eq!(got, made);
    assert_eq!(client.get("other", made.id).await.unwrap(), None);

    let upd = client
        .update(
            "app",
            made.id,
            UpdateOptions::new().set("cart", 3i64).remove("n"),
        )
        .await
        .unwrap();
    assert_eq!(upd.version, 2);
    let got = client.get_and_touch("app", made.id).await.unwrap().unwrap();
    assert_eq!(got.attr("cart"), Some(&Value::Int(3)));
    assert_eq!(got.attr("n"), None);
    assert!(client.touch("app", made.id).await.unwrap().found);

    assert_eq!(
        client.incr("app", made.id, "cart", 2).await.unwrap().value,
        5
    );

    assert!(client.delete("app", made.id).await.unwrap());
    assert!(!client.delete("app", made.id).await.unwrap());
    assert_eq!(client.get("app", made.id).await.unwrap(), None);
    assert!(!client.touch("app", made.id).await.unwrap().found);

    // A deleted id cannot be brought back by a late create or upsert.
    let err = client
        .create("app", CreateOptions::new().id(made.id))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Gone));
    let err = client
        .update(
            "app",
            made.id,
            UpdateOptions::new().set("x", 1i64).upsert(None),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Gone));

    // Create-if-absent with a caller's id.
    let chosen = SessionId::new_v4();
    client
        .create("app", CreateOptions::new().id(chosen))
        .await
        .unwrap();
    let err = client
        .create("app", CreateOptions::new().id(chosen))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::AlreadyExists));

    let stats = client.stats().await.unwrap();
    assert_eq!(stats.records, 1);
    assert!(stats.ops_total >= 10);
    assert!(stats.connections_current >= 1);
    assert!(stats.uptime_ms > 0);
    assert!(stats.memory_bytes > 0);
    assert!(stats
        .namespaces
        .iter()
        .any(|n| n.namespace == "app" && n.records == 1));
}

#[tokio::test]
async fn conflict_on_a_stale_version_changes_nothing() {
    let (_daemon, client) = start(&[]).await;
    let s = client.create("app", CreateOptions::new()).await.unwrap();
    client
        .update(
            "app",
            s.id,
            UpdateOptions::new().set("v", 1i64).expected_version(1),
        )
        .await
        .unwrap();
    let err = client
        .update(
            "app",
            s.id,
            UpdateOptions::new().set("v", 2i64).expected_version(1),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Conflict));
    let got = client.get("app", s.id).await.unwrap().unwrap();
    assert_eq!((got.version, got.attr("v")), (2, Some(&Value::Int(1))));
}

#[tokio::test]
async fn owner_limit_under_both_policies() {
    let (_daemon, client) = start(&[]).await;
    let opts = |policy| CreateOptions::new().owner("bob").owner_limit(2, policy);
    let a = client
        .create("app", opts(LimitPolicy::Reject))
        .await
        .unwrap();
    let b = client
        .create("app", opts(LimitPolicy::Reject))
        .await
        .unwrap();
    let err = client
        .create("app", opts(LimitPolicy::Reject))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::LimitExceeded));
    let c = client
        .create("app", opts(LimitPolicy::EvictOldest))
        .await
        .unwrap();
    let page = client.list_by_owner("app", "bob", None, 10).await.unwrap();
    let ids: Vec<_> = page.sessions.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&a.id) || !ids.contains(&b.id));
    assert!(ids.contains(&c.id));
    assert_eq!(client.stats().await.unwrap().evicted_total, 1);
}

#[tokio::test]
async fn rate_limit_window() {
    let (_daemon, client) = start(&[]).await;
    let s = client.create("app", CreateOptions::new()).await.unwrap();
    let window = Duration::from_millis(400);
    for n in 1..=3 {
        let r = client
            .incr_window("app", s.id, "logins", 1, window, 3)
            .await
            .unwrap();
        assert!(r.allowed);
        assert_eq!((r.value, r.remaining), (n, Some(3 - n)));
    }
    let refused = client
        .incr_window("app", s.id, "logins", 1, window, 3)
        .await
        .unwrap();
    assert!(!refused.allowed);
    assert_eq!((refused.value, refused.remaining), (3, Some(0)));
    let reset_at = refused.reset_at_ms.unwrap();
    // After the window the counter starts again.
    tokio::time::sleep(window + Duration::from_millis(50)).await;
    let fresh = client
        .incr_window("app", s.id, "logins", 1, window, 3)
        .await
        .unwrap();
    assert!(fresh.allowed);
    assert_eq!(fresh.value, 1);
    assert!(fresh.reset_at_ms.unwrap() > reset_at);
}

#[tokio::test]
async fn rotate_keeps_data_and_retires_the_old_id() {
    let (_daemon, client) = start(&[]).await;
    let s = client
        .create("app", CreateOptions::new().owner("carol").attr("k", "v"))
        .await
        .unwrap();
    let r = client.rotate("app", s.id, None).await.unwrap();
    assert_ne!(r.id, s.id);
    assert_eq!(
        (r.owner.clone(), r.attrs.clone()),
        (s.owner.clone(), s.attrs.clone())
    );
    assert_eq!(client.get("app", s.id).await.unwrap(), None);
    let page = client
        .list_by_owner("app", "carol", None, 10)
        .await
        .unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(page.sessions[0].id, r.id);

    // With a grace period the old id still resolves, then it is gone.
    let g = client
        .rotate("app", r.id, Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(client.get("app", r.id).await.unwrap().unwrap().id, g.id);
    let gone = eventually(Duration::from_secs(5), async || {
        client.get("app", r.id).await.unwrap().is_none()
    })
    .await;
    assert!(gone);
    assert!(client.get("app", g.id).await.unwrap().is_some());
}

#[tokio::test]
async fn list_pages_and_delete_by_owner_spares_one() {
    let (_daemon, client) = start(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(
            client
                .create("app", CreateOptions::new().owner("dave"))
                .await
                .unwrap()
                .id,
        );
    }
    client
        .create("app", CreateOptions::new().owner("erin"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = client.list_by_owner("app", "dave", after, 3).await.unwrap();
        assert!(page.sessions.len() <= 3);
        seen.extend(page.sessions.iter().map(|s| s.id));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    let removed = client
        .delete_by_owner("app", "dave", Some(ids[3]))
        .await
        .unwrap();
    assert_eq!(removed, 6);
    let page = client.list_by_owner("app", "dave", None, 10).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(page.sessions[0].id, ids[3]);
    assert_eq!(
        client
            .list_by_owner("app", "erin", None, 10)
            .await
            .unwrap()
            .sessions
            .len(),
        1
    );
}

#[tokio::test]
async fn sliding_and_absolute_expiry_are_enforced_and_reclaimed() {
    let (_daemon, client) = start(&["--expiry-tick", "20ms"]).await;
    let sliding = client
        .create(
            "app",
            CreateOptions::new()
                .owner("fay")
                .idle_ttl(Duration::from_millis(600)),
        )
        .await
        .unwrap();
    let capped = client
        .create(
            "app",
            CreateOptions::new()
                .idle_ttl(Duration::from_millis(600))
                .max_lifetime(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    // Touch both for well past the idle ttl: the sliding one stays, the capped
    // one dies at its maximum lifetime whatever the touches.
    let start = Instant::now();
    let mut capped_gone_after = None;
    while start.elapsed() < Duration::from_millis(2200) {
        assert!(client.touch("app", sliding.id).await.unwrap().found);
        let t = client.touch("app", capped.id).await.unwrap();
        if !t.found && capped_gone_after.is_none() {
            capped_gone_after = Some(start.elapsed());
        }
        if let Some(at) = t.expires_at_ms {
            assert!(at <= capped.created_at_ms + 1500);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        capped_gone_after.is_some(),
        "capped session outlived its max lifetime"
    );
    assert!(client.get("app", sliding.id).await.unwrap().is_some());

    // Untouched, the sliding one expires, and is reclaimed with its index entry.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(client.get("app", sliding.id).await.unwrap(), None);
    let reclaimed = eventually(Duration::from_secs(5), async || {
        let s = client.stats().await.unwrap();
        s.records == 0 && s.expired_total == 2
    })
    .await;
    assert!(reclaimed, "{:?}", client.stats().await.unwrap());
    assert!(client
        .list_by_owner("app", "fay", None, 10)
        .await
        .unwrap()
        .sessions
        .is_empty());
}

/// A client for the pipelined loads: 64,000 requests are queued at once and
/// a request's deadline counts its time in the queue, so on a loaded 2-core
/// CI box the last ones can wait seconds; these tests check counts and
/// versions, not latency (that is `sessiond-bench`'s job).
async fn load_client(daemon: &DaemonProcess) -> Client {
    Client::connect_with(
        ClientConfig::new(daemon.addr().to_string()).request_timeout(Duration::from_secs(60)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn sixty_four_tasks_pipelining_a_thousand_operations_each() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    pipelined_load(&load_client(&daemon).await).await;
}

/// The same load with every write's answer held until the log has synced it
/// (connections go on reading and executing while they wait); everything
/// acknowledged is there after a kill -9.
#[tokio::test]
async fn pipelined_load_under_fsync_always_survives_a_kill() {
    let daemon = DaemonProcess::start(daemon_bin!(), &["--fsync", "always"]).unwrap();
    let client = load_client(&daemon).await;
    let ids = pipelined_load(&client).await;
    drop(client);
    let daemon = daemon.restart(&["--fsync", "always"]).unwrap();
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    for id in ids {
        let got = client.get("load", id).await.unwrap().unwrap();
        assert_eq!(got.attr("n"), Some(&Value::Int(250)));
        assert_eq!(got.version, 501);
    }
}

/// 64 tasks, each creating a session and then sending 1,000 operations on it
/// at once through the shared client; checks every counter and version.
async fn pipelined_load(client: &Client) -> Vec<sessiond_client::SessionId> {
    let mut tasks = Vec::new();
    for t in 0..64i64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let s = client
                .create("load", CreateOptions::new().owner(format!("user{}", t % 8)))
                .await
                .unwrap();
            // 1,000 operations per task, in flight together: each task pipelines
            // through the shared multiplexed connections.
            let mut ops = Vec::new();
            for i in 0..1000i64 {
                let client = client.clone();
                let id = s.id;
                ops.push(async move {
                    match i % 4 {
                        0 => client.incr("load", id, "n", 1).await.map(|_| ()),
                        1 => client.get("load", id).await.map(|g| assert!(g.is_some())),
                        2 => client.touch("load", id).await.map(|r| assert!(r.found)),
                        _ => client
                            .update("load", id, UpdateOptions::new().set("last", i))
                            .await
                            .map(|_| ()),
                    }
                });
            }
            for r in futures::future::join_all(ops).await {
                r.unwrap();
            }
            let got = client.get("load", s.id).await.unwrap().unwrap();
            assert_eq!(got.attr("n"), Some(&Value::Int(250)));
            // create + 250 incr + 250 update
            assert_eq!(got.version, 501);
            s.id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    assert_eq!(ids.len(), 64);
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.records, 64);
    assert!(stats.ops_total >= 64 * 1001);
    ids
}

/// A pipeline runs in order on the daemon (a create, then an update of the
/// same id, then reads, in one round trip) and one bad entry fails alone.
#[tokio::test]
async fn a_pipeline_runs_in_order_and_fails_entry_by_entry() {
    let (_d, c) = start(&[]).await;
    let id = SessionId::new_v4();
    let replies = c
        .pipeline(vec![
            CreateOptions::new()
                .id(id)
                .attr("step", 1i64)
                .into_op("app"),
            UpdateOptions::new().set("step", 2i64).into_op("app", id),
            CreateOptions::new().into_op("not a namespace!"),
            sessiond_client::Op::Get(sessiond_client::protocol::Get {
                namespace: "app".into(),
                id,
                touch: false,
            }),
        ])
        .await
        .unwrap();
    assert_eq!(replies.len(), 4);
    assert!(
        matches!(&replies[0], Ok(Reply::Session(s)) if s.id == id),
        "{replies:?}"
    );
    assert!(
        matches!(&replies[1], Ok(Reply::Updated(u)) if u.version == 2),
        "{replies:?}"
    );
    assert_eq!(
        replies[2].as_ref().err().and_then(Error::code),
        Some(ErrorCode::InvalidRequest),
        "{replies:?}"
    );
    match &replies[3] {
        Ok(Reply::MaybeSession(Some(s))) => {
            assert_eq!(s.attr("step"), Some(&Value::Int(2)));
            assert_eq!(s.version, 2);
        }
        other => panic!("{other:?}"),
    }

    // get_many: an entry per id, in order, None for the missing ones.
    let mut ids = Vec::new();
    for i in 0..100i64 {
        if i % 3 == 0 {
            ids.push(SessionId::new_v4());
        } else {
            let s = c
                .create("app", CreateOptions::new().attr("i", i))
                .await
                .unwrap();
            ids.push(s.id);
        }
    }
    let got = c.get_many("app", &ids).await.unwrap();
    assert_eq!(got.len(), 100);
    for (i, g) in got.into_iter().enumerate() {
        let g = g.unwrap();
        if i % 3 == 0 {
            assert!(g.is_none(), "entry {i}");
        } else {
            assert_eq!(
                g.unwrap().attr("i"),
                Some(&Value::Int(i as i64)),
                "entry {i}"
            );
        }
    }
}
