//! `service logs` and `task logs`: the engine's logs of each task's
//! container, merged into one multiplexed stream, each line labelled with
//! `com.docker.swarm.node.id=…,com.docker.swarm.service.id=…,com.docker.swarm.task.id=…`
//! so the CLI can print `name.slot.id@node | line`.

use std::sync::Arc;

use crate::types::SwarmTask;
use bytes::{Buf, Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;

use super::query::Query;
use super::ApiError;
use crate::body::{Body, BoxError};
use crate::cluster::Manager;
use crate::cluster::{LogsRequest, LOGS_PATH};
use crate::manager::orchestrator::as_task;
use crate::manager::tasks::container_id;
use crate::proxy::Proxy;
use crate::store::{Store, WatchItem};
use crate::transport::Peers;
use crate::types::{Kind, Object};

/// What the client asked for, passed on to the engine per container.
struct LogOptions {
    follow: bool,
    details: bool,
    engine_query: String,
}

impl LogOptions {
    fn parse(query: &Query) -> Result<Self, ApiError> {
        let (stdout, stderr) = (query.flag("stdout"), query.flag("stderr"));
        if !stdout && !stderr {
            return Err(ApiError::Internal(
                "Bad parameters: you must choose at least one stream".to_string(),
            ));
        }
        let tail = query.get("tail").unwrap_or("all");
        if tail != "all" && tail.parse::<u64>().is_err() {
            return Err(ApiError::BadRequest(
                "tail value must be a positive integer or \"all\"".to_string(),
            ));
        }
        let follow = query.flag("follow");
        let mut engine = form_urlencoded::Serializer::new(String::new());
        engine.append_pair("stdout", if stdout { "1" } else { "0" });
        engine.append_pair("stderr", if stderr { "1" } else { "0" });
        engine.append_pair("follow", if follow { "1" } else { "0" });
        engine.append_pair(
            "timestamps",
            if query.flag("timestamps") { "1" } else { "0" },
        );
        engine.append_pair("tail", tail);
        if let Some(since) = query.get("since") {
            engine.append_pair("since", since);
        }
        Ok(LogOptions {
            follow,
            details: query.flag("details"),
            engine_query: engine.finish(),
        })
    }
}

pub fn service_logs(
    manager: &Manager,
    proxy: &Proxy,
    reference: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let options = LogOptions::parse(query)?;
    let store = manager.store();
    let service = super::services::find(&store, reference)?;
    let service_id = service.id.clone().unwrap_or_default();
    let tasks: Vec<SwarmTask> = store
        .tasks_by_service(&service_id)
        .iter()
        .filter_map(as_task)
        .collect();
    Ok(stream_logs(
        store,
        LogSource::new(manager, proxy),
        tasks,
        Some(service_id),
        options,
    ))
}

pub fn task_logs(
    manager: &Manager,
    proxy: &Proxy,
    reference: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let options = LogOptions::parse(query)?;
    let store = manager.store();
    let task = match &*store.find(Kind::Task, reference)? {
        Object::Task(task) => (**task).clone(),
        _ => return Err(ApiError::NotFound(format!("task {reference} not found"))),
    };
    Ok(stream_logs(
        store,
        LogSource::new(manager, proxy),
        vec![task],
        None,
        options,
    ))
}

/// One producer per container feeds a channel the response body drains; a
/// client that goes away drops the receiver, which ends every producer.
fn stream_logs(
    store: Arc<Store>,
    source: LogSource,
    tasks: Vec<SwarmTask>,
    follow_service: Option<String>,
    options: LogOptions,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let options = Arc::new(options);
    let mut started = std::collections::HashSet::new();
    for task in tasks {
        if let Some(container) = container_id(&task) {
            started.insert(task.id.clone().unwrap_or_default());
            tokio::spawn(pump(
                source.clone(),
                container,
                task,
                options.clone(),
                tx.clone(),
            ));
        }
    }
    if let (true, Some(service_id)) = (options.follow, follow_service) {
        tokio::spawn(follow_new_tasks(
            store, source, service_id, started, options, tx,
        ));
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, BoxError>(Frame::data(chunk)), rx))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    response
}

/// With `follow`, tasks that start later join the stream as they get a container.
async fn follow_new_tasks(
    store: Arc<Store>,
    source: LogSource,
    service_id: String,
    mut started: std::collections::HashSet<String>,
    options: Arc<LogOptions>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut watcher = store.watch_from(store.index());
    loop {
        for task in store
            .tasks_by_service(&service_id)
            .iter()
            .filter_map(as_task)
        {
            let id = task.id.clone().unwrap_or_default();
            // Only once it has started: the engine ends `logs -f` of a
            // container that is merely created, and it would never be
            // followed again.
            let started_running = crate::manager::tasks::rank(crate::manager::tasks::state(&task))
                >= crate::manager::tasks::rank(bollard::models::TaskState::RUNNING);
            let container =
                container_id(&task).filter(|_| started_running && !started.contains(&id));
            if let Some(container) = container {
                started.insert(id);
                tokio::spawn(pump(
                    source.clone(),
                    container,
                    task,
                    options.clone(),
                    tx.clone(),
                ));
            }
        }
        let service_gone = store.get(Kind::Service, &service_id).is_none();
        if service_gone {
            return;
        }
        tokio::select! {
            _ = tx.closed() => return,
            item = watcher.next() => match item {
                Some(WatchItem::Event(_)) => {}
                Some(WatchItem::Resync) | None => watcher = store.watch_from(store.index()),
            },
        }
    }
}

