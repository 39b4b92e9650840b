//! The [`Client`] handle: a small pool of multiplexed connections and one typed
//! method per operation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use sessiond_protocol::{
    Attrs, Create, Delete, DeleteByOwner, Get, Incr, IncrReply, LimitPolicy, ListByOwner,
    ListCursor, Op, OwnerLimit, RateWindow, Reply, Rotate, Session, SessionId, SessionPage,
    StatsReply, Touch, TouchReply, Ttl, Update, UpdateReply, Upsert, Value,
};

use crate::config::ClientConfig;
use crate::connection::{reply_name, Connection};
use crate::error::{Error, Result};

/// One pool slot: the current connection (if any) and a lock that lets one
/// caller at a time replace it.
struct Slot {
    conn: RwLock<Option<Arc<Connection>>>,
    reconnect: tokio::sync::Mutex<()>,
}

struct Inner {
    config: ClientConfig,
    slots: Box<[Slot]>,
    next: AtomicUsize,
}

/// A handle to a sessiond daemon. Cheap to clone; clones share the pool.
///
/// Requests from any number of tasks are multiplexed over the pool's
/// connections and may be answered in any order. A slot whose connection died
/// is reconnected (once, within the connect timeout) by the next request that
/// picks it.
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
        let mut slots = Vec::with_capacity(config.connections);
        for _ in 0..config.connections {
            let conn = Connection::open(&config).await?;
            slots.push(Slot {
                conn: RwLock::new(Some(Arc::new(conn))),
                reconnect: tokio::sync::Mutex::new(()),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                slots: slots.into_boxed_slice(),
                next: AtomicUsize::new(0),
            }),
        })
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

    /// A live connection from the pool (round robin), reconnecting a dead slot.
    async fn connection(&self) -> Result<Arc<Connection>> {
        let n = self.inner.slots.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        // Prefer any live connection before paying for a reconnect.
        for i in 0..n {
            let slot = &self.inner.slots[(start + i) % n];
            if let Some(c) = slot.conn.read().as_ref().filter(|c| !c.is_dead()) {
                return Ok(Arc::clone(c));
            }
        }
        let slot = &self.inner.slots[start % n];
        let _guard = slot.reconnect.lock().await;
        // Someone else may have reconnected while this caller waited.
        if let Some(c) = slot.conn.read().as_ref().filter(|c| !c.is_dead()) {
            return Ok(Arc::clone(c));
        }
        let fresh = Arc::new(Connection::open(&self.inner.config).await?);
        *slot.conn.write() = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Sends any operation and returns its reply; an error reply becomes
    /// [`Error::Server`].
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn call(&self, op: Op) -> Result<Reply> {
        let conn = self.connection().await?;
        match conn.call(op, self.inner.config.request_timeout).await? {
            Reply::Error(e) => Err(Error::Server(e)),
            reply => Ok(reply),
        }
    }

    /// Checks the daemon answers; returns the round-trip time.
    ///
    /// # Errors
    /// Any [`Error`].
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
    pub async fn create(&self, namespace: &str, options: CreateOptions) -> Result<Session> {
        let op = Op::Create(Create {
            namespace: namespace.to_owned(),
            id: options.id,
            owner: options.owner,
            ttl: options.ttl,
            attrs: options.attrs,
            owner_limit: options.owner_limit,
        });
        match self.call(op).await? {
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
    pub async fn get(&self, namespace: &str, id: SessionId) -> Result<Option<Session>> {
        self.get_inner(namespace, id, false).await
    }

    /// Reads a live session and slides its idle deadline.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn get_and_touch(&self, namespace: &str, id: SessionId) -> Result<Option<Session>> {
        self.get_inner(namespace, id, true).await
    }

    /// Slides a session's idle deadline (never past its maximum lifetime).
    ///
    /// # Errors
    /// As [`Client::get`].
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
    pub async fn update(
        &self,
        namespace: &str,
        id: SessionId,
        options: UpdateOptions,
    ) -> Result<UpdateReply> {
        let op = Op::Update(Update {
            namespace: namespace.to_owned(),
            id,
            set: options.set,
            remove: options.remove,
            expected_version: options.expected_version,
            ttl: options.ttl,
            upsert: options.upsert,
        });
        match self.call(op).await? {
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
    pub async fn stats(&self) -> Result<StatsReply> {
        match self.call(Op::Stats).await? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected("stats", &other)),
        }
    }
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

    /// Replaces the session's expiry settings.
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
}
