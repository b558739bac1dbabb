//! Sources that replace the source LIST: a key list (`--files-from`) or an
//! S3 Inventory (`--inventory s3://…/manifest.json`). Neither is a sorted
//! listing of the destination, so each key is compared with a HEAD of its
//! destination key instead of a march; memory stays flat either way.
//!
//! S3 Inventory: the manifest names CSV.gz data files and their MD5s. Every
//! data file is downloaded to a temp file and checked against its MD5
//! *before* anything is copied, so a damaged inventory copies nothing. Keys
//! are URL-encoded in the CSV (`+` is a space).

use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::time::SystemTime;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use haul_store::{DynStore, ErrorKind, Key, ObjectMeta, Op, StoreError};
use md5::{Digest, Md5};
use serde::Deserialize;

use crate::job::Executor;
use crate::march::SyncAction;
use crate::plan::{CopyTask, PlanItem};
use crate::report::Summary;
use crate::sync::SyncJob;

fn bad(what: &str, msg: impl Into<String>) -> StoreError {
    StoreError::new(Op::Get, what, ErrorKind::InvalidRequest, msg)
}

/// Keys read from `lines` one per line (relative to the source prefix) as
/// the run needs them — a list of a billion keys is never held in memory —
/// and HEADed on the source for their metadata. Blank lines are skipped; a
/// line that is not UTF-8 is an error for that line (reported, the rest
/// go on); a read error ends the list with an error.
pub fn key_list<R>(
    src: DynStore,
    base: Key,
    lines: R,
    concurrency: usize,
) -> BoxStream<'static, Result<ObjectMeta, StoreError>>
where
    R: tokio::io::AsyncBufRead + Unpin + Send + 'static,
{
    use tokio::io::AsyncBufReadExt;
    let raw = stream::unfold(Some((lines, 0u64)), |state| async move {
        let (mut r, n) = state?;
        let mut buf = Vec::new();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) => None,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                Some((Ok((n + 1, buf)), Some((r, n + 1))))
            }
            Err(e) => Some((Err(StoreError::io(Op::Get, "--files-from", e)), None)),
        }
    });
    raw.try_filter(|(_, line)| futures::future::ready(!line.is_empty()))
        .map(move |line| {
            let (src, base) = (src.clone(), base.clone());
            async move {
                let (n, bytes) = line?;
                let rel = String::from_utf8(bytes).map_err(|e| {
                    let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
                    StoreError::new(
                        Op::Get,
                        shown,
                        ErrorKind::InvalidKey,
                        format!("line {n} of the key list is not UTF-8"),
                    )
                })?;
                let key = base.join(&rel)?;
                src.head(&key).await
            }
        })
        .buffered(concurrency.max(1))
        .boxed()
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "sourceBucket")]
    source_bucket: String,
    #[serde(rename = "fileFormat")]
    file_format: String,
    #[serde(rename = "fileSchema")]
    file_schema: String,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
struct ManifestFile {
    key: String,
    #[serde(rename = "MD5checksum")]
    md5: String,
}

/// A parsed, verified S3 Inventory: its data files are on local disk.
#[derive(Debug)]
pub struct Inventory {
    pub source_bucket: String,
    columns: Columns,
    files: Vec<std::fs::File>,
}

#[derive(Debug, Clone, Copy)]
struct Columns {
    key: usize,
    size: Option<usize>,
    modified: Option<usize>,
    etag: Option<usize>,
    class: Option<usize>,
}

/// Reads the manifest at `key` of `store` and downloads and checks every
/// data file it names (in the same bucket).
pub async fn load_inventory(store: &DynStore, key: &Key) -> Result<Inventory, StoreError> {
    let what = key.as_str();
    let raw: Vec<bytes::Bytes> = store.get(key, None).await?.body.try_collect().await?;
    let m: Manifest =
        serde_json::from_slice(&raw.concat()).map_err(|e| bad(what, format!("not an S3 Inventory manifest: {e}")))?;
    if !m.file_format.eq_ignore_ascii_case("CSV") {
        return Err(StoreError::new(
            Op::Get,
            what,
            ErrorKind::NotSupported,
            format!("inventory format {} is not supported (CSV is)", m.file_format),
        ));
    }
    let names: Vec<String> = m
        .file_schema
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let col = |n: &str| names.iter().position(|c| c == n);
    let columns = Columns {
        key: col("key").ok_or_else(|| bad(what, "the inventory schema has no Key column"))?,
        size: col("size"),
        modified: col("lastmodifieddate"),
        etag: col("etag"),
        class: col("storageclass"),
    };
    let mut files = Vec::with_capacity(m.files.len());
    for f in &m.files {
        let k = Key::object(f.key.clone())?;
        let mut tmp = tempfile::tempfile().map_err(|e| StoreError::io(Op::Get, f.key.as_str(), e))?;
        let mut h = Md5::new();
        let mut body = store.get(&k, None).await?.body;
        while let Some(chunk) = body.try_next().await? {
            h.update(&chunk);
            tmp.write_all(&chunk)
                .map_err(|e| StoreError::io(Op::Get, f.key.as_str(), e))?;
        }
        let got = hex::encode(h.finalize());
        if !got.eq_ignore_ascii_case(&f.md5) {
            return Err(StoreError::new(
                Op::Verify,
                f.key.as_str(),
                ErrorKind::Integrity,
                format!(
                    "inventory data file has MD5 {got}, the manifest says {}: nothing was copied",
                    f.md5
                ),
            ));
        }
        tmp.seek(SeekFrom::Start(0))
            .map_err(|e| StoreError::io(Op::Get, f.key.as_str(), e))?;
        files.push(tmp);
    }
    Ok(Inventory {
        source_bucket: m.source_bucket,
        columns,
        files,
    })
}

