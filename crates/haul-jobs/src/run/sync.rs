//! sync: plan the job into shards (a part file, one shard, or split on
//! the source's folders), record them in the resume journal, march and
//! copy shard by shard, delete only after every copy succeeded.

use futures::stream::StreamExt;
use haul_engine::journal::{JobShards, Journal};
use haul_engine::shard::{auto_split, parse_part_file, Shard};
use haul_engine::source::{key_list, load_inventory};
use haul_engine::state::default_state_dir;
use haul_engine::sync::SyncJob;
use haul_store::location::Location;
use serde_json::json;

use super::cp::{check_no_overlap, open_dest_tree, Dest};
use super::plan::{emit_plan, open_tree};
use super::{executor, job_options, transfer_options};
use crate::connect::{probe, Connector, Opened};
use crate::context::{JobOutcome, RunContext};
use crate::error::{invalid, JobError, Result};
use crate::spec::{ConnSpec, SyncSpec};

/// A part file, read and checked before anything else happens: its text
/// (part of the job's identity) and its shards.
fn read_part_file(s: &SyncSpec) -> Result<Option<(String, Vec<Shard>)>> {
    let Some(p) = &s.part_file else { return Ok(None) };
    let text = std::fs::read_to_string(p)
        .map_err(|e| JobError::Invalid(format!("cannot read the part file {}: {e}", p.display())))?;
    let shards = parse_part_file(&text).map_err(|e| JobError::Invalid(format!("part file {}: {e}", p.display())))?;
    Ok(Some((text, shards)))
}

/// A sync's two sides, opened and probed, and the engine's job.
pub(crate) struct Prepared {
    pub source: Opened,
    pub dest: Dest,
    pub job: SyncJob,
    pub part_file: Option<(String, Vec<Shard>)>,
}

/// Opens and checks both sides of a sync; nothing is written yet.
pub(crate) async fn prepare(s: &SyncSpec) -> Result<Prepared> {
    let (src, dst) = (s.src.location(), s.dst.location());
    let filter = s.filter.build()?;
    let part_file = read_part_file(s)?;
    let mut c = Connector::default();
    let source = open_tree(src, &s.src_conn, &mut c, "SRC").await?;
    let src_prefix = source.key.as_dir();
    probe(&source.store, &src_prefix, "cannot read the source", true).await?;
    check_no_overlap(src, &source, dst, &s.src_conn, &s.dst_conn)?;
    let dest = open_dest_tree(dst, &s.dst_conn, &mut c).await?;
    let dst_prefix = dest.key.as_dir();
    probe(&dest.store, &dst_prefix, "cannot list the destination", true).await?;
    let job = SyncJob {
        src_base: src_prefix,
        dst_base: dst_prefix,
        compare: s.compare,
        delete: s.delete,
        max_delete: s.max_delete,
        filter,
        shards_in_flight: s.shards_in_flight.max(1),
    };
    Ok(Prepared {
        source,
        dest,
        job,
        part_file,
    })
}

/// The shards of a sync: the part file's, one, or split on the source's folders.
pub(crate) async fn plan_shards(s: &SyncSpec, p: &Prepared) -> Result<Vec<Shard>> {
    match (&p.part_file, s.no_split) {
        (Some((_, shards)), _) => Ok(shards.clone()),
        (None, true) => Ok(vec![Shard::all()]),
        (None, false) => {
            let target = p.job.shards_in_flight * 4;
            auto_split(&p.source.store, &p.job.src_base, target, 3, s.split_min_keys)
                .await
                .map_err(|e| JobError::store_in("cannot split the source into shards", e))
        }
    }
}

pub(crate) async fn run(s: &SyncSpec, ctx: &RunContext) -> Result<JobOutcome> {
    let topts = transfer_options(&s.transfer, &s.object, &s.write);
    let mut c = Connector::default();
    let prepared = prepare(s).await?;
    let Prepared {
        source,
        dest,
        job,
        part_file,
    } = &prepared;
    let verb = if s.dry_run { "Would sync" } else { "Synced" };
    if s.files_from.is_some() || s.inventory.is_some() {
        return sync_listed(s, source, dest, job, ctx, &mut c).await;
    }
    // What the job does identifies it in the journal: a run resumes only a
    // run of the same job.
    let description = job_description(s, source, dest, part_file);
    let plan_shards = || plan_shards(s, &prepared);
    let journal = if s.no_journal || s.dry_run {
        None
    } else {
        let dir = match s.state_dir.clone() {
            Some(d) => d,
            None => default_state_dir()?,
        };
        Some(Journal::open(&dir)?)
    };
    let id = Journal::job_id(&description);
    let planned = match &journal {
        Some(j) => j.begin(&id, &description, s.fresh, plan_shards).await?,
        None => JobShards::unjournaled(plan_shards().await?),
    };
    if s.dry_run {
        // The plan, exactly as `diff` prints it; nothing is changed.
        let (src_store, dst_store, job2) = (source.store.clone(), dest.store.clone(), job.clone());
        let actions = futures::stream::iter(planned.shards)
            .map(move |(_, shard, _)| job2.march(&src_store, &dst_store, &shard))
            .flatten()
            .boxed();
        return Ok(JobOutcome::Planned(emit_plan(job, actions, false, ctx).await));
    }
    if planned.resumed {
        ctx.reporter.notice(&format!(
            "resuming job {} from {}: {} of {} shards done",
            planned.id,
            humantime::format_rfc3339_seconds(planned.started),
            planned.done(),
            planned.shards.len()
        ));
    }
    let exec = executor(
        topts,
        job_options(s.transfer.concurrency, s.dry_run),
        ctx,
        &source.store,
        &dest.store,
    );
    let summary = exec
        .sync_journaled(&source.store, &dest.store, job, journal.as_ref(), planned)
        .await?;
    Ok(JobOutcome::Moved {
        verb,
        summary,
        strict: s.write.strict,
    })
}

