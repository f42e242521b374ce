//! Writes that allocate from what the store holds (a network's subnet and
//! VXLAN ID, a service's published ports and VIPs): two managers, or two
//! clients of one, may read the same store and pick the same free subnet
//! or port. Each such write carries the condition that nothing of the kinds
//! it allocated from was written since it read the store; raft applies
//! entries one at a time, so the later of two racing writes is refused and
//! allocates again from the store that now holds the earlier one. The
//! leader's log is the one serialised place where allocations are decided.

use std::time::Duration;

use super::ApiError;
use crate::cluster::Manager;
use crate::store::{Store, StoreError, Transaction};
use crate::types::Kind;

/// More than enough for the writes of one burst to pass one another.
const ATTEMPTS: u64 = 16;

/// What one attempt built.
pub struct Allocated<T> {
    pub tx: Transaction,
    /// Whether the transaction holds anything allocated from `kinds` (an
    /// update that keeps its ports and VIPs does not need the condition).
    pub allocates: bool,
    pub value: T,
}

/// Builds the write from the store as it is, proposes it on condition that
/// no object of `kinds` changed meanwhile, and builds again when one did.
pub async fn propose<T>(
    manager: &Manager,
    kinds: &[Kind],
    mut build: impl FnMut(&Store) -> Result<Allocated<T>, ApiError>,
) -> Result<T, ApiError> {
    let store = manager.store();
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        // Read before building: whatever the build saw is at most this new.
        let since = store.index();
        let Allocated {
            mut tx,
            allocates,
            value,
        } = build(&store)?;
        if allocates {
            for kind in kinds {
                tx = tx.unchanged_since(*kind, since);
            }
        }
        match manager.proposer().propose(tx).await? {
            Ok(_) => return Ok(value),
            Err(changed @ StoreError::Changed { .. }) => {
                tracing::debug!(attempt, %changed, "allocating again");
                last = Some(changed);
            }
            Err(other) => return Err(other.into()),
        }
        // The proposer returns once the refused entry is applied here, so
        // the store already holds what got in first; the pause only spreads
        // writers that keep colliding.
        tokio::time::sleep(Duration::from_millis(attempt)).await;
    }
    Err(last
        .map(ApiError::from)
        .unwrap_or_else(|| ApiError::Internal("allocation kept failing".into())))
}
