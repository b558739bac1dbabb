//! Distributed runs: one job's work units spread over many workers through
//! a queue — NATS JetStream here — with the same summary and exit codes as
//! a run in one process.
//!
//! ```text
//! coordinator                       queue (JetStream)                 workers
//! plan_units(spec) ── units ──▶ HAUL_UNITS (work queue, msg id = unit) ──▶ run_unit
//!   phase in KV     ◀── results ── HAUL_RESULTS (one record per unit) ◀── publish, then ack
//! finish_units(spec, results)        HAUL_JOBS (KV: spec, phase)
//! ```
//!
//! The coordinator plans, publishes and sums; a worker runs units with the
//! same [`haul_jobs::run_unit`] a local run uses, publishes the unit's
//! result and only then acknowledges the unit, so a worker killed at any
//! point loses nothing: its unit comes back after the ack wait and is done
//! again (a sync skips what is already there). The queue sits behind
//! [`Queue`] so another engine could be added; [`nats::NatsQueue`] is the
//! one shipped.

pub mod coordinator;
pub mod error;
pub mod nats;
pub mod queue;
pub mod record;
pub mod worker;

pub use coordinator::{coordinate, CoordinatorOptions};
pub use error::{FleetError, Result};
pub use nats::{NatsOptions, NatsQueue};
pub use queue::{Delivery, Queue};
pub use record::{job_id_of, JobRecord, Phase, ResultMsg, UnitMsg, UnitOutcome};
pub use worker::{work, WorkerOptions, WorkerSummary};
