//! `haul sync` and `haul diff`: two listings marched in lock step; sync
//! executes the actions, diff prints them.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::stream::{BoxStream, StreamExt};
use haul_engine::march::{march, MarchOptions, SyncAction};
use haul_engine::sync::SyncOptions;
use haul_engine::{Filter, JobOptions};
use haul_store::location::Location;
use haul_store::{DynStore, Key, ListEntry, ListRequest, ObjectMeta};
use serde_json::json;

use crate::args::{DiffArgs, Global, SyncArgs};
use crate::cmd::cp::{check_no_overlap, open_dest_tree, transfer_options};
use crate::conn::{probe, Connector, Opened, Side};
use crate::output::{DryRun, Output};

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

/// The objects of a recursive listing whose keys (relative to `prefix`) pass the filter.
fn listing(store: &DynStore, prefix: &Key, filter: &Filter) -> BoxStream<'static, haul_store::Result<ListEntry>> {
    let (prefix, filter) = (prefix.clone(), filter.clone());
    store
        .list(ListRequest::prefix(prefix.clone()))
        .filter(move |e| {
            let keep = match e {
                Ok(ListEntry::Object(o)) => filter.matches(o.key.strip_prefix(&prefix).unwrap_or(o.key.as_str())),
                Ok(ListEntry::Prefix(_)) => false,
                Err(_) => true,
            };
            futures::future::ready(keep)
        })
        .boxed()
}

pub async fn run(g: &Global, a: SyncArgs) -> Result<u8> {
    let src = Location::parse(&a.src).context("SRC")?;
    let dst = Location::parse(&a.dst).context("DST")?;
    if a.max_delete.is_some() && !a.delete {
        bail!("--max-delete only makes sense with --delete");
    }
    let topts = transfer_options(&a.transfer, &a.write)?;
    let filter = Filter::new(&a.include, &a.exclude)?;
    let mut c = Connector::new(a.conn.clone());
    let source = open_tree(&src, Side::Src, &mut c, "SRC").await?;
    let src_prefix = source.key.as_dir();
    probe(&source.store, &src_prefix, "cannot read the source", true).await?;
    check_no_overlap(&src, &source, &dst, &c)?;
    let dest = open_dest_tree(&dst, &mut c).await?;
    let dst_prefix = dest.key.as_dir();
    probe(&dest.store, &dst_prefix, "cannot list the destination", true).await?;

    let out = Arc::new(Output::new(g, true));
    let mut exec = super::executor(
        topts,
        JobOptions {
            concurrency: a.transfer.concurrency.max(1),
            dry_run: a.dry_run,
            ..Default::default()
        },
        out.clone(),
    );
    exec.plan_sink = Some(Arc::new(DryRun {
        out: out.clone(),
        src_url: source.store.url(),
        dst_url: dest.store.url(),
    }));
    let actions = march(
        listing(&source.store, &src_prefix, &filter),
        listing(&dest.store, &dst_prefix, &filter),
        MarchOptions {
            src_prefix,
            dst_prefix,
            compare: a.compare,
            delete: a.delete,
        },
    );
    let summary = exec
        .sync(
            &source.store,
            &dest.store,
            actions,
            &SyncOptions {
                max_delete: a.max_delete,
            },
        )
        .await;
    out.summary(if a.dry_run { "Would sync" } else { "Synced" }, &summary);
    Ok(summary.exit_code() as u8)
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
    let out = Output::new(g, false);
    let all = Filter::default();
    let mut actions = march(
        listing(&source.store, &src_prefix, &all),
        listing(&dest.store, &dst_prefix, &all),
        MarchOptions {
            src_prefix: src_prefix.clone(),
            dst_prefix: dst_prefix.clone(),
            compare: a.compare,
            delete: true,
        },
    );
    if !g.json {
        out.line("action\treason\tkey\tsize\tetag\tmtime");
    }
    let (mut copies, mut deletes, mut same, mut errors) = (0u64, 0u64, 0u64, 0u64);
    while let Some(act) = actions.next().await {
        // Keys relative to their side's prefix, so both sides read alike.
        let (o, reason, prefix) = match &act {
            SyncAction::Copy { src, reason, .. } => {
                copies += 1;
                (src, reason, &src_prefix)
            }
            SyncAction::Delete { dst, reason } => {
                deletes += 1;
                (dst, reason, &dst_prefix)
            }
            SyncAction::Skip { src, reason, .. } => {
                same += 1;
                if !a.all {
                    continue;
                }
                (src, reason, &src_prefix)
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
        eprintln!("{copies} to copy, {deletes} only in the destination, {same} the same, {errors} errors");
    }
    Ok(if errors > 0 { 1 } else { 0 })
}
