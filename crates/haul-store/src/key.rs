//! Checked object keys and key ranges.
//!
//! Keys are parsed once at the edge (CLI, plan files) into [`Key`]; everything
//! below works with keys that are known to be valid S3 keys. Ordering is by
//! bytes, which is the order S3 lists in.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, Op, StoreError};

/// The longest key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// A valid object key (or key prefix): UTF-8, at most 1024 bytes, no NUL.
///
/// An empty key is allowed only as a prefix (the root of a bucket); use
/// [`Key::object`] where an object key is required.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);

impl Key {
    /// Parses a key prefix (may be empty).
    pub fn prefix(s: impl Into<String>) -> Result<Self, StoreError> {
        let s = s.into();
        if s.len() > MAX_KEY_LEN {
            return Err(invalid(&s, "longer than 1024 bytes"));
        }
        if s.contains('\0') {
            return Err(invalid(&s, "contains a NUL character"));
        }
        Ok(Key(s))
    }

    /// Parses an object key (must not be empty).
    pub fn object(s: impl Into<String>) -> Result<Self, StoreError> {
        let k = Self::prefix(s)?;
        if k.0.is_empty() {
            return Err(invalid("", "an object key cannot be empty"));
        }
        Ok(k)
    }

    /// The empty prefix: the whole bucket.
    pub fn root() -> Self {
        Key(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self` followed by `suffix`.
    pub fn join(&self, suffix: &str) -> Result<Self, StoreError> {
        Self::prefix(format!("{}{}", self.0, suffix))
    }

    /// The part of the key after `prefix`, if the key starts with it.
    pub fn strip_prefix(&self, prefix: &Key) -> Option<&str> {
        self.0.strip_prefix(prefix.as_str())
    }

    /// The last `/`-separated segment (the "file name").
    pub fn file_name(&self) -> &str {
        let trimmed = self.0.trim_end_matches('/');
        trimmed.rsplit('/').next().unwrap_or(trimmed)
    }

    /// Whether the key looks like a "folder" marker (`dir/`).
    pub fn is_dir_marker(&self) -> bool {
        self.0.ends_with('/')
    }

    /// The prefix as a "directory": empty stays empty, otherwise ends in `/`.
    pub fn as_dir(&self) -> Key {
        if self.0.is_empty() || self.0.ends_with('/') {
            self.clone()
        } else {
            Key(format!("{}/", self.0))
        }
    }
}

fn invalid(key: &str, reason: &str) -> StoreError {
    StoreError::new(Op::Validate, key, ErrorKind::InvalidKey, reason)
}

impl TryFrom<String> for Key {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Key::prefix(s)
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A half-open key range `[start, end)` inside a prefix: the unit a listing
/// can be cut into (shards). `start_after` is exclusive, like S3's
/// `StartAfter`; `end` is exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    /// Yield only keys strictly greater than this.
    pub start_after: Option<Key>,
    /// Yield only keys strictly less than this.
    pub end: Option<Key>,
}

impl KeyRange {
    pub fn contains(&self, key: &str) -> bool {
        self.start_after.as_ref().is_none_or(|s| key > s.as_str()) && self.end.as_ref().is_none_or(|e| key < e.as_str())
    }

    /// Whether every key starting with `prefix` lies at or past the end bound.
    pub fn prefix_past_end(&self, prefix: &str) -> bool {
        self.end.as_ref().is_some_and(|e| prefix >= e.as_str())
    }

    /// Whether every key starting with `prefix` is at or before `start_after`.
    pub fn prefix_before_start(&self, prefix: &str) -> bool {
        match &self.start_after {
            // All keys under `prefix` are < start_after when start_after sorts
            // after the prefix and does not itself start with it.
            Some(s) => s.as_str() > prefix && !s.as_str().starts_with(prefix),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_keys() {
        assert!(Key::object("").is_err());
        assert!(Key::prefix("a\0b").is_err());
        assert!(Key::prefix("x".repeat(1025)).is_err());
        assert!(Key::prefix("x".repeat(1024)).is_ok());
        let e = Key::object("").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("cannot be empty"), "{e}");
    }

    #[test]
    fn range_pruning() {
        let r = KeyRange {
            start_after: Some(Key::prefix("b/x").unwrap_or_else(|_| Key::root())),
            end: Some(Key::prefix("d").unwrap_or_else(|_| Key::root())),
        };
        assert!(r.prefix_before_start("a/"));
        assert!(!r.prefix_before_start("b/"));
        assert!(!r.prefix_before_start("c/"));
        assert!(r.prefix_past_end("d/"));
        assert!(!r.prefix_past_end("c/"));
        assert!(r.contains("b/y") && !r.contains("b/x") && !r.contains("d"));
    }

    #[test]
    fn names() {
        let k = Key::object("2026/11/21/x.json").unwrap_or_else(|_| Key::root());
        assert_eq!(k.file_name(), "x.json");
        assert_eq!(Key::root().as_dir().as_str(), "");
        assert_eq!(Key::prefix("a").map(|k| k.as_dir().0).ok(), Some("a/".into()));
    }
}
