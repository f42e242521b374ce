//! Consensus and persistence: openraft (storage-v2) over sled. A log entry
//! is a store [`Transaction`]; its response is the store's verdict, so a
//! failed precondition is a committed no-op that reports its error.
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
pub use network::NoNetwork;
pub use node::{NodeOptions, RaftNode};
pub use state_machine::StateMachine;

use crate::store::{ApplyOutcome, Transaction};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// Types of shoal's raft.
    pub TypeConfig:
        D = Transaction,
        R = ApplyOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[cfg(test)]
mod tests;
