#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use sessiond_protocol::{
    Attrs, Create, DeleteByOwner, Incr, LimitPolicy, OwnerLimit, Rotate, SessionId, Ttl, Update,
    Value,
};

use super::format::{self, FileKind, Tail};
use super::recovery::check_dir;
use super::*;
use crate::clock::ManualClock;
use crate::store::{Store, StoreConfig};

const NOW: u64 = 1_700_000_000_000;

/// Everything a restart must bring back, in comparable form.
type Dump = BTreeMap<(String, [u8; 16]), (Option<String>, u64, u64, Option<u64>, u64, Attrs)>;

fn dump(s: &Store) -> Dump {
    let mut out = Dump::new();
    s.for_each_record(|ns, id, r| {
        let attrs = sessiond_protocol::value::decode_attrs(r.attrs()).unwrap();
        out.insert(
            (ns.to_owned(), id.0),
            (
                r.owner().map(|o| o.to_string()),
                r.created_at(),
                r.last_active(),
                r.ttl().idle_ttl_ms,
                r.version(),
                attrs,
            ),
        );
    });
    out
}

fn tombstones(s: &Store) -> BTreeMap<(String, [u8; 16]), u64> {
    let mut out = BTreeMap::new();
    s.for_each_tombstone(|ns, id, until| {
        out.insert((ns.to_owned(), id.0), until);
    });
    out
}

fn aliases(s: &Store) -> BTreeMap<(String, [u8; 16]), ([u8; 16], u64)> {
    let mut out = BTreeMap::new();
    s.for_each_alias(|ns, id, to, until| {
        out.insert((ns.to_owned(), id.0), (to.0, until));
    });
    out
}

fn store(clock: &ManualClock) -> Arc<Store> {
    let config = StoreConfig {
        touch_log_fraction: 0.0,
        ..StoreConfig::default()
    };
    Arc::new(Store::new(config, Arc::new(clock.clone())))
}

fn create(ns: &str, owner: Option<&str>) -> Create {
    Create {
        namespace: ns.into(),
        id: None,
        owner: owner.map(Into::into),
        ttl: Ttl {
            idle_ttl_ms: Some(3_600_000),
            max_lifetime_ms: None,
        },
        attrs: Attrs::new(),
        owner_limit: None,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(u8, Option<u8>, bool),
    Update(usize, i64),
    Incr(usize),
    Touch(usize),
    Delete(usize),
    Rotate(usize, Option<u64>),
    DeleteByOwner(u8, u8, Option<usize>),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2u8, proptest::option::of(0..2u8), any::<bool>()).prop_map(|(n, o, l)| Op::Create(n, o, l)),
        2 => (any::<usize>(), any::<i64>()).prop_map(|(k, v)| Op::Update(k, v)),
        1 => any::<usize>().prop_map(Op::Incr),
        1 => any::<usize>().prop_map(Op::Touch),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => (any::<usize>(), proptest::option::of(1u64..10_000)).prop_map(|(k, g)| Op::Rotate(k, g)),
        1 => (0..2u8, 0..2u8, proptest::option::of(any::<usize>())).prop_map(|(n, o, e)| Op::DeleteByOwner(n, o, e)),
        1 => (1u64..5000).prop_map(Op::Advance),
    ]
}

/// Runs `ops` on a store journaling into memory; returns the log bytes (with a
/// segment header) and, after each op, the log length and the state.
fn record(ops: &[Op], clock: &ManualClock) -> (Vec<u8>, Vec<(usize, Dump)>) {
    let (bytes, states, _) = record_with_index(ops, clock);
    (bytes, states)
}

/// [`record`], with the store's owner index at the end.
fn record_with_index(ops: &[Op], clock: &ManualClock) -> (Vec<u8>, Vec<(usize, Dump)>, OwnerIndex) {
    let s = store(clock);
    let journal = Arc::new(MemJournal::default());
    journal
        .0
        .lock()
        .extend_from_slice(&format::header(FileKind::Segment));
    s.attach_journal(Arc::clone(&journal) as Arc<dyn Journal>)
        .unwrap();
    let mut keys: Vec<(String, SessionId)> = Vec::new();
    let mut states = vec![(journal.0.lock().len(), dump(&s))];
    let pick = |keys: &Vec<(String, SessionId)>, i: usize| keys.get(i % keys.len().max(1)).cloned();
    for op in ops {
        match op {
            Op::Create(ns, owner, limited) => {
                let owner = owner.map(|o| format!("u{o}"));
                let mut c = create(&format!("ns{ns}"), owner.as_deref());
                if *limited && owner.is_some() {
                    c.owner_limit = Some(OwnerLimit {
                        max_sessions: 2,
                        policy: LimitPolicy::EvictOldest,
                    });
                }
                let made = s.create(c).unwrap();
                keys.push((made.namespace, made.id));
            }
            Op::Update(i, v) => {
                if let Some((ns, id)) = pick(&keys, *i) {
                    let mut set = Attrs::new();
                    set.insert("v".into(), Value::Int(*v));
                    let _ = s.update(Update {
                        namespace: ns,
                        id,
                        set,
                        remove: vec![],
                        expected_version: None,
                        ttl: None,
                        upsert: None,
                    });
                }
            }
            Op::Incr(i) => {
                if let Some((ns, id)) = pick(&keys, *i) {
                    let _ = s.incr(Incr {
                        namespace: ns,
                        id,
                        attr: "n".into(),
                        delta: 1,
                        window: None,
                    });
                }
            }
            Op::Touch(i) => {
                if let Some((ns, id)) = pick(&keys, *i) {
                    s.touch(&ns, id).unwrap();
                }
            }
            Op::Delete(i) => {
                if let Some((ns, id)) = pick(&keys, *i) {
                    s.delete(&ns, id).unwrap();
                }
            }
            Op::Rotate(i, grace_ms) => {
                if let Some((ns, id)) = pick(&keys, *i) {
                    if let Ok(r) = s.rotate(&Rotate {
                        namespace: ns.clone(),
                        id,
                        grace_ms: *grace_ms,
                    }) {
                        keys.push((ns, r.id));
                    }
                }
            }
            Op::DeleteByOwner(ns, o, except) => {
                s.delete_by_owner(&DeleteByOwner {
                    namespace: format!("ns{ns}"),
                    owner: format!("u{o}"),
                    except: except.and_then(|e| pick(&keys, e)).map(|k| k.1),
                })
                .unwrap();
            }
            Op::Advance(ms) => clock.advance(*ms),
        }
        states.push((journal.0.lock().len(), dump(&s)));
    }
    let bytes = journal.0.lock().clone();
    (bytes, states, owner_index(&s))
}

