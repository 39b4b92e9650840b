//! Operations routes: `/healthz`, `/metrics` (Prometheus text) and
//! `/openapi.json`, plus the middleware that counts every request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use sessiond::metrics::{counter, gauge};
use sessiond_client::StatsReply;

use crate::serve::ServeMetrics;
use crate::state::AppState;

/// The labels of a request: its method, route template and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// Seconds spent serving requests, exposed as `..._seconds_sum` with no
/// `_total`. It was declared a counter before; prometheus-client appends
/// `_total` to every counter, so it is `untyped` now to keep its name.
#[derive(Debug, Default)]
struct SecondsSum(Counter<f64, AtomicU64>);

impl TypedMetric for SecondsSum {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for SecondsSum {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> std::fmt::Result {
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Request counters by (method, route template, status): a count and the
/// seconds spent, each an atomic behind its family's map.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Family<RequestLabels, SecondsSum>,
    /// Requests refused by the anonymous-create rate limit.
    pub rate_limited_total: AtomicU64,
}

/// Counts a request under its route template (never its concrete path: ids
/// and tokens in paths must not reach the metrics).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    if response.status() == StatusCode::INSUFFICIENT_STORAGE {
        state.mark_store_full();
    }
    let secs = started.elapsed().as_secs_f64();
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state.metrics.seconds.get_or_create(&labels).0.inc_by(secs);
    response
}

/// The operations routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// `200` while the daemon answers: `"status": "ok"`, or `"degraded"` with
/// `"store": "full"` while writes are refused for memory (reads still work,
/// and another bridge over the same store would not do better); `503` when
/// the daemon does not answer.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.client.ping().await {
        Ok(rtt) => {
            let full = state.store_full();
            Json(json!({
                "status": if full { "degraded" } else { "ok" },
                "daemon": "up",
                "store": if full { "full" } else { "ok" },
                "daemon_rtt_us": rtt.as_micros() as u64,
            }))
            .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "daemon": "down", "error": e.to_string()})),
        )
            .into_response(),
    }
}

/// The server loop's counters and the rate limit's, read at scrape time.
#[derive(Debug)]
struct ServeCollector {
    serve: Arc<ServeMetrics>,
    metrics: Arc<Metrics>,
}

impl Collector for ServeCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let sm = &self.serve;
        gauge(
            &mut enc,
            "sessiond_http_connections",
            "Open HTTP connections.",
            sm.connections.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sessiond_http_connections_refused_total",
            "Connections refused at --max-connections.",
            sm.refused_total.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sessiond_http_header_timeouts_total",
            "Requests answered 408 because their head was not complete in time.",
            sm.header_timeouts_total.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sessiond_http_idle_closed_total",
            "Connections closed idle.",
            sm.idle_closed_total.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sessiond_http_rate_limited_total",
            "Anonymous creates refused by the per-address rate limit.",
            self.metrics.rate_limited_total.load(Relaxed),
        )
    }
}

/// The daemon's figures as its `stats` answered them at this scrape
/// (`None`: it did not answer).
#[derive(Debug)]
struct DaemonCollector(Option<StatsReply>);

impl Collector for DaemonCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        if let Some(s) = &self.0 {
            {
                let mut family = enc.encode_descriptor(
                    "sessiond_records",
                    "Records stored in the daemon, by namespace.",
                    None,
                    MetricType::Gauge,
                )?;
                for ns in &s.namespaces {
                    ConstGauge::new(ns.records)
                        .encode(family.encode_family(&[("namespace", ns.namespace.as_str())])?)?;
                }
            }
            counter(
                &mut enc,
                "sessiond_expired_total",
                "Records the daemon reclaimed by expiry.",
                s.expired_total,
            )?;
            counter(
                &mut enc,
                "sessiond_ops_total",
                "Operations the daemon served.",
                s.ops_total,
            )?;
            gauge(
                &mut enc,
                "sessiond_memory_bytes",
                "Estimated bytes held by the daemon's records.",
                s.memory_bytes,
            )?;
        }
        gauge(
            &mut enc,
            "sessiond_up",
            "Whether the daemon answered.",
            u64::from(self.0.is_some()),
        )
    }
}

