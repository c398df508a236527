//! When to take a snapshot: once the log entries since the last one hold
//! more than a number of bytes (`--raft-snapshot-threshold-bytes`, 64 MiB
//! by default), counted as their JSON in the log. An entry is a
//! group-committed batch of any number of writes of any size, so an entry
//! count (openraft's only policy, left off) says little about how much
//! state only the log holds or how long a restart replays. Every node
//! counts its own log, so followers and learners take snapshots (and purge
//! their logs) as the leader does; openraft keeps the last 1024 entries a
//! snapshot covers for followers a little behind.

use super::log_store::Growth;
use super::Raft;

/// The default of `--raft-snapshot-threshold-bytes`: the bytes of log
/// entries after which a snapshot is taken. A restart replays at most
/// about this much log; with `--dev`, where entries stay in memory, it
/// bounds their memory too.
pub const SNAPSHOT_THRESHOLD: u64 = 64 << 20;

/// Trigger a snapshot each time the log has taken in `threshold` more
/// bytes than at the last one. `raft` hands out the node's raft while the
/// node is there (so this task does not keep it alive); the task ends once
/// the log is closed or raft is gone.
pub async fn run<F: Fn() -> Option<Raft>>(mut growth: Growth, threshold: u64, raft: F) {
    let mut last = growth.at_snapshot();
    while let Some(total) = growth.reached(last.saturating_add(threshold)).await {
        last = total;
        let Some(raft) = raft() else { return };
        tracing::debug!("the raft log grew by {threshold} bytes or more: taking a snapshot");
        // openraft ignores this while a snapshot is being built; the next
        // threshold then triggers the next one.
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}
