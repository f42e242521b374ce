//! Addresses on swarm networks that the engines must not choose: each
//! task's address and each node's gateway. With several hosts, every
//! engine's IPAM would pick from the same range on its own and collide, so
//! the leader picks them in one serialised place, the scheduler's commit
//! (a task gets its addresses in the same write that places it).
//!
//! How a subnet is cut (a /24 as example):
//! - `.1`, the network's IPAM gateway: the first node's gateway, so one
//!   node works as before;
//! - the lower half from `.2` up: VIPs ([`super::allocate::endpoint`]);
//! - the lower half from its top down: the other nodes' gateways;
//! - the upper half: task addresses, its lower quarter first, because the
//!   top quarter is where each engine's own IPAM places containers joined
//!   by hand (`docker run --network`), which shoal does not choose.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use bollard::models::TaskState;

use super::allocate::{self, is_ingress, primary};
use super::ipam::Subnet;
use super::local::task_attachments;
use super::NetworkError;
use crate::manager::tasks;
use crate::types::{AttachedNetwork, NetworkAttachment, SwarmNetwork, SwarmService, SwarmTask};

/// One round of choices: what is taken, and the networks given new
/// gateways (to be written with the round's other changes).
pub struct Addresses {
    networks: HashMap<String, SwarmNetwork>,
    /// Per network: task addresses and VIPs in use.
    taken: HashMap<String, HashSet<Ipv4Addr>>,
    changed: BTreeSet<String>,
}

impl Addresses {
    /// What the store holds now: its networks, the addresses of tasks that
    /// may still run, and the services' VIPs.
    pub fn new(
        networks: Vec<SwarmNetwork>,
        tasks: &[SwarmTask],
        services: &[SwarmService],
    ) -> Self {
        let mut taken: HashMap<String, HashSet<Ipv4Addr>> = HashMap::new();
        for task in tasks.iter().filter(|t| holds_addresses(t)) {
            for a in task.networks_attachments.iter().flatten() {
                if let Some(ip) = a
                    .addresses
                    .first()
                    .and_then(|c| allocate::address_of_cidr(c))
                {
                    taken.entry(a.network.id.clone()).or_default().insert(ip);
                }
            }
        }
        for service in services {
            for vip in service
                .endpoint
                .as_ref()
                .and_then(|e| e.virtual_ips.as_ref())
                .into_iter()
                .flatten()
            {
                let Some(ip) = vip.addr.as_deref().and_then(allocate::address_of_cidr) else {
                    continue;
                };
                let network = vip.network_id.clone().unwrap_or_default();
                taken.entry(network).or_default().insert(ip);
            }
        }
        let networks = networks
            .into_iter()
            .map(|n| (allocate::id_of(&n.network).to_string(), n))
            .collect();
        Addresses {
            networks,
            taken,
            changed: BTreeSet::new(),
        }
    }

    /// Gives `task`, placed on `node_id`, an address on each of its
    /// networks (keeping those it has), and the node a gateway on them.
    pub fn attach(&mut self, task: &mut SwarmTask, node_id: &str) -> Result<(), NetworkError> {
        let mut attachments = Vec::new();
        for (network_id, _) in task_attachments(task) {
            let Some(network) = self.networks.get(&network_id) else {
                continue;
            };
            if is_ingress(&network.network) {
                continue;
            }
            let shown = AttachedNetwork::of(network);
            self.gateway(&network_id, node_id)?;
            let address = match task.address_on(&network_id) {
                Some(ip) => ip,
                None => self.task_address(&network_id)?,
            };
            let Some((subnet, _)) = self
                .networks
                .get(&network_id)
                .and_then(|n| primary(&n.network))
            else {
                continue;
            };
            attachments.push(NetworkAttachment {
                network: shown,
                addresses: vec![subnet.with_prefix(address)],
            });
        }
        task.networks_attachments = (!attachments.is_empty()).then_some(attachments);
        Ok(())
    }

    /// The gateway of `node_id` on every swarm network but ingress (never
    /// a bridge): a manager realises them all.
    pub fn gateways_everywhere(&mut self, node_id: &str) -> Result<(), NetworkError> {
        let ids: Vec<String> = self
            .networks
            .iter()
            .filter(|(_, n)| !is_ingress(&n.network))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.gateway(&id, node_id)?;
        }
        Ok(())
    }

    /// Gateways of nodes no longer in the swarm are freed.
    pub fn forget_nodes_except(&mut self, nodes: &HashSet<String>) {
        for (id, network) in self.networks.iter_mut() {
            let before = network.node_gateways.len();
            network.node_gateways.retain(|node, _| nodes.contains(node));
            if network.node_gateways.len() != before {
                self.changed.insert(id.clone());
            }
        }
    }

    /// The networks given a gateway this round, to be written.
    pub fn changed_networks(&self) -> Vec<SwarmNetwork> {
        self.changed
            .iter()
            .filter_map(|id| self.networks.get(id).cloned())
            .collect()
    }

    fn gateway(&mut self, network_id: &str, node_id: &str) -> Result<Ipv4Addr, NetworkError> {
        let exhausted = || NetworkError::AddressExhausted(network_id.to_string());
        let network = self.networks.get(network_id).ok_or_else(exhausted)?;
        if let Some(ip) = network.node_gateways.get(node_id) {
            return Ok(*ip);
        }
        let (subnet, first) = primary(&network.network).ok_or_else(exhausted)?;
        let gateways: HashSet<Ipv4Addr> = network.node_gateways.values().copied().collect();
        let ip = if gateways.contains(&first) {
            let taken = self.taken.get(network_id);
            next_gateway(&subnet, |ip| {
                ip == first || gateways.contains(&ip) || taken.is_some_and(|t| t.contains(&ip))
            })
            .ok_or_else(exhausted)?
        } else {
            first
        };
        if let Some(network) = self.networks.get_mut(network_id) {
            network.node_gateways.insert(node_id.to_string(), ip);
            self.changed.insert(network_id.to_string());
        }
        Ok(ip)
    }

    fn task_address(&mut self, network_id: &str) -> Result<Ipv4Addr, NetworkError> {
        let exhausted = || NetworkError::AddressExhausted(network_id.to_string());
        let network = self.networks.get(network_id).ok_or_else(exhausted)?;
        let (subnet, first) = primary(&network.network).ok_or_else(exhausted)?;
        let gateways: HashSet<Ipv4Addr> = network.node_gateways.values().copied().collect();
        let taken = self.taken.entry(network_id.to_string()).or_default();
        let ip = next_task_address(&subnet, |ip| {
            ip == first || gateways.contains(&ip) || taken.contains(&ip)
        })
        .ok_or_else(exhausted)?;
        taken.insert(ip);
        Ok(ip)
    }
}

