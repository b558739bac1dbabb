//! The read side of bundles: finding the index (locator, sidecar plain or
//! zstd), reading members with one ranged GET each, integrity errors,
//! verification, and GNU tar reading the archive. Extraction and
//! unbundling: tests/bundle_unbundle.rs.

mod bundle_support;

use bundle_support::*;
use haul_engine::bundle::format::{Locator, INDEX_MEMBER, SIDECAR_SUFFIX};
use haul_engine::bundle::{
    member_stream, open_archive, open_archive_with, read_member, verify_against, verify_archive, BundleError,
    IndexFrom, IndexSource,
};
use haul_store::local::LocalStore;
use haul_store::memory::MemoryStore;
use haul_store::{Key, ObjectStore, PutOptions};
use proptest::strategy::Strategy;

const AROUND_BLOCKS: [usize; 12] = [0, 1, 511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097, 70_000];

#[tokio::test]
async fn the_index_is_found_through_the_locator_with_one_tail_read() -> TestResult {
    let store = Recording::new(MemoryStore::new("b"));
    let built = build(&sized(&AROUND_BLOCKS))?;
    let key = put(&store, "a.tar", built.bytes.clone()).await?;
    store.take();
    let a = open_archive(&store, &key).await?;
    assert_eq!(a.source, IndexSource::Locator);
    assert_eq!(a.entries, built.entries);
    assert_eq!(a.locator, Some(built.locator));
    assert_eq!(a.size, built.bytes.len() as u64);
    // A small index comes with the tail: a HEAD and one ranged GET (one
    // suffix GET once the store has it).
    let size = built.bytes.len() as u64;
    let tail = size - haul_engine::bundle::read::TAIL_READ;
    assert_eq!(
        store.take(),
        vec![Req::Head("a.tar".into()), Req::Get("a.tar".into(), Some(tail..size))]
    );

    // An index larger than the tail: one more ranged GET, of exactly the index.
    let many: Vec<Member> = (0..700)
        .map(|i| Member::new(&format!("many/{i:04}"), data(i % 7, 1)))
        .collect();
    let big = build(&many)?;
    assert!(big.index.len() as u64 > haul_engine::bundle::read::TAIL_READ);
    let key = put(&store, "big.tar", big.bytes.clone()).await?;
    store.take();
    let a = open_archive(&store, &key).await?;
    assert_eq!(a.entries.len(), 700);
    let l = big.locator;
    let reqs = store.take();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(
        reqs[2],
        Req::Get("big.tar".into(), Some(l.index_offset..l.index_offset + l.index_len))
    );
    Ok(())
}

#[tokio::test]
async fn the_sidecar_gives_the_index_plain_or_zstd() -> TestResult {
    let store = MemoryStore::new("b");
    let built = build(&sized(&[3, 600, 0]))?;
    // No locator: the archive ends with tar's end-of-archive blocks.
    let plain_tar = built.bytes[..built.bytes.len() - 512].to_vec();
    let key = put(&store, "p.tar", plain_tar.clone()).await?;
    let none = open_archive(&store, &key)
        .await
        .err()
        .ok_or("an archive without index opened")?;
    let msg = none.to_string();
    assert!(matches!(none, BundleError::NoIndex { .. }), "{msg}");
    assert!(
        msg.contains("no haul index locator") && msg.contains("p.tar.index"),
        "{msg}"
    );

    put(&store, &format!("p.tar{SIDECAR_SUFFIX}"), built.index.clone()).await?;
    let a = open_archive(&store, &key).await?;
    assert_eq!((a.source, &a.entries), (IndexSource::Sidecar, &built.entries));
    assert_eq!(a.size, plain_tar.len() as u64);

    let key = put(&store, "z.tar", built.bytes.clone()).await?;
    put(&store, "z.tar.index", zstd::encode_all(&built.index[..], 3)?).await?;
    // Asked for: the sidecar even though a locator is there.
    let a = open_archive_with(&store, &key, IndexFrom::Sidecar).await?;
    assert_eq!((a.source, &a.entries), (IndexSource::Sidecar, &built.entries));
    for e in &a.entries {
        let i = built
            .entries
            .iter()
            .position(|b| b.name == e.name)
            .ok_or("lost member")?;
        assert_eq!(read_member(&store, &key, e).await?, data(e.size as usize, i as u8));
    }

    // A bad sidecar line is named.
    let mut bad = built.index.clone();
    bad.extend_from_slice(b"{\"name\":\"x\"}\n");
    put(&store, "p.tar.index", bad).await?;
    let msg = open_archive(&store, &Key::object("p.tar")?)
        .await
        .err()
        .ok_or("bad index read")?
        .to_string();
    assert!(msg.starts_with("index \"p.tar.index\" line 4: "), "{msg}");
    Ok(())
}

