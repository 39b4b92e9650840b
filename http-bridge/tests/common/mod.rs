//! Test harness: a real bridge with an embedded daemon on free ports and a
//! fresh data dir, driven over real HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use sessiond_http::{Bridge, Config};

/// A running bridge for one test.
pub struct TestBridge {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The bridge.
    pub bridge: Option<Bridge>,
    _dir: tempfile::TempDir,
}

impl TestBridge {
    /// A URL on this bridge.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The bridge's `/openapi.json`.
    pub async fn openapi(&self) -> serde_json::Value {
        http()
            .get(self.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The embedded daemon's native address.
    pub fn daemon_addr(&self) -> String {
        self.bridge.as_ref().unwrap().daemon_addr.clone()
    }
}

/// Settings for a test bridge: free ports, a fresh data dir.
pub fn config(dir: &std::path::Path) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        daemon_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_owned(),
        jwt_secret: Some("test-secret-for-hs256-which-is-long-enough".into()),
        admin_email: Some("admin@example.com".into()),
        admin_password: Some("admin-password".into()),
        ..Config::default()
    }
}

/// Starts a bridge with [`config`], changed by `tweak`.
pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestBridge {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    tweak(&mut c);
    let bridge = Bridge::start(c).await.unwrap();
    TestBridge {
        base: format!("http://{}", bridge.http_addr),
        bridge: Some(bridge),
        _dir: dir,
    }
}

/// Starts a bridge with the default test settings.
pub async fn start() -> TestBridge {
    start_with(|_| {}).await
}

/// An HTTP client that keeps cookies.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// A separate daemon (not the bridge's embedded one) that a test can stop and
/// start again on the same address and data dir, to take the bridge's store
/// away and give it back.
pub struct ExternalDaemon {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    daemon: Option<sessiond::Daemon>,
}

impl ExternalDaemon {
    /// Starts a daemon on a free port and a fresh data dir.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let daemon =
            sessiond::Daemon::start(Self::config(&dir, SocketAddr::from(([127, 0, 0, 1], 0))))
                .await
                .unwrap();
        Self {
            addr: daemon.local_addr(),
            dir,
            daemon: Some(daemon),
        }
    }

    fn config(dir: &tempfile::TempDir, listen: SocketAddr) -> sessiond::Config {
        sessiond::Config {
            listen,
            data_dir: dir.path().to_owned(),
            ..sessiond::Config::default()
        }
    }

    /// Its native protocol address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it gracefully (its log is flushed).
    pub async fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown().await;
        }
    }

    /// Starts it again on the same address, with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let d = sessiond::Daemon::start(Self::config(&self.dir, self.addr))
            .await
            .unwrap();
        self.daemon = Some(d);
    }
}

/// Starts a bridge on `daemon` instead of an embedded one.
pub async fn start_on(daemon: &ExternalDaemon) -> TestBridge {
    let addr = daemon.addr().to_string();
    start_with(|c| c.daemon = Some(addr)).await
}
