//! Work units: a job run unit by unit — in any order, by separate
//! executors, its results sent as JSON — ends where a one-shot run ends,
//! with the same counters; deletes wait for the barrier over the sum.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use haul_engine::job::JobOptions;
use haul_engine::report::NoObserver;
use haul_engine::shard::Shard;
use haul_engine::sync::SyncJob;
use haul_engine::unit::KEPT_UNIT_FAILURES;
use haul_engine::{
    CopyJob, Counters, DeleteCandidates, Executor, Failure, Filter, Transfer, TransferOptions, UnitJob, UnitObject,
    UnitResult, WorkUnit,
};
use haul_store::memory::MemoryStore;
use haul_store::wrap::{FaultConfig, FaultStore};
use haul_store::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key(s: &str) -> Result<Key, StoreError> {
    Key::object(s)
}

fn executor() -> Executor {
    Executor::new(
        Transfer::new(TransferOptions::default(), tokio_util::sync::CancellationToken::new()),
        JobOptions::default(),
        Arc::new(NoObserver),
    )
}

fn sync_job(delete: bool) -> Result<SyncJob, StoreError> {
    Ok(SyncJob {
        delete,
        ..SyncJob::new(Key::prefix("s/")?, Key::prefix("d/")?)
    })
}

/// A shard of the keys in `[from, until)` (relative to the job's prefix).
fn range(from: Option<&str>, until: Option<&str>) -> Shard {
    Shard {
        from: from.map(str::to_string),
        until: until.map(str::to_string),
        ..Shard::all()
    }
}

/// Every object under `prefix`: its bytes, size, ETag, content type and
/// user metadata.
type Contents = BTreeMap<String, (Bytes, u64, Option<String>, Option<String>, BTreeMap<String, String>)>;

async fn contents(s: &DynStore, prefix: &str) -> Result<Contents, StoreError> {
    let mut out = BTreeMap::new();
    let mut l = s.list(ListRequest::prefix(Key::prefix(prefix)?));
    while let Some(e) = l.try_next().await? {
        if let ListEntry::Object(o) = e {
            let head = s.head(&o.key).await?;
            let g = s.get(&o.key, None).await?;
            let chunks: Vec<Bytes> = g.body.try_collect().await?;
            out.insert(
                o.key.as_str().to_string(),
                (
                    Bytes::from(chunks.concat()),
                    head.size,
                    head.etag,
                    head.content_type,
                    head.metadata,
                ),
            );
        }
    }
    Ok(out)
}

fn opts(i: usize) -> PutOptions {
    PutOptions {
        content_type: Some(["text/plain", "application/json"][i % 2].into()),
        metadata: BTreeMap::from([("n".to_string(), i.to_string())]),
        ..PutOptions::default()
    }
}

/// A source, and a destination (two identical copies of it) holding some
/// of its objects unchanged, some changed, and some the source lacks, in
/// every shard.
async fn stores() -> Result<(DynStore, DynStore, DynStore), Box<dyn std::error::Error>> {
    let src = MemoryStore::new("src");
    let (d1, d2) = (MemoryStore::new("d1"), MemoryStore::new("d2"));
    let mut i = 0;
    let mut put_src = |k: String, v: String| {
        i += 1;
        (k, v, opts(i))
    };
    let mut source = Vec::new();
    for k in ["a/1", "a/2", "a/3", "b/x", "b/y", "m/z", "ü/€", "zz"] {
        source.push(put_src(format!("s/{k}"), format!("content of {k}")));
    }
    for n in 0..40 {
        source.push(put_src(format!("s/c/{n:03}"), "c".repeat(n)));
    }
    for (k, v, o) in &source {
        src.put(&key(k)?, Bytes::from(v.clone()), o).await?;
    }
    for d in [&d1, &d2] {
        // Unchanged: skipped.
        for k in ["a/1", "a/2", "c/005", "c/017", "zz"] {
            let (_, v, o) = source
                .iter()
                .find(|(sk, _, _)| sk == &format!("s/{k}"))
                .ok_or("no such source key")?;
            d.put(&key(&format!("d/{k}"))?, Bytes::from(v.clone()), o).await?;
        }
        // Changed: copied again.
        for k in ["a/3", "b/x", "c/030"] {
            d.put(&key(&format!("d/{k}"))?, Bytes::from("stale"), &PutOptions::default())
                .await?;
        }
        // Only in the destination: deleted, in every shard (and between them).
        for k in ["a/old", "b/old", "bb", "c/999", "n/gone", "zzz"] {
            d.put(&key(&format!("d/{k}"))?, Bytes::from("old"), &PutOptions::default())
                .await?;
        }
    }
    Ok((Arc::new(src), Arc::new(d1), Arc::new(d2)))
}

