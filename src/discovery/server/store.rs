//! Durability of the server's log and state: owns the data dir. Every command
//! is made durable here before the server applies it, and the state is
//! rebuilt from here at start.
//!
//! Layout of a data dir (`--data-dir`):
//! - `log.redb`: the command log, a redb database. Table `entries` maps the
//!   log index (u64) to one JSON [`LogRecord`] (`now_ms` + the [`Command`]);
//!   table `meta` holds `format` (the log layout) and `purged` (the highest
//!   index ever removed from the log, i.e. covered by a snapshot). One append
//!   is one redb write transaction committed with [`Durability::Immediate`]:
//!   when [`Store::append`] returns, the entry survives a crash or power loss,
//!   and a torn commit is rolled back by redb as a whole on the next open.
//!   redb also locks the file, so a second process opening the same data dir
//!   gets [`StoreError::InUse`].
//! - `snapshot.json`: the newest state snapshot, a one-line header (format,
//!   index, body length, FNV-1a 64 checksum of the body) then the JSON
//!   [`Snapshot`]. It is written to `snapshot.json.tmp`, fsynced, renamed over
//!   the old one and the directory is fsynced, so after a crash the file is
//!   either the old snapshot or the new one, never a mix. A damaged file is
//!   refused ([`StoreError::CorruptSnapshot`]), never half-loaded.
//!
//! The log and the snapshot are separate files so that writing a snapshot
//! never holds up a log fsync: the state is cloned under the caller's lock,
//! then serialised and fsynced on a background thread; the log entries it
//! covers are dropped inside a later append's transaction (no extra fsync).
//!
//! Recovery ([`Store::open`]): load the snapshot, replay every log entry after
//! it through [`State::apply`] in index order (refused commands are replayed
//! too: refusals are deterministic and consumed their index), then drop the
//! entries the snapshot covers. The result equals the state before the crash,
//! indexes included, so blocking-query indexes never go backwards.
//!
//! Raft (openraft's `RaftLogStorage`/`RaftLogReader`) can later sit on the
//! same file: `entries` is an index-keyed log that supports range reads,
//! `purged` is the purge marker, and the vote and the committed log id fit in
//! `meta` (bumping `format` when the record gains a term).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::state::{Command, Snapshot, State, SNAPSHOT_FORMAT};

/// The log file inside the data dir.
pub const LOG_FILE: &str = "log.redb";
/// The snapshot file inside the data dir.
pub const SNAPSHOT_FILE: &str = "snapshot.json";
const SNAPSHOT_TMP: &str = "snapshot.json.tmp";

/// Entries between two snapshots unless [`Store::set_snapshot_every`] says otherwise.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 8192;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_FORMAT: &str = "format";
const META_PURGED: &str = "purged";
/// The log layout this code writes.
const LOG_FORMAT: u64 = 1;
const SNAPSHOT_MAGIC: &str = "pilotfish-snapshot";

/// Why the data dir could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the data dir {path}: {source}; check the path and its permissions")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the data dir {dir} is in use: another pilotfish holds the lock on {log}; \
         stop it or choose another --data-dir"
    )]
    InUse { dir: PathBuf, log: PathBuf },
    #[error("{action} the log {path}: {source}; if the file is damaged, restore the data dir from a backup")]
    Log {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error(
        "the log {path} is corrupt at index {index} ({reason}); restore the data dir from a backup"
    )]
    CorruptLog {
        path: PathBuf,
        index: u64,
        reason: String,
    },
    #[error("the log {path} has format {found}; this pilotfish reads format {LOG_FORMAT}: run the version that wrote it")]
    LogFormat { path: PathBuf, found: u64 },
    #[error(
        "entries {from}..={to} are missing: the log {log} does not hold them and the snapshot {snapshot} \
         does not cover them (it ends at index {snapshot_index}); restore the snapshot from a backup"
    )]
    MissingEntries {
        log: PathBuf,
        snapshot: PathBuf,
        snapshot_index: u64,
        from: u64,
        to: u64,
    },
    #[error("{action} the snapshot {path}: {source}")]
    SnapshotIo {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the snapshot {path} is corrupt ({reason}); restore it from a backup, \
         or move the data dir away to start empty"
    )]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error(
        "cannot append index {index}: the log {path} already ends at {last} (indexes only grow)"
    )]
    IndexNotAfter {
        path: PathBuf,
        index: u64,
        last: u64,
    },
    #[error("encoding log entry {index}: {source}")]
    Encode {
        index: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("the snapshot writer for {path} stopped unexpectedly")]
    SnapshotThread { path: PathBuf },
}

