//! Sources that replace the source LIST: a key list (`--files-from`) or an
//! S3 Inventory (`--inventory s3://…/manifest.json`). Neither is a sorted
//! listing of the destination, so each key is compared with a HEAD of its
//! destination key instead of a march; memory stays flat either way.
//!
//! S3 Inventory lives in [`crate::inventory`] (CSV.gz and Parquet, verified
//! before any row is read); its loader is re-exported here for callers.

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use haul_store::{DynStore, ErrorKind, Key, ObjectMeta, Op, StoreError};

use crate::job::Executor;
use crate::march::SyncAction;
use crate::plan::{CopyTask, PlanItem};
use crate::report::Summary;
use crate::sync::SyncJob;

pub use crate::inventory::{load_inventory, Inventory, InventoryOptions, InventoryRow};

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
