//! Task facts every loop shares: swarmkit's state order, new tasks, and
//! what a task's spec must equal to be up to date.

use std::time::SystemTime;

use bollard::models::{Service, Task, TaskSpec, TaskState, TaskStatus};

use crate::store::Store;
use crate::types::{new_id, Kind, Timestamp};

pub use crate::types::task_state_rank as rank;

pub fn state(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .and_then(|s| s.state)
        .unwrap_or(TaskState::NEW)
}

pub fn desired(task: &Task) -> TaskState {
    task.desired_state.unwrap_or(TaskState::RUNNING)
}

pub fn is_terminal(state: TaskState) -> bool {
    rank(state) > rank(TaskState::RUNNING)
}

/// A task the orchestrator still wants (desired `ready` or `running`).
pub fn is_live(task: &Task) -> bool {
    rank(desired(task)) <= rank(TaskState::RUNNING)
}

/// swarmkit's task name: `<service>.<slot>.<taskid>`, the node ID in place
/// of the slot for global tasks.
pub fn name(service: &str, task: &Task) -> String {
    name_on(service, task, task.node_id.as_deref().unwrap_or(""))
}

/// [`name`], with `node_id` standing in for the slot of a global task (the
/// agent's own ID, for a task that does not carry it).
pub fn name_on(service: &str, task: &Task, node_id: &str) -> String {
    let middle = match task.slot {
        Some(slot) if slot > 0 => slot.to_string(),
        _ => node_id.to_string(),
    };
    format!("{service}.{middle}.{}", task.id.as_deref().unwrap_or(""))
}

/// [`name`], the service's name looked up in `store` (empty when the
/// service is gone).
pub fn name_in(store: &Store, task: &Task) -> String {
    let service = task
        .service_id
        .as_deref()
        .and_then(|id| store.get(Kind::Service, id))
        .and_then(|o| o.name().map(str::to_string))
        .unwrap_or_default();
    name(&service, task)
}

/// The engine container the agent reported running the task, if any.
pub fn container_id(task: &Task) -> Option<String> {
    task.status
        .as_ref()?
        .container_status
        .as_ref()?
        .container_id
        .clone()
        .filter(|c| !c.is_empty())
}

pub fn now() -> String {
    Timestamp::from_system(SystemTime::now()).to_rfc3339()
}

pub fn status(state: TaskState, message: &str, err: Option<String>) -> TaskStatus {
    TaskStatus {
        timestamp: Some(now()),
        state: Some(state),
        message: Some(message.to_string()),
        err,
        // The engine always shows an (empty) PortStatus.
        port_status: Some(Default::default()),
        ..TaskStatus::default()
    }
}

/// The spec a task of `service` runs: the service's TaskTemplate, without
/// `Runtime`, which the engine shows on services but not on tasks.
pub fn task_spec(service: &Service) -> TaskSpec {
    let mut spec = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.clone())
        .unwrap_or_default();
    spec.runtime = None;
    spec
}

/// A new task for `service` in `slot` (replicated) or on `node` (global),
/// waiting for the scheduler.
pub fn new_task(
    service: &Service,
    slot: Option<i64>,
    node: Option<String>,
    rng: &mut impl rand::RngCore,
) -> Task {
    Task {
        id: Some(new_id(rng)),
        labels: Some(Default::default()),
        spec: Some(task_spec(service)),
        service_id: service.id.clone(),
        slot,
        node_id: node,
        status: Some(status(TaskState::PENDING, "pending task scheduling", None)),
        desired_state: Some(TaskState::RUNNING),
        ..Task::default()
    }
}

/// Up to date = the task runs the service's current task spec.
pub fn is_up_to_date(task: &Task, service: &Service) -> bool {
    task.spec.as_ref() == Some(&task_spec(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_ordered_as_in_swarmkit() {
        assert!(rank(TaskState::PENDING) < rank(TaskState::ASSIGNED));
        assert!(!is_terminal(TaskState::RUNNING));
        assert!(is_terminal(TaskState::COMPLETE));
        assert!(is_terminal(TaskState::REJECTED));
    }
}
