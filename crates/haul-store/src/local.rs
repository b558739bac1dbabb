//! A local directory acting as a bucket: haul's embedded default.
//!
//! * Keys map to paths under the root; a key that could escape it (`..`,
//!   `.`, empty segments, a leading `/`) or that names the root's
//!   `.haul-tmp` working directory is rejected with [`ErrorKind::InvalidKey`].
//! * Writes are atomic: data goes to a temp file under `<root>/.haul-tmp`,
//!   is fsynced, then renamed into place (and the directory fsynced).
//! * Listing is in S3's byte order (`a/b` sorts after `a-b` and before `a0`),
//!   not directory-walk order: siblings are sorted with directories as
//!   `name/`, which makes a depth-first walk come out globally sorted.
//! * Object attributes S3 keeps (ETag, content-type, user metadata, storage
//!   class, tags) are kept in one `user.haul` extended attribute, valid
//!   while the file's size and mtime are those recorded with it.
//! * Multipart uploads are directories under `.haul-tmp`; with a part-size
//!   hint the parts are written in place into one file, so completing an
//!   upload costs a rename, not a second copy.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::checksum::{md5_hex, multipart_etag, Hasher};
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::{Key, KeyRange};
use crate::types::*;
use crate::ObjectStore;

/// The working directory (temp files, multipart uploads) under the root.
pub const TMP_DIR: &str = ".haul-tmp";
const XATTR: &str = "user.haul";
/// Reads up to this size are done in one step.
const SMALL_READ: usize = 256 * 1024;
/// Listing entries sent to the reader at a time.
const LIST_BATCH: usize = 256;
const READ_CHUNK: usize = 1 << 20;

/// A local directory used as a bucket.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    caps: Capabilities,
    durable: bool,
    /// Stats and page-cache reads run on the async threads (a local disk
    /// filesystem), not in the blocking pool (network filesystems).
    inline: bool,
    /// Aligned buffers for direct writes, reused.
    buffers: Arc<crate::direct::BufferPool>,
    /// `<root>/.haul-tmp`, present only while writes are in flight.
    tmp: crate::tmpdir::TmpDir,
}

/// Attributes kept in the `user.haul` xattr.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Attrs {
    size: u64,
    mtime_ns: i128,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sse: Option<SseKind>,
    /// Full-object CRC64NVME (base64), when the writer provided part CRCs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc64nvme: Option<String>,
}

impl LocalStore {
    /// A store rooted at `root`, which must be an existing directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        let shown = root.display().to_string();
        let md = fs::metadata(&root).map_err(|e| {
            let mut err = StoreError::io(Op::Connect, "", e);
            if err.kind == ErrorKind::NotFound {
                err.kind = ErrorKind::NoSuchBucket;
                err.message = format!("directory {shown} does not exist");
            }
            err
        })?;
        if !md.is_dir() {
            return Err(StoreError::new(
                Op::Connect,
                "",
                ErrorKind::NoSuchBucket,
                format!("{shown} is not a directory"),
            ));
        }
        let root = root.canonicalize().map_err(|e| StoreError::io(Op::Connect, "", e))?;
        let mut caps = Capabilities::local_dir(&root);
        caps.copy_domain = Some("local".into());
        let inline = on_local_disk(&root);
        let tmp = crate::tmpdir::TmpDir::new(root.join(TMP_DIR));
        // Debris of crashed runs: temp files and uploads idle for a day.
        tmp.clean_stale(crate::tmpdir::STALE_AFTER);
        Ok(LocalStore {
            inner: Arc::new(Inner {
                root,
                caps,
                durable: true,
                inline,
                buffers: Arc::default(),
                tmp,
            }),
        })
    }

    /// Creates the root directory if needed, then opens it.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        fs::create_dir_all(&root).map_err(|e| StoreError::io(Op::Connect, "", e))?;
        Self::new(root)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The path of `key`, checked not to escape the root.
    pub fn path_of(&self, op: Op, key: &Key) -> Result<PathBuf> {
        check_key(op, key.as_str())?;
        Ok(self.inner.root.join(key.as_str()))
    }
}

/// Rejects keys that cannot be a path under the root.
fn check_key(op: Op, key: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(StoreError::new(
            op,
            key,
            ErrorKind::InvalidKey,
            format!("cannot be stored in a local directory: {reason}"),
        ))
    };
    if key.is_empty() {
        return bad("empty key");
    }
    if key.starts_with('/') {
        return bad("absolute path");
    }
    if key.ends_with('/') {
        return bad("ends with '/' (a folder marker)");
    }
    for (i, seg) in key.split('/').enumerate() {
        match seg {
            "" => return bad("empty path segment ('//')"),
            "." | ".." => return bad("'.' or '..' segment"),
            TMP_DIR if i == 0 => return bad("'.haul-tmp' is reserved"),
            _ => {}
        }
    }
    Ok(())
}

