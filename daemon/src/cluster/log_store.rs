//! The Raft log on disk: one append-only file of framed records in the
//! log's byte layout (see `log::format`: a 16-byte header, then frames of
//! `u32` length, `u32` CRC32C of the payload, payload), the payload here a
//! `RaftRecord` encoded with the protocol's bincode configuration.
//!
//! Entries, truncations, purges, the vote and the commit index are records;
//! replaying the file in order rebuilds the log. The entries not yet purged
//! are also kept in memory (a snapshot every `SNAPSHOT_EVERY` entries keeps
//! them few). When purged records make up most of the file it is rewritten
//! with what is live (written, synced, renamed over, directory synced).
//!
//! `--fsync` keeps its meaning: under `always` an append is reported
//! flushed to Raft (which then counts it towards a majority) only after an
//! `fdatasync` that covers it; appends that arrive while one sync runs share
//! the next (group commit). Under `everysec` appends are reported at once and
//! a sync runs every second; under `no` the kernel decides. The vote is
//! always synced before it is reported saved, whatever the policy: a member
//! that forgot its vote could vote twice in one term.
//!
//! A damaged frame at the end of the file (a torn write) is cut at start-up;
//! a damaged frame followed by valid data is corruption and stops start-up.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogId, RaftLogReader};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sessiond_protocol::frame::decode_value;
use tracing::{error, warn};

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::log::FsyncPolicy;

/// The log file's name inside the member's raft directory.
pub(crate) const LOG_FILE: &str = "raft-log";
/// File kind byte of a Raft log (the log's segments are 1, snapshots 2).
pub(crate) const KIND_RAFT_LOG: u8 = 3;
/// Largest record payload read back: the log's limit (an entry holds one
/// request, at most a frame).
const MAX_RECORD: u32 = crate::log::format::MAX_RECORD_LEN;
/// Rewrite the file once it exceeds this many bytes and twice what is live.
const REWRITE_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// One record of the file.
#[derive(Debug, Serialize, Deserialize)]
enum RaftRecord {
    Entry(Entry),
    Vote(Vote),
    Committed(Option<LogId>),
    /// Entries from this index on are gone.
    Truncate(u64),
    /// Entries up to this log id are gone (in the snapshot).
    Purge(LogId),
}

