//! S3 Inventory files made by the tests, the way S3 writes them: CSV.gz
//! (every field quoted, keys form-encoded, no header) and Parquet (written
//! with the `parquet` crate's column writers, SNAPPY, S3's snake_case
//! schema), plus the manifest naming them with their MD5s.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One inventory row, as a test describes it.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub is_latest: bool,
    pub is_delete_marker: bool,
    /// `None` for delete markers.
    pub size: Option<u64>,
    /// Milliseconds since the epoch.
    pub last_modified_ms: i64,
    pub etag: Option<String>,
    pub storage_class: Option<String>,
    pub tier: Option<String>,
}

impl Row {
    /// A current object.
    pub fn object(bucket: &str, key: &str, size: u64, etag: &str) -> Row {
        Row {
            bucket: bucket.into(),
            key: key.into(),
            is_latest: true,
            size: Some(size),
            last_modified_ms: 1_796_040_001_123,
            etag: Some(etag.into()),
            storage_class: Some("STANDARD".into()),
            ..Default::default()
        }
    }
}

/// The CSV `fileSchema` of [`csv_gz`].
pub const CSV_SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, IntelligentTieringAccessTier";

/// The Parquet schema of [`parquet`] (also its manifest `fileSchema`); the
/// last column is one haul does not read.
pub const PARQUET_SCHEMA: &str = "message s3.inventory {
  required binary bucket (STRING);
  required binary key (STRING);
  optional binary version_id (STRING);
  optional boolean is_latest;
  optional boolean is_delete_marker;
  optional int64 size;
  optional int64 last_modified_date (TIMESTAMP(MILLIS,true));
  optional binary e_tag (STRING);
  optional binary storage_class (STRING);
  optional binary intelligent_tiering_access_tier (STRING);
  optional binary object_owner (STRING);
}";

/// Form encoding as S3 writes inventory keys: unreserved bytes kept, a
/// space as `+`, everything else (`/` and `+` included) as `%XX`.
pub fn form_encode(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A gzip'd CSV data file of `rows`, every field quoted.
pub fn csv_gz(rows: &[Row]) -> Result<Vec<u8>, Error> {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for r in rows {
        let date = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(r.last_modified_ms)?);
        let fields = [
            r.bucket.clone(),
            form_encode(&r.key),
            r.version_id.clone().unwrap_or_default(),
            r.is_latest.to_string(),
            r.is_delete_marker.to_string(),
            r.size.map(|s| s.to_string()).unwrap_or_default(),
            humantime::format_rfc3339_millis(date).to_string(),
            r.etag.clone().unwrap_or_default(),
            r.storage_class.clone().unwrap_or_default(),
            r.tier.clone().unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|f| q(f)).collect();
        writeln!(gz, "{}", line.join(","))?;
    }
    Ok(gz.finish()?)
}

/// A SNAPPY Parquet data file of `rows`, `per_group` rows to a row group.
pub fn parquet(rows: &[Row], per_group: usize) -> Result<Vec<u8>, Error> {
    let schema = Arc::new(parse_message_type(PARQUET_SCHEMA)?);
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let mut w = SerializedFileWriter::new(Vec::new(), schema, props)?;
    for group in rows.chunks(per_group.max(1)) {
        let mut rg = w.next_row_group()?;
        let mut i = 0;
        while let Some(mut col) = rg.next_column()? {
            let text = |f: &dyn Fn(&Row) -> Option<String>| {
                let v: Vec<Option<String>> = group.iter().map(f).collect();
                let defs: Vec<i16> = v.iter().map(|s| i16::from(s.is_some())).collect();
                let vals: Vec<ByteArray> = v
                    .into_iter()
                    .flatten()
                    .map(|s| ByteArray::from(s.into_bytes()))
                    .collect();
                (vals, defs)
            };
            match i {
                0 | 1 => {
                    let vals: Vec<ByteArray> = group
                        .iter()
                        .map(|r| ByteArray::from(if i == 0 { r.bucket.as_str() } else { r.key.as_str() }))
                        .collect();
                    col.typed::<ByteArrayType>().write_batch(&vals, None, None)?;
                }
                3 | 4 => {
                    let vals: Vec<bool> = group
                        .iter()
                        .map(|r| if i == 3 { r.is_latest } else { r.is_delete_marker })
                        .collect();
                    col.typed::<BoolType>()
                        .write_batch(&vals, Some(&vec![1; vals.len()]), None)?;
                }
                5 => {
                    let defs: Vec<i16> = group.iter().map(|r| i16::from(r.size.is_some())).collect();
                    let vals: Vec<i64> = group
                        .iter()
                        .filter_map(|r| r.size.map(i64::try_from))
                        .collect::<Result<_, _>>()?;
                    col.typed::<Int64Type>().write_batch(&vals, Some(&defs), None)?;
                }
                6 => {
                    let vals: Vec<i64> = group.iter().map(|r| r.last_modified_ms).collect();
                    col.typed::<Int64Type>()
                        .write_batch(&vals, Some(&vec![1; vals.len()]), None)?;
                }
                _ => {
                    let (vals, defs) = match i {
                        2 => text(&|r| r.version_id.clone()),
                        7 => text(&|r| r.etag.clone()),
                        8 => text(&|r| r.storage_class.clone()),
                        9 => text(&|r| r.tier.clone()),
                        _ => text(&|_| Some("owner-id".into())),
                    };
                    col.typed::<ByteArrayType>().write_batch(&vals, Some(&defs), None)?;
                }
            }
            col.close()?;
            i += 1;
        }
        rg.close()?;
    }
    Ok(w.into_inner()?)
}

/// The lower-case hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// A `manifest.json` for `source_bucket` naming `files` (key, bytes), with
/// their true MD5s unless `md5s` overrides them (a damaged manifest).
pub fn manifest(source_bucket: &str, format: &str, files: &[(&str, &[u8])], md5s: Option<&[&str]>) -> Vec<u8> {
    let schema = if format == "Parquet" {
        PARQUET_SCHEMA
    } else {
        CSV_SCHEMA
    };
    let files: Vec<serde_json::Value> = files
        .iter()
        .enumerate()
        .map(|(n, (key, bytes))| {
            let md5 = md5s.and_then(|m| m.get(n)).map(|m| m.to_string());
            serde_json::json!({"key": key, "size": bytes.len(), "MD5checksum": md5.unwrap_or_else(|| md5_hex(bytes))})
        })
        .collect();
    let m = serde_json::json!({
        "sourceBucket": source_bucket,
        "destinationBucket": "arn:aws:s3:::inventories",
        "version": "2016-11-30",
        "creationTimestamp": "1796040000000",
        "fileFormat": format,
        "fileSchema": schema,
        "files": files,
    });
    m.to_string().into_bytes()
}
