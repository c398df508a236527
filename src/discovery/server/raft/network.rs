//! The server-to-server transport's client side: raft RPCs (append, vote,
//! snapshot) and the cluster calls (forwarded writes, read index, gossip)
//! as JSON over HTTP/1.1 on each server's `--server-port`, with pooled
//! keep-alive connections, optionally over TLS (`super::super::tls`).
//! The receiving side is `cluster::routes`.

// openraft's storage and RPC traits dictate their (large) error types.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{NodeId, Peer, TypeConfig};

/// The wait before raft retries a server it could not reach.
const UNREACHABLE_RETRY: Duration = Duration::from_millis(100);

/// Path prefix of the cluster protocol on the server port.
pub const PREFIX: &str = "/pilotfish/v1";

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
}

impl Client {
    /// `tls`: a rustls client config (server certificates checked against
    /// `--tls-ca`, this node's certificate presented), or plain HTTP.
    pub fn new(tls: Option<rustls::ClientConfig>) -> Client {
        crate::discovery::server::tls::install_default_provider();
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .no_proxy();
        let (builder, scheme) = match tls {
            Some(cfg) => (builder.use_preconfigured_tls(cfg), "https"),
            None => (builder, "http"),
        };
        Client {
            http: builder.build().unwrap_or_else(|_| reqwest::Client::new()),
            scheme,
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
        let resp = self
            .http
            .post(&url)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CallError::Unreachable(format!("dial {addr}: {}", root_cause(&e)))
                } else {
                    CallError::Failed(format!("{url}: {}", root_cause(&e)))
                }
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Failed(format!("{url}: {}", root_cause(&e))))?;
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
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> Conn {
        Conn {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// A connection to one server.
pub struct Conn {
    client: Client,
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
