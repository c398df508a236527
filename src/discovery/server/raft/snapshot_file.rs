//! The raft snapshot file: written as a stream straight from the state,
//! read back and sent to followers from where it lies, never held in
//! memory whole.
//!
//! `<data-dir>/raft-snapshot` is a header line, the metadata's JSON, then
//! the state's JSON (a [`state::Snapshot`]):
//!
//! ```text
//! pilotfish-raft-snapshot format=2 meta=<bytes> state=<bytes> crc32=<8 hex digits>    \n
//! {"last_log_id":...}{"format":1,"state":{...}}
//! ```
//!
//! The CRC-32 covers both JSON parts. The state's JSON is serialised from
//! the live state (a [`state::SnapshotView`], no copy) through a buffered
//! writer into the file, so its length and checksum are known only at its
//! end: the header is written last, over [`HEADER_ROOM`] bytes kept for it
//! at the start, padded with spaces (a reader splits the line on spaces
//! and skips empty words, so this build's files and the unpadded ones of
//! earlier builds read alike, and earlier builds read these). A file is
//! written to `raft-snapshot.tmp`, fsynced, renamed over the old one and
//! the directory fsynced: after a crash it is the old snapshot or the new
//! one, never a mix. A file whose header, lengths or checksum are wrong is
//! refused at start, naming it. `raft-snapshot.json` of earlier builds (one
//! JSON object whose state was an array of byte numbers, without a
//! checksum) is still loaded (the state machine rewrites it in this format
//! at once and it is then removed).
//!
//! openraft reads and writes snapshots through [`SnapshotBody`]: the
//! state's JSON in place in its file, read and written at positions of its
//! own (`pread`/`pwrite`), so a snapshot sent to several followers at once
//! is one file and no copy. Followers receive the state's JSON alone, as
//! from earlier builds, into an anonymous file, which the state machine
//! then copies into its snapshot file. With `--dev` every snapshot is an
//! anonymous temporary file (`O_TMPFILE` in `$TMPDIR`): out of the
//! process's memory, and gone once closed, even after a crash.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use openraft::{Snapshot, SnapshotMeta};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::{NodeId, Peer, TypeConfig};
use crate::discovery::server::blocking;
use crate::discovery::server::state;

/// The snapshot file inside the data dir.
pub const SNAPSHOT_FILE: &str = "raft-snapshot";
const SNAPSHOT_TMP: &str = "raft-snapshot.tmp";
/// The snapshot file of earlier builds: read when there is no
/// [`SNAPSHOT_FILE`], removed once one is written.
pub const OLD_SNAPSHOT_FILE: &str = "raft-snapshot.json";
/// The header line's first word.
const MAGIC: &str = "pilotfish-raft-snapshot";
/// The file layout this build writes and reads.
const FILE_FORMAT: u32 = 2;
/// The longest header line a reader looks for.
const MAX_HEADER: usize = 256;
/// The room kept for the header line, newline included: the longest one
/// (20-digit lengths) takes 100 bytes.
const HEADER_ROOM: usize = 128;
/// The buffer between the serialiser and the file.
const BUFFER: usize = 1 << 20;

/// openraft's snapshot metadata.
pub type Meta = SnapshotMeta<NodeId, Peer>;

/// A snapshot in its file: the metadata, and where the state's JSON is.
pub struct SnapshotFile {
    pub meta: Meta,
    file: Arc<File>,
    /// The state's JSON runs from here to the end of the file.
    state_at: u64,
}

impl SnapshotFile {
    /// The snapshot as openraft hands it around: its metadata and a handle
    /// on the state's JSON (cheap: the file is shared).
    pub fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(SnapshotBody {
                file: self.file.clone(),
                start: self.state_at,
                pos: 0,
            }),
        }
    }

    /// The last index the snapshot covers (0: none).
    pub fn index(&self) -> u64 {
        self.meta.last_log_id.map_or(0, |l| l.index)
    }

    /// A snapshot received with `--dev`: its anonymous file as it is.
    pub fn received(meta: Meta, body: SnapshotBody) -> SnapshotFile {
        SnapshotFile {
            meta,
            file: body.file,
            state_at: body.start,
        }
    }
}

/// A snapshot's state JSON as openraft reads (to send it) and writes (to
/// receive it) a snapshot: bytes `start..` of a file, at a position of its
/// own.
pub struct SnapshotBody {
    file: Arc<File>,
    start: u64,
    pos: u64,
}

