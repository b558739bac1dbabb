//! Parsing an index: JSON lines of [`IndexEntry`], plain or zstd-compressed
//! (told apart by zstd's magic number), read line by line so an error names
//! the line, and every entry checked to describe a possible byte range
//! before anyone computes with its offsets.

use std::io::{BufRead, BufReader, Read};

use super::error::{BundleError, BundleResult};
use super::format::{IndexEntry, BLOCK};

/// The first four bytes of a zstd frame.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Whether `bytes` start like a zstd frame.
pub fn is_zstd(bytes: &[u8]) -> bool {
    bytes.starts_with(&ZSTD_MAGIC)
}

/// Index entries read one line at a time; errors name the line (from 1).
pub struct IndexLines<R> {
    reader: R,
    source_name: String,
    line: u64,
    buf: String,
    failed: bool,
}

impl<R> std::fmt::Debug for IndexLines<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexLines")
            .field("source_name", &self.source_name)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> IndexLines<R> {
    /// Entries of the JSON lines `reader` yields; `source_name` (the
    /// archive or sidecar key) is named in errors.
    pub fn new(reader: R, source_name: impl Into<String>) -> Self {
        IndexLines {
            reader,
            source_name: source_name.into(),
            line: 0,
            buf: String::new(),
            failed: false,
        }
    }

    fn err(&self, reason: impl Into<String>) -> BundleError {
        BundleError::IndexLine {
            source_name: self.source_name.clone(),
            line: self.line,
            reason: reason.into(),
        }
    }
}

impl<R: BufRead> Iterator for IndexLines<R> {
    type Item = BundleResult<IndexEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.buf.clear();
            self.line += 1;
            match self.reader.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    // A read error (bad UTF-8, a damaged zstd frame) ends the index.
                    self.failed = true;
                    return Some(Err(self.err(e.to_string())));
                }
            }
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<IndexEntry>(text)
                .map_err(|e| self.err(e.to_string()))
                .and_then(|e| check_entry(&e).map(|()| e).map_err(|r| self.err(r)));
            return Some(parsed);
        }
    }
}

/// An entry's offsets describe a possible member: its data after its
/// header, its end representable.
fn check_entry(e: &IndexEntry) -> Result<(), String> {
    if e.data_offset.checked_add(e.size).is_none() {
        return Err(format!("member {:?}: data offset + size overflows", e.name));
    }
    if e.header_offset.checked_add(BLOCK).is_none_or(|h| h > e.data_offset) {
        return Err(format!(
            "member {:?}: data offset {} is not after header offset {}",
            e.name, e.data_offset, e.header_offset
        ));
    }
    if let Some(z) = &e.zstd {
        if z.offset.checked_add(z.len).is_none() || z.frames == 0 || z.len == 0 {
            return Err(format!("member {:?}: its zstd frames are not a byte range", e.name));
        }
        if z.skip > super::frames::MAX_FRAME_SKIP || z.skip > e.data_offset {
            return Err(format!(
                "member {:?}: its data starts {} bytes into its zstd frames, more than a frame holds",
                e.name, z.skip
            ));
        }
    }
    Ok(())
}

/// Entries of an index held in memory, zstd-compressed or not.
pub fn index_lines<'a>(bytes: &'a [u8], source_name: &str) -> BundleResult<IndexLines<Box<dyn BufRead + 'a>>> {
    let reader: Box<dyn BufRead + 'a> = if is_zstd(bytes) {
        let dec = zstd::stream::read::Decoder::new(bytes).map_err(|e| BundleError::IndexLine {
            source_name: source_name.to_string(),
            line: 0,
            reason: format!("zstd: {e}"),
        })?;
        // At most MAX_INDEX_BYTES decompressed: a zstd bomb stops there.
        let dec = dec.take(super::format::MAX_INDEX_BYTES);
        Box::new(BufReader::new(Box::new(dec) as Box<dyn Read + 'a>))
    } else {
        Box::new(bytes)
    };
    Ok(IndexLines::new(reader, source_name))
}

/// Every entry of an index held in memory; the first bad line fails it.
pub fn parse_index(bytes: &[u8], source_name: &str) -> BundleResult<Vec<IndexEntry>> {
    index_lines(bytes, source_name)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, data_offset: u64, size: u64) -> IndexEntry {
        IndexEntry {
            name: name.into(),
            bucket: String::new(),
            key: name.into(),
            version_id: None,
            header_offset: data_offset.saturating_sub(512),
            data_offset,
            size,
            etag: None,
            crc64nvme: "AAAAAAAAAAA=".into(),
            mtime_ns: None,
            storage_class: None,
            content_type: None,
            metadata: Default::default(),
            tags: Default::default(),
            zstd: None,
        }
    }

    #[test]
    fn lines_parse_plain_or_zstd_and_errors_name_the_line() -> Result<(), Box<dyn std::error::Error>> {
        let mut text = String::new();
        for e in [entry("a", 512, 3), entry("b", 1536, 0)] {
            text.push_str(&serde_json::to_string(&e)?);
            text.push('\n');
        }
        let plain = parse_index(text.as_bytes(), "x.tar")?;
        assert_eq!(plain.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let packed = zstd::encode_all(text.as_bytes(), 3)?;
        assert!(is_zstd(&packed));
        assert_eq!(parse_index(&packed, "x.tar.index")?, plain);

        let bad = format!("{text}\n{{\"name\": 1}}\n");
        let err = parse_index(bad.as_bytes(), "x.tar.index")
            .err()
            .ok_or("a bad line parsed")?;
        let msg = err.to_string();
        assert!(msg.starts_with("index \"x.tar.index\" line 4: "), "{msg}");

        let overflow = serde_json::to_string(&entry("big", u64::MAX, 2))?;
        let msg = parse_index(overflow.as_bytes(), "i")
            .err()
            .ok_or("overflow parsed")?
            .to_string();
        assert!(msg.contains("member \"big\": data offset + size overflows"), "{msg}");
        let early = serde_json::to_string(&IndexEntry {
            header_offset: 512,
            ..entry("early", 512, 1)
        })?;
        let msg = parse_index(early.as_bytes(), "i")
            .err()
            .ok_or("bad offsets parsed")?
            .to_string();
        assert!(msg.contains("is not after header offset 512"), "{msg}");
        // A compressed entry's frames: a byte range, the data near their start.
        let span = |offset, len, skip| {
            Some(crate::bundle::frames::FrameSpan {
                offset,
                len,
                skip,
                frames: 1,
            })
        };
        let good = IndexEntry {
            zstd: span(0, 90, 512),
            ..entry("z", 512, 5)
        };
        assert_eq!(
            parse_index(serde_json::to_string(&good)?.as_bytes(), "i")?,
            vec![good.clone()]
        );
        for (bad, why) in [
            (span(u64::MAX, 2, 512), "not a byte range"),
            (span(0, 0, 512), "not a byte range"),
            (span(0, 90, 1 << 30), "more than a frame holds"),
        ] {
            let e = IndexEntry {
                zstd: bad,
                ..good.clone()
            };
            let msg = parse_index(serde_json::to_string(&e)?.as_bytes(), "i")
                .err()
                .ok_or("a hostile span parsed")?
                .to_string();
            assert!(msg.contains(why), "{msg}");
        }
        Ok(())
    }
}
