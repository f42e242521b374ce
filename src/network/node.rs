//! The handle to this node's network side: one per node, made by the daemon
//! with the engine's address and handed to the data plane ([`super::run`]),
//! the agent (a worker's task bridges, drains) and [`super::leave`]. Several
//! nodes in one process each have their own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::barrier::Barrier;
use super::dns::{Dns, Zone};
use super::drain::DataPlane;
use super::ingress::{Ingress, IngressPlane, OpenConnections};
use super::local::{self, Engine, LocalError};
use super::vip::{self, NetworkVip, Vips};
use super::vxlan::{Overlay, Vxlans};
use super::TaskNetworking;
use crate::engine::EngineSettings;

/// This node's network side. Clones share it. One made with
/// [`NodeNetwork::without_engine`] (unit tests) does nothing at all: no
/// data plane runs, no bridge is made for a task, and stops do not wait.
#[derive(Clone)]
pub struct NodeNetwork {
    engine: Option<Arc<Engine>>,
    /// The data plane while it runs here (on a manager); the agent waits
    /// for drains through it.
    data_plane: Arc<RwLock<Option<Arc<DataPlane>>>>,
    /// Clusters whose bridges the agent made for its tasks (no data plane
    /// here), for leave.
    task_bridges: Arc<Mutex<HashSet<String>>>,
    /// Without a data plane (a worker): what the VXLAN ports should be,
    /// followed by [`follow_overlays`] once the first assignments came.
    overlays: Arc<Mutex<Option<watch::Sender<WorkerPlane>>>>,
    /// Without a data plane (a worker): the ingress plane its session
    /// sent, followed by [`keep_worker_ingress`].
    ingress: Arc<Mutex<Option<watch::Sender<IngressPlane>>>>,
    /// Without a data plane (a worker), while its ingress runs: what a
    /// stop waits on.
    worker_ingress: Arc<RwLock<Option<WorkerIngress>>>,
    /// The store index this node's routing (VIPs, DNS, ingress) reflects,
    /// reported to the leader for drains across hosts (`barrier`).
    routing_applied: Arc<watch::Sender<u64>>,
    /// A worker: the index its session said the latest set was computed
    /// at, noted before the set reaches the agent.
    routing_noted: Arc<AtomicU64>,
    /// How a stop waits for the other nodes (set by the cluster part).
    barrier: Arc<RwLock<Option<Arc<dyn Barrier>>>>,
    /// One bridge creation at a time: tasks prepared together would both
    /// find a bridge missing, and the engine refuses the second with
    /// "Pool overlaps" rather than a conflict.
    creating: Arc<tokio::sync::Mutex<()>>,
}

/// A worker's running ingress, as stops see it.
#[derive(Clone)]
struct WorkerIngress {
    connections: Arc<OpenConnections>,
    /// The plane its listeners serve now.
    applied: watch::Receiver<IngressPlane>,
}

/// What a worker's tasks' assignments say of their networks, merged:
/// VXLAN peers, names and VIPs per network.
#[derive(Debug, Clone, Default, PartialEq)]
struct WorkerPlane {
    /// The store index the assignments were computed at.
    index: u64,
    cluster_id: String,
    overlays: Vec<Overlay>,
    zones: HashMap<String, Zone>,
    vips: Vec<NetworkVip>,
}

/// No engine: what options built by hand (tests) get.
impl Default for NodeNetwork {
    fn default() -> NodeNetwork {
        NodeNetwork::without_engine()
    }
}

impl NodeNetwork {
    /// The network side of a node whose engine `engine` reaches.
    pub fn new(engine: EngineSettings) -> NodeNetwork {
        NodeNetwork {
            engine: Some(Arc::new(Engine::new(engine))),
            data_plane: Arc::default(),
            task_bridges: Arc::default(),
            overlays: Arc::default(),
            ingress: Arc::default(),
            worker_ingress: Arc::default(),
            routing_applied: Arc::new(watch::channel(0).0),
            routing_noted: Arc::default(),
            barrier: Arc::default(),
            creating: Arc::default(),
        }
    }

    /// A node with no engine to drive: every method is a no-op.
    pub fn without_engine() -> NodeNetwork {
        NodeNetwork {
            engine: None,
            data_plane: Arc::default(),
            task_bridges: Arc::default(),
            overlays: Arc::default(),
            ingress: Arc::default(),
            worker_ingress: Arc::default(),
            routing_applied: Arc::new(watch::channel(0).0),
            routing_noted: Arc::default(),
            barrier: Arc::default(),
            creating: Arc::default(),
        }
    }