impl SnapshotBody {
    /// An empty body to receive a snapshot into: an anonymous file in the
    /// data dir, or in `$TMPDIR` with `--dev`.
    pub fn receive(dir: Option<&Path>) -> Result<SnapshotBody, String> {
        let file = match dir {
            Some(dir) => tempfile::tempfile_in(dir).map_err(|e| super::io_at(dir, &e))?,
            None => tempfile::tempfile().map_err(|e| super::io_at(&std::env::temp_dir(), &e))?,
        };
        Ok(SnapshotBody {
            file: Arc::new(file),
            start: 0,
            pos: 0,
        })
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len().saturating_sub(self.start))
    }

    /// A reader of the whole body, from its start.
    fn reader(&self) -> std::io::Result<ReadAt<'_>> {
        Ok(ReadAt {
            file: &self.file,
            pos: self.start,
            end: self.start + self.len()?,
        })
    }

    /// The state it holds, parsed as it is read (the JSON is never in
    /// memory whole).
    pub fn read_state(&self) -> Result<state::Snapshot, String> {
        let reader = self.reader().map_err(|e| e.to_string())?;
        serde_json::from_reader(BufReader::with_capacity(BUFFER, reader))
            .map_err(|e| format!("the snapshot's state is damaged: {e}"))
    }
}

/// `[pos, end)` of a file as a reader, by `pread`: no file offset shared.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl AsyncRead for SnapshotBody {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let at = this.start + this.pos;
        let n = blocking(|| this.file.read_at(buf.initialize_unfilled(), at))?;
        buf.advance(n);
        this.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapshotBody {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let at = this.start + this.pos;
        let n = blocking(|| this.file.write_at(buf, at))?;
        this.pos += n as u64;
        Poll::Ready(Ok(n))
    }

    // Written with `pwrite`, nothing buffered; made durable by the copy
    // into the snapshot file.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for SnapshotBody {
    fn start_seek(self: Pin<&mut Self>, to: std::io::SeekFrom) -> std::io::Result<()> {
        let this = self.get_mut();
        let base = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => this.len()?.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => this.pos.checked_add_signed(d),
        };
        this.pos = base.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the snapshot",
            )
        })?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

/// A snapshot file being written: room for the header, the metadata
/// ([`Draft::meta`]), then the state's JSON ([`Draft::state`] or
/// [`Draft::copy`]).
pub struct Draft {
    out: BufWriter<File>,
    /// The temp file (`None`: an anonymous one, `--dev`).
    tmp: Option<PathBuf>,
    crc: crc32fast::Hasher,
    meta: Option<Meta>,
    meta_len: u64,
    state_len: u64,
}

