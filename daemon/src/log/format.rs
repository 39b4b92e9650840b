//! The on-disk format of log segments and snapshots, byte by byte.
//!
//! # File header (16 bytes)
//!
//! ```text
//! offset  size  field
//! 0       8     magic "SESSIOND"
//! 8       2     format version, u16 little-endian (2; 1 is still read)
//! 10      1     kind: 1 = log segment, 2 = snapshot
//! 11      1     reserved, 0
//! 12      4     CRC32C of bytes 0..12, u32 little-endian
//! ```
//!
//! # Record frame (after the header, repeated to the end of the file)
//!
//! ```text
//! offset  size  field
//! 0       4     payload length N, u32 little-endian (0 < N <= MAX_RECORD_LEN)
//! 4       4     CRC32C of the payload, u32 little-endian
//! 8       N     payload: one `LogRecord`, encoded with the protocol crate's codec
//!               (bincode 2 standard configuration; see sessiond_protocol::frame)
//! ```
//!
//! A payload is a post-image: `Put` carries the whole record as it now is,
//! `Delete` the id that went away and until when its tombstone lasts, `Alias`
//! a rotated-away id that resolves to its successor during a grace period, and
//! `Batch` the records of one operation that changes several (one frame, one
//! checksum: all of them or none). Applying a log's records in order
//! rebuilds the store, and applying one twice changes nothing, which is what
//! lets a snapshot be taken while writes go on.
//!
//! # The ordering rule (format version 2)
//! Every `Put`, `Delete` and `Alias` carries an LSN: a number the store draws
//! from one counter while it holds the changed record's lock, so for any one
//! key the LSNs increase in the order memory saw the changes, whatever order
//! the records reach the file in (a batch is appended when its operation is
//! complete, possibly after a later change to one of its keys made through
//! another connection). Replay applies a record only if its LSN is above the
//! last LSN applied to the same key, so an older post-image never overwrites a
//! newer one. LSNs start above the highest one in the files at every start.
//! A snapshot begins with a `Checkpoint` holding the LSN counter's value S
//! when its walk began; its images carry LSN 0 and apply as they are. Every
//! change is given its LSN at the moment it is made in memory, under the
//! record's lock, so a change below S was made before the walk and is in the
//! images, and a change at or above S was made after the snapshot's first
//! segment began and is in the segments that follow. Replay therefore skips
//! records below S in those segments (the late records of a batch) and
//! applies the rest by the rule above. A snapshot is put in place only once
//! those segments are synced past every change its walk saw (including the
//! batches of operations it saw half of), so replaying them over it always
//! completes what it holds.
//! Version 1 files (no LSNs) are still read: their records apply in file order.
//!
//! # Telling a torn tail from corruption
//! A crash can only damage the end of the newest segment: writes not yet
//! synced may be lost in part, cut at any byte, or land out of order (a later
//! page on disk, an earlier one not). A page that never reached the disk reads
//! as zeros. So in the newest segment a frame that runs past the end of the
//! file, or a damaged frame with a zeroed sector (512 bytes, aligned) at or
//! after its start, ends the log there: the rest was never acknowledged. It is
//! cut, and a copy of the bytes cut is kept beside the segment. A damaged frame
//! anywhere else (a bit flip with no lost sector, an impossible length, a
//! damaged header, an older segment or a snapshot) is corruption. A segment
//! that holds no record (empty, or a header cut short and followed by zeros:
//! a crash or a full disk while it was being created) is empty, wherever it
//! is, and is removed.

use serde::{Deserialize, Serialize};
use sessiond_protocol::frame::{decode_value_in_place, encode_value_into};

/// File magic.
pub const MAGIC: &[u8; 8] = b"SESSIOND";
/// Format version written in every header.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// Bytes of a file header.
pub const HEADER_LEN: usize = 16;
/// Bytes of a record frame's header.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest record payload: far above any legal record (attributes are capped
/// well below), so a larger length can only be damage.
pub const MAX_RECORD_LEN: u32 = 64 * 1024 * 1024;
/// The unit a disk writes atomically at best: a lost write leaves whole
/// sectors of zeros.
pub const SECTOR: usize = 512;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An append-only segment of the log.
    Segment = 1,
    /// A snapshot of the live records.
    Snapshot = 2,
}

/// The header of a file of `kind` in this build's format.
#[must_use]
pub fn header(kind: FileKind) -> [u8; HEADER_LEN] {
    header_of(kind, FORMAT_VERSION)
}