    pub(super) fn engine(&self) -> Option<&Arc<Engine>> {
        self.engine.as_ref()
    }

    /// Set by the data plane while it runs, cleared when it ends.
    pub(super) fn publish(&self, data_plane: Option<Arc<DataPlane>>) {
        if let Ok(mut slot) = self.data_plane.write() {
            *slot = data_plane;
        }
    }

    fn running(&self) -> Option<Arc<DataPlane>> {
        self.data_plane.read().ok().and_then(|d| d.clone())
    }

    /// Before a task's container is created, the bridges of its networks
    /// the engine lacks are created from its assignment. A manager's data
    /// plane realises every swarm network too, but a task may come before
    /// its pass (a network created a moment before the service, an engine
    /// just restarted): the container would then find no network. On a
    /// worker the bridges are remembered for
    /// [`NodeNetwork::remove_task_bridges`].
    pub async fn prepare_task(&self, networking: &TaskNetworking) -> Result<(), LocalError> {
        let Some(engine) = &self.engine else {
            return Ok(());
        };
        if networking.networks.is_empty() {
            return Ok(());
        }
        let worker = self.running().is_none();
        if worker {
            if let Ok(mut clusters) = self.task_bridges.lock() {
                clusters.insert(networking.cluster_id.clone());
            }
        }
        {
            let _one_at_a_time = self.creating.lock().await;
            local::realise_task_bridges(engine, networking).await?;
        }
        // The new bridges want their VXLAN ports now, not at the next repair.
        if worker {
            if let Ok(slot) = self.overlays.lock() {
                if let Some(tx) = slot.as_ref() {
                    tx.send_modify(|_| {});
                }
            }
        }
        Ok(())
    }

    /// This node's routing reflects the store at `index` (or later).
    pub(super) fn routed_at(&self, index: u64) {
        self.routing_applied.send_if_modified(|at| {
            let newer = index > *at;
            *at = (*at).max(index);
            newer
        });
    }

    /// The store index this node's routing reflects, as it advances.
    pub fn routing_applied(&self) -> watch::Receiver<u64> {
        self.routing_applied.subscribe()
    }

    /// A worker's session got a set computed at store index `index`: noted
    /// before the set goes to the agent, so the plane built from it carries
    /// the index.
    pub fn note_routing_index(&self, index: u64) {
        self.routing_noted.fetch_max(index, Ordering::SeqCst);
    }

    /// How stops wait for the other nodes from now on.
    pub fn set_barrier(&self, barrier: Option<Arc<dyn Barrier>>) {
        if let Ok(mut slot) = self.barrier.write() {
            *slot = barrier;
        }
    }

    /// Held while bridges are created: the engine (API 1.41) would make two
    /// bridges of one name when the data plane and a task create it at once.
    pub(super) async fn creating_bridges(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.creating.lock().await
    }

