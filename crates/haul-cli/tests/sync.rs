//! `sync` end to end against moto: shards reach every key (also the ones
//! only the destination has), and the resume journal resumes exactly the
//! runs that were interrupted — never one that completed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use common::*;

use haul_store::checksum::md5_hex;

/// `haul` with the test server's environment, as an unprivileged user.
fn haul_unprivileged() -> Command {
    let mut c = haul_as_nobody();
    for (k, v) in haul_testkit::aws_env() {
        c.env(k, v);
    }
    c.env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_S3");
    c
}

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

fn keys(bucket: &str, prefix: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    Ok(inspect(bucket, prefix)?.keys().cloned().collect())
}

/// Item 3: with automatic splitting, `--delete` reaches keys under folders
/// the source does not have (and past its last folder).
#[test]
fn split_sync_delete_reaches_folders_only_the_destination_has() -> TestResult {
    let b = bucket("splitdel")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("t");
    for k in ["a/1", "a/2", "c/1", "e/x/1", "e/y/1"] {
        write(&src.join(k), k.as_bytes())?;
    }
    let s = src.to_str().unwrap_or_default();
    let dst = format!("s3://{b}/m");
    for k in ["b/old", "d/old", "z/old", "e/w/old"] {
        ok(&[
            "cp",
            &format!("{s}/a/1"),
            &format!("{dst}/{k}"),
            "--endpoint-url",
            &ep,
            "-q",
        ])?;
    }
    let out = ok(&[
        "sync",
        s,
        &dst,
        "--endpoint-url",
        &ep,
        "--delete",
        "--split-min-keys",
        "0",
        "--no-journal",
        "--json",
    ])?;
    let summary = last_json(&out)?;
    assert!(
        summary["shards"].as_u64().unwrap_or(0) > 1,
        "splitting is active: {summary}"
    );
    assert_eq!(summary["deleted"].as_u64(), Some(4), "{summary}");
    assert_eq!(keys(&b, "m/")?, ["m/a/1", "m/a/2", "m/c/1", "m/e/x/1", "m/e/y/1"]);
    Ok(())
}

/// Item 4 (reproduced on the old code: "resuming an interrupted sync: 1 of
/// 2 shards already done", and b/new.txt never copied): a run that
/// completed with a failure closes its job; the next run starts fresh and
/// copies what is new in a shard that had finished.
#[test]
fn a_sync_that_finished_with_failures_is_not_resumed_and_new_objects_are_copied() -> TestResult {
    let b = bucket("refresh")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    chmod(dir.path(), 0o755)?;
    let src = dir.path().join("t");
    write(&src.join("a/ok.txt"), b"ok")?;
    write(&src.join("a/secret.txt"), b"secret")?;
    write(&src.join("b/x.txt"), b"x")?;
    chmod(&src.join("a/secret.txt"), 0o000)?;
    let parts = dir.path().join("parts.txt");
    std::fs::write(&parts, ",a/\n,b/\n")?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    chmod(&state, 0o777)?;
    let dst = format!("s3://{b}/p");
    let args = [
        "sync",
        src.to_str().unwrap_or_default(),
        &dst,
        "--endpoint-url",
        &ep,
        "--part-file",
        parts.to_str().unwrap_or_default(),
        "--state-dir",
        state.to_str().unwrap_or_default(),
    ];
    let first = haul_unprivileged().args(args).arg("--json").output()?;
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let text = String::from_utf8(first.stdout)?;
    let failure: Value = text
        .lines()
        .map(serde_json::from_str::<Value>)
        .find(|l| l.as_ref().is_ok_and(|l| l["event"] == "failure"))
        .ok_or(format!("no failure in {text}"))??;
    assert_eq!(failure["key"], "a/secret.txt", "{text}");
    assert_eq!(keys(&b, "p/")?, ["p/a/ok.txt", "p/b/x.txt"]);
    // New data in the shard that finished.
    write(&src.join("b/new.txt"), b"new")?;
    let second = haul_unprivileged().args(args).output()?;
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "the denied file still fails: {err}");
    assert!(!err.contains("resuming"), "a completed run is not resumed: {err}");
    assert_eq!(keys(&b, "p/")?, ["p/a/ok.txt", "p/b/new.txt", "p/b/x.txt"], "{err}");
    // Once the file is readable, the run completes cleanly.
    chmod(&src.join("a/secret.txt"), 0o644)?;
    let third = haul_unprivileged().args(args).output()?;
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    assert!(!stderr(&third).contains("resuming"), "{}", stderr(&third));
    assert_eq!(
        inspect(&b, "p/a/secret.txt")?["p/a/secret.txt"]["md5"],
        md5_hex(b"secret")
    );
    Ok(())
}

