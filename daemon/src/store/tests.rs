#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use sessiond_protocol::{RateWindow, Upsert};

use super::*;
use crate::clock::ManualClock;
use crate::store::MemoryPolicy;
use sessiond_protocol::ErrorCode;

const START: u64 = 1_000_000;
const TOMB: u64 = 5_000;

fn store() -> (Store, ManualClock) {
    let clock = ManualClock::new(START);
    let config = StoreConfig {
        tombstone_ttl_ms: TOMB,
        ..StoreConfig::default()
    };
    (Store::new(config, Arc::new(clock.clone())), clock)
}

fn create(ns: &str, owner: Option<&str>, idle: Option<u64>, max: Option<u64>) -> Create {
    Create {
        namespace: ns.into(),
        id: None,
        owner: owner.map(Into::into),
        ttl: Ttl {
            idle_ttl_ms: idle,
            max_lifetime_ms: max,
        },
        attrs: Attrs::new(),
        owner_limit: None,
    }
}

fn update(ns: &str, id: SessionId) -> Update {
    Update {
        namespace: ns.into(),
        id,
        set: Attrs::new(),
        remove: Vec::new(),
        expected_version: None,
        ttl: None,
        upsert: None,
    }
}

fn list(s: &Store, ns: &str, owner: &str) -> Vec<SessionId> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_by_owner(&ListByOwner {
                namespace: ns.into(),
                owner: owner.into(),
                after,
                limit: 2,
            })
            .unwrap();
        out.extend(page.sessions.iter().map(|x| x.id));
        match page.next {
            Some(c) => after = Some(c),
            None => return out,
        }
    }
}

/// Reclaims until nothing due is left (a touched record's entry is re-inserted
/// at its new deadline and may itself be due).
fn reclaim_all(s: &Store) {
    for _ in 0..16 {
        if s.reclaim(usize::MAX / 2) == 0 {
            return;
        }
    }
}

#[test]
fn create_get_and_absolute_expiry() {
    let (s, clock) = store();
    let mut c = create("app", Some("alice"), None, Some(1000));
    c.attrs.insert("role".into(), "admin".into());
    let made = s.create(c).unwrap();
    assert_eq!(made.version, 1);
    assert_eq!(made.expires_at_ms, Some(START + 1000));
    let got = s.get("app", made.id, false).unwrap().unwrap();
    assert_eq!(got, made);
    assert_eq!(got.attr("role"), Some(&Value::Str("admin".into())));
    // Another namespace does not see it.
    assert_eq!(s.get("other", made.id, false).unwrap(), None);
    clock.advance(999);
    assert!(s.get("app", made.id, true).unwrap().is_some());
    clock.advance(1);
    // Expired: invisible before reclaim, then reclaimed with its index entry.
    assert_eq!(s.get("app", made.id, false).unwrap(), None);
    assert_eq!(s.len(), 1);
    assert_eq!(s.owner_index_len("app", "alice"), 1);
    reclaim_all(&s);
    assert_eq!(s.len(), 0);
    assert_eq!(s.owner_index_len("app", "alice"), 0);
    assert_eq!(s.stats().expired_total, 1);
}

#[test]
fn touch_slides_but_never_past_max_lifetime() {
    let (s, clock) = store();
    let id = s
        .create(create("app", None, Some(100), Some(250)))
        .unwrap()
        .id;
    clock.advance(80);
    let t = s.touch("app", id).unwrap();
    assert_eq!(t.expires_at_ms, Some(START + 180));
    clock.advance(80);
    assert!(s.get("app", id, true).unwrap().is_some());
    clock.advance(80); // START+240: the idle deadline would be 340, the cap is 250
    let t = s.touch("app", id).unwrap();
    assert_eq!(t.expires_at_ms, Some(START + 250));
    clock.advance(10);
    assert!(!s.touch("app", id).unwrap().found);
    reclaim_all(&s);
    assert!(s.is_empty());
}

