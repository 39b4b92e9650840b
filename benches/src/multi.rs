//! `--processes N`: several load-generator processes against one server.
//!
//! One process (its tokio workers, its connections) can run out of CPU
//! before the server does. The parent starts N copies of itself with the
//! same arguments, each with its share of `--keyspace` and `--requests`
//! (so the server holds what one process would have loaded), waits until
//! every child has preloaded, tells them all to start, and merges their
//! results: operations and errors add up, latency histograms merge, the
//! wall time is the longest child's, CPU seconds add up.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::Value;

use crate::{Load, Outcome};

/// The histogram as `[[value_us, count], ...]` for the parent to merge.
pub fn histogram_pairs(hist: &Histogram<u64>) -> Value {
    Value::Array(
        hist.iter_recorded()
            .map(|v| Value::from(vec![v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

/// The arguments of this process without `--processes`, `--keyspace`,
/// `--requests`, `--json` and `--child` (each as `--x V` or `--x=V`).
fn inherited_args() -> Vec<String> {
    const DROP_WITH_VALUE: [&str; 3] = ["--processes", "--keyspace", "--requests"];
    const DROP_FLAG: [&str; 2] = ["--json", "--child"];
    let mut out = Vec::new();
    let mut skip_next = false;
    for a in std::env::args().skip(1) {
        if skip_next {
            skip_next = false;
            continue;
        }
        if DROP_FLAG.contains(&a.as_str()) {
            continue;
        }
        if DROP_WITH_VALUE.contains(&a.as_str()) {
            skip_next = true;
            continue;
        }
        if DROP_WITH_VALUE
            .iter()
            .any(|d| a.starts_with(&format!("{d}=")))
        {
            continue;
        }
        out.push(a);
    }
    out
}

/// A share of `total` for child `i` of `n` (the first ones take the rest).
fn share(total: u64, i: usize, n: usize) -> u64 {
    let n = n as u64;
    total / n + u64::from((i as u64) < total % n)
}

struct Running {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

/// Runs `n` child processes and merges their outcomes.
///
/// # Errors
/// A child that cannot start, fails, or answers what cannot be read.
pub async fn run(n: usize, load: &Load) -> anyhow::Result<Outcome> {
    let exe = std::env::current_exe()?;
    let base = inherited_args();
    let mut children = Vec::new();
    for i in 0..n {
        let mut args = base.clone();
        args.extend([
            "--child".to_owned(),
            "--keyspace".to_owned(),
            share(load.keyspace as u64, i, n).max(1).to_string(),
        ]);
        if let Some(r) = load.requests {
            args.extend(["--requests".to_owned(), share(r, i, n).to_string()]);
        }
        let mut child = Command::new(&exe)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting load process {i}"))?;
        let out = BufReader::new(child.stdout.take().context("no stdout")?);
        children.push(Running { child, out });
    }
    let children = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Value>> {
        let mut children = children;
        // Every child preloads, then says READY.
        for (i, c) in children.iter_mut().enumerate() {
            let mut line = String::new();
            c.out.read_line(&mut line)?;
            if line.trim() != "READY" {
                bail!("load process {i} did not get ready: {line:?}");
            }
        }
        for c in &mut children {
            let stdin = c.child.stdin.as_mut().context("no stdin")?;
            stdin.write_all(b"go\n")?;
            stdin.flush()?;
        }
        let mut results = Vec::new();
        for (i, mut c) in children.into_iter().enumerate() {
            let mut line = String::new();
            c.out.read_line(&mut line)?;
            let status = c.child.wait()?;
            if !status.success() {
                bail!("load process {i} failed ({status})");
            }
            results.push(
                serde_json::from_str(&line)
                    .with_context(|| format!("load process {i} answered {line:?}"))?,
            );
        }
        Ok(results)
    })
    .await??;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let (mut errors, mut seconds, mut cpu) = (0, 0f64, Some(0f64));
    for v in &children {
        errors += v["errors"].as_u64().unwrap_or(0);
        seconds = seconds.max(v["seconds"].as_f64().unwrap_or(0.0));
        cpu = match (cpu, v["generator_cpu_seconds"].as_f64()) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        for pair in v["histogram"].as_array().into_iter().flatten() {
            let (Some(value), Some(count)) = (pair[0].as_u64(), pair[1].as_u64()) else {
                continue;
            };
            hist.saturating_record_n(value, count);
        }
    }
    Ok(Outcome {
        ops: hist.len(),
        errors,
        seconds,
        hist,
        generator_cpu: cpu,
        server_cpu: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in [0u64, 1, 7, 100, 1_000_001] {
            for n in 1..6 {
                let sum: u64 = (0..n).map(|i| share(total, i, n)).sum();
                assert_eq!(sum, total);
            }
        }
    }
}
