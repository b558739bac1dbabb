//! `--queue`, `haul worker` and `haul job` as processes on a real NATS
//! server: a sync coordinated over two worker processes ends like a local
//! one and verifies; Ctrl-C makes each worker leave with exit 0; the job
//! shows DONE; a cancelled job is CANCELLED, its coordinator stops and a
//! worker serving only it leaves.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn tree(dir: &std::path::Path, folders: usize) -> std::io::Result<()> {
    for f in 0..folders {
        for i in 0..5 {
            write(
                &dir.join(format!("d{f:02}/{i}.txt")),
                format!("{f}/{i}").repeat(i + 1).as_bytes(),
            )?;
        }
    }
    Ok(())
}

fn worker(url: &str) -> std::io::Result<Child> {
    haul()
        .args(["worker", "--queue", url, "-j", "2", "--grace", "5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// SIGINT, then the exit code within `limit`.
fn interrupt(child: &mut Child, limit: Duration) -> Result<Option<i32>, Box<dyn std::error::Error>> {
    Command::new("kill").args(["-INT", &child.id().to_string()]).status()?;
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait()? {
            return Ok(st.code());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    Ok(None)
}

#[test]
fn a_sync_on_two_worker_processes_verifies_and_the_workers_leave_on_ctrl_c() -> TestResult {
    let nats = haul_testkit::nats();
    let t = tempfile::tempdir()?;
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    tree(&src, 12)?;
    let mut workers = [worker(&nats.url)?, worker(&nats.url)?];
    let (s, d) = (src.to_string_lossy().to_string(), dst.to_string_lossy().to_string());
    let out = haul()
        .args([
            "sync",
            &s,
            &d,
            "--queue",
            &nats.url,
            "--job-id",
            "cli-sync",
            "--no-journal",
        ])
        .output()?;
    let codes: Vec<_> = workers
        .iter_mut()
        .map(|w| interrupt(w, Duration::from_secs(10)))
        .collect::<Result<_, _>>()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("job cli-sync:") && err.contains("units"), "{err}");
    assert_eq!(codes, vec![Some(0), Some(0)], "workers leave with 0 on Ctrl-C");
    ok(&["verify", &s, &d])?;

    let status = ok(&["job", "status", "cli-sync", "--queue", &nats.url, "--json"])?;
    let v: Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(
        (v["phase"].as_str(), v["pending"].as_u64()),
        (Some("DONE"), Some(0)),
        "{v}"
    );
    let list = ok(&["job", "list", "--queue", &nats.url])?;
    assert!(String::from_utf8(list.stdout)?.contains("cli-sync\tsync\tDone"));
    // The same command again: the job is over, said clearly.
    let again = haul()
        .args([
            "sync",
            &s,
            &d,
            "--queue",
            &nats.url,
            "--job-id",
            "cli-sync",
            "--no-journal",
        ])
        .output()?;
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already Done"), "{}", stderr(&again));
    Ok(())
}

#[test]
fn a_cancelled_job_stops_its_coordinator_and_no_worker_takes_it() -> TestResult {
    let nats = haul_testkit::nats();
    let t = tempfile::tempdir()?;
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    tree(&src, 4)?;
    // No worker yet: the coordinator waits for results.
    let mut coordinator = haul()
        .args([
            "sync",
            &src.to_string_lossy(),
            &dst.to_string_lossy(),
            "--queue",
            &nats.url,
            "--job-id",
            "to-cancel",
            "--no-journal",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    loop {
        let st = run(&["job", "status", "to-cancel", "--queue", &nats.url, "--json"])?;
        if st.status.success() && String::from_utf8_lossy(&st.stdout).contains("WRITE") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the job never reached WRITE");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&["job", "cancel", "to-cancel", "--queue", &nats.url])?;
    let start = Instant::now();
    let code = loop {
        if let Some(st) = coordinator.try_wait()? {
            break st.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the coordinator did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(2), "a cancelled job is not a success");
    let mut w = worker(&nats.url)?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(interrupt(&mut w, Duration::from_secs(10))?, Some(0));
    // A worker for that job alone has nothing to do and leaves by itself.
    let alone = haul()
        .args(["worker", "--queue", &nats.url, "--jobs", "to-cancel"])
        .output()?;
    assert_eq!(alone.status.code(), Some(0), "{}", stderr(&alone));
    assert!(stderr(&alone).contains("0 units done"), "{}", stderr(&alone));
    assert!(
        !dst.exists() || std::fs::read_dir(&dst)?.next().is_none(),
        "nothing was copied"
    );
    let st = ok(&["job", "status", "to-cancel", "--queue", &nats.url, "--json"])?;
    assert!(String::from_utf8(st.stdout)?.contains("CANCELLED"));
    Ok(())
}
