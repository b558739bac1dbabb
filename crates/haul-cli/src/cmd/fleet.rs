//! Distributed runs from the command line: a job with `--queue` runs as
//! the coordinator (same progress, summary, report and exit code as a run
//! in one process), `haul worker` runs units, `haul job` shows and cancels
//! jobs on the queue.

use std::sync::Arc;

use haul_fleet::{coordinate, queue::set_phase, work, CoordinatorOptions, NatsOptions, NatsQueue, Phase, Queue};
use haul_jobs::{JobSpec, RunContext};
use serde_json::json;

use crate::args::Global;
use crate::fleet_args::{JobAction, QueueArgs, WorkerArgs};
use crate::output::Output;

async fn connect(url: &str) -> anyhow::Result<NatsQueue> {
    Ok(NatsQueue::connect(url, NatsOptions::default()).await?)
}

/// Runs `spec` as the coordinator of a distributed job.
pub async fn coordinate_job(g: &Global, spec: JobSpec, q: &QueueArgs, url: &str) -> anyhow::Result<u8> {
    let queue = connect(url).await?;
    let out = Arc::new(Output::for_job(g, true)?);
    let ctx = RunContext::new(out.clone(), super::ctrl_c());
    let opts = CoordinatorOptions {
        job_id: q.job_id.clone(),
        failfast: q.failfast,
        ..Default::default()
    };
    let (outcome, stats) = coordinate(&queue, &spec, &opts, &ctx).await?;
    if !g.quiet && !g.json {
        eprintln!(
            "job {}: {} units; {} redelivered, {} duplicate results dropped, {} given up{}",
            stats.job,
            stats.units,
            stats.redelivered,
            stats.duplicates,
            stats.lost,
            if stats.resumed { " (resumed)" } else { "" }
        );
    }
    super::job::render(g, &out, &outcome);
    Ok(outcome.exit_code())
}

/// `haul worker`: runs units until Ctrl-C (or, with --exit-when-idle, no job is left).
pub async fn worker(g: &Global, a: &WorkerArgs) -> anyhow::Result<u8> {
    let queue: Arc<dyn Queue> = Arc::new(connect(&a.queue).await?);
    let opts = haul_fleet::WorkerOptions {
        slots: a.slots.max(1),
        jobs: (!a.jobs.is_empty()).then(|| a.jobs.clone()),
        grace: a.grace,
        exit_when_idle: a.exit_when_idle,
        ..Default::default()
    };
    let name = opts.name.clone();
    if !g.quiet {
        eprintln!("haul worker {name}: {} slots on {}", opts.slots, a.queue);
    }
    let s = work(queue, opts, super::ctrl_c()).await?;
    if g.json {
        println!(
            "{}",
            json!({"event": "summary", "worker": name, "done": s.done, "returned": s.returned, "failed": s.failed})
        );
    } else if !g.quiet {
        eprintln!(
            "haul worker {name}: {} units done, {} sent back, {} failed",
            s.done, s.returned, s.failed
        );
    }
    Ok(0)
}

/// `haul job status|list|cancel`.
pub async fn job(g: &Global, action: &JobAction) -> anyhow::Result<u8> {
    match action {
        JobAction::List { queue } => {
            let q = connect(queue).await?;
            for j in q.jobs().await? {
                if g.json {
                    println!(
                        "{}",
                        json!({"job": j.id, "kind": j.spec.kind(), "phase": j.phase, "units": j.units})
                    );
                } else {
                    println!("{}\t{}\t{:?}\t{} units", j.id, j.spec.kind(), j.phase, j.units);
                }
            }
            Ok(0)
        }
        JobAction::Status { id, queue } => {
            let q = connect(queue).await?;
            let Some((j, _)) = q.job(id).await? else {
                anyhow::bail!("job {id}: not on {queue}");
            };
            let pending = if j.phase.is_final() { 0 } else { q.pending(id).await? };
            if g.json {
                println!(
                    "{}",
                    json!({"job": j.id, "kind": j.spec.kind(), "phase": j.phase, "units": j.units, "pending": pending})
                );
            } else {
                println!(
                    "job {}: {} {:?}; {} units, {pending} not done yet",
                    j.id,
                    j.spec.kind(),
                    j.phase,
                    j.units
                );
            }
            Ok(0)
        }
        JobAction::Cancel { id, queue } => {
            let q = connect(queue).await?;
            let phase = set_phase(&q, id, Phase::Cancelled).await?;
            if phase != Phase::Cancelled {
                anyhow::bail!("job {id}: already {phase:?}");
            }
            if !g.quiet {
                eprintln!("job {id}: cancelled");
            }
            Ok(0)
        }
    }
}
