//! Planning a bundle run: a sorted stream of listed objects cut into
//! archives — serializable work units ([`BundleUnit`]) another process can
//! write, and a crashed run can plan again identically.
//!
//! The [`Grouper`] holds one open group at a time (memory bounded by it,
//! never by the object count) and closes it at `max_members`, at
//! `max_bytes`, before the archive would need more than the destination's
//! part limit, at a prefix boundary (the first `group_by_prefix` levels of
//! the member name) or at a change of storage class. Archive names are the
//! run id and a sequence number (`<run>-000001.tar`, `.tar.zst` when
//! compressed): the same listing and
//! options plan the same archives with the same members.
//!
//! Objects above `max_member_size` are not bundled ([`Planned::Large`]);
//! folder markers (keys ending in `/`, no data) are dropped (counted);
//! objects that cannot be read or named ([`Planned::Dead`]: archive tiers,
//! unsafe names) are decided here, before any request.

use std::time::UNIX_EPOCH;

use haul_store::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::dead::{is_archived_class, DeadLetter, DeadReason};
use super::format::{padding, BLOCK};
use super::frames::Compression;
use super::tar::unsafe_name;

/// The destination's part limit (S3: 10,000).
pub const MAX_PARTS: u64 = 10_000;

/// How a run groups and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleOptions {
    /// Members per archive.
    pub max_members: usize,
    /// Data bytes per archive (an object larger alone gets its own).
    pub max_bytes: u64,
    /// Objects above this are copied as they are, not bundled.
    pub max_member_size: u64,
    /// Close an archive where the first N `/`-levels of the name change.
    pub group_by_prefix: Option<usize>,
    /// Multipart part size of the archives.
    pub part_size: u64,
    /// Member GETs in flight per archive.
    pub window: usize,
    /// Archives written at once by a run.
    pub archives_in_flight: usize,
    /// Large objects copied at once by a run.
    pub large_in_flight: usize,
    /// Record each member's tags in the index (one more request per
    /// member: GetObjectTagging).
    #[serde(default)]
    pub tags: bool,
    /// Archives as zstd frames (`.tar.zst`) or plain tar.
    #[serde(default)]
    pub compress: Compression,
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions {
            max_members: 10_000,
            max_bytes: 1 << 30,
            max_member_size: 64 << 20,
            group_by_prefix: None,
            part_size: 8 << 20,
            window: 64,
            archives_in_flight: 2,
            large_in_flight: 4,
            tags: false,
            compress: Compression::None,
        }
    }
}

/// One member as planned: what the listing said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMember {
    /// The source key.
    pub key: String,
    /// The name in the archive (the key relative to the source prefix).
    pub name: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// LastModified, nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i128>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The version listed (an inventory of a versioned bucket): the one
    /// read, and recorded in the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// One archive to write: a work unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleUnit {
    /// The archive's name under the destination prefix (`<run>-000001.tar`).
    pub name: String,
    /// Its sequence number in the run (from 1).
    pub seq: u64,
    /// The members' storage class (one per archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    pub members: Vec<PlannedMember>,
    /// Data bytes of the members.
    pub bytes: u64,
}

/// What the planner makes of one listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// A closed archive.
    Archive(BundleUnit),
    /// Too large to bundle: copied as it is.
    Large(ObjectMeta),
    /// Never readable into an archive: a dead letter before any request.
    Dead(DeadLetter),
}

/// The archive name of sequence number `seq` of run `run`.
pub fn archive_name(run: &str, seq: u64) -> String {
    format!("{run}-{seq:06}.tar")
}

/// Bytes an archive's tail takes besides the index: two zero blocks and
/// the locator.
const TAIL: u64 = 3 * BLOCK;

/// A generous estimate of the archive bytes one member adds: its data
/// and padding, a PAX header with its name, and its index line.
fn member_cost(name: &str, size: u64) -> u64 {
    let header = BLOCK
        + if name.len() > 100 || !name.is_ascii() {
            2 * BLOCK + name.len() as u64
        } else {
            0
        };
    header + size + padding(size) + 1024 + 2 * name.len() as u64
}

/// Cuts a sorted stream of listed objects into archives; see the module
/// documentation.
#[derive(Debug)]
pub struct Grouper {
    run: String,
    src_prefix: String,
    opts: BundleOptions,
    seq: u64,
    open: Vec<PlannedMember>,
    open_bytes: u64,
    open_cost: u64,
    /// (prefix boundary, storage class) of the open group.
    open_key: Option<(String, String)>,
    folders: u64,
    high_water: usize,
}

impl Grouper {
    /// A grouper for run `run` over keys under `src_prefix`.
    pub fn new(run: &str, src_prefix: &str, opts: &BundleOptions) -> Self {
        Grouper {
            run: run.to_string(),
            src_prefix: src_prefix.to_string(),
            opts: opts.clone(),
            seq: 0,
            open: Vec::new(),
            open_bytes: 0,
            open_cost: 0,
            open_key: None,
            folders: 0,
            high_water: 0,
        }
    }

    /// Folder markers dropped so far.
    pub fn folders(&self) -> u64 {
        self.folders
    }

    /// Members of the open group.
    pub fn open_members(&self) -> usize {
        self.open.len()
    }

    /// The most members the open group ever held.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// The largest archive the part limit allows, with room for the index's
    /// metadata (unknown before the GETs).
    fn max_archive_bytes(&self) -> u64 {
        let limit = self.opts.part_size.max(1).saturating_mul(MAX_PARTS);
        limit - limit / 16
    }

