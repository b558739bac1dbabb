//! Re-running a bundle run: the multipart upload an interrupted run left
//! at an archive's key is aborted before the archive is written again; an
//! archive complete but for members that were dead letters when it was
//! written is not written again, and those dead letters are reported again;
//! every dead letter reaches the run's sink however many there are.

mod bundle_common;
mod bundle_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use bundle_common::*;
use bundle_support::{Recording, Req};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use futures::TryStreamExt;
use haul_engine::bundle::*;
use haul_store::checksum::md5_hex;
use haul_store::memory::MemoryServer;
use haul_store::*;

/// `n` objects `src/k00`… of a few KiB in `src`, and their bodies by name.
async fn sources(src: &DynStore, n: u64) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    let mut all = BTreeMap::new();
    for i in 0..n {
        let body = haul_testkit::data(1500 + 211 * i as usize, i);
        put(src, &format!("src/k{i:02}"), &body, PutOptions::default()).await?;
        all.insert(format!("k{i:02}"), body);
    }
    Ok(all)
}

/// The listing of `src/`, collected now: an input that stays as it was
/// listed (as an inventory's rows do) while the objects change.
async fn listed(src: &DynStore) -> Result<Vec<ListEntry>, StoreError> {
    src.list(ListRequest::prefix(key("src/"))).try_collect().await
}

fn replay(entries: &[ListEntry]) -> BoxStream<'static, Result<ListEntry, StoreError>> {
    stream::iter(entries.iter().cloned().map(Ok).collect::<Vec<_>>()).boxed()
}

