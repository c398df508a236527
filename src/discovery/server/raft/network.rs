//! The server-to-server transport on `--server-port`, both ends: raft RPCs
//! (append, vote, snapshot) and the cluster calls (forwarded writes, read
//! index, gossip, leave, voter removal) as JSON over HTTP/1.1 with pooled
//! keep-alive connections, optionally over mutual TLS (`super::super::tls`).
//!
//! This module owns the cluster port's authentication. Every request and
//! every answer is authenticated, with whichever of these is configured:
//! - mutual TLS: the peer's CA-signed certificate;
//! - the cluster key (`--encrypt`, `--cluster-secret-file`, like Consul's
//!   gossip `encrypt` key): an HMAC-SHA256 over the method, path, a
//!   timestamp and the body, checked in constant time, in the
//!   `X-Pilotfish-Mac` header; the answer carries one over its status and
//!   body bound to the request's timestamp. A request older or newer than
//!   [`MAX_SKEW`] is refused, so a captured request cannot be replayed later.
//!
//! `run` refuses an `--acl-token` on an agent that can form or join a
//! cluster with neither; `--dev` and a lone server get a random key of their
//! own, so nothing else can talk to their cluster port.

// openraft's storage and RPC traits dictate their (large) error types.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::net::SocketAddr;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::InstallSnapshotError;
use tokio_util::sync::CancellationToken;

use super::{NodeId, Peer, TypeConfig};
use crate::discovery::server::cluster::{Gossip, Leave};
use crate::discovery::server::operator::{KeyringAnswer, KeyringOp, RaftStats};
use crate::discovery::server::state::Command;
use crate::discovery::server::{now_ms, Forwarded, Server};

/// The wait before raft retries a server it could not reach.
const UNREACHABLE_RETRY: Duration = Duration::from_millis(100);

/// Path prefix of the cluster protocol on the server port.
pub const PREFIX: &str = "/pilotfish/v1";

/// How far a request's timestamp may be from this server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// The largest request or answer on the cluster port (a raft snapshot).
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAC_HEADER: &str = "x-pilotfish-mac";
const TIME_HEADER: &str = "x-pilotfish-time";

/// The shared secret of a cluster (`--encrypt`): 16, 24 or 32 random bytes,
/// written in base64 as Consul's `consul keygen` prints them.
///
/// It is a keyring, like serf's: requests are signed with the primary key
/// and accepted under any installed key, and an answer is signed with the
/// key its request was accepted under, so keys can be rotated across a
/// running cluster (`/v1/operator/keyring`: install everywhere, use, then
/// remove the old one). Clones share the ring: the client, the listener and
/// the keyring endpoint see one set of keys.
#[derive(Clone)]
pub struct ClusterKey(Arc<std::sync::RwLock<Ring>>);

/// The installed keys, the primary first.
struct Ring {
    keys: Vec<(Vec<u8>, ring::hmac::Key)>,
    /// Made up for `--dev` or a lone server: not a gossip key a user
    /// configured, so the keyring endpoint answers "encryption not enabled".
    generated: bool,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Why a keyring change was refused (serf's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("No keyring to modify (encryption not enabled)")]
    NotEnabled,
    #[error("Requested key is not in the keyring")]
    NotInstalled,
    #[error("Removing the primary key is not allowed")]
    RemovePrimary,
    #[error("{0}")]
    BadKey(String),
}

impl ClusterKey {
    /// A key from its base64 text (`what` names the flag in errors).
    pub fn parse(text: &str, what: &str) -> Result<ClusterKey, String> {
        let bytes = decode_key(text).map_err(|e| {
            let make = if e.starts_with("not base64") {
                "make a key"
            } else {
                "make one"
            };
            format!("{what}: {e}; {make} with `pilotfish keygen`")
        })?;
        Ok(ClusterKey::from_keys(vec![bytes], false))
    }

    fn from_keys(keys: Vec<Vec<u8>>, generated: bool) -> ClusterKey {
        let keys = keys
            .into_iter()
            .map(|b| {
                let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &b);
                (b, k)
            })
            .collect();
        ClusterKey(Arc::new(std::sync::RwLock::new(Ring { keys, generated })))
    }

