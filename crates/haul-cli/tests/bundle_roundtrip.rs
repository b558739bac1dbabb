//! The bundle issue's headline roundtrip, on one moto server: 20,000
//! objects with keys of 1 to 1,024 bytes (unicode, spaces, `+`, `%`, `=`,
//! `&`, deep folders), 0-byte members, content types, metadata and tags →
//! `haul bundle` into several archives → GNU `tar -tvf`/`tar -xf` agree
//! with the index → `haul unbundle` back to a bucket and to a directory
//! equal the originals. A few keys cannot be local files (a path component
//! over 255 bytes): the index keeps them, and both tar and `unbundle` to a
//! directory report exactly those, by name. Seeding and reading back go
//! through boto3 with a thread pool (`s3_bulk.py`), not haul.

mod common;
mod roundtrip_data;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Instant, UNIX_EPOCH};

use serde_json::{json, Value};

use common::*;
use roundtrip_data::*;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn python(args: &[&str]) -> R<Output> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_bulk.py");
    let mut c = Command::new("python3");
    c.arg(script).args(args);
    for (k, v) in haul_testkit::aws_env() {
        c.env(k, v);
    }
    let out = c.output()?;
    if !out.status.success() {
        return Err(format!("s3_bulk.py {:?}: {}", args.first(), stderr(&out)).into());
    }
    Ok(out)
}

/// Every object under `prefix` as boto3 sees it, by key: size, MD5 and
/// mtime; content type, metadata and tags too for the keys in `heads`.
fn dump(bucket: &str, prefix: &str, heads: Option<&Path>) -> R<BTreeMap<String, Value>> {
    let ep = endpoint();
    let heads = heads.map(|p| p.to_string_lossy().to_string());
    let mut args = vec!["dump", ep.as_str(), bucket, prefix];
    if let Some(h) = &heads {
        args.extend(["--head", h.as_str()]);
    }
    let out = python(&args)?;
    let mut m = BTreeMap::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: Value = serde_json::from_str(line)?;
        m.insert(v["key"].as_str().unwrap_or_default().to_string(), v);
    }
    Ok(m)
}

/// Puts the objects (and two keys no archive takes, and a folder marker).
fn seed(bucket: &str, objs: &[Obj], dir: &Path) -> R {
    let (mut spec, mut bodies) = (String::new(), Vec::new());
    let mut row = |key: String, body: Vec<u8>, o: Option<&Obj>| -> R {
        let mut v = json!({"key": key, "offset": bodies.len(), "size": body.len()});
        if let Some(o) = o {
            v["content_type"] = json!(o.content_type);
            v["metadata"] = json!(o.metadata);
            v["tags"] = json!(o.tags);
        }
        spec.push_str(&serde_json::to_string(&v)?);
        spec.push('\n');
        bodies.extend_from_slice(&body);
        Ok(())
    };
    for o in objs {
        row(o.key(), o.body(), Some(o))?;
    }
    for k in unsafe_keys() {
        row(k.to_string(), b"unsafe".to_vec(), None)?;
    }
    row(format!("{PREFIX}a/"), Vec::new(), None)?;
    let (spec_p, bodies_p) = (dir.join("spec.jsonl"), dir.join("bodies.bin"));
    std::fs::write(&spec_p, spec)?;
    std::fs::write(&bodies_p, bodies)?;
    python(&[
        "put",
        &endpoint(),
        bucket,
        &spec_p.to_string_lossy(),
        &bodies_p.to_string_lossy(),
    ])?;
    Ok(())
}

/// Keys S3 takes and no tar member can be (documented: `unsafe_name`).
fn unsafe_keys() -> [&'static str; 2] {
    ["in/a//empty component", "in/back\\slash"]
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// One line of `tar -tv --quoting-style=literal --full-time`:
/// (permissions, size, name).
fn tar_line(l: &str) -> Option<(String, u64, String)> {
    let mut rest = l;
    let mut fields = Vec::new();
    for _ in 0..5 {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ')?;
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    // Exactly one space before the name (which may start with spaces).
    let name = rest.strip_prefix(' ')?;
    Some((fields[0].to_string(), fields[2].parse().ok()?, name.to_string()))
}

/// Every regular file under `root`, by its name relative to `root`.
fn files_under(root: &Path) -> R<BTreeMap<String, std::fs::Metadata>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = std::fs::symlink_metadata(e.path())?;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root)?.to_str().ok_or("not UTF-8")?.to_string();
                out.insert(rel, m);
            }
        }
    }
    Ok(out)
}

