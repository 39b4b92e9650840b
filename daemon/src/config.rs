//! Daemon configuration: command-line flags, `SESSIOND_*` environment variables
//! and an optional TOML file, in that order of precedence, over built-in defaults
//! (loopback address, local data directory).
//!
//! Everything is validated once, here, into typed values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use sessiond_protocol::duration::parse_duration;
use sessiond_protocol::frame::{ABSOLUTE_MAX_FRAME_LEN, DEFAULT_MAX_FRAME_LEN};
use sessiond_protocol::limits::DEFAULT_MAX_ATTRS_BYTES;

use crate::auth::AuthTable;
use crate::expiry;
use crate::log::{self, FsyncPolicy, LogConfig};
use crate::store::{
    StoreConfig, DEFAULT_MAX_NAMESPACES, DEFAULT_TOMBSTONE_TTL_MS, DEFAULT_TOUCH_LOG_FRACTION,
};

/// Default address of the native protocol.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7379";
/// Default data directory (used by the durability layer).
pub const DEFAULT_DATA_DIR: &str = "./sessiond-data";
/// Default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on requests decoded and not yet answered, per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 128;
/// Default idle time after which a silent connection is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time from accept to a complete `Hello` (TLS handshake included).
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a frame may take from its first byte to its last.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on what client connections' buffers hold beyond their
/// first read chunk and first write chunk each.
pub const DEFAULT_MAX_BUFFER_MEMORY: u64 = 256 * 1024 * 1024;
/// Default time graceful shutdown waits for connections to finish.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time session events are kept.
pub const DEFAULT_EVENTS_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Default bytes of session events kept.
pub const DEFAULT_EVENTS_RETENTION_BYTES: u64 = 1 << 30;

/// A configuration that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid setting {name}: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The validated daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the native protocol.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Open connections at most.
    pub max_connections: usize,
    /// Requests decoded and not yet answered per connection, at most.
    pub max_in_flight: usize,
    /// Threads serving connections.
    pub worker_threads: usize,
    /// Largest frame payload accepted.
    pub max_frame_len: u32,
    /// A connection silent for this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// A connection must complete its `Hello` this soon after accept.
    pub hello_timeout: Duration,
    /// A frame's bytes must all arrive within this of its first.
    pub frame_timeout: Duration,
    /// Connections kept for peers that completed `Hello`: those still
    /// waiting for theirs hold at most `max_connections - reserved`, and a
    /// newcomer beyond that closes the oldest of them.
    pub reserved_connections: usize,
    /// What connection buffers may hold in all beyond each connection's
    /// first chunks; a frame that would take more is refused.
    pub max_buffer_memory: u64,
    /// How long graceful shutdown waits for connections.
    pub shutdown_timeout: Duration,
    /// Interval between expiry rounds.
    pub expiry_tick: Duration,
    /// Timer entries handled per expiry round, at most.
    pub expiry_batch: usize,
    /// Store settings.
    pub store: StoreConfig,
    /// When the log syncs.
    pub fsync: FsyncPolicy,
    /// Log segment size before a new one is started.
    pub segment_bytes: u64,
    /// Compact when the log exceeds this multiple of the live data...
    pub compact_ratio: f64,
    /// ...and this many bytes.
    pub compact_min_bytes: u64,
    /// Cut damaged log records at start-up (keeping a copy) instead of refusing to start.
    pub repair: bool,
    /// No log: sessions live in memory only and a restart loses them.
    pub in_memory: bool,
    /// How long session events are kept (`None`: no events feed).
    pub events_retention: Option<Duration>,
    /// About how many bytes of session events are kept.
    pub events_retention_bytes: u64,
    /// Tokens and their scopes (`None`: no authentication).
    pub auth: Option<AuthTable>,
    /// Where Prometheus metrics are served (`None`: not served).
    pub metrics_listen: Option<SocketAddr>,
    /// TLS for the native protocol (`None`: plain TCP).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Membership of a replicated group (`None`: a standalone daemon).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Config {
    /// The log settings within this configuration.
    #[must_use]
    pub fn log(&self) -> LogConfig {
        LogConfig {
            dir: self.data_dir.clone(),
            fsync: self.fsync,
            segment_bytes: self.segment_bytes,
            compact_ratio: self.compact_ratio,
            compact_min_bytes: self.compact_min_bytes,
            repair: self.repair,
            ..LogConfig::new(&self.data_dir)
        }
    }
}

