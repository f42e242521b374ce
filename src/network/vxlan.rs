//! Swarm networks across hosts: each node's bridge for a network gets a
//! VXLAN port (the network's VNI), and every endpoint on another host (a
//! task's address, another node's gateway) a static neighbour entry (its
//! MAC, derived from its address) and a static FDB entry (the host to send
//! its frames to). This is libnetwork's overlay with the store instead of
//! gossip: nothing is learnt from the wire, nothing is flooded.
//!
//! - The VXLAN device has `proxy` on: the containers' ARP requests are
//!   answered from its neighbour table on this host, so they never leave
//!   it; `nolearning`, so only the entries programmed here count.
//! - Each bridge's own MAC is set from its gateway address, as containers'
//!   are from theirs ([`super::address::mac_of`]), so other hosts program
//!   it without asking: a VIP's traffic is masqueraded to the gateway of
//!   the node that balanced it, and replies come back to that address.
//! - A device exists only while a network has endpoints on other hosts: a
//!   one-node swarm creates none (several one-node swarms may share a
//!   kernel and would clash on the VNI).
//! - One nft table per swarm (`shoalvx_<swarm>`) drops datagrams to the
//!   VXLAN port that carry one of the swarm's VNIs and come from a host
//!   that is none of its nodes: nothing else may inject frames into its
//!   networks. (VNIs, not the port: several swarms may share a kernel.)
//! - Everything is replayed every few seconds and whenever the inputs
//!   change (`ip -batch`, `bridge -batch`, replace semantics): an engine
//!   restart that recreated a bridge, or an entry removed by hand, is
//!   repaired.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::address::mac_of;
use super::allocate::{self, is_ingress};
use super::local::{task_attachments, Bridge};
use super::vip::{run, VipError};
use crate::manager::orchestrator::{as_node, as_task};
use crate::manager::tasks;
use crate::store::Tables;
use crate::types::{Kind, Object};

/// The UDP port of VXLAN when the swarm names none (IANA's, as swarm's).
pub const DEFAULT_PORT: u16 = 4789;
/// An Ethernet underlay's 1500 less VXLAN's 50 bytes (outer IPv4, UDP,
/// VXLAN and inner Ethernet headers).
pub const DEFAULT_MTU: u32 = 1450;

/// Outer IPv4 (20), UDP (8), VXLAN (8) and inner Ethernet (14) headers.
pub const OVERHEAD: u32 = 50;

/// The MTU of the interface that carries this host's default route (the
/// VXLAN frames' way out), read from the kernel; 1500 when there is none.
pub fn underlay_mtu() -> u32 {
    let iface = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|table| default_route_iface(&table));
    iface
        .and_then(|i| std::fs::read_to_string(format!("/sys/class/net/{i}/mtu")).ok())
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1500)
}

/// The interface of the default route in `/proc/net/route`'s text.
fn default_route_iface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let iface = fields.next()?;
        (fields.next()? == "00000000").then(|| iface.to_string())
    })
}

const IP: &str = "ip";
const NFT: &str = "nft";

/// The swarm's VXLAN source filter table. Not `shoal_…`: those are VIP
/// tables, which other shoals on the kernel sweep by that prefix.
pub fn filter_table(cluster_id: &str) -> String {
    format!("shoalvx_{}", super::owners::short_id(cluster_id))
}

/// Replaces the filter table: datagrams to `port` whose VXLAN header
/// (8 bytes after the UDP header's 8: bit 96 on) carries one of `vnis`
/// are dropped unless they come from one of `hosts`.
fn filter_ruleset(
    table: &str,
    port: u16,
    vnis: &BTreeSet<u32>,
    hosts: &BTreeSet<Ipv4Addr>,
) -> String {
    let join = |items: Vec<String>| items.join(", ");
    let vnis = join(vnis.iter().map(u32::to_string).collect());
    let rule = if hosts.is_empty() {
        format!("udp dport {port} @th,96,24 {{ {vnis} }} drop")
    } else {
        let hosts = join(hosts.iter().map(Ipv4Addr::to_string).collect());
        format!("udp dport {port} @th,96,24 {{ {vnis} }} ip saddr != {{ {hosts} }} drop")
    };
    format!(
        "table ip {table} {{}}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority -10; policy accept;\n\
         \x20   {rule}\n\
         \x20 }}\n\
         }}\n"
    )
}
const BRIDGE: &str = "bridge";

