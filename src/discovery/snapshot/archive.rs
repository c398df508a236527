//! Consul's snapshot archive (consul-breadth.md §8): a gzip'd tar of
//! exactly `meta.json` (raft's `SnapshotMeta`), `state.bin` and
//! `SHA256SUMS` (`<hex>  <name>` for the other two), each mode 0600.
//! `write` builds one, `read` checks one in Consul's order (gunzip, the
//! tar's member names, the hashes, leftover data) and fails with Consul's
//! texts, and `stats` counts the records of `state.bin` for `snapshot
//! inspect`.
//!
//! `state.bin` is pilotfish's state JSON (the body of the older
//! `pilotfish-snapshot` file, the parent module's doc), not Consul's
//! msgpack FSM records: an archive restores into pilotfish only, and Consul
//! cannot restore one (nor pilotfish Consul's).

use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::discovery::api::gofmt;
use crate::discovery::api::snapshot::{SnapshotMeta, TypeStats};

pub const META: &str = "meta.json";
pub const STATE: &str = "state.bin";
pub const SUMS: &str = "SHA256SUMS";

/// gzip's first two bytes: an archive, not an older `pilotfish-snapshot` file.
pub fn is_archive(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Why an archive was refused; the texts are Consul's (§8.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("failed to decompress snapshot: {0}")]
    Decompress(String),
    #[error("Snapshot too large: it decompresses to more than {0} bytes")]
    TooLarge(usize),
    #[error("failed to read snapshot file: {0}")]
    Read(String),
    #[error("failed to read snapshot file: unexpected file {} in snapshot", gofmt::go_quote(.0))]
    Unexpected(String),
    #[error("failed to read snapshot file: failed to decode metadata: {0}")]
    Meta(String),
    #[error("failed to read snapshot file: failed checking integrity of snapshot: {0}")]
    Integrity(String),
    #[error("{0} unread uncompressed bytes remain")]
    Unread(usize),
}

/// A checked archive: its metadata and `state.bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub meta: SnapshotMeta,
    pub state: Vec<u8>,
}

fn header(name: &str, size: u64, mtime: u64) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Write the archive of `meta` and a `state.bin` read from `state`, whose
/// SHA-256 (hex) is `state_sha` and length `meta.size`, into `out`.
pub fn write<W: Write>(
    out: W,
    meta: &SnapshotMeta,
    state: impl Read,
    state_sha: &str,
    mtime: u64,
) -> std::io::Result<W> {
    let mut meta_json = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    meta_json.push(b'\n');
    let sums = format!(
        "{}  {META}\n{state_sha}  {STATE}\n",
        super::sha256_hex(&meta_json)
    );
    let mut tar = tar::Builder::new(GzEncoder::new(out, flate2::Compression::default()));
    let h = header(META, meta_json.len() as u64, mtime)?;
    tar.append(&h, &meta_json[..])?;
    let h = header(STATE, meta.size, mtime)?;
    tar.append(&h, state)?;
    let h = header(SUMS, sums.len() as u64, mtime)?;
    tar.append(&h, sums.as_bytes())?;
    tar.into_inner()?.finish()
}

/// The legacy peer list raft still writes: msgpack of the servers'
/// addresses (an array of raw strings), base64.
pub fn legacy_peers(addresses: &[String]) -> String {
    let mut b = Vec::new();
    match addresses.len() {
        n if n < 16 => b.push(0x90 | n as u8),
        n => {
            b.push(0xdc);
            b.extend_from_slice(&(n.min(usize::from(u16::MAX)) as u16).to_be_bytes());
        }
    }
    for a in addresses {
        let bytes = a.as_bytes();
        match bytes.len() {
            n if n < 32 => b.push(0xa0 | n as u8),
            n => {
                b.push(0xda);
                b.extend_from_slice(&(n.min(usize::from(u16::MAX)) as u16).to_be_bytes());
            }
        }
        b.extend_from_slice(bytes);
    }
    gofmt::base64_encode(&b)
}

