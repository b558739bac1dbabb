//! The queue: files recorded by scans and events, taken when due, and
//! their transitions (uploading, done, back to pending, gone), with the
//! recovery after a crash.

use rusqlite::{params, OptionalExtension};

use super::{bump, now_ms, Due, OrphanUpload, Seen, WatchJournal};
use crate::db::rows_of;
use crate::journal::JournalError;

/// Records a file seen (an upsert). In an UPDATE, every expression reads
/// the row's old values.
const ENQUEUE: &str = "INSERT INTO files (path, state, size, mtime_ns, ctime_ns, closed, not_before, first_seen)
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
                                       WHEN excluded.ctime_ns = 0 THEN ctime_ns ELSE excluded.ctime_ns END";

impl WatchJournal {
    /// After a crash: files left `uploading` become `pending` again (they
    /// are uploaded again), and their unfinished multipart uploads are
    /// returned to be aborted.
    pub fn recover(&self) -> Result<Vec<OrphanUpload>, JournalError> {
        self.db.tx(|tx| {
            let orphans = rows_of(
                tx,
                "SELECT path, upload_key, upload_id FROM files WHERE upload_id IS NOT NULL",
                [],
                |r| {
                    Ok(OrphanUpload {
                        key: r.get(0)?,
                        dst_key: r.get(1)?,
                        upload_id: r.get(2)?,
                    })
                },
            )?;
            tx.execute(
                "UPDATE files SET state = 0, not_before = ?1, dirty = 0 WHERE state = 1",
                params![now_ms()],
            )?;
            Ok(orphans)
        })
    }

    /// Forgets a multipart upload once aborted.
    pub fn clear_upload(&self, key: &str) -> Result<(), JournalError> {
        self.db.with(|conn| {
            conn.execute(
                "UPDATE files SET upload_key = NULL, upload_id = NULL WHERE path = ?1",
                params![key],
            )
        })?;
        Ok(())
    }

    /// Files whose retry time has not come yet are retried now (`--once`:
    /// each run retries the leftovers of the previous one).
    pub fn retry_failed_now(&self) -> Result<u64, JournalError> {
        let n = self.db.with(|conn| {
            conn.execute(
                "UPDATE files SET state = 0, not_before = ?1 WHERE state = 2",
                params![now_ms()],
            )
        })?;
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
        self.db.tx(|tx| {
            let mut up = tx.prepare_cached(ENQUEUE)?;
            for s in batch {
                up.execute(params![
                    s.key,
                    s.size as i64,
                    s.mtime_ns,
                    i64::from(s.closed),
                    s.not_before_ms,
                    now,
                    s.ctime_ns
                ])?;
            }
            Ok(())
        })
    }

    /// Takes up to `limit` pending files whose time has come, oldest first,
    /// and marks them `uploading`.
    pub fn take_due(&self, now: i64, limit: usize) -> Result<Vec<Due>, JournalError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.db.tx(|tx| {
            let due = rows_of(
                tx,
                "SELECT path, size, mtime_ns, closed, attempts, ctime_ns FROM files
                 WHERE state = 0 AND not_before <= ?1 ORDER BY not_before LIMIT ?2",
                params![now, limit as i64],
                |r| {
                    Ok(Due {
                        key: r.get(0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        mtime_ns: r.get(2)?,
                        ctime_ns: r.get(5)?,
                        closed: r.get::<_, i64>(3)? != 0,
                        attempts: r.get::<_, i64>(4)? as u32,
                    })
                },
            )?;
            let mut mark = tx.prepare_cached("UPDATE files SET state = 1, dirty = 0 WHERE path = ?1")?;
            for d in &due {
                mark.execute(params![d.key])?;
            }
            Ok(due)
        })
    }

    /// When the next pending file is due (unix ms).
    pub fn next_due(&self) -> Result<Option<i64>, JournalError> {
        self.db
            .with(|conn| conn.query_row("SELECT MIN(not_before) FROM files WHERE state = 0", [], |r| r.get(0)))
    }