fn replay(bytes: &[u8], clock: &ManualClock) -> (Arc<Store>, Tail) {
    let s = store(clock);
    let scan = format::scan(bytes, FileKind::Segment, true);
    let mut replay = recovery::Replay::new(&s);
    for r in scan.records {
        replay.apply(r);
    }
    drop(replay);
    s.settle_owner_index();
    (s, scan.tail)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A log cut at any byte replays to exactly the state after some prefix of
    /// the operations: never half a record, never half an operation.
    #[test]
    fn a_log_cut_anywhere_replays_to_a_prefix(ops in proptest::collection::vec(op(), 1..40)) {
        let clock = ManualClock::new(NOW);
        let (bytes, states) = record(&ops, &clock);
        for (cut, zeros) in (0..=bytes.len()).flat_map(|c| [(c, 0), (c, 97)]) {
            // Also as the newest segment is under `--fsync always`: cut, and
            // zero-filled after the cut.
            let mut file = bytes[..cut].to_vec();
            file.resize(cut + zeros, 0);
            let (s, tail) = replay(&file, &clock);
            prop_assert!(!matches!(tail, Tail::Corrupt { .. }), "cut {} of {} (+{} zeros): {:?}", cut, bytes.len(), zeros, tail);
            // The newest state whose log is wholly inside the cut (zeros
            // after the cut restore the log's own zero bytes there).
            let kept = cut + bytes[cut..].iter().take(zeros).take_while(|&&b| b == 0).count();
            let want = states.iter().rev().find(|(len, _)| *len <= kept).map(|(_, d)| d);
            if let Some(want) = want {
                prop_assert_eq!(&dump(&s), want, "cut {} of {}", cut, bytes.len());
            } else {
                prop_assert!(dump(&s).is_empty());
            }
        }
    }
}

/// Replays `bytes` in `parts` parts of the keys, each on its own thread, in
/// file order or newest record first.
fn replay_in_parts(
    bytes: &[u8],
    clock: &ManualClock,
    parts: usize,
    pass: recovery::Pass,
) -> Arc<Store> {
    let s = store(clock);
    let scan = format::scan_in_place(bytes, FileKind::Segment, true);
    let mut replay = recovery::Replays::new(&s, parts).always_threaded();
    replay.apply(&scan.records, pass);
    drop(replay);
    s
}

type OwnerIndex = BTreeMap<(String, String), Vec<[u8; 16]>>;

