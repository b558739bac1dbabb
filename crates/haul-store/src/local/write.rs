//! The write path: `put` and `copy` write a temp file under `.haul-tmp`,
//! and `commit` moves it into place atomically (mtime and attributes set,
//! fsynced, renamed, the directory fsynced).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;

use crate::checksum::{md5_hex, Hasher};
use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;
use crate::types::*;

use super::attrs::{attrs_from, mtime_ns, read_attrs, Attrs, XATTR};
use super::paths::check_key;
use super::read::READ_CHUNK;
use super::{blocking, Inner, LocalStore};

impl LocalStore {
    pub(super) async fn put_file(&self, key: &Key, payload: Bytes, opts: &PutOptions) -> Result<PutResult> {
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

    pub(super) async fn copy_file(&self, src: &CopySource, dst: &Key, opts: &CopyOptions) -> Result<PutResult> {
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
}

impl Inner {
    /// Moves a finished temp file to `key` (sets mtime and attributes,
    /// fsyncs, renames); the temp file is removed if anything fails.
    /// `no_replace` (`If-None-Match: *`): an existing key is kept and the
    /// write refused with `PreconditionFailed`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit(
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
