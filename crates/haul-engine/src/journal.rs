//! The durable journal of bucket-scale jobs: SQLite (WAL) in a state
//! directory. A job is identified by what it does (its endpoints, profiles,
//! sources, destination and every option that changes its plan); its shards
//! are recorded when it is planned and marked done as they finish.
//!
//! A job stays in the journal only while a run of it is unfinished: a run
//! that completes — whether or not some objects failed — closes it, so the
//! next run starts afresh and sees everything that is new. Re-running the
//! same command after a crash, a kill or Ctrl-C resumes: finished shards
//! are skipped, the others are re-planned from fresh listings (so nothing
//! half-done is trusted). `fresh` ignores (and replaces) a recorded job.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::db::{Create, Db, Schema};
use crate::shard::Shard;

pub use crate::db::JournalError;

/// The journal of one state directory.
#[derive(Debug)]
pub struct Journal {
    db: Db,
}

/// A shard of a job: its index, the shard, and whether it is done.
pub type ShardRow = (u32, Shard, bool);

/// A job as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobShards {
    /// The job's id ([`Journal::job_id`]).
    pub id: String,
    /// Shards with their index and whether they are done.
    pub shards: Vec<ShardRow>,
    /// Whether this is the continuation of an interrupted run.
    pub resumed: bool,
    /// When the job was planned (by the interrupted run, when resumed).
    pub started: SystemTime,
}

impl JobShards {
    /// A job outside any journal: every shard to do.
    pub fn unjournaled(shards: Vec<Shard>) -> Self {
        JobShards {
            id: String::new(),
            shards: shards
                .into_iter()
                .enumerate()
                .map(|(i, s)| (i as u32, s, false))
                .collect(),
            resumed: false,
            started: SystemTime::now(),
        }
    }

    /// How many shards are already done.
    pub fn done(&self) -> usize {
        self.shards.iter().filter(|s| s.2).count()
    }
}

pub use crate::state::default_state_dir;

/// Version 1: the jobs and their shards (also the schema of journals
/// written before versions were recorded, hence `IF NOT EXISTS`).
fn schema_v1(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS jobs (
             id TEXT PRIMARY KEY,
             description TEXT NOT NULL,
             started INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS shards (
             job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
             idx INTEGER NOT NULL,
             shard TEXT NOT NULL,
             done INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (job, idx)
         );",
    )
}

const SCHEMA: Schema = Schema {
    file: "haul.db",
    busy_timeout: Duration::from_secs(5),
    migrations: &[schema_v1],
};

