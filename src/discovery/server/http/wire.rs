//! Between the Consul wire types (`discovery::api`) and the state machine's
//! domain types: the answers the handlers build from the state (`Node`,
//! `AgentService`, `HealthCheck`, `KVPair`, `Session`, ...) and the state
//! requests they build from decoded bodies (catalog registrations, check
//! status, weights, session creation), with Consul's defaults. `api` knows
//! nothing of the state; this module and `txn` (its op list and answer, used
//! nowhere else) are where the two meet.

use std::collections::BTreeMap;

use crate::discovery::api::agent::{
    AgentCheck, CheckDefinition, CheckDefinitionError, WeightsBody,
};
use crate::discovery::api::catalog::{
    self as api_catalog, is_proxy_kind, AgentService, CatalogCheckBody, CatalogDeregistration,
    CatalogRegistration, CatalogService, CatalogServiceBody, ConnectProxy, Locality,
    NodeServiceList, NodeServices, ServiceAddress, ServiceConnect,
};
use crate::discovery::api::gofmt::base64_encode;
use crate::discovery::api::health::{
    self as api_health, definition_value, HealthCheckDefinition, ServiceEntry,
};
use crate::discovery::api::kv::KvPair;
use crate::discovery::api::session::{CreateError, ServiceCheck, SessionCreate, SessionEntry};
use crate::discovery::server::state::catalog as state;
use crate::discovery::server::state::checks::{CheckStatus, HealthCheck};
use crate::discovery::server::state::kv::KvEntry;
use crate::discovery::server::state::session::{Session, SessionBehavior, SessionRequest};

// ----- answers: state → wire -----

/// `Node` as the catalog, health and txn endpoints serve it.
pub fn node(n: &state::Node, datacenter: &str) -> api_catalog::Node {
    api_catalog::Node {
        id: n.id.clone(),
        node: n.name.clone(),
        address: n.address.clone(),
        datacenter: datacenter.to_string(),
        tagged_addresses: n.tagged_addresses.clone(),
        meta: n.meta.clone(),
        create_index: n.create_index,
        modify_index: n.modify_index,
    }
}

impl From<state::Weights> for api_catalog::Weights {
    fn from(w: state::Weights) -> api_catalog::Weights {
        api_catalog::Weights {
            passing: w.passing,
            warning: w.warning,
        }
    }
}

/// A stored service's `Proxy` (Consul's empty one when none was given).
pub fn proxy(s: &state::Service) -> ConnectProxy {
    serde_json::from_str(&s.extras().proxy).unwrap_or_default()
}

fn locality(l: &state::Locality) -> Locality {
    Locality {
        region: l.region.clone(),
        zone: l.zone.clone(),
    }
}

/// The agent form of a service (`/v1/agent/services`,
/// `/v1/agent/service/<id>`): no raft indexes; `Proxy` for proxies and
/// gateways only, `Connect` only when native (consul-breadth.md §3.4).
pub fn agent_service(s: &state::Service, datacenter: Option<&str>) -> AgentService {
    let x = s.extras();
    AgentService {
        kind: x.kind.clone(),
        id: s.id.clone(),
        service: s.name.clone(),
        tags: s.tags.clone(),
        meta: s.meta.clone(),
        port: s.port,
        address: s.address.clone(),
        weights: s.weights.into(),
        enable_tag_override: s.enable_tag_override,
        datacenter: datacenter.map(String::from),
        create_index: None,
        modify_index: None,
        tagged_addresses: x
            .tagged_addresses
            .iter()
            .map(|(k, a)| {
                let a = ServiceAddress {
                    address: a.address.clone(),
                    port: a.port,
                };
                (k.clone(), a)
            })
            .collect(),
        socket_path: x.socket_path.clone(),
        proxy: is_proxy_kind(&x.kind).then(|| proxy(s)),
        connect: x.connect_native.then_some(ServiceConnect { native: true }),
        locality: x.locality.as_ref().map(locality),
        peer_name: None,
    }
}

