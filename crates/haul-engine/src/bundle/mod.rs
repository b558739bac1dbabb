//! Bundles: many small objects packed into standard tar archives, each with
//! a byte-offset index (a sidecar and the archive's last member) and a
//! locator in its final block, so one member reads back with one ranged
//! GET. See [`format`] for the layout.
//!
//! Reading side: [`read`] finds the index and reads members, [`verify`]
//! checks an archive against its index (and the index against the
//! source), [`unbundle`] restores members to a bucket or a local
//! directory, writing locally only through [`extract`]'s root, which
//! refuses anything that could escape it ([`names`] says which members
//! are acceptable at all); `untar` is its sequential fallback for a tar
//! without an index.

pub mod error;
pub mod extract;
pub mod format;
pub mod index;
pub mod names;
pub mod read;
pub mod unbundle;
mod untar;
pub mod verify;

pub use error::{BundleError, BundleResult};
pub use extract::LocalRoot;
pub use format::{IndexEntry, Locator, LocatorError};
pub use names::{Refusal, RefuseReason};
pub use read::{member_stream, open_archive, open_archive_with, read_member, Archive, IndexFrom, IndexSource};
pub use unbundle::{unbundle_to_local, unbundle_to_store, UnbundleOptions, UnbundleReport};
pub use verify::{verify_against, verify_archive, VerifyReport};
