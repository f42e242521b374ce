//! The agent loop: one owner of the per-task state (this loop), engine
//! operations in spawned tasks that report back over a channel, engine
//! events, and a full resync against the engine's own containers after
//! every (re)subscription to its events.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bollard::models::{
    ContainerCreateBody, ContainerStatus, EndpointPortConfig, EndpointPortConfigPublishModeEnum,
    PortStatus, TaskState, TaskStatus,
};
use futures_util::stream::{BoxStream, Peekable, StreamExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::files;
use super::spec::{self, NodeInfo};
use super::stops::{self, StopsInFlight};
use super::{
    AgentError, Assignment, ContainerInfo, EngineEvent, ExecResult, Executor, HostPort, RunState,
    StatusReport,
};
use crate::network::NodeNetwork;
use crate::types::Timestamp;

/// Containers created and started at the same time.
pub(crate) const START_CONCURRENCY: usize = 8;
/// Containers stopped at the same time (each may wait its grace period).
pub(crate) const STOP_CONCURRENCY: usize = 64;
/// A pull of the same image finished this recently is not repeated.
const PULL_REUSE: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(crate) use crate::types::task_state_rank as rank;

fn terminal(s: TaskState) -> bool {
    rank(s) >= rank(TaskState::COMPLETE)
}

/// swarm's status message for reaching a state.
fn message_for(s: TaskState) -> &'static str {
    match s {
        TaskState::ACCEPTED => "accepted",
        TaskState::PREPARING => "preparing",
        TaskState::READY => "prepared",
        TaskState::STARTING => "starting",
        TaskState::RUNNING => "started",
        TaskState::COMPLETE => "finished",
        TaskState::SHUTDOWN => "shutdown",
        _ => "",
    }
}

/// A running task's published host ports, as swarm's agent reports them:
/// one entry per binding of the container (recorded: ports-verbose/05).
fn port_status(state: TaskState, ports: &[HostPort]) -> Option<PortStatus> {
    if state != TaskState::RUNNING || ports.is_empty() {
        return None;
    }
    let ports = ports
        .iter()
        .map(|p| EndpointPortConfig {
            protocol: p.protocol.parse().ok(),
            target_port: Some(p.target),
            published_port: Some(p.published),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            ..Default::default()
        })
        .collect();
    Some(PortStatus { ports: Some(ports) })
}

/// What the agent knows of a task's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No container known.
    None,
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    /// accepted → preparing → pull → create (→ start when `start`).
    Prepare,
    Start,
    /// stop, report shutdown, remove.
    Shutdown,
}

struct TaskRt {
    /// `None` once the task left the assignment set.
    assignment: Option<Arc<Assignment>>,
    /// The furthest state the store has or we reported.
    reported: TaskState,
    message: String,
    container: Option<String>,
    phase: Phase,
    pid: i64,
    exit_code: Option<i64>,
    op: Option<(OpKind, CancellationToken)>,
    /// We are stopping the container: its die/destroy events are ours.
    stopping: bool,
    health_gated: bool,
    healthy: bool,
    /// The container's host port bindings, for the task's PortStatus.
    host_ports: Vec<HostPort>,
}

impl TaskRt {
    fn desired(&self) -> Option<TaskState> {
        self.assignment
            .as_ref()
            .map(|a| a.task.desired_state.unwrap_or(TaskState::RUNNING))
    }

    fn wants_stop(&self) -> bool {
        match self.desired() {
            None => true,
            Some(d) => rank(d) > rank(TaskState::RUNNING),
        }
    }
}

enum OpMsg {
    Progress {
        task_id: String,
        state: TaskState,
        exit_code: Option<i64>,
    },
    Created {
        task_id: String,
        container: String,
    },
    Done {
        task_id: String,
        result: OpResult,
    },
    OrphanRemoved {
        container: String,
    },
}

enum OpResult {
    Prepared,
    Started(Option<ContainerInfo>),
    /// `kept`: the container stays (stopped) while its task is in the
    /// task history, for `service logs`.
    Stopped {
        exit_code: Option<i64>,
        kept: bool,
    },
    Cancelled,
    Failed(AgentError),
}

/// What a pull did to the image's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pulled {
    /// No registry, no such image there, …: the tag stays where it was.
    Failed,
    Unchanged,
    /// The tag now names another image.
    Moved,
}

/// When the last pull of an image finished, and what it did.
type LastPull = Option<(Instant, Pulled)>;

/// At most one pull per image at a time; a pull that just finished (either
/// way) is not repeated for [`PULL_REUSE`].
#[derive(Default)]
struct Puller {
    images: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<LastPull>>>>,
}

