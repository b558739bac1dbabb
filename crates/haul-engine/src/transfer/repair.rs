//! Repairing a streamed multipart copy whose data was damaged in transit
//! (issue 12, item 6): through a network that flips a byte now and then, a
//! large object's check fails on nearly every attempt, as one of its many
//! parts is almost always hit, and retrying the whole object never gets
//! every part clean at once.
//!
//! When the data read fails the source's check (its multipart ETag, or its
//! full-object CRC64NVME) and the source is unchanged (same ETag and size
//! on a fresh HEAD), each part is read again and sent again (replacing
//! the part of that number) until two reads of it hash the same: two reads
//! damaged at random do not produce the same wrong bytes. Bounded: at most
//! [`READS_PER_PART`] reads of a part and [`REREAD_FACTOR`] times the
//! object's size read again. The check is then computed again from the
//! parts as written, exactly as the first time: the agreement only decides
//! which reads to keep, the source's ETag or CRC64NVME decides whether the
//! object is completed. Anything else fails as before: the upload is
//! aborted and nothing lands.

use haul_store::{DynStore, ErrorKind, ObjectMeta, StoreError};

use super::multipart::{open_range, read_range, Plan, ReadCheck};
use super::writer::{MultipartWriter, PartDigest, PartsSent};
use super::{Result, Transfer};
use crate::report::NoObserver;

/// Reads of one part at most, the first one included.
pub(super) const READS_PER_PART: usize = 16;
/// Bytes read again at most, in multiples of the object's size.
pub(super) const REREAD_FACTOR: u64 = 6;

/// The failed check, with why it could not be repaired.
fn not_repaired(failed: StoreError, why: impl std::fmt::Display) -> StoreError {
    let message = format!("{} (not repaired: {why})", failed.message);
    StoreError { message, ..failed }
}

impl Transfer {
    /// Whether the failed check `e` of the data read can be repaired: an
    /// integrity mismatch of a remote source whose check can be computed
    /// again from the parts' digests (the multipart ETag of its own part
    /// layout, or its full-object CRC64NVME combined from the parts').
    pub(super) fn repairable(&self, src: &DynStore, plan: &Plan, e: &StoreError) -> bool {
        e.kind == ErrorKind::Integrity
            && !src.capabilities().source_may_change
            && !plan.checks.whole_md5
            && ((plan.src_crc.is_some() && plan.checks.crc64) || (plan.same_layout && plan.full.etag_parts().is_some()))
    }

    /// Reads and sends again the parts of `w` until two reads of each
    /// agree, then checks the data against the source again; see the
    /// module documentation. `failed` is the check that failed.
    pub(super) async fn repair<'a>(
        &self,
        w: &mut MultipartWriter<'a>,
        src: &'a DynStore,
        meta: &ObjectMeta,
        plan: &'a Plan,
        failed: StoreError,
    ) -> Result<(PartsSent, ReadCheck)> {
        let key = &plan.full.key;
        match src.head(key).await {
            Ok(h) if h.etag == plan.full.etag && h.size == plan.full.size => {}
            Ok(_) => return Err(not_repaired(failed, "the source changed")),
            Err(e) => return Err(not_repaired(failed, e)),
        }
        // The digests of every read of each part, the first pass's first.
        let mut seen: Vec<Vec<PartDigest>> = Vec::with_capacity(plan.ranges.len());
        for n in 1..=plan.ranges.len() as u32 {
            match w.part_digest(n) {
                Some(d) if d != (None, None) => seen.push(vec![d]),
                _ => return Err(not_repaired(failed, format!("part {n} has no digest"))),
            }
        }
        tracing::info!(key = %key, error = %failed, "the data read does not match the source: reading the parts again");
        let mut agreed = vec![false; seen.len()];
        let budget = REREAD_FACTOR.saturating_mul(plan.full.size.max(1));
        let (mut spent, mut reads, mut replaced) = (0u64, 0u64, 0u32);
        loop {
            let todo: Vec<usize> = (0..seen.len()).filter(|&i| !agreed[i]).collect();
            if todo.is_empty() {
                break;
            }
            for &i in &todo {
                let r = plan.ranges[i].clone();
                let len = r.end - r.start;
                if seen[i].len() >= READS_PER_PART {
                    let why = format!("part {} read {READS_PER_PART} times without two reads agreeing", i + 1);
                    return Err(not_repaired(failed, why));
                }
                if spent + len > budget {
                    let why = format!("{spent} bytes read again without every part agreeing");
                    return Err(not_repaired(failed, why));
                }
                spent += len;
                reads += 1;
                let n = i as u32 + 1;
                if self.streams_part(&plan.checks, len) {
                    let full = &plan.full;
                    let open = move || {
                        let r = r.clone();
                        async move { Ok(open_range(src, full, r).await?.body) }
                    };
                    w.resend_part_streamed(n, len, open).await?;
                } else {
                    w.resend_part_from(n, len, read_range(src, &plan.full, r, &NoObserver))
                        .await?;
                }
            }
            w.wait_parts().await?;
            haul_store::wrap::count_resent(todo.len() as u64);
            for &i in &todo {
                let n = i as u32 + 1;
                let d = w.part_digest(n).unwrap_or((None, None));
                if seen[i].contains(&d) {
                    agreed[i] = true;
                    if d != seen[i][0] {
                        replaced += 1;
                    }
                }
                tracing::debug!(key = %key, part = n, read = seen[i].len() + 1, agreed = agreed[i], "part read again");
                seen[i].push(d);
            }
        }
        let parts = w.wait_parts().await?;
        let read = self
            .check_read(src, meta, plan, &parts)
            .await
            .map_err(|e| not_repaired(e, "the parts read twice alike still do not match the source"))?;
        tracing::info!(key = %key, reads, bytes = spent, replaced, "repaired: the parts read again match the source");
        Ok((parts, read))
    }
}
