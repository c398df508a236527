//! Consul-style CLI commands over the HTTP API (`info`, `members`, `join`,
//! `leave`, `kv`, `catalog`) (being written).

/// The Consul-style commands, flattened into `pilotfish`'s command list.
#[derive(Debug, clap::Subcommand)]
pub enum ConsulCommand {}

/// Run one command; returns the exit status.
pub async fn run(cmd: ConsulCommand) -> i32 {
    match cmd {}
}
