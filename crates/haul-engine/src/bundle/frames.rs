//! Compressed archives (`--compress zstd`, `<run>-NNNNNN.tar.zst`): the
//! frame layout shared by the writer and the readers, so one member still
//! reads back with one ranged GET.
//!
//! The archive is a sequence of independent zstd frames whose
//! decompression is exactly the tar a plain archive holds up to its
//! end-of-archive blocks (`zstd -dc A.tar.zst | tar -x` reads it), then one
//! zstd *skippable* frame — ignored by every zstd decoder — holding the
//! [`FramedLocator`]:
//!
//! ```text
//! [frame: members…]… [frame(s): index member, two zero blocks] [skippable: locator]
//! ```
//!
//! * A frame holds at most [`FRAME_TAR_BYTES`] of tar. Members are packed
//!   into the open frame while they fit; a member that does not fit starts
//!   a new frame, and one larger than a frame is cut into consecutive
//!   frames (its last one may hold the next members too). So memory stays
//!   bounded by one frame on both sides, tiny objects still compress
//!   together, and a member's data lies in a run of consecutive frames.
//! * Each index entry's [`FrameSpan`] names that run: its compressed offset
//!   and length in the archive, the frame count, and the member's data
//!   offset inside the run's decompressed bytes. A reader GETs exactly that
//!   range, decompresses (concatenated frames are one zstd stream), skips,
//!   takes the member's size and checks its CRC64NVME.
//! * The index member starts a frame of its own; the locator says where
//!   its frames are, so one suffix-range GET (usually holding the
//!   compressed index too) opens the archive. Frames carry zstd's content
//!   checksum; the archive's full-object CRC64NVME covers the compressed bytes.

use std::io::{self, BufRead, Read};

use serde::{Deserialize, Serialize};
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use super::format::{Locator, LocatorError, MAX_INDEX_BYTES};

/// Tar bytes per frame (the writer's cap).
pub const FRAME_TAR_BYTES: u64 = 1 << 20;
/// The largest offset of a member's data in its first frame a reader
/// accepts (a frame written by another writer may be larger than ours,
/// but a hostile index must not make a read decompress without bound).
pub const MAX_FRAME_SKIP: u64 = 16 << 20;
/// The most frames a verification records (a haul archive of 1 GiB has
/// about a thousand): a hostile stream of tiny frames cannot make it
/// allocate without bound.
pub const MAX_FRAMES: usize = 1 << 20;
/// The zstd level archives are written with.
pub const ZSTD_LEVEL: i32 = 3;
/// The skippable-frame magic number of the locator frame (zstd reserves
/// 0x184D2A50..=0x184D2A5F), little endian.
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// The first bytes of the locator frame's payload.
pub const FRAMED_MAGIC: &[u8; 8] = b"HAULZIX1";
/// The locator frame's format version.
pub const FRAMED_VERSION: u32 = 1;
/// The locator frame's length: 8 bytes of skippable-frame header and an
/// 80-byte payload.
pub const FRAMED_LEN: u64 = 88;

/// How archives are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar (`.tar`).
    #[default]
    None,
    /// zstd frames (`.tar.zst`), see the module documentation.
    Zstd,
}

impl Compression {
    /// What the archive's name ends with after `.tar`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
        }
    }

    /// The archive's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Compression::None => "application/x-tar",
            Compression::Zstd => "application/zstd",
        }
    }

    /// `none` or `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }
}

/// The consecutive frames that hold a member's data (in the index as `zstd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameSpan {
    /// Offset of the first frame in the archive.
    pub offset: u64,
    /// Compressed bytes of the frames.
    pub len: u64,
    /// Offset of the member's data in the frames' decompressed bytes.
    pub skip: u64,
    /// Number of frames.
    pub frames: u32,
}

impl FrameSpan {
    /// The byte range of the frames in the archive.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset.saturating_add(self.len)
    }
}

/// One zstd frame of an archive, as written or as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset in the archive.
    pub offset: u64,
    /// Compressed length.
    pub len: u64,
    /// Offset of its first decompressed byte in the tar.
    pub tar_start: u64,
    /// Decompressed length (0 for a skippable frame).
    pub tar_len: u64,
}

impl Frame {
    pub fn tar_end(&self) -> u64 {
        self.tar_start + self.tar_len
    }
}

