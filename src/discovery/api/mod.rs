//! The Consul wire format (JSON field names and shapes), defined once and shared
//! by the server's handlers, the CLI and (later) the client, template watcher and
//! registrator. Every type here mirrors Consul's JSON; conversions to and from
//! the state machine's domain types live beside them.

pub mod agent;
pub mod catalog;
pub mod gofmt;
pub mod health;
pub mod kv;
pub mod session;
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
