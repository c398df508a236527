//! Consul wire types for `/v1/health`: `HealthCheck` (with its `Definition`
//! object), `ServiceEntry`, and the check definition the agent stores in the
//! catalog's opaque `definition` text and its check runner reads back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::{AgentService, Node};
use super::null_as_default;

/// Consul's `HealthCheckDefinition`: how an agent check runs. Durations are
/// Go duration strings (`"10s"`, `"1m0s"`), as Consul prints them. Stored as
/// the state's opaque `definition` text and served verbatim as `Definition`.
/// The lower-case aliases read a catalog registration's `Definition`, whose
/// keys `agent::decode` folded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckDefinition {
    #[serde(
        rename = "HTTP",
        alias = "http",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub http: String,
    #[serde(
        rename = "Header",
        alias = "header",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(
        rename = "Method",
        alias = "method",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub method: String,
    #[serde(
        rename = "Body",
        alias = "body",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub body: String,
    #[serde(
        rename = "TLSSkipVerify",
        alias = "tlsskipverify",
        default,
        skip_serializing_if = "is_false"
    )]
    pub tls_skip_verify: bool,
    #[serde(
        rename = "TCP",
        alias = "tcp",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tcp: String,
    #[serde(
        rename = "ScriptArgs",
        alias = "scriptargs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub script_args: Vec<String>,
    #[serde(
        rename = "GRPC",
        alias = "grpc",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub grpc: String,
    #[serde(
        rename = "DockerContainerID",
        alias = "dockercontainerid",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub docker_container_id: String,
    #[serde(
        rename = "Interval",
        alias = "interval",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub interval: String,
    #[serde(
        rename = "Timeout",
        alias = "timeout",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub timeout: String,
    #[serde(
        rename = "TTL",
        alias = "ttl",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ttl: String,
    #[serde(
        rename = "DeregisterCriticalServiceAfter",
        alias = "deregistercriticalserviceafter",
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

/// `HealthCheck` as Consul serves it from the catalog and health endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    #[serde(rename = "ServiceTags", deserialize_with = "null_as_default")]
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

/// The aggregate of some checks as the Go client's
/// `HealthChecks.AggregatedStatus` computes it (and consul-template and the
/// agent's health endpoints with it): maintenance (a `_node_maintenance` or
/// `_service_maintenance:` check) beats critical beats warning beats
/// passing; no checks is passing.
pub fn aggregated_status(checks: &[HealthCheck]) -> &'static str {
    let mut rank = 0;
    for c in checks {
        let r = if c.check_id == "_node_maintenance"
            || c.check_id.starts_with("_service_maintenance:")
        {
            3
        } else {
            match c.status.as_str() {
                "critical" => 2,
                "warning" => 1,
                _ => 0,
            }
        };
        rank = rank.max(r);
    }
    ["passing", "warning", "critical", "maintenance"][rank]
}

/// One row of `/v1/health/service/<name>`; `Node` and `Service` are never
/// null (consul-template dereferences both), `Checks` never null.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceEntry {
    #[serde(rename = "Node", deserialize_with = "null_as_default")]
    pub node: Node,
    #[serde(
        rename = "Service",
        deserialize_with = "null_as_default",
        serialize_with = "super::catalog::node_service_form"
    )]
    pub service: AgentService,
    #[serde(rename = "Checks", deserialize_with = "null_as_default")]
    pub checks: Vec<HealthCheck>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `/v1/health/service/redis` from HashiCorp Consul 1.17: fields we do not
    /// model, `null` for nil slices and maps.
    const CONSUL_HEALTH_SERVICE: &str = r#"[{
        "Node": {"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "foobar",
                 "Address": "10.1.10.12", "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": "10.1.10.12", "wan": "10.1.10.12"},
                 "Meta": null, "Partition": "default", "PeerName": "",
                 "CreateIndex": 1, "ModifyIndex": 2},
        "Service": {"Kind": "", "ID": "redis", "Service": "redis", "Tags": null,
                    "Address": "10.1.10.12",
                    "TaggedAddresses": {"lan_ipv4": {"Address": "10.1.10.12", "Port": 8000}},
                    "Meta": null, "Port": 8000,
                    "Weights": {"Passing": 10, "Warning": 1},
                    "EnableTagOverride": false,
                    "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                    "Connect": {}, "PeerName": "", "Namespace": "default",
                    "Partition": "default", "CreateIndex": 5, "ModifyIndex": 6},
        "Checks": [{"Node": "foobar", "CheckID": "service:redis",
                    "Name": "Service 'redis' check", "Status": "passing",
                    "Notes": "", "Output": "", "ServiceID": "redis",
                    "ServiceName": "redis", "ServiceTags": null, "Type": "ttl",
                    "Interval": "", "Timeout": "", "ExposedPort": 0,
                    "Definition": {}, "Namespace": "default",
                    "CreateIndex": 5, "ModifyIndex": 7},
                   {"Node": "foobar", "CheckID": "serfHealth", "Name": "Serf Health Status",
                    "Status": "passing", "ServiceTags": [], "Type": ""}]
    }]"#;

    #[test]
    fn reads_a_real_consul_health_answer() {
        let entries: Vec<ServiceEntry> = serde_json::from_str(CONSUL_HEALTH_SERVICE).unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.node.node, "foobar");
        assert_eq!(e.node.tagged_addresses["wan"], "10.1.10.12");
        assert!(e.node.meta.is_empty());
        assert_eq!((e.service.id.as_str(), e.service.port), ("redis", 8000));
        assert!(e.service.tags.is_empty() && e.service.meta.is_empty());
        assert_eq!(e.service.weights.passing, 10);
        assert_eq!(e.service.modify_index, Some(6));
        assert_eq!(e.service.datacenter, None);
        assert_eq!(e.checks.len(), 2);
        assert_eq!(e.checks[0].status, "passing");
        assert!(e.checks[0].service_tags.is_empty());
        assert_eq!(e.checks[0].definition, serde_json::json!({}));
        assert_eq!(e.checks[1].definition, serde_json::Value::Null);
        assert_eq!(e.checks[1].modify_index, 0);
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