    /// Takes the next listed object (keys in ascending order); what it
    /// closes or decides, in order.
    pub fn push(&mut self, meta: ObjectMeta) -> Vec<Planned> {
        let key = meta.key.as_str();
        let name = key.strip_prefix(self.src_prefix.as_str()).unwrap_or(key).to_string();
        if key.ends_with('/') && meta.size == 0 {
            self.folders += 1;
            return Vec::new();
        }
        if let Some(why) = unsafe_name(&name) {
            let d = DeadLetter::new(key, meta.size, meta.etag.as_deref(), DeadReason::UnsafeName, why);
            return vec![Planned::Dead(d)];
        }
        if meta.size > self.opts.max_member_size {
            return vec![Planned::Large(meta)];
        }
        if is_archived_class(meta.storage_class.as_deref()) {
            let class = meta.storage_class.as_deref().unwrap_or_default();
            let msg = format!("in {class}: restore it first (haul restore)");
            let d = DeadLetter::new(key, meta.size, meta.etag.as_deref(), DeadReason::Archived, msg);
            return vec![Planned::Dead(d)];
        }
        let class = meta.storage_class.clone().unwrap_or_else(|| "STANDARD".into());
        let boundary = self
            .opts
            .group_by_prefix
            .map(|n| name.split('/').take(n).collect::<Vec<_>>().join("/"))
            .unwrap_or_default();
        let group = (boundary, class);
        let cost = member_cost(&name, meta.size);
        let mut out = Vec::new();
        let full = !self.open.is_empty()
            && (self.open.len() >= self.opts.max_members.max(1)
                || self.open_bytes + meta.size > self.opts.max_bytes
                || self.open_cost + cost + TAIL > self.max_archive_bytes()
                || self.open_key.as_ref() != Some(&group));
        if full {
            out.extend(self.close());
        }
        let mtime_ns = meta
            .last_modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128);
        self.open.push(PlannedMember {
            key: key.to_string(),
            name,
            size: meta.size,
            etag: meta.etag,
            mtime_ns,
            storage_class: meta.storage_class,
            version_id: meta.version_id,
        });
        self.high_water = self.high_water.max(self.open.len());
        self.open_bytes += meta.size;
        self.open_cost += cost;
        self.open_key = Some(group);
        out
    }

    fn close(&mut self) -> Option<Planned> {
        if self.open.is_empty() {
            return None;
        }
        self.seq += 1;
        let members = std::mem::take(&mut self.open);
        let storage_class = members.first().and_then(|m| m.storage_class.clone());
        let unit = BundleUnit {
            name: archive_name(&self.run, self.seq) + self.opts.compress.suffix(),
            seq: self.seq,
            storage_class,
            members,
            bytes: self.open_bytes,
        };
        self.open_bytes = 0;
        self.open_cost = 0;
        self.open_key = None;
        Some(Planned::Archive(unit))
    }

    /// The end of the listing: the last open group.
    pub fn finish(&mut self) -> Option<Planned> {
        self.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_store::Key;

    fn meta(key: &str, size: u64, class: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            key: Key::object(key).unwrap_or_else(|e| panic!("{e}")),
            size,
            etag: Some(format!("e-{key}")),
            storage_class: class.map(str::to_string),
            ..Default::default()
        }
    }

    fn names(out: &[Planned]) -> Vec<String> {
        out.iter()
            .filter_map(|p| match p {
                Planned::Archive(u) => Some(format!(
                    "{}:{}",
                    u.name,
                    u.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(",")
                )),
                _ => None,
            })
            .collect()
    }

    fn run(opts: &BundleOptions, metas: &[ObjectMeta]) -> Vec<Planned> {
        let mut g = Grouper::new("r", "p/", opts);
        let mut out = Vec::new();
        for m in metas {
            out.extend(g.push(m.clone()));
        }
        out.extend(g.finish());
        out
    }

    #[test]
    fn closes_at_count_bytes_prefix_and_class() {
        let opts = BundleOptions {
            max_members: 2,
            max_bytes: 10,
            group_by_prefix: Some(1),
            max_member_size: 8,
            ..Default::default()
        };
        let metas = [
            meta("p/a/1", 1, None),
            meta("p/a/2", 1, None),
            meta("p/a/3", 1, None),
            meta("p/b/1", 6, None),
            meta("p/b/2", 6, None),
            meta("p/b/3", 9, None),
            meta("p/b/4", 1, Some("STANDARD_IA")),
            meta("p/b/5", 0, Some("GLACIER")),
            meta("p/c/", 0, None),
            meta("p/c/..", 1, None),
        ];
        let out = run(&opts, &metas);
        assert_eq!(
            names(&out),
            [
                "r-000001.tar:a/1,a/2",
                "r-000002.tar:a/3",
                "r-000003.tar:b/1",
                "r-000004.tar:b/2",
                "r-000005.tar:b/4",
            ]
        );
        assert!(out
            .iter()
            .any(|p| matches!(p, Planned::Large(m) if m.key.as_str() == "p/b/3")));
        let dead: Vec<_> = out
            .iter()
            .filter_map(|p| match p {
                Planned::Dead(d) => Some((d.key.as_str(), d.reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            dead,
            [("p/b/5", DeadReason::Archived), ("p/c/..", DeadReason::UnsafeName)]
        );
        assert_eq!(run(&opts, &metas), out, "deterministic");
    }
}
