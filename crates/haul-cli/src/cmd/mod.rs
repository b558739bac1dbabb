//! One module per command.

pub mod cat;
pub mod fleet;
pub mod job;
pub mod ls;
pub mod members;
pub mod watch;

use tokio_util::sync::CancellationToken;

/// A cancellation token cancelled by the first SIGINT (Ctrl-C) or SIGTERM
/// (in-flight multipart uploads are aborted, no new objects start); a
/// second signal exits at once (130 after SIGINT, 143 after SIGTERM).
pub fn ctrl_c() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let Some(mut signals) = Signals::new() else {
            return;
        };
        if let Some(name) = signals.next().await {
            eprintln!("haul: interrupted ({name}): finishing in-flight work and aborting unfinished uploads (Ctrl-C again to quit now)");
            t.cancel();
            if let Some(again) = signals.next().await {
                std::process::exit(if again == "SIGTERM" { 143 } else { 130 });
            }
        }
    });
    token
}

/// SIGINT and SIGTERM, as one stream of signal names.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Option<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(int), Ok(term)) => Some(Signals { int, term }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot catch SIGINT/SIGTERM: a signal ends haul at once");
                None
            }
        }
    }

    async fn next(&mut self) -> Option<&'static str> {
        tokio::select! {
            s = self.int.recv() => s.map(|()| "SIGINT"),
            s = self.term.recv() => s.map(|()| "SIGTERM"),
        }
    }
}
