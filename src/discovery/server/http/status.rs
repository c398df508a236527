//! `/v1/status/leader` and `/v1/status/peers`: the raft leader's address
//! (`""` when there is none) and every voter's, as `<advertise>:<server-port>`.
//! Agent-local: no index headers (consul-wire.md §0).

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::query::{self, json, QueryOptions};
use crate::discovery::server::Server;

pub fn routes() -> Router<Server> {
    Router::new()
        .route(
            "/v1/status/leader",
            get(leader).fallback(query::reject_method),
        )
        .route(
            "/v1/status/peers",
            get(peers).fallback(query::reject_method),
        )
}

async fn leader(State(server): State<Server>, opts: QueryOptions) -> Response {
    let leader = server
        .leader_known()
        .then(|| server.leader())
        .flatten()
        .map(|p| p.addr)
        .unwrap_or_default();
    json(&leader, &opts)
}

async fn peers(State(server): State<Server>, opts: QueryOptions) -> Response {
    let info = server.raft_info();
    let voters: Vec<String> = info
        .servers
        .into_iter()
        .filter(|(_, _, voter)| *voter)
        .map(|(_, p, _)| p.addr)
        .collect();
    json(&voters, &opts)
}