    /// A fresh random key nobody else has (`--dev`, a lone server).
    pub fn generate() -> Result<ClusterKey, String> {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| "the system's random source failed".to_string())?;
        Ok(ClusterKey::from_keys(vec![bytes.to_vec()], true))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Ring> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The installed keys in base64 (primary first), or `None` when the
    /// key was generated rather than configured (encryption not enabled).
    pub fn list(&self) -> Option<Vec<String>> {
        let ring = self.read();
        (!ring.generated).then(|| {
            ring.keys
                .iter()
                .map(|(b, _)| crate::discovery::api::gofmt::base64_encode(b))
                .collect()
        })
    }

    fn configured(&self) -> Result<(), KeyringError> {
        if self.read().generated {
            Err(KeyringError::NotEnabled)
        } else {
            Ok(())
        }
    }

    /// serf's `InstallKey`: add a key (a no-op when it is installed).
    pub fn install(&self, text: &str) -> Result<(), KeyringError> {
        self.configured()?;
        let bytes = decode_key(text).map_err(KeyringError::BadKey)?;
        let mut ring = self.write();
        if !ring.keys.iter().any(|(b, _)| *b == bytes) {
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes);
            ring.keys.push((bytes, k));
        }
        Ok(())
    }

    /// serf's `UseKey`: make an installed key the primary.
    pub fn use_key(&self, text: &str) -> Result<(), KeyringError> {
        self.configured()?;
        let bytes = decode_key(text).map_err(KeyringError::BadKey)?;
        let mut ring = self.write();
        let at = ring
            .keys
            .iter()
            .position(|(b, _)| *b == bytes)
            .ok_or(KeyringError::NotInstalled)?;
        let key = ring.keys.remove(at);
        ring.keys.insert(0, key);
        Ok(())
    }

    /// serf's `RemoveKey`: drop a key other than the primary.
    pub fn remove(&self, text: &str) -> Result<(), KeyringError> {
        self.configured()?;
        let bytes = decode_key(text).map_err(KeyringError::BadKey)?;
        let mut ring = self.write();
        if ring.keys.first().is_some_and(|(b, _)| *b == bytes) {
            return Err(KeyringError::RemovePrimary);
        }
        ring.keys.retain(|(b, _)| *b != bytes);
        Ok(())
    }

    /// Replace the keys (a keyring file read at start), primary first.
    pub fn load(&self, texts: &[String]) -> Result<(), String> {
        let keys = texts
            .iter()
            .map(|t| decode_key(t))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("the keyring holds no key".to_string());
        }
        let fresh = ClusterKey::from_keys(keys, false);
        let fresh = std::mem::replace(
            &mut *fresh.write(),
            Ring {
                keys: Vec::new(),
                generated: false,
            },
        );
        *self.write() = fresh;
        Ok(())
    }

    fn tag_with(key: &ring::hmac::Key, parts: &[&[u8]]) -> ring::hmac::Tag {
        let mut ctx = ring::hmac::Context::with_key(key);
        for p in parts {
            // Length-prefixed, so no two different part lists sign alike.
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        ctx.sign()
    }

    fn request_parts<'a>(
        method: &'a str,
        path: &'a str,
        time: &'a str,
        body: &'a [u8],
    ) -> [&'a [u8]; 5] {
        [
            b"request",
            method.as_bytes(),
            path.as_bytes(),
            time.as_bytes(),
            body,
        ]
    }

    fn answer_parts<'a>(
        path: &'a str,
        time: &'a str,
        status: &'a str,
        body: &'a [u8],
    ) -> [&'a [u8]; 5] {
        [
            b"answer",
            path.as_bytes(),
            time.as_bytes(),
            status.as_bytes(),
            body,
        ]
    }

    /// The MAC of `parts` under the primary key.
    fn sign(&self, parts: &[&[u8]]) -> String {
        self.sign_with(0, parts)
    }

    /// The MAC of `parts` under installed key number `at` (the primary if
    /// that key is gone).
    fn sign_with(&self, at: usize, parts: &[&[u8]]) -> String {
        let ring = self.read();
        let Some((_, key)) = ring.keys.get(at).or_else(|| ring.keys.first()) else {
            return String::new();
        };
        crate::discovery::api::gofmt::base64_encode(Self::tag_with(key, parts).as_ref())
    }

    /// Which installed key `mac` (base64) is the MAC of `parts` under; the
    /// tags are compared in constant time.
    fn verify(&self, mac: &str, parts: &[&[u8]]) -> Option<usize> {
        let mac = crate::discovery::api::gofmt::base64_decode(mac).ok()?;
        self.read()
            .keys
            .iter()
            .position(|(_, key)| constant_time_eq(Self::tag_with(key, parts).as_ref(), &mac))
    }
}