fn mtime_ns(md: &fs::Metadata) -> i128 {
    match md.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        },
        Err(_) => 0,
    }
}

fn read_attrs(path: &Path, md: &fs::Metadata) -> Option<Attrs> {
    let raw = xattr::get(path, XATTR).ok()??;
    let a: Attrs = serde_json::from_slice(&raw).ok()?;
    (a.size == md.len() && a.mtime_ns == mtime_ns(md)).then_some(a)
}

fn meta_from(key: Key, path: &Path, md: &fs::Metadata, full: bool) -> ObjectMeta {
    let attrs = read_attrs(path, md);
    let mut meta = ObjectMeta {
        key,
        size: md.len(),
        last_modified: md.modified().ok(),
        etag: attrs.as_ref().and_then(|a| a.etag.clone()),
        storage_class: attrs.as_ref().and_then(|a| a.storage_class.clone()),
        ..Default::default()
    };
    if meta.etag.as_deref().is_some_and(crate::checksum::etag_is_plain_md5) {
        meta.checksums.md5_hex = meta.etag.clone();
    }
    meta.checksums.crc64nvme = attrs.as_ref().and_then(|a| a.crc64nvme.clone());
    if full {
        if let Some(a) = attrs {
            meta.content_type = a.content_type;
            meta.metadata = a.metadata;
            meta.sse = a.sse;
        }
    }
    meta
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

/// Runs blocking filesystem work off the async runtime.
async fn blocking<T: Send + 'static>(op: Op, key: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let key = key.to_string();
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::new(op, key, ErrorKind::Other, format!("worker thread failed: {e}")))?
}

impl Inner {
    fn tmp_dir(&self) -> PathBuf {
        self.tmp.path().to_path_buf()
    }

    /// Moves a finished temp file to `key` (sets mtime and attributes,
    /// fsyncs, renames); the temp file is removed if anything fails.
    /// `no_replace` (`If-None-Match: *`): an existing key is kept and the
    /// write refused with `PreconditionFailed`.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        op: Op,
        key: &str,
        tmp: &Path,
        file: File,
        attrs: Attrs,
        mtime: Option<SystemTime>,
        no_replace: bool,
    ) -> Result<()> {
        // Whatever fails, the temp file does not stay behind.
        let r = (|| -> Result<()> {
            let io = |e| StoreError::io(op, key, e);
            if let Some(m) = mtime {
                filetime::set_file_handle_times(&file, None, Some(filetime::FileTime::from_system_time(m)))
                    .map_err(io)?;
            }
            if self.durable {
                file.sync_all().map_err(io)?;
            }
            let md = file.metadata().map_err(io)?;
            let attrs = Attrs {
                size: md.len(),
                mtime_ns: mtime_ns(&md),
                ..attrs
            };
            let wants_xattr = !attrs.metadata.is_empty() || !attrs.tags.is_empty();
            if let Ok(raw) = serde_json::to_vec(&attrs) {
                if let Err(e) = xattr::set(tmp, XATTR, &raw) {
                    if wants_xattr {
                        return Err(StoreError::new(
                            op,
                            key,
                            ErrorKind::NotSupported,
                            format!("cannot keep metadata or tags: extended attributes unavailable ({e})"),
                        ));
                    }
                    tracing::debug!(key, error = %e, "xattr not kept");
                }
            }
            drop(file);
            let dst = self.root.join(key);
            let parent = dst.parent().unwrap_or(&self.root).to_path_buf();
            fs::create_dir_all(&parent).map_err(|e| conflict_or_io(op, key, e))?;
            // Never write through a symbolic link that leaves the bucket.
            let real_parent = parent.canonicalize().map_err(io)?;
            if !real_parent.starts_with(&self.root) {
                return Err(StoreError::new(
                    op,
                    key,
                    ErrorKind::InvalidKey,
                    format!(
                        "a folder of this key is a symbolic link leading out of the bucket (to {})",
                        real_parent.display()
                    ),
                ));
            }
            if dst.is_dir() {
                return Err(StoreError::new(
                    op,
                    key,
                    ErrorKind::InvalidKey,
                    "a directory with this name exists (keys under it use it as a folder)",
                ));
            }
            if no_replace {
                place_new(op, key, tmp, &dst)?;
            } else {
                fs::rename(tmp, &dst).map_err(|e| conflict_or_io(op, key, e))?;
            }
            if self.durable {
                if let Ok(d) = File::open(&parent) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })();
        if r.is_err() {
            let _ = fs::remove_file(tmp);
        }
        r
    }
}

