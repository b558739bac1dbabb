//! Restoring an archive's members into a bucket prefix, each with the
//! content type, user metadata, tags and storage class of the index.
//!
//! A member below the transfer's multipart threshold (and within one PUT)
//! is one ranged GET, its CRC64NVME checked, and one PUT; its bytes are
//! paid for from the transfer's byte budget while held. A larger member is
//! a multipart upload through the [`MultipartWriter`]:
//!
//! * archive and destination share a copy domain (the same endpoint and
//!   identity, as [`Transfer::strategy`] decides for `cp`): every part is an
//!   `UploadPartCopy` of a byte range of the archive — no byte goes
//!   through haul. The copy is checked after completion against the
//!   index's CRC64NVME: the one the destination states (its answer to the
//!   completion, else a HEAD), else one re-read of the restored object. A
//!   mismatch deletes it.
//! * otherwise: ranged GETs of the archive, one per part, into parts
//!   (buffered under the byte budget, or streamed when a part is larger
//!   than its share of it). The parts' CRC64NVMEs, combined, are checked
//!   against the index *before* completion: a mismatch aborts the upload
//!   and nothing is written.
//!
//! Parts follow S3's rules: at least the destination's minimum part size
//! (5 MiB) but the last, at most its part count (10,000; the part size is
//! doubled until the member fits) and at most 5 GiB each.
//!
//! Where a member's bytes lie is one seam, [`MemberBytes`]: in a plain tar
//! they are a byte range of the archive, readable by range and copyable
//! server-side. A compressed archive's members are neither: a large one is
//! read once, decompressed, and cut into parts in order (`by_stream`).

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt};
use haul_store::checksum::{crc64_from_b64, crc64_to_b64};
use haul_store::{
    ByteStream, Capabilities, ChecksumKind, CopySource, DynStore, ErrorKind, GetOpts, Key, Op, PutOptions, StoreError,
};

use super::{record, selected, system_time, Outcome, UnbundleOptions, UnbundleReport};
use crate::bundle::error::BundleResult;
use crate::bundle::format::IndexEntry;
use crate::bundle::read::{self, open_archive_with, read_member, Archive};
use crate::transfer::{MultipartWriter, PartBody, PartChecks, Transfer};

/// The largest part S3 takes (UploadPart and UploadPartCopy).
pub(crate) const MAX_PART_SIZE: u64 = 5 << 30;

/// Restores an archive's members under `dst_prefix` in `dst`, each with
/// the content type, user metadata, tags and storage class of the index;
/// large members by multipart upload (see the module documentation),
/// within `transfer`'s byte budget, part limits and cancel.
pub async fn unbundle_to_store(
    store: &DynStore,
    archive_key: &Key,
    dst: &DynStore,
    dst_prefix: &Key,
    opts: &UnbundleOptions,
    transfer: &Transfer,
) -> BundleResult<UnbundleReport> {
    let archive = open_archive_with(store.as_ref(), archive_key, opts.index_from).await?;
    let tags_kept = dst.tagging_supported().await.unwrap_or(false);
    let picked = selected(&archive.entries, &opts.include);
    let mut report = UnbundleReport {
        filtered: (archive.entries.len() - picked.len()) as u64,
        ..Default::default()
    };
    let target = Target {
        src: store,
        archive: &archive,
        dst,
        prefix: dst_prefix,
        transfer,
        tags_kept,
    };
    let target = &target;
    let entries = &archive.entries;
    let mut outcomes = stream::iter(same_key_groups(entries, picked))
        .map(|group| async move {
            let mut done = Vec::with_capacity(group.len());
            for i in group {
                let e = &entries[i];
                done.push((e, target.restore(e).await));
            }
            done
        })
        .buffer_unordered(opts.concurrency.max(1));
    while let Some(done) = outcomes.next().await {
        for (e, o) in done {
            record(&mut report, &e.name, o);
        }
    }
    Ok(report)
}

