//! What an upload of `haul watch` does when its key already exists
//! (`--if-exists overwrite|skip|rename`).
//!
//! `skip` and `rename` never replace an object: the key is looked up first
//! (HEAD), and the upload itself is conditional (`If-None-Match: *` on the
//! PUT or the CompleteMultipartUpload; a local destination moves the new
//! file in place with `RENAME_NOREPLACE`, which fails if the name is
//! taken), so an object written by someone else between the look-up and
//! the write is kept too. A server that answers the condition with 501
//! (learnt by the S3 store) or ignores it is protected by the look-up only
//! (a write in between the two is then replaced). An existing object with the very
//! bytes of the file (an upload of this watch whose answer was lost, a
//! crash before the journal recorded it) counts as this upload.

use std::io::Read;
use std::time::SystemTime;

use haul_store::{ErrorKind, Key, ObjectMeta, Op, StoreError};
use md5::{Digest, Md5};

use super::nofollow::Ident;
use super::{Inner, Outcome, UploadObserver};

/// What to do when the key of a file exists in the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfExists {
    /// Replace the object (the default).
    #[default]
    Overwrite,
    /// Keep the object; the file is not uploaded, kept, and reported.
    Skip,
    /// Upload under `name.<UTC time>.ext` instead.
    Rename,
}

/// `dir/export.csv` → `dir/export.20261130T225600Z.csv` (`-n` after the
/// time for the n-th try within one second).
pub fn renamed(key: &str, at: SystemTime, n: u32) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let stamp = if n > 0 { format!("{stamp}-{n}") } else { stamp };
    let (dir, name) = key.rsplit_once('/').map_or(("", key), |(d, n)| (d, n));
    let name = match name.rfind('.') {
        Some(i) if i > 0 => format!("{}.{stamp}{}", &name[..i], &name[i..]),
        _ => format!("{name}.{stamp}"),
    };
    if dir.is_empty() {
        name
    } else {
        format!("{dir}/{name}")
    }
}

/// An upload refused because the key exists (the condition failed).
fn refused_as_existing(e: &StoreError) -> bool {
    e.kind == ErrorKind::PreconditionFailed && matches!(e.op, Op::Put | Op::CompleteMultipart)
}

/// How one try to upload ended.
enum Tried {
    Done(u64),
    Exists,
    Other(Outcome),
}

impl Inner {
    /// Uploads the file `rel` (read as `meta`, `id`) to `dst_key`, or where
    /// `--if-exists` says. Ok: bytes uploaded and the key written.
    pub(super) async fn upload(
        &self,
        rel: &str,
        meta: &ObjectMeta,
        id: &Ident,
        dst_key: Key,
    ) -> Result<(u64, Key), Outcome> {
        if self.opts.if_exists == IfExists::Overwrite {
            return match self.try_upload(rel, meta, id, &dst_key).await {
                Tried::Done(b) => Ok((b, dst_key)),
                Tried::Exists => Err(Outcome::Failed(StoreError::new(
                    Op::Put,
                    dst_key.as_str(),
                    ErrorKind::PreconditionFailed,
                    "the destination refused to replace the object",
                ))),
                Tried::Other(o) => Err(o),
            };
        }
        let now = SystemTime::now();
        let mut target = dst_key.clone();
        for n in 0..5 {
            let existing = match self.dst.head(&target).await {
                Ok(m) => Some(m),
                Err(e) if e.kind == ErrorKind::NotFound => None,
                Err(e) => return Err(Outcome::Failed(e)),
            };
            let existing = match existing {
                None => match self.try_upload(rel, meta, id, &target).await {
                    Tried::Done(b) => return Ok((b, target)),
                    Tried::Other(o) => return Err(o),
                    Tried::Exists => self.dst.head(&target).await.ok(),
                },
                some => some,
            };
            if let Some(m) = &existing {
                if self.same_bytes(rel, id, m).await {
                    tracing::info!(key = rel, dst = %target, "the destination already holds these bytes");
                    return Ok((id.size, target));
                }
            }
            match self.opts.if_exists {
                IfExists::Rename => {
                    target = Key::object(renamed(dst_key.as_str(), now, n)).map_err(Outcome::Failed)?;
                }
                _ => return Err(Outcome::SkippedExists { dst_key: target }),
            }
        }
        Err(Outcome::Failed(StoreError::new(
            Op::Put,
            target.as_str(),
            ErrorKind::PreconditionFailed,
            "every new name tried exists",
        )))
    }

    async fn try_upload(&self, rel: &str, meta: &ObjectMeta, id: &Ident, dst_key: &Key) -> Tried {
        let obs = UploadObserver {
            journal: self.journal.clone(),
            key: rel.to_string(),
        };
        match self.transfer.copy(&self.src, meta, &self.dst, dst_key, &obs).await {
            Ok(o) => Tried::Done(o.bytes),
            Err(_) if self.transfer.cancel_token().is_cancelled() => Tried::Other(Outcome::Released),
            Err(e) if self.opts.if_exists != IfExists::Overwrite && refused_as_existing(&e) => Tried::Exists,
            // The file changed while it was read: not a failure, it is still being written.
            Err(e) if e.kind == ErrorKind::PreconditionFailed => {
                tracing::debug!(key = rel, error = %e, "changed while uploading; will upload again");
                Tried::Other(Outcome::NotSettled {
                    id: *id,
                    at_ms: super::now_ms() + self.opts.settle.as_millis() as i64,
                })
            }
            Err(e) => Tried::Other(Outcome::Failed(e)),
        }
    }

    /// Whether the object `existing` holds exactly the file's bytes (its
    /// ETag an MD5 equal to the file's).
    async fn same_bytes(&self, rel: &str, id: &Ident, existing: &ObjectMeta) -> bool {
        let Some(etag) = existing
            .etag
            .clone()
            .filter(|e| haul_store::checksum::etag_is_plain_md5(e))
        else {
            return false;
        };
        if existing.size != id.size {
            return false;
        }
        let (tree, r, want) = (self.tree.clone(), rel.to_string(), *id);
        tokio::task::spawn_blocking(move || {
            let Ok(Ok((mut f, got))) = tree.open_file(&r) else {
                return false;
            };
            if got != want {
                return false;
            }
            let mut h = Md5::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => h.update(&buf[..n]),
                    Err(_) => return false,
                }
            }
            hex::encode(h.finalize()) == etag
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_key_has_the_utc_time_before_the_extension() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_078_160); // 2026-11-30T22:36:00Z
        assert_eq!(renamed("in/export.csv", t, 0), "in/export.20261130T223600Z.csv");
        assert_eq!(renamed("in/a.tar.gz", t, 0), "in/a.tar.20261130T223600Z.gz");
        assert_eq!(renamed("README", t, 2), "README.20261130T223600Z-2");
        assert_eq!(renamed("d.x/noext", t, 0), "d.x/noext.20261130T223600Z");
    }
}