/// The header of a file of `kind` in format `version`.
#[must_use]
pub fn header_of(kind: FileKind, version: u16) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&version.to_le_bytes());
    h[10] = kind as u8;
    let crc = crc32c::crc32c(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A whole session as stored, for `Put`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutImage {
    /// Orders this image among the changes to its key (see the module docs; 0
    /// in snapshots and version 1 files).
    pub lsn: u64,
    /// Namespace name.
    pub namespace: String,
    /// Session id.
    pub id: [u8; 16],
    /// Owner.
    pub owner: Option<String>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last activity (ms).
    pub last_active: u64,
    /// Sliding ttl (ms).
    pub idle_ttl: Option<u64>,
    /// Absolute lifetime (ms).
    pub max_lifetime: Option<u64>,
    /// Version.
    pub version: u64,
    /// Encoded attribute map.
    #[serde(with = "sessiond_protocol::blob")]
    pub attrs: Vec<u8>,
}

impl PutImage {
    /// The image of `record` at (`namespace`, `id`), ordered by `lsn`.
    #[must_use]
    pub fn of(
        lsn: u64,
        namespace: &str,
        id: sessiond_protocol::SessionId,
        record: &crate::store::record::Record,
    ) -> Self {
        Self {
            lsn,
            namespace: namespace.to_owned(),
            id: id.0,
            owner: record.owner().map(|o| &**o).map(str::to_owned),
            created_at: record.created_at(),
            last_active: record.last_active(),
            idle_ttl: record.ttl().idle_ttl_ms,
            max_lifetime: record.ttl().max_lifetime_ms,
            version: record.version(),
            attrs: record.attrs().to_vec(),
        }
    }
}

/// [`LogRecord::Put`] of a [`PutImage`] borrowed from the store's record:
/// encodes to exactly the same bytes without copying the record's strings
/// and attributes first (a `LogRecord` with its variant 0 and the same
/// fields, by reference).
#[derive(Serialize)]
pub enum PutRef<'a> {
    /// `LogRecord::Put`.
    Put(PutImageRef<'a>),
}

/// [`PutImage`], borrowed.
#[derive(Serialize)]
pub struct PutImageRef<'a> {
    /// Order among the key's changes.
    pub lsn: u64,
    /// Namespace name.
    pub namespace: &'a str,
    /// Session id.
    pub id: [u8; 16],
    /// Owner.
    pub owner: Option<&'a str>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last activity (ms).
    pub last_active: u64,
    /// Sliding ttl (ms).
    pub idle_ttl: Option<u64>,
    /// Absolute lifetime (ms).
    pub max_lifetime: Option<u64>,
    /// Version.
    pub version: u64,
    /// Encoded attribute map.
    #[serde(with = "sessiond_protocol::blob")]
    pub attrs: &'a [u8],
}

impl<'a> PutRef<'a> {
    /// The image of `record` at (`namespace`, `id`), by reference.
    #[must_use]
    pub fn of(
        lsn: u64,
        namespace: &'a str,
        id: sessiond_protocol::SessionId,
        record: &'a crate::store::record::Record,
    ) -> Self {
        Self::Put(PutImageRef {
            lsn,
            namespace,
            id: id.0,
            owner: record.owner().map(|o| &**o),
            created_at: record.created_at(),
            last_active: record.last_active(),
            idle_ttl: record.ttl().idle_ttl_ms,
            max_lifetime: record.ttl().max_lifetime_ms,
            version: record.version(),
            attrs: record.attrs(),
        })
    }
}

/// One log record (format version 2). Variants only grow at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRecord {
    /// The record now looks like this.
    Put(PutImage),
    /// The record is gone; its id is refused until `tombstone_until` (ms; 0: no tombstone).
    Delete {
        /// Order among the key's changes.
        lsn: u64,
        /// Namespace name.
        namespace: String,
        /// Session id.
        id: [u8; 16],
        /// End of the tombstone.
        tombstone_until: u64,
    },
    /// Records of one operation, applied together or not at all (one frame,
    /// one checksum).
    Batch(Vec<LogRecord>),
    /// Until `until` (ms), requests for the rotated-away `id` act on `to`.
    Alias {
        /// Order among the changes to `id`.
        lsn: u64,
        /// Namespace name.
        namespace: String,
        /// The old id.
        id: [u8; 16],
        /// The id it was rotated to.
        to: [u8; 16],
        /// End of the grace period.
        until: u64,
    },
    /// First in every snapshot: the LSN counter when its walk began. Every
    /// change with a lower LSN is in the snapshot's images, so replay skips
    /// records below it in the segments that follow (late batch records).
    Checkpoint {
        /// The next LSN when the snapshot's walk began.
        lsn: u64,
    },
}

impl LogRecord {
    /// The record's LSN (0 for a batch, which has none of its own).
    #[must_use]
    pub fn lsn(&self) -> u64 {
        match self {
            Self::Put(p) => p.lsn,
            Self::Delete { lsn, .. } | Self::Alias { lsn, .. } | Self::Checkpoint { lsn } => *lsn,
            Self::Batch(_) => 0,
        }
    }
}