/// What one node needs to join one swarm network to the other hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Overlay {
    pub network_id: String,
    pub vni: u32,
    pub port: u16,
    pub mtu: u32,
    /// This node's advertised address: the datagrams' source, so that
    /// other nodes' filters (which know nodes by it) let them in even on a
    /// host whose route to them would pick another address.
    #[serde(default)]
    pub local: Option<Ipv4Addr>,
    /// Endpoints on other hosts, sorted.
    pub remote: Vec<RemoteEndpoint>,
}

/// An address on the network that lives on another host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub ip: Ipv4Addr,
    /// The host's address on the underlay (its advertised address).
    pub host: Ipv4Addr,
}

/// Every swarm network's overlay as `node_id` sees it (the endpoints on
/// other hosts), from the store's tables.
pub fn overlays(tables: &Tables, node_id: &str) -> Vec<Overlay> {
    let hosts: HashMap<String, Ipv4Addr> = tables
        .iter(Kind::Node)
        .filter_map(as_node)
        .filter_map(|n| {
            let addr = n.status.as_ref()?.addr.as_deref()?.parse().ok()?;
            Some((n.id.clone()?, addr))
        })
        .collect();
    let port = data_path_port(tables);
    let mut remote: BTreeMap<String, BTreeSet<RemoteEndpoint>> = BTreeMap::new();
    for task in tables.iter(Kind::Task).filter_map(as_task) {
        let Some(owner) = task.node_id.as_deref().filter(|n| *n != node_id) else {
            continue;
        };
        let Some(host) = hosts.get(owner) else {
            continue;
        };
        // Entries go in before the task starts, and stay while its
        // container may still answer.
        if tasks::rank(tasks::state(&task)) >= tasks::rank(bollard::models::TaskState::COMPLETE) {
            continue;
        }
        for (network, _) in task_attachments(&task) {
            if let Some(ip) = task.address_on(&network) {
                remote
                    .entry(network)
                    .or_default()
                    .insert(RemoteEndpoint { ip, host: *host });
            }
        }
    }
    let mut out = Vec::new();
    for object in tables.iter(Kind::Network) {
        let Object::Network(network) = &**object else {
            continue;
        };
        let id = allocate::id_of(&network.network).to_string();
        if is_ingress(&network.network) {
            continue;
        }
        let Some(vni) = allocate::vxlan_of(&network.network) else {
            continue;
        };
        let mut endpoints = remote.remove(&id).unwrap_or_default();
        for (node, gateway) in &network.node_gateways {
            if let Some(host) = hosts.get(node).filter(|_| node != node_id) {
                endpoints.insert(RemoteEndpoint {
                    ip: *gateway,
                    host: *host,
                });
            }
        }
        out.push(Overlay {
            network_id: id,
            vni,
            port,
            mtu: super::local::mtu_of(&network.network),
            local: hosts.get(node_id).copied(),
            remote: endpoints.into_iter().collect(),
        });
    }
    out
}

/// The swarm's `DataPathPort`, else VXLAN's own.
fn data_path_port(tables: &Tables) -> u16 {
    tables
        .iter(Kind::Cluster)
        .find_map(|c| match &**c {
            Object::Cluster(c) => c.data_path_port,
            _ => None,
        })
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_PORT)
}

/// The VXLAN device of network `vni` of the swarm `cluster_id` (at most 15
/// bytes, the kernel's limit; the swarm's prefix keeps several swarms on
/// one kernel apart).
pub fn device_name(cluster_id: &str, vni: u32) -> String {
    let mut name = format!("vx{vni}{}", super::owners::short_id(cluster_id));
    name.truncate(15);
    name
}

