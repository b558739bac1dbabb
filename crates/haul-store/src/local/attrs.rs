//! Object attributes S3 keeps and a file has not (ETag, content-type, user
//! metadata, storage class, tags, SSE, CRC64NVME), in one `user.haul`
//! extended attribute, valid while the file's size and mtime are those
//! recorded with it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::key::Key;
use crate::types::*;

pub(super) const XATTR: &str = "user.haul";

/// Attributes kept in the `user.haul` xattr.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Attrs {
    pub(super) size: u64,
    pub(super) mtime_ns: i128,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) tags: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sse: Option<SseKind>,
    /// Full-object CRC64NVME (base64), when the writer provided part CRCs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) crc64nvme: Option<String>,
}

pub(super) fn mtime_ns(md: &fs::Metadata) -> i128 {
    match md.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        },
        Err(_) => 0,
    }
}

pub(super) fn read_attrs(path: &Path, md: &fs::Metadata) -> Option<Attrs> {
    let raw = xattr::get(path, XATTR).ok()??;
    let a: Attrs = serde_json::from_slice(&raw).ok()?;
    (a.size == md.len() && a.mtime_ns == mtime_ns(md)).then_some(a)
}

pub(super) fn meta_from(key: Key, path: &Path, md: &fs::Metadata, full: bool) -> ObjectMeta {
    let attrs = read_attrs(path, md);
    let mut meta = ObjectMeta {
        key,
        size: md.len(),
        last_modified: md.modified().ok(),
        etag: attrs.as_ref().and_then(|a| a.etag.clone()),
        storage_class: attrs.as_ref().and_then(|a| a.storage_class.clone()),
        ..Default::default()
    };
    if meta.etag.as_deref().is_some_and(crate::checksum::etag_is_plain_md5) {
        meta.checksums.md5_hex = meta.etag.clone();
    }
    meta.checksums.crc64nvme = attrs.as_ref().and_then(|a| a.crc64nvme.clone());
    if full {
        if let Some(a) = attrs {
            meta.content_type = a.content_type;
            meta.metadata = a.metadata;
            meta.sse = a.sse;
        }
    }
    meta
}

pub(super) fn attrs_from(opts: &PutOptions, etag: String) -> Attrs {
    let mut metadata = opts.metadata.clone();
    if let Some(m) = opts.mtime {
        metadata.insert(crate::mtime::METADATA_KEY.into(), crate::mtime::format_mtime(m));
    }
    Attrs {
        etag: Some(etag),
        content_type: opts.content_type.clone(),
        metadata,
        storage_class: opts.storage_class.clone(),
        tags: opts.tags.clone(),
        sse: opts.sse.as_ref().map(SseKind::from),
        ..Default::default()
    }
}
