//! Service discovery: the Consul-compatible embedded server (`server`), and
//! (in later parts) the Consul wire types, client and agent.

pub mod api;
pub mod server;