    /// The size and mtime of a file as it is uploaded (so a change seen
    /// while it uploads marks it to be uploaded again).
    pub fn started(&self, key: &str, size: u64, mtime_ns: i64, ctime_ns: i64) -> Result<(), JournalError> {
        self.db.with(|conn| {
            conn.execute(
                "UPDATE files SET size = ?2, mtime_ns = ?3, ctime_ns = ?4 WHERE path = ?1",
                params![key, size as i64, mtime_ns, ctime_ns],
            )
        })?;
        Ok(())
    }

    /// Records a multipart upload in flight for `key`.
    pub fn set_upload(&self, key: &str, dst_key: &str, upload_id: &str) -> Result<(), JournalError> {
        self.db.with(|conn| {
            conn.execute(
                "UPDATE files SET upload_key = ?2, upload_id = ?3 WHERE path = ?1",
                params![key, dst_key, upload_id],
            )
        })?;
        Ok(())
    }

    /// A verified upload (and the deletion of the local file, if asked).
    /// The row goes, unless the file changed while it uploaded: then it is
    /// pending again (returns true).
    pub fn done(&self, key: &str, bytes: u64, deleted: bool, settle_until_ms: i64) -> Result<bool, JournalError> {
        self.db.tx(|tx| {
            let dirty: bool = tx
                .query_row("SELECT dirty FROM files WHERE path = ?1", params![key], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()?
                .is_some_and(|d| d != 0);
            if dirty && !deleted {
                tx.execute(
                    "UPDATE files SET state = 0, dirty = 0, closed = 0, attempts = 0, not_before = ?2,
                     upload_key = NULL, upload_id = NULL WHERE path = ?1",
                    params![key, settle_until_ms],
                )?;
            } else {
                tx.execute("DELETE FROM files WHERE path = ?1", params![key])?;
            }
            bump(tx, "uploaded_files", 1)?;
            bump(tx, "uploaded_bytes", bytes as i64)?;
            if deleted {
                bump(tx, "deleted_files", 1)?;
            }
            Ok(dirty && !deleted)
        })
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
        self.db.with(|conn| {
            conn.execute(
                "UPDATE files SET state = 0, closed = 0, dirty = 0, size = ?2, mtime_ns = ?3, ctime_ns = ?5,
                 not_before = ?4, upload_key = NULL, upload_id = NULL WHERE path = ?1",
                params![key, size as i64, mtime_ns, not_before_ms, ctime_ns],
            )
        })?;
        Ok(())
    }

    /// Puts files taken for upload back to pending, due now (shutdown).
    pub fn release(&self, key: &str) -> Result<(), JournalError> {
        self.db.with(|conn| {
            conn.execute(
                "UPDATE files SET state = 0, not_before = ?2 WHERE path = ?1 AND state = 1",
                params![key, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Records a symbolic link found in the tree; true the first time this
    /// path is seen (to log it once and count it once).
    pub fn symlink_seen(&self, path: &str) -> Result<bool, JournalError> {
        self.db.tx(|tx| {
            let new = tx.execute(
                "INSERT OR IGNORE INTO symlinks (path, first_seen) VALUES (?1, ?2)",
                params![path, now_ms()],
            )? > 0;
            if new {
                bump(tx, "skipped_symlinks", 1)?;
            }
            Ok(new)
        })
    }

    /// Forgets a file that is gone from the tree.
    pub fn forget(&self, key: &str) -> Result<(), JournalError> {
        self.db
            .with(|conn| conn.execute("DELETE FROM files WHERE path = ?1", params![key]))?;
        Ok(())
    }

    /// Failed files whose retry time has come are pending again.
    pub fn wake_failed(&self, now: i64) -> Result<(), JournalError> {
        self.db.with(|conn| {
            conn.execute(
                "UPDATE files SET state = 0 WHERE state = 2 AND not_before <= ?1",
                params![now],
            )
        })?;
        Ok(())
    }

    /// When the next failed file is to be retried (unix ms).
    pub fn next_retry(&self) -> Result<Option<i64>, JournalError> {
        self.db
            .with(|conn| conn.query_row("SELECT MIN(not_before) FROM files WHERE state = 2", [], |r| r.get(0)))
    }
}