/// Every owner's indexed sessions, as `list_by_owner` pages them.
fn owner_index(s: &Store) -> OwnerIndex {
    let mut out = BTreeMap::new();
    for ns in ["ns0", "ns1"] {
        for owner in ["u0", "u1"] {
            let page = s
                .list_by_owner(&sessiond_protocol::ListByOwner {
                    namespace: ns.into(),
                    owner: owner.into(),
                    after: None,
                    limit: 1000,
                })
                .unwrap();
            out.insert(
                (ns.to_owned(), owner.to_owned()),
                page.sessions.iter().map(|x| x.id.0).collect(),
            );
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Replay split by key across threads, and replay newest record first,
    /// build the same store as one replay in file order: records,
    /// tombstones, rotation aliases and the owner index.
    #[test]
    fn a_replay_in_parts_or_newest_first_builds_the_same_store(
        ops in proptest::collection::vec(op(), 1..200),
        parts in 2..5usize,
    ) {
        let clock = ManualClock::new(NOW);
        let (bytes, states, index) = record_with_index(&ops, &clock);
        let one = replay_in_parts(&bytes, &clock, 1, recovery::Pass::Forward);
        prop_assert_eq!(&dump(&one), &states.last().unwrap().1);
        prop_assert_eq!(&owner_index(&one), &index);
        for pass in [recovery::Pass::Forward, recovery::Pass::Backward] {
            let many = replay_in_parts(&bytes, &clock, parts, pass);
            prop_assert_eq!(dump(&one), dump(&many), "{:?}", pass);
            prop_assert_eq!(tombstones(&one), tombstones(&many), "{:?}", pass);
            prop_assert_eq!(aliases(&one), aliases(&many), "{:?}", pass);
            prop_assert_eq!(owner_index(&one), owner_index(&many), "{:?}", pass);
            prop_assert_eq!(one.len(), many.len(), "{:?}", pass);
        }
    }
}

/// A batch inside a batch is refused as damage where it is, however deep
/// the nesting (decoding never recurses into it).
#[test]
fn a_nested_batch_is_damage_not_a_deep_recursion() {
    let mut file = format::header(FileKind::Segment).to_vec();
    format::encode_record(&put(1), &mut file).unwrap();
    let at = file.len();
    // Batch (variant 2) of one element, a million times over.
    let payload: Vec<u8> = std::iter::repeat_n([2u8, 1u8], 1 << 20).flatten().collect();
    file.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    file.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    file.extend_from_slice(&payload);
    format::encode_record(&put(2), &mut file).unwrap();
    let scan = format::scan(&file, FileKind::Segment, false);
    assert_eq!(scan.records, vec![put(1)]);
    match scan.tail {
        Tail::Corrupt { offset, reason } => {
            assert_eq!(offset, at as u64);
            assert!(reason.contains("a batch inside a batch"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn deleted_ids_stay_refused_after_replay() {
    let clock = ManualClock::new(NOW);
    let (bytes, _) = record(&[Op::Create(0, None, false), Op::Delete(0)], &clock);
    let (s, _) = replay(&bytes, &clock);
    let t = tombstones(&s);
    assert_eq!(t.len(), 1);
    let (ns, id) = t.keys().next().unwrap().clone();
    let mut again = create(&ns, None);
    again.id = Some(SessionId(id));
    assert_eq!(s.create(again).unwrap_err(), crate::store::StoreError::Gone);
}

#[test]
fn expired_records_are_skipped_on_replay() {
    let clock = ManualClock::new(NOW);
    let s = store(&clock);
    let journal = Arc::new(MemJournal::default());
    journal
        .0
        .lock()
        .extend_from_slice(&format::header(FileKind::Segment));
    s.attach_journal(Arc::clone(&journal) as Arc<dyn Journal>)
        .unwrap();
    let mut short = create("a", Some("o"));
    short.ttl.idle_ttl_ms = Some(100);
    s.create(short).unwrap();
    s.create(create("a", Some("o"))).unwrap();
    clock.advance(100);
    let (replayed, _) = replay(&journal.0.lock(), &clock);
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed.owner_index_len("a", "o"), 1);
}

// ---- the real files ------------------------------------------------------

fn config(dir: &std::path::Path) -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        ..LogConfig::new(dir)
    }
}

fn open(dir: &std::path::Path) -> (Arc<Store>, Arc<Log>) {
    open_with(&config(dir)).unwrap()
}

fn open_with(c: &LogConfig) -> Result<(Arc<Store>, Arc<Log>), LogError> {
    let s = Arc::new(Store::new(
        StoreConfig::default(),
        Arc::new(crate::clock::SystemClock),
    ));
    let log = Log::open(c, &s)?;
    Ok((s, log))
}

fn segment(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    dir.join(file_name(FileKind::Segment, n))
}

#[test]
fn restart_restores_everything_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let (s, log) = open(dir.path());
    let a = s.create(create("app", Some("alice"))).unwrap();
    let b = s.create(create("app", None)).unwrap();
    s.delete("app", b.id).unwrap();
    let before = dump(&s);
    log.shutdown();
    drop((s, log));
    let (s, log) = open(dir.path());
    assert_eq!(dump(&s), before);
    assert!(s.get("app", a.id, false).unwrap().is_some());
    assert_eq!(s.owner_index_len("app", "alice"), 1);
    log.shutdown();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(segment(dir.path(), 1))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_second_daemon_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, log) = open(dir.path());
    let Err(err) = open_with(&config(dir.path())) else {
        panic!("a start that cannot read a segment succeeded");
    };
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another sessiond"));
    log.shutdown();
}

/// Writes two segments by hand: seg-1 with `first`, seg-2 with `second`.
fn write_segments(dir: &std::path::Path, first: &[LogRecord], second: &[LogRecord]) -> Vec<usize> {
    let mut ends = Vec::new();
    for (n, records) in [(1, first), (2, second)] {
        let mut bytes = format::header(FileKind::Segment).to_vec();
        for r in records {
            format::encode_record(r, &mut bytes).unwrap();
            ends.push(bytes.len());
        }
        std::fs::write(segment(dir, n), bytes).unwrap();
    }
    ends
}

fn put(n: u8) -> LogRecord {
    LogRecord::Put(format::PutImage {
        lsn: u64::from(n),
        namespace: "app".into(),
        id: [n; 16],
        owner: None,
        created_at: NOW,
        last_active: NOW,
        idle_ttl: None,
        max_lifetime: None,
        version: 1,
        attrs: sessiond_protocol::value::encode_attrs(&Attrs::new()).unwrap(),
    })
}

#[test]
fn a_torn_tail_is_cut_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), &[put(1)], &[put(2), put(3)]);
    let path = segment(dir.path(), 2);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 3).unwrap();
    let (s, log) = open(dir.path());
    assert_eq!(s.len(), 2, "put(3) was torn");
    log.shutdown();
    let report = check_dir(dir.path(), false).unwrap();
    assert!(report.iter().all(|r| r.tail == Tail::Clean), "{report:?}");
}

#[test]
fn corruption_in_the_middle_stops_startup_unless_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_segments(dir.path(), &[put(1), put(2), put(3)], &[put(4)]);
    let path = segment(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[ends[0] + 12] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let err = open_with(&config(dir.path())).unwrap_err();
    match &err {
        LogError::Corrupt { file, offset, .. } => {
            assert_eq!(file, &path);
            assert_eq!(*offset, ends[0] as u64);
        }
        other => panic!("{other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("seg-0000000001.log") && text.contains("--repair"),
        "{text}"
    );

    let report = check_dir(dir.path(), false).unwrap();
    assert!(matches!(report[0].tail, Tail::Corrupt { .. }));

    let repair = LogConfig {
        repair: true,
        ..config(dir.path())
    };
    let (s, log) = open_with(&repair).unwrap();
    // put(1) before the damage and put(4) in the next segment survive.
    assert_eq!(s.len(), 2);
    log.shutdown();
    let copy = std::path::PathBuf::from(format!("{}.cut-at-{}", path.display(), ends[0]));
    assert_eq!(std::fs::read(copy).unwrap(), bytes[ends[0]..]);
}

#[test]
fn empty_segments_and_a_missing_snapshot_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), &[], &[put(1)]);
    std::fs::write(segment(dir.path(), 3), format::header(FileKind::Segment)).unwrap();
    let (s, log) = open(dir.path());
    assert_eq!(s.len(), 1);
    log.shutdown();
}

