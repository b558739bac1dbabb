//! Writing one archive ([`write_archive`]): the members of a
//! [`BundleUnit`] read through a bounded window of concurrent conditional
//! GETs, emitted in plan order as tar (header, data, padding) straight
//! into the destination's multipart upload, then the index member, tar's
//! end (two zero blocks) and the locator block; then the sidecar index.
//! With `--compress zstd` the same tar goes through zstd frames
//! ([`super::sink`], [`super::frames`]).
//!
//! After completion the archive's size must equal the bytes written, and
//! its full-object CRC64NVME (when the destination reports one) the CRC
//! combined while streaming. A member that cannot be read is a dead letter
//! and the archive goes on without it. An archive already complete at the
//! destination (its sidecar lists exactly the planned members and its
//! locator reads back, members that were dead letters aside) is skipped;
//! anything else is written again from the start, after the stale
//! multipart uploads at its key are aborted (`resume`). Dead letters are
//! recorded next to the archive (`<archive>.dead`) before its sidecar.

use futures::stream::{self, StreamExt};
use haul_store::checksum::crc64_to_b64;
use haul_store::{DynStore, ErrorKind, Key, Op, PutOptions, StoreError};
use serde::{Deserialize, Serialize};

use super::dead::{DeadLetter, DeadReason};
use super::emit::{Emitted, Emitter};
use super::fetch::{fetch, Fetched};
use super::format::{IndexEntry, INDEX_MEMBER, SIDECAR_SUFFIX, SIDECAR_ZSTD_OVER};
use super::frames::ZSTD_LEVEL;
use super::plan::{BundleOptions, BundleUnit};
use super::resume::{abort_stale, existing, record_dead};
use super::sink::ArchiveOut;
use super::tar::{member_header, Stat, DEFAULT_MODE};
use super::{BundleRunError, Task};
use crate::transfer::Transfer;

/// The content type of plain archives (`application/zstd` for compressed ones).
pub const ARCHIVE_CONTENT_TYPE: &str = "application/x-tar";
/// The content type of sidecar indexes.
pub const INDEX_CONTENT_TYPE: &str = "application/x-ndjson";

/// What became of one archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveOutcome {
    /// The archive's name (`<run>-000001.tar`).
    pub name: String,
    /// Its key at the destination.
    pub key: String,
    /// Members written (the index not counted).
    pub members: u64,
    /// The archive's size.
    pub bytes: u64,
    /// Data bytes of the members.
    pub data_bytes: u64,
    /// The archive's full-object CRC64NVME (base64), when known (always
    /// for one written now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    /// Parts (1 for an archive written with one PUT).
    pub parts: u32,
    /// Found complete at the destination: not written again.
    pub skipped: bool,
    /// Members left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead: Vec<DeadLetter>,
}

/// Where archives go.
#[derive(Debug, Clone)]
pub struct Destination {
    pub store: DynStore,
    /// The destination prefix (`DST_PREFIX/`), archives directly under it.
    pub prefix: Key,
    /// Storage class of archives and sidecars (`--storage-class`).
    pub storage_class: Option<String>,
}

impl Destination {
    /// The key of the object `name` under the prefix.
    pub fn key(&self, name: &str) -> Result<Key, StoreError> {
        self.prefix.join(name)
    }
}

/// The sidecar index's name of an archive.
pub fn sidecar_name(archive: &str) -> String {
    format!("{archive}{SIDECAR_SUFFIX}")
}