/// A key's base64 text to its bytes: 16, 24 or 32 of them.
fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    let bytes = crate::discovery::api::gofmt::base64_decode(text.trim())
        .map_err(|e| format!("not base64 ({e})"))?;
    if ![16, 24, 32].contains(&bytes.len()) {
        return Err(format!(
            "the key is {} bytes; it must be 16, 24 or 32 bytes (base64)",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Equal bytes, in a time that depends only on the lengths (a MAC's length
/// is public).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// Compare a secret with a candidate in constant time (the HTTP API's
/// `--acl-token`): both go through an HMAC under a per-process random key,
/// so neither the contents nor the length of the secret leak through timing.
pub struct SecretCheck {
    key: ring::hmac::Key,
    tag: ring::hmac::Tag,
}

impl std::fmt::Debug for SecretCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCheck(..)")
    }
}

impl SecretCheck {
    pub fn new(secret: &str) -> SecretCheck {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            // The system's random source failing is not survivable anyway;
            // a fixed key still compares in constant time.
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"pilotfish"));
        let tag = ring::hmac::sign(&key, secret.as_bytes());
        SecretCheck { key, tag }
    }

    pub fn matches(&self, candidate: &str) -> bool {
        ring::hmac::verify(&self.key, candidate.as_bytes(), self.tag.as_ref()).is_ok()
    }
}

/// Why a cluster call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing was sent: the peer could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// Sent, but no usable answer (timeout, reset, bad status).
    #[error("{0}")]
    Failed(String),
}

/// An HTTP client for the cluster protocol; cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    scheme: &'static str,
    key: Option<ClusterKey>,
}

impl Client {
    /// `tls`: a rustls client config (server certificates checked against
    /// `--tls-ca`, this node's certificate presented), or plain HTTP;
    /// `key`: the cluster key every request is signed with and every
    /// answer checked against.
    pub fn new(tls: Option<rustls::ClientConfig>, key: Option<ClusterKey>) -> Client {
        crate::discovery::server::tls::install_default_provider();
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .no_proxy();
        let (builder, scheme) = match tls {
            Some(cfg) => (builder.use_preconfigured_tls(cfg), "https"),
            // Plain HTTP needs no trust roots (and a FROM scratch image has none).
            None => (
                builder.tls_certs_only(Vec::<reqwest::Certificate>::new()),
                "http",
            ),
        };
        Client {
            http: builder.build().unwrap_or_else(|_| reqwest::Client::new()),
            scheme,
            key,
        }
    }

