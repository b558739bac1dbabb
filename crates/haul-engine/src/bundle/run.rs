//! A bundle run over a listing ([`bundle_prefix`]): the listing streams
//! through the [`Grouper`]; each closed archive is written
//! ([`write_archive`], a few at once), each large object copied as it is to
//! `DST_PREFIX/large/<name>` with the engine's [`Transfer`]; then the run
//! manifest `DST_PREFIX/<run>.bundles.jsonl` lists every archive and every
//! external object, one JSON line each (archives by sequence, then large
//! objects by key). Dead letters come back in the [`BundleSummary`] (the
//! caller writes `--dlq`). Memory: the open group, the archives and copies
//! in flight, and one manifest line per archive and large object.

use std::collections::VecDeque;

use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use haul_store::checksum::md5_hex;
use haul_store::{Checksums, DynStore, Key, ListEntry, ListRequest, ObjectMeta, PutOptions, SkipReason, StoreError};
use serde::{Deserialize, Serialize};

use super::dead::{DeadLetter, DeadReason};
use super::plan::{BundleOptions, Grouper, Planned};
use super::write::{write_archive, ArchiveOutcome, Destination};
use super::{BundleRunError, Task};
use crate::report::NoObserver;
use crate::transfer::Transfer;

/// The run manifest's name under the destination prefix.
pub fn manifest_name(run: &str) -> String {
    format!("{run}.bundles.jsonl")
}

/// One line of the run manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ManifestLine {
    Archive {
        name: String,
        key: String,
        members: u64,
        bytes: u64,
        data_bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        crc64nvme: Option<String>,
    },
    /// A large object copied as it is.
    External {
        /// The source key.
        source: String,
        /// Its key at the destination (`DST_PREFIX/large/<name>`).
        key: String,
        bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        etag: Option<String>,
    },
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BundleSummary {
    pub run: String,
    /// The run manifest's key.
    pub manifest: String,
    pub archives_written: u64,
    /// Found complete at the destination (a resumed run).
    pub archives_skipped: u64,
    pub members: u64,
    /// Data bytes bundled.
    pub member_bytes: u64,
    /// Bytes of the archives (headers, index and padding included).
    pub archive_bytes: u64,
    pub large_objects: u64,
    pub large_bytes: u64,
    /// Folder markers (keys ending in `/`, no data) left out.
    pub folders: u64,
    /// Objects left out, with why.
    pub dead: Vec<DeadLetter>,
    /// Archives that could not be written (their members are in no archive).
    pub failed: Vec<String>,
}

/// What one planned item became.
enum Done {
    Archive(u64, ArchiveOutcome),
    Large(u64, String, Box<Result<ManifestLine, DeadLetter>>),
    Failed(String, BundleRunError),
}

/// Objects no store takes as one (S3: 5 TiB).
const MAX_OBJECT: u64 = 5 << 40;

/// The object nobody observes.
static QUIET: NoObserver = NoObserver;

/// Everything a run's tasks share.
#[derive(Clone)]
struct Ctx {
    src: DynStore,
    src_prefix: Key,
    dst: Destination,
    opts: BundleOptions,
    transfer: Transfer,
}

impl Ctx {
    fn start(&self, p: Planned) -> Result<Task<Done>, DeadLetter> {
        let cx = self.clone();
        match p {
            Planned::Dead(d) => Err(d),
            Planned::Archive(unit) => Ok(Task(tokio::spawn(async move {
                match write_archive(&cx.src, &cx.dst, &unit, &cx.opts, &cx.transfer).await {
                    Ok(o) => Done::Archive(unit.seq, o),
                    Err(e) => Done::Failed(unit.name, e),
                }
            }))),
            Planned::Large(meta) => Ok(Task(tokio::spawn(async move {
                let r = cx.copy_large(&meta).await;
                Done::Large(meta.size, meta.key.to_string(), Box::new(r))
            }))),
        }
    }

    /// Copies a large object to `DST_PREFIX/large/<name>`.
    async fn copy_large(&self, meta: &ObjectMeta) -> Result<ManifestLine, DeadLetter> {
        let key = meta.key.as_str();
        let name = key.strip_prefix(self.src_prefix.as_str()).unwrap_or(key);
        if meta.size > MAX_OBJECT {
            let msg = format!("{} bytes: more than one object can hold", meta.size);
            return Err(DeadLetter::new(
                key,
                meta.size,
                meta.etag.as_deref(),
                DeadReason::TooLarge,
                msg,
            ));
        }
        let dead = |e: &haul_store::StoreError| DeadLetter::from_error(meta, e, 1);
        let dst_key = self.dst.key(&format!("large/{name}")).map_err(|e| dead(&e))?;
        let out = self
            .transfer
            .copy(&self.src, meta, &self.dst.store, &dst_key, &QUIET)
            .await
            .map_err(|e| dead(&e))?;
        Ok(ManifestLine::External {
            source: key.to_string(),
            key: dst_key.to_string(),
            bytes: out.bytes,
            etag: meta.etag.clone(),
        })
    }
}

/// Bundles every object under `src_prefix` in `src` into archives under
/// `dst.prefix` (used as is: end it with `/`), for run `run` (the same run
/// id re-plans the same archives and skips those already complete); see
/// the module documentation. Reads and parts draw on `transfer`'s budget
/// and part slots.
pub async fn bundle_prefix(
    src: &DynStore,
    src_prefix: &Key,
    dst: &Destination,
    run: &str,
    opts: &BundleOptions,
    transfer: &Transfer,
) -> Result<BundleSummary, BundleRunError> {
    let listing = src.list(ListRequest::prefix(src_prefix.clone()));
    bundle_entries(src, src_prefix, listing, dst, run, opts, transfer).await
}

