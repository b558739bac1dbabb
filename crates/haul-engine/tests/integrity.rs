//! Integrity guarantees of a transfer beyond the ETag = MD5 case (issue 11,
//! items 5 and 9): sources whose ETag is not an MD5 are checked by their
//! full-object checksum or their recomputed multipart ETag, or counted as
//! unverified; a local source that changed while it was read never replaces
//! the destination; a ranged read shorter than asked fails the part; a
//! cancelled stream upload joins its part tasks before aborting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use haul_engine::job::JobOptions;
use haul_engine::plan::Planner;
use haul_engine::report::{NoObserver, Observer};
use haul_engine::transfer::{Strategy, Verified};
use haul_engine::{Executor, Filter, Transfer, TransferOptions};
use haul_store::checksum::md5_hex;
use haul_store::local::LocalStore;
use haul_store::memory::{MemoryServer, MemoryStore};
use haul_store::wrap::{FaultConfig, FaultStore};
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

/// Below the multipart threshold: copied in one request.
fn single_request() -> TransferOptions {
    TransferOptions {
        server_side: false,
        ..TransferOptions::default()
    }
}

/// Writes `body` to `store` as a multipart upload of parts of `part` bytes
/// (as the AWS CLI does for 8–16 MiB files): its ETag ends in `-N`.
async fn multipart_object(store: &MemoryStore, k: &Key, body: &Bytes, part: usize) -> TestResult {
    let id = store.create_multipart(k, &PutOptions::default()).await?;
    let mut done = Vec::new();
    for (i, c) in body.chunks(part).enumerate() {
        let c = Bytes::copy_from_slice(c);
        let sums = Checksums::md5(&md5_hex(&c));
        done.push(store.upload_part(k, &id, i as u32 + 1, c, &sums).await?);
    }
    store.complete_multipart(k, &id, &done).await?;
    Ok(())
}

fn corrupting(inner: MemoryStore) -> DynStore {
    Arc::new(FaultStore::new(
        Arc::new(inner),
        FaultConfig {
            corrupt_rate: 1.0,
            ..FaultConfig::none(11)
        },
    ))
}

/// 5a: a `-2` ETag (not an MD5) read in one request is checked by the
/// multipart ETag recomputed with the source's part layout — into a bucket
/// and into a local directory (which used to "check" its own MD5).
#[tokio::test]
async fn a_single_request_copy_of_a_multipart_etag_source_is_checked() -> TestResult {
    let src = MemoryStore::new("src").with_limits(MIB as u64, 5 << 30);
    let body = data(3 * MIB / 2 + 7, 1);
    let k = key("aws-cli-upload.bin");
    multipart_object(&src, &k, &body, MIB).await?;
    let meta = src.head(&k).await?;
    assert!(meta.etag.as_deref().is_some_and(|e| e.ends_with("-2")), "{meta:?}");
    let dir = tempfile::tempdir()?;
    let local: DynStore = Arc::new(LocalStore::create(dir.path())?);
    let bucket = MemoryStore::new("dst");
    let dsts: [(&str, DynStore); 2] = [("bucket", Arc::new(bucket.clone())), ("local", local.clone())];
    let t = Transfer::new(single_request(), CancellationToken::new());

    // Clean reads are verified against the source's ETag.
    let clean: DynStore = Arc::new(src.clone());
    for (name, dst) in &dsts {
        let out = t.copy(&clean, &meta, dst, &k, &NoObserver).await?;
        assert_eq!(out.strategy, Strategy::Single, "{name}");
        assert_eq!(out.verified, Verified::SourceEtag, "{name}");
        assert!(!out.unverified, "{name}");
        assert!(read_all(dst, &k).await? == body, "{name}");
    }
    // A corrupted read is refused, and nothing replaces the destination.
    let k2 = key("other.bin");
    let broken = corrupting(src);
    for (name, dst) in &dsts {
        let e = match t.copy(&broken, &meta, dst, &k2, &NoObserver).await {
            Ok(o) => return Err(format!("{name}: a corrupted read was accepted: {o:?}").into()),
            Err(e) => e,
        };
        assert_eq!(e.kind, ErrorKind::Integrity, "{name}: {e}");
        assert!(e.to_string().contains("multipart ETag"), "{name}: {e}");
        assert!(dst.head(&k2).await.err().is_some_and(|e| e.is_not_found()), "{name}");
    }
    Ok(())
}

