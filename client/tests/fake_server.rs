//! The client against a scripted fake daemon on a real socket: the handshake,
//! out-of-order answers, many concurrent callers, every typed method's reply
//! mapping, dropped connections and pool repair, silence, partial and bad
//! frames, connection-level errors and replies of the wrong kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{one_answer, session, Action, Fake, Script};
use sessiond_client::protocol::{HelloReply, Op, RateWindow, Request};
use sessiond_client::{
    Client, ClientConfig, CreateOptions, Error, ErrorCode, FrameError, IncrReply, Reply, SessionId,
    SessionPage, TouchReply, UpdateOptions, UpdateReply, WireError,
};
use sessiond_protocol::{StatsReply, PROTOCOL_VERSION};

fn config(fake: &Fake) -> ClientConfig {
    ClientConfig::new(fake.addr.to_string())
        .connections(1)
        .request_timeout(Duration::from_secs(5))
}

/// Answers `Delete` with `Deleted(first id byte is odd)`, which lets each
/// caller check it got its own answer.
fn echo_script() -> Script {
    Arc::new(|req: &Request, _| match &req.op {
        Op::Delete(d) => Action::Answer(Reply::Deleted(d.id.0[0] % 2 == 1)),
        Op::Ping => Action::Answer(Reply::Pong),
        _ => Action::Answer(Reply::Count(req.id)),
    })
}

fn id_with_first_byte(b: u8) -> SessionId {
    let mut id = [0u8; 16];
    id[0] = b;
    SessionId(id)
}

#[tokio::test]
async fn handshake_sends_version_name_and_token() {
    let fake = Fake::start(echo_script()).await;
    let config = config(&fake)
        .connections(3)
        .client_name("checkout")
        .auth_token("hunter2");
    let client = Client::connect_with(config).await.unwrap();
    assert_eq!(client.server_version().as_deref(), Some("fake"));
    // Every pool connection is opened and greeted up front.
    let hellos = fake.hellos();
    assert_eq!(hellos.len(), 3);
    for h in &hellos {
        assert_eq!(h.protocol_version, PROTOCOL_VERSION);
        assert_eq!(h.client_name.as_deref(), Some("checkout"));
        assert_eq!(h.auth_token.as_ref().map(|t| t.0.as_str()), Some("hunter2"));
    }
    // The token never shows in Debug output.
    assert!(!format!("{client:?}").contains("hunter2"));
    assert!(!format!("{:?}", client.config()).contains("hunter2"));
    client.ping().await.unwrap();
}

#[tokio::test]
async fn out_of_order_answers_reach_their_callers() {
    for pool in [1, 4] {
        let fake = Fake::start(echo_script()).await;
        let client = Client::connect_with(config(&fake).connections(pool))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..1000u32 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let odd = client
                    .delete("ns", id_with_first_byte((i % 256) as u8))
                    .await
                    .unwrap();
                assert_eq!(odd, i % 2 == 1, "caller {i} got someone else's answer");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(fake.accepted(), pool);
    }
}

