//! The raft log, vote and commit marker in one redb database
//! (`<data-dir>/raft.redb`; an in-memory redb for `--dev`).
//!
//! - table `log`: log index (u64) → one JSON [`Entry`] (its term, index and
//!   payload);
//! - table `meta`: `vote`, `committed` and `purged`, each JSON.
//!
//! An append is one write transaction committed with redb's default
//! `Durability::Immediate`, so when openraft is told an append is flushed
//! the entries survive a crash or power loss; a torn commit is rolled back
//! by redb as a whole on the next open. One append is one fsync; on the
//! leader openraft 0.9 appends each `client_write` on its own, which is why
//! concurrent writes are grouped into one entry before they reach raft
//! (`propose`). The vote is fsynced too (raft's safety needs it).
//! The commit marker is written without its own fsync: it rides on the next
//! append, and a marker that lags only means a restart replays a little less
//! before the leader confirms the rest.
//!
//! redb locks the file, so a second process on the same data dir is refused
//! with a clear error. The state snapshot lives in another file
//! (`state_machine`), so writing a snapshot never holds up a log fsync.

// openraft's storage and RPC traits dictate their (large) error types.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError, Vote};
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::discovery::server::blocking;

/// The log file inside the data dir.
pub const LOG_FILE: &str = "raft.redb";

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

/// openraft's log storage; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO {
        source: StorageIOError::write_logs(AnyError::error(e.to_string())),
    }
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO {
        source: StorageIOError::read_logs(AnyError::error(e.to_string())),
    }
}

impl LogStore {
    /// Open (or create) the log in `dir`, or in memory when `dir` is `None`.
    pub fn open(dir: Option<&Path>) -> Result<LogStore, String> {
        let db = match dir {
            None => redb::Builder::new()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| format!("creating the in-memory log: {e}"))?,
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating the data dir {}: {e}", dir.display()))?;
                let path = dir.join(LOG_FILE);
                Database::create(&path).map_err(|e| match e {
                    DatabaseError::DatabaseAlreadyOpen => format!(
                        "the data dir {} is in use by another process (its raft log {} is locked); \
                         stop that agent or pick another --data-dir",
                        dir.display(),
                        path.display()
                    ),
                    e => format!("opening the raft log {}: {e}", path.display()),
                })?
            }
        };
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            txn.open_table(LOG).map_err(|e| e.to_string())?;
            txn.open_table(META).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| read_err(format!("the raft log's {key} record is damaged: {e}"))),
        }
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(io)?;
        blocking(|| {
            let mut txn = self.db.begin_write().map_err(io)?;
            txn.set_durability(durability).map_err(io)?;
            {
                let mut table = txn.open_table(META).map_err(io)?;
                table.insert(key, bytes.as_slice()).map_err(io)?;
            }
            txn.commit().map_err(io)
        })
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let last = table.last().map_err(read_err)?;
        match last {
            None => Ok(None),
            Some((_, v)) => decode(v.value()).map(Some),
        }
    }

    /// The highest log index stored (0 when empty), for startup decisions.
    pub fn last_index(&self) -> u64 {
        self.last_entry()
            .ok()
            .flatten()
            .map(|e| e.log_id.index)
            .unwrap_or(0)
    }

    /// Whether this node ever voted or stored an entry (it then belongs to
    /// a cluster and must never bootstrap another one).
    pub fn has_state(&self) -> bool {
        self.last_index() > 0
            || matches!(self.get_meta::<Vote<NodeId>>(VOTE), Ok(Some(_)))
            || matches!(self.get_meta::<LogId>(PURGED), Ok(Some(_)))
    }
}

fn decode(bytes: &[u8]) -> Result<Entry, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| read_err(format!("a raft log entry is damaged: {e}")))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.range(range).map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.get_meta(PURGED)?;
        let last = self.last_entry()?.map(|e| e.log_id).or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote, Durability::Immediate)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(COMMITTED, &committed, Durability::None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push((e.log_id.index, serde_json::to_vec(&e).map_err(io)?));
        }
        let result = blocking(|| {
            let txn = self.db.begin_write().map_err(io)?;
            {
                let mut table = txn.open_table(LOG).map_err(io)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice()).map_err(io)?;
                }
            }
            txn.commit().map_err(io)
        });
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(|| {
            let txn = self.db.begin_write().map_err(io)?;
            {
                let mut table = txn.open_table(LOG).map_err(io)?;
                table.retain_in(log_id.index.., |_, _| false).map_err(io)?;
            }
            txn.commit().map_err(io)
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&log_id).map_err(io)?;
        blocking(|| {
            let txn = self.db.begin_write().map_err(io)?;
            {
                let mut meta = txn.open_table(META).map_err(io)?;
                meta.insert(PURGED, bytes.as_slice()).map_err(io)?;
                let mut table = txn.open_table(LOG).map_err(io)?;
                table.retain_in(..=log_id.index, |_, _| false).map_err(io)?;
            }
            txn.commit().map_err(io)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn put(store: &LogStore, entries: &[Entry]) {
        let txn = store.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(LOG).unwrap();
            for e in entries {
                t.insert(e.log_id.index, serde_json::to_vec(e).unwrap().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn entries_vote_truncate_and_purge_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(Some(dir.path())).unwrap();
            put(&s, &(1..=10).map(|i| entry(1, i)).collect::<Vec<_>>());
            s.save_vote(&Vote::new(3, 7)).await.unwrap();
            s.truncate(LogId::new(CommittedLeaderId::new(1, 1), 8))
                .await
                .unwrap();
            s.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
                .await
                .unwrap();
        }
        let mut s = LogStore::open(Some(dir.path())).unwrap();
        assert!(s.has_state());
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
        let got = s.try_get_log_entries(0..100).await.unwrap();
        let indexes: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![4, 5, 6, 7]);
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.unwrap().index, 3);
        assert_eq!(st.last_log_id.unwrap().index, 7);
    }

    #[test]
    fn a_second_open_of_the_same_data_dir_is_refused_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _a = LogStore::open(Some(dir.path())).unwrap();
        let e = LogStore::open(Some(dir.path())).err().unwrap();
        assert!(e.contains("in use by another process"), "{e}");
    }

    #[test]
    fn a_fresh_store_has_no_state() {
        let s = LogStore::open(None).unwrap();
        assert!(!s.has_state());
        assert_eq!(s.last_index(), 0);
    }
}
