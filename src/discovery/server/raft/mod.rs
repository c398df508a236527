//! Replication of the server's command log with openraft: the type
//! configuration, the durable log (`log_store`), the state machine adapter
//! over the shared [`State`](super::state::State) (`state_machine`), its
//! snapshot file (`snapshot_file`), when to take a snapshot
//! (`compaction`) and the server-to-server transport (`network`).
//!
//! Every write is a [`Proposal`]: commands plus the leader's clock, so
//! that applying them is deterministic on every replica. Concurrent writes
//! share one proposal (`propose`, group commit). Blank and membership
//! entries use log indexes too; the state machine simply skips them, which
//! is why Consul-visible indexes can have gaps (clients never rely on them
//! being dense).

pub mod compaction;
pub mod log_store;
pub mod network;
pub mod propose;
pub mod snapshot_file;
pub mod state_machine;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::{Command, CommandResult};

/// A raft node's identity: derived from the node ID (a UUID), see [`raft_id`].
pub type NodeId = u64;

/// A server as raft knows it: enough to reach it and to show it the way
/// Consul does (`operator/raft/configuration`, `status/peers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The node name (`--node`).
    pub name: String,
    /// The node ID (a UUID string), Consul's raft server ID.
    pub node_id: String,
    /// `<advertise>:<server-port>`: raft RPCs and the cluster protocol.
    pub addr: String,
}

impl Peer {
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.addr.parse().ok()
    }
}

/// One log entry's payload: commands, applied in order at the entry's
/// index, and the proposer's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub now_ms: u64,
    pub cmds: Vec<Command>,
}

openraft::declare_raft_types!(
    /// pilotfish's raft types.
    pub TypeConfig:
        D = Proposal,
        R = Vec<CommandResult>,
        NodeId = NodeId,
        Node = Peer,
        SnapshotData = snapshot_file::SnapshotBody,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Membership = openraft::StoredMembership<NodeId, Peer>;
pub type StorageError = openraft::StorageError<NodeId>;

/// How often the leader sends heartbeats (openraft ticks every 1.5 times
/// this, so they go out every 75 ms).
pub const HEARTBEAT: Duration = Duration::from_millis(50);
/// The election timeout is drawn between this and twice this. An openraft
/// 0.9 follower waits a leader lease (the upper bound) plus that timeout
/// after the last heartbeat before it campaigns: 600 to 800 ms, against
/// etcd's default 1 s election timeout. Five heartbeats fit in a lease, and
/// an fsync here takes a few ms, so elections don't flap under write load.
pub const ELECTION_MIN: Duration = Duration::from_millis(200);
/// A leader that no quorum acknowledged for this long gives up (see
/// `Server::check_quorum`): the lease plus the shortest election timeout,
/// the silence after which its followers would campaign themselves. Shorter
/// made a leader on this 2-core test machine give up under write load
/// while a compiler kept the disk busy (fsync stalls of several hundred ms).
pub const CHECK_QUORUM: Duration = Duration::from_millis(600);

/// The openraft configuration every server uses.
pub fn config() -> openraft::Config {
    openraft::Config {
        cluster_name: "pilotfish".to_string(),
        heartbeat_interval: millis_u64(HEARTBEAT),
        election_timeout_min: millis_u64(ELECTION_MIN),
        election_timeout_max: millis_u64(ELECTION_MIN) * 2,
        install_snapshot_timeout: 5_000,
        max_payload_entries: 512,
        // Snapshots are taken by log size, not entry count (`compaction`).
        snapshot_policy: openraft::SnapshotPolicy::Never,
        // Kept after a snapshot so that a follower a little behind catches
        // up from the log rather than with a whole snapshot.
        max_in_snapshot_log_to_keep: 1024,
        purge_batch_size: 256,
        ..openraft::Config::default()
    }
}

pub fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The first storage failure of a node (its raft log, `meta.json`, its
/// snapshot file), kept so that it is named once. openraft 0.9 stops its
/// core on any storage error, and the node cannot go on without it, so the
/// agent exits with this cause (a supervisor restarts it once the cause,
/// say a full disk, is gone); meanwhile writes answer with it instead of
/// `No cluster leader`. openraft is handed a short text that points here,
/// so its own error lines don't repeat the cause.
#[derive(Clone, Default)]
pub struct Fault(Arc<Mutex<Option<String>>>);

impl Fault {
    /// Keep `cause`, unless an earlier failure is kept: the first one is
    /// what went wrong, later ones follow from it.
    pub fn record(&self, cause: String) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.is_none() {
            *kept = Some(cause);
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An I/O error on `path` as a user should read it: a full disk says
/// `no space left on device at <path>`, the words people search for.
pub fn io_at(path: &Path, e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) {
        format!("no space left on device at {}", path.display())
    } else {
        format!("{}: {e}", path.display())
    }
}

/// Completes once raft's core has stopped on an error (never when it is
/// shut down normally), with the cause: the [`Fault`] kept, or openraft's
/// own error when no store failure was kept.
pub async fn failed(raft: &Raft, fault: &Fault) -> String {
    let mut metrics = raft.metrics();
    loop {
        let stopped = match &metrics.borrow().running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = stopped {
            return fault.get().unwrap_or_else(|| format!("raft stopped: {e}"));
        }
        if metrics.changed().await.is_err() {
            // The core is gone without an error in its metrics: a normal
            // shutdown, unless a store failure was kept.
            match fault.get() {
                Some(cause) => return cause,
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// The raft ID of a node: the first 8 bytes of its UUID node ID (never 0).
pub fn raft_id(node_id: &str) -> NodeId {
    let hex: String = node_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    u64::from_str_radix(&hex, 16).unwrap_or(0).max(1)
}

/// A fresh random UUID (version 4) for a new node.
pub fn new_node_id() -> String {
    let mut v: [u8; 16] = rand::random();
    v[6] = (v[6] & 0x0f) | 0x40;
    v[8] = (v[8] & 0x3f) | 0x80;
    let s: String = v.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_uuids_and_map_to_nonzero_raft_ids() {
        let id = new_node_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(raft_id(&id), 0);
        assert_eq!(
            raft_id("0123abcd-0000-4000-8000-000000000000"),
            0x0123_abcd_0000_4000
        );
        assert_eq!(raft_id("00000000-0000-0000-0000-000000000000"), 1);
    }
}
