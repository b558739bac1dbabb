//! Sync over real stores: a second run copies nothing, changed content is
//! found, deletes wait for successful copies and respect --max-delete, and
//! random trees (proptest) end identical.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use haul_engine::job::JobOptions;
use haul_engine::march::Compare;
use haul_engine::report::NoObserver;
use haul_engine::shard::Shard;
use haul_engine::sync::SyncJob;
use haul_engine::{Executor, Summary, Transfer, TransferOptions};
use haul_store::memory::MemoryStore;
use haul_store::wrap::{FaultConfig, FaultStore};
use haul_store::*;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

fn key(s: &str) -> Key {
    Key::object(s).unwrap_or_else(|e| panic!("{e}"))
}

async fn run_sync(
    src: &DynStore,
    dst: &DynStore,
    compare: Compare,
    delete: bool,
    max_delete: Option<u64>,
    dry_run: bool,
) -> Summary {
    let exec = Executor::new(
        Transfer::new(TransferOptions::default(), CancellationToken::new()),
        JobOptions {
            dry_run,
            ..Default::default()
        },
        Arc::new(NoObserver),
    );
    let job = SyncJob {
        compare,
        delete,
        max_delete,
        ..SyncJob::new(
            Key::prefix("s/").unwrap_or_default(),
            Key::prefix("d/").unwrap_or_default(),
        )
    };
    exec.sync(src, dst, &job, vec![(0, Shard::all())], &|_| {}).await
}

async fn contents(s: &DynStore, prefix: &str) -> Result<BTreeMap<String, Bytes>, StoreError> {
    let mut out = BTreeMap::new();
    let mut l = s.list(ListRequest::prefix(Key::prefix(prefix)?));
    while let Some(e) = l.try_next().await? {
        if let ListEntry::Object(o) = e {
            let g = s.get(&o.key, None).await?;
            let chunks: Vec<Bytes> = g.body.try_collect().await?;
            out.insert(
                o.key
                    .strip_prefix(&Key::prefix(prefix)?)
                    .unwrap_or_default()
                    .to_string(),
                Bytes::from(chunks.concat()),
            );
        }
    }
    Ok(out)
}

#[tokio::test]
async fn second_run_copies_nothing_and_changes_are_found() -> Result<(), Box<dyn std::error::Error>> {
    let src: DynStore = Arc::new(MemoryStore::new("a"));
    let dst: DynStore = Arc::new(MemoryStore::new("b"));
    for (k, v) in [("s/2026/a", "one"), ("s/2026/b", "two"), ("s/c", "three")] {
        src.put(&key(k), Bytes::from(v), &PutOptions::default()).await?;
    }
    let s1 = run_sync(&src, &dst, Compare::Etag, false, None, false).await;
    assert_eq!((s1.objects, s1.skipped, s1.failed), (3, 0, 0));
    let s2 = run_sync(&src, &dst, Compare::Etag, false, None, false).await;
    assert_eq!((s2.objects, s2.skipped), (0, 3), "nothing copied the second time");
    // Same size, other content: the ETag sees it, the size does not.
    src.put(&key("s/2026/b"), Bytes::from("TWO"), &PutOptions::default())
        .await?;
    assert_eq!(run_sync(&src, &dst, Compare::Size, false, None, true).await.objects, 0);
    let s3 = run_sync(&src, &dst, Compare::Etag, false, None, false).await;
    assert_eq!(s3.objects, 1);
    assert_eq!(contents(&dst, "d/").await?["2026/b"], Bytes::from("TWO"));
    Ok(())
}

