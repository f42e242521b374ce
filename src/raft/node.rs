//! A raft node: sled under `<data_dir>/raft`, openraft on top, the store
//! as its state machine, and the [`Proposer`] the rest of shoal writes
//! through.

use crate::raft::db::{Closed, Db};
use crate::raft::log_store::LogStore;
use crate::raft::network::NoNetwork;
use crate::raft::state_machine::StateMachine;
use crate::raft::{RaftError, TypeConfig};
use crate::store::{ApplyOutcome, Codec, Identity, ProposeError, Proposer, Store, Transaction};
use futures_util::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How to open a node.
#[derive(Clone)]
pub struct NodeOptions {
    /// This node's cluster address (raft membership data).
    pub addr: String,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_every: u64,
    /// How objects are encoded on disk.
    pub codec: Arc<dyn Codec>,
    /// How long `open` waits to become leader and catch up.
    pub ready_timeout: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            addr: String::new(),
            snapshot_every: 5000,
            codec: Arc::new(Identity),
            ready_timeout: Duration::from_secs(10),
        }
    }
}

pub struct RaftNode {
    id: u64,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    log: LogStore,
    closed: Closed,
}

impl RaftNode {
    /// Open (or create) the node's storage and start raft. A fresh data dir
    /// is initialised as a one-voter cluster; an existing one is reloaded
    /// (snapshot + log tail). Returns once this node leads and has applied
    /// its whole log, so the store holds every acknowledged write.
    pub async fn open(data_dir: &Path, id: u64, opts: NodeOptions) -> Result<RaftNode, RaftError> {
        let (db, closed) = Db::open(&data_dir.join("raft"))?;
        let store = Store::with_codec(opts.codec.clone());
        let log = LogStore::open(db.clone(), opts.codec.clone())?;
        let sm = StateMachine::open(db, store.clone())?;
        let config = Config {
            cluster_name: "shoal".into(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
            ..Config::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| RaftError::Config(e.to_string()))?,
        );
        let raft = Raft::new(id, config, NoNetwork, log.clone(), sm)
            .await
            .map_err(|e| RaftError::Raft(e.to_string()))?;
        let node = RaftNode {
            id,
            raft,
            store,
            log,
            closed,
        };
        node.initialize_if_fresh(&opts.addr).await?;
        node.wait_ready(opts.ready_timeout).await?;
        Ok(node)
    }

    async fn initialize_if_fresh(&self, addr: &str) -> Result<(), RaftError> {
        let fresh = !self
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftError::Raft(e.to_string()))?;
        if fresh {
            let members = BTreeMap::from([(self.id, BasicNode::new(addr))]);
            self.raft
                .initialize(members)
                .await
                .map_err(|e| RaftError::Raft(e.to_string()))?;
        }
        Ok(())
    }

    /// Leader of our own one-voter cluster, with every log entry applied.
    async fn wait_ready(&self, timeout: Duration) -> Result<(), RaftError> {
        let id = self.id;
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    m.current_leader == Some(id)
                        && m.last_log_index.is_some()
                        && m.last_applied.map(|l| l.index) == m.last_log_index
                },
                "leader with log applied",
            )
            .await
            .map_err(|e| RaftError::NotReady(e.to_string()))?;
        Ok(())
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The replicated store this node applies to; read and watch it.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// The openraft handle (metrics, membership changes later).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Flushes that acknowledged log appends since open.
    pub fn flush_count(&self) -> u64 {
        self.log.flush_count()
    }

    /// Stop raft and wait until sled has closed the data dir, so it can be
    /// opened again at once.
    pub async fn shutdown(self) -> Result<(), RaftError> {
        let RaftNode {
            raft, log, closed, ..
        } = self;
        let stopped = raft.shutdown().await;
        drop((raft, log));
        closed.wait().await;
        stopped.map_err(|e| RaftError::Raft(e.to_string()))
    }

    async fn write(&self, tx: Transaction) -> Result<ApplyOutcome, ProposeError> {
        match self.raft.client_write(tx).await {
            Ok(resp) => Ok(resp.data),
            Err(OpenRaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(OpenRaftError::APIError(e)) => Err(ProposeError::Raft(e.to_string())),
            Err(OpenRaftError::Fatal(openraft::error::Fatal::Stopped)) => {
                Err(ProposeError::ShuttingDown)
            }
            Err(OpenRaftError::Fatal(e)) => Err(ProposeError::Raft(e.to_string())),
        }
    }
}

impl Proposer for RaftNode {
    fn propose(&self, tx: Transaction) -> BoxFuture<'_, Result<ApplyOutcome, ProposeError>> {
        Box::pin(self.write(tx))
    }
}
