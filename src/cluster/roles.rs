//! `node promote` and `node demote` made real. The API only commits the
//! node's new role; this watch makes the node follow it: a worker told
//! (by its session) that it is to be a manager gets a manager's
//! certificate and kit and joins raft; the leader takes demoted managers
//! out of raft, and a demoted manager, once out, becomes a worker. Tasks'
//! containers keep running throughout (the new agent adopts them).

use std::sync::Arc;
use std::time::Duration;

use bollard::models::NodeSpecRoleEnum;

use super::wire::{CertificateAnswer, CertificateRequest, Empty, ADD_VOTER_PATH, CERTIFICATE_PATH};
use super::{
    identity, join, raft_options, write_local, Cluster, ClusterError, LocalState, Manager,
    Membership, Worker,
};
use crate::raft::RaftNode;
use crate::transport::tls::{self, MANAGER_NAME};
use crate::transport::{Identity, Peers, Role, TransportError};
use crate::types::{Kind, Object};

const TICK: Duration = Duration::from_millis(500);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs for the daemon's life, checking the node's role twice a second
/// (cheap: it reads the local store or the session's last word).
pub async fn watch(cluster: Arc<Cluster>) {
    // Where in its lifetime this node renews its certificate: a random
    // point between 50 % and 80 %, as swarmkit, so nodes do not all renew
    // at once.
    let renew_at = rand::random::<f64>() * 0.3 + 0.5;
    loop {
        tokio::select! {
            _ = cluster.stopping.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if let Err(error) = cluster.renew_if_due(renew_at).await {
            tracing::warn!(%error, "could not renew this node's certificate; retrying");
        }
        if let Err(error) = cluster.follow_root().await {
            tracing::warn!(%error, "could not follow the swarm's root CA; retrying");
        }
        let outcome = match cluster.state().await {
            LocalState::Active(manager) => follow_as_manager(&cluster, manager).await,
            LocalState::Worker(worker) if *worker.wanted_role().borrow() == Role::Manager => {
                cluster.promote_self(worker).await
            }
            _ => Ok(()),
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "could not change this node's role; retrying");
        }
    }
}

async fn follow_as_manager(
    cluster: &Arc<Cluster>,
    manager: Arc<Manager>,
) -> Result<(), ClusterError> {
    if manager.leads() {
        remove_demoted_voters(&manager).await;
        finish_rotation(&manager).await;
    }
    // A demoted leader first takes itself out of the voters (above) and
    // steps down; the managers then hand out its worker certificate only
    // once it is out of raft.
    let demoted = spec_role(&manager, manager.node_id()) == Some(NodeSpecRoleEnum::WORKER);
    if demoted && !manager.leads() {
        return cluster.demote_self(manager).await;
    }
    Ok(())
}

/// Managers' cluster addresses as this manager's store knows them.
fn manager_addrs_of(manager: &Manager) -> Vec<String> {
    nodes(&manager.store())
        .into_iter()
        .filter_map(|n| n.manager_status?.addr)
        .collect()
}

fn nodes(store: &crate::store::Store) -> Vec<bollard::models::Node> {
    store
        .list(Kind::Node)
        .iter()
        .filter_map(|o| match &**o {
            Object::Node(node) => Some((**node).clone()),
            _ => None,
        })
        .collect()
}

fn spec_role(manager: &Manager, node_id: &str) -> Option<NodeSpecRoleEnum> {
    let object = manager.store().get(Kind::Node, node_id)?;
    match &*object {
        Object::Node(node) => node.spec.as_ref().and_then(|s| s.role),
        _ => None,
    }
}

/// The leader: every member whose node is now to be a worker leaves raft,
/// and its node loses its ManagerStatus.
async fn remove_demoted_voters(manager: &Manager) {
    let voters = manager.voters();
    let members = manager.members();
    for node in nodes(&manager.store()) {
        let Some(addr) = node.manager_status.as_ref().and_then(|s| s.addr.clone()) else {
            continue;
        };
        let worker = node.spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::WORKER);
        if !worker {
            continue;
        }
        let node_id = node.id.clone().unwrap_or_default();
        if let Some((raft_id, _)) = members.iter().find(|(_, a)| *a == addr) {
            let is_voter = voters.iter().any(|(id, _)| id == raft_id);
            if is_voter && voters.len() <= 1 {
                continue;
            }
            tracing::info!(node = %node_id, "demoted: leaving raft");
            if let Err(error) = super::port::remove_voter(manager, *raft_id).await {
                tracing::warn!(%error, "could not take a demoted manager out of raft");
                continue;
            }
            // This leader stays a member until the next leader drops it,
            // found by the ManagerStatus address kept until then.
            if *raft_id == manager.raft_node().id() {
                continue;
            }
        }
        if let Err(error) = super::port::set_manager_status(manager, &node_id, None).await {
            tracing::warn!(%error, "could not clear a demoted manager's status");
        }
    }
}

