//! `sessiond-bench compare`: starts sessiond and (where installed) redis-server
//! with matching durability, runs each workload on both, alternating, and
//! prints ops/s and p99 side by side with their ratio; with `--memory`, loads
//! the same number of sessions into fresh instances of each and reports bytes
//! per session.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::{run, Load, Outcome, Workload};

/// Durability matched on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Nothing on disk: sessiond `--in-memory`; Redis without persistence.
    None,
    /// A log the OS flushes when it likes: sessiond `--fsync no`; Redis
    /// `appendfsync no`.
    No,
    /// sessiond `--fsync everysec`; Redis `appendfsync everysec`.
    Everysec,
    /// sessiond `--fsync always`; Redis `appendfsync always`.
    Always,
}

/// `compare` settings.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Durability of both servers.
    #[arg(long, value_enum, default_value = "none")]
    pub durability: Durability,
    /// Workloads to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "get,get-touch,create"
    )]
    pub workloads: Vec<Workload>,
    /// Runs per workload and server (alternating sessiond, Redis, ...); the best counts.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Load settings.
    #[command(flatten)]
    pub load: Load,
    /// The sessiond binary (default: next to this one).
    #[arg(long)]
    pub sessiond: Option<PathBuf>,
    /// sessiond `--worker-threads` (default: its own, one per core but one).
    #[arg(long)]
    pub sessiond_workers: Option<usize>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Also measure memory per session, with this many sessions (e.g. 1000000).
    #[arg(long)]
    pub memory: Option<usize>,
}

/// A server process owned by the comparison; killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_sessiond(args: &CompareArgs) -> anyhow::Result<Server> {
    let bin = match &args.sessiond {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("sessiond"),
    };
    let dir = tempfile::tempdir()?;
    let durability: &[&str] = match args.durability {
        Durability::None => &["--in-memory"],
        Durability::No => &["--fsync", "no"],
        Durability::Everysec => &["--fsync", "everysec"],
        Durability::Always => &["--fsync", "always"],
    };
    let workers = args
        .sessiond_workers
        .map(|n| vec!["--worker-threads".to_owned(), n.to_string()])
        .unwrap_or_default();
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(durability)
        .args(workers)
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with cargo build --release -p sessiond)",
                bin.display()
            )
        })?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("sessiond ready on ") else {
        bail!("sessiond did not start: {line:?}");
    };
    Ok(Server {
        url: format!("sessiond://{addr}"),
        child,
        _dir: dir,
    })
}

