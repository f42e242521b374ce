//! This node's membership: not in a swarm, or a manager holding the raft
//! node whose store is the cluster's state. `swarm init`, `swarm leave` and
//! a restart move between the two; everything persisted lives under
//! `<data-dir>/swarm`, so leaving removes exactly that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bollard::models::{
    EngineDescription, EngineDescriptionPlugins, JoinTokens, ManagerStatus, Node, NodeDescription,
    NodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState, NodeStatus, Platform,
    Reachability, ResourceObject, Swarm, SwarmSpec, TlsInfo,
};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{Executor, StatusReport};
use crate::ca::{self, CaError, RootCa};
use crate::events::EventLog;
use crate::network::NodeNetwork;
use crate::proxy::Proxy;
use crate::raft::{NodeOptions, RaftError, RaftNode};
use crate::secrets::{KeyFile, KeyStore, LockedKey, SecretsError};
use crate::store::{Proposer, Store, Transaction};
use crate::transport::{Identity, Peers, Role, TransportError};
use crate::types::{new_id, Kind, Object, Timestamp};

mod drains;
mod identity;
mod join;
pub mod liveness;
pub mod port;
mod roles;
pub mod rotation;
mod wire;
mod worker;

pub use join::JoinParams;
pub use wire::{LogsRequest, LOGS_PATH};
pub use worker::Worker;

/// How long after the first sweep of task containers at leave the second
/// one runs (an engine create in flight when the agent stopped).
const LATE_CREATE_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// How long stopping raft may take before leave or shutdown goes on.
const RAFT_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a manager that leaves tries to tell the others.
const LEAVE_FAREWELL: std::time::Duration = std::time::Duration::from_secs(8);

/// The raft ID of the first manager; more come with `swarm join`.
const FIRST_RAFT_ID: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.")]
    AlreadyInSwarm,
    #[error("This node is not part of a swarm")]
    NotInSwarm,
    #[error("This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.")]
    NotManager,
    #[error("You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message. ")]
    LastManager,
    #[error("cannot write swarm state under {path}: {source}")]
    Disk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("swarm state under {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Raft(#[from] RaftError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("the initial swarm state could not be committed: {0}")]
    Bootstrap(String),
    /// Autolock is on and this node restarted: nothing is readable until
    /// `swarm unlock`.
    #[error("Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.")]
    Locked,
    #[error("Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.")]
    LockedLeave,
    #[error("swarm is not locked")]
    NotLocked,
    #[error(transparent)]
    Keys(#[from] SecretsError),
    #[error("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.")]
    WorkerNotManager,
    #[error("rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster")]
    InvalidToken,
    #[error("invalid join token")]
    MalformedToken,
    #[error("remote CA does not match fingerprint. Expected: {0}")]
    CaMismatch(String),
    #[error("{0}")]
    JoinRefused(String),
    #[error("Timeout was reached before node joined. The attempt to join the swarm will continue in the background. Use the \"docker info\" command to see the current swarm status of your node.")]
    JoinTimeout,
    #[error("listen tcp {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves {left} managers out of {total}. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.")]
    LeaveLosesQuorum { left: usize, total: usize },
}

/// What this node keeps about itself beside the raft log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LocalNode {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub listen_addr: String,
    /// The address other nodes reach this one at, `ip:port`.
    pub advertise_addr: String,
    #[serde(rename = "RaftID")]
    pub raft_id: u64,
    /// `Spec.Raft.SnapshotInterval` given at `swarm init` (log entries
    /// between snapshots); kept here because raft needs it before the
    /// cluster object can be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_interval: Option<u64>,
    /// Manager or worker (files written before joins existed: manager).
    #[serde(default = "manager_role")]
    pub role: Role,
    /// The managers' cluster addresses this node last heard of: where a
    /// restarted worker opens its session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managers: Vec<String>,
}

fn manager_role() -> Role {
    Role::Manager
}

impl LocalNode {
    /// The advertised IP without its port, as `/info` shows `NodeAddr`.
    pub fn advertise_ip(&self) -> &str {
        host_of(&self.advertise_addr)
    }
}

/// A manager of an active swarm: the local identity, the raft node, and
/// the loops that run while this node leads (all of them, on one node).
pub struct Manager {
    pub local: LocalNode,
    raft: Arc<RaftNode>,
    loops: CancellationToken,
    running: TaskTracker,
    events: Arc<EventLog>,
    keys: Arc<KeyStore>,
    peers: Option<Arc<Peers>>,
    /// Where task status goes, this node's agent's and workers' alike.
    reports: tokio::sync::mpsc::Sender<StatusReport>,
    /// Sessions open on this manager (the leader's decide who is down).
    liveness: Arc<liveness::Liveness>,
    /// Every node's routing index, as reported to this manager (the
    /// leader's are the ones drains wait on).
    routing: Arc<crate::network::barrier::RoutingAcks>,
    /// Told to stop waiting through this manager when it stops.
    network: NodeNetwork,
}

