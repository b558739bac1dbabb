//! Unbundling: to a local directory through the index and, for a tar
//! without one, sequentially — hostile members refused one by one with
//! their reason, nothing written outside the root, links never followed —
//! and to a bucket with content type, metadata, tags and storage class.

mod bundle_support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use bundle_support::*;
use haul_engine::bundle::{unbundle_to_local, unbundle_to_store, RefuseReason, UnbundleOptions, UnbundleReport};
use haul_engine::{Filter, Transfer, TransferOptions};
use haul_store::memory::MemoryStore;
use haul_store::{DynStore, Key, ObjectStore};
use tokio_util::sync::CancellationToken;

fn refused(r: &UnbundleReport) -> BTreeMap<String, RefuseReason> {
    r.refused.iter().map(|m| (m.name.clone(), m.reason)).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn a_hostile_tar_is_refused_member_by_member_and_nothing_leaves_the_root() -> TestResult {
    let base = tempfile::tempdir()?;
    let outside = base.path().join("outside");
    std::fs::create_dir(&outside)?;
    std::fs::write(outside.join("keep"), b"outside")?;
    let root = base.path().join("root");
    std::fs::create_dir(&root)?;
    // Already in the root: a link to the outside.
    std::os::unix::fs::symlink(&outside, root.join("d"))?;
    let before = tree(base.path());

    let target = outside.as_os_str().as_encoded_bytes();
    let good = data(1500, 7);
    let inner = data(512, 8);
    let tar = raw_tar(&[
        (b"good.txt", b'0', b"", &good),
        (b"../x", b'0', b"", b"up"),
        (b"/etc/haul-bundle-test-x", b'0', b"", b"abs"),
        (b"a/../../x", b'0', b"", b"up2"),
        (b"l", b'2', target, b""),
        (b"l/f", b'0', b"", b"through the link"),
        (b"h", b'1', b"good.txt", b""),
        (b"p", b'6', b"", b""),
        (b"c", b'3', b"", b""),
        (b"back\\slash", b'0', b"", b"bs"),
        (b"d/f", b'0', b"", b"into the old link"),
        (b"dir/", b'5', b"", b""),
        (b"dir/inner.bin", b'0', b"", &inner),
        (b"good.txt/sub", b'0', b"", b"under a file"),
        (b"bad\xff", b'0', b"", b"not utf-8"),
    ]);
    let store = MemoryStore::new("b");
    let key = put(&store, "hostile.tar", tar).await?;
    let r = unbundle_to_local(&store, &key, &root, &UnbundleOptions::default()).await?;
    assert!(r.sequential, "no index: read as a plain tar");
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let want: BTreeMap<String, RefuseReason> = [
        ("../x", RefuseReason::DotDot),
        ("/etc/haul-bundle-test-x", RefuseReason::Absolute),
        ("a/../../x", RefuseReason::DotDot),
        ("l", RefuseReason::MemberType),
        ("h", RefuseReason::MemberType),
        ("p", RefuseReason::MemberType),
        ("c", RefuseReason::MemberType),
        ("back\\slash", RefuseReason::Backslash),
        ("d/f", RefuseReason::ThroughSymlink),
        ("good.txt/sub", RefuseReason::Conflict),
        ("bad\u{fffd}", RefuseReason::InvalidName),
    ]
    .into_iter()
    .map(|(n, r)| (n.to_string(), r))
    .collect();
    assert_eq!(refused(&r), want, "{:#?}", r.refused);
    let link = r.refused.iter().find(|m| m.name == "l").ok_or("l")?;
    assert_eq!(link.detail, "a symbolic link is not extracted");
    let through = r.refused.iter().find(|m| m.name == "d/f").ok_or("d/f")?;
    assert!(
        through.detail.contains("\"d\" is a symbolic link"),
        "{}",
        through.detail
    );
    assert_eq!(sorted(r.restored.clone()), ["dir/", "dir/inner.bin", "good.txt", "l/f"]);
    assert_eq!(std::fs::read(root.join("good.txt"))?, good);
    assert_eq!(std::fs::read(root.join("dir/inner.bin"))?, inner);
    // `l` was never made a link, so `l/f` is a plain file in a plain folder.
    assert!(std::fs::symlink_metadata(root.join("l"))?.is_dir());
    assert_eq!(std::fs::read(root.join("l/f"))?, b"through the link");
    assert_eq!(std::fs::metadata(root.join("good.txt"))?.mtime(), 1_700_000_000);
    // A folder's mtime is set after what was written in it.
    assert_eq!(std::fs::metadata(root.join("dir"))?.mtime(), 1_700_000_000);

    // Outside the root, nothing changed.
    let after = tree(base.path());
    let outside_of_root =
        |t: &[String]| -> Vec<String> { t.iter().filter(|p| !p.starts_with("root/")).cloned().collect() };
    assert_eq!(outside_of_root(&after), outside_of_root(&before));
    assert_eq!(std::fs::read(outside.join("keep"))?, b"outside");
    assert!(!Path::new("/etc/haul-bundle-test-x").exists());
    assert!(!base.path().join("x").exists());
    Ok(())
}

#[tokio::test]
async fn members_restore_locally_through_the_index() -> TestResult {
    let base = tempfile::tempdir()?;
    let outside = base.path().join("outside");
    std::fs::create_dir(&outside)?;
    let root = base.path().join("root");
    std::fs::create_dir(&root)?;
    std::os::unix::fs::symlink(&outside, root.join("d"))?;
    let mut members = sized(&[0, 511, 512, 513, 70_000]);
    members.push(Member::new("nested/deep/file.bin", data(4097, 3)));
    members.push(Member::new("a", data(3, 4)));
    members.push(Member::new("a/b", data(3, 5)));
    members.push(Member::new("d/f", data(3, 6)));
    members.push(Member::new("escape", data(3, 7)));
    // An edited index: the tar crate's builder would not write this name.
    let built = build_with(&members, |e| {
        if let Some(last) = e.last_mut() {
            last.name = "../escape".into();
        }
    })?;
    if let Some(last) = members.last_mut() {
        last.name = "../escape".into();
    }
    let store = MemoryStore::new("b");
    let key = put(&store, "a.tar", built.bytes).await?;
    let opts = UnbundleOptions {
        concurrency: 1,
        ..Default::default()
    };
    let r = unbundle_to_local(&store, &key, &root, &opts).await?;
    assert!(!r.sequential && r.failed.is_empty(), "{:?}", r.failed);
    let want: BTreeMap<String, RefuseReason> = [
        ("a/b", RefuseReason::Conflict),
        ("d/f", RefuseReason::ThroughSymlink),
        ("../escape", RefuseReason::DotDot),
    ]
    .into_iter()
    .map(|(n, r)| (n.to_string(), r))
    .collect();
    assert_eq!(refused(&r), want);
    for m in members.iter().filter(|m| !want.contains_key(&m.name)) {
        assert_eq!(std::fs::read(root.join(&m.name))?, m.data, "{}", m.name);
        let md = std::fs::metadata(root.join(&m.name))?;
        assert_eq!(md.mtime(), 1_700_000_000, "{}", m.name);
        assert!(r.restored.contains(&m.name));
    }
    assert_eq!(tree(&outside), [""]);
    assert!(!base.path().join("escape").exists());

    // Again: every file exists, refused as such, none rewritten.
    let again = unbundle_to_local(&store, &key, &root, &opts).await?;
    assert!(again.restored.is_empty());
    assert!(again
        .refused
        .iter()
        .any(|m| m.name == "nested/deep/file.bin" && m.reason == RefuseReason::Exists));
    // With overwrite and a filter: only the selected members, replaced.
    std::fs::write(root.join("a"), b"changed")?;
    let over = UnbundleOptions {
        overwrite: true,
        include: Filter::new(&["a".into()], &[])?,
        ..Default::default()
    };
    let r = unbundle_to_local(&store, &key, &root, &over).await?;
    assert_eq!(r.restored, ["a"]);
    assert_eq!(std::fs::read(root.join("a"))?, data(3, 4));
    assert_eq!(r.filtered, members.len() as u64 - 1);

    // A link already at a member's name: refused, or with overwrite
    // replaced by the file; what it points to is never written.
    std::fs::write(outside.join("victim"), b"keep")?;
    std::fs::remove_file(root.join("a/b")).ok();
    std::fs::remove_file(root.join("a"))?;
    std::os::unix::fs::symlink(outside.join("victim"), root.join("a"))?;
    let only_a = UnbundleOptions {
        include: Filter::new(&["a".into()], &[])?,
        ..Default::default()
    };
    let r = unbundle_to_local(&store, &key, &root, &only_a).await?;
    assert_eq!(refused(&r).get("a"), Some(&RefuseReason::Exists));
    assert!(r.refused[0].detail.contains("symbolic link"), "{:?}", r.refused);
    let r = unbundle_to_local(&store, &key, &root, &over).await?;
    assert_eq!(r.restored, ["a"]);
    assert!(std::fs::symlink_metadata(root.join("a"))?.is_file());
    assert_eq!(std::fs::read(root.join("a"))?, data(3, 4));
    assert_eq!(std::fs::read(outside.join("victim"))?, b"keep");
    Ok(())
}

#[tokio::test]
async fn a_damaged_member_leaves_no_file_behind() -> TestResult {
    let root = tempfile::tempdir()?;
    let members = sized(&[100, 2000]);
    let built = build(&members)?;
    let mut bytes = built.bytes.clone();
    bytes[built.entries[1].data_offset as usize + 7] ^= 2;
    let store = MemoryStore::new("b");
    let key = put(&store, "a.tar", bytes).await?;
    let r = unbundle_to_local(&store, &key, root.path(), &UnbundleOptions::default()).await?;
    assert_eq!(r.restored, ["m0-100"]);
    assert_eq!(r.failed.len(), 1);
    let f = &r.failed[0];
    assert_eq!((f.name.as_str(), f.op.as_str()), ("m1-2000", "get"));
    assert!(f.reason.contains("CRC64NVME"), "{}", f.reason);
    assert_eq!(tree(root.path()), ["", "m0-100"]);
    Ok(())
}

#[tokio::test]
async fn members_restore_to_a_bucket_with_their_metadata_and_tags() -> TestResult {
    let mut members = sized(&[0, 513, 4096]);
    members[1].content_type = Some("text/csv".into());
    members[1].metadata = [("owner".to_string(), "ada".to_string())].into();
    members[1].tags = [
        ("team".to_string(), "x".to_string()),
        ("k".to_string(), "v w".to_string()),
    ]
    .into();
    members[1].storage_class = Some("STANDARD_IA".into());
    members[2].content_type = Some("image/png".into());
    let built = build(&members)?;
    let store: DynStore = Arc::new(MemoryStore::new("archives"));
    let key = put(store.as_ref(), "a.tar", built.bytes).await?;
    let dst = MemoryStore::new("dst");
    let dst_dyn: DynStore = Arc::new(dst.clone());
    let prefix = Key::prefix("restored/")?;
    let t = Transfer::new(TransferOptions::default(), CancellationToken::new());
    let opts = UnbundleOptions::default();
    let r = unbundle_to_store(&store, &key, &dst_dyn, &prefix, &opts, &t).await?;
    assert!(r.is_clean(), "{:?} {:?}", r.refused, r.failed);
    assert_eq!(r.restored.len(), 3);
    assert_eq!(r.bytes, 513 + 4096);
    for m in &members {
        let k = Key::object(format!("restored/{}", m.name))?;
        let got = dst.get(&k, None).await?;
        let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(got.body).await?;
        let body = chunks.concat();
        assert_eq!(body, m.data, "{}", m.name);
        let meta = dst.head(&k).await?;
        if let Some(ct) = &m.content_type {
            assert_eq!(meta.content_type.as_ref(), Some(ct));
        }
        assert_eq!(meta.metadata, m.metadata, "{}", m.name);
        let tags: BTreeMap<String, String> = dst.get_tags(&k).await?.into_iter().collect();
        assert_eq!(tags, m.tags, "{}", m.name);
        if let Some(sc) = &m.storage_class {
            assert_eq!(meta.storage_class.as_ref(), Some(sc));
        }
    }

    // A destination without tagging: restored, the dropped tags counted.
    let bare: DynStore = Arc::new(MemoryStore::new("bare").without_tagging());
    let r = unbundle_to_store(&store, &key, &bare, &Key::root(), &opts, &t).await?;
    assert_eq!((r.restored.len(), r.tags_not_kept), (3, 1));
    Ok(())
}
