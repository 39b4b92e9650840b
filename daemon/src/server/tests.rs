//! The connection loop under `--fsync always`, over a real socket: pipelined
//! writes are answered once durable, in order, and a disk that fails turns
//! the waiting write answers into errors without holding up the rest.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sessiond_protocol::frame::{decode_response, encode_request, split_frame};
use sessiond_protocol::{
    Attrs, Create, ErrorCode, Get, Hello, Op, Reply, Request, Response, SessionId, Ttl, Value,
    PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Daemon;
use crate::config::Config;
use crate::log::{FsyncPolicy, Log, LogConfig};
use crate::store::{Store, StoreConfig};

async fn daemon(dir: &std::path::Path) -> (Daemon, Arc<Log>) {
    let store = Arc::new(Store::new(
        StoreConfig::default(),
        Arc::new(crate::clock::SystemClock),
    ));
    let log = Log::open(
        &LogConfig {
            fsync: FsyncPolicy::Always,
            ..LogConfig::new(dir)
        },
        &store,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let d = Daemon::launch(
        listener,
        Config::default(),
        store,
        Some(Arc::clone(&log)),
        None,
    )
    .unwrap();
    (d, log)
}

fn create(n: u64) -> Op {
    let mut attrs = Attrs::new();
    attrs.insert("n".into(), Value::Int(n as i64));
    Op::Create(Create {
        namespace: "app".into(),
        id: None,
        owner: Some(format!("user{}", n % 4)),
        ttl: Ttl::default(),
        attrs,
        owner_limit: None,
    })
}

/// Sends every op in one write and reads exactly one answer per op.
async fn exchange(stream: &mut TcpStream, first_id: u64, ops: Vec<Op>) -> Vec<Response> {
    let mut out = BytesMut::new();
    let n = ops.len();
    for (i, op) in ops.into_iter().enumerate() {
        encode_request(
            &Request {
                id: first_id + i as u64,
                op,
            },
            &mut out,
        )
        .unwrap();
    }
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut answers = Vec::new();
    while answers.len() < n {
        while let Some((payload, total)) = split_frame(&buf, u32::MAX >> 1).unwrap() {
            answers.push(decode_response(payload).unwrap());
            let _ = buf.split_to(total);
        }
        if answers.len() == n {
            break;
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf))
            .await
            .expect("the daemon answered within 10 s")
            .unwrap();
        assert!(read > 0, "the daemon closed the connection");
    }
    answers
}

#[tokio::test]
async fn pipelined_writes_wait_for_the_sync_and_a_failing_disk_fails_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let (d, log) = daemon(dir.path()).await;
    let mut stream = TcpStream::connect(d.local_addr()).await.unwrap();
    let hello = Op::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        auth_token: None,
        client_name: None,
    });
    assert!(matches!(
        exchange(&mut stream, 1, vec![hello]).await[0].reply,
        Reply::Hello(_)
    ));

    // 300 creates in one write (more than one `max_in_flight` batch): every
    // answer, in order, each after its record is durable.
    let answers = exchange(&mut stream, 10, (0..300).map(create).collect()).await;
    let mut ids: Vec<SessionId> = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.id, 10 + i as u64, "answers leave in order");
        let Reply::Session(s) = &a.reply else {
            panic!("create {i}: {:?}", a.reply)
        };
        ids.push(s.id);
    }
    assert!(
        log.stats()
            .fsyncs
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // The disk fails: writes are answered with errors (refused up front, or
    // "in memory but not durable"), reads in the same batch still answered.
    log.inject_write_fault(true);
    let mut ops: Vec<Op> = (1000..1010).map(create).collect();
    ops.push(Op::Get(Get {
        namespace: "app".into(),
        id: ids[0],
        touch: false,
    }));
    let answers = exchange(&mut stream, 1000, ops).await;
    for a in &answers[..10] {
        match &a.reply {
            Reply::Error(e) => assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}"),
            other => panic!("a write on a failing disk was acknowledged: {other:?}"),
        }
    }
    assert!(matches!(&answers[10].reply, Reply::MaybeSession(Some(s)) if s.id == ids[0]));

    // The disk comes back (the writer retries once a second): writes work again.
    log.inject_write_fault(false);
    let mut ok = false;
    for round in 0..50u64 {
        let a = exchange(&mut stream, 5000 + round, vec![create(5000 + round)]).await;
        if matches!(a[0].reply, Reply::Session(_)) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "writes never worked again");
    d.shutdown().await;
}

