//! `/v1/agent` endpoints: this node's services and checks (written straight
//! into the catalog under `server.config().node`; the check runner in
//! `server::checks` executes them), TTL updates, maintenance mode, and the
//! agent's own view (`self`, `members`, `join`, `leave`). Agent-local
//! endpoints send no index headers (consul-wire.md §0).
//!
//! IDs in paths are whatever follows the route prefix, percent-decoded; they
//! may contain `/` and `:`. python-consul 0.7 uses GET for deregistrations,
//! TTL pass/warn/fail, join and force-leave, so those accept GET and PUT.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put, MethodRouter};
use axum::Router;
use serde_json::json;

use super::query::{json, ApiError, QueryOptions};
use crate::discovery::api::agent::{
    decode, AgentCheck, CheckDefinition, CheckDefinitionError, CheckPlan, CheckUpdate, Member,
    ServiceDefinition,
};
use crate::discovery::api::catalog::AgentService;
use crate::discovery::server::checks::{truncate_ttl_output, AgentLocal};
use crate::discovery::server::state::catalog::{Deregistration, Registration, Service};
use crate::discovery::server::state::checks::{CheckStatus, HealthCheck};
use crate::discovery::server::state::session::SERF_HEALTH;
use crate::discovery::server::state::{go_quote, Command};
use crate::discovery::server::Server;

/// The Consul version this agent reports (`agent/self`, `members`).
pub const CONSUL_VERSION: &str = "1.0.0";
/// Consul's serf LAN / WAN and server RPC ports, as reported to clients.
const SERF_LAN_PORT: u16 = 8301;
const SERF_WAN_PORT: u16 = 8302;
const SERVER_PORT: u16 = 8300;

const NODE_MAINTENANCE: &str = "_node_maintenance";
const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";

pub fn routes() -> Router<Server> {
    Router::new()
        .route("/v1/agent/self", only(get(agent_self)))
        .route("/v1/agent/members", only(get(members)))
        .route("/v1/agent/services", only(get(services)))
        .route("/v1/agent/checks", only(get(checks)))
        .route("/v1/agent/service/register", only(put(service_register)))
        .route(
            "/v1/agent/service/deregister/{*id}",
            only(get(service_deregister).put(service_deregister)),
        )
        .route(
            "/v1/agent/service/maintenance/{*id}",
            only(put(service_maintenance)),
        )
        .route("/v1/agent/service/{*id}", only(get(service_get)))
        .route("/v1/agent/check/register", only(put(check_register)))
        .route(
            "/v1/agent/check/deregister/{*id}",
            only(get(check_deregister).put(check_deregister)),
        )
        .route(
            "/v1/agent/check/pass/{*id}",
            only(get(check_pass).put(check_pass)),
        )
        .route(
            "/v1/agent/check/warn/{*id}",
            only(get(check_warn).put(check_warn)),
        )
        .route(
            "/v1/agent/check/fail/{*id}",
            only(get(check_fail).put(check_fail)),
        )
        .route("/v1/agent/check/update/{*id}", only(put(check_update)))
        .route("/v1/agent/maintenance", only(put(node_maintenance)))
        .route("/v1/agent/join/{*addr}", only(get(join).put(join)))
        .route(
            "/v1/agent/force-leave/{*node}",
            only(get(force_leave).put(force_leave)),
        )
        .route("/v1/agent/leave", only(put(leave)))
}

/// Consul ≥1.0 answers a wrong method with 405 `method GET not allowed`.
pub fn only(r: MethodRouter<Server>) -> MethodRouter<Server> {
    r.fallback(|method: Method| async move {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed"),
        )
    })
}

fn ok() -> Response {
    StatusCode::OK.into_response()
}

fn decode_failed(e: String) -> ApiError {
    ApiError::bad_request(format!("Request decode failed: {e}"))
}

fn check_error(e: CheckDefinitionError) -> ApiError {
    match e {
        CheckDefinitionError::Invalid(m) => ApiError::bad_request(format!("Invalid check: {m}")),
        e @ CheckDefinitionError::ScriptsDisabled => ApiError::internal(e.to_string()),
    }
}

