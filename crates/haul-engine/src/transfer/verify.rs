//! Checking what arrived against what was sent, and what was read against the source.

use haul_store::checksum::{crc64_to_b64, etag_is_plain_md5};
use haul_store::{CompletedPart, DynStore, ErrorKind, Key, ObjectMeta, Op, PutOptions};

use haul_store::SseKind;

use super::{err, Outcome, Result, Transfer, Verified};

/// Whether ETags written to `dst` with these options are MD5s. `applied` is
/// the encryption the server reports having used: a bucket can default to
/// SSE-KMS without being asked, and then ETags are not MD5s.
pub(super) fn etag_is_md5(dst: &DynStore, put: &PutOptions, applied: Option<&SseKind>) -> bool {
    dst.capabilities().etag_is_md5
        && !matches!(put.sse, Some(haul_store::Sse::Kms { .. }))
        && applied != Some(&SseKind::Kms)
}

/// The source's ETag as the MD5 of its content, when it is one.
pub(super) fn source_md5(meta: &ObjectMeta) -> Option<&str> {
    let kms = meta.sse == Some(SseKind::Kms);
    meta.etag.as_deref().filter(|e| !kms && etag_is_plain_md5(e))
}

/// Checks a part's ETag against the MD5 of the data sent, when the ETag is an MD5.
pub(super) fn check_part(dst: &DynStore, put: &PutOptions, key: &Key, part: &CompletedPart, md5: &str) -> Result<()> {
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

impl Transfer {
    /// With `--preserve-etag`: fails an object whose ETag came out different.
    pub(super) fn kept_etag(&self, meta: &ObjectMeta, dst_key: &Key, out: Outcome) -> Result<Outcome> {
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

    /// What the parts read were checked against (before completing): the
    /// source's CRC64NVME (`crc_checked`, compared by the caller), its MD5
    /// ETag against the whole object's MD5, or its multipart ETag against
    /// the one of the parts read. A mismatch is an integrity error; `None`
    /// when nothing could be compared.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_parts_read(
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
}

/// Checks what the destination answered against what was sent: the
/// full-object CRC64NVME when it returns one, the ETag when it is an
/// MD5 and the one expected is known, else the size (with the server's
/// checks of each request's Content-MD5 or CRC64NVME).
pub(super) async fn check_written(
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
