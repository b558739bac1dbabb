//! Why a job could not run (as opposed to objects that failed inside a
//! run, which are reported and counted). Every variant ends the command
//! with exit code 2.

use haul_engine::journal::JournalError;
use haul_engine::state::NoStateDir;
use haul_engine::watch::WatchError;
use haul_store::{ErrorKind, StoreError};

/// A job that cannot run, or a store it cannot use at all.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job is not valid as given: a bad option, location or file.
    #[error("{0}")]
    Invalid(String),
    /// A store cannot be used: missing bucket, bad credentials, access
    /// denied, an endpoint that cannot be reached.
    #[error("{}", store_message(.context, .error))]
    Store { context: Option<String>, error: StoreError },
    /// The resume journal or a watch journal.
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    NoStateDir(#[from] NoStateDir),
    /// A local file the job needs (state directory, report, lists).
    #[error("{context}: {error}")]
    Io { context: String, error: std::io::Error },
}

impl JobError {
    /// A store error that ends the job.
    pub fn store(error: StoreError) -> Self {
        JobError::Store { context: None, error }
    }

    /// A store error that ends the job, saying what was being done.
    pub fn store_in(context: impl Into<String>, error: StoreError) -> Self {
        JobError::Store {
            context: Some(context.into()),
            error,
        }
    }

    pub fn io(context: impl Into<String>, error: std::io::Error) -> Self {
        JobError::Io {
            context: context.into(),
            error,
        }
    }

    /// Adds what was being done to an `Invalid` error's message.
    pub fn within(self, context: &str) -> Self {
        match self {
            JobError::Invalid(m) => JobError::Invalid(format!("{context}: {m}")),
            JobError::Store { context: None, error } => JobError::store_in(context, error),
            other => other,
        }
    }
}

/// An endpoint that cannot be reached says only that ("cannot reach URL:
/// connection refused"); a missing bucket or bad credentials say the
/// store's advice; anything else the whole error, after the context.
fn store_message(context: &Option<String>, e: &StoreError) -> String {
    if e.is_unreachable() {
        return e.message.clone();
    }
    let what = match e.kind {
        ErrorKind::NoSuchBucket | ErrorKind::Credentials => e.message.clone(),
        _ => e.to_string(),
    };
    match context {
        Some(c) => format!("{c}: {what}"),
        None => what,
    }
}

/// `Result` of job-level work.
pub type Result<T, E = JobError> = std::result::Result<T, E>;

/// Shorthand for an `Invalid` error.
pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(JobError::Invalid(msg.into()))
}
