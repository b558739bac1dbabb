//! Writing a byte range of a file with `O_DIRECT` where the filesystem
//! allows it.
//!
//! A large download written through the page cache costs a copy into fresh
//! page-cache pages and, later, the writeback of every one of them: many
//! times the kernel CPU of the same bytes written with `O_DIRECT` from one
//! reused buffer (figures: docs/BENCHMARKS.md, "Notes from the code"). [`RangeWriter`]
//! gathers the chunks of a range into an aligned buffer and writes whole
//! aligned blocks straight to the device; the unaligned head and tail of the
//! range (which may share a block with a neighbouring range) go through the
//! page cache, as does everything on a filesystem that refuses `O_DIRECT`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Bytes gathered before one direct write (a multiple of any page size).
const BUF: usize = 1 << 20;

/// Offsets, lengths and buffer addresses of direct writes are multiples of
/// this: 4 KiB (the largest logical block size in use) or the page size if
/// larger, so that a page the neighbouring range writes through the page
/// cache never holds a block written directly.
fn align() -> usize {
    rustix::param::page_size().max(4096)
}

/// Aligned buffers kept for the next writers: a fresh one costs a page
/// fault per 4 KiB on first touch.
#[derive(Debug, Default)]
pub(crate) struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// Buffers kept idle at most (one per part in flight is plenty).
    const KEEP: usize = 16;

    fn take(&self) -> Vec<u8> {
        let pooled = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        pooled.unwrap_or_else(|| vec![0u8; BUF + align()])
    }

    fn give(&self, buf: Vec<u8>) {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < Self::KEEP && buf.len() == BUF + align() {
            pool.push(buf);
        }
    }
}

/// Writes the bytes of one range of a file, in order, from a start offset.
#[derive(Debug)]
pub(crate) struct RangeWriter {
    pool: Arc<BufferPool>,
    buffered: File,
    /// The same file opened with `O_DIRECT`; `None` when refused.
    direct: Option<File>,
    /// `BUF + align` bytes; the gathered bytes start at `buf[base]`, an
    /// aligned address.
    buf: Vec<u8>,
    align: usize,
    base: usize,
    /// Bytes gathered, and the file offset of the first.
    len: usize,
    pending_at: u64,
    /// The file offset of the next byte.
    at: u64,
}

impl RangeWriter {
    /// Writes `file` (already created) from `start`; with `direct`, whole
    /// aligned blocks bypass the page cache if the filesystem allows it.
    pub(crate) fn open(path: &Path, buffered: File, start: u64, direct: bool, pool: &Arc<BufferPool>) -> Self {
        let direct = direct
            .then(|| {
                OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                    .open(path)
                    .ok()
            })
            .flatten();
        let (buf, base) = if direct.is_some() {
            let buf = pool.take();
            let base = buf.as_ptr().align_offset(align());
            (buf, base)
        } else {
            (Vec::new(), 0)
        };
        RangeWriter {
            pool: pool.clone(),
            buffered,
            direct,
            buf,
            align: align(),
            base,
            len: 0,
            pending_at: start,
            at: start,
        }
    }

