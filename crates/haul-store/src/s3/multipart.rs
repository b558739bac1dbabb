//! Multipart uploads: create (learning whether the server takes
//! CRC64NVMEs), upload parts, complete (with the full-object CRC64NVME, and
//! conditionally), abort, and list the uploads in progress under a prefix.

use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart as SdkPart};
use bytes::Bytes;

use crate::checksum::{clean_etag, md5_hex_to_base64};
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;
use crate::ObjectStore;

use super::crc::{own_md5, refuses_checksums};
use super::{conditional, sse_kind, S3Store};

impl S3Store {
    async fn send_create_multipart(
        &self,
        key: &Key,
        opts: &PutOptions,
        crc64: bool,
    ) -> Result<aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput> {
        let req = self
            .conn
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str());
        let req = if crc64 {
            req.checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                .checksum_type(ChecksumType::FullObject)
        } else {
            req
        };
        apply_put_options!(req, opts, true)
            .send()
            .await
            .map_err(|e| self.err(Op::CreateMultipart, key.as_str(), e))
    }

    pub(super) async fn create_upload(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        let crc = opts.full_object_crc64 && self.conn.crc64.maybe();
        let out = match self.send_create_multipart(key, opts, crc).await {
            Ok(out) => out,
            // A server that does not know the algorithm may refuse it: learn
            // that, and create the upload without.
            Err(e) if crc && self.conn.crc64.unknown() && refuses_checksums(&e) => {
                tracing::info!(endpoint = %self.conn.domain, error = %e, "no CRC64NVME uploads: the server refused the algorithm");
                self.conn.crc64.learn(false);
                self.send_create_multipart(key, opts, false).await?
            }
            Err(e) => return Err(e),
        };
        if crc && self.conn.crc64.unknown() {
            // A server that takes the algorithm says so in its answer.
            let acked = out.checksum_algorithm() == Some(&ChecksumAlgorithm::Crc64Nvme);
            tracing::debug!(endpoint = %self.conn.domain, acked, "CRC64NVME uploads");
            self.conn.crc64.learn(acked);
        }
        let id = out.upload_id().ok_or_else(|| {
            StoreError::new(
                Op::CreateMultipart,
                key.as_str(),
                ErrorKind::Other,
                "the server returned no upload id",
            )
        })?;
        if opts.if_none_match {
            self.conn.conditional.remember(id);
        }
        Ok(MultipartId(id.to_string()))
    }

    pub(super) async fn upload_part_buffer(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        let size = payload.len() as u64;
        let crc64 = sums.crc64nvme.as_ref().filter(|_| self.conn.crc64.on());
        let own_md5 = own_md5(Op::UploadPart, key, &payload, sums, crc64.is_some()).await?;
        let mut req = self
            .conn
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(&upload.0)
            .part_number(part_number as i32)
            .content_length(size as i64)
            .body(SdkBody::from(payload));
        let signed_md5 = sums
            .md5_hex
            .as_ref()
            .or(own_md5.as_ref())
            .and_then(|m| md5_hex_to_base64(m));
        if let Some(b64) = &signed_md5 {
            req = req.content_md5(b64);
        }
        if let Some(c) = crc64 {
            req = req.checksum_crc64_nvme(c);
        }
        // Content-MD5 or a CRC64NVME the server checks protects the payload:
        // no SHA-256 of it for the signature.
        let out = if signed_md5.is_some() || crc64.is_some() {
            req.customize()
                .config_override(self.sending(size))
                .disable_payload_signing()
                .send()
                .await
        } else {
            req.customize().config_override(self.sending(size)).send().await
        }
        .map_err(|e| self.err(Op::UploadPart, key.as_str(), e))?;
        let etag = out.e_tag().map(clean_etag).unwrap_or_default();
        Ok(CompletedPart {
            part_number,
            etag,
            size,
            checksums: Checksums {
                md5_hex: own_md5,
                // Only what the server confirms: the caller knows what it sent.
                crc64nvme: out.checksum_crc64_nvme().map(str::to_string),
                ..Default::default()
            },
            sse: out.server_side_encryption().map(sse_kind),
        })
    }

    pub(super) async fn complete_upload(
        &self,
        key: &Key,
        upload: &MultipartId,
        parts: &[CompletedPart],
    ) -> Result<PutResult> {
        // Parts that carry CRC64NVMEs make a full-object CRC64NVME, sent for
        // the server to check against the one it combines.
        let part_crcs = parts
            .iter()
            .map(|p| p.checksums.full_crc64().map(|c| (c, p.size)))
            .collect::<Option<Vec<_>>>()
            .filter(|_| self.conn.crc64.on());
        let full_crc = part_crcs.and_then(crate::checksum::crc64_of_parts);
        let sdk_parts = sdk_parts(parts, full_crc.is_some());
        let wanted = self.conn.conditional.wanted(&upload.0);
        let conditional = wanted && !self.conn.conditional.missing();
        if wanted && !conditional {
            conditional::absent(self, Op::CompleteMultipart, key).await?;
        }
        let mut req = self
            .conn
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(&upload.0)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(sdk_parts)).build());
        if let Some(c) = full_crc {
            req = req
                .checksum_crc64_nvme(crate::checksum::crc64_to_b64(c))
                .checksum_type(ChecksumType::FullObject);
        }
        if conditional {
            req = req.if_none_match("*");
        }
        let res = req.customize().config_override(self.no_stall()).send().await;
        if res.is_ok() {
            self.conn.conditional.forget(&upload.0);
        }
        match res {
            Ok(out) => Ok(PutResult {
                etag: out.e_tag().map(clean_etag),
                checksums: Checksums {
                    crc64nvme: out.checksum_crc64_nvme().map(str::to_string),
                    ..Default::default()
                },
                sse: out.server_side_encryption().map(sse_kind),
            }),
            // Some servers answer 200 with a body the SDK cannot parse (moto
            // 5.2.1 names the root element CompleteMultipartUploadResponse).
            // The upload may have completed: HEAD tells, and the caller's
            // ETag check (MD5 of the part MD5s) decides whether it is ours.
            Err(aws_sdk_s3::error::SdkError::ServiceError(se))
                if se.raw().status().as_u16() == 200
                    && aws_sdk_s3::error::ProvideErrorMetadata::code(se.err()).is_none() =>
            {
                tracing::warn!(key = %key, "unreadable CompleteMultipartUpload answer; confirming with HEAD");
                self.completed_by_head(key).await
            }
            Err(e) => {
                let e = self.err(Op::CompleteMultipart, key.as_str(), e);
                if conditional && self.conn.conditional.learn_from(&self.conn.domain, &e) {
                    // Learnt: the next try is a HEAD and a plain complete.
                    return self.complete_multipart(key, upload, parts).await;
                }
                Err(e)
            }
        }
    }

    pub(super) async fn abort_upload(&self, key: &Key, upload: &MultipartId) -> Result<()> {
        self.conn.conditional.forget(&upload.0);
        match self
            .conn
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(&upload.0)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = self.err(Op::AbortMultipart, key.as_str(), e);
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// ListMultipartUploads under `prefix`, every page (key marker and
    /// upload-id marker carried from one page to the next).
    pub(super) async fn list_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let out = self
                .conn
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix.as_str())
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.err(Op::List, prefix.as_str(), e))?;
            for u in out.uploads() {
                let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                // A key outside the prefix is a server's mistake, never ours to abort.
                if !k.starts_with(prefix.as_str()) {
                    continue;
                }
                found.push((Key::object(k)?, MultipartId(id.to_string())));
            }
            let next = (
                out.next_key_marker().map(str::to_string),
                out.next_upload_id_marker().map(str::to_string),
            );
            match next_page(out.is_truncated(), next, (&key_marker, &id_marker)) {
                Some(n) => (key_marker, id_marker) = n,
                None => break,
            }
        }
        Ok(found)
    }

    /// The result of an upload completed with an answer that could not be
    /// read, from a HEAD of the object.
    async fn completed_by_head(&self, key: &Key) -> Result<PutResult> {
        let head = self.head(key).await.map_err(|e| e.during(Op::CompleteMultipart))?;
        Ok(PutResult {
            etag: head.etag,
            // The object's CRC64NVME, for the caller's check when the
            // parts were checked by theirs.
            checksums: Checksums {
                crc64nvme: head.checksums.crc64nvme,
                ..Default::default()
            },
            sse: head.sse,
        })
    }
}

