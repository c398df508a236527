//! `/v1/operator/*` bodies (consul-breadth.md §7): the autopilot
//! configuration, health and state, raft leadership transfer, the keyring
//! and usage, as Consul writes them and as its Go client sends them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::gofmt;

/// `GET|PUT /v1/operator/autopilot/configuration`. Durations as Go prints
/// them (`"200ms"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutopilotConfiguration {
    #[serde(rename = "CleanupDeadServers")]
    pub cleanup_dead_servers: bool,
    #[serde(rename = "LastContactThreshold", with = "go_duration")]
    pub last_contact_threshold: Duration,
    #[serde(rename = "MaxTrailingLogs")]
    pub max_trailing_logs: u64,
    #[serde(rename = "MinQuorum")]
    pub min_quorum: u64,
    #[serde(rename = "ServerStabilizationTime", with = "go_duration")]
    pub server_stabilization_time: Duration,
    #[serde(rename = "RedundancyZoneTag")]
    pub redundancy_zone_tag: String,
    #[serde(rename = "DisableUpgradeMigration")]
    pub disable_upgrade_migration: bool,
    #[serde(rename = "UpgradeVersionTag")]
    pub upgrade_version_tag: String,
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
}

impl Default for AutopilotConfiguration {
    /// The Go client's `NewAutopilotConfiguration`, which the server decodes
    /// a PUT body over.
    fn default() -> AutopilotConfiguration {
        AutopilotConfiguration {
            cleanup_dead_servers: true,
            last_contact_threshold: Duration::from_millis(200),
            max_trailing_logs: 250,
            min_quorum: 0,
            server_stabilization_time: Duration::from_secs(10),
            redundancy_zone_tag: String::new(),
            disable_upgrade_migration: false,
            upgrade_version_tag: String::new(),
            create_index: 0,
            modify_index: 0,
        }
    }
}

impl AutopilotConfiguration {
    /// A PUT body as Consul decodes it: over the defaults, keys matched
    /// without regard to case, durations as Go strings or numbers of
    /// nanoseconds. The error is the decoder's text.
    pub fn decode_over_defaults(body: &[u8]) -> Result<AutopilotConfiguration, String> {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let serde_json::Value::Object(fields) = value else {
            return Err("expected a JSON object".to_string());
        };
        let mut c = AutopilotConfiguration::default();
        for (k, v) in fields {
            if v.is_null() {
                continue;
            }
            let lower = k.to_ascii_lowercase();
            let bad = |what: &str| format!("'{k}' expected {what}, got {v}");
            let uint = |v: &serde_json::Value| v.as_u64().ok_or_else(|| bad("an unsigned integer"));
            let text =
                |v: &serde_json::Value| v.as_str().map(String::from).ok_or_else(|| bad("a string"));
            let flag = |v: &serde_json::Value| v.as_bool().ok_or_else(|| bad("a bool"));
            let duration = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => gofmt::parse_duration(s),
                serde_json::Value::Number(n) => n
                    .as_u64()
                    .map(Duration::from_nanos)
                    .ok_or_else(|| bad("a duration")),
                _ => Err(bad("a duration")),
            };
            match lower.as_str() {
                "cleanupdeadservers" => c.cleanup_dead_servers = flag(&v)?,
                "lastcontactthreshold" => c.last_contact_threshold = duration(&v)?,
                "maxtrailinglogs" => c.max_trailing_logs = uint(&v)?,
                "minquorum" => c.min_quorum = uint(&v)?,
                "serverstabilizationtime" => c.server_stabilization_time = duration(&v)?,
                "redundancyzonetag" => c.redundancy_zone_tag = text(&v)?,
                "disableupgrademigration" => c.disable_upgrade_migration = flag(&v)?,
                "upgradeversiontag" => c.upgrade_version_tag = text(&v)?,
                "createindex" => c.create_index = uint(&v)?,
                "modifyindex" => c.modify_index = uint(&v)?,
                _ => {}
            }
        }
        Ok(c)
    }
}

/// A `time.Duration` field of the api package's `ReadableDuration`: a Go
/// string out, a string or nanoseconds in.
mod go_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::gofmt::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            S(String),
            N(u64),
        }
        match Text::deserialize(d)? {
            Text::S(s) => super::gofmt::parse_duration(&s).map_err(serde::de::Error::custom),
            Text::N(n) => Ok(Duration::from_nanos(n)),
        }
    }
}

/// One server of `GET /v1/operator/autopilot/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerHealth {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "SerfStatus")]
    pub serf_status: String,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Leader")]
    pub leader: bool,
    #[serde(rename = "LastContact")]
    pub last_contact: String,
    #[serde(rename = "LastTerm")]
    pub last_term: u64,
    #[serde(rename = "LastIndex")]
    pub last_index: u64,
    #[serde(rename = "Healthy")]
    pub healthy: bool,
    #[serde(rename = "Voter")]
    pub voter: bool,
    #[serde(rename = "StableSince")]
    pub stable_since: String,
}