/// A registration on this node that leaves the node's own fields alone.
fn local_registration(
    server: &Server,
    service: Option<Service>,
    checks: Vec<HealthCheck>,
) -> Registration {
    let cfg = server.config();
    Registration {
        node: cfg.node.clone(),
        node_id: String::new(),
        address: cfg.advertise.to_string(),
        tagged_addresses: BTreeMap::new(),
        node_meta: BTreeMap::new(),
        skip_node_update: true,
        service,
        checks,
    }
}

fn this_node_check(server: &Server, check_id: &str) -> Option<HealthCheck> {
    let node = &server.config().node;
    server.read(|s| s.check(node, check_id))
}

fn this_node_services(server: &Server) -> Vec<Service> {
    let node = &server.config().node;
    server
        .read(|s| s.catalog_node(node).0)
        .map(|ns| ns.services)
        .unwrap_or_default()
}

/// A catalog check for an agent check definition. Re-registering a check
/// keeps its current status and output (Consul restores them, so a
/// Registrator resync does not flap a passing check back to critical).
fn agent_check(
    server: &Server,
    def: &CheckDefinition,
    plan: &CheckPlan,
    check_id: &str,
    name: &str,
    service_id: &str,
) -> Result<HealthCheck, ApiError> {
    let status = def.initial_status().map_err(check_error)?;
    let mut c = HealthCheck::new(&server.config().node, check_id, name, status);
    c.notes = def.notes.clone().unwrap_or_default();
    c.service_id = service_id.to_string();
    c.check_type = plan.check_type.to_string();
    c.definition = plan.definition.to_stored();
    if let Some(old) = this_node_check(server, check_id) {
        c.status = old.status;
        c.output = old.output;
    }
    Ok(c)
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.clone().filter(|s| !s.is_empty())
}

async fn service_register(
    State(server): State<Server>,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let def: ServiceDefinition = decode(&body).map_err(decode_failed)?;
    let name = nonempty(&def.name).ok_or_else(|| ApiError::bad_request("Missing service name"))?;
    let id = nonempty(&def.id).unwrap_or_else(|| name.clone());
    let defs = def.check_definitions();
    let mut checks = Vec::new();
    for (i, cd) in defs.iter().enumerate() {
        let plan = cd
            .plan(server.config().enable_script_checks)
            .map_err(check_error)?;
        let check_id = cd.explicit_id().unwrap_or_else(|| {
            if defs.len() > 1 {
                format!("service:{id}:{}", i + 1)
            } else {
                format!("service:{id}")
            }
        });
        let check_name = nonempty(&cd.name).unwrap_or_else(|| format!("Service '{name}' check"));
        checks.push(agent_check(
            &server,
            cd,
            &plan,
            &check_id,
            &check_name,
            &id,
        )?);
    }
    let service = Service {
        id: id.clone(),
        name,
        tags: def.tags.clone().unwrap_or_default(),
        address: def.address.clone().unwrap_or_default(),
        port: def.port.unwrap_or(0),
        meta: def.meta.clone().unwrap_or_default(),
        enable_tag_override: def.enable_tag_override.unwrap_or(false),
        weights: def.weights.map(|w| w.to_state()).unwrap_or_default(),
        create_index: 0,
        modify_index: 0,
    };
    let new_ids: BTreeSet<String> = checks.iter().map(|c| c.check_id.clone()).collect();
    let local = AgentLocal::of(&server);
    for c in checks.iter().filter(|c| c.check_type == "ttl") {
        local.touch_ttl(&c.check_id);
    }
    server
        .write(Command::Register(local_registration(
            &server,
            Some(service),
            checks,
        )))
        .await?;
    let replace = opts
        .get("replace-existing-checks")
        .is_some_and(|v| !matches!(v, "0" | "f" | "F" | "false" | "FALSE" | "False"));
    if replace {
        let node = server.config().node.clone();
        let stale: Vec<String> = server
            .read(|s| s.health_node(&node).0)
            .into_iter()
            .filter(|c| {
                c.service_id == id
                    && !new_ids.contains(&c.check_id)
                    && !c.check_id.starts_with(SERVICE_MAINTENANCE_PREFIX)
            })
            .map(|c| c.check_id)
            .collect();
        for check_id in stale {
            local.forget(&check_id);
            server
                .write(Command::Deregister(Deregistration {
                    node: node.clone(),
                    service_id: None,
                    check_id: Some(check_id),
                }))
                .await?;
        }
    }
    Ok(ok())
}

