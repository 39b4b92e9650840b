//! Durability: an append-only log of post-images with group commit, crash
//! recovery and background compaction.
//!
//! - [`format`](mod@format): file headers and record frames, byte by byte, and the scanner
//!   that tells a torn tail from corruption.
//! - [`recovery`]: opening a data dir (lock, snapshot, segments, repair), the
//!   replay, snapshots and `check-log`.
//! - [`vfs`]: every file operation behind one trait, with the real file
//!   system as the default and a simulated disk with a power switch for tests.
//! - this module: the [`Log`] itself.
//!
//! # Write path
//! The store calls the log (as its [`Journal`]) under the changed record's
//! shard lock, so the log sees each record's changes in the order memory saw
//! them. An append encodes the record into a shared buffer and wakes the
//! writer thread; it never blocks on I/O. The writer swaps the whole buffer out,
//! writes it with one `write`, and, with `--fsync always`, one `fdatasync`: every
//! append that arrived while the previous batch was being synced shares the
//! next one (group commit). Under `always`, connections that executed a
//! write wait, before answering, until the log has synced it; under
//! `everysec` and `no` they answer at once, and a write is taken only while
//! the disk space it goes to is reserved (zero-filled ahead of the records),
//! so that a full disk cannot leave an acknowledged write stuck in memory.
//!
//! # Failure
//! When a write or sync fails (disk full, EIO) the batch is kept and retried
//! every second; meanwhile the log reports an error: new writes are refused
//! with `Unavailable`, waiting writes are answered with `Unavailable` (they are
//! in memory and will reach the disk if it recovers, but were not acknowledged),
//! and reads keep working. The first successful retry clears the error. A
//! daemon that cannot even start its new segment (a full disk) starts this
//! way too: it serves reads and takes writes once the segment can be made.
//!
//! Under `--fsync always` the segment is zero-filled 8 MiB ahead of the
//! records and synced (a sync then flushes data only, not the file's size);
//! on a disk with less room than that the writer writes without the prefill,
//! so the log keeps no headroom of its own: it can use the disk to its last
//! block. Under `everysec` and `no` the zero-fill is the reservation above
//! (not synced; a new segment is started only once its own is made).

