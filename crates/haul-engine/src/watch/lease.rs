//! The proof, before a deletion, that no one has a file open for writing:
//! a Linux *read lease* (`fcntl(F_SETLEASE, F_RDLCK)`). The kernel grants
//! it on a read-only descriptor only while no descriptor of the file, in
//! any process, is open for writing (else `EAGAIN`). While haul holds it,
//! another open for writing waits for the lease to be released and the
//! kernel tells haul with `SIGIO`, whose default action would end the
//! process: [`guard_sigio`] makes that signal harmless first, and the lease
//! is held only around the final compare and `unlinkat`.
//!
//! The lease needs the file's owner (or `CAP_LEASE`) and leases enabled
//! (`/proc/sys/fs/leases-enable`) on a file system that has them; without,
//! [`take`] says [`Lease::Unavailable`] and the watch relies on the
//! inotify writer tracking and its second settle window.
//!
//! Neither rustix nor nix wraps `F_SETLEASE`: this module holds the one
//! `unsafe` call of haul, audited below.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// What asking for a read lease said.
#[derive(Debug)]
pub enum Lease<'a> {
    /// Granted: no one has the file open for writing. Released on drop.
    Held(Held<'a>),
    /// Someone has the file open for writing (`EAGAIN`).
    Busy,
    /// No lease here (not the owner, leases disabled, a file system
    /// without them): why, for the log.
    Unavailable(io::Error),
}

/// A read lease held on a descriptor; released (`F_UNLCK`) when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    fd: BorrowedFd<'a>,
}

impl Held<'_> {
    /// Whether the lease is still held and unbroken: `false` once someone
    /// started opening the file for writing (the kernel is breaking it).
    pub fn intact(&self) -> bool {
        matches!(fcntl_lease(self.fd, None), Ok(t) if t == libc::F_RDLCK)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Err(e) = fcntl_lease(self.fd, Some(libc::F_UNLCK)) {
            tracing::debug!(error = %e, "releasing a read lease");
        }
    }
}

/// Asks for a read lease on `fd`, which must be open read-only.
pub fn take(fd: BorrowedFd<'_>) -> Lease<'_> {
    match fcntl_lease(fd, Some(libc::F_RDLCK)) {
        Ok(_) => Lease::Held(Held { fd }),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Lease::Busy,
        Err(e) => Lease::Unavailable(e),
    }
}

/// `fcntl(fd, F_SETLEASE, kind)` with `Some(kind)`, else `F_GETLEASE`.
#[allow(unsafe_code)]
fn fcntl_lease(fd: BorrowedFd<'_>, kind: Option<libc::c_int>) -> io::Result<libc::c_int> {
    let raw = fd.as_raw_fd();
    // SAFETY: `raw` comes from a `BorrowedFd`, so it is an open descriptor
    // for the whole call; F_SETLEASE and F_GETLEASE take an integer (or
    // nothing) and no memory is passed to or written by the kernel. The
    // call cannot violate Rust's memory safety; its only effects are the
    // lease and the return value, checked below.
    let r = unsafe {
        match kind {
            Some(k) => libc::fcntl(raw, libc::F_SETLEASE, k),
            None => libc::fcntl(raw, libc::F_GETLEASE),
        }
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Makes `SIGIO` harmless for the process: a lease being broken sends it,
/// and its default action ends the process. Keep the returned stream alive
/// (tokio's handler stays installed for the process's life anyway); must
/// run inside a tokio runtime.
pub fn guard_sigio() -> io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::io())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[tokio::test]
    async fn a_read_lease_is_refused_while_the_file_is_open_for_writing_and_a_writer_breaking_it_is_harmless(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let _sigio = guard_sigio()?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::fs::write(&path, b"data")?;
        let reader = File::open(&path)?;

        let writer = OpenOptions::new().write(true).open(&path)?;
        assert!(matches!(take(reader.as_fd()), Lease::Busy), "open for writing: busy");
        drop(writer);

        let another_reader = File::open(&path)?;
        let lease = take(reader.as_fd());
        let Lease::Held(held) = lease else {
            return Err(format!("no writer: the lease is granted (root or owner), got {lease:?}").into());
        };
        assert!(held.intact());
        drop(another_reader);

        // A writer opening now waits for the lease; the kernel sends SIGIO
        // to this process, which survives it.
        let p = path.clone();
        let opener = std::thread::spawn(move || OpenOptions::new().append(true).open(p).map(|_| ()));
        let mut broken = false;
        for _ in 0..100 {
            if !held.intact() {
                broken = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(broken, "the writer's open breaks the lease");
        drop(held);
        opener.join().map_err(|_| "opener panicked")??;
        Ok(())
    }
}