#[test]
fn a_cut_inside_the_newest_header_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), &[put(1)], &[]);
    std::fs::write(
        segment(dir.path(), 2),
        &format::header(FileKind::Segment)[..5],
    )
    .unwrap();
    let (s, log) = open(dir.path());
    assert_eq!(s.len(), 1);
    log.shutdown();
}

#[test]
fn compaction_under_concurrent_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = LogConfig {
        fsync: FsyncPolicy::No,
        segment_bytes: 64 * 1024,
        compact_ratio: 1.0,
        compact_min_bytes: 128 * 1024,
        ..LogConfig::new(dir.path())
    };
    let (s, log) = open_with(&c).unwrap();
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(s.create(create("app", Some("o"))).unwrap().id);
    }
    // Rewrite the same records many times from several threads: the log grows
    // far past the live data and compacts while the writes go on.
    std::thread::scope(|scope| {
        for t in 0..4i64 {
            let (s, ids) = (&s, &ids);
            scope.spawn(move || {
                for round in 0..400i64 {
                    let id = ids[((round * 7 + t) as usize) % ids.len()];
                    let mut set = Attrs::new();
                    set.insert("v".into(), Value::Int(round * 10 + t));
                    set.insert("pad".into(), Value::Bytes(vec![7; 200]));
                    s.update(Update {
                        namespace: "app".into(),
                        id,
                        set,
                        remove: vec![],
                        expected_version: None,
                        ttl: None,
                        upsert: None,
                    })
                    .unwrap();
                }
            });
        }
    });
    for id in ids.iter().take(50) {
        s.delete("app", *id).unwrap();
    }
    let before = dump(&s);
    let before_tombs = tombstones(&s);
    // Let any compaction in flight finish (it holds no lock the shutdown needs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log.stats().compactions.load(Ordering::Relaxed) == 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        log.stats().compactions.load(Ordering::Relaxed) >= 1,
        "no compaction ran"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    log.shutdown();
    drop((s, log));
    let names = file_names(dir.path());
    assert!(names.iter().any(|n| n.starts_with("snap-")), "{names:?}");
    let (s, log) = open(dir.path());
    assert_eq!(dump(&s), before);
    assert_eq!(tombstones(&s), before_tombs);
    log.shutdown();
}

