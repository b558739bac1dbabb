//! Which checksums uploads carry: CRC64NVMEs where the server is known or
//! learnt to check them (once per connection), else a Content-MD5 — the
//! caller's, or one the store computes itself.

use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;

/// A server's refusal of the checksum algorithm (not of anything else in
/// the request: storage class, tags, KMS key).
pub(super) fn refuses_checksums(e: &StoreError) -> bool {
    let msg = e.to_string().to_ascii_lowercase();
    e.kind == ErrorKind::NotSupported || (e.kind == ErrorKind::InvalidRequest && msg.contains("checksum"))
}

/// The MD5 a write carries as Content-MD5 when the caller gave none and no
/// CRC64NVME the server checks protects the payload (`crc_checked`):
/// computed here, and returned in the result's `checksums.md5_hex`.
pub(super) async fn own_md5(
    op: Op,
    key: &Key,
    payload: &Bytes,
    given: &Checksums,
    crc_checked: bool,
) -> Result<Option<String>> {
    if given.md5_hex.is_some() || given.crc64nvme.is_none() || crc_checked {
        return Ok(None);
    }
    if payload.len() <= 256 * 1024 {
        // Small: hashed in place (no thread hop per object).
        return Ok(Some(crate::checksum::md5_hex(payload)));
    }
    let data = payload.clone();
    tokio::task::spawn_blocking(move || crate::checksum::md5_hex(&data))
        .await
        .map(Some)
        .map_err(|e| StoreError::new(op, key.as_str(), ErrorKind::Other, format!("hashing failed: {e}")))
}

/// Whether uploads carry CRC64NVMEs: decided, or to be learnt from the
/// server's first CreateMultipartUpload answer.
#[derive(Debug)]
pub(super) struct Crc64Support(AtomicU8);

impl Crc64Support {
    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;

    pub(super) fn new(setting: Option<bool>) -> Self {
        Crc64Support(AtomicU8::new(match setting {
            Some(true) => Self::YES,
            Some(false) => Self::NO,
            None => Self::UNKNOWN,
        }))
    }

    /// Requests carry CRC64NVME headers.
    pub(super) fn on(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::YES
    }

    /// Still worth asking for (not known to be unsupported).
    pub(super) fn maybe(&self) -> bool {
        self.0.load(Ordering::Relaxed) != Self::NO
    }

    pub(super) fn unknown(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::UNKNOWN
    }

    pub(super) fn learn(&self, supported: bool) {
        let v = if supported { Self::YES } else { Self::NO };
        // Only an unknown setting is learnt; an explicit one stays.
        let _ = self
            .0
            .compare_exchange(Self::UNKNOWN, v, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a refusal of the checksum turns CRC64NVME uploads off for a
    /// connection; any other rejected create (storage class, tags, KMS key)
    /// is the request's own error.
    #[test]
    fn only_checksum_refusals_turn_crc64_off() {
        let e = |kind, msg: &str| StoreError::new(Op::CreateMultipart, "k", kind, msg.to_string());
        assert!(refuses_checksums(&e(ErrorKind::NotSupported, "NotImplemented (501)")));
        assert!(refuses_checksums(&e(
            ErrorKind::InvalidRequest,
            "InvalidArgument (400): Checksum algorithm CRC64NVME is not supported"
        )));
        assert!(!refuses_checksums(&e(
            ErrorKind::InvalidRequest,
            "InvalidStorageClass (400)"
        )));
        assert!(!refuses_checksums(&e(
            ErrorKind::InvalidRequest,
            "InvalidTag (400): bad tag"
        )));
        assert!(!refuses_checksums(&e(
            ErrorKind::PermissionDenied,
            "AccessDenied: checksum"
        )));
        let s = Crc64Support::new(None);
        assert!(s.maybe() && !s.on());
        s.learn(true);
        s.learn(false);
        assert!(s.on(), "learnt once");
        let off = Crc64Support::new(Some(false));
        off.learn(true);
        assert!(!off.maybe(), "an explicit setting is not overridden");
    }
}
