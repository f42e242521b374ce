//! Which nodes are alive: every node (managers too) keeps a session open
//! with the leader; the leader marks a node `Down` when it has had no
//! session for [`DOWN_AFTER`], and `Ready` again when one opens. The
//! orchestrator then moves replicated tasks off down nodes (they count as
//! unable to take tasks).
//!
//! How fast a dead node is noticed: the session's HTTP/2 connection pings
//! (see `transport::server`), so a dead peer's session ends within a few
//! seconds; the grace after that absorbs a session moving between
//! managers. A busy node still answers pings (they need microseconds of
//! CPU), so it is not marked down. After a leader change every node gets a
//! fresh grace: nothing is marked down because leadership moved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bollard::models::{NodeState, NodeStatus};
use tokio_util::sync::CancellationToken;

use crate::store::{Proposer, Store, Transaction};
use crate::types::{Kind, Object, Timestamp};

/// A node without a session for this long is marked down.
pub const DOWN_AFTER: Duration = Duration::from_secs(3);
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// What a down node's status says, as swarmkit's dispatcher.
const HEARTBEAT_FAILURE: &str = "heartbeat failure";

#[derive(Debug, Clone, Copy)]
struct Presence {
    open: usize,
    /// When the last session closed (or the first opened).
    changed: Instant,
}

/// The sessions open on this manager, per node.
#[derive(Debug, Default)]
pub struct Liveness {
    nodes: Mutex<HashMap<String, Presence>>,
}

/// Held by a session while it is open.
pub struct SessionGuard {
    liveness: Arc<Liveness>,
    node_id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut nodes) = self.liveness.nodes.lock() {
            if let Some(p) = nodes.get_mut(&self.node_id) {
                p.open = p.open.saturating_sub(1);
                p.changed = Instant::now();
            }
        }
    }
}

impl Liveness {
    pub fn opened(self: &Arc<Self>, node_id: &str) -> SessionGuard {
        if let Ok(mut nodes) = self.nodes.lock() {
            let p = nodes.entry(node_id.to_string()).or_insert(Presence {
                open: 0,
                changed: Instant::now(),
            });
            p.open += 1;
            p.changed = Instant::now();
        }
        SessionGuard {
            liveness: self.clone(),
            node_id: node_id.to_string(),
        }
    }

    /// Whether `node_id` has a session now.
    fn connected(&self, node_id: &str) -> bool {
        self.nodes
            .lock()
            .ok()
            .and_then(|n| n.get(node_id).map(|p| p.open > 0))
            .unwrap_or(false)
    }

    /// No session for `DOWN_AFTER`, counting from `floor` at the earliest.
    fn silent(&self, node_id: &str, floor: Instant) -> bool {
        let presence = self.nodes.lock().ok().and_then(|n| n.get(node_id).copied());
        match presence {
            Some(p) if p.open > 0 => false,
            Some(p) => p.changed.max(floor).elapsed() >= DOWN_AFTER,
            None => floor.elapsed() >= DOWN_AFTER,
        }
    }
}

/// The leader's loop: marks silent nodes down and returning ones ready,
/// until `term` ends. `leader_node` is this node (always alive).
pub async fn watch_nodes(
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    liveness: Arc<Liveness>,
    leader_node: String,
    term: CancellationToken,
) {
    let term_began = Instant::now();
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if changes(&store, &liveness, &leader_node, term_began).is_empty() {
            continue;
        }
        let proposed = crate::manager::propose_fresh(&proposer, || {
            let changes = changes(&store, &liveness, &leader_node, term_began);
            if changes.is_empty() {
                None
            } else {
                transaction(&store, &changes)
            }
        })
        .await;
        if let Err(error) = proposed {
            tracing::warn!(%error, "node states could not be committed");
        }
    }
}

/// Nodes whose state should change: (node ID, new state).
fn changes(
    store: &Store,
    liveness: &Liveness,
    leader_node: &str,
    term_began: Instant,
) -> Vec<(String, NodeState)> {
    let mut out = Vec::new();
    for object in store.list(Kind::Node) {
        let Object::Node(node) = &*object else {
            continue;
        };
        let Some(id) = node.id.as_deref() else {
            continue;
        };
        let status = node.status.as_ref();
        let state = status.and_then(|s| s.state);
        let left = status.and_then(|s| s.message.as_deref()) == Some(super::port::LEFT_MESSAGE);
        if id == leader_node {
            if state != Some(NodeState::READY) {
                out.push((id.to_string(), NodeState::READY));
            }
            continue;
        }
        match state {
            Some(NodeState::READY) if liveness.silent(id, term_began) => {
                out.push((id.to_string(), NodeState::DOWN))
            }
            Some(NodeState::DOWN) if !left && liveness.connected(id) => {
                out.push((id.to_string(), NodeState::READY))
            }
            _ => {}
        }
    }
    out
}

fn transaction(store: &Store, changes: &[(String, NodeState)]) -> Option<Transaction> {
    let mut tx = Transaction::new(Timestamp::from_system(SystemTime::now()));
    for (id, state) in changes {
        let object = store.get(Kind::Node, id)?;
        let Object::Node(node) = &*object else {
            continue;
        };
        let mut node = (**node).clone();
        let version = node.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        let status = node.status.get_or_insert_with(NodeStatus::default);
        status.state = Some(*state);
        status.message = (*state == NodeState::DOWN).then(|| HEARTBEAT_FAILURE.to_string());
        tracing::info!(node = %id, state = %state, "node state changed");
        tx = tx.update(Object::Node(Box::new(node)), version);
    }
    Some(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_silent_only_after_the_grace() {
        let liveness = Arc::new(Liveness::default());
        let now = Instant::now();
        assert!(!liveness.silent("n1", now), "a fresh term gives a grace");
        let long_ago = now - DOWN_AFTER - Duration::from_secs(1);
        assert!(liveness.silent("n1", long_ago));
        let guard = liveness.opened("n1");
        assert!(!liveness.silent("n1", long_ago));
        assert!(liveness.connected("n1"));
        drop(guard);
        assert!(!liveness.connected("n1"));
        assert!(
            !liveness.silent("n1", long_ago),
            "just closed: still in its grace"
        );
    }
}
