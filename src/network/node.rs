//! The handle to this node's network side: one per node, made by the daemon
//! with the engine's address and handed to the data plane ([`super::run`]),
//! the agent (container networks, drains) and [`super::leave`]. Several
//! nodes in one process each have their own.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, Task};

use super::drain::DataPlane;
use super::local::{self, Engine};

/// This node's network side. Clones share it. One made with
/// [`NodeNetwork::without_engine`] (unit tests) does nothing at all: no
/// data plane runs, containers get no swarm network settings that need
/// it, and stops do not wait.
#[derive(Clone)]
pub struct NodeNetwork {
    engine: Option<Arc<Engine>>,
    /// The data plane while it runs here (on a manager); the agent reads
    /// the store and the drain state through it.
    data_plane: Arc<RwLock<Option<Arc<DataPlane>>>>,
}

/// No engine: what options built by hand (tests) get.
impl Default for NodeNetwork {
    fn default() -> NodeNetwork {
        NodeNetwork::without_engine()
    }
}

impl NodeNetwork {
    /// The network side of a node whose engine is at `engine_addr`.
    pub fn new(engine_addr: &str) -> NodeNetwork {
        NodeNetwork {
            engine: Some(Arc::new(Engine::new(engine_addr))),
            data_plane: Arc::default(),
        }
    }

    /// A node with no engine to drive: every method is a no-op.
    pub fn without_engine() -> NodeNetwork {
        NodeNetwork {
            engine: None,
            data_plane: Arc::default(),
        }
    }

    pub(super) fn engine(&self) -> Option<&Arc<Engine>> {
        self.engine.as_ref()
    }

    /// Set by the data plane while it runs, cleared when it ends.
    pub(super) fn publish(&self, data_plane: Option<Arc<DataPlane>>) {
        if let Ok(mut slot) = self.data_plane.write() {
            *slot = data_plane;
        }
    }

    fn running(&self) -> Option<Arc<DataPlane>> {
        self.data_plane.read().ok().and_then(|d| d.clone())
    }

    /// What a task's container needs from the network layer at create:
    /// see [`local::apply_to_container`].
    pub fn apply_to_container(&self, task: &Task, body: &mut ContainerCreateBody) {
        let running = self.running();
        local::apply_to_container(running.as_deref().map(DataPlane::store), task, body);
    }

    /// Before the agent stops a serving task: see [`DataPlane::before_stop`].
    /// Without a data plane on this node nothing routes to the task
    /// through it, so there is nothing to wait for.
    pub async fn before_stop(&self, changed_at: Option<u64>, container: &str, grace: Duration) {
        if let Some(data_plane) = self.running() {
            data_plane.before_stop(changed_at, container, grace).await;
        }
    }
}
