//! Restoring an archive's members: to a local directory (through
//! [`LocalRoot`], which refuses what could escape it) or to a bucket
//! prefix ([`store`]: a ranged GET and a PUT per member, a multipart
//! upload for a large one — server-side part copies when the archive and
//! the destination share a copy domain — with the content type, user
//! metadata, tags and storage class the index kept). Members are read
//! through the index, a bounded window at a time; a tar without a haul
//! index is read sequentially instead ([`super::untar`]). One bad member
//! never stops the run: it is reported, refused or failed, with why.

use std::io;
use std::path::Path;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use haul_store::{Key, ObjectStore};
use serde::Serialize;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::error::{BundleError, BundleResult};
use super::extract::{ExtractError, LocalRoot};
use super::format::IndexEntry;
use super::names::{check_name, Refusal, RefuseReason};
use super::read::{member_stream, open_archive_with, IndexFrom};
use crate::filter::Filter;

mod store;

pub use store::unbundle_to_store;

/// How to unbundle.
#[derive(Debug, Clone)]
pub struct UnbundleOptions {
    /// Members to restore, matched on their names (`--include`).
    pub include: Filter,
    /// Members read at once.
    pub concurrency: usize,
    /// Replace existing local files (else such members are refused).
    pub overwrite: bool,
    /// Where to take the index from.
    pub index_from: IndexFrom,
}

impl Default for UnbundleOptions {
    fn default() -> Self {
        UnbundleOptions {
            include: Filter::default(),
            concurrency: 16,
            overwrite: false,
            index_from: IndexFrom::Auto,
        }
    }
}

/// A member not restored on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedMember {
    pub name: String,
    pub reason: RefuseReason,
    pub detail: String,
}

/// A member whose restore failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberFailure {
    /// The member's name (empty: the archive itself could not be read on).
    pub name: String,
    /// The key or path the failed operation was on.
    pub key: String,
    /// `get`, `put`, `create`, `write`, `read`, …
    pub op: String,
    pub reason: String,
}

/// What an unbundle did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnbundleReport {
    /// Names of the members restored.
    pub restored: Vec<String>,
    /// Bytes restored.
    pub bytes: u64,
    /// Members left out by the include filter.
    pub filtered: u64,
    pub refused: Vec<RefusedMember>,
    pub failed: Vec<MemberFailure>,
    /// The archive had no haul index and was read as a plain tar.
    pub sequential: bool,
    /// Members restored without their tags: the destination keeps none.
    pub tags_not_kept: u64,
}

impl UnbundleReport {
    /// Nothing refused or failed.
    pub fn is_clean(&self) -> bool {
        self.refused.is_empty() && self.failed.is_empty()
    }

    pub(super) fn refuse(&mut self, name: &str, r: Refusal) {
        self.refused.push(RefusedMember {
            name: name.to_string(),
            reason: r.reason,
            detail: r.detail,
        });
    }

    pub(super) fn fail(&mut self, name: &str, key: &str, op: &str, reason: impl std::fmt::Display) {
        self.failed.push(MemberFailure {
            name: name.to_string(),
            key: key.to_string(),
            op: op.to_string(),
            reason: reason.to_string(),
        });
    }

    pub(super) fn extract_error(&mut self, name: &str, path: &str, e: ExtractError) {
        match e {
            ExtractError::Refused(r) => self.refuse(name, r),
            ExtractError::Io { op, source } => self.fail(name, path, op, source),
        }
    }
}

/// How one member ended.
enum Outcome {
    Restored(u64),
    Refused(Refusal),
    Failed {
        key: String,
        op: &'static str,
        reason: String,
    },
    /// Restored, its tags dropped.
    NoTags(u64),
}

fn record(report: &mut UnbundleReport, name: &str, o: Outcome) {
    match o {
        Outcome::NoTags(n) => {
            report.tags_not_kept += 1;
            record(report, name, Outcome::Restored(n));
        }
        Outcome::Restored(n) => {
            report.restored.push(name.to_string());
            report.bytes += n;
        }
        Outcome::Refused(r) => report.refuse(name, r),
        Outcome::Failed { key, op, reason } => report.fail(name, &key, op, reason),
    }
}

/// The indexes of the entries `include` selects. By index, not by
/// reference: a closure over `&IndexEntry` is not general enough for a
/// spawned task's `Send` check.
fn selected(entries: &[IndexEntry], include: &Filter) -> Vec<usize> {
    (0..entries.len())
        .filter(|&i| include.matches(&entries[i].name))
        .collect()
}

