//! `haul watch` end to end: the real binary, a real S3 server (moto) or a
//! local-directory bucket, real signals, real `kill -9`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn status(state: &Path) -> Result<Value, Box<dyn std::error::Error>> {
    let out = ok(&["watch", "status", "--json", "--state-dir", &state.display().to_string()])?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Every regular file under `dir` (relative path → content), hidden ones excluded.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else if let (Ok(rel), Ok(body)) = (p.strip_prefix(base), std::fs::read(&p)) {
                out.insert(rel.display().to_string(), body);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn once_to_s3_keeps_the_hierarchy_class_and_metadata_and_deletes_uploaded_files() -> TestResult {
    let b = bucket("watch")?;
    let tree = tempfile::tempdir()?;
    let state = tempfile::tempdir()?;
    let mut want = BTreeMap::new();
    for (i, rel) in ["2026/11/20/a.csv", "2026/11/21/b.csv", "2026/11/21/c/d.json"]
        .iter()
        .enumerate()
    {
        let body = data(2000 + 1000 * i, 40 + i as u64);
        write(&tree.path().join(rel), &body)?;
        want.insert(format!("ingest/{rel}"), haul_store::checksum::md5_hex(&body));
    }
    write(&tree.path().join("2026/11/21/e.csv.part"), b"half a file")?;
    let out = ok(&[
        "watch",
        &tree.path().display().to_string(),
        &format!("s3://{b}/ingest"),
        "--once",
        "--settle",
        "0s",
        "--delete-after-upload",
        "--storage-class",
        "STANDARD_IA",
        "--metadata",
        "source=vendor",
        "--state-dir",
        &state.path().display().to_string(),
        "--endpoint-url",
        &endpoint(),
        "--json",
    ])?;
    let summary = last_json(&out)?;
    assert_eq!(summary["summary"]["uploaded_files"], 3, "{summary}");
    let seen = inspect(&b, "ingest/")?;
    assert_eq!(seen.len(), 3, "the .part file is not uploaded: {seen:?}");
    for (key, md5) in &want {
        let o = &seen[key];
        assert_eq!(o["md5"].as_str(), Some(md5.as_str()), "{key}");
        assert_eq!(o["storage_class"], "STANDARD_IA", "{key}");
        assert_eq!(o["metadata"]["source"], "vendor", "{key}");
    }
    let left = files_under(tree.path());
    assert_eq!(left.keys().collect::<Vec<_>>(), vec!["2026/11/21/e.csv.part"]);
    let st = status(state.path())?;
    assert_eq!(
        (st["uploaded_files"].as_u64(), st["deleted_files"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(st["pending"], 0);
    Ok(())
}

/// Issue 11 item 8 on a real S3 server: a path that comes back after its
/// upload (a daily `export.csv`) never replaces the object holding the
/// earlier content. `--if-exists skip`: the object keeps the first content,
/// the local file is kept and reported (exit 1); `--if-exists rename`: the
/// new content goes to `export.<UTC time>.csv` and the file is deleted.
#[test]
fn if_exists_skip_and_rename_on_s3_never_replace_the_first_upload() -> TestResult {
    let b = bucket("watch-exists")?;
    let tree = tempfile::tempdir()?;
    let state = tempfile::tempdir()?;
    let (tree_s, state_s, dst, ep) = (
        tree.path().display().to_string(),
        state.path().display().to_string(),
        format!("s3://{b}/ingest"),
        endpoint(),
    );
    let watch = |mode: &str| {
        run(&[
            "watch",
            &tree_s,
            &dst,
            "--once",
            "--settle",
            "0s",
            "--delete-after-upload",
            "--if-exists",
            mode,
            "--state-dir",
            &state_s,
            "--endpoint-url",
            &ep,
            "--json",
        ])
    };
    let monday = data(3000, 81);
    write(&tree.path().join("export.csv"), &monday)?;
    let out = watch("skip")?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!tree.path().join("export.csv").exists(), "uploaded, then deleted");

    let tuesday = data(4000, 82);
    write(&tree.path().join("export.csv"), &tuesday)?;
    let out = watch("skip")?;
    assert_eq!(out.status.code(), Some(1), "a kept file is reported: {}", stderr(&out));
    let summary = last_json(&out)?;
    assert_eq!(summary["summary"]["skipped_exists"], 1, "{summary}");
    assert_eq!(summary["summary"]["uploaded_files"], 0, "{summary}");
    let seen = inspect(&b, "ingest/")?;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen["ingest/export.csv"]["md5"].as_str(),
        Some(haul_store::checksum::md5_hex(&monday).as_str()),
        "the object keeps the first content"
    );
    assert_eq!(
        std::fs::read(tree.path().join("export.csv"))?,
        tuesday,
        "the file is kept"
    );
    assert!(
        stderr(&out).contains("export.csv"),
        "the kept file is named: {}",
        stderr(&out)
    );

    // The kept file is a dead letter until retried (here with another mode).
    ok(&["watch", "retry", "--state-dir", &state_s])?;
    let out = watch("rename")?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !tree.path().join("export.csv").exists(),
        "uploaded under a new name, then deleted"
    );
    let seen = inspect(&b, "ingest/")?;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen["ingest/export.csv"]["md5"].as_str(),
        Some(haul_store::checksum::md5_hex(&monday).as_str())
    );
    let (renamed, o) = seen
        .iter()
        .find(|(k, _)| k.as_str() != "ingest/export.csv")
        .ok_or("no renamed key")?;
    assert!(
        renamed.starts_with("ingest/export.2") && renamed.ends_with("Z.csv"),
        "{renamed}"
    );
    assert_eq!(
        o["md5"].as_str(),
        Some(haul_store::checksum::md5_hex(&tuesday).as_str())
    );
    Ok(())
}

