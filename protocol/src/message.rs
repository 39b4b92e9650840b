//! Requests, responses and the session record.
//!
//! Every request is a [`Request`]: a `u64` id chosen by the client and an [`Op`].
//! The server answers each with a [`Response`] carrying the same id, so a client
//! may pipeline many requests on one connection and match answers by id. Enums
//! here only ever grow at the end: an old peer decodes everything it knew.
//!
//! Times are Unix milliseconds (`u64`); durations are milliseconds.

use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::ids::{AuthToken, SessionId};
use crate::value::{Attrs, Value};

/// A request: the client's id for it and the operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the response. Unique among a connection's in-flight requests.
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// The operations. The variant order is the wire tag: never reorder, only append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Must be the first request on a connection.
    Hello(Hello),
    /// Liveness check; answered with [`Reply::Pong`].
    Ping,
    /// Create a session; answered with [`Reply::Session`].
    Create(Create),
    /// Read a session, optionally touching it; answered with [`Reply::MaybeSession`].
    Get(Get),
    /// Extend a sliding session's deadline; answered with [`Reply::Touched`].
    Touch(Touch),
    /// Change attributes (and optionally the ttl); answered with [`Reply::Updated`].
    Update(Update),
    /// Atomically add to an integer attribute or a windowed counter; answered with [`Reply::Incr`].
    Incr(Incr),
    /// Delete a session; answered with [`Reply::Deleted`].
    Delete(Delete),
    /// List an owner's sessions, a page at a time; answered with [`Reply::Page`].
    ListByOwner(ListByOwner),
    /// Delete an owner's sessions; answered with [`Reply::Count`].
    DeleteByOwner(DeleteByOwner),
    /// Give a session a new id; answered with [`Reply::Session`].
    Rotate(Rotate),
    /// Server statistics; answered with [`Reply::Stats`].
    Stats,
    /// The replication group's members, roles and leader; answered with
    /// [`Reply::Cluster`]. A standalone daemon answers `InvalidRequest`.
    ClusterStatus,
    /// Adds a member (first as a learner that catches up, then as a voter);
    /// answered with [`Reply::Cluster`]. Only the leader does it.
    ClusterAddNode(ClusterAddNode),
    /// Removes a member from the voters; answered with [`Reply::Cluster`].
    ClusterRemoveNode(ClusterRemoveNode),
    /// Read a session from the member asked, accepting a copy up to a bound
    /// out of date (a follower read); answered with [`Reply::StaleSession`],
    /// or `NotLeader` when this member cannot promise the bound. A
    /// standalone daemon and a leader answer from the current state.
    GetStale(GetStale),
    /// Turn the connection into a feed of session events: answered with
    /// [`Reply::Subscribed`] (or [`Reply::CursorExpired`]), then with
    /// [`Reply::Events`] frames under the same request id for as long as the
    /// connection lasts. Nothing else is read from the connection after it.
    Subscribe(Subscribe),
}

impl Op {
    /// Number of operations this build knows; tags from here on are unknown.
    pub const COUNT: u32 = 17;

    /// A short name for logs and metrics.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Ping => "ping",
            Self::Create(_) => "create",
            Self::Get(_) => "get",
            Self::Touch(_) => "touch",
            Self::Update(_) => "update",
            Self::Incr(_) => "incr",
            Self::Delete(_) => "delete",
            Self::ListByOwner(_) => "list_by_owner",
            Self::DeleteByOwner(_) => "delete_by_owner",
            Self::Rotate(_) => "rotate",
            Self::Stats => "stats",
            Self::ClusterStatus => "cluster_status",
            Self::ClusterAddNode(_) => "cluster_add_node",
            Self::ClusterRemoveNode(_) => "cluster_remove_node",
            Self::GetStale(_) => "get_stale",
            Self::Subscribe(_) => "subscribe",
        }
    }
}

/// Opens a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// Credentials, when the daemon requires them.
    pub auth_token: Option<AuthToken>,
    /// A name for the client, shown in the daemon's logs.
    pub client_name: Option<String>,
}

/// Expiry of a session. Both fields may be set; with neither the session lives
/// until it is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ttl {
    /// Sliding expiry: the session expires this long after its last touch.
    pub idle_ttl_ms: Option<u64>,
    /// Absolute expiry: the session expires this long after creation, touched or not.
    pub max_lifetime_ms: Option<u64>,
}

