//! The joining side of `swarm join`: fetch the root CA and check it against
//! the token's digest, send a certificate request with the token, then
//! become a worker, or a manager that raft's leader adds as a voter.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bollard::models::NodeDescription;

use super::wire::{
    AddVoter, CaAnswer, Empty, JoinAnswer, JoinRequest, ADD_VOTER_PATH, CA_PATH, JOIN_PATH,
};
use super::{
    host_of, identity, join_host_port, raft_options, remove_dir, write_local, write_private,
    Cluster, ClusterError, LocalNode, Manager, Membership, Worker,
};
use crate::ca::RootCa;
use crate::raft::RaftNode;
use crate::secrets::KeyStore;
use crate::transport::tls::{self, MANAGER_NAME};
use crate::transport::{Identity, Peers, TransportError};

/// The engine answers a join within 20 s, or says it goes on in the background.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What `POST /swarm/join` asks, checked by the api.
pub struct JoinParams {
    /// The manager to join through, `host:port`.
    pub remote: String,
    pub token: String,
    pub listen_addr: String,
    /// Empty: the address this host reaches `remote` from.
    pub advertise_addr: String,
    pub availability: String,
    pub description: NodeDescription,
}

/// The CA digest in `SWMTKN-1-<digest>-<secret>`.
pub fn token_digest(token: &str) -> Result<&str, ClusterError> {
    let rest = token
        .strip_prefix("SWMTKN-1-")
        .ok_or(ClusterError::MalformedToken)?;
    let (digest, secret) = rest.split_once('-').ok_or(ClusterError::MalformedToken)?;
    let base36 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    if digest.len() != 50 || secret.len() != 25 || !base36(digest) || !base36(secret) {
        return Err(ClusterError::MalformedToken);
    }
    Ok(digest)
}

impl Cluster {
    pub async fn join(self: &Arc<Self>, params: JoinParams) -> Result<(), ClusterError> {
        let mut membership = self.membership.write().await;
        if !matches!(&*membership, Membership::Inactive) {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let digest = token_digest(&params.token)?.to_string();
        let ca_pem = fetch_ca(&params.remote, &digest).await?;
        let listener = self.bind(&params.listen_addr).await?;
        let bound = listener.local_addr().map(|a| a.port()).unwrap_or(2377);
        let advertise_addr = match params.advertise_addr.as_str() {
            "" => join_host_port(&local_ip_towards(&params.remote)?, bound),
            given => self.advertised(given, &listener),
        };
        let (csr_pem, key_pem) = identity::new_request()?;
        let request = JoinRequest {
            token: params.token.clone(),
            csr_pem,
            advertise_addr: advertise_addr.clone(),
            availability: params.availability.clone(),
            description: params.description.clone(),
        };
        let joining = Peers::new(tls::joining_config(&ca_pem)?);
        let answer: JoinAnswer = joining
            .call(
                &params.remote,
                MANAGER_NAME,
                JOIN_PATH,
                &request,
                JOIN_TIMEOUT,
            )
            .await
            .map_err(join_refusal)?;
        remove_dir(&self.dir)?;
        let identity = Identity {
            ca_pem,
            cert_pem: answer.cert_pem,
            key_pem,
        };
        identity::save(&self.dir, &identity)?;
        let peers = Arc::new(Peers::new(tls::client_config(&identity)?));
        let mut managers = answer.managers;
        if !managers.contains(&params.remote) {
            managers.push(params.remote.clone());
        }
        let mut local = LocalNode {
            node_id: answer.node_id,
            listen_addr: params.listen_addr.clone(),
            advertise_addr,
            raft_id: 0,
            snapshot_interval: None,
            role: answer.role,
            managers,
        };
        self.start_port(listener, &identity)?;
        let Some(kit) = answer.manager else {
            write_local(&self.dir, &local)?;
            tracing::info!(node = %local.node_id, "joined the swarm as a worker");
            *membership = Membership::Worker(Arc::new(Worker::start(
                local,
                peers,
                self.executor.clone(),
                self.options.network.clone(),
            )));
            return Ok(());
        };
        local.raft_id = kit.raft_id;
        let manager = self
            .start_joining_manager(&local, &kit, peers.clone())
            .await?;
        *membership = Membership::Manager(manager.clone());
        // Raft's RPCs reach this node through `membership` from now on.
        drop(membership);
        let add = add_voter_request(&local);
        let added: Result<Empty, TransportError> = peers
            .call(
                &params.remote,
                MANAGER_NAME,
                ADD_VOTER_PATH,
                &add,
                JOIN_TIMEOUT,
            )
            .await;
        if let Err(error) = added {
            tracing::warn!(%error, "the leader did not add this manager to raft");
            self.undo_join(&manager).await;
            return Err(join_refusal(error));
        }
        wait_caught_up(&manager).await?;
        tracing::info!(node = %local.node_id, "joined the swarm as a manager");
        Ok(())
    }
}

/// What a new manager asks the leader: to be made a voter.
pub(super) fn add_voter_request(local: &LocalNode) -> AddVoter {
    AddVoter {
        node_id: local.node_id.clone(),
        raft_id: local.raft_id,
        addr: local.advertise_addr.clone(),
    }
}

impl Cluster {
    /// A node becoming a manager (a join, a promotion): the manager's keys
    /// from its kit, raft opened empty (the leader fills it once it adds
    /// this node), and the manager's loops started.
    pub(super) async fn start_joining_manager(
        &self,
        local: &LocalNode,
        kit: &super::wire::ManagerKit,
        peers: Arc<Peers>,
    ) -> Result<Arc<Manager>, ClusterError> {
        let keys = Arc::new(adopt_manager_keys(&self.dir, kit)?);
        let mut options = raft_options(local);
        options.codec = keys.codec()?;
        options.peers = Some(peers.clone());
        options.joining = true;
        let raft = RaftNode::open(&self.dir, local.raft_id, options).await?;
        write_local(&self.dir, local)?;
        Ok(Arc::new(Manager::start(
            local.clone(),
            raft,
            keys,
            self.executor.clone(),
            self.options.network.clone(),
            Some(peers),
        )))
    }

