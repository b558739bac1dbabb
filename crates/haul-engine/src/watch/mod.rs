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
//!
//! The module map: `options` (what a watch is asked to do), `schedule`
//! (the dispatcher of a run: due files within the concurrency, events,
//! scans, ticks), `events` (the watcher and its events), `scan` (full and
//! folder scans, pruning), `upload` (one file: settled? upload, verified;
//! crash recovery) and `exists` (`--if-exists`), `delete` (the deletion
//! after a verified upload), `finish` (how a file ended: journal, counters,
//! log, retries), `shutdown` (the end of a run), `metrics` (the observer,
//! the periodic summary, the run's summary); under them [`journal`] (the
//! SQLite journal), [`nofollow`] and [`lease`] (the tree, reached without
//! following links, and the read lease), [`writers`], [`tree`] (exclusions,
//! pruning), [`source`] (the tree as a store) and `skips`.

mod delete;
mod events;
pub mod exists;
mod finish;
pub mod journal;
pub mod lease;
mod metrics;
pub mod nofollow;
mod options;
mod scan;
mod schedule;
mod shutdown;
mod skips;
pub mod source;
pub mod tree;
mod upload;
pub mod writers;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use haul_store::{DynStore, StoreError};
use tokio_util::sync::CancellationToken;

pub use exists::IfExists;
pub use journal::{Counts, FailureRow, FileState, WatchJournal, WatchStatus};
pub use metrics::{Uploaded, WatchObserver, WatchSummary};
pub use options::WatchOptions;
pub use tree::Exclusions;

use crate::journal::JournalError;
use crate::transfer::{Transfer, TransferOptions};
use journal::now_ms;
use nofollow::Tree;
use schedule::Scheduler;
use skips::SkipLog;
use source::WatchSource;
use upload::{Outcome, UploadObserver};
use writers::Writers;

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
        inner.recover().await?;
        let _sigio = inner.guard_sigio()?;
        if inner.opts.once {
            inner.journal.retry_failed_now()?;
        }
        let mut scheduler = Scheduler::start(inner.clone()).await;
        let interrupted = scheduler.run_until(&shutdown).await?;
        scheduler.stop().await?;
        if inner.opts.once && !interrupted {
            inner.prune().await;
        }
        inner.summary(interrupted)
    }
}
