//! The HTTP server loop: HTTP/1.1 on hyper, with every resource a stranger
//! can make the bridge hold bounded in time or count.
//!
//! - At most `--max-connections` connections; one past that is answered
//!   `503` (JSON, `Retry-After: 1`) and closed, so descriptors stay for those
//!   being served (and for `/healthz`).
//! - A request's head (request line and headers) must arrive within
//!   `--header-timeout` of its first byte; one that trickles is answered
//!   `408` (JSON) and closed. A new connection that sends nothing at all is
//!   closed after the same time.
//! - A keep-alive connection idle between requests is closed after
//!   `--idle-timeout`.
//! - Bodies are read within `--body-timeout` by [`crate::guard`], which
//!   answers `408` itself.
//! - Heads are bounded by hyper's parser: at most [`MAX_HEADERS`] headers
//!   and [`MAX_HEAD_BYTES`] for the request line and headers together (`431`),
//!   a request target of at most 65534 bytes (`414`, hyper's fixed limit);
//!   a head that does not parse is `400`. Hyper answers these itself with an
//!   empty body; `Watched` holds that answer back and the loop here sends
//!   a JSON one instead, in the envelope of the API the request line's path
//!   belongs to ([`crate::apis::error_for_path`]), then closes. Memory: a
//!   connection's read buffer grows to about `MAX_HEAD_BYTES` (twice that
//!   at worst while it grows), so heads hold at most about
//!   `2 * MAX_HEAD_BYTES * max_connections` (768 MiB at the default cap of
//!   4096 connections; hyper's own default buffer would allow four times that).
//! - A handler that panics is answered `500` (JSON, in its API's envelope)
//!   rather than dropping the connection unanswered.
//!
//! The head deadline is watched here rather than left to hyper's
//! `header_read_timeout` (turned off), which closes without an answer and
//! runs from the end of the previous response (so it would double as the
//! idle timeout).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// How often each connection's deadlines are checked.
const TICK: Duration = Duration::from_millis(100);

/// Most headers in a request; past it `431`.
pub const MAX_HEADERS: usize = 100;

/// Most bytes of a request's head (request line and headers) held while it
/// is parsed; past it `431` (hyper's read buffer limit, which also caps what
/// a connection buffers). Above hyper's fixed 65534-byte limit on the
/// request target, so that a long target is told `414`.
pub const MAX_HEAD_BYTES: usize = 32 * 1024 + 64 * 1024;

/// Bytes of a new request's first read kept to name its method and path in
/// a `408` answered before the head is complete.
const HEAD_CAPTURE: usize = 512;

/// The server's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A request head must be complete this long after its first byte.
    pub header_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    pub idle_timeout: Duration,
}

/// What the server counts (for `/metrics`).
#[derive(Debug, Default)]
pub struct ServeMetrics {
    /// Open connections.
    pub connections: AtomicU64,
    /// Connections refused at the cap.
    pub refused_total: AtomicU64,
    /// Requests answered 408 because their head was too slow.
    pub header_timeouts_total: AtomicU64,
    /// Connections closed idle.
    pub idle_closed_total: AtomicU64,
}

/// One connection's progress, as its reads and its requests show it.
#[derive(Debug)]
struct ConnState {
    /// Requests being served.
    in_flight: usize,
    /// Requests seen.
    requests: u64,
    /// When the last request ended (or the connection was accepted).
    idle_since: Instant,
    /// When bytes of a request not yet handed to the service arrived first.
    head_started: Option<Instant>,
    /// The first bytes read since the last request was handed over (for the
    /// envelope of a `408`; best effort: a pipelined head may start earlier).
    head_bytes: Vec<u8>,
    /// The status of hyper's own answer to a head it could not parse, held
    /// back (not written) so that a JSON one is sent instead.
    held_back: Option<u16>,
}

enum Verdict {
    Fine,
    Idle,
    HeadTooSlow,
}

impl ConnState {
    fn check(&self, now: Instant, limits: &Limits) -> Verdict {
        if self.in_flight > 0 {
            return Verdict::Fine;
        }
        if let Some(started) = self.head_started {
            if now.duration_since(started) > limits.header_timeout {
                return Verdict::HeadTooSlow;
            }
            return Verdict::Fine;
        }
        // A connection that never sent a byte gets the head's time.
        let allowed = if self.requests == 0 {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        if now.duration_since(self.idle_since) > allowed {
            Verdict::Idle
        } else {
            Verdict::Fine
        }
    }
}

/// The socket, noting when bytes of a new request arrive.
struct Watched {
    inner: TcpStream,
    state: Arc<Mutex<ConnState>>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let mut s = self.state.lock();
            if s.in_flight == 0 {
                if s.head_started.is_none() {
                    s.head_started = Some(Instant::now());
                }
                let room = HEAD_CAPTURE.saturating_sub(s.head_bytes.len());
                let new = &buf.filled()[before..];
                s.head_bytes.extend_from_slice(&new[..new.len().min(room)]);
            }
        }
        r
    }
}

