//! A replicated group: three (or five) members run one Raft group with
//! openraft. The Raft log ([`log_store`]) holds commands whose every
//! nondeterministic input the leader fixed before proposing ([`types`]); the
//! store is the state machine ([`state_machine`]); members talk over their
//! own port ([`network`]).
//!
//! - Writes are proposed by the leader and answered once a majority has the
//!   entry (each member durable per `--fsync`) and the leader has applied it.
//! - Reads on the leader are linearizable: Raft's read index (the leader
//!   confirms with a majority that it still leads, then waits until it has
//!   applied up to the commit index it saw), then the local store.
//! - Members that are not the leader answer `NotLeader` with the leader's
//!   client address; nothing is done there.
//! - Expiry: deadlines are absolute times fixed by the leader's clock. Only
//!   the leader reclaims, by proposing `Expire { now }`; applying it reclaims
//!   exactly what is due at `now` on every member, so a touch committed
//!   before it (which moved the deadline past `now`) keeps its session
//!   everywhere. Reads judge liveness by the later of the local clock and
//!   the newest applied command's time, so no member returns a session past
//!   a deadline its log has reached. Sliding touches are proposed only when
//!   they would move the deadline by more than `--touch-log-fraction` of the
//!   idle ttl; smaller ones change nothing, on any member.

pub mod batch;
pub mod freshness;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use sessiond_protocol::{
    ClusterMember, ClusterStatusReply, ErrorCode, GetStale, NotLeader, Op, Reply, SessionId,
    StaleRead, TouchReply,
};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use self::batch::{Checked, Proposed, Proposer, ReadGate};
use self::freshness::{Freshness, Lease};
use self::log_store::LogStore;
use self::network::{Network, PeerClient, PeerServer};
use self::state_machine::StateMachine;
use self::types::{Applied, Command, NodeId, Raft};
use crate::clock::{Clock, ReplicaClock};
use crate::server::dispatch::{self, error, Answer};
use crate::server::Shared;
use crate::store::Store;

/// Default time a write waits for a majority before it is answered
/// `Indeterminate`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Raft heartbeat interval (openraft checks its timers every 1.5 of it).
pub const HEARTBEAT_MS: u64 = 50;
/// Election timeout range: a follower that hears no leader for this long
/// past its leader's lease (openraft: the range's maximum) stands for
/// election; so a leader's death is acted on after 0.55-0.8 s.
pub const ELECTION_MIN_MS: u64 = 150;
/// See [`ELECTION_MIN_MS`].
pub const ELECTION_MAX_MS: u64 = 400;
/// A snapshot is taken every this many applied entries (the log before it is
/// then purged).
pub const SNAPSHOT_EVERY: u64 = 50_000;
/// Sliding touches proposed at once, at most; more are dropped (a touch only
/// extends a deadline; the next one carries it).
const MAX_TOUCHES_IN_FLIGHT: usize = 1024;

/// Settings of a replicated member.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This member's id.
    pub node_id: NodeId,
    /// Every member's inter-node address, by id (`--cluster`).
    pub members: BTreeMap<NodeId, String>,
    /// Do not initialize the group: this member will be added to a running
    /// one with `sessionctl cluster add-node`.
    pub join: bool,
    /// The token presented to other members (an admin token of their auth
    /// file, when they have one).
    pub token: Option<String>,
    /// The client address other members give out for this one (default: the
    /// `--listen` address).
    pub advertise: Option<String>,
    /// Time a write waits for a majority.
    pub write_timeout: Duration,
    /// TLS between members (`--tls-cert`/`--tls-key` with `--cluster-ca`).
    pub tls: Option<PeerTls>,
}