/// One log entry as stored (the index is the key).
#[derive(Debug, Serialize, Deserialize)]
struct LogRecord {
    now_ms: u64,
    cmd: Command,
}

#[derive(Serialize)]
struct LogRecordRef<'a> {
    now_ms: u64,
    cmd: &'a Command,
}

/// Where applied commands are kept: nowhere (`--dev`) or a data dir.
pub struct Store {
    disk: Option<Disk>,
}

struct Disk {
    dir: PathBuf,
    log_path: PathBuf,
    db: Database,
    /// The highest index in the log (or covered by the snapshot).
    last_index: u64,
    /// Entries appended since the last snapshot was taken.
    since_snapshot: u64,
    snapshot_every: u64,
    /// The highest index removed from the log.
    purged: u64,
    /// A durable snapshot covers entries up to here; they go with the next append.
    purge_to: u64,
    in_flight: Option<JoinHandle<Result<u64, StoreError>>>,
}

impl Store {
    /// Open the store and the state recovered from it: `None` keeps nothing
    /// (in memory), `Some(dir)` creates or reopens a data dir.
    pub fn open(data_dir: Option<&Path>) -> Result<(Store, State), String> {
        match data_dir {
            None => Ok((Store { disk: None }, State::new())),
            Some(dir) => Store::open_dir(dir).map_err(|e| e.to_string()),
        }
    }

    /// [`Store::open`] on a data dir, with a typed error.
    pub fn open_dir(dir: &Path) -> Result<(Store, State), StoreError> {
        let (disk, state) = Disk::open(dir)?;
        Ok((Store { disk: Some(disk) }, state))
    }

    /// Make one command durable before it is applied: when this returns
    /// `Ok`, the entry is on disk (fsynced). `index` must be above every index
    /// appended before.
    pub fn append(&mut self, index: u64, now_ms: u64, cmd: &Command) -> Result<(), String> {
        match &mut self.disk {
            None => Ok(()),
            Some(disk) => disk
                .append(&[(index, now_ms, cmd)])
                .map_err(|e| e.to_string()),
        }
    }

    /// Make several commands durable with one fsync (group commit): each
    /// entry is `(index, now_ms, command)`, indexes ascending and above every
    /// index appended before. All or none are stored.
    pub fn append_batch(&mut self, entries: &[(u64, u64, &Command)]) -> Result<(), StoreError> {
        match &mut self.disk {
            None => Ok(()),
            Some(disk) => disk.append(entries),
        }
    }

    /// Take a snapshot when enough entries have been appended since the last
    /// one (see [`Store::set_snapshot_every`]) and none is being written.
    /// Call it after applying each write, with the state just applied; it
    /// costs nothing when no snapshot is due. Returns whether one was started.
    pub fn snapshot_if_due(&mut self, state: &State) -> Result<bool, StoreError> {
        let due = match &mut self.disk {
            None => false,
            Some(disk) => {
                disk.collect_snapshot();
                disk.in_flight.is_none() && disk.since_snapshot >= disk.snapshot_every
            }
        };
        if due {
            self.snapshot(state)?;
        }
        Ok(due)
    }

    /// Start writing a snapshot of `state` (which must be the state after
    /// the last appended entry, or an earlier one). The clone happens here;
    /// serialising and fsyncing run on a background thread, so appends go on
    /// meanwhile. If a snapshot is still being written, this waits for it.
    pub fn snapshot(&mut self, state: &State) -> Result<(), StoreError> {
        let Some(disk) = &mut self.disk else {
            return Ok(());
        };
        disk.finish_snapshot()?;
        let index = state.last_applied();
        if index > disk.last_index {
            return Err(StoreError::IndexNotAfter {
                path: disk.log_path.clone(),
                index,
                last: disk.last_index,
            });
        }
        let snapshot = state.snapshot();
        let dir = disk.dir.clone();
        let path = dir.join(SNAPSHOT_FILE);
        let handle = std::thread::Builder::new()
            .name("store-snapshot".into())
            .spawn(move || write_snapshot(&dir, index, &snapshot))
            .map_err(|source| StoreError::SnapshotIo {
                action: "starting the writer of",
                path,
                source,
            })?;
        disk.in_flight = Some(handle);
        disk.since_snapshot = disk.last_index - index;
        Ok(())
    }

