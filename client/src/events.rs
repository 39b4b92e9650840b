//! Session events: [`Client::subscribe`](crate::Client::subscribe) and the
//! [`EventStream`] it returns.
//!
//! A subscription owns its connection (not one of the pool's: after
//! `Subscribe` the daemon reads nothing more from it, it only streams
//! [`Reply::Events`] frames). A task reads the frames and hands the events to
//! the stream through a bounded channel: when the consumer stops polling, the
//! channel fills, the task stops reading, and TCP backpressure reaches the
//! daemon (which closes a subscriber too slow for too long with `Lagging`).
//!
//! The task resubscribes by itself, with the client's capped exponential
//! backoff and jitter, when the connection drops (end of file, an I/O error,
//! `Lagging` or another retryable error from the daemon, or no frame at all
//! for [`SubscribeOptions::idle_timeout`]): from the last cursor received
//! (`EventsFrom::After(last)`), or from the original `from` if none was
//! received yet. Delivery is at least once on the wire; events at or below
//! the last cursor handed out are dropped, so the stream yields each cursor
//! once, in increasing order.
//!
//! The stream yields an error and ends on what resubscribing cannot fix:
//! [`Error::CursorExpired`] (the resume point is older than what the daemon
//! retains), an error code such as `Unauthorized` or `InvalidRequest` (also
//! `UnknownOperation` from a daemon without events), a refused handshake, or
//! a protocol mismatch.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use sessiond_protocol::frame::{
    decode_response, encode_request, split_frame, ABSOLUTE_MAX_FRAME_LEN,
};
use sessiond_protocol::{
    DeleteReason, ErrorCode, Event, EventKind, EventsFrom, Op, Reply, Request, Subscribe,
    Subscribed, WireError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::client::backoff;
use crate::config::ClientConfig;
use crate::connection::{open_stream, ReadHalf, HELLO_ID, READ_CHUNK};
use crate::error::{Error, Result};

/// The interval at which the daemon sends an empty `Events` frame to an idle
/// subscriber.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default [`SubscribeOptions::idle_timeout`]: three keepalive intervals.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`SubscribeOptions::buffer`].
pub const DEFAULT_BUFFER: usize = 1024;
/// Request id of the `Subscribe` on a subscription's connection (the
/// handshake took [`HELLO_ID`]).
const SUBSCRIBE_ID: u64 = HELLO_ID + 1;

/// What to subscribe to, for [`Client::subscribe`](crate::Client::subscribe).
///
/// ```
/// use std::time::Duration;
/// use sessiond_client::{EventsFrom, Op, SubscribeOptions};
///
/// let options = SubscribeOptions::new()
///     .namespace("app")
///     .namespace("admin")
///     .updates(true)
///     .after(41)
///     .idle_timeout(Duration::from_secs(45));
/// match options.into_op() {
///     Op::Subscribe(s) => {
///         assert_eq!(s.namespaces, ["app", "admin"]);
///         assert!(s.updates && !s.touches);
///         assert_eq!(s.from, EventsFrom::After(41));
///     }
///     _ => unreachable!(),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    namespaces: Vec<String>,
    updates: bool,
    touches: bool,
    from: EventsFrom,
    idle_timeout: Duration,
    buffer: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl SubscribeOptions {
    /// Every namespace the client's token may read; created, rotated,
    /// deleted and expired events only; from now on.
    #[must_use]
    pub fn new() -> Self {
        Self {
            namespaces: Vec::new(),
            updates: false,
            touches: false,
            from: EventsFrom::Now,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            buffer: DEFAULT_BUFFER,
        }
    }

    /// Watch this namespace (repeat for several; none: every namespace the
    /// token may read).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespaces.push(namespace.into());
        self
    }

    /// Watch these namespaces (added to any given before).
    #[must_use]
    pub fn namespaces<I, S>(mut self, namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.namespaces
            .extend(namespaces.into_iter().map(Into::into));
        self
    }

    /// Also `Updated` events (attribute and ttl changes): there are many.
    #[must_use]
    pub fn updates(mut self, on: bool) -> Self {
        self.updates = on;
        self
    }

    /// Also `Touched` events (sliding deadlines moved): there are more.
    #[must_use]
    pub fn touches(mut self, on: bool) -> Self {
        self.touches = on;
        self
    }

    /// Where to start (default [`EventsFrom::Now`]).
    #[must_use]
    pub fn from(mut self, from: EventsFrom) -> Self {
        self.from = from;
        self
    }

    /// Start after `cursor` (the last one received before): `from(EventsFrom::After(cursor))`.
    #[must_use]
    pub fn after(self, cursor: u64) -> Self {
        self.from(EventsFrom::After(cursor))
    }

    /// Start with every event the daemon still holds: `from(EventsFrom::Oldest)`.
    #[must_use]
    pub fn oldest(self) -> Self {
        self.from(EventsFrom::Oldest)
    }

    /// With no frame at all from the daemon for this long (it sends a
    /// keepalive every [`KEEPALIVE_INTERVAL`] when idle), the connection is
    /// taken for dead and the subscription resumes on a new one. Default
    /// [`DEFAULT_IDLE_TIMEOUT`].
    #[must_use]
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// Events read ahead of the consumer (at least 1; default
    /// [`DEFAULT_BUFFER`]). Past it reading pauses and the daemon's writes
    /// wait on TCP.
    #[must_use]
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// The namespaces to watch.
    #[must_use]
    pub fn namespace_list(&self) -> &[String] {
        &self.namespaces
    }

    /// The `Subscribe` operation these options describe.
    #[must_use]
    pub fn into_op(self) -> Op {
        Op::Subscribe(self.subscribe(self.from))
    }

    fn subscribe(&self, from: EventsFrom) -> Subscribe {
        Subscribe {
            namespaces: self.namespaces.clone(),
            updates: self.updates,
            touches: self.touches,
            from,
        }
    }
}

