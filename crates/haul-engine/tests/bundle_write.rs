//! The write side of `haul bundle`, end to end on memory and local stores:
//! archives read back by the `tar` crate and by GNU tar equal the sources
//! byte for byte, the index's offsets and CRCs point at the right bytes,
//! the locator decodes from the last block, grouping is deterministic,
//! bad objects become dead letters without failing their archive, and a
//! re-run skips what is complete.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use haul_engine::bundle::format::{Locator, BLOCK, INDEX_MEMBER};
use haul_engine::bundle::*;
use haul_engine::{Transfer, TransferOptions};
use haul_store::checksum::{crc64, crc64_to_b64, md5_hex};
use haul_store::local::LocalStore;
use haul_store::memory::MemoryServer;
use haul_store::*;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key(s: &str) -> Key {
    Key::prefix(s).unwrap_or_else(|e| panic!("test key {s:?}: {e}"))
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn put(s: &DynStore, k: &str, body: &[u8], opts: PutOptions) -> Result<(), StoreError> {
    let opts = PutOptions {
        checksums: Checksums::md5(&md5_hex(body)),
        ..opts
    };
    s.put(&key(k), Bytes::copy_from_slice(body), &opts).await.map(|_| ())
}

async fn read(s: &DynStore, k: &str) -> Result<Bytes, StoreError> {
    let g = s.get(&key(k), None).await?;
    let chunks: Vec<Bytes> = g.body.try_collect().await?;
    Ok(chunks.concat().into())
}

fn transfer() -> Transfer {
    Transfer::new(TransferOptions::default(), CancellationToken::new())
}

/// Two buckets of one memory server; the destination keeps full-object
/// CRC64NVMEs (as AWS S3 does) and takes small parts (multipart exercised
/// with small archives).
fn memory_pair() -> (DynStore, DynStore) {
    let server = MemoryServer::new();
    let dst = server.bucket("dst").with_limits(1, 5 << 30).with_default_crc64();
    (Arc::new(server.bucket("src")), Arc::new(dst))
}

fn dest(store: &DynStore, prefix: &str) -> Destination {
    Destination {
        store: store.clone(),
        prefix: key(prefix),
        storage_class: None,
    }
}

/// A name of `len` bytes (at least 8) with unicode, spaces, `+` and `%`,
/// cut into path components of at most 200 bytes; unique by `i`.
fn name_of(i: usize, len: usize, rng: &mut Rng) -> String {
    const PIECES: [&str; 8] = ["a", "Z", " ", "+", "%", "é", "日", "-"];
    let mut s = format!("o{i:04}/");
    let mut comp = 0;
    while s.len() < len {
        if comp >= 200 {
            s.push('/');
            comp = 0;
            continue;
        }
        let p = PIECES[rng.below(PIECES.len() as u64) as usize];
        if s.len() + p.len() > len {
            s.push('x');
            comp += 1;
            continue;
        }
        s.push_str(p);
        comp += p.len();
    }
    while s.ends_with('/') || s.ends_with(' ') {
        s.pop();
        s.push('y');
    }
    s
}

/// The objects of the roundtrip: names of 1..=1,020 bytes and sizes
/// around multiples of 512, from a fixed seed.
fn objects(n: usize, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng(seed);
    let edges = [0u64, 1, 511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097];
    let mut out = BTreeMap::new();
    for i in 0..n {
        let len = match i % 4 {
            0 => 8,
            1 => 8 + rng.below(92) as usize,
            2 => 100 + rng.below(200) as usize,
            _ => 900 + rng.below(121) as usize,
        };
        let size = if i % 2 == 0 {
            edges[i / 2 % edges.len()]
        } else {
            rng.below(3 * 512 + 3)
        };
        out.insert(name_of(i, len, &mut rng), haul_testkit::data(size as usize, i as u64));
    }
    out.insert("x".into(), b"one-byte-name".to_vec());
    out
}

fn manifest(body: &[u8]) -> Vec<ManifestLine> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("manifest line: {e}")))
        .collect()
}

fn archives(lines: &[ManifestLine]) -> Vec<(String, String, u64)> {
    lines
        .iter()
        .filter_map(|l| match l {
            ManifestLine::Archive { name, key, members, .. } => Some((name.clone(), key.clone(), *members)),
            _ => None,
        })
        .collect()
}