/// What one bridge should look like on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    device: String,
    bridge: String,
    gateway: Ipv4Addr,
    overlay: Overlay,
}

/// The VXLAN ports this node made, and what was last applied.
#[derive(Default)]
pub struct Vxlans {
    applied: BTreeMap<String, Option<Plan>>,
    /// The source filter's table and the script last applied to it.
    filter: Option<(String, String)>,
    /// Whether ports left by an earlier run were looked for.
    adopted: bool,
    warned: Option<String>,
}

impl Vxlans {
    pub fn new() -> Vxlans {
        Vxlans::default()
    }

    /// Makes the VXLAN ports match `overlays` on `bridges`; `repair`
    /// replays the entries even when nothing changed.
    pub async fn reconcile(
        &mut self,
        cluster_id: &str,
        overlays: &[Overlay],
        bridges: &HashMap<String, Bridge>,
        repair: bool,
    ) {
        if !self.adopted {
            // Ports made before a restart are ours to keep or remove.
            for device in leftover_devices(cluster_id).await {
                self.applied.entry(device).or_insert(None);
            }
            self.adopted = true;
        }
        let mut wanted: BTreeMap<String, Plan> = BTreeMap::new();
        for overlay in overlays.iter().filter(|o| !o.remote.is_empty()) {
            let Some(bridge) = bridges.get(&overlay.network_id) else {
                continue;
            };
            let device = device_name(cluster_id, overlay.vni);
            wanted.insert(
                device.clone(),
                Plan {
                    device,
                    bridge: bridge.iface.clone(),
                    gateway: bridge.gateway,
                    overlay: overlay.clone(),
                },
            );
        }
        let gone: Vec<String> = self
            .applied
            .keys()
            .filter(|d| !wanted.contains_key(*d))
            .cloned()
            .collect();
        for device in gone {
            if let Err(error) = remove_device(&device).await {
                tracing::debug!(%device, %error, "VXLAN port not removed");
            }
            self.applied.remove(&device);
        }
        self.reconcile_filter(cluster_id, wanted.values(), repair)
            .await;
        for (device, plan) in wanted {
            if !repair && self.applied.get(&device) == Some(&Some(plan.clone())) {
                continue;
            }
            match apply(&plan).await {
                Ok(()) => {
                    self.applied.insert(device, Some(plan));
                    self.warned = None;
                }
                Err(error) => {
                    let text = error.to_string();
                    if self.warned.as_ref() != Some(&text) {
                        tracing::warn!(%device, %error, "cannot join the network to other hosts");
                        self.warned = Some(text);
                    }
                    self.applied.remove(&device);
                }
            }
        }
    }

    /// Keeps the source filter of this swarm's VNIs as `plans` need it.
    async fn reconcile_filter<'a>(
        &mut self,
        cluster_id: &str,
        plans: impl Iterator<Item = &'a Plan>,
        repair: bool,
    ) {
        let table = filter_table(cluster_id);
        let mut vnis = BTreeSet::new();
        let mut hosts = BTreeSet::new();
        let mut port = DEFAULT_PORT;
        for plan in plans {
            vnis.insert(plan.overlay.vni);
            hosts.extend(plan.overlay.remote.iter().map(|e| e.host));
            port = plan.overlay.port;
        }
        if vnis.is_empty() {
            self.remove_filter().await;
            return;
        }
        let script = filter_ruleset(&table, port, &vnis, &hosts);
        if !repair && self.filter.as_ref() == Some(&(table.clone(), script.clone())) {
            return;
        }
        match run(NFT, &["-f", "-"], Some(&script)).await {
            Ok(_) => self.filter = Some((table, script)),
            Err(error) => {
                tracing::warn!(%table, %error, "cannot filter VXLAN sources");
                self.filter = None;
            }
        }
    }

    async fn remove_filter(&mut self) {
        if let Some((table, _)) = self.filter.take() {
            let script = format!("table ip {table} {{}}\ndelete table ip {table}\n");
            if let Err(error) = run(NFT, &["-f", "-"], Some(&script)).await {
                tracing::debug!(%table, %error, "VXLAN filter not removed");
            }
        }
    }

    /// Removes every VXLAN port made here (shutdown, leave).
    pub async fn remove(&mut self) {
        self.remove_filter().await;
        for device in std::mem::take(&mut self.applied).into_keys() {
            if let Err(error) = remove_device(&device).await {
                tracing::debug!(%device, %error, "VXLAN port not removed");
            }
        }
    }
}