impl Draft {
    /// Start a snapshot file: `raft-snapshot.tmp` in the data dir, or an
    /// anonymous file with `--dev`. Opened before the state is locked.
    pub fn create(dir: Option<&Path>) -> Result<Draft, String> {
        let (file, tmp) = match dir {
            Some(dir) => {
                let tmp = dir.join(SNAPSHOT_TMP);
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)
                    .map_err(|e| super::io_at(&tmp, &e))?;
                (file, Some(tmp))
            }
            None => {
                let file =
                    tempfile::tempfile().map_err(|e| super::io_at(&std::env::temp_dir(), &e))?;
                (file, None)
            }
        };
        let mut draft = Draft {
            out: BufWriter::with_capacity(BUFFER, file),
            tmp,
            crc: crc32fast::Hasher::new(),
            meta: None,
            meta_len: 0,
            state_len: 0,
        };
        let room = draft.out.write_all(&[b' '; HEADER_ROOM]);
        room.map_err(|e| draft.failed(&e))?;
        Ok(draft)
    }

    /// Write the snapshot's metadata, once, before its state.
    pub fn meta(&mut self, meta: Meta) -> Result<(), String> {
        if self.meta.is_some() {
            return Err("a snapshot's metadata is written once".into());
        }
        let json = serde_json::to_vec(&meta).map_err(|e| format!("encoding the snapshot: {e}"))?;
        self.out.write_all(&json).map_err(|e| self.failed(&e))?;
        self.crc.update(&json);
        self.meta_len = json.len() as u64;
        self.meta = Some(meta);
        Ok(())
    }

    fn check_meta(&self) -> Result<(), String> {
        match self.meta {
            Some(_) => Ok(()),
            None => Err("a snapshot's metadata goes before its state".into()),
        }
    }

    /// Serialise the state (as a [`state::SnapshotView`]) into the file.
    pub fn state(&mut self, state: &impl Serialize) -> Result<(), String> {
        self.check_meta()?;
        serde_json::to_writer(&mut *self, state).map_err(|e| self.failed(&e.into()))
    }

    /// Copy a received state's JSON into the file.
    pub fn copy(&mut self, body: &SnapshotBody) -> Result<(), String> {
        self.check_meta()?;
        let copied = body
            .reader()
            .and_then(|mut r| std::io::copy(&mut r, &mut *self));
        copied.map(|_| ()).map_err(|e| self.failed(&e))
    }

    /// The error for a failed write, naming the file.
    fn failed(&self, e: &std::io::Error) -> String {
        match &self.tmp {
            Some(tmp) => super::io_at(tmp, e),
            None => format!(
                "a temporary file in {}",
                super::io_at(&std::env::temp_dir(), e)
            ),
        }
    }

    /// Bytes written so far, header room included.
    pub fn bytes(&self) -> u64 {
        HEADER_ROOM as u64 + self.meta_len + self.state_len
    }

    /// Complete the file (flush, header, fsync) and, in a data dir, put it
    /// in place (rename over the old one, drop an earlier build's file,
    /// fsync the directory). Errors name the file.
    pub fn finish(mut self) -> Result<SnapshotFile, String> {
        let Some(meta) = self.meta.take() else {
            return Err("a snapshot needs its metadata".into());
        };
        let header = format!(
            "{MAGIC} format={FILE_FORMAT} meta={} state={} crc32={:08x}",
            self.meta_len,
            self.state_len,
            self.crc.clone().finalize()
        );
        let mut line = [b' '; HEADER_ROOM];
        line[..header.len()].copy_from_slice(header.as_bytes());
        line[HEADER_ROOM - 1] = b'\n';
        let state_at = HEADER_ROOM as u64 + self.meta_len;
        let tmp = self.tmp.clone();
        let file = self.out.into_inner().map_err(|e| {
            let e = e.into_error();
            match &tmp {
                Some(tmp) => super::io_at(tmp, &e),
                None => e.to_string(),
            }
        })?;
        file.write_all_at(&line, 0).map_err(|e| {
            tmp.as_deref()
                .map_or(e.to_string(), |t| super::io_at(t, &e))
        })?;
        if let Some(tmp) = &tmp {
            file.sync_all().map_err(|e| super::io_at(tmp, &e))?;
            let dir = tmp.parent().unwrap_or(Path::new("."));
            put_in_place(dir, tmp)?;
        }
        Ok(SnapshotFile {
            meta,
            file: Arc::new(file),
            state_at,
        })
    }
}

impl Write for Draft {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.state_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Rename `tmp` over the snapshot file, drop an earlier build's file and
/// fsync the directory.
fn put_in_place(dir: &Path, tmp: &Path) -> Result<(), String> {
    std::fs::rename(tmp, dir.join(SNAPSHOT_FILE)).map_err(|e| super::io_at(tmp, &e))?;
    let old = dir.join(OLD_SNAPSHOT_FILE);
    match std::fs::remove_file(&old) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(super::io_at(&old, &e));
        }
        _ => {}
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| super::io_at(dir, &e))
}

/// What a data dir's snapshot file holds.
pub enum Loaded {
    /// This build's format, checked, its state still in the file.
    File(SnapshotFile),
    /// An earlier build's `raft-snapshot.json`, parsed (boxed: a state is
    /// large, and this variant is rare).
    Old(Meta, Box<state::Snapshot>),
}

