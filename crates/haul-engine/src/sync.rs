//! `sync`: every shard's march executed, each shard as a work unit
//! (`unit.rs`). Shards run in parallel (sharing the executor's object
//! slots); their copies go through the executor as they are found; deletes
//! are spooled to anonymous temp files (memory stays flat at any count),
//! summed, and run only after every copy of the job succeeded, and not at
//! all when there are more than `max_delete`.
//! A shard is reported done (to the journal) when all of its work is; a
//! run that completes closes its job, one that was interrupted keeps it
//! for the next run to resume.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use haul_store::{DynStore, Key, ListEntry, ObjectMeta, Op, StoreError};

use crate::filter::Filter;
use crate::job::Executor;
use crate::journal::{JobShards, Journal, JournalError};
use crate::march::{differs, march, Compare, MarchOptions, SyncAction};
use crate::plan::{CopyTask, PlanItem};
use crate::report::{Failure, Report, Summary};
use crate::shard::Shard;
use crate::unit::{DeleteCandidates, UnitJob, UnitResult, WorkUnit};
use crate::verify::same_content;

/// What a sync job does, the same for all its shards.
#[derive(Debug, Clone)]
pub struct SyncJob {
    /// The source prefix (shards are relative to it).
    pub src_base: Key,
    /// The destination prefix.
    pub dst_base: Key,
    pub compare: Compare,
    /// Delete destination objects the source does not have.
    pub delete: bool,
    /// Refuse to delete anything when more than this many deletes are due.
    pub max_delete: Option<u64>,
    /// Keys (relative to the prefixes) to consider, on both sides.
    pub filter: Filter,
    /// Shards marched at once.
    pub shards_in_flight: usize,
}

impl SyncJob {
    /// A job over two prefixes with defaults: ETag comparison, no delete.
    pub fn new(src_base: Key, dst_base: Key) -> Self {
        SyncJob {
            src_base,
            dst_base,
            compare: Compare::Etag,
            delete: false,
            max_delete: None,
            filter: Filter::default(),
            shards_in_flight: 4,
        }
    }

    fn listing(
        &self,
        store: &DynStore,
        base: &Key,
        shard: &Shard,
    ) -> BoxStream<'static, haul_store::Result<ListEntry>> {
        let (base, filter) = (base.clone(), self.filter.clone());
        let skip = self.filter.skip_keys(&base);
        shard
            .list_skipping(store, &base, skip)
            .try_filter(move |e| {
                let rel = e.key().strip_prefix(&base).unwrap_or(e.key().as_str());
                futures::future::ready(filter.matches(rel))
            })
            .boxed()
    }

    /// The destination key of a source object.
    pub(crate) fn dst_key(&self, s: &ObjectMeta) -> haul_store::Result<Key> {
        self.dst_base
            .join(s.key.strip_prefix(&self.src_base).unwrap_or(s.key.as_str()))
    }

    /// Copy or skip an object present on both sides, by the job's comparison
    /// (reading content for `checksum`).
    pub(crate) async fn judge(&self, src: &DynStore, s: ObjectMeta, dst: &DynStore, d: ObjectMeta) -> SyncAction {
        let verdict = if self.compare == Compare::Checksum && s.size == d.size {
            match same_content(src, &s, dst, &d).await {
                // Same content is a skip (Err in `differs` terms), a difference a copy.
                Ok(Ok(how)) => Err(format!("same {how}")),
                Ok(Err(why)) => Ok(why),
                Err(e) => return SyncAction::Error(e),
            }
        } else {
            differs(self.compare, &s, &d)
        };
        match verdict {
            Ok(reason) => match self.dst_key(&s) {
                Ok(dst_key) => SyncAction::Copy {
                    src: s,
                    dst: Some(d),
                    dst_key,
                    reason,
                },
                Err(e) => SyncAction::Error(e),
            },
            Err(reason) => SyncAction::Skip { src: s, dst: d, reason },
        }
    }

    /// The actions of one shard.
    pub fn march(&self, src: &DynStore, dst: &DynStore, shard: &Shard) -> BoxStream<'static, SyncAction> {
        let actions = march(
            self.listing(src, &self.src_base, shard),
            self.listing(dst, &self.dst_base, shard),
            MarchOptions {
                src_prefix: self.src_base.clone(),
                dst_prefix: self.dst_base.clone(),
                compare: self.compare,
                delete: self.delete,
                skip_folder_markers: !dst.capabilities().any_key,
            },
        );
        if self.compare != Compare::Checksum {
            return actions;
        }
        // Same-size pairs: compare content, several at once, in order.
        let (src, dst, job) = (src.clone(), dst.clone(), self.clone());
        actions
            .map(move |a| {
                let (src, dst, job) = (src.clone(), dst.clone(), job.clone());
                async move {
                    match a {
                        SyncAction::Skip { src: s, dst: d, .. } => job.judge(&src, s, &dst, d).await,
                        other => other,
                    }
                }
            })
            .buffered(8)
            .boxed()
    }
}

