//! `haul watch`: continuous, verified, crash-safe ingest of a growing local
//! tree into a store, keeping the hierarchy.
//!
//! The design, in one paragraph: the **journal** ([`journal::WatchJournal`],
//! SQLite) is the truth about what is left to do; file-system events and
//! scans only add rows to it. A full scan runs at start (everything already
//! there), on a watcher overflow or error, and every `rescan_every`, so an
//! event lost by the kernel or by haul is only a delay, never a lost file.
//! The dispatcher takes due rows, checks each file has settled (closed after
//! writing and open for writing by no one, or seen unchanged for `settle` by
//! haul's clock), uploads it with the verifying [`Transfer`], and only then
//! deletes it (`delete_after_upload`): after a second settle window, if no
//! one has it open for writing and its inode, size, mtime and ctime are
//! still those it had when read. The tree is only ever reached through
//! [`nofollow::Tree`]: no symbolic link is followed anywhere. Failures are
//! retried with capped exponential backoff, forever or up to
//! `max_attempts` (then a dead letter). A crash leaves rows `uploading`:
//! the next start makes them pending again and aborts their multipart
//! uploads. Memory is bounded by the concurrency and the event queue, not
//! by the number of files.

pub mod exists;
pub mod journal;
pub mod lease;
pub mod nofollow;
mod skips;
pub mod source;
pub mod tree;
pub mod writers;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use haul_store::{DynStore, ErrorKind, Key, ListEntry, ListRequest, MultipartId, Op, StoreError};
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::Watcher as _;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use exists::IfExists;
pub use journal::{Counts, FailureRow, FileState, WatchJournal, WatchStatus};
pub use tree::Exclusions;

use crate::journal::JournalError;
use crate::report::{Failure, Observer};
use crate::shard::Shard;
use crate::sync::SyncJob;
use crate::transfer::{Transfer, TransferOptions};
use journal::{now_ms, Due, Seen};
use nofollow::{Entry, Ident, Removed, Tree};
use skips::{record_symlink, SkipLog};
use source::WatchSource;
use tree::time_ns;
use writers::Writers;

/// Options of a watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Where keys start in the destination (`prefix/` + the relative path).
    pub dst_base: Key,
    /// A file not closed-after-write is complete once unchanged this long.
    pub settle: Duration,
    /// A full scan this often (events are hints; the scan is the guarantee).
    pub rescan_every: Duration,
    /// Globs (relative paths) never uploaded, on top of `.*`, `*.tmp`, `*.part`.
    pub exclude: Vec<String>,
    /// Delete a local file once its upload is verified and it is unchanged.
    pub delete_after_upload: bool,
    /// Remove folders emptied by deletion once they are `keep_dirs_for` old.
    pub prune_empty_dirs: bool,
    pub keep_dirs_for: Duration,
    /// Attempts before a file becomes a dead letter (`None`: forever).
    pub max_attempts: Option<u32>,
    /// Backoff between attempts: from `retry_min`, doubling, capped at `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Files uploading at once.
    pub concurrency: usize,
    /// Scan, upload what is there, exit.
    pub once: bool,
    /// On shutdown, how long in-flight uploads may take to finish before
    /// they are aborted (and re-queued).
    pub shutdown_timeout: Duration,
    /// File-system events buffered; when full, a rescan replaces them.
    pub event_queue: usize,
    /// A summary in the log this often.
    pub summary_every: Duration,
    /// Follow file-system events (off: periodic scans only).
    pub events: bool,
    /// What an upload does when its key exists in the destination.
    pub if_exists: IfExists,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            dst_base: Key::root(),
            settle: Duration::from_secs(2),
            rescan_every: Duration::from_secs(600),
            exclude: Vec::new(),
            delete_after_upload: false,
            prune_empty_dirs: false,
            keep_dirs_for: Duration::from_secs(86_400),
            max_attempts: None,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            concurrency: 16,
            once: false,
            shutdown_timeout: Duration::from_secs(30),
            event_queue: 65_536,
            summary_every: Duration::from_secs(60),
            events: true,
            if_exists: IfExists::Overwrite,
        }
    }
}

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

