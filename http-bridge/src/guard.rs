//! What every request passes before a handler sees it:
//!
//! - More than one `Host` header: `400` (RFC 9112, section 3.2).
//! - A `Content-Length` over `--max-body-bytes`: `413` at once, from the
//!   header, before a byte of the body is read (so `Expect: 100-continue`
//!   is never answered `100 Continue` for it).
//! - The body is read whole within `--body-timeout` (`408` otherwise) and
//!   within `--max-body-bytes` (`413` for a chunked body that grows past it).
//! - The routes that create sessions without credentials (the anonymous
//!   API's `POST /api/session` and `/api/session/sync`, the cache API's
//!   `POST /create`) are rate limited per client address (IPv6 by /64):
//!   a token bucket of `--create-burst` refilled at `--create-rate` per
//!   second; past it `429` with `Retry-After`.
//!
//! Answers from here are JSON in the envelope of the API the path belongs
//! to ([`crate::apis::error_for_path`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

use crate::state::AppState;

/// Client addresses tracked by the rate limiter at most; past that, new
/// addresses share one bucket until old ones are forgotten.
const MAX_TRACKED: usize = 65_536;

/// What is refused, for its answer in the right envelope.
struct Refusal<'a> {
    method: &'a Method,
    path: &'a str,
}

impl Refusal<'_> {
    fn answer(&self, status: StatusCode, code: &str, message: impl AsRef<str>) -> Response {
        crate::apis::error_for_path(self.method, self.path, status, code, message.as_ref())
    }
}

/// Whether `method path` creates a session without credentials.
fn creates_anonymously(method: &Method, path: &str) -> bool {
    method == Method::POST
        && matches!(
            path,
            "/api/session" | "/api/session/" | "/api/session/sync" | "/create"
        )
}

/// Per-address token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` tokens a second, at most `burst` saved; `rate` 0 turns it off.
    #[must_use]
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The key of a client address: IPv4 as is, IPv6 by its /64 (one host
    /// commonly holds a whole /64).
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }

    /// Takes a token for `ip`; `Err(wait)` if there is none.
    ///
    /// # Errors
    /// How long until a token is there.
    pub fn take(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        // Unknown and overflowing addresses share the unspecified address's bucket.
        let mut key = ip.map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), Self::key);
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED {
            // Forget the buckets that have refilled: they hold nothing.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_TRACKED {
                key = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
            }
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// The middleware (see the module's documentation).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let reject = Refusal {
        method: &method,
        path: &path,
    };
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return reject.answer(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "more than one Host header",
        );
    }
    let limit = state.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(&reject, limit);
    }
    if creates_anonymously(req.method(), req.uri().path()) {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Err(wait) = state.create_limiter.take(ip, Instant::now()) {
            state
                .metrics
                .rate_limited_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut r = reject.answer(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many sessions created from this address; retry later",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            return r;
        }
    }
    let (parts, body) = req.into_parts();
    let timeout = state.config.body_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_big {
                return too_large(&reject, limit);
            }
            return reject.answer(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            );
        }
        Err(_) => {
            let mut r = reject.answer(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body was not complete within {} ms",
                    timeout.as_millis()
                ),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large(reject: &Refusal<'_>, limit: usize) -> Response {
    let mut r = reject.answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is over the limit of {limit} bytes"),
    );
    // The rest of the body is not read: the connection cannot be reused.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_bucket_refills_at_its_rate_and_holds_its_burst() {
        let l = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.take(Some(a), t0).is_ok());
        }
        let wait = l.take(Some(a), t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        // Another address has its own bucket.
        assert!(l.take(Some(b), t0).is_ok());
        // Half a second later one token (2/s) is back.
        assert!(l.take(Some(a), t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take(Some(a), t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_bucket() {
        let l = RateLimiter::new(1.0, 1);
        let t0 = Instant::now();
        assert!(l.take(Some("2001:db8::1".parse().unwrap()), t0).is_ok());
        assert!(l
            .take(Some("2001:db8::ffff:2".parse().unwrap()), t0)
            .is_err());
        assert!(l.take(Some("2001:db8:0:1::1".parse().unwrap()), t0).is_ok());
    }

    #[test]
    fn rate_zero_is_off() {
        let l = RateLimiter::new(0.0, 1);
        for _ in 0..100 {
            assert!(l.take(None, Instant::now()).is_ok());
        }
    }
}
