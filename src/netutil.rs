//! Facts about this host's network that the engine also derives.

use std::net::Ipv4Addr;

/// Non-loopback, non-link-local IPv4 addresses of up interfaces.
pub fn global_ipv4_addrs() -> Vec<Ipv4Addr> {
    let mut addrs = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we only read and
    // then release with freeifaddrs; no pointer outlives this function.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return addrs;
        }
        let mut cursor = list;
        while let Some(ifa) = cursor.as_ref() {
            let up = ifa.ifa_flags & (libc::IFF_UP as u32) != 0;
            if up
                && !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_link_local() && !is_docker_bridge(ifa) {
                    addrs.push(ip);
                }
            }
            cursor = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The engine ignores its own bridges (docker0, br-…) when choosing.
///
/// # Safety
/// `ifa.ifa_name` must point at a NUL-terminated name, as getifaddrs gives.
unsafe fn is_docker_bridge(ifa: &libc::ifaddrs) -> bool {
    let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
    name == "docker0" || name.starts_with("br-") || name.starts_with("veth")
}