pub mod format;
pub mod recovery;
pub mod vfs;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use sessiond_protocol::SessionId;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::store::record::Record;
use crate::store::{Change, Journal, Store};
use format::{encode_record, FileKind, LogRecord, PutRef};
use vfs::{DirLock, Vfs, VfsFile};

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
/// Default zero-fill chunk under `--fsync always`.
pub const DEFAULT_PREFILL: u64 = 8 * 1024 * 1024;
/// Default wait between tries while the disk refuses.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(1);
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
    /// The file system (the real one but in tests).
    pub vfs: Arc<dyn Vfs>,
    /// How long the writer waits between tries while the disk refuses.
    pub retry: Duration,
    /// Under `--fsync always`, how far ahead of the records the segment is
    /// zero-filled (and synced) at a time.
    pub prefill: u64,
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
            vfs: Arc::new(vfs::RealFs),
            retry: DEFAULT_RETRY,
            prefill: DEFAULT_PREFILL,
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
    /// Highest sequence number that may be acknowledged: synced under
    /// `always`, written to the file under `everysec` and `no`.
    pub durable: u64,
    /// Highest sequence number covered by a sync.
    pub synced: u64,
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
    /// Someone waits for a sync (a snapshot about to be put in place).
    sync_requested: AtomicBool,
    /// Under `everysec` and `no`: bytes of disk space reserved (zero-filled)
    /// after the records of the current segment, which writes acknowledged
    /// before they reach the file are sure to fit in.
    headroom: AtomicU64,
    /// The last reservation got less than it asked for: the disk is short
    /// of room (as opposed to the writer being behind its reservations).
    room_short: AtomicBool,
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
    /// Compactions started (finished, failed or still running).
    pub compactions_started: AtomicU64,
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
    /// fresh segment. The store's journal is attached here, after replay. If
    /// the fresh segment cannot be made (a full disk), the log opens failing:
    /// reads work, writes are refused until the writer can make it.
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
            sync_requested: AtomicBool::new(false),
            headroom: AtomicU64::new(0),
            room_short: AtomicBool::new(false),
        });
        let (segment, start_error) = match opened.segment {
            Ok(f) => (Some(f), None),
            Err(why) => (None, Some(why)),
        };
        let mut writer = Writer {
            log: Arc::clone(&log),
            store: Arc::clone(store),
            config: config.clone(),
            dir: opened.dir,
            segment,
            segment_no: opened.segment_no,
            segment_len: format::HEADER_LEN as u64,
            zeroed_to: format::HEADER_LEN as u64,
            log_bytes: opened.log_bytes,
            compacting: Arc::new(AtomicBool::new(false)),
            compactor: None,
            roll_retry_at: None,
            _lock: opened.lock,
        };
        if let Some(why) = start_error {
            writer.fail(&format!("cannot start a new log segment: {why}"));
        }
        // Writes are taken once there is room reserved for them.
        writer.reserve();
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

    /// The writer's progress now.
    #[must_use]
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until record `seq` may be acknowledged (per the policy).
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

    /// Blocks the calling thread until record `seq` may be acknowledged, or
    /// the log fails, or `timeout` passes (tests and tools without a runtime).
    ///
    /// # Errors
    /// The log's error message, or a timeout.
    pub fn wait_durable_blocking(&self, seq: u64, timeout: Duration) -> Result<(), Arc<str>> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.subscribe();
        loop {
            {
                let p = rx.borrow_and_update();
                if p.durable >= seq {
                    return Ok(());
                }
                if let Some(e) = &p.error {
                    return Err(Arc::clone(e));
                }
            }
            if Instant::now() >= deadline {
                return Err(Arc::from("timed out waiting for the log"));
            }
            std::thread::sleep(Duration::from_micros(200));
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

    /// Asks the writer to sync now, whatever the policy.
    fn request_sync(&self) {
        self.sync_requested.store(true, Ordering::Release);
        let _guard = self.pending.lock();
        self.wake.notify_all();
    }

    /// Blocks until everything appended so far is covered by a sync (the
    /// writer syncs at once when asked), the log fails, or `timeout` passes.
    fn sync_all_appended(&self, timeout: Duration) -> Result<(), String> {
        let seq = self.last_seq();
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.progress();
            if p.synced >= seq {
                return Ok(());
            }
            if let Some(e) = p.error {
                return Err(e.to_string());
            }
            if Instant::now() >= deadline {
                return Err("timed out waiting for the log to sync".into());
            }
            self.request_sync();
            std::thread::sleep(Duration::from_millis(1));
        }
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
        self.wake.notify_all();
        if let Some(handle) = self.writer.lock().take() {
            if handle.join().is_err() {
                error!("the log writer panicked");
            }
        }
    }
}

impl Journal for Log {
    fn put(&self, lsn: u64, namespace: &str, id: SessionId, r: &Record) {
        // Encoded straight from the store's record, under its lock.
        self.append_now(&PutRef::of(lsn, namespace, id, r));
    }

    fn delete(&self, lsn: u64, namespace: &str, id: SessionId, tombstone_until: u64) {
        self.append_now(&LogRecord::Delete {
            lsn,
            namespace: namespace.to_owned(),
            id: id.0,
            tombstone_until,
        });
    }

