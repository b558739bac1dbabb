//! Sending one part of a multipart upload, checked: from a buffer (its
//! MD5 against the part's ETag, or its CRC64NVME against the one the
//! server confirms) or from a stream (hashed as the chunks pass).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::StreamExt;
use haul_store::checksum::{crc64_to_b64, Hasher};
use haul_store::{ByteStream, Checksums, CompletedPart, DynStore, ErrorKind, Key, MultipartId, Op, PutOptions};

use super::body::{md5_of, sums_of};
use super::verify::check_part;
use super::writer::PartChecks;
use super::{err, Result};
use crate::budget::BudgetPermit;

/// One part sent.
pub(super) struct Sent {
    pub(super) part: CompletedPart,
    /// Its MD5 (`None` when the destination checked its CRC64NVME instead).
    pub(super) md5: Option<String>,
    /// Its CRC64NVME and length.
    pub(super) crc: Option<(u64, u64)>,
    /// Its data, until hashed into the whole-object MD5.
    pub(super) kept: Option<(Bytes, Option<BudgetPermit>)>,
}

/// Uploads one part from a buffer, checked as `checks` says.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_bytes(
    dst: &DynStore,
    key: &Key,
    upload: &MultipartId,
    put: &PutOptions,
    checks: PartChecks,
    n: u32,
    data: Bytes,
    permit: Option<BudgetPermit>,
) -> Result<Sent> {
    let len = data.len() as u64;
    // A local destination hashes what it writes (one pass over the data,
    // not two): its part ETag is the MD5. A store that checks CRC64NVMEs
    // is sent only the CRC.
    let md5_here = !checks.dst_hashes && !checks.dst_checks_crc;
    let mut sums = sums_of(data.clone(), md5_here, checks.crc64).await;
    let mut part = dst.upload_part(key, upload, n, data.clone(), &sums).await?;
    let crc = sums.full_crc64();
    if checks.dst_checks_crc {
        match (crc, part.checksums.full_crc64()) {
            // The server checked the part's CRC64NVME.
            (Some(sent), Some(got)) if sent == got => {}
            (Some(sent), Some(got)) => {
                return Err(err(
                    Op::UploadPart,
                    key,
                    ErrorKind::Integrity,
                    format!(
                        "part {n}: the destination's CRC64NVME {} does not match the data sent ({})",
                        crc64_to_b64(got),
                        crc64_to_b64(sent)
                    ),
                ));
            }
            // It did not say it checked one. An MD5 the store sent as
            // Content-MD5 was checked by the server; otherwise nothing
            // checked the part: it goes again with its MD5 (the data is
            // still at hand).
            _ => match part.checksums.md5_hex.take() {
                Some(own) => sums.md5_hex = Some(own),
                None => {
                    sums.md5_hex = Some(md5_of(data.clone()).await);
                    part = dst.upload_part(key, upload, n, data.clone(), &sums).await?;
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
            check_part(dst, put, key, &part, &md5)?;
            Some(md5)
        }
        // Checked by its CRC64NVME: no MD5 of this part.
        None if checks.dst_checks_crc => None,
        None => Some(part.etag.clone()),
    };
    Ok(Sent {
        part,
        md5,
        crc: crc.map(|c| (c, len)),
        kept: checks.whole_md5.then_some((data, permit)),
    })
}

/// Uploads one part from a stream, written as it arrives. A store that
/// hashes what it writes (a local directory) returns the part's MD5 and
/// CRC64NVME; for any other, both are computed here as the chunks pass and
/// the part's ETag is checked against the MD5.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_stream(
    dst: &DynStore,
    key: &Key,
    upload: &MultipartId,
    put: &PutOptions,
    checks: PartChecks,
    n: u32,
    size: u64,
    body: ByteStream,
) -> Result<Sent> {
    if checks.dst_hashes {
        let part = dst.upload_part_stream(key, upload, n, size, body).await?;
        let crc = part.checksums.full_crc64().map(|c| (c, size));
        // Empty when the upload was given the object's ETag.
        let md5 = Some(part.etag.clone()).filter(|e| !e.is_empty());
        return Ok(Sent {
            part,
            md5,
            crc,
            kept: None,
        });
    }
    let hasher = Arc::new(Mutex::new(Some(Hasher::new(false, true))));
    let tap = hasher.clone();
    let body = body
        .map(move |chunk| {
            if let Ok(c) = &chunk {
                if let Some(h) = tap.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    h.update(c);
                }
            }
            chunk
        })
        .boxed();
    let mut part = dst.upload_part_stream(key, upload, n, size, body).await?;
    let sums: Checksums = hasher
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(Hasher::finish)
        .unwrap_or_default();
    if let (Some(sent), Some(got)) = (sums.full_crc64(), part.checksums.full_crc64()) {
        if sent != got {
            return Err(err(
                Op::UploadPart,
                key,
                ErrorKind::Integrity,
                format!(
                    "part {n}: the destination's CRC64NVME {} does not match the data sent ({})",
                    crc64_to_b64(got),
                    crc64_to_b64(sent)
                ),
            ));
        }
    }
    let md5 = sums.md5_hex.clone().unwrap_or_default();
    check_part(dst, put, key, &part, &md5)?;
    if part.checksums.crc64nvme.is_none() {
        part.checksums.crc64nvme = sums.crc64nvme.clone();
    }
    Ok(Sent {
        crc: sums.full_crc64().map(|c| (c, size)),
        part,
        md5: Some(md5),
        kept: None,
    })
}
