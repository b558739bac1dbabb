//! verify: DST holds every object of SRC with the same content.

use futures::StreamExt;
use haul_engine::march::Compare;
use haul_engine::shard::Shard;
use haul_engine::sync::SyncJob;
use haul_engine::verify::{verify, VerifySummary};

use super::plan::open_tree;
use crate::connect::{probe, Connector};
use crate::context::{JobOutcome, RunContext};
use crate::error::Result;
use crate::spec::VerifySpec;

pub(crate) async fn run(s: &VerifySpec, ctx: &RunContext) -> Result<JobOutcome> {
    let filter = s.filter.build()?;
    let mut c = Connector::default();
    let source = open_tree(s.src.location(), &s.src_conn, &mut c, "SRC").await?;
    let dest = open_tree(s.dst.location(), &s.dst_conn, &mut c, "DST").await?;
    let (src_prefix, dst_prefix) = (source.key.as_dir(), dest.key.as_dir());
    probe(&source.store, &src_prefix, "cannot read the source", true).await?;
    probe(&dest.store, &dst_prefix, "cannot read the destination", true).await?;
    let job = SyncJob {
        compare: Compare::Size,
        delete: true,
        filter,
        ..SyncJob::new(src_prefix.clone(), dst_prefix)
    };
    let actions = job.march(&source.store, &dest.store, &Shard::all());
    let mut findings = verify(
        source.store.clone(),
        dest.store.clone(),
        actions,
        s.concurrency.max(1),
        src_prefix,
    );
    let mut sum = VerifySummary::default();
    while let Some(f) = findings.next().await {
        sum.add(&f);
        if matches!(f, haul_engine::verify::Finding::Same { .. }) && !s.all {
            continue;
        }
        ctx.reporter.finding(&f);
    }
    Ok(JobOutcome::Verified(sum))
}
