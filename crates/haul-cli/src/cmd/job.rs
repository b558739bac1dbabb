//! Runs any job — from flags or from a job file — and renders what it
//! did: the reporter's events as they happen, then the outcome's summary.

use std::sync::Arc;

use haul_jobs::{JobOutcome, JobSpec, RunContext};
use serde_json::json;

use crate::args::Global;
use crate::output::Output;

pub async fn run(g: &Global, spec: JobSpec) -> anyhow::Result<u8> {
    // A progress bar for jobs that move bytes; the report file (cp, sync,
    // rm, restore) is created now, so a bad path fails before any work.
    let out = match &spec {
        JobSpec::Cp(_) | JobSpec::Sync(_) => Output::for_job(g, true)?,
        JobSpec::Rm(_) | JobSpec::Restore(_) | JobSpec::Bundle(_) | JobSpec::Unbundle(_) => Output::for_job(g, false)?,
        JobSpec::Diff(_) | JobSpec::Verify(_) | JobSpec::Watch(_) => Output::new(g, false),
    };
    let out = Arc::new(out);
    let cancel = match spec {
        JobSpec::Watch(_) => super::watch::shutdown_signal(),
        _ => super::ctrl_c(),
    };
    let ctx = RunContext::new(out.clone(), cancel);
    let outcome = haul_jobs::run(&spec, &ctx).await?;
    render(g, &out, &outcome);
    Ok(outcome.exit_code())
}

pub(crate) fn render(g: &Global, out: &Output, outcome: &JobOutcome) {
    match outcome {
        // `cp s3://… -`: the bytes are the output.
        JobOutcome::Moved { verb: "Downloaded", .. } => {}
        JobOutcome::Moved { verb, summary, .. } => out.summary(verb, summary),
        JobOutcome::Planned(c) => {
            if g.json {
                out.line(
                    &json!({"event": "summary", "copy": c.copy, "delete": c.delete, "same": c.same, "errors": c.errors})
                        .to_string(),
                );
            } else if !g.quiet {
                eprintln!(
                    "{} to copy, {} to delete, {} the same, {} errors",
                    c.copy, c.delete, c.same, c.errors
                );
            }
        }
        JobOutcome::Verified(sum) => {
            if g.json {
                let mut v = serde_json::to_value(sum).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("event".into(), json!("summary"));
                }
                out.line(&v.to_string());
            } else if !g.quiet {
                eprintln!(
                    "{} same, {} missing, {} mismatched, {} errors; {} only in the destination",
                    sum.same, sum.missing, sum.mismatched, sum.errors, sum.extra
                );
            }
        }
        JobOutcome::Restored(n) => {
            if g.json {
                out.line(
                    &json!({"event": "summary", "requested": n.requested, "in_progress": n.in_progress,
                            "already_restored": n.already_restored, "not_archived": n.not_archived,
                            "failed": n.failed, "dry_run": n.dry_run})
                    .to_string(),
                );
            } else if !g.quiet {
                let verb = if n.dry_run { "would request" } else { "requested" };
                eprintln!(
                    "Restore {verb}: {}; in progress: {}; already restored: {}; not archived: {}; failed: {}",
                    n.requested, n.in_progress, n.already_restored, n.not_archived, n.failed
                );
            }
        }
        JobOutcome::Bundled { summary, dry_run } => super::members::render_bundled(g, out, summary, *dry_run),
        JobOutcome::Unbundled { report, dry_run } => super::members::render_unbundled(g, out, report, *dry_run),
        JobOutcome::Watched { summary, once } => {
            if g.json {
                println!("{}", json!({"event": "summary", "summary": summary}));
            } else if *once && !g.quiet {
                eprintln!(
                    "Uploaded {} file(s), {} ({} deleted); {} failed, {} pending, {} dead; \
                     {} symbolic link(s) skipped, {} skipped (key exists)",
                    summary.uploaded_files,
                    bytesize::ByteSize::b(summary.uploaded_bytes).display().si(),
                    summary.deleted_files,
                    summary.failed,
                    summary.pending,
                    summary.dead,
                    summary.skipped_symlinks,
                    summary.skipped_exists
                );
            }
        }
    }
}
