//! `ObjectStore::get_with` over every backend (memory, local directory, S3
//! on moto): bounded and suffix ranges, `If-Match`, and the retry
//! wrapper's resume of a broken body under both.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use haul_store::checksum::md5_hex;
use haul_store::local::LocalStore;
use haul_store::memory::MemoryServer;
use haul_store::s3::{S3Config, S3Connection};
use haul_store::wrap::{FaultConfig, FaultStore, RetryPolicy, RetryStore};
use haul_store::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn key(s: &str) -> Key {
    Key::object(s).unwrap_or_else(|e| panic!("test key {s:?}: {e}"))
}

async fn read(s: &DynStore, k: &Key, opts: GetOpts) -> Result<(std::ops::Range<u64>, Bytes), StoreError> {
    let g = s.get_with(k, opts).await?;
    let range = g.range.clone();
    let chunks: Vec<Bytes> = g.body.try_collect().await?;
    Ok((range, chunks.concat().into()))
}

async fn put(s: &DynStore, k: &Key, body: &Bytes) -> Result<String, StoreError> {
    let opts = PutOptions {
        checksums: Checksums::md5(&md5_hex(body)),
        ..Default::default()
    };
    let r = s.put(k, body.clone(), &opts).await?;
    Ok(r.etag.unwrap_or_default())
}

async fn case(s: DynStore) -> TestResult {
    let body = Bytes::from(haul_testkit::data(1000, 7));
    let k = key("dir/obj");
    let etag = put(&s, &k, &body).await?;
    assert!(!etag.is_empty());

    let (r, b) = read(&s, &k, GetOpts::default()).await?;
    assert_eq!((r, b.clone()), (0..1000, body.clone()));

    let opts = GetOpts {
        range: Some(ReadRange::Bounded(10..20)),
        if_match: Some(etag.clone()),
        ..Default::default()
    };
    assert_eq!(read(&s, &k, opts).await?, (10..20, body.slice(10..20)));

    assert_eq!(
        read(&s, &k, GetOpts::suffix(100)).await?,
        (900..1000, body.slice(900..))
    );
    assert_eq!(read(&s, &k, GetOpts::suffix(5000)).await?, (0..1000, body.clone()));
    let quoted = GetOpts::if_match(format!("\"{etag}\""));
    assert_eq!(read(&s, &k, quoted).await?.1, body);

    for range in [None, Some(ReadRange::Suffix(10)), Some(ReadRange::Bounded(0..5))] {
        let opts = GetOpts {
            range,
            if_match: Some("0123456789abcdef0123456789abcdef".into()),
            ..Default::default()
        };
        let e = read(&s, &k, opts).await.err().ok_or("a stale If-Match read")?;
        assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
        assert!(e.message.contains("If-Match"), "{e}");
    }

    let e = read(&s, &key("missing"), GetOpts::suffix(10))
        .await
        .err()
        .ok_or("missing")?;
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");

    let empty = key("empty");
    put(&s, &empty, &Bytes::new()).await?;
    let (r, b) = read(&s, &empty, GetOpts::suffix(512)).await?;
    assert_eq!((r, b.len()), (0..0, 0));
    Ok(())
}

/// The retry wrapper over a store that cuts bodies off: reads with options
/// still come back whole, and a stale If-Match is not retried into success.
async fn resumed(s: DynStore) -> TestResult {
    let body = Bytes::from(haul_testkit::data(64 * 1024, 9));
    let k = key("big");
    let etag = put(&s, &k, &body).await?;
    let faulty: DynStore = Arc::new(FaultStore::new(
        s.clone(),
        FaultConfig {
            body_rate: 0.5,
            ..FaultConfig::none(3)
        },
    ));
    let policy = RetryPolicy {
        max_attempts: 20,
        min_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(5),
    };
    let retry: DynStore = Arc::new(RetryStore::new(faulty, policy));
    for _ in 0..10 {
        let opts = GetOpts {
            range: Some(ReadRange::Suffix(40_000)),
            if_match: Some(etag.clone()),
            ..Default::default()
        };
        assert_eq!(read(&retry, &k, opts).await?.1, body.slice(64 * 1024 - 40_000..));
        assert_eq!(read(&retry, &k, GetOpts::if_match(etag.clone())).await?.1, body);
    }
    let e = read(&retry, &k, GetOpts::if_match("nope")).await.err().ok_or("stale")?;
    assert_eq!(e.kind, ErrorKind::PreconditionFailed);
    Ok(())
}

fn memory() -> DynStore {
    Arc::new(MemoryServer::new().bucket("b"))
}

fn local(dir: &tempfile::TempDir) -> Result<DynStore, StoreError> {
    Ok(Arc::new(LocalStore::new(dir.path())?))
}

