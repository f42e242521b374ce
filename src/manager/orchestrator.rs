//! Desired tasks: replicated and global services, restart policy, scale,
//! spec changes (replaced slot by slot), drained nodes, deleted services,
//! and task history. A pure `plan` over a store snapshot, proposed by `run`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bollard::models::{
    Node, NodeSpecAvailabilityEnum, Service, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use tokio_util::sync::CancellationToken;

use super::tasks::{self, desired, is_live, is_terminal, is_up_to_date, new_task, state};
use super::updater;
use crate::store::{Proposer, Store, Transaction};
use crate::types::{Kind, Object, SwarmService, SwarmTask, Timestamp};

/// swarmkit's default restart delay.
const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);
const DEFAULT_HISTORY: usize = 5;

/// Most task creations, updates or deletions one plan commits (each kind).
/// A service scaled to a million replicas, or removed with thousands of
/// tasks, must not become one raft entry of that size: the plan stops
/// adding at this many, its own commit wakes the loop, and the next round
/// continues from the store as it then is (as swarmkit's batches of 200).
pub const MAX_CHANGES: usize = 256;

pub async fn run(store: Arc<Store>, proposer: Arc<dyn Proposer>, shutdown: CancellationToken) {
    let mut watcher = store.watch_from(store.index());
    loop {
        let (result, wake) = super::propose_planned(&proposer, &store, |store| {
            let plan = plan(store, SystemTime::now());
            let wake = plan.wake;
            (plan.into_transaction(), wake)
        })
        .await;
        let mut wake = wake.flatten();
        if let Err(error) = result {
            tracing::warn!(%error, "orchestrator could not commit its plan");
            wake = Some(wake.map_or(super::RETRY_AFTER, |w| w.min(super::RETRY_AFTER)));
        }
        let wake_at = wake.map(|d| tokio::time::Instant::now() + d);
        if !super::wait_for_change(&store, &mut watcher, &shutdown, wake_at).await {
            break;
        }
    }
}

/// What one reconcile wants written, and when to look again (restart delays).
#[derive(Default)]
pub struct Plan {
    pub(super) services: Vec<SwarmService>,
    pub(super) creates: Vec<SwarmTask>,
    updates: BTreeMap<String, SwarmTask>,
    deletes: Vec<(String, u64)>,
    wake: Option<Duration>,
}

impl Plan {
    fn update(&mut self, mut task: SwarmTask, f: impl FnOnce(&mut SwarmTask)) {
        let id = task.id.clone().unwrap_or_default();
        if let Some(pending) = self.updates.get(&id) {
            task = pending.clone();
        }
        f(&mut task);
        self.updates.insert(id, task);
    }

    pub(super) fn set_desired(&mut self, task: &SwarmTask, state: TaskState) {
        if desired(task) != state {
            self.update(task.clone(), |t| t.desired_state = Some(state));
        }
    }

    /// Whether this plan holds a full batch: loops over slots stop here.
    fn full(&self) -> bool {
        self.creates.len() >= MAX_CHANGES || self.updates.len() >= MAX_CHANGES
    }

    fn wake_in(&mut self, after: Duration) {
        self.wake = Some(self.wake.map_or(after, |w| w.min(after)));
    }

    fn into_transaction(self) -> Option<Transaction> {
        if self.services.is_empty()
            && self.creates.is_empty()
            && self.updates.is_empty()
            && self.deletes.is_empty()
        {
            return None;
        }
        let mut tx = Transaction::new(Timestamp::from_system(SystemTime::now()));
        for service in self.services {
            let version = service.version.as_ref().and_then(|v| v.index).unwrap_or(0);
            tx = tx.update(Object::Service(Box::new(service)), version);
        }
        // Whatever is left over is planned again in the next round.
        for task in self.creates.into_iter().take(MAX_CHANGES) {
            tx = tx.create(Object::Task(Box::new(task)));
        }
        for task in self.updates.into_values().take(MAX_CHANGES) {
            let version = task.version.as_ref().and_then(|v| v.index).unwrap_or(0);
            tx = tx.update(Object::Task(Box::new(task)), version);
        }
        for (id, version) in self.deletes.into_iter().take(MAX_CHANGES) {
            tx = tx.delete(Kind::Task, id, Some(version));
        }
        Some(tx)
    }
}

