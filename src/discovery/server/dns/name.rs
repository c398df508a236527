//! What a name inside the Consul domain asks for (consul-wire.md §8.1): the
//! pure parse of the labels left of the domain into a [`Lookup`]. No state,
//! no I/O; the caller has already lower-cased the name and cut the domain off.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One question about the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The domain itself (`consul.`): SOA and NS.
    Apex,
    /// `[<tag>.]<svc>.service[.<dc>]` and `_<svc>._<tag|tcp>[.service][.<dc>]`.
    Service { name: String, tag: Option<String> },
    /// `<node>.node[.<dc>]`; node names may contain dots.
    Node { name: String },
    /// `<hex>.addr[.<dc>]`.
    Addr(IpAddr),
    /// Malformed, another datacenter, or a kind we do not serve
    /// (prepared queries, connect): NXDOMAIN.
    Invalid,
}

/// The label that says which kind of lookup a name is, searched from the
/// right like Consul does, so `<tag>.<svc>.service.<dc>` finds `service`.
const KINDS: [&str; 7] = [
    "service", "node", "addr", "query", "connect", "ingress", "virtual",
];

/// Parse `labels` (lower-cased, left to right, the domain removed) for a
/// server in `datacenter`.
pub fn parse(labels: &[&str], datacenter: &str) -> Lookup {
    if labels.is_empty() {
        return Lookup::Apex;
    }
    let Some(at) = labels.iter().rposition(|l| KINDS.contains(l)) else {
        // Newer Consul: RFC 2782 names may leave out the `service` label.
        return match labels {
            [svc, proto] => rfc2782(svc, proto),
            [svc, proto, dc] if dc.eq_ignore_ascii_case(datacenter) => rfc2782(svc, proto),
            _ => Lookup::Invalid,
        };
    };
    match &labels[at + 1..] {
        [] => {}
        [dc] if dc.eq_ignore_ascii_case(datacenter) => {}
        _ => return Lookup::Invalid,
    }
    let parts = &labels[..at];
    match labels[at] {
        "service" => service(parts),
        "node" if !parts.is_empty() => Lookup::Node {
            name: parts.join("."),
        },
        "addr" => match parts {
            [hex] => decode_addr(hex).map_or(Lookup::Invalid, Lookup::Addr),
            _ => Lookup::Invalid,
        },
        _ => Lookup::Invalid,
    }
}

fn service(parts: &[&str]) -> Lookup {
    match parts {
        [svc, proto] if svc.starts_with('_') && proto.starts_with('_') => rfc2782(svc, proto),
        [] => Lookup::Invalid,
        [tags @ .., svc] => {
            if svc.is_empty() {
                return Lookup::Invalid;
            }
            Lookup::Service {
                name: svc.to_string(),
                // Tags may contain dots: every label left of the name is the tag.
                tag: (!tags.is_empty()).then(|| tags.join(".")),
            }
        }
    }
}

/// `_<svc>._<proto>`: `_tcp` means no tag filter, any other `_x` filters on
/// tag `x` (so `_udp` filters on the tag "udp", as Consul does).
fn rfc2782(svc: &str, proto: &str) -> Lookup {
    let (Some(name), Some(tag)) = (svc.strip_prefix('_'), proto.strip_prefix('_')) else {
        return Lookup::Invalid;
    };
    if name.is_empty() || tag.is_empty() {
        return Lookup::Invalid;
    }
    Lookup::Service {
        name: name.to_string(),
        tag: (tag != "tcp").then(|| tag.to_string()),
    }
}

/// 8 hex digits are an IPv4 address, 32 an IPv6 one.
fn decode_addr(hex: &str) -> Option<IpAddr> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    match bytes.len() {
        4 if hex.len() == 8 => {
            let octets: [u8; 4] = bytes.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        16 if hex.len() == 32 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// The `<hex>.addr` label of an address (SRV targets for service addresses).
pub fn encode_addr(ip: IpAddr) -> String {
    let octets: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    octets.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(name: &str) -> Lookup {
        let labels: Vec<&str> = if name.is_empty() {
            Vec::new()
        } else {
            name.split('.').collect()
        };
        parse(&labels, "dc1")
    }

    fn svc(name: &str, tag: Option<&str>) -> Lookup {
        Lookup::Service {
            name: name.into(),
            tag: tag.map(Into::into),
        }
    }

    #[test]
    fn service_forms() {
        assert_eq!(p("web.service"), svc("web", None));
        assert_eq!(p("web.service.dc1"), svc("web", None));
        assert_eq!(p("primary.web.service"), svc("web", Some("primary")));
        assert_eq!(p("v1.2.web.service.dc1"), svc("web", Some("v1.2")));
        assert_eq!(p("_web._tcp.service"), svc("web", None));
        assert_eq!(p("_web._udp.service"), svc("web", Some("udp")));
        assert_eq!(p("_web._primary.service.dc1"), svc("web", Some("primary")));
        assert_eq!(p("_web._tcp"), svc("web", None));
        assert_eq!(p("_web._tcp.dc1"), svc("web", None));
        assert_eq!(p("service"), Lookup::Invalid);
        assert_eq!(p("web.service.dc2"), Lookup::Invalid);
        assert_eq!(p("web.service.dc1.extra"), Lookup::Invalid);
        assert_eq!(p("web.query"), Lookup::Invalid);
        assert_eq!(p("web"), Lookup::Invalid);
        assert_eq!(p("_._tcp.service"), Lookup::Invalid);
        assert_eq!(p("_._tcp"), Lookup::Invalid);
    }

    #[test]
    fn node_addr_and_apex() {
        assert_eq!(p(""), Lookup::Apex);
        assert_eq!(p("n1.node"), Lookup::Node { name: "n1".into() });
        assert_eq!(
            p("host.example.node.dc1"),
            Lookup::Node {
                name: "host.example".into()
            }
        );
        assert_eq!(p("node"), Lookup::Invalid);
        assert_eq!(
            p("c0a80001.addr"),
            Lookup::Addr(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)))
        );
        assert_eq!(
            p("20010db8000000000000000000000001.addr.dc1"),
            Lookup::Addr("2001:db8::1".parse().unwrap())
        );
        assert_eq!(p("c0a8001.addr"), Lookup::Invalid);
        assert_eq!(p("zzzzzzzz.addr"), Lookup::Invalid);
        assert_eq!(p("c0a80001.c0a80001.addr"), Lookup::Invalid);
    }

    #[test]
    fn addr_round_trip() {
        for ip in ["10.1.2.3", "::1", "fe80::1:2"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(decode_addr(&encode_addr(ip)), Some(ip));
        }
        assert_eq!(encode_addr("192.168.0.1".parse().unwrap()), "c0a80001");
    }
}
