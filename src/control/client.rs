//! Control-plane CLI client: turns one `pilotfish` client subcommand into one HTTP/1.1
//! request on the control socket and the answer into text for stdout. It needs only the
//! socket path, never the config (ContainerPilot's client had to validate the whole
//! config just to find its socket).
//!
//! Arguments of `putenv` and `putmetric` are `KEY=VALUE`, split on the first `=`;
//! `putenv KEY=` sets an empty value; unsetting is its own command,
//! [`ClientCommand::UnsetEnv`] (e.g. `pilotfish putenv -u KEY`), sent as `null`.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use tokio::net::UnixStream;

use super::{ReloadSummary, StatusSnapshot};

/// One client subcommand.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCommand {
    /// `POST /v3/reload`; prints what changed.
    Reload,
    /// `POST /v3/maintenance/enable|disable`.
    Maintenance { enable: bool },
    /// `POST /v3/environ` with `KEY=VALUE` arguments (`KEY=` sets an empty value).
    PutEnv(Vec<String>),
    /// `POST /v3/environ` with each named variable set to `null`, which unsets it.
    UnsetEnv(Vec<String>),
    /// `POST /v3/metric` with `NAME=VALUE` arguments.
    PutMetric(Vec<String>),
    /// `GET /v3/ping`; prints `ok`.
    Ping,
    /// `GET /v3/status`; a table, or the raw JSON with `json: true`.
    Status { json: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A command-line argument is malformed; nothing was sent.
    #[error("{command} argument {arg:?}: {reason}")]
    BadArgument {
        command: &'static str,
        arg: String,
        reason: String,
    },
    /// Nothing answers on the socket.
    #[error(
        "cannot connect to the control socket {}: {source}; is pilotfish running? \
         use --socket or PILOTFISH_SOCKET to point at its socket",
        socket.display()
    )]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The connection broke during the exchange.
    #[error("talking to pilotfish on {}: {source}", socket.display())]
    Http {
        socket: PathBuf,
        source: hyper::Error,
    },
    /// pilotfish answered with a non-2xx status; `body` is its explanation.
    #[error("pilotfish refused {what} ({status}): {body}")]
    Refused {
        what: &'static str,
        status: StatusCode,
        body: String,
    },
    /// pilotfish answered 2xx with a body this client does not understand.
    #[error("unexpected answer to {what} from pilotfish (is it the same version?): {source}")]
    Decode {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// Run one command against the socket; Ok(text to print on stdout, without a trailing
/// newline).
pub async fn run(socket: &Path, cmd: ClientCommand) -> Result<String, ClientError> {
    match cmd {
        ClientCommand::Reload => {
            let body = call(socket, Method::POST, "/v3/reload", None, "reload").await?;
            let summary: ReloadSummary = decode(&body, "reload")?;
            Ok(format_reload(&summary))
        }
        ClientCommand::Maintenance { enable } => {
            let path = if enable {
                "/v3/maintenance/enable"
            } else {
                "/v3/maintenance/disable"
            };
            call(socket, Method::POST, path, None, "maintenance").await?;
            Ok(format!(
                "maintenance {}",
                if enable { "enabled" } else { "disabled" }
            ))
        }
        ClientCommand::PutEnv(args) => {
            let mut vars = Map::new();
            for arg in &args {
                let (key, value) = split_pair("putenv", arg)?;
                vars.insert(key.to_owned(), Value::String(value.to_owned()));
            }
            send_object(socket, "/v3/environ", vars, "putenv").await?;
            Ok(String::new())
        }
        ClientCommand::UnsetEnv(names) => {
            let mut vars = Map::new();
            for name in names {
                if name.is_empty() || name.contains('=') {
                    return Err(ClientError::BadArgument {
                        command: "putenv -u",
                        arg: name,
                        reason: "expected a variable name, without '='".to_owned(),
                    });
                }
                vars.insert(name, Value::Null);
            }
            send_object(socket, "/v3/environ", vars, "putenv -u").await?;
            Ok(String::new())
        }
        ClientCommand::PutMetric(args) => {
            let mut values = Map::new();
            for arg in &args {
                let (name, value) = split_pair("putmetric", arg)?;
                values.insert(name.to_owned(), metric_json(value));
            }
            send_object(socket, "/v3/metric", values, "putmetric").await?;
            Ok(String::new())
        }
        ClientCommand::Ping => {
            call(socket, Method::GET, "/v3/ping", None, "ping").await?;
            Ok("ok".to_owned())
        }
        ClientCommand::Status { json } => {
            let body = call(socket, Method::GET, "/v3/status", None, "status").await?;
            let snapshot: StatusSnapshot = decode(&body, "status")?;
            if json {
                serde_json::to_string_pretty(&snapshot).map_err(|source| ClientError::Decode {
                    what: "status",
                    source,
                })
            } else {
                Ok(format_status(&snapshot))
            }
        }
    }
}

/// Split `KEY=VALUE` on the first `=`.
fn split_pair<'a>(command: &'static str, arg: &'a str) -> Result<(&'a str, &'a str), ClientError> {
    match arg.split_once('=') {
        Some(("", _)) => Err(ClientError::BadArgument {
            command,
            arg: arg.to_owned(),
            reason: "the name before '=' is empty; write NAME=VALUE".to_owned(),
        }),
        Some(pair) => Ok(pair),
        None => Err(ClientError::BadArgument {
            command,
            arg: arg.to_owned(),
            reason: format!("has no '='; write {arg}=VALUE ({arg}= sets an empty value)"),
        }),
    }
}

