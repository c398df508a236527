//! Consul wire types for `/v1/health`: `HealthCheck` (with its `Definition`
//! object), `ServiceEntry`, and the check definition the agent stores in the
//! catalog's opaque `definition` text and its check runner reads back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::catalog::{AgentService, Node};
use crate::discovery::server::state::catalog as state_catalog;
use crate::discovery::server::state::checks as state_checks;

/// Consul's `HealthCheckDefinition`: how an agent check runs. Durations are
/// Go duration strings (`"10s"`, `"1m0s"`), as Consul prints them. Stored as
/// the state's opaque `definition` text and served verbatim as `Definition`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckDefinition {
    #[serde(rename = "HTTP", default, skip_serializing_if = "String::is_empty")]
    pub http: String,
    #[serde(rename = "Header", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(rename = "Method", default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    #[serde(rename = "Body", default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(rename = "TLSSkipVerify", default, skip_serializing_if = "is_false")]
    pub tls_skip_verify: bool,
    #[serde(rename = "TCP", default, skip_serializing_if = "String::is_empty")]
    pub tcp: String,
    #[serde(rename = "ScriptArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub script_args: Vec<String>,
    #[serde(rename = "GRPC", default, skip_serializing_if = "String::is_empty")]
    pub grpc: String,
    #[serde(
        rename = "DockerContainerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub docker_container_id: String,
    #[serde(rename = "Interval", default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
    #[serde(rename = "Timeout", default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    #[serde(rename = "TTL", default, skip_serializing_if = "String::is_empty")]
    pub ttl: String,
    #[serde(
        rename = "DeregisterCriticalServiceAfter",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub deregister_critical_service_after: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl HealthCheckDefinition {
    /// Read back a stored definition; `None` for empty or foreign text.
    pub fn from_stored(text: &str) -> Option<HealthCheckDefinition> {
        if text.is_empty() {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    /// The text stored in the state's `definition`.
    pub fn to_stored(&self) -> String {
        // Serialising plain strings, maps and vectors cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Go's `time.Duration.String()`: `0s`, `500ms`, `1.5s`, `1m30s`, `1h0m0s`.
pub fn go_duration_string(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_string();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", fixed(ns, 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", fixed(ns, 1_000_000, 6));
    }
    const H: u128 = 3_600_000_000_000;
    const M: u128 = 60_000_000_000;
    let (h, rest) = (ns / H, ns % H);
    let (m, s) = (rest / M, rest % M);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", fixed(s, 1_000_000_000, 9)));
    out
}

/// `v / unit` with the fraction's trailing zeros dropped.
fn fixed(v: u128, unit: u128, digits: usize) -> String {
    let (int, frac) = (v / unit, v % unit);
    if frac == 0 {
        return int.to_string();
    }
    let f = format!("{frac:0digits$}");
    format!("{int}.{}", f.trim_end_matches('0'))
}

/// `HealthCheck` as Consul serves it from the catalog and health endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    #[serde(rename = "Node")]
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "Notes")]
    pub notes: String,
    #[serde(rename = "Output")]
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    #[serde(rename = "ServiceTags")]
    pub service_tags: Vec<String>,
    #[serde(rename = "Type")]
    pub check_type: String,
    #[serde(rename = "Definition")]
    pub definition: serde_json::Value,
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
}

/// The stored definition text as the `Definition` object (`{}` when none).
pub fn definition_value(text: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::Value::Object(Default::default()),
    }
}

impl From<&state_checks::HealthCheck> for HealthCheck {
    fn from(c: &state_checks::HealthCheck) -> HealthCheck {
        HealthCheck {
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

/// One row of `/v1/health/service/<name>`; `Node` and `Service` are never
/// null (consul-template dereferences both), `Checks` never null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceEntry {
    #[serde(rename = "Node")]
    pub node: Node,
    #[serde(rename = "Service")]
    pub service: AgentService,
    #[serde(rename = "Checks")]
    pub checks: Vec<HealthCheck>,
}

impl ServiceEntry {
    pub fn from_state(e: &state_catalog::ServiceEntry, datacenter: &str) -> ServiceEntry {
        ServiceEntry {
            node: Node::from_state(&e.node, datacenter),
            service: AgentService::with_indexes(&e.service),
            checks: e.checks.iter().map(HealthCheck::from).collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_strings_match_go() {
        let s = |ms: u64| go_duration_string(Duration::from_millis(ms));
        assert_eq!(s(0), "0s");
        assert_eq!(s(500), "500ms");
        assert_eq!(s(1_500), "1.5s");
        assert_eq!(s(10_000), "10s");
        assert_eq!(s(90_000), "1m30s");
        assert_eq!(s(3_600_000), "1h0m0s");
        assert_eq!(go_duration_string(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(go_duration_string(Duration::from_nanos(7)), "7ns");
    }

    #[test]
    fn definition_round_trips_and_omits_empty_fields() {
        let d = HealthCheckDefinition {
            ttl: "10s".into(),
            deregister_critical_service_after: "1m0s".into(),
            ..Default::default()
        };
        let text = d.to_stored();
        assert_eq!(
            text,
            r#"{"TTL":"10s","DeregisterCriticalServiceAfter":"1m0s"}"#
        );
        assert_eq!(HealthCheckDefinition::from_stored(&text), Some(d));
        assert_eq!(definition_value(""), serde_json::json!({}));
    }
}
