//! An in-memory engine for unit tests of the agent loop.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bollard::models::ContainerCreateBody;
use futures_util::stream::{BoxStream, StreamExt};
use futures_util::FutureExt;
use tokio::sync::mpsc;

use super::spec::{LABEL_NODE_ID, LABEL_TASK_ID};
use super::{AgentError, ContainerInfo, EngineEvent, ExecFuture, ExecResult, Executor, RunState};

#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub id: String,
    pub name: String,
    pub body: ContainerCreateBody,
    pub state: RunState,
    pub exit_code: Option<i64>,
    pub health: Option<String>,
    pub starts: u32,
}

#[derive(Default)]
struct Inner {
    images: HashSet<String>,
    containers: Vec<FakeContainer>,
    next_id: u64,
    pulls: Vec<String>,
    /// Images whose pull succeeds and moves the tag to a new image ID.
    movable: HashSet<String>,
    /// How often each movable image's tag has moved.
    moves: HashMap<String, u32>,
    subscribers: Vec<mpsc::UnboundedSender<ExecResult<EngineEvent>>>,
    calls: Vec<String>,
}

/// Containers and images in memory; pulls always fail (no registry), as
/// on the hosts shoal is tested on.
#[derive(Default)]
pub struct FakeExecutor {
    inner: Mutex<Inner>,
}

impl FakeExecutor {
    pub fn with_images(images: &[&str]) -> Self {
        let f = FakeExecutor::default();
        f.lock().images = images.iter().map(|s| s.to_string()).collect();
        f
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn containers(&self) -> Vec<FakeContainer> {
        self.lock().containers.clone()
    }

    /// From now on, a pull of `image` succeeds and moves its tag.
    pub fn pulls_move(&self, image: &str) {
        self.lock().movable.insert(image.to_string());
    }

    pub fn pulls(&self) -> Vec<String> {
        self.lock().pulls.clone()
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Put a container in place as if an earlier agent had created it.
    pub fn insert(&self, name: &str, labels: HashMap<String, String>, state: RunState) -> String {
        let mut g = self.lock();
        g.next_id += 1;
        let id = format!("{:064x}", g.next_id + 0xc0ffee);
        g.containers.push(FakeContainer {
            id: id.clone(),
            name: name.to_string(),
            body: ContainerCreateBody {
                labels: Some(labels),
                ..Default::default()
            },
            state,
            exit_code: None,
            health: None,
            starts: 0,
        });
        id
    }

    fn emit(g: &mut Inner, ev: EngineEvent) {
        g.subscribers.retain(|s| s.send(Ok(ev.clone())).is_ok());
    }

    fn task_of(c: &FakeContainer) -> Option<String> {
        c.body
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_TASK_ID).cloned())
    }

    /// The container exits by itself (or is killed behind the agent's back).
    pub fn exit(&self, id: &str, code: i64) {
        let mut g = self.lock();
        let Some(c) = g.containers.iter_mut().find(|c| c.id == id) else {
            return;
        };
        c.state = RunState::Exited;
        c.exit_code = Some(code);
        let ev = EngineEvent::Die {
            id: id.to_string(),
            task_id: Self::task_of(c),
            exit_code: Some(code),
        };
        Self::emit(&mut g, ev);
    }

    pub fn set_health(&self, id: &str, healthy: bool) {
        let mut g = self.lock();
        let Some(c) = g.containers.iter_mut().find(|c| c.id == id) else {
            return;
        };
        c.health = Some(if healthy { "healthy" } else { "unhealthy" }.to_string());
        let ev = EngineEvent::Health {
            id: id.to_string(),
            task_id: Self::task_of(c),
            healthy,
        };
        Self::emit(&mut g, ev);
    }

    /// Break every event stream (an engine restart).
    pub fn break_events(&self) {
        self.lock().subscribers.clear();
    }

    /// Change a container without emitting events (what happens while the
    /// event stream is down).
    pub fn set_state_silently(&self, id: &str, state: RunState, exit_code: Option<i64>) {
        let mut g = self.lock();
        if let Some(c) = g.containers.iter_mut().find(|c| c.id == id) {
            c.state = state;
            c.exit_code = exit_code;
        }
    }

    fn info(c: &FakeContainer) -> ContainerInfo {
        ContainerInfo {
            id: c.id.clone(),
            name: c.name.clone(),
            labels: c.body.labels.clone().unwrap_or_default(),
            state: c.state,
            pid: if c.state == RunState::Running {
                4242
            } else {
                0
            },
            exit_code: c.exit_code,
            health: c.health.clone(),
            host_ports: Vec::new(),
        }
    }

    fn not_found(what: &str) -> AgentError {
        AgentError::Engine {
            status: 404,
            message: format!("No such container: {what}"),
        }
    }
}

