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

use crate::agent::Executor;
use crate::ca::{self, CaError, RootCa};
use crate::events::EventLog;
use crate::raft::{NodeOptions, RaftError, RaftNode};
use crate::secrets::{KeyFile, KeyStore, LockedKey, SecretsError};
use crate::store::{Proposer, Store, Transaction};
use crate::types::{new_id, Kind, Object, Timestamp};

/// How long after the first sweep of task containers at leave the second
/// one runs (an engine create in flight when the agent stopped).
const LATE_CREATE_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// How long stopping raft may take before leave or shutdown goes on.
const RAFT_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
}

impl Manager {
    fn start(
        local: LocalNode,
        raft: RaftNode,
        keys: Arc<KeyStore>,
        executor: Arc<dyn Executor>,
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
        crate::manager::start(
            local.node_id.clone(),
            raft.store(),
            proposer,
            executor,
            loops.clone(),
            &running,
        );
        running.close();
        Manager {
            local,
            raft,
            loops,
            running,
            events,
            keys,
        }
    }

    /// Stops the loops, then raft. Requests still holding the manager
    /// finish against the old store; raft stops when the last one lets go.
    async fn stop(self: Arc<Self>) -> Result<(), ClusterError> {
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

enum Membership {
    Inactive,
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

pub struct Cluster {
    dir: PathBuf,
    membership: RwLock<Membership>,
    executor: Arc<dyn Executor>,
}

impl Cluster {
    /// Opens the swarm state under `data_dir`, rejoining raft when this
    /// node was a manager before the restart.
    pub async fn open(
        data_dir: &Path,
        executor: Arc<dyn Executor>,
    ) -> Result<Cluster, ClusterError> {
        let dir = data_dir.join("swarm");
        let membership = match read_local(&dir)? {
            None => Membership::Inactive,
            Some(local) => match KeyStore::load(&dir)? {
                Some(KeyFile::Locked(key)) => {
                    tracing::warn!(node = %local.node_id, "swarm is locked; waiting for docker swarm unlock");
                    Membership::Locked { local, key }
                }
                Some(KeyFile::Open(keys)) => {
                    open_manager(&dir, local, keys, executor.clone()).await?
                }
                // A swarm made before secrets were encrypted: give it a key
                // now; its secrets are sealed from the next write on.
                None => {
                    let keys = KeyStore::create(&dir, false)?;
                    open_manager(&dir, local, keys, executor.clone()).await?
                }
            },
        };
        Ok(Cluster {
            dir,
            membership: RwLock::new(membership),
            executor,
        })
    }

    /// The manager, or the engine's "not a swarm manager" / "locked" refusal.
    pub async fn manager(&self) -> Result<Arc<Manager>, ClusterError> {
        match &*self.membership.read().await {
            Membership::Manager(manager) => Ok(manager.clone()),
            Membership::Locked { .. } => Err(ClusterError::Locked),
            Membership::Inactive => Err(ClusterError::NotManager),
        }
    }

    pub async fn state(&self) -> LocalState {
        match &*self.membership.read().await {
            Membership::Manager(manager) => LocalState::Active(manager.clone()),
            Membership::Locked { local, .. } => LocalState::Locked(local.clone()),
            Membership::Inactive => LocalState::Inactive,
        }
    }

    /// `swarm unlock`: unwraps the data key with `unlock_key`, opens raft
    /// and starts the manager. Only a locked node can be unlocked.
    pub async fn unlock(&self, unlock_key: &str) -> Result<(), ClusterError> {
        let mut membership = self.membership.write().await;
        let (local, key) = match &*membership {
            Membership::Locked { local, key } => (local.clone(), key),
            Membership::Manager(_) => return Err(ClusterError::NotLocked),
            Membership::Inactive => return Err(ClusterError::NotManager),
        };
        let keys = key.unlock(unlock_key)?;
        let opened = open_manager(&self.dir, local, keys, self.executor.clone()).await?;
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

    /// The root CA of the swarm this node manages (kept beside the raft log
    /// until managers replicate it).
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

    /// Makes this node the first manager of a new swarm; returns its node ID.
    pub async fn init(&self, params: InitParams) -> Result<String, ClusterError> {
        let mut membership = self.membership.write().await;
        if !matches!(&*membership, Membership::Inactive) {
            return Err(ClusterError::AlreadyInSwarm);
        }
        // StdRng is Send: the rng lives across the awaits below.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
        let local = LocalNode {
            node_id: new_id(&mut rng),
            listen_addr: params.listen_addr.clone(),
            advertise_addr: params.advertise_addr.clone(),
            raft_id: FIRST_RAFT_ID,
            snapshot_interval: params.snapshot_interval,
        };
        // Start from nothing: a half-made swarm from a crash is not resumed.
        remove_dir(&self.dir)?;
        // The data key comes first: raft seals secrets with it from entry one.
        let keys = Arc::new(KeyStore::create(&self.dir, params.autolock)?);
        let mut options = raft_options(&local);
        options.codec = keys.codec()?;
        let raft = RaftNode::open(&self.dir, local.raft_id, options).await?;
        if let Err(error) = bootstrap(&raft, &local, params, &self.dir, &mut rng).await {
            let _ = raft.shutdown().await;
            let _ = remove_dir(&self.dir);
            return Err(error);
        }
        // Written last: its presence is what makes a restart rejoin.
        write_local(&self.dir, &local)?;
        let node_id = local.node_id.clone();
        *membership = Membership::Manager(Arc::new(Manager::start(
            local,
            raft,
            keys,
            self.executor.clone(),
        )));
        tracing::info!(node = %node_id, "swarm initialised");
        Ok(node_id)
    }

    /// Stops the loops and raft at daemon shutdown (the log is durable either way).
    pub async fn shutdown(&self) {
        let mut membership = self.membership.write().await;
        if let Membership::Manager(manager) =
            std::mem::replace(&mut *membership, Membership::Inactive)
        {
            if let Err(error) = manager.stop().await {
                tracing::warn!(%error, "raft did not shut down cleanly");
            }
        }
    }

    /// Leaves the swarm: a manager only with `force` (it is always the last
    /// one until nodes can join). Erases the swarm state on disk.
    pub async fn leave(&self, force: bool) -> Result<(), ClusterError> {
        let mut membership = self.membership.write().await;
        let manager = match &*membership {
            Membership::Inactive => return Err(ClusterError::NotInSwarm),
            Membership::Locked { .. } if !force => return Err(ClusterError::LockedLeave),
            Membership::Locked { .. } => None,
            Membership::Manager(manager) => Some(manager.clone()),
        };
        if !force {
            return Err(ClusterError::LastManager);
        }
        let node_id = match std::mem::replace(&mut *membership, Membership::Inactive) {
            Membership::Locked { local, .. } => local.node_id,
            _ => match &manager {
                Some(manager) => manager.local.node_id.clone(),
                None => String::new(),
            },
        };
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
        // As the engine does on leave: its task containers go too. A create
        // the agent sent just before it stopped may still land on the
        // engine after the first sweep, so a second one follows shortly.
        for sweep in 0..2 {
            if sweep > 0 {
                tokio::time::sleep(LATE_CREATE_GRACE).await;
            }
            match crate::agent::remove_all_own(&*self.executor, &node_id).await {
                Ok(removed) => tracing::info!(removed, "removed this node's task containers"),
                Err(error) => {
                    tracing::warn!(%error, "could not remove this node's task containers")
                }
            }
        }
        // Then the bridges that realised the swarm's networks.
        crate::network::leave(&networks, cluster_id.as_deref()).await;
        // The task files' tmpfs goes once no container can need it.
        crate::agent::release_node_files(&node_id);
        remove_dir(&self.dir)?;
        tracing::info!("left the swarm");
        Ok(())
    }
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

/// Opens raft with the unlocked data key and starts the manager's loops.
async fn open_manager(
    dir: &Path,
    local: LocalNode,
    keys: KeyStore,
    executor: Arc<dyn Executor>,
) -> Result<Membership, ClusterError> {
    let keys = Arc::new(keys);
    let mut options = raft_options(&local);
    options.codec = keys.codec()?;
    let raft = RaftNode::open(dir, local.raft_id, options).await?;
    tracing::info!(node = %local.node_id, "rejoined the swarm as a manager");
    let manager = Manager::start(local, raft, keys, executor);
    if let Err(error) = manager.sync_autolock() {
        tracing::warn!(%error, "cannot bring the key file in line with the autolock setting");
    }
    Ok(Membership::Manager(Arc::new(manager)))
}

/// Commits the cluster object and this node in one transaction, and keeps
/// the CA key beside the raft log.
async fn bootstrap(
    raft: &RaftNode,
    local: &LocalNode,
    params: InitParams,
    dir: &Path,
    rng: &mut impl rand::RngCore,
) -> Result<(), ClusterError> {
    let availability = params.availability;
    let cluster_id = new_id(rng);
    let root = RootCa::generate()?;
    write_private(
        &dir.join("ca.json"),
        &serde_json::to_vec(&root).unwrap_or_default(),
    )?;
    // This node's identity on the cluster port (used by the transport).
    let (cert, key) = root.issue_node_cert(
        &local.node_id,
        "swarm-manager",
        &cluster_id,
        std::time::Duration::from_secs(90 * 24 * 3600),
    )?;
    write_private(&dir.join("node.crt"), cert.as_bytes())?;
    write_private(&dir.join("node.key"), key.as_bytes())?;
    let tls = tls_info(&root)?;
    let cluster = Swarm {
        id: Some(cluster_id),
        spec: Some(params.spec),
        tls_info: Some(tls.clone()),
        root_rotation_in_progress: Some(false),
        data_path_port: Some(params.data_path_port),
        default_addr_pool: params.default_addr_pool,
        subnet_size: Some(params.subnet_size),
        join_tokens: Some(JoinTokens {
            worker: Some(ca::new_join_token(&root)?),
            manager: Some(ca::new_join_token(&root)?),
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

fn tls_info(root: &RootCa) -> Result<TlsInfo, ClusterError> {
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
