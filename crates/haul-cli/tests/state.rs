//! What haul keeps and reads on the side: state private to the user, no
//! shared fallback, and key lists read as the run goes (issue 12, item 5).

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

/// The resume journal lives in a folder only the user can enter, in a file
/// only the user can read.
#[test]
fn the_state_dir_and_journal_are_private() -> TestResult {
    let t = tempfile::tempdir()?;
    let (src, dst, state) = (t.path().join("src"), t.path().join("dst"), t.path().join("new/state"));
    write(&src.join("a.txt"), b"a")?;
    let out = haul()
        .env("HAUL_STATE_DIR", &state)
        .args(["sync", &src.to_string_lossy(), &dst.to_string_lossy()])
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(&state)?, 0o700, "state dir");
    assert_eq!(mode(&t.path().join("new"))?, 0o700, "created parents too");
    assert_eq!(mode(&state.join("haul.db"))?, 0o600, "journal");
    Ok(())
}

/// Without --state-dir, HAUL_STATE_DIR or XDG_STATE_HOME the journal goes
/// to `~/.local/state/haul` — never to a shared `/tmp/haul-state` another
/// user could have prepared (the unit tests cover a missing home: an error
/// naming `--state-dir`).
#[test]
fn the_default_state_dir_is_in_the_home() -> TestResult {
    let t = tempfile::tempdir()?;
    let (src, dst, home) = (t.path().join("src"), t.path().join("dst"), t.path().join("home"));
    write(&src.join("a.txt"), b"a")?;
    std::fs::create_dir(&home)?;
    let out = haul()
        .env_remove("HAUL_STATE_DIR")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", &home)
        .args(["sync", &src.to_string_lossy(), &dst.to_string_lossy()])
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let db = home.join(".local/state/haul/haul.db");
    assert_eq!(std::fs::metadata(&db)?.permissions().mode() & 0o777, 0o600);
    Ok(())
}

/// `--files-from` was read whole before anything was copied; now keys are
/// copied as the list is read: through a FIFO, the first key lands while
/// the writer still holds the list open.
#[test]
fn a_key_list_is_read_as_the_run_goes() -> TestResult {
    let t = tempfile::tempdir()?;
    let (src, dst, fifo) = (t.path().join("src"), t.path().join("dst"), t.path().join("keys"));
    write(&src.join("a.txt"), b"first")?;
    write(&src.join("b.txt"), b"second")?;
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    assert!(made.success(), "mkfifo");
    let mut child = haul()
        .args([
            "sync",
            "--files-from",
            &fifo.to_string_lossy(),
            &src.to_string_lossy(),
            &dst.to_string_lossy(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut list = std::fs::OpenOptions::new().write(true).open(&fifo)?;
    list.write_all(b"a.txt\n")?;
    list.flush()?;
    let t0 = Instant::now();
    let mut streamed = false;
    while t0.elapsed() < Duration::from_secs(20) {
        if std::fs::read(dst.join("a.txt")).is_ok_and(|b| b == b"first") {
            streamed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    list.write_all(b"\nb.txt\n")?;
    drop(list);
    let status = child.wait()?;
    assert!(streamed, "the first key was not copied before the list ended");
    assert!(status.success());
    assert_eq!(std::fs::read(dst.join("b.txt"))?, b"second");
    Ok(())
}
