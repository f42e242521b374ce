//! Service VIPs on this node, with nftables (this kernel has no IPVS).
//!
//! Each vip-mode service has one VIP per swarm network it is attached to
//! (allocated in [`super::allocate`]). Here that VIP becomes real:
//! - it is added as a /32 to the host side of the network's bridge, so the
//!   containers on that bridge get an ARP answer for it;
//! - one nft table of this node DNATs traffic to it (TCP, UDP, any port) to
//!   the service's serving tasks on that network, round robin (`numgen`);
//! - DNAT'ed VIP traffic is masqueraded, so a task's reply to a client on
//!   the same bridge comes back through the host (and is un-NAT'ed) instead
//!   of going straight to the client, which would drop it;
//! - the bridge's ports are in hairpin mode: with br_netfilter the DNAT
//!   happens on the bridge, and a task reaching its own service's VIP and
//!   landing on itself needs its frame sent back out the port it came in.
//!
//! The table is replaced atomically (delete and create in one `nft -f`
//! transaction) whenever the plan changes, and removed at shutdown and on
//! `swarm leave`. Its chains run just before Docker's own NAT chains, so a
//! host port published by some container cannot capture VIP traffic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use bollard::models::EndpointSpecModeEnum;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::allocate;
use super::local::{Bridge, TaskEndpoint};
use crate::manager::orchestrator::as_service;
use crate::store::Tables;
use crate::types::Kind;
use serde::{Deserialize, Serialize};

/// The tools this module runs.
const NFT: &str = "nft";
const IP: &str = "ip";
const BRIDGE: &str = "bridge";

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("`{0}` is not installed: service VIPs do not route (install nftables and iproute2)")]
    Missing(&'static str),
    #[error("`{tool}` failed: {stderr}")]
    Failed { tool: &'static str, stderr: String },
    #[error("cannot run `{tool}`: {source}")]
    Io {
        tool: &'static str,
        source: std::io::Error,
    },
}

/// One VIP on one bridge and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VipRoute {
    /// The bridge's host interface.
    pub iface: String,
    pub vip: Ipv4Addr,
    /// The serving tasks' addresses on that network, sorted.
    pub backends: Vec<Ipv4Addr>,
}

/// This node's nft table: one per swarm and node, since several shoals may
/// share this host's kernel. The cluster ID is random per swarm.
pub fn table_name(cluster_id: &str) -> String {
    format!("{TABLE_PREFIX}{}", super::owners::short_id(cluster_id))
}

const TABLE_PREFIX: &str = "shoal_";

/// Removes the tables of swarms whose shoal is gone from this host (killed
/// before it could remove its own; see `owners`).
pub async fn remove_dead_tables() {
    let Ok(text) = run(NFT, &["list", "tables", "ip"], None).await else {
        return;
    };
    for table in dead_tables(&text, super::owners::is_alive) {
        match remove_table(&table).await {
            Ok(()) => tracing::info!(table, "VIP table of a swarm gone from this host removed"),
            Err(error) => tracing::debug!(table, %error, "cannot remove a dead swarm's table"),
        }
    }
}

/// The shoal tables in `nft list tables` output whose swarm `alive` denies.
fn dead_tables(listing: &str, alive: impl Fn(&str) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("table ip "))
        .filter_map(|name| Some((name, name.strip_prefix(TABLE_PREFIX)?)))
        .filter(|(_, short)| !alive(short))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The VIPs the store's services have on the realised bridges, with their
/// serving tasks on each network.
pub fn desired(
    tables: &Tables,
    tasks: &[TaskEndpoint],
    bridges: &HashMap<String, Bridge>,
) -> Vec<VipRoute> {
    on_bridges(&by_network(tables, tasks), bridges)
}

/// A VIP on a network, wherever that network's bridge is: what a node
/// without a store gets in its assignments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkVip {
    pub network_id: String,
    pub vip: Ipv4Addr,
    /// The serving tasks' addresses on that network, sorted.
    pub backends: Vec<Ipv4Addr>,
}

/// `vips` placed on this node's bridges (those of other networks skipped).
pub fn on_bridges(vips: &[NetworkVip], bridges: &HashMap<String, Bridge>) -> Vec<VipRoute> {
    let mut out: Vec<VipRoute> = vips
        .iter()
        .filter_map(|v| {
            Some(VipRoute {
                iface: bridges.get(&v.network_id)?.iface.clone(),
                vip: v.vip,
                backends: v.backends.clone(),
            })
        })
        .collect();
    out.sort();
    out
}