/// A task whose container may still hold its addresses.
fn holds_addresses(task: &SwarmTask) -> bool {
    tasks::rank(tasks::state(task)) < tasks::rank(TaskState::COMPLETE)
}

/// The highest free address of the lower half (VIPs fill it from below).
fn next_gateway(subnet: &Subnet, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    let half = subnet.size() / 2;
    (2..half.max(2))
        .rev()
        .filter_map(|n| subnet.nth(n))
        .find(|ip| !taken(*ip))
}

/// The lowest free address of the upper half, its lower quarter first;
/// subnets too small to halve use every host address.
fn next_task_address(subnet: &Subnet, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    let size = subnet.size();
    let last = size.saturating_sub(1);
    let range: Vec<u64> = if subnet.upper_half().is_some() {
        (size / 2..last).collect()
    } else {
        (1..last).collect()
    };
    range
        .into_iter()
        .filter_map(|n| subnet.nth(n))
        .find(|ip| !taken(*ip))
}

/// The range each engine's IPAM uses for containers shoal does not place:
/// the subnet's top quarter, which task addresses reach last.
pub fn engine_range(subnet: &Subnet) -> Option<Subnet> {
    subnet.upper_half()?.upper_half()
}

/// The MAC a container gets on a bridge for `ip` (the engine derives it
/// the same way when none is given): remote nodes program it in their
/// FDB and neighbour tables without asking the engine.
pub fn mac_of(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        Ipam, IpamConfig, Network, NetworkAttachmentConfig, TaskSpec, TaskStatus,
    };

    fn network(id: &str) -> SwarmNetwork {
        SwarmNetwork {
            network: Network {
                id: Some(id.into()),
                name: Some(format!("{id}-name")),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some("10.0.1.0/24".into()),
                        gateway: Some("10.0.1.1".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn task(state: TaskState) -> SwarmTask {
        SwarmTask::from(bollard::models::Task {
            spec: Some(TaskSpec {
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some("net".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: Some(state),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn tasks_and_gateways_never_share_an_address() {
        let mut held = task(TaskState::RUNNING);
        let mut gone = task(TaskState::SHUTDOWN);
        let mut first = Addresses::new(vec![network("net")], &[], &[]);
        first.attach(&mut held, "node1").unwrap();
        first.attach(&mut gone, "node1").unwrap();
        assert_eq!(held.address_on("net"), Some(Ipv4Addr::new(10, 0, 1, 128)));
        assert_eq!(gone.address_on("net"), Some(Ipv4Addr::new(10, 0, 1, 129)));
        let networks = first.changed_networks();
        assert_eq!(
            networks[0].node_gateways.get("node1"),
            Some(&Ipv4Addr::new(10, 0, 1, 1)),
            "the first node keeps the IPAM gateway"
        );
        // A later round sees what the store holds: a stopped task's address is free.
        let mut next = Addresses::new(networks, &[held.clone(), gone], &[]);
        let mut new = task(TaskState::PENDING);
        next.attach(&mut new, "node2").unwrap();
        assert_eq!(new.address_on("net"), Some(Ipv4Addr::new(10, 0, 1, 129)));
        let mut kept = held.clone();
        next.attach(&mut kept, "node1").unwrap();
        assert_eq!(kept.address_on("net"), held.address_on("net"));
        let gateways = &next.changed_networks()[0].node_gateways;
        assert_eq!(gateways.get("node2"), Some(&Ipv4Addr::new(10, 0, 1, 127)));
        let attachment = &new.networks_attachments.unwrap()[0];
        assert_eq!(attachment.addresses, vec!["10.0.1.129/24".to_string()]);
        assert_eq!(attachment.network.spec.name, "net-name");
    }

    #[test]
    fn the_engines_range_is_the_top_quarter_and_macs_follow_addresses() {
        let subnet = Subnet::parse("10.0.1.0/24").unwrap();
        assert_eq!(engine_range(&subnet).unwrap().to_string(), "10.0.1.192/26");
        assert_eq!(mac_of(Ipv4Addr::new(10, 0, 1, 130)), "02:42:0a:00:01:82");
    }
}
