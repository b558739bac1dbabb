//! `--compress zstd` end to end on memory stores: a compressed archive of
//! members of every awkward size (empty, around tar blocks, a few MiB,
//! compressible and not) opens with one suffix read, gives every member
//! back with exactly one ranged GET, decompresses (by the zstd crate and,
//! when installed, the `zstd` binary) to a standard tar whose members are
//! the index's, verifies clean, resumes as complete, and a damaged frame
//! is an integrity error — never wrong bytes.

mod bundle_common;
mod bundle_support;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use bundle_common::{dest, key, manifest, put, read, transfer, Rng, TestResult};
use bundle_support::{Recording, Req};
use haul_engine::bundle::format::INDEX_MEMBER;
use haul_engine::bundle::frames::{FramedLocator, FRAMED_LEN, FRAME_TAR_BYTES};
use haul_engine::bundle::*;
use haul_store::memory::MemoryServer;
use haul_store::{DynStore, PutOptions};

/// Incompressible bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    haul_testkit::data(n, seed)
}

/// Compressible bytes: log-like lines.
fn text(n: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 80);
    let mut i = seed;
    while v.len() < n {
        v.extend(
            format!(
                "2026-11-21T10:{:02}:{:02}Z INFO request id={i} path=/api/v1/items status=200\n",
                i % 60,
                i % 59
            )
            .bytes(),
        );
        i += 1;
    }
    v.truncate(n);
    v
}

/// The sources: edge sizes, big members of both kinds, and a run of
/// small compressible ones of random sizes.
fn sources() -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (i, size) in [0usize, 1, 511, 512, 513, 1024, 1536, 4096].into_iter().enumerate() {
        out.insert(format!("edge/{i}-{size}"), noise(size, i as u64));
    }
    out.insert("big/noise-2MiB".into(), noise((2 << 20) + 3, 77));
    out.insert("big/text-2MiB".into(), text(2 << 20, 5));
    out.insert("big/noise-frame".into(), noise(FRAME_TAR_BYTES as usize - 512, 78));
    let mut rng = Rng(11);
    for i in 0..300 {
        let size = rng.below(3000) as usize;
        let body = if i % 3 == 0 { noise(size, i) } else { text(size, i) };
        out.insert(format!("small/{i:03}.log"), body);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_archive_reads_member_by_member_with_one_get_each() -> TestResult {
    let server = MemoryServer::new();
    let src: DynStore = Arc::new(server.bucket("src"));
    let rec = Recording::new(server.bucket("dst").with_limits(1, 5 << 30).with_default_crc64());
    let dst: DynStore = Arc::new(rec.clone());
    let want = sources();
    for (name, body) in &want {
        put(&src, &format!("src/{name}"), body, PutOptions::default()).await?;
    }
    let opts = BundleOptions {
        compress: Compression::Zstd,
        part_size: 256 << 10,
        window: 8,
        ..Default::default()
    };
    let s = bundle_prefix(&src, &key("src/"), &dest(&dst, "out/"), "z", &opts, &transfer()).await?;
    assert!(s.dead_letters == 0 && s.failed.is_empty(), "{s:?}");
    assert_eq!((s.archives_written, s.members), (1, want.len() as u64), "{s:?}");
    let lines = manifest(&read(&dst, "out/z.bundles.jsonl").await?);
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, ManifestLine::Archive { name, .. } if name == "z-000001.tar.zst")),
        "{lines:?}"
    );
    let akey = key("out/z-000001.tar.zst");
    let bytes = read(&dst, "out/z-000001.tar.zst").await?;
    let tar_bytes: usize = want.values().map(|b| 512 + b.len().div_ceil(512) * 512).sum();
    assert!(
        bytes.len() < tar_bytes * 3 / 4,
        "{} bytes of {tar_bytes} tar: not compressed",
        bytes.len()
    );

    // Opened with one suffix read (a HEAD and a ranged GET of the tail
    // through a store without suffix ranges), the index inside it.
    rec.take();
    let a = open_archive(&rec, &akey).await?;
    let size = bytes.len() as u64;
    let reqs = rec.take();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(
        matches!(&reqs[1], Req::Get(k, Some(r)) if k == "out/z-000001.tar.zst" && r.end == size),
        "{reqs:?}"
    );
    let framed = a.framed.ok_or("no locator frame")?;
    assert_eq!(a.entries.len(), want.len());
    assert_eq!(framed.tar.members, want.len() as u64);

    // Every member: its bytes, with exactly one ranged GET of its frames.
    for e in &a.entries {
        let z = e.zstd.ok_or("an entry without frames")?;
        let got = read_member(&rec, &akey, e).await?;
        assert!(got[..] == want[&e.name][..], "member {:?} differs", e.name);
        let reqs = rec.take();
        if e.size == 0 {
            assert!(reqs.is_empty(), "{reqs:?}");
        } else {
            assert_eq!(reqs, vec![Req::Get("out/z-000001.tar.zst".into(), Some(z.range()))]);
        }
        if e.size > FRAME_TAR_BYTES {
            assert!(z.frames >= 3, "a 2 MiB member spans frames: {z:?}");
        }
        assert!(z.len <= z.frames as u64 * (FRAME_TAR_BYTES + 1024), "{z:?}");
    }
    let small = a
        .entries
        .iter()
        .filter(|e| e.name.starts_with("small/"))
        .collect::<Vec<_>>();
    let frames: std::collections::BTreeSet<u64> = small.iter().filter_map(|e| e.zstd.map(|z| z.offset)).collect();
    assert!(
        frames.len() < small.len() / 50,
        "small members share frames: {} frames",
        frames.len()
    );

    // The whole archive decompresses to a standard tar: the index's members
    // in order, then the index member, then tar's end; the locator frame
    // is skipped.
    let tar = zstd::decode_all(&bytes[..])?;
    assert_eq!(tar.len() as u64, framed.tar_len);
    assert!(tar[tar.len() - 1024..].iter().all(|b| *b == 0));
    let mut listed = Vec::new();
    let mut ar = ::tar::Archive::new(&tar[..]);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8(entry.path_bytes().into_owned())?;
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if name == INDEX_MEMBER {
            assert_eq!(parse_index(&data, "index member")?, a.entries);
        } else {
            assert!(data == want[&name], "{name:?} in the tar differs");
            listed.push(name);
        }
    }
    let names: Vec<String> = a.entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(listed, names);
    assert_eq!(names, want.keys().cloned().collect::<Vec<_>>());
    assert_eq!(FramedLocator::decode(&bytes, size)?, framed);
    assert_eq!(bytes.len() as u64 - FRAMED_LEN, framed.index.range().end);
    gnu_zstd_lists(&bytes, &names)?;

    // The sidecar says the same; verification finds nothing; a second run
    // finds the archive complete.
    let side = open_archive_with(&rec, &akey, IndexFrom::Sidecar).await?;
    assert_eq!(side.entries, a.entries);
    let report = verify_archive(&rec, &akey).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.members, want.len() as u64);
    let again = bundle_prefix(&src, &key("src/"), &dest(&dst, "out/"), "z", &opts, &transfer()).await?;
    assert_eq!((again.archives_written, again.archives_skipped), (0, 1), "{again:?}");

    // Unbundled to a bucket: every member, byte for byte; members above
    // 1 MiB by multipart upload, cut from their decompressed frames.
    let back: DynStore = Arc::new(server.bucket("back").with_limits(256 << 10, 5 << 30));
    let small_parts = haul_engine::Transfer::new(
        haul_engine::TransferOptions {
            multipart_threshold: 1 << 20,
            part_size: 256 << 10,
            ..Default::default()
        },
        tokio_util::sync::CancellationToken::new(),
    );
    let r = unbundle_to_store(
        &dst,
        &akey,
        &back,
        &key("r/"),
        &UnbundleOptions::default(),
        &small_parts,
    )
    .await?;
    assert!(r.is_clean() && r.restored.len() == want.len(), "{r:?}");
    for (name, body) in &want {
        assert!(
            read(&back, &format!("r/{name}")).await?[..] == body[..],
            "{name} restored differs"
        );
    }
    let parts = back
        .head(&haul_store::Key::object("r/big/text-2MiB".to_string())?)
        .await?
        .parts_count;
    assert_eq!(parts, Some(8), "a 2 MiB member in 256 KiB parts");
    Ok(())
}

