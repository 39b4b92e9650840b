//! `sessiond-bench`: the load generator for sessiond, side by side with Redis.
//!
//! `sessiond-bench --target sessiond://HOST:PORT | redis://HOST:PORT | http://HOST:PORT --workload W`
//! runs `--concurrency` tasks, each sending `--pipeline` requests at a time,
//! for `--duration` seconds or `--requests` requests, and prints ops/s and
//! latency percentiles from an HdrHistogram (text, or `--json`).
//! `sessiond-bench compare` starts both servers itself with matching durability
//! and prints a table of ratios (and, with `--memory`, bytes per session).
//! An `http://` target is the HTTP bridge's user-session-cache API (see
//! [`http`] for how each workload maps onto it).

mod compare;
mod http;
mod multi;
mod subscribers;
mod target;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;

use target::{Request, Shape, Target};

/// A workload: the mix of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Create sessions (a login storm).
    Create,
    /// Read preloaded sessions.
    Get,
    /// Read and slide preloaded sessions (http://: a plain GET /session, the
    /// cache API has no sliding read).
    GetTouch,
    /// Overwrite preloaded sessions.
    Update,
    /// 80% get-touch, 15% update, 5% create+delete (http://: create only,
    /// the cache API has no delete).
    Mixed,
    /// Create `--requests` sessions, then stop (for memory and recovery runs).
    Preload,
}

impl Workload {
    fn needs_keyspace(self) -> bool {
        matches!(
            self,
            Self::Get | Self::GetTouch | Self::Update | Self::Mixed
        )
    }

    fn pick(self, roll: u64) -> Request {
        match self {
            Self::Create | Self::Preload => Request::Create,
            Self::Get => Request::Get,
            Self::GetTouch => Request::GetTouch,
            Self::Update => Request::Update,
            Self::Mixed => match roll % 100 {
                0..80 => Request::GetTouch,
                80..95 => Request::Update,
                _ => Request::CreateDelete,
            },
        }
    }
}

/// Load settings shared by `run` and `compare`.
#[derive(Debug, Clone, Args)]
pub struct Load {
    /// Concurrent tasks.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Connections (sessiond: pool size; Redis: multiplexed connections;
    /// http: keep-alive HTTP/1.1 connections, one request in flight on each,
    /// so give it --concurrency to put every task on the wire).
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Requests each task has in flight at once.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Bytes of session data (http: the token's length, at most 4096).
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Sessions preloaded for the read and update workloads, which pick
    /// among them.
    #[arg(long, default_value_t = 100_000)]
    pub keyspace: usize,
    /// Sessions created before the run besides the keyspace, never read:
    /// they make the store as full as a real one (e.g. a login storm into a
    /// store that already holds a million sessions).
    #[arg(long, default_value_t = 0)]
    pub preload: usize,
    /// Stop after this many seconds...
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// ...or this many requests, whichever comes first.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Redis: also keep an owner set per user (SADD), as sessiond indexes owners.
    #[arg(long)]
    pub indexed: bool,
    /// sessiond: create sessions without an owner (nothing to index), the
    /// like of Redis without `--indexed`.
    #[arg(long)]
    pub no_owner: bool,
    /// Fill attribute values with random letters instead of one repeated
    /// letter (which Redis's RDB and any compressing store shrink to
    /// nothing; session tokens do not compress).
    #[arg(long)]
    pub random_values: bool,
    /// The server's process id, when known: its CPU time over the timed
    /// phase is reported beside the generator's.
    #[arg(skip)]
    pub server_pid: Option<u32>,
    /// Run as one of `--processes`: say READY after preloading, start on a
    /// line from stdin, print the histogram with the result.
    #[arg(long, hide = true)]
    pub child: bool,
    /// Redis: send `WAIT N 0` after each write (N replicas must have it),
    /// Redis's nearest equivalent of a majority acknowledgement.
    #[arg(long, value_name = "N")]
    pub redis_wait: Option<u32>,
    /// sessiond: this many events subscribers (every namespace, every kind,
    /// from now) read the feed during the timed phase; the events they
    /// received are reported.
    #[arg(long, default_value_t = 0)]
    pub subscribers: usize,
}

impl Load {
    fn shape(&self) -> Shape {
        Shape {
            connections: self.connections,
            value_size: self.value_size,
            ttl: Duration::from_secs(3600),
            indexed: self.indexed,
            redis_wait: self.redis_wait,
            owner: !self.no_owner,
            random_values: self.random_values,
        }
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "sessiond-bench",
    version,
    about = "Load generator for sessiond, side by side with Redis and the HTTP bridge"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Server to load: sessiond://HOST:PORT, redis://HOST:PORT, or
    /// http://HOST:PORT for the HTTP bridge's user-session-cache API
    /// (create and update: POST /create; get and get-touch: GET /session).
    #[arg(long, default_value = "sessiond://127.0.0.1:7379")]
    target: String,
    /// What to send.
    #[arg(long, value_enum, default_value = "get-touch")]
    workload: Workload,
    #[command(flatten)]
    load: Load,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Load-generator processes (default 1): each runs `--concurrency` tasks
    /// on its own connections against its own share of `--keyspace` (and of
    /// `--requests`); all start their timed phase together and their
    /// results are merged. Use it when one process cannot offer more than
    /// the server takes (compare the generator's CPU with the cores it has).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Worker threads of the load generator (default: one per core). On a
    /// machine shared with the server under test, 1 leaves it the most CPU
    /// and spares the generator cross-thread wake-ups; it applies to every
    /// target alike.
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start sessiond and Redis with matching durability and compare them.
    Compare(compare::CompareArgs),
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Requests completed.
    pub ops: u64,
    /// Failed requests.
    pub errors: u64,
    /// Wall time.
    pub seconds: f64,
    /// Latency histogram in microseconds.
    pub hist: Histogram<u64>,
    /// CPU seconds the load generator used over the timed phase.
    pub generator_cpu: Option<f64>,
    /// CPU seconds the server used over the timed phase (when its pid is known).
    pub server_cpu: Option<f64>,
}

/// CPU seconds (user and system) process `pid` (this one for `None`) has
/// used, from `/proc` (Linux; clock ticks of 1/100 s, the kernel's USER_HZ).
#[must_use]
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

impl Outcome {
    /// Requests per second.
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }

