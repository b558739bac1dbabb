//! Server-side copies: CopyObject and UploadPartCopy, from a bucket of the
//! same connection.

use std::ops::Range;

use aws_sdk_s3::types::{MetadataDirective as SdkDirective, TaggingDirective};

use crate::checksum::clean_etag;
use crate::error::{Op, Result};
use crate::key::Key;
use crate::types::*;

use super::put::tagging;
use super::{range_header, sse_kind, S3Store};

/// `bucket/key` for `x-amz-copy-source`, the key percent-encoded.
fn copy_source(src: &CopySource) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!("{}/{}", src.bucket, utf8_percent_encode(src.key.as_str(), KEEP))
}

impl S3Store {
    pub(super) async fn copy_object(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        let mut req = self
            .conn
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(dst.as_str())
            .copy_source(copy_source(src));
        if let Some(m) = &src.if_match {
            req = req.copy_source_if_match(format!("\"{m}\""));
        }
        let req = match opts.directive {
            MetadataDirective::Copy => {
                // Storage class and encryption are not metadata: they apply either way.
                let only = PutOptions {
                    storage_class: opts.put.storage_class.clone(),
                    sse: opts.put.sse.clone(),
                    ..Default::default()
                };
                apply_put_options!(
                    req.metadata_directive(SdkDirective::Copy)
                        .tagging_directive(TaggingDirective::Copy),
                    &only,
                    false
                )
            }
            MetadataDirective::Replace => {
                let r = apply_put_options!(req.metadata_directive(SdkDirective::Replace), &opts.put, false);
                match tagging(&opts.put.tags) {
                    Some(t) => r.tagging_directive(TaggingDirective::Replace).tagging(t),
                    None => r.tagging_directive(TaggingDirective::Copy),
                }
            }
        };
        let out = req
            .customize()
            .config_override(self.no_stall())
            .send()
            .await
            .map_err(|e| self.err(Op::Copy, dst.as_str(), e))?;
        Ok(PutResult {
            etag: out.copy_object_result().and_then(|r| r.e_tag()).map(clean_etag),
            checksums: Checksums::default(),
            sse: out.server_side_encryption().map(sse_kind),
        })
    }

    pub(super) async fn copy_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        let mut req = self
            .conn
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(&upload.0)
            .part_number(part_number as i32)
            .copy_source(copy_source(src))
            .copy_source_range(range_header(&range));
        if let Some(m) = &src.if_match {
            req = req.copy_source_if_match(format!("\"{m}\""));
        }
        let out = req
            .customize()
            .config_override(self.no_stall())
            .send()
            .await
            .map_err(|e| self.err(Op::UploadPartCopy, key.as_str(), e))?;
        let etag = out
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .map(clean_etag)
            .unwrap_or_default();
        Ok(CompletedPart {
            part_number,
            etag,
            size: range.end - range.start,
            checksums: Checksums::default(),
            sse: out.server_side_encryption().map(sse_kind),
        })
    }
}
