//! The executor that drives the local engine through bollard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, EventMessageTypeEnum,
    HealthStatusEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, KillContainerOptions,
    ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::stream::{BoxStream, StreamExt};
use futures_util::FutureExt;
use tokio::sync::{OnceCell, Semaphore};

use super::spec::{LABEL_NODE_ID, LABEL_TASK_ID};
use super::{
    AgentError, ContainerInfo, EngineEvent, ExecFuture, ExecResult, Executor, HostPort, RunState,
};
use crate::engine::EngineSettings;

/// Per-request timeout for the response headers (bollard's). Stops wait up
/// to the grace period before the engine answers, so this must exceed any
/// sane grace period.
const REQUEST_TIMEOUT_SECS: u64 = 600;
/// A pull that makes no progress for this long is given up (no registry is
/// reachable on many hosts; the local image is used then).
const PULL_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// API versions older than this are not negotiated down to.
const MIN_API: (usize, usize) = (1, 41);
/// Containers SIGKILLed (and torn down by the engine) at the same time.
/// Past their grace period, stops go a few at a time: the engine tears
/// exited containers down faster so than all at once (scale 50 → 0 of
/// `sleep` tasks with a 1 s grace: 3.9-4.0 s against 4.5-4.7 s with the
/// engine's own SIGKILLs, all at once).
const KILL_CONCURRENCY: usize = 8;
/// How far past the grace period the engine's own stop would SIGKILL; the
/// SIGKILL is sent from here before that (see `stop`).
const ENGINE_STOP_MARGIN_SECS: u64 = 60;
/// How long a stop waits for the engine's `kill` event before it times the
/// grace period from the moment it gave up (a stream that says nothing).
const SIGNAL_WAIT: Duration = Duration::from_secs(10);
/// How long one SIGKILLed container may hold a [`KILL_CONCURRENCY`] slot.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Runs task containers on a Docker engine through bollard.
pub struct DockerExecutor {
    engine: EngineSettings,
    /// The client after version negotiation with the engine (done lazily,
    /// on first use, so `new` need not be async).
    negotiated: Arc<OnceCell<Docker>>,
    kill_permits: Semaphore,
}

impl DockerExecutor {
    /// The connection itself is made on first use, so shoal starts (and
    /// recovers) while the engine is down.
    pub fn new(engine: EngineSettings) -> Self {
        DockerExecutor {
            engine,
            negotiated: Arc::new(OnceCell::new()),
            kill_permits: Semaphore::new(KILL_CONCURRENCY),
        }
    }

    /// The client, speaking the engine's API version (the engines on these
    /// hosts may be older than bollard's default).
    async fn client(&self) -> ExecResult<Docker> {
        negotiated_client(&self.engine, &self.negotiated).await
    }
}

/// A client of `engine` at `version`.
fn client_at(engine: &EngineSettings, version: &bollard::ClientVersion) -> ExecResult<Docker> {
    engine
        .docker(REQUEST_TIMEOUT_SECS, version)
        .map_err(|e| AgentError::Connect {
            addr: engine.label().to_string(),
            reason: e.to_string(),
        })
}

/// Negotiates the API version once per executor (retried after a failure).
async fn negotiated_client(engine: &EngineSettings, cell: &OnceCell<Docker>) -> ExecResult<Docker> {
    cell.get_or_try_init(|| negotiate(engine)).await.cloned()
}

/// For the event stream, which the agent may leave unpolled for a while
/// (it lists the containers right after subscribing): it must never be the
/// one holding the shared cell's initialisation, or every other call waits
/// on a future nobody polls. It negotiates on its own instead.
async fn events_client(engine: &EngineSettings, cell: &OnceCell<Docker>) -> ExecResult<Docker> {
    if let Some(docker) = cell.get() {
        return Ok(docker.clone());
    }
    let docker = negotiate(engine).await?;
    let _ = cell.set(docker.clone());
    Ok(docker)
}

