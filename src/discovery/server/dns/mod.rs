//! Consul's DNS interface (consul-wire.md §8) on hickory-server: names in the
//! Consul domain are answered from the catalog state (`name` parses them,
//! `answer` builds the records), every other name goes to the recursors
//! (`recursor`). hickory-server owns the TCP listener, hickory-proto the
//! wire format; `udp` is our own UDP loop (hickory's costs a task and a
//! channel hop per query). This module owns what the answers say and
//! Consul's UDP limits.

mod answer;
mod name;
mod recursor;
mod udp;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_server::proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::cluster::Status;
use super::Server;
use answer::{Answer, InstanceCache, ServerNode, Zone};
use hickory_server::net::xfer::Protocol;
use recursor::Transport;

/// Consul's `dns_config` options this server honours (the agent's
/// `--dns-*` flags); the defaults are Consul's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// `only_passing`: drop instances with a warning check too.
    pub only_passing: bool,
    /// `enable_truncate`: set TC when a UDP answer was cut.
    pub enable_truncate: bool,
    /// `udp_answer_limit`: answers over UDP without EDNS (at most 8 are kept).
    pub udp_answer_limit: usize,
    /// `a_record_limit`: A/AAAA answers of a service on any transport; 0 = no limit.
    pub a_record_limit: usize,
    /// `node_ttl` and `service_ttl`, in seconds.
    pub node_ttl: u32,
    pub service_ttl: u32,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            only_passing: false,
            enable_truncate: false,
            udp_answer_limit: 3,
            a_record_limit: 0,
            node_ttl: 0,
            service_ttl: 0,
        }
    }
}

/// How deep a hostname in the domain may point at another one (Consul's
/// `maxRecursionLevelDefault`).
const MAX_CNAME_DEPTH: usize = 3;
/// Records of one recursed hostname kept without EDNS (Consul's
/// `maxRecurseRecords`).
const MAX_RECURSE_RECORDS: usize = 5;

/// How long an idle TCP connection is kept open.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Serve Consul DNS on both sockets until `shutdown`. Logs `listening for dns
/// on <addr>` (udp and tcp).
pub async fn serve(
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    server: Server,
    config: DnsConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let udp_addr = udp.local_addr()?;
    let tcp_addr = tcp.local_addr()?;
    let dns = Arc::new(ConsulDns::new(server, config));
    let mut tcp_server = hickory_server::Server::new(Tcp(dns.clone()));
    tcp_server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    let udp_stop = shutdown.child_token();
    let udp_server = tokio::spawn(udp::serve(udp, dns, udp_stop.clone()));
    info!("listening for dns on {udp_addr} (udp)");
    info!("listening for dns on {tcp_addr} (tcp)");
    let done = tokio::select! {
        done = tcp_server.block_until_done() => done.map_err(std::io::Error::other),
        () = shutdown.cancelled() => tcp_server
            .shutdown_gracefully()
            .await
            .map_err(std::io::Error::other),
    };
    // The UDP side stops with the TCP side, whichever way that ended.
    udp_stop.cancel();
    udp_server.await.map_err(std::io::Error::other)?;
    done
}

/// The request handler: one per listener pair, shared by every query.
struct ConsulDns {
    server: Server,
    zone: Zone,
    instances: InstanceCache,
}

impl ConsulDns {
    fn new(server: Server, config: DnsConfig) -> ConsulDns {
        let cfg = server.config();
        let zone = Zone::new(&cfg.domain, &cfg.datacenter, config);
        ConsulDns {
            server,
            zone,
            instances: InstanceCache::default(),
        }
    }