/// The catalog/health/txn form of a service (Consul's `NodeService`), with
/// raft indexes, `Proxy`, `Connect` and `PeerName` always shown.
pub fn service_with_indexes(s: &state::Service) -> AgentService {
    AgentService {
        create_index: Some(s.create_index),
        modify_index: Some(s.modify_index),
        proxy: Some(proxy(s)),
        connect: Some(ServiceConnect {
            native: s.extras().connect_native,
        }),
        peer_name: Some(String::new()),
        ..agent_service(s, None)
    }
}

/// One row of `/v1/catalog/service/<name>`.
pub fn catalog_service(i: &state::ServiceInstance, datacenter: &str) -> CatalogService {
    let (n, s) = (&i.node, &i.service);
    let node_form = service_with_indexes(s);
    let value = |v: Option<serde_json::Value>| v.unwrap_or_default();
    CatalogService {
        id: n.id.clone(),
        node: n.name.clone(),
        address: n.address.clone(),
        datacenter: datacenter.to_string(),
        tagged_addresses: n.tagged_addresses.clone(),
        node_meta: n.meta.clone(),
        service_kind: s.extras().kind.clone(),
        service_id: s.id.clone(),
        service_name: s.name.clone(),
        service_tags: s.tags.clone(),
        service_address: s.address.clone(),
        service_tagged_addresses: node_form.tagged_addresses,
        service_weights: s.weights.into(),
        service_meta: s.meta.clone(),
        service_port: s.port,
        service_enable_tag_override: s.enable_tag_override,
        service_proxy: value(serde_json::to_value(node_form.proxy).ok()),
        service_connect: value(serde_json::to_value(node_form.connect).ok()),
        service_socket_path: s.extras().socket_path.clone(),
        service_locality: node_form.locality,
        create_index: s.create_index,
        modify_index: s.modify_index,
    }
}

/// `/v1/catalog/node/<name>`.
pub fn node_services(ns: &state::NodeServices, datacenter: &str) -> NodeServices {
    NodeServices {
        node: node(&ns.node, datacenter),
        services: ns
            .services
            .iter()
            .map(|s| (s.id.clone(), service_with_indexes(s)))
            .collect(),
    }
}

/// The list form of a node's services (`catalog/node-services`).
pub fn node_service_list(ns: Option<&state::NodeServices>, datacenter: &str) -> NodeServiceList {
    ns.map(|ns| NodeServiceList {
        node: Some(node(&ns.node, datacenter)),
        services: ns.services.iter().map(service_with_indexes).collect(),
    })
    .unwrap_or_default()
}

impl From<&HealthCheck> for api_health::HealthCheck {
    fn from(c: &HealthCheck) -> api_health::HealthCheck {
        api_health::HealthCheck {
            node: c.node.clone(),
            check_id: c.check_id.clone(),
            name: c.name.clone(),
            status: c.status.as_str().to_string(),
            notes: c.notes.clone(),
            output: c.output.clone(),
            service_id: c.service_id.clone(),
            service_name: c.service_name.clone(),
            service_tags: c.service_tags.clone(),
            check_type: c.check_type.clone(),
            definition: definition_value(&c.definition),
            create_index: c.create_index,
            modify_index: c.modify_index,
        }
    }
}

/// The agent's form of a check: the health form without raft indexes.
impl From<&HealthCheck> for AgentCheck {
    fn from(c: &HealthCheck) -> AgentCheck {
        let h = api_health::HealthCheck::from(c);
        AgentCheck {
            node: h.node,
            check_id: h.check_id,
            name: h.name,
            status: h.status,
            notes: h.notes,
            output: h.output,
            service_id: h.service_id,
            service_name: h.service_name,
            service_tags: h.service_tags,
            check_type: h.check_type,
            definition: h.definition,
        }
    }
}

