//! `/v1/status/leader` and `/v1/status/peers`: this single-node server is
//! its own leader and only voter, at `<advertise>:<server-port>`. Agent-local:
//! no index headers (consul-wire.md §0).

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
    json(&server.rpc_addr().to_string(), &opts)
}

async fn peers(State(server): State<Server>, opts: QueryOptions) -> Response {
    json(&[server.rpc_addr().to_string()], &opts)
}
