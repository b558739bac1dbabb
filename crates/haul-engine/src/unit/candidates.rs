//! [`DeleteCandidates`]: the destination keys a sync would delete, spooled
//! to an anonymous temp file (one JSON string per line, so any key — quotes,
//! newlines, non-ASCII — fits on one line) so that millions of them take no
//! memory. Reads and writes are positional (`pread`/`pwrite`): a reader
//! handed out by [`DeleteCandidates::keys`] never disturbs later writes.
//!
//! Serialized, the candidates are a JSON sequence of keys, streamed from
//! the file; deserialized, they are spooled to a new file as they are read.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Mutex;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Error as _, Serialize, SerializeSeq, Serializer};

/// Written to the file when this many bytes are buffered.
const BUFFER: usize = 64 * 1024;

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, pos)
}

#[cfg(unix)]
fn write_all_at(f: &File, buf: &[u8], pos: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, pos)
}

#[cfg(windows)]
fn read_at(f: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, pos)
}

#[cfg(windows)]
fn write_all_at(f: &File, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_write(f, buf, pos) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The temp file and what is not written to it yet.
struct Spool {
    file: File,
    buf: Vec<u8>,
    /// Bytes in the file.
    written: u64,
}

impl Spool {
    fn new() -> io::Result<Self> {
        Ok(Spool {
            file: tempfile::tempfile()?,
            buf: Vec::new(),
            written: 0,
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_all_at(&self.file, &self.buf, self.written)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Adds bytes; on an error nothing of them was added.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let before = self.buf.len();
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= BUFFER {
            if let Err(e) = self.flush() {
                // `written` did not move: the next flush writes the
                // earlier bytes again, at the same offset.
                self.buf.truncate(before);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A reader of everything written so far.
    fn reader(&mut self) -> io::Result<SpoolReader> {
        self.flush()?;
        Ok(SpoolReader {
            file: self.file.try_clone()?,
            pos: 0,
            end: self.written,
        })
    }
}

/// Reads `[pos, end)` of a spool file at explicit offsets.
struct SpoolReader {
    file: File,
    pos: u64,
    end: u64,
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = read_at(&self.file, &mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the delete spool is shorter than what was written to it",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Destination keys a sync would delete, in a temp file (none until the
/// first key). Deletes are never run by the unit that found them: the
/// caller sums every unit's candidates and applies them after the barrier
/// (`Executor::apply_deletes`).
#[derive(Default)]
pub struct DeleteCandidates {
    spool: Option<Mutex<Spool>>,
    len: u64,
}

impl fmt::Debug for DeleteCandidates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeleteCandidates").field("len", &self.len).finish()
    }
}

impl DeleteCandidates {
    /// No candidates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Candidates from a list of keys.
    pub fn from_keys<I, K>(keys: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let mut c = Self::new();
        for k in keys {
            c.push(k.as_ref())?;
        }
        Ok(c)
    }

    /// How many keys.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn spool_mut(&mut self) -> io::Result<&mut Spool> {
        if self.spool.is_none() {
            self.spool = Some(Mutex::new(Spool::new()?));
        }
        match &mut self.spool {
            Some(s) => Ok(s.get_mut().unwrap_or_else(|e| e.into_inner())),
            None => Err(io::Error::other("no delete spool")),
        }
    }

    /// Adds one destination key (on an error, it was not added).
    pub fn push(&mut self, key: &str) -> io::Result<()> {
        let mut line = serde_json::to_vec(key).map_err(io::Error::other)?;
        line.push(b'\n');
        self.spool_mut()?.write(&line)?;
        self.len += 1;
        Ok(())
    }

    /// Adds every key of `other` (after the keys already here). On an
    /// error none of them was added.
    pub fn append(&mut self, other: DeleteCandidates) -> io::Result<()> {
        let DeleteCandidates { spool, len } = other;
        let Some(spool) = spool else {
            return Ok(());
        };
        if self.spool.is_none() {
            // Take the other's file as it is.
            self.spool = Some(spool);
            self.len = len;
            return Ok(());
        }
        let mut theirs = spool.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut reader = theirs.reader()?;
        let ours = self.spool_mut()?;
        ours.flush()?;
        let start = ours.written;
        let copied = (|| {
            let mut chunk = vec![0u8; BUFFER];
            loop {
                let n = reader.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                ours.write(&chunk[..n])?;
            }
        })();
        if let Err(e) = copied {
            // Back to the keys there were: what was copied lies past the
            // end, to be overwritten.
            ours.buf.clear();
            ours.written = start;
            return Err(e);
        }
        self.len += len;
        Ok(())
    }

    /// The keys, in the order they were added. The iterator owns what it
    /// reads (a duplicate of the file handle): it sees the keys added up to
    /// now, and nothing added later.
    pub fn keys(&self) -> io::Result<CandidateKeys> {
        let reader = match &self.spool {
            Some(s) => Some(s.lock().unwrap_or_else(|e| e.into_inner()).reader()?),
            None => None,
        };
        Ok(CandidateKeys {
            lines: reader.map(BufReader::new),
            left: self.len,
        })
    }
}

/// The keys of [`DeleteCandidates`]; an error (the temp file unreadable,
/// or a line that is not a JSON string) ends the iteration.
#[derive(Debug)]
pub struct CandidateKeys {
    lines: Option<BufReader<SpoolReader>>,
    left: u64,
}

impl fmt::Debug for SpoolReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpoolReader")
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish()
    }
}

impl Iterator for CandidateKeys {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        let lines = self.lines.as_mut()?;
        if self.left == 0 {
            return None;
        }
        let mut line = Vec::new();
        let r = match lines.read_until(b'\n', &mut line) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the delete spool ended {} keys early", self.left),
            )),
            Ok(_) => serde_json::from_slice::<String>(&line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("delete spool: {e}"))),
            Err(e) => Err(e),
        };
        match r {
            Ok(_) => self.left -= 1,
            Err(_) => self.lines = None,
        }
        Some(r)
    }
}

impl Serialize for DeleteCandidates {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(usize::try_from(self.len).ok())?;
        for k in self.keys().map_err(S::Error::custom)? {
            seq.serialize_element(&k.map_err(S::Error::custom)?)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for DeleteCandidates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = DeleteCandidates;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of destination keys")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                use serde::de::Error as _;
                let mut c = DeleteCandidates::new();
                while let Some(k) = seq.next_element::<String>()? {
                    c.push(&k).map_err(A::Error::custom)?;
                }
                Ok(c)
            }
        }
        d.deserialize_seq(Keys)
    }
}
