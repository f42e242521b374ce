//! Published ports in ingress mode: a userspace L4 (TCP) proxy on every
//! node, managers and workers. One listener per published port forwards
//! each connection to a running task of the service, round robin, wherever
//! it runs: a task on this node directly, a task on another node through
//! that node's listener for the same port, the connection prefixed with a
//! relay header naming the task ([`super::relay`]). The receiving node
//! accepts relay headers only from the swarm's nodes, hands the connection
//! to that task only if it still serves it, and closes it otherwise. A
//! task that refuses the connection, or closes or resets it before it
//! answered a byte, is replaced by the next task, with the client's bytes
//! so far replayed. A listener stops accepting when its port is no longer
//! published; its open connections run on until they end or shoal stops.
//!
//! Why relays and not an ingress overlay: the node a task runs on sees
//! every connection to it, so its drain (which waits for the open
//! connections before a stop) covers connections that came in on other
//! nodes; and no node needs a bridge or address for tasks it does not run.
//!
//! Different from Docker's routing mesh (IPVS), which neither retries nor
//! replays: without it, a connection that reaches a task as it stops fails,
//! and no request may fail during an update. The cost: a request a task
//! handled but closed without answering is sent again to another task.
//! Also unlike it, a service can have the client's address: with the label
//! [`PROXY_PROTOCOL_LABEL`] its tasks get a PROXY protocol v2 header first.
//!
//! Every forwarded connection is counted against its task's address
//! ([`OpenConnections`]), so the agent can let them finish before it stops
//! a task (see [`super::drain`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bollard::models::{EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::local::Engine;
use super::relay::{self, Header};
use crate::manager::orchestrator::{as_node, as_service, as_task};
use crate::manager::tasks;
use crate::store::{Store, Tables};
use crate::types::Kind;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Client bytes kept for a replay on the next task until the task answers;
/// a client that sends more before any answer is no longer retried.
const REPLAY_LIMIT: usize = 64 * 1024;
/// A service label: `v2` gives its tasks a PROXY protocol v2 header with
/// the client's address before the client's bytes.
pub const PROXY_PROTOCOL_LABEL: &str = "io.shoal.ingress.proxy-protocol";

/// Where a published port leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub service_id: String,
    pub target_port: u16,
    /// The tasks want a PROXY protocol v2 header ([`PROXY_PROTOCOL_LABEL`]).
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// A task a published port may lead to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServingTask {
    pub task_id: String,
    pub node_id: String,
    /// Its address on its first swarm network, when the leader chose one.
    pub ip: Option<Ipv4Addr>,
    /// Its container, for a node to look up an address the leader did not
    /// choose (a task on no swarm network).
    pub container: Option<String>,
}

/// What every node's ingress needs, the same on every node: computed from
/// the store on a manager, sent in the session to a worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressPlane {
    /// Published TCP ports in ingress mode.
    pub routes: BTreeMap<u16, Route>,
    /// Per service ID, its serving tasks wherever they run (sorted).
    pub tasks: BTreeMap<String, Vec<ServingTask>>,
    /// Every node's advertised address: where relays go, and the only
    /// sources a relay header is read from.
    pub nodes: BTreeMap<String, Ipv4Addr>,
}

impl IngressPlane {
    /// Whether task `task_id` is a backend of some published port.
    pub fn serves(&self, task_id: &str) -> bool {
        self.tasks.values().flatten().any(|t| t.task_id == task_id)
    }
}

/// The ingress plane from the store's tables.
pub fn plane(tables: &Tables) -> IngressPlane {
    let routes = routes(tables);
    let published: HashSet<&str> = routes.values().map(|r| r.service_id.as_str()).collect();
    let mut by_service: BTreeMap<String, Vec<ServingTask>> = BTreeMap::new();
    for task in tables.iter(Kind::Task).filter_map(as_task) {
        let service_id = task.service_id.clone().unwrap_or_default();
        if !published.contains(service_id.as_str()) || !super::local::serves(&task) {
            continue;
        }
        let (Some(task_id), Some(node_id)) = (task.id.clone(), task.node_id.clone()) else {
            continue;
        };
        by_service.entry(service_id).or_default().push(ServingTask {
            task_id,
            node_id,
            ip: super::local::first_chosen_address(&task),
            container: tasks::container_id(&task),
        });
    }
    for list in by_service.values_mut() {
        list.sort();
    }
    let nodes = tables
        .iter(Kind::Node)
        .filter_map(as_node)
        .filter_map(|n| {
            let addr = n.status.as_ref()?.addr.as_deref()?.parse().ok()?;
            Some((n.id.clone()?, addr))
        })
        .collect();
    IngressPlane {
        routes,
        tasks: by_service,
        nodes,
    }
}

