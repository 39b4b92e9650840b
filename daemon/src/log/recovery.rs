//! Opening a data dir: the lock, the newest snapshot, the segments after it,
//! torn tails and damage, and the replay of it all into the store; writing
//! snapshots; and `sessiond check-log`.
//!
//! Files: `LOCK` (held with an exclusive lock while a daemon runs),
//! `snap-N.snap` (every live record as of the start of segment N),
//! `seg-N.log` (the log from there on). A snapshot is written to a `.tmp`
//! name, synced, renamed, and the directory synced; only then are the files it
//! replaces removed, so a crash at any point leaves either the old set or the
//! new one.
//!
//! Replay applies the ordering rule of [`format`](mod@super::format): per
//! key, a record applies only if its LSN is above the last one applied there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sessiond_protocol::{SessionId, Ttl};
use tracing::{info, warn};

use super::format::{self, FileKind, LogRecord, PutRef, RecordRef, Tail};
use super::vfs::{DirLock, LockError, Vfs, VfsFile};
use super::{file_name, io_err, parse_name, LogConfig, LogError};
use crate::store::record::Key;
use crate::store::{Restored, Restoring, Store};

/// What [`open`] hands to the writer.
pub(crate) struct Opened {
    pub(crate) dir: PathBuf,
    /// The fresh segment, or why it could not be made (a full disk: the
    /// daemon starts read-only and the writer tries again).
    pub(crate) segment: Result<Box<dyn VfsFile>, String>,
    pub(crate) segment_no: u64,
    pub(crate) log_bytes: u64,
    /// The data dir lock: it lasts as long as this handle.
    pub(crate) lock: Box<dyn DirLock>,
}

/// Syncs a directory so renames and new files in it survive a crash.
fn sync_dir(vfs: &dyn Vfs, dir: &Path) -> Result<(), LogError> {
    vfs.sync_dir(dir).map_err(io_err("sync directory", dir))
}

/// Creates segment `n` with its header, synced, 0600. On failure nothing is
/// left behind (a half-made file is removed).
pub(crate) fn create_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    n: u64,
) -> Result<Box<dyn VfsFile>, LogError> {
    let path = dir.join(file_name(FileKind::Segment, n));
    // Not O_APPEND: under `--fsync always` the writer zero-fills ahead with
    // positioned writes (which O_APPEND would turn into appends) and writes
    // records at its cursor, which stays at the end of the records.
    let mut f = vfs.create_new(&path).map_err(io_err("create", &path))?;
    let made = f
        .write_all(&format::header(FileKind::Segment))
        .and_then(|()| f.sync_all())
        .map_err(io_err("write the header of", &path))
        .and_then(|()| sync_dir(vfs, dir));
    if let Err(e) = made {
        drop(f);
        let _ = vfs.remove(&path);
        let _ = vfs.sync_dir(dir);
        return Err(e);
    }
    Ok(f)
}

/// The data files of `dir`, sorted by number (unfinished snapshots removed).
fn list(vfs: &dyn Vfs, dir: &Path) -> Result<(Vec<u64>, Vec<u64>), LogError> {
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    for name in vfs.list(dir).map_err(io_err("read directory", dir))? {
        match parse_name(&name) {
            Some((FileKind::Segment, n)) => segments.push(n),
            Some((FileKind::Snapshot, n)) => snapshots.push(n),
            None if name.ends_with(".tmp") => {
                // A snapshot that never finished: the files it was to replace are still there.
                let path = dir.join(&name);
                warn!(file = %path.display(), "removing an unfinished snapshot");
                remove(vfs, &path)?;
            }
            None => {}
        }
    }
    segments.sort_unstable();
    snapshots.sort_unstable();
    Ok((segments, snapshots))
}

/// Locks `dir` (creating it 0700 if needed).
fn lock(vfs: &dyn Vfs, dir: &Path) -> Result<Box<dyn DirLock>, LogError> {
    vfs.create_dir_all(dir)
        .map_err(io_err("create data dir", dir))?;
    match vfs.lock(dir) {
        Ok(lock) => Ok(lock),
        Err(LockError::Held) => Err(LogError::Locked {
            dir: dir.to_owned(),
        }),
        Err(LockError::Io(e)) => Err(io_err("lock", &dir.join("LOCK"))(e)),
    }
}

