//! The bundle format, shared by the writer and every reader: what an
//! archive's index says about each member, and the locator that lets a
//! reader find the index with one suffix-range GET.
//!
//! An archive is a standard tar (ustar headers, PAX records where needed)
//! in this order:
//!
//! ```text
//! [member]… [index member `INDEX_MEMBER`] [two zero blocks] [locator block]
//! ```
//!
//! The index is JSON lines, one [`IndexEntry`] per member in archive order,
//! stored both as the archive's last member and as the sidecar
//! `<archive>.index` (zstd-compressed when it starts with zstd's magic).
//! The locator is one 512-byte block after tar's end-of-archive marker, so
//! tar readers stop before it; see [`Locator`]. Members that became dead
//! letters while the archive was written are in `<archive>.dead`
//! (`super::dead::DEAD_SUFFIX`), not in the index.
//!
//! A compressed archive (`--compress zstd`, `<archive>.tar.zst`) holds the
//! same tar up to its end-of-archive blocks as zstd frames, and ends with
//! a skippable frame holding a [`super::frames::FramedLocator`] instead of
//! the locator block; each entry then also records the frames its data
//! lies in ([`IndexEntry::zstd`]), so a member is still one ranged GET.
//! Offsets in entries and locators are always tar offsets (of the
//! decompressed stream). See [`super::frames`].
//!
//! A sidecar larger than [`SIDECAR_ZSTD_OVER`] is written zstd-compressed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The tar block size.
pub const BLOCK: u64 = 512;
/// The name of the index member inside an archive.
pub const INDEX_MEMBER: &str = ".haul/index.jsonl";
/// The sidecar index's suffix, after the archive's key.
pub const SIDECAR_SUFFIX: &str = ".index";
/// The first bytes of a locator block.
pub const LOCATOR_MAGIC: &[u8; 8] = b"HAULIDX1";
/// The locator block's format version.
pub const LOCATOR_VERSION: u32 = 1;
/// The largest index a reader accepts (an archive's index is about 400
/// bytes a member: 10,000 members take 4 MiB), so a hostile locator or
/// sidecar cannot make a reader allocate without bound.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;
/// A sidecar index larger than this is stored zstd-compressed (readers
/// tell by zstd's magic number).
pub const SIDECAR_ZSTD_OVER: usize = 256 << 10;

/// What the index records of one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// The member's name in the tar (the key relative to the source prefix).
    pub name: String,
    /// The source bucket (empty for a local source).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bucket: String,
    /// The source key.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Offset of the member's first header block (its PAX header, if any).
    pub header_offset: u64,
    /// Offset of the member's first data byte.
    pub data_offset: u64,
    /// Data bytes.
    pub size: u64,
    /// The source's ETag, without quotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// CRC64NVME of the data, computed while streaming (base64, as S3 writes it).
    pub crc64nvme: String,
    /// The source's LastModified, as nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i128>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// In a compressed archive: the zstd frames holding the data (absent
    /// in a plain archive's index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zstd: Option<super::frames::FrameSpan>,
}

impl IndexEntry {
    /// The byte range of the member's data in the tar (in a compressed
    /// archive, of the decompressed stream).
    pub fn data_range(&self) -> std::ops::Range<u64> {
        self.data_offset..self.data_offset + self.size
    }
}

/// Where the index lies in an archive: the archive's last 512-byte block.
///
/// Layout (little endian): magic `HAULIDX1` (8), version u32 (4), index
/// data offset u64 (8), index length u64 (8), CRC64NVME of the index bytes
/// u64 (8), member count u64 (8), then zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locator {
    /// Offset of the index member's data.
    pub index_offset: u64,
    /// Length of the index member's data.
    pub index_len: u64,
    /// CRC64NVME of the index member's data.
    pub index_crc: u64,
    /// Members in the archive, the index not counted.
    pub members: u64,
}

/// Why a block is not a locator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocatorError {
    #[error("the archive's last block is {0} bytes, not 512")]
    Size(usize),
    #[error("no haul index locator at the archive's end (not a haul bundle, or truncated)")]
    Magic,
    #[error("index locator version {0} is not supported (1 is)")]
    Version(u32),
    #[error("the index locator points outside the archive, or at an index larger than 256 MiB")]
    Range,
}

impl Locator {
    /// The 512-byte block.
    pub fn encode(&self) -> [u8; BLOCK as usize] {
        let mut b = [0u8; BLOCK as usize];
        b[..8].copy_from_slice(LOCATOR_MAGIC);
        b[8..12].copy_from_slice(&LOCATOR_VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.index_offset.to_le_bytes());
        b[20..28].copy_from_slice(&self.index_len.to_le_bytes());
        b[28..36].copy_from_slice(&self.index_crc.to_le_bytes());
        b[36..44].copy_from_slice(&self.members.to_le_bytes());
        b
    }

    /// Reads a locator block of an archive of `archive_size` bytes.
    pub fn decode(block: &[u8], archive_size: u64) -> Result<Self, LocatorError> {
        if block.len() != BLOCK as usize {
            return Err(LocatorError::Size(block.len()));
        }
        if &block[..8] != LOCATOR_MAGIC {
            return Err(LocatorError::Magic);
        }
        let u64_at = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&block[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let mut v = [0u8; 4];
        v.copy_from_slice(&block[8..12]);
        let version = u32::from_le_bytes(v);
        if version != LOCATOR_VERSION {
            return Err(LocatorError::Version(version));
        }
        let l = Locator {
            index_offset: u64_at(12),
            index_len: u64_at(20),
            index_crc: u64_at(28),
            members: u64_at(36),
        };
        match l
            .index_offset
            .checked_add(l.index_len)
            .and_then(|end| end.checked_add(BLOCK))
        {
            Some(end) if end <= archive_size && l.index_len <= MAX_INDEX_BYTES => Ok(l),
            _ => Err(LocatorError::Range),
        }
    }
}

/// Tar padding after `len` data bytes.
pub fn padding(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locator_reads_back_and_refuses_what_is_not_one() {
        let l = Locator {
            index_offset: 1024,
            index_len: 300,
            index_crc: 0xdead_beef_0123_4567,
            members: 2,
        };
        let b = l.encode();
        assert_eq!(Locator::decode(&b, 4096), Ok(l));
        assert_eq!(Locator::decode(&b, 1024 + 300), Err(LocatorError::Range));
        // Offsets that overflow, or an index too large to read, are refused
        // without a panic.
        for (offset, len) in [(u64::MAX - 10, 5), (10, u64::MAX - 10), (0, MAX_INDEX_BYTES + 1)] {
            let hostile = Locator {
                index_offset: offset,
                index_len: len,
                ..l
            };
            assert_eq!(Locator::decode(&hostile.encode(), u64::MAX), Err(LocatorError::Range));
        }
        assert_eq!(Locator::decode(&[0u8; 512], 4096), Err(LocatorError::Magic));
        assert_eq!(Locator::decode(&b[..100], 4096), Err(LocatorError::Size(100)));
        let mut v2 = b;
        v2[8] = 2;
        assert_eq!(Locator::decode(&v2, 4096), Err(LocatorError::Version(2)));
    }

    #[test]
    fn padding_fills_to_the_block() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