/// A watch that could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
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

/// How one dispatched file ended.
enum Outcome {
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

struct Inner {
    opts: WatchOptions,
    root: PathBuf,
    tree: Arc<Tree>,
    writers: Writers,
    /// Uploads waiting out the settle window before their deletion: they do
    /// not hold a slot of the concurrency.
    waiting: AtomicUsize,
    src: DynStore,
    dst: DynStore,
    transfer: Transfer,
    journal: Arc<WatchJournal>,
    excl: Exclusions,
    observer: Arc<dyn WatchObserver>,
    uploaded: AtomicU64,
    bytes: AtomicU64,
    deleted: AtomicU64,
    failed: AtomicU64,
    scans: AtomicU64,
    scan_errors: AtomicU64,
    /// The warning that deletions go without a read lease was logged.
    no_lease_logged: AtomicBool,
}

/// A watch of one local directory into one destination.
pub struct Watch {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("root", &self.inner.root)
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

/// Records the multipart upload of a file in the journal, so a crash can abort it.
struct UploadObserver {
    journal: Arc<WatchJournal>,
    key: String,
}

impl Observer for UploadObserver {
    fn upload_started(&self, key: &Key, upload: &MultipartId) {
        if let Err(e) = self.journal.set_upload(&self.key, key.as_str(), &upload.0) {
            tracing::warn!(key = %self.key, error = %e, "cannot record a multipart upload in the journal");
        }
    }
}

/// Scans of new folders at once; beyond, a full scan replaces them.
const MAX_FOLDER_SCANS: usize = 32;

fn ms_of_ns(ns: i64) -> i64 {
    ns / 1_000_000
}

impl Watch {
    /// A watch of `root` (an existing directory) into `dst`, with its
    /// journal in `journal`.
    pub fn new(
        root: impl Into<PathBuf>,
        dst: DynStore,
        journal: Arc<WatchJournal>,
        opts: WatchOptions,
        topts: TransferOptions,
        observer: Arc<dyn WatchObserver>,
    ) -> Result<Self, WatchError> {
        let root: PathBuf = root.into();
        let root = root
            .canonicalize()
            .map_err(|e| WatchError::Setup(format!("{}: {e}", root.display())))?;
        let tree = Arc::new(
            Tree::open(&root)
                .map_err(|e| WatchError::Setup(format!("{}: cannot open the folder: {e}", root.display())))?,
        );
        let excl = Exclusions::new(&opts.exclude).map_err(|e| WatchError::Setup(e.to_string()))?;
        let skips = Arc::new(SkipLog {
            journal: journal.clone(),
            logged: Default::default(),
        });
        let src = WatchSource::new(tree.clone(), root.clone(), excl.clone(), skips);
        let mut topts = topts;
        // Skip and rename never replace an object: every write is conditional.
        topts.put.if_none_match = opts.if_exists != IfExists::Overwrite;
        Ok(Watch {
            inner: Arc::new(Inner {
                opts,
                root,
                tree,
                writers: Writers::default(),
                waiting: AtomicUsize::new(0),
                src: Arc::new(src),
                dst,
                transfer: Transfer::new(topts, CancellationToken::new()),
                journal,
                excl,
                observer,
                uploaded: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                deleted: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                scans: AtomicU64::new(0),
                scan_errors: AtomicU64::new(0),
                no_lease_logged: AtomicBool::new(false),
            }),
        })
    }

    /// The watched directory (canonical).
    pub fn root(&self) -> &std::path::Path {
        &self.inner.root
    }

