//! What one task's container needs from the network layer. The dispatcher
//! computes it from the store and sends it in the task's assignment, so a
//! node without a store (a worker) has all of it; the agent applies it to
//! the container it creates.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointPortConfig, EndpointPortConfigProtocolEnum,
    EndpointPortConfigPublishModeEnum, EndpointSettings, HostConfig, Network, NetworkCreateRequest,
    NetworkingConfig, PortBinding, Task,
};
use serde::{Deserialize, Serialize};

use super::allocate::{self, is_ingress, primary};
use super::bridge_name;
use super::dns::Zone;
use super::local::{bridge_request, task_attachments};
use super::vip::NetworkVip;
use super::vxlan::{overlays, Overlay};
use crate::store::Tables;
use crate::types::{Kind, Object, SwarmTask};

/// Whether, and from what, the node a task runs on serves shoal's DNS
/// (and VIPs) on its networks' gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dns {
    /// A manager: its data plane serves them from the store.
    OnGateways,
    /// A worker: it serves them from the names and VIPs its assignments
    /// carry ([`ServiceView`]), having no store.
    Carried,
}

/// The peers, names and VIPs of every network as `node_id` sees them,
/// computed once per assignment set for a node without a store (each
/// pass is over every task); each task gets its own networks' part.
pub struct ServiceView {
    overlays: Vec<Overlay>,
    zones: HashMap<String, Zone>,
    vips: Vec<NetworkVip>,
}

impl ServiceView {
    pub fn new(tables: &Tables, node_id: &str) -> ServiceView {
        let endpoints = super::local::endpoints_in(tables);
        ServiceView {
            overlays: overlays(tables, node_id),
            zones: super::dns::zones(tables, &endpoints),
            vips: super::vip::by_network(tables, &endpoints),
        }
    }
}

/// The network side of an assignment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskNetworking {
    /// The swarm the networks belong to: labels the bridges a worker makes.
    pub cluster_id: String,
    /// The swarm networks of the task's attachments, in their order, as
    /// the store has them: a worker realises their bridges from these.
    pub networks: Vec<Network>,
    /// The service's host-mode published ports: bindings on this engine.
    pub host_ports: Vec<EndpointPortConfig>,
    /// Shoal's DNS servers to put first in the container's `Dns`; empty
    /// where the node has none, and then `Dns` is left as the spec has it.
    pub dns: Vec<Ipv4Addr>,
    /// The task's address on each of its networks (network ID → address),
    /// chosen by the leader: the engine's IPAM must not pick them.
    #[serde(default)]
    pub addresses: BTreeMap<String, Ipv4Addr>,
    /// How the task's networks reach the other hosts: a node without a
    /// store programs its VXLAN ports from these.
    #[serde(default)]
    pub overlays: Vec<Overlay>,
    /// A node without a store: the names of the task's networks (network
    /// ID → zone) its DNS servers answer.
    #[serde(default)]
    pub zones: HashMap<String, Zone>,
    /// A node without a store: the VIPs on the task's networks it routes.
    #[serde(default)]
    pub vips: Vec<NetworkVip>,
}