/// `zstd -dc A | tar -t` lists the members and the index (when both
/// binaries are installed).
fn gnu_zstd_lists(archive: &[u8], names: &[String]) -> TestResult {
    let have = |b: &str| std::process::Command::new(b).arg("--version").output().is_ok();
    if !have("zstd") || !have("tar") {
        println!("note: no zstd or tar binary: the external check is skipped");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("a.tar.zst");
    std::fs::write(&file, archive)?;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$1\" | tar --quoting-style=literal -t")
        .arg("sh")
        .arg(&file)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<&str> = std::str::from_utf8(&out.stdout)?.lines().collect();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.push(INDEX_MEMBER);
    assert_eq!(listed, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_frame_is_an_integrity_error_not_wrong_bytes() -> TestResult {
    let server = MemoryServer::new();
    let src: DynStore = Arc::new(server.bucket("src"));
    let dst: DynStore = Arc::new(server.bucket("dst"));
    let mut want = BTreeMap::new();
    want.insert("a.log".to_string(), text(200_000, 1));
    want.insert("b.bin".to_string(), noise(3000, 2));
    want.insert("c.log".to_string(), text(5000, 3));
    for (name, body) in &want {
        put(&src, &format!("src/{name}"), body, PutOptions::default()).await?;
    }
    let opts = BundleOptions {
        compress: Compression::Zstd,
        ..Default::default()
    };
    bundle_prefix(&src, &key("src/"), &dest(&dst, "out/"), "d", &opts, &transfer()).await?;
    let mut bytes = read(&dst, "out/d-000001.tar.zst").await?.to_vec();
    let a = open_archive(dst.as_ref(), &key("out/d-000001.tar.zst")).await?;
    let e = a.member("a.log").ok_or("no a.log")?;
    let z = e.zstd.ok_or("no frames")?;
    // A byte in the middle of the member's frame.
    bytes[(z.offset + z.len / 2) as usize] ^= 0x5a;
    let bad = key("out/bad.tar.zst");
    put(&dst, "out/bad.tar.zst", &bytes, PutOptions::default()).await?;
    let err = read_member(dst.as_ref(), &bad, e)
        .await
        .err()
        .ok_or("a damaged frame read back")?;
    assert!(err.is_integrity(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("a.log") && (msg.contains("zstd") || msg.contains("CRC64NVME")),
        "{msg}"
    );
    let report = verify_archive(dst.as_ref(), &bad).await?;
    assert!(!report.is_ok(), "verify found nothing in a damaged archive");
    // The frame damaged is the one of a.log (the first); the others read.
    for name in ["b.bin", "c.log"] {
        let e = a.member(name).ok_or("member")?;
        if e.zstd.map(|s| s.offset) != Some(z.offset) {
            assert_eq!(read_member(dst.as_ref(), &bad, e).await?, want[name]);
        }
    }
    Ok(())
}