#[tokio::test]
async fn a_batch_answered_in_reverse_reaches_every_caller() {
    // The fake holds the first nine answers and sends all ten at once, in
    // reverse order of arrival, whatever the reads looked like.
    const N: usize = 10;
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let script: Script = Arc::new(move |req: &Request, _| {
        let Op::Delete(d) = &req.op else {
            return Action::Answer(Reply::Pong);
        };
        let reply = Reply::Deleted(d.id.0[0] % 2 == 1);
        if count.fetch_add(1, Ordering::SeqCst) + 1 < N {
            Action::Hold(reply)
        } else {
            Action::Release(reply)
        }
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let tasks: Vec<_> = (0..N as u8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let odd = client.delete("ns", id_with_first_byte(i)).await.unwrap();
                assert_eq!(odd, i % 2 == 1, "caller {i} got someone else's answer");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(seen.load(Ordering::SeqCst), N);
}

#[tokio::test]
async fn every_typed_method_maps_its_reply() {
    let script: Script = Arc::new(|req: &Request, _| {
        Action::Answer(match &req.op {
            Op::Ping => Reply::Pong,
            Op::Create(c) => {
                assert_eq!(c.namespace, "app");
                assert_eq!(c.owner.as_deref(), Some("alice"));
                assert_eq!(c.ttl.idle_ttl_ms, Some(60_000));
                Reply::Session(session(c.id.unwrap_or(SessionId([7; 16]))))
            }
            Op::Get(g) => Reply::MaybeSession(g.touch.then(|| session(g.id))),
            Op::Touch(_) => Reply::Touched(TouchReply {
                found: true,
                expires_at_ms: Some(5),
            }),
            Op::Update(u) => {
                assert_eq!(u.expected_version, Some(3));
                Reply::Updated(UpdateReply {
                    version: 4,
                    created: false,
                    expires_at_ms: None,
                })
            }
            Op::Incr(i) => Reply::Incr(IncrReply {
                value: i.delta,
                allowed: true,
                remaining: i.window.map(|w: RateWindow| w.limit - i.delta),
                reset_at_ms: i.window.map(|w| w.window_ms),
                version: 2,
            }),
            Op::Delete(_) => Reply::Deleted(true),
            Op::ListByOwner(l) => {
                assert_eq!((l.owner.as_str(), l.limit), ("alice", 10));
                Reply::Page(SessionPage {
                    sessions: vec![session(SessionId([1; 16]))],
                    next: None,
                })
            }
            Op::DeleteByOwner(d) => Reply::Count(if d.except.is_some() { 2 } else { 3 }),
            Op::Rotate(r) => {
                assert_eq!(r.grace_ms, Some(1_500));
                Reply::Session(session(SessionId([9; 16])))
            }
            Op::Stats => Reply::Stats(StatsReply {
                server_version: "fake".into(),
                uptime_ms: 1,
                records: 2,
                namespaces: vec![],
                expired_total: 0,
                evicted_total: 0,
                ops_total: 10,
                connections_current: 1,
                connections_total: 1,
                memory_bytes: 0,
            }),
            Op::Hello(_) => unreachable!("the fake answers hello itself"),
            Op::ClusterStatus
            | Op::ClusterAddNode(_)
            | Op::ClusterRemoveNode(_)
            | Op::GetStale(_)
            | Op::Subscribe(_) => {
                unreachable!("not sent by this test")
            }
        })
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let id = SessionId::new_v4();

    client.ping().await.unwrap();
    let s = client
        .create(
            "app",
            CreateOptions::new()
                .id(id)
                .owner("alice")
                .idle_ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(s.id, id);
    assert_eq!(client.get("app", id).await.unwrap(), None);
    assert_eq!(
        client.get_and_touch("app", id).await.unwrap().map(|s| s.id),
        Some(id)
    );
    assert!(client.touch("app", id).await.unwrap().found);
    let u = client
        .update("app", id, UpdateOptions::new().expected_version(3))
        .await
        .unwrap();
    assert_eq!(u.version, 4);
    let plain = client.incr("app", id, "n", 5).await.unwrap();
    assert_eq!((plain.value, plain.remaining), (5, None));
    let windowed = client
        .incr_window("app", id, "n", 1, Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(
        (windowed.remaining, windowed.reset_at_ms),
        (Some(9), Some(60_000))
    );
    assert!(client.delete("app", id).await.unwrap());
    let page = client
        .list_by_owner("app", "alice", None, 10)
        .await
        .unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(
        client
            .delete_by_owner("app", "alice", Some(id))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        client.delete_by_owner("app", "alice", None).await.unwrap(),
        3
    );
    let rotated = client
        .rotate("app", id, Some(Duration::from_millis(1_500)))
        .await
        .unwrap();
    assert_eq!(rotated.id, SessionId([9; 16]));
    assert_eq!(client.stats().await.unwrap().ops_total, 10);
    assert_eq!(client.call(Op::Ping).await.unwrap(), Reply::Pong);
}

#[tokio::test]
async fn error_replies_are_typed() {
    let script: Script = Arc::new(|_, _| {
        Action::Answer(Reply::Error(WireError::new(
            ErrorCode::Conflict,
            "version moved",
        )))
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let err = client.delete("ns", SessionId::new_v4()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert!(!err.is_retryable());
    // The raw call turns an error reply into an error too.
    let err = client.call(Op::Ping).await.unwrap_err();
    assert!(matches!(err, Error::Server(ref e) if e.message == "version moved"));
    // An error reply does not harm the connection.
    assert_eq!(fake.accepted(), 1);
}

#[tokio::test]
async fn unexpected_reply_kind_is_a_protocol_error() {
    let script: Script = Arc::new(|_, _| Action::Answer(Reply::Pong));
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let err = client.stats().await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("pong") && m.contains("stats")),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_dropped_connection_fails_in_flight_requests_then_reconnects() {
    // The first connection closes on its first request; later ones answer.
    let script: Script = Arc::new(|req: &Request, conn| {
        if conn == 1 {
            Action::Close
        } else {
            Action::Answer(match req.op {
                Op::Ping => Reply::Pong,
                _ => Reply::Count(0),
            })
        }
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    // A write is never resent: its caller hears that the connection closed.
    let err = client.delete("ns", SessionId::new_v4()).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err}");
    assert!(err.is_retryable());
    // The next request waits for the background reconnect and succeeds.
    client.ping().await.unwrap();
    assert_eq!(fake.accepted(), 2);
    assert_eq!(fake.hellos().len(), 2, "the new connection said hello");
}

#[tokio::test]
async fn a_read_whose_connection_dropped_is_retried_once_by_default() {
    let script: Script = Arc::new(|req: &Request, conn| {
        if conn == 1 {
            Action::Close
        } else {
            Action::Answer(match req.op {
                Op::Ping => Reply::Pong,
                _ => Reply::MaybeSession(None),
            })
        }
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    assert_eq!(client.get("ns", SessionId::new_v4()).await.unwrap(), None);
    assert_eq!(fake.accepted(), 2);

    // With retries off the same drop reaches the caller.
    let fake = Fake::start(Arc::new(|_: &Request, _| Action::Close)).await;
    let client = Client::connect_with(config(&fake).read_retries(0))
        .await
        .unwrap();
    let err = client.get("ns", SessionId::new_v4()).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err}");
}

#[tokio::test]
async fn a_dead_pool_slot_is_reconnected_not_skipped() {
    // Two slots; the first connection dies on its first request. The next
    // request that picks that slot opens a third connection.
    let script: Script = Arc::new(|_, conn| {
        if conn == 1 {
            Action::Close
        } else {
            Action::Answer(Reply::Pong)
        }
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake).connections(2))
        .await
        .unwrap();
    assert!(matches!(
        client.delete("ns", SessionId::new_v4()).await.unwrap_err(),
        Error::ConnectionClosed
    ));
    // The live slot carries requests while the dead one reconnects behind them.
    for _ in 0..4 {
        client.ping().await.unwrap();
    }
    let healed = async {
        while fake.accepted() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), healed)
        .await
        .expect("the dead slot was never reconnected");
}

#[tokio::test]
async fn a_daemon_gone_for_good_fails_every_caller() {
    let script: Script = Arc::new(|_, _| Action::Close);
    let mut fake = Fake::start(script).await;
    let client = Client::connect_with(
        config(&fake)
            .read_retries(0)
            .request_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    fake.stop_accepting().await;
    assert!(matches!(
        client.ping().await.unwrap_err(),
        Error::ConnectionClosed
    ));
    // Every caller gets a connect error (shared or its own), none hangs.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.ping().await })
        })
        .collect();
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        assert!(err.is_retryable());
    }
}

#[tokio::test]
async fn a_partial_frame_then_close_is_connection_closed() {
    let script: Script = Arc::new(|_, _| Action::PartialThenClose);
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err}");
}

#[tokio::test]
async fn a_frame_over_the_announced_maximum_is_a_frame_error() {
    // A length prefix of 5000 against the 4096 the fake announced.
    let script: Script = Arc::new(|_, _| Action::Raw(5000u32.to_be_bytes().to_vec()));
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Frame(FrameError::TooLarge {
                len: 5000,
                max: 4096
            })
        ),
        "{err}"
    );
    // The connection is dead; the next call fails fast or reconnects, and
    // the fake answers the same way again.
    assert!(client.ping().await.is_err());
}

#[tokio::test]
async fn a_silent_daemon_times_out_and_the_connection_stays_usable() {
    // The first ping is held; the second releases both answers, so the first
    // arrives after its caller gave up and must be dropped, not misdelivered.
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let script: Script = Arc::new(move |_, _| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            Action::Hold(Reply::Count(1))
        } else {
            Action::Release(Reply::Pong)
        }
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake).request_timeout(Duration::from_millis(200)))
        .await
        .unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { after } if after == Duration::from_millis(200)),
        "{err}"
    );
    assert!(err.is_retryable());
    client.ping().await.unwrap();
    client.ping().await.unwrap();
    assert_eq!(fake.accepted(), 1, "a timeout does not cost the connection");
}

fn delete_op(b: u8) -> Op {
    Op::Delete(sessiond_client::protocol::Delete {
        namespace: "ns".into(),
        id: id_with_first_byte(b),
    })
}

/// A pipelined batch larger than the outbox (max_pending 8), answered in
/// reverse per read: every entry gets its own answer, in the order sent.
#[tokio::test]
async fn a_pipeline_gets_each_answer_in_its_place() {
    let script: Script = Arc::new(|req: &Request, _| match &req.op {
        Op::Delete(d) if d.id.0[0] % 3 == 0 => Action::Release(Reply::Deleted(d.id.0[0] % 2 == 1)),
        Op::Delete(d) => Action::Hold(Reply::Deleted(d.id.0[0] % 2 == 1)),
        _ => Action::Answer(Reply::Pong),
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake).max_pending(8))
        .await
        .unwrap();
    let ops: Vec<Op> = (0..=255u8).map(delete_op).collect();
    let replies = client.pipeline(ops).await.unwrap();
    assert_eq!(replies.len(), 256);
    for (b, reply) in replies.into_iter().enumerate() {
        match reply {
            Ok(Reply::Deleted(odd)) => assert_eq!(odd, b % 2 == 1, "entry {b}"),
            other => panic!("entry {b}: {other:?}"),
        }
    }
    assert!(client.pipeline(Vec::new()).await.unwrap().is_empty());
}

/// An op over the frame limit in the middle of a batch fails its entry
/// without being sent; the ops around it are sent and answered.
#[tokio::test]
async fn an_oversized_op_fails_its_pipeline_entry_only() {
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&sent);
    let script: Script = Arc::new(move |req: &Request, _| {
        seen.fetch_add(1, Ordering::SeqCst);
        match req.op {
            Op::Ping => Action::Answer(Reply::Pong),
            _ => Action::Answer(Reply::Deleted(true)),
        }
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let big = CreateOptions::new()
        .attr("blob", "x".repeat(10_000).as_str())
        .into_op("ns");
    let replies = client
        .pipeline(vec![delete_op(1), big, Op::Ping])
        .await
        .unwrap();
    assert!(
        matches!(replies[0], Ok(Reply::Deleted(true))),
        "{replies:?}"
    );
    assert!(matches!(replies[1], Err(Error::Encode(_))), "{replies:?}");
    assert!(matches!(replies[2], Ok(Reply::Pong)), "{replies:?}");
    assert_eq!(sent.load(Ordering::SeqCst), 2, "the big one never left");
}

/// One entry's error or silence fails that entry only.
#[tokio::test]
async fn a_pipeline_entry_fails_alone() {
    let script: Script = Arc::new(|req: &Request, _| match &req.op {
        Op::Delete(d) if d.id.0[0] == 1 => Action::Answer(Reply::Error(WireError::new(
            ErrorCode::InvalidRequest,
            "no",
        ))),
        Op::Delete(d) if d.id.0[0] == 2 => Action::Ignore,
        Op::Ping => Action::Answer(Reply::Pong),
        _ => Action::Answer(Reply::Deleted(true)),
    });
    let fake = Fake::start(script).await;
    let timeout = Duration::from_millis(300);
    let client = Client::connect_with(config(&fake).request_timeout(timeout))
        .await
        .unwrap();
    let replies = client
        .pipeline(vec![delete_op(0), delete_op(1), delete_op(2), delete_op(3)])
        .await
        .unwrap();
    assert!(
        matches!(replies[0], Ok(Reply::Deleted(true))),
        "{replies:?}"
    );
    assert!(
        matches!(&replies[1], Err(e) if e.code() == Some(ErrorCode::InvalidRequest)),
        "{replies:?}"
    );
    assert!(
        matches!(&replies[2], Err(Error::Timeout { after }) if *after == timeout),
        "{replies:?}"
    );
    assert!(
        matches!(replies[3], Ok(Reply::Deleted(true))),
        "{replies:?}"
    );
    // The connection is still good.
    client.ping().await.unwrap();
    assert_eq!(fake.accepted(), 1);
}

/// A connection lost mid-batch fails the unanswered entries, not the caller
/// forever.
#[tokio::test]
async fn a_pipeline_on_a_dropped_connection_fails_its_entries() {
    let script: Script = Arc::new(|req: &Request, conn| match (&req.op, conn) {
        (Op::Delete(d), 1) if d.id.0[0] == 5 => Action::Close,
        (Op::Delete(d), 1) if d.id.0[0] > 5 => Action::Hold(Reply::Deleted(false)),
        _ => Action::Answer(Reply::Deleted(true)),
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let ops: Vec<Op> = (0..10u8).map(delete_op).collect();
    let replies = client.pipeline(ops).await.unwrap();
    assert_eq!(replies.len(), 10);
    assert!(
        replies[5..]
            .iter()
            .all(|r| matches!(r, Err(Error::ConnectionClosed))),
        "{replies:?}"
    );
    // The first five were answered before the close, or failed with it.
    assert!(
        replies[..5]
            .iter()
            .all(|r| matches!(r, Ok(Reply::Deleted(true)) | Err(Error::ConnectionClosed))),
        "{replies:?}"
    );
}

/// Deadlines are kept by one sweeper per connection: every held request
/// fails with Timeout, none before its time, and answered ones in between are
/// not disturbed.
#[tokio::test]
async fn held_requests_time_out_no_earlier_than_their_deadline() {
    let script: Script = Arc::new(|req: &Request, _| match req.op {
        Op::Ping => Action::Ignore,
        _ => Action::Answer(Reply::Deleted(true)),
    });
    let fake = Fake::start(script).await;
    let timeout = Duration::from_millis(300);
    let client = Client::connect_with(config(&fake).request_timeout(timeout))
        .await
        .unwrap();
    let held: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                (client.ping().await, start.elapsed())
            })
        })
        .collect();
    let deleted = client.delete("app", SessionId::new_v4()).await;
    assert!(deleted.is_ok(), "{deleted:?}");
    for task in held {
        let (result, elapsed) = task.await.unwrap();
        let err = result.unwrap_err();
        assert!(
            matches!(err, Error::Timeout { after } if after == timeout),
            "{err}"
        );
        assert!(elapsed >= timeout, "timed out early: {elapsed:?}");
    }
    assert_eq!(fake.accepted(), 1);
}

#[tokio::test]
async fn a_connection_level_error_fails_everything_pending() {
    // On the first connection pings are held and a delete draws an id-0
    // error; later connections answer.
    let pending = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&pending);
    let script: Script = Arc::new(move |req: &Request, conn| match (&req.op, conn) {
        (Op::Ping, 1) => {
            count.fetch_add(1, Ordering::SeqCst);
            Action::Hold(Reply::Pong)
        }
        (Op::Delete(_), 1) => {
            Action::ConnectionError(WireError::new(ErrorCode::TooLarge, "frame too large"))
        }
        _ => Action::Answer(Reply::Pong),
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.ping().await })
        })
        .collect();
    while pending.load(Ordering::SeqCst) < 5 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = client.delete("ns", SessionId::new_v4()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    for w in waiting {
        let err = w.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    }
    // The connection was marked dead; the next call reconnects.
    client.ping().await.unwrap();
    assert_eq!(fake.accepted(), 2);
}

