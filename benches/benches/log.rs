//! Log append micro-benchmark: post-images of a 256-byte session appended
//! through the real log (`sessiond::log::Log`, as the store's journal) to a
//! segment in a temporary directory with fsync policy `no`.
//!
//! A sample appends its records and then waits until the writer thread has
//! written all of them to the file, so the figure is the sustained
//! append-encode-write throughput per record, not just the buffer append.

// A benchmark's setup either works or the run is meaningless: fail loudly.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sessiond::clock::SystemClock;
use sessiond::log::{FsyncPolicy, Log, LogConfig};
use sessiond::store::record::{Fields, Record};
use sessiond::store::{Journal, Store, StoreConfig};
use sessiond_protocol::value::encode_attrs;
use sessiond_protocol::{Attrs, SessionId, Ttl, Value};

/// Attribute bytes per session.
const VALUE_SIZE: usize = 256;
/// Distinct ids appended round robin.
const IDS: usize = 1024;

fn record() -> Record {
    let mut attrs = Attrs::new();
    attrs.insert("data".into(), Value::Str("x".repeat(VALUE_SIZE)));
    let now = 1_760_000_000_000;
    Record::new(
        Fields {
            owner: Some(Arc::from("user1234")),
            created_at: now,
            last_active: now,
            ttl: Ttl {
                idle_ttl_ms: Some(3_600_000),
                max_lifetime_ms: None,
            },
            version: 1,
        },
        &encode_attrs(&attrs).expect("encode attrs"),
    )
}

fn log(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::new(StoreConfig::default(), Arc::new(SystemClock)));
    let config = LogConfig {
        fsync: FsyncPolicy::No,
        ..LogConfig::new(dir.path())
    };
    // The store is empty, so once the log passes the compaction threshold it
    // is compacted to nothing and its old segments removed: disk use stays
    // bounded however many records a run appends.
    let log = Log::open(&config, &store).expect("open the log");
    let rec = record();
    let ids: Vec<SessionId> = (0..IDS).map(|_| SessionId::new_v4()).collect();

    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(1));
    let mut n = 0usize;
    g.bench_function("append_put_256b_fsync_no", |b| {
        b.iter_custom(|iters| {
            let mut rx = log.subscribe();
            let start = Instant::now();
            for _ in 0..iters {
                n = n.wrapping_add(1);
                log.put(n as u64, "bench", ids[n % IDS], &rec);
            }
            let seq = log.last_seq();
            futures::executor::block_on(Log::wait_durable(&mut rx, seq)).expect("log write");
            start.elapsed()
        });
    });
    g.finish();
    log.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = log
}
criterion_main!(benches);
