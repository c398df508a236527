//! The records a [`Lookup`] answers with, read from the catalog state
//! (consul-wire.md §8.1–8.4): health filtering (any critical check hides an
//! instance, warning stays), shuffling, SRV targets and their additional
//! records, NXDOMAIN vs NODATA, the SOA and NS of the domain, PTR, and
//! Consul's UDP answer limits. No I/O: the state, the servers, the clock
//! reading and the random source are arguments. Hostname addresses become
//! CNAMEs (or SRV targets) whose resolution the caller adds afterwards
//! ([`Answer::unresolved`]), since it may take a recursor.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use super::name::{encode_addr, Lookup};
use super::DnsConfig;
use crate::discovery::server::state::checks::CheckStatus;
use crate::discovery::server::state::State;

/// Consul's `soa.min_ttl` default: the SOA record's TTL and its minimum.
const SOA_TTL: u32 = 0;
/// Consul's `maxUDPAnswerLimit`: `udp_answer_limit` is capped at this.
const MAX_UDP_ANSWER_LIMIT: usize = 8;
/// Consul names at most this many servers in an NS answer.
const MAX_NAMESERVERS: usize = 3;

/// A server agent as the NS records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNode {
    pub name: String,
    pub addr: IpAddr,
    /// The server RPC port (`--server-port`).
    pub port: u16,
}

/// Who this server is, in DNS terms.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The domain, lower-case and fully qualified (`consul.`).
    pub domain: Name,
    /// The same, as text with the trailing dot.
    pub domain_text: String,
    pub datacenter: String,
    /// The `--dns-*` flags.
    pub config: DnsConfig,
}

impl Zone {
    pub fn new(domain: &str, datacenter: &str, config: DnsConfig) -> Zone {
        let mut text = domain.trim_matches('.').to_ascii_lowercase();
        text.push('.');
        let domain = Name::from_ascii(&text).unwrap_or_else(|_| Name::root());
        let domain_text = if domain.is_root() {
            String::new()
        } else {
            text
        };
        Zone {
            domain,
            domain_text,
            datacenter: datacenter.to_string(),
            config,
        }
    }

    /// `<node>.node.<dc>.<domain>`: SRV targets, NS and PTR names.
    fn node_name(&self, node: &str) -> Option<Name> {
        fqdn(&format!(
            "{node}.node.{}.{}",
            self.datacenter, self.domain_text
        ))
    }

    /// `<svc>.service.<dc>.<domain>`: PTR names of service addresses.
    fn service_name(&self, service: &str) -> Option<Name> {
        fqdn(&format!(
            "{service}.service.{}.{}",
            self.datacenter, self.domain_text
        ))
    }

    /// `<hex>.addr.<dc>.<domain>`: SRV targets of instances with their own IP.
    fn addr_name(&self, ip: IpAddr) -> Option<Name> {
        fqdn(&format!(
            "{}.addr.{}.{}",
            encode_addr(ip),
            self.datacenter,
            self.domain_text
        ))
    }

    /// `<domain> 0 IN SOA ns.<domain> hostmaster.<domain> <unix time> 3600 600 86400 0`.
    pub fn soa(&self, now_secs: u64) -> Record {
        let ns = fqdn(&format!("ns.{}", self.domain_text)).unwrap_or_else(Name::root);
        let hostmaster =
            fqdn(&format!("hostmaster.{}", self.domain_text)).unwrap_or_else(Name::root);
        // The serial is 32 bits; Consul truncates the Unix time the same way.
        let serial = now_secs as u32;
        let soa = SOA::new(ns, hostmaster, serial, 3600, 600, 86400, SOA_TTL);
        Record::from_rdata(self.domain.clone(), SOA_TTL, RData::SOA(soa))
    }
}

fn fqdn(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The records of one response. The authority section is the zone's SOA
/// when there is no answer (NXDOMAIN or NODATA), else `authority` (the NS
/// records next to a SOA answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// Where the resolution of a hostname goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Right after the CNAME that names it.
    Answer,
    /// With the other SRV target addresses.
    Additional,
}

/// A hostname this answer names without its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub target: Name,
    /// A, or AAAA when the question asked for AAAA.
    pub qtype: RecordType,
    pub section: Section,
    /// The TTL the resolved records get (the CNAME's or the SRV's).
    pub ttl: u32,
}

