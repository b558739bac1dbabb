//! The queue a distributed run needs, as a trait: jobs in a KV store with
//! compare-and-swap, units published once and pulled with a lease
//! (acknowledged, sent back with a delay, kept alive, or ended), results
//! published durably. NATS JetStream implements it ([`crate::nats`]).

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::record::{JobRecord, Phase, ResultMsg, UnitMsg};

/// One delivery of a unit to a worker: it must end in exactly one of
/// `ack`, `nak` or `term`; until then `progress` keeps it from being
/// handed to another worker.
#[async_trait]
pub trait Delivery: Send + Sync {
    fn unit(&self) -> &UnitMsg;
    /// Which delivery this is (1 for the first).
    fn delivered(&self) -> u64;
    /// No delivery will follow this one (`max_deliver` reached).
    fn is_last(&self) -> bool;
    /// Still working: extend the lease by one ack wait.
    async fn progress(&self) -> Result<()>;
    /// Done (its result is published): never delivered again.
    async fn ack(&self) -> Result<()>;
    /// Not done: deliver it again after `delay`.
    async fn nak(&self, delay: Duration) -> Result<()>;
    /// Cannot be done: never delivered again.
    async fn term(&self) -> Result<()>;
}

/// A work queue with a KV store of jobs.
#[async_trait]
pub trait Queue: Send + Sync {
    /// The queue's URL, for messages.
    fn url(&self) -> &str;
    /// Creates the job; `None` when a job with that id already exists.
    async fn create_job(&self, job: &JobRecord) -> Result<Option<u64>>;
    /// The job and its revision.
    async fn job(&self, id: &str) -> Result<Option<(JobRecord, u64)>>;
    /// Replaces the job if it is still at `revision`; the new revision, or
    /// `None` when someone else changed it first.
    async fn update_job(&self, job: &JobRecord, revision: u64) -> Result<Option<u64>>;
    /// Every job the queue knows.
    async fn jobs(&self) -> Result<Vec<JobRecord>>;
    /// Publishes a unit, once: a unit published again with the same id is dropped.
    async fn publish_unit(&self, unit: &UnitMsg) -> Result<()>;
    /// Up to `max` units of `job`, waiting at most `wait` for the first.
    async fn pull(&self, job: &str, max: usize, wait: Duration) -> Result<Vec<Box<dyn Delivery>>>;
    /// Publishes a unit's result and waits until the queue has stored it.
    async fn publish_result(&self, result: &ResultMsg) -> Result<()>;
    /// Every result of `job`, from the first, then new ones as they come.
    async fn results(&self, job: &str) -> Result<BoxStream<'static, Result<ResultMsg>>>;
    /// Units of `job` not yet acknowledged (published and not done).
    async fn pending(&self, job: &str) -> Result<u64>;
    /// Removes the job's units, results and record.
    async fn purge(&self, job: &str) -> Result<()>;
}

/// Sets the phase of a job by compare-and-swap, reading it again when it
/// changed in between; returns the phase it has afterwards (a final phase
/// another process set wins).
pub async fn set_phase(q: &dyn Queue, id: &str, phase: Phase) -> Result<Phase> {
    for _ in 0..16 {
        let Some((mut job, rev)) = q.job(id).await? else {
            return Err(crate::error::FleetError::job(id, "no such job"));
        };
        if job.phase.is_final() || job.phase == phase {
            return Ok(job.phase);
        }
        job.phase = phase;
        if q.update_job(&job, rev).await?.is_some() {
            return Ok(phase);
        }
    }
    Err(crate::error::FleetError::job(id, "the job record keeps changing"))
}
