//! Arguments of distributed runs: `--queue` on the jobs that are cut into
//! units (sync, cp -r), `haul worker`, and `haul job status|list|cancel`.

use clap::{Args, Subcommand};

pub const WORKER_HELP: &str = "\
Examples:
  haul worker --queue nats://queue.internal:4222 -j 8
  haul worker --queue nats://127.0.0.1:4222 --jobs sync-3f2a9c1e0b7d4a55

The worker runs the units of every active job on the queue (or only --jobs), with
credentials from its own environment (the AWS chain, profiles): job specs hold none.
Ctrl-C: stop taking units, let running ones finish within --grace, then send back
what is left (their uploads aborted) and exit 0.";

pub const JOB_HELP: &str = "\
Examples:
  haul job list --queue nats://127.0.0.1:4222
  haul job status sync-3f2a9c1e0b7d4a55 --queue nats://127.0.0.1:4222
  haul job cancel sync-3f2a9c1e0b7d4a55 --queue nats://127.0.0.1:4222";

/// Running a job on a fleet of workers.
#[derive(Debug, Args, Clone, Default)]
pub struct QueueArgs {
    /// Coordinate this job on a NATS JetStream server: `haul worker`s run its units.
    #[arg(long, value_name = "nats://HOST:4222")]
    pub queue: Option<String>,
    /// The job's id on the queue (default: a hash of the job, so the same command resumes it).
    #[arg(long, requires = "queue")]
    pub job_id: Option<String>,
    /// With --queue: stop at the first unit that fails.
    #[arg(long, requires = "queue")]
    pub failfast: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The NATS JetStream server.
    #[arg(long, value_name = "nats://HOST:4222")]
    pub queue: String,
    /// Units run at once.
    #[arg(short = 'j', long, default_value_t = 2)]
    pub slots: usize,
    /// Only these jobs (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub jobs: Vec<String>,
    /// After Ctrl-C, how long running units may take before they are sent back.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// Exit once no job is left to work on.
    #[arg(long)]
    pub exit_when_idle: bool,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    pub action: JobAction,
}

#[derive(Debug, Subcommand)]
pub enum JobAction {
    /// One job: phase, units done / pending.
    Status {
        id: String,
        #[arg(long, value_name = "nats://HOST:4222")]
        queue: String,
    },
    /// Every job on the queue.
    List {
        #[arg(long, value_name = "nats://HOST:4222")]
        queue: String,
    },
    /// Cancel a job: workers stop taking its units; its coordinator stops.
    Cancel {
        id: String,
        #[arg(long, value_name = "nats://HOST:4222")]
        queue: String,
    },
}
