//! Consul wire types for `/v1/txn`: the op list a client sends
//! (`[{"KV":{"Verb":..,"Key":..,"Value":<base64>,...}}, {"Node":{"Verb":..,
//! "Node":{..}}}, {"Service":{"Verb":..,"Node":..,"Service":{..}}},
//! {"Check":{"Verb":..,"Check":{..}}}, {"Session":{"Verb":"delete",
//! "Session":{"ID":..}}}]`, keys read case-insensitively) and the
//! `{"Results":..,"Errors":..}` answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::catalog::{AgentService, CatalogCheckBody, CatalogServiceBody, Node};
use super::gofmt::base64_decode;
use super::health::HealthCheck;
use super::kv::KvPair;
use crate::discovery::server::state::catalog as state_catalog;
use crate::discovery::server::state::kv::{KvEntry, TxnError, TxnOp as KvOp, TxnOutcome};
use crate::discovery::server::state::txn::{self, CatalogVerb, TxnOp, TxnResult};

/// The answer body of a txn, committed (200) or rolled back (409).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TxnResponse {
    #[serde(rename = "Results")]
    pub results: Option<Vec<TxnResultEntry>>,
    #[serde(rename = "Errors")]
    pub errors: Option<Vec<TxnErrorEntry>>,
}

/// One result: exactly one of the fields is set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TxnResultEntry {
    #[serde(rename = "KV", skip_serializing_if = "Option::is_none")]
    pub kv: Option<KvPair>,
    #[serde(rename = "Node", skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(rename = "Service", skip_serializing_if = "Option::is_none")]
    pub service: Option<AgentService>,
    #[serde(rename = "Check", skip_serializing_if = "Option::is_none")]
    pub check: Option<HealthCheck>,
}

impl TxnResultEntry {
    fn kv(e: &KvEntry) -> TxnResultEntry {
        TxnResultEntry {
            kv: Some(KvPair::from(e)),
            node: None,
            service: None,
            check: None,
        }
    }

    fn from_state(r: &TxnResult, datacenter: &str) -> TxnResultEntry {
        let none = TxnResultEntry {
            kv: None,
            node: None,
            service: None,
            check: None,
        };
        match r {
            TxnResult::Kv(e) => TxnResultEntry::kv(e),
            TxnResult::Node(n) => TxnResultEntry {
                node: Some(Node::from_state(n, datacenter)),
                ..none
            },
            TxnResult::Service(s) => TxnResultEntry {
                service: Some(AgentService::with_indexes(s)),
                ..none
            },
            TxnResult::Check(c) => TxnResultEntry {
                check: Some(HealthCheck::from(c)),
                ..none
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnErrorEntry {
    #[serde(rename = "OpIndex")]
    pub op_index: usize,
    #[serde(rename = "What")]
    pub what: String,
}

impl TxnResponse {
    pub fn committed(entries: &[KvEntry]) -> TxnResponse {
        TxnResponse {
            results: Some(entries.iter().map(TxnResultEntry::kv).collect()),
            errors: None,
        }
    }

    pub fn rolled_back(errors: &[TxnError]) -> TxnResponse {
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

    pub fn from_outcome(outcome: &TxnOutcome) -> TxnResponse {
        match outcome {
            TxnOutcome::Committed(entries) => TxnResponse::committed(entries),
            TxnOutcome::RolledBack(errors) => TxnResponse::rolled_back(errors),
        }
    }

    /// The answer to a txn with catalog ops; nodes show `datacenter`.
    pub fn from_results(outcome: &txn::TxnOutcome, datacenter: &str) -> TxnResponse {
        match outcome {
            txn::TxnOutcome::Committed(results) => TxnResponse {
                results: Some(
                    results
                        .iter()
                        .map(|r| TxnResultEntry::from_state(r, datacenter))
                        .collect(),
                ),
                errors: None,
            },
            txn::TxnOutcome::RolledBack(errors) => TxnResponse::rolled_back(errors),
        }
    }
}

/// A parsed op list: each op, or the per-op error Consul's state store would
/// report for it (an unknown verb rolls the txn back with a 409).
pub type ParsedOps = Vec<Result<TxnOp, String>>;

/// Parse a txn body. `Err` is the text after `Failed to parse body: ` (400).
pub fn parse_ops(body: &[u8]) -> Result<ParsedOps, String> {
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
    let mut ops = op.into_iter();
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
    let mut rest = match super::agent::normalize_keys(Value::Object(fields)) {
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

/// A `Node` object of a txn op.
#[derive(Debug, Default, Deserialize)]
struct NodeBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default, rename = "taggedaddresses")]
    tagged_addresses: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    meta: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, rename = "modifyindex")]
    modify_index: Option<u64>,
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
    let mut service = body.into_state();
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
    let check = body
        .into_state(&node)
        .map_err(|e| format!("Check.Check.Status: {e}"))?;
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
