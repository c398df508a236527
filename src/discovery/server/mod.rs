//! The embedded Consul-compatible server: one node's shell around the
//! deterministic state machine (`state`), replicated with openraft (`raft`).
//! Writes go through [`Server::write`], which proposes the command to the
//! raft leader (forwarding it when this node is a follower); once the entry
//! is committed every server applies it in log order to its replica and wakes
//! the blocking queries it affects. Reads take the replica under a read lock,
//! after the consistency check the request asked for ([`Server::read_barrier`]).
//! The HTTP API (`http`) and DNS (`dns`) only ever use these entry points:
//! `write`, `read`, `read_barrier` and `block_on`. Membership (who is in the
//! cluster, alive or failed), bootstrap and the leader's reconciliation live
//! in `cluster`.
//!
//!
//! The replica and the blocking queries' waiter table are `replica`; the
//! read consistency modes and check-quorum are `consistency`.

pub mod agent_metrics;
pub mod checks;
pub mod cluster;
mod consistency;
pub mod coordinate;
pub mod dns;
pub mod events;
pub mod http;
pub mod operator;
pub mod raft;
mod replica;
pub mod run;
pub mod state;
pub mod tls;
pub mod vivaldi;

pub use consistency::{Consistency, NoLeader};
pub use replica::Topic;
pub(crate) use replica::{blocking, Replica, Shared};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::RaftError;
use raft::propose::{Applied, Rejected};
use serde::{Deserialize, Serialize};
use state::{Command, CommandResult, Outcome, StateError};

/// What a server node is, from the command line.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node: String,
    pub datacenter: String,
    /// DNS domain with a trailing dot, e.g. `consul.`.
    pub domain: String,
    /// This node's address in the catalog.
    pub advertise: IpAddr,
    /// `None`: in memory only (`--dev`).
    pub data_dir: Option<PathBuf>,
    pub enable_script_checks: bool,
    pub recursors: Vec<SocketAddr>,
    /// `--raft-snapshot-threshold-bytes`: a snapshot once the log since
    /// the last one holds this many bytes (see `raft::compaction`).
    pub snapshot_threshold: u64,
}

/// How this node takes part in the cluster and which ports it announces
/// (`status/leader`, `status/peers`, `agent/members`). Kept apart from
/// [`ServerConfig`] so code that builds a `ServerConfig` literal keeps
/// compiling; [`Server::open`] uses the defaults (a lone server).
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// `--server`: this node takes part in raft (always true for `--dev`).
    pub server: bool,
    /// `--bootstrap-expect`: servers to wait for before bootstrapping.
    pub bootstrap_expect: u32,
    /// `--server-port` (8300): raft and the cluster protocol.
    pub server_port: u16,
    /// `--http-port` (8500) and `--dns-port` (8600), as configured.
    pub http_port: u16,
    pub dns_port: u16,
    /// `--retry-join` addresses or names.
    pub retry_join: Vec<String>,
    /// `--resolver`: the DNS server that resolves join names.
    pub resolver: Option<SocketAddr>,
    /// `--tls-cert/--tls-key/--tls-ca`: server-to-server TLS.
    pub tls: Option<tls::TlsFiles>,
    /// `--acl-token`/`--acl-token-file`: the master token the HTTP API
    /// requires, compared in constant time.
    pub acl_token: Option<Arc<raft::network::SecretCheck>>,
    /// `--encrypt`/`--cluster-secret-file` (or a random one for `--dev`
    /// and a lone server): the key every cluster-port request and answer
    /// is authenticated with.
    pub key: Option<raft::network::ClusterKey>,
    /// `--ui`/`--no-ui`: serve the web UI at `/ui/` (`crate::ui`).
    pub ui: bool,
    /// The log level's handle, for `/v1/agent/self`'s `DebugConfig.LogLevel`.
    pub log_level: Option<crate::logging::LevelHandle>,
    /// Coordinate sync and batching cadence (Consul's defaults).
    pub coordinates: coordinate::Timing,
    /// `--prometheus-retention-time` (Consul's
    /// `telemetry.prometheus_retention_time`); zero: no Prometheus output.
    pub prometheus_retention: Duration,
}

impl ClusterConfig {
    /// A lone server with Consul's default ports.
    pub fn lone() -> ClusterConfig {
        ClusterConfig {
            server: true,
            bootstrap_expect: 0,
            server_port: 8300,
            http_port: 8500,
            dns_port: 8600,
            ..ClusterConfig::default()
        }
    }