/// One thread per core but one, at least one: the log writer thread, the
/// expiry task and the kernel's network processing need CPU too.
#[must_use]
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_sub(1)
        .max(1)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7379)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            worker_threads: default_worker_threads(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            reserved_connections: DEFAULT_MAX_CONNECTIONS / 10,
            max_buffer_memory: DEFAULT_MAX_BUFFER_MEMORY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            expiry_tick: expiry::DEFAULT_TICK,
            expiry_batch: expiry::DEFAULT_BATCH,
            store: StoreConfig::default(),
            fsync: FsyncPolicy::default(),
            segment_bytes: log::DEFAULT_SEGMENT_BYTES,
            compact_ratio: log::DEFAULT_COMPACT_RATIO,
            compact_min_bytes: log::DEFAULT_COMPACT_MIN_BYTES,
            repair: false,
            in_memory: false,
            events_retention: Some(DEFAULT_EVENTS_RETENTION),
            events_retention_bytes: DEFAULT_EVENTS_RETENTION_BYTES,
            auth: None,
            metrics_listen: None,
            tls: None,
            cluster: None,
        }
    }
}

/// The `sessiond` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sessiond",
    version,
    about = "sessiond: an in-memory, durable session store"
)]
pub struct Cli {
    /// What to run (default: the server).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Read a token on stdin and print the SHA-256 an auth file stores for it.
    HashToken,
    /// Verify every log segment and snapshot in a data dir and report what was
    /// found (exit status 1 if anything is damaged). Run it on a stopped daemon's dir.
    CheckLog {
        /// The data dir.
        dir: PathBuf,
        /// Cut torn tails and damaged records (a copy of what is cut is kept).
        #[arg(long)]
        repair: bool,
    },
}

