//! The state machine of a replicated group: the store. Applying a command
//! runs the operation at the time the leader fixed (see
//! [`crate::clock::with_apply_now`]); a snapshot is the log's snapshot
//! format (`log::format`: a checkpoint, then every record, tombstone and
//! alias as post-images) after a frame with the Raft snapshot's meta.
//!
//! The snapshot's images are taken on the state machine's task, between two
//! applies, so they are exactly the state at `last_applied`; writing them to
//! disk (and sending them) happens after, while applying goes on.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sessiond_protocol::frame::decode_value;
use tracing::info;

use super::log_store::{frame, frames, header};
use super::types::{Applied, Command, Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::clock::{with_apply_now, ReplicaClock};
use crate::log::recovery;
use crate::server::dispatch::{self, Answer};
use crate::store::Store;

/// File kind byte of a Raft snapshot.
const KIND_RAFT_SNAPSHOT: u8 = 4;
/// The snapshot's file name inside the member's raft directory.
const SNAPSHOT_FILE: &str = "raft-snapshot";

type Membership = StoredMembership<NodeId, openraft::BasicNode>;
type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;

/// The first frame of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    meta: Meta,
    /// The apply clock when it was taken (replay judges expiry by it).
    now_ms: u64,
}

#[derive(Debug)]
struct Inner {
    store: Arc<Store>,
    clock: Arc<ReplicaClock>,
    dir: PathBuf,
    applied: Mutex<(Option<LogId>, Membership)>,
    /// The newest snapshot on disk: its meta.
    current: Mutex<Option<Meta>>,
    seq: AtomicU64,
}

/// The store as a Raft state machine (cheap to clone).
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

fn sm_error(verb: ErrorVerb, e: impl ToString) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

impl StateMachine {
    /// The state machine over `store`, loading the snapshot in `dir` if one
    /// is there.
    ///
    /// # Errors
    /// A damaged snapshot or an I/O error.
    pub fn open(dir: &Path, store: Arc<Store>, clock: Arc<ReplicaClock>) -> std::io::Result<Self> {
        let sm = Self {
            inner: Arc::new(Inner {
                store,
                clock,
                dir: dir.to_path_buf(),
                applied: Mutex::new((None, Membership::default())),
                current: Mutex::new(None),
                seq: AtomicU64::new(0),
            }),
        };
        let path = dir.join(SNAPSHOT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let meta = sm.load(&bytes).map_err(|why| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {why}", path.display()),
                    )
                })?;
                info!(last = ?meta.last_log_id, "snapshot loaded");
                *sm.inner.current.lock() = Some(meta);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(sm)
    }

    /// The index of the last applied entry.
    #[must_use]
    pub fn applied_index(&self) -> u64 {
        self.inner.applied.lock().0.map_or(0, |l| l.index)
    }

    /// Replaces the store's content with a snapshot's; returns its meta.
    fn load(&self, bytes: &[u8]) -> Result<Meta, String> {
        let (payloads, _) = frames(bytes, KIND_RAFT_SNAPSHOT)?;
        let Some(first) = payloads.first() else {
            return Err("empty snapshot".into());
        };
        let head: Head = decode_value(first).map_err(|e| e.to_string())?;
        // The body is the log's snapshot format, frames after the head.
        let body_at = 16 + 8 + first.len();
        let body = bytes.get(body_at..).unwrap_or_default();
        let store = &self.inner.store;
        store.clear();
        with_apply_now(head.now_ms, || recovery::load_snapshot(store, body))?;
        self.inner.clock.observe(head.now_ms);
        *self.inner.applied.lock() = (head.meta.last_log_id, head.meta.last_membership.clone());
        Ok(head.meta)
    }

    fn write_file(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let dir = &self.inner.dir;
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// Applies one command.
    fn apply_command(&self, cmd: Command) -> Applied {
        let cmd = match cmd {
            Command::Batch(cmds) => {
                return Applied::Batch(cmds.into_iter().map(|c| self.apply_command(c)).collect())
            }
            cmd => cmd,
        };
        let now = cmd.now_ms();
        let store = &*self.inner.store;
        let answer = with_apply_now(now, || match cmd {
            Command::Write { op, .. } => dispatch::apply(store, op),
            Command::Rotate { rotate, new_id, .. } => {
                match store.rotate_to(&rotate, Some(new_id)) {
                    Ok(s) => Answer::Reply(sessiond_protocol::Reply::Session(s)),
                    Err(e) => Answer::Reply(dispatch::store_error(&e)),
                }
            }
            Command::Expire { .. } => {
                store.reclaim(usize::MAX);
                Answer::Reply(sessiond_protocol::Reply::Pong)
            }
            // Taken apart above.
            Command::Batch(_) => Answer::Reply(sessiond_protocol::Reply::Pong),
        });
        self.inner.clock.observe(now);
        match answer {
            Answer::Reply(r) => Applied::Reply(r),
            Answer::Session {
                maybe,
                namespace,
                raw,
            } => Applied::Session {
                maybe,
                head: raw.session_head(&namespace),
                attrs: raw.attrs.to_vec(),
            },
            Answer::Encoded { maybe, head, attrs } => Applied::Session { maybe, head, attrs },
        }
    }
}