/// What to do when an owner already has the maximum number of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitPolicy {
    /// Refuse the new session with `LimitExceeded`.
    Reject,
    /// Delete the owner's oldest sessions to make room.
    EvictOldest,
}

/// A per-owner session limit applied by a `Create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerLimit {
    /// How many live sessions the owner may have, the new one included.
    pub max_sessions: u32,
    /// What to do when the limit is reached.
    pub policy: LimitPolicy,
}

/// Create a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Create {
    /// The namespace (tenant or application).
    pub namespace: String,
    /// A caller-chosen id (create-if-absent); `None` lets the daemon draw one.
    pub id: Option<SessionId>,
    /// The user the session belongs to, indexed for listing and revoking.
    pub owner: Option<String>,
    /// Expiry.
    pub ttl: Ttl,
    /// Initial attributes.
    pub attrs: Attrs,
    /// Per-owner limit; needs `owner`.
    pub owner_limit: Option<OwnerLimit>,
}

/// Read a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get {
    /// The namespace.
    pub namespace: String,
    /// The session.
    pub id: SessionId,
    /// Also extend the sliding deadline, as [`Touch`] does.
    pub touch: bool,
}

/// Read a session without touching it, from any member of a replicated
/// group that can promise its copy is at most `max_staleness_ms` behind the
/// group's committed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetStale {
    /// The namespace.
    pub namespace: String,
    /// The session.
    pub id: SessionId,
    /// How far behind the committed state the answer may be, in ms.
    pub max_staleness_ms: u64,
}

/// The answer to [`GetStale`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaleRead {
    /// At most this many ms behind the committed state: every write
    /// acknowledged this long before the answer was made is in it (0 from a
    /// standalone daemon).
    pub staleness_ms: u64,
    /// The session, or `None` if the answering member has no live session
    /// with that id.
    pub session: Option<Session>,
}

/// Extend a sliding session's deadline (never past its maximum lifetime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    /// The namespace.
    pub namespace: String,
    /// The session.
    pub id: SessionId,
}

/// Create the session if it is absent, as part of an [`Update`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Upsert {
    /// Owner of the session if it is created.
    pub owner: Option<String>,
}

/// Change a session's attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The namespace.
    pub namespace: String,
    /// The session.
    pub id: SessionId,
    /// Attributes to set (replacing any value of the same name).
    pub set: Attrs,
    /// Attributes to remove (applied before `set`).
    pub remove: Vec<String>,
    /// Fail with `Conflict`, changing nothing, unless the record is at this version.
    pub expected_version: Option<u64>,
    /// Replace the session's expiry (deadlines are recomputed from now for the
    /// idle ttl and from creation for the maximum lifetime).
    pub ttl: Option<Ttl>,
    /// Create the session if it does not exist (refused with `Gone` for an id
    /// that was deleted or rotated away within the tombstone window).
    pub upsert: Option<Upsert>,
}

/// A fixed rate-limit window for [`Incr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    /// Length of the window.
    pub window_ms: u64,
    /// Largest counter value allowed within one window.
    pub limit: i64,
}

/// Atomically add to an attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incr {
    /// The namespace.
    pub namespace: String,
    /// The session.
    pub id: SessionId,
    /// The attribute (created at 0 if absent).
    pub attr: String,
    /// What to add (may be negative).
    pub delta: i64,
    /// With a window: a counter that restarts each window and refuses (changing
    /// nothing) an increment that would pass the limit.
    pub window: Option<RateWindow>,
}

/// Delete a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// The namespace.
    pub namespace: String,
    /// The session.
    pub id: SessionId,
}

/// Where a page of [`ListByOwner`] ends; pass it back to get the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    /// Creation time of the last session returned.
    pub created_at_ms: u64,
    /// Id of the last session returned.
    pub id: SessionId,
}

/// List an owner's sessions, oldest first (by creation time, then id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListByOwner {
    /// The namespace.
    pub namespace: String,
    /// The owner.
    pub owner: String,
    /// Start after this cursor (from the previous page).
    pub after: Option<ListCursor>,
    /// Page size (capped at [`crate::limits::MAX_LIST_PAGE`]).
    pub limit: u32,
}

/// Delete every session of an owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteByOwner {
    /// The namespace.
    pub namespace: String,
    /// The owner.
    pub owner: String,
    /// Keep this one ("log out everywhere else").
    pub except: Option<SessionId>,
}

