//! `haul bundle` end to end, as a user runs it: a tree of small objects
//! (local, and on moto) packed into archives; the members listed, read one
//! by one, verified, unbundled back to a directory and to a bucket — bytes
//! and metadata equal the originals — and GNU tar agrees with the index.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use common::*;

type R = Result<(), Box<dyn std::error::Error>>;

/// Small files with awkward names (spaces, `+`, `%`, unicode, a long
/// path), sizes around the tar block, a 0-byte one, and one large file.
fn tree(root: &Path) -> Result<BTreeMap<String, Vec<u8>>, Box<dyn std::error::Error>> {
    let mut want = BTreeMap::new();
    let long = format!("deep/{}/end.txt", "x".repeat(150));
    let names = [
        "a.txt",
        "b c+d%20e.bin",
        "ünï/cödé.json",
        "2026/11/21/x.log",
        "2026/11/22/y.log",
        "empty",
        long.as_str(),
    ];
    for (i, n) in names.iter().enumerate() {
        let size = [511, 512, 513, 1, 4096, 0, 1000][i];
        let body = data(size, i as u64 + 1);
        write(&root.join(n), &body)?;
        want.insert(n.to_string(), body);
    }
    for i in 0..40u64 {
        let n = format!("many/f{i:03}");
        let body = data(100 + i as usize * 37, 100 + i);
        write(&root.join(&n), &body)?;
        want.insert(n, body);
    }
    Ok(want)
}

fn json_lines(o: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_local_tree_bundles_lists_reads_verifies_and_unbundles_back() -> R {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let want = tree(&src)?;
    write(&src.join("big.bin"), &data(300_000, 9))?;
    let arch = dir.path().join("arch");
    let (src_s, arch_s) = (src.to_string_lossy().to_string(), arch.to_string_lossy().to_string());

    // The plan first: nothing written.
    let plan = ok(&[
        "bundle",
        &src_s,
        &arch_s,
        "--max-members",
        "20",
        "--max-member-size",
        "100KiB",
        "--dry-run",
    ])?;
    assert!(
        stderr(&plan).contains("would write bundle-000001.tar"),
        "{}",
        stderr(&plan)
    );
    assert!(stderr(&plan).contains("estimated $"), "{}", stderr(&plan));
    assert!(!arch.exists(), "a dry run wrote {arch:?}");

    let out = ok(&[
        "bundle",
        &src_s,
        &arch_s,
        "--max-members",
        "20",
        "--max-member-size",
        "100KiB",
        "--json",
    ])?;
    let sum = last_json(&out)?;
    assert_eq!(sum["members"], want.len() as u64, "{sum}");
    assert_eq!(sum["archives_written"], 3, "47 members by 20: {sum}");
    assert_eq!(sum["large_objects"], 1, "{sum}");
    assert_eq!(std::fs::read(arch.join("large/big.bin"))?, data(300_000, 9));
    let manifest = std::fs::read_to_string(arch.join("bundle.bundles.jsonl"))?;
    assert_eq!(manifest.lines().count(), 4, "{manifest}");

    // Every member listed from the indexes, and read back one by one.
    let mut seen = BTreeMap::new();
    for n in 1..=3 {
        let a = arch.join(format!("bundle-{n:06}.tar"));
        let a_s = a.to_string_lossy().to_string();
        let ls = ok(&["ls", "--members", &a_s, "--json"])?;
        for e in json_lines(&ls).into_iter().filter(|v| v.get("name").is_some()) {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            let cat = ok(&["cat", "--member", &name, &a_s])?;
            seen.insert(name, cat.stdout);
        }
        // GNU tar reads the archive without a warning and agrees.
        let tar = std::process::Command::new("tar").arg("-tf").arg(&a).output()?;
        assert!(
            tar.status.success() && tar.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&tar.stderr)
        );
        let ok_verify = ok(&["verify", "--bundle", &a_s])?;
        assert!(stderr(&ok_verify).contains("0 problems"), "{}", stderr(&ok_verify));
    }
    assert!(seen == want, "members read back differ from the sources");
    let missing = run(&[
        "cat",
        "--member",
        "nope",
        &arch.join("bundle-000001.tar").to_string_lossy(),
    ])?;
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no member \"nope\""), "{}", stderr(&missing));

    // Unbundled to a directory: the same bytes.
    let back = dir.path().join("back");
    for n in 1..=3 {
        let a = arch.join(format!("bundle-{n:06}.tar")).to_string_lossy().to_string();
        ok(&["unbundle", &a, &back.to_string_lossy()])?;
    }
    for (name, body) in &want {
        assert!(&std::fs::read(back.join(name))? == body, "{name} differs");
    }

    // A damaged byte is found by verify (exit 1), and by cat.
    let a1 = arch.join("bundle-000001.tar");
    let mut bytes = std::fs::read(&a1)?;
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(arch.join("bundle-000001.tar.index"))?
            .lines()
            .find(|l| l.contains("\"size\":511"))
            .ok_or("no 511-byte member")?,
    )?;
    let at = first["data_offset"].as_u64().ok_or("no offset")? as usize + 7;
    bytes[at] ^= 0x40;
    std::fs::write(&a1, &bytes)?;
    let a1_s = a1.to_string_lossy().to_string();
    let bad = run(&["verify", "--bundle", &a1_s])?;
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    let name = first["name"].as_str().ok_or("no name")?;
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains(name),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
    let cat = run(&["cat", "--member", name, &a1_s])?;
    assert_eq!(cat.status.code(), Some(1), "{}", stderr(&cat));
    Ok(())
}

