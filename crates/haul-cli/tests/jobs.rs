//! Jobs as data, end to end: every command prints itself as a job file
//! (`--print-job`), `haul run` reads it back to the same job, bad job files
//! are refused with the file, line and column before anything runs, and a
//! job run from its file does what the flags do.

mod common;

use std::process::Output;

use serde_json::Value;

use common::*;

type R = Result<(), Box<dyn std::error::Error>>;

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `haul ARGS --print-job`, then `haul run FILE --print-job` of what it
/// printed: the two TOML texts are the same job, and the job file holds
/// the non-default options given.
fn round_trip(args: &[&str], expect: &[&str]) -> R {
    let mut with = args.to_vec();
    with.push("--print-job");
    let first = ok(&with)?;
    let toml = text(&first);
    for e in expect {
        assert!(toml.contains(e), "{args:?}: {e:?} missing from\n{toml}");
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("job.toml");
    std::fs::write(&file, &toml)?;
    let file = file.to_str().ok_or("path")?;
    let again = text(&ok(&["run", file, "--print-job"])?);
    assert_eq!(toml, again, "{args:?}: not the identity");
    Ok(())
}

#[test]
fn every_command_prints_a_job_that_runs_back_to_itself() -> R {
    let dir = tempfile::tempdir()?;
    let d = dir.path().to_str().ok_or("path")?;
    round_trip(
        &[
            "cp",
            "-r",
            d,
            "s3://bkt/in/",
            "--storage-class",
            "STANDARD_IA",
            "--metadata",
            "team=data",
            "--tag",
            "k=v",
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            "alias/x",
            "--include",
            "**/*.gz",
            "--exclude",
            "tmp/**",
            "--part-size",
            "64MiB",
            "-j",
            "32",
            "--dst-profile",
            "dr",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--no-server-side",
            "--preserve-etag",
            "--require-tags",
            "--strict",
            "--dry-run",
            "--request-timeout",
            "45s",
            "--max-requests",
            "16",
        ],
        &[
            "[cp]",
            "recursive = true",
            "dry_run = true",
            "storage_class = \"STANDARD_IA\"",
            "sse = \"aws:kms\"",
            "part_size = \"64MiB\"",
            "concurrency = 32",
            "profile = \"dr\"",
            "request_timeout = \"45s\"",
            "preserve_etag = true",
            "include = [\"**/*.gz\"]",
        ],
    )?;
    round_trip(
        &[
            "sync",
            d,
            "s3://bkt/x/",
            "--delete",
            "--max-delete",
            "100",
            "--compare",
            "size",
            "--no-split",
            "--state-dir",
            d,
            "--fresh",
            "--metadata-directive",
            "REPLACE",
            "--src-region",
            "eu-west-1",
        ],
        &[
            "[sync]",
            "delete = true",
            "max_delete = 100",
            "compare = \"size\"",
            "metadata_directive = \"REPLACE\"",
        ],
    )?;
    round_trip(
        &["diff", "s3://abc/x", "s3://bkt/y", "--all", "--compare", "checksum"],
        &["[diff]", "all = true"],
    )?;
    round_trip(
        &["verify", d, "s3://bkt/y", "-j", "4", "--exclude", "*.tmp"],
        &["[verify]", "concurrency = 4"],
    )?;
    round_trip(
        &["rm", "-r", "s3://bkt/tmp/", "--dry-run", "--profile", "ops"],
        &["[rm]", "recursive = true"],
    )?;
    round_trip(
        &["restore", "s3://bkt/2019/", "--days", "7", "--tier", "Bulk"],
        &["[restore]", "days = 7", "tier = \"Bulk\""],
    )?;
    round_trip(
        &[
            "bundle",
            "s3://bkt/logs/",
            "s3://arch/logs/",
            "--max-members",
            "500",
            "--max-bytes",
            "2GiB",
            "--group-by-prefix",
            "2",
            "--storage-class",
            "DEEP_ARCHIVE",
            "--dlq",
            "dead.jsonl",
            "--run",
            "r1",
            "--compress",
            "zstd",
            "--tags",
        ],
        &[
            "[bundle]",
            "compress = \"zstd\"",
            "tags = true",
            "max_members = 500",
            "max_bytes = \"2GiB\"",
            "storage_class = \"DEEP_ARCHIVE\"",
        ],
    )?;
    round_trip(
        &[
            "unbundle",
            "s3://arch/logs/r1-000001.tar",
            d,
            "--include",
            "2019/**",
            "--overwrite",
        ],
        &["[unbundle]", "overwrite = true", "include = [\"2019/**\"]"],
    )?;
    round_trip(
        &[
            "watch",
            d,
            "s3://bkt/ingest",
            "--delete-after-upload",
            "--prune-empty-dirs",
            "--settle",
            "5s",
            "--if-exists",
            "rename",
            "--metrics-addr",
            "127.0.0.1:9464",
            "--max-attempts",
            "7",
        ],
        &[
            "[watch]",
            "delete_after_upload = true",
            "settle = \"5s\"",
            "if_exists = \"rename\"",
        ],
    )?;
    Ok(())
}

#[test]
fn commands_that_are_not_jobs_refuse_print_job() -> R {
    let o = run(&["ls", "s3://bkt/", "--print-job"])?;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a job"), "{}", stderr(&o));
    Ok(())
}

/// Runs `haul run` on a job file with `body`; it must fail with exit 2
/// before doing anything, and say `expect`.
fn refused(body: &str, expect: &str) -> R {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, body)?;
    let o = run(&["run", file.to_str().ok_or("path")?])?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{body}: {err}");
    assert!(err.contains(expect), "{body}: expected {expect:?} in {err}");
    assert!(err.contains("bad.toml"), "{body}: the file is named: {err}");
    Ok(())
}

