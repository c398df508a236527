//! Consul wire types for `/v1/kv`: `KVPair` with its base64 `Value` (`null`
//! when empty) and `Session` omitted when no lock is held.

use serde::{Deserialize, Serialize};

/// `KVPair.Value` is base64; the codec lives with the other Go spellings.
pub use super::gofmt::{base64_decode, base64_encode};

/// Consul's `KVPair`, field order and spelling as Consul writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvPair {
    #[serde(rename = "LockIndex", default)]
    pub lock_index: u64,
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Flags", default)]
    pub flags: u64,
    /// Base64 of the value; `None` is Consul's nil value (`null`).
    #[serde(rename = "Value", default)]
    pub value: Option<String>,
    #[serde(rename = "Session", default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}
