//! Checks of the bytes read from a source against what the source itself
//! declares, for objects whose ETag is not the MD5 of their content:
//!
//! 1. a full-object checksum the source returns (`HeadObject` with
//!    `ChecksumMode=ENABLED`, of the version read): CRC64NVME, CRC32C or
//!    SHA-256 (composite `…-N` checksums of multipart uploads are not
//!    full-object checksums and are not used);
//! 2. a multipart ETag (`…-N`, e.g. the AWS CLI's uploads of 8–16 MiB),
//!    recomputed from the bytes with the source's part layout, read with
//!    `HeadObject?partNumber=` (not for SSE-KMS objects, whose ETags are
//!    not MD5s);
//! 3. otherwise nothing: the object is *unverified* (counted in the
//!    summary; a failure with `--require-verified`).
//!
//! And the check that a local source file did not change while it was
//! read, run before anything replaces the destination.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use haul_store::checksum::{etag_parts, md5_hex, multipart_etag};
use haul_store::{DynStore, ErrorKind, ObjectMeta, Op, StoreError};

use crate::transfer::Verified;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Multipart ETags with more parts than this are not recomputed (one
/// `HeadObject?partNumber=` per part).
const MAX_PARTS_TO_READ: u32 = 64;

/// A full-object checksum a source declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceSum {
    Crc64(u64),
    Crc32c(u32),
    Sha256([u8; 32]),
}

impl SourceSum {
    /// The strongest full-object checksum in `sums`, if any.
    pub(crate) fn of(sums: &haul_store::Checksums) -> Option<SourceSum> {
        if let Some(c) = sums.full_crc64() {
            return Some(SourceSum::Crc64(c));
        }
        let raw = |v: &Option<String>| v.as_deref().and_then(|b| B64.decode(b).ok());
        if let Some(sha) = raw(&sums.sha256).and_then(|r| <[u8; 32]>::try_from(r).ok()) {
            return Some(SourceSum::Sha256(sha));
        }
        raw(&sums.crc32c)
            .and_then(|r| <[u8; 4]>::try_from(r).ok())
            .map(|b| SourceSum::Crc32c(u32::from_be_bytes(b)))
    }

    fn name(&self) -> &'static str {
        match self {
            SourceSum::Crc64(_) => "CRC64NVME",
            SourceSum::Crc32c(_) => "CRC32C",
            SourceSum::Sha256(_) => "SHA-256",
        }
    }

    /// The same checksum of `data`.
    fn of_data(&self, data: &[u8]) -> SourceSum {
        match self {
            SourceSum::Crc64(_) => SourceSum::Crc64(haul_store::checksum::crc64(data)),
            SourceSum::Crc32c(_) => {
                SourceSum::Crc32c(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32)
            }
            SourceSum::Sha256(_) => {
                use sha2::Digest as _;
                SourceSum::Sha256(sha2::Sha256::digest(data).into())
            }
        }
    }

    fn shown(&self) -> String {
        match self {
            SourceSum::Crc64(c) => B64.encode(c.to_be_bytes()),
            SourceSum::Crc32c(c) => B64.encode(c.to_be_bytes()),
            SourceSum::Sha256(s) => B64.encode(s),
        }
    }
}

/// Runs CPU work off the async threads when the data is big.
async fn off_thread<T: Send + 'static>(big: bool, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if big {
        tokio::task::spawn_blocking(f).await.ok()
    } else {
        Some(f())
    }
}

fn mismatch(meta: &ObjectMeta, what: &str, read: &str, want: &str) -> StoreError {
    StoreError::new(
        Op::Get,
        meta.key.as_str(),
        ErrorKind::Integrity,
        format!("data read does not match the source {what} (read {read}, source {want})"),
    )
}

