//! `haul sync` and `haul diff`: two listings marched in lock step; sync
//! executes the actions, diff prints them.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::stream::{BoxStream, StreamExt};
use haul_engine::journal::{default_state_dir, JobShards, Journal};
use haul_engine::march::SyncAction;
use haul_engine::shard::{auto_split, parse_part_file, Shard};
use haul_engine::sync::SyncJob;
use haul_engine::{Filter, JobOptions};
use haul_store::location::Location;
use haul_store::ObjectMeta;
use serde_json::json;

use crate::args::{Conn, DiffArgs, Global, SyncArgs, VerifyArgs};
use crate::cmd::cp::{check_no_overlap, open_dest_tree, transfer_options};
use crate::conn::{fatal, probe, Connector, Opened, Side};
use crate::output::Output;

/// A tree to sync from or to: a bucket prefix or a local directory.
async fn open_tree(loc: &Location, side: Side, c: &mut Connector, what: &str) -> Result<Opened> {
    if *loc == Location::Stdio {
        bail!("{what}: '-' cannot be synced (use cp)");
    }
    let opened = c.open_existing(loc, side).await?;
    if matches!(loc, Location::Local { .. }) && !opened.key.is_empty() {
        bail!(
            "{}: is a file; sync works on directories and prefixes (use cp for one file)",
            opened.shown
        );
    }
    Ok(opened)
}

pub async fn run(g: &Global, a: SyncArgs) -> Result<u8> {
    let src = Location::parse(&a.src).context("SRC")?;
    let dst = Location::parse(&a.dst).context("DST")?;
    if a.max_delete.is_some() && !a.delete {
        bail!("--max-delete only makes sense with --delete");
    }
    let topts = transfer_options(&a.transfer, &a.write)?;
    let filter = Filter::new(&a.include, &a.exclude)?;
    // A part file is read and checked before anything else happens.
    let part_file = match &a.part_file {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("cannot read the part file {}", p.display()))?;
            let shards = parse_part_file(&text).with_context(|| format!("part file {}", p.display()))?;
            Some((text, shards))
        }
        None => None,
    };
    let mut c = Connector::new(a.conn.clone());
    let source = open_tree(&src, Side::Src, &mut c, "SRC").await?;
    let src_prefix = source.key.as_dir();
    probe(&source.store, &src_prefix, "cannot read the source", true).await?;
    check_no_overlap(&src, &source, &dst, &c)?;
    let dest = open_dest_tree(&dst, &mut c).await?;
    let dst_prefix = dest.key.as_dir();
    probe(&dest.store, &dst_prefix, "cannot list the destination", true).await?;

    let job = SyncJob {
        src_base: src_prefix.clone(),
        dst_base: dst_prefix.clone(),
        compare: a.compare,
        delete: a.delete,
        max_delete: a.max_delete,
        filter,
        shards_in_flight: a.shards_in_flight.max(1),
    };
    if a.files_from.is_some() || a.inventory.is_some() {
        return sync_listed(g, &a, &src, &source, &dest, &job, topts, &mut c).await;
    }
    // What the job does identifies it in the journal: a run resumes only a
    // job that did exactly the same.
    let description = job_description(&a, &src, &source, &dst, &dest, &part_file);
    let plan_shards = || async {
        match (&part_file, a.no_split) {
            (Some((_, shards)), _) => Ok(shards.clone()),
            (None, true) => Ok(vec![Shard::all()]),
            (None, false) => {
                let target = job.shards_in_flight * 4;
                auto_split(&source.store, &src_prefix, target, 3, a.split_min_keys)
                    .await
                    .map_err(fatal)
                    .context("cannot split the source into shards")
            }
        }
    };
    let journal = if a.no_journal || a.dry_run {
        None
    } else {
        let dir = match a.state_dir.clone() {
            Some(d) => d,
            None => default_state_dir()?,
        };
        Some(Journal::open(&dir)?)
    };
    let id = Journal::job_id(&description);
    let planned = match &journal {
        Some(j) => j.begin(&id, &description, a.fresh, plan_shards).await?,
        None => JobShards::unjournaled(plan_shards().await?),
    };
    if a.dry_run {
        // The plan, exactly as `diff` prints it; nothing is changed.
        let (src_store, dst_store, job2) = (source.store.clone(), dest.store.clone(), job.clone());
        let actions = futures::stream::iter(planned.shards)
            .map(move |(_, shard, _)| job2.march(&src_store, &dst_store, &shard))
            .flatten()
            .boxed();
        return print_plan(g, &job, actions, false).await;
    }
    if planned.resumed && !g.quiet {
        eprintln!(
            "resuming job {} from {}: {} of {} shards done",
            planned.id,
            humantime::format_rfc3339_seconds(planned.started),
            planned.done(),
            planned.shards.len()
        );
    }

    let out = Arc::new(Output::for_job(g, true)?);
    let exec = super::executor(topts, job_options(&a), out.clone(), &source.store, &dest.store);
    let summary = exec
        .sync_journaled(&source.store, &dest.store, &job, journal.as_ref(), planned)
        .await?;
    out.summary(if a.dry_run { "Would sync" } else { "Synced" }, &summary);
    Ok(super::exit_code(&summary, &a.write))
}

