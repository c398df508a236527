//! The raft log, vote and commit marker in one redb database
//! (`<data-dir>/raft.redb`; an in-memory redb for `--dev`).
//!
//! - table `log`: log index (u64) → one JSON [`Entry`] (its term, index and
//!   payload);
//! - table `meta`: `vote`, `committed` and `purged`, each JSON.
//!
//! `append` keeps the entries in memory (readable at once) and hands them
//! to one writer thread, which commits everything queued in one write
//! transaction with redb's default `Durability::Immediate` (one fsync) and
//! only then tells openraft they are flushed: they survive a crash or power
//! loss, and a torn commit is rolled back by redb as a whole on the next
//! open. Because `append` does not wait for the fsync, the leader sends the
//! entries to its followers while its own fsync runs, as etcd does; a write
//! costs about one fsync less. Concurrent client writes are also grouped
//! into one entry before they reach raft (`propose`). The in-memory log
//! of `--dev` has no fsync to overlap and is written in the caller.
//! The vote is fsynced too (raft's safety needs it); it, truncation and
//! purging first wait for the writer to drain, so they apply after every
//! append before them. The commit marker goes through the writer, in the
//! same transaction as the next batch: it is never durable before the
//! entries it covers, and a marker that lags only means a restart replays a
//! little less before the leader confirms the rest.
//!
//! redb locks the file, so a second process on the same data dir is refused
//! with a clear error. The state snapshot lives in another file
//! (`state_machine`), so writing a snapshot never holds up a log fsync.

// openraft's storage and RPC traits dictate their (large) error types.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

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
    /// Appended entries the writer has not committed yet: readable at once,
    /// as openraft requires of `append`.
    pending: Pending,
    writer: Arc<Writer>,
}

type Pending = Arc<Mutex<BTreeMap<u64, Entry>>>;

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Work for the writer thread, done in the order it was sent.
enum Job {
    Append {
        encoded: Vec<(u64, Vec<u8>)>,
        ids: Vec<LogId>,
        callback: LogFlushed<TypeConfig>,
    },
    /// The commit marker, written with the next batch (or alone, without
    /// an fsync, when no append is queued).
    Committed(Vec<u8>),
    /// Answered once every job sent before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The thread that commits appends: `append` hands its entries over and
/// returns, so openraft replicates them to the followers while this node's
/// fsync runs (etcd does the same). Appends queued meanwhile are committed
/// together, with one fsync. Dropping the last handle stops the thread and
/// waits for it, so the log file is released when the store is.
struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Commit `first` and every job queued behind it (none when `rx` is `None`).
fn write_appends(db: &Database, rx: Option<&mpsc::Receiver<Job>>, first: Job, pending: &Pending) {
    let mut appends = Vec::new();
    let mut barriers = Vec::new();
    let mut committed = None;
    let mut next = Some(first);
    while let Some(job) = next.take() {
        match job {
            Job::Append {
                encoded,
                ids,
                callback,
            } => appends.push((encoded, ids, callback)),
            Job::Committed(bytes) => committed = Some(bytes),
            // Everything before the barrier is in this batch: answer it
            // once the batch is committed.
            Job::Barrier(done) => barriers.push(done),
        }
        next = rx.and_then(|rx| rx.try_recv().ok());
    }
    if !appends.is_empty() || committed.is_some() {
        let result = (|| {
            let mut txn = db.begin_write().map_err(io)?;
            if appends.is_empty() {
                txn.set_durability(Durability::None).map_err(io)?;
            }
            {
                let mut table = txn.open_table(LOG).map_err(io)?;
                for (encoded, _, _) in &appends {
                    for (index, bytes) in encoded {
                        table.insert(*index, bytes.as_slice()).map_err(io)?;
                    }
                }
                if let Some(bytes) = &committed {
                    let mut meta = txn.open_table(META).map_err(io)?;
                    meta.insert(COMMITTED, bytes.as_slice()).map_err(io)?;
                }
            }
            txn.commit().map_err(io)
        })();
        if let (Err(e), true) = (&result, appends.is_empty()) {
            tracing::warn!("writing the raft commit marker: {e}");
        }
        if result.is_ok() {
            let mut p = lock(pending);
            for id in appends.iter().flat_map(|(_, ids, _)| ids) {
                if p.get(&id.index).is_some_and(|e| e.log_id == *id) {
                    p.remove(&id.index);
                }
            }
        }
        for (_, _, callback) in appends {
            callback.log_io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
    for done in barriers {
        let _ = done.send(());
    }
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
        let db = Arc::new(db);
        let pending: Pending = Arc::default();
        if dir.is_none() {
            // In memory there is no fsync to overlap: write in the caller,
            // which also keeps tests with a paused tokio clock exact.
            return Ok(LogStore {
                db,
                pending,
                writer: Arc::new(Writer {
                    tx: None,
                    thread: None,
                }),
            });
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = {
            let (db, pending) = (db.clone(), pending.clone());
            std::thread::Builder::new()
                .name("raft-log".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        write_appends(&db, Some(&rx), job, &pending);
                    }
                })
                .map_err(|e| format!("starting the raft log writer: {e}"))?
        };
        Ok(LogStore {
            db,
            pending,
            writer: Arc::new(Writer {
                tx: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    /// Wait until every append handed to the writer is committed; every
    /// other change to the log goes after them.
    async fn drain(&self) -> Result<(), StorageError> {
        let Some(tx) = &self.writer.tx else {
            return Ok(()); // in memory: nothing is queued
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        if tx.send(Job::Barrier(done)).is_err() || wait.await.is_err() {
            return Err(io("the raft log writer has stopped"));
        }
        Ok(())
    }

    /// Hand a job to the writer thread.
    fn send(&self, job: Job) -> Result<(), StorageError> {
        let Some(tx) = &self.writer.tx else {
            blocking(|| write_appends(&self.db, None, job, &self.pending));
            return Ok(());
        };
        match tx.send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::SendError(Job::Append { callback, .. })) => {
                let e = io("the raft log writer has stopped");
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
            Err(_) => Err(io("the raft log writer has stopped")),
        }
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
        if let Some((_, e)) = lock(&self.pending).last_key_value() {
            return Ok(Some(e.clone()));
        }
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
        // Pending entries first: the writer removes one only after it is
        // committed, so an entry is always in one of the two reads.
        let mut out: BTreeMap<u64, Entry> = lock(&self.pending)
            .range(range.clone())
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        for item in table.range(range).map_err(read_err)? {
            let (index, v) = item.map_err(read_err)?;
            if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(index.value()) {
                slot.insert(decode(v.value())?);
            }
        }
        Ok(out.into_values().collect())
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
        self.drain().await?;
        self.put_meta(VOTE, vote, Durability::Immediate)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Through the writer: in order after the appends it covers, and
        // without holding raft up while a batch is being fsynced.
        let bytes = serde_json::to_vec(&committed).map_err(io)?;
        self.send(Job::Committed(bytes))
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
        let mut ids = Vec::new();
        {
            let mut p = lock(&self.pending);
            for e in entries {
                encoded.push((e.log_id.index, serde_json::to_vec(&e).map_err(io)?));
                ids.push(e.log_id);
                p.insert(e.log_id.index, e);
            }
        }
        let job = Job::Append {
            encoded,
            ids,
            callback,
        };
        self.send(job)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain().await?;
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
        self.drain().await?;
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
