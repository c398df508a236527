//! `GET /v1/operator/raft/configuration`: the servers of the latest raft
//! configuration in Consul's shape (consul-wire.md §6.8).

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::query::{self, json, ApiError, QueryOptions};
use crate::discovery::server::Server;

#[derive(Serialize)]
struct RaftConfiguration {
    #[serde(rename = "Servers")]
    servers: Vec<RaftServer>,
    #[serde(rename = "Index")]
    index: u64,
}

#[derive(Serialize)]
struct RaftServer {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Node")]
    node: String,
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "Leader")]
    leader: bool,
    #[serde(rename = "ProtocolVersion")]
    protocol_version: &'static str,
    #[serde(rename = "Voter")]
    voter: bool,
}

pub fn routes() -> Router<Server> {
    Router::new().route(
        "/v1/operator/raft/configuration",
        get(configuration).fallback(query::reject_method),
    )
}

async fn configuration(
    State(server): State<Server>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let info = server.raft_info();
    let leader = info.leader.as_ref().map(|p| p.addr.clone());
    let body = RaftConfiguration {
        servers: info
            .servers
            .into_iter()
            .map(|(_, p, voter)| RaftServer {
                leader: leader.as_deref() == Some(p.addr.as_str()),
                id: p.node_id,
                node: p.name,
                address: p.addr,
                protocol_version: "3",
                voter,
            })
            .collect(),
        index: info.configuration_index,
    };
    Ok(json(&body, &opts))
}