#[test]
fn bad_job_files_are_refused_with_file_line_and_column() -> R {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    std::fs::create_dir(&src)?;
    let s = src.display();
    // Unknown key, with its position.
    refused(
        &format!("[cp]\nsrc = \"{s}\"\ndst = \"s3://bkt/x\"\nrecursiv = true\n"),
        "bad.toml:4:1: unknown field `recursiv`",
    )?;
    // Unknown key in a nested table.
    refused(
        &format!("[sync]\nsrc = \"{s}\"\ndst = \"s3://bkt/x\"\n[sync.transfer]\nconcurency = 4\n"),
        "bad.toml:5:1: unknown field `concurency`",
    )?;
    // Wrong type.
    refused(
        &format!("[cp]\nsrc = \"{s}\"\ndst = \"s3://bkt/x\"\nrecursive = \"yes\"\n"),
        "bad.toml:4:13:",
    )?;
    // A bad location.
    refused(
        "[cp]\nsrc = \"s3://\"\ndst = \"s3://bkt/x\"\n",
        "bad.toml:2:7: invalid location",
    )?;
    // A bad size.
    refused(
        &format!("[cp]\nsrc = \"{s}\"\ndst = \"s3://bkt/x\"\n[cp.transfer]\npart_size = \"lots\"\n"),
        "bad.toml:5:13: invalid size",
    )?;
    // A missing required key.
    refused(&format!("[cp]\nsrc = \"{s}\"\n"), "missing field `dst`")?;
    // Two jobs, or none.
    refused(
        &format!("[cp]\nsrc = \"{s}\"\ndst = \"s3://bkt/x\"\n[rm]\nlocation = \"s3://bkt/y\"\n"),
        "exactly one job table",
    )?;
    refused("", "exactly one job table")?;
    // Options the flags refuse are refused in files too.
    refused(
        &format!("[sync]\nsrc = \"{s}\"\ndst = \"s3://bkt/x\"\nmax_delete = 3\n"),
        "--max-delete only makes sense with --delete",
    )?;
    // Secrets never go in a job file.
    refused(
        &format!(
            "[cp]\nsrc = \"{s}\"\ndst = \"s3://bkt/x\"\n[cp.dst_conn]\nprofile = \"p\"\n  aws_secret_access_key = \"abc\"\n"
        ),
        "bad.toml:6:3: \"aws_secret_access_key\" looks like a credential",
    )?;
    refused(
        &format!("[cp]\nsrc = \"{s}\"\ndst = \"s3://bkt/x\"\nsession_token = \"abc\"\n"),
        "name an AWS profile instead",
    )?;
    Ok(())
}

/// The summary JSON without what differs from run to run.
fn stable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for k in ["elapsed_secs", "bytes_per_sec", "retries"] {
            o.remove(k);
        }
    }
    v
}

#[test]
fn a_job_file_does_what_its_flags_do() -> R {
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("data");
    for (k, n) in [("a/1.bin", 10), ("a/2.bin", 2000), ("b/3.txt", 7 * MIB + 1)] {
        write(&src.join(k), &data(n, n as u64))?;
    }
    let src = src.to_str().ok_or("path")?.to_string();
    let (flags_bucket, job_bucket) = (bucket("jobflags")?, bucket("jobfile")?);
    let args = |b: &str| -> Vec<String> {
        [
            "sync",
            &src,
            &format!("s3://{b}/in/"),
            "--endpoint-url",
            &ep,
            "--metadata",
            "team=data",
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
            "--no-journal",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let by_flags = ok(&args(&flags_bucket).iter().map(String::as_str).collect::<Vec<_>>())?;

    let mut printed = args(&job_bucket);
    printed.push("--print-job".into());
    let toml = text(&ok(&printed.iter().map(String::as_str).collect::<Vec<_>>())?);
    let file = dir.path().join("sync.toml");
    std::fs::write(&file, &toml)?;
    let by_file = ok(&["run", file.to_str().ok_or("path")?, "--json"])?;

    assert_eq!(stable(last_json(&by_flags)?), stable(last_json(&by_file)?));
    assert_eq!(last_json(&by_file)?["objects"], 3);
    let (a, b) = (inspect(&flags_bucket, "in/")?, inspect(&job_bucket, "in/")?);
    assert_eq!(a.len(), 3);
    let keys = |m: &std::collections::BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b));
    for (k, o) in &a {
        let p = &b[k];
        for field in ["size", "md5", "etag", "content_type"] {
            assert_eq!(o[field], p[field], "{k}: {field}");
        }
        assert_eq!(o["metadata"]["team"], p["metadata"]["team"], "{k}");
    }

    // A dry run of the file changes nothing.
    let fresh = bucket("jobdry")?;
    let mut printed = args(&fresh);
    printed.push("--print-job".into());
    let toml = text(&ok(&printed.iter().map(String::as_str).collect::<Vec<_>>())?);
    std::fs::write(&file, &toml)?;
    ok(&["run", file.to_str().ok_or("path")?, "--dry-run"])?;
    assert!(inspect(&fresh, "")?.is_empty(), "a dry run wrote objects");
    Ok(())
}