/// Where a subscription stands: the last cursor handed out, so that a
/// resubscription resumes after it and replayed events are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    start: EventsFrom,
    last: Option<u64>,
}

impl Resume {
    /// A subscription that started at `start` and has received nothing.
    #[must_use]
    pub fn new(start: EventsFrom) -> Self {
        Self { start, last: None }
    }

    /// Where a (re)subscription starts: after the last cursor received, or
    /// the original start if none was.
    #[must_use]
    pub fn from(&self) -> EventsFrom {
        self.last.map_or(self.start, EventsFrom::After)
    }

    /// Records the daemon's `Subscribed` answer: a subscription that
    /// started "now" and has received nothing yet resumes after the cursor
    /// the daemon took as "now", not from a later "now" (which would skip
    /// the events in between).
    pub fn subscribed(&mut self, next: u64) {
        if self.last.is_none() && self.start == EventsFrom::Now {
            self.start = EventsFrom::After(next.saturating_sub(1));
        }
    }

    /// The last cursor received, if any.
    #[must_use]
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Whether an event with `cursor` is new (and records it): false for a
    /// cursor at or below the last one received, a duplicate of a replay.
    pub fn accept(&mut self, cursor: u64) -> bool {
        if self.last.is_some_and(|last| cursor <= last) {
            return false;
        }
        self.last = Some(cursor);
        true
    }
}

