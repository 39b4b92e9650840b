//! The TCP server: the accept loop, one task per connection, and the handle
//! ([`Daemon`]) that owns every background task.
//!
//! Shape (after mini-redis): [`Daemon::start`] binds, [`Daemon::serve`] takes an
//! already bound listener (tests bind port 0), `admission` caps connections,
//! a `CancellationToken` tells every task to stop and a `TaskTracker` waits for
//! them. Shutdown order: stop accepting, let connections finish the batch in
//! hand and write its answers, stop the expiry task, return.

mod admission;
mod connection;
pub(crate) mod dispatch;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::expiry;
use crate::log::{Log, LogError};
use crate::store::Store;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another I/O failure at start-up.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data dir could not be opened or recovered.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The replicated group's member could not start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Counters the server keeps for `Stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_current: AtomicU64,
    pub(crate) connections_total: AtomicU64,
}

/// What every connection task shares.
#[derive(Debug)]
#[doc(hidden)]
pub struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) started: Instant,
    /// The log, when the daemon is durable.
    pub(crate) log: Option<Arc<Log>>,
    /// Operation counters and latencies.
    pub(crate) metrics: crate::metrics::Metrics,
    /// The replicated group this daemon is a member of (`None`: standalone).
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Connection slots and the connection buffer budget.
    pub(crate) admission: Arc<admission::Admission>,
}

/// A running daemon. Dropping it does not stop it; call [`Daemon::shutdown`].
#[derive(Debug)]
pub struct Daemon {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Daemon {
    /// Recovers the data dir into memory, binds `config.listen` and starts
    /// serving with the system clock, logging every change (unless
    /// `config.in_memory`: then nothing is read or logged).
    ///
    /// # Errors
    /// [`Error::Log`] if the data dir is locked or damaged, [`Error::Bind`] if
    /// the address cannot be bound.
    pub async fn start(config: Config) -> Result<Self, Error> {
        if config.cluster.is_some() {
            return Self::start_member(config).await;
        }
        let store = Arc::new(Store::new(config.store.clone(), Arc::new(SystemClock)));
        // The feed comes first: recovery reports the sessions that expired
        // while the daemon was down.
        if let Some(retention) = config.events_retention {
            let feed_config = crate::events::FeedConfig {
                dir: (!config.in_memory).then(|| config.data_dir.join("events")),
                retention: Some(retention),
                retention_bytes: config.events_retention_bytes,
                // Memory only: the ring is the feed, kept small (it counts
                // against the memory a session store is chosen for).
                ring_bytes: usize::try_from(config.events_retention_bytes)
                    .unwrap_or(usize::MAX)
                    .min(8 << 20),
            };
            let feed =
                match tokio::task::spawn_blocking(move || crate::events::Feed::open(feed_config))
                    .await
                {
                    Ok(Ok(feed)) => feed,
                    Ok(Err(e)) => {
                        return Err(Error::Io(std::io::Error::new(
                            e.kind(),
                            format!("cannot open the events feed: {e}"),
                        )));
                    }
                    Err(e) => {
                        return Err(Error::Io(std::io::Error::other(format!(
                            "opening the events feed panicked: {e}"
                        ))));
                    }
                };
            if let Err(e) = store.attach_events(feed) {
                return Err(Error::Io(std::io::Error::other(e.to_string())));
            }
        }
        let log = if config.in_memory {
            info!("in memory only: nothing is logged, a restart loses every session");
            None
        } else {
            let log_config = config.log();
            let recovering = Arc::clone(&store);
            // Recovery reads the whole log: keep it off the async workers.
            let log = tokio::task::spawn_blocking(move || Log::open(&log_config, &recovering))
                .await
                .map_err(|e| {
                    Error::Io(std::io::Error::other(format!("recovery panicked: {e}")))
                })??;
            Some(log)
        };
        let stop_log = |log: &Option<Arc<Log>>| {
            if let Some(l) = log {
                l.shutdown();
            }
        };
        let listener = match TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(source) => {
                stop_log(&log);
                return Err(Error::Bind {
                    addr: config.listen,
                    source,
                });
            }
        };
        let metrics = match config.metrics_listen {
            Some(addr) => match crate::metrics::bind(addr).await {
                Ok(l) => Some(l),
                Err(source) => {
                    stop_log(&log);
                    return Err(Error::Bind { addr, source });
                }
            },
            None => None,
        };
        let daemon = Self::launch(listener, config, store, log, None)?;
        daemon.serve_metrics(metrics)
    }