/// Server flags. Each also reads `SESSIOND_<NAME>`; unset ones come from the
/// config file, then from the defaults.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ServerArgs {
    /// TOML config file.
    #[arg(long, env = "SESSIOND_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:7379; port 0 picks a free port).
    #[arg(long, env = "SESSIOND_LISTEN")]
    pub listen: Option<String>,
    /// Data directory (default ./sessiond-data).
    #[arg(long, env = "SESSIOND_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Most open connections (default 10000).
    #[arg(long, env = "SESSIOND_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most requests in flight per connection (default 128).
    #[arg(long, env = "SESSIOND_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Threads serving connections (default: one per core but one, at least
    /// one; the log writer, expiry and the kernel's network work use the
    /// rest). More threads are not always more: on a machine shared with
    /// the clients, wake-ups across threads cost more than they gain.
    #[arg(long, env = "SESSIOND_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Largest frame in bytes (default 1048576).
    #[arg(long, env = "SESSIOND_MAX_FRAME_LEN")]
    pub max_frame_len: Option<u32>,
    /// Close connections idle this long, e.g. 5m; 0 disables (default 5m).
    #[arg(long, env = "SESSIOND_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Time from accept to a complete Hello, TLS handshake included; a peer
    /// that takes longer is closed (default 5s).
    #[arg(long, env = "SESSIOND_HELLO_TIMEOUT")]
    pub hello_timeout: Option<String>,
    /// Time a frame may take from its first byte to its last; a peer that
    /// trickles longer is closed (default 10s).
    #[arg(long, env = "SESSIOND_FRAME_TIMEOUT")]
    pub frame_timeout: Option<String>,
    /// Connections kept for peers that completed Hello (default a tenth of
    /// --max-connections): the others hold at most the rest, and a newcomer
    /// past that closes the oldest of them.
    #[arg(long, env = "SESSIOND_RESERVED_CONNECTIONS")]
    pub reserved_connections: Option<usize>,
    /// What connection buffers may hold in all beyond each connection's
    /// first 16 KiB read and write chunks, e.g. 256mb (default 256mb, at
    /// most a quarter of --max-memory); counted in --max-memory.
    #[arg(long, env = "SESSIOND_MAX_BUFFER_MEMORY")]
    pub max_buffer_memory: Option<String>,
    /// How long shutdown waits for connections (default 10s).
    #[arg(long, env = "SESSIOND_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<String>,
    /// Interval between expiry rounds (default 100ms).
    #[arg(long, env = "SESSIOND_EXPIRY_TICK")]
    pub expiry_tick: Option<String>,
    /// Timer entries handled per expiry round (default 10000).
    #[arg(long, env = "SESSIOND_EXPIRY_BATCH")]
    pub expiry_batch: Option<usize>,
    /// How long a deleted or rotated id is refused for re-creation (default 2m).
    #[arg(long, env = "SESSIOND_TOMBSTONE_TTL")]
    pub tombstone_ttl: Option<String>,
    /// Largest encoded attribute map per session, in bytes (default 65536).
    #[arg(long, env = "SESSIOND_MAX_ATTRS_BYTES")]
    pub max_attrs_bytes: Option<usize>,
    /// Most distinct namespaces (default 10000).
    #[arg(long, env = "SESSIOND_MAX_NAMESPACES")]
    pub max_namespaces: Option<usize>,
    /// When the log syncs to disk: always (before acknowledging, group commit),
    /// everysec (default) or no.
    #[arg(long, env = "SESSIOND_FSYNC")]
    pub fsync: Option<String>,
    /// Log a touch once it moved the deadline by more than this share of the
    /// idle ttl (default 0.1).
    #[arg(long, env = "SESSIOND_TOUCH_LOG_FRACTION")]
    pub touch_log_fraction: Option<f64>,
    /// Start a new log segment at this size in bytes (default 67108864).
    #[arg(long, env = "SESSIOND_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Compact when the log is this many times the live data (default 2.0)...
    #[arg(long, env = "SESSIOND_COMPACT_RATIO")]
    pub compact_ratio: Option<f64>,
    /// ...and at least this many bytes (default 67108864).
    #[arg(long, env = "SESSIOND_COMPACT_MIN_BYTES")]
    pub compact_min_bytes: Option<u64>,
    /// Start even if the log is damaged, cutting the damage (a copy is kept).
    #[arg(long, env = "SESSIOND_REPAIR", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default)]
    pub repair: bool,
    /// Keep sessions in memory only: no log, the data dir is not used, and a
    /// restart loses every session (as Redis without persistence). The fsync,
    /// segment, compaction and repair settings then do nothing.
    #[arg(long, env = "SESSIOND_IN_MEMORY", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default)]
    pub in_memory: bool,
    /// Keep session events (the feed `Subscribe`, `sessionctl watch` and the
    /// bridge's `/events` read) this long, e.g. 24h; 0 turns the feed off
    /// (default 24h).
    #[arg(long, env = "SESSIOND_EVENTS_RETENTION")]
    pub events_retention: Option<String>,
    /// ...and at most about this many bytes, e.g. 1GiB (default 1GiB; with
    /// --in-memory the feed is a ring of at most 8MiB).
    #[arg(long, env = "SESSIOND_EVENTS_RETENTION_BYTES")]
    pub events_retention_bytes: Option<String>,
    /// Auth file of hashed tokens with their namespaces and rights (see `sessiond hash-token`).
    #[arg(long, env = "SESSIOND_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Estimated record memory past which writes are refused or make room,
    /// e.g. 512mb, 2gb (default: no limit).
    #[arg(long, env = "SESSIOND_MAX_MEMORY")]
    pub max_memory: Option<String>,
    /// At the memory limit: reject (writes fail with OutOfMemory) or
    /// volatile-ttl (evict the sessions closest to expiry).
    #[arg(long, env = "SESSIOND_MEMORY_POLICY")]
    pub memory_policy: Option<String>,
    /// PEM certificate chain for TLS on the native protocol (with --tls-key).
    #[arg(long, env = "SESSIOND_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "SESSIOND_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9379).
    #[arg(long, env = "SESSIOND_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Allow listening beyond loopback without auth (protected mode is on by default).
    #[arg(long, env = "SESSIOND_INSECURE_NO_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default)]
    pub insecure_no_auth: bool,
    /// This member's id in a replicated group (with --cluster).
    #[arg(long, env = "SESSIOND_NODE_ID")]
    pub node_id: Option<u64>,
    /// The replicated group's members: ID=HOST:PORT,... (PORT: the
    /// inter-node port; this member listens on its own entry).
    #[arg(long, env = "SESSIOND_CLUSTER")]
    pub cluster: Option<String>,
    /// Join a running group (added with `sessionctl cluster add-node`)
    /// instead of initializing a new one.
    #[arg(long, env = "SESSIOND_CLUSTER_JOIN", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default)]
    pub cluster_join: bool,
    /// Token this member presents to the others (an admin token of their
    /// auth file, when they have one).
    #[arg(long, env = "SESSIOND_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// The client address other members give out for this one in NotLeader
    /// answers (default: the --listen address).
    #[arg(long, env = "SESSIOND_ADVERTISE")]
    pub advertise: Option<String>,
    /// Time a replicated write waits for a majority before it is answered
    /// Indeterminate (default 5s).
    #[arg(long, env = "SESSIOND_CLUSTER_WRITE_TIMEOUT")]
    pub cluster_write_timeout: Option<String>,
    /// PEM CA certificates that members' certificates are checked against.
    /// With --tls-cert/--tls-key a member also serves its inter-node port
    /// over TLS with that certificate and connects to the others over TLS,
    /// checking theirs (the host of each --cluster address must be in the
    /// member's certificate).
    #[arg(long, env = "SESSIOND_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
}

