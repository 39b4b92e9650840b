//! One multiplexed connection: many callers, one socket.
//!
//! Callers register a oneshot under their request id and encode their request
//! straight into a shared outbox (bounded: past `max_pending` frames they wait
//! for room). A writer task takes the whole outbox at once and sends it with
//! one write, so concurrent callers share syscalls; before taking it, the
//! writer lets the other callers that are ready run first (tokio would
//! otherwise run the woken writer before them and send one frame per write).
//! A reader task splits every response in a read and completes the waiters by
//! id. Answers may come in any order. When the socket fails, every waiter is
//! failed at once with [`Error::ConnectionClosed`] and the connection is
//! marked dead so the pool replaces it. Waiters carry their deadline; one
//! sweeper task per connection fails those past it with [`Error::Timeout`]
//! (no timer per request).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use sessiond_protocol::frame::{
    decode_response, encode_request, encode_request_parts, split_frame, ABSOLUTE_MAX_FRAME_LEN,
    HEADER_LEN,
};
use sessiond_protocol::{
    EncodeError, ErrorCode, Hello, HelloReply, Op, Reply, Request, Response, WireError,
    PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The reading side of a connection, plain or TLS.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing side of a connection, plain or TLS.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// Initial capacity of the outbox buffers.
const WRITE_BATCH: usize = 64 * 1024;
/// An outbox buffer that grew past this for one large frame is not kept.
const WRITE_KEEP: usize = 4 * 1024 * 1024;
/// Smallest free space handed to a read.
pub(crate) const READ_CHUNK: usize = 16 * 1024;
/// Bounds of the interval at which a connection fails requests past their
/// deadline (a twentieth of the request timeout in between).
const MIN_SWEEP: Duration = Duration::from_millis(1);
const MAX_SWEEP: Duration = Duration::from_millis(100);
/// Request id of the handshake (0 is reserved for connection-level errors).
pub(crate) const HELLO_ID: u64 = 1;

/// A caller waiting for its answer, and until when.
struct Waiter {
    to: To,
    deadline: Instant,
}

/// Where an answer goes.
enum To {
    /// A single call.
    One(oneshot::Sender<Result<Reply>>),
    /// Entry `.1` of a pipelined batch.
    Batch(Arc<Mutex<Batch>>, usize),
}

/// The answers of a batch as they come; the caller is woken once with all.
struct Batch {
    replies: Vec<Option<Result<Reply>>>,
    left: usize,
    done: Option<oneshot::Sender<Vec<Option<Result<Reply>>>>>,
}

impl Waiter {
    fn complete(self, result: Result<Reply>) {
        match self.to {
            To::One(tx) => {
                let _ = tx.send(result);
            }
            To::Batch(batch, i) => {
                let mut b = batch.lock();
                if let Some(slot) = b.replies.get_mut(i) {
                    if slot.is_none() {
                        *slot = Some(result);
                        b.left -= 1;
                    }
                }
                if b.left == 0 {
                    let replies = std::mem::take(&mut b.replies);
                    if let Some(done) = b.done.take() {
                        let _ = done.send(replies);
                    }
                }
            }
        }
    }
}

/// Hashes request ids (distinct, mostly sequential `u64`s) with one
/// multiplication: they need spreading, not protection from chosen keys.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Pending = HashMap<u64, Waiter, BuildHasherDefault<IdHasher>>;

/// State shared by the handle and its tasks.
struct Shared {
    pending: Mutex<Pending>,
    dead: AtomicBool,
}

impl Shared {
    /// Marks the connection dead and fails every waiter with `error()`.
    fn fail_all(&self, error: impl Fn() -> Error) {
        self.dead.store(true, Ordering::Release);
        let waiters: Vec<Waiter> = self.pending.lock().drain().map(|(_, w)| w).collect();
        for w in waiters {
            w.complete(Err(error()));
        }
    }
}

/// Frames waiting for the writer task, packed back to back.
struct Outbox {
    state: Mutex<OutboxState>,
    /// Wakes the writer: the first frame of a batch is in, or closing began.
    ready: Notify,
    /// Wakes callers waiting for room.
    room: Notify,
}

struct OutboxState {
    buf: BytesMut,
    /// Frames in `buf`.
    frames: usize,
    /// No more frames are accepted (the handle was dropped or writing failed).
    closed: bool,
}

impl Outbox {
    fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
    }
}

