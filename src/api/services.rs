//! `/services`: create, list, inspect, update (and rollback), remove.
//! Specs are stored as sent (bollard's model keeps every API field and
//! drops unknown ones); defaults appear only with `insertDefaults`.

use std::collections::HashMap;
use std::time::SystemTime;

use bollard::models::{
    EndpointSpecModeEnum, Service, ServiceServiceStatus, ServiceSpec, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatus, ServiceUpdateStatusStateEnum,
    TaskSpecContainerSpec, TaskSpecContainerSpecDnsConfig, TaskSpecContainerSpecIsolationEnum,
    TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bytes::Bytes;
use http::{Response, StatusCode};

use super::decode;
use super::filters::{label_matches, Filters};
use super::query::Query;
use super::{json, ApiError, RpcCode};
use crate::body::Body;
use crate::cluster::Manager;
use crate::manager::orchestrator::{as_service, as_task, is_global, replicas};
use crate::manager::{jobs, tasks};
use crate::store::{Store, StoreError, Transaction};
use crate::types::{new_id, Kind, Object, SwarmService, Timestamp};

const FILTERS: [&str; 5] = ["id", "label", "mode", "name", "runtime"];
/// What a service's published ports and VIPs are allocated from: other
/// services' endpoints, and the networks' gateways.
const ALLOCATED_FROM: &[Kind] = &[Kind::Service, Kind::Network];

/// Whether the service has a task meant to run (one an update replaces).
fn has_live_tasks(store: &Store, service_id: &str) -> bool {
    store
        .tasks_by_service(service_id)
        .iter()
        .filter_map(as_task)
        .any(|t| t.desired_state == Some(TaskState::RUNNING))
}

/// Whether an endpoint holds anything allocated (a port or a VIP).
fn allocates(endpoint: &bollard::models::ServiceEndpoint) -> bool {
    endpoint.ports.as_ref().is_some_and(|p| !p.is_empty())
        || endpoint.virtual_ips.as_ref().is_some_and(|v| !v.is_empty())
}
const SECOND: i64 = 1_000_000_000;

pub async fn create(manager: &Manager, body: Bytes) -> Result<Response<Body>, ApiError> {
    let mut spec: ServiceSpec = decode::body(&body)?;
    check_runtime(&spec)?;
    let store = manager.store();
    // StdRng is Send: it lives across the await below.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
    if spec.name.as_deref().unwrap_or("").is_empty() {
        spec.name = Some(random_name(&mut rng, &store));
    }
    validate(&store, &spec)?;
    normalise(&mut spec);
    crate::network::allocate::resolve_service_networks(&store, &mut spec)?;
    let id = new_id(&mut rng);
    super::allocating::propose(manager, ALLOCATED_FROM, |store| {
        let endpoint = crate::network::allocate::endpoint(store, None, &spec, None)?;
        let allocates = allocates(&endpoint);
        let job_status =
            jobs::replicated_job_or_global(&spec).then(|| jobs::now_iteration_status(0));
        let service = SwarmService::from(Service {
            id: Some(id.clone()),
            spec: Some(spec.clone()),
            endpoint: Some(endpoint),
            job_status,
            ..Service::default()
        });
        Ok(super::allocating::Allocated {
            tx: Transaction::new(now()).create(Object::Service(Box::new(service))),
            allocates,
            value: (),
        })
    })
    .await?;
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "ID": id })))
}

pub fn list(manager: &Manager, query: &Query) -> Result<Response<Body>, ApiError> {
    // The engine's services route alone calls malformed filters a bad
    // parameter (400); elsewhere they are a 500.
    let filters = Filters::parse(query.get("filters"), &FILTERS).map_err(|e| match e {
        ApiError::Internal(message) => ApiError::BadRequest(message),
        other => other,
    })?;
    let store = manager.store();
    let with_status = query.flag("status");
    let mut services: Vec<SwarmService> = store
        .list(Kind::Service)
        .iter()
        .filter_map(as_service)
        .filter(|s| matches(s, &filters))
        .collect();
    services.sort_by(|a, b| a.id.cmp(&b.id));
    if with_status {
        for service in &mut services {
            service.service_status = Some(status_of(&store, service));
        }
    }
    Ok(json(StatusCode::OK, &services))
}

