//! A job cut into work units, run unit by unit — here or in other
//! processes — and finished by whoever holds all the results.
//!
//! ```text
//! plan_units(spec)            -> [WorkUnit]          (the coordinator)
//! run_unit(spec, unit, ctx)   -> UnitResult          (any worker, any order)
//! finish_units(spec, results) -> JobOutcome          (the coordinator: the
//!                                                     delete barrier, --max-delete)
//! ```
//!
//! Units and results are serde data; a unit never deletes. `finish_units`
//! sums the results and deletes the candidates only when no unit failed
//! or was interrupted, and not above `max_delete` — the same barrier the
//! one-shot `run` applies, because `run` goes through the same engine path.

use haul_engine::plan::CopyJob;
use haul_engine::unit::{UnitJob, UnitResult, WorkUnit};

use crate::context::{JobOutcome, RunContext};
use crate::error::{invalid, JobError, Result};
use crate::run::{executor, job_options, transfer_options};
use crate::spec::{CpSpec, JobSpec, SyncSpec};

/// The units of a job: for a sync, its shards (the part file's, one, or
/// split on the source's folders); for a recursive cp, the same split of
/// its source. Other jobs are not cut into units.
pub async fn plan_units(spec: &JobSpec) -> Result<Vec<WorkUnit>> {
    spec.validate().map_err(JobError::Invalid)?;
    let shards = match spec {
        JobSpec::Sync(s) => {
            refuse_listed(s)?;
            let p = crate::run::sync::prepare(s).await?;
            crate::run::sync::plan_shards(s, &p).await?
        }
        JobSpec::Cp(s) => {
            let (source, _, job) = open_copy(s).await?;
            haul_engine::shard::auto_split(&source.store, &job.src_base, 16, 3, 0)
                .await
                .map_err(|e| JobError::store_in("cannot split the source into shards", e))?
        }
        other => return invalid(format!("a {} job is not cut into work units", other.kind())),
    };
    Ok(shards
        .into_iter()
        .enumerate()
        .map(|(i, shard)| WorkUnit::Shard { index: i as u32, shard })
        .collect())
}

/// Runs one unit of a job: copies, and for a sync finds what to delete
/// (never deleting). Events go to `ctx.reporter` as they happen.
pub async fn run_unit(spec: &JobSpec, unit: &WorkUnit, ctx: &RunContext) -> Result<UnitResult> {
    spec.validate().map_err(JobError::Invalid)?;
    match spec {
        JobSpec::Sync(s) => {
            refuse_listed(s)?;
            let p = crate::run::sync::prepare(s).await?;
            let exec = executor(
                transfer_options(&s.transfer, &s.object, &s.write),
                job_options(s.transfer.concurrency, s.dry_run),
                ctx,
                &p.source.store,
                &p.dest.store,
            );
            Ok(exec
                .run_unit(&p.source.store, &p.dest.store, &UnitJob::Sync(p.job), unit)
                .await)
        }
        JobSpec::Cp(s) => {
            let (source, dest, job) = open_copy(s).await?;
            let exec = executor(
                transfer_options(&s.transfer, &s.object, &s.write),
                job_options(s.transfer.concurrency, s.dry_run),
                ctx,
                &source.store,
                &dest.store,
            );
            Ok(exec
                .run_unit(&source.store, &dest.store, &UnitJob::Copy(job), unit)
                .await)
        }
        other => invalid(format!("a {} job is not cut into work units", other.kind())),
    }
}

/// Ends a job run as units: sums the results and, for a sync with
/// `delete`, passes the barrier and deletes; returns the summary of the
/// whole job, as a one-shot run would.
pub async fn finish_units(spec: &JobSpec, results: Vec<UnitResult>, ctx: &RunContext) -> Result<JobOutcome> {
    let mut total = UnitResult::default();
    let mut spool_failed = None;
    for r in results {
        if let Err(e) = total.merge(r) {
            spool_failed = Some(e);
        }
    }
    let (verb, strict, dry_run) = match spec {
        JobSpec::Sync(s) => (
            if s.dry_run { "Would sync" } else { "Synced" },
            s.write.strict,
            s.dry_run,
        ),
        JobSpec::Cp(s) => (
            if s.dry_run { "Would copy" } else { "Copied" },
            s.write.strict,
            s.dry_run,
        ),
        other => return invalid(format!("a {} job is not cut into work units", other.kind())),
    };
    if let Some(e) = spool_failed {
        // Candidates could not be collected: no delete may follow.
        total.counters.failed += 1;
        tracing::error!(error = %e, "cannot collect the delete candidates");
    }
    let summary = match spec {
        JobSpec::Sync(s) if s.delete => {
            let p = crate::run::sync::prepare(s).await?;
            let exec = executor(
                Default::default(),
                job_options(s.transfer.concurrency, dry_run),
                ctx,
                &p.source.store,
                &p.dest.store,
            );
            exec.absorb(&total);
            exec.apply_deletes(&p.dest.store, &total, s.max_delete).await;
            exec.finish()
        }
        _ => {
            let report = haul_engine::Report::default();
            report.absorb(&total.counters, &total.failures);
            report.summary(dry_run)
        }
    };
    Ok(JobOutcome::Moved { verb, summary, strict })
}

fn refuse_listed(s: &SyncSpec) -> Result<()> {
    if s.files_from.is_some() || s.inventory.is_some() {
        return invalid("a sync from --files-from or --inventory is not cut into shard units");
    }
    Ok(())
}

/// Both sides of a recursive cp, and the engine's copy job.
async fn open_copy(s: &CpSpec) -> Result<(crate::Opened, crate::run::cp::Dest, CopyJob)> {
    if !s.recursive {
        return invalid("only a recursive cp is cut into work units");
    }
    let mut c = crate::Connector::default();
    let source = c.open_existing(s.src.location(), &s.src_conn).await?;
    let dest = crate::run::cp::open_dest_tree(s.dst.location(), &s.dst_conn, &mut c).await?;
    let job = CopyJob {
        src_base: source.key.as_dir(),
        dst_base: dest.key.as_dir(),
        filter: s.filter.build()?,
        dst_is_local: !dest.store.capabilities().any_key,
    };
    Ok((source, dest, job))
}
