//! Replays the log recovery fuzz corpus (and any crash artifacts) through the
//! fuzz harness on stable Rust, so every input the fuzzer was seeded with or
//! found stays covered by `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::Layout;
use sessiond::log::format::{encode_record, header, FileKind, LogRecord, PutImage, HEADER_LEN};
use sessiond_protocol::value::encode_attrs;
use sessiond_protocol::{Attrs, Value};

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(sub)
        .join("recover_log")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs `check` on every corpus and artifact file; names all that fail.
fn replay(check: fn(&[u8])) {
    let corpus = files(&dir("corpus"));
    assert!(
        corpus.len() >= 20,
        "the seed corpus is missing ({} files)",
        corpus.len()
    );
    let mut failed = Vec::new();
    for path in corpus.iter().chain(files(&dir("artifacts")).iter()) {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(failed.is_empty(), "inputs that broke recovery: {failed:?}");
}

#[test]
fn corpus_replays_without_panics() {
    replay(harness::check);
}

/// Fails today: `--repair` cuts a file whose header is damaged (or a 0-byte
/// snapshot) to 0 bytes and leaves it there, and the next plain start refuses
/// that file ("file of 0 bytes has no complete header").
#[test]
fn a_plain_start_accepts_what_repair_left() {
    replay(harness::check_repair_converges);
}

fn put(id: u8, version: u64) -> LogRecord {
    let mut attrs = Attrs::new();
    attrs.insert("n".into(), Value::Int(i64::try_from(version).unwrap()));
    attrs.insert("s".into(), Value::Str("x".into()));
    LogRecord::Put(PutImage {
        lsn: version,
        namespace: "app".into(),
        id: [id; 16],
        owner: Some("alice".into()),
        created_at: 1_000,
        last_active: 1_000 + version,
        idle_ttl: None,
        max_lifetime: Some(3_600_000),
        version,
        attrs: encode_attrs(&attrs).unwrap(),
    })
}

fn delete(id: u8, tombstone_until: u64) -> LogRecord {
    LogRecord::Delete {
        lsn: 100 + tombstone_until,
        namespace: "app".into(),
        id: [id; 16],
        tombstone_until,
    }
}

/// A file of `kind` holding `records`; also where each frame starts.
fn file(kind: FileKind, records: &[LogRecord]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = header(kind).to_vec();
    let mut starts = Vec::new();
    for r in records {
        starts.push(bytes.len());
        encode_record(r, &mut bytes).unwrap();
    }
    (bytes, starts)
}

/// A segment as a rotation and a revoke leave it: puts, an update, a delete
/// and a batch (new id in, old id out).
fn segment() -> (Vec<u8>, Vec<usize>) {
    file(
        FileKind::Segment,
        &[
            put(1, 1),
            put(2, 1),
            put(1, 2),
            delete(2, 5_000),
            LogRecord::Batch(vec![put(3, 2), delete(1, 9_000)]),
        ],
    )
}

fn snapshot() -> (Vec<u8>, Vec<usize>) {
    file(FileKind::Snapshot, &[put(1, 4), put(2, 1), put(3, 7)])
}

fn flip(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
    bytes[at] ^= 0x10;
    bytes
}

fn zero_tail(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.extend_from_slice(&[0; 4096]);
    bytes
}

/// A frame whose checksum is right but whose payload is not a record.
fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The seed corpus: valid files of each layout and damaged ones (cut, bit
/// flips, bad headers, zero-filled tails, impossible lengths). Regenerate
/// with `cargo test -p sessiond --test fuzz_corpus -- --ignored`.
fn seeds() -> Vec<(&'static str, Layout, Vec<u8>)> {
    use Layout::*;
    let (seg, seg_starts) = segment();
    let (snap, snap_starts) = snapshot();
    let last = *seg_starts.last().unwrap();
    let empty_seg = header(FileKind::Segment).to_vec();
    let mut bad_version = seg.clone();
    bad_version[8] = 9;
    let mut huge_len = seg[..last].to_vec();
    huge_len.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 5]);
    let mut zero_len = seg[..seg_starts[1]].to_vec();
    zero_len.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    zero_len.extend_from_slice(&seg[seg_starts[1]..]);
    let mut not_a_record = empty_seg.clone();
    not_a_record.extend_from_slice(&frame_of(&[0xEE, 1, 2, 3]));
    not_a_record.extend_from_slice(&seg[seg_starts[0]..]);
    let mut bad_attrs = empty_seg.clone();
    let LogRecord::Put(mut image) = put(4, 1) else {
        unreachable!()
    };
    image.attrs = vec![0xFF, 0xFF, 0xFF];
    encode_record(&LogRecord::Put(image), &mut bad_attrs).unwrap();
    let (nested, _) = file(
        FileKind::Segment,
        &[LogRecord::Batch(vec![
            put(5, 1),
            LogRecord::Batch(vec![delete(5, 0), put(6, 1)]),
        ])],
    );
    let (snap_with_delete, _) = file(FileKind::Snapshot, &[put(1, 1), delete(1, 7)]);
    vec![
        ("seg-valid", OnlySegment, seg.clone()),
        ("seg-empty-file", OnlySegment, Vec::new()),
        ("seg-header-only", OnlySegment, empty_seg.clone()),
        ("seg-cut-in-header", OnlySegment, seg[..10].to_vec()),
        (
            "seg-cut-in-frame-header",
            OnlySegment,
            seg[..last + 5].to_vec(),
        ),
        (
            "seg-cut-in-payload",
            OnlySegment,
            seg[..seg.len() - 3].to_vec(),
        ),
        (
            "seg-flip-first-payload",
            OnlySegment,
            flip(seg.clone(), seg_starts[0] + 12),
        ),
        (
            "seg-flip-last-payload",
            OnlySegment,
            flip(seg.clone(), last + 12),
        ),
        (
            "seg-flip-length",
            OnlySegment,
            flip(seg.clone(), seg_starts[2]),
        ),
        ("seg-bad-magic", OnlySegment, flip(seg.clone(), 0)),
        ("seg-bad-version", OnlySegment, bad_version),
        ("seg-bad-header-crc", OnlySegment, flip(seg.clone(), 13)),
        ("seg-snapshot-header", OnlySegment, snap.clone()),
        ("seg-zero-tail", OnlySegment, zero_tail(seg.clone())),
        ("seg-huge-length", OnlySegment, huge_len),
        ("seg-zero-length-mid", OnlySegment, zero_len),
        ("seg-crc-ok-not-a-record", OnlySegment, not_a_record),
        ("seg-put-bad-attrs", OnlySegment, bad_attrs),
        ("seg-nested-batch", OnlySegment, nested),
        ("snap-valid", Snapshot, snap.clone()),
        ("snap-empty-file", Snapshot, Vec::new()),
        (
            "snap-header-only",
            Snapshot,
            header(FileKind::Snapshot).to_vec(),
        ),
        ("snap-cut", Snapshot, snap[..snap.len() - 4].to_vec()),
        (
            "snap-flip-middle",
            Snapshot,
            flip(snap.clone(), snap_starts[1] + 10),
        ),
        ("snap-zero-tail", Snapshot, zero_tail(snap.clone())),
        ("snap-segment-header", Snapshot, seg.clone()),
        ("snap-with-delete", Snapshot, snap_with_delete),
        ("older-valid", OlderSegment, seg.clone()),
        ("older-cut", OlderSegment, seg[..seg.len() - 3].to_vec()),
        ("older-zero-tail", OlderSegment, zero_tail(seg.clone())),
        (
            "older-header-only",
            OlderSegment,
            seg[..HEADER_LEN].to_vec(),
        ),
        ("newest-valid", NewestAfterValid, seg.clone()),
        ("newest-cut", NewestAfterValid, seg[..last + 3].to_vec()),
        (
            "newest-flip-first",
            NewestAfterValid,
            flip(seg.clone(), seg_starts[0] + 9),
        ),
        ("newest-zero-tail", NewestAfterValid, zero_tail(seg)),
    ]
}

#[test]
fn seeds_match_the_committed_corpus() {
    for (name, layout, body) in seeds() {
        let path = dir("corpus").join(name);
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate the corpus)", path.display()));
        let mut bytes = vec![layout.byte()];
        bytes.extend_from_slice(&body);
        assert_eq!(
            committed, bytes,
            "{name} differs from what the format now produces"
        );
    }
}

#[test]
#[ignore = "writes the seed corpus; run by hand after a log format change"]
fn regenerate_corpus() {
    let d = dir("corpus");
    std::fs::create_dir_all(&d).unwrap();
    for (name, layout, body) in seeds() {
        let mut bytes = vec![layout.byte()];
        bytes.extend_from_slice(&body);
        std::fs::write(d.join(name), bytes).unwrap();
    }
}
