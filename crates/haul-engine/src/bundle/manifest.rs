//! The run manifest on its way out. Lines are spooled to two anonymous
//! temp files as archives and large objects finish — archive lines in
//! sequence order, large-object lines in plan order (key order for a
//! listing) — each through a reorder window of the lines that finished
//! before an earlier one; at the end the archive file then the large file
//! are streamed to the destination (one PUT when smaller than a part, else
//! a multipart upload). Memory holds the window, never the manifest: the
//! run stops starting work while the window is full ([`MAX_WAITING`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};

use haul_store::{Key, PutOptions, StoreError};
use tokio::io::AsyncReadExt;

use super::emit::Emitter;
use super::run::ManifestLine;
use super::write::{Destination, INDEX_CONTENT_TYPE};
use crate::transfer::Limits;

/// Lines that may wait for an earlier one before the run stops starting
/// archives and copies (each line is a few hundred bytes).
pub(super) const MAX_WAITING: usize = 4096;

/// Bytes read from a spool at a time while uploading.
const CHUNK: usize = 1 << 20;

/// One part of the manifest: lines numbered from `next`, written in order.
struct Ordered {
    file: BufWriter<File>,
    next: u64,
    waiting: BTreeMap<u64, Option<Vec<u8>>>,
}

impl Ordered {
    fn new(first: u64) -> io::Result<Self> {
        Ok(Ordered {
            file: BufWriter::new(tempfile::tempfile()?),
            next: first,
            waiting: BTreeMap::new(),
        })
    }

    /// Item `n` finished, with its line (none: it has no line, e.g. a
    /// failed archive or a large object that became a dead letter).
    fn done(&mut self, n: u64, line: Option<&ManifestLine>) -> io::Result<()> {
        let bytes = match line {
            Some(l) => {
                let mut v = serde_json::to_vec(l).map_err(io::Error::other)?;
                v.push(b'\n');
                Some(v)
            }
            None => None,
        };
        self.waiting.insert(n, bytes);
        while let Some(line) = self.waiting.remove(&self.next) {
            if let Some(l) = line {
                self.file.write_all(&l)?;
            }
            self.next += 1;
        }
        Ok(())
    }

    /// The file, rewound, once every item has finished.
    fn into_file(self) -> io::Result<File> {
        if let Some(n) = self.waiting.keys().next() {
            return Err(io::Error::other(format!(
                "manifest line {n} is waiting for line {}, which never finished",
                self.next
            )));
        }
        let mut f = self.file.into_inner().map_err(|e| e.into_error())?;
        f.rewind()?;
        Ok(f)
    }
}

/// The manifest being collected.
pub(super) struct ManifestSpool {
    archives: Ordered,
    large: Ordered,
}

impl ManifestSpool {
    pub(super) fn new() -> io::Result<Self> {
        Ok(ManifestSpool {
            archives: Ordered::new(1)?,
            large: Ordered::new(0)?,
        })
    }

    /// Archive `seq` (from 1) finished; `line` is none when it failed.
    pub(super) fn archive(&mut self, seq: u64, line: Option<&ManifestLine>) -> io::Result<()> {
        self.archives.done(seq, line)
    }

    /// The large object planned `n`th (from 0) finished.
    pub(super) fn large(&mut self, n: u64, line: Option<&ManifestLine>) -> io::Result<()> {
        self.large.done(n, line)
    }

    /// Lines waiting for an earlier one.
    pub(super) fn waiting(&self) -> usize {
        self.archives.waiting.len() + self.large.waiting.len()
    }

    /// Uploads the manifest to `key`: archives, then large objects.
    pub(super) async fn upload(
        self,
        dst: &Destination,
        key: &Key,
        part_size: u64,
        limits: Limits,
    ) -> Result<(), StoreError> {
        let io = |e: io::Error| StoreError::io(haul_store::Op::Put, key.as_str(), e);
        let files = [
            self.archives.into_file().map_err(io)?,
            self.large.into_file().map_err(io)?,
        ];
        super::resume::abort_stale(&dst.store, key).await;
        let put = PutOptions {
            content_type: Some(INDEX_CONTENT_TYPE.into()),
            ..Default::default()
        };
        let mut out = Emitter::new(&dst.store, key.clone(), put, part_size, limits);
        let mut buf = vec![0u8; CHUNK];
        for f in files {
            let mut f = tokio::fs::File::from_std(f);
            loop {
                let n = match f.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        out.abort().await;
                        return Err(io(e));
                    }
                };
                if let Err(e) = out.write(&buf[..n], None).await {
                    out.abort().await;
                    return Err(e);
                }
            }
        }
        out.finish().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn line(n: u64) -> ManifestLine {
        ManifestLine::External {
            source: format!("s{n}"),
            key: format!("k{n}"),
            bytes: n,
            etag: None,
        }
    }

    #[test]
    fn lines_come_out_in_order_whatever_order_they_finish_in() -> io::Result<()> {
        let mut o = Ordered::new(1)?;
        o.done(3, Some(&line(3)))?;
        o.done(2, None)?;
        assert_eq!(o.waiting.len(), 2);
        o.done(1, Some(&line(1)))?;
        assert!(o.waiting.is_empty());
        o.done(4, Some(&line(4)))?;
        let mut text = String::new();
        o.into_file()?.read_to_string(&mut text)?;
        let got: Vec<ManifestLine> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        assert_eq!(got, vec![line(1), line(3), line(4)]);
        let mut gap = Ordered::new(0)?;
        gap.done(1, Some(&line(1)))?;
        assert!(
            gap.into_file().is_err(),
            "a line never finished is an error, not a silent gap"
        );
        Ok(())
    }
}
