//! Streamed multipart copies: ranged GETs → parts, in parallel, through a
//! [`MultipartWriter`]; the data read is checked against the source before
//! the destination is completed.

use std::ops::Range;

use haul_store::checksum::crc64_to_b64;
use haul_store::{ChecksumKind, DynStore, ErrorKind, GetResult, Key, ObjectMeta, Op, PutOptions};

use super::body::collect;
use super::verify::source_md5;
use super::writer::{MultipartWriter, PartBody, PartChecks, PartsSent};
use super::{err, Outcome, Result, Strategy, Transfer, Verified};
use crate::integrity::{self, check_unchanged};
use crate::report::Observer;

/// A streamed multipart copy, planned: layout, options and checks.
pub(super) struct Plan {
    /// The source's metadata (HEAD).
    pub(super) full: ObjectMeta,
    /// The destination upload's options.
    put: PutOptions,
    pub(super) ranges: Vec<Range<u64>>,
    /// The ranges reproduce the source's part layout.
    pub(super) same_layout: bool,
    /// The source's full-object CRC64NVME.
    pub(super) src_crc: Option<u64>,
    pub(super) checks: PartChecks,
    /// The destination is given only the CRC64NVME and the object's ETag
    /// (checked against the source's CRC64NVME): no MD5 anywhere.
    crc_only: bool,
}

