//! Swarm objects as the store keeps them.
//!
//! Every object is one of bollard's Engine API models (API 1.53), so a spec
//! keeps every field a client sent and drops the ones the API does not know
//! (deserialising into the bollard type does exactly that). The only wrapper
//! is [`SwarmNetwork`]: the engine's `Network` shape has no `Version`, so the
//! store keeps that beside it. Conversion to wire JSON is `serde_json::to_*`
//! of the inner model.

#![allow(dead_code, unused_imports)] // wired by the api in issue 4

mod id;
mod time;

pub use id::{new_id, ID_LEN};
pub use time::Timestamp;

use bollard::models::{Config, Network, Node, ObjectVersion, Secret, Service, Swarm, Task};
use serde::{Deserialize, Serialize};

/// The tables of the store, one per kind of swarm object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Cluster,
    Node,
    Service,
    Task,
    Secret,
    Config,
    Network,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Cluster,
        Kind::Node,
        Kind::Service,
        Kind::Task,
        Kind::Secret,
        Kind::Config,
        Kind::Network,
    ];

    /// Dense index, for per-kind arrays.
    pub fn slot(self) -> usize {
        self as usize
    }

    /// Kinds whose name must be unique (case-insensitively), as in swarmkit.
    /// Nodes are looked up by hostname but two nodes may share one.
    pub fn unique_names(self) -> bool {
        matches!(
            self,
            Kind::Service | Kind::Secret | Kind::Config | Kind::Network
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Secret => "secret",
            Kind::Config => "config",
            Kind::Network => "network",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A swarm-scoped network: the engine's `Network` JSON (what `/networks`
/// returns, with `Id`, `Name`, `Created`, `Scope:"swarm"`) plus the object
/// meta the engine's shape lacks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwarmNetwork {
    #[serde(rename = "Version", default)]
    pub version: ObjectVersion,
    #[serde(rename = "UpdatedAt", default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(rename = "Network")]
    pub network: Network,
    /// This network's address on each node that realises it (node ID →
    /// gateway of its bridge): bridges joined over VXLAN must not share
    /// one. Chosen by the leader; empty for networks made before, whose
    /// IPAM gateway serves every node.
    #[serde(
        rename = "NodeGateways",
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub node_gateways: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
}

/// A task as the engine shows it: bollard's `Task` plus the
/// `NetworksAttachments` the API has and bollard's model lacks: the
/// addresses the leader chose for the task on each of its networks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwarmTask {
    #[serde(flatten)]
    pub task: Task,
    #[serde(
        rename = "NetworksAttachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub networks_attachments: Option<Vec<NetworkAttachment>>,
}

/// One entry of a task's `NetworksAttachments`, in the engine's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    #[serde(rename = "Network")]
    pub network: AttachedNetwork,
    /// `10.0.1.5/24`, as the engine lists them.
    #[serde(rename = "Addresses", default)]
    pub addresses: Vec<String>,
}

/// The network of an attachment, in the swarm object shape the engine
/// nests there (not the `/networks` shape the store keeps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachedNetwork {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Version", default)]
    pub version: ObjectVersion,
    #[serde(rename = "CreatedAt", default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(rename = "UpdatedAt", default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(rename = "Spec", default)]
    pub spec: AttachedNetworkSpec,
    #[serde(rename = "DriverState", default)]
    pub driver_state: Driver,
    #[serde(rename = "IPAMOptions", default)]
    pub ipam_options: IpamOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachedNetworkSpec {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::HashMap<String, String>>,
    #[serde(rename = "DriverConfiguration", default)]
    pub driver_configuration: Driver,
    #[serde(rename = "Scope", default)]
    pub scope: String,
}