/// A client at the highest API version both the engine and bollard speak
/// (asked with a client at bollard's default version).
async fn negotiate(engine: &EngineSettings) -> ExecResult<Docker> {
    let version = client_at(engine, bollard::API_DEFAULT_VERSION)?
        .version()
        .await
        .map_err(map_err)?;
    let api = version.api_version.unwrap_or_default();
    let mut parts = api.split('.').map(|p| p.parse::<usize>().unwrap_or(0));
    let engine_api = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let ours = (
        bollard::API_DEFAULT_VERSION.major_version,
        bollard::API_DEFAULT_VERSION.minor_version,
    );
    let chosen = engine_api.min(ours).max(MIN_API);
    let client_version = bollard::ClientVersion {
        major_version: chosen.0,
        minor_version: chosen.1,
    };
    client_at(engine, &client_version)
}

/// bollard's error → ours, keeping the engine's message for `Status.Err`.
fn map_err(e: BollardError) -> AgentError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => AgentError::Engine {
            status: status_code,
            message,
        },
        BollardError::RequestTimeoutError => AgentError::Timeout("engine request".to_string()),
        BollardError::DockerStreamError { error } => AgentError::Pull(error),
        BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. } => {
            AgentError::Engine {
                status: 0,
                message: e.to_string(),
            }
        }
        other => AgentError::Unreachable(other.to_string()),
    }
}

/// Resolves at the first `kill` event of container `id` from now on (the
/// events API replays from `since`, so one sent before the stream is
/// connected counts), or when the stream ends or fails.
async fn first_kill_event(docker: &Docker, id: &str) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
        .unwrap_or_default();
    let options = EventsOptions {
        since: Some(since),
        filters: Some(HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("container".to_string(), vec![id.to_string()]),
            ("event".to_string(), vec!["kill".to_string()]),
        ])),
        ..Default::default()
    };
    let _ = docker.events(Some(options)).next().await;
}

/// `POST /containers/{id}/stop?t=<secs>`; a container that is gone or
/// already stopped is fine.
async fn engine_stop(docker: &Docker, id: &str, secs: u64) -> ExecResult<()> {
    let options = StopContainerOptions {
        t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
        ..Default::default()
    };
    let stopped = docker.stop_container(id, Some(options)).await;
    done_already(stopped.map_err(map_err), &[304, 404])
}

/// SIGKILL; a container that is gone or no longer runs is fine.
async fn send_sigkill(docker: &Docker, id: &str) -> ExecResult<()> {
    let options = KillContainerOptions {
        signal: "SIGKILL".to_string(),
    };
    let killed = docker.kill_container(id, Some(options)).await;
    done_already(killed.map_err(map_err), &[404, 409])
}

/// `result`, with the engine's answers in `statuses` (gone, not running,
/// already in progress: what the call was for is done) as success.
fn done_already(result: ExecResult<()>, statuses: &[u16]) -> ExecResult<()> {
    match result {
        Err(AgentError::Engine { status, .. }) if statuses.contains(&status) => Ok(()),
        other => other,
    }
}

/// The bindings of `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18081"}, …]}`,
/// ports in order, bindings as the engine lists them.
fn host_ports(ports: Option<bollard::models::PortMap>) -> Vec<HostPort> {
    let mut ports: Vec<_> = ports.unwrap_or_default().into_iter().collect();
    ports.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (key, bindings) in ports {
        let (target, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(target) = target.parse::<i64>() else {
            continue;
        };
        for binding in bindings.into_iter().flatten() {
            let published = binding.host_port.as_deref().and_then(|p| p.parse().ok());
            if let Some(published) = published {
                out.push(HostPort {
                    protocol: protocol.to_string(),
                    target,
                    published,
                });
            }
        }
    }
    out
}

fn strip_slash(name: &str) -> String {
    name.strip_prefix('/').unwrap_or(name).to_string()
}

fn own_filter(node_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_NODE_ID}={node_id}")],
    )])
}

