//! Stalls in a create storm into one store: every create's own time, into an
//! HDR histogram, for record tables split into a few or many shards.
//!
//! A shard's table grows by rehashing all of it under its lock, and with a
//! uniform hash every shard grows at about the same moment: the create that
//! triggers it waits for the whole shard to move. Fewer, larger shards mean
//! fewer, longer stalls; the total work is the same.
//!
//! `cargo bench -p sessiond-bench --bench stalls [-- SESSIONS]` (default
//! 2,000,000 creates into an empty in-memory store, no network, no log),
//! one thread; `STALLS_SHARDS=64,1024` picks the shard counts.

// A benchmark's setup either works or the run is meaningless: fail loudly.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use sessiond::clock::SystemClock;
use sessiond::store::{Store, StoreConfig};

mod common;
use common::{attrs, create_args};

fn main() {
    // `cargo bench` passes `--bench`; a bare number is the session count.
    let sessions: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let attrs = attrs();
    println!("{sessions} creates into an empty store, one thread, each timed");
    println!("| record shards | total s | p50 us | p99 us | p99.9 us | p99.99 us | max us | creates over 1 ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // `STALLS_SHARDS=64,1024,...` picks the shard counts (in that order).
    let shard_counts: Vec<usize> = std::env::var("STALLS_SHARDS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 256, 1024, 4096]);
    for shards in shard_counts {
        let store = Store::new(
            StoreConfig {
                record_shards: shards,
                ..StoreConfig::default()
            },
            Arc::new(SystemClock),
        );
        let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
        let started = Instant::now();
        for i in 0..sessions {
            let args = create_args(i, &attrs);
            let t = Instant::now();
            store.create(args).expect("create");
            let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            h.saturating_record(ns.max(1));
        }
        let total = started.elapsed().as_secs_f64();
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let over = h.count_between(1_000_000, u64::MAX);
        println!(
            "| {shards} | {total:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {over} |",
            us(0.5),
            us(0.99),
            us(0.999),
            us(0.9999),
            h.max() as f64 / 1000.0
        );
        drop(store);
    }
}
