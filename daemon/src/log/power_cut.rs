//! Power-cut tests: the real store and log on a [`SimDisk`], random operations
//! (creates with and without owner limits, updates, increments, touches,
//! rotations with and without grace, deletes, revoke-all sparing one id, a
//! full disk), segment rolls and compactions as the log grows, then a power
//! cut at a random point keeping a random part of what was not synced.
//! Recovery must succeed, and the store it rebuilds must equal the state after
//! some prefix of the operations that includes every acknowledged one.
//!
//! Under `--fsync always` an operation is acknowledged once the log reports it
//! durable; under `everysec`, once a sync covered it (what may be lost is what
//! came after the last sync: the documented bound of about a second).
//!
//! `SESSIOND_POWER_CUT_CASES` sets the number of cases (default 64 under
//! `always`, 48 under `everysec`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use sessiond_protocol::{
    Attrs, Create, DeleteByOwner, Incr, LimitPolicy, OwnerLimit, Rotate, SessionId, Ttl, Update,
    Value,
};

use super::vfs::{Cut, SimDisk, Vfs};
use super::{FsyncPolicy, Log, LogConfig};
use crate::clock::{Clock, ManualClock};
use crate::store::{Store, StoreConfig};

const NOW: u64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Create {
        owner: Option<u8>,
        limited: bool,
        chosen: bool,
    },
    Update(usize, i64),
    Incr(usize),
    Touch(usize),
    Rotate(usize, Option<u64>),
    Delete(usize),
    DeleteByOwner(u8, Option<usize>),
    /// The disk fills up (`true`) or gets room again.
    Full(bool),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::option::of(0..3u8), any::<bool>(), any::<bool>())
            .prop_map(|(owner, limited, chosen)| Op::Create { owner, limited, chosen }),
        4 => (any::<usize>(), any::<i64>()).prop_map(|(k, v)| Op::Update(k, v)),
        2 => any::<usize>().prop_map(Op::Incr),
        2 => any::<usize>().prop_map(Op::Touch),
        2 => (any::<usize>(), proptest::option::of(1u64..600_000)).prop_map(|(k, g)| Op::Rotate(k, g)),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => (0..3u8, proptest::option::of(any::<usize>())).prop_map(|(o, e)| Op::DeleteByOwner(o, e)),
        1 => any::<bool>().prop_map(Op::Full),
        1 => (1u64..2000).prop_map(Op::Advance),
    ]
}

fn cut() -> impl Strategy<Value = Cut> {
    prop_oneof![
        Just(Cut::Nothing),
        Just(Cut::Everything),
        (0usize..4).prop_map(Cut::Prefix),
        (0usize..3, 0usize..8).prop_map(|(pages, sectors)| Cut::Torn { pages, sectors }),
        any::<u64>().prop_map(Cut::Pages),
    ]
}

/// A record, comparably: owner, created, ttl, version, attributes. Not its
/// last activity: a touch is not a write anyone waits for, and is not logged
/// while the log refuses writes (a full disk), so it may be lost like any
/// touch the coalescing leaves out.
type Image = (Option<String>, u64, Ttl, u64, Attrs);

/// Everything a recovery must bring back, comparably.
#[derive(Debug, Clone, PartialEq)]
struct State {
    records: BTreeMap<(String, [u8; 16]), Image>,
    tombstones: BTreeMap<(String, [u8; 16]), u64>,
    aliases: BTreeMap<(String, [u8; 16]), ([u8; 16], u64)>,
}

