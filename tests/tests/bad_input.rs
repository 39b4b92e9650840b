//! Bad input over real sockets: each gets a clear error or a closed connection,
//! and the daemon keeps serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::BytesMut;
use sessiond_e2e::{daemon_bin, DaemonProcess};
use sessiond_protocol::frame::{
    decode_response, encode_request, split_frame, ABSOLUTE_MAX_FRAME_LEN,
};
use sessiond_protocol::{ErrorCode, Hello, Op, Reply, Request, Response, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(daemon: &DaemonProcess) -> Self {
        let stream = TcpStream::connect(daemon.addr()).await.unwrap();
        Self {
            stream,
            buf: BytesMut::new(),
        }
    }

    async fn hello(daemon: &DaemonProcess) -> Self {
        let mut raw = Self::connect(daemon).await;
        let hello = Op::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            auth_token: None,
            client_name: Some("bad-input-test".into()),
        });
        raw.send(1, hello).await;
        let r = raw.recv().await.expect("hello reply");
        assert!(matches!(r.reply, Reply::Hello(_)), "{r:?}");
        raw
    }

    async fn send(&mut self, id: u64, op: Op) {
        let mut out = BytesMut::new();
        encode_request(&Request { id, op }, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response, or `None` once the daemon closed the connection.
    async fn recv(&mut self) -> Option<Response> {
        loop {
            if let Some((payload, total)) = split_frame(&self.buf, ABSOLUTE_MAX_FRAME_LEN).unwrap()
            {
                let resp = decode_response(payload).unwrap();
                let _ = self.buf.split_to(total);
                return Some(resp);
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("daemon neither answered nor closed")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    async fn expect_error(&mut self, id: u64, code: ErrorCode) {
        let r = self.recv().await.expect("an error reply before the close");
        assert_eq!(r.id, id, "{r:?}");
        match r.reply {
            Reply::Error(e) => {
                assert_eq!(e.code, code, "{}", e.message);
                assert!(!e.message.is_empty());
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    async fn expect_closed(&mut self) {
        assert!(self.recv().await.is_none(), "connection should be closed");
    }

    async fn ping(&mut self, id: u64) {
        self.send(id, Op::Ping).await;
        let r = self.recv().await.expect("pong");
        assert_eq!((r.id, r.reply), (id, Reply::Pong));
    }
}

#[tokio::test]
async fn bad_input_gets_an_error_or_a_close_and_others_keep_working() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let mut bystander = Raw::hello(&daemon).await;
    bystander.ping(2).await;

    // A request before Hello.
    let mut c = Raw::connect(&daemon).await;
    c.send(5, Op::Ping).await;
    c.expect_error(5, ErrorCode::HelloRequired).await;
    c.expect_closed().await;

    // A newer protocol version.
    let mut c = Raw::connect(&daemon).await;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        auth_token: None,
        client_name: None,
    };
    c.send(1, Op::Hello(hello)).await;
    c.expect_error(1, ErrorCode::UnsupportedVersion).await;
    c.expect_closed().await;

    // Garbage bytes: ASCII text read as a length is far over the maximum.
    let mut c = Raw::connect(&daemon).await;
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    c.expect_error(0, ErrorCode::TooLarge).await;
    c.expect_closed().await;

    // A length prefix of 4 GiB - 1, after a good Hello.
    let before = daemon.rss_kib();
    let mut c = Raw::hello(&daemon).await;
    c.send_raw(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]).await;
    c.expect_error(0, ErrorCode::TooLarge).await;
    c.expect_closed().await;
    if let (Some(before), Some(after)) = (before, daemon.rss_kib()) {
        // Nothing was sized from the claimed length.
        assert!(
            after < before + 64 * 1024,
            "rss grew from {before} KiB to {after} KiB"
        );
    }

    // A zero length.
    let mut c = Raw::hello(&daemon).await;
    c.send_raw(&[0, 0, 0, 0]).await;
    c.expect_error(0, ErrorCode::TooLarge).await;
    c.expect_closed().await;

    // A frame that decodes to nothing known: id 77, op tag 200. The connection goes on.
    let mut c = Raw::hello(&daemon).await;
    c.send_raw(&[0, 0, 0, 4, 77, 200, 1, 2]).await;
    c.expect_error(77, ErrorCode::UnknownOperation).await;
    c.ping(78).await;

    // A known op with a malformed body: id 79, tag of Get, then too few bytes.
    c.send_raw(&[0, 0, 0, 3, 79, 3, 9]).await;
    c.expect_error(79, ErrorCode::InvalidRequest).await;
    c.ping(80).await;

    // A truncated frame, then the peer goes away: nothing to answer.
    let mut c = Raw::hello(&daemon).await;
    c.send_raw(&[0, 0, 0, 100, 1, 2, 3]).await;
    c.stream.shutdown().await.unwrap();
    c.expect_closed().await;

    // A truncated frame held open is simply waited on; the others are served.
    let mut stalled = Raw::hello(&daemon).await;
    stalled.send_raw(&[0, 0, 1, 0, 9]).await;

    bystander.ping(3).await;
    let mut fresh = Raw::hello(&daemon).await;
    fresh.ping(2).await;
    drop(stalled);
    let mut daemon = daemon;
    assert!(daemon.is_running());
}

#[tokio::test]
async fn oversized_frame_by_configuration_is_refused() {
    let daemon = DaemonProcess::start(daemon_bin!(), &["--max-frame-len", "1024"]).unwrap();
    let mut c = Raw::hello(&daemon).await;
    let mut frame = 2000u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0; 16]);
    c.send_raw(&frame).await;
    c.expect_error(0, ErrorCode::TooLarge).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn connection_cap_refuses_with_unavailable() {
    // Set through the environment, to prove SESSIOND_* variables are read.
    let daemon =
        DaemonProcess::start_with_env(daemon_bin!(), &[], &[("SESSIOND_MAX_CONNECTIONS", "2")])
            .unwrap();
    let mut a = Raw::hello(&daemon).await;
    let b = Raw::hello(&daemon).await;
    let mut c = Raw::connect(&daemon).await;
    c.expect_error(0, ErrorCode::Unavailable).await;
    c.expect_closed().await;
    a.ping(2).await;
    drop(b.stream);
    // The freed slot is usable once the daemon has seen the close.
    let mut tries = 0;
    loop {
        let mut d = Raw::connect(&daemon).await;
        d.send(
            1,
            Op::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                auth_token: None,
                client_name: None,
            }),
        )
        .await;
        match d.recv().await.map(|r| r.reply) {
            Some(Reply::Hello(_)) => break,
            _ if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("slot never freed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let daemon = DaemonProcess::start(daemon_bin!(), &["--idle-timeout", "200ms"]).unwrap();
    let mut c = Raw::hello(&daemon).await;
    c.expect_closed().await;
}

/// A client that pipelines far more than `max_in_flight` without reading gets
/// backpressure: the daemon stops reading instead of buffering, and every
/// request is still answered, in order, once the client reads.
#[tokio::test]
async fn pipelining_without_reading_is_bounded_and_loses_nothing() {
    const N: u64 = 200_000;
    let daemon = DaemonProcess::start(daemon_bin!(), &["--max-in-flight", "16"]).unwrap();
    let c = Raw::hello(&daemon).await;
    let before = daemon.rss_kib();
    let (mut read, mut write) = c.stream.into_split();
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        for id in 2..N + 2 {
            encode_request(&Request { id, op: Op::Ping }, &mut out).unwrap();
        }
        write.write_all(&out).await.unwrap();
        write
    });
    // Let the socket buffers fill up while nobody reads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let (Some(before), Some(during)) = (before, daemon.rss_kib()) {
        assert!(
            during < before + 32 * 1024,
            "rss grew from {before} KiB to {during} KiB"
        );
    }
    let mut buf = BytesMut::new();
    let mut next = 2;
    while next < N + 2 {
        while let Some((payload, total)) = split_frame(&buf, ABSOLUTE_MAX_FRAME_LEN).unwrap() {
            let r = decode_response(payload).unwrap();
            assert_eq!((r.id, r.reply), (next, Reply::Pong));
            next += 1;
            let _ = buf.split_to(total);
        }
        if next == N + 2 {
            break;
        }
        let n = tokio::time::timeout(WAIT, read.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {} answers", next - 2);
    }
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn sigint_shuts_down_gracefully() {
    let mut daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let status = daemon.signal_and_wait("INT", WAIT).unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let mut daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let mut c = Raw::hello(&daemon).await;
    c.ping(2).await;
    let status = daemon.signal_and_wait("TERM", WAIT).unwrap();
    assert!(status.success(), "{status}");
    c.expect_closed().await;
    assert!(daemon.logs().contains("shutting down"));
}

/// Waits until the daemon closes `stream` (true) or `within` passes (false);
/// whatever it sends before closing is read and dropped.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn tricklers_are_closed_at_the_hello_deadline_and_cannot_keep_clients_out() {
    // 20 connections, 2 kept for peers past hello: 18 for strangers.
    let daemon = DaemonProcess::start(
        daemon_bin!(),
        &["--max-connections", "20", "--hello-timeout", "1s"],
    )
    .unwrap();
    let mut bystander = Raw::hello(&daemon).await;
    // 40 strangers trickle a hello's bytes, one every 200 ms: never a
    // complete frame, never silent long enough for the idle timeout.
    let mut hello = BytesMut::new();
    encode_request(
        &Request {
            id: 1,
            op: Op::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                auth_token: None,
                client_name: Some("slowloris".into()),
            }),
        },
        &mut hello,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut tricklers = Vec::new();
    for _ in 0..40 {
        let stream = TcpStream::connect(daemon.addr()).await.unwrap();
        let hello = hello.clone();
        tricklers.push(tokio::spawn(async move {
            let mut stream = stream;
            let connected = std::time::Instant::now();
            for b in hello.iter().take(hello.len() - 1) {
                if stream.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Closed by the daemon (deadline or a newcomer's room), not
            // by this trickler running out of bytes.
            let closed = closed_within(&mut stream, Duration::from_secs(3)).await;
            (closed, connected.elapsed())
        }));
    }
    // During the attack, clients that say hello at once get in and are
    // served, and the one connected before goes on being served.
    for i in 0..10u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut newcomer = Raw::hello(&daemon).await;
        newcomer.ping(2).await;
        bystander.ping(10 + i).await;
    }
    for t in tricklers {
        let (closed, held) = t.await.unwrap();
        assert!(closed, "a trickler was never closed");
        assert!(
            held < Duration::from_secs(3),
            "a trickler held its connection {held:?} (hello deadline 1 s)"
        );
    }
    bystander.ping(99).await;
    eprintln!(
        "40 tricklers closed within {:?} of the attack's start",
        started.elapsed()
    );
}

#[tokio::test]
async fn before_hello_only_a_hello_sized_frame_is_accepted() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let rss_before = daemon.rss_kib().unwrap();
    // Announce a frame just under --max-frame-len (1 MiB) before hello, on
    // many connections: each is refused from its header.
    let mut refused = 0;
    for _ in 0..200 {
        let mut c = Raw::connect(&daemon).await;
        c.send_raw(&((1u32 << 20) - 16).to_be_bytes()).await;
        let _ = c.stream.write_all(&vec![0u8; 64 * 1024]).await;
        match c.recv().await {
            Some(Response {
                reply: Reply::Error(e),
                ..
            }) if e.code == ErrorCode::TooLarge => refused += 1,
            other => panic!("expected TooLarge, got {other:?}"),
        }
        c.expect_closed().await;
    }
    assert_eq!(refused, 200);
    let grown = daemon.rss_kib().unwrap().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "RSS grew {grown} KiB");
    let mut after = Raw::hello(&daemon).await;
    after.ping(2).await;
}

