//! The tar stream of one archive on its way into the [`Emitter`]: plain
//! (tar bytes as they are, the locator block at the end) or cut into zstd
//! frames ([`super::frames`]: members packed into frames of at most
//! [`FRAME_TAR_BYTES`], each frame compressed on a blocking thread while
//! the parts already cut upload, the locator in a skippable frame).
//!
//! Members go in whole ([`ArchiveOut::member`]); their index entries come
//! back complete ([`ArchiveOut::members_done`]) once the frames holding
//! them are written — an entry waits at most for its frame to close, so
//! memory is one frame and its members, whatever the archive's size.

use std::collections::VecDeque;

use haul_store::{ErrorKind, Op, StoreError};

use super::emit::{Emitted, Emitter};
use super::format::{padding, IndexEntry, Locator, BLOCK};
use super::frames::{span_of, Compression, Frame, FramedLocator, FRAME_TAR_BYTES, ZSTD_LEVEL};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Enough zeros for any padding and tar's two end-of-archive blocks.
const ZEROS: [u8; 3 * BLOCK as usize] = [0; 3 * BLOCK as usize];

/// An archive's tar stream.
pub(super) struct ArchiveOut {
    emit: Emitter,
    zstd: Option<Framing>,
    done: Vec<IndexEntry>,
}

/// The open frame and what waits for it.
struct Framing {
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Tar bytes of the open frame.
    buf: Vec<u8>,
    /// Tar bytes so far.
    tar: u64,
    /// Tar offset of the open frame.
    frame_start: u64,
    /// Frames closed that entries still waiting may lie in.
    closed: Vec<Frame>,
    /// Entries whose last frame is still open, in archive order.
    pending: VecDeque<IndexEntry>,
}

