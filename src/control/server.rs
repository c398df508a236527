//! Control-plane HTTP server on a Unix socket: ContainerPilot's `/v3` paths and bodies,
//! so existing scripts keep working. It owns the socket file (stale-socket cleanup, mode
//! 0600, removal at shutdown) and the translation of HTTP requests into
//! `ControlRequest`s; every decision is the supervisor's.
//!
//! Differences from ContainerPilot, on purpose: `null` in `/v3/environ` unsets a
//! variable, bad variable names and values are refused with 422, reload answers with
//! what changed (or every validation error), unknown or bad metric values are refused
//! with 422 instead of being ignored, and the socket is created mode 0600.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::Value;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{ControlRequest, MetricValue};
use crate::telemetry::CONTROL_REQUESTS;

/// Largest request body accepted; larger bodies get 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// How long in-flight requests get to finish once shutdown is asked for (ContainerPilot
/// used 600 ms; a reload reply can take a little longer).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The routes, used as the `path` label so that arbitrary request paths cannot blow up
/// the metric's cardinality.
const ROUTES: [&str; 7] = [
    "/v3/environ",
    "/v3/reload",
    "/v3/maintenance/enable",
    "/v3/maintenance/disable",
    "/v3/metric",
    "/v3/ping",
    "/v3/status",
];

/// Bind the control socket at `path`.
///
/// If the path exists and something answers on it, fail ("another pilotfish is serving
/// {path}"); if it is a socket that refuses connections, unlink it (any other probe
/// error is returned); if it is not a socket at all,
/// refuse to touch it. Creates the parent directory if missing and sets mode 0600 right
/// after binding (between the two the umask applies). Must be called inside a tokio
/// runtime.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "another pilotfish is serving {}; stop it or choose another \
                             control socket path",
                            path.display()
                        ),
                    ))
                }
                // Only "refused" proves nobody listens; e.g. EACCES on another user's
                // live socket must not get it deleted.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => remove_stale(path)?,
                Err(e) => return Err(with_path(e, "probing existing control socket", path)),
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "control socket path {} exists and is not a socket; remove it or choose \
                     another control socket path",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(e, "inspecting control socket", path)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| with_path(e, "creating the directory of control socket", path))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| with_path(e, "binding control socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| with_path(e, "setting mode 0600 on control socket", path))?;
    Ok(listener)
}

fn remove_stale(path: &Path) -> io::Result<()> {
    tracing::info!("removing stale control socket {}", path.display());
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(with_path(e, "removing stale control socket", path))
        }
        _ => Ok(()),
    }
}

fn with_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// Serve the control API on `listener` until `shutdown` is cancelled, then remove the
/// socket file at `path`. Logs one `listening for control on <path>` line at info.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    requests: mpsc::Sender<ControlRequest>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    tracing::info!("listening for control on {}", path.display());
    let server = axum::serve(listener, router(requests))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let result = tokio::select! {
        result = server.into_future() => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                "control requests still running {}s after shutdown; no longer waiting",
                SHUTDOWN_GRACE.as_secs()
            );
            Ok(())
        }
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!("removing control socket {}: {e}", path.display());
        }
        _ => {}
    }
    result
}

fn router(requests: mpsc::Sender<ControlRequest>) -> Router {
    Router::new()
        .route("/v3/environ", post(environ).fallback(only_post))
        .route("/v3/reload", post(reload).fallback(only_post))
        .route(
            "/v3/maintenance/enable",
            post(|s: Requests| maintenance(s, true)).fallback(only_post),
        )
        .route(
            "/v3/maintenance/disable",
            post(|s: Requests| maintenance(s, false)).fallback(only_post),
        )
        .route("/v3/metric", post(metric).fallback(only_post))
        .route("/v3/ping", any(ping))
        .route("/v3/status", get(status).fallback(only_get))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(count_request))
        .with_state(requests)
}

async fn count_request(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let route = ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("unknown");
    let response = next.run(request).await;
    metrics::counter!(
        CONTROL_REQUESTS,
        "path" => route,
        "code" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

type Requests = State<mpsc::Sender<ControlRequest>>;

/// Why a request was not carried out; becomes the response.
#[derive(Debug)]
enum Refusal {
    /// The supervisor's channel is closed or it dropped the reply.
    ShuttingDown,
    /// 422, one problem per line.
    Unprocessable(Vec<String>),
    /// The body could not be read (413 when too large).
    Body(StatusCode, String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "pilotfish is shutting down\n",
            )
                .into_response(),
            Refusal::Unprocessable(problems) => {
                let mut body = String::new();
                for p in problems {
                    body.push_str(&p);
                    body.push('\n');
                }
                (StatusCode::UNPROCESSABLE_ENTITY, body).into_response()
            }
            Refusal::Body(code, text) => (code, text).into_response(),
        }
    }
}