/// Keeps a copy of the bytes from `offset` on beside the file, then cuts the
/// file there.
/// Damage inside the header leaves nothing to keep: the file goes (its copy
/// stays), so that the next plain start does not trip over an empty file.
fn cut(vfs: &dyn Vfs, path: &Path, bytes: &[u8], offset: u64) -> Result<PathBuf, LogError> {
    let copy = save_copy(vfs, path, bytes, offset)?;
    if offset < format::HEADER_LEN as u64 {
        remove(vfs, path)?;
        if let Some(dir) = path.parent() {
            sync_dir(vfs, dir)?;
        }
    } else {
        truncate(vfs, path, offset)?;
    }
    Ok(copy)
}

/// Cuts a torn tail: its bytes were never acknowledged, so the copy is kept
/// if the disk has room for it, and the cut goes ahead if not (a full disk
/// must not keep the daemon from starting).
fn cut_torn(vfs: &dyn Vfs, path: &Path, bytes: &[u8], offset: u64) -> Result<String, LogError> {
    let copy = match save_copy(vfs, path, bytes, offset) {
        Ok(copy) => copy.display().to_string(),
        Err(e) => format!("none ({e})"),
    };
    truncate(vfs, path, offset)?;
    Ok(copy)
}

fn save_copy(vfs: &dyn Vfs, path: &Path, bytes: &[u8], offset: u64) -> Result<PathBuf, LogError> {
    let copy = PathBuf::from(format!("{}.cut-at-{offset}", path.display()));
    let tail = bytes.get(offset as usize..).unwrap_or_default();
    let saved = vfs.create(&copy).and_then(|mut f| {
        f.write_all(tail)?;
        f.sync_all()
    });
    if let Err(e) = saved {
        let _ = vfs.remove(&copy);
        return Err(io_err("save the cut bytes to", &copy)(e));
    }
    Ok(copy)
}

fn truncate(vfs: &dyn Vfs, path: &Path, len: u64) -> Result<(), LogError> {
    let mut f = vfs.open_write(path).map_err(io_err("open", path))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(io_err("truncate", path))
}

/// The size of `path`, if it can be read (a hint only).
fn vfs_len(vfs: &dyn Vfs, path: &Path) -> Option<u64> {
    vfs.len(path).ok()
}

fn remove(vfs: &dyn Vfs, path: &Path) -> Result<(), LogError> {
    vfs.remove(path).map_err(io_err("remove", path))
}

/// Replays records into a store under the ordering rule.
///
/// A replay may take one part of the keys (`part` of `parts`, by a hash of
/// the session id): the ordering rule is per key, so replays of disjoint
/// parts of the same records can run on several threads at once, each
/// reading every record in file order and applying those of its keys
/// ([`replay_all`]).
pub(crate) struct Replay<'a> {
    store: &'a Store,
    now: u64,
    part: u64,
    parts: u64,
    /// The namespace of the last record, and its number in the store.
    last_ns: Option<(String, u32)>,
    /// The last LSN applied to each key.
    last: HashMap<(u32, [u8; 16]), u64, ahash::RandomState>,
    /// The highest LSN seen.
    max_lsn: u64,
    /// The snapshot's checkpoint: records below it are in its images.
    floor: u64,
    /// What a record without an LSN does in the pass under way.
    unordered: Unordered,
    applied: u64,
    skipped: u64,
    /// What the restores left to do once the pass is over.
    pending: Restoring,
}

/// How a pass over a file's records goes (see [`Replays`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// In file order; a record without an LSN always applies.
    Forward,
    /// Newest file first (segments); within a file, records in file order
    /// (the ordering rule makes the order free) unless some carry no LSN (a
    /// version 1 file): then newest first, and a record without an LSN
    /// applies only to a key no newer record decided, and then decides it.
    Backward,
    /// In file order, after every segment: a snapshot's images, each applied
    /// only to a key no segment decided.
    Images,
}

/// What a record without an LSN does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unordered {
    Apply,
    IfUndecidedThenDecide,
    IfUndecided,
}

