//! Published ports in ingress mode: a userspace L4 (TCP) proxy on this node.
//! One listener per published port forwards each connection to a running
//! task of the service, round robin, trying the next task when a connect is
//! refused. A listener closes when its port is no longer published (service
//! removed, port removed) and at shutdown, with its open connections.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bollard::models::{EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::manager::orchestrator::as_service;
use crate::store::Store;
use crate::types::Kind;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

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

struct Listener {
    route: Route,
    backends: Arc<RwLock<Vec<SocketAddr>>>,
    stop: CancellationToken,
}

/// The listeners of this node.
pub struct Ingress {
    listeners: HashMap<u16, Listener>,
    shutdown: CancellationToken,
    running: TaskTracker,
}

impl Ingress {
    pub fn new(shutdown: CancellationToken) -> Ingress {
        Ingress {
            listeners: HashMap::new(),
            shutdown,
            running: TaskTracker::new(),
        }
    }

    /// Opens, closes and re-points listeners to match `desired`, with the
    /// current task addresses of each service.
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
                backends.clone(),
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

async fn serve(
    socket: TcpListener,
    backends: Arc<RwLock<Vec<SocketAddr>>>,
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
        let candidates = backends.read().map(|b| b.clone()).unwrap_or_default();
        let start = next.fetch_add(1, Ordering::Relaxed);
        running.spawn(forward(client, peer, candidates, start, stop.clone()));
    }
}

/// Connects to the first backend that accepts, from `start` round robin,
/// then copies both ways until either side closes.
async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    candidates: Vec<SocketAddr>,
    start: usize,
    stop: CancellationToken,
) {
    let count = candidates.len();
    let mut upstream = None;
    for i in 0..count {
        let addr = candidates[(start + i) % count];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                upstream = Some(stream);
                break;
            }
            Ok(Err(error)) => tracing::debug!(%addr, %error, "backend refused; trying the next"),
            Err(_) => tracing::debug!(%addr, "backend connect timed out; trying the next"),
        }
    }
    let Some(mut upstream) = upstream else {
        tracing::debug!(%peer, "no backend for the ingress connection");
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = stop.cancelled() => {}
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "ingress connection ended with an error");
            }
        }
    }
}
