//! The watched tree as the source store of the uploads: listed, stat'ed
//! and read only through [`Tree`], so no symbolic link is ever followed —
//! not to a file, not to a folder, not in the middle of a path. Links found
//! are reported to a [`Skips`] (logged once, counted) and never listed.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use haul_store::{
    Capabilities, Checksums, CompletedPart, CopyOptions, CopySource, ErrorKind, GetResult, Key, ListEntry, ListRequest,
    MultipartId, ObjectMeta, ObjectStore, Op, PutOptions, PutResult, Result, StoreError,
};

use super::nofollow::{Entry, Ident, Kind, Tree};
use super::tree::Exclusions;

/// Receives what a listing or a read of the tree skipped.
pub trait Skips: Send + Sync + 'static {
    /// A symbolic link at `at` (relative path), not followed.
    fn symlink(&self, at: &str);
    /// A FIFO, socket or device, or a name that is not UTF-8.
    fn unusable(&self, at: &str, why: &str);
}

/// Reads of a file go in chunks of this size.
const CHUNK: u64 = 1 << 20;

/// The watched tree, read-only.
pub struct WatchSource {
    tree: Arc<Tree>,
    root: PathBuf,
    caps: Capabilities,
    excl: Exclusions,
    skips: Arc<dyn Skips>,
}

impl std::fmt::Debug for WatchSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSource")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn time_of(ns: i64) -> Option<SystemTime> {
    if ns >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_nanos(ns as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_nanos(ns.unsigned_abs()))
    }
}

/// The object a file of the tree is.
pub fn meta_of(key: Key, id: &Ident) -> ObjectMeta {
    ObjectMeta {
        key,
        size: id.size,
        last_modified: time_of(id.mtime_ns),
        ..Default::default()
    }
}

/// In a listing's metadata: the file's ctime (ns), for settling.
pub const CTIME_NS: &str = "haul-watch-ctime-ns";

