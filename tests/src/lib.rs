//! Process harness for end-to-end tests: spawn the real `sessiond` binary on
//! port 0, learn its address from the ready line, and kill it when done.
//!
//! ```ignore
//! // In an integration test of this package:
//! let daemon = sessiond_e2e::DaemonProcess::start(sessiond_e2e::daemon_bin!(), &[]).unwrap();
//! println!("daemon at {}", daemon.addr());
//! ```

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the daemon binary built with this package. Cargo only tells
/// integration tests where binaries are, so this expands there.
#[macro_export]
macro_rules! daemon_bin {
    () => {
        env!("CARGO_BIN_EXE_e2e-sessiond")
    };
}

/// A running daemon process. Killed on drop.
#[derive(Debug)]
pub struct DaemonProcess {
    child: Child,
    addr: SocketAddr,
    bin: String,
    /// `None` only while being moved into a restarted process.
    data_dir: Option<tempfile::TempDir>,
    stderr: Arc<Mutex<String>>,
}

impl DaemonProcess {
    /// Starts the daemon binary `bin` on `127.0.0.1:0` (unless `extra` has a `--listen`) with a fresh data dir and `extra` flags,
    /// and waits (up to 30 s) for its ready line.
    ///
    /// # Errors
    /// An I/O error if it cannot be spawned or exits before it is ready.
    pub fn start(bin: &str, extra: &[&str]) -> std::io::Result<Self> {
        Self::start_with_env(bin, extra, &[])
    }

    /// As [`DaemonProcess::start`], with extra environment variables.
    ///
    /// # Errors
    /// As [`DaemonProcess::start`].
    pub fn start_with_env(
        bin: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        Self::start_in(bin, data_dir, extra, env)
    }

    /// As [`DaemonProcess::start`], on a given data dir.
    ///
    /// # Errors
    /// As [`DaemonProcess::start`].
    pub fn start_in(
        bin: &str,
        data_dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        Self::start_wrapped(&[], bin, data_dir, extra, env)
    }

    /// As [`DaemonProcess::start_in`], run through `wrapper` (a command
    /// that execs its arguments, such as `ip netns exec NS`, so the process
    /// is the daemon itself).
    ///
    /// # Errors
    /// As [`DaemonProcess::start`].
    pub fn start_wrapped(
        wrapper: &[&str],
        bin: &str,
        data_dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        if !extra.contains(&"--listen") {
            command.arg("--listen").arg("127.0.0.1:0");
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            });
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("sessiond ready on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a
                .parse()
                .map_err(|e| std::io::Error::other(format!("bad ready line {a:?}: {e}")))?,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "daemon exited ({status}) before it was ready:\n{log}"
                )));
            }
        };
        Ok(Self {
            child,
            addr,
            bin: bin.to_owned(),
            data_dir: Some(data_dir),
            stderr,
        })
    }

    /// The native protocol address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        self.data_dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Kills the process with SIGKILL (no shutdown, no final sync) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process if it still runs (SIGKILL) and starts the same binary
    /// on the same data dir with `extra` flags (on a new port).
    ///
    /// # Errors
    /// As [`DaemonProcess::start`].
    pub fn restart(mut self, extra: &[&str]) -> std::io::Result<Self> {
        self.kill();
        let dir = self
            .data_dir
            .take()
            .ok_or_else(|| std::io::Error::other("no data dir"))?;
        Self::start_in(&self.bin, dir, extra, &[])
    }

    /// Takes the data dir out (after [`DaemonProcess::kill`]), so it outlives
    /// this handle: a cluster member is restarted on it with other flags.
    pub fn take_data_dir(&mut self) -> Option<tempfile::TempDir> {
        self.data_dir.take()
    }

    /// Everything the daemon wrote to stderr so far (its logs).
    #[must_use]
    pub fn logs(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Resident memory of the process in KiB, from `/proc` (Linux).
    #[must_use]
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. "TERM", "KILL") with kill(1) and waits up to
    /// `timeout` for the process to exit.
    ///
    /// # Errors
    /// If the signal cannot be sent or the process does not exit in time.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> std::io::Result<ExitStatus> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("kill -{signal} failed")));
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("process did not exit in time"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare protocol connection: one request at a time, every answer as sent
/// (a `NotLeader` is returned, not followed), for tests that must see
/// exactly what one member answers.
#[derive(Debug)]
pub struct RawConn {
    stream: tokio::net::TcpStream,
    next_id: u64,
}

impl RawConn {
    /// Connects to `addr` and says hello (no token).
    ///
    /// # Errors
    /// A connection or protocol failure, or a refused hello.
    pub async fn connect(addr: &str) -> std::io::Result<Self> {
        let stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::Error::other("connect timed out"))??;
        Self::hello(stream).await
    }

    /// As [`RawConn::connect`], with the socket's receive buffer set to
    /// `bytes` (a reader that stops reading fills it, and the daemon's side,
    /// soon).
    ///
    /// # Errors
    /// As [`RawConn::connect`].
    pub async fn connect_small(addr: &str, bytes: u32) -> std::io::Result<Self> {
        let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(bytes)?;
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        Self::hello(stream).await
    }

    async fn hello(stream: tokio::net::TcpStream) -> std::io::Result<Self> {
        let mut conn = Self { stream, next_id: 1 };
        let hello = sessiond_protocol::Op::Hello(sessiond_protocol::Hello {
            protocol_version: sessiond_protocol::PROTOCOL_VERSION,
            auth_token: None,
            client_name: Some("raw-test".into()),
        });
        match conn.call(hello).await? {
            sessiond_protocol::Reply::Hello(_) => Ok(conn),
            other => Err(std::io::Error::other(format!("hello refused: {other:?}"))),
        }
    }

    /// Sends `op` and reads its answer (within 10 s).
    ///
    /// # Errors
    /// A connection or protocol failure, or no answer in time.
    pub async fn call(
        &mut self,
        op: sessiond_protocol::Op,
    ) -> std::io::Result<sessiond_protocol::Reply> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = bytes::BytesMut::new();
        sessiond_protocol::frame::encode_request_parts(id, &op, &mut buf)
            .map_err(std::io::Error::other)?;
        let exchange = async {
            self.stream.write_all(&buf).await?;
            let len = self.stream.read_u32().await? as usize;
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await?;
            sessiond_protocol::frame::decode_response(&payload).map_err(std::io::Error::other)
        };
        let resp = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| std::io::Error::other("no answer in 10 s"))??;
        if resp.id != id {
            return Err(std::io::Error::other(format!(
                "answer to request {} for request {id}",
                resp.id
            )));
        }
        Ok(resp.reply)
    }
}

