//! Engine behaviour over real stores (memory and local) with injected faults:
//! runs complete and verified under errors, corruption is caught, part copy
//! keeps layout and metadata, cancellation leaves no upload behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use haul_engine::job::JobOptions;
use haul_engine::plan::Planner;
use haul_engine::report::NoObserver;
use haul_engine::transfer::{Outcome, Strategy, Verified};
use haul_engine::{Executor, Filter, Transfer, TransferOptions};
use haul_store::checksum::md5_hex;
use haul_store::local::LocalStore;
use haul_store::memory::{MemoryServer, MemoryStore};
use haul_store::wrap::{FaultConfig, FaultStore, RetryPolicy, RetryStore};
use haul_store::*;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;
const MIB: usize = 1024 * 1024;

fn data(n: usize, seed: u64) -> Bytes {
    Bytes::from(haul_testkit::data(n, seed))
}

fn key(s: &str) -> Key {
    Key::object(s).unwrap_or_else(|e| panic!("{e}"))
}

fn fast_retries(inner: DynStore) -> DynStore {
    Arc::new(RetryStore::new(
        inner,
        RetryPolicy {
            max_attempts: 12,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
        },
    ))
}

async fn read_all(s: &DynStore, k: &Key) -> Result<Bytes, StoreError> {
    let g = s.get(k, None).await?;
    let chunks: Vec<Bytes> = g.body.try_collect().await?;
    Ok(chunks.concat().into())
}

