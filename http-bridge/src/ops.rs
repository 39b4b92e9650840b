//! Operations routes: `/healthz`, `/metrics` (Prometheus text) and
//! `/openapi.json`, plus the middleware that counts every request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::state::AppState;

/// (method, route template, status).
type RequestKey = (String, String, u16);

/// Request counters by (method, route template, status): (count, seconds).
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, (u64, f64)>>,
    /// Requests refused by the anonymous-create rate limit.
    pub rate_limited_total: std::sync::atomic::AtomicU64,
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
    let mut m = state.metrics.requests.lock();
    let e = m
        .entry((method, route, response.status().as_u16()))
        .or_insert((0, 0.0));
    e.0 += 1;
    e.1 += secs;
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

async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    out.push_str(
        "# HELP sessiond_http_requests_total HTTP requests by method, route and status.\n",
    );
    out.push_str("# TYPE sessiond_http_requests_total counter\n");
    let snapshot: Vec<_> = state
        .metrics
        .requests
        .lock()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for ((method, route, status), (count, _)) in &snapshot {
        let _ = writeln!(
            out,
            "sessiond_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
        );
    }
    {
        use std::sync::atomic::Ordering::Relaxed;
        let sm = &state.serve_metrics;
        for (name, kind, help, v) in [
            (
                "sessiond_http_connections",
                "gauge",
                "Open HTTP connections.",
                sm.connections.load(Relaxed),
            ),
            (
                "sessiond_http_connections_refused_total",
                "counter",
                "Connections refused at --max-connections.",
                sm.refused_total.load(Relaxed),
            ),
            (
                "sessiond_http_header_timeouts_total",
                "counter",
                "Requests answered 408 because their head was not complete in time.",
                sm.header_timeouts_total.load(Relaxed),
            ),
            (
                "sessiond_http_idle_closed_total",
                "counter",
                "Connections closed idle.",
                sm.idle_closed_total.load(Relaxed),
            ),
            (
                "sessiond_http_rate_limited_total",
                "counter",
                "Anonymous creates refused by the per-address rate limit.",
                state.metrics.rate_limited_total.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
    out.push_str("# HELP sessiond_http_request_seconds_sum Time spent serving requests.\n");
    out.push_str("# TYPE sessiond_http_request_seconds_sum counter\n");
    for ((method, route, status), (_, secs)) in &snapshot {
        let _ = writeln!(
            out,
            "sessiond_http_request_seconds_sum{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {secs}"
        );
    }
    let up = match state.client.stats().await {
        Ok(s) => {
            out.push_str("# TYPE sessiond_records gauge\n");
            for ns in &s.namespaces {
                let _ = writeln!(
                    out,
                    "sessiond_records{{namespace=\"{}\"}} {}",
                    ns.namespace, ns.records
                );
            }
            let _ = writeln!(
                out,
                "# TYPE sessiond_expired_total counter\nsessiond_expired_total {}",
                s.expired_total
            );
            let _ = writeln!(
                out,
                "# TYPE sessiond_ops_total counter\nsessiond_ops_total {}",
                s.ops_total
            );
            let _ = writeln!(
                out,
                "# TYPE sessiond_memory_bytes gauge\nsessiond_memory_bytes {}",
                s.memory_bytes
            );
            1
        }
        Err(_) => 0,
    };
    let _ = writeln!(out, "# HELP sessiond_up Whether the daemon answered.\n# TYPE sessiond_up gauge\nsessiond_up {up}");
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
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
        .chain([ops_openapi()])
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
        let api_route = !matches!(path.as_str(), "/healthz" | "/metrics" | "/openapi.json");
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