impl From<&crate::store::Change> for LogRecord {
    fn from(change: &crate::store::Change) -> Self {
        use crate::store::Change;
        match change {
            Change::Put {
                lsn,
                namespace,
                id,
                image,
            } => Self::Put(PutImage {
                lsn: *lsn,
                namespace: namespace.to_string(),
                id: id.0,
                owner: image.owner.as_deref().map(str::to_owned),
                created_at: image.created_at,
                last_active: image.last_active,
                idle_ttl: image.ttl.idle_ttl_ms,
                max_lifetime: image.ttl.max_lifetime_ms,
                version: image.version,
                attrs: image.attrs.to_vec(),
            }),
            Change::Delete {
                lsn,
                namespace,
                id,
                tombstone_until,
            } => Self::Delete {
                lsn: *lsn,
                namespace: namespace.to_string(),
                id: id.0,
                tombstone_until: *tombstone_until,
            },
            Change::Alias {
                lsn,
                namespace,
                id,
                to,
                until,
            } => Self::Alias {
                lsn: *lsn,
                namespace: namespace.to_string(),
                id: id.0,
                to: to.0,
                until: *until,
            },
        }
    }
}

/// The log record of a multi-record operation's batch: one record as it is,
/// several as one [`LogRecord::Batch`] (one frame: all or none).
#[must_use]
pub fn batch_record(changes: &[crate::store::Change]) -> Option<LogRecord> {
    match changes {
        [] => None,
        [one] => Some(one.into()),
        many => Some(LogRecord::Batch(many.iter().map(Into::into).collect())),
    }
}

/// Format version 1 (no LSNs, no aliases), read in place for files written
/// by older builds; a batch inside a batch does not decode.
mod v1 {
    use serde::Deserialize;

    use super::{NestedBatch, PutView, RecordRef};

    #[derive(Deserialize)]
    pub(super) struct PutImage<'a> {
        namespace: &'a str,
        id: [u8; 16],
        #[serde(borrow)]
        owner: Option<&'a str>,
        created_at: u64,
        last_active: u64,
        idle_ttl: Option<u64>,
        max_lifetime: Option<u64>,
        version: u64,
        attrs: &'a [u8],
    }

    #[derive(Deserialize)]
    pub(super) enum LogRecord<'a> {
        Put(#[serde(borrow)] PutImage<'a>),
        Delete {
            namespace: &'a str,
            id: [u8; 16],
            tombstone_until: u64,
        },
        Batch(#[serde(borrow)] Vec<Flat<'a>>),
    }

    #[derive(Deserialize)]
    pub(super) enum Flat<'a> {
        Put(#[serde(borrow)] PutImage<'a>),
        Delete {
            namespace: &'a str,
            id: [u8; 16],
            tombstone_until: u64,
        },
        Batch(NestedBatch),
    }

    fn put(p: PutImage<'_>) -> RecordRef<'_> {
        RecordRef::Put(PutView {
            lsn: 0,
            namespace: p.namespace,
            id: p.id,
            owner: p.owner,
            created_at: p.created_at,
            last_active: p.last_active,
            idle_ttl: p.idle_ttl,
            max_lifetime: p.max_lifetime,
            version: p.version,
            attrs: p.attrs,
        })
    }

    fn delete<'a>(namespace: &'a str, id: [u8; 16], tombstone_until: u64) -> RecordRef<'a> {
        RecordRef::Delete {
            lsn: 0,
            namespace,
            id,
            tombstone_until,
        }
    }

    impl<'a> From<LogRecord<'a>> for RecordRef<'a> {
        fn from(r: LogRecord<'a>) -> Self {
            match r {
                LogRecord::Put(p) => put(p),
                LogRecord::Delete {
                    namespace,
                    id,
                    tombstone_until,
                } => delete(namespace, id, tombstone_until),
                LogRecord::Batch(records) => Self::Batch(
                    records
                        .into_iter()
                        .map(|f| match f {
                            Flat::Put(p) => put(p),
                            Flat::Delete {
                                namespace,
                                id,
                                tombstone_until,
                            } => delete(namespace, id, tombstone_until),
                            Flat::Batch(NestedBatch) => {
                                unreachable!("a nested batch never decodes")
                            }
                        })
                        .collect(),
                ),
            }
        }
    }
}

