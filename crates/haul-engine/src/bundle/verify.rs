//! Checking an archive against its index (`haul verify --bundle`): one
//! sequential read of the whole archive through the `tar` crate's reader,
//! every member's header offset, data offset, size, name and CRC64NVME
//! compared with its index entry, the index member with the locator, and
//! the end of the archive (end-of-archive blocks, then the locator), and
//! the sidecar index (when there is one) with the archive's. A compressed
//! archive is read through its zstd frames, each recorded, and every
//! entry's frames (and the index's, and the locator frame) checked against
//! them. And
//! the index against the source objects (`--against`): each still there
//! with the same size and ETag.

use std::io::{self, BufRead, Read};

use crc_fast::{CrcAlgorithm, Digest};
use futures::stream::{self, StreamExt, TryStreamExt};
use haul_store::checksum::{crc64_from_b64, crc64_to_b64};
use haul_store::{Key, ObjectStore};
use serde::Serialize;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::error::{BundleError, BundleResult};
use super::format::{padding, IndexEntry, Locator, BLOCK, INDEX_MEMBER};
use super::frames::{span_of, Frame, FrameScan, FRAMED_LEN};
use super::index::is_zstd;
use super::read::{open_archive_with, Archive, IndexFrom, IndexSource};

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// The member (empty: the archive as a whole).
    pub member: String,
    pub what: String,
}

/// What a verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// The archive (or, against the source, the source store's URL).
    pub archive: String,
    /// Members checked.
    pub members: u64,
    /// Member bytes read and checked.
    pub bytes: u64,
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, member: &str, what: impl Into<String>) {
        self.problems.push(VerifyProblem {
            member: member.to_string(),
            what: what.into(),
        });
    }
}

/// Reads the archive once and checks it against its index and locator.
/// The index is the locator's; when that cannot be read (reported as a
/// problem), the sidecar's. An error only when no index can be read (the
/// locator's error then).
pub async fn verify_archive(store: &dyn ObjectStore, key: &Key) -> BundleResult<VerifyReport> {
    let mut report = VerifyReport {
        archive: key.to_string(),
        ..Default::default()
    };
    let archive = match open_archive_with(store, key, IndexFrom::Locator).await {
        Ok(a) => a,
        Err(BundleError::Store(e)) => return Err(BundleError::Store(e)),
        Err(e) => match open_archive_with(store, key, IndexFrom::Sidecar).await {
            Ok(a) => {
                report.problem("", format!("the index through the locator: {e}"));
                a
            }
            // No index at all: the locator's failure says why.
            Err(_) => return Err(e),
        },
    };
    if archive.source == IndexSource::Locator {
        // The sidecar, when there is one, must say what the archive says.
        match open_archive_with(store, key, IndexFrom::Sidecar).await {
            Ok(side) if side.entries != archive.entries => {
                report.problem("", "the sidecar index differs from the index in the archive")
            }
            Ok(_) => {}
            Err(BundleError::Store(e)) if e.is_not_found() => {}
            Err(e) => report.problem("", format!("the sidecar index: {e}")),
        }
    }
    let got = store.get(key, None).await?;
    let bridge = SyncIoBridge::new(StreamReader::new(got.body.map_err(io::Error::other)));
    let checked = tokio::task::spawn_blocking(move || {
        let mut buffered = io::BufReader::with_capacity(256 * 1024, bridge);
        let zstd = archive.framed.is_some()
            || archive.entries.iter().any(|e| e.zstd.is_some())
            || buffered.fill_buf().is_ok_and(is_zstd);
        if !zstd {
            if let Some(rest) = walk(
                Counting {
                    inner: buffered,
                    pos: 0,
                },
                &archive,
                &mut report,
            ) {
                if let Err(e) = entries_end(rest, &archive, &mut report) {
                    report.problem("", format!("reading the archive's end: {e}"));
                }
            }
            return report;
        }
        let mut scan = match FrameScan::new(buffered) {
            Ok(s) => s,
            Err(e) => {
                report.problem("", format!("zstd: {e}"));
                return report;
            }
        };
        if let Some(rest) = walk(
            Counting {
                inner: &mut scan,
                pos: 0,
            },
            &archive,
            &mut report,
        ) {
            frames_end(rest, &mut report);
            check_frames(scan.frames(), scan.consumed(), &archive, &mut report);
        }
        report
    })
    .await
    .map_err(|e| BundleError::Malformed {
        archive: key.to_string(),
        what: format!("the verifying thread failed: {e}"),
    })?;
    Ok(checked)
}

/// After a compressed archive's first end-of-archive block: the second,
/// then nothing (the locator frame decompresses to nothing).
fn frames_end<R: Read>(mut r: Counting<R>, report: &mut VerifyReport) {
    let end_at = r.pos;
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) if rest.len() == BLOCK as usize && rest.iter().all(|b| *b == 0) => {}
        Ok(_) => report.problem(
            "",
            format!(
                "after the first end-of-archive block (at {end_at}) come {} bytes, not one zero block",
                rest.len()
            ),
        ),
        Err(e) => report.problem("", format!("reading the archive's end: {e}")),
    }
}