fn small_parts() -> TransferOptions {
    TransferOptions {
        multipart_threshold: MIB as u64,
        part_size: MIB as u64,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_objects_copy_complete_and_verified_under_faults() -> TestResult {
    let src_mem = MemoryStore::new("src").with_limits(MIB as u64, 5 << 30);
    let dst_mem = MemoryStore::new("dst").with_limits(MIB as u64, 5 << 30);
    let mut expected = BTreeMap::new();
    for i in 0..1000u64 {
        // Mostly small objects, every 50th a 3 MiB multipart one.
        let size = if i % 50 == 0 {
            3 * MIB + 17
        } else {
            100 + (i as usize * 37) % 20_000
        };
        let body = data(size, i);
        let k = key(&format!("in/2026/11/{:02}/obj-{i:04}.bin", i % 30));
        src_mem.put(&k, body.clone(), &PutOptions::default()).await?;
        expected.insert(format!("out/2026/11/{:02}/obj-{i:04}.bin", i % 30), md5_hex(&body));
    }
    let src_faults = Arc::new(FaultStore::new(
        Arc::new(src_mem.clone()),
        FaultConfig::uniform(1, 0.05),
    ));
    let dst_faults = Arc::new(FaultStore::new(Arc::new(dst_mem.clone()), FaultConfig::uniform(2, 0.1)));
    let src = fast_retries(src_faults.clone());
    let dst = fast_retries(dst_faults.clone());
    let planner = Planner {
        src: src.clone(),
        src_prefix: Key::prefix("in/")?,
        dst_prefix: Key::prefix("out/")?,
        filter: Filter::default(),
        dst_is_local: false,
    };
    let exec = Executor::new(
        Transfer::new(small_parts(), CancellationToken::new()),
        JobOptions {
            concurrency: 32,
            ..Default::default()
        },
        Arc::new(NoObserver),
    );
    let summary = exec.copy(&src, &dst, planner.tasks()).await;
    assert_eq!(summary.failed, 0, "{:?}", summary.first_failures);
    assert_eq!(summary.objects, 1000);
    let injected = src_faults.injected() + dst_faults.injected();
    assert!(injected > 100, "only {injected} faults were injected");
    // Every object arrived, byte for byte (checked without the fault layer).
    let dst_plain: DynStore = Arc::new(dst_mem);
    let mut n = 0;
    let mut listing = dst_plain.list(ListRequest::prefix(Key::prefix("out/")?));
    while let Some(e) = listing.try_next().await? {
        if let ListEntry::Object(o) = e {
            let body = read_all(&dst_plain, &o.key).await?;
            assert_eq!(Some(&md5_hex(&body)), expected.get(o.key.as_str()), "{}", o.key);
            n += 1;
        }
    }
    assert_eq!(n, 1000);
    Ok(())
}

#[tokio::test]
async fn corruption_in_transit_is_an_error_and_nothing_lands() -> TestResult {
    let src_mem = MemoryStore::new("src");
    let dst_mem = MemoryStore::new("dst");
    let body = data(10_000, 3);
    src_mem.put(&key("x.bin"), body, &PutOptions::default()).await?;
    let cfg = FaultConfig {
        corrupt_rate: 1.0,
        ..FaultConfig::none(3)
    };
    let src: DynStore = Arc::new(FaultStore::new(Arc::new(src_mem), cfg));
    let dst: DynStore = Arc::new(dst_mem.clone());
    let planner = Planner {
        src: src.clone(),
        src_prefix: Key::root(),
        dst_prefix: Key::prefix("copy/")?,
        filter: Filter::default(),
        dst_is_local: false,
    };
    let exec = Executor::new(
        Transfer::new(TransferOptions::default(), CancellationToken::new()),
        JobOptions::default(),
        Arc::new(NoObserver),
    );
    let summary = exec.copy(&src, &dst, planner.tasks()).await;
    assert_eq!(summary.failed, 1);
    let f = &summary.first_failures[0];
    assert_eq!(
        (f.key.as_str(), f.code.as_str()),
        ("x.bin", "ChecksumMismatch"),
        "{f:?}"
    );
    assert!(f.message.contains("does not match the source ETag"), "{}", f.message);
    assert!(
        dst_mem
            .head(&key("copy/x.bin"))
            .await
            .err()
            .is_some_and(|e| e.is_not_found()),
        "a corrupt copy must not land"
    );
    Ok(())
}

#[tokio::test]
async fn multipart_copy_reuses_the_source_layout_and_keeps_the_etag() -> TestResult {
    let server = MemoryServer::new();
    let src = server.bucket("a").with_limits(MIB as u64, 5 << 30);
    let dst_other = MemoryStore::new("b").with_limits(MIB as u64, 5 << 30);
    // A source uploaded with 2 MiB parts (not the engine's 1 MiB default).
    let body = data(9 * MIB + 5, 4);
    let k = key("big.bin");
    let id = src
        .create_multipart(
            &k,
            &PutOptions {
                content_type: Some("application/x-test".into()),
                ..Default::default()
            },
        )
        .await?;
    let mut parts = Vec::new();
    for (i, c) in body.chunks(2 * MIB).enumerate() {
        parts.push(
            src.upload_part(&k, &id, i as u32 + 1, body.slice_ref(c), &Checksums::md5(&md5_hex(c)))
                .await?,
        );
    }
    src.complete_multipart(&k, &id, &parts).await?;
    let meta = src.head(&k).await?;
    assert!(meta.etag.as_deref().is_some_and(|e| e.ends_with("-5")));
    let (s, d): (DynStore, DynStore) = (Arc::new(src), Arc::new(dst_other.clone()));
    let t = Transfer::new(
        TransferOptions {
            server_side: false,
            ..small_parts()
        },
        CancellationToken::new(),
    );
    let out = t.copy(&s, &meta, &d, &k, &NoObserver).await?;
    assert_eq!(out.strategy, Strategy::Multipart { parts: 5 });
    assert_eq!(out.verified, Verified::SourceEtag);
    assert_eq!(out.etag, meta.etag, "the destination ETag equals the source's");
    assert!(read_all(&d, &k).await? == body);
    assert_eq!(d.head(&k).await?.content_type.as_deref(), Some("application/x-test"));
    Ok(())
}

#[tokio::test]
async fn objects_beyond_the_copy_limit_use_part_copy_with_metadata_and_tags() -> TestResult {
    let server = MemoryServer::new();
    // Scaled down: a 4 MiB copy limit stands for S3's 5 GiB.
    let a = server.bucket("a").with_limits(MIB as u64, 4 * MIB as u64);
    let b = server.bucket("b").with_limits(MIB as u64, 4 * MIB as u64);
    let body = data(10 * MIB, 5);
    let opts = PutOptions {
        content_type: Some("application/json".into()),
        metadata: BTreeMap::from([("owner".into(), "ops".into())]),
        tags: vec![("team".into(), "data".into())],
        ..Default::default()
    };
    a.put(&key("huge.json"), body.clone(), &opts).await?;
    let meta = a.head(&key("huge.json")).await?;
    let (s, d): (DynStore, DynStore) = (Arc::new(a), Arc::new(b));
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let out = t.copy(&s, &meta, &d, &key("copy.json"), &NoObserver).await?;
    assert_eq!(out.strategy, Strategy::ServerPartCopy { parts: 10 });
    assert!(read_all(&d, &key("copy.json")).await? == body);
    let h = d.head(&key("copy.json")).await?;
    assert_eq!(h.content_type.as_deref(), Some("application/json"));
    assert_eq!(h.metadata.get("owner").map(String::as_str), Some("ops"));
    assert_eq!(
        d.get_tags(&key("copy.json")).await?,
        vec![("team".to_string(), "data".to_string())]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_aborts_the_multipart_upload() -> TestResult {
    let server = MemoryServer::new();
    let src = MemoryStore::new("src").with_limits(MIB as u64, 5 << 30);
    let dst = server.bucket("dst").with_limits(MIB as u64, 5 << 30);
    src.put(&key("big"), data(40 * MIB, 6), &PutOptions::default()).await?;
    let meta = src.head(&key("big")).await?;
    let slow = FaultConfig {
        latency: Duration::from_millis(30),
        ..FaultConfig::none(6)
    };
    let s: DynStore = Arc::new(src);
    let d: DynStore = Arc::new(FaultStore::new(Arc::new(dst.clone()), slow));
    let cancel = CancellationToken::new();
    let t = Transfer::new(
        TransferOptions {
            parts_per_object: 2,
            ..small_parts()
        },
        cancel.clone(),
    );
    let job = tokio::spawn(async move { t.copy(&s, &meta, &d, &key("big"), &NoObserver).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(server.open_uploads(), 1, "the upload is under way");
    cancel.cancel();
    let res = job.await?;
    let e = res.err().ok_or("a cancelled copy succeeded")?;
    assert_eq!(e.report_code(), "Cancelled");
    assert_eq!(server.open_uploads(), 0, "the multipart upload was aborted");
    assert!(dst.head(&key("big")).await.err().is_some_and(|e| e.is_not_found()));
    Ok(())
}

#[tokio::test]
async fn stdin_like_streams_upload_single_or_multipart() -> TestResult {
    let dst = MemoryStore::new("d").with_limits(MIB as u64, 5 << 30);
    let d: DynStore = Arc::new(dst);
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let big = data(3 * MIB + 3, 7);
    let out = t
        .upload_stream(std::io::Cursor::new(big.to_vec()), &d, &key("dump.sql"), &NoObserver)
        .await?;
    assert_eq!(out.strategy, Strategy::Multipart { parts: 4 });
    assert_eq!(out.verified, Verified::Etag);
    assert!(read_all(&d, &key("dump.sql")).await? == big);
    let small = data(1000, 8);
    let out = t
        .upload_stream(std::io::Cursor::new(small.to_vec()), &d, &key("small"), &NoObserver)
        .await?;
    assert_eq!(out.strategy, Strategy::Single);
    assert!(read_all(&d, &key("small")).await? == small);
    // Exactly one threshold's worth: still one object, two reads.
    let edge = data(MIB, 9);
    t.upload_stream(std::io::Cursor::new(edge.to_vec()), &d, &key("edge"), &NoObserver)
        .await?;
    assert!(read_all(&d, &key("edge")).await? == edge);
    Ok(())
}

#[tokio::test]
async fn local_roundtrip_in_parts_keeps_bytes_and_mtime() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (src_dir, dst_dir) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(src_dir.join("2026/11/21"))?;
    let body = data(5 * MIB + 11, 10);
    std::fs::write(src_dir.join("2026/11/21/x.bin"), &body)?;
    let mtime = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let f = std::fs::File::options()
        .write(true)
        .open(src_dir.join("2026/11/21/x.bin"))?;
    f.set_modified(mtime)?;
    drop(f);
    let local: DynStore = Arc::new(LocalStore::new(&src_dir)?);
    let mem = MemoryStore::new("m").with_limits(MIB as u64, 5 << 30);
    let m: DynStore = Arc::new(mem);
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let meta = local.head(&key("2026/11/21/x.bin")).await?;
    let up = t.copy(&local, &meta, &m, &key("2026/11/21/x.bin"), &NoObserver).await?;
    assert_eq!(up.strategy, Strategy::Multipart { parts: 6 });
    let remote = m.head(&key("2026/11/21/x.bin")).await?;
    assert!(remote.metadata.contains_key("mtime"), "mtime is kept as metadata");
    // And back down, in parts written in place.
    let back: DynStore = Arc::new(LocalStore::create(&dst_dir)?);
    let down = t
        .copy(&m, &remote, &back, &key("2026/11/21/x.bin"), &NoObserver)
        .await?;
    assert_eq!(down.verified, Verified::SourceEtag);
    assert_eq!(std::fs::read(dst_dir.join("2026/11/21/x.bin"))?, body.to_vec());
    assert_eq!(std::fs::metadata(dst_dir.join("2026/11/21/x.bin"))?.modified()?, mtime);
    assert!(!dst_dir.join(".haul-tmp").exists(), "no temp files left");
    Ok(())
}

#[tokio::test]
async fn a_local_source_that_changes_during_the_copy_fails() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("f"), b"first version")?;
    let local: DynStore = Arc::new(LocalStore::new(dir.path())?);
    let meta = local.head(&key("f")).await?;
    // Rewritten between planning and copying (same size, new mtime).
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("f"), b"other version")?;
    let m: DynStore = Arc::new(MemoryStore::new("m"));
    let t = Transfer::new(TransferOptions::default(), CancellationToken::new());
    let e = t
        .copy(&local, &meta, &m, &key("f"), &NoObserver)
        .await
        .err()
        .ok_or("copy of a changed file succeeded")?;
    assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
    assert!(e.to_string().contains("changed"), "{e}");
    Ok(())
}

#[tokio::test]
async fn sse_kms_objects_and_buckets_verify_without_false_mismatches() -> TestResult {
    let server = MemoryServer::new();
    let plain = server.bucket("plain").with_limits(MIB as u64, 5 << 30);
    let kms = server.bucket("kms").with_limits(MIB as u64, 5 << 30).with_default_kms();
    let other_kms = MemoryStore::new("o")
        .with_limits(MIB as u64, 5 << 30)
        .with_default_kms();
    let small = data(10_000, 20);
    let big = data(3 * MIB + 1, 21);
    plain.put(&key("small"), small.clone(), &PutOptions::default()).await?;
    plain.put(&key("big"), big.clone(), &PutOptions::default()).await?;
    let (p, k, o): (DynStore, DynStore, DynStore) = (Arc::new(plain), Arc::new(kms), Arc::new(other_kms));
    let streamed = Transfer::new(
        TransferOptions {
            server_side: false,
            ..small_parts()
        },
        CancellationToken::new(),
    );
    let server_side = Transfer::new(small_parts(), CancellationToken::new());
    // Into a bucket that encrypts with SSE-KMS by default (ETags not MD5s).
    for name in ["small", "big"] {
        let meta = p.head(&key(name)).await?;
        let out = streamed.copy(&p, &meta, &k, &key(name), &NoObserver).await?;
        assert_eq!(out.verified, Verified::ServerChecked, "{name}");
        assert_ne!(
            out.etag.as_deref(),
            Some(md5_hex(if name == "small" { &small } else { &big }).as_str())
        );
    }
    assert!(read_all(&k, &key("big")).await? == big);
    // Out of it: server-side to a plain bucket, streamed to another KMS bucket.
    for name in ["small", "big"] {
        let listed = match k.list(ListRequest::prefix(key(name))).try_next().await? {
            Some(ListEntry::Object(o)) => o,
            other => return Err(format!("unexpected {other:?}").into()),
        };
        let out = server_side
            .copy(&k, &listed, &p, &key(&format!("back-{name}")), &NoObserver)
            .await?;
        assert_eq!(out.verified, Verified::ServerChecked, "{name}");
        let out = streamed.copy(&k, &listed, &o, &key(name), &NoObserver).await?;
        assert_eq!(out.verified, Verified::ServerChecked, "{name}");
    }
    assert!(read_all(&p, &key("back-big")).await? == big);
    assert!(read_all(&o, &key("big")).await? == big);
    Ok(())
}

#[tokio::test]
async fn a_source_with_uneven_parts_is_copied_not_failed() -> TestResult {
    let src = MemoryStore::new("s").with_limits(MIB as u64, 5 << 30);
    let dst = MemoryStore::new("d").with_limits(MIB as u64, 5 << 30);
    // Parts of 2 MiB, 1 MiB and 1.5 MiB: the first part's size does not
    // describe the layout.
    let sizes = [2 * MIB, MIB, 3 * MIB / 2];
    let body = data(sizes.iter().sum(), 22);
    let k = key("uneven");
    let id = src.create_multipart(&k, &PutOptions::default()).await?;
    let (mut parts, mut at) = (Vec::new(), 0);
    for (i, n) in sizes.iter().enumerate() {
        let c = body.slice(at..at + n);
        at += n;
        parts.push(
            src.upload_part(&k, &id, i as u32 + 1, c.clone(), &Checksums::md5(&md5_hex(&c)))
                .await?,
        );
    }
    src.complete_multipart(&k, &id, &parts).await?;
    let meta = src.head(&k).await?;
    let (s, d): (DynStore, DynStore) = (Arc::new(src), Arc::new(dst));
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let out = t.copy(&s, &meta, &d, &k, &NoObserver).await?;
    assert_eq!(
        out.verified,
        Verified::Etag,
        "own upload verified; the source layout was not reproducible"
    );
    assert!(read_all(&d, &k).await? == body);
    Ok(())
}

#[tokio::test]
async fn an_object_beyond_5_gib_is_copied_with_upload_part_copy() -> TestResult {
    // S3's real limits (5 GiB CopyObject); the object is virtual: a size and
    // no bytes, so the test does not need 5 GiB of memory.
    let server = MemoryServer::new();
    let (a, b) = (server.bucket("a"), server.bucket("b"));
    let size = 5 * 1024 * 1024 * 1024 + 1;
    let opts = PutOptions {
        content_type: Some("application/x-tar".into()),
        metadata: BTreeMap::from([("origin".into(), "archive".into())]),
        tags: vec![("class".into(), "cold".into())],
        ..Default::default()
    };
    a.put_virtual(&key("huge.tar"), size, &opts);
    let meta = a.head(&key("huge.tar")).await?;
    let (s, d): (DynStore, DynStore) = (Arc::new(a), Arc::new(b));
    let t = Transfer::new(TransferOptions::default(), CancellationToken::new());
    assert_eq!(t.strategy(&s, &d, &meta), Strategy::ServerPartCopy { parts: 0 });
    let out = t.copy(&s, &meta, &d, &key("copy.tar"), &NoObserver).await?;
    // 16 MiB parts: 321 of them (the last holds one byte).
    assert_eq!(out.strategy, Strategy::ServerPartCopy { parts: 321 });
    let h = d.head(&key("copy.tar")).await?;
    assert_eq!(h.size, size);
    assert_eq!(h.etag.as_deref().and_then(haul_store::checksum::etag_parts), Some(321));
    assert_eq!(h.content_type.as_deref(), Some("application/x-tar"));
    assert_eq!(h.metadata.get("origin").map(String::as_str), Some("archive"));
    assert_eq!(
        d.get_tags(&key("copy.tar")).await?,
        vec![("class".to_string(), "cold".to_string())]
    );
    Ok(())
}

/// A bucket with 1 MiB parts that keeps full-object CRC64NVMEs, as AWS S3 does.
fn crc_bucket(name: &str) -> MemoryStore {
    MemoryStore::new(name)
        .with_limits(MIB as u64, 5 << 30)
        .with_default_crc64()
}

/// A source keeping full-object CRC64NVMEs (as AWS S3 does for every new
/// object) is downloaded without any MD5: the parts' CRCs, combined, must
/// equal the source's, and the local file takes the source's ETag and CRC.
#[tokio::test]
async fn a_download_is_checked_by_the_source_crc64_without_md5() -> TestResult {
    let dir = tempfile::tempdir()?;
    let src_mem = crc_bucket("src");
    let body = data(5 * MIB + 123, 21);
    let k = key("2026/11/21/big.bin");
    let parts = body.chunks(2 * MIB).map(Bytes::copy_from_slice).collect::<Vec<_>>();
    let id = src_mem.create_multipart(&k, &PutOptions::default()).await?;
    let mut done = Vec::new();
    for (i, c) in parts.iter().enumerate() {
        let sums = Checksums::md5(&md5_hex(c));
        done.push(src_mem.upload_part(&k, &id, i as u32 + 1, c.clone(), &sums).await?);
    }
    src_mem.complete_multipart(&k, &id, &done).await?;
    let src: DynStore = Arc::new(src_mem);
    let meta = src.head(&k).await?;
    let want_crc = haul_store::checksum::crc64_to_b64(haul_store::checksum::crc64(&body));
    assert_eq!(meta.checksums.crc64nvme.as_deref(), Some(want_crc.as_str()));

    let local: DynStore = Arc::new(LocalStore::create(dir.path())?);
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let out = t.copy(&src, &meta, &local, &k, &NoObserver).await?;
    assert_eq!(out.strategy, Strategy::Multipart { parts: 3 }, "the source's layout");
    assert_eq!(out.verified, Verified::SourceChecksum);
    assert_eq!(std::fs::read(dir.path().join("2026/11/21/big.bin"))?, body.to_vec());
    // The file carries the source's ETag, taken rather than recomputed,
    // and its CRC64NVME.
    let got = local.head(&k).await?;
    assert_eq!(got.etag, meta.etag);
    assert_eq!(got.checksums.crc64nvme.as_deref(), Some(want_crc.as_str()));
    assert_eq!(out.etag, meta.etag);
    Ok(())
}

/// A corrupted read fails the CRC64NVME check before the destination is
/// completed: nothing lands, no upload is left behind.
#[tokio::test]
async fn a_corrupted_download_fails_the_crc64_check_and_nothing_lands() -> TestResult {
    let dir = tempfile::tempdir()?;
    let src_mem = crc_bucket("src");
    let k = key("x.bin");
    src_mem.put(&k, data(3 * MIB, 22), &PutOptions::default()).await?;
    // Every read damaged the same way: reading the parts again cannot
    // repair it (see the repair tests in tests/integrity.rs).
    let cfg = FaultConfig {
        corrupt_rate: 1.0,
        ..FaultConfig::none(5)
    };
    let src: DynStore = Arc::new(FaultStore::new(Arc::new(src_mem), cfg));
    let local: DynStore = Arc::new(LocalStore::create(dir.path())?);
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let meta = src.head(&k).await?;
    let e = match t.copy(&src, &meta, &local, &k, &NoObserver).await {
        Ok(o) => return Err(format!("a corrupted read was accepted: {o:?}").into()),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("does not match the source CRC64NVME"), "{e}");
    assert!(!dir.path().join("x.bin").exists(), "nothing lands");
    assert!(!dir.path().join(".haul-tmp").exists(), "the upload was aborted");
    Ok(())
}

/// Uploads one local file of `size` bytes through `faults` into a bucket of
/// `server` that keeps CRC64NVMEs; returns the outcome, the bucket and the
/// file's bytes.
async fn upload_to_crc_bucket(
    server: &Arc<MemoryServer>,
    size: usize,
    faults: FaultConfig,
) -> Result<(Outcome, DynStore, Bytes), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let body = data(size, 23);
    std::fs::write(dir.path().join("up.bin"), &body)?;
    let local: DynStore = Arc::new(LocalStore::new(dir.path())?);
    let bucket: DynStore = Arc::new(
        server
            .bucket("dst")
            .with_limits(MIB as u64, 5 << 30)
            .with_default_crc64(),
    );
    let dst: DynStore = Arc::new(FaultStore::new(bucket.clone(), faults));
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let k = key("up.bin");
    let meta = local.head(&k).await?;
    let out = t.copy(&local, &meta, &dst, &k, &NoObserver).await?;
    Ok((out, bucket, body))
}

/// A single PUT and a 5-part upload.
const UPLOAD_SIZES: [(usize, Strategy); 2] = [
    (300_001, Strategy::Single),
    (4 * MIB + 5, Strategy::Multipart { parts: 5 }),
];

/// Into a store that checks CRC64NVMEs, a PUT and every part carry only
/// their CRC (no MD5 is computed), and the CRC64NVME the store returns must
/// equal the data's. The object's ETag is still the right one.
#[tokio::test]
async fn an_upload_to_a_crc64_store_is_checked_by_crc_without_md5() -> TestResult {
    for (size, strategy) in UPLOAD_SIZES {
        let server = MemoryServer::new();
        let (out, dst, body) = upload_to_crc_bucket(&server, size, FaultConfig::none(1)).await?;
        assert_eq!(out.strategy, strategy);
        assert_eq!(out.verified, Verified::DestChecksum, "{strategy:?}");
        let k = key("up.bin");
        let got = dst.head(&k).await?;
        let want = haul_store::checksum::crc64_to_b64(haul_store::checksum::crc64(&body));
        assert_eq!(got.checksums.crc64nvme.as_deref(), Some(want.as_str()));
        let part_md5s = body.chunks(MIB).map(md5_hex).collect::<Vec<_>>();
        let want_etag = match strategy {
            Strategy::Single => Some(md5_hex(&body)),
            _ => haul_store::checksum::multipart_etag(part_md5s.iter().map(String::as_str)),
        };
        assert_eq!(got.etag, want_etag, "{strategy:?}");
        assert_eq!(out.etag, want_etag, "{strategy:?}");
        assert_eq!(read_all(&dst, &k).await?, body);
    }
    Ok(())
}

/// A store that ignores the CRC64NVME sent with a PUT or a part does not
/// confirm it: nothing checked the payload, so it is sent again with its
/// MD5 as Content-MD5, and the upload still ends verified by its ETag.
#[tokio::test]
async fn an_upload_falls_back_to_md5_when_the_store_does_not_confirm_crcs() -> TestResult {
    for (size, strategy) in UPLOAD_SIZES {
        let server = MemoryServer::new();
        let faults = FaultConfig {
            ignore_crc: true,
            ..FaultConfig::none(2)
        };
        let (out, dst, body) = upload_to_crc_bucket(&server, size, faults).await?;
        assert_eq!(out.strategy, strategy);
        assert_eq!(out.verified, Verified::Etag, "{strategy:?}");
        assert_eq!(read_all(&dst, &key("up.bin")).await?, body);
    }
    Ok(())
}

/// Data corrupted on the way is refused — by the store that checks its
/// CRC64NVME (nothing lands), or, when the store ignores CRCs, by its check
/// of the Content-MD5 the payload is sent again with (for parts, before
/// anything is completed).
#[tokio::test]
async fn data_corrupted_on_the_way_is_caught_with_and_without_crc_checks() -> TestResult {
    for (size, strategy) in UPLOAD_SIZES {
        for ignore_crc in [false, true] {
            let server = MemoryServer::new();
            let faults = FaultConfig {
                corrupt_write_rate: 1.0,
                ignore_crc,
                ..FaultConfig::none(3)
            };
            let e = match upload_to_crc_bucket(&server, size, faults).await {
                Ok((o, _, _)) => return Err(format!("corrupted data was accepted: {o:?}").into()),
                Err(e) => e,
            };
            let msg = e.to_string();
            let want = if ignore_crc {
                "Content-MD5"
            } else {
                "x-amz-checksum-crc64nvme"
            };
            assert!(msg.contains(want), "{strategy:?}, ignore_crc={ignore_crc}: {msg}");
            let landed = server.bucket("dst").head(&key("up.bin")).await.is_ok();
            // A store that checks nothing keeps a corrupted single PUT; the
            // failure is reported all the same. Parts never complete.
            let may_land = ignore_crc && strategy == Strategy::Single;
            assert!(
                !landed || may_land,
                "{strategy:?}, ignore_crc={ignore_crc}: corrupted data landed"
            );
            assert_eq!(server.open_uploads(), 0, "the upload was aborted");
        }
    }
    Ok(())
}

/// Downloads streamed into a local directory under faults — bodies cut
/// halfway, failed and lost requests — end complete and byte-identical,
/// with and without a source CRC64NVME, and leave no temp files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_local_downloads_complete_under_faults() -> TestResult {
    for crc in [true, false] {
        let dir = tempfile::tempdir()?;
        let mem = MemoryStore::new("src").with_limits(MIB as u64, 5 << 30);
        let mem = if crc { mem.with_default_crc64() } else { mem };
        let mut expected = BTreeMap::new();
        for i in 0..30u64 {
            let body = data(3 * MIB + i as usize * 1001, 100 + i);
            let k = key(&format!("d/{i:02}.bin"));
            mem.put(&k, body.clone(), &PutOptions::default()).await?;
            expected.insert(format!("d/{i:02}.bin"), body);
        }
        let faults = Arc::new(FaultStore::new(
            Arc::new(mem),
            FaultConfig {
                body_rate: 0.2,
                before_rate: 0.1,
                ..FaultConfig::none(7)
            },
        ));
        let src = fast_retries(faults.clone());
        let dst: DynStore = Arc::new(LocalStore::create(dir.path())?);
        let planner = Planner {
            src: src.clone(),
            src_prefix: Key::root(),
            dst_prefix: Key::root(),
            filter: Filter::default(),
            dst_is_local: true,
        };
        let exec = Executor::new(
            Transfer::new(small_parts(), CancellationToken::new()),
            JobOptions::default(),
            Arc::new(NoObserver),
        );
        let summary = exec.copy(&src, &dst, planner.tasks()).await;
        assert_eq!(summary.failed, 0, "crc {crc}: {:?}", summary.first_failures);
        assert!(faults.injected() > 5, "only {} faults", faults.injected());
        for (k, body) in &expected {
            assert!(std::fs::read(dir.path().join(k))? == body.to_vec(), "crc {crc}: {k}");
        }
        assert!(!dir.path().join(".haul-tmp").exists(), "crc {crc}: no temp files left");
    }
    Ok(())
}