/// Sends a value through JSON, as a remote worker would.
fn by_wire<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> Result<T, serde_json::Error> {
    serde_json::from_str(&serde_json::to_string(v)?)
}

#[tokio::test]
async fn a_sync_run_unit_by_unit_ends_as_a_one_shot_run() -> TestResult {
    let (src, one_shot_dst, units_dst) = stores().await?;
    let job = sync_job(true)?;
    let one_shot = executor()
        .sync(&src, &one_shot_dst, &job, vec![(0, Shard::all())], &|_| {})
        .await;
    assert_eq!(one_shot.failed, 0, "{:?}", one_shot.first_failures);
    assert!(
        one_shot.objects > 0 && one_shot.skipped > 0 && one_shot.deleted > 0,
        "copies, skips and deletes all present: {one_shot:?}"
    );

    let shards = [
        range(None, Some("b")),
        range(Some("b"), Some("c")),
        range(Some("c"), Some("m")),
        range(Some("m"), None),
    ];
    let units: Vec<WorkUnit> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| WorkUnit::Shard {
            index: i as u32,
            shard: s.clone(),
        })
        .collect();
    // Shuffled, shared between two executors, units and results through JSON.
    let (e1, e2) = (executor(), executor());
    let unit_job = UnitJob::Sync(job.clone());
    let mut results = Vec::new();
    for (n, i) in [2usize, 0, 3, 1].into_iter().enumerate() {
        let exec = [&e1, &e2][n % 2];
        let unit = by_wire(&units[i])?;
        let r = exec.run_unit(&src, &units_dst, &unit_job, &unit).await;
        assert!(r.is_clean(), "{r:?}");
        results.push(by_wire(&r)?);
    }
    assert_eq!(
        contents(&units_dst, "d/").await?.len(),
        48 + 6,
        "nothing deleted by a unit"
    );
    // The caller sums, then deletes.
    let coordinator = executor();
    let mut total = UnitResult::default();
    for r in results {
        coordinator.absorb(&r);
        total.merge(r)?;
    }
    assert_eq!(total.delete_candidates.len(), 6);
    assert_eq!(coordinator.apply_deletes(&units_dst, &total, job.max_delete).await, 0);
    let summed = coordinator.finish();

    assert_eq!(summed.counters(), one_shot.counters());
    let (want, got) = (contents(&one_shot_dst, "d/").await?, contents(&units_dst, "d/").await?);
    assert_eq!(got.len(), 48);
    assert_eq!(got, want);
    assert_eq!(got["d/ü/€"].3.as_deref(), Some("application/json"), "metadata copied");
    Ok(())
}

