//! Consul's HTTP API, one file per endpoint group. Handlers reach the node only
//! through `Server::{write, read, block_on}`; [`guard`], in front of the
//! router, applies the ACL token, the read consistency modes and the leader
//! headers; the wire conventions every group
//! shares (presence flags, `?wait`, index headers, error bodies) live in
//! `query`, and the conversions between the wire types (`discovery::api`) and
//! the state's in `wire`.

pub mod agent;
pub mod agent_runtime;
pub mod catalog;
pub mod conn;
pub mod coordinate;
pub mod event;
pub mod filter;
pub mod health;
pub mod kv;
pub mod operator;
pub mod query;
pub mod session;
pub mod snapshot;
pub mod status;
pub mod txn;
pub mod wire;

use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Consistency, Server};

/// The whole API, with the web UI (`crate::ui`) when `--ui` is on and
/// `GET /` (a redirect to it, or a line saying it is off).
pub fn router(server: Server) -> Router {
    api_routes()
        .merge(crate::ui::routes(server.cluster().ui))
        .fallback(|| async { query::ApiError::not_found("") })
        .with_state(server)
}

/// The API alone: what the UI's pages read through [`call`].
pub(crate) fn api_router(server: Server) -> Router {
    api_routes()
        .fallback(|| async { query::ApiError::not_found("") })
        .with_state(server)
}

fn api_routes() -> Router<Server> {
    Router::new()
        .merge(kv::routes())
        .merge(txn::routes())
        .merge(session::routes())
        .merge(status::routes())
        .merge(operator::routes())
        .merge(agent::routes())
        .merge(agent_runtime::routes())
        .merge(catalog::routes())
        .merge(health::routes())
        .merge(snapshot::routes())
        .merge(event::routes())
        .merge(coordinate::routes())
}

/// One request through the API as a client's would go (ACL token,
/// consistency, headers): how the UI's pages read the state.
pub(crate) async fn call(
    server: &Server,
    app: &Router,
    req: axum::extract::Request,
) -> axum::response::Response {
    guard(server.clone(), app.clone(), req).await
}

/// Endpoints whose GETs are queries of the replicated state (consistency
/// modes apply, index headers are sent); agent and status endpoints are
/// answered by the agent itself.
fn is_query(path: &str) -> bool {
    [
        "/v1/kv/",
        "/v1/catalog/",
        "/v1/health/",
        "/v1/session/",
        // `nodes` and `node/`; `datacenters` reads the members, not the state.
        "/v1/coordinate/node",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// Whether a presence flag (`?stale`, `?consistent=1`) is in the query.
fn has_flag(query: &str, name: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv.split_once('=').map_or(kv, |(k, _)| k) == name)
}

/// The token of a request: `X-Consul-Token`, `Authorization: Bearer` or `?token=`.
pub(crate) fn token(req: &axum::extract::Request) -> Option<String> {
    let h = req.headers();
    h.get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or_else(|| {
            h.get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(String::from)
        })
        .or_else(|| {
            req.uri().query().and_then(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == "token")
                    .map(|(_, v)| query::percent_decode(v))
            })
        })
}

/// Every request: the `--acl-token` check (403 `Permission denied`
/// without it; status endpoints are open, as in Consul), the read's
/// consistency mode (500 `No cluster leader` when it cannot be met), and
/// the real `X-Consul-KnownLeader`/`X-Consul-LastContact` on query answers.
///
/// A plain function in front of the router rather than an axum middleware:
/// a parked blocking query keeps this future alive, and `from_fn`'s future costs
/// about 1 KiB more per connection (tests/bench/blocking.py).
async fn guard(
    server: Server,
    mut app: Router,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;

    let started = tokio::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path();
    // The UI's pages ask for the token themselves and read through the
    // API, which checks it (`crate::ui`).
    let open = path.starts_with("/v1/status/") || crate::ui::is_page(path);
    // Consul's event list sends its index alone, without leader headers.
    let leader_headers = !path.starts_with("/v1/event/");
    let metrics_path = path.to_string();
    if let Some(master) = &server.cluster().acl_token {
        if !open && !token(&req).is_some_and(|t| master.matches(&t)) {
            return query::ApiError::forbidden().into_response();
        }
    }
    if crate::ui::cross_origin_write(&req) {
        return query::ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "Permission denied: cross-origin write refused",
        )
        .into_response();
    }
    let read = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let mode = (read && is_query(path))
        .then(|| {
            let q = req.uri().query().unwrap_or("");
            match (has_flag(q, "stale"), has_flag(q, "consistent")) {
                // Both: the handler answers Consul's 400.
                (true, true) => None,
                (true, false) => Some(Consistency::Stale),
                (false, true) => Some(Consistency::Consistent),
                (false, false) => Some(Consistency::Default),
            }
        })
        .flatten();
    match mode {
        None | Some(Consistency::Stale) => {}
        Some(Consistency::Default) if server.leader_known() => {}
        // Boxed: only a read that has to wait pays for the wait's future.
        Some(mode) => {
            if let Err(e) = Box::pin(server.read_barrier(mode)).await {
                return query::ApiError::internal(e.to_string()).into_response();
            }
        }
    }
    // A `Router` is always ready (its `poll_ready` returns `Ready` at once),
    // so it may be called without polling readiness first.
    let mut resp = match tower_service::Service::call(&mut app, req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    if leader_headers && resp.headers().contains_key("x-consul-index") {
        let (known, contact) = server.leader_status();
        let h = resp.headers_mut();
        h.insert(
            "x-consul-knownleader",
            axum::http::HeaderValue::from_static(if known { "true" } else { "false" }),
        );
        h.insert(
            "x-consul-lastcontact",
            axum::http::HeaderValue::from(contact),
        );
    }
    agent_runtime::record_request(&server, method.as_str(), &metrics_path, started.elapsed());
    resp
}

