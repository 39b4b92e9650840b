//! The [`Client`] handle: a small pool of multiplexed connections and one typed
//! method per operation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use sessiond_protocol::{
    Attrs, ClusterAddNode, ClusterRemoveNode, ClusterStatusReply, Create, Delete, DeleteByOwner,
    Get, GetStale, Incr, IncrReply, LimitPolicy, ListByOwner, ListCursor, Op, OwnerLimit,
    RateWindow, Reply, Rotate, Session, SessionId, SessionPage, StaleRead, StatsReply, Touch,
    TouchReply, Ttl, Update, UpdateReply, Upsert, Value,
};
use tokio::sync::Notify;
use tracing::debug;

use crate::config::ClientConfig;
use crate::connection::{reply_name, Connection};
use crate::error::{Error, Result};
use crate::events::{EventStream, SubscribeOptions};

/// One pool slot: its current connection, and whether a background task is
/// busy replacing it.
struct Slot {
    conn: RwLock<Option<Arc<Connection>>>,
    reconnecting: AtomicBool,
}

impl Slot {
    fn new(conn: Option<Connection>) -> Self {
        Self {
            conn: RwLock::new(conn.map(Arc::new)),
            reconnecting: AtomicBool::new(false),
        }
    }

    /// The slot's connection, if it is alive. The read lock is released
    /// before returning, so it is never held across an `.await`.
    fn live(&self) -> Option<Arc<Connection>> {
        self.conn
            .read()
            .as_ref()
            .filter(|c| !c.is_dead())
            .map(Arc::clone)
    }
}

struct Inner {
    config: ClientConfig,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    /// Woken whenever a slot gets a fresh connection.
    reconnected: Notify,
    /// Requests waiting for any connection to come back.
    waiting: AtomicUsize,
    /// Why the last reconnect attempt failed, for requests that give up.
    last_error: parking_lot::Mutex<Option<Error>>,
    /// The addresses given (several for a replicated group).
    seeds: Vec<String>,
    /// Where connections go: the leader, as far as this client knows.
    target: RwLock<String>,
}

impl Inner {
    fn target(&self) -> String {
        self.target.read().clone()
    }

    /// After a failed connect to `tried`: the next seed (if nobody moved the
    /// target meanwhile).
    fn advance_target(&self, tried: &str) {
        if self.seeds.len() < 2 {
            return;
        }
        let mut t = self.target.write();
        if *t == tried {
            let at = self.seeds.iter().position(|s| s == tried);
            let next = at.map_or(0, |i| (i + 1) % self.seeds.len());
            *t = self.seeds[next].clone();
        }
    }
}

