//! Planning: a copy job becomes a stream of serializable [`CopyTask`]s,
//! produced lazily from a listing (never a whole bucket in memory). The same
//! tasks drive a real run, a dry run (printed, not executed) and — later —
//! remote workers.

use futures::stream::{self, BoxStream, StreamExt};
use haul_store::{DynStore, Key, ListEntry, ListRequest, ObjectMeta, SkipReason, StoreError, Unlisted};
use serde::{Deserialize, Serialize};

use crate::filter::Filter;
use crate::shard::Shard;

/// One object to copy: where from (as listed) and where to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyTask {
    pub src: ObjectMeta,
    pub dst_key: Key,
}

/// An entry of a plan. Copies are by far the common case, so they are not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PlanItem {
    Copy(CopyTask),
    /// Not copied, with the reason (reported, never silent).
    Skip {
        key: Key,
        reason: String,
    },
    /// A listing entry that cannot be an object (or a folder marker a
    /// local destination cannot hold): reported, counted, not a failure.
    Unlisted(Unlisted),
    /// The listing failed for part of the source.
    Error(StoreError),
}

/// Turns a source prefix and a destination prefix into tasks.
#[derive(Debug, Clone)]
pub struct Planner {
    pub src: DynStore,
    /// Listed recursively; keys are copied relative to it.
    pub src_prefix: Key,
    /// Prepended to the relative keys.
    pub dst_prefix: Key,
    pub filter: Filter,
    /// The destination cannot hold keys ending in `/` (a local directory).
    pub dst_is_local: bool,
}

/// What a recursive copy does, without its stores: a [`Planner`] as data,
/// for work units (`unit.rs`) run wherever the stores are opened.
#[derive(Debug, Clone)]
pub struct CopyJob {
    /// Listed recursively; keys are copied relative to it (shards and the
    /// keys of an objects unit are relative to it too).
    pub src_base: Key,
    /// Prepended to the relative keys.
    pub dst_base: Key,
    pub filter: Filter,
    /// The destination cannot hold keys ending in `/` (a local directory).
    pub dst_is_local: bool,
}

impl CopyJob {
    /// The planner of this job over `src`.
    pub fn planner(&self, src: &DynStore) -> Planner {
        Planner {
            src: src.clone(),
            src_prefix: self.src_base.clone(),
            dst_prefix: self.dst_base.clone(),
            filter: self.filter.clone(),
            dst_is_local: self.dst_is_local,
        }
    }
}

impl Planner {
    /// The tasks of a recursive copy, in source key order.
    pub fn tasks(&self) -> BoxStream<'static, PlanItem> {
        let listing = self.src.list(ListRequest {
            skip: self.filter.skip_keys(&self.src_prefix),
            ..ListRequest::prefix(self.src_prefix.clone())
        });
        self.items(listing)
    }

    /// The tasks of the keys of one shard (relative to the source prefix),
    /// in source key order: [`Planner::tasks`] restricted to the shard.
    pub fn shard_tasks(&self, shard: &Shard) -> BoxStream<'static, PlanItem> {
        let listing = shard.list_skipping(&self.src, &self.src_prefix, self.filter.skip_keys(&self.src_prefix));
        self.items(listing)
    }

    fn items(&self, listing: BoxStream<'static, haul_store::Result<ListEntry>>) -> BoxStream<'static, PlanItem> {
        let this = self.clone();
        listing
            .filter_map(move |e| {
                let item = match e {
                    Err(e) => Some(PlanItem::Error(e)),
                    Ok(ListEntry::Prefix(_)) => None,
                    Ok(ListEntry::Object(o)) => this.item(o),
                    Ok(ListEntry::Unlisted(u)) => {
                        let rel = u.key.strip_prefix(&this.src_prefix).unwrap_or(u.key.as_str());
                        this.filter.matches(rel).then_some(PlanItem::Unlisted(u))
                    }
                };
                futures::future::ready(item)
            })
            .boxed()
    }

    /// The plan item of one source object (None: excluded by the filter).
    pub(crate) fn item(&self, o: ObjectMeta) -> Option<PlanItem> {
        let rel = o
            .key
            .strip_prefix(&self.src_prefix)
            .unwrap_or(o.key.as_str())
            .to_string();
        if !self.filter.matches(&rel) {
            return None;
        }
        if self.dst_is_local && o.key.is_dir_marker() {
            return Some(PlanItem::Unlisted(Unlisted {
                key: o.key,
                reason: SkipReason::FolderMarker,
                detail: "a folder marker (a key ending in '/'): folders are implied in a local directory".into(),
            }));
        }
        match self.dst_prefix.join(&rel) {
            Ok(dst_key) => Some(PlanItem::Copy(CopyTask { src: o, dst_key })),
            Err(e) => Some(PlanItem::Error(e)),
        }
    }

    /// A plan of exactly one object.
    pub fn single(src: ObjectMeta, dst_key: Key) -> BoxStream<'static, PlanItem> {
        stream::iter(vec![PlanItem::Copy(CopyTask { src, dst_key })]).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_store::memory::MemoryStore;
    use haul_store::{ObjectStore, PutOptions};
    use std::sync::Arc;

    #[tokio::test]
    async fn relative_keys_filters_and_markers() -> Result<(), Box<dyn std::error::Error>> {
        let m = MemoryStore::new("src");
        for k in [
            "data/2026/11/21/a.json",
            "data/2026/11/21/b.tmp",
            "data/dir/",
            "database/x",
        ] {
            m.put(
                &Key::object(k)?,
                bytes::Bytes::from_static(b"x"),
                &PutOptions::default(),
            )
            .await?;
        }
        let p = Planner {
            src: Arc::new(m),
            src_prefix: Key::prefix("data/")?,
            dst_prefix: Key::prefix("in/")?,
            filter: Filter::new(&[], &["**/*.tmp".into()])?,
            dst_is_local: true,
        };
        let items: Vec<PlanItem> = p.tasks().collect().await;
        assert_eq!(items.len(), 2, "{items:?}");
        match &items[0] {
            PlanItem::Copy(t) => assert_eq!(t.dst_key.as_str(), "in/2026/11/21/a.json"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(&items[1], PlanItem::Unlisted(u) if u.key.as_str() == "data/dir/" && u.reason == SkipReason::FolderMarker)
        );
        Ok(())
    }
}