    /// Starts a member of a replicated group: no standalone log; the
    /// store is the state machine of the group's Raft log.
    async fn start_member(config: Config) -> Result<Self, Error> {
        let Some(cc) = config.cluster.clone() else {
            return Err(Error::Io(std::io::Error::other(
                "not a cluster configuration",
            )));
        };
        let clock = Arc::new(crate::clock::ReplicaClock::new());
        let store = Arc::new(Store::new(
            config.store.clone(),
            Arc::clone(&clock) as Arc<dyn Clock>,
        ));
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                crate::metrics::bind(addr)
                    .await
                    .map_err(|source| Error::Bind { addr, source })?,
            ),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let client_addr = listener.local_addr()?.to_string();
        let cluster = crate::cluster::Cluster::start(
            &cc,
            &config.data_dir,
            config.fsync,
            config.auth.clone(),
            Arc::clone(&store),
            clock,
            client_addr,
            shutdown.clone(),
            tracker.clone(),
        )
        .await?;
        let daemon = Self::launch_with(
            listener,
            config,
            store,
            None,
            Some(cluster),
            shutdown,
            tracker,
        )?;
        daemon.serve_metrics(metrics)
    }

    fn serve_metrics(self, metrics: Option<TcpListener>) -> Result<Self, Error> {
        let daemon = self;
        if let Some(l) = metrics {
            let addr = l.local_addr()?;
            info!(%addr, "metrics on http://{addr}/metrics");
            daemon.tracker.spawn(crate::metrics::serve(
                l,
                Arc::clone(&daemon.shared),
                daemon.shutdown.clone(),
            ));
            return Ok(Self {
                metrics_addr: Some(addr),
                ..daemon
            });
        }
        Ok(daemon)
    }

    /// Where `/metrics` is served, if it is.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Starts serving on an already bound listener, in memory only (nothing is
    /// logged), reading time from `clock`.
    ///
    /// # Errors
    /// [`Error::Io`] if the listener's address cannot be read.
    pub fn serve(
        listener: TcpListener,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let store = Arc::new(Store::new(config.store.clone(), clock));
        Self::launch(listener, config, store, None, None)
    }

    fn launch(
        listener: TcpListener,
        config: Config,
        store: Arc<Store>,
        log: Option<Arc<Log>>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Result<Self, Error> {
        Self::launch_with(
            listener,
            config,
            store,
            log,
            cluster,
            CancellationToken::new(),
            TaskTracker::new(),
        )
    }

    fn launch_with(
        listener: TcpListener,
        config: Config,
        store: Arc<Store>,
        log: Option<Arc<Log>>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Self, Error> {
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Arc::clone(&store),
            admission: admission::Admission::new(
                config.max_connections,
                config.reserved_connections,
                config.max_buffer_memory,
            ),
            config,
            counters: Counters::default(),
            started: Instant::now(),
            log,
            metrics: crate::metrics::Metrics::default(),
            cluster,
        });
        if shared.cluster.is_none() {
            // A member's expiry is proposed by its group's leader.
            tracker.spawn(expiry::run(
                store,
                shared.config.expiry_tick,
                shared.config.expiry_batch,
                shutdown.clone(),
            ));
        }
        tracker.spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown.clone(),
            tracker.clone(),
        ));
        info!(%local_addr, "listening");
        Ok(Self {
            local_addr,
            metrics_addr: None,
            shared,
            shutdown,
            tracker,
        })
    }

    /// The address the daemon listens on (with the real port when 0 was asked for).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store, for embedding and tests.
    #[must_use]
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// A token that stops the daemon when cancelled.
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets connections answer what they have read, and waits
    /// for every task (at most the configured shutdown timeout).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        let timeout = self.shared.config.shutdown_timeout;
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "shutdown timed out; abandoning remaining connections"
            );
        }
        if let Some(cluster) = self.shared.cluster.clone() {
            cluster.shutdown().await;
        }
        if let Some(log) = self.shared.log.clone() {
            // The writer flushes and syncs everything appended, then exits.
            if tokio::task::spawn_blocking(move || log.shutdown())
                .await
                .is_err()
            {
                warn!("the log did not shut down cleanly");
            }
        }
        if let Some(feed) = self.shared.store.events().cloned() {
            // The last events are written and synced.
            let _ = tokio::task::spawn_blocking(move || feed.shutdown()).await;
        }
        info!("stopped");
    }
}

/// Accepts connections until shutdown. Each gets a slot from
/// [`admission::Admission`] (possibly closing the oldest connection still
/// waiting for its `Hello`); one that gets none is told so (an `Unavailable`
/// error frame) and closed, rather than left waiting.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut next_conn_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning; the
                // listener itself stays valid.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let accepted_at = Instant::now();
        next_conn_id += 1;
        let conn_id = next_conn_id;
        let span = tracing::info_span!("conn", conn_id, %peer);
        let conn_shared = Arc::clone(&shared);
        let conn_shutdown = shutdown.clone();
        tracker.spawn(
            async move {
                let Some(ticket) = conn_shared.admission.admit(conn_id).await else {
                    connection::refuse(stream, conn_shared.config.max_connections).await;
                    return;
                };
                conn_shared
                    .counters
                    .connections_total
                    .fetch_add(1, Ordering::Relaxed);
                conn_shared
                    .counters
                    .connections_current
                    .fetch_add(1, Ordering::Relaxed);
                serve_connection(stream, &conn_shared, conn_shutdown, ticket, accepted_at).await;
                conn_shared
                    .counters
                    .connections_current
                    .fetch_sub(1, Ordering::Relaxed);
            }
            .instrument(span),
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    shared: &Shared,
    shutdown: CancellationToken,
    ticket: admission::Ticket,
    accepted: Instant,
) {
    if let Err(e) = stream.set_nodelay(true) {
        warn!(error = %e, "cannot set TCP_NODELAY");
    }
    let Some(tls) = &shared.config.tls else {
        connection::Connection::new(stream, shared, shutdown)
            .admitted(ticket, accepted)
            .run()
            .await;
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
    // A peer that never finishes the handshake must not hold a connection
    // slot: the handshake counts against the Hello's deadline, and a
    // newcomer may close this connection to make room meanwhile.
    let handshake = tokio::time::timeout(shared.config.hello_timeout, acceptor.accept(stream));
    let evict = ticket.evict.clone();
    tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls_stream)) => {
                connection::Connection::new(tls_stream, shared, shutdown)
                    .admitted(ticket, accepted)
                    .run()
                    .await;
            }
            Ok(Err(e)) => info!(error = %e, "TLS handshake failed"),
            Err(_) => info!("TLS handshake timed out"),
        },
        () = evict.cancelled() => info!("closed during its TLS handshake to make room for a newer connection"),
    }
}