/// Where hyper's own answer to an unparsable head starts in `buf`, and its
/// status: a head at the very end of `buf` with a status hyper gives parse
/// errors (400, 414, 431) and no header but `content-length: 0`, `date` and
/// `connection`. Every answer of the application at or above 400 carries a
/// JSON `content-type` (see `crate::json_errors`), so such a head is hyper's.
fn hyper_parse_error_answer(buf: &[u8]) -> Option<(usize, u16)> {
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    // The head is short: look for its status line in the last bytes only.
    let from = buf.len().saturating_sub(256);
    let tail = &buf[from..];
    let start = tail.windows(9).rposition(|w| w == b"HTTP/1.1 ")?;
    let head = std::str::from_utf8(&tail[start..]).ok()?;
    let mut lines = head.strip_suffix("\r\n\r\n")?.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.get(9..12)?.parse().ok()?;
    if !matches!(status, 400 | 414 | 431) {
        return None;
    }
    let mut length_zero = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" if value.trim() == "0" => length_zero = true,
            "date" | "connection" => {}
            _ => return None,
        }
    }
    length_zero.then_some((from + start, status))
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Hyper's bare answer to a head it could not parse is the last thing
        // it writes: what comes before it is sent, the answer itself held back.
        let Some((at, status)) = hyper_parse_error_answer(buf) else {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        };
        if at > 0 {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..at]))?;
            if n < at {
                return Poll::Ready(Ok(n));
            }
        }
        self.state.lock().held_back = Some(status);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then hands each write as one buffer, in which its
    // answer to an unparsable head can be recognised (see `poll_write`).
}

/// Marks a request ended when dropped (answered or abandoned).
struct InFlight(Arc<Mutex<ConnState>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight -= 1;
        s.idle_since = Instant::now();
    }
}

/// A complete HTTP/1.1 answer written straight to a socket, for the cases
/// where no request reached the application.
fn raw_response(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The method and path of the request line at the start of `head`, if it
/// reads as one (`METHOD SP /path...`); the path may be cut short.
fn request_line(head: &[u8]) -> Option<(axum::http::Method, String)> {
    let sp = head.iter().take(32).position(|&b| b == b' ')?;
    let method = axum::http::Method::from_bytes(&head[..sp]).ok()?;
    let rest = &head[sp + 1..];
    if rest.first() != Some(&b'/') {
        return None;
    }
    let end = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b'?' | b'#' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    let path = std::str::from_utf8(&rest[..end.min(1024)]).ok()?;
    Some((method, path.to_owned()))
}

/// A JSON answer (in the envelope of the API the request line in `head`
/// names, neutral if none) to a request that never reached the application;
/// the connection is closed after it.
async fn envelope_response(
    head: &[u8],
    status: axum::http::StatusCode,
    code: &str,
    message: &str,
) -> Vec<u8> {
    use http_body_util::BodyExt;
    let (method, path) = request_line(head).unwrap_or((axum::http::Method::GET, "/".to_owned()));
    let response = crate::apis::error_for_path(&method, &path, status, code, message);
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        if matches!(
            name.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// What hyper's parse error `status` is told, in JSON.
fn parse_error_answer(status: u16) -> (axum::http::StatusCode, &'static str, String) {
    use axum::http::StatusCode;
    match status {
        414 => (
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the request target is over the limit of 65534 bytes".to_owned(),
        ),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            format!(
                "the request head is over the limit of {MAX_HEADERS} headers or {MAX_HEAD_BYTES} bytes"
            ),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request line or a header could not be parsed".to_owned(),
        ),
    }
}

/// Runs `fut`, turning a panic into `Err(())`.
async fn catch_panic<F: std::future::Future>(fut: F) -> Result<F::Output, ()> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(p) => p.map(Ok),
            Err(_) => Poll::Ready(Err(())),
        }
    })
    .await
}

/// Serves `app` on `listener` until `shutdown`, then lets the requests in
/// hand finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<ServeMetrics>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: back off, keep the listener.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.refused_total.fetch_add(1, Ordering::Relaxed);
            tracker.spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let app = app.clone();
        let metrics = Arc::clone(&metrics);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            metrics.connections.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = connection(stream, peer, app, limits, &metrics, shutdown).await {
                debug!(error = %e, "connection ended with an error");
            }
            metrics.connections.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Tells a connection over the cap why it is closed.
