//! `haul cp`: file→s3, s3→file, s3→s3, file→file, stdin→s3, s3→stdout;
//! `-r` for trees. Resolves the two locations into stores and keys, plans
//! (a listing, or one object), then runs the plan through the executor.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use haul_engine::plan::Planner;
use haul_engine::{Filter, JobOptions, TransferOptions};
use haul_store::location::Location;
use haul_store::{DynStore, Key, ListRequest, MetadataDirective, PutOptions, Sse};

use crate::args::{CpArgs, Directive, Global, TransferArgs, WriteArgs};
use crate::conn::{fatal, probe, split_file, Connector, Opened, Side};
use crate::output::Output;

pub(crate) fn transfer_options(t: &TransferArgs, w: &WriteArgs) -> Result<TransferOptions> {
    let a = &w.object;
    if t.part_size < 5 * 1024 * 1024 {
        bail!("--part-size must be at least 5MiB (S3's smallest part)");
    }
    if t.part_size > 5 * 1024 * 1024 * 1024 {
        bail!("--part-size must be at most 5GiB (S3's largest part)");
    }
    let sse = match a.sse.as_deref() {
        None if a.sse_kms_key_id.is_some() => bail!("--sse-kms-key-id needs --sse aws:kms"),
        None => None,
        Some("AES256") if a.sse_kms_key_id.is_some() => bail!("--sse-kms-key-id needs --sse aws:kms"),
        Some("AES256") => Some(Sse::S3),
        Some(_) => Some(Sse::Kms {
            key_id: a.sse_kms_key_id.clone(),
        }),
    };
    Ok(TransferOptions {
        multipart_threshold: t.multipart_threshold,
        part_size: t.part_size,
        parts_per_object: t.parts_per_object.max(1),
        parts_total: (t.parts_per_object.max(1) * 4).max(t.concurrency.min(256)),
        buffer_bytes: t.max_buffer,
        directive: match w.metadata_directive {
            Directive::Copy => MetadataDirective::Copy,
            Directive::Replace => MetadataDirective::Replace,
        },
        put: PutOptions {
            content_type: a.content_type.clone(),
            metadata: a.metadata.iter().cloned().collect(),
            storage_class: a.storage_class.clone(),
            sse,
            tags: a.tag.clone(),
            ..Default::default()
        },
        server_side: !w.no_server_side,
        preserve_etag: w.preserve_etag,
        require_tags: w.require_tags,
        require_verified: w.require_verified,
    })
}

/// Where the objects go.
pub(crate) struct Dest {
    pub store: DynStore,
    /// The key (one object) or prefix (-r).
    pub key: Key,
}

pub async fn run(g: &Global, a: CpArgs) -> Result<u8> {
    let src = Location::parse(&a.src).context("SRC")?;
    let dst = Location::parse(&a.dst).context("DST")?;
    let topts = transfer_options(&a.transfer, &a.write)?;
    let filter = Filter::new(&a.include, &a.exclude)?;
    let mut c = Connector::new(a.conn.clone());
    let out = Arc::new(Output::for_job(g, true)?);
    let jopts = JobOptions {
        concurrency: a.transfer.concurrency.max(1),
        dry_run: a.dry_run,
        ..Default::default()
    };

    if src == Location::Stdio {
        return from_stdin(g, &a, &dst, &mut c, topts, out).await;
    }
    let source = c.open_existing(&src, Side::Src).await?;
    let tree = match src {
        // A directory is a tree; a file is one object, with or without -r.
        Location::Local { .. } if source.key.is_empty() => {
            if !a.recursive {
                bail!("{}: is a directory (use -r to copy a tree)", source.shown);
            }
            true
        }
        Location::Local { .. } => false,
        // `-r s3://b/name` where `name` is an object and not a prefix:
        // copy the object rather than nothing.
        _ if a.recursive && !source.key.is_empty() && !source.key.is_dir_marker() => {
            let mut under = source.store.list(ListRequest::prefix(source.key.as_dir()));
            let empty = under.next().await.is_none();
            !(empty && source.store.head(&source.key).await.is_ok())
        }
        _ => a.recursive,
    };
    if dst == Location::Stdio {
        if tree {
            bail!("cannot copy a tree to stdout");
        }
        return super::cat::run(
            g,
            crate::args::CatArgs {
                location: a.src.clone(),
                conn: a.conn.clone(),
            },
        )
        .await;
    }

    if tree {
        let src_prefix = source.key.as_dir();
        probe(&source.store, &src_prefix, "cannot read the source", true).await?;
        check_no_overlap(&src, &source, &dst, &c)?;
        let dest = open_dest_tree(&dst, &mut c).await?;
        probe(&dest.store, &dest.key, "cannot write to the destination", false).await?;
        let planner = Planner {
            src: source.store.clone(),
            src_prefix,
            dst_prefix: dest.key.as_dir(),
            filter,
            // Folder markers cannot be written where keys cannot end in '/'.
            dst_is_local: !dest.store.capabilities().any_key,
        };
        let exec = super::executor(topts, jopts, out.clone(), &source.store, &dest.store);
        let summary = exec.copy(&source.store, &dest.store, planner.tasks()).await;
        out.summary(if a.dry_run { "Would copy" } else { "Copied" }, &summary);
        return Ok(super::exit_code(&summary, &a.write));
    }

    // One object.
    if source.key.is_empty() || source.key.is_dir_marker() {
        bail!(
            "{}: not an object (use -r to copy everything under a prefix)",
            source.shown
        );
    }
    let meta = match source.store.head(&source.key).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => bail!("{}: no such object (use -r to copy a prefix)", source.shown),
        Err(e) => return Err(fatal(e)).context("cannot read the source"),
    };
    if !filter.matches(source.key.file_name()) {
        let report = haul_engine::Report::default();
        report.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        haul_engine::Observer::skipped(out.as_ref(), source.key.as_str(), "excluded by --include/--exclude");
        out.summary("Copied", &report.summary(a.dry_run));
        return Ok(0);
    }
    let dest = open_dest_file(&dst, source.key.file_name(), &mut c).await?;
    probe(&dest.store, &dest.key, "cannot write to the destination", false).await?;
    let exec = super::executor(topts, jopts, out.clone(), &source.store, &dest.store);
    let summary = exec
        .copy(&source.store, &dest.store, Planner::single(meta, dest.key))
        .await;
    out.summary(if a.dry_run { "Would copy" } else { "Copied" }, &summary);
    Ok(super::exit_code(&summary, &a.write))
}

