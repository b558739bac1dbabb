//! The `haul` binary: a thin shell over haul-engine and haul-store.
//! Parses arguments, builds stores, runs a command, prints, exits with the
//! documented code (0 ok, 1 some objects failed, 2 usage or fatal error).

mod args;
mod cmd;
mod conn;
mod output;

use clap::Parser;
use std::process::ExitCode;

use crate::args::{Cli, Command};

fn init_logging(verbose: u8) {
    let default = match verbose {
        // The SDK's own warnings (e.g. a missing config file named by
        // AWS_CONFIG_FILE) are noise for a CLI user; haul reports what matters.
        0 => "warn,aws_config=error,aws_runtime=error,aws_smithy_runtime=error,aws_sdk_s3=error",
        1 => "info,aws=warn",
        _ => "debug,aws_smithy_runtime=info,hyper=info,rustls=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("haul: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let res = rt.block_on(async move {
        let g = &cli.global;
        match cli.cmd {
            Command::Ls(a) => cmd::ls::run(g, a).await,
            Command::Cp(a) => cmd::cp::run(g, *a).await,
            Command::Rm(a) => cmd::rm::run(g, a).await,
            Command::Sync(a) => cmd::sync::run(g, *a).await,
            Command::Diff(a) => cmd::sync::diff(g, a).await,
            Command::Verify(a) => cmd::sync::verify(g, a).await,
            Command::Restore(a) => cmd::restore::run(g, a).await,
            Command::Cat(a) => cmd::cat::run(g, a).await,
        }
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

/// The error and its causes on one line, without repeats.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
