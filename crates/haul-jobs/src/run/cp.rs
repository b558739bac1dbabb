//! cp: file→s3, s3→file, s3→s3, file→file, stdin→s3, s3→stdout; trees
//! with `recursive`. Resolves the two locations into stores and keys,
//! plans (a listing, or one object), then runs the plan.

use std::path::Path;

use futures::StreamExt;
use haul_engine::plan::Planner;
use haul_engine::report::NoObserver;
use haul_engine::{Failure, Report, Transfer};
use haul_store::location::Location;
use haul_store::{DynStore, Key, ListRequest};

use super::{executor, job_options, transfer_options};
use crate::connect::{probe, split_file, Connector, Opened};
use crate::context::{JobOutcome, RunContext};
use crate::error::{invalid, JobError, Result};
use crate::spec::{ConnSpec, CpSpec};

/// Where the objects go.
pub(crate) struct Dest {
    pub store: DynStore,
    /// The key (one object) or prefix (a tree).
    pub key: Key,
}

pub(crate) async fn run(s: &CpSpec, ctx: &RunContext) -> Result<JobOutcome> {
    let (src, dst) = (s.src.location(), s.dst.location());
    let topts = transfer_options(&s.transfer, &s.object, &s.write);
    let filter = s.filter.build()?;
    let mut c = Connector::default();
    let jopts = job_options(s.transfer.concurrency, s.dry_run);
    let moved = |verb: &'static str, summary| JobOutcome::Moved {
        verb,
        summary,
        strict: s.write.strict,
    };

    if *src == Location::Stdio {
        return from_stdin(s, ctx, &mut c).await;
    }
    let source = c.open_existing(src, &s.src_conn).await?;
    let tree = match src {
        // A directory is a tree; a file is one object, with or without -r.
        Location::Local { .. } if source.key.is_empty() => {
            if !s.recursive {
                return invalid(format!("{}: is a directory (use -r to copy a tree)", source.shown));
            }
            true
        }
        Location::Local { .. } => false,
        // `-r s3://b/name` where `name` is an object and not a prefix:
        // copy the object rather than nothing.
        _ if s.recursive && !source.key.is_empty() && !source.key.is_dir_marker() => {
            let mut under = source.store.list(ListRequest::prefix(source.key.as_dir()));
            let empty = under.next().await.is_none();
            !(empty && source.store.head(&source.key).await.is_ok())
        }
        _ => s.recursive,
    };
    if *dst == Location::Stdio {
        if tree {
            return invalid("cannot copy a tree to stdout");
        }
        return to_stdout(&source, ctx)
            .await
            .map(|summary| moved("Downloaded", summary));
    }
    let verb = if s.dry_run { "Would copy" } else { "Copied" };

    if tree {
        let src_prefix = source.key.as_dir();
        probe(&source.store, &src_prefix, "cannot read the source", true).await?;
        check_no_overlap(src, &source, dst, &s.src_conn, &s.dst_conn)?;
        let dest = open_dest_tree(dst, &s.dst_conn, &mut c).await?;
        probe(&dest.store, &dest.key, "cannot write to the destination", false).await?;
        let planner = Planner {
            src: source.store.clone(),
            src_prefix,
            dst_prefix: dest.key.as_dir(),
            filter,
            // Folder markers cannot be written where keys cannot end in '/'.
            dst_is_local: !dest.store.capabilities().any_key,
        };
        let exec = executor(topts, jopts, ctx, &source.store, &dest.store);
        let summary = exec.copy(&source.store, &dest.store, planner.tasks()).await;
        return Ok(moved(verb, summary));
    }

    // One object.
    if source.key.is_empty() || source.key.is_dir_marker() {
        return invalid(format!(
            "{}: not an object (use -r to copy everything under a prefix)",
            source.shown
        ));
    }
    let meta = match source.store.head(&source.key).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => {
            return invalid(format!("{}: no such object (use -r to copy a prefix)", source.shown))
        }
        Err(e) => return Err(JobError::store_in("cannot read the source", e)),
    };
    if !filter.matches(source.key.file_name()) {
        let report = Report::default();
        report.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.observer()
            .skipped(source.key.as_str(), "excluded by --include/--exclude");
        return Ok(moved("Copied", report.summary(s.dry_run)));
    }
    let dest = open_dest_file(dst, source.key.file_name(), &s.dst_conn, &mut c).await?;
    probe(&dest.store, &dest.key, "cannot write to the destination", false).await?;
    let exec = executor(topts, jopts, ctx, &source.store, &dest.store);
    let summary = exec
        .copy(&source.store, &dest.store, Planner::single(meta, dest.key))
        .await;
    Ok(moved(verb, summary))
}

