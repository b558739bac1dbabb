//! Unbundling large members to a bucket: multipart uploads whose parts are
//! server-side copies of the archive's byte ranges when the archive and the
//! destination share a server (no byte of such a member read), ranged GETs
//! into parts otherwise; bytes, content type, metadata, tags and storage
//! class equal the originals; a member whose bytes do not match the index's
//! CRC64NVME is not left behind; the byte budget is given back.

mod bundle_support;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bundle_support::*;
use haul_engine::bundle::{unbundle_to_store, UnbundleOptions, UnbundleReport};
use haul_engine::{Transfer, TransferOptions};
use haul_store::checksum::{crc64, crc64_to_b64};
use haul_store::memory::{MemoryServer, MemoryStore};
use haul_store::{DynStore, ErrorKind, Key, ObjectStore};
use tokio_util::sync::CancellationToken;

const THRESHOLD: u64 = 64 * 1024;
const PART: u64 = 32 * 1024;
const BUDGET: u64 = 256 * 1024;

fn transfer() -> Transfer {
    let opts = TransferOptions {
        multipart_threshold: THRESHOLD,
        part_size: PART,
        buffer_bytes: BUDGET,
        parts_per_object: 2,
        ..Default::default()
    };
    Transfer::new(opts, CancellationToken::new())
}

/// A small member and two above the threshold (one with every kind of
/// metadata, one of an odd size).
fn members() -> Vec<Member> {
    let mut m = vec![
        Member::new("small.txt", data(1000, 1)),
        Member::new("big/one.bin", data(200_000, 2)),
        Member::new("big/two.bin", data(100_003, 3)),
    ];
    m[1].content_type = Some("application/x-big".into());
    m[1].metadata = [("owner".to_string(), "ada".to_string())].into();
    m[1].tags = [
        ("team".to_string(), "x".to_string()),
        ("k".to_string(), "v w".to_string()),
    ]
    .into();
    m[1].storage_class = Some("STANDARD_IA".into());
    m[2].content_type = Some("text/plain".into());
    m
}

/// A memory bucket that takes small parts.
fn bucket(server: &Arc<MemoryServer>, name: &str) -> Recording {
    Recording::new(server.bucket(name).with_limits(1024, 5 << 30))
}

fn parts_of(size: u64) -> usize {
    size.div_ceil(PART) as usize
}

async fn body(store: &MemoryStore, k: &Key) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let got = store.get(k, None).await?;
    let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(got.body).await?;
    Ok(chunks.concat())
}

/// Every member under `back/` with its bytes and metadata.
async fn check_restored(dst: &MemoryStore, members: &[&Member]) -> TestResult {
    for m in members {
        let k = Key::object(format!("back/{}", m.name))?;
        assert_eq!(body(dst, &k).await?, m.data, "{}", m.name);
        let meta = dst.head(&k).await?;
        if let Some(ct) = &m.content_type {
            assert_eq!(meta.content_type.as_ref(), Some(ct), "{}", m.name);
        }
        assert_eq!(meta.metadata, m.metadata, "{}", m.name);
        let tags: BTreeMap<String, String> = dst.get_tags(&k).await?.into_iter().collect();
        assert_eq!(tags, m.tags, "{}", m.name);
        let class = m.storage_class.clone().unwrap_or_else(|| "STANDARD".into());
        assert_eq!(meta.storage_class, Some(class), "{}", m.name);
    }
    Ok(())
}

/// The ranged GETs of the archive `a.tar` (of `len` bytes) in a request
/// log, but the read of its tail (the locator and the index).
fn archive_reads(log: &[Req], len: usize) -> Vec<Range<u64>> {
    log.iter()
        .filter_map(|r| match r {
            Req::Get(k, Some(range)) if k == "a.tar" && range.end != len as u64 => Some(range.clone()),
            _ => None,
        })
        .collect()
}

