//! Placement: pending tasks go to a node that is ready and active, meets the
//! service's constraints, platform, resource reservations and max replicas;
//! the least loaded such node wins. Decisions are committed in one batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bollard::models::{
    Node, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState, Service, Task, TaskState,
};
use tokio_util::sync::CancellationToken;

use super::orchestrator::{as_node, as_service, as_task};
use super::tasks::{self, is_live, is_terminal, state};
use crate::network::address::Addresses;
use crate::network::allocate;
use crate::store::{Proposer, Store, Transaction};
use crate::types::{Kind, Object, SwarmTask, Timestamp};

pub async fn run(store: Arc<Store>, proposer: Arc<dyn Proposer>, shutdown: CancellationToken) {
    let mut watcher = store.watch_from(store.index());
    loop {
        let (result, _) = super::propose_planned(&proposer, &store, |s| (plan(s), ())).await;
        let mut wake = None;
        if let Err(error) = result {
            tracing::warn!(%error, "scheduler could not commit its decisions");
            wake = Some(tokio::time::Instant::now() + super::RETRY_AFTER);
        }
        if !super::wait_for_change(&store, &mut watcher, &shutdown, wake).await {
            break;
        }
    }
}

/// Why a node was not chosen, for the engine's "no suitable node (…)" text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Refusal {
    NotAvailable,
    Constraints,
    Platform,
    Resources,
    MaxReplicas,
}

impl Refusal {
    /// swarmkit's wording: "1 node not available for new tasks",
    /// "scheduling constraints not satisfied on 2 nodes".
    fn describe(self, count: usize) -> String {
        let nodes = if count == 1 { "node" } else { "nodes" };
        match self {
            Refusal::NotAvailable => format!("{count} {nodes} {}", self.text()),
            _ => format!("{} on {count} {nodes}", self.text()),
        }
    }

    fn text(self) -> &'static str {
        match self {
            Refusal::NotAvailable => "not available for new tasks",
            Refusal::Constraints => "scheduling constraints not satisfied",
            Refusal::Platform => "unsupported platform",
            Refusal::Resources => "insufficient resources",
            Refusal::MaxReplicas => "max replicas per node limit exceed",
        }
    }
}

fn plan(store: &Store) -> Option<Transaction> {
    let (services, tasks, nodes) = store.read(|t| {
        let services: HashMap<String, crate::types::SwarmService> = t
            .iter(Kind::Service)
            .filter_map(as_service)
            .map(|s| (s.id.clone().unwrap_or_default(), s))
            .collect();
        let tasks: Vec<SwarmTask> = t.iter(Kind::Task).filter_map(as_task).collect();
        let nodes: Vec<Node> = t.iter(Kind::Node).filter_map(as_node).collect();
        (services, tasks, nodes)
    });
    let mut load = Load::from_tasks(&tasks);
    let mut tx = Transaction::new(Timestamp::from_system(SystemTime::now()));
    let mut changed = false;
    let services_list: Vec<_> = services.values().cloned().collect();
    let mut addresses = Addresses::new(allocate::networks(store), &tasks, &services_list);
    let members: std::collections::HashSet<String> =
        nodes.iter().filter_map(|n| n.id.clone()).collect();
    addresses.forget_nodes_except(&members);
    // A manager realises every swarm network, tasks or not.
    for node in nodes.iter().filter(|n| is_manager(n)) {
        if let Err(error) = addresses.gateways_everywhere(node.id.as_deref().unwrap_or("")) {
            tracing::warn!(%error, "no gateway address for a manager");
        }
    }
    let mut pending: Vec<&SwarmTask> = tasks
        .iter()
        .filter(|t| state(t) == TaskState::PENDING && is_live(t))
        .filter(|t| t.node_id.is_none() || is_global_task(t))
        .collect();
    pending.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    // One batch per round, as the orchestrator's: the commit wakes the
    // loop again for the rest.
    let mut decided = 0;
    for task in pending {
        if decided >= super::orchestrator::MAX_CHANGES {
            break;
        }
        let Some(service) = task.service_id.as_ref().and_then(|id| services.get(id)) else {
            continue;
        };
        let decision = choose(task, service, &nodes, &load);
        let mut updated = task.clone();
        match decision {
            Ok(node_id) => {
                // Addresses first: a task without them must not be placed.
                if let Err(error) = addresses.attach(&mut updated, &node_id) {
                    let err = Some(error.to_string());
                    if task.status.as_ref().and_then(|s| s.err.clone()) == err {
                        continue;
                    }
                    updated.status = Some(tasks::status(
                        TaskState::PENDING,
                        "pending task scheduling",
                        err,
                    ));
                    let version = task.version.as_ref().and_then(|v| v.index).unwrap_or(0);
                    tx = tx.update(Object::Task(Box::new(updated)), version);
                    changed = true;
                    decided += 1;
                    continue;
                }
                load.add(&node_id, task, service);
                updated.node_id = Some(node_id);
                updated.status = Some(tasks::status(
                    TaskState::ASSIGNED,
                    "scheduler assigned task to node",
                    None,
                ));
            }
            Err(reason) => {
                let err = Some(format!("no suitable node ({reason})"));
                if task.status.as_ref().and_then(|s| s.err.clone()) == err {
                    continue;
                }
                updated.status = Some(tasks::status(
                    TaskState::PENDING,
                    "pending task scheduling",
                    err,
                ));
            }
        }
        let version = task.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        tx = tx.update(Object::Task(Box::new(updated)), version);
        changed = true;
        decided += 1;
    }
    for network in addresses.changed_networks() {
        let version = network.version.index.unwrap_or(0);
        tx = tx.update(Object::Network(Box::new(network)), version);
        changed = true;
    }
    changed.then_some(tx)
}