/// The destination of a tree: a bucket prefix, or a local directory (created).
pub(crate) async fn open_dest_tree(dst: &Location, conn: &ConnSpec, c: &mut Connector) -> Result<Dest> {
    match dst {
        Location::S3 { bucket, key } => Ok(Dest {
            store: c.s3(bucket, conn).await?,
            key: key.clone(),
        }),
        Location::Local { path } => {
            if path.is_file() {
                return invalid(format!(
                    "{}: is a file; the destination of -r must be a directory",
                    path.display()
                ));
            }
            Ok(Dest {
                store: c
                    .local_dir(path, true)
                    .map_err(|e| e.within("cannot create the destination directory"))?,
                key: Key::root(),
            })
        }
        Location::Stdio => invalid("cannot copy a tree to stdout"),
    }
}

/// The destination of one object: `name` is appended when the destination
/// is a folder (ends with `/`, is an existing directory, or a bucket root).
async fn open_dest_file(dst: &Location, name: &str, conn: &ConnSpec, c: &mut Connector) -> Result<Dest> {
    match dst {
        Location::S3 { bucket, key } => {
            let key = if key.is_empty() || key.is_dir_marker() {
                key.join(name).map_err(JobError::store)?
            } else {
                key.clone()
            };
            Ok(Dest {
                store: c.s3(bucket, conn).await?,
                key,
            })
        }
        Location::Local { path } => {
            let (dir, file) = if path.is_dir() || dst.is_dir_like() {
                (path.clone(), name.to_string())
            } else {
                split_file(path)?
            };
            let store = c
                .local_dir(&dir, true)
                .map_err(|e| e.within("cannot create the destination directory"))?;
            Ok(Dest {
                store,
                key: Key::object(file).map_err(JobError::store)?,
            })
        }
        Location::Stdio => invalid("'-' is handled before"),
    }
}

/// Refuses a tree copy whose source and destination overlap: copying into
/// the source would copy its own output, and copying into a parent of the
/// source can overwrite source objects before they are read. Checked before
/// anything is created.
pub(crate) fn check_no_overlap(
    src: &Location,
    source: &Opened,
    dst: &Location,
    src_conn: &ConnSpec,
    dst_conn: &ConnSpec,
) -> Result<()> {
    match (src, dst) {
        (Location::Local { .. }, Location::Local { path }) => {
            let Some(s) = source.store.capabilities().local_root.clone() else {
                return Ok(());
            };
            let d = resolve(path);
            if d.starts_with(&s) || s.starts_with(&d) {
                return invalid(format!(
                    "the source {} and the destination {} overlap (one is inside the other)",
                    s.display(),
                    d.display()
                ));
            }
        }
        (Location::S3 { bucket: sb, .. }, Location::S3 { bucket: db, key: dk })
            if sb == db && src_conn.endpoint_url == dst_conn.endpoint_url =>
        {
            let sp = source.key.as_dir();
            let dp = dk.as_dir();
            if dp.as_str().starts_with(sp.as_str()) || sp.as_str().starts_with(dp.as_str()) {
                return invalid(format!(
                    "the source s3://{sb}/{sp} and the destination s3://{db}/{dp} overlap (one is inside the other)"
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// An absolute, symlink-free form of a path that may not exist yet.
fn resolve(path: &Path) -> std::path::PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

/// stdin → one object.
async fn from_stdin(s: &CpSpec, ctx: &RunContext, c: &mut Connector) -> Result<JobOutcome> {
    let dst = s.dst.location();
    if dst.is_dir_like() {
        return invalid(format!("{dst}: give the object key to write stdin to (not a folder)"));
    }
    let dest = open_dest_file(dst, "stdin", &s.dst_conn, c).await?;
    let report = Report::default();
    if s.dry_run {
        ctx.reporter.would(
            "stdin",
            &dest.store.url(),
            haul_engine::job::Action::Copy {
                src: "-",
                dst: dest.key.as_str(),
                size: 0,
            },
        );
    } else {
        let t = Transfer::new(transfer_options(&s.transfer, &s.object, &s.write), ctx.cancel.clone());
        let obs = ctx.observer();
        match t
            .upload_stream(tokio::io::stdin(), &dest.store, &dest.key, obs.as_ref())
            .await
        {
            Ok(o) => report.ok(o.bytes),
            Err(e) => report.fail(Failure::from_error(dest.key.as_str(), &e), obs.as_ref()),
        }
    }
    Ok(JobOutcome::Moved {
        verb: "Uploaded",
        summary: report.summary(s.dry_run),
        strict: false,
    })
}

/// One object → stdout, checked against its MD5 ETag.
pub(crate) async fn to_stdout(source: &Opened, ctx: &RunContext) -> Result<haul_engine::Summary> {
    if source.key.is_empty() || source.key.is_dir_marker() {
        return invalid(format!(
            "{}: not an object (give a key, not a prefix or directory)",
            source.shown
        ));
    }
    let t = Transfer::new(Default::default(), ctx.cancel.clone());
    let report = Report::default();
    match t
        .download_to(&source.store, &source.key, tokio::io::stdout(), &NoObserver)
        .await
    {
        Ok(n) => report.ok(n),
        Err(e) if e.is_not_found() => return invalid(format!("{}: no such object", source.shown)),
        Err(e) => report.fail(Failure::from_error(source.key.as_str(), &e), ctx.observer().as_ref()),
    }
    Ok(report.summary(false))
}
