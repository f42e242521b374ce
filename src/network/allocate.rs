//! The cluster side of networks, run on the manager: new network objects
//! (subnet and VXLAN ID), the ingress network, service attachments resolved
//! to IDs, VIPs and published ports, and the in-use check before removal.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::SystemTime;

use bollard::models::{
    ConfigReference, EndpointPortConfig, EndpointPortConfigProtocolEnum,
    EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, Ipam, IpamConfig,
    Network, NetworkAttachmentConfig, ServiceEndpoint, ServiceEndpointVirtualIps, ServiceSpec,
    TaskState,
};
use serde::{Deserialize, Serialize};

use super::ipam::{self, Subnet};
use super::{NetworkError, FIRST_VXLAN, VXLAN_OPTION};
use crate::manager::orchestrator::{as_service, as_task};
use crate::manager::tasks;
use crate::store::{Proposer, Store, Transaction};
use crate::types::{new_id, Kind, Object, SwarmNetwork, SwarmService, Timestamp};

/// `POST /networks/create` as clients send it (unknown fields ignored).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub internal: Option<bool>,
    pub attachable: Option<bool>,
    pub ingress: Option<bool>,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    pub ipam: Option<CreateIpam>,
    pub options: Option<HashMap<String, String>>,
    pub labels: Option<HashMap<String, String>>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateIpam {
    pub driver: Option<String>,
    pub config: Option<Vec<CreateIpamConfig>>,
    pub options: Option<HashMap<String, String>>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateIpamConfig {
    pub subnet: Option<String>,
    #[serde(rename = "IPRange")]
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
}

/// The driver option asking for IPsec between hosts (`--opt encrypted`).
const ENCRYPTED_OPTION: &str = "encrypted";

/// Every swarm network in the store.
pub fn networks(store: &Store) -> Vec<SwarmNetwork> {
    store
        .list(Kind::Network)
        .iter()
        .filter_map(|o| match &**o {
            Object::Network(n) => Some((**n).clone()),
            _ => None,
        })
        .collect()
}

pub fn id_of(n: &Network) -> &str {
    n.id.as_deref().unwrap_or("")
}

/// The subnets of a network's IPAM configuration.
pub fn subnets(n: &Network) -> Vec<Subnet> {
    n.ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.subnet.as_deref().and_then(Subnet::parse))
        .collect()
}

/// The first IPv4 subnet and its gateway.
pub fn primary(n: &Network) -> Option<(Subnet, Ipv4Addr)> {
    let config = n.ipam.as_ref()?.config.as_ref()?.first()?;
    let subnet = Subnet::parse(config.subnet.as_deref()?)?;
    let gateway = config
        .gateway
        .as_deref()
        .and_then(|g| g.parse().ok())
        .or_else(|| subnet.first_host())?;
    Some((subnet, gateway))
}

/// `node_id`'s address on the network: its gateway. Networks made before
/// per-node gateways have none recorded, and their IPAM gateway serves
/// every node; otherwise a node without one waits for the leader.
pub fn gateway_on(n: &SwarmNetwork, node_id: &str) -> Option<Ipv4Addr> {
    if n.node_gateways.is_empty() {
        return primary(&n.network).map(|(_, gateway)| gateway);
    }
    n.node_gateways.get(node_id).copied()
}

/// The network as `node_id` realises it: with its own gateway.
pub fn for_node(n: &SwarmNetwork, node_id: &str) -> Option<Network> {
    let gateway = gateway_on(n, node_id)?;
    let mut network = n.network.clone();
    let first = network
        .ipam
        .as_mut()
        .and_then(|i| i.config.as_mut())
        .and_then(|c| c.first_mut())?;
    first.gateway = Some(gateway.to_string());
    Some(network)
}

pub fn vxlan_of(n: &Network) -> Option<u32> {
    n.options
        .as_ref()?
        .get(VXLAN_OPTION)?
        .split(',')
        .next()?
        .parse()
        .ok()
}

pub fn is_ingress(n: &Network) -> bool {
    n.ingress == Some(true)
}

