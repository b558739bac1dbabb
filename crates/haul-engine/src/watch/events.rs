//! File-system events: the watcher (started before the first scan, so
//! nothing created meanwhile is missed) and how its events become journal
//! rows, writers, folders to scan, or a full rescan when some were lost.
//! Events are hints: a scan finds whatever they miss.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::Watcher as _;
use tokio::sync::{mpsc, Notify};

use super::journal::{now_ms, Seen};
use super::nofollow::Entry;
use super::skips::record_symlink;
use super::{Inner, WatchError};

/// An event and its number (in the order the watcher gave them).
pub(super) type Numbered = (notify::Event, u64);

impl Inner {
    pub(super) async fn start_watcher(
        &self,
        tx: mpsc::Sender<Numbered>,
        overflow: Arc<AtomicBool>,
        wake: Arc<Notify>,
    ) -> Option<notify::RecommendedWatcher> {
        let (seq, lost_at) = self.writers.counters();
        let handler = move |res: notify::Result<notify::Event>| {
            let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
            let lost = match res {
                Ok(ev) => tx.try_send((ev, n)).is_err(),
                Err(e) => {
                    tracing::warn!(error = %e, "file-system watcher error");
                    true
                }
            };
            if lost {
                lost_at.fetch_max(n, Ordering::SeqCst);
                overflow.store(true, Ordering::SeqCst);
                wake.notify_one();
            }
        };
        let root = self.root.clone();
        // Adding a watch per folder walks the tree: off the async threads.
        let res = tokio::task::spawn_blocking(move || {
            // Links to folders are not watched (nor followed anywhere else).
            let config = notify::Config::default().with_follow_symlinks(false);
            let mut w = notify::RecommendedWatcher::new(handler, config)?;
            w.watch(&root, notify::RecursiveMode::Recursive)?;
            Ok::<_, notify::Error>(w)
        })
        .await;
        match res {
            Ok(Ok(w)) => Some(w),
            Ok(Err(e)) => {
                tracing::error!(
                    error = %e,
                    "cannot follow file-system events (on Linux, raise fs.inotify.max_user_watches); \
                     falling back to scans every --rescan-every"
                );
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the file-system watcher");
                None
            }
        }
    }

    /// The relative key of an event path, if it is under the root and not ignored.
    fn rel_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let rel = match rel.to_str() {
            Some(r) => r.replace(std::path::MAIN_SEPARATOR, "/"),
            None => {
                tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
                return None;
            }
        };
        (!rel.is_empty() && !self.excl.excluded(&rel)).then_some(rel)
    }

    /// Turns events into journal rows; returns new folders to scan and
    /// whether a full rescan is needed. Opens and closes go to the table of
    /// writers. Blocking (stats the files, never through a link).
    pub(super) fn apply_events(&self, events: Vec<Numbered>) -> Result<(Vec<String>, bool), WatchError> {
        let now = now_ms();
        let mut rescan = false;
        let mut dirs = Vec::new();
        let mut seen: Vec<Seen> = Vec::with_capacity(events.len());
        for (ev, n) in events {
            if ev.need_rescan() {
                rescan = true;
                self.writers.lost_at(n);
            }
            let Some((closed, paths)) = self.paths_to_stat(&ev, n) else {
                continue;
            };
            for path in paths {
                let Some(rel) = self.rel_of(path) else { continue };
                seen.extend(self.seen_by_event(rel, &ev.kind, closed, now, &mut dirs));
            }
        }
        self.journal.enqueue(&seen)?;
        Ok((dirs, rescan))
    }

    /// Tells the writers what event `n` says, and returns the paths it asks
    /// to look at, with whether they are complete (closed after writing, or
    /// renamed into the tree). None: nothing to look at.
    fn paths_to_stat<'e>(&self, ev: &'e notify::Event, n: u64) -> Option<(bool, &'e [PathBuf])> {
        let rels = || ev.paths.iter().filter_map(|p| self.rel_of(p));
        Some(match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                rels().for_each(|r| self.writers.closed(&r));
                (true, &ev.paths)
            }
            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(CreateKind::File) => {
                rels().for_each(|r| self.writers.written(&r, n));
                (false, &ev.paths)
            }
            // A file renamed into the tree is complete.
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => (true, &ev.paths),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => (true, &ev.paths[ev.paths.len().min(1)..]),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                rels().for_each(|r| self.writers.forget(&r));
                return None;
            }
            EventKind::Access(_) => return None,
            _ => (false, &ev.paths),
        })
    }

    /// What is at `rel` after an event of `kind`: a file to record, a new
    /// folder to scan (pushed on `dirs`), or nothing (a link is counted).
    fn seen_by_event(
        &self,
        rel: String,
        kind: &EventKind,
        closed: bool,
        now: i64,
        dirs: &mut Vec<String>,
    ) -> Option<Seen> {
        let settle = self.opts.settle.as_millis() as i64;
        let id = match self.tree.stat(&rel) {
            Ok(Entry::File(id)) => id,
            Ok(Entry::Dir) => {
                if matches!(kind, EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))) {
                    dirs.push(format!("{rel}/"));
                }
                return None;
            }
            Ok(Entry::Symlink { at }) => {
                self.src_skips_symlink(&at);
                return None;
            }
            // Gone already (a scan would not find it either), or not a file.
            Ok(_) | Err(_) => return None,
        };
        Some(Seen {
            key: rel,
            size: id.size,
            mtime_ns: id.mtime_ns,
            ctime_ns: id.ctime_ns,
            closed,
            // Settled once haul has seen it unchanged this long
            // (closed: at once), whatever the file's own times say.
            not_before_ms: if closed { now } else { now + settle },
        })
    }

    /// Records a symbolic link met by an event.
    pub(super) fn src_skips_symlink(&self, at: &str) {
        if self.excl.excluded(at) {
            return;
        }
        record_symlink(&self.journal, at);
    }
}