/// This swarm's VXLAN devices on the host, by name.
async fn leftover_devices(cluster_id: &str) -> Vec<String> {
    let Ok(text) = run(IP, &["-j", "-d", "link", "show", "type", "vxlan"], None).await else {
        return Vec::new();
    };
    devices_of(&text, cluster_id)
}

/// The devices in `ip -j -d link show type vxlan` output named as this
/// swarm names its ports.
fn devices_of(listing: &str, cluster_id: &str) -> Vec<String> {
    let parsed: serde_json::Value = serde_json::from_str(listing).unwrap_or_default();
    parsed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| {
            let name = link.get("ifname")?.as_str()?;
            let vni = link
                .get("linkinfo")?
                .get("info_data")?
                .get("id")?
                .as_u64()?;
            let vni = u32::try_from(vni).ok()?;
            (device_name(cluster_id, vni) == name).then(|| name.to_string())
        })
        .collect()
}

/// Remote addresses (neighbours) or MACs (FDB) present on the device
/// that no endpoint of `plan` accounts for.
fn stale_entries(listing: &str, key: &str, wanted: &BTreeSet<String>) -> Vec<String> {
    let parsed: serde_json::Value = serde_json::from_str(listing).unwrap_or_default();
    parsed
        .as_array()
        .into_iter()
        .flatten()
        // Only entries pointing somewhere: the kernel's own have no dst.
        .filter(|e| e.get("dst").is_some() || key == "dst")
        .filter_map(|e| e.get(key)?.as_str().map(str::to_string))
        .filter(|v| !wanted.contains(v))
        .collect()
}

/// Creates the device if missing, attaches it, replays the entries and
/// deletes those no endpoint accounts for (also ones left by a previous
/// run, or a task gone while shoal was down).
async fn apply(plan: &Plan) -> Result<(), VipError> {
    let device = plan.device.as_str();
    let exists = run(IP, &["link", "show", "dev", device], None)
        .await
        .is_ok();
    if !exists {
        let vni = plan.overlay.vni.to_string();
        let port = plan.overlay.port.to_string();
        let local = plan.overlay.local.map(|l| l.to_string());
        let mut args = vec![
            "link",
            "add",
            device,
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            &port,
            "nolearning",
            "proxy",
        ];
        if let Some(local) = &local {
            args.extend(["local", local.as_str()]);
        }
        run(IP, &args, None).await?;
        tracing::info!(%device, bridge = %plan.bridge, vni = plan.overlay.vni, "VXLAN port created");
    }
    let mtu = plan.overlay.mtu.to_string();
    let mac = mac_of(plan.gateway);
    let mut links = String::new();
    links.push_str(&format!("link set dev {} address {mac}\n", plan.bridge));
    links.push_str(&format!(
        "link set dev {device} mtu {mtu} master {}\n",
        plan.bridge
    ));
    links.push_str(&format!("link set dev {device} up\n"));
    for e in &plan.overlay.remote {
        links.push_str(&format!(
            "neigh replace {} lladdr {} dev {device} nud permanent\n",
            e.ip,
            mac_of(e.ip)
        ));
    }
    let ips: BTreeSet<String> = plan
        .overlay
        .remote
        .iter()
        .map(|e| e.ip.to_string())
        .collect();
    let neighbours = run(IP, &["-j", "neigh", "show", "dev", device], None).await?;
    for ip in stale_entries(&neighbours, "dst", &ips) {
        links.push_str(&format!("neigh del {ip} dev {device}\n"));
    }
    run(IP, &["-force", "-batch", "-"], Some(&links)).await?;
    let mut fdb = String::new();
    for e in &plan.overlay.remote {
        fdb.push_str(&format!(
            "fdb replace {} dev {device} dst {} self permanent\n",
            mac_of(e.ip),
            e.host
        ));
    }
    let macs: BTreeSet<String> = plan.overlay.remote.iter().map(|e| mac_of(e.ip)).collect();
    let entries = run(BRIDGE, &["-j", "fdb", "show", "dev", device], None).await?;
    for mac in stale_entries(&entries, "mac", &macs) {
        fdb.push_str(&format!("fdb del {mac} dev {device} self\n"));
    }
    run(BRIDGE, &["-force", "-batch", "-"], Some(&fdb)).await?;
    Ok(())
}

