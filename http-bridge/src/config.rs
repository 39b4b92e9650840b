//! `sessiond-http` settings: flags and `SESSIOND_HTTP_*` environment
//! variables, validated once; the command line entry point.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Default HTTP address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default native address of the embedded daemon.
pub const DEFAULT_DAEMON_LISTEN: &str = "127.0.0.1:7379";
/// Default largest request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default time from a request's first byte to the end of its head.
pub const DEFAULT_HEADER_TIMEOUT: &str = "10s";
/// Default time to read a request's body.
pub const DEFAULT_BODY_TIMEOUT: &str = "30s";
/// Default time a keep-alive connection may sit idle between requests.
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
/// Default anonymous creates a second per client address.
pub const DEFAULT_CREATE_RATE: f64 = 20.0;
/// Default anonymous creates a client address may make at once.
pub const DEFAULT_CREATE_BURST: u32 = 100;

fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    sessiond_client::protocol::duration::parse_duration(s)
        .map_err(|e| e.to_string())
        .and_then(|d| {
            if d.is_zero() {
                Err("must be longer than 0".into())
            } else {
                Ok(d)
            }
        })
}

/// The default connection cap: 4096, or less when the process may open
/// fewer descriptors (64 are kept for the daemon, the log and the rest),
/// so that connections are refused with an answer before `accept` fails.
#[must_use]
pub fn default_max_connections() -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| {
        usize::try_from(soft).unwrap_or(usize::MAX)
    });
    soft.saturating_sub(64).clamp(16, 4096)
}

/// The validated bridge configuration.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// HTTP address to serve on.
    #[arg(long, env = "SESSIOND_HTTP_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Use this sessiond (HOST:PORT; for a replicated group, every member,
    /// comma-separated: requests follow the leader) instead of starting one
    /// in-process.
    #[arg(long, env = "SESSIOND_HTTP_DAEMON")]
    pub daemon: Option<String>,
    /// Token for a `--daemon` that requires auth (see `sessiond hash-token`).
    #[arg(long, env = "SESSIOND_HTTP_DAEMON_TOKEN", hide_env_values = true)]
    pub daemon_token: Option<String>,
    /// Connect to `--daemon` over TLS, verifying it with this CA certificate (PEM).
    #[arg(long, env = "SESSIOND_HTTP_DAEMON_TLS_CA")]
    pub daemon_tls_ca: Option<PathBuf>,
    /// Native protocol address of the embedded daemon.
    #[arg(long, env = "SESSIOND_HTTP_DAEMON_LISTEN", default_value = DEFAULT_DAEMON_LISTEN)]
    pub daemon_listen: SocketAddr,
    /// Data directory of the embedded daemon.
    #[arg(
        long,
        env = "SESSIOND_HTTP_DATA_DIR",
        default_value = "./sessiond-data"
    )]
    pub data_dir: PathBuf,
    /// Production mode: cookies are marked Secure (served behind HTTPS).
    #[arg(long, env = "SESSIOND_HTTP_PRODUCTION", value_parser = clap::builder::BoolishValueParser::new())]
    pub production: bool,
    /// Largest request body in bytes; larger ones get 413 (from the
    /// Content-Length header when there is one, before the body is read).
    #[arg(long, env = "SESSIOND_HTTP_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Most open HTTP connections; one more is answered 503 and closed
    /// (default 4096, or the descriptor limit less 64 when that is lower).
    #[arg(long, env = "SESSIOND_HTTP_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Time from a request's first byte to the end of its head (request
    /// line and headers); past it 408 and the connection is closed. A new
    /// connection that sends nothing is closed after it too.
    #[arg(long, env = "SESSIOND_HTTP_HEADER_TIMEOUT", default_value = DEFAULT_HEADER_TIMEOUT, value_parser = duration_arg)]
    pub header_timeout: std::time::Duration,
    /// Time to read a request's body once its head is in; past it 408.
    #[arg(long, env = "SESSIOND_HTTP_BODY_TIMEOUT", default_value = DEFAULT_BODY_TIMEOUT, value_parser = duration_arg)]
    pub body_timeout: std::time::Duration,
    /// A keep-alive connection idle this long between requests is closed.
    #[arg(long, env = "SESSIOND_HTTP_IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT, value_parser = duration_arg)]
    pub idle_timeout: std::time::Duration,
    /// Sessions a client address may create per second without credentials
    /// (the anonymous API's POST /api/session and /api/session/sync, the
    /// cache API's POST /create; IPv6 counted by /64); past it 429 with
    /// Retry-After. 0 turns the limit off.
    #[arg(long, env = "SESSIOND_HTTP_CREATE_RATE", default_value_t = DEFAULT_CREATE_RATE)]
    pub create_rate: f64,
    /// Such creates a client address may make at once before the rate applies.
    #[arg(long, env = "SESSIOND_HTTP_CREATE_BURST", default_value_t = DEFAULT_CREATE_BURST)]
    pub create_burst: u32,
    /// Embedded daemon: memory limit for sessions and connection buffers,
    /// e.g. 2gb (default none). At it, writes answer 507.
    #[arg(long, env = "SESSIOND_HTTP_MAX_MEMORY")]
    pub max_memory: Option<String>,
    /// Embedded daemon: what happens at --max-memory: reject (default) or
    /// volatile-ttl (evict the sessions closest to expiry).
    #[arg(long, env = "SESSIOND_HTTP_MEMORY_POLICY")]
    pub memory_policy: Option<String>,
    /// Embedded daemon: when its log syncs: always, everysec (default) or no.
    #[arg(long, env = "SESSIOND_HTTP_FSYNC")]
    pub fsync: Option<String>,
    /// Embedded daemon: most native-protocol connections (default 10000).
    #[arg(long, env = "SESSIOND_HTTP_DAEMON_MAX_CONNECTIONS")]
    pub daemon_max_connections: Option<usize>,
    /// Embedded daemon: a sessiond TOML config file for every other daemon
    /// setting (flags above and the bridge's listen address and data dir
    /// take precedence).
    #[arg(long, env = "SESSIOND_HTTP_DAEMON_CONFIG")]
    pub daemon_config: Option<PathBuf>,
    /// HS256 secret for the JWTs of the scheduled-sessions API.
    #[arg(long, env = "SESSIOND_HTTP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key (RS256/ES256) for those JWTs, instead of a secret.
    #[arg(long, env = "SESSIOND_HTTP_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Email of an administrator created at start if absent.
    #[arg(long, env = "SESSIOND_HTTP_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of that administrator.
    #[arg(long, env = "SESSIOND_HTTP_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Cli::parse_from(["sessiond-http"]).config
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "sessiond-http",
    version,
    about = "REST bridge to sessiond: the reference session APIs over one store"
)]
pub struct Cli {
    /// Settings.
    #[command(flatten)]
    pub config: Config,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the bridge's users.
    #[command(subcommand)]
    User(UserCommand),
}