/// The ctime a listing of the tree gave (0: unknown).
pub fn listed_ctime_ns(meta: &ObjectMeta) -> i64 {
    meta.metadata.get(CTIME_NS).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn read_only(op: Op, key: &Key) -> StoreError {
    StoreError::new(
        op,
        key.as_str(),
        ErrorKind::NotSupported,
        "the watched tree is only read by haul",
    )
}

impl WatchSource {
    pub fn new(tree: Arc<Tree>, root: PathBuf, excl: Exclusions, skips: Arc<dyn Skips>) -> Self {
        // No server-side copy (`local_dir` has none): a local destination
        // would read the file by its path. Every byte goes through `get`.
        let mut caps = Capabilities::local_dir(&root);
        caps.tags = false;
        WatchSource {
            tree,
            root,
            caps,
            excl,
            skips,
        }
    }

    /// What is not a file at `key`, as an error (links are reported).
    fn not_a_file(&self, op: Op, key: &str, e: Entry) -> StoreError {
        let (kind, msg) = match e {
            Entry::Symlink { at } => {
                self.skips.symlink(&at);
                (ErrorKind::NotFound, format!("{at} is a symbolic link: never followed"))
            }
            Entry::Missing => (ErrorKind::NotFound, "no such file".to_string()),
            Entry::Dir => (ErrorKind::NotFound, "a folder, not a file".to_string()),
            Entry::Special => (ErrorKind::NotFound, "not a regular file".to_string()),
            Entry::File(_) => (ErrorKind::Other, "unexpected".to_string()),
        };
        StoreError::new(op, key, kind, msg)
    }
}

/// Walks the tree below the request's prefix in byte order of keys.
fn walk(src: &WatchSource, req: &ListRequest, send: &mut dyn FnMut(Result<ListEntry>) -> bool) {
    let prefix = req.prefix.as_str();
    let base = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
    struct Frame {
        dir: String,
        entries: std::vec::IntoIter<(String, Kind)>,
    }
    let open = |dir: &str, stack: &mut Vec<Frame>, send: &mut dyn FnMut(Result<ListEntry>) -> bool| -> bool {
        let listed = match src.tree.read_dir(dir) {
            Ok(Ok(l)) => l,
            Ok(Err(Entry::Symlink { at })) => {
                src.skips.symlink(&at);
                return true;
            }
            Ok(Err(_)) => return true,
            Err(e) => return send(Err(StoreError::io(Op::List, dir, e))),
        };
        let mut entries = Vec::with_capacity(listed.len());
        for (raw, kind) in listed {
            // Hidden files and folders are never uploaded: not even walked.
            if raw.first() == Some(&b'.') {
                continue;
            }
            let Ok(name) = String::from_utf8(raw.clone()) else {
                let shown = format!("{dir}{}", String::from_utf8_lossy(&raw));
                src.skips.unusable(&shown, "the name is not UTF-8");
                continue;
            };
            let full = format!("{dir}{name}");
            match kind {
                Kind::Dir => {
                    let d = format!("{full}/");
                    if d.starts_with(prefix) || prefix.starts_with(&d) {
                        entries.push((format!("{name}/"), kind));
                    }
                }
                Kind::File if full.starts_with(prefix) && req.range.contains(&full) => entries.push((name, kind)),
                Kind::Symlink if full.starts_with(prefix) && !src.excl.excluded(&full) => src.skips.symlink(&full),
                Kind::Special if full.starts_with(prefix) && !src.excl.excluded(&full) => {
                    src.skips.unusable(&full, "not a regular file (FIFO, socket or device)")
                }
                _ => {}
            }
        }
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        stack.push(Frame {
            dir: dir.to_string(),
            entries: entries.into_iter(),
        });
        true
    };
    let mut stack = Vec::new();
    if !open(base, &mut stack, send) {
        return;
    }
    while let Some(frame) = stack.last_mut() {
        let Some((name, kind)) = frame.entries.next() else {
            stack.pop();
            continue;
        };
        let key = format!("{}{}", frame.dir, name);
        if kind == Kind::Dir {
            if !open(&key, &mut stack, send) {
                return;
            }
            continue;
        }
        let entry = match src.tree.stat(&key) {
            Ok(Entry::File(id)) => Key::object(key).map(|k| {
                let mut meta = meta_of(k, &id);
                meta.metadata.insert(CTIME_NS.to_string(), id.ctime_ns.to_string());
                ListEntry::Object(meta)
            }),
            Ok(Entry::Symlink { at }) => {
                src.skips.symlink(&at);
                continue;
            }
            // Gone or replaced since the folder was read: not listed.
            Ok(_) => continue,
            Err(e) => Err(StoreError::io(Op::List, key, e)),
        };
        if !send(entry) {
            return;
        }
    }
}

#[async_trait]
impl ObjectStore for WatchSource {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn list(&self, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
        if req.delimiter.is_some() {
            let e = StoreError::new(
                Op::List,
                req.prefix.as_str(),
                ErrorKind::NotSupported,
                "the watched tree is listed without a delimiter",
            );
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Result<ListEntry>>>(8);
        let me = WatchSource {
            tree: self.tree.clone(),
            root: self.root.clone(),
            caps: self.caps.clone(),
            excl: self.excl.clone(),
            skips: self.skips.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(256);
            let mut open = true;
            walk(&me, &req, &mut |e| {
                batch.push(e);
                if batch.len() >= 256 {
                    open = tx.blocking_send(std::mem::take(&mut batch)).is_ok();
                }
                open
            });
            if open && !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .flat_map(futures::stream::iter)
            .boxed()
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let (tree, k) = (self.tree.clone(), key.as_str().to_string());
        let e = tokio::task::spawn_blocking(move || tree.stat(&k))
            .await
            .map_err(|e| StoreError::new(Op::Head, key.as_str(), ErrorKind::Other, e.to_string()))?
            .map_err(|e| StoreError::io(Op::Head, key.as_str(), e))?;
        match e {
            Entry::File(id) => Ok(meta_of(key.clone(), &id)),
            other => Err(self.not_a_file(Op::Head, key.as_str(), other)),
        }
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<GetResult> {
        let (tree, k) = (self.tree.clone(), key.as_str().to_string());
        let opened = tokio::task::spawn_blocking(move || tree.open_file(&k))
            .await
            .map_err(|e| StoreError::new(Op::Get, key.as_str(), ErrorKind::Other, e.to_string()))?
            .map_err(|e| StoreError::io(Op::Get, key.as_str(), e))?;
        let (file, id) = match opened {
            Ok(f) => f,
            Err(other) => return Err(self.not_a_file(Op::Get, key.as_str(), other)),
        };
        let r = range.unwrap_or(0..id.size);
        if r.start > r.end || r.end > id.size {
            return Err(StoreError::new(
                Op::Get,
                key.as_str(),
                ErrorKind::InvalidRequest,
                format!("range {r:?} outside a file of {} bytes", id.size),
            ));
        }
        let file = Arc::new(file);
        let k = key.as_str().to_string();
        let body = futures::stream::unfold(Some(r.start), move |pos| {
            let (file, k, end) = (file.clone(), k.clone(), r.end);
            async move {
                let pos = pos.filter(|p| *p < end)?;
                let n = (end - pos).min(CHUNK) as usize;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
                })
                .await;
                Some(match read {
                    Ok(Ok(b)) => (Ok(b), Some(pos + n as u64)),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => (
                        Err(StoreError::new(
                            Op::Get,
                            &k,
                            ErrorKind::PreconditionFailed,
                            "the file shrank while it was read",
                        )),
                        None,
                    ),
                    Ok(Err(e)) => (Err(StoreError::io(Op::Get, &k, e)), None),
                    Err(e) => (Err(StoreError::new(Op::Get, &k, ErrorKind::Other, e.to_string())), None),
                })
            }
        })
        .boxed();
        Ok(GetResult {
            meta: meta_of(key.clone(), &id),
            range: r,
            body,
        })
    }

    async fn get_tags(&self, _key: &Key) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    async fn put(&self, key: &Key, _payload: Bytes, _opts: &PutOptions) -> Result<PutResult> {
        Err(read_only(Op::Put, key))
    }

    async fn create_multipart(&self, key: &Key, _opts: &PutOptions) -> Result<MultipartId> {
        Err(read_only(Op::CreateMultipart, key))
    }

    async fn upload_part(
        &self,
        key: &Key,
        _upload: &MultipartId,
        _part_number: u32,
        _payload: Bytes,
        _sums: &Checksums,
    ) -> Result<CompletedPart> {
        Err(read_only(Op::UploadPart, key))
    }

    async fn upload_part_copy(
        &self,
        key: &Key,
        _upload: &MultipartId,
        _part_number: u32,
        _src: &CopySource,
        _range: Range<u64>,
    ) -> Result<CompletedPart> {
        Err(read_only(Op::UploadPartCopy, key))
    }

    async fn complete_multipart(
        &self,
        key: &Key,
        _upload: &MultipartId,
        _parts: &[CompletedPart],
    ) -> Result<PutResult> {
        Err(read_only(Op::CompleteMultipart, key))
    }

    async fn abort_multipart(&self, key: &Key, _upload: &MultipartId) -> Result<()> {
        Err(read_only(Op::AbortMultipart, key))
    }

    async fn copy(&self, _src: &CopySource, dst: &Key, _opts: &CopyOptions) -> Result<PutResult> {
        Err(read_only(Op::Copy, dst))
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
        Ok(keys.iter().map(|k| read_only(Op::Delete, k)).collect())
    }
}
