//! The cluster side of drains across hosts (`network::barrier`): every
//! node reports the store index its routing reflects to the leader, and a
//! stopping task's node asks the leader to wait for the others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::wire::{DrainWait, Empty, RoutingApplied, DRAIN_PATH, ROUTING_PATH};
use crate::network::barrier::{Barrier, RoutingAcks, MAX_WAIT};
use crate::raft::RaftNode;
use crate::store::Store;
use crate::transport::tls::MANAGER_NAME;
use crate::transport::Peers;

/// A report that cannot be delivered is dropped: the next one carries a
/// newer index anyway.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// The leader answers a drain within `MAX_WAIT`; a little more for the trip.
const DRAIN_CALL_TIMEOUT: Duration = Duration::from_secs(MAX_WAIT.as_secs() + 1);

/// Where a node sends its reports and drain waits: the leader.
#[derive(Clone)]
pub enum Leader {
    /// A manager: raft names the leader (maybe this node).
    Raft {
        raft: Arc<RaftNode>,
        acks: Arc<RoutingAcks>,
        store: Arc<Store>,
    },
    /// A worker: the manager its session follows (sessions are the
    /// leader's).
    Session(Arc<Mutex<Option<String>>>),
}

impl Leader {
    /// `None`: this node leads; else the leader's cluster address.
    fn remote(&self) -> Result<Option<String>, ()> {
        match self {
            Leader::Raft { raft, .. } => {
                let receiver = raft.raft().metrics();
                let metrics = receiver.borrow();
                let leader = metrics.current_leader.ok_or(())?;
                if leader == raft.id() && metrics.state == openraft::ServerState::Leader {
                    return Ok(None);
                }
                metrics
                    .membership_config
                    .membership()
                    .get_node(&leader)
                    .map(|n| Some(n.addr.clone()))
                    .ok_or(())
            }
            Leader::Session(current) => current
                .lock()
                .ok()
                .and_then(|c| c.clone())
                .map(Some)
                .ok_or(()),
        }
    }
}

/// Reports this node's routing index to the leader as it advances, one
/// call at a time (the latest index wins), until `stop`.
pub async fn report_routing(
    node_id: String,
    leader: Leader,
    peers: Option<Arc<Peers>>,
    mut applied: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    loop {
        let index = *applied.borrow_and_update();
        if index > 0 {
            match (leader.remote(), &leader, &peers) {
                (Ok(None), Leader::Raft { acks, .. }, _) => acks.ack(&node_id, index),
                (Ok(Some(addr)), _, Some(peers)) => {
                    let report = RoutingApplied { index };
                    let sent: Result<Empty, _> = tokio::select! {
                        _ = stop.cancelled() => return,
                        sent = peers.call(&addr, MANAGER_NAME, ROUTING_PATH, &report, REPORT_TIMEOUT) => sent,
                    };
                    if let Err(error) = sent {
                        tracing::debug!(%error, index, "routing report not delivered");
                    }
                }
                _ => {}
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
    }
}

/// A node's way to wait for the others before a stop: the leader's acks
/// when it leads, else a call to the leader.
pub struct LeaderBarrier {
    pub leader: Leader,
    pub peers: Option<Arc<Peers>>,
}

impl Barrier for LeaderBarrier {
    fn wait_routed_out(&self, task_id: String, index: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match (self.leader.remote(), &self.leader, &self.peers) {
                (Ok(None), Leader::Raft { acks, store, .. }, _) => {
                    acks.wait_routed_out(store, &task_id, index).await;
                }
                (Ok(Some(addr)), _, Some(peers)) => {
                    let wait = DrainWait { task_id, index };
                    let waited: Result<Empty, _> = peers
                        .call(&addr, MANAGER_NAME, DRAIN_PATH, &wait, DRAIN_CALL_TIMEOUT)
                        .await;
                    if let Err(error) = waited {
                        tracing::debug!(%error, "the leader could not wait for the other nodes");
                    }
                }
                _ => {}
            }
        })
    }
}