/// The snapshot saved in `dir`, if any, with the file it came from. A
/// current file is checked (header, lengths, checksum, metadata) and its
/// state left in place; the error says what is wrong.
pub fn load(dir: &Path) -> Result<Option<(PathBuf, Loaded)>, String> {
    let path = dir.join(SNAPSHOT_FILE);
    match File::open(&path) {
        Ok(file) => return Ok(Some((path, Loaded::File(check(file)?)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    }
    // An earlier build's file: JSON, the state as an array of numbers,
    // no checksum (a damaged one mostly fails to parse).
    #[derive(Deserialize)]
    struct OldFile {
        meta: Meta,
        /// JSON of a [`state::Snapshot`].
        data: Vec<u8>,
    }
    let path = dir.join(OLD_SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let old: OldFile =
                serde_json::from_slice(&bytes).map_err(|e| format!("it does not parse: {e}"))?;
            let state = serde_json::from_slice::<state::Snapshot>(&old.data)
                .map_err(|e| format!("the snapshot's state is damaged: {e}"))?;
            Ok(Some((path, Loaded::Old(old.meta, Box::new(state)))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Check a snapshot file (header, lengths, checksum, metadata).
fn check(file: File) -> Result<SnapshotFile, String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut head = vec![0; MAX_HEADER.min(usize::try_from(size).unwrap_or(MAX_HEADER))];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| e.to_string())?;
    let newline = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| format!("it does not start with a `{MAGIC}` header line"))?;
    let line = std::str::from_utf8(&head[..newline])
        .map_err(|_| "its header line is not UTF-8".to_string())?;
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(format!("it does not start with a `{MAGIC}` header line"));
    }
    let (mut format, mut meta_len, mut state_len, mut crc) = (None, None, None, None);
    for word in words {
        match word.split_once('=') {
            Some(("format", v)) => format = v.parse::<u32>().ok(),
            Some(("meta", v)) => meta_len = v.parse::<u64>().ok(),
            Some(("state", v)) => state_len = v.parse::<u64>().ok(),
            Some(("crc32", v)) => crc = u32::from_str_radix(v, 16).ok(),
            _ => {}
        }
    }
    let line = line.trim_end();
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
    let body_at = newline as u64 + 1;
    let body = size - body_at;
    if meta_len.checked_add(state_len) != Some(body) {
        return Err(format!(
            "it holds {body} bytes after the header but the header says {meta_len} + \
             {state_len}: the file is truncated or has trailing data"
        ));
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut reader = ReadAt {
        file: &file,
        pos: body_at,
        end: size,
    };
    let mut chunk = vec![0; BUFFER];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
    }
    let actual = hasher.finalize();
    if actual != crc {
        return Err(format!(
            "checksum mismatch: the header says crc32={crc:08x} but the content hashes to \
             {actual:08x}"
        ));
    }
    let mut meta = vec![0; usize::try_from(meta_len).map_err(|e| e.to_string())?];
    file.read_exact_at(&mut meta, body_at)
        .map_err(|e| e.to_string())?;
    let meta =
        serde_json::from_slice(&meta).map_err(|e| format!("its metadata does not decode: {e}"))?;
    Ok(SnapshotFile {
        meta,
        file: Arc::new(file),
        state_at: body_at + meta_len,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use openraft::{CommittedLeaderId, Membership as Config, StoredMembership};
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;
    use crate::discovery::server::raft::LogId;
    use crate::discovery::server::state::State;

    /// Metadata and a state with one key, at index 3.
    pub(in crate::discovery::server::raft) fn sample() -> (Meta, State) {
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
        let meta = Meta {
            last_log_id: Some(last),
            last_membership: StoredMembership::new(
                Some(last),
                Config::new(vec![std::collections::BTreeSet::from([1])], None),
            ),
            snapshot_id: "1-3-0".into(),
        };
        (meta, s)
    }

    /// `raft-snapshot.json` as earlier builds wrote it: the whole struct
    /// as JSON, the state's JSON as an array of numbers.
    pub(in crate::discovery::server::raft) fn write_old_file(dir: &Path, meta: &Meta, s: &State) {
        let old = serde_json::json!({
            "meta": meta,
            "data": serde_json::to_vec(&s.snapshot()).unwrap(),
        });
        std::fs::write(dir.join(OLD_SNAPSHOT_FILE), old.to_string()).unwrap();
    }

    fn write(dir: Option<&Path>, meta: &Meta, s: &State) -> SnapshotFile {
        let mut draft = Draft::create(dir).unwrap();
        draft.meta(meta.clone()).unwrap();
        draft.state(&s.snapshot_view()).unwrap();
        draft.finish().unwrap()
    }

    fn loaded(dir: &Path) -> SnapshotFile {
        match load(dir).unwrap().unwrap() {
            (_, Loaded::File(f)) => f,
            (_, Loaded::Old(..)) => panic!("an old file"),
        }
    }

    async fn body_bytes(file: &SnapshotFile) -> Vec<u8> {
        let mut out = Vec::new();
        file.to_snapshot()
            .snapshot
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn a_written_snapshot_loads_and_its_body_is_the_states_json() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, s) = sample();
        let written = write(Some(dir.path()), &meta, &s);
        assert!(!dir.path().join(SNAPSHOT_TMP).exists());
        let back = loaded(dir.path());
        assert_eq!(back.meta, meta);
        assert_eq!(
            back.to_snapshot().snapshot.read_state().unwrap(),
            s.snapshot()
        );
        // What followers are sent: the state's JSON alone, as before.
        let json = serde_json::to_vec(&s.snapshot()).unwrap();
        assert_eq!(body_bytes(&back).await, json);
        assert_eq!(body_bytes(&written).await, json);
        // The header is padded to its room, the rest is as before.
        let bytes = std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap();
        let head = std::str::from_utf8(&bytes[..HEADER_ROOM]).unwrap();
        assert!(
            head.starts_with("pilotfish-raft-snapshot format=2 meta="),
            "{head}"
        );
        assert!(head.ends_with(" \n"), "{head:?}");
        assert!(bytes.ends_with(&json));
    }

    #[test]
    fn an_unpadded_file_of_an_earlier_build_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, s) = sample();
        // As the previous build wrote it: the header exactly as long as it
        // needs to be.
        let meta_json = serde_json::to_vec(&meta).unwrap();
        let state_json = serde_json::to_vec(&s.snapshot()).unwrap();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&meta_json);
        crc.update(&state_json);
        let mut bytes = format!(
            "{MAGIC} format=2 meta={} state={} crc32={:08x}\n",
            meta_json.len(),
            state_json.len(),
            crc.finalize()
        )
        .into_bytes();
        bytes.extend_from_slice(&meta_json);
        bytes.extend_from_slice(&state_json);
        std::fs::write(dir.path().join(SNAPSHOT_FILE), &bytes).unwrap();
        let back = loaded(dir.path());
        assert_eq!(back.meta, meta);
        assert_eq!(
            back.to_snapshot().snapshot.read_state().unwrap(),
            s.snapshot()
        );
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum_and_a_cut_file_its_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, s) = sample();
        write(Some(dir.path()), &meta, &s);
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(7).position(|w| w == b"\"key\":\"").unwrap();
        bytes[at + 7] ^= 0x02; // key "a" becomes "c"
        std::fs::write(&path, &bytes).unwrap();
        let e = load(dir.path()).err().unwrap();
        assert!(e.contains("checksum mismatch"), "{e}");
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let e = load(dir.path()).err().unwrap();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(&path, b"{\"meta\": garbage").unwrap();
        let e = load(dir.path()).err().unwrap();
        assert!(e.contains("header line"), "{e}");
    }

    #[test]
    fn a_snapshot_of_an_earlier_build_loads_and_the_next_one_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, s) = sample();
        write_old_file(dir.path(), &meta, &s);
        let Some((path, Loaded::Old(back_meta, back))) = load(dir.path()).unwrap() else {
            panic!("not read as an earlier build's file");
        };
        assert_eq!(path, dir.path().join(OLD_SNAPSHOT_FILE));
        assert_eq!((back_meta, *back), (meta.clone(), s.snapshot()));
        write(Some(dir.path()), &meta, &s);
        assert!(!dir.path().join(OLD_SNAPSHOT_FILE).exists());
        assert_eq!(loaded(dir.path()).meta, meta);
    }

    #[tokio::test]
    async fn a_body_received_in_chunks_is_copied_into_a_snapshot_file() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, s) = sample();
        let json = serde_json::to_vec(&s.snapshot()).unwrap();
        let mut body = SnapshotBody::receive(Some(dir.path())).unwrap();
        // As openraft writes chunks: the second half first, after a seek.
        let half = json.len() / 2;
        body.seek(std::io::SeekFrom::Start(half as u64))
            .await
            .unwrap();
        body.write_all(&json[half..]).await.unwrap();
        body.seek(std::io::SeekFrom::Start(0)).await.unwrap();
        body.write_all(&json[..half]).await.unwrap();
        assert_eq!(
            body.seek(std::io::SeekFrom::End(0)).await.unwrap(),
            json.len() as u64
        );
        assert_eq!(body.read_state().unwrap(), s.snapshot());
        let mut draft = Draft::create(Some(dir.path())).unwrap();
        assert!(
            draft.copy(&body).is_err(),
            "the state went before the metadata"
        );
        draft.meta(meta.clone()).unwrap();
        draft.copy(&body).unwrap();
        draft.finish().unwrap();
        let back = loaded(dir.path());
        assert_eq!(body_bytes(&back).await, json);
        // No file but the snapshot is left in the data dir.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SNAPSHOT_FILE)]);
    }

    #[tokio::test]
    async fn without_a_data_dir_a_snapshot_is_an_anonymous_file() {
        let (meta, s) = sample();
        let file = write(None, &meta, &s);
        assert_eq!(
            body_bytes(&file).await,
            serde_json::to_vec(&s.snapshot()).unwrap()
        );
        assert_eq!(
            file.to_snapshot().snapshot.read_state().unwrap(),
            s.snapshot()
        );
    }
}
