//! End-to-end tests: the real `haul` binary against a real S3 server (moto
//! on 127.0.0.1), with an independent client (boto3) reading back what haul
//! wrote. Exit codes and one-line error messages are part of the contract.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde_json::Value;

use common::*;

use haul_store::checksum::{md5_hex, multipart_etag};

fn expected_etag(body: &[u8], part: usize, threshold: usize) -> String {
    if body.len() < threshold {
        return md5_hex(body);
    }
    let md5s: Vec<String> = body.chunks(part).map(md5_hex).collect();
    multipart_etag(md5s.iter().map(String::as_str)).unwrap_or_default()
}

#[test]
fn tree_to_s3_and_back_with_class_metadata_and_etags() -> TestResult {
    let b = bucket("tree")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("data");
    let files: Vec<(String, Vec<u8>)> = vec![
        ("2026/11/21/x.json".into(), b"{\"a\":1}\n".to_vec()),
        ("2026/11/21/empty.csv".into(), vec![]),
        ("2026/11/20/big.bin".into(), data(12 * MIB + 3, 1)),
        ("2026/11/20/with space+plus%.txt".into(), b"odd name".to_vec()),
        ("a-b".into(), b"dash".to_vec()),
        ("a/b".into(), b"slash".to_vec()),
    ];
    for (k, body) in &files {
        write(&src.join(k), body)?;
    }
    let out = ok(&[
        "cp",
        "-r",
        src.to_str().unwrap_or_default(),
        &format!("s3://{b}/ingest"),
        "--endpoint-url",
        &ep,
        "--storage-class",
        "STANDARD_IA",
        "--metadata",
        "team=data",
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
        "--json",
    ])?;
    let summary = last_json(&out)?;
    assert_eq!(summary["objects"], 6, "{summary}");
    assert_eq!(summary["failed"], 0);
    let seen = inspect(&b, "ingest/")?;
    assert_eq!(seen.len(), files.len(), "{seen:?}");
    for (k, body) in &files {
        let o = seen.get(&format!("ingest/{k}")).ok_or(format!("{k} missing"))?;
        assert_eq!(o["size"], body.len(), "{k}");
        assert_eq!(o["md5"], md5_hex(body), "{k}: bytes differ");
        assert_eq!(o["etag"], expected_etag(body, 5 * MIB, 5 * MIB), "{k}: ETag");
        assert_eq!(o["storage_class"], "STANDARD_IA", "{k}");
        assert_eq!(o["metadata"]["team"], "data", "{k}");
        assert!(o["metadata"]["mtime"].is_string(), "{k}: mtime kept");
    }
    assert_eq!(seen["ingest/2026/11/21/x.json"]["content_type"], "application/json");
    assert_eq!(
        seen["ingest/2026/11/20/big.bin"]["etag"]
            .as_str()
            .map(|e| e.ends_with("-3")),
        Some(true)
    );

    // And back to a local tree: same bytes, same mtimes. The `-3` object
    // (below the 16 MiB threshold: one GET) is checked by its multipart
    // ETag, recomputed with the part sizes moto reports: none unverified,
    // even with --require-verified.
    let back = dir.path().join("back");
    let out = ok(&[
        "cp",
        "-r",
        &format!("s3://{b}/ingest/"),
        back.to_str().unwrap_or_default(),
        "--endpoint-url",
        &ep,
        "--require-verified",
        "--json",
    ])?;
    let summary = last_json(&out)?;
    assert_eq!(
        (summary["unverified"].as_u64(), summary["failed"].as_u64()),
        (Some(0), Some(0)),
        "{summary}"
    );
    for (k, body) in &files {
        assert_eq!(&std::fs::read(back.join(k))?, body, "{k}");
        let (m1, m2) = (
            std::fs::metadata(src.join(k))?.modified()?,
            std::fs::metadata(back.join(k))?.modified()?,
        );
        assert_eq!(m1, m2, "{k}: mtime");
    }
    Ok(())
}

