//! Reads with options: a suffix range (the last N bytes, for a reader that
//! knows an archive's trailer but not its size), `If-Match` (a read that
//! fails when the object no longer has the ETag a listing gave) and a
//! version (an inventory row of a versioned bucket names one).
//!
//! [`crate::ObjectStore::get_with`] has a provided implementation, here,
//! built on the store's own `head` and `get`: a suffix costs a HEAD first,
//! and the ETag is checked on the answer. S3 overrides it with real
//! `Range: bytes=-N` and `If-Match` headers (one request; the server checks)
//! and `versionId`; a store that keeps no versions refuses one
//! ([`ErrorKind::NotSupported`]) rather than read the current object.

use std::ops::Range;

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::GetResult;
use crate::ObjectStore;

/// Which bytes to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadRange {
    /// Bytes `start..end` (as `get`'s range).
    Bounded(Range<u64>),
    /// The last `n` bytes (the whole object when it is shorter).
    Suffix(u64),
}

/// Options of [`crate::ObjectStore::get_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetOpts {
    /// The bytes to read; the whole object when `None`.
    pub range: Option<ReadRange>,
    /// Read only if the object's ETag (without quotes) is this one; else a
    /// [`ErrorKind::PreconditionFailed`] error, code `PreconditionFailed`.
    pub if_match: Option<String>,
    /// Read this version of the object (S3 `versionId`), not the current
    /// one. Stores without versions refuse it.
    pub version_id: Option<String>,
}

impl GetOpts {
    /// The whole object, if it still has `etag`.
    pub fn if_match(etag: impl Into<String>) -> Self {
        GetOpts {
            if_match: Some(etag.into()),
            ..Default::default()
        }
    }

    /// The last `n` bytes.
    pub fn suffix(n: u64) -> Self {
        GetOpts {
            range: Some(ReadRange::Suffix(n)),
            ..Default::default()
        }
    }

    /// Bytes `range` of version `version_id` (`None`: the current object).
    pub fn version_range(version_id: Option<String>, range: Range<u64>) -> Self {
        GetOpts {
            range: Some(ReadRange::Bounded(range)),
            version_id,
            ..Default::default()
        }
    }
}

/// The byte range a suffix of `n` bytes is in an object of `size` bytes.
pub fn suffix_range(size: u64, n: u64) -> Range<u64> {
    size.saturating_sub(n)..size
}

/// The error of a read whose object does not have the ETag asked for.
pub fn etag_mismatch(key: &Key, want: &str, have: &str) -> StoreError {
    StoreError::new(
        Op::Get,
        key.as_str(),
        ErrorKind::PreconditionFailed,
        format!("If-Match: the object changed (its ETag is {have}, not {want})"),
    )
    .with_code("PreconditionFailed")
}

/// Refuses an ETag that is not `want` (quotes ignored). An answer without
/// an ETag cannot be compared and passes.
pub fn check_etag(key: &Key, want: Option<&str>, have: Option<&str>) -> Result<()> {
    let clean = |s: &str| s.trim_matches('"').to_string();
    match (want, have) {
        (Some(w), Some(h)) if clean(w) != clean(h) => Err(etag_mismatch(key, &clean(w), &clean(h))),
        _ => Ok(()),
    }
}

/// The error of a read of a version from a store that keeps none.
pub fn no_versions(key: &Key, version_id: &str) -> StoreError {
    StoreError::new(
        Op::Get,
        key.as_str(),
        ErrorKind::NotSupported,
        format!("version {version_id:?} asked for: this store keeps no object versions"),
    )
    .with_code("NoVersions")
}

/// The provided `get_with`: a HEAD for a suffix (its ETag checked before
/// the GET), then the store's `get`, whose answer's ETag is checked. A
/// version cannot be read this way: refused.
pub async fn by_head_and_get<S: ObjectStore + ?Sized>(store: &S, key: &Key, opts: GetOpts) -> Result<GetResult> {
    if let Some(v) = &opts.version_id {
        return Err(no_versions(key, v));
    }
    let want = opts.if_match.as_deref();
    let range = match opts.range {
        None => None,
        Some(ReadRange::Bounded(r)) => Some(r),
        Some(ReadRange::Suffix(n)) => {
            let meta = store.head(key).await.map_err(|e| e.during(Op::Get))?;
            check_etag(key, want, meta.etag.as_deref())?;
            let r = suffix_range(meta.size, n);
            let g = store.get(key, Some(r)).await?;
            // The object replaced between the HEAD and the GET: the range
            // was computed from another size.
            if meta.etag.is_some() && g.meta.etag.is_some() && meta.etag != g.meta.etag {
                return Err(StoreError::new(
                    Op::Get,
                    key.as_str(),
                    ErrorKind::PreconditionFailed,
                    "the object changed between its HEAD and the suffix read",
                )
                .with_code("PreconditionFailed"));
            }
            return Ok(g);
        }
    };
    let g = store.get(key, range).await?;
    check_etag(key, want, g.meta.etag.as_deref())?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_etags() {
        assert_eq!(suffix_range(100, 10), 90..100);
        assert_eq!(suffix_range(5, 10), 0..5);
        let k = Key::object("k").unwrap_or_else(|e| panic!("{e}"));
        assert!(check_etag(&k, Some("\"abc\""), Some("abc")).is_ok());
        assert!(check_etag(&k, Some("abc"), None).is_ok());
        let e = check_etag(&k, Some("abc"), Some("def"))
            .err()
            .unwrap_or_else(|| panic!("no error"));
        assert_eq!(e.kind, ErrorKind::PreconditionFailed);
        assert!(e.message.contains("ETag is def, not abc"), "{e}");
    }
}