#[tokio::test]
async fn members_read_back_exactly_with_one_ranged_get_each() -> TestResult {
    let store = Recording::new(MemoryStore::new("b"));
    let members = sized(&AROUND_BLOCKS);
    let built = build(&members)?;
    let key = put(&store, "a.tar", built.bytes.clone()).await?;
    let a = open_archive(&store, &key).await?;
    store.take();
    for (m, e) in members.iter().zip(&a.entries) {
        assert_eq!(read_member(&store, &key, e).await?.as_ref(), &m.data[..], "{}", m.name);
        let want = if m.data.is_empty() {
            vec![]
        } else {
            vec![Req::Get("a.tar".into(), Some(e.data_range()))]
        };
        assert_eq!(store.take(), want, "{}", m.name);
    }

    // The same from a local directory.
    let dir = tempfile::tempdir()?;
    let local = LocalStore::new(dir.path())?;
    let key = put(&local, "x/a.tar", built.bytes.clone()).await?;
    let a = open_archive(&local, &key).await?;
    for (m, e) in members.iter().zip(&a.entries) {
        assert_eq!(read_member(&local, &key, e).await?.as_ref(), &m.data[..], "{}", m.name);
    }
    Ok(())
}

#[tokio::test]
async fn a_damaged_member_is_an_integrity_error_naming_it() -> TestResult {
    let store = MemoryStore::new("b");
    let built = build(&sized(&[100, 2000, 5]))?;
    let victim = &built.entries[1];
    let mut bytes = built.bytes.clone();
    bytes[victim.data_offset as usize + 1234] ^= 0x40;
    let key = put(&store, "a.tar", bytes).await?;
    let a = open_archive(&store, &key).await?;
    let err = read_member(&store, &key, &a.entries[1])
        .await
        .err()
        .ok_or("damage not seen")?;
    assert!(err.is_integrity());
    let msg = err.to_string();
    assert!(
        msg.contains("member \"m1-2000\"") && msg.contains("CRC64NVME") && msg.contains("a.tar"),
        "{msg}"
    );
    // The stream form ends with the same error, after the bytes.
    let mut s = member_stream(&store, &key, &a.entries[1]).await?;
    let mut last = None;
    while let Some(item) = futures::StreamExt::next(&mut s).await {
        last = Some(item);
    }
    assert!(matches!(last, Some(Err(BundleError::Integrity { .. }))));
    // Its neighbours are intact.
    assert_eq!(read_member(&store, &key, &a.entries[0]).await?, data(100, 0));
    assert_eq!(read_member(&store, &key, &a.entries[2]).await?, data(5, 2));
    Ok(())
}

