//! The raft log: an append-only, checksummed, segmented file log in
//! `<data-dir>/raft-log/` (in memory for `--dev`), the design of etcd's
//! WAL and of HashiCorp's raft-wal.
//!
//! - `<first index>.wal`: segments of records, each `[len u32][crc32 u32]
//!   [kind u8][payload]` (little endian; the checksum covers kind and
//!   payload). Kinds: a log entry (JSON [`Entry`]), the commit marker
//!   (JSON `Option<LogId>`), or the batch record that starts every batch
//!   (its sequence number, `u64`). A segment is preallocated to
//!   [`SEGMENT_BYTES`] so an append does not grow the file (measured: 0.09
//!   against 0.15 ms per `fdatasync`), and a new one is started once a
//!   segment is full.
//! - `meta.json`: the vote and the purge point, replaced atomically (temp
//!   file, fsync, rename, directory fsync). Written when the log is
//!   created, before any segment, so a log without it is reported.
//! - `LOCK`: held (`flock`) while the log is open, so a second process on
//!   the same data dir is refused with a clear error.
//!
//! `append` keeps the entries in memory (readable at once) and hands them to
//! one writer thread, which writes everything queued with one `pwrite` and
//! one `fdatasync` and only then tells openraft they are flushed: an
//! acknowledged entry survives a crash or power loss. One append costs one
//! small sequential write, where a B-tree store rewrites a dozen pages per
//! commit (measured here: about 0.1 ms against 0.4 ms per fsync).
//!
//! Recovery reads the segments in order. A record that is incomplete or
//! fails its checksum is an unfinished write only if it is in the last
//! batch (whose `fdatasync` never returned, so nothing in it was
//! acknowledged, though its later records may pass their checksums): no
//! intact batch record with a higher sequence number follows it. Then the
//! bytes from it on are discarded before anything new is written, so a
//! later, shorter batch can never be followed by stale records. Otherwise
//! synced, acknowledged entries were damaged: the open fails, naming the
//! file and offset and how to recover, as it does for damage in any
//! segment but the last and for a gap in the entries (a lost segment).
//! Failing writes (a full disk) are kept in the [`Fault`] and stop the
//! agent, naming the cause and the file.
//!
//! The commit marker is written with the next batch of entries, never
//! before the entries it covers; a marker that lags only means a restart
//! replays a little less before the leader confirms the rest. The vote,
//! truncation and purging first wait for the writer to drain, so they
//! apply after every append before them. Reads of entries from the files
//! hold a shared lock that truncation takes exclusively, so a reader never
//! reads a place that was cut and then refilled.
//!
//! The store counts the bytes of the entries it takes in (their JSON, as
//! written to the segments, also for `--dev`), and a [`Growth`] wakes the
//! snapshot trigger (`compaction`) once a given total is reached.

// openraft's storage and RPC traits dictate their (large) error types.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::{Entry, Fault, LogId, NodeId, StorageError, TypeConfig};
use crate::discovery::server::blocking;

/// The log's directory inside the data dir.
pub const LOG_DIR: &str = "raft-log";
/// The log file of earlier builds (a redb database), refused with advice.
const OLD_LOG_FILE: &str = "raft.redb";
const META_FILE: &str = "meta.json";
const META_TMP: &str = "meta.json.tmp";
const LOCK_FILE: &str = "LOCK";
const SEGMENT_EXT: &str = "wal";
/// A segment is preallocated to this size; a batch that starts past it
/// goes to a new segment (a batch larger than this simply grows the file).
pub const SEGMENT_BYTES: u64 = 16 << 20;

const HEADER: usize = 8;
const KIND_ENTRY: u8 = 1;
const KIND_COMMITTED: u8 = 2;
/// The first record of every batch: its sequence number (`u64`).
const KIND_BATCH: u8 = 3;
/// A framed batch record: header, kind, sequence number.
const BATCH_RECORD: usize = HEADER + 1 + 8;

/// openraft's log storage; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<Mem>>,
    /// The first storage failure, kept to be named once.
    fault: Fault,
    disk: Option<Arc<Disk>>,
    /// Held shared while entries are read from their files and exclusively
    /// while the log is cut: a reader (a replication task) must never read
    /// a place that a truncation freed and a new entry then filled.
    cut: Arc<RwLock<()>>,
    appended: Arc<Appended>,
    /// Tells the [`Growth`] watcher that `appended.wake_at` was reached;
    /// dropped with the last clone of the store, which ends the watch.
    grown: Arc<tokio::sync::watch::Sender<u64>>,
}

/// The bytes of entries the store took in, for the snapshot trigger.
struct Appended {
    /// The entries recovered at open and every entry appended since.
    total: AtomicU64,
    /// Notify the watcher once `total` reaches this.
    wake_at: AtomicU64,
}

/// What the log holds, as every reader sees it.
#[derive(Default)]
struct Mem {
    /// Appended entries not written yet (with `--dev`, every entry).
    pending: BTreeMap<u64, Entry>,
    /// Written entries: where each one is.
    written: BTreeMap<u64, Loc>,
    vote: Option<Vote<NodeId>>,
    purged: Option<LogId>,
    /// The commit marker as read at open and last saved.
    committed: Option<LogId>,
}

/// Where a written entry is: its record's payload in a segment.
#[derive(Clone)]
struct Loc {
    log_id: LogId,
    seg: Arc<Segment>,
    /// Offset of the payload (after the header and the kind byte).
    offset: u64,
    len: u32,
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: File,
}

/// The files, owned by whoever writes: the writer thread, or truncate and
/// purge once the writer is drained.
struct Files {
    dir: PathBuf,
    segments: Vec<Arc<Segment>>,
    /// Where the next record goes in the last segment.
    end: u64,
    /// The sequence number of the next batch.
    next_seq: u64,
}

/// The on-disk side: the files, the writer thread and the lock. Dropping
/// the last handle stops the thread and waits for it, then releases the
/// lock, so the data dir is free once the store is gone.
struct Disk {
    files: Arc<Mutex<Files>>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _lock: nix::fcntl::Flock<File>,
}

