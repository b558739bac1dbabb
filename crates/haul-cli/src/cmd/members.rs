//! The bundle readers: `haul ls --members`, `haul cat --member` and
//! `haul verify --bundle`, all through the archive's index (found by the
//! locator in its last block, else the sidecar).

use anyhow::{bail, Result};
use futures::StreamExt;
use haul_engine::bundle::{self, IndexEntry};
use haul_jobs::{Connector, Opened};
use haul_store::location::Location;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::args::{Conn, Global};
use crate::output::Output;
use crate::to_spec::Side;

async fn open(raw: &str, conn: &Conn) -> Result<Opened> {
    let loc = Location::parse(raw)?;
    let opened = Connector::default().open_existing(&loc, &conn.side(Side::Only)).await?;
    if opened.key.is_empty() || opened.key.is_dir_marker() {
        bail!("{}: not an archive (give its key: …/name.tar)", opened.shown);
    }
    Ok(opened)
}

fn mtime(e: &IndexEntry) -> String {
    e.mtime_ns
        .and_then(|ns| {
            let secs = u64::try_from(ns / 1_000_000_000).ok()?;
            Some(humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            ))
        })
        .map_or_else(|| "-".to_string(), |t| t.to_string())
}

/// `haul ls --members ARCHIVE`.
pub async fn ls(g: &Global, raw: &str, conn: &Conn) -> Result<u8> {
    let a = open(raw, conn).await?;
    let archive = bundle::open_archive(a.store.as_ref(), &a.key)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.shown))?;
    let out = Output::new(g, false);
    let mut bytes = 0u64;
    for e in &archive.entries {
        bytes += e.size;
        if g.json {
            out.line(&serde_json::to_string(e)?);
        } else {
            out.line(&format!(
                "{}\t{:>12}\t{:>12}\t{}\t{}",
                mtime(e),
                e.size,
                e.data_offset,
                e.etag.as_deref().unwrap_or("-"),
                e.name
            ));
        }
    }
    // A compressed archive's entries carry their zstd frames (in --json).
    let zstd = archive.framed.is_some() || archive.entries.iter().any(|e| e.zstd.is_some());
    let compression = if zstd { "zstd" } else { "none" };
    if g.json {
        out.line(
            &json!({"event": "summary", "members": archive.entries.len(), "bytes": bytes,
                    "archive_bytes": archive.size, "compression": compression})
            .to_string(),
        );
    } else if !g.quiet {
        eprintln!(
            "{} members, {bytes} bytes; archive {} bytes ({compression})",
            archive.entries.len(),
            archive.size
        );
    }
    Ok(0)
}

/// `haul cat --member NAME ARCHIVE`.
pub async fn cat(raw: &str, member: &str, conn: &Conn) -> Result<u8> {
    let a = open(raw, conn).await?;
    let archive = bundle::open_archive(a.store.as_ref(), &a.key)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.shown))?;
    let Some(entry) = archive.member(member) else {
        bail!("{}: no member {member:?}", a.shown);
    };
    let mut body = bundle::member_stream(a.store.as_ref(), &a.key, entry)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.shown))?;
    let mut stdout = tokio::io::stdout();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => stdout.write_all(&b).await?,
            Err(e) => {
                stdout.flush().await?;
                eprintln!("haul: error: {e}");
                return Ok(1);
            }
        }
    }
    stdout.flush().await?;
    Ok(0)
}

/// `haul verify --bundle ARCHIVE [--against SRC]`.
pub async fn verify(g: &Global, raw: &str, against: Option<&str>, conn: &Conn) -> Result<u8> {
    let a = open(raw, conn).await?;
    let out = Output::new(g, false);
    let report = bundle::verify_archive(a.store.as_ref(), &a.key)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.shown))?;
    let mut problems = report.problems.clone();
    if let Some(src) = against {
        let loc = Location::parse(src)?;
        let s = Connector::default().open_existing(&loc, &conn.side(Side::Src)).await?;
        let archive = bundle::open_archive(a.store.as_ref(), &a.key)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.shown))?;
        let r = bundle::verify_against(&archive.entries, s.store.as_ref(), 32).await;
        problems.extend(r.problems);
    }
    for p in &problems {
        if g.json {
            out.line(&json!({"event": "problem", "member": p.member, "what": p.what}).to_string());
        } else {
            out.line(&format!("{}\t{}", p.member, p.what));
        }
    }
    if g.json {
        out.line(
            &json!({"event": "summary", "members": report.members, "bytes": report.bytes, "problems": problems.len()})
                .to_string(),
        );
    } else if !g.quiet {
        eprintln!(
            "{}: {} members, {} bytes checked; {} problems",
            a.shown,
            report.members,
            report.bytes,
            problems.len()
        );
    }
    Ok(u8::from(!problems.is_empty()))
}

