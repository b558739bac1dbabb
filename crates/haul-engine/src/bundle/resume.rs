//! Resuming a run: an archive already complete at the destination is not
//! written again, and one that is not is started clean.
//!
//! Complete means: the sidecar index lists the planned members in plan
//! order (same names, source keys, sizes and — when listed — ETags) except
//! those recorded as dead letters when the archive was written (its dead
//! record, `<archive>.dead`, [`super::dead::DEAD_SUFFIX`]), and the
//! archive's last block is a locator that agrees with the index (the
//! archive was completed, not cut short). Three requests (HEAD, sidecar
//! GET, one suffix GET), a fourth for the dead record only when members are
//! missing; the recorded dead letters are reported again, so a re-run
//! exits and writes `--dlq` as the first run did. Anything missing,
//! unreadable or different — a missing member without a record included —
//! means the archive is written again from the start, after the multipart
//! uploads an interrupted writer left at its key are aborted.

use std::collections::HashMap;

use bytes::Bytes;
use futures::TryStreamExt;
use haul_store::{DynStore, ErrorKind, GetOpts, Key, StoreError};

use super::dead::{dead_record_name, dlq_lines, DeadLetter};
use super::format::{IndexEntry, BLOCK};
use super::index::parse_index;
use super::plan::{BundleUnit, PlannedMember};
use super::write::{ArchiveOutcome, Destination, INDEX_CONTENT_TYPE};

async fn read_all(store: &DynStore, key: &Key, opts: GetOpts) -> Option<Bytes> {
    let g = store.get_with(key, opts).await.ok()?;
    let chunks: Vec<Bytes> = g.body.try_collect().await.ok()?;
    Some(chunks.concat().into())
}

/// The outcome of `unit`'s archive at `key` when it is complete.
pub(super) async fn existing(dst: &Destination, key: &Key, sidecar: &Key, unit: &BundleUnit) -> Option<ArchiveOutcome> {
    let store = &dst.store;
    let meta = store.head(key).await.ok()?;
    let index = parse_index(&read_all(store, sidecar, GetOpts::default()).await?, sidecar.as_str()).ok()?;
    let dead = if unit.members.len() == index.len() {
        Vec::new()
    } else {
        match recorded_dead(dst, unit).await {
            Some(d) => d,
            None => {
                tracing::info!(archive = %key, "members missing without a dead-letter record: written again");
                return None;
            }
        }
    };
    if !as_planned(&unit.members, &index, &dead) {
        tracing::info!(archive = %key, "present but not as planned: written again");
        return None;
    }
    let opts = GetOpts {
        if_match: meta.etag.clone(),
        ..GetOpts::suffix(BLOCK)
    };
    let block = read_all(store, key, opts).await?;
    // A plain locator block, or a compressed archive's locator frame.
    if super::frames::tail_members(&block, meta.size)? != index.len() as u64 {
        return None;
    }
    tracing::info!(archive = %key, dead = dead.len(), "already complete: skipped");
    Some(ArchiveOutcome {
        name: unit.name.clone(),
        key: key.as_str().to_string(),
        members: index.len() as u64,
        bytes: meta.size,
        data_bytes: index.iter().map(|e| e.size).sum(),
        crc64nvme: meta.checksums.full_crc64().map(haul_store::checksum::crc64_to_b64),
        parts: meta.parts_count.unwrap_or(1),
        skipped: true,
        dead,
    })
}

/// Whether `index` is `planned` in order, minus exactly the members in
/// `dead` (each as it was planned: same key, size and ETag).
fn as_planned(planned: &[PlannedMember], index: &[IndexEntry], dead: &[DeadLetter]) -> bool {
    let mut left: HashMap<&str, &DeadLetter> = dead.iter().map(|d| (d.key.as_str(), d)).collect();
    if left.len() != dead.len() || planned.len() != index.len() + dead.len() {
        return false;
    }
    let mut entries = index.iter().peekable();
    for m in planned {
        let same = |e: &&IndexEntry| {
            m.name == e.name
                && m.key == e.key
                && m.version_id == e.version_id
                && m.size == e.size
                && (m.etag.is_none() || m.etag == e.etag)
        };
        if entries.peek().is_some_and(same) {
            entries.next();
            continue;
        }
        match left.remove(m.key.as_str()) {
            Some(d) if d.size == m.size && (m.etag.is_none() || d.etag == m.etag) => {}
            _ => return false,
        }
    }
    entries.next().is_none() && left.is_empty()
}

