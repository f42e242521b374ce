//! The agent: the node side of swarm. It makes the local engine match the
//! tasks assigned to this node — pull as swarm does, create with swarm's
//! names and labels, start, watch engine events, report status — and adopts
//! its own containers after a restart. It is the only part that runs task
//! containers, and it touches only containers labelled with its node ID.
//!
//! The engine is reached through the [`Executor`] seam: [`DockerExecutor`]
//! (bollard) in the daemon, `fake::FakeExecutor` in tests.

#![allow(dead_code)] // wired by the dispatcher

mod docker;
#[cfg(test)]
pub mod fake;
mod files;
mod runner;
pub mod spec;
mod stops;
mod template;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, Task, TaskStatus};

use crate::network::TaskNetworking;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

pub use docker::DockerExecutor;
pub use files::release_node_files;
pub use runner::run;
pub use spec::unsupported_fields;

/// One task assigned to this node, with the name of its service (container
/// names and templates need it) and the payloads of the secrets and configs
/// its spec refers to — only those, so a node learns no other secret —
/// and what its container needs from the network layer (a worker has no
/// store to read it from).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    pub task: Task,
    pub service_name: String,
    pub secrets: Vec<Payload>,
    pub configs: Vec<Payload>,
    #[serde(default)]
    pub networking: TaskNetworking,
}

/// The decoded data of one secret or config, by its ID (base64 on the
/// cluster port).
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Payload {
    pub id: String,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
    /// Created with `Templating: {"Name": "golang"}`: rendered per task.
    pub templated: bool,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Never prints the data: assignments show up in debug logs.
impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("id", &self.id)
            .field("templated", &self.templated)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

/// What the agent tells the dispatcher about a task.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusReport {
    pub task_id: String,
    pub status: TaskStatus,
}

/// The agent's errors. Engine errors keep the engine's message, which is
/// what swarm puts in a task's `Status.Err`.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the engine at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The engine answered with an error status.
    #[error("{message}")]
    Engine { status: u16, message: String },
    /// The engine could not be reached, or the connection broke.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// A pull that reported an error in its progress stream.
    #[error("{0}")]
    Pull(String),
    #[error("{0}")]
    Template(String),
    /// Secret or config files could not be provided.
    #[error("{0}")]
    Files(String),
    /// The task's networks could not be realised on this node.
    #[error("{0}")]
    Network(String),
}

impl AgentError {
    /// The engine is down or unreachable: retry later rather than fail the task.
    pub fn is_transient(&self) -> bool {
        matches!(self, AgentError::Unreachable(_) | AgentError::Timeout(_))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentError::Engine { status: 404, .. })
    }
}

pub type ExecResult<T> = Result<T, AgentError>;
pub type ExecFuture<'a, T> = BoxFuture<'a, ExecResult<T>>;

/// A container's run state, as far as the agent cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, never started.
    Created,
    Running,
    /// Exited, dead, or anything else that is not running.
    Exited,
}

/// What the engine tells about one container (list or inspect).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub labels: HashMap<String, String>,
    pub state: RunState,
    pub pid: i64,
    /// Known from inspect; list leaves it `None`.
    pub exit_code: Option<i64>,
    /// `Some("starting" | "healthy" | "unhealthy")` when the container has a
    /// health check (inspect only).
    pub health: Option<String>,
    /// The host ports the engine bound for it (inspect only): a task's
    /// host-mode published ports, one entry per binding (IPv4 and IPv6).
    pub host_ports: Vec<HostPort>,
}

/// One port binding of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub target: i64,
    pub published: i64,
}

impl ContainerInfo {
    pub fn task_id(&self) -> Option<&str> {
        self.labels.get(spec::LABEL_TASK_ID).map(String::as_str)
    }
}

/// Container events the agent reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    Die {
        id: String,
        task_id: Option<String>,
        exit_code: Option<i64>,
    },
    Health {
        id: String,
        task_id: Option<String>,
        healthy: bool,
    },
    Destroy {
        id: String,
        task_id: Option<String>,
    },
    Other,
}

/// The seam between the agent loop and a container engine. Methods take
/// containers by ID (or name); a missing container on stop/remove is not an
/// error.
pub trait Executor: Send + Sync + 'static {
    /// The local image's ID, `None` when the engine has no such image.
    fn image_id<'a>(&'a self, image: &'a str) -> ExecFuture<'a, Option<String>>;
    /// Pull the image; an error means the pull failed (the caller may still
    /// go on with a local image).
    fn pull<'a>(&'a self, image: &'a str) -> ExecFuture<'a, ()>;
    /// Create a container; returns its ID.
    fn create<'a>(&'a self, name: &'a str, body: ContainerCreateBody) -> ExecFuture<'a, String>;
    fn start<'a>(&'a self, id: &'a str) -> ExecFuture<'a, ()>;
    /// Stop with the container's stop signal, then SIGKILL after `timeout_secs`.
    fn stop<'a>(&'a self, id: &'a str, timeout_secs: i64) -> ExecFuture<'a, ()>;
    /// Force-remove, with anonymous volumes.
    fn remove<'a>(&'a self, id: &'a str) -> ExecFuture<'a, ()>;
    /// `None` when there is no such container.
    fn inspect<'a>(&'a self, id: &'a str) -> ExecFuture<'a, Option<ContainerInfo>>;
    /// Every container (running or not) labelled `com.docker.swarm.node.id=<node_id>`.
    fn list_own<'a>(&'a self, node_id: &'a str) -> ExecFuture<'a, Vec<ContainerInfo>>;
    /// Container events of this node's containers, from now on. The stream
    /// ends or yields an error when the connection breaks.
    fn events(&self, node_id: &str) -> BoxStream<'static, ExecResult<EngineEvent>>;
}

/// `docker swarm leave`: force-remove every container labelled
/// `com.docker.swarm.node.id=<node_id>`. Returns how many were removed.
pub async fn remove_all_own(executor: &dyn Executor, node_id: &str) -> Result<usize, AgentError> {
    let own = executor.list_own(node_id).await?;
    let mut removed = 0;
    let mut first_err = None;
    for c in own {
        // list_own filters by label already; check again, it costs nothing.
        if c.labels.get(spec::LABEL_NODE_ID).map(String::as_str) != Some(node_id) {
            continue;
        }
        match executor.remove(&c.id).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e, "swarm leave: cannot remove task container");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}
