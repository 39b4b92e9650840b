//! What a replicated group agrees on: the Raft type configuration, the
//! commands in its log and what applying one answers.

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use sessiond_protocol::{Op, Reply, Rotate, Session, SessionId};

openraft::declare_raft_types!(
    /// The Raft types of a sessiond group.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A member's id.
pub type NodeId = u64;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log position.
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// A command in the replicated log. The leader fixes everything the members
/// must agree on before proposing it (the time, new ids), so applying it is
/// deterministic: every member, applying the same commands in the same order
/// from the same state, reaches the same state and the same answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A write operation (`Create` with its id drawn, `Update`, `Incr`,
    /// `Delete`, `DeleteByOwner`, `Touch`), applied at `now_ms`.
    Write {
        /// The leader's time when it proposed the command.
        now_ms: u64,
        /// The operation.
        op: Op,
    },
    /// A rotation to `new_id`.
    Rotate {
        /// The leader's time.
        now_ms: u64,
        /// The rotation.
        rotate: Rotate,
        /// The id the leader drew.
        new_id: SessionId,
    },
    /// Time has come to `now_ms`: every deadline, tombstone end and grace
    /// period end up to it is reclaimed, on every member alike.
    Expire {
        /// The leader's time.
        now_ms: u64,
    },
    /// Commands proposed together (see `cluster::batch`), applied in order,
    /// each at its own time, each answered. Never nested: a nested batch
    /// does not decode (so no log record can make decoding recurse deeply).
    Batch(#[serde(deserialize_with = "flat_commands")] Vec<Command>),
}

/// A command of a batch as decoded: the variants of [`Command`] but
/// `Batch`, with the same indices.
#[derive(Deserialize)]
enum Flat {
    Write {
        now_ms: u64,
        op: Op,
    },
    Rotate {
        now_ms: u64,
        rotate: Rotate,
        new_id: SessionId,
    },
    Expire {
        now_ms: u64,
    },
}

fn flat_commands<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Command>, D::Error> {
    let flat = Vec::<Flat>::deserialize(d)?;
    Ok(flat
        .into_iter()
        .map(|f| match f {
            Flat::Write { now_ms, op } => Command::Write { now_ms, op },
            Flat::Rotate {
                now_ms,
                rotate,
                new_id,
            } => Command::Rotate {
                now_ms,
                rotate,
                new_id,
            },
            Flat::Expire { now_ms } => Command::Expire { now_ms },
        })
        .collect())
}

impl Command {
    /// The time the command is applied at.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        match self {
            Self::Write { now_ms, .. } | Self::Rotate { now_ms, .. } | Self::Expire { now_ms } => {
                *now_ms
            }
            Self::Batch(cmds) => cmds.iter().map(Self::now_ms).max().unwrap_or(0),
        }
    }
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum Applied {
    /// Nothing to answer (a blank or membership entry, an expiry round).
    #[default]
    Nothing,
    /// A reply.
    Reply(Reply),
    /// A session, its attributes as stored (encoded).
    Session {
        /// `MaybeSession` rather than `Session`.
        maybe: bool,
        /// The session without attributes.
        head: Session,
        /// The encoded attributes.
        attrs: Vec<u8>,
    },
    /// A batch's answers, one per command, in order.
    Batch(Vec<Applied>),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sessiond_protocol::frame::{decode_value, encode_value};

    use super::*;

    #[test]
    fn a_batch_round_trips_and_a_nested_one_does_not_decode() {
        let one = Command::Expire { now_ms: 7 };
        let batch = Command::Batch(vec![
            one.clone(),
            Command::Write {
                now_ms: 8,
                op: Op::Ping,
            },
        ]);
        let back: Command = decode_value(&encode_value(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
        assert_eq!(back.now_ms(), 8);
        let nested = Command::Batch(vec![Command::Batch(vec![one])]);
        assert!(decode_value::<Command>(&encode_value(&nested).unwrap()).is_err());
    }
}