    /// Latency at quantile `q`, in microseconds.
    #[must_use]
    pub fn us(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    /// Cores the load generator kept busy on average.
    #[must_use]
    pub fn generator_cores(&self) -> Option<f64> {
        self.generator_cpu.map(|c| c / self.seconds.max(1e-9))
    }

    /// Cores the server kept busy on average.
    #[must_use]
    pub fn server_cores(&self) -> Option<f64> {
        self.server_cpu.map(|c| c / self.seconds.max(1e-9))
    }

    fn json(&self, label: &str, load: &Load, workload: Workload) -> serde_json::Value {
        json!({
            "target": label,
            "workload": format!("{workload:?}").to_lowercase(),
            "concurrency": load.concurrency,
            "pipeline": load.pipeline,
            "ops": self.ops, "errors": self.errors, "seconds": self.seconds,
            "ops_per_sec": self.rate(),
            "latency_us": {"p50": self.us(0.5), "p90": self.us(0.9), "p99": self.us(0.99), "p999": self.us(0.999), "max": self.hist.max()},
            "generator_cpu_cores": self.generator_cores(),
            "generator_cpu_seconds": self.generator_cpu,
            "server_cpu_cores": self.server_cores(),
        })
    }

    fn line(&self, label: &str, workload: Workload, load: &Load) -> String {
        format!(
            "{label} {workload:?} c={} p={}: {} ops in {:.2}s = {:.0} ops/s, errors {}; latency us p50 {} p90 {} p99 {} p99.9 {} max {}; generator CPU {} cores",
            load.concurrency,
            load.pipeline,
            self.ops,
            self.seconds,
            self.rate(),
            self.errors,
            self.us(0.5),
            self.us(0.9),
            self.us(0.99),
            self.us(0.999),
            self.hist.max(),
            self.generator_cores()
                .map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"))
        )
    }
}

/// Connects, preloads if the workload needs it, and runs the load.
///
/// # Errors
/// Connection failures.
pub async fn run(
    url: &str,
    workload: Workload,
    load: &Load,
    progress: bool,
) -> anyhow::Result<Outcome> {
    let shape = load.shape();
    let mut target = Target::connect(url, &shape).await?;
    if load.preload > 0 && workload != Workload::Preload {
        // Numbered after the keyspace, so the two never share a key.
        target
            .fill(load.keyspace, load.preload, load.concurrency, &shape)
            .await?;
    }
    if workload.needs_keyspace() {
        target
            .preload(load.keyspace, load.concurrency, &shape)
            .await?;
    }
    let limit = match workload {
        Workload::Preload => load.requests.unwrap_or(load.keyspace as u64),
        _ => load.requests.unwrap_or(u64::MAX),
    };
    let deadline = (workload != Workload::Preload)
        .then(|| Instant::now() + Duration::from_secs_f64(load.duration));
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let ticker = progress.then(|| {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                eprint!(
                    "\r{n} ops, {:.0} ops/s   ",
                    n as f64 / start.elapsed().as_secs_f64()
                );
            }
        })
    });
    if load.child {
        // Preloaded: wait for the word to start, with the other processes.
        println!("READY");
        std::io::Write::flush(&mut std::io::stdout())?;
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        })
        .await??;
    }
    let subscribers = match url.strip_prefix("sessiond://") {
        Some(addr) if load.subscribers > 0 => {
            Some(subscribers::Subscribers::start(addr, load.subscribers).await?)
        }
        _ => None,
    };
    let started = Instant::now();
    let generator_before = cpu_seconds(None);
    let server_before = load.server_pid.and_then(|p| cpu_seconds(Some(p)));
    let mut tasks = Vec::new();
    for t in 0..load.concurrency.max(1) {
        let (target, issued, done, shape) = (
            target.clone(),
            Arc::clone(&issued),
            Arc::clone(&done),
            shape.clone(),
        );
        let depth = load.pipeline.max(1);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
            let mut errors = 0;
            let mut seed = (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize;
            loop {
                let before = issued.fetch_add(depth as u64, Ordering::Relaxed);
                if before >= limit || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = depth.min((limit - before) as usize);
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let req = workload.pick((seed >> 33) as u64);
                let start = Instant::now();
                errors += target.batch(req, seed >> 8, n, &shape).await?;
                // Every request of a pipeline waited as long as the batch.
                hist.saturating_record_n(start.elapsed().as_micros() as u64, n as u64);
                done.fetch_add(n as u64, Ordering::Relaxed);
            }
            anyhow::Ok((hist, errors))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        hist.add(h)?;
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    let since = |before: Option<f64>, now: Option<f64>| Some(now? - before?);
    let generator_cpu = since(generator_before, cpu_seconds(None));
    let server_cpu = since(
        server_before,
        load.server_pid.and_then(|p| cpu_seconds(Some(p))),
    );
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    if let Some(s) = subscribers {
        // Let the feed's last events arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = load.subscribers;
        eprintln!("{n} subscribers received {} events", s.stop());
    }
    Ok(Outcome {
        ops: hist.len(),
        errors,
        seconds,
        hist,
        generator_cpu,
        server_cpu,
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Some(Command::Compare(args)) => compare::compare(args).await,
            None => {
                let progress = !cli.json && !cli.load.child && std::io::stderr().is_terminal();
                let outcome = if cli.processes > 1 {
                    multi::run(cli.processes, &cli.load).await?
                } else {
                    run(&cli.target, cli.workload, &cli.load, progress).await?
                };
                let label = cli.target.split("://").next().unwrap_or("target");
                if cli.load.child {
                    let mut v = outcome.json(label, &cli.load, cli.workload);
                    v["histogram"] = multi::histogram_pairs(&outcome.hist);
                    println!("{v}");
                } else if cli.json {
                    let mut v = outcome.json(label, &cli.load, cli.workload);
                    v["processes"] = cli.processes.into();
                    println!("{v}");
                } else {
                    let line = outcome.line(label, cli.workload, &cli.load);
                    if cli.processes > 1 {
                        println!("{line} ({} processes)", cli.processes);
                    } else {
                        println!("{line}");
                    }
                }
                Ok(())
            }
        }
    })
}
