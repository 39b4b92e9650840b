//! Timer wheel micro-benchmarks (`sessiond::expiry::wheel`): insertion with
//! deadlines spread over every level, and advancing through 10 s of deadlines
//! with the expiry task's tick and batch.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sessiond::expiry::wheel::Wheel;
use sessiond::expiry::{DEFAULT_BATCH, DEFAULT_TICK};

const START_MS: u64 = 1_760_000_000_000;
/// Entries per wheel in the insert benchmark (a fresh wheel every chunk, so
/// memory stays bounded whatever the iteration count).
const CHUNK: usize = 65_536;
/// Entries due in the advance benchmark...
const DUE: usize = 100_000;
/// ...spread over this many milliseconds.
const SPREAD_MS: u64 = 10_000;

/// Deterministic pseudo-random numbers (xorshift64*), so runs compare.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Deadlines from 1 ms to about 4.6 days ahead, log-uniform, so every level
/// below the overflow list gets its share.
fn spread_deadlines(n: usize) -> Vec<u64> {
    let mut next = rng(0x5E55_1011);
    (0..n)
        .map(|_| {
            let bits = 1 + next() % 38;
            START_MS + 1 + next() % (1u64 << bits)
        })
        .collect()
}

fn wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel");

    let deadlines = spread_deadlines(CHUNK);
    g.throughput(Throughput::Elements(1));
    g.bench_function("insert", |b| {
        b.iter_custom(|iters| {
            let mut left = iters;
            let mut elapsed = Duration::ZERO;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                let mut w = Wheel::new(START_MS);
                let start = Instant::now();
                for (i, d) in deadlines[..n].iter().enumerate() {
                    w.insert(*d, i as u64);
                }
                elapsed += start.elapsed();
                black_box(&w);
                left -= n as u64;
            }
            elapsed
        });
    });

    // 100k entries due within 10 s, drained as the expiry task does: a poll
    // every tick with its batch budget, until empty.
    let mut next = rng(0xD0E5);
    let due: Vec<u64> = (0..DUE)
        .map(|_| START_MS + 1 + next() % SPREAD_MS)
        .collect();
    let tick = u64::try_from(DEFAULT_TICK.as_millis()).unwrap_or(100);
    g.throughput(Throughput::Elements(DUE as u64));
    g.bench_function("advance_poll_100k_over_10s", |b| {
        b.iter_batched(
            || {
                let mut w = Wheel::new(START_MS);
                for (i, d) in due.iter().enumerate() {
                    w.insert(*d, i as u64);
                }
                (w, Vec::with_capacity(DEFAULT_BATCH))
            },
            |(mut w, mut out)| {
                let mut now = START_MS;
                let mut fired = 0;
                while !w.is_empty() {
                    now += tick;
                    while w.poll(now, DEFAULT_BATCH, &mut out) > 0 {
                        fired += out.len();
                        out.clear();
                    }
                }
                black_box(fired)
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = wheel
}
criterion_main!(benches);
