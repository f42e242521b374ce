//! A raft node: sled under `<data_dir>/raft`, openraft on top, the store
//! as its state machine, and the [`Proposer`] the rest of shoal writes
//! through.

use crate::raft::db::{Closed, Db};
use crate::raft::log_store::LogStore;
use crate::raft::network::ClusterNetwork;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Batch, RaftError, TypeConfig};
use crate::store::{ApplyOutcome, Codec, Identity, ProposeError, Proposer, Store, Transaction};
use crate::transport::tls::MANAGER_NAME;
use crate::transport::{Peers, TransportError};
use futures_util::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    /// How long `open` waits for a leader and to catch up.
    pub ready_timeout: Duration,
    /// The other managers, over the cluster port; `None` without a
    /// transport (every RPC is then Unreachable).
    pub peers: Option<Arc<Peers>>,
    /// A node joining an existing cluster: its raft starts empty and is
    /// neither initialised nor waited for; the leader adds it.
    pub joining: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            addr: String::new(),
            snapshot_every: 5000,
            keep_after_snapshot: 500,
            codec: Arc::new(Identity),
            ready_timeout: Duration::from_secs(10),
            peers: None,
            joining: false,
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
    /// Where the log lives, whose free space every write checks first.
    raft_dir: PathBuf,
}

impl RaftNode {
    /// Open (or create) the node's storage and start raft. A fresh data dir
    /// is initialised as a one-voter cluster; an existing one is reloaded
    /// (snapshot + log tail). Returns once this node leads and has applied
    /// its whole log, so the store holds every acknowledged write.
    pub async fn open(data_dir: &Path, id: u64, opts: NodeOptions) -> Result<RaftNode, RaftError> {
        let t0 = std::time::Instant::now();
        let raft_dir = data_dir.join("raft");
        let (db, closed) = Db::open(&raft_dir).await?;
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
        let network = ClusterNetwork::new(opts.peers.clone());
        let raft = Raft::new(id, config, network, log.clone(), sm)
            .await
            .map_err(|e| RaftError::Raft(e.to_string()))?;
        let (proposals, queue) = mpsc::channel(QUEUE);
        let forward = Forward {
            peers: opts.peers.clone(),
            store: store.clone(),
        };
        let batcher = tokio::spawn(batch_loop(raft.clone(), forward, queue));
        let node = RaftNode {
            id,
            raft,
            store,
            log,
            closed,
            proposals,
            batcher,
            raft_dir,
        };
        if opts.joining {
            return Ok(node);
        }
        node.initialize_if_fresh(&opts.addr).await?;
        // One of several managers, restarted: it must not wait here, since
        // until the caller installs it the cluster port cannot answer the
        // leader's appends, and a follower that hears no leader calls
        // elections that knock the real leader down. The leader catches it
        // up as soon as it answers.
        if node.voters() > 1 {
            tracing::info!(took = ?t0.elapsed(), index = node.store.index(), "raft node open; catching up from the leader");
            return Ok(node);
        }
        match node.wait_ready(opts.ready_timeout).await {
            Ok(()) => {}
            // One of several managers, restarted while the others are away:
            // it serves reads and says there is no leader until they return.
            Err(error) if node.voters() > 1 => {
                tracing::warn!(%error, "no raft leader yet; going on as a follower")
            }
            Err(error) => return Err(error),
        }
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

    /// The voters of the membership this node knows.
    pub fn voters(&self) -> usize {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count()
    }

    /// A leader is known (this node, in a one-voter cluster), and every
    /// log entry this node has is applied.
    async fn wait_ready(&self, timeout: Duration) -> Result<(), RaftError> {
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    m.current_leader.is_some()
                        && m.last_log_index.is_some()
                        && m.last_applied.map(|l| l.index) == m.last_log_index
                },
                "leader known with log applied",
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

    /// Whether the log has room for more entries: checked before this
    /// node writes anything raft could fail on, its own proposals and the
    /// entries or snapshots a leader sends it (openraft stops for good at a
    /// failed log write; refusing first keeps the node in the cluster).
    pub fn room_for_entries(&self) -> Result<(), ProposeError> {
        enough_space(&self.raft_dir)
    }

    async fn write(&self, tx: Transaction) -> Result<ApplyOutcome, ProposeError> {
        self.room_for_entries()?;
        let (reply, outcome) = oneshot::channel();
        self.proposals
            .send((tx, reply))
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        outcome.await.map_err(|_| ProposeError::ShuttingDown)?
    }
}

/// Free space a write needs under the log: room for sled to start a new
/// segment and flush (a log write that meets a full disk stops raft until
/// shoal restarts; refusing before it keeps the node serving).
const SPACE_RESERVE: u64 = 4 * 1024 * 1024;

/// Refuses a write while the log's file system has less than
/// [`SPACE_RESERVE`] free. statvfs is a metadata call, cheap enough inline.
fn enough_space(raft_dir: &Path) -> Result<(), ProposeError> {
    match crate::fsutil::available_bytes(raft_dir) {
        Ok(free) if free < SPACE_RESERVE => Err(ProposeError::NoSpace(format!(
            "{} has {free} bytes free; writes need {SPACE_RESERVE}",
            raft_dir.display()
        ))),
        // Unknown free space is not a reason to refuse.
        _ => Ok(()),
    }
}

/// Group commit: whatever proposals queued up while earlier entries were
/// being written go into the next entry together.
async fn batch_loop(
    raft: Raft<TypeConfig>,
    forward: Forward,
    mut queue: mpsc::Receiver<(Transaction, Reply)>,
) {
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
        let forward = forward.clone();
        tokio::spawn(async move {
            commit(&raft, &forward, txs, replies).await;
            drop(slot);
        });
    }
    // Wait for the entries still in flight before reporting done.
    let _ = slots.acquire_many(IN_FLIGHT as u32).await;
}