/// A live connection to the daemon.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    /// Encoded frames for the writer task; bounded by `max_pending` frames,
    /// so a stalled socket makes callers wait (within their timeout) instead
    /// of growing memory.
    outbox: Arc<Outbox>,
    max_pending: usize,
    /// The next request id. Id 0 is the daemon's "whole connection" marker and
    /// 1 is the handshake's, so requests start at 2 and never reuse an id.
    next_id: AtomicU64,
    /// Largest request payload: the smaller of ours and the daemon's.
    max_frame_len: u32,
    server: HelloReply,
    reader: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    /// The address it was opened to.
    addr: String,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer sends what is queued and ends; the reader would
        // otherwise wait on the socket until the daemon's idle timeout.
        self.outbox.close();
        self.reader.abort();
        self.sweeper.abort();
    }
}

impl Connection {
    /// Connects and completes the handshake within the connect timeout.
    pub(crate) async fn open(config: &ClientConfig, addr: &str) -> Result<Self> {
        let (read, write, server, leftover) = open_stream(config, addr).await?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            dead: AtomicBool::new(false),
        });
        let outbox = Arc::new(Outbox {
            state: Mutex::new(OutboxState {
                buf: BytesMut::with_capacity(WRITE_BATCH),
                frames: 0,
                closed: false,
            }),
            ready: Notify::new(),
            room: Notify::new(),
        });
        tokio::spawn(writer(write, Arc::clone(&outbox), Arc::clone(&shared)));
        let read_max = server.max_frame_len.clamp(1, ABSOLUTE_MAX_FRAME_LEN);
        let reader = tokio::spawn(reader(read, leftover, read_max, Arc::clone(&shared)));
        let tick = (config.request_timeout / 20).clamp(MIN_SWEEP, MAX_SWEEP);
        let sweeper = tokio::spawn(sweeper(Arc::clone(&shared), tick));
        Ok(Self {
            shared,
            outbox,
            max_pending: config.max_pending,
            next_id: AtomicU64::new(HELLO_ID + 1),
            max_frame_len: config.max_frame_len.min(server.max_frame_len),
            server,
            reader,
            sweeper,
            addr: addr.to_owned(),
        })
    }

    /// The address it was opened to.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the socket has failed.
    pub(crate) fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::Acquire)
    }

    /// What the daemon said in the handshake.
    pub(crate) fn server(&self) -> &HelloReply {
        &self.server
    }

    /// Sends `op` and waits for its reply until `deadline` (queueing
    /// included; the sweeper fails it with [`Error::Timeout`] then).
    pub(crate) async fn call(&self, op: &Op, deadline: Instant) -> Result<Reply> {
        if self.is_dead() {
            return Err(Error::ConnectionClosed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The waiter is in place before the frame can leave: the answer may
        // come back as soon as the outbox lock is released.
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().insert(
            id,
            Waiter {
                to: To::One(tx),
                deadline,
            },
        );
        // The reader may have failed everyone between the check above and the
        // insert; without this second look the waiter would sit until timeout.
        if self.is_dead() {
            self.shared.pending.lock().remove(&id);
            return Err(Error::ConnectionClosed);
        }
        let enqueued = self.enqueue(id, std::slice::from_ref(op), deadline).await;
        if let Some(e) = enqueued.first_error() {
            self.shared.pending.lock().remove(&id);
            return Err(e);
        }
        // Completed by the reader (the answer), the sweeper (the deadline)
        // or `fail_all` (the connection); dropped only with the connection.
        rx.await.map_err(|_| Error::ConnectionClosed)?
    }

    /// Sends `ops` back to back and waits for every reply (each until
    /// `deadline`); the replies come back in the order of `ops`, each its
    /// own result. The caller is woken once, when the last one is in.
    pub(crate) async fn call_many(
        &self,
        ops: &[Op],
        deadline: Instant,
    ) -> Result<Vec<Result<Reply>>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_dead() {
            return Err(Error::ConnectionClosed);
        }
        let n = ops.len();
        let first = self.next_id.fetch_add(n as u64, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let batch = Arc::new(Mutex::new(Batch {
            replies: (0..n).map(|_| None).collect(),
            left: n,
            done: Some(tx),
        }));
        {
            let mut pending = self.shared.pending.lock();
            for (i, id) in (first..).take(n).enumerate() {
                let to = To::Batch(Arc::clone(&batch), i);
                pending.insert(id, Waiter { to, deadline });
            }
        }
        if self.is_dead() {
            let mut pending = self.shared.pending.lock();
            for id in (first..).take(n) {
                pending.remove(&id);
            }
            return Err(Error::ConnectionClosed);
        }
        // Ops that were not sent fail in their own entries; the others are
        // answered (or failed by the reader, the sweeper or `fail_all`).
        let enqueued = self.enqueue(first, ops, deadline).await;
        let unsent = enqueued.bad.into_iter().chain(
            enqueued
                .stopped
                .into_iter()
                .flat_map(|(from, e)| (from..n).map(move |i| (i, e.duplicate()))),
        );
        for (i, e) in unsent {
            let waiter = self.shared.pending.lock().remove(&(first + i as u64));
            if let Some(w) = waiter {
                w.complete(Err(e));
            }
        }
        let replies = rx.await.map_err(|_| Error::ConnectionClosed)?;
        Ok(replies
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::ConnectionClosed)))
            .collect())
    }
}