/// Writes the archive of `unit` from `src` to `dst` (or finds it complete
/// there); see the module documentation. Member reads draw on
/// `transfer`'s byte budget; parts on its part slots and cancel.
pub async fn write_archive(
    src: &DynStore,
    dst: &Destination,
    unit: &BundleUnit,
    opts: &BundleOptions,
    transfer: &Transfer,
) -> Result<ArchiveOutcome, BundleRunError> {
    let at = |source: StoreError| BundleRunError::Archive {
        archive: unit.name.clone(),
        source,
    };
    let key = dst.key(&unit.name).map_err(at)?;
    let sidecar = dst.key(&sidecar_name(&unit.name)).map_err(at)?;
    if let Some(done) = existing(dst, &key, &sidecar, unit).await {
        return Ok(done);
    }
    abort_stale(&dst.store, &key).await;
    let put = PutOptions {
        content_type: Some(opts.compress.content_type().into()),
        storage_class: dst.storage_class.clone(),
        ..Default::default()
    };
    let emitter = Emitter::new(&dst.store, key.clone(), put, opts.part_size, transfer.limits());
    let mut out = ArchiveOut::new(emitter, opts.compress).map_err(at)?;
    let (index, dead, data_bytes) = match stream_members(src, &mut out, unit, opts, transfer).await {
        Ok(w) => w,
        Err(e) => {
            out.abort().await;
            return Err(at(e));
        }
    };
    let emitted = out.finish().await.map_err(at)?;
    verify(&dst.store, &key, &emitted).await.map_err(at)?;
    let lines = sidecar_bytes(index_lines(&index).map_err(BundleRunError::Json)?);
    let side = PutOptions {
        content_type: Some(INDEX_CONTENT_TYPE.into()),
        storage_class: dst.storage_class.clone(),
        checksums: haul_store::Checksums::md5(&haul_store::checksum::md5_hex(&lines)),
        ..Default::default()
    };
    record_dead(dst, unit, &dead).await.map_err(at)?;
    dst.store.put(&sidecar, lines.into(), &side).await.map_err(at)?;
    Ok(ArchiveOutcome {
        name: unit.name.clone(),
        key: key.as_str().to_string(),
        members: index.len() as u64,
        bytes: emitted.bytes,
        data_bytes,
        crc64nvme: Some(crc64_to_b64(emitted.crc)),
        parts: emitted.parts,
        skipped: false,
        dead,
    })
}

/// The sidecar's bytes: the index's JSON lines, zstd-compressed when
/// larger than [`SIDECAR_ZSTD_OVER`] (and smaller so).
fn sidecar_bytes(lines: Vec<u8>) -> Vec<u8> {
    if lines.len() <= SIDECAR_ZSTD_OVER {
        return lines;
    }
    match zstd::bulk::compress(&lines, ZSTD_LEVEL) {
        Ok(packed) if packed.len() < lines.len() => packed,
        _ => lines,
    }
}

/// The index as JSON lines.
pub fn index_lines(index: &[IndexEntry]) -> Result<Vec<u8>, serde_json::Error> {
    let mut v = Vec::new();
    for e in index {
        serde_json::to_writer(&mut v, e)?;
        v.push(b'\n');
    }
    Ok(v)
}

type Streamed = (Vec<IndexEntry>, Vec<DeadLetter>, u64);

