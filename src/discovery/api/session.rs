//! Consul wire types for `/v1/session`: the `Session` JSON the reads and
//! `renew` answer with, and the create body, parsed the way Consul's
//! mapstructure decoder reads it (keys case-insensitive, snake_case aliases,
//! `null` accepted, unknown keys ignored; Patroni sends lowercase keys).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::gofmt::parse_duration;
use super::null_as_default;

/// Consul's `Session` JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionEntry {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Node")]
    pub node: String,
    /// Nanoseconds.
    #[serde(rename = "LockDelay")]
    pub lock_delay: u64,
    /// `release` or `delete`.
    #[serde(rename = "Behavior")]
    pub behavior: String,
    /// Verbatim as created (`"15.0s"`), `""` when none.
    #[serde(rename = "TTL")]
    pub ttl: String,
    #[serde(rename = "NodeChecks", deserialize_with = "null_as_default")]
    pub node_checks: Vec<String>,
    #[serde(rename = "ServiceChecks")]
    pub service_checks: Option<Vec<ServiceCheck>>,
    /// Deprecated union of both lists (Consul 1.0 only had this one).
    #[serde(rename = "Checks", deserialize_with = "null_as_default")]
    pub checks: Vec<String>,
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
}

/// One `ServiceChecks` item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceCheck {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Namespace")]
    pub namespace: String,
}

/// Why a create request was refused before reaching the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// HTTP 400 `Request decode failed: ...`.
    #[error("Request decode failed: {0}")]
    Decode(String),
    /// HTTP 500: Consul's RPC-side validation texts.
    #[error("{0}")]
    Invalid(String),
}

/// A `PUT /v1/session/create` body as sent, every field checked for its
/// JSON type; `Behavior` and `TTL` are still text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCreate {
    pub name: String,
    /// `""`: the agent's own node.
    pub node: String,
    /// `Checks`/`NodeChecks`; `None` when not sent (Consul then adds the
    /// node's `serfHealth`), `Some([])` for none.
    pub node_checks: Option<Vec<String>>,
    /// The `ID`s of `ServiceChecks`.
    pub service_checks: Vec<String>,
    /// `LockDelay` in nanoseconds, `None` when not sent.
    pub lock_delay_ns: Option<u64>,
    /// `release`, `delete` or `""` (release).
    pub behavior: String,
    /// Verbatim (`"15.0s"`), `""` when none.
    pub ttl: String,
}

impl SessionCreate {
    /// Parse a body; an empty body (or `null`) is every default.
    pub fn parse(body: &[u8]) -> Result<SessionCreate, CreateError> {
        let mut create = SessionCreate::default();
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(create);
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| CreateError::Decode(e.to_string()))?;
        let obj = match value {
            Value::Object(m) => m,
            Value::Null => return Ok(create),
            other => {
                return Err(CreateError::Decode(format!(
                    "expected a JSON object, got {other}"
                )))
            }
        };
        for (key, v) in normalized(obj) {
            match key.as_str() {
                "name" => create.name = string_field("Name", v)?,
                "node" => create.node = string_field("Node", v)?,
                "checks" | "nodechecks" => create.node_checks = Some(string_list("Checks", v)?),
                "servicechecks" => create.service_checks = service_checks(v)?,
                "lockdelay" => create.lock_delay_ns = Some(lock_delay(v)?),
                "behavior" => create.behavior = string_field("Behavior", v)?,
                "ttl" => create.ttl = string_field("TTL", v)?,
                _ => {}
            }
        }
        Ok(create)
    }

    /// `TTL` in nanoseconds, 0 when none; a bad one is Consul's 500 text.
    pub fn ttl_ns(&self) -> Result<u64, CreateError> {
        if self.ttl.is_empty() {
            return Ok(0);
        }
        nanos(&self.ttl)
            .map_err(|e| CreateError::Invalid(format!("Session TTL '{}' invalid: {e}", self.ttl)))
    }
}

/// A Go duration string in nanoseconds.
fn nanos(text: &str) -> Result<u64, String> {
    parse_duration(text).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Keys lowercased with `_` removed, so `LockDelay`, `lockdelay` and
/// `lock_delay` are one key; a later spelling wins, as in mapstructure.
fn normalized(obj: Map<String, Value>) -> Vec<(String, Value)> {
    obj.into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase().replace('_', ""), v))
        .collect()
}

