//! # haul-jobs
//!
//! haul's jobs as data. A [`JobSpec`] describes one command's work — cp,
//! sync, diff, verify, rm, restore, watch — with every option and each
//! side's connection settings (never secrets), and serializes to TOML
//! (`haul run JOB.toml`, `haul <command> … --print-job`). [`run`] runs any
//! job: it connects the stores ([`connect`]), plans and executes through
//! `haul-engine`, reports through a [`Reporter`] and returns a
//! [`JobOutcome`]. The CLI only turns flags into a spec and renders;
//! a remote worker or a pipeline step runs the same spec.

pub mod connect;
pub mod context;
pub mod error;
pub mod run;
pub mod spec;
pub mod unit;

pub use connect::{connect, Connector, Opened};
pub use context::{JobOutcome, PlanCounts, PlanRow, Reporter, RestoreCounts, RunContext};
pub use error::JobError;
pub use run::run;
pub use spec::JobSpec;
pub use unit::{finish_units, plan_units, run_unit};
