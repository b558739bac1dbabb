//! Two sorted listings walked in lock step — rclone's march — turned into
//! sync actions: copy (new), copy (changed), delete (extraneous, only when
//! asked) and skip (same, with the reason). Memory is one entry per side,
//! whatever the size of the buckets.
//!
//! Keys are compared relative to each side's prefix; both listings come in
//! byte order, and stripping a common prefix keeps that order.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use futures::stream::{self, BoxStream, StreamExt};
use haul_store::checksum::{etag_is_plain_md5, etag_parts};
use haul_store::{Key, ListEntry, ObjectMeta, SkipReason, StoreError, Unlisted};
use serde::Serialize;

/// How "the same" is decided for a key present on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// Same size.
    Size,
    /// Same size, and the destination is not older than the source.
    Mtime,
    /// Same ETag where the two are comparable (both single-part MD5s, or
    /// multipart with the same part count); otherwise as `mtime`.
    Etag,
    /// Same content, by the strongest check both sides allow (comparable
    /// ETags, a recomputed local ETag, CRC64NVME, or reading both): see
    /// `verify::same_content`. Costs a HEAD or a read per same-size pair.
    Checksum,
    /// Always copy.
    Always,
}

impl Compare {
    pub const NAMES: &'static str = "size, mtime, etag, checksum, always";
}

/// An unknown `--compare` value.
#[derive(Debug, thiserror::Error)]
#[error("unknown comparison mode {0:?} (expected one of: {names})", names = Compare::NAMES)]
pub struct UnknownCompare(pub String);

impl FromStr for Compare {
    type Err = UnknownCompare;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "size" => Ok(Compare::Size),
            "mtime" => Ok(Compare::Mtime),
            "etag" => Ok(Compare::Etag),
            "checksum" => Ok(Compare::Checksum),
            "always" => Ok(Compare::Always),
            other => Err(UnknownCompare(other.to_string())),
        }
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compare::Size => "size",
            Compare::Mtime => "mtime",
            Compare::Etag => "etag",
            Compare::Checksum => "checksum",
            Compare::Always => "always",
        })
    }
}

/// What to do with one key.
#[derive(Debug)]
pub enum SyncAction {
    /// Copy `src` to the destination key; `dst` is what is there now.
    Copy {
        src: ObjectMeta,
        dst: Option<ObjectMeta>,
        dst_key: Key,
        reason: String,
    },
    /// Delete an extraneous destination object.
    Delete { dst: ObjectMeta, reason: String },
    /// Nothing to do.
    Skip {
        src: ObjectMeta,
        dst: ObjectMeta,
        reason: String,
    },
    /// A listing entry (of either side) that cannot be an object: reported
    /// and skipped; the march goes on (it is neither copied nor deleted).
    Unlisted(Unlisted),
    /// A listing failed: the march stops here (deleting on a partial view
    /// of the destination would be wrong).
    Error(StoreError),
}

impl SyncAction {
    /// `copy`, `delete`, `skip` or `error`.
    pub fn name(&self) -> &'static str {
        match self {
            SyncAction::Copy { .. } => "copy",
            SyncAction::Delete { .. } => "delete",
            SyncAction::Skip { .. } => "skip",
            SyncAction::Unlisted(_) => "skipped",
            SyncAction::Error(_) => "error",
        }
    }
}

/// The modification time a side reports: haul's (or rclone's) `mtime`
/// metadata when present, the last-modified time otherwise.
fn mtime(o: &ObjectMeta) -> Option<SystemTime> {
    crate::transfer::mtime_of(o)
}

/// Why two objects differ under `mode`, or `Err(reason they are the same)`.
pub fn differs(mode: Compare, src: &ObjectMeta, dst: &ObjectMeta) -> Result<String, String> {
    if mode == Compare::Always {
        return Ok("always copy".into());
    }
    if src.size != dst.size {
        return Ok(format!("size differs ({} vs {})", src.size, dst.size));
    }
    if matches!(mode, Compare::Size | Compare::Checksum) {
        // Checksum mode checks content after the march (`SyncJob::march`).
        return Err("same size".into());
    }
    if mode == Compare::Etag {
        if let (Some(s), Some(d)) = (&src.etag, &dst.etag) {
            let comparable = (etag_is_plain_md5(s) && etag_is_plain_md5(d))
                || (etag_parts(s).is_some() && etag_parts(s) == etag_parts(d));
            if comparable {
                return if s == d {
                    Err("same ETag".into())
                } else {
                    Ok(format!("ETag differs ({s} vs {d})"))
                };
            }
        }
    }
    // Mtime, and Etag when the ETags cannot be compared.
    let fallback = if mode == Compare::Etag {
        " (ETags not comparable)"
    } else {
        ""
    };
    // Listings give whole seconds (S3's LastModified): compare at that precision.
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    match (mtime(src).map(secs), mtime(dst).map(secs)) {
        (Some(s), Some(d)) if s > d => Ok(format!("source is newer{fallback}")),
        _ => Err(format!("same size, destination not older{fallback}")),
    }
}