#[tokio::test]
async fn an_oversized_request_is_refused_before_sending() {
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&sent);
    let script: Script = Arc::new(move |_, _| {
        seen.fetch_add(1, Ordering::SeqCst);
        Action::Answer(Reply::Pong)
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    // The fake announces a 4 KiB maximum.
    let big = "x".repeat(10_000);
    let err = client
        .create("ns", CreateOptions::new().attr("blob", big.as_str()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Encode(_)), "{err}");
    assert!(!err.is_retryable());
    client.ping().await.unwrap();
    assert_eq!(
        sent.load(Ordering::SeqCst),
        1,
        "only the ping reached the daemon"
    );
}

#[tokio::test]
async fn a_refused_handshake_fails_connect() {
    let addr = one_answer(Reply::Error(WireError::new(
        ErrorCode::Unauthorized,
        "bad token",
    )))
    .await;
    let err = Client::connect(addr.to_string()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_busy_daemon_refusing_the_handshake_is_retryable() {
    let addr = one_answer(Reply::Error(WireError::new(
        ErrorCode::Unavailable,
        "too many connections",
    )))
    .await;
    let err = Client::connect(addr.to_string()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_handshake_in_another_protocol_version_is_refused() {
    let addr = one_answer(Reply::Hello(HelloReply {
        protocol_version: PROTOCOL_VERSION + 1,
        server_version: "future".into(),
        max_frame_len: 4096,
    }))
    .await;
    let err = Client::connect(addr.to_string()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("protocol version")),
        "{err}"
    );
}

#[tokio::test]
async fn a_handshake_answered_with_the_wrong_reply_is_refused() {
    let addr = one_answer(Reply::Pong).await;
    let err = Client::connect(addr.to_string()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("pong")),
        "{err}"
    );
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::connect(addr.to_string()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Connect { addr: a, .. } if *a == addr.to_string()),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn requests_waiting_for_a_lost_daemon_are_bounded() {
    let script: Script = Arc::new(|_, _| Action::Close);
    let mut fake = Fake::start(script).await;
    let client = Client::connect_with(
        config(&fake)
            .read_retries(0)
            .max_waiting(3)
            .request_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    fake.stop_accepting().await;
    let _ = client.ping().await;
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.ping().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fourth caller does not queue behind them: it fails at once.
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, Error::Backlog { limit: 3 }), "{err}");
    assert!(err.is_retryable());
    for t in waiting {
        assert!(t.await.unwrap().is_err());
    }
}

#[tokio::test]
async fn a_lazy_client_starts_before_its_daemon() {
    // Reserve a port, then free it: nothing listens there yet.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let client = Client::connect_lazy(
        ClientConfig::new(addr.to_string())
            .request_timeout(Duration::from_millis(300))
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50)),
    );
    let err = client.ping().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // The daemon comes up on that address: the client finds it by itself.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _fake = Fake::start_on(
        listener,
        Arc::new(|_: &Request, _| Action::Answer(Reply::Pong)),
    );
    let mut ok = false;
    for _ in 0..50 {
        if client.ping().await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "the lazy client never connected");
}

