//! Resolving a join target's name to every address it stands for, for both
//! ends of a join: `pilotfish join NAME` (the CLI) and `--retry-join` or
//! `/v1/agent/join/NAME` (the server). Triton CNS and Docker's DNS answer a
//! service name with every instance, so all A/AAAA records count, not the
//! first. Nothing is cached: every retry sees the current record set.
//!
//! Below `cli` and `server` and independent of both; `--resolver` (a DNS
//! server's address) replaces the system's resolver config, for tests.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;

/// Every address of `host`, sorted and without repeats; an error when there
/// is none. `resolver` is the DNS server to ask instead of the system's.
pub async fn resolve_all(host: &str, resolver: Option<SocketAddr>) -> Result<Vec<IpAddr>, String> {
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    let builder = match resolver {
        Some(addr) => {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut server.connections {
                c.port = addr.port();
            }
            let cfg = ResolverConfig::from_name_servers(vec![server]);
            Resolver::builder_with_config(cfg, TokioRuntimeProvider::default())
        }
        None => Resolver::builder_tokio()
            .map_err(|e| format!("reading the system resolver config: {e}"))?,
    };
    let resolver = builder
        .with_options(opts)
        .build()
        .map_err(|e| format!("building the DNS resolver: {e}"))?;
    let answer = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?;
    let mut ips: Vec<IpAddr> = answer.iter().collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(format!("resolving {host}: no addresses"));
    }
    Ok(ips)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
    use tokio::net::UdpSocket;

    /// A DNS server on loopback that answers every A question with
    /// `addrs` (repeats included) and every other question with nothing.
    async fn fake_dns(addrs: &'static [&'static str]) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                for q in query.queries.iter() {
                    reply.add_query(q.clone());
                    if q.query_type() == RecordType::A {
                        for a in addrs {
                            reply.add_answer(Record::from_rdata(
                                q.name().clone(),
                                0,
                                RData::A(A(a.parse().unwrap())),
                            ));
                        }
                    }
                }
                let _ = sock.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        at
    }

    #[tokio::test]
    async fn a_name_stands_for_every_address_sorted_once() {
        let dns = fake_dns(&["10.0.0.3", "10.0.0.1", "10.0.0.3", "10.0.0.2"]).await;
        let ips = resolve_all("consul.example.", Some(dns)).await.unwrap();
        let want: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(ips, want);
    }

    #[tokio::test]
    async fn a_name_without_addresses_is_an_error() {
        let dns = fake_dns(&[]).await;
        let err = resolve_all("nobody.example.", Some(dns)).await.unwrap_err();
        assert!(err.starts_with("resolving nobody.example.: "), "{err}");
    }

    #[tokio::test]
    async fn an_address_is_itself() {
        // The fake server answers no A question with this: it is not asked.
        let dns = fake_dns(&[]).await;
        let ips = resolve_all("127.0.0.2", Some(dns)).await.unwrap();
        assert_eq!(ips, ["127.0.0.2".parse::<IpAddr>().unwrap()]);
    }
}