/// Give a session a new id, keeping its data, owner and deadlines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotate {
    /// The namespace.
    pub namespace: String,
    /// The current id.
    pub id: SessionId,
    /// For this long the old id still resolves to the rotated session (for
    /// requests already in flight); after it, it is gone.
    pub grace_ms: Option<u64>,
}

/// A response: the request's id and the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The id of the request this answers (0 when the request's id could not be read).
    pub id: u64,
    /// The answer.
    pub reply: Reply,
}

/// The replies. The variant order is the wire tag: never reorder, only append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The request failed; nothing was changed.
    Error(WireError),
    /// Answer to `Hello`.
    Hello(HelloReply),
    /// Answer to `Ping`.
    Pong,
    /// A session (`Create`, `Rotate`).
    Session(Session),
    /// A session, or `None` if there is no live session with that id (`Get`).
    MaybeSession(Option<Session>),
    /// Answer to `Touch`.
    Touched(TouchReply),
    /// Answer to `Update`.
    Updated(UpdateReply),
    /// Answer to `Incr`.
    Incr(IncrReply),
    /// Whether a live session was deleted (`Delete`).
    Deleted(bool),
    /// A page of sessions (`ListByOwner`).
    Page(SessionPage),
    /// How many sessions were deleted (`DeleteByOwner`).
    Count(u64),
    /// Server statistics (`Stats`).
    Stats(StatsReply),
    /// The replication group (`ClusterStatus`, `ClusterAddNode`, `ClusterRemoveNode`).
    Cluster(ClusterStatusReply),
    /// This member is not the leader: nothing was done. Send the request to
    /// the leader (its client address, when one is known).
    NotLeader(NotLeader),
    /// A session read with a staleness bound (`GetStale`).
    StaleSession(StaleRead),
    /// A subscription began (`Subscribe`): events follow as [`Reply::Events`].
    Subscribed(Subscribed),
    /// Events of a subscription, in cursor order.
    Events(Vec<Event>),
    /// The cursor a `Subscribe` asked to resume after is older than the
    /// events the daemon still holds (its retention): events were lost to
    /// this subscriber. Nothing was subscribed; resume from `oldest` (or
    /// from now) knowing there is a gap.
    CursorExpired(CursorExpired),
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventsFrom {
    /// Only events that happen from now on.
    Now,
    /// Every event after this cursor (the last one a subscriber received).
    After(u64),
    /// Every event the daemon still holds.
    Oldest,
}

/// Subscribe to session events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Namespaces to watch; empty: every namespace the token may read.
    pub namespaces: Vec<String>,
    /// Also `Updated` events (`Update`, `Incr`): there are many.
    pub updates: bool,
    /// Also `Touched` events (sliding reads and touches): there are more.
    pub touches: bool,
    /// Where to start.
    pub from: EventsFrom,
}

/// The answer to [`Subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The oldest cursor the daemon holds (0: none yet).
    pub oldest: u64,
    /// The cursor the next event will carry.
    pub next: u64,
}

/// The answer to a [`Subscribe`] from a cursor the daemon no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorExpired {
    /// The cursor asked for.
    pub requested: u64,
    /// The oldest cursor still held: `EventsFrom::After(oldest - 1)` gets
    /// everything that is left.
    pub oldest: u64,
}

/// Why a session was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteReason {
    /// `Delete` (a logout).
    Delete,
    /// `DeleteByOwner` (logout everywhere).
    LogoutEverywhere,
    /// Evicted by its owner's session limit (`LimitPolicy::EvictOldest`).
    OwnerLimit,
    /// Evicted to stay under the daemon's memory limit.
    MemoryEviction,
}

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// It was created.
    Created,
    /// It was given a new id (`Rotate`): the event's `id` is the old one.
    Rotated {
        /// The new id.
        to: SessionId,
    },
    /// It was deleted.
    Deleted {
        /// Why.
        reason: DeleteReason,
    },
    /// It reached its deadline (the event's time is the deadline).
    Expired,
    /// Its attributes or ttl changed (opt-in).
    Updated {
        /// Its new version.
        version: u64,
    },
    /// Its sliding deadline moved (opt-in).
    Touched {
        /// Its new deadline.
        expires_at_ms: Option<u64>,
    },
}

/// One event of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Orders the events of a daemon: strictly increasing, never reused,
    /// kept across restarts. Resume after the last one received.
    pub cursor: u64,
    /// When it happened (Unix ms); for `Expired`, the deadline.
    pub at_ms: u64,
    /// The session's namespace.
    pub namespace: String,
    /// The session (a bearer secret: show it only to whom may read it).
    pub id: SessionId,
    /// Its owner, if any.
    pub owner: Option<String>,
    /// What happened.
    pub kind: EventKind,
}