impl Drop for Disk {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// Work for the writer thread, done in the order it was sent.
enum Job {
    Append {
        /// [`BATCH_RECORD`] bytes the writer fills in when this job starts
        /// a batch, then framed records, back to back.
        records: Vec<u8>,
        /// Each entry's id, payload offset in `records` and payload length.
        entries: Vec<(LogId, usize, u32)>,
        done: Done,
    },
    /// The commit marker (a framed record), written with the next batch.
    Committed(Vec<u8>),
    /// Answered once every job sent before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

#[derive(Default, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote<NodeId>>,
    purged: Option<LogId>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO {
        source: StorageIOError::write_logs(AnyError::error(e.to_string())),
    }
}

/// What openraft is told when a write fails: the cause is kept in the
/// [`Fault`] and named once, by the agent as it stops, not again by every
/// openraft line that reports the failure.
const FAILED: &str = "a write to the data dir failed; the agent names the cause as it stops";

fn read_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO {
        source: StorageIOError::read_logs(AnyError::error(e.to_string())),
    }
}

/// Append one framed record of `kind` to `out`; answers the payload's
/// offset in `out`.
fn frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) -> usize {
    let len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind);
    let at = out.len();
    out.extend_from_slice(payload);
    at
}

/// Allocate a segment's blocks up front, so appends inside it change no
/// file metadata and `fdatasync` flushes data alone. Best effort: where the
/// file system cannot, the file just grows.
fn preallocate(file: &File) {
    use nix::fcntl::{fallocate, FallocateFlags};
    let _ = fallocate(file, FallocateFlags::empty(), 0, SEGMENT_BYTES as i64);
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replace `meta.json` in `dir` atomically: temp file, fsync, rename,
/// directory fsync.
fn replace_meta(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(META_TMP);
    let mut f = File::create(&tmp)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    sync_dir(dir)
}

/// Whether `dir` holds any log segment.
fn has_segments(dir: &Path) -> Result<bool, String> {
    let listing = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    Ok(listing
        .flatten()
        .any(|item| item.path().extension().and_then(|x| x.to_str()) == Some(SEGMENT_EXT)))
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.{SEGMENT_EXT}")
}

impl Files {
    /// Start a new segment whose first entry is `first`.
    fn rotate(&mut self, first: u64) -> std::io::Result<()> {
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        preallocate(&file);
        file.sync_all()?;
        sync_dir(&self.dir)?;
        self.segments.push(Arc::new(Segment { first, path, file }));
        self.end = 0;
        Ok(())
    }
}

/// Write `jobs` (and the carried commit marker) as one batch with one
/// `fdatasync`, then make the entries readable from disk and answer. The
/// batch starts with a batch record holding the next sequence number,
/// which recovery uses to tell an unfinished write from damage.
fn write_batch(
    files: &Mutex<Files>,
    mem: &Mutex<Mem>,
    fault: &Fault,
    carry: &mut Option<Vec<u8>>,
    jobs: Vec<Job>,
) {
    let mut records = Vec::new();
    let mut placed = Vec::new(); // (log id, payload offset in `records`, len)
    let mut dones = Vec::new();
    let mut barriers = Vec::new();
    for job in jobs {
        match job {
            Job::Append {
                records: r,
                entries,
                done,
            } => {
                // `r` starts with room for the batch record; only the
                // batch's first job keeps it.
                let base = if records.is_empty() {
                    records = r; // the usual batch of one: no copy
                    0
                } else {
                    let base = records.len() - BATCH_RECORD;
                    records.extend_from_slice(r.get(BATCH_RECORD..).unwrap_or_default());
                    base
                };
                placed.extend(
                    entries
                        .into_iter()
                        .map(|(id, at, len)| (id, base + at, len)),
                );
                dones.push(done);
            }
            Job::Committed(r) => *carry = Some(r),
            Job::Barrier(b) => barriers.push(b),
        }
    }
    if !placed.is_empty() {
        if let Some(r) = carry.take() {
            records.extend_from_slice(&r);
        }
        let result = (|| -> Result<(Arc<Segment>, u64), String> {
            let mut f = lock(files);
            if f.segments.is_empty() || f.end >= SEGMENT_BYTES {
                let first = placed[0].0.index;
                f.rotate(first)
                    .map_err(|e| super::io_at(&f.dir.join(segment_name(first)), &e))?;
            }
            let Some(seg) = f.segments.last().cloned() else {
                return Err("no segment to write to".into());
            };
            let start = f.end;
            let mut batch = Vec::with_capacity(BATCH_RECORD);
            frame(&mut batch, KIND_BATCH, &f.next_seq.to_le_bytes());
            f.next_seq += 1;
            records[..BATCH_RECORD].copy_from_slice(&batch);
            seg.file
                .write_all_at(&records, start)
                .and_then(|()| seg.file.sync_data())
                .map_err(|e| super::io_at(&seg.path, &e))?;
            f.end = start + records.len() as u64;
            Ok((seg, start))
        })();
        match &result {
            Ok((seg, start)) => {
                let mut m = lock(mem);
                for (log_id, at, len) in placed {
                    m.written.insert(
                        log_id.index,
                        Loc {
                            log_id,
                            seg: seg.clone(),
                            offset: start + at as u64,
                            len,
                        },
                    );
                    if m.pending
                        .get(&log_id.index)
                        .is_some_and(|e| e.log_id == log_id)
                    {
                        m.pending.remove(&log_id.index);
                    }
                }
            }
            Err(cause) => fault.record(format!("the raft log cannot be written: {cause}")),
        }
        for done in dones {
            done(match &result {
                Ok(_) => Ok(()),
                Err(_) => Err(std::io::Error::other(FAILED)),
            });
        }
    }
    for b in barriers {
        let _ = b.send(());
    }
}

/// What recovery found in the segments.
struct Recovered {
    segments: Vec<Arc<Segment>>,
    end: u64,
    written: BTreeMap<u64, Loc>,
    committed: Option<LogId>,
    /// The sequence number the next batch gets.
    next_seq: u64,
}

/// The advice every report of a damaged log ends with.
const RECOVER_ADVICE: &str = "move this server's data dir away, then either start it afresh \
     and let it rejoin its cluster (the leader sends it a snapshot) or, for a lone server, \
     start it afresh and restore a saved snapshot (pilotfish snapshot restore)";

fn damaged(path: &Path, offset: u64, what: &str) -> String {
    format!(
        "the raft log is damaged: {} at offset {offset}: {what}; {RECOVER_ADVICE}",
        path.display()
    )
}

/// One record as read from a segment.
enum Read<'a> {
    Record {
        kind: u8,
        payload: &'a [u8],
        /// Where the next record starts.
        end: usize,
    },
    /// A zero length: the preallocated, never written rest of the segment.
    End,
    /// Incomplete or failing its checksum.
    Bad(&'static str),
}

fn read_record(bytes: &[u8], at: usize) -> Read<'_> {
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if at + HEADER > bytes.len() {
        return Read::End;
    }
    let (len, crc) = (word(at), word(at + 4));
    if len == 0 {
        return Read::End;
    }
    let body = at + HEADER;
    let Some(end) = body.checked_add(len as usize).filter(|e| *e <= bytes.len()) else {
        return Read::Bad("a record runs past the end of the file");
    };
    if crc32fast::hash(&bytes[body..end]) != crc {
        return Read::Bad("a record fails its checksum");
    }
    Read::Record {
        kind: bytes[body],
        payload: &bytes[body + 1..end],
        end,
    }
}