async fn commit(
    raft: &Raft<TypeConfig>,
    forward: &Forward,
    txs: Vec<Transaction>,
    replies: Vec<Reply>,
) {
    let count = txs.len();
    if lost_quorum(raft) {
        return reply_all(replies, Err(ProposeError::NoLeader));
    }
    let written = tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(Batch(txs.clone()))).await;
    let Ok(written) = written else {
        return reply_all(replies, Err(ProposeError::NoLeader));
    };
    let outcomes = match written {
        Ok(resp) => resp.data,
        Err(OpenRaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
            match to.leader_node {
                Some(leader) => match forward.to_leader(raft, &leader.addr, txs).await {
                    Ok(outcomes) => outcomes,
                    Err(e) => return reply_all(replies, Err(e)),
                },
                None => return reply_all(replies, Err(ProposeError::NoLeader)),
            }
        }
        Err(e) => return reply_all(replies, Err(propose_error(e))),
    };
    if outcomes.len() != count {
        let e = ProposeError::Raft(format!(
            "{} outcomes for {count} transactions",
            outcomes.len()
        ));
        return reply_all(replies, Err(e));
    }
    let outcomes: Vec<Result<ApplyOutcome, ProposeError>> = outcomes.into_iter().map(Ok).collect();
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // The proposer may have given up waiting; nothing to do then.
        let _ = reply.send(outcome);
    }
}

/// A leader that has heard from no quorum for this long no longer takes
/// writes: they could never commit (swarmkit's leader steps down then).
const QUORUM_LOST_AFTER_MS: u64 = 3_000;
/// A write not committed by then is answered as "no leader" (a quorum
/// went away while it waited).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn lost_quorum(raft: &Raft<TypeConfig>) -> bool {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    // A lone voter is its own quorum (its ack time only moves on writes).
    let alone = m.membership_config.membership().voter_ids().count() <= 1;
    !alone
        && m.state == openraft::ServerState::Leader
        && m.millis_since_quorum_ack
            .is_some_and(|ms| ms > QUORUM_LOST_AFTER_MS)
}

fn reply_all(replies: Vec<Reply>, outcome: Result<ApplyOutcome, ProposeError>) {
    for reply in replies {
        let _ = reply.send(outcome.clone());
    }
}

/// The cluster-port path a follower forwards writes to.
pub const PROPOSE_PATH: &str = "/raft/propose";
/// How long a forwarded write may take, commit and apply included.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// What the leader answers a forwarded batch with: the store's verdict on
/// each transaction, and an index its store had applied them by.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Forwarded {
    pub outcomes: Vec<ApplyOutcome>,
    pub applied: u64,
}

/// Writes on a follower go to the leader over the cluster port; the
/// answer waits until this node's own store has applied them too, so a
/// client reads its own writes through any manager.
#[derive(Clone)]
struct Forward {
    peers: Option<Arc<Peers>>,
    store: Arc<Store>,
}

impl Forward {
    async fn to_leader(
        &self,
        raft: &Raft<TypeConfig>,
        leader: &str,
        txs: Vec<Transaction>,
    ) -> Result<Vec<ApplyOutcome>, ProposeError> {
        let Some(peers) = &self.peers else {
            return Err(ProposeError::NoLeader);
        };
        let answer: Result<Forwarded, TransportError> = peers
            .call(
                leader,
                MANAGER_NAME,
                PROPOSE_PATH,
                &Batch(txs),
                FORWARD_TIMEOUT,
            )
            .await;
        let forwarded = match answer {
            Ok(forwarded) => forwarded,
            Err(TransportError::Refused { message, .. }) => {
                return Err(ProposeError::Raft(message))
            }
            Err(e) if e.is_unreachable() => return Err(ProposeError::NoLeader),
            Err(e) => return Err(ProposeError::Raft(e.to_string())),
        };
        if self.store.index() < forwarded.applied {
            let waited = raft
                .wait(Some(FORWARD_TIMEOUT))
                .applied_index_at_least(Some(forwarded.applied), "forwarded write applied")
                .await;
            if let Err(e) = waited {
                tracing::warn!(error = %e, "a forwarded write is not applied here yet");
            }
        }
        Ok(forwarded.outcomes)
    }
}

fn propose_error(e: OpenRaftError<u64, ClientWriteError<u64, BasicNode>>) -> ProposeError {
    match e {
        OpenRaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ProposeError::NoLeader,
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
