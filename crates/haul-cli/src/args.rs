//! Command-line arguments. Parsed here, validated into the library's typed
//! options in the command modules; the library never sees clap.

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::watch_args::{IfExistsArg, WatchAction, WatchArgs};

pub const EXIT_HELP: &str = "\
Exit codes:
  0  success: every object was handled
  1  some objects failed (each is reported with key, operation and reason)
  2  usage or fatal error (bad arguments, missing bucket or credentials, ...)";

/// haul: move very large amounts of data into and between S3-compatible
/// object stores — fast, verifiably, without losing a byte.
#[derive(Debug, Parser)]
#[command(name = "haul", version, about, after_help = EXIT_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// JSON lines on stdout: one per failure (and per planned action in a dry
    /// run), then a summary. Hides the progress bar.
    #[arg(long, global = true)]
    pub json: bool,
    /// Write every failed object (key, operation, error code, message) to this
    /// file as JSON lines, then the summary (cp, sync, rm).
    #[arg(long, global = true)]
    pub report: Option<std::path::PathBuf>,
    /// With --report: also every object copied and deleted.
    #[arg(long, global = true, requires = "report")]
    pub report_all: bool,
    /// No progress bar and no summary on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More logging on stderr (-v info, -vv debug). RUST_LOG also works.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print the command as a job file (TOML, for `haul run`) and exit.
    #[arg(long, global = true)]
    pub print_job: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List objects (and folders, unless -r) with size, mtime, ETag and storage class.
    #[command(
        after_help = "Examples:\n  haul ls s3://bucket/2026/11/\n  haul ls -r --json s3://bucket/logs/\n  haul ls -r ./bucket-dir"
    )]
    Ls(LsArgs),
    /// Copy objects or files: file→s3, s3→file, s3→s3, file→file, stdin→s3.
    #[command(
        after_help = "Examples:\n  haul cp -r /data/2026 s3://bucket/ingest/2026\n  haul cp s3://a/x.bin s3://b/x.bin --dst-profile other\n  pg_dump db | haul cp - s3://bucket/dumps/db.sql\n  haul cp -r s3://bucket/logs ./logs --include '**/*.gz'"
    )]
    Cp(Box<CpArgs>),
    /// Delete an object, or every object under a prefix with -r.
    #[command(after_help = "Examples:\n  haul rm s3://bucket/tmp/x.json\n  haul rm -r --dry-run s3://bucket/tmp/")]
    Rm(RmArgs),
    /// Make DST like SRC: copy what is new or changed, optionally delete what SRC lacks.
    #[command(
        after_help = "Examples:\n  haul sync /data s3://bucket/data\n  haul sync s3://a/logs s3://b/logs --delete --max-delete 1000\n  haul sync s3://a/x s3://b/x --dry-run --json\n\nComparison (--compare):\n  etag    (default) same size and same ETag where both are comparable (single-part MD5s,\n          or multipart with the same part count); otherwise as mtime\n  mtime   same size and the destination is not older than the source\n  size    same size\n  checksum  same content, by the strongest check both sides allow (comparable ETags,\n          a recomputed local ETag, CRC64NVME, or reading both)\n  always  copy everything"
    )]
    Sync(Box<SyncArgs>),
    /// Show what sync would do: key, size, ETag, mtime, action, reason (TSV or --json).
    #[command(
        after_help = "Examples:\n  haul diff s3://a/data s3://b/data\n  haul diff /data s3://bucket/data --all --json"
    )]
    Diff(DiffArgs),
    /// Check that DST holds every object of SRC with the same content; exit 1 if not.
    #[command(
        after_help = "Examples:\n  haul verify /data/2026 s3://bucket/ingest/2026\n  haul verify s3://a/x s3://b/x --json\n\nContent is checked by the strongest means both sides allow: comparable ETags; a local\nfile's MD5 or multipart ETag recomputed with the other side's part size; CRC64NVME from\nboth sides; otherwise the MD5 of both bodies."
    )]
    Verify(VerifyArgs),
    /// Restore archived objects (GLACIER, DEEP_ARCHIVE) under a prefix, or from an inventory.
    #[command(
        after_help = "Examples:\n  haul restore s3://bucket/2019/ --days 7 --tier Bulk\n  haul restore s3://bucket/ --inventory s3://inv/bucket/daily/manifest.json --days 3\n\nObjects not archived, already restored or being restored are skipped and counted."
    )]
    Restore(RestoreArgs),
    /// Write an object to stdout (checked against its MD5 ETag).
    #[command(after_help = "Example:\n  haul cat s3://bucket/2026/11/21/x.json | jq .")]
    Cat(CatArgs),
    /// Ingest a growing local tree into a bucket, continuously: upload each file once
    /// complete, verified; optionally delete it after; retry from a durable journal.
    #[command(after_help = crate::watch_args::WATCH_HELP)]
    Watch(Box<crate::watch_args::WatchArgs>),
    /// Run a job file (TOML: one [cp], [sync], [diff], [verify], [rm], [restore], [watch], [bundle] or [unbundle] table).
    #[command(
        after_help = "Examples:\n  haul run examples/jobs/nightly-sync.toml\n  haul run job.toml --dry-run\n  haul sync /data s3://bucket/data --delete --print-job > job.toml\n\nCredentials never go in a job file: name a profile (profile = \"name\" in [JOB.src_conn],\n[JOB.dst_conn] or [JOB.conn]); keys come from the standard AWS chain."
    )]
    Run(RunArgs),
    /// Pack many small objects into tar archives with a byte-offset index.
    #[command(after_help = crate::bundle_args::BUNDLE_HELP)]
    Bundle(Box<crate::bundle_args::BundleArgs>),
    /// Restore an archive's members to a bucket prefix or a local directory.
    #[command(after_help = crate::bundle_args::UNBUNDLE_HELP)]
    Unbundle(Box<crate::bundle_args::UnbundleArgs>),
    /// Run the units of distributed jobs (`--queue`) from a NATS JetStream server.
    #[command(after_help = crate::fleet_args::WORKER_HELP)]
    Worker(crate::fleet_args::WorkerArgs),
    /// Show or cancel distributed jobs on a queue.
    #[command(after_help = crate::fleet_args::JOB_HELP)]
    Job(crate::fleet_args::JobArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file.
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub dry: DryRunArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct Conn {
    /// AWS profile (shared config/credentials files).
    #[arg(long)]
    pub profile: Option<String>,
    /// Custom S3 endpoint (S3-compatible servers); also AWS_ENDPOINT_URL(_S3).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Path-style addressing (http://host/bucket/key).
    #[arg(long)]
    pub path_style: bool,
    /// Profile for the source side (defaults to --profile).
    #[arg(long)]
    pub src_profile: Option<String>,
    #[arg(long)]
    pub src_endpoint_url: Option<String>,
    #[arg(long)]
    pub src_region: Option<String>,
    #[arg(long)]
    pub src_path_style: bool,
    /// Profile for the destination side (defaults to --profile).
    #[arg(long)]
    pub dst_profile: Option<String>,
    #[arg(long)]
    pub dst_endpoint_url: Option<String>,
    #[arg(long)]
    pub dst_region: Option<String>,
    #[arg(long)]
    pub dst_path_style: bool,
    /// When the SDK adds request checksums: auto = only when required for
    /// custom endpoints (S3-compatible servers), when supported for AWS.
    #[arg(long, value_enum, default_value_t = ChecksumPolicyArg::Auto)]
    pub request_checksums: ChecksumPolicyArg,
    /// Send CRC64NVMEs with uploads and check large uploads by them instead of MD5 (default: on for AWS;
    /// on a custom endpoint, on once the server acknowledges the algorithm, as garage 2 does).
    #[arg(long)]
    pub crc64nvme: Option<bool>,
    /// Most requests in flight to one endpoint (lowered automatically on throttling).
    #[arg(long, default_value_t = 128)]
    pub max_requests: usize,
    /// Attempts per request for retryable errors (throttling, 5xx, timeouts, resets).
    #[arg(long, default_value_t = 10)]
    pub retries: usize,
    /// How long one attempt of a request may wait for its answer (uploads
    /// get their sending time at 1 MiB/s on top; server-side copies 30
    /// minutes); a timed-out attempt is retried. [default: 30s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub request_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum ChecksumPolicyArg {
    #[default]
    Auto,
    WhenRequired,
    WhenSupported,
}

/// Which keys take part (cp, sync, verify).
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only keys (relative to SRC) matching this glob; repeatable. `*` stays within a folder, `**` crosses folders.
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave out keys (relative to SRC) matching this glob; repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
}