/// 5a: a source whose ETag is not an MD5 (SSE-KMS) but that keeps a
/// full-object CRC64NVME is checked by it.
#[tokio::test]
async fn a_single_request_copy_of_an_sse_kms_source_is_checked_by_its_crc() -> TestResult {
    let src = MemoryStore::new("kms").with_default_kms().with_default_crc64();
    let body = data(100_000, 2);
    let k = key("secret.bin");
    src.put(&k, body.clone(), &PutOptions::default()).await?;
    let meta = src.head(&k).await?;
    assert!(meta.checksums.crc64nvme.is_some());
    let dir = tempfile::tempdir()?;
    let local: DynStore = Arc::new(LocalStore::create(dir.path())?);
    let t = Transfer::new(single_request(), CancellationToken::new());
    let clean: DynStore = Arc::new(src.clone());
    let out = t.copy(&clean, &meta, &local, &k, &NoObserver).await?;
    assert_eq!(out.verified, Verified::SourceChecksum);
    assert!(read_all(&local, &k).await? == body);
    let e = t
        .copy(&corrupting(src), &meta, &local, &key("x"), &NoObserver)
        .await
        .err()
        .ok_or("a corrupted read was accepted")?;
    assert_eq!(e.kind, ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("CRC64NVME"), "{e}");
    assert!(!dir.path().join("x").exists());
    Ok(())
}

/// 5a: with nothing to check against, the object is copied and counted as
/// unverified; `require_verified` makes it a failure, before anything lands.
#[tokio::test]
async fn an_uncheckable_source_is_counted_unverified_or_refused() -> TestResult {
    let src = MemoryStore::new("kms").with_default_kms();
    let k = key("opaque.bin");
    src.put(&k, data(50_000, 3), &PutOptions::default()).await?;
    let s: DynStore = Arc::new(src);
    for require in [false, true] {
        let dst = MemoryStore::new("dst");
        let d: DynStore = Arc::new(dst.clone());
        let planner = Planner {
            src: s.clone(),
            src_prefix: Key::root(),
            dst_prefix: Key::root(),
            filter: Filter::default(),
            dst_is_local: false,
        };
        let exec = Executor::new(
            Transfer::new(
                TransferOptions {
                    require_verified: require,
                    ..single_request()
                },
                CancellationToken::new(),
            ),
            JobOptions::default(),
            Arc::new(NoObserver),
        );
        let summary = exec.copy(&s, &d, planner.tasks()).await;
        if require {
            assert_eq!((summary.objects, summary.failed), (0, 1), "{summary:?}");
            assert_eq!(summary.first_failures[0].code, "Unverified");
            assert!(
                d.head(&k).await.err().is_some_and(|e| e.is_not_found()),
                "nothing lands"
            );
        } else {
            assert_eq!(
                (summary.objects, summary.failed, summary.unverified),
                (1, 0, 1),
                "{summary:?}"
            );
        }
    }
    Ok(())
}

/// Rewrites a local file the first time bytes of a copy arrive: the file
/// changes while it is being copied.
struct Rewrite {
    path: std::path::PathBuf,
    done: AtomicBool,
}

impl Observer for Rewrite {
    fn bytes(&self, _n: u64) {
        if !self.done.swap(true, Ordering::SeqCst) {
            let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0) as usize;
            if let Err(e) = std::fs::write(&self.path, haul_testkit::data(size, 99)) {
                panic!("cannot rewrite {}: {e}", self.path.display());
            }
            let later = std::time::SystemTime::now() + Duration::from_secs(5);
            if let Err(e) = filetime::set_file_mtime(&self.path, filetime::FileTime::from_system_time(later)) {
                panic!("{e}");
            }
        }
    }
}

