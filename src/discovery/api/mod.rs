//! The Consul wire format (JSON field names and shapes), defined once and shared
//! by the server's handlers, the CLI and (later) the client, template watcher and
//! registrator. Every type here mirrors Consul's JSON; conversions to and from
//! the state machine's domain types live beside them.

pub mod agent;
pub mod catalog;
pub mod health;
pub mod kv;
pub mod session;
pub mod txn;
