//! Arguments of `haul watch` and its subcommands, kept apart from
//! args.rs (which holds the shared option groups they flatten).

use clap::{Args, Subcommand};

use crate::args::*;

pub const WATCH_HELP: &str = "\
Examples:
  haul watch /data s3://bucket/ingest --delete-after-upload --prune-empty-dirs \\
      --storage-class STANDARD_IA --state-dir /var/lib/haul --log-file /var/log/haul/watch.log
  haul watch /data s3://bucket/ingest --once          # cron: upload what is there, exit
  haul watch status --state-dir /var/lib/haul         # counts, oldest pending, recent failures
  haul watch retry --state-dir /var/lib/haul          # re-queue dead letters

A file is uploaded when it was closed after writing, or once its size and mtime have not
changed for --settle. Hidden files (.*), *.tmp and *.part are never uploaded. Events are
hints: the tree is also scanned at start, after lost events, and every --rescan-every.

Exit codes: 0 stopped cleanly (or --once: every file uploaded); 1 --once: some files failed
(they are in the journal and retried by the next run); 2 fatal error.";

/// How to reach one S3 endpoint.

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct WatchArgs {
    #[command(subcommand)]
    pub action: Option<WatchAction>,
    /// The local directory to ingest (it must exist).
    #[arg(required = true)]
    pub dir: Option<std::path::PathBuf>,
    /// Destination: s3://bucket[/prefix] or a local directory; keys keep the relative path.
    #[arg(required = true)]
    pub dst: Option<String>,
    /// A file not seen closed after writing is complete once unchanged this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: std::time::Duration,
    /// Scan the whole tree this often, whatever the events said.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub rescan_every: std::time::Duration,
    /// Never upload paths (relative to DIR) matching this glob; repeatable. `.*`, `*.tmp` and `*.part` always are.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Delete each local file once its upload is verified and the file is unchanged since it was read.
    #[arg(long)]
    pub delete_after_upload: bool,
    /// Remove folders emptied by deletion once they are older than --keep-dirs-for.
    #[arg(long)]
    pub prune_empty_dirs: bool,
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    pub keep_dirs_for: std::time::Duration,
    /// Give a file up (dead letter) after this many failed attempts (default: retry forever).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Longest wait between two attempts of one file (the wait doubles from 1s).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub retry_max_delay: std::time::Duration,
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Scan, upload everything present, exit (for cron).
    #[arg(long)]
    pub once: bool,
    /// On SIGTERM/SIGINT, how long uploads in flight may take before they are aborted and re-queued.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: std::time::Duration,
    /// Log to this file instead of stderr, rotated daily (watch.log → watch.2026-11-21.log).
    #[arg(long)]
    pub log_file: Option<std::path::PathBuf>,
    /// Daily log files kept.
    #[arg(long, default_value_t = 14)]
    pub log_retention_days: usize,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464), at /metrics.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// A summary line in the log this often.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub summary_every: std::time::Duration,
    /// Do not follow file-system events; rely on --rescan-every (e.g. for NFS, where inotify sees nothing).
    #[arg(long)]
    pub no_events: bool,
    /// When a file's key exists: overwrite it, skip the file (kept locally, reported as a dead letter),
    /// or rename the upload to name.<UTC time>.ext.
    #[arg(long, value_enum, default_value = "overwrite")]
    pub if_exists: IfExistsArg,
    /// File-system events buffered before a rescan replaces them.
    #[arg(long, default_value_t = 65_536, hide = true)]
    pub event_queue: usize,
    #[command(flatten)]
    pub upload: ObjectArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub conn: Conn,
}

/// `haul watch --if-exists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IfExistsArg {
    Overwrite,
    Skip,
    Rename,
}

#[derive(Debug, Subcommand)]
pub enum WatchAction {
    /// Show the journal: counts by state, uploaded totals, the oldest pending file, recent failures, dead letters.
    Status(WatchStateArgs),
    /// Re-queue dead letters (all, or the paths given) for a running or the next watch.
    Retry(WatchRetryArgs),
}

#[derive(Debug, Args)]
pub struct WatchStateArgs {
    #[command(flatten)]
    pub state: StateDirArgs,
}

#[derive(Debug, Args)]
pub struct WatchRetryArgs {
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Paths (relative to the watched directory) to retry; all dead letters if none.
    pub paths: Vec<String>,
}