    /// Bootstraps alone, at once: `--dev`, or a server told to expect only
    /// itself (`--bootstrap-expect 1`, or no expectation and nothing to join).
    pub fn bootstraps_alone(&self) -> bool {
        self.server
            && (self.bootstrap_expect == 1
                || (self.bootstrap_expect == 0 && self.retry_join.is_empty()))
    }
}

impl Default for ServerConfig {
    /// A `--dev` node named `node` on loopback.
    fn default() -> ServerConfig {
        ServerConfig {
            node: "node".to_string(),
            datacenter: "dc1".to_string(),
            domain: "consul.".to_string(),
            advertise: IpAddr::from([127, 0, 0, 1]),
            data_dir: None,
            enable_script_checks: false,
            recursors: Vec::new(),
            snapshot_threshold: raft::compaction::SNAPSHOT_THRESHOLD,
        }
    }
}

/// A write that was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub index: u64,
    pub outcome: Outcome,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The state machine refused the command; the text is Consul's.
    #[error("{0}")]
    State(#[from] StateError),
    /// No leader could take the write within the hold time (Consul's text).
    #[error("No cluster leader")]
    NoLeader,
    /// The write reached the leader but its outcome is unknown.
    #[error("rpc error making call: {0}")]
    Rpc(String),
    /// raft stopped on a storage failure (a full disk, say): its cause,
    /// instead of a `No cluster leader` that hides it.
    #[error("{0}; this agent is stopping")]
    Stopped(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening the data dir: {0}")]
    Store(String),
    #[error("starting raft: {0}")]
    Raft(String),
    #[error("registering this node: {0}")]
    Register(String),
}

/// How long a write or a `?consistent` read waits for a leader (Consul's
/// `rpc_hold_timeout` is 7 s).
pub const HOLD: Duration = Duration::from_secs(7);

/// A handle to the node; cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ServerConfig,
    cluster: ClusterConfig,
    shared: Arc<Shared>,
    raft: raft::Raft,
    me: raft::Peer,
    id: raft::NodeId,
    client: raft::network::Client,
    /// Group commit of this node's proposals.
    proposer: raft::propose::Proposer,
    /// Cancelled when the API asks the agent to leave (`PUT /v1/agent/leave`).
    leave: tokio_util::sync::CancellationToken,
    /// Cancelled once the graceful leave is done (`leave_cluster`).
    left: tokio_util::sync::CancellationToken,
    /// When this follower last accepted entries or a heartbeat from a leader.
    last_contact: Mutex<Option<tokio::time::Instant>>,
    /// Who is in the cluster (the serf LAN pool's equivalent).
    members: cluster::Members,
    /// This agent's own registrations and TTL heartbeats (`checks`).
    agent_local: Arc<checks::AgentLocal>,
    /// User events: this agent's ring buffer and what it gossips (`events`).
    events: events::Events,
    /// The first storage failure, which stops raft.
    fault: raft::Fault,
    /// Autopilot's `StableSince` of each server.
    stability: operator::Stability,
    /// This agent's network coordinate and a server's queued updates.
    coordinates: coordinate::Local,
    /// The agent's metrics (`/v1/agent/metrics`).
    metrics: agent_metrics::Sink,
    /// What SIGHUP does, for `PUT /v1/agent/reload` (set by `run`).
    reloader: std::sync::OnceLock<Reloader>,
    /// Tokens set through `PUT /v1/agent/token/:type` (ACLs on).
    agent_tokens: Mutex<BTreeMap<&'static str, String>>,
}

/// Reloads the agent's configuration as SIGHUP does; the error is the
/// reason nothing changed.
pub type Reloader = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Milliseconds since the Unix epoch: the time stamped into commands.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A write forwarded to the leader, as answered on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    Applied {
        index: u64,
        result: CommandResult,
    },
    /// The receiver is not (or no longer) the leader: ask again.
    NotLeader,
    Failed(String),
}

/// The raft view `pilotfish info` and `/v1/agent/self` show.
#[derive(Debug, Clone)]
pub struct RaftInfo {
    pub state: &'static str,
    pub term: u64,
    pub leader: Option<raft::Peer>,
    pub last_log_index: u64,
    pub last_log_term: u64,
    pub applied_index: u64,
    pub commit_index: u64,
    pub last_snapshot_index: u64,
    pub last_snapshot_term: u64,
    /// `(id, peer, voter)` for every server in the latest configuration.
    pub servers: Vec<(raft::NodeId, raft::Peer, bool)>,
    pub configuration_index: u64,
    /// Other voters, 0 when this node is not a voter (hashicorp/raft's rule).
    pub num_peers: usize,
    /// `never`, `0` (leader) or milliseconds since the leader was heard.
    pub last_contact: Option<Duration>,
}