/// One row of `/v1/health/service/<name>`.
pub fn service_entry(e: &state::ServiceEntry, datacenter: &str) -> ServiceEntry {
    ServiceEntry {
        node: node(&e.node, datacenter),
        service: service_with_indexes(&e.service),
        checks: e.checks.iter().map(api_health::HealthCheck::from).collect(),
    }
}

impl From<&KvEntry> for KvPair {
    fn from(e: &KvEntry) -> KvPair {
        KvPair {
            lock_index: e.lock_index,
            key: e.key.clone(),
            flags: e.flags,
            value: (!e.value.is_empty()).then(|| base64_encode(&e.value)),
            session: e.session.clone().filter(|s| !s.is_empty()),
            create_index: e.create_index,
            modify_index: e.modify_index,
        }
    }
}

impl From<&Session> for SessionEntry {
    fn from(s: &Session) -> SessionEntry {
        SessionEntry {
            id: s.id.clone(),
            name: s.name.clone(),
            node: s.node.clone(),
            lock_delay: s.lock_delay_ns,
            behavior: s.behavior.as_str().to_string(),
            ttl: s.ttl.clone(),
            node_checks: s.node_checks.clone(),
            service_checks: (!s.service_checks.is_empty()).then(|| {
                s.service_checks
                    .iter()
                    .map(|id| ServiceCheck {
                        id: id.clone(),
                        namespace: String::new(),
                    })
                    .collect()
            }),
            checks: s
                .node_checks
                .iter()
                .chain(&s.service_checks)
                .cloned()
                .collect(),
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

// ----- requests: wire → state -----

/// A request's `Weights` as Go decodes them (a field left out is 0).
fn given_weights(w: WeightsBody) -> state::Weights {
    state::Weights {
        passing: w.passing.unwrap_or(0),
        warning: w.warning.unwrap_or(0),
    }
}

/// Consul's `ValidateWeights`, with its texts.
fn validate_weights(w: state::Weights) -> Result<state::Weights, &'static str> {
    if w.passing < 1 {
        Err("Passing must be greater than 0")
    } else if w.passing > 65535 || w.warning > 65535 {
        Err("DNS Weight must be between 0 and 65535")
    } else {
        Ok(w)
    }
}

/// An agent registration's `Weights`: none ⇒ Consul's `{1,1}`; invalid ones
/// are refused (400 `Invalid Weights: ...`).
pub fn agent_weights(w: Option<WeightsBody>) -> Result<state::Weights, String> {
    match w {
        None => Ok(state::Weights::default()),
        Some(w) => validate_weights(given_weights(w)).map_err(|e| format!("Invalid Weights: {e}")),
    }
}

/// A catalog registration's `Weights`: kept only when valid, else `{1,1}`
/// (Consul's `ToServiceNode`; the Go client sends `{0,0}` when unset).
pub fn weights(w: Option<WeightsBody>) -> state::Weights {
    w.map(given_weights)
        .and_then(|w| validate_weights(w).ok())
        .unwrap_or_default()
}

/// The fields of a service body that pilotfish keeps but does not act on
/// (`Kind`, `TaggedAddresses`, `SocketPath`, `Proxy`, `Connect`,
/// `Locality`), as the state stores them.
pub fn service_extras(
    kind: Option<String>,
    tagged: Option<BTreeMap<String, ServiceAddress>>,
    socket_path: Option<String>,
    proxy: Option<ConnectProxy>,
    connect: Option<ServiceConnect>,
    locality: Option<Locality>,
) -> Option<Box<state::ServiceExtras>> {
    state::ServiceExtras {
        kind: kind.unwrap_or_default(),
        tagged_addresses: tagged
            .unwrap_or_default()
            .into_iter()
            .map(|(k, a)| {
                let a = state::ServiceAddress {
                    address: a.address,
                    port: a.port,
                };
                (k, a)
            })
            .collect(),
        socket_path: socket_path.unwrap_or_default(),
        // Serialising plain strings, numbers and maps cannot fail.
        proxy: proxy
            .map(|p| serde_json::to_string(&p).unwrap_or_default())
            .unwrap_or_default(),
        connect_native: connect.is_some_and(|c| c.native),
        locality: locality
            .filter(|l| !l.region.is_empty() || !l.zone.is_empty())
            .map(|l| state::Locality {
                region: l.region,
                zone: l.zone,
            }),
    }
    .boxed()
}

/// What an agent adds to a service registered at an IP address (Consul's
/// `addServiceInternal`): `lan_ipv4`/`wan_ipv4` (or the `_ipv6` pair) =
/// the service's address and port, unless given.
pub fn default_tagged_addresses(s: &mut state::Service) {
    let Ok(ip) = s.address.parse::<std::net::IpAddr>() else {
        return;
    };
    let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    let mut extras = s.extras.take().map(|b| *b).unwrap_or_default();
    for side in ["lan", "wan"] {
        extras
            .tagged_addresses
            .entry(format!("{side}_{family}"))
            .or_insert_with(|| state::ServiceAddress {
                address: s.address.clone(),
                port: s.port,
            });
    }
    s.extras = extras.boxed();
}

/// An agent check's initial status (`Status`, default critical).
pub fn initial_status(def: &CheckDefinition) -> Result<CheckStatus, CheckDefinitionError> {
    match def.status.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(CheckStatus::Critical),
        Some(s) => CheckStatus::parse(s).ok_or_else(|| {
            CheckDefinitionError::Invalid(
                "Status for checks must 'passing', 'warning', 'critical'".to_string(),
            )
        }),
    }
}

/// Why a catalog body cannot become a state registration (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogBodyError {
    #[error("Invalid check status: '{0}'")]
    Status(String),
}

