//! A scripted fake daemon on a real socket (127.0.0.1:0), built on the
//! protocol's codec, for testing the client without the real daemon.
//!
//! It answers every `Hello` itself (recording it) and hands each other request
//! to a script. Answers produced by one read are written newest first, so a
//! pipelining client sees them out of order; `Hold`/`Release` make a reversal
//! of a whole batch deterministic.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use sessiond_protocol::frame::{decode_request, encode_response, split_frame};
use sessiond_protocol::{
    Hello, HelloReply, Reply, Request, Response, Session, SessionId, Ttl, Value, WireError,
    PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The largest frame the fake announces in its handshake (and accepts).
pub const FAKE_MAX_FRAME_LEN: u32 = 4096;

/// What the fake does with one request.
pub enum Action {
    /// Answer it (in this read's batch).
    Answer(Reply),
    /// Keep the answer back until a `Release` on the same connection.
    Hold(Reply),
    /// Answer it, together with every held answer; the batch goes out in
    /// reverse order of arrival.
    Release(Reply),
    /// Never answer.
    Ignore,
    /// Close the connection without answering.
    Close,
    /// Write the start of a frame, then close.
    PartialThenClose,
    /// Write these bytes as they are, now.
    Raw(Vec<u8>),
    /// Send an error under request id 0, then close (as the daemon does after
    /// a bad frame).
    ConnectionError(WireError),
}

/// Decides what to do with a request; also given the number of the connection
/// (1 for the first accepted).
pub type Script = Arc<dyn Fn(&Request, usize) -> Action + Send + Sync>;

/// A running fake daemon.
pub struct Fake {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    hellos: Arc<Mutex<Vec<Hello>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Fake {
    /// Starts a fake answering `Hello` with protocol version `PROTOCOL_VERSION`.
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, script)
    }

    /// As [`Fake::start`], on a listener the test bound.
    pub fn start_on(listener: TcpListener, script: Script) -> Self {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&accepted), Arc::clone(&hellos));
        let acceptor = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(stream, Arc::clone(&script), n, Arc::clone(&seen)));
            }
        });
        Self {
            addr,
            accepted,
            hellos,
            acceptor: Some(acceptor),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every `Hello` received so far.
    pub fn hellos(&self) -> Vec<Hello> {
        self.hellos.lock().unwrap().clone()
    }

    /// Closes the listening socket; open connections go on.
    pub async fn stop_accepting(&mut self) {
        if let Some(task) = self.acceptor.take() {
            task.abort();
            // Waiting for the task makes sure the listener has been dropped.
            let _ = task.await;
        }
    }
}

async fn serve(mut stream: TcpStream, script: Script, conn: usize, hellos: Arc<Mutex<Vec<Hello>>>) {
    let mut buf = BytesMut::new();
    let mut held: Vec<Response> = Vec::new();
    loop {
        if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
        let mut hello_answers = Vec::new();
        let mut answers = Vec::new();
        let mut close_after = false;
        while let Some((payload, total)) = split_frame(&buf, FAKE_MAX_FRAME_LEN).unwrap() {
            let req = decode_request(payload).unwrap();
            let _ = buf.split_to(total);
            if let sessiond_protocol::Op::Hello(h) = &req.op {
                hellos.lock().unwrap().push(h.clone());
                hello_answers.push(Response {
                    id: req.id,
                    reply: Reply::Hello(HelloReply {
                        protocol_version: PROTOCOL_VERSION,
                        server_version: "fake".into(),
                        max_frame_len: FAKE_MAX_FRAME_LEN,
                    }),
                });
                continue;
            }
            let id = req.id;
            match script(&req, conn) {
                Action::Answer(reply) => answers.push(Response { id, reply }),
                Action::Hold(reply) => held.push(Response { id, reply }),
                Action::Release(reply) => {
                    answers.append(&mut held);
                    answers.push(Response { id, reply });
                }
                Action::Ignore => {}
                Action::Close => return,
                Action::PartialThenClose => {
                    stream.write_all(&[0, 0, 0, 50, 1, 2]).await.unwrap();
                    return;
                }
                Action::Raw(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Action::ConnectionError(e) => {
                    answers.push(Response {
                        id: 0,
                        reply: Reply::Error(e),
                    });
                    close_after = true;
                    break;
                }
            }
        }
        let mut out = BytesMut::new();
        // Handshake answers stay first; the rest go out newest first.
        for r in hello_answers.iter().chain(answers.iter().rev()) {
            encode_response(r, &mut out).unwrap();
        }
        if stream.write_all(&out).await.is_err() || close_after {
            return;
        }
    }
}

/// A fake that answers the first request it reads with `reply`, whatever it
/// was, then closes: for handshake tests.
pub async fn one_answer(reply: Reply) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        s.read_buf(&mut buf).await.unwrap();
        let mut out = BytesMut::new();
        encode_response(&Response { id: 1, reply }, &mut out).unwrap();
        s.write_all(&out).await.unwrap();
    });
    addr
}

/// A session record as the daemon would return it.
pub fn session(id: SessionId) -> Session {
    Session {
        namespace: "app".into(),
        id,
        owner: Some("alice".into()),
        created_at_ms: 1_700_000_000_000,
        last_active_ms: 1_700_000_060_000,
        expires_at_ms: Some(1_700_001_860_000),
        ttl: Ttl {
            idle_ttl_ms: Some(1_800_000),
            max_lifetime_ms: None,
        },
        version: 3,
        attrs: [
            ("role".to_string(), Value::Str("admin".into())),
            ("visits".to_string(), Value::Int(3)),
            ("ratio".to_string(), Value::Float(0.5)),
            ("raw".to_string(), Value::Bytes(vec![1, 2])),
            (
                "logins".to_string(),
                Value::Counter {
                    value: 2,
                    reset_at_ms: 1_700_000_100_000,
                },
            ),
        ]
        .into_iter()
        .collect(),
    }
}
