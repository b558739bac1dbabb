//! One struct per kind of job, holding every option its command has.
//! Defaults are the CLI's: a job file names only what differs.

use std::path::PathBuf;

use haul_engine::march::Compare;
use haul_engine::watch::IfExists;
use serde::{Deserialize, Serialize};

use super::options::{ConnSpec, FilterSpec, ObjectSpec, TransferSpec, WriteSpec};
use super::values::{Dur, Loc};

/// `haul cp`: one object, or a tree with `recursive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpSpec {
    /// s3://bucket/key, s3://bucket/prefix (recursive), a local path, or - (stdin).
    pub src: Loc,
    /// s3://bucket/key-or-prefix, a local path, or - (stdout).
    pub dst: Loc,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub filter: FilterSpec,
    #[serde(default)]
    pub object: ObjectSpec,
    #[serde(default)]
    pub write: WriteSpec,
    #[serde(default)]
    pub transfer: TransferSpec,
    #[serde(default)]
    pub src_conn: ConnSpec,
    #[serde(default)]
    pub dst_conn: ConnSpec,
}

/// `haul sync`: make DST like SRC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    pub src: Loc,
    pub dst: Loc,
    #[serde(default = "etag")]
    pub compare: Compare,
    /// Delete what SRC lacks (after every copy succeeded).
    #[serde(default)]
    pub delete: bool,
    /// With `delete`: delete nothing if more than this many would go.
    #[serde(default)]
    pub max_delete: Option<u64>,
    #[serde(default)]
    pub dry_run: bool,
    /// Shards from a Campanile part file.
    #[serde(default)]
    pub part_file: Option<PathBuf>,
    /// One shard for the whole prefix.
    #[serde(default)]
    pub no_split: bool,
    /// Source keys from this file (one per line) instead of a listing.
    #[serde(default)]
    pub files_from: Option<PathBuf>,
    /// Source objects from an S3 Inventory manifest instead of a listing.
    #[serde(default)]
    pub inventory: Option<Loc>,
    #[serde(default = "four")]
    pub shards_in_flight: usize,
    #[serde(default = "split_min_keys")]
    pub split_min_keys: usize,
    /// Where the resume journal lives (default: the user's state dir).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub no_journal: bool,
    #[serde(default)]
    pub fresh: bool,
    #[serde(default)]
    pub filter: FilterSpec,
    #[serde(default)]
    pub object: ObjectSpec,
    #[serde(default)]
    pub write: WriteSpec,
    #[serde(default)]
    pub transfer: TransferSpec,
    #[serde(default)]
    pub src_conn: ConnSpec,
    #[serde(default)]
    pub dst_conn: ConnSpec,
}

fn etag() -> Compare {
    Compare::Etag
}
fn four() -> usize {
    4
}
fn split_min_keys() -> usize {
    20_000
}
fn thirty_two() -> usize {
    32
}

/// `haul diff`: what a sync would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffSpec {
    pub src: Loc,
    pub dst: Loc,
    #[serde(default = "etag")]
    pub compare: Compare,
    /// Also list the keys that are the same.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub src_conn: ConnSpec,
    #[serde(default)]
    pub dst_conn: ConnSpec,
}

/// `haul verify`: DST holds every object of SRC with the same content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    pub src: Loc,
    pub dst: Loc,
    #[serde(default)]
    pub filter: FilterSpec,
    /// Objects checked at once.
    #[serde(default = "thirty_two")]
    pub concurrency: usize,
    /// Also list the objects that match.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub src_conn: ConnSpec,
    #[serde(default)]
    pub dst_conn: ConnSpec,
}

/// `haul rm`: one object, or a prefix with `recursive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmSpec {
    pub location: Loc,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub conn: ConnSpec,
}

/// Retrieval tier of a restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    Bulk,
    #[default]
    Standard,
    Expedited,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Bulk => "Bulk",
            Tier::Standard => "Standard",
            Tier::Expedited => "Expedited",
        }
    }
}

