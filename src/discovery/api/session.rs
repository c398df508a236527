//! Consul wire types for `/v1/session`: the `Session` JSON the reads and
//! `renew` answer with, and the create body, parsed the way Consul's
//! mapstructure decoder reads it (keys case-insensitive, snake_case aliases,
//! `null` accepted, unknown keys ignored; Patroni sends lowercase keys).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::null_as_default;

use crate::discovery::server::state::session::{Session, SessionBehavior, SessionRequest};

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

/// Parse a `PUT /v1/session/create` body into a request. `body` empty ⇒ every
/// default. `node` is the agent's node name, `id` the new session's ID and
/// `parse_duration` Go's `time.ParseDuration` (error text without prefix).
pub fn parse_create(
    body: &[u8],
    node: &str,
    id: String,
    parse_duration: impl Fn(&str) -> Result<u64, String>,
) -> Result<SessionRequest, CreateError> {
    let mut req = SessionRequest {
        id,
        name: String::new(),
        node: node.to_string(),
        node_checks: None,
        service_checks: Vec::new(),
        lock_delay_ns: None,
        behavior: SessionBehavior::Release,
        ttl: String::new(),
        ttl_ns: 0,
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(req);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| CreateError::Decode(e.to_string()))?;
    let obj = match value {
        Value::Object(m) => m,
        Value::Null => return Ok(req),
        other => {
            return Err(CreateError::Decode(format!(
                "expected a JSON object, got {other}"
            )))
        }
    };
    let mut behavior = String::new();
    for (key, v) in normalized(obj) {
        match key.as_str() {
            "name" => req.name = string_field("Name", v)?,
            "node" => {
                let n = string_field("Node", v)?;
                if !n.is_empty() {
                    req.node = n;
                }
            }
            "checks" | "nodechecks" => req.node_checks = Some(string_list("Checks", v)?),
            "servicechecks" => req.service_checks = service_checks(v)?,
            "lockdelay" => req.lock_delay_ns = Some(lock_delay(v, &parse_duration)?),
            "behavior" => behavior = string_field("Behavior", v)?,
            "ttl" => req.ttl = string_field("TTL", v)?,
            _ => {}
        }
    }
    req.behavior =
        SessionBehavior::parse(&behavior).map_err(|e| CreateError::Invalid(e.to_string()))?;
    if !req.ttl.is_empty() {
        req.ttl_ns = parse_duration(&req.ttl)
            .map_err(|e| CreateError::Invalid(format!("Session TTL '{}' invalid: {e}", req.ttl)))?;
    }
    Ok(req)
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
fn lock_delay(v: Value, parse: &impl Fn(&str) -> Result<u64, String>) -> Result<u64, CreateError> {
    match v {
        Value::Null => Ok(0),
        Value::String(s) => parse(&s).map_err(CreateError::Decode),
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

    fn dur(s: &str) -> Result<u64, String> {
        crate::discovery::api::gofmt::parse_duration(s).map(|d| d.as_nanos() as u64)
    }

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
        let r = parse_create(body, "agent", "id1".into(), dur).unwrap();
        assert_eq!(r.name, "pg-n1");
        assert_eq!(r.node, "agent");
        assert_eq!(r.node_checks, Some(vec![]));
        assert_eq!(r.lock_delay_ns, Some(1_000_000));
        assert_eq!(r.behavior, SessionBehavior::Delete);
        assert_eq!((r.ttl.as_str(), r.ttl_ns), ("15.0s", 15_000_000_000));
    }

    #[test]
    fn empty_body_means_defaults_and_errors_use_consul_texts() {
        let r = parse_create(b"", "agent", "id1".into(), dur).unwrap();
        assert_eq!((r.node_checks, r.lock_delay_ns), (None, None));
        let e = parse_create(br#"{"TTL":"10"}"#, "a", "i".into(), dur).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Session TTL '10' invalid: time: missing unit in duration \"10\""
        );
        let e = parse_create(br#"{"Behavior":"keep"}"#, "a", "i".into(), dur).unwrap_err();
        assert_eq!(e.to_string(), "Invalid Behavior setting 'keep'");
        let e = parse_create(b"{", "a", "i".into(), dur).unwrap_err();
        assert!(matches!(e, CreateError::Decode(_)));
        let r = parse_create(br#"{"LockDelay":5,"Checks":null}"#, "a", "i".into(), dur).unwrap();
        assert_eq!((r.lock_delay_ns, r.node_checks), (Some(5), Some(vec![])));
    }
}
