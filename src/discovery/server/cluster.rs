//! Cluster membership and formation, in place of Consul's serf LAN pool:
//!
//! - [`Members`]: every agent this node knows (servers and clients), with
//!   Consul's member statuses. Each agent probes every other known agent
//!   over the cluster protocol every [`PROBE_EVERY`] and exchanges member
//!   lists with it, so a node that joins any member soon knows them all. A
//!   member that has not answered for [`FAIL_AFTER`] is `failed`; a member
//!   that announced its leave (or was `force-leave`d) is `left` until it
//!   comes back with a newer generation (a restart).
//! - Bootstrap (`--bootstrap-expect N`): once N servers know each other and
//!   none of them is in a cluster yet, the one with the lowest raft ID
//!   initialises raft with all of them. Only one node ever initialises, so
//!   start order cannot split the brain; a late server is added by the
//!   leader instead.
//! - The leader's reconciliation (Consul's `reconcileMember`): alive servers
//!   that are not voters are added (as learner, then voter); servers that
//!   left are removed from the voters; the catalog follows the members
//!   (alive: node registered with its tagged addresses, a server with its
//!   `consul` service, and a passing `serfHealth`; failed: critical; left:
//!   deregistered with its services).
//! - `--retry-join`: resolve each name to all its addresses on every
//!   attempt and probe them until one answers.
//!
//! The cluster port itself (both ends, and its authentication) is
//! `raft::network`; gossip and leave arrive there and are answered here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::http::agent::CONSUL_VERSION;
use super::raft::network::CallError;
use super::raft::{raft_id, NodeId, Peer};
use super::state::catalog::{Deregistration, NodeServices, Registration, Service};
use super::state::checks::CheckStatus;
use super::state::session::SERF_HEALTH;
use super::state::Command;
use super::{ClusterConfig, Server, ServerConfig};

/// How often every known member is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// A member silent for this long is `failed`.
pub const FAIL_AFTER: Duration = Duration::from_millis(2500);
/// One probe's deadline.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a leaving server tries to get out of the raft voters before it
/// stops anyway (Consul's servers do not leave on terminate at all; a leave
/// that cannot reach a quorum gives up).
pub const LEAVE_QUORUM_WAIT: Duration = Duration::from_secs(3);
/// Between two `--retry-join` rounds.
const RETRY_JOIN_EVERY: Duration = Duration::from_secs(1);
/// How often the leader reconciles members into raft and the catalog.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// The serfHealth output of a member that stopped answering (Consul's).
pub const SERF_FAILED_OUTPUT: &str = "Agent not live or unreachable";
/// The serfHealth output of a live member (Consul's).
pub const SERF_ALIVE_OUTPUT: &str = "Agent alive and reachable";

/// Consul's member statuses (`agent/members` `Status` numbers 1–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Alive,
    Leaving,
    Left,
    Failed,
}

impl Status {
    /// serf's numeric status.
    pub fn code(self) -> u8 {
        match self {
            Status::Alive => 1,
            Status::Leaving => 2,
            Status::Left => 3,
            Status::Failed => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }
}

/// What an agent tells others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub node_id: String,
    pub addr: IpAddr,
    /// The cluster protocol port (`--server-port`).
    pub port: u16,
    pub server: bool,
    pub datacenter: String,
    /// Start time (ms): a restarted agent has a newer generation.
    pub generation: u64,
}

impl MemberInfo {
    pub fn cluster_addr(&self) -> String {
        SocketAddr::new(self.addr, self.port).to_string()
    }

    pub fn peer(&self) -> Peer {
        Peer {
            name: self.name.clone(),
            node_id: self.node_id.clone(),
            addr: self.cluster_addr(),
        }
    }
}

/// A member as this node sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub info: MemberInfo,
    pub status: Status,
    last_ok: Instant,
    /// The member reported being part of a raft cluster.
    pub initialized: bool,
}

impl Member {
    /// How long since the member last answered.
    pub fn silent_for(&self) -> Duration {
        self.last_ok.elapsed()
    }
}