/// A driver as swarm objects name it, with its options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Driver {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Options", default, skip_serializing_if = "Option::is_none")]
    pub options: Option<std::collections::HashMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamOptions {
    #[serde(rename = "Driver", default)]
    pub driver: Driver,
    #[serde(rename = "Configs", default)]
    pub configs: Vec<IpamSubnet>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamSubnet {
    #[serde(rename = "Subnet", default)]
    pub subnet: String,
    #[serde(rename = "Gateway", default)]
    pub gateway: String,
}

impl AttachedNetwork {
    /// `network` as the engine nests it in a task's attachments.
    pub fn of(network: &SwarmNetwork) -> AttachedNetwork {
        let n = &network.network;
        let driver = |name: Option<&String>| Driver {
            name: name.cloned().unwrap_or_default(),
            options: None,
        };
        let ipam = n.ipam.as_ref();
        AttachedNetwork {
            id: n.id.clone().unwrap_or_default(),
            version: network.version.clone(),
            created_at: n.created.clone(),
            updated_at: network.updated_at.clone(),
            spec: AttachedNetworkSpec {
                name: n.name.clone().unwrap_or_default(),
                labels: n.labels.clone().filter(|l| !l.is_empty()),
                driver_configuration: driver(n.driver.as_ref()),
                scope: n.scope.clone().unwrap_or_default(),
            },
            driver_state: Driver {
                name: n.driver.clone().unwrap_or_default(),
                options: n.options.clone(),
            },
            ipam_options: IpamOptions {
                driver: driver(ipam.and_then(|i| i.driver.as_ref())),
                configs: ipam
                    .and_then(|i| i.config.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|c| IpamSubnet {
                        subnet: c.subnet.clone().unwrap_or_default(),
                        gateway: c.gateway.clone().unwrap_or_default(),
                    })
                    .collect(),
            },
        }
    }
}

impl SwarmTask {
    /// The task's address on swarm network `network_id`, if the leader
    /// has chosen one.
    pub fn address_on(&self, network_id: &str) -> Option<std::net::Ipv4Addr> {
        self.networks_attachments
            .iter()
            .flatten()
            .find(|a| a.network.id == network_id)?
            .addresses
            .first()?
            .split('/')
            .next()?
            .parse()
            .ok()
    }
}

impl std::ops::Deref for SwarmTask {
    type Target = Task;
    fn deref(&self) -> &Task {
        &self.task
    }
}

impl std::ops::DerefMut for SwarmTask {
    fn deref_mut(&mut self) -> &mut Task {
        &mut self.task
    }
}

impl From<Task> for SwarmTask {
    fn from(task: Task) -> Self {
        SwarmTask {
            task,
            networks_attachments: None,
        }
    }
}

impl From<Task> for Box<SwarmTask> {
    fn from(task: Task) -> Self {
        Box::new(SwarmTask::from(task))
    }
}

/// A service as the engine shows it: bollard's `Service` plus the
/// `PreviousSpec` that the API has and bollard's model lacks (rollback needs it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwarmService {
    #[serde(flatten)]
    pub service: Service,
    #[serde(
        rename = "PreviousSpec",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_spec: Option<bollard::models::ServiceSpec>,
}

impl std::ops::Deref for SwarmService {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl std::ops::DerefMut for SwarmService {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.service
    }
}

impl From<Service> for Box<SwarmService> {
    fn from(service: Service) -> Self {
        Box::new(SwarmService::from(service))
    }
}

impl From<Service> for SwarmService {
    fn from(service: Service) -> Self {
        SwarmService {
            service,
            previous_spec: None,
        }
    }
}

