//! The engine's `MultipartWriter` and the uploads built on it: no upload is
//! left open (error, cancel, drop), a stream is checked by its CRC64NVME
//! and fits the destination's part limit, and `--preserve-etag` streams
//! parts larger than the byte budget instead of buffering them.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use haul_engine::report::NoObserver;
use haul_engine::transfer::{PartChecks, Strategy, Transfer, TransferOptions, Verified};
use haul_store::checksum::{crc64, crc64_to_b64, md5_hex};
use haul_store::memory::{MemoryServer, MemoryStore};
use haul_store::*;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;
const MIB: usize = 1024 * 1024;

fn key(s: &str) -> Key {
    Key::object(s).unwrap_or_else(|e| panic!("{e}"))
}

fn data(n: usize, seed: u64) -> Bytes {
    Bytes::from(haul_testkit::data(n, seed))
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

/// A store wrapper that records the largest buffer handed to
/// `upload_part`, can lower the part limit, fail one part, or answer a
/// completion with a wrong full-object CRC64NVME.
#[derive(Debug)]
struct Probe {
    inner: DynStore,
    caps: Capabilities,
    largest_part: AtomicU64,
    fail_part: Option<u32>,
    wrong_crc: bool,
    /// Streamed parts still to refuse (as a connection reset would).
    stream_failures: AtomicU32,
}

impl Probe {
    fn new(inner: DynStore) -> Self {
        Probe {
            caps: inner.capabilities().clone(),
            inner,
            largest_part: AtomicU64::new(0),
            fail_part: None,
            wrong_crc: false,
            stream_failures: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl ObjectStore for Probe {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn url(&self) -> String {
        self.inner.url()
    }
    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry, StoreError>> {
        self.inner.list(req)
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta, StoreError> {
        self.inner.head(key).await
    }
    async fn head_part(&self, key: &Key, n: u32) -> Result<(u64, u32), StoreError> {
        self.inner.head_part(key, n).await
    }
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult, StoreError> {
        self.inner.get(key, range).await
    }
    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.get_tags(key).await
    }
    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult, StoreError> {
        self.inner.put(key, payload, opts).await
    }
    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId, StoreError> {
        self.inner.create_multipart(key, opts).await
    }
    async fn upload_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        n: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart, StoreError> {
        self.largest_part.fetch_max(payload.len() as u64, Ordering::SeqCst);
        if self.fail_part == Some(n) {
            return Err(StoreError::new(
                Op::UploadPart,
                key.as_str(),
                ErrorKind::Other,
                "injected",
            ));
        }
        self.inner.upload_part(key, upload, n, payload, sums).await
    }
    async fn upload_part_stream(
        &self,
        key: &Key,
        upload: &MultipartId,
        n: u32,
        size: u64,
        body: ByteStream,
    ) -> Result<CompletedPart, StoreError> {
        let left = self.stream_failures.load(Ordering::SeqCst);
        if left > 0
            && self
                .stream_failures
                .compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            // Half the part read, then the connection goes.
            let mut body = body;
            let _ = futures::StreamExt::next(&mut body).await;
            return Err(StoreError::new(
                Op::UploadPart,
                key.as_str(),
                ErrorKind::Transient,
                "connection reset (injected)",
            ));
        }
        self.inner.upload_part_stream(key, upload, n, size, body).await
    }
    async fn upload_part_copy(
        &self,
        key: &Key,
        upload: &MultipartId,
        n: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart, StoreError> {
        self.inner.upload_part_copy(key, upload, n, src, range).await
    }
    async fn complete_multipart(
        &self,
        key: &Key,
        upload: &MultipartId,
        parts: &[CompletedPart],
    ) -> Result<PutResult, StoreError> {
        let mut r = self.inner.complete_multipart(key, upload, parts).await?;
        if self.wrong_crc {
            r.checksums.crc64nvme = Some(crc64_to_b64(12345));
        }
        Ok(r)
    }
    async fn abort_multipart(&self, key: &Key, upload: &MultipartId) -> Result<(), StoreError> {
        self.inner.abort_multipart(key, upload).await
    }
    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult, StoreError> {
        self.inner.copy(src, dst, opts).await
    }
    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>, StoreError> {
        self.inner.delete_many(keys).await
    }
}

/// Writes `body` to `store` as a multipart object of `part` bytes parts.
async fn put_multipart(store: &DynStore, k: &Key, body: &Bytes, part: usize) -> Result<String, StoreError> {
    let id = store.create_multipart(k, &PutOptions::default()).await?;
    let mut parts = Vec::new();
    for (i, chunk) in body.chunks(part).enumerate() {
        let c = Bytes::copy_from_slice(chunk);
        let sums = Checksums::md5(&md5_hex(&c));
        parts.push(store.upload_part(k, &id, i as u32 + 1, c, &sums).await?);
    }
    let done = store.complete_multipart(k, &id, &parts).await?;
    Ok(done.etag.unwrap_or_default())
}

/// Issue 12, item 5: a `--preserve-etag` copy that cannot use
/// UploadPartCopy (two servers) streams each source part into its
/// destination part: no buffer of a part larger than the byte budget is
/// ever handed to the destination, and the ETag and the bytes are kept.
#[tokio::test]
async fn preserve_etag_streams_parts_larger_than_the_budget() -> TestResult {
    let src_store = MemoryStore::new("src").with_limits(MIB as u64, 5 << 30);
    let src: DynStore = Arc::new(src_store);
    let body = data(5 * MIB + 123, 1);
    let k = key("big.bin");
    let etag = put_multipart(&src, &k, &body, 2 * MIB).await?;
    // Another server: no server-side copy.
    let probe = Arc::new(Probe::new(Arc::new(
        MemoryServer::new().bucket("dst").with_limits(MIB as u64, 5 << 30),
    )));
    let dst: DynStore = probe.clone();
    let budget = MIB as u64;
    let t = Transfer::new(
        TransferOptions {
            preserve_etag: true,
            buffer_bytes: budget,
            parts_per_object: 2,
            ..small_parts()
        },
        CancellationToken::new(),
    );
    let meta = src.head(&k).await?;
    let out = t.copy(&src, &meta, &dst, &key("copy.bin"), &NoObserver).await?;
    assert_eq!(out.strategy, Strategy::Multipart { parts: 3 });
    assert_eq!(out.etag.as_deref(), Some(etag.as_str()), "the ETag was kept");
    assert_eq!(out.verified, Verified::SourceEtag);
    assert!(read_all(&dst, &key("copy.bin")).await? == body, "bytes differ");
    let largest = probe.largest_part.load(Ordering::SeqCst);
    assert!(
        largest <= budget,
        "a {largest}-byte part buffer was handed to the destination (budget {budget})"
    );
    Ok(())
}

/// The stdin upload sends each part's CRC64NVME and checks the combined
/// one against the destination's: a completion answering another CRC
/// fails, and nothing stays open.
#[tokio::test]
async fn a_stream_upload_is_checked_by_its_crc64nvme() -> TestResult {
    let server = MemoryServer::new();
    let store = server.bucket("d").with_limits(MIB as u64, 5 << 30).with_default_crc64();
    let d: DynStore = Arc::new(store.clone());
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let body = data(3 * MIB + 5, 2);
    let out = t
        .upload_stream(std::io::Cursor::new(body.to_vec()), &d, &key("ok"), &NoObserver)
        .await?;
    assert_eq!(out.strategy, Strategy::Multipart { parts: 4 });
    let head = d.head(&key("ok")).await?;
    assert_eq!(head.checksums.crc64nvme, Some(crc64_to_b64(crc64(&body))));
    assert!(read_all(&d, &key("ok")).await? == body);
    // The same stream, answered with a wrong full-object CRC64NVME.
    let mut probe = Probe::new(Arc::new(store));
    probe.wrong_crc = true;
    let p: DynStore = Arc::new(probe);
    let e = t
        .upload_stream(std::io::Cursor::new(body.to_vec()), &p, &key("bad"), &NoObserver)
        .await
        .err()
        .ok_or("a wrong CRC64NVME was not noticed")?;
    assert_eq!(e.kind, ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("CRC64NVME"), "{e}");
    assert_eq!(server.open_uploads(), 0);
    Ok(())
}

/// A stream longer than `max_parts` parts of the configured size: the part
/// size grows so it fits; one longer than the grown parts allow fails
/// clearly at the limit, its upload aborted.
#[tokio::test]
async fn a_long_stream_grows_its_parts_or_fails_at_the_part_limit() -> TestResult {
    let server = MemoryServer::new();
    let mut probe = Probe::new(Arc::new(server.bucket("d").with_limits(MIB as u64, 5 << 30)));
    // Four parts at most: 1 + 2 + 4 + 8 MiB once doubling every part.
    probe.caps.max_parts = 4;
    let d: DynStore = Arc::new(probe);
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let body = data(9 * MIB + 1, 3);
    let out = t
        .upload_stream(std::io::Cursor::new(body.to_vec()), &d, &key("long"), &NoObserver)
        .await?;
    assert_eq!(out.strategy, Strategy::Multipart { parts: 4 });
    assert_eq!(out.bytes, body.len() as u64);
    assert!(read_all(&d, &key("long")).await? == body);
    let too_long = data(16 * MIB, 4);
    let e = t
        .upload_stream(
            std::io::Cursor::new(too_long.to_vec()),
            &d,
            &key("too-long"),
            &NoObserver,
        )
        .await
        .err()
        .ok_or("a stream beyond the part limit was accepted")?;
    assert_eq!(e.kind, ErrorKind::InvalidRequest, "{e}");
    assert!(e.to_string().contains("more than 4 parts"), "{e}");
    assert_eq!(server.open_uploads(), 0, "the upload was aborted");
    assert!(d.head(&key("too-long")).await.is_err());
    Ok(())
}

/// A part that fails aborts the upload: `finish` reports the error and no
/// upload stays open.
#[tokio::test]
async fn the_writer_aborts_on_a_failed_part() -> TestResult {
    let server = MemoryServer::new();
    let mut probe = Probe::new(Arc::new(server.bucket("d").with_limits(MIB as u64, 5 << 30)));
    probe.fail_part = Some(2);
    let d: DynStore = Arc::new(probe);
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let mut w = t
        .multipart_writer(&d, &key("w"), PutOptions::default(), PartChecks::default())
        .await?;
    let mut res = Ok(());
    for i in 0..4 {
        let permit = match w.reserve(MIB as u64).await {
            Ok(p) => p,
            Err(e) => {
                res = Err(e);
                break;
            }
        };
        if let Err(e) = w.put_part(data(MIB, i), permit).await {
            res = Err(e);
            break;
        }
    }
    let e = match res {
        Err(e) => e,
        Ok(()) => w.finish().await.err().ok_or("a failed part was completed")?,
    };
    assert!(e.to_string().contains("injected"), "{e}");
    assert_eq!(server.open_uploads(), 0, "the upload was aborted");
    Ok(())
}

/// A writer dropped before `finish` (its caller's future dropped) aborts
/// its upload.
#[tokio::test]
async fn a_dropped_writer_aborts_its_upload() -> TestResult {
    let server = MemoryServer::new();
    let d: DynStore = Arc::new(server.bucket("d").with_limits(MIB as u64, 5 << 30));
    let t = Transfer::new(small_parts(), CancellationToken::new());
    let mut w = t
        .multipart_writer(&d, &key("w"), PutOptions::default(), PartChecks::default())
        .await?;
    let permit = w.reserve(MIB as u64).await?;
    w.put_part(data(MIB, 1), permit).await?;
    assert_eq!(server.open_uploads(), 1);
    drop(w);
    for _ in 0..100 {
        if server.open_uploads() == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the dropped writer's upload is still open".into())
}

/// The multipart uploads open in a moto bucket (ListMultipartUploads,
/// unsigned: moto accepts it).
fn open_uploads_on(server: &haul_testkit::S3Server, bucket: &str) -> Result<usize, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).map_err(|e| e.to_string())?;
    let req = format!(
        "GET /{bucket}?uploads HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
        server.port
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    if !resp.contains("ListMultipartUploadsResult") {
        return Err(format!("ListMultipartUploads: {resp}"));
    }
    Ok(resp.matches("<Upload>").count())
}

/// A cancel while parts are in flight aborts the upload on a real S3
/// server: ListMultipartUploads shows none left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_writer_leaves_no_upload_on_s3() -> TestResult {
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
    let bucket = haul_testkit::unique_bucket("mpw");
    haul_testkit::create_bucket(server, &bucket)?;
    let d: DynStore = Arc::new(conn.bucket(&bucket));
    let cancel = CancellationToken::new();
    let t = Transfer::new(
        TransferOptions {
            part_size: 5 * MIB as u64,
            ..small_parts()
        },
        cancel.clone(),
    );
    let mut w = t
        .multipart_writer(&d, &key("cancelled"), PutOptions::default(), PartChecks::default())
        .await?;
    let permit = w.reserve(5 * MIB as u64).await?;
    w.put_part(data(5 * MIB, 1), permit).await?;
    assert_eq!(open_uploads_on(server, &bucket)?, 1);
    cancel.cancel();
    let e = w.finish().await.err().ok_or("a cancelled upload was completed")?;
    assert_eq!(e.report_code(), "Cancelled");
    assert_eq!(open_uploads_on(server, &bucket)?, 0, "the upload was aborted");
    assert!(d.head(&key("cancelled")).await.is_err());
    Ok(())
}

/// Issue 12, item 5, into a real S3 server: the parts of a
/// `--preserve-etag` copy larger than the byte budget are streamed
/// (UploadPart from the source's ranged GET), the ETag and bytes kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_etag_streams_parts_into_s3() -> TestResult {
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
    let bucket = haul_testkit::unique_bucket("mpwstream");
    haul_testkit::create_bucket(server, &bucket)?;
    let probe = Arc::new(Probe::new(Arc::new(conn.bucket(&bucket))));
    let dst: DynStore = probe.clone();
    let src: DynStore = Arc::new(MemoryStore::new("src"));
    let body = data(13 * MIB + 17, 5);
    let k = key("big.bin");
    let etag = put_multipart(&src, &k, &body, 6 * MIB).await?;
    let budget = 4 * MIB as u64;
    let t = Transfer::new(
        TransferOptions {
            preserve_etag: true,
            buffer_bytes: budget,
            parts_per_object: 2,
            ..small_parts()
        },
        CancellationToken::new(),
    );
    let meta = src.head(&k).await?;
    let out = t.copy(&src, &meta, &dst, &key("copy.bin"), &NoObserver).await?;
    assert_eq!(out.strategy, Strategy::Multipart { parts: 3 });
    assert_eq!(out.etag.as_deref(), Some(etag.as_str()), "the ETag was kept");
    assert!(read_all(&dst, &key("copy.bin")).await? == body, "bytes differ");
    assert!(probe.largest_part.load(Ordering::SeqCst) <= budget);
    assert_eq!(open_uploads_on(server, &bucket)?, 0);
    Ok(())
}

/// A streamed part cannot be replayed by the store's retries: the writer
/// reads its range again and resends it, so a connection reset costs one
/// part, not the object.
#[tokio::test]
async fn a_streamed_part_that_fails_is_read_and_sent_again() -> TestResult {
    let src: DynStore = Arc::new(MemoryStore::new("src").with_limits(MIB as u64, 5 << 30));
    let body = data(5 * MIB + 7, 6);
    let k = key("big.bin");
    let etag = put_multipart(&src, &k, &body, 2 * MIB).await?;
    let server = MemoryServer::new();
    let probe = Probe::new(Arc::new(server.bucket("dst").with_limits(MIB as u64, 5 << 30)));
    probe.stream_failures.store(2, Ordering::SeqCst);
    let dst: DynStore = Arc::new(probe);
    let t = Transfer::new(
        TransferOptions {
            preserve_etag: true,
            buffer_bytes: MIB as u64,
            parts_per_object: 2,
            ..small_parts()
        },
        CancellationToken::new(),
    );
    let meta = src.head(&k).await?;
    let out = t.copy(&src, &meta, &dst, &key("copy.bin"), &NoObserver).await?;
    assert_eq!(out.etag.as_deref(), Some(etag.as_str()));
    assert!(read_all(&dst, &key("copy.bin")).await? == body, "bytes differ");
    assert_eq!(server.open_uploads(), 0);
    Ok(())
}
