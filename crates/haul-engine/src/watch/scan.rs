//! Scans: the full scan (at start, on lost events, every `rescan_every`)
//! and the scan of a new folder record every file to upload in the
//! journal; a daemon's full scan then prunes folders emptied by deletion.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use haul_store::{Key, ListEntry, ListRequest, ObjectMeta};

use super::journal::{now_ms, Seen, WatchJournal};
use super::tree::{self, time_ns};
use super::{source, Inner, WatchError};
use crate::march::SyncAction;
use crate::shard::Shard;
use crate::sync::SyncJob;

/// Rows recorded in one transaction.
const BATCH: usize = 1000;

/// The files a scan found, recorded in the journal [`BATCH`] at a time.
struct Found<'a> {
    journal: &'a WatchJournal,
    batch: Vec<Seen>,
    /// Files listed.
    files: u64,
    /// Files recorded.
    queued: u64,
}

impl<'a> Found<'a> {
    fn new(journal: &'a WatchJournal) -> Self {
        Found {
            journal,
            batch: Vec::with_capacity(BATCH),
            files: 0,
            queued: 0,
        }
    }

    /// A file listed, and its row if it is to be recorded.
    fn file(&mut self, seen: Option<Seen>) {
        self.files += 1;
        self.batch.extend(seen);
    }

    /// Records the batch once it is full.
    fn flush_if_full(&mut self) -> Result<(), WatchError> {
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), WatchError> {
        self.queued += self.batch.len() as u64;
        self.journal.enqueue(&self.batch)?;
        self.batch.clear();
        Ok(())
    }
}

impl Inner {
    /// Scans the tree (or the folder `base`, `a/b/`) and records every file
    /// to upload. Without `delete_after_upload` the tree is marched against
    /// the destination, so files already there are not uploaded again.
    pub(super) async fn scan(self: Arc<Self>, base: String, full: bool) -> Result<u64, WatchError> {
        let started = Instant::now();
        let mut found = Found::new(&self.journal);
        if self.opts.delete_after_upload {
            self.list_tree(&base, &mut found).await?;
        } else {
            self.march_tree(&base, &mut found).await?;
        }
        found.flush()?;
        let (files, queued) = (found.files, found.queued);
        if full {
            self.scans.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                files,
                queued,
                took = %humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64)),
                "scanned the tree"
            );
            // In a daemon, each scan prunes what earlier uploads emptied;
            // `once` prunes at its end.
            if !self.opts.once {
                self.prune().await;
            }
        } else {
            tracing::debug!(base, queued, "scanned a new folder");
        }
        Ok(queued)
    }

    /// The row of a listed file, unless it is excluded.
    fn seen_by_scan(&self, meta: &ObjectMeta) -> Option<Seen> {
        let settle = self.opts.settle.as_millis() as i64;
        let rel = meta.key.as_str();
        if self.excl.excluded(rel) {
            return None;
        }
        let mtime_ns = meta.last_modified.map(time_ns).unwrap_or(0);
        Some(Seen {
            key: rel.to_string(),
            size: meta.size,
            mtime_ns,
            ctime_ns: source::listed_ctime_ns(meta),
            closed: false,
            // Settled once haul has seen it unchanged this long, by its
            // own clock: a file dated in the future settles too.
            not_before_ms: now_ms() + settle,
        })
    }

    /// With `delete_after_upload`: every file of the tree (it is the
    /// backlog). A part that cannot be listed is counted and skipped.
    async fn list_tree(&self, base: &str, found: &mut Found<'_>) -> Result<(), WatchError> {
        let prefix = Key::prefix(base.to_string())?;
        let mut list = self.src.list(ListRequest::prefix(prefix));
        while let Some(entry) = list.next().await {
            match entry {
                Ok(ListEntry::Object(meta)) => found.file(self.seen_by_scan(&meta)),
                Ok(ListEntry::Prefix(_)) => {}
                Ok(ListEntry::Unlisted(u)) => {
                    tracing::warn!(key = %u.key, reason = %u.reason, "{}: not uploaded", u.detail)
                }
                Err(e) => {
                    self.scan_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(key = %e.key, error = %e, "cannot scan part of the tree");
                }
            }
            found.flush_if_full()?;
        }
        Ok(())
    }

    /// Without `delete_after_upload`: the files the destination lacks (or
    /// holds otherwise), by a sync march. A listing error ends the scan.
    async fn march_tree(&self, base: &str, found: &mut Found<'_>) -> Result<(), WatchError> {
        let job = SyncJob::new(Key::root(), self.opts.dst_base.clone());
        let shard = Shard {
            prefix: base.to_string(),
            delimiter: None,
            ..Shard::all()
        };
        let mut actions = job.march(&self.src, &self.dst, &shard);
        while let Some(a) = actions.next().await {
            match a {
                SyncAction::Copy { src, .. } => found.file(self.seen_by_scan(&src)),
                SyncAction::Skip { .. } => found.files += 1,
                SyncAction::Delete { .. } => {}
                SyncAction::Unlisted(u) => {
                    tracing::warn!(key = %u.key, reason = %u.reason, "{}: not uploaded", u.detail)
                }
                SyncAction::Error(e) => {
                    found.flush()?;
                    self.scan_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e.into());
                }
            }
            found.flush_if_full()?;
        }
        Ok(())
    }

    /// Removes folders emptied by deletion, when asked.
    pub(super) async fn prune(&self) {
        if !self.opts.prune_empty_dirs {
            return;
        }
        let (root, keep) = (self.root.clone(), self.opts.keep_dirs_for);
        let removed = tokio::task::spawn_blocking(move || tree::prune_empty_dirs(&root, keep))
            .await
            .unwrap_or_default();
        for d in removed {
            tracing::info!(dir = %d.display(), "removed an empty folder");
        }
    }
}
