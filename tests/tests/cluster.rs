//! Replicated groups, as real processes over real sockets on loopback:
//! three members elect a leader, replicate, and fail over when the leader is
//! SIGKILLed under write load, losing no acknowledged write; a leader cut
//! off from its majority acknowledges nothing; a whole-group restart keeps
//! everything; membership changes under load lose nothing.
//!
//! The leader-kill test records every increment and read with its
//! invocation and completion times and checks the history for
//! linearizability (`check_linearizable`).
//!
//! `SESSIOND_CLUSTER_ROUNDS` sets the number of leader kills (default 20).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiond_client::{protocol, Client, ClientConfig, CreateOptions, Op, Reply, SessionId};
use sessiond_e2e::{daemon_bin, free_port, DaemonProcess, RawConn};

/// One member: fixed ports (a restarted member keeps its addresses) and
/// its own data dir.
struct Member {
    id: u64,
    client: String,
    raft: String,
    process: Option<DaemonProcess>,
    dir: Option<tempfile::TempDir>,
}

struct Group {
    members: Vec<Member>,
    spec: String,
}

impl Group {
    fn new(n: u64) -> Self {
        let members: Vec<Member> = (1..=n)
            .map(|id| Member {
                id,
                client: format!("127.0.0.1:{}", free_port()),
                raft: format!("127.0.0.1:{}", free_port()),
                process: None,
                dir: Some(tempfile::tempdir().unwrap()),
            })
            .collect();
        let spec = members
            .iter()
            .map(|m| format!("{}={}", m.id, m.raft))
            .collect::<Vec<_>>()
            .join(",");
        let mut g = Self { members, spec };
        for i in 0..g.members.len() {
            g.start(i, false);
        }
        g
    }

    fn start(&mut self, i: usize, join: bool) {
        let spec = if join {
            format!("{}={}", self.members[i].id, self.members[i].raft)
        } else {
            self.spec.clone()
        };
        let m = &mut self.members[i];
        let id = m.id.to_string();
        let mut args = vec![
            "--listen",
            &m.client,
            "--node-id",
            &id,
            "--cluster",
            &spec,
            "--fsync",
            "always",
            "--cluster-write-timeout",
            "2s",
        ];
        if join {
            args.push("--cluster-join");
        }
        let dir = match m.process.take() {
            Some(mut p) => {
                p.kill();
                m.dir.take()
            }
            None => m.dir.take(),
        };
        let p = match dir {
            Some(d) => DaemonProcess::start_in(daemon_bin!(), d, &args, &[("RUST_LOG", "info")]),
            None => unreachable!("a member always has its dir"),
        }
        .unwrap();
        m.process = Some(p);
    }

