//! `/v1/session/*` (consul-wire.md §5): create (case-insensitive body,
//! Patroni's lowercase `ttl`), destroy, renew (unknown ⇒ 404), and the
//! blocking reads info/list/node, indexed by the session table.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use serde::Serialize;

use super::query::{self, json, ApiError, QueryOptions, Rendered};
use super::wire;
use crate::discovery::api::session::{CreateError, SessionCreate, SessionEntry};
use crate::discovery::server::state::{Command, Outcome, State as NodeState, StateError};
use crate::discovery::server::{Server, WriteError};

pub fn routes() -> Router<Server> {
    Router::new()
        .route(
            "/v1/session/create",
            put(create).fallback(query::reject_method),
        )
        .route(
            "/v1/session/destroy/",
            put(destroy).fallback(query::reject_method),
        )
        .route(
            "/v1/session/destroy/{*id}",
            put(destroy).fallback(query::reject_method),
        )
        .route(
            "/v1/session/renew/",
            put(renew).fallback(query::reject_method),
        )
        .route(
            "/v1/session/renew/{*id}",
            put(renew).fallback(query::reject_method),
        )
        .route(
            "/v1/session/info/",
            get(info).fallback(query::reject_method),
        )
        .route(
            "/v1/session/info/{*id}",
            get(info).fallback(query::reject_method),
        )
        .route("/v1/session/list", get(list).fallback(query::reject_method))
        .route(
            "/v1/session/node/",
            get(node).fallback(query::reject_method),
        )
        .route(
            "/v1/session/node/{*node}",
            get(node).fallback(query::reject_method),
        )
}

#[derive(Serialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

/// A random UUID (version 4 layout), Consul's session ID format.
fn new_session_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

async fn create(
    State(server): State<Server>,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let node = server.config().node.clone();
    let refused = |e: CreateError| match e {
        CreateError::Decode(_) => ApiError::bad_request(e.to_string()),
        CreateError::Invalid(_) => ApiError::internal(e.to_string()),
    };
    let create = SessionCreate::parse(&body).map_err(refused)?;
    // An ID collision is astronomically unlikely; retry rather than fail.
    for _ in 0..3 {
        let req =
            wire::session_request(create.clone(), &node, new_session_id()).map_err(refused)?;
        let id = req.id.clone();
        match server.write(Command::SessionCreate(req)).await {
            Ok(_) => return Ok(json(&Created { id }, &opts)),
            Err(WriteError::State(StateError::SessionIdInUse(_))) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal("failed to generate a unique session ID"))
}

/// The ID after a route prefix; 400 `Missing session` when empty.
fn session_id(uri: &Uri, prefix: &str) -> Result<String, ApiError> {
    Some(query::path_rest(uri.path(), prefix)?)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing session"))
}

async fn destroy(
    State(server): State<Server>,
    uri: Uri,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let id = session_id(&uri, "/v1/session/destroy/")?;
    server.write(Command::SessionDestroy { id }).await?;
    Ok(json(&true, &opts))
}

async fn renew(
    State(server): State<Server>,
    uri: Uri,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let id = session_id(&uri, "/v1/session/renew/")?;
    match server.write(Command::SessionRenew { id }).await {
        Ok(w) => match w.outcome {
            Outcome::SessionRenewed(s) => Ok(json(&[SessionEntry::from(&s)], &opts)),
            other => Err(ApiError::internal(format!(
                "unexpected outcome of a renew: {other:?}"
            ))),
        },
        Err(WriteError::State(e @ StateError::SessionNotFound(_))) => {
            Err(ApiError::not_found(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The session table's index, the probe of every session read.
fn table_index(s: &NodeState) -> u64 {
    s.session_info("").1
}

async fn info(
    State(server): State<Server>,
    uri: Uri,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let id = session_id(&uri, "/v1/session/info/")?;
    let (pretty, blocking) = (opts.pretty, opts.blocking("session/info", &id));
    drop(opts);
    Ok(blocking
        .answer(&server, table_index, move |s| {
            let found: Vec<SessionEntry> = s
                .session_info(&id)
                .0
                .map(SessionEntry::from)
                .into_iter()
                .collect();
            Rendered::json(&found, pretty)
        })
        .await)
}

async fn list(State(server): State<Server>, opts: QueryOptions) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let (pretty, blocking) = (opts.pretty, opts.blocking("session/list", ""));
    drop(opts);
    Ok(blocking
        .answer(&server, table_index, move |s| {
            let all: Vec<SessionEntry> =
                s.sessions().0.into_iter().map(SessionEntry::from).collect();
            Rendered::json(&all, pretty)
        })
        .await)
}

async fn node(
    State(server): State<Server>,
    uri: Uri,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let name = Some(query::path_rest(uri.path(), "/v1/session/node/")?)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing node name"))?;
    let (pretty, blocking) = (opts.pretty, opts.blocking("session/node", &name));
    drop(opts);
    Ok(blocking
        .answer(&server, table_index, move |s| {
            let found: Vec<SessionEntry> = s
                .node_sessions(&name)
                .0
                .into_iter()
                .map(SessionEntry::from)
                .collect();
            Rendered::json(&found, pretty)
        })
        .await)
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_ids_look_like_uuids() {
        let id = super::new_session_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(id.split('-').map(str::len).eq([8, 4, 4, 4, 12]));
        assert_ne!(id, super::new_session_id());
    }
}