/// An upload a killed run left at `dst/k`, with one part sent.
async fn stale_upload(dst: &DynStore, k: &str) -> Result<MultipartId, StoreError> {
    let id = dst.create_multipart(&key(k), &PutOptions::default()).await?;
    let part = Bytes::from_static(b"half an archive");
    dst.upload_part(&key(k), &id, 1, part.clone(), &Checksums::md5(&md5_hex(&part)))
        .await?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_upload_at_the_archive_key_is_aborted_and_the_archive_written_whole() -> TestResult {
    let server = MemoryServer::new();
    let src: DynStore = Arc::new(server.bucket("src"));
    let dst: DynStore = Arc::new(server.bucket("dst").with_limits(1, 5 << 30));
    let all = sources(&src, 6).await?;
    stale_upload(&dst, "out/r-000001.tar").await?;
    // Not this archive's: another key under the prefix, and a key that
    // only starts like the archive's.
    let other = stale_upload(&dst, "out/other.bin").await?;
    let longer = stale_upload(&dst, "out/r-000001.tar.x").await?;
    assert_eq!(dst.list_multipart_uploads(&key("out/")).await?.len(), 3);
    let opts = BundleOptions {
        part_size: 4096,
        ..Default::default()
    };
    let s = bundle_prefix(&src, &key("src/"), &dest(&dst, "out/"), "r", &opts, &transfer()).await?;
    assert_eq!((s.archives_written, s.members, s.dead_letters), (1, 6, 0), "{s:?}");
    assert_eq!(check_archive(&dst, "out/r-000001.tar", &all).await?.len(), 6);
    let left = dst.list_multipart_uploads(&key("out/")).await?;
    assert_eq!(
        left,
        vec![(key("out/other.bin"), other), (key("out/r-000001.tar.x"), longer)],
        "only the archive's own stale upload is aborted"
    );
    assert_eq!(server.open_uploads(), 2);
    Ok(())
}

/// Run 1 loses a member (deleted after it was listed); run 2 over the same
/// input finds the archive complete without it: no write of the archive,
/// and the same dead letter. Without the record, the archive is written
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_with_a_dead_letter_is_not_written_again_and_the_letter_is_reported_again() -> TestResult {
    let server = MemoryServer::new();
    let src: DynStore = Arc::new(server.bucket("src"));
    let rec = Recording::new(server.bucket("dst").with_limits(1, 5 << 30));
    let dst: DynStore = Arc::new(rec.clone());
    let mut all = sources(&src, 8).await?;
    let entries = listed(&src).await?;
    src.delete_many(&[key("src/k03")]).await?;
    all.remove("k03");
    let opts = BundleOptions {
        part_size: 4096,
        ..Default::default()
    };
    let d = dest(&dst, "out/");
    let run = BundleRun {
        src: &src,
        src_prefix: &key("src/"),
        dst: &d,
        run: "d",
        opts: &opts,
        transfer: &transfer(),
    };
    let mut first: Vec<DeadLetter> = Vec::new();
    let s1 = run.entries(replay(&entries), &mut first).await?;
    assert_eq!((s1.archives_written, s1.members, s1.dead_letters), (1, 7, 1), "{s1:?}");
    assert_eq!(
        (first[0].key.as_str(), first[0].reason),
        ("src/k03", DeadReason::NotFound)
    );
    assert_eq!(check_archive(&dst, "out/d-000001.tar", &all).await?.len(), 7);
    let record = read(&dst, "out/d-000001.tar.dead").await?;
    assert_eq!(record, dlq_lines(&first)?);

    rec.take();
    let mut second: Vec<DeadLetter> = Vec::new();
    let s2 = run.entries(replay(&entries), &mut second).await?;
    assert_eq!(
        (s2.archives_written, s2.archives_skipped, s2.members),
        (0, 1, 7),
        "{s2:?}"
    );
    assert_eq!(second, first, "the same dead letter, reported again");
    assert_eq!(s2.dead_by_reason, BTreeMap::from([(DeadReason::NotFound, 1)]));
    let writes: Vec<Req> = rec
        .take()
        .into_iter()
        .filter(|r| match r {
            Req::Put(k) => k != "out/d.bundles.jsonl",
            Req::Other(op) => op.starts_with("create") || op.starts_with("upload") || op.starts_with("complete"),
            _ => false,
        })
        .collect();
    assert!(writes.is_empty(), "the complete archive was written again: {writes:?}");
    assert_eq!(check_archive(&dst, "out/d-000001.tar", &all).await?.len(), 7);

    // The record gone, a missing member is unexplained: written again.
    dst.delete_many(&[key("out/d-000001.tar.dead")]).await?;
    rec.take();
    let s3 = run.entries(replay(&entries), &mut Vec::new()).await?;
    assert_eq!(
        (s3.archives_written, s3.archives_skipped, s3.dead_letters),
        (1, 0, 1),
        "{s3:?}"
    );
    assert!(rec.take().contains(&Req::Put("out/d-000001.tar.dead".into())));
    assert_eq!(check_archive(&dst, "out/d-000001.tar", &all).await?.len(), 7);
    Ok(())
}

/// More dead letters than the summary keeps: the sink has every one, the
/// summary the first [`SAMPLE`] and the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dead_letter_reaches_the_sink_beyond_the_sample() -> TestResult {
    let (src, dst) = memory_pair();
    let n = SAMPLE as u64 + 37;
    for i in 0..n {
        let opts = PutOptions {
            storage_class: Some("GLACIER".into()),
            ..Default::default()
        };
        put(&src, &format!("src/cold{i:04}"), b"frozen", opts).await?;
    }
    put(&src, "src/warm", b"warm", PutOptions::default()).await?;
    let d = dest(&dst, "out/");
    let run = BundleRun {
        src: &src,
        src_prefix: &key("src/"),
        dst: &d,
        run: "s",
        opts: &BundleOptions::default(),
        transfer: &transfer(),
    };
    let mut all: Vec<DeadLetter> = Vec::new();
    let s = run
        .entries(src.list(ListRequest::prefix(key("src/"))), &mut all)
        .await?;
    assert_eq!(all.len() as u64, n);
    let keys: Vec<String> = (0..n).map(|i| format!("src/cold{i:04}")).collect();
    assert_eq!(all.iter().map(|d| d.key.clone()).collect::<Vec<_>>(), keys);
    assert!(all.iter().all(|d| d.reason == DeadReason::Archived));
    assert_eq!(s.dead_letters, n);
    assert_eq!(s.dead_sample, all[..SAMPLE]);
    assert_eq!(s.dead_by_reason, BTreeMap::from([(DeadReason::Archived, n)]));
    assert_eq!((s.members, s.archives_written), (1, 1));
    Ok(())
}