/// A new swarm network from a create request: subnets checked or chosen
/// from the default pool, the next free VXLAN ID.
pub fn new_network(
    store: &Store,
    request: &CreateRequest,
    rng: &mut dyn rand::RngCore,
) -> Result<SwarmNetwork, NetworkError> {
    let name = request.name.clone().unwrap_or_default();
    if ["bridge", "host", "none"].contains(&name.as_str()) {
        return Err(NetworkError::Predefined(name));
    }
    // Refused rather than silently left unencrypted.
    if request
        .options
        .as_ref()
        .is_some_and(|o| o.contains_key(ENCRYPTED_OPTION))
    {
        return Err(NetworkError::Encrypted);
    }
    let existing = networks(store);
    if existing.iter().any(|n| {
        n.network
            .name
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(&name))
    }) {
        return Err(NetworkError::NameExists(name));
    }
    let taken: Vec<Subnet> = existing.iter().flat_map(|n| subnets(&n.network)).collect();
    let mut configs = Vec::new();
    let requested = request
        .ipam
        .as_ref()
        .and_then(|i| i.config.clone())
        .unwrap_or_default();
    let mut mine: Vec<Subnet> = Vec::new();
    for c in &requested {
        let text = c.subnet.clone().unwrap_or_default();
        let subnet = ipam::check_config(&text, c.gateway.as_deref())?;
        if taken.iter().chain(mine.iter()).any(|t| t.overlaps(&subnet)) {
            return Err(NetworkError::Overlap);
        }
        mine.push(subnet);
        let gateway = c
            .gateway
            .clone()
            .filter(|g| !g.is_empty())
            .or_else(|| subnet.first_host().map(|g| g.to_string()));
        configs.push(IpamConfig {
            subnet: Some(text),
            ip_range: c.ip_range.clone().filter(|r| !r.is_empty()),
            gateway,
            auxiliary_addresses: None,
        });
    }
    if configs.is_empty() {
        let subnet = address_pools(store)
            .next_free(&taken, false)
            .ok_or(NetworkError::PoolExhausted)?;
        configs.push(IpamConfig {
            subnet: Some(subnet.to_string()),
            gateway: subnet.first_host().map(|g| g.to_string()),
            ..IpamConfig::default()
        });
    }
    let used: BTreeSet<u32> = existing
        .iter()
        .filter_map(|n| vxlan_of(&n.network))
        .collect();
    let vxlan = (FIRST_VXLAN + 1..)
        .find(|v| !used.contains(v))
        .unwrap_or(FIRST_VXLAN + 1);
    let mut options = request.options.clone().unwrap_or_default();
    options.insert(VXLAN_OPTION.to_string(), vxlan.to_string());
    Ok(SwarmNetwork {
        network: Network {
            name: Some(name),
            id: Some(new_id(rng)),
            scope: Some("swarm".to_string()),
            driver: Some("overlay".to_string()),
            enable_ipv6: Some(request.enable_ipv6.unwrap_or(false)),
            ipam: Some(Ipam {
                driver: Some(
                    request
                        .ipam
                        .as_ref()
                        .and_then(|i| i.driver.clone())
                        .filter(|d| !d.is_empty())
                        .unwrap_or_else(|| "default".to_string()),
                ),
                config: Some(configs),
                options: request
                    .ipam
                    .as_ref()
                    .and_then(|i| i.options.clone())
                    .filter(|o| !o.is_empty()),
            }),
            internal: Some(request.internal.unwrap_or(false)),
            attachable: Some(request.attachable.unwrap_or(false)),
            ingress: Some(request.ingress.unwrap_or(false)),
            config_from: Some(ConfigReference {
                network: Some(String::new()),
            }),
            config_only: Some(false),
            options: Some(options),
            labels: request.labels.clone().filter(|l| !l.is_empty()),
            ..Network::default()
        },
        ..SwarmNetwork::default()
    })
}

