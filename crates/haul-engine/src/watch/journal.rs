//! The durable journal of `haul watch`: one SQLite database (WAL) per state
//! directory, bound to one local tree and one destination.
//!
//! A file has a row only while there is work to do: `pending` (waiting to
//! settle, or for its retry time), `uploading`, `failed` (waiting for a
//! retry) or `dead` (out of attempts, waiting for `haul watch retry`). A
//! verified upload deletes the row and adds to the counters, so the journal
//! stays as small as the backlog, whatever the number of files ingested.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::journal::JournalError;

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

/// Failures kept for `status` (the log has them all).
const KEPT_FAILURES: i64 = 1000;

/// The journal of one state directory.
#[derive(Debug)]
pub struct WatchJournal {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// The current time in unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const SCHEMA: &str = "
    PRAGMA journal_mode=WAL;
    PRAGMA synchronous=NORMAL;
    PRAGMA busy_timeout=10000;
    CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS files (
        path TEXT PRIMARY KEY,
        state INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        closed INTEGER NOT NULL DEFAULT 0,
        dirty INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before INTEGER NOT NULL,
        first_seen INTEGER NOT NULL,
        last_error TEXT,
        upload_key TEXT,
        upload_id TEXT
    );
    CREATE INDEX IF NOT EXISTS files_due ON files (state, not_before);
    CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS failures (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        path TEXT NOT NULL,
        op TEXT NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        attempts INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS symlinks (path TEXT PRIMARY KEY, first_seen INTEGER NOT NULL);";

/// Columns added after the first release, for journals created before.
const ADDED_COLUMNS: &[(&str, &str)] = &[("ctime_ns", "INTEGER NOT NULL DEFAULT 0")];

impl WatchJournal {
    /// Opens (creating) the journal in `dir` for watching `root` into
    /// `destination`. A state directory belongs to one pair: another pair is
    /// refused, so two watches never share (and corrupt) one backlog.
    pub fn open(dir: &Path, root: &str, destination: &str) -> Result<Self, JournalError> {
        let j = Self::open_at(dir, true)?;
        {
            let conn = j.lock();
            for (k, v) in [("root", root), ("destination", destination)] {
                let have: Option<String> = conn
                    .query_row("SELECT v FROM meta WHERE k = ?1", params![k], |r| r.get(0))
                    .optional()
                    .map_err(|e| j.err(e))?;
                match have {
                    Some(h) if h != v => {
                        return Err(j.err(format!(
                            "this state directory belongs to the watch of {k} {h}, not {v}: use another --state-dir"
                        )))
                    }
                    Some(_) => {}
                    None => {
                        conn.execute("INSERT INTO meta (k, v) VALUES (?1, ?2)", params![k, v])
                            .map_err(|e| j.err(e))?;
                    }
                }
            }
        }
        Ok(j)
    }

    /// Opens an existing journal (for `status` and `retry`).
    pub fn open_existing(dir: &Path) -> Result<Self, JournalError> {
        Self::open_at(dir, false)
    }

    fn open_at(dir: &Path, create: bool) -> Result<Self, JournalError> {
        let path = dir.join("watch.db");
        let err = |m: String| JournalError {
            path: path.display().to_string(),
            message: m,
        };
        if create {
            crate::state::create_private_dir(dir)
                .map_err(|e| err(format!("cannot create the state directory: {e}")))?;
            crate::state::create_private_file(&path).map_err(|e| err(format!("cannot create the journal: {e}")))?;
        } else if !path.exists() {
            return Err(err(
                "no watch journal here (has `haul watch` run with this --state-dir?)".into(),
            ));
        }
        let conn = Connection::open(&path).map_err(|e| err(e.to_string()))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(e.to_string()))?;
        for (col, def) in ADDED_COLUMNS {
            let has: bool = conn
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('files') WHERE name = ?1",
                    params![col],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(|e| err(e.to_string()))?
                > 0;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE files ADD COLUMN {col} {def}"))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        Ok(WatchJournal {
            path,
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a query and collects its rows.
    fn rows_of<T, P: rusqlite::Params>(
        &self,
        conn: &Connection,
        sql: &str,
        params: P,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, JournalError> {
        let mut q = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = q.query_map(params, f).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<T>>>().map_err(|e| self.err(e))
    }

    fn err(&self, e: impl std::fmt::Display) -> JournalError {
        JournalError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// After a crash: files left `uploading` become `pending` again (they
    /// are uploaded again), and their unfinished multipart uploads are
    /// returned to be aborted.
    pub fn recover(&self) -> Result<Vec<OrphanUpload>, JournalError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut orphans = Vec::new();
        {
            let mut q = tx
                .prepare("SELECT path, upload_key, upload_id FROM files WHERE upload_id IS NOT NULL")
                .map_err(|e| self.err(e))?;
            let rows = q
                .query_map([], |r| {
                    Ok(OrphanUpload {
                        key: r.get(0)?,
                        dst_key: r.get(1)?,
                        upload_id: r.get(2)?,
                    })
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                orphans.push(row.map_err(|e| self.err(e))?);
            }
        }
        tx.execute(
            "UPDATE files SET state = 0, not_before = ?1, dirty = 0 WHERE state = 1",
            params![now_ms()],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(orphans)
    }

    /// Forgets a multipart upload once aborted.
    pub fn clear_upload(&self, key: &str) -> Result<(), JournalError> {
        self.lock()
            .execute(
                "UPDATE files SET upload_key = NULL, upload_id = NULL WHERE path = ?1",
                params![key],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Files whose retry time has not come yet are retried now (`--once`:
    /// each run retries the leftovers of the previous one).
    pub fn retry_failed_now(&self) -> Result<u64, JournalError> {
        let n = self
            .lock()
            .execute(
                "UPDATE files SET state = 0, not_before = ?1 WHERE state = 2",
                params![now_ms()],
            )
            .map_err(|e| self.err(e))?;
        Ok(n as u64)
    }

    /// Records files seen by a scan or events, in one transaction. A file
    /// already known and unchanged keeps its place (a pending one is looked
    /// at no later than before); a pending one that changed is looked at
    /// when it has been seen unchanged for the settle time again (its
    /// `not_before`, from now); an uploading one that changed is marked to be
    /// uploaded again, a failed or dead one that changed is pending again.
    pub fn enqueue(&self, batch: &[Seen]) -> Result<(), JournalError> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            // In an UPDATE, every expression reads the row's old values.
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO files (path, state, size, mtime_ns, ctime_ns, closed, not_before, first_seen)
                     VALUES (?1, 0, ?2, ?3, ?7, ?4, ?5, ?6)
                     ON CONFLICT(path) DO UPDATE SET
                       dirty = CASE WHEN state = 1 AND (size != excluded.size OR mtime_ns != excluded.mtime_ns
                                                        OR (ctime_ns != excluded.ctime_ns AND ctime_ns != 0 AND excluded.ctime_ns != 0))
                                    THEN 1 ELSE dirty END,
                       closed = CASE WHEN state = 1 THEN closed
                                     WHEN size = excluded.size AND mtime_ns = excluded.mtime_ns
                                          AND (ctime_ns = excluded.ctime_ns OR ctime_ns = 0 OR excluded.ctime_ns = 0)
                                     THEN MAX(closed, excluded.closed)
                                     ELSE excluded.closed END,
                       not_before = CASE WHEN state = 0 AND size = excluded.size AND mtime_ns = excluded.mtime_ns
                                              AND (ctime_ns = excluded.ctime_ns OR ctime_ns = 0 OR excluded.ctime_ns = 0)
                                         THEN MIN(not_before, excluded.not_before)
                                         WHEN state = 0 THEN excluded.not_before
                                         WHEN state IN (2, 3) AND (size != excluded.size OR mtime_ns != excluded.mtime_ns
                                                                   OR (ctime_ns != excluded.ctime_ns AND ctime_ns != 0 AND excluded.ctime_ns != 0))
                                         THEN excluded.not_before
                                         ELSE not_before END,
                       attempts = CASE WHEN state = 3 AND (size != excluded.size OR mtime_ns != excluded.mtime_ns
                                                           OR (ctime_ns != excluded.ctime_ns AND ctime_ns != 0 AND excluded.ctime_ns != 0))
                                       THEN 0 ELSE attempts END,
                       state = CASE WHEN state IN (2, 3) AND (size != excluded.size OR mtime_ns != excluded.mtime_ns
                                                              OR (ctime_ns != excluded.ctime_ns AND ctime_ns != 0 AND excluded.ctime_ns != 0))
                                    THEN 0 ELSE state END,
                       size = CASE WHEN state = 1 THEN size ELSE excluded.size END,
                       mtime_ns = CASE WHEN state = 1 THEN mtime_ns ELSE excluded.mtime_ns END,
                       ctime_ns = CASE WHEN state = 1 THEN ctime_ns
                                       WHEN excluded.ctime_ns = 0 THEN ctime_ns ELSE excluded.ctime_ns END",
                )
                .map_err(|e| self.err(e))?;
            for s in batch {
                up.execute(params![
                    s.key,
                    s.size as i64,
                    s.mtime_ns,
                    i64::from(s.closed),
                    s.not_before_ms,
                    now,
                    s.ctime_ns
                ])
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Takes up to `limit` pending files whose time has come, oldest first,
    /// and marks them `uploading`.
    pub fn take_due(&self, now: i64, limit: usize) -> Result<Vec<Due>, JournalError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut due = Vec::new();
        {
            let mut q = tx
                .prepare_cached(
                    "SELECT path, size, mtime_ns, closed, attempts, ctime_ns FROM files
                     WHERE state = 0 AND not_before <= ?1 ORDER BY not_before LIMIT ?2",
                )
                .map_err(|e| self.err(e))?;
            let rows = q
                .query_map(params![now, limit as i64], |r| {
                    Ok(Due {
                        key: r.get(0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        mtime_ns: r.get(2)?,
                        ctime_ns: r.get(5)?,
                        closed: r.get::<_, i64>(3)? != 0,
                        attempts: r.get::<_, i64>(4)? as u32,
                    })
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                due.push(row.map_err(|e| self.err(e))?);
            }
            let mut mark = tx
                .prepare_cached("UPDATE files SET state = 1, dirty = 0 WHERE path = ?1")
                .map_err(|e| self.err(e))?;
            for d in &due {
                mark.execute(params![d.key]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(due)
    }

    /// When the next pending file is due (unix ms).
    pub fn next_due(&self) -> Result<Option<i64>, JournalError> {
        self.lock()
            .query_row("SELECT MIN(not_before) FROM files WHERE state = 0", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// The size and mtime of a file as it is uploaded (so a change seen
    /// while it uploads marks it to be uploaded again).
    pub fn started(&self, key: &str, size: u64, mtime_ns: i64, ctime_ns: i64) -> Result<(), JournalError> {
        self.lock()
            .execute(
                "UPDATE files SET size = ?2, mtime_ns = ?3, ctime_ns = ?4 WHERE path = ?1",
                params![key, size as i64, mtime_ns, ctime_ns],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a multipart upload in flight for `key`.
    pub fn set_upload(&self, key: &str, dst_key: &str, upload_id: &str) -> Result<(), JournalError> {
        self.lock()
            .execute(
                "UPDATE files SET upload_key = ?2, upload_id = ?3 WHERE path = ?1",
                params![key, dst_key, upload_id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A verified upload (and the deletion of the local file, if asked).
    /// The row goes, unless the file changed while it uploaded: then it is
    /// pending again (returns true).
    pub fn done(&self, key: &str, bytes: u64, deleted: bool, settle_until_ms: i64) -> Result<bool, JournalError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let dirty: bool = tx
            .query_row("SELECT dirty FROM files WHERE path = ?1", params![key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(|e| self.err(e))?
            .is_some_and(|d| d != 0);
        if dirty && !deleted {
            tx.execute(
                "UPDATE files SET state = 0, dirty = 0, closed = 0, attempts = 0, not_before = ?2,
                 upload_key = NULL, upload_id = NULL WHERE path = ?1",
                params![key, settle_until_ms],
            )
            .map_err(|e| self.err(e))?;
        } else {
            tx.execute("DELETE FROM files WHERE path = ?1", params![key])
                .map_err(|e| self.err(e))?;
        }
        let mut bump = tx
            .prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            )
            .map_err(|e| self.err(e))?;
        bump.execute(params!["uploaded_files", 1]).map_err(|e| self.err(e))?;
        bump.execute(params!["uploaded_bytes", bytes as i64])
            .map_err(|e| self.err(e))?;
        if deleted {
            bump.execute(params!["deleted_files", 1]).map_err(|e| self.err(e))?;
        }
        drop(bump);
        tx.commit().map_err(|e| self.err(e))?;
        Ok(dirty && !deleted)
    }

    /// Puts a file back to pending without counting an attempt (it was still
    /// being written, changed while it uploaded, or the run is stopping).
    pub fn requeue(
        &self,
        key: &str,
        size: u64,
        mtime_ns: i64,
        ctime_ns: i64,
        not_before_ms: i64,
    ) -> Result<(), JournalError> {
        self.lock()
            .execute(
                "UPDATE files SET state = 0, closed = 0, dirty = 0, size = ?2, mtime_ns = ?3, ctime_ns = ?5,
                 not_before = ?4, upload_key = NULL, upload_id = NULL WHERE path = ?1",
                params![key, size as i64, mtime_ns, not_before_ms, ctime_ns],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Puts files taken for upload back to pending, due now (shutdown).
    pub fn release(&self, key: &str) -> Result<(), JournalError> {
        self.lock()
            .execute(
                "UPDATE files SET state = 0, not_before = ?2 WHERE path = ?1 AND state = 1",
                params![key, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a symbolic link found in the tree; true the first time this
    /// path is seen (to log it once and count it once).
    pub fn symlink_seen(&self, path: &str) -> Result<bool, JournalError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let new = tx
            .execute(
                "INSERT OR IGNORE INTO symlinks (path, first_seen) VALUES (?1, ?2)",
                params![path, now_ms()],
            )
            .map_err(|e| self.err(e))?
            > 0;
        if new {
            bump(&tx, "skipped_symlinks", 1).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(new)
    }

    /// A file not uploaded because its key exists (`--if-exists skip`): a
    /// dead letter with `code`, kept until it changes or is retried, and counted.
    pub fn skipped_exists(&self, key: &str, message: &str) -> Result<(), JournalError> {
        self.failed(key, "put", "AlreadyExists", message, None)?;
        let conn = self.lock();
        bump(&conn, "skipped_exists", 1).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets a file that is gone from the tree.
    pub fn forget(&self, key: &str) -> Result<(), JournalError> {
        self.lock()
            .execute("DELETE FROM files WHERE path = ?1", params![key])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A failed attempt: retried at `retry_at_ms`, or dead when `None`.
    /// Returns the number of attempts made so far.
    pub fn failed(
        &self,
        key: &str,
        op: &str,
        code: &str,
        message: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<u32, JournalError> {
        let now = now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let (state, next) = match retry_at_ms {
            Some(t) => (FileState::Failed as i64, t),
            None => (FileState::Dead as i64, i64::MAX),
        };
        tx.execute(
            "UPDATE files SET state = ?2, attempts = attempts + 1, not_before = ?3, last_error = ?4,
             dirty = 0, upload_key = NULL, upload_id = NULL WHERE path = ?1",
            params![key, state, next, format!("{op}: {code}: {message}")],
        )
        .map_err(|e| self.err(e))?;
        let attempts: u32 = tx
            .query_row("SELECT attempts FROM files WHERE path = ?1", params![key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or(1) as u32;
        tx.execute(
            "INSERT INTO failures (at, path, op, code, message, attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![now, key, op, code, message, attempts as i64],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM failures WHERE id <= (SELECT MAX(id) FROM failures) - ?1",
            params![KEPT_FAILURES],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(attempts)
    }

    /// Failed files whose retry time has come are pending again.
    pub fn wake_failed(&self, now: i64) -> Result<(), JournalError> {
        self.lock()
            .execute(
                "UPDATE files SET state = 0 WHERE state = 2 AND not_before <= ?1",
                params![now],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// When the next failed file is to be retried (unix ms).
    pub fn next_retry(&self) -> Result<Option<i64>, JournalError> {
        self.lock()
            .query_row("SELECT MIN(not_before) FROM files WHERE state = 2", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Re-queues dead letters (all, or those given) with fresh attempts.
    pub fn retry_dead(&self, keys: &[String]) -> Result<u64, JournalError> {
        let now = now_ms();
        let conn = self.lock();
        if keys.is_empty() {
            let n = conn
                .execute(
                    "UPDATE files SET state = 0, attempts = 0, not_before = ?1 WHERE state = 3",
                    params![now],
                )
                .map_err(|e| self.err(e))?;
            return Ok(n as u64);
        }
        let mut n = 0;
        for k in keys {
            n += conn
                .execute(
                    "UPDATE files SET state = 0, attempts = 0, not_before = ?2 WHERE state = 3 AND path = ?1",
                    params![k, now],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(n as u64)
    }

    /// Counts by state and the counters.
    pub fn counts(&self) -> Result<Counts, JournalError> {
        let conn = self.lock();
        let mut c = Counts::default();
        let by_state = self.rows_of(&conn, "SELECT state, COUNT(*) FROM files GROUP BY state", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        for (state, n) in by_state {
            match FileState::from_i64(state) {
                FileState::Pending => c.pending = n,
                FileState::Uploading => c.uploading = n,
                FileState::Failed => c.failed = n,
                FileState::Dead => c.dead = n,
            }
        }
        let counters = self.rows_of(&conn, "SELECT name, value FROM counters", [], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        for (name, v) in counters {
            match name.as_str() {
                "uploaded_files" => c.uploaded_files = v,
                "uploaded_bytes" => c.uploaded_bytes = v,
                "deleted_files" => c.deleted_files = v,
                "skipped_symlinks" => c.skipped_symlinks = v,
                "skipped_exists" => c.skipped_exists = v,
                _ => {}
            }
        }
        Ok(c)
    }

    /// Everything `haul watch status` shows; at most `recent` failures and dead letters.
    pub fn status(&self, recent: usize) -> Result<WatchStatus, JournalError> {
        let c = self.counts()?;
        let conn = self.lock();
        let meta = |k: &str| -> Result<String, JournalError> {
            conn.query_row("SELECT v FROM meta WHERE k = ?1", params![k], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))
                .map(Option::unwrap_or_default)
        };
        let (root, destination) = (meta("root")?, meta("destination")?);
        let oldest_pending = conn
            .query_row(
                "SELECT path, first_seen FROM files WHERE state != 3 ORDER BY first_seen LIMIT 1",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let recent_failures = self.rows_of(
            &conn,
            "SELECT at, path, op, code, message, attempts FROM failures ORDER BY id DESC LIMIT ?1",
            params![recent as i64],
            |r| {
                Ok(FailureRow {
                    at_ms: r.get(0)?,
                    key: r.get(1)?,
                    op: r.get(2)?,
                    code: r.get(3)?,
                    message: r.get(4)?,
                    attempts: r.get::<_, i64>(5)? as u32,
                })
            },
        )?;
        let dead_letters = self.rows_of(
            &conn,
            "SELECT first_seen, path, COALESCE(last_error, ''), attempts FROM files
             WHERE state = 3 ORDER BY path LIMIT ?1",
            params![recent as i64],
            |r| {
                let last: String = r.get(2)?;
                let mut it = last.splitn(3, ": ").map(str::to_string);
                Ok(FailureRow {
                    at_ms: r.get(0)?,
                    key: r.get(1)?,
                    op: it.next().unwrap_or_default(),
                    code: it.next().unwrap_or_default(),
                    message: it.next().unwrap_or_default(),
                    attempts: r.get::<_, i64>(3)? as u32,
                })
            },
        )?;
        Ok(WatchStatus {
            root,
            destination,
            counts: c,
            oldest_pending,
            recent_failures,
            dead_letters,
        })
    }

    /// The state of one file, if it has a row (tests and diagnostics).
    pub fn state_of(&self, key: &str) -> Result<Option<(FileState, u32)>, JournalError> {
        self.lock()
            .query_row("SELECT state, attempts FROM files WHERE path = ?1", params![key], |r| {
                Ok((FileState::from_i64(r.get(0)?), r.get::<_, i64>(1)? as u32))
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Rows in the journal (to show it stays small).
    pub fn rows(&self) -> Result<u64, JournalError> {
        self.lock()
            .query_row("SELECT COUNT(*) FROM files", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(key: &str, size: u64, mtime_ns: i64, closed: bool, at: i64) -> Seen {
        Seen {
            key: key.into(),
            size,
            mtime_ns,
            ctime_ns: mtime_ns,
            closed,
            not_before_ms: at,
        }
    }

    #[test]
    fn a_file_moves_through_its_states_and_leaves_no_row_when_done() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let j = WatchJournal::open(dir.path(), "/data", "s3://b/p")?;
        j.enqueue(&[seen("a", 1, 10, false, 0), seen("b", 2, 20, false, i64::MAX - 1)])?;
        let due = j.take_due(now_ms(), 10)?;
        assert_eq!(due.len(), 1, "b is not due yet");
        assert_eq!(due[0].key, "a");
        assert_eq!(j.state_of("a")?, Some((FileState::Uploading, 0)));
        // A change while it uploads: pending again after the upload.
        j.enqueue(&[seen("a", 5, 11, true, 0)])?;
        assert!(j.done("a", 1, false, 0)?, "changed while uploading");
        assert_eq!(j.state_of("a")?, Some((FileState::Pending, 0)));
        let due = j.take_due(now_ms(), 10)?;
        assert_eq!(due.len(), 1);
        assert!(!due[0].closed, "settles again: the dispatcher stats it afresh");
        assert!(!j.done("a", 5, false, 0)?);
        assert_eq!(j.state_of("a")?, None);
        // Failures: retried, then dead, then re-queued by `retry`.
        j.enqueue(&[seen("c", 3, 30, false, 0)])?;
        j.take_due(now_ms(), 10)?;
        assert_eq!(j.failed("c", "put", "AccessDenied", "no", Some(0))?, 1);
        j.wake_failed(now_ms())?;
        j.take_due(now_ms(), 10)?;
        assert_eq!(j.failed("c", "put", "AccessDenied", "no", None)?, 2);
        let st = j.status(10)?;
        assert_eq!(
            (st.counts.dead, st.counts.uploaded_files, st.counts.uploaded_bytes),
            (1, 2, 6)
        );
        assert_eq!(st.dead_letters[0].code, "AccessDenied");
        assert_eq!(st.recent_failures.len(), 2);
        assert_eq!(j.retry_dead(&[])?, 1);
        assert_eq!(j.state_of("c")?, Some((FileState::Pending, 0)));
        Ok(())
    }

    #[test]
    fn a_crash_leaves_uploads_to_redo_and_orphans_to_abort() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let j = WatchJournal::open(dir.path(), "/data", "s3://b/p")?;
            j.enqueue(&[seen("big", 1 << 30, 1, true, 0)])?;
            j.take_due(now_ms(), 1)?;
            j.set_upload("big", "p/big", "upload-1")?;
        }
        let j = WatchJournal::open(dir.path(), "/data", "s3://b/p")?;
        let orphans = j.recover()?;
        assert_eq!(
            orphans,
            vec![OrphanUpload {
                key: "big".into(),
                dst_key: "p/big".into(),
                upload_id: "upload-1".into()
            }]
        );
        assert_eq!(j.state_of("big")?, Some((FileState::Pending, 0)));
        let other = WatchJournal::open(dir.path(), "/other", "s3://b/p");
        assert!(other.is_err_and(|e| e.message.contains("belongs to the watch of root /data")));
        Ok(())
    }
}