async fn s3() -> Result<Option<DynStore>, Box<dyn std::error::Error>> {
    if !haul_testkit::s3_enabled() {
        eprintln!("HAUL_TEST_S3=off: S3 backend not tested");
        return Ok(None);
    }
    haul_testkit::set_aws_env();
    let server = haul_testkit::moto();
    let conn = S3Connection::connect(&S3Config {
        endpoint_url: Some(server.endpoint.clone()),
        path_style: true,
        ..Default::default()
    })
    .await?;
    let b = haul_testkit::unique_bucket("gw");
    haul_testkit::create_bucket(server, &b)?;
    Ok(Some(Arc::new(conn.bucket(&b))))
}

/// A store that keeps no versions refuses a read of one, rather than
/// answer with the current object (which may be other bytes).
async fn no_versions(s: DynStore) -> TestResult {
    let k = key("v");
    put(&s, &k, &Bytes::from_static(b"current")).await?;
    for range in [None, Some(ReadRange::Bounded(0..3))] {
        let opts = GetOpts {
            range,
            version_id: Some("3HL4kqtJlcpXroDTDmJ".into()),
            ..Default::default()
        };
        let e = read(&s, &k, opts).await.err().ok_or("a version read")?;
        assert_eq!(e.kind, ErrorKind::NotSupported, "{e}");
        assert!(e.message.contains("keeps no object versions"), "{e}");
        assert!(e.message.contains("3HL4kqtJlcpXroDTDmJ"), "{e}");
    }
    Ok(())
}

#[tokio::test]
async fn stores_without_versions_refuse_a_version_read() -> TestResult {
    let d = tempfile::tempdir()?;
    no_versions(memory()).await?;
    no_versions(local(&d)?).await
}

#[tokio::test]
async fn memory_get_with() -> TestResult {
    case(memory()).await?;
    resumed(memory()).await
}

#[tokio::test]
async fn local_get_with() -> TestResult {
    let (d1, d2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    case(local(&d1)?).await?;
    resumed(local(&d2)?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_get_with() -> TestResult {
    if let Some(s) = s3().await? {
        case(s.clone()).await?;
        resumed(s).await?;
    }
    Ok(())
}

/// An SDK client of the test server, for what haul does not do itself
/// (turning versioning on, learning a PUT's version id).
async fn sdk() -> aws_sdk_s3::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(haul_testkit::moto().endpoint.clone())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build())
}

/// A versioned bucket: a version is read as it was (whole, in a range,
/// resumed by the retry wrapper after a broken body), not as the current
/// object; If-Match applies to the version; an unknown version is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_reads_a_version_not_the_current_object() -> TestResult {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let Some(s) = s3().await? else { return Ok(()) };
    let bucket = s.capabilities().bucket.clone();
    let c = sdk().await;
    let on = VersioningConfiguration::builder()
        .status(BucketVersioningStatus::Enabled)
        .build();
    c.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(on)
        .send()
        .await?;
    let (old, new) = (
        Bytes::from(haul_testkit::data(64 * 1024, 1)),
        Bytes::from(haul_testkit::data(50_000, 2)),
    );
    let k = key("doc");
    let v1 = c
        .put_object()
        .bucket(&bucket)
        .key(k.as_str())
        .body(old.to_vec().into())
        .send()
        .await?
        .version_id()
        .map(str::to_string)
        .ok_or("no version id")?;
    put(&s, &k, &new).await?;
    let of = |range: Option<ReadRange>, version: &str| GetOpts {
        range,
        version_id: Some(version.to_string()),
        ..Default::default()
    };

    let g = s.get_with(&k, of(None, &v1)).await?;
    assert_eq!(g.meta.version_id.as_deref(), Some(v1.as_str()));
    assert_eq!(read(&s, &k, of(None, &v1)).await?, (0..old.len() as u64, old.clone()));
    let r = Some(ReadRange::Bounded(10..20));
    assert_eq!(read(&s, &k, of(r, &v1)).await?, (10..20, old.slice(10..20)));
    assert_eq!(read(&s, &k, GetOpts::default()).await?.1, new, "the current object");

    let stale = GetOpts {
        if_match: Some(md5_hex(&new)),
        ..of(None, &v1)
    };
    let e = read(&s, &k, stale).await.err().ok_or("If-Match of another version")?;
    assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
    assert!(read(&s, &k, of(None, "no-such-version")).await.is_err());

    // A body cut off resumes from the same version.
    let faulty = Arc::new(FaultStore::new(
        s.clone(),
        FaultConfig {
            body_rate: 0.5,
            ..FaultConfig::none(5)
        },
    ));
    let policy = RetryPolicy {
        max_attempts: 20,
        min_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(5),
    };
    let retry: DynStore = Arc::new(RetryStore::new(faulty.clone(), policy));
    for _ in 0..6 {
        assert_eq!(read(&retry, &k, of(None, &v1)).await?.1, old);
    }
    assert!(faulty.injected() > 0, "no body was cut off");
    Ok(())
}
