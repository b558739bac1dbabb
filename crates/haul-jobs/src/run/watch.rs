//! watch: the ingest daemon (or, with `once`, one pass for cron). Checks
//! the tree, the state directory and the destination before anything is
//! uploaded; serves metrics when asked; stops on `ctx.cancel`.

use std::path::PathBuf;
use std::sync::Arc;

use haul_engine::report::Failure;
use haul_engine::state::default_state_dir;
use haul_engine::watch::{Counts, Uploaded, Watch, WatchJournal, WatchObserver, WatchOptions};
use haul_store::location::Location;

use super::cp::{check_no_overlap, open_dest_tree};
use super::transfer_options;
use crate::connect::{probe, Connector};
use crate::context::{JobOutcome, Reporter, RunContext};
use crate::error::{invalid, JobError, Result};
use crate::spec::{ConnSpec, WatchSpec, WriteSpec};

/// The watch's state directory: given, else `<state dir>/watch`.
pub fn state_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => Ok(default_state_dir()?.join("watch")),
    }
}

pub(crate) async fn run(s: &WatchSpec, ctx: &RunContext) -> Result<JobOutcome> {
    let dir = &s.dir;
    if !dir.is_dir() {
        return invalid(format!(
            "{}: the directory to watch does not exist or is not a directory",
            dir.display()
        ));
    }
    let root = dir
        .canonicalize()
        .map_err(|e| JobError::io(format!("{}: cannot open the directory to watch", dir.display()), e))?;
    if std::fs::read_dir(&root).is_err() {
        return invalid(format!("{}: the directory to watch cannot be read", root.display()));
    }
    let dst_loc = s.dst.location();
    let state = state_dir(s.state_dir.clone())?;
    haul_engine::state::create_private_dir(&state)
        .map_err(|e| JobError::io(format!("cannot create the state directory {}", state.display()), e))?;
    let state = state.canonicalize().unwrap_or(state);
    for (what, p) in [("--state-dir", Some(&state)), ("--log-file", s.log_file.as_ref())] {
        if let Some(p) = p {
            let p = p.parent().filter(|_| what == "--log-file").unwrap_or(p);
            let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
            if p.starts_with(&root) {
                return invalid(format!(
                    "{what} {} is inside the watched directory {}: it would be uploaded",
                    p.display(),
                    root.display()
                ));
            }
        }
    }

    let mut c = Connector::default();
    let local = Location::Local { path: root.clone() };
    let source = c.open_existing(&local, &ConnSpec::default()).await?;
    check_no_overlap(&local, &source, dst_loc, &ConnSpec::default(), &s.conn)?;
    let dest = open_dest_tree(dst_loc, &s.conn, &mut c).await?;
    probe(&dest.store, &dest.key, "cannot write to the destination", false).await?;

    let topts = transfer_options(&s.transfer, &s.object, &WriteSpec::default());
    let journal = Arc::new(WatchJournal::open(
        &state,
        &root.display().to_string(),
        &format!("{}{}", dest.store.url(), dest.key.as_dir()),
    )?);
    if let Some(addr) = s.metrics_addr {
        serve_metrics(addr)?;
    }
    let observer = Arc::new(Metered(ctx.reporter.clone()));
    let watch = Watch::new(
        &root,
        dest.store.clone(),
        journal.clone(),
        options(s, &dest.key),
        topts,
        observer,
    )?;
    tracing::info!(
        dir = %root.display(),
        dst = %s.dst,
        state = %journal.path().display(),
        once = s.once,
        delete_after_upload = s.delete_after_upload,
        "watch started"
    );
    let summary = watch.run(ctx.cancel.clone()).await?;
    tracing::info!(
        uploaded = summary.uploaded_files,
        bytes = summary.uploaded_bytes,
        deleted = summary.deleted_files,
        failed_attempts = summary.failed_attempts,
        pending = summary.pending,
        failed = summary.failed,
        dead = summary.dead,
        "watch stopped"
    );
    Ok(JobOutcome::Watched { summary, once: s.once })
}

