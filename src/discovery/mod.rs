//! Service discovery: the Consul-compatible embedded server (and, in other
//! modules, the Consul wire types, client and agent). This branch contributes
//! only `server::state`, the deterministic state machine behind the server.

pub mod server;
