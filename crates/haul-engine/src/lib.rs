//! # haul-engine
//!
//! Planning and execution of transfers over [`haul_store::ObjectStore`]s.
//!
//! A job is **planned** into serializable work units ([`plan::CopyTask`]),
//! streamed from a listing so memory never depends on the object count, and
//! **executed** by [`job::Executor`], which runs each task through
//! [`transfer::Transfer`]: pick a strategy from the stores' capabilities
//! (server-side copy, part copy, streamed single-part or multipart), move
//! the bytes within a byte budget, and verify what arrived (ETag = MD5,
//! multipart ETag recomputed, CRCs). A failed object lands in the
//! [`report::Report`] and never stops the run. Every destructive step goes
//! through the executor's one dry-run guard.
//!
//! A job can also be cut into [`unit::WorkUnit`]s (a shard, or a list of
//! objects) run one by one — here or in other processes — whose
//! [`unit::UnitResult`]s add up; the deletes of a sync wait for the sum
//! ([`job::Executor::apply_deletes`]).

pub mod budget;
pub mod bundle;
mod db;
pub mod filter;
mod integrity;
pub mod inventory;
pub mod job;
pub mod journal;
pub mod march;
pub mod plan;
pub mod report;
pub mod restore;
pub mod shard;
pub mod source;
pub mod state;
pub mod sync;
pub mod tags;
pub mod transfer;
pub mod unit;
pub mod verify;
pub mod watch;

pub use budget::ByteBudget;
pub use filter::Filter;
pub use job::{Executor, JobOptions};
pub use plan::{CopyJob, CopyTask, Planner};
pub use report::{Counters, Failure, Observer, Report, Summary};
pub use transfer::{Strategy, Transfer, TransferOptions, Verified};
pub use unit::{DeleteCandidates, UnitJob, UnitObject, UnitResult, WorkUnit};