/// Where a task's container logs come from: this node's engine, or the
/// engine of the node running it, through that node's cluster port.
#[derive(Clone)]
struct LogSource {
    proxy: Proxy,
    node_id: String,
    peers: Option<Arc<Peers>>,
    store: Arc<Store>,
    /// This manager's cluster port; other nodes are reached on the same
    /// port (2377 unless every node was given another one).
    cluster_port: u16,
}

impl LogSource {
    fn new(manager: &Manager, proxy: &Proxy) -> LogSource {
        LogSource {
            proxy: proxy.clone(),
            node_id: manager.node_id().to_string(),
            peers: manager.peers().cloned(),
            store: manager.store(),
            cluster_port: manager
                .local
                .advertise_addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(2377),
        }
    }

    async fn logs(
        &self,
        task: &SwarmTask,
        container: &str,
        query: &str,
    ) -> Result<Response<hyper::body::Incoming>, String> {
        let node = task.node_id.as_deref().unwrap_or("");
        if node == self.node_id || node.is_empty() {
            let path = format!("/containers/{container}/logs?{query}");
            return self.proxy.get(&path).await.map_err(|e| e.to_string());
        }
        let peers = self.peers.as_ref().ok_or("no cluster transport")?;
        let addr = self
            .store
            .get(Kind::Node, node)
            .and_then(|o| match &*o {
                Object::Node(n) => n.status.as_ref()?.addr.clone(),
                _ => None,
            })
            .ok_or_else(|| format!("node {node} has no address"))?;
        let addr = crate::cluster::join_host_port(&addr, self.cluster_port);
        let request = LogsRequest {
            container: container.to_string(),
            query: query.to_string(),
        };
        // The node's certificate must name it: the logs come from the
        // node that runs the task, not from whoever answers at that address.
        peers
            .open(&addr, node, LOGS_PATH, &request)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Copies one container's log frames, adding the task's details to each line.
async fn pump(
    source: LogSource,
    container: String,
    task: SwarmTask,
    options: Arc<LogOptions>,
    tx: mpsc::Sender<Bytes>,
) {
    let response = match source.logs(&task, &container, &options.engine_query).await {
        Ok(response) if response.status().is_success() => response,
        // The container is really gone (removed by hand): the engine's
        // service logs have no stream for such a task and skip it.
        Ok(response) if response.status() == StatusCode::NOT_FOUND => return,
        Ok(response) => {
            let _ = tx
                .send(error_frame(&format!(
                    "Error grabbing logs: engine answered {}",
                    response.status()
                )))
                .await;
            return;
        }
        Err(error) => {
            let _ = tx
                .send(error_frame(&format!("Error grabbing logs: {error}")))
                .await;
            return;
        }
    };
    let details = details_of(&task);
    let mut body = response.into_body();
    let mut pending = BytesMut::new();
    loop {
        let frame = tokio::select! {
            _ = tx.closed() => return,
            frame = body.frame() => frame,
        };
        let Some(Ok(frame)) = frame else { return };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some((stream, payload)) = next_frame(&mut pending) {
            let line = if options.details {
                with_details(&payload, &details, has_timestamp(&options))
            } else {
                payload
            };
            if tx.send(encode_frame(stream, &line)).await.is_err() {
                return;
            }
        }
    }
}

fn has_timestamp(options: &LogOptions) -> bool {
    options.engine_query.contains("timestamps=1")
}

/// `k=v,k=v,k=v` with sorted keys, as the engine's details.
fn details_of(task: &SwarmTask) -> String {
    let pairs = [
        (
            "com.docker.swarm.node.id",
            task.node_id.clone().unwrap_or_default(),
        ),
        (
            "com.docker.swarm.service.id",
            task.service_id.clone().unwrap_or_default(),
        ),
        (
            "com.docker.swarm.task.id",
            task.id.clone().unwrap_or_default(),
        ),
    ];
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Details go after the timestamp (when there is one) and before the message.
fn with_details(line: &[u8], details: &str, timestamped: bool) -> Bytes {
    let split = if timestamped {
        line.iter()
            .position(|&b| b == b' ')
            .map(|p| p + 1)
            .unwrap_or(0)
    } else {
        0
    };
    let mut out = BytesMut::with_capacity(line.len() + details.len() + 1);
    out.extend_from_slice(&line[..split]);
    out.extend_from_slice(details.as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(&line[split..]);
    out.freeze()
}

/// One stdcopy frame (8-byte header: stream, 3 zero bytes, big-endian size).
fn next_frame(buf: &mut BytesMut) -> Option<(u8, Bytes)> {
    if buf.len() < 8 {
        return None;
    }
    let size = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if buf.len() < 8 + size {
        return None;
    }
    let stream = buf[0];
    buf.advance(8);
    Some((stream, buf.split_to(size).freeze()))
}

fn encode_frame(stream: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.freeze()
}

/// Errors after the 200 travel on the system-error channel (stream 3).
fn error_frame(message: &str) -> Bytes {
    encode_frame(3, message.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_details_follow_timestamps() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encode_frame(1, b"2026-01-01T00:00:00Z hello\n"));
        let (stream, payload) = next_frame(&mut buf).unwrap();
        assert_eq!(stream, 1);
        let line = with_details(&payload, "a=1,b=2", true);
        assert_eq!(&line[..], b"2026-01-01T00:00:00Z a=1,b=2 hello\n");
        assert_eq!(&with_details(b"hi\n", "a=1", false)[..], b"a=1 hi\n");
        assert!(next_frame(&mut buf).is_none());
    }
}