    /// POST `body` as JSON to `<addr><PREFIX><path>` and decode the JSON answer.
    pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let url = format!("{}://{addr}{PREFIX}{path}", self.scheme);
        let full_path = format!("{PREFIX}{path}");
        let body = serde_json::to_vec(body)
            .map_err(|e| CallError::Failed(format!("{url}: encoding the request: {e}")))?;
        let time = now_ms().to_string();
        let mut request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout);
        if let Some(key) = &self.key {
            let mac = key.sign(&ClusterKey::request_parts("POST", &full_path, &time, &body));
            request = request.header(TIME_HEADER, &time).header(MAC_HEADER, mac);
        }
        let resp = request.body(body).send().await.map_err(|e| {
            if e.is_connect() {
                CallError::Unreachable(format!("dial {addr}: {}", root_cause(&e)))
            } else {
                CallError::Failed(format!("{url}: {}", root_cause(&e)))
            }
        })?;
        let status = resp.status();
        let mac = resp
            .headers()
            .get(MAC_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Failed(format!("{url}: {}", root_cause(&e))))?;
        // An unsigned refusal is an error either way; its body says why.
        let refused = !status.is_success() && mac.is_none();
        if let (Some(key), false) = (&self.key, refused) {
            let status_text = status.as_u16().to_string();
            let parts = ClusterKey::answer_parts(&full_path, &time, &status_text, &bytes);
            if mac.is_none_or(|m| key.verify(&m, &parts).is_none()) {
                return Err(CallError::Failed(format!(
                    "{url}: the answer failed cluster authentication: \
                     every server and client agent must run with the same --encrypt key"
                )));
            }
        }
        if !status.is_success() {
            return Err(CallError::Failed(format!(
                "{url}: {status}: {}",
                String::from_utf8_lossy(&bytes).trim()
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Failed(format!("{url}: undecodable answer: {e}")))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// openraft's network factory: one [`Conn`] per target server.
#[derive(Clone)]
pub struct Network {
    pub client: Client,
    pub reachability: Arc<Reachability>,
}

/// How often a summary of the servers that still do not answer is logged.
const UNREACHABLE_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Which servers raft could not reach. Each change is logged once (a server
/// stops answering, a server answers again), plus a summary every
/// [`UNREACHABLE_SUMMARY_EVERY`] while any is down, instead of a line for
/// every retry (openraft's own per-attempt lines are filtered out in
/// `logging`).
#[derive(Default)]
pub struct Reachability {
    down: Mutex<HashMap<NodeId, Down>>,
    last_summary: Mutex<Option<Instant>>,
}

struct Down {
    addr: String,
    since: Instant,
}

impl Reachability {
    fn failed(&self, target: NodeId, addr: &str, error: &str) {
        let now = Instant::now();
        let summary = {
            let mut down = lock(&self.down);
            if let std::collections::hash_map::Entry::Vacant(e) = down.entry(target) {
                e.insert(Down {
                    addr: addr.to_string(),
                    since: now,
                });
                tracing::warn!(
                    "server {addr} is unreachable: {error}; retrying (logged again when it answers)"
                );
                return;
            }
            let mut last = lock(&self.last_summary);
            if last.is_some_and(|t| now.duration_since(t) < UNREACHABLE_SUMMARY_EVERY) {
                return;
            }
            *last = Some(now);
            let mut list: Vec<String> = down
                .values()
                .filter(|d| now.duration_since(d.since) >= UNREACHABLE_SUMMARY_EVERY)
                .map(|d| {
                    format!(
                        "{} (for {}s)",
                        d.addr,
                        now.duration_since(d.since).as_secs()
                    )
                })
                .collect();
            list.sort();
            list
        };
        if !summary.is_empty() {
            tracing::warn!("servers still unreachable: {}", summary.join(", "));
        }
    }

    fn answered(&self, target: NodeId) {
        if let Some(d) = lock(&self.down).remove(&target) {
            tracing::info!(
                "server {} answers again after {:.1}s",
                d.addr,
                d.since.elapsed().as_secs_f64()
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> Conn {
        Conn {
            client: self.client.clone(),
            reachability: self.reachability.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// A connection to one server.
pub struct Conn {
    client: Client,
    reachability: Arc<Reachability>,
    target: NodeId,
    addr: String,
}

impl Conn {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Peer, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .client
            .call(&self.addr, path, req, option.hard_ttl())
            .await
            .inspect(|_| self.reachability.answered(self.target))
            .inspect_err(|e| {
                self.reachability
                    .failed(self.target, &self.addr, &e.to_string())
            })
            .map_err(|e| match e {
                CallError::Unreachable(m) => {
                    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m)))
                }
                CallError::Failed(m) => {
                    RPCError::Network(NetworkError::new(&std::io::Error::other(m)))
                }
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Peer, RaftError<NodeId>>> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Peer, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Peer, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }

    /// How long to wait before retrying a server that could not be
    /// reached: 100 ms (openraft's default is 500 ms), so a restarted
    /// server hears from the leader within two heartbeats of coming back.
    /// A refused dial costs next to nothing; an unanswered one is bounded
    /// by the client's 500 ms connect timeout anyway.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_RETRY))
    }
}

// ----- the receiving side -----

/// The cluster protocol's routes on `--server-port`.
fn routes(server: Server) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/raft/append"), post(append))
        .route(&format!("{PREFIX}/raft/vote"), post(vote))
        .route(&format!("{PREFIX}/raft/snapshot"), post(snapshot))
        .route(&format!("{PREFIX}/write"), post(write))
        .route(&format!("{PREFIX}/read-index"), post(read_index))
        .route(&format!("{PREFIX}/gossip"), post(gossip))
        .route(&format!("{PREFIX}/leave"), post(leave))
        .route(&format!("{PREFIX}/event"), post(event))
        .route(&format!("{PREFIX}/remove"), post(remove))
        .route(&format!("{PREFIX}/raft-stats"), post(raft_stats))
        .route(&format!("{PREFIX}/elect"), post(elect))
        .route(&format!("{PREFIX}/transfer-leader"), post(transfer_leader))
        .route(&format!("{PREFIX}/keyring"), post(keyring))
        .route(&format!("{PREFIX}/coordinate"), post(coordinate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(server)
}

async fn append(
    State(server): State<Server>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    let r = server.raft().append_entries(req).await;
    if matches!(
        r,
        Ok(AppendEntriesResponse::Success
            | AppendEntriesResponse::PartialSuccess(_)
            | AppendEntriesResponse::Conflict)
    ) {
        server.touch_leader_contact();
    }
    Json(r)
}

async fn vote(
    State(server): State<Server>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(server.raft().vote(req).await)
}

async fn snapshot(
    State(server): State<Server>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    let r = server.raft().install_snapshot(req).await;
    if r.is_ok() {
        server.touch_leader_contact();
    }
    Json(r)
}

async fn write(State(server): State<Server>, Json(cmd): Json<Command>) -> Json<Forwarded> {
    if !server.is_leader() {
        return Json(Forwarded::NotLeader);
    }
    Json(server.write_as_leader(cmd).await)
}

async fn read_index(State(server): State<Server>) -> Json<Option<u64>> {
    if !server.is_leader() {
        return Json(None);
    }
    Json(server.read_index().await)
}

async fn gossip(State(server): State<Server>, Json(g): Json<Gossip>) -> Json<Gossip> {
    Json(server.answer_gossip(&g))
}

/// A client agent's coordinate, queued on this server.
async fn coordinate(
    State(server): State<Server>,
    Json(u): Json<crate::discovery::server::state::coordinate::CoordinateUpdate>,
) -> Json<Result<(), String>> {
    Json(server.queue_coordinate(u).map_err(|e| e.to_string()))
}

async fn leave(State(server): State<Server>, Json(l): Json<Leave>) -> Json<()> {
    server.heard_leave(&l);
    Json(())
}

/// A user event pushed by the agent that fired it (`events`).
async fn event(
    State(server): State<Server>,
    Json(ev): Json<crate::discovery::api::event::UserEvent>,
) -> Json<()> {
    server.receive_event(&ev);
    Json(())
}

async fn remove(State(server): State<Server>, Json(id): Json<NodeId>) -> Json<Result<(), String>> {
    if !server.is_leader() {
        return Json(Err("not the leader".to_string()));
    }
    Json(server.remove_server(id).await)
}

/// This server's raft figures, for autopilot's health on any server.
async fn raft_stats(State(server): State<Server>) -> Json<RaftStats> {
    Json(server.raft_stats())
}

/// The leader hands leadership over: campaign now.
async fn elect(State(server): State<Server>) -> Json<()> {
    if let Err(e) = server.raft().trigger().elect().await {
        tracing::warn!("campaigning for a leadership transfer: {e}");
    }
    Json(())
}

async fn transfer_leader(
    State(server): State<Server>,
    Json(id): Json<Option<String>>,
) -> Json<Result<(), String>> {
    if !server.is_leader() {
        return Json(Err("not the leader".to_string()));
    }
    Json(server.transfer_leadership(id).await)
}

async fn keyring(State(server): State<Server>, Json(op): Json<KeyringOp>) -> Json<KeyringAnswer> {
    Json(server.keyring_local(&op))
}

/// Refused requests are logged at most this often (with a count of the
/// others), so a flood cannot flood the log.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Checks the cluster key on requests and signs answers.
struct Gate {
    key: Option<ClusterKey>,
    refused: Mutex<(Option<Instant>, u64)>,
}

impl Gate {
    /// Check a request's MAC and timestamp; `Err` says why it is refused.
    fn check(
        &self,
        key: &ClusterKey,
        parts: &axum::http::request::Parts,
        body: &[u8],
    ) -> Result<(String, usize), String> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let (Some(time), Some(mac)) = (header(TIME_HEADER), header(MAC_HEADER)) else {
            return Err(
                "no cluster key MAC on the request (is the sender running without --encrypt?)"
                    .to_string(),
            );
        };
        let path = parts.uri.path();
        let Some(used) = key.verify(
            &mac,
            &ClusterKey::request_parts(parts.method.as_str(), path, &time, body),
        ) else {
            return Err(
                "the MAC does not match (the sender runs with another --encrypt key)".to_string(),
            );
        };
        let sent: u64 = time
            .parse()
            .map_err(|_| format!("bad timestamp {time:?}"))?;
        let skew = Duration::from_millis(now_ms().abs_diff(sent));
        if skew > MAX_SKEW {
            return Err(format!(
                "the request's timestamp is {}s away from this server's clock (more than {}s): a replay, or clocks out of sync",
                skew.as_secs(),
                MAX_SKEW.as_secs()
            ));
        }
        Ok((time, used))
    }

    fn log_refused(&self, peer: SocketAddr, path: &str, why: &str) {
        let mut refused = lock(&self.refused);
        let now = Instant::now();
        if refused
            .0
            .is_some_and(|t| now.duration_since(t) < REFUSED_LOG_EVERY)
        {
            refused.1 += 1;
            return;
        }
        let others = std::mem::take(&mut refused.1);
        refused.0 = Some(now);
        drop(refused);
        let others = if others > 0 {
            format!(" ({others} more refused since the last such line)")
        } else {
            String::new()
        };
        tracing::warn!("refused a cluster request from {peer} to {path}: {why}{others}");
    }

    /// One request: authenticated (when a key is set), routed, its answer signed.
    async fn handle(
        &self,
        mut app: Router,
        peer: SocketAddr,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let Some(key) = &self.key else {
            return call(&mut app, req.map(axum::body::Body::new)).await;
        };
        let (parts, body) = req.into_parts();
        let body =
            match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_BODY))
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        format!("reading the request body: {e}"),
                    )
                        .into_response()
                }
            };
        let path = parts.uri.path().to_string();
        let (time, used) = match self.check(key, &parts, &body) {
            Ok(t) => t,
            Err(why) => {
                self.log_refused(peer, &path, &why);
                return (
                    axum::http::StatusCode::FORBIDDEN,
                    format!("cluster authentication failed: {why}"),
                )
                    .into_response();
            }
        };
        let resp = call(
            &mut app,
            axum::extract::Request::from_parts(parts, axum::body::Body::from(body)),
        )
        .await;
        let (mut parts, body) = resp.into_parts();
        let body = match http_body_util::BodyExt::collect(body).await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("answering: {e}"),
                )
                    .into_response()
            }
        };
        let status = parts.status.as_u16().to_string();
        // Under the key the request came with: the sender may not have
        // this node's primary yet (a key rotation in progress).
        let mac = key.sign_with(
            used,
            &ClusterKey::answer_parts(&path, &time, &status, &body),
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&mac) {
            parts.headers.insert(MAC_HEADER, v);
        }
        axum::response::Response::from_parts(parts, axum::body::Body::from(body))
    }
}