/// Read (or create, once) the node ID kept in the data dir.
fn node_id(dir: Option<&std::path::Path>) -> Result<String, String> {
    let Some(dir) = dir else {
        return Ok(raft::new_node_id());
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("creating the data dir {}: {e}", dir.display()))?;
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) | Err(_) => {
            let id = raft::new_node_id();
            let tmp = dir.join("node-id.tmp");
            std::fs::write(&tmp, &id)
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok(id)
        }
    }
}

impl Server {
    /// A lone server (`--dev` style): bootstrapped, leader, node registered.
    pub async fn open(cfg: ServerConfig) -> Result<Server, ServerError> {
        Server::open_with(cfg, ClusterConfig::lone()).await
    }

    /// Open the node's state (from the data dir, if any) and start raft. A
    /// server that bootstraps alone waits until it leads and its node is
    /// registered; otherwise the node waits for `cluster` to form it.
    pub async fn open_with(
        cfg: ServerConfig,
        cluster: ClusterConfig,
    ) -> Result<Server, ServerError> {
        let dir = cfg.data_dir.as_deref();
        let node_uuid = node_id(dir).map_err(ServerError::Store)?;
        if let (Some(dir), Some(ring)) = (dir, &cluster.key) {
            if ring.list().is_some() {
                operator::load_keyring(dir, ring).map_err(ServerError::Store)?;
            }
        }
        let id = raft::raft_id(&node_uuid);
        let shared = Shared::new();
        let log = raft::log_store::LogStore::open(dir).map_err(ServerError::Store)?;
        let had_state = log.has_state();
        let fault = log.fault();
        let sm = raft::state_machine::StateMachine::open(shared.clone(), dir, fault.clone())
            .map_err(ServerError::Store)?;
        let growth = log.growth(sm.snapshot_index());
        let tls = match &cluster.tls {
            None => None,
            Some(files) => Some(tls::client_config(files).map_err(ServerError::Raft)?),
        };
        let client = raft::network::Client::new(tls, cluster.key.clone());
        let config = raft::config()
            .validate()
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        let raft = raft::Raft::new(
            id,
            Arc::new(config),
            raft::network::Network {
                client: client.clone(),
                reachability: Default::default(),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| ServerError::Raft(e.to_string()))?;
        let me = raft::Peer {
            name: cfg.node.clone(),
            node_id: node_uuid,
            addr: SocketAddr::new(cfg.advertise, cluster.server_port).to_string(),
        };
        let members = cluster::Members::new(&cfg, &cluster, &me);
        let alone = cluster.bootstraps_alone();
        let proposer = raft::propose::Proposer::start(raft.clone(), fault.clone());
        let threshold = cfg.snapshot_threshold;
        let prometheus_retention = cluster.prometheus_retention;
        let server = Server {
            inner: Arc::new(Inner {
                cfg,
                cluster,
                shared,
                raft,
                me,
                id,
                client,
                proposer,
                leave: tokio_util::sync::CancellationToken::new(),
                left: tokio_util::sync::CancellationToken::new(),
                last_contact: Mutex::new(None),
                members,
                agent_local: Arc::default(),
                events: events::Events::default(),
                fault,
                stability: operator::Stability::default(),
                coordinates: coordinate::Local::default(),
                metrics: agent_metrics::Sink::new(
                    u64::try_from(prometheus_retention.as_millis()).unwrap_or(u64::MAX),
                ),
                reloader: std::sync::OnceLock::new(),
                agent_tokens: Mutex::new(BTreeMap::new()),
            }),
        };
        let node = Arc::downgrade(&server.inner);
        tokio::spawn(raft::compaction::run(growth, threshold, move || {
            node.upgrade().map(|n| n.raft.clone())
        }));
        if alone {
            if !had_state {
                server
                    .bootstrap(vec![(id, server.inner.me.clone())])
                    .await?;
            }
            server.register_self().await?;
        }
        Ok(server)
    }

    /// Initialise raft with these voters (once per cluster, see `cluster`).
    pub async fn bootstrap(
        &self,
        voters: Vec<(raft::NodeId, raft::Peer)>,
    ) -> Result<(), ServerError> {
        let members: BTreeMap<raft::NodeId, raft::Peer> = voters.into_iter().collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Already initialised (a restart, or a concurrent bootstrap with
            // the same members): nothing to do.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ServerError::Raft(e.to_string())),
        }
    }

    /// Register this node in the catalog (serfHealth passing) once a leader
    /// takes writes; used by a server that runs alone.
    async fn register_self(&self) -> Result<(), ServerError> {
        let reg = cluster::node_registration(&self.members().me());
        self.write(Command::Register(reg))
            .await
            .map(|_| ())
            .map_err(|e| ServerError::Register(e.to_string()))
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.cfg
    }

    pub fn cluster(&self) -> &ClusterConfig {
        &self.inner.cluster
    }

    pub fn members(&self) -> &cluster::Members {
        &self.inner.members
    }

    /// The agent-local check table shared by the check runner and the
    /// `/v1/agent` endpoints.
    pub fn agent_local(&self) -> &Arc<checks::AgentLocal> {
        &self.inner.agent_local
    }

    /// The Vivaldi client and the coordinate queue (`coordinate`).
    pub fn coordinates(&self) -> &coordinate::Local {
        &self.inner.coordinates
    }

    /// The agent's metrics sink.
    pub fn metrics(&self) -> &agent_metrics::Sink {
        &self.inner.metrics
    }

    /// Install what `PUT /v1/agent/reload` runs (once).
    pub fn set_reloader(&self, reload: Reloader) {
        let _ = self.inner.reloader.set(reload);
    }

    /// Reload as SIGHUP does; `Ok` when there is nothing to reload.
    pub fn reload(&self) -> Result<(), String> {
        self.inner.reloader.get().map_or(Ok(()), |r| r())
    }

    /// Set one of the agent's ACL tokens (by its canonical name).
    pub fn set_agent_token(&self, kind: &'static str, token: String) {
        self.inner
            .agent_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind, token);
    }