fn options(s: &WatchSpec, dst_key: &haul_store::Key) -> WatchOptions {
    let second = std::time::Duration::from_secs(1);
    WatchOptions {
        dst_base: dst_key.as_dir(),
        settle: s.settle.0,
        rescan_every: s.rescan_every.0.max(second),
        exclude: s.exclude.clone(),
        delete_after_upload: s.delete_after_upload,
        prune_empty_dirs: s.prune_empty_dirs,
        keep_dirs_for: s.keep_dirs_for.0,
        max_attempts: s.max_attempts.map(|m| m.max(1)),
        retry_min: second.min(s.retry_max_delay.0),
        retry_max: s.retry_max_delay.0,
        concurrency: s.transfer.concurrency.max(1),
        once: s.once,
        shutdown_timeout: s.shutdown_timeout.0,
        event_queue: s.event_queue.max(1),
        summary_every: s.summary_every.0.max(second),
        events: !s.no_events,
        if_exists: s.if_exists,
    }
}

const LATENCY: &str = "haul_watch_upload_latency_seconds";

/// Prometheus metrics at `addr`/metrics.
fn serve_metrics(addr: std::net::SocketAddr) -> Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(LATENCY.to_string()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0],
        )
        .and_then(|b| b.install())
        .map_err(|e| JobError::Invalid(format!("cannot serve metrics on {addr}: {e}")))?;
    metrics::describe_counter!("haul_watch_uploaded_files_total", "Files uploaded and verified");
    metrics::describe_counter!("haul_watch_uploaded_bytes_total", "Bytes uploaded and verified");
    metrics::describe_counter!(
        "haul_watch_deleted_files_total",
        "Local files deleted after a verified upload"
    );
    metrics::describe_counter!("haul_watch_failed_attempts_total", "Failed upload attempts");
    metrics::describe_counter!("haul_watch_dead_letters_total", "Files given up after --max-attempts");
    metrics::describe_gauge!("haul_watch_pending_files", "Files waiting or uploading");
    metrics::describe_gauge!("haul_watch_failed_files", "Files waiting for a retry");
    metrics::describe_gauge!("haul_watch_dead_files", "Dead letters");
    metrics::describe_histogram!(LATENCY, "From a file's last write to its verified upload");
    Ok(())
}

/// Records metrics, then forwards to the reporter.
struct Metered(Arc<dyn Reporter>);

impl WatchObserver for Metered {
    fn uploaded(&self, u: &Uploaded<'_>) {
        metrics::counter!("haul_watch_uploaded_files_total").increment(1);
        metrics::counter!("haul_watch_uploaded_bytes_total").increment(u.bytes);
        if u.deleted {
            metrics::counter!("haul_watch_deleted_files_total").increment(1);
        }
        metrics::histogram!(LATENCY).record(u.latency.as_secs_f64());
        self.0.uploaded(u);
    }

    fn failed(&self, f: &Failure, attempts: u32, dead: bool) {
        metrics::counter!("haul_watch_failed_attempts_total").increment(1);
        if dead {
            metrics::counter!("haul_watch_dead_letters_total").increment(1);
        }
        WatchObserver::failed(self.0.as_ref(), f, attempts, dead);
    }

    fn skipped_exists(&self, key: &str, dst_key: &haul_store::Key) {
        metrics::counter!("haul_watch_skipped_exists_total").increment(1);
        self.0.skipped_exists(key, dst_key);
    }

    fn counts(&self, c: &Counts) {
        metrics::gauge!("haul_watch_pending_files").set((c.pending + c.uploading) as f64);
        metrics::gauge!("haul_watch_failed_files").set(c.failed as f64);
        metrics::gauge!("haul_watch_dead_files").set(c.dead as f64);
        self.0.counts(c);
    }
}
