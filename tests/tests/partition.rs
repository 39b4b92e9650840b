//! Partitions cut for real: each member of a three-member group runs in its
//! own network namespace with two links to the host, one to a bridge the
//! members talk to each other over (the inter-node port) and one to a bridge
//! the test's clients reach them through (the client port). Cutting a
//! member's inter-node link (`ip link set ... down`) partitions it from the
//! group while the test can still talk to it, so what it answers while cut
//! off is seen exactly (a `RawConn`, which does not follow `NotLeader`).
//!
//! - A leader cut off acknowledges nothing (writes `Indeterminate`, reads
//!   refused), the majority elects another and goes on, and when healed the
//!   old leader catches up and nothing it was asked while cut off took
//!   effect.
//! - A follower cut off never serves a linearizable read, its follower-read
//!   bound grows with the time cut off, and it catches up when healed.
//!
//! Needs root and `ip` (iproute2): where namespaces cannot be made (not
//! root, no `ip`), each test says so on stderr and passes without running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use sessiond_client::protocol::{self, Op, Reply};
use sessiond_client::{Client, ClientConfig, CreateOptions, ErrorCode, SessionId, Value};
use sessiond_e2e::{daemon_bin, DaemonProcess, RawConn};

const CLIENT_PORT: u16 = 7379;
const RAFT_PORT: u16 = 7380;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A namespace per member, plus a "switch" namespace whose bridge joins the
/// members' inter-node links (inside a namespace of its own, the host's
/// firewall does not see the bridged traffic), and a point-to-point link
/// from the host to each member for the clients; removed on drop.
struct Net {
    prefix: String,
    /// Second octet of this net's addresses (one per test, so tests in
    /// parallel do not meet).
    octet: u8,
    n: usize,
}

impl Net {
    /// `None` (with a note) where namespaces cannot be made here.
    fn create(tag: u8, n: usize) -> Option<Self> {
        let prefix = format!("sd{}{tag}", std::process::id() % 100_000);
        let net = Self {
            prefix,
            octet: 200 + tag,
            n,
        };
        if !ip(&["netns", "add", &net.switch()]) {
            eprintln!("partition tests skipped: cannot make a network namespace here (needs root and iproute2)");
            return None;
        }
        let sw = net.switch();
        assert!(ip(&[
            "netns", "exec", &sw, "ip", "link", "add", "sw0", "type", "bridge"
        ]));
        assert!(ip(&[
            "netns", "exec", &sw, "ip", "link", "set", "sw0", "up"
        ]));
        for i in 1..=n {
            let ns = net.ns(i);
            assert!(ip(&["netns", "add", &ns]));
            assert!(ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]));
            // Inter-node: member `ep` <-> switch `p{i}` on the bridge.
            let port = format!("p{i}");
            assert!(ip(&[
                "-n", &ns, "link", "add", "ep", "type", "veth", "peer", "name", &port, "netns", &sw
            ]));
            assert!(ip(&["-n", &sw, "link", "set", &port, "master", "sw0"]));
            assert!(ip(&["-n", &sw, "link", "set", &port, "up"]));
            let addr = format!("10.{}.1.{i}/24", net.octet);
            assert!(ip(&["-n", &ns, "addr", "add", &addr, "dev", "ep"]));
            assert!(ip(&["-n", &ns, "link", "set", "ep", "up"]));
            // Clients: host `{prefix}c{i}` <-> member `ec`, a subnet each.
            let host = net.host_link(i);
            assert!(ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "ec", "netns", &ns
            ]));
            let host_addr = format!("10.{}.{}.254/24", net.octet, 10 + i);
            assert!(ip(&["addr", "add", &host_addr, "dev", &host]));
            assert!(ip(&["link", "set", &host, "up"]));
            let member_addr = format!("10.{}.{}.1/24", net.octet, 10 + i);
            assert!(ip(&["-n", &ns, "addr", "add", &member_addr, "dev", "ec"]));
            assert!(ip(&["-n", &ns, "link", "set", "ec", "up"]));
        }
        Some(net)
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    fn host_link(&self, i: usize) -> String {
        format!("{}c{i}", self.prefix)
    }

    fn client_addr(&self, i: usize) -> String {
        format!("10.{}.{}.1:{CLIENT_PORT}", self.octet, 10 + i)
    }

    fn raft_addr(&self, i: usize) -> String {
        format!("10.{}.1.{i}:{RAFT_PORT}", self.octet)
    }

    /// Cuts member `i` off from the other members (its client link stays).
    fn cut(&self, i: usize) {
        assert!(ip(&[
            "-n",
            &self.switch(),
            "link",
            "set",
            &format!("p{i}"),
            "down"
        ]));
    }

    fn heal(&self, i: usize) {
        assert!(ip(&[
            "-n",
            &self.switch(),
            "link",
            "set",
            &format!("p{i}"),
            "up"
        ]));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pairs with an end in it.
        for i in 1..=self.n {
            ip(&["netns", "del", &self.ns(i)]);
            ip(&["link", "del", &self.host_link(i)]);
        }
        ip(&["netns", "del", &self.switch()]);
    }
}