    /// Wait for the snapshot being written, if any; returns the index it
    /// covers. Its log entries are dropped with the next append.
    pub fn finish_snapshot(&mut self) -> Result<Option<u64>, StoreError> {
        match &mut self.disk {
            None => Ok(None),
            Some(disk) => disk.finish_snapshot(),
        }
    }

    /// Snapshot every `entries` appends (default [`DEFAULT_SNAPSHOT_EVERY`]).
    pub fn set_snapshot_every(&mut self, entries: u64) {
        if let Some(disk) = &mut self.disk {
            disk.snapshot_every = entries.max(1);
        }
    }

    /// The lowest and highest index held in the log file (`None` when it is
    /// empty or in memory).
    pub fn log_bounds(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let Some(disk) = &self.disk else {
            return Ok(None);
        };
        let path = disk.log_path.as_path();
        let txn = disk
            .db
            .begin_read()
            .map_err(|e| log_error("reading", path, e))?;
        let table = match txn.open_table(ENTRIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(log_error("reading", path, e)),
        };
        let first = table
            .first()
            .map_err(|e| log_error("reading", path, e))?
            .map(|(k, _)| k.value());
        let last = table
            .last()
            .map_err(|e| log_error("reading", path, e))?
            .map(|(k, _)| k.value());
        Ok(first.zip(last))
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // A clean drop lets a snapshot being written finish, so two stores of
        // one process never write the same temp file; a crash leaves the
        // temp file behind, which the next open removes.
        if let Err(e) = self.finish_snapshot() {
            tracing::warn!(error = %e, "state snapshot failed");
        }
    }
}