/// Frames of `replies` under request id `id`, back to back.
fn frames(id: u64, replies: Vec<Reply>) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    for reply in replies {
        sessiond_protocol::frame::encode_response(
            &sessiond_protocol::Response { id, reply },
            &mut out,
        )
        .unwrap();
    }
    out.to_vec()
}

fn event(cursor: u64) -> sessiond_protocol::Event {
    sessiond_protocol::Event {
        cursor,
        at_ms: 1_000 + cursor,
        namespace: "app".into(),
        id: SessionId([cursor as u8; 16]),
        owner: None,
        kind: sessiond_protocol::EventKind::Created,
    }
}

/// A subscription told `Lagging` resubscribes on a new connection after the
/// last cursor it received, and the replayed event is not yielded twice.
#[tokio::test]
async fn a_lagging_subscription_resumes_after_its_last_cursor_without_duplicates() {
    use sessiond_protocol::{EventsFrom, Subscribed};
    let froms = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = Arc::clone(&froms);
    let script: Script = Arc::new(move |req: &Request, conn| {
        let Op::Subscribe(s) = &req.op else {
            return Action::Answer(Reply::Pong);
        };
        seen.lock().push(s.from);
        let up = Reply::Subscribed(Subscribed { oldest: 1, next: 9 });
        Action::Raw(if conn <= 2 {
            // The pool's connection is 1; the subscription's first is 2.
            frames(
                req.id,
                vec![
                    up,
                    Reply::Events(vec![event(1), event(2)]),
                    Reply::Events(vec![]),
                    Reply::Error(WireError::new(ErrorCode::Lagging, "too slow")),
                ],
            )
        } else {
            frames(req.id, vec![up, Reply::Events(vec![event(2), event(3)])])
        })
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(
        config(&fake).reconnect_backoff(Duration::from_millis(1), Duration::from_millis(10)),
    )
    .await
    .unwrap();
    let mut events = client.subscribe(
        sessiond_client::SubscribeOptions::new()
            .namespace("app")
            .oldest(),
    );
    let mut cursors = Vec::new();
    for _ in 0..3 {
        let e = tokio::time::timeout(Duration::from_secs(5), events.next_event())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        cursors.push(e.cursor);
    }
    assert_eq!(cursors, [1, 2, 3]);
    let froms = froms.lock().clone();
    assert_eq!(froms[..2], [EventsFrom::Oldest, EventsFrom::After(2)]);
}

/// `CursorExpired` is yielded as a typed error carrying `oldest`, and the
/// stream ends.
#[tokio::test]
async fn an_expired_cursor_ends_the_stream_with_a_typed_error() {
    let script: Script = Arc::new(|req: &Request, _| match &req.op {
        Op::Subscribe(_) => {
            Action::Answer(Reply::CursorExpired(sessiond_protocol::CursorExpired {
                requested: 3,
                oldest: 50,
            }))
        }
        _ => Action::Answer(Reply::Pong),
    });
    let fake = Fake::start(script).await;
    let client = Client::connect_with(config(&fake)).await.unwrap();
    let mut events = client.subscribe(sessiond_client::SubscribeOptions::new().after(3));
    assert_eq!(events.subscribed().await, None);
    let end = tokio::time::timeout(Duration::from_secs(5), events.next_event())
        .await
        .unwrap();
    assert!(
        matches!(
            end,
            Some(Err(Error::CursorExpired {
                requested: 3,
                oldest: 50
            }))
        ),
        "{end:?}"
    );
    assert!(events.next_event().await.is_none());
}
