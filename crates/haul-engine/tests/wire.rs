//! The engine on servers that implement less of S3, and under tight request
//! limits: no copy strategy waits on itself, and an optional API a server
//! lacks (object tagging, on garage and R2) never fails a copy that can go
//! on without it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use haul_engine::job::JobOptions;
use haul_engine::plan::Planner;
use haul_engine::report::NoObserver;
use haul_engine::{Executor, Filter, Summary, Transfer, TransferOptions};
use haul_store::memory::{MemoryServer, MemoryStore};
use haul_store::wrap::LimitStore;
use haul_store::*;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;
const MIB: usize = 1024 * 1024;

fn tags() -> Vec<(String, String)> {
    vec![("team".into(), "ingest".into()), ("tier".into(), "hot".into())]
}

/// The objects of one case: `(key, size)`; sizes pick the strategy.
fn objects(n: usize, size: usize) -> Vec<(String, Bytes)> {
    (0..n)
        .map(|i| {
            (
                format!("in/{i:03}.bin"),
                Bytes::from(haul_testkit::data(size, i as u64 + 1)),
            )
        })
        .collect()
}

async fn seed(store: &MemoryStore, objs: &[(String, Bytes)], with_tags: bool) -> TestResult {
    let opts = PutOptions {
        tags: if with_tags { tags() } else { Vec::new() },
        ..Default::default()
    };
    for (k, body) in objs {
        store.put(&Key::object(k)?, body.clone(), &opts).await?;
    }
    Ok(())
}

fn opts() -> TransferOptions {
    TransferOptions {
        multipart_threshold: MIB as u64,
        part_size: MIB as u64,
        ..Default::default()
    }
}

/// Copies `in/` to `out/` with `concurrency` objects in flight, within 30 s.
async fn copy_all(src: DynStore, dst: DynStore, topts: TransferOptions, concurrency: usize) -> Result<Summary, String> {
    let planner = Planner {
        src: src.clone(),
        src_prefix: Key::prefix("in/").map_err(|e| e.to_string())?,
        dst_prefix: Key::prefix("out/").map_err(|e| e.to_string())?,
        filter: Filter::default(),
        dst_is_local: false,
    };
    let exec = Executor::new(
        Transfer::new(topts, CancellationToken::new()),
        JobOptions {
            concurrency,
            ..Default::default()
        },
        Arc::new(NoObserver),
    );
    tokio::time::timeout(Duration::from_secs(30), exec.copy(&src, &dst, planner.tasks()))
        .await
        .map_err(|_| "the copy hung: no progress for 30 s".to_string())
}

/// Every object arrived under `out/` byte for byte, with `want_tags`.
async fn check_copied(dst: &MemoryStore, objs: &[(String, Bytes)], want_tags: &[(String, String)]) -> TestResult {
    for (k, body) in objs {
        let out = Key::object(k.replacen("in/", "out/", 1))?;
        let g = dst.get(&out, None).await?;
        let got: Vec<Bytes> = g.body.try_collect().await?;
        assert!(got.concat() == body.as_ref(), "{out}: bytes differ");
        if let Ok(t) = dst.get_tags(&out).await {
            assert_eq!(t, want_tags, "{out}: tags");
        }
    }
    Ok(())
}

/// Stores on two servers (streamed copies) or one (server-side), with
/// `limit` requests per store; the source objects carry tags.
struct Case {
    name: &'static str,
    same_server: bool,
    size: usize,
}

const CASES: [Case; 4] = [
    Case {
        name: "single (streamed)",
        same_server: false,
        size: 10_000,
    },
    Case {
        name: "multipart (streamed)",
        same_server: false,
        size: 3 * MIB + 5,
    },
    Case {
        name: "server copy",
        same_server: true,
        size: 10_000,
    },
    Case {
        name: "server part copy",
        same_server: true,
        size: 3 * MIB + 5,
    },
];

fn stores(case: &Case, dst_tagging: bool) -> (MemoryStore, MemoryStore) {
    let a = MemoryServer::new();
    let b = if case.same_server {
        a.clone()
    } else {
        MemoryServer::new()
    };
    // Copies beyond 2 MiB go part by part.
    let src = a.bucket("src").with_limits(MIB as u64, 2 * MIB as u64);
    let dst = b.bucket("dst").with_limits(MIB as u64, 2 * MIB as u64);
    let dst = if dst_tagging { dst } else { dst.without_tagging() };
    (src, dst)
}

