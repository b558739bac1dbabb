//! An in-memory store for tests: a sorted map under a lock. Behaves like S3
//! for everything haul relies on (listing order, ETags, multipart, copy).
//!
//! Modules: `list` (paged listings in byte order), `multipart` (uploads,
//! part copies, including of virtual objects).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};

use crate::checksum::md5_hex;
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;
use crate::ObjectStore;

mod list;
mod multipart;

use multipart::Upload;

#[derive(Clone, Debug)]
struct Stored {
    data: Bytes,
    meta: ObjectMeta,
    tags: Vec<(String, String)>,
    /// Sizes of the parts, for multipart objects.
    parts: Vec<u64>,
    /// A virtual object: a size and no bytes (tests of sizes no machine
    /// should hold in memory, e.g. a part copy beyond 5 GiB).
    virtual_size: Option<u64>,
}

type Bucket = Arc<Mutex<BTreeMap<String, Stored>>>;

/// All buckets of one memory "server": stores created from the same
/// [`MemoryServer`] share a copy domain and can copy between each other.
#[derive(Debug, Default)]
pub struct MemoryServer {
    buckets: Mutex<HashMap<String, Bucket>>,
    uploads: Mutex<HashMap<String, Upload>>,
    next_id: AtomicU64,
    id: u64,
}

static SERVERS: AtomicU64 = AtomicU64::new(1);

