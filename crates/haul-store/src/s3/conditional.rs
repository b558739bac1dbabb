//! Conditional writes (`If-None-Match: *` on PutObject and on
//! CompleteMultipartUpload): a write that must not replace an object.
//!
//! AWS S3 (since 2024), MinIO and moto refuse such a write over an existing
//! key with `412 PreconditionFailed`. A server that answers it with
//! `501 NotImplemented` is learnt once per connection to lack conditional
//! writes: from then on each conditional write is a HEAD (the key exists:
//! `PreconditionFailed`, nothing sent) followed by a plain write — an
//! object written by someone else between the two is then replaced (the
//! documented race). A server that ignores the header (garage up to at
//! least v2.0.0 does not read it on PutObject or CompleteMultipartUpload)
//! cannot be told from one that honours it; callers that must not replace
//! look the key up first (`haul watch --if-exists skip` does).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::tagging::not_implemented;
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::ObjectStore;

/// What one connection knows of conditional writes, and which multipart
/// uploads were created for one.
#[derive(Debug, Default)]
pub(crate) struct Conditional {
    missing: AtomicBool,
    uploads: Mutex<HashSet<String>>,
}

impl Conditional {
    /// The server answered a conditional write with NotImplemented.
    pub(crate) fn missing(&self) -> bool {
        self.missing.load(Ordering::Relaxed)
    }

    /// Learns from the error of a conditional write; true when it says the
    /// server has no conditional writes (the write should go again, plain,
    /// after a HEAD).
    pub(crate) fn learn_from(&self, endpoint: &str, e: &StoreError) -> bool {
        if !not_implemented(e) {
            return false;
        }
        if !self.missing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                endpoint,
                error = %e,
                "the server does not implement conditional writes (If-None-Match): a HEAD guards each one instead \
                 (a write by someone else between the HEAD and the write is replaced)"
            );
        }
        true
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashSet<String>) -> T) -> T {
        f(&mut self.uploads.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A multipart upload created with `if_none_match`: its complete is conditional.
    pub(crate) fn remember(&self, upload: &str) {
        self.with(|s| s.insert(upload.to_string()));
    }

    /// Whether the complete of `upload` is conditional.
    pub(crate) fn wanted(&self, upload: &str) -> bool {
        self.with(|s| s.contains(upload))
    }

    /// The upload is completed or aborted.
    pub(crate) fn forget(&self, upload: &str) {
        self.with(|s| s.remove(upload));
    }
}

/// The refusal of a write over an existing key.
pub(crate) fn exists(op: Op, key: &str) -> StoreError {
    StoreError::new(op, key, ErrorKind::PreconditionFailed, "If-None-Match: the key exists")
        .with_code("PreconditionFailed")
}

/// Ok when `key` does not exist (by HEAD); `PreconditionFailed` when it does.
pub(crate) async fn absent(store: &dyn ObjectStore, op: Op, key: &Key) -> Result<()> {
    match store.head(key).await {
        Ok(_) => Err(exists(op, key.as_str())),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.during(op)),
    }
}
