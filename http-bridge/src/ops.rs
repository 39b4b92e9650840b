//! Operations routes: `/healthz`, `/metrics` (Prometheus text) and
//! `/openapi.json`, plus the middleware that counts every request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use serde::Serialize;
use sessiond::metrics::{counter, gauge};
use sessiond_client::StatsReply;
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}

/// The health of the bridge and its daemon.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (the store is full: writes are refused, reads work)
    /// or `unavailable` (the daemon does not answer).
    #[schema(value_type = String, examples("ok", "degraded", "unavailable"))]
    status: &'static str,
    /// `up` or `down`.
    #[schema(value_type = String)]
    daemon: &'static str,
    /// `ok` or `full` (while the daemon answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    store: Option<&'static str>,
    /// The round trip of a ping to the daemon, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon_rtt_us: Option<u64>,
    /// Why the daemon is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Health of the bridge and its daemon
///
/// `200` while the daemon answers: `"status": "ok"`, or `"degraded"` with
/// `"store": "full"` while writes are refused for memory (reads still work,
/// and another bridge over the same store would not do better); `503` when
/// the daemon does not answer.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "the daemon answers", body = Health),
    (status = 503, description = "the daemon is unreachable", body = Health),
))]
async fn healthz(State(state): State<AppState>) -> Response {
    match state.client.ping().await {
        Ok(rtt) => {
            let full = state.store_full();
            Json(Health {
                status: if full { "degraded" } else { "ok" },
                daemon: "up",
                store: Some(if full { "full" } else { "ok" }),
                daemon_rtt_us: Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)),
                error: None,
            })
            .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
                daemon: "down",
                store: None,
                daemon_rtt_us: None,
                error: Some(e.to_string()),
            }),
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

/// Prometheus metrics
///
/// The bridge's own counters and the daemon's, in the Prometheus text
/// format (names in the README).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "the metrics", content_type = "text/plain", body = String),
))]
async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.client.stats().await.ok();
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        render(&state, stats),
    )
        .into_response()
}

/// The root of the OpenAPI document: what the routes do not say.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sessiond-http",
        description = "The session APIs of shared/reference/, served over one sessiond store."
    ),
    components(schemas(crate::events::EventData)),
    modifiers(&SecuritySchemes)
)]
pub struct BridgeDoc;

/// The credentials the APIs take.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or access token")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "sessionCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::apis::session_auth::SESSION_COOKIE,
            ))),
        );
        components.add_security_scheme(
            "conceptSession",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::apis::anonymous::COOKIE,
            ))),
        );
    }
}

/// The OpenAPI document of everything the bridge serves, generated from the
/// routes' annotations and the request and response types (utoipa), with
/// the answers the guard and the server give before any handler runs.
#[must_use]
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = crate::documented_routes().split_for_parts();
    add_guard_responses(&mut doc);
    doc
}

/// The answers any operation may get before its handler runs (see
/// `guard` and `serve`), added where an API's description does not already
/// give them: 400 (a head that does not parse, two `Host` headers), 408
/// (head or body too slow), 413 (body over the limit), 414 (request target
/// over 65534 bytes), 431 (too many or too large headers), 500 (a handler failed), 503
/// (connection cap), 507 (store full, on the APIs' routes), 429 on the
/// rate-limited anonymous creates. All of them are JSON.
fn add_guard_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, ObjectBuilder, ResponseBuilder};
    let generic = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new()))
                    .build(),
            )
            .build()
    };
    for (path, item) in &mut doc.paths.paths {
        let api_route = !matches!(
            path.as_str(),
            "/healthz" | "/metrics" | "/openapi.json" | "/events"
        );
        let operations = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, op) in operations {
            let Some(op) = op else { continue };
            let responses = &mut op.responses.responses;
            let mut add = |code: &str, description: &str| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| generic(description).into());
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

/// The document, built once.
static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    openapi_document()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"openapi\",\"message\":\"{e}\"}}"))
});

/// This document
///
/// The OpenAPI description of every route the bridge serves.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "OpenAPI 3.1", body = Object),
))]
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    fn refs(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.insert(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// The generated document holds together: every `$ref` names a schema
    /// it defines, operation ids are unique, and every operation lists the
    /// answers given before its handler runs.
    #[test]
    fn the_generated_document_is_consistent() {
        let doc: Value = serde_json::from_str(&super::DOCUMENT).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut found = BTreeSet::new();
        refs(&doc, &mut found);
        for r in &found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.contains_key(name), "{r} is not defined");
        }
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "{method} {path}: {id} twice");
                for code in ["400", "413", "500", "503"] {
                    assert!(op["responses"][code].is_object(), "{method} {path} {code}");
                }
            }
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert!(schemas.contains_key("EventData"));
    }
}