impl Manager {
    fn start(
        local: LocalNode,
        raft: RaftNode,
        keys: Arc<KeyStore>,
        executor: Arc<dyn Executor>,
        network: NodeNetwork,
        peers: Option<Arc<Peers>>,
    ) -> Manager {
        let raft = Arc::new(raft);
        let loops = CancellationToken::new();
        let running = TaskTracker::new();
        let proposer: Arc<dyn Proposer> = raft.clone();
        let events = EventLog::new();
        running.spawn(crate::events::record(
            raft.store(),
            events.clone(),
            loops.clone(),
        ));
        let reports = crate::manager::start_node(
            local.node_id.clone(),
            raft.store(),
            proposer.clone(),
            executor,
            network.clone(),
            loops.clone(),
            &running,
        );
        let routing = Arc::new(crate::network::barrier::RoutingAcks::default());
        let leader = drains::Leader::Raft {
            raft: raft.clone(),
            acks: routing.clone(),
            store: raft.store(),
        };
        running.spawn(drains::report_routing(
            local.node_id.clone(),
            leader.clone(),
            peers.clone(),
            network.routing_applied(),
            loops.clone(),
        ));
        network.set_barrier(Some(Arc::new(drains::LeaderBarrier {
            leader,
            peers: peers.clone(),
        })));
        let liveness = Arc::new(liveness::Liveness::default());
        running.spawn(lead_while_leader(
            raft.clone(),
            proposer,
            liveness.clone(),
            local.node_id.clone(),
            loops.clone(),
        ));
        if let Some(peers) = &peers {
            running.spawn(session_with_leader(
                raft.clone(),
                peers.clone(),
                loops.clone(),
            ));
        }
        running.close();
        Manager {
            local,
            raft,
            loops,
            running,
            events,
            keys,
            peers,
            reports,
            liveness,
            routing,
            network,
        }
    }

    pub fn routing(&self) -> &Arc<crate::network::barrier::RoutingAcks> {
        &self.routing
    }

    pub fn liveness(&self) -> &Arc<liveness::Liveness> {
        &self.liveness
    }

    pub fn raft_node(&self) -> &RaftNode {
        &self.raft
    }

    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.as_ref()
    }

    pub fn reports(&self) -> &tokio::sync::mpsc::Sender<StatusReport> {
        &self.reports
    }

    /// Fires when this manager stops.
    pub fn loops(&self) -> &CancellationToken {
        &self.loops
    }

    pub fn proposer_arc(&self) -> Arc<dyn Proposer> {
        self.raft.clone()
    }

    /// Whether this node is raft's leader now (a leader that removed
    /// itself from the voters still names itself in `current_leader`).
    pub fn leads(&self) -> bool {
        let metrics = self.raft.raft().metrics();
        let metrics = metrics.borrow();
        metrics.state == openraft::ServerState::Leader
            && metrics.current_leader == Some(self.raft.id())
    }

    /// The leader's cluster address, when one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let receiver = self.raft.raft().metrics();
        let metrics = receiver.borrow();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// A node's `ManagerStatus` as raft sees it now (the stored one is what
    /// it was at join): `Leader` only on the leader (omitted otherwise, as
    /// the engine), reachable while it is one of raft's voters.
    pub fn live_manager_status(&self, node: &mut Node) {
        let Some(status) = node.manager_status.as_mut() else {
            return;
        };
        let leader = self.leader_addr();
        let member = self
            .voters()
            .iter()
            .any(|(_, addr)| Some(addr) == status.addr.as_ref());
        status.leader = (status.addr.is_some() && status.addr == leader).then_some(true);
        status.reachability = Some(if member {
            Reachability::REACHABLE
        } else {
            Reachability::UNREACHABLE
        });
    }

    /// The swarm's root CA as raft carries it (`None` for a swarm made
    /// before the CA was kept in the store: then `ca.json` has it).
    pub fn root_ca(&self) -> Option<RootCa> {
        the_cluster(&self.store()).and_then(|swarm| rotation::stored_root(&swarm))
    }

    /// Raft's members now, voters and learners: (raft ID, cluster address).
    pub fn members(&self) -> Vec<(u64, String)> {
        let receiver = self.raft.raft().metrics();
        let metrics = receiver.borrow();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// Raft's voters now: (raft ID, cluster address).
    pub fn voters(&self) -> Vec<(u64, String)> {
        let receiver = self.raft.raft().metrics();
        let metrics = receiver.borrow();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
            .collect()
    }

    /// Stops the loops, then raft. Requests still holding the manager
    /// finish against the old store; raft stops when the last one lets go.
    async fn stop(self: Arc<Self>) -> Result<(), ClusterError> {
        self.network.set_barrier(None);
        self.loops.cancel();
        self.running.wait().await;
        match Arc::try_unwrap(self) {
            Ok(manager) => match Arc::try_unwrap(manager.raft) {
                // Bounded: leaving must not hang on raft's own shutdown; the
                // log is durable whatever happens to the in-memory node.
                Ok(raft) => match tokio::time::timeout(RAFT_STOP_GRACE, raft.shutdown()).await {
                    Ok(result) => result?,
                    Err(_) => tracing::warn!(
                        "raft did not shut down within {RAFT_STOP_GRACE:?}; going on"
                    ),
                },
                Err(_) => tracing::debug!("raft still referenced; it stops when released"),
            },
            Err(_) => tracing::debug!("manager still referenced by in-flight requests"),
        }
        Ok(())
    }

    pub fn store(&self) -> Arc<Store> {
        self.raft.store()
    }

    /// Swarm events for `/events`.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    pub fn proposer(&self) -> &dyn Proposer {
        &*self.raft
    }

    pub fn node_id(&self) -> &str {
        &self.local.node_id
    }

    /// This node's advertised IP, as network inspect shows its peer.
    pub fn advertise_ip(&self) -> &str {
        self.local.advertise_ip()
    }

    /// The data key and, with autolock on, the unlock key.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Makes the key file follow the cluster's `AutoLockManagers`
    /// (after `swarm update`, and at start in case a crash came between
    /// committing the spec and rewriting the key file).
    pub fn sync_autolock(&self) -> Result<(), ClusterError> {
        let on = the_cluster(&self.store())
            .and_then(|c| c.spec)
            .and_then(|s| s.encryption_config)
            .and_then(|e| e.auto_lock_managers)
            .unwrap_or(false);
        if self.keys.set_autolock(on)? {
            tracing::info!(autolock = on, "data key file rewritten");
        }
        Ok(())
    }
}