impl Journal {
    /// Opens (creating) `haul.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        Ok(Journal {
            db: Db::open(dir, &SCHEMA, Create::IfMissing)?,
        })
    }

    /// The id of a job: a digest of what it does.
    pub fn job_id(description: &str) -> String {
        haul_store::checksum::md5_hex(description.as_bytes())
    }

    /// Resumes the unfinished job `id` — unless `fresh`, which forgets it —
    /// or records a new one with the shards `plan` returns (called only for
    /// a new job).
    pub async fn begin<F, Fut, E>(&self, id: &str, description: &str, fresh: bool, plan: F) -> Result<JobShards, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Shard>, E>>,
        E: From<JournalError>,
    {
        if fresh {
            self.finish(id)?;
        } else if let Some((shards, started)) = self.load(id)? {
            return Ok(JobShards {
                id: id.to_string(),
                shards,
                resumed: true,
                started,
            });
        }
        let planned = plan().await?;
        let started = SystemTime::now();
        self.record(id, description, started, &planned)?;
        Ok(JobShards {
            id: id.to_string(),
            started,
            ..JobShards::unjournaled(planned)
        })
    }

    /// Records a new plan of job `id`, replacing any other, in one transaction.
    fn record(&self, id: &str, description: &str, started: SystemTime, planned: &[Shard]) -> Result<(), JournalError> {
        let raw = planned
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db.err(e))?;
        let secs = started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.db.tx(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO jobs (id, description, started) VALUES (?1, ?2, ?3)",
                params![id, description, secs],
            )?;
            tx.execute("DELETE FROM shards WHERE job = ?1", params![id])?;
            let mut ins = tx.prepare("INSERT INTO shards (job, idx, shard) VALUES (?1, ?2, ?3)")?;
            for (i, s) in raw.iter().enumerate() {
                ins.execute(params![id, i as i64, s])?;
            }
            Ok(())
        })
    }

    #[allow(clippy::type_complexity)]
    fn load(&self, id: &str) -> Result<Option<(Vec<ShardRow>, SystemTime)>, JournalError> {
        let found = self.db.with(|conn| {
            let started: Option<i64> = conn
                .query_row("SELECT started FROM jobs WHERE id = ?1", params![id], |r| r.get(0))
                .optional()?;
            let Some(started) = started else {
                return Ok(None);
            };
            let rows = crate::db::rows_of(
                conn,
                "SELECT idx, shard, done FROM shards WHERE job = ?1 ORDER BY idx",
                params![id],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)),
            )?;
            Ok(Some((started, rows)))
        })?;
        let Some((started, rows)) = found else {
            return Ok(None);
        };
        let started = UNIX_EPOCH + Duration::from_secs(started.max(0) as u64);
        let mut out = Vec::with_capacity(rows.len());
        for (idx, raw, done) in rows {
            let shard: Shard =
                serde_json::from_str(&raw).map_err(|e| self.db.err(format!("corrupt shard row: {e}")))?;
            out.push((idx as u32, shard, done != 0));
        }
        Ok(Some((out, started)))
    }

    /// Records that a shard finished (its copies, and deletes when asked).
    pub fn shard_done(&self, id: &str, idx: u32) -> Result<(), JournalError> {
        self.db.with(|conn| {
            conn.execute(
                "UPDATE shards SET done = 1 WHERE job = ?1 AND idx = ?2",
                params![id, idx as i64],
            )
        })?;
        Ok(())
    }

    /// Forgets a job: its run completed (with or without failures), or it
    /// is replaced by a fresh one.
    pub fn finish(&self, id: &str) -> Result<(), JournalError> {
        self.db.with(|conn| {
            conn.execute("DELETE FROM shards WHERE job = ?1", params![id])?;
            conn.execute("DELETE FROM jobs WHERE id = ?1", params![id])
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn must_not_plan() -> JournalError {
        JournalError {
            path: String::new(),
            message: "must not plan again".into(),
        }
    }

    #[tokio::test]
    async fn resumes_unfinished_jobs_and_forgets_finished_ones() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let shards = vec![Shard::all(), Shard::prefix("a/")];
        let started = {
            let j = Journal::open(dir.path())?;
            let id = Journal::job_id("sync a b");
            let s = j
                .begin(&id, "sync a b", false, || async {
                    Ok::<_, JournalError>(shards.clone())
                })
                .await?;
            assert!(!s.resumed);
            assert_eq!(s.id, id);
            j.shard_done(&id, 1)?;
            s.started
        };
        // A new process: the job resumes with shard 1 done.
        let j = Journal::open(dir.path())?;
        let id = Journal::job_id("sync a b");
        let s = j
            .begin(&id, "sync a b", false, || async {
                Err::<Vec<Shard>, _>(must_not_plan())
            })
            .await?;
        assert!(s.resumed);
        assert_eq!(s.shards, vec![(0, Shard::all(), false), (1, shards[1].clone(), true)]);
        assert_eq!(s.done(), 1);
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        assert_eq!(secs(s.started), secs(started), "the start of the interrupted run");
        j.finish(&id)?;
        let s = j
            .begin(&id, "sync a b", false, || async {
                Ok::<_, JournalError>(vec![Shard::all()])
            })
            .await?;
        assert!(!s.resumed, "a finished job starts afresh");
        Ok(())
    }

    #[tokio::test]
    async fn fresh_replaces_an_unfinished_job() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let j = Journal::open(dir.path())?;
        let id = Journal::job_id("sync a b");
        j.begin(&id, "sync a b", false, || async {
            Ok::<_, JournalError>(vec![Shard::prefix("a/"), Shard::prefix("b/")])
        })
        .await?;
        j.shard_done(&id, 0)?;
        let s = j
            .begin(&id, "sync a b", true, || async {
                Ok::<_, JournalError>(vec![Shard::all()])
            })
            .await?;
        assert!(!s.resumed);
        assert_eq!(s.shards, vec![(0, Shard::all(), false)]);
        // The fresh plan replaced the old one: a later resume sees it.
        let s = j
            .begin(&id, "sync a b", false, || async {
                Err::<Vec<Shard>, _>(must_not_plan())
            })
            .await?;
        assert_eq!((s.resumed, s.shards.len(), s.done()), (true, 1, 0));
        Ok(())
    }

    #[test]
    fn a_journal_of_a_newer_haul_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        drop(Journal::open(dir.path())?);
        Connection::open(dir.path().join("haul.db"))?.pragma_update(None, "user_version", 7)?;
        let e = Journal::open(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("haul.db"), "{e}");
        assert!(
            e.contains("written by a newer haul (schema version 7; this haul knows up to 1)"),
            "{e}"
        );
        Ok(())
    }
}
