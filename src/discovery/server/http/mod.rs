//! Consul's HTTP API, one file per endpoint group. Handlers reach the node only
//! through `Server::{write, read, block_on}`; the wire conventions every group
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

use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

/// How long in-flight requests get to finish after `shutdown`. Parked
/// blocking queries are not waited for (they may have minutes left); their
/// connections are closed and clients retry, as with a restarting Consul.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// HTTP/1.1 connection settings. A parked blocking query is a whole
/// connection, so what hyper keeps per connection decides what 10,000
/// long-pollers cost (tests/bench/blocking.py measures it).
fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    // hyper's minimum (8 KiB). Request heads of Consul clients are far
    // smaller; PUT bodies stream through it and are capped by the handlers.
    b.max_buf_size(8 * 1024);
    // Queue body chunks for writev instead of copying them into one
    // growing flat buffer per connection.
    b.writev(true);
    b
}

/// Serve the API until `shutdown`. Logs `listening for http on <addr>`.
pub async fn serve(
    listener: TcpListener,
    server: Server,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!("listening for http on {}", listener.local_addr()?);
    let app = router(server);
    let http1 = http1();
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE/ENFILE and aborted handshakes: keep serving the
                // connections we have; back off briefly so a full fd table
                // does not spin the loop.
                tracing::warn!("accepting an http connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small JSON answers: don't let Nagle delay them behind the ACK.
        let _ = stream.set_nodelay(true);
        let conn =
            http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("http connection: {e}");
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}
