//! Failed attempts, the failures kept for `status`, and the dead letters
//! (out of attempts, or kept by `--if-exists skip`) that `haul watch retry`
//! re-queues.

use rusqlite::{params, OptionalExtension};

use super::{bump, now_ms, FileState, WatchJournal};
use crate::journal::JournalError;

/// Failures kept for `status` (the log has them all).
const KEPT_FAILURES: i64 = 1000;

impl WatchJournal {
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
        let (state, next) = match retry_at_ms {
            Some(t) => (FileState::Failed as i64, t),
            None => (FileState::Dead as i64, i64::MAX),
        };
        self.db.tx(|tx| {
            tx.execute(
                "UPDATE files SET state = ?2, attempts = attempts + 1, not_before = ?3, last_error = ?4,
                 dirty = 0, upload_key = NULL, upload_id = NULL WHERE path = ?1",
                params![key, state, next, format!("{op}: {code}: {message}")],
            )?;
            let attempts: u32 = tx
                .query_row("SELECT attempts FROM files WHERE path = ?1", params![key], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()?
                .unwrap_or(1) as u32;
            tx.execute(
                "INSERT INTO failures (at, path, op, code, message, attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![now, key, op, code, message, attempts as i64],
            )?;
            tx.execute(
                "DELETE FROM failures WHERE id <= (SELECT MAX(id) FROM failures) - ?1",
                params![KEPT_FAILURES],
            )?;
            Ok(attempts)
        })
    }

    /// A file not uploaded because its key exists (`--if-exists skip`): a
    /// dead letter with `code`, kept until it changes or is retried, and counted.
    pub fn skipped_exists(&self, key: &str, message: &str) -> Result<(), JournalError> {
        self.failed(key, "put", "AlreadyExists", message, None)?;
        self.db.with(|conn| bump(conn, "skipped_exists", 1))
    }

    /// Re-queues dead letters (all, or those given) with fresh attempts.
    pub fn retry_dead(&self, keys: &[String]) -> Result<u64, JournalError> {
        let now = now_ms();
        let n = self.db.with(|conn| {
            if keys.is_empty() {
                return conn.execute(
                    "UPDATE files SET state = 0, attempts = 0, not_before = ?1 WHERE state = 3",
                    params![now],
                );
            }
            let mut n = 0;
            for k in keys {
                n += conn.execute(
                    "UPDATE files SET state = 0, attempts = 0, not_before = ?2 WHERE state = 3 AND path = ?1",
                    params![k, now],
                )?;
            }
            Ok(n)
        })?;
        Ok(n as u64)
    }
}
