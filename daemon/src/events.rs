//! The session events feed: what happened to sessions, in order, kept for a
//! retention window and read by subscribers from any cursor in it.
//!
//! # Shape
//! The store reports each lifecycle change ([`Feed::emit`]) under the changed
//! record's lock, so the events of one session are in the order its changes
//! happened. `emit` draws the next cursor (a `u64`, strictly increasing,
//! never reused, kept across restarts), encodes the event and appends it to
//! an in-memory ring of recent events and to the batch waiting for the
//! files: a short critical section, no I/O, no waiting on subscribers.
//!
//! A flusher thread writes the batch to the current events file every
//! [`FLUSH_INTERVAL`] (or sooner once it holds [`FLUSH_BYTES`]), then
//! *publishes* the last cursor written: subscribers see an event only once
//! it is in a file (or, in memory only, once the flusher has passed it).
//! Files are fsynced every second and at shutdown. Expiry events are emitted
//! by the expiry round that reclaims the session, within one expiry tick of
//! its deadline, with the deadline as their time.
//!
//! # Files
//! `<data-dir>/events/<first cursor, 20 digits>.events`: a 16-byte header
//! (`SDEV`, version, zeros), then frames of `[len: u32 LE][crc32c: u32 LE]
//! [payload]`, the payload a bincode [`Event`]. A file is closed at
//! [`SEGMENT_BYTES`]; whole files past the retention (older than its time,
//! or beyond its bytes, oldest first) are deleted. The data log's compaction
//! does not touch them. At start-up only the newest file is read: a torn or
//! corrupt tail (a crash mid-write) is cut off, so the feed resumes after the
//! last whole event; an older file ends where the next begins (a damaged
//! frame in one stops a reader there, the checksum tells).
//!
//! # Subscribers
//! A subscriber asks for the events after a cursor. Recent ones come from the
//! ring; older ones from the files (read on a blocking thread); a cursor
//! older than the oldest event held is answered [`ReadError::Expired`]. A
//! subscriber therefore never holds events in the daemon's memory beyond one
//! read batch ([`READ_BYTES`]), and a slow one only reads further behind;
//! the connection closes it with `Lagging` if its socket stays unwritable.
//!
//! # Bounds
//! The ring holds at most `ring_bytes`. The batch waiting for the files holds
//! at most [`MAX_PENDING_BYTES`]: past it (a disk far slower than the
//! writers) events are dropped and counted (`dropped_total`), never waited
//! for; the metric makes such a gap visible.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use sessiond_protocol::frame::decode_value;
use sessiond_protocol::view::{encode_event, peek_event};
use sessiond_protocol::{Event, EventKind, SessionId};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How often the flusher writes what was emitted.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(5);
/// The flusher is woken early once this much waits.
pub const FLUSH_BYTES: usize = 256 * 1024;
/// Most bytes waiting for the files; beyond, events are dropped and counted.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// An events file is closed past this size.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Most bytes of events one read hands a subscriber.
pub const READ_BYTES: usize = 256 * 1024;
/// How far before the latest event time found at start-up expiries are
/// reported again (at least once: an expiry reaped in the last moments before
/// a crash may be reported twice, none is lost). Well over an expiry tick.
const HORIZON_MARGIN_MS: u64 = 2_000;
/// Bytes of an events file's header.
const HEADER: &[u8; 16] = b"SDEV\x01\0\0\0\0\0\0\0\0\0\0\0";
/// Bytes in front of each event's payload.
const FRAME_HEAD: usize = 8;
/// Largest event payload accepted when reading a file (an event is a few
/// hundred bytes: namespace, owner and ids are bounded).
const MAX_EVENT_BYTES: u32 = 64 * 1024;

/// The feed's settings.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Where the events files live (`None`: memory only, the ring is all).
    pub dir: Option<PathBuf>,
    /// Files whose newest event is older than this are deleted (`None`: no
    /// time bound).
    pub retention: Option<Duration>,
    /// The files together hold at most about this many bytes.
    pub retention_bytes: u64,
    /// Bytes of recent events kept in memory.
    pub ring_bytes: usize,
}