/// Everything that makes two runs the same job: the version of haul, both
/// sides (store, prefix, and for S3 the endpoint, profile, region and
/// addressing, from the job or the environment), and every option that
/// changes the plan or what a copy writes (and so what a later comparison
/// finds). Options of pace (concurrency, buffers) are left out: a resumed
/// run may go faster or slower.
pub(crate) fn job_description(
    s: &SyncSpec,
    source: &Opened,
    dest: &Dest,
    part_file: &Option<(String, Vec<Shard>)>,
) -> String {
    let shards = match (part_file, s.no_split) {
        (Some((text, _)), _) => json!({"part_file": text}),
        (None, true) => json!("single"),
        (None, false) => json!({
            "auto": {"shards_in_flight": s.shards_in_flight.max(1), "split_min_keys": s.split_min_keys}
        }),
    };
    json!({
        "command": "sync",
        "version": env!("CARGO_PKG_VERSION"),
        "src": format!("{}/{}", source.store.url(), source.key.as_dir()),
        "src_via": side_identity(&s.src_conn, s.src.location()),
        "dst": format!("{}/{}", dest.store.url(), dest.key.as_dir()),
        "dst_via": side_identity(&s.dst_conn, s.dst.location()),
        "compare": s.compare.to_string(),
        "delete": s.delete,
        "max_delete": s.max_delete,
        "include": s.filter.include,
        "exclude": s.filter.exclude,
        "shards": shards,
        "object": serde_json::to_value(&s.object).unwrap_or_default(),
        "write": serde_json::to_value(&s.write).unwrap_or_default(),
        "part_size": s.transfer.part_size.0,
        "multipart_threshold": s.transfer.multipart_threshold.0,
    })
    .to_string()
}

/// The endpoint, profile, region and addressing an S3 side is reached
/// with: its settings, else the environment's (a profile's configured
/// endpoint goes with the profile's name). Null for a local side.
pub(crate) fn side_identity(c: &ConnSpec, loc: &Location) -> serde_json::Value {
    if !matches!(loc, Location::S3 { .. }) {
        return serde_json::Value::Null;
    }
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    json!({
        "endpoint": c.endpoint_url.clone().or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
        "profile": c.profile.clone().or_else(|| env(&["AWS_PROFILE"])),
        "region": c.region.clone().or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"])),
        "path_style": c.path_style,
    })
}

/// `files_from` / `inventory`: the source objects come from a list, not a
/// LIST; each is looked up in the destination.
async fn sync_listed(
    s: &SyncSpec,
    source: &Opened,
    dest: &Dest,
    job: &SyncJob,
    ctx: &RunContext,
    c: &mut Connector,
) -> Result<JobOutcome> {
    let entries = if let Some(p) = &s.files_from {
        // Streamed: the list is read as the run needs keys.
        let file = tokio::fs::File::open(p)
            .await
            .map_err(|e| JobError::Invalid(format!("cannot read the key list {}: {e}", p.display())))?;
        key_list(
            source.store.clone(),
            job.src_base.clone(),
            tokio::io::BufReader::new(file),
            16,
        )
    } else if let Some(raw) = &s.inventory {
        let manifest = c.open_existing(raw.location(), &s.src_conn).await?;
        let inv = load_inventory(&manifest.store, &manifest.key)
            .await
            .map_err(|e| JobError::store_in(format!("inventory {raw}"), e))?;
        if let Location::S3 { bucket, .. } = s.src.location() {
            if *bucket != inv.source_bucket {
                return invalid(format!(
                    "the inventory describes bucket {:?}, not {bucket:?}",
                    inv.source_bucket
                ));
            }
        }
        inv.objects(job.src_base.clone())
    } else {
        return invalid("a listed sync needs files_from or inventory");
    };
    let exec = executor(
        transfer_options(&s.transfer, &s.object, &s.write),
        job_options(s.transfer.concurrency, s.dry_run),
        ctx,
        &source.store,
        &dest.store,
    );
    let summary = exec.sync_listed(&source.store, &dest.store, job, entries).await;
    Ok(JobOutcome::Moved {
        verb: if s.dry_run { "Would sync" } else { "Synced" },
        summary,
        strict: s.write.strict,
    })
}