/// TLS on the inter-node port: the certificate this member serves, and the
/// roots it checks the others' against.
#[derive(Clone)]
pub struct PeerTls {
    /// This member's side (the client port's certificate).
    pub server: Arc<tokio_rustls::rustls::ServerConfig>,
    /// Connecting to the others.
    pub client: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl ClusterConfig {
    /// Parses `--cluster 1=HOST:PORT,2=HOST:PORT,...`.
    ///
    /// # Errors
    /// A message naming what is malformed.
    pub fn parse_members(spec: &str) -> Result<BTreeMap<NodeId, String>, String> {
        let mut out = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not ID=HOST:PORT"))?;
            let id: NodeId = id
                .trim()
                .parse()
                .map_err(|_| format!("{id:?} is not a member id (a positive integer)"))?;
            if id == 0 {
                return Err("member ids start at 1".into());
            }
            let addr = addr.trim();
            if addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(format!("{addr:?} is not HOST:PORT"));
            }
            if out.insert(id, addr.to_owned()).is_some() {
                return Err(format!("member {id} is named twice"));
            }
        }
        if out.is_empty() {
            return Err("no members".into());
        }
        Ok(out)
    }
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The Raft log or snapshot could not be opened.
    #[error("cannot open the replicated log in {dir}: {source}")]
    Storage {
        /// The directory.
        dir: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The inter-node address could not be bound.
    #[error("cannot listen for members on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// openraft refused to start.
    #[error("the consensus engine did not start: {0}")]
    Raft(String),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
}

/// A running member.
pub struct Cluster {
    raft: Raft,
    /// Writes, proposed in batches.
    proposer: Proposer,
    /// Linearizable reads, a leadership check per batch of them.
    reads: ReadGate,
    node_id: NodeId,
    store: Arc<Store>,
    clock: Arc<ReplicaClock>,
    log: LogStore,
    token: Option<String>,
    /// Client addresses of members, learned by asking them.
    client_addrs: Mutex<HashMap<NodeId, String>>,
    touches: Arc<Semaphore>,
    write_timeout: Duration,
    /// Elections this member saw begin (terms it entered).
    elections: AtomicU64,
    /// The commit index, refreshed in the background for metrics.
    committed: AtomicU64,
    /// This member's lease while it leads (follower reads).
    lease: Arc<Lease>,
    /// What it last heard from a leader (follower reads).
    freshness: Arc<Freshness>,
    /// TLS to the other members, if on.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn raft_config() -> Result<openraft::Config, ClusterError> {
    openraft::Config {
        cluster_name: "sessiond".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MIN_MS,
        election_timeout_max: ELECTION_MAX_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: 1_000,
        // An entry is a batch of up to `batch::MAX_BATCH_BYTES` (or one
        // request): 64 of them stay well under `PEER_MAX_FRAME`.
        max_payload_entries: 64,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ClusterError::Raft(e.to_string()))
}