/// The parts as CompleteMultipartUpload lists them, with their CRC64NVMEs
/// when the full-object one is sent (`with_crc`).
fn sdk_parts(parts: &[CompletedPart], with_crc: bool) -> Vec<SdkPart> {
    parts
        .iter()
        .map(|p| {
            let b = SdkPart::builder()
                .part_number(p.part_number as i32)
                .e_tag(format!("\"{}\"", p.etag));
            match (with_crc, &p.checksums.crc64nvme) {
                (true, Some(c)) => b.checksum_crc64_nvme(c),
                _ => b,
            }
            .build()
        })
        .collect()
}

type Markers = (Option<String>, Option<String>);

/// The markers of the next page of ListMultipartUploads, or none when the
/// listing is done: a page that is not truncated, or one whose markers are
/// missing or do not move on (a server's mistake that would never end).
fn next_page(truncated: Option<bool>, next: Markers, current: (&Option<String>, &Option<String>)) -> Option<Markers> {
    let moved = (next.0.is_some() || next.1.is_some()) && (&next.0, &next.1) != current;
    (truncated == Some(true) && moved).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_pages_follow_the_markers_and_always_end() {
        let s = |v: &str| Some(v.to_string());
        let none = (&None, &None);
        assert_eq!(next_page(Some(true), (s("k"), s("u")), none), Some((s("k"), s("u"))));
        assert_eq!(next_page(Some(false), (s("k"), s("u")), none), None);
        assert_eq!(next_page(None, (s("k"), s("u")), none), None);
        assert_eq!(
            next_page(Some(true), (None, None), none),
            None,
            "truncated without markers"
        );
        let (k, u) = (s("k"), s("u"));
        assert_eq!(
            next_page(Some(true), (s("k"), s("u")), (&k, &u)),
            None,
            "markers that do not move"
        );
        assert_eq!(
            next_page(Some(true), (s("k"), s("v")), (&k, &u)),
            Some((s("k"), s("v")))
        );
    }
}