/// The service of a catalog registration or txn op; `ModifyIndex` is kept as
/// a txn op's CAS index.
pub fn service(body: CatalogServiceBody) -> state::Service {
    state::Service {
        id: body.id.unwrap_or_default(),
        name: body.service.unwrap_or_default(),
        tags: body.tags.unwrap_or_default(),
        address: body.address.unwrap_or_default(),
        port: body.port.unwrap_or(0),
        meta: body.meta.unwrap_or_default(),
        enable_tag_override: body.enable_tag_override.unwrap_or(false),
        weights: weights(body.weights),
        create_index: 0,
        modify_index: body.modify_index.unwrap_or(0),
        extras: service_extras(
            body.kind,
            body.tagged_addresses,
            body.socket_path,
            body.proxy,
            body.connect,
            body.locality,
        ),
    }
}

/// A catalog check on `node`; Consul's defaults: ID = name, status critical.
/// `ModifyIndex` is kept as a txn op's CAS index.
pub fn check(body: CatalogCheckBody, node: &str) -> Result<HealthCheck, CatalogBodyError> {
    let name = body.name.unwrap_or_default();
    let id = body
        .check_id
        .filter(|i| !i.is_empty())
        .unwrap_or(name.clone());
    let status = match body.status.as_deref() {
        None | Some("") => CheckStatus::Critical,
        Some(s) => CheckStatus::parse(s).ok_or_else(|| CatalogBodyError::Status(s.to_string()))?,
    };
    let mut hc = HealthCheck::new(node, &id, &name, status);
    hc.notes = body.notes.unwrap_or_default();
    hc.output = body.output.unwrap_or_default();
    hc.service_id = body.service_id.unwrap_or_default();
    hc.check_type = body.check_type.unwrap_or_default();
    hc.definition = match body.definition {
        // Stored with Consul's spelling of the keys `decode` folded.
        Some(v @ serde_json::Value::Object(_)) => {
            match serde_json::from_value::<HealthCheckDefinition>(v.clone()) {
                Ok(d) => d.to_stored(),
                Err(_) => v.to_string(),
            }
        }
        _ => String::new(),
    };
    hc.modify_index = body.modify_index.unwrap_or(0);
    Ok(hc)
}