impl Answer {
    pub fn nxdomain() -> Answer {
        Answer {
            code: ResponseCode::NXDomain,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        Answer {
            code: ResponseCode::NoError,
            answers,
            authority: Vec::new(),
            additionals,
        }
    }

    /// NXDOMAIN and NODATA carry the SOA in the authority section.
    pub fn needs_soa(&self) -> bool {
        self.answers.is_empty()
    }

    /// Hostnames named by a CNAME in the answers, or by an SRV target with
    /// no address in the additional section, each once, in answer order.
    pub fn unresolved(&self, qtype: RecordType) -> Vec<Unresolved> {
        let mut out: Vec<Unresolved> = Vec::new();
        let address_type = if qtype == RecordType::AAAA {
            RecordType::AAAA
        } else {
            RecordType::A
        };
        for r in &self.answers {
            let (target, section) = match &r.data {
                RData::CNAME(CNAME(target)) => (target, Section::Answer),
                RData::SRV(srv) if !self.additionals.iter().any(|a| a.name == srv.target) => {
                    (&srv.target, Section::Additional)
                }
                _ => continue,
            };
            if out.iter().any(|u| &u.target == target) {
                continue;
            }
            out.push(Unresolved {
                target: target.clone(),
                qtype: address_type,
                section,
                ttl: r.ttl,
            });
        }
        out
    }

    /// Add what `target` resolved to: after its CNAMEs in the answers, or
    /// in the additional section.
    pub fn add_resolution(&mut self, target: &Unresolved, records: Vec<Record>) {
        match target.section {
            Section::Additional => self.additionals.extend(records),
            Section::Answer => {
                let mut answers = Vec::with_capacity(self.answers.len() + records.len());
                for r in self.answers.drain(..) {
                    let names_target =
                        matches!(&r.data, RData::CNAME(CNAME(t)) if *t == target.target);
                    answers.push(r);
                    if names_target {
                        answers.extend(records.iter().cloned());
                    }
                }
                self.answers = answers;
            }
        }
    }

    /// Consul's UDP limits (§8.3): without EDNS at most
    /// `min(udp_answer_limit, 8)` answers, then as many as fit `max_bytes`.
    /// Additional records follow the SRV targets that are kept. True when
    /// answers were cut (the caller sets TC if `enable_truncate`).
    pub fn fit(&mut self, query: &Query, max_answers: Option<usize>, max_bytes: usize) -> bool {
        let before = self.answers.len();
        if let Some(max) = max_answers {
            self.keep(max.min(MAX_UDP_ANSWER_LIMIT));
        }
        // A message with up to three records and a sane name is far below
        // 512 bytes: skip measuring on the common path.
        let small = self.answers.len() + self.authority.len() + self.additionals.len() <= 3;
        if self.answers.len() <= 1 || small {
            return self.answers.len() < before;
        }
        if self.encoded_len(query, self.answers.len()) <= max_bytes {
            return self.answers.len() < before;
        }
        // Consul drops the NS section first.
        self.authority.clear();
        let (mut fits, mut too_big) = (1, self.answers.len());
        while too_big - fits > 1 {
            let mid = (fits + too_big) / 2;
            if self.encoded_len(query, mid) <= max_bytes {
                fits = mid;
            } else {
                too_big = mid;
            }
        }
        self.keep(fits);
        self.answers.len() < before
    }

    fn keep(&mut self, n: usize) {
        if self.answers.len() <= n {
            return;
        }
        self.answers.truncate(n);
        let targets: HashSet<&Name> = self
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(&srv.target),
                _ => None,
            })
            .collect();
        if !targets.is_empty() {
            self.additionals.retain(|r| targets.contains(&r.name));
        }
    }

    fn encoded_len(&self, query: &Query, answers: usize) -> usize {
        let mut probe = self.clone();
        probe.keep(answers);
        let mut msg = Message::response(0, hickory_proto::op::OpCode::Query);
        msg.add_query(query.clone());
        msg.add_answers(probe.answers);
        msg.add_authorities(probe.authority);
        msg.add_additionals(probe.additionals);
        msg.to_vec().map_or(usize::MAX, |bytes| bytes.len())
    }
}

