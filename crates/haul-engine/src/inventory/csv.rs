//! Reads one CSV.gz inventory data file: no header row, the columns named
//! by the manifest's `fileSchema`, fields possibly quoted, keys
//! form-encoded (decoded here, before any filter sees them).

use std::io::BufReader;

use haul_store::StoreError;

use super::row::{bad_row, decode_form_key, parse_bool, parse_date, Field, InventoryRow};

/// Emits the rows of the gzip'd CSV `file` (named `name` in errors) one
/// record at a time; `columns` are the manifest's normalised column names.
pub(crate) fn read(
    file: std::fs::File,
    name: &str,
    columns: &[String],
    emit: &mut dyn FnMut(Result<InventoryRow, StoreError>) -> bool,
) -> Result<(), StoreError> {
    let fields: Vec<Option<Field>> = columns.iter().map(|c| Field::of(c)).collect();
    let gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(gz);
    let mut record = csv::StringRecord::new();
    let mut n = 0u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(bad_row(name, format!("bad CSV after record {n}: {e}"))),
        }
        n += 1;
        if !emit(row(&record, &fields, name, n)) {
            return Ok(());
        }
    }
}

fn row(record: &csv::StringRecord, fields: &[Option<Field>], name: &str, n: u64) -> Result<InventoryRow, StoreError> {
    let mut r = InventoryRow {
        is_latest: true,
        ..Default::default()
    };
    let mut has_key = false;
    for (value, field) in record.iter().zip(fields) {
        let Some(field) = field else { continue };
        let some = (!value.is_empty()).then(|| value.to_string());
        match field {
            Field::Bucket => r.bucket = value.to_string(),
            Field::Key => {
                r.key = decode_form_key(value)?;
                has_key = true;
            }
            Field::VersionId => r.version_id = some,
            Field::IsLatest => r.is_latest = parse_bool(value).unwrap_or(true),
            Field::IsDeleteMarker => r.is_delete_marker = parse_bool(value).unwrap_or(false),
            Field::Size if value.is_empty() => {}
            Field::Size => {
                r.size = value
                    .parse()
                    .map_err(|_| bad_row(name, format!("record {n}: size {value:?} is not a number")))?;
            }
            Field::LastModified => r.last_modified = parse_date(value),
            Field::ETag => r.etag = some.map(|e| e.trim_matches('"').to_string()),
            Field::StorageClass => r.storage_class = some,
            Field::ArchiveTier => r.archive_tier = some,
        }
    }
    if !has_key {
        return Err(bad_row(name, format!("record {n} has no key field")));
    }
    Ok(r)
}
