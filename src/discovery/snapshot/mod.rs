//! The snapshot file format, below both the server (which writes and
//! restores it) and the CLI (which verifies what it saved and checks a file
//! before sending it).
//!
//! The file is self-describing: one header line, then the JSON of
//! [`state::Snapshot`] (the same JSON raft snapshots hold):
//!
//! ```text
//! pilotfish-snapshot format=1 index=42 length=1234 sha256=<64 hex digits>\n
//! {"format":1,"state":{...}}
//! ```
//!
//! `format` is the file layout, `index` the raft index the state was read
//! at, `length` the byte count of the JSON after the newline and `sha256` its
//! digest. [`decode`] refuses a file whose header, length, checksum, JSON or
//! state format is wrong, naming what is wrong.
//!
//! `GET /v1/snapshot` answers Consul's container instead ([`archive`]: a
//! gzip'd tar of `meta.json`, `state.bin` = the JSON above, `SHA256SUMS`);
//! [`decode`] takes either. Consul's own `state.bin` (msgpack FSM records)
//! cannot be loaded here, nor ours there.

pub mod archive;

use std::io::Write;

use crate::discovery::server::state;

/// The header line's first word.
pub const MAGIC: &str = "pilotfish-snapshot";
/// The file layout this code writes and reads.
pub const FILE_FORMAT: u32 = 1;
/// The largest snapshot `PUT` takes. A restore travels as one raft entry
/// through the cluster transport, whose requests are capped at 64 MiB;
/// half of that leaves room for the rest of an append batch.
pub const MAX_SNAPSHOT: usize = 32 * 1024 * 1024;
/// The longest header line a reader looks for.
const MAX_HEADER: usize = 256;

/// Why a snapshot file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotFileError {
    #[error(
        "it does not start with a `{MAGIC} format=N ...` header line; \
         only files written by `pilotfish snapshot save` or GET /v1/snapshot can be restored"
    )]
    NotASnapshot,
    #[error("its header line is malformed: {0}")]
    BadHeader(String),
    #[error(
        "its file format {found} is not supported: this version of pilotfish reads format \
         {FILE_FORMAT}; restore it with the pilotfish version that saved it"
    )]
    UnsupportedFormat { found: u32 },
    #[error(
        "it holds {actual} bytes after the header but the header says {expected}: \
         the file is truncated or has trailing data"
    )]
    Length { expected: usize, actual: usize },
    #[error(
        "checksum mismatch: the header says sha256={expected} but the content hashes to \
         {actual}: the file is damaged or was edited"
    )]
    Checksum { expected: String, actual: String },
    #[error("its content is not a pilotfish state: {0}")]
    Content(String),
    #[error(
        "its state format {found} is not supported: this version of pilotfish reads \
         state format {}",
        state::SNAPSHOT_FORMAT
    )]
    StateFormat { found: u32 },
    #[error("its header says index {header} but the state was taken at index {state}")]
    IndexMismatch { header: u64, state: u64 },
    /// A Consul-style archive refused; the text is Consul's.
    #[error("{0}")]
    Archive(#[from] archive::ArchiveError),
}

/// How much an archive may decompress to: the state a restore can carry
/// plus the tar's headers and `meta.json`.
const MAX_ARCHIVE_CONTENT: usize = MAX_SNAPSHOT + 64 * 1024;

/// A verified snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The raft index the state was read at.
    pub index: u64,
    pub snapshot: state::Snapshot,
}

/// SHA-256 of `data` in lower-case hex (ring, which rustls uses too).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data))
}

fn hex(digest: ring::digest::Digest) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's body as it is written: its length and SHA-256.
struct Hashing<W> {
    out: W,
    sha: ring::digest::Context,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Serialise a snapshot (a [`state::Snapshot`] or a borrowed
/// [`state::SnapshotView`]) into `out` as a file's body, and the header
/// line that goes before it, for raft index `index`.
pub(crate) fn write_body<W: Write>(
    snapshot: &impl serde::Serialize,
    index: u64,
    out: W,
) -> Result<(String, W), serde_json::Error> {
    let mut body = Hashing {
        out,
        sha: ring::digest::Context::new(&ring::digest::SHA256),
        len: 0,
    };
    serde_json::to_writer(&mut body, snapshot)?;
    let header = format!(
        "{MAGIC} format={FILE_FORMAT} index={index} length={} sha256={}\n",
        body.len,
        hex(body.sha.finish())
    );
    Ok((header, body.out))
}

/// The file for `snapshot`, read at raft index `index`.
pub fn encode(snapshot: &state::Snapshot, index: u64) -> Result<Vec<u8>, serde_json::Error> {
    let (header, body) = write_body(snapshot, index, Vec::new())?;
    let mut out = header.into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Check a file completely (header, length, checksum, JSON, state format)
/// and return what it holds.
pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, SnapshotFileError> {
    if archive::is_archive(bytes) {
        let archive = archive::read(bytes, MAX_ARCHIVE_CONTENT)?;
        return decode_state(&archive.state, archive.meta.index);
    }
    if !bytes.starts_with(MAGIC.as_bytes()) {
        return Err(SnapshotFileError::NotASnapshot);
    }
    let newline = bytes
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or_else(|| {
            SnapshotFileError::BadHeader(format!("no end of line in its first {MAX_HEADER} bytes"))
        })?;
    let line = std::str::from_utf8(&bytes[..newline])
        .map_err(|_| SnapshotFileError::BadHeader("it is not UTF-8".into()))?;
    let body = &bytes[newline + 1..];
    let mut words = line.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(SnapshotFileError::NotASnapshot);
    }
    let (mut format, mut index, mut length, mut sha) = (None, None, None, None);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(SnapshotFileError::BadHeader(format!(
                "{word:?} is not key=value"
            )));
        };
        let number = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                SnapshotFileError::BadHeader(format!("{k}={v:?} is not a whole number"))
            })
        };
        match k {
            "format" => format = Some(number(v)?),
            "index" => index = Some(number(v)?),
            "length" => length = Some(number(v)?),
            "sha256" => sha = Some(v.to_string()),
            // Fields a later version may add are not this reader's concern.
            _ => {}
        }
    }
    let missing = |k: &str| SnapshotFileError::BadHeader(format!("{k}= is missing"));
    let format = format.ok_or_else(|| missing("format"))?;
    if format != u64::from(FILE_FORMAT) {
        return Err(SnapshotFileError::UnsupportedFormat {
            found: u32::try_from(format).unwrap_or(u32::MAX),
        });
    }
    let index = index.ok_or_else(|| missing("index"))?;
    let length = length.ok_or_else(|| missing("length"))?;
    let expected_sha = sha.ok_or_else(|| missing("sha256"))?;
    let expected = usize::try_from(length).unwrap_or(usize::MAX);
    if body.len() != expected {
        return Err(SnapshotFileError::Length {
            expected,
            actual: body.len(),
        });
    }
    let actual_sha = sha256_hex(body);
    if !actual_sha.eq_ignore_ascii_case(&expected_sha) {
        return Err(SnapshotFileError::Checksum {
            expected: expected_sha,
            actual: actual_sha,
        });
    }
    decode_state(body, index)
}

