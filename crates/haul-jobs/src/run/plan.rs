//! diff, and sync's dry run: two listings marched in lock step, every
//! action handed to the reporter as a [`PlanRow`], then the counts.

use futures::stream::{BoxStream, StreamExt};
use haul_engine::march::SyncAction;
use haul_engine::shard::Shard;
use haul_engine::sync::SyncJob;
use haul_engine::Failure;
use haul_store::location::Location;
use haul_store::ObjectMeta;

use crate::connect::{probe, Connector, Opened};
use crate::context::{JobOutcome, PlanCounts, PlanRow, RunContext};
use crate::error::{invalid, Result};
use crate::spec::{ConnSpec, DiffSpec};

/// A tree to sync from or to, or to compare: a bucket prefix or a local directory.
pub(crate) async fn open_tree(loc: &Location, conn: &ConnSpec, c: &mut Connector, what: &str) -> Result<Opened> {
    if *loc == Location::Stdio {
        return invalid(format!("{what}: '-' cannot be synced (use cp)"));
    }
    let opened = c.open_existing(loc, conn).await?;
    if matches!(loc, Location::Local { .. }) && !opened.key.is_empty() {
        return invalid(format!(
            "{}: is a file; sync works on directories and prefixes (use cp for one file)",
            opened.shown
        ));
    }
    Ok(opened)
}

pub(crate) async fn diff(s: &DiffSpec, ctx: &RunContext) -> Result<JobOutcome> {
    let mut c = Connector::default();
    let source = open_tree(s.src.location(), &s.src_conn, &mut c, "SRC").await?;
    let dest = open_tree(s.dst.location(), &s.dst_conn, &mut c, "DST").await?;
    let (src_prefix, dst_prefix) = (source.key.as_dir(), dest.key.as_dir());
    probe(&source.store, &src_prefix, "cannot read the source", true).await?;
    probe(&dest.store, &dst_prefix, "cannot read the destination", true).await?;
    let job = SyncJob {
        compare: s.compare,
        delete: true,
        ..SyncJob::new(src_prefix, dst_prefix)
    };
    let actions = job.march(&source.store, &dest.store, &Shard::all());
    Ok(JobOutcome::Planned(emit_plan(&job, actions, s.all, ctx).await))
}

/// Hands every action of a plan to the reporter (skips only with `all`);
/// unlisted entries and listing errors go to its observer side.
pub(crate) async fn emit_plan(
    job: &SyncJob,
    mut actions: BoxStream<'static, SyncAction>,
    all: bool,
    ctx: &RunContext,
) -> PlanCounts {
    let mut counts = PlanCounts::default();
    let obs = ctx.observer();
    ctx.reporter.plan_started();
    while let Some(act) = actions.next().await {
        let (o, reason, prefix) = match &act {
            SyncAction::Copy { src, reason, .. } => {
                counts.copy += 1;
                (src, reason, &job.src_base)
            }
            SyncAction::Delete { dst, reason } => {
                counts.delete += 1;
                (dst, reason, &job.dst_base)
            }
            SyncAction::Skip { src, reason, .. } => {
                counts.same += 1;
                if !all {
                    continue;
                }
                (src, reason, &job.src_base)
            }
            SyncAction::Unlisted(u) => {
                obs.unlisted(u.key.as_str(), u.reason, &u.detail);
                continue;
            }
            SyncAction::Error(e) => {
                counts.errors += 1;
                obs.failed(&Failure::from_error(&e.key, e));
                continue;
            }
        };
        ctx.reporter.plan_row(&row(act.name(), reason, o, prefix));
    }
    counts
}

fn row(action: &'static str, reason: &str, o: &ObjectMeta, prefix: &haul_store::Key) -> PlanRow {
    PlanRow {
        action,
        reason: reason.to_string(),
        key: o.key.strip_prefix(prefix).unwrap_or(o.key.as_str()).to_string(),
        size: o.size,
        etag: o.etag.clone().unwrap_or_default(),
        mtime: haul_engine::transfer::mtime_of(o)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default(),
    }
}
