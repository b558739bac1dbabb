//! Writing members under a local root without ever leaving it. An archive
//! is untrusted input (a hand-made tar, or an index someone edited), so:
//!
//! * names are checked first ([`super::names`]: absolute, `..`, NUL,
//!   backslash, empty are refused member by member, with a reason);
//! * every path is walked component by component from the root's
//!   descriptor: `openat(O_DIRECTORY|O_NOFOLLOW)` for folders, `mkdirat`
//!   for missing ones, so a symbolic link anywhere in a path — one the
//!   archive made earlier, one already in the root, one swapped in while
//!   we run — is found and never followed;
//! * files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` (never through a
//!   link, never over an existing file); with `overwrite`, under a temp
//!   name then `renameat` over the old one (a link is replaced, not
//!   followed);
//! * mtimes are set on the open descriptor (`futimens`).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::names::{check_name, Refusal, RefuseReason};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// The start of the names of files being written (renamed into place when
/// complete); member names starting with it are refused.
pub const TEMP_PREFIX: &str = ".haul-extract-";

/// Why one member could not be written: refused, or a file-system call failed.
#[derive(Debug)]
pub enum ExtractError {
    Refused(Refusal),
    Io { op: &'static str, source: io::Error },
}

impl From<Refusal> for ExtractError {
    fn from(r: Refusal) -> Self {
        ExtractError::Refused(r)
    }
}

fn io_err(op: &'static str) -> impl FnOnce(Errno) -> ExtractError {
    move |e| ExtractError::Io { op, source: e.into() }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A directory members are written under, held open.
#[derive(Debug)]
pub struct LocalRoot {
    root: OwnedFd,
    path: PathBuf,
    overwrite: bool,
    /// Folder mtimes, set last (writing inside a folder changes its mtime).
    dir_mtimes: Mutex<Vec<(Vec<String>, i128)>>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalRoot {
    /// Opens (creating it if needed) the root directory. `overwrite`:
    /// replace existing files instead of refusing the member.
    pub fn open(path: &Path, overwrite: bool) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(LocalRoot {
            root,
            path: path.to_path_buf(),
            overwrite,
            dir_mtimes: Mutex::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the folders `comps` one by one from the root, creating missing
    /// ones when `create`, never through a link.
    fn walk(&self, comps: &[&str], create: bool) -> Result<OwnedFd, ExtractError> {
        let mut dir = rustix::fs::openat(&self.root, ".", DIR_FLAGS, Mode::empty()).map_err(io_err("open"))?;
        for (i, c) in comps.iter().enumerate() {
            let shown = comps[..=i].join("/");
            dir = step(dir.as_fd(), c, &shown, create)?;
        }
        Ok(dir)
    }

    /// Creates the folder `name` (and its parents); its mtime is set by
    /// [`LocalRoot::finish`].
    pub fn make_dir(&self, name: &str, mtime_ns: Option<i128>) -> Result<(), ExtractError> {
        let comps = check_name(name)?;
        self.walk(&comps, true)?;
        if let (Some(m), false) = (mtime_ns, comps.is_empty()) {
            if let Ok(mut d) = self.dir_mtimes.lock() {
                d.push((comps.iter().map(|c| c.to_string()).collect(), m));
            }
        }
        Ok(())
    }

    /// Creates the file `name` (its folders as needed), empty, to be
    /// written then [`NewFile::commit`]ted.
    pub fn create_file(&self, name: &str, mode: u32) -> Result<NewFile, ExtractError> {
        let comps = check_name(name)?;
        let Some((last, dirs)) = comps.split_last() else {
            return Err(Refusal::new(RefuseReason::Empty, "a file member names the root").into());
        };
        let dir = self.walk(dirs, true)?;
        let mode = Mode::from_raw_mode(mode & 0o777);
        let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (target, tmp) = if self.overwrite {
            if let Entry::Dir = classify(dir.as_fd(), last)? {
                return Err(Refusal::new(RefuseReason::Conflict, format!("{name:?} is a directory")).into());
            }
            let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = format!("{TEMP_PREFIX}{}-{n}.tmp", std::process::id());
            (tmp.clone(), Some(tmp))
        } else {
            (last.to_string(), None)
        };
        let fd = match rustix::fs::openat(dir.as_fd(), target.as_str(), create, mode) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                return Err(match classify(dir.as_fd(), last)? {
                    Entry::Dir => Refusal::new(RefuseReason::Conflict, format!("{name:?} is a directory")),
                    Entry::Symlink => Refusal::new(
                        RefuseReason::Exists,
                        format!("{name:?} is a symbolic link: not followed, not replaced"),
                    ),
                    _ => Refusal::new(RefuseReason::Exists, format!("{name:?} exists: not overwritten")),
                }
                .into())
            }
            Err(e) => return Err(io_err("create")(e)),
        };
        Ok(NewFile {
            file: Some(File::from(fd)),
            dir,
            name: last.to_string(),
            tmp,
            done: false,
        })
    }

    /// Sets the folder mtimes recorded by [`LocalRoot::make_dir`], deepest
    /// first; returns the folders that failed.
    pub fn finish(&self) -> Vec<(String, ExtractError)> {
        let mut dirs = match self.dir_mtimes.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => Vec::new(),
        };
        dirs.sort_by_key(|(comps, _)| std::cmp::Reverse(comps.len()));
        let mut failed = Vec::new();
        for (comps, m) in dirs {
            let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
            let r = self
                .walk(&refs, false)
                .and_then(|fd| rustix::fs::futimens(&fd, &times(m)).map_err(io_err("utimes")));
            if let Err(e) = r {
                failed.push((comps.join("/"), e));
            }
        }
        failed
    }
}

/// Opens (or creates) folder `c` in `dir`, never through a link.
fn step(dir: BorrowedFd<'_>, c: &str, shown: &str, create: bool) -> Result<OwnedFd, ExtractError> {
    for _ in 0..3 {
        match rustix::fs::openat(dir, c, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => match rustix::fs::mkdirat(dir, c, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => continue,
                Err(e) => return Err(io_err("mkdir")(e)),
            },
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(match classify(dir, c)? {
                    Entry::Symlink => Refusal::new(
                        RefuseReason::ThroughSymlink,
                        format!("{shown:?} is a symbolic link: not followed"),
                    ),
                    _ => Refusal::new(RefuseReason::Conflict, format!("{shown:?} is a file, not a directory")),
                }
                .into())
            }
            Err(e) => return Err(io_err("open")(e)),
        }
    }
    Err(io_err("mkdir")(Errno::AGAIN))
}

enum Entry {
    File,
    Dir,
    Symlink,
    Other,
    Missing,
}

/// What `name` in `dir` is, without following it.
fn classify(dir: BorrowedFd<'_>, name: &str) -> Result<Entry, ExtractError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Entry::File,
            FileType::Directory => Entry::Dir,
            FileType::Symlink => Entry::Symlink,
            _ => Entry::Other,
        }),
        Err(Errno::NOENT) => Ok(Entry::Missing),
        Err(e) => Err(io_err("stat")(e)),
    }
}