#[test]
fn lazily_rescheduled_entry_does_not_reclaim_a_touched_record() {
    let (s, clock) = store();
    let id = s.create(create("app", None, Some(100), None)).unwrap().id;
    clock.advance(90);
    s.touch("app", id).unwrap();
    clock.advance(20); // past the first deadline, before the slid one
    reclaim_all(&s);
    assert!(s.get("app", id, false).unwrap().is_some());
    clock.advance(100);
    reclaim_all(&s);
    assert!(s.is_empty());
}

#[test]
fn no_ttl_lives_until_deleted_and_leaves_a_tombstone() {
    let (s, clock) = store();
    let id = s.create(create("app", None, None, None)).unwrap().id;
    clock.advance(10 * 365 * 86_400_000);
    reclaim_all(&s);
    assert!(s.get("app", id, false).unwrap().is_some());
    assert!(s.delete("app", id).unwrap());
    assert!(!s.delete("app", id).unwrap());
    let mut again = create("app", None, None, None);
    again.id = Some(id);
    assert_eq!(s.create(again.clone()).unwrap_err(), StoreError::Gone);
    let mut up = update("app", id);
    up.upsert = Some(Upsert::default());
    assert_eq!(s.update(up.clone()).unwrap_err(), StoreError::Gone);
    clock.advance(TOMB);
    reclaim_all(&s);
    assert_eq!(s.create(again).unwrap().id, id);
}

#[test]
fn chosen_id_is_create_if_absent() {
    let (s, _) = store();
    let id = SessionId::new_v4();
    let mut c = create("app", None, None, None);
    c.id = Some(id);
    assert_eq!(s.create(c.clone()).unwrap().id, id);
    assert_eq!(s.create(c).unwrap_err(), StoreError::AlreadyExists);
}

#[test]
fn update_versions_and_conflicts_change_nothing() {
    let (s, _) = store();
    let id = s.create(create("app", None, None, None)).unwrap().id;
    let mut u = update("app", id);
    u.set.insert("cart".into(), Value::Int(3));
    u.expected_version = Some(1);
    assert_eq!(s.update(u.clone()).unwrap().version, 2);
    // Same expected version again: the record moved on.
    u.set.insert("cart".into(), Value::Int(99));
    assert_eq!(
        s.update(u).unwrap_err(),
        StoreError::Conflict {
            expected: 1,
            actual: Some(2)
        }
    );
    let got = s.get("app", id, false).unwrap().unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.attr("cart"), Some(&Value::Int(3)));
    let mut rm = update("app", id);
    rm.remove.push("cart".into());
    assert_eq!(s.update(rm).unwrap().version, 3);
    assert_eq!(s.get("app", id, false).unwrap().unwrap().attr("cart"), None);
    assert_eq!(
        s.update(update("app", SessionId::new_v4())).unwrap_err(),
        StoreError::NotFound
    );
}

#[test]
fn upsert_creates_then_updates() {
    let (s, _) = store();
    let id = SessionId::new_v4();
    let mut u = update("app", id);
    u.upsert = Some(Upsert {
        owner: Some("bob".into()),
    });
    u.set.insert("k".into(), Value::Bool(true));
    let first = s.update(u.clone()).unwrap();
    assert!(first.created);
    assert_eq!(first.version, 1);
    let second = s.update(u).unwrap();
    assert!(!second.created);
    assert_eq!(second.version, 2);
    assert_eq!(list(&s, "app", "bob"), vec![id]);
}

