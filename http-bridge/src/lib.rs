//! sessiond-http: a thin REST bridge that serves every session API documented in
//! `shared/reference/` at its documented paths, all at once, over one sessiond
//! store, through [`sessiond_client`].
//!
//! Modules:
//! - [`config`]: flags, `SESSIOND_HTTP_*` environment variables.
//! - [`state`]: what every handler shares (the client, the settings, metrics).
//! - [`apis`]: one module per reference document.
//! - [`ops`]: `/healthz`, `/metrics`, `/openapi.json`.
//! - [`events`]: `GET /events`, session events as Server-Sent Events for administrators.
//! - [`serve`]: the HTTP/1.1 server loop (connection cap, head and idle
//!   timeouts).
//! - [`guard`]: what every request passes first (one `Host`, body size and
//!   time, the anonymous-create rate limit).
//! - [`users`]: the user directory (kept in sessiond), argon2id passwords.
//! - [`auth`]: bearer access tokens shared by the APIs.
//!
//! With no `--daemon`, [`Bridge::start`] starts an embedded daemon in the same process
//! (its native protocol still on its loopback port), so one command brings the
//! whole system up.

pub mod apis;
pub mod auth;
pub mod config;
pub mod events;
pub mod guard;
pub mod ops;
pub mod serve;
pub mod state;
pub mod users;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use sessiond_client::{Client, ClientConfig};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;
pub use state::AppState;

/// Every route, with its OpenAPI description (see [`ops::openapi_document`]).
pub fn documented_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa::OpenApi as _;
    utoipa_axum::router::OpenApiRouter::with_openapi(ops::BridgeDoc::openapi())
        .merge(apis::routes())
        .merge(ops::routes())
        .merge(events::routes())
}

/// The whole HTTP surface over `state`.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let (routes, _) = documented_routes().split_for_parts();
    routes
        // An unknown path or method is answered in JSON too, in the envelope
        // of the API the path belongs to.
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        // Every body is bounded in size and time, read before any handler
        // runs (see `guard`); the extractors' own limit stays as a second line.
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::track,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// Every answer at or above 400 is JSON: one that is not (a rejection of an
/// extractor, a layer's own answer) is rewritten in the envelope of the API
/// its path belongs to ([`apis::error_for_path`]), keeping its status and
/// headers (`Allow`, `Retry-After`, ...). `serve` relies on this to tell
/// hyper's own bare answers from the application's.
pub async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = std::str::from_utf8(&text).unwrap_or("").trim();
    let reason = status.canonical_reason().unwrap_or("error");
    let message = if text.is_empty() { reason } else { text };
    let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    let mut out = apis::error_for_path(&method, &path, status, &code, message);
    for name in parts.headers.keys() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().remove(name);
            for value in parts.headers.get_all(name) {
                out.headers_mut().append(name.clone(), value.clone());
            }
        }
    }
    out
}

async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> axum::response::Response {
    apis::error_for_path(
        &method,
        uri.path(),
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such route",
    )
}

async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> axum::response::Response {
    apis::error_for_path(
        &method,
        uri.path(),
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The embedded daemon's settings: sessiond's defaults (or
/// `--daemon-config`), then the limits passed through.
fn embedded_daemon_config(config: &Config) -> Result<sessiond::Config, Error> {
    let args = sessiond::config::ServerArgs {
        config: config.daemon_config.clone(),
        listen: Some(config.daemon_listen.to_string()),
        data_dir: Some(config.data_dir.clone()),
        max_memory: config.max_memory.clone(),
        memory_policy: config.memory_policy.clone(),
        fsync: config.fsync.clone(),
        max_connections: config.daemon_max_connections,
        ..Default::default()
    };
    let mut dc = args
        .resolve()
        .map_err(|e| Error::Config(format!("embedded daemon: {e}")))?;
    if config.daemon_config.is_none() {
        dc.store.tombstone_ttl_ms = 10 * 60 * 1000;
    }
    Ok(dc)
}

/// A running bridge (and its embedded daemon, if any).
pub struct Bridge {
    /// Where HTTP is served.
    pub http_addr: SocketAddr,
    /// Where the daemon's native protocol is.
    pub daemon_addr: String,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    daemon: Option<sessiond::Daemon>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("http_addr", &self.http_addr)
            .field("daemon_addr", &self.daemon_addr)
            .finish_non_exhaustive()
    }
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The embedded daemon could not start.
    #[error("embedded daemon: {0}")]
    Daemon(#[from] sessiond::Error),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
}

impl Bridge {
    /// Starts the daemon (unless `config.daemon` names one), the client and
    /// the HTTP server.
    ///
    /// # Errors
    /// [`Error`] if the daemon, the listener or the settings fail.
    pub async fn start(config: Config) -> Result<Self, Error> {
        let embedded_only = [
            ("--max-memory", config.max_memory.is_some()),
            ("--memory-policy", config.memory_policy.is_some()),
            ("--fsync", config.fsync.is_some()),
            (
                "--daemon-max-connections",
                config.daemon_max_connections.is_some(),
            ),
            ("--daemon-config", config.daemon_config.is_some()),
        ];
        if config.daemon.is_some() {
            if let Some((flag, _)) = embedded_only.iter().find(|(_, set)| *set) {
                return Err(Error::Config(format!(
                    "{flag} sets the embedded daemon; with --daemon, set it on that daemon"
                )));
            }
        }
        let (daemon, daemon_addr) = match &config.daemon {
            Some(addr) => (None, addr.clone()),
            None => {
                let dc = embedded_daemon_config(&config)?;
                let d = sessiond::Daemon::start(dc).await?;
                let addr = d.local_addr().to_string();
                info!(addr = %addr, "embedded daemon started");
                (Some(d), addr)
            }
        };
        let mut client_config = ClientConfig::new(daemon_addr.clone())
            .connections(2)
            .client_name("sessiond-http")
            .request_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(1))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2));
        if let Some(token) = &config.daemon_token {
            client_config = client_config.auth_token(token.clone());
        }
        if let Some(ca) = &config.daemon_tls_ca {
            let tls = sessiond_client::TlsConfig::with_ca_file(ca)
                .map_err(|e| Error::Config(e.to_string()))?;
            client_config = client_config.tls(tls);
        }
        let client = Client::connect_lazy(client_config);
        let state = AppState::new(client, config.clone()).map_err(Error::Config)?;
        state.bootstrap().await;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let shutdown: CancellationToken = state.shutdown.clone();
        let limits = serve::Limits {
            max_connections: config
                .max_connections
                .unwrap_or_else(config::default_max_connections)
                .max(1),
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
        };
        let serve_metrics = std::sync::Arc::clone(&state.serve_metrics);
        let app = router(state);
        let server = tokio::spawn(serve::serve(
            listener,
            app,
            limits,
            serve_metrics,
            shutdown.clone(),
        ));
        info!(%http_addr, "http bridge listening");
        Ok(Self {
            http_addr,
            daemon_addr,
            shutdown,
            server,
            daemon,
        })
    }

    /// Stops serving HTTP (finishing requests in hand), then the embedded daemon.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        if let Some(d) = self.daemon {
            d.shutdown().await;
        }
    }
}

/// Runs the `sessiond-http` command line.
#[must_use]
pub fn main() -> std::process::ExitCode {
    config::main()
}
