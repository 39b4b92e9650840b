//! Inter-node traffic: Raft's RPCs over TCP between members, framed as the
//! client protocol is (`u32` length, then a bincode payload) with a
//! [`PeerRequest`] answered by a [`PeerResponse`], one at a time per
//! connection.
//!
//! A connection starts with `Hello` carrying the cluster token; when the
//! daemon has an auth file the token must be one of its `admin` tokens (the
//! same tokens as the client port), and nothing else is read before it. The
//! hello must come within [`HELLO_TIMEOUT`] and fit in [`HELLO_MAX`] bytes;
//! after it, frames are bounded by [`PEER_MAX_FRAME`] and a silent
//! connection is closed after [`PEER_IDLE`].

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, SnapshotMismatch,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sessiond_protocol::frame::{decode_value, encode_value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::freshness::{Freshness, Lease};
use super::types::{NodeId, Raft, TypeConfig};
use crate::auth::AuthTable;

/// Time a new inter-node connection has to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest hello frame.
pub const HELLO_MAX: u32 = 4096;
/// Largest frame between authenticated members (a batch of entries, a
/// snapshot chunk).
pub const PEER_MAX_FRAME: u32 = 256 * 1024 * 1024;
/// A member connection silent this long is closed.
pub const PEER_IDLE: Duration = Duration::from_secs(120);
/// Time to connect to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What one member asks another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// First on every connection.
    Hello {
        /// The cluster token.
        token: Option<String>,
        /// Who asks.
        from: NodeId,
    },
    /// Raft: replicate entries (or heartbeat), with the leader's lease
    /// (ms since a majority last acknowledged it; see `freshness`).
    Append {
        /// The request.
        rpc: AppendEntriesRequest<TypeConfig>,
        /// The sender's lease, if it has one.
        lease_ms: Option<u64>,
    },
    /// Raft: ask for a vote.
    Vote(VoteRequest<NodeId>),
    /// Raft: a snapshot chunk.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// The member's client address (for `NotLeader` answers).
    Info,
}

/// A snapshot chunk refused.
#[derive(Debug, Serialize, Deserialize)]
pub enum SnapshotRefusal {
    /// Start the snapshot again from the offset given.
    Mismatch(SnapshotMismatch),
    /// Anything else.
    Other(String),
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Hello accepted, or why not.
    Hello(Result<(), String>),
    /// Answer to `Append`.
    Append(Result<AppendEntriesResponse<NodeId>, String>),
    /// Answer to `Vote`.
    Vote(Result<VoteResponse<NodeId>, String>),
    /// Answer to `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<NodeId>, SnapshotRefusal>),
    /// Answer to `Info`.
    Info {
        /// The member's client address.
        client_addr: String,
    },
}

/// A connection between members: TCP, or TLS over it.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> PeerIo for T {}
type PeerStream = Box<dyn PeerIo>;

async fn write_frame<S: AsyncWrite + Unpin + ?Sized, T: Serialize>(
    stream: &mut S,
    msg: &T,
) -> std::io::Result<()> {
    let payload = encode_value(msg).map_err(|e| std::io::Error::other(e.to_string()))?;
    let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&payload);
    stream.write_all(&buf).await
}

async fn read_frame<S: AsyncRead + Unpin + ?Sized, T: DeserializeOwned>(
    stream: &mut S,
    max: u32,
) -> std::io::Result<T> {
    let len = stream.read_u32_le().await?;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the limit of {max}"),
        ));
    }
    // Read in steps so a peer that announces much and sends little holds
    // little memory.
    let mut payload = Vec::with_capacity((len as usize).min(1 << 20));
    let mut left = len as usize;
    let mut chunk = vec![0u8; left.min(1 << 16)];
    while left > 0 {
        let n = left.min(chunk.len());
        stream.read_exact(&mut chunk[..n]).await?;
        payload.extend_from_slice(&chunk[..n]);
        left -= n;
    }
    decode_value(&payload)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Makes a connection per target for Raft.
