//! `PUT /v1/txn` (consul-wire.md §4.5): KV, Node, Service, Check and
//! Session operations; all ops apply or none; 200
//! `{"Results":[...],"Errors":null}` or 409 with the errors. A txn made only
//! of reads is answered from the state without a write, with the query
//! headers. A KV-only txn stays the `KvTxn` command older servers apply.
//!
//! The op list (`[{"KV":{"Verb":..,"Key":..,"Value":<base64>,...}},
//! {"Node":{"Verb":..,"Node":{..}}}, {"Service":{"Verb":..,"Node":..,
//! "Service":{..}}}, {"Check":{"Verb":..,"Check":{..}}},
//! {"Session":{"Verb":"delete","Session":{"ID":..}}}]`, keys read
//! case-insensitively) is read here straight into state ops, and the answer
//! built from the state's results.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;

use serde_json::Value;

use super::query::{self, json, json_with_index, ApiError, QueryOptions};
use super::wire;
use crate::discovery::api::agent::normalize_keys;
use crate::discovery::api::catalog::{CatalogCheckBody, CatalogServiceBody};
use crate::discovery::api::gofmt::base64_decode;
use crate::discovery::api::health::HealthCheck;
use crate::discovery::api::kv::KvPair;
use crate::discovery::api::txn::{NodeBody, TxnErrorEntry, TxnResponse, TxnResultEntry};
use crate::discovery::server::state::catalog as state_catalog;
use crate::discovery::server::state::kv::{KvEntry, TxnError, TxnOp as KvOp, TxnOutcome};
use crate::discovery::server::state::txn::{self, CatalogVerb, TxnOp, TxnResult};
use crate::discovery::server::state::{Command, Outcome};
use crate::discovery::server::Server;

/// Consul's `maxTxnOps` (older releases; newer allow 128).
pub const MAX_OPS: usize = 64;
/// Consul's default `txn_max_req_len`.
pub const MAX_BODY: usize = 512 * 1024;

pub fn routes() -> Router<Server> {
    Router::new().route(
        "/v1/txn",
        put(txn)
            .fallback(query::reject_method)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY * 2)),
    )
}

async fn txn(
    State(server): State<Server>,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large(format!(
            "Request body({} bytes) too large, max size: {MAX_BODY} bytes. See {}.",
            body.len(),
            "https://www.consul.io/docs/agent/config/config-files#txn_max_req_len"
        )));
    }
    let parsed = parse_ops(&body)
        .map_err(|e| ApiError::bad_request(format!("Failed to parse body: {e}")))?;
    drop(body);
    if parsed.len() > MAX_OPS {
        return Err(ApiError::too_large(format!(
            "Transaction contains too many operations ({} > {MAX_OPS})",
            parsed.len()
        )));
    }
    let mut ops = Vec::with_capacity(parsed.len());
    let mut errors = Vec::new();
    for (op_index, op) in parsed.into_iter().enumerate() {
        match op {
            Ok(mut op) => match op.bound() {
                Ok(()) => ops.push(op),
                Err(e) => errors.push(TxnError {
                    op_index,
                    what: e.to_string(),
                }),
            },
            Err(what) => errors.push(TxnError { op_index, what }),
        }
    }
    if !errors.is_empty() {
        return Ok(answer(&TxnOutcome::RolledBack(errors), &opts, None));
    }
    let kv_only: Option<Vec<_>> = ops
        .iter()
        .map(|op| match op {
            TxnOp::Kv(op) => Some(op.clone()),
            _ => None,
        })
        .collect();
    if let Some(ops) = kv_only {
        if let Some((outcome, index)) = server.read(|s| s.kv_txn_read(&ops)) {
            return Ok(answer(&outcome, &opts, Some(index)));
        }
        return match server.write(Command::KvTxn { ops }).await?.outcome {
            Outcome::Txn(outcome) => Ok(answer(&outcome, &opts, None)),
            other => Err(ApiError::internal(format!(
                "unexpected outcome of a txn: {other:?}"
            ))),
        };
    }
    let dc = &server.config().datacenter;
    if let Some((outcome, index)) = server.read(|s| s.txn_read(&ops)) {
        return Ok(answer_results(&outcome, dc, &opts, Some(index)));
    }
    match server.write(Command::Txn { ops }).await?.outcome {
        Outcome::TxnResults(outcome) => Ok(answer_results(&outcome, dc, &opts, None)),
        other => Err(ApiError::internal(format!(
            "unexpected outcome of a txn: {other:?}"
        ))),
    }
}

