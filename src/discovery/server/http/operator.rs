//! `/v1/operator`: the raft configuration (consul-wire.md §6.8), leadership
//! transfer and peer removal, autopilot's configuration, health and state,
//! the keyring and usage (consul-breadth.md §7), in Consul's shapes and
//! with its error texts. The work is `server::operator`'s.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Serialize;

use super::query::{self, json, ApiError, QueryOptions};
use crate::discovery::api::gofmt;
use crate::discovery::api::operator::{
    AutopilotConfiguration, AutopilotServer, AutopilotState, KeyringRequest, KeyringResponse,
    OperatorHealthReply, ServerHealth, ServiceUsage, TransferLeaderResponse, UsageResponse,
};
use crate::discovery::server::http::agent::CONSUL_VERSION;
use crate::discovery::server::operator::{ClusterHealth, KeyringOp, KeyringPool, OperatorError};
use crate::discovery::server::state::autopilot::AutopilotConfig;
use crate::discovery::server::state::{Command, Outcome};
use crate::discovery::server::Server;

#[derive(Serialize)]
struct RaftConfiguration {
    #[serde(rename = "Servers")]
    servers: Vec<RaftServer>,
    #[serde(rename = "Index")]
    index: u64,
}

#[derive(Serialize)]
struct RaftServer {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Node")]
    node: String,
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "Leader")]
    leader: bool,
    #[serde(rename = "ProtocolVersion")]
    protocol_version: &'static str,
    #[serde(rename = "Voter")]
    voter: bool,
}

pub fn routes() -> Router<Server> {
    Router::new()
        .route(
            "/v1/operator/raft/configuration",
            get(configuration).fallback(query::reject_method),
        )
        .route(
            "/v1/operator/raft/transfer-leader",
            post(transfer_leader).fallback(query::reject_method),
        )
        .route(
            "/v1/operator/raft/peer",
            delete(remove_peer).fallback(query::reject_method),
        )
        .route(
            "/v1/operator/autopilot/configuration",
            get(autopilot_get)
                .put(autopilot_put)
                .fallback(query::reject_method),
        )
        .route(
            "/v1/operator/autopilot/health",
            get(autopilot_health).fallback(query::reject_method),
        )
        .route(
            "/v1/operator/autopilot/state",
            get(autopilot_state).fallback(query::reject_method),
        )
        .route(
            "/v1/operator/keyring",
            get(keyring)
                .post(keyring)
                .put(keyring)
                .delete(keyring)
                .fallback(query::reject_method),
        )
        .route(
            "/v1/operator/usage",
            get(usage).fallback(query::reject_method),
        )
}

async fn configuration(
    State(server): State<Server>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let info = server.raft_info();
    let leader = info.leader.as_ref().map(|p| p.addr.clone());
    let body = RaftConfiguration {
        servers: info
            .servers
            .into_iter()
            .map(|(_, p, voter)| RaftServer {
                leader: leader.as_deref() == Some(p.addr.as_str()),
                id: p.node_id,
                node: p.name,
                address: p.addr,
                protocol_version: "3",
                voter,
            })
            .collect(),
        index: info.configuration_index,
    };
    Ok(json(&body, &opts))
}

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

/// `POST /v1/operator/raft/transfer-leader[?id=]`: `{"Success":true}`.
async fn transfer_leader(
    State(server): State<Server>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let id = opts.get("id").filter(|v| !v.is_empty()).map(String::from);
    server.transfer_leader(id).await?;
    Ok(json(&TransferLeaderResponse { success: true }, &opts))
}

