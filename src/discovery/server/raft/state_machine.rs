//! openraft's state machine over the node's shared [`Replica`]: committed
//! entries are applied in log order to the deterministic
//! [`State`](crate::discovery::server::state::State), then the blocking
//! queries whose index moved are woken.
//!
//! Snapshots: the whole state with openraft's snapshot metadata, in a file
//! (`snapshot_file`: `<data-dir>/raft-snapshot`, or an anonymous
//! temporary file with `--dev`), never in memory. A build streams the
//! state's JSON straight from the replica into the file under the
//! replica's read lock (applying entries waits for it; it is logged how
//! long), then fsyncs and renames it without the lock. openraft then
//! purges the log entries the snapshot covers (`compaction` says when a
//! snapshot is taken). At start the snapshot is loaded and openraft
//! replays the log after it. One snapshot file is written at a time,
//! built or installed, so a build never reads a replica older than an
//! installed snapshot and never puts its file over that one.

// openraft's storage and RPC traits dictate their (large) error types.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError, StoredMembership,
};

use super::snapshot_file::{self, Draft, Loaded, Meta, SnapshotBody, SnapshotFile};
use super::{Entry, Fault, LogId, Membership, StorageError, TypeConfig};
use crate::discovery::server::state::kv::KvChanges;
use crate::discovery::server::state::{self, CommandResult, State};
use crate::discovery::server::{blocking, Replica, Shared};

/// The state machine openraft drives.
pub struct StateMachine {
    shared: Arc<Shared>,
    snapshots: Arc<Snapshots>,
}

/// Builds snapshots from the shared replica, off the apply path.
pub struct Builder {
    shared: Arc<Shared>,
    snapshots: Arc<Snapshots>,
}

/// Where a node's snapshots go, and the current one.
struct Snapshots {
    /// The data dir (`None`: `--dev`).
    dir: Option<PathBuf>,
    /// Held while a snapshot file is written, built or installed.
    writing: Mutex<()>,
    current: Mutex<Option<SnapshotFile>>,
    fault: Fault,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sm_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO {
        source: StorageIOError::write_state_machine(AnyError::error(e.to_string())),
    }
}

fn snap_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO {
        source: StorageIOError::write_snapshot(None, AnyError::error(e.to_string())),
    }
}

impl StateMachine {
    /// The state machine over `shared`, loading `<dir>/raft-snapshot` (or
    /// an earlier build's `raft-snapshot.json`, rewritten at once in this
    /// build's format) into it when there is one. A damaged snapshot is an
    /// error naming the file, never half-loaded. Storage failures are kept
    /// in `fault`.
    pub(crate) fn open(
        shared: Arc<Shared>,
        dir: Option<&Path>,
        fault: Fault,
    ) -> Result<StateMachine, String> {
        let snapshots = Arc::new(Snapshots {
            dir: dir.map(Path::to_path_buf),
            writing: Mutex::new(()),
            current: Mutex::new(None),
            fault,
        });
        let Some(dir) = dir else {
            return Ok(StateMachine { shared, snapshots });
        };
        let damaged = |path: &Path, e: String| {
            format!("the snapshot {} is damaged: {e}; {ADVICE}", path.display())
        };
        match snapshot_file::load(dir)
            .map_err(|e| damaged(&dir.join(snapshot_file::SNAPSHOT_FILE), e))?
        {
            None => {}
            Some((path, Loaded::File(file))) => {
                let snap = file
                    .to_snapshot()
                    .snapshot
                    .read_state()
                    .map_err(|e| damaged(&path, e))?;
                *shared.replica_mut() = restore(&file.meta, snap).map_err(|e| damaged(&path, e))?;
                *lock(&snapshots.current) = Some(file);
            }
            Some((path, Loaded::Old(meta, snap))) => {
                *shared.replica_mut() = restore(&meta, *snap).map_err(|e| damaged(&path, e))?;
                build(&shared, &snapshots).map_err(|e| {
                    format!(
                        "rewriting the snapshot {} in this build's format: {e}",
                        path.display()
                    )
                })?;
            }
        }
        Ok(StateMachine { shared, snapshots })
    }

    /// The last index the current snapshot covers (0: none).
    pub fn snapshot_index(&self) -> u64 {
        lock(&self.snapshots.current)
            .as_ref()
            .map_or(0, SnapshotFile::index)
    }
}

/// The replica a snapshot holds.
fn restore(meta: &Meta, snap: state::Snapshot) -> Result<Replica, String> {
    if snap.format != state::SNAPSHOT_FORMAT {
        return Err(format!(
            "snapshot format {} is not the one this version reads ({})",
            snap.format,
            state::SNAPSHOT_FORMAT
        ));
    }
    Ok(Replica {
        state: State::restore(snap),
        last_log: meta.last_log_id,
        membership: meta.last_membership.clone(),
    })
}

/// What a report of a damaged snapshot file advises.
const ADVICE: &str = "move the data dir away, then start this server afresh and let it rejoin \
     its cluster (the leader sends it a snapshot) or, for a lone server, restore a saved \
     snapshot (pilotfish snapshot restore)";

/// A snapshot's ID: term, index and a random part.
fn snapshot_id(last_log: Option<LogId>) -> String {
    let (term, index) = last_log.map_or((0, 0), |l| (l.leader_id.term, l.index));
    format!("{term}-{index}-{:x}", rand::random::<u32>())
}

