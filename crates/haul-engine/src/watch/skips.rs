//! What the watched tree holds that is never uploaded (symbolic links,
//! FIFOs, sockets, names that are not UTF-8): logged once and, for links,
//! counted in the journal.

use std::sync::Arc;

use super::journal::WatchJournal;
use super::source::Skips;

/// Counts a symbolic link met in the tree, logging it the first time.
pub(super) fn record_symlink(journal: &WatchJournal, at: &str) {
    match journal.symlink_seen(at) {
        Ok(true) => tracing::warn!(
            path = at,
            "a symbolic link in the watched tree: never followed, not uploaded"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(path = at, error = %e, "cannot record a symbolic link in the journal"),
    }
}

/// Logs what the tree holds that is never uploaded: each symbolic link once
/// ever (and counted, in the journal), other unusable entries once a run.
pub(super) struct SkipLog {
    pub(super) journal: Arc<WatchJournal>,
    pub(super) logged: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Skips for SkipLog {
    fn symlink(&self, at: &str) {
        record_symlink(&self.journal, at);
    }

    fn unusable(&self, at: &str, why: &str) {
        if self
            .logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(at.to_string())
        {
            tracing::warn!(path = at, "{why}: not uploaded");
        }
    }
}