/// Restores an archive's members under the local directory `root`.
pub async fn unbundle_to_local(
    store: &dyn ObjectStore,
    archive_key: &Key,
    root: &Path,
    opts: &UnbundleOptions,
) -> BundleResult<UnbundleReport> {
    let local = |source| BundleError::Local {
        path: root.display().to_string(),
        source,
    };
    let root = Arc::new(LocalRoot::open(root, opts.overwrite).map_err(local)?);
    let archive = match open_archive_with(store, archive_key, opts.index_from).await {
        Ok(a) => a,
        Err(BundleError::NoIndex { .. }) if opts.index_from == IndexFrom::Auto => {
            return super::untar::untar_to_local(store, archive_key, root, opts.include.clone()).await;
        }
        Err(e) => return Err(e),
    };
    let mut report = UnbundleReport {
        filtered: (archive.entries.len() - selected(&archive.entries, &opts.include).len()) as u64,
        ..Default::default()
    };
    let key = &archive.key;
    let entries = &archive.entries;
    let picked = selected(entries, &opts.include);
    let mut outcomes = stream::iter(picked)
        .map(|i| {
            let (e, root) = (&entries[i], root.clone());
            async move { (e, restore_local(store, key, e, root).await) }
        })
        .buffer_unordered(opts.concurrency.max(1));
    while let Some((e, o)) = outcomes.next().await {
        record(&mut report, &e.name, o);
    }
    drop(outcomes);
    let finish = tokio::task::spawn_blocking(move || root.finish())
        .await
        .unwrap_or_default();
    for (dir, e) in finish {
        report.extract_error(&dir, &dir, e);
    }
    Ok(report)
}

async fn restore_local(store: &dyn ObjectStore, key: &Key, e: &IndexEntry, root: Arc<LocalRoot>) -> Outcome {
    let failed = |op, reason: String| Outcome::Failed {
        key: e.name.clone(),
        op,
        reason,
    };
    let from_extract = |err: ExtractError| match err {
        ExtractError::Refused(r) => Outcome::Refused(r),
        ExtractError::Io { op, source } => failed(op, source.to_string()),
    };
    if let Err(r) = check_name(&e.name) {
        return Outcome::Refused(r);
    }
    let name = e.name.clone();
    let mtime = e.mtime_ns;
    if name.ends_with('/') && e.size == 0 {
        let r = blocking(move || root.make_dir(&name, mtime)).await;
        return r.map_or_else(from_extract, |()| Outcome::Restored(0));
    }
    let created = blocking(move || root.create_file(&name, 0o644)).await;
    let mut file = match created {
        Ok(f) => f,
        Err(err) => return from_extract(err),
    };
    let body = match member_stream(store, key, e).await {
        Ok(s) => s,
        Err(err) => return failed("get", err.to_string()),
    };
    let reader = SyncIoBridge::new(StreamReader::new(body.map_err(io::Error::other)));
    let size = e.size;
    let wrote = blocking(move || {
        let mut reader = reader;
        let copied = file.file().and_then(|f| io::copy(&mut reader, f)).map_err(|source| {
            match source.get_ref().and_then(|s| s.downcast_ref::<BundleError>()) {
                Some(b) => ("get", b.to_string()),
                None => ("write", source.to_string()),
            }
        });
        match copied {
            Ok(n) => file.commit(mtime).map(|()| n).map_err(|err| match err {
                ExtractError::Refused(r) => ("commit", r.to_string()),
                ExtractError::Io { op, source } => (op, source.to_string()),
            }),
            Err(e) => Err(e),
        }
    })
    .await;
    match wrote {
        Ok(n) if n == size => Outcome::Restored(n),
        Ok(n) => failed("get", format!("read {n} bytes, the index says {size}")),
        Err((op, reason)) => failed(op, reason),
    }
}

/// Runs file-system work off the async threads.
async fn blocking<T: Send + 'static, E: From<ExtractFailure> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ExtractFailure(e.to_string()).into()))
}

/// A worker thread that failed (panicked or was cancelled).
struct ExtractFailure(String);

impl From<ExtractFailure> for ExtractError {
    fn from(e: ExtractFailure) -> Self {
        ExtractError::Io {
            op: "worker",
            source: io::Error::other(e.0),
        }
    }
}

impl From<ExtractFailure> for (&'static str, String) {
    fn from(e: ExtractFailure) -> Self {
        ("worker", e.0)
    }
}

fn system_time(ns: i128) -> Option<std::time::SystemTime> {
    let epoch = std::time::UNIX_EPOCH;
    let d = std::time::Duration::from_nanos(u64::try_from(ns.unsigned_abs()).ok()?);
    if ns >= 0 {
        epoch.checked_add(d)
    } else {
        epoch.checked_sub(d)
    }
}
