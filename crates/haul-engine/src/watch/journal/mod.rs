//! The durable journal of `haul watch`: one SQLite database (WAL) per state
//! directory, bound to one local tree and one destination.
//!
//! A file has a row only while there is work to do: `pending` (waiting to
//! settle, or for its retry time), `uploading`, `failed` (waiting for a
//! retry) or `dead` (out of attempts, waiting for `haul watch retry`). A
//! verified upload deletes the row and adds to the counters, so the journal
//! stays as small as the backlog, whatever the number of files ingested.
//!
//! Its parts: [`schema`] (tables, migrations, opening), [`queue`] (what is
//! to do and its transitions), [`dead`] (failures and dead letters) and
//! [`status`] (counts and `haul watch status`), on the shared SQLite helper
//! (`crate::db`).

mod dead;
mod queue;
mod schema;
mod status;
#[cfg(test)]
mod tests;

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::db::Db;

/// The state of a file in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Pending = 0,
    Uploading = 1,
    Failed = 2,
    Dead = 3,
}

impl FileState {
    fn from_i64(v: i64) -> Self {
        match v {
            1 => FileState::Uploading,
            2 => FileState::Failed,
            3 => FileState::Dead,
            _ => FileState::Pending,
        }
    }
}

/// A file seen by a scan or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The path relative to the watched directory, `/`-separated.
    pub key: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// The inode's change time: a write that sets mtime back still moves it.
    pub ctime_ns: i64,
    /// Closed after writing (or renamed into the tree): complete now.
    pub closed: bool,
    /// When to look at it (unix ms).
    pub not_before_ms: i64,
}

/// A file due for upload, as taken from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub key: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub closed: bool,
    pub attempts: u32,
}

/// A multipart upload left behind by a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanUpload {
    pub key: String,
    pub dst_key: String,
    pub upload_id: String,
}

/// A failure as kept in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureRow {
    /// When (unix ms).
    pub at_ms: i64,
    pub key: String,
    pub op: String,
    pub code: String,
    pub message: String,
    pub attempts: u32,
}

/// What `haul watch status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchStatus {
    pub root: String,
    pub destination: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// The file waiting longest (not dead), and since when (unix ms).
    pub oldest_pending: Option<(String, i64)>,
    pub recent_failures: Vec<FailureRow>,
    /// Files out of attempts, with their last error.
    pub dead_letters: Vec<FailureRow>,
}

/// Counts by state, for the periodic summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pending: u64,
    pub uploading: u64,
    pub failed: u64,
    pub dead: u64,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    pub deleted_files: u64,
    /// Symbolic links found in the tree (each counted once): never followed.
    pub skipped_symlinks: u64,
    /// Files not uploaded because the key existed (`--if-exists skip`).
    pub skipped_exists: u64,
}

/// The journal of one state directory.
#[derive(Debug)]
pub struct WatchJournal {
    db: Db,
}

/// The current time in unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Adds `n` to a counter.
fn bump(conn: &Connection, name: &str, n: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![name, n])?;
    Ok(())
}