/// The part of the keys a session id belongs to, of `parts`.
fn part_of(id: &[u8; 16], parts: u64) -> u64 {
    let (a, b) = id.split_at(8);
    let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
    let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
    // Ids are random or time-ordered: mix both halves before taking a part.
    ((a ^ b).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % parts
}

impl<'a> Replay<'a> {
    /// Room for about `records` keys up front (the table then never grows
    /// by rehashing all of it during a replay).
    fn reserve(&mut self, records: usize) {
        self.last.reserve(records.saturating_sub(self.last.len()));
    }

    #[cfg(test)]
    pub(crate) fn new(store: &'a Store) -> Self {
        Self::part(store, 0, 1)
    }

    /// The replay of part `part` of `parts` of the keys.
    fn part(store: &'a Store, part: u64, parts: u64) -> Self {
        Self {
            store,
            now: store.now_ms(),
            part,
            parts,
            last_ns: None,
            last: HashMap::default(),
            max_lsn: 0,
            floor: 0,
            unordered: Unordered::Apply,
            applied: 0,
            skipped: 0,
            pending: Restoring::default(),
        }
    }

    /// Whether records of `id` are this replay's to apply.
    fn mine(&self, id: &[u8; 16]) -> bool {
        self.parts == 1 || part_of(id, self.parts) == self.part
    }

    /// The store's key of (`namespace`, `id`); `None` past the namespace
    /// limit.
    fn key(&mut self, namespace: &str, id: [u8; 16]) -> Option<Key> {
        // Consecutive records are mostly of one namespace.
        let ns = match &self.last_ns {
            Some((name, ns)) if name == namespace => *ns,
            _ => {
                let ns = self.store.restore_namespace(namespace)?;
                self.last_ns = Some((namespace.to_owned(), ns));
                ns
            }
        };
        Some(Key {
            ns,
            id: SessionId(id),
        })
    }

    /// The key of a record of LSN `lsn` on (`namespace`, `id`) if it is to
    /// apply: newer than what was applied there; a record without an LSN (a
    /// snapshot's image, a version 1 file) as the pass says.
    fn newer(&mut self, namespace: &str, id: [u8; 16], lsn: u64) -> Option<Key> {
        if lsn != 0 {
            self.max_lsn = self.max_lsn.max(lsn);
            if lsn < self.floor {
                self.skipped += 1;
                return None;
            }
        }
        let key = self.key(namespace, id)?;
        if lsn == 0 {
            let decided = match self.unordered {
                Unordered::Apply => false,
                Unordered::IfUndecided => self.last.contains_key(&(key.ns, id)),
                Unordered::IfUndecidedThenDecide => match self.last.entry((key.ns, id)) {
                    std::collections::hash_map::Entry::Occupied(_) => true,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(0);
                        false
                    }
                },
            };
            if decided {
                self.skipped += 1;
                return None;
            }
            return Some(key);
        }
        let last = self.last.entry((key.ns, id)).or_insert(0);
        if lsn > *last {
            *last = lsn;
            Some(key)
        } else {
            self.skipped += 1;
            None
        }
    }

    /// Applies `records` as `pass` says.
    fn apply_pass(&mut self, records: &[RecordRef<'_>], pass: Pass) {
        self.unordered = match pass {
            Pass::Forward => Unordered::Apply,
            Pass::Backward => Unordered::IfUndecidedThenDecide,
            Pass::Images => Unordered::IfUndecided,
        };
        // Within a file whose records all carry LSNs, the ordering rule makes
        // the order free: file order then (owner sets grow at their end).
        // Only records without one are taken newest first.
        if pass == Pass::Backward && records.iter().any(RecordRef::unordered) {
            for r in records.iter().rev() {
                self.apply_ref(r, true);
            }
        } else {
            for r in records {
                self.apply_ref(r, false);
            }
        }
        self.store.restore_flush(&mut self.pending);
    }

    /// Applies an owned record.
    #[cfg(test)]
    pub(crate) fn apply(&mut self, record: LogRecord) {
        self.apply_ref(&record.as_ref(), false);
        self.store.restore_flush(&mut self.pending);
    }

    /// Applies a record read in place (if its key is in this replay's part);
    /// a batch's records newest first if `backward`. What it leaves pending
    /// is done by the end of the pass.
    fn apply_ref(&mut self, record: &RecordRef<'_>, backward: bool) {
        match record {
            RecordRef::Put(p) => {
                if !self.mine(&p.id) {
                    return;
                }
                self.applied += 1;
                if let Some(key) = self.newer(p.namespace, p.id, p.lsn) {
                    let r = Restored {
                        owner: p.owner,
                        created_at: p.created_at,
                        last_active: p.last_active,
                        ttl: Ttl {
                            idle_ttl_ms: p.idle_ttl,
                            max_lifetime_ms: p.max_lifetime,
                        },
                        version: p.version,
                        attrs: p.attrs,
                    };
                    self.store.restore_put(key, r, self.now, &mut self.pending);
                }
            }
            RecordRef::Delete {
                lsn,
                namespace,
                id,
                tombstone_until,
            } => {
                if !self.mine(id) {
                    return;
                }
                self.applied += 1;
                if let Some(key) = self.newer(namespace, *id, *lsn) {
                    self.store.restore_delete(key, *tombstone_until, self.now);
                }
            }
            RecordRef::Alias {
                lsn,
                namespace,
                id,
                to,
                until,
            } => {
                if !self.mine(id) {
                    return;
                }
                self.applied += 1;
                // An alias is laid once, with its id's delete, and never
                // changed: it only needs the LSN's high-water mark (and to
                // be newer than a snapshot that already holds it).
                self.max_lsn = self.max_lsn.max(*lsn);
                if *lsn != 0 && *lsn < self.floor {
                    return;
                }
                if let Some(key) = self.key(namespace, *id) {
                    self.store.restore_alias(key, *to, *until, self.now);
                }
            }
            RecordRef::Batch(records) => {
                if backward {
                    for r in records.iter().rev() {
                        self.apply_ref(r, true);
                    }
                } else {
                    for r in records {
                        self.apply_ref(r, false);
                    }
                }
            }
            RecordRef::Checkpoint { lsn } => {
                // Every part takes it.
                self.floor = self.floor.max(*lsn);
                self.max_lsn = self.max_lsn.max(*lsn);
            }
        }
    }
}

/// A file's records as scanned, borrowing from its bytes.
type ScanRefs<'a> = format::Scan<RecordRef<'a>>;

self_cell::self_cell!(
    /// A log file's bytes with their scan, so that the scan can be done on
    /// the reader's thread and handed to the replay with the bytes it borrows.
    struct ScannedFile {
        owner: Vec<u8>,
        #[covariant]
        dependent: ScanRefs,
    }
);

impl ScannedFile {
    /// Scans a file's `bytes` (`newest`: see [`format::scan_in_place`]).
    fn scan(bytes: Vec<u8>, kind: FileKind, newest: bool) -> Self {
        Self::new(bytes, |b| format::scan_in_place(b, kind, newest))
    }
}

/// The LSN of the checkpoint that opens the snapshot at `path`, read alone
/// (the rest is read when its images are due); `None` if the file does not
/// start with a sound one (its scan then says what is wrong).
fn snapshot_checkpoint(vfs: &dyn Vfs, path: &Path) -> Result<Option<u64>, LogError> {
    // A checkpoint's frame is a few bytes: one that does not fit in this
    // prefix is damage, left to the scan.
    let prefix = format::HEADER_LEN + format::FRAME_HEADER_LEN + 64;
    let bytes = vfs
        .read_prefix(path, prefix)
        .map_err(io_err("read", path))?;
    Ok(match format::first_record(&bytes, FileKind::Snapshot) {
        Some(RecordRef::Checkpoint { lsn }) => Some(lsn),
        _ => None,
    })
}

/// Replays in parts on threads of their own.
pub(crate) struct Replays<'a> {
    parts: Vec<Replay<'a>>,
    /// Files of fewer records are replayed on the calling thread.
    parallel_from: usize,
}

