//! IPv4 subnets as swarm networks use them: parsing with swarmkit's checks,
//! overlap, the default pool (10.0.0.0/8 cut in /24s) and address choice.

use std::net::Ipv4Addr;

use super::NetworkError;

/// An IPv4 subnet, kept as its network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: u32,
    prefix: u8,
}

impl Subnet {
    /// `10.0.1.0/24`; host bits are cleared as Go's `net.ParseCIDR` does.
    pub fn parse(text: &str) -> Option<Subnet> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = prefix.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        Some(Subnet {
            base: u32::from(addr) & mask(prefix),
            prefix,
        })
    }

    pub fn new(base: Ipv4Addr, prefix: u8) -> Subnet {
        let prefix = prefix.min(32);
        Subnet {
            base: u32::from(base) & mask(prefix),
            prefix,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = self.prefix.min(other.prefix);
        self.base & mask(shorter) == other.base & mask(shorter)
    }

    /// Number of addresses, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address of the subnet (0 = the network address).
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(self.base.wrapping_add(n as u32)))
    }

    /// The first host address, the default gateway (`.1`).
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        (self.size() > 2).then(|| Ipv4Addr::from(self.base + 1))
    }

    /// The upper half of the subnet: where the engine's own IPAM picks
    /// addresses for containers attached by hand (`docker run --network`),
    /// so they never meet the VIPs shoal hands out from the lower half.
    pub fn upper_half(&self) -> Option<Subnet> {
        (self.prefix < 30).then(|| Subnet {
            base: self.base + (self.size() / 2) as u32,
            prefix: self.prefix + 1,
        })
    }

    /// `addr/prefix`, as the engine shows an address within this subnet.
    pub fn with_prefix(&self, ip: Ipv4Addr) -> String {
        format!("{ip}/{}", self.prefix)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// One `IPAM.Config` entry of a create request, checked with swarmkit's texts.
pub fn check_config(subnet: &str, gateway: Option<&str>) -> Result<Subnet, NetworkError> {
    let parsed = Subnet::parse(subnet).ok_or_else(|| NetworkError::InvalidSubnet(subnet.into()))?;
    if let Some(gateway) = gateway.filter(|g| !g.is_empty()) {
        let ip: Ipv4Addr = gateway
            .parse()
            .map_err(|_| NetworkError::InvalidGateway(gateway.into()))?;
        if !parsed.contains(ip) {
            return Err(NetworkError::GatewayOutside {
                subnet: subnet.into(),
                gateway: gateway.into(),
            });
        }
    }
    Ok(parsed)
}

/// The first /24 of swarm's default pool (10.0.0.0/8) that overlaps none of
/// `taken`, starting at 10.0.`from`.0.
pub fn next_default(taken: &[Subnet], from: u32) -> Option<Subnet> {
    (from..256 * 256).find_map(|n| {
        let candidate = Subnet::new(Ipv4Addr::from(0x0a00_0000 | (n << 8)), 24);
        (!taken.iter().any(|t| t.overlaps(&candidate))).then_some(candidate)
    })
}

/// The lowest address of the subnet's lower half from `.2` on (the gateway
/// is `.1`) that is not in `used`.
pub fn next_lower(subnet: &Subnet, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let end = if subnet.upper_half().is_some() {
        subnet.size() / 2
    } else {
        subnet.size().saturating_sub(1)
    };
    (2..end)
        .filter_map(|n| subnet.nth(n))
        .find(|ip| !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_like_swarmkit() {
        let s = Subnet::parse("10.0.1.7/24").unwrap();
        assert_eq!(s.to_string(), "10.0.1.0/24");
        assert!(Subnet::parse("10.0.0.300/24").is_none());
        assert!(Subnet::parse("10.0.0.0").is_none());
        assert!(Subnet::parse("10.0.0.0/33").is_none());
        assert_eq!(
            check_config("10.0.0.0/24", Some("10.0.1.1")).unwrap_err().to_string(),
            "rpc error: code = InvalidArgument desc = ipam configuration: subnet 10.0.0.0/24 does not contain gateway 10.0.1.1"
        );
        assert_eq!(
            check_config("nope", None).unwrap_err().to_string(),
            "rpc error: code = InvalidArgument desc = ipam configuration: invalid subnet nope"
        );
    }

    #[test]
    fn overlaps_and_pools() {
        let a = Subnet::parse("10.0.0.0/16").unwrap();
        let b = Subnet::parse("10.0.5.0/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!b.overlaps(&Subnet::parse("10.0.6.0/24").unwrap()));
        let taken = [Subnet::parse("10.0.0.0/24").unwrap(), b];
        assert_eq!(next_default(&taken, 1).unwrap().to_string(), "10.0.1.0/24");
        assert_eq!(next_default(&[a], 0).unwrap().to_string(), "10.1.0.0/24");
        assert_eq!(b.upper_half().unwrap().to_string(), "10.0.5.128/25");
        let used = [Ipv4Addr::new(10, 0, 5, 2)];
        assert_eq!(next_lower(&b, &used), Some(Ipv4Addr::new(10, 0, 5, 3)));
    }
}
