//! `haul watch`: the ingest daemon, and `haul watch status` / `retry` over
//! its journal.

use std::path::PathBuf;

use anyhow::Result;
use haul_engine::watch::{WatchJournal, WatchStatus};
use tokio_util::sync::CancellationToken;

use crate::args::{Global, WatchAction};

fn state_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    Ok(haul_jobs::run::watch_state_dir(given)?)
}

/// `haul watch status` and `haul watch retry` (the watch itself is a job).
pub fn action(g: &Global, action: &WatchAction) -> Result<u8> {
    match action {
        WatchAction::Status(s) => status(g, state_dir(s.state.state_dir.clone())?),
        WatchAction::Retry(r) => {
            let dir = state_dir(r.state.state_dir.clone())?;
            let j = WatchJournal::open_existing(&dir)?;
            let n = j.retry_dead(&r.paths)?;
            println!("re-queued {n} dead letter(s) in {}", j.path().display());
            Ok(0)
        }
    }
}

/// Cancelled by the first SIGTERM or SIGINT; a second one exits at once.
pub fn shutdown_signal() -> CancellationToken {
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