/// What the parts read were checked against, before completion.
pub(super) struct ReadCheck {
    /// The ETag the destination should answer.
    expected: Option<String>,
    /// What the data read matched at the source (`None`: nothing).
    src_check: Option<Verified>,
    /// The source's CRC64NVME matched the parts'.
    crc_checked: bool,
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
        let plan = self.plan_multipart(src, meta, dst).await?;
        let mut w = self
            .multipart_writer(dst, dst_key, plan.put.clone(), plan.checks)
            .await?;
        w.observe(obs);
        obs.upload_started(dst_key, w.upload_id());
        self.send_ranges(&mut w, src, &plan, obs).await?;
        let mut parts = w.wait_parts().await?;
        // The data read is checked against the source before the
        // destination is completed: a mismatch aborts the upload, unless
        // reading the parts again repairs it (see `repair`).
        let read = match self.check_read(src, meta, &plan, &parts).await {
            Ok(r) => r,
            Err(e) if self.repairable(src, &plan, &e) => match self.repair(&mut w, src, meta, &plan, e).await {
                Ok((p, r)) => {
                    parts = p;
                    r
                }
                Err(e) => {
                    w.abort().await;
                    return Err(e);
                }
            },
            Err(e) => {
                w.abort().await;
                return Err(e);
            }
        };
        let done = w.complete(&parts, read.expected.as_deref()).await?;
        let verified = match (done.verified, read.src_check) {
            (Verified::Etag, Some(c)) => c,
            (Verified::ServerChecked | Verified::DestChecksum, Some(_)) if read.crc_checked => Verified::SourceChecksum,
            (v, _) => v,
        };
        let src_local = src.capabilities().local_reads;
        Ok(Outcome {
            strategy: Strategy::Multipart { parts: done.parts },
            verified,
            bytes: meta.size,
            etag: done.result.etag,
            unverified: read.src_check.is_none() && !src_local,
        })
    }

    /// Heads the source and decides the layout, the destination's options
    /// and how parts are hashed.
    async fn plan_multipart(&self, src: &DynStore, meta: &ObjectMeta, dst: &DynStore) -> Result<Plan> {
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
        // A source with a full-object CRC64NVME (every new object on AWS S3)
        // is checked by it, far cheaper than an MD5 (see docs/BENCHMARKS.md).
        // A local destination then takes the source's ETag instead of hashing.
        let src_crc = full.checksums.full_crc64();
        let dst_local = dst.capabilities().hashes_writes;
        put.full_object_crc64 = dst.capabilities().upload_checksums.contains(&ChecksumKind::Crc64Nvme);
        // The whole-object MD5 is needed only to check a single-part source
        // ETag, when no CRC64NVME checks the data.
        let whole_md5 = source_md5(&full).is_some() && src_crc.is_none();
        // Part MD5s reproduce a multipart ETag to compare with the source's.
        let etag_to_match = full.etag.is_some() && (same_layout || self.opts.preserve_etag);
        let checks = PartChecks {
            dst_hashes: dst_local,
            dst_checks_crc: !dst_local && put.full_object_crc64 && !whole_md5 && !etag_to_match,
            crc64: src_crc.is_some() || put.full_object_crc64,
            whole_md5,
        };
        let crc_only = dst_local && src_crc.is_some() && full.etag.is_some();
        if crc_only {
            put.etag = full.etag.clone();
        }
        Ok(Plan {
            full,
            put,
            ranges,
            same_layout,
            src_crc,
            checks,
            crc_only,
        })
    }

    /// Whether a part is streamed from the source into the destination
    /// rather than buffered: always into a local destination (it writes
    /// as the data arrives), and with `--preserve-etag` a part larger than
    /// its share of the byte budget (the source's layout decides the part
    /// size there, up to 5 GiB). Never when the whole object is hashed here.
    pub(super) fn streams_part(&self, checks: &PartChecks, len: u64) -> bool {
        let share = self.opts.buffer_bytes / self.opts.parts_per_object.max(1) as u64;
        !checks.whole_md5 && (checks.dst_hashes || (self.opts.preserve_etag && len > share))
    }

    /// Hands every range of the source to the writer, as a part read when
    /// its turn comes.
    async fn send_ranges<'a>(
        &self,
        w: &mut MultipartWriter<'a>,
        src: &'a DynStore,
        plan: &'a Plan,
        obs: &'a dyn Observer,
    ) -> Result<()> {
        for r in plan.ranges.iter().cloned() {
            let len = r.end - r.start;
            if self.streams_part(&plan.checks, len) {
                let full = &plan.full;
                let open = move || {
                    let r = r.clone();
                    async move { Ok(open_range(src, full, r).await?.body) }
                };
                w.put_part_streamed(len, open).await?;
            } else {
                w.put_part_from(len, true, read_range(src, &plan.full, r, obs)).await?;
            }
        }
        Ok(())
    }

    /// Checks the parts read against the source (its CRC64NVME, its MD5 or
    /// multipart ETag), that a local source did not change, and that
    /// something was checked when `--require-verified` asks for it.
    pub(super) async fn check_read(
        &self,
        src: &DynStore,
        meta: &ObjectMeta,
        plan: &Plan,
        parts: &PartsSent,
    ) -> Result<ReadCheck> {
        let crc_checked = match (plan.src_crc, parts.crc64) {
            (Some(want), Some(got)) if want != got => {
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
        // The ETag expected, when every part's MD5 is known.
        let expected = if plan.crc_only {
            plan.put.etag.clone()
        } else {
            parts.etag.clone()
        };
        let src_check = self.check_parts_read(
            meta,
            &plan.full,
            crc_checked,
            parts.whole_md5.clone(),
            expected.as_deref(),
            plan.same_layout,
            plan.crc_only,
        )?;
        if src.capabilities().source_may_change {
            check_unchanged(src, meta).await?;
        } else if src_check.is_none() && self.opts.require_verified {
            return Err(integrity::unverified(&plan.full));
        }
        Ok(ReadCheck {
            expected,
            src_check,
            crc_checked,
        })
    }
}

/// Reads of a range whose answer names another ETag than the source's,
/// while a fresh HEAD still names the source's.
const ETAG_ATTEMPTS: u32 = 4;

/// Opens one range of the source. A source replaced since it was headed
/// fails. An answer naming another ETag while a fresh HEAD names the
/// source's had its header damaged on the way: the range is read again.
pub(super) async fn open_range(src: &DynStore, full: &ObjectMeta, r: Range<u64>) -> Result<GetResult> {
    let mut attempt = 1;
    loop {
        let g = src.get(&full.key, Some(r.clone())).await?;
        if g.meta.etag.is_none() || full.etag.is_none() || g.meta.etag == full.etag {
            return Ok(g);
        }
        drop(g);
        let unchanged = attempt < ETAG_ATTEMPTS && source_unchanged(src, full).await;
        if !unchanged {
            return Err(err(
                Op::Get,
                &full.key,
                ErrorKind::PreconditionFailed,
                "the source changed while it was copied",
            ));
        }
        tracing::debug!(key = %full.key, start = r.start, attempt, "an answer with another ETag than the source's: reading again");
        haul_store::wrap::count_resent(1);
        attempt += 1;
    }
}

/// Whether a fresh HEAD shows the source as it was listed (same ETag and
/// size): an answer that disagreed with it was damaged on the way.
pub(super) async fn source_unchanged(src: &DynStore, full: &ObjectMeta) -> bool {
    matches!(src.head(&full.key).await, Ok(h) if h.etag == full.etag && h.size == full.size)
}

/// Reads one range of the source into a buffer checked to hold all of it.
/// An answer of another length than asked while a fresh HEAD shows the
/// source unchanged (a length damaged on the way) is read again, a few
/// times at most.
pub(super) async fn read_range(
    src: &DynStore,
    full: &ObjectMeta,
    r: Range<u64>,
    obs: &dyn Observer,
) -> Result<PartBody> {
    let len = r.end - r.start;
    let mut attempt = 1;
    loop {
        let g = open_range(src, full, r.clone()).await?;
        match collect(g, len, &full.key, obs).await {
            Ok(data) => return Ok(PartBody::Bytes(data, None)),
            Err(e) if e.kind == ErrorKind::PreconditionFailed && attempt < ETAG_ATTEMPTS => {
                if !source_unchanged(src, full).await {
                    return Err(e);
                }
                tracing::debug!(key = %full.key, start = r.start, attempt, error = %e, "a range answered with another length: reading again");
                haul_store::wrap::count_resent(1);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