    async fn respond<R: ResponseHandler>(&self, request: &Request, mut out: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = !self.server.config().recursors.is_empty();
        let edns = request.edns.as_ref().map(reply_edns);

        let checked = match request.request_info() {
            // RFC 6891 6.1.3: we speak EDNS version 0 only.
            _ if request.edns.as_ref().is_some_and(|e| e.version() > 0) => {
                Err(ResponseCode::BADVERS)
            }
            _ if request.metadata.op_code != OpCode::Query => Err(ResponseCode::NotImp),
            // Zero or several questions.
            Err(_) => Err(ResponseCode::FormErr),
            Ok(info) if matches!(info.query.query_type(), RecordType::AXFR | RecordType::IXFR) => {
                Err(ResponseCode::NotImp)
            }
            Ok(info) if !matches!(info.query.query_class(), DNSClass::IN | DNSClass::ANY) => {
                Err(ResponseCode::Refused)
            }
            Ok(info) => Ok(info.query),
        };
        let query = match checked {
            Ok(query) => query,
            Err(code) => {
                return send_code(&mut out, request, metadata, edns.as_ref(), code).await;
            }
        };
        let qtype = query.query_type();

        let name: &Name = query.name();
        let owner = query.original().name();
        let udp = request.protocol() == Protocol::Udp;
        let mut answer = if self.zone.domain.zone_of(name) {
            metadata.authoritative = true;
            let mut answer = self.catalog_answer(name, qtype, owner);
            let limit = (udp && edns.is_none()).then_some(MAX_RECURSE_RECORDS);
            self.resolve_hostnames(&mut answer, qtype, limit, 0).await;
            answer
        } else if let Some(answer) = self.reverse_answer(name, qtype, owner) {
            metadata.authoritative = true;
            answer
        } else {
            return self.recurse(request, metadata, edns.as_ref(), out).await;
        };

        if udp {
            let (max_answers, max_bytes) = match &edns {
                Some(e) => (None, usize::from(e.max_payload())),
                None => (Some(self.zone.config.udp_answer_limit), 512),
            };
            let cut = answer.fit(query.original(), max_answers, max_bytes);
            metadata.truncation = cut && self.zone.config.enable_truncate;
        }
        metadata.response_code = answer.code;
        let soa = answer.needs_soa().then(|| self.zone.soa(unix_secs()));
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answer.answers.iter(),
            std::iter::empty(),
            soa.iter().chain(answer.authority.iter()),
            answer.additionals.iter(),
        );
        send(&mut out, response, metadata).await
    }

    fn catalog_answer(&self, name: &Name, qtype: RecordType, owner: &Name) -> Answer {
        let inner = usize::from(name.num_labels())
            .saturating_sub(usize::from(self.zone.domain.num_labels()));
        let labels: Option<Vec<&str>> = name
            .iter()
            .take(inner)
            .map(|l| std::str::from_utf8(l).ok())
            .collect();
        let Some(labels) = labels else {
            return Answer::nxdomain();
        };
        let lookup = name::parse(&labels, &self.zone.datacenter.to_ascii_lowercase());
        let servers = match &lookup {
            name::Lookup::Apex => self.servers(),
            _ => Vec::new(),
        };
        let mut rng = rand::rng();
        self.server.read(|state| {
            answer::lookup(
                state,
                &self.zone,
                &self.instances,
                &lookup,
                qtype,
                owner,
                &servers,
                unix_secs(),
                &mut rng,
            )
        })
    }

    /// The server agents this node knows alive (itself included when it is one).
    fn servers(&self) -> Vec<ServerNode> {
        self.server
            .members()
            .all(false)
            .into_iter()
            .filter(|(m, status)| m.server && *status == Status::Alive)
            .map(|(m, _)| ServerNode {
                name: m.name,
                addr: m.addr,
                port: m.port,
            })
            .collect()
    }

    /// Add the addresses of the hostnames `answer` names (CNAME targets,
    /// SRV targets): from the catalog inside the domain (up to
    /// [`MAX_CNAME_DEPTH`] hops), else from the recursors; without them a
    /// hostname stays unresolved, as in Consul. `limit` caps the records
    /// kept per hostname (UDP without EDNS).
    async fn resolve_hostnames(
        &self,
        answer: &mut Answer,
        qtype: RecordType,
        limit: Option<usize>,
        depth: usize,
    ) {
        for target in answer.unresolved(qtype) {
            let mut records = if self.zone.domain.zone_of(&target.target) {
                if depth >= MAX_CNAME_DEPTH {
                    continue;
                }
                let lower = target.target.to_lowercase();
                let mut inner = self.catalog_answer(&lower, target.qtype, &target.target);
                Box::pin(self.resolve_hostnames(&mut inner, target.qtype, limit, depth + 1)).await;
                inner.answers
            } else {
                self.recurse_hostname(&target.target, target.qtype).await
            };
            records.retain(|r| {
                matches!(
                    r.record_type(),
                    RecordType::CNAME | RecordType::A | RecordType::AAAA
                )
            });
            if let Some(limit) = limit {
                records.truncate(limit);
            }
            for r in &mut records {
                r.ttl = target.ttl;
            }
            answer.add_resolution(&target, records);
        }
    }

    /// The answer records the recursors give for `name`; none when there
    /// are no recursors or they all failed.
    async fn recurse_hostname(&self, name: &Name, qtype: RecordType) -> Vec<Record> {
        let recursors = &self.server.config().recursors;
        if recursors.is_empty() {
            return Vec::new();
        }
        let query = hickory_server::proto::op::Query::query(name.clone(), qtype);
        match recursor::forward(recursors, &query, None, Transport::Udp).await {
            Some(reply) => reply.answers,
            None => Vec::new(),
        }
    }

    /// PTR for a node's address; `None` lets the name recurse (or NXDOMAIN).
    fn reverse_answer(&self, name: &Name, qtype: RecordType, owner: &Name) -> Option<Answer> {
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return None;
        }
        let net = name.parse_arpa_name().ok()?;
        let full = match net.addr() {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if net.prefix_len() != full {
            return None;
        }
        self.server
            .read(|state| answer::reverse(state, &self.zone, net.addr(), owner))
    }

    /// Outside the domain: the recursors' answer, SERVFAIL when they all
    /// failed, REFUSED when there are none.
    async fn recurse<R: ResponseHandler>(
        &self,
        request: &Request,
        metadata: Metadata,
        edns: Option<&Edns>,
        mut out: R,
    ) -> ResponseInfo {
        let recursors = &self.server.config().recursors;
        if recursors.is_empty() {
            return send_code(&mut out, request, metadata, edns, ResponseCode::Refused).await;
        }
        let Ok(info) = request.request_info() else {
            return send_code(&mut out, request, metadata, edns, ResponseCode::FormErr).await;
        };
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let Some(reply) = recursor::forward(
            recursors,
            info.query.original(),
            request.edns.as_ref(),
            transport,
        )
        .await
        else {
            return send_code(&mut out, request, metadata, edns, ResponseCode::ServFail).await;
        };
        let mut metadata = metadata;
        metadata.response_code = reply.metadata.response_code;
        metadata.truncation = reply.metadata.truncation;
        metadata.authentic_data = reply.metadata.authentic_data;
        // Our OPT, not the recursor's: its size is what the client can take.
        let response = MessageResponseBuilder::new(&request.queries, edns).build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty::<&Record>(),
            reply.additionals.iter(),
        );
        send(&mut out, response, metadata).await
    }
}

