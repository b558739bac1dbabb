//! `haul restore`: RestoreObject for every archived object of a listing or an inventory.

use anyhow::{bail, Context, Result};
use futures::stream::StreamExt;
use haul_engine::restore::{restore_all, RestoreOptions, RestoreOutcome};
use haul_engine::source::load_inventory;
use haul_store::location::Location;
use haul_store::{ListEntry, ListRequest};
use serde_json::json;

use crate::args::{Global, RestoreArgs};
use crate::conn::{fatal, probe, Connector, Side};
use crate::output::Output;

pub async fn run(g: &Global, a: RestoreArgs) -> Result<u8> {
    let loc = Location::parse(&a.location)?;
    if !loc.is_s3() {
        bail!("{loc}: restore works on s3:// locations");
    }
    if a.days == 0 {
        bail!("--days must be at least 1");
    }
    let mut c = Connector::new(a.conn.clone());
    let opened = c.open_existing(&loc, Side::Only).await?;
    let objects = match &a.inventory {
        Some(raw) => {
            let mloc = Location::parse(raw).context("--inventory")?;
            let manifest = c.open_existing(&mloc, Side::Only).await?;
            let inv = load_inventory(&manifest.store, &manifest.key)
                .await
                .map_err(fatal)
                .with_context(|| format!("inventory {raw}"))?;
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
        days: a.days,
        tier: a.tier.clone(),
        concurrency: a.concurrency,
        dry_run: a.dry_run,
    };
    let out = Output::for_job(g, false)?;
    let mut outcomes = restore_all(opened.store.clone(), objects, opts);
    let (mut requested, mut in_progress, mut restored, mut not_archived, mut failed) = (0u64, 0u64, 0u64, 0u64, 0u64);
    while let Some(o) = outcomes.next().await {
        match &o {
            RestoreOutcome::Requested { key } => {
                requested += 1;
                if a.dry_run && !g.json {
                    out.line(&format!("(dry run) restore {}/{key}", opened.store.url()));
                }
            }
            RestoreOutcome::InProgress { .. } => in_progress += 1,
            RestoreOutcome::AlreadyRestored { .. } => restored += 1,
            RestoreOutcome::NotArchived { .. } => not_archived += 1,
            RestoreOutcome::Failed { key, code, message } => {
                failed += 1;
                haul_engine::Observer::failed(
                    &out,
                    &haul_engine::Failure {
                        key: key.clone(),
                        op: "restore".into(),
                        code: code.clone(),
                        message: message.clone(),
                    },
                );
            }
        }
        if g.json && !matches!(o, RestoreOutcome::Failed { .. }) {
            out.line(&serde_json::to_string(&o).unwrap_or_default());
        }
    }
    if g.json {
        out.line(
            &json!({"event": "summary", "requested": requested, "in_progress": in_progress, "already_restored": restored,
                    "not_archived": not_archived, "failed": failed, "dry_run": a.dry_run})
            .to_string(),
        );
    } else if !g.quiet {
        let verb = if a.dry_run { "would request" } else { "requested" };
        eprintln!(
            "Restore {verb}: {requested}; in progress: {in_progress}; already restored: {restored}; not archived: {not_archived}; failed: {failed}"
        );
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