/// Why a read found nothing to hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The cursor is older than the oldest event held.
    Expired {
        /// The oldest cursor held.
        oldest: u64,
    },
}

/// Where a subscriber's last file read ended, so the next one seeks there
/// instead of scanning its file from the start.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadPos {
    /// The file (its first cursor).
    segment: u64,
    /// The cursor of the event at `offset`.
    next: u64,
    /// Byte offset in the file.
    offset: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct FeedCounters {
    /// Subscribers connected now.
    pub subscribers: AtomicI64,
    /// Events sent to subscribers.
    pub sent_total: AtomicU64,
    /// Subscribers closed for lagging.
    pub lagging_total: AtomicU64,
    /// Events emitted.
    pub emitted_total: AtomicU64,
    /// Events dropped because the files fell too far behind.
    pub dropped_total: AtomicU64,
}

/// One events file.
#[derive(Debug, Clone)]
struct Segment {
    first: u64,
    /// Last cursor in it (`first - 1` while empty).
    last: u64,
    /// The latest time among its events (ms).
    last_at: u64,
    bytes: u64,
    path: PathBuf,
}

/// A block of the in-memory ring: events `first..first + ends.len()`, each
/// encoded, back to back in `bytes` (no allocation per event).
struct Chunk {
    first: u64,
    bytes: Vec<u8>,
    /// Where each event ends in `bytes`.
    ends: Vec<u32>,
}

impl Chunk {
    fn last(&self) -> u64 {
        self.first + self.ends.len() as u64 - 1
    }

    fn cost(&self) -> usize {
        self.bytes.capacity() + 4 * self.ends.capacity() + 64
    }
}

/// Bytes of one ring chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// What `emit` shares with the flusher and the readers.
struct Inner {
    /// The cursor the next event gets.
    next: u64,
    /// Recent events, oldest first, contiguous cursors.
    ring: VecDeque<Chunk>,
    ring_bytes: usize,
    /// Framed events not yet written, and the last cursor among them.
    pending: Vec<u8>,
    pending_last: u64,
    pending_last_at: u64,
}

/// The files, for the flusher and the readers.
struct Files {
    /// Held (locked) while the feed is open: another daemon on the same
    /// data dir must not touch the files.
    _lock: File,
    dir: PathBuf,
    segments: Vec<Segment>,
    current: Option<File>,
    since_sync: Instant,
    dirty: bool,
}

/// The events feed (see the module's documentation).
pub struct Feed {
    config: FeedConfig,
    /// The latest event time in the files at start-up, less a margin: a
    /// session the log brings back already expired with a later deadline
    /// expired while the daemon was down (or unreported before it stopped).
    horizon: u64,
    inner: Mutex<Inner>,
    files: Option<Mutex<Files>>,
    wake: Condvar,
    wake_lock: Mutex<()>,
    published: watch::Sender<u64>,
    stop: AtomicBool,
    /// The last write to the files failed (logged once until one works).
    failing: AtomicBool,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Counters for `/metrics`.
    pub counters: FeedCounters,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.events")
}

/// Fills in the checksum of every frame in `bytes` (framed by `emit` with
/// the checksum left empty).
fn seal(bytes: &mut [u8]) {
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + FRAME_HEAD) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let end = at + FRAME_HEAD + len;
        let Some(payload) = bytes.get(at + FRAME_HEAD..end) else {
            return;
        };
        let crc = crc32c::crc32c(payload).to_le_bytes();
        bytes[at + 4..at + FRAME_HEAD].copy_from_slice(&crc);
        at = end;
    }
}

/// Reads whole frames from `bytes`; returns each event's cursor and time and
/// where its frame ends, stopping at the first torn or corrupt frame.
fn scan(bytes: &[u8]) -> Vec<(u64, u64, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + FRAME_HEAD) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_EVENT_BYTES {
            break;
        }
        let end = at + FRAME_HEAD + len as usize;
        let Some(payload) = bytes.get(at + FRAME_HEAD..end) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Some(head) = peek_event(payload) else {
            break;
        };
        out.push((head.cursor, head.at_ms, end));
        at = end;
    }
    out
}