    /// A node without a data plane (a worker) joins its tasks' networks to
    /// the other hosts from its assignments: called with every new set;
    /// the first call starts the loop that keeps the VXLAN ports as the
    /// latest set says (and repairs them) until `shutdown`.
    pub fn follow_overlays<'a>(
        &self,
        set: impl IntoIterator<Item = &'a TaskNetworking>,
        shutdown: &CancellationToken,
    ) {
        let Some(engine) = &self.engine else {
            return;
        };
        if self.running().is_some() {
            return;
        }
        let mut wanted = merge(set);
        wanted.index = self.routing_noted.load(Ordering::SeqCst);
        let Ok(mut slot) = self.overlays.lock() else {
            return;
        };
        match slot.as_ref() {
            Some(tx) => {
                tx.send_if_modified(|current| {
                    let changed = *current != wanted;
                    *current = wanted;
                    changed
                });
            }
            None => {
                let (tx, rx) = watch::channel(wanted);
                *slot = Some(tx);
                tokio::spawn(keep_worker_plane(
                    engine.clone(),
                    self.data_plane.clone(),
                    self.routing_applied.clone(),
                    rx,
                    shutdown.clone(),
                ));
            }
        }
    }

    /// A node without a data plane (a worker) serves every published port
    /// too: called with each ingress plane its session sends; the first
    /// call (or the first after the loop ended) starts the loop that keeps
    /// the listeners as the latest plane says until `shutdown`.
    pub fn follow_ingress(&self, plane: IngressPlane, me: &str, shutdown: &CancellationToken) {
        let Some(engine) = &self.engine else {
            return;
        };
        let Ok(mut slot) = self.ingress.lock() else {
            return;
        };
        match slot.as_ref().filter(|tx| !tx.is_closed()) {
            Some(tx) => {
                tx.send_if_modified(|current| {
                    let changed = *current != plane;
                    *current = plane;
                    changed
                });
            }
            None => {
                let (tx, rx) = watch::channel(plane);
                *slot = Some(tx);
                tokio::spawn(keep_worker_ingress(
                    engine.clone(),
                    self.data_plane.clone(),
                    self.worker_ingress.clone(),
                    me.to_string(),
                    rx,
                    shutdown.clone(),
                ));
            }
        }
    }

    /// A worker leaving the swarm: the bridges [`NodeNetwork::prepare_task`]
    /// made go (after the task containers).
    pub async fn remove_task_bridges(&self) {
        let Some(engine) = &self.engine else {
            return;
        };
        let clusters: Vec<String> = match self.task_bridges.lock() {
            Ok(mut clusters) => clusters.drain().collect(),
            Err(_) => return,
        };
        if let Ok(mut slot) = self.overlays.lock() {
            // Dropping the sender ends `keep_worker_plane`, which removes its ports.
            *slot = None;
        }
        if let Ok(mut slot) = self.ingress.lock() {
            // And `keep_worker_ingress`, which closes its listeners.
            *slot = None;
        }
        for cluster_id in clusters {
            local::remove_cluster_bridges(engine, &cluster_id).await;
        }
    }

    /// Before the agent stops serving task `task_id`: see
    /// [`DataPlane::before_stop`]; on a worker,
    /// [`super::drain::worker_before_stop`] through its ingress.
    pub async fn before_stop(
        &self,
        changed_at: Option<u64>,
        task_id: &str,
        container: &str,
        grace: Duration,
    ) {
        // The other nodes first: their VIPs and DNS stop sending new
        // connections here while the task still answers.
        let barrier = self.barrier.read().ok().and_then(|b| b.clone());
        if let (Some(barrier), Some(index)) = (barrier, changed_at) {
            barrier.wait_routed_out(task_id.to_string(), index).await;
        }
        if let Some(data_plane) = self.running() {
            data_plane.before_stop(changed_at, container, grace).await;
            return;
        }
        let worker = self.worker_ingress.read().ok().and_then(|w| w.clone());
        if let (Some(engine), Some(worker)) = (&self.engine, worker) {
            super::drain::worker_before_stop(
                engine,
                worker.applied,
                &worker.connections,
                task_id,
                container,
                grace,
            )
            .await;
        }
    }
}

/// Every task's overlays in one list, one entry per network with the
/// union of the remote endpoints.
fn merge<'a>(set: impl IntoIterator<Item = &'a TaskNetworking>) -> WorkerPlane {
    let mut cluster_id = String::new();
    let mut by_network: BTreeMap<String, Overlay> = BTreeMap::new();
    let mut zones = HashMap::new();
    let mut vips = BTreeSet::new();
    for networking in set {
        if !networking.cluster_id.is_empty() {
            cluster_id = networking.cluster_id.clone();
        }
        // Every assignment of a set was computed from the same store state.
        zones.extend(networking.zones.iter().map(|(k, v)| (k.clone(), v.clone())));
        vips.extend(networking.vips.iter().cloned());
        for overlay in &networking.overlays {
            let entry = by_network
                .entry(overlay.network_id.clone())
                .or_insert_with(|| Overlay {
                    remote: Vec::new(),
                    ..overlay.clone()
                });
            entry.remote.extend(overlay.remote.iter().cloned());
        }
    }
    let overlays = by_network
        .into_values()
        .map(|mut o| {
            o.remote.sort();
            o.remote.dedup();
            o
        })
        .collect();
    WorkerPlane {
        index: 0,
        cluster_id,
        overlays,
        zones,
        vips: vips.into_iter().collect(),
    }
}

/// How often a worker replays its VXLAN entries without a new assignment.
const REPAIR_EVERY: Duration = Duration::from_secs(3);

