//! `sessiond-bench`: a load generator for sessiond.
//!
//! Runs a workload from `--concurrency` tasks sharing one pooled client for a
//! bounded time or request count, then prints ops/s and latency percentiles
//! (HdrHistogram), as text or `--json`. Workloads: `create` (login storm),
//! `get`, `get-touch`, and `preload` (create `--requests` sessions as fast as
//! possible, for memory and recovery measurements).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use sessiond_client::{Client, ClientConfig, CreateOptions, SessionId, UpdateOptions, Value};

/// Creates `n` sessions from `tasks` concurrent tasks; returns their ids.
async fn preload(
    client: &Client,
    n: usize,
    tasks: usize,
    payload: &str,
) -> anyhow::Result<Vec<SessionId>> {
    let tasks = tasks.max(1);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (client, payload) = (client.clone(), payload.to_owned());
        let count = n / tasks + usize::from(t < n % tasks);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                let s = client
                    .create(
                        "bench",
                        CreateOptions::new()
                            .idle_ttl(Duration::from_secs(3600))
                            .attr("data", payload.as_str()),
                    )
                    .await?;
                ids.push(s.id);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for h in handles {
        ids.extend(h.await??);
    }
    Ok(ids)
}

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Create sessions (a login storm).
    Create,
    /// Read sessions created in a preload phase.
    Get,
    /// Read and slide sessions created in a preload phase.
    GetTouch,
    /// Overwrite an attribute of sessions created in a preload phase.
    Update,
    /// Create `--requests` sessions and stop.
    Preload,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "sessiond-bench",
    version,
    about = "Load generator for sessiond"
)]
struct Args {
    /// Daemon to load: sessiond://HOST:PORT.
    #[arg(long, default_value = "sessiond://127.0.0.1:7379")]
    target: String,
    /// Workload.
    #[arg(long, value_enum, default_value = "create")]
    workload: Workload,
    /// Concurrent tasks issuing requests.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Pooled connections.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Bytes of the attribute each session carries.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Sessions created before a get workload.
    #[arg(long, default_value_t = 10_000)]
    keyspace: usize,
    /// Stop after this many seconds...
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// ...or after this many requests, whichever comes first.
    #[arg(long)]
    requests: Option<u64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Some(addr) = args.target.strip_prefix("sessiond://") else {
        bail!(
            "--target must be sessiond://HOST:PORT (other targets come with the benchmark harness)"
        );
    };
    let client = Client::connect_with(
        ClientConfig::new(addr)
            .connections(args.connections)
            .request_timeout(Duration::from_secs(30))
            .client_name("sessiond-bench"),
    )
    .await
    .with_context(|| format!("connecting to {addr}"))?;
    let payload = "x".repeat(args.value_size);
    let ids: Arc<Vec<SessionId>> = Arc::new(
        if matches!(
            args.workload,
            Workload::Get | Workload::GetTouch | Workload::Update
        ) {
            preload(&client, args.keyspace, args.concurrency, &payload).await?
        } else {
            Vec::new()
        },
    );
    let limit = args.requests.unwrap_or(u64::MAX);
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let (client, ids, issued, errors, payload) = (
            client.clone(),
            Arc::clone(&ids),
            Arc::clone(&issued),
            Arc::clone(&errors),
            payload.clone(),
        );
        let workload = args.workload;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut i = t;
            while issued.fetch_add(1, Ordering::Relaxed) < limit
                && (workload == Workload::Preload || Instant::now() < deadline)
            {
                let start = Instant::now();
                let ok = match workload {
                    Workload::Create | Workload::Preload => client
                        .create(
                            "bench",
                            CreateOptions::new()
                                .owner(format!("user{}", i % 1000))
                                .idle_ttl(Duration::from_secs(3600))
                                .attr("data", Value::Str(payload.clone())),
                        )
                        .await
                        .is_ok(),
                    Workload::Get => client.get("bench", ids[i % ids.len()]).await.is_ok(),
                    Workload::GetTouch => client
                        .get_and_touch("bench", ids[i % ids.len()])
                        .await
                        .is_ok(),
                    Workload::Update => client
                        .update(
                            "bench",
                            ids[i % ids.len()],
                            UpdateOptions::new().set("data", Value::Str(payload.clone())),
                        )
                        .await
                        .is_ok(),
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                hist.saturating_record(start.elapsed().as_micros() as u64);
                i += 7919;
            }
            anyhow::Ok(hist)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let ops = hist.len();
    let rate = ops as f64 / secs;
    let errors = errors.load(Ordering::Relaxed);
    let q = |p: f64| hist.value_at_quantile(p);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": format!("{:?}", args.workload).to_lowercase(),
                "concurrency": args.concurrency,
                "ops": ops, "seconds": secs, "ops_per_sec": rate, "errors": errors,
                "latency_us": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": hist.max()},
            })
        );
    } else {
        println!(
            "{:?} c={}: {ops} ops in {secs:.2}s = {rate:.0} ops/s, errors {errors}; latency us p50 {} p90 {} p99 {} p99.9 {} max {}",
            args.workload,
            args.concurrency,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            hist.max()
        );
    }
    Ok(())
}
