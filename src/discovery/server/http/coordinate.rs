//! `/v1/coordinate` endpoints (the servers' coordinates, every node's, one
//! node's, and the queued update) and `?near=` sorting, which the catalog
//! and health reads apply through [`Near`]. Node reads block on the
//! coordinates table's index.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;

use super::agent::only;
use super::query::{json, ApiError, QueryOptions, Rendered};
use crate::discovery::api::agent::decode;
use crate::discovery::api::coordinate::{Coord, CoordinateDatacenterMap, CoordinateEntry};
use crate::discovery::server::cluster::Status;
use crate::discovery::server::coordinate::UpdateError;
use crate::discovery::server::state::coordinate::CoordinateUpdate;
use crate::discovery::server::state::State as Replica;
use crate::discovery::server::vivaldi::Coordinate;
use crate::discovery::server::Server;

pub fn routes() -> Router<Server> {
    Router::new()
        .route("/v1/coordinate/datacenters", only(get(datacenters)))
        .route("/v1/coordinate/nodes", only(get(nodes)))
        .route("/v1/coordinate/node/{*node}", only(get(node)))
        .route("/v1/coordinate/update", only(put(update)))
}

pub fn to_wire(c: &Coordinate) -> Coord {
    Coord {
        vec: c.vec.clone(),
        error: c.error,
        adjustment: c.adjustment,
        height: c.height,
    }
}

fn from_wire(c: Coord) -> Coordinate {
    Coordinate {
        vec: c.vec,
        error: c.error,
        adjustment: c.adjustment,
        height: c.height,
    }
}

fn entry(node: &str, segment: &str, c: &Coordinate) -> CoordinateEntry {
    CoordinateEntry {
        node: node.to_string(),
        segment: segment.to_string(),
        coord: Some(to_wire(c)),
    }
}

/// The servers of this datacenter with their coordinates (ours live, the
/// others' as the servers last stored them). Not a blocking query.
async fn datacenters(State(server): State<Server>, opts: QueryOptions) -> Response {
    let me = server.members().me().name.clone();
    let mine = server.coordinate();
    let mut servers: Vec<String> = server
        .members()
        .all(false)
        .into_iter()
        .filter(|(m, s)| m.server && *s == Status::Alive && m.name != me)
        .map(|(m, _)| m.name)
        .collect();
    servers.sort();
    let mut coordinates: Vec<CoordinateEntry> = server.read(|state| {
        servers
            .iter()
            .filter_map(|name| {
                let c = state.node_coordinates(name)?.get("")?;
                Some(entry(name, "", c))
            })
            .collect()
    });
    if server.cluster().server {
        coordinates.push(entry(&me, "", &mine));
        coordinates.sort_by(|a, b| a.node.cmp(&b.node));
    }
    let map = CoordinateDatacenterMap {
        datacenter: server.config().datacenter.clone(),
        area_id: "wan".to_string(),
        coordinates,
    };
    json(&vec![map], &opts)
}

/// Only the entries of `?segment=`, when given.
fn segment_filter(opts: &QueryOptions) -> Option<String> {
    opts.get("segment").map(String::from)
}

async fn nodes(State(server): State<Server>, opts: QueryOptions) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let segment = segment_filter(&opts);
    let (pretty, blocking) = (opts.pretty, opts.blocking("coordinate/nodes", ""));
    drop(opts);
    Ok(blocking
        .answer(
            &server,
            |s| s.coordinate_index(),
            move |s| {
                let rows: Vec<CoordinateEntry> = s
                    .coordinates()
                    .filter(|(_, seg, _)| segment.as_deref().is_none_or(|want| want == *seg))
                    .map(|(n, seg, c)| entry(n, seg, c))
                    .collect();
                Rendered::json(&rows, pretty)
            },
        )
        .await)
}

/// 404 with an empty body when the node has no coordinate.
async fn node(
    State(server): State<Server>,
    Path(name): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let segment = segment_filter(&opts);
    let (pretty, blocking) = (opts.pretty, opts.blocking("coordinate/node", &name));
    drop(opts);
    Ok(blocking
        .answer(
            &server,
            |s| s.coordinate_index(),
            move |s| {
                let rows: Vec<CoordinateEntry> = s
                    .node_coordinates(&name)
                    .into_iter()
                    .flatten()
                    .filter(|(seg, _)| segment.as_deref().is_none_or(|want| want == seg.as_str()))
                    .map(|(seg, c)| entry(&name, seg, c))
                    .collect();
                if rows.is_empty() {
                    Rendered::not_found()
                } else {
                    Rendered::json(&rows, pretty)
                }
            },
        )
        .await)
}

/// Queued for the servers' next batch; 200 with an empty body.
async fn update(
    State(server): State<Server>,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let req: CoordinateEntry =
        decode(&body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let coord = req
        .coord
        .map(from_wire)
        .ok_or_else(|| ApiError::internal(UpdateError::Invalid.to_string()))?;
    server
        .update_coordinate(CoordinateUpdate {
            node: req.node,
            segment: req.segment,
            coord,
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(().into_response())
}

/// `?near=NODE` (`_agent`: this agent's node): rows sorted by estimated
/// distance from it, stably, nodes without a coordinate last in their
/// order; nothing moves when the source has no coordinate (Consul's
/// `sortNodesByDistanceFrom`).
#[derive(Debug, Clone, Default)]
pub struct Near(Option<String>);

impl Near {
    pub fn parse(opts: &QueryOptions, server: &Server) -> Near {
        Near(match opts.get("near") {
            None | Some("") => None,
            Some("_agent") => Some(server.config().node.clone()),
            Some(n) => Some(n.to_string()),
        })
    }

    /// Sort `rows`, whose node `node_of` names, by distance from the source.
    pub fn sort<T>(&self, s: &Replica, rows: &mut [T], node_of: impl Fn(&T) -> &str) {
        let Some(source) = &self.0 else { return };
        let Some(from) = s.node_coordinates(source).and_then(|m| m.get("")) else {
            return;
        };
        let distance = |node: &str| {
            s.node_coordinates(node)
                .and_then(|m| m.get(""))
                .map_or(f64::INFINITY, |c| from.distance_to(c))
        };
        rows.sort_by(|a, b| distance(node_of(a)).total_cmp(&distance(node_of(b))));
    }
}
