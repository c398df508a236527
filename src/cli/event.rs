//! `pilotfish event`: fire a user event, as `consul event` does (the same
//! checks in the same order, then `Event ID: <id>`).

use crate::discovery::api::event::compile;
use crate::discovery::client::Fire;

/// `event` flags (Consul's `-name`, `-node`, `-service`, `-tag`).
#[derive(Debug, Clone, clap::Args)]
pub struct EventArgs {
    #[command(flatten)]
    pub http: super::HttpArgs,
    /// The event's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only agents whose node name matches this regular expression.
    #[arg(long)]
    pub node: Option<String>,
    /// Only agents with a service whose ID matches this regular expression.
    #[arg(long)]
    pub service: Option<String>,
    /// With --service: only where that service has a matching tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// The payload (at most one argument).
    #[arg(value_name = "PAYLOAD")]
    pub payload: Vec<String>,
}

/// Run it: `Event ID: <id>`, or Consul's error text.
pub(super) async fn run(args: EventArgs) -> Result<super::Out, String> {
    let name = args.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err("Event name must be specified".to_string());
    }
    let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    for (what, re) in [
        ("node", set(&args.node)),
        ("service", set(&args.service)),
        ("tag", set(&args.tag)),
    ] {
        if let Some(re) = re {
            compile(&re).map_err(|e| format!("Failed to compile {what} filter regexp: {e}"))?;
        }
    }
    if set(&args.tag).is_some() && set(&args.service).is_none() {
        return Err("Cannot provide tag filter without service filter.".to_string());
    }
    let payload = match args.payload.as_slice() {
        [] => None,
        [one] => Some(one.as_bytes().to_vec()),
        _ => return Err("Too many command line arguments.".to_string()),
    };
    let client = super::client(&args.http)?;
    client.agent_self().await.map_err(|e| {
        format!(
            "Error querying Consul agent: {}",
            super::failure(&client, e)
        )
    })?;
    let fired = client
        .event_fire(&Fire {
            name,
            payload,
            node: set(&args.node),
            service: set(&args.service),
            tag: set(&args.tag),
        })
        .await
        .map_err(|e| format!("Error firing event: {}", super::failure(&client, e)))?;
    Ok(super::Out::ok(format!("Event ID: {}", fired.id)))
}
