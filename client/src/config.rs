//! Client settings, built with [`ClientConfig::new`] and its builder methods.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sessiond_protocol::frame::DEFAULT_MAX_FRAME_LEN;
use sessiond_protocol::AuthToken;

use crate::error::Error;

/// Default number of connections in the pool.
pub const DEFAULT_CONNECTIONS: usize = 2;
/// Default time allowed for connecting and the handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed for one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default requests queued for writing per connection.
pub const DEFAULT_MAX_PENDING: usize = 4096;
/// Default first delay between reconnect attempts.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(50);
/// Default longest delay between reconnect attempts.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Default requests allowed to wait while no connection is up.
pub const DEFAULT_MAX_WAITING: usize = 1024;
/// Default automatic retries of a read whose connection dropped.
pub const DEFAULT_READ_RETRIES: u32 = 1;

/// How a [`Client`](crate::Client) connects and behaves.
///
/// ```
/// use std::time::Duration;
/// let config = sessiond_client::ClientConfig::new("127.0.0.1:7379")
///     .connections(4)
///     .request_timeout(Duration::from_millis(500))
///     .client_name("checkout-service");
/// assert_eq!(config.address(), "127.0.0.1:7379");
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) address: String,
    pub(crate) connections: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) auth_token: Option<AuthToken>,
    pub(crate) client_name: String,
    pub(crate) max_frame_len: u32,
    pub(crate) max_pending: usize,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) max_waiting: usize,
    pub(crate) read_retries: u32,
    pub(crate) tls: Option<TlsConfig>,
}

/// TLS for connections to a daemon started with `--tls-cert`/`--tls-key`.
///
/// ```no_run
/// # fn demo() -> Result<(), sessiond_client::Error> {
/// use sessiond_client::{ClientConfig, TlsConfig};
/// let config = ClientConfig::new("sessions.internal:7379")
///     .tls(TlsConfig::with_ca_file("/etc/sessiond/ca.pem")?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) rustls: Arc<tokio_rustls::rustls::ClientConfig>,
    pub(crate) server_name: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    fn with_roots(roots: tokio_rustls::rustls::RootCertStore) -> Self {
        let config = tokio_rustls::rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            rustls: Arc::new(config),
            server_name: None,
        }
    }

    /// Verifies the daemon against the operating system's trusted roots.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if no root can be loaded.
    pub fn system_roots() -> Result<Self, Error> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::InvalidArgument(
                "no trusted root certificates found on this system".into(),
            ));
        }
        Ok(Self::with_roots(roots))
    }

    /// Verifies the daemon against the CA certificate(s) in a PEM file.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the file cannot be read or holds no certificate.
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let path = path.as_ref();
        let bad = |e: String| Error::InvalidArgument(format!("CA file {}: {e}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(e.to_string()))?;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(bad("no certificate".into()));
        }
        Ok(Self::with_roots(roots))
    }

    /// Uses a rustls configuration built by the caller (client certificates, custom verifiers).
    #[must_use]
    pub fn from_rustls(config: Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        Self {
            rustls: config,
            server_name: None,
        }
    }

    /// The name the daemon's certificate must carry (default: the host part of the address).
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

impl ClientConfig {
    /// Settings for the daemon at `address` (`host:port`), with defaults that
    /// suit a web application.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            connections: DEFAULT_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            auth_token: None,
            client_name: "sessiond-client".into(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_pending: DEFAULT_MAX_PENDING,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            max_waiting: DEFAULT_MAX_WAITING,
            read_retries: DEFAULT_READ_RETRIES,
            tls: None,
        }
    }

    /// The daemon addresses to try: `address` split at commas (the members
    /// of a replicated group; a request goes to the leader, found by asking).
    #[must_use]
    pub fn seeds(&self) -> Vec<String> {
        let seeds: Vec<String> = self
            .address
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if seeds.is_empty() {
            vec![self.address.clone()]
        } else {
            seeds
        }
    }

    /// The daemon's address (as given: several, comma-separated, for a
    /// replicated group).
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Connections in the pool (at least 1).
    #[must_use]
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n.max(1);
        self
    }

    /// Time allowed to connect and complete the handshake.
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Time allowed for each request, waiting for a connection and for room
    /// to send included. Enforced by each connection's sweeper to within a
    /// twentieth of it (1 ms at least, 100 ms at most).
    #[must_use]
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Credentials sent in the handshake. The token is kept as an
    /// [`AuthToken`], so this config's `Debug` output never shows it.
    #[must_use]
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(AuthToken(token.into()));
        self
    }

    /// A name shown in the daemon's logs.
    #[must_use]
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Largest request frame this client will send (the daemon's own limit,
    /// learned in the handshake, applies too).
    #[must_use]
    pub fn max_frame_len(mut self, n: u32) -> Self {
        self.max_frame_len = n;
        self
    }

    /// Requests queued for writing per connection before callers wait.
    #[must_use]
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }
}

impl ClientConfig {
    /// Delays between reconnect attempts: from `min`, doubling up to `max`,
    /// each with random jitter in its upper half.
    #[must_use]
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// How many requests may wait for the daemon while no connection is up;
    /// past that, requests fail at once with [`Error::Backlog`].
    #[must_use]
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n;
        self
    }

    /// Connects over TLS.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How many times a read (get, touch, list, stats, ping) whose connection
    /// dropped is sent again; 0 disables. Writes are never retried.
    #[must_use]
    pub fn read_retries(mut self, n: u32) -> Self {
        self.read_retries = n;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_clamps() {
        let c = ClientConfig::new("h:1");
        assert_eq!(c.connections, DEFAULT_CONNECTIONS);
        assert_eq!(c.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.max_pending, DEFAULT_MAX_PENDING);
        assert_eq!(c.max_frame_len, DEFAULT_MAX_FRAME_LEN);
        assert_eq!(c.client_name, "sessiond-client");
        assert!(c.auth_token.is_none());
        let c = c.connections(0).max_pending(0);
        assert_eq!((c.connections, c.max_pending), (1, 1));
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let c = ClientConfig::new("h:1").auth_token("hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