/// `sessiond-http user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (the password is read from SESSIOND_HTTP_NEW_PASSWORD or stdin).
    Add {
        /// Login email.
        email: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
}

/// Runs `sessiond-http`.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    sessiond::cli::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sessiond-http: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        None => runtime.block_on(serve(cli.config)),
        Some(Command::User(UserCommand::Add { email, admin })) => {
            runtime.block_on(add_user(cli.config, email, admin))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond-http: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    #[cfg(unix)]
    let (mut int, mut term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    let bridge = crate::Bridge::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "sessiond-http ready on http://{} (daemon {})",
            bridge.http_addr, bridge.daemon_addr
        );
        let _ = out.flush();
    }
    #[cfg(unix)]
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    bridge.shutdown().await;
    Ok(())
}

async fn add_user(config: Config, email: String, admin: bool) -> anyhow::Result<()> {
    let password = match std::env::var("SESSIOND_HTTP_NEW_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let addr = config
        .daemon
        .clone()
        .unwrap_or_else(|| config.daemon_listen.to_string());
    // The same credentials as the bridge itself: a daemon that requires a
    // token or TLS refuses a bare connection.
    let mut client_config =
        sessiond_client::ClientConfig::new(addr.clone()).client_name("sessiond-http user add");
    if let Some(token) = &config.daemon_token {
        client_config = client_config.auth_token(token.clone());
    }
    if let Some(ca) = &config.daemon_tls_ca {
        client_config = client_config.tls(sessiond_client::TlsConfig::with_ca_file(ca)?);
    }
    let client = sessiond_client::Client::connect_with(client_config)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (is the bridge or sessiond running at {addr}?)"))?;
    let user = crate::users::create(
        &client,
        crate::users::NewUser {
            email,
            password,
            is_admin: admin,
            ..Default::default()
        },
    )
    .await?;
    println!(
        "user {} created{}",
        user.id,
        if admin { " (admin)" } else { "" }
    );
    Ok(())
}