#[test]
fn a_zstd_bundle_lists_reads_unbundles_and_zstd_tar_read_it() -> R {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let mut want = tree(&src)?;
    let log: Vec<u8> = (0..40_000)
        .flat_map(|i| format!("line {i} status=200\n").into_bytes())
        .collect();
    write(&src.join("logs/app.log"), &log)?;
    want.insert("logs/app.log".into(), log);
    let arch = dir.path().join("arch");
    let (src_s, arch_s) = (src.to_string_lossy().to_string(), arch.to_string_lossy().to_string());
    let bad = run(&["bundle", &src_s, &arch_s, "--compress", "lz4"])?;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("zstd"), "{}", stderr(&bad));

    let plan = ok(&["bundle", &src_s, &arch_s, "--compress", "zstd", "--dry-run"])?;
    assert!(
        stderr(&plan).contains("would write bundle-000001.tar.zst"),
        "{}",
        stderr(&plan)
    );
    assert!(!arch.exists(), "a dry run wrote {arch:?}");
    let out = ok(&["bundle", &src_s, &arch_s, "--compress", "zstd", "--json"])?;
    let sum = last_json(&out)?;
    assert_eq!(sum["members"], want.len() as u64, "{sum}");
    assert_eq!(sum["archives_written"], 1, "{sum}");
    let a = arch.join("bundle-000001.tar.zst");
    let a_s = a.to_string_lossy().to_string();
    let plain_size: u64 = want.values().map(|b| 512 + (b.len() as u64).div_ceil(512) * 512).sum();
    assert!(std::fs::metadata(&a)?.len() < plain_size / 2, "not compressed");

    // Listed with their frames, read one by one.
    let ls = ok(&["ls", "--members", &a_s, "--json"])?;
    let lines = json_lines(&ls);
    let summary = lines.last().ok_or("no summary")?;
    assert_eq!(summary["compression"], "zstd", "{summary}");
    let mut seen = BTreeMap::new();
    for e in lines.iter().filter(|v| v.get("name").is_some()) {
        assert!(
            e["zstd"]["len"].as_u64().is_some() && e["zstd"]["frames"].as_u64() >= Some(1),
            "{e}"
        );
        let name = e["name"].as_str().unwrap_or_default().to_string();
        seen.insert(name.clone(), ok(&["cat", "--member", &name, &a_s])?.stdout);
    }
    assert!(seen == want, "members read back differ from the sources");
    let v = ok(&["verify", "--bundle", &a_s, "--against", &src_s])?;
    assert!(stderr(&v).contains("0 problems"), "{}", stderr(&v));

    // Unbundled to a directory: the same bytes.
    let back = dir.path().join("back");
    ok(&["unbundle", &a_s, &back.to_string_lossy()])?;
    for (name, body) in &want {
        assert!(&std::fs::read(back.join(name))? == body, "{name} differs");
    }

    // zstd and tar read it as they are.
    let have = |b: &str| std::process::Command::new(b).arg("--version").output().is_ok();
    if !have("zstd") || !have("tar") {
        println!("note: no zstd or tar binary: `zstd -dc | tar -t` not checked");
        return Ok(());
    }
    let listed = std::process::Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$1\" | tar --quoting-style=literal -t")
        .arg("sh")
        .arg(&a)
        .output()?;
    assert!(
        listed.status.success() && listed.stderr.is_empty(),
        "{}",
        stderr(&listed)
    );
    let names: Vec<&str> = std::str::from_utf8(&listed.stdout)?.lines().collect();
    let mut expect: Vec<&str> = want.keys().map(String::as_str).collect();
    expect.push(".haul/index.jsonl");
    assert_eq!(names, expect);
    let x = dir.path().join("x");
    std::fs::create_dir(&x)?;
    let untar = std::process::Command::new("tar")
        .arg("-I")
        .arg("zstd")
        .arg("-xf")
        .arg(&a)
        .arg("-C")
        .arg(&x)
        .output()?;
    assert!(untar.status.success() && untar.stderr.is_empty(), "{}", stderr(&untar));
    for (name, body) in &want {
        assert!(&std::fs::read(x.join(name))? == body, "tar -I zstd: {name} differs");
    }
    Ok(())
}