/// The members to restore, those of one name together (the versions of
/// one key, packed by `bundle --versions`), oldest first: they are
/// restored one after the other, so the newest is the object left (and a
/// versioned destination gets them in order).
fn same_key_groups(entries: &[IndexEntry], picked: Vec<usize>) -> Vec<Vec<usize>> {
    let mut by_name: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::with_capacity(picked.len());
    for i in picked {
        match by_name.get(entries[i].name.as_str()) {
            Some(&g) => groups[g].push(i),
            None => {
                by_name.insert(entries[i].name.as_str(), groups.len());
                groups.push(vec![i]);
            }
        }
    }
    for g in groups.iter_mut().filter(|g| g.len() > 1) {
        g.sort_by_key(|&i| (entries[i].mtime_ns, i));
    }
    groups
}

/// Where a member's bytes lie: the seam between the restore and the
/// archive's layout.
#[derive(Debug, Clone)]
pub(crate) enum MemberBytes {
    /// Stored as they are at this byte range of the archive (a plain tar).
    Stored(Range<u64>),
}

impl MemberBytes {
    /// Where `e`'s bytes lie.
    pub(crate) fn of(e: &IndexEntry) -> Self {
        MemberBytes::Stored(e.data_range())
    }

    /// The archive's byte range holding bytes `r` of the member, when they
    /// can be copied server-side as they are.
    pub(crate) fn copyable(&self, r: &Range<u64>) -> Option<Range<u64>> {
        match self {
            MemberBytes::Stored(at) => Some(at.start + r.start..at.start + r.end),
        }
    }

    /// Bytes `r` of the member (offsets within it), as they arrive: one
    /// ranged GET of the archive, which must still have the ETag it had
    /// when its index was read.
    pub(crate) async fn read_range(
        &self,
        src: &DynStore,
        archive: &Archive,
        r: Range<u64>,
    ) -> Result<ByteStream, StoreError> {
        match self {
            MemberBytes::Stored(at) => {
                let range = at.start + r.start..at.start + r.end;
                let opts = GetOpts {
                    if_match: archive.etag.clone(),
                    ..GetOpts::version_range(None, range.clone())
                };
                let got = src.get_with(&archive.key, opts).await?;
                if got.range != range {
                    return Err(StoreError::new(
                        Op::Get,
                        archive.key.as_str(),
                        ErrorKind::Integrity,
                        format!("asked for bytes {range:?}, the store answered {:?}", got.range),
                    ));
                }
                Ok(got.body)
            }
        }
    }
}

/// What every member of one unbundle goes to.
struct Target<'a> {
    src: &'a DynStore,
    archive: &'a Archive,
    dst: &'a DynStore,
    prefix: &'a Key,
    transfer: &'a Transfer,
    tags_kept: bool,
}