/// A GET holds its request slot until its body is read; asking the same
/// limiter for the tags after it deadlocked (issue 12, item 1). Every
/// strategy, a limit of one request per store, tags carried over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_finishes_under_a_limit_of_one_request() -> TestResult {
    for case in &CASES {
        let (src, dst) = stores(case, true);
        let objs = objects(6, case.size);
        seed(&src, &objs, true).await?;
        let s: DynStore = Arc::new(LimitStore::new(Arc::new(src), 1));
        let d: DynStore = Arc::new(LimitStore::new(Arc::new(dst.clone()), 1));
        let summary = copy_all(s, d, opts(), 64)
            .await
            .map_err(|e| format!("{}: {e}", case.name))?;
        assert_eq!(summary.failed, 0, "{}: {:?}", case.name, summary.first_failures);
        assert_eq!(summary.objects, 6, "{}", case.name);
        check_copied(&dst, &objs, &tags()).await?;
    }
    Ok(())
}

/// `haul cp -r --max-requests 4 -j 64` across endpoints: 100 small tagged objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_small_copies_across_endpoints_finish_with_four_requests_and_64_in_flight() -> TestResult {
    let (src, dst) = (MemoryStore::new("src"), MemoryStore::new("dst"));
    let objs = objects(100, 1000);
    seed(&src, &objs, true).await?;
    let s: DynStore = Arc::new(LimitStore::new(Arc::new(src), 4));
    let d: DynStore = Arc::new(LimitStore::new(Arc::new(dst.clone()), 4));
    let summary = copy_all(s, d, opts(), 64).await?;
    assert_eq!(
        (summary.objects, summary.failed),
        (100, 0),
        "{:?}",
        summary.first_failures
    );
    check_copied(&dst, &objs, &tags()).await
}

/// garage answers GetObjectTagging with 501 and drops x-amz-tagging: every
/// strategy copies the objects without tags and says so once (issue 12,
/// item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_without_tagging_gets_every_object_untagged_with_one_notice() -> TestResult {
    for case in &CASES {
        let (src, dst) = stores(case, false);
        let objs = objects(4, case.size);
        seed(&src, &objs, true).await?;
        // The merge path of a server-side copy reads the source's tags too.
        let topts = TransferOptions {
            put: PutOptions {
                metadata: [("origin".to_string(), "test".to_string())].into(),
                ..Default::default()
            },
            ..opts()
        };
        let summary = copy_all(Arc::new(src), Arc::new(dst.clone()), topts, 8).await?;
        assert_eq!(summary.failed, 0, "{}: {:?}", case.name, summary.first_failures);
        assert_eq!(summary.objects, 4, "{}", case.name);
        assert_eq!(
            summary.notices,
            vec!["tags not copied: the destination does not support object tagging".to_string()],
            "{}",
            case.name
        );
        check_copied(&dst, &objs, &[]).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_tagging_is_copied_with_one_notice() -> TestResult {
    for case in CASES.iter().filter(|c| !c.same_server) {
        let a = MemoryStore::new("src")
            .with_limits(MIB as u64, 2 * MIB as u64)
            .without_tagging();
        let dst = MemoryStore::new("dst").with_limits(MIB as u64, 2 * MIB as u64);
        let objs = objects(5, case.size);
        seed(&a, &objs, false).await?;
        let summary = copy_all(Arc::new(a), Arc::new(dst.clone()), opts(), 8).await?;
        assert_eq!(
            (summary.objects, summary.failed),
            (5, 0),
            "{}: {:?}",
            case.name,
            summary.first_failures
        );
        assert_eq!(
            summary.notices,
            vec!["tags not copied: the source does not support object tagging".to_string()],
            "{}",
            case.name
        );
        check_copied(&dst, &objs, &[]).await?;
    }
    Ok(())
}

/// `--require-tags`: an object whose tags cannot be carried fails, with the
/// reason, and nothing is written for it; untagged objects still copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tags_fails_objects_whose_tags_would_be_dropped() -> TestResult {
    for case in CASES.iter().filter(|c| !c.same_server) {
        let (src, dst) = stores(case, false);
        let tagged = objects(3, case.size);
        seed(&src, &tagged, true).await?;
        let plain = vec![("in/plain.bin".to_string(), Bytes::from_static(b"no tags here"))];
        seed(&src, &plain, false).await?;
        let topts = TransferOptions {
            require_tags: true,
            ..opts()
        };
        let summary = copy_all(Arc::new(src), Arc::new(dst.clone()), topts, 8).await?;
        assert_eq!((summary.objects, summary.failed), (1, 3), "{}", case.name);
        for f in &summary.first_failures {
            assert_eq!(f.code, "TagsNotCopied", "{}: {f:?}", case.name);
            assert!(
                f.message.contains("the destination does not support object tagging"),
                "{f:?}"
            );
        }
        let listed: Vec<ListEntry> = dst
            .list(ListRequest::prefix(Key::prefix("out/")?))
            .try_collect()
            .await?;
        assert_eq!(listed.len(), 1, "{}: only the untagged object lands", case.name);
        check_copied(&dst, &plain, &[]).await?;
    }
    Ok(())
}

