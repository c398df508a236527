//! The one Consul HTTP client every consumer uses: the CLI, the supervisor's
//! service registrations and watches, and (later) the template watcher and the
//! registrator. It speaks only Consul's HTTP API with the wire types of
//! `discovery::api`, so it works the same against the embedded server and a
//! HashiCorp Consul agent.
//!
//! - `Client` — typed calls (agent, catalog, health, KV, status, snapshot),
//!   the token in `X-Consul-Token`, TLS with verification on unless turned off.
//! - `retry` — what a long-running caller needs around it: the blocking-query
//!   index rules, backoff with jitter, and an outage that is logged once.

mod checks;
mod event;
pub mod retry;

pub use event::Fire;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::api::agent::{AgentCheck, CheckUpdate, Member, ServiceDefinition};
use super::api::catalog::{AgentService, Node, NodeServices};
use super::api::health::ServiceEntry;
use super::api::kv::KvPair;

/// A request that does not block returns within this, or the agent counts as
/// unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the agent is and how to talk to it (`[consul]` in the config,
/// `--http-addr`/`$CONSUL_HTTP_ADDR` for the CLI).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `host:port`, `http://host:port` or `https://host:port`.
    pub address: String,
    pub token: Option<String>,
    pub tls: TlsOptions,
}

#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when the address is not it.
    pub server_name: Option<String>,
    /// Verify the server's certificate (on unless explicitly turned off).
    pub verify: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            verify: true,
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No answer: connection refused, reset, timed out.
    #[error("cannot reach the Consul agent at {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    /// The agent answered with a status other than 2xx; `body` is its text.
    #[error("Unexpected response code: {code} ({body})")]
    Status { code: u16, body: String },
    /// A 2xx answer that is not what Consul sends.
    #[error("the agent's answer to {path} cannot be read: {detail}")]
    Decode { path: String, detail: String },
    /// The options cannot make a client (a missing CA file, a bad address).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The agent is down or has no leader: retry later, it says nothing about
    /// the data.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Status { code, .. } => *code >= 500,
            _ => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Parameters of a read; `index` > 0 makes it a blocking query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub index: u64,
    pub wait: Option<Duration>,
    pub dc: Option<String>,
    pub stale: bool,
}

impl Query {
    pub fn blocking(index: u64, wait: Duration) -> Query {
        Query {
            index,
            wait: Some(wait),
            ..Query::default()
        }
    }
}

/// What the answer's headers say about it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// `X-Consul-Index`.
    pub index: u64,
    /// `X-Consul-KnownLeader`.
    pub known_leader: bool,
    /// `X-Consul-LastContact`, in milliseconds.
    pub last_contact: u64,
}

/// A Consul agent's HTTP API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// The raw answer to one request.
struct Answer {
    status: StatusCode,
    meta: Meta,
    body: Vec<u8>,
}

impl Answer {
    /// The answer if it is a 2xx, else the error carrying the agent's text.
    fn success(self) -> Result<Answer, Error> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.error())
        }
    }

    /// A non-2xx answer as an error carrying the agent's text.
    fn error(&self) -> Error {
        Error::Status {
            code: self.status.as_u16(),
            body: String::from_utf8_lossy(&self.body).trim().to_string(),
        }
    }
}