#[test]
fn a_missing_directory_or_bucket_is_a_fatal_error() -> TestResult {
    let tree = tempfile::tempdir()?;
    let state = tempfile::tempdir()?;
    let s = state.path().display().to_string();
    let out = run(&[
        "watch",
        "/nonexistent/haul-watch",
        "s3://x/y",
        "--once",
        "--state-dir",
        &s,
    ])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/haul-watch: the directory to watch does not exist"));
    let dir = tree.path().display().to_string();
    let missing = haul_testkit::unique_bucket("missing");
    let out = run(&[
        "watch",
        &dir,
        &format!("s3://{missing}/p"),
        "--once",
        "--state-dir",
        &s,
        "--endpoint-url",
        &endpoint(),
    ])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&missing), "{}", stderr(&out));
    // The state directory inside the watched tree would be uploaded.
    let inside = tree.path().join("state").display().to_string();
    let out = run(&["watch", &dir, &s, "--once", "--state-dir", &inside])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is inside the watched directory"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

/// haul as an unprivileged user, with `args`.
fn unprivileged(args: &[&str]) -> Command {
    let mut c = haul_as_nobody();
    c.args(args);
    c
}

fn open_up(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777))
}

#[test]
fn an_unreadable_file_is_reported_in_the_journal_the_rest_continue_and_retry_requeues_it() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir()?;
    open_up(base.path())?;
    let (tree, bkt, state) = (
        base.path().join("tree"),
        base.path().join("bucket"),
        base.path().join("state"),
    );
    for d in [&tree, &bkt, &state] {
        std::fs::create_dir_all(d)?;
        open_up(d)?;
    }
    for name in ["ok1.csv", "ok2.csv", "secret.csv"] {
        std::fs::write(tree.join(name), name.as_bytes())?;
        std::fs::set_permissions(tree.join(name), std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::set_permissions(tree.join("secret.csv"), std::fs::Permissions::from_mode(0o000))?;
    let (t, b, s) = (
        tree.display().to_string(),
        bkt.display().to_string(),
        state.display().to_string(),
    );
    let once = [
        "watch",
        &t,
        &b,
        "--once",
        "--settle",
        "0s",
        "--max-attempts",
        "1",
        "--state-dir",
        &s,
    ];
    let out = unprivileged(&once).output()?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("secret.csv"),
        "the log names the file: {}",
        stderr(&out)
    );
    let got = files_under(&bkt);
    assert_eq!(got.keys().collect::<Vec<_>>(), vec!["ok1.csv", "ok2.csv"]);
    let st: Value = serde_json::from_slice(
        &unprivileged(&["watch", "status", "--json", "--state-dir", &s])
            .output()?
            .stdout,
    )?;
    assert_eq!(st["dead"], 1, "{st}");
    let dead = &st["dead_letters"][0];
    assert_eq!(dead["key"], "secret.csv");
    assert!(
        dead["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ermission denied"),
        "{dead}"
    );
    // Fixed by the operator, re-queued, uploaded by the next run.
    std::fs::set_permissions(tree.join("secret.csv"), std::fs::Permissions::from_mode(0o644))?;
    let out = unprivileged(&["watch", "retry", "--state-dir", &s]).output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-queued 1 dead letter"));
    let out = unprivileged(&once).output()?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        files_under(&bkt).get("secret.csv").map(Vec::as_slice),
        Some(&b"secret.csv"[..])
    );
    Ok(())
}

