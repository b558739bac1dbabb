//! Reads one Parquet inventory data file with the `parquet` crate's record
//! API: columns matched by name (S3 writes snake_case: `key`, `size`,
//! `last_modified_date`, …), only the columns haul uses decoded, one row
//! group at a time. Parquet keys are stored as they are (not URL-encoded).

use std::time::{Duration, SystemTime};

use haul_store::StoreError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field as Value;
use parquet::schema::types::Type;

use super::manifest::column_id;
use super::row::{bad_row, from_millis, parse_bool, parse_date, Field, InventoryRow};

/// Emits the rows of the Parquet `file` (named `name` in errors).
pub(crate) fn read(
    file: std::fs::File,
    name: &str,
    emit: &mut dyn FnMut(Result<InventoryRow, StoreError>) -> bool,
) -> Result<(), StoreError> {
    let perr = |e: parquet::errors::ParquetError| bad_row(name, format!("bad Parquet inventory file: {e}"));
    let reader = SerializedFileReader::new(file).map_err(perr)?;
    let root = reader.metadata().file_metadata().schema_descr().root_schema();
    // Only the columns haul reads (an ACL column can be large), in file order.
    let keep: Vec<_> = root
        .get_fields()
        .iter()
        .filter(|f| f.is_primitive() && Field::of(&column_id(f.name())).is_some())
        .cloned()
        .collect();
    let fields: Vec<Field> = keep.iter().filter_map(|f| Field::of(&column_id(f.name()))).collect();
    if !fields.contains(&Field::Key) {
        return Err(bad_row(name, "the Parquet inventory file has no key column"));
    }
    let projection = Type::group_type_builder(root.name())
        .with_fields(keep)
        .build()
        .map_err(perr)?;
    let mut n = 0u64;
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(perr)?;
        for row in group.get_row_iter(Some(projection.clone())).map_err(perr)? {
            let row = row.map_err(perr)?;
            n += 1;
            let values = row.into_columns().into_iter().map(|(_, v)| v);
            if !emit(to_row(values.zip(fields.iter().copied()), name, n)) {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn to_row(values: impl Iterator<Item = (Value, Field)>, name: &str, n: u64) -> Result<InventoryRow, StoreError> {
    let mut r = InventoryRow {
        is_latest: true,
        ..Default::default()
    };
    let mut has_key = false;
    for (v, field) in values {
        let wrong = |what: &str| bad_row(name, format!("row {n}: {what} has an unexpected type ({v})"));
        match field {
            Field::Bucket => r.bucket = text(&v).ok_or_else(|| wrong("bucket"))?.unwrap_or_default(),
            Field::Key => match text(&v).ok_or_else(|| wrong("key"))? {
                Some(k) => {
                    r.key = k;
                    has_key = true;
                }
                None => return Err(bad_row(name, format!("row {n} has no key"))),
            },
            Field::VersionId => r.version_id = text(&v).ok_or_else(|| wrong("version_id"))?,
            Field::IsLatest => r.is_latest = flag(&v).ok_or_else(|| wrong("is_latest"))?.unwrap_or(true),
            Field::IsDeleteMarker => {
                r.is_delete_marker = flag(&v).ok_or_else(|| wrong("is_delete_marker"))?.unwrap_or(false)
            }
            Field::Size => r.size = size(&v).ok_or_else(|| wrong("size"))?,
            Field::LastModified => r.last_modified = date(&v).ok_or_else(|| wrong("last_modified_date"))?,
            Field::ETag => {
                r.etag = text(&v)
                    .ok_or_else(|| wrong("e_tag"))?
                    .map(|e| e.trim_matches('"').to_string())
            }
            Field::StorageClass => r.storage_class = text(&v).ok_or_else(|| wrong("storage_class"))?,
            Field::ArchiveTier => r.archive_tier = text(&v).ok_or_else(|| wrong("intelligent_tiering_access_tier"))?,
        }
    }
    if !has_key {
        return Err(bad_row(name, format!("row {n} has no key")));
    }
    Ok(r)
}

/// A string column: `Some(None)` for null or empty, `None` for another type.
fn text(v: &Value) -> Option<Option<String>> {
    match v {
        Value::Null => Some(None),
        Value::Str(s) => Some((!s.is_empty()).then(|| s.clone())),
        Value::Bytes(b) => std::str::from_utf8(b.data())
            .ok()
            .map(|s| (!s.is_empty()).then(|| s.to_string())),
        _ => None,
    }
}

fn flag(v: &Value) -> Option<Option<bool>> {
    match v {
        Value::Null => Some(None),
        Value::Bool(b) => Some(Some(*b)),
        Value::Str(s) => Some(parse_bool(s)),
        _ => None,
    }
}

fn size(v: &Value) -> Option<u64> {
    match v {
        Value::Null => Some(0),
        Value::Long(n) => u64::try_from(*n).ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::ULong(n) => Some(*n),
        Value::UInt(n) => Some(u64::from(*n)),
        _ => None,
    }
}

fn date(v: &Value) -> Option<Option<SystemTime>> {
    match v {
        Value::Null => Some(None),
        Value::TimestampMillis(ms) => Some(Some(from_millis(*ms))),
        Value::TimestampMicros(us) => Some(Some(match u64::try_from(*us) {
            Ok(us) => SystemTime::UNIX_EPOCH + Duration::from_micros(us),
            Err(_) => SystemTime::UNIX_EPOCH - Duration::from_micros(us.unsigned_abs()),
        })),
        Value::Long(ms) => Some(Some(from_millis(*ms))),
        Value::Str(s) => Some(parse_date(s)),
        _ => None,
    }
}
