//! The node side: swarm networks realised as bridge networks on the local
//! engine, task containers joined to them (with shoal's DNS servers, not the
//! engine's aliases: service names are [`super::dns`]'s), and the serving
//! tasks' addresses the ingress proxy, the VIPs and DNS lead to.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use bollard::models::{
    Ipam, IpamConfig, Network, NetworkConnectRequest, NetworkCreateRequest, Task, TaskState,
};
use bollard::query_parameters::ListNetworksOptions;
use bollard::Docker;
use tokio::sync::OnceCell;

use super::address::engine_range;
use super::allocate::{self, is_ingress};
use super::task::{bridges_to_create, TaskNetworking};
use super::{bridge_name, LABEL_NETWORK_ID};
use crate::engine::EngineSettings;
use crate::manager::orchestrator::{as_service, as_task};
use crate::manager::tasks;
use crate::store::{Store, Tables};
use crate::types::Kind;

/// Marks the engine bridges of one swarm, so a shoal touches only its own.
const LABEL_CLUSTER_ID: &str = "io.shoal.cluster.id";

/// Requests to the engine from the data plane.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot connect to the engine at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("engine: {0}")]
    Engine(#[from] bollard::errors::Error),
}

/// The local engine, reached through bollard on first use.
pub struct Engine {
    settings: EngineSettings,
    client: OnceCell<Docker>,
    /// Container ID → its addresses (inspected once it has them all).
    addresses: Mutex<HashMap<String, ContainerAddresses>>,
    /// Networks whose creation failed already (warned once).
    warned: Mutex<HashSet<String>>,
}

impl Engine {
    pub fn new(settings: EngineSettings) -> Engine {
        Engine {
            settings,
            client: OnceCell::new(),
            addresses: Mutex::default(),
            warned: Mutex::default(),
        }
    }

    /// The container's address on its first network with one, as the
    /// engine reports it.
    pub async fn container_address(&self, container: &str) -> Option<Ipv4Addr> {
        let docker = self.client().await.ok()?;
        let inspect = docker.inspect_container(container, None).await.ok()?;
        let networks = inspect.network_settings?.networks?;
        let mut addresses: Vec<(String, Ipv4Addr)> = networks
            .into_iter()
            .filter_map(|(name, n)| Some((name, n.ip_address?.parse().ok()?)))
            .collect();
        addresses.sort();
        addresses.into_iter().next().map(|(_, ip)| ip)
    }

    async fn client(&self) -> Result<&Docker, LocalError> {
        self.client
            .get_or_try_init(|| async {
                let connect = |e: bollard::errors::Error| LocalError::Connect {
                    addr: self.settings.label().to_string(),
                    reason: e.to_string(),
                };
                let v141 = bollard::ClientVersion {
                    major_version: 1,
                    minor_version: 41,
                };
                let docker = self.settings.docker(120, &v141).map_err(connect)?;
                docker.negotiate_version().await.map_err(connect)
            })
            .await
    }
}

/// What the engine's bridges depend on in the store: the cluster, the
/// swarm networks (ID and version) and the running tasks with more than one
/// network (connected to the others after their start). While these stay
/// the same, [`reconcile`] has nothing new to do until the next repair, and
/// the data plane spares the engine round trips on every task change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BridgeInputs {
    cluster: Option<String>,
    networks: Vec<(String, Option<u64>)>,
    multi_network_containers: Vec<String>,
}

pub fn bridge_inputs(store: &Store) -> BridgeInputs {
    let mut networks: Vec<(String, Option<u64>)> = store
        .list(Kind::Network)
        .iter()
        .map(|n| (n.id().to_string(), n.version()))
        .collect();
    networks.sort();
    let mut multi_network_containers: Vec<String> = store
        .list(Kind::Task)
        .iter()
        .filter_map(as_task)
        .filter(|t| task_attachments(t).len() >= 2 && tasks::state(t) == TaskState::RUNNING)
        .filter_map(|t| tasks::container_id(&t))
        .collect();
    multi_network_containers.sort();
    BridgeInputs {
        cluster: crate::cluster::the_cluster(store).and_then(|c| c.id),
        networks,
        multi_network_containers,
    }
}

