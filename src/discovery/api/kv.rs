//! Consul wire types for `/v1/kv`: `KVPair` with its base64 `Value` (`null`
//! when empty) and `Session` omitted when no lock is held.

use serde::{Deserialize, Serialize};

/// `KVPair.Value` is base64; the codec lives with the other Go spellings.
pub use super::gofmt::{base64_decode, base64_encode};

use crate::discovery::server::state::kv::KvEntry;

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

impl From<&KvEntry> for KvPair {
    fn from(e: &KvEntry) -> KvPair {
        KvPair {
            lock_index: e.lock_index,
            key: e.key.clone(),
            flags: e.flags,
            value: (!e.value.is_empty()).then(|| base64_encode(&e.value)),
            session: e.session.clone().filter(|s| !s.is_empty()),
            create_index: e.create_index,
            modify_index: e.modify_index,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kv_pair_omits_session_and_nulls_empty_values() {
        let e = KvEntry {
            key: "a/b".into(),
            value: Vec::new(),
            flags: 3_304_740_253_564_472_344,
            session: None,
            create_index: 4,
            modify_index: 5,
            lock_index: 0,
        };
        let text = serde_json::to_string(&KvPair::from(&e)).unwrap();
        assert_eq!(
            text,
            r#"{"LockIndex":0,"Key":"a/b","Flags":3304740253564472344,"Value":null,"CreateIndex":4,"ModifyIndex":5}"#
        );
    }
}
