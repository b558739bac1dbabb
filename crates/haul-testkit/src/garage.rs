//! A second real S3 server for the tests: garage, a single node on
//! 127.0.0.1, started once per test process behind the same watchdog as
//! moto. garage implements less of S3 than moto (no object tagging, no
//! storage classes, no SSE-KMS) and checks more (Content-MD5, CRC64NVME,
//! copy-source-if-match): the copy paths have to work on both.
//!
//! The binary is `$HAUL_GARAGE_BIN`, else the one `bench/lib/garage.sh`
//! and `.ci/run` build into `~/.cache/haul-bench/garage/bin/garage`
//! (`cargo install garage --version 2.5.0`). Set `HAUL_TEST_GARAGE=off` to
//! leave garage out — an explicit choice, never a silent skip.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{free_port, ready_tcp, S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, WATCHDOG};

/// Whether the garage backend is part of this run.
pub fn garage_enabled() -> bool {
    std::env::var("HAUL_TEST_GARAGE").map(|v| v != "off").unwrap_or(true)
}

/// The garage binary to run.
pub fn garage_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HAUL_GARAGE_BIN") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/haul-bench/garage/bin/garage");
    p.is_file().then_some(p)
}

/// A running garage node and its config (for the `garage` admin CLI).
#[derive(Debug)]
pub struct Garage {
    pub server: S3Server,
    bin: PathBuf,
    config: PathBuf,
    /// The node's directories; removed with the process's temp dir.
    _dir: PathBuf,
}

impl Garage {
    /// Runs the admin CLI against this node.
    fn admin(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .args(args)
            .env("GARAGE_CONFIG_FILE", &self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("garage {args:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "garage {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Creates a bucket the test key may read, write and own.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        self.admin(&["bucket", "create", bucket])?;
        self.admin(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            bucket,
            "--key",
            "haul-test",
        ])?;
        Ok(())
    }
}

fn start() -> Result<Garage, String> {
    let bin = garage_bin().ok_or(
        "garage is not built: run `bench/lib/garage.sh install` (about 17 minutes once), \
         set HAUL_GARAGE_BIN, or set HAUL_TEST_GARAGE=off",
    )?;
    let dir = std::env::temp_dir().join(format!("haul-test-garage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (s3, rpc) = (free_port(), free_port());
    let config = dir.join("garage.toml");
    let toml = format!(
        r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
        d = dir.display(),
        secret = "7".repeat(64),
    );
    std::fs::write(&config, toml).map_err(|e| format!("{}: {e}", config.display()))?;
    let bin_s = bin.to_string_lossy().to_string();
    let mut child = Command::new("python3")
        .args(["-c", WATCHDOG, &bin_s, "server"])
        .env("GARAGE_CONFIG_FILE", &config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start garage: {e}"))?;
    let g = Garage {
        server: S3Server {
            endpoint: format!("http://127.0.0.1:{s3}"),
            port: s3,
        },
        bin,
        config,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("garage exited at start ({status})"));
        }
        if let Ok(id) = g.admin(&["node", "id", "-q"]) {
            if let Some(node) = id.split('@').next().filter(|n| !n.is_empty()) {
                break node.to_string();
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("garage did not start within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // `node id` reads the key file; the admin RPC may open a moment later.
    let mut admin = |args: &[&str]| -> Result<String, String> {
        loop {
            match g.admin(args) {
                Err(e) if e.contains("Connection refused") || e.contains("Unable to connect") => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("garage exited at start ({status}): {e}"));
                    }
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    };
    admin(&["layout", "assign", "-z", "dc1", "-c", "10G", &node])?;
    admin(&["layout", "apply", "--version", "1"])?;
    admin(&[
        "key",
        "import",
        "--yes",
        "-n",
        "haul-test",
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
    ])?;
    while !ready_tcp(s3) {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("garage's S3 port did not open within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The watchdog ends with this process.
    std::mem::forget(child);
    Ok(g)
}

/// The shared garage node of this test process (started on first use).
/// Panics with build advice when the binary is missing.
pub fn garage() -> &'static Garage {
    static NODE: OnceLock<Result<Garage, String>> = OnceLock::new();
    match NODE.get_or_init(start) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}