/// Everything the orchestrator decides from one consistent read.
pub fn plan(store: &Store, now: SystemTime) -> Plan {
    let (services, tasks, nodes, history) = store.read(|tables| {
        let services: Vec<SwarmService> =
            tables.iter(Kind::Service).filter_map(as_service).collect();
        let tasks: Vec<SwarmTask> = tables.iter(Kind::Task).filter_map(as_task).collect();
        let nodes: Vec<Node> = tables.iter(Kind::Node).filter_map(as_node).collect();
        let history = tables
            .iter(Kind::Cluster)
            .find_map(|o| match &**o {
                Object::Cluster(c) => {
                    c.spec
                        .as_ref()?
                        .orchestration
                        .as_ref()?
                        .task_history_retention_limit
                }
                _ => None,
            })
            .map(|l| if l < 0 { usize::MAX } else { l as usize })
            .unwrap_or(DEFAULT_HISTORY);
        (services, tasks, nodes, history)
    });
    // Read once: the reaper works from the same snapshot as the rest.
    let reapable = reapable(&tasks);
    let mut by_service: HashMap<String, Vec<SwarmTask>> = HashMap::new();
    for task in tasks {
        by_service
            .entry(task.service_id.clone().unwrap_or_default())
            .or_default()
            .push(task);
    }
    let mut plan = Plan::default();
    let mut rng = rand::thread_rng();
    let drained: HashSet<String> = nodes
        .iter()
        .filter(|n| !takes_tasks(n))
        .filter_map(|n| n.id.clone())
        .collect();
    // A task on a node that is down cannot be stopped or report: its slot's
    // replacement does not wait for it (stop-first or not).
    let down: HashSet<String> = nodes
        .iter()
        .filter(|n| {
            n.status.as_ref().and_then(|s| s.state) != Some(bollard::models::NodeState::READY)
        })
        .filter_map(|n| n.id.clone())
        .collect();
    for service in &services {
        let id = service.id.clone().unwrap_or_default();
        let service_tasks = by_service.remove(&id).unwrap_or_default();
        let ctx = ServiceCtx {
            service,
            now,
            drained: &drained,
            down: &down,
        };
        match replicas(service) {
            Some(count) => reconcile_replicated(&ctx, &service_tasks, count, &mut plan, &mut rng),
            None if is_global(service) => {
                reconcile_global(&ctx, &service_tasks, &nodes, &mut plan, &mut rng)
            }
            None => {
                let eligible: Vec<&Node> = nodes
                    .iter()
                    .filter(|n| {
                        takes_tasks(n) && super::scheduler::satisfies_constraints(n, service)
                    })
                    .collect();
                super::jobs::reconcile(service, &service_tasks, &eligible, &mut plan, &mut rng);
            }
        }
        // A job's finished tasks are its progress: they are not history.
        if service.job_status.is_none() {
            trim_history(&service_tasks, history, &mut plan);
        }
        progress_update(service, &service_tasks, now, &mut plan);
    }
    // Tasks whose service is gone: stop them, then reap them.
    for task in by_service.into_values().flatten() {
        plan.set_desired(&task, TaskState::REMOVE);
    }
    reap(reapable, &mut plan);
    plan
}

struct ServiceCtx<'a> {
    service: &'a SwarmService,
    now: SystemTime,
    drained: &'a HashSet<String>,
    down: &'a HashSet<String>,
}

