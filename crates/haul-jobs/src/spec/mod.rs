//! Jobs as data: a [`JobSpec`] holds everything a command does, in a form
//! that serializes to TOML (`haul run JOB.toml`, `haul … --print-job`) and,
//! later, travels to remote workers and sits in pipeline files.
//!
//! A job file has one table named after the job:
//!
//! ```toml
//! [sync]
//! src = "/data/2026"
//! dst = "s3://bucket/ingest/2026"
//! delete = true
//! max_delete = 1000
//!
//! [sync.dst_conn]
//! profile = "dr"
//! ```
//!
//! Unknown keys, wrong types and bad locations are refused when the file is
//! read, with the file, line and column; so are keys that look like secrets
//! (credentials always come from the standard AWS chain: use a profile).

mod bundle;
mod jobs;
mod options;
mod validate;
mod values;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use bundle::{BundleSpec, UnbundleSpec};
pub use jobs::{CpSpec, DiffSpec, RestoreSpec, RmSpec, SyncSpec, Tier, VerifySpec, WatchSpec};
pub use options::{ConnSpec, Directive, FilterSpec, ObjectSpec, RequestChecksums, SseSpec, TransferSpec, WriteSpec};
pub use values::{Dur, Loc, Size};

use crate::JobError;

/// A job: one command's work, described as data. New kinds are new
/// variants (room is kept for `map`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSpec {
    Cp(CpSpec),
    Sync(SyncSpec),
    Diff(DiffSpec),
    Verify(VerifySpec),
    Rm(RmSpec),
    Restore(RestoreSpec),
    Watch(WatchSpec),
    Bundle(BundleSpec),
    Unbundle(UnbundleSpec),
}

/// Keys that would hold credentials. Job files are shared, committed and
/// sent to workers: secrets never go in them.
const SECRET_KEYS: &[&str] = &[
    "aws_secret_access_key",
    "secret_access_key",
    "aws_session_token",
    "session_token",
    "aws_access_key_id",
    "access_key_id",
    "password",
    "secret",
];

impl JobSpec {
    /// The command's name: `cp`, `sync`, …
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Cp(_) => "cp",
            JobSpec::Sync(_) => "sync",
            JobSpec::Diff(_) => "diff",
            JobSpec::Verify(_) => "verify",
            JobSpec::Rm(_) => "rm",
            JobSpec::Restore(_) => "restore",
            JobSpec::Watch(_) => "watch",
            JobSpec::Bundle(_) => "bundle",
            JobSpec::Unbundle(_) => "unbundle",
        }
    }

    /// Reads a job file: TOML, checked completely before anything runs.
    pub fn load(path: &Path) -> Result<Self, JobError> {
        let text = std::fs::read_to_string(path).map_err(|e| JobError::Invalid(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses a job from TOML; `origin` names the file in messages
    /// (`jobs/nightly.toml:7:9: unknown field ...`).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, JobError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| JobError::Invalid(located(origin, text, &e)))?;
        if let Some(key) = find_secret(&table) {
            let (line, col) = key_position(text, &key);
            return Err(JobError::Invalid(format!(
                "{origin}:{line}:{col}: {key:?} looks like a credential: job files never hold secrets; \
                 name an AWS profile instead (profile = \"name\" in the side's *_conn table) and keep \
                 the keys in ~/.aws/credentials, the environment, SSO or an instance role"
            )));
        }
        if table.len() != 1 {
            let kinds = "cp, sync, diff, verify, rm, restore, watch, bundle, unbundle";
            return Err(JobError::Invalid(format!(
                "{origin}: a job file holds exactly one job table ([{kinds}]), found {}",
                if table.is_empty() {
                    "none".to_string()
                } else {
                    table.keys().map(|k| format!("[{k}]")).collect::<Vec<_>>().join(", ")
                }
            )));
        }
        let spec: JobSpec = toml::from_str(text).map_err(|e| JobError::Invalid(located(origin, text, &e)))?;
        spec.validate()
            .map_err(|e| JobError::Invalid(format!("{origin}: {e}")))?;
        Ok(spec)
    }

    /// The job as TOML (what `--print-job` prints and `haul run` reads).
    pub fn to_toml(&self) -> Result<String, JobError> {
        toml::to_string(self).map_err(|e| JobError::Invalid(format!("cannot write the job as TOML: {e}")))
    }

    /// Sets or clears the dry run of jobs that have one (`haul run --dry-run`);
    /// false when this kind of job has no dry run.
    pub fn set_dry_run(&mut self, dry: bool) -> bool {
        match self {
            JobSpec::Cp(s) => s.dry_run = dry,
            JobSpec::Sync(s) => s.dry_run = dry,
            JobSpec::Rm(s) => s.dry_run = dry,
            JobSpec::Restore(s) => s.dry_run = dry,
            JobSpec::Bundle(s) => s.dry_run = dry,
            JobSpec::Unbundle(s) => s.dry_run = dry,
            // diff and verify change nothing anyway.
            JobSpec::Diff(_) | JobSpec::Verify(_) => {}
            JobSpec::Watch(_) => return false,
        }
        true
    }
}

/// `origin:line:column: message` for a TOML error.
fn located(origin: &str, text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("{origin}:{line}:{col}: {}", e.message().trim_end())
        }
        None => format!("{origin}: {}", e.message().trim_end()),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn find_secret(table: &toml::Table) -> Option<String> {
    for (k, v) in table {
        if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
            return Some(k.clone());
        }
        if let Some(found) = v.as_table().and_then(find_secret) {
            return Some(found);
        }
    }
    None
}

/// Where a key is written (its first occurrence at the start of a line).
fn key_position(text: &str, key: &str) -> (usize, usize) {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let rest = trimmed.strip_prefix(key).or_else(|| {
            trimmed
                .strip_prefix('"')
                .and_then(|t| t.strip_prefix(key))
                .and_then(|t| t.strip_prefix('"'))
        });
        if rest.is_some_and(|r| r.trim_start().starts_with('=')) {
            return line_col(text, offset + (line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let text = "[cp]\nsrc = \"a\"\n  dst = 1\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 5), (2, 1));
        assert_eq!(key_position(text, "dst"), (3, 3));
    }
}