impl RawConn {
    /// Sends `Subscribe` (request id `id`) and returns its first answer
    /// (`Subscribed`, `CursorExpired` or an error); the events follow,
    /// read with [`RawConn::next_frame`].
    ///
    /// # Errors
    /// A connection or protocol failure, or no answer in time.
    pub async fn subscribe(
        &mut self,
        sub: sessiond_protocol::Subscribe,
    ) -> std::io::Result<sessiond_protocol::Reply> {
        self.call(sessiond_protocol::Op::Subscribe(sub)).await
    }

    /// Reads the next frame the daemon sends (a subscription's events),
    /// within `timeout`; `Ok(None)` when the daemon closed the connection.
    ///
    /// # Errors
    /// A connection or protocol failure, or nothing within `timeout`.
    pub async fn next_frame(
        &mut self,
        timeout: Duration,
    ) -> std::io::Result<Option<sessiond_protocol::Response>> {
        use tokio::io::AsyncReadExt;
        let read = async {
            let len = match self.stream.read_u32().await {
                Ok(len) => len as usize,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await?;
            sessiond_protocol::frame::decode_response(&payload)
                .map(Some)
                .map_err(std::io::Error::other)
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| std::io::Error::other(format!("nothing within {timeout:?}")))?
    }

    /// Collects subscription events until `want` of them came (empty
    /// keepalive batches skipped), within `timeout` in all.
    ///
    /// # Errors
    /// A connection or protocol failure, an unexpected frame, or too few
    /// events in time.
    pub async fn events(
        &mut self,
        want: usize,
        timeout: Duration,
    ) -> std::io::Result<Vec<sessiond_protocol::Event>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await? {
                Some(sessiond_protocol::Response {
                    reply: sessiond_protocol::Reply::Events(batch),
                    ..
                }) => out.extend(batch),
                other => {
                    return Err(std::io::Error::other(format!(
                        "after {} events: {other:?}",
                        out.len()
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// A loopback port free now, for a daemon that must be told its address
/// before it starts (a group member's inter-node port is in every member's
/// `--cluster`). Drawn below the kernel's ephemeral range (32768 and up on
/// Linux), so the outgoing connections of this and other tests never take
/// it between now and the daemon's bind, and never handed out twice by this
/// process (a killed member keeps its port for its restart).
#[must_use]
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    // Spread the start by process so parallel test binaries rarely meet.
    let mut candidate = 20_000 + (std::process::id() % 12_000) as u16;
    loop {
        candidate = if candidate >= 32_000 {
            20_000
        } else {
            candidate + 1
        };
        let mut set = given
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if set.contains(&candidate) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            set.insert(candidate);
            return candidate;
        }
    }
}

/// A Prometheus text exposition (`/metrics`) read line by line, for the
/// tests of the daemon's and the bridge's endpoints. A malformed line fails
/// the test that reads it (a panic naming the line), hence the `expect`s.
#[allow(clippy::expect_used)]
pub mod exposition {
    use std::collections::{BTreeMap, HashMap};

    /// One sample line: name, labels, value.
    #[derive(Debug)]
    pub struct Sample {
        /// The series name.
        pub name: String,
        /// Its labels.
        pub labels: BTreeMap<String, String>,
        /// Its value.
        pub value: f64,
    }

    /// The `# TYPE` lines (name to type) and the samples of `text`. Panics
    /// on a line that is not a comment, a `TYPE`/`HELP` line or a sample, and
    /// on two `TYPE` lines for one name.
    #[must_use]
    pub fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect(line);
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "two TYPE lines for {name}"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let (series, value) = line.rsplit_once(' ').expect(line);
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect(line);
                    let mut labels = BTreeMap::new();
                    for pair in body.split("\",") {
                        let (k, v) = pair.split_once("=\"").expect(line);
                        labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                    }
                    (name, labels)
                }
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        (types, samples)
    }

    /// The value of the sample `name` with exactly `labels`.
    #[must_use]
    pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}