impl Disk {
    fn open(dir: &Path) -> Result<(Disk, State), StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let log_path = dir.join(LOG_FILE);
        let db = Database::create(&log_path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                dir: dir.to_path_buf(),
                log: log_path.clone(),
            },
            other => StoreError::Log {
                action: "opening",
                path: log_path.clone(),
                source: Box::new(other.into()),
            },
        })?;
        // The log file may be new: make its directory entry durable too.
        sync_dir(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        // A temp file is a snapshot whose write a crash cut short.
        let tmp = dir.join(SNAPSHOT_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => tracing::info!(path = %tmp.display(), "removed an unfinished snapshot"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::SnapshotIo {
                    action: "removing",
                    path: tmp,
                    source,
                })
            }
        }

        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (snapshot_index, mut state) = match read_snapshot(&snapshot_path)? {
            Some((index, state)) => (index, state),
            None => (0, State::new()),
        };

        // Replay, and learn what compaction owes, in one read transaction.
        let (purged, last_index, has_covered) = {
            let txn = db
                .begin_read()
                .map_err(|e| log_error("reading", &log_path, e))?;
            let purged = match txn.open_table(META) {
                Ok(meta) => {
                    if let Some(found) = meta
                        .get(META_FORMAT)
                        .map_err(|e| log_error("reading", &log_path, e))?
                        .map(|g| g.value())
                    {
                        if found != LOG_FORMAT {
                            return Err(StoreError::LogFormat {
                                path: log_path,
                                found,
                            });
                        }
                    }
                    meta.get(META_PURGED)
                        .map_err(|e| log_error("reading", &log_path, e))?
                        .map(|g| g.value())
                        .unwrap_or(0)
                }
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(log_error("reading", &log_path, e)),
            };
            if purged > snapshot_index {
                return Err(StoreError::MissingEntries {
                    log: log_path,
                    snapshot: snapshot_path,
                    snapshot_index,
                    from: snapshot_index + 1,
                    to: purged,
                });
            }
            let mut last_index = snapshot_index;
            let mut has_covered = false;
            match txn.open_table(ENTRIES) {
                Ok(entries) => {
                    has_covered = entries
                        .first()
                        .map_err(|e| log_error("reading", &log_path, e))?
                        .is_some_and(|(k, _)| k.value() <= snapshot_index);
                    let range = entries
                        .range(snapshot_index + 1..)
                        .map_err(|e| log_error("reading", &log_path, e))?;
                    for item in range {
                        let (k, v) = item.map_err(|e| log_error("reading", &log_path, e))?;
                        let index = k.value();
                        if index != last_index + 1 {
                            return Err(StoreError::MissingEntries {
                                log: log_path,
                                snapshot: snapshot_path,
                                snapshot_index,
                                from: last_index + 1,
                                to: index - 1,
                            });
                        }
                        let record: LogRecord = serde_json::from_slice(v.value()).map_err(|e| {
                            StoreError::CorruptLog {
                                path: log_path.clone(),
                                index,
                                reason: e.to_string(),
                            }
                        })?;
                        // A refusal is deterministic: the command was refused
                        // the first time too, and still consumes its index.
                        if let Err(e) = state.apply(index, record.now_ms, record.cmd) {
                            tracing::trace!(index, error = %e, "replayed a refused command");
                        }
                        last_index = index;
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(log_error("reading", &log_path, e)),
            }
            (purged, last_index, has_covered)
        };

        // Record the layout, and drop what the snapshot covers.
        let mut txn = db
            .begin_write()
            .map_err(|e| log_error("writing", &log_path, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| log_error("writing", &log_path, e))?;
        {
            let mut entries = txn
                .open_table(ENTRIES)
                .map_err(|e| log_error("writing", &log_path, e))?;
            if has_covered {
                entries
                    .retain_in(..=snapshot_index, |_, _| false)
                    .map_err(|e| log_error("compacting", &log_path, e))?;
            }
            let mut meta = txn
                .open_table(META)
                .map_err(|e| log_error("writing", &log_path, e))?;
            meta.insert(META_FORMAT, LOG_FORMAT)
                .map_err(|e| log_error("writing", &log_path, e))?;
            meta.insert(META_PURGED, purged.max(snapshot_index))
                .map_err(|e| log_error("writing", &log_path, e))?;
        }
        txn.commit()
            .map_err(|e| log_error("writing", &log_path, e))?;

        tracing::info!(
            dir = %dir.display(),
            snapshot_index,
            replayed = last_index - snapshot_index,
            last_index,
            "recovered the state from the data dir"
        );
        let disk = Disk {
            dir: dir.to_path_buf(),
            log_path,
            db,
            last_index,
            since_snapshot: last_index - snapshot_index,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            purged: purged.max(snapshot_index),
            purge_to: snapshot_index,
            in_flight: None,
        };
        Ok((disk, state))
    }

    /// Append `entries` (consecutive, ascending indexes) in one transaction.
    fn append(&mut self, entries: &[(u64, u64, &Command)]) -> Result<(), StoreError> {
        let mut last = self.last_index;
        let mut records = Vec::with_capacity(entries.len());
        for &(index, now_ms, cmd) in entries {
            if index <= last {
                return Err(StoreError::IndexNotAfter {
                    path: self.log_path.clone(),
                    index,
                    last,
                });
            }
            last = index;
            let record = serde_json::to_vec(&LogRecordRef { now_ms, cmd })
                .map_err(|source| StoreError::Encode { index, source })?;
            records.push((index, record));
        }
        if records.is_empty() {
            return Ok(());
        }
        self.collect_snapshot();
        let path = self.log_path.as_path();
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| log_error("appending to", path, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| log_error("appending to", path, e))?;
        let purge = self.purge_to > self.purged;
        {
            let mut table = txn
                .open_table(ENTRIES)
                .map_err(|e| log_error("appending to", path, e))?;
            for (index, record) in &records {
                table
                    .insert(*index, record.as_slice())
                    .map_err(|e| log_error("appending to", path, e))?;
            }
            if purge {
                table
                    .retain_in(..=self.purge_to, |_, _| false)
                    .map_err(|e| log_error("appending to", path, e))?;
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| log_error("appending to", path, e))?;
                meta.insert(META_PURGED, self.purge_to)
                    .map_err(|e| log_error("appending to", path, e))?;
            }
        }
        txn.commit()
            .map_err(|e| log_error("appending to", path, e))?;
        self.last_index = last;
        self.since_snapshot += records.len() as u64;
        if purge {
            self.purged = self.purge_to;
        }
        Ok(())
    }

    /// Note a snapshot that finished writing, without waiting for one.
    fn collect_snapshot(&mut self) {
        if self.in_flight.as_ref().is_some_and(|h| h.is_finished()) {
            if let Err(e) = self.finish_snapshot() {
                tracing::warn!(error = %e, "state snapshot failed; the log keeps its entries until one succeeds");
            }
        }
    }

    fn finish_snapshot(&mut self) -> Result<Option<u64>, StoreError> {
        let Some(handle) = self.in_flight.take() else {
            return Ok(None);
        };
        let index = handle.join().map_err(|_| StoreError::SnapshotThread {
            path: self.dir.join(SNAPSHOT_FILE),
        })??;
        self.purge_to = self.purge_to.max(index);
        Ok(Some(index))
    }
}

