//! Opening a data dir: the lock, the newest snapshot, the segments after it,
//! torn tails and damage; writing snapshots; and `sessiond check-log`.
//!
//! Files: `LOCK` (held with an exclusive lock while a daemon runs),
//! `snap-N.snap` (every live record as of the start of segment N),
//! `seg-N.log` (the log from there on). A snapshot is written to a `.tmp`
//! name, synced, renamed, and the directory synced; only then are the files it
//! replaces removed, so a crash at any point leaves either the old set or the
//! new one.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::format::{self, FileKind, LogRecord, Tail};
use super::{file_name, io_err, parse_name, LogConfig, LogError};
use crate::store::Store;

/// What [`open`] hands to the writer.
pub(crate) struct Opened {
    pub(crate) dir: PathBuf,
    pub(crate) segment: File,
    pub(crate) segment_no: u64,
    pub(crate) log_bytes: u64,
    /// The data dir lock: it lasts as long as this handle.
    pub(crate) lock: File,
}

fn open_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Syncs a directory so renames and new files in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Creates segment `n` with its header, synced, 0600.
pub(crate) fn create_segment(dir: &Path, n: u64) -> Result<File, LogError> {
    let path = dir.join(file_name(FileKind::Segment, n));
    // Not O_APPEND: under `--fsync always` the writer zero-fills ahead with
    // positioned writes (which O_APPEND would turn into appends) and writes
    // records at its cursor, which stays at the end of the records.
    let mut f = open_options()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    f.write_all(&format::header(FileKind::Segment))
        .and_then(|()| f.sync_all())
        .map_err(io_err("write the header of", &path))?;
    sync_dir(dir)?;
    Ok(f)
}

/// The data files of `dir`, sorted by number.
fn list(dir: &Path) -> Result<(Vec<u64>, Vec<u64>), LogError> {
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        match parse_name(&name) {
            Some((FileKind::Segment, n)) => segments.push(n),
            Some((FileKind::Snapshot, n)) => snapshots.push(n),
            None if name.ends_with(".tmp") => {
                // A snapshot that never finished: the files it was to replace are still there.
                let path = entry.path();
                warn!(file = %path.display(), "removing an unfinished snapshot");
                std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
            None => {}
        }
    }
    segments.sort_unstable();
    snapshots.sort_unstable();
    Ok((segments, snapshots))
}

/// Locks `dir` (creating it 0700 if needed).
fn lock(dir: &Path) -> Result<File, LogError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(io_err("create data dir", dir))?;
    let path = dir.join("LOCK");
    let file = open_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked {
            dir: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err("lock", &path)(e)),
    }
}

/// Keeps a copy of the bytes from `offset` on, then cuts the file there.
fn cut(path: &Path, bytes: &[u8], offset: u64) -> Result<PathBuf, LogError> {
    let copy = PathBuf::from(format!("{}.cut-at-{offset}", path.display()));
    let tail = bytes.get(offset as usize..).unwrap_or_default();
    std::fs::write(&copy, tail).map_err(io_err("save the cut bytes to", &copy))?;
    truncate(path, offset)?;
    Ok(copy)
}

fn truncate(path: &Path, len: u64) -> Result<(), LogError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(io_err("truncate", path))
}