impl Executor for DockerExecutor {
    fn image_id<'a>(&'a self, image: &'a str) -> ExecFuture<'a, Option<String>> {
        async move {
            let docker = self.client().await?;
            match docker.inspect_image(image).await.map_err(map_err) {
                Ok(inspected) => Ok(Some(inspected.id.unwrap_or_default())),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        }
        .boxed()
    }

    fn pull<'a>(&'a self, image: &'a str) -> ExecFuture<'a, ()> {
        async move {
            let docker = self.client().await?;
            let options = CreateImageOptions {
                from_image: Some(image.to_string()),
                ..Default::default()
            };
            let mut stream = docker.create_image(Some(options), None, None);
            loop {
                match tokio::time::timeout(PULL_IDLE_TIMEOUT, stream.next()).await {
                    Err(_) => return Err(AgentError::Timeout(format!("pulling {image}"))),
                    Ok(None) => return Ok(()),
                    Ok(Some(Ok(_progress))) => {}
                    Ok(Some(Err(e))) => return Err(map_err(e)),
                }
            }
        }
        .boxed()
    }

    fn create<'a>(&'a self, name: &'a str, body: ContainerCreateBody) -> ExecFuture<'a, String> {
        async move {
            let docker = self.client().await?;
            let options = CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            };
            let created = docker
                .create_container(Some(options), body)
                .await
                .map_err(map_err)?;
            Ok(created.id)
        }
        .boxed()
    }

    fn start<'a>(&'a self, id: &'a str) -> ExecFuture<'a, ()> {
        async move {
            let docker = self.client().await?;
            docker.start_container(id, None).await.map_err(map_err)
        }
        .boxed()
    }

    /// The engine's own stop (its stop signal, its `kill`/`die`/`stop`
    /// events), asked with a deadline it never reaches: once the grace
    /// period is over, the SIGKILLs are sent from here, a few at a time,
    /// and the engine's stop returns when the container is gone. Should
    /// shoal die meanwhile, the engine kills the container itself later.
    /// The grace period counts from the engine's `kill` event, as the
    /// engine's own timer does: the engine may get to a stop request late
    /// when many arrive at once.
    fn stop<'a>(&'a self, id: &'a str, timeout_secs: i64) -> ExecFuture<'a, ()> {
        async move {
            let docker = self.client().await?;
            let grace = u64::try_from(timeout_secs).unwrap_or(0);
            let mut signalled = Box::pin(first_kill_event(&docker, id));
            let engine_stop = engine_stop(&docker, id, grace + ENGINE_STOP_MARGIN_SECS);
            tokio::pin!(engine_stop);
            tokio::select! {
                stopped = &mut engine_stop => return stopped,
                () = &mut signalled => {}
                () = tokio::time::sleep(SIGNAL_WAIT) => {
                    tracing::debug!(container = id, "no kill event seen; timing the grace period from now");
                }
            }
            drop(signalled); // its events stream, if still open
            if let Ok(stopped) =
                tokio::time::timeout(Duration::from_secs(grace), &mut engine_stop).await
            {
                return stopped;
            }
            let permit = self
                .kill_permits
                .acquire()
                .await
                .map_err(|_| AgentError::Unreachable("executor closed".to_string()))?;
            send_sigkill(&docker, id).await?;
            // A container that will not die (a process stuck in the kernel)
            // must not hold up the other stops: its permit goes back.
            if let Ok(stopped) = tokio::time::timeout(KILL_WAIT, &mut engine_stop).await {
                return stopped;
            }
            drop(permit);
            engine_stop.await
        }
        .boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> ExecFuture<'a, ()> {
        async move {
            let docker = self.client().await?;
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            let removed = docker.remove_container(id, Some(options)).await;
            // 409: "removal of container … is already in progress"
            done_already(removed.map_err(map_err), &[404, 409])
        }
        .boxed()
    }