/// Moves `tmp` to `dst` only if nothing is at `dst`: `renameat2` with
/// `RENAME_NOREPLACE`, or, on a file system without it, a hard link (which
/// never replaces either) and the removal of `tmp`.
fn place_new(op: Op, key: &str, tmp: &Path, dst: &Path) -> Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    let exists = || {
        StoreError::new(
            op,
            key,
            ErrorKind::PreconditionFailed,
            "If-None-Match: the key exists (kept)",
        )
        .with_code("PreconditionFailed")
    };
    match renameat_with(CWD, tmp, CWD, dst, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(exists()),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => match fs::hard_link(tmp, dst) {
            Ok(()) => {
                let _ = fs::remove_file(tmp);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
            Err(e) => Err(conflict_or_io(op, key, e)),
        },
        Err(e) => Err(conflict_or_io(op, key, e.into())),
    }
}

fn conflict_or_io(op: Op, key: &str, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotADirectory || e.kind() == std::io::ErrorKind::AlreadyExists {
        StoreError::new(
            op,
            key,
            ErrorKind::InvalidKey,
            "a parent of this key is a file, not a folder",
        )
    } else {
        StoreError::io(op, key, e)
    }
}

fn attrs_from(opts: &PutOptions, etag: String) -> Attrs {
    let mut metadata = opts.metadata.clone();
    if let Some(m) = opts.mtime {
        metadata.insert(crate::mtime::METADATA_KEY.into(), crate::mtime::format_mtime(m));
    }
    Attrs {
        etag: Some(etag),
        content_type: opts.content_type.clone(),
        metadata,
        storage_class: opts.storage_class.clone(),
        tags: opts.tags.clone(),
        sse: opts.sse.as_ref().map(SseKind::from),
        ..Default::default()
    }
}

/// Multipart upload state, kept in `<tmp>/mpu-<id>/`.
#[derive(Debug, Serialize, Deserialize)]
struct UploadState {
    key: String,
    opts: PutOptions,
}

