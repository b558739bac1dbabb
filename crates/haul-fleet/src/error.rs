//! Errors of distributed runs: the queue could not be reached or refused a
//! request, a record could not be read, or the job itself failed.

/// What went wrong talking to the queue or running the job.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The queue server cannot be reached or refused a request.
    #[error("queue {url}: {message}")]
    Queue { url: String, message: String },
    /// A record on the queue is not one haul wrote (or another version's).
    #[error("queue record {what}: {source}")]
    Record {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The job is unknown, in the wrong phase, or held by another coordinator.
    #[error("job {job}: {message}")]
    Job { job: String, message: String },
    /// The job failed (planning or finishing).
    #[error(transparent)]
    Run(#[from] haul_jobs::JobError),
}

impl FleetError {
    pub(crate) fn queue(url: &str, message: impl std::fmt::Display) -> Self {
        FleetError::Queue {
            url: url.to_string(),
            message: message.to_string(),
        }
    }

    pub(crate) fn job(job: &str, message: impl Into<String>) -> Self {
        FleetError::Job {
            job: job.to_string(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, FleetError>;