    fn batch(&self, changes: Vec<Change>) {
        if let Some(record) = format::batch_record(&changes) {
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
        let backlog = self.backlog.load(Ordering::Relaxed);
        if backlog > MAX_BACKLOG {
            return Err("the log is behind (disk too slow); retry shortly".into());
        }
        // Without `always`, a write is acknowledged before it reaches the
        // file: only while the space it goes to is reserved, so that a full
        // disk cannot leave an acknowledged write stuck in memory.
        if self.out_of_reserved_room() {
            if self.room_short.load(Ordering::Relaxed) {
                return Err(
                    "writes are refused until the log can reserve disk space for them: the disk is full"
                        .into(),
                );
            }
            return Err(
                "the log is behind its reserved disk space (writes outran the disk); retry shortly"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Log {
    /// Without `always`: whether the space reserved ahead of the records is
    /// used up by what waits to be written (writes are refused meanwhile).
    fn out_of_reserved_room(&self) -> bool {
        self.policy != FsyncPolicy::Always
            && self.headroom.load(Ordering::Relaxed)
                < self.backlog.load(Ordering::Relaxed) as u64 + RESERVE_MARGIN
    }

    /// Whether a write would be refused only because the writer has not yet
    /// reserved room for it (a burst, or a segment roll under way), not for
    /// a full disk or a failing log: such a write is worth holding back
    /// briefly instead of refusing it (see [`Log::wait_for_room`]).
    #[must_use]
    pub fn behind_reservations(&self) -> bool {
        self.out_of_reserved_room()
            && !self.room_short.load(Ordering::Relaxed)
            && !self.failing.load(Ordering::Acquire)
    }

    /// Waits, up to `limit`, while [`Log::behind_reservations`] holds.
    pub async fn wait_for_room(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while self.behind_reservations() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Under `everysec` and `no`: reserved space below which writes are refused
/// (an operation's records, up to twice the default attribute limit, fit in
/// it).
const RESERVE_MARGIN: u64 = 128 * 1024;

/// Reserved space below which the writer reserves more.
const RESERVE_LOW: u64 = 4 * RESERVE_MARGIN;

/// Smallest reservation tried when a larger one does not fit.
const RESERVE_MIN: u64 = 2 * RESERVE_MARGIN;

/// How long the writer naps after a write under `everysec` and `no`, to
/// gather the next batch without being woken for it.
const WRITER_NAP: Duration = Duration::from_millis(1);

/// The writer thread's state.
struct Writer {
    log: Arc<Log>,
    store: Arc<Store>,
    config: LogConfig,
    dir: PathBuf,
    /// The segment being written (`None` until one could be made).
    segment: Option<Box<dyn VfsFile>>,
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
    /// Without `always`: when a roll that found no room may be tried again.
    roll_retry_at: Option<Instant>,
    /// The data dir lock, held while the writer runs.
    _lock: Box<dyn DirLock>,
}

/// Reserves space from `from` on (the file reads as zeros there): `chunk`
/// bytes, or, if the disk has no room for that, half as many and so on down
/// to [`RESERVE_MIN`]; returns where the reservation ends (`None`: not even
/// the least fit). A reservation that does not fit is undone.
fn fill_zeros(file: &mut dyn VfsFile, from: u64, chunk: u64) -> Option<u64> {
    let mut size = chunk.max(RESERVE_MIN);
    loop {
        match file.allocate(from, size) {
            Ok(()) => return Some(from + size),
            Err(_) => {
                let _ = file.set_len(from);
                if size <= RESERVE_MIN {
                    return None;
                }
                size = (size / 2).max(RESERVE_MIN);
            }
        }
    }
}

fn no_segment() -> std::io::Error {
    std::io::Error::other("no log segment could be started")
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
                while p.buf.is_empty()
                    && !p.shutdown
                    && !self.log.sync_requested.load(Ordering::Acquire)
                {
                    if self.segment.is_none()
                        || self.wants_reserve()
                        || self.log.failing.load(Ordering::Acquire)
                    {
                        // No segment yet, no room reserved, or a roll that
                        // failed (a full disk): try again now and then,
                        // writes or not.
                        if self
                            .log
                            .wake
                            .wait_for(&mut p, self.config.retry)
                            .timed_out()
                        {
                            break;
                        }
                    } else if dirty && self.log.policy == FsyncPolicy::EverySec {
                        let left = Duration::from_secs(1).saturating_sub(last_sync.elapsed());
                        if self.log.wake.wait_for(&mut p, left).timed_out() {
                            break;
                        }
                    } else {
                        self.log.wake.wait(&mut p);
                    }
                }
                std::mem::swap(&mut p.buf, &mut spare);
                // What leaves the backlog is counted against the reservation
                // until the write publishes the exact figure.
                let taken = spare.len() as u64;
                let _ = self
                    .log
                    .headroom
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                        Some(h.saturating_sub(taken))
                    });
                self.log.backlog.store(0, Ordering::Relaxed);
                (p.seq, p.shutdown)
            };
            wrote = !spare.is_empty();
            if spare.is_empty() && self.segment.is_none() && !shutdown {
                match self.ensure_segment() {
                    Ok(()) => self.clear_error(),
                    Err(e) => self.fail(&format!("cannot start a new log segment: {e}")),
                }
            }
            if spare.is_empty() && !shutdown && self.wants_reserve() {
                self.reserve();
            }
            if !spare.is_empty() {
                if !self.write_batch(&spare, shutdown) {
                    // Shut down with the batch unwritten: it is lost (logged).
                    return;
                }
                self.log
                    .stats
                    .bytes_written
                    .fetch_add(spare.len() as u64, Ordering::Relaxed);
                spare.clear();
                dirty = true;
                if !shutdown {
                    self.reserve();
                }
            }
            if shutdown {
                self.trim();
            }
            let asked = self.log.sync_requested.swap(false, Ordering::AcqRel);
            let sync_now = asked && dirty
                || match self.log.policy {
                    FsyncPolicy::Always => dirty,
                    FsyncPolicy::EverySec => {
                        dirty && (shutdown || last_sync.elapsed() >= Duration::from_secs(1))
                    }
                    FsyncPolicy::No => dirty && shutdown,
                };
            // Under `always` only a sync makes a write acknowledgeable; the
            // others acknowledge at once, into reserved space.
            if self.log.policy != FsyncPolicy::Always {
                self.log
                    .progress
                    .send_modify(|p| p.durable = p.durable.max(seq));
            }
            if sync_now {
                if !self.sync(shutdown) {
                    return;
                }
                last_sync = Instant::now();
                dirty = false;
                self.log.progress.send_modify(|p| {
                    p.durable = p.durable.max(seq);
                    p.synced = p.synced.max(seq);
                });
            } else if !dirty && self.segment.is_some() {
                // Everything written is synced already.
                self.log
                    .progress
                    .send_modify(|p| p.synced = p.synced.max(seq).max(p.durable));
            }
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

    /// Waits `d`, or less if the log is shut down meanwhile; returns whether
    /// it is.
    fn pause(&self, d: Duration) -> bool {
        let mut p = self.log.pending.lock();
        if !p.shutdown {
            let _ = self.log.wake.wait_for(&mut p, d);
        }
        p.shutdown
    }

    /// Makes a segment if there is none (a start on a full disk).
    fn ensure_segment(&mut self) -> std::io::Result<()> {
        if self.segment.is_some() {
            return Ok(());
        }
        let f = recovery::create_segment(&*self.config.vfs, &self.dir, self.segment_no)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        info!(segment = self.segment_no, "log segment started");
        self.segment = Some(f);
        self.segment_len = format::HEADER_LEN as u64;
        self.zeroed_to = self.segment_len;
        self.reserve();
        Ok(())
    }

    /// Writes a batch, retrying every second while the disk refuses. Returns
    /// false if the log was shut down before it could.
    fn write_batch(&mut self, data: &[u8], shutdown: bool) -> bool {
        let start = self.segment_len;
        loop {
            let result = if self.log.fault.load(Ordering::Acquire) {
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device (injected)",
                ))
            } else {
                self.ensure_segment()
                    .and_then(|()| self.zero_fill(start + data.len() as u64))
                    .and_then(|()| {
                        self.segment
                            .as_mut()
                            .ok_or_else(no_segment)?
                            .write_all(data)
                    })
            };
            match result {
                Ok(()) => {
                    self.segment_len += data.len() as u64;
                    self.log_bytes += data.len() as u64;
                    self.clear_error();
                    return true;
                }
                Err(e) => {
                    // A partial write leaves garbage after `start`; cut it so the
                    // retry rewrites the whole batch in place.
                    if let Some(seg) = self.segment.as_mut() {
                        let _ = seg.set_len(start);
                        let _ = seg.seek_to(start);
                        self.zeroed_to = start;
                    }
                    self.fail(&format!("log write failed: {e}"));
                    if shutdown || self.pause(self.config.retry) {
                        error!(
                            "shutting down with unwritten log records: the last writes are lost"
                        );
                        return false;
                    }
                }
            }
        }
    }

    /// Syncs the segment, retrying every second while it fails. Returns
    /// false if the log was shut down before it could.
    fn sync(&mut self, shutdown: bool) -> bool {
        loop {
            let started = Instant::now();
            let result = match self.segment.as_mut() {
                Some(seg) => seg.sync_data(),
                None => Err(no_segment()),
            };
            match result {
                Ok(()) => {
                    self.log.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.log
                        .stats
                        .fsync_ns
                        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    self.clear_error();
                    return true;
                }
                Err(e) => {
                    self.fail(&format!("log fsync failed: {e}"));
                    if shutdown || self.pause(self.config.retry) {
                        error!(
                            "shutting down with unsynced log records: the last writes may be lost"
                        );
                        return false;
                    }
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
    /// synced up to at least `upto` (a chunk at a time). On a disk too full
    /// for the chunk it fills nothing: the records are then written without
    /// it (each sync also flushes the file's size).
    fn zero_fill(&mut self, upto: u64) -> std::io::Result<()> {
        if self.log.policy != FsyncPolicy::Always || upto <= self.zeroed_to {
            return Ok(());
        }
        let seg = self.segment.as_mut().ok_or_else(no_segment)?;
        // Never over records: after writes made without the fill (a disk
        // short of room), the fill starts at the end of the records.
        let from = self.zeroed_to.max(self.segment_len);
        let end = upto.max(from + self.config.prefill);
        let zeros = vec![0u8; (end - from) as usize];
        match seg
            .write_all_at(&zeros, from)
            .and_then(|()| seg.sync_data())
        {
            Ok(()) => {
                self.zeroed_to = end;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                // Give back what the fill took; the write decides.
                let _ = seg.set_len(from);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the reservation should grow (see [`Writer::reserve`]).
    fn wants_reserve(&self) -> bool {
        self.log.policy != FsyncPolicy::Always
            && self.segment.is_some()
            && self.zeroed_to.saturating_sub(self.segment_len)
                < (self.config.prefill / 2).max(RESERVE_LOW)
    }

    /// Under `everysec` and `no`: keeps disk space reserved after the
    /// records (`fallocate`, about `prefill` ahead; less, down to 256 KiB,
    /// when the disk is short of room), and publishes how much there is. On
    /// ext4 and XFS a write into such space cannot fail for want of room (on
    /// copy-on-write file systems it can).
    fn reserve(&mut self) {
        if self.log.policy == FsyncPolicy::Always {
            return;
        }
        if self.wants_reserve() {
            if let Some(seg) = self.segment.as_mut() {
                let from = self.zeroed_to.max(self.segment_len);
                let got = fill_zeros(seg.as_mut(), from, self.config.prefill);
                if let Some(end) = got {
                    self.zeroed_to = end;
                }
                // Less than asked: the disk is short of room.
                let short = got.is_none_or(|end| end < from + self.config.prefill);
                self.log.room_short.store(short, Ordering::Relaxed);
            }
        }
        let headroom = self.zeroed_to.saturating_sub(self.segment_len);
        self.log.headroom.store(headroom, Ordering::Relaxed);
    }

    /// Cuts the zero-filled space after the records (best effort: a reader
    /// takes zeros after the last record as unwritten space anyway).
    fn trim(&mut self) {
        if self.zeroed_to > self.segment_len {
            if let Some(seg) = self.segment.as_mut() {
                if let Err(e) = seg.set_len(self.segment_len) {
                    warn!(segment = self.segment_no, error = %e, "cannot trim the segment's zero-filled space");
                }
            }
            self.zeroed_to = self.segment_len;
        }
    }

    /// Starts a new segment (the old one is synced first). Without `always`,
    /// only once the new one has room reserved: until then the old one goes
    /// on (past its size), so acknowledged writes always have room.
    fn roll(&mut self) {
        if self.segment.is_none() {
            return;
        }
        if self.log.policy != FsyncPolicy::Always {
            if self.roll_retry_at.is_some_and(|at| Instant::now() < at) {
                return;
            }
            self.roll_retry_at = Some(Instant::now() + self.config.retry);
            // The old segment is synced before the new one exists: only the
            // newest segment may end torn.
            if !self.sync(false) {
                return;
            }
            let vfs = Arc::clone(&self.config.vfs);
            let next = self.segment_no + 1;
            // A try that found no room may have left the file behind: it never
            // held a record.
            let _ = vfs.remove(&self.dir.join(file_name(FileKind::Segment, next)));
            let mut file = match recovery::create_segment(&*vfs, &self.dir, next) {
                Ok(file) => file,
                Err(e) => {
                    warn!(error = %e, "cannot start a new log segment yet; the current one goes on");
                    return;
                }
            };
            let from = format::HEADER_LEN as u64;
            let got = fill_zeros(file.as_mut(), from, self.config.prefill);
            self.log.room_short.store(
                got.is_none_or(|end| end < from + self.config.prefill),
                Ordering::Relaxed,
            );
            let Some(end) = got else {
                drop(file);
                let path = self.dir.join(file_name(FileKind::Segment, next));
                let _ = vfs.remove(&path);
                let _ = vfs.sync_dir(&self.dir);
                warn!("no room to reserve for a new log segment; the current one goes on");
                return;
            };
            self.trim();
            self.segment = Some(file);
            self.segment_no = next;
            self.segment_len = from;
            self.zeroed_to = end;
            self.log_bytes += from;
            self.roll_retry_at = None;
            self.reserve();
            return;
        }
        self.trim();
        if !self.sync(false) {
            return;
        }
        match recovery::create_segment(&*self.config.vfs, &self.dir, self.segment_no + 1) {
            Ok(file) => {
                self.segment = Some(file);
                self.segment_no += 1;
                self.segment_len = format::HEADER_LEN as u64;
                self.zeroed_to = self.segment_len;
                self.log_bytes += format::HEADER_LEN as u64;
                self.clear_error();
            }
            Err(e) => self.fail(&format!("cannot start a new log segment: {e}")),
        }
    }

    /// Compacts in the background when the log has outgrown the live data:
    /// roll to a new segment N, then snapshot the store as "everything before
    /// N" and drop the older files. Writes go on into N meanwhile; replaying N
    /// over the snapshot is correct because records are post-images, each
    /// newer (by LSN) than the snapshot's image of its key.
    fn maybe_compact(&mut self) {
        if self.segment.is_none() {
            return;
        }
        let live = self.store.log_image_estimate();
        let threshold = (live as f64 * self.config.compact_ratio) as u64;
        if self.log_bytes < self.config.compact_min_bytes.max(threshold)
            || self.compacting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let before = self.segment_no;
        self.roll();
        if self.segment_no == before {
            // The roll failed (reported); try again after the next batch.
            self.compacting.store(false, Ordering::Release);
            return;
        }
        let upto = self.segment_no;
        self.log_bytes = self.segment_len;
        self.log
            .stats
            .compactions_started
            .fetch_add(1, Ordering::Relaxed);
        let (vfs, dir, store, log, flag) = (
            Arc::clone(&self.config.vfs),
            self.dir.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.log),
            Arc::clone(&self.compacting),
        );
        let spawned = std::thread::Builder::new()
            .name("sessiond-compact".into())
            .spawn(move || {
                let started = Instant::now();
                // Put in place only once the log completes every change the
                // walk saw: multi-record operations in flight during it have
                // appended their batches, and all of it is synced.
                let settle = || {
                    if !store.settle_batches(Duration::from_secs(10)) {
                        return Err("multi-record operations never paused for 10 s".to_string());
                    }
                    log.sync_all_appended(Duration::from_secs(30))
                };
                match recovery::write_snapshot(&*vfs, &dir, upto, &store, settle) {
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

/// Writes for tests: a store journal into a byte vector.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct MemJournal(pub(crate) Mutex<Vec<u8>>);

#[cfg(test)]
impl Journal for MemJournal {
    fn put(&self, lsn: u64, namespace: &str, id: SessionId, r: &Record) {
        encode_record(&PutRef::of(lsn, namespace, id, r), &mut self.0.lock()).expect("encodable");
    }
    fn delete(&self, lsn: u64, namespace: &str, id: SessionId, tombstone_until: u64) {
        let rec = LogRecord::Delete {
            lsn,
            namespace: namespace.to_owned(),
            id: id.0,
            tombstone_until,
        };
        encode_record(&rec, &mut self.0.lock()).expect("encodable");
    }
    fn batch(&self, changes: Vec<Change>) {
        if let Some(rec) = format::batch_record(&changes) {
            encode_record(&rec, &mut self.0.lock()).expect("encodable");
        }
    }
    fn check(&self) -> Result<(), String> {
        Ok(())
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
mod power_cut;
#[cfg(test)]
mod tests;