impl Client {
    pub fn new(opts: &Options) -> Result<Client, Error> {
        let addr = opts.address.trim().trim_end_matches('/');
        let (scheme, hostport) = match addr.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (s, rest),
            Some((s, _)) => {
                return Err(Error::Config(format!(
                    "consul address {addr}: scheme {s} is not http or https"
                )))
            }
            None => ("http", addr),
        };
        if hostport.is_empty() {
            return Err(Error::Config(
                "consul address is empty (use host:port, e.g. 127.0.0.1:8500)".into(),
            ));
        }
        let tls_wanted = scheme == "https";
        // reqwest is built without a default crypto provider and wants one
        // even for plain HTTP; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("pilotfish/", env!("CARGO_PKG_VERSION")));
        let mut base = format!("{scheme}://{hostport}");
        if !tls_wanted {
            // Plain HTTP: no trust roots at all. reqwest would otherwise load
            // the system's, and fail where there are none (a FROM scratch
            // image); a redirect to https then fails verification, as it should.
            builder = builder.tls_certs_only(Vec::<reqwest::Certificate>::new());
        }
        if tls_wanted {
            let t = &opts.tls;
            if let Some(ca) = &t.ca_file {
                let pem = std::fs::read(ca).map_err(|e| {
                    Error::Config(format!("consul.tls.ca_file {}: {e}", ca.display()))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    Error::Config(format!("consul.tls.ca_file {}: {e}", ca.display()))
                })?;
                if certs.is_empty() {
                    return Err(Error::Config(format!(
                        "consul.tls.ca_file {}: no PEM certificate in the file",
                        ca.display()
                    )));
                }
                builder = builder.tls_certs_only(certs);
            }
            match (&t.cert_file, &t.key_file) {
                (Some(cert), Some(key)) => {
                    let mut pem = std::fs::read(cert).map_err(|e| {
                        Error::Config(format!("consul.tls.cert_file {}: {e}", cert.display()))
                    })?;
                    pem.extend(std::fs::read(key).map_err(|e| {
                        Error::Config(format!("consul.tls.key_file {}: {e}", key.display()))
                    })?);
                    let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                        Error::Config(format!(
                            "consul.tls.cert_file/key_file {}: {e}",
                            cert.display()
                        ))
                    })?;
                    builder = builder.identity(id);
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Config(
                        "consul.tls: cert_file and key_file go together; set both or neither"
                            .into(),
                    ))
                }
            }
            if !t.verify {
                builder = builder.danger_accept_invalid_certs(true);
            }
            if let Some(name) = &t.server_name {
                // Connect to the configured address, but ask for and check
                // the certificate of `name`.
                let target: SocketAddr = hostport
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        Error::Config(format!("consul address {hostport} does not resolve"))
                    })?;
                builder = builder.resolve(name, target);
                base = format!("https://{name}:{}", target.port());
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("consul client: {}", chain(&e))))?;
        Ok(Client {
            http,
            base,
            token: opts.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// The base URL, for messages.
    pub fn address(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Answer, Error> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if !params.is_empty() {
            req = req.query(params);
        }
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            addr: self.base.clone(),
            detail: chain(&e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let meta = Meta {
            index: header("x-consul-index")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            known_leader: header("x-consul-knownleader").as_deref() == Some("true"),
            last_contact: header("x-consul-lastcontact")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        };
        let body = resp.bytes().await.map_err(unreachable)?.to_vec();
        Ok(Answer { status, meta, body })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<T, Error> {
        let a = self
            .call(Method::GET, path, params, None, REQUEST_TIMEOUT)
            .await?
            .success()?;
        decode(path, &a.body)
    }

    /// A read that may block: `?index=&wait=`, and the answer's meta.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        mut params: Vec<(&str, String)>,
        q: &Query,
    ) -> Result<(T, Meta), Error> {
        let timeout = query_params(q, &mut params);
        let a = self
            .call(Method::GET, path, &params, None, timeout)
            .await?
            .success()?;
        Ok((decode(path, &a.body)?, a.meta))
    }

    /// A list read: Consul's `null` for "none" is an empty list.
    async fn read_list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        params: Vec<(&str, String)>,
        q: &Query,
    ) -> Result<(Vec<T>, Meta), Error> {
        let (list, meta): (Option<Vec<T>>, Meta) = self.read(path, params, q).await?;
        Ok((list.unwrap_or_default(), meta))
    }

    async fn put(
        &self,
        path: &str,
        params: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, Error> {
        Ok(self
            .call(Method::PUT, path, params, body, REQUEST_TIMEOUT)
            .await?
            .success()?
            .body)
    }

    /// A PUT without a body whose answer carries nothing.
    async fn put_empty(&self, path: &str, params: &[(&str, String)]) -> Result<(), Error> {
        self.put(path, params, None).await.map(|_| ())
    }

    async fn put_json<B: serde::Serialize>(&self, path: &str, body: &B) -> Result<(), Error> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| Error::Config(format!("encoding the body of {path}: {e}")))?;
        self.put(path, &[], Some(bytes)).await.map(|_| ())
    }

    // ----- agent -----

    /// `PUT /v1/agent/service/register`.
    pub async fn register_service(&self, def: &ServiceDefinition) -> Result<(), Error> {
        self.put_json("/v1/agent/service/register", def).await
    }

    /// `PUT /v1/agent/service/deregister/<id>`.
    pub async fn deregister_service(&self, id: &str) -> Result<(), Error> {
        self.put_empty(
            &format!("/v1/agent/service/deregister/{}", segment(id)),
            &[],
        )
        .await
    }

    /// `PUT /v1/agent/check/update/<id>`: a TTL check's status and output.
    pub async fn update_check(
        &self,
        check_id: &str,
        status: &str,
        output: &str,
    ) -> Result<(), Error> {
        let body = CheckUpdate {
            status: Some(status.to_string()),
            output: Some(output.to_string()),
        };
        self.put_json(
            &format!("/v1/agent/check/update/{}", segment(check_id)),
            &body,
        )
        .await
    }

    /// `PUT /v1/agent/service/maintenance/<id>?enable=&reason=`.
    pub async fn service_maintenance(
        &self,
        id: &str,
        enable: bool,
        reason: Option<&str>,
    ) -> Result<(), Error> {
        let mut params = vec![("enable", enable.to_string())];
        if let Some(r) = reason {
            params.push(("reason", r.to_string()));
        }
        self.put_empty(
            &format!("/v1/agent/service/maintenance/{}", segment(id)),
            &params,
        )
        .await
    }

    /// `GET /v1/agent/services`: this agent's services by ID.
    pub async fn agent_services(&self) -> Result<BTreeMap<String, AgentService>, Error> {
        self.get("/v1/agent/services", &[]).await
    }

    /// `GET /v1/agent/checks`: this agent's checks by ID.
    pub async fn agent_checks(&self) -> Result<BTreeMap<String, AgentCheck>, Error> {
        self.get("/v1/agent/checks", &[]).await
    }

    /// `GET /v1/agent/self`: an object of objects (`Config`, `Member`,
    /// `Stats`, ...), kept as JSON because its contents vary by version.
    pub async fn agent_self(&self) -> Result<BTreeMap<String, serde_json::Value>, Error> {
        self.get("/v1/agent/self", &[]).await
    }

    /// `GET /v1/agent/members[?wan=1]`.
    pub async fn members(&self, wan: bool) -> Result<Vec<Member>, Error> {
        self.member_list(&flag("wan", "1", wan)).await
    }

    /// `GET /v1/agent/members?segment=_all`: the LAN members of every
    /// network segment, as `consul members` asks (only Consul Enterprise has
    /// more than one segment; elsewhere these are all the LAN members).
    pub async fn members_all_segments(&self) -> Result<Vec<Member>, Error> {
        self.member_list(&[("segment", "_all".to_string())]).await
    }

    async fn member_list(&self, params: &[(&str, String)]) -> Result<Vec<Member>, Error> {
        // Go writes an empty slice as `null`.
        let list: Option<Vec<Member>> = self.get("/v1/agent/members", params).await?;
        Ok(list.unwrap_or_default())
    }

    /// `PUT /v1/agent/join/<addr>[?wan=1]`.
    pub async fn join(&self, addr: &str, wan: bool) -> Result<(), Error> {
        let params = flag("wan", "1", wan);
        self.put_empty(&format!("/v1/agent/join/{}", segment(addr)), &params)
            .await
    }

    /// `PUT /v1/agent/leave`.
    pub async fn leave(&self) -> Result<(), Error> {
        self.put_empty("/v1/agent/leave", &[]).await
    }

    /// `PUT /v1/agent/force-leave/<node>[?prune=1]`.
    pub async fn force_leave(&self, node: &str, prune: bool) -> Result<(), Error> {
        let params = flag("prune", "1", prune);
        self.put_empty(&format!("/v1/agent/force-leave/{}", segment(node)), &params)
            .await
    }

    // ----- catalog and health -----

    /// `GET /v1/health/service/<name>[?passing][&tag=]`.
    pub async fn health_service(
        &self,
        name: &str,
        tag: Option<&str>,
        passing: bool,
        q: &Query,
    ) -> Result<(Vec<ServiceEntry>, Meta), Error> {
        let tags: Vec<String> = tag.map(str::to_string).into_iter().collect();
        self.health_service_tags(name, &tags, passing, q).await
    }

    /// `GET /v1/catalog/services`: every service name with the union of its tags.
    pub async fn catalog_services(
        &self,
        q: &Query,
    ) -> Result<(BTreeMap<String, Vec<String>>, Meta), Error> {
        let (map, meta): (BTreeMap<String, Option<Vec<String>>>, Meta) =
            self.read("/v1/catalog/services", Vec::new(), q).await?;
        Ok((
            map.into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
            meta,
        ))
    }

    /// `GET /v1/catalog/nodes`.
    pub async fn catalog_nodes(&self, q: &Query) -> Result<(Vec<Node>, Meta), Error> {
        self.read_list("/v1/catalog/nodes", Vec::new(), q).await
    }

    /// `GET /v1/catalog/node/<name>`: None when the node is not in the catalog.
    pub async fn catalog_node(
        &self,
        node: &str,
        q: &Query,
    ) -> Result<(Option<NodeServices>, Meta), Error> {
        let path = format!("/v1/catalog/node/{}", segment(node));
        let mut params = Vec::new();
        let timeout = query_params(q, &mut params);
        let (v, meta): (Option<NodeServices>, Meta) =
            self.missing_as_empty(&path, &params, timeout).await?;
        Ok((v, meta))
    }

    // ----- KV -----

    /// `GET /v1/kv/<key>`: the entry, or None (404) with the index to block on.
    pub async fn kv_get(&self, key: &str, q: &Query) -> Result<(Option<KvPair>, Meta), Error> {
        let (rows, meta) = self.kv_read(key, false, q).await?;
        Ok((rows.into_iter().find(|p| p.key == key), meta))
    }

    /// `GET /v1/kv/<prefix>?recurse`: every entry under the prefix, sorted.
    pub async fn kv_list(&self, prefix: &str, q: &Query) -> Result<(Vec<KvPair>, Meta), Error> {
        self.kv_read(prefix, true, q).await
    }

    async fn kv_read(
        &self,
        key: &str,
        recurse: bool,
        q: &Query,
    ) -> Result<(Vec<KvPair>, Meta), Error> {
        let path = format!("/v1/kv/{}", segment(key));
        let mut params = Vec::new();
        if recurse {
            params.push(("recurse", String::new()));
        }
        let timeout = query_params(q, &mut params);
        self.missing_as_empty(&path, &params, timeout).await
    }

    /// `GET /v1/kv/<prefix>?keys[&separator=]`.
    pub async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let path = format!("/v1/kv/{}", segment(prefix));
        let mut params = vec![("keys", String::new())];
        if let Some(s) = separator {
            params.push(("separator", s.to_string()));
        }
        Ok(self
            .missing_as_empty(&path, &params, REQUEST_TIMEOUT)
            .await?
            .0)
    }

    /// A KV read, where 404 means "nothing there" (with an index to block on).
    async fn missing_as_empty<T: serde::de::DeserializeOwned + Default>(
        &self,
        path: &str,
        params: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(T, Meta), Error> {
        let a = self.call(Method::GET, path, params, None, timeout).await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok((T::default(), a.meta)),
            s if s.is_success() => Ok((decode(path, &a.body)?, a.meta)),
            _ => Err(a.error()),
        }
    }

    /// `PUT /v1/kv/<key>[?flags=][&cas=]`: false when a `cas` did not match.
    pub async fn kv_put(
        &self,
        key: &str,
        value: Vec<u8>,
        flags: Option<u64>,
        cas: Option<u64>,
    ) -> Result<bool, Error> {
        let mut params = Vec::new();
        if let Some(f) = flags {
            params.push(("flags", f.to_string()));
        }
        if let Some(c) = cas {
            params.push(("cas", c.to_string()));
        }
        let path = format!("/v1/kv/{}", segment(key));
        let body = self.put(&path, &params, Some(value)).await?;
        decode(&path, &body)
    }

    /// `DELETE /v1/kv/<key>[?recurse]`.
    pub async fn kv_delete(&self, key: &str, recurse: bool) -> Result<bool, Error> {
        let path = format!("/v1/kv/{}", segment(key));
        let params = flag("recurse", "", recurse);
        let a = self
            .call(Method::DELETE, &path, &params, None, REQUEST_TIMEOUT)
            .await?
            .success()?;
        decode(&path, &a.body)
    }

    // ----- status and snapshots -----

    /// `GET /v1/status/leader`: the leader's server address, `""` when none.
    pub async fn status_leader(&self) -> Result<String, Error> {
        self.get("/v1/status/leader", &[]).await
    }

    /// `GET /v1/status/peers`: the raft voters' server addresses.
    pub async fn status_peers(&self) -> Result<Vec<String>, Error> {
        self.get("/v1/status/peers", &[]).await
    }

    /// `GET /v1/snapshot[?stale]`: the snapshot archive.
    pub async fn snapshot_save(&self, stale: bool) -> Result<Vec<u8>, Error> {
        let params = flag("stale", "", stale);
        let a = self
            .call(
                Method::GET,
                "/v1/snapshot",
                &params,
                None,
                Duration::from_secs(600),
            )
            .await?
            .success()?;
        Ok(a.body)
    }

    /// `PUT /v1/snapshot`: restore an archive.
    pub async fn snapshot_restore(&self, archive: Vec<u8>) -> Result<(), Error> {
        self.call(
            Method::PUT,
            "/v1/snapshot",
            &[],
            Some(archive),
            Duration::from_secs(600),
        )
        .await
        .and_then(Answer::success)
        .map(|_| ())
    }
}

