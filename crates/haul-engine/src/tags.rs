//! Which tags a copy sets on its destination, on servers that may lack the
//! tagging API.
//!
//! Tagging is optional in the S3 world: garage and Cloudflare R2 answer
//! `GetObjectTagging` with `501 NotImplemented` and drop `x-amz-tagging`.
//! A copy that carries tags over as a courtesy (the Copy directive, bucket
//! to bucket) goes on without them and says so once ([`Notices`]);
//! `--require-tags`, or tags the user asked for explicitly (`--tag`), make
//! the missing feature a per-object failure instead.
//!
//! Tags are fetched *before* the object's body is read: a GET holds its
//! request slot until the body is consumed, and asking the same limiter for
//! another slot while holding one deadlocks once every slot is held that way.

use std::collections::BTreeSet;
use std::sync::Mutex;

use haul_store::{DynStore, ErrorKind, Key, MetadataDirective, Op, StoreError};

use crate::transfer::TransferOptions;

/// Things a run could not do for every object, each said once in the
/// summary ("tags not copied: the source does not support object tagging").
#[derive(Debug, Default)]
pub struct Notices(Mutex<BTreeSet<String>>);

impl Notices {
    /// Records a notice; true the first time it is seen (log it then).
    pub fn add(&self, notice: impl Into<String>) -> bool {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(notice.into())
    }

    /// The notices so far, sorted.
    pub fn list(&self) -> Vec<String> {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.iter().cloned().collect()
    }
}

/// The tags to set on the copy of `key` from `src` into `dst`.
pub(crate) async fn tags_to_set(
    opts: &TransferOptions,
    notices: &Notices,
    src: &DynStore,
    dst: &DynStore,
    key: &Key,
) -> Result<Vec<(String, String)>, StoreError> {
    let (s, d) = (src.capabilities(), dst.capabilities());
    if !opts.put.tags.is_empty() {
        return explicit_tags(opts, dst, key).await;
    }
    let carried = opts.directive == MetadataDirective::Copy && s.tags && d.tags && s.carries_tags && d.carries_tags;
    if !carried {
        return Ok(Vec::new());
    }
    let tags = if src.tagging_supported().await? {
        match src.get_tags(key).await {
            Ok(tags) => Some(tags),
            Err(e) if e.kind == ErrorKind::NotSupported => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    match tags {
        None => without_tags(opts, notices, key, "the source does not support object tagging"),
        Some(tags) if tags.is_empty() => Ok(tags),
        Some(_) if !dst.tagging_supported().await? => {
            without_tags(opts, notices, key, "the destination does not support object tagging")
        }
        Some(tags) => Ok(tags),
    }
}

/// The tags given with `--tag`, refused (per object) by a destination
/// without tagging: tags asked for are never dropped quietly.
pub(crate) async fn explicit_tags(
    opts: &TransferOptions,
    dst: &DynStore,
    key: &Key,
) -> Result<Vec<(String, String)>, StoreError> {
    let tags = &opts.put.tags;
    if !tags.is_empty() && !dst.tagging_supported().await? {
        return Err(StoreError::new(
            Op::Put,
            key.as_str(),
            ErrorKind::NotSupported,
            format!("--tag cannot be applied: {} does not support object tagging", dst.url()),
        )
        .with_code("TaggingNotSupported"));
    }
    Ok(tags.clone())
}

/// The copy goes on without its tags (noticed once), unless they are required.
fn without_tags(
    opts: &TransferOptions,
    notices: &Notices,
    key: &Key,
    why: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    if opts.require_tags {
        return Err(StoreError::new(
            Op::GetTags,
            key.as_str(),
            ErrorKind::NotSupported,
            format!("tags not copied: {why} (--require-tags)"),
        )
        .with_code("TagsNotCopied"));
    }
    let notice = format!("tags not copied: {why}");
    if notices.add(notice.clone()) {
        tracing::info!("{notice}");
    }
    Ok(Vec::new())
}
