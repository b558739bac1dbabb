//! The checks a job passes before anything runs, whether it came from
//! flags or from a file: option ranges, options that need or exclude each
//! other. (Types, unknown keys and locations are checked while reading.)

use haul_store::location::Location;

use super::{JobSpec, ObjectSpec, SseSpec, SyncSpec, TransferSpec};

const MIN_PART: u64 = 5 * 1024 * 1024;
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

impl JobSpec {
    /// Refuses a job that cannot run as given, with a message naming the
    /// option as the CLI spells it.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            JobSpec::Cp(s) => {
                transfer(&s.transfer)?;
                object(&s.object)?;
                if s.src.location() == &Location::Stdio && s.recursive {
                    return Err("-r cannot be used with '-' (stdin is one object)".into());
                }
                Ok(())
            }
            JobSpec::Sync(s) => {
                transfer(&s.transfer)?;
                object(&s.object)?;
                sync(s)
            }
            JobSpec::Diff(_) => Ok(()),
            JobSpec::Verify(s) => positive("concurrency", s.concurrency),
            JobSpec::Rm(_) => Ok(()),
            JobSpec::Restore(s) => {
                if !s.location.location().is_s3() {
                    return Err(format!("{}: restore works on s3:// locations", s.location));
                }
                if s.days == 0 {
                    return Err("--days must be at least 1".into());
                }
                positive("concurrency", s.concurrency)
            }
            JobSpec::Bundle(s) => s.validate(),
            JobSpec::Unbundle(s) => s.validate(),
            JobSpec::Watch(s) => {
                transfer(&s.transfer)?;
                object(&s.object)?;
                if matches!(s.dst.location(), Location::Stdio) {
                    return Err("DST: a watch uploads to s3://bucket[/prefix] or a local directory, not stdout".into());
                }
                Ok(())
            }
        }
    }
}

fn positive(what: &str, n: usize) -> Result<(), String> {
    if n == 0 {
        return Err(format!("{what} must be at least 1"));
    }
    Ok(())
}

fn transfer(t: &TransferSpec) -> Result<(), String> {
    if t.part_size.0 < MIN_PART {
        return Err("--part-size must be at least 5MiB (S3's smallest part)".into());
    }
    if t.part_size.0 > MAX_PART {
        return Err("--part-size must be at most 5GiB (S3's largest part)".into());
    }
    Ok(())
}

fn object(o: &ObjectSpec) -> Result<(), String> {
    if o.sse_kms_key_id.is_some() && o.sse != Some(SseSpec::Kms) {
        return Err("--sse-kms-key-id needs --sse aws:kms".into());
    }
    Ok(())
}

fn sync(s: &SyncSpec) -> Result<(), String> {
    if s.max_delete.is_some() && !s.delete {
        return Err("--max-delete only makes sense with --delete".into());
    }
    // The pairs the CLI refuses (clap's conflicts), refused in files too.
    let pairs = [
        ("--part-file", s.part_file.is_some(), "--no-split", s.no_split),
        (
            "--files-from",
            s.files_from.is_some(),
            "--part-file",
            s.part_file.is_some(),
        ),
        (
            "--files-from",
            s.files_from.is_some(),
            "--inventory",
            s.inventory.is_some(),
        ),
        (
            "--inventory",
            s.inventory.is_some(),
            "--part-file",
            s.part_file.is_some(),
        ),
    ];
    if let Some((a, _, b, _)) = pairs.iter().find(|p| p.1 && p.3) {
        return Err(format!("{a} cannot be used with {b}"));
    }
    if s.delete && (s.files_from.is_some() || s.inventory.is_some()) {
        return Err("--delete cannot be used with --files-from or --inventory (the source is not listed)".into());
    }
    Ok(())
}