/// Everything that makes two runs the same job: the version of haul, both
/// sides (store, prefix, and for S3 the endpoint, profile, region and
/// addressing, from the flags or the environment), and every option that
/// changes the plan or what a copy writes (and so what a later comparison
/// finds). Options of pace (concurrency, buffers) are left out: a resumed
/// run may go faster or slower.
fn job_description(
    a: &SyncArgs,
    src: &Location,
    source: &Opened,
    dst: &Location,
    dest: &crate::cmd::cp::Dest,
    part_file: &Option<(String, Vec<Shard>)>,
) -> String {
    let shards = match (part_file, a.no_split) {
        (Some((text, _)), _) => json!({"part_file": text}),
        (None, true) => json!("single"),
        (None, false) => json!({
            "auto": {"shards_in_flight": a.shards_in_flight.max(1), "split_min_keys": a.split_min_keys}
        }),
    };
    json!({
        "command": "sync",
        "version": env!("CARGO_PKG_VERSION"),
        "src": format!("{}/{}", source.store.url(), source.key.as_dir()),
        "src_via": side_identity(&a.conn, Side::Src, src),
        "dst": format!("{}/{}", dest.store.url(), dest.key.as_dir()),
        "dst_via": side_identity(&a.conn, Side::Dst, dst),
        "compare": a.compare.to_string(),
        "delete": a.delete,
        "max_delete": a.max_delete,
        "include": a.include,
        "exclude": a.exclude,
        "shards": shards,
        "write": format!("{:?}", a.write),
        "part_size": a.transfer.part_size,
        "multipart_threshold": a.transfer.multipart_threshold,
    })
    .to_string()
}

/// The endpoint, profile, region and addressing an S3 side is reached
/// with: its flags, else the environment's (a profile's configured
/// endpoint goes with the profile's name). Null for a local side.
fn side_identity(c: &Conn, side: Side, loc: &Location) -> serde_json::Value {
    if !matches!(loc, Location::S3 { .. }) {
        return serde_json::Value::Null;
    }
    let pick = |s: &Option<String>, d: &Option<String>, both: &Option<String>| {
        match side {
            Side::Src => s.clone(),
            Side::Dst => d.clone(),
            Side::Only => None,
        }
        .or_else(|| both.clone())
    };
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    json!({
        "endpoint": pick(&c.src_endpoint_url, &c.dst_endpoint_url, &c.endpoint_url)
            .or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
        "profile": pick(&c.src_profile, &c.dst_profile, &c.profile).or_else(|| env(&["AWS_PROFILE"])),
        "region": pick(&c.src_region, &c.dst_region, &c.region).or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"])),
        "path_style": c.path_style || match side {
            Side::Src => c.src_path_style,
            Side::Dst => c.dst_path_style,
            Side::Only => false,
        },
    })
}

fn row(o: &ObjectMeta) -> (u64, String, String) {
    (
        o.size,
        o.etag.clone().unwrap_or_default(),
        haul_engine::transfer::mtime_of(o)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default(),
    )
}

pub async fn diff(g: &Global, a: DiffArgs) -> Result<u8> {
    let src = Location::parse(&a.src).context("SRC")?;
    let dst = Location::parse(&a.dst).context("DST")?;
    let mut c = Connector::new(a.conn.clone());
    let source = open_tree(&src, Side::Src, &mut c, "SRC").await?;
    let dest = open_tree(&dst, Side::Dst, &mut c, "DST").await?;
    let (src_prefix, dst_prefix) = (source.key.as_dir(), dest.key.as_dir());
    probe(&source.store, &src_prefix, "cannot read the source", true).await?;
    probe(&dest.store, &dst_prefix, "cannot read the destination", true).await?;
    let job = SyncJob {
        compare: a.compare,
        delete: true,
        ..SyncJob::new(src_prefix, dst_prefix)
    };
    let actions = job.march(&source.store, &dest.store, &Shard::all());
    print_plan(g, &job, actions, a.all).await
}