/// Consul 1.0 answers 200 for an unknown service ID too.
async fn service_deregister(
    State(server): State<Server>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let node = server.config().node.clone();
    let local = AgentLocal::of(&server);
    for c in server.read(|s| s.health_node(&node).0) {
        if c.service_id == id {
            local.forget(&c.check_id);
        }
    }
    server
        .write(Command::Deregister(Deregistration {
            node,
            service_id: Some(id),
            check_id: None,
        }))
        .await?;
    Ok(ok())
}

async fn service_get(
    State(server): State<Server>,
    Path(id): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    let dc = server.config().datacenter.clone();
    this_node_services(&server)
        .iter()
        .find(|s| s.id == id)
        .map(|s| json(&AgentService::agent(s, Some(&dc)), &opts))
        .ok_or_else(|| ApiError::not_found(format!("unknown service ID: {id}")))
}

async fn services(State(server): State<Server>, opts: QueryOptions) -> Response {
    let dc = server.config().datacenter.clone();
    let map: BTreeMap<String, AgentService> = this_node_services(&server)
        .iter()
        .filter(|s| s.id != "consul")
        .map(|s| (s.id.clone(), AgentService::agent(s, Some(&dc))))
        .collect();
    json(&map, &opts)
}

async fn checks(State(server): State<Server>, opts: QueryOptions) -> Response {
    let node = server.config().node.clone();
    let map: BTreeMap<String, AgentCheck> = server
        .read(|s| s.health_node(&node).0)
        .iter()
        .filter(|c| c.check_id != SERF_HEALTH)
        .map(|c| (c.check_id.clone(), AgentCheck::from(c)))
        .collect();
    json(&map, &opts)
}

async fn check_register(State(server): State<Server>, body: Bytes) -> Result<Response, ApiError> {
    let def: CheckDefinition = decode(&body).map_err(decode_failed)?;
    let name = nonempty(&def.name).ok_or_else(|| ApiError::bad_request("Missing check name"))?;
    let plan = def
        .plan(server.config().enable_script_checks)
        .map_err(check_error)?;
    let check_id = def.explicit_id().unwrap_or_else(|| name.clone());
    let service_id = nonempty(&def.service_id).unwrap_or_default();
    if !service_id.is_empty()
        && !this_node_services(&server)
            .iter()
            .any(|s| s.id == service_id)
    {
        return Err(ApiError::internal(format!(
            "ServiceID {} does not exist",
            go_quote(&service_id)
        )));
    }
    let check = agent_check(&server, &def, &plan, &check_id, &name, &service_id)?;
    if check.check_type == "ttl" {
        AgentLocal::of(&server).touch_ttl(&check_id);
    }
    server
        .write(Command::Register(local_registration(
            &server,
            None,
            vec![check],
        )))
        .await?;
    Ok(ok())
}

/// Consul 1.0 answers 200 for an unknown check ID too.
async fn check_deregister(
    State(server): State<Server>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    AgentLocal::of(&server).forget(&id);
    server
        .write(Command::Deregister(Deregistration {
            node: server.config().node.clone(),
            service_id: None,
            check_id: Some(id),
        }))
        .await?;
    Ok(ok())
}