impl Connection {
    /// Encodes `ops` as requests `first`, `first + 1`, ... into the outbox,
    /// as many per lock as there is room for, waiting while it is full (until
    /// `deadline`). An op that cannot be encoded (or is over the frame limit)
    /// is skipped and reported; a closed connection or the deadline stops
    /// the rest.
    async fn enqueue(&self, first: u64, ops: &[Op], deadline: Instant) -> Enqueued {
        let mut done = Enqueued::default();
        let mut next = 0;
        while next < ops.len() {
            let room = self.outbox.room.notified();
            tokio::pin!(room);
            // Registered before looking, so a drain in between is not missed.
            room.as_mut().enable();
            let wake = {
                let mut st = self.outbox.state.lock();
                if st.closed || self.is_dead() {
                    done.stopped = Some((next, Error::ConnectionClosed));
                    return done;
                }
                let before = st.frames;
                while next < ops.len() && st.frames < self.max_pending {
                    let start = st.buf.len();
                    let id = first + next as u64;
                    let refused = match encode_request_parts(id, &ops[next], &mut st.buf) {
                        Err(e) => Some(e.into()),
                        Ok(()) => {
                            let len = st.buf.len() - start - HEADER_LEN;
                            (len > self.max_frame_len as usize).then_some(Error::Encode(
                                EncodeError::TooLarge {
                                    len,
                                    max: self.max_frame_len,
                                },
                            ))
                        }
                    };
                    match refused {
                        Some(e) => {
                            st.buf.truncate(start);
                            done.bad.push((next, e));
                        }
                        None => st.frames += 1,
                    }
                    next += 1;
                }
                before == 0 && st.frames > 0
            };
            if wake {
                self.outbox.ready.notify_one();
            }
            if next < ops.len()
                && tokio::time::timeout_at(deadline.into(), room)
                    .await
                    .is_err()
            {
                done.stopped = Some((
                    next,
                    Error::Timeout {
                        after: Duration::ZERO,
                    },
                ));
                return done;
            }
        }
        done
    }
}

/// What became of the ops handed to [`Connection::enqueue`].
#[derive(Default)]
struct Enqueued {
    /// Ops that were not sent because they could not be encoded, and why.
    bad: Vec<(usize, Error)>,
    /// The first op not sent because the connection closed or the deadline
    /// passed, and why; none after it was sent either.
    stopped: Option<(usize, Error)>,
}

impl Enqueued {
    /// The first failure, if any op was not sent.
    fn first_error(mut self) -> Option<Error> {
        if self.bad.is_empty() {
            self.stopped.map(|(_, e)| e)
        } else {
            Some(self.bad.swap_remove(0).1)
        }
    }
}

