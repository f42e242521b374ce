//! Errors of the store part.

use crate::types::Kind;
use serde::{Deserialize, Serialize};

/// Why a transaction or lookup failed. A failed transaction changed nothing.
/// Serializable because it travels back to the proposer as the raft
/// response of a committed no-op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: Kind, id: String },
    /// Another object of the kind has the same name, compared
    /// case-insensitively as swarmkit does.
    #[error("{kind} name {name:?} is already in use")]
    NameConflict { kind: Kind, name: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    /// The writer's `Version.Index` is not the stored one. The engine's text.
    #[error("update out of sequence")]
    OutOfSequence {
        kind: Kind,
        id: String,
        expected: u64,
        actual: u64,
    },
    /// A reference matched several objects by name or ID prefix.
    #[error("{kind} {reference} is ambiguous ({count} matches)")]
    Ambiguous {
        kind: Kind,
        reference: String,
        count: usize,
    },
    #[error("invalid {kind}: {reason}")]
    Invalid { kind: Kind, reason: String },
    /// An [`crate::store::Op::Unchanged`] precondition failed: a {kind}
    /// was written at `newest`, after the proposer read the store.
    #[error(
        "{kind} objects changed while allocating (written at {newest}, read at {since}); try again"
    )]
    Changed { kind: Kind, since: u64, newest: u64 },
}

/// Why an object could not be encoded or decoded for disk.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Other(String),
}

/// Why a proposal did not produce an outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; writes go to `leader` (forwarding comes
    /// with the transport).
    #[error("this node is not the raft leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// No leader is known, or it cannot be reached: the engine's text.
    #[error("rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.")]
    NoLeader,
    #[error("raft is shutting down")]
    ShuttingDown,
    #[error("raft failed: {0}")]
    Raft(String),
    /// The data dir's file system is (nearly) full: refused before raft
    /// writes anything, since a log write failing half way stops raft.
    #[error("no space left on device: {0}")]
    NoSpace(String),
}
