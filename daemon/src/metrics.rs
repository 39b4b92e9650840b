//! Prometheus metrics: counters kept with relaxed atomics on the hot path,
//! rendered as text by a minimal HTTP endpoint (`--metrics-listen`).
//!
//! Exposed: operations by type and outcome, latency histograms by type, live
//! records per namespace, expired and evicted totals, memory estimate,
//! connections, log bytes, fsyncs and their latency, compactions.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sessiond_protocol::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
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

fn outcome_name(i: usize) -> String {
    if i == 0 {
        "ok".into()
    } else {
        ErrorCode::from_u16(i as u16).to_string()
    }
}

/// Counters of the daemon.
#[derive(Debug)]
pub struct Metrics {
    ops: Vec<[AtomicU64; OUTCOMES]>,
    buckets: Vec<[AtomicU64; BUCKETS_US.len() + 1]>,
    latency_ns: Vec<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            ops: (0..OPS.len())
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            buckets: (0..OPS.len())
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            latency_ns: (0..OPS.len()).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Metrics {
    /// Records one operation (by tag) with its outcome and time.
    pub fn record(&self, op: usize, error: Option<ErrorCode>, took: Duration) {
        let Some(row) = self.ops.get(op) else { return };
        let outcome = error.map_or(0, |c| usize::from(c.as_u16()).min(OUTCOMES - 1));
        row[outcome].fetch_add(1, Ordering::Relaxed);
        let us = took.as_micros() as u64;
        let bucket = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[op][bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_ns[op].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text of everything.
    #[must_use]
    pub fn render(&self, shared: &Shared) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP sessiond_ops_total Operations by type and outcome.\n# TYPE sessiond_ops_total counter\n");
        for (op, row) in self.ops.iter().enumerate() {
            for (i, c) in row.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "sessiond_ops_total{{op=\"{}\",outcome=\"{}\"}} {n}",
                        OPS[op],
                        outcome_name(i)
                    );
                }
            }
        }
        out.push_str("# HELP sessiond_op_seconds Time to execute an operation.\n# TYPE sessiond_op_seconds histogram\n");
        for (op, row) in self.buckets.iter().enumerate() {
            let total: u64 = row.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            if total == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, c) in row.iter().enumerate() {
                cumulative += c.load(Ordering::Relaxed);
                let le = BUCKETS_US
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
                let _ = writeln!(
                    out,
                    "sessiond_op_seconds_bucket{{op=\"{}\",le=\"{le}\"}} {cumulative}",
                    OPS[op]
                );
            }
            let sum = self.latency_ns[op].load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "sessiond_op_seconds_sum{{op=\"{}\"}} {sum}", OPS[op]);
            let _ = writeln!(
                out,
                "sessiond_op_seconds_count{{op=\"{}\"}} {total}",
                OPS[op]
            );
        }
        let s = shared.store.stats();
        out.push_str("# HELP sessiond_records Records stored, by namespace.\n# TYPE sessiond_records gauge\n");
        for (ns, n) in &s.namespaces {
            let _ = writeln!(out, "sessiond_records{{namespace=\"{ns}\"}} {n}");
        }
        let c = &shared.counters;
        let gauges = [
            (
                "sessiond_expired_total",
                "counter",
                "Records reclaimed by expiry.",
                s.expired_total,
            ),
            (
                "sessiond_evicted_total",
                "counter",
                "Records evicted (owner limits, memory).",
                s.evicted_total,
            ),
            (
                "sessiond_memory_bytes",
                "gauge",
                "Estimated bytes held by records.",
                s.memory_bytes,
            ),
            (
                "sessiond_connections",
                "gauge",
                "Open connections.",
                c.connections_current.load(Ordering::Relaxed),
            ),
            (
                "sessiond_connections_total",
                "counter",
                "Connections accepted.",
                c.connections_total.load(Ordering::Relaxed),
            ),
            (
                "sessiond_connections_awaiting_hello",
                "gauge",
                "Open connections that have not completed their hello.",
                shared.admission.pending() as u64,
            ),
            (
                "sessiond_connections_evicted_total",
                "counter",
                "Connections still waiting for their hello closed to make room for newer ones.",
                shared.admission.evicted_total.load(Ordering::Relaxed),
            ),
            (
                "sessiond_connection_buffer_bytes",
                "gauge",
                "Bytes held by connection buffers (counted with records against --max-memory).",
                shared.store.connection_buffer_bytes(),
            ),
            (
                "sessiond_connection_buffer_extra_bytes",
                "gauge",
                "Connection buffer bytes beyond each connection's first chunks (bounded by --max-buffer-memory).",
                shared.admission.extra_bytes(),
            ),
            (
                "sessiond_frames_refused_for_buffers_total",
                "counter",
                "Frames refused because connection buffers were at --max-buffer-memory.",
                shared.admission.buffer_refusals_total.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        if let Some(log) = &shared.log {
            let st = log.stats();
            let fsyncs = st.fsyncs.load(Ordering::Relaxed);
            let fsync_s = st.fsync_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "# HELP sessiond_log_bytes_total Bytes appended to the log.\n# TYPE sessiond_log_bytes_total counter\nsessiond_log_bytes_total {}", st.bytes_written.load(Ordering::Relaxed));
            let _ = writeln!(out, "# HELP sessiond_log_fsync_seconds Time spent in fsync.\n# TYPE sessiond_log_fsync_seconds summary\nsessiond_log_fsync_seconds_sum {fsync_s}\nsessiond_log_fsync_seconds_count {fsyncs}");
            let _ = writeln!(out, "# HELP sessiond_log_compactions_total Compactions finished.\n# TYPE sessiond_log_compactions_total counter\nsessiond_log_compactions_total {}", st.compactions.load(Ordering::Relaxed));
        }
        if let Some(cluster) = &shared.cluster {
            cluster.render_metrics(&mut out);
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`. Anything else gets
/// 404; requests are bounded in size and time.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let (status, body) =
                if request.starts_with("GET /metrics ") || request.starts_with("GET /metrics?") {
                    ("200 OK", shared.metrics.render(&shared))
                } else {
                    ("404 Not Found", "not found\n".to_string())
                };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            if let Err(e) = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                stream.shutdown().await
            }
            .await
            {
                debug!(error = %e, "metrics client went away");
            }
        });
    }
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