fn answer(outcome: &TxnOutcome, opts: &QueryOptions, index: Option<u64>) -> Response {
    let rolled_back = matches!(outcome, TxnOutcome::RolledBack(_));
    respond(&kv_response(outcome), rolled_back, opts, index)
}

fn answer_results(
    outcome: &txn::TxnOutcome,
    datacenter: &str,
    opts: &QueryOptions,
    index: Option<u64>,
) -> Response {
    let rolled_back = matches!(outcome, txn::TxnOutcome::RolledBack(_));
    respond(
        &results_response(outcome, datacenter),
        rolled_back,
        opts,
        index,
    )
}

fn respond(
    body: &TxnResponse,
    rolled_back: bool,
    opts: &QueryOptions,
    index: Option<u64>,
) -> Response {
    let mut r = match index {
        Some(i) => json_with_index(body, i, opts),
        None => json(body, opts),
    };
    if rolled_back {
        *r.status_mut() = StatusCode::CONFLICT;
    }
    r.into_response()
}

// ----- the answer -----

fn kv_result(e: &KvEntry) -> TxnResultEntry {
    TxnResultEntry {
        kv: Some(KvPair::from(e)),
        node: None,
        service: None,
        check: None,
    }
}

fn result(r: &TxnResult, datacenter: &str) -> TxnResultEntry {
    let none = TxnResultEntry {
        kv: None,
        node: None,
        service: None,
        check: None,
    };
    match r {
        TxnResult::Kv(e) => kv_result(e),
        TxnResult::Node(n) => TxnResultEntry {
            node: Some(wire::node(n, datacenter)),
            ..none
        },
        TxnResult::Service(s) => TxnResultEntry {
            service: Some(wire::service_with_indexes(s)),
            ..none
        },
        TxnResult::Check(c) => TxnResultEntry {
            check: Some(HealthCheck::from(c)),
            ..none
        },
    }
}

fn rolled_back(errors: &[TxnError]) -> TxnResponse {
    TxnResponse {
        results: None,
        errors: Some(
            errors
                .iter()
                .map(|e| TxnErrorEntry {
                    op_index: e.op_index,
                    what: e.what.clone(),
                })
                .collect(),
        ),
    }
}

/// The answer to a KV-only txn.
fn kv_response(outcome: &TxnOutcome) -> TxnResponse {
    match outcome {
        TxnOutcome::Committed(entries) => TxnResponse {
            results: Some(entries.iter().map(kv_result).collect()),
            errors: None,
        },
        TxnOutcome::RolledBack(errors) => rolled_back(errors),
    }
}

/// The answer to a txn with catalog ops; nodes show `datacenter`.
fn results_response(outcome: &txn::TxnOutcome, datacenter: &str) -> TxnResponse {
    match outcome {
        txn::TxnOutcome::Committed(results) => TxnResponse {
            results: Some(results.iter().map(|r| result(r, datacenter)).collect()),
            errors: None,
        },
        txn::TxnOutcome::RolledBack(errors) => rolled_back(errors),
    }
}

// ----- the op list -----

/// A parsed op list: each op, or the per-op error Consul's state store would
/// report for it (an unknown verb rolls the txn back with a 409).
type ParsedOps = Vec<Result<TxnOp, String>>;

/// Parse a txn body. `Err` is the text after `Failed to parse body: ` (400).
fn parse_ops(body: &[u8]) -> Result<ParsedOps, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let items = match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        _ => return Err("expected a JSON array of operations".to_string()),
    };
    items.into_iter().map(parse_op).collect()
}

