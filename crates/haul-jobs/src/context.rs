//! What a job run is given (where to report, when to stop) and what it
//! gives back. The library never prints: the CLI renders a [`Reporter`]'s
//! events and the [`JobOutcome`]; a remote worker or a pipeline would
//! forward or record them instead.

use std::sync::Arc;

use haul_engine::job::{Action, PlanSink};
use haul_engine::restore::RestoreOutcome;
use haul_engine::verify::{Finding, VerifySummary};
use haul_engine::watch::{WatchObserver, WatchSummary};
use haul_engine::{Observer, Summary};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Receives what a job does as it does it. Every method has a default
/// that ignores the event.
pub trait Reporter: Observer + WatchObserver + Send + Sync {
    /// An action a dry run would take (cp, sync, rm), with the URLs of the
    /// two stores (`src_url/src` → `dst_url/dst`; deletes are in `dst_url`).
    fn would(&self, _src_url: &str, _dst_url: &str, _action: Action<'_>) {}
    /// A plan begins (diff, and sync's dry run): rows follow.
    fn plan_started(&self) {}
    /// One row of a plan.
    fn plan_row(&self, _row: &PlanRow) {}
    /// One finding of a verify.
    fn finding(&self, _f: &Finding) {}
    /// One object of a restore (`url`: the bucket's URL).
    fn restored(&self, _url: &str, _outcome: &RestoreOutcome, _dry_run: bool) {}
    /// Something the user should know that is not a failure
    /// ("resuming job … from …: 3 of 8 shards done").
    fn notice(&self, _message: &str) {}
}

/// A reporter that ignores everything.
#[derive(Debug, Default)]
pub struct Silent;
impl Observer for Silent {}
impl WatchObserver for Silent {}
impl Reporter for Silent {}

/// What a run needs besides its spec.
#[derive(Clone)]
pub struct RunContext {
    pub reporter: Arc<dyn Reporter>,
    /// Cancelled to stop: no new objects start, multipart uploads in
    /// flight are aborted (a watch finishes in-flight work first, within
    /// its `shutdown_timeout`).
    pub cancel: CancellationToken,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext").finish_non_exhaustive()
    }
}

impl RunContext {
    pub fn new(reporter: Arc<dyn Reporter>, cancel: CancellationToken) -> Self {
        RunContext { reporter, cancel }
    }

    /// A context that reports nothing and is never cancelled (tests, embedding).
    pub fn silent() -> Self {
        RunContext::new(Arc::new(Silent), CancellationToken::new())
    }

    /// The reporter as the engine's observer.
    pub fn observer(&self) -> Arc<dyn Observer> {
        Arc::new(Forward(self.reporter.clone()))
    }

    /// The dry-run sink of an executor copying between these stores.
    pub(crate) fn plan_sink(&self, src_url: String, dst_url: String) -> Arc<dyn PlanSink> {
        Arc::new(PlanTo {
            reporter: self.reporter.clone(),
            src_url,
            dst_url,
        })
    }
}

struct PlanTo {
    reporter: Arc<dyn Reporter>,
    src_url: String,
    dst_url: String,
}

impl PlanSink for PlanTo {
    fn would(&self, action: Action<'_>) {
        self.reporter.would(&self.src_url, &self.dst_url, action);
    }
}

/// One row of a plan: what sync would do with a key, and why. Keys are
/// relative to their side's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanRow {
    /// `copy`, `delete` or `skip`.
    pub action: &'static str,
    pub reason: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// RFC 3339, or empty when unknown.
    pub mtime: String,
}

/// The counts of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    pub copy: u64,
    pub delete: u64,
    pub same: u64,
    pub errors: u64,
}

/// The counts of a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreCounts {
    pub requested: u64,
    pub in_progress: u64,
    pub already_restored: u64,
    pub not_archived: u64,
    pub failed: u64,
    pub dry_run: bool,
}

/// What a job did, for the caller to render and to turn into an exit code.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// cp, sync, rm: objects moved or deleted. `verb` names it for people
    /// ("Copied", "Would sync", "Deleted", "Uploaded").
    Moved {
        verb: &'static str,
        summary: Summary,
        /// `--strict`: entries skipped as not objects make the exit code 1.
        strict: bool,
    },
    /// diff, and sync's dry run.
    Planned(PlanCounts),
    Verified(VerifySummary),
    Restored(RestoreCounts),
    Watched {
        summary: WatchSummary,
        once: bool,
    },
    /// bundle: archives written, objects copied as they are, dead letters.
    Bundled {
        summary: haul_engine::bundle::BundleSummary,
        dry_run: bool,
    },
    /// unbundle: members restored, refused, failed.
    Unbundled {
        report: haul_engine::bundle::UnbundleReport,
        dry_run: bool,
    },
}

impl JobOutcome {
    /// The documented exit code: 0 everything done; 1 some objects failed
    /// (or differ, for verify; or, with `--strict`, were not objects).
    pub fn exit_code(&self) -> u8 {
        let failed = match self {
            JobOutcome::Moved { summary, strict, .. } => summary.exit_code() != 0 || (*strict && summary.unlisted > 0),
            JobOutcome::Planned(c) => c.errors > 0,
            JobOutcome::Verified(s) => s.exit_code() != 0,
            JobOutcome::Restored(c) => c.failed > 0,
            JobOutcome::Watched { summary, once } => *once && summary.exit_code() != 0,
            JobOutcome::Bundled { summary, .. } => summary.dead_letters > 0 || !summary.failed.is_empty(),
            JobOutcome::Unbundled { report, .. } => !report.is_clean(),
        };
        u8::from(failed)
    }
}

/// The engine's observer of a reporter.
struct Forward(Arc<dyn Reporter>);

impl Observer for Forward {
    fn planned(&self, objects: u64, bytes: u64) {
        self.0.planned(objects, bytes)
    }
    fn bytes(&self, n: u64) {
        self.0.bytes(n)
    }
    fn done(&self, key: &str, bytes: u64) {
        self.0.done(key, bytes)
    }
    fn deleted(&self, key: &str) {
        self.0.deleted(key)
    }
    fn listed(&self, n: u64) {
        self.0.listed(n)
    }
    fn shard_finished(&self, done: u64, total: u64) {
        self.0.shard_finished(done, total)
    }
    fn skipped(&self, key: &str, reason: &str) {
        self.0.skipped(key, reason)
    }
    fn unlisted(&self, key: &str, reason: haul_engine::report::SkipReason, detail: &str) {
        self.0.unlisted(key, reason, detail)
    }
    fn unverified(&self, key: &str) {
        self.0.unverified(key)
    }
    fn failed(&self, f: &haul_engine::Failure) {
        Observer::failed(self.0.as_ref(), f)
    }
    fn upload_started(&self, key: &haul_store::Key, upload: &haul_store::MultipartId) {
        self.0.upload_started(key, upload)
    }
}
