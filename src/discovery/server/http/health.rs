//! `/v1/health` endpoints: service entries (with `?passing` and repeatable,
//! case-insensitive `?tag=`), the checks of a service, of a node, or in a
//! state. Service reads block on the service's own index, so a change to
//! service y never wakes a watcher of service x.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::agent::only;
use super::coordinate::Near;
use super::filter::{self, Filter, Schema};
use super::query::{ApiError, QueryOptions, Rendered};
use super::wire;
use crate::discovery::api::health::{HealthCheck, ServiceEntry};
use crate::discovery::server::state::checks::StatusFilter;
use crate::discovery::server::Server;

pub fn routes() -> Router<Server> {
    Router::new()
        .route("/v1/health/service/", only(get(missing_service)))
        .route("/v1/health/service/{*name}", only(get(service)))
        .route("/v1/health/checks/", only(get(missing_service)))
        .route("/v1/health/checks/{*name}", only(get(service_checks)))
        .route("/v1/health/node/", only(get(missing_node)))
        .route("/v1/health/node/{*node}", only(get(node_checks)))
        .route("/v1/health/state/", only(get(missing_state)))
        .route("/v1/health/state/{*state}", only(get(state)))
}

async fn missing_service() -> ApiError {
    ApiError::bad_request("Missing service name")
}

async fn missing_node() -> ApiError {
    ApiError::bad_request("Missing node name")
}

async fn missing_state() -> ApiError {
    ApiError::bad_request("Missing check state")
}

async fn service(
    State(server): State<Server>,
    Path(name): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let passing = opts
        .bool_param("passing")
        .map_err(|_| ApiError::bad_request("Invalid value for ?passing"))?
        .unwrap_or(false);
    let filter = Filter::from_query(&opts, Schema::ServiceEntry)?;
    let tags: Vec<String> = opts.all("tag").into_iter().map(String::from).collect();
    let dc = server.config().datacenter.clone();
    let near = Near::parse(&opts, &server);
    let (pretty, blocking) = (opts.pretty, opts.blocking("health/service", &name));
    drop(opts);
    // Woken only by writes that touch this service.
    let probe_name = name.clone();
    Ok(blocking
        .answer(
            &server,
            move |s| s.service_index(&probe_name),
            move |s| {
                let (mut entries, _) = s.health_service(&name, &tags, passing);
                near.sort(s, &mut entries, |e| &e.node.name);
                let mut rows: Vec<ServiceEntry> = entries
                    .iter()
                    .map(|e| wire::service_entry(e, &dc))
                    .collect();
                filter::retain(filter.as_ref(), &mut rows);
                Rendered::json(&rows, pretty)
            },
        )
        .await)
}

/// The checks as Consul serves them, less those `filter` drops.
fn wire(
    checks: Vec<crate::discovery::server::state::checks::HealthCheck>,
    filter: Option<&Filter>,
) -> Vec<HealthCheck> {
    let mut rows: Vec<HealthCheck> = checks.iter().map(HealthCheck::from).collect();
    filter::retain(filter, &mut rows);
    rows
}

async fn service_checks(
    State(server): State<Server>,
    Path(name): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let filter = Filter::from_query(&opts, Schema::HealthCheck)?;
    let near = Near::parse(&opts, &server);
    let (pretty, blocking) = (opts.pretty, opts.blocking("health/checks", &name));
    drop(opts);
    let probe_name = name.clone();
    Ok(blocking
        .answer(
            &server,
            move |s| s.service_index(&probe_name),
            move |s| {
                let (mut checks, _) = s.health_service_checks(&name);
                near.sort(s, &mut checks, |c| &c.node);
                Rendered::json(&wire(checks, filter.as_ref()), pretty)
            },
        )
        .await)
}

async fn node_checks(
    State(server): State<Server>,
    Path(node): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let filter = Filter::from_query(&opts, Schema::HealthCheck)?;
    let (pretty, blocking) = (opts.pretty, opts.blocking("health/node", &node));
    drop(opts);
    Ok(blocking
        .answer(
            &server,
            |s| s.catalog_index(),
            move |s| Rendered::json(&wire(s.health_node(&node).0, filter.as_ref()), pretty),
        )
        .await)
}

async fn state(
    State(server): State<Server>,
    Path(state): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    // Consul creates the filter before it reads the state's checks.
    let filter = Filter::from_query(&opts, Schema::HealthCheck)?;
    let status = StatusFilter::parse(&state)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid state: {state}")))?;
    let near = Near::parse(&opts, &server);
    let (pretty, blocking) = (opts.pretty, opts.blocking("health/state", &state));
    drop(opts);
    Ok(blocking
        .answer(
            &server,
            |s| s.catalog_index(),
            move |s| {
                let (mut checks, _) = s.health_state(status);
                near.sort(s, &mut checks, |c| &c.node);
                Rendered::json(&wire(checks, filter.as_ref()), pretty)
            },
        )
        .await)
}
