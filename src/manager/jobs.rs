//! Job services: `replicated-job` runs TotalCompletions tasks to
//! completion, at most MaxConcurrent at once; `global-job` runs one task to
//! completion on every eligible node. Each run is a JobIteration: updating
//! the service starts a new one, and tasks of older iterations stop.

use bollard::models::{Node, ObjectVersion, TaskSpecRestartPolicyConditionEnum, TaskState};

use super::orchestrator::Plan;
use super::tasks::{desired, is_live, is_terminal, new_task, state};
use crate::types::{SwarmService, SwarmTask};

pub fn iteration(service: &SwarmService) -> u64 {
    service
        .job_status
        .as_ref()
        .and_then(|j| j.job_iteration.as_ref())
        .and_then(|v| v.index)
        .unwrap_or(0)
}

fn of_iteration(task: &SwarmTask, iteration: u64) -> bool {
    task.job_iteration
        .as_ref()
        .and_then(|v| v.index)
        .unwrap_or(0)
        == iteration
}

/// `(MaxConcurrent, TotalCompletions)` with the engine's defaults.
pub fn replicated_job(service: &SwarmService) -> Option<(u64, u64)> {
    let job = service
        .spec
        .as_ref()?
        .mode
        .as_ref()?
        .replicated_job
        .as_ref()?;
    let max = job.max_concurrent.filter(|&m| m > 0).unwrap_or(1) as u64;
    let total = job
        .total_completions
        .filter(|&t| t > 0)
        .map(|t| t as u64)
        .unwrap_or(max);
    Some((max, total))
}

/// Whether a spec describes a job (either kind).
pub fn replicated_job_or_global(spec: &bollard::models::ServiceSpec) -> bool {
    spec.mode
        .as_ref()
        .is_some_and(|m| m.replicated_job.is_some() || m.global_job.is_some())
}

pub fn is_global_job(service: &SwarmService) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .is_some_and(|m| m.global_job.is_some())
}

/// Jobs restart failed tasks unless told otherwise; a finished task is done.
fn retries(service: &SwarmService, task: &SwarmTask) -> bool {
    let condition = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.restart_policy.as_ref())
        .and_then(|p| p.condition);
    state(task) != TaskState::COMPLETE
        && condition != Some(TaskSpecRestartPolicyConditionEnum::NONE)
}

pub fn reconcile(
    service: &SwarmService,
    tasks: &[SwarmTask],
    eligible: &[&Node],
    plan: &mut Plan,
    rng: &mut impl rand::RngCore,
) {
    let iteration = iteration(service);
    let mut current: Vec<&SwarmTask> = Vec::new();
    for task in tasks {
        if !of_iteration(task, iteration) {
            // An older run: stop what still runs.
            if is_live(task) && desired(task) != TaskState::COMPLETE {
                plan.set_desired(task, TaskState::SHUTDOWN);
            }
            continue;
        }
        current.push(task);
    }
    let mut running = 0u64;
    let mut completed = 0u64;
    let mut given_up = 0u64;
    for task in &current {
        let live = is_live(task);
        match state(task) {
            TaskState::COMPLETE => {
                completed += 1;
                if desired(task) != TaskState::COMPLETE {
                    plan.set_desired(task, TaskState::COMPLETE);
                }
            }
            s if is_terminal(s) && live => {
                plan.set_desired(task, TaskState::SHUTDOWN);
                if !retries(service, task) {
                    given_up += 1;
                }
            }
            s if is_terminal(s) && !retries(service, task) => {
                given_up += 1;
            }
            _ if live => running += 1,
            _ => {}
        }
    }
    let new_job_task = |slot: Option<i64>, node: Option<String>, rng: &mut dyn rand::RngCore| {
        let mut task = new_task(service, slot, node, &mut RngRef(rng));
        task.job_iteration = Some(version(iteration));
        task
    };
    if let Some((max, total)) = replicated_job(service) {
        let remaining = total.saturating_sub(completed + running + given_up);
        let room = max.saturating_sub(running);
        // Job slots count from 0: the CLI's progress bars index them so.
        // An absent slot is slot 0 (the engine omits zeros).
        let next_slot = current
            .iter()
            .map(|t| t.slot.unwrap_or(0))
            .max()
            .map_or(0, |s| s + 1);
        // A job of a million completions is written a batch at a time.
        let batch = super::orchestrator::MAX_CHANGES.saturating_sub(plan.creates.len()) as u64;
        for n in 0..remaining.min(room).min(batch) {
            plan.creates
                .push(new_job_task(slot(next_slot + n as i64), None, rng).into());
        }
    } else if is_global_job(service) {
        for node in eligible {
            let id = node.id.clone().unwrap_or_default();
            let has_task = current.iter().any(|t| {
                t.node_id.as_deref() == Some(id.as_str())
                    && (is_live(t) || state(t) == TaskState::COMPLETE || !retries(service, t))
            });
            if !has_task {
                plan.creates.push(new_job_task(None, Some(id), rng).into());
            }
        }
    }
}

/// `ServiceStatus` of a job: (running, desired, completed) of the current run.
pub fn status(service: &SwarmService, tasks: &[SwarmTask]) -> (u64, u64, u64) {
    let iteration = iteration(service);
    let current: Vec<&SwarmTask> = tasks
        .iter()
        .filter(|t| of_iteration(t, iteration))
        .collect();
    let running = current
        .iter()
        .filter(|t| state(t) == TaskState::RUNNING)
        .count() as u64;
    let completed = current
        .iter()
        .filter(|t| state(t) == TaskState::COMPLETE)
        .count() as u64;
    let desired = match replicated_job(service) {
        // The engine reports MaxConcurrent, also once the job is done.
        Some((max, _)) => max,
        None => current
            .iter()
            .filter(|t| is_live(t) && desired(t) == TaskState::RUNNING)
            .count() as u64,
    };
    (running, desired, completed)
}

pub fn now_iteration_status(iteration: u64) -> bollard::models::ServiceJobStatus {
    bollard::models::ServiceJobStatus {
        job_iteration: Some(version(iteration)),
        last_execution: Some(super::tasks::now()),
    }
}

/// Lets a `&mut dyn RngCore` be passed where `impl RngCore` is wanted.
struct RngRef<'a>(&'a mut dyn rand::RngCore);

impl rand::RngCore for RngRef<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

/// Go's `omitempty`: an index or slot of 0 is not shown, as the engine
/// shows the first iteration's `JobIteration` as `{}` and slot 0 not at all.
fn version(iteration: u64) -> ObjectVersion {
    ObjectVersion {
        index: (iteration != 0).then_some(iteration),
    }
}

fn slot(slot: i64) -> Option<i64> {
    (slot != 0).then_some(slot)
}