/// Engine networks realising this cluster's swarm networks. Only this
/// cluster's: other shoals may share the engine, and their bridges are not
/// ours to touch.
async fn cluster_networks(
    docker: &Docker,
    cluster_id: &str,
) -> Result<Vec<bollard::models::Network>, LocalError> {
    let options = ListNetworksOptions {
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![
                LABEL_NETWORK_ID.to_string(),
                format!("{LABEL_CLUSTER_ID}={cluster_id}"),
            ],
        )])),
    };
    Ok(docker.list_networks(Some(options)).await?)
}

/// The swarm network an engine network realises.
fn realises(n: &bollard::models::Network) -> Option<&String> {
    n.labels.as_ref()?.get(LABEL_NETWORK_ID)
}

/// Engine networks realising swarm networks: swarm ID → engine name.
async fn realised(
    docker: &Docker,
    cluster_id: &str,
) -> Result<HashMap<String, String>, LocalError> {
    Ok(cluster_networks(docker, cluster_id)
        .await?
        .into_iter()
        .filter_map(|n| Some((realises(&n)?.clone(), n.name?)))
        .collect())
}

/// Makes the engine's bridges match the store's swarm networks: creates the
/// missing ones (also after an engine restart or a removal by hand) and
/// removes those whose swarm network is gone. Idempotent.
pub async fn reconcile(engine: &Engine, store: &Store, node_id: &str) {
    let docker = match engine.client().await {
        Ok(d) => d,
        Err(error) => {
            tracing::debug!(%error, "network data plane: engine not reachable");
            return;
        }
    };
    let cluster_id = crate::cluster::the_cluster(store)
        .and_then(|c| c.id)
        .unwrap_or_default();
    let have = match realised(docker, &cluster_id).await {
        Ok(h) => h,
        Err(error) => {
            tracing::debug!(%error, "network data plane: cannot list engine networks");
            return;
        }
    };
    let wanted: Vec<_> = allocate::networks(store)
        .into_iter()
        .filter(|n| !is_ingress(&n.network))
        .collect();
    for n in &wanted {
        let id = allocate::id_of(&n.network).to_string();
        if have.contains_key(&id) {
            continue;
        }
        // Without its own gateway yet this node waits for the leader's.
        let Some(request) = allocate::for_node(n, node_id)
            .and_then(|network| bridge_request(&network, &cluster_id))
        else {
            continue;
        };
        match docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = %id, bridge = %bridge_name(&id), "swarm network realised")
            }
            Err(error) => {
                let first = engine
                    .warned
                    .lock()
                    .map(|mut w| w.insert(id.clone()))
                    .unwrap_or(false);
                if first {
                    tracing::warn!(network = %id, %error, "cannot realise the swarm network on the engine");
                }
            }
        }
    }
    for (id, name) in have {
        if !wanted.iter().any(|n| allocate::id_of(&n.network) == id) {
            match docker.remove_network(&name).await {
                Ok(()) => tracing::info!(network = %id, "swarm network gone: bridge removed"),
                // Still in use by a stopping container: next round.
                Err(error) => tracing::debug!(network = %id, %error, "bridge not removed yet"),
            }
        }
    }
    remove_stale_bridges(docker, &cluster_id).await;
    attach_extra(docker, store, node_id).await;
}

/// The engine network that realises swarm network `network` of cluster
/// `cluster_id`: a bridge with the network's subnet, this node's gateway,
/// task addresses from the upper half, labelled so only this swarm's shoals
/// touch it. The same on a manager (from the store) and on a worker (from
/// an assignment). `None` for a network without a subnet yet.
pub fn bridge_request(network: &Network, cluster_id: &str) -> Option<NetworkCreateRequest> {
    let id = allocate::id_of(network).to_string();
    let (subnet, gateway) = allocate::primary(network)?;
    Some(NetworkCreateRequest {
        name: bridge_name(&id),
        driver: Some("bridge".to_string()),
        internal: network.internal,
        attachable: Some(true),
        ipam: Some(Ipam {
            driver: Some("default".to_string()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(gateway.to_string()),
                ip_range: engine_range(&subnet).map(|h| h.to_string()),
                auxiliary_addresses: None,
            }]),
            options: None,
        }),
        // Room for the VXLAN header that frames to other hosts carry.
        options: Some(HashMap::from([(
            MTU_OPTION.to_string(),
            mtu_of(network).to_string(),
        )])),
        labels: Some(HashMap::from([
            (LABEL_NETWORK_ID.to_string(), id),
            (LABEL_CLUSTER_ID.to_string(), cluster_id.to_string()),
        ])),
        ..NetworkCreateRequest::default()
    })
}

