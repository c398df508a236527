//! The records a [`Lookup`] answers with, read from the catalog state
//! (consul-wire.md §8.1–8.4): health filtering (any critical check hides an
//! instance, warning stays), shuffling, SRV targets and their additional
//! records, NXDOMAIN vs NODATA, the SOA of the domain, and Consul's UDP
//! answer limits. No I/O: the state, the clock reading and the random source
//! are arguments.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use rand::Rng;

use super::name::{encode_addr, Lookup};
use crate::discovery::server::state::checks::CheckStatus;
use crate::discovery::server::state::State;

/// Consul's defaults: `node_ttl`, `service_ttl` and `soa.min_ttl` are all 0.
const TTL: u32 = 0;
/// Consul's `udp_answer_limit` default for clients that do not speak EDNS.
pub const UDP_ANSWER_LIMIT: usize = 3;
/// The port `consul.service` answers with when nothing registered it.
const SERVER_RPC_PORT: u16 = 8300;

/// Who this server is, in DNS terms.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The domain, lower-case and fully qualified (`consul.`).
    pub domain: Name,
    /// The same, as text with the trailing dot.
    pub domain_text: String,
    pub datacenter: String,
    pub node: String,
    pub advertise: IpAddr,
}

impl Zone {
    pub fn new(domain: &str, datacenter: &str, node: &str, advertise: IpAddr) -> Zone {
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
            node: node.to_string(),
            advertise,
        }
    }

    /// `<node>.node.<dc>.<domain>`: SRV targets and NS names.
    fn node_name(&self, node: &str) -> Option<Name> {
        fqdn(&format!(
            "{node}.node.{}.{}",
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
        let soa = SOA::new(ns, hostmaster, serial, 3600, 600, 86400, TTL);
        Record::from_rdata(self.domain.clone(), TTL, RData::SOA(soa))
    }
}

fn fqdn(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The records of one response; the authority section is the zone's SOA
/// exactly when there is no answer (NXDOMAIN or NODATA).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    pub fn nxdomain() -> Answer {
        Answer {
            code: ResponseCode::NXDomain,
            answers: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        Answer {
            code: ResponseCode::NoError,
            answers,
            additionals,
        }
    }

    /// NXDOMAIN and NODATA carry the SOA in the authority section.
    pub fn needs_soa(&self) -> bool {
        self.answers.is_empty()
    }

    /// Consul's UDP limits (§8.3): at most `max_answers` answers, then as
    /// many as fit `max_bytes`, without setting TC. Additional records
    /// follow the SRV targets that are kept.
    pub fn fit(&mut self, query: &Query, max_answers: Option<usize>, max_bytes: usize) {
        if let Some(max) = max_answers {
            self.keep(max);
        }
        // A message with up to three records and a sane name is far below
        // 512 bytes: skip measuring on the common path.
        if self.answers.len() <= 1 || self.answers.len() + self.additionals.len() <= 3 {
            return;
        }
        if self.encoded_len(query, self.answers.len()) <= max_bytes {
            return;
        }
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
        msg.add_additionals(probe.additionals);
        msg.to_vec().map_or(usize::MAX, |bytes| bytes.len())
    }
}

/// Answer `lookup` of type `qtype`; `owner` is the question name as asked.
pub fn lookup(
    state: &State,
    zone: &Zone,
    lookup: &Lookup,
    qtype: RecordType,
    owner: &Name,
    now_secs: u64,
    rng: &mut impl Rng,
) -> Answer {
    match lookup {
        Lookup::Invalid => Answer::nxdomain(),
        Lookup::Apex => apex(zone, qtype, now_secs),
        Lookup::Addr(ip) => {
            let answers = address_record(owner, &ip.to_string(), qtype)
                .into_iter()
                .collect();
            Answer::records(answers, Vec::new())
        }
        Lookup::Node { name } => node(state, name, qtype, owner),
        Lookup::Service { name, tag } => {
            service(state, zone, name, tag.as_deref(), qtype, owner, rng)
        }
    }
}

fn apex(zone: &Zone, qtype: RecordType, now_secs: u64) -> Answer {
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    if matches!(qtype, RecordType::SOA | RecordType::ANY) {
        answers.push(zone.soa(now_secs));
    }
    if matches!(qtype, RecordType::NS | RecordType::ANY) {
        if let Some(ns) = zone.node_name(&zone.node) {
            answers.push(Record::from_rdata(
                zone.domain.clone(),
                TTL,
                RData::NS(NS(ns.clone())),
            ));
            additionals.extend(address_record(
                &ns,
                &zone.advertise.to_string(),
                RecordType::ANY,
            ));
        }
    }
    Answer::records(answers, additionals)
}

fn node(state: &State, name: &str, qtype: RecordType, owner: &Name) -> Answer {
    // Node names compare case-insensitively in DNS; the catalog keys them
    // as registered.
    let (nodes, _) = state.catalog_nodes();
    let Some(node) = nodes
        .into_iter()
        .find(|n| n.name.eq_ignore_ascii_case(name))
    else {
        return Answer::nxdomain();
    };
    let mut answers = Vec::new();
    if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
        answers.extend(address_record(owner, &node.address, qtype));
    }
    if matches!(qtype, RecordType::TXT | RecordType::ANY) {
        answers.extend(node.meta.iter().map(|(k, v)| {
            Record::from_rdata(
                owner.clone(),
                TTL,
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
struct Instance {
    node: String,
    node_address: String,
    /// `""`: use the node address.
    service_address: String,
    port: u16,
    weight: u16,
}

fn instances(state: &State, zone: &Zone, name: &str, tag: Option<&str>) -> Vec<Instance> {
    let tags: Vec<String> = tag.map(str::to_string).into_iter().collect();
    let (entries, _) = state.health_service(name, &tags, false);
    let mut found: Vec<Instance> = entries
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
        .collect();
    // `consul.service` names the servers even when no agent registered it.
    if found.is_empty() && tag.is_none() && name == "consul" {
        found.push(Instance {
            node: zone.node.clone(),
            node_address: zone.advertise.to_string(),
            service_address: String::new(),
            port: SERVER_RPC_PORT,
            weight: 1,
        });
    }
    found
}

fn service(
    state: &State,
    zone: &Zone,
    name: &str,
    tag: Option<&str>,
    qtype: RecordType,
    owner: &Name,
    rng: &mut impl Rng,
) -> Answer {
    let mut found = instances(state, zone, name, tag);
    if found.is_empty() {
        return Answer::nxdomain();
    }
    found.shuffle(rng);
    match qtype {
        RecordType::SRV => srv(zone, &found, owner),
        RecordType::A | RecordType::AAAA | RecordType::ANY => {
            let mut seen = HashSet::new();
            let answers = found
                .iter()
                .map(|i| {
                    if i.service_address.is_empty() {
                        &i.node_address
                    } else {
                        &i.service_address
                    }
                })
                .filter(|addr| seen.insert(*addr))
                .filter_map(|addr| address_record(owner, addr, qtype))
                .collect();
            Answer::records(answers, Vec::new())
        }
        _ => Answer::records(Vec::new(), Vec::new()),
    }
}

/// SRV per instance: priority 1, the instance's weight, target
/// `<hex>.addr.<dc>.<domain>` for an own IP, the hostname for an own
/// hostname, else `<node>.node.<dc>.<domain>`; addresses in additional.
fn srv(zone: &Zone, found: &[Instance], owner: &Name) -> Answer {
    let mut answers = Vec::with_capacity(found.len());
    let mut additionals = Vec::with_capacity(found.len());
    let mut seen = HashSet::new();
    let mut targets = HashSet::new();
    for i in found {
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
            let extra = address_record(&target, &i.node_address, RecordType::ANY);
            (target, extra)
        } else if let Ok(ip) = i.service_address.parse::<IpAddr>() {
            let Some(target) = zone.addr_name(ip) else {
                continue;
            };
            let extra = address_record(&target, &i.service_address, RecordType::ANY);
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
            TTL,
            RData::SRV(SRV::new(1, i.weight, i.port, target)),
        ));
    }
    Answer::records(answers, additionals)
}

/// The record `owner` has for `address` when asked `qtype`: A or AAAA for
/// an IP of the asked family, a CNAME for a hostname, nothing otherwise.
fn address_record(owner: &Name, address: &str, qtype: RecordType) -> Option<Record> {
    let rdata = match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if matches!(qtype, RecordType::A | RecordType::ANY) => RData::A(A(ip)),
        Ok(IpAddr::V6(ip)) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
            RData::AAAA(AAAA(ip))
        }
        Ok(_) => return None,
        Err(_) => RData::CNAME(CNAME(fqdn(address)?)),
    };
    Some(Record::from_rdata(owner.clone(), TTL, rdata))
}

/// PTR for a reverse name whose address is a node's: `<node>.node.<dc>.<domain>`.
/// `None` when no node has that address (the caller recurses or says NXDOMAIN).
pub fn reverse(state: &State, zone: &Zone, ip: IpAddr, owner: &Name) -> Option<Answer> {
    let (nodes, _) = state.catalog_nodes();
    let answers: Vec<Record> = nodes
        .iter()
        .filter(|n| n.address.parse::<IpAddr>().is_ok_and(|a| a == ip))
        .filter_map(|n| zone.node_name(&n.name))
        .map(|target| Record::from_rdata(owner.clone(), TTL, RData::PTR(PTR(target))))
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
        Zone::new("Consul", "dc1", "server1", "127.0.0.1".parse().unwrap())
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
                }),
                checks: Vec::new(),
            };
            state
                .apply(i as u64 + 1, 1, Command::Register(reg))
                .unwrap();
        }
        state
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
            &lookup,
            qtype,
            &owner,
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
        answer.fit(&query, None, 1232);
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
        answer.fit(&query, Some(UDP_ANSWER_LIMIT), 512);
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
    fn meta_txt_escapes_rfc1464_keys() {
        assert_eq!(meta_txt("rack", "r1"), "rack=r1");
        assert_eq!(meta_txt("a=b", "c"), "a`=b=c");
        assert_eq!(meta_txt("rfc1035-raw", "v=1"), "v=1");
    }
}
