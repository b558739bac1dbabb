//! `haul watch`: the ingest daemon, and `haul watch status` / `retry` over
//! its journal.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use haul_engine::journal::default_state_dir;
use haul_engine::report::Failure;
use haul_engine::watch::{Counts, IfExists, Uploaded, Watch, WatchJournal, WatchObserver, WatchOptions, WatchStatus};
use haul_store::location::Location;
use tokio_util::sync::CancellationToken;

use crate::args::{Global, IfExistsArg, WatchAction, WatchArgs};
use crate::conn::{probe, Connector, Side};

fn state_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => Ok(default_state_dir()?.join("watch")),
    }
}

pub async fn run(g: &Global, a: WatchArgs) -> Result<u8> {
    match a.action {
        Some(WatchAction::Status(s)) => return status(g, state_dir(s.state_dir)?),
        Some(WatchAction::Retry(r)) => {
            let dir = state_dir(r.state_dir)?;
            let j = WatchJournal::open_existing(&dir)?;
            let n = j.retry_dead(&r.paths)?;
            println!("re-queued {n} dead letter(s) in {}", j.path().display());
            return Ok(0);
        }
        None => {}
    }
    let (Some(dir), Some(dst)) = (a.dir.clone(), a.dst.clone()) else {
        bail!("usage: haul watch DIR DST (or haul watch status|retry)");
    };
    if !dir.is_dir() {
        bail!(
            "{}: the directory to watch does not exist or is not a directory",
            dir.display()
        );
    }
    let root = dir
        .canonicalize()
        .with_context(|| format!("{}: cannot open the directory to watch", dir.display()))?;
    if std::fs::read_dir(&root).is_err() {
        bail!("{}: the directory to watch cannot be read", root.display());
    }
    let dst_loc = Location::parse(&dst).context("DST")?;
    if matches!(dst_loc, Location::Stdio) {
        bail!("DST: a watch uploads to s3://bucket[/prefix] or a local directory, not stdout");
    }
    let state = state_dir(a.state_dir.clone())?;
    haul_engine::state::create_private_dir(&state)
        .with_context(|| format!("cannot create the state directory {}", state.display()))?;
    let state = state.canonicalize().unwrap_or(state);
    for (what, p) in [("--state-dir", Some(&state)), ("--log-file", a.log_file.as_ref())] {
        if let Some(p) = p {
            let p = p.parent().filter(|_| what == "--log-file").unwrap_or(p);
            let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
            if p.starts_with(&root) {
                bail!(
                    "{what} {} is inside the watched directory {}: it would be uploaded",
                    p.display(),
                    root.display()
                );
            }
        }
    }

    let mut c = Connector::new(a.conn.clone());
    let source = c
        .open_existing(&Location::Local { path: root.clone() }, Side::Src)
        .await?;
    super::cp::check_no_overlap(&Location::Local { path: root.clone() }, &source, &dst_loc, &c)?;
    let dest = super::cp::open_dest_tree(&dst_loc, &mut c).await?;
    probe(&dest.store, &dest.key, "cannot write to the destination", false).await?;

    let topts = super::cp::transfer_options(&a.transfer, &a.upload.write_args())?;
    let journal = Arc::new(WatchJournal::open(
        &state,
        &root.display().to_string(),
        &format!("{}{}", dest.store.url(), dest.key.as_dir()),
    )?);
    let opts = WatchOptions {
        dst_base: dest.key.as_dir(),
        settle: a.settle,
        rescan_every: a.rescan_every.max(std::time::Duration::from_secs(1)),
        exclude: a.exclude.clone(),
        delete_after_upload: a.delete_after_upload,
        prune_empty_dirs: a.prune_empty_dirs,
        keep_dirs_for: a.keep_dirs_for,
        max_attempts: a.max_attempts.map(|m| m.max(1)),
        retry_min: std::time::Duration::from_secs(1).min(a.retry_max_delay),
        retry_max: a.retry_max_delay,
        concurrency: a.transfer.concurrency.max(1),
        once: a.once,
        shutdown_timeout: a.shutdown_timeout,
        event_queue: a.event_queue.max(1),
        summary_every: a.summary_every.max(std::time::Duration::from_secs(1)),
        events: !a.no_events,
        if_exists: match a.if_exists {
            IfExistsArg::Overwrite => IfExists::Overwrite,
            IfExistsArg::Skip => IfExists::Skip,
            IfExistsArg::Rename => IfExists::Rename,
        },
    };
    if let Some(addr) = a.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(LATENCY.to_string()),
                &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0],
            )
            .and_then(|b| b.install())
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        describe_metrics();
    }
    let observer = Arc::new(WatchOut {
        json: g.json,
        stdout: Mutex::new(()),
    });
    let watch = Watch::new(&root, dest.store.clone(), journal.clone(), opts, topts, observer)?;
    tracing::info!(
        dir = %root.display(),
        dst = %dst,
        state = %journal.path().display(),
        once = a.once,
        delete_after_upload = a.delete_after_upload,
        "watch started"
    );
    let summary = watch.run(shutdown_signal()).await?;
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
    if g.json {
        println!("{}", serde_json::json!({"event": "summary", "summary": summary}));
    } else if a.once && !g.quiet {
        eprintln!(
            "Uploaded {} file(s), {} ({} deleted); {} failed, {} pending, {} dead; \
             {} symbolic link(s) skipped, {} skipped (key exists)",
            summary.uploaded_files,
            bytesize::ByteSize::b(summary.uploaded_bytes).display().si(),
            summary.deleted_files,
            summary.failed,
            summary.pending,
            summary.dead,
            summary.skipped_symlinks,
            summary.skipped_exists
        );
    }
    Ok(if a.once { summary.exit_code() as u8 } else { 0 })
}