/// Keeps `plane` equal to the store's ingress plane until `shutdown` (a
/// worker's session sends it along).
pub async fn publish(
    store: Arc<Store>,
    plane: watch::Sender<Arc<IngressPlane>>,
    shutdown: CancellationToken,
) {
    let mut watcher = store.watch_from(store.index());
    while crate::manager::wait_for_change(&store, &mut watcher, &shutdown, None).await {
        let now = store.read(self::plane);
        plane.send_if_modified(|current| {
            let changed = **current != now;
            if changed {
                *current = Arc::new(now);
            }
            changed
        });
    }
}

/// Addresses of this node's serving tasks in `plane`: the leader's
/// choice, else the engine's view of the container (remembered in
/// `known`, per container, while the container serves).
pub async fn local_addresses(
    engine: &Engine,
    plane: &IngressPlane,
    me: &str,
    known: &mut HashMap<String, Ipv4Addr>,
) -> HashMap<String, Ipv4Addr> {
    let mut out = HashMap::new();
    let mut containers = HashSet::new();
    for task in plane.tasks.values().flatten().filter(|t| t.node_id == me) {
        if let Some(ip) = task.ip {
            out.insert(task.task_id.clone(), ip);
            continue;
        }
        let Some(container) = &task.container else {
            continue;
        };
        containers.insert(container.clone());
        if let Some(ip) = known.get(container) {
            out.insert(task.task_id.clone(), *ip);
            continue;
        }
        if let Some(ip) = engine.container_address(container).await {
            known.insert(container.clone(), ip);
            out.insert(task.task_id.clone(), ip);
        }
    }
    known.retain(|c, _| containers.contains(c));
    out
}

/// Published TCP ports in ingress mode, from the services' endpoints.
fn routes(tables: &Tables) -> BTreeMap<u16, Route> {
    let mut out = BTreeMap::new();
    for service in tables.iter(Kind::Service).filter_map(as_service) {
        let id = service.id.clone().unwrap_or_default();
        let proxy_protocol = service
            .spec
            .as_ref()
            .and_then(|s| s.labels.as_ref())
            .and_then(|l| l.get(PROXY_PROTOCOL_LABEL))
            .is_some_and(|v| v.eq_ignore_ascii_case("v2"));
        for p in service
            .endpoint
            .as_ref()
            .and_then(|e| e.ports.as_ref())
            .into_iter()
            .flatten()
        {
            let ingress = !matches!(
                p.publish_mode,
                Some(EndpointPortConfigPublishModeEnum::HOST)
            );
            let tcp = matches!(
                p.protocol,
                None | Some(EndpointPortConfigProtocolEnum::TCP)
                    | Some(EndpointPortConfigProtocolEnum::EMPTY)
            );
            let published = p
                .published_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0);
            let target = p
                .target_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0);
            if let (true, true, Some(published), Some(target)) = (ingress, tcp, published, target) {
                out.insert(
                    published,
                    Route {
                        service_id: id.clone(),
                        target_port: target,
                        proxy_protocol,
                    },
                );
            }
        }
    }
    out
}

/// Open forwarded connections per task address, shared by every listener
/// of the node. A connection is counted from before its connect until it
/// ends.
#[derive(Default)]
pub struct OpenConnections {
    counts: Mutex<HashMap<IpAddr, usize>>,
    /// Woken whenever a connection ends.
    closed: Notify,
}

impl OpenConnections {
    /// Counts one connection to `ip` until the returned guard is dropped.
    fn open(self: &Arc<Self>, ip: IpAddr) -> ConnectionGuard {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(ip).or_default() += 1;
        }
        ConnectionGuard {
            connections: self.clone(),
            ip,
        }
    }

    /// Connections open to `ip` now.
    pub fn open_to(&self, ip: IpAddr) -> usize {
        self.counts
            .lock()
            .map(|c| c.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Connections open to any task.
    pub fn total(&self) -> usize {
        self.counts.lock().map(|c| c.values().sum()).unwrap_or(0)
    }

    /// Returns once no connection to `ip` is open.
    pub async fn wait_closed(&self, ip: IpAddr) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            // Registered before the check, so a close in between is seen.
            closed.as_mut().enable();
            if self.open_to(ip) == 0 {
                return;
            }
            closed.await;
        }
    }
}