pub fn inspect(
    manager: &Manager,
    reference: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let insert_defaults = match query.get("insertDefaults") {
        None | Some("") | Some("0") | Some("false") | Some("False") | Some("FALSE") | Some("f")
        | Some("F") => false,
        Some("1") | Some("true") | Some("True") | Some("TRUE") | Some("t") | Some("T") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "invalid value for insertDefaults: {other}"
            )))
        }
    };
    let mut service = find(&manager.store(), reference)?;
    if insert_defaults {
        if let Some(spec) = service.spec.as_mut() {
            insert_spec_defaults(spec);
        }
    }
    Ok(json(StatusCode::OK, &service))
}

pub async fn update(
    manager: &Manager,
    reference: &str,
    query: &Query,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let version = query.version("service")?;
    let mut spec: ServiceSpec = decode::body(&body)?;
    check_runtime(&spec)?;
    match query.get("registryAuthFrom") {
        None | Some("") | Some("spec") | Some("previous-spec") => {}
        Some(_) => {
            return Err(ApiError::Internal(
                "unsupported registryAuthFrom value".to_string(),
            ))
        }
    }
    let store = manager.store();
    let current = find(&store, reference)?;
    let id = current.id.clone().unwrap_or_default();
    let current_spec = current.spec.clone().unwrap_or_default();
    let rollback = match query.get("rollback") {
        None | Some("") => false,
        Some("previous") => true,
        Some(other) => {
            return Err(ApiError::Internal(format!(
                "unrecognized rollback option {other}"
            )))
        }
    };
    let mut update_status = current.update_status.clone();
    let previous = if rollback {
        // A rollback ignores the body: Spec and PreviousSpec swap.
        let Some(previous) = current.previous_spec.clone() else {
            return Err(ApiError::rpc(
                RpcCode::FailedPrecondition,
                format!("service {id} does not have a previous spec"),
            ));
        };
        spec = previous;
        update_status = Some(ServiceUpdateStatus {
            state: Some(ServiceUpdateStatusStateEnum::ROLLBACK_STARTED),
            started_at: Some(tasks::now()),
            completed_at: None,
            message: Some("manually requested rollback".to_string()),
        });
        current_spec.clone()
    } else {
        if spec.name != current_spec.name {
            return Err(ApiError::Rpc {
                code: RpcCode::Unimplemented,
                desc: "renaming services is not supported".to_string(),
            });
        }
        validate(&store, &spec)?;
        normalise(&mut spec);
        crate::network::allocate::resolve_service_networks(&store, &mut spec)?;
        if mode_kind(&spec) != mode_kind(&current_spec) {
            return Err(ApiError::Rpc {
                code: RpcCode::Unimplemented,
                desc: "service mode change is not allowed".to_string(),
            });
        }
        // A changed task spec starts an update; a paused one resumes on any update.
        let paused = matches!(
            current.update_status.as_ref().and_then(|s| s.state),
            Some(
                ServiceUpdateStatusStateEnum::PAUSED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
            )
        );
        if spec.task_template != current_spec.task_template || paused {
            // As swarmkit: a service with no task to replace has no update
            // to follow (its status is cleared, and no background write
            // moves its version under a client's next update).
            update_status = has_live_tasks(&store, &id).then(|| ServiceUpdateStatus {
                state: Some(ServiceUpdateStatusStateEnum::UPDATING),
                started_at: Some(tasks::now()),
                completed_at: None,
                message: Some("update in progress".to_string()),
            });
        }
        current_spec.clone()
    };
    // Updating a job runs it again: a new iteration.
    let job_status = current
        .job_status
        .as_ref()
        .map(|_| jobs::now_iteration_status(jobs::iteration(&current) + 1));
    let update_status = if job_status.is_some() {
        None
    } else {
        update_status
    };
    super::allocating::propose(manager, ALLOCATED_FROM, |store| {
        let endpoint = crate::network::allocate::endpoint(
            store,
            Some(id.as_str()),
            &spec,
            current.endpoint.as_ref(),
        )?;
        // Kept ports and VIPs were the service's already.
        let allocates = current.endpoint.as_ref() != Some(&endpoint);
        let updated = SwarmService {
            service: Service {
                spec: Some(spec.clone()),
                endpoint: Some(endpoint),
                update_status: update_status.clone(),
                job_status: job_status.clone(),
                ..current.service.clone()
            },
            previous_spec: Some(previous.clone()),
        };
        Ok(super::allocating::Allocated {
            tx: Transaction::new(now()).update(Object::Service(Box::new(updated)), version),
            allocates,
            value: (),
        })
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "Warnings": null }),
    ))
}