/// The stream of events of a subscription, from
/// [`Client::subscribe`](crate::Client::subscribe): a
/// [`futures_core::Stream`] of `Result<Event, Error>`.
///
/// It ends only after yielding an error that resubscribing cannot fix (see
/// the [module documentation](self)); connection trouble is handled inside.
/// Dropping it closes its connection.
///
/// With `futures::StreamExt::next`, or [`EventStream::next_event`]:
///
/// ```no_run
/// use sessiond_client::{Client, Error, EventKind, SubscribeOptions};
///
/// # async fn demo(client: Client) -> Result<(), Error> {
/// let mut events = client.subscribe(SubscribeOptions::new().namespace("app"));
/// while let Some(event) = events.next_event().await {
///     let event = event?;
///     if let EventKind::Deleted { reason } = event.kind {
///         println!("{} {} deleted ({reason:?})", event.cursor, event.namespace);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Result<Event>>,
    task: JoinHandle<()>,
    /// The daemon's first `Subscribed` answer, until taken.
    first: Option<oneshot::Receiver<Subscribed>>,
    confirmed: Option<Subscribed>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventStream {
    /// Starts the subscription task. Must be called within a tokio runtime.
    pub(crate) fn start(
        config: ClientConfig,
        seeds: Vec<String>,
        target: String,
        options: SubscribeOptions,
    ) -> Self {
        let (tx, rx) = mpsc::channel(options.buffer);
        let (first_tx, first) = oneshot::channel();
        let task = tokio::spawn(run(config, seeds, target, options, tx, first_tx));
        Self {
            rx,
            task,
            first: Some(first),
            confirmed: None,
        }
    }

    /// Waits until the daemon has accepted the subscription (its first
    /// `Subscribed` answer: the oldest cursor it holds and the next it will
    /// give), connecting and retrying as long as that takes; `None` if the
    /// subscription ended first (the stream then yields why). For callers
    /// that must answer differently before events start, such as an HTTP
    /// endpoint; bound the wait with a timeout if the daemon may be down.
    pub async fn subscribed(&mut self) -> Option<Subscribed> {
        if let Some(rx) = self.first.take() {
            self.confirmed = rx.await.ok();
        }
        self.confirmed
    }

    /// The next event, or `None` once the stream has ended (after an error).
    pub async fn next_event(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// What a subscription's connections share: the stream's channel, the
/// backoff's attempt count, and the notice of the first `Subscribed`.
struct Link<'a> {
    tx: &'a mpsc::Sender<Result<Event>>,
    attempt: &'a mut u32,
    first: &'a mut Option<oneshot::Sender<Subscribed>>,
}

/// How one subscription connection ended.
enum Ended {
    /// Resubscribe after a pause (short if the subscription was up: the
    /// backoff restarts from its minimum once the daemon answers).
    Retry(String),
    /// Resubscribe at once, to this address (a `NotLeader` answer).
    Redirect(String),
    /// Yield this error and end.
    Fatal(Error),
    /// The stream was dropped.
    Closed,
}

/// Whether the daemon's error `code` ends a subscription (or it is resumed).
fn is_fatal(code: ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::Lagging | ErrorCode::Unavailable | ErrorCode::OutOfMemory | ErrorCode::TimedOut
    )
}

/// Whether a failure to open the connection ends the subscription.
fn open_is_fatal(e: &Error) -> bool {
    match e {
        Error::Server(w) => is_fatal(w.code),
        Error::Protocol(_) | Error::Encode(_) | Error::InvalidArgument(_) => true,
        _ => false,
    }
}

