//! bundle: the objects under a prefix (a listing) packed into tar archives
//! with byte-offset indexes under a destination prefix; objects above the
//! member size limit copied as they are; dead letters to `--dlq` as they
//! happen (`dlq`). A dry run prints the plan per archive with its requests
//! and their cost.

use futures::stream::BoxStream;
use futures::StreamExt;
use haul_engine::bundle::{
    BundleOptions, BundleRun, BundleSummary, DeadLetter, Destination, Discard, Grouper, Planned,
};
use haul_engine::inventory::InventoryOptions;
use haul_engine::source::load_inventory;
use haul_engine::Transfer;
use haul_store::location::Location;
use haul_store::{DynStore, ErrorKind, Key, ListEntry, ListRequest, ObjectMeta, Op, StoreError};

/// Objects to bundle, as a listing gives them.
type Entries = BoxStream<'static, std::result::Result<ListEntry, StoreError>>;

use super::dlq::DlqFile;
use super::transfer_options;
use crate::connect::{probe, Connector};
use crate::context::{JobOutcome, RunContext};
use crate::error::{invalid, JobError, Result};
use crate::spec::{BundleSpec, Loc, ObjectSpec, TransferSpec, WriteSpec};

/// S3 list prices (us-east-1, per 1,000 requests) for the dry run's estimate.
const PUT_PER_1000: f64 = 0.005;
const GET_PER_1000: f64 = 0.0004;

pub(crate) async fn run(s: &BundleSpec, ctx: &RunContext) -> Result<JobOutcome> {
    let mut conn = Connector::default();
    let src = conn.open_existing(s.src.location(), &s.src_conn).await?;
    let src_prefix = src.key.as_dir();
    probe(&src.store, &src_prefix, "cannot list", true).await?;
    let opts = options(s);
    let run = s.run.clone().unwrap_or_else(|| "bundle".to_string());
    // The same objects for the plan and the run: the listing, the
    // inventory's rows or an earlier run's dead letters.
    let entries = match (&s.inventory, &s.input_dlq) {
        (Some(manifest), _) => inventory_entries(&mut conn, manifest, s).await?,
        (None, Some(path)) => dlq_entries(path)?,
        (None, None) => src.store.list(ListRequest::prefix(src_prefix.clone())),
    };
    if s.dry_run {
        let summary = plan(entries, &src_prefix, &run, &opts, ctx).await?;
        return Ok(JobOutcome::Bundled { summary, dry_run: true });
    }
    let (dst_store, dst_prefix) = match s.dst.location() {
        Location::S3 { bucket, key } => (conn.s3(bucket, &s.dst_conn).await?, key.as_dir()),
        Location::Local { path } => nested_local(&mut conn, path, s, &src.store)?,
        Location::Stdio => return crate::error::invalid("bundle writes archives under a prefix or directory"),
    };
    let dst = Destination {
        store: dst_store,
        prefix: dst_prefix,
        storage_class: s.storage_class.clone(),
    };
    let transfer = Transfer::new(
        transfer_options(&transfer_spec(s), &ObjectSpec::default(), &WriteSpec::default()),
        ctx.cancel.clone(),
    );
    let bundle = BundleRun {
        src: &src.store,
        src_prefix: &src_prefix,
        dst: &dst,
        run: &run,
        opts: &opts,
        transfer: &transfer,
    };
    let summary = match &s.dlq {
        Some(path) => bundle.entries(entries, &mut DlqFile::create(path)?).await,
        None => bundle.entries(entries, &mut Discard).await,
    }
    .map_err(|e| JobError::Invalid(format!("bundle {}: {e}", src.shown)))?;
    Ok(JobOutcome::Bundled {
        summary,
        dry_run: false,
    })
}

/// The objects of an S3 Inventory (verified whole before any row is
/// read), as listing entries of the source bucket.
async fn inventory_entries(conn: &mut Connector, manifest: &Loc, s: &BundleSpec) -> Result<Entries> {
    let m = conn.open_existing(manifest.location(), &s.src_conn).await?;
    let inv = load_inventory(&m.store, &m.key)
        .await
        .map_err(|e| JobError::store_in(format!("inventory {manifest}"), e))?;
    if let Location::S3 { bucket, .. } = s.src.location() {
        if *bucket != inv.source_bucket {
            return invalid(format!(
                "{}: the inventory describes bucket {:?}, not {bucket:?}",
                manifest, inv.source_bucket
            ));
        }
    }
    // A delete marker (a `--versions` row) has no bytes to pack.
    Ok(inv
        .rows(InventoryOptions { versions: s.versions })
        .filter(|r| futures::future::ready(!matches!(r, Ok(row) if row.is_delete_marker)))
        .map(|r| r.and_then(|row| row.to_meta()).map(ListEntry::Object))
        .boxed())
}