/// Below this many records a file is replayed on the calling thread.
const PARALLEL_FROM: usize = 4096;

impl<'a> Replays<'a> {
    /// `threads` replays (at least one), each of its part of the keys.
    pub(crate) fn new(store: &'a Store, threads: usize) -> Self {
        let parts = threads.max(1) as u64;
        Self {
            parts: (0..parts).map(|p| Replay::part(store, p, parts)).collect(),
            parallel_from: PARALLEL_FROM,
        }
    }

    /// Threads even for the smallest file (tests).
    #[cfg(test)]
    pub(crate) fn always_threaded(mut self) -> Self {
        self.parallel_from = 0;
        self
    }

    /// Room for about `records` keys in all.
    fn reserve(&mut self, records: usize) {
        let each = records / self.parts.len();
        for p in &mut self.parts {
            p.reserve(each);
        }
    }

    /// Applies `records` (in file order) under the ordering rule, each part
    /// on its own thread.
    pub(crate) fn apply_all(&mut self, records: &[RecordRef<'_>]) {
        self.apply(records, Pass::Forward);
    }

    /// Applies a file's `records` as `pass` says, each part on its own
    /// thread.
    pub(crate) fn apply(&mut self, records: &[RecordRef<'_>], pass: Pass) {
        if self.parts.len() == 1 || records.len() < self.parallel_from {
            // One thread: each part in turn (a part skips the others' keys).
            for p in &mut self.parts {
                p.apply_pass(records, pass);
            }
            return;
        }
        std::thread::scope(|s| {
            for p in &mut self.parts {
                s.spawn(move || p.apply_pass(records, pass));
            }
        });
    }

    /// Sets the snapshot's checkpoint before its images are applied (the
    /// segments after it are replayed first).
    fn set_floor(&mut self, lsn: u64) {
        for p in &mut self.parts {
            p.floor = p.floor.max(lsn);
            p.max_lsn = p.max_lsn.max(lsn);
        }
    }

    fn max_lsn(&self) -> u64 {
        self.parts.iter().map(|p| p.max_lsn).max().unwrap_or(0)
    }

    fn applied(&self) -> u64 {
        self.parts.iter().map(|p| p.applied).sum()
    }

    fn skipped(&self) -> u64 {
        self.parts.iter().map(|p| p.skipped).sum()
    }
}

impl Drop for Replays<'_> {
    /// The owner sets the replay filled are sorted once it is done.
    fn drop(&mut self) {
        if let Some(p) = self.parts.first() {
            p.store.settle_owner_index();
        }
    }
}

/// Threads for a replay: the cores this process may use, at most 16.
fn replay_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
}

