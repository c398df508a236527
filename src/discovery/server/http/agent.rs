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

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put, MethodRouter};
use axum::Router;
use serde_json::json;

use super::filter::{Filter, Schema};
use super::query::{self, json, ApiError, QueryOptions};
use super::wire;
use crate::discovery::api::agent::{
    decode, AgentCheck, AgentServiceChecksInfo, CheckDefinition, CheckDefinitionError, CheckPlan,
    CheckUpdate, Member, ServiceDefinition,
};
use crate::discovery::api::catalog::AgentService;
use crate::discovery::api::gofmt::{format_duration, go_quote};
use crate::discovery::api::health::{aggregated_status, HealthCheck as HealthCheckView};
use crate::discovery::server::checks::{truncate_ttl_output, AgentLocal};
use crate::discovery::server::cluster::{
    resolve_targets, split_host_port, MemberInfo, Status, CONSUL_SERVICE,
};
use crate::discovery::server::state::catalog::{Deregistration, Registration, Service};
use crate::discovery::server::state::checks::{CheckStatus, HealthCheck};
use crate::discovery::server::state::session::SERF_HEALTH;
use crate::discovery::server::state::Command;
use crate::discovery::server::{RaftInfo, Server};

/// The Consul version this agent reports (`agent/self`, `members`).
pub const CONSUL_VERSION: &str = "1.0.0";

const NODE_MAINTENANCE: &str = "_node_maintenance";
const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";

