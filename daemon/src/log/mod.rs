//! Durability: an append-only log of post-images with group commit, crash
//! recovery and background compaction.
//!
//! - [`format`](mod@format): file headers and record frames, byte by byte, and the scanner
//!   that tells a torn tail from corruption.
//! - [`recovery`]: opening a data dir (lock, snapshot, segments, repair) and
//!   `check-log`.
//! - this module: the [`Log`] itself.
//!
//! # Write path
//! The store calls the log (as its [`Journal`]) under the changed record's
//! shard lock, so the log sees each record's changes in the order memory saw
//! them. An append encodes the record into a shared buffer and wakes the
//! writer thread; it never blocks on I/O. The writer swaps the whole buffer out,
//! writes it with one `write`, and, with `--fsync always`, one `fdatasync`: every
//! append that arrived while the previous batch was being synced shares the
//! next one (group commit). Connections that executed a write wait, before
//! answering, until the log's durable sequence covers it.
//!
//! # Failure
//! When a write or sync fails (disk full, EIO) the batch is kept and retried
//! every second; meanwhile the log reports an error: new writes are refused
//! with `Unavailable`, waiting writes are answered with `Unavailable` (they are
//! in memory and will reach the disk if it recovers, but were not acknowledged),
//! and reads keep working. The first successful retry clears the error.

pub mod format;
pub mod recovery;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use sessiond_protocol::SessionId;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::store::record::Record;
use crate::store::{Journal, Store};
use format::{encode_record, FileKind, LogRecord, PutImage, PutRef};

/// When the log syncs to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Before any write is acknowledged (group commit).
    Always,
    /// Once a second: at most about a second of acknowledged writes is lost.
    #[default]
    EverySec,
    /// Never explicitly: the OS decides.
    No,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::EverySec),
            "no" => Ok(Self::No),
            other => Err(format!("{other:?} is not one of always, everysec, no")),
        }
    }
}

/// Default size at which a new segment is started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default: compact when the log is this many times the live data.
pub const DEFAULT_COMPACT_RATIO: f64 = 2.0;
/// Default: never compact a log smaller than this.
pub const DEFAULT_COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;
/// Appends waiting for the writer, in bytes, past which writes are refused.
const MAX_BACKLOG: usize = 256 * 1024 * 1024;

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Data directory.
    pub dir: PathBuf,
    /// Sync policy.
    pub fsync: FsyncPolicy,
    /// Segment size before rolling to a new one.
    pub segment_bytes: u64,
    /// Compact when the log exceeds this multiple of the live data...
    pub compact_ratio: f64,
    /// ...and this many bytes.
    pub compact_min_bytes: u64,
    /// Cut damaged records at start-up (keeping a copy) instead of refusing to start.
    pub repair: bool,
}

impl LogConfig {
    /// Defaults for `dir`.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            compact_ratio: DEFAULT_COMPACT_RATIO,
            compact_min_bytes: DEFAULT_COMPACT_MIN_BYTES,
            repair: false,
        }
    }
}

/// Why the log could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the data dir.
    #[error("data dir {dir} is in use by another sessiond (it holds {dir}/LOCK); stop it or use another --data-dir")]
    Locked {
        /// The data dir.
        dir: PathBuf,
    },
    /// A file is damaged somewhere other than a torn tail.
    #[error("{file} is damaged at byte offset {offset}: {reason}; start with --repair to cut the damaged part (a copy is kept), or run `sessiond check-log {dir}`", dir = .file.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_owned();
    move |source| LogError::Io { op, path, source }
}

/// Where the writer is, published to waiting connections.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Highest sequence number written (and synced, under `always`).
    pub durable: u64,
    /// Why the log cannot write right now, if it cannot.
    pub error: Option<Arc<str>>,
}

struct Pending {
    buf: Vec<u8>,
    /// Sequence number of the last record appended.
    seq: u64,
    shutdown: bool,
}

/// The append-only log. Cheap to share; the writer thread runs until
/// [`Log::shutdown`].
pub struct Log {
    pending: Mutex<Pending>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    failing: AtomicBool,
    /// Bytes appended and not yet taken by the writer (read without the
    /// `pending` lock by every write's check).
    backlog: AtomicUsize,
    policy: FsyncPolicy,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: LogStats,
    /// Makes every write fail as a full disk would (tests of the failure path).
    fault: AtomicBool,
}

