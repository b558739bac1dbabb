//! The write side of `haul bundle`, end to end on memory and local stores:
//! archives read back by the `tar` crate and by GNU tar equal the sources
//! byte for byte, the index's offsets and CRCs point at the right bytes,
//! the locator decodes from the last block, grouping is deterministic,
//! bad objects become dead letters without failing their archive, and a
//! re-run skips what is complete. Faults and S3: `bundle_faults.rs`.

mod bundle_common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bundle_common::*;
use futures::TryStreamExt;
use haul_engine::bundle::*;
use haul_store::local::LocalStore;
use haul_store::*;

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
    assert!(
        s.dead_letters == 0 && s.dead_sample.is_empty() && s.failed.is_empty(),
        "{s:?}"
    );
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
    let idx = parse_index(&read(&dst, "out/r1-000001.tar.index").await?, "sidecar")?;
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
            let idx = parse_index(&read(&dst, &format!("{akey}.index")).await?, "sidecar")?;
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
    assert_eq!(s.dead_letters, s.dead_sample.len() as u64);
    assert!(s
        .dead_sample
        .iter()
        .any(|d| d.key == "src/k9" && d.reason == DeadReason::Archived));
    assert_eq!(s.dead_by_reason.get(&DeadReason::Archived), Some(&1));
    let j = serde_json::to_string(&s.dead_sample[0])?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundling_into_the_source_prefix_skips_its_own_output() -> TestResult {
    let (src, _) = memory_pair();
    for i in 0..4 {
        put(
            &src,
            &format!("data/k{i}"),
            &haul_testkit::data(100, i),
            PutOptions::default(),
        )
        .await?;
    }
    let d = dest(&src, "data/bundles/");
    let opts = BundleOptions::default();
    let first = bundle_prefix(&src, &key("data/"), &d, "s", &opts, &transfer()).await?;
    assert_eq!((first.members, first.archives_written), (4, 1));
    // Again: the archive, its sidecar and the manifest are not members.
    let again = bundle_prefix(&src, &key("data/"), &d, "s", &opts, &transfer()).await?;
    assert_eq!(
        (again.members, again.archives_skipped, again.archives_written),
        (4, 1, 0)
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