impl Puller {
    /// Pulls `image`, or reuses what a pull just done found.
    async fn pull(&self, exec: &dyn Executor, image: &str) -> Pulled {
        let lock = {
            let mut map = match self.images.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            map.entry(image.to_string()).or_default().clone()
        };
        let mut last = lock.lock().await;
        if let Some((at, pulled)) = *last {
            if at.elapsed() < PULL_REUSE {
                return pulled;
            }
        }
        let before = exec.image_id(image).await.ok().flatten();
        let pulled = match exec.pull(image).await {
            Ok(()) => {
                // An image that was not here could not be used before.
                let after = exec.image_id(image).await.ok().flatten();
                if before.is_none() || after == before {
                    Pulled::Unchanged
                } else {
                    Pulled::Moved
                }
            }
            Err(e) => {
                tracing::debug!(image, error = %e, "pull failed; using the local image if any");
                Pulled::Failed
            }
        };
        *last = Some((Instant::now(), pulled));
        pulled
    }
}

type Events = Peekable<BoxStream<'static, ExecResult<EngineEvent>>>;

struct Agent {
    node: Arc<NodeInfo>,
    exec: Arc<dyn Executor>,
    network: NodeNetwork,
    reports: mpsc::Sender<StatusReport>,
    shutdown: CancellationToken,
    tasks: HashMap<String, TaskRt>,
    ops: JoinSet<()>,
    op_tx: mpsc::UnboundedSender<OpMsg>,
    start_permits: Arc<Semaphore>,
    stop_permits: Arc<Semaphore>,
    stops: Arc<StopsInFlight>,
    puller: Arc<Puller>,
    files: Arc<files::TaskFiles>,
    /// Orphan containers being removed.
    removing: HashSet<String>,
    events: Option<Events>,
    /// The engine's containers have been listed since the last subscription.
    synced: bool,
    backoff: Duration,
}

/// Runs until `shutdown` fires. `assignments` always holds the full current
/// set of tasks assigned to this node (any desired state); the agent makes
/// the engine match it and sends status changes on `reports`.
///
/// The value the channel was created with is trusted only when it is not
/// empty or has been marked changed: an empty initial set is taken as "not
/// known yet", so a restart never removes containers before the dispatcher
/// has sent the node's real set (send it even when it is empty).
pub async fn run(
    node_id: String,
    executor: Arc<dyn Executor>,
    network: NodeNetwork,
    mut assignments: watch::Receiver<Arc<Vec<Assignment>>>,
    reports: mpsc::Sender<StatusReport>,
    shutdown: CancellationToken,
) {
    let (op_tx, mut op_rx) = mpsc::unbounded_channel();
    let mut agent = Agent {
        node: Arc::new(NodeInfo::local(&node_id)),
        exec: executor,
        network,
        reports,
        shutdown: shutdown.clone(),
        tasks: HashMap::new(),
        ops: JoinSet::new(),
        op_tx,
        start_permits: Arc::new(Semaphore::new(START_CONCURRENCY)),
        stop_permits: Arc::new(Semaphore::new(STOP_CONCURRENCY)),
        stops: Arc::default(),
        puller: Arc::new(Puller::default()),
        files: Arc::new(files::TaskFiles::new(&node_id)),
        removing: HashSet::new(),
        events: None,
        synced: false,
        backoff: BACKOFF_MIN,
    };

    // Wait for an authoritative assignment set.
    let known = assignments.has_changed().unwrap_or(false) || !assignments.borrow().is_empty();
    if !known {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = assignments.changed() => if r.is_err() {
                // The dispatcher went away before sending anything.
                shutdown.cancelled().await;
                return;
            },
        }
    }
    let current = assignments.borrow_and_update().clone();
    agent.set_assignments(&current);
    agent
        .network
        .follow_overlays(current.iter().map(|a| &a.networking), &shutdown);

    let mut assignments_open = true;
    let mut retry_at = tokio::time::Instant::now();
    loop {
        if agent.synced {
            agent.reconcile().await;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(msg) = op_rx.recv() => agent.on_op(msg).await,
            r = assignments.changed(), if assignments_open => {
                if r.is_err() {
                    assignments_open = false;
                } else {
                    let current = assignments.borrow_and_update().clone();
                    agent.set_assignments(&current);
                    agent
                        .network
                        .follow_overlays(current.iter().map(|a| &a.networking), &shutdown);
                }
            }
            ev = next_event(&mut agent.events) => match ev {
                Some(Ok(ev)) => agent.on_event(ev).await,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "engine event stream failed; re-subscribing");
                    retry_at = agent.lost_engine();
                }
                None => {
                    tracing::warn!("engine event stream ended; re-subscribing");
                    retry_at = agent.lost_engine();
                }
            },
            _ = tokio::time::sleep_until(retry_at), if agent.events.is_none() => {
                if let Err(e) = agent.subscribe_and_resync().await {
                    tracing::warn!(error = %e, "cannot sync with the engine; retrying");
                    retry_at = agent.lost_engine();
                } else {
                    agent.backoff = BACKOFF_MIN;
                }
            }
            Some(joined) = agent.ops.join_next(), if !agent.ops.is_empty() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::error!(error = %e, "agent operation panicked; resyncing");
                        agent.clear_ops();
                        retry_at = agent.lost_engine();
                    }
                }
            }
        }
    }
    // Containers outlive shoal: stop nothing, just end the operations.
    agent.ops.shutdown().await;
}