/// 5b: a local file rewritten while it is read fails *before* the PUT or
/// the CompleteMultipartUpload: the destination keeps its earlier object,
/// and no upload is left open.
#[tokio::test]
async fn a_local_source_changed_while_read_never_replaces_the_destination() -> TestResult {
    for (name, size) in [("single", 100_000), ("multipart", 3 * MIB + 5)] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f.bin");
        std::fs::write(&path, haul_testkit::data(size, 4))?;
        let local: DynStore = Arc::new(LocalStore::new(dir.path())?);
        let meta = local.head(&key("f.bin")).await?;
        let server = MemoryServer::new();
        let bucket = server.bucket("dst").with_limits(MIB as u64, 5 << 30);
        let earlier = Bytes::from_static(b"the earlier, good version");
        bucket
            .put(&key("f.bin"), earlier.clone(), &PutOptions::default())
            .await?;
        let d: DynStore = Arc::new(bucket);
        let t = Transfer::new(
            TransferOptions {
                parts_per_object: 1,
                ..small_parts()
            },
            CancellationToken::new(),
        );
        let obs = Rewrite {
            path: path.clone(),
            done: AtomicBool::new(false),
        };
        let e = t
            .copy(&local, &meta, &d, &key("f.bin"), &obs)
            .await
            .err()
            .ok_or(format!("{name}: a copy of a changed file succeeded"))?;
        assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{name}: {e}");
        assert!(
            read_all(&d, &key("f.bin")).await? == earlier,
            "{name}: the destination was replaced"
        );
        assert_eq!(server.open_uploads(), 0, "{name}: the upload was aborted");
    }
    Ok(())
}

/// 5c: a ranged read answered with fewer bytes than asked — the answer's
/// own length agreeing — fails the part; nothing lands.
#[tokio::test]
async fn a_short_ranged_read_fails_the_part() -> TestResult {
    let src = MemoryStore::new("src");
    let k = key("big.bin");
    src.put(&k, data(3 * MIB + 3, 5), &PutOptions::default()).await?;
    let meta = src.head(&k).await?;
    let s: DynStore = Arc::new(FaultStore::new(
        Arc::new(src),
        FaultConfig {
            short_range_rate: 1.0,
            ..FaultConfig::none(5)
        },
    ));
    let dir = tempfile::tempdir()?;
    let server = MemoryServer::new();
    let bucket: DynStore = Arc::new(server.bucket("dst").with_limits(MIB as u64, 5 << 30));
    let local: DynStore = Arc::new(LocalStore::create(dir.path())?);
    // Parts (2 MiB) above the bucket's smallest (1 MiB): one byte short,
    // a store accepts them.
    let t = Transfer::new(
        TransferOptions {
            part_size: 2 * MIB as u64,
            ..small_parts()
        },
        CancellationToken::new(),
    );
    for (name, d) in [("bucket", &bucket), ("local", &local)] {
        let e = t
            .copy(&s, &meta, d, &k, &NoObserver)
            .await
            .err()
            .ok_or(format!("{name}: a short read was accepted"))?;
        assert!(
            e.to_string().contains("expected") || e.to_string().contains("arrived"),
            "{name}: {e}"
        );
        assert!(
            d.head(&k).await.err().is_some_and(|e| e.is_not_found()),
            "{name}: nothing lands"
        );
    }
    assert_eq!(server.open_uploads(), 0);
    Ok(())
}

/// A reader that gives `ready` bytes, then never ends (stdin of a writer
/// that pauses).
struct Stalled {
    ready: Vec<u8>,
    at: usize,
}

impl tokio::io::AsyncRead for Stalled {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at >= self.ready.len() {
            return std::task::Poll::Pending;
        }
        let n = buf.remaining().min(self.ready.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.ready[at..at + n]);
        self.at += n;
        std::task::Poll::Ready(Ok(()))
    }
}

/// 9: a cancelled stream upload stops and joins its part tasks before it
/// aborts the upload: no part can land after the abort.
#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_stream_upload_joins_its_part_tasks() -> TestResult {
    let server = MemoryServer::new();
    let bucket = server.bucket("dst").with_limits(MIB as u64, 5 << 30);
    // Slow parts: still in flight when the upload is cancelled (and
    // aborted, at once).
    let d: DynStore = Arc::new(FaultStore::new(
        Arc::new(bucket),
        FaultConfig {
            part_latency: Duration::from_secs(2),
            ..FaultConfig::none(6)
        },
    ));
    let cancel = CancellationToken::new();
    let t = Transfer::new(small_parts(), cancel.clone());
    let reader = Stalled {
        ready: haul_testkit::data(3 * MIB, 6),
        at: 0,
    };
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.cancel();
    });
    let e = t
        .upload_stream(reader, &d, &key("stdin"), &NoObserver)
        .await
        .err()
        .ok_or("a cancelled upload succeeded")?;
    assert_eq!(e.report_code(), "Cancelled");
    assert_eq!(
        tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        0,
        "part tasks outlived the abort"
    );
    assert_eq!(server.open_uploads(), 0, "the upload was aborted");
    Ok(())
}

