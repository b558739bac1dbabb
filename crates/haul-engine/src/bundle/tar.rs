//! Member headers of a bundle, deterministic: the same object gives the
//! same header bytes on every run, so a re-run writes the same archive.
//!
//! Each member is a ustar header (built with the `tar` crate), preceded by
//! a PAX extended header only when ustar cannot say it: a name longer than
//! 100 bytes or not ASCII (S3 keys reach 1,024 bytes of UTF-8), a size of
//! 8 GiB or more, a sub-second mtime, a uid/gid beyond ustar's 7 octal
//! digits. mtime is the object's LastModified; mode, uid and gid come from
//! the `file-mode`/`file-owner`/`file-group` user metadata (or rclone's
//! `mode`/`uid`/`gid`) when present and valid, else 0644/0/0. Owner and
//! group names are left empty.
//!
//! Names are checked here too ([`unsafe_name`]): a name a tar reader would
//! put elsewhere than where it says (absolute, `.`/`..`, empty components,
//! NUL, a trailing `/`, the index member's own name) is never written. Folder markers (keys ending in
//! `/` with no data) are not members at all: the planner drops them, and
//! directories are implied by the members' names.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::format::{padding, BLOCK};

/// The largest size an ustar header holds (11 octal digits).
const USTAR_MAX_SIZE: u64 = 0o77777777777;
/// The largest uid/gid an ustar header holds (7 octal digits).
const USTAR_MAX_ID: u64 = 0o7777777;
/// The name field of a ustar header.
const NAME_LEN: usize = 100;
/// The mode when the metadata gives none.
pub const DEFAULT_MODE: u32 = 0o644;

/// What a member's header says besides its name and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    /// Permission bits (no file type).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds and nanoseconds since the Unix epoch (0 before it).
    pub mtime_s: u64,
    pub mtime_ns: u32,
}

impl Stat {
    /// The stat of an object: mtime from `modified`, the rest from its
    /// user metadata.
    pub fn of(modified: Option<SystemTime>, metadata: &BTreeMap<String, String>) -> Self {
        let since = modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let get = |keys: &[&str]| keys.iter().find_map(|k| metadata.get(*k)).map(|v| v.trim().to_string());
        Stat {
            mode: get(&["file-mode", "mode"])
                .and_then(|v| parse_mode(&v))
                .unwrap_or(DEFAULT_MODE),
            uid: get(&["file-owner", "uid"]).and_then(|v| parse_id(&v)).unwrap_or(0),
            gid: get(&["file-group", "gid"]).and_then(|v| parse_id(&v)).unwrap_or(0),
            mtime_s: since.as_secs(),
            mtime_ns: since.subsec_nanos(),
        }
    }
}

/// An octal mode (`0644`, `100644`: rclone's form with the file type).
/// Only a regular file's type, or none, is accepted; only the permission
/// bits are kept — setuid, setgid and sticky bits from an object's
/// metadata (which anyone who can write the source sets) would make
/// `tar -x` as root create a setuid file.
fn parse_mode(v: &str) -> Option<u32> {
    let m = u32::from_str_radix(v.strip_prefix("0o").unwrap_or(v), 8).ok()?;
    let kind = m & !0o7777;
    (kind == 0 || kind == 0o100000).then_some(m & 0o777)
}

/// A numeric uid/gid (names are not resolved).
fn parse_id(v: &str) -> Option<u64> {
    v.parse::<u32>().ok().map(u64::from)
}

/// Why a name cannot be a member's, or `None` when it can.
pub fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("an empty name");
    }
    if name.contains('\0') {
        return Some("a NUL byte in the name");
    }
    if name.contains('\\') {
        return Some("a backslash in the name (a path separator to some extractors)");
    }
    if name.starts_with('/') {
        return Some("an absolute name");
    }
    if name == super::format::INDEX_MEMBER {
        return Some("the name of the archive's own index member");
    }
    if name.ends_with('/') {
        return Some("a name ending in '/' (a folder with data)");
    }
    for c in name.split('/') {
        match c {
            "" => return Some("an empty path component ('//')"),
            "." | ".." => return Some("a '.' or '..' path component"),
            _ => {}
        }
    }
    None
}

/// One PAX record: `<len> <key>=<value>\n`, the length counting itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The PAX records a member needs (empty when ustar says it all).
fn pax_records(name: &str, size: u64, st: &Stat) -> Vec<u8> {
    let mut pax = Vec::new();
    if name.len() > NAME_LEN || !name.is_ascii() {
        pax_record(&mut pax, "path", name.as_bytes());
    }
    if size > USTAR_MAX_SIZE {
        pax_record(&mut pax, "size", size.to_string().as_bytes());
    }
    if st.mtime_ns != 0 {
        let frac = format!("{:09}", st.mtime_ns);
        let v = format!("{}.{}", st.mtime_s, frac.trim_end_matches('0'));
        pax_record(&mut pax, "mtime", v.as_bytes());
    }
    if st.uid > USTAR_MAX_ID {
        pax_record(&mut pax, "uid", st.uid.to_string().as_bytes());
    }
    if st.gid > USTAR_MAX_ID {
        pax_record(&mut pax, "gid", st.gid.to_string().as_bytes());
    }
    pax
}