/// A connected, handshaken stream: its halves, the daemon's Hello answer,
/// and the bytes read past that answer.
pub(crate) type Opened = (ReadHalf, WriteHalf, HelloReply, BytesMut);

/// Connects to `addr` (over TLS when configured) and completes the
/// handshake, all within the connect timeout. Used by the pool's
/// connections and by event subscriptions (which own their connection).
pub(crate) async fn open_stream(config: &ClientConfig, addr: &str) -> Result<Opened> {
    let connect_error = |source| Error::Connect {
        addr: addr.to_owned(),
        source,
    };
    let opened = tokio::time::timeout(config.connect_timeout, async {
        let stream = TcpStream::connect(addr).await.map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let Some(tls) = &config.tls else {
            let (stream, hello, left) = handshake(stream, config).await?;
            let (read, write) = stream.into_split();
            return Ok::<Opened, Error>((
                Box::new(read) as ReadHalf,
                Box::new(write) as WriteHalf,
                hello,
                left,
            ));
        };
        let host = tls.server_name.clone().unwrap_or_else(|| host_of(addr));
        let name = ServerName::try_from(host).map_err(|e| {
            connect_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                e.to_string(),
            ))
        })?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.rustls))
            .connect(name, stream)
            .await
            .map_err(connect_error)?;
        let (stream, hello, left) = handshake(stream, config).await?;
        let (read, write) = tokio::io::split(stream);
        Ok((
            Box::new(read) as ReadHalf,
            Box::new(write) as WriteHalf,
            hello,
            left,
        ))
    })
    .await;
    match opened {
        Ok(r) => r,
        Err(_) => Err(connect_error(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no handshake within {:?}", config.connect_timeout),
        ))),
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// Sends Hello and reads its answer. Returns bytes read past the answer.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    config: &ClientConfig,
) -> Result<(S, HelloReply, BytesMut)> {
    let io = |source| Error::Connect {
        addr: config.address.clone(),
        source,
    };
    let hello = Request {
        id: HELLO_ID,
        op: Op::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            auth_token: config.auth_token.clone(),
            client_name: Some(config.client_name.clone()),
        }),
    };
    let mut out = BytesMut::new();
    encode_request(&hello, &mut out)?;
    stream.write_all(&out).await.map_err(io)?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        // The Hello answer is small; the daemon's advertised maximum is not
        // known yet, so the configured one bounds it.
        if let Some((payload, total)) = split_frame(&buf, config.max_frame_len)? {
            let response = decode_response(payload)
                .map_err(|e| Error::Protocol(format!("bad hello answer: {e}")))?;
            let _ = buf.split_to(total);
            return match response.reply {
                // The daemon answers with the version it will use; this
                // build speaks exactly one, so anything else cannot work.
                Reply::Hello(h) if h.protocol_version != PROTOCOL_VERSION => {
                    Err(Error::Protocol(format!(
                        "the daemon chose protocol version {}; this client speaks {PROTOCOL_VERSION}",
                        h.protocol_version
                    )))
                }
                Reply::Hello(h) => Ok((stream, h, buf)),
                Reply::Error(e) => Err(Error::Server(e)),
                other => Err(Error::Protocol(format!(
                    "unexpected answer to hello: {}",
                    reply_name(&other)
                ))),
            };
        }
        let n = stream.read_buf(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection during the handshake",
            )));
        }
    }
}

async fn writer(mut write: WriteHalf, outbox: Arc<Outbox>, shared: Arc<Shared>) {
    let mut out = BytesMut::with_capacity(WRITE_BATCH);
    loop {
        outbox.ready.notified().await;
        // The caller that woke us is usually followed by others that are
        // ready to run (the reader just completed their answers): let them
        // queue their frames so they share this write.
        tokio::task::yield_now().await;
        let closed = {
            let mut st = outbox.state.lock();
            std::mem::swap(&mut st.buf, &mut out);
            st.frames = 0;
            st.closed
        };
        outbox.room.notify_waiters();
        if !out.is_empty() {
            if let Err(e) = write.write_all(&out).await {
                debug!(error = %e, "writing to the daemon failed");
                outbox.close();
                shared.fail_all(|| Error::ConnectionClosed);
                return;
            }
            out.clear();
            if out.capacity() > WRITE_KEEP {
                out = BytesMut::with_capacity(WRITE_BATCH);
            }
        }
        if closed {
            let _ = write.shutdown().await;
            return;
        }
        if shared.dead.load(Ordering::Acquire) {
            outbox.close();
            return;
        }
    }
}

