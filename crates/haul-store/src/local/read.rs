//! The read path: `head`, `get` and tags, and where their file-system
//! calls run — in place on the async thread on a local disk filesystem
//! (`on_local_disk`), in the blocking pool otherwise.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;

use super::attrs::{meta_from, read_attrs};
use super::{blocking, Inner, LocalStore};

/// Reads up to this size are done in one step.
const SMALL_READ: usize = 256 * 1024;
pub(super) const READ_CHUNK: usize = 1 << 20;

impl LocalStore {
    pub(super) async fn head_file(&self, key: &Key) -> Result<ObjectMeta> {
        let path = self.path_of(Op::Head, key)?;
        let k = key.clone();
        let head = move || {
            let md = fs::metadata(&path).map_err(|e| StoreError::io(Op::Head, k.as_str(), e))?;
            if !md.is_file() {
                return Err(StoreError::new(Op::Head, k.as_str(), ErrorKind::NotFound, "not a file"));
            }
            Ok(meta_from(k, &path, &md, true))
        };
        if self.inner.inline {
            return head();
        }
        blocking(Op::Head, key.as_str(), head).await
    }

    pub(super) async fn get_file(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        let path = self.path_of(Op::Get, key)?;
        let k = key.as_str().to_string();
        // Open first, then describe the open file: metadata and data are of
        // the same file even if the path is replaced meanwhile.
        let inline = self.inner.inline;
        let open = {
            let (k, key, range) = (k.clone(), key.clone(), range.clone());
            move || {
                let mut file = File::open(&path).map_err(|e| StoreError::io(Op::Get, &k, e))?;
                let md = file.metadata().map_err(|e| StoreError::io(Op::Get, &k, e))?;
                if !md.is_file() {
                    return Err(StoreError::new(Op::Get, &k, ErrorKind::NotFound, "not a file"));
                }
                let meta = meta_from(key, &path, &md, true);
                // A small read is done at once (most files of a big tree
                // are small): in place only from the page cache, else in
                // the same trip to a blocking thread.
                let r = range.clone().unwrap_or(0..meta.size);
                let small = if is_small_read(&r, meta.size) {
                    match inline {
                        true => read_cached(&file, r),
                        false => Some(read_range(&mut file, r).map_err(|e| StoreError::io(Op::Get, &k, e))?),
                    }
                } else {
                    None
                };
                Ok((file, meta, small))
            }
        };
        let (mut file, meta, mut small) = if inline {
            open()?
        } else {
            blocking(Op::Get, key.as_str(), open).await?
        };
        let r = range.unwrap_or(0..meta.size);
        if r.start > r.end || r.end > meta.size {
            return Err(StoreError::new(
                Op::Get,
                key.as_str(),
                ErrorKind::InvalidRequest,
                format!("range {r:?} outside object of {} bytes", meta.size),
            ));
        }
        if small.is_none() && inline && is_small_read(&r, meta.size) {
            // Not in the page cache: read it where waiting is allowed.
            let (k, r) = (k.clone(), r.clone());
            let (f, data) = blocking(Op::Get, &k.clone(), move || {
                let data = read_range(&mut file, r).map_err(|e| StoreError::io(Op::Get, &k, e))?;
                Ok((file, data))
            })
            .await?;
            file = f;
            small = Some(data);
        }
        let body = match small {
            Some(data) => futures::stream::once(async move { Ok(data) }).boxed(),
            None => read_stream(file, r.clone(), k),
        };
        Ok(GetResult { meta, range: r, body })
    }

    pub(super) async fn tags_of(&self, key: &Key) -> Result<Vec<(String, String)>> {
        let path = self.path_of(Op::GetTags, key)?;
        let k = key.as_str().to_string();
        blocking(Op::GetTags, key.as_str(), move || {
            let md = fs::metadata(&path).map_err(|e| StoreError::io(Op::GetTags, k, e))?;
            Ok(read_attrs(&path, &md).map(|a| a.tags).unwrap_or_default())
        })
        .await
    }
}