    /// Runs until `shutdown` is cancelled (or, with `once`, until every file
    /// present has been handled).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<WatchSummary, WatchError> {
        let inner = self.inner.clone();
        let opts = &inner.opts;
        inner.recover().await?;
        // A read lease taken before a deletion is broken with SIGIO when a
        // writer opens the file meanwhile: the signal must not end haul.
        let _sigio = match opts.delete_after_upload {
            true => Some(
                lease::guard_sigio()
                    .map_err(|e| WatchError::Setup(format!("cannot handle SIGIO (needed for read leases): {e}")))?,
            ),
            false => None,
        };
        if opts.once {
            inner.journal.retry_failed_now()?;
        }

        // Events first, then the scan: nothing created meanwhile is missed.
        let wake = Arc::new(Notify::new());
        let overflow = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::channel::<(notify::Event, u64)>(opts.event_queue.max(1));
        let watcher = if opts.events && !opts.once {
            inner.start_watcher(tx, overflow.clone(), wake.clone()).await
        } else {
            None
        };

        // The full scan (at most one at a time; asked again while it runs:
        // once more after it) and scans of new folders.
        let mut full: Option<tokio::task::JoinHandle<Result<u64, WatchError>>> =
            Some(tokio::spawn(inner.clone().scan(String::new(), true)));
        let mut scan_again = false;
        let mut folders: JoinSet<Result<u64, WatchError>> = JoinSet::new();
        let mut inflight: JoinSet<(Due, Outcome)> = JoinSet::new();
        let start = tokio::time::Instant::now();
        let mut rescan = tokio::time::interval_at(start + opts.rescan_every, opts.rescan_every);
        let mut summary = tokio::time::interval_at(start + opts.summary_every, opts.summary_every);
        let stats_every = opts.summary_every.min(Duration::from_secs(5));
        let mut stats = tokio::time::interval_at(start + stats_every, stats_every);
        let mut last_summary = Counts::default();
        let mut events = Vec::with_capacity(1024);
        let mut interrupted = false;