/// Write a snapshot of the replica and make it the current one; the
/// current one as it is when nothing was applied since. The state is
/// streamed into the file under the replica's read lock; the fsync and
/// rename happen after it is released.
fn build(shared: &Shared, snapshots: &Snapshots) -> Result<Snapshot<TypeConfig>, String> {
    let _writing = lock(&snapshots.writing);
    let started = Instant::now();
    let mut draft = Draft::create(snapshots.dir.as_deref())?;
    let held = {
        let r = shared.replica();
        let locked = Instant::now();
        if let Some(current) = lock(&snapshots.current)
            .as_ref()
            .filter(|c| c.meta.last_log_id == r.last_log)
        {
            return Ok(current.to_snapshot());
        }
        draft.meta(Meta {
            last_log_id: r.last_log,
            last_membership: r.membership.clone(),
            snapshot_id: snapshot_id(r.last_log),
        })?;
        draft.state(&r.state.snapshot_view())?;
        locked.elapsed()
    };
    let bytes = draft.bytes();
    let file = draft.finish()?;
    tracing::info!(
        "raft snapshot at index {} built: {bytes} bytes in {} ms, writes held back {} ms",
        file.index(),
        started.elapsed().as_millis(),
        held.as_millis()
    );
    let out = file.to_snapshot();
    *lock(&snapshots.current) = Some(file);
    Ok(out)
}

impl Snapshots {
    /// Keep a failure to write a snapshot in the fault (it stops raft).
    fn failed(&self, e: String) -> StorageError {
        self.fault
            .record(format!("the raft snapshot cannot be saved: {e}"));
        snap_err(e)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        blocking(|| build(&self.shared, &self.snapshots)).map_err(|e| self.snapshots.failed(e))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let r = self.shared.replica();
        Ok((r.last_log, r.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<CommandResult>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let changes = {
            let mut r = self.shared.replica_mut();
            for e in entries {
                r.last_log = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => results.push(Vec::new()),
                    EntryPayload::Normal(p) => {
                        results.push(r.state.apply_all(e.log_id.index, p.now_ms, p.cmds));
                    }
                    EntryPayload::Membership(m) => {
                        r.membership = StoredMembership::new(Some(e.log_id), m);
                        results.push(Vec::new());
                    }
                }
            }
            r.state.take_kv_changes()
        };
        self.shared.applied(changes);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotBody>, StorageError> {
        SnapshotBody::receive(self.snapshots.dir.as_deref())
            .map(Box::new)
            .map_err(|e| self.snapshots.failed(e))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<SnapshotBody>,
    ) -> Result<(), StorageError> {
        let snapshots = &self.snapshots;
        blocking(|| {
            let replica = snapshot
                .read_state()
                .and_then(|snap| restore(meta, snap))
                .map_err(sm_err)?;
            let _writing = lock(&snapshots.writing);
            let file = match &snapshots.dir {
                Some(dir) => {
                    let mut draft = Draft::create(Some(dir)).map_err(|e| snapshots.failed(e))?;
                    draft
                        .meta(meta.clone())
                        .and_then(|()| draft.copy(&snapshot))
                        .and_then(|()| draft.finish())
                        .map_err(|e| snapshots.failed(e))?
                }
                None => SnapshotFile::received(meta.clone(), *snapshot),
            };
            *self.shared.replica_mut() = replica;
            self.shared.applied(KvChanges::All);
            *lock(&snapshots.current) = Some(file);
            Ok(())
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(lock(&self.snapshots.current)
            .as_ref()
            .map(SnapshotFile::to_snapshot))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::snapshot_file::tests::{sample, write_old_file};
    use super::*;

    #[tokio::test]
    async fn an_earlier_builds_snapshot_is_loaded_and_rewritten_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, s) = sample();
        write_old_file(dir.path(), &meta, &s);
        let shared = Shared::new();
        let sm = StateMachine::open(shared.clone(), Some(dir.path()), Fault::default()).unwrap();
        assert_eq!(shared.replica().state, s);
        assert_eq!(shared.replica().last_log, meta.last_log_id);
        assert_eq!(sm.snapshot_index(), 3);
        assert!(!dir.path().join(snapshot_file::OLD_SNAPSHOT_FILE).exists());
        drop(sm);
        // And the rewritten file loads.
        let shared = Shared::new();
        let sm = StateMachine::open(shared.clone(), Some(dir.path()), Fault::default()).unwrap();
        assert_eq!(shared.replica().state, s);
        assert_eq!(sm.snapshot_index(), 3);
    }

    #[tokio::test]
    async fn a_build_with_nothing_applied_since_keeps_the_current_snapshot() {
        let (meta, s) = sample();
        let shared = Shared::new();
        *shared.replica_mut() = restore(&meta, s.snapshot()).unwrap();
        let mut sm = StateMachine::open(shared.clone(), None, Fault::default()).unwrap();
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        let first = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(first.meta.last_log_id, meta.last_log_id);
        let again = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(again.meta.snapshot_id, first.meta.snapshot_id);
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, first.meta);
        assert_eq!(current.snapshot.read_state().unwrap(), s.snapshot());
    }
}
