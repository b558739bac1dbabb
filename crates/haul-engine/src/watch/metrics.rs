//! What a watch tells: the observer (uploads, failures, counts), the
//! summary in the log every `summary_every`, and the summary of a run.

use std::sync::atomic::Ordering;
use std::time::Duration;

use haul_store::Key;

use super::journal::Counts;
use super::{Inner, WatchError};
use crate::report::Failure;

/// One file uploaded (and verified).
#[derive(Debug, Clone)]
pub struct Uploaded<'a> {
    /// The path relative to the watched directory.
    pub key: &'a str,
    pub dst_key: &'a Key,
    pub bytes: u64,
    /// From the file's last write to the verified upload.
    pub latency: Duration,
    /// The local file was deleted.
    pub deleted: bool,
}

/// Receives what a watch does (logs are written by the watch itself).
pub trait WatchObserver: Send + Sync {
    fn uploaded(&self, _u: &Uploaded<'_>) {}
    /// An attempt failed; `dead` when no more attempts will be made.
    fn failed(&self, _f: &Failure, _attempts: u32, _dead: bool) {}
    /// Counts by state, every few seconds.
    fn counts(&self, _c: &Counts) {}
    /// Not uploaded, kept: `dst_key` exists and `--if-exists skip` keeps it.
    fn skipped_exists(&self, _key: &str, _dst_key: &Key) {}
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WatchSummary {
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    pub deleted_files: u64,
    /// Failed attempts in this run.
    pub failed_attempts: u64,
    /// Files left in the journal when the run ended.
    pub pending: u64,
    pub failed: u64,
    pub dead: u64,
    /// Full scans of the tree (the first, periodic ones, and those that
    /// replaced lost events).
    pub scans: u64,
    /// Parts of the tree (or the destination) that could not be listed.
    pub scan_errors: u64,
    /// Symbolic links found in the tree (each counted once, ever): never followed.
    pub skipped_symlinks: u64,
    /// Files kept, not uploaded, because their key existed (`--if-exists skip`).
    pub skipped_exists: u64,
    /// The run was stopped (signal) rather than finished (`once`).
    pub interrupted: bool,
}

impl WatchSummary {
    /// 0 when every file was uploaded, 1 when some failed or the run was cut short.
    pub fn exit_code(&self) -> i32 {
        if self.failed_attempts > 0 || self.failed > 0 || self.dead > 0 || self.scan_errors > 0 || self.interrupted {
            1
        } else {
            0
        }
    }
}

/// Logs what happened since the `last` summary (counts now `c`).
pub(super) fn log_summary(last: &Counts, c: &Counts, every: Duration) {
    tracing::info!(
        uploaded = c.uploaded_files - last.uploaded_files,
        bytes = c.uploaded_bytes - last.uploaded_bytes,
        deleted = c.deleted_files - last.deleted_files,
        pending = c.pending + c.uploading,
        failed = c.failed,
        dead = c.dead,
        total_uploaded = c.uploaded_files,
        "summary of the last {}",
        humantime::format_duration(every)
    );
}

impl Inner {
    /// Counts by state, to the observer.
    pub(super) fn report_counts(&self) -> Result<(), WatchError> {
        let c = self.journal.counts()?;
        self.observer.counts(&c);
        Ok(())
    }

    /// What the run did, and what is left in the journal.
    pub(super) fn summary(&self, interrupted: bool) -> Result<WatchSummary, WatchError> {
        let c = self.journal.counts()?;
        Ok(WatchSummary {
            uploaded_files: self.uploaded.load(Ordering::Relaxed),
            uploaded_bytes: self.bytes.load(Ordering::Relaxed),
            deleted_files: self.deleted.load(Ordering::Relaxed),
            failed_attempts: self.failed.load(Ordering::Relaxed),
            pending: c.pending + c.uploading,
            failed: c.failed,
            dead: c.dead,
            scans: self.scans.load(Ordering::Relaxed),
            scan_errors: self.scan_errors.load(Ordering::Relaxed),
            skipped_symlinks: c.skipped_symlinks,
            skipped_exists: c.skipped_exists,
            interrupted: interrupted && self.opts.once,
        })
    }
}
