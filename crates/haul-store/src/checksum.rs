//! Checksums and ETags: MD5 (single-part ETags), the multipart ETag
//! (MD5 of the part MD5s, then `-N`), CRC32C and CRC64NVME as S3 encodes them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crc_fast::{CrcAlgorithm, Digest};
use md5::{Digest as _, Md5};

/// Hashes a payload as S3 would: MD5 always, CRCs on request.
#[derive(Clone)]
pub struct Hasher {
    md5: Md5,
    crc32c: Option<Digest>,
    crc64: Option<Digest>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

impl Hasher {
    pub fn new(crc32c: bool, crc64nvme: bool) -> Self {
        Hasher {
            md5: Md5::new(),
            crc32c: crc32c.then(|| Digest::new(CrcAlgorithm::Crc32Iscsi)),
            crc64: crc64nvme.then(|| Digest::new(CrcAlgorithm::Crc64Nvme)),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        if let Some(c) = self.crc32c.as_mut() {
            c.update(data);
        }
        if let Some(d) = self.crc64.as_mut() {
            d.update(data);
        }
    }

    pub fn finish(self) -> crate::types::Checksums {
        crate::types::Checksums {
            md5_hex: Some(hex::encode(self.md5.finalize())),
            crc32c: self.crc32c.map(|c| B64.encode((c.finalize() as u32).to_be_bytes())),
            crc64nvme: self.crc64.map(|d| crc64_to_b64(d.finalize())),
            sha256: None,
        }
    }
}

/// Checks a CRC64NVME sent with a payload (as S3 checks
/// `x-amz-checksum-crc64nvme`); returns it when one was given.
pub(crate) fn check_crc64(op: crate::Op, key: &str, data: &[u8], given: Option<&str>) -> crate::Result<Option<String>> {
    let Some(want) = given else { return Ok(None) };
    let got = crc64_to_b64(crc64(data));
    if want != got {
        return Err(crate::StoreError::new(
            op,
            key,
            crate::ErrorKind::Integrity,
            format!("x-amz-checksum-crc64nvme {want} does not match the payload ({got})"),
        )
        .with_code("BadDigest"));
    }
    Ok(Some(got))
}

/// CRC64NVME of `data` (hardware-accelerated; its cost: docs/BENCHMARKS.md,
/// "Notes from the code").
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Nvme, data)
}

/// The CRC64NVME of `a` followed by `b`, from their CRCs and `b`'s length:
/// how S3 builds a full-object checksum from the parts' checksums.
pub fn crc64_combine(a: u64, b: u64, b_len: u64) -> u64 {
    crc_fast::checksum_combine(CrcAlgorithm::Crc64Nvme, a, b, b_len)
}

/// The full-object CRC64NVME of parts given as (CRC, length), in order.
pub fn crc64_of_parts(parts: impl IntoIterator<Item = (u64, u64)>) -> Option<u64> {
    parts.into_iter().fold(None, |acc, (crc, len)| {
        Some(acc.map_or(crc, |a| crc64_combine(a, crc, len)))
    })
}

/// A CRC64NVME as S3 sends it (base64 of the big-endian value).
pub fn crc64_to_b64(crc: u64) -> String {
    B64.encode(crc.to_be_bytes())
}

/// Parses a *full-object* CRC64NVME as S3 sends it; `None` for anything
/// else (a composite `…-N` value, or not 8 bytes of base64).
pub fn crc64_from_b64(b64: &str) -> Option<u64> {
    let raw = B64.decode(b64).ok()?;
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

/// MD5 of `data` as hex.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// Base64 of an MD5 given as hex (the `Content-MD5` header).
pub fn md5_hex_to_base64(hex_md5: &str) -> Option<String> {
    hex::decode(hex_md5).ok().map(|b| B64.encode(b))
}

/// The ETag S3 gives a multipart object made of parts with these MD5s.
pub fn multipart_etag<'a>(part_md5s_hex: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut h = Md5::new();
    let mut n = 0u32;
    for p in part_md5s_hex {
        h.update(hex::decode(p).ok()?);
        n += 1;
    }
    Some(format!("{}-{}", hex::encode(h.finalize()), n))
}

/// Strips quotes from an ETag.
pub fn clean_etag(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// The part count of a multipart ETag (`hex-N`).
pub fn etag_parts(etag: &str) -> Option<u32> {
    let (_, n) = etag.rsplit_once('-')?;
    n.parse().ok()
}

/// Whether an ETag looks like a plain MD5 (32 hex digits).
pub fn etag_is_plain_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The part size the AWS CLI (and boto3's transfer manager) picks for an
/// object: 8 MiB, doubled until the object fits in 10,000 parts.
pub fn aws_cli_part_size(size: u64) -> u64 {
    let mut part = 8 * 1024 * 1024u64;
    while size.div_ceil(part) > 10_000 {
        part *= 2;
    }
    part
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // MD5("") and CRC32C("123456789") = 0xE3069283.
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        let mut h = Hasher::new(true, true);
        h.update(b"123456789");
        let c = h.finish();
        assert_eq!(
            c.crc32c.as_deref(),
            Some(B64.encode(0xE306_9283u32.to_be_bytes()).as_str())
        );
        // CRC-64/NVME check value for "123456789" is 0xAE8B14860A799888.
        assert_eq!(
            c.crc64nvme.as_deref(),
            Some(B64.encode(0xAE8B_1486_0A79_9888u64.to_be_bytes()).as_str())
        );
        assert_eq!(crc64(b"123456789"), 0xAE8B_1486_0A79_9888);
    }

    #[test]
    fn crc64_parts_combine_into_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = crc64(&data);
        for cut in [1usize, 4096, 33_333, 99_999] {
            let parts = data.chunks(cut).map(|c| (crc64(c), c.len() as u64));
            assert_eq!(crc64_of_parts(parts), Some(whole), "parts of {cut}");
        }
        assert_eq!(crc64_of_parts(std::iter::empty()), None);
        assert_eq!(crc64_from_b64(&crc64_to_b64(whole)), Some(whole));
        // A composite checksum is not a full-object one.
        assert_eq!(crc64_from_b64("AAAAAAAAAAA=-3"), None);
    }

    #[test]
    fn multipart_etag_matches_s3_rule() {
        let a = md5_hex(b"aaaa");
        let b = md5_hex(b"bb");
        let mut cat = hex::decode(&a).unwrap_or_default();
        cat.extend(hex::decode(&b).unwrap_or_default());
        let expect = format!("{}-2", md5_hex(&cat));
        assert_eq!(multipart_etag([a.as_str(), b.as_str()]), Some(expect));
        assert_eq!(etag_parts("abc-12"), Some(12));
        assert_eq!(etag_parts("d41d8cd98f00b204e9800998ecf8427e"), None);
        assert!(etag_is_plain_md5("d41d8cd98f00b204e9800998ecf8427e"));
    }

    #[test]
    fn cli_part_size_rule() {
        assert_eq!(aws_cli_part_size(1), 8 << 20);
        assert_eq!(aws_cli_part_size(80_000 << 20), 8 << 20);
        assert_eq!(aws_cli_part_size((80_000 << 20) + 1), 16 << 20);
    }
}