/// The files under `root` are exactly the objects that can be local files
/// (plus `extra`), with their bytes and their source's mtime.
fn check_tree(root: &Path, objs: &[Obj], src: &BTreeMap<String, Value>, extra: &[&str], what: &str) -> R {
    let files = files_under(root)?;
    let want: BTreeSet<&str> = objs
        .iter()
        .filter(|o| !o.too_long())
        .map(|o| o.name.as_str())
        .chain(extra.iter().copied())
        .collect();
    let got: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let unexpected: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{what}: missing {missing:?}, unexpected {unexpected:?}"
    );
    for o in objs.iter().filter(|o| !o.too_long()) {
        let p = root.join(&o.name);
        assert!(std::fs::read(&p)? == o.body(), "{what}: {:?} differs", o.name);
        let mtime = files[&o.name].modified()?.duration_since(UNIX_EPOCH)?.as_nanos();
        let want = src[&o.key()]["mtime_ns"].as_u64().ok_or("no mtime")? as u128;
        assert_eq!(mtime, want, "{what}: mtime of {:?}", o.name);
    }
    Ok(())
}

#[test]
fn twenty_thousand_objects_roundtrip_through_bundles_tar_and_unbundle() -> R {
    let t0 = Instant::now();
    let lap = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let objs = objects();
    let long: BTreeSet<&str> = objs.iter().filter(|o| o.too_long()).map(|o| o.name.as_str()).collect();
    assert_eq!(long.len(), 3);
    assert!(objs.iter().all(|o| o.key().len() <= 1024) && objs.iter().any(|o| o.key().len() == 1024));
    let by_name: BTreeMap<&str, &Obj> = objs.iter().map(|o| (o.name.as_str(), o)).collect();
    assert_eq!(by_name.len(), N, "names are unique");

    let (src_b, dst_b, back_b) = (bucket("rtsrc")?, bucket("rtdst")?, bucket("rtback")?);
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    seed(&src_b, &objs, dir.path())?;
    lap("seeded");
    let src = dump(&src_b, PREFIX, None)?;
    assert_eq!(src.len(), N + 3, "the objects, two unsafe keys and a folder marker");

    // The plan counts a GET and a GetObjectTagging per member, and the two
    // dead letters (exit 1, as the run).
    let plan = run(&[
        "bundle",
        "--endpoint-url",
        &ep,
        &format!("s3://{src_b}/{PREFIX}"),
        &format!("s3://{dst_b}/out/"),
        "--max-members",
        "5000",
        "--tags",
        "--dry-run",
    ])?;
    assert_eq!(plan.status.code(), Some(1), "{}", stderr(&plan));
    assert!(
        stderr(&plan).contains("would write bundle-000001.tar: 5000 members")
            && stderr(&plan).contains("requests: 10000 GET")
            && stderr(&plan).contains("4 archives, 20000 members, 0 large objects, 2 dead letters"),
        "{}",
        stderr(&plan)
    );

    // Bundle: four archives; the unsafe keys are dead letters, the folder
    // marker is no member.
    let dlq = dir.path().join("dead.jsonl");
    let out = run(&[
        "bundle",
        "--endpoint-url",
        &ep,
        &format!("s3://{src_b}/{PREFIX}"),
        &format!("s3://{dst_b}/out/"),
        "--max-members",
        "5000",
        "--tags",
        "--dlq",
        &dlq.to_string_lossy(),
        "--json",
    ])?;
    lap("bundled");
    assert_eq!(out.status.code(), Some(1), "dead letters: exit 1: {}", stderr(&out));
    let sum = last_json(&out)?;
    assert_eq!(sum["members"], N as u64, "{sum}");
    assert_eq!(sum["archives_written"], 4, "{sum}");
    assert_eq!(sum["folders"], 1, "{sum}");
    let dead: BTreeMap<String, String> = std::fs::read_to_string(&dlq)?
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).map(|v| (v["key"].to_string(), v["reason"].to_string())))
        .collect::<Result<_, _>>()?;
    let want_dead: BTreeMap<String, String> = unsafe_keys()
        .iter()
        .map(|k| (json!(k).to_string(), json!("unsafe_name").to_string()))
        .collect();
    assert_eq!(dead, want_dead);

    // The run manifest: archives whose members add up to N.
    let local_manifest = dir.path().join("manifest.jsonl");
    ok(&[
        "cp",
        "--endpoint-url",
        &ep,
        &format!("s3://{dst_b}/out/bundle.bundles.jsonl"),
        &local_manifest.to_string_lossy(),
    ])?;
    let manifest: Vec<Value> = std::fs::read_to_string(&local_manifest)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let archives: Vec<String> = manifest
        .iter()
        .filter(|l| l["kind"] == "archive")
        .map(|l| l["key"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(archives.len(), 4, "{manifest:?}");
    let total: u64 = manifest.iter().filter_map(|l| l["members"].as_u64()).sum();
    assert_eq!(total, N as u64, "{manifest:?}");

    // Each archive: its index (read from S3 with the suffix GET) names
    // every object once, as it was; GNU tar lists the same members.
    let (adir, xdir) = (dir.path().join("archives"), dir.path().join("tar-x"));
    std::fs::create_dir_all(&xdir)?;
    let mut indexed = BTreeSet::new();
    let mut locals = Vec::new();
    let mut first_entries: Vec<String> = Vec::new();
    for key in &archives {
        let url = format!("s3://{dst_b}/{key}");
        let local = adir.join(key.rsplit('/').next().ok_or("archive name")?);
        ok(&["cp", "--endpoint-url", &ep, &url, &local.to_string_lossy()])?;
        let ls = ok(&["ls", "--members", "--endpoint-url", &ep, &url, "--json"])?;
        let entries: Vec<Value> = json_lines(&ls)
            .into_iter()
            .filter(|v| v.get("name").is_some())
            .collect();
        for e in &entries {
            let name = e["name"].as_str().ok_or("name")?;
            let o = by_name.get(name).ok_or(format!("{name:?} is no object"))?;
            assert!(indexed.insert(name.to_string()), "{name:?} is in two archives");
            let s = &src[&o.key()];
            assert_eq!(e["key"], o.key());
            assert_eq!(e["size"], o.size as u64, "{name:?}");
            assert_eq!(e["etag"], haul_store::checksum::md5_hex(&o.body()), "{name:?}");
            assert_eq!(e["mtime_ns"], s["mtime_ns"], "{name:?}");
            let ct = o.content_type.as_deref().unwrap_or(DEFAULT_TYPE);
            assert_eq!(e["content_type"], ct, "{name:?}");
            assert_eq!(
                e.get("metadata").cloned().unwrap_or(json!({})),
                json!(o.metadata),
                "{name:?}"
            );
            assert_eq!(e.get("tags").cloned().unwrap_or(json!({})), json!(o.tags), "{name:?}");
        }
        let tar = Command::new("tar")
            .args(["-tv", "--quoting-style=literal", "--full-time", "-f"])
            .arg(&local)
            .output()?;
        assert!(
            tar.status.success() && tar.stderr.is_empty(),
            "tar -tvf: {}",
            stderr(&tar)
        );
        let listed: Vec<(String, u64, String)> = String::from_utf8(tar.stdout)?
            .lines()
            .map(|l| tar_line(l).ok_or(format!("tar line {l:?}")))
            .collect::<Result<_, _>>()?;
        let mut want: Vec<(String, u64, String)> = entries
            .iter()
            .map(|e| {
                let o = by_name[e["name"].as_str().unwrap_or_default()];
                (o.perms().to_string(), o.size as u64, o.name.clone())
            })
            .collect();
        let index_member = listed.last().ok_or("tar listed nothing")?;
        assert_eq!(index_member.2, ".haul/index.jsonl", "the index is the last member");
        want.push(index_member.clone());
        assert!(listed == want, "tar -tvf {key} differs from the index");
        if locals.is_empty() {
            first_entries = entries
                .iter()
                .filter_map(|e| e["name"].as_str().map(str::to_string))
                .collect();
        }
        locals.push(local);
    }
    assert_eq!(indexed.len(), N, "every object is in an archive");
    lap("indexes and tar -tvf checked");

    // tar -xf: every object but those no file system names; tar says
    // which, and only those.
    for local in &locals {
        let x = Command::new("tar")
            .arg("-xf")
            .arg(local)
            .arg("-C")
            .arg(&xdir)
            .output()?;
        let err = stderr(&x);
        let bad: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("Exiting with failure status"))
            .filter(|l| {
                !long
                    .iter()
                    .any(|n| l.contains(&format!("{n}: Cannot open: File name too long")))
            })
            .collect();
        assert!(bad.is_empty(), "tar -xf: {bad:?}");
    }
    for n in &long {
        assert!(!xdir.join(n).exists());
    }
    check_tree(&xdir, &objs, &src, &[".haul/index.jsonl"], "tar -xf")?;
    lap("tar -xf checked");

    // unbundle to the bucket, from the downloaded archives: every object
    // back with its bytes (the listing's MD5 ETag); content type, metadata
    // and tags read back for every object that has any and every 10th
    // other one (a HEAD and a GetObjectTagging each: moto's time).
    for local in &locals {
        let out = ok(&[
            "unbundle",
            "--endpoint-url",
            &ep,
            &local.to_string_lossy(),
            &format!("s3://{back_b}/{PREFIX}"),
            "--json",
        ])?;
        let sum = last_json(&out)?;
        assert_eq!((&sum["failed"], &sum["refused"]), (&json!(0), &json!(0)), "{sum}");
    }
    lap("unbundled to S3");
    let heads_p = dir.path().join("heads.jsonl");
    let heads: Vec<&Obj> = objs
        .iter()
        .enumerate()
        .filter(|(i, o)| i % 10 == 0 || o.content_type.is_some() || !o.metadata.is_empty() || !o.tags.is_empty())
        .map(|(_, o)| o)
        .collect();
    let lines: Vec<String> = heads.iter().map(|o| json!(o.key()).to_string()).collect();
    std::fs::write(&heads_p, lines.join("\n"))?;
    let back = dump(&back_b, PREFIX, Some(&heads_p))?;
    lap(&format!("read back with boto3 ({} with HEAD and tags)", heads.len()));
    assert_eq!(back.len(), N, "every object restored, nothing else");
    for o in &objs {
        let b = back.get(&o.key()).ok_or(format!("{:?} not restored", o.name))?;
        assert_eq!(b["size"], o.size as u64, "{:?}", o.name);
        assert_eq!(b["md5"], haul_store::checksum::md5_hex(&o.body()), "{:?}", o.name);
    }
    for o in &heads {
        let b = &back[&o.key()];
        let ct = o.content_type.as_deref().unwrap_or(DEFAULT_TYPE);
        assert_eq!(b["content_type"], ct, "{:?}", o.name);
        assert_eq!(b["metadata"], json!(o.metadata), "{:?}", o.name);
        assert_eq!(b["tags"], json!(o.tags), "{:?}", o.name);
    }

    // The same from the archive on S3 (a ranged GET per member), for the
    // members of the first archive under one of the shared folders.
    let folder = DIRS
        .iter()
        .map(|d| format!("{d}/"))
        .find(|d| first_entries.iter().any(|n| n.starts_with(d.as_str())))
        .ok_or("no shared folder in the first archive")?;
    let first = format!("s3://{dst_b}/{}", archives[0]);
    let out = ok(&[
        "unbundle",
        "--endpoint-url",
        &ep,
        &first,
        &format!("s3://{back_b}/s3/"),
        "--include",
        &format!("{folder}**"),
        "--json",
    ])?;
    let sum = last_json(&out)?;
    let picked: Vec<&Obj> = first_entries
        .iter()
        .filter(|n| n.starts_with(folder.as_str()))
        .map(|n| by_name[n.as_str()])
        .collect();
    assert!(!picked.is_empty());
    assert_eq!(sum["restored"], picked.len() as u64, "{sum}");
    let keys: Vec<String> = picked
        .iter()
        .map(|o| json!(format!("s3/{}", o.name)).to_string())
        .collect();
    std::fs::write(&heads_p, keys.join("\n"))?;
    let from_s3 = dump(&back_b, "s3/", Some(&heads_p))?;
    assert_eq!(from_s3.len(), picked.len());
    for o in &picked {
        let b = &from_s3[&format!("s3/{}", o.name)];
        assert_eq!(b["md5"], haul_store::checksum::md5_hex(&o.body()), "{:?}", o.name);
        assert_eq!(b["content_type"], o.content_type.as_deref().unwrap_or(DEFAULT_TYPE));
        assert_eq!(b["metadata"], json!(o.metadata), "{:?}", o.name);
        assert_eq!(b["tags"], json!(o.tags), "{:?}", o.name);
    }
    lap(&format!("{} members unbundled from the archive on S3", picked.len()));

    // unbundle to a directory, from the downloaded archives: bytes and
    // mtimes; the names no file system takes are failures, by name (exit 1).
    let ldir = dir.path().join("unbundled");
    let mut failed = BTreeSet::new();
    for local in &locals {
        let out = run(&["unbundle", &local.to_string_lossy(), &ldir.to_string_lossy(), "--json"])?;
        let lines = json_lines(&out);
        let sum = lines.last().ok_or("no summary")?;
        assert_eq!(sum["refused"], 0, "{sum}");
        for f in lines.iter().filter(|l| l["event"] == "failure") {
            assert!(f["message"].as_str().unwrap_or_default().contains("too long"), "{f}");
            failed.insert(f["member"].as_str().unwrap_or_default().to_string());
        }
        let code = if sum["failed"] == 0 { 0 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    }
    let long_names: BTreeSet<String> = long.iter().map(|n| n.to_string()).collect();
    assert_eq!(failed, long_names, "exactly the names no file system takes fail");
    check_tree(&ldir, &objs, &src, &[], "unbundle to a directory")?;
    lap("unbundled to a directory");
    eprintln!(
        "{N} objects, {} archives, {} bytes of members: {:.1}s",
        archives.len(),
        objs.iter().map(|o| o.size).sum::<usize>(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
