//! restore: RestoreObject for every archived object of a listing or an inventory.

use futures::stream::StreamExt;
use haul_engine::restore::{restore_all, RestoreOptions, RestoreOutcome};
use haul_engine::source::load_inventory;
use haul_engine::Failure;
use haul_store::{ListEntry, ListRequest};

use crate::connect::{probe, Connector};
use crate::context::{JobOutcome, RestoreCounts, RunContext};
use crate::error::{JobError, Result};
use crate::spec::RestoreSpec;

pub(crate) async fn run(s: &RestoreSpec, ctx: &RunContext) -> Result<JobOutcome> {
    let mut c = Connector::default();
    let opened = c.open_existing(s.location.location(), &s.conn).await?;
    let objects = match &s.inventory {
        Some(raw) => {
            let manifest = c.open_existing(raw.location(), &s.conn).await?;
            let inv = load_inventory(&manifest.store, &manifest.key)
                .await
                .map_err(|e| JobError::store_in(format!("inventory {raw}"), e))?;
            inv.objects(opened.key.clone())
        }
        None => {
            probe(&opened.store, &opened.key, "cannot list", true).await?;
            opened
                .store
                .list(ListRequest::prefix(opened.key.clone()))
                .filter_map(|e| async move {
                    match e {
                        Ok(ListEntry::Object(o)) => Some(Ok(o)),
                        Ok(ListEntry::Prefix(_) | ListEntry::Unlisted(_)) => None,
                        Err(e) => Some(Err(e)),
                    }
                })
                .boxed()
        }
    };
    let opts = RestoreOptions {
        days: s.days,
        tier: s.tier.as_str().to_string(),
        concurrency: s.concurrency.max(1),
        dry_run: s.dry_run,
    };
    let url = opened.store.url();
    let obs = ctx.observer();
    let mut outcomes = restore_all(opened.store.clone(), objects, opts);
    let mut n = RestoreCounts {
        dry_run: s.dry_run,
        ..Default::default()
    };
    while let Some(o) = outcomes.next().await {
        match &o {
            RestoreOutcome::Requested { .. } => n.requested += 1,
            RestoreOutcome::InProgress { .. } => n.in_progress += 1,
            RestoreOutcome::AlreadyRestored { .. } => n.already_restored += 1,
            RestoreOutcome::NotArchived { .. } => n.not_archived += 1,
            RestoreOutcome::Failed { key, code, message } => {
                n.failed += 1;
                obs.failed(&Failure {
                    key: key.clone(),
                    op: "restore".into(),
                    code: code.clone(),
                    message: message.clone(),
                });
                continue;
            }
        }
        ctx.reporter.restored(&url, &o, s.dry_run);
    }
    Ok(JobOutcome::Restored(n))
}
