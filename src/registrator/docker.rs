//! The Docker Engine API over its Unix socket, as much of it as the
//! registrator reads: version negotiation (`GET /version`), the event stream
//! (`GET /vX/events`), the running containers (`GET /vX/containers/json`)
//! and one container's inspect JSON (`GET /vX/containers/{id}/json`).
//!
//! The wire types here are the Engine API's, not Consul's: the one other
//! wire format pilotfish reads, so they derive serde here (like
//! `discovery::api` for Consul). Only the fields the registrator uses are
//! declared; everything else is ignored, and `null` reads as empty. Events
//! are decoded from `Type`, `Action`, `Actor.ID`, `Actor.Attributes`,
//! `time`/`timeNano` only: the old `status`/`id`/`from` fields are gone
//! since API 1.52 (Engine 29).
//!
//! Requests go over hyper's HTTP/1 client on a fresh `UnixStream` each, as
//! `control::client` does; the event stream keeps its connection for as
//! long as it lasts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

/// The newest Engine API version this client knows; a newer daemon is
/// spoken to in this one.
pub const NEWEST_API: ApiVersion = ApiVersion(1, 47);
/// The oldest Engine API version this client accepts (Engine 1.13's; event
/// filters and `health_status` events are older than that).
pub const OLDEST_API: ApiVersion = ApiVersion(1, 25);
/// A request that is not the event stream is answered within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The default socket, and where `$DOCKER_HOST=unix://PATH` points.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// An Engine API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (major, minor) = s.trim().split_once('.')?;
        Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The version to speak to a daemon that speaks `max` down to `min`: the
/// lower of its newest and ours, if the daemon still accepts it and we know it.
pub fn negotiate(max: ApiVersion, min: Option<ApiVersion>) -> Result<ApiVersion, DockerError> {
    let chosen = max.min(NEWEST_API);
    let min = min.unwrap_or(OLDEST_API);
    if chosen < OLDEST_API || chosen < min {
        return Err(DockerError::Version {
            daemon: format!("{min}..{max}"),
            ours: format!("{OLDEST_API}..{NEWEST_API}"),
        });
    }
    Ok(chosen)
}

/// The socket path of `$DOCKER_HOST` (`unix:///path`), or an error naming a
/// scheme the registrator cannot use.
pub fn socket_from_docker_host(value: &str) -> Result<PathBuf, String> {
    match value.split_once("://") {
        Some(("unix", path)) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!(
            "DOCKER_HOST={value}: only unix:///path/to/docker.sock is supported; \
             use --docker-socket or a unix:// DOCKER_HOST"
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// Nothing answers on the socket (the daemon is down or restarting).
    #[error(
        "cannot connect to the Docker daemon at {}: {source}; is dockerd running? \
         use --docker-socket or DOCKER_HOST=unix://PATH to point at its socket",
        socket.display()
    )]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The connection broke during the exchange.
    #[error("talking to the Docker daemon on {}: {source}", socket.display())]
    Http {
        socket: PathBuf,
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("the Docker daemon on {} did not answer {path} within {REQUEST_TIMEOUT:?}", socket.display())]
    Timeout { socket: PathBuf, path: String },
    /// A non-2xx answer; `body` is the daemon's `message`.
    #[error("the Docker daemon refused {path} ({status}): {body}")]
    Refused {
        path: String,
        status: StatusCode,
        body: String,
    },
    /// A 2xx answer this client cannot read.
    #[error("the Docker daemon's answer to {path} cannot be read: {detail}")]
    Decode { path: String, detail: String },
    /// The daemon and this client have no API version in common.
    #[error(
        "the Docker daemon speaks API versions {daemon} and pilotfish {ours}: none in common; \
         use a Docker Engine that accepts {ours}"
    )]
    Version { daemon: String, ours: String },
}

impl DockerError {
    /// A 404: the container is gone.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Refused { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

// ----- wire types -----

/// `GET /version`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Version {
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "ApiVersion")]
    pub api_version: String,
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: Option<String>,
}

/// One object of `GET /events`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Seconds since the epoch.
    pub time: i64,
    /// Nanoseconds since the epoch.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: Option<BTreeMap<String, String>>,
}

impl Event {
    /// `since=` for resuming after this event: `seconds.nanoseconds`.
    pub fn since(&self) -> String {
        if self.time_nano > 0 {
            format!(
                "{}.{:09}",
                self.time_nano / 1_000_000_000,
                self.time_nano % 1_000_000_000
            )
        } else {
            self.time.to_string()
        }
    }

    /// The action without its detail (`health_status: healthy` →
    /// `health_status`).
    pub fn verb(&self) -> &str {
        self.action.split(':').next().unwrap_or("").trim()
    }

    /// A `die` event's `exitCode` attribute.
    pub fn exit_code(&self) -> Option<i64> {
        self.actor
            .attributes
            .as_ref()?
            .get("exitCode")?
            .parse()
            .ok()
    }
}

/// One row of `GET /containers/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: String,
}

