//! Consul wire types for `/v1/agent`: the service and check definitions
//! clients register (keys case-insensitive, snake_case aliases, `null` for any
//! optional field, durations as Go strings or nanosecond numbers), check
//! updates, `AgentCheck` and `Member`.
//!
//! Request bodies are decoded through [`decode`], which folds every object key
//! to lower case without underscores (`DeregisterCriticalServiceAfter`,
//! `deregister_critical_service_after` → `deregistercriticalserviceafter`)
//! except inside user maps (`Meta`, `Header`, ...), whose keys are data. So
//! the request types deserialize folded keys and serialize the PascalCase keys
//! Consul's Go client (`github.com/hashicorp/consul/api`) sends, leaving out
//! unset fields; the answers (`AgentCheck`, `Member`) read real Consul's too.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::catalog::{AgentService, ConnectProxy, Locality, ServiceAddress, ServiceConnect};
use super::gofmt::{format_duration, parse_duration};
use super::health::{HealthCheck, HealthCheckDefinition};
use super::null_as_default;

/// Object keys whose values are user maps: their own keys are kept verbatim.
const USER_MAPS: &[&str] = &[
    "meta",
    "nodemeta",
    "servicemeta",
    "taggedaddresses",
    "servicetaggedaddresses",
    "header",
    // A proxy's (and an upstream's) opaque `Config`.
    "config",
];

/// Fold object keys the way Consul's decoder matches them (see module docs).
pub fn normalize_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                // Go's `null` (a nil pointer, slice or map) is an absent field.
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let nk: String = k
                        .chars()
                        .filter(|c| *c != '_' && *c != '-')
                        .flat_map(char::to_lowercase)
                        .collect();
                    let v = if USER_MAPS.contains(&nk.as_str()) {
                        v
                    } else {
                        normalize_keys(v)
                    };
                    (nk, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_keys).collect()),
        other => other,
    }
}

/// Decode a request body with normalised keys; the error text follows
/// Consul's `Request decode failed: ...`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    serde_json::from_value(normalize_keys(raw)).map_err(|e| e.to_string())
}

/// `Weights` in a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WeightsBody {
    #[serde(rename(serialize = "Passing"), skip_serializing_if = "Option::is_none")]
    pub passing: Option<u32>,
    #[serde(rename(serialize = "Warning"), skip_serializing_if = "Option::is_none")]
    pub warning: Option<u32>,
}

/// `PUT /v1/agent/service/register`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceDefinition {
    #[serde(rename(serialize = "ID"), skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename(serialize = "Name"), skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename(serialize = "Tags"), skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(rename(serialize = "Address"), skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(rename(serialize = "Port"), skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(rename(serialize = "Meta"), skip_serializing_if = "Option::is_none")]
    pub meta: Option<BTreeMap<String, String>>,
    #[serde(
        rename(serialize = "EnableTagOverride", deserialize = "enabletagoverride"),
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_tag_override: Option<bool>,
    #[serde(rename(serialize = "Weights"), skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightsBody>,
    #[serde(rename(serialize = "Check"), skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckDefinition>,
    #[serde(rename(serialize = "Checks"), skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckDefinition>>,
    #[serde(rename(serialize = "Kind"), skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        rename(serialize = "TaggedAddresses", deserialize = "taggedaddresses"),
        skip_serializing_if = "Option::is_none"
    )]
    pub tagged_addresses: Option<BTreeMap<String, ServiceAddress>>,
    #[serde(
        rename(serialize = "SocketPath", deserialize = "socketpath"),
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(rename(serialize = "Proxy"), skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ConnectProxy>,
    /// `Connect`; a `SidecarService` in it is accepted and ignored.
    #[serde(rename(serialize = "Connect"), skip_serializing_if = "Option::is_none")]
    pub connect: Option<ServiceConnect>,
    #[serde(
        rename(serialize = "Locality"),
        skip_serializing_if = "Option::is_none"
    )]
    pub locality: Option<Locality>,
}

impl ServiceDefinition {
    /// `Check` then `Checks`, skipping an all-empty `Check` (Consul's `CheckTypes`).
    pub fn check_definitions(&self) -> Vec<CheckDefinition> {
        self.check
            .iter()
            .filter(|c| !c.is_empty())
            .chain(self.checks.iter().flatten())
            .cloned()
            .collect()
    }
}

