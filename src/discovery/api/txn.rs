//! Consul wire types for `/v1/txn` (KV operations only): the op list a client
//! sends (`[{"KV":{"Verb":..,"Key":..,"Value":<base64>,...}}]`, keys read
//! case-insensitively) and the `{"Results":..,"Errors":..}` answer.

use serde::Serialize;
use serde_json::Value;

use super::kv::{base64_decode, KvPair};
use crate::discovery::server::state::kv::{KvEntry, TxnError, TxnOp, TxnOutcome};

/// The answer body of a txn, committed (200) or rolled back (409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnResponse {
    #[serde(rename = "Results")]
    pub results: Option<Vec<TxnResult>>,
    #[serde(rename = "Errors")]
    pub errors: Option<Vec<TxnErrorEntry>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnResult {
    #[serde(rename = "KV")]
    pub kv: KvPair,
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
            results: Some(
                entries
                    .iter()
                    .map(|e| TxnResult {
                        kv: KvPair::from(e),
                    })
                    .collect(),
            ),
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
    let mut kv = None;
    for (k, v) in op {
        match k.to_ascii_lowercase().as_str() {
            "kv" => kv = Some(v),
            other => {
                return Err(format!(
                    "unsupported operation type {other:?}: only KV operations are served"
                ))
            }
        }
    }
    let Some(Value::Object(fields)) = kv else {
        return Err("operation without a KV object".to_string());
    };
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
        "set" => TxnOp::Set { key, value, flags },
        "cas" => TxnOp::Cas {
            key,
            value,
            flags,
            index,
        },
        "lock" => TxnOp::Lock {
            key,
            value,
            flags,
            session,
        },
        "unlock" => TxnOp::Unlock {
            key,
            value,
            flags,
            session,
        },
        "get" => TxnOp::Get { key },
        "get-tree" => TxnOp::GetTree { prefix: key },
        "check-index" => TxnOp::CheckIndex { key, index },
        "check-session" => TxnOp::CheckSession { key, session },
        "check-not-exists" => TxnOp::CheckNotExists { key },
        "delete" => TxnOp::Delete { key },
        "delete-tree" => TxnOp::DeleteTree { prefix: key },
        "delete-cas" => TxnOp::DeleteCas { key, index },
        other => return Ok(Err(format!("unknown KV verb {other:?}"))),
    }))
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
            Ok(TxnOp::Set {
                key: "a".into(),
                value: b"hi".to_vec(),
                flags: 7
            })
        );
        assert!(matches!(ops[1], Ok(TxnOp::Cas { index: 3, .. })));
        assert_eq!(ops[2], Err("unknown KV verb \"nope\"".to_string()));
        assert!(parse_ops(br#"[{"KV":{"Verb":"set","Value":"!!"}}]"#).is_err());
    }
}