impl ServerArgs {
    /// Fills every unset field from `file`.
    fn or(self, file: Self) -> Self {
        Self {
            config: self.config,
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            max_connections: self.max_connections.or(file.max_connections),
            max_in_flight: self.max_in_flight.or(file.max_in_flight),
            worker_threads: self.worker_threads.or(file.worker_threads),
            max_frame_len: self.max_frame_len.or(file.max_frame_len),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            hello_timeout: self.hello_timeout.or(file.hello_timeout),
            frame_timeout: self.frame_timeout.or(file.frame_timeout),
            reserved_connections: self.reserved_connections.or(file.reserved_connections),
            max_buffer_memory: self.max_buffer_memory.or(file.max_buffer_memory),
            shutdown_timeout: self.shutdown_timeout.or(file.shutdown_timeout),
            expiry_tick: self.expiry_tick.or(file.expiry_tick),
            expiry_batch: self.expiry_batch.or(file.expiry_batch),
            tombstone_ttl: self.tombstone_ttl.or(file.tombstone_ttl),
            max_attrs_bytes: self.max_attrs_bytes.or(file.max_attrs_bytes),
            max_namespaces: self.max_namespaces.or(file.max_namespaces),
            fsync: self.fsync.or(file.fsync),
            touch_log_fraction: self.touch_log_fraction.or(file.touch_log_fraction),
            segment_bytes: self.segment_bytes.or(file.segment_bytes),
            compact_ratio: self.compact_ratio.or(file.compact_ratio),
            compact_min_bytes: self.compact_min_bytes.or(file.compact_min_bytes),
            repair: self.repair || file.repair,
            in_memory: self.in_memory || file.in_memory,
            events_retention: self.events_retention.or(file.events_retention),
            events_retention_bytes: self.events_retention_bytes.or(file.events_retention_bytes),
            auth_file: self.auth_file.or(file.auth_file),
            max_memory: self.max_memory.or(file.max_memory),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            memory_policy: self.memory_policy.or(file.memory_policy),
            insecure_no_auth: self.insecure_no_auth || file.insecure_no_auth,
            node_id: self.node_id.or(file.node_id),
            cluster: self.cluster.or(file.cluster),
            cluster_join: self.cluster_join || file.cluster_join,
            cluster_token: self.cluster_token.or(file.cluster_token),
            advertise: self.advertise.or(file.advertise),
            cluster_write_timeout: self.cluster_write_timeout.or(file.cluster_write_timeout),
            cluster_ca: self.cluster_ca.or(file.cluster_ca),
        }
    }

