//! Prometheus metrics: counters kept with relaxed atomics on the hot path,
//! encoded with `prometheus-client` at scrape time and served over HTTP
//! (hyper) at `--metrics-listen`.
//!
//! Exposed: operations by type and outcome, latency histograms by type, live
//! records per namespace, expired and evicted totals, memory estimate,
//! connections, log bytes, fsyncs and their latency, compactions.
//!
//! The text is the Prometheus text format 0.0.4
//! ([`prometheus_text::CONTENT_TYPE`]), so counter names keep their `_total`
//! on the `# TYPE` line and there is no OpenMetrics `# EOF`.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sessiond_protocol::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::server::Shared;

/// Operation names, in `Op` tag order.
pub const OPS: [&str; 16] = [
    "hello",
    "ping",
    "create",
    "get",
    "touch",
    "update",
    "incr",
    "delete",
    "list_by_owner",
    "delete_by_owner",
    "rotate",
    "stats",
    "cluster_status",
    "cluster_add_node",
    "cluster_remove_node",
    "get_stale",
];

/// Outcomes: `ok`, then the error codes 1..=15 by name.
const OUTCOMES: usize = 16;
/// Latency bucket upper bounds in microseconds.
const BUCKETS_US: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 100_000, 1_000_000,
];

/// The `outcome` label of each outcome index.
fn outcome_names() -> [String; OUTCOMES] {
    std::array::from_fn(|i| {
        if i == 0 {
            "ok".into()
        } else {
            ErrorCode::from_u16(i as u16).to_string()
        }
    })
}

/// How many stripes the operation counters are split into. Each thread
/// writes its own stripe (threads past this many share), a scrape adds them
/// up: with one set of counters every worker wrote the same cache lines on
/// every operation (two threads recording at once took 41 ns a record
/// instead of 11, `cargo bench -p sessiond-bench --bench metrics`).
const STRIPES: usize = 32;

/// One thread's share of the operation counters (kept on cache lines of
/// its own, see [`Metrics`]).
#[derive(Debug)]
struct Stripe {
    ops: [[AtomicU64; OUTCOMES]; OPS.len()],
    buckets: [[AtomicU64; BUCKETS_US.len() + 1]; OPS.len()],
    latency_ns: [AtomicU64; OPS.len()],
}

impl Stripe {
    fn new() -> Self {
        Self {
            ops: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            buckets: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_ns: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Hands each thread its stripe, in turn.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
}

/// This thread's number among those that recorded something, for counters
/// striped per thread (take it modulo the number of stripes).
#[must_use]
pub(crate) fn thread_stripe() -> usize {
    STRIPE.with(|s| *s)
}

/// Counters of the daemon.
#[derive(Debug)]
pub struct Metrics {
    stripes: Box<[CachePadded<Stripe>]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(Stripe::new()))
                .collect(),
        }
    }
}