/// Checks one archive against the sources: the tar crate's reading, the
/// index (offsets, CRCs, sizes), the locator, the sidecar.
async fn check_archive(
    dst: &DynStore,
    archive_key: &str,
    sources: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let bytes = read(dst, archive_key).await?;
    // The tar crate: every member, in order, equal to its source.
    let mut tar = ::tar::Archive::new(&bytes[..]);
    let mut seen = Vec::new();
    let mut index_data = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8(entry.path_bytes().into_owned())?;
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if name == INDEX_MEMBER {
            index_data = data;
            continue;
        }
        assert_eq!(entry.header().entry_type(), ::tar::EntryType::Regular);
        assert_eq!(entry.size(), data.len() as u64);
        let src = sources
            .get(&name)
            .ok_or_else(|| format!("unexpected member {name:?}"))?;
        assert_eq!(&data, src, "member {name:?}");
        seen.push((name, entry.raw_file_position()));
    }
    // The index: one entry per member, offsets into the archive's bytes.
    let index = parse_index(&index_data).ok_or("index does not parse")?;
    assert_eq!(index.len(), seen.len());
    for (e, (name, pos)) in index.iter().zip(&seen) {
        assert_eq!(&e.name, name);
        assert_eq!(e.data_offset, *pos, "{name:?}");
        let data = &bytes[e.data_range().start as usize..e.data_range().end as usize];
        assert_eq!(data, &sources[name][..]);
        assert_eq!(e.crc64nvme, crc64_to_b64(crc64(data)));
        assert!(e.header_offset < e.data_offset && e.header_offset % BLOCK == 0);
        assert_eq!(e.key, format!("src/{name}"));
    }
    // The locator: the archive's last block, found with one suffix read.
    let g = dst.get_with(&key(archive_key), GetOpts::suffix(BLOCK)).await?;
    let last: Vec<Bytes> = g.body.try_collect().await?;
    let loc = Locator::decode(&last.concat(), bytes.len() as u64)?;
    assert_eq!(loc.members, index.len() as u64);
    let idx = &bytes[loc.index_offset as usize..(loc.index_offset + loc.index_len) as usize];
    assert_eq!(idx, &index_data[..]);
    assert_eq!(loc.index_crc, crc64(idx));
    // The sidecar is the same index.
    assert_eq!(read(dst, &format!("{archive_key}.index")).await?, index_data);
    Ok(seen.into_iter().map(|(n, _)| n).collect())
}

