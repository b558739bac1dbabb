//! Streamed multipart copies: ranged GETs → parts, in parallel.

use std::ops::Range;

use futures::stream::{self, StreamExt, TryStreamExt};
use haul_store::checksum::{crc64_of_parts, crc64_to_b64, multipart_etag};
use haul_store::{ChecksumKind, CompletedPart, DynStore, ErrorKind, Key, MultipartId, ObjectMeta, Op, StoreError};
use md5::Digest;

use super::body::{collect, md5_of, sums_of};
use super::verify::{check_part, source_md5};
use super::writer::{abort, or_abort};
use super::{cancelled, err, Outcome, Result, Strategy, Transfer, Verified};
use crate::integrity::{self, check_unchanged};
use crate::report::Observer;

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

impl Transfer {
    /// The part size to use, and whether it reproduces the source's layout
    /// (uniform parts of the first part's size, the last holding the rest).
    pub(super) async fn part_layout(&self, src: &DynStore, meta: &ObjectMeta, dst: &DynStore) -> (u64, bool) {
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

    pub(super) fn ranges(size: u64, part: u64) -> Vec<Range<u64>> {
        if size == 0 {
            // An empty object is one empty part.
            return std::iter::once(0..0).collect();
        }
        (0..size.div_ceil(part))
            .map(|i| i * part..((i + 1) * part).min(size))
            .collect()
    }

    pub(super) async fn multipart(
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
        let dst_local = dst.capabilities().local_root.is_some();
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
        let src_local = src.capabilities().local_root.is_some();
        let ready = if src_local {
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
                let streamed = hashing.dst_hashes && !keep;
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
}