#[test]
fn bundles_on_s3_unbundle_back_with_metadata_and_report_dead_letters() -> R {
    let b = bucket("bundle")?;
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let want = tree(&src)?;
    let (src_s, up) = (src.to_string_lossy().to_string(), format!("s3://{b}/src/"));
    ok(&[
        "cp",
        "-r",
        "--endpoint-url",
        &ep,
        &src_s,
        &up,
        "--content-type",
        "text/x-haul",
        "--metadata",
        "team=data",
    ])?;
    let arch = format!("s3://{b}/arch/");
    let dlq = dir.path().join("dead.jsonl");
    let out = ok(&[
        "bundle",
        "--endpoint-url",
        &ep,
        &up,
        &arch,
        "--json",
        "--dlq",
        &dlq.to_string_lossy(),
        "--run",
        "r1",
    ])?;
    let sum = last_json(&out)?;
    assert_eq!(sum["members"], want.len() as u64, "{sum}");
    assert_eq!(std::fs::read_to_string(&dlq)?, "", "no dead letters");

    // Back to the bucket: bytes, content type and metadata from the index.
    let a = format!("s3://{b}/arch/r1-000001.tar");
    ok(&["unbundle", "--endpoint-url", &ep, &a, &format!("s3://{b}/back/")])?;
    let back = inspect(&b, "back/")?;
    for (name, body) in &want {
        let got = back
            .get(&format!("back/{name}"))
            .ok_or(format!("{name} not unbundled"))?;
        assert_eq!(got["md5"], haul_store::checksum::md5_hex(body), "{name}");
        assert_eq!(got["content_type"], "text/x-haul", "{name}");
        assert_eq!(got["metadata"]["team"], "data", "{name}");
    }

    // A re-run with the same name skips the complete archive.
    let again = ok(&["bundle", "--endpoint-url", &ep, &up, &arch, "--json", "--run", "r1"])?;
    let sum = last_json(&again)?;
    assert_eq!(sum["archives_skipped"], 1, "{sum}");
    assert_eq!(sum["archives_written"], 0, "{sum}");
    Ok(())
}

