//! `/v1/catalog` endpoints: register/deregister (python-consul), and the
//! blocking reads consul-template watches. Service reads block on that
//! service's own index, everything else on the catalog table index; every
//! answer carries the query headers (`X-Consul-Index` never 0).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;

use super::agent::only;
use super::coordinate::Near;
use super::filter::{self, Filter, Schema};
use super::query::{check_datacenter, json, ApiError, QueryOptions, Rendered};
use super::wire;
use crate::discovery::api::agent::decode;
use crate::discovery::api::catalog::{
    CatalogDeregistration, CatalogRegistration, CatalogService, Node,
};
use crate::discovery::server::state::catalog::NodeServices;
use crate::discovery::server::state::Command;
use crate::discovery::server::Server;

pub fn routes() -> Router<Server> {
    Router::new()
        .route(
            "/v1/catalog/register",
            only(put(register)).layer(super::query::registration_body_limit()),
        )
        .route("/v1/catalog/deregister", only(put(deregister)))
        .route("/v1/catalog/datacenters", only(get(datacenters)))
        .route("/v1/catalog/services", only(get(services)))
        .route("/v1/catalog/service/", only(get(missing_service)))
        .route("/v1/catalog/service/{*name}", only(get(service)))
        .route("/v1/catalog/nodes", only(get(nodes)))
        .route("/v1/catalog/node/", only(get(missing_node)))
        .route("/v1/catalog/node/{*node}", only(get(node)))
        .route("/v1/catalog/node-services/", only(get(missing_node)))
        .route(
            "/v1/catalog/node-services/{*node}",
            only(get(node_services)),
        )
}

async fn register(
    State(server): State<Server>,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let reg: CatalogRegistration =
        decode(&body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    check_datacenter(reg.datacenter.as_deref(), &server)?;
    let mut reg = wire::registration(reg).map_err(|e| ApiError::bad_request(e.to_string()))?;
    reg.bound()?;
    server.write(Command::Register(reg)).await?;
    Ok(json(&true, &opts))
}

async fn deregister(
    State(server): State<Server>,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let dereg: CatalogDeregistration =
        decode(&body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    check_datacenter(dereg.datacenter.as_deref(), &server)?;
    let dereg = wire::deregistration(dereg);
    if dereg.node.is_empty() {
        return Err(ApiError::bad_request("Missing node name"));
    }
    server.write(Command::Deregister(dereg)).await?;
    Ok(json(&true, &opts))
}

async fn datacenters(State(server): State<Server>, opts: QueryOptions) -> Response {
    json(&vec![server.config().datacenter.clone()], &opts)
}

async fn services(State(server): State<Server>, opts: QueryOptions) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let filter = Filter::from_query(&opts, Schema::ServiceNode)?;
    let dc = server.config().datacenter.clone();
    let (pretty, blocking) = (opts.pretty, opts.blocking("catalog/services", ""));
    drop(opts);
    Ok(blocking
        .answer(
            &server,
            |s| s.catalog_index(),
            move |s| match &filter {
                None => Rendered::json(&s.catalog_services().0, pretty),
                Some(f) => Rendered::json(&filtered_services(s, f, &dc), pretty),
            },
        )
        .await)
}

/// `catalog/services` with a filter: Consul tests each instance (a
/// `ServiceNode`, as `catalog/service/:s` shows it) and then groups the
/// instances left by name, their tags united; a name none is left of
/// is not listed.
fn filtered_services(
    s: &crate::discovery::server::state::State,
    f: &Filter,
    dc: &str,
) -> std::collections::BTreeMap<String, Vec<String>> {
    s.catalog_services()
        .0
        .into_keys()
        .filter_map(|name| {
            let mut rows: Vec<CatalogService> = s
                .catalog_service(&name, &[])
                .0
                .iter()
                .map(|i| wire::catalog_service(i, dc))
                .collect();
            f.retain(&mut rows);
            if rows.is_empty() {
                return None;
            }
            let mut tags: Vec<String> = rows.into_iter().flat_map(|r| r.service_tags).collect();
            tags.sort();
            tags.dedup();
            Some((name, tags))
        })
        .collect()
}

async fn missing_service() -> ApiError {
    ApiError::bad_request("Missing service name")
}

async fn missing_node() -> ApiError {
    ApiError::bad_request("Missing node name")
}

async fn service(
    State(server): State<Server>,
    Path(name): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let filter = Filter::from_query(&opts, Schema::ServiceNode)?;
    let tags: Vec<String> = opts.all("tag").into_iter().map(String::from).collect();
    let dc = server.config().datacenter.clone();
    let near = Near::parse(&opts, &server);
    let (pretty, blocking) = (opts.pretty, opts.blocking("catalog/service", &name));
    drop(opts);
    // Woken only by writes that touch this service.
    let probe_name = name.clone();
    Ok(blocking
        .answer(
            &server,
            move |s| s.service_index(&probe_name),
            move |s| {
                let (mut instances, _) = s.catalog_service(&name, &tags);
                near.sort(s, &mut instances, |i| &i.node.name);
                let mut rows: Vec<CatalogService> = instances
                    .iter()
                    .map(|i| wire::catalog_service(i, &dc))
                    .collect();
                filter::retain(filter.as_ref(), &mut rows);
                Rendered::json(&rows, pretty)
            },
        )
        .await)
}

async fn nodes(State(server): State<Server>, opts: QueryOptions) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let filter = Filter::from_query(&opts, Schema::Node)?;
    let dc = server.config().datacenter.clone();
    let near = Near::parse(&opts, &server);
    let (pretty, blocking) = (opts.pretty, opts.blocking("catalog/nodes", ""));
    drop(opts);
    Ok(blocking
        .answer(
            &server,
            |s| s.catalog_index(),
            move |s| {
                let (mut nodes, _) = s.catalog_nodes();
                near.sort(s, &mut nodes, |n| &n.name);
                let mut rows: Vec<Node> = nodes.iter().map(|n| wire::node(n, &dc)).collect();
                filter::retain(filter.as_ref(), &mut rows);
                Rendered::json(&rows, pretty)
            },
        )
        .await)
}

