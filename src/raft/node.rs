//! A raft node: sled under `<data_dir>/raft`, openraft on top, the store
//! as its state machine, and the [`Proposer`] the rest of shoal writes
//! through.

use crate::raft::db::{Closed, Db};
use crate::raft::log_store::LogStore;
use crate::raft::network::NoNetwork;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Batch, RaftError, TypeConfig};
use crate::store::{ApplyOutcome, Codec, Identity, ProposeError, Proposer, Store, Transaction};
use futures_util::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

/// Most transactions one raft entry carries.
const MAX_BATCH: usize = 256;
/// Entries in flight at once: one flushing while the next gathers.
const IN_FLIGHT: usize = 2;
/// Proposals waiting for a batch; callers wait beyond that (backpressure).
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<ApplyOutcome, ProposeError>>;

/// How to open a node.
#[derive(Clone)]
pub struct NodeOptions {
    /// This node's cluster address (raft membership data).
    pub addr: String,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a
    /// little (cheaper than sending them the snapshot).
    pub keep_after_snapshot: u64,
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
            keep_after_snapshot: 500,
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
    proposals: mpsc::Sender<(Transaction, Reply)>,
    batcher: JoinHandle<()>,
}

impl RaftNode {
    /// Open (or create) the node's storage and start raft. A fresh data dir
    /// is initialised as a one-voter cluster; an existing one is reloaded
    /// (snapshot + log tail). Returns once this node leads and has applied
    /// its whole log, so the store holds every acknowledged write.
    pub async fn open(data_dir: &Path, id: u64, opts: NodeOptions) -> Result<RaftNode, RaftError> {
        let t0 = std::time::Instant::now();
        let (db, closed) = Db::open(&data_dir.join("raft")).await?;
        let store = Store::with_codec(opts.codec.clone());
        let log = LogStore::open(db.clone(), opts.codec.clone())?;
        let sm = StateMachine::open(db, store.clone())?;
        tracing::debug!(took = ?t0.elapsed(), "raft storage loaded");
        let config = Config {
            cluster_name: "shoal".into(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
            max_in_snapshot_log_to_keep: opts.keep_after_snapshot,
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
        let (proposals, queue) = mpsc::channel(QUEUE);
        let batcher = tokio::spawn(batch_loop(raft.clone(), queue));
        let node = RaftNode {
            id,
            raft,
            store,
            log,
            closed,
            proposals,
            batcher,
        };
        node.initialize_if_fresh(&opts.addr).await?;
        node.wait_ready(opts.ready_timeout).await?;
        tracing::info!(took = ?t0.elapsed(), index = node.store.index(), "raft node ready");
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
            raft,
            log,
            closed,
            proposals,
            batcher,
            ..
        } = self;
        // Let queued proposals finish, then stop raft.
        drop(proposals);
        let _ = batcher.await;
        let stopped = raft.shutdown().await;
        drop((raft, log));
        closed.wait().await;
        stopped.map_err(|e| RaftError::Raft(e.to_string()))
    }

    async fn write(&self, tx: Transaction) -> Result<ApplyOutcome, ProposeError> {
        let (reply, outcome) = oneshot::channel();
        self.proposals
            .send((tx, reply))
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        outcome.await.map_err(|_| ProposeError::ShuttingDown)?
    }
}

/// Group commit: whatever proposals queued up while earlier entries were
/// being written go into the next entry together.
async fn batch_loop(raft: Raft<TypeConfig>, mut queue: mpsc::Receiver<(Transaction, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut pending = Vec::new();
    loop {
        // Wait for a free slot first, so proposals gather meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut pending, MAX_BATCH).await == 0 {
            break;
        }
        let (txs, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut pending).into_iter().unzip();
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, txs, replies).await;
            drop(slot);
        });
    }
    // Wait for the entries still in flight before reporting done.
    let _ = slots.acquire_many(IN_FLIGHT as u32).await;
}

async fn commit(raft: &Raft<TypeConfig>, txs: Vec<Transaction>, replies: Vec<Reply>) {
    let count = txs.len();
    let outcomes: Vec<Result<ApplyOutcome, ProposeError>> =
        match raft.client_write(Batch(txs)).await {
            Ok(resp) if resp.data.len() == count => resp.data.into_iter().map(Ok).collect(),
            Ok(resp) => {
                let e = ProposeError::Raft(format!(
                    "{} outcomes for {count} transactions",
                    resp.data.len()
                ));
                vec![Err(e); count]
            }
            Err(e) => vec![Err(propose_error(e)); count],
        };
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // The proposer may have given up waiting; nothing to do then.
        let _ = reply.send(outcome);
    }
}

fn propose_error(e: OpenRaftError<u64, ClientWriteError<u64, BasicNode>>) -> ProposeError {
    match e {
        OpenRaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
            leader: f.leader_id,
        },
        OpenRaftError::APIError(e) => ProposeError::Raft(e.to_string()),
        OpenRaftError::Fatal(openraft::error::Fatal::Stopped) => ProposeError::ShuttingDown,
        OpenRaftError::Fatal(e) => ProposeError::Raft(e.to_string()),
    }
}

impl Proposer for RaftNode {
    fn propose(&self, tx: Transaction) -> BoxFuture<'_, Result<ApplyOutcome, ProposeError>> {
        Box::pin(self.write(tx))
    }
}