/// The Prometheus text of the bridge, with `stats` as the daemon answered
/// (`None`: it did not).
#[must_use]
fn render(state: &AppState, stats: Option<StatsReply>) -> String {
    let m = &state.metrics;
    let mut registry = Registry::default();
    registry.register(
        "sessiond_http_requests",
        "HTTP requests by method, route and status",
        m.requests.clone(),
    );
    registry.register_collector(Box::new(ServeCollector {
        serve: Arc::clone(&state.serve_metrics),
        metrics: Arc::clone(m),
    }));
    registry.register(
        "sessiond_http_request_seconds_sum",
        "Time spent serving requests",
        m.seconds.clone(),
    );
    registry.register_collector(Box::new(DaemonCollector(stats)));
    let mut out = String::with_capacity(4096);
    if let Err(e) = prometheus_text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    out
}

async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.client.stats().await.ok();
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        render(&state, stats),
    )
        .into_response()
}

/// The OpenAPI document of everything the bridge serves.
#[must_use]
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for (p, s) in crate::apis::openapi_parts()
        .into_iter()
        .chain([ops_openapi(), crate::events::openapi()])
    {
        if let Value::Object(p) = p {
            for (path, item) in p {
                // Two modules may serve different methods of one path (/session).
                match paths.get_mut(&path) {
                    Some(Value::Object(existing)) => {
                        if let Value::Object(more) = item {
                            existing.extend(more);
                        }
                    }
                    _ => {
                        paths.insert(path, item);
                    }
                }
            }
        }
        if let Value::Object(s) = s {
            schemas.extend(s);
        }
    }
    add_guard_responses(&mut paths);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "sessiond-http",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The session APIs of shared/reference/, served over one sessiond store."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or access token"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "_my_session_id"},
                "conceptSession": {"type": "apiKey", "in": "cookie", "name": "concept_session"}
            }
        }
    })
}

/// The answers any operation may get before its handler runs (see
/// `guard` and `serve`), added where an API's description does not already
/// give them: 400 (a head that does not parse, two `Host` headers), 408
/// (head or body too slow), 413 (body over the limit), 414 (request target
/// over 65534 bytes), 431 (too many or too large headers), 500 (a handler failed), 503
/// (connection cap), 507 (store full, on the APIs' routes), 429 on the
/// rate-limited anonymous creates. All of them are JSON.
fn add_guard_responses(paths: &mut serde_json::Map<String, Value>) {
    let generic = |description: &str| {
        json!({"description": description,
               "content": {"application/json": {"schema": {"type": "object"}}}})
    };
    for (path, item) in paths.iter_mut() {
        let Value::Object(item) = item else { continue };
        let api_route = !matches!(
            path.as_str(),
            "/healthz" | "/metrics" | "/openapi.json" | "/events"
        );
        for (method, op) in item.iter_mut() {
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut add = |code: &str, description: &str| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| generic(description));
            };
            add(
                "400",
                "the request line or a header could not be parsed, or more than one Host header",
            );
            add("408", "the request's head or body did not arrive in time");
            add("413", "the request body is over the limit");
            add("414", "the request target is over the limit");
            add("431", "too many request headers, or too large a head");
            add("500", "the request could not be completed");
            add(
                "503",
                "the bridge is at its connection limit or the store is unreachable",
            );
            if api_route {
                add(
                    "507",
                    "the session store is full (its memory limit is reached)",
                );
            }
            let anonymous_create = method == "post"
                && matches!(
                    path.as_str(),
                    "/api/session" | "/api/session/" | "/api/session/sync" | "/create"
                );
            if anonymous_create {
                add(
                    "429",
                    "too many sessions created from this address (Retry-After)",
                );
            }
        }
    }
}

fn ops_openapi() -> (Value, Value) {
    (
        json!({
            "/healthz": {"get": {"summary": "Health of the bridge and its daemon", "responses": {
                "200": {"description": "up", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": {"description": "the daemon is unreachable", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
        }),
        json!({}),
    )
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}