/// A slot's reconnect loop: one attempt per round, capped exponential backoff
/// with jitter between rounds, until it succeeds or the client is dropped.
async fn reconnect_loop(inner: Weak<Inner>, index: usize) {
    let mut attempt: u32 = 0;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let addr = strong.target();
        debug!(%addr, attempt, "reconnecting a pool connection");
        match Connection::open(&strong.config, &addr).await {
            Ok(conn) => {
                let slot = &strong.slots[index];
                *slot.conn.write() = Some(Arc::new(conn));
                slot.reconnecting.store(false, Ordering::Release);
                *strong.last_error.lock() = None;
                strong.reconnected.notify_waiters();
                debug!(%addr, "reconnected");
                return;
            }
            Err(e) => {
                debug!(%addr, error = %e, "reconnect failed");
                *strong.last_error.lock() = Some(e);
                strong.advance_target(&addr);
                let delay = backoff(&strong.config, attempt);
                attempt = attempt.saturating_add(1);
                // Not holding the client while asleep: dropping every handle ends the loop.
                drop(strong);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The delay before reconnect attempt `attempt + 1`: doubling from the
/// minimum up to the maximum, then a random point in its upper half, so that
/// many clients of a restarted daemon do not reconnect in lockstep.
pub(crate) fn backoff(config: &ClientConfig, attempt: u32) -> Duration {
    let min = config.reconnect_min.as_millis() as u64;
    let max = config.reconnect_max.as_millis().max(1) as u64;
    let exp = min.saturating_mul(1u64 << attempt.min(20)).min(max).max(1);
    let random = u64::from_le_bytes(SessionId::new_v4().0[..8].try_into().unwrap_or([0; 8]));
    Duration::from_millis(exp / 2 + random % (exp / 2 + 1))
}

/// A handle to a sessiond daemon. Cheap to clone; clones share the pool.
///
/// Requests from any number of tasks are multiplexed over the pool's
/// connections (picked round robin) and may be answered in any order.
///
/// When a connection drops (the daemon restarts, the network blips), the
/// requests in flight on it fail with [`Error::ConnectionClosed`] (retryable)
/// and a background task reconnects it with capped exponential backoff and
/// jitter. Meanwhile new requests use the other connections, or, when none is
/// left, wait for the first to come back (within their request timeout; at
/// most [`ClientConfig::max_waiting`] of them, past which they fail at once
/// with [`Error::Backlog`]). Reads that are safe to repeat (get, touch, list,
/// stats, ping) are retried on a fresh connection up to
/// [`ClientConfig::read_retries`] times; writes never are, since a write may
/// already have been applied.
///
/// ```no_run
/// use std::time::Duration;
/// use sessiond_client::{Client, CreateOptions};
///
/// # async fn demo() -> Result<(), sessiond_client::Error> {
/// let client = Client::connect("127.0.0.1:7379").await?;
/// let session = client
///     .create("app", CreateOptions::new().owner("alice").idle_ttl(Duration::from_secs(1800)))
///     .await?;
/// let again = client.get_and_touch("app", session.id).await?;
/// assert_eq!(again.map(|s| s.id), Some(session.id));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.config.address)
            .field("target", &*self.inner.target.read())
            .field("connections", &self.inner.slots.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the daemon at `address` (`host:port`) with default settings.
    ///
    /// # Errors
    /// [`Error::Connect`] if no connection can be made, [`Error::Server`] if the
    /// daemon refuses the handshake.
    pub async fn connect(address: impl Into<String>) -> Result<Self> {
        Self::connect_with(ClientConfig::new(address)).await
    }

    /// Connects with explicit settings. Every pool connection is opened now, so
    /// a wrong address or credentials fail here rather than at the first request.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with(config: ClientConfig) -> Result<Self> {
        let seeds = config.seeds();
        let mut last = None;
        // The first seed that answers; with several (a replicated group),
        // requests then follow its NotLeader answers to the leader.
        for addr in &seeds {
            match Connection::open(&config, addr).await {
                Ok(first) => {
                    let mut slots = Vec::with_capacity(config.connections);
                    slots.push(Slot::new(Some(first)));
                    for _ in 1..config.connections {
                        slots.push(Slot::new(Some(Connection::open(&config, addr).await?)));
                    }
                    let client = Self::with_slots(config, slots);
                    *client.inner.target.write() = addr.clone();
                    return Ok(client);
                }
                Err(e @ Error::Server(_)) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(Error::ConnectionClosed))
    }

    /// A client that connects in the background: it returns at once, even if
    /// the daemon is not up yet, and requests wait for the first connection
    /// (within their timeout) like they do after a disconnect. For services
    /// that must start, and answer "unavailable", before their daemon does.
    /// Must be called within a tokio runtime.
    #[must_use]
    pub fn connect_lazy(config: ClientConfig) -> Self {
        let slots = (0..config.connections).map(|_| Slot::new(None)).collect();
        let client = Self::with_slots(config, slots);
        for index in 0..client.inner.slots.len() {
            client.heal(index);
        }
        client
    }

    fn with_slots(config: ClientConfig, slots: Vec<Slot>) -> Self {
        let seeds = config.seeds();
        let target = RwLock::new(seeds[0].clone());
        Self {
            inner: Arc::new(Inner {
                seeds,
                target,
                config,
                slots: slots.into_boxed_slice(),
                next: AtomicUsize::new(0),
                reconnected: Notify::new(),
                waiting: AtomicUsize::new(0),
                last_error: parking_lot::Mutex::new(None),
            }),
        }
    }

    /// The settings this client was built with.
    #[must_use]
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The daemon's version, from the handshake of a live pool connection.
    #[must_use]
    pub fn server_version(&self) -> Option<String> {
        self.inner.slots.iter().find_map(|s| {
            s.conn
                .read()
                .as_ref()
                .map(|c| c.server().server_version.clone())
        })
    }

    /// Starts the reconnect loop of a dead slot, unless one runs already.
    fn heal(&self, index: usize) {
        let slot = &self.inner.slots[index];
        if !slot.reconnecting.swap(true, Ordering::AcqRel) {
            tokio::spawn(reconnect_loop(Arc::downgrade(&self.inner), index));
        }
    }

    /// A live connection from the pool, round robin; dead slots are handed to
    /// their reconnect loops. With none alive, waits (until `deadline`) for the
    /// first one back.
    async fn connection(&self, deadline: Instant) -> Result<Arc<Connection>> {
        let slots = &self.inner.slots;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        loop {
            // Registered before looking, so a reconnect in between is not missed.
            let reconnected = self.inner.reconnected.notified();
            for i in 0..slots.len() {
                let index = (start + i) % slots.len();
                match slots[index].live() {
                    Some(conn) => return Ok(conn),
                    None => self.heal(index),
                }
            }
            let limit = self.inner.config.max_waiting;
            if self.inner.waiting.fetch_add(1, Ordering::AcqRel) >= limit {
                self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::Backlog { limit });
            }
            let woke = tokio::time::timeout_at(deadline.into(), reconnected).await;
            self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
            if woke.is_err() {
                // Say why the daemon could not be reached, when that is known.
                return Err(self
                    .inner
                    .last_error
                    .lock()
                    .as_ref()
                    .map_or(Error::ConnectionClosed, Error::duplicate));
            }
        }
    }

    /// Subscribes to session events (created, rotated, deleted, expired;
    /// with [`SubscribeOptions::updates`] and [`SubscribeOptions::touches`]
    /// also updated and touched) on a connection of its own, opened with this
    /// client's settings (address, TLS, auth token, timeouts) to the daemon
    /// the pool talks to. Returns at once; the [`EventStream`] connects in the
    /// background, resubscribes by itself after a dropped connection
    /// (resuming after the last cursor it yielded, dropping replays), and
    /// ends after yielding an error it cannot recover from, such as
    /// [`Error::CursorExpired`] or `Unauthorized` (see [`crate::events`]).
    ///
    /// Must be called within a tokio runtime.
    ///
    /// ```no_run
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, saved_cursor: Option<u64>) -> Result<()> {
    /// let mut options = SubscribeOptions::new().namespace("app");
    /// if let Some(cursor) = saved_cursor {
    ///     options = options.after(cursor);
    /// }
    /// let mut events = client.subscribe(options);
    /// while let Some(event) = events.next_event().await {
    ///     match event {
    ///         Ok(e) => println!("{} {:?} in {}", e.cursor, e.kind, e.namespace),
    ///         Err(Error::CursorExpired { oldest, .. }) => {
    ///             eprintln!("events were lost; the oldest held is {oldest}");
    ///             break;
    ///         }
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    #[must_use = "the subscription ends when its stream is dropped"]
    pub fn subscribe(&self, options: SubscribeOptions) -> EventStream {
        EventStream::start(
            self.inner.config.clone(),
            self.inner.seeds.clone(),
            self.inner.target(),
            options,
        )
    }

    /// Sends any operation and returns its reply; an error reply becomes
    /// [`Error::Server`].
    ///
    /// # Errors
    /// Any [`Error`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let reply = client.call(Op::Ping).await?;
    /// assert!(matches!(reply, Reply::Pong));
    /// # Ok(()) }
    /// ```
    pub async fn call(&self, op: Op) -> Result<Reply> {
        let retries = if is_idempotent(&op) {
            self.inner.config.read_retries
        } else {
            0
        };
        let mut attempt = 0;
        let mut redirects = 0;
        let started = Instant::now();
        loop {
            match self.call_once(&op).await {
                // Not the leader: nothing was done, so any request (a write
                // too) goes again, to the leader it named or, during an
                // election, to the same member a moment later (the next
                // member now and then), for up to the request timeout.
                Ok(Reply::NotLeader(nl)) => {
                    let budget = self.inner.config.request_timeout;
                    if redirects >= MAX_REDIRECTS || started.elapsed() >= budget {
                        return Err(Error::Server(sessiond_protocol::WireError::new(
                            sessiond_protocol::ErrorCode::Unavailable,
                            format!(
                                "no leader found in {} ms ({redirects} redirects)",
                                started.elapsed().as_millis()
                            ),
                        )));
                    }
                    redirects += 1;
                    self.follow(nl.leader_addr.as_deref(), redirects).await;
                }
                // A dropped connection or a daemon briefly unable to serve: a
                // read can safely go again (a timeout is not retried: the time
                // the caller allowed is spent).
                Err(e)
                    if attempt < retries
                        && e.is_retryable()
                        && !matches!(e, Error::Timeout { .. }) =>
                {
                    attempt += 1;
                    debug!(op = op.name(), attempt, error = %e, "retrying a read");
                }
                other => return other,
            }
        }
    }

    /// Points the pool at `leader`; unknown (an election is under way), asks
    /// the same member again after a pause, and every
    /// [`ASK_AGAIN`]th time the next seed instead (the member may be cut
    /// off from the majority). The slots' connections are replaced when the
    /// target changes (requests in flight on them finish there).
    async fn follow(&self, leader: Option<&str>, redirects: u32) {
        let current = self.inner.target();
        let next = match leader {
            Some(l) => l.to_owned(),
            None => {
                tokio::time::sleep(ELECTION_PAUSE).await;
                if !redirects.is_multiple_of(ASK_AGAIN) {
                    return;
                }
                let at = self.inner.seeds.iter().position(|s| *s == current);
                let next = at.map_or(0, |i| (i + 1) % self.inner.seeds.len());
                self.inner.seeds[next].clone()
            }
        };
        let target = {
            let mut t = self.inner.target.write();
            if *t == current && *t != next {
                debug!(from = %current, to = %next, "following the leader");
                t.clone_from(&next);
            }
            t.clone()
        };
        // Connections elsewhere are replaced (requests in flight on them
        // finish there).
        for (index, slot) in self.inner.slots.iter().enumerate() {
            let elsewhere = slot
                .conn
                .read()
                .as_ref()
                .is_some_and(|c| c.addr() != target);
            if elsewhere {
                *slot.conn.write() = None;
                self.heal(index);
            }
        }
        // Wait for a connection to the new target (within the request timeout).
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let _ = self.connection(deadline).await;
    }

    async fn call_once(&self, op: &Op) -> Result<Reply> {
        let timeout = self.inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let conn = self.connection(deadline).await?;
        match conn.call(op, deadline).await {
            Ok(Reply::Error(e)) => Err(Error::Server(e)),
            Ok(reply) => Ok(reply),
            Err(Error::Timeout { .. }) => Err(Error::Timeout { after: timeout }),
            Err(e) => Err(e),
        }
    }

    /// Sends `ops` together on one connection, back to back without waiting
    /// for answers in between (as few writes as the outbox allows), and
    /// returns a reply per op, in the order of `ops`. The daemon runs them in
    /// that order, so later ops see the effects of earlier ones (create a
    /// chosen id, then update it). An error reply or a timeout fails its own
    /// entry only ([`Error::Server`], [`Error::Timeout`], [`Error::Encode`]
    /// for an op over the frame limit, which is not sent; the connection
    /// closing fails the entries not yet answered with
    /// [`Error::ConnectionClosed`]). Nothing is retried: writes may be among
    /// the ops.
    ///
    /// # Errors
    /// No connection within the request timeout, or [`Error::Backlog`]:
    /// nothing was sent.
    ///
    /// ```no_run
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let id = SessionId::new_v4();
    /// let replies = client
    ///     .pipeline(vec![
    ///         CreateOptions::new().id(id).attr("step", 1i64).into_op("app"),
    ///         UpdateOptions::new().set("step", 2i64).into_op("app", id),
    ///         Op::Ping,
    ///     ])
    ///     .await?;
    /// for reply in replies {
    ///     println!("{:?}", reply?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn pipeline(&self, ops: Vec<Op>) -> Result<Vec<Result<Reply>>> {
        let timeout = self.inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let conn = self.connection(deadline).await?;
        let replies = conn.call_many(&ops, deadline).await.map_err(|e| match e {
            Error::Timeout { .. } => Error::Timeout { after: timeout },
            other => other,
        })?;
        Ok(replies
            .into_iter()
            .map(|r| match r {
                Ok(Reply::Error(e)) => Err(Error::Server(e)),
                Err(Error::Timeout { .. }) => Err(Error::Timeout { after: timeout }),
                other => other,
            })
            .collect())
    }

    /// Reads many sessions in one round trip (see [`Client::pipeline`]): an
    /// entry per id, in order, `None` for one absent or expired.
    ///
    /// # Errors
    /// As [`Client::pipeline`]; each entry as [`Client::get`].
    ///
    /// ```no_run
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, ids: Vec<SessionId>) -> Result<()> {
    /// for (id, got) in ids.iter().zip(client.get_many("app", &ids).await?) {
    ///     println!("{id}: {}", if got?.is_some() { "live" } else { "gone" });
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_many(
        &self,
        namespace: &str,
        ids: &[SessionId],
    ) -> Result<Vec<Result<Option<Session>>>> {
        let ops = ids
            .iter()
            .map(|&id| {
                Op::Get(Get {
                    namespace: namespace.to_owned(),
                    id,
                    touch: false,
                })
            })
            .collect();
        Ok(self
            .pipeline(ops)
            .await?
            .into_iter()
            .map(|r| match r? {
                Reply::MaybeSession(s) => Ok(s),
                other => Err(unexpected("get", &other)),
            })
            .collect())
    }

    /// Checks the daemon answers; returns the round-trip time.
    ///
    /// # Errors
    /// Any [`Error`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let rtt = client.ping().await?;
    /// println!("daemon answered in {rtt:?}");
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        match self.call(Op::Ping).await? {
            Reply::Pong => Ok(start.elapsed()),
            other => Err(unexpected("ping", &other)),
        }
    }

    /// Creates a session in `namespace`.
    ///
    /// # Errors
    /// [`Error::Server`] with `LimitExceeded` (owner at its limit under the reject
    /// policy), `AlreadyExists` / `Gone` (a chosen id that is taken or was
    /// recently deleted), `InvalidRequest`, `TooLarge`; or a transport error.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let s = client
    ///     .create(
    ///         "app",
    ///         CreateOptions::new()
    ///             .owner("alice")
    ///             .idle_ttl(Duration::from_secs(30 * 60))
    ///             .max_lifetime(Duration::from_secs(12 * 3600))
    ///             .attr("role", "admin")
    ///             .owner_limit(5, LimitPolicy::EvictOldest),
    ///     )
    ///     .await?;
    /// println!("new session {}", s.id); // Display shows the id; Debug never does
    /// # Ok(()) }
    /// ```
    pub async fn create(&self, namespace: &str, options: CreateOptions) -> Result<Session> {
        match self.call(options.into_op(namespace)).await? {
            Reply::Session(s) => Ok(s),
            other => Err(unexpected("create", &other)),
        }
    }

    async fn get_inner(
        &self,
        namespace: &str,
        id: SessionId,
        touch: bool,
    ) -> Result<Option<Session>> {
        let op = Op::Get(Get {
            namespace: namespace.to_owned(),
            id,
            touch,
        });
        match self.call(op).await? {
            Reply::MaybeSession(s) => Ok(s),
            other => Err(unexpected("get", &other)),
        }
    }

    /// Reads a live session (`None` if absent or expired).
    ///
    /// # Errors
    /// `InvalidRequest` for a malformed namespace; a transport error.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// match client.get("app", id).await? {
    ///     Some(s) => println!("version {}", s.version),
    ///     None => println!("absent or expired"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, namespace: &str, id: SessionId) -> Result<Option<Session>> {
        self.get_inner(namespace, id, false).await
    }

    /// Reads a live session from the member this client is connected to,
    /// accepting a copy up to `max_staleness` behind the replicated group's
    /// committed state (a follower read: no round to the leader's majority).
    /// Answers the session (`None` if absent or expired there) and how stale
    /// the answer may be at most. A member that cannot promise the bound
    /// sends the client on to the leader, which answers; a standalone daemon
    /// answers with a staleness of zero.
    ///
    /// # Errors
    /// As [`Client::get`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let read = client.get_stale("app", id, Duration::from_secs(1)).await?;
    /// println!("at most {} ms old: {:?}", read.staleness_ms, read.session.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn get_stale(
        &self,
        namespace: &str,
        id: SessionId,
        max_staleness: Duration,
    ) -> Result<StaleRead> {
        let op = Op::GetStale(GetStale {
            namespace: namespace.to_owned(),
            id,
            max_staleness_ms: u64::try_from(max_staleness.as_millis()).unwrap_or(u64::MAX),
        });
        match self.call(op).await? {
            Reply::StaleSession(r) => Ok(r),
            other => Err(unexpected("get_stale", &other)),
        }
    }

    /// Reads a live session and slides its idle deadline.
    ///
    /// # Errors
    /// As [`Client::get`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let still_logged_in = client.get_and_touch("app", id).await?.is_some();
    /// # Ok(()) }
    /// ```
    pub async fn get_and_touch(&self, namespace: &str, id: SessionId) -> Result<Option<Session>> {
        self.get_inner(namespace, id, true).await
    }

    /// Slides a session's idle deadline (never past its maximum lifetime).
    ///
    /// # Errors
    /// As [`Client::get`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let t = client.touch("app", id).await?;
    /// if t.found {
    ///     println!("now expires at {:?} (unix ms)", t.expires_at_ms);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn touch(&self, namespace: &str, id: SessionId) -> Result<TouchReply> {
        let op = Op::Touch(Touch {
            namespace: namespace.to_owned(),
            id,
        });
        match self.call(op).await? {
            Reply::Touched(t) => Ok(t),
            other => Err(unexpected("touch", &other)),
        }
    }

    /// Changes a session's attributes (and optionally its expiry); bumps its version.
    ///
    /// # Errors
    /// `NotFound`, `Conflict` (expected version differs; nothing changed),
    /// `Gone` (upsert of a recently deleted id), `InvalidRequest`, `TooLarge`.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let s = client.get("app", id).await?.expect("live");
    /// match client
    ///     .update("app", id, UpdateOptions::new().set("cart", 3i64).expected_version(s.version))
    ///     .await
    /// {
    ///     Ok(u) => println!("now at version {}", u.version),
    ///     Err(e) if e.code() == Some(ErrorCode::Conflict) => println!("changed meanwhile: re-read"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn update(
        &self,
        namespace: &str,
        id: SessionId,
        options: UpdateOptions,
    ) -> Result<UpdateReply> {
        match self.call(options.into_op(namespace, id)).await? {
            Reply::Updated(u) => Ok(u),
            other => Err(unexpected("update", &other)),
        }
    }

    async fn incr_inner(
        &self,
        namespace: &str,
        id: SessionId,
        attr: &str,
        delta: i64,
        window: Option<RateWindow>,
    ) -> Result<IncrReply> {
        let op = Op::Incr(Incr {
            namespace: namespace.to_owned(),
            id,
            attr: attr.to_owned(),
            delta,
            window,
        });
        match self.call(op).await? {
            Reply::Incr(r) => Ok(r),
            other => Err(unexpected("incr", &other)),
        }
    }

    /// Atomically adds `delta` to an integer attribute (created at 0).
    ///
    /// # Errors
    /// `NotFound`; `InvalidRequest` if the attribute is not an integer or would overflow.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let visits = client.incr("app", id, "visits", 1).await?.value;
    /// # Ok(()) }
    /// ```
    pub async fn incr(
        &self,
        namespace: &str,
        id: SessionId,
        attr: &str,
        delta: i64,
    ) -> Result<IncrReply> {
        self.incr_inner(namespace, id, attr, delta, None).await
    }

    /// Counts `delta` in a fixed window of length `window` allowing at most
    /// `limit`: a refused increment (`allowed == false`) changes nothing.
    ///
    /// # Errors
    /// As [`Client::incr`]; `InvalidRequest` for a zero window.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// // At most 5 login attempts a minute.
    /// let r = client
    ///     .incr_window("app", id, "login_attempts", 1, Duration::from_secs(60), 5)
    ///     .await?;
    /// if !r.allowed {
    ///     println!("locked out until {:?}", r.reset_at_ms);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn incr_window(
        &self,
        namespace: &str,
        id: SessionId,
        attr: &str,
        delta: i64,
        window: Duration,
        limit: i64,
    ) -> Result<IncrReply> {
        let window = RateWindow {
            window_ms: millis(window),
            limit,
        };
        self.incr_inner(namespace, id, attr, delta, Some(window))
            .await
    }

    /// Deletes a session; returns whether a live one was deleted. Its id stays
    /// reserved for the daemon's tombstone window.
    ///
    /// # Errors
    /// `InvalidRequest` for a malformed namespace; a transport error.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let existed = client.delete("app", id).await?; // logout
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, namespace: &str, id: SessionId) -> Result<bool> {
        let op = Op::Delete(Delete {
            namespace: namespace.to_owned(),
            id,
        });
        match self.call(op).await? {
            Reply::Deleted(d) => Ok(d),
            other => Err(unexpected("delete", &other)),
        }
    }

    /// One page of an owner's live sessions, oldest first. Pass the page's
    /// `next` back as `after` for the following page.
    ///
    /// # Errors
    /// `InvalidRequest` for a malformed namespace or owner; a transport error.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let mut after = None;
    /// loop {
    ///     let page = client.list_by_owner("app", "alice", after, 100).await?;
    ///     for s in &page.sessions {
    ///         println!("{} created {}", s.id, s.created_at_ms);
    ///     }
    ///     match page.next {
    ///         Some(cursor) => after = Some(cursor),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_by_owner(
        &self,
        namespace: &str,
        owner: &str,
        after: Option<ListCursor>,
        limit: u32,
    ) -> Result<SessionPage> {
        let op = Op::ListByOwner(ListByOwner {
            namespace: namespace.to_owned(),
            owner: owner.to_owned(),
            after,
            limit,
        });
        match self.call(op).await? {
            Reply::Page(p) => Ok(p),
            other => Err(unexpected("list_by_owner", &other)),
        }
    }

    /// Deletes every session of `owner`, except `except` if given ("log out
    /// everywhere else"); returns how many live sessions were deleted.
    ///
    /// # Errors
    /// As [`Client::list_by_owner`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// // "Log out everywhere else": keep only the current session.
    /// let revoked = client.delete_by_owner("app", "alice", Some(id)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_by_owner(
        &self,
        namespace: &str,
        owner: &str,
        except: Option<SessionId>,
    ) -> Result<u64> {
        let op = Op::DeleteByOwner(DeleteByOwner {
            namespace: namespace.to_owned(),
            owner: owner.to_owned(),
            except,
        });
        match self.call(op).await? {
            Reply::Count(n) => Ok(n),
            other => Err(unexpected("delete_by_owner", &other)),
        }
    }

    /// Gives a session a new id (same data, owner and deadlines). With `grace`,
    /// the old id still resolves to the session for that long.
    ///
    /// # Errors
    /// `NotFound`; a transport error.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// // At login: a new id for the same session (session-fixation defence); the
    /// // old id keeps working for 5 s for requests already in flight.
    /// let s = client.rotate("app", id, Some(Duration::from_secs(5))).await?;
    /// println!("set the cookie to {}", s.id);
    /// # Ok(()) }
    /// ```
    pub async fn rotate(
        &self,
        namespace: &str,
        id: SessionId,
        grace: Option<Duration>,
    ) -> Result<Session> {
        let op = Op::Rotate(Rotate {
            namespace: namespace.to_owned(),
            id,
            grace_ms: grace.map(millis),
        });
        match self.call(op).await? {
            Reply::Session(s) => Ok(s),
            other => Err(unexpected("rotate", &other)),
        }
    }

    /// The daemon's counters.
    ///
    /// # Errors
    /// A transport error.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::*;
    /// # async fn demo(client: Client, id: SessionId) -> Result<()> {
    /// let st = client.stats().await?;
    /// println!("{} records, {} ops served", st.records, st.ops_total);
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<StatsReply> {
        match self.call(Op::Stats).await? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected("stats", &other)),
        }
    }

    /// The replicated group as the member this client is connected to sees
    /// it: every member's id, address and role, and the leader.
    ///
    /// # Errors
    /// `InvalidRequest` from a standalone daemon; a transport error.
    pub async fn cluster_status(&self) -> Result<ClusterStatusReply> {
        match self.call(Op::ClusterStatus).await? {
            Reply::Cluster(c) => Ok(c),
            other => Err(unexpected("cluster status", &other)),
        }
    }

    /// Adds member `node_id` at inter-node address `addr` (it catches up as
    /// a learner, then votes). Sent to the leader.
    ///
    /// # Errors
    /// A membership change already in progress, a transport error.
    pub async fn cluster_add_node(&self, node_id: u64, addr: &str) -> Result<ClusterStatusReply> {
        let op = Op::ClusterAddNode(ClusterAddNode {
            node_id,
            addr: addr.to_owned(),
        });
        match self.call(op).await? {
            Reply::Cluster(c) => Ok(c),
            other => Err(unexpected("cluster add-node", &other)),
        }
    }

    /// Removes member `node_id` from the voters. Sent to the leader.
    ///
    /// # Errors
    /// As [`Client::cluster_add_node`].
    pub async fn cluster_remove_node(&self, node_id: u64) -> Result<ClusterStatusReply> {
        let op = Op::ClusterRemoveNode(ClusterRemoveNode { node_id });
        match self.call(op).await? {
            Reply::Cluster(c) => Ok(c),
            other => Err(unexpected("cluster remove-node", &other)),
        }
    }
}