/// Emits every member, the index member, tar's end and the locator.
async fn stream_members(
    src: &DynStore,
    out: &mut ArchiveOut,
    unit: &BundleUnit,
    opts: &BundleOptions,
    transfer: &Transfer,
) -> Result<Streamed, StoreError> {
    let budget = transfer.limits().budget;
    let with_tags = opts.tags;
    let bucket = src.capabilities().bucket.clone();
    let mut reads = stream::iter(unit.members.iter().cloned())
        .map(|m| {
            // Each read is a task of its own: reads progress while parts
            // are sent; dropping the stream (an error) stops them.
            let (src, budget) = (src.clone(), budget.clone());
            let (key, size, etag) = (m.key.clone(), m.size, m.etag.clone());
            let task = Task(tokio::spawn(async move { fetch(&src, m, &budget, with_tags).await }));
            async move {
                task.await.unwrap_or_else(|e| {
                    Err(DeadLetter::new(
                        &key,
                        size,
                        etag.as_deref(),
                        DeadReason::Failed,
                        format!("the read task failed: {e}"),
                    ))
                })
            }
        })
        .buffered(opts.window.max(1));
    let (mut dead, mut data_bytes) = (Vec::new(), 0u64);
    let mut newest = 0u64;
    while let Some(next) = out.drive(reads.next()).await? {
        let f: Fetched = match next {
            Ok(f) => f,
            Err(d) => {
                tracing::info!(key = %d.key, reason = %d.reason, "left out of {}: {}", unit.name, d.message);
                dead.push(d);
                continue;
            }
        };
        let m = &f.member;
        let modified = m
            .mtime_ns
            .and_then(|ns| u64::try_from(ns).ok())
            .map(|ns| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
            .or(f.meta.last_modified);
        let st = Stat::of(modified, &f.meta.metadata);
        newest = newest.max(st.mtime_s);
        let header = member_header(&m.name, m.size, &st);
        data_bytes += m.size;
        let entry = IndexEntry {
            name: m.name.clone(),
            bucket: bucket.clone(),
            key: m.key.clone(),
            version_id: m.version_id.clone(),
            size: m.size,
            etag: m.etag.clone().or_else(|| f.meta.etag.clone()),
            crc64nvme: crc64_to_b64(f.crc),
            mtime_ns: modified
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i128),
            storage_class: m.storage_class.clone(),
            content_type: f.meta.content_type.clone(),
            metadata: f.meta.metadata.clone(),
            tags: f.tags.iter().cloned().collect(),
            header_offset: 0,
            data_offset: 0,
            zstd: None,
        };
        out.member(&header, &f.data, f.crc, entry).await?;
    }
    let index = out.members_done().await?;
    let lines = index_lines(&index)
        .map_err(|e| StoreError::new(Op::Put, INDEX_MEMBER, ErrorKind::Other, format!("index: {e}")))?;
    let st = Stat {
        mode: DEFAULT_MODE,
        mtime_s: newest,
        ..Default::default()
    };
    let header = member_header(INDEX_MEMBER, lines.len() as u64, &st);
    out.index(&header, &lines, index.len() as u64).await?;
    Ok((index, dead, data_bytes))
}

/// Checks the completed archive: its size, and its CRC64NVME when the
/// destination keeps one.
async fn verify(dst: &DynStore, key: &Key, emitted: &Emitted) -> Result<(), StoreError> {
    let meta = dst.head(key).await?;
    let fail = |m: String| Err(StoreError::new(Op::Verify, key.as_str(), ErrorKind::Integrity, m));
    if meta.size != emitted.bytes {
        return fail(format!(
            "the archive is {} bytes, {} were written",
            meta.size, emitted.bytes
        ));
    }
    if let Some(crc) = meta.checksums.full_crc64() {
        if crc != emitted.crc {
            return fail(format!(
                "the archive's CRC64NVME is {}, the bytes written have {}",
                crc64_to_b64(crc),
                crc64_to_b64(emitted.crc)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::index::{is_zstd, parse_index};
    use super::*;

    fn entry(i: u64) -> IndexEntry {
        IndexEntry {
            name: format!("logs/2026/11/{i:06}.json"),
            bucket: "b".into(),
            key: format!("src/logs/2026/11/{i:06}.json"),
            version_id: None,
            header_offset: i * 2048,
            data_offset: i * 2048 + 512,
            size: 1000,
            etag: Some(format!("{i:032x}")),
            crc64nvme: "AAAAAAAAAAA=".into(),
            mtime_ns: Some(1_700_000_000_000_000_000),
            storage_class: None,
            content_type: Some("application/json".into()),
            metadata: Default::default(),
            tags: Default::default(),
            zstd: None,
        }
    }

    #[test]
    fn a_large_sidecar_is_zstd_and_reads_back_a_small_one_is_plain() -> Result<(), Box<dyn std::error::Error>> {
        let small: Vec<IndexEntry> = (0..10).map(entry).collect();
        let lines = index_lines(&small)?;
        assert_eq!(sidecar_bytes(lines.clone()), lines);
        let large: Vec<IndexEntry> = (0..5000).map(entry).collect();
        let lines = index_lines(&large)?;
        assert!(lines.len() > SIDECAR_ZSTD_OVER);
        let side = sidecar_bytes(lines.clone());
        assert!(is_zstd(&side) && side.len() < lines.len() / 4, "{} bytes", side.len());
        assert_eq!(parse_index(&side, "x.tar.zst.index")?, large);
        Ok(())
    }
}