impl MemoryServer {
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryServer {
            id: SERVERS.fetch_add(1, Ordering::Relaxed),
            ..Default::default()
        })
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        lock(&self.uploads).len()
    }

    /// A store for `bucket`, created if missing.
    pub fn bucket(self: &Arc<Self>, bucket: &str) -> MemoryStore {
        let map = lock(&self.buckets).entry(bucket.to_string()).or_default().clone();
        let mut caps = Capabilities::s3_like(bucket);
        caps.copy_domain = Some(format!("memory:{}", self.id));
        caps.upload_checksums = vec![ChecksumKind::Md5];
        MemoryStore {
            server: self.clone(),
            objects: map,
            caps,
            default_kms: false,
            default_crc64: false,
            no_tagging: false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another test thread panicked; the data is
    // still a valid map.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One bucket of a [`MemoryServer`].
#[derive(Debug, Clone)]
pub struct MemoryStore {
    server: Arc<MemoryServer>,
    objects: Bucket,
    caps: Capabilities,
    /// Encrypt every write with SSE-KMS, as a bucket with that default does.
    default_kms: bool,
    /// Keep a full-object CRC64NVME of every object, as AWS S3 does.
    default_crc64: bool,
    /// No tagging API, as on garage or R2.
    no_tagging: bool,
}

impl MemoryStore {
    /// A fresh store on its own server.
    pub fn new(bucket: &str) -> Self {
        MemoryServer::new().bucket(bucket)
    }

    /// Lowers the part-size and copy limits (to exercise multipart paths with
    /// small objects in tests).
    pub fn with_limits(mut self, min_part_size: u64, max_copy_size: u64) -> Self {
        self.caps.min_part_size = min_part_size;
        self.caps.max_copy_size = max_copy_size;
        self
    }

    /// Stores a virtual object of `size` bytes: listed, headed and copied
    /// by part copy like any other, never read.
    pub fn put_virtual(&self, key: &Key, size: u64, opts: &PutOptions) {
        let mut meta = meta_for(
            key.as_str(),
            &Bytes::new(),
            md5_hex(format!("virtual:{key}:{size}").as_bytes()),
            opts,
        );
        meta.size = size;
        lock(&self.objects).insert(
            key.as_str().to_string(),
            Stored {
                data: Bytes::new(),
                meta,
                tags: self.kept(&opts.tags),
                parts: Vec::new(),
                virtual_size: Some(size),
            },
        );
    }

    /// Behaves like a bucket whose default encryption is SSE-KMS: ETags are
    /// not MD5s, and writes report `aws:kms`.
    pub fn with_default_kms(mut self) -> Self {
        self.default_kms = true;
        self
    }

    /// Behaves like AWS S3 since 2025: every object written gets a
    /// full-object CRC64NVME (returned by `head` and `get`), and CRC64NVMEs
    /// sent with uploads are checked.
    pub fn with_default_crc64(mut self) -> Self {
        self.default_crc64 = true;
        self.caps.upload_checksums.push(ChecksumKind::Crc64Nvme);
        self
    }

    /// Behaves like a server without the tagging API (garage, R2):
    /// `get_tags` answers 501 NotImplemented and tags sent with writes are
    /// dropped. The capabilities still claim tags, as an S3 endpoint's do.
    pub fn without_tagging(mut self) -> Self {
        self.no_tagging = true;
        self
    }

    /// The tags a write keeps.
    fn kept(&self, tags: &[(String, String)]) -> Vec<(String, String)> {
        if self.no_tagging {
            Vec::new()
        } else {
            tags.to_vec()
        }
    }

    /// The full-object CRC64NVME kept for `data`, when this bucket keeps one.
    fn crc64_of(&self, data: &[u8]) -> Option<String> {
        self.default_crc64
            .then(|| crate::checksum::crc64_to_b64(crate::checksum::crc64(data)))
    }

    fn kms(&self, opts: &PutOptions) -> bool {
        self.default_kms || matches!(opts.sse, Some(Sse::Kms { .. }))
    }

    /// The ETag S3 gives under SSE-KMS: opaque, not the MD5 of the data.
    fn kms_etag(md5: &str) -> String {
        md5_hex(format!("kms:{md5}").as_bytes())
    }

    fn sse_of(kms: bool) -> Option<SseKind> {
        kms.then_some(SseKind::Kms)
    }

    fn not_found(op: Op, key: &str) -> StoreError {
        StoreError::new(op, key, ErrorKind::NotFound, "no such key").with_code("NoSuchKey")
    }

    fn find_bucket(&self, bucket: &str) -> Result<Bucket> {
        lock(&self.server.buckets)
            .get(bucket)
            .cloned()
            .ok_or_else(|| StoreError::new(Op::Copy, bucket, ErrorKind::NoSuchBucket, "no such bucket"))
    }
}

fn meta_for(key: &str, data: &Bytes, etag: String, opts: &PutOptions) -> ObjectMeta {
    let mut metadata = opts.metadata.clone();
    if let Some(m) = opts.mtime {
        metadata.insert(crate::mtime::METADATA_KEY.into(), crate::mtime::format_mtime(m));
    }
    ObjectMeta {
        key: Key::prefix(key).unwrap_or_else(|_| Key::root()),
        size: data.len() as u64,
        last_modified: Some(SystemTime::now()),
        etag: Some(etag),
        storage_class: Some(opts.storage_class.clone().unwrap_or_else(|| "STANDARD".into())),
        checksums: Checksums::default(),
        parts_count: None,
        content_type: Some(
            opts.content_type
                .clone()
                .unwrap_or_else(|| "binary/octet-stream".into()),
        ),
        metadata,
        sse: opts.sse.as_ref().map(SseKind::from),
        restore: None,
        version_id: None,
    }
}

fn check_md5(op: Op, key: &str, data: &[u8], given: Option<&str>) -> Result<String> {
    let got = md5_hex(data);
    match given {
        Some(g) if g != got => Err(StoreError::new(
            op,
            key,
            ErrorKind::Integrity,
            format!("Content-MD5 {g} does not match the payload ({got})"),
        )
        .with_code("BadDigest")),
        _ => Ok(got),
    }
}

fn list_meta(s: &Stored) -> ObjectMeta {
    ObjectMeta {
        content_type: None,
        metadata: BTreeMap::new(),
        sse: None,
        ..s.meta.clone()
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn url(&self) -> String {
        format!("memory://{}", self.caps.bucket)
    }

    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        list::list(self.objects.clone(), req)
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let map = lock(&self.objects);
        let s = map
            .get(key.as_str())
            .ok_or_else(|| Self::not_found(Op::Head, key.as_str()))?;
        Ok(s.meta.clone())
    }

    async fn head_part(&self, key: &Key, part_number: u32) -> Result<(u64, u32)> {
        let map = lock(&self.objects);
        let s = map
            .get(key.as_str())
            .ok_or_else(|| Self::not_found(Op::Head, key.as_str()))?;
        if s.parts.is_empty() {
            return Ok((s.meta.size, 1));
        }
        let size = s
            .parts
            .get(part_number as usize - 1)
            .copied()
            .ok_or_else(|| StoreError::new(Op::Head, key.as_str(), ErrorKind::InvalidRequest, "no such part"))?;
        Ok((size, s.parts.len() as u32))
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        let s = lock(&self.objects)
            .get(key.as_str())
            .cloned()
            .ok_or_else(|| Self::not_found(Op::Get, key.as_str()))?;
        if s.virtual_size.is_some() {
            return Err(StoreError::new(
                Op::Get,
                key.as_str(),
                ErrorKind::NotSupported,
                "a virtual object has no bytes to read",
            ));
        }
        let len = s.data.len() as u64;
        let r = range.unwrap_or(0..len);
        if r.start > r.end || r.end > len {
            return Err(StoreError::new(
                Op::Get,
                key.as_str(),
                ErrorKind::InvalidRequest,
                format!("range {r:?} outside object of {len} bytes"),
            ));
        }
        let body = s.data.slice(r.start as usize..r.end as usize);
        Ok(GetResult {
            meta: s.meta.clone(),
            range: r,
            body: stream::once(async move { Ok(body) }).boxed(),
        })
    }

    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
        if self.no_tagging {
            return Err(StoreError::new(
                Op::GetTags,
                key.as_str(),
                ErrorKind::NotSupported,
                "NotImplemented (501): GetObjectTagging",
            )
            .with_code("NotImplemented"));
        }
        let map = lock(&self.objects);
        let s = map
            .get(key.as_str())
            .ok_or_else(|| Self::not_found(Op::GetTags, key.as_str()))?;
        Ok(s.tags.clone())
    }

    async fn tagging_supported(&self) -> Result<bool> {
        Ok(!self.no_tagging)
    }

    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        if opts.if_none_match && lock(&self.objects).contains_key(key.as_str()) {
            return Err(StoreError::new(
                Op::Put,
                key.as_str(),
                ErrorKind::PreconditionFailed,
                "If-None-Match: the key exists",
            ));
        }
        let mut etag = check_md5(Op::Put, key.as_str(), &payload, opts.checksums.md5_hex.as_deref())?;
        crate::checksum::check_crc64(Op::Put, key.as_str(), &payload, opts.checksums.crc64nvme.as_deref())?;
        let kms = self.kms(opts);
        if kms {
            etag = Self::kms_etag(&etag);
        }
        let mut meta = meta_for(key.as_str(), &payload, etag.clone(), opts);
        meta.sse = meta.sse.or(Self::sse_of(kms));
        meta.checksums.crc64nvme = self.crc64_of(&payload);
        let checksums = meta.checksums.clone();
        lock(&self.objects).insert(
            key.as_str().to_string(),
            Stored {
                data: payload,
                meta,
                tags: self.kept(&opts.tags),
                parts: Vec::new(),
                virtual_size: None,
            },
        );
        Ok(PutResult {
            etag: Some(etag),
            checksums,
            sse: Self::sse_of(kms),
        })
    }

    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        self.create_upload(key, opts)
    }

    async fn upload_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        self.upload_part_buffer(key, upload, part_number, payload, sums)
    }

    /// Collects the stream (the store keeps every byte in memory anyway)
    /// and takes it as a part sent without checksums.
    async fn upload_part_stream(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        size: u64,
        mut body: ByteStream,
    ) -> Result<CompletedPart> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        if buf.len() as u64 != size {
            return Err(StoreError::new(
                Op::UploadPart,
                key.as_str(),
                ErrorKind::PreconditionFailed,
                format!("part {part_number}: {} bytes arrived, {size} expected", buf.len()),
            ));
        }
        self.upload_part(key, upload, part_number, buf.freeze(), &Checksums::default())
            .await
    }

    async fn upload_part_copy(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        self.copy_part(key, upload, part_number, src, range)
    }

    async fn complete_multipart(&self, key: &Key, upload: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult> {
        self.complete_upload(key, upload, parts)
    }

    async fn abort_multipart(&self, _key: &Key, upload: &MultipartId) -> Result<()> {
        lock(&self.server.uploads).remove(&upload.0);
        Ok(())
    }

    async fn list_multipart_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        Ok(self.pending_uploads(prefix))
    }

    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        let bucket = self.find_bucket(&src.bucket)?;
        let s = lock(&bucket)
            .get(src.key.as_str())
            .cloned()
            .ok_or_else(|| Self::not_found(Op::Copy, src.key.as_str()))?;
        if s.meta.size > self.caps.max_copy_size {
            return Err(StoreError::new(
                Op::Copy,
                dst.as_str(),
                ErrorKind::InvalidRequest,
                "source larger than the maximum allowed size for a single copy",
            )
            .with_code("InvalidRequest"));
        }
        if let Some(m) = &src.if_match {
            if s.meta.etag.as_deref() != Some(m.as_str()) {
                return Err(StoreError::new(
                    Op::Copy,
                    src.key.as_str(),
                    ErrorKind::PreconditionFailed,
                    "source changed",
                ));
            }
        }
        // A copied object is a single-part object: its ETag is the MD5
        // (unless it is encrypted with SSE-KMS).
        let kms = self.kms(&opts.put);
        let etag = if kms {
            Self::kms_etag(&md5_hex(&s.data))
        } else {
            md5_hex(&s.data)
        };
        let mut meta = s.meta.clone();
        let mut tags = self.kept(&s.tags);
        meta.key = dst.clone();
        meta.etag = Some(etag.clone());
        meta.parts_count = None;
        meta.last_modified = Some(SystemTime::now());
        if opts.directive == MetadataDirective::Replace {
            let m = meta_for(dst.as_str(), &s.data, etag.clone(), &opts.put);
            meta.content_type = m.content_type;
            meta.metadata = m.metadata;
            tags = self.kept(&opts.put.tags);
        }
        if let Some(sc) = &opts.put.storage_class {
            meta.storage_class = Some(sc.clone());
        }
        meta.sse = Self::sse_of(kms);
        lock(&self.objects).insert(
            dst.as_str().to_string(),
            Stored {
                data: s.data,
                meta,
                tags,
                parts: Vec::new(),
                virtual_size: s.virtual_size,
            },
        );
        Ok(PutResult {
            etag: Some(etag),
            checksums: Checksums::default(),
            sse: Self::sse_of(kms),
        })
    }

    async fn restore(&self, key: &Key, days: u32, _tier: &str) -> Result<()> {
        let mut map = lock(&self.objects);
        let s = map
            .get_mut(key.as_str())
            .ok_or_else(|| Self::not_found(Op::Restore, key.as_str()))?;
        if !s.meta.is_archived() {
            return Err(StoreError::new(
                Op::Restore,
                key.as_str(),
                ErrorKind::InvalidRequest,
                "the object is not in an archive storage class",
            )
            .with_code("InvalidObjectState"));
        }
        // The memory "archive" restores at once.
        s.meta.restore = Some(format!("ongoing-request=\"false\", expiry-date=\"in {days} days\""));
        Ok(())
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        let mut map = lock(&self.objects);
        for k in keys {
            map.remove(k.as_str());
        }
        Ok(Vec::new())
    }
}