/// `PUT /v1/catalog/register` as a state registration (no CAS indexes).
pub fn registration(body: CatalogRegistration) -> Result<state::Registration, CatalogBodyError> {
    let node = body.node.unwrap_or_default();
    let service = body.service.map(|s| state::Service {
        modify_index: 0,
        ..service(s)
    });
    let mut checks = Vec::new();
    for c in body
        .check
        .into_iter()
        .chain(body.checks.unwrap_or_default())
    {
        checks.push(HealthCheck {
            modify_index: 0,
            ..check(c, &node)?
        });
    }
    Ok(state::Registration {
        node,
        node_id: body.id.unwrap_or_default(),
        address: body.address.unwrap_or_default(),
        tagged_addresses: body.tagged_addresses.unwrap_or_default(),
        node_meta: body.node_meta.unwrap_or_default(),
        skip_node_update: body.skip_node_update.unwrap_or(false),
        service,
        checks,
    })
}

/// `PUT /v1/catalog/deregister`; empty IDs mean none.
pub fn deregistration(body: CatalogDeregistration) -> state::Deregistration {
    state::Deregistration {
        node: body.node.unwrap_or_default(),
        service_id: body.service_id.filter(|s| !s.is_empty()),
        check_id: body.check_id.filter(|s| !s.is_empty()),
    }
}

/// A session create body as the state request: `id` is the new session's
/// ID, `agent_node` the default `Node`. `Behavior` is checked before `TTL`,
/// as Consul does.
pub fn session_request(
    create: SessionCreate,
    agent_node: &str,
    id: String,
) -> Result<SessionRequest, CreateError> {
    let behavior = SessionBehavior::parse(&create.behavior)
        .map_err(|e| CreateError::Invalid(e.to_string()))?;
    let ttl_ns = create.ttl_ns()?;
    Ok(SessionRequest {
        id,
        name: create.name,
        node: if create.node.is_empty() {
            agent_node.to_string()
        } else {
            create.node
        },
        node_checks: create.node_checks,
        service_checks: create.service_checks,
        lock_delay_ns: create.lock_delay_ns,
        behavior,
        ttl: create.ttl,
        ttl_ns,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kv_pair_omits_session_and_nulls_empty_values() {
        let e = KvEntry {
            key: "a/b".into(),
            value: Vec::new(),
            flags: 3_304_740_253_564_472_344,
            session: None,
            create_index: 4,
            modify_index: 5,
            lock_index: 0,
        };
        let text = serde_json::to_string(&KvPair::from(&e)).unwrap();
        assert_eq!(
            text,
            r#"{"LockIndex":0,"Key":"a/b","Flags":3304740253564472344,"Value":null,"CreateIndex":4,"ModifyIndex":5}"#
        );
    }

    #[test]
    fn check_status_defaults_to_critical_and_must_be_known() {
        let def = |status: Option<&str>| CheckDefinition {
            status: status.map(String::from),
            ..Default::default()
        };
        assert_eq!(initial_status(&def(None)), Ok(CheckStatus::Critical));
        assert_eq!(initial_status(&def(Some(""))), Ok(CheckStatus::Critical));
        assert_eq!(
            initial_status(&def(Some("passing"))),
            Ok(CheckStatus::Passing)
        );
        assert!(initial_status(&def(Some("bogus"))).is_err());
    }

    #[test]
    fn session_create_defaults_to_the_agent_node_and_checks_behavior_first() {
        let create = |body: &[u8]| SessionCreate::parse(body).unwrap();
        let r = session_request(create(b""), "agent", "id1".into()).unwrap();
        assert_eq!((r.node.as_str(), r.id.as_str()), ("agent", "id1"));
        assert_eq!(r.behavior, SessionBehavior::Release);
        let e = session_request(
            create(br#"{"Behavior":"keep","TTL":"10"}"#),
            "a",
            "i".into(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "Invalid Behavior setting 'keep'");
        let e = session_request(create(br#"{"TTL":"10"}"#), "a", "i".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Session TTL '10' invalid: time: missing unit in duration \"10\""
        );
    }
}