impl Inner {
    fn upload_dir(&self, op: Op, key: &str, id: &MultipartId) -> Result<PathBuf> {
        if id.0.is_empty() || !id.0.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::new(op, key, ErrorKind::NotFound, "no such upload").with_code("NoSuchUpload"));
        }
        let dir = self.tmp_dir().join(format!("mpu-{}", id.0));
        if !dir.is_dir() {
            return Err(StoreError::new(op, key, ErrorKind::NotFound, "no such upload").with_code("NoSuchUpload"));
        }
        Ok(dir)
    }

    fn load_upload(&self, op: Op, key: &str, dir: &Path) -> Result<UploadState> {
        let raw = fs::read(dir.join("upload.json")).map_err(|e| StoreError::io(op, key, e))?;
        serde_json::from_slice(&raw)
            .map_err(|e| StoreError::new(op, key, ErrorKind::Other, format!("corrupt upload state: {e}")))
    }

    /// The directory and state of the upload a part of `size` bytes goes
    /// to, after checking the part number and size.
    fn part_target(&self, key: &str, id: &MultipartId, part_number: u32, size: u64) -> Result<(PathBuf, UploadState)> {
        let op = Op::UploadPart;
        if part_number == 0 {
            return Err(StoreError::new(
                op,
                key,
                ErrorKind::InvalidRequest,
                "part numbers start at 1",
            ));
        }
        let dir = self.upload_dir(op, key, id)?;
        let state = self.load_upload(op, key, &dir)?;
        if state.opts.part_size.is_some_and(|ps| size > ps) {
            return Err(StoreError::new(
                op,
                key,
                ErrorKind::InvalidRequest,
                "part larger than the declared part size",
            ));
        }
        Ok((dir, state))
    }

    /// Writes part `n` and its record: `size md5 crc64` (`-` for a
    /// checksum not known).
    fn write_part(
        &self,
        key: &str,
        dir: &Path,
        state: &UploadState,
        n: u32,
        data: &[u8],
        sums: &Checksums,
    ) -> Result<()> {
        let io = |e| StoreError::io(Op::UploadPart, key, e);
        match state.opts.part_size {
            Some(ps) => {
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(dir.join("data"))
                    .map_err(io)?;
                f.write_all_at(data, (u64::from(n) - 1) * ps).map_err(io)?;
            }
            None => fs::write(dir.join(format!("p{n}.data")), data).map_err(io)?,
        }
        self.write_part_record(key, dir, n, data.len() as u64, sums)
    }

    fn write_part_record(&self, key: &str, dir: &Path, n: u32, size: u64, sums: &Checksums) -> Result<()> {
        let field = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let rec = format!("{size} {} {}", field(&sums.md5_hex), field(&sums.crc64nvme));
        fs::write(dir.join(format!("p{n}.md5")), rec).map_err(|e| StoreError::io(Op::UploadPart, key, e))
    }

    /// Assembles the parts; returns the ETag and the full-object CRC64NVME.
    fn complete(&self, key: &str, id: &MultipartId, parts: &[CompletedPart]) -> Result<(String, Option<String>)> {
        let op = Op::CompleteMultipart;
        let io = |e| StoreError::io(op, key, e);
        let dir = self.upload_dir(op, key, id)?;
        let state = self.load_upload(op, key, &dir)?;
        let invalid = |msg: String| StoreError::new(op, key, ErrorKind::InvalidRequest, msg).with_code("InvalidPart");
        let mut md5s = Vec::with_capacity(parts.len());
        let mut crcs = Vec::with_capacity(parts.len());
        let mut total = 0u64;
        for (i, p) in parts.iter().enumerate() {
            let rec = fs::read_to_string(dir.join(format!("p{}.md5", p.part_number)))
                .map_err(|_| invalid(format!("part {} was not uploaded", p.part_number)))?;
            let mut fields = rec.split(' ');
            let (Some(size), Some(md5), crc) = (fields.next(), fields.next(), fields.next()) else {
                return Err(invalid("corrupt part record".into()));
            };
            let size: u64 = size.parse().map_err(|_| invalid("corrupt part record".into()))?;
            let md5 = if md5 == "-" { "" } else { md5 };
            crcs.push(crc.and_then(crate::checksum::crc64_from_b64).map(|c| (c, size)));
            if md5 != p.etag {
                return Err(invalid(format!("part {} ETag does not match", p.part_number)));
            }
            if let Some(ps) = state.opts.part_size {
                let last = i + 1 == parts.len();
                if p.part_number as usize != i + 1 || (!last && size != ps) || size > ps {
                    return Err(invalid(format!(
                        "part {} does not fit the declared part size {ps}",
                        p.part_number
                    )));
                }
            }
            total += size;
            if !md5.is_empty() {
                md5s.push(md5.to_string());
            }
        }
        let etag = match (&state.opts.etag, md5s.len() == parts.len()) {
            (Some(given), _) => given.clone(),
            (None, true) => multipart_etag(md5s.iter().map(String::as_str)).unwrap_or_default(),
            (None, false) => return Err(invalid("parts without an MD5 need the object's ETag".into())),
        };
        let crc64 = crcs
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .and_then(crate::checksum::crc64_of_parts)
            .map(crate::checksum::crc64_to_b64);
        let data = dir.join("data");
        if state.opts.part_size.is_none() {
            let mut out = File::create(&data).map_err(io)?;
            for p in parts {
                let mut f = File::open(dir.join(format!("p{}.data", p.part_number))).map_err(io)?;
                std::io::copy(&mut f, &mut out).map_err(io)?;
            }
        } else if parts.is_empty() {
            File::create(&data).map_err(io)?;
        }
        let file = OpenOptions::new().write(true).open(&data).map_err(io)?;
        file.set_len(total).map_err(io)?;
        let attrs = Attrs {
            crc64nvme: crc64.clone(),
            ..attrs_from(&state.opts, etag.clone())
        };
        self.commit(op, key, &data, file, attrs, state.opts.mtime, state.opts.if_none_match)?;
        let _ = fs::remove_dir_all(&dir);
        self.tmp.upload_ended(&id.0);
        Ok((etag, crc64))
    }

    fn read_range(&self, op: Op, key: &str, path: &Path, range: Range<u64>) -> Result<Bytes> {
        let io = |e| StoreError::io(op, key, e);
        let f = File::open(path).map_err(io)?;
        let mut buf = BytesMut::zeroed((range.end - range.start) as usize);
        f.read_exact_at(&mut buf, range.start).map_err(io)?;
        Ok(buf.freeze())
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    fn url(&self) -> String {
        format!("file://{}", self.inner.root.display())
    }

    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        // Entries travel in batches: one wake-up of the reader per batch,
        // not per entry.
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Result<ListEntry>>>(8);
        let root = self.inner.root.clone();
        tokio::task::spawn_blocking(move || {
            let batch = std::cell::RefCell::new(Vec::with_capacity(LIST_BATCH));
            let open = std::cell::Cell::new(true);
            walk(&root, &req, &|e| {
                let mut b = batch.borrow_mut();
                b.push(e);
                if b.len() >= LIST_BATCH {
                    let full = std::mem::replace(&mut *b, Vec::with_capacity(LIST_BATCH));
                    open.set(tx.blocking_send(full).is_ok());
                }
                open.get()
            });
            let rest = batch.into_inner();
            if open.get() && !rest.is_empty() {
                let _ = tx.blocking_send(rest);
            }
        });
        tokio_stream_from(rx).flat_map(futures::stream::iter).boxed()
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
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

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
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

    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
        let path = self.path_of(Op::GetTags, key)?;
        let k = key.as_str().to_string();
        blocking(Op::GetTags, key.as_str(), move || {
            let md = fs::metadata(&path).map_err(|e| StoreError::io(Op::GetTags, k, e))?;
            Ok(read_attrs(&path, &md).map(|a| a.tags).unwrap_or_default())
        })
        .await
    }

    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        check_key(Op::Put, key.as_str())?;
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let opts = opts.clone();
        blocking(Op::Put, key.as_str(), move || {
            let op = Op::Put;
            let etag = md5_hex(&payload);
            if let Some(given) = &opts.checksums.md5_hex {
                if *given != etag {
                    return Err(StoreError::new(
                        op,
                        &k,
                        ErrorKind::Integrity,
                        format!("Content-MD5 {given} does not match the payload ({etag})"),
                    )
                    .with_code("BadDigest"));
                }
            }
            let (tmp, mut f, _in_flight) = inner.tmp.new_file().map_err(|e| StoreError::io(op, &k, e))?;
            if let Err(e) = f.write_all(&payload) {
                drop(f);
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::io(op, &k, e));
            }
            inner.commit(
                op,
                &k,
                &tmp,
                f,
                attrs_from(&opts, etag.clone()),
                opts.mtime,
                opts.if_none_match,
            )?;
            Ok(PutResult {
                etag: Some(etag),
                checksums: Checksums::default(),
                sse: None,
            })
        })
        .await
    }

    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        check_key(Op::CreateMultipart, key.as_str())?;
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let state = UploadState {
            key: k.clone(),
            opts: opts.clone(),
        };
        blocking(Op::CreateMultipart, key.as_str(), move || {
            let op = Op::CreateMultipart;
            let id = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
            let dir = inner.tmp.new_upload_dir(&id).map_err(|e| StoreError::io(op, &k, e))?;
            let written = serde_json::to_vec(&state)
                .map_err(|e| StoreError::new(op, &k, ErrorKind::Other, e.to_string()))
                .and_then(|raw| fs::write(dir.join("upload.json"), raw).map_err(|e| StoreError::io(op, &k, e)));
            if let Err(e) = written {
                let _ = fs::remove_dir_all(&dir);
                inner.tmp.upload_ended(&id);
                return Err(e);
            }
            Ok(MultipartId(id))
        })
        .await
    }

    async fn upload_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let id = upload.clone();
        let given = sums.clone();
        blocking(Op::UploadPart, key.as_str(), move || {
            let op = Op::UploadPart;
            let (dir, state) = inner.part_target(&k, &id, part_number, payload.len() as u64)?;
            let mut kept = Checksums {
                crc64nvme: crate::checksum::check_crc64(op, &k, &payload, given.crc64nvme.as_deref())?,
                ..Default::default()
            };
            // Without an MD5 from the caller the part is hashed, and its MD5
            // returned as the ETag — unless the caller checks the object by
            // its CRC64NVME and gave its ETag (PutOptions::etag).
            let crc_only = given.md5_hex.is_none() && kept.crc64nvme.is_some() && state.opts.etag.is_some();
            if !crc_only {
                let got = md5_hex(&payload);
                if let Some(want) = given.md5_hex.as_deref().filter(|m| *m != got) {
                    return Err(StoreError::new(
                        op,
                        &k,
                        ErrorKind::Integrity,
                        format!("Content-MD5 {want} does not match the part ({got})"),
                    )
                    .with_code("BadDigest"));
                }
                kept.md5_hex = Some(got);
            }
            inner.write_part(&k, &dir, &state, part_number, &payload, &kept)?;
            Ok(CompletedPart {
                part_number,
                etag: kept.md5_hex.clone().unwrap_or_default(),
                size: payload.len() as u64,
                checksums: Checksums { md5_hex: None, ..kept },
                sse: None,
            })
        })
        .await
    }

    async fn upload_part_stream(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        size: u64,
        mut body: ByteStream,
    ) -> Result<CompletedPart> {
        let op = Op::UploadPart;
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let id = upload.clone();
        // A writer thread takes the chunks as they arrive and hashes what it
        // writes; a few chunks in flight bound the memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let writer = tokio::task::spawn_blocking(move || {
            let (dir, state) = inner.part_target(&k, &id, part_number, size)?;
            let io = |e| StoreError::io(op, &k, e);
            let (path, start) = match state.opts.part_size {
                Some(ps) => (dir.join("data"), (u64::from(part_number) - 1) * ps),
                None => (dir.join(format!("p{part_number}.data")), 0),
            };
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            // On a local disk, whole blocks bypass the page cache.
            let mut out = crate::direct::RangeWriter::open(&path, file, start, inner.inline, &inner.buffers);
            let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
            let mut md5 = state.opts.etag.is_none().then(<md5::Md5 as md5::Digest>::new);
            while let Some(chunk) = rx.blocking_recv() {
                out.write(&chunk).map_err(io)?;
                crc.update(&chunk);
                if let Some(h) = md5.as_mut() {
                    md5::Digest::update(h, &chunk);
                }
            }
            let arrived = out.offset() - start;
            if arrived != size {
                // The body ended early; the caller reports why.
                return Err(StoreError::new(
                    op,
                    &k,
                    ErrorKind::PreconditionFailed,
                    format!("part {part_number}: {arrived} bytes arrived, {size} expected"),
                ));
            }
            out.finish().map_err(io)?;
            // Flushing each part as it completes, in parallel with the
            // parts still arriving, leaves little for the fsync before the
            // rename at the end (which otherwise waits for the whole file).
            if inner.durable {
                out.sync_data().map_err(io)?;
            }
            let kept = Checksums {
                md5_hex: md5.map(|h| hex::encode(md5::Digest::finalize(h))),
                crc64nvme: Some(crate::checksum::crc64_to_b64(crc.finalize())),
                ..Default::default()
            };
            inner.write_part_record(&k, &dir, part_number, size, &kept)?;
            Ok(CompletedPart {
                part_number,
                etag: kept.md5_hex.clone().unwrap_or_default(),
                size,
                checksums: Checksums { md5_hex: None, ..kept },
                sse: None,
            })
        });
        let mut sent = 0u64;
        let mut failed = None;
        while let Some(next) = body.next().await {
            match next {
                Ok(chunk) => {
                    sent += chunk.len() as u64;
                    if sent > size {
                        failed = Some(StoreError::new(
                            Op::Get,
                            key.as_str(),
                            ErrorKind::PreconditionFailed,
                            format!("part {part_number}: more than the {size} bytes expected arrived"),
                        ));
                        break;
                    }
                    if tx.send(chunk).await.is_err() {
                        break; // The writer failed: its error is reported.
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| StoreError::new(op, key.as_str(), ErrorKind::Other, format!("writer thread failed: {e}")));
        match (failed, written) {
            (Some(e), _) => Err(e),
            (None, r) => r?,
        }
    }

    async fn upload_part_copy(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        check_key(Op::UploadPartCopy, src.key.as_str())?;
        let path = Path::new(&src.bucket).join(src.key.as_str());
        let inner = self.inner.clone();
        let k = src.key.as_str().to_string();
        let data = blocking(Op::UploadPartCopy, &k.clone(), move || {
            inner.read_range(Op::UploadPartCopy, &k, &path, range)
        })
        .await?;
        let sums = Checksums::md5(&md5_hex(&data));
        self.upload_part(key, upload, part_number, data, &sums)
            .await
            .map_err(|e| e.during(Op::UploadPartCopy))
    }

    async fn complete_multipart(&self, key: &Key, upload: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult> {
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let id = upload.clone();
        let parts = parts.to_vec();
        let (etag, crc64nvme) = blocking(Op::CompleteMultipart, key.as_str(), move || {
            inner.complete(&k, &id, &parts)
        })
        .await?;
        Ok(PutResult {
            etag: Some(etag),
            checksums: Checksums {
                crc64nvme,
                ..Default::default()
            },
            sse: None,
        })
    }

    async fn abort_multipart(&self, key: &Key, upload: &MultipartId) -> Result<()> {
        let inner = self.inner.clone();
        let k = key.as_str().to_string();
        let id = upload.clone();
        blocking(Op::AbortMultipart, key.as_str(), move || {
            let r = match inner.upload_dir(Op::AbortMultipart, &k, &id) {
                Ok(dir) => fs::remove_dir_all(&dir).map_err(|e| StoreError::io(Op::AbortMultipart, &k, e)),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            };
            if r.is_ok() {
                inner.tmp.upload_ended(&id.0);
            }
            r
        })
        .await
    }

    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        check_key(Op::Copy, src.key.as_str())?;
        check_key(Op::Copy, dst.as_str())?;
        let src_path = Path::new(&src.bucket).join(src.key.as_str());
        let inner = self.inner.clone();
        let k = dst.as_str().to_string();
        let sk = src.key.as_str().to_string();
        let opts = opts.clone();
        let if_match = src.if_match.clone();
        blocking(Op::Copy, dst.as_str(), move || {
            let op = Op::Copy;
            let mut from = File::open(&src_path).map_err(|e| StoreError::io(op, &sk, e))?;
            let md = from.metadata().map_err(|e| StoreError::io(op, &sk, e))?;
            let src_attrs = read_attrs(&src_path, &md).unwrap_or_default();
            if let Some(m) = &if_match {
                if src_attrs.etag.as_deref().is_some_and(|e| e != m) {
                    return Err(StoreError::new(
                        op,
                        &sk,
                        ErrorKind::PreconditionFailed,
                        "source changed",
                    ));
                }
            }
            let (tmp, mut out, _in_flight) = inner.tmp.new_file().map_err(|e| StoreError::io(op, &k, e))?;
            let mut hasher = Hasher::new(false, false);
            let mut buf = vec![0u8; READ_CHUNK];
            let copied = (|| loop {
                let n = from.read(&mut buf).map_err(|e| StoreError::io(op, &sk, e))?;
                if n == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(|e| StoreError::io(op, &k, e))?;
            })();
            // A source changed while it was read is not committed.
            let copied = copied.and_then(|()| {
                let now = from.metadata().map_err(|e| StoreError::io(op, &sk, e))?;
                if now.len() != md.len() || mtime_ns(&now) != mtime_ns(&md) {
                    return Err(StoreError::new(
                        op,
                        &sk,
                        ErrorKind::PreconditionFailed,
                        "the source file changed while it was copied",
                    ));
                }
                Ok(())
            });
            if let Err(e) = copied {
                drop(out);
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            let etag = hasher.finish().md5_hex.unwrap_or_default();
            let mut attrs = if opts.directive == MetadataDirective::Replace {
                attrs_from(&opts.put, etag.clone())
            } else {
                Attrs {
                    etag: Some(etag.clone()),
                    ..src_attrs
                }
            };
            if let Some(sc) = &opts.put.storage_class {
                attrs.storage_class = Some(sc.clone());
            }
            inner.commit(op, &k, &tmp, out, attrs, md.modified().ok(), opts.put.if_none_match)?;
            Ok(PutResult {
                etag: Some(etag),
                checksums: Checksums::default(),
                sse: None,
            })
        })
        .await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        let root = self.inner.root.clone();
        let keys = keys.to_vec();
        blocking(Op::Delete, "", move || {
            let mut failed = Vec::new();
            for k in keys {
                if let Err(e) = check_key(Op::Delete, k.as_str()) {
                    failed.push(e);
                    continue;
                }
                let path = root.join(k.as_str());
                match fs::remove_file(&path) {
                    Ok(()) => prune_parents(&root, &path),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => failed.push(StoreError::io(Op::Delete, k.as_str(), e)),
                }
            }
            Ok(failed)
        })
        .await
    }
}

/// Removes directories left empty by a delete, up to (not including) the root:
/// a bucket has no empty folders.
fn prune_parents(root: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
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

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// `ELOOP`: a symbolic link that leads back to itself.
fn is_loop(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// What a directory entry is, as far as a listing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    /// Not an object: reported as a [`ListEntry::Unlisted`] entry.
    Unlisted(SkipReason, &'static str),
}

/// One directory being walked: its key prefix and its sorted entries.
struct Frame {
    dir_key: String,
    entries: std::vec::IntoIter<(String, Kind)>,
}

/// Walks the tree under the request's prefix in byte order, sending entries.
fn walk(root: &Path, req: &ListRequest, send: &dyn Fn(Result<ListEntry>) -> bool) {
    let prefix = req.prefix.as_str();
    if req.delimiter.is_some_and(|d| d != '/') {
        send(Err(StoreError::new(
            Op::List,
            prefix,
            ErrorKind::NotSupported,
            "a local directory can only be listed with the delimiter '/'",
        )));
        return;
    }
    let base = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    let mut stack: Vec<Frame> = Vec::new();
    let open = |dir_key: &str, stack: &mut Vec<Frame>| -> bool {
        match read_sorted(root, dir_key, prefix, &req.range, req.skip.as_ref()) {
            Ok(entries) => {
                stack.push(Frame {
                    dir_key: dir_key.to_string(),
                    entries: entries.into_iter(),
                });
                true
            }
            // The prefix names nothing (or a file where a folder would be): empty.
            Err(e) if dir_key == base && matches!(e.kind, ErrorKind::NotFound | ErrorKind::InvalidKey) => true,
            Err(e) => send(Err(e)),
        }
    };
    if !open(base, &mut stack) {
        return;
    }
    while let Some(frame) = stack.last_mut() {
        let Some((name, kind)) = frame.entries.next() else {
            stack.pop();
            continue;
        };
        let key = format!("{}{}", frame.dir_key, name);
        if let Kind::Unlisted(reason, detail) = kind {
            // Filtered by prefix and range in `read_sorted`.
            let entry = Key::prefix(key).map(|key| {
                ListEntry::Unlisted(Unlisted {
                    key,
                    reason,
                    detail: detail.to_string(),
                })
            });
            if !send(entry) {
                return;
            }
            continue;
        }
        if kind == Kind::Dir {
            // `key` ends with '/'. With a delimiter, a folder below the
            // prefix is a common prefix — if it holds anything (S3 has no
            // empty folders).
            if req.delimiter.is_some() && key.len() > prefix.len() {
                let empty = fs::read_dir(root.join(&key))
                    .map(|mut r| r.next().is_none())
                    .unwrap_or(false);
                if !empty {
                    if let Ok(k) = Key::prefix(key) {
                        if !send(Ok(ListEntry::Prefix(k))) {
                            return;
                        }
                    }
                }
                continue;
            }
            if !open(&key, &mut stack) {
                return;
            }
            continue;
        }
        if !key.starts_with(prefix) || !req.range.contains(&key) {
            continue;
        }
        let path = root.join(&key);
        let entry = match fs::metadata(&path) {
            Ok(md) if md.is_file() => match Key::prefix(key) {
                Ok(k) => Ok(ListEntry::Object(meta_from(k, &path, &md, false))),
                Err(e) => Err(e),
            },
            // Replaced by something else since the directory was read.
            Ok(md) => match Key::prefix(key) {
                Ok(key) => Ok(ListEntry::Unlisted(Unlisted {
                    key,
                    reason: if md.is_dir() {
                        SkipReason::Symlink
                    } else {
                        SkipReason::SpecialFile
                    },
                    detail: "not a regular file any more".into(),
                })),
                Err(e) => Err(e),
            },
            // Deleted between readdir and stat: not listed, as in S3.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // A link that loops (ELOOP): not an object.
            Err(e) if is_loop(&e) => match Key::prefix(key) {
                Ok(key) => Ok(ListEntry::Unlisted(Unlisted {
                    key,
                    reason: SkipReason::Symlink,
                    detail: "a symbolic link loop".into(),
                })),
                Err(e) => Err(e),
            },
            Err(e) => Err(StoreError::io(Op::List, key, e)),
        };
        if !send(entry) {
            return;
        }
    }
}

/// Reads one directory: entries compatible with the prefix and range, with
/// directories suffixed by `/`, sorted by bytes. Entries that cannot be
/// objects — names that are not UTF-8 (sorted and shown lossily), links to
/// folders, dangling or looping links, sockets, FIFOs and devices — are
/// kept as [`Kind::Unlisted`], to be reported and skipped, never silently.
/// Links to regular files are followed (their target's content is listed
/// under the link's name).
fn read_sorted(
    root: &Path,
    dir_key: &str,
    prefix: &str,
    range: &KeyRange,
    skip: Option<&SkipKeys>,
) -> Result<Vec<(String, Kind)>> {
    let dir = root.join(dir_key);
    let rd = fs::read_dir(&dir).map_err(|e| StoreError::io(Op::List, dir_key, e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| StoreError::io(Op::List, dir_key, e))?;
        let (name, valid) = match ent.file_name().into_string() {
            Ok(n) => (n, true),
            Err(raw) => (raw.to_string_lossy().into_owned(), false),
        };
        if dir_key.is_empty() && name == TMP_DIR {
            continue;
        }
        // Excluded entries are never looked at (no stat, no link target);
        // the entry's type from the directory itself is free.
        let cheap = ent.file_type().ok();
        if valid && !cheap.is_some_and(|t| t.is_dir()) && skip.is_some_and(|s| s.skips(&format!("{dir_key}{name}"))) {
            continue;
        }
        let kind = if !valid {
            Kind::Unlisted(
                SkipReason::InvalidName,
                "the file name is not valid UTF-8 and cannot be an object key",
            )
        } else {
            match ent.file_type() {
                Ok(ft) if ft.is_dir() => Kind::Dir,
                Ok(ft) if ft.is_file() => Kind::File,
                // Links to files are followed; links to folders are not (loops).
                Ok(ft) if ft.is_symlink() => match fs::metadata(ent.path()) {
                    Ok(md) if md.is_file() => Kind::File,
                    Ok(md) if md.is_dir() => {
                        Kind::Unlisted(SkipReason::Symlink, "a symbolic link to a folder is not followed")
                    }
                    Ok(_) => Kind::Unlisted(
                        SkipReason::Symlink,
                        "a symbolic link to something that is not a regular file",
                    ),
                    Err(e) if is_loop(&e) => Kind::Unlisted(SkipReason::Symlink, "a symbolic link loop"),
                    Err(_) => Kind::Unlisted(SkipReason::Symlink, "a dangling symbolic link"),
                },
                Ok(_) => Kind::Unlisted(SkipReason::SpecialFile, "not a regular file (socket, FIFO or device)"),
                // Gone since the directory was read: not listed, as in S3.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(Op::List, format!("{dir_key}{name}"), e)),
            }
        };
        let full = format!("{dir_key}{name}");
        if let Kind::Unlisted(..) = kind {
            if full.starts_with(prefix) && range.contains(&full) {
                out.push((name, kind));
            }
            continue;
        }
        let is_dir = kind == Kind::Dir;
        let full = if is_dir { format!("{full}/") } else { full };
        let relevant = full.starts_with(prefix) || (is_dir && prefix.starts_with(&full));
        if !relevant {
            continue;
        }
        if is_dir && (range.prefix_past_end(&full) || range.prefix_before_start(&full)) {
            continue;
        }
        out.push((if is_dir { format!("{name}/") } else { name }, kind));
    }
    out.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
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