fn reconcile_replicated(
    ctx: &ServiceCtx,
    tasks: &[SwarmTask],
    count: u64,
    plan: &mut Plan,
    rng: &mut impl rand::RngCore,
) {
    let mut slots: BTreeMap<i64, Vec<&SwarmTask>> = BTreeMap::new();
    for task in tasks {
        slots.entry(task.slot.unwrap_or(0)).or_default().push(task);
    }
    for slot_tasks in slots.values_mut() {
        slot_tasks.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    }
    let wanted = count as i64;
    // Scale down: slots above the count go away, highest first (all at once).
    for (_, slot_tasks) in slots.range(wanted + 1..) {
        if plan.full() {
            break;
        }
        for task in slot_tasks {
            plan.set_desired(task, TaskState::REMOVE);
        }
    }
    let mut budget = updater::budget(ctx.service, tasks, ctx.now);
    if let Some(wake) = budget.wake {
        plan.wake_in(wake);
    }
    for slot in 1..=wanted {
        if plan.full() {
            break;
        }
        let slot_tasks = slots.get(&slot).map(Vec::as_slice).unwrap_or(&[]);
        reconcile_slot(ctx, slot_tasks, Some(slot), None, plan, rng, &mut budget);
    }
}

fn reconcile_global(
    ctx: &ServiceCtx,
    tasks: &[SwarmTask],
    nodes: &[Node],
    plan: &mut Plan,
    rng: &mut impl rand::RngCore,
) {
    let mut by_node: BTreeMap<String, Vec<&SwarmTask>> = BTreeMap::new();
    for task in tasks {
        by_node
            .entry(task.node_id.clone().unwrap_or_default())
            .or_default()
            .push(task);
    }
    for slot_tasks in by_node.values_mut() {
        slot_tasks.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    }
    let eligible: Vec<&Node> = nodes
        .iter()
        .filter(|n| takes_tasks(n) && super::scheduler::satisfies_constraints(n, ctx.service))
        .collect();
    let eligible_ids: HashSet<&str> = eligible.iter().filter_map(|n| n.id.as_deref()).collect();
    // Nodes that no longer qualify: their tasks are shut down, not replaced.
    for (node, node_tasks) in &by_node {
        if !eligible_ids.contains(node.as_str()) {
            for task in node_tasks.iter().filter(|t| is_live(t)) {
                plan.set_desired(task, TaskState::SHUTDOWN);
            }
        }
    }
    let mut budget = updater::budget(ctx.service, tasks, ctx.now);
    if let Some(wake) = budget.wake {
        plan.wake_in(wake);
    }
    for node in eligible {
        let id = node.id.clone().unwrap_or_default();
        let node_tasks = by_node.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        reconcile_slot(ctx, node_tasks, None, Some(id), plan, rng, &mut budget);
    }
}

/// One slot (or one node of a global service): restart what died as the
/// policy allows, fill it when empty, and replace an out-of-date task when
/// the rolling update's budget allows, stop-first or start-first.
fn reconcile_slot(
    ctx: &ServiceCtx,
    slot_tasks: &[&SwarmTask],
    slot: Option<i64>,
    node: Option<String>,
    plan: &mut Plan,
    rng: &mut impl rand::RngCore,
    budget: &mut updater::Budget,
) {
    let service = ctx.service;
    let mut occupied = false;
    let mut alive: Vec<&SwarmTask> = Vec::new();
    for task in slot_tasks.iter().copied().filter(|t| is_live(t)) {
        let on_drained = task
            .node_id
            .as_ref()
            .is_some_and(|n| ctx.drained.contains(n))
            && slot.is_some();
        if is_terminal(state(task)) {
            // The task died: restart it after the delay, if the policy allows.
            if !should_restart(service, task, slot_tasks, ctx.now) {
                plan.set_desired(task, TaskState::SHUTDOWN);
                occupied = true;
                continue;
            }
            let due = died_at(task) + restart_delay(service);
            match due.duration_since(ctx.now) {
                Ok(wait) if !wait.is_zero() => {
                    plan.wake_in(wait);
                    occupied = true;
                }
                _ => plan.set_desired(task, TaskState::SHUTDOWN),
            }
        } else if on_drained {
            plan.set_desired(task, TaskState::SHUTDOWN);
        } else {
            alive.push(task);
        }
    }
    let (fresh, stale): (Vec<&SwarmTask>, Vec<&SwarmTask>) =
        alive.iter().partition(|t| is_up_to_date(t, service));
    if let Some(current) = fresh.last() {
        // A replacement waiting in `ready` starts once its predecessor is down.
        if desired(current) == TaskState::READY {
            promote_when_predecessor_down(current, slot_tasks, ctx.down, plan);
        }
        // Start-first: the old task stops once the new one runs.
        if state(current) == TaskState::RUNNING {
            for old in &stale {
                plan.set_desired(old, TaskState::SHUTDOWN);
            }
        }
        return;
    }
    if let Some(old) = stale.first() {
        if budget.slots == 0 {
            return;
        }
        budget.slots -= 1;
        let mut task = new_task(service, slot, node, rng);
        if budget.start_first {
            plan.creates.push(task.into());
        } else {
            plan.set_desired(old, TaskState::SHUTDOWN);
            task.desired_state = Some(TaskState::READY);
            plan.creates.push(task.into());
        }
        return;
    }
    let newest = slot_tasks.last();
    let settled = newest
        .is_some_and(|t| is_terminal(state(t)) && !should_restart(service, t, slot_tasks, ctx.now));
    if occupied || settled {
        return;
    }
    let mut task = new_task(service, slot, node, rng);
    // Stop-first: a replacement waits in `ready` until its predecessor is down.
    let predecessor_running = slot_tasks
        .iter()
        .any(|t| !is_terminal(state(t)) && rank_started(t) && !on_node_in(t, ctx.down));
    if predecessor_running {
        task.desired_state = Some(TaskState::READY);
    }
    plan.creates.push(task.into());
}