struct ConnectionGuard {
    connections: Arc<OpenConnections>,
    ip: IpAddr,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.connections.counts.lock() {
            if let Some(n) = counts.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
        self.connections.closed.notify_waiters();
    }
}

/// Where one connection may go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A task on this node, at its address and target port.
    Direct(SocketAddr),
    /// A task on another node: that node's listener for the same port,
    /// told which task in a relay header.
    Relay { node: SocketAddr, task_id: String },
}

impl Target {
    fn addr(&self) -> SocketAddr {
        match self {
            Target::Direct(addr) | Target::Relay { node: addr, .. } => *addr,
        }
    }
}

/// A listener's current targets, replaced by each reconcile.
type Targets = Arc<RwLock<Vec<Target>>>;

/// What relayed connections need, shared by every listener of the node.
#[derive(Debug, Default)]
struct Relaying {
    /// The swarm's nodes: relay headers are read only from these.
    sources: HashSet<IpAddr>,
    /// The tasks on this node that serve now, by task ID.
    local: HashMap<String, Ipv4Addr>,
}

struct Listener {
    route: Route,
    targets: Targets,
    stop: CancellationToken,
}

/// The listeners of this node.
pub struct Ingress {
    listeners: HashMap<u16, Listener>,
    connections: Arc<OpenConnections>,
    relaying: Arc<RwLock<Relaying>>,
    shutdown: CancellationToken,
    running: TaskTracker,
}

impl Ingress {
    pub fn new(shutdown: CancellationToken) -> Ingress {
        Ingress {
            listeners: HashMap::new(),
            connections: Arc::default(),
            relaying: Arc::default(),
            shutdown,
            running: TaskTracker::new(),
        }
    }

    /// The open connections of every listener, for draining tasks.
    pub fn connections(&self) -> Arc<OpenConnections> {
        self.connections.clone()
    }

    /// Opens, closes and re-points listeners to match `plane`, as node
    /// `me` whose serving tasks are at `local` (task ID → address). Once
    /// this returns, no new connection goes to a task no longer listed.
    pub async fn reconcile(
        &mut self,
        plane: &IngressPlane,
        me: &str,
        local: HashMap<String, Ipv4Addr>,
    ) {
        // Only tasks the plane places here are served here.
        let mine: HashSet<&str> = plane
            .tasks
            .values()
            .flatten()
            .filter(|t| t.node_id == me)
            .map(|t| t.task_id.as_str())
            .collect();
        let local: HashMap<String, Ipv4Addr> = local
            .into_iter()
            .filter(|(task, _)| mine.contains(task.as_str()))
            .collect();
        if let Ok(mut relaying) = self.relaying.write() {
            relaying.sources = plane.nodes.values().map(|ip| IpAddr::V4(*ip)).collect();
            relaying.local = local.clone();
        }
        self.listeners.retain(|port, l| {
            let keep = plane.routes.get(port) == Some(&l.route);
            if !keep {
                tracing::info!(port, service = %l.route.service_id, "ingress port closed");
                l.stop.cancel();
            }
            keep
        });
        for (port, route) in &plane.routes {
            let targets = targets_of(plane, me, &local, *port, route);
            if let Some(l) = self.listeners.get(port) {
                if let Ok(mut t) = l.targets.write() {
                    *t = targets;
                }
                continue;
            }
            let socket = match TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], *port))).await {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(port, %error, "cannot listen on the published port; retrying");
                    continue;
                }
            };
            tracing::info!(port, service = %route.service_id, "ingress port open");
            let targets = Arc::new(RwLock::new(targets));
            let stop = self.shutdown.child_token();
            self.running.spawn(serve(
                socket,
                Forwarding {
                    targets: targets.clone(),
                    target_port: route.target_port,
                    proxy_protocol: route.proxy_protocol,
                    relaying: self.relaying.clone(),
                    connections: self.connections.clone(),
                    shutdown: self.shutdown.clone(),
                },
                stop.clone(),
                self.running.clone(),
            ));
            self.listeners.insert(
                *port,
                Listener {
                    route: route.clone(),
                    targets,
                    stop,
                },
            );
        }
    }

    /// Closes every listener and connection, and waits for them.
    pub async fn stop(self) {
        for l in self.listeners.values() {
            l.stop.cancel();
        }
        self.running.close();
        self.running.wait().await;
    }
}