fn start_redis(args: &CompareArgs) -> anyhow::Result<Option<Server>> {
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(&args.redis_server);
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ])
    .arg("--dir")
    .arg(dir.path());
    match args.durability {
        Durability::None => cmd.args(["--appendonly", "no"]),
        Durability::No => cmd.args(["--appendonly", "yes", "--appendfsync", "no"]),
        Durability::Everysec => cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]),
        Durability::Always => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
    };
    let child = match cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let server = Server {
        url: format!("redis://127.0.0.1:{port}"),
        child,
        _dir: dir,
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("redis-server did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(server))
}

async fn redis_used_memory(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut con = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut con)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

fn best(outcomes: &[Outcome]) -> Option<&Outcome> {
    outcomes.iter().max_by(|a, b| a.rate().total_cmp(&b.rate()))
}

/// Runs the comparison and prints the tables.
///
/// # Errors
/// A server that cannot start or a failed run.
pub async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let sessiond = start_sessiond(&args)?;
    let redis = start_redis(&args)?;
    if redis.is_none() {
        eprintln!(
            "redis-server not found: measuring sessiond alone (apt-get install redis-server)"
        );
    }
    println!(
        "durability {:?}, concurrency {}, pipeline {}, connections {}, {} B values, {:.0} s per run, best of {}",
        args.durability,
        args.load.concurrency,
        args.load.pipeline,
        args.load.connections,
        args.load.value_size,
        args.load.duration,
        args.rounds
    );
    println!(
        "| workload | sessiond ops/s | redis ops/s | ratio | sessiond p99 us | redis p99 us | generator cores (s / r) | server cores (s / r) | ops per server CPU-second (s / r) | ratio per CPU-second |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let on = |server: &Server| Load {
        server_pid: Some(server.child.id()),
        ..args.load.clone()
    };
    for &w in &args.workloads {
        let (mut s, mut r) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds.max(1) {
            s.push(run(&sessiond.url, w, &on(&sessiond), false).await?);
            if let Some(redis) = &redis {
                r.push(run(&redis.url, w, &on(redis), false).await?);
            }
        }
        let (Some(bs), br) = (best(&s), best(&r)) else {
            continue;
        };
        let ratio = br.map_or("-".to_string(), |br| {
            format!("{:.2}x", bs.rate() / br.rate())
        });
        let cores = |o: Option<&Outcome>, f: fn(&Outcome) -> Option<f64>| {
            o.and_then(f)
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}"))
        };
        // Where the generator shares the box with the server (two cores),
        // a server that needs less CPU per operation may still be held to
        // the generator's pace: work per server CPU-second says what one
        // core of it does.
        let per_cpu = |o: &Outcome| o.server_cores().map(|c| o.rate() / c.max(1e-9));
        let (ps, pr) = (per_cpu(bs), br.and_then(per_cpu));
        let per_cpu_ratio = match (ps, pr) {
            (Some(a), Some(b)) => format!("{:.2}x", a / b),
            _ => "-".to_owned(),
        };
        let fmt_rate = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        println!(
            "| {w:?} | {:.0} | {} | {ratio} | {} | {} | {} / {} | {} / {} | {} / {} | {per_cpu_ratio} |",
            bs.rate(),
            br.map_or("-".into(), |b| format!("{:.0}", b.rate())),
            bs.us(0.99),
            br.map_or("-".into(), |b| b.us(0.99).to_string()),
            cores(Some(bs), Outcome::generator_cores),
            cores(br, Outcome::generator_cores),
            cores(Some(bs), Outcome::server_cores),
            cores(br, Outcome::server_cores),
            fmt_rate(ps),
            fmt_rate(pr),
        );
    }
    drop(sessiond);
    drop(redis);
    if let Some(n) = args.memory {
        memory(&args, n).await?;
    }
    Ok(())
}

/// Loads `n` sessions into fresh servers and reports bytes per session,
/// like for like: sessiond with and without owners beside Redis with and
/// without owner sets.
async fn memory(args: &CompareArgs, n: usize) -> anyhow::Result<()> {
    let load = Load {
        requests: Some(n as u64),
        keyspace: n,
        preload: 0,
        ..args.load.clone()
    };
    println!();
    println!(
        "| {n} sessions of {} B | RSS bytes/session | used_memory bytes/session |",
        args.load.value_size
    );
    println!("|---|---:|---:|");
    for (label, owner) in [
        ("sessiond, each with an owner (indexed)", true),
        ("sessiond, no owner", false),
    ] {
        let s = start_sessiond(args)?;
        let before = s.rss_kib().unwrap_or(0);
        let l = Load {
            no_owner: !owner,
            ..load.clone()
        };
        run(&s.url, Workload::Preload, &l, false).await?;
        let after = s.rss_kib().unwrap_or(0);
        println!(
            "| {label} | {:.0} | - |",
            (after.saturating_sub(before) * 1024) as f64 / n as f64
        );
    }
    for (label, indexed) in [
        ("redis, with owner sets (SADD)", true),
        ("redis, no owner sets", false),
    ] {
        let Some(r) = start_redis(args)? else {
            break;
        };
        let l = Load {
            indexed,
            ..load.clone()
        };
        let before = r.rss_kib().unwrap_or(0);
        let used_before = redis_used_memory(&r.url).await.unwrap_or(0);
        run(&r.url, Workload::Preload, &l, false).await?;
        let after = r.rss_kib().unwrap_or(0);
        let used_after = redis_used_memory(&r.url).await.unwrap_or(0);
        println!(
            "| {label} | {:.0} | {:.0} |",
            (after.saturating_sub(before) * 1024) as f64 / n as f64,
            used_after.saturating_sub(used_before) as f64 / n as f64
        );
    }
    Ok(())
}