/// A check in a service definition or `PUT /v1/agent/check/register`.
/// Durations are Go strings (`"10s"`) or numbers of nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckDefinition {
    #[serde(rename(serialize = "ID"), skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(
        rename(serialize = "CheckID", deserialize = "checkid"),
        skip_serializing_if = "Option::is_none"
    )]
    pub check_id: Option<String>,
    #[serde(rename(serialize = "Name"), skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename(serialize = "Notes"), skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(
        rename(serialize = "ServiceID", deserialize = "serviceid"),
        skip_serializing_if = "Option::is_none"
    )]
    pub service_id: Option<String>,
    #[serde(rename(serialize = "Status"), skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename(serialize = "TTL"), skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Value>,
    #[serde(rename(serialize = "HTTP"), skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(rename(serialize = "Method"), skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(rename(serialize = "Header"), skip_serializing_if = "Option::is_none")]
    pub header: Option<BTreeMap<String, Vec<String>>>,
    #[serde(rename(serialize = "Body"), skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(
        rename(serialize = "TLSSkipVerify", deserialize = "tlsskipverify"),
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_skip_verify: Option<bool>,
    #[serde(rename(serialize = "TCP"), skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(
        rename(serialize = "ScriptArgs", deserialize = "scriptargs"),
        skip_serializing_if = "Option::is_none"
    )]
    pub script_args: Option<Vec<String>>,
    #[serde(rename(serialize = "Args"), skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(rename(serialize = "Script"), skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(
        rename(serialize = "DockerContainerID", deserialize = "dockercontainerid"),
        skip_serializing_if = "Option::is_none"
    )]
    pub docker_container_id: Option<String>,
    #[serde(rename(serialize = "GRPC"), skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    #[serde(
        rename(serialize = "Interval"),
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Value>,
    #[serde(rename(serialize = "Timeout"), skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Value>,
    #[serde(
        rename(
            serialize = "DeregisterCriticalServiceAfter",
            deserialize = "deregistercriticalserviceafter"
        ),
        skip_serializing_if = "Option::is_none"
    )]
    pub deregister_critical_service_after: Option<Value>,
}

/// Why a check definition is refused. `Invalid` is a 400 `Invalid check: ...`;
/// `ScriptsDisabled` is Consul's 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckDefinitionError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true"
    )]
    ScriptsDisabled,
}

/// A validated check: its `Type` and the definition the runner executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckPlan {
    pub check_type: &'static str,
    pub definition: HealthCheckDefinition,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// A duration field: Go string or a number of nanoseconds; `""`/null = unset.
fn duration_field(name: &str, v: &Option<Value>) -> Result<Option<Duration>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_duration(s)
            .map(Some)
            .map_err(|e| format!("error parsing {name}: {e}")),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(ns), _) => Ok(Some(Duration::from_nanos(ns))),
            (None, Some(f)) if f >= 0.0 && f.is_finite() => {
                Ok(Some(Duration::from_nanos(f.round() as u64)))
            }
            _ => Err(format!("error parsing {name}: negative duration {n}")),
        },
        Some(other) => Err(format!("error parsing {name}: not a duration: {other}")),
    }
}

impl CheckDefinition {
    /// No field that makes a check (Consul skips such a `Check`).
    pub fn is_empty(&self) -> bool {
        self.kind_fields() == 0
            && nonempty(&self.name).is_none()
            && nonempty(&self.id).is_none()
            && nonempty(&self.check_id).is_none()
    }

    fn script_args(&self) -> Vec<String> {
        if let Some(a) = self.script_args.as_ref().or(self.args.as_ref()) {
            if !a.is_empty() {
                return a.clone();
            }
        }
        match nonempty(&self.script) {
            Some(s) => vec!["/bin/sh".into(), "-c".into(), s.to_string()],
            None => Vec::new(),
        }
    }

