//! The one SQLite helper of haul's journals (the sync resume journal
//! `haul.db`, the watch journal `watch.db`): a database in a state
//! directory only the user can enter (0700), in a file only the user can
//! read (0600, and so its `-wal` and `-shm` files), in WAL mode with a busy
//! timeout, at a schema version kept in `PRAGMA user_version`.
//!
//! A schema is a list of migrations: the n-th takes the database from
//! version n to n + 1, in one transaction that re-reads the version, so two
//! processes opening one file at once migrate it once. A database written
//! by a newer haul (a version beyond the list) is refused with a clear
//! message rather than misread. The first migration of a journal that
//! existed before versions were recorded must accept such a database
//! (version 0, tables present): `CREATE … IF NOT EXISTS`, columns added
//! only when missing.
//!
//! The connection sits behind a mutex: a journal is shared by the tasks of
//! one process, each statement is short, and every SQLite error becomes a
//! [`JournalError`] naming the file.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// A journal that cannot be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {message}")]
pub struct JournalError {
    pub path: String,
    pub message: String,
}

/// One step of a schema: from its version to the next.
pub(crate) type Migration = fn(&Connection) -> rusqlite::Result<()>;

/// What a journal's database is: its file name and schema.
pub(crate) struct Schema {
    /// The file in the state directory (`haul.db`, `watch.db`).
    pub file: &'static str,
    /// How long a statement waits for another process's lock.
    pub busy_timeout: Duration,
    /// `migrations[n]` takes the database from version n to n + 1.
    pub migrations: &'static [Migration],
}

impl Schema {
    /// The version this haul writes.
    pub fn version(&self) -> u32 {
        self.migrations.len() as u32
    }
}

/// Whether [`Db::open`] may create the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Create the state directory and the file when missing.
    IfMissing,
    /// Open an existing database only; `missing` is the message otherwise.
    Never { missing: &'static str },
}

