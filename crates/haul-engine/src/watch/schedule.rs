//! The dispatcher of a run: it starts uploads of due files within the
//! concurrency, turns file-system events into rows, runs the full scans
//! (at most one at a time; asked again while one runs: once more after it)
//! and the scans of new folders, and ticks the counts and the summary —
//! until the run is stopped or, with `once`, nothing is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Interval;
use tokio_util::sync::CancellationToken;

use super::events::Numbered;
use super::journal::{now_ms, Counts, Due};
use super::metrics::log_summary;
use super::upload::Outcome;
use super::{Inner, WatchError};

/// Scans of new folders at once; beyond, a full scan replaces them.
const MAX_FOLDER_SCANS: usize = 32;

/// Events taken from the queue at once.
const EVENT_BATCH: usize = 4096;

/// A scan's result: the files it recorded.
type ScanResult = Result<u64, WatchError>;

/// The state of a running watch.
pub(super) struct Scheduler {
    pub(super) inner: Arc<Inner>,
    /// Rings when events were lost (`overflow` set): a rescan is due.
    wake: Arc<Notify>,
    overflow: Arc<AtomicBool>,
    rx: mpsc::Receiver<Numbered>,
    events: Vec<Numbered>,
    pub(super) watcher: Option<notify::RecommendedWatcher>,
    /// The full scan running, if any, and whether another was asked meanwhile.
    pub(super) full: Option<JoinHandle<ScanResult>>,
    scan_again: bool,
    pub(super) folders: JoinSet<ScanResult>,
    pub(super) inflight: JoinSet<(Due, Outcome)>,
    rescan: Interval,
    summary: Interval,
    stats: Interval,
    last_summary: Counts,
}

impl Scheduler {
    /// Starts the watcher, then the first full scan: events first, so
    /// nothing created meanwhile is missed.
    pub(super) async fn start(inner: Arc<Inner>) -> Self {
        let opts = &inner.opts;
        let wake = Arc::new(Notify::new());
        let overflow = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Numbered>(opts.event_queue.max(1));
        let watcher = if opts.events && !opts.once {
            inner.start_watcher(tx, overflow.clone(), wake.clone()).await
        } else {
            None
        };
        let full = Some(tokio::spawn(inner.clone().scan(String::new(), true)));
        let start = tokio::time::Instant::now();
        let rescan = tokio::time::interval_at(start + opts.rescan_every, opts.rescan_every);
        let summary = tokio::time::interval_at(start + opts.summary_every, opts.summary_every);
        let stats_every = opts.summary_every.min(Duration::from_secs(5));
        let stats = tokio::time::interval_at(start + stats_every, stats_every);
        Scheduler {
            inner,
            wake,
            overflow,
            rx,
            events: Vec::with_capacity(1024),
            watcher,
            full,
            scan_again: false,
            folders: JoinSet::new(),
            inflight: JoinSet::new(),
            rescan,
            summary,
            stats,
            last_summary: Counts::default(),
        }
    }

