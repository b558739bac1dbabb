//! Whether the server keeps object tags, learnt once per connection.
//!
//! Tagging is optional among S3-compatible servers: garage answers every
//! `*ObjectTagging` request with `501 NotImplemented` (its router refuses
//! the endpoint before looking the key up) and Cloudflare R2 likewise;
//! AWS, MinIO and moto implement it. A `GetObjectTagging` of a key that
//! does not exist tells them apart without writing anything: `NoSuchKey`
//! (or `AccessDenied`) means the API is there, `NotImplemented`/`501` or
//! `MethodNotAllowed`/`405` means it is not. An answer to a real
//! `GetObjectTagging` teaches the same.

use tokio::sync::OnceCell;

use crate::error::{ErrorKind, Result, StoreError};

/// The learnt answer, shared by every bucket of one connection.
#[derive(Debug, Default)]
pub(crate) struct TaggingSupport(OnceCell<bool>);

impl TaggingSupport {
    /// The answer, probing with `probe` the first time (a probe that fails
    /// for a reason that says nothing, e.g. a timeout, is not remembered).
    pub(crate) async fn get_or_probe<F, Fut>(&self, probe: F) -> Result<bool>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        self.0
            .get_or_try_init(|| async {
                match probe().await {
                    Ok(()) => Ok(true),
                    Err(e) => answer_to(&e).ok_or(e),
                }
            })
            .await
            .copied()
    }

    /// Known to be missing: tagging requests are not sent any more.
    pub(crate) fn missing(&self) -> bool {
        self.0.get() == Some(&false)
    }

    /// Learns from the error of a real tagging request, if it tells.
    pub(crate) fn learn_from(&self, e: &StoreError) {
        if answer_to(e) == Some(false) {
            let _ = self.0.set(false);
        }
    }
}

/// What an error answer to a tagging request says about the API: `None`
/// when it says nothing (retryable, credentials).
fn answer_to(e: &StoreError) -> Option<bool> {
    if not_implemented(e) {
        return Some(false);
    }
    match e.kind {
        ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidRequest => Some(true),
        _ => None,
    }
}

/// The server does not implement the request (rather than refusing it).
pub(crate) fn not_implemented(e: &StoreError) -> bool {
    e.kind == ErrorKind::NotSupported || matches!(e.code.as_deref(), Some("NotImplemented" | "MethodNotAllowed"))
}
