//! Dead letters: the objects a bundle run could not pack, each with why,
//! as plain serde rows (the CLI writes them to `--dlq` as JSON lines and
//! `--input-dlq` reads them back). One bad object never fails its
//! archive: it becomes one of these instead.
//!
//! A run hands them to a [`DeadSink`] as they happen (the CLI's `--dlq`
//! file), and its summary keeps only counts per reason and a
//! [`SAMPLE`]: memory does not grow with the number of dead letters. The
//! members of an archive that became dead letters while it was written
//! are recorded next to it, `<archive>.dead` (JSON lines, only when there
//! are some), so a re-run knows the archive is complete without them.

use haul_store::{ErrorKind, ObjectMeta, StoreError};
use serde::{Deserialize, Serialize};

/// Why an object is not in any archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Gone since it was listed.
    NotFound,
    /// The source refused the read.
    AccessDenied,
    /// In an archive tier (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering's
    /// archive tiers): needs a restore first. Decided from the listing's
    /// storage class, before any GET.
    Archived,
    /// Its ETag or size is not the listing's any more.
    Changed,
    /// Still throttled after the store's retries.
    Throttled,
    /// Larger than the destination can take as one object.
    TooLarge,
    /// A name a tar reader would put somewhere else (NUL, empty, absolute,
    /// `.`/`..` or empty components, a trailing `/` on data).
    UnsafeName,
    /// Any other error reading it (after the store's retries).
    Failed,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::NotFound => "not_found",
            DeadReason::AccessDenied => "access_denied",
            DeadReason::Archived => "archived",
            DeadReason::Changed => "changed",
            DeadReason::Throttled => "throttled",
            DeadReason::TooLarge => "too_large",
            DeadReason::UnsafeName => "unsafe_name",
            DeadReason::Failed => "failed",
        }
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object left out, with the listing's row and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The source key.
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub reason: DeadReason,
    /// The HTTP status, when the error says (or implies) one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Reads the bundler made (each through the store's own retries).
    pub attempts: u32,
    pub message: String,
}

/// Storage classes whose objects cannot be read without a restore.
pub fn is_archived_class(class: Option<&str>) -> bool {
    matches!(
        class,
        Some("GLACIER" | "DEEP_ARCHIVE" | "ARCHIVE_ACCESS" | "DEEP_ARCHIVE_ACCESS")
    )
}

impl DeadLetter {
    /// A dead letter decided without a request.
    pub fn new(key: &str, size: u64, etag: Option<&str>, reason: DeadReason, message: impl Into<String>) -> Self {
        DeadLetter {
            key: key.to_string(),
            size,
            etag: etag.map(str::to_string),
            reason,
            status: None,
            request_id: None,
            attempts: 0,
            message: message.into(),
        }
    }

    /// An object listed as `meta` whose read failed with `e`.
    pub fn from_error(meta: &ObjectMeta, e: &StoreError, attempts: u32) -> Self {
        Self::of_error(meta.key.as_str(), meta.size, meta.etag.as_deref(), e, attempts)
    }

    /// The object `key` (listed with `size` and `etag`) whose read failed with `e`.
    pub fn of_error(key: &str, size: u64, etag: Option<&str>, e: &StoreError, attempts: u32) -> Self {
        let reason = match (e.kind, e.code.as_deref()) {
            (_, Some("InvalidObjectState")) => DeadReason::Archived,
            (ErrorKind::NotFound, _) => DeadReason::NotFound,
            (ErrorKind::PermissionDenied, _) => DeadReason::AccessDenied,
            (ErrorKind::PreconditionFailed, _) => DeadReason::Changed,
            (ErrorKind::Throttled, _) => DeadReason::Throttled,
            _ => DeadReason::Failed,
        };
        let status = status_in(&e.message).or(match e.kind {
            ErrorKind::NotFound => Some(404),
            ErrorKind::PermissionDenied => Some(403),
            ErrorKind::PreconditionFailed => Some(412),
            ErrorKind::Throttled => Some(503),
            _ => None,
        });
        DeadLetter {
            key: key.to_string(),
            size,
            etag: etag.map(str::to_string),
            reason,
            status,
            request_id: request_id_in(&e.message),
            attempts,
            message: e.to_string(),
        }
    }
}