/// Replays the data dir into `store` and opens a fresh segment.
pub(crate) fn open(config: &LogConfig, store: &Arc<Store>) -> Result<Opened, LogError> {
    let dir = &config.dir;
    let lock = lock(dir)?;
    let started = std::time::Instant::now();
    let (segments, snapshots) = list(dir)?;
    let mut applied = 0u64;
    let mut bytes_read = 0u64;
    let mut base = 0;
    if let Some(&n) = snapshots.last() {
        let path = dir.join(file_name(FileKind::Snapshot, n));
        let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        bytes_read += bytes.len() as u64;
        let s = format::scan(&bytes, FileKind::Snapshot, false);
        if let Tail::Corrupt { offset, reason } = s.tail {
            // A snapshot is complete before it is renamed into place, so any
            // damage is the disk's; repair keeps what precedes it.
            if !config.repair {
                return Err(LogError::Corrupt {
                    file: path,
                    offset,
                    reason,
                });
            }
            let copy = cut(&path, &bytes, offset)?;
            warn!(file = %path.display(), offset, reason, copy = %copy.display(), "repair: cut a damaged snapshot");
        }
        applied += apply(store, s.records);
        base = n;
        for old in snapshots.iter().filter(|m| **m < n) {
            remove(&dir.join(file_name(FileKind::Snapshot, *old)))?;
        }
    }
    let live: Vec<u64> = segments.iter().copied().filter(|n| *n >= base).collect();
    for old in segments.iter().filter(|n| **n < base) {
        // Left behind by a compaction that crashed after its snapshot landed.
        remove(&dir.join(file_name(FileKind::Segment, *old)))?;
    }
    let mut log_bytes = 0;
    for (i, n) in live.iter().enumerate() {
        let path = dir.join(file_name(FileKind::Segment, *n));
        let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        bytes_read += bytes.len() as u64;
        let newest = i + 1 == live.len();
        let s = format::scan(&bytes, FileKind::Segment, newest);
        match &s.tail {
            Tail::Clean => {}
            Tail::Torn { offset } => {
                warn!(file = %path.display(), offset, "cutting a torn record at the end of the log (it was never acknowledged)");
                truncate(&path, *offset)?;
            }
            Tail::Corrupt { offset, reason } => {
                if !config.repair {
                    return Err(LogError::Corrupt {
                        file: path,
                        offset: *offset,
                        reason: reason.clone(),
                    });
                }
                let copy = cut(&path, &bytes, *offset)?;
                warn!(file = %path.display(), offset, reason, copy = %copy.display(), "repair: cut damaged log records");
            }
        }
        log_bytes += s.valid_len;
        applied += apply(store, s.records);
    }
    let next = live.last().map_or(base.max(1), |n| n + 1);
    let segment = create_segment(dir, next)?;
    let secs = started.elapsed().as_secs_f64();
    info!(
        dir = %dir.display(),
        records = applied,
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

fn apply(store: &Store, records: Vec<LogRecord>) -> u64 {
    let now = store.now_ms();
    let mut n = 0;
    for r in records {
        store.apply_log_record(r, now);
        n += 1;
    }
    n
}

fn remove(path: &Path) -> Result<(), LogError> {
    std::fs::remove_file(path).map_err(io_err("remove", path))
}

/// Writes `snap-upto.snap` from the live store and removes the files it
/// replaces (segments before `upto`, older snapshots). Returns its size.
pub(crate) fn write_snapshot(dir: &Path, upto: u64, store: &Store) -> Result<u64, LogError> {
    let path = dir.join(file_name(FileKind::Snapshot, upto));
    let tmp = dir.join(format!("{}.tmp", file_name(FileKind::Snapshot, upto)));
    let file = open_options()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&format::header(FileKind::Snapshot))
        .map_err(io_err("write", &tmp))?;
    let mut chunk = Vec::with_capacity(1 << 16);
    let mut failed = None;
    let mut size = format::HEADER_LEN as u64;
    store.export(|record| {
        if failed.is_some() {
            return;
        }
        chunk.clear();
        if let Err(e) = format::encode_record(&record, &mut chunk) {
            failed = Some(std::io::Error::other(e));
            return;
        }
        size += chunk.len() as u64;
        if let Err(e) = out.write_all(&chunk) {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    let file = out
        .into_inner()
        .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err("sync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    sync_dir(dir)?;
    let (segments, snapshots) = list(dir)?;
    for n in segments.into_iter().filter(|n| *n < upto) {
        remove(&dir.join(file_name(FileKind::Segment, n)))?;
    }
    for n in snapshots.into_iter().filter(|n| *n < upto) {
        remove(&dir.join(file_name(FileKind::Snapshot, n)))?;
    }
    sync_dir(dir)?;
    Ok(size)
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
    /// Whether `--repair` cut it.
    pub repaired: bool,
}

/// Verifies every snapshot and segment in `dir` without loading them; with
/// `repair`, cuts torn tails and damaged parts (keeping copies of what it cuts).
/// Does not take the lock: run it on a stopped daemon's dir.
///
/// # Errors
/// [`LogError::Io`] if the dir or a file cannot be read.
pub fn check_dir(dir: &Path, repair: bool) -> Result<Vec<FileReport>, LogError> {
    let (segments, snapshots) = list(dir)?;
    let mut reports = Vec::new();
    let files = snapshots
        .iter()
        .map(|n| (FileKind::Snapshot, *n))
        .chain(segments.iter().map(|n| (FileKind::Segment, *n)));
    let newest = segments.last().copied();
    for (kind, n) in files {
        let path = dir.join(file_name(kind, n));
        let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        let s = format::scan(&bytes, kind, kind == FileKind::Segment && Some(n) == newest);
        let mut repaired = false;
        if repair {
            match s.tail {
                Tail::Clean => {}
                Tail::Torn { offset } => {
                    truncate(&path, offset)?;
                    repaired = true;
                }
                Tail::Corrupt { offset, .. } => {
                    cut(&path, &bytes, offset)?;
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