/// Set a TTL check's status and restart its timer.
async fn update_ttl(
    server: &Server,
    id: String,
    status: CheckStatus,
    output: String,
) -> Result<Response, ApiError> {
    let check = this_node_check(server, &id)
        .ok_or_else(|| ApiError::not_found(format!("Unknown check ID {}", go_quote(&id))))?;
    if check.check_type != "ttl" {
        return Err(ApiError::internal(format!(
            "CheckID {} does not have associated TTL",
            go_quote(&id)
        )));
    }
    let local = AgentLocal::of(server);
    let _guard = local.ttl_write_lock().await;
    local.touch_ttl(&id);
    let cmd = Command::UpdateCheck {
        node: server.config().node.clone(),
        check_id: id,
        status,
        output: truncate_ttl_output(output),
    };
    server.write(cmd).await?;
    Ok(ok())
}

async fn check_pass(
    State(server): State<Server>,
    Path(id): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    let note = opts.get("note").unwrap_or("").to_string();
    update_ttl(&server, id, CheckStatus::Passing, note).await
}

async fn check_warn(
    State(server): State<Server>,
    Path(id): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    let note = opts.get("note").unwrap_or("").to_string();
    update_ttl(&server, id, CheckStatus::Warning, note).await
}

async fn check_fail(
    State(server): State<Server>,
    Path(id): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    let note = opts.get("note").unwrap_or("").to_string();
    update_ttl(&server, id, CheckStatus::Critical, note).await
}

async fn check_update(
    State(server): State<Server>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let update: CheckUpdate = decode(&body).map_err(decode_failed)?;
    let raw = update.status.unwrap_or_default();
    let status = CheckStatus::parse(&raw)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid check status: '{raw}'")))?;
    update_ttl(&server, id, status, update.output.unwrap_or_default()).await
}

/// `?enable=` through Go's `strconv.ParseBool`, with Consul's messages.
fn enable_param(opts: &QueryOptions) -> Result<bool, ApiError> {
    match opts.get("enable") {
        None => Err(ApiError::bad_request("Missing value for enable")),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "Invalid value for enable: {}",
            go_quote(v)
        ))),
    }
}

/// Add or remove a maintenance check (critical, so the node or service
/// drops out of `?passing` and DNS). Idempotent.
async fn set_maintenance(
    server: &Server,
    enable: bool,
    check: HealthCheck,
) -> Result<Response, ApiError> {
    let exists = this_node_check(server, &check.check_id).is_some();
    if enable && !exists {
        server
            .write(Command::Register(local_registration(
                server,
                None,
                vec![check],
            )))
            .await?;
    } else if !enable && exists {
        server
            .write(Command::Deregister(Deregistration {
                node: server.config().node.clone(),
                service_id: None,
                check_id: Some(check.check_id),
            }))
            .await?;
    }
    Ok(ok())
}

async fn service_maintenance(
    State(server): State<Server>,
    Path(id): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    let enable = enable_param(&opts)?;
    if !this_node_services(&server).iter().any(|s| s.id == id) {
        return Err(ApiError::not_found(format!(
            "No service registered with ID {}",
            go_quote(&id)
        )));
    }
    let reason = opts.get("reason").filter(|r| !r.is_empty()).unwrap_or(
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.",
    );
    let mut check = HealthCheck::new(
        &server.config().node,
        &format!("{SERVICE_MAINTENANCE_PREFIX}{id}"),
        "Service Maintenance Mode",
        CheckStatus::Critical,
    );
    check.notes = reason.to_string();
    check.service_id = id;
    check.check_type = "maintenance".to_string();
    set_maintenance(&server, enable, check).await
}

async fn node_maintenance(
    State(server): State<Server>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    let enable = enable_param(&opts)?;
    let reason = opts.get("reason").filter(|r| !r.is_empty()).unwrap_or(
        "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.",
    );
    let mut check = HealthCheck::new(
        &server.config().node,
        NODE_MAINTENANCE,
        "Node Maintenance Mode",
        CheckStatus::Critical,
    );
    check.notes = reason.to_string();
    check.check_type = "maintenance".to_string();
    set_maintenance(&server, enable, check).await
}

