//! Arguments of the bundle commands (`bundle`, `unbundle`), kept apart
//! from args.rs so each file stays readable.

use clap::{Args, ValueEnum};

use crate::args::{parse_size, Conn, DryRunArgs};

pub const BUNDLE_HELP: &str = "\
Examples:
  haul bundle s3://logs/2019/ s3://archive/logs-2019/ --storage-class DEEP_ARCHIVE --dlq dead.jsonl
  haul bundle ./small-files s3://archive/batch1/ --max-members 50000 --max-bytes 4GiB
  haul bundle s3://logs/ s3://archive/logs/ --dry-run      # archives, requests, estimated cost
  haul bundle s3://logs/ s3://archive/logs/ --inventory s3://inv/logs/daily/2026-11-30T01-00Z/manifest.json
  haul bundle s3://logs/ s3://archive/logs/ --input-dlq dead.jsonl --run retry1
  haul bundle s3://logs/ s3://archive/logs/ --compress zstd   # <run>-NNNNNN.tar.zst

Archives land as DST/<run>-NNNNNN.tar with a sidecar DST/<run>-NNNNNN.tar.index (JSON
lines: name, key, offsets, size, ETag, CRC64NVME, mtime, storage class, content type,
metadata, and tags with --tags) and the same index as the archive's last member; DST/<run>.bundles.jsonl lists
the archives. With --compress zstd an archive is DST/<run>-NNNNNN.tar.zst: zstd frames
(`zstd -dc A.tar.zst | tar -x` reads it), each member still one ranged GET. Objects above --max-member-size are copied as they are under DST/large/.
Objects that cannot be read go to --dlq with a reason (not_found, access_denied,
archived, changed, throttled, too_large, unsafe_name); archived ones also to FILE.archived
for `haul restore --files-from`. A re-run with the same --run skips complete archives.
Read back: haul ls --members A.tar; haul cat --member NAME A.tar; haul unbundle A.tar DST;
haul verify --bundle A.tar.";

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The objects to pack: s3://bucket/prefix or a local directory.
    pub src: String,
    /// Where archives land: s3://bucket/prefix or a local directory.
    pub dst_prefix: String,
    /// Take the objects from an S3 Inventory (manifest.json; CSV.gz or Parquet) instead of listing SRC.
    #[arg(long)]
    pub inventory: Option<String>,
    /// With --inventory: every version and delete marker row, not only current objects.
    #[arg(long, requires = "inventory")]
    pub versions: bool,
    /// Bundle exactly the objects of an earlier run's --dlq file (after fixing what failed them).
    #[arg(long, conflicts_with = "inventory")]
    pub input_dlq: Option<std::path::PathBuf>,
    /// Record each member's tags in the index (one more request per member: GetObjectTagging),
    /// so `unbundle` to a bucket puts them back.
    #[arg(long)]
    pub tags: bool,
    /// Close an archive at this many members.
    #[arg(long, default_value_t = 10_000)]
    pub max_members: usize,
    /// Close an archive at this many data bytes.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub max_bytes: u64,
    /// Objects larger than this are copied as they are, under DST_PREFIX/large/.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub max_member_size: u64,
    /// Close an archive where the first N path levels of the keys change.
    #[arg(long)]
    pub group_by_prefix: Option<usize>,
    /// Storage class of the archives (e.g. DEEP_ARCHIVE, GLACIER, STANDARD_IA).
    #[arg(long)]
    pub storage_class: Option<String>,
    /// Write dead letters (objects left out, with why) to this file as JSON lines.
    #[arg(long)]
    pub dlq: Option<std::path::PathBuf>,
    /// The run's name: archive names start with it; the same name resumes a run.
    #[arg(long)]
    pub run: Option<String>,
    /// Member GETs in flight per archive.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Archives written at once.
    #[arg(long, default_value_t = 4)]
    pub archives: usize,
    /// Part size of the archives' uploads.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Compress archives: zstd frames (.tar.zst), a member still one ranged GET.
    #[arg(long, value_enum, default_value_t = CompressArg::None)]
    pub compress: CompressArg,
    #[command(flatten)]
    pub dry: DryRunArgs,
    #[command(flatten)]
    pub conn: Conn,
}

/// `--compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    /// Plain tar.
    None,
    /// zstd frames, `.tar.zst`.
    Zstd,
}

pub const UNBUNDLE_HELP: &str = "\
Examples:
  haul unbundle s3://archive/logs-2019/bundle-000001.tar ./restored/
  haul unbundle s3://archive/b/bundle-000001.tar s3://bucket/restored/ --include '2019/01/**'

To a directory: names that are absolute, hold `..`, NUL or backslashes, and members that
are not regular files or directories are refused one by one (reported; exit 1); nothing
is created through a symbolic link; existing files are kept unless --overwrite. To a
bucket: content type, user metadata, tags and storage class come back from the index;
members of --part-size or more are multipart uploads, copied server-side (UploadPartCopy)
when the archive is on the same endpoint, else read in ranged GETs, and checked against
the index's CRC64NVME.";

#[derive(Debug, Args)]
pub struct UnbundleArgs {
    /// The archive: s3://bucket/key.tar or a local .tar file.
    pub archive: String,
    /// Where members go: s3://bucket/prefix or a local directory.
    pub dst: String,
    /// Only members matching this glob; repeatable.
    #[arg(long)]
    pub include: Vec<String>,
    /// Replace files that exist.
    #[arg(long)]
    pub overwrite: bool,
    /// Members read at once.
    #[arg(long, short = 'j', default_value_t = 64)]
    pub concurrency: usize,
    /// Members of this size or more are restored by multipart upload in parts of this size.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub part_size: u64,
    #[command(flatten)]
    pub dry: DryRunArgs,
    #[command(flatten)]
    pub conn: Conn,
}