/// The options of a march.
#[derive(Debug, Clone)]
pub struct MarchOptions {
    pub src_prefix: Key,
    pub dst_prefix: Key,
    pub compare: Compare,
    /// Emit deletes for destination objects the source does not have.
    pub delete: bool,
    /// The destination cannot hold folder markers (`dir/` keys; a local
    /// directory): the source's are skipped, reported as such.
    pub skip_folder_markers: bool,
}

struct State {
    src: BoxStream<'static, haul_store::Result<ListEntry>>,
    dst: BoxStream<'static, haul_store::Result<ListEntry>>,
    s: Option<ObjectMeta>,
    d: Option<ObjectMeta>,
    s_done: bool,
    d_done: bool,
    failed: bool,
    opts: MarchOptions,
}

/// The next object of a listing (common prefixes are not objects), or an
/// entry that cannot be one.
async fn next_object(
    s: &mut BoxStream<'static, haul_store::Result<ListEntry>>,
) -> Option<haul_store::Result<Result<ObjectMeta, Unlisted>>> {
    loop {
        match s.next().await? {
            Ok(ListEntry::Object(o)) => return Some(Ok(Ok(o))),
            Ok(ListEntry::Unlisted(u)) => return Some(Ok(Err(u))),
            Ok(ListEntry::Prefix(_)) => continue,
            Err(e) => return Some(Err(e)),
        }
    }
}

fn rel<'a>(o: &'a ObjectMeta, prefix: &Key) -> &'a str {
    o.key.strip_prefix(prefix).unwrap_or(o.key.as_str())
}

impl State {
    /// Fills the two heads; a listing error ends the march, an entry that
    /// cannot be an object is handed out as it comes.
    async fn fill(&mut self) -> Option<SyncAction> {
        if self.s.is_none() && !self.s_done {
            match next_object(&mut self.src).await {
                Some(Ok(Ok(o))) if self.opts.skip_folder_markers && o.key.is_dir_marker() => {
                    return Some(SyncAction::Unlisted(Unlisted {
                        key: o.key,
                        reason: SkipReason::FolderMarker,
                        detail: "a folder marker (a key ending in '/'): folders are implied in a local directory"
                            .into(),
                    }));
                }
                Some(Ok(Ok(o))) => self.s = Some(o),
                Some(Ok(Err(u))) => return Some(SyncAction::Unlisted(u)),
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(SyncAction::Error(e));
                }
                None => self.s_done = true,
            }
        }
        if self.d.is_none() && !self.d_done {
            match next_object(&mut self.dst).await {
                Some(Ok(Ok(o))) => self.d = Some(o),
                Some(Ok(Err(u))) => return Some(SyncAction::Unlisted(u)),
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(SyncAction::Error(e));
                }
                None => self.d_done = true,
            }
        }
        None
    }

    fn copy(&self, src: ObjectMeta, dst: Option<ObjectMeta>, reason: String) -> SyncAction {
        let r = rel(&src, &self.opts.src_prefix).to_string();
        match self.opts.dst_prefix.join(&r) {
            Ok(dst_key) => SyncAction::Copy {
                src,
                dst,
                dst_key,
                reason,
            },
            Err(e) => SyncAction::Error(StoreError {
                key: src.key.to_string(),
                ..e
            }),
        }
    }

    async fn step(&mut self) -> Option<SyncAction> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(a) = self.fill().await {
                return Some(a);
            }
            let order = match (&self.s, &self.d) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(s), Some(d)) => rel(s, &self.opts.src_prefix)
                    .as_bytes()
                    .cmp(rel(d, &self.opts.dst_prefix).as_bytes()),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let s = self.s.take()?;
                    return Some(self.copy(s, None, "new".into()));
                }
                std::cmp::Ordering::Greater => {
                    let d = self.d.take()?;
                    if self.opts.delete {
                        return Some(SyncAction::Delete {
                            dst: d,
                            reason: "not in the source".into(),
                        });
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (s, d) = (self.s.take()?, self.d.take()?);
                    return Some(match differs(self.opts.compare, &s, &d) {
                        Ok(why) => self.copy(s, Some(d), why),
                        Err(why) => SyncAction::Skip {
                            src: s,
                            dst: d,
                            reason: why,
                        },
                    });
                }
            }
        }
    }
}

