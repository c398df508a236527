//! The server side of `/v1/operator` (consul-breadth.md §7): autopilot's
//! view of the servers (health from each server's own raft figures,
//! fetched over the cluster port), its dead-server cleanup run by the
//! leader, raft leadership transfer and peer removal through openraft,
//! and the keyring operations spread to every member.
//!
//! Cleanup (`prune`, raft-autopilot's `pruneDeadServers` for failed
//! servers): a server whose member has been `failed` for longer than
//! `ServerStabilizationTime` is force-left (the leader's reconciliation
//! then drops it from the catalog) and removed from the voters, as long as
//! that keeps a majority of the current voters and at least `MinQuorum`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::cluster::{Status, FAIL_AFTER};
use super::raft::{raft_id, NodeId, Peer};
use super::state::autopilot::AutopilotConfig;
use super::state::Command;
use super::Server;

/// How long one server gets to answer for its raft figures.
const STATS_TIMEOUT: Duration = Duration::from_millis(500);

/// One server's own raft figures (Consul's `Status.RaftStats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStats {
    pub term: u64,
    pub last_index: u64,
    /// Since this server last heard from a leader; 0 for the leader,
    /// `None` when it never did.
    pub last_contact_ms: Option<u64>,
}

/// Autopilot's view of one server.
#[derive(Debug, Clone)]
pub struct ServerHealth {
    pub peer: Peer,
    /// The member status (`alive`, `failed`, ...; `none` when unknown).
    pub serf_status: &'static str,
    pub leader: bool,
    pub voter: bool,
    pub stats: Option<RaftStats>,
    pub healthy: bool,
    pub stable_since: SystemTime,
}

/// Autopilot's view of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterHealth {
    pub servers: Vec<ServerHealth>,
    pub healthy: bool,
    pub failure_tolerance: u64,
    /// The same, counting every alive voter as healthy.
    pub optimistic_failure_tolerance: u64,
}

/// When each server's health last changed (`StableSince`).
#[derive(Default)]
pub struct Stability(Mutex<BTreeMap<String, (bool, SystemTime)>>);

impl Stability {
    fn since(&self, node_id: &str, healthy: bool, now: SystemTime) -> SystemTime {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(node_id.to_string()).or_insert((healthy, now));
        if entry.0 != healthy {
            *entry = (healthy, now);
        }
        entry.1
    }
}

/// `FailureTolerance`: healthy voters beyond a quorum.
fn tolerance(voters: usize, healthy_voters: usize) -> u64 {
    u64::try_from(healthy_voters.saturating_sub(voters / 2 + 1)).unwrap_or(0)
}

/// Whether a server is healthy by Consul's rules (§7.2), given the
/// leader's figures.
fn is_healthy(
    stats: Option<RaftStats>,
    alive: bool,
    leader: Option<RaftStats>,
    config: &AutopilotConfig,
) -> bool {
    let (Some(s), Some(l)) = (stats, leader) else {
        return false;
    };
    let threshold = config.last_contact_threshold_ns / 1_000_000;
    l.term != 0
        && l.last_index != 0
        && alive
        && s.last_contact_ms.is_some_and(|ms| ms <= threshold)
        && s.term == l.term
        && s.last_index.saturating_add(config.max_trailing_logs) >= l.last_index
}

/// A candidate for removal: its raft ID and whether it votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub voter: bool,
}

/// raft-autopilot's removal rules (§7.4) for failed servers: non-voters
/// first, then voters while a majority of the `voters` and `min_quorum`
/// remain. Answers the IDs to remove, in order.
pub fn prune(voters: usize, min_quorum: u64, failed: &[Candidate]) -> Vec<NodeId> {
    let mut removed = Vec::new();
    let mut potential = voters;
    for batch in [false, true] {
        let mut max_removal = potential.saturating_sub(1) / 2;
        for c in failed.iter().filter(|c| c.voter == batch) {
            if !c.voter {
                removed.push(c.id);
                continue;
            }
            let left = u64::try_from(potential.saturating_sub(1)).unwrap_or(0);
            if left < min_quorum || max_removal < 1 {
                continue;
            }
            removed.push(c.id);
            potential -= 1;
            max_removal -= 1;
        }
    }
    removed
}

/// The operations of `/v1/operator/keyring`, as sent to every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyringOp {
    List,
    Install(String),
    Use(String),
    Remove(String),
}

