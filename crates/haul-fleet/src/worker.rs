//! A worker: pulls units of the active jobs (as many as it has free
//! slots), runs each with [`run_unit`] — the code path of a local run —
//! keeps its lease alive while it runs, publishes the unit's result and
//! waits for the queue to store it **before** acknowledging the unit.
//!
//! A unit that could not run (a store unreachable, credentials refused)
//! is sent back with a delay for another try, on this worker or another;
//! on its last delivery, or when the job itself is invalid, its error is
//! published as its result and it is ended. A unit interrupted by a
//! shutdown is sent back at once. Credentials come from the worker's own
//! environment: the job spec holds none.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use haul_jobs::context::Silent;
use haul_jobs::{run_unit, JobError, JobSpec, RunContext};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::queue::{Delivery, Queue};
use crate::record::{Phase, ResultMsg, UnitOutcome};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name in result records (default: host name and process id).
    pub name: String,
    /// Units run at once.
    pub slots: usize,
    /// Only these jobs (default: every active job).
    pub jobs: Option<Vec<String>>,
    /// How often to look for new jobs when idle.
    pub poll: Duration,
    /// How often a running unit's lease is renewed (well below the ack wait).
    pub heartbeat: Duration,
    /// After a shutdown is asked, how long running units may take to end.
    pub grace: Duration,
    /// Leave when no active job is left (tests, batch use).
    pub exit_when_idle: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            name: default_name(),
            slots: 2,
            jobs: None,
            poll: Duration::from_secs(1),
            heartbeat: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            exit_when_idle: false,
        }
    }
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Units run and acknowledged.
    pub done: u64,
    /// Units sent back (to retry, or interrupted by the shutdown).
    pub returned: u64,
    /// Units ended with an error as their result.
    pub failed: u64,
}

enum Ended {
    Done,
    Returned,
    Failed,
}

/// Runs units until `shutdown` is cancelled — or every job named in
/// `opts.jobs` is over, or with `exit_when_idle` no active job is left;
/// see the module documentation. A cancelled job's running units get
/// `opts.grace`, then stop (sent back, their uploads aborted).
pub async fn work(q: Arc<dyn Queue>, opts: WorkerOptions, shutdown: CancellationToken) -> Result<WorkerSummary> {
    let slots = Arc::new(Semaphore::new(opts.slots.max(1)));
    // Units stop when the grace period after a shutdown is over.
    let stop_units = CancellationToken::new();
    let mut tasks: JoinSet<Ended> = JoinSet::new();
    let mut summary = WorkerSummary::default();
    let mut specs: HashMap<String, Arc<JobSpec>> = HashMap::new();
    // Per job: cancelled (after the grace period) when the job is.
    let mut job_stops: HashMap<String, CancellationToken> = HashMap::new();
    while !shutdown.is_cancelled() {
        reap(&mut tasks, &mut summary);
        let all: Vec<_> = q
            .jobs()
            .await?
            .into_iter()
            .filter(|j| opts.jobs.as_ref().is_none_or(|only| only.contains(&j.id)))
            .collect();
        // A cancelled job's running units get the grace period, then stop.
        for j in all.iter().filter(|j| j.phase == Phase::Cancelled) {
            if let Some(stop) = job_stops.remove(&j.id) {
                tracing::info!(job = %j.id, "job cancelled: its running units stop within the grace period");
                let grace = opts.grace;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    stop.cancel();
                });
            }
        }
        // Named jobs all over: nothing more to do here.
        if let Some(only) = &opts.jobs {
            let over = only
                .iter()
                .all(|id| all.iter().find(|j| &j.id == id).is_some_and(|j| j.phase.is_final()));
            if over && tasks.is_empty() {
                break;
            }
        }
        let jobs: Vec<_> = all.into_iter().filter(|j| j.phase == Phase::Write).collect();
        specs.retain(|id, _| jobs.iter().any(|j| &j.id == id));
        if jobs.is_empty() {
            if opts.exit_when_idle && tasks.is_empty() {
                break;
            }
            idle(&shutdown, &mut tasks, &mut summary, opts.poll).await;
            continue;
        }
        let mut pulled = 0;
        for job in jobs {
            let free = slots.available_permits();
            if free == 0 || shutdown.is_cancelled() {
                break;
            }
            let spec = specs
                .entry(job.id.clone())
                .or_insert_with(|| Arc::new(job.spec.clone()))
                .clone();
            let wait = opts.poll.min(Duration::from_secs(1));
            for d in q.pull(&job.id, free, wait).await? {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                pulled += 1;
                let job_stop = job_stops
                    .entry(job.id.clone())
                    .or_insert_with(|| stop_units.child_token());
                let (q, spec, opts, stop) = (q.clone(), spec.clone(), opts.clone(), job_stop.child_token());
                tasks.spawn(async move {
                    let ended = run_one(q.as_ref(), &spec, Arc::from(d), &opts, stop).await;
                    drop(permit);
                    ended
                });
            }
        }
        if pulled == 0 {
            idle(&shutdown, &mut tasks, &mut summary, opts.poll).await;
        } else if slots.available_permits() == 0 {
            // Full: wait for a slot (or the shutdown).
            tokio::select! {
                _ = shutdown.cancelled() => {}
                Some(r) = tasks.join_next() => count(r, &mut summary),
            }
        }
    }
    // Shutdown: running units get the grace period, then are interrupted
    // (they abort their uploads and are sent back).
    let deadline = tokio::time::sleep(opts.grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(r) => count(r, &mut summary),
                None => break,
            },
            _ = &mut deadline, if !stop_units.is_cancelled() => stop_units.cancel(),
        }
    }
    Ok(summary)
}

