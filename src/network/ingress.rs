//! Published ports in ingress mode: a userspace L4 (TCP) proxy on this node.
//! One listener per published port forwards each connection to a running
//! task of the service, round robin. A task that refuses the connection, or
//! closes or resets it before it answered a byte, is replaced by the next
//! task, with the client's bytes so far replayed. A listener stops
//! accepting when its port is no longer published (service removed, port
//! removed); its open connections run on until they end or shoal stops.
//!
//! Different from Docker's routing mesh (IPVS), which neither retries nor
//! replays: without it, a connection that reaches a task as it stops fails,
//! and no request may fail during an update. The cost: a request a task
//! handled but closed without answering is sent again to another task.
//!
//! Every forwarded connection is counted against its task's address
//! ([`OpenConnections`]), so the agent can let them finish before it stops
//! a task (see [`super::drain`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bollard::models::{EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::manager::orchestrator::as_service;
use crate::store::Store;
use crate::types::Kind;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Client bytes kept for a replay on the next task until the task answers;
/// a client that sends more before any answer is no longer retried.
const REPLAY_LIMIT: usize = 64 * 1024;

/// Where a published port leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service_id: String,
    pub target_port: u16,
}

/// Published TCP ports in ingress mode, from the services' endpoints.
pub fn desired(store: &Store) -> HashMap<u16, Route> {
    let mut out = HashMap::new();
    for service in store.list(Kind::Service).iter().filter_map(as_service) {
        let id = service.id.clone().unwrap_or_default();
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

/// A listener's current task addresses, replaced by each reconcile.
type Backends = Arc<RwLock<Vec<SocketAddr>>>;

struct Listener {
    route: Route,
    backends: Backends,
    stop: CancellationToken,
}

/// The listeners of this node.
pub struct Ingress {
    listeners: HashMap<u16, Listener>,
    connections: Arc<OpenConnections>,
    shutdown: CancellationToken,
    running: TaskTracker,
}

impl Ingress {
    pub fn new(shutdown: CancellationToken) -> Ingress {
        Ingress {
            listeners: HashMap::new(),
            connections: Arc::default(),
            shutdown,
            running: TaskTracker::new(),
        }
    }

    /// The open connections of every listener, for draining tasks.
    pub fn connections(&self) -> Arc<OpenConnections> {
        self.connections.clone()
    }

    /// Opens, closes and re-points listeners to match `desired`, with the
    /// current task addresses of each service. Once this returns, no new
    /// connection goes to an address that is no longer listed.
    pub async fn reconcile(
        &mut self,
        desired: HashMap<u16, Route>,
        backends: HashMap<String, Vec<Ipv4Addr>>,
    ) {
        self.listeners.retain(|port, l| {
            let keep = desired.get(port) == Some(&l.route);
            if !keep {
                tracing::info!(port, service = %l.route.service_id, "ingress port closed");
                l.stop.cancel();
            }
            keep
        });
        for (port, route) in desired {
            let addrs: Vec<SocketAddr> = backends
                .get(&route.service_id)
                .into_iter()
                .flatten()
                .map(|ip| SocketAddr::from((*ip, route.target_port)))
                .collect();
            if let Some(l) = self.listeners.get(&port) {
                if let Ok(mut b) = l.backends.write() {
                    *b = addrs;
                }
                continue;
            }
            let socket = match TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(port, %error, "cannot listen on the published port; retrying");
                    continue;
                }
            };
            tracing::info!(port, service = %route.service_id, "ingress port open");
            let backends = Arc::new(RwLock::new(addrs));
            let stop = self.shutdown.child_token();
            self.running.spawn(serve(
                socket,
                Forwarding {
                    backends: backends.clone(),
                    connections: self.connections.clone(),
                    shutdown: self.shutdown.clone(),
                },
                stop.clone(),
                self.running.clone(),
            ));
            self.listeners.insert(
                port,
                Listener {
                    route,
                    backends,
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

/// What each connection of one listener needs.
#[derive(Clone)]
struct Forwarding {
    backends: Backends,
    connections: Arc<OpenConnections>,
    /// Shoal's shutdown: connections outlive their listener, not shoal.
    shutdown: CancellationToken,
}

impl Forwarding {
    fn current(&self) -> Vec<SocketAddr> {
        self.backends.read().map(|b| b.clone()).unwrap_or_default()
    }

    fn still_listed(&self, addr: SocketAddr) -> bool {
        self.backends.read().is_ok_and(|b| b.contains(&addr))
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
                _ = forward(client, peer, &forwarding, candidates, start) => {}
            }
        });
    }
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

/// Gives the connection to the first of `candidates` (the tasks listed when
/// it was accepted; round robin from `start`) that is still listed, accepts
/// it and answers; then copies both ways until either side closes.
async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    forwarding: &Forwarding,
    candidates: Vec<SocketAddr>,
    start: usize,
) {
    let count = candidates.len();
    let mut pending = Pending::default();
    for i in 0..count {
        let addr = candidates[(start + i) % count];
        // Counted before the check: a drain that no longer sees the task
        // listed either sees this connection or this check sees the drain.
        let guard = forwarding.connections.open(addr.ip());
        if !forwarding.still_listed(addr) {
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
            backends: Arc::new(RwLock::new(backends)),
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
        candidates: Vec<SocketAddr>,
    ) -> tokio::task::JoinHandle<()> {
        let fwd = fwd.clone();
        tokio::spawn(async move { forward(proxied, peer, &fwd, candidates, 0).await })
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
        *fwd.backends.write().unwrap() = vec![kept];
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let proxy = spawn_forward(&fwd, proxied, peer, candidates_then);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        drop(client);
        proxy.await.unwrap();
        assert!(answer.ends_with("new"), "{answer}");
    }
}