/// The state JSON of a file or of an archive's `state.bin`, which must
/// have been taken at `index`.
fn decode_state(body: &[u8], index: u64) -> Result<SnapshotFile, SnapshotFileError> {
    let snapshot: state::Snapshot =
        serde_json::from_slice(body).map_err(|e| SnapshotFileError::Content(e.to_string()))?;
    if snapshot.format != state::SNAPSHOT_FORMAT {
        return Err(SnapshotFileError::StateFormat {
            found: snapshot.format,
        });
    }
    if snapshot.state.last_applied() != index {
        return Err(SnapshotFileError::IndexMismatch {
            header: index,
            state: snapshot.state.last_applied(),
        });
    }
    Ok(SnapshotFile { index, snapshot })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::discovery::server::state::{Command, State as Machine};

    fn sample() -> (state::Snapshot, u64) {
        let mut s = Machine::new();
        s.apply(
            3,
            0,
            Command::KvSet {
                key: "a".into(),
                value: b"1".to_vec(),
                flags: 0,
            },
        )
        .unwrap();
        (s.snapshot(), 3)
    }

    #[test]
    fn sha256_is_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_file_round_trips() {
        let (snap, index) = sample();
        let file = encode(&snap, index).unwrap();
        let text = String::from_utf8(file.clone()).unwrap();
        assert!(text.starts_with("pilotfish-snapshot format=1 index=3 length="));
        assert_eq!(
            decode(&file).unwrap(),
            SnapshotFile {
                index,
                snapshot: snap
            }
        );
    }

    #[test]
    fn values_are_base64_and_files_of_earlier_builds_with_byte_arrays_restore() {
        let (snap, index) = sample();
        let file = encode(&snap, index).unwrap();
        let text = String::from_utf8(file.clone()).unwrap();
        assert!(text.contains(r#""value":"MQ==""#), "{text}");
        // An earlier build wrote each value as an array of byte numbers.
        let body = text
            .split_once('\n')
            .unwrap()
            .1
            .replace(r#""MQ==""#, "[49]");
        let old = format!(
            "pilotfish-snapshot format=1 index={index} length={} sha256={}\n{body}",
            body.len(),
            sha256_hex(body.as_bytes())
        );
        assert_eq!(
            decode(old.as_bytes()).unwrap(),
            SnapshotFile {
                index,
                snapshot: snap
            }
        );
    }

    #[test]
    fn damaged_files_say_what_is_wrong() {
        let (snap, index) = sample();
        let file = encode(&snap, index).unwrap();
        let newline = file.iter().position(|&b| b == b'\n').unwrap();

        assert_eq!(decode(b"{}"), Err(SnapshotFileError::NotASnapshot));
        // One flipped byte in the body.
        let mut flipped = file.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        assert!(matches!(
            decode(&flipped),
            Err(SnapshotFileError::Checksum { .. })
        ));
        // Truncated.
        let cut = &file[..file.len() - 5];
        assert_eq!(
            decode(cut).unwrap_err().to_string(),
            format!(
                "it holds {} bytes after the header but the header says {}: \
                 the file is truncated or has trailing data",
                file.len() - newline - 6,
                file.len() - newline - 1
            )
        );
        // Another file format.
        let other = String::from_utf8(file.clone())
            .unwrap()
            .replacen("format=1", "format=9", 1);
        assert_eq!(
            decode(other.as_bytes()),
            Err(SnapshotFileError::UnsupportedFormat { found: 9 })
        );
        // A header without its checksum.
        let header = String::from_utf8(file[..newline].to_vec()).unwrap();
        let no_sha = format!(
            "{}\n{}",
            header.split(" sha256=").next().unwrap(),
            String::from_utf8(file[newline + 1..].to_vec()).unwrap()
        );
        assert_eq!(
            decode(no_sha.as_bytes()).unwrap_err().to_string(),
            "its header line is malformed: sha256= is missing"
        );
        // Valid checksum over something that is not a state.
        let body = b"[1,2,3]";
        let forged = format!(
            "pilotfish-snapshot format=1 index=3 length={} sha256={}\n",
            body.len(),
            sha256_hex(body)
        );
        let mut forged = forged.into_bytes();
        forged.extend_from_slice(body);
        assert!(matches!(
            decode(&forged),
            Err(SnapshotFileError::Content(_))
        ));
    }
}