/// Where the connections to `port` go from node `me`: its own tasks
/// directly, the others' through their nodes (sorted: round robin is over
/// the same order on every pass).
fn targets_of(
    plane: &IngressPlane,
    me: &str,
    local: &HashMap<String, Ipv4Addr>,
    port: u16,
    route: &Route,
) -> Vec<Target> {
    let tasks = plane.tasks.get(&route.service_id).into_iter().flatten();
    tasks
        .filter_map(|task| {
            if task.node_id == me {
                let ip = local.get(&task.task_id)?;
                return Some(Target::Direct(SocketAddr::from((*ip, route.target_port))));
            }
            let node = plane.nodes.get(&task.node_id)?;
            Some(Target::Relay {
                node: SocketAddr::from((*node, port)),
                task_id: task.task_id.clone(),
            })
        })
        .collect()
}

/// What each connection of one listener needs.
#[derive(Clone)]
struct Forwarding {
    targets: Targets,
    target_port: u16,
    proxy_protocol: bool,
    relaying: Arc<RwLock<Relaying>>,
    connections: Arc<OpenConnections>,
    /// Shoal's shutdown: connections outlive their listener, not shoal.
    shutdown: CancellationToken,
}

impl Forwarding {
    fn current(&self) -> Vec<Target> {
        self.targets.read().map(|t| t.clone()).unwrap_or_default()
    }

    fn still_listed(&self, target: &Target) -> bool {
        self.targets.read().is_ok_and(|t| t.contains(target))
    }

    fn is_a_node(&self, peer: IpAddr) -> bool {
        self.relaying
            .read()
            .is_ok_and(|r| r.sources.contains(&peer))
    }

    /// This node's task `task_id`, if it serves.
    fn local_task(&self, task_id: &str) -> Option<Target> {
        let ip = *self.relaying.read().ok()?.local.get(task_id)?;
        Some(Target::Direct(SocketAddr::from((ip, self.target_port))))
    }
}

async fn serve(
    socket: TcpListener,
    forwarding: Forwarding,
    stop: CancellationToken,
    running: TaskTracker,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "ingress accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let start = next.fetch_add(1, Ordering::Relaxed);
        let candidates = forwarding.current();
        let forwarding = forwarding.clone();
        running.spawn(async move {
            let shutdown = forwarding.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = accept(client, peer, &forwarding, candidates, start) => {}
            }
        });
    }
}

/// One accepted connection: relayed by another node (to one task of this
/// node, or refused), or a client's (to any task).
async fn accept(
    mut client: TcpStream,
    peer: SocketAddr,
    forwarding: &Forwarding,
    candidates: Vec<Target>,
    start: usize,
) {
    let mut origin = Header {
        source: peer,
        destination: relay::destination_of(&client),
        task_id: None,
    };
    if forwarding.is_a_node(peer.ip()) {
        if let Some(relayed) = relay::read_relayed(&mut client).await {
            let task = relayed.task_id.as_deref().unwrap_or_default();
            // Closed unanswered when the task no longer serves here: the
            // sending node tries its next task.
            let Some(target) = forwarding.local_task(task) else {
                tracing::debug!(task, "relayed connection for a task not serving here");
                return;
            };
            origin = Header {
                task_id: None,
                ..relayed
            };
            forward(client, &origin, forwarding, vec![target], 0).await;
            return;
        }
    }
    forward(client, &origin, forwarding, candidates, start).await;
}

/// The client's side of a connection while no task has answered yet.
#[derive(Default)]
struct Pending {
    /// Everything the client sent so far, for a replay on the next task.
    sent: Vec<u8>,
    /// The client closed its writing side.
    client_done: bool,
}

/// How a task took the connection before it answered.
enum FirstReply {
    /// The task answered these bytes: the connection is its.
    Answered(Vec<u8>),
    /// The client sent more than [`REPLAY_LIMIT`] first: no replay possible,
    /// the connection stays with this task.
    Committed,
    /// Closed, reset or failed before any answer: try the next task.
    Retry,
    /// The client went away, or the task failed after bytes that cannot
    /// be replayed: the connection ends.
    Abandon,
}