/// How many `NotLeader` answers a request follows at most (within its
/// request timeout) before it gives up.
const MAX_REDIRECTS: u32 = 200;
/// The pause before asking again when no leader is known.
const ELECTION_PAUSE: Duration = Duration::from_millis(50);
/// Asking a member that knows no leader this many times in a row, a request
/// moves on to the next seed.
const ASK_AGAIN: u32 = 8;

/// Operations that may be repeated without changing the outcome.
fn is_idempotent(op: &Op) -> bool {
    matches!(
        op,
        Op::Ping
            | Op::Get(_)
            | Op::GetStale(_)
            | Op::Touch(_)
            | Op::ListByOwner(_)
            | Op::Stats
            | Op::ClusterStatus
    )
}

fn unexpected(op: &str, reply: &Reply) -> Error {
    Error::Protocol(format!("unexpected reply {} to {op}", reply_name(reply)))
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What to create: see [`Client::create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    id: Option<SessionId>,
    owner: Option<String>,
    ttl: Ttl,
    attrs: Attrs,
    owner_limit: Option<OwnerLimit>,
}

impl CreateOptions {
    /// No owner, no expiry, no attributes, a daemon-drawn id.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this id instead of a fresh one (create-if-absent).
    #[must_use]
    pub fn id(mut self, id: SessionId) -> Self {
        self.id = Some(id);
        self
    }

    /// The user the session belongs to (indexed).
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sliding expiry: the session ends after this long without activity.
    #[must_use]
    pub fn idle_ttl(mut self, d: Duration) -> Self {
        self.ttl.idle_ttl_ms = Some(millis(d));
        self
    }

    /// Absolute expiry: the session ends this long after creation, whatever touches it.
    #[must_use]
    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.ttl.max_lifetime_ms = Some(millis(d));
        self
    }

    /// One attribute.
    #[must_use]
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attrs.insert(name.into(), value.into());
        self
    }

    /// All attributes at once (replacing those set so far).
    #[must_use]
    pub fn attrs(mut self, attrs: Attrs) -> Self {
        self.attrs = attrs;
        self
    }

    /// At most `max_sessions` live sessions for the owner; `policy` decides
    /// whether a new one is refused or the oldest is evicted.
    #[must_use]
    pub fn owner_limit(mut self, max_sessions: u32, policy: LimitPolicy) -> Self {
        self.owner_limit = Some(OwnerLimit {
            max_sessions,
            policy,
        });
        self
    }

    /// The `Create` operation these options make in `namespace`, for
    /// [`Client::pipeline`].
    #[must_use]
    pub fn into_op(self, namespace: &str) -> Op {
        Op::Create(Create {
            namespace: namespace.to_owned(),
            id: self.id,
            owner: self.owner,
            ttl: self.ttl,
            attrs: self.attrs,
            owner_limit: self.owner_limit,
        })
    }
}

/// What to change: see [`Client::update`].
#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    set: Attrs,
    remove: Vec<String>,
    expected_version: Option<u64>,
    ttl: Option<Ttl>,
    upsert: Option<Upsert>,
}

impl UpdateOptions {
    /// No change (still bumps the version and counts as activity).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an attribute.
    #[must_use]
    pub fn set(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.set.insert(name.into(), value.into());
        self
    }

    /// Removes an attribute (removals apply before sets).
    #[must_use]
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        self.remove.push(name.into());
        self
    }

    /// Fail with `Conflict`, changing nothing, unless the session is at `version`.
    #[must_use]
    pub fn expected_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Replaces the session's expiry settings, both at once: `None` removes
    /// that kind of expiry (with both `None` the session lives until deleted).
    #[must_use]
    pub fn ttl(mut self, idle_ttl: Option<Duration>, max_lifetime: Option<Duration>) -> Self {
        self.ttl = Some(Ttl {
            idle_ttl_ms: idle_ttl.map(millis),
            max_lifetime_ms: max_lifetime.map(millis),
        });
        self
    }

    /// Create the session (with this owner) if it does not exist. An id deleted
    /// or rotated away recently is refused with `Gone`, so a request finishing
    /// after a logout cannot bring the session back.
    #[must_use]
    pub fn upsert(mut self, owner: Option<String>) -> Self {
        self.upsert = Some(Upsert { owner });
        self
    }

    /// The `Update` operation these options make for `id` in `namespace`,
    /// for [`Client::pipeline`].
    #[must_use]
    pub fn into_op(self, namespace: &str, id: SessionId) -> Op {
        Op::Update(Update {
            namespace: namespace.to_owned(),
            id,
            set: self.set,
            remove: self.remove,
            expected_version: self.expected_version,
            ttl: self.ttl,
            upsert: self.upsert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_options_build_the_create_op() {
        let id = SessionId::new_v4();
        let op = CreateOptions::new()
            .id(id)
            .owner("alice")
            .idle_ttl(Duration::from_secs(1800))
            .max_lifetime(Duration::from_millis(1500))
            .attr("cart", 3i64)
            .attr("role", "admin")
            .owner_limit(5, LimitPolicy::EvictOldest)
            .into_op("app");
        let Op::Create(c) = op else {
            panic!("not a create")
        };
        assert_eq!(c.namespace, "app");
        assert_eq!(c.id, Some(id));
        assert_eq!(c.owner.as_deref(), Some("alice"));
        assert_eq!(c.ttl.idle_ttl_ms, Some(1_800_000));
        assert_eq!(c.ttl.max_lifetime_ms, Some(1_500));
        assert_eq!(c.attrs.get("cart"), Some(&Value::Int(3)));
        assert_eq!(c.attrs.get("role"), Some(&Value::Str("admin".into())));
        assert_eq!(
            c.owner_limit,
            Some(OwnerLimit {
                max_sessions: 5,
                policy: LimitPolicy::EvictOldest
            })
        );
    }

    #[test]
    fn attrs_replaces_what_was_set() {
        let mut attrs = Attrs::new();
        attrs.insert("b".into(), Value::Bool(true));
        let Op::Create(c) = CreateOptions::new()
            .attr("a", 1i64)
            .attrs(attrs)
            .into_op("x")
        else {
            panic!("not a create")
        };
        assert_eq!(c.attrs.len(), 1);
        assert!(c.attrs.contains_key("b"));
    }

    #[test]
    fn update_options_build_the_update_op() {
        let id = SessionId::new_v4();
        let op = UpdateOptions::new()
            .set("n", 1i64)
            .remove("old")
            .expected_version(7)
            .ttl(Some(Duration::from_secs(60)), None)
            .upsert(Some("bob".into()))
            .into_op("app", id);
        let Op::Update(u) = op else {
            panic!("not an update")
        };
        assert_eq!(u.id, id);
        assert_eq!(u.set.get("n"), Some(&Value::Int(1)));
        assert_eq!(u.remove, vec!["old".to_string()]);
        assert_eq!(u.expected_version, Some(7));
        assert_eq!(
            u.ttl,
            Some(Ttl {
                idle_ttl_ms: Some(60_000),
                max_lifetime_ms: None
            })
        );
        assert_eq!(
            u.upsert,
            Some(Upsert {
                owner: Some("bob".into())
            })
        );
        let Op::Update(plain) = UpdateOptions::new().into_op("app", id) else {
            panic!("not an update")
        };
        assert_eq!(
            (plain.ttl, plain.upsert, plain.expected_version),
            (None, None, None)
        );
    }

    #[test]
    fn durations_saturate_to_milliseconds() {
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
