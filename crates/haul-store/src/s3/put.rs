//! One-request writes (PutObject), and the options every write carries
//! (`apply_put_options!`, defined in the module root, and the tag header).

use aws_sdk_s3::primitives::ByteStream as SdkBody;
use bytes::Bytes;

use crate::checksum::{clean_etag, md5_hex_to_base64};
use crate::error::{Op, Result};
use crate::key::Key;
use crate::types::*;
use crate::ObjectStore;

use super::crc::own_md5;
use super::{conditional, sse_kind, S3Store};

/// The `x-amz-tagging` value of `tags` (`k=v&…`, percent-encoded); `None`
/// without tags.
pub(super) fn tagging(tags: &[(String, String)]) -> Option<String> {
    if tags.is_empty() {
        return None;
    }
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    Some(
        tags.iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, NON_ALPHANUMERIC),
                    utf8_percent_encode(v, NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&"),
    )
}

impl S3Store {
    pub(super) async fn put_object(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        // Without conditional writes on this server: a HEAD, then a plain PUT.
        let conditional = opts.if_none_match && !self.conn.conditional.missing();
        if opts.if_none_match && !conditional {
            conditional::absent(self, Op::Put, key).await?;
        }
        let resend = conditional.then(|| payload.clone());
        let crc64 = self.conn.crc64.on() && opts.checksums.crc64nvme.is_some();
        // A CRC64NVME this server is not known to check does not protect
        // the payload: an MD5 does (returned, for the caller's ETag check).
        let own_md5 = own_md5(Op::Put, key, &payload, &opts.checksums, crc64).await?;
        let len = payload.len() as u64;
        let md5 = opts.checksums.md5_hex.as_ref().or(own_md5.as_ref());
        let mut req = self
            .conn
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_length(payload.len() as i64)
            .body(SdkBody::from(payload));
        if let Some(b64) = md5.map(String::as_str).and_then(md5_hex_to_base64) {
            req = req.content_md5(b64);
        }
        if crc64 {
            if let Some(c) = &opts.checksums.crc64nvme {
                req = req.checksum_crc64_nvme(c);
            }
        }
        if conditional {
            req = req.if_none_match("*");
        }
        let req = apply_put_options!(req, opts, true);
        // With Content-MD5 or a CRC64NVME (signed, and checked by the
        // server) the payload need not be hashed again for the signature:
        // no SHA-256 pass on either side (what AWS's own tools do over TLS).
        let out = if md5.is_some() || crc64 {
            req.customize()
                .config_override(self.sending(len))
                .disable_payload_signing()
                .send()
                .await
        } else {
            req.customize().config_override(self.sending(len)).send().await
        }
        .map_err(|e| self.err(Op::Put, key.as_str(), e));
        let out = match (out, resend) {
            (Ok(out), _) => out,
            // NotImplemented: learnt; the next try is a HEAD and a plain PUT.
            (Err(e), Some(p)) if self.conn.conditional.learn_from(&self.conn.domain, &e) => {
                return self.put(key, p, opts).await
            }
            (Err(e), _) => return Err(e),
        };
        Ok(PutResult {
            etag: out.e_tag().map(clean_etag),
            checksums: Checksums {
                md5_hex: own_md5,
                crc64nvme: out.checksum_crc64_nvme().map(str::to_string),
                crc32c: out.checksum_crc32_c().map(str::to_string),
                ..Default::default()
            },
            sse: out.server_side_encryption().map(sse_kind),
        })
    }
}
