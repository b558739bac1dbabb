//! Multipart uploads: aborting what fails.

use haul_store::{DynStore, ErrorKind, Key, MultipartId, Op};

use super::{err, Result};

/// Aborts the upload when a step after its creation fails.
pub(super) async fn or_abort<T>(dst: &DynStore, key: &Key, upload: &MultipartId, r: Result<T>) -> Result<T> {
    if r.is_err() {
        abort(dst, key, upload).await;
    }
    r
}

/// The result of a spawned part upload.
pub(super) fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>, key: &Key) -> Result<T> {
    r.map_err(|e| {
        err(
            Op::UploadPart,
            key,
            ErrorKind::Other,
            format!("upload task failed: {e}"),
        )
    })?
}

pub(super) async fn abort(dst: &DynStore, key: &Key, upload: &MultipartId) {
    if let Err(e) = dst.abort_multipart(key, upload).await {
        tracing::warn!(key = %key, error = %e, "could not abort a multipart upload");
    }
}
