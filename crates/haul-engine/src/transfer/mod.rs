//! Moving one object from a store to another, verified.
//!
//! The strategy comes from the two stores' [`Capabilities`]:
//!
//! | case | strategy |
//! |---|---|
//! | same copy domain, size ≤ max copy | [`Strategy::ServerCopy`] (CopyObject) |
//! | same copy domain, larger | [`Strategy::ServerPartCopy`] (UploadPartCopy ranges) |
//! | otherwise, size < multipart threshold | [`Strategy::Single`] (GET → PUT) |
//! | otherwise | [`Strategy::Multipart`] (ranged GETs → parts, in parallel) |
//!
//! Multipart copies reuse the source's part layout when it can be learned
//! (`HeadObject?partNumber=1`), which keeps the destination ETag equal to the
//! source's and lets the source ETag be checked for free.
//!
//! Verification: every upload carries Content-MD5; the ETag returned must be
//! the MD5 (single part) or the MD5 of the part MD5s with `-N` (multipart);
//! data read from a source with an MD5 ETag is checked against it; a local
//! source that changed while it was read is an error. A mismatch is an error.

mod body;
mod download;
mod meta;
mod multipart;
mod part;
mod repair;
mod server;
mod single;
mod stream;
mod verify;
mod writer;

pub use writer::{Finished, Limits, MultipartWriter, PartBody, PartChecks, PartsSent};

use std::sync::Arc;

use haul_store::checksum::etag_is_plain_md5;
use haul_store::{DynStore, ErrorKind, Key, MetadataDirective, ObjectMeta, Op, PutOptions, StoreError};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use meta::{guess_content_type, mtime_of};

use crate::budget::ByteBudget;
use crate::integrity::check_unchanged;
use crate::report::Observer;
use crate::tags::Notices;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How an object was moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    ServerCopy,
    ServerPartCopy { parts: u32 },
    Single,
    Multipart { parts: u32 },
}

/// What the arrival was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verified {
    /// The destination ETag equals the MD5 (or multipart ETag) haul computed.
    Etag,
    /// ...and it also equals the source's ETag.
    SourceEtag,
    /// The server checked Content-MD5 of every request; its ETag is not an
    /// MD5 (SSE-KMS), so size was checked on top.
    ServerChecked,
    /// The data read has the source's full-object CRC64NVME (combined from
    /// the parts' CRCs before the destination was completed).
    SourceChecksum,
    /// The destination's CRC64NVME equals the one of the data sent, and the
    /// server confirmed it checked the CRC of every request (no MD5
    /// computed).
    DestChecksum,
}

/// The result of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub strategy: Strategy,
    pub verified: Verified,
    pub bytes: u64,
    pub etag: Option<String>,
    /// The bytes read from a (remote) source could not be checked against
    /// anything it declares: its ETag is not an MD5 and it has no
    /// full-object checksum or readable part layout. The arrival is still
    /// checked against what was sent.
    pub unverified: bool,
}

/// Options of a transfer, the same for every object of a job.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Objects of this size or more go multipart.
    pub multipart_threshold: u64,
    /// Part size when the source's layout is not reused.
    pub part_size: u64,
    /// Parts of one object in flight.
    pub parts_per_object: usize,
    /// Parts in flight across the whole job.
    pub parts_total: usize,
    /// Bytes buffered across the whole job.
    pub buffer_bytes: u64,
    /// Metadata handling: keep the source's (Copy) or use these (Replace).
    pub directive: MetadataDirective,
    /// Set on every destination object: content-type override, extra user
    /// metadata, storage class, SSE, tags.
    pub put: PutOptions,
    /// Allow server-side copies when both stores share a copy domain.
    pub server_side: bool,
    /// Keep the source's ETag: single-part sources are written in one
    /// request, multipart sources part by part with the source's layout;
    /// an object whose ETag cannot be reproduced fails (and is reported).
    pub preserve_etag: bool,
    /// Fail an object whose tags cannot be carried over (a server without
    /// the tagging API) instead of copying it without them.
    pub require_tags: bool,
    /// Fail (before anything is written) an object whose source bytes
    /// cannot be checked, instead of counting it as unverified.
    pub require_verified: bool,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            multipart_threshold: 16 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            parts_per_object: 8,
            parts_total: 32,
            buffer_bytes: 512 * 1024 * 1024,
            directive: MetadataDirective::Copy,
            put: PutOptions::default(),
            server_side: true,
            preserve_etag: false,
            require_tags: false,
            require_verified: false,
        }
    }
}

