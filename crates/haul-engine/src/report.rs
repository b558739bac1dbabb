//! What happened to every object: failures (key, operation, code, reason),
//! counters and the final summary. Failures are streamed to the observer as
//! they happen; only counters and the first few failures stay in memory.
//!
//! [`Counters`] are plain numbers that add up: the results of many work
//! units — run in this process or in others — sum into one [`Summary`],
//! which adds what does not add (timing, notices, retries, the failures
//! kept for printing).

use std::ops::{Add, AddAssign};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use haul_store::StoreError;

pub use haul_store::{SkipReason, Unlisted};
use serde::{Deserialize, Serialize};

/// How many failures the summary keeps for printing; all go to the observer.
pub const KEPT_FAILURES: usize = 20;

/// One object that could not be handled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// The source key (or the key acted on, for rm).
    pub key: String,
    pub op: String,
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn from_error(key: &str, e: &StoreError) -> Self {
        Failure {
            key: key.to_string(),
            op: e.op.to_string(),
            code: e.report_code().to_string(),
            message: e.to_string(),
        }
    }
}

/// Receives events as the job runs (progress bars, JSON output, reports).
pub trait Observer: Send + Sync {
    /// Objects discovered by the planner.
    fn planned(&self, _objects: u64, _bytes: u64) {}
    /// Bytes moved (as they move).
    fn bytes(&self, _n: u64) {}
    /// One object finished.
    fn done(&self, _key: &str, _bytes: u64) {}
    /// One object deleted.
    fn deleted(&self, _key: &str) {}
    /// Source objects listed (sync).
    fn listed(&self, _n: u64) {}
    /// A shard finished: `done` of `total`.
    fn shard_finished(&self, _done: u64, _total: u64) {}
    /// One object skipped (with the reason).
    fn skipped(&self, _key: &str, _reason: &str) {}
    /// One entry of a listing that cannot be an object (a dangling link, a
    /// socket, a name that is not UTF-8, a folder marker the destination
    /// cannot hold): not copied, and not a failure unless `--strict`.
    fn unlisted(&self, _key: &str, _reason: SkipReason, _detail: &str) {}
    /// One object copied whose source bytes could not be checked against
    /// anything the source declares (see `Outcome::unverified`).
    fn unverified(&self, _key: &str) {}
    /// One object failed.
    fn failed(&self, _f: &Failure) {}
    /// A multipart upload was created (so a crash can abort it later).
    fn upload_started(&self, _key: &haul_store::Key, _upload: &haul_store::MultipartId) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;
impl Observer for NoObserver {}

/// What a run (or one work unit of it) did, counted: every field adds up
/// across units and processes (`+=`). The meaning of each is that of the
/// [`Summary`] field of the same name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Objects completed (and verified), or planned in a dry run.
    pub objects: u64,
    pub bytes: u64,
    /// Source objects listed (sync).
    pub listed: u64,
    /// Objects skipped: unchanged (sync) or not copyable (with a reason).
    pub skipped: u64,
    /// Of the skipped: listing entries that cannot be objects.
    pub unlisted: u64,
    /// Objects copied whose source bytes could not be checked.
    pub unverified: u64,
    /// Objects deleted (or that would be, in a dry run).
    pub deleted: u64,
    /// Failures, all of them (however many were kept).
    pub failed: u64,
    /// Objects copied server-side.
    pub server_side: u64,
    /// Shards of the job and how many an earlier run had done. These
    /// describe the job, not a unit: a work unit leaves them 0 and whoever
    /// cut the job sets them.
    pub shards: u64,
    pub shards_resumed: u64,
}

impl AddAssign<&Counters> for Counters {
    fn add_assign(&mut self, o: &Counters) {
        let Counters {
            objects,
            bytes,
            listed,
            skipped,
            unlisted,
            unverified,
            deleted,
            failed,
            server_side,
            shards,
            shards_resumed,
        } = o;
        self.objects += objects;
        self.bytes += bytes;
        self.listed += listed;
        self.skipped += skipped;
        self.unlisted += unlisted;
        self.unverified += unverified;
        self.deleted += deleted;
        self.failed += failed;
        self.server_side += server_side;
        self.shards += shards;
        self.shards_resumed += shards_resumed;
    }
}

impl AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        *self += &o;
    }
}

impl Add for Counters {
    type Output = Counters;
    fn add(mut self, o: Counters) -> Counters {
        self += &o;
        self
    }
}

impl std::iter::Sum for Counters {
    fn sum<I: Iterator<Item = Counters>>(iter: I) -> Counters {
        iter.fold(Counters::default(), Add::add)
    }
}

