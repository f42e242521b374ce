//! The cluster port's answers: joins, raft RPCs and forwarded writes
//! between managers, node sessions and task status, logs. Who may call
//! what is decided here from the peer's certificate alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bollard::models::{
    ManagerStatus, Node, NodeDescription, NodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum,
    NodeState, NodeStatus, Reachability,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use openraft::raft::AppendEntriesRequest;
use openraft::{BasicNode, ChangeMembers};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::wire::*;
use super::{the_cluster, Cluster, ClusterError, Manager};
use crate::agent::StatusReport;
use crate::body::{full, Body, BoxError};
use crate::network::ingress;
use crate::raft::{
    Batch, Forwarded, TypeConfig, APPEND_PATH, PROPOSE_PATH, SNAPSHOT_PATH, VOTE_PATH,
};
use crate::transport::tls::MANAGER_NAME;
use crate::transport::{Handler, Peer, Role};
use crate::types::{new_id, Kind, Object, Timestamp};

/// The status message of a node that said it leaves (never marked ready
/// again by the leader's liveness watch).
pub const LEFT_MESSAGE: &str = "node left the swarm";

/// Largest request body the cluster port reads (raft entries, snapshots
/// in chunks).
const MAX_BODY: usize = 64 << 20;
/// A session sends at least this often, so a node notices a dead manager.
const SESSION_HEARTBEAT: Duration = Duration::from_secs(1);
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no such path {0}")]
    NotFound(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Unavailable(String),
}