/// `GET /containers/{id}/json`: what the registrator reads of it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Container {
    #[serde(rename = "Id")]
    pub id: String,
    /// `/name`, with Docker's leading slash.
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Config")]
    pub config: ContainerConfig,
    #[serde(rename = "State")]
    pub state: ContainerState,
    #[serde(rename = "HostConfig")]
    pub host_config: HostConfig,
    #[serde(rename = "NetworkSettings")]
    pub network_settings: NetworkSettings,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    #[serde(rename = "Hostname")]
    pub hostname: String,
    #[serde(rename = "Image")]
    pub image: String,
    #[serde(rename = "Env")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Labels")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `"80/tcp": {}`.
    #[serde(rename = "ExposedPorts")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ContainerState {
    #[serde(rename = "Running")]
    pub running: bool,
    #[serde(rename = "ExitCode")]
    pub exit_code: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    #[serde(rename = "NetworkMode")]
    pub network_mode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NetworkSettings {
    /// The default bridge's address; empty on user-defined networks.
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// `"80/tcp": [bindings]`, `null` for an exposed port not published.
    #[serde(rename = "Ports")]
    pub ports: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    #[serde(rename = "Networks")]
    pub networks: Option<BTreeMap<String, Network>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PortBinding {
    #[serde(rename = "HostIp")]
    pub host_ip: String,
    #[serde(rename = "HostPort")]
    pub host_port: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Network {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
}

// ----- the client -----

/// A Docker daemon on a Unix socket, spoken to in one API version.
#[derive(Debug, Clone)]
pub struct Docker {
    socket: PathBuf,
    /// `/v1.41`, or empty before negotiation.
    prefix: String,
}

impl Docker {
    /// Ask the daemon its versions and pick ours (see [`negotiate`]).
    pub async fn connect(socket: &Path) -> Result<(Docker, Version, ApiVersion), DockerError> {
        let unversioned = Docker {
            socket: socket.to_owned(),
            prefix: String::new(),
        };
        let version: Version = unversioned.get_json("/version").await?;
        let max = ApiVersion::parse(&version.api_version).ok_or_else(|| DockerError::Decode {
            path: "/version".into(),
            detail: format!("ApiVersion {:?} is not MAJOR.MINOR", version.api_version),
        })?;
        let min = version
            .min_api_version
            .as_deref()
            .and_then(ApiVersion::parse);
        let chosen = negotiate(max, min)?;
        Ok((
            Docker {
                socket: socket.to_owned(),
                prefix: format!("/v{chosen}"),
            },
            version,
            chosen,
        ))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The IDs of the running containers.
    pub async fn running_containers(&self) -> Result<Vec<String>, DockerError> {
        let rows: Vec<ContainerSummary> = self.get_json("/containers/json").await?;
        Ok(rows.into_iter().map(|c| c.id).collect())
    }

    /// One container's inspect JSON (a 404 when it is gone: [`DockerError::is_not_found`]).
    pub async fn inspect(&self, id: &str) -> Result<Container, DockerError> {
        self.get_json(&format!("/containers/{}/json", encode(id)))
            .await
    }

    /// Subscribe to container `start`, `die`, `destroy` and `health_status`
    /// events, from `since` (`seconds[.nanoseconds]`) when given.
    pub async fn events(&self, since: Option<&str>) -> Result<EventStream, DockerError> {
        let filters = r#"{"type":["container"],"event":["start","die","destroy","health_status"]}"#;
        let mut path = format!("/events?filters={}", encode(filters));
        if let Some(s) = since {
            path.push_str("&since=");
            path.push_str(&encode(s));
        }
        let response = self.send(&path).await?;
        let status = response.status();
        if !status.is_success() {
            let body = self.collect(response).await?;
            return Err(refused(&path, status, &body));
        }
        Ok(EventStream {
            body: response.into_body(),
            buffer: Vec::new(),
            path,
            socket: self.socket.clone(),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, DockerError> {
        let full = format!("{}{path}", self.prefix);
        let exchange = async {
            let response = self.send(path).await?;
            let status = response.status();
            let body = self.collect(response).await?;
            if !status.is_success() {
                return Err(refused(&full, status, &body));
            }
            serde_json::from_slice(&body).map_err(|e| DockerError::Decode {
                path: full.clone(),
                detail: e.to_string(),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| DockerError::Timeout {
                socket: self.socket.clone(),
                path: full.clone(),
            })?
    }

    async fn collect(&self, response: Response<Incoming>) -> Result<Bytes, DockerError> {
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|source| DockerError::Http {
                socket: self.socket.clone(),
                source,
            })?
            .to_bytes())
    }

    /// One GET on a fresh connection; the connection lives as long as its body.
    async fn send(&self, path: &str) -> Result<Response<Incoming>, DockerError> {
        let http = |source| DockerError::Http {
            socket: self.socket.clone(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // The driver ends when the response body is read or dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("docker connection ended: {e}");
            }
        });
        let uri: Uri =
            format!("{}{path}", self.prefix)
                .parse()
                .map_err(|e| DockerError::Decode {
                    path: path.to_owned(),
                    detail: format!("not a request path: {e}"),
                })?;
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = uri;
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("docker"));
        request.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("pilotfish/", env!("CARGO_PKG_VERSION"))),
        );
        sender.send_request(request).await.map_err(http)
    }
}

fn refused(path: &str, status: StatusCode, body: &[u8]) -> DockerError {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    let body = serde_json::from_slice::<Message>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned());
    DockerError::Refused {
        path: path.to_owned(),
        status,
        body,
    }
}

/// Percent-encode a query value or path segment (everything but unreserved).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The open event stream: JSON objects one after another.
pub struct EventStream {
    body: Incoming,
    buffer: Vec<u8>,
    path: String,
    socket: PathBuf,
}

impl EventStream {
    /// The next event; `Ok(None)` when the daemon ended the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, DockerError> {
        loop {
            if let Some(event) = self.take_event()? {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(source)) => {
                    return Err(DockerError::Http {
                        socket: self.socket.clone(),
                        source,
                    })
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// A complete event from the front of the buffer, if one is there.
    fn take_event(&mut self) -> Result<Option<Event>, DockerError> {
        split_event(&mut self.buffer).map_err(|detail| DockerError::Decode {
            path: self.path.clone(),
            detail,
        })
    }
}

/// Take one complete JSON object off the front of `buffer` (whitespace
/// between objects is skipped); None while it is incomplete.
pub fn split_event(buffer: &mut Vec<u8>) -> Result<Option<Event>, String> {
    let mut stream = serde_json::Deserializer::from_slice(buffer).into_iter::<Event>();
    match stream.next() {
        None => {
            buffer.clear();
            Ok(None)
        }
        Some(Ok(event)) => {
            let used = stream.byte_offset();
            buffer.drain(..used);
            Ok(Some(event))
        }
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => {
            let text = String::from_utf8_lossy(buffer)
                .chars()
                .take(200)
                .collect::<String>();
            buffer.clear();
            Err(format!("{e} in {text:?}"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn negotiation_speaks_the_lower_version() {
        // Engine 20.10: 1.41, down to 1.12.
        assert_eq!(
            negotiate(ApiVersion(1, 41), Some(ApiVersion(1, 12))).unwrap(),
            ApiVersion(1, 41)
        );
        // Engine 29: 1.52, down to 1.44: we speak our newest.
        assert_eq!(
            negotiate(ApiVersion(1, 52), Some(ApiVersion(1, 44))).unwrap(),
            NEWEST_API
        );
        // A daemon that refuses everything we know.
        let e = negotiate(ApiVersion(1, 60), Some(ApiVersion(1, 50))).unwrap_err();
        assert!(e.to_string().contains("1.50..1.60"), "{e}");
        // Too old for us.
        assert!(negotiate(ApiVersion(1, 24), None).is_err());
    }

    #[test]
    fn version_answer_of_engine_20_10() {
        let v: Version = serde_json::from_str(include_str!(
            "../../tests/fixtures/docker/version-20.10.json"
        ))
        .unwrap();
        assert_eq!(v.api_version, "1.41");
        assert_eq!(v.min_api_version.as_deref(), Some("1.12"));
    }

    #[test]
    fn events_split_from_a_stream_in_pieces() {
        let text = include_str!("../../tests/fixtures/docker/events.jsonl");
        let mut buffer = Vec::new();
        let mut events = Vec::new();
        // Fed a few bytes at a time, as frames may arrive.
        for chunk in text.as_bytes().chunks(7) {
            buffer.extend_from_slice(chunk);
            while let Some(e) = split_event(&mut buffer).unwrap() {
                events.push(e);
            }
        }
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, "container");
        assert_eq!(events[0].verb(), "start");
        assert_eq!(events[0].actor.id.len(), 64);
        assert_eq!(events[1].verb(), "die");
        assert_eq!(events[1].exit_code(), Some(137));
        assert_eq!(events[1].since(), "1796620558.232830160");
    }

    #[test]
    fn events_without_the_removed_fields_decode() {
        // Engine 29 (API 1.52) no longer sends status/id/from.
        let mut buffer = br#"{"Type":"container","Action":"health_status: healthy","Actor":{"ID":"abc","Attributes":{"name":"x"}},"scope":"local","time":5,"timeNano":5000000001}"#.to_vec();
        let e = split_event(&mut buffer).unwrap().unwrap();
        assert_eq!(e.verb(), "health_status");
        assert_eq!(e.actor.id, "abc");
        assert_eq!(e.since(), "5.000000001");
        assert!(buffer.is_empty());
        let mut bad = b"{\"Type\": 5}\n".to_vec();
        assert!(split_event(&mut bad).is_err());
    }

    #[test]
    fn docker_host_must_be_a_unix_socket() {
        assert_eq!(
            socket_from_docker_host("unix:///run/docker.sock").unwrap(),
            PathBuf::from("/run/docker.sock")
        );
        let e = socket_from_docker_host("tcp://1.2.3.4:2375").unwrap_err();
        assert!(e.contains("unix://"), "{e}");
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(encode(r#"{"a":["b"]}"#), "%7B%22a%22%3A%5B%22b%22%5D%7D");
        assert_eq!(encode("12.5"), "12.5");
    }
}
