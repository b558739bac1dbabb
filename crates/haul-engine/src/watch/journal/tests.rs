//! The journal's transitions, end to end.

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

#[test]
fn a_journal_from_before_schema_versions_opens_with_its_backlog() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    {
        // The first release's tables: no `ctime_ns`, no `user_version`.
        let c = Connection::open(dir.path().join("watch.db"))?;
        c.execute_batch(
            "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
             INSERT INTO meta (k, v) VALUES ('root', '/data'), ('destination', 's3://b/p');
             CREATE TABLE files (
                 path TEXT PRIMARY KEY, state INTEGER NOT NULL, size INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL, closed INTEGER NOT NULL DEFAULT 0,
                 dirty INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
                 not_before INTEGER NOT NULL, first_seen INTEGER NOT NULL,
                 last_error TEXT, upload_key TEXT, upload_id TEXT);
             INSERT INTO files (path, state, size, mtime_ns, attempts, not_before, first_seen)
                 VALUES ('old', 2, 7, 70, 3, 0, 0);",
        )?;
    }
    let j = WatchJournal::open(dir.path(), "/data", "s3://b/p")?;
    assert_eq!(j.state_of("old")?, Some((FileState::Failed, 3)));
    j.wake_failed(now_ms())?;
    let due = j.take_due(now_ms(), 10)?;
    assert_eq!(
        due,
        vec![Due {
            key: "old".into(),
            size: 7,
            mtime_ns: 70,
            ctime_ns: 0,
            closed: false,
            attempts: 3
        }]
    );
    assert!(!j.done("old", 7, false, 0)?);
    assert_eq!(j.status(5)?.counts.uploaded_files, 1);
    Ok(())
}

#[test]
fn a_journal_of_a_newer_haul_is_refused() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    drop(WatchJournal::open(dir.path(), "/data", "s3://b/p")?);
    Connection::open(dir.path().join("watch.db"))?.pragma_update(None, "user_version", 99)?;
    for e in [
        WatchJournal::open(dir.path(), "/data", "s3://b/p").err(),
        WatchJournal::open_existing(dir.path()).err(),
    ] {
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("watch.db"), "{e}");
        assert!(
            e.contains("written by a newer haul (schema version 99; this haul knows up to 1)"),
            "{e}"
        );
    }
    Ok(())
}
