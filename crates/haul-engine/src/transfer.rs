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

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt, TryStreamExt};
use haul_store::checksum::{
    crc64 as crc64_of, crc64_of_parts, crc64_to_b64, etag_is_plain_md5, multipart_etag, Hasher,
};
use haul_store::{
    ChecksumKind, CompletedPart, CopyOptions, CopySource, DynStore, ErrorKind, GetResult, Key, MetadataDirective,
    MultipartId, ObjectMeta, Op, PutOptions, SseKind, StoreError,
};
use md5::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::budget::ByteBudget;
use crate::integrity::{self, check_unchanged};
use crate::report::Observer;
use crate::tags::{explicit_tags, tags_to_set, Notices};

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

/// Whether ETags written to `dst` with these options are MD5s. `applied` is
/// the encryption the server reports having used: a bucket can default to
/// SSE-KMS without being asked, and then ETags are not MD5s.
fn etag_is_md5(dst: &DynStore, put: &PutOptions, applied: Option<&SseKind>) -> bool {
    dst.capabilities().etag_is_md5
        && !matches!(put.sse, Some(haul_store::Sse::Kms { .. }))
        && applied != Some(&SseKind::Kms)
}

/// The source's ETag as the MD5 of its content, when it is one.
fn source_md5(meta: &ObjectMeta) -> Option<&str> {
    let kms = meta.sse == Some(SseKind::Kms);
    meta.etag.as_deref().filter(|e| !kms && etag_is_plain_md5(e))
}

/// Checks a part's ETag against the MD5 of the data sent, when the ETag is an MD5.
fn check_part(dst: &DynStore, put: &PutOptions, key: &Key, part: &CompletedPart, md5: &str) -> Result<()> {
    if etag_is_md5(dst, put, part.sse.as_ref()) && part.etag != md5 {
        return Err(err(
            Op::UploadPart,
            key,
            ErrorKind::Integrity,
            format!(
                "part {} ETag {} does not match the data sent ({md5})",
                part.part_number, part.etag
            ),
        ));
    }
    Ok(())
}

/// Reads a whole body into one buffer, checking that it holds the `want`
/// bytes asked for — whatever length the answer announced.
async fn collect(g: GetResult, want: u64, key: &Key, obs: &dyn Observer) -> Result<Bytes> {
    let mut body = g.body;
    let mut buf: Option<BytesMut> = None;
    let mut first: Option<Bytes> = None;
    while let Some(chunk) = body.try_next().await? {
        obs.bytes(chunk.len() as u64);
        match (&mut buf, first.take()) {
            (None, None) => first = Some(chunk),
            (None, Some(f)) => {
                let mut b = BytesMut::with_capacity(want as usize);
                b.extend_from_slice(&f);
                b.extend_from_slice(&chunk);
                buf = Some(b);
            }
            (Some(b), _) => b.extend_from_slice(&chunk),
        }
    }
    let data = match (buf, first) {
        (Some(b), _) => b.freeze(),
        (None, Some(f)) => f,
        (None, None) => Bytes::new(),
    };
    if data.len() as u64 != want {
        return Err(err(
            Op::Get,
            key,
            ErrorKind::PreconditionFailed,
            format!(
                "read {} bytes, expected {want}: the source changed or was truncated",
                data.len()
            ),
        ));
    }
    Ok(data)
}

/// The MD5 and/or CRC64NVME of a buffer, off the async threads when it is big.
async fn sums_of(data: Bytes, md5: bool, crc64: bool) -> haul_store::Checksums {
    if !md5 && !crc64 {
        return haul_store::Checksums::default();
    }
    let big = data.len() > 256 * 1024;
    let run = move || {
        if md5 {
            let mut h = Hasher::new(false, crc64);
            h.update(&data);
            h.finish()
        } else {
            haul_store::Checksums {
                crc64nvme: Some(crc64_to_b64(crc64_of(&data))),
                ..Default::default()
            }
        }
    };
    if big {
        // A failed hashing thread leaves no checksum, which fails verification.
        tokio::task::spawn_blocking(run).await.unwrap_or_default()
    } else {
        run()
    }
}

async fn md5_of(data: Bytes) -> String {
    sums_of(data, true, false).await.md5_hex.unwrap_or_default()
}

/// How the parts of a multipart copy are hashed.
#[derive(Debug, Clone, Copy)]
struct PartHashing {
    /// The destination hashes what it writes (a local directory): no MD5
    /// here, its part ETag is the MD5.
    dst_hashes: bool,
    /// The destination checks each part's CRC64NVME and says so: no MD5
    /// here. A part whose CRC it does not confirm was protected by the
    /// store's own Content-MD5, or is sent again with its MD5.
    dst_checks_crc: bool,
    /// Each part's CRC64NVME is computed: to check the source's full-object
    /// CRC64NVME, and/or for a destination keeping one.
    crc64: bool,
    /// The destination is given only the CRC64NVME and the object's ETag
    /// (checked against the source's CRC64NVME): no MD5 anywhere.
    crc_only: bool,
}

/// What the parts of a multipart copy produced.
struct PartsDone {
    parts: Vec<CompletedPart>,
    /// The MD5 of every part (empty when `crc_only`).
    md5s: Vec<String>,
    /// The full-object CRC64NVME, combined from the parts' CRCs.
    crc64: Option<u64>,
    /// The MD5 of the whole object, when asked for.
    whole_md5: Option<String>,
}