/// A batch record's sequence number.
fn batch_seq(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.try_into().ok()?))
}

/// The offset of the first intact batch record after `from` whose sequence
/// number is above `above`. Such a batch was written after the one `from`
/// is in had been synced and acknowledged, so damage at `from` is not an
/// unfinished write. A batch record starts with its length, 9: a byte that
/// JSON never holds raw, so entries cannot imitate one.
fn later_batch(bytes: &[u8], from: usize, above: Option<u64>) -> Option<usize> {
    let length = (BATCH_RECORD - HEADER) as u8;
    let mut p = from;
    while p + BATCH_RECORD <= bytes.len() {
        p += bytes[p..].iter().position(|&b| b == length)?;
        if let Read::Record {
            kind: KIND_BATCH,
            payload,
            ..
        } = read_record(bytes, p)
        {
            if batch_seq(payload).is_some_and(|seq| above.is_none_or(|a| seq > a)) {
                return Some(p);
            }
        }
        p += 1;
    }
    None
}

/// Read every segment in `dir`, in order, skipping entries at or below
/// `purged`.
///
/// Only the last batch can be unfinished: the writer starts a batch only
/// after the one before it is synced. So a record that is incomplete or
/// fails its checksum is cut off (with everything after it) only when no
/// intact batch record with a higher sequence number follows it: then it
/// belongs to the last batch, whose `fdatasync` never returned, and
/// records after it in that batch may pass their checksums and still were
/// never acknowledged. When a later batch follows, the damage hit synced,
/// acknowledged entries: recovery refuses, naming the file and offset.
/// (Damage in the last batch itself cannot be told from an unfinished
/// write; it loses that batch, which the leader sends again.)
fn recover(dir: &Path, purged: Option<LogId>) -> Result<Recovered, String> {
    let mut names: Vec<(u64, PathBuf)> = Vec::new();
    let listing = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for item in listing {
        let item = item.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let path = item.path();
        if path.extension().and_then(|x| x.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        let first = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                format!(
                    "{} is not a raft log segment name (<first index>.{SEGMENT_EXT}); move it out of {}",
                    path.display(),
                    dir.display()
                )
            })?;
        names.push((first, path));
    }
    names.sort();
    let mut out = Recovered {
        segments: Vec::new(),
        end: 0,
        written: BTreeMap::new(),
        committed: None,
        next_seq: 0,
    };
    // The sequence number of the last batch record read.
    let mut last_seq: Option<u64> = None;
    let count = names.len();
    for (n, (first, path)) in names.into_iter().enumerate() {
        let last_segment = n + 1 == count;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let seg = Arc::new(Segment {
            first,
            path: path.clone(),
            file,
        });
        let mut at = 0usize;
        let torn = loop {
            let (kind, payload, end) = match read_record(&bytes, at) {
                Read::Record { kind, payload, end } => (kind, payload, end),
                Read::End => {
                    // A zeroed length in the middle of the log would end
                    // it early: only the never written rest may follow.
                    if let Some(later) = later_batch(&bytes, at, last_seq) {
                        return Err(damaged(
                            &path,
                            at as u64,
                            &format!(
                                "a record has length zero, but the batch at offset {later} \
                                 after it is intact, so acknowledged entries follow the damage"
                            ),
                        ));
                    }
                    break None;
                }
                Read::Bad(why) => break Some(why),
            };
            match kind {
                KIND_BATCH => {
                    let seq = batch_seq(payload).ok_or_else(|| {
                        damaged(&path, at as u64, "a batch record has the wrong length")
                    })?;
                    last_seq = Some(seq);
                    out.next_seq = out.next_seq.max(seq + 1);
                }
                KIND_ENTRY => {
                    let e: Entry = serde_json::from_slice(payload).map_err(|e| {
                        damaged(&path, at as u64, &format!("an entry does not decode: {e}"))
                    })?;
                    let index = e.log_id.index;
                    if purged.is_none_or(|p| index > p.index) {
                        let expected = match out.written.last_key_value() {
                            Some((prev, _)) => prev + 1,
                            None => purged.map_or(0, |p| p.index + 1),
                        };
                        if index != expected {
                            return Err(missing(&path, at, expected, index, purged));
                        }
                        out.written.insert(
                            index,
                            Loc {
                                log_id: e.log_id,
                                seg: seg.clone(),
                                offset: (at + HEADER + 1) as u64,
                                len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                            },
                        );
                    }
                }
                KIND_COMMITTED => {
                    out.committed = serde_json::from_slice(payload).map_err(|e| {
                        damaged(
                            &path,
                            at as u64,
                            &format!("the commit marker does not decode: {e}"),
                        )
                    })?;
                }
                kind => {
                    return Err(damaged(
                        &path,
                        at as u64,
                        &format!("unknown record kind {kind}"),
                    ));
                }
            }
            at = end;
        };
        if let Some(why) = torn {
            if !last_segment {
                return Err(damaged(&path, at as u64, why));
            }
            if let Some(later) = later_batch(&bytes, at + 1, last_seq) {
                return Err(damaged(
                    &path,
                    at as u64,
                    &format!(
                        "{why}, but the batch at offset {later} after it is intact, so it was \
                         synced and acknowledged: this is damage, not an unfinished write"
                    ),
                ));
            }
            // A batch whose fdatasync never returned: never acknowledged.
            // Drop it and everything after it before anything is written.
            tracing::warn!(
                "raft log {}: dropping an unfinished write at offset {at} ({why}); \
                 it was never acknowledged",
                path.display()
            );
            seg.file
                .set_len(at as u64)
                .and_then(|()| {
                    preallocate(&seg.file);
                    seg.file.sync_all()
                })
                .map_err(|e| format!("cutting the unfinished write off {}: {e}", path.display()))?;
        }
        if last_segment {
            out.end = at as u64;
        }
        out.segments.push(seg);
    }
    Ok(out)
}

