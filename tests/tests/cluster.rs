//! Replicated groups, as real processes over real sockets on loopback:
//! three members elect a leader, replicate, and fail over when the leader is
//! SIGKILLed under write load, losing no acknowledged write; a leader cut
//! off from its majority acknowledges nothing; a whole-group restart keeps
//! everything; membership changes under load lose nothing.
//!
//! `SESSIOND_CLUSTER_ROUNDS` sets the number of leader kills (default 20).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiond_client::{Client, ClientConfig, CreateOptions, SessionId};
use sessiond_e2e::{daemon_bin, DaemonProcess};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
}

/// Acknowledged counter values per session: the highest value an `incr`
/// was acknowledged with.
type Acked = Arc<Mutex<HashMap<SessionId, i64>>>;

/// Tasks that increment counters until `stop`; acknowledged values go in
/// `acked`, and the time of each acknowledgement in `last_ack`.
fn load(
    client: &Client,
    ids: &[SessionId],
    tasks: usize,
    acked: &Acked,
    last_ack: &Arc<Mutex<Instant>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|t| {
            let (c, acked, last_ack, stop) = (
                client.clone(),
                Arc::clone(acked),
                Arc::clone(last_ack),
                Arc::clone(stop),
            );
            let ids = ids.to_vec();
            tokio::spawn(async move {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    let id = ids[n % ids.len()];
                    n += 1;
                    match c.incr("app", id, "n", 1).await {
                        Ok(r) => {
                            let mut a = acked.lock().unwrap();
                            let e = a.entry(id).or_insert(0);
                            *e = (*e).max(r.value);
                            *last_ack.lock().unwrap() = Instant::now();
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
    let acked: Acked = Arc::default();
    let last_ack = Arc::new(Mutex::new(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&client, &ids, 16, &acked, &last_ack, &stop);
    let mut failovers = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leader = group.leader().await;
        let killed_at = Instant::now();
        group.kill(leader);
        // The first acknowledgement after the kill.
        let deadline = killed_at + Duration::from_secs(20);
        let took = loop {
            let last = *last_ack.lock().unwrap();
            if last > killed_at {
                break last - killed_at;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no write acknowledged 20 s after the kill"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        failovers.push(took);
        group.start(leader, false);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    check_acked(&client, &acked).await;
    failovers.sort();
    let total: i64 = acked.lock().unwrap().values().sum();
    eprintln!(
        "{rounds} leader kills: failover (kill to first acknowledged write) median {:?}, max {:?}; {total} acknowledged increments checked",
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_its_majority_acknowledges_nothing_and_serves_no_read() {
    let group = Group::new(3);
    let client = group.client().await;
    let id = client.create("app", CreateOptions::new()).await.unwrap().id;
    let leader = group.leader().await;
    // Freeze both followers: the leader is cut off from its majority.
    let followers: Vec<u32> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| group.members[i].process.as_ref().unwrap().pid())
        .collect();
    for pid in &followers {
        assert!(std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap()
            .success());
    }
    let alone = Client::connect_with(
        ClientConfig::new(group.members[leader].client.clone())
            .request_timeout(Duration::from_secs(5))
            .read_retries(0),
    )
    .await
    .unwrap();
    let write = alone.incr("app", id, "n", 1).await;
    let read = alone.get("app", id).await;
    for pid in &followers {
        std::process::Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status()
            .unwrap();
    }
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
    let acked: Acked = Arc::default();
    let last_ack = Arc::new(Mutex::new(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&client, &ids, 8, &acked, &last_ack, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // All three die at once, mid-load.
    for i in 0..3 {
        group.kill(i);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
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
    let acked: Acked = Arc::default();
    let last_ack = Arc::new(Mutex::new(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&client, &ids, 8, &acked, &last_ack, &stop);
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
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    check_acked(&client, &acked).await;
    // The new member holds the data: with the old leader gone it can lead.
    let leader = group.leader().await;
    group.kill(leader);
    group.leader().await;
    check_acked(&client, &acked).await;
}