/// Tags asked for with `--tag` are never dropped quietly: each object fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_tags_on_a_destination_without_tagging_fail_each_object() -> TestResult {
    let case = &CASES[0];
    let (src, dst) = stores(case, false);
    let objs = objects(2, case.size);
    seed(&src, &objs, false).await?;
    let topts = TransferOptions {
        put: PutOptions {
            tags: tags(),
            ..Default::default()
        },
        ..opts()
    };
    let summary = copy_all(Arc::new(src), Arc::new(dst.clone()), topts, 8).await?;
    assert_eq!((summary.objects, summary.failed), (0, 2));
    assert!(summary
        .first_failures
        .iter()
        .all(|f| f.code == "TaggingNotSupported" && f.message.contains("--tag cannot be applied")));
    Ok(())
}

/// A part (or PUT) the server refused for a bad digest — a byte flipped on
/// the way — is sent again from memory: the part, not the whole object
/// (issue 12, item 6). One attempt per object, so only part resends can
/// save these copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_refused_for_a_bad_digest_are_resent_part_by_part() -> TestResult {
    use haul_store::wrap::{FaultConfig, FaultStore, RetryPolicy, RetryStore};
    let src = MemoryStore::new("src");
    let dst = MemoryStore::new("dst").with_limits(MIB as u64, 5 << 30);
    let mut objs = objects(20, 3 * MIB + 5);
    objs.extend(
        objects(40, 2000)
            .into_iter()
            .map(|(k, b)| (k.replace(".bin", "-small.bin"), b)),
    );
    seed(&src, &objs, false).await?;
    let faults = Arc::new(FaultStore::new(
        Arc::new(dst.clone()),
        FaultConfig {
            corrupt_write_rate: 0.3,
            ..FaultConfig::none(5)
        },
    ));
    let d: DynStore = Arc::new(RetryStore::new(
        faults.clone(),
        RetryPolicy {
            max_attempts: 20,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
    ));
    let planner = Planner {
        src: Arc::new(src.clone()),
        src_prefix: Key::prefix("in/")?,
        dst_prefix: Key::prefix("out/")?,
        filter: Filter::default(),
        dst_is_local: false,
    };
    let exec = Executor::new(
        Transfer::new(opts(), CancellationToken::new()),
        JobOptions {
            concurrency: 16,
            object_attempts: 1,
            ..Default::default()
        },
        Arc::new(NoObserver),
    );
    let s: DynStore = Arc::new(src);
    let summary = exec.copy(&s, &d, planner.tasks()).await;
    assert_eq!(summary.failed, 0, "{:?}", summary.first_failures);
    assert_eq!(summary.objects, objs.len() as u64);
    assert!(
        faults.injected() > 20,
        "only {} writes were corrupted",
        faults.injected()
    );
    assert!(
        summary.retries >= faults.injected(),
        "every refused write was resent and counted: {} retries, {} refused",
        summary.retries,
        faults.injected()
    );
    check_copied(&dst, &objs, &[]).await
}
