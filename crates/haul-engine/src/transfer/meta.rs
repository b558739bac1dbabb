//! The destination object's options (metadata, content type, tags, mtime).

use std::time::SystemTime;

use haul_store::{DynStore, Key, MetadataDirective, ObjectMeta, PutOptions};

use super::{Result, Transfer};
use crate::tags::tags_to_set;

/// Guesses a content type from the key's extension.
pub fn guess_content_type(key: &str) -> String {
    mime_guess::from_path(key)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

impl Transfer {
    /// The options for the destination object, from the source's metadata.
    pub(super) fn dest_options(
        &self,
        src: &DynStore,
        dst: &DynStore,
        full: &ObjectMeta,
        tags: Vec<(String, String)>,
    ) -> PutOptions {
        let o = &self.opts.put;
        let src_mtime = src.capabilities().keeps_mtime;
        let dst_mtime = dst.capabilities().keeps_mtime;
        let mut put = PutOptions {
            storage_class: o.storage_class.clone(),
            sse: o.sse.clone(),
            if_none_match: o.if_none_match,
            ..Default::default()
        };
        let guessed = || guess_content_type(full.key.as_str());
        match self.opts.directive {
            MetadataDirective::Copy => {
                put.content_type = o
                    .content_type
                    .clone()
                    .or_else(|| full.content_type.clone())
                    .or_else(|| Some(guessed()));
                put.metadata = full.metadata.clone();
                put.metadata.extend(o.metadata.clone());
                put.tags = tags;
            }
            MetadataDirective::Replace => {
                put.content_type = o.content_type.clone().or_else(|| Some(guessed()));
                put.metadata = o.metadata.clone();
                put.tags = tags;
            }
        }
        // Keep modification times across the filesystem boundary.
        if src_mtime || dst_mtime {
            put.mtime = mtime_of(full);
        }
        if dst_mtime {
            put.metadata.remove(haul_store::mtime::METADATA_KEY);
        }
        put
    }

    /// The tags to set on the copy (explicit, or the source's): see [`crate::tags`].
    pub(super) async fn source_tags(&self, src: &DynStore, dst: &DynStore, key: &Key) -> Result<Vec<(String, String)>> {
        tags_to_set(&self.opts, &self.notices, src, dst, key).await
    }

    pub(super) fn dest_options_for_new(&self, key: &Key) -> PutOptions {
        let o = &self.opts.put;
        PutOptions {
            content_type: o
                .content_type
                .clone()
                .or_else(|| Some(guess_content_type(key.as_str()))),
            metadata: o.metadata.clone(),
            storage_class: o.storage_class.clone(),
            sse: o.sse.clone(),
            tags: o.tags.clone(),
            ..Default::default()
        }
    }
}

/// Mtime helpers re-exported for the CLI.
pub fn mtime_of(meta: &ObjectMeta) -> Option<SystemTime> {
    meta.metadata
        .get("mtime")
        .and_then(|m| haul_store::mtime::parse_mtime(m))
        .or(meta.last_modified)
}
