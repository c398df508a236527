//! The agent's check runner (TTL, HTTP, TCP, script) for this node's checks
//! (being written).

use tokio_util::sync::CancellationToken;

use super::Server;

/// Run this node's checks until `shutdown`, writing status changes.
pub async fn run(_server: Server, shutdown: CancellationToken) {
    shutdown.cancelled().await;
}
