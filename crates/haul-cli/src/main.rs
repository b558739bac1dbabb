//! The `haul` binary: a thin shell over haul-engine and haul-store.
//! Parses arguments, builds stores, runs a command, prints, exits with the
//! documented code (0 ok, 1 some objects failed, 2 usage or fatal error).

mod args;
mod bundle_args;
mod cmd;
mod fleet_args;
mod output;
mod to_spec;
mod watch_args;

use clap::Parser;
use haul_jobs::JobSpec;
use std::process::ExitCode;

use crate::args::{Cli, Command};

const QUIET_SDK: &str = "aws_config=error,aws_runtime=error,aws_smithy_runtime=error,aws_sdk_s3=error";

/// Logging on stderr, or for `haul watch --log-file` in a file rotated
/// daily, keeping `--log-retention-days` files.
fn init_logging(verbose: u8, quiet: bool, job: Option<&JobSpec>) -> Result<(), String> {
    let daemon = match job {
        Some(JobSpec::Watch(w)) => Some(w),
        _ => None,
    };
    // A running daemon logs what it does; `--once` (cron) and `-q` only problems.
    let chatty = daemon.is_some_and(|a| !a.once);
    let default = match verbose {
        // The SDK's own warnings (e.g. a missing config file named by
        // AWS_CONFIG_FILE) are noise for a CLI user; haul reports what matters.
        // A daemon logs what it does (and a summary every minute).
        0 if chatty && !quiet => format!("info,{QUIET_SDK}"),
        0 => format!("warn,{QUIET_SDK}"),
        1 => "info,aws=warn".to_string(),
        _ => "debug,aws_smithy_runtime=info,hyper=info,rustls=info".to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if let Some(path) = daemon.and_then(|a| a.log_file.as_ref()) {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("--log-file {}: not a file name", path.display()))?;
        let (prefix, suffix) = match name.rsplit_once('.') {
            Some((p, s)) if !p.is_empty() => (p, Some(s)),
            _ => (name, None),
        };
        std::fs::create_dir_all(dir).map_err(|e| format!("--log-file: cannot create {}: {e}", dir.display()))?;
        let mut b = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix(prefix)
            .max_log_files(daemon.map_or(14, |a| a.log_retention_days.max(1)));
        if let Some(s) = suffix {
            b = b.filename_suffix(s);
        }
        let appender = b
            .build(dir)
            .map_err(|e| format!("--log-file {}: {e}", path.display()))?;
        let _ = builder.with_writer(appender).with_ansi(false).try_init();
    } else {
        let _ = builder
            .with_writer(std::io::stderr)
            .with_ansi(colour_stderr())
            .try_init();
    }
    Ok(())
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (no-color.org).
fn colour_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The job a command runs: its flags as a spec, or a job file's; `None`
/// for commands that are not jobs (ls, cat, watch status/retry).
fn job_of(cli: &Cli) -> Result<Option<JobSpec>, String> {
    let job = match &cli.cmd {
        Command::Run(r) => {
            let mut spec = JobSpec::load(&r.file).map_err(|e| e.to_string())?;
            if r.dry.dry_run && !spec.set_dry_run(true) {
                return Err(format!("{}: a {} job has no dry run", r.file.display(), spec.kind()));
            }
            Some(spec)
        }
        cmd => to_spec::job_of(cmd).map_err(|e| e.to_string())?,
    };
    Ok(job)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let job = match job_of(&cli) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("haul: error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.global.print_job {
        return match job.as_ref().map(JobSpec::to_toml) {
            Some(Ok(toml)) => {
                print!("{toml}");
                ExitCode::SUCCESS
            }
            Some(Err(e)) => {
                eprintln!("haul: error: {e}");
                ExitCode::from(2)
            }
            None => {
                eprintln!("haul: error: --print-job: this command is not a job (jobs: cp, sync, diff, verify, rm, restore, watch)");
                ExitCode::from(2)
            }
        };
    }
    if let Err(e) = init_logging(cli.global.verbose, cli.global.quiet, job.as_ref()) {
        eprintln!("haul: error: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // File-system work runs on blocking threads; bound them (and their
        // stacks) well above the default object concurrency.
        .max_blocking_threads(128)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("haul: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let command = async move {
        let g = &cli.global;
        if let Some(job) = job {
            if let Some((q, url)) = to_spec::queue_of(&cli.cmd) {
                return cmd::fleet::coordinate_job(g, job, q, url).await;
            }
            return cmd::job::run(g, job).await;
        }
        match cli.cmd {
            Command::Ls(a) if a.members => cmd::members::ls(g, &a.location, &a.conn).await,
            Command::Ls(a) => cmd::ls::run(g, a).await,
            Command::Cat(a) => match &a.member {
                Some(m) => cmd::members::cat(&a.location, m, &a.conn).await,
                None => cmd::cat::run(g, a).await,
            },
            Command::Verify(a) if a.bundle.is_some() => {
                let archive = a.bundle.as_deref().unwrap_or_default();
                cmd::members::verify(g, archive, a.against.as_deref(), &a.conn).await
            }
            Command::Worker(a) => cmd::fleet::worker(g, &a).await,
            Command::Job(a) => cmd::fleet::job(g, &a.action).await,
            Command::Watch(a) => match &a.action {
                Some(action) => cmd::watch::action(g, action),
                None => Err(anyhow::anyhow!(
                    "usage: haul watch DIR DST (or haul watch status|retry)"
                )),
            },
            Command::Cp(_)
            | Command::Sync(_)
            | Command::Diff(_)
            | Command::Verify(_)
            | Command::Rm(_)
            | Command::Restore(_)
            | Command::Bundle(_)
            | Command::Unbundle(_)
            | Command::Run(_) => Err(anyhow::anyhow!("a job command without its job")),
        }
    };
    // The command runs as a task on the runtime's workers, beside the I/O
    // driver: polled from `block_on` on the main thread instead, every
    // socket event would cost a cross-thread wake-up (two context switches
    // per request, measured).
    let res = rt.block_on(async move {
        tokio::spawn(command)
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the command's task failed: {e}")))
    });
    // Do not wait for blocked reads of stdin or workers on the way out.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("haul: error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, without repeats. An endpoint that
/// cannot be reached says only that ("cannot reach URL: connection
/// refused"), whichever request found out.
fn one_line(e: &anyhow::Error) -> String {
    for c in e.chain() {
        let store_err = c
            .downcast_ref::<haul_store::StoreError>()
            .or_else(|| match c.downcast_ref() {
                Some(haul_jobs::JobError::Store { error, .. }) => Some(error),
                _ => None,
            });
        if let Some(se) = store_err.filter(|se| se.is_unreachable()) {
            return se.message.clone();
        }
    }
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