/// The span of `frames` (consecutive, in order) covering the data at tar
/// offsets `data..data + size` (for an empty member, the byte before
/// `data`: its header's last). None while the frames do not reach it.
pub fn span_of(frames: &[Frame], data: u64, size: u64) -> Option<FrameSpan> {
    let (lo, hi) = if size == 0 {
        (data.checked_sub(1)?, data)
    } else {
        (data, data + size)
    };
    // Frames are in tar order: binary searches, not a walk.
    let first = frames.partition_point(|f| f.tar_end() <= lo);
    if frames.get(first)?.tar_start > lo {
        return None;
    }
    let last = first + frames[first..].partition_point(|f| f.tar_end() < hi);
    frames.get(last)?;
    let (a, z) = (frames[first], frames[last]);
    Some(FrameSpan {
        offset: a.offset,
        len: z.offset + z.len - a.offset,
        skip: data - a.tar_start,
        frames: u32::try_from(last - first + 1).ok()?,
    })
}

/// The locator of a compressed archive, in the skippable frame that ends it.
///
/// Payload layout (little endian): magic `HAULZIX1` (8), version u32 (4),
/// the index member's data: tar offset u64, length u64, CRC64NVME u64;
/// member count u64; the index's [`FrameSpan`]: offset u64, len u64, skip
/// u64, frames u32; the tar's length u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramedLocator {
    /// The index member's data in tar coordinates, as a plain locator says.
    pub tar: Locator,
    /// The frames holding the index's data.
    pub index: FrameSpan,
    /// Decompressed bytes of all frames (the whole tar).
    pub tar_len: u64,
}

impl FramedLocator {
    /// The skippable frame, [`FRAMED_LEN`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FRAMED_LEN as usize);
        b.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        b.extend_from_slice(&((FRAMED_LEN - 8) as u32).to_le_bytes());
        b.extend_from_slice(FRAMED_MAGIC);
        b.extend_from_slice(&FRAMED_VERSION.to_le_bytes());
        for v in [
            self.tar.index_offset,
            self.tar.index_len,
            self.tar.index_crc,
            self.tar.members,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.index.offset, self.index.len, self.index.skip] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.index.frames.to_le_bytes());
        b.extend_from_slice(&self.tar_len.to_le_bytes());
        b
    }

    /// Whether `tail` (an archive's last bytes) ends with a haul locator frame.
    pub fn is_framed(tail: &[u8]) -> bool {
        let n = FRAMED_LEN as usize;
        tail.len() >= n && {
            let f = &tail[tail.len() - n..];
            f[..4] == SKIPPABLE_MAGIC.to_le_bytes() && &f[8..16] == FRAMED_MAGIC
        }
    }

    /// Reads the locator frame at the end of `tail`, the last bytes of an
    /// archive of `archive_size` bytes.
    pub fn decode(tail: &[u8], archive_size: u64) -> Result<Self, LocatorError> {
        if !Self::is_framed(tail) {
            return Err(LocatorError::Magic);
        }
        let f = &tail[tail.len() - FRAMED_LEN as usize..];
        let u64_at = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&f[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let u32_at = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&f[at..at + 4]);
            u32::from_le_bytes(w)
        };
        if u32_at(4) != (FRAMED_LEN - 8) as u32 {
            return Err(LocatorError::Size(u32_at(4) as usize + 8));
        }
        let version = u32_at(16);
        if version != FRAMED_VERSION {
            return Err(LocatorError::Version(version));
        }
        let l = FramedLocator {
            tar: Locator {
                index_offset: u64_at(20),
                index_len: u64_at(28),
                index_crc: u64_at(36),
                members: u64_at(44),
            },
            index: FrameSpan {
                offset: u64_at(52),
                len: u64_at(60),
                skip: u64_at(68),
                frames: u32_at(76),
            },
            tar_len: u64_at(80),
        };
        let frames_end = l.index.offset.checked_add(l.index.len);
        let tar_end = l.tar.index_offset.checked_add(l.tar.index_len);
        match (frames_end, tar_end) {
            (Some(fe), Some(te))
                if fe.saturating_add(FRAMED_LEN) <= archive_size
                    && te <= l.tar_len
                    && l.tar.index_len <= MAX_INDEX_BYTES
                    && l.index.skip <= MAX_FRAME_SKIP =>
            {
                Ok(l)
            }
            _ => Err(LocatorError::Range),
        }
    }
}