/// Each entry's frames (and the index's) against the frames the archive
/// holds; the locator frame last, ending the archive.
fn check_frames(frames: &[Frame], consumed: u64, archive: &Archive, report: &mut VerifyReport) {
    for e in &archive.entries {
        let found = span_of(frames, e.data_offset, e.size);
        match (e.zstd, found) {
            (Some(z), Some(f)) if z == f => {}
            (None, _) => report.problem(
                &e.name,
                "a compressed archive's member without zstd frames in the index",
            ),
            (Some(z), f) => report.problem(
                &e.name,
                format!("zstd frames {z:?} in the index, the archive's frames there are {f:?}"),
            ),
        }
    }
    if consumed != archive.size {
        report.problem(
            "",
            format!("{consumed} bytes of zstd frames, the archive has {}", archive.size),
        );
    }
    let Some(l) = &archive.framed else {
        return;
    };
    let found = span_of(frames, l.tar.index_offset, l.tar.index_len);
    if found != Some(l.index) {
        report.problem(
            INDEX_MEMBER,
            format!(
                "the locator puts the index in frames {:?}, the archive's are {found:?}",
                l.index
            ),
        );
    }
    let tar_len = frames.last().map_or(0, Frame::tar_end);
    let last = frames.last().map(|f| (f.offset, f.len, f.tar_len));
    if last != Some((archive.size.saturating_sub(FRAMED_LEN), FRAMED_LEN, 0)) || tar_len != l.tar_len {
        report.problem(
            "",
            format!(
                "the archive does not end with the locator frame after {} tar bytes (last frame {last:?}, {tar_len} tar bytes)",
                l.tar_len
            ),
        );
    }
}

/// A reader that counts the bytes it gave.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Walks the tar; the reader after tar's first end-of-archive block,
/// unless the walk had to stop.
fn walk<R: Read>(reader: Counting<R>, archive: &Archive, report: &mut VerifyReport) -> Option<Counting<R>> {
    let mut ar = tar::Archive::new(reader);
    let mut next_header = 0u64;
    let mut seen = 0usize;
    let mut index_seen = false;
    let entries = match ar.entries() {
        Ok(e) => e,
        Err(e) => {
            report.problem("", format!("not a tar: {e}"));
            return None;
        }
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                report.problem("", format!("tar headers stop parsing after offset {next_header}: {e}"));
                return None;
            }
        };
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let (header_at, data_at, size) = (entry.raw_header_position(), entry.raw_file_position(), entry.size());
        let crc = match crc_of(&mut entry) {
            Ok(c) => c,
            Err(e) => {
                report.problem(&name, format!("unreadable data: {e}"));
                return None;
            }
        };
        if let Some(want) = archive.entries.get(seen) {
            seen += 1;
            report.members += 1;
            report.bytes += size;
            let mut bad = |what: String| report.problem(&want.name, what);
            if name != want.name {
                bad(format!("the tar member here is {name:?}"));
            }
            if want.header_offset != next_header || header_at < want.header_offset {
                bad(format!(
                    "header offset {} in the index, the member's headers start at {next_header}",
                    want.header_offset
                ));
            }
            if want.data_offset != data_at {
                bad(format!(
                    "data offset {} in the index, {data_at} in the tar",
                    want.data_offset
                ));
            }
            if want.size != size {
                bad(format!("size {} in the index, {size} in the tar", want.size));
            }
            if crc64_from_b64(&want.crc64nvme) != Some(crc) {
                bad(format!(
                    "CRC64NVME {} in the index, the data's is {}",
                    want.crc64nvme,
                    crc64_to_b64(crc)
                ));
            }
            if !entry.header().entry_type().is_file() {
                bad("the tar member is not a regular file".into());
            }
        } else if name == INDEX_MEMBER && !index_seen {
            index_seen = true;
            if let Some(l) = &archive.locator {
                if (l.index_offset, l.index_len, l.index_crc) != (data_at, size, crc) {
                    report.problem(
                        INDEX_MEMBER,
                        format!(
                            "the index member is at {data_at} ({size} bytes, CRC {crc:016x}), \
                             the locator says {} ({} bytes, CRC {:016x})",
                            l.index_offset, l.index_len, l.index_crc
                        ),
                    );
                }
            }
        } else {
            report.problem(&name, "a tar member that is not in the index");
        }
        next_header = data_at + size + padding(size);
    }
    for missing in archive.entries.iter().skip(seen) {
        report.problem(&missing.name, "in the index, not in the tar");
    }
    if !index_seen {
        report.problem("", format!("no {INDEX_MEMBER} member"));
    }
    Some(ar.into_inner())
}

