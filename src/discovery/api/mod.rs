//! The Consul wire format (JSON field names and shapes), defined once and shared
//! by the server's handlers, the CLI, the client, the template watcher and the
//! registrator. Every type here mirrors Consul's JSON, in both directions:
//! answers serialize as Consul writes them and deserialize what a real Consul
//! sends (unknown fields ignored, Go's `null` slices and maps read as empty);
//! request bodies deserialize with keys folded as Consul's decoder matches them
//! (`agent::decode`) and serialize as Consul's Go client sends them. `gofmt`
//! holds the Go spellings (durations, base64, `%q`).
//!
//! A leaf: nothing here imports the rest of the crate, so either end of a
//! connection can use it. The conversions to and from the state machine's
//! domain types live on the server side (`server::http::wire`, and the txn op
//! list in `server::http::txn`).

pub mod agent;
pub mod catalog;
pub mod coordinate;
pub mod event;
pub mod gofmt;
pub mod health;
pub mod kv;
pub mod metrics;
pub mod operator;
pub mod session;
pub mod snapshot;
pub mod txn;

use serde::{Deserialize, Deserializer};

/// Read a JSON `null` as the type's default: Go encodes a nil slice or map as
/// `null` (`"Tags": null`, `"Meta": null`), where we keep an empty one.
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