    fn kind_fields(&self) -> usize {
        let ttl = !matches!(&self.ttl, None | Some(Value::Null))
            && self.ttl != Some(Value::String(String::new()));
        [
            ttl,
            nonempty(&self.http).is_some(),
            nonempty(&self.tcp).is_some(),
            !self.script_args().is_empty(),
            nonempty(&self.grpc).is_some(),
            nonempty(&self.docker_container_id).is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }

    /// The explicit check ID (`ID` or `CheckID`), if any.
    pub fn explicit_id(&self) -> Option<String> {
        nonempty(&self.id)
            .or(nonempty(&self.check_id))
            .map(String::from)
    }

    /// Validate like Consul's `CheckType.Validate` and build the runner's plan.
    pub fn plan(&self, enable_script_checks: bool) -> Result<CheckPlan, CheckDefinitionError> {
        let invalid = CheckDefinitionError::Invalid;
        let ttl = duration_field("TTL", &self.ttl).map_err(invalid)?;
        let interval = duration_field("Interval", &self.interval).map_err(invalid)?;
        let timeout = duration_field("Timeout", &self.timeout).map_err(invalid)?;
        let dcsa = duration_field(
            "DeregisterCriticalServiceAfter",
            &self.deregister_critical_service_after,
        )
        .map_err(invalid)?;
        let script_args = self.script_args();
        let docker = nonempty(&self.docker_container_id);
        let check_type = if docker.is_some() {
            "docker"
        } else if !script_args.is_empty() {
            "script"
        } else if nonempty(&self.http).is_some() {
            "http"
        } else if nonempty(&self.tcp).is_some() {
            "tcp"
        } else if nonempty(&self.grpc).is_some() {
            "grpc"
        } else {
            "ttl"
        };
        let positive = |d: Option<Duration>| d.is_some_and(|d| !d.is_zero());
        if positive(interval) && positive(ttl) {
            return Err(invalid(
                "Interval and TTL cannot both be specified".to_string(),
            ));
        }
        if check_type != "ttl" && !positive(interval) {
            return Err(invalid(
                "Interval must be > 0 for Script, HTTP, or TCP checks".to_string(),
            ));
        }
        if check_type == "ttl" && !positive(ttl) {
            return Err(invalid("TTL must be > 0 for TTL checks".to_string()));
        }
        if matches!(check_type, "script" | "docker") && !enable_script_checks {
            return Err(CheckDefinitionError::ScriptsDisabled);
        }
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        let d = |o: Option<Duration>| o.map(format_duration).unwrap_or_default();
        Ok(CheckPlan {
            check_type,
            definition: HealthCheckDefinition {
                http: s(&self.http),
                header: self.header.clone().unwrap_or_default(),
                method: s(&self.method),
                body: s(&self.body),
                tls_skip_verify: self.tls_skip_verify.unwrap_or(false),
                tcp: s(&self.tcp),
                script_args,
                grpc: s(&self.grpc),
                docker_container_id: s(&self.docker_container_id),
                interval: d(interval),
                timeout: d(timeout),
                ttl: d(ttl),
                deregister_critical_service_after: d(dcsa),
            },
        })
    }
}

/// `PUT /v1/agent/check/update/<id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckUpdate {
    #[serde(rename(serialize = "Status"), skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename(serialize = "Output"), skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// `AgentCheck`: a `HealthCheck` without raft indexes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentCheck {
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
    pub definition: Value,
}