/// Reads of `inner` damaged at `rate`: a random byte of the body changed
/// (`spread`, as a noisy network does: every damaged read differs) or its
/// first byte flipped (the same damage every time).
fn damaging(inner: MemoryStore, rate: f64, spread: bool, seed: u64) -> Arc<FaultStore> {
    Arc::new(FaultStore::new(
        Arc::new(inner),
        FaultConfig {
            corrupt_rate: rate,
            corrupt_spread: spread,
            ..FaultConfig::none(seed)
        },
    ))
}

/// The two kinds of source whose check is computed from the parts: a
/// multipart ETag (its layout reused) and a full-object CRC64NVME; `n`
/// parts of 1 MiB (and 5 bytes).
async fn repair_sources(n: usize) -> Result<Vec<(&'static str, MemoryStore, Key, Bytes)>, Box<dyn std::error::Error>> {
    let body = data(n * MIB + 5, 31);
    let etag_src = MemoryStore::new("etag-src").with_limits(MIB as u64, 5 << 30);
    let k = key("parts.bin");
    multipart_object(&etag_src, &k, &body, MIB).await?;
    let crc_src = MemoryStore::new("crc-src")
        .with_limits(MIB as u64, 5 << 30)
        .with_default_crc64();
    crc_src.put(&k, body.clone(), &PutOptions::default()).await?;
    Ok(vec![
        ("etag", etag_src, k.clone(), body.clone()),
        ("crc", crc_src, k, body),
    ])
}

fn repair_options() -> TransferOptions {
    TransferOptions {
        server_side: false,
        ..small_parts()
    }
}

/// Issue 12, item 6: a multipart copy whose reads are damaged in transit
/// (one part in four; 17 parts: a whole-object retry succeeds once in a
/// hundred) is repaired by reading the damaged parts again until two
/// reads agree, then checked against the source's multipart ETag or
/// CRC64NVME — into a bucket and into a local directory.
#[tokio::test]
async fn a_multipart_copy_damaged_in_transit_is_repaired_part_by_part() -> TestResult {
    let t = Transfer::new(repair_options(), CancellationToken::new());
    for (src_name, mem, k, body) in repair_sources(16).await? {
        let meta = mem.head(&k).await?;
        let dir = tempfile::tempdir()?;
        let server = MemoryServer::new();
        let bucket: DynStore = Arc::new(server.bucket("dst").with_limits(MIB as u64, 5 << 30));
        let local: DynStore = Arc::new(LocalStore::create(dir.path())?);
        for (i, (dst_name, dst)) in [("bucket", bucket), ("local", local)].into_iter().enumerate() {
            let what = format!("{src_name} source into a {dst_name}");
            let faults = damaging(mem.clone(), 0.25, true, 40 + i as u64);
            let src: DynStore = faults.clone();
            let before = haul_store::wrap::resent_requests();
            let out = t
                .copy(&src, &meta, &dst, &k, &NoObserver)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            assert!(faults.injected() > 0, "{what}: nothing was damaged");
            assert!(
                haul_store::wrap::resent_requests() > before,
                "{what}: the parts read again are counted"
            );
            assert!(read_all(&dst, &k).await? == body, "{what}: bytes differ");
            assert_eq!(out.strategy, Strategy::Multipart { parts: 17 }, "{what}");
            let want = if src_name == "etag" {
                Verified::SourceEtag
            } else {
                Verified::SourceChecksum
            };
            assert_eq!(out.verified, want, "{what}");
            let got = dst.head(&k).await?;
            if src_name == "etag" || dst_name == "local" {
                assert_eq!(got.etag, meta.etag, "{what}: the source's ETag");
            }
            if src_name == "crc" && dst_name == "local" {
                assert_eq!(got.checksums.crc64nvme, meta.checksums.crc64nvme, "{what}");
            }
        }
        assert_eq!(server.open_uploads(), 0, "{src_name}");
    }
    Ok(())
}

