//! The watch journal's tables, its migrations, and the binding of a state
//! directory to one tree and one destination.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::WatchJournal;
use crate::db::{Create, Db, Schema};
use crate::journal::JournalError;

/// Columns added after the first release, for journals created before.
const ADDED_COLUMNS: &[(&str, &str)] = &[("ctime_ns", "INTEGER NOT NULL DEFAULT 0")];

/// Version 1: the tables as released before versions were recorded
/// (`IF NOT EXISTS`, and `ctime_ns` added when missing, so such a journal
/// opens as it did).
fn schema_v1(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
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
         CREATE TABLE IF NOT EXISTS symlinks (path TEXT PRIMARY KEY, first_seen INTEGER NOT NULL);",
    )?;
    for (col, def) in ADDED_COLUMNS {
        let has = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('files') WHERE name = ?1",
            params![col],
            |r| r.get::<_, i64>(0),
        )? > 0;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE files ADD COLUMN {col} {def}"))?;
        }
    }
    Ok(())
}

const SCHEMA: Schema = Schema {
    file: "watch.db",
    busy_timeout: Duration::from_secs(10),
    migrations: &[schema_v1],
};

impl WatchJournal {
    /// Opens (creating) the journal in `dir` for watching `root` into
    /// `destination`. A state directory belongs to one pair: another pair is
    /// refused, so two watches never share (and corrupt) one backlog.
    pub fn open(dir: &Path, root: &str, destination: &str) -> Result<Self, JournalError> {
        let j = WatchJournal {
            db: Db::open(dir, &SCHEMA, Create::IfMissing)?,
        };
        j.bind(root, destination)?;
        Ok(j)
    }

    /// Opens an existing journal (for `status` and `retry`).
    pub fn open_existing(dir: &Path) -> Result<Self, JournalError> {
        let missing = "no watch journal here (has `haul watch` run with this --state-dir?)";
        Ok(WatchJournal {
            db: Db::open(dir, &SCHEMA, Create::Never { missing })?,
        })
    }

    /// Records the tree and destination of a new journal; refuses another pair.
    fn bind(&self, root: &str, destination: &str) -> Result<(), JournalError> {
        let conn = self.db.lock();
        for (k, v) in [("root", root), ("destination", destination)] {
            let have: Option<String> = conn
                .query_row("SELECT v FROM meta WHERE k = ?1", params![k], |r| r.get(0))
                .optional()
                .map_err(|e| self.db.err(e))?;
            match have {
                Some(h) if h != v => {
                    return Err(self.db.err(format!(
                        "this state directory belongs to the watch of {k} {h}, not {v}: use another --state-dir"
                    )))
                }
                Some(_) => {}
                None => {
                    conn.execute("INSERT INTO meta (k, v) VALUES (?1, ?2)", params![k, v])
                        .map_err(|e| self.db.err(e))?;
                }
            }
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }
}
