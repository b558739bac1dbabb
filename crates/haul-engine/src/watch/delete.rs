//! The deletion of an uploaded file (`delete_after_upload`): only if it is
//! still what was uploaded and no one writes it. The checks and the
//! `unlinkat` are [`Tree::remove_if`](super::nofollow::Tree::remove_if)'s;
//! here are the second settle window, the writers seen by events, and what
//! each verdict means for the file.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use haul_store::{ErrorKind, Op, StoreError};

use super::journal::now_ms;
use super::lease;
use super::nofollow::{Entry, Ident, Removed};
use super::upload::Outcome;
use super::{Inner, WatchError};

/// An upload waiting out the settle window before its deletion: it does
/// not hold a slot of the concurrency while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    /// A read lease taken before a deletion is broken with SIGIO when a
    /// writer opens the file meanwhile: the signal must not end haul. The
    /// guard handles it while it lives (only when deleting).
    pub(super) fn guard_sigio(&self) -> Result<Option<tokio::signal::unix::Signal>, WatchError> {
        if !self.opts.delete_after_upload {
            return Ok(None);
        }
        lease::guard_sigio()
            .map(Some)
            .map_err(|e| WatchError::Setup(format!("cannot handle SIGIO (needed for read leases): {e}")))
    }

    /// Deletes an uploaded file if it is still what was uploaded: after a
    /// second settle window, if no one has it open for writing (as the
    /// events tell), and if its inode, size, mtime and ctime are those read
    /// — compared and unlinked relative to one descriptor of its folder,
    /// opened without following links. Ok(false): not deleted, nothing to do.
    pub(super) async fn delete_checked(&self, rel: &str, id: &Ident) -> Result<bool, Outcome> {
        self.second_settle_window().await;
        if self.writers.writing(rel) {
            tracing::info!(
                key = rel,
                "opened for writing after it was read: kept, uploaded again once closed"
            );
            return Err(self.not_settled(*id));
        }
        let removed = self.remove_if_unchanged(rel, id).await?;
        self.removed(rel, id, removed)
    }

    /// Looked at again after the settle window (not counted as uploading).
    fn not_settled(&self, id: Ident) -> Outcome {
        Outcome::NotSettled {
            id,
            at_ms: now_ms() + self.opts.settle.as_millis() as i64,
        }
    }

    /// Waits `settle` once more, without holding a slot of the concurrency.
    async fn second_settle_window(&self) {
        if !self.opts.settle.is_zero() {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _w = Waiting(&self.waiting);
            tokio::time::sleep(self.opts.settle).await;
        }
    }

    /// [`Tree::remove_if`](super::nofollow::Tree::remove_if), off the async
    /// threads; logs once that deletions go without a read lease.
    async fn remove_if_unchanged(&self, rel: &str, id: &Ident) -> Result<Removed, Outcome> {
        let (tree, r, expect) = (Arc::clone(&self.tree), rel.to_string(), *id);
        let (removed, no_lease) = tokio::task::spawn_blocking(move || {
            let mut no_lease = None;
            tree.remove_if(&r, &expect, &mut no_lease).map(|r| (r, no_lease))
        })
        .await
        .map_err(|e| Outcome::Failed(StoreError::new(Op::Delete, rel, ErrorKind::Other, e.to_string())))?
        .map_err(|e| Outcome::Failed(StoreError::io(Op::Delete, rel, e)))?;
        if let Some(e) = no_lease {
            if !self.no_lease_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    key = rel,
                    error = %e,
                    "no read lease (not the files' owner, or leases disabled): deleting after the second settle \
                     window and the writers seen by file-system events only"
                );
            }
        }
        Ok(removed)
    }

    /// What the verdict of the deletion means for the file.
    fn removed(&self, rel: &str, id: &Ident, removed: Removed) -> Result<bool, Outcome> {
        match removed {
            Removed::Yes => Ok(true),
            Removed::Busy => {
                tracing::info!(
                    key = rel,
                    "open for writing by another process: kept, uploaded again once it is closed and settled"
                );
                Err(self.not_settled(*id))
            }
            Removed::Changed(Entry::File(now)) => {
                tracing::info!(
                    key = rel,
                    "changed after it was read: uploading again instead of deleting"
                );
                Err(self.not_settled(now))
            }
            Removed::Changed(Entry::Symlink { at }) => {
                tracing::warn!(key = rel, link = %at, "a symbolic link appeared in the path after the upload: nothing deleted");
                self.src_skips_symlink(&at);
                Ok(false)
            }
            Removed::Changed(_) => Ok(false),
        }
    }
}