#[tokio::test]
async fn a_copy_run_unit_by_unit_ends_as_a_one_shot_run() -> TestResult {
    let (src, one_shot_dst, units_dst) = stores().await?;
    let job = CopyJob {
        src_base: Key::prefix("s/")?,
        dst_base: Key::prefix("d/")?,
        filter: Filter::new(&[], &["c/01*".into()])?,
        dst_is_local: false,
    };
    let one_shot = executor().copy(&src, &one_shot_dst, job.planner(&src).tasks()).await;
    assert_eq!(
        (one_shot.objects, one_shot.failed),
        (38, 0),
        "{:?}",
        one_shot.first_failures
    );
    let (e1, e2) = (executor(), executor());
    let unit_job = UnitJob::Copy(job);
    let mut total = UnitResult::default();
    for (n, s) in [
        range(Some("m"), None),
        range(None, Some("c")),
        range(Some("c"), Some("m")),
    ]
    .into_iter()
    .enumerate()
    {
        let exec = [&e1, &e2][n % 2];
        let r = exec
            .run_unit(&src, &units_dst, &unit_job, &WorkUnit::Shard { index: 0, shard: s })
            .await;
        total.merge(by_wire(&r)?)?;
    }
    assert!(total.delete_candidates.is_empty());
    assert_eq!(total.counters, one_shot.counters());
    assert_eq!(contents(&units_dst, "d/").await?, contents(&one_shot_dst, "d/").await?);
    Ok(())
}

/// Two units, one on each side of "b": old keys in both.
async fn barrier_stores() -> Result<(MemoryStore, MemoryStore), Box<dyn std::error::Error>> {
    let (src, dst) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    for k in ["s/a/1", "s/b/1"] {
        src.put(&key(k)?, Bytes::from(k.to_string()), &PutOptions::default())
            .await?;
    }
    for k in ["d/a/old", "d/b/old"] {
        dst.put(&key(k)?, Bytes::from("old"), &PutOptions::default()).await?;
    }
    Ok((src, dst))
}

async fn keys_of(s: &DynStore) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    Ok(contents(s, "d/").await?.into_keys().collect())
}

#[tokio::test]
async fn a_failure_in_any_unit_holds_back_every_delete() -> TestResult {
    let (src_mem, dst_mem) = barrier_stores().await?;
    let src: DynStore = Arc::new(src_mem.clone());
    let dst: DynStore = Arc::new(dst_mem);
    // The second worker reads a source that corrupts every body.
    let broken: DynStore = Arc::new(FaultStore::new(
        Arc::new(src_mem),
        FaultConfig {
            corrupt_rate: 1.0,
            ..FaultConfig::none(7)
        },
    ));
    let job = UnitJob::Sync(sync_job(true)?);
    let first = executor()
        .run_unit(
            &src,
            &dst,
            &job,
            &WorkUnit::Shard {
                index: 0,
                shard: range(None, Some("b")),
            },
        )
        .await;
    let second = executor()
        .run_unit(
            &broken,
            &dst,
            &job,
            &WorkUnit::Shard {
                index: 1,
                shard: range(Some("b"), None),
            },
        )
        .await;
    assert!(first.is_clean());
    assert_eq!(
        (second.counters.failed, second.failures.len()),
        (1, 1),
        "{:?}",
        second.failures
    );
    assert_eq!(second.failures[0].key, "s/b/1");
    assert_eq!(second.delete_candidates.len(), 1, "found, not deleted");

    let coordinator = executor();
    let mut total = UnitResult::default();
    for r in [first, second] {
        coordinator.absorb(&r);
        total.merge(by_wire(&r)?)?;
    }
    assert_eq!(coordinator.apply_deletes(&dst, &total, None).await, 1);
    let s = coordinator.finish();
    assert_eq!((s.deleted, s.failed), (0, 2));
    let refused = s
        .first_failures
        .iter()
        .find(|f| f.code == "DeleteRefused")
        .ok_or("no DeleteRefused failure")?;
    assert!(
        refused
            .message
            .contains("2 extraneous objects not deleted: 1 objects failed"),
        "{refused:?}"
    );
    assert_eq!(keys_of(&dst).await?, ["d/a/1", "d/a/old", "d/b/old"]);
    Ok(())
}