async fn refuse(mut stream: TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    warn!(
        max_connections = max,
        "connection refused: at the connection limit"
    );
    let answer = raw_response(
        "503 Service Unavailable",
        "too_many_connections",
        &format!("the bridge is at its limit of {max} connections; retry shortly"),
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
    let _ = stream.shutdown().await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    metrics: &ServeMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, to answer 408 past hyper (which owns
    // the first) when a head is too slow.
    let std = stream.into_std()?;
    let side = std.try_clone()?;
    let stream = TcpStream::from_std(std)?;
    let state = Arc::new(Mutex::new(ConnState {
        in_flight: 0,
        requests: 0,
        idle_since: Instant::now(),
        head_started: None,
        head_bytes: Vec::new(),
        held_back: None,
    }));
    let io = TokioIo::new(Watched {
        inner: stream,
        state: Arc::clone(&state),
    });
    let svc_state = Arc::clone(&state);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        {
            let mut s = svc_state.lock();
            s.in_flight += 1;
            s.requests += 1;
            s.head_started = None;
            s.head_bytes.clear();
        }
        let guard = InFlight(Arc::clone(&svc_state));
        req.extensions_mut().insert(ConnectInfo(peer));
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let app = app.clone();
        Box::pin(async move {
            let r = match catch_panic(app.oneshot(req)).await {
                Ok(r) => r,
                Err(()) => {
                    warn!(%peer, %method, %path, "a handler panicked: 500");
                    let mut r = crate::apis::error_for_path(
                        &method,
                        &path,
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "internal_error",
                        "the request could not be completed",
                    );
                    r.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                    Ok(r)
                }
            };
            drop(guard);
            r
        })
    });
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true)
        .writev(false)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                if let Err(e) = &r {
                    debug!(error = %e, "http connection error");
                }
                let held_back = state.lock().held_back;
                let parts = conn.into_parts();
                let mut io = parts.io.into_inner().inner;
                use tokio::io::AsyncWriteExt;
                if let Some(status) = held_back {
                    let (status, code, message) = parse_error_answer(status);
                    info!(%peer, status = status.as_u16(), "request head refused");
                    let answer = envelope_response(&parts.read_buf, status, code, &message).await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(&answer)).await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                return Ok(());
            }
            () = shutdown.cancelled(), if !closing => {
                Pin::new(&mut conn).graceful_shutdown();
                closing = true;
            }
            _ = tick.tick(), if !closing => {
                let verdict = state.lock().check(Instant::now(), &limits);
                match verdict {
                    Verdict::Fine => {}
                    Verdict::Idle => {
                        metrics.idle_closed_total.fetch_add(1, Ordering::Relaxed);
                        Pin::new(&mut conn).graceful_shutdown();
                        closing = true;
                    }
                    Verdict::HeadTooSlow => {
                        metrics.header_timeouts_total.fetch_add(1, Ordering::Relaxed);
                        info!(%peer, "request head not complete in time: 408");
                        let head = std::mem::take(&mut state.lock().head_bytes);
                        let answer = envelope_response(
                            &head,
                            axum::http::StatusCode::REQUEST_TIMEOUT,
                            "request_timeout",
                            &format!(
                                "the request head was not complete within {} ms",
                                limits.header_timeout.as_millis()
                            ),
                        )
                        .await;
                        // Best effort on a non-blocking socket: an answer this
                        // small fits the send buffer of any live connection.
                        let mut side = side;
                        let _ = std::io::Write::write(&mut side, &answer);
                        let _ = side.shutdown(std::net::Shutdown::Both);
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 10,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        }
    }

    fn state(
        in_flight: usize,
        requests: u64,
        idle_for: u64,
        head_for: Option<u64>,
    ) -> (ConnState, Instant) {
        let now = Instant::now() + Duration::from_secs(100);
        (
            ConnState {
                in_flight,
                requests,
                idle_since: now - Duration::from_millis(idle_for),
                head_started: head_for.map(|ms| now - Duration::from_millis(ms)),
                head_bytes: Vec::new(),
                held_back: None,
            },
            now,
        )
    }

    #[test]
    fn each_deadline_applies_in_its_phase() {
        let l = limits();
        let verdict = |s: (ConnState, Instant)| s.0.check(s.1, &l);
        // A request being served is never timed here (its body has its own).
        assert!(matches!(
            verdict(state(1, 1, 60_000, Some(60_000))),
            Verdict::Fine
        ));
        // A head trickling past 1 s.
        assert!(matches!(
            verdict(state(0, 3, 0, Some(1_500))),
            Verdict::HeadTooSlow
        ));
        assert!(matches!(verdict(state(0, 3, 0, Some(500))), Verdict::Fine));
        // A silent new connection gets the head's time, a kept-alive one the idle time.
        assert!(matches!(verdict(state(0, 0, 1_500, None)), Verdict::Idle));
        assert!(matches!(verdict(state(0, 2, 1_500, None)), Verdict::Fine));
        assert!(matches!(verdict(state(0, 2, 5_500, None)), Verdict::Idle));
    }
}