/// Runs the leader-only loops while this node leads: they start when it
/// becomes leader and stop when it no longer is, one cancellation per term.
async fn lead_while_leader(
    raft: Arc<RaftNode>,
    proposer: Arc<dyn Proposer>,
    liveness: Arc<liveness::Liveness>,
    node_id: String,
    stop: CancellationToken,
) {
    let mut metrics = raft.raft().metrics();
    let mut term: Option<(CancellationToken, TaskTracker)> = None;
    loop {
        let leads = {
            let m = metrics.borrow_and_update();
            m.state == openraft::ServerState::Leader && m.current_leader == Some(raft.id())
        };
        match (leads, term.is_some()) {
            (true, false) => {
                tracing::info!("this node leads the swarm: starting the leader's loops");
                let token = stop.child_token();
                let running = TaskTracker::new();
                crate::manager::start_leader(
                    raft.store(),
                    proposer.clone(),
                    token.clone(),
                    &running,
                );
                running.spawn(liveness::watch_nodes(
                    raft.store(),
                    proposer.clone(),
                    liveness.clone(),
                    node_id.clone(),
                    token.clone(),
                ));
                running.close();
                term = Some((token, running));
            }
            (false, true) => {
                tracing::info!("this node no longer leads: stopping the leader's loops");
                if let Some((token, running)) = term.take() {
                    token.cancel();
                    running.wait().await;
                }
            }
            _ => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = metrics.changed() => if changed.is_err() { break },
        }
    }
    if let Some((token, running)) = term.take() {
        token.cancel();
        running.wait().await;
    }
}