        loop {
            let now = now_ms();
            if !opts.once {
                inner.journal.wake_failed(now)?;
            }
            let busy = inflight.len().saturating_sub(inner.waiting.load(Ordering::SeqCst));
            let free = opts.concurrency.max(1).saturating_sub(busy);
            for due in inner.journal.take_due(now, free)? {
                let i = inner.clone();
                inflight.spawn(async move {
                    let out = i.clone().process(&due).await;
                    (due, out)
                });
            }
            let next = inner.journal.next_due()?;
            if opts.once && full.is_none() && folders.is_empty() && inflight.is_empty() && next.is_none() {
                break;
            }
            let mut wait_ms = next.map_or(1000, |t| (t - now).clamp(0, 1000));
            if !opts.once {
                if let Some(r) = inner.journal.next_retry()? {
                    wait_ms = wait_ms.min((r - now).max(0));
                }
            }
            let sleep = tokio::time::sleep(Duration::from_millis(wait_ms as u64));
            tokio::select! {
                _ = shutdown.cancelled() => {
                    interrupted = true;
                    break;
                }
                Some(res) = inflight.join_next(), if !inflight.is_empty() => {
                    match res {
                        Ok((due, out)) => inner.finish(&due, out)?,
                        Err(e) => tracing::error!(error = %e, "an upload task panicked"),
                    }
                }
                n = rx.recv_many(&mut events, 4096), if watcher.is_some() => {
                    if n > 0 {
                        let batch = std::mem::take(&mut events);
                        let i = inner.clone();
                        let (dirs, need_rescan) = tokio::task::spawn_blocking(move || i.apply_events(batch))
                            .await
                            .map_err(|e| WatchError::Setup(format!("event task failed: {e}")))??;
                        for d in dirs {
                            // Many new folders at once: one full scan instead.
                            if folders.len() >= MAX_FOLDER_SCANS {
                                overflow.store(true, Ordering::SeqCst);
                                wake.notify_one();
                                break;
                            }
                            folders.spawn(inner.clone().scan(d, false));
                        }
                        if need_rescan {
                            overflow.store(true, Ordering::SeqCst);
                            wake.notify_one();
                        }
                    }
                }
                () = wake.notified() => {
                    if overflow.swap(false, Ordering::SeqCst) {
                        // Opens and closes were lost with the rest.
                        inner.writers.clear();
                        tracing::warn!("file-system events were lost (queue overflow or watcher error): rescanning");
                        if full.is_some() { scan_again = true; } else {
                            full = Some(tokio::spawn(inner.clone().scan(String::new(), true)));
                        }
                    }
                }
                Some(res) = futures::future::OptionFuture::from(full.as_mut()), if full.is_some() => {
                    full = None;
                    match res {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "scan failed; the next scan will try again"),
                        Err(e) => tracing::error!(error = %e, "a scan task failed"),
                    }
                    if scan_again {
                        scan_again = false;
                        full = Some(tokio::spawn(inner.clone().scan(String::new(), true)));
                    }
                }
                Some(res) = folders.join_next(), if !folders.is_empty() => {
                    match res {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "scan of a new folder failed; the next full scan covers it"),
                        Err(e) => tracing::error!(error = %e, "a scan task failed"),
                    }
                }
                _ = rescan.tick(), if !opts.once => {
                    if full.is_some() { scan_again = true; } else {
                        full = Some(tokio::spawn(inner.clone().scan(String::new(), true)));
                    }
                }
                _ = stats.tick() => {
                    let c = inner.journal.counts()?;
                    inner.observer.counts(&c);
                }
                _ = summary.tick() => {
                    let c = inner.journal.counts()?;
                    tracing::info!(
                        uploaded = c.uploaded_files - last_summary.uploaded_files,
                        bytes = c.uploaded_bytes - last_summary.uploaded_bytes,
                        deleted = c.deleted_files - last_summary.deleted_files,
                        pending = c.pending + c.uploading,
                        failed = c.failed,
                        dead = c.dead,
                        total_uploaded = c.uploaded_files,
                        "summary of the last {}", humantime::format_duration(opts.summary_every)
                    );
                    last_summary = c;
                }
                () = sleep => {}
            }
        }

        drop(watcher);
        if let Some(f) = full.take() {
            f.abort();
        }
        folders.abort_all();
        if !inflight.is_empty() {
            tracing::info!(
                uploads = inflight.len(),
                timeout = %humantime::format_duration(opts.shutdown_timeout),
                "stopping: finishing uploads in flight"
            );
            let deadline = tokio::time::Instant::now() + opts.shutdown_timeout;
            loop {
                match tokio::time::timeout_at(deadline, inflight.join_next()).await {
                    Ok(Some(Ok((due, out)))) => inner.finish(&due, out)?,
                    Ok(Some(Err(e))) => tracing::error!(error = %e, "an upload task failed"),
                    Ok(None) => break,
                    Err(_) => {
                        tracing::warn!(
                            uploads = inflight.len(),
                            "shutdown timeout: aborting uploads in flight (they are re-queued)"
                        );
                        inner.transfer.cancel_token().cancel();
                        while let Some(res) = inflight.join_next().await {
                            if let Ok((due, out)) = res {
                                inner.finish(&due, out)?;
                            }
                        }
                        break;
                    }
                }
            }
        }
        if opts.once && !interrupted {
            inner.prune().await;
        }
        let c = inner.journal.counts()?;
        Ok(WatchSummary {
            uploaded_files: inner.uploaded.load(Ordering::Relaxed),
            uploaded_bytes: inner.bytes.load(Ordering::Relaxed),
            deleted_files: inner.deleted.load(Ordering::Relaxed),
            failed_attempts: inner.failed.load(Ordering::Relaxed),
            pending: c.pending + c.uploading,
            failed: c.failed,
            dead: c.dead,
            scans: inner.scans.load(Ordering::Relaxed),
            scan_errors: inner.scan_errors.load(Ordering::Relaxed),
            skipped_symlinks: c.skipped_symlinks,
            skipped_exists: c.skipped_exists,
            interrupted: interrupted && opts.once,
        })
    }
}

