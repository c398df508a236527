//! Consul's HTTP API, one file per endpoint group. Handlers reach the node only
//! through `Server::{write, read, block}`; the wire conventions every group
//! shares (presence flags, Go durations, index headers, error bodies) live in
//! `query`.

pub mod agent;
pub mod catalog;
pub mod health;
pub mod kv;
pub mod operator;
pub mod query;
pub mod session;
pub mod status;
pub mod txn;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Server;

/// The whole API.
pub fn router(server: Server) -> Router {
    Router::new()
        .merge(kv::routes())
        .merge(txn::routes())
        .merge(session::routes())
        .merge(status::routes())
        .merge(operator::routes())
        .merge(agent::routes())
        .merge(catalog::routes())
        .merge(health::routes())
        .fallback(|| async { query::ApiError::not_found("") })
        .with_state(server)
}

/// Serve the API until `shutdown`. Logs `listening for http on <addr>`.
pub async fn serve(
    listener: TcpListener,
    server: Server,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!("listening for http on {}", listener.local_addr()?);
    axum::serve(listener, router(server))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