/// Moves objects between stores with bounded memory; shared by all tasks of a job.
#[derive(Debug, Clone)]
pub struct Transfer {
    opts: Arc<TransferOptions>,
    budget: ByteBudget,
    parts: Arc<Semaphore>,
    cancel: CancellationToken,
    notices: Arc<Notices>,
}

fn err(op: Op, key: &Key, kind: ErrorKind, msg: impl Into<String>) -> StoreError {
    StoreError::new(op, key.as_str(), kind, msg)
}

fn cancelled(key: &Key) -> StoreError {
    err(Op::Put, key, ErrorKind::Other, "cancelled").with_code("Cancelled")
}

impl Transfer {
    pub fn new(opts: TransferOptions, cancel: CancellationToken) -> Self {
        Transfer {
            budget: ByteBudget::new(opts.buffer_bytes),
            parts: Arc::new(Semaphore::new(opts.parts_total.max(1))),
            opts: Arc::new(opts),
            cancel,
            notices: Arc::new(Notices::default()),
        }
    }

    /// The limits a [`MultipartWriter`] of this transfer draws from.
    pub fn limits(&self) -> Limits {
        Limits {
            budget: self.budget.clone(),
            parts_total: self.parts.clone(),
            parts_per_object: self.opts.parts_per_object,
            cancel: self.cancel.clone(),
        }
    }

    /// Starts a multipart upload of `key` in `dst`, within this transfer's
    /// limits and cancelled with it.
    pub async fn multipart_writer<'a>(
        &self,
        dst: &DynStore,
        key: &Key,
        put: PutOptions,
        checks: PartChecks,
    ) -> Result<MultipartWriter<'a>> {
        MultipartWriter::create(dst, key, put, checks, self.limits()).await
    }

    /// The options this transfer was made with.
    pub fn options(&self) -> &TransferOptions {
        &self.opts
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The strategy for an object from `src` to `dst`.
    pub fn strategy(&self, src: &DynStore, dst: &DynStore, meta: &ObjectMeta) -> Strategy {
        let (s, d) = (src.capabilities(), dst.capabilities());
        let size = meta.size;
        let same_domain = s.copy_domain.is_some() && s.copy_domain == d.copy_domain;
        // To keep an ETag, a multipart source is copied part by part and a
        // single-part one in one request.
        let keep_parts = self.opts.preserve_etag && meta.etag_parts().is_some();
        let keep_single = self.opts.preserve_etag && meta.etag.as_deref().is_some_and(etag_is_plain_md5);
        if self.opts.server_side && same_domain {
            if size <= d.max_copy_size && !keep_parts {
                Strategy::ServerCopy
            } else {
                Strategy::ServerPartCopy { parts: 0 }
            }
        } else if keep_parts {
            Strategy::Multipart { parts: 0 }
        } else if (size < self.opts.multipart_threshold.max(1) || keep_single) && size <= d.max_put_size {
            Strategy::Single
        } else {
            Strategy::Multipart { parts: 0 }
        }
    }

    /// What this transfer could not do for every object (said once each).
    pub fn notices(&self) -> Vec<String> {
        self.notices.list()
    }

    /// Copies one object (listed as `meta`) from `src` to `dst_key` in `dst`, verified.
    pub async fn copy(
        &self,
        src: &DynStore,
        meta: &ObjectMeta,
        dst: &DynStore,
        dst_key: &Key,
        obs: &dyn Observer,
    ) -> Result<Outcome> {
        if self.cancel.is_cancelled() {
            return Err(cancelled(dst_key));
        }
        // Streamed copies check a local source before the destination is
        // written or completed; a server-side copy (which reads the file
        // itself, checking it did not change while read) after.
        let out = match self.strategy(src, dst, meta) {
            Strategy::ServerCopy => self.server_copy(src, meta, dst, dst_key, obs).await?,
            Strategy::ServerPartCopy { .. } => self.server_part_copy(src, meta, dst, dst_key, obs).await?,
            Strategy::Single => {
                return self
                    .single(src, meta, dst, dst_key, obs)
                    .await
                    .and_then(|o| self.kept_etag(meta, dst_key, o))
            }
            Strategy::Multipart { .. } => {
                return self
                    .multipart(src, meta, dst, dst_key, obs)
                    .await
                    .and_then(|o| self.kept_etag(meta, dst_key, o))
            }
        };
        if src.capabilities().source_may_change {
            check_unchanged(src, meta).await?;
        }
        self.kept_etag(meta, dst_key, out)
    }
}
