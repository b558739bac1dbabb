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

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::shard::Shard;

/// A journal that cannot be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {message}")]
pub struct JournalError {
    pub path: String,
    pub message: String,
}

/// The journal of one state directory.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    conn: Mutex<Connection>,
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

impl Journal {
    /// Opens (creating) `haul.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let path = dir.join("haul.db");
        let err = |m: String| JournalError {
            path: path.display().to_string(),
            message: m,
        };
        crate::state::create_private_dir(dir).map_err(|e| err(format!("cannot create the state directory: {e}")))?;
        crate::state::create_private_file(&path).map_err(|e| err(format!("cannot create the journal: {e}")))?;
        let conn = Connection::open(&path).map_err(|e| err(e.to_string()))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS jobs (
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
        .map_err(|e| err(e.to_string()))?;
        Ok(Journal {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> JournalError {
        JournalError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
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
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let secs = started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        tx.execute(
            "INSERT OR REPLACE INTO jobs (id, description, started) VALUES (?1, ?2, ?3)",
            params![id, description, secs],
        )
        .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM shards WHERE job = ?1", params![id])
            .map_err(|e| self.err(e))?;
        {
            let mut ins = tx
                .prepare("INSERT INTO shards (job, idx, shard) VALUES (?1, ?2, ?3)")
                .map_err(|e| self.err(e))?;
            for (i, s) in planned.iter().enumerate() {
                let raw = serde_json::to_string(s).map_err(|e| self.err(e))?;
                ins.execute(params![id, i as i64, raw]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(JobShards {
            id: id.to_string(),
            started,
            ..JobShards::unjournaled(planned)
        })
    }

    #[allow(clippy::type_complexity)]
    fn load(&self, id: &str) -> Result<Option<(Vec<ShardRow>, SystemTime)>, JournalError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let started: Option<i64> = conn
            .query_row("SELECT started FROM jobs WHERE id = ?1", params![id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(started) = started else {
            return Ok(None);
        };
        let started = UNIX_EPOCH + Duration::from_secs(started.max(0) as u64);
        let mut q = conn
            .prepare("SELECT idx, shard, done FROM shards WHERE job = ?1 ORDER BY idx")
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map(params![id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (idx, raw, done) = row.map_err(|e| self.err(e))?;
            let shard: Shard = serde_json::from_str(&raw).map_err(|e| self.err(format!("corrupt shard row: {e}")))?;
            out.push((idx as u32, shard, done != 0));
        }
        Ok(Some((out, started)))
    }

    /// Records that a shard finished (its copies, and deletes when asked).
    pub fn shard_done(&self, id: &str, idx: u32) -> Result<(), JournalError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute(
            "UPDATE shards SET done = 1 WHERE job = ?1 AND idx = ?2",
            params![id, idx as i64],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets a job: its run completed (with or without failures), or it
    /// is replaced by a fresh one.
    pub fn finish(&self, id: &str) -> Result<(), JournalError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute("DELETE FROM shards WHERE job = ?1", params![id])
            .map_err(|e| self.err(e))?;
        conn.execute("DELETE FROM jobs WHERE id = ?1", params![id])
            .map_err(|e| self.err(e))?;
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
}