#[tokio::test]
async fn max_delete_and_interrupted_units_refuse_the_deletes() -> TestResult {
    let (src_mem, dst_mem) = barrier_stores().await?;
    let (src, dst): (DynStore, DynStore) = (Arc::new(src_mem), Arc::new(dst_mem));
    let job = UnitJob::Sync(sync_job(true)?);
    let exec = executor();
    let mut total = UnitResult::default();
    for (index, shard) in [(0, range(None, Some("b"))), (1, range(Some("b"), None))] {
        total.merge(exec.run_unit(&src, &dst, &job, &WorkUnit::Shard { index, shard }).await)?;
    }
    assert!(total.is_clean());
    assert_eq!(total.delete_candidates.len(), 2);

    let over = executor();
    assert_eq!(over.apply_deletes(&dst, &total, Some(1)).await, 1);
    let s = over.finish();
    assert_eq!((s.deleted, s.failed), (0, 1));
    assert_eq!(s.first_failures[0].code, "DeleteRefused");
    assert!(
        s.first_failures[0]
            .message
            .contains("2 objects would be deleted, more than --max-delete 1: nothing was deleted"),
        "{:?}",
        s.first_failures
    );
    assert_eq!(keys_of(&dst).await?, ["d/a/1", "d/a/old", "d/b/1", "d/b/old"]);

    // A unit interrupted somewhere else (its counters partial): no delete.
    let interrupted = UnitResult {
        interrupted: true,
        ..UnitResult::default()
    };
    let mut partial = by_wire(&total)?;
    partial.merge(by_wire(&interrupted)?)?;
    let elsewhere = executor();
    assert_eq!(elsewhere.apply_deletes(&dst, &partial, None).await, 1);
    let s = elsewhere.finish();
    assert!(
        s.first_failures[0].code == "DeleteRefused" && s.first_failures[0].message.contains("interrupted"),
        "{:?}",
        s.first_failures
    );
    assert_eq!(keys_of(&dst).await?.len(), 4);

    let within = executor();
    assert_eq!(within.apply_deletes(&dst, &total, Some(2)).await, 0);
    let s = within.finish();
    assert_eq!((s.deleted, s.failed), (2, 0));
    assert_eq!(keys_of(&dst).await?, ["d/a/1", "d/b/1"]);
    Ok(())
}

const AWKWARD: [&str; 8] = [
    "d/ü/日本語",
    "d/line\nbreak",
    "d/\"quoted\"",
    "d/back\\slash",
    "d/tab\there",
    "d/\u{2028}separator",
    "d/nul\u{0}byte",
    "d/emoji 🦀,comma",
];

