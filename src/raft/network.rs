//! Raft RPCs between managers, over the cluster port ([`Peers`]). A node
//! without peers (a one-manager swarm opened before its transport, unit
//! tests) answers every RPC as Unreachable, which openraft retries later.

use std::sync::Arc;
use std::time::Duration;

use crate::raft::TypeConfig;
use crate::transport::tls::MANAGER_NAME;
use crate::transport::{Peers, TransportError};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The cluster-port paths raft uses.
pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";

/// Used when openraft gives no deadline (it always does today).
const DEFAULT_TTL: Duration = Duration::from_secs(5);

#[derive(Clone, Default)]
pub struct ClusterNetwork {
    peers: Option<Arc<Peers>>,
}

impl ClusterNetwork {
    pub fn new(peers: Option<Arc<Peers>>) -> ClusterNetwork {
        ClusterNetwork { peers }
    }
}

/// The placeholder a node without a transport uses.
pub type NoNetwork = ClusterNetwork;

pub struct PeerClient {
    target: u64,
    addr: String,
    peers: Option<Arc<Peers>>,
}

impl RaftNetworkFactory<TypeConfig> for ClusterNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

impl PeerClient {
    /// One RPC: the answer is the remote raft's own `Result`, so a remote
    /// refusal comes back as openraft's RemoteError.
    async fn rpc<Q, R, E>(
        &self,
        path: &str,
        request: &Q,
        option: &RPCOption,
    ) -> Result<R, RPCError<u64, BasicNode, E>>
    where
        Q: Serialize,
        R: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(peers) = &self.peers else {
            let why = std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("no cluster transport (peer {})", self.target),
            );
            return Err(RPCError::Unreachable(Unreachable::new(&why)));
        };
        let ttl = option.hard_ttl();
        let ttl = if ttl.is_zero() { DEFAULT_TTL } else { ttl };
        let answer: Result<Result<R, E>, TransportError> = peers
            .call(&self.addr, MANAGER_NAME, path, request, ttl)
            .await;
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            // Only a peer that cannot be reached makes openraft back off
            // (no heartbeats for 500 ms); a slow answer is retried at the
            // next heartbeat, or a loaded follower would call elections.
            Err(error @ TransportError::Unreachable { .. }) => {
                Err(RPCError::Unreachable(Unreachable::new(&error)))
            }
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(APPEND_PATH, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc(SNAPSHOT_PATH, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(VOTE_PATH, &rpc, &option).await
    }
}
