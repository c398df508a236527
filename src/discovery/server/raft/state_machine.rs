//! openraft's state machine over the node's shared [`Replica`]: committed
//! entries are applied in log order to the deterministic
//! [`State`](crate::discovery::server::state::State), then the blocking
//! queries whose index moved are woken.
//!
//! Snapshots: the whole state, serialised as JSON with openraft's snapshot
//! metadata, kept in memory and (with a data dir) in
//! `<data-dir>/raft-snapshot`, written to a temp file, fsynced, renamed
//! over the old one, and the directory fsynced: after a crash the file is
//! the old snapshot or the new one, never a mix. The log entries a durable
//! snapshot covers are then purged by openraft. At start the snapshot is
//! loaded and openraft replays the log after it.
//!
//! The file is a header line, then the metadata's JSON, then the state's
//! JSON as it is (not re-encoded):
//!
//! ```text
//! pilotfish-raft-snapshot format=2 meta=<bytes> state=<bytes> crc32=<8 hex digits>\n
//! {"last_log_id":...}{"format":1,"state":{...}}
//! ```
//!
//! The CRC-32 covers both, and a file whose lengths or checksum are wrong
//! is refused at start, naming the file. `raft-snapshot.json` of earlier
//! builds (one JSON object whose state was an array of byte numbers, four
//! times larger, without a checksum) is still loaded, and removed once a
//! new snapshot is saved.

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

use super::{Entry, Fault, LogId, Membership, NodeId, Peer, StorageError, TypeConfig};
use crate::discovery::server::state::{self, CommandResult, State};
use crate::discovery::server::{blocking, Replica, Shared};

/// The snapshot file inside the data dir.
pub const SNAPSHOT_FILE: &str = "raft-snapshot";
const SNAPSHOT_TMP: &str = "raft-snapshot.tmp";
/// The snapshot file of earlier builds: read when there is no
/// [`SNAPSHOT_FILE`], removed once one is written.
pub const OLD_SNAPSHOT_FILE: &str = "raft-snapshot.json";
/// The header line's first word.
const MAGIC: &str = "pilotfish-raft-snapshot";
/// The file layout [`encode`] writes.
const FILE_FORMAT: u32 = 2;
/// The longest header line a reader looks for.
const MAX_HEADER: usize = 256;

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
    fault: Fault,
}

/// Builds snapshots from the shared replica, off the apply path.
pub struct Builder {
    shared: Arc<Shared>,
    dir: Option<PathBuf>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    fault: Fault,
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
    /// an earlier build's `raft-snapshot.json`) into it when there is one.
    /// A damaged snapshot is an error naming the file, never half-loaded.
    /// Storage failures are kept in `fault`.
    pub(crate) fn open(
        shared: Arc<Shared>,
        dir: Option<&Path>,
        fault: Fault,
    ) -> Result<StateMachine, String> {
        let mut current = None;
        if let Some(dir) = dir {
            if let Some((path, stored)) = load(dir)? {
                let replica = restore(&stored).map_err(|e| {
                    format!("the snapshot {} is damaged: {e}; {ADVICE}", path.display())
                })?;
                *shared.replica_mut() = replica;
                current = Some(stored);
            }
        }
        Ok(StateMachine {
            shared,
            dir: dir.map(Path::to_path_buf),
            current: Arc::new(Mutex::new(current)),
            fault,
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

/// What a report of a damaged snapshot file advises.
const ADVICE: &str = "move the data dir away, then start this server afresh and let it rejoin \
     its cluster (the leader sends it a snapshot) or, for a lone server, restore a saved \
     snapshot (pilotfish snapshot restore)";

/// The file's bytes for `stored`: the header line, the metadata's JSON,
/// the state's JSON.
fn encode(stored: &StoredSnapshot) -> Result<Vec<u8>, serde_json::Error> {
    let meta = serde_json::to_vec(&stored.meta)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta);
    crc.update(&stored.data);
    let header = format!(
        "{MAGIC} format={FILE_FORMAT} meta={} state={} crc32={:08x}\n",
        meta.len(),
        stored.data.len(),
        crc.finalize()
    );
    let mut out = Vec::with_capacity(header.len() + meta.len() + stored.data.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&stored.data);
    Ok(out)
}

/// Check a snapshot file (header, lengths, checksum, metadata) and split
/// it; the error says what is wrong.
fn decode(bytes: &[u8]) -> Result<StoredSnapshot, String> {
    let newline = bytes
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or_else(|| format!("it does not start with a `{MAGIC}` header line"))?;
    let line = std::str::from_utf8(&bytes[..newline])
        .map_err(|_| "its header line is not UTF-8".to_string())?;
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(format!("it does not start with a `{MAGIC}` header line"));
    }
    let (mut format, mut meta_len, mut state_len, mut crc) = (None, None, None, None);
    for word in words {
        match word.split_once('=') {
            Some(("format", v)) => format = v.parse::<u32>().ok(),
            Some(("meta", v)) => meta_len = v.parse::<usize>().ok(),
            Some(("state", v)) => state_len = v.parse::<usize>().ok(),
            Some(("crc32", v)) => crc = u32::from_str_radix(v, 16).ok(),
            _ => {}
        }
    }
    if format != Some(FILE_FORMAT) {
        return Err(format!(
            "its header `{line}` is not file format {FILE_FORMAT}, the one this build reads"
        ));
    }
    let (Some(meta_len), Some(state_len), Some(crc)) = (meta_len, state_len, crc) else {
        return Err(format!(
            "its header `{line}` lacks a readable meta=, state= or crc32="
        ));
    };
    let body = &bytes[newline + 1..];
    if meta_len.checked_add(state_len) != Some(body.len()) {
        return Err(format!(
            "it holds {} bytes after the header but the header says {meta_len} + {state_len}: \
             the file is truncated or has trailing data",
            body.len()
        ));
    }
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(format!(
            "checksum mismatch: the header says crc32={crc:08x} but the content hashes to \
             {actual:08x}"
        ));
    }
    let (meta, data) = body.split_at(meta_len);
    let meta =
        serde_json::from_slice(meta).map_err(|e| format!("its metadata does not decode: {e}"))?;
    Ok(StoredSnapshot {
        meta,
        data: data.to_vec(),
    })
}

/// The snapshot saved in `dir`, if any, checked, with the file it came
/// from.
fn load(dir: &Path) -> Result<Option<(PathBuf, StoredSnapshot)>, String> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored = decode(&bytes).map_err(|e| {
                format!("the snapshot {} is damaged: {e}; {ADVICE}", path.display())
            })?;
            return Ok(Some((path, stored)));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    }
    // An earlier build's file: JSON, the state as an array of numbers,
    // no checksum (a damaged one mostly fails to parse).
    let path = dir.join(OLD_SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: StoredSnapshot = serde_json::from_slice(&bytes).map_err(|e| {
                format!("the snapshot {} is damaged ({e}); {ADVICE}", path.display())
            })?;
            Ok(Some((path, stored)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Write the snapshot file atomically (temp, fsync, rename, fsync the
/// dir), then drop an earlier build's file. Errors name the file.
fn persist(dir: &Path, stored: &StoredSnapshot) -> Result<(), String> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let bytes = encode(stored).map_err(|e| format!("encoding the snapshot: {e}"))?;
    {
        let mut f = std::fs::File::create(&tmp).map_err(at(&tmp))?;
        f.write_all(&bytes).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
    }
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE)).map_err(at(&tmp))?;
    match std::fs::remove_file(dir.join(OLD_SNAPSHOT_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(super::io_at(&dir.join(OLD_SNAPSHOT_FILE), &e))
        }
        _ => {}
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))
}