/// Unknown node ⇒ `null` with 200 (the Go api and consul-template expect it).
/// A filter tests the node's services.
async fn node(
    State(server): State<Server>,
    Path(name): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    node_read(
        server,
        name,
        opts,
        "catalog/node",
        |ns, dc, filter, pretty| {
            let mut ns = ns.map(|ns| wire::node_services(ns, dc));
            if let (Some(ns), Some(f)) = (ns.as_mut(), filter) {
                f.retain_values(&mut ns.services);
            }
            Rendered::json(&ns, pretty)
        },
    )
    .await
}

/// `catalog/node-services/:node`: `catalog/node` with the services as a list
/// (what the Go client's `Catalog().NodeServiceList` reads); an unknown node
/// is `{"Node": null, "Services": []}`.
async fn node_services(
    State(server): State<Server>,
    Path(name): Path<String>,
    opts: QueryOptions,
) -> Result<Response, ApiError> {
    node_read(
        server,
        name,
        opts,
        "catalog/node-services",
        |ns, dc, filter, pretty| {
            let mut list = wire::node_service_list(ns, dc);
            filter::retain(filter, &mut list.services);
            Rendered::json(&list, pretty)
        },
    )
    .await
}

/// How a node read renders the node's services (`None`: unknown node).
type RenderNode = fn(Option<&NodeServices>, &str, Option<&Filter>, bool) -> Rendered;

/// A blocking read of one node's services, filtered by `?filter=` on them.
async fn node_read(
    server: Server,
    name: String,
    opts: QueryOptions,
    endpoint: &str,
    render: RenderNode,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    let filter = Filter::from_query(&opts, Schema::Service)?;
    let dc = server.config().datacenter.clone();
    let (pretty, blocking) = (opts.pretty, opts.blocking(endpoint, &name));
    drop(opts);
    Ok(blocking
        .answer(
            &server,
            |s| s.catalog_index(),
            move |s| {
                render(
                    s.catalog_node(&name).0.as_ref(),
                    &dc,
                    filter.as_ref(),
                    pretty,
                )
            },
        )
        .await)
}