#[test]
fn owner_limit_reject_and_evict_oldest() {
    let (s, clock) = store();
    let limited = |policy| {
        let mut c = create("app", Some("carol"), None, None);
        c.owner_limit = Some(OwnerLimit {
            max_sessions: 2,
            policy,
        });
        c
    };
    let a = s.create(limited(LimitPolicy::Reject)).unwrap().id;
    clock.advance(1);
    let b = s.create(limited(LimitPolicy::Reject)).unwrap().id;
    clock.advance(1);
    assert!(matches!(
        s.create(limited(LimitPolicy::Reject)).unwrap_err(),
        StoreError::LimitExceeded { current: 2, max: 2 }
    ));
    assert_eq!(list(&s, "app", "carol"), vec![a, b]);
    let c = s.create(limited(LimitPolicy::EvictOldest)).unwrap().id;
    assert_eq!(list(&s, "app", "carol"), vec![b, c]);
    assert_eq!(s.get("app", a, false).unwrap(), None);
    assert_eq!(s.stats().evicted_total, 1);
    // The evicted id is tombstoned like a deleted one.
    let mut back = create("app", None, None, None);
    back.id = Some(a);
    assert_eq!(s.create(back).unwrap_err(), StoreError::Gone);
}

#[test]
fn owner_limit_counts_only_live_sessions() {
    let (s, clock) = store();
    let mut c = create("app", Some("dan"), Some(10), None);
    c.owner_limit = Some(OwnerLimit {
        max_sessions: 1,
        policy: LimitPolicy::Reject,
    });
    s.create(c.clone()).unwrap();
    clock.advance(10);
    // The first one expired (not yet reclaimed); it does not count.
    s.create(c).unwrap();
}

#[test]
fn windowed_incr_refuses_past_the_limit_and_resets() {
    let (s, clock) = store();
    let id = s.create(create("app", None, None, None)).unwrap().id;
    let incr = |delta| Incr {
        namespace: "app".into(),
        id,
        attr: "logins".into(),
        delta,
        window: Some(RateWindow {
            window_ms: 1000,
            limit: 3,
        }),
    };
    for n in 1..=3 {
        let r = s.incr(incr(1)).unwrap();
        assert!(r.allowed);
        assert_eq!(r.value, n);
        assert_eq!(r.remaining, Some(3 - n));
        assert_eq!(r.reset_at_ms, Some(START + 1000));
    }
    let version = s.get("app", id, false).unwrap().unwrap().version;
    let refused = s.incr(incr(1)).unwrap();
    assert!(!refused.allowed);
    assert_eq!((refused.value, refused.remaining), (3, Some(0)));
    assert_eq!(s.get("app", id, false).unwrap().unwrap().version, version);
    clock.advance(1000);
    let fresh = s.incr(incr(1)).unwrap();
    assert!(fresh.allowed);
    assert_eq!(fresh.value, 1);
    assert_eq!(fresh.reset_at_ms, Some(START + 2000));
}

