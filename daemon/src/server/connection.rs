//! One client connection: read, split every complete frame, execute, answer.
//!
//! The loop batches syscalls both ways: one read may carry many pipelined
//! requests; all of them are executed (synchronously: store operations never
//! wait) and their answers are encoded into one buffer and written with one
//! write, every `max_in_flight` requests. Nothing more is read while a megabyte
//! of answers waits, so a client that pipelines without reading gets TCP
//! backpressure, not an unbounded buffer in the daemon.
//!
//! A complete frame whose payload does not decode is answered with an error
//! (carrying its request id where it can be read) and the connection goes on;
//! a length prefix over the maximum cannot be resynchronised, so it is answered
//! with an error under request id 0 and the connection is closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use sessiond_protocol::frame::{
    decode_request, encode_response, peek_request_header, split_frame, HEADER_LEN,
    MAX_HELLO_FRAME_LEN,
};
use sessiond_protocol::view::{
    decode_hot_request, encode_events_answer, encode_session_answer, peek_event, OpView,
    SessionHead, EVENT_TOUCHED, EVENT_UPDATED,
};
use sessiond_protocol::{
    CursorExpired, ErrorCode, EventsFrom, HelloReply, Op, Reply, Request, Response, Subscribe,
    Subscribed, WireError, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission::Ticket;
use super::dispatch::{self, Answer};
use super::Shared;
use crate::auth::{Grant, Rights};
use crate::events::{FeedCounters, ReadError, ReadPos};
use crate::log::{FsyncPolicy, Log, Progress};

/// Smallest free space handed to a read.
const READ_CHUNK: usize = 16 * 1024;
/// Answers are written once this many bytes are waiting, even mid-batch.
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Buffer bytes every connection holds outside the buffer budget: its first
/// read chunk and its first write chunk.
const BASE_BUFFERS: i64 = 2 * READ_CHUNK as i64;

/// A subscriber whose socket takes nothing for this long is closed with
/// `Lagging` (it resumes from its last cursor).
pub(crate) const EVENTS_STALL: Duration = Duration::from_secs(10);
/// A subscriber with nothing to receive gets an empty `Events` this often, so
/// both ends can tell a quiet feed from a dead connection.
pub(crate) const EVENTS_KEEPALIVE: Duration = Duration::from_secs(10);

/// The daemon's version, sent in `Hello` and `Stats`.
pub(crate) const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the connection loop ended.
enum Close {
    /// The peer closed or shutdown began: nothing more to say.
    Quiet,
    /// The peer broke the protocol; the error frame is already queued.
    Protocol,
    /// The peer subscribed to the events feed (request id, what it asked):
    /// the connection serves events from now on.
    Subscribe(u64, Subscribe),
}

pub(crate) struct Connection<'a, S> {
    stream: S,
    shared: &'a Shared,
    shutdown: CancellationToken,
    rbuf: BytesMut,
    wbuf: BytesMut,
    greeted: bool,
    /// With `--fsync always`: the log's progress, awaited before answers to
    /// writes leave.
    durable: Option<watch::Receiver<Progress>>,
    /// Answers to writes in `wbuf`: (request id, frame start, frame end).
    writes: Vec<(u64, usize, usize)>,
    /// With `--fsync always`: (end in `wbuf`, log sequence number) of each
    /// batch whose answers wait for the log to sync that far. Answers leave
    /// in order, so a batch goes out once its mark and every earlier one is
    /// durable; meanwhile the connection goes on reading and executing, so
    /// the next sync covers everything that arrived during this one.
    marks: std::collections::VecDeque<(usize, u64)>,
    /// What the connection's token allows (`None`: auth is off).
    grant: Option<Grant>,
    /// A replicated member's requests under way (at most `max_in_flight`):
    /// they wait for Raft, and the connection goes on reading meanwhile so
    /// that what arrives joins the next proposal.
    running: FuturesUnordered<BoxFuture<'a, (u64, Answer)>>,
    /// The connection's slot (see `admission`); `None` in unit tests.
    ticket: Option<Ticket>,
    /// When the connection was accepted: its `Hello` is due by
    /// `accepted + hello_timeout`.
    accepted: Instant,
    /// When the unfinished frame in `rbuf` began to arrive.
    frame_started: Option<Instant>,
    /// Buffer bytes counted for this connection: (all, beyond the first
    /// chunks).
    accounted: (i64, i64),
}