/// Persist, keeping a failure in `fault` (it stops raft).
/// `io_at` as a `map_err` argument.
fn at(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| super::io_at(path, &e)
}

fn save(dir: &Path, stored: &StoredSnapshot, fault: &Fault) -> Result<(), StorageError> {
    blocking(|| persist(dir, stored)).map_err(|e| {
        fault.record(format!("the raft snapshot cannot be saved: {e}"));
        snap_err(e)
    })
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
            save(dir, &stored, &self.fault)?;
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
            fault: self.fault.clone(),
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
            save(dir, &stored, &self.fault)?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use openraft::{CommittedLeaderId, Membership as Config};

    use super::*;

    fn sample() -> StoredSnapshot {
        let mut s = State::new();
        s.apply(
            3,
            0,
            state::Command::KvSet {
                key: "a".into(),
                value: b"1".to_vec(),
                flags: 0,
            },
        )
        .unwrap();
        let last = LogId::new(CommittedLeaderId::new(1, 1), 3);
        StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(last),
                last_membership: StoredMembership::new(
                    Some(last),
                    Config::new(vec![std::collections::BTreeSet::from([1])], None),
                ),
                snapshot_id: "1-3-0".into(),
            },
            data: serde_json::to_vec(&s.snapshot()).unwrap(),
        }
    }

    #[test]
    fn a_saved_snapshot_loads_and_a_flipped_byte_fails_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let stored = sample();
        persist(dir.path(), &stored).unwrap();
        let (path, back) = load(dir.path()).unwrap().unwrap();
        assert_eq!(path, dir.path().join(SNAPSHOT_FILE));
        assert_eq!((back.meta, back.data), (stored.meta, stored.data));
        // The state's JSON is stored as it is, not as numbers.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(7).position(|w| w == b"\"key\":\"").unwrap();
        bytes[at + 7] ^= 0x02; // key "a" becomes "c"
        std::fs::write(&path, &bytes).unwrap();
        let e = load(dir.path()).err().unwrap();
        assert!(
            e.contains(SNAPSHOT_FILE) && e.contains("checksum mismatch"),
            "{e}"
        );
        // Cut short.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let e = load(dir.path()).err().unwrap();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn a_snapshot_of_an_earlier_build_loads_and_is_replaced_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let stored = sample();
        // Earlier builds: the whole struct as JSON, the state as numbers.
        let old = serde_json::to_vec(&stored).unwrap();
        assert!(old.starts_with(b"{\"meta\""));
        std::fs::write(dir.path().join(OLD_SNAPSHOT_FILE), &old).unwrap();
        let (path, back) = load(dir.path()).unwrap().unwrap();
        assert_eq!(path, dir.path().join(OLD_SNAPSHOT_FILE));
        assert_eq!(back.data, stored.data);
        assert!(restore(&back).is_ok());
        persist(dir.path(), &stored).unwrap();
        assert!(!dir.path().join(OLD_SNAPSHOT_FILE).exists());
        assert_eq!(
            load(dir.path()).unwrap().unwrap().0,
            dir.path().join(SNAPSHOT_FILE)
        );
    }
}