#[test]
fn a_log_of_many_segments_replays_with_its_read_buffers_reused() {
    // Recovery reads and scans segments one ahead on a thread of its own and
    // hands each buffer back for the file after next: with many segments,
    // and a key's records spread over several of them, every buffer is
    // reused and the newest record of each key must still win.
    let dir = tempfile::tempdir().unwrap();
    let c = LogConfig {
        fsync: FsyncPolicy::No,
        segment_bytes: 8 * 1024,
        compact_min_bytes: u64::MAX,
        ..LogConfig::new(dir.path())
    };
    let (s, log) = open_with(&c).unwrap();
    let mut ids = Vec::new();
    for i in 0..600 {
        let mut c = create("app", Some(["alice", "bob", "carol"][i % 3]));
        c.attrs
            .insert("pad".into(), Value::Bytes(vec![i as u8; 300]));
        ids.push(s.create(c).unwrap().id);
        if i % 25 == 0 {
            // Let the writer take a batch: segments roll between batches.
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
    }
    for (round, id) in ids.iter().enumerate().step_by(7) {
        s.update(set_v(*id, round as i64)).unwrap();
    }
    for id in ids.iter().step_by(11) {
        s.delete("app", *id).unwrap();
    }
    let before = dump(&s);
    let before_tombs = tombstones(&s);
    let before_memory = s.stats().memory_bytes;
    let alice = before
        .values()
        .filter(|r| r.0.as_deref() == Some("alice"))
        .count();
    assert!(alice > 100);
    log.shutdown();
    drop((s, log));
    let segments = file_names(dir.path())
        .iter()
        .filter(|n| n.starts_with("seg-"))
        .count();
    assert!(segments >= 5, "only {segments} segments");
    for _ in 0..2 {
        let (s, log) = open_with(&c).unwrap();
        assert_eq!(dump(&s), before);
        assert_eq!(tombstones(&s), before_tombs);
        // What the replay counted and indexed in bulk is all there.
        assert_eq!(s.stats().memory_bytes, before_memory);
        assert_eq!(s.owner_index_len("app", "alice"), alice);
        assert_eq!(s.stats().records, before.len() as u64);
        log.shutdown();
    }
}

#[test]
fn touches_are_logged_only_when_the_deadline_moved_enough() {
    let clock = ManualClock::new(NOW);
    let config = StoreConfig {
        touch_log_fraction: 0.1,
        ..StoreConfig::default()
    };
    let s = Store::new(config, Arc::new(clock.clone()));
    let journal = Arc::new(MemJournal::default());
    s.attach_journal(Arc::clone(&journal) as Arc<dyn Journal>)
        .unwrap();
    let mut c = create("a", None);
    c.ttl.idle_ttl_ms = Some(1000);
    let id = s.create(c).unwrap().id;
    let logged = || journal.0.lock().len();
    let after_create = logged();
    // 50 ms of sliding is 5% of the idle ttl: not worth a write.
    clock.advance(50);
    s.touch("a", id).unwrap();
    s.get("a", id, true).unwrap();
    assert_eq!(logged(), after_create);
    // 150 ms is past the 10% threshold: logged once.
    clock.advance(100);
    s.touch("a", id).unwrap();
    let after_touch = logged();
    assert!(after_touch > after_create);
    clock.advance(10);
    s.touch("a", id).unwrap();
    assert_eq!(logged(), after_touch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_fails_writes_keeps_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (s, log) = open(dir.path());
    let kept = s.create(create("app", None)).unwrap();
    let mut rx = log.subscribe();
    Log::wait_durable(&mut rx, log.last_seq()).await.unwrap();

    log.inject_write_fault(true);
    // This write reaches memory, but the log cannot take it: its waiter hears why.
    let lost = s.create(create("app", None)).unwrap();
    let err = Log::wait_durable(&mut rx, log.last_seq())
        .await
        .unwrap_err();
    assert!(err.contains("no space left"), "{err}");
    // New writes are refused up front; reads go on.
    let refused = s.create(create("app", None)).unwrap_err();
    assert!(
        matches!(&refused, crate::store::StoreError::Unavailable(m) if m.contains("no space left")),
        "{refused}"
    );
    assert!(s.get("app", kept.id, false).unwrap().is_some());

    // The disk comes back: the kept batch is written by the retry and writes work again.
    log.inject_write_fault(false);
    // The writer retries once a second; the error clears with the first success.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        rx.wait_for(|p| p.error.is_none()),
    )
    .await
    .unwrap()
    .unwrap();
    Log::wait_durable(&mut rx, log.last_seq()).await.unwrap();
    let after = s.create(create("app", None)).unwrap();
    Log::wait_durable(&mut rx, log.last_seq()).await.unwrap();
    log.shutdown();
    drop((s, log));
    let (s, log) = open(dir.path());
    for id in [kept.id, lost.id, after.id] {
        assert!(s.get("app", id, false).unwrap().is_some());
    }
    log.shutdown();
}

// ---- ordering: multi-record operations raced at their steps ---------------

/// A store journaling into memory, with a step hook that pauses the first
/// pass through `step` until the test has run `during` (on this thread,
/// while the operation waits on its own).
fn racing(clock: &ManualClock, config: StoreConfig) -> (Arc<Store>, Arc<MemJournal>) {
    let s = Arc::new(Store::new(config, Arc::new(clock.clone())));
    let journal = Arc::new(MemJournal::default());
    journal
        .0
        .lock()
        .extend_from_slice(&format::header(FileKind::Segment));
    s.attach_journal(Arc::clone(&journal) as Arc<dyn Journal>)
        .unwrap();
    (s, journal)
}

/// Runs `op` on another thread, pausing it at `step` while `during` runs.
fn pause_at<T: Send>(
    s: &Arc<Store>,
    step: &'static str,
    op: impl FnOnce() -> T + Send,
    during: impl FnOnce(),
) -> T {
    use std::sync::atomic::AtomicBool;
    use std::sync::Barrier;
    let barrier = Arc::new(Barrier::new(2));
    let fired = Arc::new(AtomicBool::new(false));
    let (b, f) = (Arc::clone(&barrier), Arc::clone(&fired));
    s.set_step_hook(Some(Arc::new(move |name| {
        if name == step && !f.swap(true, Ordering::SeqCst) {
            b.wait(); // paused here...
            b.wait(); // ...until the racing change is done
        }
    })));
    let out = std::thread::scope(|scope| {
        let h = scope.spawn(op);
        barrier.wait();
        during();
        barrier.wait();
        h.join().unwrap()
    });
    s.set_step_hook(None);
    assert!(fired.load(Ordering::SeqCst), "step {step} never reached");
    out
}

/// The names of the files in `dir`.
fn file_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn an_older_segment_that_cannot_be_read_stops_the_start_naming_it() {
    // Older segments are read on the reader's thread: its error must reach
    // the start-up (no hang waiting for the file, no panic).
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), &[put(1)], &[put(2)]);
    std::fs::write(segment(dir.path(), 3), format::header(FileKind::Segment)).unwrap();
    std::fs::remove_file(segment(dir.path(), 1)).unwrap();
    std::fs::create_dir(segment(dir.path(), 1)).unwrap();
    let Err(err) = open_with(&config(dir.path())) else {
        panic!("a start that cannot read a segment succeeded");
    };
    assert!(err.to_string().contains("seg-0000000001.log"), "{err}");
}

fn set_v(id: SessionId, v: i64) -> Update {
    let mut set = Attrs::new();
    set.insert("v".into(), Value::Int(v));
    Update {
        namespace: "app".into(),
        id,
        set,
        remove: vec![],
        expected_version: None,
        ttl: None,
        upsert: None,
    }
}

