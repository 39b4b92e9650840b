//! The client against a scripted fake daemon on a real socket: out-of-order
//! answers, many concurrent callers, dropped connections, silence, partial
//! frames, connection-level errors and replies of the wrong kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sessiond_client::{Client, ClientConfig, Error, ErrorCode, Reply, SessionId, WireError};
use sessiond_protocol::frame::{
    decode_request, encode_response, split_frame, DEFAULT_MAX_FRAME_LEN,
};
use sessiond_protocol::{HelloReply, Op, Request, Response, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake does with one request.
enum Action {
    Answer(Reply),
    Ignore,
    Close,
    PartialThenClose,
    ConnectionError(WireError),
}

type Script = Arc<dyn Fn(&Request, usize) -> Action + Send + Sync>;

/// Starts a fake daemon; `script` sees each non-Hello request and the number
/// of connections accepted so far. Answers of one read are sent in reverse order.
async fn fake(script: Script) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let n = accepted.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(serve(stream, Arc::clone(&script), n));
        }
    });
    addr
}

async fn serve(mut stream: TcpStream, script: Script, conn: usize) {
    let mut buf = BytesMut::new();
    loop {
        if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
        let mut answers = Vec::new();
        while let Some((payload, total)) = split_frame(&buf, DEFAULT_MAX_FRAME_LEN).unwrap() {
            let req = decode_request(payload).unwrap();
            let _ = buf.split_to(total);
            if let Op::Hello(_) = req.op {
                answers.push(Response {
                    id: req.id,
                    reply: Reply::Hello(HelloReply {
                        protocol_version: PROTOCOL_VERSION,
                        server_version: "fake".into(),
                        max_frame_len: 4096,
                    }),
                });
                continue;
            }
            match script(&req, conn) {
                Action::Answer(reply) => answers.push(Response { id: req.id, reply }),
                Action::Ignore => {}
                Action::Close => return,
                Action::PartialThenClose => {
                    stream.write_all(&[0, 0, 0, 50, 1, 2]).await.unwrap();
                    return;
                }
                Action::ConnectionError(e) => {
                    answers.push(Response {
                        id: 0,
                        reply: Reply::Error(e),
                    });
                }
            }
        }
        let mut out = BytesMut::new();
        // Handshake answers stay first; the rest go out newest first.
        let (hello, rest): (Vec<_>, Vec<_>) = answers
            .into_iter()
            .partition(|r| matches!(r.reply, Reply::Hello(_)));
        for r in hello.iter().chain(rest.iter().rev()) {
            encode_response(r, &mut out).unwrap();
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn config(addr: SocketAddr) -> ClientConfig {
    ClientConfig::new(addr.to_string())
        .connections(1)
        .request_timeout(Duration::from_secs(5))
}

/// Answers `Delete` with `Deleted(first id byte is odd)`, which lets
/// each caller check it got its own answer.
fn echo_script() -> Script {
    Arc::new(|req: &Request, _| match &req.op {
        Op::Delete(d) => Action::Answer(Reply::Deleted(d.id.0[0] % 2 == 1)),
        Op::Ping => Action::Answer(Reply::Pong),
        _ => Action::Answer(Reply::Count(req.id)),
    })
}

#[tokio::test]
async fn out_of_order_answers_reach_their_callers() {
    let addr = fake(echo_script()).await;
    let client = Client::connect_with(config(addr)).await.unwrap();
    assert_eq!(client.server_version().as_deref(), Some("fake"));
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut id = [0u8; 16];
            id[0] = (i % 256) as u8;
            let odd = client.delete("ns", SessionId(id)).await.unwrap();
            assert_eq!(odd, i % 2 == 1, "caller {i} got someone else's answer");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn error_replies_are_typed() {
    let script: Script = Arc::new(|_, _| {
        Action::Answer(Reply::Error(WireError::new(
            ErrorCode::Conflict,
            "version moved",
        )))
    });
    let addr = fake(script).await;
    let client = Client::connect_with(config(addr)).await.unwrap();
    let err = client.delete("ns", SessionId::new_v4()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn unexpected_reply_kind_is_a_protocol_error() {
    let script: Script = Arc::new(|_, _| Action::Answer(Reply::Pong));
    let addr = fake(script).await;
    let client = Client::connect_with(config(addr)).await.unwrap();
    let err = client.stats().await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("pong") && m.contains("stats")),
        "{err}"
    );
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
    let addr = fake(script).await;
    let client = Client::connect_with(config(addr)).await.unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err}");
    assert!(err.is_retryable());
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_partial_frame_then_close_is_connection_closed() {
    let script: Script = Arc::new(|_, _| Action::PartialThenClose);
    let addr = fake(script).await;
    let client = Client::connect_with(config(addr)).await.unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err}");
}

#[tokio::test]
async fn a_silent_daemon_times_out() {
    let script: Script = Arc::new(|_, _| Action::Ignore);
    let addr = fake(script).await;
    let client = Client::connect_with(config(addr).request_timeout(Duration::from_millis(200)))
        .await
        .unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_connection_level_error_fails_everything_pending() {
    let script: Script = Arc::new(|_, _| {
        Action::ConnectionError(WireError::new(ErrorCode::TooLarge, "frame too large"))
    });
    let addr = fake(script).await;
    let client = Client::connect_with(config(addr)).await.unwrap();
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
}

#[tokio::test]
async fn an_oversized_request_is_refused_before_sending() {
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&sent);
    let script: Script = Arc::new(move |_, _| {
        seen.fetch_add(1, Ordering::SeqCst);
        Action::Answer(Reply::Pong)
    });
    let addr = fake(script).await;
    let client = Client::connect_with(config(addr)).await.unwrap();
    // The fake advertises a 4 KiB maximum.
    let big = "x".repeat(10_000);
    let err = client
        .create(
            "ns",
            sessiond_client::CreateOptions::new().attr("blob", big.as_str()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Encode(_)), "{err}");
    client.ping().await.unwrap();
    assert_eq!(
        sent.load(Ordering::SeqCst),
        1,
        "only the ping reached the daemon"
    );
}

#[tokio::test]
async fn a_refused_handshake_fails_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        s.read_buf(&mut buf).await.unwrap();
        let mut out = BytesMut::new();
        let r = Response {
            id: 1,
            reply: Reply::Error(WireError::new(ErrorCode::Unauthorized, "bad token")),
        };
        encode_response(&r, &mut out).unwrap();
        s.write_all(&out).await.unwrap();
    });
    let err = Client::connect_with(config(addr)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::connect_with(config(addr)).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.is_retryable());
}