    pub fn raft(&self) -> &raft::Raft {
        &self.inner.raft
    }

    pub fn raft_id(&self) -> raft::NodeId {
        self.inner.id
    }

    /// This server as raft and the cluster protocol know it.
    pub fn peer(&self) -> &raft::Peer {
        &self.inner.me
    }

    /// The node ID (a UUID), kept in the data dir.
    pub fn node_id(&self) -> &str {
        &self.inner.me.node_id
    }

    pub fn client(&self) -> &raft::network::Client {
        &self.inner.client
    }

    /// `<advertise>:<server-port>`, this server's raft address as Consul
    /// shows it (`status/leader`, `status/peers`).
    pub fn rpc_addr(&self) -> SocketAddr {
        SocketAddr::new(self.inner.cfg.advertise, self.inner.cluster.server_port)
    }

    /// Apply one command through the raft log: proposed here when this node
    /// leads, otherwise forwarded to the leader. Waits up to [`HOLD`] for a
    /// leader; answers once the entry is committed and applied here.
    pub async fn write(&self, cmd: Command) -> Result<Written, WriteError> {
        // Boxed: forwarding makes this future several KiB, and a handler
        // that can write (most can) would otherwise carry that size in its
        // own future for every request, parked blocking queries included.
        Box::pin(self.propose_or_forward(cmd)).await
    }