/// A failed step: the operation and why.
type Failure = (&'static str, String);

fn failure(e: StoreError) -> Failure {
    (e.op.as_str(), e.to_string())
}

impl Target<'_> {
    async fn restore(&self, e: &IndexEntry) -> Outcome {
        // The same names are refused as for a directory: `..` or an absolute
        // name could leave the prefix (or, on a local store, the root).
        if let Err(r) = crate::bundle::names::check_name(&e.name) {
            return Outcome::Refused(r);
        }
        let dst_key = match self.prefix.join(&e.name).and_then(|k| Key::object(String::from(k))) {
            Ok(k) => k,
            Err(err) => {
                return Outcome::Failed {
                    key: format!("{}{}", self.prefix, e.name),
                    op: "validate",
                    reason: err.message,
                }
            }
        };
        let caps = self.dst.capabilities();
        let threshold = self.transfer.options().multipart_threshold.max(1);
        let done = if e.size < threshold && e.size <= caps.max_put_size {
            self.single(e, &dst_key).await
        } else {
            self.multipart(e, &dst_key).await
        };
        match done {
            Ok(n) if !self.tags_kept && !e.tags.is_empty() => Outcome::NoTags(n),
            Ok(n) => Outcome::Restored(n),
            Err((op, reason)) => Outcome::Failed {
                key: dst_key.to_string(),
                op,
                reason,
            },
        }
    }

    /// The destination object's options, from the index.
    fn put_options(&self, e: &IndexEntry) -> PutOptions {
        let caps = self.dst.capabilities();
        let mut put = PutOptions {
            content_type: e.content_type.clone(),
            metadata: e.metadata.clone(),
            storage_class: e.storage_class.clone(),
            ..Default::default()
        };
        if self.tags_kept {
            put.tags = e.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        if caps.keeps_mtime {
            put.mtime = e.mtime_ns.and_then(system_time);
        }
        put
    }

    /// One ranged GET (CRC checked) and one PUT, the bytes held under the
    /// byte budget.
    async fn single(&self, e: &IndexEntry, dst_key: &Key) -> Result<u64, Failure> {
        let caps = self.dst.capabilities();
        let mut put = self.put_options(e);
        if caps.upload_checksums.contains(&ChecksumKind::Crc64Nvme) && crc64_from_b64(&e.crc64nvme).is_some() {
            put.checksums.crc64nvme = Some(e.crc64nvme.clone());
        }
        let _permit = self.transfer.limits().budget.acquire(e.size).await;
        let data = read_member(self.src.as_ref(), &self.archive.key, e)
            .await
            .map_err(|err| ("get", err.to_string()))?;
        let size = data.len() as u64;
        self.dst
            .put(dst_key, data, &put)
            .await
            .map_err(|err| ("put", err.message))?;
        Ok(size)
    }

    async fn multipart(&self, e: &IndexEntry, dst_key: &Key) -> Result<u64, Failure> {
        let want = crc64_from_b64(&e.crc64nvme).ok_or_else(|| {
            (
                "verify",
                format!("the index's CRC64NVME {:?} is not a full-object CRC", e.crc64nvme),
            )
        })?;
        let (s, d) = (self.src.capabilities(), self.dst.capabilities());
        let ranges = ranges(e.size, part_size(self.transfer.options().part_size, e.size, d));
        if e.zstd.is_some() {
            // Compressed: neither copyable nor readable by part; one read
            // of its frames, decompressed into the parts in order.
            return self.by_stream(e, dst_key, ranges, want).await;
        }
        let bytes = MemberBytes::of(e);
        let same_domain = s.copy_domain.is_some() && s.copy_domain == d.copy_domain;
        let copyable = ranges.iter().all(|r| bytes.copyable(r).is_some());
        if self.transfer.options().server_side && same_domain && d.part_copy && copyable {
            self.by_part_copy(e, dst_key, &bytes, ranges, want).await
        } else {
            self.by_parts_read(e, dst_key, &bytes, ranges, want).await
        }
    }

    /// Parts copied server-side from the archive; checked after completion.
    async fn by_part_copy(
        &self,
        e: &IndexEntry,
        dst_key: &Key,
        bytes: &MemberBytes,
        ranges: Vec<Range<u64>>,
        want: u64,
    ) -> Result<u64, Failure> {
        let source = CopySource {
            bucket: self.src.capabilities().bucket.clone(),
            key: self.archive.key.clone(),
            if_match: self.archive.etag.clone(),
        };
        let put = self.put_options(e);
        let mut w = self
            .transfer
            .multipart_writer(self.dst, dst_key, put, PartChecks::default())
            .await
            .map_err(failure)?;
        for r in &ranges {
            let Some(at) = bytes.copyable(r) else {
                w.abort().await;
                return Err(("copy", "a part of the member cannot be copied as it is".into()));
            };
            w.copy_part(source.clone(), at).await.map_err(failure)?;
        }
        let parts = w.wait_parts().await.map_err(failure)?;
        // Copied parts' ETags are the MD5s of the ranges (not SSE-KMS).
        let expected = parts.etag.clone();
        let done = w.complete(&parts, expected.as_deref()).await.map_err(failure)?;
        let got = match done.result.checksums.full_crc64() {
            Some(c) => c,
            None => self.restored_crc(dst_key, e.size).await.map_err(failure)?,
        };
        if got != want {
            let why = format!(
                "the restored object has CRC64NVME {}, the index says {}: deleted",
                crc64_to_b64(got),
                crc64_to_b64(want)
            );
            if let Err(err) = self.dst.delete_many(std::slice::from_ref(dst_key)).await {
                return Err(("verify", format!("{why} (the delete failed: {err})")));
            }
            return Err(("verify", why));
        }
        Ok(done.bytes)
    }

    /// The full-object CRC64NVME of a restored object: the one the
    /// destination states on HEAD, else computed from one read of it.
    async fn restored_crc(&self, key: &Key, size: u64) -> Result<u64, StoreError> {
        let head = self.dst.head(key).await.map_err(|e| e.during(Op::Verify))?;
        if head.size != size {
            return Err(StoreError::new(
                Op::Verify,
                key.as_str(),
                ErrorKind::Integrity,
                format!("the restored object has {} bytes, the index says {size}", head.size),
            ));
        }
        if let Some(c) = head.checksums.full_crc64() {
            return Ok(c);
        }
        let got = self.dst.get(key, None).await.map_err(|e| e.during(Op::Verify))?;
        let mut body = got.body;
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
        while let Some(chunk) = body.next().await {
            digest.update(&chunk.map_err(|e| e.during(Op::Verify))?);
        }
        Ok(digest.finalize())
    }

    /// Parts read from the archive by ranged GETs; their combined
    /// CRC64NVME checked against the index before completion.
    async fn by_parts_read(
        &self,
        e: &IndexEntry,
        dst_key: &Key,
        bytes: &MemberBytes,
        ranges: Vec<Range<u64>>,
        want: u64,
    ) -> Result<u64, Failure> {
        let hashes_writes = self.dst.capabilities().hashes_writes;
        let o = self.transfer.options();
        let share = o.buffer_bytes / o.parts_per_object.max(1) as u64;
        let (src, archive) = (self.src, self.archive);
        let mut w = self.read_writer(e, dst_key).await?;
        for r in ranges {
            let len = r.end - r.start;
            if hashes_writes || len > share {
                let open = move || {
                    let r = r.clone();
                    async move { bytes.read_range(src, archive, r).await }
                };
                w.put_part_streamed(len, open).await.map_err(failure)?;
            } else {
                let read = async move {
                    let body = bytes.read_range(src, archive, r).await?;
                    let data = collect(body, len, &archive.key).await?;
                    Ok(PartBody::Bytes(data, None))
                };
                w.put_part_from(len, true, read).await.map_err(failure)?;
            }
        }
        complete_checked(w, want).await
    }
}

impl Target<'_> {
    /// A multipart upload of `e` at `dst_key` whose parts are read by
    /// haul: the parts' CRC64NVMEs are combined (and sent where the
    /// destination checks them) so the whole is known before completion.
    async fn read_writer(&self, e: &IndexEntry, dst_key: &Key) -> Result<MultipartWriter<'_>, Failure> {
        let d = self.dst.capabilities();
        let mut put = self.put_options(e);
        put.full_object_crc64 = d.upload_checksums.contains(&ChecksumKind::Crc64Nvme);
        let checks = PartChecks {
            dst_hashes: d.hashes_writes,
            dst_checks_crc: !d.hashes_writes && put.full_object_crc64,
            crc64: true,
            whole_md5: false,
        };
        self.transfer
            .multipart_writer(self.dst, dst_key, put, checks)
            .await
            .map_err(failure)
    }

    /// Parts cut in order from one stream of the member (a compressed
    /// archive's: one ranged GET of its frames, decompressed as it comes),
    /// each paid for from the budget before it is filled; the combined
    /// CRC64NVME checked against the index before completion.
    async fn by_stream(
        &self,
        e: &IndexEntry,
        dst_key: &Key,
        ranges: Vec<Range<u64>>,
        want: u64,
    ) -> Result<u64, Failure> {
        let mut body = read::member_stream(self.src.as_ref(), &self.archive.key, e)
            .await
            .map_err(|err| ("get", err.to_string()))?;
        let mut w = self.read_writer(e, dst_key).await?;
        let mut left = Bytes::new();
        let send = async |w: &mut MultipartWriter<'_>| -> Result<(), Failure> {
            for r in ranges {
                let len = r.end - r.start;
                let permit = w.reserve(len).await.map_err(failure)?;
                let mut buf = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
                while (buf.len() as u64) < len {
                    if left.is_empty() {
                        left = match body.next().await {
                            Some(chunk) => chunk.map_err(|err| ("get", err.to_string()))?,
                            None => {
                                return Err((
                                    "get",
                                    format!("the member ended after {} bytes", r.start + buf.len() as u64),
                                ))
                            }
                        };
                    }
                    let take = left.len().min(usize::try_from(len).unwrap_or(usize::MAX) - buf.len());
                    buf.extend_from_slice(&left.split_to(take));
                }
                w.put_part(buf.freeze(), permit).await.map_err(failure)?;
            }
            // The stream's end checks length and CRC against the index.
            match body.next().await {
                Some(Err(err)) => Err(("verify", err.to_string())),
                _ => Ok(()),
            }
        };
        if let Err(f) = send(&mut w).await {
            w.abort().await;
            return Err(f);
        }
        complete_checked(w, want).await
    }
}