async fn run(
    config: ClientConfig,
    seeds: Vec<String>,
    mut target: String,
    options: SubscribeOptions,
    tx: mpsc::Sender<Result<Event>>,
    first: oneshot::Sender<Subscribed>,
) {
    let mut resume = Resume::new(options.from);
    let mut attempt: u32 = 0;
    let mut first = Some(first);
    loop {
        let mut link = Link {
            tx: &tx,
            attempt: &mut attempt,
            first: &mut first,
        };
        let ended = subscribe_once(&config, &target, &options, &mut resume, &mut link).await;
        match ended {
            Ended::Closed => return,
            Ended::Fatal(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Ended::Redirect(to) => {
                debug!(from = %target, to = %to, "subscription follows the leader");
                target = to;
            }
            Ended::Retry(why) => {
                debug!(addr = %target, attempt, why = %why, last = ?resume.last(), "resubscribing");
                if seeds.len() > 1 && attempt > 0 {
                    // Twice in a row without an answer: try the next member.
                    let at = seeds.iter().position(|s| *s == target);
                    target = seeds[at.map_or(0, |i| (i + 1) % seeds.len())].clone();
                }
                let delay = backoff(&config, attempt);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}

/// One connection's worth of a subscription: open, subscribe, stream.
async fn subscribe_once(
    config: &ClientConfig,
    addr: &str,
    options: &SubscribeOptions,
    resume: &mut Resume,
    link: &mut Link<'_>,
) -> Ended {
    let tx = link.tx;
    let opened = tokio::select! {
        r = open_stream(config, addr) => r,
        () = tx.closed() => return Ended::Closed,
    };
    let (mut read, mut write, server, mut buf) = match opened {
        Ok(o) => o,
        Err(e) if open_is_fatal(&e) => return Ended::Fatal(e),
        Err(e) => return Ended::Retry(e.to_string()),
    };
    let request = Request {
        id: SUBSCRIBE_ID,
        op: Op::Subscribe(options.subscribe(resume.from())),
    };
    let mut out = BytesMut::new();
    if let Err(e) = encode_request(&request, &mut out) {
        return Ended::Fatal(e.into());
    }
    match tokio::time::timeout(config.request_timeout, write.write_all(&out)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Ended::Retry(format!("sending subscribe: {e}"));
        }
        Err(_) => return Ended::Retry("sending subscribe timed out".into()),
    }
    let max_len = server.max_frame_len.clamp(1, ABSOLUTE_MAX_FRAME_LEN);
    let mut subscribed = false;
    loop {
        // Every whole frame in the buffer first.
        loop {
            let (payload, total) = match split_frame(&buf, max_len) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    return Ended::Retry(format!("bad frame: {e}"));
                }
            };
            let response = match decode_response(payload) {
                Ok(r) => r,
                Err(e) => {
                    return Ended::Fatal(Error::Protocol(format!(
                        "undecodable response to subscribe: {e}"
                    )))
                }
            };
            let _ = buf.split_to(total);
            if response.id != SUBSCRIBE_ID && response.id != 0 {
                continue;
            }
            match response.reply {
                Reply::Subscribed(s) => {
                    subscribed = true;
                    resume.subscribed(s.next);
                    *link.attempt = 0;
                    if let Some(first) = link.first.take() {
                        let _ = first.send(s);
                    }
                }
                Reply::Events(events) => {
                    for event in events {
                        if !resume.accept(event.cursor) {
                            continue;
                        }
                        if tx.send(Ok(event)).await.is_err() {
                            return Ended::Closed;
                        }
                    }
                }
                Reply::CursorExpired(c) => {
                    return Ended::Fatal(Error::CursorExpired {
                        requested: c.requested,
                        oldest: c.oldest,
                    })
                }
                Reply::NotLeader(nl) if !subscribed => {
                    return match nl.leader_addr {
                        Some(to) if to != addr => Ended::Redirect(to),
                        _ => Ended::Retry("not the leader, none known".into()),
                    }
                }
                Reply::Error(e) => return ended_by(e),
                other => {
                    return Ended::Fatal(Error::Protocol(format!(
                        "unexpected answer to subscribe: {}",
                        crate::connection::reply_name(&other)
                    )))
                }
            }
        }
        buf.reserve(READ_CHUNK);
        match read_some(&mut read, &mut buf, options.idle_timeout, tx).await {
            Read::Some => {}
            Read::Closed => return Ended::Closed,
            Read::End(why) => return Ended::Retry(why),
        }
    }
}

/// The outcome of one read.
enum Read {
    Some,
    End(String),
    Closed,
}

async fn read_some(
    read: &mut ReadHalf,
    buf: &mut BytesMut,
    idle: Duration,
    tx: &mpsc::Sender<Result<Event>>,
) -> Read {
    tokio::select! {
        r = tokio::time::timeout(idle, read.read_buf(buf)) => match r {
            Ok(Ok(0)) => Read::End("the daemon closed the connection".into()),
            Ok(Ok(_)) => Read::Some,
            Ok(Err(e)) => Read::End(format!("reading: {e}")),
            Err(_) => Read::End(format!("nothing from the daemon for {idle:?}")),
        },
        () = tx.closed() => Read::Closed,
    }
}

fn ended_by(e: WireError) -> Ended {
    if is_fatal(e.code) {
        Ended::Fatal(Error::Server(e))
    } else {
        Ended::Retry(e.to_string())
    }
}

/// A short lowercase name for an event kind: `created`, `rotated`,
/// `deleted`, `expired`, `updated`, `touched` (as `sessionctl watch` and the
/// HTTP bridge's `/events` name them).
#[must_use]
pub fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Created => "created",
        EventKind::Rotated { .. } => "rotated",
        EventKind::Deleted { .. } => "deleted",
        EventKind::Expired => "expired",
        EventKind::Updated { .. } => "updated",
        EventKind::Touched { .. } => "touched",
    }
}