/// GNU tar lists and extracts the archive to the same names and bytes.
fn check_gnu_tar(archive: &[u8], sources: &BTreeMap<String, Vec<u8>>, names: &[String]) -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("a.tar");
    std::fs::write(&file, archive)?;
    let list = std::process::Command::new("tar")
        .args(["--quoting-style=literal", "-tf"])
        .arg(&file)
        .output()?;
    assert!(
        list.status.success(),
        "tar -tf: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed: Vec<&str> = std::str::from_utf8(&list.stdout)?.lines().collect();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.push(INDEX_MEMBER);
    assert_eq!(listed, want);
    let verbose = std::process::Command::new("tar").arg("-tvf").arg(&file).output()?;
    assert!(verbose.status.success());
    assert_eq!(std::str::from_utf8(&verbose.stdout)?.lines().count(), want.len());
    let out = dir.path().join("x");
    std::fs::create_dir(&out)?;
    let x = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&file)
        .arg("-C")
        .arg(&out)
        .output()?;
    assert!(x.status.success(), "tar -xf: {}", String::from_utf8_lossy(&x.stderr));
    assert!(x.stderr.is_empty(), "tar -xf: {}", String::from_utf8_lossy(&x.stderr));
    for n in names {
        assert_eq!(&std::fs::read(out.join(n))?, &sources[n], "extracted {n:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_roundtrip_through_tar_readers_and_the_index() -> TestResult {
    let (src, dst) = memory_pair();
    let sources = objects(48, 42);
    for (i, (name, body)) in sources.iter().enumerate() {
        let mut opts = PutOptions::default();
        if i % 5 == 0 {
            opts.metadata.insert("file-mode".into(), "0750".into());
            opts.metadata.insert("file-owner".into(), "1000".into());
            opts.tags = vec![("t".into(), format!("v{i}"))];
            opts.content_type = Some("text/x-test".into());
        }
        put(&src, &format!("src/{name}"), body, opts).await?;
    }
    let opts = BundleOptions {
        max_members: 20,
        part_size: 4096,
        window: 4,
        tags: true,
        ..Default::default()
    };
    let s = bundle_prefix(&src, &key("src/"), &dest(&dst, "out/"), "r1", &opts, &transfer()).await?;
    assert!(s.dead.is_empty() && s.failed.is_empty(), "{s:?}");
    assert_eq!(s.members, sources.len() as u64);
    assert_eq!(s.archives_written, 3);
    let lines = manifest(&read(&dst, "out/r1.bundles.jsonl").await?);
    let mut all = Vec::new();
    for (name, akey, members) in archives(&lines) {
        assert_eq!(akey, format!("out/{name}"));
        let names = check_archive(&dst, &akey, &sources).await?;
        assert_eq!(names.len() as u64, members);
        check_gnu_tar(&read(&dst, &akey).await?, &sources, &names)?;
        all.extend(names);
    }
    let want: Vec<String> = sources.keys().cloned().collect();
    assert_eq!(all, want, "every object once, in key order");
    // The index keeps content type, user metadata and tags.
    let idx = parse_index(&read(&dst, "out/r1-000001.tar.index").await?).ok_or("index")?;
    for (i, e) in idx.iter().enumerate() {
        let tagged = i % 5 == 0;
        assert_eq!(e.tags.get("t").cloned(), tagged.then(|| format!("v{i}")), "{e:?}");
        assert_eq!(e.metadata.contains_key("file-mode"), tagged);
        assert_eq!(e.content_type.as_deref() == Some("text/x-test"), tagged);
        assert!(e.etag.is_some() && e.mtime_ns.is_some() && e.storage_class.as_deref() == Some("STANDARD"));
    }
    // Modes and owners from the metadata, else 0644/0.
    let first = read(&dst, "out/r1-000001.tar").await?;
    let mut tar = ::tar::Archive::new(&first[..]);
    for (i, entry) in tar.entries()?.enumerate().take(20) {
        let h = entry?.header().clone();
        let (mode, uid) = if i % 5 == 0 { (0o750, 1000) } else { (0o644, 0) };
        assert_eq!((h.mode()?, h.uid()?), (mode, uid), "member {i}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_stores_bundle_and_rerun_skips() -> TestResult {
    let (d1, d2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let src: DynStore = Arc::new(LocalStore::new(d1.path())?);
    let dst: DynStore = Arc::new(LocalStore::new(d2.path())?);
    let mut sources = BTreeMap::new();
    for (i, size) in [0usize, 1, 511, 512, 513, 10_000, 70_000].into_iter().enumerate() {
        let name = format!("d{}/f {i}+%.bin", i % 2);
        put(
            &src,
            &format!("src/{name}"),
            &haul_testkit::data(size, i as u64),
            PutOptions::default(),
        )
        .await?;
        sources.insert(name, haul_testkit::data(size, i as u64));
    }
    let opts = BundleOptions {
        part_size: 16 * 1024,
        ..Default::default()
    };
    let d = dest(&dst, "out/");
    let s = bundle_prefix(&src, &key("src/"), &d, "loc", &opts, &transfer()).await?;
    assert_eq!((s.archives_written, s.members), (1, 7), "{s:?}");
    let names = check_archive(&dst, "out/loc-000001.tar", &sources).await?;
    check_gnu_tar(&read(&dst, "out/loc-000001.tar").await?, &sources, &names)?;
    let before = read(&dst, "out/loc-000001.tar").await?;
    // A re-run finds the archive complete.
    let again = bundle_prefix(&src, &key("src/"), &d, "loc", &opts, &transfer()).await?;
    assert_eq!((again.archives_written, again.archives_skipped), (0, 1));
    // An interrupted one (no sidecar) is written again, the same bytes.
    dst.delete_many(&[key("out/loc-000001.tar.index")]).await?;
    put(&dst, "out/loc-000001.tar", b"partial", PutOptions::default()).await?;
    let third = bundle_prefix(&src, &key("src/"), &d, "loc", &opts, &transfer()).await?;
    assert_eq!((third.archives_written, third.archives_skipped), (1, 0));
    assert_eq!(read(&dst, "out/loc-000001.tar").await?, before, "deterministic bytes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_is_deterministic_across_runs() -> TestResult {
    let (src, dst) = memory_pair();
    let mut n = 0;
    for dir in ["a", "b", "c"] {
        for i in 0..7 {
            let class = if dir == "c" && i >= 4 {
                Some("STANDARD_IA".to_string())
            } else {
                None
            };
            let opts = PutOptions {
                storage_class: class,
                ..Default::default()
            };
            put(&src, &format!("src/{dir}/{i}"), &haul_testkit::data(100 * i, n), opts).await?;
            n += 1;
        }
    }
    put(&src, "src/c/zz/", b"", PutOptions::default()).await?;
    let opts = BundleOptions {
        max_members: 3,
        max_bytes: 1000,
        group_by_prefix: Some(1),
        ..Default::default()
    };
    let mut runs = Vec::new();
    for out in ["one/", "two/"] {
        let s = bundle_prefix(&src, &key("src/"), &dest(&dst, out), "g", &opts, &transfer()).await?;
        assert_eq!(s.folders, 1);
        let body = read(&dst, &format!("{out}g.bundles.jsonl")).await?;
        let lines = manifest(&body);
        let mut plan = Vec::new();
        for (name, akey, _) in archives(&lines) {
            let idx = parse_index(&read(&dst, &format!("{akey}.index")).await?).ok_or("index")?;
            plan.push(format!(
                "{name}: {}",
                idx.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(" ")
            ));
        }
        runs.push(plan);
    }
    assert_eq!(runs[0], runs[1]);
    assert_eq!(
        runs[0],
        [
            "g-000001.tar: a/0 a/1 a/2",
            "g-000002.tar: a/3 a/4",
            "g-000003.tar: a/5",
            "g-000004.tar: a/6",
            "g-000005.tar: b/0 b/1 b/2",
            "g-000006.tar: b/3 b/4",
            "g-000007.tar: b/5",
            "g-000008.tar: b/6",
            "g-000009.tar: c/0 c/1 c/2",
            "g-000010.tar: c/3",
            "g-000011.tar: c/4 c/5",
            "g-000012.tar: c/6",
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_are_dead_letters_and_the_archive_keeps_the_rest() -> TestResult {
    let (src, dst) = memory_pair();
    for i in 0..6 {
        put(
            &src,
            &format!("src/k{i}"),
            &haul_testkit::data(700, i),
            PutOptions::default(),
        )
        .await?;
    }
    let glacier = PutOptions {
        storage_class: Some("GLACIER".into()),
        ..Default::default()
    };
    put(&src, "src/k9", b"cold", glacier).await?;
    // Plan from a listing, then change the source under it.
    let listed: Vec<ListEntry> = src.list(ListRequest::prefix(key("src/"))).try_collect().await?;
    let opts = BundleOptions::default();
    let mut g = Grouper::new("d", "src/", &opts);
    let mut planned = Vec::new();
    for e in listed {
        if let ListEntry::Object(m) = e {
            planned.extend(g.push(m));
        }
    }
    planned.extend(g.finish());
    let dead: Vec<_> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::Dead(d) => Some((d.key.clone(), d.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(dead, [("src/k9".to_string(), DeadReason::Archived)]);
    let unit = planned
        .into_iter()
        .find_map(|p| match p {
            Planned::Archive(u) => Some(u),
            _ => None,
        })
        .ok_or("no archive")?;
    src.delete_many(&[key("src/k1")]).await?;
    put(&src, "src/k3", b"rewritten", PutOptions::default()).await?;
    let out = write_archive(&src, &dest(&dst, "out/"), &unit, &opts, &transfer()).await?;
    let reasons: Vec<_> = out.dead.iter().map(|d| (d.key.as_str(), d.reason)).collect();
    assert_eq!(
        reasons,
        [("src/k1", DeadReason::NotFound), ("src/k3", DeadReason::Changed)]
    );
    assert!(out.dead[1].message.contains("If-Match"), "{}", out.dead[1].message);
    assert_eq!(out.dead[0].status, Some(404));
    let mut sources = BTreeMap::new();
    for i in [0, 2, 4, 5] {
        sources.insert(format!("k{i}"), haul_testkit::data(700, i));
    }
    let names = check_archive(&dst, "out/d-000001.tar", &sources).await?;
    assert_eq!(names, ["k0", "k2", "k4", "k5"]);
    assert_eq!(out.members, 4);
    // A run reports the GLACIER object in its summary too.
    let s = bundle_prefix(&src, &key("src/"), &dest(&dst, "run/"), "d", &opts, &transfer()).await?;
    assert!(s
        .dead
        .iter()
        .any(|d| d.key == "src/k9" && d.reason == DeadReason::Archived));
    let j = serde_json::to_string(&s.dead[0])?;
    assert!(j.contains("\"reason\":\"archived\""), "{j}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_copied_as_they_are() -> TestResult {
    let (src, dst) = memory_pair();
    put(&src, "src/small", b"tiny", PutOptions::default()).await?;
    let big = haul_testkit::data(300_000, 5);
    put(&src, "src/dir/big", &big, PutOptions::default()).await?;
    let opts = BundleOptions {
        max_member_size: 100_000,
        ..Default::default()
    };
    let s = bundle_prefix(&src, &key("src/"), &dest(&dst, "out/"), "l", &opts, &transfer()).await?;
    assert_eq!((s.members, s.large_objects, s.large_bytes), (1, 1, 300_000));
    assert_eq!(read(&dst, "out/large/dir/big").await?, big);
    let lines = manifest(&read(&dst, "out/l.bundles.jsonl").await?);
    assert!(
        matches!(&lines[1], ManifestLine::External { source, key, bytes: 300_000, .. }
        if source == "src/dir/big" && key == "out/large/dir/big")
    );
    Ok(())
}

#[test]
fn the_grouper_holds_one_group_at_a_time() {
    let opts = BundleOptions {
        max_members: 7,
        max_bytes: 5_000,
        group_by_prefix: Some(1),
        ..Default::default()
    };
    let mut g = Grouper::new("m", "", &opts);
    let (mut archives, mut members) = (0u64, 0u64);
    let mut rng = Rng(7);
    for i in 0..100_000u64 {
        let meta = ObjectMeta {
            key: key(&format!("p{:03}/k{i:08}", i / 1000)),
            size: rng.below(2_000),
            etag: Some(format!("{i:x}")),
            ..Default::default()
        };
        for p in g.push(meta) {
            if let Planned::Archive(u) = p {
                assert!(u.members.len() <= 7 && (u.bytes <= 5_000 || u.members.len() == 1));
                archives += 1;
                members += u.members.len() as u64;
            }
        }
        assert!(g.open_members() <= 7);
    }
    if let Some(Planned::Archive(u)) = g.finish() {
        members += u.members.len() as u64;
        archives += 1;
    }
    assert_eq!(members, 100_000);
    assert!(g.high_water() <= 7 && archives >= 100_000 / 7);
}

/// S3 on moto: real `If-Match` (412 on a changed object) and suffix reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_roundtrip_with_a_changed_object() -> TestResult {
    if !haul_testkit::s3_enabled() {
        eprintln!("HAUL_TEST_S3=off: S3 backend not tested");
        return Ok(());
    }
    haul_testkit::set_aws_env();
    let server = haul_testkit::moto();
    let conn = haul_store::s3::S3Connection::connect(&haul_store::s3::S3Config {
        endpoint_url: Some(server.endpoint.clone()),
        path_style: true,
        ..Default::default()
    })
    .await?;
    let (bs, bd) = (haul_testkit::unique_bucket("bs"), haul_testkit::unique_bucket("bd"));
    haul_testkit::create_bucket(server, &bs)?;
    haul_testkit::create_bucket(server, &bd)?;
    let (src, dst): (DynStore, DynStore) = (Arc::new(conn.bucket(&bs)), Arc::new(conn.bucket(&bd)));
    let sources = objects(12, 9);
    for (name, body) in &sources {
        put(&src, &format!("src/{name}"), body, PutOptions::default()).await?;
    }
    let listed: Vec<ListEntry> = src.list(ListRequest::prefix(key("src/"))).try_collect().await?;
    let opts = BundleOptions::default();
    let mut g = Grouper::new("m", "src/", &opts);
    let mut planned = Vec::new();
    for e in listed {
        if let ListEntry::Object(m) = e {
            planned.extend(g.push(m));
        }
    }
    planned.extend(g.finish());
    let Some(Planned::Archive(unit)) = planned.pop() else {
        return Err("no archive".into());
    };
    let changed = sources.keys().nth(3).ok_or("keys")?.clone();
    put(&src, &format!("src/{changed}"), b"new bytes", PutOptions::default()).await?;
    let out = write_archive(&src, &dest(&dst, "out/"), &unit, &opts, &transfer()).await?;
    assert_eq!(out.dead.len(), 1);
    assert_eq!(
        (out.dead[0].reason, out.dead[0].status),
        (DeadReason::Changed, Some(412))
    );
    let mut rest = sources.clone();
    rest.remove(&changed);
    let names = check_archive(&dst, "out/m-000001.tar", &rest).await?;
    assert_eq!(names.len(), rest.len());
    check_gnu_tar(&read(&dst, "out/m-000001.tar").await?, &rest, &names)?;
    Ok(())
}

/// A destination that goes down mid-archive fails the archive — with its name — and
/// leaves neither an archive nor a sidecar behind; the sources are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_fails_the_archive_and_leaves_nothing() -> TestResult {
    let (src, dst) = memory_pair();
    for i in 0..5 {
        put(
            &src,
            &format!("src/k{i}"),
            &haul_testkit::data(3000, i),
            PutOptions::default(),
        )
        .await?;
    }
    let faulty = Arc::new(haul_store::wrap::FaultStore::new(
        dst.clone(),
        haul_store::wrap::FaultConfig {
            latency: std::time::Duration::from_millis(10),
            ..haul_store::wrap::FaultConfig::none(1)
        },
    ));
    let opts = BundleOptions {
        part_size: 2048,
        ..Default::default()
    };
    let mut g = Grouper::new("f", "src/", &opts);
    let listed: Vec<ListEntry> = src.list(ListRequest::prefix(key("src/"))).try_collect().await?;
    let mut planned = Vec::new();
    for e in listed {
        if let ListEntry::Object(m) = e {
            planned.extend(g.push(m));
        }
    }
    let Some(Planned::Archive(unit)) = g.finish() else {
        return Err("no archive".into());
    };
    assert!(planned.is_empty());
    // Down in the middle of the parts.
    let switch = faulty.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(35)).await;
        switch.set_down(true);
    });
    let faulty: DynStore = faulty;
    let e = write_archive(&src, &dest(&faulty, "out/"), &unit, &opts, &transfer())
        .await
        .err()
        .ok_or("a write to a store that went down")?;
    assert!(e.to_string().starts_with("archive f-000001.tar: "), "{e}");
    let left: Vec<ListEntry> = dst.list(ListRequest::prefix(key("out/"))).try_collect().await?;
    assert!(left.is_empty(), "{left:?}");
    for i in 0..5 {
        assert_eq!(read(&src, &format!("src/k{i}")).await?, haul_testkit::data(3000, i));
    }
    Ok(())
}

/// Reads through the retry wrapper over a flaky source (failed requests,
/// bodies cut off, bytes flipped): every member in an archive equals its
/// source; a flipped read, caught by the source's CRC64NVME, is read
/// again, and a member flipped on every read is a dead letter — never a
/// corrupt member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_source_gives_exact_members_or_dead_letters() -> TestResult {
    let server = MemoryServer::new();
    let src: DynStore = Arc::new(server.bucket("src").with_default_crc64());
    let dst: DynStore = Arc::new(server.bucket("dst").with_limits(1, 5 << 30));
    let mut sources = BTreeMap::new();
    for i in 0..60u64 {
        let body = haul_testkit::data(200 + 97 * i as usize, i);
        put(&src, &format!("src/k{i:02}"), &body, PutOptions::default()).await?;
        sources.insert(format!("k{i:02}"), body);
    }
    let flaky: DynStore = Arc::new(haul_store::wrap::FaultStore::new(
        src,
        haul_store::wrap::FaultConfig {
            before_rate: 0.1,
            body_rate: 0.3,
            corrupt_rate: 0.5,
            ..haul_store::wrap::FaultConfig::none(11)
        },
    ));
    let policy = haul_store::wrap::RetryPolicy {
        max_attempts: 30,
        min_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(5),
    };
    let src: DynStore = Arc::new(haul_store::wrap::RetryStore::new(flaky, policy));
    let opts = BundleOptions {
        max_members: 25,
        part_size: 4096,
        ..Default::default()
    };
    let s = bundle_prefix(&src, &key("src/"), &dest(&dst, "out/"), "f", &opts, &transfer()).await?;
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(s.members + s.dead.len() as u64, 60, "{s:?}");
    // Half the reads flipped, each member read up to 3 times: some are
    // flipped every time (1 in 8; none at all is a 1 in 3,000 chance).
    assert!(!s.dead.is_empty(), "some members were flipped on every read");
    for d in &s.dead {
        assert_eq!((d.reason, d.attempts), (DeadReason::Failed, 3), "{d:?}");
        assert!(d.message.contains("CRC64NVME"), "{}", d.message);
    }
    let lines = manifest(&read(&dst, "out/f.bundles.jsonl").await?);
    let mut n = 0;
    for (_, akey, members) in archives(&lines) {
        n += check_archive(&dst, &akey, &sources).await?.len() as u64;
        assert!(members <= 25);
    }
    assert_eq!(n, s.members);
    Ok(())
}