/// A manager's own session with the leader: it carries nothing this node
/// needs (its store has its assignments), but it is how the leader knows
/// the node is alive. The leader itself needs none.
async fn session_with_leader(raft: Arc<RaftNode>, peers: Arc<Peers>, stop: CancellationToken) {
    const SILENCE: std::time::Duration = std::time::Duration::from_secs(4);
    const RETRY: std::time::Duration = std::time::Duration::from_millis(300);
    loop {
        let leader = {
            let receiver = raft.raft().metrics();
            let m = receiver.borrow();
            m.current_leader
                .filter(|&l| l != raft.id())
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
        };
        if let Some(leader) = leader {
            let opened = tokio::select! {
                _ = stop.cancelled() => return,
                opened = peers.open(&leader.addr, crate::transport::tls::MANAGER_NAME, wire::SESSION_PATH, &wire::Empty {}) => opened,
            };
            if let Ok(response) = opened {
                let mut lines = crate::transport::client::Lines::new(response.into_body());
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        next = tokio::time::timeout(SILENCE, lines.next::<wire::SessionMessage>()) => next,
                    };
                    if !matches!(next, Ok(Some(Ok(_)))) {
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

enum Membership {
    Inactive,
    Worker(Arc<Worker>),
    /// Autolock on after a restart: raft stays closed until the data key
    /// is unwrapped by `swarm unlock`.
    Locked {
        local: LocalNode,
        key: LockedKey,
    },
    Manager(Arc<Manager>),
}

/// This node's swarm state as `/info` and `/_ping` report it.
pub enum LocalState {
    Inactive,
    Locked(LocalNode),
    Active(Arc<Manager>),
    Worker(Arc<Worker>),
}

/// Everything `swarm init` needs beyond the request's defaults.
pub struct InitParams {
    pub listen_addr: String,
    pub advertise_addr: String,
    pub spec: SwarmSpec,
    pub default_addr_pool: Option<Vec<String>>,
    pub subnet_size: u32,
    pub data_path_port: u32,
    pub availability: NodeSpecAvailabilityEnum,
    /// The engine's view of this host, for the node's Description.
    pub description: NodeDescription,
    /// `AutoLockManagers`: the data key is wrapped from the start.
    pub autolock: bool,
    /// Log entries between raft snapshots, when the request set one.
    pub snapshot_interval: Option<u64>,
}

/// What the daemon hands the cluster beside its data dir.
#[derive(Clone, Default)]
pub struct ClusterOptions {
    /// `--cluster-listen-addr`: where the cluster port listens, whatever
    /// init or join ask.
    pub listen_override: Option<String>,
    /// The local engine, for logs other managers ask this node for.
    pub proxy: Option<Proxy>,
    /// This node's network side, for its managers and workers alike.
    pub network: NodeNetwork,
}

pub struct Cluster {
    dir: PathBuf,
    membership: RwLock<Membership>,
    executor: Arc<dyn Executor>,
    options: ClusterOptions,
    proxy: Option<Proxy>,
    /// Stops the cluster port's server; the certificate it presents.
    port: std::sync::Mutex<Option<(CancellationToken, Arc<crate::transport::tls::ServerSlot>)>>,
    /// Fires at daemon shutdown (ends the role watch).
    stopping: CancellationToken,
}

impl Cluster {
    /// Opens the swarm state under `data_dir`, rejoining as the manager or
    /// worker this node was before the restart (a manager's raft catches up
    /// from its log and the leader; no token is needed).
    pub async fn open(
        data_dir: &Path,
        executor: Arc<dyn Executor>,
        options: ClusterOptions,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let dir = data_dir.join("swarm");
        let cluster = Arc::new(Cluster {
            dir,
            membership: RwLock::new(Membership::Inactive),
            executor,
            proxy: options.proxy.clone(),
            options,
            port: std::sync::Mutex::new(None),
            stopping: CancellationToken::new(),
        });
        tokio::spawn(roles::watch(cluster.clone()));
        let Some(local) = read_local(&cluster.dir)? else {
            return Ok(cluster);
        };
        let membership = cluster.restore(local).await?;
        *cluster.membership.write().await = membership;
        Ok(cluster)
    }

    async fn restore(self: &Arc<Self>, local: LocalNode) -> Result<Membership, ClusterError> {
        let dir = &self.dir;
        if let Err(error) = identity::renew_expired(dir, &local.node_id, local.role) {
            tracing::warn!(%error, "could not check this node's certificate");
        }
        if local.role == Role::Worker {
            let identity = identity::load(dir)?;
            self.start_port(self.rebind(&local).await?, &identity)?;
            let peers = Arc::new(Peers::new(crate::transport::tls::client_config(&identity)?));
            tracing::info!(node = %local.node_id, "rejoined the swarm as a worker");
            return Ok(Membership::Worker(Arc::new(Worker::start(
                local,
                peers,
                self.executor.clone(),
                self.options.network.clone(),
            ))));
        }
        let keys = match KeyStore::load(dir)? {
            Some(KeyFile::Locked(key)) => {
                tracing::warn!(node = %local.node_id, "swarm is locked; waiting for docker swarm unlock");
                return Ok(Membership::Locked { local, key });
            }
            Some(KeyFile::Open(keys)) => keys,
            // A swarm made before secrets were encrypted: give it a key
            // now; its secrets are sealed from the next write on.
            None => KeyStore::create(dir, false)?,
        };
        self.open_manager(local, keys).await
    }

    /// Opens raft with the unlocked data key, the cluster port, and starts
    /// the manager's loops.
    async fn open_manager(
        self: &Arc<Self>,
        local: LocalNode,
        keys: KeyStore,
    ) -> Result<Membership, ClusterError> {
        let identity = identity::load(&self.dir).ok();
        let listener = match &identity {
            Some(_) => Some(self.rebind(&local).await?),
            None => None,
        };
        let peers = match &identity {
            Some(identity) => Some(Arc::new(Peers::new(crate::transport::tls::client_config(
                identity,
            )?))),
            None => None,
        };
        let keys = Arc::new(keys);
        let mut options = raft_options(&local);
        options.codec = keys.codec()?;
        options.peers = peers.clone();
        // The port answers raft before raft is open: a restarted follower
        // is caught up by the leader while it waits for a leader.
        if let (Some(listener), Some(identity)) = (listener, &identity) {
            self.start_port(listener, identity)?;
        }
        let raft = RaftNode::open(&self.dir, local.raft_id, options).await?;
        tracing::info!(node = %local.node_id, "rejoined the swarm as a manager");
        let manager = Manager::start(
            local,
            raft,
            keys,
            self.executor.clone(),
            self.options.network.clone(),
            peers,
        );
        if let Err(error) = manager.sync_autolock() {
            tracing::warn!(%error, "cannot bring the key file in line with the autolock setting");
        }
        Ok(Membership::Manager(Arc::new(manager)))
    }

    /// The manager, or the engine's "not a swarm manager" / "locked" refusal.
    pub async fn manager(&self) -> Result<Arc<Manager>, ClusterError> {
        match &*self.membership.read().await {
            Membership::Manager(manager) => Ok(manager.clone()),
            Membership::Locked { .. } => Err(ClusterError::Locked),
            Membership::Worker(_) => Err(ClusterError::WorkerNotManager),
            Membership::Inactive => Err(ClusterError::NotManager),
        }
    }

    pub async fn state(&self) -> LocalState {
        match &*self.membership.read().await {
            Membership::Manager(manager) => LocalState::Active(manager.clone()),
            Membership::Locked { local, .. } => LocalState::Locked(local.clone()),
            Membership::Worker(worker) => LocalState::Worker(worker.clone()),
            Membership::Inactive => LocalState::Inactive,
        }
    }

    /// `swarm unlock`: unwraps the data key with `unlock_key`, opens raft
    /// and starts the manager. Only a locked node can be unlocked.
    pub async fn unlock(self: &Arc<Self>, unlock_key: &str) -> Result<(), ClusterError> {
        let mut membership = self.membership.write().await;
        let (local, key) = match &*membership {
            Membership::Locked { local, key } => (local.clone(), key),
            Membership::Manager(_) | Membership::Worker(_) => return Err(ClusterError::NotLocked),
            Membership::Inactive => return Err(ClusterError::NotManager),
        };
        let keys = key.unlock(unlock_key)?;
        let opened = self.open_manager(local, keys).await?;
        *membership = opened;
        tracing::info!("swarm unlocked");
        Ok(())
    }

    /// The manager when there is one (for patching `/info`).
    pub async fn try_manager(&self) -> Option<Arc<Manager>> {
        self.manager().await.ok()
    }

    /// In a swarm, locked or not (`init` and `join` are refused either way).
    pub async fn is_active(&self) -> bool {
        !matches!(&*self.membership.read().await, Membership::Inactive)
    }

    /// The root CA of the swarm this node manages (every manager keeps it
    /// beside its raft log; it came with the join).
    pub fn root_ca(&self) -> Result<RootCa, ClusterError> {
        let path = self.dir.join("ca.json");
        let bytes = std::fs::read(&path).map_err(|source| ClusterError::Disk {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClusterError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// Binds the cluster port: where `--cluster-listen-addr` says, else
    /// where init or join asked.
    async fn bind(&self, requested: &str) -> Result<tokio::net::TcpListener, ClusterError> {
        let addr = self
            .options
            .listen_override
            .clone()
            .unwrap_or_else(|| requested.to_string());
        tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| ClusterError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })
    }

    /// After a restart: the port this node advertised before, even when
    /// `--cluster-listen-addr` lets the system pick one (the other nodes
    /// know this node by that address).
    async fn rebind(&self, local: &LocalNode) -> Result<tokio::net::TcpListener, ClusterError> {
        let picks_port = self
            .options
            .listen_override
            .as_deref()
            .is_some_and(|addr| addr.ends_with(":0"));
        let advertised_port = local
            .advertise_addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        match (picks_port, advertised_port, &self.options.listen_override) {
            (true, Some(port), Some(addr)) => {
                let addr = format!("{}:{port}", &addr[..addr.len() - 2]);
                tokio::net::TcpListener::bind(&addr)
                    .await
                    .map_err(|e| ClusterError::Listen {
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })
            }
            _ => self.bind(&local.listen_addr).await,
        }
    }

    /// The advertised address with the port actually bound when
    /// `--cluster-listen-addr` chose it (port 0 picks a free one).
    fn advertised(&self, advertise_addr: &str, listener: &tokio::net::TcpListener) -> String {
        match (&self.options.listen_override, listener.local_addr()) {
            (Some(_), Ok(bound)) => join_host_port(host_of(advertise_addr), bound.port()),
            _ => advertise_addr.to_string(),
        }
    }

    fn start_port(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        identity: &Identity,
    ) -> Result<(), ClusterError> {
        let cert = Arc::new(crate::transport::tls::ServerSlot::new(identity)?);
        let config = cert.clone();
        let stop = CancellationToken::new();
        if let Ok(local) = listener.local_addr() {
            tracing::info!(address = %local, "cluster port listening");
        }
        let handler = Arc::new(port::Port {
            cluster: self.clone(),
        });
        tokio::spawn(crate::transport::serve(
            listener,
            config,
            handler,
            stop.clone(),
        ));
        if let Ok(mut port) = self.port.lock() {
            if let Some((old, _)) = port.replace((stop, cert)) {
                old.cancel();
            }
        }
        Ok(())
    }

    /// The cluster port presents `identity` from its next handshake on.
    fn present(&self, identity: &Identity) -> Result<(), ClusterError> {
        if let Ok(port) = self.port.lock() {
            if let Some((_, slot)) = port.as_ref() {
                slot.set(identity)?;
            }
        }
        Ok(())
    }

    fn stop_port(&self) {
        if let Ok(mut port) = self.port.lock() {
            if let Some((stop, _)) = port.take() {
                stop.cancel();
            }
        }
    }

    /// Makes this node the first manager of a new swarm; returns its node ID.
    pub async fn init(self: &Arc<Self>, params: InitParams) -> Result<String, ClusterError> {
        let mut membership = self.membership.write().await;
        if !matches!(&*membership, Membership::Inactive) {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let listener = self.bind(&params.listen_addr).await?;
        // StdRng is Send: the rng lives across the awaits below.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
        let local = LocalNode {
            node_id: new_id(&mut rng),
            listen_addr: params.listen_addr.clone(),
            advertise_addr: self.advertised(&params.advertise_addr, &listener),
            raft_id: FIRST_RAFT_ID,
            snapshot_interval: params.snapshot_interval,
            role: Role::Manager,
            managers: Vec::new(),
        };
        // Start from nothing: a half-made swarm from a crash is not resumed.
        remove_dir(&self.dir)?;
        let cluster_id = new_id(&mut rng);
        let root = RootCa::generate()?;
        let expiry = spec_cert_expiry(&params.spec);
        let identity =
            identity::issue_own(&root, &local.node_id, Role::Manager, &cluster_id, expiry)?;
        write_private_off_runtime(
            &self.dir.join("ca.json"),
            serde_json::to_vec(&root).unwrap_or_default(),
        )
        .await?;
        identity::save(&self.dir, &identity)?;
        let peers = Arc::new(Peers::new(crate::transport::tls::client_config(&identity)?));
        // The data key comes first: raft seals secrets with it from entry one.
        let keys = Arc::new(KeyStore::create(&self.dir, params.autolock)?);
        let mut options = raft_options(&local);
        options.codec = keys.codec()?;
        options.peers = Some(peers.clone());
        let raft = RaftNode::open(&self.dir, local.raft_id, options).await?;
        if let Err(error) = bootstrap(&raft, &local, params, &root, cluster_id).await {
            let _ = raft.shutdown().await;
            let _ = remove_dir(&self.dir);
            return Err(error);
        }
        self.start_port(listener, &identity)?;
        // Written last: its presence is what makes a restart rejoin.
        write_local(&self.dir, &local)?;
        let node_id = local.node_id.clone();
        *membership = Membership::Manager(Arc::new(Manager::start(
            local,
            raft,
            keys,
            self.executor.clone(),
            self.options.network.clone(),
            Some(peers),
        )));
        tracing::info!(node = %node_id, "swarm initialised");
        Ok(node_id)
    }

    /// Stops the loops and raft at daemon shutdown (the log is durable either way).
    pub async fn shutdown(&self) {
        self.stopping.cancel();
        self.stop_port();
        let mut membership = self.membership.write().await;
        match std::mem::replace(&mut *membership, Membership::Inactive) {
            Membership::Manager(manager) => {
                if let Err(error) = manager.stop().await {
                    tracing::warn!(%error, "raft did not shut down cleanly");
                }
            }
            Membership::Worker(worker) => worker.stop().await,
            _ => {}
        }
    }

    /// Leaves the swarm and erases the swarm state on disk. A worker
    /// leaves freely; a manager only with `force` when it is the last one
    /// or its leaving would cost the others their quorum, as the engine.
    pub async fn leave(&self, force: bool) -> Result<(), ClusterError> {
        let mut membership = self.membership.write().await;
        let manager = match &*membership {
            Membership::Inactive => return Err(ClusterError::NotInSwarm),
            Membership::Locked { .. } if !force => return Err(ClusterError::LockedLeave),
            Membership::Locked { .. } => None,
            Membership::Manager(manager) => Some(manager.clone()),
            Membership::Worker(worker) => {
                let worker = worker.clone();
                *membership = Membership::Inactive;
                return self.leave_as_worker(&worker).await;
            }
        };
        let others = manager
            .as_ref()
            .map(|m| m.voters().len().saturating_sub(1))
            .unwrap_or(0);
        if !force {
            if others == 0 {
                return Err(ClusterError::LastManager);
            }
            // The engine refuses when the managers left could not form a
            // quorum: with every manager reachable, that is two or fewer.
            let total = others + 1;
            if total <= 2 {
                return Err(ClusterError::LeaveLosesQuorum {
                    left: others,
                    total,
                });
            }
        }
        if let (Some(manager), true) = (&manager, others > 0) {
            // Out of raft first, so the others' quorum no longer counts us;
            // bounded, since a forced leave must not wait for a cluster
            // that is gone.
            let raft_id = manager.raft_node().id();
            let farewell = async {
                if let Err(error) = port::remove_voter(manager, raft_id).await {
                    tracing::warn!(%error, "could not leave raft's membership cleanly");
                }
                let _ = self.goodbye(manager).await;
            };
            if tokio::time::timeout(LEAVE_FAREWELL, farewell)
                .await
                .is_err()
            {
                tracing::warn!("the other managers did not hear that this one leaves");
            }
        }
        let node_id = match std::mem::replace(&mut *membership, Membership::Inactive) {
            Membership::Locked { local, .. } => local.node_id,
            _ => match &manager {
                Some(manager) => manager.local.node_id.clone(),
                None => String::new(),
            },
        };
        self.stop_port();
        let networks = manager
            .as_ref()
            .map(|m| crate::network::realised_ids(&m.store()))
            .unwrap_or_default();
        let cluster_id = manager
            .as_ref()
            .and_then(|m| crate::network::cluster_of(&m.store()));
        if let Some(manager) = manager {
            manager.stop().await?;
        }
        self.remove_own_containers(&node_id).await;
        // Then the bridges that realised the swarm's networks.
        crate::network::leave(&self.options.network, &networks, cluster_id.as_deref()).await;
        // The task files' tmpfs goes once no container can need it.
        crate::agent::release_node_files(&node_id).await;
        remove_dir_off_runtime(&self.dir).await?;
        tracing::info!("left the swarm");
        Ok(())
    }

    /// A manager that leaves marks itself down, as a worker does.
    async fn goodbye(&self, manager: &Manager) -> Result<(), String> {
        port::mark_down(manager, manager.node_id(), port::LEFT_MESSAGE).await
    }

    async fn leave_as_worker(&self, worker: &Worker) -> Result<(), ClusterError> {
        worker.say_goodbye().await;
        worker.stop().await;
        self.stop_port();
        let node_id = worker.node_id().to_string();
        self.remove_own_containers(&node_id).await;
        self.options.network.remove_task_bridges().await;
        crate::agent::release_node_files(&node_id).await;
        remove_dir_off_runtime(&self.dir).await?;
        tracing::info!("left the swarm");
        Ok(())
    }

    /// As the engine does on leave: its task containers go too. A create
    /// the agent sent just before it stopped may still land on the engine
    /// after the first sweep, so a second one follows shortly.
    async fn remove_own_containers(&self, node_id: &str) {
        for sweep in 0..2 {
            if sweep > 0 {
                tokio::time::sleep(LATE_CREATE_GRACE).await;
            }
            match crate::agent::remove_all_own(&*self.executor, node_id).await {
                Ok(removed) => tracing::info!(removed, "removed this node's task containers"),
                Err(error) => {
                    tracing::warn!(%error, "could not remove this node's task containers")
                }
            }
        }
    }
}

/// `host:port`, with brackets for an IPv6 host.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// How long node certificates live: the cluster's `NodeCertExpiry`.
pub fn cert_expiry(swarm: &Swarm) -> std::time::Duration {
    swarm
        .spec
        .as_ref()
        .map(spec_cert_expiry)
        .unwrap_or(spec_cert_expiry(&SwarmSpec::default()))
}

fn spec_cert_expiry(spec: &SwarmSpec) -> std::time::Duration {
    let nanos = spec
        .ca_config
        .as_ref()
        .and_then(|c| c.node_cert_expiry)
        .filter(|&n| n > 0)
        .unwrap_or(90 * 24 * 3600 * 1_000_000_000);
    std::time::Duration::from_nanos(nanos as u64)
}

fn raft_options(local: &LocalNode) -> NodeOptions {
    let defaults = NodeOptions::default();
    NodeOptions {
        addr: local.advertise_addr.clone(),
        snapshot_every: local
            .snapshot_interval
            .filter(|&n| n > 0)
            .unwrap_or(defaults.snapshot_every),
        ..defaults
    }
}

/// Commits the cluster object and this node in one transaction.
async fn bootstrap(
    raft: &RaftNode,
    local: &LocalNode,
    params: InitParams,
    root: &RootCa,
    cluster_id: String,
) -> Result<(), ClusterError> {
    let availability = params.availability;
    let tls = tls_info(root)?;
    let mut spec = params.spec;
    rotation::keep_root(&mut spec, root);
    let cluster = Swarm {
        id: Some(cluster_id),
        spec: Some(spec),
        tls_info: Some(tls.clone()),
        root_rotation_in_progress: Some(false),
        data_path_port: Some(params.data_path_port),
        default_addr_pool: params.default_addr_pool,
        subnet_size: Some(params.subnet_size),
        join_tokens: Some(JoinTokens {
            worker: Some(ca::new_join_token(root)?),
            manager: Some(ca::new_join_token(root)?),
        }),
        ..Swarm::default()
    };
    let mut description = params.description;
    description.tls_info = Some(tls);
    let node = Node {
        id: Some(local.node_id.clone()),
        spec: Some(NodeSpec {
            labels: Some(Default::default()),
            role: Some(NodeSpecRoleEnum::MANAGER),
            availability: Some(availability),
            ..NodeSpec::default()
        }),
        description: Some(description),
        status: Some(NodeStatus {
            state: Some(NodeState::READY),
            addr: Some(local.advertise_ip().to_string()),
            ..NodeStatus::default()
        }),
        manager_status: Some(ManagerStatus {
            leader: Some(true),
            reachability: Some(Reachability::REACHABLE),
            addr: Some(local.advertise_addr.clone()),
        }),
        ..Node::default()
    };
    let tx = Transaction::new(Timestamp::from_system(SystemTime::now()))
        .create(Object::Cluster(Box::new(cluster)))
        .create(Object::Node(Box::new(node)));
    match raft.propose(tx).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(ClusterError::Bootstrap(error.to_string())),
        Err(error) => Err(ClusterError::Bootstrap(error.to_string())),
    }
}

pub(super) fn tls_info(root: &RootCa) -> Result<TlsInfo, ClusterError> {
    let info = root.tls_info()?;
    Ok(TlsInfo {
        trust_root: Some(info.trust_root),
        cert_issuer_subject: Some(info.cert_issuer_subject),
        cert_issuer_public_key: Some(info.cert_issuer_public_key),
    })
}

/// The node's Description from the engine's `/info`, as swarmkit reports it.
pub fn describe_node(info: &serde_json::Value) -> NodeDescription {
    let text = |key: &str| info.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let ncpu = info.get("NCPU").and_then(|v| v.as_i64()).unwrap_or(0);
    let memory = info.get("MemTotal").and_then(|v| v.as_i64()).unwrap_or(0);
    let labels: std::collections::HashMap<String, String> = info
        .get("Labels")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|l| {
            l.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    NodeDescription {
        hostname: text("Name"),
        platform: Some(Platform {
            architecture: text("Architecture"),
            os: text("OSType"),
        }),
        resources: Some(ResourceObject {
            nano_cpus: Some(ncpu * 1_000_000_000),
            memory_bytes: Some(memory),
            ..ResourceObject::default()
        }),
        engine: Some(EngineDescription {
            engine_version: text("ServerVersion"),
            labels: (!labels.is_empty()).then_some(labels),
            plugins: Some(engine_plugins(info)),
        }),
        tls_info: None,
    }
}

/// `Plugins: {"Volume": [...], "Network": [...], "Log": [...]}` flattened and
/// sorted by type then name, as the engine lists them.
fn engine_plugins(info: &serde_json::Value) -> Vec<EngineDescriptionPlugins> {
    let mut plugins = Vec::new();
    if let Some(map) = info.get("Plugins").and_then(|v| v.as_object()) {
        for (kind, names) in map {
            if kind == "Authorization" {
                continue;
            }
            for name in names
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str())
            {
                plugins.push(EngineDescriptionPlugins {
                    typ: Some(kind.clone()),
                    name: Some(name.to_string()),
                });
            }
        }
    }
    plugins.sort_by(|a, b| (&a.typ, &a.name).cmp(&(&b.typ, &b.name)));
    plugins
}

/// `host` of `host:port` (IPv6 brackets removed).
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

fn local_path(dir: &Path) -> PathBuf {
    dir.join("node.json")
}

fn read_local(dir: &Path) -> Result<Option<LocalNode>, ClusterError> {
    let path = local_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClusterError::Corrupt {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ClusterError::Disk { path, source }),
    }
}

fn write_local(dir: &Path, local: &LocalNode) -> Result<(), ClusterError> {
    write_private(
        &local_path(dir),
        &serde_json::to_vec_pretty(local).unwrap_or_default(),
    )
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClusterError> {
    crate::fsutil::write_private(path, bytes).map_err(|source| ClusterError::Disk {
        path: path.to_path_buf(),
        source,
    })
}

/// [`write_private`] on a blocking thread (two fsyncs).
async fn write_private_off_runtime(path: &Path, bytes: Vec<u8>) -> Result<(), ClusterError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_private(&owned, &bytes))
        .await
        .map_err(|e| ClusterError::Disk {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?
}

/// [`remove_dir`] on a blocking thread (a whole directory tree).
async fn remove_dir_off_runtime(dir: &Path) -> Result<(), ClusterError> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || remove_dir(&owned))
        .await
        .map_err(|e| ClusterError::Disk {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e),
        })?
}

fn remove_dir(dir: &Path) -> Result<(), ClusterError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ClusterError::Disk {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Reads one object of a kind that has exactly one (the cluster).
pub fn the_cluster(store: &Store) -> Option<Swarm> {
    store
        .list(Kind::Cluster)
        .into_iter()
        .find_map(|o| match &*o {
            Object::Cluster(swarm) => Some((**swarm).clone()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_ports_and_brackets() {
        assert_eq!(host_of("127.0.0.1:2377"), "127.0.0.1");
        assert_eq!(host_of("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2377"), "::1");
    }

    #[test]
    fn describes_the_node_from_engine_info() {
        let info = serde_json::json!({
            "Name": "vm", "Architecture": "x86_64", "OSType": "linux", "NCPU": 2,
            "MemTotal": 1024, "ServerVersion": "20.10.24", "Labels": ["zone=a"],
            "Plugins": {"Volume": ["local"], "Network": ["bridge"], "Authorization": null, "Log": ["json-file"]}
        });
        let d = describe_node(&info);
        assert_eq!(d.hostname.as_deref(), Some("vm"));
        assert_eq!(d.resources.unwrap().nano_cpus, Some(2_000_000_000));
        let engine = d.engine.unwrap();
        assert_eq!(engine.labels.unwrap()["zone"], "a");
        let kinds: Vec<_> = engine
            .plugins
            .unwrap()
            .into_iter()
            .map(|p| p.typ.unwrap())
            .collect();
        assert_eq!(kinds, ["Log", "Network", "Volume"]);
    }
}