pub fn routes() -> Router<Server> {
    Router::new()
        .route("/v1/agent/self", only(get(agent_self)))
        .route("/v1/agent/members", only(get(members)))
        .route("/v1/agent/services", only(get(services)))
        .route("/v1/agent/checks", only(get(checks)))
        .route(
            "/v1/agent/service/register",
            only(put(service_register)).layer(query::registration_body_limit()),
        )
        .route(
            "/v1/agent/service/deregister/{*id}",
            only(get(service_deregister).put(service_deregister)),
        )
        .route(
            "/v1/agent/service/maintenance/{*id}",
            only(put(service_maintenance)),
        )
        .route("/v1/agent/service/{*id}", only(get(service_get)))
        .route(
            "/v1/agent/health/service/id/",
            only(get(|| async { ApiError::bad_request("Missing serviceID") })),
        )
        .route(
            "/v1/agent/health/service/id/{*id}",
            only(get(health_service_by_id)),
        )
        .route(
            "/v1/agent/health/service/name/",
            only(get(|| async {
                ApiError::bad_request("Missing service Name")
            })),
        )
        .route(
            "/v1/agent/health/service/name/{*name}",
            only(get(health_service_by_name)),
        )
        .route(
            "/v1/agent/check/register",
            only(put(check_register)).layer(query::registration_body_limit()),
        )
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
        tagged_addresses: crate::discovery::server::cluster::node_tagged_addresses(cfg.advertise),
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
    let status = wire::initial_status(def).map_err(check_error)?;
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
    let mut service = Service {
        id: id.clone(),
        name,
        tags: def.tags.clone().unwrap_or_default(),
        address: def.address.clone().unwrap_or_default(),
        port: def.port.unwrap_or(0),
        meta: def.meta.clone().unwrap_or_default(),
        enable_tag_override: def.enable_tag_override.unwrap_or(false),
        weights: wire::agent_weights(def.weights).map_err(ApiError::bad_request)?,
        extras: wire::service_extras(
            def.kind,
            def.tagged_addresses,
            def.socket_path,
            def.proxy,
            def.connect,
            def.locality,
        ),
        ..Service::default()
    };
    wire::default_tagged_addresses(&mut service);
    let new_ids: BTreeSet<String> = checks.iter().map(|c| c.check_id.clone()).collect();
    let mut reg = local_registration(&server, Some(service), checks);
    reg.bound()?;
    let local = AgentLocal::of(&server);
    for c in reg.checks.iter().filter(|c| c.check_type == "ttl") {
        local.touch_ttl(&c.check_id);
    }
    server.write(Command::Register(reg.clone())).await?;
    local.remember(format!("service:{id}"), reg);
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
    local.forget_registration(&format!("service:{id}"));
    for c in server.read(|s| s.health_node(&node).0) {
        if c.service_id == id {
            local.forget(&c.check_id);
            local.forget_registration(&format!("check:{}", c.check_id));
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
        .find(|s| s.id == id && s.id != CONSUL_SERVICE)
        .map(|s| json(&wire::agent_service(s, Some(&dc)), &opts))
        .ok_or_else(|| ApiError::not_found(format!("unknown service ID: {id}")))
}

/// The health of one local service: its checks and this node's own (not
/// serfHealth, which is the servers', not the agent's), their aggregate as
/// the Go client's `AggregatedStatus` computes it, and the status code a
/// load balancer reads (200 passing, 429 warning, 503 critical or
/// maintenance).
fn local_service_health(
    checks: &[HealthCheck],
    service: &Service,
    dc: &str,
) -> (StatusCode, AgentServiceChecksInfo) {
    let mine: Vec<HealthCheckView> = checks
        .iter()
        .filter(|c| c.check_id != SERF_HEALTH)
        .filter(|c| c.service_id == service.id || c.service_id.is_empty())
        .map(HealthCheckView::from)
        .collect();
    let status = aggregated_status(&mine);
    let code = match status {
        "passing" => StatusCode::OK,
        "warning" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let health = AgentServiceChecksInfo {
        aggregated_status: status.to_string(),
        service: Some(wire::agent_service(service, Some(dc))),
        checks: Some(mine),
    };
    (code, health)
}

/// `?format=text` or `Accept: text/plain` asks for the bare status.
fn wants_text(opts: &QueryOptions, headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.starts_with("text/plain") {
        return true;
    }
    opts.get("format").is_some_and(|f| f == "text")
}

/// `code` with the bare `status` when text was asked for, else `body` as JSON.
fn health_answer<T: serde::Serialize>(
    code: StatusCode,
    status: String,
    body: &T,
    (opts, headers): (&QueryOptions, &HeaderMap),
) -> Response {
    if wants_text(opts, headers) {
        return (code, [(header::CONTENT_TYPE, "text/plain")], status).into_response();
    }
    let mut r = json(body, opts);
    *r.status_mut() = code;
    r
}

/// `agent/health/service/id/:id`: a load balancer's health endpoint for
/// one local service instance.
async fn health_service_by_id(
    State(server): State<Server>,
    Path(id): Path<String>,
    headers: HeaderMap,
    opts: QueryOptions,
) -> Response {
    let dc = server.config().datacenter.clone();
    let service = this_node_services(&server)
        .into_iter()
        .find(|s| s.id == id && s.id != CONSUL_SERVICE);
    let Some(service) = service else {
        let none = AgentServiceChecksInfo {
            aggregated_status: "critical".into(),
            service: None,
            checks: None,
        };
        let reason = format!("ServiceId {id} not found");
        return health_answer(StatusCode::NOT_FOUND, reason, &none, (&opts, &headers));
    };
    let checks = local_checks(&server);
    let (code, health) = local_service_health(&checks, &service, &dc);
    let status = health.aggregated_status.clone();
    health_answer(code, status, &health, (&opts, &headers))
}

/// `agent/health/service/name/:name`: every local instance of a service,
/// answered with the worst one's status code.
async fn health_service_by_name(
    State(server): State<Server>,
    Path(name): Path<String>,
    headers: HeaderMap,
    opts: QueryOptions,
) -> Response {
    let dc = server.config().datacenter.clone();
    let checks = local_checks(&server);
    let mut code = StatusCode::NOT_FOUND;
    let mut status = format!("ServiceName {name} Not Found");
    let mut all = Vec::new();
    for service in this_node_services(&server)
        .iter()
        .filter(|s| s.name == name && s.id != CONSUL_SERVICE)
    {
        let (c, health) = local_service_health(&checks, service, &dc);
        // Worst first: 503 > 429 > 200; the first instance replaces 404.
        if code == StatusCode::NOT_FOUND || c.as_u16() > code.as_u16() {
            code = c;
            status = health.aggregated_status.clone();
        }
        all.push(health);
    }
    health_answer(code, status, &all, (&opts, &headers))
}

/// This node's checks as the catalog holds them.
fn local_checks(server: &Server) -> Vec<HealthCheck> {
    let node = server.config().node.clone();
    server.read(|s| s.health_node(&node).0)
}

async fn services(State(server): State<Server>, opts: QueryOptions) -> Result<Response, ApiError> {
    let filter = Filter::from_query(&opts, Schema::Service)?;
    let dc = server.config().datacenter.clone();
    let mut map: BTreeMap<String, AgentService> = this_node_services(&server)
        .iter()
        .filter(|s| s.id != CONSUL_SERVICE)
        .map(|s| (s.id.clone(), wire::agent_service(s, Some(&dc))))
        .collect();
    if let Some(f) = filter {
        f.retain_values(&mut map);
    }
    Ok(json(&map, &opts))
}

/// Consul creates this endpoint's filter without a type: a bad selector
/// is found only when the first check is tested, and answered without the
/// `Failed to create…` prefix (none at all when there is no check).
async fn checks(State(server): State<Server>, opts: QueryOptions) -> Result<Response, ApiError> {
    let expr = Filter::parse_query(&opts)?;
    let mut map: BTreeMap<String, AgentCheck> = local_checks(&server)
        .iter()
        .filter(|c| c.check_id != SERF_HEALTH)
        .map(|c| (c.check_id.clone(), AgentCheck::from(c)))
        .collect();
    if let Some(expr) = expr.filter(|_| !map.is_empty()) {
        Filter::compile(&expr, Schema::HealthCheck)
            .map_err(ApiError::internal)?
            .retain_values(&mut map);
    }
    Ok(json(&map, &opts))
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
    let key = format!("check:{}", check.check_id);
    let ttl = check.check_type == "ttl";
    let mut reg = local_registration(&server, None, vec![check]);
    reg.bound()?;
    if ttl {
        AgentLocal::of(&server).touch_ttl(&check_id);
    }
    server.write(Command::Register(reg.clone())).await?;
    AgentLocal::of(&server).remember(key, reg);
    Ok(ok())
}

/// Consul 1.0 answers 200 for an unknown check ID too.
async fn check_deregister(
    State(server): State<Server>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    AgentLocal::of(&server).forget(&id);
    AgentLocal::of(&server).forget_registration(&format!("check:{id}"));
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

/// One member in Consul's `agent/members` shape (`wan`: the WAN pool's
/// `<node>.<dc>` names, servers only).
fn member(info: &MemberInfo, status: Status, wan: bool) -> Member {
    let mut tags: BTreeMap<String, String> = [
        ("dc", info.datacenter.clone()),
        ("build", format!("{CONSUL_VERSION}:pilotfish")),
        ("vsn", "2".to_string()),
        ("vsn_min", "2".to_string()),
        ("vsn_max", "3".to_string()),
        ("id", info.node_id.clone()),
        ("segment", String::new()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if info.server {
        tags.insert("role".into(), "consul".into());
        tags.insert("port".into(), info.port.to_string());
        tags.insert("raft_vsn".into(), "3".into());
    } else {
        tags.insert("role".into(), "node".into());
    }
    Member {
        name: if wan {
            format!("{}.{}", info.name, info.datacenter)
        } else {
            info.name.clone()
        },
        addr: info.addr.to_string(),
        port: info.port,
        tags,
        status: status.code(),
        protocol_min: 1,
        protocol_max: 5,
        protocol_cur: 2,
        delegate_min: 2,
        delegate_max: 5,
        delegate_cur: 4,
    }
}

async fn members(State(server): State<Server>, opts: QueryOptions) -> Result<Response, ApiError> {
    let filter = Filter::from_query(&opts, Schema::Member)?;
    let wan = opts
        .get("wan")
        .is_some_and(|v| !matches!(v, "0" | "false" | "False"));
    let mut list: Vec<Member> = server
        .members()
        .all(false)
        .iter()
        .filter(|(m, _)| !wan || m.server)
        .map(|(m, status)| member(m, *status, wan))
        .collect();
    super::filter::retain(filter.as_ref(), &mut list);
    Ok(json(&list, &opts))
}

/// `[{Suffrage:Voter ID:<id> Address:<addr>} ...]` as hashicorp/raft prints it.
fn configuration_text(info: &RaftInfo) -> String {
    let servers: Vec<String> = info
        .servers
        .iter()
        .map(|(_, p, voter)| {
            format!(
                "{{Suffrage:{} ID:{} Address:{}}}",
                if *voter { "Voter" } else { "Nonvoter" },
                p.node_id,
                p.addr
            )
        })
        .collect();
    format!("[{}]", servers.join(" "))
}

async fn agent_self(State(server): State<Server>, opts: QueryOptions) -> Response {
    let cfg = server.config();
    let node = cfg.node.clone();
    let (n_services, n_checks, n_ttl, n_scripts) = server.read(|s| {
        // The servers' `consul` service is the leader's, not this agent's.
        let services = s.catalog_node(&node).0.map_or(0, |ns| {
            ns.services
                .iter()
                .filter(|s| s.id != CONSUL_SERVICE)
                .count()
        });
        let checks = s.health_node(&node).0;
        let count = |t: &str| checks.iter().filter(|c| c.check_type == t).count();
        (
            services,
            checks.len().saturating_sub(1),
            count("ttl"),
            count("script"),
        )
    });
    let is_server = server.cluster().server;
    let raft = server.raft_info();
    let leader_addr = raft
        .leader
        .as_ref()
        .map(|p| p.addr.clone())
        .unwrap_or_default();
    let members = server.members().all(false);
    let count = |s: Status| {
        members
            .iter()
            .filter(|(_, st)| *st == s)
            .count()
            .to_string()
    };
    let serf = json!({
        "coordinate_resets": "0", "encrypted": "false", "event_queue": "0",
        "event_time": "1", "failed": count(Status::Failed), "health_score": "0", "intent_queue": "0",
        "left": count(Status::Left), "member_time": "1", "members": members.len().to_string(),
        "query_queue": "0", "query_time": "1",
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut stats = json!({
        "agent": {
            "check_monitors": n_scripts.to_string(),
            "check_ttls": n_ttl.to_string(),
            "checks": n_checks.to_string(),
            "services": n_services.to_string(),
        },
        "build": {"prerelease": "", "revision": "pilotfish", "version": CONSUL_VERSION},
        "consul": {
            "bootstrap": (server.cluster().bootstrap_expect == 1).to_string(),
            "known_datacenters": "1",
            "leader": (raft.state == "Leader").to_string(),
            "leader_addr": leader_addr, "server": is_server.to_string(),
        },
        "runtime": {
            "arch": std::env::consts::ARCH, "os": std::env::consts::OS,
            "cpu_count": cpus.to_string(), "goroutines": "0",
            "max_procs": cpus.to_string(), "version": format!("pilotfish {}", crate::VERSION),
        },
        "serf_lan": serf.clone(),
        "serf_wan": serf,
    });
    if is_server {
        stats["raft"] = json!({
            "applied_index": raft.applied_index.to_string(),
            "commit_index": raft.commit_index.to_string(),
            "fsm_pending": "0",
            "last_contact": match raft.last_contact {
                None => "never".to_string(),
                Some(d) if d.is_zero() => "0".to_string(),
                Some(d) => format_duration(d),
            },
            "last_log_index": raft.last_log_index.to_string(),
            "last_log_term": raft.last_log_term.to_string(),
            "last_snapshot_index": raft.last_snapshot_index.to_string(),
            "last_snapshot_term": raft.last_snapshot_term.to_string(),
            "latest_configuration": configuration_text(&raft),
            "latest_configuration_index": raft.configuration_index.to_string(),
            "num_peers": raft.num_peers.to_string(),
            "protocol_version": "3", "protocol_version_max": "3", "protocol_version_min": "0",
            "snapshot_version_max": "1", "snapshot_version_min": "0",
            "state": raft.state, "term": raft.term.to_string(),
        });
    }
    let me = server.members().me().clone();
    let body = json!({
        "Config": {
            "Datacenter": cfg.datacenter,
            "PrimaryDatacenter": cfg.datacenter,
            "NodeName": cfg.node,
            "NodeID": server.node_id(),
            "Server": is_server,
            "Revision": "pilotfish",
            "Version": CONSUL_VERSION,
            "Domain": cfg.domain,
            "AdvertiseAddr": cfg.advertise.to_string(),
            "EnableScriptChecks": cfg.enable_script_checks,
            // Not in Consul >= 1.0; Patroni's adjust_ttl reads it (int ns).
            "SessionTTLMin": 10_000_000_000u64,
        },
        "DebugConfig": match &server.cluster().log_level {
            Some(level) => json!({"LogLevel": level.current()}),
            None => json!({}),
        },
        "Coord": {"Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
        "Member": member(&me, Status::Alive, false),
        "Stats": stats,
        "Meta": {},
    });
    json(&body, &opts)
}

/// `PUT /v1/agent/join/<addr>`: a name is resolved to all its addresses,
/// each is joined; joining yourself or a member again is harmless. Fails
/// (500, Consul's text) only when no address answered.
async fn join(
    State(server): State<Server>,
    Path(addr): Path<String>,
) -> Result<Response, ApiError> {
    let port = server.cluster().server_port;
    let (host, _) = split_host_port(&addr, port);
    if host.eq_ignore_ascii_case(&server.config().node) || host.eq_ignore_ascii_case("localhost") {
        return Ok(ok());
    }
    let (targets, mut errors) =
        resolve_targets(std::slice::from_ref(&addr), port, server.cluster().resolver).await;
    let (joined, join_errors) = server.join(&targets).await;
    errors.extend(join_errors);
    if joined > 0 {
        return Ok(ok());
    }
    let head = if errors.len() == 1 {
        "1 error occurred:".to_string()
    } else {
        format!("{} errors occurred:", errors.len())
    };
    let lines: Vec<String> = errors.iter().map(|e| format!("\t* {e}")).collect();
    Err(ApiError::internal(format!(
        "{head}\n{}\n\n",
        lines.join("\n")
    )))
}

/// `force-leave <node>`: a failed member is marked left; the leader then
/// removes it from raft and the catalog. Unknown nodes answer 200 (Consul).
async fn force_leave(State(server): State<Server>, Path(node): Path<String>) -> Response {
    if server.force_leave(&node) {
        tracing::info!("force-leave of {node}");
    }
    ok()
}

/// The agent leaves the cluster gracefully, answers 200 once that is done
/// (as Consul does, so `pilotfish leave` in a preStop hook returns only when
/// the servers have let this one go), then shuts down. The leave itself is
/// bounded (`cluster::LEAVE_QUORUM_WAIT`, then every member is told); the
/// wait here is bounded too.
async fn leave(State(server): State<Server>) -> Response {
    server.request_leave();
    let _ = tokio::time::timeout(LEAVE_ANSWER_WAIT, server.left()).await;
    ok()
}

/// Longer than the leave's own bound (a quorum wait, then one probe timeout
/// to tell the members).
const LEAVE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