/// The defect: an update through the old id of a rotation in progress was
/// logged before the rotation's batch, so replay put the rotated record back
/// at its older version. At each step of the rotation, an update through the
/// old id must survive replay.
#[test]
fn an_update_through_the_alias_of_a_rotation_in_progress_survives_replay() {
    for step in ["rotate: new record placed", "rotate: moved"] {
        let clock = ManualClock::new(NOW);
        let (s, journal) = racing(&clock, StoreConfig::default());
        let old = s.create(create("app", Some("alice"))).unwrap().id;
        let rotate = Rotate {
            namespace: "app".into(),
            id: old,
            grace_ms: Some(60_000),
        };
        let rotated = pause_at(
            &s,
            step,
            || s.rotate(&rotate).unwrap(),
            || {
                s.update(set_v(old, 7)).unwrap();
            },
        );
        let live = s.get("app", rotated.id, false).unwrap().unwrap();
        assert_eq!(live.attrs.get("v"), Some(&Value::Int(7)), "{step}");
        // The rotation's batch is appended before the alias made the new
        // record reachable: the update's put comes after it in the log (not
        // only ordered by its LSN).
        let records = format::scan(&journal.0.lock(), FileKind::Segment, true).records;
        let batch_at = records
            .iter()
            .rposition(|r| matches!(r, LogRecord::Batch(_)))
            .unwrap();
        let update_at = records
            .iter()
            .rposition(|r| matches!(r, LogRecord::Put(p) if p.version == live.version))
            .unwrap();
        if step == "rotate: moved" {
            assert!(
                update_at > batch_at,
                "{step}: update logged before the rotation"
            );
        }
        let (back, _) = replay(&journal.0.lock(), &clock);
        assert_eq!(dump(&back), dump(&s), "{step}: replay lost the update");
        assert_eq!(aliases(&back), aliases(&s), "{step}: alias not restored");
        // The old id still resolves to the rotated session after the replay.
        let via_old = back.get("app", old, false).unwrap().unwrap();
        assert_eq!(via_old.id, rotated.id);
        assert_eq!(via_old.version, live.version);
    }
}

/// A create with a caller-chosen id that evicts the owner's oldest session:
/// an update of the new id made while the create is still in progress is
/// logged after the create's batch.
#[test]
fn an_update_racing_an_evicting_create_survives_replay() {
    let clock = ManualClock::new(NOW);
    let (s, journal) = racing(&clock, StoreConfig::default());
    let first = s.create(create("app", Some("bob"))).unwrap().id;
    let chosen = SessionId([42; 16]);
    let mut c = create("app", Some("bob"));
    c.id = Some(chosen);
    c.owner_limit = Some(OwnerLimit {
        max_sessions: 1,
        policy: LimitPolicy::EvictOldest,
    });
    pause_at(
        &s,
        "create: placed",
        || s.create(c).unwrap(),
        || {
            s.update(set_v(chosen, 9)).unwrap();
        },
    );
    assert!(s.get("app", first, false).unwrap().is_none(), "evicted");
    let (back, _) = replay(&journal.0.lock(), &clock);
    assert_eq!(dump(&back), dump(&s));
    assert_eq!(tombstones(&back), tombstones(&s));
}

/// Revoke-all appends its batch after the last removal. With no tombstone
/// window, a victim's id can be created again before that: the new session
/// carries a higher LSN, so replay keeps it even though the batch's delete
/// reaches the log after it (the ordering rule, not the append order).
#[test]
fn a_session_recreated_before_a_revoke_alls_batch_survives_replay() {
    let clock = ManualClock::new(NOW);
    let config = StoreConfig {
        tombstone_ttl_ms: 0,
        ..StoreConfig::default()
    };
    let (s, journal) = racing(&clock, config);
    let mut c = create("app", Some("carol"));
    let victim = SessionId([7; 16]);
    c.id = Some(victim);
    s.create(c).unwrap();
    let kept = s.create(create("app", Some("carol"))).unwrap().id;
    let revoke = DeleteByOwner {
        namespace: "app".into(),
        owner: "carol".into(),
        except: Some(kept),
    };
    let deleted = pause_at(
        &s,
        "delete-by-owner: removed",
        || s.delete_by_owner(&revoke).unwrap(),
        || {
            let mut again = create("app", None);
            again.id = Some(victim);
            s.create(again).unwrap();
        },
    );
    assert_eq!(deleted, 1);
    assert!(s.get("app", victim, false).unwrap().is_some());
    let bytes = journal.0.lock().clone();
    // The delete reached the log after the re-create...
    let records = format::scan(&bytes, FileKind::Segment, true).records;
    assert!(matches!(records.last(), Some(LogRecord::Delete { .. })));
    // ...and replay still keeps the re-created session.
    let (back, _) = replay(&bytes, &clock);
    assert_eq!(dump(&back), dump(&s));
}

// ---- a full disk -----------------------------------------------------------

fn sim_config(disk: &vfs::SimDisk, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        retry: std::time::Duration::from_millis(5),
        vfs: Arc::new(disk.clone()),
        ..LogConfig::new("/data")
    }
}

/// A store and its log on an empty simulated disk.
fn sim_log(fsync: FsyncPolicy) -> (vfs::SimDisk, ManualClock, Arc<Store>, Arc<Log>) {
    use vfs::Vfs;
    let disk = vfs::SimDisk::new();
    disk.create_dir_all(std::path::Path::new("/data")).unwrap();
    let clock = ManualClock::new(NOW);
    let s = store(&clock);
    let log = Log::open(&sim_config(&disk, fsync), &s).unwrap();
    (disk, clock, s, log)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A daemon started on a full disk serves reads, refuses writes with the
/// reason, and takes writes once space returns; no empty segment is left
/// behind to fail later starts.
#[test]
fn disk_full_at_start_serves_reads_then_takes_writes_when_space_returns() {
    let (disk, clock, s, log) = sim_log(FsyncPolicy::Always);
    let kept = s.create(create("app", None)).unwrap();
    log.wait_durable_blocking(log.last_seq(), std::time::Duration::from_secs(5))
        .unwrap();
    log.shutdown();
    drop((s, log));

    disk.set_capacity(Some(disk.used()));
    let s = store(&clock);
    let log = Log::open(&sim_config(&disk, FsyncPolicy::Always), &s).unwrap();
    assert!(
        s.get("app", kept.id, false).unwrap().is_some(),
        "reads work"
    );
    let refused = s.create(create("app", None)).unwrap_err();
    assert!(
        matches!(&refused, crate::store::StoreError::Unavailable(m) if m.contains("no space left")),
        "{refused}"
    );
    let names = disk.list(std::path::Path::new("/data")).unwrap();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("seg-")).count(),
        1,
        "{names:?}"
    );

    disk.set_capacity(None);
    wait_until("the writer starts its segment", || {
        log.progress().error.is_none()
    });
    let after = s.create(create("app", None)).unwrap();
    log.wait_durable_blocking(log.last_seq(), std::time::Duration::from_secs(5))
        .unwrap();
    log.shutdown();
    drop((s, log));
    let s = store(&clock);
    let log = Log::open(&sim_config(&disk, FsyncPolicy::Always), &s).unwrap();
    assert!(s.get("app", after.id, false).unwrap().is_some());
    log.shutdown();
}

