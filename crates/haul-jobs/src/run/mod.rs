//! Running a job: [`run`] takes any [`JobSpec`], opens its stores, plans
//! and executes it, and returns a [`JobOutcome`]. One module per kind.

mod bundle;
pub(crate) mod cp;
mod dlq;
mod plan;
mod restore;
mod rm;
pub(crate) mod sync;
mod unbundle;
mod verify;
mod watch;

pub use watch::state_dir as watch_state_dir;

use haul_engine::{Executor, JobOptions, Transfer, TransferOptions};
use haul_store::{DynStore, MetadataDirective, PutOptions, Sse};

use crate::context::{JobOutcome, RunContext};
use crate::error::{JobError, Result};
use crate::spec::{Directive, JobSpec, ObjectSpec, SseSpec, TransferSpec, WriteSpec};

/// Runs a job to its end (or until `ctx.cancel`).
pub async fn run(spec: &JobSpec, ctx: &RunContext) -> Result<JobOutcome> {
    spec.validate().map_err(JobError::Invalid)?;
    match spec {
        JobSpec::Cp(s) => cp::run(s, ctx).await,
        JobSpec::Sync(s) => sync::run(s, ctx).await,
        JobSpec::Diff(s) => plan::diff(s, ctx).await,
        JobSpec::Verify(s) => verify::run(s, ctx).await,
        JobSpec::Rm(s) => rm::run(s, ctx).await,
        JobSpec::Restore(s) => restore::run(s, ctx).await,
        JobSpec::Watch(s) => watch::run(s, ctx).await,
        JobSpec::Bundle(s) => bundle::run(s, ctx).await,
        JobSpec::Unbundle(s) => unbundle::run(s, ctx).await,
    }
}

/// The engine's transfer options of a job's option groups.
pub fn transfer_options(t: &TransferSpec, o: &ObjectSpec, w: &WriteSpec) -> TransferOptions {
    let sse = o.sse.map(|s| match s {
        SseSpec::Aes256 => Sse::S3,
        SseSpec::Kms => Sse::Kms {
            key_id: o.sse_kms_key_id.clone(),
        },
    });
    let concurrency = t.concurrency.max(1);
    TransferOptions {
        multipart_threshold: t.multipart_threshold.0,
        part_size: t.part_size.0,
        parts_per_object: t.parts_per_object.max(1),
        parts_total: (t.parts_per_object.max(1) * 4).max(concurrency.min(256)),
        buffer_bytes: t.max_buffer.0,
        directive: match w.metadata_directive {
            Directive::Copy => MetadataDirective::Copy,
            Directive::Replace => MetadataDirective::Replace,
        },
        put: PutOptions {
            content_type: o.content_type.clone(),
            metadata: o.metadata.clone(),
            storage_class: o.storage_class.clone(),
            sse,
            tags: o.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ..Default::default()
        },
        server_side: !w.no_server_side,
        preserve_etag: w.preserve_etag,
        require_tags: w.require_tags,
        require_verified: w.require_verified,
    }
}

/// An executor over a transfer with these options, whose dry runs go to
/// the reporter with the two stores' URLs.
pub(crate) fn executor(
    topts: TransferOptions,
    jopts: JobOptions,
    ctx: &RunContext,
    src: &DynStore,
    dst: &DynStore,
) -> Executor {
    let transfer = Transfer::new(topts, ctx.cancel.clone());
    let mut exec = Executor::new(transfer, jopts, ctx.observer());
    exec.plan_sink = Some(ctx.plan_sink(src.url(), dst.url()));
    exec
}

pub(crate) fn job_options(concurrency: usize, dry_run: bool) -> JobOptions {
    JobOptions {
        concurrency: concurrency.max(1),
        dry_run,
        ..Default::default()
    }
}
