//! Interface specifications (`inet`, `eth0`, `eth0:inet6`, `eth0[1]`, CIDR,
//! `static:IP`) and their resolution to one IP address. Unlike ContainerPilot,
//! interface names may contain `-` and `.` (`br-abc`, `eth0.100`), and addresses
//! are resolved whenever asked, not once at load.

use std::net::IpAddr;

/// One way of choosing an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSpec {
    /// First non-loopback IPv4 (`inet`) or IPv6 (`inet6`) on any interface.
    AnyInet { v6: bool },
    /// First IPv4 (or IPv6) on the named interface.
    Named { name: String, v6: bool },
    /// The N-th address (v4 and v6 together, sorted) of the named interface.
    Indexed { name: String, index: usize },
    /// First address inside the network on any interface.
    Cidr { net: IpAddr, prefix: u8 },
    /// This address, as written.
    Static(IpAddr),
}

impl InterfaceSpec {
    pub fn parse(s: &str) -> Result<InterfaceSpec, String> {
        let s = s.trim();
        if let Some(ip) = s.strip_prefix("static:") {
            return ip
                .parse()
                .map(InterfaceSpec::Static)
                .map_err(|_| format!("'{s}': static address '{ip}' is not an IP address"));
        }
        match s {
            "inet" => return Ok(InterfaceSpec::AnyInet { v6: false }),
            "inet6" => return Ok(InterfaceSpec::AnyInet { v6: true }),
            _ => {}
        }
        if let Some((net, prefix)) = s.split_once('/') {
            let net: IpAddr = net
                .parse()
                .map_err(|_| format!("'{s}': '{net}' is not a network address"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0..={max}"))?;
            return Ok(InterfaceSpec::Cidr { net, prefix });
        }
        if let Some(rest) = s.strip_suffix(']') {
            let (name, idx) = rest
                .split_once('[')
                .ok_or_else(|| format!("'{s}': expected NAME[INDEX]"))?;
            let index = idx
                .parse()
                .map_err(|_| format!("'{s}': index '{idx}' is not a number"))?;
            check_name(s, name)?;
            return Ok(InterfaceSpec::Indexed {
                name: name.to_string(),
                index,
            });
        }
        let (name, v6) = match s.rsplit_once(':') {
            Some((n, "inet")) => (n, false),
            Some((n, "inet6")) => (n, true),
            Some((_, fam)) => return Err(format!("'{s}': family '{fam}' must be inet or inet6")),
            None => (s, false),
        };
        check_name(s, name)?;
        Ok(InterfaceSpec::Named {
            name: name.to_string(),
            v6,
        })
    }

    /// Pick an address from `(interface, address)` pairs.
    fn pick(&self, addrs: &[(String, IpAddr)]) -> Option<IpAddr> {
        match self {
            InterfaceSpec::Static(ip) => Some(*ip),
            InterfaceSpec::AnyInet { v6 } => addrs
                .iter()
                .map(|(_, ip)| *ip)
                .find(|ip| ip.is_ipv6() == *v6 && !ip.is_loopback()),
            InterfaceSpec::Named { name, v6 } => addrs
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, ip)| *ip)
                .find(|ip| ip.is_ipv6() == *v6),
            InterfaceSpec::Indexed { name, index } => addrs
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, ip)| *ip)
                .nth(*index),
            InterfaceSpec::Cidr { net, prefix } => addrs
                .iter()
                .map(|(_, ip)| *ip)
                .find(|ip| in_network(*ip, *net, *prefix)),
        }
    }
}

impl std::fmt::Display for InterfaceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterfaceSpec::AnyInet { v6: false } => f.write_str("inet"),
            InterfaceSpec::AnyInet { v6: true } => f.write_str("inet6"),
            InterfaceSpec::Named { name, v6: false } => f.write_str(name),
            InterfaceSpec::Named { name, v6: true } => write!(f, "{name}:inet6"),
            InterfaceSpec::Indexed { name, index } => write!(f, "{name}[{index}]"),
            InterfaceSpec::Cidr { net, prefix } => write!(f, "{net}/{prefix}"),
            InterfaceSpec::Static(ip) => write!(f, "static:{ip}"),
        }
    }
}

fn check_name(spec: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!("'{spec}': '{name}' is not an interface name"))
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Every address of every interface, sorted by interface name then address.
pub fn local_addresses() -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    if let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() {
        for ifa in ifaddrs {
            let Some(addr) = ifa.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            out.push((ifa.interface_name, ip));
        }
    }
    out.sort();
    out
}

/// The first address any spec (tried in order) picks; the error lists what exists.
pub fn resolve(specs: &[InterfaceSpec]) -> Result<IpAddr, String> {
    let addrs = local_addresses();
    resolve_from(specs, &addrs)
}

fn resolve_from(specs: &[InterfaceSpec], addrs: &[(String, IpAddr)]) -> Result<IpAddr, String> {
    specs.iter().find_map(|s| s.pick(addrs)).ok_or_else(|| {
        let specs: Vec<String> = specs.iter().map(ToString::to_string).collect();
        let have: Vec<String> = addrs.iter().map(|(n, ip)| format!("{n}:{ip}")).collect();
        format!(
            "none of the interfaces [{}] has an address; this host has [{}]",
            specs.join(", "),
            have.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<(String, IpAddr)> {
        let mut v: Vec<(String, IpAddr)> = vec![
            ("lo".into(), "127.0.0.1".parse().unwrap()),
            ("eth0".into(), "10.0.0.5".parse().unwrap()),
            ("eth0".into(), "fe80::1".parse().unwrap()),
            ("br-abc".into(), "172.18.0.1".parse().unwrap()),
        ];
        v.sort();
        v
    }

    #[test]
    fn specs_pick_addresses() {
        let a = addrs();
        let pick = |s: &str| InterfaceSpec::parse(s).unwrap().pick(&a);
        assert_eq!(pick("eth0"), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(pick("eth0:inet6"), Some("fe80::1".parse().unwrap()));
        assert_eq!(pick("br-abc"), Some("172.18.0.1".parse().unwrap()));
        assert_eq!(pick("lo"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(pick("10.0.0.0/8"), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(pick("static:1.2.3.4"), Some("1.2.3.4".parse().unwrap()));
        // `inet` skips loopback; sorted by name, br-abc comes first.
        assert_eq!(pick("inet"), Some("172.18.0.1".parse().unwrap()));
        assert_eq!(pick("eth0[1]"), Some("fe80::1".parse().unwrap()));
        assert_eq!(pick("eth1"), None);
    }

    #[test]
    fn bad_specs_say_why() {
        assert!(InterfaceSpec::parse("eth0:ipx")
            .unwrap_err()
            .contains("inet"));
        assert!(InterfaceSpec::parse("static:nope").is_err());
        assert!(InterfaceSpec::parse("10.0.0.0/40").is_err());
        let err = resolve_from(&[InterfaceSpec::parse("eth9").unwrap()], &addrs()).unwrap_err();
        assert!(
            err.contains("eth9") && err.contains("eth0:10.0.0.5"),
            "{err}"
        );
    }
}
