//! `haul unbundle` of a member larger than a part, and `haul bundle
//! --versions` of a versioned bucket, end to end on moto, checked with
//! boto3: the restored object's bytes, metadata and part count; every
//! version packed with its version id and its own bytes.

mod common;

use std::process::Command;

use serde_json::Value;

use common::*;

type R = Result<(), Box<dyn std::error::Error>>;

/// A 12 MiB member restored with `--part-size 5MiB`: three parts, copied
/// server-side on the same endpoint and read in ranges from another (the
/// same server under another spelling is another copy domain); bytes, content
/// type and metadata as bundled; no upload left open.
#[test]
fn a_large_member_unbundles_in_parts_on_the_same_endpoint_and_across() -> R {
    let b = bucket("unbig")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let big = data(12 * MIB, 5);
    write(&src.join("big.bin"), &big)?;
    write(&src.join("small.txt"), b"small")?;
    ok(&[
        "cp",
        "-r",
        "--endpoint-url",
        &ep,
        &src.to_string_lossy(),
        &format!("s3://{b}/src/"),
        "--content-type",
        "application/x-haul",
        "--metadata",
        "team=data",
        "-q",
    ])?;
    ok(&[
        "bundle",
        "--endpoint-url",
        &ep,
        &format!("s3://{b}/src/"),
        &format!("s3://{b}/arch/"),
        "--run",
        "r1",
    ])?;
    let archive = format!("s3://{b}/arch/r1-000001.tar");
    // The same server under another spelling: another copy domain.
    let other = format!("{ep}/");
    for (prefix, extra) in [
        ("same/", vec![]),
        ("across/", vec!["--dst-endpoint-url", other.as_str()]),
    ] {
        let dst = format!("s3://{b}/{prefix}");
        let mut args = vec!["unbundle", "--endpoint-url", &ep, &archive, &dst, "--part-size", "5MiB"];
        args.extend(extra);
        ok(&args)?;
        let back = inspect(&b, prefix)?;
        let got = back.get(&format!("{prefix}big.bin")).ok_or("big.bin not restored")?;
        assert_eq!(got["md5"], haul_store::checksum::md5_hex(&big), "{prefix}");
        assert_eq!(got["size"], 12 * MIB as u64);
        assert!(
            got["etag"].as_str().is_some_and(|e| e.ends_with("-3")),
            "{prefix} {got}"
        );
        assert_eq!(got["content_type"], "application/x-haul", "{prefix}");
        assert_eq!(got["metadata"]["team"], "data", "{prefix}");
        let small = back
            .get(&format!("{prefix}small.txt"))
            .ok_or("small.txt not restored")?;
        assert_eq!(small["md5"], haul_store::checksum::md5_hex(b"small"));
        assert_eq!(open_uploads(&b, prefix)?, Vec::<String>::new());
    }
    Ok(())
}

/// Versioning on, then two PUTs of one key (and one of another), with
/// boto3; the version ids and ETags it saw, by key.
fn versioned_puts(bucket: &str, puts: &[(&str, &[u8])]) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
    let script = r#"
import json, sys
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(s3={"addressing_style": "path"}))
bucket = sys.argv[2]
s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
for line in sys.stdin:
    p = json.loads(line)
    r = s3.put_object(Bucket=bucket, Key=p["key"], Body=bytes.fromhex(p["hex"]))
    print(json.dumps({"version_id": r["VersionId"], "etag": r["ETag"].strip('"')}))
"#;
    let mut c = Command::new("python3");
    c.args(["-c", script, &endpoint(), bucket]);
    for (k, v) in haul_testkit::aws_env() {
        c.env(k, v);
    }
    let input: String = puts
        .iter()
        .map(|(k, body)| {
            format!(
                "{}\n",
                serde_json::json!({"key": k, "hex": body.iter().map(|b| format!("{b:02x}")).collect::<String>()})
            )
        })
        .collect();
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        child.stdin.take().ok_or("stdin")?.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("boto3: {}", stderr(&out)).into());
    }
    let mut seen = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: Value = serde_json::from_str(line)?;
        let s = |f: &str| v[f].as_str().unwrap_or_default().to_string();
        seen.push((s("version_id"), s("etag")));
    }
    Ok(seen)
}