    fn inspect<'a>(&'a self, id: &'a str) -> ExecFuture<'a, Option<ContainerInfo>> {
        async move {
            let docker = self.client().await?;
            let c = match docker.inspect_container(id, None).await.map_err(map_err) {
                Ok(c) => c,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            };
            let state = c.state.unwrap_or_default();
            let run = match state.status {
                Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
                Some(ContainerStateStatusEnum::RUNNING)
                | Some(ContainerStateStatusEnum::PAUSED)
                | Some(ContainerStateStatusEnum::RESTARTING) => RunState::Running,
                _ if state.running == Some(true) => RunState::Running,
                _ => RunState::Exited,
            };
            let health = state.health.and_then(|h| h.status).and_then(|s| match s {
                HealthStatusEnum::STARTING => Some("starting".to_string()),
                HealthStatusEnum::HEALTHY => Some("healthy".to_string()),
                HealthStatusEnum::UNHEALTHY => Some("unhealthy".to_string()),
                _ => None,
            });
            Ok(Some(ContainerInfo {
                id: c.id.unwrap_or_else(|| id.to_string()),
                name: strip_slash(c.name.as_deref().unwrap_or("")),
                labels: c.config.and_then(|cfg| cfg.labels).unwrap_or_default(),
                state: run,
                pid: state.pid.unwrap_or(0),
                exit_code: state.exit_code,
                health,
                host_ports: host_ports(c.network_settings.and_then(|n| n.ports)),
            }))
        }
        .boxed()
    }

    fn list_own<'a>(&'a self, node_id: &'a str) -> ExecFuture<'a, Vec<ContainerInfo>> {
        async move {
            let docker = self.client().await?;
            let options = ListContainersOptions {
                all: true,
                filters: Some(own_filter(node_id)),
                ..Default::default()
            };
            let list = docker
                .list_containers(Some(options))
                .await
                .map_err(map_err)?;
            Ok(list
                .into_iter()
                .filter_map(|c| {
                    let id = c.id?;
                    let labels = c.labels.unwrap_or_default();
                    if labels.get(LABEL_NODE_ID).map(String::as_str) != Some(node_id) {
                        return None;
                    }
                    let state = match c.state {
                        Some(ContainerSummaryStateEnum::CREATED) => RunState::Created,
                        Some(ContainerSummaryStateEnum::RUNNING)
                        | Some(ContainerSummaryStateEnum::PAUSED)
                        | Some(ContainerSummaryStateEnum::RESTARTING) => RunState::Running,
                        _ => RunState::Exited,
                    };
                    let name = c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .map(|n| strip_slash(&n))
                        .unwrap_or_default();
                    Some(ContainerInfo {
                        id,
                        name,
                        labels,
                        state,
                        pid: 0,
                        exit_code: None,
                        health: None,
                        host_ports: Vec::new(),
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn events(&self, node_id: &str) -> BoxStream<'static, ExecResult<EngineEvent>> {
        let mut filters = own_filter(node_id);
        filters.insert("type".to_string(), vec!["container".to_string()]);
        let cell = self.negotiated.clone();
        let engine = self.engine.clone();
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let stream = async move {
            match events_client(&engine, &cell).await {
                Ok(docker) => docker
                    .events(Some(options))
                    .map(|item| item.map_err(map_err).map(event_of))
                    .boxed(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            }
        }
        .flatten_stream();
        stream.boxed()
    }
}

fn event_of(msg: bollard::models::EventMessage) -> EngineEvent {
    if msg
        .typ
        .is_some_and(|t| t != EventMessageTypeEnum::CONTAINER)
    {
        return EngineEvent::Other;
    }
    let actor = msg.actor.unwrap_or_default();
    let id = actor.id.unwrap_or_default();
    let attrs = actor.attributes.unwrap_or_default();
    let task_id = attrs.get(LABEL_TASK_ID).cloned();
    let action = msg.action.unwrap_or_default();
    match action.as_str() {
        "die" => EngineEvent::Die {
            id,
            task_id,
            exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        },
        "destroy" => EngineEvent::Destroy { id, task_id },
        a if a.starts_with("health_status") => {
            let status = a.split(':').nth(1).map(str::trim).unwrap_or("");
            if status == "healthy" || status == "unhealthy" {
                EngineEvent::Health {
                    id,
                    task_id,
                    healthy: status == "healthy",
                }
            } else {
                EngineEvent::Other
            }
        }
        _ => EngineEvent::Other,
    }
}