/// `GET /v1/operator/autopilot/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorHealthReply {
    #[serde(rename = "Healthy")]
    pub healthy: bool,
    #[serde(rename = "FailureTolerance")]
    pub failure_tolerance: u64,
    #[serde(rename = "Servers", deserialize_with = "super::null_as_default")]
    pub servers: Vec<ServerHealth>,
}

/// One server of `GET /v1/operator/autopilot/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutopilotServer {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "NodeStatus")]
    pub node_status: String,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "LastContact")]
    pub last_contact: String,
    #[serde(rename = "LastTerm")]
    pub last_term: u64,
    #[serde(rename = "LastIndex")]
    pub last_index: u64,
    #[serde(rename = "Healthy")]
    pub healthy: bool,
    #[serde(rename = "StableSince")]
    pub stable_since: String,
    #[serde(rename = "ReadReplica")]
    pub read_replica: bool,
    /// `leader`, `voter`, `non-voter`, `staging` or `none`.
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "Meta", deserialize_with = "super::null_as_default")]
    pub meta: BTreeMap<String, String>,
    #[serde(rename = "NodeType")]
    pub node_type: String,
}

/// `GET /v1/operator/autopilot/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutopilotState {
    #[serde(rename = "Healthy")]
    pub healthy: bool,
    #[serde(rename = "FailureTolerance")]
    pub failure_tolerance: u64,
    #[serde(rename = "OptimisticFailureTolerance")]
    pub optimistic_failure_tolerance: u64,
    #[serde(rename = "Servers", deserialize_with = "super::null_as_default")]
    pub servers: BTreeMap<String, AutopilotServer>,
    #[serde(rename = "Leader")]
    pub leader: String,
    #[serde(rename = "Voters", deserialize_with = "super::null_as_default")]
    pub voters: Vec<String>,
}

/// `POST /v1/operator/raft/transfer-leader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferLeaderResponse {
    #[serde(rename = "Success")]
    pub success: bool,
}

/// The body of keyring install, use and remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyringRequest {
    #[serde(rename = "Key")]
    pub key: String,
}

/// One pool's answer of `GET /v1/operator/keyring`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyringResponse {
    #[serde(rename = "WAN")]
    pub wan: bool,
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
    #[serde(rename = "Segment")]
    pub segment: String,
    #[serde(
        rename = "Messages",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::null_as_default"
    )]
    pub messages: BTreeMap<String, String>,
    #[serde(rename = "Keys", deserialize_with = "super::null_as_default")]
    pub keys: BTreeMap<String, u64>,
    #[serde(
        rename = "PrimaryKeys",
        default,
        deserialize_with = "super::null_as_default"
    )]
    pub primary_keys: BTreeMap<String, u64>,
    #[serde(rename = "NumNodes")]
    pub num_nodes: u64,
}

/// Instances by mesh kind in `operator/usage`, always all six.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceUsage {
    #[serde(rename = "Services")]
    pub services: u64,
    #[serde(rename = "ServiceInstances")]
    pub service_instances: u64,
    #[serde(rename = "ConnectServiceInstances")]
    pub connect_service_instances: BTreeMap<String, u64>,
    #[serde(rename = "BillableServiceInstances")]
    pub billable_service_instances: u64,
}

/// `GET /v1/operator/usage`: the query meta is in the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageResponse {
    #[serde(rename = "Usage")]
    pub usage: BTreeMap<String, ServiceUsage>,
    #[serde(rename = "Index")]
    pub index: u64,
    #[serde(rename = "LastContact")]
    pub last_contact: u64,
    #[serde(rename = "KnownLeader")]
    pub known_leader: bool,
    #[serde(rename = "ConsistencyLevel")]
    pub consistency_level: String,
    #[serde(rename = "NotModified")]
    pub not_modified: bool,
    #[serde(rename = "Backend")]
    pub backend: u64,
    #[serde(rename = "ResultsFilteredByACLs")]
    pub results_filtered_by_acls: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn autopilot_bodies_decode_over_the_defaults() {
        let c = AutopilotConfiguration::decode_over_defaults(
            br#"{"minquorum":3,"LastContactThreshold":"1s","ServerStabilizationTime":500000000}"#,
        )
        .unwrap();
        assert_eq!(c.min_quorum, 3);
        assert_eq!(c.last_contact_threshold, Duration::from_secs(1));
        assert_eq!(c.server_stabilization_time, Duration::from_millis(500));
        assert!(c.cleanup_dead_servers);
        assert_eq!(c.max_trailing_logs, 250);
        assert!(AutopilotConfiguration::decode_over_defaults(br#"{"MinQuorum":"x"}"#).is_err());
        assert!(
            AutopilotConfiguration::decode_over_defaults(br#"{"LastContactThreshold":"10"}"#)
                .is_err()
        );
        let text = serde_json::to_string(&AutopilotConfiguration::default()).unwrap();
        assert_eq!(
            text,
            r#"{"CleanupDeadServers":true,"LastContactThreshold":"200ms","MaxTrailingLogs":250,"MinQuorum":0,"ServerStabilizationTime":"10s","RedundancyZoneTag":"","DisableUpgradeMigration":false,"UpgradeVersionTag":"","CreateIndex":0,"ModifyIndex":0}"#
        );
    }
}