async fn next_event(events: &mut Option<Events>) -> Option<ExecResult<EngineEvent>> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Agent {
    fn set_assignments(&mut self, set: &[Assignment]) {
        let mut present = HashSet::with_capacity(set.len());
        for a in set {
            let id = spec::task_id(a);
            if id.is_empty() {
                continue;
            }
            present.insert(id.to_string());
            let store_state = a
                .task
                .status
                .as_ref()
                .and_then(|s| s.state)
                .unwrap_or(TaskState::ASSIGNED);
            let store_message = a
                .task
                .status
                .as_ref()
                .and_then(|s| s.message.clone())
                .unwrap_or_default();
            let rt = self.tasks.entry(id.to_string()).or_insert_with(|| TaskRt {
                assignment: None,
                reported: store_state,
                message: store_message.clone(),
                container: None,
                phase: Phase::None,
                pid: 0,
                exit_code: None,
                op: None,
                stopping: false,
                health_gated: false,
                healthy: false,
                host_ports: Vec::new(),
            });
            if rank(store_state) > rank(rt.reported) {
                rt.reported = store_state;
                rt.message = store_message;
            }
            if rt.assignment.as_deref() != Some(a) {
                rt.assignment = Some(Arc::new(a.clone()));
            }
        }
        for (id, rt) in self.tasks.iter_mut() {
            if !present.contains(id) {
                rt.assignment = None;
            }
        }
    }

    /// The engine connection broke: drop the subscription, resync later.
    fn lost_engine(&mut self) -> tokio::time::Instant {
        self.events = None;
        self.synced = false;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        tokio::time::Instant::now() + wait
    }

    fn clear_ops(&mut self) {
        for rt in self.tasks.values_mut() {
            rt.op = None;
        }
        self.removing.clear();
    }

    async fn subscribe_and_resync(&mut self) -> ExecResult<()> {
        let mut events: Events = self.exec.events(&self.node.id).peekable();
        // Poll once so the subscription is in place before the listing.
        let first =
            tokio::time::timeout(Duration::from_millis(100), Pin::new(&mut events).peek()).await;
        match first {
            Ok(None) => return Err(AgentError::Unreachable("event stream ended".to_string())),
            Ok(Some(Err(e))) => return Err(AgentError::Unreachable(e.to_string())),
            Ok(Some(Ok(_))) | Err(_) => {}
        }
        self.events = Some(events);
        self.resync().await?;
        self.synced = true;
        Ok(())
    }

    /// Compare what the engine has with what we track: adopt, note exits
    /// and vanished containers, remove orphans.
    async fn resync(&mut self) -> ExecResult<()> {
        let list = self.exec.list_own(&self.node.id).await?;
        let mut seen: HashSet<String> = HashSet::new();
        for c in list {
            let Some(task_id) = c.task_id().map(str::to_string) else {
                continue; // ours by label but not a task container
            };
            let Some(rt) = self.tasks.get_mut(&task_id) else {
                self.remove_orphan(c.id.clone());
                continue;
            };
            if rt.op.is_some() {
                if let Some(id) = &rt.container {
                    seen.insert(id.clone());
                }
                continue;
            }
            if rt.container.as_ref().is_some_and(|cur| *cur != c.id) {
                // A second container for one task: keep the one we track.
                self.remove_orphan(c.id.clone());
                continue;
            }
            seen.insert(c.id.clone());
            rt.container = Some(c.id.clone());
            match c.state {
                RunState::Created => rt.phase = Phase::Created,
                RunState::Running => {
                    if rt.phase != Phase::Running || rt.pid == 0 {
                        if let Some(info) = self.exec.inspect(&c.id).await? {
                            rt.pid = info.pid;
                            rt.host_ports = info.host_ports;
                            rt.health_gated = info.health.is_some();
                            rt.healthy = info.health.as_deref() == Some("healthy");
                        }
                    }
                    rt.phase = Phase::Running;
                }
                RunState::Exited => {
                    if rt.phase != Phase::Exited {
                        let code = match self.exec.inspect(&c.id).await? {
                            Some(info) => info.exit_code,
                            None => None,
                        };
                        let id = c.id.clone();
                        self.container_exited(&task_id, &id, code).await;
                    }
                }
            }
        }
        // Tracked containers the engine no longer has.
        let gone: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, rt)| rt.op.is_none())
            .filter(|(_, rt)| match &rt.container {
                Some(id) => !seen.contains(id),
                // The store says the container existed, but there is none.
                None => {
                    rt.assignment.is_some()
                        && !rt.stopping
                        && rank(rt.reported) >= rank(TaskState::READY)
                        && !terminal(rt.reported)
                }
            })
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in gone {
            let what = self
                .tasks
                .get(&task_id)
                .and_then(|rt| rt.container.clone())
                .unwrap_or_else(|| task_id.clone());
            self.container_vanished(&task_id, &what).await;
        }
        Ok(())
    }

    fn remove_orphan(&mut self, container: String) {
        if !self.removing.insert(container.clone()) {
            return;
        }
        tracing::info!(container = %container, "removing a task container no task claims");
        let exec = self.exec.clone();
        let tx = self.op_tx.clone();
        let permits = self.stop_permits.clone();
        self.ops.spawn(async move {
            let _permit = permits.acquire_owned().await;
            if let Err(e) = exec.remove(&container).await {
                tracing::warn!(container = %container, error = %e, "cannot remove orphan container");
            }
            let _ = tx.send(OpMsg::OrphanRemoved { container });
        });
    }

    // ------------------------------------------------------------ reports

    /// Send `state` if it moves the task forward; failures carry `err`.
    async fn report(&mut self, task_id: &str, state: TaskState, err: Option<String>) {
        let Some(rt) = self.tasks.get_mut(task_id) else {
            return;
        };
        if rank(state) <= rank(rt.reported) || terminal(rt.reported) {
            return;
        }
        let message = match message_for(state) {
            "" => rt.message.clone(),
            m => m.to_string(),
        };
        rt.reported = state;
        rt.message = message.clone();
        // A failure before any container (a missing image) still carries an
        // empty ContainerStatus, as swarm's agent reports it (recorded:
        // task-status/09).
        let container = match (&rt.container, &err) {
            (Some(id), _) => Some(id.clone()),
            (None, Some(_)) => Some(String::new()),
            (None, None) => None,
        };
        let container_status = container.map(|id| ContainerStatus {
            container_id: Some(id),
            pid: Some(if rt.phase == Phase::Running {
                rt.pid
            } else {
                0
            }),
            exit_code: Some(rt.exit_code.unwrap_or(0)),
        });
        let status = TaskStatus {
            timestamp: Some(Timestamp::from_system(SystemTime::now()).to_rfc3339()),
            state: Some(state),
            message: Some(message),
            err,
            container_status,
            port_status: port_status(state, &rt.host_ports),
        };
        let report = StatusReport {
            task_id: task_id.to_string(),
            status,
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            r = self.reports.send(report) => if r.is_err() {
                tracing::debug!("status receiver gone; report dropped");
            },
        }
    }

    /// A failure: `rejected` before the container was started, `failed` after.
    async fn fail(&mut self, task_id: &str, err: String) {
        let Some(rt) = self.tasks.get(task_id) else {
            return;
        };
        let state = if rank(rt.reported) < rank(TaskState::STARTING) {
            TaskState::REJECTED
        } else {
            TaskState::FAILED
        };
        self.report(task_id, state, Some(err)).await;
    }

    async fn container_exited(&mut self, task_id: &str, container: &str, code: Option<i64>) {
        let Some(rt) = self.tasks.get_mut(task_id) else {
            return;
        };
        if rt.container.as_deref().is_some_and(|c| c != container) {
            return; // an old container of this task
        }
        rt.container = Some(container.to_string());
        rt.phase = Phase::Exited;
        rt.pid = 0;
        rt.exit_code = code.or(rt.exit_code);
        if rt.stopping || terminal(rt.reported) {
            return;
        }
        // A container that exits was started: swarm's agent has reported it
        // running by then (its exit is only waited for after the start), so
        // a failure keeps the message "started" even when the exit is seen
        // before the start operation ends. A health check instead holds the
        // start until healthy, and a death then fails it while "starting".
        if !rt.health_gated && rank(rt.reported) >= rank(TaskState::STARTING) {
            rt.message = message_for(TaskState::RUNNING).to_string();
        }
        match rt.exit_code.unwrap_or(0) {
            0 => self.report(task_id, TaskState::COMPLETE, None).await,
            n => {
                let rt_state = TaskState::FAILED;
                self.report(
                    task_id,
                    rt_state,
                    Some(format!("task: non-zero exit ({n})")),
                )
                .await
            }
        }
    }

    async fn container_vanished(&mut self, task_id: &str, container: &str) {
        let Some(rt) = self.tasks.get_mut(task_id) else {
            return;
        };
        rt.container = None;
        rt.phase = Phase::None;
        rt.pid = 0;
        let quiet = rt.stopping || terminal(rt.reported);
        if rt.assignment.is_none() && rt.op.is_none() {
            self.tasks.remove(task_id);
            return;
        }
        if !quiet {
            self.fail(task_id, format!("No such container: {container}"))
                .await;
        }
    }

    // ------------------------------------------------------------- events

    async fn on_event(&mut self, ev: EngineEvent) {
        match ev {
            EngineEvent::Die {
                id,
                task_id: Some(task_id),
                exit_code,
            } => {
                if self
                    .tasks
                    .get(&task_id)
                    .is_some_and(|rt| rt.op.is_some() && rt.container.is_none())
                {
                    // Created by an operation that has not told us yet.
                    if let Some(rt) = self.tasks.get_mut(&task_id) {
                        rt.container = Some(id.clone());
                    }
                }
                self.container_exited(&task_id, &id, exit_code).await;
            }
            EngineEvent::Health {
                id,
                task_id: Some(task_id),
                healthy,
            } => {
                let Some(rt) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                if rt.container.as_deref().is_some_and(|c| c != id) {
                    return;
                }
                rt.health_gated = true;
                rt.healthy = healthy;
                if rt.stopping || rt.op.is_some() {
                    return; // the start operation reads `healthy` when it ends
                }
                if healthy {
                    if rt.phase == Phase::Running {
                        self.report(&task_id, TaskState::RUNNING, None).await;
                    }
                } else if rt.phase == Phase::Running {
                    self.report(
                        &task_id,
                        TaskState::FAILED,
                        Some("unhealthy container".to_string()),
                    )
                    .await;
                }
            }
            EngineEvent::Destroy {
                id,
                task_id: Some(task_id),
            } => {
                let ours = self.tasks.get(&task_id).is_some_and(|rt| {
                    rt.container.as_deref() == Some(id.as_str()) && rt.op.is_none()
                });
                if ours {
                    self.container_vanished(&task_id, &id).await;
                }
            }
            _ => {}
        }
    }

    // ----------------------------------------------------------- operations

    async fn on_op(&mut self, msg: OpMsg) {
        match msg {
            OpMsg::OrphanRemoved { container } => {
                self.removing.remove(&container);
            }
            OpMsg::Progress {
                task_id,
                state,
                exit_code,
            } => {
                if state == TaskState::SHUTDOWN {
                    if let Some(rt) = self.tasks.get_mut(&task_id) {
                        rt.phase = Phase::Exited;
                        rt.exit_code = exit_code.or(rt.exit_code);
                    }
                }
                self.report(&task_id, state, None).await
            }
            OpMsg::Created { task_id, container } => {
                if let Some(rt) = self.tasks.get_mut(&task_id) {
                    rt.container = Some(container);
                    if rt.phase == Phase::None {
                        rt.phase = Phase::Created;
                    }
                }
            }
            OpMsg::Done { task_id, result } => self.op_done(&task_id, result).await,
        }
    }

    async fn op_done(&mut self, task_id: &str, result: OpResult) {
        let Some(rt) = self.tasks.get_mut(task_id) else {
            return;
        };
        let kind = rt.op.take().map(|(k, _)| k);
        match result {
            OpResult::Prepared | OpResult::Cancelled => {}
            OpResult::Started(info) => {
                if rt.phase != Phase::Exited {
                    rt.phase = Phase::Running;
                }
                if let Some(info) = info {
                    rt.pid = info.pid;
                    rt.host_ports = info.host_ports.clone();
                    if info.health.is_some() {
                        rt.health_gated = true;
                    }
                    if info.health.as_deref() == Some("healthy") {
                        rt.healthy = true;
                    }
                    if info.state == RunState::Exited && rt.phase != Phase::Exited {
                        let id = info.id.clone();
                        self.container_exited(task_id, &id, info.exit_code).await;
                        return;
                    }
                }
                let Some(rt) = self.tasks.get(task_id) else {
                    return;
                };
                if rt.phase == Phase::Running && (!rt.health_gated || rt.healthy) {
                    self.report(task_id, TaskState::RUNNING, None).await;
                }
            }
            OpResult::Stopped { exit_code, kept } => {
                rt.pid = 0;
                rt.exit_code = exit_code.or(rt.exit_code);
                if kept {
                    rt.phase = Phase::Exited;
                    return;
                }
                rt.container = None;
                rt.phase = Phase::None;
                if rt.assignment.is_none() {
                    self.tasks.remove(task_id);
                }
            }
            OpResult::Failed(e) if e.is_transient() => {
                tracing::warn!(task = task_id, error = %e, "engine unreachable during a task operation");
                if kind == Some(OpKind::Shutdown) {
                    rt.stopping = false;
                }
                // The event loop notices the broken stream and resyncs; make
                // sure it does even if the stream looks alive.
                self.events = None;
                self.synced = false;
            }
            OpResult::Failed(e) => {
                if kind == Some(OpKind::Shutdown) {
                    tracing::warn!(task = task_id, error = %e, "cannot remove task container");
                    rt.stopping = false;
                    // Retry on the next resync.
                    self.events = None;
                    self.synced = false;
                    return;
                }
                let message = match e {
                    AgentError::Engine { message, .. } => message,
                    other => other.to_string(),
                };
                self.fail(task_id, message).await;
            }
        }
    }

    /// A task's secret and config files stay while its container may run
    /// (or an operation is about to create it); then they go.
    fn files_to_keep(&self) -> HashSet<String> {
        self.tasks
            .iter()
            .filter(|(_, rt)| !terminal(rt.reported) && (rt.container.is_some() || rt.op.is_some()))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Launch whatever brings each task closer to what is desired.
    async fn reconcile(&mut self) {
        // Awaited before any op is launched, so a task prepared after the
        // keep set was taken cannot lose its files.
        let sweep = self.files.clone().sweep_blocking(self.files_to_keep());
        sweep.await;
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for task_id in ids {
            let Some(rt) = self.tasks.get_mut(&task_id) else {
                continue;
            };
            if let Some((kind, cancel)) = &rt.op {
                if rt.wants_stop() && *kind != OpKind::Shutdown {
                    cancel.cancel();
                }
                continue;
            }
            if rt.wants_stop() {
                // A stopped container of a task still in the history stays.
                let kept = rt.phase == Phase::Exited && rt.assignment.is_some();
                if rt.container.is_some() && !kept {
                    rt.stopping = true;
                    self.launch(&task_id, OpKind::Shutdown);
                } else if rt.container.is_none() && rt.assignment.is_none() {
                    self.tasks.remove(&task_id);
                } else if !terminal(rt.reported) {
                    self.report(&task_id, TaskState::SHUTDOWN, None).await;
                }
                continue;
            }
            if terminal(rt.reported) {
                continue;
            }
            let start = rt.desired() == Some(TaskState::RUNNING);
            match rt.phase {
                Phase::None if rank(rt.reported) < rank(TaskState::READY) => {
                    self.launch(&task_id, OpKind::Prepare)
                }
                Phase::Created if start => self.launch(&task_id, OpKind::Start),
                Phase::Created if rank(rt.reported) < rank(TaskState::READY) => {
                    self.report(&task_id, TaskState::READY, None).await
                }
                Phase::Running if rank(rt.reported) < rank(TaskState::RUNNING) => {
                    // Adopted, or waiting for health.
                    if !rt.health_gated || rt.healthy {
                        self.report(&task_id, TaskState::RUNNING, None).await
                    } else {
                        self.report(&task_id, TaskState::STARTING, None).await
                    }
                }
                _ => {}
            }
        }
    }

    fn launch(&mut self, task_id: &str, kind: OpKind) {
        let Some(rt) = self.tasks.get_mut(task_id) else {
            return;
        };
        let cancel = self.shutdown.child_token();
        rt.op = Some((kind, cancel.clone()));
        let ctx = OpCtx {
            task_id: task_id.to_string(),
            assignment: rt.assignment.clone(),
            container: rt.container.clone(),
            from: rt.reported,
            start: rt.desired() == Some(TaskState::RUNNING),
            serving: rt.phase == Phase::Running,
            node: self.node.clone(),
            exec: self.exec.clone(),
            network: self.network.clone(),
            tx: self.op_tx.clone(),
            cancel,
            start_permits: self.start_permits.clone(),
            stop_permits: self.stop_permits.clone(),
            stops: self.stops.clone(),
            puller: self.puller.clone(),
            files: self.files.clone(),
        };
        self.ops.spawn(async move {
            let task_id = ctx.task_id.clone();
            let tx = ctx.tx.clone();
            let result = match kind {
                OpKind::Prepare => ctx.prepare().await,
                OpKind::Start => ctx.start().await,
                OpKind::Shutdown => ctx.shutdown().await,
            };
            let _ = tx.send(OpMsg::Done { task_id, result });
        });
    }
}