/// Which deadline a read waits under.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    Idle,
    Hello,
    Frame,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Connection<'a, S> {
    pub(crate) fn new(stream: S, shared: &'a Shared, shutdown: CancellationToken) -> Self {
        Self {
            stream,
            shared,
            shutdown,
            // Grown on first use: a stranger's connection holds a hello's
            // worth, not two chunks.
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            greeted: false,
            durable: shared
                .log
                .as_ref()
                .filter(|l| l.policy() == FsyncPolicy::Always)
                .map(|l| l.subscribe()),
            writes: Vec::new(),
            marks: std::collections::VecDeque::new(),
            grant: None,
            running: FuturesUnordered::new(),
            ticket: None,
            accepted: Instant::now(),
            frame_started: None,
            accounted: (0, 0),
        }
    }

    /// The connection holds `ticket`'s slot, accepted at `accepted`.
    pub(crate) fn admitted(mut self, ticket: Ticket, accepted: Instant) -> Self {
        self.ticket = Some(ticket);
        self.accepted = accepted;
        self
    }

    pub(crate) async fn run(mut self) {
        debug!("connected");
        let mut outcome = self.serve().await;
        // Requests already proposed get their answers.
        self.run_deferred().await;
        // Answers of the last batch (including a final error frame) go out
        // before the socket closes, so the peer learns why.
        if let Err(e) = self.flush().await {
            debug!(error = %e, "final write failed");
        }
        if let Ok(Close::Subscribe(id, sub)) = outcome {
            outcome = self.serve_events(id, sub).await.map(|()| Close::Quiet);
            if let Err(e) = self.flush().await {
                debug!(error = %e, "final write failed");
            }
        }
        match outcome {
            Ok(Close::Quiet | Close::Subscribe(..)) => debug!("closed"),
            Ok(Close::Protocol) => info!("closed after a protocol error"),
            Err(e) => debug!(error = %e, "connection error"),
        }
        let _ = self.stream.shutdown().await;
        self.rbuf = BytesMut::new();
        self.wbuf = BytesMut::new();
        self.account();
    }

    /// Brings the buffer bytes counted for this connection (in the store's
    /// memory estimate and the buffer budget) up to date.
    fn account(&mut self) {
        let all = i64::try_from(self.rbuf.capacity() + self.wbuf.capacity()).unwrap_or(i64::MAX);
        let extra = (all - BASE_BUFFERS).max(0);
        let (old_all, old_extra) = self.accounted;
        if all != old_all {
            self.shared.store.add_connection_buffers(all - old_all);
        }
        if extra != old_extra {
            self.shared.admission.add_extra(extra - old_extra);
        }
        self.accounted = (all, extra);
    }

    /// The largest frame accepted now: a `Hello`'s size until one succeeded.
    fn max_frame_len(&self) -> usize {
        let max = if self.greeted {
            self.shared.config.max_frame_len
        } else {
            MAX_HELLO_FRAME_LEN.min(self.shared.config.max_frame_len)
        };
        max as usize
    }

    /// How long the next read may wait, and under which deadline.
    fn read_limit(&self, now: Instant) -> Option<(Duration, Deadline)> {
        let config = &self.shared.config;
        let mut limit = config.idle_timeout.map(|d| (d, Deadline::Idle));
        let mut consider = |d: Duration, why: Deadline| {
            if limit.is_none_or(|(l, _)| d < l) {
                limit = Some((d, why));
            }
        };
        if !self.greeted {
            consider(
                (self.accepted + config.hello_timeout).saturating_duration_since(now),
                Deadline::Hello,
            );
        } else if let Some(started) = self.frame_started {
            consider(
                (started + config.frame_timeout).saturating_duration_since(now),
                Deadline::Frame,
            );
        }
        limit
    }

    async fn serve(&mut self) -> std::io::Result<Close> {
        loop {
            let before = self.rbuf.len();
            if let Some(close) = self.process_buffered().await? {
                return Ok(close);
            }
            // A frame's deadline runs from its first byte: a frame left
            // unfinished by the read that completed the ones before it
            // started in that read.
            if self.rbuf.is_empty() {
                self.frame_started = None;
            } else if self.rbuf.len() < before || self.frame_started.is_none() {
                self.frame_started = Some(Instant::now());
            }
            self.write_durable().await?;
            if let Some(error) = self.reserve_for_next_frame() {
                self.push(0, Reply::Error(error));
                return Ok(Close::Protocol);
            }
            self.account();
            let limit = self.read_limit(Instant::now());
            let evict = self.ticket.as_ref().map(|t| t.evict.clone());
            // While answers wait for a sync, keep reading (within the write
            // buffer's bound) and wake when the log moves.
            let waiting = !self.marks.is_empty();
            let can_read = self.wbuf.len() < WRITE_HIGH_WATER;
            let read = tokio::select! {
                () = self.shutdown.cancelled() => return Ok(Close::Quiet),
                () = evicted(evict.as_ref()) => {
                    info!("closed to make room: too many connections waiting for their hello");
                    self.push(0, Reply::Error(WireError::new(
                        ErrorCode::Unavailable,
                        "closed to make room for a newer connection: this one had not completed its hello and was the oldest such",
                    )));
                    return Ok(Close::Protocol);
                }
                r = read_with_idle(&mut self.stream, &mut self.rbuf, limit.map(|l| l.0)), if can_read => r?,
                done = self.running.next(), if !self.running.is_empty() => {
                    if let Some((id, answer)) = done {
                        self.push_answer(id, answer);
                    }
                    continue;
                }
                moved = progress_changed(self.durable.as_mut()), if waiting => {
                    if !moved {
                        // The writer is gone: answer what can be answered.
                        self.flush().await?;
                    }
                    continue;
                }
            };
            match read {
                Some(0) => {
                    if !self.rbuf.is_empty() {
                        debug!(pending = self.rbuf.len(), "peer closed mid-frame");
                    }
                    return Ok(Close::Quiet);
                }
                Some(_) => {}
                None => match limit.map(|l| l.1) {
                    Some(Deadline::Idle) | None => {
                        info!("idle timeout");
                        return Ok(Close::Quiet);
                    }
                    Some(deadline) => {
                        let config = &self.shared.config;
                        let message = if matches!(deadline, Deadline::Hello) {
                            format!(
                                "no complete hello within {} ms of connecting",
                                config.hello_timeout.as_millis()
                            )
                        } else {
                            format!(
                                "a frame was not completed within {} ms of its first byte",
                                config.frame_timeout.as_millis()
                            )
                        };
                        info!(%message, "closing");
                        self.push(
                            0,
                            Reply::Error(WireError::new(ErrorCode::TimedOut, message)),
                        );
                        return Ok(Close::Protocol);
                    }
                },
            }
        }
    }

    /// Writes the answers that may leave: all of them without `--fsync
    /// always`; otherwise those up to the last batch the log has synced.
    /// A log that cannot write turns the waiting write answers into errors
    /// (see [`Self::await_durable`]).
    async fn write_durable(&mut self) -> std::io::Result<()> {
        // Answers to this round's writes wait for the log to reach its
        // current end.
        let marked = self.marks.back().map_or(0, |m| m.0);
        if self.writes.iter().any(|w| w.2 > marked) {
            if let Some(log) = self.shared.log.as_ref() {
                self.marks.push_back((self.wbuf.len(), log.last_seq()));
            }
        }
        if self.marks.is_empty() {
            return self.flush().await;
        }
        let (durable, failed) = match self.durable.as_ref() {
            Some(rx) => {
                let p = rx.borrow();
                (p.durable, p.error.is_some())
            }
            None => (u64::MAX, false),
        };
        if failed {
            // Every waiting write answer becomes an error, now.
            return self.flush().await;
        }
        let mut ready = 0;
        while let Some(&(end, seq)) = self.marks.front() {
            if seq > durable {
                break;
            }
            ready = end;
            self.marks.pop_front();
        }
        if self.marks.is_empty() {
            // Everything is durable, including answers after the last mark.
            self.writes.clear();
            return self.flush().await;
        }
        if ready == 0 {
            return Ok(());
        }
        self.stream.write_all(&self.wbuf[..ready]).await?;
        self.wbuf.advance(ready);
        self.writes.retain(|w| w.2 > ready);
        for w in &mut self.writes {
            w.1 -= ready;
            w.2 -= ready;
        }
        for m in &mut self.marks {
            m.0 -= ready;
        }
        Ok(())
    }

    /// Executes every complete frame in the read buffer, writing answers out
    /// whenever `max_in_flight` of them (or a megabyte) are waiting.
    async fn process_buffered(&mut self) -> std::io::Result<Option<Close>> {
        // The buffer is taken out so frames can be borrowed from it while
        // `self` queues answers; it goes back whatever happens.
        let mut buf = std::mem::take(&mut self.rbuf);
        let mut consumed = 0;
        let result = self.process_frames(&buf, &mut consumed).await;
        buf.advance(consumed);
        self.rbuf = buf;
        result
    }

    async fn process_frames(
        &mut self,
        buf: &[u8],
        consumed: &mut usize,
    ) -> std::io::Result<Option<Close>> {
        let max_in_flight = self.shared.config.max_in_flight;
        let mut in_flight = 0;
        loop {
            // Before `Hello` only a frame of a Hello's size is accepted.
            let max_len = u32::try_from(self.max_frame_len()).unwrap_or(u32::MAX);
            let rest = buf.get(*consumed..).unwrap_or_default();
            let (payload, total) = match split_frame(rest, max_len) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(None),
                Err(e) => {
                    warn!(error = %e, "bad frame header; closing");
                    let error = WireError::new(ErrorCode::TooLarge, e.to_string());
                    self.run_deferred().await;
                    self.push(0, Reply::Error(error));
                    return Ok(Some(Close::Protocol));
                }
            };
            *consumed += total;
            if let Some(close) = self.handle_payload(payload).await {
                self.run_deferred().await;
                return Ok(Some(close));
            }
            if self.running.len() >= max_in_flight {
                if let Some((id, answer)) = self.running.next().await {
                    self.push_answer(id, answer);
                }
            }
            in_flight += 1;
            if self.wbuf.len() >= WRITE_HIGH_WATER {
                // The hard bound: everything out, durable or not yet.
                self.run_deferred().await;
                self.flush().await?;
                in_flight = 0;
            } else if in_flight >= max_in_flight {
                // Send what may leave now, so a deep pipeline gets its first
                // answers while the rest is executed.
                self.write_durable().await?;
                in_flight = 0;
            }
        }
    }

    /// Decodes and executes one request, queueing its answer.
    async fn handle_payload(&mut self, payload: &[u8]) -> Option<Close> {
        if self.greeted && self.shared.cluster.is_none() {
            if let Some((id, view)) = decode_hot_request(payload) {
                self.handle_hot(id, view).await;
                return None;
            }
        }
        let request = match decode_request(payload) {
            Ok(r) => r,
            Err(e) => {
                let header = peek_request_header(payload);
                let id = header.map_or(0, |(id, _)| id);
                let code = match header {
                    Some((_, tag)) if tag >= Op::COUNT => ErrorCode::UnknownOperation,
                    _ => ErrorCode::InvalidRequest,
                };
                debug!(code = %code, "undecodable request");
                self.push(id, Reply::Error(WireError::new(code, e.to_string())));
                // Before Hello nothing else is allowed, not even a bad frame.
                return (!self.greeted).then_some(Close::Protocol);
            }
        };
        let Request { id, op } = request;
        if !self.greeted {
            return self.hello(id, op);
        }
        if let Some(grant) = &self.grant {
            if let Err(why) = grant.allows(&op) {
                self.refuse(id, &grant.name.clone(), op.name(), why);
                return None;
            }
        }
        if let Op::Subscribe(sub) = op {
            if self.shared.cluster.is_none() {
                return Some(Close::Subscribe(id, sub));
            }
            let answer = dispatch::execute(self.shared, Op::Subscribe(sub));
            self.push_answer(id, answer);
            return None;
        }
        if let Some(cluster) = self.shared.cluster.clone() {
            // A member: requests run concurrently (their proposals share
            // Raft rounds, see `cluster::batch`), answered by id as they end.
            let shared = self.shared;
            self.running.push(Box::pin(async move {
                let tag = dispatch::op_index(&op);
                let started = std::time::Instant::now();
                let answer = cluster.execute(shared, op).await;
                shared
                    .metrics
                    .record(tag, answer.error(), started.elapsed());
                (id, answer)
            }));
            return None;
        }
        let is_write = dispatch::is_write(&op);
        if is_write {
            Self::make_room(self.shared).await;
        }
        let write = self.durable.is_some() && is_write;
        let answer = dispatch::execute(self.shared, op);
        let applied = answer.error().is_none();
        let start = self.wbuf.len();
        self.push_answer(id, answer);
        if write && applied {
            self.writes.push((id, start, self.wbuf.len()));
        }
        None
    }

    /// Executes a `Create` or `Get` decoded in place (a standalone daemon's
    /// hot path: no allocation for the request, the attributes stored and
    /// answered as they came), with the checks, metrics and durability of
    /// the general path.
    async fn handle_hot(&mut self, id: u64, view: OpView<'_>) {
        let (name, namespace, rights, tag) = match &view {
            OpView::Create(c) => ("create", c.namespace, Rights::Write, 2),
            OpView::Get(g) if g.touch => ("get", g.namespace, Rights::Write, 3),
            OpView::Get(g) => ("get", g.namespace, Rights::Read, 3),
        };
        if let Some(grant) = &self.grant {
            if let Err(why) = grant.allows_in(name, Some(namespace), rights) {
                self.refuse(id, &grant.name.clone(), name, why);
                return;
            }
        }
        let is_write = matches!(view, OpView::Create(_));
        if is_write {
            Self::make_room(self.shared).await;
        }
        let shared = self.shared;
        let started = Instant::now();
        let result = match view {
            OpView::Create(c) => shared.store.create_encoded(&c).map(Some),
            OpView::Get(g) => shared.store.get_raw(g.namespace, g.id, g.touch),
        };
        let took = started.elapsed();
        let start = self.wbuf.len();
        match result {
            Ok(Some(raw)) => {
                shared.metrics.record(tag, None, took);
                self.push_raw(id, !is_write, &raw.head(namespace), &raw.attrs);
                if is_write && self.durable.is_some() {
                    self.writes.push((id, start, self.wbuf.len()));
                }
            }
            Ok(None) => {
                shared.metrics.record(tag, None, took);
                self.push(id, Reply::MaybeSession(None));
            }
            Err(e) => {
                let reply = dispatch::store_error(&e);
                let code = match &reply {
                    Reply::Error(w) => Some(w.code),
                    _ => None,
                };
                shared.metrics.record(tag, code, took);
                self.push(id, reply);
            }
        }
    }

    /// Answers a request the connection's token may not make.
    fn refuse(&mut self, id: u64, token: &str, op: &str, why: String) {
        debug!(token = %token, op = op, "refused by the token's scope");
        self.push(
            id,
            Reply::Error(WireError::new(ErrorCode::Unauthorized, why)),
        );
    }

    /// Before a write: when a burst outran the log's reserved disk space (or
    /// a segment is being rolled), holds the write back a moment rather than
    /// refuse it; past the wait it is refused as before.
    async fn make_room(shared: &Shared) {
        if let Some(log) = shared.log.as_ref().filter(|l| l.behind_reservations()) {
            log.wait_for_room(ROOM_WAIT).await;
        }
    }

    /// Serves the events feed to a subscriber until it leaves, the daemon
    /// stops, or it stops reading (see [`EVENTS_STALL`]). Events come from the
    /// feed's ring or its files (read off the async workers); the subscriber
    /// holds at most one read batch in the daemon's memory.
    async fn serve_events(&mut self, id: u64, sub: Subscribe) -> std::io::Result<()> {
        let Some(feed) = self.shared.store.events().cloned() else {
            self.push(
                id,
                Reply::Error(WireError::new(
                    ErrorCode::InvalidRequest,
                    "the events feed is off on this daemon (--events-retention 0)",
                )),
            );
            return Ok(());
        };
        // What the subscription may see: the namespaces it names (each one
        // the token may read), or all the token may read.
        let allowed = self.grant.as_ref().and_then(|g| g.namespaces.clone());
        let only: Option<Vec<String>> = if sub.namespaces.is_empty() {
            allowed
        } else {
            if let Some(grant) = &self.grant {
                for ns in &sub.namespaces {
                    if let Err(why) = grant.allows_in("subscribe", Some(ns), Rights::Read) {
                        let name = grant.name.clone();
                        self.refuse(id, &name, "subscribe", why);
                        return Ok(());
                    }
                }
            }
            Some(sub.namespaces.clone())
        };
        // "Now" is after the last event recorded, published or not: an
        // event recorded before the subscription but still on its way to the
        // files is not the subscriber's.
        let next = feed.next();
        let recorded = next.saturating_sub(1);
        let mut after = match sub.from {
            EventsFrom::Now => recorded,
            EventsFrom::After(c) => c,
            EventsFrom::Oldest => feed.oldest().map_or(recorded, |o| o - 1),
        };
        if after > recorded {
            self.push(
                id,
                Reply::Error(WireError::new(
                    ErrorCode::InvalidRequest,
                    format!("cursor {after} is past the feed's last event ({recorded})"),
                )),
            );
            return Ok(());
        }
        let oldest = feed.oldest();
        if let Some(oldest) = oldest.filter(|o| after + 1 < *o && after < recorded) {
            self.push(id, cursor_expired(after, oldest));
            return Ok(());
        }
        self.push(
            id,
            Reply::Subscribed(Subscribed {
                oldest: oldest.unwrap_or(0),
                next,
            }),
        );
        self.flush().await?;
        let counters = &feed.counters;
        counters
            .subscribers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _leave = scopeguard(|| {
            counters
                .subscribers
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
        debug!(after, "subscriber started");
        let mut changes = feed.watch();
        let mut pos = ReadPos::default();
        let mut last_write = Instant::now();
        let mut scratch = [0u8; 512];
        // A batch of events per frame, well within the frame maximum.
        let per_frame = (self.shared.config.max_frame_len as usize / 1024).max(1);
        loop {
            let read = if feed.in_ring(after) {
                feed.read_after(after, &mut pos)
            } else {
                let f = Arc::clone(&feed);
                let mut p = pos;
                let (r, p) = tokio::task::spawn_blocking(move || {
                    let r = f.read_after(after, &mut p);
                    (r, p)
                })
                .await
                .map_err(|e| std::io::Error::other(format!("events read panicked: {e}")))?;
                pos = p;
                r
            };
            let batch = match read {
                Ok(batch) => batch,
                Err(ReadError::Expired { oldest }) => {
                    self.push(id, cursor_expired(after, oldest));
                    return Ok(());
                }
            };
            if let Some((last, _)) = batch.last() {
                after = *last;
                // Filtered and sent as they are stored: each event's
                // namespace and kind are read in place, nothing is decoded.
                let wanted: Vec<&[u8]> = batch
                    .iter()
                    .map(|(_, b)| &b[..])
                    .filter(|b| {
                        peek_event(b).is_some_and(|head| {
                            only.as_ref()
                                .is_none_or(|o| o.iter().any(|n| n == head.namespace))
                                && match head.kind {
                                    EVENT_UPDATED => sub.updates,
                                    EVENT_TOUCHED => sub.touches,
                                    _ => true,
                                }
                        })
                    })
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                let sent = wanted.len() as u64;
                for chunk in wanted.chunks(per_frame) {
                    if let Err(e) = encode_events_answer(id, chunk, &mut self.wbuf) {
                        warn!(error = %e, "cannot encode events");
                    }
                }
                if !self.write_events(counters).await? {
                    return Ok(());
                }
                counters
                    .sent_total
                    .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
                last_write = Instant::now();
                continue;
            }
            let keepalive = EVENTS_KEEPALIVE.saturating_sub(last_write.elapsed());
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(keepalive) => {
                    self.push(id, Reply::Events(Vec::new()));
                    if !self.write_events(counters).await? {
                        return Ok(());
                    }
                    last_write = Instant::now();
                }
                // Nothing more is read after `Subscribe`: bytes are dropped,
                // a close ends the subscription.
                n = self.stream.read(&mut scratch) => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Writes what a subscriber has waiting; `false` (after counting it and
    /// trying to tell it) when its socket stayed unwritable past
    /// [`EVENTS_STALL`].
    async fn write_events(&mut self, counters: &FeedCounters) -> std::io::Result<bool> {
        let wrote = tokio::time::timeout(EVENTS_STALL, self.stream.write_all(&self.wbuf)).await;
        match wrote {
            Ok(r) => {
                r?;
                self.wbuf.clear();
                Ok(true)
            }
            Err(_) => {
                counters
                    .lagging_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                info!("closing an events subscriber that stopped reading");
                // Its socket is full: the error goes out only if it drains
                // at once.
                self.wbuf.clear();
                self.push(
                    0,
                    Reply::Error(WireError::new(
                        ErrorCode::Lagging,
                        format!(
                            "this subscriber read nothing for {} s; subscribe again from the last cursor received",
                            EVENTS_STALL.as_secs()
                        ),
                    )),
                );
                let _ = tokio::time::timeout(
                    Duration::from_millis(100),
                    self.stream.write_all(&self.wbuf),
                )
                .await;
                self.wbuf.clear();
                Ok(false)
            }
        }
    }

    /// Waits for every request under way and queues its answer.
    async fn run_deferred(&mut self) {
        while let Some((id, answer)) = self.running.next().await {
            self.push_answer(id, answer);
        }
    }

    /// Queues an operation's answer.
    fn push_answer(&mut self, id: u64, answer: Answer) {
        match answer {
            Answer::Reply(reply) => self.push(id, reply),
            Answer::Session {
                maybe,
                namespace,
                raw,
            } => self.push_raw(id, maybe, &raw.head(&namespace), &raw.attrs),
            Answer::Encoded { maybe, head, attrs } => {
                let h = SessionHead {
                    namespace: &head.namespace,
                    id: head.id,
                    owner: head.owner.as_deref(),
                    created_at_ms: head.created_at_ms,
                    last_active_ms: head.last_active_ms,
                    expires_at_ms: head.expires_at_ms,
                    ttl: head.ttl,
                    version: head.version,
                };
                self.push_raw(id, maybe, &h, &attrs);
            }
        }
    }

    fn hello(&mut self, id: u64, op: Op) -> Option<Close> {
        let Op::Hello(hello) = op else {
            self.push(
                id,
                Reply::Error(WireError::new(
                    ErrorCode::HelloRequired,
                    format!("the first request must be hello, not {}", op.name()),
                )),
            );
            return Some(Close::Protocol);
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            self.push(
                id,
                Reply::Error(WireError::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "protocol version {} is not supported; this daemon speaks {PROTOCOL_VERSION}",
                        hello.protocol_version
                    ),
                )),
            );
            return Some(Close::Protocol);
        }
        if let Some(table) = &self.shared.config.auth {
            let grant = hello
                .auth_token
                .as_ref()
                .and_then(|t| table.authenticate(&t.0));
            let Some(grant) = grant else {
                let why = if hello.auth_token.is_some() {
                    "the auth token is not valid"
                } else {
                    "this daemon requires an auth token in hello"
                };
                info!(reason = why, "authentication failed");
                self.push(
                    id,
                    Reply::Error(WireError::new(ErrorCode::Unauthorized, why)),
                );
                return Some(Close::Protocol);
            };
            debug!(token = %grant.name, "authenticated");
            self.grant = Some(grant);
        }
        let client_name = hello.client_name.as_deref().unwrap_or("");
        let client_name: String = client_name.chars().take(64).collect();
        debug!(client_name, "hello");
        self.greeted = true;
        if let Some(ticket) = &mut self.ticket {
            ticket.greeted();
        }
        self.push(
            id,
            Reply::Hello(HelloReply {
                protocol_version: PROTOCOL_VERSION,
                server_version: SERVER_VERSION.to_owned(),
                max_frame_len: self.shared.config.max_frame_len,
            }),
        );
        None
    }

    /// Queues a session answer, its attributes spliced in as stored.
    /// Queues a session answer with its attributes already encoded.
    fn push_raw(&mut self, id: u64, maybe: bool, head: &SessionHead<'_>, attrs: &[u8]) {
        let max = self.shared.config.max_frame_len as usize;
        let start = self.wbuf.len();
        match encode_session_answer(id, maybe, head, attrs, &mut self.wbuf) {
            Ok(()) if self.wbuf.len() - start - HEADER_LEN <= max => {}
            Ok(()) => {
                self.wbuf.truncate(start);
                self.push(id, Reply::Error(too_large(max)));
            }
            Err(e) => {
                warn!(error = %e, "cannot encode a reply");
                self.push(id, Reply::Error(too_large(max)));
            }
        }
    }

    /// Queues an answer. One the peer could not accept (over its frame
    /// maximum) is replaced by a `TooLarge` error under the same id.
    fn push(&mut self, id: u64, reply: Reply) {
        let max = self.shared.config.max_frame_len as usize;
        let start = self.wbuf.len();
        let result = encode_response(&Response { id, reply }, &mut self.wbuf);
        let over = match result {
            Ok(()) => self.wbuf.len() - start - HEADER_LEN > max,
            Err(ref e) => {
                warn!(error = %e, "cannot encode a reply");
                true
            }
        };
        if over {
            self.wbuf.truncate(start);
            let fallback = Response {
                id,
                reply: Reply::Error(too_large(max)),
            };
            if let Err(e) = encode_response(&fallback, &mut self.wbuf) {
                warn!(error = %e, "cannot encode an error reply");
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        self.await_durable().await;
        self.marks.clear();
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        // Keep a buffer that grew for one large answer from pinning memory.
        if self.wbuf.capacity() > 4 * WRITE_HIGH_WATER {
            self.wbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        Ok(())
    }

    /// Holds the answers to writes until the log has synced them (group
    /// commit: every connection waiting shares the same fsync). If the log
    /// cannot write, those answers become `Unavailable` errors; the others
    /// in the batch go out unchanged.
    async fn await_durable(&mut self) {
        if self.writes.is_empty() {
            return;
        }
        let (Some(rx), Some(log)) = (self.durable.as_mut(), self.shared.log.as_ref()) else {
            return;
        };
        let seq = log.last_seq();
        if let Err(why) = Log::wait_durable(rx, seq).await {
            let writes = std::mem::take(&mut self.writes);
            let old = std::mem::replace(&mut self.wbuf, BytesMut::with_capacity(READ_CHUNK));
            let mut copied = 0;
            for (id, start, end) in writes {
                self.wbuf.extend_from_slice(&old[copied..start]);
                copied = end;
                let error = WireError::new(
                    ErrorCode::Unavailable,
                    format!("the write is in memory but not durable: {why}"),
                );
                self.push(id, Reply::Error(error));
            }
            self.wbuf.extend_from_slice(&old[copied..]);
        }
        self.writes.clear();
    }

    /// Makes room for the next read. When a frame header is in, room for the
    /// whole frame is reserved (its length was checked against the maximum by
    /// `split_frame` already), if the connection buffer budget allows it;
    /// otherwise one chunk. The error refuses a frame over the budget.
    fn reserve_for_next_frame(&mut self) -> Option<WireError> {
        let need = if self.rbuf.len() >= HEADER_LEN {
            let mut len = [0u8; HEADER_LEN];
            len.copy_from_slice(&self.rbuf[..HEADER_LEN]);
            let len = (u32::from_be_bytes(len) as usize).min(self.max_frame_len());
            (HEADER_LEN + len)
                .saturating_sub(self.rbuf.len())
                .max(READ_CHUNK)
        } else if self.greeted {
            READ_CHUNK
        } else {
            HEADER_LEN + MAX_HELLO_FRAME_LEN as usize
        };
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * WRITE_HIGH_WATER {
            self.rbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        let spare = self.rbuf.capacity() - self.rbuf.len();
        if need > spare {
            let after = self.rbuf.len() + need + self.wbuf.capacity();
            let wanted = u64::try_from(after)
                .unwrap_or(u64::MAX)
                .saturating_sub(BASE_BUFFERS as u64);
            let held = u64::try_from(self.accounted.1).unwrap_or(0);
            if !self.shared.admission.reserve_extra(held, wanted) {
                warn!(
                    frame_bytes = need,
                    "frame refused: connection buffers are at --max-buffer-memory"
                );
                return Some(WireError::new(
                    ErrorCode::OutOfMemory,
                    format!(
                        "connection buffers are at their limit of {} bytes (--max-buffer-memory); send smaller frames or try again later",
                        self.shared.config.max_buffer_memory
                    ),
                ));
            }
        }
        self.rbuf.reserve(need);
        None
    }
}

/// Waits until the connection is closed to make room (never, once greeted).
/// How long a write waits for the log to reserve disk space ahead of it
/// before it is refused (a segment roll syncs the old segment first).
const ROOM_WAIT: Duration = Duration::from_secs(2);

async fn evicted(token: Option<&CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// The error that replaces an answer over the peer's frame maximum.
fn too_large(max: usize) -> WireError {
    WireError::new(
        ErrorCode::TooLarge,
        format!("the reply exceeds the frame maximum of {max} bytes; ask for less (e.g. a smaller page)"),
    )
}

/// Waits for the log's progress to move; false if the log writer is gone.
async fn progress_changed(rx: Option<&mut watch::Receiver<Progress>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Reads into `buf`; `None` when `idle` passes first.
async fn read_with_idle<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    idle: Option<Duration>,
) -> std::io::Result<Option<usize>> {
    match idle {
        Some(limit) => match tokio::time::timeout(limit, stream.read_buf(buf)).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        },
        None => stream.read_buf(buf).await.map(Some),
    }
}

/// Tells a connection over the cap why it is being closed.
pub(crate) async fn refuse(mut stream: TcpStream, max_connections: usize) {
    warn!(
        max_connections,
        "connection refused: at the connection limit"
    );
    let mut buf = BytesMut::new();
    let response = Response {
        id: 0,
        reply: Reply::Error(WireError::new(
            ErrorCode::Unavailable,
            format!("the daemon is at its limit of {max_connections} connections"),
        )),
    };
    if encode_response(&response, &mut buf).is_ok() {
        // Best effort: the peer may already be gone; a short timeout keeps a
        // peer that does not read from holding this task.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&buf)).await;
    }
    let _ = stream.shutdown().await;
}

/// The answer to a subscription whose cursor is older than the feed holds.
fn cursor_expired(requested: u64, oldest: u64) -> Reply {
    Reply::CursorExpired(CursorExpired { requested, oldest })
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
