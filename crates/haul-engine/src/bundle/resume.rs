//! Resuming a run: an archive already complete at the destination is not
//! written again. Complete means: the sidecar index lists exactly the
//! planned members (same names, source keys, sizes and — when listed —
//! ETags), and the archive's last block is a locator that agrees with it
//! (the archive was completed, not cut short). Three requests (HEAD,
//! sidecar GET, one suffix GET); anything missing, unreadable or different
//! — a member that became a dead letter included — means the archive is
//! written again from the start.

use bytes::Bytes;
use futures::TryStreamExt;
use haul_store::{DynStore, GetOpts, Key};

use super::format::BLOCK;
use super::index::parse_index;
use super::plan::BundleUnit;
use super::write::ArchiveOutcome;

async fn read_all(store: &DynStore, key: &Key, opts: GetOpts) -> Option<Bytes> {
    let g = store.get_with(key, opts).await.ok()?;
    let chunks: Vec<Bytes> = g.body.try_collect().await.ok()?;
    Some(chunks.concat().into())
}

/// The outcome of `unit`'s archive at `key` when it is complete.
pub(super) async fn existing(dst: &DynStore, key: &Key, sidecar: &Key, unit: &BundleUnit) -> Option<ArchiveOutcome> {
    let meta = dst.head(key).await.ok()?;
    let index = parse_index(&read_all(dst, sidecar, GetOpts::default()).await?, sidecar.as_str()).ok()?;
    let same = unit.members.len() == index.len()
        && unit.members.iter().zip(&index).all(|(m, e)| {
            m.name == e.name && m.key == e.key && m.size == e.size && (m.etag.is_none() || m.etag == e.etag)
        });
    if !same {
        tracing::info!(archive = %key, "present but not as planned: written again");
        return None;
    }
    let opts = GetOpts {
        if_match: meta.etag.clone(),
        ..GetOpts::suffix(BLOCK)
    };
    let block = read_all(dst, key, opts).await?;
    // A plain locator block, or a compressed archive's locator frame.
    if super::frames::tail_members(&block, meta.size)? != index.len() as u64 {
        return None;
    }
    tracing::info!(archive = %key, "already complete: skipped");
    Some(ArchiveOutcome {
        name: unit.name.clone(),
        key: key.as_str().to_string(),
        members: index.len() as u64,
        bytes: meta.size,
        data_bytes: index.iter().map(|e| e.size).sum(),
        crc64nvme: meta.checksums.full_crc64().map(haul_store::checksum::crc64_to_b64),
        parts: meta.parts_count.unwrap_or(1),
        skipped: true,
        dead: Vec::new(),
    })
}