/// The dead record of `unit`'s archive, when there is one and it reads.
async fn recorded_dead(dst: &Destination, unit: &BundleUnit) -> Option<Vec<DeadLetter>> {
    let key = dst.key(&dead_record_name(&unit.name)).ok()?;
    let raw = read_all(&dst.store, &key, GetOpts::default()).await?;
    raw.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// Records the members of `unit`'s archive that became dead letters while
/// it was written (`<archive>.dead`, JSON lines; nothing when there are
/// none). Written before the sidecar index, so an index that lacks members
/// always has its record.
pub(super) async fn record_dead(dst: &Destination, unit: &BundleUnit, dead: &[DeadLetter]) -> Result<(), StoreError> {
    if dead.is_empty() {
        return Ok(());
    }
    let key = dst.key(&dead_record_name(&unit.name))?;
    let lines = dlq_lines(dead)
        .map_err(|e| StoreError::new(haul_store::Op::Put, key.as_str(), ErrorKind::Other, e.to_string()))?;
    let put = haul_store::PutOptions {
        content_type: Some(INDEX_CONTENT_TYPE.into()),
        storage_class: dst.storage_class.clone(),
        checksums: haul_store::Checksums::md5(&haul_store::checksum::md5_hex(&lines)),
        ..Default::default()
    };
    dst.store.put(&key, lines.into(), &put).await.map(|_| ())
}

/// Whether a failed listing of stale uploads was reported.
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Aborts the multipart uploads in progress at exactly `key` (left by an
/// interrupted run) before it is written again. A store that cannot list
/// its uploads, or refuses to, is left to its lifecycle rule for
/// incomplete uploads.
pub(super) async fn abort_stale(store: &DynStore, key: &Key) {
    let found = match store.list_multipart_uploads(key).await {
        Ok(f) => f,
        Err(e) if e.kind == ErrorKind::NotSupported => return,
        Err(e) => {
            // Once a process: a key without s3:ListBucketMultipartUploads
            // would say so for every archive.
            if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::debug!(archive = %key, error = %e, "stale multipart uploads not listed");
            } else {
                tracing::warn!(archive = %key, error = %e, "stale multipart uploads not listed (left to the bucket's lifecycle rule for incomplete uploads)");
            }
            return;
        }
    };
    for (k, upload) in found.into_iter().filter(|(k, _)| k == key) {
        match store.abort_multipart(&k, &upload).await {
            Ok(()) => {
                tracing::info!(archive = %key, upload = %upload.0, "aborted a stale multipart upload of an interrupted run")
            }
            Err(e) => {
                tracing::warn!(archive = %key, upload = %upload.0, error = %e, "stale multipart upload not aborted")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::dead::DeadReason;

    fn member(name: &str, size: u64) -> PlannedMember {
        PlannedMember {
            name: name.into(),
            key: format!("p/{name}"),
            size,
            etag: Some(format!("e{name}")),
            mtime_ns: None,
            storage_class: None,
            version_id: None,
        }
    }

    fn entry(m: &PlannedMember) -> IndexEntry {
        IndexEntry {
            name: m.name.clone(),
            bucket: String::new(),
            key: m.key.clone(),
            version_id: None,
            header_offset: 0,
            data_offset: 512,
            size: m.size,
            etag: m.etag.clone(),
            crc64nvme: String::new(),
            mtime_ns: None,
            storage_class: None,
            content_type: None,
            metadata: Default::default(),
            tags: Default::default(),
            zstd: None,
        }
    }

    #[test]
    fn the_plan_minus_recorded_dead_letters_is_complete() {
        let plan = vec![member("a", 1), member("b", 2), member("c", 3)];
        let all: Vec<IndexEntry> = plan.iter().map(entry).collect();
        assert!(as_planned(&plan, &all, &[]));
        let index = vec![all[0].clone(), all[2].clone()];
        let b = DeadLetter::new("p/b", 2, Some("eb"), DeadReason::NotFound, "gone");
        assert!(as_planned(&plan, &index, std::slice::from_ref(&b)));
        // Missing without a record, a record of another object, a record
        // of the same key with another ETag, or one too many: not complete.
        assert!(!as_planned(&plan, &index, &[]));
        let c = DeadLetter::new("p/c", 3, Some("ec"), DeadReason::NotFound, "gone");
        assert!(!as_planned(&plan, &index, std::slice::from_ref(&c)));
        let b2 = DeadLetter::new("p/b", 2, Some("other"), DeadReason::NotFound, "gone");
        assert!(!as_planned(&plan, &index, &[b2]));
        assert!(!as_planned(&plan, &index, &[b.clone(), b.clone()]));
        assert!(as_planned(&plan, &all[..1], &[b.clone(), c]));
        // Out of plan order.
        assert!(!as_planned(&plan, &[all[2].clone(), all[0].clone()], &[b]));
    }
}