/// `--dry-run` (cp, sync, rm, restore, run).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct DryRunArgs {
    /// Show what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--state-dir` (sync, watch and its status/retry).
#[derive(Debug, Args, Clone, Default)]
pub struct StateDirArgs {
    /// Where journals live (default: $XDG_STATE_HOME/haul, else ~/.local/state/haul).
    #[arg(long, env = "HAUL_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// s3://bucket[/prefix] or a local directory (with --members: an archive).
    pub location: String,
    /// List every object under the prefix instead of one level.
    #[arg(short, long)]
    pub recursive: bool,
    /// List the members of a bundle archive (name, size, offset, ETag, mtime) from its index.
    #[arg(long, conflicts_with = "recursive")]
    pub members: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args, Clone)]
pub struct TransferArgs {
    /// Objects in flight.
    #[arg(long, short = 'j', default_value_t = 64)]
    pub concurrency: usize,
    /// Part size for multipart transfers (e.g. 8MiB, 64M).
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Objects of this size or more are transferred in parts.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub multipart_threshold: u64,
    /// Parts of one object in flight.
    #[arg(long, default_value_t = 8)]
    pub parts_per_object: usize,
    /// Most bytes held in memory by all transfers together.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub max_buffer: u64,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: s3://bucket/key, s3://bucket/prefix (-r), a local file or directory (-r), or - for stdin.
    pub src: String,
    /// Destination: s3://bucket/key-or-prefix, a local path, or - for stdout.
    pub dst: String,
    /// Copy everything under SRC, keeping the hierarchy.
    #[arg(short, long)]
    pub recursive: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub queue: crate::fleet_args::QueueArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    #[command(flatten)]
    pub dry: DryRunArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub conn: Conn,
}

