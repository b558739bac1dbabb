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
//!
//! The write side: [`plan`] cuts a sorted listing into archives
//! ([`BundleUnit`] work units), [`tar`] makes deterministic member
//! headers, [`write_archive`] streams one archive into a multipart upload
//! (members read by `fetch`, tar or zstd [`frames`] made by `sink`, bytes
//! cut into parts by `emit`, complete
//! archives found by `resume`), and [`bundle_prefix`] runs it all over a
//! listing, copies large objects as they are and writes the run manifest
//! (spooled by `manifest`).
//! Objects that cannot be packed are [`DeadLetter`]s, never failures of
//! their archive.

pub mod dead;
mod emit;
pub mod error;
pub mod extract;
mod fetch;
pub mod format;
pub mod frames;
pub mod index;
mod manifest;
pub mod names;
pub mod plan;
pub mod read;
mod resume;
pub mod run;
mod sink;
pub mod tar;
pub mod unbundle;
mod untar;
pub mod verify;
pub mod write;

pub use dead::{
    dead_record_name, dlq_lines, restore_list, DeadLetter, DeadReason, DeadSink, Discard, DEAD_SUFFIX, SAMPLE,
};
pub use error::{BundleError, BundleResult};
pub use extract::LocalRoot;
pub use format::{IndexEntry, Locator, LocatorError};
pub use frames::{Compression, FrameSpan, FramedLocator};
pub use index::parse_index;
pub use names::{Refusal, RefuseReason};
pub use plan::{archive_name, BundleOptions, BundleUnit, Grouper, Planned, PlannedMember};
pub use read::{member_stream, open_archive, open_archive_with, read_member, Archive, IndexFrom, IndexSource};
pub use run::{bundle_entries, bundle_prefix, manifest_name, BundleRun, BundleSummary, ManifestLine};
pub use unbundle::{unbundle_to_local, unbundle_to_store, UnbundleOptions, UnbundleReport};
pub use verify::{verify_against, verify_archive, VerifyReport};
pub use write::{index_lines, sidecar_name, write_archive, ArchiveOutcome, Destination};

use haul_store::StoreError;

/// Why a bundle run or an archive failed (objects that fail are dead
/// letters, not errors).
#[derive(Debug, thiserror::Error)]
pub enum BundleRunError {
    /// Writing an archive (or its sidecar) failed at the destination.
    #[error("archive {archive}: {source}")]
    Archive {
        archive: String,
        #[source]
        source: StoreError,
    },
    /// Listing the source failed.
    #[error("listing the source: {0}")]
    List(#[source] StoreError),
    /// Writing the run manifest failed.
    #[error("run manifest {key}: {source}")]
    Manifest {
        key: String,
        #[source]
        source: StoreError,
    },
    /// A bad prefix or key given by the caller.
    #[error("{0}")]
    Key(#[source] StoreError),
    /// A task of the run panicked or was cancelled.
    #[error("a bundle task failed: {0}")]
    Task(String),
    #[error("serializing the index: {0}")]
    Json(#[source] serde_json::Error),
    /// The dead-letter sink (`--dlq`) could not be written.
    #[error("writing dead letters: {0}")]
    DeadLetters(#[source] std::io::Error),
    /// The run manifest's temp files could not be written.
    #[error("spooling the run manifest: {0}")]
    Spool(#[source] std::io::Error),
}

/// A spawned task, aborted when dropped: the work of a failed archive or
/// run stops with it.
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for Task<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