fn string_field(name: &str, v: Value) -> Result<String, CreateError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        other => Err(CreateError::Decode(format!(
            "'{name}' expected type 'string', got '{}'",
            json_type(&other)
        ))),
    }
}

fn string_list(name: &str, v: Value) -> Result<Vec<String>, CreateError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(|i| string_field(name, i)).collect(),
        other => Err(CreateError::Decode(format!(
            "'{name}': source data must be an array or slice, got {}",
            json_type(&other)
        ))),
    }
}

fn service_checks(v: Value) -> Result<Vec<String>, CreateError> {
    let Value::Array(items) = v else {
        return match v {
            Value::Null => Ok(Vec::new()),
            other => Err(CreateError::Decode(format!(
                "'ServiceChecks': source data must be an array or slice, got {}",
                json_type(&other)
            ))),
        };
    };
    let mut ids = Vec::new();
    for item in items {
        match item {
            Value::Object(m) => {
                for (k, v) in normalized(m) {
                    if k == "id" {
                        ids.push(string_field("ID", v)?);
                    }
                }
            }
            other => {
                return Err(CreateError::Decode(format!(
                    "'ServiceChecks[]' expected a map, got '{}'",
                    json_type(&other)
                )))
            }
        }
    }
    Ok(ids)
}

/// `LockDelay`: a Go duration string or a number of nanoseconds (the state
/// machine turns values below 1000 into seconds, as Consul does).
fn lock_delay(v: Value) -> Result<u64, CreateError> {
    match v {
        Value::Null => Ok(0),
        Value::String(s) => nanos(&s).map_err(CreateError::Decode),
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or_else(|| CreateError::Decode(format!("invalid LockDelay {n}"))),
        other => Err(CreateError::Decode(format!(
            "'LockDelay' expected a duration, got '{}'",
            json_type(&other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn session_entry_reads_back_what_it_writes() {
        let text = r#"{"ID":"adf4238a","Name":"lock","Node":"n1","LockDelay":15000000000,
            "Behavior":"delete","TTL":"30s","Namespace":"default","NodeChecks":null,
            "ServiceChecks":[{"ID":"svc","Namespace":""}],"CreateIndex":3,"ModifyIndex":3}"#;
        let e: SessionEntry = serde_json::from_str(text).unwrap();
        assert_eq!(
            (e.behavior.as_str(), e.lock_delay),
            ("delete", 15_000_000_000)
        );
        assert!(e.node_checks.is_empty() && e.checks.is_empty());
        let again: SessionEntry =
            serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(again, e);
    }

    #[test]
    fn patroni_body_with_lowercase_keys() {
        let body = br#"{"name":"pg-n1","checks":[],"lockdelay":"0.001s","behavior":"delete","ttl": "15.0s"}"#;
        let c = SessionCreate::parse(body).unwrap();
        assert_eq!(c.name, "pg-n1");
        assert_eq!(c.node, "");
        assert_eq!(c.node_checks, Some(vec![]));
        assert_eq!(c.lock_delay_ns, Some(1_000_000));
        assert_eq!(c.behavior, "delete");
        assert_eq!((c.ttl.as_str(), c.ttl_ns()), ("15.0s", Ok(15_000_000_000)));
    }

    #[test]
    fn empty_body_means_defaults_and_errors_use_consul_texts() {
        let c = SessionCreate::parse(b"").unwrap();
        assert_eq!(c, SessionCreate::default());
        assert_eq!(c.ttl_ns(), Ok(0));
        let c = SessionCreate::parse(br#"{"TTL":"10"}"#).unwrap();
        assert_eq!(
            c.ttl_ns().unwrap_err().to_string(),
            "Session TTL '10' invalid: time: missing unit in duration \"10\""
        );
        let e = SessionCreate::parse(b"{").unwrap_err();
        assert!(matches!(e, CreateError::Decode(_)));
        let e = SessionCreate::parse(br#"{"LockDelay":"5"}"#).unwrap_err();
        assert_eq!(
            e,
            CreateError::Decode("time: missing unit in duration \"5\"".to_string())
        );
        let c = SessionCreate::parse(br#"{"LockDelay":5,"Checks":null}"#).unwrap();
        assert_eq!((c.lock_delay_ns, c.node_checks), (Some(5), Some(vec![])));
    }
}