/// Counters of a run, shared by all tasks.
#[derive(Debug)]
pub struct Report {
    started: Instant,
    pub objects_ok: AtomicU64,
    pub bytes_ok: AtomicU64,
    pub listed: AtomicU64,
    pub skipped: AtomicU64,
    /// Listing entries that cannot be objects (counted in `skipped` too).
    pub unlisted: AtomicU64,
    /// Objects copied whose source could not be checked.
    pub unverified: AtomicU64,
    pub deleted: AtomicU64,
    pub failed: AtomicU64,
    pub server_side: AtomicU64,
    /// Shards of the job, those finished in earlier runs, and those run now.
    pub shards_total: AtomicU64,
    pub shards_resumed: AtomicU64,
    pub shards_done: AtomicU64,
    failures: Mutex<Vec<Failure>>,
    /// How many failures are kept (the count in `failed` stays exact).
    keep: usize,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            started: Instant::now(),
            objects_ok: AtomicU64::new(0),
            bytes_ok: AtomicU64::new(0),
            listed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            unlisted: AtomicU64::new(0),
            unverified: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            server_side: AtomicU64::new(0),
            shards_total: AtomicU64::new(0),
            shards_resumed: AtomicU64::new(0),
            shards_done: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
            keep: KEPT_FAILURES,
        }
    }
}

impl Report {
    /// A listing entry that cannot be an object, skipped.
    pub fn unlisted(&self, s: &Unlisted, obs: &dyn Observer) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.unlisted.fetch_add(1, Ordering::Relaxed);
        obs.unlisted(s.key.as_str(), s.reason, &s.detail);
    }

    pub fn ok(&self, bytes: u64) {
        self.objects_ok.fetch_add(1, Ordering::Relaxed);
        self.bytes_ok.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn fail(&self, f: Failure, obs: &dyn Observer) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        obs.failed(&f);
        self.keep(std::iter::once(f));
    }

    /// A report that keeps up to `keep` failures (instead of the summary's
    /// [`KEPT_FAILURES`]).
    pub fn keeping(keep: usize) -> Self {
        Report {
            keep,
            ..Report::default()
        }
    }

    fn keep(&self, fs: impl IntoIterator<Item = Failure>) {
        let mut kept = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.keep.saturating_sub(kept.len());
        kept.extend(fs.into_iter().take(room));
    }

    /// The failures kept so far, in the order they happened.
    pub fn kept_failures(&self) -> Vec<Failure> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        Counters {
            objects: self.objects_ok.load(Ordering::Relaxed),
            bytes: self.bytes_ok.load(Ordering::Relaxed),
            listed: self.listed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            unlisted: self.unlisted.load(Ordering::Relaxed),
            unverified: self.unverified.load(Ordering::Relaxed),
            deleted: self.deleted.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            server_side: self.server_side.load(Ordering::Relaxed),
            shards: self.shards_total.load(Ordering::Relaxed),
            shards_resumed: self.shards_resumed.load(Ordering::Relaxed),
        }
    }

    /// Adds what was counted elsewhere (a work unit, another process) —
    /// its counters and its failures, which the observer has already seen:
    /// it is not told again.
    pub fn absorb(&self, c: &Counters, failures: &[Failure]) {
        let add = |a: &AtomicU64, n: u64| {
            a.fetch_add(n, Ordering::Relaxed);
        };
        add(&self.objects_ok, c.objects);
        add(&self.bytes_ok, c.bytes);
        add(&self.listed, c.listed);
        add(&self.skipped, c.skipped);
        add(&self.unlisted, c.unlisted);
        add(&self.unverified, c.unverified);
        add(&self.deleted, c.deleted);
        add(&self.failed, c.failed);
        add(&self.server_side, c.server_side);
        add(&self.shards_total, c.shards);
        add(&self.shards_resumed, c.shards_resumed);
        self.keep(failures.iter().cloned());
    }

    pub fn summary(&self, dry_run: bool) -> Summary {
        Summary::new(
            self.counters(),
            dry_run,
            self.started.elapsed(),
            Vec::new(),
            haul_store::wrap::resent_requests(),
            self.kept_failures(),
        )
    }
}

fn rate(bytes: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        bytes as f64 / s
    } else {
        0.0
    }
}

