//! The end of a run: no more events or scans; uploads in flight may finish
//! for `shutdown_timeout`, then are cancelled and re-queued.

use tokio::task::JoinSet;

use super::journal::Due;
use super::schedule::Scheduler;
use super::upload::Outcome;
use super::{Inner, WatchError};

impl Scheduler {
    /// Stops following events and scanning, and ends the uploads in flight.
    pub(super) async fn stop(mut self) -> Result<(), WatchError> {
        drop(self.watcher.take());
        if let Some(f) = self.full.take() {
            f.abort();
        }
        self.folders.abort_all();
        finish_inflight(&self.inner, &mut self.inflight).await
    }
}

/// Lets uploads in flight finish until the shutdown timeout, then cancels
/// the others (they come back `Released` or failed, and are re-queued);
/// records how each ended.
async fn finish_inflight(inner: &Inner, inflight: &mut JoinSet<(Due, Outcome)>) -> Result<(), WatchError> {
    if inflight.is_empty() {
        return Ok(());
    }
    let timeout = inner.opts.shutdown_timeout;
    tracing::info!(
        uploads = inflight.len(),
        timeout = %humantime::format_duration(timeout),
        "stopping: finishing uploads in flight"
    );
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, inflight.join_next()).await {
            Ok(Some(Ok((due, out)))) => inner.finish(&due, out)?,
            Ok(Some(Err(e))) => tracing::error!(error = %e, "an upload task failed"),
            Ok(None) => return Ok(()),
            Err(_) => break,
        }
    }
    tracing::warn!(
        uploads = inflight.len(),
        "shutdown timeout: aborting uploads in flight (they are re-queued)"
    );
    inner.transfer.cancel_token().cancel();
    while let Some(res) = inflight.join_next().await {
        if let Ok((due, out)) = res {
            inner.finish(&due, out)?;
        }
    }
    Ok(())
}
