//! sessiond-client: the async Rust client of the sessiond session store.
//!
//! A [`Client`] is a cheap-to-clone handle over a small pool of TCP connections;
//! every connection multiplexes many concurrent requests by request id, batching
//! writes from many tasks into one syscall. Each operation has a typed method;
//! failures are a typed [`Error`] that says whether a retry may help.
//!
//! Modules:
//! - [`client`]: the handle and the per-operation methods and options.
//! - [`config`]: [`ClientConfig`], pool size, timeouts, credentials.
//! - [`error`]: [`Error`] and [`Result`].
//! - [`events`]: [`Client::subscribe`], [`SubscribeOptions`] and the [`EventStream`] of session events.
//! - `cli` (feature `cli`): the `sessionctl` command.
//! - `tower_store` (feature `tower-sessions`): `SessiondStore`, a tower-sessions store.
//! - `actix_store` (feature `actix-session`): `SessiondActixStore`, an actix-session store.
//!
//! ```no_run
//! use std::time::Duration;
//! use sessiond_client::{Client, CreateOptions, UpdateOptions, ErrorCode};
//!
//! # async fn demo() -> Result<(), sessiond_client::Error> {
//! let client = Client::connect("127.0.0.1:7379").await?;
//! let s = client
//!     .create("app", CreateOptions::new().owner("alice").idle_ttl(Duration::from_secs(30 * 60)))
//!     .await?;
//! client
//!     .update("app", s.id, UpdateOptions::new().set("cart_items", 3i64).expected_version(s.version))
//!     .await?;
//! match client.update("app", s.id, UpdateOptions::new().expected_version(s.version)).await {
//!     Err(e) if e.code() == Some(ErrorCode::Conflict) => { /* someone else wrote first */ }
//!     other => { other?; }
//! }
//! let everywhere_else = client.delete_by_owner("app", "alice", Some(s.id)).await?;
//! println!("logged out {everywhere_else} other sessions");
//! # Ok(()) }
//! ```

pub mod client;
pub mod config;
mod connection;
pub mod error;
pub mod events;

#[cfg(feature = "actix-session")]
pub mod actix_store;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "tower-sessions")]
pub mod tower_store;

#[cfg(feature = "actix-session")]
pub use actix_store::SessiondActixStore;
#[cfg(feature = "tower-sessions")]
pub use tower_store::SessiondStore;

pub use client::{Client, CreateOptions, UpdateOptions};
pub use config::{ClientConfig, TlsConfig};
pub use error::{Error, Result};
pub use events::{EventStream, SubscribeOptions};
/// The protocol crate, for what is not re-exported below (the operation
/// structs to build an [`Op`] for [`Client::call`], the frame codec, limits
/// and duration parsing), so that users need no second dependency.
pub use sessiond_protocol as protocol;
pub use sessiond_protocol::{
    Attrs, AuthToken, CursorExpired, DecodeError, DeleteReason, EncodeError, ErrorCode, Event,
    EventKind, EventsFrom, FrameError, IncrReply, LimitPolicy, ListCursor, NamespaceStats, Op,
    Reply, Session, SessionId, SessionPage, StaleRead, StatsReply, Subscribed, TouchReply, Ttl,
    UpdateReply, Value, WireError,
};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