#[tokio::test]
async fn a_frame_trickled_past_its_deadline_is_closed_with_timed_out() {
    let daemon = DaemonProcess::start(
        daemon_bin!(),
        &["--frame-timeout", "1s", "--idle-timeout", "1m"],
    )
    .unwrap();
    let mut c = Raw::hello(&daemon).await;
    let mut ping = BytesMut::new();
    encode_request(
        &Request {
            id: 7,
            op: Op::Ping,
        },
        &mut ping,
    )
    .unwrap();
    let started = std::time::Instant::now();
    // One byte every 300 ms: each resets an idle timer, none finishes the frame.
    let mut closed_with = None;
    for b in ping.iter().take(ping.len() - 1) {
        if c.stream.write_all(&[*b]).await.is_err() {
            break;
        }
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), c.stream.read_buf(&mut c.buf)).await
        {
            if n == 0 {
                break;
            }
            closed_with = split_frame(&c.buf, ABSOLUTE_MAX_FRAME_LEN)
                .unwrap()
                .map(|(p, _)| decode_response(p).unwrap());
            break;
        }
    }
    let resp = match closed_with {
        Some(r) => r,
        None => c.recv().await.expect("an error before the close"),
    };
    match resp.reply {
        Reply::Error(e) => assert_eq!(e.code, ErrorCode::TimedOut, "{}", e.message),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "closed after {took:?} (deadline 1 s)"
    );
    // Whole frames sent slowly are fine: the deadline is per frame.
    let mut slow = Raw::hello(&daemon).await;
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        slow.ping(10 + i).await;
    }
}