/// Prints the actions of a plan — `diff`, and `sync --dry-run` — as TSV rows
/// (action, reason, key, size, ETag, mtime; keys relative to their side's
/// prefix) or JSON lines, then the counts. Exit 1 if a listing failed.
async fn print_plan(g: &Global, job: &SyncJob, mut actions: BoxStream<'static, SyncAction>, all: bool) -> Result<u8> {
    let out = Output::new(g, false);
    if !g.json {
        out.line("action\treason\tkey\tsize\tetag\tmtime");
    }
    let (mut copies, mut deletes, mut same, mut errors) = (0u64, 0u64, 0u64, 0u64);
    while let Some(act) = actions.next().await {
        let (o, reason, prefix) = match &act {
            SyncAction::Copy { src, reason, .. } => {
                copies += 1;
                (src, reason, &job.src_base)
            }
            SyncAction::Delete { dst, reason } => {
                deletes += 1;
                (dst, reason, &job.dst_base)
            }
            SyncAction::Skip { src, reason, .. } => {
                same += 1;
                if !all {
                    continue;
                }
                (src, reason, &job.src_base)
            }
            SyncAction::Unlisted(u) => {
                haul_engine::Observer::unlisted(&out, u.key.as_str(), u.reason, &u.detail);
                continue;
            }
            SyncAction::Error(e) => {
                errors += 1;
                let f = haul_engine::Failure::from_error(&e.key, e);
                haul_engine::Observer::failed(&out, &f);
                continue;
            }
        };
        let (size, etag, mtime) = row(o);
        let rel = o.key.strip_prefix(prefix).unwrap_or(o.key.as_str());
        if g.json {
            out.line(
                &json!({"action": act.name(), "reason": reason, "key": rel, "size": size, "etag": etag, "mtime": mtime})
                    .to_string(),
            );
        } else {
            let key = rel.replace(['\t', '\n'], " ");
            out.line(&format!("{}\t{reason}\t{key}\t{size}\t{etag}\t{mtime}", act.name()));
        }
    }
    if g.json {
        out.line(
            &json!({"event": "summary", "copy": copies, "delete": deletes, "same": same, "errors": errors}).to_string(),
        );
    } else if !g.quiet {
        eprintln!("{copies} to copy, {deletes} to delete, {same} the same, {errors} errors");
    }
    Ok(if errors > 0 { 1 } else { 0 })
}