/// Every vip-mode service's VIPs with their serving tasks, by network.
pub fn by_network(tables: &Tables, tasks: &[TaskEndpoint]) -> Vec<NetworkVip> {
    let mut out = Vec::new();
    for service in tables.iter(Kind::Service).filter_map(as_service) {
        let endpoint = service.endpoint.as_ref();
        let mode = endpoint
            .and_then(|e| e.spec.as_ref())
            .and_then(|s| s.mode)
            .unwrap_or(EndpointSpecModeEnum::VIP);
        if mode != EndpointSpecModeEnum::VIP {
            continue;
        }
        let service_id = service.id.clone().unwrap_or_default();
        for v in endpoint
            .and_then(|e| e.virtual_ips.as_ref())
            .into_iter()
            .flatten()
        {
            let network = v.network_id.clone().unwrap_or_default();
            let Some(vip) = v.addr.as_deref().and_then(allocate::address_of_cidr) else {
                continue;
            };
            let mut backends: Vec<Ipv4Addr> = tasks
                .iter()
                .filter(|t| t.service_id == service_id)
                .filter_map(|t| t.networks.get(&network).copied())
                .collect();
            backends.sort();
            backends.dedup();
            out.push(NetworkVip {
                network_id: network,
                vip,
                backends,
            });
        }
    }
    out.sort();
    out
}

/// The nft script that replaces the table with one routing `routes`.
/// Creating the table first makes the delete valid when it does not exist.
pub fn ruleset(table: &str, routes: &[VipRoute]) -> String {
    let mut dnat = String::new();
    let mut local = String::new();
    for r in routes.iter().filter(|r| !r.backends.is_empty()) {
        let map = r
            .backends
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("{i} : {ip}"))
            .collect::<Vec<_>>()
            .join(", ");
        let to = format!(
            "dnat to numgen inc mod {} map {{ {map} }}",
            r.backends.len()
        );
        let _ = writeln!(dnat, "    iifname \"{}\" ip daddr {} {to}", r.iface, r.vip);
        let _ = writeln!(local, "    ip daddr {} {to}", r.vip);
    }
    let vips: BTreeSet<Ipv4Addr> = routes.iter().map(|r| r.vip).collect();
    let masquerade = if vips.is_empty() {
        String::new()
    } else {
        let list = vips
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!("    ct status dnat ct original ip daddr {{ {list} }} masquerade\n")
    };
    format!(
        "table ip {table} {{}}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \x20 chain prerouting {{\n\
         \x20   type nat hook prerouting priority dstnat - 10; policy accept;\n\
         {dnat}\
         \x20 }}\n\
         \x20 chain output {{\n\
         \x20   type nat hook output priority -110; policy accept;\n\
         {local}\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat - 10; policy accept;\n\
         {masquerade}\
         \x20 }}\n\
         }}\n"
    )
}

