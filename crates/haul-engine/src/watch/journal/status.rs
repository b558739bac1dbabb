//! What the journal tells about a watch: counts, the status `haul watch
//! status` shows, and one file's state.

use rusqlite::{params, OptionalExtension};

use super::{Counts, FailureRow, FileState, WatchJournal, WatchStatus};
use crate::db::rows_of;
use crate::journal::JournalError;

impl WatchJournal {
    /// Counts by state and the counters.
    pub fn counts(&self) -> Result<Counts, JournalError> {
        let (by_state, counters) = self.db.with(|conn| {
            let by_state = rows_of(conn, "SELECT state, COUNT(*) FROM files GROUP BY state", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            let counters = rows_of(conn, "SELECT name, value FROM counters", [], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            Ok((by_state, counters))
        })?;
        let mut c = Counts::default();
        for (state, n) in by_state {
            match FileState::from_i64(state) {
                FileState::Pending => c.pending = n,
                FileState::Uploading => c.uploading = n,
                FileState::Failed => c.failed = n,
                FileState::Dead => c.dead = n,
            }
        }
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
        let counts = self.counts()?;
        self.db.with(|conn| {
            let meta = |k: &str| -> rusqlite::Result<String> {
                conn.query_row("SELECT v FROM meta WHERE k = ?1", params![k], |r| r.get(0))
                    .optional()
                    .map(Option::unwrap_or_default)
            };
            let (root, destination) = (meta("root")?, meta("destination")?);
            let oldest_pending = conn
                .query_row(
                    "SELECT path, first_seen FROM files WHERE state != 3 ORDER BY first_seen LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            let recent_failures = rows_of(
                conn,
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
            let dead_letters = rows_of(
                conn,
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
                counts,
                oldest_pending,
                recent_failures,
                dead_letters,
            })
        })
    }

    /// The state of one file, if it has a row (tests and diagnostics).
    pub fn state_of(&self, key: &str) -> Result<Option<(FileState, u32)>, JournalError> {
        self.db.with(|conn| {
            conn.query_row("SELECT state, attempts FROM files WHERE path = ?1", params![key], |r| {
                Ok((FileState::from_i64(r.get(0)?), r.get::<_, i64>(1)? as u32))
            })
            .optional()
        })
    }

    /// Rows in the journal (to show it stays small).
    pub fn rows(&self) -> Result<u64, JournalError> {
        self.db
            .with(|conn| conn.query_row("SELECT COUNT(*) FROM files", [], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
    }
}
