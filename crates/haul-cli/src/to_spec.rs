//! Flags into job specs: the one place where the command line becomes
//! data. Everything after this — `--print-job`, `haul run`, the run itself
//! — sees only the [`JobSpec`]. Flag-level validation (clap's conflicts
//! and value parsers) happened while parsing; the spec's own checks
//! (`JobSpec::validate`) run here too, so a bad combination fails before
//! anything connects.

use std::collections::BTreeMap;

use haul_jobs::spec::{
    BundleSpec, ConnSpec, CpSpec, DiffSpec, Directive, FilterSpec, Loc, ObjectSpec, RequestChecksums, RestoreSpec,
    RmSpec, Size, SseSpec, SyncSpec, Tier, TransferSpec, UnbundleSpec, VerifySpec, WatchSpec, WriteSpec,
};
use haul_jobs::{JobError, JobSpec};

use crate::args::{
    ChecksumPolicyArg, Command, Conn, CpArgs, DiffArgs, FilterArgs, IfExistsArg, ObjectArgs, RestoreArgs, RmArgs,
    SyncArgs, TransferArgs, VerifyArgs, WatchArgs, WriteArgs,
};
use crate::bundle_args::{BundleArgs, CompressArg, UnbundleArgs};

/// Which side of a two-sided command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
    /// One-sided commands: only the plain flags apply.
    Only,
}

impl Conn {
    /// One side's settings: its `--src-*`/`--dst-*` flags, else the plain ones.
    pub fn side(&self, side: Side) -> ConnSpec {
        let pick = |src: &Option<String>, dst: &Option<String>, both: &Option<String>| match side {
            Side::Src => src.clone().or_else(|| both.clone()),
            Side::Dst => dst.clone().or_else(|| both.clone()),
            Side::Only => both.clone(),
        };
        ConnSpec {
            profile: pick(&self.src_profile, &self.dst_profile, &self.profile),
            endpoint_url: pick(&self.src_endpoint_url, &self.dst_endpoint_url, &self.endpoint_url),
            region: pick(&self.src_region, &self.dst_region, &self.region),
            path_style: self.path_style
                || match side {
                    Side::Src => self.src_path_style,
                    Side::Dst => self.dst_path_style,
                    Side::Only => false,
                },
            request_checksums: match self.request_checksums {
                ChecksumPolicyArg::Auto => RequestChecksums::Auto,
                ChecksumPolicyArg::WhenRequired => RequestChecksums::WhenRequired,
                ChecksumPolicyArg::WhenSupported => RequestChecksums::WhenSupported,
            },
            crc64nvme: self.crc64nvme,
            max_requests: self.max_requests,
            retries: self.retries,
            request_timeout: self.request_timeout.map(Into::into),
        }
    }
}

/// The job of a command, or `None` for commands that are not jobs (ls,
/// cat, watch status/retry, run).
pub fn job_of(cmd: &Command) -> Result<Option<JobSpec>, JobError> {
    let spec = match cmd {
        Command::Cp(a) => JobSpec::Cp(a.as_ref().try_into()?),
        Command::Sync(a) => JobSpec::Sync(a.as_ref().try_into()?),
        Command::Diff(a) => JobSpec::Diff(a.try_into()?),
        Command::Verify(a) if a.bundle.is_some() => return Ok(None),
        Command::Verify(a) => JobSpec::Verify(a.try_into()?),
        Command::Bundle(a) => JobSpec::Bundle(a.as_ref().try_into()?),
        Command::Unbundle(a) => JobSpec::Unbundle(a.as_ref().try_into()?),
        Command::Rm(a) => JobSpec::Rm(a.try_into()?),
        Command::Restore(a) => JobSpec::Restore(a.try_into()?),
        Command::Watch(a) if a.action.is_none() => JobSpec::Watch(a.as_ref().try_into()?),
        Command::Watch(_)
        | Command::Ls(_)
        | Command::Cat(_)
        | Command::Run(_)
        | Command::Worker(_)
        | Command::Job(_) => return Ok(None),
    };
    spec.validate().map_err(JobError::Invalid)?;
    Ok(Some(spec))
}

