//! Execution: runs a plan with a bounded number of objects in flight, one
//! object's failure never stopping the others, and one dry-run guard in
//! front of every write or delete.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};
use haul_store::{DynStore, ErrorKind, Key, StoreError};
use tokio_util::sync::CancellationToken;

use crate::plan::{CopyTask, PlanItem};
use crate::report::{Failure, Observer, Report, Summary};
use crate::transfer::{Strategy, Transfer};

/// Options of the executor.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Objects in flight.
    pub concurrency: usize,
    /// Print the plan; change nothing.
    pub dry_run: bool,
    /// Attempts per object for errors a fresh attempt can fix (integrity
    /// mismatches, transient errors that outlived the request retries).
    pub object_attempts: u32,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            concurrency: 64,
            dry_run: false,
            object_attempts: 3,
        }
    }
}

/// A destructive action, as the guard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Copy { src: &'a str, dst: &'a str, size: u64 },
    Delete { key: &'a str },
}

/// Receives actions a dry run would have taken.
pub trait PlanSink: Send + Sync {
    fn would(&self, action: Action<'_>);
}

/// Runs plans.
pub struct Executor {
    pub transfer: Transfer,
    pub opts: JobOptions,
    pub report: Arc<Report>,
    pub observer: Arc<dyn Observer>,
    pub plan_sink: Option<Arc<dyn PlanSink>>,
    /// Objects in flight across every plan this executor runs at once
    /// (parallel shards share it).
    slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Executor {
    pub fn new(transfer: Transfer, opts: JobOptions, observer: Arc<dyn Observer>) -> Self {
        let slots = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
        Executor {
            transfer,
            opts,
            report: Arc::new(Report::default()),
            observer,
            plan_sink: None,
            slots,
        }
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        self.transfer.cancel_token()
    }

    /// The one guard in front of every destructive step: false in a dry run
    /// (the action is handed to the plan sink instead).
    fn guard(&self, action: Action<'_>) -> bool {
        if self.opts.dry_run {
            if let Some(s) = &self.plan_sink {
                s.would(action);
            }
            return false;
        }
        true
    }

    /// Copies every task of the plan from `src` to `dst`.
    pub async fn copy(&self, src: &DynStore, dst: &DynStore, plan: BoxStream<'static, PlanItem>) -> Summary {
        self.run_plan(src, dst, plan).await;
        self.finish()
    }

    /// Runs a plan; returns how many of its items failed (a cancelled run
    /// counts as one failure: not everything was handled).
    pub async fn run_plan(&self, src: &DynStore, dst: &DynStore, plan: BoxStream<'static, PlanItem>) -> u64 {
        self.run_plan_into(&self.report, src, dst, plan).await
    }

    /// [`Executor::run_plan`], counting in `report` (a work unit's own)
    /// instead of the executor's; the observer sees every event as usual.
    pub(crate) async fn run_plan_into(
        &self,
        report: &Report,
        src: &DynStore,
        dst: &DynStore,
        plan: BoxStream<'static, PlanItem>,
    ) -> u64 {
        let cancel = self.cancel_token().clone();
        let failures = std::sync::atomic::AtomicU64::new(0);
        plan.take_until(cancel.cancelled_owned())
            .map(|item| async {
                let ok = match item {
                    PlanItem::Copy(t) => {
                        self.observer.planned(1, t.src.size);
                        self.copy_one(report, src, dst, t).await
                    }
                    PlanItem::Skip { key, reason } => {
                        report.skipped.fetch_add(1, Ordering::Relaxed);
                        self.observer.skipped(key.as_str(), &reason);
                        true
                    }
                    PlanItem::Unlisted(u) => {
                        report.unlisted(&u, self.observer.as_ref());
                        true
                    }
                    PlanItem::Error(e) => {
                        report.fail(Failure::from_error(&e.key, &e), self.observer.as_ref());
                        false
                    }
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            })
            .buffer_unordered(self.opts.concurrency.max(1))
            .for_each(|()| async {})
            .await;
        failures.load(Ordering::Relaxed) + u64::from(self.cancel_token().is_cancelled())
    }

    /// The summary of everything this executor's report holds (with an
    /// `Interrupted` failure when the run was cancelled). A coordinator
    /// that ran work units elsewhere [`Report::absorb`]s their results
    /// first.
    pub fn finish(&self) -> Summary {
        if self.cancel_token().is_cancelled() {
            let e = StoreError::new(
                haul_store::Op::Validate,
                "",
                ErrorKind::Other,
                "interrupted: the run stopped before every object was handled",
            )
            .with_code("Interrupted");
            self.report.fail(Failure::from_error("", &e), self.observer.as_ref());
        }
        let mut summary = self.report.summary(self.opts.dry_run);
        summary.notices = self.transfer.notices();
        summary
    }

    /// Copies one object; false if it failed (and was reported).
    async fn copy_one(&self, report: &Report, src: &DynStore, dst: &DynStore, t: CopyTask) -> bool {
        let action = Action::Copy {
            src: t.src.key.as_str(),
            dst: t.dst_key.as_str(),
            size: t.src.size,
        };
        if !self.guard(action) {
            report.ok(t.src.size);
            return true;
        }
        let _slot = self.slots.acquire().await;
        let mut attempt = 1;
        loop {
            match self
                .transfer
                .copy(src, &t.src, dst, &t.dst_key, self.observer.as_ref())
                .await
            {
                Ok(out) => {
                    if matches!(out.strategy, Strategy::ServerCopy | Strategy::ServerPartCopy { .. }) {
                        report.server_side.fetch_add(1, Ordering::Relaxed);
                    }
                    report.ok(out.bytes);
                    if out.unverified {
                        report.unverified.fetch_add(1, Ordering::Relaxed);
                        self.observer.unverified(t.src.key.as_str());
                    }
                    self.observer.done(t.src.key.as_str(), out.bytes);
                    return true;
                }
                Err(e) => {
                    let again = matches!(
                        e.kind,
                        ErrorKind::Integrity | ErrorKind::Transient | ErrorKind::Throttled
                    ) && attempt < self.opts.object_attempts
                        && !self.cancel_token().is_cancelled();
                    if again {
                        tracing::info!(key = %t.src.key, attempt, error = %e, "retrying the object");
                        attempt += 1;
                        continue;
                    }
                    report.fail(Failure::from_error(t.src.key.as_str(), &e), self.observer.as_ref());
                    return false;
                }
            }
        }
    }

    /// Deletes keys in batches of 1000.
    pub async fn delete(&self, store: &DynStore, keys: BoxStream<'static, Result<Key, StoreError>>) -> Summary {
        self.run_deletes(store, keys).await;
        self.finish()
    }

    /// Deletes keys in batches of 1000; returns how many failed.
    pub async fn run_deletes(&self, store: &DynStore, keys: BoxStream<'static, Result<Key, StoreError>>) -> u64 {
        let before = self.report.failed.load(Ordering::Relaxed);
        let cancel = self.cancel_token().clone();
        keys.take_until(cancel.cancelled_owned())
            .ready_chunks(1000)
            .map(|batch| async move {
                let mut ok = Vec::with_capacity(batch.len());
                for k in batch {
                    match k {
                        Ok(k) => ok.push(k),
                        Err(e) => self
                            .report
                            .fail(Failure::from_error(&e.key, &e), self.observer.as_ref()),
                    }
                }
                let ok: Vec<Key> = ok
                    .into_iter()
                    .filter(|k| {
                        self.guard(Action::Delete { key: k.as_str() }) || {
                            self.report.deleted.fetch_add(1, Ordering::Relaxed);
                            false
                        }
                    })
                    .collect();
                if ok.is_empty() {
                    return;
                }
                match store.delete_many(&ok).await {
                    Ok(failed) => {
                        let failed_keys: std::collections::HashSet<String> =
                            failed.iter().map(|e| e.key.clone()).collect();
                        for e in failed {
                            self.report
                                .fail(Failure::from_error(&e.key, &e), self.observer.as_ref());
                        }
                        for k in ok.iter().filter(|k| !failed_keys.contains(k.as_str())) {
                            self.report.deleted.fetch_add(1, Ordering::Relaxed);
                            self.observer.deleted(k.as_str());
                        }
                    }
                    Err(e) => {
                        for k in &ok {
                            self.report
                                .fail(Failure::from_error(k.as_str(), &e), self.observer.as_ref());
                        }
                    }
                }
            })
            .buffer_unordered(4)
            .for_each(|()| async {})
            .await;
        self.report.failed.load(Ordering::Relaxed).saturating_sub(before)
            + u64::from(self.cancel_token().is_cancelled())
    }
}