#[test]
fn single_files_stdin_cat_and_folder_destinations() -> TestResult {
    let b = bucket("single")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("report.csv");
    std::fs::write(&f, b"a,b\n1,2\n")?;
    ok(&[
        "cp",
        f.to_str().unwrap_or_default(),
        &format!("s3://{b}/reports/"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    ok(&[
        "cp",
        f.to_str().unwrap_or_default(),
        &format!("s3://{b}/renamed.csv"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    // stdin, long enough to go multipart.
    let dump = data(7 * MIB, 2);
    let mut child = haul()
        .args([
            "cp",
            "-",
            &format!("s3://{b}/dumps/db.sql"),
            "--endpoint-url",
            &ep,
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
            "-q",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        stdin.write_all(&dump)?;
    }
    let out = child.wait_with_output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = inspect(&b, "")?;
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["dumps/db.sql", "renamed.csv", "reports/report.csv"]
    );
    assert_eq!(seen["dumps/db.sql"]["md5"], md5_hex(&dump));
    assert_eq!(seen["dumps/db.sql"]["etag"], expected_etag(&dump, 5 * MIB, 5 * MIB));
    assert_eq!(seen["reports/report.csv"]["content_type"], "text/csv");
    let cat = ok(&["cat", &format!("s3://{b}/dumps/db.sql"), "--endpoint-url", &ep])?;
    assert!(cat.stdout == dump, "cat returns the bytes");
    // An object to a local file name, then to an existing directory.
    let local = dir.path().join("out/copy.csv");
    ok(&[
        "cp",
        &format!("s3://{b}/renamed.csv"),
        local.to_str().unwrap_or_default(),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    assert_eq!(std::fs::read(&local)?, b"a,b\n1,2\n");
    ok(&[
        "cp",
        &format!("s3://{b}/renamed.csv"),
        dir.path().join("out").to_str().unwrap_or_default(),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    assert_eq!(std::fs::read(dir.path().join("out/renamed.csv"))?, b"a,b\n1,2\n");
    Ok(())
}

#[test]
fn bucket_to_bucket_copies_server_side_keeping_metadata() -> TestResult {
    let (a, b) = (bucket("ssa")?, bucket("ssb")?);
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    for i in 0..20 {
        write(
            &dir.path().join(format!("d/{i:02}.json")),
            format!("{{\"i\":{i}}}").as_bytes(),
        )?;
    }
    ok(&[
        "cp",
        "-r",
        dir.path().join("d").to_str().unwrap_or_default(),
        &format!("s3://{a}/src"),
        "--endpoint-url",
        &ep,
        "--metadata",
        "origin=vendor",
        "-q",
    ])?;
    let out = ok(&[
        "cp",
        "-r",
        &format!("s3://{a}/src"),
        &format!("s3://{b}/dst"),
        "--endpoint-url",
        &ep,
        "--storage-class",
        "GLACIER_IR",
        "--json",
    ])?;
    let summary = last_json(&out)?;
    assert_eq!(summary["objects"], 20);
    assert_eq!(summary["server_side"], 20, "copied server-side: {summary}");
    let (src, dst) = (inspect(&a, "src/")?, inspect(&b, "dst/")?);
    assert_eq!(dst.len(), 20);
    for (k, o) in &src {
        let d = &dst[&k.replacen("src/", "dst/", 1)];
        assert_eq!(d["md5"], o["md5"]);
        assert_eq!(d["etag"], o["etag"]);
        assert_eq!(d["metadata"]["origin"], "vendor");
        assert_eq!(d["content_type"], "application/json");
        assert_eq!(d["storage_class"], "GLACIER_IR");
    }
    // Streamed instead (as across endpoints or accounts): same result.
    ok(&[
        "cp",
        "-r",
        &format!("s3://{a}/src"),
        &format!("s3://{b}/streamed"),
        "--endpoint-url",
        &ep,
        "--no-server-side",
        "-q",
    ])?;
    let streamed = inspect(&b, "streamed/")?;
    assert_eq!(streamed.len(), 20);
    assert!(streamed.values().all(|o| o["metadata"]["origin"] == "vendor"));
    Ok(())
}

#[test]
fn ls_rm_and_dry_runs() -> TestResult {
    let b = bucket("lsrm")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    for k in ["t/2026/a.txt", "t/2026/b.txt", "t/top.txt"] {
        write(&dir.path().join(k), b"12345")?;
    }
    // A dry run copies nothing.
    let out = ok(&[
        "cp",
        "-r",
        dir.path().join("t").to_str().unwrap_or_default(),
        &format!("s3://{b}/t"),
        "--endpoint-url",
        &ep,
        "--dry-run",
    ])?;
    assert_eq!(String::from_utf8(out.stdout)?.matches("(dry run) copy").count(), 3);
    assert!(inspect(&b, "")?.is_empty());
    ok(&[
        "cp",
        "-r",
        dir.path().join("t").to_str().unwrap_or_default(),
        &format!("s3://{b}/t"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    let ls = String::from_utf8(ok(&["ls", &format!("s3://{b}/t/"), "--endpoint-url", &ep])?.stdout)?;
    assert!(ls.contains("PRE t/2026/") && ls.contains("t/top.txt"), "{ls}");
    assert!(ls.contains("Total: 1 objects, 5 B (5 bytes), 1 folders"), "{ls}");
    let lsj = String::from_utf8(ok(&["ls", "-r", "--json", &format!("s3://{b}/t/"), "--endpoint-url", &ep])?.stdout)?;
    let lines: Vec<Value> = lsj.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["key"], "t/2026/a.txt");
    assert_eq!(lines[0]["etag"], md5_hex(b"12345"));
    assert_eq!(lines[3]["objects"], 3);
    assert_eq!(lines[3]["bytes"], 15);
    let dry = ok(&[
        "rm",
        "-r",
        &format!("s3://{b}/t/2026"),
        "--endpoint-url",
        &ep,
        "--dry-run",
    ])?;
    assert_eq!(String::from_utf8(dry.stdout)?.matches("(dry run) delete").count(), 2);
    assert_eq!(inspect(&b, "")?.len(), 3, "a dry run deletes nothing");
    ok(&["rm", "-r", &format!("s3://{b}/t/2026"), "--endpoint-url", &ep, "-q"])?;
    assert_eq!(inspect(&b, "")?.keys().cloned().collect::<Vec<_>>(), ["t/top.txt"]);
    ok(&["rm", &format!("s3://{b}/t/top.txt"), "--endpoint-url", &ep, "-q"])?;
    assert!(inspect(&b, "")?.is_empty());
    let gone = run(&["rm", &format!("s3://{b}/t/top.txt"), "--endpoint-url", &ep])?;
    assert_eq!(gone.status.code(), Some(2));
    assert!(stderr(&gone).contains("no such object"), "{}", stderr(&gone));
    Ok(())
}

#[test]
fn local_bucket_is_the_embedded_default() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (src, bkt) = (dir.path().join("src"), dir.path().join("bucket"));
    write(&src.join("2026/11/21/x.json"), b"{}")?;
    write(&src.join("a-b"), b"1")?;
    write(&src.join("a/b"), b"2")?;
    ok(&[
        "cp",
        "-r",
        src.to_str().unwrap_or_default(),
        bkt.to_str().unwrap_or_default(),
        "-q",
    ])?;
    let ls = String::from_utf8(ok(&["ls", "-r", "--json", bkt.to_str().unwrap_or_default()])?.stdout)?;
    let keys: Vec<String> = ls
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["key"].as_str().map(String::from))
        .collect();
    assert_eq!(keys, ["2026/11/21/x.json", "a-b", "a/b"], "S3 byte order");
    let cat = ok(&["cat", bkt.join("a/b").to_str().unwrap_or_default()])?;
    assert_eq!(cat.stdout, b"2");
    Ok(())
}

/// One line on stderr, starting with `haul: error:`, and exit code 2.
fn fatal(args: &[&str], env: &[(&str, &str)], expect: &str) -> TestResult {
    let mut c = haul();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output()?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("haul: error: "), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(expect), "{args:?}: expected {expect:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
    Ok(())
}

#[test]
fn clear_errors_for_bad_input() -> TestResult {
    let ep = endpoint();
    let b = bucket("errs")?;
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("f.txt");
    std::fs::write(&f, b"x")?;
    let fs = f.to_str().unwrap_or_default();
    fatal(
        &["cp", fs, "s3://"],
        &[],
        "DST: invalid location \"s3://\": missing bucket name",
    )?;
    fatal(
        &["cp", "gs://x/y", "s3://bucket/k"],
        &[],
        "SRC: invalid location \"gs://x/y\": unsupported scheme",
    )?;
    fatal(&["ls", "s3://bad_bucket!"], &[], "invalid location")?;
    fatal(
        &[
            "cp",
            fs,
            &format!("s3://{b}/k"),
            "--endpoint-url",
            &ep,
            "--profile",
            "nosuch",
        ],
        &[],
        "unknown profile \"nosuch\"",
    )?;
    fatal(
        &["ls", &format!("s3://{b}/"), "--endpoint-url", &ep],
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
        "no usable AWS credentials",
    )?;
    fatal(
        &["cp", fs, "s3://no-such-bucket-haul/k", "--endpoint-url", &ep],
        &[],
        "bucket \"no-such-bucket-haul\" does not exist",
    )?;
    fatal(
        &["ls", "s3://no-such-bucket-haul/", "--endpoint-url", &ep],
        &[],
        "does not exist",
    )?;
    fatal(
        &[
            "cp",
            dir.path().join("missing.txt").to_str().unwrap_or_default(),
            &format!("s3://{b}/k"),
            "--endpoint-url",
            &ep,
        ],
        &[],
        "missing.txt: no such file or directory",
    )?;
    fatal(
        &[
            "cp",
            dir.path().to_str().unwrap_or_default(),
            &format!("s3://{b}/k"),
            "--endpoint-url",
            &ep,
        ],
        &[],
        "is a directory (use -r",
    )?;
    fatal(
        &["cp", fs, &format!("{fs}/sub/x.txt")],
        &[],
        "cannot create the destination directory",
    )?;
    fatal(
        &[
            "cp",
            "-r",
            dir.path().to_str().unwrap_or_default(),
            dir.path().join("inner").to_str().unwrap_or_default(),
        ],
        &[],
        "overlap",
    )?;
    assert!(!dir.path().join("inner").exists(), "refused before creating anything");
    fatal(
        &[
            "cp",
            fs,
            &format!("s3://{b}/k"),
            "--endpoint-url",
            &ep,
            "--part-size",
            "1MiB",
        ],
        &[],
        "--part-size must be at least 5MiB",
    )?;
    assert!(inspect(&b, "")?.is_empty(), "nothing was written");
    // Disk full: the write error is reported, not a panic.
    let full = std::fs::File::options().write(true).open("/dev/full")?;
    ok(&["cp", fs, &format!("s3://{b}/k"), "--endpoint-url", &ep, "-q"])?;
    let out = haul()
        .args(["cat", &format!("s3://{b}/k"), "--endpoint-url", &ep])
        .stdout(full)
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no space left on device"), "{}", stderr(&out));
    // Usage errors from the parser also exit with 2.
    let usage = run(&["cp", "only-one-arg"])?;
    assert_eq!(usage.status.code(), Some(2));
    Ok(())
}

#[test]
fn one_bad_object_does_not_stop_the_run_and_exits_1() -> TestResult {
    let b = bucket("partial")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    write(&dir.path().join("t/good.txt"), b"ok")?;
    // A path longer than S3's 1024-byte key limit.
    let long: String = (0..5).map(|i| format!("{}{i}/", "d".repeat(240))).collect();
    write(&dir.path().join("t").join(&long).join("too-long.txt"), b"x")?;
    let out = run(&[
        "cp",
        "-r",
        dir.path().join("t").to_str().unwrap_or_default(),
        &format!("s3://{b}/t"),
        "--endpoint-url",
        &ep,
        "--json",
    ])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let failure = lines
        .iter()
        .find(|l| l["event"] == "failure")
        .ok_or("no failure line")?;
    assert_eq!(failure["code"], "InvalidKey");
    assert!(
        failure["message"]
            .as_str()
            .is_some_and(|m| m.contains("longer than 1024 bytes")),
        "{failure}"
    );
    let summary = lines.last().ok_or("no summary")?;
    assert_eq!(
        (summary["objects"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(1))
    );
    // The same run with a report file: the failure, the copy, the summary.
    let report = dir.path().join("report.jsonl");
    let out = run(&[
        "cp",
        "-r",
        dir.path().join("t").to_str().unwrap_or_default(),
        &format!("s3://{b}/t2"),
        "--endpoint-url",
        &ep,
        "-q",
        "--report",
        report.to_str().unwrap_or_default(),
        "--report-all",
    ])?;
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<Value> = std::fs::read_to_string(&report)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap_or("summary")).collect();
    assert_eq!(events.iter().filter(|e| **e == "failure").count(), 1, "{lines:?}");
    assert!(
        lines.iter().any(|l| l["event"] == "copied" && l["key"] == "good.txt"),
        "{lines:?}"
    );
    assert_eq!(lines.last().map(|l| l["failed"].as_u64()), Some(Some(1)));
    let failure = lines.iter().find(|l| l["event"] == "failure").ok_or("no failure")?;
    assert_eq!(
        (failure["op"].as_str(), failure["code"].as_str()),
        (Some("validate"), Some("InvalidKey"))
    );
    assert_eq!(
        inspect(&b, "")?.keys().cloned().collect::<Vec<_>>(),
        ["t/good.txt", "t2/good.txt"]
    );
    Ok(())
}

#[test]
fn access_denied_is_reported_clearly_and_nothing_is_written() -> TestResult {
    // moto enforcing IAM: three free actions create a user without any
    // policy, its access key, and a bucket.
    let server = haul_testkit::moto_with_auth(3);
    let setup = r#"
import boto3, sys
ep = sys.argv[1]
iam = boto3.client("iam", endpoint_url=ep)
iam.create_user(UserName="nobody")
k = iam.create_access_key(UserName="nobody")["AccessKey"]
boto3.client("s3", endpoint_url=ep).create_bucket(Bucket="locked")
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;
    let mut py = Command::new("python3");
    py.args(["-c", setup, &server.endpoint]);
    for (k, v) in haul_testkit::aws_env() {
        py.env(k, v);
    }
    let out = py.output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = String::from_utf8(out.stdout)?;
    let (ak, sk) = keys.trim().split_once(' ').ok_or("no keys")?;
    let env = [("AWS_ACCESS_KEY_ID", ak), ("AWS_SECRET_ACCESS_KEY", sk)];
    // Reading: fatal, one line, exit 2.
    fatal(
        &["ls", "-r", "s3://locked/", "--endpoint-url", &server.endpoint],
        &env,
        "access denied",
    )?;
    // Writing: each object fails with the reason, exit 1.
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("f.txt");
    std::fs::write(&f, b"x")?;
    let out = haul()
        .args([
            "cp",
            f.to_str().unwrap_or_default(),
            "s3://locked/f.txt",
            "--endpoint-url",
            &server.endpoint,
            "--json",
        ])
        .envs(env)
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout)?;
    let failure: Value = serde_json::from_str(text.lines().next().unwrap_or("{}"))?;
    assert_eq!(failure["code"], "AccessDenied", "{text}");
    assert_eq!(failure["op"], "put");
    assert!(
        failure["message"].as_str().is_some_and(|m| m.contains("access denied")),
        "{text}"
    );
    assert_eq!(std::fs::read(&f)?, b"x", "the source is untouched");
    Ok(())
}

#[test]
fn overlapping_source_and_destination_are_refused_before_anything_is_written() -> TestResult {
    // Copying a folder into its parent would overwrite source files before
    // they are read: a/x/y (ORIGINAL) would receive a/x/x/y (NESTED).
    let dir = tempfile::tempdir()?;
    let a = dir.path().join("a");
    write(&a.join("x/y"), b"ORIGINAL")?;
    write(&a.join("x/x/y"), b"NESTED")?;
    fatal(
        &[
            "cp",
            "-r",
            a.join("x").to_str().unwrap_or_default(),
            a.to_str().unwrap_or_default(),
        ],
        &[],
        "overlap",
    )?;
    fatal(
        &[
            "cp",
            "-r",
            a.to_str().unwrap_or_default(),
            a.to_str().unwrap_or_default(),
        ],
        &[],
        "overlap",
    )?;
    assert_eq!(std::fs::read(a.join("x/y"))?, b"ORIGINAL");
    assert_eq!(std::fs::read(a.join("x/x/y"))?, b"NESTED");
    // The same within one bucket, in both directions and across profiles.
    let b = bucket("overlap")?;
    let ep = endpoint();
    ok(&[
        "cp",
        "-r",
        a.to_str().unwrap_or_default(),
        &format!("s3://{b}/p/2024"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    fatal(
        &[
            "cp",
            "-r",
            &format!("s3://{b}/p/2024"),
            &format!("s3://{b}/p"),
            "--endpoint-url",
            &ep,
        ],
        &[],
        "overlap",
    )?;
    fatal(
        &[
            "cp",
            "-r",
            &format!("s3://{b}/p"),
            &format!("s3://{b}/p/2024/copy"),
            "--endpoint-url",
            &ep,
        ],
        &[],
        "overlap",
    )?;
    let before = inspect(&b, "")?;
    assert_eq!(before.len(), 2);
    // Siblings are fine.
    ok(&[
        "cp",
        "-r",
        &format!("s3://{b}/p/2024"),
        &format!("s3://{b}/p/2025"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    assert_eq!(inspect(&b, "p/2025/")?.len(), 2);
    Ok(())
}

#[test]
fn recursive_copy_of_a_single_object_copies_it() -> TestResult {
    let b = bucket("rsingle")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("one.txt");
    std::fs::write(&f, b"just one")?;
    ok(&[
        "cp",
        "-r",
        f.to_str().unwrap_or_default(),
        &format!("s3://{b}/one.txt"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    assert_eq!(inspect(&b, "")?["one.txt"]["md5"], md5_hex(b"just one"));
    let back = dir.path().join("back.txt");
    ok(&[
        "cp",
        "-r",
        &format!("s3://{b}/one.txt"),
        back.to_str().unwrap_or_default(),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    assert_eq!(std::fs::read(&back)?, b"just one");
    Ok(())
}

/// Issue 11, item 6: entries that cannot be objects are skipped and
/// reported one by one (JSON `skipped` events, a line on stderr), counted,
/// and exit 0; `--strict` makes them exit 1. Nothing after them is lost.
#[test]
fn files_that_cannot_be_objects_are_reported_and_skipped() -> TestResult {
    let b = bucket("links")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let t = dir.path().join("t");
    write(&t.join("real/file.txt"), b"data")?;
    write(&t.join("zzz.txt"), b"after the bad ones")?;
    std::os::unix::fs::symlink(t.join("real"), t.join("dirlink"))?;
    std::os::unix::fs::symlink(t.join("missing"), t.join("dangling"))?;
    std::os::unix::fs::symlink(t.join("real/file.txt"), t.join("filelink"))?;
    let made = Command::new("mkfifo").arg(t.join("fifo")).status()?;
    assert!(made.success());
    let src = t.to_str().unwrap_or_default();
    let dst = format!("s3://{b}/t");
    let out = run(&["cp", "-r", src, &dst, "--endpoint-url", &ep, "--json"])?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = last_json(&out)?;
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let skipped: BTreeMap<String, String> = lines
        .iter()
        .filter(|l| l["event"] == "skipped")
        .map(|l| {
            (
                l["key"].as_str().unwrap_or_default().to_string(),
                l["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("dangling", "symlink"),
        ("dirlink", "symlink"),
        ("fifo", "special_file"),
    ]
    .into_iter()
    .map(|(k, r)| (k.to_string(), r.to_string()))
    .collect();
    assert_eq!(skipped, want);
    assert_eq!(
        (summary["unlisted"].as_u64(), summary["failed"].as_u64()),
        (Some(3), Some(0)),
        "{summary}"
    );
    // Links to files are followed; real files are copied, also after the bad entries.
    assert_eq!(
        inspect(&b, "")?.keys().cloned().collect::<Vec<_>>(),
        ["t/filelink", "t/real/file.txt", "t/zzz.txt"]
    );
    // A human line per entry on stderr; --strict exits 1.
    let strict = run(&["sync", src, &dst, "--endpoint-url", &ep, "--strict", "--no-journal"])?;
    assert_eq!(strict.status.code(), Some(1), "{}", stderr(&strict));
    let err = stderr(&strict);
    assert!(
        err.contains("skipped dangling: a dangling symbolic link [symlink]"),
        "{err}"
    );
    assert!(err.contains("skipped fifo: "), "{err}");
    Ok(())
}

/// Issue 11, item 9: SIGTERM is handled like Ctrl-C — a streamed multipart
/// upload (stdin) is aborted, nothing is left on the server, and haul exits
/// with its documented code for an interrupted run (1).
#[test]
fn sigterm_aborts_the_multipart_upload() -> TestResult {
    use std::io::Write as _;
    let b = bucket("sigterm")?;
    let ep = endpoint();
    let mut child = haul()
        .args([
            "cp",
            "-",
            &format!("s3://{b}/dump.sql"),
            "--endpoint-url",
            &ep,
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // More than one part, then the writer pauses: the upload is open.
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(&data(6 * MIB, 9))?;
    stdin.flush()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while open_uploads(&b, "")?.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(open_uploads(&b, "")?, ["dump.sql"], "the upload is under way");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    assert!(killed.success());
    let out = child.wait_with_output()?;
    drop(stdin);
    assert_eq!(out.status.code(), Some(1), "exit code after SIGTERM: {:?}", out.status);
    assert!(stderr(&out).contains("interrupted (SIGTERM)"), "{}", stderr(&out));
    assert_eq!(
        open_uploads(&b, "")?,
        Vec::<String>::new(),
        "the multipart upload was aborted"
    );
    assert!(inspect(&b, "")?.is_empty(), "no object was written");
    Ok(())
}

/// Issue 11, item 9: a copy into a local directory leaves no `.haul-tmp`
/// behind (`diff -r src dst` is clean), and temp files of crashed runs
/// older than a day are cleaned at start.
#[test]
fn a_copy_into_a_local_directory_leaves_no_working_directory() -> TestResult {
    let b = bucket("haultmp")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    write(&src.join("a/x.txt"), b"x")?;
    write(&src.join("big.bin"), &data(6 * MIB, 3))?;
    let dst = dir.path().join("dst");
    // Debris of a crash a week ago, and a temp file of a run in flight.
    let tmp = dst.join(".haul-tmp");
    write(&tmp.join("mpu-0123abcd/upload.json"), b"{}")?;
    write(&tmp.join("w-00000000deadbeef"), b"half")?;
    write(&tmp.join("w-live"), b"in flight")?;
    let week_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7 * 86_400);
    for old in ["mpu-0123abcd", "w-00000000deadbeef"] {
        std::fs::File::open(tmp.join(old))?.set_modified(week_ago)?;
    }
    let (s, d) = (src.to_str().unwrap_or_default(), dst.to_str().unwrap_or_default());
    ok(&["cp", "-r", s, d, "--multipart-threshold", "5MiB", "--part-size", "5MiB"])?;
    let left: Vec<String> = std::fs::read_dir(&tmp)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(left, ["w-live"], "stale debris removed, the live temp file kept");
    // Without anything else in it, it goes once the run is over.
    std::fs::remove_file(tmp.join("w-live"))?;
    ok(&["cp", "-r", s, d])?;
    assert!(!tmp.exists(), "an empty .haul-tmp is left in the destination");
    // Also after a download in parts from a bucket.
    ok(&["cp", "-r", s, &format!("s3://{b}/in"), "--endpoint-url", &ep])?;
    let back = dir.path().join("back");
    let bk = back.to_str().unwrap_or_default();
    ok(&[
        "cp",
        "-r",
        &format!("s3://{b}/in"),
        bk,
        "--endpoint-url",
        &ep,
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
    ])?;
    assert!(
        !back.join(".haul-tmp").exists(),
        "an empty .haul-tmp is left after a download"
    );
    assert_eq!(std::fs::read(back.join("big.bin"))?, data(6 * MIB, 3));
    Ok(())
}

#[test]
fn sync_copies_only_what_changed_and_deletes_with_a_guard() -> TestResult {
    let b = bucket("sync")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("data");
    for i in 0..12 {
        write(
            &src.join(format!("2026/11/{:02}/f{i}.json", i % 3)),
            format!("{{\"i\":{i}}}").as_bytes(),
        )?;
    }
    let s = src.to_str().unwrap_or_default();
    let dst = format!("s3://{b}/mirror");
    let summary = last_json;
    let first = summary(&ok(&["sync", s, &dst, "--endpoint-url", &ep, "--json"])?)?;
    assert_eq!(
        (first["objects"].as_u64(), first["skipped"].as_u64()),
        (Some(12), Some(0)),
        "{first}"
    );
    let second = summary(&ok(&["sync", s, &dst, "--endpoint-url", &ep, "--json"])?)?;
    assert_eq!(
        (second["objects"].as_u64(), second["skipped"].as_u64()),
        (Some(0), Some(12)),
        "{second}"
    );
    // A changed file (same size, newer) and an extraneous object.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write(&src.join("2026/11/00/f0.json"), b"{\"i\":X}")?;
    ok(&[
        "cp",
        &format!("{s}/2026/11/01/f1.json"),
        &format!("{dst}/stray.json"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    let diff = String::from_utf8(ok(&["diff", s, &dst, "--endpoint-url", &ep])?.stdout)?;
    let rows: Vec<&str> = diff.lines().collect();
    assert_eq!(rows[0], "action\treason\tkey\tsize\tetag\tmtime");
    assert_eq!(rows.len(), 3, "{diff}");
    assert!(
        rows[1].starts_with("copy\tsource is newer") && rows[1].contains("2026/11/00/f0.json"),
        "{diff}"
    );
    assert!(rows[2].starts_with("delete\tnot in the source\tstray.json"), "{diff}");
    // --max-delete below the count: copies happen, nothing is deleted, exit 1.
    let out = run(&[
        "sync",
        s,
        &dst,
        "--endpoint-url",
        &ep,
        "--delete",
        "--max-delete",
        "0",
        "--json",
    ])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stdout)?.contains("more than --max-delete 0"));
    assert!(inspect(&b, "mirror/stray.json")?.contains_key("mirror/stray.json"));
    // A dry run plans the delete and changes nothing.
    let dry = String::from_utf8(ok(&["sync", s, &dst, "--endpoint-url", &ep, "--delete", "--dry-run"])?.stdout)?;
    let rows: Vec<&str> = dry.lines().collect();
    assert_eq!(rows.len(), 2, "the same plan as diff: {dry}");
    assert!(rows[1].starts_with("delete\tnot in the source\tstray.json\t"), "{dry}");
    ok(&["sync", s, &dst, "--endpoint-url", &ep, "--delete", "-q"])?;
    let seen = inspect(&b, "mirror/")?;
    assert_eq!(seen.len(), 12);
    assert_eq!(seen["mirror/2026/11/00/f0.json"]["md5"], md5_hex(b"{\"i\":X}"));
    // Now nothing differs.
    let diff = String::from_utf8(ok(&["diff", s, &dst, "--endpoint-url", &ep, "--json"])?.stdout)?;
    let last: Value = serde_json::from_str(diff.lines().last().unwrap_or("{}"))?;
    assert_eq!(
        (last["copy"].as_u64(), last["delete"].as_u64(), last["same"].as_u64()),
        (Some(0), Some(0), Some(12))
    );
    // Bad input: an unknown comparison mode, a missing bucket.
    let bad = run(&["sync", s, &dst, "--endpoint-url", &ep, "--compare", "bogus"])?;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("unknown comparison mode \"bogus\""),
        "{}",
        stderr(&bad)
    );
    fatal(
        &["sync", s, "s3://no-such-bucket-haul/x", "--endpoint-url", &ep],
        &[],
        "does not exist",
    )?;
    fatal(
        &["sync", "s3://no-such-bucket-haul/x", &dst, "--endpoint-url", &ep],
        &[],
        "does not exist",
    )?;
    Ok(())
}

#[test]
fn part_files_define_the_shards_and_bad_ones_are_refused() -> TestResult {
    let b = bucket("parts")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("t");
    for k in ["000/a", "000/b", "001/c", "00top", "01/x", "other"] {
        write(&src.join(k), k.as_bytes())?;
    }
    let s = src.to_str().unwrap_or_default();
    let dst = format!("s3://{b}/p");
    let parts = dir.path().join("parts.txt");
    // The root keys starting 00 (not descending), and everything under 000/.
    std::fs::write(&parts, "/,00\n,000/\n")?;
    let pf = parts.to_str().unwrap_or_default();
    ok(&[
        "sync",
        s,
        &dst,
        "--endpoint-url",
        &ep,
        "--part-file",
        pf,
        "--no-journal",
        "-q",
    ])?;
    assert_eq!(
        inspect(&b, "p/")?.keys().cloned().collect::<Vec<_>>(),
        ["p/000/a", "p/000/b", "p/00top"]
    );
    // Malformed and overlapping part files: a clear error, nothing copied.
    std::fs::write(&parts, "/,00\nno comma here\n")?;
    fatal(
        &[
            "sync",
            s,
            &format!("s3://{b}/q"),
            "--endpoint-url",
            &ep,
            "--part-file",
            pf,
        ],
        &[],
        "line 2: no comma",
    )?;
    std::fs::write(&parts, ",00\n,000/\n")?;
    fatal(
        &[
            "sync",
            s,
            &format!("s3://{b}/q"),
            "--endpoint-url",
            &ep,
            "--part-file",
            pf,
        ],
        &[],
        "lines 1 and 2 overlap",
    )?;
    assert!(inspect(&b, "q/")?.is_empty());
    Ok(())
}

#[test]
fn verify_checks_content_by_the_strongest_common_means() -> TestResult {
    let b = bucket("verify")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("v");
    let big = data(11 * MIB, 9);
    write(&src.join("big.bin"), &big)?;
    write(&src.join("small.txt"), b"small")?;
    write(&src.join("gone.txt"), b"gone")?;
    let s = src.to_str().unwrap_or_default();
    let dst = format!("s3://{b}/v");
    ok(&[
        "cp",
        "-r",
        s,
        &dst,
        "--endpoint-url",
        &ep,
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
        "-q",
    ])?;
    // Everything matches: the local files' ETags are recomputed (the big one
    // as a multipart ETag with S3's part size).
    let out = ok(&["verify", s, &dst, "--endpoint-url", &ep, "--all"])?;
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains("same\tbig.bin\trecomputed ETag"), "{text}");
    assert!(text.contains("same\tsmall.txt\trecomputed ETag"), "{text}");
    // Damage the bucket: same size, other bytes; a missing object; an extra one.
    let other = dir.path().join("other.txt");
    std::fs::write(&other, b"SMALL")?;
    ok(&[
        "cp",
        other.to_str().unwrap_or_default(),
        &format!("{dst}/small.txt"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    ok(&["rm", &format!("{dst}/gone.txt"), "--endpoint-url", &ep, "-q"])?;
    ok(&[
        "cp",
        other.to_str().unwrap_or_default(),
        &format!("{dst}/extra.txt"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    let out = run(&["verify", s, &dst, "--endpoint-url", &ep, "--json"])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let status: BTreeMap<String, String> = lines
        .iter()
        .filter(|l| l["key"].is_string())
        .map(|l| {
            (
                l["key"].as_str().unwrap_or_default().to_string(),
                l["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        status.get("small.txt").map(String::as_str),
        Some("mismatch"),
        "{lines:?}"
    );
    assert_eq!(status.get("gone.txt").map(String::as_str), Some("missing"), "{lines:?}");
    assert_eq!(
        status.get("v/extra.txt").map(String::as_str),
        Some("extra"),
        "{lines:?}"
    );
    let summary = lines.last().ok_or("no summary")?;
    assert_eq!(
        (
            summary["same"].as_u64(),
            summary["missing"].as_u64(),
            summary["mismatched"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    // Bucket to bucket after a server-side copy: ETags compare directly.
    ok(&["cp", "-r", &dst, &format!("s3://{b}/copy"), "--endpoint-url", &ep, "-q"])?;
    let out = ok(&[
        "verify",
        &dst,
        &format!("s3://{b}/copy"),
        "--endpoint-url",
        &ep,
        "--all",
    ])?;
    assert!(String::from_utf8(out.stdout)?.contains("same\tsmall.txt\tETag"));
    Ok(())
}

#[test]
fn checksum_mode_finds_equal_size_changes_that_mtime_misses() -> TestResult {
    let b = bucket("cksum")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("t/data.csv");
    write(&f, b"a,b,c\n1,2,3\n")?;
    write(&dir.path().join("t/other.csv"), b"x\n")?;
    let s = dir.path().join("t");
    let s = s.to_str().unwrap_or_default();
    let dst = format!("s3://{b}/t");
    ok(&["sync", s, &dst, "--endpoint-url", &ep, "--no-journal", "-q"])?;
    // Same size, other bytes, and the old modification time put back.
    let mtime = std::fs::metadata(&f)?.modified()?;
    std::fs::write(&f, b"a,b,c\n9,9,9\n")?;
    std::fs::File::options().write(true).open(&f)?.set_modified(mtime)?;
    let summary = |args: &[&str]| last_json(&ok(args)?);
    let etag = summary(&["sync", s, &dst, "--endpoint-url", &ep, "--no-journal", "--json"])?;
    assert_eq!(etag["objects"], 0, "size and mtime cannot see it: {etag}");
    let cksum = summary(&[
        "sync",
        s,
        &dst,
        "--endpoint-url",
        &ep,
        "--no-journal",
        "--json",
        "--compare",
        "checksum",
    ])?;
    assert_eq!(
        (cksum["objects"].as_u64(), cksum["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{cksum}"
    );
    assert_eq!(
        inspect(&b, "t/data.csv")?["t/data.csv"]["md5"],
        md5_hex(b"a,b,c\n9,9,9\n")
    );
    Ok(())
}

#[test]
fn preserve_etag_keeps_three_multipart_layouts() -> TestResult {
    let (a, b) = (bucket("pea")?, bucket("peb")?);
    let ep = endpoint();
    // Three sources uploaded by boto3 with different part sizes: 5 MiB,
    // 6 MiB (non-default), and boto3's own default (8 MiB).
    let setup = r#"
import boto3, sys
from boto3.s3.transfer import TransferConfig
ep, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=ep)
def body(n, seed):
    return bytes((i * seed) % 251 for i in range(n))
for name, part in [("p5", 5 << 20), ("p6", 6 << 20)]:
    data = body(17 << 20, part >> 20)
    u = s3.create_multipart_upload(Bucket=bucket, Key=name, ContentType="application/x-test", Metadata={"layout": name})
    parts = []
    for i in range(0, len(data), part):
        r = s3.upload_part(Bucket=bucket, Key=name, UploadId=u["UploadId"], PartNumber=len(parts) + 1, Body=data[i:i + part])
        parts.append({"PartNumber": len(parts) + 1, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key=name, UploadId=u["UploadId"], MultipartUpload={"Parts": parts})
import io
s3.upload_fileobj(io.BytesIO(body(20 << 20, 3)), bucket, "p8", Config=TransferConfig(multipart_threshold=8 << 20))
"#;
    let mut py = Command::new("python3");
    py.args(["-c", setup, &ep, &a]);
    for (k, v) in haul_testkit::aws_env() {
        py.env(k, v);
    }
    let out = py.output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let src = inspect(&a, "")?;
    assert_eq!(src.len(), 3);
    for (k, o) in &src {
        assert!(
            o["etag"].as_str().is_some_and(|e| e.contains('-')),
            "{k} is multipart: {o}"
        );
    }
    // Server-side (UploadPartCopy), streamed, and into a local directory.
    ok(&[
        "cp",
        "-r",
        &format!("s3://{a}/"),
        &format!("s3://{b}/server/"),
        "--endpoint-url",
        &ep,
        "--preserve-etag",
        "-q",
    ])?;
    ok(&[
        "cp",
        "-r",
        &format!("s3://{a}/"),
        &format!("s3://{b}/streamed/"),
        "--endpoint-url",
        &ep,
        "--preserve-etag",
        "--no-server-side",
        "-q",
    ])?;
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("l");
    ok(&[
        "cp",
        "-r",
        &format!("s3://{a}/"),
        local.to_str().unwrap_or_default(),
        "--endpoint-url",
        &ep,
        "--preserve-etag",
        "-q",
    ])?;
    for prefix in ["server/", "streamed/"] {
        let got = inspect(&b, prefix)?;
        for (k, o) in &src {
            let d = &got[&format!("{prefix}{k}")];
            assert_eq!(d["etag"], o["etag"], "{prefix}{k}");
            assert_eq!(d["md5"], o["md5"], "{prefix}{k}");
            assert_eq!(
                d["metadata"]["layout"], o["metadata"]["layout"],
                "{prefix}{k}: metadata survives the part copy"
            );
        }
    }
    let ls = String::from_utf8(ok(&["ls", "-r", "--json", local.to_str().unwrap_or_default()])?.stdout)?;
    let local_etags: BTreeMap<String, String> = ls
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["key"].as_str()?.to_string(), v["etag"].as_str()?.to_string())))
        .collect();
    for (k, o) in &src {
        assert_eq!(local_etags.get(k).map(String::as_str), o["etag"].as_str(), "local {k}");
    }
    // From the local copy, the layout cannot be read: the AWS CLI's 8 MiB
    // rule is right for p8 only; the others are reported, not silently changed.
    let out = run(&[
        "cp",
        "-r",
        local.to_str().unwrap_or_default(),
        &format!("s3://{b}/again/"),
        "--endpoint-url",
        &ep,
        "--preserve-etag",
        "--json",
    ])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // Objects run concurrently: failures come in completion order.
    let mut failed: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "failure")
        .filter_map(|l| l["key"].as_str())
        .collect();
    failed.sort();
    assert_eq!(failed, ["p5", "p6"], "{lines:?}");
    assert!(
        lines
            .iter()
            .filter(|l| l["event"] == "failure")
            .all(|l| l["code"] == "EtagNotPreserved"),
        "{lines:?}"
    );
    assert_eq!(inspect(&b, "again/p8")?["again/p8"]["etag"], src["p8"]["etag"]);
    Ok(())
}

#[test]
fn sync_from_a_key_list_and_from_an_s3_inventory() -> TestResult {
    let (a, b, inv) = (bucket("lista")?, bucket("listb")?, bucket("inv")?);
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let t = dir.path().join("t");
    let keys = ["2026/a.json", "2026/b c.json", "2026/d+e.json", "2027/f.json", "g.json"];
    for k in keys {
        write(&t.join(k), k.as_bytes())?;
    }
    ok(&[
        "cp",
        "-r",
        t.to_str().unwrap_or_default(),
        &format!("s3://{a}/src"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    // A key list: only those keys, looked up in the destination.
    let list = dir.path().join("keys.txt");
    std::fs::write(&list, "2026/a.json\ng.json\n")?;
    let l = list.to_str().unwrap_or_default();
    ok(&[
        "sync",
        &format!("s3://{a}/src"),
        &format!("s3://{b}/fromlist"),
        "--endpoint-url",
        &ep,
        "--files-from",
        l,
        "-q",
    ])?;
    assert_eq!(
        inspect(&b, "fromlist/")?.keys().cloned().collect::<Vec<_>>(),
        ["fromlist/2026/a.json", "fromlist/g.json"]
    );
    let again = ok(&[
        "sync",
        &format!("s3://{a}/src"),
        &format!("s3://{b}/fromlist"),
        "--endpoint-url",
        &ep,
        "--files-from",
        l,
        "--json",
    ])?;
    let s = last_json(&again)?;
    assert_eq!((s["objects"].as_u64(), s["skipped"].as_u64()), (Some(0), Some(2)));
    std::fs::write(&list, "nope.json\n")?;
    let out = run(&[
        "sync",
        &format!("s3://{a}/src"),
        &format!("s3://{b}/fromlist"),
        "--endpoint-url",
        &ep,
        "--files-from",
        l,
    ])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("listed, but not in the source"),
        "{}",
        stderr(&out)
    );

    // An S3 Inventory of bucket `a` (CSV.gz, URL-encoded keys), written by
    // an independent script into bucket `inv`.
    let make = r#"
import boto3, csv, gzip, hashlib, io, json, sys, urllib.parse
ep, src, inv, bad = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "bad"
s3 = boto3.client("s3", endpoint_url=ep)
rows = io.StringIO()
w = csv.writer(rows, quoting=csv.QUOTE_ALL)
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=src):
    for o in page.get("Contents", []):
        w.writerow([src, urllib.parse.quote_plus(o["Key"], safe="/"), o["Size"], o["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.000Z"), o["ETag"].strip('"'), o["StorageClass"]])
data = gzip.compress(rows.getvalue().encode())
s3.put_object(Bucket=inv, Key="inv/data/part-0.csv.gz", Body=data)
md5 = hashlib.md5(data).hexdigest() if not bad else "0" * 32
manifest = {"sourceBucket": src, "destinationBucket": "arn:aws:s3:::" + inv, "version": "2016-11-30", "fileFormat": "CSV",
            "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass",
            "files": [{"key": "inv/data/part-0.csv.gz", "size": len(data), "MD5checksum": md5}]}
s3.put_object(Bucket=inv, Key="inv/manifest.json", Body=json.dumps(manifest).encode())
"#;
    let inventory = |bad: &str| -> TestResult {
        let mut py = Command::new("python3");
        py.args(["-c", make, &ep, &a, &inv, bad]);
        for (k, v) in haul_testkit::aws_env() {
            py.env(k, v);
        }
        let out = py.output()?;
        assert!(out.status.success(), "{}", stderr(&out));
        Ok(())
    };
    inventory("good")?;
    let manifest = format!("s3://{inv}/inv/manifest.json");
    ok(&[
        "sync",
        &format!("s3://{a}/src/2026"),
        &format!("s3://{b}/frominv"),
        "--endpoint-url",
        &ep,
        "--inventory",
        &manifest,
        "-q",
    ])?;
    let got = inspect(&b, "frominv/")?;
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["frominv/a.json", "frominv/b c.json", "frominv/d+e.json"],
        "URL-decoded keys"
    );
    assert_eq!(got["frominv/d+e.json"]["md5"], md5_hex(b"2026/d+e.json"));
    // A data file whose MD5 does not match the manifest: nothing copied.
    inventory("bad")?;
    fatal(
        &[
            "sync",
            &format!("s3://{a}/src"),
            &format!("s3://{b}/badinv"),
            "--endpoint-url",
            &ep,
            "--inventory",
            &manifest,
        ],
        &[],
        "the manifest says 00000000000000000000000000000000: nothing was copied",
    )?;
    assert!(inspect(&b, "badinv/")?.is_empty());
    Ok(())
}

#[test]
fn restore_requests_archived_objects_once() -> TestResult {
    let b = bucket("restore")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    write(&dir.path().join("cold/a.bin"), b"a")?;
    write(&dir.path().join("cold/b.bin"), b"b")?;
    write(&dir.path().join("warm/c.bin"), b"c")?;
    ok(&[
        "cp",
        "-r",
        dir.path().join("cold").to_str().unwrap_or_default(),
        &format!("s3://{b}/old/cold"),
        "--endpoint-url",
        &ep,
        "--storage-class",
        "GLACIER",
        "-q",
    ])?;
    ok(&[
        "cp",
        "-r",
        dir.path().join("warm").to_str().unwrap_or_default(),
        &format!("s3://{b}/old/warm"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    let summary = |args: &[&str]| last_json(&ok(args)?);
    let dry = summary(&[
        "restore",
        &format!("s3://{b}/old/"),
        "--days",
        "2",
        "--endpoint-url",
        &ep,
        "--dry-run",
        "--json",
    ])?;
    assert_eq!(
        (dry["requested"].as_u64(), dry["not_archived"].as_u64()),
        (Some(2), Some(1)),
        "{dry}"
    );
    let first = summary(&[
        "restore",
        &format!("s3://{b}/old/"),
        "--days",
        "2",
        "--tier",
        "Bulk",
        "--endpoint-url",
        &ep,
        "--json",
    ])?;
    assert_eq!(
        (first["requested"].as_u64(), first["failed"].as_u64()),
        (Some(2), Some(0)),
        "{first}"
    );
    // The second run finds them restored (or restoring) and asks for nothing.
    let second = summary(&[
        "restore",
        &format!("s3://{b}/old/"),
        "--days",
        "2",
        "--endpoint-url",
        &ep,
        "--json",
    ])?;
    assert_eq!(second["requested"], 0, "{second}");
    assert_eq!(
        second["already_restored"].as_u64().unwrap_or(0) + second["in_progress"].as_u64().unwrap_or(0),
        2,
        "{second}"
    );
    fatal(
        &["restore", "./local", "--days", "1"],
        &[],
        "restore works on s3:// locations",
    )?;
    Ok(())
}