/// The report of a gap: entries between the purge point (or the entry
/// before) and `found` are in no segment.
fn missing(path: &Path, at: usize, expected: u64, found: u64, purged: Option<LogId>) -> String {
    let after = match (expected, purged) {
        (0, None) => "nothing was purged, so the log starts at entry 0".to_string(),
        (_, Some(p)) if expected == p.index + 1 => {
            format!("entries up to {} were purged (meta.json)", p.index)
        }
        _ => format!("entry {} comes before it", expected - 1),
    };
    format!(
        "the raft log is incomplete: {} at offset {at} holds entry {found}, but {after}, so \
         entries {expected} to {} are missing (a segment file was deleted or lost, or \
         meta.json is not this log's); {RECOVER_ADVICE}",
        path.display(),
        found - 1
    )
}

impl LogStore {
    /// Open (or create) the log in `<dir>/raft-log`, or in memory when
    /// `dir` is `None`.
    pub fn open(dir: Option<&Path>) -> Result<LogStore, String> {
        let Some(dir) = dir else {
            return Ok(LogStore::new(Arc::default(), Fault::default(), None, 0));
        };
        let log_dir = dir.join(LOG_DIR);
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| format!("creating the data dir {}: {e}", log_dir.display()))?;
        let lock_path = log_dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
        use nix::fcntl::{Flock, FlockArg};
        let lock_file = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(format!(
                    "the data dir {} is in use by another process (its raft log {} is locked); \
                     stop that agent or pick another --data-dir",
                    dir.display(),
                    log_dir.display()
                ))
            }
            Err((_, e)) => return Err(format!("locking {}: {e}", lock_path.display())),
        };
        let meta_path = log_dir.join(META_FILE);
        let meta: Meta = match std::fs::read(&meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is damaged ({e}); restore this server from a snapshot, or remove its \
                     data dir and let it rejoin the cluster",
                    meta_path.display()
                )
            })?,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Written before the first segment, so a log without it
                // lost its vote and purge point.
                if has_segments(&log_dir)? {
                    return Err(format!(
                        "{} is missing but {} holds log segments: this server's vote and the \
                         log's purge point are lost; {RECOVER_ADVICE}",
                        meta_path.display(),
                        log_dir.display()
                    ));
                }
                let bytes = serde_json::to_vec(&Meta::default())
                    .map_err(|e| format!("encoding {}: {e}", meta_path.display()))?;
                replace_meta(&log_dir, &bytes)
                    .map_err(|e| format!("creating {}", super::io_at(&meta_path, &e)))?;
                Meta::default()
            }
            Err(e) => return Err(format!("reading {}: {e}", meta_path.display())),
        };
        let found = recover(&log_dir, meta.purged)?;
        if found.segments.is_empty() && meta.vote.is_none() && dir.join(OLD_LOG_FILE).exists() {
            return Err(format!(
                "{} holds a raft log in the format of an earlier pilotfish build ({OLD_LOG_FILE}), \
                 which this build does not read; remove the data dir and let this server rejoin \
                 its cluster, or restore a snapshot saved with `pilotfish snapshot save`",
                dir.display()
            ));
        }
        let recovered: u64 = found.written.values().map(|l| u64::from(l.len)).sum();
        let mem = Arc::new(Mutex::new(Mem {
            pending: BTreeMap::new(),
            written: found.written,
            vote: meta.vote,
            purged: meta.purged,
            committed: found.committed,
        }));
        let files = Arc::new(Mutex::new(Files {
            dir: log_dir,
            segments: found.segments,
            end: found.end,
            next_seq: found.next_seq,
        }));
        let fault = Fault::default();
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = {
            let (files, mem, fault) = (files.clone(), mem.clone(), fault.clone());
            std::thread::Builder::new()
                .name("raft-log".into())
                .spawn(move || {
                    let mut carry = None;
                    while let Ok(job) = rx.recv() {
                        let mut jobs = vec![job];
                        jobs.extend(rx.try_iter());
                        write_batch(&files, &mem, &fault, &mut carry, jobs);
                    }
                })
                .map_err(|e| format!("starting the raft log writer: {e}"))?
        };
        let disk = Arc::new(Disk {
            files,
            tx: Some(tx),
            thread: Some(thread),
            _lock: lock_file,
        });
        Ok(LogStore::new(mem, fault, Some(disk), recovered))
    }

    fn new(mem: Arc<Mutex<Mem>>, fault: Fault, disk: Option<Arc<Disk>>, bytes: u64) -> LogStore {
        let appended = Appended {
            total: AtomicU64::new(bytes),
            wake_at: AtomicU64::new(u64::MAX),
        };
        LogStore {
            mem,
            fault,
            disk,
            cut: Arc::default(),
            appended: Arc::new(appended),
            grown: Arc::new(tokio::sync::watch::channel(bytes).0),
        }
    }

    /// A watch on the bytes appended to this log, for the snapshot
    /// trigger; `snapshot` is the last index the current snapshot covers
    /// (0: none), so that the entries after it count towards the next one.
    pub fn growth(&self, snapshot: u64) -> Growth {
        let total = self.appended.total.load(Ordering::SeqCst);
        Growth {
            appended: self.appended.clone(),
            grown: self.grown.subscribe(),
            at_snapshot: total.saturating_sub(self.bytes_after(snapshot)),
        }
    }

    /// The bytes of the entries after `index` that the log holds.
    fn bytes_after(&self, index: u64) -> u64 {
        let m = lock(&self.mem);
        let after = index.saturating_add(1);
        let written: u64 = m
            .written
            .range(after..)
            .map(|(_, l)| u64::from(l.len))
            .sum();
        let pending: u64 = m
            .pending
            .range(after..)
            .filter(|(i, _)| !m.written.contains_key(i))
            .map(|(_, e)| encoded_len(e))
            .sum();
        written + pending
    }

    /// Count `bytes` more appended, waking the watcher when it asked to be.
    fn count(&self, bytes: u64) {
        let total = self.appended.total.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if total >= self.appended.wake_at.load(Ordering::SeqCst) {
            self.grown.send_replace(total);
        }
    }

    /// Wait until every append handed to the writer is written; every
    /// other change to the log goes after them.
    async fn drain(&self) -> Result<(), StorageError> {
        let Some(tx) = self.disk.as_ref().and_then(|d| d.tx.as_ref()) else {
            return Ok(()); // in memory: nothing is queued
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        if tx.send(Job::Barrier(done)).is_err() || wait.await.is_err() {
            return Err(io("the raft log writer has stopped"));
        }
        Ok(())
    }

    /// Replace `meta.json` with the vote and purge point in memory.
    fn save_meta(&self, disk: &Disk) -> Result<(), StorageError> {
        let bytes = {
            let m = lock(&self.mem);
            serde_json::to_vec(&Meta {
                vote: m.vote,
                purged: m.purged,
            })
            .map_err(io)?
        };
        let dir = lock(&disk.files).dir.clone();
        blocking(|| replace_meta(&dir, &bytes)).map_err(|e| {
            self.fail(format!(
                "the raft log's {META_FILE} cannot be saved: {}",
                super::io_at(&dir.join(META_FILE), &e)
            ))
        })
    }

    /// Keep `cause` to be named once; openraft gets [`FAILED`].
    fn fail(&self, cause: String) -> StorageError {
        self.fault.record(cause);
        io(FAILED)
    }

    /// The store's first storage failure, shared with whoever names it.
    pub fn fault(&self) -> Fault {
        self.fault.clone()
    }

    /// Append entries; `done` is called once they are durable.
    fn append_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        done: Done,
    ) -> Result<(), StorageError> {
        // Room for the batch record, which only the writer can number.
        let mut records = vec![0; BATCH_RECORD];
        let mut placed = Vec::new();
        let mut bytes = 0;
        {
            let mut m = lock(&self.mem);
            for e in entries {
                if self.disk.is_some() {
                    let json = serde_json::to_vec(&e).map_err(io)?;
                    let at = frame(&mut records, KIND_ENTRY, &json);
                    placed.push((e.log_id, at, u32::try_from(json.len()).unwrap_or(u32::MAX)));
                    bytes += json.len() as u64;
                } else {
                    bytes += encoded_len(&e);
                }
                m.pending.insert(e.log_id.index, e);
            }
        }
        self.count(bytes);
        let Some(tx) = self.disk.as_ref().and_then(|d| d.tx.as_ref()) else {
            done(Ok(())); // in memory: held in `pending` for good
            return Ok(());
        };
        let job = Job::Append {
            records,
            entries: placed,
            done,
        };
        match tx.send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::SendError(job)) => {
                let e = io("the raft log writer has stopped");
                if let Job::Append { done, .. } = job {
                    done(Err(std::io::Error::other(e.to_string())));
                }
                Err(e)
            }
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        let m = lock(&self.mem);
        let pending = m.pending.last_key_value().map(|(_, e)| e.log_id);
        let written = m.written.last_key_value().map(|(_, l)| l.log_id);
        pending.into_iter().chain(written).max_by_key(|id| id.index)
    }

    /// The highest log index stored (0 when empty), for startup decisions.
    pub fn last_index(&self) -> u64 {
        self.last_log_id().map(|id| id.index).unwrap_or(0)
    }

    /// Whether this node ever voted or stored an entry (it then belongs to
    /// a cluster and must never bootstrap another one).
    pub fn has_state(&self) -> bool {
        let (vote, purged) = {
            let m = lock(&self.mem);
            (m.vote.is_some(), m.purged.is_some())
        };
        self.last_index() > 0 || vote || purged
    }
}