/// A tiny deterministic generator for kill times.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn kill_9_at_random_moments_never_loses_a_file_nor_deletes_one_not_uploaded() -> TestResult {
    let tree = tempfile::tempdir()?;
    let bkt = tempfile::tempdir()?;
    let state = tempfile::tempdir()?;
    let mut want = BTreeMap::new();
    for i in 0..5000u64 {
        let rel = format!("2026/11/{:02}/{:02}/f{i}.dat", 1 + i % 21, i % 17);
        let body = data(100 + (i as usize * 37) % 3000, i);
        write(&tree.path().join(&rel), &body)?;
        want.insert(rel, body);
    }
    let args = [
        "watch",
        &tree.path().display().to_string(),
        &bkt.path().display().to_string(),
        "--settle",
        "0s",
        "--delete-after-upload",
        "--prune-empty-dirs",
        "--keep-dirs-for",
        "0s",
        "-j",
        "16",
        "--state-dir",
        &state.path().display().to_string(),
        "--quiet",
    ]
    .map(String::from);
    let check = |when: &str| -> TestResult {
        let local = files_under(tree.path());
        let remote = files_under(bkt.path());
        for (rel, body) in &want {
            if !local.contains_key(rel) {
                assert_eq!(
                    remote.get(rel),
                    Some(body),
                    "{when}: {rel} was deleted locally without a verified upload"
                );
            } else {
                assert_eq!(local.get(rel), Some(body), "{when}: {rel} changed locally");
            }
        }
        Ok(())
    };
    let mut rng = Lcg(42);
    let mut kills = 0;
    for round in 0..30 {
        let mut child = haul().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        std::thread::sleep(Duration::from_millis(100 + rng.next(500)));
        child.kill()?; // SIGKILL
        child.wait()?;
        kills += 1;
        check(&format!("after kill {round}"))?;
        if kills >= 10 && files_under(tree.path()).len() < 500 {
            break;
        }
    }
    assert!(kills >= 10);
    // The last run finishes the job.
    let mut once = args.to_vec();
    once.push("--once".into());
    let out = haul().args(&once).output()?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check("at the end")?;
    assert_eq!(files_under(bkt.path()), want, "every file arrived, byte-identical");
    assert!(
        files_under(tree.path()).is_empty(),
        "every file deleted after its upload"
    );
    let st = status(state.path())?;
    // (The counters may miss uploads a kill interrupted before they were
    // recorded; the files themselves are checked above.)
    assert_eq!(
        (st["pending"].as_u64(), st["uploading"].as_u64()),
        (Some(0), Some(0)),
        "{st}"
    );
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_daemon_follows_new_files_serves_metrics_logs_to_a_daily_file_and_stops_on_sigterm() -> TestResult {
    let tree = tempfile::tempdir()?;
    let bkt = tempfile::tempdir()?;
    let state = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let log_file: PathBuf = logs.path().join("watch.log");
    let mut d = Daemon(
        haul()
            .args([
                "watch",
                &tree.path().display().to_string(),
                &bkt.path().display().to_string(),
                "--settle",
                "1s",
                "--state-dir",
                &state.path().display().to_string(),
                "--metrics-addr",
                &addr,
                "--log-file",
                &log_file.display().to_string(),
                "--summary-every",
                "1s",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    assert!(
        wait_for(Duration::from_secs(10), || http_get(&addr, "/metrics").is_ok()),
        "metrics served"
    );
    // Files created while it runs, one written in several steps.
    std::fs::create_dir_all(tree.path().join("2026/11/21"))?;
    let mut f = std::fs::File::create(tree.path().join("2026/11/21/slow.csv"))?;
    for part in [&b"a,b\n"[..], b"1,2\n", b"3,4\n"] {
        f.write_all(part)?;
        f.flush()?;
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(f);
    write(&tree.path().join("2026/11/21/x.csv"), b"x")?;
    write(&tree.path().join("2026/11/21/y.tmp"), b"temp")?;
    let arrived = wait_for(Duration::from_secs(20), || files_under(bkt.path()).len() == 2);
    assert!(arrived, "{:?}", files_under(bkt.path()).keys().collect::<Vec<_>>());
    assert_eq!(
        files_under(bkt.path()).get("2026/11/21/slow.csv").map(Vec::as_slice),
        Some(&b"a,b\n1,2\n3,4\n"[..])
    );
    let mut metrics = String::new();
    let seen = wait_for(Duration::from_secs(10), || {
        metrics = http_get(&addr, "/metrics").unwrap_or_default();
        metrics.contains("haul_watch_uploaded_files_total 2") && metrics.contains("haul_watch_pending_files 0")
    });
    assert!(seen, "{metrics}");
    assert!(
        metrics.contains("haul_watch_upload_latency_seconds_bucket"),
        "{metrics}"
    );

    let pid = d.0.id().to_string();
    let st = Command::new("kill").args(["-TERM", &pid]).status()?;
    assert!(st.success());
    let start = Instant::now();
    let code = loop {
        if let Some(s) = d.0.try_wait()? {
            break s.code();
        }
        assert!(start.elapsed() < Duration::from_secs(15), "stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    let mut out = String::new();
    if let Some(mut so) = d.0.stdout.take() {
        so.read_to_string(&mut out)?;
    }
    let uploaded: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "uploaded")
        .collect();
    assert_eq!(uploaded.len(), 2, "{out}");
    assert!(uploaded.iter().all(|u| u["latency_ms"].as_u64().is_some()));
    // One log file per day: watch.YYYY-MM-DD.log.
    let names: Vec<String> = std::fs::read_dir(logs.path())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with("watch.") && names[0].ends_with(".log"),
        "{names:?}"
    );
    let log = std::fs::read_to_string(logs.path().join(&names[0]))?;
    for line in ["watch started", "uploaded", "summary of the last", "watch stopped"] {
        assert!(log.contains(line), "{line:?} in the log: {log}");
    }
    let st = status(state.path())?;
    assert_eq!((st["pending"].as_u64(), st["uploading"].as_u64()), (Some(0), Some(0)));
    Ok(())
}