fn times(mtime_ns: i128) -> Timestamps {
    let ts = Timespec {
        tv_sec: mtime_ns
            .div_euclid(1_000_000_000)
            .clamp(i64::MIN as i128, i64::MAX as i128) as _,
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

/// A file being written under the root: removed unless committed.
#[derive(Debug)]
pub struct NewFile {
    file: Option<File>,
    dir: OwnedFd,
    /// The final name in `dir`.
    name: String,
    /// The temp name in `dir` (with `overwrite`).
    tmp: Option<String>,
    done: bool,
}

impl NewFile {
    /// The open file, to write the member into.
    pub fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("file already closed"))
    }

    /// Sets the mtime, and with `overwrite` moves the file over the old one.
    pub fn commit(mut self, mtime_ns: Option<i128>) -> Result<(), ExtractError> {
        let file = self.file.take().ok_or_else(|| ExtractError::Io {
            op: "commit",
            source: io::Error::other("file already closed"),
        })?;
        if let Some(m) = mtime_ns {
            rustix::fs::futimens(&file, &times(m)).map_err(io_err("utimes"))?;
        }
        drop(file);
        if let Some(tmp) = &self.tmp {
            match rustix::fs::renameat(&self.dir, tmp.as_str(), &self.dir, self.name.as_str()) {
                Ok(()) => {}
                Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => {
                    return Err(
                        Refusal::new(RefuseReason::Conflict, format!("{:?} became a directory", self.name)).into(),
                    )
                }
                Err(e) => return Err(io_err("rename")(e)),
            }
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.done {
            self.file.take();
            let name = self.tmp.as_deref().unwrap_or(&self.name);
            let _ = rustix::fs::unlinkat(&self.dir, name, AtFlags::empty());
        }
    }
}