    /// The replicated group's settings, if `--cluster` is given.
    fn cluster_config(&self) -> Result<Option<crate::cluster::ClusterConfig>, ConfigError> {
        let Some(spec) = &self.cluster else {
            if self.node_id.is_some() {
                return Err(ConfigError::Invalid {
                    name: "node_id",
                    message: "--node-id needs --cluster".into(),
                });
            }
            return Ok(None);
        };
        let members = crate::cluster::ClusterConfig::parse_members(spec).map_err(|message| {
            ConfigError::Invalid {
                name: "cluster",
                message,
            }
        })?;
        let Some(node_id) = self.node_id else {
            return Err(ConfigError::Invalid {
                name: "node_id",
                message: "--cluster needs --node-id (this member's id in the list)".into(),
            });
        };
        if !members.contains_key(&node_id) {
            return Err(ConfigError::Invalid {
                name: "node_id",
                message: format!("member {node_id} is not in --cluster"),
            });
        }
        let write_timeout = match &self.cluster_write_timeout {
            None => crate::cluster::DEFAULT_WRITE_TIMEOUT,
            Some(s) => parse_duration(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ConfigError::Invalid {
                    name: "cluster_write_timeout",
                    message: format!("{s:?} is not a duration such as 5s"),
                })?,
        };
        Ok(Some(crate::cluster::ClusterConfig {
            node_id,
            members,
            join: self.cluster_join,
            token: self.cluster_token.clone(),
            advertise: self.advertise.clone(),
            write_timeout,
            tls: None,
        }))
    }

