//! A bundle run over a listing ([`bundle_prefix`], [`BundleRun`]): the
//! listing streams through the [`Grouper`]; each closed archive is written
//! ([`write_archive`], a few at once), each large object copied as it is to
//! `DST_PREFIX/large/<name>` with the engine's [`Transfer`]; then the run
//! manifest `DST_PREFIX/<run>.bundles.jsonl` lists every archive and every
//! external object, one JSON line each (archives by sequence, then large
//! objects in plan order: by key for a listing), spooled to temp files as
//! they finish (`manifest`). Dead letters go to the caller's [`DeadSink`]
//! as they happen; the [`BundleSummary`] counts them. Memory: the open
//! group, the archives and copies in flight, and the manifest's reorder
//! window — none of it grows with the number of objects.

use std::collections::{BTreeMap, VecDeque};

use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use haul_store::{DynStore, Key, ListEntry, ListRequest, ObjectMeta, SkipReason, StoreError};
use serde::{Deserialize, Serialize};

use super::dead::{DeadLetter, DeadReason, DeadSink, Discard, SAMPLE};
use super::manifest::{ManifestSpool, MAX_WAITING};
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
    /// Objects left out (each one given to the run's [`DeadSink`]).
    pub dead_letters: u64,
    /// The same, by reason.
    #[serde(default)]
    pub dead_by_reason: BTreeMap<DeadReason, u64>,
    /// The first [`SAMPLE`] dead letters, to show.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_sample: Vec<DeadLetter>,
    /// Archives that could not be written (their members are in no archive).
    pub failed: Vec<String>,
}

impl BundleSummary {
    /// Counts a dead letter (and keeps it while the sample has room).
    pub fn count_dead(&mut self, d: &DeadLetter) {
        self.dead_letters += 1;
        *self.dead_by_reason.entry(d.reason).or_default() += 1;
        if self.dead_sample.len() < SAMPLE {
            self.dead_sample.push(d.clone());
        }
    }
}

/// What one planned item became.
enum Done {
    Archive(u64, ArchiveOutcome),
    /// The large object planned `n`th, and its size.
    Large(u64, u64, Box<Result<ManifestLine, DeadLetter>>),
    Failed(u64, String, BundleRunError),
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
    /// Starts `p`; `n` numbers large objects in plan order.
    fn start(&self, p: Planned, n: &mut u64) -> Result<Task<Done>, DeadLetter> {
        let cx = self.clone();
        match p {
            Planned::Dead(d) => Err(d),
            Planned::Archive(unit) => Ok(Task(tokio::spawn(async move {
                match write_archive(&cx.src, &cx.dst, &unit, &cx.opts, &cx.transfer).await {
                    Ok(o) => Done::Archive(unit.seq, o),
                    Err(e) => Done::Failed(unit.seq, unit.name, e),
                }
            }))),
            Planned::Large(meta) => {
                let ord = *n;
                *n += 1;
                Ok(Task(tokio::spawn(async move {
                    let r = cx.copy_large(&meta).await;
                    Done::Large(ord, meta.size, Box::new(r))
                })))
            }
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
/// and part slots. Dead letters are in the summary's counts and sample
/// only: [`BundleRun::entries`] hands every one to a sink.
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
    listing: BoxStream<'static, Result<ListEntry, StoreError>>,
    dst: &Destination,
    run: &str,
    opts: &BundleOptions,
    transfer: &Transfer,
) -> Result<BundleSummary, BundleRunError> {
    let r = BundleRun {
        src,
        src_prefix,
        dst,
        run,
        opts,
        transfer,
    };
    r.entries(listing, &mut Discard).await
}

/// One bundle run's settings: what [`bundle_entries`] takes, for
/// [`BundleRun::entries`], which also takes a [`DeadSink`].
#[derive(Debug, Clone, Copy)]
pub struct BundleRun<'a> {
    pub src: &'a DynStore,
    pub src_prefix: &'a Key,
    pub dst: &'a Destination,
    pub run: &'a str,
    pub opts: &'a BundleOptions,
    pub transfer: &'a Transfer,
}

/// What a run has started, and what it has to show for it so far.
struct Progress<'s> {
    summary: BundleSummary,
    sink: &'s mut dyn DeadSink,
    spool: ManifestSpool,
    archives: usize,
    large: usize,
}