/// Runs `tool args`, feeding `input` on stdin.
pub(super) async fn run(
    tool: &'static str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, VipError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => VipError::Missing(tool),
            _ => VipError::Io { tool, source },
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|source| VipError::Io { tool, source })?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| VipError::Io { tool, source })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(VipError::Failed {
            tool,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Removes this node's table (a missing one is fine).
pub async fn remove_table(table: &str) -> Result<(), VipError> {
    let script = format!("table ip {table} {{}}\ndelete table ip {table}\n");
    run(NFT, &["-f", "-"], Some(&script)).await.map(|_| ())
}

/// The /32 addresses on `iface` other than its own subnet's: the VIPs put
/// there (the gateway has the subnet's prefix, never /32).
async fn host_routes_on(iface: &str) -> Result<BTreeSet<Ipv4Addr>, VipError> {
    let text = run(IP, &["-j", "-4", "addr", "show", "dev", iface], None).await?;
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    Ok(parsed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| link.get("addr_info")?.as_array())
        .flatten()
        .filter(|a| a.get("prefixlen").and_then(serde_json::Value::as_u64) == Some(32))
        .filter_map(|a| a.get("local")?.as_str()?.parse().ok())
        .collect())
}

async fn add_address(iface: &str, ip: Ipv4Addr) -> Result<(), VipError> {
    let cidr = format!("{ip}/32");
    run(IP, &["addr", "add", &cidr, "dev", iface], None)
        .await
        .map(|_| ())
}

async fn remove_address(iface: &str, ip: Ipv4Addr) -> Result<(), VipError> {
    let cidr = format!("{ip}/32");
    run(IP, &["addr", "del", &cidr, "dev", iface], None)
        .await
        .map(|_| ())
}

/// Puts every container port of bridge `iface` in hairpin mode (new task
/// containers add ports, so this runs each round; ports already in it are
/// left alone). Over netlink (`ip`, `bridge`), not sysfs: a shoal entered
/// into a network namespace sees the root namespace's /sys. VXLAN ports
/// stay as they are: nothing comes back from the hosts they lead to.
async fn enable_hairpin(iface: &str) {
    let Ok(text) = run(IP, &["-j", "-d", "link", "show", "master", iface], None).await else {
        return;
    };
    let script: String = ports_without_hairpin(&text)
        .iter()
        .map(|port| format!("link set dev {port} hairpin on\n"))
        .collect();
    if script.is_empty() {
        return;
    }
    if let Err(error) = run(BRIDGE, &["-force", "-batch", "-"], Some(&script)).await {
        tracing::debug!(%iface, %error, "hairpin mode not set");
    }
}

/// The ports in `ip -j -d link show master BR` output that are not VXLAN
/// devices and not in hairpin mode yet.
fn ports_without_hairpin(listing: &str) -> Vec<String> {
    let parsed: serde_json::Value = serde_json::from_str(listing).unwrap_or_default();
    parsed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|link| {
            let info = link.get("linkinfo");
            let kind = info.and_then(|i| i.get("info_kind"));
            let hairpin = info
                .and_then(|i| i.get("info_slave_data"))
                .and_then(|d| d.get("hairpin"))
                .and_then(serde_json::Value::as_bool);
            kind.and_then(serde_json::Value::as_str) != Some("vxlan") && hairpin != Some(true)
        })
        .filter_map(|link| Some(link.get("ifname")?.as_str()?.to_string()))
        .collect()
}

/// This node's VIPs as last applied.
#[derive(Default)]
pub struct Vips {
    /// The table in use (it follows the cluster ID).
    table: Option<String>,
    /// The script last applied, to apply only changes.
    applied: Option<String>,
    /// The bridges VIP addresses were put on, to take them off at the end.
    ifaces: BTreeSet<String>,
    /// A failure already warned about (each distinct one is warned once).
    warned: Option<String>,
}

impl Vips {
    pub fn new() -> Vips {
        Vips::default()
    }

    /// Makes the table and the bridges' VIP addresses match `routes`.
    /// `bridges` are every realised bridge (VIPs of removed services are
    /// taken off them). Idempotent; a table removed by hand is made again.
    pub async fn reconcile(
        &mut self,
        table: &str,
        routes: &[VipRoute],
        bridges: &HashMap<String, Bridge>,
    ) {
        if self.table.as_deref().is_some_and(|t| t != table) {
            self.remove().await;
        }
        self.table = Some(table.to_string());
        let result = async {
            self.reconcile_addresses(routes, bridges).await?;
            self.reconcile_table(table, routes).await
        }
        .await;
        match result {
            Ok(()) => self.warned = None,
            Err(error) => {
                let text = error.to_string();
                if self.warned.as_deref() != Some(text.as_str()) {
                    tracing::warn!(%error, "cannot set up the service VIPs");
                    self.warned = Some(text);
                }
            }
        }
    }

    async fn reconcile_table(&mut self, table: &str, routes: &[VipRoute]) -> Result<(), VipError> {
        if routes.is_empty() {
            // No VIP to route: no table, so a swarm without VIPs leaves
            // nothing in the host's nftables even if it is killed.
            if self.applied.take().is_some() {
                match remove_table(table).await {
                    Ok(()) | Err(VipError::Missing(_)) => {}
                    Err(error) => return Err(error),
                }
            }
            return Ok(());
        }
        let script = ruleset(table, routes);
        let present = run(NFT, &["list", "table", "ip", table], None)
            .await
            .is_ok();
        if present && self.applied.as_deref() == Some(script.as_str()) {
            return Ok(());
        }
        self.applied = None;
        run(NFT, &["-f", "-"], Some(&script)).await?;
        tracing::debug!(%table, vips = routes.len(), "VIP table applied");
        self.applied = Some(script);
        Ok(())
    }