/// Reads what `task` needs from the store's tables (the dispatcher does,
/// for every task it assigns).
pub fn for_task(
    tables: &Tables,
    task: &SwarmTask,
    cluster_id: &str,
    node_id: &str,
    dns: Dns,
    view: Option<&ServiceView>,
) -> TaskNetworking {
    let attached = task_attachments(task);
    // As this node realises them: with its own gateway.
    let networks: Vec<Network> = attached
        .iter()
        .filter_map(|(id, _)| match tables.get(Kind::Network, id).as_deref() {
            Some(Object::Network(n)) => {
                Some(allocate::for_node(n, node_id).unwrap_or_else(|| n.network.clone()))
            }
            _ => None,
        })
        .collect();
    let addresses = attached
        .iter()
        .filter_map(|(id, _)| Some((id.clone(), task.address_on(id)?)))
        .collect();
    let ids: Vec<String> = attached.into_iter().map(|(id, _)| id).collect();
    // A manager's data plane works from the store: only a worker needs these.
    let (overlays, zones, vips) = match view.filter(|_| dns == Dns::Carried) {
        Some(view) => (
            view.overlays
                .iter()
                .filter(|o| ids.contains(&o.network_id))
                .cloned()
                .collect(),
            view.zones
                .iter()
                .filter(|(id, _)| ids.contains(id))
                .map(|(id, zone)| (id.clone(), zone.clone()))
                .collect(),
            view.vips
                .iter()
                .filter(|v| ids.contains(&v.network_id))
                .cloned()
                .collect(),
        ),
        None => (Vec::new(), HashMap::new(), Vec::new()),
    };
    // Either way this node's DNS servers listen on its gateways.
    let dns = networks
        .iter()
        .filter(|n| !is_ingress(n))
        .filter_map(|n| primary(n).map(|(_, gateway)| gateway))
        .collect();
    TaskNetworking {
        cluster_id: cluster_id.to_string(),
        networks,
        host_ports: host_ports(tables, task),
        dns,
        addresses,
        overlays,
        zones,
        vips,
    }
}

fn host_ports(tables: &Tables, task: &Task) -> Vec<EndpointPortConfig> {
    let service = task
        .service_id
        .as_deref()
        .and_then(|id| tables.get(Kind::Service, id));
    let Some(Object::Service(service)) = service.as_deref() else {
        return Vec::new();
    };
    service
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST))
        .collect()
}

/// The bridges a node without a data plane creates before the task's
/// container: those of the task's networks it lacks (`have` holds the
/// swarm IDs of the bridges the engine has). Ingress is never a bridge: its
/// ports are served by the ingress proxy.
pub fn bridges_to_create(
    networking: &TaskNetworking,
    have: &[String],
) -> Vec<NetworkCreateRequest> {
    networking
        .networks
        .iter()
        .filter(|n| !is_ingress(n))
        .filter(|n| !have.iter().any(|id| id == allocate::id_of(n)))
        .filter_map(|n| bridge_request(n, &networking.cluster_id))
        .collect()
}

/// Sets the container's first swarm network (the realising bridge), the
/// DNS servers and the host-mode published ports as port bindings.
pub fn apply_to_container(
    networking: &TaskNetworking,
    task: &Task,
    body: &mut ContainerCreateBody,
) {
    if let Some((id, _)) = task_attachments(task).first() {
        let name = bridge_name(id);
        let host = body.host_config.get_or_insert_with(HostConfig::default);
        host.network_mode = Some(name.clone());
        // The engine derives the MAC from this address (API 1.41 has no
        // way to give it here), as other hosts do: `address::mac_of`.
        let address = networking.addresses.get(id).copied();
        // No aliases: the engine's DNS would answer them before shoal's.
        body.networking_config = Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(name, endpoint_at(address))])),
        });
    }
    if !networking.dns.is_empty() {
        let host = body.host_config.get_or_insert_with(HostConfig::default);
        host.dns = Some(super::dns::servers_for(&networking.dns, host.dns.take()));
    }
    apply_host_ports(&networking.host_ports, body);
}

