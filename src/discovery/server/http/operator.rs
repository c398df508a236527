//! `GET /v1/operator/raft/configuration`: the raft voters (this node, the
//! leader, until clustering lands) in Consul's shape (consul-wire.md §6.8).

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
    let cfg = server.config();
    let addr = server.rpc_addr().to_string();
    let body = RaftConfiguration {
        servers: vec![RaftServer {
            // Consul's raft ID is the node ID; the address stands in until
            // nodes carry one.
            id: addr.clone(),
            node: cfg.node.clone(),
            address: addr,
            leader: true,
            protocol_version: "3",
            voter: true,
        }],
        // The index of the first log entry (this node's registration).
        index: 1,
    };
    Ok(json(&body, &opts))
}