impl State {
    /// What of this state is still there at `now`: a tombstone or alias
    /// whose end has passed is gone. A state recorded after an op and the
    /// state recovery rebuilds later are compared at the recovery's clock
    /// (recovery drops what has ended by then).
    fn at(&self, now: u64) -> State {
        State {
            records: self.records.clone(),
            tombstones: self
                .tombstones
                .iter()
                .filter(|(_, &until)| until > now)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            aliases: self
                .aliases
                .iter()
                .filter(|(_, &(_, until))| until > now)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

fn state(s: &Store) -> State {
    let mut records = BTreeMap::new();
    s.for_each_record(|ns, id, r| {
        let attrs = sessiond_protocol::value::decode_attrs(r.attrs()).unwrap();
        records.insert(
            (ns.to_owned(), id.0),
            (
                r.owner().map(|o| o.to_string()),
                r.created_at(),
                r.ttl(),
                r.version(),
                attrs,
            ),
        );
    });
    let mut tombstones = BTreeMap::new();
    s.for_each_tombstone(|ns, id, until| {
        tombstones.insert((ns.to_owned(), id.0), until);
    });
    let mut aliases = BTreeMap::new();
    s.for_each_alias(|ns, id, to, until| {
        aliases.insert((ns.to_owned(), id.0), (to.0, until));
    });
    State {
        records,
        tombstones,
        aliases,
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/data")
}

fn config(disk: &SimDisk, policy: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync: policy,
        // Small segments and an eager compaction: rolls and snapshots happen
        // within a case.
        segment_bytes: 512,
        compact_ratio: 1.0,
        compact_min_bytes: 1024,
        retry: Duration::from_millis(2),
        prefill: 8 * 1024,
        ..LogConfig {
            vfs: Arc::new(disk.clone()),
            ..LogConfig::new(dir())
        }
    }
}

fn store(clock: &ManualClock) -> Arc<Store> {
    let config = StoreConfig {
        // Every touch that moves the deadline is logged, so the state after
        // recovery is comparable to the letter.
        touch_log_fraction: 0.0,
        ..StoreConfig::default()
    };
    Arc::new(Store::new(config, Arc::new(clock.clone())))
}

fn create(owner: Option<String>) -> Create {
    Create {
        namespace: "app".into(),
        id: None,
        owner,
        ttl: Ttl {
            idle_ttl_ms: Some(3_600_000),
            max_lifetime_ms: None,
        },
        attrs: Attrs::new(),
        owner_limit: None,
    }
}

/// Runs one op; whether it changed anything is not needed (the state after it
/// is recorded either way).
fn apply(s: &Store, disk: &SimDisk, op: &Op, ids: &mut Vec<SessionId>, n: &mut u64) {
    let pick = |ids: &Vec<SessionId>, i: usize| ids.get(i % ids.len().max(1)).copied();
    match op {
        Op::Create {
            owner,
            limited,
            chosen,
        } => {
            let mut c = create(owner.map(|o| format!("u{o}")));
            if *limited && owner.is_some() {
                c.owner_limit = Some(OwnerLimit {
                    max_sessions: 2,
                    policy: LimitPolicy::EvictOldest,
                });
            }
            if *chosen {
                *n += 1;
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&n.to_le_bytes());
                c.id = Some(SessionId(id));
            }
            if let Ok(made) = s.create(c) {
                ids.push(made.id);
            }
        }
        Op::Update(i, v) => {
            if let Some(id) = pick(ids, *i) {
                let mut set = Attrs::new();
                set.insert("v".into(), Value::Int(*v));
                // Some bulk, so that segments roll and compactions run.
                set.insert("pad".into(), Value::Bytes(vec![*v as u8; 96]));
                let _ = s.update(Update {
                    namespace: "app".into(),
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
            if let Some(id) = pick(ids, *i) {
                let _ = s.incr(Incr {
                    namespace: "app".into(),
                    id,
                    attr: "n".into(),
                    delta: 1,
                    window: None,
                });
            }
        }
        Op::Touch(i) => {
            if let Some(id) = pick(ids, *i) {
                let _ = s.touch("app", id);
            }
        }
        Op::Rotate(i, grace_ms) => {
            if let Some(id) = pick(ids, *i) {
                if let Ok(r) = s.rotate(&Rotate {
                    namespace: "app".into(),
                    id,
                    grace_ms: *grace_ms,
                }) {
                    ids.push(r.id);
                }
            }
        }
        Op::Delete(i) => {
            if let Some(id) = pick(ids, *i) {
                let _ = s.delete("app", id);
            }
        }
        Op::DeleteByOwner(o, except) => {
            let _ = s.delete_by_owner(&DeleteByOwner {
                namespace: "app".into(),
                owner: format!("u{o}"),
                except: except.and_then(|e| pick(ids, e)),
            });
        }
        Op::Full(full) => disk.set_capacity(full.then(|| disk.used())),
        Op::Advance(_) => {}
    }
}

/// What the cases of one run exercised.
#[derive(Debug, Default)]
struct Totals {
    cases: AtomicU64,
    ops: AtomicU64,
    acked: AtomicU64,
    /// Cases whose disk held more than one segment or a snapshot at the cut.
    rolled: AtomicU64,
    compactions: AtomicU64,
    /// Cases where the disk was full at some point.
    full: AtomicU64,
    /// Cases whose log started read-only after the cut (full disk).
    read_only_starts: AtomicU64,
}

/// One case: runs `ops` (waiting for the log after those marked), cuts the
/// power after op `at`, recovers, and checks the recovered state.
fn case(
    policy: FsyncPolicy,
    ops: &[(Op, bool)],
    at: usize,
    cut: Cut,
    totals: &Totals,
) -> std::result::Result<(), TestCaseError> {
    let clock = ManualClock::new(NOW);
    let disk = SimDisk::new();
    disk.create_dir_all(&dir()).unwrap();
    let s = store(&clock);
    let log = Log::open(&config(&disk, policy), &s).unwrap();
    let mut ids = Vec::new();
    let mut chosen = 0;
    // states[i]: the state after the first i ops; seqs[i]: the log's last
    // sequence number then.
    let mut states = vec![state(&s)];
    let mut seqs = vec![0];
    let mut acked = 0;
    let at = at % ops.len();
    for (i, (op, wait)) in ops.iter().enumerate().take(at + 1) {
        if let Op::Advance(ms) = op {
            clock.advance(*ms);
        }
        apply(&s, &disk, op, &mut ids, &mut chosen);
        let seq = log.last_seq();
        states.push(state(&s));
        seqs.push(seq);
        // Under `always` the wait is the acknowledgement; under `everysec`
        // it only lets the writer catch up (acknowledged for good is what a
        // sync covered, below).
        if *wait
            && log
                .wait_durable_blocking(seq, Duration::from_secs(5))
                .is_ok()
            && policy == FsyncPolicy::Always
        {
            acked = i + 1;
        }
    }
    let add = |c: &AtomicU64, n: u64| c.fetch_add(n, Ordering::Relaxed);
    add(&totals.cases, 1);
    add(&totals.ops, at as u64 + 1);
    add(
        &totals.compactions,
        log.stats().compactions_started.load(Ordering::Relaxed),
    );
    if ops
        .iter()
        .take(at + 1)
        .any(|(op, _)| matches!(op, Op::Full(true)))
    {
        add(&totals.full, 1);
    }
    let files = disk.list(&dir()).unwrap();
    if files.iter().filter(|f| f.starts_with("seg-")).count() > 1
        || files.iter().any(|f| f.starts_with("snap-"))
    {
        add(&totals.rolled, 1);
    }
    if policy != FsyncPolicy::Always {
        // Acknowledged for good: what a sync covered.
        let synced = log.progress().synced;
        acked = seqs.iter().rposition(|&q| q <= synced).unwrap_or(0);
    }
    let back = disk.power_cut(cut);
    log.shutdown();
    drop(log);
    drop(s);

    let s = store(&clock);
    let recovered = Log::open(&config(&back, policy), &s);
    let log = match recovered {
        Ok(log) => log,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "recovery failed after a power cut ({cut:?} after op {at}): {e}"
            )))
        }
    };
    add(&totals.acked, acked as u64);
    if log.progress().error.is_some() {
        add(&totals.read_only_starts, 1);
    }
    let got = state(&s);
    let now = clock.now_ms();
    let matching: Vec<usize> = (0..states.len())
        .filter(|&i| states[i].at(now) == got)
        .collect();
    prop_assert!(
        matching.iter().any(|&i| i >= acked),
        "recovered state is no prefix including the {} acknowledged ops (cut {:?} after op {}; matches prefixes {:?})",
        acked,
        cut,
        at,
        matching
    );
    // The log goes on from there: a write after recovery is durable and does
    // not disturb what was recovered.
    if policy == FsyncPolicy::Always {
        // A disk that was full at the cut may have started the log read-only:
        // give it room and let the writer start its segment.
        back.set_capacity(None);
        for _ in 0..2500 {
            if log.progress().error.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let made = s.create(create(None)).unwrap();
        log.wait_durable_blocking(log.last_seq(), Duration::from_secs(5))
            .unwrap();
        let again = back.power_cut(Cut::Nothing);
        log.shutdown();
        let s2 = store(&clock);
        let log2 = Log::open(&config(&again, policy), &s2).unwrap();
        prop_assert!(s2.get("app", made.id, false).unwrap().is_some());
        let mut want = got;
        want.records.extend(
            state(&s2)
                .records
                .into_iter()
                .filter(|(k, _)| k.1 == made.id.0),
        );
        prop_assert_eq!(state(&s2), want);
        log2.shutdown();
    } else {
        log.shutdown();
    }
    Ok(())
}

fn cases(default: u32) -> u32 {
    std::env::var("SESSIOND_POWER_CUT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the cases of one policy and reports what they exercised; fails if
/// they never rolled a segment, compacted or filled the disk (a harness that
/// cannot reach those paths proves nothing about them).
fn run(policy: FsyncPolicy, default_cases: u32, wait: f64) {
    let config = ProptestConfig {
        cases: cases(default_cases),
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    };
    let totals = Totals::default();
    let strategy = (
        proptest::collection::vec((op(), proptest::bool::weighted(wait)), 1..80),
        any::<usize>(),
        cut(),
    );
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, |(ops, at, cut)| {
        case(policy, &ops, at, cut, &totals)
    }) {
        panic!("{e}");
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "power cut under {policy:?}: {} cases, {} ops, {} acknowledged ops checked, {} with several segments or a snapshot, {} compactions started, {} with a full disk, {} read-only starts",
        get(&totals.cases),
        get(&totals.ops),
        get(&totals.acked),
        get(&totals.rolled),
        get(&totals.compactions),
        get(&totals.full),
        get(&totals.read_only_starts),
    );
    assert!(get(&totals.rolled) > 0, "no case rolled a segment");
    assert!(get(&totals.compactions) > 0, "no case compacted");
    assert!(get(&totals.full) > 0, "no case filled the disk");
}

/// `--fsync always`: a power cut anywhere loses nothing acknowledged, brings
/// back nothing deleted or rotated away, and never leaves half an operation.
#[test]
fn power_cut_under_fsync_always_loses_nothing_acknowledged() {
    run(FsyncPolicy::Always, 64, 0.8);
}

/// `--fsync everysec`: a power cut loses at most what came after the last
/// sync, never anything older, and never replays a torn record.
#[test]
fn power_cut_under_fsync_everysec_loses_only_the_unsynced_tail() {
    run(FsyncPolicy::EverySec, 48, 0.5);
}
