//! Reading a bundle through its index: finding the index (the locator in
//! the archive's last block, then the index's bytes, CRC64NVME checked; or
//! the sidecar `<archive>.index`), and reading one member with one ranged
//! GET, checked against the CRC64NVME the index records. A compressed
//! archive's locator is a skippable zstd frame and its index and members
//! lie in zstd frames ([`super::frames`]): the same single GET takes the
//! member's frames, which are decompressed as they arrive and sliced.

use bytes::{Bytes, BytesMut};
use crc_fast::{CrcAlgorithm, Digest};
use futures::stream::{BoxStream, StreamExt};
use haul_store::checksum::{crc64, crc64_from_b64};
use haul_store::{ByteStream, ErrorKind, GetOpts, Key, ObjectStore};

use super::error::{BundleError, BundleResult};
use super::format::{IndexEntry, Locator, LocatorError, BLOCK, MAX_INDEX_BYTES, SIDECAR_SUFFIX};
use super::frames::{decode_span, FramedLocator, SpanDecoder};
use super::index::parse_index;

/// How much of the archive's end the first read takes: the locator, and
/// with it the whole index of an archive of a few hundred members, so
/// opening such an archive costs one read.
pub const TAIL_READ: u64 = 64 * 1024;

/// Where to take an archive's index from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IndexFrom {
    /// The locator; the sidecar when the archive has no locator.
    #[default]
    Auto,
    /// Only the locator and the index member it points to.
    Locator,
    /// Only the sidecar `<archive>.index`.
    Sidecar,
}

/// Where an opened archive's index came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexSource {
    Locator,
    Sidecar,
}

/// An archive with its index.
#[derive(Debug, Clone)]
pub struct Archive {
    pub key: Key,
    /// The archive's size in bytes.
    pub size: u64,
    /// The archive's ETag when the store gave one.
    pub etag: Option<String>,
    /// The locator, when the index was read through it (of a compressed
    /// archive: its tar part).
    pub locator: Option<Locator>,
    /// A compressed archive's locator frame, when the index was read through it.
    pub framed: Option<FramedLocator>,
    pub source: IndexSource,
    /// The members, in archive order (the index member not included).
    pub entries: Vec<IndexEntry>,
}