fn is_manager(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER)
}

/// Global tasks are created for a node but still pass through the scheduler.
fn is_global_task(task: &Task) -> bool {
    task.slot.is_none() && task.node_id.is_some()
}

fn choose(task: &Task, service: &Service, nodes: &[Node], load: &Load) -> Result<String, String> {
    let candidates: Vec<&Node> = match &task.node_id {
        Some(node) => nodes
            .iter()
            .filter(|n| n.id.as_ref() == Some(node))
            .collect(),
        None => nodes.iter().collect(),
    };
    let mut refusals: HashMap<Refusal, usize> = HashMap::new();
    let mut eligible = Vec::new();
    for node in &candidates {
        match check(node, service, load) {
            Err(refusal) => *refusals.entry(refusal).or_default() += 1,
            Ok(()) => eligible.push(*node),
        }
    }
    let eligible = narrow_by_preferences(eligible, &candidates, service, load);
    let mut best: Option<(&Node, (usize, usize))> = None;
    for node in eligible {
        let id = node.id.clone().unwrap_or_default();
        let score = (load.of_service(&id, service), load.total(&id));
        if best.as_ref().is_none_or(|(_, s)| score < *s) {
            best = Some((node, score));
        }
    }
    if let Some((node, _)) = best {
        return Ok(node.id.clone().unwrap_or_default());
    }
    let mut reasons: Vec<(Refusal, usize)> = refusals.into_iter().collect();
    reasons.sort();
    let text: Vec<String> = reasons.iter().map(|&(r, n)| r.describe(n)).collect();
    Err(if text.is_empty() {
        "0 nodes".to_string()
    } else {
        text.join(", ")
    })
}

fn check(node: &Node, service: &Service, load: &Load) -> Result<(), Refusal> {
    let ready = node.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY);
    let active = matches!(
        node.spec.as_ref().and_then(|s| s.availability),
        None | Some(NodeSpecAvailabilityEnum::ACTIVE)
    );
    if !ready || !active {
        return Err(Refusal::NotAvailable);
    }
    if !satisfies_constraints(node, service) {
        return Err(Refusal::Constraints);
    }
    if !platform_matches(node, service) {
        return Err(Refusal::Platform);
    }
    let id = node.id.clone().unwrap_or_default();
    let placement = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.placement.as_ref());
    if let Some(max) = placement.and_then(|p| p.max_replicas).filter(|&m| m > 0) {
        if load.of_service(&id, service) as i64 >= max {
            return Err(Refusal::MaxReplicas);
        }
    }
    let (cpu, memory) = reservations(service);
    let resources = node.description.as_ref().and_then(|d| d.resources.as_ref());
    let (node_cpu, node_memory) = resources
        .map(|r| (r.nano_cpus.unwrap_or(0), r.memory_bytes.unwrap_or(0)))
        .unwrap_or((0, 0));
    let (used_cpu, used_memory) = load.reserved(&id);
    if (cpu > 0 && used_cpu + cpu > node_cpu) || (memory > 0 && used_memory + memory > node_memory)
    {
        return Err(Refusal::Resources);
    }
    Ok(())
}

fn reservations(service: &Service) -> (i64, i64) {
    let r = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.resources.as_ref())
        .and_then(|r| r.reservations.as_ref());
    (
        r.and_then(|r| r.nano_cpus).unwrap_or(0),
        r.and_then(|r| r.memory_bytes).unwrap_or(0),
    )
}