/// How new objects are written (cp and sync).
#[derive(Debug, Args, Clone)]
pub struct WriteArgs {
    #[command(flatten)]
    pub object: ObjectArgs,
    /// COPY keeps the source's content-type, metadata and tags; REPLACE uses only the ones given.
    #[arg(long, value_enum, default_value_t = Directive::Copy)]
    pub metadata_directive: Directive,
    /// Never copy server-side; stream through haul even on the same endpoint.
    #[arg(long)]
    pub no_server_side: bool,
    /// Keep the source's ETag: copy multipart objects part by part with the
    /// source's part layout (read from the source, else the AWS CLI's 8 MiB
    /// rule); objects whose ETag cannot be kept are reported as failed.
    #[arg(long)]
    pub preserve_etag: bool,
    /// Fail objects whose tags cannot be carried over because a server
    /// lacks the tagging API (garage, R2); without it they are copied
    /// untagged and the summary says so once.
    #[arg(long)]
    pub require_tags: bool,
    /// Fail (instead of copying and counting as unverified) an object whose
    /// source bytes cannot be checked: an ETag that is not an MD5 (SSE-KMS,
    /// some multipart uploads) with no full-object checksum and no readable
    /// part layout.
    #[arg(long)]
    pub require_verified: bool,
    /// Exit 1 when a listing entry was skipped because it cannot be an
    /// object (dangling or looping symbolic link, socket, FIFO, device,
    /// name that is not UTF-8, folder marker into a local directory). Such
    /// entries are reported either way, and never hold back other copies or
    /// deletes.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Directive {
    Copy,
    Replace,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Source: s3://bucket/prefix or a local directory.
    pub src: String,
    /// Destination: s3://bucket/prefix or a local directory.
    pub dst: String,
    /// How unchanged objects are recognised: etag, mtime, size, checksum, always.
    #[arg(long, default_value = "etag", value_parser = parse_compare)]
    pub compare: haul_engine::march::Compare,
    /// Delete destination objects that are not in the source (after every copy succeeded).
    #[arg(long)]
    pub delete: bool,
    /// With --delete: delete nothing if more than this many objects would go.
    #[arg(long)]
    pub max_delete: Option<u64>,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub queue: crate::fleet_args::QueueArgs,
    #[command(flatten)]
    pub dry: DryRunArgs,
    /// Shards from a Campanile part file: one `delimiter,prefix` per line
    /// (`/,00` = the keys directly under 00…, `,000/` = everything under 000/).
    #[arg(long)]
    pub part_file: Option<std::path::PathBuf>,
    /// One shard for the whole prefix (default: split on the source's folders).
    #[arg(long, conflicts_with = "part_file")]
    pub no_split: bool,
    /// Take the source keys from this file (one per line, relative to SRC)
    /// instead of listing SRC; each is looked up in DST.
    #[arg(long, conflicts_with_all = ["part_file", "inventory", "delete"])]
    pub files_from: Option<std::path::PathBuf>,
    /// Take the source objects from an S3 Inventory (s3://bucket/…/manifest.json,
    /// CSV.gz or Parquet) instead of listing SRC; each data file's MD5 is checked first.
    #[arg(long, conflicts_with_all = ["part_file", "delete"])]
    pub inventory: Option<String>,
    /// Shards marched at once.
    #[arg(long, default_value_t = 4)]
    pub shards_in_flight: usize,
    /// Split the source into shards only when it has at least this many keys.
    #[arg(long, default_value_t = 20_000, hide = true)]
    pub split_min_keys: usize,
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Do not record or resume the job.
    #[arg(long)]
    pub no_journal: bool,
    /// Start afresh even if an interrupted run of the same job could be
    /// resumed (its journal entry is replaced).
    #[arg(long)]
    pub fresh: bool,
    #[command(flatten)]
    pub write: WriteArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub src: String,
    pub dst: String,
    /// How unchanged objects are recognised: etag, mtime, size, checksum, always.
    #[arg(long, default_value = "etag", value_parser = parse_compare)]
    pub compare: haul_engine::march::Compare,
    /// Also list the keys that are the same.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(required_unless_present = "bundle")]
    pub src: Option<String>,
    #[arg(required_unless_present = "bundle")]
    pub dst: Option<String>,
    /// Check a bundle archive against its index (offsets, sizes, CRC64NVMEs, locator).
    #[arg(long, conflicts_with_all = ["src", "dst"])]
    pub bundle: Option<String>,
    /// With --bundle: also check the index against the source objects (same size and ETag).
    #[arg(long, requires = "bundle")]
    pub against: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Objects checked at once.
    #[arg(long, short = 'j', default_value_t = 32)]
    pub concurrency: usize,
    /// Also list the objects that match.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// s3://bucket/prefix
    pub location: String,
    /// How long the restored copies stay available.
    #[arg(long)]
    pub days: u32,
    /// Retrieval tier.
    #[arg(long, default_value = "Standard", value_parser = ["Bulk", "Standard", "Expedited"])]
    pub tier: String,
    /// Take the objects from an S3 Inventory (manifest.json) instead of listing.
    #[arg(long)]
    pub inventory: Option<String>,
    /// Restore requests at once.
    #[arg(long, short = 'j', default_value_t = 32)]
    pub concurrency: usize,
    #[command(flatten)]
    pub dry: DryRunArgs,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// s3://bucket/key, or s3://bucket/prefix with -r; local paths work too.
    pub location: String,
    /// Delete every object under the prefix.
    #[arg(short, long)]
    pub recursive: bool,
    #[command(flatten)]
    pub dry: DryRunArgs,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// s3://bucket/key or a local file (with --member: an archive).
    pub location: String,
    /// Write this member of a bundle archive (one ranged GET, checked against the index's CRC64NVME).
    #[arg(long)]
    pub member: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

fn parse_compare(s: &str) -> Result<haul_engine::march::Compare, String> {
    s.parse().map_err(|e: haul_engine::march::UnknownCompare| e.to_string())
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let v: bytesize::ByteSize = s.parse().map_err(|e| format!("invalid size {s:?}: {e}"))?;
    if v.as_u64() == 0 {
        return Err(format!("invalid size {s:?}: must be more than 0"));
    }
    Ok(v.as_u64())
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// What new objects carry (cp, sync, watch).
#[derive(Debug, Args, Clone)]
pub struct ObjectArgs {
    /// Storage class of the new objects (STANDARD, STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR, ...).
    #[arg(long)]
    pub storage_class: Option<String>,
    /// Server-side encryption: AES256 (SSE-S3) or aws:kms (SSE-KMS).
    #[arg(long, value_parser = ["AES256", "aws:kms"])]
    pub sse: Option<String>,
    /// KMS key for --sse aws:kms (the bucket's default key otherwise).
    #[arg(long)]
    pub sse_kms_key_id: Option<String>,
    /// User metadata key=value, repeatable (cp, sync: added to the source's unless --metadata-directive REPLACE).
    #[arg(long, value_parser = parse_kv)]
    pub metadata: Vec<(String, String)>,
    /// Tag key=value, repeatable (cp, sync: replaces the source's tags).
    #[arg(long, value_parser = parse_kv)]
    pub tag: Vec<(String, String)>,
    /// Content-Type of the new objects (default: the source's, else guessed from the extension).
    #[arg(long)]
    pub content_type: Option<String>,
}