/// `DELETE /v1/operator/raft/peer?id=|address=`: both count by presence.
async fn remove_peer(
    State(server): State<Server>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let (by_id, value) = match (opts.get("id"), opts.get("address")) {
        (None, None) => {
            return Err(ApiError::bad_request(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("Must specify only one of ?id or ?address"))
        }
        (Some(id), None) => (true, id.to_string()),
        (None, Some(addr)) => (false, addr.to_string()),
    };
    server.remove_peer(by_id, &value).await?;
    Ok(().into_response())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn wire_config(c: &AutopilotConfig) -> AutopilotConfiguration {
    AutopilotConfiguration {
        cleanup_dead_servers: c.cleanup_dead_servers,
        last_contact_threshold: Duration::from_nanos(c.last_contact_threshold_ns),
        max_trailing_logs: c.max_trailing_logs,
        min_quorum: c.min_quorum,
        server_stabilization_time: Duration::from_nanos(c.server_stabilization_time_ns),
        redundancy_zone_tag: c.redundancy_zone_tag.clone(),
        disable_upgrade_migration: c.disable_upgrade_migration,
        upgrade_version_tag: c.upgrade_version_tag.clone(),
        create_index: c.create_index,
        modify_index: c.modify_index,
    }
}

/// `GET /v1/operator/autopilot/configuration`.
async fn autopilot_get(
    State(server): State<Server>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    server
        .read_barrier(read_mode(&opts))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json(&wire_config(&server.autopilot_config()), &opts))
}

fn read_mode(opts: &QueryOptions) -> crate::discovery::server::Consistency {
    use crate::discovery::server::Consistency;
    if opts.stale {
        Consistency::Stale
    } else if opts.consistent {
        Consistency::Consistent
    } else {
        Consistency::Default
    }
}

/// `PUT /v1/operator/autopilot/configuration[?cas=]`: the body decoded
/// over the defaults; `true`/`false` (always `true` without `?cas`).
async fn autopilot_put(
    State(server): State<Server>,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let conf = AutopilotConfiguration::decode_over_defaults(&body)
        .map_err(|e| ApiError::bad_request(format!("Error parsing autopilot config: {e}")))?;
    let cas = match opts.get("cas") {
        None => None,
        Some(v) => Some(query::parse_uint(v).map_err(|e| {
            ApiError::bad_request(format!("Error parsing cas value: {}", e.message))
        })?),
    };
    let config = AutopilotConfig {
        cleanup_dead_servers: conf.cleanup_dead_servers,
        last_contact_threshold_ns: nanos(conf.last_contact_threshold),
        max_trailing_logs: conf.max_trailing_logs,
        min_quorum: conf.min_quorum,
        server_stabilization_time_ns: nanos(conf.server_stabilization_time),
        redundancy_zone_tag: conf.redundancy_zone_tag,
        disable_upgrade_migration: conf.disable_upgrade_migration,
        upgrade_version_tag: conf.upgrade_version_tag,
        create_index: 0,
        modify_index: 0,
    };
    let written = server.write(Command::AutopilotSet { config, cas }).await?;
    let ok = matches!(written.outcome, Outcome::Bool(true));
    Ok(json(&ok, &opts))
}

fn since_text(t: std::time::SystemTime) -> String {
    gofmt::rfc3339_utc(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn contact_text(ms: Option<u64>) -> String {
    gofmt::format_duration(Duration::from_millis(ms.unwrap_or(0)))
}

/// 200 when healthy, 429 with the same body when not (Consul's).
fn health_status(healthy: bool) -> StatusCode {
    if healthy {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    }
}

/// `GET /v1/operator/autopilot/health`.
async fn autopilot_health(
    State(server): State<Server>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let h: ClusterHealth = server.cluster_health().await;
    let body = OperatorHealthReply {
        healthy: h.healthy,
        failure_tolerance: h.failure_tolerance,
        servers: h
            .servers
            .iter()
            .map(|s| ServerHealth {
                id: s.peer.node_id.clone(),
                name: s.peer.name.clone(),
                address: s.peer.addr.clone(),
                serf_status: s.serf_status.to_string(),
                version: CONSUL_VERSION.to_string(),
                leader: s.leader,
                last_contact: contact_text(s.stats.and_then(|x| x.last_contact_ms)),
                last_term: s.stats.map_or(0, |x| x.term),
                last_index: s.stats.map_or(0, |x| x.last_index),
                healthy: s.healthy,
                voter: s.voter,
                stable_since: since_text(s.stable_since),
            })
            .collect(),
    };
    let mut resp = json(&body, &opts);
    *resp.status_mut() = health_status(h.healthy);
    Ok(resp)
}

/// `GET /v1/operator/autopilot/state`.
async fn autopilot_state(
    State(server): State<Server>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let h = server.cluster_health().await;
    let leader = h
        .servers
        .iter()
        .find(|s| s.leader)
        .map(|s| s.peer.node_id.clone())
        .unwrap_or_default();
    let body = AutopilotState {
        healthy: h.healthy,
        failure_tolerance: h.failure_tolerance,
        optimistic_failure_tolerance: h.optimistic_failure_tolerance,
        leader,
        voters: h
            .servers
            .iter()
            .filter(|s| s.voter)
            .map(|s| s.peer.node_id.clone())
            .collect(),
        servers: h
            .servers
            .iter()
            .map(|s| {
                let status = match (s.leader, s.voter) {
                    (true, _) => "leader",
                    (false, true) => "voter",
                    (false, false) => "non-voter",
                };
                (
                    s.peer.node_id.clone(),
                    AutopilotServer {
                        id: s.peer.node_id.clone(),
                        name: s.peer.name.clone(),
                        address: s.peer.addr.clone(),
                        node_status: s.serf_status.to_string(),
                        version: CONSUL_VERSION.to_string(),
                        last_contact: contact_text(s.stats.and_then(|x| x.last_contact_ms)),
                        last_term: s.stats.map_or(0, |x| x.term),
                        last_index: s.stats.map_or(0, |x| x.last_index),
                        healthy: s.healthy,
                        stable_since: since_text(s.stable_since),
                        read_replica: false,
                        status: status.to_string(),
                        meta: BTreeMap::new(),
                        node_type: "voter".to_string(),
                    },
                )
            })
            .collect(),
    };
    Ok(json(&body, &opts))
}

/// `relay-factor` (0–5) and `local-only` (GET only), checked as Consul does.
fn keyring_params(opts: &QueryOptions, method: &Method) -> Result<(), ApiError> {
    if let Some(v) = opts.get("relay-factor").filter(|v| !v.is_empty()) {
        let n: i64 = v.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "Error parsing relay factor: strconv.Atoi: parsing {}: invalid syntax",
                gofmt::go_quote(v)
            ))
        })?;
        if !(0..=5).contains(&n) {
            return Err(ApiError::bad_request(
                "Invalid relay-factor: Relay factor must be in range: [0, 5]",
            ));
        }
    }
    if opts.get("local-only").is_some_and(|v| v == "true") && *method != Method::GET {
        return Err(ApiError::bad_request(
            "Invalid use of local-only: local-only can only be used for GET requests",
        ));
    }
    Ok(())
}

