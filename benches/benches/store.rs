//! Store micro-benchmarks: get, get-and-touch and create against an in-memory
//! `sessiond::store::Store` (no journal attached, so nothing is logged) holding
//! 100k sessions with a 256-byte attribute, an owner and a sliding ttl.
//!
//! The numbers are one thread's cost of an operation: the shard lock, the
//! record copy and (except `get_raw`, what the server runs) the attribute
//! decode, without network or log.

// A benchmark's setup either works or the run is meaningless: fail loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sessiond::clock::SystemClock;
use sessiond::store::{Store, StoreConfig};
use sessiond_protocol::{Attrs, SessionId};

mod common;
use common::{attrs, create_args, NS};

/// Sessions preloaded before any measurement.
const PRELOAD: usize = 100_000;

/// A store with `PRELOAD` sessions, and their ids.
fn preloaded(attrs: &Attrs) -> (Store, Vec<SessionId>) {
    let config = StoreConfig {
        // Sessions the create benchmark deletes again leave tombstones; a short
        // one lets them be reclaimed between samples.
        tombstone_ttl_ms: 1,
        ..StoreConfig::default()
    };
    let store = Store::new(config, Arc::new(SystemClock));
    let ids = (0..PRELOAD)
        .map(|i| store.create(create_args(i, attrs)).expect("preload").id)
        .collect();
    (store, ids)
}

fn store(c: &mut Criterion) {
    let attrs = attrs();
    let (store, ids) = preloaded(&attrs);

    let mut g = c.benchmark_group("store_100k");
    g.throughput(Throughput::Elements(1));
    // A stride coprime with the key count visits every session, in an order
    // unrelated to insertion.
    let mut i = 0usize;
    g.bench_function("get", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            black_box(store.get(NS, ids[i], false).expect("get"))
        });
    });
    // What the server runs: the attributes stay encoded for the answer.
    g.bench_function("get_raw", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            black_box(store.get_raw(NS, ids[i], false).expect("get"))
        });
    });
    g.bench_function("get_and_touch", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            black_box(store.get(NS, ids[i], true).expect("get and touch"))
        });
    });
    // Each sample's sessions are deleted again (untimed), so the store stays at
    // about 100k sessions however many iterations criterion asks for.
    let mut n = 0usize;
    g.bench_function("create", |b| {
        b.iter_custom(|iters| {
            let mut made = Vec::with_capacity(usize::try_from(iters).unwrap_or(0));
            let start = Instant::now();
            for _ in 0..iters {
                n = n.wrapping_add(1);
                made.push(store.create(create_args(n, &attrs)).expect("create").id);
            }
            let elapsed = start.elapsed();
            for id in made {
                store.delete(NS, id).expect("delete");
            }
            // Let the 1 ms tombstones end, then reclaim them.
            std::thread::sleep(Duration::from_millis(2));
            while store.reclaim(100_000) >= 100_000 {}
            elapsed
        });
    });
    g.finish();
}

/// Creates and reads per thread in `threads_*` (each iteration).
const PER_THREAD: usize = 20_000;

/// The same store driven by one thread, then by two at once, each doing
/// `PER_THREAD` operations; the time is the wall clock of the slowest. With
/// nothing shared per operation, two threads on two idle cores take as long
/// as one: what they take beyond it is what they contend on (a counter or a
/// lock every operation writes, cache lines one writes and the other reads).
fn threads(c: &mut Criterion) {
    let attrs = attrs();
    let (store, ids) = preloaded(&attrs);
    let mut g = c.benchmark_group("store_threads");
    g.sample_size(10);
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements((PER_THREAD * threads) as u64));
        g.bench_function(format!("create_{threads}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let made: Vec<Vec<SessionId>> = std::thread::scope(|s| {
                        let handles: Vec<_> = (0..threads)
                            .map(|t| {
                                let (store, attrs) = (&store, &attrs);
                                s.spawn(move || {
                                    (0..PER_THREAD)
                                        .map(|i| {
                                            let args = create_args(t * PER_THREAD + i, attrs);
                                            store.create(args).expect("create").id
                                        })
                                        .collect()
                                })
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| h.join().expect("a creating thread"))
                            .collect()
                    });
                    total += started.elapsed();
                    for id in made.into_iter().flatten() {
                        store.delete(NS, id).expect("delete");
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    while store.reclaim(100_000) >= 100_000 {}
                }
                total
            });
        });
        g.bench_function(format!("get_raw_{threads}"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    std::thread::scope(|s| {
                        for t in 0..threads {
                            let (store, ids) = (&store, &ids);
                            s.spawn(move || {
                                let mut i = t * 7;
                                for _ in 0..PER_THREAD {
                                    i = (i + 7919) % ids.len();
                                    black_box(store.get_raw(NS, ids[i], false).expect("get"));
                                }
                            });
                        }
                    });
                }
                started.elapsed()
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = store, threads
}
criterion_main!(benches);
