//! S3 Inventory as a source: CSV.gz and Parquet inventories made by the
//! test (haul_testkit::inventory) yield the same rows; damaged manifests
//! and data files are refused before any row; versions and delete markers
//! are filtered unless asked for; foreign buckets are refused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use haul_engine::inventory::{load_inventory, Format, Inventory, InventoryOptions, InventoryRow};
use haul_store::memory::MemoryStore;
use haul_store::{DynStore, ErrorKind, Key, PutOptions, StoreError};
use haul_testkit::inventory::{csv_gz, manifest, md5_hex, parquet, Row};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn key(s: &str) -> Result<Key, StoreError> {
    Key::object(s)
}

async fn put(store: &DynStore, k: &str, body: &[u8]) -> Result<(), StoreError> {
    store
        .put(&key(k)?, Bytes::copy_from_slice(body), &PutOptions::default())
        .await
        .map(|_| ())
}

/// Keys that need care: spaces, `+`, `%`, slashes, unicode, quotes, commas.
fn sample() -> Vec<Row> {
    let mut rows = vec![
        Row::object("src", "2026/a b+c.json", 10, "0123456789abcdef0123456789abcdef"),
        Row::object(
            "src",
            "2026/100% sure/ünï çødé 日本.txt",
            0,
            "d41d8cd98f00b204e9800998ecf8427e",
        ),
        Row::object("src", "quote\"d, comma'd/x", 7, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-2"),
        Row::object("src", "dir/", 0, "d41d8cd98f00b204e9800998ecf8427e"),
    ];
    rows[1].storage_class = Some("DEEP_ARCHIVE".into());
    rows[2].storage_class = Some("INTELLIGENT_TIERING".into());
    rows[2].tier = Some("ARCHIVE".into());
    rows[2].version_id = Some("v3".into());
    // An older version and a delete marker: only with versions.
    let mut old = Row::object("src", "2026/a b+c.json", 4, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    old.is_latest = false;
    old.version_id = Some("v1".into());
    old.last_modified_ms = 1_700_000_000_000;
    let marker = Row {
        bucket: "src".into(),
        key: "gone.txt".into(),
        version_id: Some("v9".into()),
        is_latest: true,
        is_delete_marker: true,
        last_modified_ms: 1_796_040_002_000,
        ..Default::default()
    };
    rows.insert(1, old);
    rows.push(marker);
    rows.push(Row::object("src", "z/last", 3, "cccccccccccccccccccccccccccccccc"));
    rows
}

fn expected(rows: &[Row]) -> Vec<InventoryRow> {
    rows.iter()
        .map(|r| InventoryRow {
            bucket: r.bucket.clone(),
            key: r.key.clone(),
            version_id: r.version_id.clone(),
            is_latest: r.is_latest,
            is_delete_marker: r.is_delete_marker,
            size: r.size.unwrap_or(0),
            last_modified: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(r.last_modified_ms as u64)),
            etag: r.etag.clone(),
            storage_class: r.storage_class.clone(),
            archive_tier: r.tier.clone(),
        })
        .collect()
}

/// Writes an inventory of `rows` in two data files under `inv/` and returns
/// the store and the manifest key.
async fn inventory(
    format: &str,
    rows: &[Row],
    bad_md5: bool,
) -> Result<(DynStore, Key), Box<dyn std::error::Error + Send + Sync>> {
    let store: DynStore = Arc::new(MemoryStore::new("inventories"));
    let (a, b) = rows.split_at(rows.len() / 2);
    // Small inventories get many row groups, large ones a few.
    let per_group = if rows.len() > 100 { 4096 } else { 2 };
    let (bytes_a, bytes_b, ext) = if format == "Parquet" {
        (parquet(a, per_group)?, parquet(b, per_group)?, "parquet")
    } else {
        (csv_gz(a)?, csv_gz(b)?, "csv.gz")
    };
    let (ka, kb) = (format!("inv/src/cfg/data/0.{ext}"), format!("inv/src/cfg/data/1.{ext}"));
    put(&store, &ka, &bytes_a).await?;
    put(&store, &kb, &bytes_b).await?;
    let zeros = "0".repeat(32);
    let md5_b = md5_hex(&bytes_b);
    let md5s = [md5_hex(&bytes_a), if bad_md5 { zeros } else { md5_b }];
    let md5s: Vec<&str> = md5s.iter().map(String::as_str).collect();
    let m = manifest(
        "src",
        format,
        &[(ka.as_str(), bytes_a.as_slice()), (kb.as_str(), bytes_b.as_slice())],
        Some(&md5s),
    );
    let mk = "inv/src/cfg/2026-11-30T01-00Z/manifest.json";
    put(&store, mk, &m).await?;
    put(
        &store,
        "inv/src/cfg/2026-11-30T01-00Z/manifest.checksum",
        format!("{}\n", md5_hex(&m)).as_bytes(),
    )
    .await?;
    Ok((store, key(mk)?))
}

async fn rows(inv: Inventory, versions: bool) -> Vec<Result<InventoryRow, StoreError>> {
    inv.rows(InventoryOptions { versions }).collect().await
}

fn ok_rows(rows: Vec<Result<InventoryRow, StoreError>>) -> Result<Vec<InventoryRow>, StoreError> {
    rows.into_iter().collect()
}

#[tokio::test]
async fn csv_gz_and_parquet_yield_the_same_rows() -> TestResult {
    let sample = sample();
    let (cs, ck) = inventory("CSV", &sample, false).await?;
    let (ps, pk) = inventory("Parquet", &sample, false).await?;
    let csv = load_inventory(&cs, &ck).await?;
    let pq = load_inventory(&ps, &pk).await?;
    assert_eq!(csv.manifest().format, Format::CsvGz);
    assert_eq!(pq.manifest().format, Format::Parquet);
    assert_eq!((csv.source_bucket.as_str(), pq.source_bucket.as_str()), ("src", "src"));
    let all_csv = ok_rows(rows(csv, true).await)?;
    let all_pq = ok_rows(rows(pq, true).await)?;
    assert_eq!(all_csv, expected(&sample), "CSV keys decoded, quoted fields read");
    assert_eq!(all_pq, all_csv, "Parquet and CSV agree");
    assert!(all_pq[2].is_archived() && all_pq[3].is_archived() && !all_pq[0].is_archived());
    Ok(())
}

#[tokio::test]
async fn only_current_objects_unless_versions() -> TestResult {
    let sample = sample();
    for format in ["CSV", "Parquet"] {
        let (s, k) = inventory(format, &sample, false).await?;
        let current = ok_rows(rows(load_inventory(&s, &k).await?, false).await)?;
        let keys: Vec<_> = current.iter().map(|r| (r.key.as_str(), r.size)).collect();
        assert_eq!(
            keys,
            [
                ("2026/a b+c.json", 10),
                ("2026/100% sure/ünï çødé 日本.txt", 0),
                ("quote\"d, comma'd/x", 7),
                ("dir/", 0),
                ("z/last", 3)
            ],
            "{format}: the old version and the delete marker are skipped"
        );
        let all = ok_rows(rows(load_inventory(&s, &k).await?, true).await)?;
        assert_eq!(all.len(), 7, "{format}");
        assert!(all.iter().any(|r| r.is_delete_marker && r.key == "gone.txt"));
        assert!(all
            .iter()
            .any(|r| !r.is_latest && r.version_id.as_deref() == Some("v1")));
        // The listing view: under a prefix, no directory markers.
        let objects: Vec<_> = load_inventory(&s, &k)
            .await?
            .objects(Key::prefix("2026/")?)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let got: Vec<_> = objects
            .iter()
            .map(|o| (o.key.as_str(), o.size, o.etag.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("2026/a b+c.json", 10, Some("0123456789abcdef0123456789abcdef")),
                (
                    "2026/100% sure/ünï çødé 日本.txt",
                    0,
                    Some("d41d8cd98f00b204e9800998ecf8427e")
                )
            ]
        );
        assert_eq!(objects[1].storage_class.as_deref(), Some("DEEP_ARCHIVE"));
    }
    Ok(())
}

#[tokio::test]
async fn a_wrong_md5_names_the_file_and_nothing_is_read() -> TestResult {
    for (format, ext) in [("CSV", "csv.gz"), ("Parquet", "parquet")] {
        let (s, k) = inventory(format, &sample(), true).await?;
        let e = load_inventory(&s, &k)
            .await
            .err()
            .ok_or("a damaged inventory was loaded")?;
        assert_eq!(e.kind, ErrorKind::Integrity);
        assert_eq!(e.key, format!("inv/src/cfg/data/1.{ext}"));
        let shown = e.to_string();
        assert!(
            shown.contains(&format!("inv/src/cfg/data/1.{ext}"))
                && shown.contains("the manifest says 00000000000000000000000000000000: nothing was copied"),
            "{shown}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_wrong_manifest_checksum_is_refused() -> TestResult {
    let (s, k) = inventory("Parquet", &sample(), false).await?;
    let ck = "inv/src/cfg/2026-11-30T01-00Z/manifest.checksum";
    put(&s, ck, b"ffffffffffffffffffffffffffffffff\n").await?;
    let e = load_inventory(&s, &k)
        .await
        .err()
        .ok_or("a damaged manifest was loaded")?;
    assert_eq!(e.kind, ErrorKind::Integrity);
    let shown = e.to_string();
    assert!(
        shown.contains("manifest.json")
            && shown.contains("its manifest.checksum says \"ffffffffffffffffffffffffffffffff\""),
        "{shown}"
    );
    // Without a checksum beside it the manifest is taken as it is.
    let failed = s.delete_many(&[key(ck)?]).await?;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(ok_rows(rows(load_inventory(&s, &k).await?, false).await)?.len(), 5);
    Ok(())
}

#[tokio::test]
async fn rows_of_another_bucket_are_refused() -> TestResult {
    let mut sample = sample();
    sample[5].bucket = "elsewhere".into();
    for format in ["CSV", "Parquet"] {
        let (s, k) = inventory(format, &sample, false).await?;
        let got = rows(load_inventory(&s, &k).await?, true).await;
        let (last, before) = got.split_last().ok_or("no rows")?;
        assert_eq!(before.len(), 5, "{format}: the stream ends at the foreign row");
        let e = last.as_ref().err().ok_or("the foreign row was yielded")?;
        assert!(
            e.message
                .contains("is of bucket \"elsewhere\", the manifest describes \"src\""),
            "{format}: {e}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_damaged_data_file_with_a_matching_md5_is_an_error_not_a_panic() -> TestResult {
    let store: DynStore = Arc::new(MemoryStore::new("inventories"));
    let junk = b"PAR1 this is not parquet PAR1".to_vec();
    put(&store, "d/0.parquet", &junk).await?;
    let m = manifest("src", "Parquet", &[("d/0.parquet", junk.as_slice())], None);
    put(&store, "m.json", &m).await?;
    let got = rows(load_inventory(&store, &key("m.json")?).await?, false).await;
    assert_eq!(got.len(), 1);
    let e = got[0].as_ref().err().ok_or("junk was read as rows")?;
    assert!(
        e.to_string().contains("\"d/0.parquet\": bad Parquet inventory file"),
        "{e}"
    );
    Ok(())
}

#[tokio::test]
async fn many_rows_stream_in_manifest_order() -> TestResult {
    let rows_in: Vec<Row> = (0..20_000)
        .map(|n| Row::object("src", &format!("k/{n:06}"), n, "0123456789abcdef0123456789abcdef"))
        .collect();
    for format in ["CSV", "Parquet"] {
        let (s, k) = inventory(format, &rows_in, false).await?;
        let mut stream = load_inventory(&s, &k).await?.rows(InventoryOptions::default());
        let mut n = 0u64;
        while let Some(r) = stream.next().await {
            let r = r?;
            assert_eq!((r.key, r.size), (format!("k/{n:06}"), n), "{format}");
            n += 1;
        }
        assert_eq!(n, 20_000, "{format}");
    }
    Ok(())
}

#[tokio::test]
async fn orc_is_not_supported() -> TestResult {
    let store: DynStore = Arc::new(MemoryStore::new("inventories"));
    let m = manifest("src", "ORC", &[], None);
    put(&store, "m.json", &m).await?;
    let e = load_inventory(&store, &key("m.json")?)
        .await
        .err()
        .ok_or("ORC loaded")?;
    assert_eq!(e.kind, ErrorKind::NotSupported);
    assert!(
        e.message.contains("\"orc\" is not supported (CSV and Parquet are)"),
        "{e}"
    );
    Ok(())
}
