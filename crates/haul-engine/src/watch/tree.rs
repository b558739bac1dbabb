//! The local side of a watch: which files are ignored, a file's identity,
//! and pruning folders emptied by deletion.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::filter::{Filter, FilterError};

/// Files a watch never uploads: hidden files and folders (`.*`), temp
/// files (`*.tmp`, `*.part`) and the user's `--exclude` globs.
#[derive(Debug, Clone)]
pub struct Exclusions {
    user: Filter,
}

impl Exclusions {
    pub fn new(exclude: &[String]) -> Result<Self, FilterError> {
        Ok(Exclusions {
            user: Filter::new(&[], exclude)?,
        })
    }

    /// Whether the file at `rel` (relative to the watched directory) is ignored.
    pub fn excluded(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        rel.split('/').any(|c| c.starts_with('.'))
            || name.ends_with(".tmp")
            || name.ends_with(".part")
            || !self.user.matches(rel)
    }
}

/// What must not change between reading a file and deleting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub device: u64,
}

pub fn time_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

impl Identity {
    #[cfg(unix)]
    pub fn of(md: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Identity {
            size: md.len(),
            mtime_ns: md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec(),
            inode: md.ino(),
            device: md.dev(),
        }
    }

    #[cfg(not(unix))]
    pub fn of(md: &fs::Metadata) -> Self {
        Identity {
            size: md.len(),
            mtime_ns: md.modified().map(time_ns).unwrap_or(0),
            inode: 0,
            device: 0,
        }
    }
}

/// The last time the file's content or name changed: the later of mtime
/// and ctime (a writer may set mtime back; ctime cannot be set).
pub fn last_change_ns(md: &fs::Metadata) -> i64 {
    let mtime = Identity::of(md).mtime_ns;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        mtime.max(md.ctime().saturating_mul(1_000_000_000) + md.ctime_nsec())
    }
    #[cfg(not(unix))]
    mtime
}

/// Removes folders under `root` (never `root` itself, never hidden ones)
/// that are empty and were last changed at least `keep` ago. A folder
/// emptied by this sweep counts by its age before the sweep, so a whole
/// emptied branch (`2026/10/…`) goes at once. Returns the removed folders.
pub fn prune_empty_dirs(root: &Path, keep: Duration) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let now = SystemTime::now();
    prune(root, true, keep, now, &mut removed);
    removed
}

/// Prunes below `dir`; true if `dir` is gone.
fn prune(dir: &Path, is_root: bool, keep: Duration, now: SystemTime, removed: &mut Vec<PathBuf>) -> bool {
    let old_enough = match fs::symlink_metadata(dir).and_then(|m| m.modified()) {
        Ok(t) => now.duration_since(t).unwrap_or_default() >= keep,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read a folder to prune it");
            return false;
        }
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read a folder to prune it");
            return false;
        }
    };
    let mut empty = true;
    for entry in entries {
        let Ok(entry) = entry else {
            empty = false;
            continue;
        };
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && !hidden {
            if !prune(&entry.path(), false, keep, now, removed) {
                empty = false;
            }
        } else {
            empty = false;
        }
    }
    if is_root || !empty || !old_enough {
        return false;
    }
    match fs::remove_dir(dir) {
        Ok(()) => {
            removed.push(dir.to_path_buf());
            true
        }
        // Something arrived meanwhile: keep it.
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => false,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an empty folder");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_temp_and_user_excluded_files_are_ignored() -> Result<(), FilterError> {
        let x = Exclusions::new(&["**/*.lock".to_string()])?;
        for rel in ["a/.x", ".git/config", "a/b.tmp", "a/b.part", "a/b.lock", ".hidden/y"] {
            assert!(x.excluded(rel), "{rel}");
        }
        for rel in ["a/b", "2026/11/21/x.csv", "a.tmp.gz", "part"] {
            assert!(!x.excluded(rel), "{rel}");
        }
        Ok(())
    }

    #[test]
    fn prunes_old_empty_branches_but_keeps_young_or_full_folders() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let r = root.path();
        for d in ["2026/10/01", "2026/11/20", "2026/11/21", "2026/11/19", ".haul-tmp"] {
            fs::create_dir_all(r.join(d))?;
        }
        fs::write(r.join("2026/11/19/keep.csv"), b"x")?;
        let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        for d in ["2026/10/01", "2026/10", "2026/11/20", "2026/11/19", "2026/11", "2026"] {
            filetime::set_file_mtime(r.join(d), old)?;
        }
        let removed = prune_empty_dirs(r, Duration::from_secs(86_400));
        assert!(!r.join("2026/10").exists(), "an old empty branch goes at once");
        assert!(!r.join("2026/11/20").exists());
        assert!(r.join("2026/11/21").exists(), "today's folder stays");
        assert!(r.join("2026/11/19/keep.csv").exists());
        assert!(r.join(".haul-tmp").exists());
        assert_eq!(removed.len(), 3, "{removed:?}");
        Ok(())
    }
}