/// The node's ID: the catalog's, or a stable UUID-shaped hash of the name.
fn node_id(server: &Server) -> String {
    let node = &server.config().node;
    if let Some(id) = server
        .read(|s| s.catalog_node(node).0)
        .map(|ns| ns.node.id)
        .filter(|id| !id.is_empty())
    {
        return id;
    }
    let h = |salt: &str| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (salt, node).hash(&mut hasher);
        hasher.finish()
    };
    let (a, b) = (h("pilotfish-node-id-1"), h("pilotfish-node-id-2"));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn member(server: &Server, wan: bool) -> Member {
    let cfg = server.config();
    let tags: BTreeMap<String, String> = [
        ("role", "consul".to_string()),
        ("dc", cfg.datacenter.clone()),
        ("port", SERVER_PORT.to_string()),
        ("build", format!("{CONSUL_VERSION}:pilotfish")),
        ("vsn", "2".to_string()),
        ("vsn_min", "2".to_string()),
        ("vsn_max", "3".to_string()),
        ("raft_vsn", "3".to_string()),
        ("bootstrap", "1".to_string()),
        ("id", node_id(server)),
        ("segment", String::new()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Member {
        name: if wan {
            format!("{}.{}", cfg.node, cfg.datacenter)
        } else {
            cfg.node.clone()
        },
        addr: cfg.advertise.to_string(),
        port: if wan { SERF_WAN_PORT } else { SERF_LAN_PORT },
        tags,
        status: 1,
        protocol_min: 1,
        protocol_max: 5,
        protocol_cur: 2,
        delegate_min: 2,
        delegate_max: 5,
        delegate_cur: 4,
    }
}

async fn members(State(server): State<Server>, opts: QueryOptions) -> Response {
    let wan = opts
        .get("wan")
        .is_some_and(|v| !matches!(v, "0" | "false" | "False"));
    json(&vec![member(&server, wan)], &opts)
}

async fn agent_self(State(server): State<Server>, opts: QueryOptions) -> Response {
    let cfg = server.config();
    let node = cfg.node.clone();
    let (n_services, n_checks, n_ttl, n_scripts) = server.read(|s| {
        let services = s.catalog_node(&node).0.map_or(0, |ns| ns.services.len());
        let checks = s.health_node(&node).0;
        let count = |t: &str| checks.iter().filter(|c| c.check_type == t).count();
        (
            services,
            checks.len().saturating_sub(1),
            count("ttl"),
            count("script"),
        )
    });
    let index = server.last_index().to_string();
    let leader_addr = format!("{}:{SERVER_PORT}", cfg.advertise);
    let serf = json!({
        "coordinate_resets": "0", "encrypted": "false", "event_queue": "0",
        "event_time": "1", "failed": "0", "health_score": "0", "intent_queue": "0",
        "left": "0", "member_time": "1", "members": "1", "query_queue": "0",
        "query_time": "1",
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let body = json!({
        "Config": {
            "Datacenter": cfg.datacenter,
            "PrimaryDatacenter": cfg.datacenter,
            "NodeName": cfg.node,
            "NodeID": node_id(&server),
            "Server": true,
            "Revision": "pilotfish",
            "Version": CONSUL_VERSION,
            "Domain": cfg.domain,
            "AdvertiseAddr": cfg.advertise.to_string(),
            "EnableScriptChecks": cfg.enable_script_checks,
            // Not in Consul >= 1.0; Patroni's adjust_ttl reads it (int ns).
            "SessionTTLMin": 10_000_000_000u64,
        },
        "DebugConfig": {},
        "Coord": {"Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
        "Member": member(&server, false),
        "Stats": {
            "agent": {
                "check_monitors": n_scripts.to_string(),
                "check_ttls": n_ttl.to_string(),
                "checks": n_checks.to_string(),
                "services": n_services.to_string(),
            },
            "build": {"prerelease": "", "revision": "pilotfish", "version": CONSUL_VERSION},
            "consul": {
                "bootstrap": "true", "known_datacenters": "1", "leader": "true",
                "leader_addr": leader_addr, "server": "true",
            },
            "raft": {
                "applied_index": index, "commit_index": index, "fsm_pending": "0",
                "last_contact": "0", "last_log_index": index, "last_log_term": "1",
                "last_snapshot_index": "0", "last_snapshot_term": "0",
                "latest_configuration": format!("[{{Suffrage:Voter ID:{leader_addr} Address:{leader_addr}}}]"),
                "latest_configuration_index": "1", "num_peers": "0",
                "protocol_version": "3", "protocol_version_max": "3", "protocol_version_min": "0",
                "snapshot_version_max": "1", "snapshot_version_min": "0",
                "state": "Leader", "term": "1",
            },
            "runtime": {
                "arch": std::env::consts::ARCH, "os": std::env::consts::OS,
                "cpu_count": cpus.to_string(), "goroutines": "0",
                "max_procs": cpus.to_string(), "version": format!("pilotfish {}", crate::VERSION),
            },
            "serf_lan": serf.clone(),
            "serf_wan": serf,
        },
        "Meta": {},
    });
    json(&body, &opts)
}

/// Is this join target this very agent?
fn is_self(server: &Server, ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || ip == server.config().advertise
}

/// Single server for now: joining yourself succeeds (Consul treats it as a
/// no-op); anything else fails with the error Consul gives when it cannot
/// reach the address.
async fn join(
    State(server): State<Server>,
    Path(addr): Path<String>,
) -> Result<Response, ApiError> {
    let (host, port) = split_host_port(&addr);
    if host.eq_ignore_ascii_case(&server.config().node) || host.eq_ignore_ascii_case("localhost") {
        return Ok(ok());
    }
    let targets: Vec<std::net::SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![(ip, port).into()],
        Err(_) => match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(a) => a.collect(),
            Err(_) => {
                return Err(ApiError::internal(format!(
                "1 error occurred:\n\t* Failed to resolve {host}: lookup {host}: no such host\n\n"
            )))
            }
        },
    };
    if targets.iter().any(|t| is_self(&server, t.ip())) {
        return Ok(ok());
    }
    let mut errors = Vec::new();
    for t in &targets {
        let why =
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(t))
                .await
            {
                Ok(Ok(_)) => {
                    "this pilotfish server runs alone and cannot join other agents".to_string()
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    format!("dial tcp {t}: connect: connection refused")
                }
                Ok(Err(e)) => format!("dial tcp {t}: {e}"),
                Err(_) => format!("dial tcp {t}: i/o timeout"),
            };
        errors.push(format!("\t* Failed to join {}: {why}", t.ip()));
    }
    let head = if errors.len() == 1 {
        "1 error occurred:".to_string()
    } else {
        format!("{} errors occurred:", errors.len())
    };
    Err(ApiError::internal(format!(
        "{head}\n{}\n\n",
        errors.join("\n")
    )))
}

/// `host[:port]` or `[v6]:port`, defaulting to the serf LAN port.
fn split_host_port(addr: &str) -> (String, u16) {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(SERF_LAN_PORT);
            return (h.to_string(), port);
        }
    }
    if addr.parse::<IpAddr>().is_ok() {
        return (addr.to_string(), SERF_LAN_PORT);
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap_or(0)),
        _ => (addr.to_string(), SERF_LAN_PORT),
    }
}

/// There are no other members to remove; Consul answers 200 for unknown nodes.
async fn force_leave(Path(_node): Path<String>) -> Response {
    ok()
}

/// Answers 200. Shutting the agent down after a leave needs a hook from the
/// process (`Server` has none yet), so the agent keeps running.
async fn leave() -> Response {
    tracing::warn!("PUT /v1/agent/leave: acknowledged; this agent keeps running (single server)");
    ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_addresses_split_like_consul() {
        assert_eq!(split_host_port("10.0.0.1"), ("10.0.0.1".into(), 8301));
        assert_eq!(split_host_port("10.0.0.1:9000"), ("10.0.0.1".into(), 9000));
        assert_eq!(split_host_port("consul"), ("consul".into(), 8301));
        assert_eq!(split_host_port("[::1]:8301"), ("::1".into(), 8301));
        assert_eq!(split_host_port("::1"), ("::1".into(), 8301));
    }
}
