//! `meta.json` of Consul's snapshot archive: raft's `SnapshotMeta` as
//! HashiCorp's raft writes it (consul-breadth.md §8.1), and the JSON of
//! `consul snapshot inspect -format=json`.

use serde::{Deserialize, Serialize};

/// raft's `SnapshotMeta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    #[serde(rename = "Version")]
    pub version: u64,
    /// `<term>-<index>-<unix ms>`.
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Index")]
    pub index: u64,
    #[serde(rename = "Term")]
    pub term: u64,
    /// The legacy peer list (base64 of msgpack).
    #[serde(rename = "Peers", default)]
    pub peers: String,
    #[serde(rename = "Configuration", default)]
    pub configuration: RaftConfiguration,
    #[serde(rename = "ConfigurationIndex", default)]
    pub configuration_index: u64,
    /// Bytes of `state.bin`.
    #[serde(rename = "Size")]
    pub size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftConfiguration {
    #[serde(rename = "Servers", deserialize_with = "super::null_as_default")]
    pub servers: Vec<RaftServer>,
}

/// One server of a raft configuration; `Suffrage` 0 voter, 1 non-voter,
/// 2 staging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftServer {
    #[serde(rename = "Suffrage")]
    pub suffrage: u8,
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Address")]
    pub address: String,
}

/// `consul snapshot inspect -format=json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectOutput {
    #[serde(rename = "Meta")]
    pub meta: InspectMeta,
    #[serde(rename = "Stats")]
    pub stats: Vec<TypeStats>,
    #[serde(rename = "TotalSize")]
    pub total_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectMeta {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Size")]
    pub size: u64,
    #[serde(rename = "Index")]
    pub index: u64,
    #[serde(rename = "Term")]
    pub term: u64,
    #[serde(rename = "Version")]
    pub version: u64,
}

/// Records of one type: their count and bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeStats {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Sum")]
    pub sum: u64,
    #[serde(rename = "Count")]
    pub count: u64,
}