/// The engine option that sets a bridge's (and its containers') MTU.
const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// The network's MTU: the one its creator asked for, else
/// [`super::vxlan::DEFAULT_MTU`]; on each node no more than its underlay
/// allows once VXLAN's 50 bytes are added ([`super::vxlan::underlay_mtu`]).
pub fn mtu_of(network: &Network) -> u32 {
    let asked = network
        .options
        .as_ref()
        .and_then(|o| o.get(MTU_OPTION))
        .and_then(|m| m.parse().ok())
        .unwrap_or(super::vxlan::DEFAULT_MTU);
    asked.min(super::vxlan::underlay_mtu().saturating_sub(super::vxlan::OVERHEAD))
}

/// Bridges of other swarms with no container left whose shoal is gone from
/// this host (died or was killed before leaving; see `owners`) would hold
/// their subnets on this engine forever; they go. A live swarm's bridges
/// stay, empty or not.
async fn remove_stale_bridges(docker: &Docker, cluster_id: &str) {
    let options = ListNetworksOptions {
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![LABEL_NETWORK_ID.to_string()],
        )])),
    };
    let Ok(list) = docker.list_networks(Some(options)).await else {
        return;
    };
    for network in list {
        let owner = network
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_CLUSTER_ID));
        if owner.is_some_and(|o| o == cluster_id || super::owners::is_alive(o)) {
            continue;
        }
        let Some(name) = network.name else { continue };
        let empty = match docker
            .inspect_network(
                &name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(inspected) => inspected.containers.as_ref().is_none_or(|c| c.is_empty()),
            Err(_) => false,
        };
        if empty && docker.remove_network(&name).await.is_ok() {
            tracing::info!(bridge = %name, "stale bridge of another swarm removed");
        }
    }
}