/// Counters of the log.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Bytes appended since start.
    pub bytes_written: AtomicU64,
    /// Syncs done.
    pub fsyncs: AtomicU64,
    /// Nanoseconds spent in those syncs.
    pub fsync_ns: AtomicU64,
    /// Compactions finished.
    pub compactions: AtomicU64,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("policy", &self.policy)
            .field("failing", &self.failing.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens the data dir, replays it into `store`, and starts the writer on a
    /// fresh segment. The store's journal is attached here, after replay.
    ///
    /// # Errors
    /// [`LogError`]: the dir is locked, unreadable, or damaged (without repair).
    pub fn open(config: &LogConfig, store: &Arc<Store>) -> Result<Arc<Self>, LogError> {
        let opened = recovery::open(config, store)?;
        let log = Arc::new(Self {
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(64 * 1024),
                seq: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
            failing: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
            policy: config.fsync,
            writer: Mutex::new(None),
            stats: LogStats::default(),
            fault: AtomicBool::new(false),
        });
        let writer = Writer {
            log: Arc::clone(&log),
            store: Arc::clone(store),
            config: config.clone(),
            dir: opened.dir,
            segment: opened.segment,
            segment_no: opened.segment_no,
            segment_len: format::HEADER_LEN as u64,
            zeroed_to: format::HEADER_LEN as u64,
            log_bytes: opened.log_bytes,
            compacting: Arc::new(AtomicBool::new(false)),
            compactor: None,
            _lock: opened.lock,
        };
        let handle = std::thread::Builder::new()
            .name("sessiond-log".into())
            .spawn(move || writer.run())
            .map_err(io_err("start the log writer for", &config.dir))?;
        *log.writer.lock() = Some(handle);
        store
            .attach_journal(Arc::clone(&log) as Arc<dyn Journal>)
            .map_err(|e| LogError::Io {
                op: "attach the log to the store of",
                path: config.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(log)
    }

    /// The sync policy.
    #[must_use]
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Sequence number of the last record appended.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.pending.lock().seq
    }

    /// A receiver of the writer's progress.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Waits until record `seq` is durable (per the policy).
    ///
    /// # Errors
    /// The log's error message if it cannot write.
    pub async fn wait_durable(
        rx: &mut watch::Receiver<Progress>,
        seq: u64,
    ) -> Result<(), Arc<str>> {
        let p = rx
            .wait_for(|p| p.durable >= seq || p.error.is_some())
            .await
            .map_err(|_| Arc::<str>::from("the log writer stopped"))?;
        if p.durable >= seq {
            Ok(())
        } else {
            Err(p.error.clone().unwrap_or_else(|| Arc::from("log error")))
        }
    }

    fn append(&self, record: LogRecord) {
        if let Some(record) = txn_push(record) {
            self.append_now(&record);
        }
    }

    fn append_now<R: serde::Serialize>(&self, record: &R) {
        thread_local! {
            /// Where a record is encoded before the shared buffer is locked,
            /// so appenders do not encode while holding it.
            static FRAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        FRAME.with_borrow_mut(|frame| {
            frame.clear();
            match encode_record(record, frame) {
                Ok(()) => {
                    let mut p = self.pending.lock();
                    p.buf.extend_from_slice(frame);
                    p.seq += 1;
                    self.backlog.store(p.buf.len(), Ordering::Relaxed);
                    drop(p);
                    self.wake.notify_one();
                }
                // Only a bug can get here (records are small and always
                // encodable); the change stays in memory and is in the next
                // snapshot.
                Err(e) => error!(error = %e, "cannot encode a log record"),
            }
            if frame.capacity() > 1024 * 1024 {
                *frame = Vec::new();
            }
        });
    }

    /// Makes log writes fail (`true`) as a full disk would, or work again.
    /// For testing the failure path of a running daemon.
    #[doc(hidden)]
    pub fn inject_write_fault(&self, on: bool) {
        self.fault.store(on, Ordering::Release);
        self.wake.notify_one();
    }

    /// Flushes and syncs everything appended, then stops the writer.
    pub fn shutdown(&self) {
        self.pending.lock().shutdown = true;
        self.wake.notify_one();
        if let Some(handle) = self.writer.lock().take() {
            if handle.join().is_err() {
                error!("the log writer panicked");
            }
        }
    }
}

impl Journal for Log {
    fn put(&self, namespace: &str, id: SessionId, r: &Record) {
        // Outside a batch the record is encoded straight from the store's
        // copy; inside one it is kept until the batch closes.
        if txn_open() {
            self.append(LogRecord::Put(PutImage::of(namespace, id, r)));
        } else {
            self.append_now(&PutRef::of(namespace, id, r));
        }
    }

    fn delete(&self, namespace: &str, id: SessionId, tombstone_until: u64) {
        self.append(LogRecord::Delete {
            namespace: namespace.to_owned(),
            id: id.0,
            tombstone_until,
        });
    }

    fn begin(&self) {
        txn_begin();
    }

    fn commit(&self) {
        if let Some(record) = txn_end() {
            self.append_now(&record);
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.failing.load(Ordering::Acquire) {
            let why = self.progress.borrow().error.clone();
            return Err(format!(
                "writes are refused until the log can write again: {}",
                why.as_deref().unwrap_or("log error")
            ));
        }
        if self.backlog.load(Ordering::Relaxed) > MAX_BACKLOG {
            return Err("the log is behind (disk too slow); retry shortly".into());
        }
        Ok(())
    }
}

/// How long the writer naps after a write under `everysec` and `no`, to
/// gather the next batch without being woken for it.
const WRITER_NAP: Duration = Duration::from_millis(1);

/// How much segment space is zero-filled at a time under `--fsync always`.
const ZERO_FILL_CHUNK: u64 = 8 * 1024 * 1024;

/// The writer thread's state.
struct Writer {
    log: Arc<Log>,
    store: Arc<Store>,
    config: LogConfig,
    dir: PathBuf,
    segment: File,
    segment_no: u64,
    segment_len: u64,
    /// Under `--fsync always`: the segment is zero-filled (and synced) up to
    /// here, ahead of the records, so that a sync after a write has only
    /// data to flush, not the file's new size (about 1.6x faster here).
    zeroed_to: u64,
    /// Bytes of all segments since the last snapshot (the compaction trigger).
    log_bytes: u64,
    compacting: Arc<AtomicBool>,
    compactor: Option<std::thread::JoinHandle<()>>,
    /// The data dir lock, held while the writer runs.
    _lock: File,
}

impl Writer {
    fn run(mut self) {
        let mut spare = Vec::with_capacity(64 * 1024);
        let mut last_sync = Instant::now();
        let mut dirty = false;
        let mut wrote = false;
        loop {
            let (seq, shutdown) = {
                let mut p = self.log.pending.lock();
                // Under load, and unless every write waits for its sync, nap
                // instead of waiting to be woken: appenders then never pay for
                // waking this thread (a futex call and a context switch per
                // batch), and a batch gathers a millisecond of records.
                if wrote
                    && p.buf.is_empty()
                    && !p.shutdown
                    && self.log.policy != FsyncPolicy::Always
                {
                    drop(p);
                    std::thread::sleep(WRITER_NAP);
                    p = self.log.pending.lock();
                }
                while p.buf.is_empty() && !p.shutdown {
                    if dirty && self.log.policy == FsyncPolicy::EverySec {
                        let left = Duration::from_secs(1).saturating_sub(last_sync.elapsed());
                        if self.log.wake.wait_for(&mut p, left).timed_out() {
                            break;
                        }
                    } else {
                        self.log.wake.wait(&mut p);
                    }
                }
                std::mem::swap(&mut p.buf, &mut spare);
                self.log.backlog.store(0, Ordering::Relaxed);
                (p.seq, p.shutdown)
            };
            wrote = !spare.is_empty();
            if !spare.is_empty() {
                self.write_batch(&spare, shutdown);
                self.log
                    .stats
                    .bytes_written
                    .fetch_add(spare.len() as u64, Ordering::Relaxed);
                spare.clear();
                dirty = true;
            }
            if shutdown {
                self.trim();
            }
            let sync_now = match self.log.policy {
                FsyncPolicy::Always => dirty,
                FsyncPolicy::EverySec => {
                    dirty && (shutdown || last_sync.elapsed() >= Duration::from_secs(1))
                }
                FsyncPolicy::No => dirty && shutdown,
            };
            if sync_now {
                self.sync(shutdown);
                last_sync = Instant::now();
                dirty = false;
            }
            self.log
                .progress
                .send_modify(|p| p.durable = p.durable.max(seq));
            if shutdown {
                if let Some(c) = self.compactor.take() {
                    let _ = c.join();
                }
                info!(segment = self.segment_no, "log flushed and synced");
                return;
            }
            if self.segment_len >= self.config.segment_bytes {
                self.roll();
            }
            self.maybe_compact();
        }
    }

    /// Writes a batch, retrying every second while the disk refuses.
    fn write_batch(&mut self, data: &[u8], shutdown: bool) {
        let start = self.segment_len;
        loop {
            let result = if self.log.fault.load(Ordering::Acquire) {
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device (injected)",
                ))
            } else {
                self.zero_fill(start + data.len() as u64)
                    .and_then(|()| self.segment.write_all(data))
            };
            match result {
                Ok(()) => {
                    self.segment_len += data.len() as u64;
                    self.log_bytes += data.len() as u64;
                    self.clear_error();
                    return;
                }
                Err(e) => {
                    // A partial write leaves garbage after `start`; cut it so the
                    // retry rewrites the whole batch in place.
                    let _ = self.segment.set_len(start);
                    let _ = std::io::Seek::seek(&mut self.segment, std::io::SeekFrom::Start(start));
                    self.zeroed_to = start;
                    self.fail(&format!("log write failed: {e}"));
                    if shutdown {
                        error!(
                            "shutting down with unwritten log records: the last writes are lost"
                        );
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn sync(&mut self, shutdown: bool) {
        loop {
            let started = Instant::now();
            match self.segment.sync_data() {
                Ok(()) => {
                    self.log.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.log
                        .stats
                        .fsync_ns
                        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    self.clear_error();
                    return;
                }
                Err(e) => {
                    self.fail(&format!("log fsync failed: {e}"));
                    if shutdown {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn fail(&self, message: &str) {
        if !self.log.failing.swap(true, Ordering::AcqRel) {
            error!(
                segment = self.segment_no,
                error = message,
                "log cannot write; refusing writes until it can"
            );
        }
        let message: Arc<str> = Arc::from(message);
        self.log.progress.send_modify(|p| p.error = Some(message));
    }

    fn clear_error(&self) {
        if self.log.failing.swap(false, Ordering::AcqRel) {
            warn!(segment = self.segment_no, "log writes again");
            self.log.progress.send_modify(|p| p.error = None);
        }
    }

    /// Under `--fsync always`, makes sure the segment is zero-filled and
    /// synced up to at least `upto` (a chunk at a time).
    fn zero_fill(&mut self, upto: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.log.policy != FsyncPolicy::Always || upto <= self.zeroed_to {
            return Ok(());
        }
        let end = upto.max(self.zeroed_to + ZERO_FILL_CHUNK);
        let zeros = vec![0u8; (end - self.zeroed_to) as usize];
        self.segment.write_all_at(&zeros, self.zeroed_to)?;
        self.segment.sync_data()?;
        self.zeroed_to = end;
        Ok(())
    }

    /// Cuts the zero-filled space after the records (best effort: a reader
    /// takes zeros after the last record as unwritten space anyway).
    fn trim(&mut self) {
        if self.zeroed_to > self.segment_len {
            if let Err(e) = self.segment.set_len(self.segment_len) {
                warn!(segment = self.segment_no, error = %e, "cannot trim the segment's zero-filled space");
            }
            self.zeroed_to = self.segment_len;
        }
    }

    /// Starts a new segment (the old one is synced first).
    fn roll(&mut self) {
        self.trim();
        self.sync(false);
        match recovery::create_segment(&self.dir, self.segment_no + 1) {
            Ok(file) => {
                self.segment = file;
                self.segment_no += 1;
                self.segment_len = format::HEADER_LEN as u64;
                self.zeroed_to = self.segment_len;
                self.log_bytes += format::HEADER_LEN as u64;
            }
            Err(e) => self.fail(&format!("cannot start a new log segment: {e}")),
        }
    }

    /// Compacts in the background when the log has outgrown the live data:
    /// roll to a new segment N, then snapshot the store as "everything before
    /// N" and drop the older files. Writes go on into N meanwhile; replaying N
    /// over the snapshot is correct because records are post-images.
    fn maybe_compact(&mut self) {
        let live = self.store.log_image_estimate();
        let threshold = (live as f64 * self.config.compact_ratio) as u64;
        if self.log_bytes < self.config.compact_min_bytes.max(threshold)
            || self.compacting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.roll();
        let upto = self.segment_no;
        self.log_bytes = self.segment_len;
        let (dir, store, log, flag) = (
            self.dir.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.log),
            Arc::clone(&self.compacting),
        );
        let spawned = std::thread::Builder::new()
            .name("sessiond-compact".into())
            .spawn(move || {
                let started = Instant::now();
                match recovery::write_snapshot(&dir, upto, &store) {
                    Ok(bytes) => {
                        log.stats.compactions.fetch_add(1, Ordering::Relaxed);
                        info!(upto, bytes, ms = started.elapsed().as_millis() as u64, "log compacted");
                    }
                    Err(e) => error!(error = %e, "compaction failed; the log keeps growing until the next try"),
                }
                flag.store(false, Ordering::Release);
            });
        match spawned {
            Ok(handle) => {
                if let Some(done) = self.compactor.replace(handle) {
                    // The previous run finished (the flag was clear).
                    let _ = done.join();
                }
            }
            Err(e) => {
                error!(error = %e, "cannot start compaction");
                self.compacting.store(false, Ordering::Release);
            }
        }
    }
}

thread_local! {
    /// This thread's open group of records: nesting depth and the records.
    static TXN: std::cell::RefCell<(u32, Vec<LogRecord>)> =
        const { std::cell::RefCell::new((0, Vec::new())) };
}

/// Buffers `record` if this thread has a group open; otherwise hands it back.
fn txn_push(record: LogRecord) -> Option<LogRecord> {
    TXN.with_borrow_mut(|(depth, records)| {
        if *depth == 0 {
            Some(record)
        } else {
            records.push(record);
            None
        }
    })
}

/// Whether records are being gathered into a batch on this thread.
fn txn_open() -> bool {
    TXN.with_borrow(|(depth, _)| *depth > 0)
}

fn txn_begin() {
    TXN.with_borrow_mut(|(depth, _)| *depth += 1);
}

/// Closes one level; at the outermost, the group as one record (if any).
fn txn_end() -> Option<LogRecord> {
    TXN.with_borrow_mut(|(depth, records)| {
        *depth = depth.saturating_sub(1);
        if *depth > 0 {
            return None;
        }
        match records.len() {
            0 => None,
            1 => records.pop(),
            _ => Some(LogRecord::Batch(std::mem::take(records))),
        }
    })
}

/// Writes for tests: a store journal into a byte vector.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct MemJournal(pub(crate) Mutex<Vec<u8>>);

#[cfg(test)]
impl Journal for MemJournal {
    fn put(&self, namespace: &str, id: SessionId, r: &Record) {
        if let Some(rec) = txn_push(LogRecord::Put(PutImage::of(namespace, id, r))) {
            encode_record(&rec, &mut self.0.lock()).expect("encodable");
        }
    }
    fn delete(&self, namespace: &str, id: SessionId, tombstone_until: u64) {
        let rec = LogRecord::Delete {
            namespace: namespace.to_owned(),
            id: id.0,
            tombstone_until,
        };
        if let Some(rec) = txn_push(rec) {
            encode_record(&rec, &mut self.0.lock()).expect("encodable");
        }
    }
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn begin(&self) {
        txn_begin();
    }
    fn commit(&self) {
        if let Some(rec) = txn_end() {
            encode_record(&rec, &mut self.0.lock()).expect("encodable");
        }
    }
}

/// Which kind of file a name is, and its number.
pub(crate) fn parse_name(name: &str) -> Option<(FileKind, u64)> {
    if let Some(n) = name
        .strip_prefix("seg-")
        .and_then(|r| r.strip_suffix(".log"))
    {
        return n.parse().ok().map(|n| (FileKind::Segment, n));
    }
    if let Some(n) = name
        .strip_prefix("snap-")
        .and_then(|r| r.strip_suffix(".snap"))
    {
        return n.parse().ok().map(|n| (FileKind::Snapshot, n));
    }
    None
}

/// File name of segment or snapshot `n`.
pub(crate) fn file_name(kind: FileKind, n: u64) -> String {
    match kind {
        FileKind::Segment => format!("seg-{n:010}.log"),
        FileKind::Snapshot => format!("snap-{n:010}.snap"),
    }
}

#[cfg(test)]
mod tests;