pub async fn verify(g: &Global, a: VerifyArgs) -> Result<u8> {
    use haul_engine::verify::{verify, Finding, VerifySummary};
    let src = Location::parse(&a.src).context("SRC")?;
    let dst = Location::parse(&a.dst).context("DST")?;
    let filter = Filter::new(&a.include, &a.exclude)?;
    let mut c = Connector::new(a.conn.clone());
    let source = open_tree(&src, Side::Src, &mut c, "SRC").await?;
    let dest = open_tree(&dst, Side::Dst, &mut c, "DST").await?;
    let (src_prefix, dst_prefix) = (source.key.as_dir(), dest.key.as_dir());
    probe(&source.store, &src_prefix, "cannot read the source", true).await?;
    probe(&dest.store, &dst_prefix, "cannot read the destination", true).await?;
    let job = SyncJob {
        compare: haul_engine::march::Compare::Size,
        delete: true,
        filter,
        ..SyncJob::new(src_prefix.clone(), dst_prefix)
    };
    let actions = job.march(&source.store, &dest.store, &Shard::all());
    let mut findings = verify(
        source.store.clone(),
        dest.store.clone(),
        actions,
        a.concurrency,
        src_prefix,
    );
    let out = Output::new(g, false);
    let mut sum = VerifySummary::default();
    while let Some(f) = findings.next().await {
        sum.add(&f);
        if matches!(f, Finding::Same { .. }) && !a.all {
            continue;
        }
        if g.json {
            out.line(&serde_json::to_string(&f).unwrap_or_default());
            continue;
        }
        let line = match &f {
            Finding::Same { key, how } => format!("same\t{key}\t{how}"),
            Finding::Missing { key } => format!("missing\t{key}"),
            Finding::Mismatch { key, reason } => format!("mismatch\t{key}\t{reason}"),
            Finding::Extra { key } => format!("extra\t{key}\tonly in the destination"),
            Finding::Skipped { key, reason } => format!("skipped\t{key}\t{reason}"),
            Finding::Error { key, message } => format!("error\t{key}\t{message}"),
        };
        out.line(&line);
    }
    if g.json {
        let mut v = serde_json::to_value(&sum).unwrap_or_default();
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
    Ok(sum.exit_code() as u8)
}

fn job_options(a: &SyncArgs) -> JobOptions {
    JobOptions {
        concurrency: a.transfer.concurrency.max(1),
        dry_run: a.dry_run,
        ..Default::default()
    }
}

/// `sync --files-from` / `--inventory`: the source objects come from a list,
/// not a LIST; each is looked up in the destination.
#[allow(clippy::too_many_arguments)]
async fn sync_listed(
    g: &Global,
    a: &SyncArgs,
    src: &Location,
    source: &Opened,
    dest: &crate::cmd::cp::Dest,
    job: &SyncJob,
    topts: haul_engine::TransferOptions,
    c: &mut Connector,
) -> Result<u8> {
    use haul_engine::source::{key_list, load_inventory};
    let entries = if let Some(p) = &a.files_from {
        // Streamed: the list is read as the run needs keys.
        let file = tokio::fs::File::open(p)
            .await
            .with_context(|| format!("cannot read the key list {}", p.display()))?;
        key_list(
            source.store.clone(),
            job.src_base.clone(),
            tokio::io::BufReader::new(file),
            16,
        )
    } else {
        let raw = a.inventory.as_deref().unwrap_or_default();
        let loc = Location::parse(raw).context("--inventory")?;
        let manifest = c.open_existing(&loc, Side::Src).await?;
        let inv = load_inventory(&manifest.store, &manifest.key)
            .await
            .map_err(fatal)
            .with_context(|| format!("inventory {raw}"))?;
        if let Location::S3 { bucket, .. } = src {
            if *bucket != inv.source_bucket {
                bail!("the inventory describes bucket {:?}, not {bucket:?}", inv.source_bucket);
            }
        }
        inv.objects(job.src_base.clone())
    };
    let out = Arc::new(Output::for_job(g, true)?);
    let exec = super::executor(topts, job_options(a), out.clone(), &source.store, &dest.store);
    let summary = exec.sync_listed(&source.store, &dest.store, job, entries).await;
    out.summary(if a.dry_run { "Would sync" } else { "Synced" }, &summary);
    Ok(super::exit_code(&summary, &a.write))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn sync_args(extra: &[&str]) -> Result<SyncArgs, Box<dyn std::error::Error>> {
        let mut argv = vec!["haul", "sync", "s3://src-bkt/x", "s3://dst-bkt/y"];
        argv.extend_from_slice(extra);
        match crate::args::Cli::try_parse_from(argv)?.cmd {
            crate::args::Command::Sync(a) => Ok(*a),
            other => Err(format!("not sync: {other:?}").into()),
        }
    }

    /// Item 4: the endpoint and the profile of each side are part of the
    /// job's identity (a journal of one endpoint never resumes on another).
    #[test]
    fn each_side_is_identified_by_its_endpoint_and_profile() -> Result<(), Box<dyn std::error::Error>> {
        let loc = Location::parse("s3://src-bkt/x")?;
        let id = |extra: &[&str], side: Side| -> Result<String, Box<dyn std::error::Error>> {
            Ok(side_identity(&sync_args(extra)?.conn, side, &loc).to_string())
        };
        let base = ["--endpoint-url", "http://one:9000"];
        assert_ne!(
            id(&base, Side::Src)?,
            id(&["--endpoint-url", "http://two:9000"], Side::Src)?
        );
        let dr = ["--endpoint-url", "http://one:9000", "--dst-profile", "dr"];
        assert_eq!(id(&base, Side::Src)?, id(&dr, Side::Src)?);
        assert_ne!(id(&base, Side::Dst)?, id(&dr, Side::Dst)?);
        let other = [
            "--endpoint-url",
            "http://one:9000",
            "--src-endpoint-url",
            "http://two:9000",
        ];
        assert_ne!(id(&base, Side::Src)?, id(&other, Side::Src)?);
        assert_eq!(id(&base, Side::Dst)?, id(&other, Side::Dst)?);
        // A local side has no endpoint.
        let local = Location::parse("/tmp")?;
        assert_eq!(
            side_identity(&sync_args(&base)?.conn, Side::Src, &local),
            serde_json::Value::Null
        );
        Ok(())
    }
}