    /// Reads the config file (if named), merges it under these flags, and
    /// validates the result.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or setting at fault.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let merged = match &self.config {
            Some(path) => {
                let file = load_file(path)?;
                self.or(file)
            }
            None => self,
        };
        merged.validate()
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let mut cluster = self.cluster_config()?;
        let d = Config::default();
        let listen = match self.listen {
            Some(s) => s.parse().map_err(|e| ConfigError::Invalid {
                name: "listen",
                message: format!("{s:?} is not an address such as 127.0.0.1:7379 ({e})"),
            })?,
            None => d.listen,
        };
        let max_frame_len = self.max_frame_len.unwrap_or(d.max_frame_len);
        if !(64..=ABSOLUTE_MAX_FRAME_LEN).contains(&max_frame_len) {
            return Err(ConfigError::Invalid {
                name: "max_frame_len",
                message: format!("must be between 64 and {ABSOLUTE_MAX_FRAME_LEN}"),
            });
        }
        let events_retention = match &self.events_retention {
            Some(s) => {
                let t = duration("events_retention", s)?;
                (!t.is_zero()).then_some(t)
            }
            None => d.events_retention,
        };
        let events_retention_bytes = match self.events_retention_bytes.as_deref() {
            Some(s) => parse_size(s).map_err(|message| ConfigError::Invalid {
                name: "events_retention_bytes",
                message,
            })?,
            None => d.events_retention_bytes,
        };
        let idle_timeout = match self.idle_timeout {
            Some(s) => {
                let t = duration("idle_timeout", &s)?;
                (!t.is_zero()).then_some(t)
            }
            None => d.idle_timeout,
        };
        let positive = |name: &'static str, v: Option<usize>, default: usize| {
            let v = v.unwrap_or(default);
            if v == 0 {
                Err(ConfigError::Invalid {
                    name,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(v)
            }
        };
        let nonzero_duration = |name: &'static str, v: Option<String>, default: Duration| {
            let v = v.map_or(Ok(default), |s| duration(name, &s))?;
            if v.is_zero() {
                Err(ConfigError::Invalid {
                    name,
                    message: "must be longer than 0".into(),
                })
            } else {
                Ok(v)
            }
        };
        let tombstone_ttl = self
            .tombstone_ttl
            .map_or(Ok(Duration::from_millis(DEFAULT_TOMBSTONE_TTL_MS)), |s| {
                duration("tombstone_ttl", &s)
            })?;
        let fsync = match self.fsync {
            Some(s) => s.parse().map_err(|message| ConfigError::Invalid {
                name: "fsync",
                message,
            })?,
            None => d.fsync,
        };
        let fraction = |name: &'static str, v: Option<f64>, default: f64, max: f64| {
            let v = v.unwrap_or(default);
            if v.is_finite() && v >= 0.0 && v <= max {
                Ok(v)
            } else {
                Err(ConfigError::Invalid {
                    name,
                    message: format!("must be a number between 0 and {max}"),
                })
            }
        };
        let touch_log_fraction = fraction(
            "touch_log_fraction",
            self.touch_log_fraction,
            DEFAULT_TOUCH_LOG_FRACTION,
            1.0,
        )?;
        let compact_ratio = fraction("compact_ratio", self.compact_ratio, d.compact_ratio, 1e6)?;
        if compact_ratio < 1.0 {
            return Err(ConfigError::Invalid {
                name: "compact_ratio",
                message: "must be at least 1".into(),
            });
        }
        let segment_bytes = self.segment_bytes.unwrap_or(d.segment_bytes);
        if segment_bytes < 4096 {
            return Err(ConfigError::Invalid {
                name: "segment_bytes",
                message: "must be at least 4096".into(),
            });
        }
        let auth = self.auth_file.as_deref().map(AuthTable::load).transpose()?;
        // Protected mode: a daemon reachable from the network must not be
        // open to anyone who can connect.
        if auth.is_none() && !self.insecure_no_auth && !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                name: "listen",
                message: format!(
                    "refusing to listen on {listen} without authentication: give --auth-file \
                     (tokens hashed with `sessiond hash-token`), listen on a loopback address, \
                     or pass --insecure-no-auth if the network is trusted"
                ),
            });
        }
        let metrics_listen = self
            .metrics_listen
            .as_deref()
            .map(|s| {
                s.parse().map_err(|e| ConfigError::Invalid {
                    name: "metrics_listen",
                    message: format!("{s:?} is not an address such as 127.0.0.1:9379 ({e})"),
                })
            })
            .transpose()?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "tls_cert",
                    message: "--tls-cert and --tls-key go together".into(),
                })
            }
        };
        match (&mut cluster, &tls, &self.cluster_ca) {
            (Some(cc), Some(server), Some(ca)) => {
                cc.tls = Some(crate::cluster::PeerTls {
                    server: Arc::clone(server),
                    client: load_roots(ca)?,
                });
            }
            (Some(_), Some(_), None) => {
                return Err(ConfigError::Invalid {
                    name: "cluster_ca",
                    message: "with TLS (--tls-cert) a member needs --cluster-ca: the CA \
                              certificates the other members' certificates are checked against"
                        .into(),
                })
            }
            (_, None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "cluster_ca",
                    message: "--cluster-ca needs --tls-cert and --tls-key (the certificate \
                              this member serves its inter-node port with)"
                        .into(),
                })
            }
            (None, Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "cluster_ca",
                    message: "--cluster-ca needs --cluster".into(),
                })
            }
            _ => {}
        }
        if cluster.is_some() && self.in_memory {
            return Err(ConfigError::Invalid {
                name: "cluster",
                message:
                    "a replicated member keeps its Raft log on disk; --in-memory does not apply"
                        .into(),
            });
        }
        if cluster.is_some() && self.memory_policy.as_deref() == Some("volatile-ttl") {
            return Err(ConfigError::Invalid {
                name: "memory_policy",
                message: "a replicated group refuses writes at the memory limit (noeviction); \
                          volatile-ttl eviction would differ between members"
                    .into(),
            });
        }
        let max_memory = self
            .max_memory
            .as_deref()
            .map(|s| {
                parse_size(s).map_err(|message| ConfigError::Invalid {
                    name: "max_memory",
                    message,
                })
            })
            .transpose()?;
        let max_connections = positive("max_connections", self.max_connections, d.max_connections)?;
        let max_namespaces = positive(
            "max_namespaces",
            self.max_namespaces,
            DEFAULT_MAX_NAMESPACES,
        )?;
        if max_namespaces > crate::store::MAX_NAMESPACE_IDS {
            return Err(ConfigError::Invalid {
                name: "max_namespaces",
                message: format!(
                    "{max_namespaces} is more than the most allowed, {}",
                    crate::store::MAX_NAMESPACE_IDS
                ),
            });
        }
        let reserved_connections = match self.reserved_connections {
            Some(r) if r >= max_connections => {
                return Err(ConfigError::Invalid {
                    name: "reserved_connections",
                    message: format!(
                        "must be below max_connections ({max_connections}): peers still \
                         completing their Hello need room too"
                    ),
                })
            }
            Some(r) => r,
            None => max_connections / 10,
        };
        let max_buffer_memory = match self.max_buffer_memory.as_deref() {
            Some(s) => parse_size(s).map_err(|message| ConfigError::Invalid {
                name: "max_buffer_memory",
                message,
            })?,
            None => DEFAULT_MAX_BUFFER_MEMORY.min(max_memory.map_or(u64::MAX, |m| m / 4)),
        };
        Ok(Config {
            cluster,
            tls,
            metrics_listen,
            auth,
            fsync,
            segment_bytes,
            compact_ratio,
            compact_min_bytes: self.compact_min_bytes.unwrap_or(d.compact_min_bytes),
            repair: self.repair,
            in_memory: self.in_memory,
            events_retention,
            events_retention_bytes,
            listen,
            data_dir: self.data_dir.unwrap_or(d.data_dir),
            max_connections,
            reserved_connections,
            max_buffer_memory,
            hello_timeout: nonzero_duration("hello_timeout", self.hello_timeout, d.hello_timeout)?,
            frame_timeout: nonzero_duration("frame_timeout", self.frame_timeout, d.frame_timeout)?,
            max_in_flight: positive("max_in_flight", self.max_in_flight, d.max_in_flight)?,
            worker_threads: positive("worker_threads", self.worker_threads, d.worker_threads)?,
            max_frame_len,
            idle_timeout,
            shutdown_timeout: nonzero_duration(
                "shutdown_timeout",
                self.shutdown_timeout,
                d.shutdown_timeout,
            )?,
            expiry_tick: nonzero_duration("expiry_tick", self.expiry_tick, d.expiry_tick)?,
            expiry_batch: positive("expiry_batch", self.expiry_batch, d.expiry_batch)?,
            store: StoreConfig {
                tombstone_ttl_ms: u64::try_from(tombstone_ttl.as_millis()).unwrap_or(u64::MAX),
                max_attrs_bytes: positive(
                    "max_attrs_bytes",
                    self.max_attrs_bytes,
                    DEFAULT_MAX_ATTRS_BYTES,
                )?,
                max_namespaces,
                touch_log_fraction,
                max_memory,
                memory_policy: self
                    .memory_policy
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|message| ConfigError::Invalid {
                        name: "memory_policy",
                        message,
                    })?
                    .unwrap_or_default(),
                record_shards: crate::store::DEFAULT_RECORD_SHARDS,
            },
        })
    }
}

