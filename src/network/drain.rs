//! Zero-downtime stops: the handshake between the agent, which stops task
//! containers, and this node's data plane, which routes traffic to them.
//!
//! The data-plane loop publishes the store index it has fully applied
//! (engine bridges, ingress backends, and whatever else routes to tasks).
//! Before the agent stops a running task it calls [`before_stop`]: once the
//! data plane has applied the write that changed the task's desired state,
//! no new connection reaches the task; then the connections the ingress
//! proxy still has open to it get the task's stop grace period to finish.
//!
//! Docker's swarm also takes a task out of its load balancer before the
//! stop, but does not wait for open connections: the signal cuts requests
//! in flight. Waiting for them is shoal's zero-downtime promise; a stop is
//! then delayed by at most the grace period (plus the data plane's catch-up).

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ingress::OpenConnections;
use super::local::{self, Engine};
use crate::store::Store;

/// The longest a stop waits for the data plane to catch up: a data plane
/// stuck on the engine must not hold stops forever.
const APPLY_WAIT: Duration = Duration::from_secs(2);

/// This node's running data plane, as the agent sees it.
pub struct DataPlane {
    store: Arc<Store>,
    engine: Arc<Engine>,
    applied: watch::Receiver<u64>,
    connections: Arc<OpenConnections>,
}

impl DataPlane {
    pub fn new(
        store: Arc<Store>,
        engine: Arc<Engine>,
        applied: watch::Receiver<u64>,
        connections: Arc<OpenConnections>,
    ) -> DataPlane {
        DataPlane {
            store,
            engine,
            applied,
            connections,
        }
    }
}

/// Set while the data-plane loop runs; `None` on a node without one (unit
/// tests, before init, after leave), where stops do not wait.
static CURRENT: RwLock<Option<Arc<DataPlane>>> = RwLock::new(None);

pub(super) fn publish(data_plane: Option<Arc<DataPlane>>) {
    if let Ok(mut slot) = CURRENT.write() {
        *slot = data_plane;
    }
}

fn current() -> Option<Arc<DataPlane>> {
    CURRENT.read().ok().and_then(|s| s.clone())
}

/// Called by the agent before it stops the running `container` of a task
/// whose desired state changed at store index `changed_at` (`None`: the
/// task is gone from the store; the current index stands in). Returns once
/// the data plane no longer routes to the task and its open connections
/// ended, or after `APPLY_WAIT` plus `grace` at most.
pub async fn before_stop(changed_at: Option<u64>, container: &str, grace: Duration) {
    let Some(data_plane) = current() else {
        return;
    };
    let begun = Instant::now();
    let index = changed_at.unwrap_or_else(|| data_plane.store.index());
    let mut applied = data_plane.applied.clone();
    let caught_up = tokio::time::timeout(APPLY_WAIT, applied.wait_for(|at| *at >= index))
        .await
        .is_ok_and(|seen| seen.is_ok());
    if !caught_up {
        tracing::warn!(
            container,
            index,
            "data plane did not catch up; stopping anyway"
        );
    }
    // Most stops have nothing open at all: no engine call then.
    if data_plane.connections.total() > 0 {
        if let Some(ip) = local::container_address(&data_plane.engine, container).await {
            let ip = IpAddr::V4(ip);
            let open = data_plane.connections.open_to(ip);
            if open > 0 {
                tracing::debug!(container, open, "letting open connections finish");
                let finished =
                    tokio::time::timeout(grace, data_plane.connections.wait_closed(ip)).await;
                if finished.is_err() {
                    tracing::debug!(
                        container,
                        "grace period over; stopping with connections open"
                    );
                }
            }
        }
    }
    tracing::debug!(container, waited = ?begun.elapsed(), "task drained");
}
