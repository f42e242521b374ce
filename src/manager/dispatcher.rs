//! The manager side of a node's session: hands the node's agent its
//! assignment set (its tasks, from the store) and batches the status the
//! agent reports into raft. On one node the session is in-process; the
//! cluster transport carries the same two streams between hosts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bollard::models::{Task, TaskState};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::orchestrator::as_task;
use super::tasks::{rank, state};
use crate::agent::{Assignment, Payload, StatusReport};
use crate::store::{Proposer, Store, Transaction};
use crate::types::{Kind, Object, Timestamp};

/// How many reports one raft entry carries at most.
const MAX_BATCH: usize = 512;

/// Keeps `assignments` equal to the tasks placed on `node_id`.
pub async fn publish_assignments(
    node_id: String,
    store: Arc<Store>,
    assignments: watch::Sender<Arc<Vec<Assignment>>>,
    shutdown: CancellationToken,
) {
    let mut watcher = store.watch_from(store.index());
    // The first set is always sent, even empty: the agent waits for it
    // before it removes containers no task claims.
    assignments.send_replace(Arc::new(assignment_set(&store, &node_id)));
    loop {
        if !super::wait_for_change(&store, &mut watcher, &shutdown, None).await {
            break;
        }
        let set = assignment_set(&store, &node_id);
        assignments.send_if_modified(|current| {
            let same = current.as_slice() == set.as_slice();
            if !same {
                *current = Arc::new(set);
            }
            !same
        });
    }
}

/// Tasks the scheduler has placed on the node, whatever their desired state.
fn assignment_set(store: &Store, node_id: &str) -> Vec<Assignment> {
    let mut set: Vec<Assignment> = store.read(|tables| {
        tables
            .tasks_by_node(node_id)
            .iter()
            .filter_map(as_task)
            .filter(|t| rank(state(t)) >= rank(TaskState::ASSIGNED))
            .map(|task| {
                let service_name = task
                    .service_id
                    .as_deref()
                    .and_then(|id| tables.get(Kind::Service, id))
                    .and_then(|s| s.name().map(str::to_string))
                    .unwrap_or_default();
                // Only tasks that will run need their files.
                let wants_files = rank(state(&task)) < rank(TaskState::COMPLETE)
                    && task
                        .desired_state
                        .is_none_or(|d| rank(d) <= rank(TaskState::RUNNING));
                let (secrets, configs) = if wants_files {
                    payloads(tables, &task)
                } else {
                    (Vec::new(), Vec::new())
                };
                Assignment {
                    task,
                    service_name,
                    secrets,
                    configs,
                }
            })
            .collect()
    });
    set.sort_by(|a, b| a.task.id.cmp(&b.task.id));
    set
}

/// The data of the secrets and configs `task` refers to, decoded. One
/// that is gone (deleted while a task still refers to it) is left out; the
/// agent then fails the task, as swarm's does.
fn payloads(tables: &crate::store::Tables, task: &Task) -> (Vec<Payload>, Vec<Payload>) {
    let Some(spec) = task.spec.as_ref().and_then(|s| s.container_spec.as_ref()) else {
        return (Vec::new(), Vec::new());
    };
    let decode = |data: Option<&String>| {
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            data.map(String::as_str).unwrap_or(""),
        )
        .ok()
    };
    let mut secrets = Vec::new();
    for id in spec
        .secrets
        .iter()
        .flatten()
        .filter_map(|s| s.secret_id.as_deref())
    {
        if secrets.iter().any(|p: &Payload| p.id == id) {
            continue;
        }
        if let Some(Object::Secret(s)) = tables.get(Kind::Secret, id).as_deref() {
            if let Some(data) = decode(s.spec.as_ref().and_then(|s| s.data.as_ref())) {
                let templating = s.spec.as_ref().and_then(|s| s.templating.as_ref());
                secrets.push(Payload {
                    id: id.to_string(),
                    data,
                    templated: is_golang(templating),
                });
            }
        }
    }
    let mut configs = Vec::new();
    for id in spec
        .configs
        .iter()
        .flatten()
        .filter_map(|c| c.config_id.as_deref())
    {
        if configs.iter().any(|p: &Payload| p.id == id) {
            continue;
        }
        if let Some(Object::Config(c)) = tables.get(Kind::Config, id).as_deref() {
            if let Some(data) = decode(c.spec.as_ref().and_then(|s| s.data.as_ref())) {
                let templating = c.spec.as_ref().and_then(|s| s.templating.as_ref());
                configs.push(Payload {
                    id: id.to_string(),
                    data,
                    templated: is_golang(templating),
                });
            }
        }
    }
    (secrets, configs)
}

/// Swarm renders a payload only with the "golang" templating driver.
fn is_golang(templating: Option<&bollard::models::Driver>) -> bool {
    templating.is_some_and(|t| t.name == "golang")
}

/// Commits the agent's reports, many per raft entry.
pub async fn commit_reports(
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    mut reports: mpsc::Receiver<StatusReport>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            report = reports.recv() => match report {
                Some(report) => report,
                None => break,
            },
        };
        // Latest report per task wins; whatever is already queued joins the batch.
        let mut batch: HashMap<String, StatusReport> = HashMap::new();
        batch.insert(first.task_id.clone(), first);
        while batch.len() < MAX_BATCH {
            match reports.try_recv() {
                Ok(report) => {
                    batch.insert(report.task_id.clone(), report);
                }
                Err(_) => break,
            }
        }
        // A report is state, not a hint: keep trying until it is committed
        // (or the manager stops), or the task would stay where it was.
        loop {
            let result =
                super::propose_fresh(&proposer, || status_transaction(&store, &batch)).await;
            match result {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "task status could not be committed; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(super::RETRY_AFTER) => {}
            }
        }
    }
}

/// Status changes only move forward: a late report never undoes a newer state.
fn status_transaction(store: &Store, batch: &HashMap<String, StatusReport>) -> Option<Transaction> {
    let mut tx = Transaction::new(Timestamp::from_system(SystemTime::now()));
    let mut changed = false;
    for report in batch.values() {
        let Some(Object::Task(task)) = store.get(Kind::Task, &report.task_id).as_deref().cloned()
        else {
            continue;
        };
        let Some(new_state) = report.status.state else {
            continue;
        };
        let same = task.status.as_ref().is_some_and(|s| {
            s.state == report.status.state
                && s.message == report.status.message
                && s.err == report.status.err
                && s.container_status == report.status.container_status
        });
        if rank(new_state) < rank(state(&task)) || same {
            continue;
        }
        let version = task.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        let mut status = report.status.clone();
        status.port_status.get_or_insert_with(Default::default);
        let updated = Task {
            status: Some(status),
            ..*task
        };
        tx = tx.update(Object::Task(Box::new(updated)), version);
        changed = true;
    }
    changed.then_some(tx)
}
