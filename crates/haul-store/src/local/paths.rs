//! Keys to paths: which keys a directory can hold, and the folders a
//! delete leaves empty.

use std::fs;
use std::path::Path;

use crate::error::{ErrorKind, Op, Result, StoreError};
use crate::key::Key;

use super::{blocking, LocalStore, TMP_DIR};

/// Rejects keys that cannot be a path under the root.
pub(super) fn check_key(op: Op, key: &str) -> Result<()> {
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

impl LocalStore {
    pub(super) async fn delete_files(&self, keys: &[Key]) -> Result<Vec<StoreError>> {
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