/// Add a member to the replication group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterAddNode {
    /// The new member's id (unique in the group, not 0).
    pub node_id: u64,
    /// Its inter-node address (`HOST:PORT`, as in `--cluster`).
    pub addr: String,
}

/// Remove a member from the replication group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRemoveNode {
    /// The member's id.
    pub node_id: u64,
}

/// The answer of a member that is not the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotLeader {
    /// The leader's id, if this member knows one.
    pub leader_id: Option<u64>,
    /// The leader's client address (`HOST:PORT` of its `--listen`), if known.
    pub leader_addr: Option<String>,
}

/// One member of the replication group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Its id.
    pub node_id: u64,
    /// Its inter-node address.
    pub addr: String,
    /// Its client address, if known to the member answering.
    pub client_addr: Option<String>,
    /// `leader`, `follower`, `learner` or `candidate` (as the answering member knows).
    pub role: String,
    /// Whether it votes (a learner does not).
    pub voter: bool,
    /// Log entries the leader has replicated to it, if the answering member is the leader.
    pub matched_index: Option<u64>,
}

/// The state of the replication group, as one member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusReply {
    /// The answering member.
    pub node_id: u64,
    /// The leader, if one is known.
    pub leader_id: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The last log index known committed.
    pub commit_index: u64,
    /// The last log index applied to the store.
    pub applied_index: u64,
    /// Every member.
    pub members: Vec<ClusterMember>,
}

/// The server's answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The protocol version the connection will use.
    pub protocol_version: u16,
    /// The daemon's version.
    pub server_version: String,
    /// The largest frame the daemon accepts.
    pub max_frame_len: u32,
}

/// A session record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The namespace.
    pub namespace: String,
    /// The id (the bearer secret).
    pub id: SessionId,
    /// The owner, if any.
    pub owner: Option<String>,
    /// When it was created.
    pub created_at_ms: u64,
    /// When it was last created, touched or updated.
    pub last_active_ms: u64,
    /// When it expires, if ever: the earlier of the sliding and absolute deadlines.
    pub expires_at_ms: Option<u64>,
    /// Its expiry settings.
    pub ttl: Ttl,
    /// Bumped by every change to its data (`Update`, `Incr`); not by touches.
    pub version: u64,
    /// Its attributes.
    pub attrs: Attrs,
}

impl Session {
    /// The attribute `name`, if set.
    #[must_use]
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attrs.get(name)
    }
}

/// Answer to `Touch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchReply {
    /// Whether a live session was found.
    pub found: bool,
    /// Its deadline after the touch (`None`: found with no expiry, or not found).
    pub expires_at_ms: Option<u64>,
}

/// Answer to `Update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReply {
    /// The record's version after the update.
    pub version: u64,
    /// Whether the update created the record (upsert).
    pub created: bool,
    /// The record's deadline after the update.
    pub expires_at_ms: Option<u64>,
}

/// Answer to `Incr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrReply {
    /// The value after the increment (or unchanged, if refused).
    pub value: i64,
    /// Whether the increment was applied (always true without a window).
    pub allowed: bool,
    /// With a window: how much may still be added in this window.
    pub remaining: Option<i64>,
    /// With a window: when it restarts.
    pub reset_at_ms: Option<u64>,
    /// The record's version after the request.
    pub version: u64,
}

/// A page of an owner's sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionPage {
    /// The sessions, oldest first.
    pub sessions: Vec<Session>,
    /// Pass this as `after` to get the next page; `None` on the last page.
    pub next: Option<ListCursor>,
}

/// Live records of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceStats {
    /// The namespace.
    pub namespace: String,
    /// Records stored (expired ones awaiting reclaim included).
    pub records: u64,
}

/// Server statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// The daemon's version.
    pub server_version: String,
    /// Time since start.
    pub uptime_ms: u64,
    /// Records stored, all namespaces.
    pub records: u64,
    /// Records per namespace.
    pub namespaces: Vec<NamespaceStats>,
    /// Records reclaimed by expiry since start.
    pub expired_total: u64,
    /// Records evicted by owner limits since start.
    pub evicted_total: u64,
    /// Requests served since start.
    pub ops_total: u64,
    /// Open connections.
    pub connections_current: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Estimated bytes held by records and indexes.
    pub memory_bytes: u64,
}
