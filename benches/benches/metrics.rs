//! The daemon's operation counters under concurrent writers
//! (`sessiond::metrics::Metrics::record`): every worker thread records every
//! operation, so what they share decides how the counters scale.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sessiond::metrics::Metrics;

/// Records per thread and iteration.
const PER_THREAD: u64 = 100_000;

/// `threads` threads recording `create` (tag 2) at once; the time is the
/// wall clock of the slowest.
fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_record");
    group.sample_size(10);
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements(PER_THREAD * threads as u64));
        group.bench_function(format!("{threads}_threads"), |b| {
            let metrics = Metrics::default();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            s.spawn(|| {
                                for i in 0..PER_THREAD {
                                    metrics.record(
                                        2,
                                        None,
                                        Duration::from_nanos(black_box(i % 4096)),
                                    );
                                }
                            });
                        }
                    });
                    total += started.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
