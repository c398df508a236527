//! Consul wire types for `/v1/txn`: the op list a client sends
//! (`[{"KV":{"Verb":..,"Key":..,"Value":<base64>,...}}, {"Node":{"Verb":..,
//! "Node":{..}}}, {"Service":{"Verb":..,"Node":..,"Service":{..}}},
//! {"Check":{"Verb":..,"Check":{..}}}, {"Session":{"Verb":"delete",
//! "Session":{"ID":..}}}]`, keys read case-insensitively) and the
//! `{"Results":..,"Errors":..}` answer. The op list itself is read by the
//! server (`server::http::txn`), which turns each op straight into a state
//! op; the objects in it are the catalog bodies and [`NodeBody`] (keys folded
//! by `agent::decode`'s rules).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::{AgentService, Node};
use super::health::HealthCheck;
use super::kv::KvPair;

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

/// One error of a rolled-back txn: which op, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnErrorEntry {
    #[serde(rename = "OpIndex")]
    pub op_index: usize,
    #[serde(rename = "What")]
    pub what: String,
}

/// The `Node` object of a txn `Node` op.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeBody {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default, rename = "taggedaddresses")]
    pub tagged_addresses: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "modifyindex")]
    pub modify_index: Option<u64>,
}