/// The queue a job command coordinates its job on (`--queue`), if any.
pub fn queue_of(cmd: &Command) -> Option<(&crate::fleet_args::QueueArgs, &str)> {
    let q = match cmd {
        Command::Cp(a) => &a.queue,
        Command::Sync(a) => &a.queue,
        _ => return None,
    };
    q.queue.as_deref().map(|url| (q, url))
}

fn loc(what: &str, raw: &str) -> Result<Loc, JobError> {
    Loc::parse(raw).map_err(|e| JobError::Invalid(format!("{what}: {e}")))
}

fn filter(f: &FilterArgs) -> FilterSpec {
    FilterSpec {
        include: f.include.clone(),
        exclude: f.exclude.clone(),
    }
}

fn transfer(t: &TransferArgs) -> TransferSpec {
    TransferSpec {
        concurrency: t.concurrency,
        part_size: Size(t.part_size),
        multipart_threshold: Size(t.multipart_threshold),
        parts_per_object: t.parts_per_object,
        max_buffer: Size(t.max_buffer),
    }
}

fn pairs(kv: &[(String, String)]) -> BTreeMap<String, String> {
    kv.iter().cloned().collect()
}

fn object(o: &ObjectArgs) -> ObjectSpec {
    ObjectSpec {
        storage_class: o.storage_class.clone(),
        sse: o
            .sse
            .as_deref()
            .map(|s| if s == "AES256" { SseSpec::Aes256 } else { SseSpec::Kms }),
        sse_kms_key_id: o.sse_kms_key_id.clone(),
        metadata: pairs(&o.metadata),
        tags: pairs(&o.tag),
        content_type: o.content_type.clone(),
    }
}

fn write(w: &WriteArgs) -> WriteSpec {
    WriteSpec {
        metadata_directive: match w.metadata_directive {
            crate::args::Directive::Copy => Directive::Copy,
            crate::args::Directive::Replace => Directive::Replace,
        },
        no_server_side: w.no_server_side,
        preserve_etag: w.preserve_etag,
        require_tags: w.require_tags,
        require_verified: w.require_verified,
        strict: w.strict,
    }
}

impl TryFrom<&CpArgs> for CpSpec {
    type Error = JobError;

    fn try_from(a: &CpArgs) -> Result<Self, JobError> {
        Ok(CpSpec {
            src: loc("SRC", &a.src)?,
            dst: loc("DST", &a.dst)?,
            recursive: a.recursive,
            dry_run: a.dry.dry_run,
            filter: filter(&a.filter),
            object: object(&a.write.object),
            write: write(&a.write),
            transfer: transfer(&a.transfer),
            src_conn: a.conn.side(Side::Src),
            dst_conn: a.conn.side(Side::Dst),
        })
    }
}

impl TryFrom<&SyncArgs> for SyncSpec {
    type Error = JobError;

    fn try_from(a: &SyncArgs) -> Result<Self, JobError> {
        Ok(SyncSpec {
            src: loc("SRC", &a.src)?,
            dst: loc("DST", &a.dst)?,
            compare: a.compare,
            delete: a.delete,
            max_delete: a.max_delete,
            dry_run: a.dry.dry_run,
            part_file: a.part_file.clone(),
            no_split: a.no_split,
            files_from: a.files_from.clone(),
            inventory: a.inventory.as_deref().map(|i| loc("--inventory", i)).transpose()?,
            shards_in_flight: a.shards_in_flight,
            split_min_keys: a.split_min_keys,
            state_dir: a.state.state_dir.clone(),
            no_journal: a.no_journal,
            fresh: a.fresh,
            filter: filter(&a.filter),
            object: object(&a.write.object),
            write: write(&a.write),
            transfer: transfer(&a.transfer),
            src_conn: a.conn.side(Side::Src),
            dst_conn: a.conn.side(Side::Dst),
        })
    }
}