#[tokio::test]
async fn a_damaged_locator_or_index_is_a_clear_error() -> TestResult {
    let store = MemoryStore::new("b");
    let built = build(&sized(&[10, 20]))?;
    let end = built.bytes.len() - 512;
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = built.bytes.clone();
        f(&mut b);
        b
    };
    // The offset points past the end.
    let key = put(
        &store,
        "range.tar",
        with(&|b| b[end + 12..end + 20].copy_from_slice(&u64::MAX.to_le_bytes())),
    )
    .await?;
    let msg = open_archive(&store, &key).await.err().ok_or("opened")?.to_string();
    assert_eq!(
        msg,
        "archive \"range.tar\": the index locator points outside the archive, or at an index larger than 256 MiB"
    );
    // An unknown version.
    let key = put(&store, "v.tar", with(&|b| b[end + 8] = 9)).await?;
    let msg = open_archive(&store, &key).await.err().ok_or("opened")?.to_string();
    assert!(msg.contains("index locator version 9 is not supported"), "{msg}");
    // The index's CRC no longer matches.
    let key = put(&store, "crc.tar", with(&|b| b[end + 28] ^= 1)).await?;
    let err = open_archive(&store, &key).await.err().ok_or("opened")?;
    assert!(
        matches!(err, BundleError::IndexCrc { .. }) && err.is_integrity(),
        "{err}"
    );
    assert!(err.to_string().contains("the index is damaged"), "{err}");
    let err = verify_archive(&store, &key).await.err().ok_or("verified")?;
    assert!(matches!(err, BundleError::IndexCrc { .. }), "{err}");
    // The magic is gone and there is no sidecar.
    let key = put(&store, "magic.tar", with(&|b| b[end] = b'X')).await?;
    let msg = open_archive(&store, &key).await.err().ok_or("opened")?.to_string();
    assert!(
        msg.contains("has no readable index") && msg.contains("no haul index locator"),
        "{msg}"
    );
    // Shorter than a block.
    let key = put(&store, "tiny.tar", vec![0; 100]).await?;
    let msg = open_archive_with(&store, &key, IndexFrom::Locator)
        .await
        .err()
        .ok_or("opened")?
        .to_string();
    assert!(msg.contains("100 bytes, not 512"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn verify_reads_the_archive_once_and_finds_what_the_index_gets_wrong() -> TestResult {
    let store = Recording::new(MemoryStore::new("b"));
    // A last component over 100 bytes: a GNU long-name header comes first.
    let long = format!("dir/{}", "l".repeat(130));
    let mut members = sized(&AROUND_BLOCKS);
    members.push(Member::new(&long, data(3000, 9)));
    let good = build(&members)?;
    let key = put(&store, "good.tar", good.bytes.clone()).await?;
    store.take();
    let r = verify_archive(&store, &key).await?;
    assert!(r.is_ok(), "{:?}", r.problems);
    assert_eq!(r.members, members.len() as u64);
    let whole_gets = store
        .take()
        .into_iter()
        .filter(|q| matches!(q, Req::Get(k, None) if k == "good.tar"))
        .count();
    assert_eq!(whole_gets, 1, "one sequential read");
    // A sidecar that says something else.
    let other = build(&members[1..])?;
    put(&store, "good.tar.index", other.index).await?;
    let r = verify_archive(&store, &key).await?;
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(
        r.problems[0].what,
        "the sidecar index differs from the index in the archive"
    );
    put(&store, "good.tar.index", good.index.clone()).await?;
    assert!(verify_archive(&store, &key).await?.is_ok());

    // An index naming one member's bytes twice (a hostile index could
    // make an unbundle write the same range without bound) is refused.
    let twice = build_with(&members, |e| {
        let mut again = e[2].clone();
        again.name = "again".into();
        e.insert(3, again);
    })?;
    let key2 = put(&store, "twice.tar", twice.bytes).await?;
    let err = open_archive(&store, &key2)
        .await
        .err()
        .ok_or("an index naming a range twice was accepted")?;
    assert!(
        err.to_string().contains("over the data of the member before it"),
        "{err}"
    );

    // A wrong data offset in the index (the locator's CRC covers it).
    let bad = build_with(&members, |e| e[3].data_offset += 512)?;
    let key = put(&store, "bad.tar", bad.bytes).await?;
    let r = verify_archive(&store, &key).await?;
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].member, "m3-512");
    assert!(r.problems[0].what.starts_with("data offset"), "{:?}", r.problems);

    // A wrong header offset for the long name (pointing past its long-name header).
    let bad = build_with(&members, |e| {
        if let Some(last) = e.last_mut() {
            last.header_offset += 512;
        }
    })?;
    let key = put(&store, "hdr.tar", bad.bytes).await?;
    let r = verify_archive(&store, &key).await?;
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].member == long && r.problems[0].what.starts_with("header offset"));

    // A damaged member byte.
    let mut bytes = good.bytes.clone();
    bytes[good.entries[5].data_offset as usize] ^= 1;
    let key = put(&store, "flip.tar", bytes).await?;
    let r = verify_archive(&store, &key).await?;
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].member == "m5-1023" && r.problems[0].what.contains("CRC64NVME"));

    // A damaged locator: reported, and the sidecar still verifies the members.
    let mut bytes = good.bytes.clone();
    let end = bytes.len() - 512;
    bytes[end + 1] = b'?';
    let key = put(&store, "loc.tar", bytes).await?;
    put(&store, "loc.tar.index", good.index.clone()).await?;
    let r = verify_archive(&store, &key).await?;
    assert_eq!(r.members, members.len() as u64);
    let what: Vec<&str> = r.problems.iter().map(|p| p.what.as_str()).collect();
    assert_eq!(what.len(), 2, "{what:?}");
    assert!(what[0].contains("no haul index locator") && what[1].contains("the last block"));
    Ok(())
}