async fn call(app: &mut Router, req: axum::extract::Request) -> axum::response::Response {
    // A `Router` is always ready, so it may be called without `poll_ready`.
    match tower_service::Service::call(app, req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// Serve the cluster protocol until `shutdown`: TLS when configured, the
/// cluster key checked on every request when set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Server,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let key = server.cluster().key.clone();
    tracing::info!(
        "listening for cluster traffic ({}) on {}",
        match (&tls, &key) {
            (Some(_), Some(_)) => "mutual tls, cluster key",
            (Some(_), None) => "mutual tls",
            (None, Some(_)) => "cluster key",
            (None, None) => "unauthenticated",
        },
        listener.local_addr()?
    );
    let app = routes(server);
    let gate = Arc::new(Gate {
        key,
        refused: Mutex::new((None, 0)),
    });
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accepting a cluster connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = {
            let (app, gate) = (app.clone(), gate.clone());
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (app, gate) = (app.clone(), gate.clone());
                async move { Ok::<_, std::convert::Infallible>(gate.handle(app, peer, req).await) }
            })
        };
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let http1 = hyper::server::conn::http1::Builder::new();
            let result = match acceptor {
                None => {
                    let conn =
                        http1.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    tokio::select! {
                        r = conn => r.map_err(|e| e.to_string()),
                        () = shutdown.cancelled() => Ok(()),
                    }
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Err(e) => Err(format!("tls handshake: {e}")),
                    Ok(tls) => {
                        let conn =
                            http1.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                        tokio::select! {
                            r = conn => r.map_err(|e| e.to_string()),
                            () = shutdown.cancelled() => Ok(()),
                        }
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!("cluster connection from {peer}: {e}");
            }
        });
    }
    connections.close();
    Ok(())
}
