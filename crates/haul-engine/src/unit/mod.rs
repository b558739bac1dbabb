//! Work units: a cp or sync job cut into serializable pieces, each run on
//! its own by [`Executor::run_unit`] — in this process (`Executor::sync`
//! runs every shard as a unit) or, later, in another one — and returning a
//! [`UnitResult`] of plain data: [`Counters`] that add up, the unit's
//! failures, and the destination keys a sync would delete.
//!
//! A unit never deletes. Whoever ran the units (the CLI today, a
//! coordinator of remote workers tomorrow) sums their results and owns the
//! barrier: [`Executor::apply_deletes`] deletes the summed candidates only
//! if no unit failed or was interrupted, and not at all above
//! `--max-delete`.

mod candidates;

use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream, StreamExt};
use haul_store::{DynStore, ErrorKind, Key, ObjectMeta, Op, SkipReason, StoreError, Unlisted};
use serde::{Deserialize, Serialize};

pub use candidates::{CandidateKeys, DeleteCandidates};

use crate::job::Executor;
use crate::march::SyncAction;
use crate::plan::{CopyJob, PlanItem};
use crate::report::{Counters, Failure, Report};
use crate::shard::Shard;
use crate::sync::SyncJob;

/// How many failures a [`UnitResult`] keeps (its `counters.failed` stays
/// exact; every failure is also streamed to the observer as it happens).
pub const KEPT_UNIT_FAILURES: usize = 10_000;

/// Source objects of an objects unit looked up at once.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// One object of an objects unit, as the planner saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitObject {
    /// Relative to the job's source prefix.
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// A piece of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkUnit {
    /// The keys of one shard (numbered as in the job's journal): a sync
    /// marches it on both sides (and finds what to delete), a copy lists
    /// it.
    Shard { index: u32, shard: Shard },
    /// Listed objects, looked up one by one (HEAD) on the source — and for
    /// a sync on the destination, compared as the march would. An object
    /// no longer in the source is a failure. One whose size or ETag changed
    /// since it was listed is copied as it is now: the copy is verified
    /// against what the HEAD says, as it would be for a listing made now
    /// (the change is logged). The job's filter applies, as to a listing.
    /// An objects unit finds nothing to delete (that takes a listing of the
    /// destination: a shard).
    Objects { objects: Vec<UnitObject> },
}

/// What a unit belongs to: a recursive copy or a sync.
#[derive(Debug, Clone)]
pub enum UnitJob {
    Copy(CopyJob),
    Sync(SyncJob),
}

/// What one unit did: plain data, serializable, and additive
/// ([`UnitResult::merge`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UnitResult {
    pub counters: Counters,
    /// The unit's failures, up to [`KEPT_UNIT_FAILURES`] (all of them
    /// counted in `counters.failed`).
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// The run was cancelled before the unit was done: its counters are
    /// partial, the unit is not done, and no delete may follow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// Destination keys a sync would delete (a JSON sequence of keys).
    #[serde(default)]
    pub delete_candidates: DeleteCandidates,
}

impl UnitResult {
    /// Whether the unit did all of its work without a failure.
    pub fn is_clean(&self) -> bool {
        self.counters.failed == 0 && !self.interrupted
    }

    /// Adds another unit's result: counters summed, failures kept (up to
    /// [`KEPT_UNIT_FAILURES`]), delete candidates appended. An error (the
    /// candidates could not be spooled) leaves the candidates incomplete:
    /// the caller must not delete then (`apply_deletes` refuses when
    /// `counters.failed` is not 0 — count it as a failure).
    pub fn merge(&mut self, other: UnitResult) -> std::io::Result<()> {
        let UnitResult {
            counters,
            failures,
            interrupted,
            delete_candidates,
        } = other;
        self.counters += counters;
        self.interrupted |= interrupted;
        let room = KEPT_UNIT_FAILURES.saturating_sub(self.failures.len());
        self.failures.extend(failures.into_iter().take(room));
        self.delete_candidates.append(delete_candidates)
    }
}

/// The error of an object of an objects unit that is gone from the source.
fn vanished(e: StoreError) -> StoreError {
    StoreError {
        message: format!("in the work unit, but no longer in the source ({})", e.message),
        ..e
    }
}

fn folder_marker(key: Key) -> Unlisted {
    Unlisted {
        key,
        reason: SkipReason::FolderMarker,
        detail: "a folder marker (a key ending in '/'): folders are implied in a local directory".into(),
    }
}

/// The source object of one listed object, as it is now.
async fn look_up(src: &DynStore, base: &Key, o: &UnitObject) -> Result<ObjectMeta, StoreError> {
    let key = base.join(&o.key)?;
    let now = src
        .head(&key)
        .await
        .map_err(|e| if e.is_not_found() { vanished(e) } else { e })?;
    if now.size != o.size || (o.etag.is_some() && now.etag != o.etag) {
        tracing::info!(
            key = %key,
            planned_size = o.size,
            size = now.size,
            planned_etag = ?o.etag,
            etag = ?now.etag,
            "changed since the unit was planned: copying it as it is now"
        );
    }
    Ok(now)
}

