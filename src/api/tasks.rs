//! `/tasks`: list and inspect, read from the store.

use crate::types::SwarmTask;
use http::{Response, StatusCode};

use super::filters::{label_matches, Filters};
use super::query::Query;
use super::{json, ApiError};
use crate::body::Body;
use crate::cluster::Manager;
use crate::store::Store;
use crate::types::{Kind, Object};

const FILTERS: [&str; 8] = [
    "_up-to-date",
    "desired-state",
    "id",
    "label",
    "name",
    "node",
    "runtime",
    "service",
];
const DESIRED_STATES: [&str; 14] = [
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
    "complete",
    "shutdown",
    "failed",
    "rejected",
    "remove",
];

/// `GET /tasks`. A swarm may hold tens of thousands of tasks, each with its
/// service's whole spec: filtering and encoding run on a blocking thread,
/// so the runtime thread that answers `/_ping` and proxied calls never
/// waits behind a large listing.
pub async fn list(manager: &Manager, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = Filters::parse(query.get("filters"), &FILTERS)?;
    for state in filters.values("desired-state") {
        if !DESIRED_STATES.contains(&state.as_str()) {
            return Err(ApiError::Internal(format!(
                "Invalid desired-state filter: '{state}'"
            )));
        }
    }
    let store = manager.store();
    // The engine resolves node and service references first: unknown → 404.
    let node_ids = resolve_all(&store, Kind::Node, filters.values("node"))?;
    let service_ids = resolve_all(&store, Kind::Service, filters.values("service"))?;
    tokio::task::spawn_blocking(move || {
        let objects = store.list(Kind::Task);
        let mut tasks: Vec<&SwarmTask> = objects
            .iter()
            .filter_map(|o| match &**o {
                Object::Task(task) => Some(&**task),
                _ => None,
            })
            .filter(|task| matches(&store, task, &filters, &node_ids, &service_ids))
            .collect();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        json(StatusCode::OK, &tasks)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("listing tasks failed: {e}")))
}

fn matches(
    store: &Store,
    task: &SwarmTask,
    filters: &Filters,
    node_ids: &[String],
    service_ids: &[String],
) -> bool {
    let id = task.id.as_deref().unwrap_or("");
    let desired = task
        .desired_state
        .map(|s| s.to_string())
        .unwrap_or_default();
    (node_ids.is_empty() || task.node_id.as_ref().is_some_and(|n| node_ids.contains(n)))
        && (service_ids.is_empty()
            || task
                .service_id
                .as_ref()
                .is_some_and(|s| service_ids.contains(s)))
        && filters.any("id", |f| id.starts_with(f))
        && filters.any("desired-state", |f| f == desired)
        && filters.any("name", |f| {
            crate::manager::tasks::name_in(store, task).starts_with(f)
        })
        && (!filters.contains("label")
            || filters
                .values("label")
                .iter()
                .all(|f| label_matches(service_labels(store, task).as_ref(), f)))
}

pub fn inspect(manager: &Manager, reference: &str) -> Result<Response<Body>, ApiError> {
    match &*manager.store().find(Kind::Task, reference)? {
        Object::Task(task) => Ok(json(StatusCode::OK, task)),
        _ => Err(ApiError::NotFound(format!("task {reference} not found"))),
    }
}

fn resolve_all(store: &Store, kind: Kind, references: &[String]) -> Result<Vec<String>, ApiError> {
    references
        .iter()
        .map(|r| Ok(store.find(kind, r)?.id().to_string()))
        .collect()
}

/// A task `label` filter matches the labels of its service, not its own.
fn service_labels(
    store: &Store,
    task: &SwarmTask,
) -> Option<std::collections::HashMap<String, String>> {
    let object = store.get(Kind::Service, task.service_id.as_deref()?)?;
    match &*object {
        Object::Service(service) => service.spec.as_ref()?.labels.clone(),
        _ => None,
    }
}
