//! The session events feed, from the daemon's side: a raw subscriber on a
//! real daemon process sees every lifecycle change with its reason, expiry at
//! the deadline, resumes across a restart and a compaction, gets a typed
//! answer past the retention, and a stalled subscriber is closed without
//! growing the daemon's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sessiond_client::{Client, CreateOptions, LimitPolicy, UpdateOptions};
use sessiond_e2e::{daemon_bin, DaemonProcess, RawConn};
use sessiond_protocol::{
    DeleteReason, ErrorCode, Event, EventKind, EventsFrom, Reply, SessionId, Subscribe,
};

fn subscribe(from: EventsFrom, updates: bool, touches: bool) -> Subscribe {
    Subscribe {
        namespaces: vec!["app".into()],
        updates,
        touches,
        from,
    }
}

async fn subscriber(addr: &str, sub: Subscribe) -> RawConn {
    let mut conn = RawConn::connect(addr).await.unwrap();
    match conn.subscribe(sub).await.unwrap() {
        Reply::Subscribed(_) => conn,
        other => panic!("not subscribed: {other:?}"),
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn kinds(events: &[Event]) -> Vec<(SessionId, EventKind)> {
    events.iter().map(|e| (e.id, e.kind)).collect()
}

#[tokio::test]
async fn every_lifecycle_change_produces_its_event_in_order() {
    let daemon = DaemonProcess::start(daemon_bin!(), &["--expiry-tick", "20ms"]).unwrap();
    let addr = daemon.addr().to_string();
    let mut sub = subscriber(&addr, subscribe(EventsFrom::Now, true, true)).await;
    let client = Client::connect(addr.clone()).await.unwrap();

    let a = client
        .create(
            "app",
            CreateOptions::new()
                .owner("alice")
                .idle_ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    client
        .update("app", a.id, UpdateOptions::new().set("cart", 3i64))
        .await
        .unwrap();
    // A touch is reported once it moves the deadline by a tenth of the
    // idle ttl (as the log records it): 60 s ttl, 6.1 s later.
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.get_and_touch("app", a.id).await.unwrap();
    let rotated = client.rotate("app", a.id, None).await.unwrap();
    client.delete("app", rotated.id).await.unwrap();
    // Logout everywhere.
    let b1 = client
        .create("app", CreateOptions::new().owner("bob"))
        .await
        .unwrap();
    let b2 = client
        .create("app", CreateOptions::new().owner("bob"))
        .await
        .unwrap();
    assert_eq!(client.delete_by_owner("app", "bob", None).await.unwrap(), 2);
    // The owner limit evicts the oldest.
    let c1 = client
        .create(
            "app",
            CreateOptions::new()
                .owner("carol")
                .owner_limit(1, LimitPolicy::EvictOldest),
        )
        .await
        .unwrap();
    let c2 = client
        .create(
            "app",
            CreateOptions::new()
                .owner("carol")
                .owner_limit(1, LimitPolicy::EvictOldest),
        )
        .await
        .unwrap();
    // Another namespace is not in this subscription.
    client.create("other", CreateOptions::new()).await.unwrap();

    let events = sub.events(11, Duration::from_secs(10)).await.unwrap();
    let got = kinds(&events);
    // The touch 50 ms after the create moved the deadline by 50 ms, under
    // the tenth of 60 s: no Touched event (coalesced).
    let want = [
        (a.id, EventKind::Created),
        (a.id, EventKind::Updated { version: 2 }),
        (a.id, EventKind::Rotated { to: rotated.id }),
        (
            rotated.id,
            EventKind::Deleted {
                reason: DeleteReason::Delete,
            },
        ),
        (b1.id, EventKind::Created),
        (b2.id, EventKind::Created),
    ];
    assert_eq!(&got[..6], &want[..], "{events:#?}");
    let mut revoked: Vec<_> = got[6..8].to_vec();
    revoked.sort_by_key(|(id, _)| *id);
    let mut want_revoked = vec![
        (
            b1.id,
            EventKind::Deleted {
                reason: DeleteReason::LogoutEverywhere,
            },
        ),
        (
            b2.id,
            EventKind::Deleted {
                reason: DeleteReason::LogoutEverywhere,
            },
        ),
    ];
    want_revoked.sort_by_key(|(id, _)| *id);
    assert_eq!(revoked, want_revoked);
    assert_eq!(
        &got[8..11],
        &[
            (c1.id, EventKind::Created),
            (
                c1.id,
                EventKind::Deleted {
                    reason: DeleteReason::OwnerLimit
                }
            ),
            (c2.id, EventKind::Created),
        ]
    );
    assert_eq!(events[0].owner.as_deref(), Some("alice"));
    assert!(events.iter().all(|e| e.namespace == "app"));
    assert!(
        events.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "cursors increase"
    );

    // A touch that moves the deadline far enough is reported, with the new deadline.
    let t = client
        .create(
            "app",
            CreateOptions::new().idle_ttl(Duration::from_millis(1000)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let touched = client.get_and_touch("app", t.id).await.unwrap().unwrap();
    let more = sub.events(2, Duration::from_secs(10)).await.unwrap();
    assert_eq!(more[0].kind, EventKind::Created);
    assert_eq!(
        more[1].kind,
        EventKind::Touched {
            expires_at_ms: touched.expires_at_ms
        }
    );

    // Expiry: reported at the deadline, within the expiry tick.
    let e = client
        .create(
            "app",
            CreateOptions::new().idle_ttl(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let deadline = e.expires_at_ms.unwrap();
    let events = sub.events(2, Duration::from_secs(10)).await.unwrap();
    let arrived = now_ms();
    assert_eq!(kinds(&events[..1]), vec![(e.id, EventKind::Created)]);
    // The session `t` (1 s ttl) may expire first.
    let mut events = events;
    if events[1].id == t.id {
        events = sub.events(1, Duration::from_secs(10)).await.unwrap();
    } else {
        events.remove(0);
    }
    assert_eq!(kinds(&events), vec![(e.id, EventKind::Expired)]);
    assert_eq!(
        events[0].at_ms, deadline,
        "the event's time is the deadline"
    );
    assert!(
        arrived <= deadline + 20 + 250,
        "arrived {} ms after the deadline",
        arrived - deadline
    );
}

#[tokio::test]
async fn memory_eviction_is_reported_with_its_reason() {
    let daemon = DaemonProcess::start(
        daemon_bin!(),
        &["--max-memory", "4mb", "--memory-policy", "volatile-ttl"],
    )
    .unwrap();
    let addr = daemon.addr().to_string();
    let mut sub = subscriber(&addr, subscribe(EventsFrom::Now, false, false)).await;
    let client = Client::connect(addr).await.unwrap();
    let big = "x".repeat(8 * 1024);
    for _ in 0..2000 {
        let r = client
            .create(
                "app",
                CreateOptions::new()
                    .idle_ttl(Duration::from_secs(600))
                    .attr("blob", big.as_str()),
            )
            .await;
        if r.is_err() {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = sub.events(1, Duration::from_secs(10)).await.unwrap();
        if events.iter().any(|e| {
            e.kind
                == EventKind::Deleted {
                    reason: DeleteReason::MemoryEviction,
                }
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no eviction event");
    }
}

/// Events read before a restart and a compaction, then every event after
/// the last cursor read, in order, none missing.
#[tokio::test]
async fn restart_and_compaction_between_two_reads_lose_no_event() {
    let flags = [
        "--segment-bytes",
        "65536",
        "--compact-min-bytes",
        "65536",
        "--compact-ratio",
        "1.1",
    ];
    let daemon = DaemonProcess::start(daemon_bin!(), &flags).unwrap();
    let addr = daemon.addr().to_string();
    let client = Client::connect(addr.clone()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        let s = client
            .create("app", CreateOptions::new().attr("n", i64::from(i)))
            .await
            .unwrap();
        ids.push(s.id);
    }
    let mut sub = subscriber(&addr, subscribe(EventsFrom::Oldest, true, false)).await;
    let first = sub.events(50, Duration::from_secs(10)).await.unwrap();
    let last_read = first.last().unwrap().cursor;
    drop(sub);
    // More changes, enough updates for compactions, then a graceful restart.
    for round in 0..20 {
        for id in &ids {
            client
                .update(
                    "app",
                    *id,
                    UpdateOptions::new().set("pad", "y".repeat(200 + round)),
                )
                .await
                .unwrap();
        }
    }
    for id in &ids[..10] {
        client.delete("app", *id).await.unwrap();
    }
    drop(client);
    let mut daemon = daemon;
    daemon
        .signal_and_wait("TERM", Duration::from_secs(20))
        .unwrap();
    let logs = daemon.logs();
    assert!(logs.contains("compact"), "no compaction ran: {logs}");
    let daemon = daemon.restart(&flags).unwrap();
    let addr = daemon.addr().to_string();
    let mut sub = subscriber(&addr, subscribe(EventsFrom::After(last_read), true, false)).await;
    let rest = sub
        .events(50 * 20 + 10, Duration::from_secs(20))
        .await
        .unwrap();
    let cursors: Vec<u64> = rest.iter().map(|e| e.cursor).collect();
    let want: Vec<u64> = (last_read + 1..=last_read + 1010).collect();
    assert_eq!(cursors, want, "every event after the cursor, in order");
    assert_eq!(
        rest.iter()
            .filter(|e| matches!(e.kind, EventKind::Deleted { .. }))
            .count(),
        10
    );
    // The feed goes on where it was.
    let client = Client::connect(addr).await.unwrap();
    let s = client.create("app", CreateOptions::new()).await.unwrap();
    let next = sub.events(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!((next[0].cursor, next[0].id), (last_read + 1011, s.id));
}

#[tokio::test]
async fn a_cursor_past_the_retention_gets_a_typed_answer_naming_the_oldest() {
    let daemon = DaemonProcess::start(
        daemon_bin!(),
        &["--in-memory", "--events-retention-bytes", "8kb"],
    )
    .unwrap();
    let addr = daemon.addr().to_string();
    let client = Client::connect(addr.clone()).await.unwrap();
    for _ in 0..500 {
        client.create("app", CreateOptions::new()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = RawConn::connect(&addr).await.unwrap();
    let oldest = match conn
        .subscribe(subscribe(EventsFrom::After(1), false, false))
        .await
        .unwrap()
    {
        Reply::CursorExpired(c) => {
            assert_eq!(c.requested, 1);
            assert!(c.oldest > 2 && c.oldest <= 500, "{c:?}");
            c.oldest
        }
        other => panic!("{other:?}"),
    };
    // From the oldest held: everything left, in order.
    let mut sub = subscriber(
        &addr,
        subscribe(EventsFrom::After(oldest - 1), false, false),
    )
    .await;
    let left = sub
        .events((500 - oldest + 1) as usize, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(left[0].cursor, oldest);
    assert_eq!(left.last().unwrap().cursor, 500);
    // A cursor from the future is refused.
    let mut conn = RawConn::connect(&addr).await.unwrap();
    match conn
        .subscribe(subscribe(EventsFrom::After(10_000), false, false))
        .await
        .unwrap()
    {
        Reply::Error(e) => assert_eq!(e.code, ErrorCode::InvalidRequest),
        other => panic!("{other:?}"),
    }
}

/// A subscriber that stops reading neither grows the daemon's memory nor
/// holds up the writers: after the stall bound it is closed (`Lagging`,
/// counted in the metrics).
#[tokio::test]
async fn a_stalled_subscriber_is_closed_and_memory_stays_bounded() {
    let daemon = DaemonProcess::start(daemon_bin!(), &["--in-memory"]).unwrap();
    let addr = daemon.addr().to_string();
    // Subscribed, then never read again (a small receive buffer, so its
    // side of the connection fills soon).
    let mut stalled = RawConn::connect_small(&addr, 4096).await.unwrap();
    assert!(matches!(
        stalled
            .subscribe(subscribe(EventsFrom::Now, true, true))
            .await
            .unwrap(),
        Reply::Subscribed(_)
    ));
    let owner = "o".repeat(200);
    let client = Client::connect(addr).await.unwrap();
    let rss_before = daemon.rss_kib().unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    // Writers keep going while the subscriber's socket is full.
    while started.elapsed() < Duration::from_secs(13) {
        let ops = (0..200)
            .map(|_| CreateOptions::new().owner(owner.as_str()).into_op("app"))
            .collect();
        for r in client.pipeline(ops).await.unwrap() {
            r.unwrap();
            n += 1;
        }
    }
    let rss_after = daemon.rss_kib().unwrap();
    // The sessions themselves take about 500 B each; the events held for
    // the stalled subscriber are bounded by the ring (64 MiB at most in
    // memory mode) and one read batch, not by what it missed.
    let sessions_kib = n * 600 / 1024;
    assert!(
        rss_after < rss_before + sessions_kib + 80 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB for {n} sessions"
    );
    let logs = daemon.logs();
    assert!(
        logs.contains("closing an events subscriber that stopped reading"),
        "the stalled subscriber was not closed ({n} sessions created)"
    );
}

/// A session that expires while the daemon is down is reported when the log
/// brings it back already expired, at its deadline.
#[tokio::test]
async fn sessions_that_expire_while_the_daemon_is_down_are_reported_after_it_restarts() {
    let daemon = DaemonProcess::start(daemon_bin!(), &["--fsync", "always"]).unwrap();
    let addr = daemon.addr().to_string();
    let mut sub = subscriber(&addr, subscribe(EventsFrom::Now, false, false)).await;
    let client = Client::connect(addr).await.unwrap();
    let s = client
        .create(
            "app",
            CreateOptions::new()
                .owner("dave")
                .idle_ttl(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    let created = sub.events(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(kinds(&created), vec![(s.id, EventKind::Created)]);
    drop(client);
    let mut daemon = daemon;
    daemon.kill();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let daemon = daemon.restart(&["--fsync", "always"]).unwrap();
    let addr = daemon.addr().to_string();
    let mut sub = subscriber(
        &addr,
        subscribe(EventsFrom::After(created[0].cursor), false, false),
    )
    .await;
    let after = sub.events(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(kinds(&after), vec![(s.id, EventKind::Expired)]);
    assert_eq!(after[0].at_ms, s.expires_at_ms.unwrap());
    assert_eq!(after[0].owner.as_deref(), Some("dave"));
}

/// "From now" means after every event recorded before the subscription,
/// including those still on their way to the files: a subscriber that starts
/// right after a burst of writes sees only what follows.
#[tokio::test]
async fn a_subscription_from_now_sees_nothing_recorded_before_it() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let addr = daemon.addr().to_string();
    let client = Client::connect(addr.clone()).await.unwrap();
    for round in 0..20 {
        for _ in 0..50 {
            client.create("app", CreateOptions::new()).await.unwrap();
        }
        let mut sub = subscriber(&addr, subscribe(EventsFrom::Now, false, false)).await;
        let made = client.create("app", CreateOptions::new()).await.unwrap();
        let events = sub.events(1, Duration::from_secs(10)).await.unwrap();
        assert_eq!(events[0].id, made.id, "round {round}: {events:?}");
    }
}