#[derive(Clone)]
pub struct Network {
    /// This member.
    pub node_id: NodeId,
    /// The token presented to other members.
    pub token: Option<String>,
    /// This member's lease as leader, sent with every `AppendEntries`.
    pub lease: Arc<Lease>,
    /// TLS to the other members, if on.
    pub tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("node_id", &self.node_id)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            from: self.node_id,
            token: self.token.clone(),
            conn: None,
            lease: Some(Arc::clone(&self.lease)),
            tls: self.tls.clone(),
        }
    }
}

/// One member's connection to another.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    from: NodeId,
    token: Option<String>,
    conn: Option<PeerStream>,
    lease: Option<Arc<Lease>>,
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("target", &self.target)
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a call to a member failed.
enum CallError {
    /// No connection could be made.
    Unreachable(std::io::Error),
    /// The connection broke or timed out.
    Network(std::io::Error),
}

impl PeerClient {
    /// A client for asking `addr` outside Raft (its client address).
    pub fn new(
        target: NodeId,
        addr: String,
        from: NodeId,
        token: Option<String>,
        tls: Option<TlsConnector>,
    ) -> Self {
        Self {
            target,
            addr,
            from,
            token,
            conn: None,
            lease: None,
            tls,
        }
    }

    async fn connect(&mut self) -> std::io::Result<PeerStream> {
        let timed_out = |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(timed_out)??;
        tcp.set_nodelay(true)?;
        let mut stream: PeerStream = match &self.tls {
            Some(tls) => {
                let host = host_of(&self.addr);
                let name =
                    rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            format!("{host:?} is not a name TLS can check: {e}"),
                        )
                    })?;
                Box::new(
                    tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp))
                        .await
                        .map_err(timed_out)??,
                )
            }
            None => Box::new(tcp),
        };
        write_frame(
            &mut stream,
            &PeerRequest::Hello {
                token: self.token.clone(),
                from: self.from,
            },
        )
        .await?;
        match read_frame::<_, PeerResponse>(&mut stream, PEER_MAX_FRAME).await? {
            PeerResponse::Hello(Ok(())) => Ok(stream),
            PeerResponse::Hello(Err(why)) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("member {} refused this one: {why}", self.target),
            )),
            _ => Err(std::io::Error::other("unexpected answer to hello")),
        }
    }

    /// Sends `req` and reads the answer within `ttl`.
    async fn call(&mut self, req: &PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        let run = async {
            let mut stream = match self.conn.take() {
                Some(s) => s,
                None => self.connect().await.map_err(CallError::Unreachable)?,
            };
            write_frame(&mut stream, req)
                .await
                .map_err(CallError::Network)?;
            let resp = read_frame::<_, PeerResponse>(&mut stream, PEER_MAX_FRAME)
                .await
                .map_err(CallError::Network)?;
            self.conn = Some(stream);
            Ok(resp)
        };
        match tokio::time::timeout(ttl, run).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(CallError::Network(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer in time",
                )))
            }
        }
    }

    /// The member's client address.
    pub async fn client_addr(&mut self) -> Option<String> {
        match self.call(&PeerRequest::Info, Duration::from_secs(1)).await {
            Ok(PeerResponse::Info { client_addr }) => Some(client_addr),
            _ => None,
        }
    }
}

/// The host of `HOST:PORT` (`[v6]:PORT` too), for checking a member's
/// certificate.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn rpc_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
    }
}

fn remote<E: std::error::Error>(why: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(why)))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    /// A member that could not be reached is tried again soon: a restarted
    /// one must hear its leader before its election timeout runs out, or it
    /// stands for election and unseats a healthy leader.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(50)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call(
                &PeerRequest::Append {
                    rpc,
                    lease_ms: self.lease.as_ref().and_then(|l| l.ms()),
                },
                option.hard_ttl(),
            )
            .await
        {
            Ok(PeerResponse::Append(Ok(r))) => Ok(r),
            Ok(PeerResponse::Append(Err(why))) => Err(remote(why)),
            Ok(_) => Err(remote("unexpected answer".into())),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(&PeerRequest::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Snapshot(Ok(r))) => Ok(r),
            Ok(PeerResponse::Snapshot(Err(SnapshotRefusal::Mismatch(m)))) => {
                Err(RPCError::RemoteError(RemoteError::new(
                    self.target,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)),
                )))
            }
            Ok(PeerResponse::Snapshot(Err(SnapshotRefusal::Other(why)))) => Err(remote(why)),
            Ok(_) => Err(remote("unexpected answer".into())),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&PeerRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(Ok(r))) => Ok(r),
            Ok(PeerResponse::Vote(Err(why))) => Err(remote(why)),
            Ok(_) => Err(remote("unexpected answer".into())),
            Err(e) => Err(rpc_error(e)),
        }
    }
}

