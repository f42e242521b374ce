//! What nodes send each other on the cluster port, and the paths.

use bollard::models::{NodeDescription, TaskStatus};
use serde::{Deserialize, Serialize};

use crate::agent::Assignment;
use crate::ca::RootCa;
use crate::network::ingress::IngressPlane;
use crate::transport::Role;

/// Anyone: the root CA certificate (a joining node checks it against the
/// digest in its token before it trusts it).
pub const CA_PATH: &str = "/ca";
/// Anyone with a valid join token.
pub const JOIN_PATH: &str = "/join";
/// Managers: add the calling manager to raft's voters.
pub const ADD_VOTER_PATH: &str = "/raft/add-voter";
/// Managers: remove a manager from raft's voters.
pub const REMOVE_VOTER_PATH: &str = "/raft/remove-voter";
/// Any node: its session (assignment sets as they change).
pub const SESSION_PATH: &str = "/session";
/// Any node: status of its own tasks.
pub const STATUS_PATH: &str = "/status";
/// Any node: it is leaving the swarm.
pub const LEAVE_PATH: &str = "/leave";
/// Any node: a new certificate for the role its node's spec has now
/// (after a promote or demote), with a manager's kit when that is manager.
pub const CERTIFICATE_PATH: &str = "/certificate";
/// Managers: a container's logs from the engine of the node called.
pub const LOGS_PATH: &str = "/logs";
/// Any node, to the leader: the store index its routing reflects now.
pub const ROUTING_PATH: &str = "/routing";
/// Any node, to the leader: answer once every node routing to a stopping
/// task has dropped it (or the wait is over).
pub const DRAIN_PATH: &str = "/drain";

#[derive(Debug, Serialize, Deserialize)]
pub struct RoutingApplied {
    pub index: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DrainWait {
    pub task_id: String,
    /// The store index that changed the task's desired state.
    pub index: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CaAnswer {
    pub ca_pem: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub csr_pem: String,
    /// `ip:port` the other nodes reach the joining one at.
    pub advertise_addr: String,
    pub availability: String,
    pub description: NodeDescription,
}

#[derive(Serialize, Deserialize)]
pub struct JoinAnswer {
    pub node_id: String,
    pub role: Role,
    pub cert_pem: String,
    pub cluster_id: String,
    /// Managers' cluster addresses, for a worker's sessions.
    pub managers: Vec<String>,
    /// Only for a node joining as a manager.
    pub manager: Option<ManagerKit>,
}

/// What a new manager needs to be one: its raft ID, the CA key (so it can
/// sign certificates too) and the data key secrets are sealed with in the
/// raft log. Sent only to a manager, over mutual TLS.
#[derive(Serialize, Deserialize)]
pub struct ManagerKit {
    pub raft_id: u64,
    pub root_ca: RootCa,
    /// base64 of the 32-byte data key.
    pub data_key: String,
    /// With autolock on: the key the data key is wrapped under on disk.
    #[serde(default)]
    pub unlock_key: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateRequest {
    pub csr_pem: String,
}

#[derive(Serialize, Deserialize)]
pub struct CertificateAnswer {
    pub role: Role,
    pub cert_pem: String,
    /// The root that signed `cert_pem`.
    #[serde(default)]
    pub issuer_pem: String,
    pub managers: Vec<String>,
    pub manager: Option<ManagerKit>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AddVoter {
    /// The node becoming a manager (its node object gets ManagerStatus).
    pub node_id: String,
    pub raft_id: u64,
    pub addr: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveVoter {
    pub raft_id: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Empty {}

/// One line of a node's session stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionMessage {
    /// The node's complete assignment set; `None` in a heartbeat.
    pub assignments: Option<Vec<Assignment>>,
    /// The store index `assignments` reflects (0 without a set).
    #[serde(default)]
    pub index: u64,
    /// The swarm's published ports and where they lead, for the node's
    /// ingress; `None` when unchanged since the last line.
    #[serde(default)]
    pub ingress: Option<IngressPlane>,
    /// Managers' cluster addresses, so the node can move to another one.
    pub managers: Vec<String>,
    /// The role the node's spec asks for (promote/demote).
    pub role: Role,
    /// The swarm's root CA certificate now (it changes with a rotation).
    #[serde(default)]
    pub trust_root: Option<String>,
    /// A root rotation is under way: keep trusting the old root too.
    #[serde(default)]
    pub rotating: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusBatch {
    pub reports: Vec<(String, TaskStatus)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogsRequest {
    pub container: String,
    /// The engine's `/containers/{id}/logs` query string.
    pub query: String,
}
