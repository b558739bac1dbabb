//! `list_multipart_uploads` on every backend (memory, local directory, S3
//! on moto) and through the wrapper stack: the uploads in progress under a
//! prefix — this bucket's only, none completed or aborted — also when the
//! listing is refused and retried on the way.

use std::sync::Arc;

use bytes::Bytes;
use haul_store::checksum::md5_hex;
use haul_store::local::LocalStore;
use haul_store::memory::MemoryServer;
use haul_store::s3::{S3Config, S3Connection};
use haul_store::wrap::{resilient, FaultConfig, FaultStore, RetryPolicy};
use haul_store::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key(s: &str) -> Key {
    Key::prefix(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// `store` seen through faults before and after half its requests, retried.
fn flaky(store: &DynStore) -> DynStore {
    let faults: DynStore = Arc::new(FaultStore::new(
        store.clone(),
        FaultConfig {
            before_rate: 0.3,
            after_rate: 0.3,
            ..FaultConfig::none(5)
        },
    ));
    let policy = RetryPolicy {
        max_attempts: 30,
        min_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(5),
    };
    resilient(faults, 4, policy)
}

async fn sorted(s: &DynStore, prefix: &str) -> Result<Vec<(Key, MultipartId)>, StoreError> {
    let mut v = s.list_multipart_uploads(&key(prefix)).await?;
    v.sort_by(|a, b| (a.0.as_str(), &a.1 .0).cmp(&(b.0.as_str(), &b.1 .0)));
    Ok(v)
}

/// Uploads in `a` and `b` (two buckets of one server); completed and
/// aborted ones, and `b`'s, are not `a`'s uploads in progress.
async fn uploads_in_progress(a: DynStore, b: DynStore) -> TestResult {
    let opts = PutOptions::default();
    let mut want = Vec::new();
    for k in ["up/a", "up/a", "up/b/c"] {
        want.push((key(k), a.create_multipart(&key(k), &opts).await?));
    }
    want.sort_by(|x, y| (x.0.as_str(), &x.1 .0).cmp(&(y.0.as_str(), &y.1 .0)));
    let elsewhere = a.create_multipart(&key("upper"), &opts).await?;
    let aborted = a.create_multipart(&key("up/gone"), &opts).await?;
    a.abort_multipart(&key("up/gone"), &aborted).await?;
    let done = a.create_multipart(&key("up/done"), &opts).await?;
    let body = Bytes::from_static(b"one part");
    let part = a
        .upload_part(
            &key("up/done"),
            &done,
            1,
            body.clone(),
            &Checksums::md5(&md5_hex(&body)),
        )
        .await?;
    a.complete_multipart(&key("up/done"), &done, &[part]).await?;
    let theirs = b.create_multipart(&key("up/a"), &opts).await?;

    assert_eq!(sorted(&a, "up/").await?, want);
    assert_eq!(sorted(&flaky(&a), "up/").await?, want, "through faults and retries");
    assert_eq!(sorted(&a, "up/a").await?, want[..2].to_vec());
    assert_eq!(sorted(&a, "upp").await?, vec![(key("upper"), elsewhere.clone())]);
    assert_eq!(sorted(&a, "").await?.len(), 4);
    assert_eq!(sorted(&b, "").await?, vec![(key("up/a"), theirs)]);
    assert!(sorted(&a, "none/").await?.is_empty());
    for (k, id) in &want {
        a.abort_multipart(k, id).await?;
    }
    assert_eq!(sorted(&a, "").await?, vec![(key("upper"), elsewhere)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() -> TestResult {
    let server = MemoryServer::new();
    uploads_in_progress(Arc::new(server.bucket("a")), Arc::new(server.bucket("b"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local() -> TestResult {
    let (d1, d2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a: DynStore = Arc::new(LocalStore::new(d1.path())?);
    assert!(
        a.list_multipart_uploads(&key("")).await?.is_empty(),
        "no working directory yet"
    );
    uploads_in_progress(a, Arc::new(LocalStore::new(d2.path())?)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3() -> TestResult {
    if !haul_testkit::s3_enabled() {
        eprintln!("HAUL_TEST_S3=off: S3 backend not tested");
        return Ok(());
    }
    haul_testkit::set_aws_env();
    let server = haul_testkit::moto();
    let conn = S3Connection::connect(&S3Config {
        endpoint_url: Some(server.endpoint.clone()),
        path_style: true,
        ..Default::default()
    })
    .await?;
    let (ba, bb) = (haul_testkit::unique_bucket("ua"), haul_testkit::unique_bucket("ub"));
    haul_testkit::create_bucket(server, &ba)?;
    haul_testkit::create_bucket(server, &bb)?;
    uploads_in_progress(Arc::new(conn.bucket(&ba)), Arc::new(conn.bucket(&bb))).await
}