    async fn reconcile_addresses(
        &mut self,
        routes: &[VipRoute],
        bridges: &HashMap<String, Bridge>,
    ) -> Result<(), VipError> {
        let mut wanted: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for bridge in bridges.values() {
            wanted.entry(bridge.iface.as_str()).or_default();
        }
        for r in routes {
            wanted.entry(r.iface.as_str()).or_default().insert(r.vip);
        }
        for (iface, vips) in wanted {
            let have = match host_routes_on(iface).await {
                Ok(have) => have,
                // The bridge's interface is not there (yet): next round.
                Err(VipError::Failed { .. }) => continue,
                Err(other) => return Err(other),
            };
            enable_hairpin(iface).await;
            for ip in vips.difference(&have) {
                add_address(iface, *ip).await?;
            }
            for ip in have.difference(&vips) {
                remove_address(iface, *ip).await?;
            }
            self.ifaces.insert(iface.to_string());
        }
        Ok(())
    }

    /// Removes the table and the VIP addresses put on the bridges.
    pub async fn remove(&mut self) {
        if let Some(table) = self.table.take() {
            match remove_table(&table).await {
                Ok(()) => tracing::debug!(%table, "VIP table removed"),
                Err(VipError::Missing(_)) => {}
                Err(error) => tracing::warn!(%table, %error, "cannot remove the VIP table"),
            }
        }
        self.applied = None;
        for iface in std::mem::take(&mut self.ifaces) {
            let Ok(have) = host_routes_on(&iface).await else {
                continue;
            };
            for ip in have {
                if let Err(error) = remove_address(&iface, ip).await {
                    tracing::debug!(%iface, %ip, %error, "VIP address not removed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_balances_each_vip_and_masquerades_its_traffic() {
        let routes = vec![
            VipRoute {
                iface: "br-0123456789ab".into(),
                vip: Ipv4Addr::new(10, 0, 1, 2),
                backends: vec![Ipv4Addr::new(10, 0, 1, 130), Ipv4Addr::new(10, 0, 1, 131)],
            },
            VipRoute {
                iface: "br-0123456789ab".into(),
                vip: Ipv4Addr::new(10, 0, 1, 3),
                backends: vec![],
            },
        ];
        let text = ruleset("shoal_abc", &routes);
        assert!(text.starts_with("table ip shoal_abc {}\ndelete table ip shoal_abc\n"));
        assert!(text.contains(
            "iifname \"br-0123456789ab\" ip daddr 10.0.1.2 dnat to numgen inc mod 2 map { 0 : 10.0.1.130, 1 : 10.0.1.131 }"
        ));
        assert!(!text.contains("daddr 10.0.1.3 dnat"), "{text}");
        assert!(text.contains("ct original ip daddr { 10.0.1.2, 10.0.1.3 } masquerade"));
    }

    #[test]
    fn hairpin_goes_on_container_ports_not_yet_in_it() {
        let listing = r#"[
            {"ifname": "veth1", "linkinfo": {"info_kind": "veth",
                "info_slave_kind": "bridge", "info_slave_data": {"hairpin": false}}},
            {"ifname": "veth2", "linkinfo": {"info_kind": "veth",
                "info_slave_kind": "bridge", "info_slave_data": {"hairpin": true}}},
            {"ifname": "vx4097abc", "linkinfo": {"info_kind": "vxlan",
                "info_slave_kind": "bridge", "info_slave_data": {"hairpin": false}}}
        ]"#;
        assert_eq!(ports_without_hairpin(listing), vec!["veth1".to_string()]);
        assert!(ports_without_hairpin("not json").is_empty());
    }

    #[test]
    fn dead_tables_are_shoal_tables_of_gone_swarms() {
        let listing =
            "table ip nat\ntable ip shoal_alive123\ntable ip shoal_gone456\ntable ip filter\n";
        assert_eq!(
            dead_tables(listing, |short| short == "alive123"),
            vec!["shoal_gone456".to_string()]
        );
    }

    #[test]
    fn table_names_are_short_nft_identifiers() {
        assert_eq!(
            table_name("abcdefghijklmnopqrstuvwxy"),
            "shoal_abcdefghijkl"
        );
    }
}
