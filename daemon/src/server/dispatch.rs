//! Dispatch: one operation in, one reply out. This is the one place where store
//! errors become wire error codes.

use std::sync::atomic::Ordering;

use sessiond_protocol::{ErrorCode, NamespaceStats, Op, Reply, StaleRead, StatsReply, WireError};

use super::connection::SERVER_VERSION;
use super::Shared;
use crate::store::{RawSession, Store, StoreError};

/// Whether `op` changes data that must be durable before it is acknowledged
/// (touches are not: losing one only shortens a session).
pub(crate) fn is_write(op: &Op) -> bool {
    matches!(
        op,
        Op::Create(_)
            | Op::Update(_)
            | Op::Incr(_)
            | Op::Delete(_)
            | Op::DeleteByOwner(_)
            | Op::Rotate(_)
    )
}

/// What an operation answers.
pub(crate) enum Answer {
    /// Any reply.
    Reply(Reply),
    /// `Session` (or `MaybeSession(Some)` when `maybe`) with the attributes
    /// as stored, encoded: they go on the wire without being decoded.
    Session {
        /// `MaybeSession` rather than `Session`.
        maybe: bool,
        /// Its namespace (the request's).
        namespace: String,
        /// The session and its encoded attributes.
        raw: RawSession,
    },
    /// As `Session`, with the attributes in a buffer of their own (a
    /// replicated group's answer, which crossed the state machine).
    Encoded {
        /// `MaybeSession` rather than `Session`.
        maybe: bool,
        /// The session without attributes.
        head: sessiond_protocol::Session,
        /// The encoded attributes.
        attrs: Vec<u8>,
    },
}

impl Answer {
    /// The error code, if the operation failed.
    pub(crate) fn error(&self) -> Option<ErrorCode> {
        match self {
            Self::Reply(Reply::Error(e)) => Some(e.code),
            _ => None,
        }
    }
}

/// Executes `op` against the store. Never fails: errors are answers.
pub(crate) fn execute(shared: &Shared, op: Op) -> Answer {
    let tag = op_index(&op);
    let started = std::time::Instant::now();
    let answer = run(shared, op);
    shared
        .metrics
        .record(tag, answer.error(), started.elapsed());
    answer
}

/// The operation's tag (its index in `Op`, as on the wire).
pub(crate) fn op_index(op: &Op) -> usize {
    match op {
        Op::Hello(_) => 0,
        Op::Ping => 1,
        Op::Create(_) => 2,
        Op::Get(_) => 3,
        Op::Touch(_) => 4,
        Op::Update(_) => 5,
        Op::Incr(_) => 6,
        Op::Delete(_) => 7,
        Op::ListByOwner(_) => 8,
        Op::DeleteByOwner(_) => 9,
        Op::Rotate(_) => 10,
        Op::Stats => 11,
        Op::ClusterStatus => 12,
        Op::ClusterAddNode(_) => 13,
        Op::ClusterRemoveNode(_) => 14,
        Op::GetStale(_) => 15,
        Op::Subscribe(_) => 16,
    }
}

pub(crate) fn run(shared: &Shared, op: Op) -> Answer {
    match op {
        Op::Hello(_) => Answer::Reply(error(
            ErrorCode::InvalidRequest,
            "hello was already done on this connection".into(),
        )),
        Op::Ping => Answer::Reply(Reply::Pong),
        Op::Stats => Answer::Reply(Reply::Stats(stats(shared))),
        // A standalone connection turns into a feed before it gets here.
        Op::Subscribe(_) => Answer::Reply(error(
            ErrorCode::InvalidRequest,
            "this daemon serves no events feed here (a replicated group's members do not)".into(),
        )),
        Op::ClusterStatus | Op::ClusterAddNode(_) | Op::ClusterRemoveNode(_) => {
            Answer::Reply(error(
                ErrorCode::InvalidRequest,
                "this daemon is standalone (started without --cluster)".into(),
            ))
        }
        op => apply(&shared.store, op),
    }
}

/// Executes a data operation against `store` (what a replicated group's
/// members do when they apply a command, and what a standalone daemon does
/// for each request).
pub(crate) fn apply(store: &Store, op: Op) -> Answer {
    let result = match op {
        // The hot paths answer with the stored attributes as they are.
        Op::Create(c) => {
            return match store.create_raw(&c) {
                Ok(raw) => Answer::Session {
                    maybe: false,
                    namespace: c.namespace,
                    raw,
                },
                Err(e) => Answer::Reply(store_error(&e)),
            }
        }
        Op::Get(g) => {
            return match store.get_raw(&g.namespace, g.id, g.touch) {
                Ok(Some(raw)) => Answer::Session {
                    maybe: true,
                    namespace: g.namespace,
                    raw,
                },
                Ok(None) => Answer::Reply(Reply::MaybeSession(None)),
                Err(e) => Answer::Reply(store_error(&e)),
            }
        }
        Op::Touch(t) => store.touch(&t.namespace, t.id).map(Reply::Touched),
        Op::Update(u) => store.update(u).map(Reply::Updated),
        Op::Incr(i) => store.incr(i).map(Reply::Incr),
        Op::Delete(d) => store.delete(&d.namespace, d.id).map(Reply::Deleted),
        Op::ListByOwner(l) => store.list_by_owner(&l).map(Reply::Page),
        Op::DeleteByOwner(d) => store.delete_by_owner(&d).map(Reply::Count),
        Op::Rotate(r) => store.rotate(&r).map(Reply::Session),
        // Standalone, the store is the committed state.
        Op::GetStale(g) => store.get(&g.namespace, g.id, false).map(|session| {
            Reply::StaleSession(StaleRead {
                staleness_ms: 0,
                session,
            })
        }),
        other => Ok(error(
            ErrorCode::InvalidRequest,
            format!("{} is not a data operation", other.name()),
        )),
    };
    Answer::Reply(result.unwrap_or_else(|e| store_error(&e)))
}

pub(crate) fn store_error(e: &StoreError) -> Reply {
    error(e.code(), e.to_string())
}

pub(crate) fn error(code: ErrorCode, message: String) -> Reply {
    Reply::Error(WireError::new(code, message))
}

pub(crate) fn stats(shared: &Shared) -> StatsReply {
    let s = shared.store.stats();
    let c = &shared.counters;
    StatsReply {
        server_version: SERVER_VERSION.to_owned(),
        uptime_ms: u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        records: s.records,
        namespaces: s
            .namespaces
            .into_iter()
            .map(|(namespace, records)| NamespaceStats { namespace, records })
            .collect(),
        expired_total: s.expired_total,
        evicted_total: s.evicted_total,
        ops_total: shared.metrics.ops_total(),
        connections_current: c.connections_current.load(Ordering::Relaxed),
        connections_total: c.connections_total.load(Ordering::Relaxed),
        memory_bytes: s.memory_bytes,
    }
}
