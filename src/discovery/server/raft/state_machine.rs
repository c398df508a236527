//! openraft's state machine over the node's shared [`Replica`]: committed
//! entries are applied in log order to the deterministic
//! [`State`](crate::discovery::server::state::State), then the blocking
//! queries whose index moved are woken.
//!
//! Snapshots: the whole state, serialised as JSON with openraft's snapshot
//! metadata, kept in memory and (with a data dir) in
//! `<data-dir>/raft-snapshot.json`, written to a temp file, fsynced, renamed
//! over the old one, and the directory fsynced: after a crash the file is
//! the old snapshot or the new one, never a mix. The log entries a durable
//! snapshot covers are then purged by openraft. At start the snapshot is
//! loaded and openraft replays the log after it.

// openraft's storage and RPC traits dictate their (large) error types.
#![allow(clippy::result_large_err)]

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{Entry, LogId, Membership, NodeId, Peer, StorageError, TypeConfig};
use crate::discovery::server::state::{self, CommandResult, State};
use crate::discovery::server::{blocking, Replica, Shared};

/// The snapshot file inside the data dir.
pub const SNAPSHOT_FILE: &str = "raft-snapshot.json";
const SNAPSHOT_TMP: &str = "raft-snapshot.json.tmp";

/// A snapshot as stored and sent: openraft's metadata and the state's JSON.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta<NodeId, Peer>,
    /// JSON of a [`state::Snapshot`].
    pub data: Vec<u8>,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        }
    }
}

/// The state machine openraft drives.
pub struct StateMachine {
    shared: Arc<Shared>,
    dir: Option<PathBuf>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

/// Builds snapshots from the shared replica, off the apply path.
pub struct Builder {
    shared: Arc<Shared>,
    dir: Option<PathBuf>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
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
    /// The state machine over `shared`, loading `<dir>/raft-snapshot.json`
    /// into it when there is one. A damaged snapshot is an error naming the
    /// file, never half-loaded.
    pub(crate) fn open(shared: Arc<Shared>, dir: Option<&Path>) -> Result<StateMachine, String> {
        let mut current = None;
        if let Some(dir) = dir {
            let path = dir.join(SNAPSHOT_FILE);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let stored: StoredSnapshot = serde_json::from_slice(&bytes).map_err(|e| {
                        format!(
                            "the snapshot {} is damaged ({e}); move it away to start from the log alone \
                             only if the log still holds every entry",
                            path.display()
                        )
                    })?;
                    let replica =
                        restore(&stored).map_err(|e| format!("{}: {e}", path.display()))?;
                    *shared.replica_mut() = replica;
                    current = Some(stored);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("reading {}: {e}", path.display())),
            }
        }
        Ok(StateMachine {
            shared,
            dir: dir.map(Path::to_path_buf),
            current: Arc::new(Mutex::new(current)),
        })
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<StoredSnapshot>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The replica a snapshot holds.
fn restore(stored: &StoredSnapshot) -> Result<Replica, String> {
    let snap: state::Snapshot = serde_json::from_slice(&stored.data)
        .map_err(|e| format!("the snapshot's state is damaged: {e}"))?;
    if snap.format != state::SNAPSHOT_FORMAT {
        return Err(format!(
            "snapshot format {} is not the one this version reads ({})",
            snap.format,
            state::SNAPSHOT_FORMAT
        ));
    }
    Ok(Replica {
        state: State::restore(snap),
        last_log: stored.meta.last_log_id,
        membership: stored.meta.last_membership.clone(),
    })
}

/// Write the snapshot file atomically (temp, fsync, rename, fsync the dir).
fn persist(dir: &Path, stored: &StoredSnapshot) -> std::io::Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let bytes = serde_json::to_vec(stored).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (snap, last_log, membership) = {
            let r = self.shared.replica();
            (r.state.snapshot(), r.last_log, r.membership.clone())
        };
        let data = serde_json::to_vec(&snap).map_err(snap_err)?;
        let id = match last_log {
            Some(l) => format!(
                "{}-{}-{:x}",
                l.leader_id.term,
                l.index,
                rand::random::<u32>()
            ),
            None => format!("0-0-{:x}", rand::random::<u32>()),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: last_log,
                last_membership: membership,
                snapshot_id: id,
            },
            data,
        };
        if let Some(dir) = &self.dir {
            blocking(|| persist(dir, &stored)).map_err(snap_err)?;
        }
        let out = stored.to_snapshot();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored);
        Ok(out)
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
        {
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
        }
        self.shared.applied();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            shared: self.shared.clone(),
            dir: self.dir.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Peer>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let replica = restore(&stored).map_err(sm_err)?;
        if let Some(dir) = &self.dir {
            blocking(|| persist(dir, &stored)).map_err(snap_err)?;
        }
        *self.shared.replica_mut() = replica;
        self.shared.applied();
        *self.current() = Some(stored);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.current().as_ref().map(StoredSnapshot::to_snapshot))
    }
}