/// The destination of a tree: a bucket prefix, or a local directory (created).
pub(crate) async fn open_dest_tree(dst: &Location, c: &mut Connector) -> Result<Dest> {
    match dst {
        Location::S3 { bucket, key } => Ok(Dest {
            store: c.s3(bucket, Side::Dst).await?,
            key: key.clone(),
        }),
        Location::Local { path } => {
            if path.is_file() {
                bail!(
                    "{}: is a file; the destination of -r must be a directory",
                    path.display()
                );
            }
            Ok(Dest {
                store: c
                    .local_dir(path, true)
                    .context("cannot create the destination directory")?,
                key: Key::root(),
            })
        }
        Location::Stdio => Err(anyhow!("cannot copy a tree to stdout")),
    }
}

/// The destination of one object: `name` is appended when the destination
/// is a folder (ends with `/`, is an existing directory, or a bucket root).
async fn open_dest_file(dst: &Location, name: &str, c: &mut Connector) -> Result<Dest> {
    match dst {
        Location::S3 { bucket, key } => {
            let key = if key.is_empty() || key.is_dir_marker() {
                key.join(name).map_err(fatal)?
            } else {
                key.clone()
            };
            Ok(Dest {
                store: c.s3(bucket, Side::Dst).await?,
                key,
            })
        }
        Location::Local { path } => {
            if path.is_dir() || dst.is_dir_like() {
                let store = c
                    .local_dir(path, true)
                    .context("cannot create the destination directory")?;
                return Ok(Dest {
                    store,
                    key: Key::object(name).map_err(fatal)?,
                });
            }
            let (dir, file) = split_file(path)?;
            let store = c
                .local_dir(&dir, true)
                .context("cannot create the destination directory")?;
            Ok(Dest {
                store,
                key: Key::object(file).map_err(fatal)?,
            })
        }
        Location::Stdio => Err(anyhow!("'-' is handled before")),
    }
}

/// Refuses a tree copy whose source and destination overlap: copying into
/// the source would copy its own output, and copying into a parent of the
/// source can overwrite source objects before they are read. Checked before
/// anything is created.
pub(crate) fn check_no_overlap(src: &Location, source: &Opened, dst: &Location, c: &Connector) -> Result<()> {
    match (src, dst) {
        (Location::Local { .. }, Location::Local { path }) => {
            let Some(s) = source.store.capabilities().local_root.clone() else {
                return Ok(());
            };
            let d = resolve(path);
            if d.starts_with(&s) || s.starts_with(&d) {
                bail!(
                    "the source {} and the destination {} overlap (one is inside the other)",
                    s.display(),
                    d.display()
                );
            }
        }
        (Location::S3 { bucket: sb, .. }, Location::S3 { bucket: db, key: dk })
            if sb == db && c.endpoint(Side::Src) == c.endpoint(Side::Dst) =>
        {
            let sp = source.key.as_dir();
            let dp = dk.as_dir();
            if dp.as_str().starts_with(sp.as_str()) || sp.as_str().starts_with(dp.as_str()) {
                bail!("the source s3://{sb}/{sp} and the destination s3://{db}/{dp} overlap (one is inside the other)");
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

async fn from_stdin(
    g: &Global,
    a: &CpArgs,
    dst: &Location,
    c: &mut Connector,
    topts: TransferOptions,
    out: Arc<Output>,
) -> Result<u8> {
    if a.recursive {
        bail!("-r cannot be used with '-' (stdin is one object)");
    }
    if dst.is_dir_like() {
        bail!("{dst}: give the object key to write stdin to (not a folder)");
    }
    let dest = open_dest_file(dst, "stdin", c).await?;
    if a.dry_run {
        out.line(&format!("(dry run) upload stdin -> {}/{}", dest.store.url(), dest.key));
        return Ok(0);
    }
    let t = haul_engine::Transfer::new(topts, super::ctrl_c());
    let report = haul_engine::Report::default();
    match t
        .upload_stream(tokio::io::stdin(), &dest.store, &dest.key, out.as_ref())
        .await
    {
        Ok(o) => report.ok(o.bytes),
        Err(e) => report.fail(haul_engine::Failure::from_error(dest.key.as_str(), &e), out.as_ref()),
    }
    let s = report.summary(false);
    let _ = g;
    out.summary("Uploaded", &s);
    Ok(s.exit_code() as u8)
}