impl Executor {
    /// Syncs `shards` (index, shard) of `job` from `src` to `dst`; calls
    /// `done` with the index of every shard whose work is complete. Each
    /// shard runs as a work unit ([`Executor::run_unit`]); their results
    /// are summed here, and the deletes they found wait for the barrier
    /// ([`Executor::apply_deletes`]).
    pub async fn sync(
        &self,
        src: &DynStore,
        dst: &DynStore,
        job: &SyncJob,
        shards: Vec<(u32, Shard)>,
        done: &(dyn Fn(u32) + Send + Sync),
    ) -> Summary {
        let unit_job = UnitJob::Sync(job.clone());
        // Phase 1: copies, shard by shard, deletes only found.
        let mut results = stream::iter(shards)
            .map(|(index, shard)| {
                let unit_job = &unit_job;
                async move {
                    let r = self
                        .run_unit(src, dst, unit_job, &WorkUnit::Shard { index, shard })
                        .await;
                    let finished = self.report.shards_done.fetch_add(1, Ordering::Relaxed) + 1;
                    let total = self.report.shards_total.load(Ordering::Relaxed);
                    let resumed = self.report.shards_resumed.load(Ordering::Relaxed);
                    self.observer
                        .shard_finished(finished + resumed, total.max(finished + resumed));
                    // Without deletes a clean shard is complete now: record it
                    // at once, so a crash later does not redo it.
                    if r.is_clean() && !job.delete {
                        done(index);
                    }
                    (index, r)
                }
            })
            .buffer_unordered(job.shards_in_flight.max(1));
        let mut total = UnitResult::default();
        let mut clean = Vec::new();
        while let Some((index, r)) = results.next().await {
            self.absorb(&r);
            if r.is_clean() {
                clean.push(index);
            }
            // The failures are in the report already: only the counts, the
            // interruption and the candidates are needed for the barrier.
            let r = UnitResult {
                failures: Vec::new(),
                ..r
            };
            if let Err(e) = total.merge(r) {
                // Candidates lost: the barrier must refuse.
                let e = StoreError::io(Op::Delete, "", e);
                self.report.fail(Failure::from_error("", &e), self.observer.as_ref());
                total.counters.failed += 1;
            }
        }
        drop(results);
        if !job.delete {
            return self.finish();
        }
        // Phase 2: deletes, if every copy succeeded and there are not too many.
        if self.apply_deletes(dst, &total, job.max_delete).await == 0 {
            for index in clean {
                done(index);
            }
        }
        self.finish()
    }

    /// Runs the shards of `planned` that are not done yet, recording each
    /// in `journal` as it completes. A run that completes — whether or not
    /// objects failed — closes the job, so that the next run starts afresh
    /// from new listings and sees what is new in every shard; only a run
    /// that was interrupted (the cancel token; or the process dying, which
    /// never gets here) leaves it to be resumed.
    pub async fn sync_journaled(
        &self,
        src: &DynStore,
        dst: &DynStore,
        job: &SyncJob,
        journal: Option<&Journal>,
        planned: JobShards,
    ) -> Result<Summary, JournalError> {
        let total = planned.shards.len() as u64;
        let resumed = planned.done() as u64;
        self.report.shards_total.store(total, Ordering::Relaxed);
        self.report.shards_resumed.store(resumed, Ordering::Relaxed);
        let todo: Vec<(u32, Shard)> = planned
            .shards
            .into_iter()
            .filter(|s| !s.2)
            .map(|(i, s, _)| (i, s))
            .collect();
        let id = planned.id;
        let mark = |idx: u32| {
            if let Some(j) = journal {
                if let Err(e) = j.shard_done(&id, idx) {
                    tracing::warn!(error = %e, "could not record a finished shard");
                }
            }
        };
        let summary = self.sync(src, dst, job, todo, &mark).await;
        if let Some(j) = journal {
            if !self.cancel_token().is_cancelled() {
                j.finish(&id)?;
            }
        }
        Ok(summary)
    }

    /// Turns actions into a plan: copies pass, skips are counted (in
    /// `report`), deletes become candidates.
    pub(crate) fn plan_of(
        &self,
        report: Arc<Report>,
        actions: BoxStream<'static, SyncAction>,
        candidates: Arc<Mutex<DeleteCandidates>>,
    ) -> BoxStream<'static, PlanItem> {
        let observer = self.observer.clone();
        actions
            .filter_map(move |a| {
                if matches!(a, SyncAction::Copy { .. } | SyncAction::Skip { .. }) {
                    report.listed.fetch_add(1, Ordering::Relaxed);
                    observer.listed(1);
                }
                let item = match a {
                    SyncAction::Copy { src, dst_key, .. } => Some(PlanItem::Copy(CopyTask { src, dst_key })),
                    SyncAction::Skip { .. } => {
                        report.skipped.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    SyncAction::Delete { dst, .. } => {
                        let mut c = candidates.lock().unwrap_or_else(|e| e.into_inner());
                        match c.push(dst.key.as_str()) {
                            Ok(()) => None,
                            Err(e) => Some(PlanItem::Error(StoreError::io(Op::Delete, "", e))),
                        }
                    }
                    SyncAction::Unlisted(u) => Some(PlanItem::Unlisted(u)),
                    SyncAction::Error(e) => Some(PlanItem::Error(e)),
                };
                futures::future::ready(item)
            })
            .boxed()
    }
}
