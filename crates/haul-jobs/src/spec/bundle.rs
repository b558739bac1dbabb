//! The bundle jobs: `haul bundle` packs many small objects into tar
//! archives with a byte-offset index; `haul unbundle` restores members.

use std::path::PathBuf;

use haul_engine::bundle::Compression;
use haul_store::location::Location;
use serde::{Deserialize, Serialize};

use super::options::{ConnSpec, FilterSpec};
use super::values::{Loc, Size};

/// `haul bundle`: the objects under SRC (or an inventory's) into archives
/// under DST, `DST/<run>-NNNNNN.tar` (`.tar.zst` compressed) with `.index` sidecars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    /// s3://bucket/prefix or a local directory.
    pub src: Loc,
    /// s3://bucket/prefix or a local directory where archives land.
    pub dst: Loc,
    /// Source objects from an S3 Inventory manifest instead of a listing.
    #[serde(default)]
    pub inventory: Option<Loc>,
    /// With `inventory`: every version, not only current objects.
    #[serde(default)]
    pub versions: bool,
    /// Record each member's tags in the index (one GetObjectTagging per
    /// member), so `unbundle` to a bucket puts them back.
    #[serde(default)]
    pub tags: bool,
    /// Close an archive at this many members.
    #[serde(default = "max_members")]
    pub max_members: usize,
    /// Close an archive at this many bytes.
    #[serde(default = "max_bytes")]
    pub max_bytes: Size,
    /// Objects above this are copied as they are, under `DST/large/`.
    #[serde(default = "max_member_size")]
    pub max_member_size: Size,
    /// Close an archive where the first N path levels of the keys change.
    #[serde(default)]
    pub group_by_prefix: Option<usize>,
    /// Storage class of the archives (e.g. DEEP_ARCHIVE).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Where dead letters go (JSON lines).
    #[serde(default)]
    pub dlq: Option<PathBuf>,
    /// Bundle exactly the objects of an earlier run's dead-letter file.
    #[serde(default)]
    pub input_dlq: Option<PathBuf>,
    /// Name of the run (archive names start with it); default `bundle`.
    #[serde(default)]
    pub run: Option<String>,
    /// Member GETs in flight per archive.
    #[serde(default = "window")]
    pub window: usize,
    /// Archives written at once.
    #[serde(default = "archives")]
    pub archives_in_flight: usize,
    /// Part size of the archives' multipart uploads.
    #[serde(default = "archive_part_size")]
    pub part_size: Size,
    /// `"zstd"`: archives as zstd frames (`.tar.zst`), each member still one
    /// ranged GET; `"none"` (the default): plain tar.
    #[serde(default)]
    pub compress: Compression,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub filter: FilterSpec,
    #[serde(default)]
    pub src_conn: ConnSpec,
    #[serde(default)]
    pub dst_conn: ConnSpec,
}

/// `haul unbundle`: an archive's members back into a bucket prefix or a
/// local directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnbundleSpec {
    /// The archive: s3://bucket/key.tar or a local file.
    pub archive: Loc,
    /// s3://bucket/prefix or a local directory.
    pub dst: Loc,
    /// Only members matching one of these globs.
    #[serde(default)]
    pub include: Vec<String>,
    /// Replace files that exist (default: refuse them, member by member).
    #[serde(default)]
    pub overwrite: bool,
    /// Members read at once.
    #[serde(default = "window")]
    pub concurrency: usize,
    /// Members of this size or more are restored by multipart upload, in
    /// parts of this size (server-side part copies when the archive and
    /// the destination share an endpoint).
    #[serde(default = "part_size")]
    pub part_size: Size,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub src_conn: ConnSpec,
    #[serde(default)]
    pub dst_conn: ConnSpec,
}

fn max_members() -> usize {
    10_000
}
fn max_bytes() -> Size {
    Size(1 << 30)
}
fn max_member_size() -> Size {
    Size(64 << 20)
}
fn window() -> usize {
    64
}
fn archives() -> usize {
    4
}
fn part_size() -> Size {
    Size(16 << 20)
}
/// Archives' parts: 8 MiB, two uploading and one filling per archive, four
/// archives at once — under 100 MiB of part buffers for a whole run.
fn archive_part_size() -> Size {
    Size(8 << 20)
}

impl BundleSpec {
    /// A bundle of `src` into `dst` with every option at its default.
    pub fn new(src: Loc, dst: Loc) -> Self {
        BundleSpec {
            src,
            dst,
            inventory: None,
            versions: false,
            tags: false,
            max_members: max_members(),
            max_bytes: max_bytes(),
            max_member_size: max_member_size(),
            group_by_prefix: None,
            storage_class: None,
            dlq: None,
            input_dlq: None,
            run: None,
            window: window(),
            archives_in_flight: archives(),
            part_size: archive_part_size(),
            compress: Compression::None,
            dry_run: false,
            filter: FilterSpec::default(),
            src_conn: ConnSpec::default(),
            dst_conn: ConnSpec::default(),
        }
    }

    /// Refuses options that cannot run.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_members == 0 {
            return Err("--max-members must be at least 1".into());
        }
        if self.max_bytes.0 == 0 {
            return Err("--max-bytes must be more than 0".into());
        }
        if self.max_member_size.0 > self.max_bytes.0 {
            return Err(format!(
                "--max-member-size ({}) is larger than --max-bytes ({}): such members could never fit an archive",
                self.max_member_size, self.max_bytes
            ));
        }
        if self.inventory.is_some() && self.input_dlq.is_some() {
            return Err("--inventory and --input-dlq exclude each other: give one source of objects".into());
        }
        if self.versions && self.inventory.is_none() {
            return Err("--versions needs --inventory (a listing has current objects only)".into());
        }
        if self.group_by_prefix == Some(0) {
            return Err("--group-by-prefix must be at least 1 (path levels)".into());
        }
        if self.window == 0 || self.archives_in_flight == 0 {
            return Err("--window and --archives must be at least 1".into());
        }
        if self.part_size.0 < 5 << 20 || self.part_size.0 > 5 << 30 {
            return Err("--part-size must be between 5MiB and 5GiB".into());
        }
        if let Some(run) = &self.run {
            if run.is_empty() || run.contains(['/', '\\', '\0']) {
                return Err(format!("--run {run:?}: a name without slashes"));
            }
        }
        if matches!(self.dst.location(), Location::Stdio) || matches!(self.src.location(), Location::Stdio) {
            return Err("bundle reads a prefix or directory and writes archives under one, not stdin/stdout".into());
        }
        Ok(())
    }
}

impl UnbundleSpec {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.part_size.0 == 0 || self.part_size.0 > 5 << 30 {
            return Err("--part-size must be between 1 byte and 5GiB".into());
        }
        if matches!(self.dst.location(), Location::Stdio) {
            return Err(
                "unbundle writes to a bucket prefix or a directory; use `haul cat --member` for one member".into(),
            );
        }
        for g in &self.include {
            globset::Glob::new(g).map_err(|e| format!("--include {g:?}: {e}"))?;
        }
        Ok(())
    }
}