/// What the log takes in: bytes appended, and a wake-up once a total is
/// reached. Holds no store: it ends when the store is gone.
pub struct Growth {
    appended: Arc<Appended>,
    grown: tokio::sync::watch::Receiver<u64>,
    at_snapshot: u64,
}

impl Growth {
    /// The byte total at the current snapshot (when the watch started).
    pub fn at_snapshot(&self) -> u64 {
        self.at_snapshot
    }

    /// Wait until the bytes appended reach `total`; the total then, or
    /// `None` once the log is closed.
    pub async fn reached(&mut self, total: u64) -> Option<u64> {
        // Set before reading the total, as `count` adds before reading
        // this: one of the two sees the other's write.
        self.appended.wake_at.store(total, Ordering::SeqCst);
        loop {
            let now = self.appended.total.load(Ordering::SeqCst);
            if now >= total {
                return Some(now);
            }
            self.grown.changed().await.ok()?;
        }
    }
}

/// The bytes of an entry's JSON, as a segment record holds it, without
/// keeping them (`--dev` never encodes its entries).
fn encoded_len(e: &Entry) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing to a counter cannot fail, nor can an entry's serialisation.
    let _ = serde_json::to_writer(&mut n, e);
    n.0
}

fn read_loc(loc: &Loc) -> Result<Entry, StorageError> {
    let mut buf = vec![0u8; loc.len as usize];
    loc.seg
        .file
        .read_exact_at(&mut buf, loc.offset)
        .map_err(|e| {
            read_err(format!(
                "reading entry {} from {}: {e}",
                loc.log_id.index,
                loc.seg.path.display()
            ))
        })?;
    let entry: Entry = serde_json::from_slice(&buf).map_err(|e| {
        read_err(format!(
            "entry {} in {} is damaged: {e}",
            loc.log_id.index,
            loc.seg.path.display()
        ))
    })?;
    if entry.log_id != loc.log_id {
        return Err(read_err(format!(
            "{} holds {} where {} was written",
            loc.seg.path.display(),
            entry.log_id,
            loc.log_id
        )));
    }
    Ok(entry)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        // Pending entries first: the writer records an entry's place before
        // it drops it from `pending`, so each entry is in one of the two.
        let _no_cut = self.cut.read().unwrap_or_else(|e| e.into_inner());
        let (mut out, to_read) = {
            let m = lock(&self.mem);
            let out: BTreeMap<u64, Entry> = m
                .pending
                .range(range.clone())
                .map(|(i, e)| (*i, e.clone()))
                .collect();
            let to_read: Vec<Loc> = m
                .written
                .range(range)
                .filter(|(i, _)| !out.contains_key(i))
                .map(|(_, l)| l.clone())
                .collect();
            (out, to_read)
        };
        for loc in &to_read {
            out.insert(loc.log_id.index, read_loc(loc)?);
        }
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged = lock(&self.mem).purged;
        let last = self.last_log_id().or(purged);
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
        lock(&self.mem).vote = Some(*vote);
        match &self.disk {
            Some(disk) => self.save_meta(disk),
            None => Ok(()),
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(lock(&self.mem).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        lock(&self.mem).committed = committed;
        let Some(tx) = self.disk.as_ref().and_then(|d| d.tx.as_ref()) else {
            return Ok(());
        };
        // Through the writer: in order after the entries it covers.
        let mut record = Vec::new();
        frame(
            &mut record,
            KIND_COMMITTED,
            &serde_json::to_vec(&committed).map_err(io)?,
        );
        tx.send(Job::Committed(record))
            .map_err(|_| io("the raft log writer has stopped"))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.mem).committed)
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
        self.append_entries(entries, Box::new(move |r| callback.log_io_completed(r)))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain().await?;
        let since = log_id.index;
        let _cut = self.cut.write().unwrap_or_else(|e| e.into_inner());
        let first_written = {
            let mut m = lock(&self.mem);
            m.pending.split_off(&since);
            let cut = m.written.split_off(&since);
            cut.into_values().next()
        };
        let (Some(disk), Some(loc)) = (&self.disk, first_written) else {
            return Ok(());
        };
        // Cut the segment holding `since` at its record and delete every
        // later segment, last first, so a crash leaves a prefix.
        let mut f = lock(&disk.files);
        let result = blocking(|| -> std::io::Result<()> {
            while f.segments.last().is_some_and(|s| s.first > loc.seg.first) {
                if let Some(s) = f.segments.pop() {
                    std::fs::remove_file(&s.path)?;
                }
            }
            sync_dir(&f.dir)?;
            let at = loc.offset - HEADER as u64 - 1;
            loc.seg.file.set_len(at)?;
            preallocate(&loc.seg.file);
            loc.seg.file.sync_all()?;
            f.end = at;
            Ok(())
        });
        result.map_err(|e| {
            self.fail(format!(
                "the raft log cannot be truncated at {since}: {}",
                super::io_at(&f.dir, &e)
            ))
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain().await?;
        {
            let mut m = lock(&self.mem);
            m.purged = Some(log_id);
            m.written = m.written.split_off(&(log_id.index + 1));
            m.pending = m.pending.split_off(&(log_id.index + 1));
        }
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        // The purge point first: a crash after it leaves segments that
        // recovery skips.
        self.save_meta(disk)?;
        let mut f = lock(&disk.files);
        let result = blocking(|| -> std::io::Result<()> {
            // A segment all of whose entries are purged: the next one
            // starts at or before the first entry kept. The last segment
            // stays: it is where appends go.
            while f.segments.len() > 1 && f.segments[1].first <= log_id.index + 1 {
                let s = f.segments.remove(0);
                std::fs::remove_file(&s.path)?;
            }
            sync_dir(&f.dir)
        });
        result.map_err(|e| {
            self.fail(format!(
                "the raft log cannot be purged up to {}: {}",
                log_id.index,
                super::io_at(&f.dir, &e)
            ))
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

    fn id(term: u64, index: u64) -> LogId {
        entry(term, index).log_id
    }

    /// Append and wait until the entries are durable.
    async fn put(store: &LogStore, entries: Vec<Entry>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        store
            .append_entries(entries, Box::new(move |r| drop(tx.send(r))))
            .unwrap();
        rx.await.unwrap().unwrap();
    }

    async fn ids(store: &mut LogStore) -> Vec<(u64, u64)> {
        store
            .try_get_log_entries(0..u64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(LOG_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wal"))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn entries_vote_truncate_and_purge_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(Some(dir.path())).unwrap();
            put(&s, (1..=10).map(|i| entry(1, i)).collect()).await;
            s.save_vote(&Vote::new(3, 7)).await.unwrap();
            s.save_committed(Some(id(1, 6))).await.unwrap();
            s.truncate(id(1, 8)).await.unwrap();
            s.purge(id(1, 3)).await.unwrap();
            // The commit marker goes with the next batch.
            put(&s, vec![entry(3, 8)]).await;
        }
        let mut s = LogStore::open(Some(dir.path())).unwrap();
        assert!(s.has_state());
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
        assert_eq!(s.read_committed().await.unwrap(), Some(id(1, 6)));
        assert_eq!(
            ids(&mut s).await,
            vec![(1, 4), (1, 5), (1, 6), (1, 7), (3, 8)]
        );
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.unwrap().index, 3);
        assert_eq!(st.last_log_id.unwrap(), id(3, 8));
    }

    #[tokio::test]
    async fn a_truncated_suffix_never_comes_back_after_a_shorter_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(Some(dir.path())).unwrap();
            // openraft's first entry has index 0.
            put(&s, (0..=10).map(|i| entry(1, i)).collect()).await;
            s.truncate(id(1, 5)).await.unwrap();
            put(&s, vec![entry(2, 5)]).await;
        }
        let mut s = LogStore::open(Some(dir.path())).unwrap();
        assert_eq!(
            ids(&mut s).await,
            vec![(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 5)]
        );
        // And appending goes on after it.
        put(&s, vec![entry(2, 6)]).await;
        assert_eq!(ids(&mut s).await.last(), Some(&(2, 6)));
    }

    /// Every record of a segment file: (offset, kind, payload).
    fn records(bytes: &[u8]) -> Vec<(usize, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Read::Record { kind, payload, end } = read_record(bytes, at) {
            out.push((at, kind, payload.to_vec()));
            at = end;
        }
        out
    }

    fn read_segment(dir: &Path, first: u64) -> Vec<u8> {
        std::fs::read(dir.join(LOG_DIR).join(segment_name(first))).unwrap()
    }

    fn write_segment_at(dir: &Path, first: u64, at: usize, bytes: &[u8]) {
        let seg = dir.join(LOG_DIR).join(segment_name(first));
        let file = OpenOptions::new().write(true).open(seg).unwrap();
        file.write_all_at(bytes, at as u64).unwrap();
    }

    /// The offset of entry `index`'s record in a segment.
    fn record_of(bytes: &[u8], index: u64) -> usize {
        records(bytes)
            .into_iter()
            .find(|(_, kind, payload)| {
                *kind == KIND_ENTRY
                    && serde_json::from_slice::<Entry>(payload)
                        .unwrap()
                        .log_id
                        .index
                        == index
            })
            .unwrap()
            .0
    }

    /// A batch as the writer frames it: its batch record, then entries.
    fn raw_batch(seq: u64, entries: impl IntoIterator<Item = Entry>) -> Vec<u8> {
        let mut batch = Vec::new();
        frame(&mut batch, KIND_BATCH, &seq.to_le_bytes());
        for e in entries {
            frame(&mut batch, KIND_ENTRY, &serde_json::to_vec(&e).unwrap());
        }
        batch
    }

    /// Where the written records of a segment end.
    fn used_end(bytes: &[u8]) -> usize {
        records(bytes)
            .last()
            .map_or(0, |(at, _, payload)| at + HEADER + 1 + payload.len())
    }

    #[tokio::test]
    async fn a_torn_batch_is_dropped_even_though_later_records_in_it_pass_their_checksums() {
        for damage_the_batch_record in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = LogStore::open(Some(dir.path())).unwrap();
                put(&s, (0..=4).map(|i| entry(1, i)).collect()).await;
            }
            // A batch of entries 5..=7 whose start was torn: the records
            // after it are complete and pass their checksums.
            let bytes = read_segment(dir.path(), 0);
            let mut batch = raw_batch(1, (5..=7).map(|i| entry(1, i)));
            let hit = if damage_the_batch_record {
                HEADER + 2
            } else {
                BATCH_RECORD + HEADER + 3
            };
            batch[hit] ^= 0xff;
            write_segment_at(dir.path(), 0, used_end(&bytes), &batch);
            {
                let mut s = LogStore::open(Some(dir.path())).unwrap();
                assert_eq!(s.last_index(), 4);
                // A shorter rewrite of 5 must not be followed by the old 6, 7.
                put(&s, vec![entry(2, 5)]).await;
                assert_eq!(ids(&mut s).await.len(), 6);
            }
            let mut s = LogStore::open(Some(dir.path())).unwrap();
            assert_eq!(
                ids(&mut s).await,
                vec![(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 5)]
            );
        }
    }

    /// Four batches; `damage` changes the segment; the open must refuse,
    /// name the file and the offset of entry 2's record, and leave the
    /// file as it was.
    async fn assert_damage_is_refused(damage: impl Fn(&mut Vec<u8>, usize), what: &str) {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(Some(dir.path())).unwrap();
            put(&s, vec![entry(1, 0), entry(1, 1)]).await;
            put(&s, vec![entry(1, 2), entry(1, 3)]).await;
            put(&s, vec![entry(1, 4)]).await;
            put(&s, vec![entry(1, 5)]).await;
        }
        let mut bytes = read_segment(dir.path(), 0);
        let at = record_of(&bytes, 2);
        damage(&mut bytes, at);
        write_segment_at(dir.path(), 0, 0, &bytes);
        let e = LogStore::open(Some(dir.path())).err().unwrap();
        assert!(e.contains("the raft log is damaged"), "{e}");
        assert!(e.contains(&segment_name(0)), "{e}");
        assert!(e.contains(&format!("at offset {at}: {what}")), "{e}");
        assert!(
            e.contains("rejoin") && e.contains("snapshot restore"),
            "{e}"
        );
        // Nothing was cut: a repaired file still holds every entry.
        assert_eq!(read_segment(dir.path(), 0), bytes);
    }

    #[tokio::test]
    async fn a_damaged_record_followed_by_later_batches_is_refused_not_cut() {
        // A byte flipped in entry 2's payload.
        assert_damage_is_refused(
            |b, at| b[at + HEADER + 5] ^= 0x01,
            "a record fails its checksum, but the batch at offset",
        )
        .await;
        // A length that runs past the end of the file.
        assert_damage_is_refused(
            |b, at| b[at + 3] = 0x7f,
            "a record runs past the end of the file, but the batch at offset",
        )
        .await;
        // A zeroed length would end the log early.
        assert_damage_is_refused(
            |b, at| b[at..at + 4].fill(0),
            "a record has length zero, but the batch at offset",
        )
        .await;
    }

    #[tokio::test]
    async fn a_missing_segment_or_meta_json_is_reported() {
        let make = || async {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = LogStore::open(Some(dir.path())).unwrap();
                for batch in 0..3u64 {
                    put(&s, (0..5).map(|i| entry(1, batch * 5 + i)).collect()).await;
                    lock(&s.disk.as_ref().unwrap().files).end = SEGMENT_BYTES;
                }
            }
            assert_eq!(
                segment_files(dir.path()),
                vec![segment_name(0), segment_name(5), segment_name(10)]
            );
            dir
        };
        let log = |dir: &tempfile::TempDir| dir.path().join(LOG_DIR);

        let dir = make().await;
        std::fs::remove_file(log(&dir).join(segment_name(5))).unwrap();
        let e = LogStore::open(Some(dir.path())).err().unwrap();
        assert!(e.contains("the raft log is incomplete"), "{e}");
        assert!(e.contains(&segment_name(10)), "{e}");
        assert!(e.contains("entries 5 to 9 are missing"), "{e}");

        let dir = make().await;
        std::fs::remove_file(log(&dir).join(segment_name(0))).unwrap();
        let e = LogStore::open(Some(dir.path())).err().unwrap();
        assert!(e.contains("entries 0 to 4 are missing"), "{e}");
        assert!(e.contains("rejoin"), "{e}");

        let dir = make().await;
        std::fs::remove_file(log(&dir).join(META_FILE)).unwrap();
        let e = LogStore::open(Some(dir.path())).err().unwrap();
        assert!(e.contains("meta.json is missing"), "{e}");
        assert!(e.contains("vote"), "{e}");
    }

    #[tokio::test]
    async fn damage_before_the_last_segment_is_reported_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(Some(dir.path())).unwrap();
            put(&s, vec![entry(1, 1), entry(1, 2)]).await;
            // Fill the first segment so the next batch starts another.
            lock(&s.disk.as_ref().unwrap().files).end = SEGMENT_BYTES;
            put(&s, vec![entry(1, 3)]).await;
        }
        assert_eq!(segment_files(dir.path()).len(), 2);
        let seg = dir.path().join(LOG_DIR).join(segment_name(1));
        let file = OpenOptions::new().write(true).open(&seg).unwrap();
        file.write_all_at(b"\xff", HEADER as u64 + 5).unwrap();
        let e = LogStore::open(Some(dir.path())).err().unwrap();
        assert!(e.contains("the raft log is damaged"), "{e}");
        assert!(e.contains(&segment_name(1)), "{e}");
        assert!(e.contains("snapshot restore"), "{e}");
    }

    #[tokio::test]
    async fn segments_rotate_and_purged_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(Some(dir.path())).unwrap();
            for batch in 0..3u64 {
                put(&s, (1..=5).map(|i| entry(1, batch * 5 + i)).collect()).await;
                lock(&s.disk.as_ref().unwrap().files).end = SEGMENT_BYTES;
            }
            assert_eq!(
                segment_files(dir.path()),
                vec![segment_name(1), segment_name(6), segment_name(11)]
            );
            assert_eq!(ids(&mut s).await.len(), 15);
            s.purge(id(1, 7)).await.unwrap();
            assert_eq!(
                segment_files(dir.path()),
                vec![segment_name(6), segment_name(11)]
            );
        }
        let mut s = LogStore::open(Some(dir.path())).unwrap();
        let got = ids(&mut s).await;
        assert_eq!(got.first(), Some(&(1, 8)));
        assert_eq!(got.last(), Some(&(1, 15)));
        // Truncating into an earlier segment drops the later ones.
        s.truncate(id(1, 9)).await.unwrap();
        assert_eq!(segment_files(dir.path()), vec![segment_name(6)]);
        put(&s, vec![entry(2, 9)]).await;
        drop(s);
        let mut s = LogStore::open(Some(dir.path())).unwrap();
        assert_eq!(ids(&mut s).await, vec![(1, 8), (2, 9)]);
    }

    /// A replication task reads entries while the log is cut and refilled
    /// with entries of another length at the same places: every read must
    /// see either the old entries or the new ones, never a mix.
    #[test]
    fn reads_racing_a_truncation_never_see_a_refilled_place() {
        use std::collections::BTreeSet;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = LogStore::open(Some(dir.path())).unwrap();
        rt.block_on(put(&store, (0..=40).map(|i| entry(1, i)).collect()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (mut s, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let got = rt.block_on(s.try_get_log_entries(0..=40)).unwrap();
                    // Between a cut and its refill the log ends at 9.
                    assert!(got.len() == 10 || got.len() == 41, "{}", got.len());
                    let tail: BTreeSet<u64> =
                        got[10..].iter().map(|e| e.log_id.leader_id.term).collect();
                    assert!(tail.len() <= 1, "entries of two rounds: {tail:?}");
                    reads += 1;
                }
                reads
            })
        };
        for round in 0..100u64 {
            // Terms of 1 and of 10 digits: the entries change length.
            let term = if round % 2 == 0 {
                1_000_000_000 + round
            } else {
                1
            };
            rt.block_on(async {
                store.clone().truncate(id(term, 10)).await.unwrap();
                put(&store, (10..=40).map(|i| entry(term, i)).collect()).await;
            });
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn a_second_open_of_the_same_data_dir_is_refused_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _a = LogStore::open(Some(dir.path())).unwrap();
        let e = LogStore::open(Some(dir.path())).err().unwrap();
        assert!(e.contains("in use by another process"), "{e}");
    }

    #[test]
    fn a_log_of_an_earlier_build_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OLD_LOG_FILE), b"redb").unwrap();
        let e = LogStore::open(Some(dir.path())).err().unwrap();
        assert!(e.contains("earlier pilotfish build"), "{e}");
    }

    #[tokio::test]
    async fn growth_counts_the_bytes_after_the_snapshot_and_wakes_at_a_total() {
        let dir = tempfile::tempdir().unwrap();
        let one = encoded_len(&entry(1, 1));
        let s = LogStore::open(Some(dir.path())).unwrap();
        put(&s, vec![entry(1, 0), entry(1, 1), entry(1, 2)]).await;
        drop(s);
        // Reopened with a snapshot at 1: the entry after it counts.
        let s = LogStore::open(Some(dir.path())).unwrap();
        let mut g = s.growth(1);
        assert_eq!(g.at_snapshot(), 2 * one);
        let target = g.at_snapshot() + 3 * one;
        let wait = tokio::spawn(async move { (g.reached(target).await, g) });
        put(&s, vec![entry(1, 3)]).await;
        tokio::task::yield_now().await;
        assert!(!wait.is_finished(), "woken before the total was reached");
        put(&s, vec![entry(1, 4)]).await;
        let (total, mut g) = wait.await.unwrap();
        assert_eq!(total, Some(5 * one));
        // The watch ends with the store.
        drop(s);
        assert_eq!(g.reached(u64::MAX).await, None);
        // In memory (`--dev`), entries count as they would in a file.
        let s = LogStore::open(None).unwrap();
        let mut g = s.growth(0);
        put(&s, vec![entry(1, 1), entry(1, 2)]).await;
        assert_eq!(g.reached(2 * one).await, Some(2 * one));
    }

    #[tokio::test]
    async fn a_fresh_store_has_no_state_and_memory_holds_entries() {
        let s = LogStore::open(None).unwrap();
        assert!(!s.has_state());
        assert_eq!(s.last_index(), 0);
        put(&s, vec![entry(1, 1), entry(1, 2)]).await;
        let mut s2 = s.clone();
        assert_eq!(ids(&mut s2).await, vec![(1, 1), (1, 2)]);
        s2.purge(id(1, 1)).await.unwrap();
        assert_eq!(ids(&mut s2).await, vec![(1, 2)]);
    }
}