    /// SIGKILLs member `i`, keeping its data dir for a restart.
    fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut p) = m.process.take() {
            p.kill();
            // The TempDir moves out of the process handle so it survives.
            m.dir = Some(p.take_data_dir().unwrap());
        }
    }

    fn addrs(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn client(&self) -> Client {
        Client::connect_with(
            ClientConfig::new(self.addrs())
                .connections(2)
                .request_timeout(Duration::from_secs(3)),
        )
        .await
        .unwrap()
    }

    /// The leader's index, as a live member reports it (waits for one).
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for m in self.members.iter().filter(|m| m.process.is_some()) {
                let Ok(c) = Client::connect_with(
                    ClientConfig::new(m.client.clone()).request_timeout(Duration::from_secs(1)),
                )
                .await
                else {
                    continue;
                };
                if let Ok(s) = c.cluster_status().await {
                    if let Some(l) = s.leader_id {
                        let i = self.members.iter().position(|m| m.id == l).unwrap();
                        if self.members[i].process.is_some() {
                            return i;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the leader has replicated to every member up to (nearly:
    /// writes go on) what it has committed: the group is whole again.
    async fn caught_up(&self) -> Duration {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        loop {
            let l = self.leader().await;
            if let Ok(c) = Client::connect_with(
                ClientConfig::new(self.members[l].client.clone())
                    .request_timeout(Duration::from_secs(1)),
            )
            .await
            {
                if let Ok(s) = c.cluster_status().await {
                    let whole = s.leader_id == Some(s.node_id)
                        && s.members.iter().all(|m| {
                            m.node_id == s.node_id
                                || m.matched_index.is_some_and(|i| i + 64 >= s.commit_index)
                        });
                    if whole {
                        return started.elapsed();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the group was not whole again 20 s after a restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Acknowledged counter values per session: the highest value an `incr`
/// was acknowledged with.
type Acked = Arc<Mutex<HashMap<SessionId, i64>>>;

/// One operation of the recorded history.
#[derive(Debug, Clone, Copy)]
struct Event {
    key: SessionId,
    /// `true`: an increment by 1 answered with the new value; `false`: a read.
    incr: bool,
    invoked: Instant,
    /// `None`: no answer (refused, timed out, indeterminate).
    done: Option<(Instant, i64)>,
}

type History = Arc<Mutex<Vec<Event>>>;

/// Checks a history of increments and reads on counters for
/// linearizability. Increments by 1 that answer the new value pin their own
/// place in any linearization, so the check is exact and linear-time rather
/// than a search (WGL): per key, the acknowledged increments' values are
/// distinct; one that finished before another began has the smaller value; a
/// read sees at least every increment acknowledged before it began and at
/// most every increment begun before it ended (unanswered ones may or may not
/// have taken effect).
fn check_linearizable(history: &[Event]) {
    let mut by_key: HashMap<SessionId, Vec<Event>> = HashMap::new();
    for e in history {
        by_key.entry(e.key).or_default().push(*e);
    }
    for (key, events) in by_key {
        let mut incrs: Vec<(Instant, Instant, i64)> = events
            .iter()
            .filter(|e| e.incr)
            .filter_map(|e| e.done.map(|(t, v)| (e.invoked, t, v)))
            .collect();
        let mut values: Vec<i64> = incrs.iter().map(|i| i.2).collect();
        values.sort_unstable();
        let before = values.len();
        values.dedup();
        assert_eq!(
            before,
            values.len(),
            "{key}: two increments answered the same value"
        );
        incrs.sort_by_key(|i| i.1);
        // Real-time order: an increment that finished before another began
        // has the smaller value (checked against the largest value finished
        // before each one began).
        let mut by_start = incrs.clone();
        by_start.sort_by_key(|i| i.0);
        let mut finished = 0;
        let mut max_done = i64::MIN;
        for (start, _, value) in &by_start {
            while finished < incrs.len() && incrs[finished].1 < *start {
                max_done = max_done.max(incrs[finished].2);
                finished += 1;
            }
            assert!(
                *value > max_done,
                "{key}: increment answered {value} after one answered {max_done} had finished"
            );
        }
        let invoked: Vec<Instant> = {
            let mut v: Vec<Instant> = events
                .iter()
                .filter(|e| e.incr)
                .map(|e| e.invoked)
                .collect();
            v.sort_unstable();
            v
        };
        for read in events.iter().filter(|e| !e.incr) {
            let Some((end, seen)) = read.done else {
                continue;
            };
            let floor = incrs
                .iter()
                .filter(|i| i.1 < read.invoked)
                .map(|i| i.2)
                .max()
                .unwrap_or(0);
            let ceiling = i64::try_from(invoked.partition_point(|t| *t < end)).unwrap();
            assert!(
                seen >= floor && seen <= ceiling,
                "{key}: a read saw {seen}, outside [{floor}, {ceiling}]"
            );
        }
    }
}

/// Writer (and, with a history, reader) tasks under way.
struct Writers {
    acked: Acked,
    last_ack: Arc<Mutex<(Instant, Instant)>>,
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(client: &Client, ids: &[SessionId], tasks: usize, history: Option<&History>) -> Self {
        let acked: Acked = Arc::default();
        let last_ack = Arc::new(Mutex::new((Instant::now(), Instant::now())));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = load_recorded(client, ids, tasks, &acked, &last_ack, &stop, history);
        Self {
            acked,
            last_ack,
            stop,
            handles,
        }
    }

    /// Stops the tasks; returns what was acknowledged.
    async fn stop(self) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.unwrap();
        }
        self.acked
    }
}

/// Tasks that increment counters until `stop`; acknowledged values go in
/// `acked`, and (sent, answered) of the latest-sent acknowledged one in `last_ack`. With
/// `history`, every third task reads instead, and every operation is
/// recorded.
fn load_recorded(
    client: &Client,
    ids: &[SessionId],
    tasks: usize,
    acked: &Acked,
    last_ack: &Arc<Mutex<(Instant, Instant)>>,
    stop: &Arc<AtomicBool>,
    history: Option<&History>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|t| {
            let (c, acked, last_ack, stop) = (
                client.clone(),
                Arc::clone(acked),
                Arc::clone(last_ack),
                Arc::clone(stop),
            );
            let history = history.map(Arc::clone);
            let ids = ids.to_vec();
            tokio::spawn(async move {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    let id = ids[n % ids.len()];
                    n += 1;
                    if let Some(h) = &history {
                        if t % 3 == 2 {
                            let invoked = Instant::now();
                            let got = c.get("app", id).await;
                            let done = match got {
                                Ok(Some(s)) => Some((
                                    Instant::now(),
                                    match s.attr("n") {
                                        Some(sessiond_client::Value::Int(v)) => *v,
                                        _ => 0,
                                    },
                                )),
                                _ => None,
                            };
                            h.lock().unwrap().push(Event {
                                key: id,
                                incr: false,
                                invoked,
                                done,
                            });
                            if done.is_none() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            continue;
                        }
                    }
                    let invoked = Instant::now();
                    let result = c.incr("app", id, "n", 1).await;
                    if let Some(h) = &history {
                        let done = result.as_ref().ok().map(|r| (Instant::now(), r.value));
                        h.lock().unwrap().push(Event {
                            key: id,
                            incr: true,
                            invoked,
                            done,
                        });
                    }
                    match result {
                        Ok(r) => {
                            let mut a = acked.lock().unwrap();
                            let e = a.entry(id).or_insert(0);
                            *e = (*e).max(r.value);
                            let mut last = last_ack.lock().unwrap();
                            if invoked > last.0 {
                                *last = (invoked, Instant::now());
                            }
                        }
                        // Refused, timed out or indeterminate: not
                        // acknowledged (it may still have been applied).
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect()
}

async fn check_acked(client: &Client, acked: &Acked) {
    let acked = acked.lock().unwrap().clone();
    for (id, value) in acked {
        let s = client
            .get("app", id)
            .await
            .unwrap()
            .expect("an acknowledged session is present");
        let stored = match s.attr("n") {
            Some(sessiond_client::Value::Int(v)) => *v,
            other => panic!("counter is {other:?}"),
        };
        assert!(
            stored >= value,
            "acknowledged {value}, found {stored}: an acknowledged write was lost"
        );
    }
}

async fn sessions(client: &Client, n: usize) -> Vec<SessionId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(client.create("app", CreateOptions::new()).await.unwrap().id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let rounds: usize = std::env::var("SESSIOND_CLUSTER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut group = Group::new(3);
    let client = group.client().await;
    let ids = sessions(&client, 16).await;
    let history: History = Arc::default();
    let writers = Writers::start(&client, &ids, 18, Some(&history));
    let last_ack = Arc::clone(&writers.last_ack);
    let mut failovers = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leader = group.leader().await;
        let killed_at = Instant::now();
        group.kill(leader);
        // The first acknowledgement of a write sent after the kill (one
        // answered just after it may have been committed before).
        let deadline = killed_at + Duration::from_secs(20);
        let took = loop {
            let last = *last_ack.lock().unwrap();
            if last.0 > killed_at {
                break last.1 - killed_at;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no write acknowledged 20 s after the kill"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // When the surviving members agreed on a new leader (as one reports).
        let elected = group.leader().await;
        eprintln!(
            "round {round}: killed member {}, member {} leads; first acknowledged write after {took:?}",
            group.members[leader].id, group.members[elected].id
        );
        failovers.push(took);
        group.start(leader, false);
        // The next kill is of one machine of a whole group: the restarted
        // member has caught up (killing the leader before that is losing a
        // second machine, for the entries only the leader and it hold).
        let whole = group.caught_up().await;
        eprintln!("round {round}: the restarted member caught up in {whole:?}");
    }
    let acked = writers.stop().await;
    check_acked(&client, &acked).await;
    let history = history.lock().unwrap().clone();
    check_linearizable(&history);
    failovers.sort();
    let total: i64 = acked.lock().unwrap().values().sum();
    eprintln!(
        "{rounds} leader kills: failover (kill to first acknowledged write) median {:?}, max {:?}; {total} acknowledged increments checked; {} operations checked for linearizability",
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1],
        history.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_its_majority_acknowledges_nothing_and_serves_no_read() {
    let group = Group::new(3);
    let client = group.client().await;
    let id = client.create("app", CreateOptions::new()).await.unwrap().id;
    let signal = |pids: &[u32], sig: &str| {
        for pid in pids {
            assert!(std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .unwrap()
                .success());
        }
    };
    // Freeze both followers: the leader is cut off from its majority. The
    // member named leader may no longer lead by the freeze (a member's view
    // can be stale, and a loaded machine delays heartbeats into elections):
    // it is asked itself before and after the freeze (its first status call
    // also learns the others' client addresses, so the second is answered
    // locally), and the set-up starts again unless it led throughout.
    let mut attempt = 0;
    let (leader, followers) = loop {
        attempt += 1;
        assert!(attempt <= 10, "the lead never held still");
        let leader = group.leader().await;
        let me = Some(group.members[leader].id);
        let asked = Client::connect_with(
            ClientConfig::new(group.members[leader].client.clone())
                .request_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        let before = match asked.cluster_status().await {
            Ok(b) if b.leader_id == me => b,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let followers: Vec<u32> = (0..3)
            .filter(|i| *i != leader)
            .map(|i| group.members[i].process.as_ref().unwrap().pid())
            .collect();
        signal(&followers, "-STOP");
        match asked.cluster_status().await {
            Ok(after) if after.leader_id == me && after.term == before.term => {
                break (leader, followers);
            }
            _ => {
                signal(&followers, "-CONT");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let alone = Client::connect_with(
        ClientConfig::new(group.members[leader].client.clone())
            .request_timeout(Duration::from_secs(5))
            .read_retries(0),
    )
    .await
    .unwrap();
    let write = alone.incr("app", id, "n", 1).await;
    let read = alone.get("app", id).await;
    signal(&followers, "-CONT");
    let err = write.expect_err("a write acknowledged without a majority");
    assert_eq!(
        err.code(),
        Some(sessiond_client::ErrorCode::Indeterminate),
        "{err}"
    );
    let err = read.expect_err("a read served without a majority");
    assert_eq!(
        err.code(),
        Some(sessiond_client::ErrorCode::Unavailable),
        "{err}"
    );
    // Healed: the group serves again, and the indeterminate increment was
    // either applied once or not at all.
    let s = client.get("app", id).await.unwrap().unwrap();
    let n = match s.attr("n") {
        Some(sessiond_client::Value::Int(v)) => *v,
        None => 0,
        other => panic!("{other:?}"),
    };
    assert!(n <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_group_restart_keeps_every_acknowledged_write() {
    let mut group = Group::new(3);
    let client = group.client().await;
    let ids = sessions(&client, 8).await;
    let writers = Writers::start(&client, &ids, 8, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // All three die at once, mid-load.
    for i in 0..3 {
        group.kill(i);
    }
    let acked = writers.stop().await;
    for i in 0..3 {
        group.start(i, false);
    }
    group.leader().await;
    let client = group.client().await;
    check_acked(&client, &acked).await;
    assert!(!acked.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_added_and_removed_under_load_lose_nothing() {
    let mut group = Group::new(3);
    // A fourth member, started to join (not in the initial membership).
    group.members.push(Member {
        id: 4,
        client: format!("127.0.0.1:{}", free_port()),
        raft: format!("127.0.0.1:{}", free_port()),
        process: None,
        dir: Some(tempfile::tempdir().unwrap()),
    });
    group.start(3, true);
    let client = group.client().await;
    let ids = sessions(&client, 8).await;
    let writers = Writers::start(&client, &ids, 8, None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let raft4 = group.members[3].raft.clone();
    let status = client.cluster_add_node(4, &raft4).await.unwrap();
    assert!(
        status.members.iter().any(|m| m.node_id == 4 && m.voter),
        "{status:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Remove a member that is not the leader, then stop it.
    let leader = group.leader().await;
    let gone = (0..3).find(|i| *i != leader).unwrap();
    let gone_id = group.members[gone].id;
    let status = client.cluster_remove_node(gone_id).await.unwrap();
    assert!(
        !status
            .members
            .iter()
            .any(|m| m.node_id == gone_id && m.voter),
        "{status:?}"
    );
    group.kill(gone);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = writers.stop().await;
    check_acked(&client, &acked).await;
    // The new member holds the data: with the old leader gone it can lead.
    let leader = group.leader().await;
    group.kill(leader);
    group.leader().await;
    check_acked(&client, &acked).await;
}

#[test]
fn the_history_checker_finds_what_is_not_linearizable() {
    let key = SessionId::new_v4();
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let incr = |a, b, v| Event {
        key,
        incr: true,
        invoked: at(a),
        done: Some((at(b), v)),
    };
    let read = |a, b, v| Event {
        key,
        incr: false,
        invoked: at(a),
        done: Some((at(b), v)),
    };
    let ok = vec![
        incr(0, 10, 1),
        incr(5, 20, 2),
        read(21, 22, 2),
        incr(30, 40, 3),
    ];
    check_linearizable(&ok);
    let bad = [
        // Two increments answered the same value (one was lost).
        vec![incr(0, 10, 1), incr(20, 30, 1)],
        // A later increment answered a smaller value.
        vec![incr(0, 10, 2), incr(20, 30, 1)],
        // A read missed an increment acknowledged before it began.
        vec![incr(0, 10, 1), read(20, 30, 0)],
        // A read saw an increment not yet begun.
        vec![read(0, 10, 1), incr(20, 30, 1)],
    ];
    for history in bad {
        let caught = std::panic::catch_unwind(|| check_linearizable(&history));
        assert!(caught.is_err(), "not caught: {history:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_on_the_inter_node_port_is_cut_off_and_the_group_serves_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let group = Group::new(3);
    let client = group.client().await;
    let raft = group.members[0].raft.clone();
    // A length far over the hello limit: closed without reading it.
    let mut s = tokio::net::TcpStream::connect(&raft).await.unwrap();
    s.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    // A request before hello: closed too.
    let mut s = tokio::net::TcpStream::connect(&raft).await.unwrap();
    s.write_all(&[1, 0, 0, 0, 4]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    // A connection that stays silent holds nothing for long, and meanwhile
    // the group goes on.
    let _silent = tokio::net::TcpStream::connect(&raft).await.unwrap();
    let s = client.create("app", CreateOptions::new()).await.unwrap();
    assert!(client.get("app", s.id).await.unwrap().is_some());
}

fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn get_stale(id: SessionId, max_staleness_ms: u64) -> Op {
    Op::GetStale(protocol::GetStale {
        namespace: "app".into(),
        id,
        max_staleness_ms,
    })
}

/// A follower read is answered by the follower with a bound it can keep (an
/// acknowledged write older than the bound is in the answer); a follower
/// that hears from no leader sees its bound grow and refuses a read that
/// asks for less; a linearizable read is never served by a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_answer_with_a_staleness_bound_they_keep() {
    let group = Group::new(3);
    let client = group.client().await;
    let id = client.create("app", CreateOptions::new()).await.unwrap().id;
    client.incr("app", id, "n", 1).await.unwrap();
    let acked = Instant::now();
    let leader = group.leader().await;
    let follower = (leader + 1) % 3;
    let mut raw = RawConn::connect(&group.members[follower].client)
        .await
        .unwrap();
    // Until the group has settled (an election may follow the first), the
    // follower may know no leader and refuse.
    let settled = Instant::now() + Duration::from_secs(10);
    while !matches!(
        raw.call(get_stale(id, 1000)).await.unwrap(),
        Reply::StaleSession(_)
    ) {
        assert!(Instant::now() < settled, "the follower never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut served = 0;
    for _ in 0..20 {
        let asked = Instant::now();
        // A follower's bound is the leader's last majority acknowledgement
        // (up to one of openraft's heartbeat rounds) plus the time since it heard
        // the leader (up to another).
        match raw.call(get_stale(id, 1000)).await.unwrap() {
            Reply::StaleSession(r) => {
                served += 1;
                assert!(r.staleness_ms <= 1000, "{r:?}");
                let s = r.session.expect("the session is there");
                // Every write acknowledged more than the bound before the
                // answer is in it.
                if u128::from(r.staleness_ms) < (asked - acked).as_millis() {
                    assert_eq!(s.attr("n"), Some(&sessiond_client::Value::Int(1)));
                }
            }
            // The follower may briefly lack a fresh enough heartbeat.
            Reply::NotLeader(_) => {}
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(served >= 15, "the follower served {served} of 20 reads");
    // A linearizable read is not the follower's to answer.
    let get = Op::Get(protocol::Get {
        namespace: "app".into(),
        id,
        touch: false,
    });
    assert!(
        matches!(raw.call(get).await.unwrap(), Reply::NotLeader(_)),
        "a follower answered a linearizable read"
    );
    // Freeze the other two: the follower hears from no one.
    let others: Vec<u32> = (0..3)
        .filter(|i| *i != follower)
        .map(|i| group.members[i].process.as_ref().unwrap().pid())
        .collect();
    for pid in &others {
        signal(*pid, "-STOP");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let loose = raw.call(get_stale(id, 60_000)).await;
    let tight = raw.call(get_stale(id, 500)).await;
    for pid in &others {
        signal(*pid, "-CONT");
    }
    match loose.unwrap() {
        Reply::StaleSession(r) => {
            assert!(r.staleness_ms >= 1200, "{r:?}");
            assert!(r.session.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(tight.unwrap(), Reply::NotLeader(_)),
        "a follower cut off for 1.2 s promised 500 ms"
    );
    // Healed: the client API reads through whichever member it can.
    let r = client
        .get_stale("app", id, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(r.session.is_some());
}