/// Answer `lookup` of type `qtype`; `owner` is the question name as asked,
/// `servers` the alive server agents (NS records).
#[allow(clippy::too_many_arguments)] // each is one independent input of a pure function
pub fn lookup(
    state: &State,
    zone: &Zone,
    cache: &InstanceCache,
    lookup: &Lookup,
    qtype: RecordType,
    owner: &Name,
    servers: &[ServerNode],
    now_secs: u64,
    rng: &mut impl Rng,
) -> Answer {
    match lookup {
        Lookup::Invalid => Answer::nxdomain(),
        Lookup::Apex => apex(zone, servers, qtype, now_secs, rng),
        Lookup::Addr(ip) => {
            let answers = address_record(owner, &ip.to_string(), qtype, zone.config.node_ttl)
                .into_iter()
                .collect();
            Answer::records(answers, Vec::new())
        }
        Lookup::Node { name } => node(state, zone, name, qtype, owner),
        Lookup::Service { name, tag } => {
            service(state, zone, cache, name, tag.as_deref(), qtype, owner, rng)
        }
    }
}

/// The domain itself: SOA (with the NS records in authority), NS (with
/// their addresses as glue), or both for ANY.
fn apex(
    zone: &Zone,
    servers: &[ServerNode],
    qtype: RecordType,
    now_secs: u64,
    rng: &mut impl Rng,
) -> Answer {
    let (ns, glue) = nameservers(zone, servers, rng);
    match qtype {
        RecordType::SOA => Answer {
            authority: ns,
            ..Answer::records(vec![zone.soa(now_secs)], glue)
        },
        RecordType::NS => Answer::records(ns, glue),
        RecordType::ANY => {
            let mut answers = vec![zone.soa(now_secs)];
            answers.extend(ns);
            Answer::records(answers, glue)
        }
        _ => Answer::records(Vec::new(), Vec::new()),
    }
}

/// Up to three random servers as `<domain> NS <node>.node.<dc>.<domain>`,
/// and their addresses.
fn nameservers(
    zone: &Zone,
    servers: &[ServerNode],
    rng: &mut impl Rng,
) -> (Vec<Record>, Vec<Record>) {
    let ttl = zone.config.node_ttl;
    let mut ns = Vec::new();
    let mut glue = Vec::new();
    for server in servers.choose_multiple(rng, MAX_NAMESERVERS) {
        let Some(name) = zone.node_name(&server.name.to_ascii_lowercase()) else {
            continue;
        };
        glue.extend(address_record(
            &name,
            &server.addr.to_string(),
            RecordType::ANY,
            ttl,
        ));
        ns.push(Record::from_rdata(
            zone.domain.clone(),
            ttl,
            RData::NS(NS(name)),
        ));
    }
    (ns, glue)
}

fn node(state: &State, zone: &Zone, name: &str, qtype: RecordType, owner: &Name) -> Answer {
    // Node names compare case-insensitively in DNS; the catalog keys them
    // as registered.
    let (nodes, _) = state.catalog_nodes();
    let Some(node) = nodes
        .into_iter()
        .find(|n| n.name.eq_ignore_ascii_case(name))
    else {
        return Answer::nxdomain();
    };
    let ttl = zone.config.node_ttl;
    let mut answers = Vec::new();
    if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
        answers.extend(address_record(owner, &node.address, qtype, ttl));
    }
    if matches!(qtype, RecordType::TXT | RecordType::ANY) {
        answers.extend(node.meta.iter().map(|(k, v)| {
            Record::from_rdata(
                owner.clone(),
                ttl,
                RData::TXT(TXT::new(vec![meta_txt(k, v)])),
            )
        }));
    }
    Answer::records(answers, Vec::new())
}

/// Node meta as RFC 1464 `key=value` text; `rfc1035-` keys carry the raw value.
fn meta_txt(key: &str, value: &str) -> String {
    if key.starts_with("rfc1035-") {
        return value.to_string();
    }
    let mut text = String::with_capacity(key.len() + value.len() + 1);
    for c in key.chars() {
        if matches!(c, '=' | '`' | ' ') {
            text.push('`');
        }
        text.push(c);
    }
    text.push('=');
    text.push_str(value);
    text
}

/// One healthy instance, as DNS sees it.
#[derive(Debug)]
pub struct Instance {
    node: String,
    node_address: String,
    /// `""`: use the node address.
    service_address: String,
    port: u16,
    weight: u16,
}

/// How many (service, tag) answers [`InstanceCache`] keeps per index.
const MAX_CACHED: usize = 1024;