/// [`bundle_prefix`] over objects of `src` given as a stream of entries
/// instead of its listing: an S3 Inventory's rows, or the dead letters of
/// an earlier run (`--input-dlq`). Keys outside `src_prefix` are not
/// bundled; the order of the stream decides the archives.
pub async fn bundle_entries(
    src: &DynStore,
    src_prefix: &Key,
    mut listing: BoxStream<'static, Result<ListEntry, StoreError>>,
    dst: &Destination,
    run: &str,
    opts: &BundleOptions,
    transfer: &Transfer,
) -> Result<BundleSummary, BundleRunError> {
    let cx = Ctx {
        src: src.clone(),
        src_prefix: src_prefix.clone(),
        dst: dst.clone(),
        opts: opts.clone(),
        transfer: transfer.clone(),
    };
    let manifest = dst.key(&manifest_name(run)).map_err(BundleRunError::Key)?;
    let mut summary = BundleSummary {
        run: run.to_string(),
        manifest: manifest.to_string(),
        ..Default::default()
    };
    let mut grouper = Grouper::new(run, src_prefix.as_str(), opts);
    // Bundling into the source's own key space: this run's output (and
    // earlier runs') is not input.
    let own = (src.url() == dst.store.url() && dst.prefix.as_str().starts_with(src_prefix.as_str()))
        .then(|| dst.prefix.as_str().to_string());
    let mut listed_all = false;
    let mut queue: VecDeque<Planned> = VecDeque::new();
    let mut running = FuturesUnordered::new();
    let (mut archives, mut large) = (0usize, 0usize);
    let mut lines: Vec<(u64, String, ManifestLine)> = Vec::new();
    loop {
        // Start what has room.
        while let Some(front) = queue.front() {
            let room = match front {
                Planned::Archive(_) => archives < opts.archives_in_flight.max(1),
                Planned::Large(_) => large < opts.large_in_flight.max(1),
                Planned::Dead(_) => true,
            };
            if !room {
                break;
            }
            let Some(p) = queue.pop_front() else { break };
            match &p {
                Planned::Archive(_) => archives += 1,
                Planned::Large(_) => large += 1,
                Planned::Dead(_) => {}
            }
            match cx.start(p) {
                Ok(task) => running.push(task),
                Err(d) => summary.dead.push(d),
            }
        }
        // List on only when everything planned has started.
        if queue.is_empty() && !listed_all {
            match listing.next().await {
                Some(Ok(ListEntry::Object(m)))
                    if own.as_deref().is_some_and(|p| m.key.as_str().starts_with(p))
                        || !m.key.as_str().starts_with(src_prefix.as_str()) => {}
                Some(Ok(ListEntry::Object(m))) => queue.extend(grouper.push(m)),
                Some(Ok(ListEntry::Prefix(_))) => {}
                Some(Ok(ListEntry::Unlisted(u))) => {
                    let reason = match u.reason {
                        SkipReason::InvalidName => DeadReason::UnsafeName,
                        _ => DeadReason::Failed,
                    };
                    summary
                        .dead
                        .push(DeadLetter::new(u.key.as_str(), 0, None, reason, u.detail));
                }
                Some(Err(e)) => return Err(BundleRunError::List(e)),
                None => {
                    listed_all = true;
                    queue.extend(grouper.finish());
                }
            }
            continue;
        }
        let Some(done) = running.next().await else {
            if listed_all && queue.is_empty() {
                break;
            }
            continue;
        };
        match done {
            Ok(Done::Archive(seq, o)) => {
                archives -= 1;
                record_archive(&mut summary, &mut lines, seq, o);
            }
            Ok(Done::Failed(name, e)) => {
                archives -= 1;
                tracing::warn!(archive = %name, error = %e, "archive not written");
                summary.failed.push(e.to_string());
            }
            Ok(Done::Large(size, key, r)) => {
                large -= 1;
                match *r {
                    Ok(line) => {
                        summary.large_objects += 1;
                        summary.large_bytes += size;
                        lines.push((u64::MAX, key, line));
                    }
                    Err(d) => summary.dead.push(d),
                }
            }
            Err(e) => return Err(BundleRunError::Task(e.to_string())),
        }
    }
    summary.folders = grouper.folders();
    lines.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut body = Vec::new();
    for (_, _, line) in &lines {
        serde_json::to_writer(&mut body, line).map_err(BundleRunError::Json)?;
        body.push(b'\n');
    }
    let put = PutOptions {
        content_type: Some(super::write::INDEX_CONTENT_TYPE.into()),
        checksums: Checksums::md5(&md5_hex(&body)),
        ..Default::default()
    };
    dst.store
        .put(&manifest, body.into(), &put)
        .await
        .map_err(|source| BundleRunError::Manifest {
            key: manifest.to_string(),
            source,
        })?;
    Ok(summary)
}

fn record_archive(
    summary: &mut BundleSummary,
    lines: &mut Vec<(u64, String, ManifestLine)>,
    seq: u64,
    o: ArchiveOutcome,
) {
    if o.skipped {
        summary.archives_skipped += 1;
    } else {
        summary.archives_written += 1;
    }
    summary.members += o.members;
    summary.member_bytes += o.data_bytes;
    summary.archive_bytes += o.bytes;
    lines.push((
        seq,
        String::new(),
        ManifestLine::Archive {
            name: o.name.clone(),
            key: o.key.clone(),
            members: o.members,
            bytes: o.bytes,
            data_bytes: o.data_bytes,
            crc64nvme: o.crc64nvme.clone(),
        },
    ));
    summary.dead.extend(o.dead);
}
