//! Distributed runs on a real NATS server (JetStream): a coordinator and
//! workers sync local trees (the embedded default backend) through the
//! queue and end exactly as a one-shot run; a worker that dies holding a
//! unit loses nothing (the unit comes back after the ack wait); a unit no
//! worker ever finishes is reported, not waited for forever; the same job
//! started again by a new coordinator resumes from the queue.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use haul_fleet::{coordinate, work, CoordinatorOptions, NatsOptions, NatsQueue, Phase, Queue, WorkerOptions};
use haul_jobs::spec::{Loc, SyncSpec};
use haul_jobs::{run, JobOutcome, JobSpec, RunContext};
use tokio_util::sync::CancellationToken;

type R = Result<(), Box<dyn std::error::Error>>;

use haul_testkit::{read_tree as tree, write_file as write};

/// A source of `folders` folders of 10 files each, and a sync spec of it.
fn source(root: &Path, folders: usize) -> Result<JobSpec, Box<dyn std::error::Error>> {
    let src = root.join("src");
    for f in 0..folders {
        for i in 0..10 {
            write(
                &src,
                &format!("f{f:02}/{i}.bin"),
                format!("{f}-{i}").repeat(i * 40 + 1).as_bytes(),
            )?;
        }
    }
    let mut s = SyncSpec::new(
        Loc::parse(&src.display().to_string())?,
        Loc::parse(&root.join("dst").display().to_string())?,
    );
    s.no_journal = true;
    s.split_min_keys = 0;
    Ok(JobSpec::Sync(s))
}

fn counters(o: &JobOutcome) -> Result<haul_engine::report::Counters, Box<dyn std::error::Error>> {
    match o {
        JobOutcome::Moved { summary, .. } => Ok(summary.counters()),
        other => Err(format!("not a move: {other:?}").into()),
    }
}

async fn queue(url: &str, ack_wait: Duration, max_deliver: i64) -> Result<Arc<NatsQueue>, Box<dyn std::error::Error>> {
    let opts = NatsOptions {
        ack_wait,
        max_deliver,
        ..Default::default()
    };
    Ok(Arc::new(NatsQueue::connect(url, opts).await?))
}

fn worker_opts(name: &str) -> WorkerOptions {
    WorkerOptions {
        name: name.into(),
        slots: 2,
        poll: Duration::from_millis(200),
        heartbeat: Duration::from_millis(500),
        grace: Duration::from_secs(5),
        ..Default::default()
    }
}

