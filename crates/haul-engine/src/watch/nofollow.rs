//! The watched tree, reached only through directory descriptors: every
//! path is opened component by component from the root's descriptor with
//! `O_NOFOLLOW`, so a symbolic link anywhere in a path — a folder swapped
//! for a link between two steps included — is found, never followed.
//! Stats use `AT_SYMLINK_NOFOLLOW`, and a deletion is an `unlinkat` relative
//! to the descriptor of the parent that was just checked.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::lease::{self, Lease};

/// What must not change between reading a file and deleting it: the
/// inode, its size, and both times (a writer may set mtime back; ctime
/// cannot be set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
}

impl Ident {
    fn of(st: &Stat) -> Self {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        #[allow(clippy::unnecessary_cast)]
        Ident {
            size: st.st_size.max(0) as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            inode: st.st_ino as u64,
            device: st.st_dev as u64,
        }
    }

    /// Size, mtime and ctime: what settling compares.
    pub fn same_content_as(&self, o: &Ident) -> bool {
        self.size == o.size && self.mtime_ns == o.mtime_ns && self.ctime_ns == o.ctime_ns
    }
}

/// What a path of the tree is, seen without following links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(Ident),
    Dir,
    /// The path, or one of its folders, is a symbolic link: `at` is the
    /// relative path of the (first) link.
    Symlink {
        at: String,
    },
    /// A FIFO, socket or device.
    Special,
    Missing,
}

/// How a checked deletion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Yes,
    /// Something else is at the path now (changed, replaced, a link): kept.
    Changed(Entry),
    /// Someone has the file open for writing (the read lease was refused
    /// or broken): kept.
    Busy,
}

/// The root of a watched tree, held open.
#[derive(Debug)]
pub struct Tree {
    root: OwnedFd,
}

/// A directory descriptor: the root's, or one opened below it.
enum DirFd<'a> {
    Root(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl DirFd<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Root(b) => *b,
            DirFd::Owned(o) => o.as_fd(),
        }
    }
}

/// The parent folder of a path, or why there is none.
enum Parent<'a> {
    Found(DirFd<'a>),
    Not(Entry),
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn components(rel: &str) -> io::Result<Vec<&str>> {
    let parts: Vec<&str> = rel.trim_end_matches('/').split('/').collect();
    if rel.is_empty() || parts.iter().any(|c| c.is_empty() || *c == "." || *c == "..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a path inside the watched tree: {rel:?}"),
        ));
    }
    Ok(parts)
}

impl Tree {
    /// Opens the (canonical) root directory.
    pub fn open(root: &Path) -> io::Result<Tree> {
        let root = rustix::fs::open(root, DIR_FLAGS, Mode::empty())?;
        Ok(Tree { root })
    }

