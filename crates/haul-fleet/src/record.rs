//! What travels through the queue: the job record (its spec and phase,
//! kept in a KV entry), one message per work unit, one result record per
//! unit run. All JSON; a unit message is small (a key range or a few
//! thousand keys), never a bucket's listing.

use haul_engine::unit::{UnitResult, WorkUnit};
use haul_jobs::JobSpec;
use serde::{Deserialize, Serialize};

use crate::error::{FleetError, Result};

/// Where a distributed job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    /// Planned; units being published.
    Initialized,
    /// Units published; workers run them.
    Write,
    /// Something failed: the error report is being written.
    ErrorReport,
    /// Every unit has its result; the coordinator finished the job.
    Done,
    /// Stopped by the user: workers stop pulling and leave.
    Cancelled,
}

impl Phase {
    /// Workers take units of a job in this phase.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Initialized | Phase::Write)
    }

    /// The job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Done | Phase::Cancelled)
    }
}

/// A job as the queue keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub spec: JobSpec,
    /// Units the coordinator planned (all published once `phase` is `Write`).
    pub units: u64,
    pub phase: Phase,
}

/// One work unit of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitMsg {
    pub job: String,
    /// The unit's id in its job (its message id: a re-publish is dropped).
    pub id: String,
    pub unit: WorkUnit,
}

/// How a unit ended on a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum UnitOutcome {
    /// The unit ran (its objects' failures are inside the result).
    Done { result: UnitResult },
    /// The unit could not run at all (no more deliveries are tried).
    Failed { error: String },
}

/// The record a worker publishes for a unit before acknowledging it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResultMsg {
    pub job: String,
    pub unit: String,
    /// The worker that ran it.
    pub worker: String,
    /// Which delivery of the unit this was (1 for the first).
    pub delivery: u64,
    pub outcome: UnitOutcome,
}

/// A job id is a token of NATS subjects and consumer names: letters,
/// digits, `-` and `_`, 1 to 64 of them.
pub fn check_job_id(id: &str) -> Result<()> {
    let ok =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FleetError::job(id, "a job id is 1 to 64 letters, digits, '-' or '_'"))
    }
}

/// The default id of a job: a hash of its spec, so the same command run
/// again (a restarted coordinator) finds its job.
pub fn job_id_of(spec: &JobSpec) -> Result<String> {
    let text = serde_json::to_vec(spec).map_err(|source| FleetError::Record {
        what: "job spec".into(),
        source,
    })?;
    // FNV-1a, 64 bits: stable across versions and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{}-{h:016x}", spec.kind()))
}

pub(crate) fn to_json<T: Serialize>(what: &str, v: &T) -> Result<bytes::Bytes> {
    serde_json::to_vec(v)
        .map(Into::into)
        .map_err(|source| FleetError::Record {
            what: what.to_string(),
            source,
        })
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(what: &str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|source| FleetError::Record {
        what: what.to_string(),
        source,
    })
}