/// `--inventory` (Parquet) picks exactly the inventory's current objects
/// under SRC; an object deleted since the inventory is a `not_found` dead
/// letter (exit 1) and the rest is bundled; after it is put back,
/// `--input-dlq` bundles exactly that object.
#[test]
fn bundles_from_a_parquet_inventory_and_retries_its_dead_letters() -> R {
    use haul_testkit::inventory::{manifest, parquet, Row};
    let (b, inv) = (bucket("bunpq")?, bucket("bunpqinv")?);
    let ep = endpoint();
    let dir = tempfile::tempdir()?;
    let t = dir.path().join("t");
    let names = ["a.json", "b c+d%.json", "ü 日本.json", "gone.json"];
    for k in names {
        write(&t.join(k), k.as_bytes())?;
    }
    ok(&[
        "cp",
        "-r",
        &t.to_string_lossy(),
        &format!("s3://{b}/src"),
        "--endpoint-url",
        &ep,
        "-q",
    ])?;
    // Another object under SRC that the inventory does not name: not bundled.
    write(&dir.path().join("late.json"), b"late")?;
    ok(&[
        "cp",
        &dir.path().join("late.json").to_string_lossy(),
        &format!("s3://{b}/src/late.json"),
        "--endpoint-url",
        &ep,
    ])?;
    let md5 = |s: &str| haul_store::checksum::md5_hex(s.as_bytes());
    let mut rows: Vec<Row> = names
        .iter()
        .map(|k| Row::object(&b, &format!("src/{k}"), k.len() as u64, &md5(k)))
        .collect();
    let mut old = Row::object(&b, "src/a.json", 1, "00000000000000000000000000000000");
    old.is_latest = false;
    old.version_id = Some("v0".into());
    rows.insert(1, old);
    let body = parquet(&rows, 2).map_err(|e| e.to_string())?;
    let m = manifest(&b, "Parquet", &[("pq/data/0.parquet", body.as_slice())], None);
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
    ok(&["rm", &format!("s3://{b}/src/gone.json"), "--endpoint-url", &ep])?;

    let dlq = dir.path().join("dead.jsonl");
    let dlq_s = dlq.to_string_lossy().to_string();
    let arch = format!("s3://{b}/arch/");
    let src = format!("s3://{b}/src/");
    let manifest_url = format!("s3://{inv}/pq/manifest.json");
    let out = run(&[
        "bundle",
        "--endpoint-url",
        &ep,
        &src,
        &arch,
        "--inventory",
        &manifest_url,
        "--dlq",
        &dlq_s,
        "--json",
    ])?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a dead letter makes exit 1: {}",
        stderr(&out)
    );
    let sum = last_json(&out)?;
    assert_eq!(sum["members"], 3, "{sum}");
    let dead: Vec<Value> = std::fs::read_to_string(&dlq)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["key"], "src/gone.json");
    assert_eq!(dead[0]["reason"], "not_found");
    let ls = ok(&[
        "ls",
        "--members",
        "--endpoint-url",
        &ep,
        &format!("{arch}bundle-000001.tar"),
        "--json",
    ])?;
    let members: Vec<String> = json_lines(&ls)
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        members,
        ["a.json", "b c+d%.json", "ü 日本.json"],
        "the inventory's current objects only"
    );

    // Put it back; the retry bundles exactly the dead letter.
    ok(&[
        "cp",
        &t.join("gone.json").to_string_lossy(),
        &format!("s3://{b}/src/gone.json"),
        "--endpoint-url",
        &ep,
    ])?;
    // Its plan names the same object: a dry run reads the same input.
    let plan = ok(&[
        "bundle",
        "--endpoint-url",
        &ep,
        &src,
        &arch,
        "--input-dlq",
        &dlq_s,
        "--run",
        "retry1",
        "--json",
        "--dry-run",
    ])?;
    assert_eq!(last_json(&plan)?["members"], 1, "{}", stderr(&plan));
    let out = ok(&[
        "bundle",
        "--endpoint-url",
        &ep,
        &src,
        &arch,
        "--input-dlq",
        &dlq_s,
        "--run",
        "retry1",
        "--json",
    ])?;
    assert_eq!(last_json(&out)?["members"], 1);
    let cat = ok(&[
        "cat",
        "--member",
        "gone.json",
        "--endpoint-url",
        &ep,
        &format!("{arch}retry1-000001.tar"),
    ])?;
    assert_eq!(cat.stdout, b"gone.json");
    Ok(())
}