/// The objects of an earlier run's dead letters (`--input-dlq`): key, size
/// and ETag as they were planned, read one line at a time.
fn dlq_entries(path: &std::path::Path) -> Result<Entries> {
    use std::io::BufRead;
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| JobError::Invalid(format!("--input-dlq {shown}: {e}")))?;
    let lines = std::io::BufReader::new(file).lines().enumerate();
    Ok(futures::stream::iter(lines)
        .filter_map(move |(n, line)| {
            let shown = shown.clone();
            async move {
                let bad = |why: String| {
                    Some(Err(StoreError::new(
                        Op::List,
                        shown.as_str(),
                        ErrorKind::InvalidRequest,
                        format!("--input-dlq line {}: {why}", n + 1),
                    )))
                };
                let line = match line {
                    Ok(l) if l.trim().is_empty() => return None,
                    Ok(l) => l,
                    Err(e) => return bad(e.to_string()),
                };
                let d: DeadLetter = match serde_json::from_str(&line) {
                    Ok(d) => d,
                    Err(e) => return bad(format!("not a dead letter: {e}")),
                };
                match Key::object(d.key) {
                    Ok(key) => Some(Ok(ListEntry::Object(ObjectMeta {
                        key,
                        size: d.size,
                        etag: d.etag,
                        ..Default::default()
                    }))),
                    Err(e) => bad(e.message),
                }
            }
        })
        .boxed())
}

/// A local destination: a directory of its own, or — when it lies inside
/// a local SRC — SRC's store with the destination as a prefix, so the run
/// knows its archives (this run's and earlier runs') are output, not input.
fn nested_local(
    conn: &mut Connector,
    path: &std::path::Path,
    s: &BundleSpec,
    src_store: &DynStore,
) -> Result<(DynStore, Key)> {
    let io = |e: std::io::Error| JobError::Invalid(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(path).map_err(io)?;
    if let Location::Local { path: src } = s.src.location() {
        let (src_c, dst_c) = (src.canonicalize().map_err(io)?, path.canonicalize().map_err(io)?);
        if let Ok(rel) = dst_c.strip_prefix(&src_c) {
            let rel = rel
                .to_str()
                .ok_or_else(|| JobError::Invalid(format!("{}: not valid UTF-8", path.display())))?;
            let prefix = Key::prefix(rel).map_err(JobError::store)?.as_dir();
            return Ok((src_store.clone(), prefix));
        }
    }
    Ok((conn.local_dir(path, true)?, Key::root()))
}

fn options(s: &BundleSpec) -> BundleOptions {
    BundleOptions {
        max_members: s.max_members,
        max_bytes: s.max_bytes.0,
        max_member_size: s.max_member_size.0,
        group_by_prefix: s.group_by_prefix,
        part_size: s.part_size.0,
        window: s.window,
        archives_in_flight: s.archives_in_flight,
        compress: s.compress,
        tags: s.tags,
        ..Default::default()
    }
}

fn transfer_spec(s: &BundleSpec) -> TransferSpec {
    TransferSpec {
        part_size: s.part_size,
        ..TransferSpec::default()
    }
}

/// The dry run: the archives the listing makes, each with its members,
/// bytes, parts and requests, and an estimated request cost.
async fn plan(
    mut listing: Entries,
    prefix: &Key,
    run: &str,
    opts: &BundleOptions,
    ctx: &RunContext,
) -> Result<BundleSummary> {
    let mut grouper = Grouper::new(run, prefix.as_str(), opts);
    let mut summary = BundleSummary {
        run: run.to_string(),
        ..Default::default()
    };
    let (mut gets, mut puts) = (0u64, 0u64);
    let mut show = |p: Planned, summary: &mut BundleSummary| match p {
        Planned::Archive(u) => {
            let parts = u.bytes.div_ceil(opts.part_size.max(1)).max(1);
            // The listing of stale uploads at its key (a LIST, billed as a
            // PUT), create + parts + complete, and the sidecar; a GET per
            // member (and a GetObjectTagging with `tags`).
            let per_member = if opts.tags { 2 } else { 1 };
            let (g, w) = (u.members.len() as u64 * per_member, parts + 4);
            gets += g;
            puts += w;
            summary.archives_written += 1;
            summary.members += u.members.len() as u64;
            summary.member_bytes += u.bytes;
            ctx.reporter.notice(&format!(
                "would write {}: {} members, {} bytes, {parts} parts; requests: {g} GET, {w} PUT/POST/LIST",
                u.name,
                u.members.len(),
                u.bytes
            ));
        }
        Planned::Large(m) => {
            puts += 1;
            summary.large_objects += 1;
            summary.large_bytes += m.size;
            ctx.reporter.notice(&format!(
                "would copy {} as it is ({} bytes) under large/",
                m.key, m.size
            ));
        }
        Planned::Dead(d) => summary.count_dead(&d),
    };
    while let Some(e) = listing.next().await {
        match e {
            Ok(ListEntry::Object(o)) if o.key.as_str().starts_with(prefix.as_str()) => {
                for p in grouper.push(o) {
                    show(p, &mut summary);
                }
            }
            Ok(_) => {}
            Err(e) => return Err(JobError::store(e)),
        }
    }
    while let Some(p) = grouper.finish() {
        show(p, &mut summary);
    }
    summary.folders = grouper.folders();
    let cost = puts as f64 / 1000.0 * PUT_PER_1000 + gets as f64 / 1000.0 * GET_PER_1000;
    ctx.reporter.notice(&format!(
        "plan: {} archives, {} members, {} large objects, {} dead letters; requests: {gets} GET, {puts} PUT/POST/LIST; estimated ${cost:.4} at S3 list prices",
        summary.archives_written,
        summary.members,
        summary.large_objects,
        summary.dead_letters
    ));
    Ok(summary)
}