fn count(log: &[Req], what: &'static str) -> usize {
    log.iter().filter(|r| **r == Req::Other(what)).count()
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

async fn run(src: &Recording, dst: &Recording, t: &Transfer) -> Result<UnbundleReport, Box<dyn std::error::Error>> {
    let (s, d): (DynStore, DynStore) = (Arc::new(src.clone()), Arc::new(dst.clone()));
    let key = Key::object("a.tar")?;
    Ok(unbundle_to_store(&s, &key, &d, &Key::prefix("back/")?, &UnbundleOptions::default(), t).await?)
}

#[tokio::test]
async fn large_members_on_the_same_server_are_copied_part_by_part_never_read() -> TestResult {
    let members = members();
    let built = build(&members)?;
    let server = MemoryServer::new();
    let (arch, dst) = (bucket(&server, "archives"), bucket(&server, "dst"));
    put(&arch, "a.tar", built.bytes.clone()).await?;
    arch.take();
    let t = transfer();
    let r = run(&arch, &dst, &t).await?;
    assert!(r.is_clean(), "{:?} {:?}", r.refused, r.failed);
    assert_eq!(r.restored.len(), 3);
    assert_eq!(r.bytes, 1000 + 200_000 + 100_003);
    check_restored(&dst.inner, &members.iter().collect::<Vec<_>>()).await?;

    // Not one byte of a large member came through: the archive was read
    // for its index and the small member only.
    let reads = archive_reads(&arch.take(), built.bytes.len());
    for e in built.entries.iter().filter(|e| e.size >= THRESHOLD) {
        assert!(
            !reads.iter().any(|r| overlaps(r, &e.data_range())),
            "{} was read: {reads:?}",
            e.name
        );
    }
    assert!(reads.contains(&built.entries[0].data_range()), "{reads:?}");
    let log = dst.take();
    assert_eq!(count(&log, "upload_part_copy"), parts_of(200_000) + parts_of(100_003));
    assert_eq!(count(&log, "upload_part"), 0);
    assert_eq!(count(&log, "complete_multipart"), 2);
    assert_eq!(log.iter().filter(|r| matches!(r, Req::Put(_))).count(), 1);
    assert_eq!(server.open_uploads(), 0);
    assert_eq!(t.limits().budget.available_bytes(), BUDGET);
    Ok(())
}

#[tokio::test]
async fn large_members_from_another_server_are_read_in_ranges_into_parts() -> TestResult {
    let members = members();
    let built = build(&members)?;
    let (s1, s2) = (MemoryServer::new(), MemoryServer::new());
    let (arch, dst) = (bucket(&s1, "archives"), bucket(&s2, "dst"));
    put(&arch, "a.tar", built.bytes.clone()).await?;
    arch.take();
    let t = transfer();
    let r = run(&arch, &dst, &t).await?;
    assert!(r.is_clean(), "{:?} {:?}", r.refused, r.failed);
    assert_eq!(r.restored.len(), 3);
    check_restored(&dst.inner, &members.iter().collect::<Vec<_>>()).await?;

    // One ranged GET per part, each within its member, never a whole one.
    let reads = archive_reads(&arch.take(), built.bytes.len());
    for e in built.entries.iter().filter(|e| e.size >= THRESHOLD) {
        let parts: Vec<_> = reads.iter().filter(|r| overlaps(r, &e.data_range())).collect();
        assert_eq!(parts.len(), parts_of(e.size), "{}: {reads:?}", e.name);
        for p in parts {
            assert!(p.start >= e.data_offset && p.end <= e.data_range().end, "{p:?}");
            assert!(p.end - p.start <= PART, "{p:?}");
        }
    }
    let log = dst.take();
    assert_eq!(count(&log, "upload_part"), parts_of(200_000) + parts_of(100_003));
    assert_eq!(count(&log, "upload_part_copy"), 0);
    assert_eq!(s2.open_uploads(), 0);
    assert_eq!(t.limits().budget.available_bytes(), BUDGET);
    Ok(())
}

/// The index says other bytes than the archive holds for a large member:
/// read into parts, the upload is aborted before completion; copied, the
/// object is deleted after the check. Either way it is reported with why,
/// and the other members are restored.
#[tokio::test]
async fn a_large_member_that_does_not_match_its_crc_is_not_left_behind() -> TestResult {
    let members = members();
    let built = build_with(&members, |es| es[1].crc64nvme = crc64_to_b64(crc64(b"other bytes")))?;
    for same in [false, true] {
        let (s1, s2) = (MemoryServer::new(), MemoryServer::new());
        let arch = bucket(&s1, "archives");
        let dst = if same { bucket(&s1, "dst") } else { bucket(&s2, "dst") };
        put(&arch, "a.tar", built.bytes.clone()).await?;
        let r = run(&arch, &dst, &transfer()).await?;
        assert_eq!(r.failed.len(), 1, "same server {same}: {:?}", r.failed);
        let f = &r.failed[0];
        assert_eq!((f.name.as_str(), f.op.as_str()), ("big/one.bin", "verify"), "{f:?}");
        assert!(f.reason.contains("the index says"), "{f:?}");
        let why = if same { "deleted" } else { "not written" };
        assert!(f.reason.contains(why), "{f:?}");
        let k = Key::object("back/big/one.bin")?;
        let gone = dst.inner.head(&k).await.err().ok_or("the damaged member was left")?;
        assert_eq!(gone.kind, ErrorKind::NotFound);
        assert_eq!((s1.open_uploads(), s2.open_uploads()), (0, 0));
        check_restored(&dst.inner, &[&members[0], &members[2]]).await?;
    }
    Ok(())
}

/// A destination that states every object's CRC64NVME (as AWS S3 does):
/// copied parts are checked by it, with no read of the restored object.
#[tokio::test]
async fn a_copy_is_checked_by_the_crc_the_destination_states() -> TestResult {
    let members = members();
    let built = build(&members)?;
    let server = MemoryServer::new();
    let arch = bucket(&server, "archives");
    let dst = Recording::new(server.bucket("dst").with_limits(1024, 5 << 30).with_default_crc64());
    put(&arch, "a.tar", built.bytes.clone()).await?;
    let r = run(&arch, &dst, &transfer()).await?;
    assert!(r.is_clean(), "{:?}", r.failed);
    let log = dst.take();
    assert!(
        !log.iter()
            .any(|r| matches!(r, Req::Get(k, _) if k.starts_with("back/"))),
        "{log:?}"
    );
    check_restored(&dst.inner, &members.iter().collect::<Vec<_>>()).await
}

/// Two members of one name (two versions of a key, as `bundle --versions`
/// packs them), the newer first in the archive: restored one after the
/// other, oldest first, so the newer is the object left.
#[tokio::test]
async fn versions_of_one_key_restore_oldest_first() -> TestResult {
    let mut newer = Member::new("v.txt", data(70_000, 8));
    newer.mtime_ns = Some(1_800_000_000_000_000_000);
    let mut older = Member::new("v.txt", data(90_000, 9));
    older.mtime_ns = Some(1_700_000_000_000_000_000);
    let built = build(&[newer.clone(), older])?;
    for _ in 0..5 {
        let server = MemoryServer::new();
        let (arch, dst) = (bucket(&server, "archives"), bucket(&server, "dst"));
        put(&arch, "a.tar", built.bytes.clone()).await?;
        let r = run(&arch, &dst, &transfer()).await?;
        assert!(r.is_clean(), "{:?}", r.failed);
        assert_eq!(r.restored, ["v.txt", "v.txt"]);
        check_restored(&dst.inner, &[&newer]).await?;
    }
    Ok(())
}
