//! Durability of the real process: restarts keep every acknowledged write,
//! SIGKILL at random moments under `--fsync always` loses nothing
//! acknowledged, a second daemon cannot take the same data dir, and
//! `sessiond check-log` reports on the files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sessiond_client::{Client, ClientConfig, CreateOptions, SessionId, UpdateOptions, Value};
use sessiond_e2e::{daemon_bin, DaemonProcess};

async fn client(daemon: &DaemonProcess) -> Client {
    Client::connect_with(
        ClientConfig::new(daemon.addr().to_string())
            .connections(4)
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_graceful_restart_keeps_everything() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let c = client(&daemon).await;
    let kept = c
        .create("app", CreateOptions::new().owner("alice").attr("k", "v"))
        .await
        .unwrap();
    c.update("app", kept.id, UpdateOptions::new().set("n", 7i64))
        .await
        .unwrap();
    let gone = c.create("app", CreateOptions::new()).await.unwrap();
    c.delete("app", gone.id).await.unwrap();
    let rotated = c.rotate("app", kept.id, None).await.unwrap();
    drop(c);
    let mut daemon = daemon;
    assert!(daemon
        .signal_and_wait("TERM", Duration::from_secs(10))
        .unwrap()
        .success());
    let daemon = daemon.restart(&[]).unwrap();
    let c = client(&daemon).await;
    let got = c
        .get("app", rotated.id)
        .await
        .unwrap()
        .expect("survived the restart");
    assert_eq!(got.attr("n"), Some(&Value::Int(7)));
    assert_eq!(got.version, 2);
    assert_eq!(c.get("app", kept.id).await.unwrap(), None);
    assert_eq!(c.get("app", gone.id).await.unwrap(), None);
    // Tombstones survive too: a late create of a deleted id is still refused.
    let err = c
        .create("app", CreateOptions::new().id(gone.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(sessiond_client::ErrorCode::Gone));
    assert_eq!(
        c.list_by_owner("app", "alice", None, 10)
            .await
            .unwrap()
            .sessions
            .len(),
        1
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_dir_refuses_to_start() {
    let daemon = DaemonProcess::start(daemon_bin!(), &[]).unwrap();
    let out = Command::new(daemon_bin!())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another sessiond"), "{err}");
}

#[test]
fn check_log_reports_and_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("seg-0000000001.log");
    // A valid header, then a frame with a bad checksum followed by more bytes.
    let mut bytes = b"SESSIOND\x01\x00\x01\x00\x35\xc2\x86\xc4".to_vec();
    bytes.extend_from_slice(&[3, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
    bytes.extend_from_slice(&[3, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(dir.path().join("seg-0000000002.log"), &bytes[..16]).unwrap();
    let run = |repair: bool| {
        let mut cmd = Command::new(daemon_bin!());
        cmd.arg("check-log").arg(dir.path());
        if repair {
            cmd.arg("--repair");
        }
        cmd.output().unwrap()
    };
    let out = run(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("seg-0000000001.log: 0 records")
            && text.contains("DAMAGED at byte 16: checksum mismatch"),
        "{text}"
    );
    assert!(text.contains("2 files checked, 1 damaged"), "{text}");
    let out = run(true);
    assert!(out.status.success());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 16);
    assert!(dir.path().join("seg-0000000001.log.cut-at-16").exists());
    assert!(run(false).status.success());
}

/// What the writers know for certain about one session: the id it lives
/// under, the ids it was rotated away from and the last acknowledged value of
/// each attribute. Shared by the tasks writing to it; never locked across an
/// `.await`.
#[derive(Debug, Default)]
struct Slot {
    /// Unique to this session, so that it can be found by owner when a
    /// rotation was sent but never acknowledged.
    owner: String,
    /// Where the session lives as far as acknowledged.
    id: Option<SessionId>,
    /// A rotation of `id` was sent but its answer never came (the daemon died):
    /// the session is under `id` or under an id only the owner index knows.
    in_doubt: bool,
    /// Acknowledged rotations: the id left behind and whether it had a grace
    /// period.
    old: Vec<(SessionId, bool)>,
    /// An old id still inside its grace period (in this daemon's lifetime):
    /// writes through it reach `id`.
    alias: Option<SessionId>,
    /// Attribute name → last acknowledged value.
    acked: HashMap<String, i64>,
    /// The running daemon was seen to hold every acknowledged value (race
    /// sessions): a loss after the restart is then the log's.
    seen_in_memory: bool,
}

type SharedSlot = Arc<Mutex<Slot>>;

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// xorshift: a different schedule every run, reproducible from the seed.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A grace period longer than any run of this test.
const LONG_GRACE: Duration = Duration::from_secs(600);
/// A grace period that ends within a round.
const SHORT_GRACE: Duration = Duration::from_millis(150);
/// Writes through the old id racing each rotation in a race session.
const RACERS: usize = 8;
/// Race sessions per race task per round (bounds the re-checks).
const RACES_PER_ROUND: usize = 12;

/// Creates a session with a unique owner and `n = 0`; on acknowledgement the
/// slot is registered in `slots`.
async fn create_slot(
    c: &Client,
    slots: &Mutex<Vec<SharedSlot>>,
    owner: String,
) -> Option<SharedSlot> {
    let s = c
        .create(
            "crash",
            CreateOptions::new().owner(owner.clone()).attr("n", 0i64),
        )
        .await
        .ok()?;
    let slot = Arc::new(Mutex::new(Slot {
        owner,
        id: Some(s.id),
        acked: HashMap::from([("n".to_owned(), 0)]),
        ..Slot::default()
    }));
    slots.lock().unwrap().push(Arc::clone(&slot));
    Some(slot)
}

/// Records the answer to `rotate(old)`. `Err(())` means the daemon is gone.
fn record_rotation(
    slot: &SharedSlot,
    old: SessionId,
    grace: Option<Duration>,
    res: sessiond_client::Result<sessiond_client::Session>,
) -> Result<(), ()> {
    let mut st = slot.lock().unwrap();
    match res {
        Ok(s) => {
            assert_ne!(s.id, old, "rotate kept the id");
            st.old.push((old, grace.is_some()));
            st.id = Some(s.id);
            st.alias = grace.map(|_| old);
            Ok(())
        }
        // Refused (e.g. `Conflict` after retries): nothing moved.
        Err(e) if e.code().is_some() => Ok(()),
        Err(_) => {
            st.in_doubt = true;
            Err(())
        }
    }
}

/// Sets `attr = value` through the alias (when there is one and `via_alias`)
/// or the current id; records the acknowledgement. `Err(())`: the daemon is
/// gone; `Ok(false)`: refused (e.g. the id just rotated away without grace).
async fn update_slot(
    c: &Client,
    slot: &SharedSlot,
    attr: &str,
    value: i64,
    via_alias: bool,
) -> Result<bool, ()> {
    let (target, is_alias) = {
        let st = slot.lock().unwrap();
        match (st.alias, via_alias) {
            (Some(a), true) => (a, true),
            _ => (st.id.unwrap(), false),
        }
    };
    match c
        .update("crash", target, UpdateOptions::new().set(attr, value))
        .await
    {
        Ok(_) => {
            slot.lock().unwrap().acked.insert(attr.to_owned(), value);
            Ok(true)
        }
        Err(e) if e.code().is_some() => {
            if is_alias {
                slot.lock().unwrap().alias = None;
            }
            Ok(false)
        }
        Err(_) => Err(()),
    }
}

/// One session under steady load: `n` from this task, `m` from a second task
/// writing concurrently (often through the old id), and a rotation every few
/// updates, with a long, a short or no grace period.
async fn rotating_writer(
    c: Client,
    slots: Arc<Mutex<Vec<SharedSlot>>>,
    owner: String,
    mut rng: u64,
) {
    let Some(slot) = create_slot(&c, &slots, owner).await else {
        return;
    };
    let every = 4 + xorshift(&mut rng) % 6;
    let main = {
        let (c, slot) = (c.clone(), Arc::clone(&slot));
        async move {
            for n in 1.. {
                let via_alias = !xorshift(&mut rng).is_multiple_of(3);
                if update_slot(&c, &slot, "n", n, via_alias).await.is_err() {
                    return;
                }
                if (n as u64).is_multiple_of(every) {
                    let grace = match xorshift(&mut rng) % 3 {
                        0 => None,
                        1 => Some(SHORT_GRACE),
                        _ => Some(LONG_GRACE),
                    };
                    let old = slot.lock().unwrap().id.unwrap();
                    let res = c.rotate("crash", old, grace).await;
                    if record_rotation(&slot, old, grace, res).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let side = async {
        let mut refused = 0;
        for m in 1.. {
            match update_slot(&c, &slot, "m", m, m % 4 != 0).await {
                Ok(true) => refused = 0,
                // The id rotated away under this write: the next one uses the new id.
                Ok(false) if refused < 100 => refused += 1,
                _ => return,
            }
        }
    };
    tokio::join!(main, side);
}

/// Sessions that each see exactly one rotation (long grace) raced by
/// `RACERS` writes through the old id, each setting its own attribute, and
/// are then left alone: no later write can rewrite a lost one, so whatever
/// was acknowledged must be found as is after the restart.
async fn race_writer(c: Client, slots: Arc<Mutex<Vec<SharedSlot>>>, owner: String) {
    for race in 0..RACES_PER_ROUND {
        let Some(slot) = create_slot(&c, &slots, format!("{owner}-{race}")).await else {
            return;
        };
        let old = slot.lock().unwrap().id.unwrap();
        let racers = (0..RACERS).map(|k| {
            let (c, slot) = (c.clone(), Arc::clone(&slot));
            async move {
                let attr = format!("r{k}");
                let res = c
                    .update("crash", old, UpdateOptions::new().set(attr.as_str(), 1i64))
                    .await;
                match res {
                    Ok(_) => {
                        slot.lock().unwrap().acked.insert(attr, 1);
                    }
                    Err(e) if e.code().is_some() => {}
                    Err(_) => return Err(()),
                }
                Ok(())
            }
        });
        let (rot, ups) = tokio::join!(
            c.rotate("crash", old, Some(LONG_GRACE)),
            futures::future::join_all(racers)
        );
        if record_rotation(&slot, old, Some(LONG_GRACE), rot).is_err()
            || ups.iter().any(Result::is_err)
        {
            return;
        }
        // Before any restart: the running daemon has every acknowledged
        // write (a loss found only after the restart is the log's).
        let (id, acked) = {
            let st = slot.lock().unwrap();
            (st.id.unwrap(), st.acked.clone())
        };
        let Ok(got) = c.get("crash", id).await else {
            return;
        };
        let got = got.expect("a session just rotated is missing from memory");
        for attr in acked.keys() {
            assert!(
                got.attr(attr).is_some(),
                "in memory, before any restart: acknowledged {attr} missing after \
                 a rotation raced by writes through the old id (found {:?})",
                got.attrs
            );
        }
        slot.lock().unwrap().seen_in_memory = true;
    }
}

/// Totals of one check pass.
#[derive(Debug, Default, Clone, Copy)]
struct Checked {
    sessions: usize,
    acked_updates: i64,
    rotations: usize,
    in_doubt_resolved: usize,
}

/// Checks one session after a restart: it is where the acknowledged history
/// says, with every attribute at least at its acknowledged value, and no id it
/// was rotated away from serves a session of its own. Raises the acknowledged
/// values to what was found (a write may land and the daemon die before the ack).
async fn check_slot(c: &Client, slot: &SharedSlot, round: usize) -> Checked {
    let mut out = Checked {
        sessions: 1,
        ..Checked::default()
    };
    let (id, owner, in_doubt) = {
        let mut st = slot.lock().unwrap();
        // Grace aliases are logged and survive the restart: writes through
        // the old id go on working.
        (
            st.id.unwrap(),
            st.owner.clone(),
            std::mem::take(&mut st.in_doubt),
        )
    };
    let mut got = c.get("crash", id).await.unwrap();
    if let Some(s) = got.as_ref().filter(|s| in_doubt && s.id != id) {
        // The unacknowledged rotation happened, with a grace: its alias
        // survived the restart and resolves to the new session.
        let mut st = slot.lock().unwrap();
        st.old.push((id, true));
        st.id = Some(s.id);
        out.in_doubt_resolved = 1;
    }
    if in_doubt && got.is_none() {
        // The unacknowledged rotation happened: find the session by owner.
        let page = c.list_by_owner("crash", &owner, None, 10).await.unwrap();
        assert_eq!(
            page.sessions.len(),
            1,
            "round {round}: after an unacknowledged rotation the owner has {} sessions",
            page.sessions.len()
        );
        let new = page.sessions[0].id;
        assert_ne!(new, id);
        {
            let mut st = slot.lock().unwrap();
            st.old.push((id, true));
            st.id = Some(new);
            out.in_doubt_resolved = 1;
        }
        got = c.get("crash", new).await.unwrap();
    }
    let got = got.unwrap_or_else(|| panic!("round {round}: an acknowledged session is missing"));
    let (new, old) = {
        let mut st = slot.lock().unwrap();
        assert_eq!(
            Some(got.id),
            st.id,
            "round {round}: get answered another id"
        );
        let rotations = st.old.len();
        let seen = st.seen_in_memory;
        for (attr, value) in st.acked.iter_mut() {
            let Some(Value::Int(n)) = got.attr(attr) else {
                panic!(
                    "round {round}: acknowledged attribute {attr}={value} missing \
                     (session rotated {rotations} times; attributes found {:?}; \
                     seen complete in memory before the kill: {seen})",
                    got.attrs
                )
            };
            assert!(
                *n >= *value,
                "round {round}: {attr}={n} older than acknowledged {value} \
                 (session rotated {rotations} times)"
            );
            *value = *n;
            out.acked_updates += *n;
        }
        (got.id, st.old.clone())
    };
    for (old_id, graced) in old {
        // After a rotation the old id is never a session of its own again:
        // within a grace period it may still resolve to the rotated session.
        match c.get("crash", old_id).await.unwrap() {
            None => {}
            Some(s) => {
                assert!(
                    graced,
                    "round {round}: an id rotated without grace came back"
                );
                assert_eq!(
                    s.id, new,
                    "round {round}: an id rotated away came back as its own session"
                );
            }
        }
        out.rotations += 1;
    }
    out
}

/// The crash loop's daemon: every acknowledged write synced, and several
/// worker threads even on a small machine (the default is one per core but
/// one), so that writes through an old id really run while its rotation does.
const CRASH_ARGS: &[&str] = &["--fsync", "always", "--worker-threads", "4"];

/// Checks every session so far, a few at a time.
async fn check_all(c: &Client, slots: &Mutex<Vec<SharedSlot>>, round: usize) -> Checked {
    use futures::StreamExt;
    let all: Vec<SharedSlot> = slots.lock().unwrap().clone();
    futures::stream::iter(all.iter().map(|s| check_slot(c, s, round)))
        .buffer_unordered(32)
        .fold(Checked::default(), |mut t, c| async move {
            t.sessions += c.sessions;
            t.acked_updates += c.acked_updates;
            t.rotations += c.rotations;
            t.in_doubt_resolved += c.in_doubt_resolved;
            t
        })
        .await
}

/// SIGKILL the daemon at a random moment while many tasks write with
/// `--fsync always`: sessions are created, updated by two writers at once
/// (one often through the id a rotation left behind), rotated with a long, a
/// short or no grace period, and rotations are raced by writes through the old
/// id. After each restart every acknowledged write is there (at least at its
/// last acknowledged value, under the id of the last acknowledged rotation),
/// and no rotated-away id serves a session of its own.
/// `SESSIOND_CRASH_ROUNDS` sets the number of rounds (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_no_acknowledged_write() {
    let rounds: usize = std::env::var("SESSIOND_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = seed();
    eprintln!("crash loop seed {seed}");
    let mut rng = seed;
    let slots: Arc<Mutex<Vec<SharedSlot>>> = Arc::default();
    let mut checked = Checked::default();
    let mut daemon = DaemonProcess::start(daemon_bin!(), CRASH_ARGS).unwrap();
    for round in 0..rounds {
        let c = client(&daemon).await;
        // Everything acknowledged so far must have survived the last crash.
        let pass = check_all(&c, &slots, round).await;
        checked.rotations += pass.rotations;
        checked.in_doubt_resolved += pass.in_doubt_resolved;
        let mut tasks = Vec::new();
        for t in 0..16 {
            let (c, slots) = (c.clone(), Arc::clone(&slots));
            let owner = format!("r{round}-t{t}-{}", xorshift(&mut rng));
            let task_rng = xorshift(&mut rng) | 1;
            tasks.push(if t < 12 {
                tokio::spawn(rotating_writer(c, slots, owner, task_rng))
            } else {
                tokio::spawn(race_writer(c, slots, owner))
            });
        }
        tokio::time::sleep(Duration::from_millis(50 + xorshift(&mut rng) % 250)).await;
        daemon.kill();
        for t in tasks {
            t.await.unwrap();
        }
        daemon = daemon.restart(CRASH_ARGS).unwrap();
    }
    let c = client(&daemon).await;
    let last = check_all(&c, &slots, rounds).await;
    checked.rotations += last.rotations;
    checked.in_doubt_resolved += last.in_doubt_resolved;
    let rotated = slots
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.lock().unwrap().old.len())
        .sum::<usize>();
    eprintln!(
        "{rounds} crash rounds, {} sessions, {} acknowledged updates, {rotated} rotations \
         ({} old-id checks, {} unacknowledged rotations resolved), seed {seed}",
        last.sessions, last.acked_updates, checked.rotations, checked.in_doubt_resolved
    );
    assert!(last.sessions >= 16, "the load never got going");
    assert!(last.acked_updates > 0, "no update was ever acknowledged");
    assert!(rotated > 0, "no rotation was ever acknowledged");
}

/// `--in-memory` keeps nothing on disk: the data dir stays empty under
/// writes and a graceful stop, and a restart starts empty.
#[tokio::test]
async fn in_memory_writes_nothing_and_a_restart_starts_empty() {
    let daemon =
        DaemonProcess::start(daemon_bin!(), &["--in-memory", "--fsync", "always"]).unwrap();
    let c = client(&daemon).await;
    let s = c
        .create("app", CreateOptions::new().owner("alice").attr("k", "v"))
        .await
        .unwrap();
    c.update("app", s.id, UpdateOptions::new().set("n", 1i64))
        .await
        .unwrap();
    assert_eq!(
        c.get("app", s.id).await.unwrap().unwrap().attr("n"),
        Some(&Value::Int(1))
    );
    drop(c);
    let mut daemon = daemon;
    assert!(daemon
        .signal_and_wait("TERM", Duration::from_secs(10))
        .unwrap()
        .success());
    let files: Vec<_> = std::fs::read_dir(daemon.data_dir()).unwrap().collect();
    assert!(files.is_empty(), "in-memory daemon wrote {files:?}");
    assert!(daemon.logs().contains("in memory only"));
    let daemon = daemon.restart(&["--in-memory"]).unwrap();
    let c = client(&daemon).await;
    assert_eq!(c.get("app", s.id).await.unwrap(), None);
}
