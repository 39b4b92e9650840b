//! The `sessiond` command: parse the command line, set up logging, serve until
//! SIGINT or SIGTERM. The binary's `main` only calls [`main`].

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::config::{Cli, Command, Config};
use crate::server::{Daemon, Error};

/// Runs the `sessiond` command line with the process's arguments.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        None | Some(Command::Serve) => {}
        Some(Command::CheckLog { dir, repair }) => return check_log(&dir, repair),
        Some(Command::HashToken) => {
            let mut token = String::new();
            if std::io::stdin().read_line(&mut token).is_err() {
                eprintln!("sessiond: cannot read the token from stdin");
                return ExitCode::from(2);
            }
            println!(
                "{}",
                crate::auth::hash_token(token.trim_end_matches(['\r', '\n']))
            );
            return ExitCode::SUCCESS;
        }
    }
    let config = match cli.server.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sessiond: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    builder.worker_threads(config.worker_threads);
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sessiond: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the daemon, prints the ready line (`sessiond ready on ADDR`) on
/// stdout, and serves until SIGINT or SIGTERM, then shuts down gracefully.
///
/// # Errors
/// [`Error`] if the daemon cannot start.
pub async fn run(config: Config) -> Result<(), Error> {
    let signals = Signals::install();
    let daemon = Daemon::start(config).await?;
    {
        // Scripts and tests wait for this line to learn the bound port; a
        // closed stdout must not stop the daemon.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "sessiond ready on {}", daemon.local_addr());
        let _ = out.flush();
    }
    signals.wait().await;
    tracing::info!("shutting down");
    let store = std::sync::Arc::clone(daemon.store());
    daemon.shutdown().await;
    // The process exits next, with everything durable flushed and synced:
    // freeing the sessions one by one would only delay the exit (about
    // 0.3 s for a million), and with it a restart.
    std::mem::forget(store);
    Ok(())
}

/// `sessiond check-log DIR [--repair]`: one line per file, then a verdict.
fn check_log(dir: &std::path::Path, repair: bool) -> ExitCode {
    use crate::log::format::Tail;
    let reports = match crate::log::recovery::check_dir(dir, repair) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sessiond: {e}");
            return ExitCode::from(2);
        }
    };
    let mut damaged = 0;
    for r in &reports {
        let state = match &r.tail {
            Tail::Clean => "ok".to_string(),
            Tail::Torn { offset } => {
                format!("torn tail at byte {offset} (unacknowledged; cut on start)")
            }
            Tail::Empty => "holds no record (its creation never finished; removed on start)".into(),
            Tail::Corrupt { offset, reason } => {
                damaged += 1;
                format!("DAMAGED at byte {offset}: {reason}")
            }
        };
        let fixed = if r.repaired { " [repaired]" } else { "" };
        println!(
            "{}: {} records, {} bytes: {state}{fixed}",
            r.path.display(),
            r.records,
            r.bytes
        );
    }
    println!(
        "{} files checked, {damaged} damaged{}",
        reports.len(),
        if repair { " (repaired)" } else { "" }
    );
    if damaged > 0 && !repair {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Logs to stderr at the level `RUST_LOG` sets (default `info`), with colours
/// only on a terminal. Shared by every sessiond binary.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// SIGINT and SIGTERM, listened for from creation: installed before the ready
/// line, so a signal sent as soon as the line appears is never missed (the
/// default action would kill the process without a clean shutdown).
struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let install = |kind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, signal = name, "cannot listen for a signal");
                    None
                }
            };
            Self {
                int: install(SignalKind::interrupt(), "SIGINT"),
                term: install(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(self.int) => {}
                () = recv(self.term) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