/// The members an archive's last bytes (plain locator block or locator
/// frame) count, if they are a locator.
pub fn tail_members(tail: &[u8], archive_size: u64) -> Option<u64> {
    if FramedLocator::is_framed(tail) {
        return FramedLocator::decode(tail, archive_size).ok().map(|l| l.tar.members);
    }
    Locator::decode(tail, archive_size).ok().map(|l| l.members)
}

/// Decompresses the frames of a span held in memory and returns `len`
/// bytes from the span's skip: how an index is read.
pub fn decode_span(frames: &[u8], skip: u64, len: u64) -> io::Result<Vec<u8>> {
    let want = skip.saturating_add(len);
    let mut dec = zstd::stream::read::Decoder::with_buffer(frames)?.take(want);
    let mut out = Vec::with_capacity(usize::try_from(want.min(MAX_INDEX_BYTES)).unwrap_or(0));
    dec.read_to_end(&mut out)?;
    if (out.len() as u64) < want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the frames hold {} bytes, {want} expected", out.len()),
        ));
    }
    Ok(out.split_off(skip as usize))
}

/// Decompresses a span as its compressed bytes arrive, without holding
/// more than one output chunk: `skip` bytes dropped, then `want` bytes
/// given, then nothing (the rest of the last frame is not decoded).
pub struct SpanDecoder {
    dec: Decoder<'static>,
    skip: u64,
    want: u64,
    /// The last output filled its buffer: the decoder may hold more.
    full: bool,
}

impl std::fmt::Debug for SpanDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanDecoder")
            .field("skip", &self.skip)
            .field("want", &self.want)
            .finish_non_exhaustive()
    }
}

/// Decompressed bytes handed out at once.
const OUT_CHUNK: usize = 256 * 1024;

impl SpanDecoder {
    pub fn new(skip: u64, want: u64) -> io::Result<Self> {
        Ok(SpanDecoder {
            dec: Decoder::new()?,
            skip,
            want,
            full: false,
        })
    }

    /// Bytes still to give.
    pub fn remaining(&self) -> u64 {
        self.want
    }

    /// Whether the decoder may give more without more input.
    pub fn has_buffered(&self) -> bool {
        self.full && self.want > 0
    }

    /// Decodes from `input[*pos..]` (advancing `pos`) into at most one
    /// chunk; an empty result means more input is needed.
    pub fn step(&mut self, input: &[u8], pos: &mut usize) -> io::Result<Vec<u8>> {
        // No more room than the span still needs: a small member's read
        // allocates little.
        let room = self.skip.saturating_add(self.want).clamp(1, OUT_CHUNK as u64) as usize;
        let mut out = vec![0u8; room];
        let mut inb = InBuffer::around(&input[*pos..]);
        let written = {
            let mut outb = OutBuffer::around(&mut out[..]);
            self.dec.run(&mut inb, &mut outb)?;
            outb.pos()
        };
        *pos += inb.pos();
        self.full = written == room;
        out.truncate(written);
        let drop = self.skip.min(out.len() as u64) as usize;
        self.skip -= drop as u64;
        let mut out = out.split_off(drop);
        out.truncate(self.want.min(out.len() as u64) as usize);
        self.want -= out.len() as u64;
        Ok(out)
    }
}

/// A reader of a whole compressed archive that gives its decompressed tar
/// and records every frame it passes (the locator frame too, with no
/// output): how verification checks the index's spans.
pub struct FrameScan<R> {
    inner: R,
    dec: Decoder<'static>,
    consumed: u64,
    produced: u64,
    start: (u64, u64),
    in_frame: bool,
    frames: Vec<Frame>,
}

impl<R> std::fmt::Debug for FrameScan<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameScan")
            .field("consumed", &self.consumed)
            .field("frames", &self.frames.len())
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> FrameScan<R> {
    pub fn new(inner: R) -> io::Result<Self> {
        Ok(FrameScan {
            inner,
            dec: Decoder::new()?,
            consumed: 0,
            produced: 0,
            start: (0, 0),
            in_frame: false,
            frames: Vec::new(),
        })
    }

    /// The frames passed so far.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Compressed bytes read so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }
}

