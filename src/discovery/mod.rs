//! Service discovery: Consul's wire types (`api`, a leaf), the one HTTP client
//! every consumer uses (`client`), resolving a join target's name to all its
//! addresses (`resolve`, used by the CLI and the server), the snapshot
//! file and archive formats (`snapshot`, also both's), and the
//! Consul-compatible embedded server (`server`).

pub mod api;
pub mod client;
pub mod resolve;
pub mod server;
pub mod snapshot;