/// A JSON number when the text is a finite number, else the text (the server names the
/// metric and the value when it is not numeric).
fn metric_json(value: &str) -> Value {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or_else(|| Value::String(value.to_owned()), Value::Number)
}

async fn send_object(
    socket: &Path,
    path: &'static str,
    object: Map<String, Value>,
    what: &'static str,
) -> Result<Bytes, ClientError> {
    let body = Value::Object(object).to_string().into_bytes();
    call(socket, Method::POST, path, Some(body), what).await
}

fn decode<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &'static str,
) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode { what, source })
}

/// One request on a fresh connection; Ok(body) on 2xx.
async fn call(
    socket: &Path,
    method: Method,
    path: &'static str,
    body: Option<Vec<u8>>,
    what: &'static str,
) -> Result<Bytes, ClientError> {
    let has_body = body.is_some();
    let http = |source| ClientError::Http {
        socket: socket.to_owned(),
        source,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("control connection ended: {e}");
        }
    });
    let mut request = Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
    *request.method_mut() = method;
    *request.uri_mut() = Uri::from_static(path);
    let headers = request.headers_mut();
    headers.insert(header::HOST, HeaderValue::from_static("pilotfish"));
    if has_body {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    driver.abort();
    if status.is_success() {
        Ok(bytes)
    } else {
        Err(ClientError::Refused {
            what,
            status,
            body: String::from_utf8_lossy(&bytes).trim_end().to_owned(),
        })
    }
}

fn format_reload(summary: &ReloadSummary) -> String {
    let mut lines = Vec::new();
    if summary.started.is_empty() && summary.stopped.is_empty() && summary.restarted.is_empty() {
        lines.push("reloaded: no job changed".to_owned());
    } else {
        lines.push("reloaded".to_owned());
    }
    for (label, names) in [
        ("started", &summary.started),
        ("stopped", &summary.stopped),
        ("restarted", &summary.restarted),
        ("unchanged", &summary.unchanged),
    ] {
        if !names.is_empty() {
            lines.push(format!("  {label}: {}", names.join(", ")));
        }
    }
    lines.join("\n")
}

/// Rows as left-aligned columns two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