/// `node.id`, `node.hostname`, `node.role`, `node.platform.os|arch`,
/// `node.labels.<k>`, `engine.labels.<k>` with `==` or `!=`.
pub fn satisfies_constraints(node: &Node, service: &Service) -> bool {
    let constraints = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.constraints.clone())
        .unwrap_or_default();
    constraints.iter().all(|c| constraint_holds(node, c))
}

pub fn parse_constraint(text: &str) -> Option<(String, bool, String)> {
    let (key, equal, value) = if let Some((k, v)) = text.split_once("!=") {
        (k, false, v)
    } else {
        let (k, v) = text.split_once("==")?;
        (k, true, v)
    };
    Some((key.trim().to_string(), equal, value.trim().to_string()))
}

fn constraint_holds(node: &Node, text: &str) -> bool {
    let Some((key, equal, value)) = parse_constraint(text) else {
        return false;
    };
    let actual = node_attribute(node, &key);
    let matches = match &actual {
        Some(actual) if key.starts_with("node.platform.arch") => same_arch(actual, &value),
        Some(actual) => actual.eq_ignore_ascii_case(&value),
        None => false,
    };
    if equal {
        matches
    } else {
        !matches
    }
}

/// A node's value for a constraint or preference key (`node.id`,
/// `node.hostname`, `node.role`, `node.platform.os|arch`,
/// `node.labels.X`, `engine.labels.X`); `None` when it has none.
fn node_attribute(node: &Node, key: &str) -> Option<String> {
    let description = node.description.as_ref();
    match key.to_ascii_lowercase().as_str() {
        "node.id" => node.id.clone(),
        "node.hostname" => description.and_then(|d| d.hostname.clone()),
        "node.role" => node
            .spec
            .as_ref()
            .and_then(|s| s.role)
            .map(|r| r.to_string()),
        "node.platform.os" => description
            .and_then(|d| d.platform.as_ref())
            .and_then(|p| p.os.clone()),
        "node.platform.arch" => description
            .and_then(|d| d.platform.as_ref())
            .and_then(|p| p.architecture.clone()),
        lower => {
            if let Some(label) = key
                .strip_prefix("node.labels.")
                .filter(|_| lower.starts_with("node.labels."))
            {
                node.spec
                    .as_ref()
                    .and_then(|s| s.labels.as_ref())
                    .and_then(|l| l.get(label).cloned())
            } else if let Some(label) = key
                .strip_prefix("engine.labels.")
                .filter(|_| lower.starts_with("engine.labels."))
            {
                description
                    .and_then(|d| d.engine.as_ref())
                    .and_then(|e| e.labels.as_ref())
                    .and_then(|l| l.get(label).cloned())
            } else {
                None
            }
        }
    }
}

/// The spread descriptors of the service's placement preferences, in order.
fn spread_keys(service: &Service) -> Vec<String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.preferences.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.spread.as_ref()?.spread_descriptor.clone())
        .collect()
}

/// Placement preferences, as swarmkit applies them: for each spread key in
/// turn, only the eligible nodes of the group (nodes sharing the key's
/// value; nodes without it form one group) that runs the fewest tasks of
/// the service stay candidates.
fn narrow_by_preferences<'a>(
    eligible: Vec<&'a Node>,
    all: &[&Node],
    service: &Service,
    load: &Load,
) -> Vec<&'a Node> {
    let mut eligible = eligible;
    for key in spread_keys(service) {
        let value = |n: &Node| node_attribute(n, &key).unwrap_or_default();
        let mut tasks_in: HashMap<String, usize> = HashMap::new();
        for node in all {
            let id = node.id.clone().unwrap_or_default();
            *tasks_in.entry(value(node)).or_default() += load.of_service(&id, service);
        }
        let Some(fewest) = eligible
            .iter()
            .map(|n| tasks_in.get(&value(n)).copied().unwrap_or(0))
            .min()
        else {
            return eligible;
        };
        eligible.retain(|n| tasks_in.get(&value(n)).copied().unwrap_or(0) == fewest);
    }
    eligible
}

/// The scheduler treats x86_64≡amd64 and aarch64≡arm64.
fn same_arch(a: &str, b: &str) -> bool {
    let norm = |s: &str| match s.to_ascii_lowercase().as_str() {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    };
    norm(a) == norm(b)
}

