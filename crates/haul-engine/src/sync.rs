//! `sync`: the march's actions executed. Copies go through the executor as
//! they are found; deletes are spooled to an anonymous temp file (memory
//! stays flat at any count) and run only after every copy succeeded, and
//! not at all when there are more than `max_delete` of them.

use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream, StreamExt};
use haul_store::{DynStore, ErrorKind, Key, Op, StoreError};

use crate::job::Executor;
use crate::march::SyncAction;
use crate::plan::{CopyTask, PlanItem};
use crate::report::{Failure, Summary};

/// Options of a sync beyond the march's.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Refuse to delete anything when more than this many deletes are due.
    pub max_delete: Option<u64>,
}

/// Destination keys to delete, one JSON string per line in a temp file.
struct Spool {
    out: BufWriter<std::fs::File>,
    count: u64,
}

fn spool_error(e: std::io::Error) -> StoreError {
    StoreError::io(Op::Delete, "", e)
}

impl Executor {
    /// Runs the actions of a march from `src` to `dst`.
    pub async fn sync(
        &self,
        src: &DynStore,
        dst: &DynStore,
        actions: BoxStream<'static, SyncAction>,
        opts: &SyncOptions,
    ) -> Summary {
        let spool = match tempfile::tempfile() {
            Ok(f) => Arc::new(Mutex::new(Spool {
                out: BufWriter::new(f),
                count: 0,
            })),
            Err(e) => {
                let e = spool_error(e);
                self.report.fail(Failure::from_error("", &e), self.observer.as_ref());
                return self.report.summary(self.opts.dry_run);
            }
        };
        let report = self.report.clone();
        let sp = spool.clone();
        let plan = actions
            .filter_map(move |a| {
                let item = match a {
                    SyncAction::Copy { src, dst_key, .. } => Some(PlanItem::Copy(CopyTask { src, dst_key })),
                    SyncAction::Skip { .. } => {
                        report.skipped.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    SyncAction::Delete { dst, .. } => {
                        let mut s = sp.lock().unwrap_or_else(|e| e.into_inner());
                        let line = serde_json::to_string(dst.key.as_str()).unwrap_or_default();
                        match writeln!(s.out, "{line}") {
                            Ok(()) => {
                                s.count += 1;
                                None
                            }
                            Err(e) => Some(PlanItem::Error(spool_error(e))),
                        }
                    }
                    SyncAction::Error(e) => Some(PlanItem::Error(e)),
                };
                futures::future::ready(item)
            })
            .boxed();
        self.copy(src, dst, plan).await;

        // The spool is read back in its own scope: no lock is held across the deletes.
        let (n, reader) = {
            let mut s = spool.lock().unwrap_or_else(|e| e.into_inner());
            let reader = match s.out.flush().and_then(|_| s.out.get_mut().seek(SeekFrom::Start(0))) {
                Ok(_) => s.out.get_ref().try_clone().map(BufReader::new),
                Err(e) => Err(e),
            };
            (s.count, reader)
        };
        if n == 0 {
            return self.report.summary(self.opts.dry_run);
        }
        let failed = self.report.failed.load(Ordering::Relaxed);
        let refuse = if failed > 0 {
            Some(format!(
                "{n} extraneous objects not deleted: {failed} objects failed, and deleting on an incomplete copy could lose data"
            ))
        } else {
            opts.max_delete
                .filter(|max| n > *max)
                .map(|max| format!("{n} objects would be deleted, more than --max-delete {max}: nothing was deleted"))
        };
        if let Some(msg) = refuse {
            let e = StoreError::new(Op::Delete, "", ErrorKind::PreconditionFailed, msg).with_code("DeleteRefused");
            self.report.fail(Failure::from_error("", &e), self.observer.as_ref());
            return self.report.summary(self.opts.dry_run);
        }
        let keys: BoxStream<'static, Result<Key, StoreError>> = match reader {
            Ok(r) => stream::iter(r.lines().map(|l| {
                let l = l.map_err(spool_error)?;
                let k: String = serde_json::from_str(&l)
                    .map_err(|e| StoreError::new(Op::Delete, "", ErrorKind::Other, format!("delete spool: {e}")))?;
                Key::object(k)
            }))
            .boxed(),
            Err(e) => stream::iter(vec![Err(spool_error(e))]).boxed(),
        };
        self.delete(dst, keys).await
    }
}