    /// Runs until `shutdown` is cancelled (true) or, with `once`, until
    /// every file present has been handled (false).
    pub(super) async fn run_until(&mut self, shutdown: &CancellationToken) -> Result<bool, WatchError> {
        let once = self.inner.opts.once;
        loop {
            let Some(wait) = self.dispatch(now_ms())? else {
                return Ok(false);
            };
            let sleep = tokio::time::sleep(wait);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(true),
                Some(res) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    match res {
                        Ok((due, out)) => self.inner.finish(&due, out)?,
                        Err(e) => tracing::error!(error = %e, "an upload task panicked"),
                    }
                }
                n = self.rx.recv_many(&mut self.events, EVENT_BATCH), if self.watcher.is_some() => {
                    self.events_received(n).await?;
                }
                () = self.wake.notified() => self.woken(),
                Some(res) = futures::future::OptionFuture::from(self.full.as_mut()), if self.full.is_some() => {
                    self.full_scan_ended(res);
                }
                Some(res) = self.folders.join_next(), if !self.folders.is_empty() => folder_scan_ended(res),
                _ = self.rescan.tick(), if !once => self.full_scan(),
                _ = self.stats.tick() => self.inner.report_counts()?,
                _ = self.summary.tick() => {
                    let c = self.inner.journal.counts()?;
                    log_summary(&self.last_summary, &c, self.inner.opts.summary_every);
                    self.last_summary = c;
                }
                () = sleep => {}
            }
        }
    }

    /// Starts uploads of due files within the concurrency (uploads waiting
    /// out a settle window before their deletion hold no slot). Returns how
    /// long to wait for the next due file or retry; None when `once` has
    /// nothing left to do.
    fn dispatch(&mut self, now: i64) -> Result<Option<Duration>, WatchError> {
        let (inner, opts) = (&self.inner, &self.inner.opts);
        if !opts.once {
            inner.journal.wake_failed(now)?;
        }
        let busy = self.inflight.len().saturating_sub(inner.waiting.load(Ordering::SeqCst));
        let free = opts.concurrency.max(1).saturating_sub(busy);
        for due in inner.journal.take_due(now, free)? {
            let i = inner.clone();
            self.inflight.spawn(async move {
                let out = i.clone().process(&due).await;
                (due, out)
            });
        }
        let next = inner.journal.next_due()?;
        if opts.once && self.full.is_none() && self.folders.is_empty() && self.inflight.is_empty() && next.is_none() {
            return Ok(None);
        }
        let mut wait_ms = next.map_or(1000, |t| (t - now).clamp(0, 1000));
        if !opts.once {
            if let Some(r) = inner.journal.next_retry()? {
                wait_ms = wait_ms.min((r - now).max(0));
            }
        }
        Ok(Some(Duration::from_millis(wait_ms as u64)))
    }

    /// `n` events arrived: recorded (off the async threads); new folders
    /// are scanned, or the tree when too many or some were lost.
    async fn events_received(&mut self, n: usize) -> Result<(), WatchError> {
        if n == 0 {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.events);
        let i = self.inner.clone();
        let (dirs, need_rescan) = tokio::task::spawn_blocking(move || i.apply_events(batch))
            .await
            .map_err(|e| WatchError::Setup(format!("event task failed: {e}")))??;
        for d in dirs {
            // Many new folders at once: one full scan instead.
            if self.folders.len() >= MAX_FOLDER_SCANS {
                self.events_lost();
                break;
            }
            self.folders.spawn(self.inner.clone().scan(d, false));
        }
        if need_rescan {
            self.events_lost();
        }
        Ok(())
    }

    /// Asks for a rescan (handled when [`Self::woken`]).
    fn events_lost(&self) {
        self.overflow.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Events were lost (by the watcher or the queue): a full scan.
    fn woken(&mut self) {
        if self.overflow.swap(false, Ordering::SeqCst) {
            // Opens and closes were lost with the rest.
            self.inner.writers.clear();
            tracing::warn!("file-system events were lost (queue overflow or watcher error): rescanning");
            self.full_scan();
        }
    }

    /// Starts a full scan, or one more after the one running.
    fn full_scan(&mut self) {
        if self.full.is_some() {
            self.scan_again = true;
        } else {
            self.full = Some(tokio::spawn(self.inner.clone().scan(String::new(), true)));
        }
    }

    fn full_scan_ended(&mut self, res: Result<ScanResult, JoinError>) {
        self.full = None;
        match res {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "scan failed; the next scan will try again"),
            Err(e) => tracing::error!(error = %e, "a scan task failed"),
        }
        if self.scan_again {
            self.scan_again = false;
            self.full = Some(tokio::spawn(self.inner.clone().scan(String::new(), true)));
        }
    }
}

fn folder_scan_ended(res: Result<ScanResult, JoinError>) {
    match res {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "scan of a new folder failed; the next full scan covers it"),
        Err(e) => tracing::error!(error = %e, "a scan task failed"),
    }
}
