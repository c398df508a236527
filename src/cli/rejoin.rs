//! `pilotfish rejoin NAME...`: a periodic job for a discovery server that
//! joins NAME again while the agent knows no other alive server. `--retry-join`
//! stops once it has joined; a server that later finds itself alone (its
//! peers came back on new addresses, or it was cut off long enough to see
//! them all fail) needs the name resolved afresh and joined again. The
//! autopilot Consul image did this with `consul info | grep num_peers` and
//! `consul join` in a shell script; here it is one subcommand that prints one
//! line and exits 0 (nothing to do, or joined) or 1 (alone and no join worked).

use crate::discovery::api::agent::Member;
use crate::discovery::client::Client;

/// `rejoin` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RejoinArgs {
    #[command(flatten)]
    pub http: super::HttpArgs,
    /// Addresses or DNS names to join while alone (the agent resolves a name
    /// to all its addresses, with its own `--resolver`).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Consul's member status `alive`.
const ALIVE: u8 = 1;

/// Run it: the line to print, or the error.
pub(super) async fn run(args: RejoinArgs) -> Result<super::Out, String> {
    let client = super::client(&args.http)?;
    let me = node_name(&client).await?;
    let members = client
        .members(false)
        .await
        .map_err(|e| format!("Error reading the members: {e}"))?;
    let others = alive_servers_besides(&members, &me);
    if !others.is_empty() {
        return Ok(super::Out::ok(format!(
            "{me} sees {} other alive server{} ({}): not joining",
            others.len(),
            if others.len() == 1 { "" } else { "s" },
            others.join(", ")
        )));
    }
    let mut joined = Vec::new();
    let mut errors = Vec::new();
    for name in &args.names {
        match client.join(name, false).await {
            Ok(()) => joined.push(name.as_str()),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if joined.is_empty() {
        return Err(format!(
            "{me} is alone and could not join {}: {}",
            args.names.join(", "),
            errors.join("; ")
        ));
    }
    Ok(super::Out::ok(format!(
        "{me} was alone: joined {}",
        joined.join(", ")
    )))
}

/// The agent's node name, from `/v1/agent/self` (`Config.NodeName`).
async fn node_name(client: &Client) -> Result<String, String> {
    let me = client
        .agent_self()
        .await
        .map_err(|e| format!("Error reading the agent's name: {e}"))?;
    me.get("Config")
        .and_then(|c| c.get("NodeName"))
        .and_then(|n| n.as_str())
        .map(String::from)
        .ok_or_else(|| {
            "Error reading the agent's name: /v1/agent/self has no Config.NodeName".into()
        })
}

/// The names of the alive servers (`role=consul`) other than `me`, sorted.
fn alive_servers_besides(members: &[Member], me: &str) -> Vec<String> {
    let mut names: Vec<String> = members
        .iter()
        .filter(|m| m.name != me && m.status == ALIVE)
        .filter(|m| m.tags.get("role").map(String::as_str) == Some("consul"))
        .map(|m| m.name.clone())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, status: u8, role: &str) -> Member {
        Member {
            name: name.into(),
            addr: "10.0.0.1".into(),
            port: 8301,
            tags: [("role".to_string(), role.to_string())].into(),
            status,
            ..Member::default()
        }
    }

    #[test]
    fn alone_means_no_other_alive_server() {
        let failed = 4;
        let members = [
            member("s1", ALIVE, "consul"),
            member("s2", failed, "consul"),
            member("c1", ALIVE, "node"),
        ];
        assert!(alive_servers_besides(&members, "s1").is_empty());
        let members = [
            member("s1", ALIVE, "consul"),
            member("s3", ALIVE, "consul"),
            member("s2", ALIVE, "consul"),
        ];
        assert_eq!(alive_servers_besides(&members, "s1"), ["s2", "s3"]);
    }
}