#[tokio::test]
async fn units_and_results_round_trip_through_json() -> TestResult {
    let units = [
        WorkUnit::Shard {
            index: 7,
            shard: Shard {
                prefix: "logs/".into(),
                delimiter: Some('/'),
                from: Some("logs/ä".into()),
                until: Some("logs/z\n".into()),
            },
        },
        WorkUnit::Objects {
            objects: vec![
                UnitObject {
                    key: AWKWARD[1].into(),
                    size: 3,
                    etag: Some("\"abc-2\"".into()),
                },
                UnitObject {
                    key: AWKWARD[0].into(),
                    size: 0,
                    etag: None,
                },
            ],
        },
    ];
    for u in &units {
        assert_eq!(&by_wire(u)?, u);
    }
    let json = serde_json::to_value(&units[0])?;
    assert_eq!(json["kind"], "shard");
    assert_eq!(json["index"], 7);

    let r = UnitResult {
        counters: Counters {
            objects: 1,
            bytes: 2,
            listed: 3,
            skipped: 4,
            unlisted: 5,
            unverified: 6,
            deleted: 7,
            failed: 8,
            server_side: 9,
            shards: 10,
            shards_resumed: 11,
        },
        failures: vec![Failure {
            key: AWKWARD[2].into(),
            op: "get".into(),
            code: "NotFound".into(),
            message: "gone\n\"really\"".into(),
        }],
        interrupted: false,
        delete_candidates: DeleteCandidates::from_keys(AWKWARD)?,
    };
    let json = serde_json::to_string(&r)?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(
        v["delete_candidates"],
        serde_json::Value::from(AWKWARD.to_vec()),
        "a JSON sequence of keys"
    );
    let back: UnitResult = serde_json::from_str(&json)?;
    assert_eq!(back.counters, r.counters);
    assert_eq!(back.failures, r.failures);
    assert!(!back.interrupted);
    let keys: Vec<String> = back.delete_candidates.keys()?.collect::<Result<_, _>>()?;
    assert_eq!(keys, AWKWARD);
    // Fields left out (an older or terser sender) are empty, not an error.
    let terse: UnitResult = serde_json::from_str(r#"{"counters":{"objects":2}}"#)?;
    assert_eq!(terse.counters.objects, 2);
    assert!(terse.delete_candidates.is_empty() && terse.failures.is_empty());
    Ok(())
}

#[test]
fn delete_candidates_spool_append_and_read_while_growing() -> TestResult {
    // Beyond the write buffer many times over.
    let n = 200_000u64;
    let mut a = DeleteCandidates::new();
    for i in 0..n {
        a.push(&format!("d/{i:07}/\"x\"\n"))?;
    }
    // A reader taken now sees what is there now, and later pushes do not
    // disturb it (nor it them).
    let early = a.keys()?;
    a.push("d/late")?;
    assert_eq!(early.count() as u64, n);
    let mut b = DeleteCandidates::from_keys(["d/b1", "d/b2"])?;
    b.append(a)?;
    b.append(DeleteCandidates::new())?;
    let mut empty = DeleteCandidates::new();
    empty.append(DeleteCandidates::from_keys(["d/e"])?)?;
    b.append(empty)?;
    assert_eq!(b.len(), n + 4);
    let keys: Vec<String> = b.keys()?.collect::<Result<_, _>>()?;
    assert_eq!(keys.len() as u64, n + 4);
    assert_eq!(&keys[..3], ["d/b1", "d/b2", "d/0000000/\"x\"\n"]);
    assert_eq!(&keys[keys.len() - 2..], ["d/late", "d/e"]);
    assert_eq!(keys[100_002], "d/0100000/\"x\"\n");
    Ok(())
}

#[tokio::test]
async fn an_objects_unit_reports_a_vanished_object_and_copies_a_changed_one() -> TestResult {
    let src_mem = MemoryStore::new("src");
    let dst_mem = MemoryStore::new("dst");
    src_mem.put(&key("s/same")?, Bytes::from("same"), &opts(1)).await?;
    src_mem
        .put(&key("s/grown")?, Bytes::from("longer now"), &opts(2))
        .await?;
    dst_mem.put(&key("d/same")?, Bytes::from("same"), &opts(1)).await?;
    let (src, dst): (DynStore, DynStore) = (Arc::new(src_mem), Arc::new(dst_mem));
    let objects = vec![
        UnitObject {
            key: "same".into(),
            size: 4,
            etag: None,
        },
        UnitObject {
            key: "gone".into(),
            size: 5,
            etag: Some("0123456789abcdef0123456789abcdef".into()),
        },
        UnitObject {
            key: "grown".into(),
            size: 3,
            etag: Some("0123456789abcdef0123456789abcdef".into()),
        },
    ];
    let unit = WorkUnit::Objects { objects };
    let r = executor()
        .run_unit(&src, &dst, &UnitJob::Sync(sync_job(true)?), &unit)
        .await;
    assert_eq!(
        (
            r.counters.objects,
            r.counters.bytes,
            r.counters.skipped,
            r.counters.listed,
            r.counters.failed
        ),
        (1, 10, 1, 2, 1),
        "{r:?}"
    );
    assert_eq!(r.failures.len(), 1);
    let f = &r.failures[0];
    assert_eq!(
        (f.key.as_str(), f.op.as_str(), f.code.as_str()),
        ("s/gone", "head", "NoSuchKey")
    );
    assert!(f.message.contains("no longer in the source"), "{f:?}");
    assert!(r.delete_candidates.is_empty());
    let got = contents(&dst, "d/").await?;
    assert_eq!(got["d/grown"].0, Bytes::from("longer now"), "copied as it is now");
    assert_eq!(got["d/grown"].4["n"], "2");

    // The same for a copy.
    let cp = UnitJob::Copy(CopyJob {
        src_base: Key::prefix("s/")?,
        dst_base: Key::prefix("c/")?,
        filter: Filter::default(),
        dst_is_local: false,
    });
    let r = executor().run_unit(&src, &dst, &cp, &unit).await;
    assert_eq!((r.counters.objects, r.counters.failed), (2, 1), "{r:?}");
    assert_eq!(r.failures[0].key, "s/gone");
    assert_eq!(
        contents(&dst, "c/").await?.into_keys().collect::<Vec<_>>(),
        ["c/grown", "c/same"]
    );
    Ok(())
}

#[test]
fn counters_add_up() {
    let a = Counters {
        objects: 1,
        bytes: 100,
        listed: 3,
        skipped: 2,
        unlisted: 1,
        unverified: 1,
        deleted: 4,
        failed: 1,
        server_side: 1,
        shards: 0,
        shards_resumed: 0,
    };
    let b = Counters {
        objects: 10,
        bytes: 1000,
        listed: 30,
        skipped: 20,
        unlisted: 10,
        unverified: 10,
        deleted: 40,
        failed: 10,
        server_side: 10,
        shards: 5,
        shards_resumed: 2,
    };
    let mut sum = a;
    sum += b;
    assert_eq!(
        sum,
        Counters {
            objects: 11,
            bytes: 1100,
            listed: 33,
            skipped: 22,
            unlisted: 11,
            unverified: 11,
            deleted: 44,
            failed: 11,
            server_side: 11,
            shards: 5,
            shards_resumed: 2,
        }
    );
    assert_eq!([a, b, Counters::default()].into_iter().sum::<Counters>(), sum);
    assert_eq!(a + b, sum);
}

#[test]
fn merged_results_keep_a_bounded_number_of_failures_and_the_exact_count() -> TestResult {
    let failure = |i: usize| Failure {
        key: format!("s/{i}"),
        op: "get".into(),
        code: "Transient".into(),
        message: "boom".into(),
    };
    let mut total = UnitResult::default();
    for chunk in 0..3 {
        let failures: Vec<Failure> = (0..KEPT_UNIT_FAILURES / 2 + 1)
            .map(|i| failure(chunk * KEPT_UNIT_FAILURES + i))
            .collect();
        total.merge(UnitResult {
            counters: Counters {
                failed: failures.len() as u64,
                ..Counters::default()
            },
            failures,
            ..UnitResult::default()
        })?;
    }
    assert_eq!(total.counters.failed, 3 * (KEPT_UNIT_FAILURES as u64 / 2 + 1));
    assert_eq!(total.failures.len(), KEPT_UNIT_FAILURES);
    assert!(!total.is_clean());
    Ok(())
}

/// The in-process sync records shards as the units finish: without
/// deletes at once, with deletes only after they succeeded.
#[tokio::test]
async fn the_in_process_sync_marks_shards_done_after_the_barrier() -> TestResult {
    let (src_mem, dst_mem) = barrier_stores().await?;
    let (src, dst): (DynStore, DynStore) = (Arc::new(src_mem), Arc::new(dst_mem));
    let shards = vec![(0, range(None, Some("b"))), (1, range(Some("b"), None))];
    let done = std::sync::Mutex::new(Vec::new());
    let mark = |i: u32| done.lock().map(|mut d| d.push(i)).unwrap_or_default();
    // Refused deletes: no shard is done.
    let job = SyncJob {
        max_delete: Some(1),
        ..sync_job(true)?
    };
    let s = executor().sync(&src, &dst, &job, shards.clone(), &mark).await;
    assert_eq!((s.objects, s.deleted, s.failed), (2, 0, 1));
    assert!(done.lock().map(|d| d.is_empty()).unwrap_or(false));
    let s = executor().sync(&src, &dst, &sync_job(true)?, shards, &mark).await;
    assert_eq!((s.objects, s.skipped, s.deleted, s.failed), (0, 2, 2, 0));
    let mut marked = done.lock().map(|d| d.clone()).unwrap_or_default();
    marked.sort();
    assert_eq!(marked, [0, 1]);
    Ok(())
}
