//! Consul wire types for `/v1/kv`: `KVPair` with its base64 `Value` (`null`
//! when empty) and `Session` omitted when no lock is held, plus the small
//! standard base64 codec the KV and txn bodies need.

use serde::{Deserialize, Serialize};

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

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go's `base64.StdEncoding`, which encodes
/// `[]byte` fields in JSON).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64; padding is optional, whitespace is not allowed.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 {
        return Err(format!(
            "illegal base64 data at input byte {}",
            trimmed.len()
        ));
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (i, c) in trimmed.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("illegal base64 data at input byte {i}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err(format!(
            "illegal base64 data at input byte {}",
            trimmed.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_like_go() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("hello world", "aGVsbG8gd29ybGQ="),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), raw.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

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