/// Read and check an archive of at most `limit` uncompressed bytes.
pub fn read(bytes: &[u8], limit: usize) -> Result<Archive, ArchiveError> {
    let mut tarball = Vec::new();
    GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut tarball)
        .map_err(|e| ArchiveError::Decompress(e.to_string()))?;
    if tarball.len() > limit {
        return Err(ArchiveError::TooLarge(limit));
    }
    let mut cursor = std::io::Cursor::new(&tarball[..]);
    let (mut meta, mut state, mut sums) = (None, None, None);
    {
        let mut archive = tar::Archive::new(&mut cursor);
        let entries = archive
            .entries()
            .map_err(|e| ArchiveError::Read(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ArchiveError::Read(e.to_string()))?;
            let name = entry
                .path()
                .map_err(|e| ArchiveError::Read(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| ArchiveError::Read(e.to_string()))?;
            match name.as_str() {
                META => meta = Some(data),
                STATE => state = Some(data),
                SUMS => sums = Some(data),
                _ => return Err(ArchiveError::Unexpected(name)),
            }
        }
    }
    let mut hashes = Vec::new();
    let parsed_meta = match &meta {
        Some(m) => {
            hashes.push((META, super::sha256_hex(m)));
            Some(
                serde_json::from_slice::<SnapshotMeta>(m)
                    .map_err(|e| ArchiveError::Meta(e.to_string()))?,
            )
        }
        None => None,
    };
    if let Some(s) = &state {
        hashes.push((STATE, super::sha256_hex(s)));
    }
    verify_sums(sums.as_deref().unwrap_or_default(), &hashes).map_err(ArchiveError::Integrity)?;
    let consumed = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    let rest = tarball.get(consumed..).unwrap_or_default();
    // The tar's end-of-archive blocks are zeros; anything else is data the
    // archive does not account for.
    if rest.iter().any(|&b| b != 0) {
        return Err(ArchiveError::Unread(rest.len()));
    }
    match (parsed_meta, state) {
        (Some(meta), Some(state)) => Ok(Archive { meta, state }),
        (None, _) => Err(ArchiveError::Integrity(format!(
            "file missing for {}",
            gofmt::go_quote(META)
        ))),
        (_, None) => Err(ArchiveError::Integrity(format!(
            "file missing for {}",
            gofmt::go_quote(STATE)
        ))),
    }
}

/// Consul's `verifySHA256`: every listed file present with that hash, and
/// every file listed.
fn verify_sums(sums: &[u8], hashes: &[(&str, String)]) -> Result<(), String> {
    let text = String::from_utf8_lossy(sums);
    let mut listed = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some((hash, file)) = line.split_once("  ") else {
            return Err(format!("invalid SHA256SUMS line {}", gofmt::go_quote(line)));
        };
        listed.push((file.to_string(), hash.to_ascii_lowercase()));
    }
    for (file, want) in &listed {
        match hashes.iter().find(|(f, _)| f == file) {
            None => return Err(format!("file missing for {}", gofmt::go_quote(file))),
            Some((_, got)) if got != want => {
                return Err(format!("hash check failed for {}", gofmt::go_quote(file)))
            }
            Some(_) => {}
        }
    }
    for (file, _) in hashes {
        if !listed.iter().any(|(f, _)| f == file) {
            return Err(format!("list missing hash for {}", gofmt::go_quote(file)));
        }
    }
    Ok(())
}