/// The leader's side of [`ensure_ingress`]: once per term, as swarmkit's
/// allocator does when it starts.
pub async fn keep_ingress(
    store: Arc<Store>,
    proposer: Arc<dyn Proposer>,
    _term: tokio_util::sync::CancellationToken,
) {
    if let Err(error) = ensure_ingress(&store, &proposer).await {
        tracing::warn!(%error, "cannot create the ingress network");
    }
}

/// `swarm init` leaves an `ingress` network (10.0.0.0/24, VXLAN 4096); as
/// in swarmkit, the leader creates it when the store has none.
pub async fn ensure_ingress(store: &Store, proposer: &Arc<dyn Proposer>) -> Result<(), String> {
    if networks(store).iter().any(|n| is_ingress(&n.network)) {
        return Ok(());
    }
    if crate::cluster::the_cluster(store).is_none() {
        return Ok(());
    }
    let taken: Vec<Subnet> = networks(store)
        .iter()
        .flat_map(|n| subnets(&n.network))
        .collect();
    let subnet = address_pools(store)
        .next_free(&taken, true)
        .ok_or("no free subnet for ingress")?;
    let id = new_id(&mut rand::thread_rng());
    let network = SwarmNetwork {
        network: Network {
            name: Some("ingress".to_string()),
            id: Some(id),
            scope: Some("swarm".to_string()),
            driver: Some("overlay".to_string()),
            enable_ipv6: Some(false),
            ipam: Some(Ipam {
                driver: Some("default".to_string()),
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.to_string()),
                    gateway: subnet.first_host().map(|g| g.to_string()),
                    ..IpamConfig::default()
                }]),
                options: None,
            }),
            internal: Some(false),
            attachable: Some(false),
            ingress: Some(true),
            config_from: Some(ConfigReference {
                network: Some(String::new()),
            }),
            config_only: Some(false),
            options: Some(HashMap::from([(
                VXLAN_OPTION.to_string(),
                FIRST_VXLAN.to_string(),
            )])),
            labels: None,
            ..Network::default()
        },
        ..SwarmNetwork::default()
    };
    let tx = Transaction::new(Timestamp::from_system(SystemTime::now()))
        .create(Object::Network(Box::new(network)));
    match proposer.propose(tx).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The pools `swarm init` asked for (checked then), else swarm's default.
fn address_pools(store: &Store) -> ipam::AddressPools {
    let Some(cluster) = crate::cluster::the_cluster(store) else {
        return ipam::AddressPools::default();
    };
    let pools = cluster.default_addr_pool.unwrap_or_default();
    let size = cluster.subnet_size.unwrap_or(24);
    ipam::AddressPools::new(&pools, size).unwrap_or_else(|error| {
        tracing::warn!(%error, "the cluster's address pools are unusable; using 10.0.0.0/8");
        ipam::AddressPools::default()
    })
}

/// A network reference (ID, name, ID prefix) to the swarm network.
pub fn find(store: &Store, reference: &str) -> Option<SwarmNetwork> {
    match &*store.find(Kind::Network, reference).ok()? {
        Object::Network(n) => Some((**n).clone()),
        _ => None,
    }
}

/// The networks a service spec attaches to (`TaskTemplate.Networks`, or the
/// deprecated top-level `Networks`).
pub fn attachments(spec: &ServiceSpec) -> Vec<NetworkAttachmentConfig> {
    let template = spec
        .task_template
        .as_ref()
        .and_then(|t| t.networks.clone())
        .unwrap_or_default();
    if template.is_empty() {
        spec.networks.clone().unwrap_or_default()
    } else {
        template
    }
}

/// Stack deploy names networks; the engine stores their IDs. Resolves
/// every target, refusing unknown networks and the ingress network.
pub fn resolve_service_networks(store: &Store, spec: &mut ServiceSpec) -> Result<(), NetworkError> {
    let resolve = |list: &mut Vec<NetworkAttachmentConfig>| -> Result<(), NetworkError> {
        for a in list.iter_mut() {
            let target = a.target.clone().unwrap_or_default();
            let network =
                find(store, &target).ok_or_else(|| NetworkError::NotFound(target.clone()))?;
            if is_ingress(&network.network) {
                return Err(NetworkError::IngressAttach(target));
            }
            a.target = network.network.id.clone();
        }
        Ok(())
    };
    if let Some(list) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.networks.as_mut())
    {
        resolve(list)?;
    }
    if let Some(list) = spec.networks.as_mut() {
        resolve(list)?;
    }
    Ok(())
}