/// The leader ends a root rotation once every node's certificate comes
/// from the new root.
async fn finish_rotation(manager: &Manager) {
    let store = manager.store();
    let Some(swarm) = super::the_cluster(&store) else {
        return;
    };
    let (Some(true), Some(tls)) = (swarm.root_rotation_in_progress, swarm.tls_info.clone()) else {
        return;
    };
    if !nodes(&store)
        .iter()
        .all(|n| super::rotation::node_rotated(n, &tls))
    {
        return;
    }
    let proposer = manager.proposer_arc();
    let done = crate::manager::propose_fresh(&proposer, || {
        let swarm = super::the_cluster(&store)?;
        if swarm.root_rotation_in_progress != Some(true) {
            return None;
        }
        let version = swarm.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        let updated = bollard::models::Swarm {
            root_rotation_in_progress: Some(false),
            ..swarm
        };
        Some(
            crate::store::Transaction::new(crate::types::Timestamp::from_system(
                std::time::SystemTime::now(),
            ))
            .update(Object::Cluster(Box::new(updated)), version),
        )
    })
    .await;
    match done {
        Ok(()) => tracing::info!("root CA rotation complete"),
        Err(error) => tracing::warn!(%error, "could not end the root rotation"),
    }
}

/// Same certificate, whatever the line endings and trailing blanks.
fn same_pem(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

/// The root that signed this node's certificate (written when a new one
/// arrives; before any rotation it is the first root of the bundle).
const ISSUER_FILE: &str = "cert-issuer.pem";

impl Cluster {
    /// Follows the swarm's root CA: trusts a new root as soon as the swarm
    /// has one, gets a certificate from it, and drops the old root once the
    /// rotation is over.
    async fn follow_root(&self) -> Result<(), ClusterError> {
        let (desired, rotating, peers, managers) = match self.state().await {
            LocalState::Active(manager) => {
                let Some(swarm) = super::the_cluster(&manager.store()) else {
                    return Ok(());
                };
                let Some(peers) = manager.peers().cloned() else {
                    return Ok(());
                };
                let root = swarm.tls_info.and_then(|t| t.trust_root);
                let rotating = swarm.root_rotation_in_progress == Some(true);
                (root, rotating, peers, manager_addrs_of(&manager))
            }
            LocalState::Worker(worker) => match worker.trust() {
                Some((root, rotating)) => {
                    (Some(root), rotating, worker.peers_arc(), worker.managers())
                }
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let Some(desired) = desired.filter(|r| !r.trim().is_empty()) else {
            return Ok(());
        };
        let current = identity::load(&self.dir)?;
        let bundle = tls::split_bundle(&current.ca_pem);
        let issuer = std::fs::read_to_string(self.dir.join(ISSUER_FILE))
            .ok()
            .or_else(|| bundle.first().cloned())
            .unwrap_or_default();
        let mut next = current.clone();
        if !bundle.iter().any(|b| same_pem(b, &desired)) {
            // Trust the new root before anything is signed by it.
            next.ca_pem = format!("{}\n{}", desired.trim(), current.ca_pem.trim());
            self.adopt_identity(&next, &peers)?;
            tracing::info!("trusting the swarm's new root CA");
        }
        if !same_pem(&issuer, &desired) {
            let (csr_pem, key_pem) = identity::new_request()?;
            let answer = ask_certificate(&peers, &managers, &csr_pem).await?;
            if !same_pem(&answer.issuer_pem, &desired) {
                return Ok(()); // That manager has not seen the new root yet.
            }
            next.cert_pem = answer.cert_pem;
            next.key_pem = key_pem;
            self.adopt_identity(&next, &peers)?;
            super::write_private_off_runtime(&self.dir.join(ISSUER_FILE), desired.into_bytes())
                .await?;
            tracing::info!("certificate from the swarm's new root CA");
            return Ok(());
        }
        if !rotating && tls::split_bundle(&next.ca_pem).len() > 1 {
            next.ca_pem = format!("{}\n", desired.trim());
            self.adopt_identity(&next, &peers)?;
            tracing::info!("the old root CA is no longer trusted");
        }
        Ok(())
    }

    /// Saves `identity` and makes the cluster port and the peer pool use it.
    fn adopt_identity(&self, identity: &Identity, peers: &Peers) -> Result<(), ClusterError> {
        identity::save(&self.dir, identity)?;
        self.present(identity)?;
        peers.renew(tls::client_config(identity)?);
        Ok(())
    }

    /// Renews this node's certificate once `renew_at` of its lifetime has
    /// passed: a new key, signed for the role the node has now.
    async fn renew_if_due(&self, renew_at: f64) -> Result<(), ClusterError> {
        let (peers, managers) = match self.state().await {
            LocalState::Active(manager) => match manager.peers() {
                Some(peers) => (peers.clone(), manager_addrs_of(&manager)),
                None => return Ok(()),
            },
            LocalState::Worker(worker) => (worker.peers_arc(), worker.managers()),
            _ => return Ok(()),
        };
        let Ok(current) = identity::load(&self.dir) else {
            return Ok(());
        };
        let Some((from, until)) = tls::validity(&current.cert_pem) else {
            return Ok(());
        };
        let due = from + ((until - from) as f64 * renew_at) as i64;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if now < due {
            return Ok(());
        }
        let (csr_pem, key_pem) = identity::new_request()?;
        let answer = ask_certificate(&peers, &managers, &csr_pem).await?;
        let renewed = Identity {
            ca_pem: current.ca_pem,
            cert_pem: answer.cert_pem,
            key_pem,
        };
        identity::save(&self.dir, &renewed)?;
        self.present(&renewed)?;
        peers.renew(tls::client_config(&renewed)?);
        tracing::info!("node certificate renewed");
        Ok(())
    }

    /// A worker whose node is now to be a manager: a manager's certificate
    /// and kit, raft opened empty, then the leader adds it as a voter.
    async fn promote_self(self: &Arc<Self>, worker: Arc<Worker>) -> Result<(), ClusterError> {
        let (csr_pem, key_pem) = identity::new_request()?;
        let answer = ask_certificate(worker.peers(), &worker.managers(), &csr_pem).await?;
        let Some(kit) = answer.manager.filter(|_| answer.role == Role::Manager) else {
            return Ok(()); // The role changed back meanwhile.
        };
        let mut membership = self.membership.write().await;
        if !matches!(&*membership, Membership::Worker(w) if Arc::ptr_eq(w, &worker)) {
            return Ok(());
        }
        tracing::info!(node = %worker.node_id(), "promoted: becoming a manager");
        worker.stop().await;
        let identity = Identity {
            ca_pem: identity::load(&self.dir)?.ca_pem,
            cert_pem: answer.cert_pem,
            key_pem,
        };
        identity::save(&self.dir, &identity)?;
        let mut local = worker.local.clone();
        local.role = Role::Manager;
        local.raft_id = kit.raft_id;
        local.managers = answer.managers.clone();
        let peers = Arc::new(Peers::new(tls::client_config(&identity)?));
        self.present(&identity)?;
        let manager = self
            .start_joining_manager(&local, &kit, peers.clone())
            .await?;
        *membership = Membership::Manager(manager.clone());
        drop(membership);
        let add = join::add_voter_request(&local);
        let _: Empty = call_any(&peers, &answer.managers, ADD_VOTER_PATH, &add).await?;
        join::wait_caught_up(&manager).await?;
        tracing::info!(node = %local.node_id, "now a manager");
        Ok(())
    }

    /// A manager out of raft whose node is now a worker: a worker's
    /// certificate, raft's data and the keys removed, a worker's session.
    async fn demote_self(self: &Arc<Self>, manager: Arc<Manager>) -> Result<(), ClusterError> {
        let (csr_pem, key_pem) = identity::new_request()?;
        let managers: Vec<String> = nodes(&manager.store())
            .into_iter()
            .filter_map(|n| n.manager_status?.addr)
            .filter(|addr| *addr != manager.local.advertise_addr)
            .collect();
        let peers = manager
            .peers()
            .cloned()
            .ok_or_else(|| ClusterError::JoinRefused("no cluster transport".to_string()))?;
        let answer = ask_certificate(&peers, &managers, &csr_pem).await?;
        if answer.role != Role::Worker {
            return Ok(());
        }
        let mut membership = self.membership.write().await;
        if !matches!(&*membership, Membership::Manager(m) if Arc::ptr_eq(m, &manager)) {
            return Ok(());
        }
        tracing::info!(node = %manager.node_id(), "demoted: becoming a worker");
        *membership = Membership::Inactive;
        let mut local = manager.local.clone();
        drop(peers);
        manager.stop().await?;
        // The manager's files (a whole raft dir): off the runtime's threads.
        let dir = self.dir.clone();
        let removed = tokio::task::spawn_blocking(move || {
            for gone in ["raft", "ca.json", "dek.json"] {
                let path = dir.join(gone);
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(error) = removed {
                    tracing::debug!(path = %path.display(), %error, "not removed");
                }
            }
        })
        .await;
        if let Err(error) = removed {
            tracing::warn!(%error, "removing the manager's files failed");
        }
        let identity = Identity {
            ca_pem: identity::load(&self.dir)?.ca_pem,
            cert_pem: answer.cert_pem,
            key_pem,
        };
        identity::save(&self.dir, &identity)?;
        local.role = Role::Worker;
        local.raft_id = 0;
        local.managers = answer.managers;
        write_local(&self.dir, &local)?;
        self.present(&identity)?;
        let peers = Arc::new(Peers::new(tls::client_config(&identity)?));
        *membership = Membership::Worker(Arc::new(Worker::start(
            local,
            peers,
            self.executor.clone(),
            self.options.network.clone(),
        )));
        tracing::info!("now a worker");
        Ok(())
    }
}

async fn ask_certificate(
    peers: &Peers,
    managers: &[String],
    csr_pem: &str,
) -> Result<CertificateAnswer, ClusterError> {
    let request = CertificateRequest {
        csr_pem: csr_pem.to_string(),
    };
    call_any(peers, managers, CERTIFICATE_PATH, &request).await
}

/// Tries each manager in turn until one answers.
async fn call_any<Q: serde::Serialize, R: serde::de::DeserializeOwned>(
    peers: &Peers,
    managers: &[String],
    path: &str,
    body: &Q,
) -> Result<R, ClusterError> {
    let mut last = TransportError::Unreachable {
        addr: String::new(),
        reason: "no manager known".to_string(),
    };
    for addr in managers {
        match peers
            .call(addr, MANAGER_NAME, path, body, CALL_TIMEOUT)
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(error) => last = error,
        }
    }
    Err(ClusterError::Transport(last))
}

/// Objects restored per raft entry by `--force-new-cluster`.
const RESTORE_BATCH: usize = 256;

impl Cluster {
    /// `swarm init --force-new-cluster` on a manager: raft starts again
    /// from this node's store with this node as the only voter (the other
    /// managers stay listed, unreachable, until they are demoted and
    /// removed or rejoin with a token). Nothing else changes: services,
    /// tasks, secrets and the cluster's identity are kept.
    pub async fn force_new_cluster(self: &Arc<Self>) -> Result<String, ClusterError> {
        let mut membership = self.membership.write().await;
        let manager = match &*membership {
            Membership::Manager(manager) => manager.clone(),
            Membership::Worker(_) => return Err(ClusterError::WorkerNotManager),
            Membership::Locked { .. } => return Err(ClusterError::Locked),
            Membership::Inactive => return Err(ClusterError::NotManager),
        };
        let store = manager.store();
        let objects: Vec<Object> = Kind::ALL
            .iter()
            .flat_map(|kind| store.list(*kind))
            .map(|o| (*o).clone())
            .collect();
        drop(store);
        let local = manager.local.clone();
        let peers = manager.peers().cloned();
        *membership = Membership::Inactive;
        tracing::warn!(node = %local.node_id, objects = objects.len(), "forcing a new cluster from this node's state");
        release(manager).await?;
        super::remove_dir_off_runtime(&self.dir.join("raft")).await?;
        let keys = match crate::secrets::KeyStore::load(&self.dir)? {
            Some(crate::secrets::KeyFile::Open(keys)) => Arc::new(keys),
            _ => return Err(ClusterError::Locked),
        };
        let mut options = raft_options(&local);
        options.codec = keys.codec()?;
        options.peers = peers.clone();
        let raft = RaftNode::open(&self.dir, local.raft_id, options).await?;
        for chunk in objects.chunks(RESTORE_BATCH) {
            let mut tx = crate::store::Transaction::new(crate::types::Timestamp::from_system(
                std::time::SystemTime::now(),
            ));
            for object in chunk {
                tx = tx.create(object.clone());
            }
            use crate::store::Proposer as _;
            match raft.propose(tx).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ClusterError::Bootstrap(e.to_string())),
                Err(e) => return Err(ClusterError::Bootstrap(e.to_string())),
            }
        }
        let node_id = local.node_id.clone();
        *membership = Membership::Manager(Arc::new(Manager::start(
            local,
            raft,
            keys,
            self.executor.clone(),
            self.options.network.clone(),
            peers,
        )));
        tracing::info!(node = %node_id, "new cluster forced from this node's state");
        Ok(node_id)
    }
}

/// Stops a manager that nothing else holds any more, so its raft data
/// can be replaced (requests in flight finish first, briefly).
async fn release(manager: Arc<Manager>) -> Result<(), ClusterError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&manager) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    manager.stop().await
}