#[tokio::test]
async fn deletes_respect_max_delete_dry_run_and_failed_copies() -> Result<(), Box<dyn std::error::Error>> {
    let src_mem = MemoryStore::new("a");
    let dst_mem = MemoryStore::new("b");
    src_mem
        .put(&key("s/keep"), Bytes::from("k"), &PutOptions::default())
        .await?;
    for i in 0..5 {
        dst_mem
            .put(&key(&format!("d/old{i}")), Bytes::from("o"), &PutOptions::default())
            .await?;
    }
    let (src, dst): (DynStore, DynStore) = (Arc::new(src_mem.clone()), Arc::new(dst_mem.clone()));
    // Above --max-delete: nothing deleted, the run says so.
    let s = run_sync(&src, &dst, Compare::Etag, true, Some(4), false).await;
    assert_eq!(s.failed, 1);
    assert!(
        s.first_failures[0].message.contains("more than --max-delete 4"),
        "{:?}",
        s.first_failures
    );
    assert_eq!(contents(&dst, "d/").await?.len(), 6, "copied keep, deleted nothing");
    // A dry run deletes nothing either.
    let s = run_sync(&src, &dst, Compare::Etag, true, None, true).await;
    assert_eq!(s.deleted, 5);
    assert_eq!(contents(&dst, "d/").await?.len(), 6);
    // A failed copy holds back every delete.
    src_mem
        .put(&key("s/new"), Bytes::from("n"), &PutOptions::default())
        .await?;
    let broken: DynStore = Arc::new(FaultStore::new(
        Arc::new(src_mem.clone()),
        FaultConfig {
            corrupt_rate: 1.0,
            ..FaultConfig::none(5)
        },
    ));
    let s = run_sync(&broken, &dst, Compare::Etag, true, None, false).await;
    assert_eq!(s.deleted, 0);
    assert!(
        s.first_failures.iter().any(|f| f.message.contains("not deleted")),
        "{:?}",
        s.first_failures
    );
    assert_eq!(contents(&dst, "d/").await?.len(), 6);
    // Within the limit and with every copy done: deleted.
    let s = run_sync(&src, &dst, Compare::Etag, true, Some(5), false).await;
    assert_eq!((s.deleted, s.failed), (5, 0));
    assert_eq!(
        contents(&dst, "d/").await?.keys().cloned().collect::<Vec<_>>(),
        ["keep", "new"]
    );
    Ok(())
}

fn tree() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    let seg = prop::sample::select(vec!["a", "a-b", "a0", "b", "2026", "x y", "ü", "+"]);
    let key = prop::collection::vec(seg, 1..4).prop_map(|v| v.join("/"));
    prop::collection::btree_map(key, prop::collection::vec(any::<u8>(), 0..64), 0..40)
}

/// Two stores of one backend for the property test.
async fn backend(name: &str) -> Result<(DynStore, DynStore, Vec<tempfile::TempDir>), Box<dyn std::error::Error>> {
    Ok(match name {
        "memory" => (Arc::new(MemoryStore::new("a")), Arc::new(MemoryStore::new("b")), vec![]),
        "local" => {
            let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
            let sa: DynStore = Arc::new(haul_store::local::LocalStore::new(a.path())?);
            let sb: DynStore = Arc::new(haul_store::local::LocalStore::new(b.path())?);
            (sa, sb, vec![a, b])
        }
        _ => {
            haul_testkit::set_aws_env();
            let server = haul_testkit::moto();
            let conn = haul_store::s3::S3Connection::connect(&haul_store::s3::S3Config {
                endpoint_url: Some(server.endpoint.clone()),
                path_style: true,
                ..Default::default()
            })
            .await?;
            let (a, b) = (haul_testkit::unique_bucket("pa"), haul_testkit::unique_bucket("pb"));
            haul_testkit::create_bucket(server, &a)?;
            haul_testkit::create_bucket(server, &b)?;
            (Arc::new(conn.bucket(&a)), Arc::new(conn.bucket(&b)), vec![])
        }
    })
}

/// Drops keys a filesystem cannot hold next to the others (`a` and `a/b`).
fn filesystem_safe(tree: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let keys: Vec<String> = tree.keys().cloned().collect();
    tree.into_iter()
        .filter(|(k, _)| !keys.iter().any(|o| o.starts_with(&format!("{k}/"))))
        .collect()
}