impl Executor for FakeExecutor {
    fn image_id<'a>(&'a self, image: &'a str) -> ExecFuture<'a, Option<String>> {
        let g = self.lock();
        let moves = g.moves.get(image).copied().unwrap_or(0);
        let id = g
            .images
            .contains(image)
            .then(|| format!("sha256:{image}:{moves}"));
        async move { Ok(id) }.boxed()
    }

    fn pull<'a>(&'a self, image: &'a str) -> ExecFuture<'a, ()> {
        async move {
            self.lock().pulls.push(image.to_string());
            // Let concurrent callers pile up behind the per-image lock.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let mut g = self.lock();
            if g.movable.contains(image) {
                *g.moves.entry(image.to_string()).or_default() += 1;
                return Ok(());
            }
            Err(AgentError::Pull(format!(
                "Get \"https://registry-1.docker.io/v2/\": no such host ({image})"
            )))
        }
        .boxed()
    }

    fn create<'a>(&'a self, name: &'a str, body: ContainerCreateBody) -> ExecFuture<'a, String> {
        let result = {
            let mut g = self.lock();
            g.calls.push(format!("create {name}"));
            let image = body.image.clone().unwrap_or_default();
            if !g.images.contains(&image) {
                Err(AgentError::Engine {
                    status: 404,
                    message: format!("No such image: {image}"),
                })
            } else if g.containers.iter().any(|c| c.name == name) {
                Err(AgentError::Engine {
                    status: 409,
                    message: format!("Conflict. The container name \"/{name}\" is already in use"),
                })
            } else {
                g.next_id += 1;
                let id = format!("{:064x}", g.next_id);
                g.containers.push(FakeContainer {
                    id: id.clone(),
                    name: name.to_string(),
                    body,
                    state: RunState::Created,
                    exit_code: None,
                    health: None,
                    starts: 0,
                });
                Ok(id)
            }
        };
        async move { result }.boxed()
    }

    fn start<'a>(&'a self, id: &'a str) -> ExecFuture<'a, ()> {
        let result = {
            let mut g = self.lock();
            g.calls.push(format!("start {id}"));
            match g.containers.iter_mut().find(|c| c.id == id) {
                Some(c) => {
                    c.state = RunState::Running;
                    c.starts += 1;
                    let has_health = c
                        .body
                        .healthcheck
                        .as_ref()
                        .and_then(|h| h.test.as_ref())
                        .is_some_and(|t| t.first().map(String::as_str) != Some("NONE"));
                    if has_health {
                        c.health = Some("starting".to_string());
                    }
                    Ok(())
                }
                None => Err(Self::not_found(id)),
            }
        };
        async move { result }.boxed()
    }

    fn stop<'a>(&'a self, id: &'a str, timeout_secs: i64) -> ExecFuture<'a, ()> {
        let mut g = self.lock();
        g.calls.push(format!("stop {id} {timeout_secs}"));
        let ev = match g.containers.iter_mut().find(|c| c.id == id) {
            Some(c) if c.state == RunState::Running => {
                c.state = RunState::Exited;
                c.exit_code = Some(137);
                Some(EngineEvent::Die {
                    id: id.to_string(),
                    task_id: Self::task_of(c),
                    exit_code: Some(137),
                })
            }
            _ => None,
        };
        if let Some(ev) = ev {
            Self::emit(&mut g, ev);
        }
        async move { Ok(()) }.boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> ExecFuture<'a, ()> {
        let mut g = self.lock();
        g.calls.push(format!("remove {id}"));
        if let Some(pos) = g.containers.iter().position(|c| c.id == id) {
            let c = g.containers.remove(pos);
            let task_id = Self::task_of(&c);
            if c.state == RunState::Running {
                Self::emit(
                    &mut g,
                    EngineEvent::Die {
                        id: id.to_string(),
                        task_id: task_id.clone(),
                        exit_code: Some(137),
                    },
                );
            }
            Self::emit(
                &mut g,
                EngineEvent::Destroy {
                    id: id.to_string(),
                    task_id,
                },
            );
        }
        async move { Ok(()) }.boxed()
    }

    fn inspect<'a>(&'a self, id: &'a str) -> ExecFuture<'a, Option<ContainerInfo>> {
        let found = self
            .lock()
            .containers
            .iter()
            .find(|c| c.id == id || c.name == id)
            .map(Self::info);
        async move { Ok(found) }.boxed()
    }

    fn list_own<'a>(&'a self, node_id: &'a str) -> ExecFuture<'a, Vec<ContainerInfo>> {
        let list = self
            .lock()
            .containers
            .iter()
            .filter(|c| {
                c.body
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_NODE_ID))
                    .is_some_and(|n| n == node_id)
            })
            .map(|c| ContainerInfo {
                exit_code: None,
                health: None,
                ..Self::info(c)
            })
            .collect();
        async move { Ok(list) }.boxed()
    }

    fn events(&self, _node_id: &str) -> BoxStream<'static, ExecResult<EngineEvent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed()
    }
}