/// One gossip exchange, in both directions.
#[derive(Debug, Serialize, Deserialize)]
pub struct Gossip {
    pub from: MemberInfo,
    /// The sender belongs to a raft cluster (has a membership).
    pub initialized: bool,
    pub members: Vec<(MemberInfo, Status)>,
    /// The sender's user-event clock and recent event IDs (`events`).
    #[serde(default)]
    pub events: super::events::Digest,
    /// In an answer: the answerer's recent events the prober lacks.
    #[serde(default)]
    pub missing_events: Vec<crate::discovery::api::event::UserEvent>,
    /// The sender's network coordinate: the prober times the exchange and
    /// moves its own (`coordinate`). `default`: older agents send none.
    #[serde(default)]
    pub coord: Option<super::vivaldi::Coordinate>,
}

/// A member announcing its own leave, or a force-leave spreading.
#[derive(Debug, Serialize, Deserialize)]
pub struct Leave {
    pub name: String,
    pub generation: u64,
}

/// The membership view.
pub struct Members {
    me: MemberInfo,
    /// `me`'s generation: raised when this agent refutes a `left` others
    /// hold for it while it is alive (a force-leave, or autopilot's cleanup
    /// of a server that was only cut off), as serf refutes with a newer
    /// incarnation, so they take it back.
    generation: std::sync::atomic::AtomicU64,
    map: Mutex<BTreeMap<String, Member>>,
}

impl Members {
    pub fn new(cfg: &ServerConfig, cluster: &ClusterConfig, me: &Peer) -> Members {
        Members {
            me: MemberInfo {
                name: cfg.node.clone(),
                node_id: me.node_id.clone(),
                addr: cfg.advertise,
                port: cluster.server_port,
                server: cluster.server,
                datacenter: cfg.datacenter.clone(),
                generation: super::now_ms(),
            },
            generation: std::sync::atomic::AtomicU64::new(0),
            map: Mutex::new(BTreeMap::new()),
        }
    }