/// The end of `haul bundle`: the first dead letters one a line (every one
/// is in `--dlq FILE`), then the summary with the count per reason.
pub fn render_bundled(g: &Global, out: &Output, s: &bundle::BundleSummary, dry_run: bool) {
    for d in &s.dead_sample {
        if g.json {
            let mut v = serde_json::to_value(d).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("event".into(), json!("dead_letter"));
            }
            out.line(&v.to_string());
        } else {
            eprintln!("haul: dead letter: {}: {}: {}", d.key, d.reason, d.message);
        }
    }
    let unshown = s.dead_letters.saturating_sub(s.dead_sample.len() as u64);
    if unshown > 0 && !g.json {
        eprintln!("haul: {unshown} more dead letters not shown (--dlq FILE lists every one)");
    }
    for a in &s.failed {
        eprintln!("haul: error: archive {a} could not be written (its members are in no archive)");
    }
    if g.json {
        let mut v = serde_json::to_value(s).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("dead_sample");
            o.insert("event".into(), json!("summary"));
            o.insert("dry_run".into(), json!(dry_run));
        }
        out.line(&v.to_string());
    } else if !g.quiet {
        let verb = if dry_run { "Would bundle" } else { "Bundled" };
        eprintln!(
            "{verb} {} objects ({} bytes) into {} archives ({} already complete); {} copied as they are ({} bytes); {} dead letters{}; {} folder markers left out",
            s.members,
            s.member_bytes,
            s.archives_written,
            s.archives_skipped,
            s.large_objects,
            s.large_bytes,
            s.dead_letters,
            by_reason(s),
            s.folders
        );
        if !dry_run && !s.manifest.is_empty() {
            eprintln!("Run manifest: {}", s.manifest);
        }
    }
}

/// The dead letters per reason, ` (not_found 2, access_denied 1)`, or nothing.
fn by_reason(s: &bundle::BundleSummary) -> String {
    if s.dead_by_reason.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = s.dead_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
    format!(" ({})", parts.join(", "))
}

/// The end of `haul unbundle`: refused and failed members, then the summary.
pub fn render_unbundled(g: &Global, out: &Output, r: &bundle::UnbundleReport, dry_run: bool) {
    for m in &r.refused {
        if g.json {
            out.line(
                &json!({"event": "refused", "member": m.name, "reason": m.reason, "detail": m.detail}).to_string(),
            );
        } else {
            eprintln!("haul: refused: {}: {}: {}", m.name, m.reason.as_str(), m.detail);
        }
    }
    for f in &r.failed {
        if g.json {
            out.line(
                &json!({"event": "failure", "member": f.name, "key": f.key, "op": f.op, "message": f.reason})
                    .to_string(),
            );
        } else {
            eprintln!("haul: error: {}: {} {}: {}", f.name, f.op, f.key, f.reason);
        }
    }
    if g.json {
        out.line(
            &json!({"event": "summary", "restored": r.restored.len(), "bytes": r.bytes, "filtered": r.filtered,
                    "refused": r.refused.len(), "failed": r.failed.len(), "dry_run": dry_run})
            .to_string(),
        );
    } else if !g.quiet {
        let verb = if dry_run { "Would restore" } else { "Restored" };
        eprintln!(
            "{verb} {} members ({} bytes); {} not selected, {} refused, {} failed",
            r.restored.len(),
            r.bytes,
            r.filtered,
            r.refused.len(),
            r.failed.len()
        );
    }
}
