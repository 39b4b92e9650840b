//! The `http://HOST:PORT` target: the bridge's user-session-cache API
//! (`sessiond-http`, `user-session-cache-api.md`) over keep-alive HTTP/1.1.
//!
//! The workload's requests map onto that API as follows:
//! - create: `POST /create` for a user id never used before;
//! - get: `GET /session?user_id=` of a preloaded user;
//! - get-touch: the same `GET /session`: the cache API has no sliding read
//!   (its sessions expire at `created_at + ttl`), so nothing is touched;
//! - update: `POST /create` for a preloaded user, which replaces that user's
//!   session (the API's only write to an existing session);
//! - create+delete (mixed): a `POST /create` for a new user; the API has no delete.
//!
//! `--value-size` sets the length of the `token` field, the only free-form
//! field of a session (at most [`MAX_TOKEN`] bytes). A non-2xx answer is a
//! failed request.
//!
//! HTTP/1.1 carries one request at a time per connection, so the pool's
//! `--connections` connections bound the requests in flight: set it to
//! `--concurrency` (times `--pipeline`) to put every task on the wire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

/// Longest `token` the cache API accepts.
pub const MAX_TOKEN: usize = 4096;

/// What a request came to: `Ok(())`, or why it failed (a non-2xx status or a
/// broken exchange), for counting or for the preload's error message.
pub type Answer = Result<(), String>;

/// A pooled client of one bridge.
#[derive(Debug)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://HOST:PORT`, without a trailing slash.
    base: String,
    /// One permit per pooled connection: at most that many requests in flight,
    /// so the pool never opens more connections than asked for.
    slots: Semaphore,
    /// Prefix of this run's user ids, so that "fresh" users are fresh even
    /// against a bridge that kept an earlier run's data.
    run: String,
    /// Next fresh user number.
    fresh: AtomicU64,
    /// The `token` every session gets (`--value-size` bytes).
    token: String,
    /// Session ttl in seconds.
    ttl_secs: u64,
}

/// Checks an `http://HOST:PORT` target and returns it without a trailing slash.
///
/// # Errors
/// Another scheme, no host, or a path, query or userinfo after the address.
pub fn parse_base(url: &str) -> anyhow::Result<String> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url:?} is not an http:// URL (https is not supported)");
    }
    let Some(authority) = uri.authority() else {
        bail!("{url:?} names no HOST:PORT");
    };
    if authority.host().is_empty() || authority.as_str().contains('@') {
        bail!("{url:?} must be http://HOST:PORT");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("{url:?} must be http://HOST:PORT, without a path: the API's paths are fixed");
    }
    Ok(format!("http://{authority}"))
}

impl Http {
    /// A client of the bridge at `url` with `connections` keep-alive
    /// connections, checked with one `GET /healthz`.
    ///
    /// # Errors
    /// A bad URL, a `value_size` above [`MAX_TOKEN`], or no bridge answering.
    pub async fn connect(
        url: &str,
        connections: usize,
        value_size: usize,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        let base = parse_base(url)?;
        if value_size > MAX_TOKEN {
            bail!("--value-size {value_size} is too large for an http:// target: it is the length of the cache API's token, at most {MAX_TOKEN} bytes");
        }
        let connections = connections.max(1);
        let mut connector = HttpConnector::new();
        // Small requests and answers: do not let Nagle hold them back.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .build(connector);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let me = Self {
            client,
            base,
            slots: Semaphore::new(connections),
            run: format!("bench{nanos:x}"),
            fresh: AtomicU64::new(0),
            token: "t".repeat(value_size.max(1)),
            ttl_secs: ttl.as_secs().max(1),
        };
        let health = Request::get(format!("{}/healthz", me.base)).body(Full::default())?;
        me.send(health)
            .await
            .with_context(|| format!("connecting to the bridge at {}", me.base))?
            .map_err(|e| anyhow::anyhow!("GET {}/healthz: {e}", me.base))?;
        Ok(me)
    }

    /// The user id of preloaded session `i`.
    #[must_use]
    pub fn user(&self, i: usize) -> String {
        format!("{}-{i}", self.run)
    }

    /// A user id no request of this run has used.
    #[must_use]
    pub fn fresh_user(&self) -> String {
        format!(
            "{}-n{}",
            self.run,
            self.fresh.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `POST /create`: creates or replaces `user_id`'s session.
    ///
    /// # Errors
    /// Only when the bridge cannot be reached at all.
    pub async fn create(&self, user_id: &str) -> anyhow::Result<Answer> {
        let body = serde_json::to_vec(&serde_json::json!({
            "user_id": user_id,
            "token": self.token,
            "ttl": self.ttl_secs,
        }))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/create", self.base))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        self.send(req).await
    }

    /// `GET /session?user_id=`: reads `user_id`'s session (ids here need no
    /// escaping: they are letters, digits and dashes).
    ///
    /// # Errors
    /// Only when the bridge cannot be reached at all.
    pub async fn get(&self, user_id: &str) -> anyhow::Result<Answer> {
        let req = Request::get(format!("{}/session?user_id={user_id}", self.base))
            .body(Full::default())?;
        self.send(req).await
    }

    /// Sends `req` on a pooled connection and reads the whole answer (so the
    /// connection can be reused).
    async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let _slot = self.slots.acquire().await?;
        let resp = match self.client.request(req).await {
            Ok(resp) => resp,
            // Nothing listens: every further request would fail the same way.
            Err(e) if e.is_connect() => return Err(anyhow::Error::new(e)),
            Err(e) => return Ok(Err(e.to_string())),
        };
        let status = resp.status();
        if let Err(e) = resp.into_body().collect().await {
            return Ok(Err(format!("reading the answer: {e}")));
        }
        Ok(answer(status))
    }
}

fn answer(status: StatusCode) -> Answer {
    if status.is_success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_base;

    #[test]
    fn http_targets_parse_to_their_base() {
        for (url, base) in [
            ("http://127.0.0.1:18080", "http://127.0.0.1:18080"),
            ("http://127.0.0.1:18080/", "http://127.0.0.1:18080"),
            ("http://localhost:8080", "http://localhost:8080"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(parse_base(url).ok().as_deref(), Some(base), "{url}");
        }
        for url in [
            "https://127.0.0.1:8080",
            "http://127.0.0.1:8080/api",
            "http://127.0.0.1:8080/?x=1",
            "http://user@127.0.0.1:8080",
            "127.0.0.1:8080",
            "http://",
        ] {
            assert!(parse_base(url).is_err(), "{url} was accepted");
        }
    }
}