    /// This agent, with its current generation.
    pub fn me(&self) -> MemberInfo {
        let mut me = self.me.clone();
        me.generation = me
            .generation
            .max(self.generation.load(std::sync::atomic::Ordering::Relaxed));
        me
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Member>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every member, this node first.
    pub fn all(&self, leaving: bool) -> Vec<(MemberInfo, Status)> {
        let mut out = vec![(
            self.me(),
            if leaving {
                Status::Leaving
            } else {
                Status::Alive
            },
        )];
        out.extend(self.map().values().map(|m| (m.info.clone(), m.status)));
        out
    }

    /// Other members, with their state.
    pub fn others(&self) -> Vec<Member> {
        self.map().values().cloned().collect()
    }

    /// A member answered, or sent us gossip: it is alive, as described.
    fn heard_from(&self, info: &MemberInfo, initialized: bool) {
        if info.name == self.me.name {
            return;
        }
        let mut map = self.map();
        let now = Instant::now();
        match map.get_mut(&info.name) {
            Some(m) if m.info.generation > info.generation => {}
            Some(m) => {
                if m.info.generation < info.generation || m.status != Status::Left {
                    m.status = Status::Alive;
                }
                m.info = info.clone();
                m.last_ok = now;
                m.initialized = initialized;
            }
            None => {
                map.insert(
                    info.name.clone(),
                    Member {
                        info: info.clone(),
                        status: Status::Alive,
                        last_ok: now,
                        initialized,
                    },
                );
            }
        }
    }

    /// Merge another member's view: new members are added (and will be
    /// probed), restarts replace older generations, leaves spread. A `left`
    /// for this agent's own generation is refuted unless it is `leaving`.
    fn merge(&self, list: &[(MemberInfo, Status)], leaving: bool) {
        let mut map = self.map();
        for (info, status) in list {
            if info.name == self.me.name {
                let mine = self.me().generation;
                if !leaving && *status == Status::Left && info.generation >= mine {
                    let newer = super::now_ms().max(info.generation + 1);
                    self.generation
                        .store(newer, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        "refuting a leave: this agent is alive (generation {mine} → {newer})"
                    );
                }
                continue;
            }
            match map.get_mut(&info.name) {
                None => {
                    map.insert(
                        info.name.clone(),
                        Member {
                            info: info.clone(),
                            status: if *status == Status::Left {
                                Status::Left
                            } else {
                                Status::Alive
                            },
                            last_ok: Instant::now(),
                            initialized: false,
                        },
                    );
                }
                Some(m) if info.generation > m.info.generation => {
                    m.info = info.clone();
                    m.status = if *status == Status::Left {
                        Status::Left
                    } else {
                        Status::Alive
                    };
                    m.last_ok = Instant::now();
                }
                Some(m) if info.generation == m.info.generation && *status == Status::Left => {
                    m.status = Status::Left;
                }
                Some(_) => {}
            }
        }
    }

    /// A probe failed: `failed` once the member was silent for [`FAIL_AFTER`].
    fn probe_failed(&self, name: &str) {
        if let Some(m) = self.map().get_mut(name) {
            if matches!(m.status, Status::Alive | Status::Leaving)
                && m.last_ok.elapsed() >= FAIL_AFTER
            {
                tracing::info!("member {name} failed: no answer for {FAIL_AFTER:?}");
                m.status = Status::Failed;
            }
        }
    }

    /// Mark a member `left` (its own announcement or a force-leave).
    /// Answers whether the member was known.
    pub fn mark_left(&self, name: &str, generation: Option<u64>) -> bool {
        match self.map().get_mut(name) {
            Some(m) if generation.is_none_or(|g| g >= m.info.generation) => {
                if m.status != Status::Left {
                    tracing::info!("member {name} left");
                }
                m.status = Status::Left;
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The servers this node knows alive, itself included, with raft IDs.
    fn alive_servers(&self) -> Vec<(NodeId, Member)> {
        let mut out: Vec<(NodeId, Member)> = self
            .map()
            .values()
            .filter(|m| m.info.server && m.status == Status::Alive)
            .map(|m| (raft_id(&m.info.node_id), m.clone()))
            .collect();
        if self.me.server {
            out.push((
                raft_id(&self.me.node_id),
                Member {
                    info: self.me(),
                    status: Status::Alive,
                    last_ok: Instant::now(),
                    initialized: false,
                },
            ));
        }
        out
    }
}

/// The service every server is registered as (Consul's `consul`, ID and
/// name alike).
pub const CONSUL_SERVICE: &str = "consul";

/// A node's `TaggedAddresses` as Consul's agent sets them: `lan` and `wan`
/// (pilotfish advertises one address for both) and the `_ipv4` or `_ipv6`
/// pair of its family.
pub fn node_tagged_addresses(addr: IpAddr) -> BTreeMap<String, String> {
    let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
    ["lan", "wan"]
        .into_iter()
        .flat_map(|side| [side.to_string(), format!("{side}_{family}")])
        .map(|key| (key, addr.to_string()))
        .collect()
}

/// A server's `consul` service, as Consul's leader registers it: the
/// server's RPC port (here the cluster port), no tags, no address (the
/// node's is used), the serf and raft versions in `Meta`, no check of its
/// own (its health is the node's `serfHealth`).
pub fn consul_service(port: u16) -> Service {
    let meta = [
        ("non_voter", "false"),
        ("raft_version", "3"),
        ("read_replica", "false"),
        ("serf_protocol_current", "2"),
        ("serf_protocol_max", "5"),
        ("serf_protocol_min", "1"),
        ("version", CONSUL_VERSION),
    ];
    Service {
        meta: meta
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Service::new(CONSUL_SERVICE, CONSUL_SERVICE, port)
    }
}

/// The catalog registration of a member's node, with its tagged addresses
/// and, for a server, its `consul` service (serfHealth is added by the
/// state machine for a new node).
pub fn node_registration(info: &MemberInfo) -> Registration {
    Registration {
        node: info.name.clone(),
        node_id: info.node_id.clone(),
        address: info.addr.to_string(),
        tagged_addresses: node_tagged_addresses(info.addr),
        node_meta: Default::default(),
        skip_node_update: false,
        service: info.server.then(|| consul_service(info.port)),
        checks: Vec::new(),
    }
}

/// What the catalog must be told to hold `info` as an alive member: its
/// node (address and tagged addresses; other node meta is kept), its
/// `consul` service if it is a server, a passing `serfHealth`.
fn alive_member_command(
    info: &MemberInfo,
    node: Option<&NodeServices>,
    serf: Option<CheckStatus>,
) -> Option<Command> {
    let mut want = node_registration(info);
    let Some(have) = node else {
        return Some(Command::Register(want));
    };
    let node_current = have.node.address == want.address
        && have.node.id == want.node_id
        && have.node.tagged_addresses == want.tagged_addresses;
    let service_current = match &want.service {
        None => true,
        Some(s) => have.services.iter().any(|h| {
            *s == Service {
                create_index: 0,
                modify_index: 0,
                ..h.clone()
            }
        }),
    };
    if !node_current || !service_current {
        want.node_meta = have.node.meta.clone();
        want.skip_node_update = node_current;
        return Some(Command::Register(want));
    }
    (serf != Some(CheckStatus::Passing)).then(|| Command::UpdateCheck {
        node: info.name.clone(),
        check_id: SERF_HEALTH.to_string(),
        status: CheckStatus::Passing,
        output: SERF_ALIVE_OUTPUT.to_string(),
    })
}

impl Server {
    /// The gossip this node sends and answers with.
    fn gossip(&self) -> Gossip {
        Gossip {
            from: self.members().me().clone(),
            initialized: self.raft_initialized(),
            members: self.members().all(self.leaving()),
            events: self.event_digest(),
            missing_events: Vec::new(),
            coord: Some(self.coordinate()),
        }
    }

    /// Another member's gossip arrived: learn from it and answer with ours.
    pub(crate) fn answer_gossip(&self, g: &Gossip) -> Gossip {
        self.members().heard_from(&g.from, g.initialized);
        self.members().merge(&g.members, self.leaving());
        self.heard_events(&g.events, &g.missing_events);
        let mut answer = self.gossip();
        answer.missing_events = self.events_missing(&g.events);
        answer
    }

    /// A member announced its leave.
    pub(crate) fn heard_leave(&self, l: &Leave) {
        self.members().mark_left(&l.name, Some(l.generation));
    }

    fn leaving(&self) -> bool {
        self.inner.leave.is_cancelled()
    }

    /// Whether this node belongs to a raft cluster (has a membership).
    pub fn raft_initialized(&self) -> bool {
        let m = self.raft().metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some()
    }

    /// Exchange member lists with the agent at `addr` (`ip:port`).
    pub async fn probe(&self, addr: &str) -> Result<(), CallError> {
        let gossip = self.gossip();
        let sent = Instant::now();
        let answer: Gossip = self
            .client()
            .call(addr, "/gossip", &gossip, PROBE_TIMEOUT)
            .await?;
        if let Some(theirs) = &answer.coord {
            self.observe_rtt(&answer.from.name, theirs, sent.elapsed());
        }
        self.members().heard_from(&answer.from, answer.initialized);
        self.members().merge(&answer.members, self.leaving());
        self.heard_events(&answer.events, &answer.missing_events);
        Ok(())
    }

    /// Join the agents at these addresses; answers how many answered and
    /// the errors of the others (Consul's `Failed to join <ip>: ...`).
    pub async fn join(&self, targets: &[SocketAddr]) -> (usize, Vec<String>) {
        let mut ok = 0;
        let mut errors = Vec::new();
        for t in targets {
            if t.to_string() == self.peer().addr {
                // Joining yourself is harmless (Consul: a no-op success).
                ok += 1;
                continue;
            }
            match self.probe(&t.to_string()).await {
                Ok(()) => ok += 1,
                Err(e) => errors.push(format!("Failed to join {}: {e}", t.ip())),
            }
        }
        (ok, errors)
    }

    /// Announce this node's leave to every member, and as a voter ask the
    /// leader to remove it from the voters first so the others keep quorum.
    /// Bounded: a server that cannot get its removal committed within
    /// [`LEAVE_QUORUM_WAIT`] (no leader, no quorum) gives up, says so, and
    /// still tells the members, so SIGTERM always ends the process.
    pub async fn leave_cluster(&self) {
        if self.cluster().server && self.raft_initialized() {
            let deadline = Instant::now() + LEAVE_QUORUM_WAIT;
            if tokio::time::timeout_at(deadline, self.leave_voters())
                .await
                .is_err()
            {
                tracing::warn!(
                    "could not leave the raft voters within {LEAVE_QUORUM_WAIT:?} (no leader or no quorum reachable); \
                     stopping anyway: once a quorum is back, remove this server with `pilotfish force-leave {}` or restart it",
                    self.members().me().name
                );
            }
        }
        let leave = std::sync::Arc::new(Leave {
            name: self.members().me().name.clone(),
            generation: self.members().me().generation,
        });
        // Tell every member at once: a dead one costs one timeout, not one each.
        let mut calls = tokio::task::JoinSet::new();
        for m in self.members().others() {
            if m.status == Status::Left {
                continue;
            }
            let (client, leave) = (self.client().clone(), leave.clone());
            calls.spawn(async move {
                let _ = client
                    .call::<_, ()>(&m.info.cluster_addr(), "/leave", &*leave, PROBE_TIMEOUT)
                    .await;
            });
        }
        while calls.join_next().await.is_some() {}
        tracing::info!("Graceful leave complete");
        self.mark_left();
    }

    /// Ask the leader (or as the leader, raft) to take this server out of
    /// the voters; retried until it is out or it is the last voter.
    async fn leave_voters(&self) {
        let id = self.raft_id();
        loop {
            let voters: BTreeSet<NodeId> = {
                let m = self.raft().metrics();
                let m = m.borrow();
                m.membership_config.membership().voter_ids().collect()
            };
            if !voters.contains(&id) || voters.len() == 1 {
                return;
            }
            let removed = if self.is_leader() {
                self.remove_voter(id).await
            } else if let Some(leader) = self.leader() {
                self.client()
                    .call::<_, Result<(), String>>(&leader.addr, "/remove", &id, LEAVE_QUORUM_WAIT)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
            } else {
                Err("no leader".to_string())
            };
            match removed {
                Ok(()) => {
                    tracing::info!("removed this server from the raft voters");
                    return;
                }
                Err(e) => {
                    tracing::debug!("leaving raft: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Remove a voter (leader only): Consul's `raft remove-peer`.
    pub(crate) async fn remove_voter(&self, id: NodeId) -> Result<(), String> {
        self.raft()
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// `force-leave <node>`: mark a failed member left; the leader removes
    /// it from raft and the catalog, and gossip spreads the leave.
    pub fn force_leave(&self, node: &str) -> bool {
        self.members().mark_left(node, None)
    }
}

/// Probe every known member forever (until `shutdown`).
pub async fn probe_loop(server: Server, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let targets: Vec<Member> = server
            .members()
            .others()
            .into_iter()
            .filter(|m| m.status != Status::Left)
            .collect();
        let mut probes = tokio::task::JoinSet::new();
        for m in targets {
            let server = server.clone();
            probes.spawn(async move {
                if server.probe(&m.info.cluster_addr()).await.is_err() {
                    server.members().probe_failed(&m.info.name);
                }
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

/// Resolve `--retry-join` targets: IPs as they are, names to every A/AAAA
/// record (fresh on every call), `host:port` or our own server port.
pub async fn resolve_targets(
    targets: &[String],
    port: u16,
    resolver: Option<SocketAddr>,
) -> (Vec<SocketAddr>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for t in targets {
        let (host, p) = split_host_port(t, port);
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, p));
            continue;
        }
        match crate::discovery::resolve::resolve_all(&host, resolver).await {
            Ok(ips) if !ips.is_empty() => {
                out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, p)))
            }
            Ok(_) => errors.push(format!("Failed to resolve {host}: no addresses")),
            Err(e) => errors.push(format!("Failed to resolve {host}: {e}")),
        }
    }
    (out, errors)
}

/// `host[:port]` or `[v6]:port`, defaulting to `port`.
pub fn split_host_port(addr: &str, port: u16) -> (String, u16) {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(port);
            return (h.to_string(), port);
        }
    }
    if addr.parse::<IpAddr>().is_ok() {
        return (addr.to_string(), port);
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap_or(port)),
        _ => (addr.to_string(), port),
    }
}

/// `--retry-join`: keep trying every second until one target answers.
pub async fn retry_join(server: Server, shutdown: CancellationToken) {
    let targets = server.cluster().retry_join.clone();
    if targets.is_empty() {
        return;
    }
    let port = server.cluster().server_port;
    let resolver = server.cluster().resolver;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let (addrs, mut errors) = resolve_targets(&targets, port, resolver).await;
        let (ok, join_errors) = server.join(&addrs).await;
        errors.extend(join_errors);
        let me_listed = addrs.iter().any(|a| a.to_string() == server.peer().addr);
        let others_ok = ok - usize::from(me_listed);
        if others_ok > 0 {
            tracing::info!("Join cluster completed. Synced with {others_ok} initial agents");
            return;
        }
        if attempt == 1 || attempt % 10 == 0 {
            tracing::warn!(
                "Join cluster failed, will retry in {RETRY_JOIN_EVERY:?}: {}",
                errors.join("; ")
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY_JOIN_EVERY) => {}
        }
    }
}

/// `--bootstrap-expect N`: bootstrap once N servers know each other (see
/// the module doc); returns when this node belongs to a cluster.
pub async fn bootstrap(server: Server, shutdown: CancellationToken) {
    let expect = usize::try_from(server.cluster().bootstrap_expect).unwrap_or(usize::MAX);
    loop {
        if server.raft_initialized() {
            return;
        }
        if expect > 1 {
            let servers = server.members().alive_servers();
            let joined_cluster = servers.iter().any(|(_, m)| m.initialized);
            let lowest = servers.iter().map(|(id, _)| *id).min();
            if servers.len() >= expect && !joined_cluster && lowest == Some(server.raft_id()) {
                let voters: Vec<(NodeId, Peer)> =
                    servers.iter().map(|(id, m)| (*id, m.info.peer())).collect();
                let names: Vec<&str> = servers.iter().map(|(_, m)| m.info.name.as_str()).collect();
                tracing::info!(
                    "bootstrapping the cluster with {} servers: {}",
                    voters.len(),
                    names.join(", ")
                );
                if let Err(e) = server.bootstrap(voters).await {
                    tracing::warn!("bootstrap: {e}");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The leader's duties: reconcile members into raft and the catalog, reset
/// session timers once per leadership (Consul restarts every TTL then).
pub async fn leader_loop(server: Server, shutdown: CancellationToken) {
    let mut metrics = server.raft().metrics();
    let mut was_leader = false;
    loop {
        let leader = server.is_leader();
        if leader && !was_leader {
            tracing::info!("cluster leadership acquired");
            if let Err(e) = server.write(Command::ResetSessionTimers).await {
                tracing::warn!("resetting session timers: {e}");
            }
        } else if !leader && was_leader {
            tracing::info!("cluster leadership lost");
        }
        was_leader = leader;
        if leader {
            reconcile(&server).await;
            server.autopilot_round().await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = metrics.changed() => if r.is_err() { return },
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
    }
}

/// Whether raft knows node `id` at another address than the one it gossips
/// from now (a container restarted on its volume with a new address).
fn moved(nodes: &BTreeMap<NodeId, Peer>, id: NodeId, info: &MemberInfo) -> bool {
    nodes
        .get(&id)
        .is_some_and(|p| p.node_id == info.node_id && p.addr != info.peer().addr)
}

/// Point raft at a member's new address. Safe with `SetNodes` because the
/// raft ID is derived from the node ID the member persisted in its data
/// dir, and `moved` checked that the node ID matches: the same node, moved.
async fn readdress(server: &Server, id: NodeId, info: &MemberInfo) {
    let peer = info.peer();
    tracing::info!("{} moved: raft reaches it at {} now", info.name, peer.addr);
    if let Err(e) = server
        .raft()
        .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, peer)])), false)
        .await
    {
        tracing::debug!("updating the address of {}: {e}", info.name);
    }
}

/// One reconciliation round (leader only).
async fn reconcile(server: &Server) {
    let (voters, nodes): (BTreeSet<NodeId>, BTreeMap<NodeId, Peer>) = {
        let m = server.raft().metrics();
        let m = m.borrow();
        let mem = m.membership_config.membership();
        (
            mem.voter_ids().collect(),
            mem.nodes().map(|(id, p)| (*id, p.clone())).collect(),
        )
    };
    let members = server.members().others();
    // Raft: add alive servers, remove servers that left.
    for m in members.iter().filter(|m| m.info.server) {
        let id = raft_id(&m.info.node_id);
        match m.status {
            Status::Alive if !voters.contains(&id) => {
                tracing::info!(
                    "adding server {} ({}) to raft",
                    m.info.name,
                    m.info.cluster_addr()
                );
                let added = tokio::time::timeout(
                    Duration::from_secs(10),
                    server.raft().add_learner(id, m.info.peer(), true),
                )
                .await;
                if !matches!(added, Ok(Ok(_))) {
                    tracing::debug!(
                        "adding {} as a learner did not finish; next round",
                        m.info.name
                    );
                    continue;
                }
                if let Err(e) = server
                    .raft()
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                {
                    tracing::debug!("promoting {}: {e}", m.info.name);
                }
            }
            Status::Alive if moved(&nodes, id, &m.info) => readdress(server, id, &m.info).await,
            Status::Left if voters.contains(&id) || nodes.contains_key(&id) => {
                tracing::info!("removing server {} from raft: it left", m.info.name);
                if let Err(e) = server
                    .raft()
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                {
                    tracing::debug!("removing {}: {e}", m.info.name);
                }
            }
            _ => {}
        }
    }
    // Client agents: non-voting learners, so they hold a replica to serve
    // reads and DNS from and forward their writes to the leader.
    for m in members.iter().filter(|m| !m.info.server) {
        let id = raft_id(&m.info.node_id);
        match m.status {
            Status::Alive if !nodes.contains_key(&id) => {
                tracing::info!(
                    "adding client {} ({}) as a learner",
                    m.info.name,
                    m.info.cluster_addr()
                );
                if let Err(e) = server.raft().add_learner(id, m.info.peer(), false).await {
                    tracing::debug!("adding client {}: {e}", m.info.name);
                }
            }
            Status::Alive if moved(&nodes, id, &m.info) => readdress(server, id, &m.info).await,
            Status::Left if nodes.contains_key(&id) => {
                if let Err(e) = server
                    .raft()
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await
                {
                    tracing::debug!("removing client {}: {e}", m.info.name);
                }
            }
            _ => {}
        }
    }
    // Catalog: follow the members (and this node).
    let mut all: Vec<(crate::discovery::server::cluster::MemberInfo, Status)> =
        members.iter().map(|m| (m.info.clone(), m.status)).collect();
    all.push((server.members().me().clone(), Status::Alive));
    for (info, status) in all {
        let (node, serf) = server.read(|s| {
            (
                s.catalog_node(&info.name).0,
                s.check(&info.name, SERF_HEALTH).map(|c| c.status),
            )
        });
        let present = node.is_some();
        let cmd = match status {
            Status::Alive | Status::Leaving => alive_member_command(&info, node.as_ref(), serf),
            Status::Failed => {
                (present && serf != Some(CheckStatus::Critical)).then(|| Command::UpdateCheck {
                    node: info.name.clone(),
                    check_id: SERF_HEALTH.to_string(),
                    status: CheckStatus::Critical,
                    output: SERF_FAILED_OUTPUT.to_string(),
                })
            }
            Status::Left => present.then(|| {
                Command::Deregister(Deregistration {
                    node: info.name.clone(),
                    service_id: None,
                    check_id: None,
                })
            }),
        };
        if let Some(cmd) = cmd {
            if let Err(e) = server.write(cmd).await {
                tracing::debug!("catalog reconcile of {}: {e}", info.name);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info(name: &str, generation: u64) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            node_id: format!("{:08x}-0000-4000-8000-000000000000", name.len()),
            addr: IpAddr::from([127, 0, 0, 2]),
            port: 8300,
            server: true,
            datacenter: "dc1".into(),
            generation,
        }
    }

    fn members() -> Members {
        Members::new(
            &ServerConfig {
                node: "me".into(),
                ..ServerConfig::default()
            },
            &ClusterConfig::lone(),
            &Peer {
                name: "me".into(),
                node_id: "00000001-0000-4000-8000-000000000000".into(),
                addr: "127.0.0.1:8300".into(),
            },
        )
    }

    fn status(m: &Members, name: &str) -> Option<Status> {
        m.others()
            .into_iter()
            .find(|x| x.info.name == name)
            .map(|x| x.status)
    }

    #[test]
    fn gossip_spreads_members_leaves_and_restarts() {
        let m = members();
        m.merge(
            &[
                (info("a", 1), Status::Alive),
                (info("me", 1), Status::Failed),
            ],
            false,
        );
        assert_eq!(status(&m, "a"), Some(Status::Alive));
        assert_eq!(m.others().len(), 1, "never lists itself");
        // A leave of the same generation spreads; an older one does not.
        m.merge(&[(info("a", 0), Status::Left)], false);
        assert_eq!(status(&m, "a"), Some(Status::Alive));
        m.merge(&[(info("a", 1), Status::Left)], false);
        assert_eq!(status(&m, "a"), Some(Status::Left));
        // Hearing from a left member of the same generation keeps it left;
        // a restart (newer generation) brings it back.
        m.heard_from(&info("a", 1), true);
        assert_eq!(status(&m, "a"), Some(Status::Left));
        m.heard_from(&info("a", 2), true);
        assert_eq!(status(&m, "a"), Some(Status::Alive));
    }

    #[test]
    fn an_alive_agent_refutes_a_leave_unless_it_is_leaving() {
        let m = members();
        let mine = m.me().generation;
        // Others say it left (a force-leave, autopilot's cleanup of a server
        // that was only cut off): it answers with a newer generation.
        m.merge(&[(info("me", mine), Status::Left)], false);
        let refuted = m.me().generation;
        assert!(refuted > mine);
        assert_eq!(m.all(false)[0].0.generation, refuted);
        // An older leave, or its own while leaving, changes nothing.
        m.merge(&[(info("me", mine), Status::Left)], false);
        assert_eq!(m.me().generation, refuted);
        m.merge(&[(info("me", refuted), Status::Left)], true);
        assert_eq!(m.me().generation, refuted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_member_fails_only_after_the_grace() {
        let m = members();
        m.heard_from(&info("b", 1), false);
        m.probe_failed("b");
        assert_eq!(status(&m, "b"), Some(Status::Alive));
        tokio::time::advance(FAIL_AFTER).await;
        m.probe_failed("b");
        assert_eq!(status(&m, "b"), Some(Status::Failed));
        m.heard_from(&info("b", 1), false);
        assert_eq!(status(&m, "b"), Some(Status::Alive));
    }

    #[test]
    fn join_addresses_split_like_consul() {
        assert_eq!(split_host_port("10.0.0.1", 8300), ("10.0.0.1".into(), 8300));
        assert_eq!(
            split_host_port("10.0.0.1:9000", 8300),
            ("10.0.0.1".into(), 9000)
        );
        assert_eq!(split_host_port("consul", 8300), ("consul".into(), 8300));
        assert_eq!(split_host_port("[::1]:8301", 8300), ("::1".into(), 8301));
        assert_eq!(split_host_port("::1", 8300), ("::1".into(), 8300));
    }

    #[test]
    fn an_alive_server_gets_its_node_addresses_consul_service_and_passing_serf_health() {
        let me = info("s1", 1);
        assert!(me.server);
        let Some(Command::Register(reg)) = alive_member_command(&me, None, None) else {
            panic!("a new member is registered");
        };
        assert_eq!(reg.tagged_addresses["wan_ipv4"], me.addr.to_string());
        assert_eq!(reg.tagged_addresses.len(), 4);
        let service = reg.service.clone().unwrap();
        assert_eq!((service.id.as_str(), service.port), ("consul", me.port));
        assert_eq!(service.meta["raft_version"], "3");
        // Registered and passing: nothing to do.
        let mut node = super::super::state::catalog::Node {
            name: reg.node.clone(),
            id: reg.node_id.clone(),
            address: reg.address.clone(),
            tagged_addresses: reg.tagged_addresses.clone(),
            meta: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
            create_index: 1,
            modify_index: 1,
        };
        let have = NodeServices {
            node: node.clone(),
            services: vec![service.clone()],
        };
        assert_eq!(
            alive_member_command(&me, Some(&have), Some(CheckStatus::Passing)),
            None
        );
        assert!(matches!(
            alive_member_command(&me, Some(&have), Some(CheckStatus::Critical)),
            Some(Command::UpdateCheck {
                status: CheckStatus::Passing,
                ..
            })
        ));
        // The service lost (a restored snapshot): put back without touching the node.
        let bare = NodeServices {
            node: node.clone(),
            services: Vec::new(),
        };
        let Some(Command::Register(r)) = alive_member_command(&me, Some(&bare), None) else {
            panic!("the consul service is registered again");
        };
        assert!(r.skip_node_update && r.service.is_some());
        // A new address: the node is updated, its other meta kept.
        node.address = "10.9.9.9".into();
        let moved = NodeServices {
            node,
            services: vec![service],
        };
        let Some(Command::Register(r)) = alive_member_command(&me, Some(&moved), None) else {
            panic!("the node is registered again");
        };
        assert!(!r.skip_node_update);
        assert_eq!(r.node_meta["rack"], "r1");
        // A client agent has no consul service.
        let mut client = info("c1", 1);
        client.server = false;
        let Some(Command::Register(r)) = alive_member_command(&client, None, None) else {
            panic!("a new client is registered");
        };
        assert!(r.service.is_none());
    }
}