/// Completes `w` when its parts' combined CRC64NVME is the index's `want`;
/// otherwise aborts it: nothing is written.
async fn complete_checked(mut w: MultipartWriter<'_>, want: u64) -> Result<u64, Failure> {
    let parts = w.wait_parts().await.map_err(failure)?;
    if parts.crc64 != Some(want) {
        w.abort().await;
        let got = parts.crc64.map_or("none".to_string(), crc64_to_b64);
        return Err((
            "verify",
            format!(
                "the parts read have CRC64NVME {got}, the index says {}: not written",
                crc64_to_b64(want)
            ),
        ));
    }
    let expected = parts.etag.clone();
    let done = w.complete(&parts, expected.as_deref()).await.map_err(failure)?;
    Ok(done.bytes)
}

/// A part's body read into one buffer, its length checked.
async fn collect(mut body: ByteStream, len: u64, key: &Key) -> Result<Bytes, StoreError> {
    let mut buf = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if buf.len() as u64 + chunk.len() as u64 > len {
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.len() as u64 != len {
        return Err(StoreError::new(
            Op::Get,
            key.as_str(),
            ErrorKind::Transient,
            format!("a part read gave {} bytes, not {len}", buf.len()),
        ));
    }
    Ok(buf.freeze())
}

/// The part size for a member of `size` bytes: `want`, at least the
/// destination's minimum, doubled until the parts fit its part count, at
/// most [`MAX_PART_SIZE`].
pub(crate) fn part_size(want: u64, size: u64, caps: &Capabilities) -> u64 {
    let mut ps = want.max(caps.min_part_size).max(1);
    while size.div_ceil(ps) > u64::from(caps.max_parts.max(1)) && ps < MAX_PART_SIZE {
        ps = ps.saturating_mul(2);
    }
    ps.min(MAX_PART_SIZE)
}

/// The parts' ranges within a member of `size` bytes (one empty part for
/// an empty member).
pub(crate) fn ranges(size: u64, part: u64) -> Vec<Range<u64>> {
    if size == 0 {
        return std::iter::once(0..0).collect();
    }
    let part = part.max(1);
    (0..size.div_ceil(part))
        .map(|i| i * part..((i + 1) * part).min(size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_follow_the_destinations_rules() {
        let caps = Capabilities::s3_like("b");
        // The minimum part size wins over a smaller one asked for.
        assert_eq!(part_size(1, 12 << 20, &caps), caps.min_part_size);
        assert_eq!(
            ranges(12 << 20, 5 << 20),
            vec![0..5 << 20, 5 << 20..10 << 20, 10 << 20..12 << 20]
        );
        // 10,000 parts at most: doubled until they fit.
        let big = 100_000u64 * (5 << 20);
        let ps = part_size(5 << 20, big, &caps);
        assert!(big.div_ceil(ps) <= u64::from(caps.max_parts));
        assert_eq!(ps, 80 << 20);
        // Never above 5 GiB a part.
        assert_eq!(part_size(8 << 30, 1 << 40, &caps), MAX_PART_SIZE);
        assert_eq!(ranges(0, 5), std::iter::once(0..0).collect::<Vec<_>>());
    }
}