/// A [`LogRecord`] read in place: strings and attributes borrowed from the
/// file's bytes (replay allocates nothing per field). Same variants, same
/// fields, same order: the same bytes decode as either. A batch inside a
/// batch does not decode (no file can make decoding recurse deeply).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum RecordRef<'a> {
    /// [`LogRecord::Put`].
    Put(#[serde(borrow)] PutView<'a>),
    /// [`LogRecord::Delete`].
    Delete {
        /// Order among the key's changes.
        lsn: u64,
        /// Namespace name.
        namespace: &'a str,
        /// Session id.
        id: [u8; 16],
        /// End of the tombstone.
        tombstone_until: u64,
    },
    /// [`LogRecord::Batch`], never nested.
    Batch(#[serde(borrow, deserialize_with = "flat_refs")] Vec<RecordRef<'a>>),
    /// [`LogRecord::Alias`].
    Alias {
        /// Order among the changes to `id`.
        lsn: u64,
        /// Namespace name.
        namespace: &'a str,
        /// The old id.
        id: [u8; 16],
        /// The id it was rotated to.
        to: [u8; 16],
        /// End of the grace period.
        until: u64,
    },
    /// [`LogRecord::Checkpoint`].
    Checkpoint {
        /// The next LSN when the snapshot's walk began.
        lsn: u64,
    },
}

/// [`PutImage`] read in place.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PutView<'a> {
    /// Order among the key's changes.
    pub lsn: u64,
    /// Namespace name.
    pub namespace: &'a str,
    /// Session id.
    pub id: [u8; 16],
    /// Owner.
    #[serde(borrow)]
    pub owner: Option<&'a str>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last activity (ms).
    pub last_active: u64,
    /// Sliding ttl (ms).
    pub idle_ttl: Option<u64>,
    /// Absolute lifetime (ms).
    pub max_lifetime: Option<u64>,
    /// Version.
    pub version: u64,
    /// Encoded attribute map.
    pub attrs: &'a [u8],
}

/// A record of a batch as decoded: [`RecordRef`]'s variants with a batch
/// refused in its place (variant indices are positions).
#[derive(Deserialize)]
enum FlatRef<'a> {
    Put(#[serde(borrow)] PutView<'a>),
    Delete {
        lsn: u64,
        namespace: &'a str,
        id: [u8; 16],
        tombstone_until: u64,
    },
    Batch(NestedBatch),
    Alias {
        lsn: u64,
        namespace: &'a str,
        id: [u8; 16],
        to: [u8; 16],
        until: u64,
    },
    Checkpoint {
        lsn: u64,
    },
}

/// Never decodes: a batch inside a batch.
struct NestedBatch;

impl<'de> Deserialize<'de> for NestedBatch {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("a batch inside a batch"))
    }
}

fn flat_refs<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<RecordRef<'a>>, D::Error> {
    let flat = Vec::<FlatRef<'a>>::deserialize(d)?;
    flat.into_iter()
        .map(|f| match f {
            FlatRef::Put(p) => Ok(RecordRef::Put(p)),
            FlatRef::Delete {
                lsn,
                namespace,
                id,
                tombstone_until,
            } => Ok(RecordRef::Delete {
                lsn,
                namespace,
                id,
                tombstone_until,
            }),
            FlatRef::Batch(NestedBatch) => Err(serde::de::Error::custom("a batch inside a batch")),
            FlatRef::Alias {
                lsn,
                namespace,
                id,
                to,
                until,
            } => Ok(RecordRef::Alias {
                lsn,
                namespace,
                id,
                to,
                until,
            }),
            FlatRef::Checkpoint { lsn } => Ok(RecordRef::Checkpoint { lsn }),
        })
        .collect()
}

impl RecordRef<'_> {
    /// Whether this record, or one in its batch, carries no LSN (a version 1
    /// file's record or a snapshot's image).
    #[must_use]
    pub fn unordered(&self) -> bool {
        match self {
            Self::Put(p) => p.lsn == 0,
            Self::Delete { lsn, .. } | Self::Alias { lsn, .. } => *lsn == 0,
            Self::Batch(records) => records.iter().any(Self::unordered),
            Self::Checkpoint { .. } => false,
        }
    }
}

impl RecordRef<'_> {
    /// An owned copy.
    #[must_use]
    pub fn to_owned(&self) -> LogRecord {
        match self {
            Self::Put(p) => LogRecord::Put(PutImage {
                lsn: p.lsn,
                namespace: p.namespace.to_owned(),
                id: p.id,
                owner: p.owner.map(str::to_owned),
                created_at: p.created_at,
                last_active: p.last_active,
                idle_ttl: p.idle_ttl,
                max_lifetime: p.max_lifetime,
                version: p.version,
                attrs: p.attrs.to_vec(),
            }),
            Self::Delete {
                lsn,
                namespace,
                id,
                tombstone_until,
            } => LogRecord::Delete {
                lsn: *lsn,
                namespace: (*namespace).to_owned(),
                id: *id,
                tombstone_until: *tombstone_until,
            },
            Self::Batch(records) => LogRecord::Batch(records.iter().map(Self::to_owned).collect()),
            Self::Alias {
                lsn,
                namespace,
                id,
                to,
                until,
            } => LogRecord::Alias {
                lsn: *lsn,
                namespace: (*namespace).to_owned(),
                id: *id,
                to: *to,
                until: *until,
            },
            Self::Checkpoint { lsn } => LogRecord::Checkpoint { lsn: *lsn },
        }
    }
}

