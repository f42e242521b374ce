//! The one way the rest of shoal writes: propose a transaction.

use crate::store::tx::{ApplyOutcome, Transaction};
use crate::store::{ProposeError, Store};
use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex};

/// Something that gets a transaction committed and applied, and returns
/// the store's verdict. Implemented by the raft node; boxed future so loops
/// can hold an `Arc<dyn Proposer>`.
pub trait Proposer: Send + Sync {
    /// Resolves once the transaction is committed and applied to the local
    /// store (so a read right after sees it), with `Ok(Err(_))` when a
    /// precondition failed and nothing changed.
    fn propose(&self, tx: Transaction) -> BoxFuture<'_, Result<ApplyOutcome, ProposeError>>;
}

/// Applies straight to a store with consecutive indexes: no raft, no disk.
/// For tests of the parts above the store.
pub struct DirectProposer {
    store: Arc<Store>,
    next: Mutex<u64>,
}

impl DirectProposer {
    pub fn new(store: Arc<Store>) -> Self {
        let next = store.index() + 1;
        DirectProposer {
            store,
            next: Mutex::new(next),
        }
    }
}

impl Proposer for DirectProposer {
    fn propose(&self, tx: Transaction) -> BoxFuture<'_, Result<ApplyOutcome, ProposeError>> {
        Box::pin(async move {
            // The lock orders indexes with applies, as the raft log would.
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let outcome = self.store.apply(*next, &tx);
            *next += 1;
            Ok(outcome)
        })
    }
}