    /// `fdatasync`: the bytes written either way, and the file's size.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.buffered.sync_data()
    }

    /// The file offset of the next byte (the start plus the bytes written).
    pub(crate) fn offset(&self) -> u64 {
        self.at
    }

    /// Whether whole blocks still go straight to the device.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Writes the next bytes of the range.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.direct.is_none() {
            self.buffered.write_all_at(data, self.at)?;
            self.at += data.len() as u64;
            return Ok(());
        }
        while !data.is_empty() {
            if self.len == 0 {
                let misaligned = (self.at % self.align as u64) as usize;
                if misaligned != 0 {
                    // The head, up to the first block boundary.
                    let n = (self.align - misaligned).min(data.len());
                    self.buffered.write_all_at(&data[..n], self.at)?;
                    self.at += n as u64;
                    data = &data[n..];
                    continue;
                }
                self.pending_at = self.at;
            }
            let n = (BUF - self.len).min(data.len());
            let from = self.base + self.len;
            self.buf[from..from + n].copy_from_slice(&data[..n]);
            self.len += n;
            self.at += n as u64;
            data = &data[n..];
            if self.len == BUF {
                self.flush_blocks(BUF)?;
            }
        }
        Ok(())
    }

    /// Writes what is gathered: whole blocks directly, the tail buffered.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        let blocks = self.len / self.align * self.align;
        if blocks > 0 {
            self.flush_blocks(blocks)?;
        }
        // What is left is the tail, now at the start of the buffer.
        if self.len > 0 {
            let tail = &self.buf[self.base..self.base + self.len];
            self.buffered.write_all_at(tail, self.pending_at)?;
            self.pending_at += self.len as u64;
            self.len = 0;
        }
        Ok(())
    }

    /// Writes the first `n` gathered bytes (a multiple of `align`) and keeps
    /// the rest; a refused direct write is made buffered, and so is every
    /// later one.
    fn flush_blocks(&mut self, n: usize) -> io::Result<()> {
        let bytes = &self.buf[self.base..self.base + n];
        let done = match &self.direct {
            Some(f) => match f.write_all_at(bytes, self.pending_at) {
                Ok(()) => true,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    tracing::debug!(error = %e, "O_DIRECT write refused; writing through the page cache");
                    self.direct = None;
                    false
                }
                Err(e) => return Err(e),
            },
            None => false,
        };
        if !done {
            self.buffered.write_all_at(bytes, self.pending_at)?;
        }
        self.buf.copy_within(self.base + n..self.base + self.len, self.base);
        self.len -= n;
        self.pending_at += n as u64;
        Ok(())
    }
}

impl Drop for RangeWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.pool.give(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Ranges written in odd chunk sizes, from aligned and unaligned
    /// offsets, land byte-exact next to each other, with and without
    /// O_DIRECT (tmpfs and some filesystems refuse it: then everything is
    /// buffered, which must be just as exact).
    #[test]
    fn ranges_land_exactly_in_any_chunking() -> io::Result<()> {
        // Beside the sources (not /tmp, which may be tmpfs: no O_DIRECT).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR"))?;
        let pool = Arc::default();
        for direct in [true, false] {
            let path = dir.path().join(format!("f-{direct}"));
            let body = data(3 * BUF + 12_345);
            // Three ranges, boundaries not on blocks; written out of order.
            let bounds = [0, BUF + 100, 2 * BUF + 4096 + 7, body.len()];
            for r in [2, 0, 1] {
                let (s, e) = (bounds[r], bounds[r + 1]);
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                let mut w = RangeWriter::open(&path, f, s as u64, direct, &pool);
                for (i, chunk) in body[s..e].chunks(7_000 + 4_096 * r + 1).enumerate() {
                    if i % 2 == 0 {
                        w.write(chunk)?;
                    } else {
                        // Also split a chunk across a buffer boundary.
                        let (a, b) = chunk.split_at(chunk.len() / 3);
                        w.write(a)?;
                        w.write(b)?;
                    }
                }
                w.finish()?;
                if direct && crate::local::on_local_disk(dir.path()) {
                    assert!(w.is_direct(), "O_DIRECT was refused on a local disk");
                }
            }
            let got = std::fs::read(&path)?;
            let first_bad = got.iter().zip(body.iter()).position(|(a, b)| a != b);
            assert!(
                got.len() == body.len() && first_bad.is_none(),
                "direct={direct}: {} bytes, {} expected, first difference at {first_bad:?}",
                got.len(),
                body.len()
            );
        }
        Ok(())
    }

    /// On a local disk filesystem, whole blocks really go direct.
    #[test]
    fn direct_writes_are_used_where_the_filesystem_allows() -> io::Result<()> {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR"))?;
        let path = dir.path().join("f");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut w = RangeWriter::open(&path, f, 0, true, &Arc::default());
        let body = data(2 * BUF + 5);
        w.write(&body)?;
        w.finish()?;
        if crate::local::on_local_disk(dir.path()) {
            assert!(w.is_direct(), "O_DIRECT was refused on a local disk");
        }
        assert!(std::fs::read(&path)? == body, "the file differs from what was written");
        Ok(())
    }
}