impl LogRecord {
    /// This record as a [`RecordRef`] borrowing from it.
    #[must_use]
    pub fn as_ref(&self) -> RecordRef<'_> {
        match self {
            Self::Put(p) => RecordRef::Put(PutView {
                lsn: p.lsn,
                namespace: &p.namespace,
                id: p.id,
                owner: p.owner.as_deref(),
                created_at: p.created_at,
                last_active: p.last_active,
                idle_ttl: p.idle_ttl,
                max_lifetime: p.max_lifetime,
                version: p.version,
                attrs: &p.attrs,
            }),
            Self::Delete {
                lsn,
                namespace,
                id,
                tombstone_until,
            } => RecordRef::Delete {
                lsn: *lsn,
                namespace,
                id: *id,
                tombstone_until: *tombstone_until,
            },
            Self::Batch(records) => RecordRef::Batch(records.iter().map(Self::as_ref).collect()),
            Self::Alias {
                lsn,
                namespace,
                id,
                to,
                until,
            } => RecordRef::Alias {
                lsn: *lsn,
                namespace,
                id: *id,
                to: *to,
                until: *until,
            },
            Self::Checkpoint { lsn } => RecordRef::Checkpoint { lsn: *lsn },
        }
    }
}

/// Decodes one payload of a file in format `version`, in place.
fn decode_record(payload: &[u8], version: u16) -> Result<RecordRef<'_>, String> {
    if version == 1 {
        decode_value_in_place::<v1::LogRecord<'_>>(payload)
            .map(Into::into)
            .map_err(|e| e.to_string())
    } else {
        decode_value_in_place::<RecordRef<'_>>(payload).map_err(|e| e.to_string())
    }
}

/// Appends one framed record to `out`: a [`LogRecord`] (or a [`PutRef`],
/// which encodes as its `Put`).
///
/// # Errors
/// The codec's message if the record cannot be encoded (a bug).
pub fn encode_record<R: Serialize>(record: &R, out: &mut Vec<u8>) -> Result<(), String> {
    // Length and checksum go in front once the payload is encoded in place.
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    if let Err(e) = encode_value_into(record, out) {
        out.truncate(start);
        return Err(e.to_string());
    }
    let payload_len = out.len() - start - 8;
    let Some(len) = u32::try_from(payload_len)
        .ok()
        .filter(|l| *l <= MAX_RECORD_LEN)
    else {
        out.truncate(start);
        return Err(format!("log record of {payload_len} bytes is too large"));
    };
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// How a scan of one file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belongs to a valid record.
    Clean,
    /// The last writes were lost in part (only judged so in the newest
    /// segment): everything from `offset` on is to be cut.
    Torn {
        /// Where the torn frame starts.
        offset: u64,
    },
    /// A damaged frame or header at `offset`, with the reason.
    Corrupt {
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment whose creation never finished (empty, or a header cut short
    /// and followed by zeros): it holds no record and is to be removed.
    Empty,
}

/// The result of scanning one file: its records owned ([`scan`]) or read in
/// place ([`scan_in_place`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<R = LogRecord> {
    /// The valid records, in order.
    pub records: Vec<R>,
    /// Bytes up to the end of the last valid record (header included).
    pub valid_len: u64,
    /// How the file ends.
    pub tail: Tail,
}

/// Whether `bytes` from `from` on are all zeros.
fn zeros_from(bytes: &[u8], from: usize) -> bool {
    bytes.get(from..).is_some_and(|b| b.iter().all(|&x| x == 0))
}

/// Whether a write between `from` and `to` (a damaged frame's extent) was
/// lost: the rest of the sector `from` is in reads as zeros, or a whole
/// sector within it does (with data after it: pages that reached the disk
/// out of order). Zeros in later frames do not count: a bit flip in a frame
/// whose neighbours happen to hold zeros is still damage.
fn lost_write(bytes: &[u8], from: usize, to: usize) -> bool {
    let to = to.min(bytes.len());
    let zeros = |a: usize, b: usize| {
        bytes
            .get(a..b.min(to))
            .is_some_and(|r| !r.is_empty() && r.iter().all(|&x| x == 0))
    };
    // The rest of the first sector, then each sector (or the part of it in
    // the frame) from its start.
    if zeros(from, (from / SECTOR + 1) * SECTOR) {
        return true;
    }
    let mut s = (from / SECTOR + 1) * SECTOR;
    while s < to {
        if zeros(s, s + SECTOR) {
            return true;
        }
        s += SECTOR;
    }
    false
}

/// Whether a segment's creation never finished: its header cut short (or
/// never written) and zeros after it, so it holds no record ([`Tail::Empty`];
/// read from the header alone).
#[must_use]
pub fn unfinished_segment(bytes: &[u8]) -> bool {
    let expected = header(FileKind::Segment);
    let written = bytes
        .iter()
        .zip(expected.iter())
        .take_while(|(a, b)| a == b)
        .count();
    written < HEADER_LEN && zeros_from(bytes, written)
}

/// The first record of a file whose header and first frame are sound (a
/// snapshot's checkpoint, read before the rest of the snapshot is).
#[must_use]
pub fn first_record(bytes: &[u8], kind: FileKind) -> Option<RecordRef<'_>> {
    let len = bytes.get(HEADER_LEN..HEADER_LEN + 4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?);
    let end = HEADER_LEN + FRAME_HEADER_LEN + usize::try_from(len).ok()?;
    scan_in_place(bytes.get(..end)?, kind, false)
        .records
        .into_iter()
        .next()
}

