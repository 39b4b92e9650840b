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
//! - Heads are bounded by hyper (at most 100 headers, `431` past its buffer).
//!
//! The head deadline is watched here rather than left to hyper's
//! `header_read_timeout`, which closes without an answer and runs from the
//! end of the previous response (so it would double as the idle timeout).

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
            if s.in_flight == 0 && s.head_started.is_none() {
                s.head_started = Some(Instant::now());
            }
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
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
        }
        let guard = InFlight(Arc::clone(&svc_state));
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let r = app.oneshot(req).await;
            drop(guard);
            r
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .max_headers(100)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, "http connection error");
                }
                return Ok(());
            }
            () = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick(), if !closing => {
                let verdict = state.lock().check(Instant::now(), &limits);
                match verdict {
                    Verdict::Fine => {}
                    Verdict::Idle => {
                        metrics.idle_closed_total.fetch_add(1, Ordering::Relaxed);
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Verdict::HeadTooSlow => {
                        metrics.header_timeouts_total.fetch_add(1, Ordering::Relaxed);
                        info!(%peer, "request head not complete in time: 408");
                        let answer = raw_response(
                            "408 Request Timeout",
                            "request_timeout",
                            &format!(
                                "the request head was not complete within {} ms",
                                limits.header_timeout.as_millis()
                            ),
                        );
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