/// An inventory key: URL-encoded, `+` for a space.
fn decode_key(raw: &str) -> Result<String, StoreError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| bad(raw, "inventory key is not valid UTF-8 after decoding"))
}

impl Inventory {
    /// The objects under `prefix`, as the inventory describes them.
    pub fn objects(self, prefix: Key) -> BoxStream<'static, Result<ObjectMeta, StoreError>> {
        let cols = self.columns;
        let readers = self.files.into_iter().map(move |f| {
            let gz = flate2::read::MultiGzDecoder::new(BufReader::new(f));
            csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(Box::new(gz) as Box<dyn Read + Send>)
                .into_records()
        });
        let rows = readers.flatten();
        let prefix2 = prefix.clone();
        stream::iter(rows)
            .map(move |r| -> Result<Option<ObjectMeta>, StoreError> {
                let r = r.map_err(|e| bad("inventory", format!("bad CSV row: {e}")))?;
                let field = |i: Option<usize>| i.and_then(|i| r.get(i)).filter(|v| !v.is_empty());
                let key = decode_key(r.get(cols.key).unwrap_or_default())?;
                if !key.starts_with(prefix2.as_str()) || key.ends_with('/') {
                    return Ok(None);
                }
                Ok(Some(ObjectMeta {
                    key: Key::object(key)?,
                    size: field(cols.size).and_then(|v| v.parse().ok()).unwrap_or(0),
                    last_modified: field(cols.modified)
                        .and_then(|v| {
                            humantime::parse_rfc3339_weak(v.trim_end_matches('Z').split('.').next().unwrap_or(v)).ok()
                        })
                        .or(Some(SystemTime::UNIX_EPOCH)),
                    etag: field(cols.etag).map(str::to_string),
                    storage_class: field(cols.class).map(str::to_string),
                    ..Default::default()
                }))
            })
            .filter_map(|r| futures::future::ready(r.transpose()))
            .boxed()
    }
}

impl Executor {
    /// Syncs listed source objects (a key list or an inventory) by looking
    /// each one up in the destination.
    pub async fn sync_listed(
        &self,
        src: &DynStore,
        dst: &DynStore,
        job: &SyncJob,
        entries: BoxStream<'static, Result<ObjectMeta, StoreError>>,
    ) -> Summary {
        let (s2, d2, job2) = (src.clone(), dst.clone(), job.clone());
        let actions = entries
            .map(move |e| {
                let (src, dst, job) = (s2.clone(), d2.clone(), job2.clone());
                async move { decide(&src, &dst, &job, e).await }
            })
            .buffered(16)
            .filter_map(futures::future::ready);
        let report = self.report.clone();
        let plan = actions
            .filter_map(move |a| {
                futures::future::ready(match a {
                    SyncAction::Copy { src, dst_key, .. } => Some(PlanItem::Copy(CopyTask { src, dst_key })),
                    SyncAction::Error(e) => Some(PlanItem::Error(e)),
                    SyncAction::Unlisted(u) => Some(PlanItem::Unlisted(u)),
                    SyncAction::Skip { .. } | SyncAction::Delete { .. } => {
                        report.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        None
                    }
                })
            })
            .boxed();
        self.run_plan(src, dst, plan).await;
        self.finish()
    }
}

/// Copy or skip one listed object (`None`: filtered out).
pub(crate) async fn decide(
    src: &DynStore,
    dst: &DynStore,
    job: &SyncJob,
    e: Result<ObjectMeta, StoreError>,
) -> Option<SyncAction> {
    let s = match e {
        Ok(s) => s,
        Err(e) if e.is_not_found() => {
            return Some(SyncAction::Error(StoreError {
                message: "listed, but not in the source".into(),
                ..e
            }))
        }
        Err(e) => return Some(SyncAction::Error(e)),
    };
    if !job
        .filter
        .matches(s.key.strip_prefix(&job.src_base).unwrap_or(s.key.as_str()))
    {
        return None;
    }
    let dst_key = match job.dst_key(&s) {
        Ok(k) => k,
        Err(e) => return Some(SyncAction::Error(e)),
    };
    match dst.head(&dst_key).await {
        Ok(d) => Some(job.judge(src, s, dst, d).await),
        Err(e) if e.is_not_found() => Some(SyncAction::Copy {
            src: s,
            dst: None,
            dst_key,
            reason: "new".into(),
        }),
        Err(e) => Some(SyncAction::Error(e)),
    }
}