/// Everything one operation needs, owned, so it can run in its own task.
struct OpCtx {
    task_id: String,
    assignment: Option<Arc<Assignment>>,
    container: Option<String>,
    from: TaskState,
    start: bool,
    /// The container runs, so traffic may reach it: drain before a stop.
    serving: bool,
    node: Arc<NodeInfo>,
    exec: Arc<dyn Executor>,
    network: NodeNetwork,
    tx: mpsc::UnboundedSender<OpMsg>,
    cancel: CancellationToken,
    start_permits: Arc<Semaphore>,
    stop_permits: Arc<Semaphore>,
    stops: Arc<StopsInFlight>,
    puller: Arc<Puller>,
    files: Arc<files::TaskFiles>,
}

impl OpCtx {
    fn progress(&self, state: TaskState) {
        self.progress_exit(state, None);
    }

    fn progress_exit(&self, state: TaskState, exit_code: Option<i64>) {
        let _ = self.tx.send(OpMsg::Progress {
            task_id: self.task_id.clone(),
            state,
            exit_code,
        });
    }

    async fn prepare(self) -> OpResult {
        let Some(a) = self.assignment.clone() else {
            return OpResult::Cancelled;
        };
        if rank(self.from) < rank(TaskState::ACCEPTED) {
            self.progress(TaskState::ACCEPTED);
        }
        if rank(self.from) < rank(TaskState::PREPARING) {
            self.progress(TaskState::PREPARING);
        }
        let (name, mut body) = match spec::container_config(&a, &self.node) {
            Ok(c) => c,
            Err(e) => return OpResult::Failed(e),
        };
        // Secrets and configs: files on shoal's tmpfs, bind-mounted read-only.
        let files = self
            .files
            .clone()
            .prepare_blocking(a.clone(), self.node.clone());
        match files.await {
            Ok(mounts) if mounts.is_empty() => {}
            Ok(mounts) => {
                let host = body.host_config.get_or_insert_with(Default::default);
                host.mounts.get_or_insert_with(Vec::new).extend(mounts);
            }
            Err(e) => return OpResult::Failed(e),
        }
        // A worker makes the task's bridges first (a manager's data plane
        // has them already).
        if let Err(e) = self.network.prepare_task(&a.networking).await {
            return OpResult::Failed(AgentError::Network(format!(
                "cannot create the task's networks: {e}"
            )));
        }
        let image = body.image.clone().unwrap_or_default();
        if image.is_empty() {
            return OpResult::Failed(AgentError::Engine {
                status: 400,
                message: "No image specified".to_string(),
            });
        }
        let id = match self.pull_and_create(&image, &name, body).await {
            Ok(id) => id,
            Err(result) => return result,
        };
        self.progress(TaskState::READY);
        if !self.start || self.cancel.is_cancelled() {
            return if self.cancel.is_cancelled() {
                OpResult::Cancelled
            } else {
                OpResult::Prepared
            };
        }
        self.start_permitted(&id).await
    }

