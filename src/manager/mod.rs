//! The leader-only loops that turn services into running tasks:
//! `orchestrator` (desired tasks), `scheduler` (placement), and the
//! manager side of node sessions, `dispatcher`. Each reads the store and
//! writes through the Proposer; none keeps its own copy of cluster state.

pub mod dispatcher;
pub mod jobs;
pub mod orchestrator;
pub mod scheduler;
pub mod tasks;
pub mod updater;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{self, Executor};
use crate::network::NodeNetwork;
use crate::store::{Proposer, Store, Transaction, WatchItem, Watcher};

/// Reports the agent may queue before it waits for the dispatcher.
const REPORT_QUEUE: usize = 4096;

/// Starts what every manager runs, leader or not: the data plane, this
/// node's own session (its assignments read from the local store, its
/// reports committed through the proposer, which forwards to the leader)
/// and its agent. All end when `shutdown` fires. Returns where status
/// reports go, so reports of workers' agents can join the same batches.
pub fn start_node(
    node_id: String,
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    executor: Arc<dyn Executor>,
    network: NodeNetwork,
    shutdown: CancellationToken,
    running: &TaskTracker,
) -> mpsc::Sender<agent::StatusReport> {
    let (assignments_tx, assignments_rx) = watch::channel(Arc::new(Vec::new()));
    let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
    let spawn = |name: &'static str, task: BoxFuture<'static, ()>| {
        running.spawn(bounded_by_shutdown(name, task, shutdown.clone()));
    };
    spawn(
        "network",
        crate::network::run(
            network.clone(),
            node_id.clone(),
            store.clone(),
            shutdown.clone(),
        )
        .boxed(),
    );
    spawn(
        "dispatcher (assignments)",
        dispatcher::publish_assignments(
            node_id.clone(),
            store.clone(),
            // This node's data plane serves DNS on its networks' gateways.
            crate::network::Dns::OnGateways,
            assignments_tx,
            None,
            shutdown.clone(),
        )
        .boxed(),
    );
    spawn(
        "dispatcher (status)",
        dispatcher::commit_reports(store, proposer, reports_rx, shutdown.clone()).boxed(),
    );
    spawn(
        "agent",
        agent::run(
            node_id,
            executor,
            network,
            assignments_rx,
            reports_tx.clone(),
            shutdown.clone(),
        )
        .boxed(),
    );
    reports_tx
}

/// Starts the loops only the leader runs: orchestrator, scheduler, and the
/// allocation of the ingress network. They end when `term` fires (this node
/// stopped leading, or stops).
pub fn start_leader(
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    term: CancellationToken,
    running: &TaskTracker,
) {
    let spawn = |name: &'static str, task: BoxFuture<'static, ()>| {
        running.spawn(bounded_by_shutdown(name, task, term.clone()));
    };
    spawn(
        "orchestrator",
        orchestrator::run(store.clone(), proposer.clone(), term.clone()).boxed(),
    );
    spawn(
        "scheduler",
        scheduler::run(store.clone(), proposer.clone(), term.clone()).boxed(),
    );
    spawn(
        "ingress",
        crate::network::allocate::keep_ingress(store, proposer, term.clone()).boxed(),
    );
}

/// How long a loop may take to finish what it is doing once told to stop.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs a loop; once `shutdown` fires it gets `STOP_GRACE` to end by
/// itself, then it is dropped (cancelled at its current await), so leaving
/// the swarm or stopping shoal can never hang on one stuck engine call.
async fn bounded_by_shutdown(
    name: &'static str,
    task: BoxFuture<'static, ()>,
    shutdown: CancellationToken,
) {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        _ = task => tracing::debug!(loop = name, "stopped"),
        _ = deadline => tracing::warn!(loop = name, "did not stop within {STOP_GRACE:?}; cancelled"),
    }
}

/// Waits until the store changes (or `shutdown`), then lets a short burst of
/// further changes arrive so one reconcile covers them all. Returns false
/// at shutdown.
pub async fn wait_for_change(
    store: &Store,
    watcher: &mut Watcher,
    shutdown: &CancellationToken,
    wake_at: Option<tokio::time::Instant>,
) -> bool {
    let sleep = async {
        match wake_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => return false,
        item = watcher.next() => match item {
            Some(WatchItem::Event(_)) => {}
            // Lost events or a closed watch: restart from the store as it is.
            Some(WatchItem::Resync) | None => *watcher = store.watch_from(store.index()),
        },
        _ = sleep => {}
    }
    // Coalesce: take whatever else is already queued (one raft apply
    // publishes all its changes at once), but do not wait for more: every
    // millisecond here is on the path from `service create` to a container.
    tokio::task::yield_now().await;
    loop {
        match watcher.next().now_or_never() {
            Some(Some(WatchItem::Event(_))) => continue,
            Some(Some(WatchItem::Resync) | None) => {
                *watcher = store.watch_from(store.index());
                break;
            }
            None => break,
        }
    }
    !shutdown.is_cancelled()
}

/// Proposes a transaction built from the current store. When the store
/// refuses it because another write got in between (a stale version, an
/// object just reaped), builds it again from the new state and retries:
/// the loops' writes are idempotent plans, so a refusal is never final.
pub async fn propose_fresh(
    proposer: &Arc<dyn Proposer>,
    mut build: impl FnMut() -> Option<Transaction>,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..20u64 {
        let Some(tx) = build() else { return Ok(()) };
        match proposer.propose(tx).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) => last = error.to_string(),
            Err(error) => return Err(error.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(attempt * 5)).await;
    }
    Err(format!("gave up after 20 refusals, the last: {last}"))
}

/// `propose_fresh` for planners that read the whole store: each build runs
/// on a blocking thread, so a plan over tens of thousands of tasks never
/// holds the (by default single) runtime thread that answers `/_ping` and
/// every proxied call. Also returns what the last build reported beside
/// its transaction (the orchestrator's next wake-up).
pub async fn propose_planned<T: Send + 'static>(
    proposer: &Arc<dyn Proposer>,
    store: &Arc<Store>,
    build: fn(&Store) -> (Option<Transaction>, T),
) -> (Result<(), String>, Option<T>) {
    let mut last = String::new();
    let mut report = None;
    for attempt in 0..20u64 {
        let snapshot = Arc::clone(store);
        let (tx, extra) = match tokio::task::spawn_blocking(move || build(&snapshot)).await {
            Ok(built) => built,
            Err(error) => return (Err(format!("planning failed: {error}")), report),
        };
        report = Some(extra);
        let Some(tx) = tx else {
            return (Ok(()), report);
        };
        match proposer.propose(tx).await {
            Ok(Ok(_)) => return (Ok(()), report),
            Ok(Err(error)) => last = error.to_string(),
            Err(error) => return (Err(error.to_string()), report),
        }
        tokio::time::sleep(Duration::from_millis(attempt * 5)).await;
    }
    (
        Err(format!("gave up after 20 refusals, the last: {last}")),
        report,
    )
}

/// After a plan could not be committed, look again this soon even if the
/// store does not change.
pub const RETRY_AFTER: Duration = Duration::from_millis(200);