/// Checks a whole object read from `src` (`full`: its metadata as the GET
/// or HEAD returned it) against the source's full-object checksum, else its
/// multipart ETag recomputed with its part layout. `Ok(Some(how))` when
/// checked, `Ok(None)` when the source declares nothing to check against;
/// a mismatch is an integrity error. Plain MD5 ETags are checked by the
/// caller (as Content-MD5).
pub(crate) async fn check_whole(src: &DynStore, full: &ObjectMeta, data: &Bytes) -> Result<Option<Verified>> {
    let big = data.len() > 256 * 1024;
    if full.etag.is_none() && full.checksums.is_empty() {
        // A plain local file: nothing it could declare.
        return Ok(None);
    }
    // A GET does not carry the checksums (ChecksumMode would make the SDK
    // validate malformed ones itself): HEAD, for the same version.
    let sums = match SourceSum::of(&full.checksums) {
        Some(s) => Some(s),
        None => match src.head(&full.key).await {
            Ok(h) if h.etag == full.etag => SourceSum::of(&h.checksums),
            _ => None,
        },
    };
    if let Some(want) = sums {
        let (w, d) = (want.clone(), data.clone());
        let got = off_thread(big, move || w.of_data(&d)).await;
        return match got {
            Some(got) if got == want => Ok(Some(Verified::SourceChecksum)),
            Some(got) => Err(mismatch(full, want.name(), &got.shown(), &want.shown())),
            None => Err(mismatch(full, want.name(), "nothing (hashing failed)", &want.shown())),
        };
    }
    let Some(etag) = full.etag.as_deref() else {
        return Ok(None);
    };
    let Some(n) = etag_parts(etag).filter(|n| (1..=MAX_PARTS_TO_READ).contains(n)) else {
        return Ok(None);
    };
    if full.sse == Some(haul_store::SseKind::Kms) {
        return Ok(None);
    }
    let Some(sizes) = part_sizes(src, full, n).await else {
        return Ok(None);
    };
    let d = data.clone();
    let got = off_thread(big, move || {
        let mut at = 0usize;
        let md5s: Vec<String> = sizes
            .iter()
            .map(|&s| {
                let part = &d[at..at + s as usize];
                at += s as usize;
                md5_hex(part)
            })
            .collect();
        multipart_etag(md5s.iter().map(String::as_str))
    })
    .await
    .flatten();
    match got {
        Some(got) if got == etag => Ok(Some(Verified::SourceEtag)),
        Some(got) => Err(mismatch(full, "multipart ETag", &got, etag)),
        None => Ok(None),
    }
}

/// The size of each of the `n` parts of a multipart source, when the
/// store tells and they add up to the object's size.
async fn part_sizes(src: &DynStore, full: &ObjectMeta, n: u32) -> Option<Vec<u64>> {
    let mut sizes = Vec::with_capacity(n as usize);
    for i in 1..=n {
        match src.head_part(&full.key, i).await {
            Ok((size, count)) if count == n => sizes.push(size),
            _ => return None,
        }
    }
    (sizes.iter().sum::<u64>() == full.size).then_some(sizes)
}

/// Fails if a local source is no longer what was listed (size or mtime):
/// run after reading and before the destination is written or completed,
/// so a file changed while it was read never replaces the destination.
pub(crate) async fn check_unchanged(src: &DynStore, meta: &ObjectMeta) -> Result<()> {
    let now = src.head(&meta.key).await?;
    let changed = now.size != meta.size || (meta.last_modified.is_some() && now.last_modified != meta.last_modified);
    if changed {
        return Err(StoreError::new(
            Op::Verify,
            meta.key.as_str(),
            ErrorKind::PreconditionFailed,
            "the source file changed while it was copied",
        ));
    }
    Ok(())
}

/// The error of an object whose source could not be checked, with
/// `--require-verified`.
pub(crate) fn unverified(meta: &ObjectMeta) -> StoreError {
    StoreError::new(
        Op::Verify,
        meta.key.as_str(),
        ErrorKind::NotSupported,
        format!(
            "the data read cannot be checked against the source (ETag {} is not an MD5, and it has no full-object checksum or readable part layout): not copied (--require-verified)",
            meta.etag.as_deref().unwrap_or("none")
        ),
    )
    .with_code("Unverified")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_sums_are_full_object_only() {
        let crc32c = B64.encode((crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, b"abc") as u32).to_be_bytes());
        let sums = haul_store::Checksums {
            crc32c: Some(crc32c),
            ..Default::default()
        };
        let s = SourceSum::of(&sums);
        assert!(matches!(s, Some(SourceSum::Crc32c(_))), "{s:?}");
        assert_eq!(s.as_ref().map(|s| s.of_data(b"abc")), s);
        // A composite checksum of a multipart upload is not one.
        let composite = haul_store::Checksums {
            crc32c: Some("AAAAAA==-3".into()),
            ..Default::default()
        };
        assert_eq!(SourceSum::of(&composite), None);
    }
}
