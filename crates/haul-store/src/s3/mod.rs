//! The S3 backend: AWS S3 and S3-compatible servers, through the official
//! AWS SDK for Rust.
//!
//! Deliberate choices (see docs/ARCHITECTURE.md):
//! * Credentials and region come from the standard AWS chain (`aws-config`):
//!   environment, shared config/credentials files and profiles, SSO,
//!   `credential_process`, IMDS; also `AWS_ENDPOINT_URL(_S3)`.
//! * The SDK's default request checksums (aws-chunked trailers, 2025) break
//!   many S3-compatible servers: for a custom endpoint haul sets checksum
//!   calculation to `WhenRequired` and sends the checksums it computes itself
//!   as plain headers (Content-MD5, optionally `x-amz-checksum-crc64nvme`).
//! * The SDK's own retries are off: the [`crate::wrap::RetryStore`] wrapper
//!   retries every backend alike, resuming listings and ranged reads.
//! * Stalled-stream protection is relaxed for server-side copies, which can
//!   take minutes before the server answers.
//!
//! Modules: `connection` (the client of one endpoint and identity), `crc`
//! (which checksums uploads carry), `list`, `get` (head, get, tags,
//! restore), `get_with` (suffix ranges and `If-Match`), `put` (one-request writes and the options every write
//! carries), `multipart`, `copy` (server-side copies), `delete`; and what
//! is learnt per connection: `conditional`, `tagging`; `error`
//! (SDK errors to [`StoreError`]), `timeouts`.

/// Applies the write options common to PutObject, CreateMultipartUpload and CopyObject.
macro_rules! apply_put_options {
    ($req:expr, $opts:expr, $with_tags:expr) => {{
        let opts: &$crate::types::PutOptions = $opts;
        let mut req = $req;
        if let Some(ct) = &opts.content_type {
            req = req.content_type(ct);
        }
        for (k, v) in &opts.metadata {
            req = req.metadata(k, v);
        }
        if let Some(m) = opts.mtime {
            if !opts.metadata.contains_key($crate::mtime::METADATA_KEY) {
                req = req.metadata($crate::mtime::METADATA_KEY, $crate::mtime::format_mtime(m));
            }
        }
        if let Some(sc) = &opts.storage_class {
            req = req.storage_class(aws_sdk_s3::types::StorageClass::from(sc.as_str()));
        }
        match &opts.sse {
            Some($crate::types::Sse::S3) => {
                req = req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Some($crate::types::Sse::Kms { key_id }) => {
                req = req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms);
                if let Some(id) = key_id {
                    req = req.ssekms_key_id(id);
                }
            }
            None => {}
        }
        if $with_tags {
            if let Some(t) = $crate::s3::put::tagging(&opts.tags) {
                req = req.tagging(t);
            }
        }
        req
    }};
}

mod conditional;
mod connection;
mod copy;
mod crc;
mod delete;
mod error;
mod get;
mod get_with;
mod list;
mod multipart;
mod part_stream;
mod put;
mod tagging;
mod timeouts;

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::{Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;
use crate::ObjectStore;

pub use connection::{ChecksumPolicy, S3Config, S3Connection};
pub use error::map_sdk_error;

/// The mtime codec's former home, kept so that callers written before it
/// moved to [`crate::mtime`] still build.
pub use crate::mtime::{format_mtime, parse_mtime};

/// One bucket on an S3 endpoint.
#[derive(Clone, Debug)]
pub struct S3Store {
    conn: S3Connection,
    bucket: String,
    caps: Capabilities,
}

fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> Option<SystemTime> {
    t.and_then(|d| SystemTime::try_from(*d).ok())
}

/// The encryption a server reports having applied, parsed once here.
fn sse_kind(s: &ServerSideEncryption) -> SseKind {
    match s {
        ServerSideEncryption::Aes256 => SseKind::S3,
        ServerSideEncryption::AwsKms => SseKind::Kms,
        other => SseKind::Other(other.as_str().to_string()),
    }
}

fn range_header(r: &Range<u64>) -> String {
    format!("bytes={}-{}", r.start, r.end - 1)
}

impl S3Store {
    fn err<E>(
        &self,
        op: Op,
        key: &str,
        e: aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    ) -> StoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut e = map_sdk_error(op, key, &self.bucket, e);
        if e.is_unreachable() {
            e.message = format!("cannot reach {}: {}", self.conn.endpoint, e.message);
        }
        e
    }

    /// Server-side work: a long attempt timeout, no stalled-stream check.
    fn no_stall(&self) -> aws_sdk_s3::config::Builder {
        timeouts::server_side(self.conn.attempt)
    }

    /// An upload of `bytes`: time to send it on top of the base.
    fn sending(&self, bytes: u64) -> aws_sdk_s3::config::Builder {
        timeouts::with_payload(self.conn.attempt, bytes)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn url(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        self.list_objects(req)
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.head_object(key).await
    }

    async fn head_part(&self, key: &Key, part_number: u32) -> Result<(u64, u32)> {
        self.head_object_part(key, part_number).await
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        self.get_object(key, range).await
    }

    async fn get_with(&self, key: &Key, opts: crate::get_with::GetOpts) -> Result<GetResult> {
        self.get_object_with(key, opts).await
    }

    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
        self.object_tags(key).await
    }

    async fn tagging_supported(&self) -> Result<bool> {
        self.probe_tagging().await
    }

    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        self.put_object(key, payload, opts).await
    }

    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        self.create_upload(key, opts).await
    }

    async fn upload_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        self.upload_part_buffer(key, upload, part_number, payload, sums).await
    }

    async fn upload_part_stream(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        size: u64,
        body: crate::types::ByteStream,
    ) -> Result<CompletedPart> {
        self.upload_part_streamed(key, upload, part_number, size, body).await
    }

    async fn upload_part_copy(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        self.copy_part(key, upload, part_number, src, range).await
    }

    async fn complete_multipart(&self, key: &Key, upload: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult> {
        self.complete_upload(key, upload, parts).await
    }

    async fn abort_multipart(&self, key: &Key, upload: &MultipartId) -> Result<()> {
        self.abort_upload(key, upload).await
    }

    async fn list_multipart_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        self.list_uploads(prefix).await
    }

    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        self.copy_object(src, dst, opts).await
    }

    async fn restore(&self, key: &Key, days: u32, tier: &str) -> Result<()> {
        self.restore_object(key, days, tier).await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        self.delete_objects(keys).await
    }
}
