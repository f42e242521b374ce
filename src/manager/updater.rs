//! Rolling updates and rollbacks, as swarmkit's updater runs them: out of
//! date tasks are replaced `Parallelism` at a time, `Delay` apart, in
//! `Order` stop-first or start-first; failures within `Monitor` count
//! against `MaxFailureRatio`, then `FailureAction` pauses, continues or
//! rolls back; `UpdateStatus` reports it all. The state lives in the store
//! (the service's UpdateStatus and its tasks), so a restarted leader
//! carries on where the last one stopped.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bollard::models::{
    ServiceSpecUpdateConfigFailureActionEnum as Failure, ServiceSpecUpdateConfigOrderEnum as Order,
    ServiceUpdateStatus, ServiceUpdateStatusStateEnum as State, TaskState,
};

use super::orchestrator::parse_time;
use super::tasks::{self, desired, is_live, is_terminal, is_up_to_date, state};
use crate::types::{SwarmService, SwarmTask};

const DEFAULT_MONITOR: Duration = Duration::from_secs(5);

/// UpdateConfig, or RollbackConfig while rolling back, with the engine's defaults.
pub struct Config {
    pub parallelism: usize,
    pub delay: Duration,
    pub failure_action: Failure,
    pub monitor: Duration,
    pub max_failure_ratio: f64,
    pub start_first: bool,
}

impl Config {
    pub fn of(service: &SwarmService) -> Self {
        let spec = service.spec.clone().unwrap_or_default();
        let nanos = |v: Option<i64>| v.map(|n| Duration::from_nanos(n.max(0) as u64));
        let parallelism = |p: Option<i64>| match p {
            Some(0) => usize::MAX,
            Some(n) if n > 0 => n as usize,
            _ => 1,
        };
        if rolling_back(service) {
            let c = spec.rollback_config.unwrap_or_default();
            return Config {
                parallelism: parallelism(c.parallelism),
                delay: nanos(c.delay).unwrap_or_default(),
                failure_action: match c.failure_action.map(|a| a.to_string()).as_deref() {
                    Some("continue") => Failure::CONTINUE,
                    _ => Failure::PAUSE,
                },
                monitor: nanos(c.monitor)
                    .filter(|m| !m.is_zero())
                    .unwrap_or(DEFAULT_MONITOR),
                max_failure_ratio: c.max_failure_ratio.unwrap_or(0.0),
                start_first: c.order.map(|o| o.to_string()).as_deref() == Some("start-first"),
            };
        }
        let c = spec.update_config.unwrap_or_default();
        Config {
            parallelism: parallelism(c.parallelism),
            delay: nanos(c.delay).unwrap_or_default(),
            failure_action: match c.failure_action {
                Some(Failure::CONTINUE) => Failure::CONTINUE,
                Some(Failure::ROLLBACK) => Failure::ROLLBACK,
                _ => Failure::PAUSE,
            },
            monitor: nanos(c.monitor)
                .filter(|m| !m.is_zero())
                .unwrap_or(DEFAULT_MONITOR),
            max_failure_ratio: c.max_failure_ratio.unwrap_or(0.0),
            start_first: c.order == Some(Order::START_FIRST),
        }
    }
}

fn status_state(service: &SwarmService) -> Option<State> {
    service.update_status.as_ref().and_then(|s| s.state)
}

pub fn rolling_back(service: &SwarmService) -> bool {
    matches!(
        status_state(service),
        Some(State::ROLLBACK_STARTED | State::ROLLBACK_PAUSED | State::ROLLBACK_COMPLETED)
    )
}

fn paused(service: &SwarmService) -> bool {
    matches!(
        status_state(service),
        Some(State::PAUSED | State::ROLLBACK_PAUSED)
    )
}

