//! One row of an S3 Inventory, whichever format it came from: the fields
//! haul uses (key, size, ETag, dates, storage class and archive tier,
//! versioning flags), with the CSV and Parquet readers filling it the same
//! way so the consumers (sync, restore, the bundle planner) never see the
//! format.

use std::time::{Duration, SystemTime};

use haul_store::{ErrorKind, Key, ObjectMeta, Op, StoreError};

/// An object (or object version, or delete marker) listed by an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InventoryRow {
    /// The source bucket named by the row.
    pub bucket: String,
    /// The object key, decoded (CSV keys are form-encoded in the file).
    pub key: String,
    pub version_id: Option<String>,
    /// `true` when the inventory has no IsLatest column (current versions only).
    pub is_latest: bool,
    pub is_delete_marker: bool,
    /// 0 when absent (delete markers).
    pub size: u64,
    pub last_modified: Option<SystemTime>,
    /// The ETag without quotes.
    pub etag: Option<String>,
    pub storage_class: Option<String>,
    /// `IntelligentTieringAccessTier`: FREQUENT, INFREQUENT,
    /// ARCHIVE_INSTANT_ACCESS, ARCHIVE, DEEP_ARCHIVE (the last two need a
    /// restore before a GET).
    pub archive_tier: Option<String>,
}

impl InventoryRow {
    /// Whether a GET needs a restore first: GLACIER and DEEP_ARCHIVE, and
    /// the Intelligent-Tiering archive tiers.
    pub fn is_archived(&self) -> bool {
        matches!(self.storage_class.as_deref(), Some("GLACIER" | "DEEP_ARCHIVE"))
            || matches!(
                self.archive_tier.as_deref(),
                Some("ARCHIVE" | "DEEP_ARCHIVE" | "ARCHIVE_ACCESS" | "DEEP_ARCHIVE_ACCESS")
            )
    }

    /// The row as listing metadata (what a LIST would have said).
    pub fn to_meta(&self) -> Result<ObjectMeta, StoreError> {
        Ok(ObjectMeta {
            key: Key::object(self.key.clone())?,
            size: self.size,
            last_modified: self.last_modified.or(Some(SystemTime::UNIX_EPOCH)),
            etag: self.etag.clone(),
            storage_class: self.storage_class.clone(),
            version_id: self.version_id.clone(),
            ..Default::default()
        })
    }
}

/// Which fields a reader fills; the others keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Bucket,
    Key,
    VersionId,
    IsLatest,
    IsDeleteMarker,
    Size,
    LastModified,
    ETag,
    StorageClass,
    ArchiveTier,
}

impl Field {
    /// The field of a normalised column name ([`super::column_id`]).
    pub(crate) fn of(column_id: &str) -> Option<Field> {
        Some(match column_id {
            "bucket" => Field::Bucket,
            "key" => Field::Key,
            "versionid" => Field::VersionId,
            "islatest" => Field::IsLatest,
            "isdeletemarker" => Field::IsDeleteMarker,
            "size" => Field::Size,
            "lastmodifieddate" => Field::LastModified,
            "etag" => Field::ETag,
            "storageclass" => Field::StorageClass,
            "intelligenttieringaccesstier" => Field::ArchiveTier,
            _ => return None,
        })
    }
}

pub(crate) fn bad_row(file: &str, msg: impl Into<String>) -> StoreError {
    StoreError::new(Op::Get, file, ErrorKind::InvalidRequest, msg)
}

/// A CSV inventory key: form-encoded (`+` is a space, `%2B` a plus).
pub(crate) fn decode_form_key(raw: &str) -> Result<String, StoreError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| {
            StoreError::new(
                Op::Get,
                raw,
                ErrorKind::InvalidKey,
                "inventory key is not valid UTF-8 after decoding",
            )
        })
}

/// `true`/`false` as CSV writes them.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// An RFC 3339 date as CSV writes it (`2026-11-30T12:00:01.123Z`).
pub(crate) fn parse_date(v: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(v).ok()
}

/// Milliseconds since the epoch, as Parquet stores `last_modified_date`.
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoded_keys_decode() -> Result<(), StoreError> {
        assert_eq!(decode_form_key("a+b%2Bc%2Fd%C3%A9")?, "a b+c/dé");
        assert!(decode_form_key("%FF").is_err());
        Ok(())
    }

    #[test]
    fn dates_keep_milliseconds() {
        let d = parse_date("2026-11-30T12:00:01.123Z");
        assert_eq!(d, Some(from_millis(1_796_040_001_123)));
    }

    #[test]
    fn archive_tiers_count_as_archived() {
        let mut r = InventoryRow {
            storage_class: Some("INTELLIGENT_TIERING".into()),
            archive_tier: Some("INFREQUENT".into()),
            ..Default::default()
        };
        assert!(!r.is_archived());
        r.archive_tier = Some("DEEP_ARCHIVE".into());
        assert!(r.is_archived());
    }
}
