//! `/nodes`: list, inspect, update, remove.

use std::time::SystemTime;

use bollard::models::{Node, NodeSpec, NodeSpecRoleEnum, NodeState};
use bytes::Bytes;
use http::{Response, StatusCode};

use super::decode;
use super::filters::{label_matches, Filters};
use super::query::Query;
use super::{json, ApiError, RpcCode};
use crate::body::Body;
use crate::cluster::Manager;
use crate::store::{Store, Transaction};
use crate::types::{Kind, Object, Timestamp};

const FILTERS: [&str; 6] = ["id", "label", "membership", "name", "node.label", "role"];

pub fn list(manager: &Manager, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = Filters::parse(query.get("filters"), &FILTERS)?;
    for role in filters.values("role") {
        if role != "manager" && role != "worker" {
            return Err(ApiError::Internal(format!("Invalid role filter: '{role}'")));
        }
    }
    for membership in filters.values("membership") {
        if membership != "accepted" && membership != "pending" {
            return Err(ApiError::Internal(format!(
                "Invalid membership filter: '{membership}'"
            )));
        }
    }
    let nodes: Vec<Node> = all_nodes(&manager.store())
        .into_iter()
        .filter(|node| matches(node, &filters))
        .map(|mut node| {
            manager.live_manager_status(&mut node);
            node
        })
        .collect();
    Ok(json(StatusCode::OK, &nodes))
}

pub fn inspect(manager: &Manager, reference: &str) -> Result<Response<Body>, ApiError> {
    let mut node = find(&manager.store(), reference)?;
    manager.live_manager_status(&mut node);
    Ok(json(StatusCode::OK, &node))
}

pub async fn update(
    manager: &Manager,
    reference: &str,
    query: &Query,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let raw = decode::value(&body)?;
    let version = query.version("node")?;
    let mut spec = node_spec(raw)?;
    let store = manager.store();
    let node = find(&store, reference)?;
    let id = node.id.clone().unwrap_or_default();
    let was_manager = role(&node) == Some(NodeSpecRoleEnum::MANAGER);
    let demoting = was_manager && spec.role == Some(NodeSpecRoleEnum::WORKER);
    if demoting && manager_count(&store) <= 1 {
        return Err(ApiError::rpc(
            RpcCode::FailedPrecondition,
            "attempting to demote the last manager of the swarm",
        ));
    }
    spec.labels.get_or_insert_with(Default::default);
    let updated = Node {
        spec: Some(spec),
        ..node
    };
    let tx = Transaction::new(Timestamp::from_system(SystemTime::now()))
        .update(Object::Node(Box::new(updated)), version);
    manager.proposer().propose(tx).await??;
    tracing::debug!(node = %id, "node updated");
    Ok(super::empty_ok())
}

pub async fn remove(
    manager: &Manager,
    reference: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let store = manager.store();
    let node = find(&store, reference)?;
    let id = node.id.clone().unwrap_or_default();
    if role(&node) == Some(NodeSpecRoleEnum::MANAGER) || node.manager_status.is_some() {
        return Err(ApiError::rpc(
            RpcCode::FailedPrecondition,
            format!("node {id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"),
        ));
    }
    let down = node.status.as_ref().and_then(|s| s.state) == Some(NodeState::DOWN);
    if !down && !query.flag("force") {
        return Err(ApiError::rpc(
            RpcCode::FailedPrecondition,
            format!("node {id} is not down and can't be removed"),
        ));
    }
    let tx =
        Transaction::new(Timestamp::from_system(SystemTime::now())).delete(Kind::Node, id, None);
    manager.proposer().propose(tx).await??;
    Ok(super::empty_ok())
}

/// Resolves an ID, hostname or ID prefix as the engine does.
/// The engine reads Role and Availability case-insensitively and names a
/// bad one; the typed spec takes lowercase.
pub(super) fn node_spec(mut raw: serde_json::Value) -> Result<NodeSpec, ApiError> {
    const CHOICES: [(&str, &[&str]); 2] = [
        ("Role", &["worker", "manager"]),
        ("Availability", &["active", "pause", "drain"]),
    ];
    for (field, allowed) in CHOICES {
        for value in decode::values_of(&mut raw, field) {
            let Some(text) = value.as_str() else {
                continue;
            };
            let lower = text.to_ascii_lowercase();
            if !allowed.contains(&lower.as_str()) {
                return Err(ApiError::BadRequest(format!("invalid {field}: {text:?}")));
            }
            *value = serde_json::Value::String(lower);
        }
    }
    Ok(decode::from_value(&raw)?)
}

pub fn find(store: &Store, reference: &str) -> Result<Node, ApiError> {
    match &*store.find(Kind::Node, reference)? {
        Object::Node(node) => Ok((**node).clone()),
        _ => Err(ApiError::NotFound(format!("node {reference} not found"))),
    }
}

pub fn all_nodes(store: &Store) -> Vec<Node> {
    let mut nodes: Vec<Node> = store
        .list(Kind::Node)
        .iter()
        .filter_map(|o| match &**o {
            Object::Node(node) => Some((**node).clone()),
            _ => None,
        })
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    nodes
}

pub fn manager_count(store: &Store) -> usize {
    all_nodes(store)
        .iter()
        .filter(|n| role(n) == Some(NodeSpecRoleEnum::MANAGER))
        .count()
}

fn role(node: &Node) -> Option<NodeSpecRoleEnum> {
    node.spec.as_ref().and_then(|s| s.role)
}

fn matches(node: &Node, filters: &Filters) -> bool {
    let id = node.id.as_deref().unwrap_or("");
    let hostname = node
        .description
        .as_ref()
        .and_then(|d| d.hostname.as_deref())
        .unwrap_or("");
    let spec_name = node
        .spec
        .as_ref()
        .and_then(|s| s.name.as_deref())
        .unwrap_or("");
    let engine_labels = node
        .description
        .as_ref()
        .and_then(|d| d.engine.as_ref())
        .and_then(|e| e.labels.as_ref());
    let spec_labels = node.spec.as_ref().and_then(|s| s.labels.as_ref());
    let role_name = match role(node) {
        Some(NodeSpecRoleEnum::MANAGER) => "manager",
        _ => "worker",
    };
    filters.any("id", |f| id.starts_with(f))
        && filters.any("name", |f| hostname.starts_with(f) || (!spec_name.is_empty() && spec_name.starts_with(f)))
        && filters.any("role", |f| f == role_name)
        // Every node of shoal's is accepted: there is no pending membership.
        && filters.any("membership", |f| f == "accepted")
        && (!filters.contains("label") || filters.values("label").iter().all(|f| label_matches(engine_labels, f)))
        && (!filters.contains("node.label") || filters.values("node.label").iter().all(|f| label_matches(spec_labels, f)))
}
