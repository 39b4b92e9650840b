//! sessiond: an in-memory session-store daemon.
//!
//! Modules:
//! - [`store`]: records, the owner index, tombstones and the operations on them.
//! - [`expiry`]: the hierarchical timer wheel and the task that reclaims expired records.
//! - [`log`]: the append-only log, recovery and compaction.
//! - [`events`]: the session events feed (cursors, retention, subscribers' reads).
//! - [`server`]: the TCP server: connection tasks, framing, dispatch.
//! - [`config`]: flags, `SESSIOND_*` environment variables and the TOML file.
//! - [`clock`]: the injectable time source.
//! - [`cluster`]: replicated groups on openraft (`--node-id`, `--cluster`).
//! - [`auth`]: the auth file: hashed tokens scoped to namespaces and rights.
//! - [`cli`]: the `sessiond` command (ready line, signals).
//!
//! Embedding (as the HTTP bridge does):
//!
//! ```no_run
//! # async fn demo() -> Result<(), sessiond::Error> {
//! let config = sessiond::Config::default();
//! let daemon = sessiond::Daemon::start(config).await?;
//! println!("serving on {}", daemon.local_addr());
//! daemon.shutdown().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod events;
pub mod expiry;
pub mod log;
pub mod metrics;
pub mod server;
pub mod store;

pub use config::Config;
pub use server::{Daemon, Error};