/// The manifest lists archives by sequence then large objects by key,
/// whatever order they finished in, and is written in parts when it is
/// larger than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_is_in_plan_order_and_written_in_parts_when_large() -> TestResult {
    let (src, dst) = memory_pair();
    let mut all = BTreeMap::new();
    for i in 0..60u64 {
        // Every fifth object is large: copied as it is.
        let size = if i % 5 == 0 { 3000 } else { 100 + i as usize };
        let body = haul_testkit::data(size, i);
        put(&src, &format!("src/k{i:02}"), &body, PutOptions::default()).await?;
        all.insert(format!("k{i:02}"), body);
    }
    let opts = BundleOptions {
        max_members: 3,
        max_member_size: 2000,
        part_size: 1024,
        archives_in_flight: 8,
        large_in_flight: 8,
        ..Default::default()
    };
    let s = bundle_prefix(&src, &key("src/"), &dest(&dst, "out/"), "m", &opts, &transfer()).await?;
    assert_eq!((s.members, s.large_objects, s.dead_letters), (48, 12, 0), "{s:?}");
    let body = read(&dst, "out/m.bundles.jsonl").await?;
    assert!(body.len() > 1024);
    let meta = dst.head(&key("out/m.bundles.jsonl")).await?;
    assert!(meta.parts_count.unwrap_or(1) > 1, "{meta:?}");
    let lines = manifest(&body);
    let names: Vec<String> = archives(&lines).into_iter().map(|(n, _, _)| n).collect();
    let want: Vec<String> = (1..=16).map(|i| archive_name("m", i)).collect();
    assert_eq!(names, want);
    let large: Vec<String> = lines
        .iter()
        .filter_map(|l| match l {
            ManifestLine::External { source, .. } => Some(source.clone()),
            _ => None,
        })
        .collect();
    let want: Vec<String> = (0..60).step_by(5).map(|i| format!("src/k{i:02}")).collect();
    assert_eq!(large, want);
    assert!(matches!(lines[16], ManifestLine::External { .. }), "archives first");
    for (_, akey, _) in archives(&lines) {
        check_archive(&dst, &akey, &all).await?;
    }
    Ok(())
}

/// S3 (moto): ListMultipartUploads finds the upload a killed run left at
/// an archive's key; the re-run aborts it and writes the archive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_a_stale_upload_is_listed_and_aborted() -> TestResult {
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
    let (bs, bd) = (haul_testkit::unique_bucket("rs"), haul_testkit::unique_bucket("rd"));
    haul_testkit::create_bucket(server, &bs)?;
    haul_testkit::create_bucket(server, &bd)?;
    let (src, dst): (DynStore, DynStore) = (Arc::new(conn.bucket(&bs)), Arc::new(conn.bucket(&bd)));
    let all = sources(&src, 5).await?;
    let id = dst
        .create_multipart(&key("out/r-000001.tar"), &PutOptions::default())
        .await?;
    let other = dst
        .create_multipart(&key("elsewhere/x"), &PutOptions::default())
        .await?;
    assert_eq!(
        dst.list_multipart_uploads(&key("out/")).await?,
        vec![(key("out/r-000001.tar"), id)]
    );
    let s = bundle_prefix(
        &src,
        &key("src/"),
        &dest(&dst, "out/"),
        "r",
        &BundleOptions::default(),
        &transfer(),
    )
    .await?;
    assert_eq!((s.archives_written, s.members), (1, 5), "{s:?}");
    assert!(dst.list_multipart_uploads(&key("out/")).await?.is_empty());
    assert_eq!(
        dst.list_multipart_uploads(&key("")).await?,
        vec![(key("elsewhere/x"), other)]
    );
    assert_eq!(check_archive(&dst, "out/r-000001.tar", &all).await?.len(), 5);
    Ok(())
}
