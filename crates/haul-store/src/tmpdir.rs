//! The working directory of a local store, `<root>/.haul-tmp`: temp files
//! of writes in flight (`w-<random>`) and multipart uploads (`mpu-<id>/`).
//!
//! It exists only while something is in flight: the store counts its
//! writes and uploads and removes the directory when the last one ends and
//! it is empty (another process's files keep it). When a store is opened,
//! temp files and uploads untouched for a day — left by a crash — are
//! removed.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Temp files and uploads older than this are debris of a crashed run.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default)]
struct Users {
    writes: usize,
    uploads: HashSet<String>,
}

#[derive(Debug)]
pub(crate) struct TmpDir {
    path: PathBuf,
    users: Mutex<Users>,
}

/// A write in flight: keeps the directory until dropped.
#[derive(Debug)]
pub(crate) struct TmpWrite<'a>(&'a TmpDir);

impl Drop for TmpWrite<'_> {
    fn drop(&mut self) {
        self.0.release(|u| u.writes = u.writes.saturating_sub(1));
    }
}

impl TmpDir {
    pub(crate) fn new(path: PathBuf) -> Self {
        TmpDir {
            path,
            users: Mutex::new(Users::default()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates `path` (a file or, with `dir`, a directory) in the working
    /// directory, creating that first; once more if another process
    /// removed the (empty) directory in between.
    fn create(&self, path: &Path, dir: bool) -> io::Result<Option<File>> {
        let mut again = true;
        loop {
            fs::create_dir_all(&self.path)?;
            let made = if dir {
                fs::create_dir(path).map(|()| None)
            } else {
                File::create_new(path).map(Some)
            };
            match made {
                Err(e) if e.kind() == io::ErrorKind::NotFound && again => again = false,
                other => return other,
            }
        }
    }

    /// A new temp file for a write, and the write's hold on the directory.
    pub(crate) fn new_file(&self) -> io::Result<(PathBuf, File, TmpWrite<'_>)> {
        let path = self.path.join(format!("w-{:016x}", rand::random::<u64>()));
        self.lock().writes += 1;
        let guard = TmpWrite(self);
        let file = self.create(&path, false)?;
        let file = file.ok_or_else(|| io::Error::other("no file created"))?;
        Ok((path, file, guard))
    }

    /// Creates the directory of a new multipart upload `id`, which holds
    /// the working directory until [`TmpDir::upload_ended`].
    pub(crate) fn new_upload_dir(&self, id: &str) -> io::Result<PathBuf> {
        let path = self.path.join(format!("mpu-{id}"));
        self.lock().uploads.insert(id.to_string());
        if let Err(e) = self.create(&path, true) {
            self.upload_ended(id);
            return Err(e);
        }
        Ok(path)
    }

    /// Upload `id` was completed or aborted (its directory removed).
    pub(crate) fn upload_ended(&self, id: &str) {
        self.release(|u| {
            u.uploads.remove(id);
        });
    }

    /// Applies `f`; removes the directory if nothing of this store is in
    /// flight any more and it is empty.
    fn release(&self, f: impl FnOnce(&mut Users)) {
        let mut u = self.lock();
        f(&mut u);
        if u.writes == 0 && u.uploads.is_empty() {
            // Fails (and is kept) while anything is in it.
            let _ = fs::remove_dir(&self.path);
        }
    }

    /// Removes `w-*` temp files and `mpu-*` uploads not modified for
    /// `older_than`, then the directory if that left it empty.
    pub(crate) fn clean_stale(&self, older_than: Duration) {
        let Ok(rd) = fs::read_dir(&self.path) else { return };
        let now = SystemTime::now();
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with("w-") || name.starts_with("mpu-")) {
                continue;
            }
            // Not following links: only haul's own files and folders.
            let Ok(md) = ent.metadata() else { continue };
            let age = md.modified().ok().and_then(|m| now.duration_since(m).ok());
            if age.is_none_or(|a| a <= older_than) {
                continue;
            }
            let gone = if md.is_dir() {
                fs::remove_dir_all(ent.path())
            } else {
                fs::remove_file(ent.path())
            };
            match gone {
                Ok(()) => tracing::info!(path = %ent.path().display(), "removed a stale temp file of an earlier run"),
                Err(e) => tracing::debug!(path = %ent.path().display(), error = %e, "stale temp file not removed"),
            }
        }
        self.release(|_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_lives_while_something_is_in_flight() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let t = TmpDir::new(root.path().join(".haul-tmp"));
        let (p1, _f1, w1) = t.new_file()?;
        let (p2, _f2, w2) = t.new_file()?;
        let up = t.new_upload_dir("abc")?;
        fs::remove_file(&p1)?;
        drop(w1);
        assert!(t.path().is_dir(), "kept while writes are in flight");
        fs::remove_file(&p2)?;
        drop(w2);
        assert!(t.path().is_dir(), "kept while an upload is open");
        fs::remove_dir_all(&up)?;
        t.upload_ended("abc");
        assert!(!t.path().exists(), "removed once empty and idle");
        Ok(())
    }

    #[test]
    fn stale_temp_files_are_removed_fresh_ones_kept() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join(".haul-tmp");
        fs::create_dir_all(dir.join("mpu-old"))?;
        fs::write(dir.join("mpu-old/upload.json"), b"{}")?;
        fs::write(dir.join("w-old"), b"x")?;
        fs::write(dir.join("w-new"), b"x")?;
        fs::write(dir.join("notes"), b"not ours")?;
        let old = filetime::FileTime::from_system_time(SystemTime::now() - 2 * STALE_AFTER);
        for p in ["mpu-old", "w-old", "notes"] {
            filetime::set_file_mtime(dir.join(p), old)?;
        }
        let t = TmpDir::new(dir.clone());
        t.clean_stale(STALE_AFTER);
        assert!(!dir.join("mpu-old").exists());
        assert!(!dir.join("w-old").exists());
        assert!(dir.join("w-new").exists(), "a temp file of a run in flight stays");
        assert!(dir.join("notes").exists(), "only haul's names are touched");
        Ok(())
    }
}