/// The handler hickory-server's TCP side calls.
struct Tcp(Arc<ConsulDns>);

/// hickory's `RequestHandler` is an `async_trait`; this is its expanded
/// form, so the crate needs no `async-trait` dependency of its own.
impl RequestHandler for Tcp {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: ResponseHandler + 'async_trait,
        T: Time + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.0.respond(request, response_handle))
    }
}

/// The OPT we answer with: the client's UDP size echoed (Consul does), and
/// its client subnet with scope 0 (the answer does not depend on it).
fn reply_edns(theirs: &Edns) -> Edns {
    let mut ours = Edns::new();
    ours.set_max_payload(theirs.max_payload().max(512));
    if let Some(EdnsOption::Subnet(subnet)) = theirs.option(EdnsCode::Subnet) {
        let mut subnet = *subnet;
        subnet.set_scope_prefix(0);
        ours.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    ours
}

async fn send_code<R: ResponseHandler>(
    out: &mut R,
    request: &Request,
    mut metadata: Metadata,
    edns: Option<&Edns>,
    code: ResponseCode,
) -> ResponseInfo {
    metadata.response_code = code;
    // An extended code (BADVERS) keeps its upper bits in the OPT record.
    let extended = edns.filter(|_| code.high() != 0).map(|e| {
        let mut e = e.clone();
        e.set_rcode_high(code.high());
        e
    });
    let edns = extended.as_ref().or(edns);
    let response = MessageResponseBuilder::new(&request.queries, edns).build_no_records(metadata);
    send(out, response, metadata).await
}

async fn send<'a, R: ResponseHandler>(
    out: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    metadata: Metadata,
) -> ResponseInfo {
    match out.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            debug!(error = %e, "sending a dns response");
            let mut metadata = metadata;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

fn unix_secs() -> u64 {
    super::now_ms() / 1000
}