    /// A manager's join the leader refused: back to no swarm, nothing kept.
    async fn undo_join(&self, manager: &Arc<Manager>) {
        let mut membership = self.membership.write().await;
        if matches!(&*membership, Membership::Manager(m) if Arc::ptr_eq(m, manager)) {
            *membership = Membership::Inactive;
        }
        self.stop_port();
        manager.loops().cancel();
        let _ = remove_dir(&self.dir);
    }
}

/// Fetches the root CA from `remote` and checks it against the digest in
/// the token; only then is it trusted.
async fn fetch_ca(remote: &str, digest: &str) -> Result<String, ClusterError> {
    let fetching = Peers::new(tls::fetch_ca_config()?);
    let answer: CaAnswer = fetching
        .call(remote, MANAGER_NAME, CA_PATH, &Empty {}, CALL_TIMEOUT)
        .await
        .map_err(join_refusal)?;
    let fetched = RootCa {
        cert_pem: answer.ca_pem.clone(),
        key_pem: String::new(),
    };
    if fetched.token_digest() != digest {
        tracing::warn!(%remote, "the remote's root CA does not match the join token");
        return Err(ClusterError::CaMismatch(digest.to_string()));
    }
    Ok(answer.ca_pem)
}

/// A manager keeps the CA key (to sign certificates of joining nodes) and
/// the swarm's data key (to read secrets in the raft log).
pub(super) fn adopt_manager_keys(
    dir: &std::path::Path,
    kit: &super::wire::ManagerKit,
) -> Result<KeyStore, ClusterError> {
    write_private(
        &dir.join("ca.json"),
        &serde_json::to_vec(&kit.root_ca).unwrap_or_default(),
    )?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(kit.data_key.as_bytes())
        .map_err(|_| ClusterError::JoinRefused("the manager sent a bad data key".into()))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ClusterError::JoinRefused("the manager sent a bad data key".into()))?;
    Ok(KeyStore::adopt(dir, key, kit.unlock_key.clone())?)
}

/// A new manager answers once it knows the leader and has applied what
/// the leader had committed when it was added.
pub(super) async fn wait_caught_up(manager: &Manager) -> Result<(), ClusterError> {
    let waited = manager
        .raft_node()
        .raft()
        .wait(Some(JOIN_TIMEOUT))
        .metrics(
            |m| {
                m.current_leader.is_some()
                    && m.last_applied.is_some()
                    && m.last_applied.map(|l| l.index) == m.last_log_index
            },
            "joined manager caught up",
        )
        .await;
    waited.map(|_| ()).map_err(|_| ClusterError::JoinTimeout)
}

/// The manager's refusal as the CLI should show it.
fn join_refusal(error: TransportError) -> ClusterError {
    match error {
        TransportError::Refused { message, .. } => ClusterError::JoinRefused(message),
        other => ClusterError::Transport(other),
    }
}

/// The local address this host uses to reach `remote` (the engine
/// advertises it when `--advertise-addr` is not given to a join).
fn local_ip_towards(remote: &str) -> Result<String, ClusterError> {
    let probe = std::net::UdpSocket::bind(if remote.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })
    .and_then(|socket| {
        socket.connect(remote)?;
        socket.local_addr()
    });
    match probe {
        Ok(addr) => Ok(addr.ip().to_string()),
        Err(e) => Err(ClusterError::JoinRefused(format!(
            "could not find the local address to reach {}: {e}",
            host_of(remote)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_parsed_for_their_digest() {
        let root = RootCa::generate().unwrap();
        let token = crate::ca::new_join_token(&root).unwrap();
        assert_eq!(token_digest(&token).unwrap(), root.token_digest());
        for bad in ["", "SWMTKN-1-abc-def", "SWMTKN-2-1-x-y", "hello"] {
            assert!(matches!(
                token_digest(bad),
                Err(ClusterError::MalformedToken)
            ));
        }
    }
}