/// Write `snapshot` (taken at `index`) so that `dir/snapshot.json` is
/// either the previous snapshot or this one, even across a crash.
fn write_snapshot(dir: &Path, index: u64, snapshot: &Snapshot) -> Result<u64, StoreError> {
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = dir.join(SNAPSHOT_TMP);
    let body = serde_json::to_vec(snapshot).map_err(|e| StoreError::SnapshotIo {
        action: "encoding",
        path: path.clone(),
        source: e.into(),
    })?;
    let header = format!(
        "{SNAPSHOT_MAGIC} format={} index={index} len={} fnv1a64={:016x}\n",
        snapshot.format,
        body.len(),
        fnv1a64(&body)
    );
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::SnapshotIo {
            action,
            path,
            source,
        }
    };
    let mut file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    file.write_all(header.as_bytes())
        .and_then(|()| file.write_all(&body))
        .map_err(io_err("writing", &tmp))?;
    file.sync_all().map_err(io_err("syncing", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err("renaming a new", &path))?;
    sync_dir(dir).map_err(io_err("syncing the directory of", &path))?;
    tracing::debug!(path = %path.display(), index, bytes = body.len(), "wrote a state snapshot");
    Ok(index)
}

/// The snapshot in `path` and the index it covers; `None` if there is none.
fn read_snapshot(path: &Path) -> Result<Option<(u64, State)>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::SnapshotIo {
                action: "reading",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |reason: String| StoreError::CorruptSnapshot {
        path: path.to_path_buf(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..newline])
        .map_err(|_| corrupt("the header is not text".into()))?;
    let body = &bytes[newline + 1..];
    let mut fields = header.split(' ');
    if fields.next() != Some(SNAPSHOT_MAGIC) {
        return Err(corrupt(format!(
            "not a pilotfish snapshot header: {header:?}"
        )));
    }
    let mut format = None;
    let mut index = None;
    let mut len = None;
    let mut sum = None;
    for field in fields {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| corrupt(format!("bad header field {field:?}")))?;
        let bad = || corrupt(format!("bad header field {field:?}"));
        match key {
            "format" => format = Some(value.parse::<u32>().map_err(|_| bad())?),
            "index" => index = Some(value.parse::<u64>().map_err(|_| bad())?),
            "len" => len = Some(value.parse::<usize>().map_err(|_| bad())?),
            "fnv1a64" => sum = Some(u64::from_str_radix(value, 16).map_err(|_| bad())?),
            _ => {} // fields a later version may add
        }
    }
    let (Some(format), Some(index), Some(len), Some(sum)) = (format, index, len, sum) else {
        return Err(corrupt(format!("incomplete header {header:?}")));
    };
    if format != SNAPSHOT_FORMAT {
        return Err(corrupt(format!(
            "format {format}, this pilotfish reads format {SNAPSHOT_FORMAT}: run the version that wrote it"
        )));
    }
    if body.len() != len {
        return Err(corrupt(format!(
            "the body has {} bytes, the header says {len}",
            body.len()
        )));
    }
    if fnv1a64(body) != sum {
        return Err(corrupt("checksum mismatch".into()));
    }
    let snapshot: Snapshot = serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
    let state = State::restore(snapshot);
    if state.last_applied() != index {
        return Err(corrupt(format!(
            "the header says index {index}, the state was taken at {}",
            state.last_applied()
        )));
    }
    Ok(Some((index, state)))
}

/// FNV-1a, 64 bits: catches torn or flipped bytes (not an adversary).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn log_error(action: &'static str, path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Log {
        action,
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn in_memory_store_keeps_nothing() {
        let (mut store, state) = Store::open(None).expect("open");
        assert_eq!(state.last_applied(), 0);
        store
            .append(1, 0, &Command::KvDelete { key: "a".into() })
            .expect("append");
        assert!(!store.snapshot_if_due(&state).expect("snapshot"));
        assert_eq!(store.log_bounds().expect("bounds"), None);
    }
}