/// Builds a snapshot from images taken when it was asked for.
#[derive(Debug)]
pub struct Builder {
    sm: StateMachine,
    bytes: Vec<u8>,
    meta: Meta,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let bytes = std::mem::take(&mut self.bytes);
        let sm = self.sm.clone();
        let bytes = tokio::task::spawn_blocking(move || sm.write_file(&bytes).map(|()| bytes))
            .await
            .map_err(|e| sm_error(ErrorVerb::Write, e))?
            .map_err(|e| sm_error(ErrorVerb::Write, e))?;
        *self.sm.inner.current.lock() = Some(self.meta.clone());
        info!(last = ?self.meta.last_log_id, bytes = bytes.len(), "snapshot written");
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok(self.inner.applied.lock().clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            let applied = match entry.payload {
                EntryPayload::Blank => Applied::Nothing,
                EntryPayload::Normal(cmd) => self.apply_command(cmd),
                EntryPayload::Membership(m) => {
                    self.inner.applied.lock().1 = Membership::new(Some(entry.log_id), m);
                    Applied::Nothing
                }
            };
            self.inner.applied.lock().0 = Some(entry.log_id);
            out.push(applied);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Taken here, on the state machine's task: no apply runs meanwhile.
        let (last, membership) = self.inner.applied.lock().clone();
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let meta = Meta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: format!(
                "{}-{}-{seq}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index)
            ),
        };
        let now_ms = crate::clock::Clock::now_ms(&*self.inner.clock);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&header(KIND_RAFT_SNAPSHOT));
        let mut failed = None;
        if let Err(e) = frame(
            &Head {
                meta: meta.clone(),
                now_ms,
            },
            &mut bytes,
        ) {
            failed = Some(e.to_string());
        }
        let mut emit = |_: &mut Vec<u8>, r: Result<(), String>| {
            if let Err(e) = r {
                failed.get_or_insert(e);
            }
        };
        recovery::encode_snapshot(&self.inner.store, &mut bytes, &mut emit);
        if let Some(e) = failed {
            tracing::error!(error = %e, "a snapshot record could not be encoded");
        }
        Builder {
            sm: self.clone(),
            bytes,
            meta,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let loaded = self
            .load(&bytes)
            .map_err(|e| sm_error(ErrorVerb::Read, e))?;
        if loaded.last_log_id != meta.last_log_id {
            return Err(sm_error(
                ErrorVerb::Read,
                "the snapshot's content does not match its meta",
            ));
        }
        let sm = self.clone();
        tokio::task::spawn_blocking(move || sm.write_file(&bytes))
            .await
            .map_err(|e| sm_error(ErrorVerb::Write, e))?
            .map_err(|e| sm_error(ErrorVerb::Write, e))?;
        *self.inner.current.lock() = Some(meta.clone());
        info!(last = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        if self.inner.current.lock().is_none() {
            return Ok(None);
        }
        let path = self.inner.dir.join(SNAPSHOT_FILE);
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| sm_error(ErrorVerb::Read, e))?
            .map_err(|e| sm_error(ErrorVerb::Read, e))?;
        // The meta comes from the file itself: a newer snapshot may have
        // replaced the one `current` named while it was read.
        let (payloads, _) =
            frames(&bytes, KIND_RAFT_SNAPSHOT).map_err(|e| sm_error(ErrorVerb::Read, e))?;
        let Some(first) = payloads.first() else {
            return Err(sm_error(ErrorVerb::Read, "empty snapshot"));
        };
        let head: Head = decode_value(first).map_err(|e| sm_error(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: head.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
