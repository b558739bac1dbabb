//! The upload of one due file: has it settled, upload it (verified), then
//! delete it when asked ([`delete`](super::delete)); and the recovery of
//! the uploads a crash interrupted.

use std::sync::Arc;
use std::time::Duration;

use haul_store::{ErrorKind, Key, MultipartId, Op, StoreError};

use super::journal::{now_ms, Due, WatchJournal};
use super::nofollow::{Entry, Ident};
use super::{source, Inner, WatchError};
use crate::report::Observer;

/// How one dispatched file ended.
pub(super) enum Outcome {
    Uploaded {
        bytes: u64,
        deleted: bool,
        latency: Duration,
        dst_key: Key,
    },
    /// Gone from the tree (deleted or renamed away): nothing to do.
    Vanished,
    /// Still being written, or changed while it uploaded: look again later.
    NotSettled {
        id: Ident,
        at_ms: i64,
    },
    /// Not uploaded: the key exists and `--if-exists skip` keeps it.
    SkippedExists {
        dst_key: Key,
    },
    Failed(StoreError),
    /// The run is stopping: back to pending, no attempt counted.
    Released,
}

/// Records the multipart upload of a file in the journal, so a crash can abort it.
pub(super) struct UploadObserver {
    pub(super) journal: Arc<WatchJournal>,
    pub(super) key: String,
}

impl Observer for UploadObserver {
    fn upload_started(&self, key: &Key, upload: &MultipartId) {
        if let Err(e) = self.journal.set_upload(&self.key, key.as_str(), &upload.0) {
            tracing::warn!(key = %self.key, error = %e, "cannot record a multipart upload in the journal");
        }
    }
}

fn ms_of_ns(ns: i64) -> i64 {
    ns / 1_000_000
}

impl Inner {
    /// After a crash: re-queue interrupted uploads, abort their multipart uploads.
    pub(super) async fn recover(&self) -> Result<(), WatchError> {
        for o in self.journal.recover()? {
            let key = Key::object(o.dst_key.clone())?;
            match self.dst.abort_multipart(&key, &MultipartId(o.upload_id.clone())).await {
                Ok(()) => tracing::info!(key = %o.dst_key, "aborted the multipart upload of an interrupted run"),
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(key = %o.dst_key, error = %e, "cannot abort the multipart upload of an interrupted run")
                }
            }
            self.journal.clear_upload(&o.key)?;
        }
        Ok(())
    }

    /// What is at `rel` now (never through a link), off the async threads.
    async fn stat(&self, rel: &str) -> std::io::Result<Entry> {
        let (tree, r) = (self.tree.clone(), rel.to_string());
        tokio::task::spawn_blocking(move || tree.stat(&r))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Uploads one due file if it has settled; deletes it after a verified
    /// upload when asked, no one writes it and it has not changed.
    pub(super) async fn process(self: Arc<Self>, due: &Due) -> Outcome {
        let settle_ms = self.opts.settle.as_millis() as i64;
        let id = match self.stat(&due.key).await {
            Ok(Entry::File(id)) => id,
            Ok(Entry::Symlink { at }) => {
                self.src_skips_symlink(&at);
                return Outcome::Vanished;
            }
            Ok(_) => return Outcome::Vanished,
            Err(e) => return Outcome::Failed(StoreError::io(Op::Head, due.key.clone(), e)),
        };
        let again = |id: Ident| Outcome::NotSettled {
            id,
            at_ms: now_ms() + settle_ms,
        };
        // Due means: recorded with this size and these times at least
        // `settle` ago by haul's clock (or closed after writing). A scan
        // does not know ctime (0): size and mtime then.
        let unchanged =
            id.size == due.size && id.mtime_ns == due.mtime_ns && (due.ctime_ns == 0 || id.ctime_ns == due.ctime_ns);
        if !unchanged {
            return again(id);
        }
        if self.writers.writing(&due.key) {
            tracing::debug!(key = %due.key, "still open for writing: not settled");
            return again(id);
        }
        if let Err(e) = self.journal.started(&due.key, id.size, id.mtime_ns, id.ctime_ns) {
            tracing::warn!(key = %due.key, error = %e, "journal");
        }
        let key = match Key::object(due.key.clone()) {
            Ok(k) => k,
            Err(e) => return Outcome::Failed(e),
        };
        let meta = source::meta_of(key, &id);
        let dst_key = match self.opts.dst_base.join(&due.key) {
            Ok(k) => k,
            Err(e) => return Outcome::Failed(e),
        };
        let (bytes, dst_key) = match self.upload(&due.key, &meta, &id, dst_key).await {
            Ok(done) => done,
            Err(outcome) => return outcome,
        };
        let latency = Duration::from_millis((now_ms() - ms_of_ns(id.mtime_ns)).max(0) as u64);
        let mut deleted = false;
        if self.opts.delete_after_upload {
            match self.delete_checked(&due.key, &id).await {
                Ok(d) => deleted = d,
                Err(outcome) => return outcome,
            }
        }
        Outcome::Uploaded {
            bytes,
            deleted,
            latency,
            dst_key,
        }
    }
}
