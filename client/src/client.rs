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
use tracing::debug;

use crate::config::ClientConfig;
use crate::connection::{reply_name, Connection};
use crate::error::{Error, Result};

/// One pool slot: the current connection (if any), and a lock that lets one
/// caller at a time replace it, guarding the outcome of the last failed attempt.
struct Slot {
    conn: RwLock<Option<Arc<Connection>>>,
    reconnect: tokio::sync::Mutex<Option<Failure>>,
}

/// A reconnect that failed, kept so the callers queued behind it share it.
struct Failure {
    at: Instant,
    error: Error,
}

impl Slot {
    fn new(conn: Connection) -> Self {
        Self {
            conn: RwLock::new(Some(Arc::new(conn))),
            reconnect: tokio::sync::Mutex::new(None),
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
}

/// A handle to a sessiond daemon. Cheap to clone; clones share the pool.
///
/// Requests from any number of tasks are multiplexed over the pool's
/// connections (picked round robin) and may be answered in any order. A slot
/// whose connection died is reconnected (once, within the connect timeout) by
/// the next request that picks it; requests in flight on the dead connection
/// fail with [`Error::ConnectionClosed`] and are not resent, since a write may
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
            slots.push(Slot::new(Connection::open(&config).await?));
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

    /// A live connection from the pool, round robin. A dead slot is
    /// reconnected by the caller that picks it, so the pool heals instead of
    /// shrinking; if that fails, any other live connection carries the request.
    async fn connection(&self) -> Result<Arc<Connection>> {
        let slots = &self.inner.slots;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let slot = &slots[start % slots.len()];
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        match self.reconnect(slot).await {
            Ok(conn) => Ok(conn),
            Err(e) => slots.iter().find_map(Slot::live).ok_or(e),
        }
    }

    /// Replaces a dead slot's connection: one attempt, bounded by the connect
    /// timeout.
    async fn reconnect(&self, slot: &Slot) -> Result<Arc<Connection>> {
        let asked = Instant::now();
        let mut last_failure = slot.reconnect.lock().await;
        // Someone else may have reconnected while this caller waited.
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        // An attempt that failed while this caller waited answers for it too:
        // retrying at once would make every queued caller wait out its own
        // connect timeout in turn (minutes, against an unreachable host).
        if let Some(failure) = last_failure.as_ref().filter(|f| f.at >= asked) {
            return Err(failure.error.duplicate());
        }
        debug!(addr = %self.inner.config.address, "reconnecting a pool connection");
        match Connection::open(&self.inner.config).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                // Dropping the dead connection here stops its tasks once the
                // callers still holding it are done with it.
                *slot.conn.write() = Some(Arc::clone(&conn));
                *last_failure = None;
                Ok(conn)
            }
            Err(e) => {
                debug!(addr = %self.inner.config.address, error = %e, "reconnect failed");
                *last_failure = Some(Failure {
                    at: Instant::now(),
                    error: e.duplicate(),
                });
                Err(e)
            }
        }
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

    fn into_op(self, namespace: &str) -> Op {
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

    fn into_op(self, namespace: &str, id: SessionId) -> Op {
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
