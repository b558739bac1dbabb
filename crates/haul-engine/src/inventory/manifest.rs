//! The S3 Inventory manifest (`manifest.json`): which bucket it describes,
//! the format and schema of its data files, and their MD5s. Parsed here,
//! and checked against `manifest.checksum` (the MD5 of the manifest's
//! bytes, written beside it by S3) before anything it names is trusted.

use haul_store::{ErrorKind, Key, Op, StoreError};
use md5::{Digest, Md5};
use serde::Deserialize;

/// The format of an inventory's data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Gzip-compressed CSV without a header row; keys form-encoded.
    CsvGz,
    /// Apache Parquet; keys as they are.
    Parquet,
}

/// One data file named by the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Its key in the manifest's bucket (the inventory's destination).
    pub key: String,
    /// Its size in bytes, when the manifest gives it.
    pub size: Option<u64>,
    /// Its MD5, lower-case hex.
    pub md5: String,
}

/// A parsed S3 Inventory manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The bucket the inventory describes; every row must name it.
    pub source_bucket: String,
    pub format: Format,
    /// The column names of `fileSchema`, normalised (see [`column_id`]):
    /// the CSV columns in order; for Parquet the fields of the message
    /// type (informative only: Parquet rows are matched by their own names).
    pub columns: Vec<String>,
    /// The data files, in manifest order.
    pub files: Vec<DataFile>,
}

#[derive(Debug, Deserialize)]
struct RawManifest {
    #[serde(rename = "sourceBucket")]
    source_bucket: String,
    #[serde(rename = "fileFormat")]
    file_format: String,
    #[serde(rename = "fileSchema", default)]
    file_schema: String,
    files: Vec<RawFile>,
}

#[derive(Debug, Deserialize)]
struct RawFile {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "MD5checksum")]
    md5: String,
}

fn bad(what: &str, msg: impl Into<String>) -> StoreError {
    StoreError::new(Op::Get, what, ErrorKind::InvalidRequest, msg)
}

/// A column name as both schemas spell it: CSV's `LastModifiedDate` and
/// Parquet's `last_modified_date` are both `lastmodifieddate`.
pub fn column_id(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Manifest {
    /// Parses the bytes of `manifest.json` (`what` names it in errors).
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Manifest, StoreError> {
        let m: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| bad(what, format!("not an S3 Inventory manifest: {e}")))?;
        let format = match m.file_format.to_ascii_lowercase().as_str() {
            "csv" => Format::CsvGz,
            "parquet" => Format::Parquet,
            other => {
                return Err(StoreError::new(
                    Op::Get,
                    what,
                    ErrorKind::NotSupported,
                    format!("inventory format {other:?} is not supported (CSV and Parquet are)"),
                ))
            }
        };
        let columns = match format {
            Format::CsvGz => m.file_schema.split(',').map(column_id).collect(),
            Format::Parquet => parquet_columns(&m.file_schema),
        };
        if format == Format::CsvGz && !columns.iter().any(|c| c == "key") {
            return Err(bad(what, "the inventory's fileSchema has no Key column"));
        }
        if m.source_bucket.is_empty() {
            return Err(bad(what, "the inventory manifest names no sourceBucket"));
        }
        let mut files = Vec::with_capacity(m.files.len());
        for f in m.files {
            let md5 = f.md5.trim().to_ascii_lowercase();
            if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(
                    what,
                    format!("data file {:?}: MD5checksum {:?} is not an MD5", f.key, f.md5),
                ));
            }
            files.push(DataFile {
                key: f.key,
                size: f.size,
                md5,
            });
        }
        Ok(Manifest {
            source_bucket: m.source_bucket,
            format,
            columns,
            files,
        })
    }
}

/// The field names of a Parquet message type (`message s3.inventory {
/// required binary bucket (STRING); … }`); empty when it does not parse.
fn parquet_columns(schema: &str) -> Vec<String> {
    match parquet::schema::parser::parse_message_type(schema) {
        Ok(t) => t.get_fields().iter().map(|f| column_id(f.name())).collect(),
        Err(_) => Vec::new(),
    }
}

/// The key of the checksum S3 writes beside a manifest: `…/manifest.json`
/// → `…/manifest.checksum`; `None` for a manifest not named `*.json`.
pub fn checksum_key(manifest: &Key) -> Option<Key> {
    let stem = manifest.as_str().strip_suffix(".json")?;
    Key::object(format!("{stem}.checksum")).ok()
}

/// Checks the manifest's bytes against the content of `manifest.checksum`
/// (its MD5 in hex, whitespace around it ignored).
pub fn verify_checksum(what: &str, manifest: &[u8], checksum: &[u8]) -> Result<(), StoreError> {
    let want = String::from_utf8_lossy(checksum).trim().to_ascii_lowercase();
    let got = hex::encode(Md5::digest(manifest));
    if got == want {
        Ok(())
    } else {
        Err(StoreError::new(
            Op::Verify,
            what,
            ErrorKind::Integrity,
            format!("the inventory manifest has MD5 {got}, its manifest.checksum says {want:?}: nothing was copied"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_match_across_formats() {
        assert_eq!(column_id(" LastModifiedDate"), "lastmodifieddate");
        assert_eq!(column_id("last_modified_date"), "lastmodifieddate");
        assert_eq!(
            column_id("IntelligentTieringAccessTier"),
            column_id("intelligent_tiering_access_tier")
        );
    }

    #[test]
    fn parquet_file_schema_is_parsed() -> Result<(), StoreError> {
        let m = Manifest::parse(
            "m",
            br#"{"sourceBucket":"b","fileFormat":"Parquet","fileSchema":"message s3.inventory { required binary bucket (STRING); required binary key (STRING); optional int64 size; }","files":[{"key":"d/1.parquet","size":3,"MD5checksum":"0123456789ABCDEF0123456789abcdef"}]}"#,
        )?;
        assert_eq!(m.format, Format::Parquet);
        assert_eq!(m.columns, ["bucket", "key", "size"]);
        assert_eq!(m.files[0].md5, "0123456789abcdef0123456789abcdef");
        Ok(())
    }

    #[test]
    fn orc_and_bad_md5s_are_refused() {
        let orc = Manifest::parse(
            "m",
            br#"{"sourceBucket":"b","fileFormat":"ORC","fileSchema":"","files":[]}"#,
        );
        assert!(orc.is_err_and(|e| e.message.contains("\"orc\" is not supported")));
        let md5 = Manifest::parse(
            "m",
            br#"{"sourceBucket":"b","fileFormat":"CSV","fileSchema":"Bucket, Key","files":[{"key":"k","MD5checksum":"xyz"}]}"#,
        );
        assert!(md5.is_err_and(|e| e.message.contains("is not an MD5")));
    }

    #[test]
    fn checksum_sits_beside_the_manifest() -> Result<(), StoreError> {
        let k = Key::object("inv/b/cfg/2026-11-30T01-00Z/manifest.json")?;
        assert_eq!(
            checksum_key(&k).map(|k| k.as_str().to_string()).as_deref(),
            Some("inv/b/cfg/2026-11-30T01-00Z/manifest.checksum")
        );
        let md5 = hex::encode(Md5::digest(b"{}"));
        verify_checksum("m", b"{}", format!("{}\n", md5.to_uppercase()).as_bytes())?;
        assert!(verify_checksum("m", b"{} ", md5.as_bytes()).is_err());
        Ok(())
    }
}