#[tokio::test]
async fn connection_buffers_stay_within_their_budget() {
    let daemon = DaemonProcess::start(
        daemon_bin!(),
        &["--max-buffer-memory", "8mb", "--max-connections", "1000"],
    )
    .unwrap();
    let mut bystander = Raw::hello(&daemon).await;
    let rss_before = daemon.rss_kib().unwrap();
    // 150 connections past hello each start a frame of 1 MiB and send most
    // of it: 150 MiB if all were held.
    let mut conns = Vec::new();
    let mut refused = 0;
    let body = vec![0u8; (1 << 20) - 1024];
    for _ in 0..150 {
        let mut c = Raw::hello(&daemon).await;
        c.send_raw(&((1u32 << 20) - 16).to_be_bytes()).await;
        // The daemon refuses from the header when the budget is spent; the
        // rest of the write may then fail.
        let _ = tokio::time::timeout(Duration::from_millis(500), c.stream.write_all(&body)).await;
        conns.push(c);
    }
    for c in &mut conns {
        let answer = tokio::time::timeout(Duration::from_millis(300), c.recv()).await;
        match answer {
            Ok(Some(Response {
                reply: Reply::Error(e),
                ..
            })) if e.code == ErrorCode::OutOfMemory => refused += 1,
            // Held (within the budget) or closed, or held past the frame
            // deadline on a slow machine.
            Err(_) | Ok(None) => {}
            Ok(Some(Response {
                reply: Reply::Error(e),
                ..
            })) if e.code == ErrorCode::TimedOut => {}
            Ok(Some(other)) => panic!("unexpected answer {other:?}"),
        }
    }
    let grown = daemon.rss_kib().unwrap().saturating_sub(rss_before);
    assert!(refused >= 130, "only {refused} of 150 frames refused");
    assert!(
        grown < 48 * 1024,
        "RSS grew {grown} KiB with an 8 MiB buffer budget"
    );
    bystander.ping(2).await;
    eprintln!("{refused} of 150 one-MiB frames refused; RSS grew {grown} KiB");
}