/// Damage that is not random is never "repaired": reads damaged the same
/// way every time agree, and the check against the source still fails;
/// reads damaged differently every time never agree and the repair gives
/// up within its bounds. Either way nothing lands and no upload is left
/// open.
#[tokio::test]
async fn persistent_damage_is_not_repaired_and_nothing_lands() -> TestResult {
    let t = Transfer::new(repair_options(), CancellationToken::new());
    for (src_name, mem, k, _) in repair_sources(3).await? {
        let meta = mem.head(&k).await?;
        for (spread, why) in [(false, "still do not match the source"), (true, "without")] {
            let dir = tempfile::tempdir()?;
            let server = MemoryServer::new();
            let bucket: DynStore = Arc::new(server.bucket("dst").with_limits(MIB as u64, 5 << 30));
            let local: DynStore = Arc::new(LocalStore::create(dir.path())?);
            for (dst_name, dst) in [("bucket", bucket), ("local", local)] {
                let what = format!("{src_name} source into a {dst_name}, spread {spread}");
                let src: DynStore = damaging(mem.clone(), 1.0, spread, 7);
                let e = match t.copy(&src, &meta, &dst, &k, &NoObserver).await {
                    Ok(o) => return Err(format!("{what}: damaged reads were accepted: {o:?}").into()),
                    Err(e) => e,
                };
                assert_eq!(e.kind, ErrorKind::Integrity, "{what}: {e}");
                assert!(e.to_string().contains("not repaired"), "{what}: {e}");
                assert!(e.to_string().contains(why), "{what}: {e}");
                assert!(
                    dst.head(&k).await.err().is_some_and(|e| e.is_not_found()),
                    "{what}: nothing lands"
                );
            }
            assert_eq!(server.open_uploads(), 0, "{src_name}: the upload was aborted");
            assert!(
                !dir.path().join(".haul-tmp").exists(),
                "{src_name}: the upload was aborted"
            );
        }
    }
    Ok(())
}

/// A ranged read answered with another ETag than the source's, while a
/// fresh HEAD still names the source's, had its header damaged on the way
/// (a flipped byte): the range is read again rather than the object failed
/// as changed.
#[tokio::test]
async fn a_read_answered_with_a_damaged_etag_is_read_again() -> TestResult {
    let t = Transfer::new(repair_options(), CancellationToken::new());
    for (src_name, mem, k, body) in repair_sources(6).await? {
        let meta = mem.head(&k).await?;
        let faults = Arc::new(FaultStore::new(
            Arc::new(mem),
            FaultConfig {
                etag_damage_rate: 0.3,
                ..FaultConfig::none(9)
            },
        ));
        let src: DynStore = faults.clone();
        let server = MemoryServer::new();
        let dst: DynStore = Arc::new(server.bucket("dst").with_limits(MIB as u64, 5 << 30));
        t.copy(&src, &meta, &dst, &k, &NoObserver)
            .await
            .map_err(|e| format!("{src_name}: {e}"))?;
        assert!(faults.injected() > 0, "{src_name}: nothing was damaged");
        assert!(read_all(&dst, &k).await? == body, "{src_name}: bytes differ");
    }
    Ok(())
}

/// A ranged read answered with another length than asked now and then (a
/// Content-Length damaged on the way; seen through a corrupting proxy in
/// front of garage) while the source is unchanged is read again, not
/// failed as a changed source; the copy arrives byte for byte.
#[tokio::test]
async fn a_ranged_read_of_the_wrong_length_now_and_then_is_read_again() -> TestResult {
    let src = MemoryStore::new("src");
    let k = key("big.bin");
    let body = data(6 * MIB + 3, 9);
    src.put(&k, body.clone(), &PutOptions::default()).await?;
    let meta = src.head(&k).await?;
    let s: DynStore = Arc::new(FaultStore::new(
        Arc::new(src),
        FaultConfig {
            short_range_rate: 0.3,
            ..FaultConfig::none(23)
        },
    ));
    let dir = tempfile::tempdir()?;
    let local: DynStore = Arc::new(LocalStore::create(dir.path())?);
    let t = Transfer::new(small_parts(), CancellationToken::new());
    t.copy(&s, &meta, &local, &k, &NoObserver).await?;
    assert!(
        std::fs::read(dir.path().join("big.bin"))? == body.as_ref(),
        "bytes differ"
    );
    Ok(())
}
