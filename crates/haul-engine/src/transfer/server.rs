//! Server-side copies: CopyObject, and UploadPartCopy ranges.

use haul_store::{CopyOptions, CopySource, DynStore, ErrorKind, Key, MetadataDirective, ObjectMeta, Op, PutOptions};

use super::verify::{etag_is_md5, source_md5};
use super::writer::PartChecks;
use super::{err, Outcome, Result, Strategy, Transfer, Verified};
use crate::report::Observer;

impl Transfer {
    pub(super) async fn server_copy(
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
                Ok(h) if h.sse == Some(haul_store::SseKind::Kms) => None,
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

    pub(super) async fn server_part_copy(
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
        let mut w = self.multipart_writer(dst, dst_key, put, PartChecks::default()).await?;
        w.observe(obs);
        obs.upload_started(dst_key, w.upload_id());
        for r in ranges {
            w.copy_part(source.clone(), r).await?;
        }
        let parts = w.wait_parts().await?;
        // Copied parts' ETags are the MD5s of the ranges when not SSE-KMS.
        let expected = parts.etag.clone().unwrap_or_default();
        let done = w.complete(&parts, Some(&expected)).await?;
        let mut verified = done.verified;
        let done = done.result;
        if verified == Verified::Etag && same_layout && full.sse != Some(haul_store::SseKind::Kms) {
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
}