impl Inner {
    /// After a crash: re-queue interrupted uploads, abort their multipart uploads.
    async fn recover(&self) -> Result<(), WatchError> {
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

    async fn start_watcher(
        &self,
        tx: mpsc::Sender<(notify::Event, u64)>,
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
    fn rel_of(&self, path: &std::path::Path) -> Option<String> {
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
    fn apply_events(&self, events: Vec<(notify::Event, u64)>) -> Result<(Vec<String>, bool), WatchError> {
        let now = now_ms();
        let settle = self.opts.settle.as_millis() as i64;
        let mut rescan = false;
        let mut dirs = Vec::new();
        let mut seen: Vec<Seen> = Vec::with_capacity(events.len());
        for (ev, n) in events {
            if ev.need_rescan() {
                rescan = true;
                self.writers.lost_at(n);
            }
            let (closed, paths): (bool, &[PathBuf]) = match ev.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    ev.paths
                        .iter()
                        .filter_map(|p| self.rel_of(p))
                        .for_each(|r| self.writers.closed(&r));
                    (true, &ev.paths)
                }
                EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(CreateKind::File) => {
                    ev.paths
                        .iter()
                        .filter_map(|p| self.rel_of(p))
                        .for_each(|r| self.writers.written(&r, n));
                    (false, &ev.paths)
                }
                // A file renamed into the tree is complete.
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => (true, &ev.paths),
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => (true, &ev.paths[ev.paths.len().min(1)..]),
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                    ev.paths
                        .iter()
                        .filter_map(|p| self.rel_of(p))
                        .for_each(|r| self.writers.forget(&r));
                    continue;
                }
                EventKind::Access(_) => continue,
                _ => (false, &ev.paths),
            };
            for path in paths {
                let Some(rel) = self.rel_of(path) else { continue };
                let id = match self.tree.stat(&rel) {
                    Ok(Entry::File(id)) => id,
                    Ok(Entry::Dir) => {
                        if matches!(ev.kind, EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))) {
                            dirs.push(format!("{rel}/"));
                        }
                        continue;
                    }
                    Ok(Entry::Symlink { at }) => {
                        self.src_skips_symlink(&at);
                        continue;
                    }
                    // Gone already (a scan would not find it either), or not a file.
                    Ok(_) | Err(_) => continue,
                };
                seen.push(Seen {
                    key: rel,
                    size: id.size,
                    mtime_ns: id.mtime_ns,
                    ctime_ns: id.ctime_ns,
                    closed,
                    // Settled once haul has seen it unchanged this long
                    // (closed: at once), whatever the file's own times say.
                    not_before_ms: if closed { now } else { now + settle },
                });
            }
        }
        self.journal.enqueue(&seen)?;
        Ok((dirs, rescan))
    }

    /// Records a symbolic link met by an event.
    fn src_skips_symlink(&self, at: &str) {
        if self.excl.excluded(at) {
            return;
        }
        record_symlink(&self.journal, at);
    }

    /// Scans the tree (or the folder `base`, `a/b/`) and records every file
    /// to upload. Without `delete_after_upload` the tree is marched against
    /// the destination, so files already there are not uploaded again.
    async fn scan(self: Arc<Self>, base: String, full: bool) -> Result<u64, WatchError> {
        let started = Instant::now();
        let settle = self.opts.settle.as_millis() as i64;
        let mut queued = 0u64;
        let mut files = 0u64;
        let mut batch: Vec<Seen> = Vec::with_capacity(1000);
        let to_seen = |meta: &haul_store::ObjectMeta| -> Option<Seen> {
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
        };
        let flush = |batch: &mut Vec<Seen>, queued: &mut u64| -> Result<(), WatchError> {
            *queued += batch.len() as u64;
            self.journal.enqueue(batch)?;
            batch.clear();
            Ok(())
        };
        if self.opts.delete_after_upload {
            let prefix = Key::prefix(base.clone())?;
            let mut list = self.src.list(ListRequest::prefix(prefix));
            while let Some(entry) = list.next().await {
                match entry {
                    Ok(ListEntry::Object(meta)) => {
                        files += 1;
                        if let Some(s) = to_seen(&meta) {
                            batch.push(s);
                        }
                    }
                    Ok(ListEntry::Prefix(_)) => {}
                    Ok(ListEntry::Unlisted(u)) => {
                        tracing::warn!(key = %u.key, reason = %u.reason, "{}: not uploaded", u.detail)
                    }
                    Err(e) => {
                        self.scan_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(key = %e.key, error = %e, "cannot scan part of the tree");
                    }
                }
                if batch.len() >= 1000 {
                    flush(&mut batch, &mut queued)?;
                }
            }
        } else {
            let job = SyncJob::new(Key::root(), self.opts.dst_base.clone());
            let shard = Shard {
                prefix: base.clone(),
                delimiter: None,
                ..Shard::all()
            };
            let mut actions = job.march(&self.src, &self.dst, &shard);
            while let Some(a) = actions.next().await {
                match a {
                    crate::march::SyncAction::Copy { src, .. } => {
                        files += 1;
                        if let Some(s) = to_seen(&src) {
                            batch.push(s);
                        }
                    }
                    crate::march::SyncAction::Skip { .. } => files += 1,
                    crate::march::SyncAction::Delete { .. } => {}
                    crate::march::SyncAction::Unlisted(u) => {
                        tracing::warn!(key = %u.key, reason = %u.reason, "{}: not uploaded", u.detail)
                    }
                    crate::march::SyncAction::Error(e) => {
                        flush(&mut batch, &mut queued)?;
                        self.scan_errors.fetch_add(1, Ordering::Relaxed);
                        return Err(e.into());
                    }
                }
                if batch.len() >= 1000 {
                    flush(&mut batch, &mut queued)?;
                }
            }
        }
        flush(&mut batch, &mut queued)?;
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

    /// Removes folders emptied by deletion, when asked.
    async fn prune(&self) {
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

    /// What is at `rel` now (never through a link), off the async threads.
    async fn stat(&self, rel: &str) -> std::io::Result<Entry> {
        let (tree, r) = (self.tree.clone(), rel.to_string());
        tokio::task::spawn_blocking(move || tree.stat(&r))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Uploads one due file if it has settled; deletes it after a verified
    /// upload when asked, no one writes it and it has not changed.
    async fn process(self: Arc<Self>, due: &Due) -> Outcome {
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

    /// Deletes an uploaded file if it is still what was uploaded: after a
    /// second settle window, if no one has it open for writing (as the
    /// events tell), and if its inode, size, mtime and ctime are those read
    /// — compared and unlinked relative to one descriptor of its folder,
    /// opened without following links. Ok(false): not deleted, nothing to do.
    async fn delete_checked(&self, rel: &str, id: &Ident) -> Result<bool, Outcome> {
        let settle_ms = self.opts.settle.as_millis() as i64;
        let again = |id: Ident| Outcome::NotSettled {
            id,
            at_ms: now_ms() + settle_ms,
        };
        if !self.opts.settle.is_zero() {
            struct Waiting<'a>(&'a AtomicUsize);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _w = Waiting(&self.waiting);
            tokio::time::sleep(self.opts.settle).await;
        }
        if self.writers.writing(rel) {
            tracing::info!(
                key = rel,
                "opened for writing after it was read: kept, uploaded again once closed"
            );
            return Err(again(*id));
        }
        let (tree, r, expect) = (self.tree.clone(), rel.to_string(), *id);
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
        match removed {
            Removed::Yes => Ok(true),
            Removed::Busy => {
                tracing::info!(
                    key = rel,
                    "open for writing by another process: kept, uploaded again once it is closed and settled"
                );
                Err(again(*id))
            }
            Removed::Changed(Entry::File(now)) => {
                tracing::info!(
                    key = rel,
                    "changed after it was read: uploading again instead of deleting"
                );
                Err(again(now))
            }
            Removed::Changed(Entry::Symlink { at }) => {
                tracing::warn!(key = rel, link = %at, "a symbolic link appeared in the path after the upload: nothing deleted");
                self.src_skips_symlink(&at);
                Ok(false)
            }
            Removed::Changed(_) => Ok(false),
        }
    }

    /// Records how a dispatched file ended.
    fn finish(&self, due: &Due, out: Outcome) -> Result<(), WatchError> {
        match out {
            Outcome::Uploaded {
                bytes,
                deleted,
                latency,
                dst_key,
            } => {
                let settle_until = now_ms() + self.opts.settle.as_millis() as i64;
                let again = self.journal.done(&due.key, bytes, deleted, settle_until)?;
                self.uploaded.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
                if deleted {
                    self.deleted.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(
                    key = %due.key,
                    dst = %dst_key,
                    bytes,
                    latency_ms = latency.as_millis() as u64,
                    deleted,
                    "uploaded"
                );
                if again {
                    tracing::info!(key = %due.key, "changed while uploading: will upload again");
                }
                self.observer.uploaded(&Uploaded {
                    key: &due.key,
                    dst_key: &dst_key,
                    bytes,
                    latency,
                    deleted,
                });
            }
            Outcome::Vanished => {
                tracing::debug!(key = %due.key, "gone from the tree before upload");
                self.journal.forget(&due.key)?;
            }
            Outcome::NotSettled { id, at_ms } => {
                self.journal
                    .requeue(&due.key, id.size, id.mtime_ns, id.ctime_ns, at_ms)?;
            }
            Outcome::SkippedExists { dst_key } => {
                let msg = format!(
                    "{dst_key} exists and --if-exists skip keeps it: the local file is kept, not uploaded \
                     (`haul watch retry` tries again)"
                );
                tracing::warn!(key = %due.key, dst = %dst_key, "the destination key exists: not uploaded, the local file is kept");
                self.journal.skipped_exists(&due.key, &msg)?;
                self.observer.skipped_exists(&due.key, &dst_key);
            }
            Outcome::Released => self.journal.release(&due.key)?,
            Outcome::Failed(e) => {
                let f = Failure::from_error(&due.key, &e);
                let attempts = due.attempts + 1;
                let dead = self.opts.max_attempts.is_some_and(|m| attempts >= m);
                let retry_at = (!dead).then(|| {
                    let d = ExponentialBuilder::default()
                        .with_min_delay(self.opts.retry_min)
                        .with_max_delay(self.opts.retry_max)
                        .with_jitter()
                        .without_max_times()
                        .build()
                        .nth(due.attempts as usize)
                        .unwrap_or(self.opts.retry_max);
                    now_ms() + d.as_millis() as i64
                });
                self.journal.failed(&due.key, &f.op, &f.code, &f.message, retry_at)?;
                self.failed.fetch_add(1, Ordering::Relaxed);
                if dead {
                    tracing::error!(key = %due.key, op = %f.op, code = %f.code, attempts, "{}: giving up (dead letter; `haul watch retry` re-queues it)", f.message);
                } else {
                    tracing::warn!(
                        key = %due.key, op = %f.op, code = %f.code, attempts,
                        retry_in_ms = retry_at.map_or(0, |t| (t - now_ms()).max(0)),
                        "{}", f.message
                    );
                }
                self.observer.failed(&f, attempts, dead);
            }
        }
        Ok(())
    }
}
