//! The coordinator of a distributed job: plans the units (the same
//! [`plan_units`] as a local run), records the job and publishes its units,
//! then reads the results — one accepted per unit, later deliveries of the
//! same unit dropped — until every unit has one, and finishes the job with
//! [`finish_units`] (the sync delete barrier included). A restarted
//! coordinator finds its job in the KV store and reads the results again
//! from the first instead of planning anew.
//!
//! A unit that ended without a result (given up after `max_deliver`
//! deliveries: every worker that took it died or timed out) is a failure
//! of the job, named in the report; so is a unit a worker could not run.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use haul_engine::report::Failure;
use haul_engine::unit::{UnitResult, WorkUnit};
use haul_jobs::{finish_units, plan_units, JobOutcome, JobSpec, RunContext};

use crate::error::{FleetError, Result};
use crate::queue::{set_phase, Queue};
use crate::record::{check_job_id, job_id_of, JobRecord, Phase, UnitMsg, UnitOutcome};

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// The job's id (default: a hash of its spec).
    pub job_id: Option<String>,
    /// Stop at the first unit that fails (phase ERROR_REPORT).
    pub failfast: bool,
    /// How often to look for units that ended without a result.
    pub check_every: Duration,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            job_id: None,
            failfast: false,
            check_every: Duration::from_secs(2),
        }
    }
}

/// What the coordinator saw of the fleet, besides the job's own summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetStats {
    pub job: String,
    pub units: u64,
    /// Results of units delivered more than once (a worker died or timed out).
    pub redelivered: u64,
    /// Results dropped because the unit already had one.
    pub duplicates: u64,
    /// Units that ended without a result.
    pub lost: u64,
    /// The coordinator picked up a job already under way.
    pub resumed: bool,
}

/// Runs `spec` on the workers of `q`; see the module documentation.
pub async fn coordinate(
    q: &dyn Queue,
    spec: &JobSpec,
    opts: &CoordinatorOptions,
    ctx: &RunContext,
) -> Result<(JobOutcome, FleetStats)> {
    let id = match &opts.job_id {
        Some(id) => id.clone(),
        None => job_id_of(spec)?,
    };
    check_job_id(&id)?;
    let mut stats = FleetStats {
        job: id.clone(),
        ..Default::default()
    };
    stats.units = match q.job(&id).await? {
        Some((job, _)) if job.phase.is_final() => {
            return Err(FleetError::job(
                &id,
                format!("already {:?}: purge it or choose another --job-id", job.phase),
            ))
        }
        Some((job, _)) => {
            if serde_json::to_value(&job.spec).ok() != serde_json::to_value(spec).ok() {
                return Err(FleetError::job(
                    &id,
                    "exists with another spec: choose another --job-id",
                ));
            }
            stats.resumed = true;
            if job.phase == Phase::Initialized {
                // Died while publishing: publish again (duplicates are dropped).
                publish(q, &id, plan_units(spec).await?).await?;
                set_phase(q, &id, Phase::Write).await?;
            }
            ctx.reporter.notice(&format!(
                "resuming job {id}: {} units, reading their results",
                job.units
            ));
            job.units
        }
        None => {
            let units = plan_units(spec).await?;
            let record = JobRecord {
                id: id.clone(),
                spec: spec.clone(),
                units: units.len() as u64,
                phase: Phase::Initialized,
            };
            if q.create_job(&record).await?.is_none() {
                return Err(FleetError::job(&id, "created by another coordinator at the same time"));
            }
            publish(q, &id, units).await?;
            set_phase(q, &id, Phase::Write).await?;
            ctx.reporter
                .notice(&format!("job {id}: {} units published to {}", record.units, q.url()));
            record.units
        }
    };
    let results = collect(q, &id, stats.units, opts, ctx, &mut stats).await?;
    let Some(results) = results else {
        set_phase(q, &id, Phase::Cancelled).await?;
        return Err(FleetError::job(&id, "cancelled"));
    };
    let failed = results.iter().any(|r| !r.is_clean());
    if failed {
        set_phase(q, &id, Phase::ErrorReport).await?;
    }
    let outcome = finish_units(spec, results, ctx).await?;
    set_phase(q, &id, Phase::Done).await?;
    Ok((outcome, stats))
}

/// The id of the `i`-th unit (sorts in plan order).
fn unit_id(i: usize) -> String {
    format!("u{i:07}")
}

async fn publish(q: &dyn Queue, id: &str, units: Vec<WorkUnit>) -> Result<()> {
    for (i, unit) in units.into_iter().enumerate() {
        q.publish_unit(&UnitMsg {
            job: id.to_string(),
            id: unit_id(i),
            unit,
        })
        .await?;
    }
    Ok(())
}

/// Reads results until every unit has one (or ended without one); `None`
/// when the run was cancelled (Ctrl-C, or the job's phase set to
/// CANCELLED by `haul job cancel`).
async fn collect(
    q: &dyn Queue,
    id: &str,
    units: u64,
    opts: &CoordinatorOptions,
    ctx: &RunContext,
    stats: &mut FleetStats,
) -> Result<Option<Vec<UnitResult>>> {
    let mut got: BTreeMap<String, UnitResult> = BTreeMap::new();
    let mut stream = q.results(id).await?;
    let mut tick = tokio::time::interval(opts.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_checks = 0;
    while (got.len() as u64) < units {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(None),
            r = stream.next() => {
                let msg = match r {
                    Some(r) => r?,
                    None => return Err(FleetError::queue(q.url(), "the results stream ended")),
                };
                if got.contains_key(&msg.unit) {
                    stats.duplicates += 1;
                    continue;
                }
                if msg.delivery > 1 {
                    stats.redelivered += 1;
                }
                let result = match msg.outcome {
                    UnitOutcome::Done { result } => result,
                    UnitOutcome::Failed { error } => failed_unit(&msg.unit, "run", &error),
                };
                let clean = result.is_clean();
                got.insert(msg.unit, result);
                ctx.reporter.shard_finished(got.len() as u64, units);
                if !clean && opts.failfast {
                    tracing::warn!(job = id, "a unit failed: stopping (--failfast)");
                    set_phase(q, id, Phase::ErrorReport).await?;
                    break;
                }
                idle_checks = 0;
            }
            _ = tick.tick() => {
                if let Some((job, _)) = q.job(id).await? {
                    if job.phase == Phase::Cancelled {
                        return Ok(None);
                    }
                }
                // Nothing left to deliver and still results missing, twice
                // in a row (a result published just before its ack may
                // still be on its way): those units were given up.
                if q.pending(id).await? == 0 {
                    idle_checks += 1;
                    if idle_checks >= 2 {
                        for i in 0..units as usize {
                            if let std::collections::btree_map::Entry::Vacant(slot) = got.entry(unit_id(i)) {
                                stats.lost += 1;
                                let why = "no worker finished it: given up after its last delivery";
                                let r = failed_unit(slot.key(), "deliver", why);
                                slot.insert(r);
                            }
                        }
                    }
                } else {
                    idle_checks = 0;
                }
            }
        }
    }
    Ok(Some(got.into_values().collect()))
}

/// The result of a unit that did not run: one failure naming it.
fn failed_unit(unit: &str, op: &str, reason: &str) -> UnitResult {
    let mut r = UnitResult::default();
    r.counters.failed = 1;
    r.failures.push(Failure {
        key: format!("unit {unit}"),
        op: op.to_string(),
        code: "UnitFailed".to_string(),
        message: reason.to_string(),
    });
    r
}