async fn remove_device(device: &str) -> Result<(), VipError> {
    match run(IP, &["link", "del", "dev", device], None).await {
        Ok(_) => {
            tracing::info!(%device, "VXLAN port removed");
            Ok(())
        }
        // Gone already (its bridge went with an engine restart, say).
        Err(VipError::Failed { .. })
            if run(IP, &["link", "show", "dev", device], None)
                .await
                .is_err() =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_underlay_is_the_default_routes_interface() {
        let table = "Iface\tDestination\tGateway\n\
                     br0\t0000A8C0\t00000000\n\
                     eth0\t00000000\t010200C0\n";
        assert_eq!(default_route_iface(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_iface("Iface\tDestination\n"), None);
    }

    #[test]
    fn leftovers_and_stale_entries_are_found_in_ip_json() {
        let cluster = "abcdefghijklmnopqrstuvwxy";
        let links = r#"[{"ifname": "vx4097abcdefghi", "linkinfo": {"info_kind": "vxlan",
            "info_data": {"id": 4097}}}, {"ifname": "vx4097other", "linkinfo":
            {"info_kind": "vxlan", "info_data": {"id": 4097}}}]"#;
        assert_eq!(devices_of(links, cluster), vec!["vx4097abcdefghi"]);
        let wanted: BTreeSet<String> = ["10.0.1.130".to_string()].into();
        let neigh = r#"[{"dst": "10.0.1.130", "lladdr": "02:42:0a:00:01:82"},
            {"dst": "10.0.1.131", "lladdr": "02:42:0a:00:01:83"}]"#;
        assert_eq!(stale_entries(neigh, "dst", &wanted), vec!["10.0.1.131"]);
        let macs: BTreeSet<String> = ["02:42:0a:00:01:82".to_string()].into();
        let fdb = r#"[{"mac": "02:42:0a:00:01:82", "dst": "10.231.1.12"},
            {"mac": "02:42:0a:00:01:83", "dst": "10.231.1.12"},
            {"mac": "1a:ae:18:c8:85:e3", "flags": []}]"#;
        assert_eq!(stale_entries(fdb, "mac", &macs), vec!["02:42:0a:00:01:83"]);
    }

    #[test]
    fn only_the_swarms_nodes_may_send_its_vnis() {
        let vnis: BTreeSet<u32> = [4097, 4098].into();
        let hosts: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(10, 231, 1, 12)].into();
        let script = filter_ruleset("shoalvx_abc", 4789, &vnis, &hosts);
        assert!(
            script.contains(
                "udp dport 4789 @th,96,24 { 4097, 4098 } ip saddr != { 10.231.1.12 } drop"
            ),
            "{script}"
        );
        assert!(script.starts_with("table ip shoalvx_abc {}\ndelete table ip shoalvx_abc\n"));
        assert!(!filter_table("abc").starts_with("shoal_"));
    }

    #[test]
    fn device_names_fit_the_kernel_and_keep_swarms_apart() {
        let a = device_name("abcdefghijklmnopqrstuvwxy", 4097);
        assert_eq!(a, "vx4097abcdefghi");
        assert!(device_name("x", 4_294_967).len() <= 15);
        assert_ne!(a, device_name("zbcdefghijklmnopqrstuvwxy", 4097));
    }
}
