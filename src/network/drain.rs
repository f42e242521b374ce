//! Zero-downtime stops: the handshake between the agent, which stops task
//! containers, and this node's data plane, which routes traffic to them.
//!
//! The data-plane loop publishes the store index it has fully applied
//! (engine bridges, ingress backends, and whatever else routes to tasks).
//! Before the agent stops a running task it calls
//! [`DataPlane::before_stop`] (through [`super::NodeNetwork`]): once the
//! data plane has applied the write that changed the task's desired state,
//! no new connection reaches the task; then the connections the ingress
//! proxy still has open to it get the task's stop grace period to finish.
//!
//! Docker's swarm also takes a task out of its load balancer before the
//! stop, but does not wait for open connections: the signal cuts requests
//! in flight. Waiting for them is shoal's zero-downtime promise; a stop is
//! then delayed by at most the grace period (plus the data plane's catch-up).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ingress::OpenConnections;
use super::local::{self, Engine};
use crate::store::Store;

/// The longest a stop waits for the data plane to catch up: a data plane
/// stuck on the engine must not hold stops forever.
const APPLY_WAIT: Duration = Duration::from_secs(2);

/// This node's running data plane, as the agent sees it (through the
/// node's [`super::NodeNetwork`] while [`super::run`] runs).
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

    /// Called by the agent before it stops the running `container` of a
    /// task whose desired state changed at store index `changed_at`
    /// (`None`: the task is gone from the store; the current index stands
    /// in). Returns once the data plane no longer routes to the task and
    /// its open connections ended, or after `APPLY_WAIT` plus `grace` at
    /// most.
    pub async fn before_stop(&self, changed_at: Option<u64>, container: &str, grace: Duration) {
        let begun = Instant::now();
        let index = changed_at.unwrap_or_else(|| self.store.index());
        let mut applied = self.applied.clone();
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
        self.wait_for_connections(container, grace).await;
        tracing::debug!(container, waited = ?begun.elapsed(), "task drained");
    }

    async fn wait_for_connections(&self, container: &str, grace: Duration) {
        wait_for_connections(&self.engine, &self.connections, container, grace).await;
    }
}

/// A node without a data plane (a worker) routes to its own tasks only
/// through its ingress listeners (relays from other nodes included): before
/// a stop, the ingress plane its session sent without the task is applied,
/// then the task's open connections get `grace`.
pub async fn worker_before_stop(
    engine: &Engine,
    mut applied: watch::Receiver<super::ingress::IngressPlane>,
    connections: &OpenConnections,
    task_id: &str,
    container: &str,
    grace: Duration,
) {
    let begun = Instant::now();
    let left = tokio::time::timeout(APPLY_WAIT, applied.wait_for(|p| !p.serves(task_id)))
        .await
        .is_ok_and(|seen| seen.is_ok());
    if !left {
        tracing::debug!(container, "ingress still lists the task; stopping anyway");
    }
    wait_for_connections(engine, connections, container, grace).await;
    tracing::debug!(container, waited = ?begun.elapsed(), "task drained");
}

/// The task's open connections through the ingress proxy get `grace` to
/// finish.
async fn wait_for_connections(
    engine: &Engine,
    connections: &OpenConnections,
    container: &str,
    grace: Duration,
) {
    // Most stops have nothing open at all: no engine call then.
    if connections.total() == 0 {
        return;
    }
    let Some(ip) = local::container_address(engine, container).await else {
        return;
    };
    let ip = IpAddr::V4(ip);
    let open = connections.open_to(ip);
    if open == 0 {
        return;
    }
    tracing::debug!(container, open, "letting open connections finish");
    let finished = tokio::time::timeout(grace, connections.wait_closed(ip)).await;
    if finished.is_err() {
        tracing::debug!(
            container,
            "grace period over; stopping with connections open"
        );
    }
}