/// A serf member (`/v1/agent/members`, `/v1/agent/self` `Member`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Addr")]
    pub addr: String,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Tags", deserialize_with = "null_as_default")]
    pub tags: BTreeMap<String, String>,
    /// 0 none, 1 alive, 2 leaving, 3 left, 4 failed.
    #[serde(rename = "Status")]
    pub status: u8,
    #[serde(rename = "ProtocolMin")]
    pub protocol_min: u8,
    #[serde(rename = "ProtocolMax")]
    pub protocol_max: u8,
    #[serde(rename = "ProtocolCur")]
    pub protocol_cur: u8,
    #[serde(rename = "DelegateMin")]
    pub delegate_min: u8,
    #[serde(rename = "DelegateMax")]
    pub delegate_max: u8,
    #[serde(rename = "DelegateCur")]
    pub delegate_cur: u8,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_but_user_maps_keep_theirs() {
        let def: ServiceDefinition = decode(
            br#"{"name":"web","ID":"w1","EnableTagOverride":true,"Meta":{"Check_HTTP":"/h"},
                 "check":{"http":"http://x/","interval":"10s","deregister_critical_service_after":"1m",
                          "Header":{"X-Key":["v"]}},"Checks":null}"#,
        )
        .unwrap();
        assert_eq!(def.name.as_deref(), Some("web"));
        assert_eq!(def.enable_tag_override, Some(true));
        assert_eq!(def.meta.as_ref().unwrap()["Check_HTTP"], "/h");
        let checks = def.check_definitions();
        assert_eq!(checks.len(), 1);
        let plan = checks[0].plan(false).unwrap();
        assert_eq!(plan.check_type, "http");
        assert_eq!(plan.definition.deregister_critical_service_after, "1m0s");
        assert_eq!(plan.definition.header["X-Key"], vec!["v".to_string()]);
    }

    #[test]
    fn service_definition_serializes_like_the_go_client_and_decodes_back() {
        let def = ServiceDefinition {
            id: Some("web-1".into()),
            name: Some("web".into()),
            tags: Some(vec!["v1".into()]),
            port: Some(8080),
            meta: Some(BTreeMap::from([("Check_HTTP".into(), "/h".into())])),
            enable_tag_override: Some(true),
            weights: Some(WeightsBody {
                passing: Some(3),
                warning: None,
            }),
            check: Some(CheckDefinition {
                check_id: Some("web-http".into()),
                http: Some("http://127.0.0.1:8080/h".into()),
                header: Some(BTreeMap::from([("X-Key".into(), vec!["v".into()])])),
                tls_skip_verify: Some(true),
                interval: Some(Value::String("10s".into())),
                deregister_critical_service_after: Some(Value::String("1m".into())),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = serde_json::to_vec(&def).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"ID":"web-1","Name":"web","Tags":["v1"],"Port":8080,"Meta":{"Check_HTTP":"/h"},"EnableTagOverride":true,"Weights":{"Passing":3},"Check":{"CheckID":"web-http","HTTP":"http://127.0.0.1:8080/h","Header":{"X-Key":["v"]},"TLSSkipVerify":true,"Interval":"10s","DeregisterCriticalServiceAfter":"1m"}}"#
        );
        assert_eq!(decode::<ServiceDefinition>(&body).unwrap(), def);

        let update = CheckUpdate {
            status: Some("passing".into()),
            output: Some("ok".into()),
        };
        let body = serde_json::to_vec(&update).unwrap();
        assert_eq!(body, br#"{"Status":"passing","Output":"ok"}"#);
        assert_eq!(decode::<CheckUpdate>(&body).unwrap(), update);
    }

    #[test]
    fn check_validation_follows_consul() {
        let c = |j: &str| decode::<CheckDefinition>(j.as_bytes()).unwrap();
        assert_eq!(
            c(r#"{"TTL":"15s"}"#).plan(false).unwrap().definition.ttl,
            "15s"
        );
        assert_eq!(
            c(r#"{"TTL":15000000000}"#)
                .plan(false)
                .unwrap()
                .definition
                .ttl,
            "15s",
            "nanosecond numbers"
        );
        assert_eq!(
            c(r#"{"HTTP":"http://x"}"#)
                .plan(false)
                .unwrap_err()
                .to_string(),
            "Interval must be > 0 for Script, HTTP, or TCP checks"
        );
        assert_eq!(
            c(r#"{"Notes":"x"}"#).plan(false).unwrap_err().to_string(),
            "TTL must be > 0 for TTL checks"
        );
        assert_eq!(
            c(r#"{"Args":["true"],"Interval":"1s"}"#).plan(false),
            Err(CheckDefinitionError::ScriptsDisabled)
        );
        assert_eq!(
            c(r#"{"script":"exit 0","interval":"1s"}"#)
                .plan(true)
                .unwrap()
                .definition
                .script_args,
            ["/bin/sh", "-c", "exit 0"]
        );
        assert!(c(r#"{"TTL":"10"}"#).plan(false).is_err(), "unitless");
    }
}

/// `/v1/agent/health/service/id|name/*`: one local service, its checks and
/// their aggregate (`api.AgentServiceChecksInfo`); `Service` and `Checks`
/// are null for an unknown ID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentServiceChecksInfo {
    #[serde(rename = "AggregatedStatus")]
    pub aggregated_status: String,
    #[serde(rename = "Service")]
    pub service: Option<AgentService>,
    #[serde(rename = "Checks")]
    pub checks: Option<Vec<HealthCheck>>,
}
