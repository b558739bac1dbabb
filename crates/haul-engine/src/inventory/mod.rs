//! S3 Inventory as a source of objects, for `sync --inventory`,
//! `restore --inventory` and the bundle planner: a manifest
//! (`manifest.json`, checked against `manifest.checksum` when S3 wrote
//! one) naming CSV.gz or Parquet data files.
//!
//! Loading downloads every data file to an anonymous temp file and checks
//! it against the manifest's MD5 *before* any row is read, so a damaged
//! inventory yields nothing. Then [`Inventory::rows`] streams the rows of
//! all files in manifest order from a blocking reader thread, one CSV
//! record / Parquet row group at a time through a bounded channel: memory
//! never depends on the number of objects.

mod csv;
mod manifest;
mod parquet;
mod row;

use std::io::{Seek, SeekFrom, Write};

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use haul_store::{DynStore, ErrorKind, Key, ObjectMeta, Op, StoreError};
use md5::{Digest, Md5};

pub use manifest::{checksum_key, column_id, verify_checksum, DataFile, Format, Manifest};
pub use row::InventoryRow;

/// Rows decoded ahead of the consumer (the channel between the reader
/// thread and the stream).
const AHEAD: usize = 1024;
/// Data files downloaded at once while loading.
const DOWNLOADS: usize = 4;

/// Which rows [`Inventory::rows`] yields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InventoryOptions {
    /// Every version and delete marker; by default only current versions
    /// that are not delete markers (`IsLatest` and not `IsDeleteMarker`).
    pub versions: bool,
}

/// A parsed, verified S3 Inventory whose data files are on local disk.
#[derive(Debug)]
pub struct Inventory {
    /// The bucket the inventory describes.
    pub source_bucket: String,
    manifest: Manifest,
    files: Vec<std::fs::File>,
}

/// Reads the manifest at `key` of `store`, checks it against
/// `manifest.checksum` beside it when there is one, then downloads every
/// data file it names (keys of the same store) and checks each against its
/// MD5 and size. Any mismatch is an [`ErrorKind::Integrity`] error naming
/// the file, and no row can be read.
pub async fn load_inventory(store: &DynStore, key: &Key) -> Result<Inventory, StoreError> {
    let what = key.as_str();
    let bytes = get_all(store, key).await?;
    if let Some(ck) = checksum_key(key) {
        match get_all(store, &ck).await {
            Ok(sum) => verify_checksum(what, &bytes, &sum)?,
            Err(e) if e.is_not_found() => tracing::debug!("{what}: no manifest.checksum beside it"),
            Err(e) => return Err(e),
        }
    }
    let manifest = Manifest::parse(what, &bytes)?;
    let files = stream::iter(manifest.files.clone())
        .map(|f| download(store, f))
        .buffered(DOWNLOADS)
        .try_collect()
        .await?;
    Ok(Inventory {
        source_bucket: manifest.source_bucket.clone(),
        manifest,
        files,
    })
}

async fn get_all(store: &DynStore, key: &Key) -> Result<Vec<u8>, StoreError> {
    let chunks: Vec<bytes::Bytes> = store.get(key, None).await?.body.try_collect().await?;
    Ok(chunks.concat())
}

/// One data file into a temp file, checked against the manifest.
async fn download(store: &DynStore, f: DataFile) -> Result<std::fs::File, StoreError> {
    let io = |e| StoreError::io(Op::Get, f.key.as_str(), e);
    let k = Key::object(f.key.clone())?;
    let mut tmp = tempfile::tempfile().map_err(io)?;
    let mut h = Md5::new();
    let mut len = 0u64;
    let mut body = store.get(&k, None).await?.body;
    while let Some(chunk) = body.try_next().await? {
        h.update(&chunk);
        len += chunk.len() as u64;
        tmp.write_all(&chunk).map_err(io)?;
    }
    let integrity = |msg: String| StoreError::new(Op::Verify, f.key.as_str(), ErrorKind::Integrity, msg);
    let got = hex::encode(h.finalize());
    if got != f.md5 {
        return Err(integrity(format!(
            "inventory data file has MD5 {got}, the manifest says {}: nothing was copied",
            f.md5
        )));
    }
    if let Some(size) = f.size.filter(|s| *s != len) {
        return Err(integrity(format!(
            "inventory data file has {len} bytes, the manifest says {size}: nothing was copied"
        )));
    }
    tmp.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(tmp)
}

impl Inventory {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The rows of all data files in manifest order, filtered by `opts`.
    ///
    /// An `Err` item for a row whose key cannot be decoded is followed by
    /// the next rows; a file that cannot be read (bad gzip, CSV or
    /// Parquet) or a row naming another bucket than the manifest's
    /// `sourceBucket` ends the stream with its error. Rows are decoded on a
    /// blocking thread, at most [`AHEAD`] ahead of the consumer; dropping
    /// the stream stops it. Needs a Tokio runtime when first polled.
    pub fn rows(self, opts: InventoryOptions) -> BoxStream<'static, Result<InventoryRow, StoreError>> {
        let start = async move {
            let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
            tokio::task::spawn_blocking(move || self.produce(opts, &tx));
            stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
        };
        stream::once(start).flatten().boxed()
    }

    /// The reader thread: every file in order, rows filtered and checked.
    fn produce(self, opts: InventoryOptions, tx: &tokio::sync::mpsc::Sender<Result<InventoryRow, StoreError>>) {
        let Inventory {
            source_bucket,
            manifest,
            files,
        } = self;
        let mut stopped = false;
        for (file, meta) in files.into_iter().zip(&manifest.files) {
            let name = meta.key.as_str();
            let mut emit = |r: Result<InventoryRow, StoreError>| -> bool {
                let r = match r {
                    Ok(mut row) => {
                        if row.bucket.is_empty() {
                            row.bucket.clone_from(&source_bucket);
                        } else if row.bucket != source_bucket {
                            let e = StoreError::new(
                                Op::Get,
                                name,
                                ErrorKind::InvalidRequest,
                                format!(
                                    "inventory row {:?} is of bucket {:?}, the manifest describes {:?}",
                                    row.key, row.bucket, source_bucket
                                ),
                            );
                            let _ = tx.blocking_send(Err(e));
                            stopped = true;
                            return false;
                        }
                        if !opts.versions && (!row.is_latest || row.is_delete_marker) {
                            return true;
                        }
                        Ok(row)
                    }
                    Err(e) => Err(e),
                };
                if tx.blocking_send(r).is_err() {
                    stopped = true;
                }
                !stopped
            };
            let read = match manifest.format {
                Format::CsvGz => csv::read(file, name, &manifest.columns, &mut emit),
                Format::Parquet => parquet::read(file, name, &mut emit),
            };
            if let Err(e) = read {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if stopped {
                return;
            }
        }
    }

    /// The current objects under `prefix` (directory markers left out), as
    /// a listing would describe them.
    pub fn objects(self, prefix: Key) -> BoxStream<'static, Result<ObjectMeta, StoreError>> {
        self.rows(InventoryOptions::default())
            .filter_map(move |r| {
                let keep = match r {
                    Ok(row) if !row.key.starts_with(prefix.as_str()) || row.key.ends_with('/') => None,
                    Ok(row) => Some(row.to_meta()),
                    Err(e) => Some(Err(e)),
                };
                futures::future::ready(keep)
            })
            .boxed()
    }
}