#[tokio::test]
async fn the_index_is_checked_against_the_source_objects() -> TestResult {
    let src = MemoryStore::new("src");
    let members = sized(&[10, 20, 30]);
    let built = build(&members)?;
    for m in &members {
        put(&src, &format!("data/{}", m.name), m.data.clone()).await?;
    }
    let r = verify_against(&built.entries, &src, 4).await;
    assert!(r.is_ok() && r.members == 3, "{:?}", r.problems);
    src.delete_many(&[Key::object("data/m0-10")?]).await?;
    src.put(&Key::object("data/m2-30")?, data(30, 99).into(), &PutOptions::default())
        .await?;
    let mut r = verify_against(&built.entries, &src, 4).await;
    r.problems.sort_by(|a, b| a.member.cmp(&b.member));
    assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
    assert!(r.problems[0].member == "m0-10" && r.problems[0].what.contains("no longer exists"));
    assert!(r.problems[1].member == "m2-30" && r.problems[1].what.contains("has ETag"));
    Ok(())
}

#[test]
fn gnu_tar_lists_the_archive_and_ignores_the_locator() -> TestResult {
    let Ok(out) = std::process::Command::new("tar").arg("--version").output() else {
        eprintln!("no tar on this machine: skipped");
        return Ok(());
    };
    if !String::from_utf8_lossy(&out.stdout).contains("GNU tar") {
        eprintln!("tar is not GNU tar: skipped");
        return Ok(());
    }
    let mut members = sized(&AROUND_BLOCKS);
    members.push(Member::new(&format!("{}/x", "n".repeat(120)), data(10, 3)));
    members.push(Member::new(&format!("dir/{}", "f".repeat(130)), data(10, 4)));
    let built = build(&members)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a.tar");
    std::fs::write(&path, &built.bytes)?;
    let out = std::process::Command::new("tar").arg("-tvf").arg(&path).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tar -tvf failed: {stderr}");
    assert_eq!(stderr, "", "GNU tar warned");
    let listed: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .map(|l| l.split_whitespace().last().unwrap_or_default().to_string())
        .collect();
    let mut want: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    want.push(INDEX_MEMBER.into());
    assert_eq!(listed, want);
    // And extracts every member as it was.
    let out_dir = dir.path().join("x");
    std::fs::create_dir(&out_dir)?;
    let out = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&path)
        .arg("-C")
        .arg(&out_dir)
        .output()?;
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    for m in &members {
        assert_eq!(std::fs::read(out_dir.join(&m.name))?, m.data, "{}", m.name);
    }
    assert_eq!(std::fs::read(out_dir.join(INDEX_MEMBER))?, built.index);
    // The locator is the last block, after the end-of-archive marker.
    assert!(Locator::decode(&built.bytes[built.bytes.len() - 512..], built.bytes.len() as u64).is_ok());
    Ok(())
}