impl Executor {
    /// Runs one unit of `job` from `src` to `dst`. Copies go through this
    /// executor (its dry-run guard, its object slots, its observer, which
    /// sees every event as it happens); the counting is the unit's own, in
    /// the result. Deletes are only found, never done: they are the
    /// result's `delete_candidates`, for [`Executor::apply_deletes`].
    pub async fn run_unit(&self, src: &DynStore, dst: &DynStore, job: &UnitJob, unit: &WorkUnit) -> UnitResult {
        let report = Arc::new(Report::keeping(KEPT_UNIT_FAILURES));
        let candidates = Arc::new(Mutex::new(DeleteCandidates::new()));
        let plan = match (job, unit) {
            (UnitJob::Sync(job), WorkUnit::Shard { shard, .. }) => {
                self.plan_of(report.clone(), job.march(src, dst, shard), candidates.clone())
            }
            (UnitJob::Sync(job), WorkUnit::Objects { objects }) => {
                let actions = sync_lookups(src, dst, job, objects.clone());
                self.plan_of(report.clone(), actions, candidates.clone())
            }
            (UnitJob::Copy(job), WorkUnit::Shard { shard, .. }) => job.planner(src).shard_tasks(shard),
            (UnitJob::Copy(job), WorkUnit::Objects { objects }) => copy_lookups(src, job, objects.clone()),
        };
        self.run_plan_into(&report, src, dst, plan).await;
        let delete_candidates = std::mem::take(&mut *candidates.lock().unwrap_or_else(|e| e.into_inner()));
        UnitResult {
            counters: report.counters(),
            failures: report.kept_failures(),
            interrupted: self.cancel_token().is_cancelled(),
            delete_candidates,
        }
    }

    /// Adds a unit's result (run here or elsewhere) to this executor's
    /// report, so that [`Executor::finish`] summarizes it. Its failures are
    /// not told to the observer again.
    pub fn absorb(&self, r: &UnitResult) {
        self.report.absorb(&r.counters, &r.failures);
    }

    /// The barrier, then the deletes: `total` is the sum of the results of
    /// every unit of the job ([`UnitResult::merge`]). Nothing is deleted —
    /// one `DeleteRefused` failure says why — when any unit had a failure
    /// (deleting on an incomplete copy could lose data), when a unit was
    /// interrupted, or when there are more candidates than `max_delete`.
    /// Otherwise the candidates are deleted in batches (through the
    /// dry-run guard), counted in this executor's report. Returns the
    /// number of failures (a refusal counts as one; so does a run
    /// cancelled here, which reports itself in [`Executor::finish`]).
    pub async fn apply_deletes(&self, dst: &DynStore, total: &UnitResult, max_delete: Option<u64>) -> u64 {
        let candidates = &total.delete_candidates;
        let n = candidates.len();
        if n == 0 {
            return 0;
        }
        let failed = total.counters.failed;
        let refuse = if failed > 0 {
            Some(format!(
                "{n} extraneous objects not deleted: {failed} objects failed, and deleting on an incomplete copy could lose data"
            ))
        } else if let Some(max) = max_delete.filter(|max| n > *max) {
            Some(format!(
                "{n} objects would be deleted, more than --max-delete {max}: nothing was deleted"
            ))
        } else if total.interrupted {
            if self.cancel_token().is_cancelled() {
                // This run was stopped: `finish` says so.
                return 1;
            }
            Some(format!(
                "{n} extraneous objects not deleted: a work unit was interrupted before all its objects were handled"
            ))
        } else {
            None
        };
        if let Some(msg) = refuse {
            let e = StoreError::new(Op::Delete, "", ErrorKind::PreconditionFailed, msg).with_code("DeleteRefused");
            self.report.fail(Failure::from_error("", &e), self.observer.as_ref());
            return 1;
        }
        let keys: BoxStream<'static, Result<Key, StoreError>> = match candidates.keys() {
            Ok(keys) => stream::iter(keys.map(|k| {
                let k = k.map_err(|e| StoreError::io(Op::Delete, "", e))?;
                Key::object(k)
            }))
            .boxed(),
            Err(e) => stream::iter(vec![Err(StoreError::io(Op::Delete, "", e))]).boxed(),
        };
        self.run_deletes(dst, keys).await
    }
}

/// The sync actions of listed objects: each looked up on both sides and
/// judged as the march would.
fn sync_lookups(
    src: &DynStore,
    dst: &DynStore,
    job: &SyncJob,
    objects: Vec<UnitObject>,
) -> BoxStream<'static, SyncAction> {
    let (src, dst, job) = (src.clone(), dst.clone(), job.clone());
    let folder_markers = !dst.capabilities().any_key;
    stream::iter(objects)
        .map(move |o| {
            let (src, dst, job) = (src.clone(), dst.clone(), job.clone());
            async move {
                let s = match look_up(&src, &job.src_base, &o).await {
                    Ok(s) => s,
                    Err(e) => return Some(SyncAction::Error(e)),
                };
                if folder_markers && s.key.is_dir_marker() {
                    let rel = s.key.strip_prefix(&job.src_base).unwrap_or(s.key.as_str());
                    return job
                        .filter
                        .matches(rel)
                        .then(|| SyncAction::Unlisted(folder_marker(s.key)));
                }
                crate::source::decide(&src, &dst, &job, Ok(s)).await
            }
        })
        .buffered(LOOKUPS_IN_FLIGHT)
        .filter_map(futures::future::ready)
        .boxed()
}

/// The plan of listed objects of a copy: each looked up on the source.
fn copy_lookups(src: &DynStore, job: &CopyJob, objects: Vec<UnitObject>) -> BoxStream<'static, PlanItem> {
    let planner = job.planner(src);
    stream::iter(objects)
        .map(move |o| {
            let planner = planner.clone();
            async move {
                match look_up(&planner.src, &planner.src_prefix, &o).await {
                    Ok(s) => planner.item(s),
                    Err(e) => Some(PlanItem::Error(e)),
                }
            }
        })
        .buffered(LOOKUPS_IN_FLIGHT)
        .filter_map(futures::future::ready)
        .boxed()
}