impl Metrics {
    /// Records one operation (by tag) with its outcome and time.
    pub fn record(&self, op: usize, error: Option<ErrorCode>, took: Duration) {
        if op >= OPS.len() {
            return;
        }
        let stripe = &self.stripes[thread_stripe() % STRIPES];
        let outcome = error.map_or(0, |c| usize::from(c.as_u16()).min(OUTCOMES - 1));
        stripe.ops[op][outcome].fetch_add(1, Ordering::Relaxed);
        let us = took.as_micros() as u64;
        let bucket = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        stripe.buckets[op][bucket].fetch_add(1, Ordering::Relaxed);
        stripe.latency_ns[op].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Operations recorded, of every kind and outcome.
    #[must_use]
    pub fn ops_total(&self) -> u64 {
        self.stripes
            .iter()
            .flat_map(|s| s.ops.iter().flatten())
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The sum over the stripes of the counter `pick` selects.
    fn sum(&self, pick: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        self.stripes
            .iter()
            .map(|s| pick(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Encodes the operation counters (only those that moved) and the
    /// latency histograms (only of operations that ran).
    fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let outcomes = outcome_names();
        {
            let mut family = enc.encode_descriptor(
                "sessiond_ops",
                "Operations by type and outcome.",
                None,
                MetricType::Counter,
            )?;
            for (op, name) in OPS.iter().enumerate() {
                for (outcome, label) in outcomes.iter().enumerate() {
                    let n = self.sum(|s| &s.ops[op][outcome]);
                    if n > 0 {
                        let labels = [("op", *name), ("outcome", label.as_str())];
                        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        let mut family = enc.encode_descriptor(
            "sessiond_op_seconds",
            "Time to execute an operation.",
            None,
            MetricType::Histogram,
        )?;
        for (op, name) in OPS.iter().enumerate() {
            let counts: [u64; BUCKETS_US.len() + 1] =
                std::array::from_fn(|i| self.sum(|s| &s.buckets[op][i]));
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            // The last count (over the largest bound) goes into `+Inf`,
            // which the encoder adds with `total`.
            let buckets: [(f64, u64); BUCKETS_US.len()] =
                std::array::from_fn(|i| (BUCKETS_US[i] as f64 / 1e6, counts[i]));
            let sum = self.sum(|s| &s.latency_ns[op]) as f64 / 1e9;
            family
                .encode_family(&[("op", *name)])?
                .encode_histogram::<NoLabelSet>(sum, total, &buckets, None)?;
        }
        Ok(())
    }
}

/// Encodes one unlabelled counter. `name` is the name as exposed, `_total`
/// included: the encoder appends `_total` to counters, so it is taken off
/// here (never doubled).
///
/// # Errors
/// The encoder's.
pub fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    debug_assert!(name.ends_with("_total"), "{name}: a counter ends in _total");
    let base = name.strip_suffix("_total").unwrap_or(name);
    ConstCounter::new(value).encode(enc.encode_descriptor(base, help, None, MetricType::Counter)?)
}

/// Encodes one unlabelled gauge.
///
/// # Errors
/// The encoder's.
pub fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// Everything the daemon exposes, read at scrape time.
#[derive(Debug)]
struct DaemonCollector(Arc<Shared>);

impl Collector for DaemonCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let shared = &*self.0;
        shared.metrics.encode(&mut enc)?;
        let s = shared.store.stats();
        {
            let mut family = enc.encode_descriptor(
                "sessiond_records",
                "Records stored, by namespace.",
                None,
                MetricType::Gauge,
            )?;
            for (ns, n) in &s.namespaces {
                ConstGauge::new(*n).encode(family.encode_family(&[("namespace", ns.as_str())])?)?;
            }
        }
        let c = &shared.counters;
        counter(
            &mut enc,
            "sessiond_expired_total",
            "Records reclaimed by expiry.",
            s.expired_total,
        )?;
        counter(
            &mut enc,
            "sessiond_evicted_total",
            "Records evicted (owner limits, memory).",
            s.evicted_total,
        )?;
        gauge(
            &mut enc,
            "sessiond_memory_bytes",
            "Estimated bytes held by records.",
            s.memory_bytes,
        )?;
        gauge(
            &mut enc,
            "sessiond_connections",
            "Open connections.",
            c.connections_current.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "sessiond_connections_total",
            "Connections accepted.",
            c.connections_total.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "sessiond_connections_awaiting_hello",
            "Open connections that have not completed their hello.",
            shared.admission.pending() as u64,
        )?;
        counter(
            &mut enc,
            "sessiond_connections_evicted_total",
            "Connections still waiting for their hello closed to make room for newer ones.",
            shared.admission.evicted_total.load(Ordering::Relaxed),
        )?;
        if let Some(feed) = shared.store.events() {
            let f = &feed.counters;
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            gauge(
                &mut enc,
                "sessiond_event_subscribers",
                "Connections subscribed to the events feed.",
                u64::try_from(f.subscribers.load(Ordering::Relaxed)).unwrap_or(0),
            )?;
            counter(
                &mut enc,
                "sessiond_events_total",
                "Session events recorded in the feed.",
                load(&f.emitted_total),
            )?;
            counter(
                &mut enc,
                "sessiond_events_sent_total",
                "Session events sent to subscribers.",
                load(&f.sent_total),
            )?;
            counter(
                &mut enc,
                "sessiond_event_subscribers_lagging_total",
                "Subscribers closed because they stopped reading.",
                load(&f.lagging_total),
            )?;
            counter(
                &mut enc,
                "sessiond_events_dropped_total",
                "Session events dropped because the events files fell too far behind.",
                load(&f.dropped_total),
            )?;
            gauge(
                &mut enc,
                "sessiond_events_last_cursor",
                "The cursor of the last event published to subscribers.",
                feed.published(),
            )?;
        }
        gauge(
            &mut enc,
            "sessiond_connection_buffer_bytes",
            "Bytes held by connection buffers (counted with records against --max-memory).",
            shared.store.connection_buffer_bytes(),
        )?;
        gauge(
            &mut enc,
            "sessiond_connection_buffer_extra_bytes",
            "Connection buffer bytes beyond each connection's first chunks (bounded by --max-buffer-memory).",
            shared.admission.extra_bytes(),
        )?;
        counter(
            &mut enc,
            "sessiond_frames_refused_for_buffers_total",
            "Frames refused because connection buffers were at --max-buffer-memory.",
            shared
                .admission
                .buffer_refusals_total
                .load(Ordering::Relaxed),
        )?;
        if let Some(log) = &shared.log {
            let st = log.stats();
            counter(
                &mut enc,
                "sessiond_log_bytes_total",
                "Bytes appended to the log.",
                st.bytes_written.load(Ordering::Relaxed),
            )?;
            // A summary without quantiles before; prometheus-client has no
            // summary type, so a histogram with only the `+Inf` bucket: the
            // same `_sum` and `_count` series, plus `_bucket{le="+Inf"}`.
            let fsyncs = st.fsyncs.load(Ordering::Relaxed);
            let fsync_s = st.fsync_ns.load(Ordering::Relaxed) as f64 / 1e9;
            enc.encode_descriptor(
                "sessiond_log_fsync_seconds",
                "Time spent in fsync.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(fsync_s, fsyncs, &[], None)?;
            counter(
                &mut enc,
                "sessiond_log_compactions_total",
                "Compactions finished.",
                st.compactions.load(Ordering::Relaxed),
            )?;
        }
        if let Some(cluster) = &shared.cluster {
            cluster.encode_metrics(&mut enc)?;
        }
        Ok(())
    }
}

/// The registry of a daemon: one collector reading everything at scrape
/// time.
#[must_use]
pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(DaemonCollector(shared)));
    registry
}

/// The Prometheus text of everything in `registry`.
#[must_use]
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    if let Err(e) = prometheus_text::encode(&mut out, registry) {
        warn!(error = %e, "cannot encode the metrics");
    }
    out
}

/// Metrics connections open at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// A request's head must arrive this soon after accept.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection, answer written included, lasts at most this long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes buffered for a request head (hyper's smallest buffer).
const MAX_HEAD_BYTES: usize = 8192;

/// Serves `GET /metrics` on `listener` until `shutdown`. Anything else gets
/// 404. One request per connection; at most 64 connections at once, each
/// with its head within 5 s and 8 KiB, and gone after 30 s (the constants
/// above).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let registry = Arc::new(registry(shared));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("metrics connection refused: {MAX_CONNECTIONS} open");
            continue;
        };
        let registry = Arc::clone(&registry);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = respond(&req, &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                done = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(error = %e, "metrics connection ended"),
                    Err(_) => debug!("metrics connection timed out"),
                },
            }
        });
    }
}

fn respond(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if req.method() == Method::GET && req.uri().path() == "/metrics" {
            (
                StatusCode::OK,
                prometheus_text::CONTENT_TYPE,
                render(registry),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n".to_owned(),
            )
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Binds the metrics address.
///
/// # Errors
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.inspect_err(|e| {
        warn!(%addr, error = %e, "cannot bind the metrics address");
    })
}
