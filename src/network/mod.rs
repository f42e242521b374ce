//! Swarm networks: the objects (`/networks` with driver overlay), what a
//! service gets from them (VIPs, published ports), and the data plane that
//! makes them real on this node.
//!
//! Design:
//! - A swarm network lives in the store (`Object::Network`). Subnets come
//!   from swarm's default pool (10.0.N.0/24) unless given; VIPs come from the
//!   lower half of the subnet. Task addresses and each node's gateway are
//!   chosen by the leader when the scheduler places a task ([`address`]):
//!   engines on different hosts must not pick them. Tasks keep theirs in
//!   `NetworksAttachments`; the engine's IPAM keeps only the subnet's top
//!   quarter, for containers joined by hand.
//! - On each node [`local`] realises every swarm network as an ordinary
//!   bridge network on the engine, `shoal_<id>`, labelled
//!   [`LABEL_NETWORK_ID`], and hides it from listings; its gateway is this
//!   node's own address on the network. Task containers join it at their
//!   address without engine aliases.
//! - [`vxlan`] joins the bridges of one network across hosts: a VXLAN port
//!   per bridge with static neighbour/FDB entries for every endpoint on
//!   another host (from the store on a manager, from the assignments on a
//!   worker).
//! - Service discovery is [`dns`]: a DNS server in shoal on each bridge's
//!   gateway, set as the containers' `Dns` (before the host's resolvers);
//!   it answers the network's service names, `tasks.<service>`, aliases and
//!   task names, and refuses the rest.
//! - VIPs are [`vip`]: each VIP is a /32 on its bridge's host interface and
//!   one nft table per node DNATs it to the serving tasks, round robin.
//! - Published ports in ingress mode are served by [`ingress`], a userspace
//!   L4 proxy on this node; host mode uses the engine's port bindings.
//! - [`run`] reconciles all of it from one computation of the serving tasks
//!   ([`local::backends`]), on every store change and every few seconds; a
//!   task whose desired state is no longer running leaves the VIPs, DNS and
//!   the ingress backends in the same round. At shutdown and `swarm leave`
//!   the DNS servers stop and the nft table and VIP addresses go.
//! - Stops without downtime: [`run`] publishes the store index it has fully
//!   applied, and the agent waits for it (and for the task's open
//!   connections) before it stops a task: [`drain`].
//! - The node's handle to all of this is one [`NodeNetwork`], passed to
//!   whatever needs it: no process-wide state.
//! - What a task's container needs (its networks, address, host-mode
//!   ports, DNS servers) comes in its assignment ([`task`]): a worker has no
//!   store. A worker, which runs no data plane, creates its tasks' bridges
//!   itself before their containers, and removes them when it leaves; its
//!   VXLAN ports, DNS servers and VIPs follow what its assignments carry
//!   (peers, names and VIPs of its tasks' networks; [`NodeNetwork`]).

pub mod address;
pub mod allocate;
pub mod barrier;
pub mod dns;
pub mod drain;
pub mod ingress;
pub mod ipam;
pub mod local;
mod node;
pub mod owners;
pub mod relay;
pub mod task;
pub mod vip;
pub mod vxlan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

pub use node::NodeNetwork;
pub use task::{Dns, TaskNetworking};

/// Label on the engine networks that realise swarm networks: the swarm ID.
pub const LABEL_NETWORK_ID: &str = "io.shoal.network.id";
/// Driver option where swarm keeps a network's VXLAN ID.
pub const VXLAN_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// The first VXLAN ID (the ingress network's), as swarmkit numbers them.
pub const FIRST_VXLAN: u32 = 4096;
/// Published ports chosen by swarm when none is given.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// The engine network that realises swarm network `id` on this node.
pub fn bridge_name(id: &str) -> String {
    format!("shoal_{id}")
}

