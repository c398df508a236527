//! The web UI at `/ui/` on the HTTP port: services, nodes, KV, sessions,
//! the cluster and the agent, and (`jobs`) the supervisor's jobs on the
//! telemetry port. Pages are rendered on the server with handlebars (the
//! template watcher's engine; its `{{}}` escapes, and no template uses
//! `{{{}}}`), so reading works without JavaScript. They read the state the
//! way a client does: each page makes its requests through the API's own
//! router and guard ([`crate::discovery::server::http::call`]) with the
//! browser's token, so the ACL check, the consistency mode and the answers
//! are the API's. `ui.js` then keeps each list live with one blocking query
//! of the JSON API per list (`?index=`), swaps in the list re-rendered by
//! the server when the index moves, asks for the ACL token, and makes the KV
//! writes (PUT/DELETE with `?cas=`) through the API. The assets are embedded.
//!
//! `view` builds the pages' data from the API's answers (pure).

pub mod jobs;
pub mod view;

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use handlebars::Handlebars;
use serde_json::{json, Value};

use crate::discovery::server::http::{api_router, call, query::percent_decode, token};
use crate::discovery::server::Server;

/// The largest API answer a page reads (the catalog of a big cluster).
const ANSWER_LIMIT: usize = 64 * 1024 * 1024;

/// `GET /` (Consul's answers: a 301 to the UI, or a line saying it is off)
/// and, when `enabled`, the UI's pages and assets.
pub fn routes(enabled: bool) -> Router<Server> {
    let r = Router::new().route("/", get(move || index(enabled)));
    if !enabled {
        return r;
    }
    r.route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(page))
        .route("/ui/{*rest}", get(page))
}

async fn index(enabled: bool) -> Response {
    if enabled {
        return redirect("/ui/");
    }
    "pilotfish agent: UI disabled. To enable, start the agent with --ui.".into_response()
}

fn redirect(to: &'static str) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, HeaderValue::from_static(to))],
    )
        .into_response()
}

/// Paths the UI answers without the API's token check: its pages read
/// through the API, which checks the token, and ask for one when refused.
pub fn is_page(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// A write (not GET/HEAD/OPTIONS) a browser sent from another origin: its
/// `Origin` (browsers send it with every cross-origin request and with
/// same-origin writes) names another host than `Host`. Consul clients send
/// no `Origin`, so they are never refused.
pub fn cross_origin_write(req: &Request) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return false;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h),
        _ => true,
    }
}

// ----- assets -----

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");
const FAVICON: &str = include_str!("assets/favicon.svg");

/// The embedded assets: (name, content type, body).
const ASSETS: [(&str, &str, &str); 3] = [
    ("ui.css", "text/css; charset=utf-8", CSS),
    ("ui.js", "text/javascript; charset=utf-8", JS),
    ("favicon.svg", "image/svg+xml", FAVICON),
];

/// Total size of the embedded templates and assets (reported by the tests
/// as what the UI adds to the binary besides its code).
pub fn embedded_bytes() -> usize {
    ASSETS.iter().map(|(_, _, b)| b.len()).sum::<usize>()
        + TEMPLATES.iter().map(|(_, t)| t.len()).sum::<usize>()
}

pub(crate) fn asset(name: &str) -> Option<Response> {
    let (_, kind, body) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    Some(
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            *body,
        )
            .into_response(),
    )
}

// ----- templates -----

const TEMPLATES: [(&str, &str); 12] = [
    ("layout", include_str!("templates/layout.hbs")),
    ("services", include_str!("templates/services.hbs")),
    ("service", include_str!("templates/service.hbs")),
    ("nodes", include_str!("templates/nodes.hbs")),
    ("node", include_str!("templates/node.hbs")),
    ("kv_folder", include_str!("templates/kv_folder.hbs")),
    ("kv_key", include_str!("templates/kv_key.hbs")),
    ("sessions", include_str!("templates/sessions.hbs")),
    ("cluster", include_str!("templates/cluster.hbs")),
    ("agent", include_str!("templates/agent.hbs")),
    ("message", include_str!("templates/message.hbs")),
    ("jobs", include_str!("templates/jobs.hbs")),
];

fn engine() -> Result<&'static Handlebars<'static>, &'static str> {
    static ENGINE: OnceLock<Result<Handlebars<'static>, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut h = Handlebars::new();
            for (name, text) in TEMPLATES {
                h.register_template_string(name, text)
                    .map_err(|e| format!("ui template {name}: {e}"))?;
            }
            Ok(h)
        })
        .as_ref()
        .map_err(String::as_str)
}