fn format_status(snapshot: &StatusSnapshot) -> String {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let mut rows: Vec<[String; 7]> = vec![[
        "NAME",
        "STATE",
        "PID",
        "RUNS",
        "RESTARTS",
        "LAST-EXIT",
        "HEALTH",
    ]
    .map(str::to_owned)];
    for job in &snapshot.jobs {
        rows.push([
            job.name.clone(),
            job.state.clone(),
            dash(job.pid.map(|p| p.to_string())),
            job.runs.to_string(),
            job.restarts.to_string(),
            dash(job.last_exit.map(|c| c.to_string())),
            dash(job.health.clone()),
        ]);
    }
    let mut lines = table(&rows);
    lines.push(String::new());
    lines.push(format!(
        "version {}, maintenance {}",
        snapshot.version,
        if snapshot.maintenance { "on" } else { "off" }
    ));
    let ago = |t: Option<u64>| t.map(|t| format!("{}s ago", super::unix_now().saturating_sub(t)));
    if !snapshot.services.is_empty() {
        lines.push(String::new());
        let mut rows =
            vec![["SERVICE", "ID", "STATE", "ADDRESS", "SINCE", "AGENT"].map(str::to_owned)];
        for s in &snapshot.services {
            rows.push([
                s.name.clone(),
                s.id.clone(),
                s.state.clone(),
                dash(s.address.clone()),
                dash(ago(s.critical_since)),
                ago(s.outage_since)
                    .map_or_else(|| "ok".to_owned(), |a| format!("unreachable since {a}")),
            ]);
        }
        lines.extend(table(&rows));
    }
    if !snapshot.watches.is_empty() {
        lines.push(String::new());
        let mut rows =
            vec![["WATCH", "TARGET", "INSTANCES", "CHANGED", "AGENT"].map(str::to_owned)];
        for w in &snapshot.watches {
            rows.push([
                w.name.clone(),
                w.target.clone(),
                dash(w.instances.map(|n| n.to_string())),
                dash(ago(w.last_change)),
                ago(w.outage_since)
                    .map_or_else(|| "ok".to_owned(), |a| format!("unreachable since {a}")),
            ]);
        }
        lines.extend(table(&rows));
    }
    if !snapshot.templates.is_empty() {
        lines.push(String::new());
        let mut rows = vec![[
            "TEMPLATE",
            "DESTINATION",
            "STATE",
            "QUERIES",
            "INSTALLED",
            "AGENT",
        ]
        .map(str::to_owned)];
        for t in &snapshot.templates {
            rows.push([
                t.name.clone(),
                t.destination.clone(),
                t.state.clone(),
                t.queries.to_string(),
                dash(ago(t.last_install)),
                ago(t.stale_since)
                    .map_or_else(|| "ok".to_owned(), |a| format!("unreachable since {a}")),
            ]);
        }
        lines.extend(table(&rows));
        for t in &snapshot.templates {
            if let Some(e) = &t.last_error {
                lines.push(format!("template {}: {e}", t.name));
            }
        }
    }
    lines.join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::control::JobStatus;

    #[test]
    fn pairs_split_on_first_equals() {
        assert_eq!(split_pair("putenv", "A=b=c").unwrap(), ("A", "b=c"));
        assert_eq!(split_pair("putenv", "A=").unwrap(), ("A", ""));
        assert!(split_pair("putenv", "=x").is_err());
        let err = split_pair("putenv", "FOO").unwrap_err().to_string();
        assert!(
            err.contains("\"FOO\"") && err.contains("FOO=VALUE"),
            "{err}"
        );
    }

    #[test]
    fn metric_values_are_numbers_when_they_parse() {
        assert_eq!(metric_json("1.5"), serde_json::json!(1.5));
        assert_eq!(metric_json("abc"), serde_json::json!("abc"));
        assert_eq!(metric_json("inf"), serde_json::json!("inf"));
    }

    #[test]
    fn status_table_aligns_and_dashes_missing_values() {
        let snapshot = StatusSnapshot {
            version: "0.1.0".into(),
            maintenance: false,
            jobs: vec![JobStatus {
                name: "web".into(),
                state: "running".into(),
                pid: Some(42),
                runs: 1,
                restarts: 0,
                last_exit: None,
                health: Some("healthy".into()),
                port: Some(80),
            }],
            services: vec![],
            watches: vec![],
            templates: vec![],
        };
        let table = format_status(&snapshot);
        let mut lines = table.lines();
        assert_eq!(
            lines.next().unwrap(),
            "NAME  STATE    PID  RUNS  RESTARTS  LAST-EXIT  HEALTH"
        );
        assert_eq!(
            lines.next().unwrap(),
            "web   running  42   1     0         -          healthy"
        );
    }
}
