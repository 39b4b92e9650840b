//! The compose deployment (`deploy/compose.cluster.yaml`) run for real where
//! this machine has Docker: three members as containers on their own
//! network elect a leader and report healthy (the file's healthcheck); the
//! leader's container is SIGKILLed; the other two go on acknowledging writes
//! and still hold what was written before; the killed member comes back and
//! follows the leader.
//!
//! No image can be pulled here, so the image is built `FROM scratch` out of
//! this build's binaries and the shared libraries they load, with the
//! runtime settings (ENV, VOLUME, EXPOSE, ENTRYPOINT) of `deploy/Dockerfile`'s
//! final stage. The compose file is used as written except for the image
//! name, the published port (the host's 7379 may be taken) and the restart
//! policy (the test restarts the member itself). Skipped, saying so, where
//! Docker or Compose is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_yaml::Value;

const MEMBERS: [&str; 3] = ["sessiond-1", "sessiond-2", "sessiond-3"];
const ALL: &str = "sessiond-1:7379,sessiond-2:7379,sessiond-3:7379";

fn run(cmd: &[String], args: &[&str]) -> Output {
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} {args:?}: {e}"))
}

fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `docker compose` or `docker-compose`, whichever is here.
fn compose_command() -> Option<Vec<String>> {
    if works("docker", &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if works("docker-compose", &["version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// The project, torn down (containers, network, volumes, image) when dropped.
struct Project {
    compose: Vec<String>,
    file: PathBuf,
    name: String,
    image: String,
    _dir: tempfile::TempDir,
}

impl Project {
    fn cmd(&self, args: &[&str]) -> Output {
        let mut full = vec!["-p", &self.name, "-f", self.file.to_str().unwrap()];
        full.extend_from_slice(args);
        run(&self.compose, &full)
    }

    /// `sessionctl` inside `member`'s container.
    fn ctl(&self, member: &str, args: &[&str]) -> Output {
        let mut full = vec!["exec", "-T", member, "sessionctl"];
        full.extend_from_slice(args);
        self.cmd(&full)
    }

    /// The leader as `member` sees it.
    fn leader_seen_by(&self, member: &str) -> Option<u64> {
        let out = self.ctl(
            member,
            &["--addr", "127.0.0.1:7379", "--json", "cluster", "status"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get("leader")?.as_u64()
    }

    fn wait_for<T>(&self, what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = f() {
                return t;
            }
            if Instant::now() > deadline {
                let logs = self.cmd(&["logs", "--no-color", "--tail", "30"]);
                panic!(
                    "{what}: not within {within:?}\n{}",
                    String::from_utf8_lossy(&logs.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn health(&self, member: &str) -> String {
        let ps = self.cmd(&["ps", "-q", member]);
        let id = String::from_utf8_lossy(&ps.stdout).trim().to_owned();
        let out = run(
            &["docker".to_owned()],
            &["inspect", "--format", "{{.State.Health.Status}}", &id],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.cmd(&["down", "-v", "--remove-orphans", "-t", "1"]);
        let _ = run(&["docker".to_owned()], &["rmi", "-f", &self.image]);
    }
}

/// Copies `bin` and every shared library it loads under `root`.
fn copy_with_libraries(bin: &Path, to: &str, root: &Path) {
    let dest = root.join(to.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(bin, &dest).unwrap();
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') && word.contains(".so") {
            let lib = root.join(word.trim_start_matches('/'));
            std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
            // Follows symbolic links: the image gets the files themselves.
            std::fs::copy(word, &lib).unwrap();
        }
    }
}

/// The runtime settings of the Dockerfile's final stage.
fn runtime_lines(dockerfile: &str) -> Vec<&str> {
    let last_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map_or(dockerfile, |(_, s)| s);
    last_stage
        .lines()
        .filter(|l| {
            ["ENV ", "VOLUME ", "EXPOSE ", "ENTRYPOINT ", "CMD "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect()
}

fn build(compose: Vec<String>) -> Project {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    copy_with_libraries(
        Path::new(env!("CARGO_BIN_EXE_e2e-sessiond")),
        "/usr/local/bin/sessiond",
        &root,
    );
    copy_with_libraries(
        Path::new(env!("CARGO_BIN_EXE_e2e-sessionctl")),
        "/usr/local/bin/sessionctl",
        &root,
    );
    std::fs::create_dir_all(root.join("etc/sessiond")).unwrap();
    std::fs::copy(
        deploy.join("sessiond.toml"),
        root.join("etc/sessiond/sessiond.toml"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("var/lib/sessiond")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let dockerfile = std::fs::read_to_string(deploy.join("Dockerfile")).unwrap();
    let runtime = runtime_lines(&dockerfile);
    assert!(
        runtime.iter().any(|l| l.starts_with("ENTRYPOINT")),
        "deploy/Dockerfile's final stage has no ENTRYPOINT"
    );
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY root/ /\n{}\n", runtime.join("\n")),
    )
    .unwrap();
    let name = format!("sessiond-e2e-{}", std::process::id());
    let image = format!("{name}:test");
    let built = run(
        &["docker".to_owned()],
        &["build", "-q", "-t", &image, dir.path().to_str().unwrap()],
    );
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let mut doc: Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy.join("compose.cluster.yaml")).unwrap(),
    )
    .unwrap();
    doc.apply_merge().unwrap();
    let top = doc.as_mapping_mut().unwrap();
    top.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
    for (_, svc) in top
        .get_mut("services")
        .and_then(Value::as_mapping_mut)
        .unwrap()
        .iter_mut()
    {
        let svc = svc.as_mapping_mut().unwrap();
        svc.insert("image".into(), image.clone().into());
        svc.remove("ports");
        svc.remove("restart");
    }
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, serde_yaml::to_string(&doc).unwrap()).unwrap();
    Project {
        compose,
        file,
        name,
        image,
        _dir: dir,
    }
}

#[test]
fn the_compose_group_keeps_serving_when_a_member_is_killed() {
    if !works("docker", &["info"]) {
        eprintln!("skipped: no Docker engine here");
        return;
    }
    let Some(compose) = compose_command() else {
        eprintln!("skipped: no docker compose / docker-compose here");
        return;
    };
    let p = build(compose);
    let up = p.cmd(&["up", "-d"]);
    assert!(
        up.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    let leader = p.wait_for("a leader", Duration::from_secs(60), || {
        p.leader_seen_by("sessiond-1")
    });
    // The file's healthcheck (`sessionctl cluster status`) passes on each.
    p.wait_for("every member healthy", Duration::from_secs(60), || {
        MEMBERS
            .iter()
            .all(|m| p.health(m) == "healthy")
            .then_some(())
    });

    let created = p.ctl(
        "sessiond-1",
        &[
            "--addr",
            ALL,
            "--json",
            "create",
            "-n",
            "app",
            "--idle-ttl",
            "1h",
            "--attr",
            "user=ada",
        ],
    );
    assert!(
        created.status.success(),
        "create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let id = created["id"]
        .as_str()
        .expect("create printed an id")
        .to_owned();

    let killed = format!("sessiond-{leader}");
    let kill = p.cmd(&["kill", "-s", "SIGKILL", &killed]);
    assert!(kill.status.success());
    let survivor = MEMBERS.iter().find(|m| **m != killed).unwrap();

    // The two left elect a leader and acknowledge writes (sessionctl retries
    // within its timeout; the test retries a few times past it).
    let new_leader = p.wait_for("a new leader", Duration::from_secs(30), || {
        p.leader_seen_by(survivor).filter(|l| *l != leader)
    });
    p.wait_for(
        "a write acknowledged by the two left",
        Duration::from_secs(30),
        || {
            p.ctl(
                survivor,
                &["--addr", ALL, "create", "-n", "app", "--idle-ttl", "1h"],
            )
            .status
            .success()
            .then_some(())
        },
    );
    let got = p.ctl(
        survivor,
        &["--addr", ALL, "--json", "get", "-n", "app", &id],
    );
    assert!(
        got.status.success(),
        "the session written before the kill: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(String::from_utf8_lossy(&got.stdout).contains("ada"));

    // The killed member comes back and follows.
    let start = p.cmd(&["start", &killed]);
    assert!(start.status.success());
    p.wait_for(
        "the restarted member follows",
        Duration::from_secs(60),
        || (p.leader_seen_by(&killed) == Some(new_leader)).then_some(()),
    );
    eprintln!("member {leader} killed; member {new_leader} leads; the session written before is there; member {leader} is back");
}
