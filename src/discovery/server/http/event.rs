//! `/v1/event`: `PUT fire/<name>` (the payload is the body, read only when
//! `Content-Length` > 0; `?node=`, `?service=`, `?tag=` are regex filters the
//! receiving agents apply) and `GET list` (this agent's ring, `?name=` an
//! exact match). The list's index is Consul's `uuidToUint64` of the last
//! listed event's ID (1 when none), so it is not monotonic: a blocking list
//! waits only while that index equals the client's, up to `?wait`, which
//! defaults to its 600 s cap here. Only `X-Consul-Index` is sent (no
//! leader headers), as Consul does. Delivery is `server::events`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;

use super::agent::only;
use super::query::{self, ApiError, QueryOptions, MAX_WAIT};
use crate::discovery::api::event::{id_to_index, UserEvent};
use crate::discovery::api::gofmt::base64_encode;
use crate::discovery::server::{events, raft, Server};

const FIRE: &str = "/v1/event/fire/";

pub fn routes() -> Router<Server> {
    Router::new()
        .route(FIRE, only(put(fire)))
        .route("/v1/event/fire/{*name}", only(put(fire)))
        .route("/v1/event/list", only(get(list)))
}

async fn fire(
    State(server): State<Server>,
    uri: Uri,
    headers: HeaderMap,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let name = query::path_rest(uri.path(), FIRE)?;
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing name"));
    }
    let filter = |k: &str| opts.get(k).unwrap_or_default().to_string();
    let sized = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let ev = UserEvent {
        id: raft::new_node_id(),
        name,
        payload: (sized && !body.is_empty()).then(|| base64_encode(&body)),
        node_filter: filter("node"),
        service_filter: filter("service"),
        tag_filter: filter("tag"),
        version: events::VERSION,
        ltime: 0,
    };
    events::validate(&ev, server.events().clock()).map_err(ApiError::internal)?;
    server.fire_event(ev.clone());
    Ok(query::json(&ev, &opts))
}

async fn list(State(server): State<Server>, opts: QueryOptions) -> Response {
    let name = opts.get("name").filter(|n| !n.is_empty()).map(String::from);
    let wait = if opts.get("wait").is_some() {
        opts.wait
    } else {
        MAX_WAIT
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut kept = server.events().subscribe();
    loop {
        kept.borrow_and_update();
        let events = server.events().list(name.as_deref());
        let index = events.last().map_or(1, |e| id_to_index(&e.id));
        if opts.index > 0 && index == opts.index {
            tokio::select! {
                changed = kept.changed() => if changed.is_ok() { continue },
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        let mut r = query::json(&events, &opts);
        r.headers_mut()
            .insert("x-consul-index", HeaderValue::from(index));
        return r;
    }
}