/// The end-of-run summary (also printed as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Objects completed (and verified), or planned in a dry run.
    pub objects: u64,
    pub bytes: u64,
    /// Source objects listed (sync).
    pub listed: u64,
    /// Objects skipped: unchanged (sync) or not copyable (with a reason).
    pub skipped: u64,
    /// Of the skipped: listing entries that cannot be objects (dangling
    /// links, special files, names that are not UTF-8, folder markers).
    pub unlisted: u64,
    /// Objects copied whose source bytes could not be checked against
    /// anything the source declares (ETag not an MD5, no full-object
    /// checksum, no readable part layout).
    pub unverified: u64,
    /// Objects deleted (or that would be, in a dry run).
    pub deleted: u64,
    pub failed: u64,
    /// Objects copied server-side.
    pub server_side: u64,
    /// Shards of a sync (0 for other commands), and how many were already
    /// done by an earlier, interrupted run.
    pub shards: u64,
    pub shards_resumed: u64,
    pub dry_run: bool,
    pub elapsed_secs: f64,
    pub bytes_per_sec: f64,
    /// What could not be done for every object, said once each (e.g.
    /// "tags not copied: the source does not support object tagging").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// Requests sent again after a retryable failure (throttling, 5xx,
    /// resets, timeouts, damaged requests), in this process.
    pub retries: u64,
    #[serde(skip)]
    pub first_failures: Vec<Failure>,
}

impl Summary {
    /// A summary of `counters` (summed over any number of units), with
    /// what does not add up: the time the whole run took (the rate is
    /// computed from it), the notices, the requests resent, and the
    /// failures kept for printing.
    pub fn new(
        counters: Counters,
        dry_run: bool,
        elapsed: Duration,
        notices: Vec<String>,
        retries: u64,
        first_failures: Vec<Failure>,
    ) -> Summary {
        let Counters {
            objects,
            bytes,
            listed,
            skipped,
            unlisted,
            unverified,
            deleted,
            failed,
            server_side,
            shards,
            shards_resumed,
        } = counters;
        Summary {
            objects,
            bytes,
            listed,
            skipped,
            unlisted,
            unverified,
            deleted,
            failed,
            server_side,
            shards,
            shards_resumed,
            dry_run,
            elapsed_secs: elapsed.as_secs_f64(),
            bytes_per_sec: rate(bytes, elapsed),
            notices,
            retries,
            first_failures,
        }
    }

    /// The counters of the summary (everything in it that adds up).
    pub fn counters(&self) -> Counters {
        Counters {
            objects: self.objects,
            bytes: self.bytes,
            listed: self.listed,
            skipped: self.skipped,
            unlisted: self.unlisted,
            unverified: self.unverified,
            deleted: self.deleted,
            failed: self.failed,
            server_side: self.server_side,
            shards: self.shards,
            shards_resumed: self.shards_resumed,
        }
    }

    /// The documented exit code: 0 all done, 1 some objects failed.
    pub fn exit_code(&self) -> i32 {
        if self.failed > 0 {
            1
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `--json` summary: the counters, then what does not add up, in
    /// this order and under these names (scripts read them).
    #[test]
    fn summary_json_is_built_from_counters() -> Result<(), serde_json::Error> {
        let c = Counters {
            objects: 1,
            bytes: 200,
            listed: 3,
            skipped: 4,
            unlisted: 5,
            unverified: 6,
            deleted: 7,
            failed: 8,
            server_side: 9,
            shards: 10,
            shards_resumed: 11,
        };
        let failure = Failure {
            key: "k".into(),
            op: "get".into(),
            code: "NotFound".into(),
            message: "gone".into(),
        };
        let s = Summary::new(
            c,
            true,
            Duration::from_secs(2),
            vec!["a notice".into()],
            12,
            vec![failure],
        );
        assert_eq!(s.counters(), c);
        assert_eq!(
            serde_json::to_string(&s)?,
            concat!(
                r#"{"objects":1,"bytes":200,"listed":3,"skipped":4,"unlisted":5,"unverified":6,"deleted":7,"#,
                r#""failed":8,"server_side":9,"shards":10,"shards_resumed":11,"dry_run":true,"elapsed_secs":2.0,"#,
                r#""bytes_per_sec":100.0,"notices":["a notice"],"retries":12}"#
            )
        );
        // A report counts into the same numbers.
        let r = Report::keeping(1);
        r.absorb(&c, &[]);
        r.fail(
            Failure {
                key: "x".into(),
                op: "put".into(),
                code: "Error".into(),
                message: "boom".into(),
            },
            &NoObserver,
        );
        r.fail(s.first_failures[0].clone(), &NoObserver);
        assert_eq!(r.counters(), Counters { failed: 10, ..c });
        assert_eq!(r.kept_failures().len(), 1, "kept up to the limit, counted exactly");
        Ok(())
    }
}