/// Damage at `offset` of `path` (whose bytes are `bytes`): refuses to start,
/// or with `--repair` cuts it there (keeping a copy of what is cut).
fn repair_or_refuse(
    config: &LogConfig,
    path: &Path,
    bytes: &[u8],
    offset: u64,
    reason: &str,
) -> Result<(), LogError> {
    if !config.repair {
        return Err(LogError::Corrupt {
            file: path.to_owned(),
            offset,
            reason: reason.to_owned(),
        });
    }
    let copy = cut(&*config.vfs, path, bytes, offset)?;
    warn!(file = %path.display(), offset, reason, copy = %copy.display(), "repair: cut damaged records");
    Ok(())
}

/// Replays the data dir into `store` and opens a fresh segment.
pub(crate) fn open(config: &LogConfig, store: &Arc<Store>) -> Result<Opened, LogError> {
    let vfs = &*config.vfs;
    let dir = &config.dir;
    let lock = lock(vfs, dir)?;
    let started = std::time::Instant::now();
    let (segments, snapshots) = list(vfs, dir)?;
    let mut replay = Replays::new(store, replay_threads());
    let mut bytes_read = 0u64;
    let mut base = 0;
    // The segments are replayed first, newest first, so that each key's
    // newest record is the one materialised and older ones are skipped (by
    // the ordering rule, the same state as in file order); the snapshot's
    // images go last, each to a key no segment decided. Its checkpoint is
    // needed first.
    let mut snapshot = None;
    if let Some(&n) = snapshots.last() {
        let path = dir.join(file_name(FileKind::Snapshot, n));
        // About one record per 300 bytes (a session's image).
        let len = vfs_len(vfs, &path).unwrap_or(0);
        store.reserve_records(usize::try_from(len / 300).unwrap_or(0).min(1 << 24));
        // Its checkpoint is needed first; the rest is read after the
        // segments, on the reader's thread.
        if let Some(lsn) = snapshot_checkpoint(vfs, &path)? {
            replay.set_floor(lsn);
        }
        snapshot = Some(path);
        base = n;
        for old in snapshots.iter().filter(|m| **m < n) {
            remove(vfs, &dir.join(file_name(FileKind::Snapshot, *old)))?;
        }
    }
    let mut live: Vec<u64> = segments.iter().copied().filter(|n| *n >= base).collect();
    // Segments whose creation never finished hold no record: the one before
    // them is the newest, the only one that may end torn. The newest one's
    // bytes, read here, are not read again below.
    let mut newest_bytes = None;
    while let Some(&n) = live.last() {
        let path = dir.join(file_name(FileKind::Segment, n));
        let bytes = vfs.read(&path).map_err(io_err("read", &path))?;
        if !format::unfinished_segment(&bytes) {
            newest_bytes = Some(bytes);
            break;
        }
        warn!(file = %path.display(), bytes = bytes.len(), "removing a segment that holds no record (its creation never finished)");
        remove(vfs, &path)?;
        sync_dir(vfs, dir)?;
        live.pop();
    }
    for old in segments.iter().filter(|n| **n < base) {
        // Left behind by a compaction that crashed after its snapshot landed.
        remove(vfs, &dir.join(file_name(FileKind::Segment, *old)))?;
    }
    let mut log_bytes = 0;
    // About one key per 300 bytes of log (a session's post-image).
    let segment_bytes: u64 = live
        .iter()
        .filter_map(|n| vfs_len(vfs, &dir.join(file_name(FileKind::Segment, *n))))
        .sum();
    let expected = usize::try_from(segment_bytes / 300)
        .unwrap_or(0)
        .min(1 << 24);
    replay.reserve(expected);
    store.reserve_records(expected.saturating_sub(store.len()));
    // Files are read and scanned one ahead of the replay (newest segment
    // first, the snapshot last), on a thread of their own, so that the disk,
    // the scan and the replay overlap. Buffers go round between the reader
    // and the replay, so that only the first files fault in fresh memory:
    // at most three buffers exist (the file being replayed, the next one
    // being read or scanned or waiting, and one spare).
    let stashed_newest = newest_bytes.is_some();
    let ahead: Vec<(PathBuf, FileKind)> = live
        .iter()
        .rev()
        .skip(usize::from(stashed_newest))
        .map(|n| {
            (
                dir.join(file_name(FileKind::Segment, *n)),
                FileKind::Segment,
            )
        })
        .chain(snapshot.clone().map(|p| (p, FileKind::Snapshot)))
        .collect();
    let newest_no = live.last().copied();
    std::thread::scope(|scope| -> Result<(), LogError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(0);
        let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        scope.spawn(move || {
            let mut fresh = 2;
            for (i, (path, kind)) in ahead.into_iter().enumerate() {
                let mut buf = if fresh > 0 {
                    fresh -= 1;
                    Vec::new()
                } else {
                    match back_rx.recv() {
                        Ok(buf) => buf,
                        Err(_) => break,
                    }
                };
                let newest = i == 0 && !stashed_newest && kind == FileKind::Segment;
                let read = vfs
                    .read_into(&path, &mut buf)
                    .map(|()| ScannedFile::scan(buf, kind, newest))
                    .map_err(io_err("read", &path));
                if tx.send(read).is_err() {
                    break;
                }
            }
        });
        for n in live.iter().rev() {
            let path = dir.join(file_name(FileKind::Segment, *n));
            let newest = Some(*n) == newest_no;
            let stashed = if newest { newest_bytes.take() } else { None };
            let file = match stashed {
                Some(bytes) => ScannedFile::scan(bytes, FileKind::Segment, true),
                None => rx.recv().map_err(|_| {
                    io_err("read", &path)(std::io::Error::other("reader stopped"))
                })??,
            };
            let bytes = file.borrow_owner();
            let s = file.borrow_dependent();
            bytes_read += bytes.len() as u64;
            let holds_records = match &s.tail {
                Tail::Clean => true,
                Tail::Empty => {
                    // Its creation never finished (a crash, or a full disk): it
                    // holds no record.
                    warn!(file = %path.display(), bytes = bytes.len(), "removing a segment that holds no record (its creation never finished)");
                    remove(vfs, &path)?;
                    sync_dir(vfs, dir)?;
                    false
                }
                Tail::Torn { offset } => {
                    let copy = cut_torn(vfs, &path, bytes, *offset)?;
                    warn!(file = %path.display(), offset, copy, "cut the end of the log that a crash left half written (it was never acknowledged; a copy is kept)");
                    true
                }
                Tail::Corrupt { offset, reason } => {
                    repair_or_refuse(config, &path, bytes, *offset, reason)?;
                    true
                }
            };
            if holds_records {
                log_bytes += s.valid_len;
                replay.apply(&s.records, Pass::Backward);
            }
            // Back to the reader, which waits for it before the file after
            // next (if it is done, the buffer is simply freed).
            let _ = back_tx.try_send(file.into_owner());
        }
        if let Some(path) = &snapshot {
            let file = rx
                .recv()
                .map_err(|_| io_err("read", path)(std::io::Error::other("reader stopped")))??;
            let (bytes, s) = (file.borrow_owner(), file.borrow_dependent());
            bytes_read += bytes.len() as u64;
            if let Tail::Corrupt { offset, reason } = &s.tail {
                // A snapshot is complete before it is renamed into place, so
                // any damage is the disk's; repair keeps what precedes it.
                repair_or_refuse(config, path, bytes, *offset, reason)?;
            }
            replay.apply(&s.records, Pass::Images);
        }
        Ok(())
    })?;
    store.restore_lsn(replay.max_lsn() + 1);
    // The newest segment may hold records a crash left unsynced (in the page
    // cache): they are synced before a newer segment exists, since only the
    // newest may end torn.
    if let Some(&n) = live.last() {
        let path = dir.join(file_name(FileKind::Segment, n));
        vfs.open_write(&path)
            .and_then(|mut f| f.sync_all())
            .map_err(io_err("sync", &path))?;
    }
    let next = live.last().map_or(base.max(1), |n| n + 1);
    let segment = create_segment(vfs, dir, next).map_err(|e| {
        warn!(error = %e, "cannot start a new log segment: serving reads only until it can");
        e.to_string()
    });
    let secs = started.elapsed().as_secs_f64();
    info!(
        dir = %dir.display(),
        records = replay.applied(),
        superseded = replay.skipped(),
        live = store.len(),
        mb = bytes_read as f64 / 1e6,
        secs,
        "recovered"
    );
    Ok(Opened {
        dir: dir.clone(),
        segment,
        segment_no: next,
        log_bytes: log_bytes + format::HEADER_LEN as u64,
        lock,
    })
}