/// Random source and destination trees: after sync --delete the destination
/// equals the source, and a diff shows nothing to do.
async fn random_trees_case(
    name: &str,
    src_tree: BTreeMap<String, Vec<u8>>,
    dst_tree: BTreeMap<String, Vec<u8>>,
) -> Result<(), TestCaseError> {
    let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
    let (src, dst, _dirs) = backend(name).await.map_err(|e| fail(&e))?;
    let (src_tree, dst_tree) = if name == "local" {
        (filesystem_safe(src_tree), filesystem_safe(dst_tree))
    } else {
        (src_tree, dst_tree)
    };
    for (k, v) in &src_tree {
        src.put(&key(&format!("s/{k}")), Bytes::from(v.clone()), &PutOptions::default())
            .await
            .map_err(|e| fail(&e))?;
    }
    for (k, v) in &dst_tree {
        // A destination key that is a folder of a source key (or the other
        // way round) cannot be replaced on a filesystem: leave those out.
        if name == "local"
            && src_tree
                .keys()
                .any(|s| s.starts_with(&format!("{k}/")) || k.starts_with(&format!("{s}/")))
        {
            continue;
        }
        dst.put(&key(&format!("d/{k}")), Bytes::from(v.clone()), &PutOptions::default())
            .await
            .map_err(|e| fail(&e))?;
    }
    let s = run_sync(&src, &dst, Compare::Etag, true, None, false).await;
    prop_assert_eq!(s.failed, 0, "{:?}", s.first_failures);
    let want: BTreeMap<String, Bytes> = src_tree
        .iter()
        .map(|(k, v)| (k.clone(), Bytes::from(v.clone())))
        .collect();
    prop_assert_eq!(contents(&dst, "d/").await.map_err(|e| fail(&e))?, want);
    let job = SyncJob {
        delete: true,
        ..SyncJob::new(
            Key::prefix("s/").unwrap_or_default(),
            Key::prefix("d/").unwrap_or_default(),
        )
    };
    let pending = job
        .march(&src, &dst, &Shard::all())
        .filter(|a| futures::future::ready(a.name() != "skip"))
        .count()
        .await;
    prop_assert_eq!(pending, 0, "diff after sync is empty");
    Ok(())
}