/// A group of three, one member per namespace (index 0 is member 1). The
/// processes are killed (dropped) before the namespaces go.
struct Group {
    _members: Vec<DaemonProcess>,
    net: Net,
}

impl Group {
    fn start(net: Net) -> Self {
        let spec = (1..=net.n)
            .map(|i| format!("{i}={}", net.raft_addr(i)))
            .collect::<Vec<_>>()
            .join(",");
        let members = (1..=net.n)
            .map(|i| {
                let ns = net.ns(i);
                let listen = net.client_addr(i);
                let id = i.to_string();
                DaemonProcess::start_wrapped(
                    &["ip", "netns", "exec", &ns],
                    daemon_bin!(),
                    tempfile::tempdir().unwrap(),
                    &[
                        "--listen",
                        &listen,
                        "--node-id",
                        &id,
                        "--cluster",
                        &spec,
                        "--fsync",
                        "always",
                        "--cluster-write-timeout",
                        "2s",
                        // A private network made for the test.
                        "--insecure-no-auth",
                    ],
                    &[("RUST_LOG", "info")],
                )
                .unwrap()
            })
            .collect();
        Self {
            _members: members,
            net,
        }
    }

    /// A client of the members `of` (0-based), following their leader.
    async fn client(&self, of: &[usize]) -> Client {
        let seeds = of
            .iter()
            .map(|i| self.net.client_addr(i + 1))
            .collect::<Vec<_>>()
            .join(",");
        Client::connect_with(
            ClientConfig::new(seeds)
                .connections(1)
                .request_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap()
    }

    /// The leader as one of `asked` reports it, other than `not` (waits up
    /// to 20 s).
    async fn leader(&self, asked: &[usize], not: Option<usize>) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for &i in asked {
                let Ok(c) = Client::connect_with(
                    ClientConfig::new(self.net.client_addr(i + 1))
                        .request_timeout(Duration::from_secs(1)),
                )
                .await
                else {
                    continue;
                };
                if let Ok(Some(l)) = c.cluster_status().await.map(|s| s.leader_id) {
                    let l = usize::try_from(l).unwrap() - 1;
                    if Some(l) != not {
                        return l;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn raw(&self, i: usize) -> RawConn {
        RawConn::connect(&self.net.client_addr(i + 1))
            .await
            .unwrap()
    }
}

fn incr(id: SessionId) -> Op {
    Op::Incr(protocol::Incr {
        namespace: "app".into(),
        id,
        attr: "n".into(),
        delta: 1,
        window: None,
    })
}

fn get(id: SessionId) -> Op {
    Op::Get(protocol::Get {
        namespace: "app".into(),
        id,
        touch: false,
    })
}

fn get_stale(id: SessionId, max_staleness_ms: u64) -> Op {
    Op::GetStale(protocol::GetStale {
        namespace: "app".into(),
        id,
        max_staleness_ms,
    })
}

fn create_with(id: SessionId) -> Op {
    Op::Create(protocol::Create {
        namespace: "app".into(),
        id: Some(id),
        owner: None,
        ttl: protocol::Ttl {
            idle_ttl_ms: Some(3_600_000),
            max_lifetime_ms: None,
        },
        attrs: protocol::Attrs::new(),
        owner_limit: None,
    })
}

fn counter(s: &sessiond_client::Session) -> i64 {
    match s.attr("n") {
        Some(Value::Int(v)) => *v,
        None => 0,
        other => panic!("{other:?}"),
    }
}

/// Waits until member `i`'s follower read of `id` satisfies `ok` (20 s).
async fn until_caught_up(
    group: &Group,
    i: usize,
    id: SessionId,
    ok: impl Fn(Option<&sessiond_client::Session>) -> bool,
) {
    let mut raw = group.raw(i).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Reply::StaleSession(r)) = raw.call(get_stale(id, 2_000)).await {
            if ok(r.session.as_ref()) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "member {} did not catch up in 20 s",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A group on net `tag` with one session whose counter `n` is at 1, and a
/// client of all members; `None` where namespaces cannot be made.
async fn group_with_a_session(tag: u8) -> Option<(Group, Client, SessionId)> {
    let group = Group::start(Net::create(tag, 3)?);
    let client = group.client(&[0, 1, 2]).await;
    let id = client.create("app", CreateOptions::new()).await.unwrap().id;
    assert_eq!(client.incr("app", id, "n", 1).await.unwrap().value, 1);
    Some((group, client, id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_acknowledges_nothing_and_catches_up_when_healed() {
    let Some((group, client, id)) = group_with_a_session(1).await else {
        return;
    };
    let all = [0, 1, 2];
    let old = group.leader(&all, None).await;
    let mut to_old = group.raw(old).await;
    group.net.cut(old + 1);
    // What the old leader is asked while cut off: never acknowledged.
    let stray = SessionId::new_v4();
    for op in [incr(id), create_with(stray)] {
        match to_old.call(op).await.unwrap() {
            Reply::Error(e) => assert!(
                matches!(e.code, ErrorCode::Indeterminate | ErrorCode::Unavailable),
                "{e:?}"
            ),
            Reply::NotLeader(_) => {}
            other => panic!("a leader cut off from its majority answered {other:?}"),
        }
    }
    match to_old.call(get(id)).await.unwrap() {
        Reply::Error(e) => assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}"),
        Reply::NotLeader(_) => {}
        other => panic!("a leader cut off from its majority served a read: {other:?}"),
    }
    // The majority elects another leader and goes on.
    let rest: Vec<usize> = all.iter().copied().filter(|i| *i != old).collect();
    let new = group.leader(&rest, Some(old)).await;
    assert_ne!(new, old);
    let majority = group.client(&rest).await;
    assert_eq!(majority.incr("app", id, "n", 1).await.unwrap().value, 2);
    let later = majority
        .create("app", CreateOptions::new())
        .await
        .unwrap()
        .id;
    // Healed: the old leader follows the new one and catches up; nothing it
    // was asked while cut off took effect.
    group.net.heal(old + 1);
    until_caught_up(&group, old, id, |s| s.is_some_and(|s| counter(s) == 2)).await;
    until_caught_up(&group, old, later, |s| s.is_some()).await;
    let s = client.get("app", id).await.unwrap().unwrap();
    assert_eq!(
        counter(&s),
        2,
        "an increment from the cut-off leader took effect"
    );
    assert!(
        client.get("app", stray).await.unwrap().is_none(),
        "a create from the cut-off leader took effect"
    );
    assert_eq!(
        group.leader(&all, None).await,
        new,
        "the healed member took over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_serves_no_linearizable_read_and_catches_up() {
    let Some((group, client, id)) = group_with_a_session(2).await else {
        return;
    };
    let all = [0, 1, 2];
    let leader = group.leader(&all, None).await;
    let follower = (leader + 1) % 3;
    let mut raw = group.raw(follower).await;
    until_caught_up(&group, follower, id, |s| s.is_some_and(|s| counter(s) == 1)).await;
    group.net.cut(follower + 1);
    let cut_at = Instant::now();
    // The majority goes on meanwhile.
    for want in 2..=6 {
        assert_eq!(client.incr("app", id, "n", 1).await.unwrap().value, want);
    }
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(cut_at.elapsed())).await;
    assert!(
        matches!(raw.call(get(id)).await.unwrap(), Reply::NotLeader(_)),
        "a cut-off follower answered a linearizable read"
    );
    match raw.call(get_stale(id, 60_000)).await.unwrap() {
        Reply::StaleSession(r) => {
            assert!(r.staleness_ms >= 1500, "{r:?}");
            // Its copy is the one from before the cut.
            assert_eq!(counter(r.session.as_ref().unwrap()), 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(
            raw.call(get_stale(id, 1000)).await.unwrap(),
            Reply::NotLeader(_)
        ),
        "a follower cut off for 1.5 s promised 1 s"
    );
    group.net.heal(follower + 1);
    until_caught_up(&group, follower, id, |s| s.is_some_and(|s| counter(s) == 6)).await;
    assert_eq!(
        counter(&client.get("app", id).await.unwrap().unwrap()),
        6,
        "the group lost an acknowledged increment"
    );
}