#[test]
fn plain_incr_checks_type_and_overflow() {
    let (s, _) = store();
    let mut c = create("app", None, None, None);
    c.attrs.insert("name".into(), "x".into());
    let id = s.create(c).unwrap().id;
    let incr = |attr: &str, delta| Incr {
        namespace: "app".into(),
        id,
        attr: attr.into(),
        delta,
        window: None,
    };
    assert_eq!(s.incr(incr("n", 5)).unwrap().value, 5);
    assert_eq!(s.incr(incr("n", -7)).unwrap().value, -2);
    assert!(matches!(
        s.incr(incr("name", 1)),
        Err(StoreError::Invalid(_))
    ));
    s.incr(incr("big", i64::MAX)).unwrap();
    assert!(matches!(
        s.incr(incr("big", 1)),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        s.get("app", id, false).unwrap().unwrap().attr("big"),
        Some(&Value::Int(i64::MAX))
    );
}

#[test]
fn rotate_moves_everything_and_honours_grace() {
    let (s, clock) = store();
    let mut c = create("app", Some("erin"), Some(1000), None);
    c.attrs.insert("k".into(), Value::Int(1));
    let old = s.create(c).unwrap();
    let rotated = s
        .rotate(&Rotate {
            namespace: "app".into(),
            id: old.id,
            grace_ms: None,
        })
        .unwrap();
    assert_ne!(rotated.id, old.id);
    assert_eq!(
        (
            rotated.owner.clone(),
            rotated.attrs.clone(),
            rotated.version
        ),
        (old.owner, old.attrs, old.version)
    );
    assert_eq!(rotated.expires_at_ms, old.expires_at_ms);
    assert_eq!(s.get("app", old.id, false).unwrap(), None);
    assert_eq!(list(&s, "app", "erin"), vec![rotated.id]);
    let mut late = update("app", old.id);
    late.upsert = Some(Upsert::default());
    assert_eq!(s.update(late).unwrap_err(), StoreError::Gone);

    let graced = s
        .rotate(&Rotate {
            namespace: "app".into(),
            id: rotated.id,
            grace_ms: Some(100),
        })
        .unwrap();
    // Within the grace period the old id reads (and writes) the new record.
    assert_eq!(
        s.get("app", rotated.id, false).unwrap().unwrap().id,
        graced.id
    );
    let mut u = update("app", rotated.id);
    u.set.insert("k".into(), Value::Int(2));
    s.update(u).unwrap();
    assert_eq!(
        s.get("app", graced.id, false).unwrap().unwrap().attr("k"),
        Some(&Value::Int(2))
    );
    clock.advance(100);
    reclaim_all(&s);
    assert_eq!(s.get("app", rotated.id, false).unwrap(), None);
    assert!(s.get("app", graced.id, false).unwrap().is_some());
    assert_eq!(s.len(), 1);
}

#[test]
fn delete_by_owner_spares_one_and_counts() {
    let (s, clock) = store();
    let ids: Vec<_> = (0..5)
        .map(|_| {
            clock.advance(1);
            s.create(create("app", Some("fay"), None, None)).unwrap().id
        })
        .collect();
    s.create(create("app", Some("gus"), None, None)).unwrap();
    let n = s
        .delete_by_owner(&DeleteByOwner {
            namespace: "app".into(),
            owner: "fay".into(),
            except: Some(ids[2]),
        })
        .unwrap();
    assert_eq!(n, 4);
    assert_eq!(list(&s, "app", "fay"), vec![ids[2]]);
    assert_eq!(list(&s, "app", "gus").len(), 1);
    assert_eq!(s.len(), 2);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let (s, _) = store();
    assert!(matches!(
        s.create(create("", None, None, None)),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create(create("app", None, Some(0), None)),
        Err(StoreError::Invalid(_))
    ));
    let mut big = create("app", None, None, None);
    big.attrs
        .insert("blob".into(), Value::Bytes(vec![0; 70 * 1024]));
    assert!(matches!(s.create(big), Err(StoreError::TooLarge { .. })));
    let mut limit_without_owner = create("app", None, None, None);
    limit_without_owner.owner_limit = Some(OwnerLimit {
        max_sessions: 1,
        policy: LimitPolicy::Reject,
    });
    assert!(matches!(
        s.create(limit_without_owner),
        Err(StoreError::Invalid(_))
    ));
    assert!(s.is_empty());
}

#[test]
fn reclaim_work_is_bounded_per_call() {
    let (s, clock) = store();
    for _ in 0..1000 {
        s.create(create("app", Some("o"), Some(10), None)).unwrap();
    }
    clock.advance(10);
    // Each round stops at its budget, however much is due.
    let mut rounds = 0;
    loop {
        let n = s.reclaim(32);
        assert!(n <= 32, "a round of budget 32 handled {n}");
        rounds += 1;
        if n == 0 {
            break;
        }
    }
    assert!(rounds > 1000 / 32);
    assert!(s.is_empty());
    assert_eq!(s.owner_index_len("app", "o"), 0);
    assert_eq!(s.stats().expired_total, 1000);
}

fn limited(policy: MemoryPolicy) -> (Store, ManualClock) {
    let clock = ManualClock::new(START);
    let config = StoreConfig {
        max_memory: Some(20_000),
        memory_policy: policy,
        ..StoreConfig::default()
    };
    (Store::new(config, Arc::new(clock.clone())), clock)
}

#[test]
fn at_the_memory_limit_writes_fail_and_reads_work() {
    let (s, _) = limited(MemoryPolicy::Reject);
    let mut made = Vec::new();
    let err = loop {
        match s.create(create("app", None, Some(60_000), None)) {
            Ok(x) => made.push(x.id),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, StoreError::OutOfMemory { max: 20_000, .. }),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::OutOfMemory);
    assert!(s.get("app", made[0], true).unwrap().is_some());
    // Deleting frees room for writes again.
    s.delete("app", made[0]).unwrap();
    s.delete("app", made[1]).unwrap();
    s.create(create("app", None, None, None)).unwrap();
}

#[test]
fn volatile_ttl_evicts_the_sessions_closest_to_expiry() {
    let (s, clock) = limited(MemoryPolicy::VolatileTtl);
    let soon = s.create(create("app", None, Some(1_000), None)).unwrap().id;
    let touched = s.create(create("app", None, Some(2_000), None)).unwrap().id;
    let forever = s.create(create("app", None, None, None)).unwrap().id;
    // An update slides `touched` far out, past every deadline to come; its
    // old wheel entry stays behind (lazy) and must not get it evicted.
    clock.advance(500);
    let mut u = update("app", touched);
    u.ttl = Some(Ttl {
        idle_ttl_ms: Some(7_200_000),
        max_lifetime_ms: None,
    });
    s.update(u).unwrap();
    for _ in 0..300 {
        s.create(create("app", None, Some(3_600_000), None))
            .unwrap();
    }
    assert_eq!(
        s.get("app", soon, false).unwrap(),
        None,
        "the soonest went first"
    );
    assert!(s.get("app", touched, false).unwrap().is_some());
    assert!(
        s.get("app", forever, false).unwrap().is_some(),
        "no-ttl sessions are never evicted"
    );
    assert!(s.stats().evicted_total > 0);
    assert!(s.stats().memory_bytes <= 20_000 + 1_000);
}

#[test]
fn stats_count_namespaces_and_memory() {
    let (s, _) = store();
    for _ in 0..3 {
        s.create(create("a", None, None, None)).unwrap();
    }
    let id = s.create(create("b", None, None, None)).unwrap().id;
    let st = s.stats();
    assert_eq!(st.records, 4);
    assert!(st.namespaces.contains(&("a".to_string(), 3)));
    assert!(st.memory_bytes > 0);
    s.delete("b", id).unwrap();
    assert!(s.stats().namespaces.contains(&("b".to_string(), 0)));
}

// ---- the store against a model -------------------------------------------

#[derive(Debug, Clone)]
struct ModelRec {
    owner: Option<String>,
    created: u64,
    last_active: u64,
    ttl: Ttl,
    version: u64,
    attrs: Attrs,
}

impl ModelRec {
    fn expires(&self) -> u64 {
        Record::deadline(self.created, self.last_active, self.ttl)
    }
    fn live(&self, now: u64) -> bool {
        self.expires() > now
    }
    fn touch(&mut self, now: u64) {
        self.last_active = self.last_active.max(now);
    }
}

#[derive(Debug, Default)]
struct Model {
    recs: HashMap<(String, SessionId), ModelRec>,
    tombs: HashMap<(String, SessionId), u64>,
}

impl Model {
    fn live(&self, k: &(String, SessionId), now: u64) -> Option<&ModelRec> {
        self.recs.get(k).filter(|r| r.live(now))
    }
    fn remove(&mut self, k: &(String, SessionId), now: u64) -> bool {
        match self.recs.remove(k) {
            Some(r) => {
                self.tombs.insert(k.clone(), now + TOMB);
                r.live(now)
            }
            None => false,
        }
    }
    fn tombstoned(&self, k: &(String, SessionId), now: u64) -> bool {
        self.tombs.get(k).is_some_and(|t| *t > now)
    }
}

#[derive(Debug, Clone)]
enum Action {
    Create {
        ns: usize,
        owner: Option<usize>,
        idle: Option<u64>,
        max: Option<u64>,
        reuse: Option<usize>,
    },
    Get(usize, bool),
    Touch(usize),
    Update {
        key: usize,
        value: i64,
        stale: bool,
    },
    Incr(usize, i64),
    Delete(usize),
    Rotate(usize),
    List(usize, usize),
    DeleteByOwner(usize, usize, Option<usize>),
    Advance(u64),
    Reclaim,
}

const NSS: [&str; 2] = ["a", "b"];
const OWNERS: [&str; 3] = ["u1", "u2", "u3"];

fn action() -> impl Strategy<Value = Action> {
    let ttl = prop_oneof![Just(None), (1u64..3000).prop_map(Some)];
    prop_oneof![
        3 => (0..2usize, proptest::option::of(0..3usize), ttl.clone(), ttl, proptest::option::weighted(0.2, any::<usize>()))
            .prop_map(|(ns, owner, idle, max, reuse)| Action::Create { ns, owner, idle, max, reuse }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(k, t)| Action::Get(k, t)),
        1 => any::<usize>().prop_map(Action::Touch),
        2 => (any::<usize>(), -5i64..5, any::<bool>()).prop_map(|(key, value, stale)| Action::Update { key, value, stale }),
        1 => (any::<usize>(), -3i64..4).prop_map(|(k, d)| Action::Incr(k, d)),
        1 => any::<usize>().prop_map(Action::Delete),
        1 => any::<usize>().prop_map(Action::Rotate),
        1 => (0..2usize, 0..3usize).prop_map(|(n, o)| Action::List(n, o)),
        1 => (0..2usize, 0..3usize, proptest::option::of(any::<usize>())).prop_map(|(n, o, e)| Action::DeleteByOwner(n, o, e)),
        2 => prop_oneof![1u64..50, 50u64..4000].prop_map(Action::Advance),
        1 => Just(Action::Reclaim),
    ]
}

fn check_session(s: &Session, m: &ModelRec) {
    assert_eq!(s.owner, m.owner);
    assert_eq!(s.created_at_ms, m.created);
    assert_eq!(s.last_active_ms, m.last_active);
    assert_eq!(s.expires_at_ms, finite(m.expires()));
    assert_eq!(s.version, m.version);
    assert_eq!(s.attrs, m.attrs);
}

fn run_model(actions: Vec<Action>) {
    let (s, clock) = store();
    let mut m = Model::default();
    // Every key ever named, plus one never used, so operations also hit absent,
    // expired, deleted and rotated-away ids.
    let mut keys: Vec<(String, SessionId)> = vec![("a".into(), SessionId::new_v4())];
    let pick = |keys: &Vec<(String, SessionId)>, i: usize| keys[i % keys.len()].clone();
    for action in actions {
        let now = clock.now_ms();
        match action {
            Action::Create {
                ns,
                owner,
                idle,
                max,
                reuse,
            } => {
                let mut c = create(NSS[ns], owner.map(|o| OWNERS[o]), idle, max);
                c.attrs.insert("v".into(), Value::Int(0));
                let reused = reuse.map(|i| pick(&keys, i));
                if let Some(k) = &reused {
                    c.namespace = k.0.clone();
                    c.id = Some(k.1);
                }
                let result = s.create(c.clone());
                let rec = ModelRec {
                    owner: c.owner.clone(),
                    created: now,
                    last_active: now,
                    ttl: c.ttl,
                    version: 1,
                    attrs: c.attrs.clone(),
                };
                match reused {
                    Some(k) if m.tombstoned(&k, now) => {
                        assert_eq!(result.unwrap_err(), StoreError::Gone)
                    }
                    Some(k) if m.live(&k, now).is_some() => {
                        assert_eq!(result.unwrap_err(), StoreError::AlreadyExists);
                    }
                    Some(k) => {
                        assert_eq!(result.unwrap().id, k.1);
                        m.recs.insert(k, rec);
                    }
                    None => {
                        let made = result.unwrap();
                        let k = (c.namespace.clone(), made.id);
                        check_session(&made, &rec);
                        m.recs.insert(k.clone(), rec);
                        keys.push(k);
                    }
                }
            }
            Action::Get(i, touch) => {
                let k = pick(&keys, i);
                let got = s.get(&k.0, k.1, touch).unwrap();
                match m.recs.get_mut(&k).filter(|r| r.live(now)) {
                    Some(r) => {
                        if touch {
                            r.touch(now);
                        }
                        check_session(&got.unwrap(), r);
                    }
                    None => assert_eq!(got, None),
                }
            }
            Action::Touch(i) => {
                let k = pick(&keys, i);
                let t = s.touch(&k.0, k.1).unwrap();
                match m.recs.get_mut(&k).filter(|r| r.live(now)) {
                    Some(r) => {
                        r.touch(now);
                        assert!(t.found);
                        assert_eq!(t.expires_at_ms, finite(r.expires()));
                    }
                    None => assert!(!t.found),
                }
            }
            Action::Update { key, value, stale } => {
                let k = pick(&keys, key);
                let mut u = update(&k.0, k.1);
                u.set.insert("v".into(), Value::Int(value));
                let live_version = m.live(&k, now).map(|r| r.version);
                if stale {
                    u.expected_version = Some(live_version.unwrap_or(1) + 1);
                } else {
                    u.expected_version = live_version;
                }
                let result = s.update(u);
                match m.recs.get_mut(&k).filter(|r| r.live(now)) {
                    None => assert_eq!(result.unwrap_err(), StoreError::NotFound),
                    Some(r) if stale => assert!(
                        matches!(result.unwrap_err(), StoreError::Conflict { actual: Some(v), .. } if v == r.version)
                    ),
                    Some(r) => {
                        r.attrs.insert("v".into(), Value::Int(value));
                        r.touch(now);
                        r.version += 1;
                        let reply = result.unwrap();
                        assert_eq!(reply.version, r.version);
                        assert_eq!(reply.expires_at_ms, finite(r.expires()));
                    }
                }
            }
            Action::Incr(i, delta) => {
                let k = pick(&keys, i);
                let result = s.incr(Incr {
                    namespace: k.0.clone(),
                    id: k.1,
                    attr: "v".into(),
                    delta,
                    window: None,
                });
                match m.recs.get_mut(&k).filter(|r| r.live(now)) {
                    None => assert_eq!(result.unwrap_err(), StoreError::NotFound),
                    Some(r) => {
                        let Some(Value::Int(v)) = r.attrs.get("v").cloned() else {
                            unreachable!("the model only stores ints in v")
                        };
                        r.attrs.insert("v".into(), Value::Int(v + delta));
                        r.version += 1;
                        let reply = result.unwrap();
                        assert_eq!((reply.value, reply.version), (v + delta, r.version));
                    }
                }
            }
            Action::Delete(i) => {
                let k = pick(&keys, i);
                assert_eq!(s.delete(&k.0, k.1).unwrap(), m.remove(&k, now));
            }
            Action::Rotate(i) => {
                let k = pick(&keys, i);
                let result = s.rotate(&Rotate {
                    namespace: k.0.clone(),
                    id: k.1,
                    grace_ms: None,
                });
                match m.live(&k, now).cloned() {
                    None => assert_eq!(result.unwrap_err(), StoreError::NotFound),
                    Some(r) => {
                        let new = result.unwrap();
                        check_session(&new, &r);
                        m.remove(&k, now);
                        let nk = (k.0.clone(), new.id);
                        m.recs.insert(nk.clone(), r);
                        keys.push(nk);
                    }
                }
            }
            Action::List(n, o) => {
                let (ns, owner) = (NSS[n], OWNERS[o]);
                let mut want: Vec<(u64, SessionId)> = m
                    .recs
                    .iter()
                    .filter(|(k, r)| k.0 == ns && r.owner.as_deref() == Some(owner) && r.live(now))
                    .map(|(k, r)| (r.created, k.1))
                    .collect();
                want.sort();
                let want: Vec<SessionId> = want.into_iter().map(|(_, id)| id).collect();
                assert_eq!(list(&s, ns, owner), want);
            }
            Action::DeleteByOwner(n, o, except) => {
                let (ns, owner) = (NSS[n], OWNERS[o]);
                let except = except.map(|i| pick(&keys, i)).filter(|k| k.0 == ns);
                let victims: Vec<_> = m
                    .recs
                    .iter()
                    .filter(|(k, r)| {
                        k.0 == ns
                            && r.owner.as_deref() == Some(owner)
                            && Some(*k) != except.as_ref()
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut want = 0;
                for k in victims {
                    if m.remove(&k, now) {
                        want += 1;
                    }
                }
                let got = s
                    .delete_by_owner(&DeleteByOwner {
                        namespace: ns.into(),
                        owner: owner.into(),
                        except: except.map(|k| k.1),
                    })
                    .unwrap();
                assert_eq!(got, want);
            }
            Action::Advance(ms) => clock.advance(ms),
            Action::Reclaim => {
                reclaim_all(&s);
                m.recs.retain(|_, r| r.live(now));
                assert_eq!(s.len(), m.recs.len());
                let mut by_ns: BTreeMap<String, u64> = BTreeMap::new();
                for k in m.recs.keys() {
                    *by_ns.entry(k.0.clone()).or_default() += 1;
                }
                for (ns, count) in s.stats().namespaces {
                    assert_eq!(
                        by_ns.get(&ns).copied().unwrap_or(0),
                        count,
                        "namespace {ns}"
                    );
                }
                for o in OWNERS {
                    for ns in NSS {
                        let want = m
                            .recs
                            .iter()
                            .filter(|(k, r)| k.0 == ns && r.owner.as_deref() == Some(o))
                            .count();
                        assert_eq!(s.owner_index_len(ns, o), want, "owner index of {o} in {ns}");
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(actions in proptest::collection::vec(action(), 1..120)) {
        run_model(actions);
    }
}

/// The owner index is looked up by a borrowed `(namespace, name)` as well as
/// by its owned keys: both forms hash and compare alike, or a create would
/// miss the index's copy of the name (and lookups by name would miss sets).
#[test]
fn owner_keys_hash_and_compare_as_their_borrowed_form() {
    let hasher = Hasher::new();
    for (ns, name) in [(0u32, ""), (3, "alice"), (u32::MAX, "ünïcode")] {
        let key = OwnerKey {
            ns,
            owner: Arc::from(name),
        };
        let probe: &dyn OwnerLookup = &(ns, name);
        let owned: &dyn OwnerLookup = std::borrow::Borrow::borrow(&key);
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(probe));
        assert!(owned == probe);
        let other: &dyn OwnerLookup = &(ns, "bob");
        assert!(owned != other);
        let elsewhere: &dyn OwnerLookup = &(ns.wrapping_add(1), name);
        assert!(owned != elsewhere);
        // A copy of the name made elsewhere is the same key.
        let copy = OwnerKey {
            ns,
            owner: Arc::from(name.to_owned()),
        };
        assert_eq!(key, copy);
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(&copy));
    }
    // And the store finds an owner's set by its name.
    let (s, _) = store();
    for _ in 0..3 {
        s.create(Create {
            namespace: "app".into(),
            id: None,
            owner: Some("alice".into()),
            ttl: Ttl::default(),
            attrs: Attrs::new(),
            owner_limit: None,
        })
        .unwrap();
    }
    assert_eq!(s.owner_index_len("app", "alice"), 3);
}