fn run_case(name: &str, a: BTreeMap<String, Vec<u8>>, b: BTreeMap<String, Vec<u8>>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    rt.block_on(random_trees_case(name, a, b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_trees_end_identical_memory(a in tree(), b in tree()) { run_case("memory", a, b)?; }
    #[test]
    fn random_trees_end_identical_local(a in tree(), b in tree()) { run_case("local", a, b)?; }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]
    #[test]
    fn random_trees_end_identical_s3(a in tree(), b in tree()) {
        if haul_testkit::s3_enabled() {
            run_case("s3", a, b)?;
        }
    }
}

#[tokio::test]
async fn verify_finds_missing_changed_and_checks_incomparable_etags() -> Result<(), Box<dyn std::error::Error>> {
    use haul_engine::verify::{verify, Finding};
    let src_mem = MemoryStore::new("a").with_limits(1024 * 1024, 5 << 30);
    let dst_mem = MemoryStore::new("b");
    // A multipart source and a single-part copy of it: ETags not comparable.
    let body = Bytes::from(haul_testkit::data(3 * 1024 * 1024 + 5, 1));
    let k = key("s/big");
    let id = src_mem.create_multipart(&k, &PutOptions::default()).await?;
    let mut parts = Vec::new();
    for (i, c) in body.chunks(1024 * 1024).enumerate() {
        let md5 = haul_store::checksum::md5_hex(c);
        parts.push(
            src_mem
                .upload_part(
                    &k,
                    &id,
                    i as u32 + 1,
                    body.slice_ref(c),
                    &haul_store::Checksums::md5(&md5),
                )
                .await?,
        );
    }
    src_mem.complete_multipart(&k, &id, &parts).await?;
    let md5 = haul_store::checksum::md5_hex(&body);
    let single = PutOptions {
        checksums: Checksums {
            md5_hex: Some(md5),
            ..Default::default()
        },
        ..Default::default()
    };
    dst_mem.put(&key("d/big"), body.clone(), &single).await?;
    for (k, v) in [("s/same", "x"), ("s/changed", "aaaa"), ("s/missing", "m")] {
        src_mem.put(&key(k), Bytes::from(v), &PutOptions::default()).await?;
    }
    dst_mem
        .put(&key("d/same"), Bytes::from("x"), &PutOptions::default())
        .await?;
    dst_mem
        .put(&key("d/changed"), Bytes::from("bbbb"), &PutOptions::default())
        .await?;
    dst_mem
        .put(&key("d/extra"), Bytes::from("e"), &PutOptions::default())
        .await?;
    let (src, dst): (DynStore, DynStore) = (Arc::new(src_mem), Arc::new(dst_mem));
    let job = SyncJob {
        compare: Compare::Size,
        delete: true,
        ..SyncJob::new(Key::prefix("s/")?, Key::prefix("d/")?)
    };
    let actions = job.march(&src, &dst, &Shard::all());
    let found: Vec<Finding> = verify(src.clone(), dst.clone(), actions, 4, Key::prefix("s/")?)
        .collect()
        .await;
    assert_eq!(
        found,
        vec![
            Finding::Same {
                key: "big".into(),
                how: "MD5 of the content".into()
            },
            Finding::Mismatch {
                key: "changed".into(),
                reason: format!(
                    "ETag differs ({} vs {})",
                    haul_store::checksum::md5_hex(b"aaaa"),
                    haul_store::checksum::md5_hex(b"bbbb")
                )
            },
            Finding::Extra { key: "d/extra".into() },
            Finding::Missing { key: "missing".into() },
            Finding::Same {
                key: "same".into(),
                how: "ETag".into()
            },
        ]
    );
    Ok(())
}

/// Item 4: a journaled run that completes with a failure closes its job;
/// the next run plans afresh and copies what is new in a shard that had
/// finished. Only an interrupted run stays to be resumed.
#[tokio::test]
async fn a_completed_run_closes_its_job_and_an_interrupted_one_is_resumed() -> Result<(), Box<dyn std::error::Error>> {
    use haul_engine::journal::{JobShards, Journal, JournalError};
    let state = tempfile::tempdir()?;
    let journal = Journal::open(state.path())?;
    let src_mem = MemoryStore::new("a");
    let dst_mem = MemoryStore::new("b");
    src_mem
        .put(&key("s/a/ok"), Bytes::from("ok"), &PutOptions::default())
        .await?;
    // On another server and never readable: its copy fails every time.
    src_mem.put_virtual(&key("s/a/bad"), 10, &PutOptions::default());
    src_mem
        .put(&key("s/b/x"), Bytes::from("x"), &PutOptions::default())
        .await?;
    let (src, dst): (DynStore, DynStore) = (Arc::new(src_mem.clone()), Arc::new(dst_mem));
    let job = SyncJob::new(Key::prefix("s/")?, Key::prefix("d/")?);
    let id = Journal::job_id("sync s d");
    let shards = vec![Shard::prefix("a/"), Shard::prefix("b/")];
    let begin = |fresh: bool| {
        let shards = shards.clone();
        let (journal, id) = (&journal, id.clone());
        async move {
            journal
                .begin(&id, "sync s d", fresh, || async { Ok::<_, JournalError>(shards) })
                .await
        }
    };
    let exec = |cancel: CancellationToken| {
        Executor::new(
            Transfer::new(TransferOptions::default(), cancel),
            JobOptions::default(),
            Arc::new(NoObserver),
        )
    };
    let run = |planned: JobShards, cancel: CancellationToken| {
        let (src, dst, job, journal) = (src.clone(), dst.clone(), job.clone(), &journal);
        async move {
            exec(cancel)
                .sync_journaled(&src, &dst, &job, Some(journal), planned)
                .await
        }
    };
    let first = begin(false).await?;
    assert!(!first.resumed);
    let s = run(first, CancellationToken::new()).await?;
    assert_eq!((s.objects, s.failed), (2, 1), "{:?}", s.first_failures);
    assert_eq!(s.first_failures[0].key, "s/a/bad");
    // New data in the shard that finished.
    src_mem
        .put(&key("s/b/new"), Bytes::from("new"), &PutOptions::default())
        .await?;
    let second = begin(false).await?;
    assert!(!second.resumed, "a completed run is not resumed");
    assert_eq!(second.done(), 0);
    let s = run(second, CancellationToken::new()).await?;
    assert_eq!((s.objects, s.failed), (1, 1), "{:?}", s.first_failures);
    assert_eq!(contents(&dst, "d/").await?["b/new"], Bytes::from("new"));
    // An interrupted run (the token cancelled: Ctrl-C, SIGTERM) keeps the
    // job, with the shards it finished.
    let third = begin(false).await?;
    journal.shard_done(&id, 1)?;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let s = run(third, cancel).await?;
    assert!(s.failed > 0, "an interrupted run is not a success");
    let fourth = begin(false).await?;
    assert!(fourth.resumed, "an interrupted run is resumed");
    assert_eq!((fourth.done(), fourth.shards.len()), (1, 2));
    // --fresh ignores it.
    let fifth = begin(true).await?;
    assert_eq!((fifth.resumed, fifth.done()), (false, 0));
    Ok(())
}