/// Writes `snap-upto.snap` from the live store and removes the files it
/// replaces (segments before `upto`, older snapshots). Returns its size.
///
/// `settle` runs once the snapshot is written and synced, before it is put in
/// place: it must make sure the log from segment `upto` on completes every
/// change the walk saw (see [`Store::settle_batches`]), so that the snapshot
/// plus what survives of those segments is a state the store was in.
pub(crate) fn write_snapshot(
    vfs: &dyn Vfs,
    dir: &Path,
    upto: u64,
    store: &Store,
    settle: impl FnOnce() -> Result<(), String>,
) -> Result<u64, LogError> {
    const FLUSH_AT: usize = 1 << 20;
    let path = dir.join(file_name(FileKind::Snapshot, upto));
    let tmp = dir.join(format!("{}.tmp", file_name(FileKind::Snapshot, upto)));
    let mut file = vfs.create(&tmp).map_err(io_err("create", &tmp))?;
    let mut buf = Vec::with_capacity(FLUSH_AT + (1 << 16));
    buf.extend_from_slice(&format::header(FileKind::Snapshot));
    let mut failed: Option<std::io::Error> = None;
    let mut size = 0u64;
    // Encodes into the buffer and writes it out a megabyte at a time (the
    // store's walks hold a shard's read lock while they call back).
    let mut emit = |buf: &mut Vec<u8>, encoded: Result<(), String>| {
        if failed.is_some() {
            return;
        }
        if let Err(e) = encoded {
            failed = Some(std::io::Error::other(e));
            return;
        }
        if buf.len() >= FLUSH_AT {
            size += buf.len() as u64;
            if let Err(e) = file.write_all(buf) {
                failed = Some(e);
            }
            buf.clear();
        }
    };
    encode_snapshot(store, &mut buf, &mut emit);
    if failed.is_none() {
        size += buf.len() as u64;
        failed = file.write_all(&buf).err();
    }
    if let Some(e) = failed {
        drop(file);
        let _ = vfs.remove(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    file.sync_all().map_err(io_err("sync", &tmp))?;
    drop(file);
    if let Err(why) = settle() {
        let _ = vfs.remove(&tmp);
        return Err(io_err("settle the log for", &tmp)(std::io::Error::other(
            why,
        )));
    }
    vfs.rename(&tmp, &path)
        .map_err(io_err("rename into place", &path))?;
    sync_dir(vfs, dir)?;
    let (segments, snapshots) = list(vfs, dir)?;
    for n in segments.into_iter().filter(|n| *n < upto) {
        remove(vfs, &dir.join(file_name(FileKind::Segment, n)))?;
    }
    for n in snapshots.into_iter().filter(|n| *n < upto) {
        remove(vfs, &dir.join(file_name(FileKind::Snapshot, n)))?;
    }
    sync_dir(vfs, dir)?;
    Ok(size)
}

/// Encodes what a snapshot holds of `store` into `buf`: its checkpoint, then
/// every record, tombstone and rotation alias, calling `emit` after each
/// frame (with the frame's encoding result) so the caller can write the
/// buffer out as it fills.
pub(crate) fn encode_snapshot(
    store: &Store,
    buf: &mut Vec<u8>,
    emit: &mut impl FnMut(&mut Vec<u8>, Result<(), String>),
) {
    // The checkpoint first (see the ordering rule in `format`), read before
    // the walk; the images carry LSN 0.
    let checkpoint = LogRecord::Checkpoint { lsn: store.lsn() };
    let encoded = format::encode_record(&checkpoint, buf);
    emit(buf, encoded);
    store.for_each_record(|ns, id, rec| {
        let encoded = format::encode_record(&PutRef::of(0, ns, id, rec), buf);
        emit(buf, encoded);
    });
    store.for_each_tombstone(|ns, id, until| {
        let record = LogRecord::Delete {
            lsn: 0,
            namespace: ns.to_owned(),
            id: id.0,
            tombstone_until: until,
        };
        let encoded = format::encode_record(&record, buf);
        emit(buf, encoded);
    });
    store.for_each_alias(|ns, id, to, until| {
        let record = LogRecord::Alias {
            lsn: 0,
            namespace: ns.to_owned(),
            id: id.0,
            to: to.0,
            until,
        };
        let encoded = format::encode_record(&record, buf);
        emit(buf, encoded);
    });
}

/// Loads a snapshot held in memory (the bytes [`encode_snapshot`] wrote
/// after a snapshot file's header) into `store`, which should be empty.
///
/// # Errors
/// A message naming the damage if a frame is damaged.
pub(crate) fn load_snapshot(store: &Store, body: &[u8]) -> Result<usize, String> {
    let mut file = Vec::with_capacity(format::HEADER_LEN + body.len());
    file.extend_from_slice(&format::header(FileKind::Snapshot));
    file.extend_from_slice(body);
    let scan = format::scan_in_place(&file, FileKind::Snapshot, false);
    if let format::Tail::Corrupt { offset, reason } = &scan.tail {
        return Err(format!("snapshot damaged at byte {offset}: {reason}"));
    }
    let mut replay = Replays::new(store, replay_threads());
    let n = scan.records.len();
    replay.apply_all(&scan.records);
    store.restore_lsn(replay.max_lsn() + 1);
    Ok(n)
}

/// What `check-log` found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Valid records.
    pub records: usize,
    /// File size.
    pub bytes: u64,
    /// How it ends.
    pub tail: Tail,
    /// Whether `--repair` cut it (or, for an empty segment, removed it).
    pub repaired: bool,
}

/// Verifies every snapshot and segment in `dir` without loading them; with
/// `repair`, cuts torn tails and damaged parts (keeping copies of what it
/// cuts) and removes segments that hold no record. Does not take the lock:
/// run it on a stopped daemon's dir.
///
/// # Errors
/// [`LogError::Io`] if the dir or a file cannot be read.
pub fn check_dir(dir: &Path, repair: bool) -> Result<Vec<FileReport>, LogError> {
    check_dir_on(&super::vfs::RealFs, dir, repair)
}

/// [`check_dir`] on a given file system.
///
/// # Errors
/// As [`check_dir`].
pub fn check_dir_on(vfs: &dyn Vfs, dir: &Path, repair: bool) -> Result<Vec<FileReport>, LogError> {
    let (segments, snapshots) = list(vfs, dir)?;
    let mut reports = Vec::new();
    let files = snapshots
        .iter()
        .map(|n| (FileKind::Snapshot, *n))
        .chain(segments.iter().map(|n| (FileKind::Segment, *n)));
    let newest = segments.last().copied();
    for (kind, n) in files {
        let path = dir.join(file_name(kind, n));
        let bytes = vfs.read(&path).map_err(io_err("read", &path))?;
        let s = format::scan_in_place(&bytes, kind, kind == FileKind::Segment && Some(n) == newest);
        let mut repaired = false;
        if repair {
            match s.tail {
                Tail::Clean => {}
                Tail::Empty => {
                    remove(vfs, &path)?;
                    sync_dir(vfs, dir)?;
                    repaired = true;
                }
                Tail::Torn { offset } | Tail::Corrupt { offset, .. } => {
                    cut(vfs, &path, &bytes, offset)?;
                    repaired = true;
                }
            }
        }
        reports.push(FileReport {
            path,
            records: s.records.len(),
            bytes: bytes.len() as u64,
            tail: s.tail,
            repaired,
        });
    }
    Ok(reports)
}
