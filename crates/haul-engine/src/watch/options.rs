//! The options of a watch: plain data (a job spec builds them).

use std::time::Duration;

use haul_store::Key;

use super::exists::IfExists;

/// Options of a watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Where keys start in the destination (`prefix/` + the relative path).
    pub dst_base: Key,
    /// A file not closed-after-write is complete once unchanged this long.
    pub settle: Duration,
    /// A full scan this often (events are hints; the scan is the guarantee).
    pub rescan_every: Duration,
    /// Globs (relative paths) never uploaded, on top of `.*`, `*.tmp`, `*.part`.
    pub exclude: Vec<String>,
    /// Delete a local file once its upload is verified and it is unchanged.
    pub delete_after_upload: bool,
    /// Remove folders emptied by deletion once they are `keep_dirs_for` old.
    pub prune_empty_dirs: bool,
    pub keep_dirs_for: Duration,
    /// Attempts before a file becomes a dead letter (`None`: forever).
    pub max_attempts: Option<u32>,
    /// Backoff between attempts: from `retry_min`, doubling, capped at `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Files uploading at once.
    pub concurrency: usize,
    /// Scan, upload what is there, exit.
    pub once: bool,
    /// On shutdown, how long in-flight uploads may take to finish before
    /// they are aborted (and re-queued).
    pub shutdown_timeout: Duration,
    /// File-system events buffered; when full, a rescan replaces them.
    pub event_queue: usize,
    /// A summary in the log this often.
    pub summary_every: Duration,
    /// Follow file-system events (off: periodic scans only).
    pub events: bool,
    /// What an upload does when its key exists in the destination.
    pub if_exists: IfExists,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            dst_base: Key::root(),
            settle: Duration::from_secs(2),
            rescan_every: Duration::from_secs(600),
            exclude: Vec::new(),
            delete_after_upload: false,
            prune_empty_dirs: false,
            keep_dirs_for: Duration::from_secs(86_400),
            max_attempts: None,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            concurrency: 16,
            once: false,
            shutdown_timeout: Duration::from_secs(30),
            event_queue: 65_536,
            summary_every: Duration::from_secs(60),
            events: true,
            if_exists: IfExists::Overwrite,
        }
    }
}