impl PortError {
    fn status(&self) -> StatusCode {
        match self {
            PortError::Forbidden(_) => StatusCode::FORBIDDEN,
            PortError::BadRequest(_) | PortError::Cluster(ClusterError::JoinRefused(_)) => {
                StatusCode::BAD_REQUEST
            }
            PortError::NotFound(_) => StatusCode::NOT_FOUND,
            PortError::Cluster(_) | PortError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Answers the cluster port for one node.
pub struct Port {
    pub(super) cluster: Arc<Cluster>,
}

impl Handler for Port {
    fn handle(
        self: Arc<Self>,
        peer: Option<Peer>,
        request: Request<Incoming>,
    ) -> BoxFuture<'static, Response<Body>> {
        Box::pin(async move {
            let path = request.uri().path().to_string();
            match self.route(peer.as_ref(), &path, request).await {
                Ok(response) => response,
                Err(error) => {
                    tracing::info!(%path, peer = ?peer.map(|p| p.addr), %error, "cluster port refused a call");
                    let body = serde_json::json!({ "message": error.to_string() });
                    let mut response = Response::new(full(body.to_string()));
                    *response.status_mut() = error.status();
                    response
                }
            }
        })
    }
}

fn answer<T: Serialize>(value: &T) -> Result<Response<Body>, PortError> {
    let bytes = serde_json::to_vec(value).map_err(|e| PortError::BadRequest(e.to_string()))?;
    Ok(Response::new(full(bytes)))
}

async fn read<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, PortError> {
    let bytes = http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| PortError::BadRequest(format!("cannot read the request: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| PortError::BadRequest(e.to_string()))
}

fn member(peer: Option<&Peer>) -> Result<&Peer, PortError> {
    peer.ok_or_else(|| {
        PortError::Forbidden("a node certificate of this swarm is required".to_string())
    })
}

fn manager_peer(peer: Option<&Peer>) -> Result<&Peer, PortError> {
    let peer = member(peer)?;
    if peer.role != Role::Manager {
        return Err(PortError::Forbidden(format!(
            "node {} is not a manager: this call is for managers only",
            peer.node_id
        )));
    }
    Ok(peer)
}

impl Port {
    async fn route(
        &self,
        peer: Option<&Peer>,
        path: &str,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, PortError> {
        match path {
            CA_PATH => {
                let manager = self.cluster.manager().await?;
                let root = current_root(&self.cluster, &manager)?;
                answer(&CaAnswer {
                    ca_pem: root.cert_pem,
                })
            }
            JOIN_PATH => {
                let manager = self.cluster.manager().await?;
                let join: JoinRequest = read(request).await?;
                answer(&admit(&self.cluster, &manager, join).await?)
            }
            APPEND_PATH | VOTE_PATH | SNAPSHOT_PATH | PROPOSE_PATH | ADD_VOTER_PATH
            | REMOVE_VOTER_PATH | LOGS_PATH => {
                let peer = manager_peer(peer)?;
                self.manager_call(peer, path, request).await
            }
            SESSION_PATH => {
                let peer = member(peer)?;
                let manager = self.cluster.manager().await?;
                // Sessions are the leader's: it alone decides who is down.
                if !manager.leads() {
                    return Err(PortError::Unavailable(format!(
                        "not the leader (the leader is {})",
                        manager.leader_addr().unwrap_or_default()
                    )));
                }
                Ok(session(&manager, &peer.node_id))
            }
            STATUS_PATH => {
                let peer = member(peer)?;
                let manager = self.cluster.manager().await?;
                let batch: StatusBatch = read(request).await?;
                accept_reports(&manager, &peer.node_id, batch).await?;
                answer(&Empty {})
            }
            ROUTING_PATH => {
                let peer = member(peer)?;
                let manager = self.cluster.manager().await?;
                let applied: RoutingApplied = read(request).await?;
                manager.routing().ack(&peer.node_id, applied.index);
                answer(&Empty {})
            }
            DRAIN_PATH => {
                member(peer)?;
                let manager = self.cluster.manager().await?;
                let wait: DrainWait = read(request).await?;
                manager
                    .routing()
                    .wait_routed_out(&manager.store(), &wait.task_id, wait.index)
                    .await;
                answer(&Empty {})
            }
            CERTIFICATE_PATH => {
                let peer = member(peer)?;
                let manager = self.cluster.manager().await?;
                let request: CertificateRequest = read(request).await?;
                let reissued =
                    reissue(&self.cluster, &manager, &peer.node_id, &request.csr_pem).await?;
                answer(&reissued)
            }
            LEAVE_PATH => {
                let peer = member(peer)?;
                let manager = self.cluster.manager().await?;
                mark_left(&manager, &peer.node_id).await?;
                answer(&Empty {})
            }
            other => Err(PortError::NotFound(other.to_string())),
        }
    }

    /// Calls only managers make to managers.
    async fn manager_call(
        &self,
        peer: &Peer,
        path: &str,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, PortError> {
        if path == LOGS_PATH {
            let logs: LogsRequest = read(request).await?;
            return self.logs(logs).await;
        }
        let manager = self.cluster.manager().await?;
        let raft = manager.raft_node().raft();
        if matches!(path, APPEND_PATH | VOTE_PATH | SNAPSHOT_PATH) && !raft_peer(&manager, peer) {
            // A manager left behind (its cluster was forced anew, or it was
            // removed) must not knock this raft's leader down with its
            // stale, higher terms.
            return Err(PortError::Forbidden(format!(
                "node {} is not a member of this raft",
                peer.node_id
            )));
        }
        match path {
            APPEND_PATH => {
                let append: AppendEntriesRequest<TypeConfig> = read(request).await?;
                if !append.entries.is_empty() {
                    if let Err(no_room) = room_for_entries(&manager) {
                        // Still a heartbeat for this node's raft (it writes
                        // nothing new): without it this node would call an
                        // election and unseat a leader that is doing fine.
                        let heartbeat = AppendEntriesRequest {
                            entries: Vec::new(),
                            ..append
                        };
                        let _ = raft.append_entries(heartbeat).await;
                        return Err(no_room);
                    }
                }
                answer(&raft.append_entries(append).await)
            }
            VOTE_PATH => answer(&raft.vote(read(request).await?).await),
            SNAPSHOT_PATH => {
                room_for_entries(&manager)?;
                answer(&raft.install_snapshot(read(request).await?).await)
            }
            PROPOSE_PATH => {
                let batch: Batch = read(request).await?;
                answer(&propose_forwarded(&manager, batch).await?)
            }
            ADD_VOTER_PATH => {
                let add: AddVoter = read(request).await?;
                // Who becomes a voter is named by a certificate: the node
                // itself, or a manager already in raft passing its call on
                // to the leader; never by the body alone.
                if add.node_id != peer.node_id && !in_raft(&manager, peer) {
                    return Err(PortError::Forbidden(format!(
                        "node {} cannot ask for node {} to join raft",
                        peer.node_id, add.node_id
                    )));
                }
                add_voter(&manager, add).await?;
                answer(&Empty {})
            }
            REMOVE_VOTER_PATH => {
                let remove: RemoveVoter = read(request).await?;
                remove_voter(&manager, remove.raft_id).await?;
                answer(&Empty {})
            }
            other => Err(PortError::NotFound(other.to_string())),
        }
    }

    /// A container's logs from this node's engine, streamed as the engine
    /// sends them (managers gather `service logs` this way).
    async fn logs(&self, logs: LogsRequest) -> Result<Response<Body>, PortError> {
        let proxy = self
            .cluster
            .proxy
            .as_ref()
            .ok_or_else(|| PortError::Unavailable("no engine".to_string()))?;
        let path = format!("/containers/{}/logs?{}", logs.container, logs.query);
        let response = proxy
            .get(&path)
            .await
            .map_err(|e| PortError::Unavailable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        Ok(Response::from_parts(
            parts,
            body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
        ))
    }
}

/// The raft address a node's ManagerStatus gives, from this store.
fn manager_addr(manager: &Manager, node_id: &str) -> Option<String> {
    match &*manager.store().get(Kind::Node, node_id)? {
        Object::Node(node) => node.manager_status.as_ref()?.addr.clone(),
        _ => None,
    }
}

/// Whether `peer` is one of raft's members now.
fn in_raft(manager: &Manager, peer: &Peer) -> bool {
    manager_addr(manager, &peer.node_id)
        .is_some_and(|addr| manager.members().iter().any(|(_, a)| *a == addr))
}

/// Whether `peer` may send raft RPCs here: it is one of raft's members
/// (found by its node's cluster address), or this node knows no
/// membership yet (a manager joining, before the leader's first append).
fn raft_peer(manager: &Manager, peer: &Peer) -> bool {
    let members = manager.members();
    if members.is_empty() {
        return true;
    }
    match manager_addr(manager, &peer.node_id) {
        Some(addr) => members.iter().any(|(_, a)| *a == addr),
        // Not in this store yet: a node this one has not caught up on.
        None => true,
    }
}

/// The leader's side of a forwarded write: through its own proposer, so
/// forwarded and local writes share group commits.
/// Refuses entries from the leader while this node's log is nearly out of
/// space: the leader retries, commits with the other managers meanwhile,
/// and sends them again once there is room.
fn room_for_entries(manager: &Manager) -> Result<(), PortError> {
    manager
        .raft_node()
        .room_for_entries()
        .map_err(|e| PortError::Unavailable(e.to_string()))
}

async fn propose_forwarded(manager: &Manager, batch: Batch) -> Result<Forwarded, PortError> {
    let proposer = manager.proposer();
    let pending = batch.0.into_iter().map(|tx| proposer.propose(tx));
    let mut outcomes = Vec::new();
    for result in futures_util::future::join_all(pending).await {
        outcomes.push(result.map_err(|e| PortError::Unavailable(e.to_string()))?);
    }
    Ok(Forwarded {
        outcomes,
        applied: manager.store().index(),
    })
}

/// Checks the token, names the node, signs its certificate and commits
/// its node object; a manager also gets what it needs to join raft.
async fn admit(
    cluster: &Cluster,
    manager: &Manager,
    join: JoinRequest,
) -> Result<JoinAnswer, PortError> {
    let store = manager.store();
    let swarm = the_cluster(&store).ok_or(ClusterError::NotManager)?;
    let tokens = swarm.join_tokens.clone().unwrap_or_default();
    let role = if Some(&join.token) == tokens.manager.as_ref() {
        Role::Manager
    } else if Some(&join.token) == tokens.worker.as_ref() {
        Role::Worker
    } else {
        return Err(ClusterError::InvalidToken.into());
    };
    let availability = match join.availability.as_str() {
        "" | "active" => NodeSpecAvailabilityEnum::ACTIVE,
        "pause" => NodeSpecAvailabilityEnum::PAUSE,
        "drain" => NodeSpecAvailabilityEnum::DRAIN,
        other => {
            return Err(PortError::BadRequest(format!(
                "invalid Availability: {other:?}"
            )))
        }
    };
    let cluster_id = swarm.id.clone().unwrap_or_default();
    let node_id = new_id(&mut rand::thread_rng());
    let root = current_root(cluster, manager)?;
    let expiry = super::cert_expiry(&swarm);
    let cert_pem =
        super::identity::sign_request(&root, &join.csr_pem, &node_id, role, &cluster_id, expiry)?;
    let raft_id = (role == Role::Manager).then(|| rand::random::<u64>().max(2));
    let node = new_node(&node_id, role, availability, &join, &swarm);
    let tx = crate::store::Transaction::new(Timestamp::from_system(SystemTime::now()))
        .create(Object::Node(Box::new(node)));
    manager
        .proposer()
        .propose(tx)
        .await
        .map_err(|e| PortError::Unavailable(e.to_string()))?
        .map_err(|e| PortError::Unavailable(e.to_string()))?;
    tracing::info!(node = %node_id, ?role, addr = %join.advertise_addr, "node joined");
    let manager_kit = raft_id.map(|raft_id| ManagerKit {
        raft_id,
        root_ca: root,
        data_key: manager.keys().data_key_base64(),
        unlock_key: manager.keys().unlock_key(),
    });
    Ok(JoinAnswer {
        node_id,
        role,
        cert_pem,
        cluster_id,
        managers: manager_addrs(manager),
        manager: manager_kit,
    })
}

fn new_node(
    node_id: &str,
    role: Role,
    availability: NodeSpecAvailabilityEnum,
    join: &JoinRequest,
    swarm: &bollard::models::Swarm,
) -> Node {
    let mut description: NodeDescription = join.description.clone();
    description.tls_info = swarm.tls_info.clone();
    Node {
        id: Some(node_id.to_string()),
        spec: Some(NodeSpec {
            labels: Some(Default::default()),
            role: Some(match role {
                Role::Manager => NodeSpecRoleEnum::MANAGER,
                Role::Worker => NodeSpecRoleEnum::WORKER,
            }),
            availability: Some(availability),
            ..NodeSpec::default()
        }),
        description: Some(description),
        status: Some(NodeStatus {
            state: Some(NodeState::READY),
            addr: Some(super::host_of(&join.advertise_addr).to_string()),
            ..NodeStatus::default()
        }),
        manager_status: (role == Role::Manager).then(|| ManagerStatus {
            leader: None,
            reachability: Some(Reachability::REACHABLE),
            addr: Some(join.advertise_addr.clone()),
        }),
        ..Node::default()
    }
}

/// A certificate for the role the node's spec has now; a node that is to
/// be a manager also gets the manager's kit (and a raft ID to join with).
async fn reissue(
    cluster: &Cluster,
    manager: &Manager,
    node_id: &str,
    csr_pem: &str,
) -> Result<CertificateAnswer, PortError> {
    let store = manager.store();
    let swarm = the_cluster(&store).ok_or(ClusterError::NotManager)?;
    if store.get(Kind::Node, node_id).is_none() {
        return Err(PortError::Forbidden(format!(
            "node {node_id} is not part of this swarm"
        )));
    }
    let role = spec_role(&store, node_id);
    // A demoted manager gets its worker certificate only once it is out
    // of raft, so it never stops while the others still count on its vote.
    let addr = store.get(Kind::Node, node_id).and_then(|o| match &*o {
        Object::Node(node) => node.manager_status.as_ref()?.addr.clone(),
        _ => None,
    });
    let member = addr.is_some_and(|addr| manager.members().iter().any(|(_, a)| *a == addr));
    if role == Role::Worker && member {
        return Err(PortError::Unavailable(format!(
            "node {node_id} is still a member of raft"
        )));
    }
    let root = current_root(cluster, manager)?;
    let cert_pem = super::identity::sign_request(
        &root,
        csr_pem,
        node_id,
        role,
        swarm.id.as_deref().unwrap_or(""),
        super::cert_expiry(&swarm),
    )?;
    let kit = (role == Role::Manager).then(|| ManagerKit {
        raft_id: rand::random::<u64>().max(2),
        root_ca: root.clone(),
        data_key: manager.keys().data_key_base64(),
        unlock_key: manager.keys().unlock_key(),
    });
    tracing::info!(node = %node_id, ?role, "node certificate issued");
    // The node's Description.TLSInfo says which root its certificate is
    // from: what `docker swarm ca --rotate` watches converge.
    if let Some(tls) = swarm.tls_info.clone() {
        if let Err(error) = set_node_tls(manager, node_id, tls).await {
            tracing::warn!(%error, "could not record the node's certificate issuer");
        }
    }
    Ok(CertificateAnswer {
        role,
        cert_pem,
        issuer_pem: root.cert_pem.clone(),
        managers: manager_addrs(manager),
        manager: kit,
    })
}

/// The root that signs now: the one raft carries, else `ca.json` (a swarm
/// made before the CA was kept in the store).
fn current_root(cluster: &Cluster, manager: &Manager) -> Result<crate::ca::RootCa, PortError> {
    match manager.root_ca() {
        Some(root) => Ok(root),
        None => Ok(cluster.root_ca()?),
    }
}

async fn set_node_tls(
    manager: &Manager,
    node_id: &str,
    tls: bollard::models::TlsInfo,
) -> Result<(), String> {
    update_node(manager, node_id, |node| {
        let description = node.description.get_or_insert_with(Default::default);
        if description.tls_info.as_ref() == Some(&tls) {
            return false;
        }
        description.tls_info = Some(tls.clone());
        true
    })
    .await
}

/// Commits a change to one node, rebuilt from its latest version when
/// another write got in first; `change` says whether there is anything to
/// write.
pub async fn update_node(
    manager: &Manager,
    node_id: &str,
    change: impl Fn(&mut Node) -> bool,
) -> Result<(), String> {
    let proposer = manager.proposer_arc();
    let store = manager.store();
    crate::manager::propose_fresh(&proposer, || {
        let object = store.get(Kind::Node, node_id)?;
        let Object::Node(node) = &*object else {
            return None;
        };
        let mut node = (**node).clone();
        let version = node.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        if !change(&mut node) {
            return None;
        }
        Some(
            crate::store::Transaction::new(Timestamp::from_system(SystemTime::now()))
                .update(Object::Node(Box::new(node)), version),
        )
    })
    .await
}

/// The cluster addresses of raft's current members.
pub fn manager_addrs(manager: &Manager) -> Vec<String> {
    let receiver = manager.raft_node().raft().metrics();
    let metrics = receiver.borrow();
    let mut addrs: Vec<String> = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(_, node)| node.addr.clone())
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The leader adds a manager to raft's voters: first as a learner that
/// catches up, then as a voter. A follower passes the call on.
async fn add_voter(manager: &Manager, add: AddVoter) -> Result<(), PortError> {
    let raft = manager.raft_node().raft();
    if !manager.leads() {
        return forward_to_leader(manager, ADD_VOTER_PATH, &add).await;
    }
    let node = BasicNode::new(&add.addr);
    retry_membership(|| raft.add_learner(add.raft_id, node.clone(), true)).await?;
    let voters = std::collections::BTreeSet::from([add.raft_id]);
    retry_membership(|| raft.change_membership(ChangeMembers::AddVoterIds(voters.clone()), false))
        .await?;
    tracing::info!(raft_id = add.raft_id, addr = %add.addr, "manager added to raft");
    set_manager_status(manager, &add.node_id, Some(add.addr.clone()))
        .await
        .map_err(PortError::Unavailable)
}

/// Gives a node the ManagerStatus of a manager at `addr`, or takes it away.
pub async fn set_manager_status(
    manager: &Manager,
    node_id: &str,
    addr: Option<String>,
) -> Result<(), String> {
    update_node(manager, node_id, |node| {
        let current = node.manager_status.as_ref().map(|s| &s.addr);
        if current == addr.as_ref().map(|a| Some(a.clone())).as_ref() {
            return false;
        }
        node.manager_status = addr.as_ref().map(|addr| ManagerStatus {
            leader: None,
            reachability: Some(Reachability::REACHABLE),
            addr: Some(addr.clone()),
        });
        true
    })
    .await
}

/// The leader removes a manager from raft (it left, or was demoted): out
/// of the voters, then out of the members. A leader removing itself only
/// leaves the voters (openraft cannot drop the node it runs on); it steps
/// down, and the next leader drops it from the members.
pub async fn remove_voter(manager: &Manager, raft_id: u64) -> Result<(), PortError> {
    if !manager.leads() {
        return forward_to_leader(manager, REMOVE_VOTER_PATH, &RemoveVoter { raft_id }).await;
    }
    let raft = manager.raft_node().raft();
    let ids = std::collections::BTreeSet::from([raft_id]);
    if !manager.members().iter().any(|(id, _)| *id == raft_id) {
        return Ok(()); // Not (or no longer) a member: nothing to do.
    }
    if manager.voters().iter().any(|(id, _)| *id == raft_id) {
        retry_membership(|| {
            raft.change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
        })
        .await?;
    }
    if raft_id != manager.raft_node().id() {
        retry_membership(|| raft.change_membership(ChangeMembers::RemoveNodes(ids.clone()), false))
            .await?;
    }
    tracing::info!(raft_id, "manager removed from raft");
    Ok(())
}

/// Membership changes one at a time: one still in progress is waited out.
async fn retry_membership<F, Fut, T, E>(mut change: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = tokio::time::Instant::now() + MEMBERSHIP_TIMEOUT;
    loop {
        match change().await {
            Ok(done) => return Ok(done),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "membership change refused; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(PortError::Unavailable(error.to_string())),
        }
    }
}

async fn forward_to_leader<T: Serialize>(
    manager: &Manager,
    path: &str,
    body: &T,
) -> Result<(), PortError> {
    let leader = manager
        .leader_addr()
        .ok_or_else(|| PortError::Unavailable(crate::store::ProposeError::NoLeader.to_string()))?;
    let peers = manager
        .peers()
        .ok_or_else(|| PortError::Unavailable("no cluster transport".to_string()))?;
    let _: Empty = peers
        .call(&leader, MANAGER_NAME, path, body, MEMBERSHIP_TIMEOUT)
        .await
        .map_err(|e| PortError::Unavailable(e.to_string()))?;
    Ok(())
}

/// A node's session: its assignment set now, then each time it changes,
/// with heartbeats between; it ends when the node goes away (the body is
/// dropped) or this manager stops.
fn session(manager: &Manager, node_id: &str) -> Response<Body> {
    let (sets_tx, sets_rx) = watch::channel(Arc::new(Vec::new()));
    let (computed_tx, computed_rx) = watch::channel(0);
    let ended = manager.loops().child_token();
    tokio::spawn(crate::manager::dispatcher::publish_assignments(
        node_id.to_string(),
        manager.store(),
        // Sessions serve workers: no store, so names and VIPs come along.
        crate::network::Dns::Carried,
        sets_tx,
        Some(computed_tx),
        ended.clone(),
    ));
    // A worker runs the ingress too: every published port on every node.
    let store = manager.store();
    let (ingress_tx, ingress_rx) = watch::channel(Arc::new(store.read(ingress::plane)));
    tokio::spawn(ingress::publish(store, ingress_tx, ended.clone()));
    let state = SessionStream {
        sets: sets_rx,
        computed: computed_rx,
        ingress: ingress_rx,
        ingress_sent: false,
        ended: ended.clone().drop_guard(),
        _alive: manager.liveness().opened(node_id),
        metrics: manager.raft_node().raft().metrics(),
        raft_id: manager.raft_node().id(),
        cancelled: ended,
        store: manager.store(),
        node_id: node_id.to_string(),
        managers: manager_addrs(manager),
    };
    tracing::info!(node = %node_id, "node session opened");
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let line = state.next_line().await?;
        Some((Ok::<_, BoxError>(Frame::data(line)), state))
    });
    Response::new(StreamBody::new(stream).boxed_unsync())
}

struct SessionStream {
    sets: watch::Receiver<Arc<Vec<crate::agent::Assignment>>>,
    /// The store index the latest set reflects.
    computed: watch::Receiver<u64>,
    ingress: watch::Receiver<Arc<ingress::IngressPlane>>,
    /// False until the current ingress plane went out in a line (the first
    /// line carries it; later ones when it changed).
    ingress_sent: bool,
    /// Stops the publisher when the stream is dropped.
    #[allow(dead_code)]
    ended: tokio_util::sync::DropGuard,
    /// The node counts as alive while this is held.
    _alive: super::liveness::SessionGuard,
    /// The session ends when this manager stops leading.
    metrics: watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
    raft_id: u64,
    cancelled: CancellationToken,
    store: Arc<crate::store::Store>,
    node_id: String,
    managers: Vec<String>,
}

impl SessionStream {
    async fn next_line(&mut self) -> Option<Bytes> {
        let leads = |m: &openraft::RaftMetrics<u64, BasicNode>| {
            m.state == openraft::ServerState::Leader && m.current_leader == Some(self.raft_id)
        };
        let heartbeat = tokio::time::Instant::now() + SESSION_HEARTBEAT;
        let assignments = loop {
            if !leads(&self.metrics.borrow_and_update()) {
                return None;
            }
            if !self.ingress_sent {
                break None;
            }
            tokio::select! {
                _ = self.cancelled.cancelled() => return None,
                changed = self.metrics.changed() => {
                    changed.ok()?;
                }
                changed = self.sets.changed() => {
                    changed.ok()?;
                    // The index first: the set read after it is at least
                    // that recent (the publisher writes them the other way).
                    let index = *self.computed.borrow_and_update();
                    break Some((index, self.sets.borrow_and_update().as_ref().clone()));
                }
                changed = self.ingress.changed() => {
                    changed.ok()?;
                    // `changed` marked it seen: sent below.
                    self.ingress_sent = false;
                    break None;
                }
                _ = tokio::time::sleep_until(heartbeat) => break None,
            }
        };
        let ingress = (!self.ingress_sent || self.ingress.has_changed().unwrap_or(false))
            .then(|| self.ingress.borrow_and_update().as_ref().clone());
        self.ingress_sent = true;
        let swarm = the_cluster(&self.store);
        let (index, assignments) = match assignments {
            Some((index, set)) => (index, Some(set)),
            None => (0, None),
        };
        let message = SessionMessage {
            assignments,
            index,
            ingress,
            managers: self.managers.clone(),
            role: spec_role(&self.store, &self.node_id),
            trust_root: swarm
                .as_ref()
                .and_then(|s| s.tls_info.as_ref())
                .and_then(|t| t.trust_root.clone()),
            rotating: swarm
                .as_ref()
                .and_then(|s| s.root_rotation_in_progress)
                .unwrap_or(false),
        };
        let mut line = serde_json::to_vec(&message).ok()?;
        line.push(b'\n');
        Some(Bytes::from(line))
    }
}

fn spec_role(store: &crate::store::Store, node_id: &str) -> Role {
    let role = store.get(Kind::Node, node_id).and_then(|o| match &*o {
        Object::Node(node) => node.spec.as_ref().and_then(|s| s.role),
        _ => None,
    });
    match role {
        Some(NodeSpecRoleEnum::MANAGER) => Role::Manager,
        _ => Role::Worker,
    }
}

/// A node may report only on tasks assigned to it; other reports are
/// dropped (and logged), the rest go to this manager's status batches.
async fn accept_reports(
    manager: &Manager,
    node_id: &str,
    batch: StatusBatch,
) -> Result<(), PortError> {
    let store = manager.store();
    for (task_id, status) in batch.reports {
        let owner = store.get(Kind::Task, &task_id).and_then(|o| match &*o {
            Object::Task(task) => task.node_id.clone(),
            _ => None,
        });
        if owner.as_deref() != Some(node_id) {
            tracing::warn!(node = %node_id, task = %task_id, "status for a task not assigned to the node; ignored");
            continue;
        }
        manager
            .reports()
            .send(StatusReport { task_id, status })
            .await
            .map_err(|_| PortError::Unavailable("the manager is stopping".to_string()))?;
    }
    Ok(())
}

/// A node that leaves is shown down at once (the engine waits for its
/// heartbeats to stop).
async fn mark_left(manager: &Manager, node_id: &str) -> Result<(), PortError> {
    mark_down(manager, node_id, LEFT_MESSAGE)
        .await
        .map_err(PortError::Unavailable)
}

/// Shows a node down (and, for a manager, unreachable) with `message`.
pub async fn mark_down(manager: &Manager, node_id: &str, message: &str) -> Result<(), String> {
    update_node(manager, node_id, |node| {
        let status = node.status.get_or_insert_with(NodeStatus::default);
        status.state = Some(NodeState::DOWN);
        status.message = Some(message.to_string());
        if let Some(manager_status) = node.manager_status.as_mut() {
            manager_status.reachability = Some(Reachability::UNREACHABLE);
            manager_status.leader = Some(false);
        }
        true
    })
    .await
}