/// Guesses a content type from the key's extension.
pub fn guess_content_type(key: &str) -> String {
    mime_guess::from_path(key)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

/// Aborts the upload when a step after its creation fails.
async fn or_abort<T>(dst: &DynStore, key: &Key, upload: &MultipartId, r: Result<T>) -> Result<T> {
    if r.is_err() {
        abort(dst, key, upload).await;
    }
    r
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

    /// The options for the destination object, from the source's metadata.
    fn dest_options(
        &self,
        src: &DynStore,
        dst: &DynStore,
        full: &ObjectMeta,
        tags: Vec<(String, String)>,
    ) -> PutOptions {
        let o = &self.opts.put;
        let src_mtime = src.capabilities().keeps_mtime;
        let dst_mtime = dst.capabilities().keeps_mtime;
        let mut put = PutOptions {
            storage_class: o.storage_class.clone(),
            sse: o.sse.clone(),
            if_none_match: o.if_none_match,
            ..Default::default()
        };
        let guessed = || guess_content_type(full.key.as_str());
        match self.opts.directive {
            MetadataDirective::Copy => {
                put.content_type = o
                    .content_type
                    .clone()
                    .or_else(|| full.content_type.clone())
                    .or_else(|| Some(guessed()));
                put.metadata = full.metadata.clone();
                put.metadata.extend(o.metadata.clone());
                put.tags = tags;
            }
            MetadataDirective::Replace => {
                put.content_type = o.content_type.clone().or_else(|| Some(guessed()));
                put.metadata = o.metadata.clone();
                put.tags = tags;
            }
        }
        // Keep modification times across the filesystem boundary.
        if src_mtime || dst_mtime {
            put.mtime = mtime_of(full);
        }
        if dst_mtime {
            put.metadata.remove(haul_store::mtime::METADATA_KEY);
        }
        put
    }

    /// The tags to set on the copy (explicit, or the source's): see [`crate::tags`].
    async fn source_tags(&self, src: &DynStore, dst: &DynStore, key: &Key) -> Result<Vec<(String, String)>> {
        tags_to_set(&self.opts, &self.notices, src, dst, key).await
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

    /// With `--preserve-etag`: fails an object whose ETag came out different.
    fn kept_etag(&self, meta: &ObjectMeta, dst_key: &Key, out: Outcome) -> Result<Outcome> {
        if self.opts.preserve_etag && meta.etag.is_some() && out.etag != meta.etag {
            // The data is verified; only its layout differs: not retried.
            return Err(err(
                Op::Verify,
                dst_key,
                ErrorKind::NotSupported,
                format!(
                    "could not keep the ETag: the copy has {}, the source {} (its part layout could not be determined)",
                    out.etag.as_deref().unwrap_or("none"),
                    meta.etag.as_deref().unwrap_or_default()
                ),
            )
            .with_code("EtagNotPreserved"));
        }
        Ok(out)
    }

    async fn single(
        &self,
        src: &DynStore,
        meta: &ObjectMeta,
        dst: &DynStore,
        dst_key: &Key,
        obs: &dyn Observer,
    ) -> Result<Outcome> {
        let _permit = self.budget.acquire(meta.size).await;
        // Before the GET: its request slot is held until the body is read.
        let tags = self.source_tags(src, dst, &meta.key).await?;
        let g = src.get(&meta.key, None).await?;
        let full = g.meta.clone();
        if g.range.end != meta.size {
            let got = g.range.end;
            drop(g);
            // An answer garbled on the way, or a source really replaced:
            // ask again. Only a source that changed fails for good.
            let changed = src.head(&meta.key).await.map_or(true, |h| h.size != meta.size);
            return Err(err(
                Op::Get,
                &meta.key,
                if changed {
                    ErrorKind::PreconditionFailed
                } else {
                    ErrorKind::Transient
                },
                format!("the source changed: {} bytes now, {} when listed", got, meta.size),
            ));
        }
        let data = collect(g, meta.size, &meta.key, obs).await?;
        if src.capabilities().source_may_change {
            // Before anything replaces the destination.
            check_unchanged(src, meta).await?;
        }
        let src_local = src.capabilities().local_reads;
        let crc64 = dst.capabilities().upload_checksums.contains(&ChecksumKind::Crc64Nvme);
        // A local destination hashes what it writes and returns the MD5 as
        // its ETag: no second pass here.
        let local_dst = dst.capabilities().hashes_writes && !crc64;
        // Into a store that keeps CRC64NVMEs, with no source MD5 to compare,
        // the CRC goes alone (the store protects the payload with an MD5 of
        // its own while it does not know whether the server checks CRCs).
        let crc_only = crc64 && !local_dst && source_md5(&full).is_none();
        // The source's MD5, when known, goes as Content-MD5: the store refuses
        // data that does not match before anything replaces the destination.
        let sums = if local_dst {
            haul_store::Checksums {
                md5_hex: source_md5(&full).map(str::to_string),
                ..Default::default()
            }
        } else {
            sums_of(data.clone(), !crc_only, crc64).await
        };
        let mut verified = Verified::Etag;
        // A source whose ETag is not an MD5: its full-object checksum, else
        // its multipart ETag recomputed, before anything is written.
        let mut unverified = false;
        let mut whole_checked = None;
        if source_md5(&full).is_none() {
            match integrity::check_whole(src, &full, &data).await? {
                Some(how) => {
                    verified = how;
                    whole_checked = Some(how);
                }
                None if src_local => {}
                None if self.opts.require_verified => return Err(integrity::unverified(&full)),
                None => unverified = true,
            }
        }
        // Checked before anything is written (a local destination checks
        // the source's MD5 it was given as Content-MD5 itself).
        if let (Some(src_md5), Some(md5)) = (source_md5(&full), sums.md5_hex.as_deref()) {
            if src_md5 != md5 {
                return Err(err(
                    Op::Get,
                    &meta.key,
                    ErrorKind::Integrity,
                    format!("data read does not match the source ETag (read MD5 {md5}, ETag {src_md5})"),
                ));
            }
            verified = Verified::SourceEtag;
        }
        let mut put = self.dest_options(src, dst, &full, tags);
        put.checksums = sums;
        let mut res = dst.put(dst_key, data.clone(), &put).await?;
        let crc_confirmed = matches!(
            (put.checksums.full_crc64(), res.checksums.full_crc64()),
            (Some(sent), Some(got)) if sent == got
        );
        if crc_only && !crc_confirmed {
            match res.checksums.md5_hex.take() {
                // The store sent an MD5 of its own as Content-MD5: the server
                // checked it; the ETag is checked against it below.
                Some(own) => put.checksums.md5_hex = Some(own),
                // Nothing checked the payload: it goes again with its MD5.
                None => {
                    put.checksums.md5_hex = Some(md5_of(data.clone()).await);
                    // The key holds the first write of these bytes: replaced.
                    put.if_none_match = false;
                    res = dst.put(dst_key, data, &put).await?;
                }
            }
        }
        let md5 = match (&put.checksums.md5_hex, &res.etag) {
            (Some(m), _) => Some(m.clone()),
            (None, Some(e)) if local_dst => Some(e.clone()),
            // The server's CRC64NVME of what it stored is the data's.
            _ if crc_confirmed => None,
            _ => Some(String::new()),
        };
        let v = self
            .check_written(dst, dst_key, &put, &res, md5.as_deref(), meta.size)
            .await?;
        Ok(Outcome {
            strategy: Strategy::Single,
            verified: match (v, whole_checked) {
                (Verified::Etag, _) => verified,
                (_, Some(how)) => how,
                (v, None) => v,
            },
            bytes: meta.size,
            etag: res.etag,
            unverified,
        })
    }

    /// Checks what the destination answered against what was sent: the
    /// full-object CRC64NVME when it returns one, the ETag when it is an
    /// MD5 and the one expected is known, else the size (with the server's
    /// checks of each request's Content-MD5 or CRC64NVME).
    async fn check_written(
        &self,
        dst: &DynStore,
        key: &Key,
        put: &PutOptions,
        res: &haul_store::PutResult,
        expected: Option<&str>,
        size: u64,
    ) -> Result<Verified> {
        // A full-object CRC the server computed must equal the one sent.
        let crc_matched = match (put.checksums.full_crc64(), res.checksums.full_crc64()) {
            (Some(sent), Some(got)) if sent != got => {
                return Err(err(
                    Op::Verify,
                    key,
                    ErrorKind::Integrity,
                    format!(
                        "the destination CRC64NVME {} does not match the data sent ({})",
                        crc64_to_b64(got),
                        crc64_to_b64(sent)
                    ),
                ));
            }
            (Some(_), Some(_)) => true,
            _ => false,
        };
        if let (true, Some(expected)) = (etag_is_md5(dst, put, res.sse.as_ref()), expected) {
            if let Some(got) = res.etag.as_deref() {
                if got != expected {
                    return Err(err(
                        Op::Verify,
                        key,
                        ErrorKind::Integrity,
                        format!("the destination ETag {got} does not match the data sent ({expected})"),
                    ));
                }
                return Ok(Verified::Etag);
            }
        }
        if crc_matched {
            return Ok(Verified::DestChecksum);
        }
        let head = dst.head(key).await.map_err(|e| e.during(Op::Verify))?;
        if head.size != size {
            return Err(err(
                Op::Verify,
                key,
                ErrorKind::Integrity,
                format!("the destination has {} bytes, expected {size}", head.size),
            ));
        }
        Ok(Verified::ServerChecked)
    }

    /// The part size to use, and whether it reproduces the source's layout
    /// (uniform parts of the first part's size, the last holding the rest).
    async fn part_layout(&self, src: &DynStore, meta: &ObjectMeta, dst: &DynStore) -> (u64, bool) {
        let d = dst.capabilities();
        if let Some(n) = meta.etag_parts().filter(|n| (1..=d.max_parts).contains(n)) {
            if let Ok((p1, count)) = src.head_part(&meta.key, 1).await {
                let fits = count == n
                    && p1 > 0
                    && p1 >= d.min_part_size.min(meta.size)
                    && p1.saturating_mul(u64::from(n - 1)) < meta.size
                    && meta.size <= p1.saturating_mul(u64::from(n));
                let last_fits = fits
                    && (n == 1
                        || matches!(src.head_part(&meta.key, n).await,
                            Ok((last, _)) if last == meta.size - p1 * u64::from(n - 1)));
                if last_fits {
                    return (p1, true);
                }
            }
        }
        // Keeping the ETag without a readable layout: try the AWS CLI's
        // rule (8 MiB, doubled until 10,000 parts suffice); the ETag check
        // after the copy tells whether it was the right guess.
        if self.opts.preserve_etag && meta.etag_parts().is_some() {
            return (
                haul_store::checksum::aws_cli_part_size(meta.size).max(d.min_part_size),
                false,
            );
        }
        let mut ps = self.opts.part_size.max(d.min_part_size).max(1);
        while meta.size.div_ceil(ps) > u64::from(d.max_parts) {
            ps *= 2;
        }
        (ps, false)
    }

    fn ranges(size: u64, part: u64) -> Vec<Range<u64>> {
        if size == 0 {
            // An empty object is one empty part.
            return std::iter::once(0..0).collect();
        }
        (0..size.div_ceil(part))
            .map(|i| i * part..((i + 1) * part).min(size))
            .collect()
    }

    async fn multipart(
        &self,
        src: &DynStore,
        meta: &ObjectMeta,
        dst: &DynStore,
        dst_key: &Key,
        obs: &dyn Observer,
    ) -> Result<Outcome> {
        let full = src.head(&meta.key).await?;
        if full.size != meta.size {
            return Err(err(
                Op::Head,
                &meta.key,
                ErrorKind::PreconditionFailed,
                "the source changed since it was listed",
            ));
        }
        let tags = self.source_tags(src, dst, &meta.key).await?;
        let (part_size, same_layout) = self.part_layout(src, &full, dst).await;
        let mut put = self.dest_options(src, dst, &full, tags);
        put.part_size = Some(part_size);
        let ranges = Self::ranges(meta.size, part_size);
        let nparts = ranges.len() as u32;
        // A source with a full-object CRC64NVME (every new object on AWS S3)
        // is checked by it: ~0.1 s per GiB, where MD5 costs ~2.3 s. A local
        // destination then takes the source's ETag instead of hashing.
        let src_crc = full.checksums.full_crc64();
        let dst_local = dst.capabilities().hashes_writes;
        put.full_object_crc64 = dst.capabilities().upload_checksums.contains(&ChecksumKind::Crc64Nvme);
        // The whole-object MD5 is needed only to check a single-part source
        // ETag, when no CRC64NVME checks the data.
        let whole = source_md5(&full).filter(|_| src_crc.is_none()).map(|_| md5::Md5::new());
        // Part MD5s reproduce a multipart ETag to compare with the source's.
        let etag_to_match = full.etag.is_some() && (same_layout || self.opts.preserve_etag);
        let hashing = PartHashing {
            dst_hashes: dst_local,
            dst_checks_crc: !dst_local && put.full_object_crc64 && whole.is_none() && !etag_to_match,
            crc64: src_crc.is_some() || put.full_object_crc64,
            crc_only: dst_local && src_crc.is_some() && full.etag.is_some(),
        };
        if hashing.crc_only {
            put.etag = full.etag.clone();
        }
        let upload = dst.create_multipart(dst_key, &put).await?;
        obs.upload_started(dst_key, &upload);
        let run = self.upload_parts(src, &full, dst, dst_key, &upload, ranges, whole, hashing, obs);
        let res = tokio::select! {
            r = run => r,
            _ = self.cancel.cancelled() => Err(cancelled(dst_key)),
        };
        let done = or_abort(dst, dst_key, &upload, res).await?;
        let crc_checked = match (src_crc, done.crc64) {
            (Some(want), Some(got)) if want != got => {
                abort(dst, dst_key, &upload).await;
                return Err(err(
                    Op::Verify,
                    &meta.key,
                    ErrorKind::Integrity,
                    format!(
                        "data read does not match the source CRC64NVME (read {}, source {})",
                        crc64_to_b64(got),
                        crc64_to_b64(want)
                    ),
                ));
            }
            (Some(_), Some(_)) => true,
            _ => false,
        };
        put.checksums.crc64nvme = done.crc64.map(crc64_to_b64);
        let (parts, md5s, whole_md5) = (done.parts, done.md5s, done.whole_md5);
        // The ETag expected, when every part's MD5 is known.
        let expected = if hashing.crc_only {
            put.etag.clone()
        } else if md5s.len() == parts.len() {
            multipart_etag(md5s.iter().map(String::as_str))
        } else {
            None
        };
        // The data read is checked against the source before the
        // destination is completed: a mismatch aborts the upload.
        let src_check = match self.check_parts_read(
            meta,
            &full,
            crc_checked,
            whole_md5,
            expected.as_deref(),
            same_layout,
            hashing.crc_only,
        ) {
            Ok(c) => c,
            Err(e) => {
                abort(dst, dst_key, &upload).await;
                return Err(e);
            }
        };
        let src_local = src.capabilities().local_reads;
        let ready = if src.capabilities().source_may_change {
            check_unchanged(src, meta).await
        } else if src_check.is_none() && self.opts.require_verified {
            Err(integrity::unverified(&full))
        } else {
            Ok(())
        };
        or_abort(dst, dst_key, &upload, ready).await?;
        let done = dst.complete_multipart(dst_key, &upload, &parts).await;
        let done = or_abort(dst, dst_key, &upload, done).await?;
        let verified = self
            .check_written(dst, dst_key, &put, &done, expected.as_deref(), meta.size)
            .await?;
        let verified = match (verified, src_check) {
            (Verified::Etag, Some(c)) => c,
            (Verified::ServerChecked | Verified::DestChecksum, Some(_)) if crc_checked => Verified::SourceChecksum,
            (v, _) => v,
        };
        Ok(Outcome {
            strategy: Strategy::Multipart { parts: nparts },
            verified,
            bytes: meta.size,
            etag: done.etag,
            unverified: src_check.is_none() && !src_local,
        })
    }

    /// What the parts read were checked against (before completing): the
    /// source's CRC64NVME (`crc_checked`, compared by the caller), its MD5
    /// ETag against the whole object's MD5, or its multipart ETag against
    /// the one of the parts read. A mismatch is an integrity error; `None`
    /// when nothing could be compared.
    #[allow(clippy::too_many_arguments)]
    fn check_parts_read(
        &self,
        meta: &ObjectMeta,
        full: &ObjectMeta,
        crc_checked: bool,
        whole_md5: Option<String>,
        expected: Option<&str>,
        same_layout: bool,
        crc_only: bool,
    ) -> Result<Option<Verified>> {
        let mut check = crc_checked.then_some(Verified::SourceChecksum);
        if let (Some(w), Some(src_md5)) = (whole_md5, source_md5(full)) {
            if w != src_md5 {
                return Err(err(
                    Op::Verify,
                    &meta.key,
                    ErrorKind::Integrity,
                    format!("data read does not match the source ETag (read MD5 {w}, ETag {src_md5})"),
                ));
            }
            check = check.or(Some(Verified::SourceEtag));
        }
        let src_kms = full.sse == Some(SseKind::Kms);
        if let (false, false, Some(etag), Some(expected)) = (src_kms, crc_only, full.etag.as_deref(), expected) {
            if etag == expected {
                check = Some(Verified::SourceEtag);
            } else if same_layout && source_md5(full).is_none() {
                return Err(err(
                    Op::Verify,
                    &meta.key,
                    ErrorKind::Integrity,
                    format!("data read does not match the source ETag ({etag} vs {expected})"),
                ));
            }
        }
        Ok(check)
    }

    /// Reads ranges of the source and uploads them as parts, in parallel,
    /// hashing the whole object in order when asked. Returns the parts as
    /// the server acknowledged them, the MD5 of each and their combined CRC.
    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        src: &DynStore,
        full: &ObjectMeta,
        dst: &DynStore,
        dst_key: &Key,
        upload: &MultipartId,
        ranges: Vec<Range<u64>>,
        mut whole: Option<md5::Md5>,
        hashing: PartHashing,
        obs: &dyn Observer,
    ) -> Result<PartsDone> {
        let keep = whole.is_some();
        let mut s = stream::iter(ranges.into_iter().enumerate())
            .map(|(i, r)| async move {
                let _slot = self.parts.acquire().await;
                let len = r.end - r.start;
                // A local destination writes the part as it arrives (no
                // part-sized buffer) unless the whole object is hashed here.
                let streamed = hashing.dst_hashes && dst.capabilities().streams_parts && !keep;
                let permit = if streamed {
                    None
                } else {
                    Some(self.budget.acquire(len).await)
                };
                let g = src.get(&full.key, Some(r.clone())).await?;
                if g.meta.etag.is_some() && full.etag.is_some() && g.meta.etag != full.etag {
                    return Err(err(
                        Op::Get,
                        &full.key,
                        ErrorKind::PreconditionFailed,
                        "the source changed while it was copied",
                    ));
                }
                if streamed {
                    let part = dst
                        .upload_part_stream(dst_key, upload, i as u32 + 1, len, g.body)
                        .await?;
                    obs.bytes(len);
                    let crc = part.checksums.full_crc64().map(|c| (c, len));
                    let md5 = part.etag.clone();
                    return Ok((part, md5, crc, None));
                }
                let data = collect(g, len, &full.key, obs).await?;
                // A local destination hashes what it writes (one pass over
                // the data, not two): its part ETag is the MD5. A store that
                // checks CRC64NVMEs is sent only the CRC.
                let md5_here = !hashing.dst_hashes && !hashing.dst_checks_crc;
                let mut sums = sums_of(data.clone(), md5_here, hashing.crc64).await;
                let n = i as u32 + 1;
                let mut part = dst.upload_part(dst_key, upload, n, data.clone(), &sums).await?;
                let crc = sums.full_crc64();
                if hashing.dst_checks_crc {
                    match (crc, part.checksums.full_crc64()) {
                        // The server checked the part's CRC64NVME.
                        (Some(sent), Some(got)) if sent == got => {}
                        (Some(sent), Some(got)) => {
                            return Err(err(
                                Op::UploadPart,
                                dst_key,
                                ErrorKind::Integrity,
                                format!(
                                    "part {n}: the destination's CRC64NVME {} does not match the data sent ({})",
                                    crc64_to_b64(got),
                                    crc64_to_b64(sent)
                                ),
                            ));
                        }
                        // It did not say it checked one. An MD5 the store
                        // sent as Content-MD5 was checked by the server;
                        // otherwise nothing checked the part: it goes again
                        // with its MD5 (the data is still at hand).
                        _ => match part.checksums.md5_hex.take() {
                            Some(own) => sums.md5_hex = Some(own),
                            None => {
                                sums.md5_hex = Some(md5_of(data.clone()).await);
                                part = dst.upload_part(dst_key, upload, n, data.clone(), &sums).await?;
                            }
                        },
                    }
                }
                // The part's CRC, for the full-object one at completion.
                if part.checksums.crc64nvme.is_none() {
                    part.checksums.crc64nvme = sums.crc64nvme.clone();
                }
                let md5 = match sums.md5_hex {
                    Some(md5) => {
                        check_part(dst, &self.opts.put, dst_key, &part, &md5)?;
                        md5
                    }
                    // Checked by its CRC64NVME: no MD5 of this part.
                    None if hashing.dst_checks_crc => String::new(),
                    None => part.etag.clone(),
                };
                let crc = crc.map(|c| (c, len));
                Ok::<_, StoreError>((part, md5, crc, keep.then_some((data, permit))))
            })
            .buffered(self.opts.parts_per_object.max(1));
        let (mut parts, mut md5s, mut crcs) = (Vec::new(), Vec::new(), Vec::new());
        while let Some((part, md5, crc, data)) = s.try_next().await? {
            if let (Some(h), Some((d, _permit))) = (whole.as_mut(), data) {
                h.update(&d);
            }
            parts.push(part);
            if !md5.is_empty() {
                md5s.push(md5);
            }
            crcs.push(crc);
        }
        let crc64 = crcs.into_iter().collect::<Option<Vec<_>>>().and_then(crc64_of_parts);
        Ok(PartsDone {
            parts,
            md5s,
            crc64: crc64.filter(|_| hashing.crc64),
            whole_md5: whole.map(|h| hex::encode(h.finalize())),
        })
    }

    async fn server_copy(
        &self,
        src: &DynStore,
        meta: &ObjectMeta,
        dst: &DynStore,
        dst_key: &Key,
        obs: &dyn Observer,
    ) -> Result<Outcome> {
        let source = CopySource {
            bucket: src.capabilities().bucket.clone(),
            key: meta.key.clone(),
            if_match: meta.etag.clone(),
        };
        let o = &self.opts.put;
        let (directive, put) = match self.opts.directive {
            // Extra metadata, a content-type or tags with the Copy directive:
            // merge into the source's and replace.
            MetadataDirective::Copy if !o.metadata.is_empty() || o.content_type.is_some() || !o.tags.is_empty() => {
                let full = src.head(&meta.key).await?;
                let tags = self.source_tags(src, dst, &meta.key).await?;
                (MetadataDirective::Replace, self.dest_options(src, dst, &full, tags))
            }
            MetadataDirective::Copy => (
                MetadataDirective::Copy,
                PutOptions {
                    storage_class: o.storage_class.clone(),
                    sse: o.sse.clone(),
                    ..Default::default()
                },
            ),
            MetadataDirective::Replace => {
                let full = ObjectMeta {
                    key: meta.key.clone(),
                    ..Default::default()
                };
                let tags = self.source_tags(src, dst, &meta.key).await?;
                (MetadataDirective::Replace, self.dest_options(src, dst, &full, tags))
            }
        };
        let res = dst
            .copy(
                &source,
                dst_key,
                &CopyOptions {
                    directive,
                    put: put.clone(),
                },
            )
            .await?;
        obs.bytes(meta.size);
        // Listings do not say whether an object is SSE-KMS (its ETag is not
        // an MD5): on a mismatch, ask the source before calling it corruption.
        let src_plain = match (source_md5(meta), res.etag.as_deref()) {
            (Some(s), Some(d)) if s != d => match src.head(&meta.key).await {
                Ok(h) if h.sse == Some(SseKind::Kms) => None,
                _ => Some(s),
            },
            (s, _) => s,
        };
        let verified = match (src_plain, res.etag.as_deref()) {
            (Some(s), Some(d)) if etag_is_md5(dst, &put, res.sse.as_ref()) => {
                if s != d {
                    return Err(err(
                        Op::Verify,
                        dst_key,
                        ErrorKind::Integrity,
                        format!("the copy's ETag {d} differs from the source's {s}"),
                    ));
                }
                Verified::SourceEtag
            }
            _ => {
                let head = dst.head(dst_key).await.map_err(|e| e.during(Op::Verify))?;
                if head.size != meta.size {
                    return Err(err(
                        Op::Verify,
                        dst_key,
                        ErrorKind::Integrity,
                        format!("the copy has {} bytes, the source {}", head.size, meta.size),
                    ));
                }
                Verified::ServerChecked
            }
        };
        Ok(Outcome {
            strategy: Strategy::ServerCopy,
            verified,
            bytes: meta.size,
            etag: res.etag,
            unverified: false,
        })
    }

    async fn server_part_copy(
        &self,
        src: &DynStore,
        meta: &ObjectMeta,
        dst: &DynStore,
        dst_key: &Key,
        obs: &dyn Observer,
    ) -> Result<Outcome> {
        // A multipart copy carries nothing over by itself: read the source's
        // metadata and tags and set them on the new upload.
        let full = src.head(&meta.key).await?;
        let tags = self.source_tags(src, dst, &meta.key).await?;
        let mut put = self.dest_options(src, dst, &full, tags);
        let (part_size, same_layout) = self.part_layout(src, &full, dst).await;
        put.part_size = Some(part_size);
        let ranges = Self::ranges(meta.size, part_size);
        let nparts = ranges.len() as u32;
        let source = CopySource {
            bucket: src.capabilities().bucket.clone(),
            key: meta.key.clone(),
            if_match: full.etag.clone(),
        };
        let upload = dst.create_multipart(dst_key, &put).await?;
        obs.upload_started(dst_key, &upload);
        let run = async {
            stream::iter(ranges.into_iter().enumerate())
                .map(|(i, r)| {
                    let source = &source;
                    let upload = &upload;
                    async move {
                        let _slot = self.parts.acquire().await;
                        let len = r.end - r.start;
                        let p = dst.upload_part_copy(dst_key, upload, i as u32 + 1, source, r).await?;
                        obs.bytes(len);
                        Ok::<_, StoreError>(p)
                    }
                })
                .buffered(self.opts.parts_per_object.max(1))
                .try_collect::<Vec<_>>()
                .await
        };
        let res = tokio::select! {
            r = run => r,
            _ = self.cancel.cancelled() => Err(cancelled(dst_key)),
        };
        let parts = or_abort(dst, dst_key, &upload, res).await?;
        // Copied parts' ETags are the MD5s of the ranges when not SSE-KMS.
        let expected = multipart_etag(parts.iter().map(|p| p.etag.as_str())).unwrap_or_default();
        let done = dst.complete_multipart(dst_key, &upload, &parts).await;
        let done = or_abort(dst, dst_key, &upload, done).await?;
        let mut verified = self
            .check_written(dst, dst_key, &put, &done, Some(&expected), meta.size)
            .await?;
        if verified == Verified::Etag && same_layout && full.sse != Some(SseKind::Kms) {
            if full.etag.as_deref() != Some(expected.as_str()) {
                return Err(err(
                    Op::Verify,
                    dst_key,
                    ErrorKind::Integrity,
                    format!(
                        "the copy's ETag {expected} differs from the source's {}",
                        full.etag.as_deref().unwrap_or_default()
                    ),
                ));
            }
            verified = Verified::SourceEtag;
        }
        Ok(Outcome {
            strategy: Strategy::ServerPartCopy { parts: nparts },
            verified,
            bytes: meta.size,
            etag: done.etag,
            unverified: false,
        })
    }

    /// Uploads a stream of unknown length (stdin) as one object: a single PUT
    /// when it ends before the threshold, multipart otherwise. Parts upload
    /// in background tasks while the next part is read; the part size
    /// doubles every 1,000 parts so any length up to 5 TiB fits.
    pub async fn upload_stream<R: AsyncRead + Unpin + Send>(
        &self,
        mut reader: R,
        dst: &DynStore,
        key: &Key,
        obs: &dyn Observer,
    ) -> Result<Outcome> {
        let read_err = |e: std::io::Error| StoreError::io(Op::Get, "-", e);
        let mut put = self.dest_options_for_new(key);
        put.tags = explicit_tags(&self.opts, dst, key).await?;
        let caps = dst.capabilities();
        let threshold = self.opts.multipart_threshold.clamp(1, caps.max_put_size);
        let base = self.opts.part_size.max(caps.min_part_size);
        // Every buffer is paid for from the byte budget *before* it is
        // filled: the first one may become the first part.
        let first_permit = self.budget.acquire(threshold.max(base)).await;
        let mut first = read_up_to(&mut reader, threshold as usize).await.map_err(read_err)?;
        obs.bytes(first.len() as u64);
        if (first.len() as u64) < threshold {
            let size = first.len() as u64;
            let crc64 = caps.upload_checksums.contains(&ChecksumKind::Crc64Nvme);
            put.checksums = sums_of(first.clone(), true, crc64).await;
            let md5 = put.checksums.md5_hex.clone().unwrap_or_default();
            let res = dst.put(key, first, &put).await?;
            let verified = self.check_written(dst, key, &put, &res, Some(&md5), size).await?;
            return Ok(Outcome {
                strategy: Strategy::Single,
                verified,
                bytes: size,
                etag: res.etag,
                unverified: false,
            });
        }
        let part_size = |n: u32| base << (n / 1000).min(10);
        // The first part must be a whole part (S3 refuses small non-last parts).
        if (first.len() as u64) < base {
            let more = read_up_to(&mut reader, (base - first.len() as u64) as usize)
                .await
                .map_err(read_err)?;
            obs.bytes(more.len() as u64);
            let mut b = BytesMut::from(&first[..]);
            b.extend_from_slice(&more);
            first = b.freeze();
        }
        let upload = dst.create_multipart(key, &put).await?;
        obs.upload_started(key, &upload);
        // Part tasks run in the background; on an error or a cancel they are
        // stopped and joined before the upload is aborted, so no part can
        // land after the abort.
        let mut pending = futures::stream::FuturesOrdered::new();
        let mut stops: Vec<tokio::task::AbortHandle> = Vec::new();
        let run = async {
            let mut parts: Vec<(CompletedPart, String)> = Vec::new();
            let mut total = 0u64;
            let mut next = Some((first, first_permit));
            let mut n = 0u32;
            loop {
                let (data, permit) = match next.take() {
                    Some(d) => d,
                    None => {
                        let permit = self.budget.acquire(part_size(n)).await;
                        let d = read_up_to(&mut reader, part_size(n) as usize).await.map_err(read_err)?;
                        obs.bytes(d.len() as u64);
                        (d, permit)
                    }
                };
                if data.is_empty() {
                    break;
                }
                n += 1;
                if n > caps.max_parts {
                    return Err(err(
                        Op::UploadPart,
                        key,
                        ErrorKind::InvalidRequest,
                        "the stream is too long for one object",
                    ));
                }
                total += data.len() as u64;
                let (d, k, u, o) = (dst.clone(), key.clone(), upload.clone(), self.opts.put.clone());
                let task = tokio::spawn(async move {
                    let _permit = permit;
                    let md5 = md5_of(data.clone()).await;
                    let p = d
                        .upload_part(&k, &u, n, data, &haul_store::Checksums::md5(&md5))
                        .await?;
                    check_part(&d, &o, &k, &p, &md5)?;
                    Ok::<_, StoreError>((p, md5))
                });
                stops.push(task.abort_handle());
                pending.push_back(task);
                // At most `parts_per_object` parts in flight.
                while pending.len() >= self.opts.parts_per_object.max(1) {
                    if let Some(p) = pending.next().await {
                        parts.push(joined(p, key)?);
                    }
                }
            }
            while let Some(p) = pending.next().await {
                parts.push(joined(p, key)?);
            }
            Ok::<_, StoreError>((parts, total))
        };
        let res = tokio::select! {
            r = run => r,
            _ = self.cancel.cancelled() => Err(cancelled(key)),
        };
        if res.is_err() {
            for s in &stops {
                s.abort();
            }
            while pending.next().await.is_some() {}
        }
        let (parts, total) = or_abort(dst, key, &upload, res).await?;
        let expected = multipart_etag(parts.iter().map(|(_, m)| m.as_str())).unwrap_or_default();
        let parts: Vec<CompletedPart> = parts.into_iter().map(|(p, _)| p).collect();
        let done = dst.complete_multipart(key, &upload, &parts).await;
        let done = or_abort(dst, key, &upload, done).await?;
        let verified = self
            .check_written(dst, key, &put, &done, Some(&expected), total)
            .await?;
        Ok(Outcome {
            strategy: Strategy::Multipart {
                parts: parts.len() as u32,
            },
            verified,
            bytes: total,
            etag: done.etag,
            unverified: false,
        })
    }

    fn dest_options_for_new(&self, key: &Key) -> PutOptions {
        let o = &self.opts.put;
        PutOptions {
            content_type: o
                .content_type
                .clone()
                .or_else(|| Some(guess_content_type(key.as_str()))),
            metadata: o.metadata.clone(),
            storage_class: o.storage_class.clone(),
            sse: o.sse.clone(),
            tags: o.tags.clone(),
            ..Default::default()
        }
    }

    /// Writes an object to `out`, checking it against its MD5 ETag when it has one.
    pub async fn download_to<W: AsyncWrite + Unpin + Send>(
        &self,
        src: &DynStore,
        key: &Key,
        mut out: W,
        obs: &dyn Observer,
    ) -> Result<u64> {
        let g = src.get(key, None).await?;
        let expect = source_md5(&g.meta).map(str::to_string);
        let mut h = md5::Md5::new();
        let mut n = 0u64;
        let mut body = g.body;
        while let Some(chunk) = body.try_next().await? {
            h.update(&chunk);
            n += chunk.len() as u64;
            obs.bytes(chunk.len() as u64);
            out.write_all(&chunk)
                .await
                .map_err(|e| StoreError::io(Op::Get, key.as_str(), e))?;
        }
        out.flush()
            .await
            .map_err(|e| StoreError::io(Op::Get, key.as_str(), e))?;
        if let Some(e) = expect {
            let got = hex::encode(h.finalize());
            if got != e {
                return Err(err(
                    Op::Verify,
                    key,
                    ErrorKind::Integrity,
                    format!("data read has MD5 {got}, the ETag says {e}"),
                ));
            }
        }
        Ok(n)
    }
}

/// The result of a spawned part upload.
fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>, key: &Key) -> Result<T> {
    r.map_err(|e| {
        err(
            Op::UploadPart,
            key,
            ErrorKind::Other,
            format!("upload task failed: {e}"),
        )
    })?
}

async fn abort(dst: &DynStore, key: &Key, upload: &MultipartId) {
    if let Err(e) = dst.abort_multipart(key, upload).await {
        tracing::warn!(key = %key, error = %e, "could not abort a multipart upload");
    }
}

async fn read_up_to<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(n);
    while buf.len() < n {
        let got = (&mut *r).take((n - buf.len()) as u64).read_buf(&mut buf).await?;
        if got == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// Mtime helpers re-exported for the CLI.
pub fn mtime_of(meta: &ObjectMeta) -> Option<SystemTime> {
    meta.metadata
        .get(haul_store::mtime::METADATA_KEY)
        .and_then(|m| haul_store::mtime::parse_mtime(m))
        .or(meta.last_modified)
}