/// How long in-flight requests get to finish after `shutdown`. Parked
/// blocking queries are not waited for (they may have minutes left); their
/// connections are closed and clients retry, as with a restarting Consul.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The HTTP listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections one client address may hold (Consul's
    /// `http_max_conns_per_client`); 0 = no limit.
    pub max_conns_per_client: usize,
    /// Stalled heads and idle keep-alive connections (`conn::ClientIo`).
    pub timeouts: conn::Timeouts,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_conns_per_client: conn::DEFAULT_MAX_CONNS_PER_CLIENT,
            timeouts: conn::Timeouts::default(),
        }
    }
}

/// HTTP/1.1 connection settings. A parked blocking query is a whole
/// connection, so what hyper keeps per connection decides what 10,000
/// long-pollers cost (tests/bench/blocking.py measures it).
fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    // The time limits are `conn::ClientIo`'s: hyper's header_read_timeout
    // would close an idle keep-alive connection as soon as a stalled head.
    b.timer(hyper_util::rt::TokioTimer::new());
    b.header_read_timeout(None);
    // hyper's minimum (8 KiB). Request heads of Consul clients are far
    // smaller; PUT bodies stream through it and are capped by the handlers.
    b.max_buf_size(8 * 1024);
    // Queue body chunks for writev instead of copying them into one
    // growing flat buffer per connection.
    b.writev(true);
    b
}

/// Serve the API until `shutdown` with the default [`HttpLimits`].
pub async fn serve(
    listener: TcpListener,
    server: Server,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, server, shutdown, HttpLimits::default()).await
}

/// Serve the API until `shutdown`. Logs `listening for http on <addr>`.
pub async fn serve_with(
    listener: TcpListener,
    server: Server,
    shutdown: CancellationToken,
    limits: HttpLimits,
) -> std::io::Result<()> {
    tracing::info!("listening for http on {}", listener.local_addr()?);
    let app = router(server.clone());
    let http1 = http1();
    let clients = conn::ClientConns::default();
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE/ENFILE and aborted handshakes: keep serving the
                // connections we have; back off briefly so a full fd table
                // does not spin the loop.
                tracing::warn!("accepting an http connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = clients.admit(peer.ip(), limits.max_conns_per_client) else {
            tracing::debug!("refusing an http connection from {peer}: over its connection limit");
            connections.spawn(conn::refuse(stream));
            continue;
        };
        // Small JSON answers: don't let Nagle delay them behind the ACK.
        let _ = stream.set_nodelay(true);
        let in_flight = conn::InFlight::default();
        let service = {
            let (server, app, in_flight) = (server.clone(), app.clone(), in_flight.clone());
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (server, app) = (server.clone(), app.clone());
                let answering = in_flight.start();
                async move {
                    let resp = guard(server, app, req.map(axum::body::Body::new)).await;
                    drop(answering);
                    Ok::<_, std::convert::Infallible>(resp)
                }
            })
        };
        let io = TokioIo::new(conn::ClientIo::new(stream, in_flight, limits.timeouts));
        // Boxed here: moved into the task and pinned there, the connection
        // would be stored twice in the task (captured, then pinned).
        let mut conn = Box::pin(http1.serve_connection(io, service));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
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
