//! `/v1/status` endpoints (being written).

use axum::Router;

use crate::discovery::server::Server;

pub fn routes() -> Router<Server> {
    Router::new()
}