/// `bundle --inventory … --versions` over a versioned bucket: both
/// versions of a key are packed, each read as its version (not the
/// current object) and recorded with its version id; the delete marker
/// row is not a member.
#[test]
fn bundle_versions_packs_every_version_with_its_own_bytes() -> R {
    use haul_testkit::inventory::{manifest, parquet, Row};
    let (b, inv) = (bucket("bunver")?, bucket("bunverinv")?);
    let ep = endpoint();
    let first: &[u8] = b"the first version";
    let second: &[u8] = b"the second version, longer than the first";
    let other: &[u8] = b"another object";
    let seen = versioned_puts(&b, &[("src/v.txt", first), ("src/v.txt", second), ("src/w.txt", other)])?;
    assert_eq!(seen.len(), 3);
    assert_ne!(seen[0].0, seen[1].0, "two versions");
    let row = |key: &str, body: &[u8], (vid, etag): &(String, String), latest: bool| {
        let mut r = Row::object(&b, key, body.len() as u64, etag);
        r.version_id = Some(vid.clone());
        r.is_latest = latest;
        r
    };
    let marker = Row {
        bucket: b.clone(),
        key: "src/x.txt".into(),
        version_id: Some("marker1".into()),
        is_latest: true,
        is_delete_marker: true,
        last_modified_ms: 1_796_040_002_000,
        ..Default::default()
    };
    let rows = vec![
        row("src/v.txt", second, &seen[1], true),
        row("src/v.txt", first, &seen[0], false),
        row("src/w.txt", other, &seen[2], true),
        marker,
    ];
    let body = parquet(&rows, 2).map_err(|e| e.to_string())?;
    let m = manifest(&b, "Parquet", &[("pq/data/0.parquet", body.as_slice())], None);
    let dir = tempfile::tempdir()?;
    for (name, bytes, key) in [
        ("0.parquet", body.clone(), "pq/data/0.parquet"),
        ("manifest.json", m, "pq/manifest.json"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes)?;
        ok(&[
            "cp",
            &p.to_string_lossy(),
            &format!("s3://{inv}/{key}"),
            "--endpoint-url",
            &ep,
            "-q",
        ])?;
    }
    let out = ok(&[
        "bundle",
        "--endpoint-url",
        &ep,
        &format!("s3://{b}/src/"),
        &format!("s3://{b}/arch/"),
        "--inventory",
        &format!("s3://{inv}/pq/manifest.json"),
        "--versions",
        "--run",
        "v",
        "--json",
    ])?;
    assert_eq!(last_json(&out)?["members"], 3, "{}", stderr(&out));

    let index = ok(&[
        "cat",
        "--endpoint-url",
        &ep,
        &format!("s3://{b}/arch/v-000001.tar.index"),
    ])?;
    let entries: Vec<Value> = String::from_utf8(index.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let tar = ok(&["cat", "--endpoint-url", &ep, &format!("s3://{b}/arch/v-000001.tar")])?.stdout;
    let mut packed = Vec::new();
    for e in &entries {
        let (at, size) = (
            e["data_offset"].as_u64().ok_or("data_offset")? as usize,
            e["size"].as_u64().ok_or("size")? as usize,
        );
        let bytes = tar.get(at..at + size).ok_or("member past the archive's end")?.to_vec();
        packed.push((
            e["key"].as_str().unwrap_or_default().to_string(),
            e["version_id"].as_str().map(str::to_string),
            bytes,
        ));
    }
    packed.sort();
    let mut want = vec![
        ("src/v.txt".to_string(), Some(seen[0].0.clone()), first.to_vec()),
        ("src/v.txt".to_string(), Some(seen[1].0.clone()), second.to_vec()),
        ("src/w.txt".to_string(), Some(seen[2].0.clone()), other.to_vec()),
    ];
    want.sort();
    assert_eq!(packed, want);
    Ok(())
}