/// One member's answer to a keyring operation: its keys (primary first)
/// or why it failed.
pub type KeyringAnswer = Result<Vec<String>, String>;

/// The answers of one pool (serf's WAN pool: the servers; LAN: every
/// member), by node name.
#[derive(Debug, Clone)]
pub struct KeyringPool {
    pub wan: bool,
    pub answers: Vec<(String, KeyringAnswer)>,
}

/// Why a raft operation failed (Consul's texts where it has them).
#[derive(Debug, Clone, thiserror::Error)]
pub enum OperatorError {
    #[error("{what} {value:?} was not found in the Raft configuration")]
    NotFound { what: &'static str, value: String },
    #[error("{0}")]
    Raft(String),
}

impl Server {
    /// This server's raft figures.
    pub fn raft_stats(&self) -> RaftStats {
        let info = self.raft_info();
        RaftStats {
            term: info.term,
            last_index: info.last_log_index,
            last_contact_ms: info
                .last_contact
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The stored autopilot configuration, or Consul's defaults.
    pub fn autopilot_config(&self) -> AutopilotConfig {
        self.read(|s| s.autopilot().cloned()).unwrap_or_default()
    }

    /// Autopilot's health of every server in the raft configuration, from
    /// each one's own figures.
    pub async fn cluster_health(&self) -> ClusterHealth {
        let config = self.autopilot_config();
        let info = self.raft_info();
        let members = self.members().others();
        let mut calls = tokio::task::JoinSet::new();
        for (id, peer, _) in &info.servers {
            if *id == self.raft_id() {
                continue;
            }
            let (client, id, addr) = (self.client().clone(), *id, peer.addr.clone());
            calls.spawn(async move {
                let stats = client
                    .call::<_, RaftStats>(&addr, "/raft-stats", &(), STATS_TIMEOUT)
                    .await
                    .ok();
                (id, stats)
            });
        }
        let mut stats: BTreeMap<NodeId, RaftStats> =
            BTreeMap::from([(self.raft_id(), self.raft_stats())]);
        while let Some(joined) = calls.join_next().await {
            if let Ok((id, Some(s))) = joined {
                stats.insert(id, s);
            }
        }
        let leader_id = info.leader.as_ref().map(|p| raft_id(&p.node_id));
        let leader_stats = leader_id.and_then(|id| stats.get(&id).copied());
        let now = SystemTime::now();
        let servers: Vec<ServerHealth> = info
            .servers
            .iter()
            .map(|(id, peer, voter)| {
                let serf_status = if *id == self.raft_id() {
                    Status::Alive.name()
                } else {
                    members
                        .iter()
                        .find(|m| m.info.node_id == peer.node_id)
                        .map_or("none", |m| m.status.name())
                };
                let s = stats.get(id).copied();
                let healthy = is_healthy(s, serf_status == "alive", leader_stats, &config);
                ServerHealth {
                    peer: peer.clone(),
                    serf_status,
                    leader: Some(*id) == leader_id,
                    voter: *voter,
                    stats: s,
                    healthy,
                    stable_since: self.inner.stability.since(&peer.node_id, healthy, now),
                }
            })
            .collect();
        let voters = servers.iter().filter(|s| s.voter).count();
        let healthy_voters = servers.iter().filter(|s| s.voter && s.healthy).count();
        let alive_voters = servers
            .iter()
            .filter(|s| s.voter && s.serf_status == "alive")
            .count();
        ClusterHealth {
            healthy: servers.iter().all(|s| s.healthy),
            failure_tolerance: tolerance(voters, healthy_voters),
            optimistic_failure_tolerance: tolerance(voters, alive_voters),
            servers,
        }
    }

    /// The leader's autopilot round: store the default configuration once,
    /// then remove dead servers when `CleanupDeadServers` is on.
    pub(crate) async fn autopilot_round(&self) {
        let Some(config) = self.read(|s| s.autopilot().cloned()) else {
            let cmd = Command::AutopilotSet {
                config: AutopilotConfig::default(),
                cas: None,
            };
            if let Err(e) = self.write(cmd).await {
                tracing::debug!("storing the default autopilot configuration: {e}");
            }
            return;
        };
        if !config.cleanup_dead_servers {
            return;
        }
        let (voters, nodes): (BTreeSet<NodeId>, BTreeSet<NodeId>) = {
            let m = self.raft().metrics();
            let m = m.borrow();
            let mem = m.membership_config.membership();
            (
                mem.voter_ids().collect(),
                mem.nodes().map(|(id, _)| *id).collect(),
            )
        };
        let dead_after = FAIL_AFTER + Duration::from_nanos(config.server_stabilization_time_ns);
        let dead: Vec<(Candidate, String)> = self
            .members()
            .others()
            .into_iter()
            .filter(|m| m.info.server && m.status == Status::Failed)
            .filter(|m| m.silent_for() >= dead_after)
            .map(|m| (raft_id(&m.info.node_id), m.info.name))
            .filter(|(id, _)| nodes.contains(id))
            .map(|(id, name)| {
                (
                    Candidate {
                        id,
                        voter: voters.contains(&id),
                    },
                    name,
                )
            })
            .collect();
        if dead.is_empty() {
            return;
        }
        let candidates: Vec<Candidate> = dead.iter().map(|(c, _)| *c).collect();
        let doomed = prune(voters.len(), config.min_quorum, &candidates);
        for (c, name) in &dead {
            if !doomed.contains(&c.id) {
                tracing::debug!(
                    "keeping failed server {name}: removing it would leave too few voters"
                );
                continue;
            }
            tracing::info!("autopilot: attempting removal of failed server node {name}");
            self.force_leave(name);
            // Bounded: without a quorum the change never commits, and the
            // leader's loop must go on (check-quorum makes it step down).
            match tokio::time::timeout(super::HOLD, self.remove_server(c.id)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("autopilot: removing failed server {name}: {e}"),
                Err(_) => tracing::warn!(
                    "autopilot: removing failed server {name}: not committed within {:?}",
                    super::HOLD
                ),
            }
        }
    }

    /// Remove a server from raft (leader only): out of the voters, or out
    /// of the learners when it does not vote.
    pub(crate) async fn remove_server(&self, id: NodeId) -> Result<(), String> {
        let voter = {
            let m = self.raft().metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id)
        };
        let change = if voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft()
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// `DELETE /v1/operator/raft/peer`: the server with this raft ID
    /// (`by_id`) or `ip:port` address leaves the raft configuration.
    pub async fn remove_peer(&self, by_id: bool, value: &str) -> Result<(), OperatorError> {
        let info = self.raft_info();
        let found = info.servers.iter().find(|(_, p, _)| {
            if by_id {
                p.node_id == value
            } else {
                p.addr == value
            }
        });
        let Some((id, _, _)) = found else {
            return Err(OperatorError::NotFound {
                what: if by_id { "id" } else { "address" },
                value: value.to_string(),
            });
        };
        self.on_leader(
            "/remove",
            id,
            |s, id| async move { s.remove_server(id).await },
        )
        .await
    }

    /// Run `local` here when this node leads, else ask the leader over the
    /// cluster port at `path` (which runs the same).
    async fn on_leader<A, F, Fut>(&self, path: &str, arg: &A, local: F) -> Result<(), OperatorError>
    where
        A: Serialize + Clone,
        F: FnOnce(Server, A) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        if self.is_leader() {
            return local(self.clone(), arg.clone())
                .await
                .map_err(OperatorError::Raft);
        }
        let leader = self
            .leader()
            .ok_or_else(|| OperatorError::Raft("No cluster leader".to_string()))?;
        self.client()
            .call::<_, Result<(), String>>(&leader.addr, path, arg, super::HOLD)
            .await
            .map_err(|e| OperatorError::Raft(e.to_string()))?
            .map_err(OperatorError::Raft)
    }

    /// `POST /v1/operator/raft/transfer-leader[?id=]`: hand leadership to
    /// that voter (by node ID) or to the most up-to-date other voter.
    pub async fn transfer_leader(&self, id: Option<String>) -> Result<(), OperatorError> {
        if let Some(id) = &id {
            if !self
                .raft_info()
                .servers
                .iter()
                .any(|(_, p, v)| *v && p.node_id == *id)
            {
                return Err(OperatorError::NotFound {
                    what: "id",
                    value: id.clone(),
                });
            }
        }
        self.on_leader("/transfer-leader", &id, |s, id| async move {
            s.transfer_leadership(id).await
        })
        .await
    }

    /// The leader's half of a transfer. openraft 0.9 has no transfer, so
    /// the leader brings the target up to date, holds its heartbeats until
    /// the followers' leader lease has run out (they would refuse a vote
    /// before), and asks the target to campaign at once; the target wins
    /// before any other follower's election timer fires.
    pub(crate) async fn transfer_leadership(&self, id: Option<String>) -> Result<(), String> {
        let (target, target_peer) = {
            let m = self.raft().metrics();
            let m = m.borrow();
            let mem = m.membership_config.membership();
            let matched = |v: &NodeId| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(v).copied().flatten())
                    .map_or(0, |l| l.index)
            };
            let others: Vec<NodeId> = mem.voter_ids().filter(|v| *v != self.raft_id()).collect();
            let target = match &id {
                Some(id) => others
                    .iter()
                    .copied()
                    .find(|v| mem.get_node(v).is_some_and(|p| p.node_id == *id)),
                None => others.iter().copied().max_by_key(matched),
            };
            let target = target.ok_or_else(|| match &id {
                Some(id) if raft_id(id) == self.raft_id() => {
                    "cannot transfer leadership to itself".to_string()
                }
                _ => "cannot find peer: no other voter to transfer leadership to".to_string(),
            })?;
            (target, mem.get_node(&target).cloned().unwrap_or_default())
        };
        // The target has every entry this leader has.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let caught_up = {
                let m = self.raft().metrics();
                let m = m.borrow();
                let last = m.last_log_index.unwrap_or(0);
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&target).copied().flatten())
                    .is_some_and(|l| l.index >= last)
            };
            if caught_up {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "cannot transfer leadership: {} did not catch up with the log",
                    target_peer.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.raft().runtime_config().heartbeat(false);
        let moved = async {
            // The followers' lease of this leader is one election timeout
            // (the upper bound) after its last heartbeat.
            tokio::time::sleep(super::raft::ELECTION_MIN * 2 + Duration::from_millis(50)).await;
            self.client()
                .call::<_, ()>(&target_peer.addr, "/elect", &(), STATS_TIMEOUT)
                .await
                .map_err(|e| format!("asking {} to campaign: {e}", target_peer.name))?;
            let mut metrics = self.raft().metrics();
            tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    if metrics.borrow().current_leader == Some(target) {
                        return;
                    }
                    if metrics.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await
            .map_err(|_| format!("{} did not take over the leadership", target_peer.name))
        }
        .await;
        self.raft().runtime_config().heartbeat(true);
        if moved.is_ok() {
            tracing::info!("leadership transferred to {}", target_peer.name);
        }
        moved
    }

    /// A keyring operation on this node's own ring; changes are kept in
    /// the data dir's keyring file.
    pub fn keyring_local(&self, op: &KeyringOp) -> KeyringAnswer {
        let Some(ring) = &self.cluster().key else {
            return Err(super::raft::network::KeyringError::NotEnabled.to_string());
        };
        let changed = match op {
            KeyringOp::List => Ok(false),
            KeyringOp::Install(k) => ring.install(k).map(|()| true),
            KeyringOp::Use(k) => ring.use_key(k).map(|()| true),
            KeyringOp::Remove(k) => ring.remove(k).map(|()| true),
        };
        match changed {
            Err(super::raft::network::KeyringError::NotEnabled) if *op == KeyringOp::List => {
                return Err("Keyring is empty (encryption not enabled)".to_string());
            }
            Err(e) => return Err(e.to_string()),
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = self.save_keyring() {
                    tracing::warn!("{e}");
                }
            }
        }
        ring.list()
            .ok_or_else(|| "Keyring is empty (encryption not enabled)".to_string())
    }

    /// Write the keyring file (`<data-dir>/keyring.json`), temp + rename.
    fn save_keyring(&self) -> Result<(), String> {
        let (Some(dir), Some(ring)) = (&self.config().data_dir, &self.cluster().key) else {
            return Ok(());
        };
        let Some(keys) = ring.list() else {
            return Ok(());
        };
        let path = dir.join(KEYRING_FILE);
        let tmp = dir.join(format!("{KEYRING_FILE}.tmp"));
        let text = serde_json::to_vec(&keys).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("writing the keyring file {}: {e}", path.display()))
    }

    /// A keyring operation on every alive member (this one included), as
    /// serf's key manager does: the servers' (WAN) and everyone's (LAN)
    /// answers.
    pub async fn keyring(&self, op: KeyringOp) -> Vec<KeyringPool> {
        let me = self.members().me().clone();
        let mut answers: Vec<(String, bool, KeyringAnswer)> =
            vec![(me.name.clone(), me.server, self.keyring_local(&op))];
        let mut calls = tokio::task::JoinSet::new();
        for m in self.members().others() {
            if m.status != Status::Alive {
                continue;
            }
            let (client, op) = (self.client().clone(), op.clone());
            calls.spawn(async move {
                let answer = client
                    .call::<_, KeyringAnswer>(
                        &m.info.cluster_addr(),
                        "/keyring",
                        &op,
                        STATS_TIMEOUT,
                    )
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                (m.info.name, m.info.server, answer)
            });
        }
        while let Some(joined) = calls.join_next().await {
            if let Ok(a) = joined {
                answers.push(a);
            }
        }
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        let pool = |wan: bool| KeyringPool {
            wan,
            answers: answers
                .iter()
                .filter(|(_, server, _)| !wan || *server)
                .map(|(n, _, a)| (n.clone(), a.clone()))
                .collect(),
        };
        if me.server {
            vec![pool(true), pool(false)]
        } else {
            vec![pool(false)]
        }
    }
}