impl<R: BufRead> Read for FrameScan<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let input = self.inner.fill_buf()?;
            if input.is_empty() {
                if self.in_frame {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the archive ends inside the zstd frame at {}", self.start.0),
                    ));
                }
                return Ok(0);
            }
            let mut inb = InBuffer::around(input);
            let mut outb = OutBuffer::around(&mut buf[..]);
            let hint = self.dec.run(&mut inb, &mut outb).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the zstd frame at {}: {e}", self.start.0),
                )
            })?;
            let (read, written) = (inb.pos(), outb.pos());
            self.inner.consume(read);
            self.consumed += read as u64;
            self.produced += written as u64;
            self.in_frame = true;
            if hint == 0 {
                if self.frames.len() >= MAX_FRAMES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("more than {MAX_FRAMES} zstd frames: not an archive haul wrote"),
                    ));
                }
                self.frames.push(Frame {
                    offset: self.start.0,
                    len: self.consumed - self.start.0,
                    tar_start: self.start.1,
                    tar_len: self.produced - self.start.1,
                });
                self.start = (self.consumed, self.produced);
                self.in_frame = false;
            }
            if written > 0 {
                return Ok(written);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u64, len: u64, tar_start: u64, tar_len: u64) -> Frame {
        Frame {
            offset,
            len,
            tar_start,
            tar_len,
        }
    }

    #[test]
    fn spans_cover_the_frames_a_member_lies_in() {
        let f = [
            frame(0, 100, 0, 1024),
            frame(100, 50, 1024, 1024),
            frame(150, 70, 2048, 512),
        ];
        let one = span_of(&f, 512, 10).map(|s| (s.offset, s.len, s.skip, s.frames));
        assert_eq!(one, Some((0, 100, 512, 1)));
        let two = span_of(&f, 512, 1024).map(|s| (s.offset, s.len, s.skip, s.frames));
        assert_eq!(two, Some((0, 150, 512, 2)));
        let three = span_of(&f, 1000, 1100).map(|s| (s.offset, s.len, s.skip, s.frames));
        assert_eq!(three, Some((0, 220, 1000, 3)));
        // An empty member is placed by its header's last byte.
        let empty = span_of(&f, 1024, 0).map(|s| (s.offset, s.skip));
        assert_eq!(empty, Some((0, 1024)));
        assert_eq!(span_of(&f, 2048, 600), None, "not reached yet");
    }

    #[test]
    fn the_locator_frame_reads_back_and_refuses_what_is_not_one() {
        let l = FramedLocator {
            tar: Locator {
                index_offset: 2048,
                index_len: 300,
                index_crc: 7,
                members: 3,
            },
            index: FrameSpan {
                offset: 900,
                len: 200,
                skip: 512,
                frames: 1,
            },
            tar_len: 3584,
        };
        let mut tail = vec![1u8; 10];
        tail.extend(l.encode());
        assert_eq!(tail.len() as u64, 10 + FRAMED_LEN);
        assert_eq!(FramedLocator::decode(&tail, 1200), Ok(l));
        assert_eq!(tail_members(&tail, 1200), Some(3));
        assert_eq!(FramedLocator::decode(&tail, 1100), Err(LocatorError::Range));
        let mut bad = tail.clone();
        let at = bad.len() - FRAMED_LEN as usize + 16;
        bad[at] = 9;
        assert_eq!(FramedLocator::decode(&bad, 1200), Err(LocatorError::Version(9)));
        assert_eq!(FramedLocator::decode(&[0u8; 512], 1200), Err(LocatorError::Magic));
        // zstd skips the frame: a stream of a frame and it decodes to the frame's bytes.
        let mut stream = zstd::bulk::compress(b"hello", 3).unwrap_or_default();
        stream.extend(l.encode());
        assert_eq!(zstd::decode_all(&stream[..]).ok().as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn the_scan_records_frames_and_the_span_decoder_slices() -> io::Result<()> {
        let (a, b) = (vec![7u8; 3000], (0..5000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>());
        let mut stream = zstd::bulk::compress(&a, 3)?;
        let first = stream.len() as u64;
        stream.extend(zstd::bulk::compress(&b, 3)?);
        let mut scan = FrameScan::new(&stream[..])?;
        let mut out = Vec::new();
        scan.read_to_end(&mut out)?;
        assert_eq!(out.len(), 8000);
        assert_eq!(scan.frames()[0], frame(0, first, 0, 3000));
        assert_eq!(scan.frames()[1].tar_start, 3000);
        assert_eq!(decode_span(&stream, 2990, 20)?, out[2990..3010].to_vec());
        let mut d = SpanDecoder::new(2990, 20)?;
        let (mut pos, mut got) = (0, Vec::new());
        while d.remaining() > 0 && (pos < stream.len() || d.has_buffered()) {
            got.extend(d.step(&stream, &mut pos)?);
        }
        assert_eq!(got, out[2990..3010].to_vec());
        Ok(())
    }
}