/// A tree of 30 folders of 30 files and the sync command over it, with one
/// shard at a time (so that an interruption leaves some shards done).
struct Interrupted {
    bucket: String,
    want: BTreeMap<String, String>,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Starts the sync, and once some objects have arrived sends it `signal`.
fn interrupted_sync(tag: &str, signal: &str) -> Result<Interrupted, Box<dyn std::error::Error>> {
    let b = bucket(tag)?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("tree");
    let mut want = BTreeMap::new();
    for f in 0..30 {
        for i in 0..30 {
            let body = format!("folder {f} file {i}");
            write(&src.join(format!("{f:02}/{i:02}.txt")), body.as_bytes())?;
            want.insert(format!("m/{f:02}/{i:02}.txt"), md5_hex(body.as_bytes()));
        }
    }
    let state = dir.path().join("state");
    let args: Vec<String> = [
        "sync",
        src.to_str().unwrap_or_default(),
        &format!("s3://{b}/m"),
        "--endpoint-url",
        &ep,
        "--state-dir",
        state.to_str().unwrap_or_default(),
        "--shards-in-flight",
        "1",
        "--split-min-keys",
        "0",
        "-j",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = haul().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let arrived = || -> Result<u64, Box<dyn std::error::Error>> {
        let out = run(&["ls", "-r", "--json", &format!("s3://{b}/m/"), "--endpoint-url", &ep])?;
        Ok(last_json(&out)?["objects"].as_u64().unwrap_or(0))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while arrived()? < 60 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()?;
    assert!(killed.success(), "kill -{signal}");
    child.wait()?;
    let partial = arrived()? as usize;
    assert!(
        partial > 0 && partial < want.len(),
        "interrupted mid-way: {partial} of {} copied",
        want.len()
    );
    Ok(Interrupted {
        bucket: b,
        want,
        args,
        _dir: dir,
    })
}

fn md5s(bucket: &str) -> Result<BTreeMap<String, String>, Box<dyn std::error::Error>> {
    Ok(inspect(bucket, "m/")?
        .into_iter()
        .map(|(k, v)| (k, v["md5"].as_str().unwrap_or_default().to_string()))
        .collect())
}

/// Nothing differs between the tree and the bucket (by MD5 against the
/// ETags: every object here is a single part).
fn in_sync(t: &Interrupted) -> TestResult {
    let (src, dst) = (&t.args[1], &t.args[2]);
    let out = ok(&["diff", src, dst, "--endpoint-url", &t.args[4], "--json"])?;
    let last = last_json(&out)?;
    assert_eq!(
        (last["copy"].as_u64(), last["delete"].as_u64(), last["same"].as_u64()),
        (Some(0), Some(0), Some(t.want.len() as u64)),
        "{last}"
    );
    Ok(())
}

fn ok_strings(args: &[String]) -> Result<Output, Box<dyn std::error::Error>> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args)
}

/// Item 4: a killed run (SIGKILL: no chance to clean up) is resumed, says
/// so with the job and its start time, and ends identical.
#[test]
fn a_killed_sync_resumes_and_ends_identical() -> TestResult {
    let t = interrupted_sync("resume", "KILL")?;
    let out = ok_strings(&t.args)?;
    let err = stderr(&out);
    // "resuming job <id> from <time>: N of M shards done"
    let note = err
        .lines()
        .find(|l| l.starts_with("resuming job "))
        .ok_or(format!("no resume note in {err}"))?;
    let (head, counts) = note.split_once(": ").ok_or(format!("bad note {note}"))?;
    let words: Vec<&str> = head.split(' ').collect();
    assert_eq!((words.len(), words[3]), (5, "from"), "{note}");
    assert_eq!(words[2].len(), 32, "the job id: {note}");
    assert!(humantime::parse_rfc3339(words[4]).is_ok(), "the start time: {note}");
    let n: Vec<u64> = counts.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert!(counts.ends_with(" shards done") && n.len() == 2, "{note}");
    assert!(n[0] > 0 && n[0] < n[1], "{note}");
    assert_eq!(md5s(&t.bucket)?, t.want, "the bucket ends identical to the tree");
    // Finished: the journal closed the job, and nothing is left to do.
    let again = ok_strings(&t.args)?;
    assert!(!stderr(&again).contains("resuming"), "{}", stderr(&again));
    assert!(stderr(&again).contains("Synced 0 objects"), "{}", stderr(&again));
    Ok(())
}

/// Item 4: Ctrl-C (SIGINT) ends the run early and keeps the job; `--fresh`
/// ignores it: everything is planned again, nothing is resumed.
#[test]
fn an_interrupted_sync_is_kept_and_fresh_ignores_it() -> TestResult {
    let t = interrupted_sync("fresh", "INT")?;
    let mut fresh = t.args.clone();
    fresh.push("--fresh".into());
    let out = ok_strings(&fresh)?;
    assert!(!stderr(&out).contains("resuming"), "{}", stderr(&out));
    let copied: u64 = stderr(&out)
        .split("Synced ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or(format!("no summary in {}", stderr(&out)))?;
    assert!(copied > 0, "{}", stderr(&out));
    in_sync(&t)?;
    // The fresh run completed: nothing left to resume.
    let again = ok_strings(&t.args)?;
    assert!(!stderr(&again).contains("resuming"), "{}", stderr(&again));
    Ok(())
}

/// Item 4: after Ctrl-C the same command resumes.
#[test]
fn a_sync_stopped_by_ctrl_c_resumes() -> TestResult {
    let t = interrupted_sync("sigint", "INT")?;
    let out = ok_strings(&t.args)?;
    assert!(stderr(&out).contains("resuming job "), "{}", stderr(&out));
    in_sync(&t)?;
    Ok(())
}

/// `sync --inventory` from a Parquet inventory (SNAPPY, S3's snake_case
/// schema, keys as they are), with its manifest.checksum beside it: only
/// the current objects are copied (a delete marker and an old version are
/// skipped, or the sync would fail on them as "listed, but not in the
/// source").
#[test]
fn sync_from_a_parquet_inventory() -> TestResult {
    use haul_testkit::inventory::{manifest, parquet, Row};
    let (a, b, inv) = (bucket("pqa")?, bucket("pqb")?, bucket("pqinv")?);
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let t = dir.path().join("t");
    let names = ["2026/a.json", "2026/b c+d%.json", "2026/ü 日本.json", "2027/e.json"];
    for k in names {
        write(&t.join(k), k.as_bytes())?;
    }
    let src = format!("s3://{a}/src");
    ok(&[
        "cp",
        "-r",
        t.to_str().unwrap_or_default(),
        &src,
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    let mut rows: Vec<Row> = names
        .iter()
        .map(|k| Row::object(&a, &format!("src/{k}"), k.len() as u64, &md5_hex(k.as_bytes())))
        .collect();
    let mut old = Row::object(&a, "src/2026/a.json", 1, "00000000000000000000000000000000");
    old.is_latest = false;
    old.version_id = Some("v0".into());
    rows.insert(1, old);
    rows.push(Row {
        bucket: a.clone(),
        key: "src/2026/gone.json".into(),
        version_id: Some("v9".into()),
        is_latest: true,
        is_delete_marker: true,
        ..Default::default()
    });
    let body = parquet(&rows, 2).map_err(|e| e.to_string())?;
    let m = manifest(&a, "Parquet", &[("pq/data/0.parquet", body.as_slice())], None);
    let local = |name: &str, bytes: &[u8]| -> Result<String, Box<dyn std::error::Error>> {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes)?;
        Ok(p.to_str().unwrap_or_default().to_string())
    };
    for (name, bytes, dst) in [
        ("0.parquet", body.clone(), "pq/data/0.parquet"),
        ("manifest.json", m.clone(), "pq/manifest.json"),
        ("manifest.checksum", md5_hex(&m).into_bytes(), "pq/manifest.checksum"),
    ] {
        let p = local(name, &bytes)?;
        ok(&["cp", &p, &format!("s3://{inv}/{dst}"), "--endpoint-url", &ep, "-q"])?;
    }
    let manifest_url = format!("s3://{inv}/pq/manifest.json");
    ok(&[
        "sync",
        &format!("s3://{a}/src/2026"),
        &format!("s3://{b}/frompq"),
        "--endpoint-url",
        &ep,
        "--inventory",
        &manifest_url,
        "-q",
    ])?;
    let got = inspect(&b, "frompq/")?;
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["frompq/a.json", "frompq/b c+d%.json", "frompq/ü 日本.json"]
    );
    assert_eq!(got["frompq/b c+d%.json"]["md5"], md5_hex(b"2026/b c+d%.json"));
    // A manifest.checksum that does not match: refused, nothing copied.
    let p = local("manifest.checksum", b"ffffffffffffffffffffffffffffffff")?;
    ok(&[
        "cp",
        &p,
        &format!("s3://{inv}/pq/manifest.checksum"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    let out = run(&[
        "sync",
        &format!("s3://{a}/src"),
        &format!("s3://{b}/badpq"),
        "--endpoint-url",
        &ep,
        "--inventory",
        &manifest_url,
    ])?;
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("its manifest.checksum says"), "{}", stderr(&out));
    assert!(inspect(&b, "badpq/")?.is_empty());
    Ok(())
}