/// The keyring file in the data dir: the keys in base64, primary first.
/// Like serf's `local.keyring`, it wins over `--encrypt` at start.
pub const KEYRING_FILE: &str = "keyring.json";

/// Load the keyring file into `ring` if the data dir has one.
pub fn load_keyring(
    dir: &std::path::Path,
    ring: &super::raft::network::ClusterKey,
) -> Result<(), String> {
    let path = dir.join(KEYRING_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading the keyring file {}: {e}", path.display())),
    };
    let keys: Vec<String> = serde_json::from_slice(&text)
        .map_err(|e| format!("reading the keyring file {}: {e}", path.display()))?;
    ring.load(&keys)
        .map_err(|e| format!("the keyring file {}: {e}", path.display()))?;
    tracing::info!(
        "using the keyring in {} ({} keys); --encrypt is ignored while it exists",
        path.display(),
        keys.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: NodeId, voter: bool) -> Candidate {
        Candidate { id, voter }
    }

    #[test]
    fn prune_keeps_a_majority_and_the_min_quorum() {
        // One of three voters failed: removed.
        assert_eq!(prune(3, 0, &[c(2, true)]), vec![2]);
        // Two of three: at most one goes.
        assert_eq!(prune(3, 0, &[c(2, true), c(3, true)]), vec![2]);
        // MinQuorum 3 with three voters: none.
        assert!(prune(3, 3, &[c(2, true)]).is_empty());
        // Two voters: never below a majority.
        assert!(prune(2, 0, &[c(2, true)]).is_empty());
        // Five voters, two failed: both; non-voters always, first.
        assert_eq!(
            prune(5, 0, &[c(4, true), c(9, false), c(5, true)]),
            vec![9, 4, 5]
        );
        assert_eq!(prune(5, 4, &[c(4, true), c(5, true)]), vec![4]);
    }

    #[test]
    fn health_follows_consuls_rules() {
        let config = AutopilotConfig::default();
        let leader = RaftStats {
            term: 3,
            last_index: 500,
            last_contact_ms: Some(0),
        };
        let s = |term, last_index, contact| {
            Some(RaftStats {
                term,
                last_index,
                last_contact_ms: contact,
            })
        };
        assert!(is_healthy(s(3, 300, Some(50)), true, Some(leader), &config));
        assert!(!is_healthy(
            s(3, 249, Some(50)),
            true,
            Some(leader),
            &config
        ));
        assert!(!is_healthy(
            s(2, 500, Some(50)),
            true,
            Some(leader),
            &config
        ));
        assert!(!is_healthy(
            s(3, 500, Some(201)),
            true,
            Some(leader),
            &config
        ));
        assert!(!is_healthy(s(3, 500, None), true, Some(leader), &config));
        assert!(!is_healthy(
            s(3, 500, Some(0)),
            false,
            Some(leader),
            &config
        ));
        assert!(!is_healthy(None, true, Some(leader), &config));
        assert_eq!(tolerance(3, 3), 1);
        assert_eq!(tolerance(3, 2), 0);
        assert_eq!(tolerance(5, 5), 2);
    }
}