/// Add `index`, `wait`, `dc` and `stale` to the parameters; returns how long
/// to wait for the answer (a blocking query waits up to `wait` plus Consul's
/// jitter of `wait/16`, and a margin).
fn query_params(q: &Query, params: &mut Vec<(&str, String)>) -> Duration {
    let mut timeout = REQUEST_TIMEOUT;
    if q.index > 0 {
        params.push(("index", q.index.to_string()));
        let wait = q.wait.unwrap_or(Duration::from_secs(300));
        params.push(("wait", format!("{}ms", wait.as_millis())));
        timeout += wait + wait / 16;
    }
    if let Some(dc) = &q.dc {
        params.push(("dc", dc.clone()));
    }
    if q.stale {
        params.push(("stale", String::new()));
    }
    timeout
}

/// A query parameter present only when `on`.
fn flag(name: &'static str, value: &str, on: bool) -> Vec<(&'static str, String)> {
    if on {
        vec![(name, value.to_string())]
    } else {
        Vec::new()
    }
}

fn decode<T: serde::de::DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        path: path.to_string(),
        detail: e.to_string(),
    })
}

/// Percent-encode a path segment; `/` stays (KV keys are paths).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error with its causes, `a: b: c`, since reqwest's own text is only
/// "error sending request".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = s.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_a_scheme_or_default_to_http() {
        for (addr, base) in [
            ("127.0.0.1:8500", "http://127.0.0.1:8500"),
            ("http://consul:8500/", "http://consul:8500"),
            ("https://consul:8501", "https://consul:8501"),
        ] {
            let c = Client::new(&Options {
                address: addr.into(),
                ..Options::default()
            })
            .unwrap();
            assert_eq!(c.address(), base);
        }
        let err = Client::new(&Options {
            address: "ftp://x".into(),
            ..Options::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "consul address ftp://x: scheme ftp is not http or https"
        );
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_with_the_key() {
        let https = |tls: TlsOptions| {
            Client::new(&Options {
                address: "https://consul:8501".into(),
                token: None,
                tls,
            })
            .unwrap_err()
            .to_string()
        };
        let err = https(TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        });
        assert!(
            err.starts_with("consul.tls.ca_file /nonexistent/ca.pem: "),
            "{err}"
        );
        let err = https(TlsOptions {
            cert_file: Some("/x/cert.pem".into()),
            ..TlsOptions::default()
        });
        assert_eq!(
            err,
            "consul.tls: cert_file and key_file go together; set both or neither"
        );
        // Verification is on unless turned off.
        assert!(TlsOptions::default().verify);
    }

    #[test]
    fn blocking_parameters() {
        let mut p = Vec::new();
        let t = query_params(&Query::blocking(42, Duration::from_secs(64)), &mut p);
        assert_eq!(
            p,
            vec![("index", "42".to_string()), ("wait", "64000ms".to_string())]
        );
        assert_eq!(t, REQUEST_TIMEOUT + Duration::from_secs(68));
        let mut p = Vec::new();
        assert_eq!(query_params(&Query::default(), &mut p), REQUEST_TIMEOUT);
        assert!(p.is_empty());
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("web-1"), "web-1");
        assert_eq!(segment("service:web 1"), "service:web%201");
        assert_eq!(segment("a/b?c"), "a/b%3Fc");
    }

    /// An agent that answers one request with `body` (200, JSON) and
    /// reports the request line it got.
    async fn agent_answering(
        body: &'static str,
    ) -> (Client, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                head.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8(head).unwrap();
            let line = head.lines().next().unwrap_or_default().to_string();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).await.unwrap();
            let _ = tx.send(line);
        });
        let client = Client::new(&Options {
            address: addr.to_string(),
            ..Options::default()
        })
        .unwrap();
        (client, rx)
    }

    #[tokio::test]
    async fn members_of_all_segments_as_consul_members_asks() {
        let (c, line) = agent_answering(
            r#"[{"Name":"n1","Addr":"10.0.0.1","Port":8301,"Tags":{"role":"consul"},"Status":1}]"#,
        )
        .await;
        let members = c.members_all_segments().await.unwrap();
        assert_eq!(
            line.await.unwrap(),
            "GET /v1/agent/members?segment=_all HTTP/1.1"
        );
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].name, "n1");
        assert_eq!(members[0].tags["role"], "consul");
        assert_eq!(members[0].status, 1);

        // Go writes an empty member list as null.
        let (c, _) = agent_answering("null").await;
        assert_eq!(c.members(false).await.unwrap(), Vec::new());
    }

    #[test]
    fn outages_are_connection_failures_and_5xx() {
        assert!(Error::Unreachable {
            addr: "x".into(),
            detail: "refused".into()
        }
        .is_outage());
        assert!(Error::Status {
            code: 500,
            body: "No cluster leader".into()
        }
        .is_outage());
        assert!(!Error::Status {
            code: 404,
            body: String::new()
        }
        .is_outage());
    }
}