/// The healthy instances of each asked (service, tag), computed once per
/// applied index: DNS asks the same few names over and over, and each
/// catalog read clones every entry with its checks. Any write clears it.
#[derive(Debug, Default)]
pub struct InstanceCache {
    inner: Mutex<CachedInstances>,
}

#[derive(Debug, Default)]
struct CachedInstances {
    /// The state's last applied index the entries were read at.
    index: u64,
    /// Service name → tag (`""` for none; tags are never empty) → instances.
    by_name: HashMap<String, HashMap<String, Arc<[Instance]>>>,
    entries: usize,
}

impl InstanceCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CachedInstances> {
        // The map is only a memo: whatever a panicking holder left is valid.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instances of `name` (lower-case) with `tag`, from the memo when
    /// it was read at the state's current index.
    fn get(&self, state: &State, zone: &Zone, name: &str, tag: Option<&str>) -> Arc<[Instance]> {
        let index = state.last_applied();
        let tag_key = tag.unwrap_or("");
        {
            let mut cache = self.lock();
            if cache.index != index {
                cache.by_name.clear();
                cache.entries = 0;
                cache.index = index;
            }
            if let Some(found) = cache.by_name.get(name).and_then(|t| t.get(tag_key)) {
                return found.clone();
            }
        }
        let found: Arc<[Instance]> = instances(state, zone, name, tag).into();
        // Unknown names are not kept: a flood of them would only fill the map.
        if !found.is_empty() {
            let mut cache = self.lock();
            if cache.index == index && cache.entries < MAX_CACHED {
                cache.entries += 1;
                cache
                    .by_name
                    .entry(name.to_string())
                    .or_default()
                    .insert(tag_key.to_string(), found.clone());
            }
        }
        found
    }
}

/// The instances DNS answers with: no critical check (`only_passing`: no
/// check other than passing).
fn instances(state: &State, zone: &Zone, name: &str, tag: Option<&str>) -> Vec<Instance> {
    let tags: Vec<String> = tag.map(str::to_string).into_iter().collect();
    let (entries, _) = state.health_service(name, &tags, zone.config.only_passing);
    entries
        .into_iter()
        .filter(|e| e.checks.iter().all(|c| c.status != CheckStatus::Critical))
        .map(|e| {
            let warning = e.checks.iter().any(|c| c.status == CheckStatus::Warning);
            let weight = if warning {
                e.service.weights.warning
            } else {
                e.service.weights.passing
            };
            Instance {
                node: e.node.name,
                node_address: e.node.address,
                service_address: e.service.address,
                port: e.service.port,
                weight: u16::try_from(weight).unwrap_or(u16::MAX),
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)] // the inputs of `lookup`, passed on
fn service(
    state: &State,
    zone: &Zone,
    cache: &InstanceCache,
    name: &str,
    tag: Option<&str>,
    qtype: RecordType,
    owner: &Name,
    rng: &mut impl Rng,
) -> Answer {
    // `consul.service` too: the leader keeps every server in the catalog
    // as service `consul`, so DNS answers what the catalog holds.
    let all = cache.get(state, zone, name, tag);
    if all.is_empty() {
        return Answer::nxdomain();
    }
    let mut found: Vec<&Instance> = all.iter().collect();
    found.shuffle(rng);
    let ttl = zone.config.service_ttl;
    match qtype {
        RecordType::SRV => srv(zone, &found, owner),
        RecordType::A | RecordType::AAAA | RecordType::ANY => {
            let limit = match zone.config.a_record_limit {
                0 => usize::MAX,
                n => n,
            };
            let mut seen = HashSet::new();
            let answers = found
                .iter()
                .map(|i| {
                    if i.service_address.is_empty() {
                        i.node_address.as_str()
                    } else {
                        i.service_address.as_str()
                    }
                })
                .filter(|addr| found.len() == 1 || seen.insert(*addr))
                .filter_map(|addr| address_record(owner, addr, qtype, ttl))
                .take(limit)
                .collect();
            Answer::records(answers, Vec::new())
        }
        _ => Answer::records(Vec::new(), Vec::new()),
    }
}

/// SRV per instance: priority 1, the instance's weight, target
/// `<hex>.addr.<dc>.<domain>` for an own IP, the hostname for an own
/// hostname, else `<node>.node.<dc>.<domain>`; addresses in additional.
fn srv(zone: &Zone, found: &[&Instance], owner: &Name) -> Answer {
    let ttl = zone.config.service_ttl;
    let mut answers = Vec::with_capacity(found.len());
    let mut additionals = Vec::with_capacity(found.len());
    let mut seen = HashSet::new();
    let mut targets = HashSet::new();
    for &i in found {
        let address = if i.service_address.is_empty() {
            &i.node_address
        } else {
            &i.service_address
        };
        if !seen.insert((&i.node, address, i.port)) {
            continue;
        }
        let (target, extra) = if i.service_address.is_empty() {
            let Some(target) = zone.node_name(&i.node) else {
                continue;
            };
            // A node whose address is a hostname: the CNAME goes with the
            // target, its resolution is added by the caller.
            let extra = address_record(&target, &i.node_address, RecordType::ANY, ttl);
            (target, extra)
        } else if let Ok(ip) = i.service_address.parse::<IpAddr>() {
            let Some(target) = zone.addr_name(ip) else {
                continue;
            };
            let extra = address_record(&target, &i.service_address, RecordType::ANY, ttl);
            (target, extra)
        } else {
            let Some(target) = fqdn(&i.service_address) else {
                continue;
            };
            (target, None)
        };
        if targets.insert(target.clone()) {
            additionals.extend(extra);
        }
        answers.push(Record::from_rdata(
            owner.clone(),
            ttl,
            RData::SRV(SRV::new(1, i.weight, i.port, target)),
        ));
    }
    Answer::records(answers, additionals)
}

/// The record `owner` has for `address` when asked `qtype`: A or AAAA for
/// an IP of the asked family, a CNAME for a hostname, nothing otherwise.
fn address_record(owner: &Name, address: &str, qtype: RecordType, ttl: u32) -> Option<Record> {
    let rdata = match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if matches!(qtype, RecordType::A | RecordType::ANY) => RData::A(A(ip)),
        Ok(IpAddr::V6(ip)) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
            RData::AAAA(AAAA(ip))
        }
        Ok(_) => return None,
        Err(_) => RData::CNAME(CNAME(fqdn(address)?)),
    };
    Some(Record::from_rdata(owner.clone(), ttl, rdata))
}

