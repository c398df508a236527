//! `/v1/session` endpoints (being written).

use axum::Router;

use crate::discovery::server::Server;

pub fn routes() -> Router<Server> {
    Router::new()
}
