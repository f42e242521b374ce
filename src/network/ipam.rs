//! IPv4 subnets as swarm networks use them: parsing with swarmkit's checks,
//! overlap, the address pools networks get their subnets from (10.0.0.0/8
//! cut in /24s, or what `swarm init --default-addr-pool` asked) and address
//! choice.

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

/// Where networks that ask for no subnet get one: the cluster's default
/// address pools cut in pieces of one size (`swarm init
/// --default-addr-pool`, `--default-addr-pool-mask-length`), or swarm's
/// default, 10.0.0.0/8 in /24s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPools {
    pools: Vec<Subnet>,
    size: u8,
}

/// What `swarm init` refuses in its address pools, in the engine's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("invalid base pool {0}: invalid CIDR address: {0}")]
    InvalidPool(String),
    #[error("invalid CIDR: {pool:?}. Subnet size is too small for pool: {size}")]
    TooSmall { pool: String, size: u32 },
    #[error("subnet size is out of range: {0}")]
    SizeOutOfRange(u32),
}

impl Default for AddressPools {
    fn default() -> Self {
        AddressPools {
            pools: vec![Subnet::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
            size: 24,
        }
    }
}

impl AddressPools {
    /// The pools as `swarm init` sent them; none means swarm's default (the
    /// engine then ignores the size too).
    pub fn new(pools: &[String], size: u32) -> Result<AddressPools, PoolError> {
        if pools.is_empty() {
            return Ok(AddressPools::default());
        }
        let size8 = u8::try_from(size)
            .ok()
            .filter(|s| *s <= 32)
            .ok_or(PoolError::SizeOutOfRange(size))?;
        let mut parsed = Vec::with_capacity(pools.len());
        for text in pools {
            // IPv6 pools fail the size check in the engine (its sizes are
            // IPv4 sizes); parsing refuses them here with the same text.
            if text.contains(':') {
                return Err(PoolError::TooSmall {
                    pool: text.clone(),
                    size,
                });
            }
            let pool = Subnet::parse(text).ok_or_else(|| PoolError::InvalidPool(text.clone()))?;
            if size8 < pool.prefix {
                return Err(PoolError::TooSmall {
                    pool: text.clone(),
                    size,
                });
            }
            parsed.push(pool);
        }
        Ok(AddressPools {
            pools: parsed,
            size: size8,
        })
    }

    /// The first piece of the pools that overlaps none of `taken`. The first
    /// piece of the first pool is the ingress network's: other networks
    /// start after it (`for_ingress` false), as swarm's do.
    pub fn next_free(&self, taken: &[Subnet], for_ingress: bool) -> Option<Subnet> {
        let skip = usize::from(!for_ingress);
        self.pieces()
            .skip(skip)
            .find(|candidate| !taken.iter().any(|t| t.overlaps(candidate)))
    }

    /// Every piece of every pool, in order.
    fn pieces(&self) -> impl Iterator<Item = Subnet> + '_ {
        let size = self.size;
        self.pools.iter().flat_map(move |pool| {
            let count = 1u64 << (size - pool.prefix);
            let step = 1u64 << (32 - u32::from(size));
            (0..count).map(move |n| {
                let base = u64::from(pool.base) + n * step;
                Subnet::new(Ipv4Addr::from(base as u32), size)
            })
        })
    }
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
        let default = AddressPools::default();
        assert_eq!(
            default.next_free(&taken, false).unwrap().to_string(),
            "10.0.1.0/24"
        );
        assert_eq!(
            default.next_free(&[a], true).unwrap().to_string(),
            "10.1.0.0/24"
        );
        assert_eq!(b.upper_half().unwrap().to_string(), "10.0.5.128/25");
        let used = [Ipv4Addr::new(10, 0, 5, 2)];
        assert_eq!(next_lower(&b, &used), Some(Ipv4Addr::new(10, 0, 5, 3)));
    }

    #[test]
    fn custom_pools_are_cut_in_the_asked_size_and_checked_as_the_engine_does() {
        let pools = AddressPools::new(&["10.20.0.0/16".to_string()], 26).unwrap();
        let ingress = pools.next_free(&[], true).unwrap();
        assert_eq!(ingress.to_string(), "10.20.0.0/26");
        let first = pools.next_free(&[ingress], false).unwrap();
        assert_eq!(first.to_string(), "10.20.0.64/26");
        assert_eq!(
            pools
                .next_free(&[ingress, first], false)
                .unwrap()
                .to_string(),
            "10.20.0.128/26"
        );
        // A second pool is used once the first is full.
        let two =
            AddressPools::new(&["10.9.0.0/24".to_string(), "10.8.0.0/24".to_string()], 24).unwrap();
        let taken = [two.next_free(&[], true).unwrap()];
        assert_eq!(
            two.next_free(&taken, false).unwrap().to_string(),
            "10.8.0.0/24"
        );
        let all = [taken[0], Subnet::parse("10.8.0.0/24").unwrap()];
        assert_eq!(two.next_free(&all, false), None);
        // The size alone changes nothing (the engine ignores it too).
        assert_eq!(AddressPools::new(&[], 26).unwrap(), AddressPools::default());
        assert_eq!(
            AddressPools::new(&["foo".to_string()], 24)
                .unwrap_err()
                .to_string(),
            "invalid base pool foo: invalid CIDR address: foo"
        );
        assert_eq!(
            AddressPools::new(&["10.20.0.0/16".to_string()], 8)
                .unwrap_err()
                .to_string(),
            "invalid CIDR: \"10.20.0.0/16\". Subnet size is too small for pool: 8"
        );
        assert_eq!(
            AddressPools::new(&["10.20.0.0/16".to_string()], 33)
                .unwrap_err()
                .to_string(),
            "subnet size is out of range: 33"
        );
    }
}