/// A `Create` whose map is canonical is taken in place (the hot path), one
/// that is not (names out of order) is decoded whole: both store the same
/// session, and a name the store refuses is refused either way.
#[tokio::test]
async fn creates_in_place_and_decoded_whole_store_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _log) = daemon(dir.path()).await;
    let mut stream = TcpStream::connect(d.local_addr()).await.unwrap();
    let hello = Op::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        auth_token: None,
        client_name: None,
    });
    exchange(&mut stream, 1, vec![hello]).await;
    let bare = Op::Create(Create {
        namespace: "app".into(),
        id: None,
        owner: None,
        ttl: Ttl::default(),
        attrs: Attrs::new(),
        owner_limit: None,
    });
    // The frame of `bare` with its empty map (the byte before the last, the
    // owner limit's `None`) replaced by `map`.
    let frame_with = |id: u64, map: &[u8]| {
        let mut buf = BytesMut::new();
        encode_request(
            &Request {
                id,
                op: bare.clone(),
            },
            &mut buf,
        )
        .unwrap();
        let mut bytes = buf.to_vec();
        let at = bytes.len() - 2;
        bytes.splice(at..=at, map.iter().copied());
        let len = u32::try_from(bytes.len() - 4).unwrap();
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        bytes
    };
    // {"a": Int(1), "b": Str("x")}, canonical, then with "b" first.
    let in_order = [2u8, 1, b'a', 2, 2, 1, b'b', 4, 1, b'x'];
    let reversed = [2u8, 1, b'b', 4, 1, b'x', 1, b'a', 2, 2];
    let empty_name = [1u8, 0, 0];
    let mut wire = frame_with(20, &in_order);
    wire.extend(frame_with(21, &reversed));
    wire.extend(frame_with(22, &empty_name));
    stream.write_all(&wire).await.unwrap();
    let mut buf = BytesMut::new();
    let mut answers = Vec::new();
    while answers.len() < 3 {
        while let Some((payload, total)) = split_frame(&buf, u32::MAX >> 1).unwrap() {
            answers.push(decode_response(payload).unwrap());
            let _ = buf.split_to(total);
        }
        if answers.len() < 3 {
            tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf))
                .await
                .unwrap()
                .unwrap();
        }
    }
    let want: Attrs = [
        ("a".to_owned(), Value::Int(1)),
        ("b".to_owned(), Value::Str("x".into())),
    ]
    .into();
    let mut ids = Vec::new();
    for a in &answers[..2] {
        let Reply::Session(s) = &a.reply else {
            panic!("{:?}", a.reply)
        };
        assert_eq!(s.attrs, want);
        ids.push(s.id);
    }
    assert!(
        matches!(&answers[2].reply, Reply::Error(e) if e.code == ErrorCode::InvalidRequest),
        "{:?}",
        answers[2].reply
    );
    // Read back (in place too): the stored maps are the same.
    let gets = ids
        .iter()
        .map(|id| {
            Op::Get(Get {
                namespace: "app".into(),
                id: *id,
                touch: true,
            })
        })
        .collect();
    for a in exchange(&mut stream, 30, gets).await {
        let Reply::MaybeSession(Some(s)) = a.reply else {
            panic!("{:?}", a.reply)
        };
        assert_eq!(s.attrs, want);
    }
    d.shutdown().await;
}