/// A worker's VXLAN ports, kept as the latest assignments say until
/// `shutdown` or until the node leaves (the sender is dropped).
async fn keep_worker_plane(
    engine: Arc<Engine>,
    data_plane: Arc<RwLock<Option<Arc<DataPlane>>>>,
    routing_applied: Arc<watch::Sender<u64>>,
    mut wanted: watch::Receiver<WorkerPlane>,
    shutdown: CancellationToken,
) {
    let mut vxlans = Vxlans::new();
    let mut vips = Vips::new();
    let mut dns = Dns::new(shutdown.clone());
    let left = loop {
        let current = wanted.borrow_and_update().clone();
        // A node promoted to manager: its data plane owns all this now.
        let managed = data_plane.read().map(|d| d.is_some()).unwrap_or(false);
        if !current.cluster_id.is_empty() && !managed {
            let cluster_id = &current.cluster_id;
            let bridges = local::bridge_ifaces(&engine, cluster_id).await;
            vxlans
                .reconcile(cluster_id, &current.overlays, &bridges, true)
                .await;
            let routes = vip::on_bridges(&current.vips, &bridges);
            vips.reconcile(&vip::table_name(cluster_id), &routes, &bridges)
                .await;
            dns.reconcile(&bridges, current.zones.clone()).await;
        }
        routing_applied.send_if_modified(|at| {
            let newer = current.index > *at;
            *at = (*at).max(current.index);
            newer
        });
        tokio::select! {
            _ = shutdown.cancelled() => break false,
            changed = wanted.changed() => if changed.is_err() {
                break true;
            },
            _ = tokio::time::sleep(REPAIR_EVERY) => {}
        }
    };
    // The nft table must not outlive shoal; VXLAN ports (like bridges and
    // containers) stay across a restart, and go when the node leaves.
    vips.remove().await;
    if left {
        vxlans.remove().await;
    }
    dns.stop().await;
}

/// A worker's ingress listeners, kept as the latest plane says until
/// `shutdown` or until the node leaves (the sender is dropped). A node
/// promoted to manager hands the ports to its data plane.
async fn keep_worker_ingress(
    engine: Arc<Engine>,
    data_plane: Arc<RwLock<Option<Arc<DataPlane>>>>,
    published: Arc<RwLock<Option<WorkerIngress>>>,
    me: String,
    mut wanted: watch::Receiver<IngressPlane>,
    shutdown: CancellationToken,
) {
    let mut ingress = Ingress::new(shutdown.clone());
    let mut known = HashMap::new();
    let (applied_tx, applied) = watch::channel(IngressPlane::default());
    if let Ok(mut slot) = published.write() {
        *slot = Some(WorkerIngress {
            connections: ingress.connections(),
            applied,
        });
    }
    loop {
        let managed = data_plane.read().map(|d| d.is_some()).unwrap_or(false);
        let plane = if managed {
            IngressPlane::default()
        } else {
            wanted.borrow_and_update().clone()
        };
        let local = super::ingress::local_addresses(&engine, &plane, &me, &mut known).await;
        ingress.reconcile(&plane, &me, local).await;
        applied_tx.send_replace(plane);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = wanted.changed() => if changed.is_err() {
                break;
            },
            _ = tokio::time::sleep(REPAIR_EVERY) => {}
        }
    }
    if let Ok(mut slot) = published.write() {
        *slot = None;
    }
    ingress.stop().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{Ipam, IpamConfig, Network};
    use bollard::Docker;

    /// A worker's handle (an engine, no data plane) makes a task's bridge
    /// on the local engine and removes it at leave. Skips without an engine.
    #[tokio::test]
    async fn a_worker_realises_its_tasks_bridges_and_removes_them_at_leave() {
        const SOCK: &str = "/var/run/docker.sock";
        let Ok(docker) = Docker::connect_with_unix(SOCK, 30, bollard::API_DEFAULT_VERSION) else {
            return;
        };
        if docker.ping().await.is_err() {
            eprintln!("skipping: no engine at {SOCK}");
            return;
        }
        let suffix = rand::random::<u32>();
        let id = format!("nettest{suffix:08x}");
        // A subnet of its own, unlikely to meet another test's.
        let subnet = format!("10.231.{}.0/24", suffix % 250);
        let gateway = format!("10.231.{}.1", suffix % 250);
        let networking = TaskNetworking {
            cluster_id: format!("cluster{suffix:08x}"),
            networks: vec![Network {
                id: Some(id.clone()),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet),
                        gateway: Some(gateway),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let Ok(engine) = crate::engine::EngineSettings::new(&format!("unix://{SOCK}"), None) else {
            return;
        };
        let node = NodeNetwork::new(engine);
        let bridge = super::super::bridge_name(&id);
        let inspect = || {
            docker.inspect_network(
                &bridge,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
        };
        let made = node.prepare_task(&networking).await;
        assert!(made.is_ok(), "{made:?}");
        // Twice is the same as once.
        assert!(node.prepare_task(&networking).await.is_ok());
        let labels = inspect().await.ok().and_then(|n| n.labels);
        assert_eq!(
            labels.and_then(|l| l.get(super::super::LABEL_NETWORK_ID).cloned()),
            Some(id.clone())
        );
        node.remove_task_bridges().await;
        assert!(inspect().await.is_err(), "bridge {bridge} left behind");
    }
}