impl ArchiveOut {
    pub(super) fn new(emit: Emitter, compression: Compression) -> Result<Self> {
        let zstd = match compression {
            Compression::None => None,
            Compression::Zstd => {
                let fail = |e: std::io::Error| {
                    StoreError::new(Op::Put, emit.key().as_str(), ErrorKind::Other, format!("zstd: {e}"))
                };
                let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(fail)?;
                c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))
                    .map_err(fail)?;
                Some(Framing {
                    compressor: Some(c),
                    buf: Vec::new(),
                    tar: 0,
                    frame_start: 0,
                    closed: Vec::new(),
                    pending: VecDeque::new(),
                })
            }
        };
        Ok(ArchiveOut {
            emit,
            zstd,
            done: Vec::new(),
        })
    }

    /// Runs `fut` while the parts in flight progress.
    pub(super) async fn drive<T>(&mut self, fut: impl std::future::Future<Output = T>) -> Result<T> {
        self.emit.drive(fut).await
    }

    /// Appends a member (its header, data whose CRC64NVME is `crc`, and
    /// padding); `entry`'s offsets (and frames) are filled in.
    pub(super) async fn member(&mut self, header: &[u8], data: &[u8], crc: u64, mut entry: IndexEntry) -> Result<()> {
        let size = data.len() as u64;
        let pad = &ZEROS[..padding(size) as usize];
        let Some(z) = self.zstd.as_mut() else {
            entry.header_offset = self.emit.offset();
            self.emit.write(header, None).await?;
            entry.data_offset = self.emit.offset();
            self.emit.write(data, Some(crc)).await?;
            self.emit.write(pad, None).await?;
            self.done.push(entry);
            return Ok(());
        };
        let tar_len = (header.len() + data.len() + pad.len()) as u64;
        if !z.buf.is_empty() && z.buf.len() as u64 + tar_len > FRAME_TAR_BYTES {
            self.close_frame().await?;
        }
        entry.header_offset = self.tar();
        self.append(header).await?;
        entry.data_offset = self.tar();
        self.append(data).await?;
        self.append(pad).await?;
        if let Some(z) = self.zstd.as_mut() {
            z.pending.push_back(entry);
            z.resolve(&mut self.done, true);
        }
        Ok(())
    }

    /// Closes the open frame: every member's entry, complete, in order.
    pub(super) async fn members_done(&mut self) -> Result<Vec<IndexEntry>> {
        if self.zstd.is_some() {
            self.close_frame().await?;
            let stuck = self.zstd.as_mut().and_then(|z| {
                z.resolve(&mut self.done, true);
                z.pending.front().map(|e| e.name.clone())
            });
            if let Some(name) = stuck {
                return Err(self.fail(format!("member {name:?} is in no closed frame")));
            }
        }
        Ok(std::mem::take(&mut self.done))
    }

    /// Appends the index member (`header`, then `lines`), tar's end and
    /// the locator (a block, or a skippable frame).
    pub(super) async fn index(&mut self, header: &[u8], lines: &[u8], members: u64) -> Result<()> {
        let len = lines.len() as u64;
        let index_crc = haul_store::checksum::crc64(lines);
        let end = &ZEROS[..(padding(len) + 2 * BLOCK) as usize];
        if self.zstd.is_none() {
            self.emit.write(header, None).await?;
            let index_offset = self.emit.offset();
            self.emit.write(lines, Some(index_crc)).await?;
            self.emit.write(end, None).await?;
            let locator = Locator {
                index_offset,
                index_len: len,
                index_crc,
                members,
            };
            return self.emit.write(&locator.encode(), None).await;
        }
        // The index starts a frame of its own (members_done closed the last).
        self.close_frame().await?;
        self.append(header).await?;
        let index_offset = self.tar();
        self.append(lines).await?;
        self.append(end).await?;
        self.close_frame().await?;
        let z = self.zstd.as_ref().ok_or_else(|| self.fail("not framed".into()))?;
        let index =
            span_of(&z.closed, index_offset, len).ok_or_else(|| self.fail("the index is in no closed frame".into()))?;
        let locator = FramedLocator {
            tar: Locator {
                index_offset,
                index_len: len,
                index_crc,
                members,
            },
            index,
            tar_len: z.tar,
        };
        self.emit.write(&locator.encode(), None).await
    }

    /// Sends what is left and completes the archive.
    pub(super) async fn finish(self) -> Result<Emitted> {
        self.emit.finish().await
    }

    /// Stops: an upload in progress is aborted.
    pub(super) async fn abort(self) {
        self.emit.abort().await
    }

    fn fail(&self, what: String) -> StoreError {
        StoreError::new(Op::Put, self.emit.key().as_str(), ErrorKind::Other, what)
    }

    fn tar(&self) -> u64 {
        self.zstd.as_ref().map_or(self.emit.offset(), |z| z.tar)
    }

    /// Adds tar bytes to the open frame, closing it each time it is full.
    async fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let Some(z) = self.zstd.as_mut() else {
                return self.emit.write(bytes, None).await;
            };
            let n = (FRAME_TAR_BYTES as usize - z.buf.len()).min(bytes.len());
            z.buf.extend_from_slice(&bytes[..n]);
            z.tar += n as u64;
            bytes = &bytes[n..];
            if z.buf.len() as u64 >= FRAME_TAR_BYTES {
                self.close_frame().await?;
            }
        }
        Ok(())
    }

    /// Compresses the open frame (on a blocking thread, the parts in
    /// flight driven meanwhile) and writes it.
    async fn close_frame(&mut self) -> Result<()> {
        let key = self.emit.key().as_str().to_string();
        let fail = |what: String| StoreError::new(Op::Put, key.as_str(), ErrorKind::Other, what);
        let Some(z) = self.zstd.as_mut() else {
            return Ok(());
        };
        if z.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut z.buf);
        let mut c = z.compressor.take().ok_or_else(|| fail("zstd: no compressor".into()))?;
        let task = tokio::task::spawn_blocking(move || {
            let r = c.compress(&buf);
            (c, buf, r)
        });
        let (c, mut buf, compressed) = self
            .emit
            .drive(task)
            .await?
            .map_err(|e| fail(format!("the compressing thread failed: {e}")))?;
        let compressed = compressed.map_err(|e| fail(format!("zstd: {e}")))?;
        let offset = self.emit.offset();
        self.emit.write(&compressed, None).await?;
        if let Some(z) = self.zstd.as_mut() {
            let tar_len = buf.len() as u64;
            buf.clear();
            z.buf = buf;
            z.compressor = Some(c);
            z.closed.push(Frame {
                offset,
                len: compressed.len() as u64,
                tar_start: z.frame_start,
                tar_len,
            });
            z.frame_start = z.tar;
            z.resolve(&mut self.done, false);
        }
        Ok(())
    }
}

impl Framing {
    /// Moves the entries whose frames are all closed to `done`; with
    /// `trim` (between members), forgets the frames no waiting entry lies in.
    fn resolve(&mut self, done: &mut Vec<IndexEntry>, trim: bool) {
        while let Some(e) = self.pending.front() {
            let Some(span) = span_of(&self.closed, e.data_offset, e.size) else {
                break;
            };
            if let Some(mut e) = self.pending.pop_front() {
                e.zstd = Some(span);
                done.push(e);
            }
        }
        if trim {
            let keep_from = self
                .pending
                .front()
                .map_or(self.tar, |e| e.data_offset.saturating_sub(1));
            let gone = self.closed.iter().take_while(|f| f.tar_end() <= keep_from).count();
            self.closed.drain(..gone);
        }
    }
}
