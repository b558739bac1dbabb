//! One conformance suite, written once, run over every backend: memory,
//! local directory, and S3 on a real server (moto on 127.0.0.1).
//!
//! Each case becomes one test per backend (`roundtrip_sizes::s3`, ...).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use haul_store::checksum::{md5_hex, multipart_etag};
use haul_store::local::LocalStore;
use haul_store::memory::MemoryServer;
use haul_store::s3::{S3Config, S3Connection};
use haul_store::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A backend under test: two buckets of the same server (for copies).
struct Backend {
    a: DynStore,
    b: DynStore,
    /// The server enforces Content-MD5 and copy-source-if-match (moto does
    /// not; AWS S3 does).
    enforces: bool,
    /// Object tags are kept (garage has no tagging API).
    tagging: bool,
    /// Storage classes other than STANDARD are kept (garage ignores them).
    storage_classes: bool,
    /// `If-None-Match: *` is honoured (garage 2.5 ignores it: a
    /// conditional write replaces the object).
    conditional_writes: bool,
    _dirs: Vec<tempfile::TempDir>,
}

async fn memory() -> Result<Backend, Box<dyn std::error::Error>> {
    let server = MemoryServer::new();
    Ok(Backend {
        a: Arc::new(server.bucket("bucket-a")),
        b: Arc::new(server.bucket("bucket-b")),
        enforces: true,
        tagging: true,
        storage_classes: true,
        conditional_writes: true,
        _dirs: vec![],
    })
}

