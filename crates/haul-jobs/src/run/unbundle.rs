//! unbundle: an archive's members back into a bucket prefix or a local
//! directory, through the archive's index (or, for a tar without one, read
//! in order), refusing unsafe names member by member.

use haul_engine::bundle::{self, UnbundleOptions, UnbundleReport};
use haul_engine::transfer::{Transfer, TransferOptions};
use haul_engine::Filter;
use haul_store::location::Location;

use crate::connect::Connector;
use crate::context::{JobOutcome, RunContext};
use crate::error::{invalid, JobError, Result};
use crate::spec::UnbundleSpec;

pub(crate) async fn run(s: &UnbundleSpec, ctx: &RunContext) -> Result<JobOutcome> {
    let mut conn = Connector::default();
    let src = conn.open_existing(s.archive.location(), &s.src_conn).await?;
    if src.key.is_empty() || src.key.is_dir_marker() {
        return invalid(format!("{}: give the archive's key (…/name.tar)", src.shown));
    }
    let include = Filter::new(&s.include, &[]).map_err(|e| JobError::Invalid(e.to_string()))?;
    let opts = UnbundleOptions {
        include,
        concurrency: s.concurrency.max(1),
        overwrite: s.overwrite,
        ..Default::default()
    };
    let failed = |e: bundle::BundleError| JobError::Invalid(format!("{}: {e}", src.shown));
    if s.dry_run {
        let archive = bundle::open_archive(src.store.as_ref(), &src.key)
            .await
            .map_err(failed)?;
        let mut report = UnbundleReport::default();
        for e in archive.entries.iter() {
            if opts.include.matches(&e.name) {
                ctx.reporter
                    .notice(&format!("would restore {} ({} bytes)", e.name, e.size));
                report.restored.push(e.name.clone());
                report.bytes += e.size;
            } else {
                report.filtered += 1;
            }
        }
        return Ok(JobOutcome::Unbundled { report, dry_run: true });
    }
    let report = match s.dst.location() {
        Location::Local { path } => {
            std::fs::create_dir_all(path).map_err(|e| JobError::Invalid(format!("{}: {e}", path.display())))?;
            bundle::unbundle_to_local(src.store.as_ref(), &src.key, path, &opts).await
        }
        Location::S3 { bucket, key } => {
            let dst = conn.s3(bucket, &s.dst_conn).await?;
            let topts = TransferOptions {
                multipart_threshold: s.part_size.0,
                part_size: s.part_size.0,
                ..Default::default()
            };
            let transfer = Transfer::new(topts, ctx.cancel.clone());
            bundle::unbundle_to_store(&src.store, &src.key, &dst, &key.as_dir(), &opts, &transfer).await
        }
        Location::Stdio => return invalid("unbundle writes to a bucket prefix or a directory"),
    }
    .map_err(failed)?;
    Ok(JobOutcome::Unbundled { report, dry_run: false })
}
