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
use crate::network::task::ServiceView;
use crate::network::{Dns, TaskNetworking};
use crate::store::{Proposer, Store, Transaction};
use crate::types::{Kind, Object, Timestamp};

/// How many reports one raft entry carries at most.
const MAX_BATCH: usize = 512;

/// Keeps `assignments` equal to the tasks placed on `node_id`; with
/// `computed_at`, also the store index the latest set reflects (sent after
/// the set, so a reader of the index then the set gets a set at least that
/// recent).
pub async fn publish_assignments(
    node_id: String,
    store: Arc<Store>,
    dns: Dns,
    assignments: watch::Sender<Arc<Vec<Assignment>>>,
    computed_at: Option<watch::Sender<u64>>,
    shutdown: CancellationToken,
) {
    let mut watcher = store.watch_from(store.index());
    // The first set is always sent, even empty: the agent waits for it
    // before it removes containers no task claims.
    let index = store.index();
    assignments.send_replace(Arc::new(assignment_set(&store, &node_id, dns)));
    if let Some(at) = &computed_at {
        at.send_replace(index);
    }
    loop {
        if !super::wait_for_change(&store, &mut watcher, &shutdown, None).await {
            break;
        }
        let index = store.index();
        let set = assignment_set(&store, &node_id, dns);
        assignments.send_if_modified(|current| {
            let same = current.as_slice() == set.as_slice();
            if !same {
                *current = Arc::new(set);
            }
            !same
        });
        if let Some(at) = &computed_at {
            at.send_replace(index);
        }
    }
}

/// Tasks the scheduler has placed on the node, whatever their desired state.
fn assignment_set(store: &Store, node_id: &str, dns: Dns) -> Vec<Assignment> {
    let cluster_id = crate::network::cluster_of(store).unwrap_or_default();
    let mut set: Vec<Assignment> = store.read(|tables| {
        let view = (dns == Dns::Carried).then(|| ServiceView::new(tables, node_id));
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
                // Only tasks that will run need their files and networks.
                let will_run = rank(state(&task)) < rank(TaskState::COMPLETE)
                    && task
                        .desired_state
                        .is_none_or(|d| rank(d) <= rank(TaskState::RUNNING));
                let (secrets, configs) = if will_run {
                    payloads(tables, &task)
                } else {
                    (Vec::new(), Vec::new())
                };
                let networking = if will_run {
                    crate::network::task::for_task(
                        tables,
                        &task,
                        &cluster_id,
                        node_id,
                        dns,
                        view.as_ref(),
                    )
                } else {
                    TaskNetworking::default()
                };
                Assignment {
                    task: task.task,
                    service_name,
                    secrets,
                    configs,
                    networking,
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
        let mut updated = *task;
        updated.status = Some(status);
        tx = tx.update(Object::Task(Box::new(updated)), version);
        changed = true;
    }
    changed.then_some(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SwarmNetwork;
    use bollard::models::{
        EndpointPortConfig, EndpointPortConfigPublishModeEnum, Ipam, IpamConfig, Network,
        NetworkAttachmentConfig, Service, ServiceEndpoint, TaskSpec, TaskStatus,
    };
    use std::net::Ipv4Addr;

    fn network() -> Object {
        Object::Network(Box::new(SwarmNetwork {
            network: Network {
                id: Some("net1".into()),
                name: Some("front".into()),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some("10.0.1.0/24".into()),
                        gateway: Some("10.0.1.1".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }))
    }

    fn port(published: i64, mode: EndpointPortConfigPublishModeEnum) -> EndpointPortConfig {
        EndpointPortConfig {
            target_port: Some(80),
            published_port: Some(published),
            publish_mode: Some(mode),
            ..Default::default()
        }
    }

    fn service() -> Object {
        Object::Service(
            Service {
                id: Some("svc1".into()),
                endpoint: Some(ServiceEndpoint {
                    ports: Some(vec![
                        port(8080, EndpointPortConfigPublishModeEnum::HOST),
                        port(8081, EndpointPortConfigPublishModeEnum::INGRESS),
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into(),
        )
    }

    fn task() -> Object {
        Object::Task(Box::from(Task {
            id: Some("task1".into()),
            service_id: Some("svc1".into()),
            node_id: Some("node1".into()),
            spec: Some(TaskSpec {
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some("net1".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: Some(TaskState::ASSIGNED),
                ..Default::default()
            }),
            desired_state: Some(TaskState::RUNNING),
            ..Default::default()
        }))
    }

    fn store() -> Arc<Store> {
        let store = Store::new();
        let tx = Transaction::new(Timestamp { secs: 1, nanos: 0 })
            .create(network())
            .create(service())
            .create(task());
        assert!(store.apply(1, &tx).is_ok());
        store
    }

    #[test]
    fn assignments_carry_the_tasks_networks_host_ports_and_dns() {
        let store = store();
        let set = assignment_set(&store, "node1", Dns::OnGateways);
        assert_eq!(set.len(), 1);
        let networking = &set[0].networking;
        let ids: Vec<_> = networking
            .networks
            .iter()
            .map(|n| n.id.as_deref())
            .collect();
        assert_eq!(ids, vec![Some("net1")]);
        assert_eq!(
            networking.host_ports,
            vec![port(8080, EndpointPortConfigPublishModeEnum::HOST)]
        );
        assert_eq!(networking.dns, vec![Ipv4Addr::new(10, 0, 1, 1)]);
        // It crosses the cluster port intact.
        let wire = serde_json::to_string(&set[0]).unwrap_or_default();
        let back: Result<Assignment, _> = serde_json::from_str(&wire);
        assert_eq!(back.ok().as_ref(), Some(&set[0]));
    }

    #[test]
    fn a_worker_serves_dns_from_what_its_assignments_carry() {
        let store = store();
        let set = assignment_set(&store, "node1", Dns::Carried);
        assert_eq!(set.len(), 1);
        let networking = &set[0].networking;
        assert_eq!(networking.dns, vec![Ipv4Addr::new(10, 0, 1, 1)]);
        assert_eq!(networking.networks.len(), 1);
        // Only the task's own networks' names travel.
        assert!(networking.zones.keys().all(|id| id == "net1"));
    }
}