/// Scans a whole file's bytes. `newest` says whether this is the newest
/// segment, the only place a crash can leave a torn tail.
#[must_use]
pub fn scan(bytes: &[u8], kind: FileKind, newest: bool) -> Scan {
    let s = scan_in_place(bytes, kind, newest);
    Scan {
        records: s.records.iter().map(RecordRef::to_owned).collect(),
        valid_len: s.valid_len,
        tail: s.tail,
    }
}

/// [`scan`], with the records borrowing from `bytes`.
#[must_use]
pub fn scan_in_place(bytes: &[u8], kind: FileKind, newest: bool) -> Scan<RecordRef<'_>> {
    let mut records = Vec::new();
    let corrupt = |offset: usize, reason: String, records| Scan {
        records,
        valid_len: offset as u64,
        tail: Tail::Corrupt {
            offset: offset as u64,
            reason,
        },
    };
    let h = bytes.get(..HEADER_LEN).unwrap_or(bytes);
    if kind == FileKind::Segment && unfinished_segment(bytes) {
        return Scan {
            records,
            valid_len: 0,
            tail: Tail::Empty,
        };
    }
    if h.len() < HEADER_LEN {
        return corrupt(
            0,
            format!("file of {} bytes has no complete header", bytes.len()),
            records,
        );
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if &h[..8] != MAGIC {
        return corrupt(0, "not a sessiond file (bad magic)".into(), records);
    }
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return corrupt(
            0,
            format!(
                "format version {version} is not supported (this build reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
            ),
            records,
        );
    }
    if h != header_of(kind, version) {
        return corrupt(0, "damaged or mismatched file header".into(), records);
    }
    let data_end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(HEADER_LEN, |p| p + 1)
        .max(HEADER_LEN);
    let mut pos = HEADER_LEN;
    // Segments written under `--fsync always` are zero-filled ahead of the
    // writer: zeros from a record boundary to the end are unwritten space.
    while pos < bytes.len() {
        if kind == FileKind::Segment && pos >= data_end {
            break;
        }
        let torn = Scan {
            records: Vec::new(),
            valid_len: pos as u64,
            tail: Tail::Torn { offset: pos as u64 },
        };
        let Some(fh) = bytes.get(pos..pos + FRAME_HEADER_LEN) else {
            if newest {
                return Scan { records, ..torn };
            }
            return corrupt(pos, "incomplete record header".into(), records);
        };
        let len = u32::from_le_bytes([fh[0], fh[1], fh[2], fh[3]]);
        let crc = u32::from_le_bytes([fh[4], fh[5], fh[6], fh[7]]);
        if len == 0 || len > MAX_RECORD_LEN {
            // The header itself is garbage: only its sector can tell.
            if newest && lost_write(bytes, pos, (pos / SECTOR + 1) * SECTOR) {
                return Scan { records, ..torn };
            }
            return corrupt(pos, format!("impossible record length {len}"), records);
        }
        let start = pos + FRAME_HEADER_LEN;
        let end = start + len as usize;
        let Some(payload) = bytes.get(start..end) else {
            if newest {
                return Scan { records, ..torn };
            }
            return corrupt(
                pos,
                format!("record of {len} bytes runs past the end of the file"),
                records,
            );
        };
        if crc32c::crc32c(payload) != crc {
            // The last record half written (the file's end or its
            // zero-filled space follows), or a lost write in the newest
            // segment's unsynced tail.
            if newest && (zeros_from(bytes, end) || lost_write(bytes, pos, end)) {
                return Scan { records, ..torn };
            }
            return corrupt(pos, "checksum mismatch".into(), records);
        }
        match decode_record(payload, version) {
            Ok(r) => records.push(r),
            Err(e) => return corrupt(pos, format!("undecodable record: {e}"), records),
        }
        pos = end;
    }
    Scan {
        records,
        valid_len: pos.min(bytes.len()) as u64,
        tail: Tail::Clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn put(n: u8) -> LogRecord {
        LogRecord::Put(PutImage {
            lsn: u64::from(n),
            namespace: "app".into(),
            id: [n; 16],
            owner: Some("alice".into()),
            created_at: 1,
            last_active: 2,
            idle_ttl: Some(1000),
            max_lifetime: None,
            version: 3,
            attrs: vec![0],
        })
    }

    fn file(records: &[LogRecord]) -> (Vec<u8>, Vec<usize>) {
        let mut out = header(FileKind::Segment).to_vec();
        let mut ends = Vec::new();
        for r in records {
            encode_record(r, &mut out).unwrap();
            ends.push(out.len());
        }
        (out, ends)
    }

    #[test]
    fn golden_header_and_record() {
        assert_eq!(
            header_of(FileKind::Segment, 1),
            [b'S', b'E', b'S', b'S', b'I', b'O', b'N', b'D', 1, 0, 1, 0, 0x35, 0xc2, 0x86, 0xc4]
        );
        assert_eq!(
            header(FileKind::Segment),
            [b'S', b'E', b'S', b'S', b'I', b'O', b'N', b'D', 2, 0, 1, 0, 0x0c, 0x4b, 0xa4, 0xa6]
        );
        let mut out = Vec::new();
        let del = LogRecord::Delete {
            lsn: 5,
            namespace: "a".into(),
            id: [9; 16],
            tombstone_until: 300,
        };
        encode_record(&del, &mut out).unwrap();
        // len 23, crc, then: tag 1, lsn 5, "a" (len 1), 16 x 9, varint 300 (251 2C 01).
        assert_eq!(&out[..4], &[23, 0, 0, 0]);
        assert_eq!(&out[8..12], &[1, 5, 1, b'a']);
        assert_eq!(&out[28..], &[251, 0x2c, 0x01]);
    }

    /// Files of format version 1 (no LSNs) are still read, as LSN 0.
    #[test]
    fn version_1_files_are_read() {
        // A v1 delete: tag 1, "a", 16 x 9, varint 300.
        let mut payload = vec![1, 1, b'a'];
        payload.extend_from_slice(&[9; 16]);
        payload.extend_from_slice(&[251, 0x2c, 0x01]);
        let mut bytes = header_of(FileKind::Segment, 1).to_vec();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let s = scan(&bytes, FileKind::Segment, false);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(
            s.records,
            vec![LogRecord::Delete {
                lsn: 0,
                namespace: "a".into(),
                id: [9; 16],
                tombstone_until: 300
            }]
        );
    }

    /// A lost page in the newest segment's unsynced tail (zeros, with data
    /// after them) ends the log there; elsewhere it is damage.
    #[test]
    fn a_lost_page_before_later_ones_is_a_torn_tail_in_the_newest_segment() {
        let records: Vec<LogRecord> = (1..=40).map(put).collect();
        let (bytes, ends) = file(&records);
        assert!(bytes.len() > 3 * SECTOR);
        let mut holed = bytes.clone();
        let hole = SECTOR..2 * SECTOR;
        holed[hole.clone()].fill(0);
        let first_hit = ends.iter().position(|&e| e > hole.start).unwrap();
        let s = scan(&holed, FileKind::Segment, true);
        assert_eq!(s.records.len(), first_hit);
        assert!(matches!(s.tail, Tail::Torn { .. }), "{:?}", s.tail);
        assert!(matches!(
            scan(&holed, FileKind::Segment, false).tail,
            Tail::Corrupt { .. }
        ));
        // A bit flip with no lost sector is damage even in the newest segment.
        let mut flipped = bytes;
        flipped[ends[3] + 12] ^= 1;
        assert!(matches!(
            scan(&flipped, FileKind::Segment, true).tail,
            Tail::Corrupt { .. }
        ));
    }

    /// A segment whose creation never finished holds nothing, wherever it is.
    #[test]
    fn a_segment_without_a_complete_header_is_empty() {
        let h = header(FileKind::Segment);
        for bytes in [Vec::new(), h[..7].to_vec(), {
            let mut v = h[..10].to_vec();
            v.resize(4096, 0);
            v
        }] {
            for newest in [true, false] {
                let s = scan(&bytes, FileKind::Segment, newest);
                assert_eq!(s.tail, Tail::Empty, "{} bytes", bytes.len());
                assert!(s.records.is_empty());
            }
        }
        // A snapshot is complete before it is renamed into place.
        assert!(matches!(
            scan(&[], FileKind::Snapshot, false).tail,
            Tail::Corrupt { .. }
        ));
    }

    #[test]
    fn clean_file_round_trips() {
        let records = vec![put(1), put(2)];
        let (bytes, _) = file(&records);
        let s = scan(&bytes, FileKind::Segment, false);
        assert_eq!(s.records, records);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(s.valid_len, bytes.len() as u64);
    }

    #[test]
    fn cut_inside_a_length_or_payload_is_torn_in_the_newest_segment() {
        let (bytes, ends) = file(&[put(1), put(2)]);
        for cut in [ends[0] + 2, ends[0] + 6, ends[0] + 12, bytes.len() - 1] {
            let s = scan(&bytes[..cut], FileKind::Segment, true);
            assert_eq!(s.records, vec![put(1)], "cut at {cut}");
            assert_eq!(
                s.tail,
                Tail::Torn {
                    offset: ends[0] as u64
                }
            );
            assert!(matches!(
                scan(&bytes[..cut], FileKind::Segment, false).tail,
                Tail::Corrupt { .. }
            ));
        }
    }

    #[test]
    fn crc_mismatch_in_the_middle_is_corruption() {
        let (mut bytes, ends) = file(&[put(1), put(2), put(3)]);
        bytes[ends[0] + 10] ^= 0xFF;
        let s = scan(&bytes, FileKind::Segment, true);
        assert_eq!(s.records, vec![put(1)]);
        assert_eq!(
            s.tail,
            Tail::Corrupt {
                offset: ends[0] as u64,
                reason: "checksum mismatch".into()
            }
        );
    }

    #[test]
    fn crc_mismatch_on_the_last_frame_is_a_torn_write() {
        let (mut bytes, ends) = file(&[put(1), put(2)]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        let s = scan(&bytes, FileKind::Segment, true);
        assert_eq!(
            s.tail,
            Tail::Torn {
                offset: ends[0] as u64
            }
        );
    }

    /// A borrowed put encodes to the bytes of the owned one.
    #[test]
    fn a_borrowed_put_encodes_as_the_owned_one() {
        for owner in [Some(Arc::from("alice")), None] {
            let record = crate::store::record::Record::new(
                crate::store::record::Fields {
                    owner,
                    created_at: 1,
                    last_active: 2,
                    ttl: sessiond_protocol::Ttl {
                        idle_ttl_ms: Some(1000),
                        max_lifetime_ms: Some(5000),
                    },
                    version: 7,
                },
                &[5; 300],
            );
            let id = sessiond_protocol::SessionId([9; 16]);
            let mut owned = Vec::new();
            encode_record(
                &LogRecord::Put(PutImage::of(42, "app", id, &record)),
                &mut owned,
            )
            .unwrap();
            let mut borrowed = Vec::new();
            encode_record(&PutRef::of(42, "app", id, &record), &mut borrowed).unwrap();
            assert_eq!(owned, borrowed);
        }
    }

    /// Segments under `--fsync always` are zero-filled ahead of the records.
    #[test]
    fn zeros_after_the_records_are_unwritten_space() {
        let (bytes, ends) = file(&[put(1), put(2)]);
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + 4096, 0);
        for newest in [true, false] {
            let s = scan(&padded, FileKind::Segment, newest);
            assert_eq!(s.records, vec![put(1), put(2)]);
            assert_eq!(s.tail, Tail::Clean);
            assert_eq!(s.valid_len, bytes.len() as u64);
        }
        // A header followed by zeros only: an empty segment.
        let mut empty = header(FileKind::Segment).to_vec();
        empty.resize(1000, 0);
        let s = scan(&empty, FileKind::Segment, true);
        assert!(s.records.is_empty());
        assert_eq!(s.tail, Tail::Clean);
        // The last record half written into the zeros: torn, in the newest.
        // (Not a cut of the last byte: it is 0, so zeros restore the record.)
        for cut in [ends[0] + 2, ends[0] + 6, ends[0] + 12, bytes.len() - 2] {
            let mut torn = bytes[..cut].to_vec();
            torn.resize(bytes.len() + 4096, 0);
            let s = scan(&torn, FileKind::Segment, true);
            assert_eq!(s.records, vec![put(1)], "cut at {cut}");
            assert_eq!(
                s.tail,
                Tail::Torn {
                    offset: ends[0] as u64
                },
                "cut at {cut}"
            );
        }
        // Zeros with data after them are damage, not unwritten space.
        let mut holed = bytes[..ends[0]].to_vec();
        holed.extend_from_slice(&[0; 64]);
        holed.extend_from_slice(&bytes[ends[0]..]);
        assert!(matches!(
            scan(&holed, FileKind::Segment, true).tail,
            Tail::Corrupt { .. }
        ));
        // Snapshots are never zero-filled.
        let mut snap = header(FileKind::Snapshot).to_vec();
        snap.resize(100, 0);
        assert!(matches!(
            scan(&snap, FileKind::Snapshot, false).tail,
            Tail::Corrupt { .. }
        ));
    }

    #[test]
    fn bad_magic_version_and_length_are_corruption() {
        let (bytes, _) = file(&[put(1)]);
        let mut b = bytes.clone();
        b[0] = b'X';
        assert!(
            matches!(scan(&b, FileKind::Segment, true).tail, Tail::Corrupt { offset: 0, reason } if reason.contains("magic"))
        );
        let mut b = bytes.clone();
        b[8] = 9;
        assert!(
            matches!(scan(&b, FileKind::Segment, true).tail, Tail::Corrupt { offset: 0, reason } if reason.contains("version"))
        );
        assert!(matches!(
            scan(&bytes, FileKind::Snapshot, true).tail,
            Tail::Corrupt { offset: 0, .. }
        ));
        let mut b = bytes;
        b[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            matches!(scan(&b, FileKind::Segment, true).tail, Tail::Corrupt { reason, .. } if reason.contains("length"))
        );
    }

    #[test]
    fn empty_segment_is_clean() {
        let bytes = header(FileKind::Segment);
        let s = scan(&bytes, FileKind::Segment, false);
        assert!(s.records.is_empty());
        assert_eq!(s.tail, Tail::Clean);
    }
}