fn rank_started(task: &SwarmTask) -> bool {
    tasks::rank(state(task)) >= tasks::rank(TaskState::ASSIGNED)
}

fn on_node_in(task: &SwarmTask, nodes: &HashSet<String>) -> bool {
    task.node_id.as_ref().is_some_and(|n| nodes.contains(n))
}

fn promote_when_predecessor_down(
    task: &SwarmTask,
    slot_tasks: &[&SwarmTask],
    down_nodes: &HashSet<String>,
    plan: &mut Plan,
) {
    let others_down = slot_tasks
        .iter()
        .filter(|t| t.id != task.id)
        .all(|t| is_terminal(state(t)) || !rank_started(t) || on_node_in(t, down_nodes));
    if others_down {
        plan.set_desired(task, TaskState::RUNNING);
    }
}

/// Restart policy: condition, and MaxAttempts within Window.
fn should_restart(
    service: &Service,
    task: &SwarmTask,
    slot_tasks: &[&SwarmTask],
    now: SystemTime,
) -> bool {
    let policy = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.restart_policy.clone())
        .unwrap_or_default();
    let condition = policy
        .condition
        .unwrap_or(TaskSpecRestartPolicyConditionEnum::ANY);
    let allowed = match condition {
        TaskSpecRestartPolicyConditionEnum::NONE => false,
        TaskSpecRestartPolicyConditionEnum::ON_FAILURE => state(task) != TaskState::COMPLETE,
        _ => true,
    };
    if !allowed {
        return false;
    }
    let max_attempts = policy.max_attempts.unwrap_or(0);
    if max_attempts <= 0 {
        return true;
    }
    let window = Duration::from_nanos(policy.window.unwrap_or(0).max(0) as u64);
    let restarts = slot_tasks
        .iter()
        .filter(|t| t.id != task.id && is_terminal(state(t)))
        .filter(|t| {
            window.is_zero()
                || now
                    .duration_since(died_at(t))
                    .map(|d| d <= window)
                    .unwrap_or(true)
        })
        .count() as i64;
    restarts < max_attempts
}

fn restart_delay(service: &Service) -> Duration {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.restart_policy.as_ref())
        .and_then(|p| p.delay)
        .map(|ns| Duration::from_nanos(ns.max(0) as u64))
        .unwrap_or(DEFAULT_RESTART_DELAY)
}

fn died_at(task: &SwarmTask) -> SystemTime {
    task.status
        .as_ref()
        .and_then(|s| s.timestamp.as_deref())
        .and_then(parse_time)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

pub fn parse_time(text: &str) -> Option<SystemTime> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = parsed.unix_timestamp_nanos();
    (nanos >= 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos as u64))
}

