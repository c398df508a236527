//! `pilotfish snapshot backup --dir DIR --keep N`: scheduled backups for a
//! discovery server (run it from an interval job). Each run saves the state
//! as `snapshot save` does (verified, written to a temp file, synced,
//! renamed) under a name that sorts by time, `snapshot-<UTC>.snap`, then
//! deletes the oldest backups beyond N. Only files of that exact shape are
//! ever deleted, and only after the new one is on disk, so a failed save
//! never costs an old backup.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::discovery::snapshot;

/// `snapshot backup` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub http: super::HttpArgs,
    /// Where the backups go (created, mode 0700, if missing). One directory
    /// per server: the rotation counts every backup in it.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// How many backups to keep; older ones are deleted.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// Read from the agent's own replica, even without a leader (a follower
    /// cut off from the leader still backs up what it has).
    #[arg(long)]
    pub stale: bool,
}

const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";

/// Run it: the line to print, or the error.
pub(super) async fn run(args: BackupArgs) -> Result<super::Out, String> {
    let client = super::client(&args.http)?;
    let bytes = client
        .snapshot_save(args.stale)
        .await
        .map_err(|e| format!("Error saving snapshot: {e}"))?;
    let index = snapshot::decode(&bytes)
        .map_err(|e| format!("Error verifying snapshot: the agent sent a file that {e}"))?
        .index;
    if index == 0 {
        // A server that has not joined a cluster yet: its empty state would
        // only push a real backup out of the rotation.
        return Ok(super::Out::ok(
            "The agent has no state yet (index 0): no backup written",
        ));
    }
    create_private_dir(&args.dir).map_err(|e| {
        format!(
            "Error creating backup directory {}: {e}",
            args.dir.display()
        )
    })?;
    let file = args.dir.join(file_name(now_ms()));
    super::write_verified(&file, &bytes)?;
    let deleted = rotate(&args.dir, args.keep as usize).map_err(|e| {
        format!(
            "Saved {}, but rotating {}: {e}",
            file.display(),
            args.dir.display()
        )
    })?;
    Ok(super::Out::ok(format!(
        "Saved and verified snapshot to index {index} in {}{}",
        file.display(),
        if deleted.is_empty() {
            String::new()
        } else {
            format!("; deleted {}", deleted.join(", "))
        }
    )))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `snapshot-20250107T093005.123Z.snap`: fixed width, so names sort by time.
fn file_name(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (year, month, day) = crate::discovery::api::gofmt::civil_date(secs / 86_400);
    let of_day = secs % 86_400;
    format!(
        "{PREFIX}{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z{SUFFIX}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        unix_ms % 1000
    )
}

/// Whether `name` is a backup this command wrote (so rotation may delete it).
fn is_backup(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .is_some_and(|stamp| {
            // 20250107T093005.123Z
            let b = stamp.as_bytes();
            b.len() == 20
                && b.iter().enumerate().all(|(i, c)| match i {
                    8 => *c == b'T',
                    15 => *c == b'.',
                    19 => *c == b'Z',
                    _ => c.is_ascii_digit(),
                })
        })
}

/// Delete the oldest backups in `dir` beyond `keep`; answers their names.
fn rotate(dir: &Path, keep: usize) -> std::io::Result<Vec<String>> {
    let mut backups: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| is_backup(name))
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    for name in backups.into_iter().take(excess) {
        std::fs::remove_file(dir.join(&name))?;
        deleted.push(name);
    }
    Ok(deleted)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_and_sort_by_time() {
        assert_eq!(file_name(0), "snapshot-19700101T000000.000Z.snap");
        assert_eq!(
            file_name(1_700_000_000_123),
            "snapshot-20231114T221320.123Z.snap"
        );
        // A leap day, and the last millisecond of a year.
        assert_eq!(
            file_name(1_709_164_800_000),
            "snapshot-20240229T000000.000Z.snap"
        );
        assert_eq!(
            file_name(1_735_689_599_999),
            "snapshot-20241231T235959.999Z.snap"
        );
        let (a, b) = (file_name(9_999_999_999), file_name(10_000_000_000));
        assert!(a < b, "{a} sorts before {b}");
        assert!(is_backup(&a));
        assert!(!is_backup("snapshot-20241231T235959.999Z.snap.tmp"));
        assert!(!is_backup("snapshot-latest.snap"));
        assert!(!is_backup("notes.txt"));
    }

    #[test]
    fn rotation_deletes_only_the_oldest_backups() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..4).map(|i| file_name(i * 1000)).collect();
        for n in &names {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        std::fs::write(dir.path().join("keep-me.snap"), "mine").unwrap();
        assert_eq!(rotate(dir.path(), 2).unwrap(), &names[..2]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["keep-me.snap", &names[2], &names[3]]);
        assert!(rotate(dir.path(), 2).unwrap().is_empty());
    }
}