impl Files {
    /// Lists the files in `dir`, checks the newest and cuts a damaged tail.
    fn open(dir: &Path) -> io::Result<(Self, u64)> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        if lock.try_lock().is_err() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another sessiond (it holds its LOCK)",
                    dir.display()
                ),
            ));
        }
        let mut firsts: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".events")?.parse::<u64>().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = Vec::new();
        let mut next = 1;
        for (i, first) in firsts.iter().enumerate() {
            let path = dir.join(segment_name(*first));
            let mut file = File::open(&path)?;
            let meta = file.metadata()?;
            let mut head = Vec::with_capacity(HEADER.len());
            Read::by_ref(&mut file)
                .take(HEADER.len() as u64)
                .read_to_end(&mut head)?;
            if head != HEADER {
                if head.len() < HEADER.len() && HEADER.starts_with(&head) {
                    // Created, then a crash (or a full disk) before its
                    // header was whole: it holds no event.
                    warn!(file = %path.display(), "removing an events file without a whole header");
                    fs::remove_file(&path)?;
                    continue;
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not an events file", path.display()),
                ));
            }
            let (last, last_at, end) = match firsts.get(i + 1) {
                // An older file is not read: its events end where the next
                // file's begin, and it was last written when its newest
                // event was (its time, for the retention).
                Some(following) => {
                    let written = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    (following - 1, written, meta.len())
                }
                // The newest is read through: its last whole event, its
                // latest time, and a torn tail (a crash mid-write) cut off.
                None => {
                    let mut rest = Vec::new();
                    file.read_to_end(&mut rest)?;
                    let events = scan(&rest);
                    let end = (HEADER.len() + events.last().map_or(0, |e| e.2)) as u64;
                    if end < meta.len() {
                        warn!(file = %path.display(), cut = meta.len() - end, "cutting the torn tail of the events file");
                        let f = OpenOptions::new().write(true).open(&path)?;
                        f.set_len(end)?;
                        f.sync_all()?;
                    }
                    let last = events.last().map_or(first.saturating_sub(1), |e| e.0);
                    let last_at = events.iter().map(|e| e.1).max().unwrap_or(0);
                    (last, last_at, end)
                }
            };
            next = next.max(last + 1).max(*first);
            segments.push(Segment {
                first: *first,
                last,
                last_at,
                bytes: end,
                path,
            });
        }
        Ok((
            Self {
                _lock: lock,
                dir: dir.to_path_buf(),
                segments,
                current: None,
                since_sync: Instant::now(),
                dirty: false,
            },
            next,
        ))
    }

    /// Appends framed events (`first..=last`) to the current file, starting
    /// a new one when it is full (or none is open).
    fn append(&mut self, bytes: &[u8], first: u64, last: u64, last_at: u64) -> io::Result<()> {
        let full = self
            .segments
            .last()
            .is_none_or(|s| s.bytes >= SEGMENT_BYTES);
        if self.current.is_none() || full {
            if let Some(f) = self.current.take() {
                f.sync_data()?;
            }
            let (file, seg) = match self.segments.last() {
                // Reopen the newest file after a restart if it has room.
                Some(s) if !full => {
                    let f = OpenOptions::new().append(true).open(&s.path)?;
                    (f, None)
                }
                _ => {
                    let path = self.dir.join(segment_name(first));
                    let mut f = OpenOptions::new()
                        .create_new(true)
                        .append(true)
                        .open(&path)?;
                    if let Err(e) = f.write_all(HEADER) {
                        // No room even for a header (a full disk): no file.
                        drop(f);
                        let _ = fs::remove_file(&path);
                        return Err(e);
                    }
                    (
                        f,
                        Some(Segment {
                            first,
                            last: first - 1,
                            last_at: 0,
                            bytes: HEADER.len() as u64,
                            path,
                        }),
                    )
                }
            };
            if let Some(seg) = seg {
                self.segments.push(seg);
                if let Ok(d) = File::open(&self.dir) {
                    let _ = d.sync_all();
                }
            }
            self.current = Some(file);
        }
        let (Some(file), Some(seg)) = (self.current.as_mut(), self.segments.last_mut()) else {
            return Ok(());
        };
        if let Err(e) = file.write_all(bytes) {
            // A partial write (a full disk) is cut back off, so the file
            // ends with whole events; the caller keeps the batch and tries
            // again (the file is opened to append: the next write lands at
            // the cut).
            if let Err(cut) = file.set_len(seg.bytes) {
                warn!(error = %cut, "cannot cut a partial write off the events file");
                self.current = None;
                seg.bytes = SEGMENT_BYTES;
            }
            return Err(e);
        }
        self.dirty = true;
        seg.last = last;
        seg.last_at = seg.last_at.max(last_at);
        seg.bytes += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) {
        if self.dirty {
            if let Some(f) = &self.current {
                if let Err(e) = f.sync_data() {
                    warn!(error = %e, "cannot sync the events file");
                }
            }
            self.dirty = false;
        }
        self.since_sync = Instant::now();
    }

    /// Deletes whole files past the retention (never the newest).
    fn retain(&mut self, retention: Option<Duration>, max_bytes: u64, now_ms: u64) {
        let horizon = retention
            .map(|r| now_ms.saturating_sub(u64::try_from(r.as_millis()).unwrap_or(u64::MAX)));
        while self.segments.len() > 1 {
            let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
            let oldest = &self.segments[0];
            let too_old = horizon.is_some_and(|h| oldest.last_at < h);
            if !too_old && total <= max_bytes {
                break;
            }
            if let Err(e) = fs::remove_file(&oldest.path) {
                warn!(error = %e, file = %oldest.path.display(), "cannot delete an events file past the retention");
                break;
            }
            self.segments.remove(0);
        }
    }

    fn oldest(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.last >= s.first)
            .map(|s| s.first)
    }

    /// The file holding the event after `after`, if any.
    fn locate(&self, after: u64) -> Option<Segment> {
        let want = after + 1;
        self.segments
            .iter()
            .rev()
            .find(|s| s.first <= want && s.last >= s.first)
            .cloned()
    }
}