fn platform_matches(node: &Node, service: &Service) -> bool {
    let platforms = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.platforms.clone())
        .unwrap_or_default();
    if platforms.is_empty() {
        return true;
    }
    let node_platform = node
        .description
        .as_ref()
        .and_then(|d| d.platform.clone())
        .unwrap_or_default();
    platforms.iter().any(|p| {
        let os_ok =
            p.os.as_deref()
                .is_none_or(|os| os.is_empty() || Some(os) == node_platform.os.as_deref());
        let arch_ok = p.architecture.as_deref().is_none_or(|a| {
            a.is_empty() || same_arch(a, node_platform.architecture.as_deref().unwrap_or(""))
        });
        os_ok && arch_ok
    })
}

/// What is already placed on each node.
#[derive(Default)]
struct Load {
    per_service: HashMap<(String, String), usize>,
    total: HashMap<String, usize>,
    reserved: HashMap<String, (i64, i64)>,
    service_reservations: HashMap<String, (i64, i64)>,
}

impl Load {
    fn from_tasks(tasks: &[SwarmTask]) -> Self {
        let mut load = Load::default();
        for task in tasks
            .iter()
            .filter(|t| is_live(t) && !is_terminal(state(t)))
        {
            if let Some(node) = &task.node_id {
                let service = task.service_id.clone().unwrap_or_default();
                *load.per_service.entry((node.clone(), service)).or_default() += 1;
                *load.total.entry(node.clone()).or_default() += 1;
                let r = task
                    .spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.reservations.as_ref());
                let (cpu, mem) = (
                    r.and_then(|r| r.nano_cpus).unwrap_or(0),
                    r.and_then(|r| r.memory_bytes).unwrap_or(0),
                );
                let entry = load.reserved.entry(node.clone()).or_default();
                entry.0 += cpu;
                entry.1 += mem;
            }
        }
        load
    }

    fn add(&mut self, node: &str, task: &Task, service: &Service) {
        let service_id = task.service_id.clone().unwrap_or_default();
        *self
            .per_service
            .entry((node.to_string(), service_id.clone()))
            .or_default() += 1;
        *self.total.entry(node.to_string()).or_default() += 1;
        let (cpu, mem) = *self
            .service_reservations
            .entry(service_id)
            .or_insert_with(|| reservations(service));
        let entry = self.reserved.entry(node.to_string()).or_default();
        entry.0 += cpu;
        entry.1 += mem;
    }

    fn of_service(&self, node: &str, service: &Service) -> usize {
        let key = (node.to_string(), service.id.clone().unwrap_or_default());
        self.per_service.get(&key).copied().unwrap_or(0)
    }

    fn total(&self, node: &str) -> usize {
        self.total.get(node).copied().unwrap_or(0)
    }

    fn reserved(&self, node: &str) -> (i64, i64) {
        self.reserved.get(node).copied().unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        NodeDescription, NodeSpec, NodeStatus, ServiceSpec, TaskSpec, TaskSpecPlacement,
    };

    fn node(labels: &[(&str, &str)]) -> Node {
        Node {
            id: Some("n1".into()),
            spec: Some(NodeSpec {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                role: Some(bollard::models::NodeSpecRoleEnum::MANAGER),
                availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: Some("vm".into()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(NodeState::READY),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service(constraints: &[&str]) -> Service {
        Service {
            id: Some("s1".into()),
            spec: Some(ServiceSpec {
                task_template: Some(TaskSpec {
                    placement: Some(TaskSpecPlacement {
                        constraints: Some(constraints.iter().map(|c| c.to_string()).collect()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn constraints_on_labels_roles_and_hostnames() {
        let n = node(&[("x", "y")]);
        assert!(satisfies_constraints(&n, &service(&["node.labels.x==y"])));
        assert!(!satisfies_constraints(&n, &service(&["node.labels.x==z"])));
        assert!(satisfies_constraints(
            &n,
            &service(&["node.role==manager", "node.hostname!=other"])
        ));
        assert!(!satisfies_constraints(
            &n,
            &service(&["node.labels.missing==1"])
        ));
        assert!(satisfies_constraints(
            &n,
            &service(&["node.labels.missing!=1"])
        ));
    }

    #[test]
    fn unsatisfiable_tasks_get_the_engines_reason() {
        let n = node(&[]);
        let s = service(&["node.labels.x==y"]);
        let task = Task::default();
        let err = choose(&task, &s, &[n], &Load::default()).unwrap_err();
        assert_eq!(err, "scheduling constraints not satisfied on 1 node");
    }

    #[test]
    fn spread_preferences_fill_the_emptiest_zone_first() {
        let mut nodes = Vec::new();
        for (id, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            let mut n = node(&[("zone", zone)]);
            n.id = Some(id.into());
            nodes.push(n);
        }
        let mut s = service(&[]);
        if let Some(placement) = s
            .spec
            .as_mut()
            .and_then(|spec| spec.task_template.as_mut())
            .and_then(|t| t.placement.as_mut())
        {
            placement.preferences = Some(vec![bollard::models::TaskSpecPlacementPreferences {
                spread: Some(bollard::models::TaskSpecPlacementSpread {
                    spread_descriptor: Some("node.labels.zone".into()),
                }),
            }]);
        }
        let mut load = Load::default();
        let mut placed = Vec::new();
        for _ in 0..4 {
            let task = Task {
                service_id: Some("s1".into()),
                ..Task::default()
            };
            let chosen = choose(&task, &s, &nodes, &load).unwrap();
            load.add(&chosen, &task, &s);
            placed.push(chosen);
        }
        // Zone b's one node gets half the tasks; zone a's two share the rest.
        assert_eq!(
            placed.iter().filter(|n| *n == "b1").count(),
            2,
            "{placed:?}"
        );
        assert_eq!(
            placed.iter().filter(|n| *n == "a1").count(),
            1,
            "{placed:?}"
        );
    }
}

#[cfg(test)]
mod address_tests {
    use super::*;
    use bollard::models::{
        Ipam, IpamConfig, Network, NetworkAttachmentConfig, NodeSpec, NodeStatus, ServiceSpec,
        TaskSpec, TaskStatus,
    };
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn node(id: &str, role: bollard::models::NodeSpecRoleEnum) -> Object {
        Object::Node(Box::new(Node {
            id: Some(id.into()),
            spec: Some(NodeSpec {
                role: Some(role),
                availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(NodeState::READY),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    fn network() -> Object {
        Object::Network(Box::new(crate::types::SwarmNetwork {
            network: Network {
                id: Some("net".into()),
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

    fn spec() -> TaskSpec {
        TaskSpec {
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some("net".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn pending(id: &str, secs: i64) -> Object {
        Object::Task(Box::from(Task {
            id: Some(id.into()),
            service_id: Some("svc".into()),
            spec: Some(spec()),
            status: Some(TaskStatus {
                state: Some(TaskState::PENDING),
                ..Default::default()
            }),
            desired_state: Some(TaskState::RUNNING),
            created_at: Some(format!("2026-01-01T00:00:{secs:02}Z")),
            ..Default::default()
        }))
    }

    /// One batch places tasks over two nodes: every task gets its own
    /// address, every node its own gateway, in the same transaction.
    #[test]
    fn a_batch_gives_distinct_addresses_and_one_gateway_per_node() {
        use bollard::models::NodeSpecRoleEnum::{MANAGER, WORKER};
        let store = Store::new();
        let service = Object::Service(Box::new(
            bollard::models::Service {
                id: Some("svc".into()),
                spec: Some(ServiceSpec {
                    name: Some("web".into()),
                    task_template: Some(spec()),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into(),
        ));
        let mut tx = Transaction::new(Timestamp { secs: 1, nanos: 0 })
            .create(node("m1", MANAGER))
            .create(node("w1", WORKER))
            .create(network())
            .create(service);
        for (i, id) in ["t1", "t2", "t3", "t4"].iter().enumerate() {
            tx = tx.create(pending(id, i as i64));
        }
        assert!(store.apply(1, &tx).is_ok());
        let Some(plan) = plan(&store) else {
            panic!("nothing planned");
        };
        assert!(store.apply(2, &plan).is_ok());
        let tasks: Vec<SwarmTask> = store.list(Kind::Task).iter().filter_map(as_task).collect();
        let addresses: HashSet<Ipv4Addr> =
            tasks.iter().filter_map(|t| t.address_on("net")).collect();
        assert_eq!(addresses.len(), 4, "{tasks:?}");
        let nodes: HashSet<String> = tasks.iter().filter_map(|t| t.node_id.clone()).collect();
        assert_eq!(nodes.len(), 2, "spread over both nodes");
        let Some(Object::Network(n)) = store.get(Kind::Network, "net").as_deref().cloned() else {
            panic!("network gone");
        };
        let gateways: HashSet<Ipv4Addr> = n.node_gateways.values().copied().collect();
        assert_eq!(n.node_gateways.len(), 2, "{:?}", n.node_gateways);
        assert_eq!(gateways.len(), 2);
        assert!(gateways.is_disjoint(&addresses));
        assert_eq!(
            n.node_gateways.get("m1"),
            Some(&Ipv4Addr::new(10, 0, 1, 1)),
            "the manager realises every network, and took the IPAM gateway first"
        );
    }
}