    /// Pulls as swarm does (unless pinned by digest and present) and
    /// creates the container; returns its ID. The create does not wait for the pull, which mostly
    /// fails (no registry) or changes nothing: when the image was missing
    /// the create is tried again after the pull, and when the pull moved
    /// the tag the container is made again from the new image.
    async fn pull_and_create(
        &self,
        image: &str,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, OpResult> {
        if spec::pinned(image) {
            return match self.create(name, body.clone()).await {
                Err(OpResult::Failed(e)) if e.is_not_found() => {
                    self.pull(image).await?;
                    self.create(name, body).await
                }
                created => created,
            };
        }
        let (pulled, created) = tokio::join!(self.pull(image), self.create(name, body.clone()));
        let pulled = pulled?;
        match created {
            Ok(id) if pulled != Pulled::Moved => Ok(id),
            Ok(id) => {
                if let Err(e) = self.exec.remove(&id).await {
                    return Err(OpResult::Failed(e));
                }
                self.create(name, body).await
            }
            // No such image before the pull: now there may be.
            Err(OpResult::Failed(e)) if e.is_not_found() => self.create(name, body).await,
            Err(other) => Err(other),
        }
    }

    async fn pull(&self, image: &str) -> Result<Pulled, OpResult> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(OpResult::Cancelled),
            pulled = self.puller.pull(self.exec.as_ref(), image) => Ok(pulled),
        }
    }

    /// Creates the container under a start permit (not held while the
    /// pull goes on); tells the agent its ID.
    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<String, OpResult> {
        let _permit = tokio::select! {
            _ = self.cancel.cancelled() => return Err(OpResult::Cancelled),
            p = self.start_permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Err(OpResult::Cancelled),
            },
        };
        if self.cancel.is_cancelled() {
            return Err(OpResult::Cancelled);
        }
        let id = match self.exec.create(name, body).await {
            Ok(id) => id,
            Err(AgentError::Engine { status: 409, .. }) => {
                // Already created (by us, before a restart): use it.
                match self.exec.inspect(name).await {
                    Ok(Some(info)) if info.task_id() == Some(self.task_id.as_str()) => info.id,
                    Ok(_) => {
                        return Err(OpResult::Failed(AgentError::Engine {
                            status: 409,
                            message: format!(
                                "Conflict. The container name \"/{name}\" is already in use"
                            ),
                        }))
                    }
                    Err(e) => return Err(OpResult::Failed(e)),
                }
            }
            Err(e) => return Err(OpResult::Failed(e)),
        };
        let _ = self.tx.send(OpMsg::Created {
            task_id: self.task_id.clone(),
            container: id.clone(),
        });
        Ok(id)
    }

    async fn start(self) -> OpResult {
        let Some(id) = self.container.clone() else {
            return OpResult::Cancelled;
        };
        self.start_permitted(&id).await
    }

    /// Starts the container under a start permit.
    async fn start_permitted(&self, id: &str) -> OpResult {
        let _permit = tokio::select! {
            _ = self.cancel.cancelled() => return OpResult::Cancelled,
            p = self.start_permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return OpResult::Cancelled,
            },
        };
        self.start_container(id).await
    }

    async fn start_container(&self, id: &str) -> OpResult {
        self.progress(TaskState::STARTING);
        if let Err(e) = self.exec.start(id).await {
            return match e {
                AgentError::Engine { status, message } => OpResult::Failed(AgentError::Engine {
                    status,
                    message: format!("starting container failed: {message}"),
                }),
                other => OpResult::Failed(other),
            };
        }
        match self.exec.inspect(id).await {
            Ok(info) => OpResult::Started(info),
            Err(e) => {
                tracing::debug!(container = id, error = %e, "inspect after start failed");
                OpResult::Started(None)
            }
        }
    }

    async fn shutdown(self) -> OpResult {
        let Some(id) = self.container.clone() else {
            return OpResult::Stopped {
                exit_code: None,
                kept: false,
            };
        };
        let grace = self
            .assignment
            .as_deref()
            .map(spec::stop_grace)
            .unwrap_or(spec::DEFAULT_STOP_GRACE);
        if self.serving {
            self.drain(&id, grace).await;
        }
        let permit = self.stop_permits.clone().acquire_owned().await;
        let stopping = self.stops.begin();
        if let Err(e) = self.exec.stop(&id, spec::whole_seconds(grace)).await {
            return OpResult::Failed(e);
        }
        let exit_code = match self.exec.inspect(&id).await {
            Ok(Some(info)) => info.exit_code,
            Ok(None) => None,
            Err(e) => return OpResult::Failed(e),
        };
        drop(stopping);
        if self.assignment.is_some() {
            self.progress_exit(TaskState::SHUTDOWN, exit_code);
            // As Docker does, an ended task keeps its (stopped) container
            // until the task leaves the task history, so the logs of a
            // crashed or replaced task stay readable; it is removed when
            // the task leaves the assignment set.
            return OpResult::Stopped {
                exit_code,
                kept: true,
            };
        }
        // The permit goes back while waiting, or waiting removals could
        // hold off the very stops they wait for.
        drop(permit);
        self.stops.settled(stops::MAX_DEFER).await;
        let _permit = self.stop_permits.clone().acquire_owned().await;
        if let Err(e) = self.exec.remove(&id).await {
            return OpResult::Failed(e);
        }
        OpResult::Stopped {
            exit_code,
            kept: false,
        }
    }

    /// Zero downtime: the data plane stops routing to the task, and its
    /// open connections get the stop grace period, before the stop.
    async fn drain(&self, container: &str, grace: Duration) {
        let changed_at = self
            .assignment
            .as_ref()
            .and_then(|a| a.task.version.as_ref())
            .and_then(|v| v.index);
        self.network
            .before_stop(changed_at, &self.task_id, container, grace)
            .await;
    }
}