/// The suffix of an archive's dead record, after the archive's name.
pub const DEAD_SUFFIX: &str = ".dead";

/// The dead record's name of an archive (`<run>-000001.tar.dead`).
pub fn dead_record_name(archive: &str) -> String {
    format!("{archive}{DEAD_SUFFIX}")
}

/// Dead letters a summary keeps to show (the first ones); the rest are
/// counted, and written only to the run's [`DeadSink`].
pub const SAMPLE: usize = 100;

/// Where a run's dead letters go, one at a time, as they happen. An error
/// stops the run (a `--dlq` file that cannot be written loses no letter
/// silently).
pub trait DeadSink: Send {
    fn dead(&mut self, d: &DeadLetter) -> std::io::Result<()>;
    /// Called once at the end of the run.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sink that keeps nothing: the summary's counts and sample are all.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl DeadSink for Discard {
    fn dead(&mut self, _: &DeadLetter) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every dead letter, in memory (tests, small runs).
impl DeadSink for Vec<DeadLetter> {
    fn dead(&mut self, d: &DeadLetter) -> std::io::Result<()> {
        self.push(d.clone());
        Ok(())
    }
}

/// Dead letters as the `--dlq` file holds them: one JSON object a line.
pub fn dlq_lines(dead: &[DeadLetter]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for d in dead {
        serde_json::to_writer(&mut out, d)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The keys of the archived dead letters, one a line: what
/// `haul restore --files-from` takes before a re-run.
pub fn restore_list(dead: &[DeadLetter]) -> String {
    dead.iter()
        .filter(|d| d.reason == DeadReason::Archived)
        .map(|d| format!("{}\n", d.key))
        .collect()
}

/// The request id an S3 error message carries (`[request id X]`).
fn request_id_in(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("[request id ")?;
    let (id, _) = rest.split_once(']')?;
    Some(id.to_string())
}

/// The HTTP status an S3 error message carries (`Code (403): …`).
fn status_in(message: &str) -> Option<u16> {
    let start = message.find(" (")? + 2;
    let digits = message.get(start..start + 4)?;
    digits.strip_suffix(')').and_then(|d| d.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_store::{Key, Op};

    #[test]
    fn errors_become_reasons_with_status_and_request_id() {
        let meta = ObjectMeta {
            key: Key::object("k").unwrap_or_else(|e| panic!("{e}")),
            size: 3,
            ..Default::default()
        };
        let e = StoreError::new(
            Op::Get,
            "k",
            ErrorKind::PermissionDenied,
            "AccessDenied (403): no [request id ABC123]",
        );
        let d = DeadLetter::from_error(&meta, &e, 1);
        assert_eq!(d.reason, DeadReason::AccessDenied);
        assert_eq!(d.status, Some(403));
        assert_eq!(d.request_id.as_deref(), Some("ABC123"));
        let e = StoreError::new(Op::Get, "k", ErrorKind::InvalidRequest, "x").with_code("InvalidObjectState");
        assert_eq!(DeadLetter::from_error(&meta, &e, 1).reason, DeadReason::Archived);
        let j = serde_json::to_string(&d).unwrap_or_default();
        assert!(j.contains("\"reason\":\"access_denied\""), "{j}");
        let cold = DeadLetter::new("c", 1, None, DeadReason::Archived, "in GLACIER");
        assert_eq!(restore_list(&[d.clone(), cold.clone()]), "c\n");
        let lines = dlq_lines(&[d.clone(), cold]).unwrap_or_default();
        let back: Vec<DeadLetter> = lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        assert_eq!((back.len(), &back[0]), (2, &d));
    }
}
