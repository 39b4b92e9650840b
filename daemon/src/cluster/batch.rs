//! Shared Raft rounds for the leader's writes and linearizable reads.
//!
//! openraft 0.9 appends each `client_write` as its own entry and waits for
//! that entry's flush inside its core task before it looks at the next one:
//! under `--fsync always` the leader made one `fdatasync` per write, and its
//! writes were bounded by its disk's sync rate (about 3,000/s here) however
//! many clients waited. Likewise every `ensure_linearizable` ran a heartbeat
//! round of its own.
//!
//! So writes go through a [`Proposer`]: commands that wait while
//! [`MAX_IN_FLIGHT`] proposals are under way are proposed together as one
//! entry ([`Command::Batch`], applied in order, answered each), up to
//! [`MAX_BATCH`] commands and about [`MAX_BATCH_BYTES`] (a single larger
//! command goes alone). Reads go through a [`ReadGate`]: the reads that arrive
//! while a leadership check runs share the next check, which starts after
//! every one of them arrived, so each read still sees every write
//! acknowledged before it was asked (the read-index rule).
//!
//! Both queues are bounded: a connection's requests wait for room, they are
//! never buffered without limit.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::types::{Applied, Command, NodeId, Raft};

/// Proposals under way at once; commands that come meanwhile wait and form
/// the next batch.
pub const MAX_IN_FLIGHT: usize = 2;
/// Commands in one entry at most.
pub const MAX_BATCH: usize = 256;
/// Encoded bytes of one entry's commands, about (a command is always
/// accepted into an empty batch, whatever its size).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Commands (and reads) waiting for a round, at most.
const QUEUE: usize = 4096;

/// How a proposal ended.
#[derive(Debug, Clone)]
pub enum Proposed {
    /// Applied: what applying it answered.
    Applied(Applied),
    /// Refused before it entered the log: not done.
    NotLeader(Option<NodeId>),
    /// It may or may not be applied.
    Indeterminate(String),
}

struct Pending {
    cmd: Command,
    size: usize,
    done: oneshot::Sender<Proposed>,
}

/// Forms batches of the writes waiting on this member.
#[derive(Debug, Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("size", &self.size).finish()
    }
}

impl Proposer {
    /// Starts the batching task; it ends with `shutdown`.
    pub fn start(raft: Raft, timeout: Duration, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(propose_loop(raft, rx, timeout, shutdown));
        Self { tx }
    }

    /// Proposes `cmd` (in a batch with whatever else waits) and answers how
    /// it ended. The caller bounds the wait.
    pub async fn propose(&self, cmd: Command) -> Proposed {
        // Counted, not encoded: the log encodes the entry once, later.
        let size = sessiond_protocol::frame::encoded_len(&cmd).unwrap_or(MAX_BATCH_BYTES);
        let (done, rx) = oneshot::channel();
        if self.tx.send(Pending { cmd, size, done }).await.is_err() {
            return Proposed::NotLeader(None);
        }
        rx.await.unwrap_or_else(|_| {
            Proposed::Indeterminate("the member stopped while the write was proposed".into())
        })
    }
}

async fn propose_loop(
    raft: Raft,
    mut rx: mpsc::Receiver<Pending>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => tokio::select! {
                () = shutdown.cancelled() => return,
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
            },
        };
        // Wait for room first: what arrives meanwhile joins this batch.
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            p = Arc::clone(&in_flight).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) if bytes + p.size > MAX_BATCH_BYTES => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            run_batch(&raft, batch, timeout).await;
            drop(permit);
        });
    }
}

async fn run_batch(raft: &Raft, mut batch: Vec<Pending>, timeout: Duration) {
    let single = batch.len() == 1;
    let cmd = if single {
        // Moved out; the sender stays to answer.
        std::mem::replace(&mut batch[0].cmd, Command::Batch(Vec::new()))
    } else {
        Command::Batch(
            batch
                .iter_mut()
                .map(|p| std::mem::replace(&mut p.cmd, Command::Batch(Vec::new())))
                .collect(),
        )
    };
    let outcome = match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Ok(Ok(resp)) => Ok(resp.data),
        // Refused before it entered the log, or removed from the log
        // unapplied (a new leader overwrote it): not done.
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(Proposed::NotLeader(f.leader_id))
        }
        Ok(Err(e)) => Err(Proposed::Indeterminate(format!(
            "the write may or may not have been applied: {e}"
        ))),
        Err(_) => Err(Proposed::Indeterminate(format!(
            "no majority acknowledged the write within {} ms; it may still be applied",
            timeout.as_millis()
        ))),
    };
    match outcome {
        Ok(Applied::Batch(answers)) if !single && answers.len() == batch.len() => {
            for (p, a) in batch.into_iter().zip(answers) {
                let _ = p.done.send(Proposed::Applied(a));
            }
        }
        Ok(a) if single => {
            if let Some(p) = batch.pop() {
                let _ = p.done.send(Proposed::Applied(a));
            }
        }
        Ok(other) => {
            // Cannot happen: a batch applies to one answer per command.
            let why = format!("a batch of {} was answered {other:?}", batch.len());
            tracing::error!("{why}");
            for p in batch {
                let _ = p.done.send(Proposed::Indeterminate(why.clone()));
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.done.send(e.clone());
            }
        }
    }
}

/// How a leadership check for reads ended.
#[derive(Debug, Clone)]
pub enum Checked {
    /// Reads may be answered here now.
    Leader,
    /// Another member leads (or none is known).
    NotLeader(Option<NodeId>),
    /// The check failed.
    Failed(String),
    /// No majority answered in time.
    TimedOut,
}

/// Shares leadership checks among the reads waiting for one.
#[derive(Debug, Clone)]
pub struct ReadGate {
    tx: mpsc::Sender<oneshot::Sender<Checked>>,
}

impl ReadGate {
    /// Starts the checking task; it ends with `shutdown`.
    pub fn start(raft: Raft, timeout: Duration, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(check_loop(raft, rx, timeout, shutdown));
        Self { tx }
    }

    /// Waits for a check that started after this call and for this member
    /// to have applied what was committed then.
    pub async fn check(&self) -> Checked {
        let (done, rx) = oneshot::channel();
        if self.tx.send(done).await.is_err() {
            return Checked::NotLeader(None);
        }
        rx.await
            .unwrap_or_else(|_| Checked::Failed("the member is stopping".into()))
    }
}

async fn check_loop(
    raft: Raft,
    mut rx: mpsc::Receiver<oneshot::Sender<Checked>>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut waiting = Vec::new();
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            w = rx.recv() => match w {
                Some(w) => w,
                None => return,
            },
        };
        waiting.push(first);
        while let Ok(w) = rx.try_recv() {
            waiting.push(w);
        }
        // Every waiter arrived before this check starts.
        let checked = match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Checked::Leader,
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Checked::NotLeader(f.leader_id)
            }
            Ok(Err(e)) => Checked::Failed(e.to_string()),
            Err(_) => Checked::TimedOut,
        };
        for w in waiting.drain(..) {
            let _ = w.send(checked.clone());
        }
    }
}