    /// Opens the folders of `parts` one by one, never through a link.
    fn walk<'a>(&'a self, parts: &[&str]) -> io::Result<Parent<'a>> {
        let mut dir = DirFd::Root(self.root.as_fd());
        for (i, c) in parts.iter().enumerate() {
            match rustix::fs::openat(dir.fd(), *c, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => dir = DirFd::Owned(fd),
                Err(e) if e == Errno::NOENT => return Ok(Parent::Not(Entry::Missing)),
                Err(e) if e == Errno::LOOP || e == Errno::NOTDIR => {
                    // A link, or a file where a folder was: say which.
                    let at = parts[..=i].join("/");
                    return Ok(Parent::Not(match classify(dir.fd(), *c)? {
                        Entry::Symlink { .. } => Entry::Symlink { at },
                        Entry::Missing => Entry::Missing,
                        _ => Entry::Missing,
                    }));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Parent::Found(dir))
    }

    fn parent_of<'a, 'r>(&'a self, rel: &'r str) -> io::Result<(Parent<'a>, &'r str)> {
        let parts = components(rel)?;
        let (name, dirs) = parts
            .split_last()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok((self.walk(dirs)?, name))
    }

    /// What is at `rel`, without following any link.
    pub fn stat(&self, rel: &str) -> io::Result<Entry> {
        let (parent, name) = self.parent_of(rel)?;
        let dir = match parent {
            Parent::Found(d) => d,
            Parent::Not(e) => return Ok(e),
        };
        Ok(match classify(dir.fd(), name)? {
            Entry::Symlink { .. } => Entry::Symlink { at: rel.to_string() },
            e => e,
        })
    }

    /// Opens the regular file at `rel` for reading, never through a link
    /// (nor a FIFO, which would block), and says what it opened; or what is
    /// there instead.
    pub fn open_file(&self, rel: &str) -> io::Result<Result<(File, Ident), Entry>> {
        let (parent, name) = self.parent_of(rel)?;
        let dir = match parent {
            Parent::Found(d) => d,
            Parent::Not(e) => return Ok(Err(e)),
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(dir.fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e == Errno::LOOP => return Ok(Err(Entry::Symlink { at: rel.to_string() })),
            Err(e) if e == Errno::NOENT => return Ok(Err(Entry::Missing)),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Ok(Err(Entry::Dir)),
            _ => return Ok(Err(Entry::Special)),
        }
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok(Ok((File::from(fd), Ident::of(&st))))
    }

    /// Deletes the file at `rel` if it is still the one `expect` describes
    /// and no one has it open for writing. In order: the parent is opened
    /// without following links; the file is opened read-only relative to
    /// it (`O_NOFOLLOW|O_NONBLOCK`); a read lease is taken on that
    /// descriptor (refused: someone writes it, [`Removed::Busy`]); the
    /// opened file must have the expected inode, size, mtime and ctime, and
    /// the name (`fstatat`, no follow) must still be that inode; the lease
    /// must be unbroken; then `unlinkat` relative to the same parent, and
    /// the lease is released. Without leases ([`Lease::Unavailable`]) the
    /// same checks run, and `*no_lease` says why.
    pub fn remove_if(&self, rel: &str, expect: &Ident, no_lease: &mut Option<io::Error>) -> io::Result<Removed> {
        let (parent, name) = self.parent_of(rel)?;
        let dir = match parent {
            Parent::Found(d) => d,
            Parent::Not(e) => return Ok(Removed::Changed(e)),
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(dir.fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e == Errno::LOOP => return Ok(Removed::Changed(Entry::Symlink { at: rel.to_string() })),
            Err(e) if e == Errno::NOENT => return Ok(Removed::Changed(Entry::Missing)),
            Err(e) if e == Errno::NXIO => return Ok(Removed::Changed(Entry::Special)),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Ok(Removed::Changed(Entry::Dir)),
            _ => return Ok(Removed::Changed(Entry::Special)),
        }
        let lease = match lease::take(fd.as_fd()) {
            Lease::Busy => return Ok(Removed::Busy),
            Lease::Held(h) => Some(h),
            Lease::Unavailable(e) => {
                *no_lease = Some(e);
                None
            }
        };
        let opened = Ident::of(&st);
        if opened != *expect {
            return Ok(Removed::Changed(Entry::File(opened)));
        }
        match classify(dir.fd(), name)? {
            Entry::File(id) if id == opened => {}
            Entry::Symlink { .. } => return Ok(Removed::Changed(Entry::Symlink { at: rel.to_string() })),
            other => return Ok(Removed::Changed(other)),
        }
        // A writer that started opening it since the lease was granted.
        if lease.as_ref().is_some_and(|l| !l.intact()) {
            return Ok(Removed::Busy);
        }
        let removed = match rustix::fs::unlinkat(dir.fd(), name, AtFlags::empty()) {
            Ok(()) => Ok(Removed::Yes),
            Err(e) if e == Errno::NOENT => Ok(Removed::Changed(Entry::Missing)),
            Err(e) => Err(e.into()),
        };
        drop(lease);
        drop(fd);
        removed
    }

    /// The entries of the folder `rel` (`""`: the root), without following
    /// links: names (raw bytes) and what they are; `Ok(Err(entry))` when the
    /// folder is gone or is (behind) a link.
    pub fn read_dir(&self, rel: &str) -> io::Result<Result<Listing, Entry>> {
        let dir = if rel.trim_end_matches('/').is_empty() {
            rustix::fs::openat(self.root.as_fd(), ".", DIR_FLAGS, Mode::empty())?
        } else {
            let parts = components(rel)?;
            match self.walk(&parts)? {
                Parent::Found(DirFd::Owned(fd)) => fd,
                Parent::Found(DirFd::Root(_)) => rustix::fs::openat(self.root.as_fd(), ".", DIR_FLAGS, Mode::empty())?,
                Parent::Not(e) => return Ok(Err(e)),
            }
        };
        let mut out = Vec::new();
        let probe = rustix::io::dup(&dir)?;
        for ent in Dir::new(dir)? {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match ent.file_type() {
                FileType::RegularFile => Kind::File,
                FileType::Directory => Kind::Dir,
                FileType::Symlink => Kind::Symlink,
                FileType::Unknown => match classify(probe.as_fd(), OsStr::from_bytes(name))? {
                    Entry::File(_) => Kind::File,
                    Entry::Dir => Kind::Dir,
                    Entry::Symlink { .. } => Kind::Symlink,
                    Entry::Missing => continue,
                    Entry::Special => Kind::Special,
                },
                _ => Kind::Special,
            };
            out.push((name.to_vec(), kind));
        }
        Ok(Ok(out))
    }
}

/// A folder's entries: raw names and what they are.
pub type Listing = Vec<(Vec<u8>, Kind)>;

/// The kind of a folder entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Special,
}

/// What `name` in `dir` is, without following it.
fn classify<P: rustix::path::Arg>(dir: BorrowedFd<'_>, name: P) -> io::Result<Entry> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Entry::File(Ident::of(&st)),
            FileType::Directory => Entry::Dir,
            FileType::Symlink => Entry::Symlink { at: String::new() },
            _ => Entry::Special,
        }),
        Err(e) if e == Errno::NOENT || e == Errno::NOTDIR => Ok(Entry::Missing),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_anywhere_in_a_path_are_found_never_followed() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let r = root.path();
        std::fs::create_dir_all(r.join("a/b"))?;
        std::fs::write(r.join("a/b/f"), b"in")?;
        std::fs::write(outside.path().join("f"), b"out")?;
        std::os::unix::fs::symlink(outside.path(), r.join("a/link"))?;
        std::os::unix::fs::symlink(outside.path().join("f"), r.join("a/flink"))?;
        let t = Tree::open(r)?;
        assert!(matches!(t.stat("a/b/f")?, Entry::File(id) if id.size == 2));
        assert_eq!(t.stat("a/b")?, Entry::Dir);
        assert_eq!(t.stat("a/link/f")?, Entry::Symlink { at: "a/link".into() });
        assert_eq!(t.stat("a/flink")?, Entry::Symlink { at: "a/flink".into() });
        assert_eq!(t.stat("a/nope/f")?, Entry::Missing);
        assert_eq!(
            t.open_file("a/link/f")?.err(),
            Some(Entry::Symlink { at: "a/link".into() })
        );
        assert_eq!(
            t.open_file("a/flink")?.err(),
            Some(Entry::Symlink { at: "a/flink".into() })
        );
        assert!(t.stat("a/../x").is_err(), "`..` refused");
        let (_, id) = t.open_file("a/b/f")?.map_err(|e| format!("{e:?}"))?;
        // The folder is swapped for a link to a folder holding a file of the same name.
        std::fs::rename(r.join("a/b"), r.join("a/old"))?;
        std::os::unix::fs::symlink(outside.path(), r.join("a/b"))?;
        assert_eq!(
            t.remove_if("a/b/f", &id, &mut None)?,
            Removed::Changed(Entry::Symlink { at: "a/b".into() })
        );
        assert!(outside.path().join("f").exists(), "nothing outside the tree is deleted");
        std::fs::remove_file(r.join("a/b"))?;
        std::fs::rename(r.join("a/old"), r.join("a/b"))?;
        assert_eq!(t.remove_if("a/b/f", &id, &mut None)?, Removed::Yes);
        let mut names = t.read_dir("a")?.map_err(|e| format!("{e:?}"))?;
        names.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            names,
            vec![
                (b"b".to_vec(), Kind::Dir),
                (b"flink".to_vec(), Kind::Symlink),
                (b"link".to_vec(), Kind::Symlink)
            ]
        );
        assert_eq!(t.read_dir("a/link/")?, Err(Entry::Symlink { at: "a/link".into() }));
        Ok(())
    }
}