impl TryFrom<&DiffArgs> for DiffSpec {
    type Error = JobError;

    fn try_from(a: &DiffArgs) -> Result<Self, JobError> {
        Ok(DiffSpec {
            src: loc("SRC", &a.src)?,
            dst: loc("DST", &a.dst)?,
            compare: a.compare,
            all: a.all,
            src_conn: a.conn.side(Side::Src),
            dst_conn: a.conn.side(Side::Dst),
        })
    }
}

impl TryFrom<&VerifyArgs> for VerifySpec {
    type Error = JobError;

    fn try_from(a: &VerifyArgs) -> Result<Self, JobError> {
        Ok(VerifySpec {
            src: loc("SRC", a.src.as_deref().unwrap_or_default())?,
            dst: loc("DST", a.dst.as_deref().unwrap_or_default())?,
            filter: filter(&a.filter),
            concurrency: a.concurrency,
            all: a.all,
            src_conn: a.conn.side(Side::Src),
            dst_conn: a.conn.side(Side::Dst),
        })
    }
}

impl TryFrom<&RmArgs> for RmSpec {
    type Error = JobError;

    fn try_from(a: &RmArgs) -> Result<Self, JobError> {
        Ok(RmSpec {
            location: loc("LOCATION", &a.location)?,
            recursive: a.recursive,
            dry_run: a.dry.dry_run,
            conn: a.conn.side(Side::Only),
        })
    }
}

impl TryFrom<&RestoreArgs> for RestoreSpec {
    type Error = JobError;

    fn try_from(a: &RestoreArgs) -> Result<Self, JobError> {
        Ok(RestoreSpec {
            location: loc("LOCATION", &a.location)?,
            days: a.days,
            tier: match a.tier.as_str() {
                "Bulk" => Tier::Bulk,
                "Expedited" => Tier::Expedited,
                _ => Tier::Standard,
            },
            inventory: a.inventory.as_deref().map(|i| loc("--inventory", i)).transpose()?,
            concurrency: a.concurrency,
            dry_run: a.dry.dry_run,
            conn: a.conn.side(Side::Only),
        })
    }
}

impl TryFrom<&WatchArgs> for WatchSpec {
    type Error = JobError;

    fn try_from(a: &WatchArgs) -> Result<Self, JobError> {
        let (Some(dir), Some(dst)) = (a.dir.clone(), a.dst.as_deref()) else {
            return Err(JobError::Invalid(
                "usage: haul watch DIR DST (or haul watch status|retry)".into(),
            ));
        };
        // The tree is the first thing a watch needs: said before anything about DST.
        if !dir.is_dir() {
            return Err(JobError::Invalid(format!(
                "{}: the directory to watch does not exist or is not a directory",
                dir.display()
            )));
        }
        Ok(WatchSpec {
            dst: loc("DST", dst)?,
            dir,
            settle: a.settle.into(),
            rescan_every: a.rescan_every.into(),
            exclude: a.exclude.clone(),
            delete_after_upload: a.delete_after_upload,
            prune_empty_dirs: a.prune_empty_dirs,
            keep_dirs_for: a.keep_dirs_for.into(),
            max_attempts: a.max_attempts,
            retry_max_delay: a.retry_max_delay.into(),
            state_dir: a.state.state_dir.clone(),
            once: a.once,
            shutdown_timeout: a.shutdown_timeout.into(),
            log_file: a.log_file.clone(),
            log_retention_days: a.log_retention_days,
            metrics_addr: a.metrics_addr,
            summary_every: a.summary_every.into(),
            no_events: a.no_events,
            if_exists: match a.if_exists {
                IfExistsArg::Overwrite => haul_engine::watch::IfExists::Overwrite,
                IfExistsArg::Skip => haul_engine::watch::IfExists::Skip,
                IfExistsArg::Rename => haul_engine::watch::IfExists::Rename,
            },
            event_queue: a.event_queue,
            object: object(&a.upload),
            transfer: transfer(&a.transfer),
            conn: a.conn.side(Side::Dst),
        })
    }
}