pub async fn remove(manager: &Manager, reference: &str) -> Result<Response<Body>, ApiError> {
    let store = manager.store();
    let id = find(&store, reference)?.id.clone().unwrap_or_default();
    // Tasks go to desired `remove` in the same entry, so a network or stack
    // removal right after sees them leaving (as swarmkit's orchestrator
    // does). The agent may update one of them meanwhile: then the entry is
    // built again from the store, as the client asked for no version.
    for _ in 0..MAX_REMOVE_ATTEMPTS {
        let mut tx = Transaction::new(now()).delete(Kind::Service, id.clone(), None);
        for task in store.tasks_by_service(&id).iter().filter_map(as_task) {
            if task.desired_state != Some(TaskState::REMOVE) {
                let version = task.version.as_ref().and_then(|v| v.index).unwrap_or(0);
                let mut updated = task;
                updated.desired_state = Some(TaskState::REMOVE);
                tx = tx.update(Object::Task(Box::new(updated)), version);
            }
        }
        match manager.proposer().propose(tx).await? {
            Err(StoreError::OutOfSequence {
                kind: Kind::Task, ..
            }) => continue,
            outcome => {
                outcome?;
                return Ok(super::empty_ok());
            }
        }
    }
    Err(StoreError::OutOfSequence {
        kind: Kind::Service,
        id,
        expected: 0,
        actual: 0,
    }
    .into())
}

/// Task updates racing a service removal are rare; a few rebuilds suffice.
const MAX_REMOVE_ATTEMPTS: usize = 10;

pub fn find(store: &Store, reference: &str) -> Result<SwarmService, ApiError> {
    as_service(&store.find(Kind::Service, reference)?)
        .ok_or_else(|| ApiError::NotFound(format!("service {reference} not found")))
}

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

/// The engine converts a spec for swarm before it looks anything up: the
/// task's runtime must come with its spec (a container runtime, the
/// default, with a ContainerSpec).
pub(super) fn check_runtime(spec: &ServiceSpec) -> Result<(), ApiError> {
    let template = spec.task_template.as_ref();
    let runtime = template.and_then(|t| t.runtime.as_deref()).unwrap_or("");
    let has = |present: bool| {
        if present {
            Ok(())
        } else {
            Err(ApiError::BadRequest(
                "mismatched Runtime and *Spec fields".to_string(),
            ))
        }
    };
    match runtime {
        "" | "container" => has(template.is_some_and(|t| t.container_spec.is_some())),
        "plugin" => has(template.is_some_and(|t| t.plugin_spec.is_some())),
        "attachment" => has(template.is_some_and(|t| t.network_attachment_spec.is_some())),
        _ => Err(ApiError::BadRequest("unsupported runtime".to_string())),
    }
}

/// The engine's checks, with its texts, before anything is written.
pub(super) fn validate(store: &Store, spec: &ServiceSpec) -> Result<(), ApiError> {
    let name = spec.name.as_deref().unwrap_or("");
    if !valid_name(name) {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "name must be valid as a DNS name component",
        ));
    }
    if name.len() > 63 {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "name must be 63 characters or fewer",
        ));
    }
    let modes = spec.mode.as_ref().map(|m| {
        [
            m.replicated.is_some(),
            m.global.is_some(),
            m.replicated_job.is_some(),
            m.global_job.is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count()
    });
    if modes.unwrap_or(0) > 1 {
        return Err(ApiError::BadRequest(
            "must specify only one service mode".to_string(),
        ));
    }
    if let Some(replicas) = spec
        .mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
    {
        if replicas < 0 {
            return Err(ApiError::BadRequest(format!(
                "json: cannot unmarshal number {replicas} into Go struct field ReplicatedService.Mode.Replicated.Replicas of type uint64"
            )));
        }
    }
    if jobs::replicated_job_or_global(spec) && spec.update_config.is_some() {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "Jobs may not have an update config",
        ));
    }
    let template = spec.task_template.clone().unwrap_or_default();
    let container = template.container_spec.clone().unwrap_or_default();
    if container.image.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            "ContainerSpec: image reference must be provided",
        ));
    }
    if let Some(resources) = &template.resources {
        let limits = resources.limits.as_ref();
        let reserved = resources.reservations.as_ref();
        validate_resources(
            limits.and_then(|l| l.nano_cpus),
            limits.and_then(|l| l.memory_bytes),
        )?;
        validate_resources(
            reserved.and_then(|r| r.nano_cpus),
            reserved.and_then(|r| r.memory_bytes),
        )?;
    }
    for secret in container.secrets.iter().flatten() {
        let reference = secret
            .secret_id
            .clone()
            .or(secret.secret_name.clone())
            .unwrap_or_default();
        if store.find(Kind::Secret, &reference).is_err() {
            return Err(ApiError::rpc(
                RpcCode::InvalidArgument,
                format!("secret not found: {reference}"),
            ));
        }
    }
    for config in container.configs.iter().flatten() {
        let reference = config
            .config_id
            .clone()
            .or(config.config_name.clone())
            .unwrap_or_default();
        if store.find(Kind::Config, &reference).is_err() {
            return Err(ApiError::rpc(
                RpcCode::InvalidArgument,
                format!("config not found: {reference}"),
            ));
        }
    }
    if let Some(field) = crate::agent::unsupported_fields(&container)
        .into_iter()
        .next()
    {
        return Err(ApiError::BadRequest(format!(
            "ContainerSpec.{field} is not supported by shoal yet"
        )));
    }
    Ok(())
}