async fn environ(
    State(requests): Requests,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let object = json_object(body, "variable name to a string or null")?;
    let mut problems = Vec::new();
    let mut vars = BTreeMap::new();
    for (name, value) in object {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            problems.push(format!(
                "environment variable name {name:?} is invalid: it must be non-empty and \
                 contain no '=' or NUL"
            ));
            continue;
        }
        match value {
            Value::Null => {
                vars.insert(name, None);
            }
            Value::String(s) if s.contains('\0') => problems.push(format!(
                "value for {name:?} contains a NUL byte, which environment variables cannot hold"
            )),
            Value::String(s) => {
                vars.insert(name, Some(s));
            }
            other => problems.push(format!(
                "value for {name:?} must be a string (or null to unset), got {}: {other}",
                json_kind(&other)
            )),
        }
    }
    if !problems.is_empty() {
        return Err(Refusal::Unprocessable(problems));
    }
    ask(&requests, |reply| ControlRequest::PutEnv { vars, reply }).await?;
    Ok(ok())
}

async fn reload(State(requests): Requests) -> Result<Response, Refusal> {
    let summary = ask(&requests, |reply| ControlRequest::Reload { reply })
        .await?
        .map_err(Refusal::Unprocessable)?;
    Ok(Json(summary).into_response())
}

async fn maintenance(State(requests): Requests, enable: bool) -> Result<Response, Refusal> {
    ask(&requests, |reply| ControlRequest::Maintenance {
        enable,
        reply,
    })
    .await?;
    Ok(ok())
}

async fn metric(
    State(requests): Requests,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let object = json_object(body, "metric name to a number or numeric string")?;
    let mut problems = Vec::new();
    let mut values = Vec::with_capacity(object.len());
    for (name, value) in object {
        match value {
            Value::Number(n) => match n.as_f64() {
                Some(v) => values.push((name, MetricValue::Number(v))),
                None => problems.push(format!("metric {name:?}: value {n} is not representable")),
            },
            Value::String(s) => values.push((name, MetricValue::Text(s))),
            other => problems.push(format!(
                "metric {name:?}: value must be a number or numeric string, got {}: {other}",
                json_kind(&other)
            )),
        }
    }
    if !problems.is_empty() {
        return Err(Refusal::Unprocessable(problems));
    }
    ask(&requests, |reply| ControlRequest::PutMetric {
        values,
        reply,
    })
    .await?
    .map_err(Refusal::Unprocessable)?;
    Ok(ok())
}

async fn ping() -> Response {
    ok()
}

async fn status(State(requests): Requests) -> Result<Response, Refusal> {
    let snapshot = ask(&requests, |reply| ControlRequest::Status { reply }).await?;
    Ok(Json(snapshot).into_response())
}

async fn only_post() -> Response {
    method_not_allowed("POST")
}

async fn only_get() -> Response {
    method_not_allowed("GET, HEAD")
}

fn method_not_allowed(allow: &'static str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, allow)],
        format!("method not allowed; use {allow}\n"),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint {}; known: {}\n",
            request.uri().path(),
            ROUTES.join(", ")
        ),
    )
        .into_response()
}

/// Send one request to the supervisor and wait for its reply; a closed channel or a
/// dropped reply means the supervisor is going away.
async fn ask<T>(
    requests: &mpsc::Sender<ControlRequest>,
    make: impl FnOnce(oneshot::Sender<T>) -> ControlRequest,
) -> Result<T, Refusal> {
    let (reply, answer) = oneshot::channel();
    requests
        .send(make(reply))
        .await
        .map_err(|_| Refusal::ShuttingDown)?;
    answer.await.map_err(|_| Refusal::ShuttingDown)
}

fn json_object(
    body: Result<Bytes, BytesRejection>,
    expected: &str,
) -> Result<serde_json::Map<String, Value>, Refusal> {
    let body = body.map_err(|rejection| {
        let code = rejection.status();
        if code == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::Body(
                code,
                format!("request body is larger than {BODY_LIMIT} bytes; send less\n"),
            )
        } else {
            Refusal::Body(code, format!("reading request body: {rejection}\n"))
        }
    })?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(Refusal::Unprocessable(vec![format!(
            "request body must be a JSON object of {expected}, got {}",
            json_kind(&other)
        )])),
        Err(e) => Err(Refusal::Unprocessable(vec![format!(
            "request body is not valid JSON ({e}); send a JSON object of {expected}"
        )])),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// ContainerPilot's success body.
fn ok() -> Response {
    (StatusCode::OK, "\n").into_response()
}