/// Under `everysec` a write is acknowledged before it reaches the file, so
/// only while the space it goes to is reserved: when the disk fills, the
/// writes already taken still reach the file (a kill keeps them), and new
/// ones are refused until the log can reserve more.
#[test]
fn disk_full_under_everysec_acknowledges_only_into_reserved_space() {
    let (disk, clock, s, log) = sim_log(FsyncPolicy::EverySec);
    s.create(create("app", None)).unwrap();
    // No room beyond what the log has reserved.
    disk.set_capacity(Some(disk.used()));
    let mut taken = Vec::new();
    let refused = loop {
        let mut c = create("app", None);
        c.attrs.insert("pad".into(), Value::Bytes(vec![1; 1000]));
        match s.create(c) {
            Ok(made) => taken.push(made.id),
            // The writer has not yet found the disk full: a moment's wait.
            Err(crate::store::StoreError::Unavailable(m)) if m.contains("behind") => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => break e,
        }
        assert!(taken.len() < 100_000, "never refused");
    };
    assert!(
        matches!(&refused, crate::store::StoreError::Unavailable(m) if m.contains("disk is full")),
        "{refused}"
    );
    assert!(
        taken.len() > 100,
        "only {} writes fit the reservation",
        taken.len()
    );
    // Every write taken reaches the file although the disk is full.
    log.wait_durable_blocking(log.last_seq(), std::time::Duration::from_secs(5))
        .unwrap();
    assert!(log.progress().error.is_none());
    // A kill keeps what the OS has: every write taken is there after it.
    let back = disk.power_cut(vfs::Cut::Everything);
    log.shutdown();
    drop((s, log));
    back.set_capacity(None);
    let s = store(&clock);
    let log = Log::open(&sim_config(&back, FsyncPolicy::EverySec), &s).unwrap();
    for id in &taken {
        assert!(s.get("app", *id, false).unwrap().is_some());
    }
    // With room again, writes are taken.
    s.create(create("app", None)).unwrap();
    log.shutdown();
}

/// Under `always` the log zero-fills ahead in 8 MiB chunks; on a disk with
/// less room than a chunk it writes without, to the last byte there is.
/// Under `everysec`, a write that finds the reserved space used up by what
/// waits to be written (a burst, a roll under way) on a disk with room is
/// told the log is behind, not that the disk is full, and a connection
/// holds it back until the writer has reserved more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_the_reservation_waits_for_the_writer_unless_the_disk_is_full() {
    let (_disk, _clock, s, log) = sim_log(FsyncPolicy::EverySec);
    s.create(create("app", None)).unwrap();
    log.wait_durable_blocking(log.last_seq(), std::time::Duration::from_secs(5))
        .unwrap();
    let room = log.headroom.load(Ordering::Relaxed);
    assert!(room > RESERVE_MARGIN, "{room}");
    // The writer has not reserved ahead yet.
    log.headroom.store(0, Ordering::Relaxed);
    assert!(log.behind_reservations());
    let refused = s.create(create("app", None)).unwrap_err();
    assert!(
        matches!(&refused, crate::store::StoreError::Unavailable(m) if m.contains("behind") && !m.contains("full")),
        "{refused}"
    );
    // A connection's wait ends as soon as the writer catches up.
    let writer = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            log.headroom.store(room, Ordering::Relaxed);
        })
    };
    let started = std::time::Instant::now();
    log.wait_for_room(std::time::Duration::from_secs(10)).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    writer.await.unwrap();
    assert!(!log.behind_reservations());
    s.create(create("app", None)).unwrap();
    // A disk short of room is not waited for: it is full.
    log.headroom.store(0, Ordering::Relaxed);
    log.room_short.store(true, Ordering::Relaxed);
    assert!(!log.behind_reservations());
    let refused = s.create(create("app", None)).unwrap_err();
    assert!(
        matches!(&refused, crate::store::StoreError::Unavailable(m) if m.contains("disk is full")),
        "{refused}"
    );
    log.shutdown();
}

#[test]
fn disk_full_under_always_keeps_no_headroom_of_its_own() {
    let (disk, _clock, s, log) = sim_log(FsyncPolicy::Always);
    // 64 KiB free: far less than a prefill chunk.
    disk.set_capacity(Some(disk.used() + 64 * 1024));
    let mut n = 0;
    while s.create(create("app", None)).is_ok()
        && log
            .wait_durable_blocking(log.last_seq(), std::time::Duration::from_secs(5))
            .is_ok()
    {
        n += 1;
    }
    // About 100 bytes a record: most of the 64 KiB was used.
    assert!(n > 400, "only {n} records fit in 64 KiB");
    log.shutdown();
}