/// An open journal database.
#[derive(Debug)]
pub(crate) struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Db {
    /// Opens (or, with [`Create::IfMissing`], creates) `schema.file` in
    /// `dir` and brings it to the schema's version.
    pub fn open(dir: &Path, schema: &Schema, create: Create) -> Result<Self, JournalError> {
        let path = dir.join(schema.file);
        let err = |m: String| JournalError {
            path: path.display().to_string(),
            message: m,
        };
        match create {
            Create::IfMissing => {
                crate::state::create_private_dir(dir)
                    .map_err(|e| err(format!("cannot create the state directory: {e}")))?;
                crate::state::create_private_file(&path).map_err(|e| err(format!("cannot create the journal: {e}")))?;
            }
            Create::Never { missing } => {
                if !path.exists() {
                    return Err(err(missing.to_string()));
                }
            }
        }
        let conn = Connection::open(&path).map_err(|e| err(e.to_string()))?;
        conn.busy_timeout(schema.busy_timeout).map_err(|e| err(e.to_string()))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(|e| err(e.to_string()))?;
        migrate(&conn, schema).map_err(err)?;
        Ok(Db {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The error `e` met on this database.
    pub fn err(&self, e: impl Display) -> JournalError {
        JournalError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// The connection (a panic elsewhere does not poison the journal: each
    /// change is a statement or a transaction, whole or not at all).
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the connection.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, JournalError> {
        f(&self.lock()).map_err(|e| self.err(e))
    }

    /// Runs `f` in a transaction, committed when `f` succeeds (rolled back
    /// otherwise). The write lock is taken at its start, so a transaction
    /// that reads then writes waits for another process's writer (busy
    /// timeout) instead of failing on a stale snapshot.
    pub fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T, JournalError> {
        let mut conn = self.lock();
        let run = || {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run().map_err(|e: rusqlite::Error| self.err(e))
    }
}

/// Runs `sql` (a cached statement) and collects its rows.
pub(crate) fn rows_of<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut q = conn.prepare_cached(sql)?;
    let rows = q.query_map(params, f)?;
    rows.collect()
}

/// Brings the database to the schema's version, or refuses a newer one.
fn migrate(conn: &Connection, schema: &Schema) -> Result<(), String> {
    let want = schema.version();
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0));
    let newer = |have: u32| {
        format!(
            "written by a newer haul (schema version {have}; this haul knows up to {want}): \
             upgrade haul, or use another --state-dir"
        )
    };
    let have = version(conn).map_err(|e| e.to_string())?;
    if have > want {
        return Err(newer(have));
    }
    if have == want {
        return Ok(());
    }
    // Another process may be migrating: take the write lock, then look again.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
    let have = version(&tx).map_err(|e| e.to_string())?;
    if have > want {
        return Err(newer(have));
    }
    for (n, step) in schema.migrations.iter().enumerate().skip(have as usize) {
        step(&tx).map_err(|e| format!("cannot migrate the schema to version {}: {e}", n + 1))?;
    }
    tx.pragma_update(None, "user_version", want)
        .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn v1(c: &Connection) -> rusqlite::Result<()> {
        c.execute_batch("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    }

    fn v2(c: &Connection) -> rusqlite::Result<()> {
        c.execute_batch("ALTER TABLE t ADD COLUMN note TEXT")
    }

    const V1: Schema = Schema {
        file: "t.db",
        busy_timeout: Duration::from_secs(10),
        migrations: &[v1],
    };

    const V2: Schema = Schema {
        file: "t.db",
        busy_timeout: Duration::from_secs(10),
        migrations: &[v1, v2],
    };

    #[test]
    fn the_state_dir_and_the_database_are_private() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let dir = t.path().join("state/haul");
        let db = Db::open(&dir, &V1, Create::IfMissing)?;
        db.with(|c| c.execute("INSERT INTO t (k, n) VALUES ('a', 1)", []))?;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&dir)?, 0o700);
        assert_eq!(mode(&t.path().join("state"))?, 0o700);
        assert_eq!(mode(db.path())?, 0o600);
        for side in ["t.db-wal", "t.db-shm"] {
            assert_eq!(mode(&dir.join(side))?, 0o600, "{side}");
        }
        let journal_mode: String = db.with(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))?;
        assert_eq!(journal_mode, "wal");
        Ok(())
    }

    #[test]
    fn an_existing_database_only_is_not_created() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let e = Db::open(
            t.path(),
            &V1,
            Create::Never {
                missing: "no journal here",
            },
        )
        .err();
        assert_eq!(e.map(|e| e.message), Some("no journal here".to_string()));
        assert!(!t.path().join("t.db").exists());
        Ok(())
    }

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        {
            let db = Db::open(t.path(), &V1, Create::IfMissing)?;
            db.with(|c| c.execute("INSERT INTO t (k, n) VALUES ('a', 1)", []))?;
        }
        // An upgrade keeps the rows and adds the column.
        let db = Db::open(t.path(), &V2, Create::IfMissing)?;
        let (n, note): (i64, Option<String>) = db.with(|c| {
            c.query_row("SELECT n, note FROM t WHERE k = 'a'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })?;
        assert_eq!((n, note), (1, None));
        assert_eq!(
            db.with(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0)))?,
            2
        );
        drop(db);
        // Opened again at version 2: no migration runs (v2 would fail twice).
        Db::open(t.path(), &V2, Create::IfMissing)?;
        // The older haul refuses it, naming the file and what to do.
        let e = Db::open(t.path(), &V1, Create::IfMissing).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("t.db"), "{e}");
        assert!(
            e.contains("written by a newer haul (schema version 2; this haul knows up to 1)"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn a_failed_transaction_leaves_nothing() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let db = Db::open(t.path(), &V1, Create::IfMissing)?;
        let e = db.tx(|tx| {
            tx.execute("INSERT INTO t (k, n) VALUES ('a', 1)", [])?;
            tx.execute("INSERT INTO t (k, n) VALUES ('a', 2)", [])
        });
        assert!(e.is_err_and(|e| e.message.contains("UNIQUE")));
        assert_eq!(
            db.with(|c| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0)))?,
            0
        );
        Ok(())
    }

    #[test]
    fn two_handles_of_one_file_read_and_write_at_once() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let dir = t.path().to_path_buf();
        Db::open(&dir, &V1, Create::IfMissing)?.with(|c| c.execute("INSERT INTO t (k, n) VALUES ('c', 0)", []))?;
        // Two processes' worth of connections, each reading then writing in
        // its transactions: every increment lands, none fails.
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || -> Result<(), JournalError> {
                    let db = Db::open(&dir, &V2, Create::IfMissing)?;
                    for _ in 0..1000 {
                        db.tx(|tx| {
                            let n: i64 = tx.query_row("SELECT n FROM t WHERE k = 'c'", [], |r| r.get(0))?;
                            tx.execute("UPDATE t SET n = ?1 WHERE k = 'c'", [n + 1])?;
                            Ok(())
                        })?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a worker panicked")??;
        }
        let db = Db::open(&dir, &V2, Create::IfMissing)?;
        assert_eq!(
            db.with(|c| c.query_row("SELECT n FROM t WHERE k = 'c'", [], |r| r.get::<_, i64>(0)))?,
            2000
        );
        Ok(())
    }
}