impl Archive {
    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&IndexEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// The key of an archive's sidecar index.
pub fn sidecar_key(archive: &Key) -> BundleResult<Key> {
    Ok(archive.join(SIDECAR_SUFFIX)?)
}

/// Finds and reads an archive's index ([`IndexFrom::Auto`]).
pub async fn open_archive(store: &dyn ObjectStore, key: &Key) -> BundleResult<Archive> {
    open_archive_with(store, key, IndexFrom::Auto).await
}

/// Finds and reads an archive's index from where `from` says.
pub async fn open_archive_with(store: &dyn ObjectStore, key: &Key, from: IndexFrom) -> BundleResult<Archive> {
    let archive = match from {
        IndexFrom::Sidecar => from_sidecar(store, key).await?,
        IndexFrom::Locator => from_locator(store, key).await?,
        IndexFrom::Auto => match from_locator(store, key).await {
            Ok(a) => a,
            Err(BundleError::Locator {
                source: locator @ (LocatorError::Magic | LocatorError::Size(_)),
                ..
            }) => match from_sidecar(store, key).await {
                Ok(a) => a,
                Err(BundleError::Store(e)) if e.is_not_found() => {
                    return Err(BundleError::NoIndex {
                        archive: key.to_string(),
                        locator: locator.to_string(),
                        sidecar: sidecar_key(key)?.to_string(),
                        sidecar_error: "not found".into(),
                    })
                }
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        },
    };
    // Members in archive order, each after the one before: a hostile
    // index naming one range many times would make an unbundle write (and
    // read) the same bytes without bound.
    let mut end = 0u64;
    for e in &archive.entries {
        // In a compressed archive the data's range is in the tar: its
        // frames must lie in the archive.
        let stored_end = e.zstd.map_or(e.data_range().end, |z| z.range().end);
        let what = if stored_end > archive.size {
            format!("past the archive's end ({} bytes)", archive.size)
        } else if e.data_offset < end {
            format!("over the data of the member before it (which ends at {end})")
        } else {
            end = e.data_range().end;
            continue;
        };
        return Err(BundleError::Malformed {
            archive: key.to_string(),
            what: format!("the index puts member {:?} at {:?}, {what}", e.name, e.data_range()),
        });
    }
    Ok(archive)
}

async fn from_locator(store: &dyn ObjectStore, key: &Key) -> BundleResult<Archive> {
    let locator_err = |source| BundleError::Locator {
        archive: key.to_string(),
        source,
    };
    let (size, etag, tail) = read_tail(store, key, TAIL_READ).await?;
    if FramedLocator::is_framed(&tail) {
        let framed = FramedLocator::decode(&tail, size).map_err(locator_err)?;
        return from_framed(store, key, size, etag, &tail, framed).await;
    }
    if tail.len() < BLOCK as usize {
        return Err(locator_err(LocatorError::Size(tail.len())));
    }
    let block = &tail[tail.len() - BLOCK as usize..];
    let loc = Locator::decode(block, size).map_err(locator_err)?;
    let tail_start = size - tail.len() as u64;
    let index = if loc.index_offset >= tail_start {
        let at = (loc.index_offset - tail_start) as usize;
        tail.slice(at..at + loc.index_len as usize)
    } else if loc.index_len == 0 {
        Bytes::new()
    } else {
        let range = loc.index_offset..loc.index_offset + loc.index_len;
        let got = store.get(key, Some(range)).await?;
        collect(got.body, loc.index_len, key).await?
    };
    let entries = checked_index(&index, &loc, key)?;
    Ok(Archive {
        key: key.clone(),
        size,
        etag,
        locator: Some(loc),
        framed: None,
        source: IndexSource::Locator,
        entries,
    })
}

/// The index of a compressed archive: its frames (from the tail when it
/// holds them, else one ranged GET), decompressed and sliced.
async fn from_framed(
    store: &dyn ObjectStore,
    key: &Key,
    size: u64,
    etag: Option<String>,
    tail: &Bytes,
    framed: FramedLocator,
) -> BundleResult<Archive> {
    let span = framed.index;
    let tail_start = size - tail.len() as u64;
    let frames = if span.offset >= tail_start {
        let at = (span.offset - tail_start) as usize;
        tail.slice(at..at + span.len as usize)
    } else {
        let got = store.get(key, Some(span.range())).await?;
        collect(got.body, span.len, key).await?
    };
    let loc = framed.tar;
    let index = tokio::task::spawn_blocking(move || decode_span(&frames, span.skip, loc.index_len))
        .await
        .map_err(|e| malformed(key, format!("the decompressing thread failed: {e}")))?
        .map_err(|e| BundleError::Integrity {
            archive: key.to_string(),
            member: super::format::INDEX_MEMBER.to_string(),
            what: format!("its zstd frames at {:?} do not decompress: {e}", span.range()),
        })?;
    let entries = checked_index(&index, &loc, key)?;
    Ok(Archive {
        key: key.clone(),
        size,
        etag,
        locator: Some(loc),
        framed: Some(framed),
        source: IndexSource::Locator,
        entries,
    })
}

fn malformed(key: &Key, what: String) -> BundleError {
    BundleError::Malformed {
        archive: key.to_string(),
        what,
    }
}

/// The index's entries, its CRC64NVME and member count checked against the locator.
fn checked_index(index: &[u8], loc: &Locator, key: &Key) -> BundleResult<Vec<IndexEntry>> {
    let got = crc64(index);
    if got != loc.index_crc {
        return Err(BundleError::IndexCrc {
            archive: key.to_string(),
            want: loc.index_crc,
            got,
        });
    }
    let entries = parse_index(index, key.as_str())?;
    if entries.len() as u64 != loc.members {
        return Err(malformed(
            key,
            format!(
                "the locator counts {} members, the index lists {}",
                loc.members,
                entries.len()
            ),
        ));
    }
    Ok(entries)
}

async fn from_sidecar(store: &dyn ObjectStore, key: &Key) -> BundleResult<Archive> {
    let side = sidecar_key(key)?;
    let got = store.get(&side, None).await?;
    let len = got.range.end - got.range.start;
    if len > MAX_INDEX_BYTES {
        return Err(BundleError::Malformed {
            archive: key.to_string(),
            what: format!("its sidecar index is {len} bytes, more than a reader accepts ({MAX_INDEX_BYTES})"),
        });
    }
    let bytes = collect(got.body, len, &side).await?;
    let entries = parse_index(&bytes, side.as_str())?;
    let meta = store.head(key).await?;
    Ok(Archive {
        key: key.clone(),
        size: meta.size,
        etag: meta.etag,
        locator: None,
        framed: None,
        source: IndexSource::Sidecar,
        entries,
    })
}

/// The last `n` bytes of an object (all of it when smaller), with the
/// object's size and ETag: one suffix-range GET (`Range: bytes=-n`) where
/// the store has it; a 0-byte object has no suffix to ask for.
async fn read_tail(store: &dyn ObjectStore, key: &Key, n: u64) -> BundleResult<(u64, Option<String>, Bytes)> {
    let got = match store.get_with(key, GetOpts::suffix(n)).await {
        Ok(g) => g,
        Err(e) if e.kind == ErrorKind::InvalidRequest || e.code.as_deref() == Some("InvalidRange") => {
            let meta = store.head(key).await?;
            if meta.size == 0 {
                return Ok((0, meta.etag, Bytes::new()));
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let (size, etag) = (got.meta.size, got.meta.etag.clone());
    let len = got.range.end - got.range.start;
    let tail = collect(got.body, len, key).await?;
    Ok((size, etag, tail))
}

/// A body read into memory, its length checked.
async fn collect(mut body: ByteStream, expect: u64, key: &Key) -> BundleResult<Bytes> {
    let mut buf = BytesMut::with_capacity(usize::try_from(expect).unwrap_or(0).min(64 << 20));
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        if buf.len() as u64 > expect {
            break;
        }
    }
    if buf.len() as u64 != expect {
        return Err(BundleError::Store(haul_store::StoreError::new(
            haul_store::Op::Get,
            key.as_str(),
            ErrorKind::Integrity,
            format!("read {} bytes, expected {expect}", buf.len()),
        )));
    }
    Ok(buf.freeze())
}

/// A member's bytes as they arrive; the stream ends with an integrity
/// error if their length or CRC64NVME is not the index's.
pub type MemberStream = BoxStream<'static, BundleResult<Bytes>>;

/// Reads one member with one ranged GET (none for an empty member),
/// checked against the index.
pub async fn read_member(store: &dyn ObjectStore, archive_key: &Key, entry: &IndexEntry) -> BundleResult<Bytes> {
    let mut s = member_stream(store, archive_key, entry).await?;
    let mut buf = BytesMut::with_capacity(usize::try_from(entry.size).unwrap_or(0).min(64 << 20));
    while let Some(chunk) = s.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(buf.freeze())
}

/// Streams one member (one ranged GET), for members too big to hold: the
/// last item is an integrity error when the bytes do not match the index.
pub async fn member_stream(
    store: &dyn ObjectStore,
    archive_key: &Key,
    entry: &IndexEntry,
) -> BundleResult<MemberStream> {
    let integrity = |what: String| BundleError::Integrity {
        archive: archive_key.to_string(),
        member: entry.name.clone(),
        what,
    };
    let want = crc64_from_b64(&entry.crc64nvme).ok_or_else(|| {
        integrity(format!(
            "the index's CRC64NVME {:?} is not a full-object CRC",
            entry.crc64nvme
        ))
    })?;
    let body: BoxStream<'static, BundleResult<Bytes>> = match &entry.zstd {
        _ if entry.size == 0 => futures::stream::empty().boxed(),
        None => {
            let got = store.get(archive_key, Some(entry.data_range())).await?;
            got.body.map(|c| c.map_err(BundleError::Store)).boxed()
        }
        Some(span) => {
            let got = store.get(archive_key, Some(span.range())).await?;
            let dec = SpanDecoder::new(span.skip, entry.size).map_err(|e| integrity(format!("zstd: {e}")))?;
            let what = format!("its zstd frames at {:?} do not decompress", span.range());
            decompressed(got.body, dec, integrity(what))
        }
    };
    let checker = Checker {
        digest: Digest::new(CrcAlgorithm::Crc64Nvme),
        seen: 0,
        size: entry.size,
        want,
        archive: archive_key.to_string(),
        member: entry.name.clone(),
    };
    let s = futures::stream::unfold(Some((body, checker)), |state| async move {
        let (mut body, mut c) = state?;
        match body.next().await {
            Some(Ok(chunk)) => {
                c.seen += chunk.len() as u64;
                if c.seen > c.size {
                    return Some((Err(c.fail(format!("more than the index's {} bytes", c.size))), None));
                }
                c.digest.update(&chunk);
                Some((Ok(chunk), Some((body, c))))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None => c.finish().map(|e| (Err(e), None)),
        }
    });
    Ok(s.boxed())
}

/// The member's bytes out of the compressed frames `body` brings;
/// `broken` (with zstd's reason added) when they do not decompress.
fn decompressed(body: ByteStream, dec: SpanDecoder, broken: BundleError) -> BoxStream<'static, BundleResult<Bytes>> {
    let state = Some((body, dec, Bytes::new(), 0usize, broken));
    futures::stream::unfold(state, |state| async move {
        let (mut body, mut dec, mut input, mut pos, broken) = state?;
        loop {
            if dec.remaining() == 0 {
                return None;
            }
            if pos >= input.len() && !dec.has_buffered() {
                match body.next().await {
                    Some(Ok(chunk)) => (input, pos) = (chunk, 0),
                    Some(Err(e)) => return Some((Err(BundleError::Store(e)), None)),
                    None => return None,
                }
                continue;
            }
            match dec.step(&input, &mut pos) {
                Ok(out) if out.is_empty() => continue,
                Ok(out) => return Some((Ok(Bytes::from(out)), Some((body, dec, input, pos, broken)))),
                Err(e) => {
                    let err = match broken {
                        BundleError::Integrity { archive, member, what } => BundleError::Integrity {
                            archive,
                            member,
                            what: format!("{what}: {e}"),
                        },
                        other => other,
                    };
                    return Some((Err(err), None));
                }
            }
        }
    })
    .boxed()
}

struct Checker {
    digest: Digest,
    seen: u64,
    size: u64,
    want: u64,
    archive: String,
    member: String,
}

impl Checker {
    fn fail(&self, what: String) -> BundleError {
        BundleError::Integrity {
            archive: self.archive.clone(),
            member: self.member.clone(),
            what,
        }
    }

    /// The error the end of the body shows, if any.
    fn finish(self) -> Option<BundleError> {
        if self.seen != self.size {
            return Some(self.fail(format!("read {} bytes, the index says {}", self.seen, self.size)));
        }
        let got = self.digest.finalize();
        (got != self.want).then(|| {
            self.fail(format!(
                "CRC64NVME {} does not match the index's {}",
                haul_store::checksum::crc64_to_b64(got),
                haul_store::checksum::crc64_to_b64(self.want)
            ))
        })
    }
}