/// A whole page: `template` inside the layout, HTML with the UI's headers.
pub(crate) fn render(template: &str, status: StatusCode, data: &Value) -> Response {
    let html = engine().and_then(|h| {
        h.render(template, data).map_err(|e| {
            tracing::error!("ui: rendering {template}: {e}");
            "rendering failed"
        })
    });
    match html {
        Ok(html) => html_response(status, html),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Defence in depth behind the escaping: no inline script or style,
    // nothing from elsewhere, no framing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

// ----- reading through the API -----

/// Why a page could not read what it needs.
#[derive(Debug)]
pub(crate) enum Refused {
    /// 403: no token, or a wrong one.
    Denied,
    /// Anything else but 200 and 404: the API's status and body.
    Failed(u16, String),
}

/// The API as the page's browser would call it, with its token.
struct Api {
    server: Server,
    app: Router,
    token: Option<String>,
}

impl Api {
    /// `GET path` (already encoded) → the JSON answer and its
    /// `X-Consul-Index` (0 without one); `None` for a 404.
    async fn get(&self, path: &str) -> Result<Option<(Value, u64)>, Refused> {
        let mut req = Request::builder().method(Method::GET).uri(path);
        if let Some(t) = &self.token {
            req = req.header("x-consul-token", t);
        }
        let req = req
            .body(Body::empty())
            .map_err(|e| Refused::Failed(500, e.to_string()))?;
        let resp = call(&self.server, &self.app, req).await;
        let status = resp.status();
        let index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = axum::body::to_bytes(resp.into_body(), ANSWER_LIMIT)
            .await
            .map_err(|e| Refused::Failed(500, e.to_string()))?;
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map(|v| Some((v, index)))
                .map_err(|e| Refused::Failed(500, format!("{path}: {e}"))),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::FORBIDDEN => Err(Refused::Denied),
            s => Err(Refused::Failed(
                s.as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            )),
        }
    }

    /// A read that must answer (404 is a failure).
    async fn must(&self, path: &str) -> Result<(Value, u64), Refused> {
        self.get(path)
            .await?
            .ok_or_else(|| Refused::Failed(404, format!("{path}: not found")))
    }
}

/// Percent-encoding for a path segment (`/` kept when `keep_slash`).
pub(crate) fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The snapshot of the catalog the services and nodes pages share: every
/// node with its services, and every check.
async fn catalog(api: &Api) -> Result<view::Catalog, Refused> {
    let (nodes, index) = api.must("/v1/catalog/nodes").await?;
    let (checks, _) = api.must("/v1/health/state/any").await?;
    let mut services = Vec::new();
    for n in nodes.as_array().into_iter().flatten() {
        let name = n["Node"].as_str().unwrap_or_default();
        if let Some((ns, _)) = api
            .get(&format!("/v1/catalog/node/{}", encode(name, false)))
            .await?
        {
            services.push((name.to_string(), ns));
        }
    }
    Ok(view::Catalog {
        nodes,
        services,
        checks,
        index,
    })
}

/// Every page: which one the path names, read through the API, rendered.
async fn page(State(server): State<Server>, req: Request) -> Response {
    let path = req.uri().path().trim_start_matches("/ui/").to_string();
    if let Some(name) = path.strip_prefix("assets/") {
        return asset(name).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response());
    }
    let filter = req
        .uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "filter")
        })
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
        .unwrap_or_default();
    let api = Api {
        app: api_router(server.clone()),
        token: token(&req),
        server,
    };
    let common = json!({
        "node": api.server.config().node,
        "dc": api.server.config().datacenter,
        "acl": api.server.cluster().acl_token.is_some(),
    });
    match read_page(&api, &path, &filter).await {
        Ok((template, status, mut data)) => {
            data["agent"] = common;
            render(template, status, &data)
        }
        // 200, as Consul's UI shell: an HTTP check against the agent's own
        // address (`/` follows to here) stays passing with ACLs on.
        Err(Refused::Denied) => render(
            "message",
            StatusCode::OK,
            &json!({
                "agent": common,
                "title": "Token required",
                "token_prompt": true,
                "text": "This agent has ACLs enabled: enter a token to see this page.",
            }),
        ),
        Err(Refused::Failed(status, body)) => render(
            "message",
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({
                "agent": common,
                "title": "Error",
                "text": format!("The agent answered {status}: {body}"),
            }),
        ),
    }
}

