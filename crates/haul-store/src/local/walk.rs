//! Listing: a depth-first walk in S3's byte order (siblings sorted with
//! directories as `name/`, so the walk comes out globally sorted), in a
//! blocking thread that hands entries to the reader in batches.

use std::fs;
use std::path::{Path, PathBuf};

use futures::stream::{BoxStream, StreamExt};

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::{Key, KeyRange};
use crate::types::*;

use super::attrs::meta_from;
use super::read::tokio_stream_from;
use super::TMP_DIR;

/// Listing entries sent to the reader at a time.
const LIST_BATCH: usize = 256;

pub(super) fn list(root: PathBuf, req: ListRequest) -> BoxStream<'static, Result<ListEntry>> {
    // Entries travel in batches: one wake-up of the reader per batch,
    // not per entry.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Result<ListEntry>>>(8);
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
        // Deleted between readdir and stat: not listed, as in S3.
        let Some(entry) = file_entry(root, key) else {
            continue;
        };
        if !send(entry) {
            return;
        }
    }
}

/// The listing entry of the file at `key` (a file when its directory was
/// read): an object, or why it is not one any more; `None` when it was
/// deleted since.
fn file_entry(root: &Path, key: String) -> Option<Result<ListEntry>> {
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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
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
    Some(entry)
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