/// Killed (SIGKILL) in the middle of a run, then run again with the same
/// `--run`: every object is in exactly one archive — none missing, none
/// twice — and the archives already complete were not written again.
#[test]
fn a_run_killed_mid_way_resumes_without_a_missing_or_duplicate_member() -> R {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let mut want = BTreeMap::new();
    for i in 0..3000u64 {
        let n = format!("d{:02}/f{i:05}", i % 30);
        let body = data(200 + (i as usize * 13) % 3000, i);
        write(&src.join(&n), &body)?;
        want.insert(n, body);
    }
    let arch = dir.path().join("arch");
    let (src_s, arch_s) = (src.to_string_lossy().to_string(), arch.to_string_lossy().to_string());
    let args = [
        "bundle",
        &src_s,
        &arch_s,
        "--max-members",
        "100",
        "--archives",
        "1",
        "--run",
        "k",
    ];
    let mut child = haul()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Wait for a few archives, then kill it.
    let started = std::time::Instant::now();
    loop {
        let done = std::fs::read_dir(&arch)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.index"))
                    .count()
            })
            .unwrap_or(0);
        if done >= 3 || started.elapsed() > std::time::Duration::from_secs(60) {
            break;
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill()?;
    child.wait()?;
    let killed_early = !arch.join("k.bundles.jsonl").exists();

    let out = ok(&[&args[..], &["--json"]].concat())?;
    let sum = last_json(&out)?;
    eprintln!("killed before the end: {killed_early}; the re-run: {sum}");
    if killed_early {
        assert!(
            sum["archives_skipped"].as_u64().unwrap_or(0) >= 1,
            "nothing resumed: {sum}"
        );
    }
    assert_eq!(
        sum["archives_written"].as_u64().unwrap_or(0) + sum["archives_skipped"].as_u64().unwrap_or(0),
        30,
        "{sum}"
    );
    let mut seen: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for n in 1..=30 {
        let a = arch.join(format!("k-{n:06}.tar"));
        let ls = ok(&["ls", "--members", &a.to_string_lossy(), "--json"])?;
        let bytes = std::fs::read(&a)?;
        for e in json_lines(&ls).into_iter().filter(|v| v.get("name").is_some()) {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            let off = e["data_offset"].as_u64().ok_or("offset")? as usize;
            let size = e["size"].as_u64().ok_or("size")? as usize;
            let prev = seen.insert(name.clone(), bytes[off..off + size].to_vec());
            assert!(prev.is_none(), "{name} is in two archives");
        }
    }
    assert_eq!(seen.len(), want.len(), "members missing");
    assert!(seen == want, "a member's bytes differ from its source");
    Ok(())
}

/// A local destination inside the local source: a second run does not
/// bundle the first run's archives (they are output, not input).
#[test]
fn archives_inside_a_local_source_are_not_bundled_again() -> R {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    write(&src.join("a/x"), b"hi\n")?;
    write(&src.join("y"), b"y")?;
    let (src_s, arch_s) = (
        src.to_string_lossy().to_string(),
        src.join("arch").to_string_lossy().to_string(),
    );
    for _ in 0..2 {
        let out = ok(&["bundle", &src_s, &arch_s, "--json"])?;
        let sum = last_json(&out)?;
        assert_eq!(sum["members"], 2, "{sum}");
    }
    Ok(())
}