impl Cluster {
    /// Opens the member's Raft state in `data_dir/raft`, starts Raft and the
    /// inter-node listener, and initializes the group if it is new (every
    /// member named in `--cluster` does, with the same membership: openraft
    /// accepts the same initial membership from each).
    ///
    /// # Errors
    /// Storage, bind or start-up failures.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        cc: &ClusterConfig,
        data_dir: &Path,
        fsync: crate::log::FsyncPolicy,
        auth: Option<crate::auth::AuthTable>,
        store: Arc<Store>,
        clock: Arc<ReplicaClock>,
        client_addr: String,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Arc<Self>, ClusterError> {
        let Some(my_addr) = cc.members.get(&cc.node_id).cloned() else {
            return Err(ClusterError::Config(format!(
                "--node-id {} is not among the --cluster members",
                cc.node_id
            )));
        };
        let dir = data_dir.join("raft");
        let (log, sm) = {
            let (d, store, clock) = (dir.clone(), Arc::clone(&store), Arc::clone(&clock));
            tokio::task::spawn_blocking(move || {
                let log = LogStore::open(&d, fsync)?;
                let sm = StateMachine::open(&d, store, clock)?;
                Ok::<_, std::io::Error>((log, sm))
            })
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?
            .map_err(|source| ClusterError::Storage {
                dir: dir.clone(),
                source,
            })?
        };
        let listener = TcpListener::bind(&my_addr)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: my_addr.clone(),
                source,
            })?;
        let lease = Arc::new(Lease::default());
        let freshness = Arc::new(Freshness::default());
        let connector = cc
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsConnector::from(Arc::clone(&t.client)));
        let network = Network {
            node_id: cc.node_id,
            token: cc.token.clone(),
            lease: Arc::clone(&lease),
            tls: connector.clone(),
        };
        let raft = Raft::new(
            cc.node_id,
            Arc::new(raft_config()?),
            network,
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let client_addr = cc.advertise.clone().unwrap_or(client_addr);
        tracker.spawn(
            PeerServer {
                raft: raft.clone(),
                auth,
                client_addr: client_addr.clone(),
                freshness: Arc::clone(&freshness),
                tls: cc
                    .tls
                    .as_ref()
                    .map(|t| tokio_rustls::TlsAcceptor::from(Arc::clone(&t.server))),
            }
            .serve(listener, shutdown.clone(), tracker.clone()),
        );
        let cluster = Arc::new(Self {
            proposer: Proposer::start(raft.clone(), cc.write_timeout, shutdown.clone()),
            reads: ReadGate::start(raft.clone(), cc.write_timeout, shutdown.clone()),
            raft: raft.clone(),
            node_id: cc.node_id,
            store,
            clock,
            log,
            token: cc.token.clone(),
            client_addrs: Mutex::new(HashMap::from([(cc.node_id, client_addr)])),
            touches: Arc::new(Semaphore::new(MAX_TOUCHES_IN_FLIGHT)),
            write_timeout: cc.write_timeout,
            elections: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            lease,
            freshness,
            tls: connector,
        });
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if !initialized && !cc.join {
            let members: BTreeMap<NodeId, BasicNode> = cc
                .members
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => info!(members = cc.members.len(), "replicated group initialized"),
                // Another member's initial membership reached this one first.
                Err(e) => info!(error = %e, "not initializing: the group already is"),
            }
        }
        info!(node_id = cc.node_id, addr = %my_addr, "member of a replicated group");
        tracker.spawn(Arc::clone(&cluster).background(shutdown));
        Ok(cluster)
    }

    /// Stops Raft and the log's sync thread.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "Raft did not stop cleanly");
        }
        let log = self.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }

    /// The leader proposes expiry rounds; every member keeps its metrics.
    async fn background(self: Arc<Self>, shutdown: CancellationToken) {
        let mut metrics = self.raft.metrics();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut term = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let m = metrics.borrow_and_update();
                    let leading = m.state == ServerState::Leader;
                    self.lease.observe(if leading { m.millis_since_quorum_ack } else { None });
                    if leading {
                        self.freshness.forget();
                    }
                    if m.current_term > term {
                        if term != 0 && m.state == ServerState::Candidate {
                            self.elections.fetch_add(1, Ordering::Relaxed);
                        }
                        term = m.current_term;
                    }
                }
                _ = tick.tick() => {
                    if let Ok(Some(c)) = self.raft.with_raft_state(|s| s.committed.map(|l| l.index)).await {
                        self.committed.store(c, Ordering::Relaxed);
                    }
                    if self.is_leader() {
                        let now = self.clock.now_ms();
                        if self.store.has_due(now) {
                            let _ = tokio::time::timeout(
                                self.write_timeout,
                                self.raft.client_write(Command::Expire { now_ms: now }),
                            )
                            .await;
                        }
                    }
                }
            }
        }
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The raft address of member `id`, from the membership.
    fn member_addr(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// A member's client address: cached, or asked of it.
    async fn client_addr_of(&self, id: NodeId) -> Option<String> {
        if let Some(a) = self.client_addrs.lock().get(&id).cloned() {
            return Some(a);
        }
        let addr = self.member_addr(id)?;
        let mut peer =
            PeerClient::new(id, addr, self.node_id, self.token.clone(), self.tls.clone());
        let found = peer.client_addr().await?;
        self.client_addrs.lock().insert(id, found.clone());
        Some(found)
    }

    async fn not_leader(&self, leader: Option<NodeId>) -> Answer {
        let leader = leader.filter(|l| *l != self.node_id);
        let leader_addr = match leader {
            Some(id) => self.client_addr_of(id).await,
            None => None,
        };
        Answer::Reply(Reply::NotLeader(NotLeader {
            leader_id: leader,
            leader_addr,
        }))
    }

    /// Proposes `cmd` (batched with the other writes waiting here) and
    /// answers what applying it answered.
    async fn propose(&self, cmd: Command) -> Answer {
        let proposed = tokio::time::timeout(self.write_timeout, self.proposer.propose(cmd)).await;
        match proposed {
            Ok(Proposed::Applied(applied)) => into_answer(applied),
            // Refused before it entered the log, or removed from the log
            // unapplied (a new leader overwrote it): not done.
            Ok(Proposed::NotLeader(leader)) => self.not_leader(leader).await,
            Ok(Proposed::Indeterminate(why)) => Answer::Reply(error(ErrorCode::Indeterminate, why)),
            Err(_) => Answer::Reply(error(
                ErrorCode::Indeterminate,
                format!(
                    "no majority acknowledged the write within {} ms; it may still be applied",
                    self.write_timeout.as_millis()
                ),
            )),
        }
    }

    /// Waits until a read here is linearizable (read index, one round shared
    /// by the reads that wait together).
    async fn linearize(&self) -> Result<(), Answer> {
        match tokio::time::timeout(self.write_timeout, self.reads.check()).await {
            Ok(Checked::Leader) => Ok(()),
            Ok(Checked::NotLeader(leader)) => Err(self.not_leader(leader).await),
            Ok(Checked::Failed(e)) => Err(Answer::Reply(error(
                ErrorCode::Unavailable,
                format!("cannot confirm leadership for a linearizable read: {e}"),
            ))),
            Ok(Checked::TimedOut) | Err(_) => Err(Answer::Reply(error(
                ErrorCode::Unavailable,
                "no majority confirmed this member's leadership in time".into(),
            ))),
        }
    }

    /// A follower read: answered here if this member can promise its copy is
    /// within the bound asked for (see `freshness`), else `NotLeader` (the
    /// client asks the leader). A leader whose lease is too old confirms its
    /// leadership first and answers from the current state.
    async fn stale_read(&self, g: GetStale) -> Answer {
        let staleness_ms = if let Some(ms) = self.lease.ms().filter(|_| self.is_leader()) {
            if ms <= g.max_staleness_ms {
                ms
            } else {
                if let Err(a) = self.linearize().await {
                    return a;
                }
                0
            }
        } else {
            let Some(heard) = self.freshness.last() else {
                return self.not_leader(self.leader()).await;
            };
            // What the leader had committed when it sent that message must be
            // applied here first: wait for it within what is left of the bound
            // (nothing, when the bound is already past: refused below).
            if let Some(commit) = heard.leader_commit {
                let budget = g.max_staleness_ms.saturating_sub(heard.staleness_ms());
                let waited = self
                    .raft
                    .wait(Some(Duration::from_millis(budget)))
                    .applied_index_at_least(Some(commit), "follower read")
                    .await;
                if waited.is_err() {
                    return self.not_leader(self.leader()).await;
                }
            }
            let ms = heard.staleness_ms();
            if ms > g.max_staleness_ms {
                return self.not_leader(self.leader()).await;
            }
            ms
        };
        match self.store.get(&g.namespace, g.id, false) {
            Ok(session) => Answer::Reply(Reply::StaleSession(StaleRead {
                staleness_ms,
                session,
            })),
            Err(e) => Answer::Reply(dispatch::store_error(&e)),
        }
    }

    /// Proposes a sliding touch without waiting for it (bounded).
    fn touch_behind(self: &Arc<Self>, namespace: &str, id: SessionId) {
        let Ok(permit) = Arc::clone(&self.touches).try_acquire_owned() else {
            return;
        };
        let cmd = Command::Write {
            now_ms: self.clock.now_ms(),
            op: Op::Touch(sessiond_protocol::Touch {
                namespace: namespace.to_owned(),
                id,
            }),
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(this.write_timeout, this.proposer.propose(cmd)).await;
            drop(permit);
        });
    }

    /// Executes one request on this member.
    pub(crate) async fn execute(self: &Arc<Self>, shared: &Shared, op: Op) -> Answer {
        let now_ms = self.clock.now_ms();
        match op {
            Op::Hello(_) | Op::Ping | Op::Stats | Op::Subscribe(_) => dispatch::run(shared, op),
            Op::ClusterStatus => Answer::Reply(Reply::Cluster(self.status().await)),
            Op::ClusterAddNode(a) => self.add_node(a.node_id, a.addr).await,
            Op::ClusterRemoveNode(r) => self.remove_node(r.node_id).await,
            Op::Get(g) => {
                if let Err(a) = self.linearize().await {
                    return a;
                }
                if g.touch
                    && matches!(
                        self.store.touch_due(&g.namespace, g.id),
                        Ok(Some((true, _)))
                    )
                {
                    self.touch_behind(&g.namespace, g.id);
                }
                let read = sessiond_protocol::Get { touch: false, ..g };
                dispatch::apply(&self.store, Op::Get(read))
            }
            Op::GetStale(g) => self.stale_read(g).await,
            Op::ListByOwner(l) => {
                if let Err(a) = self.linearize().await {
                    return a;
                }
                dispatch::apply(&self.store, Op::ListByOwner(l))
            }
            Op::Touch(t) => {
                if let Err(a) = self.linearize().await {
                    return a;
                }
                match self.store.touch_due(&t.namespace, t.id) {
                    Ok(Some((true, _))) => {
                        self.propose(Command::Write {
                            now_ms,
                            op: Op::Touch(t),
                        })
                        .await
                    }
                    // Too small to replicate: the deadline stays as it is.
                    Ok(Some((false, expires_at_ms))) => Answer::Reply(Reply::Touched(TouchReply {
                        found: true,
                        expires_at_ms,
                    })),
                    Ok(None) => Answer::Reply(Reply::Touched(TouchReply {
                        found: false,
                        expires_at_ms: None,
                    })),
                    Err(e) => Answer::Reply(dispatch::store_error(&e)),
                }
            }
            // Writes that may add data are admitted here, by the leader,
            // before they are proposed (members apply without the check).
            Op::Create(_) | Op::Update(_) | Op::Incr(_) if self.store.memory_full() => {
                Answer::Reply(error(
                    ErrorCode::OutOfMemory,
                    "the memory limit is reached".into(),
                ))
            }
            Op::Create(mut c) => {
                if c.id.is_none() {
                    c.id = Some(SessionId::new_v4());
                }
                self.propose(Command::Write {
                    now_ms,
                    op: Op::Create(c),
                })
                .await
            }
            Op::Update(_) | Op::Incr(_) => self.propose(Command::Write { now_ms, op }).await,
            Op::Delete(_) | Op::DeleteByOwner(_) => {
                self.propose(Command::Write { now_ms, op }).await
            }
            Op::Rotate(r) => {
                self.propose(Command::Rotate {
                    now_ms,
                    rotate: r,
                    new_id: SessionId::new_v4(),
                })
                .await
            }
        }
    }

    async fn add_node(&self, id: NodeId, addr: String) -> Answer {
        if id == 0 {
            return Answer::Reply(error(
                ErrorCode::InvalidRequest,
                "member ids start at 1".into(),
            ));
        }
        if !self.is_leader() {
            return self.not_leader(self.leader()).await;
        }
        // A learner first, which catches up (blocking), then a voter.
        if let Err(e) = self.raft.add_learner(id, BasicNode::new(&addr), true).await {
            return self.membership_error(e).await;
        }
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        if let Err(e) = self.raft.change_membership(change, false).await {
            return self.membership_error(e).await;
        }
        info!(id, %addr, "member added");
        Answer::Reply(Reply::Cluster(self.status().await))
    }

    async fn remove_node(&self, id: NodeId) -> Answer {
        if !self.is_leader() {
            return self.not_leader(self.leader()).await;
        }
        let change = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
        if let Err(e) = self.raft.change_membership(change, false).await {
            return self.membership_error(e).await;
        }
        self.client_addrs.lock().remove(&id);
        info!(id, "member removed");
        Answer::Reply(Reply::Cluster(self.status().await))
    }

    async fn membership_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> Answer {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                self.not_leader(f.leader_id).await
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                Answer::Reply(error(ErrorCode::InvalidRequest, c.to_string()))
            }
            other => Answer::Reply(error(ErrorCode::Unavailable, other.to_string())),
        }
    }

    /// The group as this member sees it.
    pub async fn status(&self) -> ClusterStatusReply {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut members = Vec::new();
        let nodes: Vec<(NodeId, String)> = membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        for (id, addr) in nodes {
            let voter = voters.contains(&id);
            let role = if m.current_leader == Some(id) {
                "leader"
            } else if !voter {
                "learner"
            } else if id == self.node_id && m.state == ServerState::Candidate {
                "candidate"
            } else {
                "follower"
            };
            let matched_index = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index);
            members.push(ClusterMember {
                node_id: id,
                addr,
                client_addr: self.client_addr_of(id).await,
                role: role.into(),
                voter,
                matched_index,
            });
        }
        ClusterStatusReply {
            node_id: self.node_id,
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: self.committed.load(Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            members,
        }
    }

    /// Encodes the group's metrics.
    ///
    /// # Errors
    /// The encoder's.
    pub fn encode_metrics(
        &self,
        enc: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::metrics::{counter, gauge};
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        {
            let mut family = enc.encode_descriptor(
                "sessiond_cluster_role",
                "This member's Raft role (1 for the current one).",
                None,
                MetricType::Gauge,
            )?;
            for r in ["leader", "follower", "candidate", "learner", "shutdown"] {
                ConstGauge::new(u64::from(r == role))
                    .encode(family.encode_family(&[("role", r)])?)?;
            }
        }
        let last_log = m.last_log_index.unwrap_or(0);
        gauge(
            enc,
            "sessiond_cluster_term",
            "The current Raft term.",
            m.current_term,
        )?;
        gauge(
            enc,
            "sessiond_cluster_commit_index",
            "The last log index known committed.",
            self.committed.load(Ordering::Relaxed),
        )?;
        gauge(
            enc,
            "sessiond_cluster_applied_index",
            "The last log index applied to the store.",
            m.last_applied.map_or(0, |l| l.index),
        )?;
        gauge(
            enc,
            "sessiond_cluster_last_log_index",
            "The last log index this member holds.",
            last_log,
        )?;
        counter(
            enc,
            "sessiond_cluster_elections_total",
            "Elections this member saw begin as a candidate.",
            self.elections.load(Ordering::Relaxed),
        )?;
        gauge(
            enc,
            "sessiond_cluster_leader_id",
            "The leader's id (0: none known).",
            m.current_leader.unwrap_or(0),
        )?;
        if let Some(repl) = &m.replication {
            let mut family = enc.encode_descriptor(
                "sessiond_cluster_replication_lag",
                "Entries a follower is behind the leader's log.",
                None,
                MetricType::Gauge,
            )?;
            for (id, matched) in repl {
                if *id == self.node_id {
                    continue;
                }
                let lag = last_log.saturating_sub(matched.map_or(0, |l| l.index));
                let node = id.to_string();
                ConstGauge::new(lag).encode(family.encode_family(&[("node", node.as_str())])?)?;
            }
        }
        Ok(())
    }
}

fn into_answer(applied: Applied) -> Answer {
    match applied {
        Applied::Nothing => Answer::Reply(Reply::Pong),
        Applied::Reply(r) => Answer::Reply(r),
        Applied::Session { maybe, head, attrs } => Answer::Encoded { maybe, head, attrs },
        // A batch's answers are handed out one by one (`batch`); a request
        // is never a batch.
        Applied::Batch(_) => Answer::Reply(error(
            ErrorCode::Internal,
            "a request was answered with a batch".into(),
        )),
    }
}
