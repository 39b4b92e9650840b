//! The log recovery fuzz harness, shared by the cargo-fuzz target and the
//! stable test that replays the corpus (`daemon/tests/fuzz_corpus.rs`).
//!
//! The first input byte picks where the rest goes in a fresh data dir (see
//! [`Layout`]); the other files of the layout are valid. Then:
//! 1. `check_dir` (no repair) reads the files;
//! 2. `Log::open` replays them into a fresh store: it either works, or fails
//!    with an error naming the damaged file (and, for damage, its byte offset);
//! 3. after a refusal, opening with `repair` works (or fails only on I/O).
//!
//! Invariant over all of it: nothing panics, whatever the bytes.
//!
//! [`check_repair_converges`] adds one more: after a repair, a plain start
//! accepts the dir. The fuzz target leaves it out (the daemon breaks it today
//! for any damaged header, which the fuzzer would find at once and stop at);
//! `daemon/tests/fuzz_corpus.rs` runs it over the corpus.

// Each includer uses part of it: the fuzz target `check`, the corpus test all.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use sessiond::clock::ManualClock;
use sessiond::log::format::{header, FileKind};
use sessiond::log::recovery::check_dir;
use sessiond::log::{Log, LogConfig, LogError};
use sessiond::store::{Store, StoreConfig};

/// Where the input bytes go.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// The only segment, `seg-0000000001.log` (so also the newest: a torn
    /// tail is allowed).
    OnlySegment,
    /// A snapshot `snap-0000000001.snap`, followed by an empty valid segment.
    Snapshot,
    /// An older segment `seg-0000000001.log` followed by an empty valid
    /// newer one (a torn tail is damage there).
    OlderSegment,
    /// The newest segment `seg-0000000002.log`, after a valid older one
    /// holding one record.
    NewestAfterValid,
}

impl Layout {
    /// All layouts, indexed by the first input byte (modulo their count).
    pub const ALL: [Layout; 4] = [
        Layout::OnlySegment,
        Layout::Snapshot,
        Layout::OlderSegment,
        Layout::NewestAfterValid,
    ];

    /// The layout's index: the first byte of an input that uses it.
    #[must_use]
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The name of the file that gets the fuzzed bytes.
    #[must_use]
    pub fn fuzzed_file(self) -> &'static str {
        match self {
            Layout::OnlySegment | Layout::OlderSegment => "seg-0000000001.log",
            Layout::Snapshot => "snap-0000000001.snap",
            Layout::NewestAfterValid => "seg-0000000002.log",
        }
    }
}

/// A valid segment holding one `Delete` record (a tombstone), so that
/// `NewestAfterValid` has something to replay before the fuzzed bytes.
fn valid_segment_with_a_record() -> Vec<u8> {
    use sessiond::log::format::{encode_record, LogRecord};
    let mut bytes = header(FileKind::Segment).to_vec();
    let record = LogRecord::Delete {
        lsn: 1,
        namespace: "app".into(),
        id: [9; 16],
        tombstone_until: 1,
    };
    encode_record(&record, &mut bytes).expect("a fixed record encodes");
    bytes
}

/// Writes the data dir for `layout` with `body` as its fuzzed file.
fn lay_out(dir: &Path, layout: Layout, body: &[u8]) {
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).expect("write to a fresh tempdir");
    };
    let empty_segment = header(FileKind::Segment);
    match layout {
        Layout::OnlySegment => write("seg-0000000001.log", body),
        Layout::Snapshot => {
            write("snap-0000000001.snap", body);
            write("seg-0000000001.log", &empty_segment);
        }
        Layout::OlderSegment => {
            write("seg-0000000001.log", body);
            write("seg-0000000002.log", &empty_segment);
        }
        Layout::NewestAfterValid => {
            write("seg-0000000001.log", &valid_segment_with_a_record());
            write("seg-0000000002.log", body);
        }
    }
}

/// Opens `dir` into a fresh store; shuts the log down again if it opened.
fn open(dir: &Path, repair: bool) -> Result<(), LogError> {
    let clock = Arc::new(ManualClock::new(1_000));
    let store = Arc::new(Store::new(StoreConfig::default(), clock));
    let mut config = LogConfig::new(dir);
    config.repair = repair;
    let log = Log::open(&config, &store)?;
    log.shutdown();
    Ok(())
}

/// Writes the input's data dir: the first byte picks the layout.
fn prepare(data: &[u8]) -> (tempfile::TempDir, Layout) {
    let (layout, body) = match data.split_first() {
        Some((first, rest)) => (Layout::ALL[usize::from(*first) % Layout::ALL.len()], rest),
        None => (Layout::OnlySegment, data),
    };
    let dir = tempfile::tempdir().expect("a tempdir");
    lay_out(dir.path(), layout, body);
    (dir, layout)
}

/// Runs one input through recovery; panics if an invariant breaks.
pub fn check(data: &[u8]) {
    let (dir, layout) = prepare(data);
    let name = layout.fuzzed_file();

    // check-log reads whatever is there; its verdict is not compared here.
    let _ = check_dir(dir.path(), false);

    if let Err(e) = open(dir.path(), false) {
        let text = e.to_string();
        assert!(
            text.contains(name),
            "{layout:?}: the error does not name {name}: {text}"
        );
        if matches!(e, LogError::Corrupt { .. }) {
            assert!(
                text.contains("byte offset"),
                "{layout:?}: damage without its offset: {text}"
            );
        }
        match open(dir.path(), true) {
            Ok(()) | Err(LogError::Io { .. }) => {}
            Err(e) => panic!("{layout:?}: repair did not repair: {e}"),
        }
    }
}

/// After a start with `repair` that worked, a plain start works too (the
/// error message tells operators to start once with `--repair`).
pub fn check_repair_converges(data: &[u8]) {
    let (dir, layout) = prepare(data);
    if open(dir.path(), false).is_ok() || open(dir.path(), true).is_err() {
        return;
    }
    if let Err(e) = open(dir.path(), false) {
        panic!("{layout:?}: refused after a repair: {e}");
    }
}