/// Builds an archive of members of `sizes`, then reads every member back
/// through the index and verifies the archive.
async fn roundtrip(sizes: &[usize]) -> TestResult {
    let store = MemoryStore::new("b");
    let members = sized(sizes);
    let built = build(&members)?;
    let key = put(&store, "p.tar", built.bytes).await?;
    let a = open_archive(&store, &key).await?;
    for (m, e) in members.iter().zip(&a.entries) {
        if read_member(&store, &key, e).await?.as_ref() != m.data.as_slice() {
            return Err(format!("member {} read back different bytes", m.name).into());
        }
    }
    let r = verify_archive(&store, &key).await?;
    if !r.is_ok() {
        return Err(format!("{:?}", r.problems).into());
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

    /// Any sizes, weighted to those around multiples of 512; now and then
    /// a member large enough that the archive outgrows the first tail read.
    #[test]
    fn members_of_any_size_read_back_through_the_index(sizes in proptest::collection::vec(
        proptest::prop_oneof![
            4 => 0usize..1100,
            4 => (1usize..8).prop_map(|k| k * 512),
            4 => (1usize..8).prop_map(|k| k * 512 + 1),
            4 => (1usize..8).prop_map(|k| k * 512 - 1),
            1 => (120usize..140).prop_map(|k| k * 512 + k % 3),
        ],
        1..16,
    )) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let r = rt.block_on(roundtrip(&sizes)).map_err(|e| e.to_string());
        proptest::prop_assert!(r.is_ok(), "{:?}", r);
    }
}

/// The index just inside, exactly at and just past the start of the first
/// tail read (`TAIL_READ` bytes before the end): found with the tail alone
/// or with one more ranged GET, and every member reads back. A filler
/// member keeps the archive larger than the tail.
#[tokio::test]
async fn an_index_at_the_edge_of_the_tail_read_is_found() -> TestResult {
    use haul_engine::bundle::read::TAIL_READ;
    let store = Recording::new(MemoryStore::new("b"));
    let members = |n: usize, pad: usize| -> Vec<Member> {
        let mut m = vec![Member::new("filler", data(70_000, 3))];
        m.extend((0..n).map(|i| Member::new(&format!("m{i:04}"), data(i % 1030, i as u8))));
        m.push(Member::new(&format!("last-{}", "p".repeat(pad)), data(513, 9)));
        m
    };
    // Enough members for an index just short of the tail's reach.
    let mut n = 100;
    while build(&members(n, 1))?.index.len() < 63_000 {
        n += 1;
    }
    let (mut in_tail, mut at_edge, mut past) = (0, 0, 0);
    for pad in (1..700).step_by(3) {
        let ms = members(n, pad);
        let built = build(&ms)?;
        let size = built.bytes.len() as u64;
        let key = put(&store, "edge.tar", built.bytes).await?;
        store.take();
        let a = open_archive(&store, &key).await?;
        assert_eq!(a.entries, built.entries, "pad {pad}");
        let tail_start = size - TAIL_READ;
        let reads = store.take().len();
        match built.locator.index_offset.cmp(&tail_start) {
            std::cmp::Ordering::Greater => in_tail += 1,
            std::cmp::Ordering::Equal => at_edge += 1,
            std::cmp::Ordering::Less => past += 1,
        }
        let want = if built.locator.index_offset >= tail_start { 2 } else { 3 };
        assert_eq!(
            reads, want,
            "pad {pad}: HEAD, the tail, and the index only when outside it"
        );
        for (m, e) in ms
            .iter()
            .zip(&a.entries)
            .filter(|(m, _)| m.name == "filler" || m.name.starts_with("last"))
        {
            assert!(
                read_member(&store, &key, e).await?.as_ref() == m.data.as_slice(),
                "{}",
                m.name
            );
        }
    }
    assert!(in_tail > 0 && at_edge > 0 && past > 0, "{in_tail} {at_edge} {past}");
    Ok(())
}