async fn idle(shutdown: &CancellationToken, tasks: &mut JoinSet<Ended>, summary: &mut WorkerSummary, poll: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(poll) => {}
        Some(r) = tasks.join_next(), if !tasks.is_empty() => count(r, summary),
    }
}

fn reap(tasks: &mut JoinSet<Ended>, summary: &mut WorkerSummary) {
    while let Some(r) = tasks.try_join_next() {
        count(r, summary);
    }
}

fn count(r: std::result::Result<Ended, tokio::task::JoinError>, summary: &mut WorkerSummary) {
    match r {
        Ok(Ended::Done) => summary.done += 1,
        Ok(Ended::Returned) => summary.returned += 1,
        Ok(Ended::Failed) => summary.failed += 1,
        // A panicked unit task: its delivery was not acknowledged, so it
        // comes back after the ack wait.
        Err(e) => {
            tracing::error!(error = %e, "a unit task failed");
            summary.returned += 1;
        }
    }
}

/// Runs one delivered unit to its end (ack, nak or term).
async fn run_one(
    q: &dyn Queue,
    spec: &JobSpec,
    d: Arc<dyn Delivery>,
    opts: &WorkerOptions,
    stop: CancellationToken,
) -> Ended {
    let unit = d.unit().clone();
    let beat = {
        let (d, every) = (d.clone(), opts.heartbeat);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = d.progress().await {
                    tracing::warn!(error = %e, "cannot renew a unit's lease");
                }
            }
        })
    };
    let ctx = RunContext::new(Arc::new(Silent), stop);
    let run = run_unit(spec, &unit.unit, &ctx).await;
    beat.abort();
    let outcome = match run {
        Ok(result) if result.interrupted => {
            log_err(d.nak(Duration::ZERO).await, &unit.id, "nak");
            return Ended::Returned;
        }
        Ok(result) => UnitOutcome::Done { result },
        Err(e) if retryable(&e) && !d.is_last() => {
            tracing::warn!(job = %unit.job, unit = %unit.id, error = %e, "unit not run: sent back");
            let delay = Duration::from_secs(2u64.saturating_pow(d.delivered().min(6) as u32));
            log_err(d.nak(delay).await, &unit.id, "nak");
            return Ended::Returned;
        }
        Err(e) => UnitOutcome::Failed { error: e.to_string() },
    };
    let failed = matches!(outcome, UnitOutcome::Failed { .. });
    let record = ResultMsg {
        job: unit.job.clone(),
        unit: unit.id.clone(),
        worker: opts.name.clone(),
        delivery: d.delivered(),
        outcome,
    };
    // The result is stored before the unit is acknowledged: a worker
    // dying in between makes the unit run again, never lose its result.
    if let Err(e) = q.publish_result(&record).await {
        tracing::warn!(unit = %unit.id, error = %e, "cannot publish a unit's result: sent back");
        log_err(d.nak(Duration::from_secs(1)).await, &unit.id, "nak");
        return Ended::Returned;
    }
    if failed {
        log_err(d.term().await, &unit.id, "term");
        Ended::Failed
    } else {
        log_err(d.ack().await, &unit.id, "ack");
        Ended::Done
    }
}

/// A unit that failed to run may run on another try (a store that could
/// not be reached); an invalid job never will.
fn retryable(e: &JobError) -> bool {
    !matches!(e, JobError::Invalid(_))
}

fn log_err(r: Result<()>, unit: &str, what: &str) {
    if let Err(e) = r {
        tracing::warn!(unit, error = %e, "{what} not sent: the unit comes back after the ack wait");
    }
}
