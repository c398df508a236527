//! Putting a rendered file in place without a moment where a reader sees a
//! half-written or unchecked file: the candidate is written next to the
//! destination (same filesystem), fsynced, checked by the caller, then
//! renamed over the destination and the directory fsynced. A destination
//! that cannot be replaced by rename (a single file bind-mounted into a
//! container: EBUSY; another filesystem: EXDEV) is rewritten in place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How to install one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// None: the existing file's mode, else 0644.
    pub perms: Option<u32>,
    /// Keep the previous file as `<destination>.bak`.
    pub backup: bool,
    pub create_dest_dirs: bool,
}

/// A rendered file written beside its destination, not yet installed.
/// Dropping it removes the file.
#[derive(Debug)]
pub struct Candidate {
    path: PathBuf,
    installed: bool,
}

impl Candidate {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn context(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The destination's current contents, or None when it does not exist.
pub fn current(dest: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(dest) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(context("reading", dest, e)),
    }
}

/// Write `contents` to a new file in `dest`'s directory and fsync it.
pub fn write_candidate(dest: &Path, contents: &[u8], opts: &Options) -> io::Result<Candidate> {
    let dir = parent(dest);
    if !dir.exists() {
        if opts.create_dest_dirs {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| context("creating directory", dir, e))?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "directory {} does not exist (create it, or set create_dest_dirs = true)",
                    dir.display()
                ),
            ));
        }
    }
    let mode = match opts.perms {
        Some(m) => m,
        None => fs::metadata(dest)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = dir.join(format!(".{name}.pilotfish-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&path)
        .map_err(|e| context("creating", &path, e))?;
    let cand = Candidate {
        path,
        installed: false,
    };
    // The umask may have narrowed the mode.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all())
        .map_err(|e| context("writing", &cand.path, e))?;
    Ok(cand)
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// How the file went in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    Renamed,
    /// Rename was refused (bind mount, other filesystem): rewritten in place.
    InPlace,
}

/// Move a checked candidate over its destination.
pub fn install(mut cand: Candidate, dest: &Path, opts: &Options) -> io::Result<Installed> {
    if opts.backup && dest.exists() {
        let bak = PathBuf::from(format!("{}.bak", dest.display()));
        let _ = fs::remove_file(&bak);
        // A hard link costs nothing and is the exact previous inode; a copy
        // stands in where links are not allowed.
        if fs::hard_link(dest, &bak).is_err() {
            fs::copy(dest, &bak).map_err(|e| context("backing up", dest, e))?;
        }
    }
    match fs::rename(&cand.path, dest) {
        Ok(()) => {
            cand.installed = true;
            sync_dir(parent(dest))?;
            Ok(Installed::Renamed)
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EXDEV)) => {
            let contents = fs::read(&cand.path).map_err(|e| context("reading", &cand.path, e))?;
            let mut f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(dest)
                .map_err(|e| context("opening", dest, e))?;
            f.write_all(&contents)
                .and_then(|()| f.sync_all())
                .map_err(|e| context("rewriting", dest, e))?;
            Ok(Installed::InPlace)
        }
        Err(e) => Err(context("renaming onto", dest, e)),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context("syncing directory", dir, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            perms: None,
            backup: false,
            create_dest_dirs: true,
        }
    }

    #[test]
    fn installs_atomically_with_dirs_perms_and_backup() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/out.cfg");
        let c = write_candidate(&dest, b"one", &opts()).unwrap();
        assert!(!dest.exists(), "nothing visible before install");
        assert_eq!(install(c, &dest, &opts()).unwrap(), Installed::Renamed);
        assert_eq!(fs::read(&dest).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o644
        );

        fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
        let o = Options {
            backup: true,
            ..opts()
        };
        let c = write_candidate(&dest, b"two", &o).unwrap();
        install(c, &dest, &o).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600,
            "the existing mode is kept"
        );
        assert_eq!(
            fs::read(dir.path().join("a/b/out.cfg.bak")).unwrap(),
            b"one"
        );
        let left: Vec<_> = fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(left.len(), 2, "no candidate left behind");
    }

    #[test]
    fn a_dropped_candidate_leaves_nothing_and_missing_dirs_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let c = write_candidate(&dest, b"x", &opts()).unwrap();
        let p = c.path().to_path_buf();
        drop(c);
        assert!(!p.exists());
        let o = Options {
            create_dest_dirs: false,
            ..opts()
        };
        let e = write_candidate(&dir.path().join("no/out"), b"x", &o).unwrap_err();
        assert!(e.to_string().contains("create_dest_dirs"), "{e}");
    }
}