async fn reader(mut read: ReadHalf, mut buf: BytesMut, max_len: u32, shared: Arc<Shared>) {
    loop {
        loop {
            let frame = match split_frame(&buf, max_len) {
                Ok(Some((payload, total))) => {
                    // Session answers (most of them) are read without serde.
                    let response = sessiond_protocol::view::decode_session_response(payload)
                        .map_or_else(|| decode_response(payload), Ok);
                    Some((response, total))
                }
                Ok(None) => None,
                Err(e) => {
                    // The length prefix cannot be trusted, so neither can any
                    // byte after it: the stream is over.
                    debug!(error = %e, "bad frame header from the daemon; closing");
                    shared.fail_all(|| Error::Frame(e.clone()));
                    return;
                }
            };
            let Some((decoded, total)) = frame else { break };
            let _ = buf.split_to(total);
            match decoded {
                Ok(response) => {
                    if !deliver(&shared, response) {
                        return;
                    }
                }
                Err(e) => {
                    debug!(error = %e, "undecodable response from the daemon; closing");
                    let message = format!("undecodable response: {e}");
                    shared.fail_all(|| Error::Protocol(message.clone()));
                    return;
                }
            }
        }
        buf.reserve(READ_CHUNK);
        match read.read_buf(&mut buf).await {
            Ok(0) => {
                debug!("the daemon closed the connection");
                shared.fail_all(|| Error::ConnectionClosed);
                return;
            }
            Err(e) => {
                debug!(error = %e, "reading from the daemon failed");
                shared.fail_all(|| Error::ConnectionClosed);
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Fails the waiters whose deadline has passed, every `tick` (one timer per
/// connection instead of one per request).
async fn sweeper(shared: Arc<Shared>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if shared.dead.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let expired: Vec<Waiter> = shared
            .pending
            .lock()
            .extract_if(|_, w| w.deadline <= now)
            .map(|(_, w)| w)
            .collect();
        for w in expired {
            w.complete(Err(Error::Timeout {
                after: Duration::ZERO,
            }));
        }
    }
}

/// Completes the waiter of one response. Returns false when the daemon said
/// the connection is over (an error under request id 0).
fn deliver(shared: &Shared, response: Response) -> bool {
    let Response { id, reply } = response;
    if id == 0 {
        let error = match reply {
            Reply::Error(e) => e,
            other => WireError::new(
                ErrorCode::Internal,
                format!("unexpected {} under request id 0", reply_name(&other)),
            ),
        };
        debug!(code = %error.code, "connection-level error from the daemon; closing");
        shared.fail_all(|| Error::Server(error.clone()));
        return false;
    }
    // A missing waiter timed out already; its late answer is dropped.
    let waiter = shared.pending.lock().remove(&id);
    if let Some(waiter) = waiter {
        waiter.complete(Ok(reply));
    }
    true
}

/// A reply variant's name, for error messages.
pub(crate) fn reply_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::Error(_) => "error",
        Reply::Hello(_) => "hello",
        Reply::Pong => "pong",
        Reply::Session(_) => "session",
        Reply::MaybeSession(_) => "maybe_session",
        Reply::Touched(_) => "touched",
        Reply::Updated(_) => "updated",
        Reply::Incr(_) => "incr",
        Reply::Deleted(_) => "deleted",
        Reply::Page(_) => "page",
        Reply::Count(_) => "count",
        Reply::Stats(_) => "stats",
        Reply::Cluster(_) => "cluster",
        Reply::NotLeader(_) => "not_leader",
        Reply::StaleSession(_) => "stale_session",
        Reply::Subscribed(_) => "subscribed",
        Reply::Events(_) => "events",
        Reply::CursorExpired(_) => "cursor_expired",
    }
}