/// Walks a source and a destination listing (both recursive, in byte order)
/// in lock step.
pub fn march(
    src: BoxStream<'static, haul_store::Result<ListEntry>>,
    dst: BoxStream<'static, haul_store::Result<ListEntry>>,
    opts: MarchOptions,
) -> BoxStream<'static, SyncAction> {
    let st = State {
        src,
        dst,
        s: None,
        d: None,
        s_done: false,
        d_done: false,
        failed: false,
        opts,
    };
    stream::unfold(st, |mut st| async move { st.step().await.map(|a| (a, st)) }).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn obj(key: &str, size: u64, etag: &str, mtime_secs: u64) -> ObjectMeta {
        ObjectMeta {
            key: Key::prefix(key).unwrap_or_default(),
            size,
            etag: (!etag.is_empty()).then(|| etag.to_string()),
            last_modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_secs)),
            ..Default::default()
        }
    }

    fn listing(v: Vec<ObjectMeta>) -> BoxStream<'static, haul_store::Result<ListEntry>> {
        stream::iter(v.into_iter().map(|o| Ok(ListEntry::Object(o)))).boxed()
    }

    const A: &str = "0cc175b9c0f1b6a831c399e269772661";
    const B: &str = "92eb5ffee6ae2fec3ad71c777531578f";

    #[tokio::test]
    async fn lock_step_actions() {
        let src = vec![
            obj("s/a", 1, A, 10),
            obj("s/b", 1, A, 10),
            obj("s/c", 2, A, 10),
            obj("s/e", 1, A, 10),
        ];
        let dst = vec![
            obj("d/a", 1, A, 20),
            obj("d/b", 1, B, 20),
            obj("d/c", 1, A, 20),
            obj("d/d", 1, A, 20),
        ];
        let opts = MarchOptions {
            src_prefix: Key::prefix("s/").unwrap_or_default(),
            dst_prefix: Key::prefix("d/").unwrap_or_default(),
            compare: Compare::Etag,
            delete: true,
            skip_folder_markers: false,
        };
        let got: Vec<String> = march(listing(src.clone()), listing(dst.clone()), opts.clone())
            .map(|a| match a {
                SyncAction::Copy {
                    src, dst_key, reason, ..
                } => format!("copy {} -> {dst_key}: {reason}", src.key),
                SyncAction::Delete { dst, .. } => format!("delete {}", dst.key),
                SyncAction::Skip { src, reason, .. } => format!("skip {}: {reason}", src.key),
                SyncAction::Unlisted(u) => format!("skipped {}: {}", u.key, u.reason),
                SyncAction::Error(e) => format!("error {e}"),
            })
            .collect()
            .await;
        assert_eq!(
            got,
            [
                "skip s/a: same ETag",
                &format!("copy s/b -> d/b: ETag differs ({A} vs {B})"),
                "copy s/c -> d/c: size differs (2 vs 1)",
                "delete d/d",
                "copy s/e -> d/e: new",
            ]
        );
        // Without --delete, extraneous objects are left alone.
        let no_delete = MarchOptions { delete: false, ..opts };
        let n = march(listing(src), listing(dst), no_delete)
            .filter(|a| futures::future::ready(matches!(a, SyncAction::Delete { .. })))
            .count()
            .await;
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_listing_error_stops_the_march() {
        let src = stream::iter(vec![
            Ok(ListEntry::Object(obj("a", 1, A, 1))),
            Err(StoreError::new(
                haul_store::Op::List,
                "",
                haul_store::ErrorKind::Transient,
                "boom",
            )),
            Ok(ListEntry::Object(obj("b", 1, A, 1))),
        ])
        .boxed();
        let opts = MarchOptions {
            src_prefix: Key::root(),
            dst_prefix: Key::root(),
            compare: Compare::Size,
            delete: true,
            skip_folder_markers: false,
        };
        let got: Vec<&str> = march(src, listing(vec![obj("z", 1, A, 1)]), opts)
            .map(|a| a.name())
            .collect()
            .await;
        assert_eq!(
            got,
            ["copy", "error"],
            "nothing after the error, in particular no delete"
        );
    }

    #[test]
    fn comparison_modes() {
        let s = obj("k", 5, A, 100);
        assert!(differs(Compare::Size, &s, &obj("k", 5, B, 1)).is_err());
        assert!(differs(Compare::Size, &s, &obj("k", 6, A, 1)).is_ok());
        assert!(differs(Compare::Mtime, &s, &obj("k", 5, A, 50)).is_ok(), "source newer");
        assert!(differs(Compare::Mtime, &s, &obj("k", 5, A, 150)).is_err());
        assert!(
            differs(Compare::Etag, &s, &obj("k", 5, B, 150)).is_ok(),
            "same size, other content"
        );
        // Multipart vs single-part ETags are not comparable: fall back to mtime.
        let r = differs(Compare::Etag, &s, &obj("k", 5, "abc-2", 150));
        assert_eq!(r, Err("same size, destination not older (ETags not comparable)".into()));
        assert!(differs(Compare::Always, &s, &s).is_ok());
        // Sub-second differences are below what listings report.
        let mut fine = obj("k", 5, A, 100);
        fine.last_modified = fine.last_modified.map(|t| t + Duration::from_millis(300));
        assert!(differs(Compare::Mtime, &fine, &obj("k", 5, A, 100)).is_err());
        assert!("checksumz".parse::<Compare>().is_err());
        assert_eq!("checksum".parse::<Compare>().ok(), Some(Compare::Checksum));
        let e = "bogus"
            .parse::<Compare>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown comparison mode \"bogus\""), "{e}");
    }
}