fn parse_op(item: Value) -> Result<Result<TxnOp, String>, String> {
    let Value::Object(op) = item else {
        return Err("each operation must be an object".to_string());
    };
    // HashiCorp's Go client sends every kind, the unused ones `null`:
    // `{"KV":{...},"Node":null,"Service":null,"Check":null,"Session":null}`.
    let mut ops = op.into_iter().filter(|(_, v)| !v.is_null());
    let (Some((kind, fields)), None) = (ops.next(), ops.next()) else {
        return Err(
            "each operation must have exactly one of KV, Node, Service, Check or Session"
                .to_string(),
        );
    };
    let Value::Object(fields) = fields else {
        return Err(format!("{kind}: expected an object"));
    };
    match kind.to_ascii_lowercase().as_str() {
        "kv" => kv_op(fields).map(|op| op.map(TxnOp::Kv)),
        "node" => node_op(fields),
        "service" => service_op(fields),
        "check" => check_op(fields),
        "session" => session_op(fields),
        other => Err(format!(
            "unsupported operation type {other:?}: use KV, Node, Service, Check or Session"
        )),
    }
}

fn kv_op(fields: serde_json::Map<String, Value>) -> Result<Result<KvOp, String>, String> {
    let (mut verb, mut key, mut session) = (String::new(), String::new(), String::new());
    let (mut value, mut flags, mut index) = (Vec::new(), 0u64, 0u64);
    for (k, v) in fields {
        match k.to_ascii_lowercase().as_str() {
            "verb" => verb = text(v, "Verb")?,
            "key" => key = text(v, "Key")?,
            "session" => session = text(v, "Session")?,
            "value" => value = base64_decode(&text(v, "Value")?)?,
            "flags" => flags = number(v, "Flags")?,
            "index" => index = number(v, "Index")?,
            _ => {}
        }
    }
    Ok(Ok(match verb.as_str() {
        "set" => KvOp::Set { key, value, flags },
        "cas" => KvOp::Cas {
            key,
            value,
            flags,
            index,
        },
        "lock" => KvOp::Lock {
            key,
            value,
            flags,
            session,
        },
        "unlock" => KvOp::Unlock {
            key,
            value,
            flags,
            session,
        },
        "get" => KvOp::Get { key },
        "get-tree" => KvOp::GetTree { prefix: key },
        "check-index" => KvOp::CheckIndex { key, index },
        "check-session" => KvOp::CheckSession { key, session },
        "check-not-exists" => KvOp::CheckNotExists { key },
        "delete" => KvOp::Delete { key },
        "delete-tree" => KvOp::DeleteTree { prefix: key },
        "delete-cas" => KvOp::DeleteCas { key, index },
        other => return Ok(Err(format!("unknown KV verb {other:?}"))),
    }))
}

/// The parts of a catalog or session op.
struct OpFields {
    /// `None`: a verb Consul does not know (`word` says which).
    verb: Option<CatalogVerb>,
    word: String,
    /// The named object (`Node`, `Service`, `Check`, `Session`).
    body: Value,
    /// The other fields (a service op's `Node`).
    rest: serde_json::Map<String, Value>,
}

/// Split an op into its `Verb` and the named object, with keys normalised
/// as Consul's decoder matches them.
fn op_fields(
    kind: &str,
    fields: serde_json::Map<String, Value>,
    object: &str,
) -> Result<OpFields, String> {
    let mut rest = match normalize_keys(Value::Object(fields)) {
        Value::Object(f) => f,
        _ => unreachable!("normalize_keys keeps an object an object"),
    };
    let word = text(
        rest.remove("verb").unwrap_or(Value::Null),
        &format!("{kind}.Verb"),
    )?;
    let body = rest.remove(object).unwrap_or(Value::Null);
    let verb = match word.as_str() {
        "set" => Some(CatalogVerb::Set),
        "cas" => Some(CatalogVerb::Cas),
        "get" => Some(CatalogVerb::Get),
        "delete" => Some(CatalogVerb::Delete),
        "delete-cas" => Some(CatalogVerb::DeleteCas),
        _ => None,
    };
    Ok(OpFields {
        verb,
        word,
        body,
        rest,
    })
}

fn object<T: serde::de::DeserializeOwned + Default>(v: Value, name: &str) -> Result<T, String> {
    match v {
        Value::Null => Ok(T::default()),
        v => serde_json::from_value(v).map_err(|e| format!("{name}: {e}")),
    }
}