/// Everything the network layer refuses, worded as the engine words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("network with name {0} already exists")]
    NameExists(String),
    #[error("operation is not permitted on predefined {0} network ")]
    Predefined(String),
    #[error("rpc error: code = InvalidArgument desc = ipam configuration: invalid subnet {0}")]
    InvalidSubnet(String),
    #[error("rpc error: code = InvalidArgument desc = ipam configuration: invalid gateway {0}")]
    InvalidGateway(String),
    #[error("rpc error: code = InvalidArgument desc = ipam configuration: subnet {subnet} does not contain gateway {gateway}")]
    GatewayOutside { subnet: String, gateway: String },
    #[error("rpc error: code = InvalidArgument desc = invalid pool request: Pool overlaps with other one on this address space")]
    Overlap,
    #[error("rpc error: code = ResourceExhausted desc = could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    PoolExhausted,
    #[error(
        "rpc error: code = ResourceExhausted desc = could not allocate an address on network {0}"
    )]
    AddressExhausted(String),
    #[error("rpc error: code = FailedPrecondition desc = network {network} is in use by service {service}")]
    InUseByService { network: String, service: String },
    #[error(
        "rpc error: code = FailedPrecondition desc = network {network} is in use by task {task}"
    )]
    InUseByTask { network: String, task: String },
    #[error("rpc error: code = InvalidArgument desc = encrypted overlay networks are not supported: shoal carries overlay traffic in plain VXLAN (these hosts' kernels have no IPsec); create the network without --opt encrypted")]
    Encrypted,
    #[error("network {0} not found")]
    NotFound(String),
    #[error("rpc error: code = InvalidArgument desc = Service cannot be explicitly attached to the ingress network \"{0}\"")]
    IngressAttach(String),
    #[error("Could not attach to network {0}: rpc error: code = PermissionDenied desc = network {0} not manually attachable")]
    NotAttachable(String),
    #[error("rpc error: code = AlreadyExists desc = ingress network ({0}) is already present")]
    IngressExists(String),
    #[error("rpc error: code = InvalidArgument desc = port '{port}' is already in use by service '{name}' ({id}) as an ingress port")]
    PortInUse { port: i64, name: String, id: String },
    #[error(
        "rpc error: code = InvalidArgument desc = EndpointSpec: duplicate published ports provided"
    )]
    DuplicatePort,
    #[error("rpc error: code = InvalidArgument desc = EndpointSpec: ports can't be used with dnsrr mode")]
    DnsrrPorts,
    #[error(
        "rpc error: code = ResourceExhausted desc = no available ports in the dynamic port range"
    )]
    PortsExhausted,
}

impl NetworkError {
    /// The HTTP status the engine answers this with.
    pub fn status(&self) -> u16 {
        match self {
            NetworkError::NameExists(_) | NetworkError::IngressExists(_) => 409,
            NetworkError::Predefined(_) | NetworkError::NotAttachable(_) => 403,
            NetworkError::NotFound(_) => 404,
            NetworkError::PoolExhausted
            | NetworkError::AddressExhausted(_)
            | NetworkError::PortsExhausted => 500,
            _ => 400,
        }
    }
}

/// The swarm networks this node realises, for [`leave`].
pub fn realised_ids(store: &Store) -> Vec<String> {
    allocate::networks(store)
        .iter()
        .map(|n| allocate::id_of(&n.network).to_string())
        .collect()
}

/// The cluster whose bridges `leave` removes.
pub fn cluster_of(store: &Store) -> Option<String> {
    crate::cluster::the_cluster(store).and_then(|c| c.id)
}

/// `swarm leave`: removes the bridges of the swarm's networks (after the
/// task containers are gone) — also those of networks removed a moment ago
/// whose bridge was still busy, found by the cluster's label.
pub async fn leave(node: &NodeNetwork, ids: &[String], cluster_id: Option<&str>) {
    // The data plane removes its table when it stops; this covers a data
    // plane cut short by the stop deadline.
    if let Some(cluster_id) = cluster_id {
        match vip::remove_table(&vip::table_name(cluster_id)).await {
            Ok(()) | Err(vip::VipError::Missing(_)) => {}
            Err(error) => tracing::warn!(%error, "cannot remove the VIP table"),
        }
    }
    if let Some(engine) = node.engine() {
        local::remove_bridges(engine, ids).await;
        if let Some(cluster_id) = cluster_id {
            local::remove_cluster_bridges(engine, cluster_id).await;
        }
    }
}

/// How often the data plane checks the engine even without store changes
/// (an engine restart, a network removed by hand, task addresses).
const REPAIR_EVERY: Duration = Duration::from_secs(3);

