//! Consul DNS, end to end: an in-process server with a registered catalog,
//! `dns::serve` on 127.0.0.1 (UDP and TCP on one port), queried with the real
//! `dig` (Debian `bind9-dnsutils`); one test runs a real `pilotfish agent
//! --dev` with the `--dns-*` flags. Without `dig` the tests are skipped, or
//! fail under `CI` so a missing install step cannot pass unnoticed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

// Only the single-agent harness is used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::agent::{free_port, Agent};
use pilotfish::discovery::server::dns::{self, DnsConfig};
use pilotfish::discovery::server::state::catalog::{Registration, Service, Weights};
use pilotfish::discovery::server::state::checks::{CheckStatus, HealthCheck};
use pilotfish::discovery::server::state::Command;
use pilotfish::discovery::server::{Server, ServerConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- harness

/// One DNS server on a loopback port; stops when dropped.
struct Dns {
    port: u16,
    server: Server,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Dns {
    async fn start(domain: &str, recursors: Vec<SocketAddr>) -> Dns {
        Dns::start_with(domain, recursors, DnsConfig::default()).await
    }

    async fn start_with(domain: &str, recursors: Vec<SocketAddr>, config: DnsConfig) -> Dns {
        let server = Server::open(ServerConfig {
            node: "pilot".into(),
            datacenter: "dc1".into(),
            domain: domain.into(),
            advertise: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            data_dir: None,
            enable_script_checks: false,
            recursors,
            snapshot_threshold: pilotfish::discovery::server::raft::compaction::SNAPSHOT_THRESHOLD,
        })
        .await
        .unwrap();
        let (udp, tcp) = bind_pair().await;
        let port = udp.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dns::serve(
            udp,
            tcp,
            server.clone(),
            config,
            shutdown.clone(),
        ));
        Dns {
            port,
            server,
            shutdown,
            task,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn register(
        &self,
        node: &str,
        address: &str,
        service: Option<Service>,
        status: Option<CheckStatus>,
    ) {
        let checks = match (&service, status) {
            (Some(s), Some(status)) => vec![HealthCheck {
                service_id: s.id.clone(),
                check_type: "ttl".into(),
                ..HealthCheck::new(node, &format!("service:{}", s.id), "check", status)
            }],
            _ => Vec::new(),
        };
        self.server
            .write(Command::Register(Registration {
                node: node.into(),
                node_id: String::new(),
                address: address.into(),
                tagged_addresses: BTreeMap::new(),
                node_meta: BTreeMap::new(),
                skip_node_update: false,
                service,
                checks,
            }))
            .await
            .unwrap();
    }

    async fn dig(&self, args: &[&str]) -> Reply {
        dig(self.port, args).await
    }
}

/// UDP and TCP on the same port, as Consul serves them.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

fn service(id: &str, name: &str, tags: &[&str], address: &str, port: u16) -> Service {
    Service {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        address: address.into(),
        ..Service::new(id, name, port)
    }
}

/// The catalog most tests query:
/// - `web`: web1 on n1 (10.0.0.1, tag primary, passing), web2 on n2
///   (10.0.0.2, tag replica, warning, weights 10/3), web3 on n3 (10.0.0.3,
///   critical: never answered), web4 on n4 with its own address 192.168.0.10;
/// - `many`: ten passing instances on m0..m9 (10.1.0.0–9);
/// - node `Mixed-Case` (10.0.0.9) with meta rack=r1.
async fn populated(recursors: Vec<SocketAddr>) -> Dns {
    populated_with(recursors, DnsConfig::default()).await
}

async fn populated_with(recursors: Vec<SocketAddr>, config: DnsConfig) -> Dns {
    let dns = Dns::start_with("consul.", recursors, config).await;
    dns.register(
        "n1",
        "10.0.0.1",
        Some(service("web1", "web", &["primary"], "", 80)),
        Some(CheckStatus::Passing),
    )
    .await;
    let mut web2 = service("web2", "web", &["replica"], "", 81);
    web2.weights = Weights {
        passing: 10,
        warning: 3,
    };
    dns.register("n2", "10.0.0.2", Some(web2), Some(CheckStatus::Warning))
        .await;
    dns.register(
        "n3",
        "10.0.0.3",
        Some(service("web3", "web", &[], "", 82)),
        Some(CheckStatus::Critical),
    )
    .await;
    dns.register(
        "n4",
        "10.0.0.4",
        Some(service("web4", "web", &[], "192.168.0.10", 83)),
        Some(CheckStatus::Passing),
    )
    .await;
    for i in 0..10 {
        dns.register(
            &format!("m{i}"),
            &format!("10.1.0.{i}"),
            Some(service(&format!("many{i}"), "many", &[], "", 9000)),
            None,
        )
        .await;
    }
    dns.server
        .write(Command::Register(Registration {
            node: "Mixed-Case".into(),
            node_id: String::new(),
            address: "10.0.0.9".into(),
            tagged_addresses: BTreeMap::new(),
            node_meta: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
            skip_node_update: false,
            service: None,
            checks: Vec::new(),
        }))
        .await
        .unwrap();
    dns
}

/// The "recursor": a second server of ours, authoritative for `other.`,
/// with `api` passing on node u1 (10.8.0.1).
async fn upstream() -> Dns {
    let upstream = Dns::start("other.", Vec::new()).await;
    upstream
        .register(
            "u1",
            "10.8.0.1",
            Some(service("api1", "api", &[], "", 443)),
            Some(CheckStatus::Passing),
        )
        .await;
    upstream
}

// ---------------------------------------------------------------- dig

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rr {
    name: String,
    ttl: String,
    rtype: String,
    data: String,
}

/// What dig printed, split into the parts the tests look at.
#[derive(Debug, Default)]
struct Reply {
    status: String,
    flags: Vec<String>,
    answer: Vec<Rr>,
    authority: Vec<Rr>,
    additional: Vec<Rr>,
    text: String,
}

impl Reply {
    fn data(&self, rtype: &str) -> BTreeSet<String> {
        self.answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect()
    }

    /// `(name, type, data)` of each record of a section, in order.
    fn rrs(section: &[Rr]) -> Vec<(&str, &str, &str)> {
        section
            .iter()
            .map(|a| (a.name.as_str(), a.rtype.as_str(), a.data.as_str()))
            .collect()
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// NXDOMAIN/NODATA carry `consul. 0 IN SOA ns.consul. hostmaster.consul. <serial> 3600 600 86400 0`.
    fn assert_soa_authority(&self) {
        assert_eq!(
            self.authority.len(),
            1,
            "one SOA in authority:\n{}",
            self.text
        );
        let soa = &self.authority[0];
        assert_eq!(
            (soa.name.as_str(), soa.ttl.as_str(), soa.rtype.as_str()),
            ("consul.", "0", "SOA"),
            "{}",
            self.text
        );
        let fields: Vec<&str> = soa.data.split_whitespace().collect();
        assert_eq!(fields.len(), 7, "{}", self.text);
        assert_eq!((fields[0], fields[1]), ("ns.consul.", "hostmaster.consul."));
        assert!(
            fields[2].parse::<u32>().unwrap() > 1_600_000_000,
            "serial is the Unix time"
        );
        assert_eq!(&fields[3..], ["3600", "600", "86400", "0"], "{}", self.text);
    }
}

fn dig_present() -> bool {
    match std::process::Command::new("dig").arg("-v").output() {
        Ok(_) => true,
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("`dig` is not installed: install the Debian package bind9-dnsutils")
        }
        Err(_) => {
            eprintln!("skipping: `dig` is not installed (Debian package bind9-dnsutils)");
            false
        }
    }
}

async fn dig(port: u16, args: &[&str]) -> Reply {
    let out = tokio::process::Command::new("dig")
        .arg("@127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(["+tries=1", "+time=4"])
        .args(args)
        .output()
        .await
        .expect("running dig (Debian package bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

fn parse_dig(text: &str) -> Reply {
    let mut reply = Reply {
        text: text.to_string(),
        ..Reply::default()
    };
    let mut section: Option<&str> = None;
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            reply.status = rest.split(',').next().unwrap_or_default().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or_default();
            reply.flags = flags.split_whitespace().map(str::to_string).collect();
        }
        match line {
            ";; ANSWER SECTION:" => section = Some("answer"),
            ";; AUTHORITY SECTION:" => section = Some("authority"),
            ";; ADDITIONAL SECTION:" => section = Some("additional"),
            "" => section = None,
            _ if line.starts_with(';') => {}
            _ => {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 4 {
                    continue;
                }
                let rr = Rr {
                    name: fields[0].to_string(),
                    ttl: fields[1].to_string(),
                    rtype: fields[3].to_string(),
                    data: fields[4..].join(" "),
                };
                match section {
                    Some("answer") => reply.answer.push(rr),
                    Some("authority") => reply.authority.push(rr),
                    Some("additional") => reply.additional.push(rr),
                    _ => {}
                }
            }
        }
    }
    reply
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_a_records_skip_critical_and_keep_warning() {
    if !dig_present() {
        return;
    }
    let dns = populated(Vec::new()).await;
    let r = dns.dig(&["web.service.consul", "A"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert!(r.has_flag("aa"), "authoritative: {}", r.text);
    assert!(!r.has_flag("ra"), "no recursors, no RA: {}", r.text);
    assert_eq!(
        r.data("A"),
        set(&["10.0.0.1", "10.0.0.2", "192.168.0.10"]),
        "{}",
        r.text
    );
    assert!(
        r.answer
            .iter()
            .all(|a| a.name == "web.service.consul." && a.ttl == "0"),
        "{}",
        r.text
    );
    assert!(r.authority.is_empty(), "no SOA with answers: {}", r.text);

    // Optional datacenter label, case-insensitive names, owner echoes the question.
    let r = dns.dig(&["WEB.Service.DC1.Consul", "A"]).await;
    assert_eq!(
        r.data("A"),
        set(&["10.0.0.1", "10.0.0.2", "192.168.0.10"]),
        "{}",
        r.text
    );
    assert!(
        r.answer.iter().all(|a| a.name == "WEB.Service.DC1.Consul."),
        "{}",
        r.text
    );

    // ANY answers with the addresses.
    let r = dns.dig(&["web.service.consul", "ANY"]).await;
    assert_eq!(
        r.data("A"),
        set(&["10.0.0.1", "10.0.0.2", "192.168.0.10"]),
        "{}",
        r.text
    );

    // Critical everywhere: the instance is gone, and a critical node check hides it too.
    dns.server
        .write(Command::UpdateCheck {
            node: "n1".into(),
            check_id: "serfHealth".into(),
            status: CheckStatus::Critical,
            output: "down".into(),
        })
        .await
        .unwrap();
    let r = dns.dig(&["web.service.consul", "A"]).await;
    assert_eq!(
        r.data("A"),
        set(&["10.0.0.2", "192.168.0.10"]),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_rfc2782_names() {
    if !dig_present() {
        return;
    }
    let dns = populated(Vec::new()).await;
    let r = dns.dig(&["primary.web.service.consul"]).await;
    assert_eq!(r.data("A"), set(&["10.0.0.1"]), "{}", r.text);
    let r = dns.dig(&["Replica.web.service.dc1.consul"]).await;
    assert_eq!(
        r.data("A"),
        set(&["10.0.0.2"]),
        "tags are case-insensitive: {}",
        r.text
    );
    let r = dns.dig(&["nosuchtag.web.service.consul"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    r.assert_soa_authority();

    let r = dns.dig(&["_web._primary.service.consul", "SRV"]).await;
    assert_eq!(
        r.data("SRV"),
        set(&["1 1 80 n1.node.dc1.consul."]),
        "{}",
        r.text
    );
    let r = dns.dig(&["_web._tcp.service.consul", "SRV"]).await;
    assert_eq!(r.answer.len(), 3, "_tcp filters nothing: {}", r.text);
    let r = dns.dig(&["_web._tcp.consul", "SRV"]).await;
    assert_eq!(r.answer.len(), 3, "service label is optional: {}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_targets_weights_and_additional_addresses() {
    if !dig_present() {
        return;
    }
    let dns = populated(Vec::new()).await;
    let r = dns.dig(&["web.service.consul", "SRV"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert_eq!(
        r.data("SRV"),
        set(&[
            "1 1 80 n1.node.dc1.consul.",
            // A warning instance weighs Weights.Warning.
            "1 3 81 n2.node.dc1.consul.",
            // An instance with its own IP is reached through its addr name.
            "1 1 83 c0a8000a.addr.dc1.consul.",
        ]),
        "{}",
        r.text
    );
    let additional: BTreeSet<(String, String)> = r
        .additional
        .iter()
        .filter(|a| a.rtype == "A")
        .map(|a| (a.name.clone(), a.data.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("n1.node.dc1.consul.", "10.0.0.1"),
        ("n2.node.dc1.consul.", "10.0.0.2"),
        ("c0a8000a.addr.dc1.consul.", "192.168.0.10"),
    ]
    .iter()
    .map(|(n, a)| (n.to_string(), a.to_string()))
    .collect();
    assert_eq!(additional, expected, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_addrs_apex_and_reverse() {
    if !dig_present() {
        return;
    }
    let dns = populated(Vec::new()).await;
    let r = dns.dig(&["n1.node.consul"]).await;
    assert_eq!(r.data("A"), set(&["10.0.0.1"]), "{}", r.text);
    let r = dns.dig(&["mixed-case.NODE.dc1.consul"]).await;
    assert_eq!(
        r.data("A"),
        set(&["10.0.0.9"]),
        "node names are case-insensitive: {}",
        r.text
    );
    let r = dns.dig(&["Mixed-Case.node.consul", "TXT"]).await;
    assert_eq!(r.data("TXT"), set(&["\"rack=r1\""]), "{}", r.text);
    let r = dns.dig(&["ghost.node.consul"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    r.assert_soa_authority();

    let r = dns.dig(&["c0a80001.addr.consul", "A"]).await;
    assert_eq!(r.data("A"), set(&["192.168.0.1"]), "{}", r.text);
    let r = dns
        .dig(&["20010db8000000000000000000000001.addr.dc1.consul", "AAAA"])
        .await;
    assert_eq!(r.data("AAAA"), set(&["2001:db8::1"]), "{}", r.text);
    let r = dns.dig(&["xyz.addr.consul", "A"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);

    let r = dns.dig(&["consul.", "SOA"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert_eq!(r.answer.len(), 1, "{}", r.text);
    assert_eq!(r.answer[0].rtype, "SOA", "{}", r.text);
    // The NS of the domain next to the SOA, its address as glue.
    assert_eq!(r.authority.len(), 1, "{}", r.text);
    assert_eq!(
        (r.authority[0].rtype.as_str(), r.authority[0].data.as_str()),
        ("NS", "pilot.node.dc1.consul."),
        "{}",
        r.text
    );
    assert_eq!(
        Reply::rrs(&r.additional),
        [("pilot.node.dc1.consul.", "A", "127.0.0.1")],
        "{}",
        r.text
    );
    let r = dns.dig(&["consul.", "NS"]).await;
    assert_eq!(r.data("NS"), set(&["pilot.node.dc1.consul."]), "{}", r.text);
    assert_eq!(r.answer[0].name, "consul.", "{}", r.text);
    assert_eq!(
        Reply::rrs(&r.additional),
        [("pilot.node.dc1.consul.", "A", "127.0.0.1")],
        "glue: {}",
        r.text
    );

    let r = dns.dig(&["-x", "10.0.0.1"]).await;
    assert_eq!(r.data("PTR"), set(&["n1.node.dc1.consul."]), "{}", r.text);
    assert!(r.has_flag("aa"), "{}", r.text);
    // No node has the address, a service instance does.
    let r = dns.dig(&["-x", "192.168.0.10"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert_eq!(
        r.data("PTR"),
        set(&["web.service.dc1.consul."]),
        "{}",
        r.text
    );

    // `consul.service` names the servers.
    let r = dns.dig(&["consul.service.consul", "SRV"]).await;
    assert_eq!(
        r.data("SRV"),
        set(&["1 1 8300 pilot.node.dc1.consul."]),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_versus_nodata() {
    if !dig_present() {
        return;
    }
    let dns = populated(Vec::new()).await;
    for name in [
        "nosuch.service.consul",
        "web.service.dc2.consul",
        "web.query.consul",
        "what.consul",
        "a.b.web.service.dc1.extra.consul",
    ] {
        let r = dns.dig(&[name, "A"]).await;
        assert_eq!(r.status, "NXDOMAIN", "{name}: {}", r.text);
        assert!(r.has_flag("aa"), "{name}: {}", r.text);
        assert!(r.answer.is_empty(), "{name}: {}", r.text);
        r.assert_soa_authority();
    }
    // Only critical instances: NXDOMAIN like an unknown service.
    dns.register(
        "n5",
        "10.0.0.5",
        Some(service("down1", "down", &[], "", 1)),
        Some(CheckStatus::Critical),
    )
    .await;
    let r = dns.dig(&["down.service.consul"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);

    // Known names without the asked type: NOERROR, empty, SOA in authority.
    for (name, qtype) in [
        ("web.service.consul", "AAAA"),
        ("web.service.consul", "MX"),
        ("n1.node.consul", "AAAA"),
        ("n1.node.consul", "MX"),
        ("c0a80001.addr.consul", "AAAA"),
    ] {
        let r = dns.dig(&[name, qtype]).await;
        assert_eq!(r.status, "NOERROR", "{name} {qtype}: {}", r.text);
        assert!(r.answer.is_empty(), "{name} {qtype}: {}", r.text);
        r.assert_soa_authority();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answer_cap_edns_and_tcp() {
    if !dig_present() {
        return;
    }
    let dns = populated(Vec::new()).await;
    let r = dns.dig(&["+noedns", "many.service.consul"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert_eq!(r.answer.len(), 3, "3 answers without EDNS: {}", r.text);
    assert!(!r.has_flag("tc"), "Consul does not set TC: {}", r.text);

    let r = dns.dig(&["+bufsize=4096", "many.service.consul"]).await;
    assert_eq!(r.answer.len(), 10, "EDNS lifts the cap: {}", r.text);
    assert!(
        r.text.contains("udp: 4096"),
        "OPT echoes the size: {}",
        r.text
    );

    let r = dns.dig(&["+noedns", "many.service.consul", "SRV"]).await;
    assert_eq!(r.answer.len(), 3, "{}", r.text);
    let targets: BTreeSet<String> = r
        .answer
        .iter()
        .map(|a| a.data.split_whitespace().last().unwrap().to_string())
        .collect();
    let extra: BTreeSet<String> = r.additional.iter().map(|a| a.name.clone()).collect();
    assert_eq!(
        targets, extra,
        "additional follows the kept targets: {}",
        r.text
    );

    let r = dns.dig(&["+tcp", "+noedns", "many.service.consul"]).await;
    assert_eq!(r.answer.len(), 10, "no cap over TCP: {}", r.text);
    let r = dns.dig(&["+tcp", "web.service.consul", "SRV"]).await;
    assert_eq!(r.answer.len(), 3, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_shuffled() {
    if !dig_present() {
        return;
    }
    let dns = populated(Vec::new()).await;
    let mut orders = BTreeSet::new();
    let mut capped = BTreeSet::new();
    for _ in 0..20 {
        let r = dns.dig(&["+bufsize=4096", "many.service.consul"]).await;
        let order: Vec<String> = r.answer.iter().map(|a| a.data.clone()).collect();
        assert_eq!(order.len(), 10, "{}", r.text);
        orders.insert(order);
        let r = dns.dig(&["+noedns", "many.service.consul"]).await;
        capped.insert(r.data("A"));
    }
    assert!(orders.len() > 1, "20 answers in one order: {orders:?}");
    assert!(
        capped.len() > 1,
        "the 3 kept answers never change: {capped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_domain_without_recursors_is_refused() {
    if !dig_present() {
        return;
    }
    let dns = populated(Vec::new()).await;
    let r = dns.dig(&["example.com", "A"]).await;
    assert_eq!(r.status, "REFUSED", "{}", r.text);
    let r = dns.dig(&["+tcp", "example.com", "A"]).await;
    assert_eq!(r.status, "REFUSED", "{}", r.text);
    // A reverse name nobody has is not ours either.
    let r = dns.dig(&["-x", "10.9.9.9"]).await;
    assert_eq!(r.status, "REFUSED", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursors_answer_other_names() {
    if !dig_present() {
        return;
    }
    let upstream = upstream().await;
    // A dead recursor first: the next one answers.
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let dns = populated(vec![dead_addr, upstream.addr()]).await;

    let r = dns.dig(&["api.service.other", "A"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert_eq!(r.data("A"), set(&["10.8.0.1"]), "{}", r.text);
    assert!(r.has_flag("ra"), "recursion available: {}", r.text);
    assert!(
        !r.has_flag("aa"),
        "not authoritative for other names: {}",
        r.text
    );

    let r = dns.dig(&["+tcp", "api.service.other", "A"]).await;
    assert_eq!(r.data("A"), set(&["10.8.0.1"]), "over TCP: {}", r.text);

    // The recursor's NXDOMAIN and its SOA are relayed.
    let r = dns.dig(&["nope.service.other", "A"]).await;
    assert_eq!(r.status, "NXDOMAIN", "{}", r.text);
    assert_eq!(
        r.authority.first().map(|a| a.name.as_str()),
        Some("other."),
        "{}",
        r.text
    );

    // Our own names are still ours.
    let r = dns.dig(&["web.service.consul", "A"]).await;
    assert!(r.has_flag("aa") && r.has_flag("ra"), "{}", r.text);

    // Every recursor dead: SERVFAIL, not silence.
    let lonely = Dns::start("consul.", vec![dead_addr]).await;
    let r = lonely.dig(&["api.service.other", "A"]).await;
    assert_eq!(r.status, "SERVFAIL", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_do_not_stop_the_server() {
    if !dig_present() {
        return;
    }
    use hickory_proto::op::{Message, ResponseCode};

    let dns = populated(Vec::new()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(dns.addr()).await.unwrap();
    // Shorter than a header: dropped.
    client.send(b"\x01\x02\x03").await.unwrap();
    client.send(&[0xff; 7]).await.unwrap();
    // A header promising a question that is not there: FORMERR.
    let header = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let mut broken = header.to_vec();
    broken.extend_from_slice(&[0x05, b'a', b'b']);
    client.send(&broken).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(3), client.recv(&mut buf))
        .await
        .expect("an answer to a broken question")
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // Random junk of every length.
    for len in 0..64u8 {
        let junk: Vec<u8> = (0..len)
            .map(|i| i.wrapping_mul(37).wrapping_add(len))
            .collect();
        client.send(&junk).await.unwrap();
    }
    // Junk over TCP as well.
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(dns.addr()).await.unwrap();
        tcp.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xff])
            .await
            .unwrap();
    }

    let r = dns.dig(&["web.service.consul", "A"]).await;
    assert_eq!(r.status, "NOERROR", "still answering: {}", r.text);
    let r = dns.dig(&["+tcp", "web.service.consul", "A"]).await;
    assert_eq!(r.status, "NOERROR", "still answering over TCP: {}", r.text);
    assert!(!dns.task.is_finished(), "serve is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_on_shutdown() {
    let dns = Dns::start("consul.", Vec::new()).await;
    dns.shutdown.cancel();
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        while !dns.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "serve did not return after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_addresses_are_resolved() {
    if !dig_present() {
        return;
    }
    // Its node u1 is the host the hostnames name.
    let upstream = upstream().await;
    let dns = populated(vec![upstream.addr()]).await;
    // Outside the domain: resolved through the recursor.
    dns.register(
        "h1",
        "10.0.0.21",
        Some(service("ext1", "ext", &[], "u1.node.other", 8080)),
        None,
    )
    .await;
    // Inside the domain: resolved from the catalog.
    dns.register(
        "h2",
        "10.0.0.22",
        Some(service("int1", "int", &[], "n1.node.consul", 8081)),
        None,
    )
    .await;
    // A node whose address is a hostname.
    dns.register("alias", "u1.node.other", None, None).await;

    let r = dns.dig(&["ext.service.consul", "A"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert_eq!(
        Reply::rrs(&r.answer),
        [
            ("ext.service.consul.", "CNAME", "u1.node.other."),
            ("u1.node.other.", "A", "10.8.0.1"),
        ],
        "{}",
        r.text
    );

    let r = dns.dig(&["int.service.consul", "A"]).await;
    assert_eq!(
        Reply::rrs(&r.answer),
        [
            ("int.service.consul.", "CNAME", "n1.node.consul."),
            ("n1.node.consul.", "A", "10.0.0.1"),
        ],
        "{}",
        r.text
    );

    let r = dns.dig(&["+tcp", "alias.node.consul", "A"]).await;
    assert_eq!(r.data("CNAME"), set(&["u1.node.other."]), "{}", r.text);
    assert_eq!(r.data("A"), set(&["10.8.0.1"]), "{}", r.text);

    // SRV: the hostname is the target, its address goes in additional.
    let r = dns.dig(&["ext.service.consul", "SRV"]).await;
    assert_eq!(
        r.data("SRV"),
        set(&["1 1 8080 u1.node.other."]),
        "{}",
        r.text
    );
    assert_eq!(
        Reply::rrs(&r.additional),
        [("u1.node.other.", "A", "10.8.0.1")],
        "{}",
        r.text
    );

    // Without recursors an outside hostname stays a bare CNAME.
    let alone = populated(Vec::new()).await;
    alone
        .register(
            "h1",
            "10.0.0.21",
            Some(service("ext1", "ext", &[], "u1.node.other", 8080)),
            None,
        )
        .await;
    let r = alone.dig(&["ext.service.consul", "A"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert_eq!(r.answer.len(), 1, "{}", r.text);
    assert_eq!(r.data("CNAME"), set(&["u1.node.other."]), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_config_options() {
    if !dig_present() {
        return;
    }
    let dns = populated_with(
        Vec::new(),
        DnsConfig {
            only_passing: true,
            enable_truncate: true,
            udp_answer_limit: 2,
            a_record_limit: 4,
            node_ttl: 30,
            service_ttl: 10,
        },
    )
    .await;
    // only_passing: the warning instance web2 (10.0.0.2) is gone too.
    let r = dns.dig(&["web.service.consul", "A"]).await;
    assert_eq!(
        r.data("A"),
        set(&["10.0.0.1", "192.168.0.10"]),
        "{}",
        r.text
    );
    assert!(!r.has_flag("tc"), "nothing was cut: {}", r.text);
    assert!(
        r.answer.iter().all(|a| a.ttl == "10"),
        "service_ttl: {}",
        r.text
    );

    // udp_answer_limit 2 with enable_truncate: two answers and TC.
    let r = dns
        .dig(&["+noedns", "+ignore", "many.service.consul"])
        .await;
    assert_eq!(r.answer.len(), 2, "{}", r.text);
    assert!(r.has_flag("tc"), "cut answers set TC: {}", r.text);

    // a_record_limit caps A answers on any transport.
    let r = dns.dig(&["+tcp", "many.service.consul"]).await;
    assert_eq!(r.answer.len(), 4, "{}", r.text);
    assert!(!r.has_flag("tc"), "{}", r.text);
    let r = dns.dig(&["+bufsize=4096", "many.service.consul"]).await;
    assert_eq!(r.answer.len(), 4, "{}", r.text);
    // ... but not SRV.
    let r = dns.dig(&["+tcp", "many.service.consul", "SRV"]).await;
    assert_eq!(r.answer.len(), 10, "{}", r.text);

    // node_ttl on node answers and NS, service_ttl on SRV and its additionals.
    let r = dns.dig(&["n1.node.consul"]).await;
    assert_eq!(r.answer[0].ttl, "30", "{}", r.text);
    let r = dns.dig(&["consul.", "NS"]).await;
    assert_eq!(r.answer[0].ttl, "30", "{}", r.text);
    let r = dns.dig(&["web.service.consul", "SRV"]).await;
    assert!(
        r.answer.iter().chain(&r.additional).all(|a| a.ttl == "10"),
        "{}",
        r.text
    );
}

/// The `--dns-*` flags of `pilotfish agent` reach its DNS server: a real
/// agent process, services registered through its HTTP API, `dig` against
/// its DNS port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_dns_flags_shape_a_real_agents_answers() {
    if !dig_present() {
        return;
    }
    let (udp, tcp) = bind_pair().await;
    let dns_port = udp.local_addr().unwrap().port();
    drop((udp, tcp));
    let (ip, dns_port) = ("127.0.0.1", dns_port);
    let agent = Agent::on(ip)
        .ports(free_port(ip), dns_port, free_port(ip))
        .args([
            "--dev",
            "--node",
            "flags",
            "--bind",
            ip,
            "--log-level",
            "warn",
        ])
        .args(["--dns-udp-answer-limit", "1", "--dns-enable-truncate"])
        .args(["--dns-only-passing"])
        .args(["--dns-node-ttl", "1m", "--dns-service-ttl", "15s"])
        .start();
    pilotfish::discovery::server::tls::install_default_provider();
    let http = reqwest::Client::new();
    let base = agent.url("");
    for (i, status) in [(1, "passing"), (2, "passing"), (3, "warning")] {
        let body = format!(
            r#"{{"ID":"web{i}","Name":"web","Address":"10.0.0.{i}","Port":80,
                 "Check":{{"TTL":"1m","Status":"{status}"}}}}"#
        );
        let r = http
            .put(format!("{base}/v1/agent/service/register"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "register web{i}: {}", r.status());
    }

    // --dns-only-passing drops the warning instance; over TCP nothing is cut.
    let r = dig(dns_port, &["+tcp", "web.service.consul", "A"]).await;
    assert_eq!(r.data("A"), set(&["10.0.0.1", "10.0.0.2"]), "{}", r.text);
    // --dns-service-ttl 15s.
    assert!(r.answer.iter().all(|a| a.ttl == "15"), "{}", r.text);
    // --dns-udp-answer-limit 1 with --dns-enable-truncate: one answer and TC.
    let r = dig(dns_port, &["+noedns", "+ignore", "web.service.consul", "A"]).await;
    assert_eq!(r.answer.len(), 1, "{}", r.text);
    assert!(r.has_flag("tc"), "{}", r.text);
    // --dns-node-ttl 1m.
    let r = dig(dns_port, &["flags.node.consul", "A"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
    assert_eq!(r.answer[0].ttl, "60", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_versions_above_zero_get_badvers() {
    if !dig_present() {
        return;
    }
    let dns = populated(vec![]).await;
    for transport in ["+notcp", "+tcp"] {
        let r = dns
            .dig(&[
                "+edns=1",
                "+noednsneg",
                transport,
                "web.service.consul",
                "A",
            ])
            .await;
        assert_eq!(r.status, "BADVERS", "{transport}: {}", r.text);
        assert!(r.answer.is_empty(), "{}", r.text);
        // The OPT record of the answer names the version we speak.
        assert!(r.text.contains("EDNS: version: 0"), "{}", r.text);
    }
    let r = dns.dig(&["+edns=0", "web.service.consul", "A"]).await;
    assert_eq!(r.status, "NOERROR", "{}", r.text);
}
