//! Bundles: many small objects packed into standard tar archives, each with
//! a byte-offset index (a sidecar and the archive's last member) and a
//! locator in its final block, so one member reads back with one ranged
//! GET. See [`format`] for the layout.

pub mod format;

pub use format::{IndexEntry, Locator, LocatorError};