fn ingress_ports(spec: &EndpointSpec) -> Vec<&EndpointPortConfig> {
    spec.ports
        .iter()
        .flatten()
        .filter(|p| {
            !matches!(
                p.publish_mode,
                Some(EndpointPortConfigPublishModeEnum::HOST)
            )
        })
        .collect()
}

fn protocol(p: &EndpointPortConfig) -> EndpointPortConfigProtocolEnum {
    match p.protocol {
        None | Some(EndpointPortConfigProtocolEnum::EMPTY) => EndpointPortConfigProtocolEnum::TCP,
        Some(other) => other,
    }
}

/// `Endpoint` as swarmkit's allocator leaves it: the spec (with `vip`
/// filled in once anything is allocated), the published ports with the
/// dynamic ones chosen, and a VIP per attached network (plus ingress when
/// ingress ports are published). Allocations of `current` are kept.
pub fn endpoint(
    store: &Store,
    service_id: Option<&str>,
    spec: &ServiceSpec,
    current: Option<&ServiceEndpoint>,
) -> Result<ServiceEndpoint, NetworkError> {
    let requested = spec.endpoint_spec.clone().unwrap_or(EndpointSpec {
        mode: None,
        ports: None,
    });
    let networks = attachments(spec);
    let has_ports = requested.ports.as_ref().is_some_and(|p| !p.is_empty());
    if !has_ports && networks.is_empty() {
        return Ok(ServiceEndpoint {
            spec: Some(EndpointSpec {
                mode: requested.mode.filter(|m| *m == EndpointSpecModeEnum::DNSRR),
                ports: None,
            }),
            ..ServiceEndpoint::default()
        });
    }
    let mode = requested.mode.unwrap_or(EndpointSpecModeEnum::VIP);
    if mode == EndpointSpecModeEnum::DNSRR && !ingress_ports(&requested).is_empty() {
        return Err(NetworkError::DnsrrPorts);
    }
    let others: Vec<SwarmService> = store
        .list(Kind::Service)
        .iter()
        .filter_map(as_service)
        .filter(|s| s.id.as_deref() != service_id)
        .collect();

    // Published ports: conflicts with other services' ingress ports, and
    // the dynamic range for PublishedPort 0.
    let mut seen = BTreeSet::new();
    let mut used: BTreeSet<(String, i64)> = BTreeSet::new();
    for other in &others {
        for p in other
            .endpoint
            .as_ref()
            .and_then(|e| e.ports.as_ref())
            .into_iter()
            .flatten()
        {
            if !matches!(
                p.publish_mode,
                Some(EndpointPortConfigPublishModeEnum::HOST)
            ) {
                used.insert((protocol(p).to_string(), p.published_port.unwrap_or(0)));
            }
        }
    }
    let kept: HashMap<(String, i64), i64> = current
        .and_then(|e| e.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| {
            (
                (protocol(p).to_string(), p.target_port.unwrap_or(0)),
                p.published_port.unwrap_or(0),
            )
        })
        .collect();
    let mut ports = Vec::new();
    for p in requested.ports.iter().flatten() {
        let proto = protocol(p).to_string();
        let host = matches!(
            p.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        let mut published = p.published_port.unwrap_or(0);
        if published != 0 {
            if !seen.insert((proto.clone(), published, host)) {
                return Err(NetworkError::DuplicatePort);
            }
            if !host && used.contains(&(proto.clone(), published)) {
                let owner = others.iter().find(|o| {
                    o.endpoint
                        .as_ref()
                        .and_then(|e| e.ports.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|q| {
                            protocol(q).to_string() == proto && q.published_port == Some(published)
                        })
                });
                return Err(NetworkError::PortInUse {
                    port: published,
                    name: owner
                        .and_then(|o| o.spec.as_ref())
                        .and_then(|s| s.name.clone())
                        .unwrap_or_default(),
                    id: owner.and_then(|o| o.id.clone()).unwrap_or_default(),
                });
            }
        } else if !host {
            let target = p.target_port.unwrap_or(0);
            published = match kept.get(&(proto.clone(), target)).filter(|k| {
                **k != 0
                    && !used.contains(&(proto.clone(), **k))
                    && !requested
                        .ports
                        .iter()
                        .flatten()
                        .any(|q| q.published_port == Some(**k))
            }) {
                Some(k) => *k,
                None => super::DYNAMIC_PORTS
                    .clone()
                    .find(|port| {
                        !used.contains(&(proto.clone(), *port))
                            && !requested
                                .ports
                                .iter()
                                .flatten()
                                .any(|q| q.published_port == Some(*port))
                    })
                    .ok_or(NetworkError::PortsExhausted)?,
            };
        }
        if !host {
            used.insert((proto.clone(), published));
        }
        ports.push(EndpointPortConfig {
            name: p.name.clone().filter(|n| !n.is_empty()),
            protocol: Some(protocol(p)),
            target_port: p.target_port,
            published_port: Some(published),
            publish_mode: Some(
                p.publish_mode
                    .unwrap_or(EndpointPortConfigPublishModeEnum::INGRESS),
            ),
        });
    }

    // VIPs, one per network (ingress first, as the engine lists them).
    let mut vips = Vec::new();
    if mode == EndpointSpecModeEnum::VIP {
        let mut wanted: Vec<SwarmNetwork> = Vec::new();
        if !ingress_ports(&requested).is_empty() {
            if let Some(ingress) = networks_of(store)
                .into_iter()
                .find(|n| is_ingress(&n.network))
            {
                wanted.push(ingress);
            }
        }
        for a in &networks {
            if let Some(n) = a.target.as_deref().and_then(|t| find(store, t)) {
                if !wanted.iter().any(|w| w.network.id == n.network.id) {
                    wanted.push(n);
                }
            }
        }
        for n in wanted {
            let id = n.network.id.clone().unwrap_or_default();
            let keep = current
                .and_then(|e| e.virtual_ips.as_ref())
                .into_iter()
                .flatten()
                .find(|v| v.network_id.as_deref() == Some(id.as_str()))
                .cloned();
            if let Some(keep) = keep {
                vips.push(keep);
                continue;
            }
            let Some((subnet, gateway)) = primary(&n.network) else {
                continue;
            };
            let mut taken: Vec<Ipv4Addr> = vec![gateway];
            if is_ingress(&n.network) {
                taken.extend(ingress_sandboxes(store, &subnet, gateway));
            }
            taken.extend(n.node_gateways.values());
            taken.extend(others.iter().flat_map(|o| vip_addrs(o, &id)));
            taken.extend(
                vips.iter()
                    .filter(|v: &&ServiceEndpointVirtualIps| {
                        v.network_id.as_deref() == Some(id.as_str())
                    })
                    .filter_map(vip_ip),
            );
            let ip = ipam::next_lower(&subnet, &taken)
                .ok_or_else(|| NetworkError::AddressExhausted(id.clone()))?;
            vips.push(ServiceEndpointVirtualIps {
                network_id: Some(id),
                addr: Some(subnet.with_prefix(ip)),
            });
        }
    }
    Ok(ServiceEndpoint {
        spec: Some(EndpointSpec {
            mode: Some(mode),
            ports: requested.ports.clone().filter(|p| !p.is_empty()),
        }),
        ports: (!ports.is_empty()).then_some(ports),
        virtual_ips: (!vips.is_empty()).then_some(vips),
    })
}

/// The addresses the engine gives each node's ingress sandbox
/// (`ingress-sbox`) when the node joins, before any service: the lowest
/// ones after the gateway, one per node (measured: a one-node swarm's
/// first ingress VIP is 10.0.0.3). shoal has no such sandbox (its ingress
/// proxy is in userspace), but keeps the addresses so VIPs read the same.
fn ingress_sandboxes(store: &Store, subnet: &Subnet, gateway: Ipv4Addr) -> Vec<Ipv4Addr> {
    let nodes = store.list(Kind::Node).len();
    let mut reserved = Vec::with_capacity(nodes);
    while reserved.len() < nodes {
        let mut used = reserved.clone();
        used.push(gateway);
        match ipam::next_lower(subnet, &used) {
            Some(ip) => reserved.push(ip),
            None => break,
        }
    }
    reserved
}

fn networks_of(store: &Store) -> Vec<SwarmNetwork> {
    networks(store)
}

fn vip_ip(v: &ServiceEndpointVirtualIps) -> Option<Ipv4Addr> {
    address_of_cidr(v.addr.as_deref()?)
}

/// The address of `10.0.1.2/24`.
pub fn address_of_cidr(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
}

fn vip_addrs(service: &SwarmService, network: &str) -> Vec<Ipv4Addr> {
    service
        .endpoint
        .as_ref()
        .and_then(|e| e.virtual_ips.as_ref())
        .into_iter()
        .flatten()
        .filter(|v| v.network_id.as_deref() == Some(network))
        .filter_map(vip_ip)
        .collect()
}

/// swarmkit's check before a network is removed: no service refers to it,
/// and no task that may still run does.
pub fn check_unused(store: &Store, network_id: &str) -> Result<(), NetworkError> {
    for service in store.list(Kind::Service).iter().filter_map(as_service) {
        let spec = service.spec.clone().unwrap_or_default();
        let by_spec = attachments(&spec)
            .iter()
            .any(|a| a.target.as_deref() == Some(network_id));
        let by_vip = !vip_addrs(&service, network_id).is_empty();
        if by_spec || by_vip {
            return Err(NetworkError::InUseByService {
                network: network_id.to_string(),
                service: service.id.clone().unwrap_or_default(),
            });
        }
    }
    for task in store.list(Kind::Task).iter().filter_map(as_task) {
        let live = tasks::rank(tasks::desired(&task)) <= tasks::rank(TaskState::RUNNING)
            && tasks::rank(tasks::state(&task)) <= tasks::rank(TaskState::RUNNING);
        let attached = task
            .spec
            .as_ref()
            .and_then(|s| s.networks.as_ref())
            .into_iter()
            .flatten()
            .any(|a| a.target.as_deref() == Some(network_id));
        if live && attached {
            return Err(NetworkError::InUseByTask {
                network: network_id.to_string(),
                task: task.id.clone().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_networks_get_the_next_subnet_and_vxlan() {
        let store = Store::new();
        let mut rng = rand::thread_rng();
        let request = CreateRequest {
            name: Some("front".into()),
            driver: Some("overlay".into()),
            ..CreateRequest::default()
        };
        let n = new_network(&store, &request, &mut rng).unwrap();
        let v = serde_json::to_value(&n.network).unwrap();
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
        assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.0.1.1");
        assert_eq!(v["Options"][VXLAN_OPTION], "4097");
        assert_eq!(n.network.id.as_deref().map(str::len), Some(25));
        let bad = CreateRequest {
            name: Some("bad".into()),
            ipam: Some(CreateIpam {
                config: Some(vec![CreateIpamConfig {
                    subnet: Some("10.0.0.300/24".into()),
                    ..CreateIpamConfig::default()
                }]),
                ..CreateIpam::default()
            }),
            ..CreateRequest::default()
        };
        assert_eq!(
            new_network(&store, &bad, &mut rng).unwrap_err(),
            NetworkError::InvalidSubnet("10.0.0.300/24".into())
        );
        let encrypted = CreateRequest {
            name: Some("secret".into()),
            options: Some(HashMap::from([("encrypted".into(), String::new())])),
            ..CreateRequest::default()
        };
        assert_eq!(
            new_network(&store, &encrypted, &mut rng).unwrap_err(),
            NetworkError::Encrypted
        );
        let host = CreateRequest {
            name: Some("host".into()),
            ..CreateRequest::default()
        };
        assert!(matches!(
            new_network(&store, &host, &mut rng),
            Err(NetworkError::Predefined(_))
        ));
    }
}
