//! `haul rm`: delete one object, or everything under a prefix with -r, in
//! batches of 1000; `--dry-run` prints what would go.

use std::sync::Arc;

use anyhow::{bail, Result};
use futures::stream::{self, StreamExt};
use haul_engine::JobOptions;
use haul_store::location::Location;
use haul_store::{ListEntry, ListRequest};

use crate::args::{Global, RmArgs};
use crate::conn::{fatal, probe, Connector, Side};
use crate::output::Output;

pub async fn run(g: &Global, a: RmArgs) -> Result<u8> {
    let loc = Location::parse(&a.location)?;
    let mut c = Connector::new(a.conn.clone());
    let opened = c.open_existing(&loc, Side::Only).await?;
    let store = opened.store.clone();
    let out = Arc::new(Output::for_job(g, false)?);
    let jopts = JobOptions {
        dry_run: a.dry_run,
        ..Default::default()
    };
    let exec = super::executor(Default::default(), jopts, out.clone(), &store, &store);
    let keys = if a.recursive {
        let prefix = opened.key.as_dir();
        probe(&store, &prefix, "cannot list", true).await?;
        store
            .list(ListRequest::prefix(prefix))
            .filter_map(|e| async move {
                match e {
                    Ok(ListEntry::Object(o)) => Some(Ok(o.key)),
                    // An entry that is not an object cannot be deleted as one.
                    Ok(ListEntry::Prefix(_) | ListEntry::Unlisted(_)) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .boxed()
    } else {
        if opened.key.is_empty() {
            bail!(
                "{}: give an object key, or -r to delete everything under a prefix",
                opened.shown
            );
        }
        match store.head(&opened.key).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => bail!("{}: no such object (use -r for a prefix)", opened.shown),
            Err(e) => return Err(fatal(e)),
        }
        stream::iter(vec![Ok(opened.key.clone())]).boxed()
    };
    let summary = exec.delete(&store, keys).await;
    out.summary("Deleted", &summary);
    Ok(summary.exit_code() as u8)
}