/// swarmkit's `validateResources`, for limits and reservations alike: a
/// set value below what a container can run with is refused (negative
/// ones included) before anything is written.
fn validate_resources(nano_cpus: Option<i64>, memory: Option<i64>) -> Result<(), ApiError> {
    const MIN_NANO_CPUS: i64 = 1_000_000;
    const MIN_MEMORY: i64 = 4 * 1024 * 1024;
    if let Some(cpus) = nano_cpus.filter(|&c| c != 0 && c < MIN_NANO_CPUS) {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            format!(
                "invalid cpu value {}: Must be at least {}",
                go_float(cpus as f64 / 1e9),
                go_float(MIN_NANO_CPUS as f64 / 1e9)
            ),
        ));
    }
    if let Some(memory) = memory.filter(|&m| m != 0 && m < MIN_MEMORY) {
        return Err(ApiError::rpc(
            RpcCode::InvalidArgument,
            format!("invalid memory value {memory}: Must be at least 4MiB"),
        ));
    }
    Ok(())
}

/// A float as Go's `%g` prints it: shortest digits, with an exponent of at
/// least two digits when it is below -4 or at least 6.
fn go_float(value: f64) -> String {
    let scientific = format!("{value:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        return format!("{value}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// `^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`: swarmkit's DNS-label rule for names.
pub(super) fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// What the engine stores beyond the request: `Runtime: container`,
/// `Isolation: default`, an empty endpoint spec read back as `vip`, and a
/// replicated mode without a count as one replica.
pub(super) fn normalise(spec: &mut ServiceSpec) {
    let template = spec.task_template.get_or_insert_with(Default::default);
    template
        .runtime
        .get_or_insert_with(|| "container".to_string());
    let container = template.container_spec.get_or_insert_with(Default::default);
    container
        .isolation
        .get_or_insert(TaskSpecContainerSpecIsolationEnum::DEFAULT);
    drop_go_omitted(container);
    template.force_update.get_or_insert(0);
    let mode = spec.mode.get_or_insert_with(Default::default);
    if mode.global.is_none() && mode.replicated_job.is_none() && mode.global_job.is_none() {
        let replicated = mode.replicated.get_or_insert_with(Default::default);
        replicated.replicas.get_or_insert(1);
    }
    if let Some(job) = mode.replicated_job.as_mut() {
        let max = *job.max_concurrent.get_or_insert(1);
        job.total_completions.get_or_insert(max);
    }
    if let Some(endpoint) = spec.endpoint_spec.as_mut() {
        endpoint.mode.get_or_insert(EndpointSpecModeEnum::VIP);
    }
    if let Some(update) = spec.update_config.as_mut() {
        normalise_update_config(update);
    }
    if let Some(rollback) = spec.rollback_config.as_mut() {
        normalise_rollback_config(rollback);
    }
    spec.labels.get_or_insert_with(HashMap::new);
}

/// The engine's ContainerSpec marks these fields `omitempty`: a zero value
/// a client sent (Ansible sends `TTY: false`, `Hostname: ""`…) does not come
/// back (recorded on engine 20.10).
fn drop_go_omitted(c: &mut TaskSpecContainerSpec) {
    fn flag(v: &mut Option<bool>) {
        *v = v.filter(|b| *b);
    }
    fn text(v: &mut Option<String>) {
        *v = v.take().filter(|s| !s.is_empty());
    }
    fn list<T>(v: &mut Option<Vec<T>>) {
        *v = v.take().filter(|l| !l.is_empty());
    }
    flag(&mut c.tty);
    flag(&mut c.open_stdin);
    flag(&mut c.read_only);
    for t in [&mut c.hostname, &mut c.dir, &mut c.user, &mut c.stop_signal] {
        text(t);
    }
    for l in [
        &mut c.command,
        &mut c.args,
        &mut c.env,
        &mut c.groups,
        &mut c.hosts,
        &mut c.capability_add,
        &mut c.capability_drop,
    ] {
        list(l);
    }
    list(&mut c.mounts);
    list(&mut c.secrets);
    list(&mut c.configs);
    c.labels = c.labels.take().filter(|l| !l.is_empty());
}

/// An update config as the engine reads it back (recorded on engine 20.10):
/// Parallelism and MaxFailureRatio always written, FailureAction and Order
/// at their enum's first value when unset, zero durations omitted.
fn normalise_update_config(update: &mut ServiceSpecUpdateConfig) {
    update.parallelism.get_or_insert(0);
    update.max_failure_ratio.get_or_insert(0.0);
    if matches!(
        update.failure_action,
        None | Some(ServiceSpecUpdateConfigFailureActionEnum::EMPTY)
    ) {
        update.failure_action = Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE);
    }
    if matches!(
        update.order,
        None | Some(ServiceSpecUpdateConfigOrderEnum::EMPTY)
    ) {
        update.order = Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST);
    }
    update.delay = update.delay.filter(|d| *d != 0);
    update.monitor = update.monitor.filter(|m| *m != 0);
}

