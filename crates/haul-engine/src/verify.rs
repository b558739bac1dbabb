//! `verify`: for every source key, the destination has it, with the same
//! size, and the same content by the strongest check both sides allow:
//!
//! 1. ETags, where comparable (both single-part MD5s, or the same
//!    multipart layout);
//! 2. a local file's ETag recomputed in the other side's form — its MD5, or
//!    its multipart ETag with the other side's part size (`HeadObject
//!    ?partNumber=1`) — when only the other side has an ETag;
//! 3. full-object CRC64NVME checksums from both sides' heads;
//! 4. otherwise the MD5 of both bodies, read.

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use haul_store::checksum::{etag_is_plain_md5, etag_parts, multipart_etag};
use haul_store::{DynStore, ObjectMeta, StoreError};
use md5::{Digest, Md5};
use serde::Serialize;

use crate::march::SyncAction;

/// One key's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Finding {
    /// Same content; `how` it was checked.
    Same { key: String, how: String },
    /// In the source, not in the destination.
    Missing { key: String },
    /// Different content (or size).
    Mismatch { key: String, reason: String },
    /// Only in the destination (not a failure).
    Extra { key: String },
    /// A listing entry that cannot be an object (not a failure): a
    /// dangling link, a special file, a name that is not UTF-8, a folder
    /// marker a local directory cannot hold.
    Skipped { key: String, reason: String },
    /// Could not be checked.
    Error { key: String, message: String },
}

impl Finding {
    pub fn is_problem(&self) -> bool {
        matches!(
            self,
            Finding::Missing { .. } | Finding::Mismatch { .. } | Finding::Error { .. }
        )
    }
}

/// Counters of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifySummary {
    pub same: u64,
    pub missing: u64,
    pub mismatched: u64,
    pub extra: u64,
    pub skipped: u64,
    pub errors: u64,
}

/// The ETag of an object computed from its bytes: the MD5, or with
/// `part_size` the multipart ETag of parts of that size.
pub async fn computed_etag(store: &DynStore, o: &ObjectMeta, part_size: Option<u64>) -> Result<String, StoreError> {
    let g = store.get(&o.key, None).await?;
    let mut body = g.body;
    let mut whole = Md5::new();
    let mut part = Md5::new();
    let mut in_part = 0u64;
    let mut parts: Vec<String> = Vec::new();
    while let Some(chunk) = body.try_next().await? {
        match part_size {
            None => whole.update(&chunk),
            Some(ps) => {
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let take = ((ps - in_part) as usize).min(rest.len());
                    part.update(&rest[..take]);
                    in_part += take as u64;
                    rest = &rest[take..];
                    if in_part == ps {
                        parts.push(hex::encode(std::mem::take(&mut part).finalize()));
                        in_part = 0;
                    }
                }
            }
        }
    }
    Ok(match part_size {
        None => hex::encode(whole.finalize()),
        Some(_) => {
            if in_part > 0 || parts.is_empty() {
                parts.push(hex::encode(part.finalize()));
            }
            multipart_etag(parts.iter().map(String::as_str)).unwrap_or_default()
        }
    })
}