/// Failure handling and completion of a rolling update (see `updater`).
fn progress_update(service: &SwarmService, tasks: &[SwarmTask], now: SystemTime, plan: &mut Plan) {
    let replicas = replicas(service)
        .map(|r| r as usize)
        .unwrap_or_else(|| tasks.iter().filter(|t| is_live(t)).count());
    if let Some(updated) = updater::on_failures(service, tasks, replicas) {
        plan.services.push(updated);
        return;
    }
    if plan.creates.iter().any(|t| t.service_id == service.id) {
        return;
    }
    match updater::completion(service, tasks, now) {
        Ok(Some(updated)) => plan.services.push(updated),
        Ok(None) => {}
        Err(wait) => plan.wake_in(wait),
    }
}

/// Keeps `limit` tasks per slot (live ones included); older dead ones go.
fn trim_history(tasks: &[SwarmTask], limit: usize, plan: &mut Plan) {
    let mut groups: BTreeMap<(i64, String), Vec<&SwarmTask>> = BTreeMap::new();
    for task in tasks {
        let key = match task.slot {
            Some(slot) if slot > 0 => (slot, String::new()),
            _ => (0, task.node_id.clone().unwrap_or_default()),
        };
        groups.entry(key).or_default().push(task);
    }
    for group in groups.values_mut() {
        group.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        for task in group.iter().skip(limit.max(1)) {
            let id = task.id.clone().unwrap_or_default();
            let dead = is_terminal(state(task)) && !is_live(task);
            if dead && !plan.updates.contains_key(&id) {
                plan.deletes
                    .push((id, task.version.as_ref().and_then(|v| v.index).unwrap_or(0)));
            }
        }
    }
}

/// Tasks with desired `remove` that ended or never started: (ID, version).
fn reapable(tasks: &[SwarmTask]) -> Vec<(String, u64)> {
    tasks
        .iter()
        .filter(|task| {
            let never_assigned = tasks::rank(state(task)) < tasks::rank(TaskState::ASSIGNED);
            desired(task) == TaskState::REMOVE && (is_terminal(state(task)) || never_assigned)
        })
        .map(|task| {
            let id = task.id.clone().unwrap_or_default();
            (id, task.version.as_ref().and_then(|v| v.index).unwrap_or(0))
        })
        .collect()
}

/// Deletes the reapable tasks this plan does not already touch.
fn reap(reapable: Vec<(String, u64)>, plan: &mut Plan) {
    let deleting: HashSet<String> = plan.deletes.iter().map(|(id, _)| id.clone()).collect();
    for (id, version) in reapable {
        if !plan.updates.contains_key(&id) && !deleting.contains(&id) {
            plan.deletes.push((id, version));
        }
    }
}

fn takes_tasks(node: &Node) -> bool {
    let availability = node.spec.as_ref().and_then(|s| s.availability);
    let ready =
        node.status.as_ref().and_then(|s| s.state) == Some(bollard::models::NodeState::READY);
    ready
        && matches!(
            availability,
            None | Some(NodeSpecAvailabilityEnum::ACTIVE) | Some(NodeSpecAvailabilityEnum::PAUSE)
        )
        && availability != Some(NodeSpecAvailabilityEnum::DRAIN)
}

pub fn replicas(service: &Service) -> Option<u64> {
    let mode = service.spec.as_ref()?.mode.as_ref()?;
    let replicated = mode.replicated.as_ref()?;
    Some(replicated.replicas.unwrap_or(1).max(0) as u64)
}

pub fn is_global(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .is_some_and(|m| m.global.is_some())
}

pub fn as_service(object: &Arc<Object>) -> Option<SwarmService> {
    match &**object {
        Object::Service(s) => Some((**s).clone()),
        _ => None,
    }
}

pub fn as_task(object: &Arc<Object>) -> Option<SwarmTask> {
    match &**object {
        Object::Task(t) => Some((**t).clone()),
        _ => None,
    }
}

pub fn as_node(object: &Arc<Object>) -> Option<Node> {
    match &**object {
        Object::Node(n) => Some((**n).clone()),
        _ => None,
    }
}