/// The same for a rollback config (its own enum types in bollard).
fn normalise_rollback_config(rollback: &mut ServiceSpecRollbackConfig) {
    rollback.parallelism.get_or_insert(0);
    rollback.max_failure_ratio.get_or_insert(0.0);
    if matches!(
        rollback.failure_action,
        None | Some(ServiceSpecRollbackConfigFailureActionEnum::EMPTY)
    ) {
        rollback.failure_action = Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE);
    }
    if matches!(
        rollback.order,
        None | Some(ServiceSpecRollbackConfigOrderEnum::EMPTY)
    ) {
        rollback.order = Some(ServiceSpecRollbackConfigOrderEnum::STOP_FIRST);
    }
    rollback.delay = rollback.delay.filter(|d| *d != 0);
    rollback.monitor = rollback.monitor.filter(|m| *m != 0);
}

fn mode_kind(spec: &ServiceSpec) -> &'static str {
    match spec.mode.as_ref() {
        Some(m) if m.global.is_some() => "global",
        Some(m) if m.replicated_job.is_some() => "replicated-job",
        Some(m) if m.global_job.is_some() => "global-job",
        _ => "replicated",
    }
}

fn matches(service: &SwarmService, filters: &Filters) -> bool {
    let id = service.id.as_deref().unwrap_or("");
    let spec = service.spec.clone().unwrap_or_default();
    let name = spec.name.as_deref().unwrap_or("");
    filters.any("id", |f| id.starts_with(f))
        && filters.any("name", |f| name.starts_with(f))
        && filters.any("mode", |f| f == mode_kind(&spec))
        && filters.any("runtime", |f| f == "container")
        && (!filters.contains("label")
            || filters
                .values("label")
                .iter()
                .all(|f| label_matches(spec.labels.as_ref(), f)))
}

/// `ServiceStatus` for `service ls`: running tasks on nodes that are not
/// down (as the engine counts them: a dead node's last report is not a
/// running task), desired as the mode says.
fn status_of(store: &Store, service: &SwarmService) -> ServiceServiceStatus {
    let id = service.id.clone().unwrap_or_default();
    let service_tasks: Vec<_> = store
        .tasks_by_service(&id)
        .iter()
        .filter_map(as_task)
        .collect();
    if service.job_status.is_some() {
        let (running, desired, completed) = jobs::status(service, &service_tasks);
        return ServiceServiceStatus {
            running_tasks: Some(running),
            desired_tasks: Some(desired),
            completed_tasks: Some(completed),
        };
    }
    let on_live_node = |t: &bollard::models::Task| {
        let node = t
            .node_id
            .as_deref()
            .and_then(|id| store.get(crate::types::Kind::Node, id));
        !matches!(node.as_deref(), Some(crate::types::Object::Node(n))
            if n.status.as_ref().and_then(|s| s.state) == Some(bollard::models::NodeState::DOWN))
    };
    let running = service_tasks
        .iter()
        .filter(|t| tasks::state(t) == TaskState::RUNNING && on_live_node(t))
        .count() as u64;
    let desired = match replicas(service) {
        Some(count) => count,
        None if is_global(service) => service_tasks
            .iter()
            .filter(|t| t.desired_state == Some(TaskState::RUNNING))
            .count() as u64,
        None => 0,
    };
    ServiceServiceStatus {
        running_tasks: Some(running),
        desired_tasks: Some(desired),
        completed_tasks: Some(0),
    }
}