/// What goes first on a connection to `target`: a relay header naming the
/// task, or the client's address when the service asks for it.
fn preface(target: &Target, origin: &Header, proxy_protocol: bool) -> Option<Vec<u8>> {
    match target {
        Target::Relay { task_id, .. } => Some(
            Header {
                task_id: Some(task_id.clone()),
                ..origin.clone()
            }
            .encode(),
        ),
        Target::Direct(_) if proxy_protocol => Some(origin.encode()),
        Target::Direct(_) => None,
    }
}

/// Gives the connection to the first of `candidates` (the targets listed
/// when it was accepted; round robin from `start`) that is still listed,
/// accepts it and answers; then copies both ways until either side closes.
async fn forward(
    mut client: TcpStream,
    origin: &Header,
    forwarding: &Forwarding,
    candidates: Vec<Target>,
    start: usize,
) {
    let peer = origin.source;
    let count = candidates.len();
    let mut pending = Pending::default();
    for i in 0..count {
        let target = &candidates[(start + i) % count];
        let addr = target.addr();
        // Counted before the check: a drain that no longer sees the task
        // listed either sees this connection or this check sees the drain.
        let guard = forwarding.connections.open(addr.ip());
        if !forwarding.still_listed(target) {
            continue;
        }
        let mut upstream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%addr, %error, "backend refused; trying the next");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%addr, "backend connect timed out; trying the next");
                    continue;
                }
            };
        let _ = upstream.set_nodelay(true);
        if let Some(bytes) = preface(target, origin, forwarding.proxy_protocol) {
            if upstream.write_all(&bytes).await.is_err() {
                continue;
            }
        }
        match first_reply(&mut client, &mut upstream, &mut pending).await {
            FirstReply::Answered(bytes) => {
                let _ = client.set_nodelay(true);
                if client.write_all(&bytes).await.is_ok() {
                    relay(client, upstream, pending.client_done, peer).await;
                }
                drop(guard);
                return;
            }
            FirstReply::Committed => {
                relay(client, upstream, pending.client_done, peer).await;
                drop(guard);
                return;
            }
            FirstReply::Retry => {
                tracing::debug!(%addr, "backend closed before answering; trying the next");
            }
            FirstReply::Abandon => return,
        }
    }
    tracing::debug!(%peer, "no backend for the ingress connection");
}

/// Replays what the client sent so far to a fresh task connection, then
/// passes client bytes on until the task answers its first bytes.
async fn first_reply(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    pending: &mut Pending,
) -> FirstReply {
    if !pending.sent.is_empty() && upstream.write_all(&pending.sent).await.is_err() {
        return FirstReply::Retry;
    }
    if pending.client_done && upstream.shutdown().await.is_err() {
        return FirstReply::Retry;
    }
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_task = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client.read(&mut from_client), if !pending.client_done => match read {
                Ok(0) => {
                    pending.client_done = true;
                    if upstream.shutdown().await.is_err() {
                        return FirstReply::Retry;
                    }
                }
                Ok(n) => {
                    let chunk = &from_client[..n];
                    let over = pending.sent.len() + n > REPLAY_LIMIT;
                    if !over {
                        pending.sent.extend_from_slice(chunk);
                    }
                    if upstream.write_all(chunk).await.is_err() {
                        return if over { FirstReply::Abandon } else { FirstReply::Retry };
                    }
                    if over {
                        return FirstReply::Committed;
                    }
                }
                Err(_) => return FirstReply::Abandon,
            },
            read = upstream.read(&mut from_task) => return match read {
                Ok(n) if n > 0 => {
                    from_task.truncate(n);
                    FirstReply::Answered(from_task)
                }
                _ => FirstReply::Retry,
            },
        }
    }
}

