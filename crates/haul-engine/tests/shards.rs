//! Automatic splitting: whatever the fan-out of the source, its shards
//! partition the whole key space of the job's prefix — every source key in
//! exactly one shard, and every key the destination alone holds too (so
//! `sync --delete` reaches it).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use haul_engine::job::JobOptions;
use haul_engine::report::NoObserver;
use haul_engine::shard::{auto_split, Shard};
use haul_engine::sync::SyncJob;
use haul_engine::{Executor, Transfer, TransferOptions};
use haul_store::memory::MemoryStore;
use haul_store::*;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key(s: &str) -> Result<Key, StoreError> {
    Key::object(s)
}

/// A small deterministic generator (xorshift), so that a case of 30,000
/// folders is built from one seed instead of 30,000 shrinkable values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Names that sort around the folder separator: `a.x` < `a/` < `a0`, `a-b`,
/// `ü` (multi-byte), and plain numbered folders.
fn name(rng: &mut Rng, i: usize) -> String {
    match rng.below(8) {
        0 => format!("{i:05}.x"),
        1 => format!("{i:05}-b"),
        2 => format!("{i:05}0"),
        3 => format!("ü{i}"),
        _ => format!("{i:05}"),
    }
}

/// Source keys under `folders` top-level folders (some with subfolders), a
/// few top-level files; and destination-only keys: under folders the source
/// lacks, before the first and after the last folder, between folders.
fn trees(folders: usize, seed: u64) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut rng = Rng(seed | 1);
    let mut src = BTreeSet::new();
    let mut dst_only = BTreeSet::new();
    for i in 0..folders {
        let f = name(&mut rng, i);
        match rng.below(10) {
            // A folder with subfolders, to be split deeper.
            0 => {
                for j in 0..rng.below(4) + 1 {
                    src.insert(format!("{f}/{j}/{}", rng.below(100)));
                }
            }
            // A file at the top level, beside the folders.
            1 => {
                src.insert(f.clone());
            }
            _ => {
                src.insert(format!("{f}/k{}", rng.below(3)));
            }
        }
        // Destination-only: a folder the source lacks, a key beside the folder.
        if rng.below(50) == 0 {
            dst_only.insert(format!("{f}~gone/old"));
            dst_only.insert(format!("{f}.old"));
            dst_only.insert(format!("{f}/extra/deep/old"));
        }
    }
    for k in ["!first/old", "~last/old", "\u{10FFFF}/old", "000", "zz-top"] {
        dst_only.insert(k.to_string());
    }
    for k in ["top.txt", "2026/11/a"] {
        src.insert(k.to_string());
    }
    dst_only.retain(|k| !src.contains(k));
    (src, dst_only)
}

async fn store_of(keys: impl Iterator<Item = &String>, base: &str) -> Result<DynStore, StoreError> {
    let m = MemoryStore::new("b");
    for k in keys {
        m.put(&key(&format!("{base}{k}"))?, Bytes::new(), &PutOptions::default())
            .await?;
    }
    Ok(Arc::new(m))
}

/// Every shard's listing, concatenated (relative keys), sorted.
async fn union_of(shards: &[Shard], store: &DynStore, base: &Key) -> Result<Vec<String>, StoreError> {
    let mut seen = Vec::new();
    for s in shards {
        let part: Vec<ListEntry> = s.list(store, base).try_collect().await?;
        seen.extend(
            part.into_iter()
                .map(|e| e.key().strip_prefix(base).unwrap_or_default().to_string()),
        );
    }
    seen.sort();
    Ok(seen)
}

async fn partition_case(folders: usize, seed: u64, target: usize) -> Result<(), TestCaseError> {
    let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
    let (src_keys, dst_only) = trees(folders, seed);
    let base = Key::prefix("base/").map_err(|e| fail(&e))?;
    let src = store_of(src_keys.iter(), "base/").await.map_err(|e| fail(&e))?;
    let shards = auto_split(&src, &base, target, 3, 0).await.map_err(|e| fail(&e))?;
    prop_assert!(!shards.is_empty());
    // The source: each key exactly once (a key in two shards would appear
    // twice, a key in none would be missing).
    let want: Vec<String> = src_keys.iter().cloned().collect();
    let seen = union_of(&shards, &src, &base).await.map_err(|e| fail(&e))?;
    prop_assert_eq!(seen.len(), want.len(), "{} shards", shards.len());
    prop_assert!(seen == want, "the shards do not partition the source keys");
    // The destination: the same shards reach its extra keys exactly once too.
    let all: BTreeSet<String> = src_keys.union(&dst_only).cloned().collect();
    let dst = store_of(all.iter(), "base/").await.map_err(|e| fail(&e))?;
    let want: Vec<String> = all.into_iter().collect();
    let seen = union_of(&shards, &dst, &base).await.map_err(|e| fail(&e))?;
    prop_assert_eq!(seen.len(), want.len(), "{} shards", shards.len());
    prop_assert!(seen == want, "the shards do not cover the destination's keys");
    Ok(())
}

fn run_partition(folders: usize, seed: u64, target: usize) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    rt.block_on(partition_case(folders, seed, target))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]
    /// Up to 30,000 top-level folders: past 10,000 consecutive folders are
    /// grouped into range shards, never dropped.
    #[test]
    fn shards_partition_every_key_whatever_the_fan_out(
        folders in prop_oneof![0usize..40, 9_990usize..=30_000],
        seed in any::<u64>(),
        target in prop_oneof![Just(16usize), Just(50_000usize)],
    ) {
        run_partition(folders, seed, target)?;
    }
}

#[test]
fn thirty_thousand_folders_are_all_in_some_shard() -> Result<(), TestCaseError> {
    run_partition(30_000, 7, 16)
}

/// With splitting on, `sync --delete` deletes a destination-only key under a
/// folder the source does not have (and one past the source's last folder).
#[tokio::test]
async fn sync_delete_reaches_folders_only_the_destination_has() -> TestResult {
    let src = MemoryStore::new("a");
    let dst = MemoryStore::new("b");
    for k in ["s/a/1", "s/a/2", "s/c/1", "s/e/x/1", "s/e/y/1"] {
        src.put(&key(k)?, Bytes::from_static(b"1"), &PutOptions::default())
            .await?;
    }
    for k in ["d/b/old", "d/d/old", "d/z/old", "d/e/w/old", "d/0"] {
        dst.put(&key(k)?, Bytes::from_static(b"o"), &PutOptions::default())
            .await?;
    }
    let (src, dst): (DynStore, DynStore) = (Arc::new(src), Arc::new(dst));
    let (sb, db) = (Key::prefix("s/")?, Key::prefix("d/")?);
    let shards = auto_split(&src, &sb, 16, 3, 0).await?;
    assert!(shards.len() > 1, "splitting is active: {shards:?}");
    let exec = Executor::new(
        Transfer::new(TransferOptions::default(), CancellationToken::new()),
        JobOptions::default(),
        Arc::new(NoObserver),
    );
    let job = SyncJob {
        delete: true,
        ..SyncJob::new(sb, db.clone())
    };
    let indexed = shards.into_iter().enumerate().map(|(i, s)| (i as u32, s)).collect();
    let summary = exec.sync(&src, &dst, &job, indexed, &|_| {}).await;
    assert_eq!(
        (summary.failed, summary.deleted),
        (0, 5),
        "{:?}",
        summary.first_failures
    );
    let left: Vec<String> = union_of(&[Shard::all()], &dst, &db).await?;
    assert_eq!(left, ["a/1", "a/2", "c/1", "e/x/1", "e/y/1"]);
    Ok(())
}