/// Empty segments (a crash or a full disk while one was being created) are
/// removed wherever they are, at start and by `check-log --repair`.
#[test]
fn disk_full_leftover_empty_segments_do_not_stop_a_start() {
    let dir = tempfile::tempdir().unwrap();
    write_segments(dir.path(), &[put(1)], &[put(2)]);
    std::fs::write(segment(dir.path(), 3), b"").unwrap();
    std::fs::write(
        segment(dir.path(), 4),
        &format::header(FileKind::Segment)[..9],
    )
    .unwrap();
    std::fs::write(segment(dir.path(), 5), format::header(FileKind::Segment)).unwrap();
    let report = check_dir(dir.path(), false).unwrap();
    assert!(
        report
            .iter()
            .all(|r| !matches!(r.tail, Tail::Corrupt { .. })),
        "{report:?}"
    );
    let repaired = check_dir(dir.path(), true).unwrap();
    assert_eq!(repaired.iter().filter(|r| r.repaired).count(), 2);
    assert!(!segment(dir.path(), 3).exists() && !segment(dir.path(), 4).exists());
    std::fs::write(segment(dir.path(), 6), b"").unwrap();
    let (s, log) = open(dir.path());
    assert_eq!(s.len(), 2);
    log.shutdown();
    // The empty seg-6 went; the daemon's own new segment took its number.
    let report = check_dir(dir.path(), false).unwrap();
    assert!(report.iter().all(|r| r.tail == Tail::Clean), "{report:?}");
}

/// A request for the old id that resolved it just before a rotation (with a
/// grace period) moved the record follows the alias laid meanwhile, instead
/// of missing the session: reads and writes alike.
#[test]
fn a_request_racing_a_rotation_with_grace_finds_the_rotated_session() {
    let clock = ManualClock::new(NOW);
    let (s, journal) = racing(&clock, StoreConfig::default());
    let old = s.create(create("app", None)).unwrap().id;
    let rotate = |id| Rotate {
        namespace: "app".into(),
        id,
        grace_ms: Some(60_000),
    };
    let mut rotated = None;
    let got = pause_at(
        &s,
        "get: resolved",
        || s.get("app", old, false).unwrap(),
        || rotated = Some(s.rotate(&rotate(old)).unwrap().id),
    );
    assert_eq!(got.map(|g| g.id), rotated);

    let second = rotated.unwrap();
    let mut again = None;
    let incr = Incr {
        namespace: "app".into(),
        id: second,
        attr: "n".into(),
        delta: 1,
        window: None,
    };
    let reply = pause_at(
        &s,
        "write: resolved",
        || s.incr(incr).unwrap(),
        || again = Some(s.rotate(&rotate(second)).unwrap().id),
    );
    assert_eq!(reply.value, 1);
    let now = s.get("app", again.unwrap(), false).unwrap().unwrap();
    assert_eq!(now.attrs.get("n"), Some(&Value::Int(1)));
    let (back, _) = replay(&journal.0.lock(), &clock);
    assert_eq!(dump(&back), dump(&s));
}

/// A data dir written by a build of format 1 (no LSNs) opens, takes writes
/// in format 2 after it, and replays both in order on the next start.
#[test]
fn a_format_1_data_dir_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    // Format 1: a put of session [5; 16] at version 1, by hand (tag 0, then
    // the fields without an LSN).
    let attrs = sessiond_protocol::value::encode_attrs(&Attrs::new()).unwrap();
    let mut payload = vec![0u8, 3, b'a', b'p', b'p'];
    payload.extend_from_slice(&[5; 16]);
    payload.push(0); // no owner
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    let varint = |v: u64| {
        let mut out = vec![253u8];
        out.extend_from_slice(&v.to_le_bytes());
        out
    };
    payload.extend(varint(now)); // created_at
    payload.extend(varint(now)); // last_active
    payload.push(0); // no idle ttl
    payload.push(0); // no max lifetime
    payload.push(1); // version
    payload.push(attrs.len() as u8);
    payload.extend_from_slice(&attrs);
    let mut bytes = format::header_of(FileKind::Segment, 1).to_vec();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    std::fs::write(segment(dir.path(), 1), bytes).unwrap();

    let (s, log) = open(dir.path());
    let id = SessionId([5; 16]);
    assert_eq!(s.get("app", id, false).unwrap().unwrap().version, 1);
    s.update(set_v(id, 3)).unwrap();
    log.shutdown();
    drop((s, log));
    let (s, log) = open(dir.path());
    let got = s.get("app", id, false).unwrap().unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.attrs.get("v"), Some(&Value::Int(3)));
    log.shutdown();
}

/// A snapshot's checkpoint: a batch record drawn before the snapshot's walk
/// began (so its change is in the snapshot's images) but appended after the
/// snapshot's first segment began is skipped, not applied over a newer image.
/// The case: revoke-all with no tombstone window gathers Delete K (LSN 10), K
/// is created again (LSN 11, in a segment the snapshot replaces), the walk
/// sees K live, then the batch lands after the roll.
#[test]
fn a_late_batch_record_below_the_snapshots_checkpoint_is_skipped() {
    let clock = ManualClock::new(NOW);
    let s = store(&clock);
    let mut replay = recovery::Replay::new(&s);
    // The snapshot: its checkpoint, then K as the walk saw it.
    replay.apply(LogRecord::Checkpoint { lsn: 20 });
    let mut k = put(7);
    if let LogRecord::Put(p) = &mut k {
        p.lsn = 0;
    }
    replay.apply(k);
    // The next segment: the late delete (LSN 10), then a newer change (30).
    replay.apply(LogRecord::Delete {
        lsn: 10,
        namespace: "app".into(),
        id: [7; 16],
        tombstone_until: 0,
    });
    assert_eq!(s.len(), 1, "the late delete was applied over a newer image");
    replay.apply(LogRecord::Delete {
        lsn: 30,
        namespace: "app".into(),
        id: [7; 16],
        tombstone_until: 0,
    });
    assert_eq!(s.len(), 0, "a change after the checkpoint applies");
}