/// Creates the bridges of the task's networks the engine lacks, before the
/// task's container joins them. A bridge made meanwhile by someone else
/// (409) is as good.
pub async fn realise_task_bridges(
    engine: &Engine,
    networking: &TaskNetworking,
) -> Result<(), LocalError> {
    let docker = engine.client().await?;
    let have: Vec<String> = realised(docker, &networking.cluster_id)
        .await?
        .into_keys()
        .collect();
    for request in bridges_to_create(networking, &have) {
        let name = request.name.clone();
        match docker.create_network(request).await {
            Ok(_) => tracing::info!(bridge = %name, "swarm network realised for a task"),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Removes the bridges of `ids` (missing ones are fine).
pub async fn remove_bridges(engine: &Engine, ids: &[String]) {
    let Ok(docker) = engine.client().await else {
        return;
    };
    for id in ids {
        remove_bridge(docker, &bridge_name(id)).await;
    }
}

/// A container still attached (one `docker run --network` started, or a
/// task container removed a moment ago) keeps the engine from removing the
/// bridge: as the engine does when a node leaves, they are disconnected.
async fn remove_bridge(docker: &Docker, name: &str) {
    for attempt in 0..LEAVE_ATTEMPTS {
        match docker.remove_network(name).await {
            Ok(()) => {
                tracing::info!(bridge = %name, "bridge removed");
                return;
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return,
            Err(error) if attempt + 1 == LEAVE_ATTEMPTS => {
                tracing::warn!(bridge = %name, %error, "cannot remove the bridge");
                return;
            }
            Err(_) => disconnect_all(docker, name).await,
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

const LEAVE_ATTEMPTS: u32 = 10;

/// Every bridge labelled with this cluster, whatever the store says.
pub async fn remove_cluster_bridges(engine: &Engine, cluster_id: &str) {
    let Ok(docker) = engine.client().await else {
        return;
    };
    let Ok(bridges) = realised(docker, cluster_id).await else {
        return;
    };
    for name in bridges.into_values() {
        remove_bridge(docker, &name).await;
    }
}

async fn disconnect_all(docker: &Docker, name: &str) {
    let Ok(network) = docker
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    else {
        return;
    };
    for container in network.containers.unwrap_or_default().into_keys() {
        let request = bollard::models::NetworkDisconnectRequest {
            container,
            force: Some(true),
        };
        let _ = docker.disconnect_network(name, request).await;
    }
}

/// The attachments of a task, as swarm network IDs with their aliases.
pub fn task_attachments(task: &Task) -> Vec<(String, Vec<String>)> {
    task.spec
        .as_ref()
        .and_then(|s| s.networks.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a.target.clone()?, a.aliases.clone().unwrap_or_default())))
        .collect()
}

/// The engine (API 1.41) takes one network at create; a task's further
/// networks are connected once its container exists.
async fn attach_extra(docker: &Docker, store: &Store, node_id: &str) {
    for task in store.tasks_by_node(node_id).iter().filter_map(as_task) {
        let networks = task_attachments(&task);
        if networks.len() < 2 || tasks::state(&task) != TaskState::RUNNING {
            continue;
        }
        let Some(container) = tasks::container_id(&task) else {
            continue;
        };
        let Ok(inspect) = docker.inspect_container(&container, None).await else {
            continue;
        };
        let joined: HashSet<String> = inspect
            .network_settings
            .and_then(|s| s.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        for (id, _) in networks.iter().skip(1) {
            if joined.contains(&bridge_name(id)) {
                continue;
            }
            // No aliases: the engine's DNS would answer them before shoal's.
            let request = NetworkConnectRequest {
                container: container.clone(),
                endpoint_config: Some(super::task::endpoint_at(task.address_on(id))),
            };
            if let Err(error) = docker.connect_network(&bridge_name(id), request).await {
                tracing::debug!(%error, network = %id, "cannot connect the task to its network");
            }
        }
    }
}

/// A realised swarm network's bridge on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// The host side of the bridge (`br-<id[..12]>` unless named).
    pub iface: String,
    /// This node's address on the network, where shoal's DNS listens.
    pub gateway: Ipv4Addr,
}

/// The engine option that names a bridge's host interface.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// The realised bridges of this cluster by swarm network ID; None when the
/// engine cannot say (then nothing is torn down on its account).
pub async fn bridges(
    engine: &Engine,
    store: &Store,
    node_id: &str,
) -> Option<HashMap<String, Bridge>> {
    let docker = engine.client().await.ok()?;
    let cluster_id = crate::cluster::the_cluster(store)
        .and_then(|c| c.id)
        .unwrap_or_default();
    let list = cluster_networks(docker, &cluster_id).await.ok()?;
    let mut out = HashMap::new();
    for n in &list {
        let Some(id) = realises(n) else {
            continue;
        };
        let Some(gateway) =
            allocate::find(store, id).and_then(|s| allocate::gateway_on(&s, node_id))
        else {
            continue;
        };
        let Some(iface) = iface_of(n) else {
            continue;
        };
        out.insert(id.clone(), Bridge { iface, gateway });
    }
    Some(out)
}

/// The host interface of an engine bridge network.
fn iface_of(n: &Network) -> Option<String> {
    let named = n
        .options
        .as_ref()
        .and_then(|o| o.get(BRIDGE_NAME_OPTION))
        .filter(|name| !name.is_empty())
        .cloned();
    named.or_else(|| {
        let engine_id = n.id.as_deref()?;
        Some(format!("br-{}", engine_id.get(..12)?))
    })
}

/// A node without a store (a worker): its bridges for the swarm, with the
/// gateway each was created with, by swarm network ID.
pub async fn bridge_ifaces(engine: &Engine, cluster_id: &str) -> HashMap<String, Bridge> {
    let Ok(docker) = engine.client().await else {
        return HashMap::new();
    };
    let Ok(list) = cluster_networks(docker, cluster_id).await else {
        return HashMap::new();
    };
    list.iter()
        .filter_map(|n| {
            let id = realises(n)?.clone();
            let gateway = n
                .ipam
                .as_ref()?
                .config
                .as_ref()?
                .first()?
                .gateway
                .as_deref()?
                .parse()
                .ok()?;
            Some((
                id,
                Bridge {
                    iface: iface_of(n)?,
                    gateway,
                },
            ))
        })
        .collect()
}

/// A serving task (running, and meant to keep running) and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEndpoint {
    pub task_id: String,
    pub service_id: String,
    /// `<service>.<slot>.<taskid>`.
    pub name: String,
    /// Its address on each swarm network it has joined, by network ID.
    pub networks: HashMap<String, Ipv4Addr>,
}

/// Where a task can be reached: what the data plane forwards to. Tasks
/// leave it as soon as their desired state is no longer running.
#[derive(Debug, Default, Clone)]
pub struct Backends {
    /// Per task ID, the address the ingress proxy forwards to (tasks of
    /// services with published ports whose address is known here).
    pub by_task: HashMap<String, Ipv4Addr>,
    /// The serving tasks attached to swarm networks, for VIPs and DNS.
    pub tasks: Vec<TaskEndpoint>,
}

/// A container's addresses as the engine reports them.
#[derive(Debug, Clone, Default)]
struct ContainerAddresses {
    /// By engine network name.
    by_network: HashMap<String, Ipv4Addr>,
    /// On a shoal bridge if it has one, else on any network.
    primary: Option<Ipv4Addr>,
}

/// Is the task one traffic may be sent to?
pub(super) fn serves(task: &Task) -> bool {
    tasks::state(task) == TaskState::RUNNING && tasks::desired(task) == TaskState::RUNNING
}

/// The serving tasks' addresses, for the ingress proxy (services with
/// published ports) and for VIPs and DNS (tasks on swarm networks).
pub async fn backends(engine: &Engine, store: &Store) -> Backends {
    let mut out = Backends::default();
    let Ok(docker) = engine.client().await else {
        return out;
    };
    let published: HashSet<String> = store
        .list(Kind::Service)
        .iter()
        .filter_map(as_service)
        .filter(|s| {
            s.endpoint
                .as_ref()
                .and_then(|e| e.ports.as_ref())
                .is_some_and(|p| !p.is_empty())
        })
        .filter_map(|s| s.id.clone())
        .collect();
    let mut seen = HashSet::new();
    for task in store.list(Kind::Task).iter().filter_map(as_task) {
        let service_id = task.service_id.clone().unwrap_or_default();
        let attached = task_attachments(&task);
        let is_published = published.contains(&service_id);
        if attached.is_empty() && !is_published {
            continue;
        }
        let Some(container) = tasks::container_id(&task) else {
            continue;
        };
        // Kept while the task exists: a drain looks the address up after
        // the task has left the backends.
        seen.insert(container.clone());
        if !serves(&task) {
            continue;
        }
        let addresses = match chosen_addresses(&task, &attached) {
            // Where the leader chose them, wherever the task runs.
            Some(chosen) => {
                if let Ok(mut a) = engine.addresses.lock() {
                    a.insert(container.clone(), chosen.clone());
                }
                chosen
            }
            // A task placed before addresses were chosen, or on no swarm
            // network (published ports only): this engine's view.
            None => {
                let wanted: Vec<String> = attached.iter().map(|(id, _)| bridge_name(id)).collect();
                match addresses_of(engine, docker, &container, &wanted).await {
                    Some(found) => found,
                    None => continue,
                }
            }
        };
        if is_published {
            if let (Some(ip), Some(id)) = (addresses.primary, task.id.clone()) {
                out.by_task.insert(id, ip);
            }
        }
        if !attached.is_empty() {
            let networks = attached
                .iter()
                .filter_map(|(id, _)| {
                    Some((id.clone(), *addresses.by_network.get(&bridge_name(id))?))
                })
                .collect();
            out.tasks.push(TaskEndpoint {
                task_id: task.id.clone().unwrap_or_default(),
                name: tasks::name_in(store, &task),
                service_id,
                networks,
            });
        }
    }
    if let Ok(mut a) = engine.addresses.lock() {
        a.retain(|c, _| seen.contains(c));
    }
    out.tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    out
}

/// The address the leader chose for `task` on its first swarm network.
pub(super) fn first_chosen_address(task: &crate::types::SwarmTask) -> Option<Ipv4Addr> {
    let attached = task_attachments(task);
    task.address_on(&attached.first()?.0)
}

/// The addresses the leader chose for `task` on each of its networks, if
/// it chose one on every one.
fn chosen_addresses(
    task: &crate::types::SwarmTask,
    attached: &[(String, Vec<String>)],
) -> Option<ContainerAddresses> {
    if attached.is_empty() {
        return None;
    }
    let mut out = ContainerAddresses::default();
    for (id, _) in attached {
        let ip = task.address_on(id)?;
        out.primary.get_or_insert(ip);
        out.by_network.insert(bridge_name(id), ip);
    }
    Some(out)
}

/// The serving tasks with the addresses the leader chose, from the store
/// alone: what a node without a store is told of its networks.
pub fn endpoints_in(tables: &Tables) -> Vec<TaskEndpoint> {
    let mut out: Vec<TaskEndpoint> = tables
        .iter(Kind::Task)
        .filter_map(as_task)
        .filter(|t| serves(t))
        .filter_map(|task| {
            let attached = task_attachments(&task);
            let chosen = chosen_addresses(&task, &attached)?;
            let service_id = task.service_id.clone().unwrap_or_default();
            let service = tables
                .get(Kind::Service, &service_id)
                .and_then(|s| s.name().map(str::to_string))
                .unwrap_or_default();
            let networks = attached
                .iter()
                .filter_map(|(id, _)| Some((id.clone(), *chosen.by_network.get(&bridge_name(id))?)))
                .collect();
            Some(TaskEndpoint {
                task_id: task.id.clone().unwrap_or_default(),
                name: tasks::name(&service, &task),
                service_id,
                networks,
            })
        })
        .collect();
    out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    out
}

/// The address the ingress proxy reaches `container` at, for a drain.
pub async fn container_address(engine: &Engine, container: &str) -> Option<Ipv4Addr> {
    let cached = engine
        .addresses
        .lock()
        .ok()
        .and_then(|a| a.get(container).and_then(|c| c.primary));
    match cached {
        Some(ip) => Some(ip),
        None => {
            let docker = engine.client().await.ok()?;
            inspect_addresses(docker, container).await?.primary
        }
    }
}

/// A container's addresses, from the cache once it has one on every
/// network in `wanted` (further networks are connected after create).
async fn addresses_of(
    engine: &Engine,
    docker: &Docker,
    container: &str,
    wanted: &[String],
) -> Option<ContainerAddresses> {
    let cached = engine
        .addresses
        .lock()
        .ok()
        .and_then(|a| a.get(container).cloned());
    if let Some(cached) = cached {
        if wanted.iter().all(|n| cached.by_network.contains_key(n)) {
            return Some(cached);
        }
    }
    let inspected = inspect_addresses(docker, container).await?;
    if let Ok(mut a) = engine.addresses.lock() {
        a.insert(container.to_string(), inspected.clone());
    }
    Some(inspected)
}

async fn inspect_addresses(docker: &Docker, container: &str) -> Option<ContainerAddresses> {
    let inspect = docker.inspect_container(container, None).await.ok()?;
    let networks = inspect.network_settings?.networks?;
    let mut out = ContainerAddresses::default();
    let mut fallback = None;
    for (name, settings) in networks {
        let Some(ip) = settings.ip_address.as_deref().and_then(|i| i.parse().ok()) else {
            continue;
        };
        if name.starts_with("shoal_") {
            out.primary.get_or_insert(ip);
        }
        fallback.get_or_insert(ip);
        out.by_network.insert(name, ip);
    }
    out.primary = out.primary.or(fallback);
    Some(out)
}