fn node_op(fields: serde_json::Map<String, Value>) -> Result<Result<TxnOp, String>, String> {
    let op = op_fields("Node", fields, "node")?;
    let body: NodeBody = object(op.body, "Node.Node")?;
    let Some(verb) = op.verb else {
        return Ok(Err(format!("unknown Node verb {:?}", op.word)));
    };
    let name = body.node.unwrap_or_default();
    if name.is_empty() {
        return Err("Node.Node.Node: the node name is required".to_string());
    }
    Ok(Ok(TxnOp::Node {
        verb,
        node: state_catalog::Node {
            name,
            id: body.id.unwrap_or_default(),
            address: body.address.unwrap_or_default(),
            tagged_addresses: body.tagged_addresses.unwrap_or_default(),
            meta: body.meta.unwrap_or_default(),
            create_index: 0,
            modify_index: body.modify_index.unwrap_or(0),
        },
    }))
}

fn service_op(fields: serde_json::Map<String, Value>) -> Result<Result<TxnOp, String>, String> {
    let mut op = op_fields("Service", fields, "service")?;
    let node = text(
        op.rest.remove("node").unwrap_or(Value::Null),
        "Service.Node",
    )?;
    let body: CatalogServiceBody = object(op.body, "Service.Service")?;
    let Some(verb) = op.verb else {
        return Ok(Err(format!("unknown Service verb {:?}", op.word)));
    };
    if node.is_empty() {
        return Err("Service.Node: the node name is required".to_string());
    }
    let mut service = wire::service(body);
    if service.id.is_empty() {
        service.id = service.name.clone();
    }
    if service.id.is_empty() {
        return Err("Service.Service: an ID or a Service name is required".to_string());
    }
    Ok(Ok(TxnOp::Service {
        verb,
        node,
        service,
    }))
}

fn check_op(fields: serde_json::Map<String, Value>) -> Result<Result<TxnOp, String>, String> {
    let op = op_fields("Check", fields, "check")?;
    let body: CatalogCheckBody = object(op.body, "Check.Check")?;
    let Some(verb) = op.verb else {
        return Ok(Err(format!("unknown Check verb {:?}", op.word)));
    };
    let node = body.node.clone().unwrap_or_default();
    if node.is_empty() {
        return Err("Check.Check.Node: the node name is required".to_string());
    }
    let check = wire::check(body, &node).map_err(|e| format!("Check.Check.Status: {e}"))?;
    if check.check_id.is_empty() {
        return Err("Check.Check: a CheckID or a Name is required".to_string());
    }
    Ok(Ok(TxnOp::Check { verb, check }))
}

fn session_op(fields: serde_json::Map<String, Value>) -> Result<Result<TxnOp, String>, String> {
    let op = op_fields("Session", fields, "session")?;
    if op.word != "delete" {
        return Ok(Err(format!("unknown Session verb {:?}", op.word)));
    }
    let id = match op.body {
        Value::Object(mut s) => text(s.remove("id").unwrap_or(Value::Null), "Session.Session.ID")?,
        _ => String::new(),
    };
    if id.is_empty() {
        return Err("Session.Session.ID: the session ID is required".to_string());
    }
    Ok(Ok(TxnOp::SessionDelete { id }))
}

fn text(v: Value, name: &str) -> Result<String, String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        other => Err(format!("{name}: expected a string, got {other}")),
    }
}

fn number(v: Value, name: &str) -> Result<u64, String> {
    match &v {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{name}: expected an unsigned integer, got {n}")),
        other => Err(format!("{name}: expected an unsigned integer, got {other}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_verbs_and_base64_values() {
        let ops = parse_ops(
            br#"[{"KV":{"Verb":"set","Key":"a","Value":"aGk=","Flags":7}},
                 {"kv":{"verb":"cas","key":"b","index":3}},
                 {"KV":{"Verb":"nope","Key":"c"}}]"#,
        )
        .unwrap();
        assert_eq!(
            ops[0],
            Ok(TxnOp::Kv(KvOp::Set {
                key: "a".into(),
                value: b"hi".to_vec(),
                flags: 7
            }))
        );
        assert!(matches!(ops[1], Ok(TxnOp::Kv(KvOp::Cas { index: 3, .. }))));
        assert_eq!(ops[2], Err("unknown KV verb \"nope\"".to_string()));
        assert!(parse_ops(br#"[{"KV":{"Verb":"set","Value":"!!"}}]"#).is_err());
    }
}