/// The defaults swarmkit fills in, shown by `service inspect` (insertDefaults=true).
fn insert_spec_defaults(spec: &mut ServiceSpec) {
    let template = spec.task_template.get_or_insert_with(Default::default);
    let container = template.container_spec.get_or_insert_with(Default::default);
    container.stop_grace_period.get_or_insert(10 * SECOND);
    container
        .dns_config
        .get_or_insert_with(TaskSpecContainerSpecDnsConfig::default);
    template
        .resources
        .get_or_insert_with(TaskSpecResources::default);
    let restart = template
        .restart_policy
        .get_or_insert_with(TaskSpecRestartPolicy::default);
    if matches!(
        restart.condition,
        None | Some(TaskSpecRestartPolicyConditionEnum::EMPTY)
    ) {
        restart.condition = Some(TaskSpecRestartPolicyConditionEnum::ANY);
    }
    restart.delay.get_or_insert(5 * SECOND);
    restart.max_attempts.get_or_insert(0);
    template
        .placement
        .get_or_insert_with(TaskSpecPlacement::default);
    let update = spec
        .update_config
        .get_or_insert_with(ServiceSpecUpdateConfig::default);
    update.parallelism.get_or_insert(1);
    update
        .failure_action
        .get_or_insert(ServiceSpecUpdateConfigFailureActionEnum::PAUSE);
    update.monitor.get_or_insert(5 * SECOND);
    update.max_failure_ratio.get_or_insert(0.0);
    update
        .order
        .get_or_insert(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST);
    let rollback = spec
        .rollback_config
        .get_or_insert_with(ServiceSpecRollbackConfig::default);
    rollback.parallelism.get_or_insert(1);
    rollback
        .failure_action
        .get_or_insert(ServiceSpecRollbackConfigFailureActionEnum::PAUSE);
    rollback.monitor.get_or_insert(5 * SECOND);
    rollback.max_failure_ratio.get_or_insert(0.0);
    rollback
        .order
        .get_or_insert(ServiceSpecRollbackConfigOrderEnum::STOP_FIRST);
}

const ADJECTIVES: [&str; 16] = [
    "admiring",
    "brave",
    "calm",
    "dazzling",
    "eager",
    "focused",
    "gallant",
    "happy",
    "inspiring",
    "jolly",
    "keen",
    "loving",
    "modest",
    "nifty",
    "optimistic",
    "quirky",
];
const SURNAMES: [&str; 16] = [
    "archimedes",
    "babbage",
    "curie",
    "darwin",
    "euclid",
    "fermi",
    "galileo",
    "hopper",
    "lovelace",
    "meitner",
    "newton",
    "pasteur",
    "ritchie",
    "shannon",
    "turing",
    "wozniak",
];

/// A Docker-style `adjective_surname` not yet taken.
fn random_name(rng: &mut impl rand::Rng, store: &Store) -> String {
    loop {
        let name = format!(
            "{}_{}",
            ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())],
            SURNAMES[rng.gen_range(0..SURNAMES.len())]
        );
        if store.find(Kind::Service, &name).is_err() {
            return name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_the_dns_rule() {
        assert!(valid_name("web"));
        assert!(valid_name("my_web-1"));
        assert!(!valid_name("web."));
        assert!(!valid_name("-web"));
        assert!(!valid_name(""));
        assert!(!valid_name("a.b"));
    }

    #[test]
    fn normalise_adds_what_the_engine_stores() {
        let mut spec: ServiceSpec = serde_json::from_str(
            r#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Mode":{"Replicated":{}},"EndpointSpec":{}}"#,
        )
        .unwrap();
        normalise(&mut spec);
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["TaskTemplate"]["Runtime"], "container");
        assert_eq!(v["TaskTemplate"]["ContainerSpec"]["Isolation"], "default");
        assert_eq!(v["Mode"]["Replicated"]["Replicas"], 1);
        assert_eq!(v["EndpointSpec"]["Mode"], "vip");
        assert_eq!(v["Labels"], serde_json::json!({}));
    }
}