/// A ustar header whose name field holds `name`'s bytes, cut to 100 (the
/// full name is then in a PAX record).
fn ustar(name: &[u8], size: u64, kind: ::tar::EntryType, st: &Stat) -> ::tar::Header {
    let mut h = ::tar::Header::new_ustar();
    if let Some(u) = h.as_ustar_mut() {
        let n = name.len().min(NAME_LEN);
        u.name[..n].copy_from_slice(&name[..n]);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(st.mode);
    h.set_uid(st.uid);
    h.set_gid(st.gid);
    h.set_mtime(st.mtime_s);
    h.set_cksum();
    h
}

/// The ASCII stand-in for a name in a ustar field (the PAX `path` is the
/// real one): non-ASCII bytes become `_`, cut to 100 bytes.
fn fallback_name(name: &str) -> Vec<u8> {
    name.bytes()
        .map(|b| if b.is_ascii() && b != 0 { b } else { b'_' })
        .take(NAME_LEN)
        .collect()
}

/// The header blocks of a regular-file member: a PAX header and its
/// records when needed, then the ustar header. A multiple of 512 bytes.
/// The name must have passed [`unsafe_name`].
pub fn member_header(name: &str, size: u64, st: &Stat) -> Vec<u8> {
    let pax = pax_records(name, size, st);
    let mut out = Vec::with_capacity(BLOCK as usize * 3);
    if !pax.is_empty() {
        let xname = fallback_name(&format!("PaxHeaders/{name}"));
        let xst = Stat {
            mtime_ns: 0,
            uid: st.uid.min(USTAR_MAX_ID),
            gid: st.gid.min(USTAR_MAX_ID),
            ..*st
        };
        let x = ustar(&xname, pax.len() as u64, ::tar::EntryType::XHeader, &xst);
        out.extend_from_slice(x.as_bytes());
        out.extend_from_slice(&pax);
        out.resize(out.len() + padding(pax.len() as u64) as usize, 0);
    }
    let st = Stat {
        uid: st.uid.min(USTAR_MAX_ID),
        gid: st.gid.min(USTAR_MAX_ID),
        ..*st
    };
    let h = ustar(&fallback_name(name), size, ::tar::EntryType::Regular, &st);
    out.extend_from_slice(h.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object's metadata can name the mode, never setuid, setgid or
    /// sticky bits; a backslash is not a name a member may have.
    #[test]
    fn metadata_modes_keep_only_permission_bits() {
        assert_eq!(parse_mode("4755"), Some(0o755));
        assert_eq!(parse_mode("106755"), Some(0o755));
        assert_eq!(parse_mode("0640"), Some(0o640));
        assert_eq!(parse_mode("120777"), None, "a symlink's type");
        assert!(unsafe_name("a\\..\\..\\x").is_some());
    }

    #[test]
    fn pax_lengths_count_themselves() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'a'; 5]);
        assert_eq!(v, b"14 path=aaaaa\n");
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'a'; 91]);
        // 3 + 4 + 91 = 98, plus "100" = 101 does not fit "2 digits".
        assert_eq!(v.len(), 101);
        assert!(v.starts_with(b"101 path="));
    }

    #[test]
    fn stat_from_metadata_and_defaults() {
        let mut m = BTreeMap::new();
        let t = UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 500_000_000);
        assert_eq!(
            Stat::of(Some(t), &m),
            Stat {
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime_s: 1_700_000_000,
                mtime_ns: 500_000_000
            }
        );
        m.insert("mode".into(), "100755".into());
        m.insert("file-owner".into(), "1000".into());
        m.insert("gid".into(), "bogus".into());
        let s = Stat::of(None, &m);
        assert_eq!((s.mode, s.uid, s.gid, s.mtime_s), (0o755, 1000, 0, 0));
        m.insert("file-mode".into(), "040755".into());
        assert_eq!(Stat::of(None, &m).mode, 0o644, "a directory mode is not a file's");
    }

    #[test]
    fn headers_are_ustar_with_pax_only_when_needed() {
        let st = Stat {
            mode: 0o644,
            mtime_s: 10,
            ..Default::default()
        };
        assert_eq!(member_header("a/b.txt", 5, &st).len(), 512);
        assert_eq!(member_header(&"x".repeat(100), 5, &st).len(), 512);
        assert_eq!(member_header(&"x".repeat(101), 5, &st).len(), 1536);
        assert_eq!(member_header("é", 5, &st).len(), 1536);
        let sub = Stat { mtime_ns: 1, ..st };
        assert_eq!(member_header("a", 5, &sub).len(), 1536);
        assert_eq!(member_header("a", 8 << 30, &st).len(), 1536);
        // Deterministic.
        assert_eq!(member_header("k", 1, &st), member_header("k", 1, &st));
    }

    #[test]
    fn unsafe_names() {
        for bad in ["", "/a", "a/../b", "./a", "a//b", "a\0b", "a/", ".haul/index.jsonl"] {
            assert!(unsafe_name(bad).is_some(), "{bad:?}");
        }
        for good in ["a", "a b/c+d%20.txt", "é/ü", "...", "a..b"] {
            assert!(unsafe_name(good).is_none(), "{good:?}");
        }
    }
}