/// Checks what follows tar's first end-of-archive block: the second one,
/// then the locator, then nothing.
fn entries_end<R: Read>(mut r: Counting<R>, archive: &Archive, report: &mut VerifyReport) -> io::Result<()> {
    let end_at = r.pos;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)?;
    let want_len = 2 * BLOCK as usize;
    if rest.len() != want_len || rest[..BLOCK as usize].iter().any(|b| *b != 0) {
        report.problem(
            "",
            format!(
                "after the first end-of-archive block (at {end_at}) come {} bytes, not a zero block and the locator",
                rest.len()
            ),
        );
        return Ok(());
    }
    match Locator::decode(&rest[BLOCK as usize..], r.pos) {
        Ok(l) if Some(l) == archive.locator || archive.locator.is_none() => {}
        Ok(l) => report.problem(
            "",
            format!("the last block is {l:?}, the index was read through another"),
        ),
        Err(e) => report.problem("", format!("the last block: {e}")),
    }
    Ok(())
}

fn crc_of(r: &mut impl Read) -> io::Result<u64> {
    let mut d = Digest::new(CrcAlgorithm::Crc64Nvme);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(d.finalize());
        }
        d.update(&buf[..n]);
    }
}

/// Checks that each entry's source object still exists in `src` (the
/// bucket the archive was made from) with the size and ETag the index
/// recorded; HEADs `concurrency` at a time.
pub async fn verify_against(index: &[IndexEntry], src: &dyn ObjectStore, concurrency: usize) -> VerifyReport {
    let mut report = VerifyReport {
        archive: src.url(),
        ..Default::default()
    };
    // By index, not by reference: a closure over `&IndexEntry` is not
    // general enough for a spawned task's `Send` check.
    let mut checks = stream::iter(0..index.len())
        .map(|i| {
            let e = &index[i];
            async move { (e, check_source(e, src).await) }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((e, found)) = checks.next().await {
        report.members += 1;
        if let Err(what) = found {
            report.problem(&e.name, what);
        }
    }
    report
}

async fn check_source(e: &IndexEntry, src: &dyn ObjectStore) -> Result<(), String> {
    let key = Key::object(e.key.clone()).map_err(|err| format!("source key {:?}: {}", e.key, err.message))?;
    let meta = match src.head(&key).await {
        Ok(m) => m,
        Err(err) if err.is_not_found() => return Err(format!("source {:?} no longer exists", e.key)),
        Err(err) => return Err(format!("source {:?}: {err}", e.key)),
    };
    if meta.size != e.size {
        return Err(format!(
            "source {:?} is {} bytes, the index says {}",
            e.key, meta.size, e.size
        ));
    }
    match (&e.etag, &meta.etag) {
        (Some(want), Some(got)) if want != got => {
            Err(format!("source {:?} has ETag {got}, the index says {want}", e.key))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::frames::FrameSpan;
    use super::*;

    fn entry(name: &str, data_offset: u64, size: u64, zstd: Option<FrameSpan>) -> IndexEntry {
        IndexEntry {
            name: name.into(),
            bucket: String::new(),
            key: name.into(),
            version_id: None,
            header_offset: data_offset - 512,
            data_offset,
            size,
            etag: None,
            crc64nvme: "AAAAAAAAAAA=".into(),
            mtime_ns: None,
            storage_class: None,
            content_type: None,
            metadata: Default::default(),
            tags: Default::default(),
            zstd,
        }
    }

    fn span(offset: u64, len: u64, skip: u64, frames: u32) -> Option<FrameSpan> {
        Some(FrameSpan {
            offset,
            len,
            skip,
            frames,
        })
    }

    #[test]
    fn every_span_is_checked_against_the_frames_read() -> Result<(), Box<dyn std::error::Error>> {
        let frames = [
            Frame {
                offset: 0,
                len: 300,
                tar_start: 0,
                tar_len: 4096,
            },
            Frame {
                offset: 300,
                len: 200,
                tar_start: 4096,
                tar_len: 2048,
            },
        ];
        let archive = Archive {
            key: Key::object("a.tar.zst")?,
            size: 500,
            etag: None,
            locator: None,
            framed: None,
            source: IndexSource::Sidecar,
            entries: vec![
                entry("ok", 512, 100, span(0, 300, 512, 1)),
                entry("across", 2048, 3000, span(0, 500, 2048, 2)),
                entry("wrong", 4608, 10, span(300, 200, 500, 1)),
                entry("none", 5120, 10, None),
            ],
        };
        let mut report = VerifyReport::default();
        check_frames(&frames, 500, &archive, &mut report);
        let named: Vec<&str> = report.problems.iter().map(|p| p.member.as_str()).collect();
        assert_eq!(named, ["wrong", "none"], "{:?}", report.problems);
        assert!(report.problems[0].what.contains("zstd frames"), "{:?}", report.problems);
        let mut short = VerifyReport::default();
        check_frames(&frames, 400, &archive, &mut short);
        assert!(short
            .problems
            .iter()
            .any(|p| p.what.contains("400 bytes of zstd frames")));
        Ok(())
    }
}
