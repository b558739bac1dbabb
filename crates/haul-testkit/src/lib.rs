//! Test support: starts a real S3 server — moto in server mode — on a free
//! 127.0.0.1 port, once per test process, behind a watchdog that stops it
//! when the test process exits (even on a crash).
//!
//! moto must be installed (`pip install 'moto[server]'`); `.ci/run` does it.
//! Set `HAUL_TEST_S3=off` to run only the memory and local backends — an
//! explicit choice, never a silent skip.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod garage;
pub mod inventory;
mod nats;
mod proxy;
pub use garage::{garage, garage_bin, garage_enabled, Garage};
pub use nats::{nats, nats_available, NatsServer};
pub use proxy::{FaultProxy, ProxyFaults, ProxyStats};

/// The test credentials: any key works on moto; garage imports this one
/// (its key ids are `GK` + 24 hex digits, secrets 64 hex digits).
pub const ACCESS_KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET_ACCESS_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The region both test servers sign for.
pub const REGION: &str = "us-east-1";

/// A running moto server.
#[derive(Debug)]
pub struct S3Server {
    pub endpoint: String,
    pub port: u16,
}

/// The watchdog: runs moto and kills it when its parent (the test process) is gone.
pub(crate) const WATCHDOG: &str = r#"
import os, subprocess, sys, time
parent = os.getppid()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    while os.getppid() == parent and p.poll() is None:
        time.sleep(0.2)
finally:
    p.kill()
"#;

/// A server on 127.0.0.1 that accepts connections and never answers (a
/// dead peer behind a live socket); returns its port. Its thread ends with
/// the test process.
pub fn blackhole() -> Result<u16, std::io::Error> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    Ok(port)
}

/// Whether the S3 backend is part of this run.
pub fn s3_enabled() -> bool {
    std::env::var("HAUL_TEST_S3").map(|v| v != "off").unwrap_or(true)
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn start(extra_env: &[(&str, &str)]) -> Result<S3Server, String> {
    let has_moto = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_moto {
        return Err(
            "moto is not installed for python3: install it with `pip install 'moto[server]'` (or set HAUL_TEST_S3=off)"
                .into(),
        );
    }
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            WATCHDOG,
            "python3",
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot start moto_server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: port taken, try another
            }
            if ready(port) {
                // The watchdog child is deliberately not waited for: it ends
                // with this process.
                std::mem::forget(child);
                return Ok(S3Server {
                    endpoint: format!("http://127.0.0.1:{port}"),
                    port,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
    }
    Err("moto_server did not start".into())
}

/// Something accepts connections on the port.
pub(crate) fn ready_tcp(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn ready(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read(&mut buf).map(|n| n > 0).unwrap_or(false)
}

/// The shared moto server of this test process (started on first use).
/// Panics with installation advice when moto is missing.
pub fn moto() -> &'static S3Server {
    static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
    match SERVER.get_or_init(|| start(&[])) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// A second moto server that enforces IAM after its first `free_actions`
/// requests (moto's `INITIAL_NO_AUTH_ACTION_COUNT`): for access-denied tests.
pub fn moto_with_auth(free_actions: u32) -> &'static S3Server {
    static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
    let n = free_actions.to_string();
    match SERVER.get_or_init(|| start(&[("INITIAL_NO_AUTH_ACTION_COUNT", n.as_str())])) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Environment for clients of the test server (fake static credentials,
/// no IMDS, no shared config files).
pub fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/nonexistent/haul-test-config".into()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/haul-test-credentials".into(),
        ),
    ]
}

/// Sets [`aws_env`] in this process (tests that build SDK clients in-process).
pub fn set_aws_env() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        for (k, v) in aws_env() {
            // Set once, before any client is built; all tests use the same values.
            std::env::set_var(k, v);
        }
    });
}

/// A bucket name unique to this process and call.
pub fn unique_bucket(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect::<String>()
        .to_lowercase();
    format!("t{}-{}-{}", std::process::id(), tag, n)
}

/// Creates a bucket on the server with the AWS CLI-free raw API (a signed
/// request is not needed: moto accepts unsigned CreateBucket).
pub fn create_bucket(server: &S3Server, bucket: &str) -> Result<(), String> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).map_err(|e| e.to_string())?;
    let req = format!(
        "PUT /{bucket} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
        server.port
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    if resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("CreateBucket {bucket}: {}", resp.lines().next().unwrap_or("")))
    }
}

/// Deterministic pseudo-random test data (xorshift): `n` bytes from `seed`.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Writes `body` at `root/rel`, creating the folders on the way.
pub fn write_file(root: &std::path::Path, rel: &str, body: &[u8]) -> std::io::Result<()> {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(p, body)
}

/// Every file under `root` (none when it does not exist): relative path →
/// bytes, to compare two trees.
pub fn read_tree(root: &std::path::Path) -> std::io::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        if !dir.exists() {
            continue;
        }
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.insert(rel.to_string_lossy().into_owned(), std::fs::read(&p)?);
            }
        }
    }
    Ok(out)
}
