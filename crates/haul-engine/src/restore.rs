//! `restore`: ask for temporary copies of archived objects (GLACIER,
//! DEEP_ARCHIVE) from a listing or an inventory, skipping objects that are
//! not archived, already restored, or being restored.

use futures::stream::{BoxStream, StreamExt};
use haul_store::{DynStore, ObjectMeta, StoreError};
use serde::Serialize;

/// What happened to one object.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RestoreOutcome {
    Requested { key: String },
    InProgress { key: String },
    AlreadyRestored { key: String },
    NotArchived { key: String },
    Failed { key: String, code: String, message: String },
}

/// The options of a restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub days: u32,
    /// Bulk, Standard or Expedited.
    pub tier: String,
    pub concurrency: usize,
    pub dry_run: bool,
}

async fn restore_one(store: &DynStore, o: Result<ObjectMeta, StoreError>, opts: &RestoreOptions) -> RestoreOutcome {
    let failed = |key: &str, e: StoreError| RestoreOutcome::Failed {
        key: key.to_string(),
        code: e.report_code().to_string(),
        message: e.to_string(),
    };
    let o = match o {
        Ok(o) => o,
        Err(e) => return failed(&e.key.clone(), e),
    };
    let key = o.key.to_string();
    if !o.is_archived() {
        return RestoreOutcome::NotArchived { key };
    }
    let head = match store.head(&o.key).await {
        Ok(h) => h,
        Err(e) => return failed(&key, e),
    };
    if head.restore_in_progress() {
        return RestoreOutcome::InProgress { key };
    }
    if head.restored() {
        return RestoreOutcome::AlreadyRestored { key };
    }
    if opts.dry_run {
        return RestoreOutcome::Requested { key };
    }
    match store.restore(&o.key, opts.days, &opts.tier).await {
        Ok(()) => RestoreOutcome::Requested { key },
        Err(e) if e.code.as_deref() == Some("RestoreAlreadyInProgress") => RestoreOutcome::InProgress { key },
        Err(e) => failed(&key, e),
    }
}

/// Restores every archived object of `objects`.
pub fn restore_all(
    store: DynStore,
    objects: BoxStream<'static, Result<ObjectMeta, StoreError>>,
    opts: RestoreOptions,
) -> BoxStream<'static, RestoreOutcome> {
    let n = opts.concurrency.max(1);
    objects
        .map(move |o| {
            let (store, opts) = (store.clone(), opts.clone());
            async move { restore_one(&store, o, &opts).await }
        })
        .buffer_unordered(n)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_store::memory::MemoryStore;
    use haul_store::{Key, ListEntry, ListRequest, ObjectStore, PutOptions};
    use std::sync::Arc;

    #[tokio::test]
    async fn restores_archived_objects_once() -> Result<(), Box<dyn std::error::Error>> {
        let m = MemoryStore::new("b");
        for (k, class) in [
            ("a", "GLACIER"),
            ("b", "DEEP_ARCHIVE"),
            ("c", "STANDARD"),
            ("d", "GLACIER_IR"),
        ] {
            let opts = PutOptions {
                storage_class: Some(class.into()),
                ..Default::default()
            };
            m.put(&Key::object(k)?, bytes::Bytes::from_static(b"x"), &opts).await?;
        }
        let store: DynStore = Arc::new(m);
        let list = |s: &DynStore| {
            s.list(ListRequest::prefix(Key::root()))
                .map(|e| {
                    e.map(|e| match e {
                        ListEntry::Object(o) => o,
                        ListEntry::Prefix(_) | ListEntry::Unlisted(_) => ObjectMeta::default(),
                    })
                })
                .boxed()
        };
        let opts = RestoreOptions {
            days: 3,
            tier: "Bulk".into(),
            concurrency: 2,
            dry_run: false,
        };
        let names = |v: Vec<RestoreOutcome>| {
            let mut v: Vec<String> = v
                .iter()
                .map(|o| {
                    serde_json::to_value(o)
                        .map(|j| {
                            format!(
                                "{}:{}",
                                j["key"].as_str().unwrap_or(""),
                                j["status"].as_str().unwrap_or("")
                            )
                        })
                        .unwrap_or_default()
                })
                .collect();
            v.sort();
            v
        };
        let first = names(restore_all(store.clone(), list(&store), opts.clone()).collect().await);
        assert_eq!(
            first,
            ["a:requested", "b:requested", "c:not_archived", "d:not_archived"]
        );
        let second = names(restore_all(store.clone(), list(&store), opts).collect().await);
        assert_eq!(
            second,
            [
                "a:already_restored",
                "b:already_restored",
                "c:not_archived",
                "d:not_archived"
            ]
        );
        Ok(())
    }
}