/// Events of `seg` after `after` up to `until`, at most about `max_bytes`,
/// starting at `pos` when it points at `after + 1` (and leaving it after the
/// last event read). Read without the files' lock: the flusher may append
/// meanwhile (a frame it has not finished ends the read; events past `until`
/// are not taken), and a file the retention deletes meanwhile reads on, or
/// fails to open (the next read then finds the cursor expired).
fn read_segment(
    seg: &Segment,
    after: u64,
    until: u64,
    max_bytes: usize,
    pos: &mut ReadPos,
) -> io::Result<Vec<(u64, Bytes)>> {
    {
        let want = after + 1;
        let start = if pos.segment == seg.first && pos.next == want {
            pos.offset
        } else {
            HEADER.len() as u64
        };
        let mut f = File::open(&seg.path)?;
        f.seek(SeekFrom::Start(start))?;
        let mut offset = start;
        let mut out = Vec::new();
        let mut taken = 0;
        let mut reader = io::BufReader::with_capacity(64 * 1024, f);
        let mut head = [0u8; FRAME_HEAD];
        loop {
            match reader.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len == 0 || len > MAX_EVENT_BYTES {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            if reader.read_exact(&mut payload).is_err() || crc32c::crc32c(&payload) != crc {
                break;
            }
            let Some(cursor) = peek_event(&payload).map(|h| h.cursor) else {
                break;
            };
            if cursor > until {
                break;
            }
            offset += (FRAME_HEAD + payload.len()) as u64;
            if cursor >= want {
                taken += payload.len();
                out.push((cursor, Bytes::from(payload)));
                *pos = ReadPos {
                    segment: seg.first,
                    next: cursor + 1,
                    offset,
                };
                if taken >= max_bytes {
                    break;
                }
            }
        }
        Ok(out)
    }
}

impl Feed {
    /// Opens the feed: recovers its files (if any) and starts the flusher.
    ///
    /// # Errors
    /// The files cannot be read or created, or one is not an events file.
    pub fn open(config: FeedConfig) -> io::Result<Arc<Self>> {
        let (files, next) = match &config.dir {
            Some(dir) => {
                let (files, next) = Files::open(dir)?;
                (Some(Mutex::new(files)), next)
            }
            None => (None, 1),
        };
        // The newest file holding events has the latest ones (an older
        // file's time is only its last write).
        let horizon = files.as_ref().map_or(0, |f| {
            f.lock()
                .segments
                .iter()
                .rev()
                .find(|s| s.last >= s.first)
                .map_or(0, |s| s.last_at)
                .saturating_sub(HORIZON_MARGIN_MS)
        });
        let feed = Arc::new(Self {
            horizon,
            inner: Mutex::new(Inner {
                next,
                ring: VecDeque::new(),
                ring_bytes: 0,
                pending: Vec::new(),
                pending_last: next - 1,
                pending_last_at: 0,
            }),
            files,
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            published: watch::Sender::new(next - 1),
            stop: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            flusher: Mutex::new(None),
            counters: FeedCounters::default(),
            config,
        });
        if let Some(oldest) = feed.oldest() {
            info!(oldest, next, "events feed recovered");
        }
        let f = Arc::clone(&feed);
        let handle = std::thread::Builder::new()
            .name("sessiond-events".into())
            .spawn(move || f.flush_loop())?;
        *feed.flusher.lock() = Some(handle);
        Ok(feed)
    }

    /// Records an event (see the module's documentation). Never blocks on
    /// I/O or subscribers.
    pub fn emit(
        &self,
        namespace: &str,
        id: SessionId,
        owner: Option<&str>,
        kind: EventKind,
        at_ms: u64,
    ) {
        let mut inner = self.inner.lock();
        let cursor = inner.next;
        if self.files.is_some() {
            // Framed in place, its checksum left to the flusher: the
            // writer's share is an encoding into a buffer it reuses.
            if inner.pending.len() > MAX_PENDING_BYTES {
                self.counters.dropped_total.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let start = inner.pending.len();
            inner.pending.extend_from_slice(&[0; FRAME_HEAD]);
            encode_event(
                &mut inner.pending,
                cursor,
                at_ms,
                namespace,
                id,
                owner,
                kind,
            );
            let len = u32::try_from(inner.pending.len() - start - FRAME_HEAD).unwrap_or(u32::MAX);
            inner.pending[start..start + 4].copy_from_slice(&len.to_le_bytes());
            inner.pending_last_at = inner.pending_last_at.max(at_ms);
        } else {
            // Memory only: the ring is the feed, in blocks of events.
            // An eighth of the ring a block (64 KiB at most), so the ring
            // lets go of old events an eighth at a time.
            let block = (self.config.ring_bytes / 8).clamp(1024, CHUNK_BYTES);
            let need = 64 + namespace.len() + owner.map_or(0, str::len);
            let room = inner
                .ring
                .back()
                .is_some_and(|c| c.bytes.len() + need <= c.bytes.capacity());
            if !room {
                let chunk = Chunk {
                    first: cursor,
                    bytes: Vec::with_capacity(block.max(need)),
                    ends: Vec::with_capacity(block / 32),
                };
                inner.ring_bytes += chunk.cost();
                inner.ring.push_back(chunk);
                while inner.ring_bytes > self.config.ring_bytes && inner.ring.len() > 1 {
                    if let Some(old) = inner.ring.pop_front() {
                        inner.ring_bytes -= old.cost();
                    }
                }
            }
            if let Some(chunk) = inner.ring.back_mut() {
                let before = chunk.bytes.capacity() + 4 * chunk.ends.capacity();
                encode_event(&mut chunk.bytes, cursor, at_ms, namespace, id, owner, kind);
                chunk
                    .ends
                    .push(u32::try_from(chunk.bytes.len()).unwrap_or(u32::MAX));
                let grown = chunk.bytes.capacity() + 4 * chunk.ends.capacity() - before;
                inner.ring_bytes += grown;
            }
        }
        self.counters.emitted_total.fetch_add(1, Ordering::Relaxed);
        inner.pending_last = cursor;
        inner.next = cursor + 1;
        let wake = inner.pending.len() >= FLUSH_BYTES;
        drop(inner);
        if wake {
            self.wake.notify_one();
        }
    }

    fn flush_loop(&self) {
        loop {
            {
                let mut g = self.wake_lock.lock();
                self.wake.wait_for(&mut g, FLUSH_INTERVAL);
            }
            let stopping = self.stop.load(Ordering::Acquire);
            self.flush_once(stopping);
            if stopping {
                return;
            }
        }
    }

    /// Writes what waits, applies the retention, publishes.
    fn flush_once(&self, sync: bool) {
        let (mut bytes, last, last_at) = {
            let mut inner = self.inner.lock();
            (
                std::mem::take(&mut inner.pending),
                inner.pending_last,
                inner.pending_last_at,
            )
        };
        let published = *self.published.borrow();
        if last <= published && bytes.is_empty() {
            if let Some(files) = &self.files {
                let mut files = files.lock();
                if files.dirty && (sync || files.since_sync.elapsed() >= Duration::from_secs(1)) {
                    files.sync();
                }
            }
            return;
        }
        if let Some(files) = &self.files {
            let mut files = files.lock();
            if !bytes.is_empty() {
                seal(&mut bytes);
                if let Err(e) = files.append(&bytes, published + 1, last, last_at) {
                    // Kept, in front of what came since, and tried again at
                    // the next flush; nothing is published meanwhile. What
                    // waits stays bounded (`MAX_PENDING_BYTES`).
                    if self.failing.swap(true, Ordering::Relaxed) {
                        debug!(error = %e, "still cannot write the events file");
                    } else {
                        warn!(error = %e, "cannot write the events file; keeping the events and retrying");
                    }
                    let mut inner = self.inner.lock();
                    inner.pending.splice(0..0, bytes);
                    return;
                }
                if self.failing.swap(false, Ordering::Relaxed) {
                    info!("the events file takes writes again");
                }
            }
            let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
            files.retain(self.config.retention, self.config.retention_bytes, now);
            if sync || files.since_sync.elapsed() >= Duration::from_secs(1) {
                files.sync();
            }
        }
        self.published.send_replace(last);
    }

    /// The last cursor subscribers may read, and its changes.
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The oldest cursor held (`None`: no event yet).
    #[must_use]
    pub fn oldest(&self) -> Option<u64> {
        let from_files = self.files.as_ref().and_then(|f| f.lock().oldest());
        let from_ring = self.inner.lock().ring.front().map(|c| c.first);
        match (from_files, from_ring) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sessions restored already expired with a deadline after this expired
    /// unreported: the latest event time found at start-up less two seconds
    /// (an expiry reaped just before a crash may be reported twice).
    #[must_use]
    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    /// The cursor the next event will get.
    #[must_use]
    pub fn next(&self) -> u64 {
        self.inner.lock().next
    }

    /// The last cursor published.
    #[must_use]
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// The events after `after` that are published, at most about
    /// [`READ_BYTES`] of them, as (cursor, encoded event). May read the
    /// files: call it off the async workers (`spawn_blocking`) unless
    /// [`Feed::in_ring`] says yes.
    ///
    /// # Errors
    /// [`ReadError::Expired`] when `after` is older than the oldest event held.
    pub fn read_after(
        &self,
        after: u64,
        pos: &mut ReadPos,
    ) -> Result<Vec<(u64, Bytes)>, ReadError> {
        let until = self.published();
        if after >= until {
            return Ok(Vec::new());
        }
        if let Some(raw) = self.ring_after(after, until) {
            return Ok(raw);
        }
        let read = self.files.as_ref().map(|f| {
            let (oldest, seg) = {
                let files = f.lock();
                (files.oldest(), files.locate(after))
            };
            let raw = seg.map_or(Ok(Vec::new()), |seg| {
                read_segment(&seg, after, until, READ_BYTES, pos)
            });
            (oldest, raw)
        });
        match read {
            Some((Some(oldest), Ok(raw))) if oldest <= after + 1 => Ok(raw),
            Some((_, Err(e))) => {
                warn!(error = %e, "cannot read the events files");
                Ok(Vec::new())
            }
            _ => Err(ReadError::Expired {
                oldest: self.oldest().unwrap_or(until + 1),
            }),
        }
    }

    /// [`Feed::read_after`], decoded.
    ///
    /// # Errors
    /// As [`Feed::read_after`].
    pub fn read_events_after(
        &self,
        after: u64,
        pos: &mut ReadPos,
    ) -> Result<Vec<Event>, ReadError> {
        Ok(self
            .read_after(after, pos)?
            .into_iter()
            .filter_map(|(_, b)| decode_value::<Event>(&b).ok())
            .collect())
    }

    /// Whether the events after `after` start in the ring (a read needs no
    /// file).
    #[must_use]
    pub fn in_ring(&self, after: u64) -> bool {
        let inner = self.inner.lock();
        inner.ring.front().is_some_and(|c| c.first <= after + 1)
    }

    fn ring_after(&self, after: u64, until: u64) -> Option<Vec<(u64, Bytes)>> {
        let inner = self.inner.lock();
        let want = after + 1;
        if inner.ring.front()?.first > want {
            return None;
        }
        let mut out = Vec::new();
        let mut taken = 0;
        for chunk in inner.ring.iter().filter(|c| c.last() >= want) {
            let skip = usize::try_from(want.saturating_sub(chunk.first)).ok()?;
            let mut start = match skip {
                0 => 0,
                n => *chunk.ends.get(n - 1)? as usize,
            };
            for (i, end) in chunk.ends.iter().enumerate().skip(skip) {
                let cursor = chunk.first + i as u64;
                if cursor > until || taken >= READ_BYTES {
                    return Some(out);
                }
                let bytes = chunk.bytes.get(start..*end as usize)?;
                taken += bytes.len();
                out.push((cursor, Bytes::copy_from_slice(bytes)));
                start = *end as usize;
            }
        }
        Some(out)
    }

    /// Writes and syncs what waits and stops the flusher.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_one();
        if let Some(h) = self.flusher.lock().take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: Option<&Path>) -> FeedConfig {
        FeedConfig {
            dir: dir.map(Path::to_path_buf),
            retention: None,
            retention_bytes: u64::MAX,
            ring_bytes: 4096,
        }
    }

    fn wait_published(feed: &Feed, cursor: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while feed.published() < cursor {
            assert!(Instant::now() < deadline, "never published");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn emit_n(feed: &Feed, n: u64) {
        for i in 0..n {
            feed.emit(
                "app",
                SessionId([i as u8; 16]),
                Some("alice"),
                EventKind::Created,
                1000 + i,
            );
        }
    }

    fn read_all(feed: &Feed, mut after: u64) -> Vec<Event> {
        let mut all = Vec::new();
        let mut pos = ReadPos::default();
        loop {
            let batch = feed.read_events_after(after, &mut pos).unwrap();
            let Some(last) = batch.last() else {
                return all;
            };
            after = last.cursor;
            all.extend(batch);
        }
    }

    #[test]
    fn events_come_back_in_order_from_the_ring_and_the_files_and_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let feed = Feed::open(config(Some(dir.path()))).unwrap();
        emit_n(&feed, 500);
        wait_published(&feed, 500);
        // The ring holds the newest few only; the rest is read from the file.
        assert!(!feed.in_ring(0));
        let all = read_all(&feed, 0);
        assert_eq!(
            all.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            (1..=500).collect::<Vec<_>>()
        );
        assert_eq!(all[7].at_ms, 1007);
        assert_eq!(all[7].owner.as_deref(), Some("alice"));
        feed.shutdown();
        drop(feed);

        let feed = Feed::open(config(Some(dir.path()))).unwrap();
        assert_eq!(
            (feed.oldest(), feed.next(), feed.published()),
            (Some(1), 501, 500)
        );
        emit_n(&feed, 3);
        wait_published(&feed, 503);
        let tail = read_all(&feed, 498);
        assert_eq!(
            tail.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            vec![499, 500, 501, 502, 503]
        );
        feed.shutdown();
    }

    /// An older file is not read at start-up: its events end where the next
    /// file's begin, and every event still reads back in order.
    #[test]
    fn a_restart_reads_only_the_newest_file_and_every_event_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let feed = Feed::open(config(Some(dir.path()))).unwrap();
        emit_n(&feed, 5);
        wait_published(&feed, 5);
        feed.shutdown();
        drop(feed);
        // A second file, as the flusher would have started it at 16 MiB.
        let mut bytes = HEADER.to_vec();
        for cursor in 6..=8u64 {
            let start = bytes.len();
            bytes.extend_from_slice(&[0; FRAME_HEAD]);
            encode_event(
                &mut bytes,
                cursor,
                2000 + cursor,
                "app",
                SessionId([9; 16]),
                None,
                EventKind::Expired,
            );
            let len = u32::try_from(bytes.len() - start - FRAME_HEAD).unwrap();
            bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
        }
        seal(&mut bytes[HEADER.len()..]);
        fs::write(dir.path().join(segment_name(6)), bytes).unwrap();
        let feed = Feed::open(config(Some(dir.path()))).unwrap();
        assert_eq!(
            (feed.oldest(), feed.next(), feed.published()),
            (Some(1), 9, 8)
        );
        let all = read_all(&feed, 0);
        assert_eq!(
            all.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
        assert_eq!(all[7].at_ms, 2008);
        assert_eq!(
            feed.horizon(),
            2008 - HORIZON_MARGIN_MS,
            "the newest file's latest time"
        );
        feed.shutdown();
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_feed_resumes_after_the_last_whole_event() {
        let dir = tempfile::tempdir().unwrap();
        let feed = Feed::open(config(Some(dir.path()))).unwrap();
        emit_n(&feed, 10);
        wait_published(&feed, 10);
        feed.shutdown();
        drop(feed);
        let path = dir.path().join(segment_name(1));
        let len = fs::metadata(&path).unwrap().len();
        // A crash mid-write: half of the last frame.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let feed = Feed::open(config(Some(dir.path()))).unwrap();
        assert_eq!(feed.next(), 10);
        emit_n(&feed, 1);
        wait_published(&feed, 10);
        let all = read_all(&feed, 0);
        assert_eq!(all.len(), 10);
        assert_eq!(all[9].cursor, 10);
        assert_eq!(
            all[9].id,
            SessionId([0; 16]),
            "the new event 10, not the torn one"
        );
        feed.shutdown();
    }

    #[test]
    fn a_cursor_past_the_retention_names_the_oldest_held() {
        let feed = Feed::open(config(None)).unwrap();
        emit_n(&feed, 200);
        wait_published(&feed, 200);
        let oldest = feed.oldest().unwrap();
        assert!(oldest > 1, "the ring let old events go");
        let mut pos = ReadPos::default();
        assert_eq!(
            feed.read_events_after(0, &mut pos),
            Err(ReadError::Expired { oldest })
        );
        assert_eq!(
            feed.read_events_after(oldest - 1, &mut pos).unwrap()[0].cursor,
            oldest
        );
        feed.shutdown();
    }

    #[test]
    fn whole_files_past_the_byte_retention_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::open(dir.path()).unwrap().0;
        for i in 0..3u64 {
            let first = i * 10 + 1;
            files.segments.push(Segment {
                first,
                last: first + 9,
                last_at: 1000 * (i + 1),
                bytes: 100,
                path: dir.path().join(segment_name(first)),
            });
            fs::write(dir.path().join(segment_name(first)), HEADER).unwrap();
        }
        files.retain(None, 250, 0);
        assert_eq!(files.oldest(), Some(11));
        files.retain(Some(Duration::from_millis(500)), u64::MAX, 3200);
        assert_eq!(files.oldest(), Some(21), "the newest file is always kept");
        assert!(!dir.path().join(segment_name(1)).exists());
    }
}