impl Progress<'_> {
    fn dead(&mut self, d: &DeadLetter) -> Result<(), BundleRunError> {
        self.summary.count_dead(d);
        self.sink.dead(d).map_err(BundleRunError::DeadLetters)
    }

    fn done(&mut self, done: Done) -> Result<(), BundleRunError> {
        let spooled = match done {
            Done::Archive(seq, o) => {
                self.archives -= 1;
                let s = &mut self.summary;
                if o.skipped {
                    s.archives_skipped += 1;
                } else {
                    s.archives_written += 1;
                }
                s.members += o.members;
                s.member_bytes += o.data_bytes;
                s.archive_bytes += o.bytes;
                let line = ManifestLine::Archive {
                    name: o.name.clone(),
                    key: o.key.clone(),
                    members: o.members,
                    bytes: o.bytes,
                    data_bytes: o.data_bytes,
                    crc64nvme: o.crc64nvme.clone(),
                };
                for d in &o.dead {
                    self.dead(d)?;
                }
                self.spool.archive(seq, Some(&line))
            }
            Done::Failed(seq, name, e) => {
                self.archives -= 1;
                tracing::warn!(archive = %name, error = %e, "archive not written");
                self.summary.failed.push(e.to_string());
                self.spool.archive(seq, None)
            }
            Done::Large(n, size, r) => {
                self.large -= 1;
                match *r {
                    Ok(line) => {
                        self.summary.large_objects += 1;
                        self.summary.large_bytes += size;
                        self.spool.large(n, Some(&line))
                    }
                    Err(d) => {
                        self.dead(&d)?;
                        self.spool.large(n, None)
                    }
                }
            }
        };
        spooled.map_err(BundleRunError::Spool)
    }
}

impl BundleRun<'_> {
    /// Runs over `listing` (see [`bundle_entries`]); every dead letter goes
    /// to `sink` as it happens, in the order they happen.
    pub async fn entries(
        &self,
        mut listing: BoxStream<'static, Result<ListEntry, StoreError>>,
        sink: &mut dyn DeadSink,
    ) -> Result<BundleSummary, BundleRunError> {
        let (src, src_prefix, dst, opts) = (self.src, self.src_prefix, self.dst, self.opts);
        let cx = Ctx {
            src: src.clone(),
            src_prefix: src_prefix.clone(),
            dst: dst.clone(),
            opts: opts.clone(),
            transfer: self.transfer.clone(),
        };
        let manifest = dst.key(&manifest_name(self.run)).map_err(BundleRunError::Key)?;
        let mut p = Progress {
            summary: BundleSummary {
                run: self.run.to_string(),
                manifest: manifest.to_string(),
                ..Default::default()
            },
            sink,
            spool: ManifestSpool::new().map_err(BundleRunError::Spool)?,
            archives: 0,
            large: 0,
        };
        let mut grouper = Grouper::new(self.run, src_prefix.as_str(), opts);
        // Bundling into the source's own key space: this run's output (and
        // earlier runs') is not input.
        let own = (src.url() == dst.store.url() && dst.prefix.as_str().starts_with(src_prefix.as_str()))
            .then(|| dst.prefix.as_str().to_string());
        let mut listed_all = false;
        let mut queue: VecDeque<Planned> = VecDeque::new();
        let mut running = FuturesUnordered::new();
        let mut large_seen = 0u64;
        loop {
            // Start what has room (and while the manifest's window does).
            while let Some(front) = queue.front() {
                let room = match front {
                    Planned::Archive(_) => p.archives < opts.archives_in_flight.max(1),
                    Planned::Large(_) => p.large < opts.large_in_flight.max(1),
                    Planned::Dead(_) => true,
                };
                if !room || p.spool.waiting() >= MAX_WAITING {
                    break;
                }
                let Some(next) = queue.pop_front() else { break };
                match &next {
                    Planned::Archive(_) => p.archives += 1,
                    Planned::Large(_) => p.large += 1,
                    Planned::Dead(_) => {}
                }
                match cx.start(next, &mut large_seen) {
                    Ok(task) => running.push(task),
                    Err(d) => p.dead(&d)?,
                }
            }
            // List on only when everything planned has started.
            if queue.is_empty() && !listed_all {
                match listing.next().await {
                    Some(Ok(ListEntry::Object(m)))
                        if own.as_deref().is_some_and(|o| m.key.as_str().starts_with(o))
                            || !m.key.as_str().starts_with(src_prefix.as_str()) => {}
                    Some(Ok(ListEntry::Object(m))) => queue.extend(grouper.push(m)),
                    Some(Ok(ListEntry::Prefix(_))) => {}
                    Some(Ok(ListEntry::Unlisted(u))) => {
                        let reason = match u.reason {
                            SkipReason::InvalidName => DeadReason::UnsafeName,
                            _ => DeadReason::Failed,
                        };
                        p.dead(&DeadLetter::new(u.key.as_str(), 0, None, reason, u.detail))?;
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
            p.done(done.map_err(|e| BundleRunError::Task(e.to_string()))?)?;
        }
        p.summary.folders = grouper.folders();
        p.sink.flush().map_err(BundleRunError::DeadLetters)?;
        p.spool
            .upload(dst, &manifest, opts.part_size, self.transfer.limits())
            .await
            .map_err(|source| BundleRunError::Manifest {
                key: manifest.to_string(),
                source,
            })?;
        Ok(p.summary)
    }
}
