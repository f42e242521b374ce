//! Consensus and persistence: openraft (storage-v2) over sled. A log entry
//! is a [`Batch`] of store [`Transaction`]s; its response is the store's
//! verdict on each, so a failed precondition is a committed no-op that
//! reports its error to its proposer.
//!
//! Open a node with [`RaftNode::open`], write through its [`Proposer`]
//! impl, read and watch [`RaftNode::store`].

#![allow(dead_code, unused_imports)] // wired by the api in issue 4

mod db;
mod disk;
mod error;
mod log_store;
mod network;
mod node;
mod state_machine;

pub use error::RaftError;
pub use log_store::LogStore;
pub use network::{NoNetwork, APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
pub use node::{Forwarded, NodeOptions, RaftNode, PROPOSE_PATH};
pub use state_machine::StateMachine;

use crate::store::{ApplyOutcome, Transaction};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// What one raft entry carries: the transactions of several concurrent
/// proposers, each still applied all or nothing on its own.
///
/// Why a batch and not one transaction per entry: openraft 0.9 appends each
/// client write as its own log append and waits for that append's flush
/// before taking the next, so one transaction per entry would cost one
/// fsync each. The node's proposer gathers what arrives while a write is in
/// flight into the next entry (group commit), as swarmkit batches too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Transaction>);

openraft::declare_raft_types!(
    /// Types of shoal's raft.
    pub TypeConfig:
        D = Batch,
        R = Vec<ApplyOutcome>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[cfg(test)]
mod tests;

#[cfg(test)]
mod crash_test;
