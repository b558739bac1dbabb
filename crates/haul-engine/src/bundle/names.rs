//! Which tar members an extraction accepts: names that stay under the
//! root (no absolute path, `..`, NUL, backslash, or empty name) and
//! member types that are plain data (regular files and directories; never
//! links, devices or FIFOs). Pure checks, before any file-system call.

use serde::Serialize;

/// Why a member is not extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefuseReason {
    /// The name starts with `/`.
    Absolute,
    /// A `..` component.
    DotDot,
    /// A NUL character.
    Nul,
    /// A backslash (a Windows separator some extractors honour).
    Backslash,
    /// No name at all.
    Empty,
    /// Not valid UTF-8.
    InvalidName,
    /// A member type other than a regular file or a directory.
    MemberType,
    /// A folder of the path is a symbolic link.
    ThroughSymlink,
    /// A file where a folder is needed, or a folder where the file goes.
    Conflict,
    /// Something is already there (not overwritten).
    Exists,
}

impl RefuseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Absolute => "absolute",
            RefuseReason::DotDot => "dot_dot",
            RefuseReason::Nul => "nul",
            RefuseReason::Backslash => "backslash",
            RefuseReason::Empty => "empty",
            RefuseReason::InvalidName => "invalid_name",
            RefuseReason::MemberType => "member_type",
            RefuseReason::ThroughSymlink => "through_symlink",
            RefuseReason::Conflict => "conflict",
            RefuseReason::Exists => "exists",
        }
    }
}

/// A refused member's reason, with a human explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub reason: RefuseReason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: RefuseReason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// The path components of a member name, or why it is refused. `.` and
/// empty components are dropped (`./a//b` is `a/b`); a name of only those
/// gives no component (the root itself).
pub fn check_name(name: &str) -> Result<Vec<&str>, Refusal> {
    if name.is_empty() {
        return Err(Refusal::new(RefuseReason::Empty, "the member has no name"));
    }
    if name.contains('\0') {
        return Err(Refusal::new(RefuseReason::Nul, "the name contains a NUL character"));
    }
    if name.contains('\\') {
        return Err(Refusal::new(RefuseReason::Backslash, "the name contains a backslash"));
    }
    if name.starts_with('/') {
        return Err(Refusal::new(RefuseReason::Absolute, "the name is an absolute path"));
    }
    let comps: Vec<&str> = name.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if comps.contains(&"..") {
        return Err(Refusal::new(RefuseReason::DotDot, "the name has a '..' component"));
    }
    // The extractor's own temporary names: a member named like one could
    // be renamed over by, or unlinked with, another member's write.
    if comps.iter().any(|c| c.starts_with(super::extract::TEMP_PREFIX)) {
        return Err(Refusal::new(
            RefuseReason::InvalidName,
            "the name is one haul uses for temporary files",
        ));
    }
    Ok(comps)
}

/// What a member is, or why its type is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    File,
    Dir,
}

/// The kind of a tar member, or why it is refused.
pub fn member_kind(t: tar::EntryType) -> Result<MemberKind, Refusal> {
    let what = match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => return Ok(MemberKind::File),
        tar::EntryType::Directory => return Ok(MemberKind::Dir),
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Fifo => "a FIFO",
        tar::EntryType::GNUSparse => "a sparse file",
        _ => "a member of an unsupported type",
    };
    Err(Refusal::new(
        RefuseReason::MemberType,
        format!("{what} is not extracted"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extractors_temporary_names_are_refused() {
        assert!(check_name(".haul-extract-1-2.tmp").is_err());
        assert!(check_name("d/.haul-extract-9.tmp").is_err());
        assert!(check_name("d/haul-extract.tmp").is_ok());
    }

    #[test]
    fn names_are_checked_before_any_path_is_made() {
        let refused = |n: &str| check_name(n).err().map(|r| r.reason);
        assert_eq!(refused("../x"), Some(RefuseReason::DotDot));
        assert_eq!(refused("a/../../x"), Some(RefuseReason::DotDot));
        assert_eq!(refused("/etc/x"), Some(RefuseReason::Absolute));
        assert_eq!(refused("a\\b"), Some(RefuseReason::Backslash));
        assert_eq!(refused("a\0b"), Some(RefuseReason::Nul));
        assert_eq!(refused(""), Some(RefuseReason::Empty));
        assert_eq!(check_name("./a//b/").ok(), Some(vec!["a", "b"]));
        assert_eq!(check_name("./").ok(), Some(vec![]));
        assert_eq!(
            member_kind(tar::EntryType::Symlink).err().map(|r| r.reason),
            Some(RefuseReason::MemberType)
        );
    }
}