/// `haul restore`: restore archived objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSpec {
    pub location: Loc,
    /// How long the restored copies stay available.
    pub days: u32,
    #[serde(default)]
    pub tier: Tier,
    /// Objects from an S3 Inventory manifest instead of a listing.
    #[serde(default)]
    pub inventory: Option<Loc>,
    #[serde(default = "thirty_two")]
    pub concurrency: usize,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub conn: ConnSpec,
}

/// `haul watch`: ingest a growing local tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSpec {
    /// The local directory to ingest.
    pub dir: PathBuf,
    /// s3://bucket[/prefix] or a local directory.
    pub dst: Loc,
    #[serde(default = "WatchSpec::default_settle")]
    pub settle: Dur,
    #[serde(default = "WatchSpec::default_rescan")]
    pub rescan_every: Dur,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub delete_after_upload: bool,
    #[serde(default)]
    pub prune_empty_dirs: bool,
    #[serde(default = "WatchSpec::default_keep_dirs")]
    pub keep_dirs_for: Dur,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default = "WatchSpec::default_rescan")]
    pub retry_max_delay: Dur,
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub once: bool,
    #[serde(default = "WatchSpec::default_shutdown")]
    pub shutdown_timeout: Dur,
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    #[serde(default = "WatchSpec::default_retention")]
    pub log_retention_days: usize,
    #[serde(default)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[serde(default = "WatchSpec::default_summary")]
    pub summary_every: Dur,
    #[serde(default)]
    pub no_events: bool,
    #[serde(default)]
    pub if_exists: IfExists,
    #[serde(default = "WatchSpec::default_event_queue")]
    pub event_queue: usize,
    #[serde(default)]
    pub object: ObjectSpec,
    #[serde(default)]
    pub transfer: TransferSpec,
    #[serde(default)]
    pub conn: ConnSpec,
}

impl WatchSpec {
    pub fn default_settle() -> Dur {
        Dur(std::time::Duration::from_secs(2))
    }
    pub fn default_rescan() -> Dur {
        Dur(std::time::Duration::from_secs(600))
    }
    pub fn default_keep_dirs() -> Dur {
        Dur(std::time::Duration::from_secs(86_400))
    }
    pub fn default_shutdown() -> Dur {
        Dur(std::time::Duration::from_secs(30))
    }
    pub fn default_retention() -> usize {
        14
    }
    pub fn default_summary() -> Dur {
        Dur(std::time::Duration::from_secs(60))
    }
    pub fn default_event_queue() -> usize {
        65_536
    }
}

impl CpSpec {
    /// A copy of `src` to `dst` with every option at its default.
    pub fn new(src: Loc, dst: Loc) -> Self {
        CpSpec {
            src,
            dst,
            recursive: false,
            dry_run: false,
            filter: FilterSpec::default(),
            object: ObjectSpec::default(),
            write: WriteSpec::default(),
            transfer: TransferSpec::default(),
            src_conn: ConnSpec::default(),
            dst_conn: ConnSpec::default(),
        }
    }
}

impl SyncSpec {
    /// A sync of `src` into `dst` with every option at its default.
    pub fn new(src: Loc, dst: Loc) -> Self {
        SyncSpec {
            src,
            dst,
            compare: etag(),
            delete: false,
            max_delete: None,
            dry_run: false,
            part_file: None,
            no_split: false,
            files_from: None,
            inventory: None,
            shards_in_flight: four(),
            split_min_keys: split_min_keys(),
            state_dir: None,
            no_journal: false,
            fresh: false,
            filter: FilterSpec::default(),
            object: ObjectSpec::default(),
            write: WriteSpec::default(),
            transfer: TransferSpec::default(),
            src_conn: ConnSpec::default(),
            dst_conn: ConnSpec::default(),
        }
    }
}
