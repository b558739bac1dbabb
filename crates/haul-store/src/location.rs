//! Locations as users write them — `s3://bucket/prefix`, `./dir`, `/abs`,
//! `file:///abs`, `-` — parsed once at the edge into a checked type.

use std::fmt;
use std::path::PathBuf;

use crate::key::Key;

/// A parsed location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A bucket and a key or prefix inside it (possibly empty).
    S3 { bucket: String, key: Key },
    /// A local file or directory.
    Local { path: PathBuf },
    /// Standard input or output (`-`).
    Stdio,
}

/// Why a location could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid location {input:?}: {reason}")]
pub struct LocationError {
    pub input: String,
    pub reason: String,
}

impl Location {
    pub fn parse(s: &str) -> Result<Self, LocationError> {
        let err = |reason: &str| LocationError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s == "-" {
            return Ok(Location::Stdio);
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket).map_err(|r| err(&r))?;
            let key = Key::prefix(key).map_err(|e| err(&e.message))?;
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key,
            });
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(err("a file:// URL needs an absolute path (file:///abs/path)"));
            }
            let decoded = percent_encoding::percent_decode_str(rest)
                .decode_utf8()
                .map_err(|_| err("not valid UTF-8 after percent-decoding"))?;
            return Ok(Location::Local {
                path: PathBuf::from(decoded.as_ref()),
            });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') {
                return Err(err(&format!(
                    "unsupported scheme {scheme:?} (use s3://bucket/prefix, a local path, or file:///path)"
                )));
            }
        }
        if s.contains('\0') {
            return Err(err("contains a NUL character"));
        }
        Ok(Location::Local { path: PathBuf::from(s) })
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }

    /// Whether the user wrote it as a folder (trailing `/`).
    pub fn is_dir_like(&self) -> bool {
        match self {
            Location::S3 { key, .. } => key.is_empty() || key.as_str().ends_with('/'),
            Location::Local { path } => path.as_os_str().to_string_lossy().ends_with('/'),
            Location::Stdio => false,
        }
    }
}

/// S3's bucket naming rules (lenient on dots and case for older buckets and
/// S3-compatible servers, strict on what would break a URL).
fn check_bucket(b: &str) -> Result<(), String> {
    if b.is_empty() {
        return Err("missing bucket name after s3://".into());
    }
    if b.len() < 3 || b.len() > 63 {
        return Err(format!("bucket name {b:?} must be 3 to 63 characters"));
    }
    if !b
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "bucket name {b:?} may only contain letters, digits, '.', '-' and '_'"
        ));
    }
    Ok(())
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Location::Local { path } => write!(f, "{}", path.display()),
            Location::Stdio => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            Location::parse("s3://my-bucket/2026/11/21/x.json"),
            Ok(Location::S3 {
                bucket: "my-bucket".into(),
                key: Key::prefix("2026/11/21/x.json").unwrap_or_else(|_| Key::root())
            })
        );
        assert!(matches!(Location::parse("s3://b12"), Ok(Location::S3 { ref key, .. }) if key.is_empty()));
        assert_eq!(Location::parse("-"), Ok(Location::Stdio));
        assert_eq!(
            Location::parse("file:///tmp/a%20b"),
            Ok(Location::Local {
                path: "/tmp/a b".into()
            })
        );
        assert_eq!(Location::parse("./dir"), Ok(Location::Local { path: "./dir".into() }));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "s3://",
            "s3:///key",
            "s3://a",
            "s3://bad bucket/x",
            "gs://b/k",
            "file://relative",
        ] {
            let e = Location::parse(bad);
            assert!(e.is_err(), "{bad:?} accepted");
        }
        let e = Location::parse("gs://b/k")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unsupported scheme \"gs\""), "{e}");
    }
}
