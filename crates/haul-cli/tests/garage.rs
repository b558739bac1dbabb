//! The copy commands on garage, a server that implements less of S3 than
//! moto (no object tagging: `501 NotImplemented`) and checks more
//! (Content-MD5, CRC64NVME), and between garage and moto (two endpoints:
//! always streamed). Before issue 12 every streamed bucket-to-bucket copy
//! on garage failed asking for the source's tags.
//!
//! Read back with boto3 (`s3_inspect.py`), not haul. Set
//! `HAUL_TEST_GARAGE=off` to leave these out.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

fn garage_ep() -> String {
    haul_testkit::garage().server.endpoint.clone()
}

fn garage_bucket(tag: &str) -> Result<String, String> {
    let b = haul_testkit::unique_bucket(tag);
    haul_testkit::garage().create_bucket(&b)?;
    Ok(b)
}

/// A tree with small objects and one multipart object (3 parts of 5 MiB).
fn tree(root: &Path) -> Result<BTreeMap<String, String>, std::io::Error> {
    let mut want = BTreeMap::new();
    for (i, size) in [0usize, 1, 1000, 70_000, 12 * MIB + 3].into_iter().enumerate() {
        let body = data(size, i as u64 + 40);
        let rel = format!("2026/11/{i:02}/f{i}.bin");
        write(&root.join(&rel), &body)?;
        want.insert(rel, haul_store::checksum::md5_hex(&body));
    }
    Ok(want)
}

/// The keys under `prefix` and their MD5s, as boto3 reads them.
fn md5s(ep: &str, bucket: &str, prefix: &str) -> Result<BTreeMap<String, String>, Box<dyn std::error::Error>> {
    Ok(inspect_at(ep, bucket, prefix)?
        .into_iter()
        .map(|(k, v)| {
            let rel = k.strip_prefix(prefix).unwrap_or(&k).to_string();
            (rel, v["md5"].as_str().unwrap_or_default().to_string())
        })
        .collect())
}

fn skip() -> bool {
    if !haul_testkit::garage_enabled() {
        eprintln!("HAUL_TEST_GARAGE=off: garage not tested");
        return true;
    }
    false
}

const SMALL_PARTS: [&str; 4] = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];

#[test]
fn streamed_server_side_and_part_copies_on_garage() -> TestResult {
    if skip() {
        return Ok(());
    }
    let ep = garage_ep();
    let (src, dst) = (garage_bucket("src")?, garage_bucket("dst")?);
    let dir = tempfile::tempdir()?;
    let want = tree(dir.path())?;
    let local = dir.path().to_string_lossy().to_string();
    let mut up = vec!["cp", "-r", "--endpoint-url", &ep, &local];
    let to = format!("s3://{src}/x/");
    up.push(&to);
    up.extend(SMALL_PARTS);
    ok(&up)?;
    assert_eq!(md5s(&ep, &src, "x/")?, want, "upload");

    // Streamed through haul (--no-server-side): asked for the source's tags
    // and failed every object before.
    let streamed = format!("s3://{dst}/streamed/");
    let mut args = vec!["cp", "-r", "--no-server-side", "--endpoint-url", &ep, &to, &streamed];
    args.extend(SMALL_PARTS);
    let out = ok(&args)?;
    let err = stderr(&out);
    assert!(
        err.contains("note: tags not copied: the source does not support object tagging"),
        "{err}"
    );
    assert_eq!(err.matches("tags not copied").count(), 1, "said once: {err}");
    assert_eq!(md5s(&ep, &dst, "streamed/")?, want, "streamed copy");

    // Server-side (CopyObject), and part by part keeping the ETag
    // (UploadPartCopy, which reads the source's metadata and tags).
    let server = format!("s3://{dst}/server/");
    ok(&["cp", "-r", "--endpoint-url", &ep, &to, &server])?;
    assert_eq!(md5s(&ep, &dst, "server/")?, want, "server-side copy");
    let big = format!("s3://{src}/x/2026/11/04/f4.bin");
    let kept = format!("s3://{dst}/kept/f4.bin");
    ok(&["cp", "--preserve-etag", "--endpoint-url", &ep, &big, &kept])?;
    let (a, b) = (inspect_at(&ep, &src, "x/2026/11/04/")?, inspect_at(&ep, &dst, "kept/")?);
    let etag = |m: &BTreeMap<String, serde_json::Value>| m.values().next().map(|v| v["etag"].clone());
    assert_eq!(etag(&a), etag(&b), "the multipart ETag survives the part copy");
    assert!(etag(&a).is_some_and(|e| e.as_str().is_some_and(|s| s.ends_with("-3"))));

    // Downloaded back, byte for byte.
    let back = tempfile::tempdir()?;
    let back_s = back.path().to_string_lossy().to_string();
    ok(&["cp", "-r", "--endpoint-url", &ep, &streamed, &back_s])?;
    for (rel, md5) in &want {
        let body = std::fs::read(back.path().join(rel))?;
        assert_eq!(&haul_store::checksum::md5_hex(&body), md5, "{rel}");
    }
    Ok(())
}

/// garage → moto and moto → garage: two endpoints, so always streamed.
#[test]
fn copies_between_garage_and_moto_go_both_ways() -> TestResult {
    if skip() {
        return Ok(());
    }
    let (g, m) = (garage_ep(), endpoint());
    let (gb, mb) = (garage_bucket("cross")?, bucket("cross")?);
    let dir = tempfile::tempdir()?;
    let want = tree(dir.path())?;
    let local = dir.path().to_string_lossy().to_string();
    // Tagged objects on moto.
    let on_moto = format!("s3://{mb}/tagged/");
    let mut up = vec![
        "cp",
        "-r",
        "--endpoint-url",
        &m,
        "--tag",
        "team=ingest",
        &local,
        &on_moto,
    ];
    up.extend(SMALL_PARTS);
    ok(&up)?;

    // moto → garage: garage cannot keep the tags; the copy goes on.
    let on_garage = format!("s3://{gb}/from-moto/");
    let mut args = vec![
        "cp",
        "-r",
        "--src-endpoint-url",
        &m,
        "--dst-endpoint-url",
        &g,
        &on_moto,
        &on_garage,
    ];
    args.extend(SMALL_PARTS);
    let out = ok(&args)?;
    assert!(
        stderr(&out).contains("note: tags not copied: the destination does not support object tagging"),
        "{}",
        stderr(&out)
    );
    assert_eq!(md5s(&g, &gb, "from-moto/")?, want);

    // ... unless the tags are required: every object fails, with the reason.
    let strict = format!("s3://{gb}/strict/");
    let mut args = vec![
        "cp",
        "-r",
        "--json",
        "--require-tags",
        "--src-endpoint-url",
        &m,
        "--dst-endpoint-url",
        &g,
        &on_moto,
        &strict,
    ];
    args.extend(SMALL_PARTS);
    let out = run(&args)?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone())?;
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("TagsNotCopied")).collect();
    assert_eq!(failed.len(), want.len(), "{text}");
    assert!(
        md5s(&g, &gb, "strict/")?.is_empty(),
        "nothing written for a failed object"
    );

    // garage → moto.
    let back = format!("s3://{mb}/from-garage/");
    let mut args = vec![
        "cp",
        "-r",
        "--src-endpoint-url",
        &g,
        "--dst-endpoint-url",
        &m,
        &on_garage,
        &back,
    ];
    args.extend(SMALL_PARTS);
    ok(&args)?;
    assert_eq!(md5s(&m, &mb, "from-garage/")?, want);
    Ok(())
}
