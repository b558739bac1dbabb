//! Why reading a bundle failed: typed, naming the archive, the member or
//! the index line, so `haul cat`, `verify` and `unbundle` can say exactly
//! what is damaged and a caller can tell an integrity failure (the bytes
//! are wrong) from a store failure (the request failed).

use haul_store::StoreError;

use super::format::LocatorError;

/// A failure reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A request to the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The archive's last block is not a usable locator.
    #[error("archive {archive:?}: {source}")]
    Locator {
        archive: String,
        #[source]
        source: LocatorError,
    },
    /// Neither the locator nor the sidecar gave an index.
    #[error("archive {archive:?} has no readable index: locator: {locator}; sidecar {sidecar:?}: {sidecar_error}")]
    NoIndex {
        archive: String,
        locator: String,
        sidecar: String,
        sidecar_error: String,
    },
    /// The index bytes do not have the CRC64NVME the locator records.
    #[error("archive {archive:?}: the index is damaged: CRC64NVME {got:016x}, the locator says {want:016x}")]
    IndexCrc { archive: String, want: u64, got: u64 },
    /// A line of an index does not parse.
    #[error("index {source_name:?} line {line}: {reason}")]
    IndexLine {
        source_name: String,
        line: u64,
        reason: String,
    },
    /// A member's bytes do not match the index.
    #[error("archive {archive:?} member {member:?}: {what}")]
    Integrity {
        archive: String,
        member: String,
        what: String,
    },
    /// The archive is not what its index or a tar reader expects.
    #[error("archive {archive:?}: {what}")]
    Malformed { archive: String, what: String },
    /// A local file-system failure (the root of an unbundle).
    #[error("{path}: {source}")]
    Local {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl BundleError {
    /// Whether the failure is damaged data (not a failed request).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            BundleError::Integrity { .. } | BundleError::IndexCrc { .. } | BundleError::Locator { .. }
        ) || matches!(self, BundleError::Store(e) if e.kind == haul_store::ErrorKind::Integrity)
    }
}

/// A result of reading a bundle.
pub type BundleResult<T> = Result<T, BundleError>;
