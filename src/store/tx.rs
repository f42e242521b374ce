//! Transactions: what a raft entry carries.

use crate::store::StoreError;
use crate::types::{Kind, Object, Timestamp};
use serde::{Deserialize, Serialize};

/// One change in a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Insert an object that must not exist yet (its ID set by the proposer,
    /// see [`crate::types::new_id`]).
    Create(Object),
    /// Replace an object whose stored `Version.Index` must be `expected`.
    Update { object: Object, expected: u64 },
    /// Remove an object, optionally only at version `expected`.
    Delete {
        kind: Kind,
        id: String,
        expected: Option<u64>,
    },
    /// Changes nothing; refuses the transaction when an object of `kind`
    /// was created or updated after raft index `since`. For writes that
    /// allocate from what the store held at `since` (subnets, published
    /// ports, VIPs): raft applies entries one at a time, so of two creates
    /// that read the same store, the second is refused and allocates again.
    Unchanged { kind: Kind, since: u64 },
}

/// A batch of ops applied all or nothing. `at` is chosen by the proposer so
/// every replica stamps the same `CreatedAt`/`UpdatedAt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub at: Timestamp,
    pub ops: Vec<Op>,
}

impl Transaction {
    pub fn new(at: Timestamp) -> Self {
        Transaction {
            at,
            ops: Vec::new(),
        }
    }

    pub fn create(mut self, object: Object) -> Self {
        self.ops.push(Op::Create(object));
        self
    }

    pub fn update(mut self, object: Object, expected: u64) -> Self {
        self.ops.push(Op::Update { object, expected });
        self
    }

    /// See [`Op::Unchanged`].
    pub fn unchanged_since(mut self, kind: Kind, since: u64) -> Self {
        self.ops.push(Op::Unchanged { kind, since });
        self
    }

    pub fn delete(mut self, kind: Kind, id: impl Into<String>, expected: Option<u64>) -> Self {
        self.ops.push(Op::Delete {
            kind,
            id: id.into(),
            expected,
        });
        self
    }
}

/// A transaction that took effect at raft log index `index` (also the new
/// `Version.Index` of every object it touched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub index: u64,
}

/// What applying a committed entry produced. A precondition failure is an
/// `Err`: the entry is still committed, as a no-op.
pub type ApplyOutcome = Result<Committed, StoreError>;