async fn local() -> Result<Backend, Box<dyn std::error::Error>> {
    let (d1, d2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    Ok(Backend {
        a: Arc::new(LocalStore::new(d1.path())?),
        b: Arc::new(LocalStore::new(d2.path())?),
        enforces: true,
        tagging: true,
        storage_classes: true,
        conditional_writes: true,
        _dirs: vec![d1, d2],
    })
}

async fn s3() -> Result<Backend, Box<dyn std::error::Error>> {
    haul_testkit::set_aws_env();
    let server = haul_testkit::moto();
    let conn = S3Connection::connect(&S3Config {
        endpoint_url: Some(server.endpoint.clone()),
        path_style: true,
        ..Default::default()
    })
    .await?;
    let (ba, bb) = (haul_testkit::unique_bucket("a"), haul_testkit::unique_bucket("b"));
    haul_testkit::create_bucket(server, &ba)?;
    haul_testkit::create_bucket(server, &bb)?;
    Ok(Backend {
        a: Arc::new(conn.bucket(&ba)),
        b: Arc::new(conn.bucket(&bb)),
        enforces: false,
        tagging: true,
        storage_classes: true,
        conditional_writes: true,
        _dirs: vec![],
    })
}

async fn garage() -> Result<Backend, Box<dyn std::error::Error>> {
    haul_testkit::set_aws_env();
    let node = haul_testkit::garage();
    let conn = S3Connection::connect(&S3Config {
        endpoint_url: Some(node.server.endpoint.clone()),
        path_style: true,
        ..Default::default()
    })
    .await?;
    let (ba, bb) = (haul_testkit::unique_bucket("a"), haul_testkit::unique_bucket("b"));
    node.create_bucket(&ba)?;
    node.create_bucket(&bb)?;
    Ok(Backend {
        a: Arc::new(conn.bucket(&ba)),
        b: Arc::new(conn.bucket(&bb)),
        enforces: true,
        tagging: false,
        storage_classes: false,
        conditional_writes: false,
        _dirs: vec![],
    })
}

macro_rules! conformance {
    ($case:ident) => {
        mod $case {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() -> TestResult {
                super::$case(super::memory().await?).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() -> TestResult {
                super::$case(super::local().await?).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() -> TestResult {
                if !haul_testkit::s3_enabled() {
                    eprintln!("HAUL_TEST_S3=off: S3 backend not tested");
                    return Ok(());
                }
                super::$case(super::s3().await?).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn garage() -> TestResult {
                if !haul_testkit::garage_enabled() {
                    eprintln!("HAUL_TEST_GARAGE=off: garage not tested");
                    return Ok(());
                }
                super::$case(super::garage().await?).await
            }
        }
    };
}

conformance!(roundtrip_sizes);
conformance!(special_keys);
conformance!(listing_order_and_shard_bounds);
conformance!(pagination_and_batch_delete);
conformance!(metadata_storage_class_tags);
conformance!(server_side_copy);
conformance!(part_copy);
conformance!(errors);
conformance!(if_none_match);
conformance!(capabilities_hold);

fn data(n: usize, seed: u64) -> Bytes {
    Bytes::from(haul_testkit::data(n, seed))
}

fn key(s: &str) -> Key {
    Key::object(s).unwrap_or_else(|e| panic!("test key {s:?}: {e}"))
}

fn put_opts(body: &[u8]) -> PutOptions {
    PutOptions {
        checksums: Checksums {
            md5_hex: Some(md5_hex(body)),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn read_all(s: &DynStore, k: &Key, range: Option<std::ops::Range<u64>>) -> Result<Bytes, StoreError> {
    let g = s.get(k, range).await?;
    let chunks: Vec<Bytes> = g.body.try_collect().await?;
    Ok(chunks.concat().into())
}

async fn list_keys(s: &DynStore, req: ListRequest) -> Result<Vec<String>, StoreError> {
    s.list(req)
        .map_ok(|e| match e {
            ListEntry::Object(o) => o.key.to_string(),
            ListEntry::Prefix(p) => format!("PRE {p}"),
            ListEntry::Unlisted(u) => format!("SKIPPED {} ({})", u.key, u.reason),
        })
        .try_collect()
        .await
}

async fn multipart_put(
    s: &DynStore,
    k: &Key,
    body: &Bytes,
    part: usize,
    opts: &PutOptions,
) -> Result<(PutResult, String), StoreError> {
    let mut opts = opts.clone();
    opts.part_size = Some(part as u64);
    let id = s.create_multipart(k, &opts).await?;
    let mut parts = Vec::new();
    for (i, chunk) in body.chunks(part).enumerate() {
        let md5 = md5_hex(chunk);
        let p = s
            .upload_part(k, &id, i as u32 + 1, body.slice_ref(chunk), &Checksums::md5(&md5))
            .await?;
        assert_eq!(p.etag, md5, "part ETag is the part's MD5");
        parts.push(p);
    }
    let expected = multipart_etag(parts.iter().map(|p| p.etag.as_str())).unwrap_or_default();
    Ok((s.complete_multipart(k, &id, &parts).await?, expected))
}

async fn roundtrip_sizes(be: Backend) -> TestResult {
    const MIB: usize = 1024 * 1024;
    for (i, size) in [0, 1, 5 * MIB - 1, 5 * MIB + 1, 64 * MIB].into_iter().enumerate() {
        let body = data(size, i as u64);
        let k = key(&format!("sizes/single-{size}"));
        let res = be.a.put(&k, body.clone(), &put_opts(&body)).await?;
        assert_eq!(
            res.etag.as_deref(),
            Some(md5_hex(&body).as_str()),
            "single-part ETag is the MD5 ({size} B)"
        );
        let head = be.a.head(&k).await?;
        assert_eq!(head.size, size as u64);
        assert_eq!(head.etag.as_deref(), Some(md5_hex(&body).as_str()));
        assert!(read_all(&be.a, &k, None).await? == body, "bytes differ for {size} B");
        if size > 10 {
            let r = 3..(size as u64 - 2);
            let got = read_all(&be.a, &k, Some(r.clone())).await?;
            assert!(got == body.slice(3..size - 2), "range read differs ({size} B)");
        }
        if size > 5 * MIB {
            let mk = key(&format!("sizes/multi-{size}"));
            let (res, expected) = multipart_put(&be.a, &mk, &body, 5 * MIB, &PutOptions::default()).await?;
            assert_eq!(
                res.etag.as_deref(),
                Some(expected.as_str()),
                "multipart ETag = MD5 of part MD5s + -N"
            );
            assert!(expected.ends_with(&format!("-{}", size.div_ceil(5 * MIB))));
            assert!(
                read_all(&be.a, &mk, None).await? == body,
                "multipart bytes differ ({size} B)"
            );
            assert_eq!(be.a.head(&mk).await?.etag.as_deref(), Some(expected.as_str()));
        }
    }
    Ok(())
}

async fn special_keys(be: Backend) -> TestResult {
    let keys = [
        "with space/a b.txt",
        "unicode/ü日本/файл",
        "plus/a+b",
        "percent/100%",
        "percent/%20x",
        "tilde~/q?=&",
        "double//slash",
        "dir-marker/",
    ];
    let any = be.a.capabilities().any_key;
    let mut stored = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let body = data(100 + i, i as u64);
        let res = be.a.put(&key(k), body.clone(), &put_opts(&body)).await;
        let fs_unsafe = k.contains("//") || k.ends_with('/');
        if fs_unsafe && !any {
            let e = res
                .err()
                .ok_or(format!("{k:?} should be rejected by a local directory"))?;
            assert_eq!(e.kind, ErrorKind::InvalidKey, "{e}");
            assert!(e.to_string().contains(k), "the error names the key: {e}");
            continue;
        }
        res?;
        assert!(read_all(&be.a, &key(k), None).await? == body, "bytes of {k:?}");
        assert_eq!(be.a.head(&key(k)).await?.size, body.len() as u64);
        stored.push(k.to_string());
    }
    stored.sort();
    let listed = list_keys(&be.a, ListRequest::prefix(Key::root())).await?;
    assert_eq!(listed, stored, "listing returns the keys exactly, sorted by bytes");
    Ok(())
}

async fn listing_order_and_shard_bounds(be: Backend) -> TestResult {
    let keys = ["a-b", "a/b", "a/c/d", "a0", "b0", "b+y", "b/x", "c d", "ü"];
    for k in keys {
        be.a.put(
            &key(&format!("o/{k}")),
            Bytes::from_static(b"x"),
            &PutOptions::default(),
        )
        .await?;
    }
    let p = Key::prefix("o/")?;
    let all = list_keys(&be.a, ListRequest::prefix(p.clone())).await?;
    let mut sorted: Vec<String> = keys.iter().map(|k| format!("o/{k}")).collect();
    sorted.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(all, sorted, "byte order, not directory-walk order");
    // A shard: (start_after, end).
    let shard = ListRequest {
        prefix: p.clone(),
        range: KeyRange {
            start_after: Some(Key::prefix("o/a/b")?),
            end: Some(Key::prefix("o/b/x")?),
        },
        delimiter: None,
        skip: None,
    };
    assert_eq!(list_keys(&be.a, shard).await?, ["o/a/c/d", "o/a0", "o/b+y"]);
    // Shards that tile the key space list every key exactly once.
    let cuts = ["o/a/", "o/a0", "o/b+", "o/c"];
    let mut tiled = Vec::new();
    let mut start: Option<Key> = None;
    for c in cuts
        .iter()
        .map(|c| Key::prefix(*c))
        .chain([Ok(Key::prefix("o/\u{10FFFF}")?)])
    {
        let c = c?;
        // [start, c): start_after is exclusive, so begin just before `start`.
        let req = ListRequest {
            prefix: p.clone(),
            range: KeyRange {
                start_after: None,
                end: Some(c.clone()),
            },
            delimiter: None,
            skip: None,
        };
        let part: Vec<String> = list_keys(&be.a, req)
            .await?
            .into_iter()
            .filter(|k| start.as_ref().is_none_or(|s| k.as_str() >= s.as_str()))
            .collect();
        tiled.extend(part);
        start = Some(c);
    }
    assert_eq!(tiled, sorted);
    // One level with a delimiter: folders as prefixes, in order.
    let lvl = ListRequest {
        prefix: p.clone(),
        delimiter: Some('/'),
        ..Default::default()
    };
    assert_eq!(
        list_keys(&be.a, lvl).await?,
        ["o/a-b", "PRE o/a/", "o/a0", "o/b+y", "PRE o/b/", "o/b0", "o/c d", "o/ü"]
    );
    let sub = ListRequest {
        prefix: Key::prefix("o/a/")?,
        delimiter: Some('/'),
        ..Default::default()
    };
    assert_eq!(list_keys(&be.a, sub).await?, ["o/a/b", "PRE o/a/c/"]);
    // A prefix that ends inside a name.
    assert_eq!(
        list_keys(&be.a, ListRequest::prefix(Key::prefix("o/a")?)).await?,
        ["o/a-b", "o/a/b", "o/a/c/d", "o/a0"]
    );
    Ok(())
}

async fn pagination_and_batch_delete(be: Backend) -> TestResult {
    let n = 1005;
    let keys: Vec<Key> = (0..n).map(|i| key(&format!("many/{:05}", i))).collect();
    futures::stream::iter(keys.clone())
        .map(|k| {
            let s = be.a.clone();
            async move { s.put(&k, Bytes::from_static(b"v"), &PutOptions::default()).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let listed = list_keys(&be.a, ListRequest::prefix(Key::prefix("many/")?)).await?;
    assert_eq!(listed.len(), n, "more than one page is listed");
    assert!(listed.windows(2).all(|w| w[0] < w[1]));
    let after = ListRequest {
        prefix: Key::prefix("many/")?,
        range: KeyRange {
            start_after: Some(key("many/00499")),
            end: None,
        },
        delimiter: None,
        skip: None,
    };
    assert_eq!(list_keys(&be.a, after).await?.len(), n - 500);
    for batch in keys.chunks(1000) {
        let failed = be.a.delete_many(batch).await?;
        assert!(failed.is_empty(), "{failed:?}");
    }
    // Deleting keys that are gone is not an error.
    assert!(be.a.delete_many(&keys[..3]).await?.is_empty());
    assert!(list_keys(&be.a, ListRequest::prefix(Key::prefix("many/")?))
        .await?
        .is_empty());
    Ok(())
}

fn rich_options() -> PutOptions {
    PutOptions {
        content_type: Some("application/json".into()),
        metadata: BTreeMap::from([("owner".to_string(), "data-team".to_string())]),
        storage_class: Some("STANDARD_IA".into()),
        tags: vec![("project".into(), "haul".into()), ("tier".into(), "gold".into())],
        ..Default::default()
    }
}

fn sorted_tags(mut t: Vec<(String, String)>) -> Vec<(String, String)> {
    t.sort();
    t
}

async fn metadata_storage_class_tags(be: Backend) -> TestResult {
    let body = data(1000, 7);
    let k = key("meta/x.json");
    let mut opts = rich_options();
    opts.checksums = put_opts(&body).checksums;
    be.a.put(&k, body.clone(), &opts).await?;
    let h = be.a.head(&k).await?;
    assert_eq!(h.content_type.as_deref(), Some("application/json"));
    assert_eq!(h.metadata.get("owner").map(String::as_str), Some("data-team"));
    check_class(&be, h.storage_class.as_deref(), "STANDARD_IA");
    check_tags(&be, &k, rich_options().tags).await?;
    // Listings carry the storage class too.
    let listed: Vec<ListEntry> =
        be.a.list(ListRequest::prefix(Key::prefix("meta/")?))
            .try_collect()
            .await?;
    match listed.first() {
        Some(ListEntry::Object(o)) => check_class(&be, o.storage_class.as_deref(), "STANDARD_IA"),
        other => panic!("unexpected listing {other:?}"),
    }
    // The same through a multipart upload.
    let big = data(6 * 1024 * 1024, 8);
    let mk = key("meta/big.json");
    multipart_put(&be.a, &mk, &big, 5 * 1024 * 1024, &rich_options()).await?;
    let h = be.a.head(&mk).await?;
    assert_eq!(h.content_type.as_deref(), Some("application/json"));
    assert_eq!(h.metadata.get("owner").map(String::as_str), Some("data-team"));
    check_class(&be, h.storage_class.as_deref(), "STANDARD_IA");
    check_tags(&be, &mk, rich_options().tags).await?;
    Ok(())
}

/// The storage class kept, on servers that keep them.
fn check_class(be: &Backend, got: Option<&str>, want: &str) {
    if be.storage_classes {
        assert_eq!(got, Some(want));
    }
}

/// The tags kept in bucket `a`; on a server without tagging, the store
/// says so (learnt, not assumed) and a GetObjectTagging is NotSupported.
async fn check_tags(be: &Backend, k: &Key, want: Vec<(String, String)>) -> TestResult {
    check_tags_in(&be.a, be.tagging, k, want).await
}

async fn check_tags_in(store: &DynStore, tagging: bool, k: &Key, want: Vec<(String, String)>) -> TestResult {
    assert_eq!(store.tagging_supported().await?, tagging, "tagging support learnt");
    if tagging {
        assert_eq!(sorted_tags(store.get_tags(k).await?), sorted_tags(want));
    } else {
        let e = store
            .get_tags(k)
            .await
            .err()
            .ok_or("tags read from a server without tagging")?;
        assert_eq!(e.kind, ErrorKind::NotSupported, "{e}");
        assert!(!e.is_retryable());
    }
    Ok(())
}

async fn server_side_copy(be: Backend) -> TestResult {
    let body = data(300_000, 9);
    let k = key("copy/src.json");
    let mut opts = rich_options();
    opts.checksums = put_opts(&body).checksums;
    be.a.put(&k, body.clone(), &opts).await?;
    let src = CopySource {
        bucket: be.a.capabilities().bucket.clone(),
        key: k.clone(),
        if_match: Some(md5_hex(&body)),
    };
    // COPY: bytes, content-type, metadata and tags come along.
    let res =
        be.b.copy(&src, &key("copied/keep.json"), &CopyOptions::default())
            .await?;
    assert_eq!(res.etag.as_deref(), Some(md5_hex(&body).as_str()));
    let h = be.b.head(&key("copied/keep.json")).await?;
    assert!(read_all(&be.b, &key("copied/keep.json"), None).await? == body);
    assert_eq!(h.content_type.as_deref(), Some("application/json"));
    assert_eq!(h.metadata.get("owner").map(String::as_str), Some("data-team"));
    check_tags_in(&be.b, be.tagging, &key("copied/keep.json"), rich_options().tags).await?;
    // REPLACE: new metadata, storage class and tags.
    let replace = CopyOptions {
        directive: MetadataDirective::Replace,
        put: PutOptions {
            content_type: Some("text/plain".into()),
            metadata: BTreeMap::from([("stage".to_string(), "2".to_string())]),
            storage_class: Some("GLACIER_IR".into()),
            tags: vec![("k".into(), "v".into())],
            ..Default::default()
        },
    };
    be.b.copy(&src, &key("copied/replace.json"), &replace).await?;
    let h = be.b.head(&key("copied/replace.json")).await?;
    assert_eq!(h.content_type.as_deref(), Some("text/plain"));
    assert_eq!(h.metadata.get("stage").map(String::as_str), Some("2"));
    assert!(!h.metadata.contains_key("owner"));
    check_class(&be, h.storage_class.as_deref(), "GLACIER_IR");
    check_tags_in(
        &be.b,
        be.tagging,
        &key("copied/replace.json"),
        vec![("k".to_string(), "v".to_string())],
    )
    .await?;
    assert!(read_all(&be.b, &key("copied/replace.json"), None).await? == body);
    // A stale if-match is refused (moto does not implement the condition).
    if !be.enforces {
        return Ok(());
    }
    let stale = CopySource {
        if_match: Some("0".repeat(32)),
        ..src.clone()
    };
    let e =
        be.b.copy(&stale, &key("copied/stale"), &CopyOptions::default())
            .await
            .err()
            .ok_or("stale copy accepted")?;
    assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
    Ok(())
}

async fn part_copy(be: Backend) -> TestResult {
    const MIB: u64 = 1024 * 1024;
    let body = data(11 * MIB as usize, 10);
    let k = key("pc/src.bin");
    be.a.put(&k, body.clone(), &put_opts(&body)).await?;
    let src = CopySource {
        bucket: be.a.capabilities().bucket.clone(),
        key: k.clone(),
        if_match: None,
    };
    let dk = key("pc/dst.bin");
    let opts = PutOptions {
        part_size: Some(5 * MIB),
        ..rich_options()
    };
    let id = be.b.create_multipart(&dk, &opts).await?;
    let mut parts = Vec::new();
    for (i, r) in [0..5 * MIB, 5 * MIB..10 * MIB, 10 * MIB..11 * MIB]
        .into_iter()
        .enumerate()
    {
        let p = be.b.upload_part_copy(&dk, &id, i as u32 + 1, &src, r.clone()).await?;
        assert_eq!(
            p.etag,
            md5_hex(&body[r.start as usize..r.end as usize]),
            "a copied part's ETag is its MD5"
        );
        parts.push(p);
    }
    let res = be.b.complete_multipart(&dk, &id, &parts).await?;
    let expected = multipart_etag(parts.iter().map(|p| p.etag.as_str()));
    assert_eq!(res.etag, expected);
    assert!(read_all(&be.b, &dk, None).await? == body, "part copy keeps the bytes");
    let h = be.b.head(&dk).await?;
    assert_eq!(
        h.metadata.get("owner").map(String::as_str),
        Some("data-team"),
        "metadata set on the upload is kept"
    );
    assert_eq!(h.content_type.as_deref(), Some("application/json"));
    Ok(())
}

async fn errors(be: Backend) -> TestResult {
    let missing = key("nope/missing");
    let e =
        be.a.head(&missing)
            .await
            .err()
            .ok_or("head of a missing key succeeded")?;
    assert!(e.is_not_found(), "{e}");
    assert!(!e.is_retryable());
    let e =
        be.a.get(&missing, None)
            .await
            .err()
            .ok_or("get of a missing key succeeded")?;
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("nope/missing"), "the error names the key: {e}");
    // A wrong Content-MD5: the server refuses it and nothing is written, or
    // (servers that do not check it, like moto) the ETag it returns is the
    // MD5 of what it stored, which exposes the mismatch to the engine.
    let body = Bytes::from_static(b"payload");
    let bad = put_opts(b"something else");
    let claimed = bad.checksums.md5_hex.clone().unwrap_or_default();
    match be.a.put(&key("nope/bad-md5"), body.clone(), &bad).await {
        Err(e) => {
            assert!(
                matches!(e.kind, ErrorKind::Integrity | ErrorKind::InvalidRequest),
                "{e}"
            );
            assert!(be
                .a
                .head(&key("nope/bad-md5"))
                .await
                .err()
                .is_some_and(|e| e.is_not_found()));
        }
        Ok(res) => {
            assert!(!be.enforces, "a store that enforces Content-MD5 accepted a wrong one");
            assert_ne!(
                res.etag.as_deref(),
                Some(claimed.as_str()),
                "the ETag must not echo a wrong MD5"
            );
            assert_eq!(res.etag.as_deref(), Some(md5_hex(&body).as_str()));
        }
    }
    // An aborted upload cannot be completed.
    let k = key("nope/aborted");
    let id = be.a.create_multipart(&k, &PutOptions::default()).await?;
    let p =
        be.a.upload_part(&k, &id, 1, body.clone(), &Checksums::md5(&md5_hex(&body)))
            .await?;
    be.a.abort_multipart(&k, &id).await?;
    assert!(be.a.complete_multipart(&k, &id, &[p]).await.is_err());
    assert!(be.a.head(&k).await.err().is_some_and(|e| e.is_not_found()));
    Ok(())
}

/// On a custom endpoint, CRC64NVME uploads are learnt from the server: moto
/// acknowledges the algorithm when a multipart upload is created, so the
/// upload gets a full-object checksum; `--crc64nvme false` sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_crc64_uploads_are_learnt_from_the_server() -> TestResult {
    if !haul_testkit::s3_enabled() {
        eprintln!("HAUL_TEST_S3=off: S3 backend not tested");
        return Ok(());
    }
    haul_testkit::set_aws_env();
    let server = haul_testkit::moto();
    for setting in [None, Some(false)] {
        let conn = S3Connection::connect(&S3Config {
            endpoint_url: Some(server.endpoint.clone()),
            path_style: true,
            send_crc64nvme: setting,
            ..Default::default()
        })
        .await?;
        let b = haul_testkit::unique_bucket("crc");
        haul_testkit::create_bucket(server, &b)?;
        let store = conn.bucket(&b);
        // Until the server says otherwise, uploads are worth a CRC.
        let offered = store.capabilities().upload_checksums.contains(&ChecksumKind::Crc64Nvme);
        assert_eq!(offered, setting.is_none(), "{setting:?}");
        let k = key("big.bin");
        let body = data(5 * 1024 * 1024 + 7, 9);
        let opts = PutOptions {
            full_object_crc64: true,
            ..Default::default()
        };
        let id = store.create_multipart(&k, &opts).await?;
        let sums = Checksums {
            md5_hex: Some(md5_hex(&body)),
            crc64nvme: Some(checksum::crc64_to_b64(checksum::crc64(&body))),
            ..Default::default()
        };
        let part = store.upload_part(&k, &id, 1, body.clone(), &sums).await?;
        store.complete_multipart(&k, &id, &[part]).await?;
        let head = store.head(&k).await?;
        assert_eq!(
            head.checksums.crc64nvme.is_some(),
            setting.is_none(),
            "{setting:?}: {head:?}"
        );
        let s: DynStore = Arc::new(store);
        assert_eq!(read_all(&s, &k, None).await?, body);
    }
    Ok(())
}

/// `If-None-Match: *` (`PutOptions::if_none_match`): a write over an
/// existing key is refused with `PreconditionFailed` and the object keeps
/// its content, for a single PUT and for a multipart upload's complete; a
/// new key is written.
async fn if_none_match(be: Backend) -> TestResult {
    if !be.conditional_writes {
        // Nothing a client can do at the request level: `--if-exists skip`
        // guards with a HEAD first there (the race is documented).
        eprintln!("this server ignores If-None-Match: not tested");
        return Ok(());
    }
    let s = &be.a;
    let k = key("inm/kept.bin");
    let first = data(1000, 1);
    s.put(&k, first.clone(), &put_opts(&first)).await?;
    let cond = |body: &[u8]| PutOptions {
        if_none_match: true,
        ..put_opts(body)
    };
    let second = data(1000, 2);
    match s.put(&k, second.clone(), &cond(&second)).await {
        Err(e) if e.kind == ErrorKind::PreconditionFailed => {}
        other => return Err(format!("a conditional PUT over an existing key: {other:?}").into()),
    }
    assert_eq!(read_all(s, &k, None).await?, first, "the object is intact");
    let fresh = key("inm/new.bin");
    s.put(&fresh, second.clone(), &cond(&second)).await?;
    assert_eq!(read_all(s, &fresh, None).await?, second);

    const PART: usize = 5 * 1024 * 1024;
    let big = data(PART + 1000, 3);
    let cond_mpu = PutOptions {
        if_none_match: true,
        ..Default::default()
    };
    match multipart_put(s, &k, &big, PART, &cond_mpu).await {
        Err(e) if e.kind == ErrorKind::PreconditionFailed => {}
        other => return Err(format!("a conditional multipart complete over an existing key: {other:?}").into()),
    }
    assert_eq!(read_all(s, &k, None).await?, first, "the object is intact");
    let fresh_mpu = key("inm/new-mpu.bin");
    multipart_put(s, &fresh_mpu, &big, PART, &cond_mpu).await?;
    assert_eq!(read_all(s, &fresh_mpu, None).await?, big);
    Ok(())
}

/// What a store's capabilities claim, its calls do: the engine relies on
/// these fields instead of asking what kind of store it has.
async fn capabilities_hold(be: Backend) -> TestResult {
    let caps = be.a.capabilities().clone();
    let body = data(100_000, 7);
    let k = key("caps/object");
    if caps.hashes_writes {
        // No checksums given: the ETag is the MD5 of what was written.
        let res = be.a.put(&k, body.clone(), &PutOptions::default()).await?;
        assert_eq!(res.etag.as_deref(), Some(md5_hex(&body).as_str()));
        // A Content-MD5 that does not match is refused by the store itself.
        let bad = PutOptions {
            checksums: Checksums::md5(&md5_hex(b"something else")),
            ..Default::default()
        };
        let e = be.a.put(&key("caps/bad"), body.clone(), &bad).await.err();
        assert_eq!(e.map(|e| e.kind), Some(ErrorKind::Integrity));
        assert!(be.a.head(&key("caps/bad")).await.is_err(), "nothing written");
    }
    let id =
        be.a.create_multipart(&key("caps/streamed"), &PutOptions::default())
            .await?;
    let chunks: Vec<Result<Bytes, StoreError>> = vec![Ok(body.slice(..60_000)), Ok(body.slice(60_000..))];
    let streamed =
        be.a.upload_part_stream(
            &key("caps/streamed"),
            &id,
            1,
            body.len() as u64,
            futures::stream::iter(chunks).boxed(),
        )
        .await;
    match streamed {
        Ok(part) => {
            assert!(
                caps.streams_parts,
                "a part was streamed by a store that does not claim it"
            );
            assert_eq!(part.etag, md5_hex(&body), "a streamed part's ETag is its MD5");
            let done = be.a.complete_multipart(&key("caps/streamed"), &id, &[part]).await?;
            assert!(done.etag.is_some());
            assert!(read_all(&be.a, &key("caps/streamed"), None).await? == body);
        }
        Err(e) => {
            assert!(!caps.streams_parts, "streams_parts claimed, but: {e}");
            assert_eq!(e.kind, ErrorKind::NotSupported);
            be.a.abort_multipart(&key("caps/streamed"), &id).await?;
        }
    }
    if caps.keeps_mtime {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 250_000_000);
        let opts = PutOptions {
            mtime: Some(t),
            ..Default::default()
        };
        let km = key("caps/mtime");
        be.a.put(&km, body.clone(), &opts).await?;
        let head = be.a.head(&km).await?;
        assert_eq!(head.last_modified, Some(t), "the file's mtime is the one given");
        assert_eq!(
            head.metadata.get(haul_store::mtime::METADATA_KEY).map(String::as_str),
            Some(haul_store::mtime::format_mtime(t).as_str()),
            "and reported as mtime metadata"
        );
    }
    assert_eq!(
        caps.local_root.is_some(),
        caps.local_reads,
        "only a local directory has a root path"
    );
    Ok(())
}