/// A short lowercase name for a delete reason: `delete`,
/// `logout_everywhere`, `owner_limit`, `memory_eviction`.
#[must_use]
pub fn reason_name(reason: DeleteReason) -> &'static str {
    match reason {
        DeleteReason::Delete => "delete",
        DeleteReason::LogoutEverywhere => "logout_everywhere",
        DeleteReason::OwnerLimit => "owner_limit",
        DeleteReason::MemoryEviction => "memory_eviction",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn options_build_the_subscribe_op() {
        let op = SubscribeOptions::new().into_op();
        assert_eq!(
            op,
            Op::Subscribe(Subscribe {
                namespaces: vec![],
                updates: false,
                touches: false,
                from: EventsFrom::Now,
            })
        );
        let o = SubscribeOptions::new()
            .namespace("a")
            .namespaces(["b", "c"])
            .updates(true)
            .touches(true)
            .oldest()
            .buffer(0)
            .idle_timeout(Duration::ZERO);
        assert_eq!(o.namespace_list(), ["a", "b", "c"]);
        assert_eq!(o.buffer, 1);
        assert!(o.idle_timeout > Duration::ZERO);
        match o.into_op() {
            Op::Subscribe(s) => {
                assert!(s.updates && s.touches);
                assert_eq!(s.from, EventsFrom::Oldest);
            }
            other => panic!("{other:?}"),
        }
        match SubscribeOptions::new().after(7).into_op() {
            Op::Subscribe(s) => assert_eq!(s.from, EventsFrom::After(7)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resume_drops_duplicates_and_resumes_after_the_last() {
        let mut r = Resume::new(EventsFrom::Oldest);
        assert_eq!(r.from(), EventsFrom::Oldest);
        assert!(r.accept(5));
        assert!(r.accept(6));
        assert_eq!(r.from(), EventsFrom::After(6));
        // A replay after a reconnect: at or below the last is dropped.
        assert!(!r.accept(5));
        assert!(!r.accept(6));
        assert!(r.accept(9));
        assert_eq!(r.last(), Some(9));
        assert_eq!(r.from(), EventsFrom::After(9));
        let r = Resume::new(EventsFrom::After(3));
        assert_eq!(r.from(), EventsFrom::After(3));
    }

    #[test]
    fn a_subscription_from_now_resumes_after_the_daemons_now() {
        let mut r = Resume::new(EventsFrom::Now);
        r.subscribed(42);
        assert_eq!(r.from(), EventsFrom::After(41));
        // A later answer (a resubscription) does not move it.
        r.subscribed(50);
        assert_eq!(r.from(), EventsFrom::After(41));
        assert!(r.accept(43));
        assert_eq!(r.from(), EventsFrom::After(43));
        let mut r = Resume::new(EventsFrom::Oldest);
        r.subscribed(7);
        assert_eq!(r.from(), EventsFrom::Oldest);
    }

    #[test]
    fn which_errors_end_a_subscription() {
        assert!(!is_fatal(ErrorCode::Lagging));
        assert!(!is_fatal(ErrorCode::Unavailable));
        assert!(is_fatal(ErrorCode::Unauthorized));
        assert!(is_fatal(ErrorCode::InvalidRequest));
        assert!(is_fatal(ErrorCode::UnknownOperation));
        assert!(matches!(
            ended_by(WireError::new(ErrorCode::Lagging, "slow")),
            Ended::Retry(_)
        ));
        assert!(matches!(
            ended_by(WireError::new(ErrorCode::Unauthorized, "no")),
            Ended::Fatal(Error::Server(_))
        ));
        assert!(!open_is_fatal(&Error::ConnectionClosed));
        assert!(open_is_fatal(&Error::Server(WireError::new(
            ErrorCode::Unauthorized,
            "bad token"
        ))));
    }

    #[test]
    fn names() {
        assert_eq!(kind_name(&EventKind::Created), "created");
        assert_eq!(
            kind_name(&EventKind::Touched {
                expires_at_ms: None
            }),
            "touched"
        );
        assert_eq!(
            reason_name(DeleteReason::LogoutEverywhere),
            "logout_everywhere"
        );
    }
}