/// A container's endpoint on a bridge, at the leader's address if any.
pub fn endpoint_at(address: Option<Ipv4Addr>) -> EndpointSettings {
    EndpointSettings {
        ipam_config: address.map(|ip| EndpointIpamConfig {
            ipv4_address: Some(ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn apply_host_ports(ports: &[EndpointPortConfig], body: &mut ContainerCreateBody) {
    if ports.is_empty() {
        return;
    }
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed: Vec<String> = Vec::new();
    for p in ports {
        let proto = match p.protocol {
            Some(EndpointPortConfigProtocolEnum::UDP) => "udp",
            Some(EndpointPortConfigProtocolEnum::SCTP) => "sctp",
            _ => "tcp",
        };
        let key = format!("{}/{proto}", p.target_port.unwrap_or(0));
        let host_port = match p.published_port.unwrap_or(0) {
            0 => String::new(),
            n => n.to_string(),
        };
        bindings
            .entry(key.clone())
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(String::new()),
                host_port: Some(host_port),
            });
        if !exposed.contains(&key) {
            exposed.push(key);
        }
    }
    body.host_config
        .get_or_insert_with(HostConfig::default)
        .port_bindings = Some(bindings);
    body.exposed_ports = Some(exposed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{Ipam, IpamConfig, NetworkAttachmentConfig, TaskSpec};

    fn network(id: &str, subnet: &str, gateway: &str, ingress: bool) -> Network {
        Network {
            id: Some(id.into()),
            ingress: ingress.then_some(true),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.into()),
                    gateway: Some(gateway.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn attached_task(ids: &[&str]) -> Task {
        Task {
            spec: Some(TaskSpec {
                networks: Some(
                    ids.iter()
                        .map(|id| NetworkAttachmentConfig {
                            target: Some(id.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn networking(dns: Vec<Ipv4Addr>) -> TaskNetworking {
        TaskNetworking {
            cluster_id: "cluster1".into(),
            networks: vec![
                network("ing", "10.0.0.0/24", "10.0.0.1", true),
                network("a", "10.0.1.0/24", "10.0.1.1", false),
                network("b", "10.0.2.0/24", "10.0.2.1", false),
            ],
            host_ports: vec![EndpointPortConfig {
                target_port: Some(80),
                published_port: Some(8080),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }],
            dns,
            ..Default::default()
        }
    }

    #[test]
    fn a_worker_creates_the_missing_bridges_labelled_as_the_data_plane_does() {
        let wanted = bridges_to_create(&networking(Vec::new()), &["b".to_string()]);
        assert_eq!(wanted.len(), 1, "ingress and existing bridges are skipped");
        let request = &wanted[0];
        assert_eq!(request.name, "shoal_a");
        assert_eq!(
            Some(request),
            bridge_request(&networking(Vec::new()).networks[1], "cluster1").as_ref()
        );
        let labels = request.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get(super::super::LABEL_NETWORK_ID)
                .map(String::as_str),
            Some("a")
        );
        assert_eq!(
            labels.get("io.shoal.cluster.id").map(String::as_str),
            Some("cluster1")
        );
        let ipam = request.ipam.as_ref().and_then(|i| i.config.as_ref());
        let config = ipam.and_then(|c| c.first());
        assert_eq!(config.and_then(|c| c.gateway.as_deref()), Some("10.0.1.1"));
        assert_eq!(
            config.and_then(|c| c.ip_range.as_deref()),
            Some("10.0.1.192/26")
        );
    }

    #[test]
    fn containers_join_their_first_network_with_ports_and_dns_only_where_served() {
        let task = attached_task(&["a", "b"]);
        let mut body = ContainerCreateBody::default();
        apply_to_container(&networking(Vec::new()), &task, &mut body);
        let host = body.host_config.clone().unwrap_or_default();
        assert_eq!(host.network_mode.as_deref(), Some("shoal_a"));
        assert_eq!(host.dns, None, "no DNS server on this node: Dns untouched");
        let bindings = host.port_bindings.unwrap_or_default();
        let binding = bindings
            .get("80/tcp")
            .cloned()
            .flatten()
            .unwrap_or_default();
        assert_eq!(binding[0].host_port.as_deref(), Some("8080"));
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_string()]));

        let mut body = ContainerCreateBody::default();
        let served = networking(vec![Ipv4Addr::new(10, 0, 1, 1)]);
        apply_to_container(&served, &task, &mut body);
        let dns = body.host_config.and_then(|h| h.dns).unwrap_or_default();
        assert_eq!(dns.first().map(String::as_str), Some("10.0.1.1"));
    }
}
