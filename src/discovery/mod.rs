//! Service discovery: Consul's wire types (`api`, a leaf), the one HTTP client
//! every consumer uses (`client`), and the Consul-compatible embedded server
//! (`server`).

pub mod api;
pub mod client;
pub mod server;