/// Cancelled by the first SIGTERM or SIGINT; a second one exits at once.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            wait_signal().await;
            n += 1;
            if n == 1 {
                tracing::info!("signal received: stopping (again to quit at once)");
                t.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    token
}

#[cfg(unix)]
async fn wait_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

const LATENCY: &str = "haul_watch_upload_latency_seconds";

fn describe_metrics() {
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
}

/// Metrics, and JSON lines on stdout with --json.
struct WatchOut {
    json: bool,
    stdout: Mutex<()>,
}

impl WatchOut {
    fn line(&self, v: serde_json::Value) {
        if self.json {
            let _g = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
            println!("{v}");
        }
    }
}

impl WatchObserver for WatchOut {
    fn uploaded(&self, u: &Uploaded<'_>) {
        metrics::counter!("haul_watch_uploaded_files_total").increment(1);
        metrics::counter!("haul_watch_uploaded_bytes_total").increment(u.bytes);
        if u.deleted {
            metrics::counter!("haul_watch_deleted_files_total").increment(1);
        }
        metrics::histogram!(LATENCY).record(u.latency.as_secs_f64());
        self.line(serde_json::json!({
            "event": "uploaded",
            "key": u.key,
            "dst": u.dst_key.as_str(),
            "bytes": u.bytes,
            "latency_ms": u.latency.as_millis() as u64,
            "deleted": u.deleted,
        }));
    }

    fn failed(&self, f: &Failure, attempts: u32, dead: bool) {
        metrics::counter!("haul_watch_failed_attempts_total").increment(1);
        if dead {
            metrics::counter!("haul_watch_dead_letters_total").increment(1);
        }
        self.line(serde_json::json!({
            "event": "failed",
            "key": f.key,
            "op": f.op,
            "code": f.code,
            "message": f.message,
            "attempts": attempts,
            "dead": dead,
        }));
    }

    fn skipped_exists(&self, key: &str, dst_key: &haul_store::Key) {
        metrics::counter!("haul_watch_skipped_exists_total").increment(1);
        self.line(serde_json::json!({
            "event": "skipped",
            "key": key,
            "dst": dst_key.as_str(),
            "reason": "exists",
        }));
    }

    fn counts(&self, c: &Counts) {
        metrics::gauge!("haul_watch_pending_files").set((c.pending + c.uploading) as f64);
        metrics::gauge!("haul_watch_failed_files").set(c.failed as f64);
        metrics::gauge!("haul_watch_dead_files").set(c.dead as f64);
    }
}

fn status(g: &Global, dir: PathBuf) -> Result<u8> {
    let j = WatchJournal::open_existing(&dir)?;
    let s: WatchStatus = j.status(10)?;
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(0);
    }
    let when = |ms: i64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    println!("watch     {} -> {}", s.root, s.destination);
    println!("journal   {}", j.path().display());
    println!(
        "files     {} pending, {} uploading, {} failed (retrying), {} dead",
        s.counts.pending, s.counts.uploading, s.counts.failed, s.counts.dead
    );
    println!(
        "uploaded  {} file(s), {}; {} deleted locally",
        s.counts.uploaded_files,
        bytesize::ByteSize::b(s.counts.uploaded_bytes).display().si(),
        s.counts.deleted_files
    );
    println!(
        "skipped   {} symbolic link(s) (never followed); {} file(s) whose key existed (--if-exists skip)",
        s.counts.skipped_symlinks, s.counts.skipped_exists
    );
    if let Some((path, since)) = &s.oldest_pending {
        println!("oldest    {path} (waiting since {})", when(*since));
    }
    if !s.recent_failures.is_empty() {
        println!("recent failures:");
        for f in &s.recent_failures {
            println!(
                "  {}  {}  {} {}: {} (attempt {})",
                when(f.at_ms),
                f.key,
                f.op,
                f.code,
                f.message,
                f.attempts
            );
        }
    }
    if !s.dead_letters.is_empty() {
        println!("dead letters (`haul watch retry` re-queues them):");
        for f in &s.dead_letters {
            println!(
                "  {}  {} {}: {} ({} attempts)",
                f.key, f.op, f.code, f.message, f.attempts
            );
        }
    }
    Ok(0)
}