/// `/v1/operator/keyring`: GET lists, POST installs, PUT uses, DELETE
/// removes. Any member's failure is Consul's 500 with every error.
async fn keyring(
    State(server): State<Server>,
    method: Method,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    keyring_params(&opts, &method)?;
    let op = if method == Method::GET {
        KeyringOp::List
    } else {
        let req: KeyringRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
        match method {
            Method::POST => KeyringOp::Install(req.key),
            Method::PUT => KeyringOp::Use(req.key),
            _ => KeyringOp::Remove(req.key),
        }
    };
    let local_only = opts.get("local-only").is_some_and(|v| v == "true");
    let pools = if local_only {
        let me = server.members().me();
        vec![KeyringPool {
            wan: false,
            answers: vec![(me.name.clone(), server.keyring_local(&op))],
        }]
    } else {
        server.keyring(op.clone()).await
    };
    let dc = server.config().datacenter.clone();
    let responses: Vec<KeyringResponse> = pools.iter().map(|p| pool_response(p, &dc)).collect();
    if let Some(errors) = keyring_errors(&responses) {
        return Err(ApiError::internal(errors));
    }
    if op == KeyringOp::List {
        Ok(json(&responses, &opts))
    } else {
        Ok(().into_response())
    }
}

/// One pool's answers as Consul's `KeyringResponse`: key counts over the
/// nodes that answered, failures by node in `Messages` (WAN members are
/// named `<node>.<dc>`, as serf's WAN pool names them).
fn pool_response(pool: &KeyringPool, dc: &str) -> KeyringResponse {
    let mut keys: BTreeMap<String, u64> = BTreeMap::new();
    let mut primary_keys: BTreeMap<String, u64> = BTreeMap::new();
    let mut messages = BTreeMap::new();
    for (node, answer) in &pool.answers {
        let node = if pool.wan {
            format!("{node}.{dc}")
        } else {
            node.clone()
        };
        match answer {
            Ok(list) => {
                for k in list {
                    *keys.entry(k.clone()).or_default() += 1;
                }
                if let Some(p) = list.first() {
                    *primary_keys.entry(p.clone()).or_default() += 1;
                }
            }
            Err(e) => {
                messages.insert(node, e.clone());
            }
        }
    }
    KeyringResponse {
        wan: pool.wan,
        datacenter: dc.to_string(),
        segment: String::new(),
        messages,
        keys,
        primary_keys,
        num_nodes: pool.answers.len() as u64,
    }
}

