//! `pilotfish check …`: health hooks for a discovery server or agent, as
//! subcommands so images need no shell scripts (the autopilot Consul image's
//! hook was `consul info | grep num_peers`, which passed with Consul down).
//! Each prints one line saying what it saw and exits 0 (pass) or 1 (fail).

use crate::discovery::client::Client;

/// Which check.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CheckCommand {
    /// Pass when the agent answers and knows a cluster leader.
    Leader {
        #[command(flatten)]
        http: super::HttpArgs,
    },
    /// Pass when the agent knows a leader and the cluster has exactly
    /// `--expect` servers (voters), this one included.
    Peers {
        #[command(flatten)]
        http: super::HttpArgs,
        #[arg(long)]
        expect: usize,
    },
    /// Pass when the agent answers its HTTP API.
    Agent {
        #[command(flatten)]
        http: super::HttpArgs,
    },
}

/// The verdict: the line to print and whether it passed.
pub async fn run(cmd: CheckCommand) -> (bool, String) {
    match cmd {
        CheckCommand::Leader { http } => leader(&http).await,
        CheckCommand::Peers { http, expect } => peers(&http, expect).await,
        CheckCommand::Agent { http } => match client(&http) {
            Ok(c) => match c.agent_self().await {
                Ok(_) => (true, format!("agent at {} answers", c.address())),
                Err(e) => (false, e.to_string()),
            },
            Err(e) => (false, e),
        },
    }
}

fn client(http: &super::HttpArgs) -> Result<Client, String> {
    super::client(http)
}

async fn leader(http: &super::HttpArgs) -> (bool, String) {
    let c = match client(http) {
        Ok(c) => c,
        Err(e) => return (false, e),
    };
    match c.status_leader().await {
        Ok(l) if !l.is_empty() => (true, format!("leader {l}")),
        Ok(_) => (false, "no cluster leader".into()),
        Err(e) => (false, e.to_string()),
    }
}

async fn peers(http: &super::HttpArgs, expect: usize) -> (bool, String) {
    let c = match client(http) {
        Ok(c) => c,
        Err(e) => return (false, e),
    };
    let leader = match c.status_leader().await {
        Ok(l) => l,
        Err(e) => return (false, e.to_string()),
    };
    let peers = match c.status_peers().await {
        Ok(p) => p,
        Err(e) => return (false, e.to_string()),
    };
    verdict(&leader, &peers, expect)
}

fn verdict(leader: &str, peers: &[String], expect: usize) -> (bool, String) {
    let text = format!(
        "{} of {expect} servers, leader {}",
        peers.len(),
        if leader.is_empty() { "none" } else { leader }
    );
    (!leader.is_empty() && peers.len() == expect, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_need_a_leader_and_exactly_the_expected_count() {
        let three: Vec<String> = ["a:8300", "b:8300", "c:8300"].map(String::from).to_vec();
        assert_eq!(
            verdict("a:8300", &three, 3),
            (true, "3 of 3 servers, leader a:8300".into())
        );
        assert!(!verdict("", &three, 3).0);
        assert!(!verdict("a:8300", &three[..2], 3).0);
        assert!(!verdict("a:8300", &three, 5).0);
    }
}