/// Reads a PEM certificate chain and key into a TLS server configuration.
fn load_tls(
    cert: &Path,
    key: &Path,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |name: &'static str, message: String| ConfigError::Invalid { name, message };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid("tls_cert", format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            "tls_cert",
            format!("{}: no certificate", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid("tls_key", format!("{}: {e}", key.display())))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("tls_cert", e.to_string()))?;
    Ok(Arc::new(config))
}

/// Reads PEM CA certificates into a TLS client configuration (members
/// connecting to each other).
fn load_roots(path: &Path) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let invalid = |message: String| ConfigError::Invalid {
        name: "cluster_ca",
        message,
    };
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(invalid(format!("{}: no certificate", path.display())));
    }
    Ok(Arc::new(
        tokio_rustls::rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// A byte size: a number with an optional kb/mb/gb (powers of 1024) suffix.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 512mb"))?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use kb, mb or gb)")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

fn duration(name: &'static str, s: &str) -> Result<Duration, ConfigError> {
    parse_duration(s).map_err(|e| ConfigError::Invalid {
        name,
        message: e.to_string(),
    })
}

fn load_file(path: &Path) -> Result<ServerArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("sessiond").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_loopback_and_local() {
        let c = parse(&[]).server.resolve().unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.max_frame_len, DEFAULT_MAX_FRAME_LEN);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessiond.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nidle_timeout = \"30s\"\nmax_connections = 7\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = parse(&["--config", p, "--listen", "127.0.0.1:0"])
            .server
            .resolve()
            .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = parse(&["--listen", "nowhere"])
            .server
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = parse(&["--idle-timeout", "5"])
            .server
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
        let err = parse(&["--max-frame-len", "1"])
            .server
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("max_frame_len"), "{err}");
        let err = parse(&["--max-namespaces", "2000000000"])
            .server
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("max_namespaces"), "{err}");
        assert!(parse(&["--max-namespaces", "1000000"])
            .server
            .resolve()
            .is_ok());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listne = \"127.0.0.1:1\"\n").unwrap();
        let err = parse(&["--config", path.to_str().unwrap()])
            .server
            .resolve()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn protected_mode_refuses_an_open_public_listener() {
        let err = parse(&["--listen", "0.0.0.0:7379"])
            .server
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("--auth-file"), "{err}");
        let c = parse(&["--listen", "0.0.0.0:7379", "--insecure-no-auth"])
            .server
            .resolve()
            .unwrap();
        assert!(c.auth.is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        std::fs::write(
            &path,
            format!(
                "[[token]]\nname = \"w\"\nsha256 = \"{}\"\nnamespaces = [\"*\"]\nrights = \"write\"\n",
                crate::auth::hash_token("t")
            ),
        )
        .unwrap();
        let c = parse(&[
            "--listen",
            "0.0.0.0:7379",
            "--auth-file",
            path.to_str().unwrap(),
        ])
        .server
        .resolve()
        .unwrap();
        assert!(c.auth.is_some());
    }

    #[test]
    fn sizes_and_memory_policy_parse() {
        assert_eq!(parse_size("512mb").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12 parsecs").is_err());
        let c = parse(&["--max-memory", "1gb", "--memory-policy", "volatile-ttl"])
            .server
            .resolve()
            .unwrap();
        assert_eq!(c.store.max_memory, Some(1 << 30));
        assert_eq!(
            c.store.memory_policy,
            crate::store::MemoryPolicy::VolatileTtl
        );
        let err = parse(&["--memory-policy", "lru"])
            .server
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("memory_policy"), "{err}");
    }

    #[test]
    fn cluster_ca_needs_tls_and_a_cluster() {
        let err = parse(&[
            "--node-id",
            "1",
            "--cluster",
            "1=127.0.0.1:7380",
            "--cluster-ca",
            "/nonexistent/ca.pem",
        ])
        .server
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }

    #[test]
    fn the_deployment_example_config_parses_with_every_setting() {
        let text = include_str!("../../deploy/sessiond.toml");
        let file: ServerArgs = toml::from_str(text).unwrap();
        let c = file.validate().unwrap();
        assert_eq!(c.fsync, FsyncPolicy::EverySec);
        assert_eq!(c.max_frame_len, DEFAULT_MAX_FRAME_LEN);
        // Every setting the file can hold is in the example (commented or not).
        for key in [
            "listen",
            "data_dir",
            "max_connections",
            "max_in_flight",
            "worker_threads",
            "max_frame_len",
            "idle_timeout",
            "hello_timeout",
            "frame_timeout",
            "reserved_connections",
            "max_buffer_memory",
            "shutdown_timeout",
            "expiry_tick",
            "expiry_batch",
            "tombstone_ttl",
            "max_attrs_bytes",
            "max_namespaces",
            "fsync",
            "touch_log_fraction",
            "segment_bytes",
            "compact_ratio",
            "compact_min_bytes",
            "repair",
            "in_memory",
            "events_retention",
            "events_retention_bytes",
            "auth_file",
            "max_memory",
            "memory_policy",
            "metrics_listen",
            "insecure_no_auth",
            "tls_cert",
            "tls_key",
            "node_id",
            "cluster",
            "cluster_join",
            "cluster_token",
            "advertise",
            "cluster_write_timeout",
            "cluster_ca",
        ] {
            assert!(
                text.contains(&format!("{key} =")),
                "deploy/sessiond.toml lacks {key}"
            );
        }
        let auth = crate::auth::AuthTable::parse(include_str!("../../deploy/auth.example.toml"));
        assert!(auth.is_ok(), "{auth:?}");
    }

    #[test]
    fn worker_threads_default_to_all_cores_but_one_and_zero_is_refused() {
        let c = parse(&[]).server.resolve().unwrap();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(c.worker_threads, cores.saturating_sub(1).max(1));
        let c = parse(&["--worker-threads", "3"]).server.resolve().unwrap();
        assert_eq!(c.worker_threads, 3);
        let err = parse(&["--worker-threads", "0"])
            .server
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("worker_threads"), "{err}");
    }

    #[test]
    fn zero_idle_timeout_disables() {
        let c = parse(&["--idle-timeout", "0"]).server.resolve().unwrap();
        assert_eq!(c.idle_timeout, None);
    }
}
