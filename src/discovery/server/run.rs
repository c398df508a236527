//! `pilotfish agent`: flags, listeners and the node's tasks (being written).

/// `pilotfish agent` flags (Consul's vocabulary).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// One node, in memory, no data dir.
    #[arg(long)]
    pub dev: bool,
}

/// Run the agent until SIGTERM/SIGINT; returns the exit status.
pub async fn run(_args: AgentArgs) -> i32 {
    eprintln!("pilotfish agent: not available yet");
    1
}
