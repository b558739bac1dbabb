//! Where haul keeps its state (sync resume journals, the watch journal),
//! and how: in a folder only the user can enter (0700), in SQLite files
//! only the user can read (0600) — they name buckets, keys and local
//! paths. There is no shared fallback such as `/tmp/haul-state`: another
//! user could prepare it.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why there is no state directory to use.
#[derive(Debug, thiserror::Error)]
#[error("no state directory: set --state-dir or HAUL_STATE_DIR (neither XDG_STATE_HOME nor HOME is set)")]
pub struct NoStateDir;

/// `$XDG_STATE_HOME/haul`, else `~/.local/state/haul`.
pub fn default_state_dir() -> Result<PathBuf, NoStateDir> {
    state_dir_from(std::env::var_os("XDG_STATE_HOME").map(PathBuf::from), dirs::home_dir())
}

/// [`default_state_dir`] from the two places it looks (testable).
pub fn state_dir_from(xdg_state_home: Option<PathBuf>, home: Option<PathBuf>) -> Result<PathBuf, NoStateDir> {
    match (xdg_state_home, home) {
        // The XDG spec ignores relative values.
        (Some(x), _) if x.is_absolute() => Ok(x.join("haul")),
        (_, Some(h)) if h.is_absolute() => Ok(h.join(".local/state/haul")),
        _ => Err(NoStateDir),
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing folder
/// is left as it is: it is the user's.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates the SQLite file `path` with mode 0600 if it does not exist
/// (SQLite gives its `-wal` and `-shm` files the database's mode).
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_state_dir_is_xdg_then_home_and_never_a_shared_fallback() {
        let abs = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            state_dir_from(abs("/x/state"), abs("/home/u")).ok(),
            Some(PathBuf::from("/x/state/haul"))
        );
        assert_eq!(
            state_dir_from(None, abs("/home/u")).ok(),
            Some(PathBuf::from("/home/u/.local/state/haul"))
        );
        assert_eq!(
            state_dir_from(abs("relative"), abs("/home/u")).ok(),
            Some(PathBuf::from("/home/u/.local/state/haul"))
        );
        let e = state_dir_from(None, None).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("--state-dir")));
    }

    #[test]
    fn state_is_private_to_the_user() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let dir = t.path().join("a/b");
        create_private_dir(&dir)?;
        assert_eq!(std::fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::metadata(t.path().join("a"))?.permissions().mode() & 0o777,
            0o700
        );
        let f = dir.join("x.db");
        create_private_file(&f)?;
        create_private_file(&f)?;
        assert_eq!(std::fs::metadata(&f)?.permissions().mode() & 0o777, 0o600);
        Ok(())
    }
}
