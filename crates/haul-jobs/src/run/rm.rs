//! rm: one object, or everything under a prefix with `recursive`, in
//! batches of 1000; a dry run reports what would go.

use futures::stream::{self, StreamExt};
use haul_store::{ListEntry, ListRequest};

use super::{executor, job_options};
use crate::connect::{probe, Connector};
use crate::context::{JobOutcome, RunContext};
use crate::error::{invalid, JobError, Result};
use crate::spec::RmSpec;

pub(crate) async fn run(s: &RmSpec, ctx: &RunContext) -> Result<JobOutcome> {
    let opened = Connector::default()
        .open_existing(s.location.location(), &s.conn)
        .await?;
    let store = opened.store.clone();
    let jopts = job_options(haul_engine::JobOptions::default().concurrency, s.dry_run);
    let exec = executor(Default::default(), jopts, ctx, &store, &store);
    let keys = if s.recursive {
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
            return invalid(format!(
                "{}: give an object key, or -r to delete everything under a prefix",
                opened.shown
            ));
        }
        match store.head(&opened.key).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                return invalid(format!("{}: no such object (use -r for a prefix)", opened.shown))
            }
            Err(e) => return Err(JobError::store(e)),
        }
        stream::iter(vec![Ok(opened.key.clone())]).boxed()
    };
    let summary = exec.delete(&store, keys).await;
    Ok(JobOutcome::Moved {
        verb: "Deleted",
        summary,
        strict: false,
    })
}