fn coord_opts(id: &str) -> CoordinatorOptions {
    CoordinatorOptions {
        job_id: Some(id.into()),
        check_every: Duration::from_millis(300),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_on_two_workers_ends_as_a_one_shot_run() -> R {
    let nats = haul_testkit::nats();
    let dir = tempfile::tempdir()?;
    let spec = source(dir.path(), 12)?;
    let q = queue(&nats.url, Duration::from_secs(30), 5).await?;
    let stop = CancellationToken::new();
    let workers: Vec<_> = ["w1", "w2"]
        .into_iter()
        .map(|n| {
            let q: Arc<dyn Queue> = q.clone();
            tokio::spawn(work(q, worker_opts(n), stop.clone()))
        })
        .collect();
    let (outcome, stats) = coordinate(q.as_ref(), &spec, &coord_opts("two-workers"), &RunContext::silent()).await?;
    stop.cancel();
    let mut done = 0;
    for w in workers {
        done += w.await??.done;
    }
    assert_eq!(outcome.exit_code(), 0);
    let c = counters(&outcome)?;
    assert_eq!((c.objects, c.failed), (120, 0), "{c:?}");
    assert_eq!(tree(&dir.path().join("dst"))?, tree(&dir.path().join("src"))?);
    // Every unit ran once and has exactly one accepted result.
    assert_eq!(done, stats.units, "{stats:?}");
    assert!(stats.units >= 3, "split on the folders: {stats:?}");
    assert_eq!(
        (stats.duplicates, stats.lost, stats.redelivered),
        (0, 0, 0),
        "{stats:?}"
    );
    let (job, _) = q.job("two-workers").await?.ok_or("no job record")?;
    assert_eq!(job.phase, Phase::Done);
    // The same result as one process gives.
    let again = run(&spec, &RunContext::silent()).await?;
    assert_eq!(counters(&again)?.objects, 0, "nothing left to copy");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unit_held_by_a_dead_worker_comes_back_and_is_done_once() -> R {
    let nats = haul_testkit::nats();
    let dir = tempfile::tempdir()?;
    let spec = source(dir.path(), 6)?;
    let q = queue(&nats.url, Duration::from_secs(2), 5).await?;
    // The coordinator publishes; a worker takes one unit and dies with it
    // (never acknowledged, never kept alive).
    let coordinator = {
        let (q, spec) = (q.clone(), spec.clone());
        tokio::spawn(
            async move { coordinate(q.as_ref(), &spec, &coord_opts("dead-worker"), &RunContext::silent()).await },
        )
    };
    let mut held = Vec::new();
    for _ in 0..50 {
        held = q.pull("dead-worker", 1, Duration::from_millis(200)).await?;
        if !held.is_empty() {
            break;
        }
    }
    assert_eq!(held.len(), 1, "the dying worker got a unit");
    let lost_unit = held[0].unit().id.clone();
    drop(held);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(work(q.clone(), worker_opts("healthy"), stop.clone()));
    let (outcome, stats) = tokio::time::timeout(Duration::from_secs(120), coordinator).await???;
    stop.cancel();
    let w = worker.await??;
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(counters(&outcome)?.objects, 60);
    assert_eq!(tree(&dir.path().join("dst"))?, tree(&dir.path().join("src"))?);
    assert_eq!(stats.redelivered, 1, "unit {lost_unit} came back once: {stats:?}");
    assert_eq!((stats.duplicates, stats.lost), (0, 0), "{stats:?}");
    assert_eq!(w.done, stats.units);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unit_no_worker_finishes_is_reported_after_its_last_delivery() -> R {
    let nats = haul_testkit::nats();
    let dir = tempfile::tempdir()?;
    let spec = source(dir.path(), 3)?;
    let q = queue(&nats.url, Duration::from_secs(1), 2).await?;
    let coordinator = {
        let (q, spec) = (q.clone(), spec.clone());
        tokio::spawn(async move { coordinate(q.as_ref(), &spec, &coord_opts("poison"), &RunContext::silent()).await })
    };
    // Every delivery of the first unit dies; the others are held (kept
    // alive) meanwhile, then handed back to a healthy worker.
    let stop = CancellationToken::new();
    let (mut dropped, mut held) = (0, Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while dropped < 2 && tokio::time::Instant::now() < deadline {
        for d in q.pull("poison", 10, Duration::from_millis(200)).await? {
            if d.unit().id == "u0000000" {
                dropped += 1;
            } else {
                held.push(d);
            }
        }
        for d in &held {
            d.progress().await?;
        }
    }
    for d in &held {
        d.nak(Duration::ZERO).await?;
    }
    let worker = tokio::spawn(work(q.clone(), worker_opts("healthy"), stop.clone()));
    assert_eq!(dropped, 2, "the unit was delivered twice (max_deliver)");
    let (outcome, stats) = tokio::time::timeout(Duration::from_secs(60), coordinator).await???;
    stop.cancel();
    assert_eq!(worker.await??.done, 2, "the other units were done");
    assert_eq!(stats.lost, 1, "{stats:?}");
    assert_eq!(outcome.exit_code(), 1, "a unit was not done");
    let JobOutcome::Moved { summary, .. } = &outcome else {
        return Err("not a move".into());
    };
    let f = summary.first_failures.first().ok_or("no failure reported")?;
    assert_eq!((f.key.as_str(), f.op.as_str()), ("unit u0000000", "deliver"), "{f:?}");
    let (job, _) = q.job("poison").await?.ok_or("no job record")?;
    assert_eq!(job.phase, Phase::Done);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_coordinator_restarted_resumes_its_job_and_a_cancelled_one_is_over() -> R {
    let nats = haul_testkit::nats();
    let dir = tempfile::tempdir()?;
    let spec = source(dir.path(), 5)?;
    let q = queue(&nats.url, Duration::from_secs(30), 5).await?;
    // The first coordinator publishes its units and is killed (no phase
    // change: as with kill -9).
    let first = {
        let (q, spec) = (q.clone(), spec.clone());
        tokio::spawn(async move { coordinate(q.as_ref(), &spec, &coord_opts("restart"), &RunContext::silent()).await })
    };
    for _ in 0..200 {
        if q.job("restart").await?.is_some_and(|(j, _)| j.phase == Phase::Write) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    first.abort();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(work(q.clone(), worker_opts("w"), stop.clone()));
    // A new coordinator of the same job reads the results instead of planning again.
    let (outcome, stats) = coordinate(q.as_ref(), &spec, &coord_opts("restart"), &RunContext::silent()).await?;
    stop.cancel();
    let w = worker.await??;
    assert!(stats.resumed, "{stats:?}");
    assert_eq!(counters(&outcome)?.objects, 50);
    assert_eq!(w.done, stats.units, "no unit published twice: {stats:?}");
    assert_eq!(tree(&dir.path().join("dst"))?, tree(&dir.path().join("src"))?);

    // A coordinator stopped by the user cancels its job: workers leave it
    // alone and no coordinator takes it up again.
    let spec2 = source(&dir.path().join("two"), 3)?;
    let ctx = RunContext::silent();
    let cancel = ctx.cancel.clone();
    let h = {
        let (q, spec2) = (q.clone(), spec2.clone());
        tokio::spawn(async move { coordinate(q.as_ref(), &spec2, &coord_opts("cancelled"), &ctx).await })
    };
    for _ in 0..200 {
        if q.job("cancelled").await?.is_some_and(|(j, _)| j.phase == Phase::Write) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cancel.cancel();
    let err = h.await?.err().ok_or("the cancelled coordinator returned a result")?;
    assert!(err.to_string().contains("cancelled"), "{err}");
    let (job, _) = q.job("cancelled").await?.ok_or("no job record")?;
    assert_eq!(job.phase, Phase::Cancelled);
    let again = coordinate(q.as_ref(), &spec2, &coord_opts("cancelled"), &RunContext::silent()).await;
    assert!(again.is_err_and(|e| e.to_string().contains("Cancelled")));
    assert!(
        tree(&dir.path().join("two/dst"))?.is_empty(),
        "no worker ran the cancelled job"
    );
    Ok(())
}