impl TryFrom<&BundleArgs> for BundleSpec {
    type Error = JobError;

    fn try_from(a: &BundleArgs) -> Result<Self, JobError> {
        Ok(BundleSpec {
            max_members: a.max_members,
            max_bytes: Size(a.max_bytes),
            max_member_size: Size(a.max_member_size),
            group_by_prefix: a.group_by_prefix,
            storage_class: a.storage_class.clone(),
            dlq: a.dlq.clone(),
            input_dlq: a.input_dlq.clone(),
            inventory: a.inventory.as_deref().map(|i| loc("--inventory", i)).transpose()?,
            versions: a.versions,
            tags: a.tags,
            run: a.run.clone(),
            window: a.window,
            archives_in_flight: a.archives,
            part_size: Size(a.part_size),
            compress: match a.compress {
                CompressArg::None => haul_engine::bundle::Compression::None,
                CompressArg::Zstd => haul_engine::bundle::Compression::Zstd,
            },
            dry_run: a.dry.dry_run,
            src_conn: a.conn.side(Side::Src),
            dst_conn: a.conn.side(Side::Dst),
            ..BundleSpec::new(loc("SRC", &a.src)?, loc("DST_PREFIX", &a.dst_prefix)?)
        })
    }
}

impl TryFrom<&UnbundleArgs> for UnbundleSpec {
    type Error = JobError;

    fn try_from(a: &UnbundleArgs) -> Result<Self, JobError> {
        Ok(UnbundleSpec {
            archive: loc("ARCHIVE", &a.archive)?,
            dst: loc("DST", &a.dst)?,
            include: a.include.clone(),
            overwrite: a.overwrite,
            concurrency: a.concurrency,
            part_size: Size(a.part_size),
            dry_run: a.dry.dry_run,
            src_conn: a.conn.side(Side::Src),
            dst_conn: a.conn.side(Side::Dst),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn sync_spec(extra: &[&str]) -> Result<SyncSpec, Box<dyn std::error::Error>> {
        let mut argv = vec!["haul", "sync", "s3://src-bkt/x", "s3://dst-bkt/y"];
        argv.extend_from_slice(extra);
        match job_of(&crate::args::Cli::try_parse_from(argv)?.cmd)? {
            Some(JobSpec::Sync(s)) => Ok(s),
            other => Err(format!("not sync: {other:?}").into()),
        }
    }

    /// Each side's endpoint and profile come from its own flags, else the
    /// plain ones (and so identify the side in the sync journal).
    #[test]
    fn each_side_gets_its_own_endpoint_and_profile() -> Result<(), Box<dyn std::error::Error>> {
        let base = sync_spec(&["--endpoint-url", "http://one:9000"])?;
        assert_eq!(base.src_conn.endpoint_url.as_deref(), Some("http://one:9000"));
        assert_eq!(base.src_conn, base.dst_conn);
        let dr = sync_spec(&["--endpoint-url", "http://one:9000", "--dst-profile", "dr"])?;
        assert_eq!(dr.src_conn, base.src_conn);
        assert_eq!(dr.dst_conn.profile.as_deref(), Some("dr"));
        let other = sync_spec(&[
            "--endpoint-url",
            "http://one:9000",
            "--src-endpoint-url",
            "http://two:9000",
        ])?;
        assert_eq!(other.src_conn.endpoint_url.as_deref(), Some("http://two:9000"));
        assert_eq!(other.dst_conn, base.dst_conn);
        let ps = sync_spec(&["--dst-path-style", "--max-requests", "9"])?;
        assert!(!ps.src_conn.path_style && ps.dst_conn.path_style);
        assert_eq!((ps.src_conn.max_requests, ps.dst_conn.max_requests), (9, 9));
        Ok(())
    }
}
