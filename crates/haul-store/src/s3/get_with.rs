//! GET with options, in one request: `Range: bytes=-N` for a suffix and
//! `If-Match` for a read that must see the ETag a listing gave (the server
//! answers `412 PreconditionFailed` otherwise), and `versionId` for a
//! version an inventory named. The rare reads HTTP cannot say in one
//! request (an empty range, an empty suffix) go HEAD + GET — never for a
//! version, which is refused then rather than read from the current object.

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::get_with::{by_head_and_get, check_etag, GetOpts, ReadRange};
use crate::key::Key;
use crate::types::GetResult;

use super::get::{body_stream, check_answered_range, meta_of_get};
use super::{range_header, S3Store};

impl S3Store {
    pub(super) async fn get_object_with(&self, key: &Key, opts: GetOpts) -> Result<GetResult> {
        let want = opts.if_match.clone();
        let mut call = self
            .conn
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .set_version_id(opts.version_id.clone());
        let mut suffix = None;
        match &opts.range {
            None => {}
            // Ranges HTTP cannot say (empty ones) go the HEAD + GET way.
            Some(ReadRange::Bounded(r)) if r.start >= r.end => return self.head_and_get(key, opts).await,
            Some(ReadRange::Suffix(0)) => return self.head_and_get(key, opts).await,
            Some(ReadRange::Bounded(r)) => call = call.range(range_header(r)),
            Some(ReadRange::Suffix(n)) => {
                suffix = Some(*n);
                call = call.range(format!("bytes=-{n}"));
            }
        }
        if let Some(etag) = &want {
            call = call.if_match(format!("\"{}\"", etag.trim_matches('"')));
        }
        let out = match call.send().await {
            Ok(out) => out,
            Err(e) => {
                let e = self.err(Op::Get, key.as_str(), e);
                return Err(match (e.kind, &want) {
                    (ErrorKind::PreconditionFailed, Some(w)) => StoreError::new(
                        Op::Get,
                        key.as_str(),
                        ErrorKind::PreconditionFailed,
                        format!("If-Match: the object changed (its ETag is no longer {w})"),
                    )
                    .with_code("PreconditionFailed")
                    .with_source(e),
                    // A suffix of an empty object is unsatisfiable (416) on
                    // some servers: an empty read is the answer.
                    _ if suffix.is_some() && e.code.as_deref() == Some("InvalidRange") => {
                        return self.head_and_get(key, opts).await;
                    }
                    _ => e,
                });
            }
        };
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let total = out
            .content_range()
            .and_then(|cr| cr.rsplit_once('/'))
            .and_then(|(_, t)| t.parse::<u64>().ok())
            .unwrap_or(len);
        let start = match (&opts.range, suffix) {
            (Some(ReadRange::Bounded(r)), _) => {
                check_answered_range(key, Some(r), out.content_range(), len)?;
                r.start
            }
            (_, Some(n)) => {
                // The server answers a suffix with the range it is
                // (`bytes 90-99/100`), or the whole object when it is no
                // longer than the suffix; anything longer ignored the Range.
                if out.content_range().is_none() && len > n {
                    return Err(StoreError::new(
                        Op::Get,
                        key.as_str(),
                        ErrorKind::InvalidRequest,
                        format!("asked for the last {n} bytes, the server answered with {len}"),
                    ));
                }
                total - len.min(total)
            }
            _ => 0,
        };
        let meta = meta_of_get(key, &out, total);
        // A server that ignores If-Match is caught on the answer.
        check_etag(key, want.as_deref(), meta.etag.as_deref())?;
        // A server without versions may ignore `versionId` and answer with
        // the current object: refused, it may be other bytes.
        if let Some(v) = &opts.version_id {
            if meta.version_id.as_deref() != Some(v.as_str()) {
                return Err(StoreError::new(
                    Op::Get,
                    key.as_str(),
                    ErrorKind::NotSupported,
                    format!(
                        "asked for version {v:?}, the server answered with {}",
                        meta.version_id
                            .as_deref()
                            .map_or("no version".to_string(), |h| format!("version {h:?}"))
                    ),
                )
                .with_code("NoVersions"));
            }
        }
        let body = body_stream(key, out.body);
        Ok(GetResult {
            meta,
            range: start..start + len,
            body,
        })
    }

    /// HEAD + GET for what one request cannot say; a version cannot be
    /// read that way (HEAD and GET would see the current object).
    async fn head_and_get(&self, key: &Key, opts: GetOpts) -> Result<GetResult> {
        if let Some(v) = &opts.version_id {
            return Err(StoreError::new(
                Op::Get,
                key.as_str(),
                ErrorKind::InvalidRequest,
                format!("an empty range or suffix of version {v:?} cannot be read in one request"),
            ));
        }
        by_head_and_get(self, key, opts).await
    }
}