/// Whether two objects of the same size hold the same bytes: `Ok(how)` or `Err(why not)`.
pub async fn same_content(
    src: &DynStore,
    s: &ObjectMeta,
    dst: &DynStore,
    d: &ObjectMeta,
) -> Result<Result<String, String>, StoreError> {
    if s.size != d.size {
        return Ok(Err(format!("size differs ({} vs {})", s.size, d.size)));
    }
    let verdict = |same: bool, how: &str, a: &str, b: &str| {
        if same {
            Ok(how.to_string())
        } else {
            Err(format!("{how} differs ({a} vs {b})"))
        }
    };
    // 1. Comparable ETags. A difference between multipart ETags may be a
    // different layout, so only a plain-MD5 difference is final here.
    if let (Some(a), Some(b)) = (&s.etag, &d.etag) {
        if a == b && (etag_is_plain_md5(a) || etag_parts(a).is_some()) {
            return Ok(Ok("ETag".into()));
        }
        if etag_is_plain_md5(a) && etag_is_plain_md5(b) {
            // SSE-KMS ETags are not MD5s: ask before calling it a mismatch.
            let kms =
                |m: Result<ObjectMeta, StoreError>| m.map(|h| h.sse == Some(haul_store::SseKind::Kms)).unwrap_or(false);
            if !kms(src.head(&s.key).await) && !kms(dst.head(&d.key).await) {
                return Ok(verdict(false, "ETag", a, b));
            }
        }
    }
    // 2. One side local: recompute its ETag in the other side's form.
    for (local, lo, other, oo) in [(src, s, dst, d), (dst, d, src, s)] {
        if !local.capabilities().local_reads || other.capabilities().local_reads {
            continue;
        }
        let Some(target) = &oo.etag else { continue };
        let part_size = match etag_parts(target) {
            None if etag_is_plain_md5(target) => None,
            None => continue,
            Some(_) => match other.head_part(&oo.key, 1).await {
                Ok((p1, _)) if p1 > 0 => Some(p1),
                _ => continue,
            },
        };
        let mine = computed_etag(local, lo, part_size).await?;
        return Ok(verdict(&mine == target, "recomputed ETag", &mine, target));
    }
    // 3. Full-object CRC64NVME on both sides.
    let (hs, hd) = (src.head(&s.key).await?, dst.head(&d.key).await?);
    if let (Some(a), Some(b)) = (&hs.checksums.crc64nvme, &hd.checksums.crc64nvme) {
        return Ok(verdict(a == b, "CRC64NVME", a, b));
    }
    // 4. Read both.
    let (a, b) = futures::try_join!(computed_etag(src, s, None), computed_etag(dst, d, None))?;
    Ok(verdict(a == b, "MD5 of the content", &a, &b))
}

/// Checks the actions of a size-comparing march (deletes included): copies
/// are missing or mismatched objects, skips are checked for content.
pub fn verify(
    src: DynStore,
    dst: DynStore,
    actions: BoxStream<'static, SyncAction>,
    concurrency: usize,
    src_prefix: haul_store::Key,
) -> BoxStream<'static, Finding> {
    let rel = move |o: &ObjectMeta| o.key.strip_prefix(&src_prefix).unwrap_or(o.key.as_str()).to_string();
    actions
        .map(move |a| {
            let (src, dst, rel) = (src.clone(), dst.clone(), rel.clone());
            async move {
                match a {
                    SyncAction::Copy { src: s, dst: None, .. } => Finding::Missing { key: rel(&s) },
                    SyncAction::Copy {
                        src: s,
                        dst: Some(_),
                        reason,
                        ..
                    } => Finding::Mismatch { key: rel(&s), reason },
                    SyncAction::Delete { dst: d, .. } => Finding::Extra { key: d.key.to_string() },
                    SyncAction::Unlisted(u) => Finding::Skipped {
                        key: u.key.to_string(),
                        reason: u.reason.to_string(),
                    },
                    SyncAction::Error(e) => Finding::Error {
                        key: e.key.clone(),
                        message: e.to_string(),
                    },
                    SyncAction::Skip { src: s, dst: d, .. } => match same_content(&src, &s, &dst, &d).await {
                        Ok(Ok(how)) => Finding::Same { key: rel(&s), how },
                        Ok(Err(reason)) => Finding::Mismatch { key: rel(&s), reason },
                        Err(e) => Finding::Error {
                            key: rel(&s),
                            message: e.to_string(),
                        },
                    },
                }
            }
        })
        .buffered(concurrency.max(1))
        .boxed()
}

impl VerifySummary {
    pub fn add(&mut self, f: &Finding) {
        let c = match f {
            Finding::Same { .. } => &mut self.same,
            Finding::Missing { .. } => &mut self.missing,
            Finding::Mismatch { .. } => &mut self.mismatched,
            Finding::Extra { .. } => &mut self.extra,
            Finding::Skipped { .. } => &mut self.skipped,
            Finding::Error { .. } => &mut self.errors,
        };
        *c += 1;
    }

    /// 0 when every source object is in the destination with the same content.
    pub fn exit_code(&self) -> i32 {
        if self.missing + self.mismatched + self.errors > 0 {
            1
        } else {
            0
        }
    }
}