/// PTR for a reverse name: every node with that address as
/// `<node>.node.<dc>.<domain>`, else the first service instance with it as
/// `<svc>.service.<dc>.<domain>` (Consul's order). `None` when nothing has
/// that address (the caller recurses or says NXDOMAIN).
pub fn reverse(state: &State, zone: &Zone, ip: IpAddr, owner: &Name) -> Option<Answer> {
    let has_ip = |address: &str| address.parse::<IpAddr>().is_ok_and(|a| a == ip);
    let (nodes, _) = state.catalog_nodes();
    let mut targets: Vec<Name> = nodes
        .iter()
        .filter(|n| has_ip(&n.address))
        .filter_map(|n| zone.node_name(&n.name))
        .collect();
    if targets.is_empty() {
        let (services, _) = state.catalog_services();
        targets.extend(
            services
                .keys()
                .find(|name| {
                    state
                        .catalog_service(name, &[])
                        .0
                        .iter()
                        .any(|i| has_ip(&i.service.address))
                })
                .and_then(|name| zone.service_name(name)),
        );
    }
    let ttl = zone.config.node_ttl;
    let answers: Vec<Record> = targets
        .into_iter()
        .map(|target| Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(target))))
        .collect();
    (!answers.is_empty()).then(|| Answer::records(answers, Vec::new()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use hickory_proto::op::Query;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::discovery::server::state::catalog::{Registration, Service, Weights};
    use crate::discovery::server::state::Command;

    fn zone() -> Zone {
        Zone::new("Consul", "dc1", DnsConfig::default())
    }

    /// `count` instances of `name`, each on its own node with a long name.
    fn state_with(name: &str, count: usize) -> State {
        let mut state = State::new();
        for i in 0..count {
            let reg = Registration {
                node: format!("a-rather-long-node-name-for-size-tests-{i}"),
                node_id: String::new(),
                address: format!("10.0.{}.{}", i / 250, i % 250),
                tagged_addresses: BTreeMap::new(),
                node_meta: BTreeMap::new(),
                skip_node_update: false,
                service: Some(Service {
                    id: format!("{name}{i}"),
                    name: name.to_string(),
                    tags: Vec::new(),
                    address: String::new(),
                    port: 80,
                    meta: BTreeMap::new(),
                    enable_tag_override: false,
                    weights: Weights::default(),
                    create_index: 0,
                    modify_index: 0,
                    ..Default::default()
                }),
                checks: Vec::new(),
            };
            state
                .apply(i as u64 + 1, 1, Command::Register(reg))
                .unwrap();
        }
        state
    }

    fn servers(n: u8) -> Vec<ServerNode> {
        (0..n)
            .map(|i| ServerNode {
                name: format!("S{i}"),
                addr: IpAddr::from([127, 0, 0, 10 + i]),
                port: 8300,
            })
            .collect()
    }

    fn ask(state: &State, qname: &str, qtype: RecordType) -> (Answer, Query) {
        let owner = Name::from_ascii(qname).unwrap();
        let labels: Vec<String> = owner
            .iter()
            .take(owner.num_labels() as usize - 1)
            .map(|l| String::from_utf8_lossy(l).to_lowercase())
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let lookup = super::super::name::parse(&labels, "dc1");
        let mut rng = StdRng::seed_from_u64(7);
        let answer = super::lookup(
            state,
            &zone(),
            &InstanceCache::default(),
            &lookup,
            qtype,
            &owner,
            &servers(5),
            1_700_000_000,
            &mut rng,
        );
        (answer, Query::query(owner, qtype))
    }

    #[test]
    fn zone_normalises_the_domain() {
        let z = zone();
        assert_eq!(z.domain_text, "consul.");
        let soa = z.soa(1_700_000_000);
        assert_eq!(soa.name.to_ascii(), "consul.");
        let RData::SOA(soa) = soa.data else {
            panic!("not a SOA")
        };
        assert_eq!(soa.mname.to_ascii(), "ns.consul.");
        assert_eq!(soa.rname.to_ascii(), "hostmaster.consul.");
        assert_eq!(
            (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum),
            (1_700_000_000, 3600, 600, 86400, 0)
        );
    }

    #[test]
    fn edns_answers_are_trimmed_to_the_advertised_size() {
        let state = state_with("big", 200);
        let (mut answer, query) = ask(&state, "big.service.consul.", RecordType::A);
        assert_eq!(answer.answers.len(), 200);
        let full = answer.clone();
        assert!(answer.fit(&query, None, 1232));
        let kept = answer.answers.len();
        assert!(kept > 3 && kept < 200, "kept {kept}");
        assert!(answer.encoded_len(&query, kept) <= 1232);
        assert!(
            full.encoded_len(&query, kept + 1) > 1232,
            "one more would still fit"
        );
    }

    #[test]
    fn srv_without_edns_keeps_three_and_their_additionals() {
        let state = state_with("web", 8);
        let (mut answer, query) = ask(&state, "web.service.consul.", RecordType::SRV);
        assert_eq!((answer.answers.len(), answer.additionals.len()), (8, 8));
        assert!(answer.fit(&query, Some(3), 512), "cut answers are reported");
        assert_eq!(answer.answers.len(), 3);
        let targets: HashSet<Name> = answer
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(srv) => srv.target.clone(),
                other => panic!("not SRV: {other:?}"),
            })
            .collect();
        let extra: HashSet<Name> = answer.additionals.iter().map(|r| r.name.clone()).collect();
        assert_eq!(targets, extra);
        assert!(answer.encoded_len(&query, 3) <= 512);
    }

    #[test]
    fn ns_names_three_random_servers_with_glue() {
        let state = State::new();
        let (answer, _) = ask(&state, "consul.", RecordType::NS);
        assert_eq!(answer.answers.len(), 3);
        assert_eq!(answer.additionals.len(), 3);
        for (ns, glue) in answer.answers.iter().zip(&answer.additionals) {
            assert_eq!(ns.name.to_ascii(), "consul.");
            let RData::NS(NS(target)) = &ns.data else {
                panic!("not NS: {ns:?}")
            };
            assert!(target.to_ascii().ends_with(".node.dc1.consul."), "{target}");
            assert!(target.to_ascii().starts_with('s'), "lower-cased: {target}");
            assert_eq!(&glue.name, target);
        }
        let (soa, _) = ask(&state, "consul.", RecordType::SOA);
        assert_eq!(soa.answers.len(), 1);
        assert_eq!(soa.authority.len(), 3, "NS in authority next to the SOA");
        assert!(!soa.needs_soa());
    }

    #[test]
    fn hostnames_are_left_for_the_caller_to_resolve() {
        let mut state = State::new();
        for (i, addr) in ["db.example.com", "db.example.com", "10.0.0.7"]
            .iter()
            .enumerate()
        {
            let mut reg = Registration {
                node: format!("h{i}"),
                node_id: String::new(),
                address: "10.0.0.1".into(),
                tagged_addresses: BTreeMap::new(),
                node_meta: BTreeMap::new(),
                skip_node_update: false,
                service: None,
                checks: Vec::new(),
            };
            reg.service = Some(Service {
                id: format!("db{i}"),
                name: "db".into(),
                tags: Vec::new(),
                address: addr.to_string(),
                port: 5432,
                meta: BTreeMap::new(),
                enable_tag_override: false,
                weights: Weights::default(),
                create_index: 0,
                modify_index: 0,
                ..Default::default()
            });
            state
                .apply(i as u64 + 1, 1, Command::Register(reg))
                .unwrap();
        }
        let (mut answer, _) = ask(&state, "db.service.consul.", RecordType::A);
        let unresolved = answer.unresolved(RecordType::A);
        assert_eq!(
            unresolved.len(),
            1,
            "one hostname, asked once: {unresolved:?}"
        );
        assert_eq!(unresolved[0].target.to_ascii(), "db.example.com.");
        assert_eq!(unresolved[0].section, Section::Answer);
        let resolved = Record::from_rdata(
            unresolved[0].target.clone(),
            0,
            RData::A(A("192.0.2.1".parse().unwrap())),
        );
        answer.add_resolution(&unresolved[0], vec![resolved.clone()]);
        let cname_at = answer
            .answers
            .iter()
            .position(|r| r.record_type() == RecordType::CNAME)
            .unwrap();
        assert_eq!(
            answer.answers[cname_at + 1],
            resolved,
            "right after its CNAME"
        );

        let (answer, _) = ask(&state, "db.service.consul.", RecordType::SRV);
        let unresolved = answer.unresolved(RecordType::SRV);
        assert_eq!(unresolved.len(), 1, "{unresolved:?}");
        assert_eq!(unresolved[0].section, Section::Additional);
        assert_eq!(unresolved[0].qtype, RecordType::A);
    }

    #[test]
    fn reverse_names_nodes_first_then_service_addresses() {
        let state = state_with("web", 2);
        let owner = Name::from_ascii("1.0.0.10.in-addr.arpa.").unwrap();
        let node = reverse(&state, &zone(), "10.0.0.1".parse().unwrap(), &owner).unwrap();
        let RData::PTR(PTR(target)) = &node.answers[0].data else {
            panic!("not PTR")
        };
        assert_eq!(
            target.to_ascii(),
            "a-rather-long-node-name-for-size-tests-1.node.dc1.consul."
        );
        assert!(reverse(&state, &zone(), "10.9.9.9".parse().unwrap(), &owner).is_none());
    }

    #[test]
    fn cached_instances_follow_every_write() {
        let mut state = state_with("web", 2);
        let cache = InstanceCache::default();
        let zone = zone();
        let owner = Name::from_ascii("web.service.consul.").unwrap();
        let lookup = Lookup::Service {
            name: "web".into(),
            tag: None,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut ask = |state: &State| {
            let answer = super::lookup(
                state,
                &zone,
                &cache,
                &lookup,
                RecordType::A,
                &owner,
                &[],
                0,
                &mut rng,
            );
            answer.answers.len()
        };
        assert_eq!(ask(&state), 2);
        assert_eq!(ask(&state), 2, "from the memo");
        let mut more = state_with("web", 3);
        std::mem::swap(&mut state, &mut more);
        assert_eq!(ask(&state), 3, "a newer index reads the state again");
        state
            .apply(
                10,
                1,
                Command::UpdateCheck {
                    node: "a-rather-long-node-name-for-size-tests-0".into(),
                    check_id: "serfHealth".into(),
                    status: CheckStatus::Critical,
                    output: String::new(),
                },
            )
            .unwrap();
        assert_eq!(ask(&state), 2, "a check going critical hides its instance");
    }

    #[test]
    fn meta_txt_escapes_rfc1464_keys() {
        assert_eq!(meta_txt("rack", "r1"), "rack=r1");
        assert_eq!(meta_txt("a=b", "c"), "a`=b=c");
        assert_eq!(meta_txt("rfc1035-raw", "v=1"), "v=1");
    }
}
