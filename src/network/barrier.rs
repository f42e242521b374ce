//! Drains across hosts: a task stopping on one node must first leave the
//! VIP tables, DNS and ingress backends of every node that routes to it.
//! A node's own data plane is waited for locally (`drain`); the other nodes
//! are waited for here, through the leader.
//!
//! Every node tells the leader the store index its routing reflects: a
//! manager when its data plane has applied an index, a worker when it has
//! programmed the assignment set its session sent (which names the index
//! the set was computed at). Before a stop, the stopping node's agent asks
//! the leader to wait until every node routing to the task has reported the
//! index that changed the task's desired state, or [`MAX_WAIT`] passed (a
//! node that is slow or cut off must not hold stops for long). Docker's
//! swarm removes a stopping task from other nodes' load balancers by gossip
//! and stops it without waiting: its users see connections refused during
//! rolling updates.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::models::{NodeState, TaskState};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::manager::orchestrator::{as_node, as_task};
use crate::store::{Store, Tables};
use crate::types::Kind;

/// The longest a stop waits for other nodes.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// What the leader knows of every node's routing: the store index it
/// reflects. Kept across terms (an index, once reached, stays reached).
#[derive(Debug)]
pub struct RoutingAcks {
    applied: watch::Sender<HashMap<String, u64>>,
}

impl Default for RoutingAcks {
    fn default() -> Self {
        RoutingAcks {
            applied: watch::channel(HashMap::new()).0,
        }
    }
}

impl RoutingAcks {
    /// Node `node_id` routes by the store at `index` (or later).
    pub fn ack(&self, node_id: &str, index: u64) {
        self.applied.send_if_modified(|applied| {
            let at = applied.entry(node_id.to_string()).or_insert(0);
            let newer = index > *at;
            *at = (*at).max(index);
            newer
        });
    }

    /// Returns once every node that routes to task `task_id` reflects
    /// `index`, or after [`MAX_WAIT`]; whether they all did.
    pub async fn wait_routed_out(&self, store: &Store, task_id: &str, index: u64) -> bool {
        let mut applied = self.applied.subscribe();
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let waiting = store.read(|t| {
                let acks = applied.borrow_and_update();
                lagging(t, &acks, task_id, index)
            });
            if waiting.is_empty() {
                return true;
            }
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return false },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(task = task_id, index, ?waiting, "nodes still route to a stopping task; stopping anyway");
                    return false;
                }
            }
        }
    }
}

/// The nodes that route to task `task_id` and have not reported `index`:
/// every ready manager (their data planes route every network) and every
/// ready worker running a task on one of the task's networks (its VIP
/// table and DNS hold the task). A task on no network is routed by no one.
fn lagging(tables: &Tables, acks: &HashMap<String, u64>, task_id: &str, index: u64) -> Vec<String> {
    let Some(task) = tables.get(Kind::Task, task_id).as_ref().and_then(as_task) else {
        return Vec::new();
    };
    let networks: HashSet<String> = super::local::task_attachments(&task)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    if networks.is_empty() {
        return Vec::new();
    }
    let mut peers_on_networks: HashSet<String> = HashSet::new();
    for other in tables.iter(Kind::Task).filter_map(as_task) {
        let live = other.desired_state == Some(TaskState::RUNNING);
        let shares = super::local::task_attachments(&other)
            .iter()
            .any(|(id, _)| networks.contains(id));
        if let (true, true, Some(node)) = (live, shares, other.node_id.clone()) {
            peers_on_networks.insert(node);
        }
    }
    tables
        .iter(Kind::Node)
        .filter_map(as_node)
        .filter(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY))
        .filter_map(|n| {
            let id = n.id.clone()?;
            let manager = n.manager_status.is_some();
            (manager || peers_on_networks.contains(&id)).then_some(id)
        })
        .filter(|id| acks.get(id).copied().unwrap_or(0) < index)
        .collect()
}

/// How a node's agent waits for the other nodes before a stop: through
/// the leader, in process or over the cluster port.
pub trait Barrier: Send + Sync {
    fn wait_routed_out(&self, task_id: String, index: u64) -> BoxFuture<'_, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Transaction;
    use crate::types::{Object, Timestamp};
    use bollard::models::{NetworkAttachmentConfig, Node, NodeStatus, Task, TaskSpec};

    fn node(id: &str, manager: bool) -> Object {
        Object::Node(Box::new(Node {
            id: Some(id.into()),
            status: Some(NodeStatus {
                state: Some(NodeState::READY),
                ..Default::default()
            }),
            manager_status: manager.then(Default::default),
            ..Default::default()
        }))
    }

    fn task(id: &str, node: &str, network: &str) -> Object {
        Object::Task(Box::new(
            Task {
                id: Some(id.into()),
                node_id: Some(node.into()),
                desired_state: Some(TaskState::RUNNING),
                spec: Some(TaskSpec {
                    networks: Some(vec![NetworkAttachmentConfig {
                        target: Some(network.into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into(),
        ))
    }

    #[tokio::test]
    async fn a_stop_waits_for_managers_and_workers_sharing_the_network() {
        let store = Store::new();
        let tx = Transaction::new(Timestamp { secs: 1, nanos: 0 })
            .create(node("m1", true))
            .create(node("w1", false))
            .create(node("w2", false))
            .create(task("t1", "w1", "net"))
            .create(task("t2", "w1", "net"))
            .create(task("t3", "w2", "other"));
        store.apply(5, &tx).unwrap();
        let acks = RoutingAcks::default();
        let waiting = store.read(|t| lagging(t, &acks.applied.borrow(), "t1", 5));
        // w2 runs nothing on `net`: it does not route to t1.
        assert_eq!(waiting, vec!["m1".to_string(), "w1".to_string()]);
        acks.ack("m1", 5);
        acks.ack("w1", 4);
        let waiting = store.read(|t| lagging(t, &acks.applied.borrow(), "t1", 5));
        assert_eq!(waiting, vec!["w1".to_string()]);
        // The wait ends as soon as the last one reports.
        let (done, ()) = tokio::join!(acks.wait_routed_out(&store, "t1", 5), async {
            tokio::task::yield_now().await;
            acks.ack("w1", 6);
        });
        assert!(done);
    }
}
