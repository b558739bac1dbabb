//! One module per command.

pub mod cat;
pub mod cp;
pub mod ls;
pub mod restore;
pub mod rm;
pub mod sync;
pub mod watch;

use std::sync::Arc;

use haul_engine::{JobOptions, Transfer, TransferOptions};
use tokio_util::sync::CancellationToken;

/// A cancellation token cancelled by the first Ctrl-C (in-flight multipart
/// uploads are aborted, no new objects start); a second Ctrl-C exits at once.
pub fn ctrl_c() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("haul: interrupted: finishing in-flight work and aborting unfinished uploads (Ctrl-C again to quit now)");
            t.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    token
}

/// An executor over a transfer with these options, whose dry runs print
/// their actions as `src` → `dst` URLs.
pub fn executor(
    topts: TransferOptions,
    jopts: JobOptions,
    out: Arc<crate::output::Output>,
    src: &haul_store::DynStore,
    dst: &haul_store::DynStore,
) -> haul_engine::Executor {
    let transfer = Transfer::new(topts, ctrl_c());
    let mut exec = haul_engine::Executor::new(transfer, jopts, out.clone());
    exec.plan_sink = Some(Arc::new(crate::output::DryRun {
        out,
        src_url: src.url(),
        dst_url: dst.url(),
    }));
    exec
}
