//! # haul-store
//!
//! The store contract of haul: one small async trait, [`ObjectStore`], that
//! every backend implements (S3 and S3-compatible servers, a local directory
//! acting as a bucket, memory for tests), and wrapper stores that add
//! cross-cutting behaviour to any store (retries with backoff, an adaptive
//! concurrency limit, fault injection).
//!
//! The trait speaks only this crate's plain types — never AWS SDK types — so
//! the engine above it is the same for every backend. What a backend *can* do
//! (server-side copy, part copy, checksum kinds) is data in
//! [`Capabilities`], which the engine reads to pick a strategy.

pub mod checksum;
mod direct;
pub mod error;
pub mod get_with;
pub mod key;
pub mod local;
pub mod location;
pub mod memory;
pub mod mtime;
pub mod s3;
mod tmpdir;
pub mod types;
pub mod wrap;

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use error::{ErrorKind, Op, Result, StoreError};
pub use get_with::{GetOpts, ReadRange};
pub use key::{Key, KeyRange};
pub use types::*;

/// A shared, dynamically dispatched store.
pub type DynStore = Arc<dyn ObjectStore>;

/// One bucket (or local root) of one backend.
///
/// Every method takes keys relative to the bucket. Listings are streams in
/// byte order, so two listings can be merged in lock step and a key space can
/// be cut into shards with [`KeyRange`].
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug + 'static {
    /// What this store can do.
    fn capabilities(&self) -> &Capabilities;

    /// A human-readable URL of the bucket, e.g. `s3://bucket` or `file:///data`.
    fn url(&self) -> String;

    /// Lists objects (and common prefixes when a delimiter is set) in byte order.
    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>>;

    /// Metadata of one object, including content-type and user metadata.
    async fn head(&self, key: &Key) -> Result<ObjectMeta>;

    /// The size of part `part_number` of a multipart object and the number of
    /// parts, when the backend can tell (S3 `HeadObject?partNumber=`).
    async fn head_part(&self, key: &Key, part_number: u32) -> Result<(u64, u32)> {
        let _ = part_number;
        Err(StoreError::new(
            Op::Head,
            key.as_str(),
            ErrorKind::NotSupported,
            "part layout is not available from this store",
        ))
    }

    /// Reads an object, or a byte range of it, as a stream.
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult>;

    /// Reads with options: a bounded or suffix range, and `If-Match` (the
    /// object must still have this ETag: else a
    /// [`ErrorKind::PreconditionFailed`] error). The provided version does
    /// a suffix as HEAD + ranged `get` and checks the ETag on the answer
    /// ([`get_with::by_head_and_get`]); S3 sends the real headers.
    async fn get_with(&self, key: &Key, opts: GetOpts) -> Result<GetResult> {
        get_with::by_head_and_get(self, key, opts).await
    }

    /// The object's tags.
    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>>;

    /// Whether the server keeps object tags (GetObjectTagging, PutObject's
    /// `x-amz-tagging`). [`Capabilities::tags`] says what the backend can
    /// do in principle; S3-compatible servers that lack the API (garage,
    /// Cloudflare R2) answer `501 NotImplemented`, which an S3 store learns
    /// once per connection. The default trusts the capabilities.
    async fn tagging_supported(&self) -> Result<bool> {
        Ok(self.capabilities().tags)
    }

    /// Writes an object in one request.
    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult>;

    /// Starts a multipart upload.
    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId>;

    /// Uploads one part (numbered from 1). The checksums given go with it
    /// for the server to check: `md5_hex` as Content-MD5, `crc64nvme` as
    /// `x-amz-checksum-crc64nvme` (uploads created with
    /// [`PutOptions::full_object_crc64`]). A part sent with neither is hashed
    /// by a local store, which returns its MD5 as the part's ETag.
    async fn upload_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart>;

    /// Uploads part `part_number` from a stream of exactly `size` bytes,
    /// written as the chunks arrive: no part-sized buffer. Stores that write
    /// in place (a local directory: [`Capabilities::streams_parts`]) hash
    /// what they write and return its CRC64NVME in `checksums` and its MD5
    /// as the ETag (empty when the upload was given the object's ETag,
    /// [`PutOptions::etag`]). S3 sends the part unsigned, without a
    /// checksum known in advance (the caller hashes what it streams and
    /// checks the part's ETag); the memory store collects it.
    async fn upload_part_stream(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        size: u64,
        body: ByteStream,
    ) -> Result<CompletedPart> {
        let _ = (upload, part_number, size, body);
        Err(StoreError::new(
            Op::UploadPart,
            key.as_str(),
            ErrorKind::NotSupported,
            "this store takes parts as whole buffers",
        ))
    }

    /// Copies a byte range of another object into a part, server-side.
    async fn upload_part_copy(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart>;

    /// Completes a multipart upload from its parts, in order.
    async fn complete_multipart(&self, key: &Key, upload: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult>;

    /// Aborts a multipart upload and frees its parts.
    async fn abort_multipart(&self, key: &Key, upload: &MultipartId) -> Result<()>;

    /// The multipart uploads in progress (created, neither completed nor
    /// aborted) whose key starts with `prefix`, as `(key, upload)` pairs in
    /// key order (S3: ListMultipartUploads, every page). What an
    /// interrupted writer left behind, for the next one to abort.
    async fn list_multipart_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        Err(StoreError::new(
            Op::List,
            prefix.as_str(),
            ErrorKind::NotSupported,
            "this store cannot list its multipart uploads",
        ))
    }

    /// Copies an object server-side (up to `max_copy_size`).
    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult>;

    /// Asks for a temporary copy of an archived object (GLACIER,
    /// DEEP_ARCHIVE) for `days` days, at `tier` (Bulk, Standard, Expedited).
    async fn restore(&self, key: &Key, days: u32, tier: &str) -> Result<()> {
        let _ = (days, tier);
        Err(StoreError::new(
            Op::Restore,
            key.as_str(),
            ErrorKind::NotSupported,
            "this store has no archive tier to restore from",
        ))
    }

    /// Deletes up to 1000 keys; returns the keys that could not be deleted.
    /// Deleting a missing key is not an error.
    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>>;
}