/// A 16-byte file header in the log's layout with `kind`.
pub(crate) fn header(kind: u8) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(crate::log::format::MAGIC);
    h[8..10].copy_from_slice(&1u16.to_le_bytes());
    h[10] = kind;
    let crc = crc32c::crc32c(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends one frame holding `value` to `out` (the log's framing,
/// [`crate::log::format::encode_record`]).
pub(crate) fn frame<T: Serialize>(value: &T, out: &mut Vec<u8>) -> std::io::Result<()> {
    crate::log::format::encode_record(value, out).map_err(std::io::Error::other)
}

/// The frames of `bytes` after a header of `kind`: the payloads, and where
/// the valid part ends; a damaged frame followed by anything but zeros is an
/// error naming its offset.
pub(crate) fn frames(bytes: &[u8], kind: u8) -> Result<(Vec<&[u8]>, usize), String> {
    if bytes.len() < 16 {
        return Ok((Vec::new(), 0));
    }
    if bytes[..16] != header(kind) {
        return Err("bad file header (not a sessiond Raft file of this kind)".into());
    }
    let mut at = 16;
    let mut out = Vec::new();
    loop {
        let rest = &bytes[at..];
        if rest.len() < 8 {
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let ok = len <= MAX_RECORD
            && rest.len() >= 8 + len as usize
            && crc32c::crc32c(&rest[8..8 + len as usize]) == crc;
        if !ok {
            // A torn tail is the end of the log; anything after it is damage.
            let torn_only = len == 0 && rest.iter().all(|b| *b == 0)
                || rest.len() < 8 + len as usize
                || rest[(8 + len as usize).min(rest.len())..]
                    .iter()
                    .all(|b| *b == 0);
            if torn_only {
                break;
            }
            return Err(format!("damaged record at byte {at}"));
        }
        out.push(&rest[8..8 + len as usize]);
        at += 8 + len as usize;
    }
    Ok((out, at))
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// Bytes of the file.
    file_len: u64,
    /// Bytes of the entries still in the log (what a rewrite keeps).
    live_len: u64,
    /// Encoded size of each entry in `entries`.
    sizes: BTreeMap<u64, u64>,
}

enum Job {
    /// Report these entries flushed once a sync covers them.
    Flushed(LogFlushed<TypeConfig>),
    /// Sync now and answer.
    Sync(std::sync::mpsc::SyncSender<std::io::Result<()>>),
}

struct Inner {
    dir: PathBuf,
    policy: FsyncPolicy,
    state: Mutex<State>,
    file: Mutex<Arc<File>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

/// The Raft log storage of one member (cheap to clone; clones share it).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn io_error(verb: ErrorVerb, e: &std::io::Error) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::Logs,
        verb,
        std::io::Error::new(e.kind(), e.to_string()),
    )
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying what it holds.
    ///
    /// # Errors
    /// An I/O error, or `InvalidData` naming the damage.
    pub fn open(dir: &Path, policy: FsyncPolicy) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut state = State::default();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (records, valid) = frames(&bytes, KIND_RAFT_LOG).map_err(|why| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        })?;
        for payload in records {
            let record: RaftRecord = decode_value(payload).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: undecodable record: {e}", path.display()),
                )
            })?;
            state.replay(record, payload.len() as u64 + 8);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        if valid < 16 {
            // New (or a header cut short): start the file afresh.
            file.set_len(0)?;
            (&file).write_all(&header(KIND_RAFT_LOG))?;
            file.sync_all()?;
            sync_dir(dir)?;
            state.file_len = 16;
        } else {
            if (valid as u64) < bytes.len() as u64 {
                warn!(
                    cut = bytes.len() - valid,
                    "the Raft log ends in a torn write; cut"
                );
                file.set_len(valid as u64)?;
                file.sync_all()?;
            }
            state.file_len = valid as u64;
        }
        let file = Arc::new(file);
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            policy,
            state: Mutex::new(state),
            file: Mutex::new(Arc::clone(&file)),
            jobs: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let syncer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("sessiond-raft-sync".into())
            .spawn(move || syncer.run_syncer(&rx))?;
        *inner.jobs.lock() = Some(tx);
        Ok(Self { inner })
    }

    /// Stops the sync thread after a last sync.
    pub fn close(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        let jobs = self.inner.jobs.lock().take();
        if let Some(jobs) = jobs {
            if jobs.send(Job::Sync(tx)).is_ok() {
                let _ = rx.recv_timeout(Duration::from_secs(10));
            }
        }
    }

    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let file = Arc::clone(&self.inner.file.lock());
        (&*file).write_all(bytes)?;
        self.inner.state.lock().file_len += bytes.len() as u64;
        Ok(())
    }

    /// Syncs everything written so far, off the async workers.
    async fn sync_now(&self) -> std::io::Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = self
            .inner
            .jobs
            .lock()
            .as_ref()
            .is_some_and(|j| j.send(Job::Sync(tx)).is_ok());
        if !sent {
            return Err(std::io::Error::other("the Raft log is closed"));
        }
        tokio::task::spawn_blocking(move || {
            rx.recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("the Raft log sync thread stopped")))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    fn record(&self, record: &RaftRecord) -> std::io::Result<()> {
        let mut buf = Vec::new();
        frame(record, &mut buf)?;
        self.write(&buf)
    }

    /// Rewrites the file with only what is live, when purged records make
    /// up most of it.
    fn maybe_rewrite(&self) -> std::io::Result<()> {
        let (bytes, vote, committed, purged, entries) = {
            let s = self.inner.state.lock();
            if s.file_len < REWRITE_MIN_BYTES || s.file_len < 2 * s.live_len {
                return Ok(());
            }
            let mut buf = Vec::with_capacity(usize::try_from(s.live_len).unwrap_or(0) + 4096);
            buf.extend_from_slice(&header(KIND_RAFT_LOG));
            for e in s.entries.values() {
                frame(&RaftRecord::Entry(e.clone()), &mut buf)?;
            }
            (buf, s.vote, s.committed, s.purged, s.entries.len())
        };
        let mut bytes = bytes;
        if let Some(v) = vote {
            frame(&RaftRecord::Vote(v), &mut bytes)?;
        }
        frame(&RaftRecord::Committed(committed), &mut bytes)?;
        if let Some(p) = purged {
            frame(&RaftRecord::Purge(p), &mut bytes)?;
        }
        let dir = &self.inner.dir;
        let tmp = dir.join(format!("{LOG_FILE}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        // Everything written to the old file is in the new one: Raft calls
        // the storage one operation at a time, and this purge is the one
        // running, so nothing is written between the copy and the switch.
        let mut file_slot = self.inner.file.lock();
        std::fs::rename(&tmp, dir.join(LOG_FILE))?;
        sync_dir(dir)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .read(true)
            .open(dir.join(LOG_FILE))?;
        *file_slot = Arc::new(file);
        drop(file_slot);
        let mut s = self.inner.state.lock();
        s.file_len = bytes.len() as u64;
        tracing::info!(entries, bytes = bytes.len(), "Raft log rewritten");
        Ok(())
    }
}

impl State {
    fn replay(&mut self, record: RaftRecord, size: u64) {
        match record {
            RaftRecord::Entry(e) => {
                let index = e.get_log_id().index;
                self.drop_from(index);
                self.live_len += size;
                self.sizes.insert(index, size);
                self.entries.insert(index, e);
            }
            RaftRecord::Vote(v) => self.vote = Some(v),
            RaftRecord::Committed(c) => self.committed = c,
            RaftRecord::Truncate(index) => self.drop_from(index),
            RaftRecord::Purge(id) => self.purge(id),
        }
    }

    fn drop_from(&mut self, index: u64) {
        let gone = self.sizes.split_off(&index);
        self.live_len -= gone.values().sum::<u64>();
        self.entries.split_off(&index);
    }

    fn purge(&mut self, id: LogId) {
        let keep = self.sizes.split_off(&(id.index + 1));
        let gone = std::mem::replace(&mut self.sizes, keep);
        self.live_len -= gone.values().sum::<u64>();
        let keep = self.entries.split_off(&(id.index + 1));
        self.entries = keep;
        if self.purged.is_none_or(|p| p.index < id.index) {
            self.purged = Some(id);
        }
    }
}

impl Inner {
    fn run_syncer(&self, jobs: &mpsc::Receiver<Job>) {
        let every = match self.policy {
            FsyncPolicy::EverySec => Some(Duration::from_secs(1)),
            FsyncPolicy::Always | FsyncPolicy::No => None,
        };
        loop {
            let first = match every {
                Some(d) => match jobs.recv_timeout(d) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                },
            };
            let mut batch: Vec<Job> = first.into_iter().collect();
            while let Ok(more) = jobs.try_recv() {
                batch.push(more);
            }
            let file = Arc::clone(&self.file.lock());
            let result = file.sync_data();
            if let Err(e) = &result {
                error!(error = %e, "cannot sync the Raft log");
            }
            for job in batch {
                let outcome = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                };
                match job {
                    Job::Flushed(cb) => cb.log_io_completed(outcome),
                    Job::Sync(tx) => {
                        let _ = tx.send(outcome);
                    }
                }
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let s = self.inner.state.lock();
        Ok(s.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let s = self.inner.state.lock();
        let last = s
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(s.purged);
        Ok(LogState {
            last_purged_log_id: s.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.record(&RaftRecord::Vote(*vote))
            .map_err(|e| io_error(ErrorVerb::Write, &e))?;
        self.inner.state.lock().vote = Some(*vote);
        self.sync_now()
            .await
            .map_err(|e| io_error(ErrorVerb::Write, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.state.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.record(&RaftRecord::Committed(committed))
            .map_err(|e| io_error(ErrorVerb::Write, &e))?;
        self.inner.state.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.state.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut buf = Vec::new();
        let mut added = Vec::new();
        for e in entries {
            let start = buf.len();
            frame(&RaftRecord::Entry(e.clone()), &mut buf)
                .map_err(|err| io_error(ErrorVerb::Write, &err))?;
            added.push(((buf.len() - start) as u64, e));
        }
        self.write(&buf)
            .map_err(|e| io_error(ErrorVerb::Write, &e))?;
        {
            let mut s = self.inner.state.lock();
            for (size, e) in added {
                let index = e.get_log_id().index;
                s.live_len += size;
                s.sizes.insert(index, size);
                s.entries.insert(index, e);
            }
        }
        match self.inner.policy {
            FsyncPolicy::Always => {
                let jobs = self.inner.jobs.lock();
                let Some(jobs) = jobs.as_ref() else {
                    return Err(io_error(
                        ErrorVerb::Write,
                        &std::io::Error::other("the Raft log is closed"),
                    ));
                };
                if let Err(mpsc::SendError(Job::Flushed(cb))) = jobs.send(Job::Flushed(callback)) {
                    cb.log_io_completed(Err(std::io::Error::other("the Raft log is closed")));
                }
            }
            FsyncPolicy::EverySec | FsyncPolicy::No => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.record(&RaftRecord::Truncate(log_id.index))
            .map_err(|e| io_error(ErrorVerb::Write, &e))?;
        self.inner.state.lock().drop_from(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.record(&RaftRecord::Purge(log_id))
            .map_err(|e| io_error(ErrorVerb::Write, &e))?;
        self.inner.state.lock().purge(log_id);
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.maybe_rewrite())
            .await
            .map_err(|e| io_error(ErrorVerb::Write, &std::io::Error::other(e)))?
            .map_err(|e| io_error(ErrorVerb::Write, &e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use openraft::{CommittedLeaderId, EntryPayload};
    use proptest::prelude::*;

    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn file(records: &[RaftRecord]) -> Vec<u8> {
        let mut out = header(KIND_RAFT_LOG).to_vec();
        for r in records {
            frame(r, &mut out).unwrap();
        }
        out
    }

    fn replayed(bytes: &[u8]) -> State {
        let (payloads, _) = frames(bytes, KIND_RAFT_LOG).unwrap();
        let mut s = State::default();
        for p in payloads {
            s.replay(decode_value(p).unwrap(), p.len() as u64 + 8);
        }
        s
    }

    #[test]
    fn truncation_and_purge_replay_in_order() {
        let bytes = file(&[
            RaftRecord::Entry(entry(1, 1)),
            RaftRecord::Entry(entry(1, 2)),
            RaftRecord::Entry(entry(1, 3)),
            RaftRecord::Truncate(2),
            RaftRecord::Entry(entry(2, 2)),
            RaftRecord::Purge(*entry(1, 1).get_log_id()),
        ]);
        let s = replayed(&bytes);
        let kept: Vec<_> = s.entries.values().map(|e| *e.get_log_id()).collect();
        assert_eq!(kept, vec![*entry(2, 2).get_log_id()]);
        assert_eq!(s.purged, Some(*entry(1, 1).get_log_id()));
        assert_eq!(s.live_len, s.sizes.values().sum::<u64>());
    }

    #[test]
    fn a_torn_tail_ends_the_log_and_damage_before_the_end_is_refused() {
        let bytes = file(&[
            RaftRecord::Entry(entry(1, 1)),
            RaftRecord::Entry(entry(1, 2)),
        ]);
        let cut = &bytes[..bytes.len() - 3];
        let (payloads, valid) = frames(cut, KIND_RAFT_LOG).unwrap();
        assert_eq!(payloads.len(), 1);
        assert!(valid < cut.len());
        let mut damaged = bytes.clone();
        damaged[16 + 9] ^= 0xff; // inside the first record's payload
        assert!(frames(&damaged, KIND_RAFT_LOG).is_err());
    }

    #[tokio::test]
    async fn a_reopened_log_has_what_was_appended_and_voted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
            log.save_vote(&Vote::new(3, 1)).await.unwrap();
            log.record(&RaftRecord::Entry(entry(3, 1))).unwrap();
            log.sync_now().await.unwrap();
            log.close();
        }
        let mut log = LogStore::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(*entry(3, 1).get_log_id()));
        log.close();
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut file = header(KIND_RAFT_LOG).to_vec();
            file.extend_from_slice(&bytes);
            if let Ok((payloads, _)) = frames(&file, KIND_RAFT_LOG) {
                for p in payloads {
                    let _ = decode_value::<RaftRecord>(p);
                }
            }
        }
    }
}
