//! Facts about this host's network that the engine also derives.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

/// An up network device (a link without a kind: not a bridge, veth, vxlan,
/// ifb…) and its global unicast addresses, as the engine's Linux
/// `resolveSystemAddr` considers them when it picks an address to advertise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// One link of `ip -details -json addr show`.
#[derive(Debug, Deserialize)]
struct IpLink {
    #[serde(default)]
    ifindex: u32,
    #[serde(default)]
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    linkinfo: Option<serde_json::Value>,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Debug, Deserialize)]
struct IpAddrInfo {
    local: Option<IpAddr>,
}

/// This host's up devices in interface order, with their global unicast
/// addresses. Bridges (docker0, the engine's and shoal's `br-…`, test
/// bridges), veths and other virtual links are not devices, so they never
/// make the choice ambiguous, as they do not for the engine.
pub async fn devices() -> std::io::Result<Vec<Device>> {
    let out = tokio::process::Command::new("ip")
        .args(["-details", "-json", "addr", "show"])
        .kill_on_drop(true)
        .output()
        .await?;
    if !out.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    parse_devices(&out.stdout).map_err(std::io::Error::other)
}

fn parse_devices(json: &[u8]) -> Result<Vec<Device>, serde_json::Error> {
    let mut links: Vec<IpLink> = serde_json::from_slice(json)?;
    links.sort_by_key(|l| l.ifindex);
    Ok(links
        .into_iter()
        .filter(|l| l.linkinfo.is_none() && l.flags.iter().any(|f| f == "UP"))
        .map(|l| {
            let addrs: Vec<IpAddr> = l
                .addr_info
                .iter()
                .filter_map(|a| a.local)
                .filter(is_global_unicast)
                .collect();
            Device {
                name: l.ifname,
                v4: addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(v4) => Some(*v4),
                        IpAddr::V6(_) => None,
                    })
                    .collect(),
                v6: addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V6(v6) => Some(*v6),
                        IpAddr::V4(_) => None,
                    })
                    .collect(),
            }
        })
        .collect())
}

/// Go's `net.IP.IsGlobalUnicast`.
fn is_global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() || link_local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_up_devices_and_their_global_addresses_count() {
        let json = br#"[
          {"ifindex":4,"ifname":"eth0","flags":["BROADCAST","UP","LOWER_UP"],
           "addr_info":[{"family":"inet","local":"192.0.2.2"},{"family":"inet6","local":"fd00::2"},
                        {"family":"inet6","local":"fe80::fc:ff:fe00:1"}]},
          {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],
           "addr_info":[{"family":"inet","local":"127.0.0.1"},{"family":"inet6","local":"::1"}]},
          {"ifindex":9,"ifname":"br-1234","flags":["UP"],"linkinfo":{"info_kind":"bridge"},
           "addr_info":[{"family":"inet","local":"10.0.0.1"}]},
          {"ifindex":7,"ifname":"eth1","flags":["BROADCAST"],
           "addr_info":[{"family":"inet","local":"198.51.100.1"}]}
        ]"#;
        let devices = parse_devices(json).unwrap();
        assert_eq!(
            devices,
            vec![
                Device {
                    name: "lo".to_string(),
                    v4: vec![],
                    v6: vec![],
                },
                Device {
                    name: "eth0".to_string(),
                    v4: vec![Ipv4Addr::new(192, 0, 2, 2)],
                    v6: vec!["fd00::2".parse().unwrap()],
                },
            ]
        );
    }
}