type Page = (&'static str, StatusCode, Value);

async fn read_page(api: &Api, path: &str, filter: &str) -> Result<Page, Refused> {
    let (section, rest) = path.split_once('/').unwrap_or((path, ""));
    let rest = percent_decode(rest);
    let ok = |t, v| Ok((t, StatusCode::OK, v));
    match (section, rest.as_str()) {
        ("" | "services", "") => ok("services", view::services(&catalog(api).await?, filter)),
        ("services", name) => {
            let q = format!("/v1/health/service/{}", encode(name, false));
            let (entries, index) = api.must(&q).await?;
            let page = view::service(name, &entries, index, &q);
            let status = if page["instances"].as_array().is_some_and(|a| a.is_empty()) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            Ok(("service", status, page))
        }
        ("nodes", "") => ok("nodes", view::nodes(&catalog(api).await?, filter)),
        ("nodes", name) => {
            let q = format!("/v1/health/node/{}", encode(name, false));
            let node = api
                .get(&format!("/v1/catalog/node/{}", encode(name, false)))
                .await?;
            let (checks, index) = api.must(&q).await?;
            let node = node.map(|(n, _)| n).unwrap_or(Value::Null);
            let status = if node.is_null() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            Ok(("node", status, view::node(name, &node, &checks, index, &q)))
        }
        ("kv", key) if key.is_empty() || key.ends_with('/') => {
            let q = format!("/v1/kv/{}?keys&separator=/", encode(key, true));
            let (keys, index) = match api.get(&q).await? {
                Some(found) => found,
                None => (json!([]), 0),
            };
            ok("kv_folder", view::kv_folder(key, &keys, index, &q))
        }
        ("kv", key) => {
            let entry = api.get(&format!("/v1/kv/{}", encode(key, true))).await?;
            let status = if entry.is_some() {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            let entry = entry.map(|(e, _)| e[0].clone()).unwrap_or(Value::Null);
            Ok(("kv_key", status, view::kv_key(key, &entry)))
        }
        ("sessions", "") => {
            let q = "/v1/session/list";
            let (list, index) = api.must(q).await?;
            ok("sessions", view::sessions(&list, index, q))
        }
        ("cluster", "") => {
            let (leader, _) = api.must("/v1/status/leader").await?;
            let (raft, _) = api.must("/v1/operator/raft/configuration").await?;
            let (me, _) = api.must("/v1/agent/self").await?;
            let (members, _) = api.must("/v1/agent/members").await?;
            // Members that fail, leave or join change the catalog (their
            // serfHealth check, their node): the page watches it.
            let (_, index) = api.must("/v1/catalog/nodes").await?;
            ok(
                "cluster",
                view::cluster(&leader, &raft, &me, &members, index),
            )
        }
        ("agent", "") => {
            let (me, _) = api.must("/v1/agent/self").await?;
            ok("agent", view::agent(&me))
        }
        _ => Ok((
            "message",
            StatusCode::NOT_FOUND,
            json!({"title": "Not found", "text": format!("No page at /ui/{path}.")}),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn templates_compile_and_assets_are_small() {
        engine().unwrap();
        assert!(embedded_bytes() < 100 * 1024, "{}", embedded_bytes());
    }

    #[test]
    fn encoding_keeps_only_unreserved() {
        assert_eq!(encode("a b/<c>?#%", false), "a%20b%2F%3Cc%3E%3F%23%25");
        assert_eq!(encode("dir/k ey", true), "dir/k%20ey");
    }

    #[test]
    fn cross_origin_writes_are_recognised() {
        let req = |m: Method, origin: Option<&str>| {
            let mut b = Request::builder()
                .method(m)
                .uri("/v1/kv/x")
                .header("host", "127.0.0.1:8500");
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            b.body(Body::empty()).unwrap()
        };
        assert!(
            !cross_origin_write(&req(Method::PUT, None)),
            "a Consul client"
        );
        assert!(!cross_origin_write(&req(
            Method::PUT,
            Some("http://127.0.0.1:8500")
        )));
        assert!(cross_origin_write(&req(
            Method::PUT,
            Some("http://evil.example")
        )));
        assert!(cross_origin_write(&req(Method::DELETE, Some("null"))));
        assert!(!cross_origin_write(&req(
            Method::GET,
            Some("http://evil.example")
        )));
    }

    #[test]
    fn catalog_text_is_escaped() {
        let page = json!({
            "agent": {"node": "<b>n</b>", "dc": "dc1"},
            "title": "x",
            "text": "<script>alert(1)</script>",
        });
        let html = engine().unwrap().render("message", &page).unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("<b>n</b>"));
    }
}