    async fn propose_or_forward(&self, cmd: Command) -> Result<Written, WriteError> {
        let deadline = tokio::time::Instant::now() + HOLD;
        loop {
            let proposed =
                tokio::time::timeout_at(deadline, self.inner.proposer.propose(cmd.clone())).await;
            let leader = match proposed {
                Err(_) | Ok(Err(Rejected::Stopped(None))) => return Err(WriteError::NoLeader),
                Ok(Err(Rejected::Stopped(Some(cause)))) => return Err(WriteError::Stopped(cause)),
                Ok(Ok(Applied { index, result })) => {
                    self.count_apply();
                    return result
                        .map(|outcome| Written { index, outcome })
                        .map_err(WriteError::State);
                }
                Ok(Err(Rejected::NotLeader(leader))) => leader,
                Ok(Err(Rejected::Failed(m))) => return Err(WriteError::Rpc(m)),
            };
            if let Some(leader) = leader.filter(|l| l.addr != self.inner.me.addr) {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self
                    .inner
                    .client
                    .call::<_, Forwarded>(&leader.addr, "/write", &cmd, left)
                    .await
                {
                    Ok(Forwarded::Applied { index, result }) => {
                        // Answer once this replica has it too, so a client
                        // that reads here next sees its own write.
                        let _ = self
                            .inner
                            .raft
                            .wait(Some(left))
                            .applied_index_at_least(Some(index), "forwarded write")
                            .await;
                        return result
                            .map(|outcome| Written { index, outcome })
                            .map_err(WriteError::State);
                    }
                    Ok(Forwarded::NotLeader) => {}
                    Ok(Forwarded::Failed(m)) => return Err(WriteError::Rpc(m)),
                    Err(raft::network::CallError::Unreachable(_)) => {}
                    Err(raft::network::CallError::Failed(m)) => return Err(WriteError::Rpc(m)),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WriteError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `consul.raft.apply`: a command this leader committed.
    fn count_apply(&self) {
        self.inner
            .metrics
            .incr_counter(now_ms(), "consul.raft.apply", Default::default(), 1.0);
    }

    /// A write forwarded by a follower: proposed only if this node leads.
    pub async fn write_as_leader(&self, cmd: Command) -> Forwarded {
        match tokio::time::timeout(HOLD, self.inner.proposer.propose(cmd)).await {
            Err(_) => Forwarded::Failed("timed out waiting for the write to commit".into()),
            Ok(Ok(Applied { index, result })) => {
                self.count_apply();
                Forwarded::Applied { index, result }
            }
            Ok(Err(Rejected::NotLeader(_))) => Forwarded::NotLeader,
            Ok(Err(Rejected::Failed(m))) => Forwarded::Failed(m),
            Ok(Err(Rejected::Stopped(cause))) => Forwarded::Failed(cause.map_or_else(
                || "raft has stopped".into(),
                |c| format!("raft has stopped: {c}"),
            )),
        }
    }

    /// What `pilotfish info`'s raft section shows.
    pub fn raft_info(&self) -> RaftInfo {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<raft::NodeId> = membership.voter_ids().collect();
        let servers: Vec<(raft::NodeId, raft::Peer, bool)> = membership
            .nodes()
            .map(|(id, p)| (*id, p.clone(), voters.contains(id)))
            .collect();
        let me_voter = voters.contains(&self.inner.id);
        let last_log = self.inner.raft.data_metrics().borrow().last_log;
        let (last_log_index, last_log_term) = (
            last_log.map_or(0, |l| l.index),
            last_log.map_or(0, |l| l.leader_id.term),
        );
        let state = match m.state {
            openraft::ServerState::Leader => "Leader",
            openraft::ServerState::Candidate => "Candidate",
            openraft::ServerState::Follower | openraft::ServerState::Learner => "Follower",
            openraft::ServerState::Shutdown => "Shutdown",
        };
        let leader = m
            .current_leader
            .and_then(|id| membership.get_node(&id).cloned());
        let applied = m.last_applied.map_or(0, |l| l.index);
        RaftInfo {
            state,
            term: m.current_term,
            leader,
            last_log_index,
            last_log_term,
            applied_index: applied,
            commit_index: applied,
            last_snapshot_index: m.snapshot.map_or(0, |l| l.index),
            last_snapshot_term: m.snapshot.map_or(0, |l| l.leader_id.term),
            configuration_index: m.membership_config.log_id().map_or(0, |l| l.index),
            num_peers: if me_voter { voters.len() - 1 } else { 0 },
            servers,
            last_contact: if m.state == openraft::ServerState::Leader {
                Some(Duration::ZERO)
            } else {
                self.last_contact().map(|t| t.elapsed())
            },
        }
    }

    /// Stop raft (its log and state files are released once every handle
    /// is dropped). Without a leave: a restart rejoins with the same role.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!("stopping raft: {e}");
        }
    }

    /// Completes once raft has stopped on a storage failure, with its
    /// cause; the agent then exits (only `main` exits the process).
    pub async fn failed(&self) -> String {
        raft::failed(&self.inner.raft, &self.inner.fault).await
    }

    /// Ask the process running this node to leave and shut down.
    pub fn request_leave(&self) {
        self.inner.leave.cancel();
    }

    /// Completes once a leave was requested.
    pub async fn leave_requested(&self) {
        self.inner.leave.cancelled().await;
    }

    /// Completes once the graceful leave is done (or gave up).
    pub async fn left(&self) {
        self.inner.left.cancelled().await;
    }

    fn mark_left(&self) {
        self.inner.left.cancel();
    }
}