/// Copies both ways until both sides are done (or either fails). When the
/// client already closed its side, only the task's answer is left to copy.
async fn relay(
    mut client: TcpStream,
    mut upstream: TcpStream,
    client_done: bool,
    peer: SocketAddr,
) {
    let result = if client_done {
        let copied = tokio::io::copy(&mut upstream, &mut client).await;
        let _ = client.shutdown().await;
        copied.map(|_| ())
    } else {
        tokio::io::copy_bidirectional(&mut client, &mut upstream)
            .await
            .map(|_| ())
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "ingress connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that reads what it is sent, then answers with `answer` (or
    /// closes without a byte when `answer` is empty); returns its address
    /// and what it received on its first connection.
    async fn task(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 1024];
            let n = stream.read(&mut got).await.unwrap_or(0);
            got.truncate(n);
            if answer.is_empty() {
                // Linger 0: the drop resets the connection. (Deprecated
                // for blocking on drop, which a zero linger never does.)
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
            } else {
                stream.write_all(answer).await.unwrap();
            }
            got
        });
        (addr, handle)
    }

    /// A client connection and the proxy's side of it.
    async fn client_pair() -> (TcpStream, TcpStream, SocketAddr) {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (proxied, peer) = front.accept().await.unwrap();
        (client, proxied, peer)
    }

    fn forwarding(backends: Vec<SocketAddr>) -> Forwarding {
        Forwarding {
            targets: Arc::new(RwLock::new(
                backends.into_iter().map(Target::Direct).collect(),
            )),
            target_port: 80,
            proxy_protocol: false,
            relaying: Arc::default(),
            connections: Arc::default(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The proxy's half of a connection, forwarded in a task of its own
    /// over `candidates` from the first.
    fn spawn_forward(
        fwd: &Forwarding,
        proxied: TcpStream,
        peer: SocketAddr,
        candidates: Vec<Target>,
    ) -> tokio::task::JoinHandle<()> {
        let fwd = fwd.clone();
        let origin = Header {
            source: peer,
            destination: relay::destination_of(&proxied),
            task_id: None,
        };
        tokio::spawn(async move { forward(proxied, &origin, &fwd, candidates, 0).await })
    }

    /// A port nothing listens on.
    async fn refusing() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_refused_connect_or_a_close_before_any_answer_goes_to_the_next_task() {
        let refused = refusing().await;
        let (resetting, reset_got) = task(b"").await;
        let (answering, answer_got) = task(b"HTTP/1.0 200 OK\r\n\r\nhello").await;
        let fwd = forwarding(vec![refused, resetting, answering]);
        let (mut client, proxied, peer) = client_pair().await;
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let candidates = fwd.current();
        let proxy = spawn_forward(&fwd, proxied, peer, candidates);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        drop(client);
        proxy.await.unwrap();
        assert_eq!(answer, "HTTP/1.0 200 OK\r\n\r\nhello");
        // The request reached the resetting task, then was replayed whole.
        assert_eq!(reset_got.await.unwrap(), b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(answer_got.await.unwrap(), b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(fwd.connections.total(), 0);
    }

    #[tokio::test]
    async fn open_connections_are_counted_until_they_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fwd = forwarding(vec![addr]);
        let (mut client, proxied, peer) = client_pair().await;
        let candidates = fwd.current();
        let proxy = spawn_forward(&fwd, proxied, peer, candidates);
        let (mut upstream, _) = listener.accept().await.unwrap();
        upstream.write_all(b"hi").await.unwrap();
        let mut first = [0u8; 2];
        client.read_exact(&mut first).await.unwrap();
        assert_eq!(fwd.connections.open_to(addr.ip()), 1);
        let waiting = tokio::spawn({
            let connections = fwd.connections.clone();
            async move { connections.wait_closed(addr.ip()).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(upstream);
        drop(client);
        proxy.await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fwd.connections.open_to(addr.ip()), 0);
    }

    #[tokio::test]
    async fn a_task_no_longer_listed_gets_no_new_connection() {
        let (gone, _) = task(b"HTTP/1.0 200 OK\r\n\r\nold").await;
        let (kept, _) = task(b"HTTP/1.0 200 OK\r\n\r\nnew").await;
        let fwd = forwarding(vec![gone, kept]);
        let (mut client, proxied, peer) = client_pair().await;
        // Accepted while both were listed; `gone` leaves before the connect.
        let candidates_then = fwd.current();
        assert_eq!(candidates_then.len(), 2);
        *fwd.targets.write().unwrap() = vec![Target::Direct(kept)];
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let proxy = spawn_forward(&fwd, proxied, peer, candidates_then);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        drop(client);
        proxy.await.unwrap();
        assert!(answer.ends_with("new"), "{answer}");
    }
}