/// What the inter-node server needs.
#[derive(Clone)]
pub struct PeerServer {
    /// The Raft handle requests go to.
    pub raft: Raft,
    /// Tokens accepted (`None`: anyone on the network).
    pub auth: Option<AuthTable>,
    /// This member's client address.
    pub client_addr: String,
    /// What this member last heard from a leader.
    pub freshness: Arc<Freshness>,
    /// TLS on this port, if on.
    pub tls: Option<TlsAcceptor>,
}

impl PeerServer {
    /// Serves members on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "inter-node accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let this = self.clone();
            let stop = shutdown.clone();
            tracker.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    r = this.accept(stream) => {
                        if let Err(e) = r {
                            debug!(%peer, error = %e, "inter-node connection ended");
                        }
                    }
                }
            });
        }
    }

    /// Completes the TLS handshake (if on) within the hello's time, then
    /// serves the connection.
    async fn accept(&self, tcp: TcpStream) -> std::io::Result<()> {
        tcp.set_nodelay(true)?;
        let stream: PeerStream = match &self.tls {
            Some(tls) => Box::new(
                tokio::time::timeout(HELLO_TIMEOUT, tls.accept(tcp))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no TLS handshake in time",
                        )
                    })??,
            ),
            None => Box::new(tcp),
        };
        self.connection(stream).await
    }

    async fn connection(&self, mut stream: PeerStream) -> std::io::Result<()> {
        let hello = tokio::time::timeout(
            HELLO_TIMEOUT,
            read_frame::<_, PeerRequest>(&mut stream, HELLO_MAX),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no hello in time"))??;
        let PeerRequest::Hello { token, from } = hello else {
            return Err(std::io::Error::other("the first request was not hello"));
        };
        if let Some(table) = &self.auth {
            let ok = token
                .as_deref()
                .and_then(|t| table.authenticate(t))
                .is_some_and(|g| g.is_admin());
            if !ok {
                info!(from, "a member's hello was refused: no admin token");
                write_frame(
                    &mut stream,
                    &PeerResponse::Hello(Err(
                        "the cluster token is not an admin token of this member".into(),
                    )),
                )
                .await?;
                return Ok(());
            }
        }
        write_frame(&mut stream, &PeerResponse::Hello(Ok(()))).await?;
        loop {
            let req = match tokio::time::timeout(
                PEER_IDLE,
                read_frame::<_, PeerRequest>(&mut stream, PEER_MAX_FRAME),
            )
            .await
            {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            };
            let resp = match req {
                PeerRequest::Hello { .. } => PeerResponse::Hello(Ok(())),
                PeerRequest::Append { rpc, lease_ms } => {
                    let leader_commit = rpc.leader_commit.map(|l| l.index);
                    let answer = self.raft.append_entries(rpc).await;
                    if matches!(answer, Ok(AppendEntriesResponse::Success)) {
                        self.freshness.heard(leader_commit, lease_ms);
                    }
                    PeerResponse::Append(answer.map_err(|e| e.to_string()))
                }
                PeerRequest::Vote(r) => {
                    PeerResponse::Vote(self.raft.vote(r).await.map_err(|e| e.to_string()))
                }
                PeerRequest::Snapshot(r) => PeerResponse::Snapshot(
                    self.raft.install_snapshot(r).await.map_err(|e| match e {
                        RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)) => {
                            SnapshotRefusal::Mismatch(m)
                        }
                        other => SnapshotRefusal::Other(other.to_string()),
                    }),
                ),
                PeerRequest::Info => PeerResponse::Info {
                    client_addr: self.client_addr.clone(),
                },
            };
            write_frame(&mut stream, &resp).await?;
        }
    }
}
