//! The sequential fallback of `unbundle` to a local directory: a tar
//! without a haul index (a hand-made one, or a bundle whose locator and
//! sidecar are both gone) is streamed once through the `tar` crate's
//! reader, on a blocking thread fed from the GET's body, with the same
//! per-member refusals as the indexed path ([`super::extract`]).

use std::io::{self, Read};
use std::sync::Arc;

use futures::TryStreamExt;
use haul_store::{Key, ObjectStore};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::error::{BundleError, BundleResult};
use super::extract::LocalRoot;
use super::format::INDEX_MEMBER;
use super::names::{check_name, member_kind, MemberKind, Refusal, RefuseReason};
use super::unbundle::UnbundleReport;
use crate::filter::Filter;

/// Extracts every member of the tar at `archive_key` under `root`.
pub(super) async fn untar_to_local(
    store: &dyn ObjectStore,
    archive_key: &Key,
    root: Arc<LocalRoot>,
    include: Filter,
) -> BundleResult<UnbundleReport> {
    let got = store.get(archive_key, None).await?;
    let reader = SyncIoBridge::new(StreamReader::new(got.body.map_err(io::Error::other)));
    let key = archive_key.to_string();
    let done = tokio::task::spawn_blocking(move || {
        let mut report = untar(reader, &root, &include, &key);
        for (dir, e) in root.finish() {
            report.extract_error(&dir, &dir, e);
        }
        report
    })
    .await
    .map_err(|e| BundleError::Malformed {
        archive: archive_key.to_string(),
        what: format!("the extracting thread failed: {e}"),
    })?;
    Ok(done)
}

/// Extracts the members of a tar stream under `root`.
pub fn untar(reader: impl Read, root: &LocalRoot, include: &Filter, archive: &str) -> UnbundleReport {
    let mut report = UnbundleReport {
        sequential: true,
        ..Default::default()
    };
    let mut ar = tar::Archive::new(reader);
    let entries = match ar.entries() {
        Ok(e) => e,
        Err(e) => {
            report.fail("", archive, "read", e);
            return report;
        }
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // A header that does not parse: nothing after it can be trusted.
                report.fail("", archive, "read", format!("not a readable tar from here on: {e}"));
                break;
            }
        };
        let raw = entry.path_bytes().into_owned();
        let name = match String::from_utf8(raw) {
            Ok(n) => n,
            Err(e) => {
                let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
                report.refuse(&shown, Refusal::new(RefuseReason::InvalidName, "the name is not UTF-8"));
                continue;
            }
        };
        let t = entry.header().entry_type();
        if t.is_pax_global_extensions() || name == INDEX_MEMBER {
            continue;
        }
        let kind = match member_kind(t) {
            Ok(k) => k,
            Err(r) => {
                report.refuse(&name, r);
                continue;
            }
        };
        let comps = match check_name(&name) {
            Ok(c) => c,
            Err(r) => {
                report.refuse(&name, r);
                continue;
            }
        };
        if !include.matches(&comps.join("/")) {
            report.filtered += 1;
            continue;
        }
        let mtime = entry.header().mtime().ok().map(|s| i128::from(s) * 1_000_000_000);
        match kind {
            MemberKind::Dir => match root.make_dir(&name, mtime) {
                Ok(()) => report.restored.push(name),
                Err(e) => report.extract_error(&name, &name, e),
            },
            MemberKind::File => {
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut file = match root.create_file(&name, mode) {
                    Ok(f) => f,
                    Err(e) => {
                        report.extract_error(&name, &name, e);
                        continue;
                    }
                };
                let copied = match file.file() {
                    Ok(f) => io::copy(&mut entry, f),
                    Err(e) => Err(e),
                };
                match copied {
                    Ok(n) => match file.commit(mtime) {
                        Ok(()) => {
                            report.restored.push(name);
                            report.bytes += n;
                        }
                        Err(e) => report.extract_error(&name, &name, e),
                    },
                    Err(e) => {
                        // The archive or the disk failed mid-member: stop here.
                        report.fail(&name, &name, "copy", e);
                        break;
                    }
                }
            }
        }
    }
    report
}