/// This node's data plane: the ingress network object, the engine bridges,
/// the ingress listeners, the VIPs and the DNS servers. Ends when
/// `shutdown` fires, closing every listener and removing the VIPs. A
/// node without an engine has no data plane.
pub async fn run(
    node: NodeNetwork,
    node_id: String,
    store: Arc<Store>,
    shutdown: CancellationToken,
) {
    let Some(engine) = node.engine().cloned() else {
        return;
    };
    let mut proxy = ingress::Ingress::new(shutdown.clone());
    let mut vips = vip::Vips::new();
    let mut vxlans = vxlan::Vxlans::new();
    let mut dns = dns::Dns::new(shutdown.clone());
    let (applied_tx, applied_rx) = watch::channel(0);
    node.publish(Some(Arc::new(drain::DataPlane::new(
        store.clone(),
        engine.clone(),
        applied_rx,
        proxy.connections(),
    ))));
    let mut watcher = store.watch_from(store.index());
    let mut bridges_checked: Option<(local::BridgeInputs, tokio::time::Instant)> = None;
    let mut bridges: Option<HashMap<String, local::Bridge>> = None;
    let mut applied_routes: Option<Vec<vip::VipRoute>> = None;
    // Marks this swarm alive on this host while the data plane runs (the
    // cluster it was tried for, and the claim if it was taken).
    let mut claim: Option<(String, Option<owners::Claim>)> = None;
    loop {
        if let Some(cluster_id) = cluster_of(&store) {
            if claim.as_ref().map(|(id, _)| id) != Some(&cluster_id) {
                claim = Some((cluster_id.clone(), owners::claim(&cluster_id).await));
                vip::remove_dead_tables().await;
                owners::remove_dead_claims();
            }
        }
        // Everything read below is at least this recent.
        let index = store.index();
        let begun = std::time::Instant::now();
        // The engine round trips only when the bridges' inputs changed or a
        // repair is due: most changes are task states, and a stop waits for
        // this loop (see `drain`).
        let inputs = local::bridge_inputs(&store);
        let due = bridges_checked
            .as_ref()
            .is_none_or(|(last, at)| *last != inputs || at.elapsed() >= REPAIR_EVERY);
        if due {
            {
                let _one_at_a_time = node.creating_bridges().await;
                local::reconcile(&engine, &store, &node_id).await;
            }
            bridges = local::bridges(&engine, &store, &node_id).await;
            bridges_checked = Some((inputs, tokio::time::Instant::now()));
        }
        let backends = local::backends(&engine, &store).await;
        proxy
            .reconcile(
                &store.read(ingress::plane),
                &node_id,
                backends.by_task.clone(),
            )
            .await;
        if let Some(bridges) = &bridges {
            if let Some(cluster_id) = cluster_of(&store) {
                let overlays = store.read(|t| vxlan::overlays(t, &node_id));
                vxlans.reconcile(&cluster_id, &overlays, bridges, due).await;
                let routes = store.read(|t| vip::desired(t, &backends.tasks, bridges));
                // nft and ip run only when the routes or bridges changed,
                // or to repair: a stop waits for this pass.
                if due || applied_routes.as_ref() != Some(&routes) {
                    vips.reconcile(&vip::table_name(&cluster_id), &routes, bridges)
                        .await;
                    applied_routes = Some(routes);
                }
            }
            dns.reconcile(bridges, store.read(|t| dns::zones(t, &backends.tasks)))
                .await;
        }
        // Last: every step above routes by the store at `index` or later,
        // so stops waiting for it may go on.
        applied_tx.send_replace(index);
        node.routed_at(index);
        tracing::debug!(index, took = ?begun.elapsed(), "data plane applied");
        let wake = tokio::time::Instant::now() + REPAIR_EVERY;
        if !crate::manager::wait_for_change(&store, &mut watcher, &shutdown, Some(wake)).await {
            break;
        }
    }
    node.publish(None);
    // The VIPs first: the nft table must not outlive shoal even when the
    // rest is cut short by the stop deadline.
    vips.remove().await;
    vxlans.remove().await;
    proxy.stop().await;
    dns.stop().await;
}
