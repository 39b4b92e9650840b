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

/// An HTTP client without a cookie store: each request says what it carries.
pub fn bare() -> reqwest::Client {
    reqwest::Client::new()
}

/// Sending a request and reading its answer, a panic on any transport error.
pub trait Call {
    /// The response.
    fn call(self) -> impl std::future::Future<Output = reqwest::Response>;
    /// The response's status.
    fn status_code(self) -> impl std::future::Future<Output = reqwest::StatusCode>;
    /// The response's JSON body (a panic if it is not JSON).
    fn value(self) -> impl std::future::Future<Output = serde_json::Value>;
    /// The status and the JSON body (a panic if it is not JSON).
    fn answer(self) -> impl std::future::Future<Output = (u16, serde_json::Value)>;
}

impl Call for reqwest::RequestBuilder {
    async fn call(self) -> reqwest::Response {
        self.send().await.unwrap()
    }

    async fn status_code(self) -> reqwest::StatusCode {
        self.call().await.status()
    }

    async fn value(self) -> serde_json::Value {
        self.call().await.json().await.unwrap()
    }

    async fn answer(self) -> (u16, serde_json::Value) {
        json_of(self.call().await).await
    }
}

/// A response's status and JSON body (a panic if it is not JSON).
pub async fn json_of(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A response's `Retry-After`, in seconds.
pub fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `probe` up to `tries` times, `every` apart, until it gives a value.
pub async fn poll_until<T, F, Fut>(
    tries: usize,
    every: std::time::Duration,
    mut probe: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..tries {
        if let Some(v) = probe().await {
            return Some(v);
        }
        tokio::time::sleep(every).await;
    }
    None
}

/// Sends `request` up to `tries` times, 100 ms apart, until it is answered
/// `status`; that answer.
pub async fn poll_status(
    request: reqwest::RequestBuilder,
    status: u16,
    tries: usize,
) -> Option<reqwest::Response> {
    poll_until(tries, std::time::Duration::from_millis(100), || async {
        let r = request.try_clone().unwrap().call().await;
        (r.status() == status).then_some(r)
    })
    .await
}

/// `answer`'s body, once its status is `want` (a panic showing the body
/// otherwise).
#[track_caller]
pub fn expect(want: u16, answer: (reqwest::StatusCode, serde_json::Value)) -> serde_json::Value {
    let (status, v) = answer;
    assert_eq!(status, want, "{v}");
    v
}

/// A sessiond client on the bridge's embedded daemon.
pub async fn daemon(b: &TestBridge) -> sessiond_client::Client {
    sessiond_client::Client::connect(b.daemon_addr())
        .await
        .unwrap()
}

/// Registers a user in the directory (an administrator when `admin`); its id.
pub async fn add_user(
    client: &sessiond_client::Client,
    email: &str,
    password: &str,
    admin: bool,
) -> String {
    sessiond_http::users::create(
        client,
        sessiond_http::users::NewUser {
            email: email.into(),
            password: password.into(),
            is_admin: admin,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .id
}

/// The tokens a login-API login answers in its headers.
pub struct Tokens {
    /// `Authorization: Bearer <access>`
    pub access: String,
    /// `Refresh: <refresh>`
    pub refresh: String,
}

impl Tokens {
    /// The tokens of a login or refresh answer.
    pub fn of(r: &reqwest::Response) -> Self {
        let authz = r.headers()["authorization"].to_str().unwrap();
        let access = authz
            .strip_prefix("Bearer ")
            .expect("a Bearer token")
            .to_owned();
        let refresh = r.headers()["refresh"].to_str().unwrap().to_owned();
        Self { access, refresh }
    }
}

/// `POST /session` of the login API with `username` and `password`.
pub async fn login(
    http: &reqwest::Client,
    b: &TestBridge,
    username: &str,
    password: &str,
) -> reqwest::Response {
    http.post(b.url("/session"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .call()
        .await
}

/// Logs in with the login API (the login must succeed); its tokens.
pub async fn login_tokens(b: &TestBridge, username: &str, password: &str) -> Tokens {
    let r = login(&http(), b, username, password).await;
    assert_eq!(r.status(), 200);
    Tokens::of(&r)
}

/// `POST /api/v1/auth_session/login` of the session-auth API (form fields).
pub async fn session_auth_login(
    http: &reqwest::Client,
    b: &TestBridge,
    email: &str,
    password: &str,
) -> reqwest::Response {
    http.post(b.url("/api/v1/auth_session/login"))
        .form(&[("email", email), ("password", password)])
        .call()
        .await
}

/// A client of one bridge acting with one bearer token (a JWT or a login-API
/// access token), reading every answer as `(status, JSON or else the text)`.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client of `b` with `token`, if any.
    pub fn new(b: &TestBridge, token: Option<String>) -> Self {
        Self {
            http: http(),
            base: b.base.clone(),
            token,
        }
    }

    /// A request to `path`, with the token.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `r`: the status and the JSON body, or the text as a JSON string.
    pub async fn send(r: reqwest::RequestBuilder) -> (reqwest::StatusCode, serde_json::Value) {
        let r = r.call().await;
        let status = r.status();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, v)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        Self::send(self.req(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        Self::send(self.req(reqwest::Method::POST, path).json(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        Self::send(self.req(reqwest::Method::PATCH, path).json(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        Self::send(self.req(reqwest::Method::DELETE, path)).await
    }
}