/// The records of a `state.bin` (pilotfish's state JSON) by Consul's
/// record type names: `Register` for every node, service and check (as
/// Consul's FSM writes them), `KVS`, `Tombstone`, `Session` and
/// `Autopilot`, each with its count and JSON bytes; largest first, then
/// by name.
pub fn stats(state: &[u8]) -> Result<Vec<TypeStats>, String> {
    let v: serde_json::Value = serde_json::from_slice(state).map_err(|e| e.to_string())?;
    let s = v.get("state").ok_or("no state in state.bin")?;
    let size = |v: &serde_json::Value| serde_json::to_vec(v).map_or(0, |b| b.len() as u64);
    let mut out: Vec<TypeStats> = Vec::new();
    let mut add = |name: &str, sum: u64| match out.iter_mut().find(|t| t.name == name) {
        Some(t) => {
            t.count += 1;
            t.sum += sum;
        }
        None => out.push(TypeStats {
            name: name.to_string(),
            sum,
            count: 1,
        }),
    };
    let map = |v: &serde_json::Value, path: &[&str]| {
        let mut at = v;
        for p in path {
            at = &at[*p];
        }
        at.as_object().cloned().unwrap_or_default()
    };
    for record in map(s, &["catalog", "nodes"]).values() {
        add("Register", size(&record["node"]));
        for svc in map(record, &["services"]).values() {
            add("Register", size(svc));
        }
        for check in map(record, &["checks"]).values() {
            add("Register", size(check));
        }
    }
    for entry in map(s, &["kv", "entries"]).values() {
        add("KVS", size(entry));
    }
    for (key, index) in map(s, &["kv", "tombstones"]) {
        add("Tombstone", key.len() as u64 + size(&index));
    }
    for session in map(s, &["sessions", "sessions"]).values() {
        add("Session", size(session));
    }
    if let Some(a) = s.get("autopilot").filter(|a| !a.is_null()) {
        add("Autopilot", size(a));
    }
    out.sort_by(|a, b| b.sum.cmp(&a.sum).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// Consul's `ByteSize`: `313B`, `1.6KB`, `2MB` (powers of 1024, one decimal
/// without a trailing `.0`), `0` for nothing.
pub fn byte_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("TB", 1 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
        ("B", 1),
    ];
    if bytes == 0 {
        return "0".to_string();
    }
    let (unit, scale) = UNITS
        .iter()
        .find(|(_, s)| bytes >= *s)
        .copied()
        .unwrap_or(("B", 1));
    let value = format!("{:.1}", bytes as f64 / scale as f64);
    format!("{}{unit}", value.strip_suffix(".0").unwrap_or(&value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::discovery::api::snapshot::RaftConfiguration;

    fn meta(size: u64) -> SnapshotMeta {
        SnapshotMeta {
            version: 1,
            id: "2-11-1602262512378".into(),
            index: 11,
            term: 2,
            peers: legacy_peers(&["127.0.0.1:8300".into()]),
            configuration: RaftConfiguration::default(),
            configuration_index: 1,
            size,
        }
    }

    fn archive(state: &[u8]) -> Vec<u8> {
        let sha = super::super::sha256_hex(state);
        write(Vec::new(), &meta(state.len() as u64), state, &sha, 1).unwrap()
    }

    #[test]
    fn archives_round_trip_and_damage_is_named() {
        let state = br#"{"format":1,"state":{}}"#;
        let bytes = archive(state);
        assert!(is_archive(&bytes));
        let a = read(&bytes, 1 << 20).unwrap();
        assert_eq!(
            (a.meta, a.state),
            (meta(state.len() as u64), state.to_vec())
        );
        // The legacy peers: msgpack [ "127.0.0.1:8300" ].
        assert_eq!(
            gofmt::base64_decode(&legacy_peers(&["127.0.0.1:8300".into()])).unwrap(),
            b"\x91\xae127.0.0.1:8300"
        );
        assert!(matches!(
            read(&bytes[..bytes.len() - 8], 1 << 20),
            Err(ArchiveError::Decompress(_))
        ));
        assert_eq!(
            read(b"\x1f\x8bnot gzip", 1 << 20)
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("failed to decompress snapshot")
        );
        assert_eq!(read(&bytes, 100), Err(ArchiveError::TooLarge(100)));
    }

    #[test]
    fn hashes_are_checked_as_consul_does() {
        let h = |s: &str| s.to_string();
        let ok = [(META, h("aa")), (STATE, h("bb"))];
        assert_eq!(verify_sums(b"aa  meta.json\nbb  state.bin\n", &ok), Ok(()));
        assert_eq!(
            verify_sums(b"aa  meta.json\ncc  state.bin\n", &ok),
            Err("hash check failed for \"state.bin\"".into())
        );
        assert_eq!(
            verify_sums(b"aa  meta.json\n", &ok),
            Err("list missing hash for \"state.bin\"".into())
        );
        assert_eq!(
            verify_sums(b"aa  meta.json\nbb  state.bin\ndd  x\n", &ok),
            Err("file missing for \"x\"".into())
        );
    }

    #[test]
    fn sizes_read_like_consul() {
        assert_eq!(byte_size(0), "0");
        assert_eq!(byte_size(313), "313B");
        assert_eq!(byte_size(1638), "1.6KB");
        assert_eq!(byte_size(2 << 20), "2MB");
    }
}