impl Inner {
    pub(super) fn read_range(&self, op: Op, key: &str, path: &Path, range: Range<u64>) -> Result<Bytes> {
        let io = |e| StoreError::io(op, key, e);
        let f = File::open(path).map_err(io)?;
        let mut buf = BytesMut::zeroed((range.end - range.start) as usize);
        f.read_exact_at(&mut buf, range.start).map_err(io)?;
        Ok(buf.freeze())
    }
}

/// Whether `root` is on a local disk filesystem, where a stat of a file just
/// listed and a read from the page cache take microseconds: cheaper done in
/// place than with a trip to a blocking thread (two context switches).
/// Network and FUSE filesystems, and any not known, use the blocking pool.
pub(crate) fn on_local_disk(root: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        const LOCAL: [u64; 10] = [
            0xEF53,      // ext2/3/4
            0x5846_5342, // xfs
            0x9123_683E, // btrfs
            0x0102_1994, // tmpfs
            0x2FC1_2FC1, // zfs
            0xF2F5_2010, // f2fs
            0x794C_7630, // overlayfs
            0x8584_58F6, // ramfs
            0xCA45_1A4E, // bcachefs
            0x4244,      // hfs
        ];
        rustix::fs::statfs(root).is_ok_and(|st| LOCAL.contains(&(st.f_type as u64)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        false
    }
}

/// A valid range of an object of `size` bytes, small enough to read at once.
fn is_small_read(r: &Range<u64>, size: u64) -> bool {
    r.start <= r.end && r.end <= size && r.end - r.start <= SMALL_READ as u64
}

/// Reads `range` only if the page cache holds all of it (`preadv2` with
/// `RWF_NOWAIT`): never waits for the disk. `None`: read it elsewhere.
fn read_cached(file: &File, range: Range<u64>) -> Option<Bytes> {
    #[cfg(target_os = "linux")]
    {
        let mut buf = BytesMut::zeroed((range.end - range.start) as usize);
        let mut filled = 0;
        while filled < buf.len() {
            let mut slice = [std::io::IoSliceMut::new(&mut buf[filled..])];
            let at = range.start + filled as u64;
            match rustix::io::preadv2(file, &mut slice, at, rustix::io::ReadWriteFlags::NOWAIT) {
                Ok(n) if n > 0 => filled += n,
                _ => return None,
            }
        }
        Some(buf.freeze())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, range);
        None
    }
}

/// Reads `range` of the file into one buffer, without zeroing it first.
fn read_range(file: &mut File, range: Range<u64>) -> std::io::Result<Bytes> {
    file.seek(SeekFrom::Start(range.start))?;
    let n = range.end - range.start;
    let mut buf = Vec::with_capacity(n as usize);
    file.take(n).read_to_end(&mut buf)?;
    if buf.len() as u64 != n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("read {} bytes, expected {n}: the file shrank", buf.len()),
        ));
    }
    Ok(Bytes::from(buf))
}

fn read_stream(mut file: File, range: Range<u64>, key: String) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut at = range.start;
        while at < range.end {
            let end = range.end.min(at + READ_CHUNK as u64);
            let res = read_range(&mut file, at..end);
            let failed = res.is_err();
            if tx
                .blocking_send(res.map_err(|e| StoreError::io(Op::Get, &key, e)))
                .is_err()
                || failed
            {
                return;
            }
            at = end;
        }
    });
    tokio_stream_from(rx)
}

pub(super) fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn page_cache_reads_return_the_bytes_or_nothing() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data)?;
        let f = File::open(&path)?;
        // Just written: in the page cache.
        assert_eq!(read_cached(&f, 0..100_000).as_deref(), Some(&data[..]));
        assert_eq!(read_cached(&f, 500..4596).as_deref(), Some(&data[500..4596]));
        // Past the end: nothing, never a short buffer.
        assert_eq!(read_cached(&f, 99_000..100_001), None);
        // The filesystem of the test directory (ext4 or tmpfs on CI) is local.
        assert!(on_local_disk(dir.path()));
        Ok(())
    }
}