fn started_at(service: &SwarmService) -> SystemTime {
    service
        .update_status
        .as_ref()
        .and_then(|s| s.started_at.as_deref())
        .and_then(parse_time)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// How many more slots this reconcile may start replacing, and when to
/// look again if a `Delay` is what holds the next batch back.
pub struct Budget {
    pub slots: usize,
    pub start_first: bool,
    pub wake: Option<Duration>,
}

pub fn budget(service: &SwarmService, tasks: &[SwarmTask], now: SystemTime) -> Budget {
    let config = Config::of(service);
    if paused(service) {
        return Budget {
            slots: 0,
            start_first: config.start_first,
            wake: None,
        };
    }
    // Parallelism counts slots being replaced, not tasks: a stop-first
    // slot has its old task stopping and its new one waiting at once.
    let mut in_flight: HashSet<SlotKey> = HashSet::new();
    let mut wake: Option<Duration> = None;
    let any_stale = tasks
        .iter()
        .any(|t| is_live(t) && !is_up_to_date(t, service));
    for task in tasks {
        let stopping =
            desired(task) == TaskState::SHUTDOWN && !is_terminal(state(task)) && started(task);
        let fresh = is_live(task) && is_up_to_date(task, service) && !is_terminal(state(task));
        let fresh_not_running = fresh && state(task) != TaskState::RUNNING && any_stale;
        let mut within_delay = false;
        if fresh && state(task) == TaskState::RUNNING && !config.delay.is_zero() && any_stale {
            let running_since = since(task);
            if running_since >= started_at(service) {
                if let Ok(ran) = now.duration_since(running_since) {
                    if ran < config.delay {
                        within_delay = true;
                        let left = config.delay - ran;
                        wake = Some(wake.map_or(left, |w| w.min(left)));
                    }
                }
            }
        }
        if stopping || fresh_not_running || within_delay {
            in_flight.insert(slot_key(task));
        }
    }
    Budget {
        slots: config.parallelism.saturating_sub(in_flight.len()),
        start_first: config.start_first,
        wake,
    }
}

/// A replicated task's slot, or a global task's node.
#[derive(PartialEq, Eq, Hash)]
enum SlotKey {
    Slot(i64),
    Node(String),
}

fn slot_key(task: &SwarmTask) -> SlotKey {
    match task.slot {
        Some(slot) if slot > 0 => SlotKey::Slot(slot),
        _ => SlotKey::Node(task.node_id.clone().unwrap_or_default()),
    }
}

fn started(task: &SwarmTask) -> bool {
    tasks::rank(state(task)) >= tasks::rank(TaskState::ASSIGNED)
}

/// When the task's current status began (its running time, once running).
fn since(task: &SwarmTask) -> SystemTime {
    task.status
        .as_ref()
        .and_then(|s| s.timestamp.as_deref())
        .and_then(parse_time)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Failures of new tasks since the update started: past `MaxFailureRatio`,
/// the failure action decides. Returns the service as it must be written.
pub fn on_failures(
    service: &SwarmService,
    tasks: &[SwarmTask],
    replicas: usize,
) -> Option<SwarmService> {
    let state_now = status_state(service)?;
    if !matches!(state_now, State::UPDATING | State::ROLLBACK_STARTED) {
        return None;
    }
    let config = Config::of(service);
    let start = started_at(service);
    let failed: Vec<&SwarmTask> = tasks
        .iter()
        .filter(|t| is_up_to_date(t, service))
        .filter(|t| matches!(state(t), TaskState::FAILED | TaskState::REJECTED))
        .filter(|t| since(t) >= start && ran_less_than(t, config.monitor))
        .collect();
    let first = failed.first()?;
    let ratio = failed.len() as f64 / replicas.max(1) as f64;
    if ratio <= config.max_failure_ratio {
        return None;
    }
    let task_id = first.id.clone().unwrap_or_default();
    let mut updated = service.clone();
    let rolling_back = state_now == State::ROLLBACK_STARTED;
    match (config.failure_action, rolling_back) {
        (Failure::CONTINUE, _) => return None,
        (Failure::ROLLBACK, false) => {
            let previous = service.previous_spec.clone()?;
            updated.previous_spec = service.spec.clone();
            updated.service.spec = Some(previous);
            updated.update_status = Some(status(
                State::ROLLBACK_STARTED,
                format!("update rolled back due to failure or early termination of task {task_id}"),
            ));
        }
        (_, true) => {
            updated.update_status = Some(ServiceUpdateStatus {
                state: Some(State::ROLLBACK_PAUSED),
                message: Some(format!(
                    "rollback paused due to failure or early termination of task {task_id}"
                )),
                ..service.update_status.clone().unwrap_or_default()
            });
        }
        (_, false) => {
            updated.update_status = Some(ServiceUpdateStatus {
                state: Some(State::PAUSED),
                message: Some(format!(
                    "update paused due to failure or early termination of task {task_id}"
                )),
                ..service.update_status.clone().unwrap_or_default()
            });
        }
    }
    Some(updated)
}

/// A task that failed within `monitor` of being created (swarmkit watches
/// each new task for that long).
fn ran_less_than(task: &SwarmTask, monitor: Duration) -> bool {
    let created = task
        .created_at
        .as_deref()
        .and_then(parse_time)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    since(task)
        .duration_since(created)
        .map(|d| d <= monitor + Duration::from_secs(1))
        .unwrap_or(true)
}

/// Completed once every live task runs the current spec and the last of
/// them has been running for `Monitor`; otherwise when to look again.
pub fn completion(
    service: &SwarmService,
    tasks: &[SwarmTask],
    now: SystemTime,
) -> Result<Option<SwarmService>, Duration> {
    let Some(current) = service.update_status.as_ref() else {
        return Ok(None);
    };
    let (done, message) = match current.state {
        Some(State::UPDATING) => (State::COMPLETED, "update completed"),
        Some(State::ROLLBACK_STARTED) => (State::ROLLBACK_COMPLETED, "rollback completed"),
        _ => return Ok(None),
    };
    let live: Vec<&SwarmTask> = tasks.iter().filter(|t| is_live(t)).collect();
    let converged = live.iter().all(|t| {
        is_up_to_date(t, service)
            && state(t) == TaskState::RUNNING
            && desired(t) == TaskState::RUNNING
    }) && !tasks
        .iter()
        .any(|t| !is_live(t) && !is_terminal(state(t)) && started(t));
    if !converged {
        return Ok(None);
    }
    let monitor = Config::of(service).monitor;
    let last_start = live
        .iter()
        .map(|t| since(t))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(ran) = now.duration_since(last_start) {
        if ran < monitor {
            return Err(monitor - ran);
        }
    }
    let mut updated = service.clone();
    updated.update_status = Some(ServiceUpdateStatus {
        state: Some(done),
        started_at: current.started_at.clone(),
        completed_at: Some(tasks::now()),
        message: Some(message.to_string()),
    });
    Ok(Some(updated))
}

pub fn status(state: State, message: String) -> ServiceUpdateStatus {
    ServiceUpdateStatus {
        state: Some(state),
        started_at: Some(tasks::now()),
        completed_at: None,
        message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{
        Service, ServiceSpec, ServiceSpecUpdateConfig, TaskSpec, TaskSpecContainerSpec,
    };

    use super::*;

    fn service(image: &str, parallelism: i64) -> SwarmService {
        let spec = ServiceSpec {
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(parallelism),
                order: Some(Order::STOP_FIRST),
                ..Default::default()
            }),
            ..Default::default()
        };
        SwarmService {
            service: Service {
                spec: Some(spec),
                update_status: Some(status(State::UPDATING, "update in progress".into())),
                ..Default::default()
            },
            previous_spec: None,
        }
    }

    fn task(service: &SwarmService, slot: i64, state: TaskState, desired: TaskState) -> SwarmTask {
        bollard::models::Task {
            slot: Some(slot),
            spec: Some(tasks::task_spec(service)),
            status: Some(tasks::status(state, "", None)),
            desired_state: Some(desired),
            ..Default::default()
        }
        .into()
    }

    #[test]
    fn a_stop_first_slot_counts_once_against_parallelism() {
        let old = service("busybox:latest", 1);
        let new = service("busybox:v2", 2);
        let tasks = vec![
            // Slot 1 is being replaced: its old task stops while its new one waits.
            task(&old, 1, TaskState::RUNNING, TaskState::SHUTDOWN),
            task(&new, 1, TaskState::READY, TaskState::READY),
            // Slots 2 and 3 still run the old spec.
            task(&old, 2, TaskState::RUNNING, TaskState::RUNNING),
            task(&old, 3, TaskState::RUNNING, TaskState::RUNNING),
        ];
        let budget = budget(&new, &tasks, SystemTime::now());
        assert_eq!(budget.slots, 1);
        assert!(!budget.start_first);
    }
}
