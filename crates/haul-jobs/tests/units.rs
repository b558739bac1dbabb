//! A sync job cut into units, run in shuffled order by two runners with
//! the results travelling as JSON, then finished (barrier and deletes),
//! ends exactly as the same job run in one go — on local directories, the
//! embedded default, through the job layer (spec → stores → engine).

use std::path::Path;

use haul_engine::unit::{UnitResult, WorkUnit};
use haul_jobs::spec::{Loc, SyncSpec};
use haul_jobs::{finish_units, plan_units, run, run_unit, JobOutcome, JobSpec, RunContext};

type R = Result<(), Box<dyn std::error::Error>>;

use haul_testkit::{read_tree as tree, write_file as write};

/// A destination holding some of the source (same), some changed, some extra.
fn seed_destination(dst: &Path) -> std::io::Result<()> {
    write(dst, "a/same.txt", b"same")?;
    write(dst, "b/changed.txt", b"old")?;
    write(dst, "c/extra.txt", b"gone soon")?;
    write(dst, "d/only-here/x", b"gone too")
}

fn spec(src: &Path, dst: &Path) -> Result<JobSpec, Box<dyn std::error::Error>> {
    let mut s = SyncSpec::new(
        Loc::parse(&src.display().to_string())?,
        Loc::parse(&dst.display().to_string())?,
    );
    s.delete = true;
    s.no_journal = true;
    s.split_min_keys = 0;
    Ok(JobSpec::Sync(s))
}

fn summary(o: &JobOutcome) -> Result<haul_engine::report::Counters, Box<dyn std::error::Error>> {
    match o {
        JobOutcome::Moved { summary, .. } => Ok(summary.counters()),
        other => Err(format!("not a move: {other:?}").into()),
    }
}

#[tokio::test]
async fn a_sync_run_unit_by_unit_ends_as_a_one_shot_run() -> R {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    for f in ["a", "b", "c", "e", "f"] {
        for i in 0..4 {
            write(
                &src,
                &format!("{f}/{i}.bin"),
                format!("{f}{i}").repeat(i * 100 + 1).as_bytes(),
            )?;
        }
    }
    write(&src, "a/same.txt", b"same")?;
    write(&src, "b/changed.txt", b"new content")?;
    write(&src, "top.txt", b"at the root")?;
    let (one, many) = (dir.path().join("one"), dir.path().join("many"));
    seed_destination(&one)?;
    seed_destination(&many)?;

    let once = run(&spec(&src, &one)?, &RunContext::silent()).await?;
    assert_eq!(once.exit_code(), 0);

    let job = spec(&src, &many)?;
    let mut units = plan_units(&job).await?;
    assert!(units.len() >= 3, "split on the source's folders: {units:?}");
    // Shuffled deterministically, and sent as JSON as a coordinator would.
    units.reverse();
    units.rotate_left(1);
    let (ctx_a, ctx_b) = (RunContext::silent(), RunContext::silent());
    let mut results = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        let unit: WorkUnit = serde_json::from_str(&serde_json::to_string(unit)?)?;
        let ctx = if i % 2 == 0 { &ctx_a } else { &ctx_b };
        let r = run_unit(&job, &unit, ctx).await?;
        let r: UnitResult = serde_json::from_str(&serde_json::to_string(&r)?)?;
        results.push(r);
    }
    // Nothing was deleted before the barrier.
    assert!(many.join("c/extra.txt").exists());
    let finished = finish_units(&job, results, &RunContext::silent()).await?;
    assert_eq!(finished.exit_code(), 0);

    assert_eq!(tree(&one)?, tree(&many)?);
    assert_eq!(tree(&one)?, tree(&src)?, "the one-shot run made DST like SRC");
    let (a, b) = (summary(&once)?, summary(&finished)?);
    assert_eq!(
        (a.objects, a.bytes, a.deleted, a.failed),
        (b.objects, b.bytes, b.deleted, b.failed)
    );
    assert_eq!(a.deleted, 2);
    assert_eq!(a.skipped, b.skipped);
    Ok(())
}

#[tokio::test]
async fn a_failed_unit_holds_back_every_delete() -> R {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    write(&src, "a/1.txt", b"one")?;
    write(&src, "b/2.txt", b"two")?;
    let dst = dir.path().join("dst");
    seed_destination(&dst)?;
    let job = spec(&src, &dst)?;
    let units = plan_units(&job).await?;
    let mut results = Vec::new();
    for u in &units {
        results.push(run_unit(&job, u, &RunContext::silent()).await?);
    }
    // A unit that failed elsewhere (a worker that could not copy).
    let mut failed = UnitResult::default();
    failed.counters.failed = 1;
    results.push(failed);
    let out = finish_units(&job, results, &RunContext::silent()).await?;
    assert_eq!(out.exit_code(), 1);
    assert!(dst.join("c/extra.txt").exists(), "deleted despite a failed unit");
    assert!(dst.join("d/only-here/x").exists());
    let JobOutcome::Moved { summary, .. } = out else {
        return Err("not a move".into());
    };
    assert!(
        summary.first_failures.iter().any(|f| f.code == "DeleteRefused"),
        "{:?}",
        summary.first_failures
    );
    Ok(())
}
