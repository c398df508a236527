//! The embedded Consul-compatible server: its deterministic state machine
//! (`state`), and later the durable store, the raft adapter, the HTTP
//! handlers and DNS, all of which drive or read that state machine.

pub mod state;