/// One stored object. The variant is the table.
// Every variant is boxed: an `Object` is allocated at the size of its
// largest variant (a service, ~2 KiB), so unboxed, every stored config or
// secret would cost that much; boxed, each costs what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Object {
    Cluster(Box<Swarm>),
    Node(Box<Node>),
    Service(Box<SwarmService>),
    Task(Box<SwarmTask>),
    Secret(Box<Secret>),
    Config(Box<Config>),
    Network(Box<SwarmNetwork>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Cluster(_) => Kind::Cluster,
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Task(_) => Kind::Task,
            Object::Secret(_) => Kind::Secret,
            Object::Config(_) => Kind::Config,
            Object::Network(_) => Kind::Network,
        }
    }

    /// The object's ID, `""` when unset.
    pub fn id(&self) -> &str {
        let id = match self {
            Object::Cluster(o) => &o.id,
            Object::Node(o) => &o.id,
            Object::Service(o) => &o.id,
            Object::Task(o) => &o.id,
            Object::Secret(o) => &o.id,
            Object::Config(o) => &o.id,
            Object::Network(o) => &o.network.id,
        };
        id.as_deref().unwrap_or("")
    }

    /// `Version.Index`: the raft index of the object's last write.
    pub fn version(&self) -> Option<u64> {
        let v = match self {
            Object::Cluster(o) => o.version.as_ref(),
            Object::Node(o) => o.version.as_ref(),
            Object::Service(o) => o.version.as_ref(),
            Object::Task(o) => o.version.as_ref(),
            Object::Secret(o) => o.version.as_ref(),
            Object::Config(o) => o.version.as_ref(),
            Object::Network(o) => Some(&o.version),
        };
        v.and_then(|v| v.index)
    }

    pub fn created_at(&self) -> Option<&str> {
        let c = match self {
            Object::Cluster(o) => &o.created_at,
            Object::Node(o) => &o.created_at,
            Object::Service(o) => &o.created_at,
            Object::Task(o) => &o.created_at,
            Object::Secret(o) => &o.created_at,
            Object::Config(o) => &o.created_at,
            Object::Network(o) => &o.network.created,
        };
        c.as_deref()
    }

    /// The name the API looks the object up by: `Spec.Name` for services,
    /// secrets and configs, `Name` for networks, `Description.Hostname` for
    /// nodes. Clusters and tasks have none.
    pub fn name(&self) -> Option<&str> {
        match self {
            Object::Service(o) => o.spec.as_ref()?.name.as_deref(),
            Object::Secret(o) => o.spec.as_ref()?.name.as_deref(),
            Object::Config(o) => o.spec.as_ref()?.name.as_deref(),
            Object::Network(o) => o.network.name.as_deref(),
            Object::Node(o) => o.description.as_ref()?.hostname.as_deref(),
            Object::Cluster(_) | Object::Task(_) => None,
        }
    }

    /// For tasks: `(ServiceID, NodeID)`.
    pub fn task_refs(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Object::Task(t) => (t.service_id.as_deref(), t.node_id.as_deref()),
            _ => (None, None),
        }
    }

    /// Stamp the meta a committed write sets: `Version.Index`, `UpdatedAt`,
    /// and `CreatedAt` (kept from `created` on update, so a proposer cannot
    /// rewrite history).
    pub fn stamp(&mut self, index: u64, at: &str, created: Option<String>) {
        let version = Some(ObjectVersion { index: Some(index) });
        let created = Some(created.unwrap_or_else(|| at.to_string()));
        let updated = Some(at.to_string());
        macro_rules! meta {
            ($o:expr) => {{
                $o.version = version;
                $o.created_at = created;
                $o.updated_at = updated;
            }};
        }
        match self {
            Object::Cluster(o) => meta!(o),
            Object::Node(o) => meta!(o),
            Object::Service(o) => meta!(o),
            Object::Task(o) => meta!(o),
            Object::Secret(o) => meta!(o),
            Object::Config(o) => meta!(o),
            Object::Network(o) => {
                o.version = ObjectVersion { index: Some(index) };
                o.network.created = created;
                o.updated_at = updated;
            }
        }
    }
}

/// swarmkit's numeric task states, in their order: everything past
/// `running` is terminal. The manager and the agent both compare by it.
pub fn task_state_rank(state: bollard::models::TaskState) -> u16 {
    use bollard::models::TaskState;
    match state {
        TaskState::NEW => 0,
        TaskState::ALLOCATED => 32,
        TaskState::PENDING => 64,
        TaskState::ASSIGNED => 192,
        TaskState::ACCEPTED => 256,
        TaskState::PREPARING => 320,
        TaskState::READY => 384,
        TaskState::STARTING => 448,
        TaskState::RUNNING => 512,
        TaskState::COMPLETE => 576,
        TaskState::SHUTDOWN => 640,
        TaskState::FAILED => 704,
        TaskState::REJECTED => 768,
        TaskState::REMOVE => 800,
        TaskState::ORPHANED => 832,
    }
}
