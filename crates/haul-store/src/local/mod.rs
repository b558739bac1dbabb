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
//!
//! Modules: `paths` (keys to paths), `attrs` (the `user.haul` xattr),
//! `read` (head, get, where the file-system calls run), `write` (put, copy,
//! the atomic commit), `multipart` (uploads under `.haul-tmp`), `walk`
//! (listing in byte order).

mod attrs;
mod multipart;
mod paths;
mod read;
mod walk;
mod write;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;
use crate::ObjectStore;

pub(crate) use read::on_local_disk;

/// The working directory (temp files, multipart uploads) under the root.
pub const TMP_DIR: &str = ".haul-tmp";

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

impl LocalStore {
    /// A store rooted at `root`, which must be an existing directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        let shown = root.display().to_string();
        let md = std::fs::metadata(&root).map_err(|e| {
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
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io(Op::Connect, "", e))?;
        Self::new(root)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The path of `key`, checked not to escape the root.
    pub fn path_of(&self, op: Op, key: &Key) -> Result<PathBuf> {
        paths::check_key(op, key.as_str())?;
        Ok(self.inner.root.join(key.as_str()))
    }
}

/// Runs blocking filesystem work off the async runtime.
async fn blocking<T: Send + 'static>(op: Op, key: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let key = key.to_string();
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::new(op, key, ErrorKind::Other, format!("worker thread failed: {e}")))?
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
        walk::list(self.inner.root.clone(), req)
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.head_file(key).await
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        self.get_file(key, range).await
    }

    async fn get_tags(&self, key: &Key) -> Result<Vec<(String, String)>> {
        self.tags_of(key).await
    }

    async fn put(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
        self.put_file(key, payload, opts).await
    }

    async fn create_multipart(&self, key: &Key, opts: &PutOptions) -> Result<MultipartId> {
        self.create_upload(key, opts).await
    }

    async fn upload_part(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        payload: Bytes,
        sums: &Checksums,
    ) -> Result<CompletedPart> {
        self.write_part_buffer(key, upload, part_number, payload, sums).await
    }

    async fn upload_part_stream(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        size: u64,
        body: ByteStream,
    ) -> Result<CompletedPart> {
        self.write_part_stream(key, upload, part_number, size, body).await
    }

    async fn upload_part_copy(
        &self,
        key: &Key,
        upload: &MultipartId,
        part_number: u32,
        src: &CopySource,
        range: Range<u64>,
    ) -> Result<CompletedPart> {
        self.copy_part(key, upload, part_number, src, range).await
    }

    async fn complete_multipart(&self, key: &Key, upload: &MultipartId, parts: &[CompletedPart]) -> Result<PutResult> {
        self.complete_upload(key, upload, parts).await
    }

    async fn abort_multipart(&self, key: &Key, upload: &MultipartId) -> Result<()> {
        self.abort_upload(key, upload).await
    }

    async fn list_multipart_uploads(&self, prefix: &Key) -> Result<Vec<(Key, MultipartId)>> {
        self.list_uploads(prefix).await
    }

    async fn copy(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
        self.copy_file(src, dst, opts).await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        self.delete_files(keys).await
    }
}