/// Consul's `keyringErrorsOrNil` in go-multierror's format, or `None`.
fn keyring_errors(responses: &[KeyringResponse]) -> Option<String> {
    let mut errors = Vec::new();
    for r in responses.iter().filter(|r| !r.messages.is_empty()) {
        let pool = if r.wan {
            "WAN".to_string()
        } else {
            format!("{} (LAN)", r.datacenter)
        };
        let ok = r.num_nodes - r.messages.len() as u64;
        errors.push(format!(
            "{pool} error: {ok}/{} nodes reported success",
            r.num_nodes
        ));
        errors.extend(r.messages.iter().map(|(node, m)| format!("{node}: {m}")));
    }
    if errors.is_empty() {
        return None;
    }
    let head = if errors.len() == 1 {
        "1 error occurred:".to_string()
    } else {
        format!("{} errors occurred:", errors.len())
    };
    let items: String = errors.iter().map(|e| format!("\n\t* {e}")).collect();
    Some(format!("{head}{items}\n\n"))
}

/// `GET /v1/operator/usage`: services and instances of this datacenter,
/// the query meta in the body.
async fn usage(State(server): State<Server>, opts: QueryOptions) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    server
        .read_barrier(read_mode(&opts))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (services, instances, billable, index) = server.read(|s| {
        let (names, index) = s.catalog_services();
        let mut instances = 0u64;
        let mut billable = 0u64;
        for name in names.keys() {
            let n = s.catalog_service(name, &[]).0.len() as u64;
            instances += n;
            if name != "consul" {
                billable += n;
            }
        }
        (names.len() as u64, instances, billable, index)
    });
    let connect = [
        "api-gateway",
        "connect-native",
        "connect-proxy",
        "ingress-gateway",
        "mesh-gateway",
        "terminating-gateway",
    ]
    .iter()
    .map(|k| (k.to_string(), 0))
    .collect();
    let (known_leader, last_contact) = server.leader_status();
    let body = UsageResponse {
        usage: BTreeMap::from([(
            server.config().datacenter.clone(),
            ServiceUsage {
                services,
                service_instances: instances,
                connect_service_instances: connect,
                billable_service_instances: billable,
            },
        )]),
        index,
        last_contact,
        known_leader,
        consistency_level: if opts.stale {
            "stale"
        } else if opts.consistent {
            "consistent"
        } else {
            "leader"
        }
        .to_string(),
        not_modified: false,
        backend: 0,
        results_filtered_by_acls: false,
    };
    let mut resp = json(&body, &opts);
    query::query_headers(&mut resp, index);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_errors_read_like_go_multierror() {
        let r = KeyringResponse {
            wan: false,
            datacenter: "dc1".into(),
            segment: String::new(),
            messages: BTreeMap::from([(
                "srv1".to_string(),
                "Keyring is empty (encryption not enabled)".to_string(),
            )]),
            keys: BTreeMap::new(),
            primary_keys: BTreeMap::new(),
            num_nodes: 1,
        };
        assert_eq!(
            keyring_errors(&[r]).as_deref(),
            Some(
                "2 errors occurred:\n\t* dc1 (LAN) error: 0/1 nodes reported success\n\t* srv1: Keyring is empty (encryption not enabled)\n\n"
            )
        );
    }
}
